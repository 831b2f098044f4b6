/*
 * SQLite keystore: schema, KEK ("file" seal provider; "tpm" in seal_tpm.c), AES-256-GCM
 * sealing of secret columns, identity, metadata and the hash-chained audit log (DESIGN.md §7).
 */
#include "storage/storage.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "common/buf.h"
#include "common/file.h"
#include "common/log.h"

#define SCHEMA_VERSION 1
#define APPLICATION_ID 1802335076 /* 0x6b6d7364, "kmsd": marks the file as ours */
#define STR_(x) #x
#define STR(x) STR_(x)
#define KEK_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define SEAL_VERSION 1
#define SEAL_MAX (1u << 20)     /* largest sealed blob we accept */
#define PEM_MAX (16u * 1024u)   /* largest key PEM we store */
#define TEXT_MAX (256u * 1024u) /* domain / origin / bootstrap info */
#define META_KEY_MAX 128
#define META_VAL_MAX (1u << 20)
#define AUDIT_FIELD_MAX 4096
#define PATH_MAX_LEN 4096
#define BUSY_TIMEOUT_MS 5000
#define AAD_PREFIX "kmsd:v1:"
#define KEK_CHECK_PLAIN "kmsd kek check v1"

struct kms_store {
    pthread_mutex_t mu; /* one connection, serialised: transactions never interleave */
    int mu_ok;
    sqlite3 *db;
    uint8_t *kek; /* KEK_LEN bytes in its own page: locked, not dumped, wiped on close */
    size_t kek_map_len;
    char *kek_path;
};

static const char *schema_v1 =
    "CREATE TABLE identity("
    " id INTEGER PRIMARY KEY CHECK(id = 1),"
    " root_ca_key BLOB NOT NULL,"
    " tmp_ca_key BLOB NOT NULL,"
    " root_k256 BLOB NOT NULL,"
    " rpc_key BLOB,"
    " domain TEXT NOT NULL,"
    " bootstrap_info TEXT,"
    " origin TEXT NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE seal("
    " id INTEGER PRIMARY KEY CHECK(id = 1),"
    " provider TEXT NOT NULL,"
    " kek_check BLOB NOT NULL);"
    "CREATE TABLE meta(k TEXT PRIMARY KEY NOT NULL, v TEXT NOT NULL);"
    "CREATE TABLE audit("
    " id INTEGER PRIMARY KEY,"
    " ts INTEGER NOT NULL,"
    " event TEXT NOT NULL,"
    " outcome TEXT NOT NULL,"
    " detail TEXT NOT NULL,"
    " prev_hash BLOB NOT NULL,"
    " hash BLOB NOT NULL);"
    /* Append-only in normal operation; the hash chain detects edits made around this. */
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;"
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;";

/* ---- SQLite helpers ---- */

static int db_err(sqlite3 *db, const char *what)
{
    return kms_err_set(KMS_ERR_STORE_DB, "database: %s: %s", what,
                       db != NULL ? sqlite3_errmsg(db) : "cannot allocate handle");
}

static int db_exec(sqlite3 *db, const char *sql, const char *what)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_err(db, what);
    return 0;
}

static int db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK)
        return db_err(db, "prepare statement");
    return 0;
}

/* Reads a single integer from a one-row query. */
static int db_int(sqlite3 *db, const char *sql, long long *v)
{
    sqlite3_stmt *s = NULL;
    int rc = 0;

    KMS_GUARD(db_prepare(db, sql, &s));
    KMS_ENSURE(sqlite3_step(s) == SQLITE_ROW, KMS_ERR_STORE_DB, "database: %s: %s", sql,
               sqlite3_errmsg(db));
    *v = sqlite3_column_int64(s, 0);
out:
    sqlite3_finalize(s);
    return rc;
}

static void db_rollback(sqlite3 *db)
{
    if (sqlite3_get_autocommit(db) == 0)
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

/* ---- KEK memory ---- */

static int kek_alloc(struct kms_store *st)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t len = pg > 0 ? (size_t)pg : 4096;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        return kms_err_set(KMS_ERR_NOMEM, "cannot map memory for the KEK: %s", strerror(errno));
    if (mlock(p, len) != 0)
        KMS_WARN("cannot lock KEK memory (%s); it may be swapped", strerror(errno));
#ifdef MADV_DONTDUMP
    (void)madvise(p, len, MADV_DONTDUMP);
#endif
    st->kek = p;
    st->kek_map_len = len;
    return 0;
}

static void kek_free(struct kms_store *st)
{
    if (st->kek == NULL)
        return;
    OPENSSL_cleanse(st->kek, st->kek_map_len);
    (void)munlock(st->kek, st->kek_map_len);
    (void)munmap(st->kek, st->kek_map_len);
    st->kek = NULL;
}

/* ---- sealing: version || nonce || ciphertext || tag, AAD = "kmsd:v1:" + what ---- */

static int aad_make(const char *what, char *aad, size_t cap)
{
    int n = snprintf(aad, cap, AAD_PREFIX "%s", what);

    if (n < 0 || (size_t)n >= cap)
        return kms_err_set(KMS_ERR_INTERNAL, "seal label too long");
    return 0;
}

/* Seals n bytes of p; *out (caller frees) holds 1+12+n+16 bytes. */
static int seal(const struct kms_store *st, const char *what, const void *p, size_t n,
                uint8_t **out, size_t *out_len)
{
    EVP_CIPHER_CTX *c = NULL;
    uint8_t *b = NULL;
    char aad[128];
    size_t blen;
    int l = 0;
    int rc = 0;

    KMS_GUARD(aad_make(what, aad, sizeof(aad)));
    KMS_ENSURE(n <= SEAL_MAX - (1 + NONCE_LEN + TAG_LEN), KMS_ERR_TOOBIG,
               "%s is too large to seal (%zu bytes)", what, n);
    blen = 1 + NONCE_LEN + n + TAG_LEN;
    b = malloc(blen);
    KMS_GUARD_PTR(b);
    b[0] = SEAL_VERSION;
    KMS_GUARD_OSSL(RAND_bytes(b + 1, NONCE_LEN), "seal: random nonce");
    c = EVP_CIPHER_CTX_new();
    KMS_GUARD_PTR(c);
    KMS_GUARD_OSSL(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, st->kek, b + 1), "seal: init");
    KMS_GUARD_OSSL(EVP_EncryptUpdate(c, NULL, &l, (const uint8_t *)aad, (int)strlen(aad)),
                   "seal: aad");
    if (n > 0)
        KMS_GUARD_OSSL(EVP_EncryptUpdate(c, b + 1 + NONCE_LEN, &l, p, (int)n), "seal: encrypt");
    KMS_GUARD_OSSL(EVP_EncryptFinal_ex(c, b + 1 + NONCE_LEN + n, &l), "seal: final");
    KMS_GUARD_OSSL(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, b + 1 + NONCE_LEN + n),
                   "seal: tag");
    *out = b;
    *out_len = blen;
    b = NULL;
out:
    EVP_CIPHER_CTX_free(c);
    free(b);
    return rc;
}

/* Unseals into *out (caller frees with kms_free_secret(*out, *out_len + 1)); NUL-terminated.
 * Any failure is KMS_ERR_STORE_SEAL and leaves *out NULL. */
static int unseal(const struct kms_store *st, const char *what, const uint8_t *blob,
                  size_t blob_len, uint8_t **out, size_t *out_len)
{
    struct kms_reader r;
    EVP_CIPHER_CTX *c = NULL;
    const uint8_t *nonce = NULL;
    const uint8_t *ct = NULL;
    const uint8_t *tag = NULL;
    uint8_t *pt = NULL;
    uint8_t ver = 0;
    size_t ct_len;
    char aad[128];
    int l = 0;
    int rc = 0;

    *out = NULL;
    KMS_GUARD(aad_make(what, aad, sizeof(aad)));
    KMS_ENSURE(blob != NULL && blob_len >= 1 + NONCE_LEN + TAG_LEN && blob_len <= SEAL_MAX,
               KMS_ERR_STORE_SEAL, "sealed %s has an invalid length (%zu bytes)", what, blob_len);
    kms_rd_init(&r, blob, blob_len);
    KMS_GUARD(kms_rd_u8(&r, &ver));
    KMS_ENSURE(ver == SEAL_VERSION, KMS_ERR_STORE_SEAL, "sealed %s has unknown version %u", what,
               ver);
    KMS_GUARD(kms_rd_ptr(&r, NONCE_LEN, &nonce));
    ct_len = kms_rd_left(&r) - TAG_LEN;
    KMS_GUARD(kms_rd_ptr(&r, ct_len, &ct));
    KMS_GUARD(kms_rd_ptr(&r, TAG_LEN, &tag));
    pt = malloc(ct_len + 1);
    KMS_GUARD_PTR(pt);
    c = EVP_CIPHER_CTX_new();
    KMS_GUARD_PTR(c);
    KMS_GUARD_OSSL(EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, st->kek, nonce), "unseal: init");
    KMS_GUARD_OSSL(EVP_DecryptUpdate(c, NULL, &l, (const uint8_t *)aad, (int)strlen(aad)),
                   "unseal: aad");
    if (ct_len > 0)
        KMS_GUARD_OSSL(EVP_DecryptUpdate(c, pt, &l, ct, (int)ct_len), "unseal: decrypt");
    KMS_GUARD_OSSL(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)tag),
                   "unseal: tag");
    if (EVP_DecryptFinal_ex(c, pt + ct_len, &l) != 1) {
        ERR_clear_error();
        rc = kms_err_set(KMS_ERR_STORE_SEAL,
                         "cannot unseal %s: authentication failed (wrong KEK, or the database "
                         "was modified)",
                         what);
        goto out;
    }
    pt[ct_len] = 0;
    *out = pt;
    *out_len = ct_len;
    pt = NULL;
out:
    if (rc == KMS_ERR_PARSE)
        rc = kms_err_set(KMS_ERR_STORE_SEAL, "sealed %s is malformed", what);
    EVP_CIPHER_CTX_free(c);
    if (pt != NULL)
        kms_free_secret(pt, ct_len + 1);
    return rc;
}

/* ---- "file" seal provider ---- */

static int kek_check_file(const char *path, const struct stat *sb)
{
    if (!S_ISREG(sb->st_mode))
        return kms_err_set(KMS_ERR_STORE_SEAL, "KEK file %s is not a regular file", path);
    if ((sb->st_mode & 077) != 0)
        return kms_err_set(KMS_ERR_STORE_SEAL,
                           "KEK file %s has mode %04o; refusing to use a KEK that group or "
                           "others can access (fix with: chmod 600 %s)",
                           path, (unsigned)(sb->st_mode & 07777), path);
    if (sb->st_uid != geteuid())
        return kms_err_set(KMS_ERR_STORE_SEAL,
                           "KEK file %s is owned by uid %u, not by the kmsd user (uid %u)", path,
                           (unsigned)sb->st_uid, (unsigned)geteuid());
    if (sb->st_size != KEK_LEN)
        return kms_err_set(KMS_ERR_STORE_SEAL,
                           "KEK file %s has %lld bytes; a KEK is exactly %d bytes", path,
                           (long long)sb->st_size, KEK_LEN);
    return 0;
}

/* Reads the KEK into st->kek. KMS_ERR_NOTFOUND when the file does not exist. */
static int kek_read(struct kms_store *st, const char *path)
{
    struct stat sb;
    size_t off = 0;
    uint8_t extra;
    int rc = 0;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0) {
        if (errno == ENOENT)
            return kms_err_set(KMS_ERR_NOTFOUND, "KEK file %s does not exist", path);
        if (errno == ELOOP)
            return kms_err_set(KMS_ERR_STORE_SEAL, "KEK file %s is a symbolic link; refusing it",
                               path);
        return kms_err_set(KMS_ERR_STORE_SEAL, "cannot open KEK file %s: %s", path,
                           strerror(errno));
    }
    KMS_ENSURE(fstat(fd, &sb) == 0, KMS_ERR_STORE_SEAL, "cannot stat KEK file %s: %s", path,
               strerror(errno));
    KMS_GUARD(kek_check_file(path, &sb));
    while (off < KEK_LEN) {
        ssize_t n = read(fd, st->kek + off, KEK_LEN - off);

        if (n < 0 && errno == EINTR)
            continue;
        KMS_ENSURE(n > 0, KMS_ERR_STORE_SEAL, "cannot read KEK file %s: %s", path,
                   n < 0 ? strerror(errno) : "file is shorter than 32 bytes");
        off += (size_t)n;
    }
    KMS_ENSURE(read(fd, &extra, 1) == 0, KMS_ERR_STORE_SEAL, "KEK file %s is longer than %d bytes",
               path, KEK_LEN);
out:
    close(fd);
    if (rc < 0)
        OPENSSL_cleanse(st->kek, KEK_LEN);
    return rc;
}

/* Creates a fresh random KEK at path. Written to a 0600 temp file first and published with
 * link(), so a crash never leaves a short KEK file and an existing one is never replaced. */
static int kek_create(const char *path)
{
    uint8_t k[KEK_LEN];
    int rc = 0;

    KMS_ENSURE(strlen(path) < PATH_MAX_LEN, KMS_ERR_INVAL, "KEK path too long");
    KMS_GUARD_OSSL(RAND_priv_bytes(k, sizeof(k)), "generate KEK");
    rc = kms_file_write_atomic_ex(path, k, sizeof(k), 0600, KMS_FILE_NOREPLACE);
    if (rc == KMS_ERR_EXISTS) {
        rc = 0; /* another process created it first: the caller reads that one */
    } else if (rc < 0) {
        rc = kms_err_wrap(KMS_ERR_STORE_SEAL, "cannot create KEK file %s", path);
        goto out;
    }
    KMS_INFO("created a new KEK at %s (file seal provider: development only)", path);
out:
    OPENSSL_cleanse(k, sizeof(k));
    return rc;
}

/* *present = 1 when the database already holds a KEK check value (it was sealed before). */
static int seal_row_present(sqlite3 *db, int *present)
{
    long long n = 0;
    int rc = db_int(db, "SELECT count(*) FROM seal", &n);

    *present = n > 0;
    return rc;
}

/* Checks the KEK against the sealed check value (stored on first open), so a wrong KEK is
 * refused at open with a clear message rather than at the first unseal. */
static int kek_verify(struct kms_store *st, const char *provider)
{
    sqlite3_stmt *s = NULL;
    const char *prov;
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    int rc = 0;

    KMS_GUARD(db_prepare(st->db, "SELECT provider, kek_check FROM seal WHERE id = 1", &s));
    KMS_ENSURE(sqlite3_step(s) == SQLITE_ROW, KMS_ERR_STORE_DB, "database: read seal row: %s",
               sqlite3_errmsg(st->db));
    prov = (const char *)sqlite3_column_text(s, 0);
    KMS_ENSURE(prov != NULL && strcmp(prov, provider) == 0, KMS_ERR_STORE_SEAL,
               "this database was sealed by provider \"%s\", but provider \"%s\" is configured",
               prov != NULL ? prov : "?", provider);
    rc = unseal(st, "seal/kek_check", sqlite3_column_blob(s, 1), (size_t)sqlite3_column_bytes(s, 1),
                &pt, &pt_len);
    KMS_ENSURE(rc == 0, KMS_ERR_STORE_SEAL,
               "the KEK in %s is not the key this database was sealed with (wrong or replaced "
               "KEK file); refusing to open",
               st->kek_path != NULL ? st->kek_path : "?");
    KMS_ENSURE(pt_len == strlen(KEK_CHECK_PLAIN) && memcmp(pt, KEK_CHECK_PLAIN, pt_len) == 0,
               KMS_ERR_STORE_SEAL, "KEK check value in the database is invalid");
out:
    sqlite3_finalize(s);
    if (pt != NULL)
        kms_free_secret(pt, pt_len + 1);
    return rc;
}

static int kek_store_check(struct kms_store *st, const char *provider)
{
    sqlite3_stmt *s = NULL;
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    int rc = 0;

    KMS_GUARD(
        seal(st, "seal/kek_check", KEK_CHECK_PLAIN, strlen(KEK_CHECK_PLAIN), &blob, &blob_len));
    KMS_GUARD(db_prepare(st->db,
                         "INSERT INTO seal(id, provider, kek_check) VALUES(1, ?, ?) "
                         "ON CONFLICT(id) DO NOTHING",
                         &s));
    KMS_ENSURE(sqlite3_bind_text(s, 1, provider, -1, SQLITE_STATIC) == SQLITE_OK &&
                   sqlite3_bind_blob(s, 2, blob, (int)blob_len, SQLITE_STATIC) == SQLITE_OK,
               KMS_ERR_STORE_DB, "database: bind: %s", sqlite3_errmsg(st->db));
    KMS_ENSURE(sqlite3_step(s) == SQLITE_DONE, KMS_ERR_STORE_DB, "database: store KEK check: %s",
               sqlite3_errmsg(st->db));
out:
    sqlite3_finalize(s);
    free(blob);
    return rc;
}

/* ---- seal provider dispatch: "tpm" (seal_tpm.c) ---- */

/* The provider recorded in the seal row, so a mismatch is named before any KEK is created. */
static int seal_row_provider_check(sqlite3 *db, const char *provider)
{
    sqlite3_stmt *s = NULL;
    const char *prov;
    int rc = 0;

    KMS_GUARD(db_prepare(db, "SELECT provider FROM seal WHERE id = 1", &s));
    if (sqlite3_step(s) == SQLITE_ROW) {
        prov = (const char *)sqlite3_column_text(s, 0);
        KMS_ENSURE(prov != NULL && strcmp(prov, provider) == 0, KMS_ERR_STORE_SEAL,
                   "this database was sealed by provider \"%s\", but provider \"%s\" is "
                   "configured; start kmsd with --seal %s",
                   prov != NULL ? prov : "?", provider, prov != NULL ? prov : "?");
    }
out:
    sqlite3_finalize(s);
    return rc;
}

static int kek_setup_tpm(struct kms_store *st, const char *data_dir, const struct kms_seal_cfg *cfg)
{
    struct kms_seal_cfg c = *cfg;
    char path[PATH_MAX_LEN];
    int present = 0;
    int rc = 0;
    int n;

    if (c.blob_path != NULL && c.blob_path[0] != '\0')
        n = snprintf(path, sizeof(path), "%s", c.blob_path);
    else
        n = snprintf(path, sizeof(path), "%s/kek.tpm", data_dir);
    if (n < 0 || (size_t)n >= sizeof(path))
        return kms_err_set(KMS_ERR_INVAL, "TPM blob path is too long");
    c.blob_path = path;
    KMS_GUARD(seal_row_provider_check(st->db, "tpm"));
    KMS_GUARD(kek_alloc(st));
    KMS_GUARD(seal_row_present(st->db, &present));
    rc = kms_seal_tpm_kek(&c, !present, st->kek, NULL);
    KMS_ENSURE(rc != KMS_ERR_NOTFOUND, KMS_ERR_STORE_SEAL,
               "TPM-sealed KEK file %s is missing, but this database is sealed with an existing "
               "KEK; restore that file (a new KEK could not unseal the stored keys)",
               path);
    KMS_GUARD(rc);
    st->kek_path = strdup(path);
    KMS_GUARD_PTR(st->kek_path);
    if (!present)
        KMS_GUARD(kek_store_check(st, "tpm"));
    KMS_GUARD(kek_verify(st, "tpm"));
out:
    return rc;
}

/* ---- end of seal provider dispatch ---- */

static int kek_setup(struct kms_store *st, const char *data_dir, const struct kms_seal_cfg *cfg)
{
    const char *provider = cfg != NULL && cfg->provider != NULL ? cfg->provider : "file";
    char path[PATH_MAX_LEN];
    int present = 0;
    int rc = 0;
    int n;

    if (strcmp(provider, "tpm") == 0)
        return kek_setup_tpm(st, data_dir, cfg);
    if (strcmp(provider, "file") != 0)
        return kms_err_set(KMS_ERR_INVAL,
                           "unknown seal provider \"%s\"; available providers: file, tpm",
                           provider);
    KMS_GUARD(seal_row_provider_check(st->db, "file"));
    if (cfg != NULL && cfg->kek_path != NULL && cfg->kek_path[0] != '\0')
        n = snprintf(path, sizeof(path), "%s", cfg->kek_path);
    else
        n = snprintf(path, sizeof(path), "%s/kek.bin", data_dir);
    if (n < 0 || (size_t)n >= sizeof(path))
        return kms_err_set(KMS_ERR_INVAL, "KEK path is too long");
    KMS_GUARD(kek_alloc(st));
    KMS_GUARD(seal_row_present(st->db, &present));
    rc = kek_read(st, path);
    if (rc == KMS_ERR_NOTFOUND) {
        KMS_ENSURE(!present, KMS_ERR_STORE_SEAL,
                   "KEK file %s is missing, but this database is sealed with an existing KEK; "
                   "restore that file (a new KEK could not unseal the stored keys)",
                   path);
        KMS_GUARD(kek_create(path));
        rc = kek_read(st, path);
    }
    KMS_GUARD(rc);
    st->kek_path = strdup(path);
    KMS_GUARD_PTR(st->kek_path);
    if (!present)
        KMS_GUARD(kek_store_check(st, "file"));
    KMS_GUARD(kek_verify(st, "file"));
out:
    return rc;
}

/* ---- open / close ---- */

static int schema_init(sqlite3 *db)
{
    long long ver = 0;
    long long app = 0;
    long long ntables = 0;
    int rc = 0;

    KMS_GUARD(db_int(db, "PRAGMA user_version", &ver));
    if (ver == 0) {
        KMS_GUARD(db_exec(db, "BEGIN IMMEDIATE", "begin schema transaction"));
        KMS_GUARD(db_int(db, "PRAGMA user_version", &ver)); /* another process may have won */
        if (ver == 0) {
            KMS_GUARD(db_int(db, "SELECT count(*) FROM sqlite_master", &ntables));
            KMS_ENSURE(ntables == 0, KMS_ERR_STORE_DB,
                       "database: file has tables but no kmsd schema version; not a kmsd "
                       "database");
            KMS_GUARD(db_exec(db, schema_v1, "create schema"));
            KMS_GUARD(
                db_exec(db, "PRAGMA application_id = " STR(APPLICATION_ID), "set application id"));
            KMS_GUARD(
                db_exec(db, "PRAGMA user_version = " STR(SCHEMA_VERSION), "set schema version"));
            ver = SCHEMA_VERSION;
        }
        KMS_GUARD(db_exec(db, "COMMIT", "commit schema"));
    }
    KMS_ENSURE(ver <= SCHEMA_VERSION, KMS_ERR_STORE_DB,
               "database: schema version %lld is newer than this kmsd supports (%d); upgrade kmsd",
               ver, SCHEMA_VERSION);
    KMS_GUARD(db_int(db, "PRAGMA application_id", &app));
    KMS_ENSURE(app == APPLICATION_ID, KMS_ERR_STORE_DB,
               "database: application id %lld is not kmsd's; not a kmsd database", app);
out:
    if (rc < 0)
        db_rollback(db);
    return rc;
}

static int db_configure(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    int rc = 0;

    KMS_ENSURE(sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS) == SQLITE_OK, KMS_ERR_STORE_DB,
               "database: set busy timeout");
    KMS_GUARD(db_prepare(db, "PRAGMA journal_mode = WAL", &s));
    KMS_ENSURE(sqlite3_step(s) == SQLITE_ROW, KMS_ERR_STORE_DB, "database: set WAL mode: %s",
               sqlite3_errmsg(db));
    KMS_ENSURE(strcmp((const char *)sqlite3_column_text(s, 0), "wal") == 0, KMS_ERR_STORE_DB,
               "database: cannot switch to WAL journal mode (got %s)",
               (const char *)sqlite3_column_text(s, 0));
    KMS_GUARD(db_exec(db,
                      "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                      "PRAGMA secure_delete = ON; PRAGMA trusted_schema = OFF;",
                      "configure"));
out:
    sqlite3_finalize(s);
    return rc;
}

/* 1 when path exists and is a regular file of 0 bytes; *exists says whether it exists. */
static int file_empty(const char *path, int *exists)
{
    struct stat sb;

    *exists = lstat(path, &sb) == 0;
    return *exists && S_ISREG(sb.st_mode) && sb.st_size == 0;
}

/* A keystore file that exists but holds nothing (0 bytes, nothing in its WAL either) next to an
 * existing KEK lost its keys (a truncated copy, a failed restore, a full disk): starting it as
 * a new, empty node would let a Bootstrap create a second cluster identity. Checked before
 * SQLite writes anything, so the refusal holds at every start until the operator acts. (No
 * kms.db at all next to a KEK is an operator-provided KEK for a new node, and is accepted.) */
static int empty_keystore_check(const char *dbpath, const char *data_dir,
                                const struct kms_seal_cfg *cfg)
{
    const char *provider = cfg != NULL && cfg->provider != NULL ? cfg->provider : "file";
    const char *explicit_path = NULL;
    char wal[PATH_MAX_LEN + 8];
    char kek[PATH_MAX_LEN];
    int exists = 0;
    int n;

    if (!file_empty(dbpath, &exists))
        return 0;
    n = snprintf(wal, sizeof(wal), "%s-wal", dbpath);
    if (n > 0 && (size_t)n < sizeof(wal) && !file_empty(wal, &exists) && exists)
        return 0; /* SQLite recovers the keystore from its WAL */
    if (strcmp(provider, "tpm") == 0) {
        explicit_path = cfg->blob_path;
        n = explicit_path != NULL && explicit_path[0] != '\0'
                ? snprintf(kek, sizeof(kek), "%s", explicit_path)
                : snprintf(kek, sizeof(kek), "%s/kek.tpm", data_dir);
    } else {
        explicit_path = cfg != NULL ? cfg->kek_path : NULL;
        n = explicit_path != NULL && explicit_path[0] != '\0'
                ? snprintf(kek, sizeof(kek), "%s", explicit_path)
                : snprintf(kek, sizeof(kek), "%s/kek.bin", data_dir);
    }
    if (n < 0 || (size_t)n >= sizeof(kek))
        return 0; /* reported by kek_setup */
    (void)file_empty(kek, &exists);
    if (!exists)
        return 0;
    return kms_err_set(KMS_ERR_STORE_SEAL,
                       "the keystore %s is empty (0 bytes) but a KEK exists at %s: this node "
                       "had keys sealed with that KEK, and starting it empty would create a new "
                       "identity. Restore kms.db from a backup (kmsctl backup restore), or, to "
                       "start a new empty node deliberately, remove %s first",
                       dbpath, kek, kek);
}

int kms_store_open(const char *data_dir, const struct kms_seal_cfg *seal_cfg,
                   struct kms_store **out)
{
    struct kms_store *st = NULL;
    char dbpath[PATH_MAX_LEN];
    int flags =
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW;
    int rc = 0;
    int fd;
    int n;

    *out = NULL;
    KMS_ENSURE(data_dir != NULL && data_dir[0] != '\0', KMS_ERR_INVAL, "data_dir is empty");
    n = snprintf(dbpath, sizeof(dbpath), "%s/kms.db", data_dir);
    KMS_ENSURE(n > 0 && (size_t)n < sizeof(dbpath), KMS_ERR_INVAL, "data_dir path is too long");
    KMS_GUARD(kms_mkdir_p(data_dir, 0700));
    KMS_GUARD(empty_keystore_check(dbpath, data_dir, seal_cfg));
    /* Create the file ourselves so it (and the -wal/-shm files SQLite derives) are 0600. */
    fd = open(dbpath, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    KMS_ENSURE(fd >= 0, KMS_ERR_STORE_DB, "cannot open %s: %s", dbpath, strerror(errno));
    close(fd);
    st = calloc(1, sizeof(*st));
    KMS_GUARD_PTR(st);
    KMS_ENSURE(pthread_mutex_init(&st->mu, NULL) == 0, KMS_ERR_INTERNAL, "mutex init failed");
    st->mu_ok = 1;
    if (sqlite3_open_v2(dbpath, &st->db, flags, NULL) != SQLITE_OK) {
        rc = kms_err_set(KMS_ERR_STORE_DB, "cannot open database %s: %s", dbpath,
                         st->db != NULL ? sqlite3_errmsg(st->db) : "out of memory");
        goto out;
    }
    KMS_GUARD(db_configure(st->db));
    KMS_GUARD(schema_init(st->db));
    KMS_GUARD(kek_setup(st, data_dir, seal_cfg));
    *out = st;
    st = NULL;
out:
    kms_store_close(st);
    return rc;
}

void kms_store_close(struct kms_store *st)
{
    if (st == NULL)
        return;
    if (st->db != NULL)
        (void)sqlite3_close_v2(st->db);
    kek_free(st);
    free(st->kek_path);
    if (st->mu_ok)
        pthread_mutex_destroy(&st->mu);
    free(st);
}

/* ---- identity ---- */

static void free_str(char **s)
{
    if (*s != NULL) {
        OPENSSL_cleanse(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

void kms_identity_clear(struct kms_identity *id)
{
    if (id == NULL)
        return;
    free_str(&id->root_ca_key_pem);
    free_str(&id->tmp_ca_key_pem);
    free_str(&id->rpc_key_pem);
    free_str(&id->domain);
    free_str(&id->bootstrap_info_json);
    free_str(&id->origin);
    OPENSSL_cleanse(id->root_k256, sizeof(id->root_k256));
}

static int check_text(const char *s, size_t max, int may_be_null, const char *what)
{
    if (s == NULL) {
        if (may_be_null)
            return 0;
        return kms_err_set(KMS_ERR_INVAL, "identity has no %s", what);
    }
    if (s[0] == '\0')
        return kms_err_set(KMS_ERR_INVAL, "identity %s is empty", what);
    if (strnlen(s, max + 1) > max)
        return kms_err_set(KMS_ERR_TOOBIG, "identity %s is longer than %zu bytes", what, max);
    return 0;
}

static int identity_check(const struct kms_identity *id)
{
    int rc = 0;

    KMS_ENSURE(id != NULL, KMS_ERR_INVAL, "no identity given");
    KMS_GUARD(check_text(id->root_ca_key_pem, PEM_MAX, 0, "root CA key"));
    KMS_GUARD(check_text(id->tmp_ca_key_pem, PEM_MAX, 0, "temp CA key"));
    KMS_GUARD(check_text(id->rpc_key_pem, PEM_MAX, 1, "RPC key"));
    KMS_GUARD(check_text(id->domain, TEXT_MAX, 0, "domain"));
    KMS_GUARD(check_text(id->bootstrap_info_json, TEXT_MAX, 1, "bootstrap info"));
    KMS_GUARD(check_text(id->origin, TEXT_MAX, 0, "origin"));
    KMS_GUARD(kms_store_check_p256_pem(id->root_ca_key_pem, "root CA key"));
    KMS_GUARD(kms_store_check_p256_pem(id->tmp_ca_key_pem, "temp CA key"));
    if (id->rpc_key_pem != NULL)
        KMS_GUARD(kms_store_check_p256_pem(id->rpc_key_pem, "RPC key"));
    KMS_GUARD(kms_store_check_k256(id->root_k256, "root k256 key"));
out:
    return rc;
}

static int bind_blob(sqlite3 *db, sqlite3_stmt *s, int i, const uint8_t *p, size_t n)
{
    int r = p != NULL ? sqlite3_bind_blob(s, i, p, (int)n, SQLITE_STATIC) : sqlite3_bind_null(s, i);

    if (r != SQLITE_OK)
        return db_err(db, "bind");
    return 0;
}

static int bind_text(sqlite3 *db, sqlite3_stmt *s, int i, const char *t)
{
    int r = t != NULL ? sqlite3_bind_text(s, i, t, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i);

    if (r != SQLITE_OK)
        return db_err(db, "bind");
    return 0;
}

int kms_store_has_identity(struct kms_store *st)
{
    long long n = 0;
    int rc;

    pthread_mutex_lock(&st->mu);
    rc = db_int(st->db, "SELECT count(*) FROM identity", &n);
    pthread_mutex_unlock(&st->mu);
    if (rc < 0)
        return rc;
    return n > 0 ? 1 : 0;
}

int kms_store_save_identity(struct kms_store *st, const struct kms_identity *id)
{
    enum { ROOT, TMP, K256, RPC, NSEALED };
    static const char *const what[NSEALED] = {"identity/root_ca_key", "identity/tmp_ca_key",
                                              "identity/root_k256", "identity/rpc_key"};
    uint8_t *blob[NSEALED] = {NULL};
    size_t blen[NSEALED] = {0};
    sqlite3_stmt *s = NULL;
    long long n = 0;
    int locked = 0;
    int rc = 0;
    int step;

    KMS_GUARD(identity_check(id));
    KMS_GUARD(seal(st, what[ROOT], id->root_ca_key_pem, strlen(id->root_ca_key_pem), &blob[ROOT],
                   &blen[ROOT]));
    KMS_GUARD(seal(st, what[TMP], id->tmp_ca_key_pem, strlen(id->tmp_ca_key_pem), &blob[TMP],
                   &blen[TMP]));
    KMS_GUARD(seal(st, what[K256], id->root_k256, sizeof(id->root_k256), &blob[K256], &blen[K256]));
    if (id->rpc_key_pem != NULL)
        KMS_GUARD(
            seal(st, what[RPC], id->rpc_key_pem, strlen(id->rpc_key_pem), &blob[RPC], &blen[RPC]));

    pthread_mutex_lock(&st->mu);
    locked = 1;
    KMS_GUARD(db_exec(st->db, "BEGIN IMMEDIATE", "begin identity transaction"));
    KMS_GUARD(db_int(st->db, "SELECT count(*) FROM identity", &n));
    KMS_ENSURE(n == 0, KMS_ERR_STORE_EXISTS,
               "an identity is already stored; refusing to replace it (bootstrap, onboard and "
               "import run once)");
    KMS_GUARD(db_prepare(st->db,
                         "INSERT INTO identity(id, root_ca_key, tmp_ca_key, root_k256, rpc_key, "
                         "domain, bootstrap_info, origin, created_at) "
                         "VALUES(1, ?, ?, ?, ?, ?, ?, ?, ?)",
                         &s));
    for (int i = 0; i < NSEALED; i++)
        KMS_GUARD(bind_blob(st->db, s, i + 1, blob[i], blen[i]));
    KMS_GUARD(bind_text(st->db, s, 5, id->domain));
    KMS_GUARD(bind_text(st->db, s, 6, id->bootstrap_info_json));
    KMS_GUARD(bind_text(st->db, s, 7, id->origin));
    KMS_ENSURE(sqlite3_bind_int64(s, 8, (sqlite3_int64)time(NULL)) == SQLITE_OK, KMS_ERR_STORE_DB,
               "database: bind");
    step = sqlite3_step(s);
    KMS_ENSURE(step != SQLITE_CONSTRAINT, KMS_ERR_STORE_EXISTS,
               "an identity is already stored; refusing to replace it");
    KMS_ENSURE(step == SQLITE_DONE, KMS_ERR_STORE_DB, "database: store identity: %s",
               sqlite3_errmsg(st->db));
    sqlite3_finalize(s);
    s = NULL;
    KMS_GUARD(db_exec(st->db, "COMMIT", "commit identity"));
out:
    sqlite3_finalize(s);
    if (locked) {
        if (rc < 0)
            db_rollback(st->db);
        pthread_mutex_unlock(&st->mu);
    }
    for (int i = 0; i < NSEALED; i++)
        free(blob[i]);
    return rc;
}

/* Unseals a column into a NUL-terminated string; NULL column gives NULL when allowed. */
static int col_unseal_str(const struct kms_store *st, sqlite3_stmt *s, int col, const char *what,
                          int may_be_null, char **out)
{
    uint8_t *pt = NULL;
    size_t n = 0;
    int rc = 0;

    if (sqlite3_column_type(s, col) == SQLITE_NULL) {
        KMS_ENSURE(may_be_null, KMS_ERR_STORE_SEAL, "sealed %s is missing from the database", what);
        *out = NULL;
        return 0;
    }
    KMS_GUARD(unseal(st, what, sqlite3_column_blob(s, col), (size_t)sqlite3_column_bytes(s, col),
                     &pt, &n));
    KMS_ENSURE(strlen((const char *)pt) == n && n > 0, KMS_ERR_STORE_SEAL,
               "unsealed %s is not a valid text value", what);
    *out = (char *)pt;
    pt = NULL;
out:
    if (pt != NULL)
        kms_free_secret(pt, n + 1);
    return rc;
}

static int col_text(sqlite3_stmt *s, int col, int may_be_null, const char *what, char **out)
{
    const unsigned char *t;
    int n;

    *out = NULL;
    /* type first: after column_text converts a value, column_type is undefined */
    if (sqlite3_column_type(s, col) == SQLITE_NULL) {
        if (may_be_null)
            return 0;
        return kms_err_set(KMS_ERR_STORE_DB, "database: identity %s is missing", what);
    }
    t = sqlite3_column_text(s, col);
    n = sqlite3_column_bytes(s, col);
    if (t == NULL)
        return kms_err_set(KMS_ERR_NOMEM, "out of memory");
    if ((size_t)n > TEXT_MAX)
        return kms_err_set(KMS_ERR_STORE_DB, "database: identity %s is too large", what);
    *out = strndup((const char *)t, (size_t)n);
    if (*out == NULL)
        return kms_err_set(KMS_ERR_NOMEM, "out of memory");
    return 0;
}

int kms_store_load_identity(struct kms_store *st, struct kms_identity *out)
{
    sqlite3_stmt *s = NULL;
    uint8_t *k = NULL;
    size_t klen = 0;
    int rc = 0;
    int step;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&st->mu);
    KMS_GUARD(db_prepare(st->db,
                         "SELECT root_ca_key, tmp_ca_key, root_k256, rpc_key, domain, "
                         "bootstrap_info, origin FROM identity WHERE id = 1",
                         &s));
    step = sqlite3_step(s);
    KMS_ENSURE(step != SQLITE_DONE, KMS_ERR_STORE_MISSING,
               "no identity is stored yet (bootstrap, onboard or import first)");
    KMS_ENSURE(step == SQLITE_ROW, KMS_ERR_STORE_DB, "database: load identity: %s",
               sqlite3_errmsg(st->db));
    KMS_GUARD(col_unseal_str(st, s, 0, "identity/root_ca_key", 0, &out->root_ca_key_pem));
    KMS_GUARD(col_unseal_str(st, s, 1, "identity/tmp_ca_key", 0, &out->tmp_ca_key_pem));
    KMS_ENSURE(sqlite3_column_type(s, 2) != SQLITE_NULL, KMS_ERR_STORE_SEAL,
               "sealed identity/root_k256 is missing from the database");
    KMS_GUARD(unseal(st, "identity/root_k256", sqlite3_column_blob(s, 2),
                     (size_t)sqlite3_column_bytes(s, 2), &k, &klen));
    KMS_ENSURE(klen == sizeof(out->root_k256), KMS_ERR_STORE_SEAL,
               "unsealed identity/root_k256 has %zu bytes, want 32", klen);
    memcpy(out->root_k256, k, klen);
    KMS_GUARD(col_unseal_str(st, s, 3, "identity/rpc_key", 1, &out->rpc_key_pem));
    KMS_GUARD(col_text(s, 4, 0, "domain", &out->domain));
    KMS_GUARD(col_text(s, 5, 1, "bootstrap info", &out->bootstrap_info_json));
    KMS_GUARD(col_text(s, 6, 0, "origin", &out->origin));
out:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->mu);
    if (k != NULL)
        kms_free_secret(k, klen + 1);
    if (rc < 0)
        kms_identity_clear(out);
    return rc;
}

int kms_store_set_rpc_key(struct kms_store *st, const char *rpc_key_pem)
{
    sqlite3_stmt *s = NULL;
    uint8_t *blob = NULL;
    size_t blen = 0;
    int locked = 0;
    int rc = 0;

    KMS_GUARD(check_text(rpc_key_pem, PEM_MAX, 0, "RPC key"));
    KMS_GUARD(kms_store_check_p256_pem(rpc_key_pem, "RPC key"));
    KMS_GUARD(seal(st, "identity/rpc_key", rpc_key_pem, strlen(rpc_key_pem), &blob, &blen));
    pthread_mutex_lock(&st->mu);
    locked = 1;
    KMS_GUARD(db_prepare(st->db, "UPDATE identity SET rpc_key = ? WHERE id = 1", &s));
    KMS_GUARD(bind_blob(st->db, s, 1, blob, blen));
    KMS_ENSURE(sqlite3_step(s) == SQLITE_DONE, KMS_ERR_STORE_DB, "database: store RPC key: %s",
               sqlite3_errmsg(st->db));
    KMS_ENSURE(sqlite3_changes(st->db) == 1, KMS_ERR_STORE_MISSING,
               "no identity is stored yet; cannot set its RPC key");
out:
    sqlite3_finalize(s);
    if (locked)
        pthread_mutex_unlock(&st->mu);
    free(blob);
    return rc;
}

/* ---- metadata ---- */

static int meta_key_check(const char *key)
{
    if (key == NULL || key[0] == '\0')
        return kms_err_set(KMS_ERR_INVAL, "metadata key is empty");
    if (strnlen(key, META_KEY_MAX + 1) > META_KEY_MAX)
        return kms_err_set(KMS_ERR_TOOBIG, "metadata key is longer than %d bytes", META_KEY_MAX);
    return 0;
}

int kms_store_meta_set(struct kms_store *st, const char *key, const char *value)
{
    sqlite3_stmt *s = NULL;
    int locked = 0;
    int rc = 0;

    KMS_GUARD(meta_key_check(key));
    KMS_ENSURE(value != NULL, KMS_ERR_INVAL, "metadata value for %s is NULL", key);
    KMS_ENSURE(strnlen(value, META_VAL_MAX + 1) <= META_VAL_MAX, KMS_ERR_TOOBIG,
               "metadata value for %s is longer than %u bytes", key, META_VAL_MAX);
    pthread_mutex_lock(&st->mu);
    locked = 1;
    KMS_GUARD(db_prepare(st->db,
                         "INSERT INTO meta(k, v) VALUES(?, ?) ON CONFLICT(k) DO UPDATE SET v = "
                         "excluded.v",
                         &s));
    KMS_GUARD(bind_text(st->db, s, 1, key));
    KMS_GUARD(bind_text(st->db, s, 2, value));
    KMS_ENSURE(sqlite3_step(s) == SQLITE_DONE, KMS_ERR_STORE_DB, "database: store metadata: %s",
               sqlite3_errmsg(st->db));
out:
    sqlite3_finalize(s);
    if (locked)
        pthread_mutex_unlock(&st->mu);
    return rc;
}

int kms_store_meta_get(struct kms_store *st, const char *key, char **value)
{
    sqlite3_stmt *s = NULL;
    int locked = 0;
    int rc = 0;
    int step;

    *value = NULL;
    KMS_GUARD(meta_key_check(key));
    pthread_mutex_lock(&st->mu);
    locked = 1;
    KMS_GUARD(db_prepare(st->db, "SELECT v FROM meta WHERE k = ?", &s));
    KMS_GUARD(bind_text(st->db, s, 1, key));
    step = sqlite3_step(s);
    KMS_ENSURE(step != SQLITE_DONE, KMS_ERR_NOTFOUND, "no metadata value for key \"%s\"", key);
    KMS_ENSURE(step == SQLITE_ROW, KMS_ERR_STORE_DB, "database: read metadata: %s",
               sqlite3_errmsg(st->db));
    KMS_ENSURE(sqlite3_column_type(s, 0) == SQLITE_TEXT, KMS_ERR_STORE_DB,
               "database: metadata value for %s is not text", key);
    *value = strndup((const char *)sqlite3_column_text(s, 0), (size_t)sqlite3_column_bytes(s, 0));
    KMS_GUARD_PTR(*value);
out:
    sqlite3_finalize(s);
    if (locked)
        pthread_mutex_unlock(&st->mu);
    return rc;
}

/* ---- audit log ---- */

#define AUDIT_NAME_MAX 64

/* hash = sha256(prev_hash || u64be(id) || u64be(ts) || for each of event, outcome, detail:
 * u32be(len) || bytes). Lengths make the encoding unambiguous; id binds the row position. */
static int audit_hash(const uint8_t prev[32], int64_t id, int64_t ts, const char *event,
                      size_t event_len, const char *outcome, size_t outcome_len, const char *detail,
                      size_t detail_len, uint8_t out[32])
{
    struct kms_buf b = {0};
    unsigned int outlen = 0;
    int rc = 0;

    KMS_GUARD(kms_buf_put(&b, prev, 32));
    KMS_GUARD(kms_buf_put_u64be(&b, (uint64_t)id));
    KMS_GUARD(kms_buf_put_u64be(&b, (uint64_t)ts));
    KMS_ENSURE(event_len <= UINT32_MAX && outcome_len <= UINT32_MAX && detail_len <= UINT32_MAX,
               KMS_ERR_TOOBIG, "audit field too large");
    KMS_GUARD(kms_buf_put_u32be(&b, (uint32_t)event_len));
    KMS_GUARD(kms_buf_put(&b, event, event_len));
    KMS_GUARD(kms_buf_put_u32be(&b, (uint32_t)outcome_len));
    KMS_GUARD(kms_buf_put(&b, outcome, outcome_len));
    KMS_GUARD(kms_buf_put_u32be(&b, (uint32_t)detail_len));
    KMS_GUARD(kms_buf_put(&b, detail, detail_len));
    KMS_GUARD_OSSL(EVP_Digest(b.data, b.len, out, &outlen, EVP_sha256(), NULL), "audit hash");
out:
    kms_buf_free(&b);
    return rc;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kms_store_audit(struct kms_store *st, const char *event, const char *outcome,
                    const char *detail)
{
    sqlite3_stmt *s = NULL;
    uint8_t prev[32] = {0};
    uint8_t hash[32];
    int64_t id = 1;
    int64_t ts = now_ms();
    int locked = 0;
    int rc = 0;
    int step;

    if (detail == NULL)
        detail = "";
    KMS_ENSURE(event != NULL && event[0] != '\0' &&
                   strnlen(event, AUDIT_NAME_MAX + 1) <= AUDIT_NAME_MAX,
               KMS_ERR_INVAL, "audit event must be 1..%d bytes", AUDIT_NAME_MAX);
    KMS_ENSURE(outcome != NULL && outcome[0] != '\0' &&
                   strnlen(outcome, AUDIT_NAME_MAX + 1) <= AUDIT_NAME_MAX,
               KMS_ERR_INVAL, "audit outcome must be 1..%d bytes", AUDIT_NAME_MAX);
    KMS_ENSURE(strnlen(detail, AUDIT_FIELD_MAX + 1) <= AUDIT_FIELD_MAX, KMS_ERR_TOOBIG,
               "audit detail is longer than %d bytes", AUDIT_FIELD_MAX);
    pthread_mutex_lock(&st->mu);
    locked = 1;
    KMS_GUARD(db_exec(st->db, "BEGIN IMMEDIATE", "begin audit transaction"));
    KMS_GUARD(db_prepare(st->db, "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", &s));
    step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        KMS_ENSURE(sqlite3_column_bytes(s, 1) == 32, KMS_ERR_STORE_DB,
                   "database: the last audit row has a malformed hash");
        memcpy(prev, sqlite3_column_blob(s, 1), 32);
        id = sqlite3_column_int64(s, 0) + 1;
    } else {
        KMS_ENSURE(step == SQLITE_DONE, KMS_ERR_STORE_DB, "database: read audit tail: %s",
                   sqlite3_errmsg(st->db));
    }
    sqlite3_finalize(s);
    s = NULL;
    KMS_GUARD(audit_hash(prev, id, ts, event, strlen(event), outcome, strlen(outcome), detail,
                         strlen(detail), hash));
    KMS_GUARD(db_prepare(st->db,
                         "INSERT INTO audit(id, ts, event, outcome, detail, prev_hash, hash) "
                         "VALUES(?, ?, ?, ?, ?, ?, ?)",
                         &s));
    KMS_ENSURE(sqlite3_bind_int64(s, 1, id) == SQLITE_OK &&
                   sqlite3_bind_int64(s, 2, ts) == SQLITE_OK,
               KMS_ERR_STORE_DB, "database: bind");
    KMS_GUARD(bind_text(st->db, s, 3, event));
    KMS_GUARD(bind_text(st->db, s, 4, outcome));
    KMS_GUARD(bind_text(st->db, s, 5, detail));
    KMS_GUARD(bind_blob(st->db, s, 6, prev, 32));
    KMS_GUARD(bind_blob(st->db, s, 7, hash, 32));
    KMS_ENSURE(sqlite3_step(s) == SQLITE_DONE, KMS_ERR_STORE_DB, "database: append audit: %s",
               sqlite3_errmsg(st->db));
    sqlite3_finalize(s);
    s = NULL;
    KMS_GUARD(db_exec(st->db, "COMMIT", "commit audit"));
out:
    sqlite3_finalize(s);
    if (locked) {
        if (rc < 0)
            db_rollback(st->db);
        pthread_mutex_unlock(&st->mu);
    }
    return rc;
}

int kms_store_audit_verify(struct kms_store *st, size_t *count)
{
    sqlite3_stmt *s = NULL;
    uint8_t prev[32] = {0};
    uint8_t hash[32];
    int64_t want = 1;
    size_t n = 0;
    int rc = 0;
    int step;

    pthread_mutex_lock(&st->mu);
    KMS_GUARD(db_prepare(st->db,
                         "SELECT id, ts, event, outcome, detail, prev_hash, hash FROM audit "
                         "ORDER BY id",
                         &s));
    step = sqlite3_step(s);
    while (step == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0);
        /* text first, then bytes: the documented order for a stable length */
        const char *ev = (const char *)sqlite3_column_text(s, 2);
        size_t ev_len = (size_t)sqlite3_column_bytes(s, 2);
        const char *oc = (const char *)sqlite3_column_text(s, 3);
        size_t oc_len = (size_t)sqlite3_column_bytes(s, 3);
        const char *de = (const char *)sqlite3_column_text(s, 4);
        size_t de_len = (size_t)sqlite3_column_bytes(s, 4);

        KMS_ENSURE(id == want, KMS_ERR_VERIFY,
                   "audit log broken at row %lld: expected row %lld next (rows were removed or "
                   "renumbered)",
                   (long long)id, (long long)want);
        KMS_ENSURE(sqlite3_column_bytes(s, 5) == 32 &&
                       memcmp(sqlite3_column_blob(s, 5), prev, 32) == 0,
                   KMS_ERR_VERIFY,
                   "audit log broken at row %lld: prev_hash does not match the hash of the row "
                   "before it",
                   (long long)id);
        KMS_GUARD(audit_hash(prev, id, sqlite3_column_int64(s, 1), ev != NULL ? ev : "", ev_len,
                             oc != NULL ? oc : "", oc_len, de != NULL ? de : "", de_len, hash));
        KMS_ENSURE(sqlite3_column_bytes(s, 6) == 32 &&
                       memcmp(sqlite3_column_blob(s, 6), hash, 32) == 0,
                   KMS_ERR_VERIFY,
                   "audit log broken at row %lld: its hash does not match its contents (the row "
                   "was modified)",
                   (long long)id);
        memcpy(prev, hash, 32);
        want++;
        n++;
        step = sqlite3_step(s);
    }
    KMS_ENSURE(step == SQLITE_DONE, KMS_ERR_STORE_DB, "database: read audit log: %s",
               sqlite3_errmsg(st->db));
out:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->mu);
    if (count != NULL)
        *count = n;
    return rc;
}

int kms_store_audit_head(struct kms_store *st, size_t *count, uint8_t hash[32])
{
    sqlite3_stmt *s = NULL;
    int rc = 0;
    int step;

    *count = 0;
    memset(hash, 0, 32);
    pthread_mutex_lock(&st->mu);
    KMS_GUARD(db_prepare(st->db, "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", &s));
    step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        KMS_ENSURE(sqlite3_column_bytes(s, 1) == 32, KMS_ERR_STORE_DB,
                   "database: the last audit row has a malformed hash");
        memcpy(hash, sqlite3_column_blob(s, 1), 32);
        *count = (size_t)sqlite3_column_int64(s, 0);
    } else {
        KMS_ENSURE(step == SQLITE_DONE, KMS_ERR_STORE_DB, "database: read audit tail: %s",
                   sqlite3_errmsg(st->db));
    }
out:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->mu);
    return rc;
}
