/*
 * Keystore unit tests: identity round trip and run-once semantics, sealing (nothing secret in
 * the file, wrong KEK / flipped byte / swapped columns refused), KEK file checks, schema
 * guards, metadata, the audit hash chain, and import of a dstack key directory.
 */
#include <fcntl.h>
#include <pthread.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "common/file.h"
#include "common/log.h"
#include "storage/storage.h"
#include "storage_testutil.h"
#include "test.h"

/* ---- helpers ---- */

#define BOOT_INFO "{\"ca_pubkey\":\"0x01\",\"k256_pubkey\":\"0x02\"}"

/* Runs SQL on a separate raw connection (what an attacker with file access can do). */
static int raw_exec(const char *dir, const char *sql)
{
    char *p = st_path_in(dir, "kms.db");
    sqlite3 *db = NULL;
    int r = sqlite3_open(p, &db);

    if (r == SQLITE_OK)
        r = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    free(p);
    return r;
}

/* Reads / writes one blob cell of the identity row. */
static uint8_t *raw_get_blob(const char *dir, const char *col, size_t *len)
{
    char *p = st_path_in(dir, "kms.db");
    char sql[256];
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    uint8_t *out = NULL;

    snprintf(sql, sizeof(sql), "SELECT %s FROM identity WHERE id = 1", col);
    if (sqlite3_open(p, &db) == SQLITE_OK && sqlite3_prepare_v2(db, sql, -1, &s, NULL) == 0 &&
        sqlite3_step(s) == SQLITE_ROW) {
        *len = (size_t)sqlite3_column_bytes(s, 0);
        out = malloc(*len);
        memcpy(out, sqlite3_column_blob(s, 0), *len);
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    free(p);
    return out;
}

static int raw_set_blob(const char *dir, const char *col, const uint8_t *b, size_t len)
{
    char *p = st_path_in(dir, "kms.db");
    char sql[256];
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int r;

    snprintf(sql, sizeof(sql), "UPDATE identity SET %s = ? WHERE id = 1", col);
    r = sqlite3_open(p, &db);
    if (r == SQLITE_OK)
        r = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (r == SQLITE_OK)
        r = sqlite3_bind_blob(s, 1, b, (int)len, SQLITE_TRANSIENT);
    if (r == SQLITE_OK)
        r = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    sqlite3_finalize(s);
    sqlite3_close(db);
    free(p);
    return r;
}

static int write_file(const char *dir, const char *name, const void *p, size_t n, mode_t mode)
{
    char *path = st_path_in(dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    int ok = fd >= 0 && write(fd, p, n) == (ssize_t)n;

    if (fd >= 0)
        close(fd);
    chmod(path, mode);
    free(path);
    return ok ? 0 : -1;
}

/* Opens a store in dir with the file provider and saves id; returns 0 on success. */
static int create_with_identity(const char *dir, const struct kms_identity *id)
{
    struct kms_store *st = NULL;
    int rc = kms_store_open(dir, NULL, &st);

    if (rc == 0)
        rc = kms_store_save_identity(st, id);
    kms_store_close(st);
    return rc;
}

static int load_from(const char *dir, struct kms_identity *out)
{
    struct kms_store *st = NULL;
    int rc = kms_store_open(dir, NULL, &st);

    memset(out, 0, sizeof(*out));
    if (rc == 0)
        rc = kms_store_load_identity(st, out);
    kms_store_close(st);
    return rc;
}

/* ---- identity ---- */

/* Proves: an identity saved survives close/reopen bit for bit; an empty store reports no
 * identity; the data dir, db and KEK files are created private. */
static void test_roundtrip(void)
{
    char *dir = st_tmpdir_new("storage");
    char *sub = st_path_in(dir, "data");
    struct kms_store *st = NULL;
    struct kms_identity id, got;
    struct stat sb;
    char *p;

    st_make_identity(&id, "kms.test.example", 1, BOOT_INFO);
    CHECK_OK(kms_store_open(sub, NULL, &st));
    CHECK_RC(kms_store_has_identity(st), 0);
    CHECK_RC(kms_store_load_identity(st, &got), KMS_ERR_STORE_MISSING);
    CHECK_DETAIL("no identity");
    CHECK_OK(kms_store_save_identity(st, &id));
    CHECK_RC(kms_store_has_identity(st), 1);
    CHECK_OK(kms_store_load_identity(st, &got));
    CHECK(st_identity_eq(&id, &got));
    kms_identity_clear(&got);
    kms_store_close(st);

    CHECK_OK(load_from(sub, &got));
    CHECK(st_identity_eq(&id, &got));
    kms_identity_clear(&got);

    CHECK(stat(sub, &sb) == 0 && (sb.st_mode & 0777) == 0700);
    p = st_path_in(sub, "kek.bin");
    CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0600 && sb.st_size == 32);
    free(p);
    p = st_path_in(sub, "kms.db");
    CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    free(p);

    /* an identity without RPC key and bootstrap info round-trips the NULLs */
    kms_identity_clear(&id);
    st_tmpdir_free(dir);
    dir = st_tmpdir_new("storage");
    st_make_identity(&id, "kms.test.example", 0, BOOT_INFO);
    free(id.bootstrap_info_json);
    id.bootstrap_info_json = NULL;
    CHECK_OK(create_with_identity(dir, &id));
    CHECK_OK(load_from(dir, &got));
    CHECK(got.rpc_key_pem == NULL && got.bootstrap_info_json == NULL);
    CHECK(st_identity_eq(&id, &got));
    kms_identity_clear(&got);
    kms_identity_clear(&id);
    free(sub);
    st_tmpdir_free(dir);
}

/* Proves: a second save is refused with KMS_ERR_STORE_EXISTS (also across reopen) and the
 * stored identity is unchanged; the schema itself refuses a second row. */
static void test_second_save_refused(void)
{
    char *dir = st_tmpdir_new("storage");
    struct kms_identity a, b, got;
    struct kms_store *st = NULL;

    st_make_identity(&a, "kms.test.example", 1, BOOT_INFO);
    st_make_identity(&b, "kms.test.example", 1, BOOT_INFO);
    CHECK_OK(kms_store_open(dir, NULL, &st));
    CHECK_OK(kms_store_save_identity(st, &a));
    CHECK_RC(kms_store_save_identity(st, &b), KMS_ERR_STORE_EXISTS);
    CHECK_DETAIL("already stored");
    kms_store_close(st);
    CHECK_RC(create_with_identity(dir, &b), KMS_ERR_STORE_EXISTS);
    CHECK_OK(load_from(dir, &got));
    CHECK(st_identity_eq(&a, &got));
    kms_identity_clear(&got);
    /* single-row schema: CHECK(id = 1) rejects any other row even when written directly */
    CHECK(raw_exec(dir, "INSERT INTO identity(id, root_ca_key, tmp_ca_key, root_k256, domain, "
                        "origin, created_at) VALUES(2, x'00', x'00', x'00', 'd', 'o', 0)") ==
          SQLITE_CONSTRAINT);
    kms_identity_clear(&a);
    kms_identity_clear(&b);
    st_tmpdir_free(dir);
}

/* Proves: save validates key formats before writing (bad PEM, zero k256, missing domain) and
 * nothing is stored on refusal. */
static void test_save_validates(void)
{
    char *dir = st_tmpdir_new("storage");
    struct kms_store *st = NULL;
    struct kms_identity id;
    char *keep;

    st_make_identity(&id, "kms.test.example", 1, BOOT_INFO);
    CHECK_OK(kms_store_open(dir, NULL, &st));
    keep = id.tmp_ca_key_pem;
    id.tmp_ca_key_pem = st_gen_pem("P-384", 0);
    CHECK_RC(kms_store_save_identity(st, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("temp CA key is an EC key on curve secp384r1, not P-256");
    free(id.tmp_ca_key_pem);
    id.tmp_ca_key_pem = keep;

    memset(id.root_k256, 0, 32);
    CHECK_RC(kms_store_save_identity(st, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("root k256 key is zero");
    id.root_k256[0] = 1;

    keep = id.domain;
    id.domain = NULL;
    CHECK_RC(kms_store_save_identity(st, &id), KMS_ERR_INVAL);
    CHECK_DETAIL("no domain");
    id.domain = keep;
    CHECK_RC(kms_store_has_identity(st), 0);
    CHECK_OK(kms_store_save_identity(st, &id));
    kms_store_close(st);
    kms_identity_clear(&id);
    st_tmpdir_free(dir);
}

/* Proves: set_rpc_key needs an identity, validates the PEM, and replaces only the RPC key. */
static void test_set_rpc_key(void)
{
    char *dir = st_tmpdir_new("storage");
    struct kms_store *st = NULL;
    struct kms_identity id, got;
    char *rpc = st_gen_pem("P-256", 0);
    char *bad = st_gen_pem(NULL, 0);

    st_make_identity(&id, "kms.test.example", 0, BOOT_INFO);
    CHECK_OK(kms_store_open(dir, NULL, &st));
    CHECK_RC(kms_store_set_rpc_key(st, rpc), KMS_ERR_STORE_MISSING);
    CHECK_DETAIL("no identity");
    CHECK_OK(kms_store_save_identity(st, &id));
    CHECK_RC(kms_store_set_rpc_key(st, bad), KMS_ERR_PARSE);
    CHECK_DETAIL("RPC key is a ED25519 key");
    CHECK_OK(kms_store_set_rpc_key(st, rpc));
    CHECK_OK(kms_store_load_identity(st, &got));
    CHECK(st_str_eq(got.rpc_key_pem, rpc));
    free(id.rpc_key_pem);
    id.rpc_key_pem = strdup(rpc);
    CHECK(st_identity_eq(&id, &got));
    kms_identity_clear(&got);
    kms_store_close(st);
    kms_identity_clear(&id);
    free(rpc);
    free(bad);
    st_tmpdir_free(dir);
}

/* ---- sealing ---- */

static int file_contains(const char *path, const void *needle, size_t n)
{
    uint8_t *b = NULL;
    size_t len = 0;
    int found;

    if (kms_file_read(path, 64u << 20, &b, &len) != 0)
        return 0; /* absent file contains nothing */
    found = memmem(b, len, needle, n) != NULL;
    free(b);
    return found;
}

static int db_files_contain(const char *dir, const void *needle, size_t n)
{
    static const char *const names[] = {"kms.db", "kms.db-wal", "kms.db-journal"};
    int found = 0;

    for (size_t i = 0; i < 3; i++) {
        char *p = st_path_in(dir, names[i]);

        found |= file_contains(p, needle, n);
        free(p);
    }
    return found;
}

/* A line of the PEM's base64 body (the key bytes) */
static void pem_body_line(const char *pem, char *out, size_t cap)
{
    const char *l = strchr(pem, '\n') + 1;
    size_t n = strcspn(l, "\n");

    if (n >= cap)
        n = cap - 1;
    memcpy(out, l, n);
    out[n] = 0;
}

/* Proves: the db file (and WAL) hold neither PEM text nor k256 bytes, while the non-secret
 * domain is found (so the grep itself works). Checked with the store open and after close. */
static void test_no_plaintext_on_disk(void)
{
    char *dir = st_tmpdir_new("storage");
    struct kms_store *st = NULL;
    struct kms_identity id;
    char line[128];
    const char *pems[3];

    st_make_identity(&id, "kms.test.example", 1, BOOT_INFO);
    pems[0] = id.root_ca_key_pem;
    pems[1] = id.tmp_ca_key_pem;
    pems[2] = id.rpc_key_pem;
    CHECK_OK(kms_store_open(dir, NULL, &st));
    CHECK_OK(kms_store_save_identity(st, &id));
    for (int pass = 0; pass < 2; pass++) {
        CHECK(db_files_contain(dir, id.domain, strlen(id.domain)));
        CHECK(!db_files_contain(dir, "PRIVATE KEY", 11));
        CHECK(!db_files_contain(dir, id.root_k256, 32));
        CHECK(!db_files_contain(dir, id.root_k256 + 8, 16));
        for (int i = 0; i < 3; i++) {
            pem_body_line(pems[i], line, sizeof(line));
            CHECK(strlen(line) >= 60);
            CHECK(!db_files_contain(dir, line, strlen(line)));
        }
        kms_store_close(st); /* second pass: after checkpoint into kms.db */
        st = NULL;
    }
    kms_identity_clear(&id);
    st_tmpdir_free(dir);
}

/* Proves: a replaced KEK file is refused at open with KMS_ERR_STORE_SEAL; and with the KEK
 * check value removed, the AEAD itself refuses to unseal under the wrong KEK. */
static void test_wrong_kek(void)
{
    char *dir = st_tmpdir_new("storage");
    struct kms_store *st = NULL;
    struct kms_identity id, got;
    uint8_t other[32];
    char *kek = NULL;

    st_make_identity(&id, "kms.test.example", 1, BOOT_INFO);
    CHECK_OK(create_with_identity(dir, &id));
    kek = st_path_in(dir, "kek.bin");
    unlink(kek);
    RAND_bytes(other, sizeof(other));
    CHECK(write_file(dir, "kek.bin", other, 32, 0600) == 0);
    CHECK_RC(kms_store_open(dir, NULL, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("not the key this database was sealed with");
    CHECK(st == NULL);

    CHECK(raw_exec(dir, "DELETE FROM seal") == SQLITE_OK);
    CHECK_RC(load_from(dir, &got), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("cannot unseal identity/root_ca_key: authentication failed");
    CHECK(got.root_ca_key_pem == NULL && got.domain == NULL);

    /* KEK gone while the database is sealed: refused, no new KEK silently created */
    CHECK_OK(kms_store_open(dir, NULL, &st)); /* the load above re-adopted 'other' */
    kms_store_close(st);
    st = NULL;
    unlink(kek);
    CHECK_RC(kms_store_open(dir, NULL, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("is missing, but this database is sealed");
    CHECK(!kms_file_exists(kek));
    kms_identity_clear(&id);
    free(kek);
    st_tmpdir_free(dir);
}

/* Proves: flipping one byte anywhere in a sealed blob (version, nonce, ciphertext, tag) makes
 * load fail with KMS_ERR_STORE_SEAL and return no secret; restoring the byte restores load. */
static void test_flipped_byte(void)
{
    static const char *const cols[] = {"root_ca_key", "tmp_ca_key", "root_k256", "rpc_key"};
    char *dir = st_tmpdir_new("storage");
    struct kms_identity id, got;

    st_make_identity(&id, "kms.test.example", 1, BOOT_INFO);
    CHECK_OK(create_with_identity(dir, &id));
    for (size_t c = 0; c < 4; c++) {
        size_t len = 0;
        uint8_t *b = raw_get_blob(dir, cols[c], &len);
        size_t pos[4];

        CHECK(b != NULL && len >= 29);
        if (b == NULL)
            continue;
        pos[0] = 0;       /* version */
        pos[1] = 5;       /* nonce */
        pos[2] = 13;      /* ciphertext */
        pos[3] = len - 1; /* tag */
        for (size_t i = 0; i < 4; i++) {
            b[pos[i]] ^= 0x01;
            CHECK(raw_set_blob(dir, cols[c], b, len) == SQLITE_OK);
            CHECK_RC(load_from(dir, &got), KMS_ERR_STORE_SEAL);
            CHECK_DETAIL(i == 0 ? "unknown version" : "authentication failed");
            CHECK_DETAIL(cols[c]);
            CHECK(got.root_ca_key_pem == NULL && got.rpc_key_pem == NULL);
            b[pos[i]] ^= 0x01;
        }
        CHECK(raw_set_blob(dir, cols[c], b, len) == SQLITE_OK);
        CHECK_OK(load_from(dir, &got));
        CHECK(st_identity_eq(&id, &got));
        kms_identity_clear(&got);
        /* truncated blob */
        CHECK(raw_set_blob(dir, cols[c], b, 20) == SQLITE_OK);
        CHECK_RC(load_from(dir, &got), KMS_ERR_STORE_SEAL);
        CHECK_DETAIL("invalid length");
        CHECK(raw_set_blob(dir, cols[c], b, len) == SQLITE_OK);
        free(b);
    }
    kms_identity_clear(&id);
    st_tmpdir_free(dir);
}

/* Proves: the AAD binds each blob to its column: swapping two sealed columns (both valid
 * ciphertexts under the right KEK) is refused with KMS_ERR_STORE_SEAL. */
static void test_swapped_columns(void)
{
    char *dir = st_tmpdir_new("storage");
    struct kms_identity id, got;
    size_t la = 0, lb = 0;
    uint8_t *a, *b;

    st_make_identity(&id, "kms.test.example", 1, BOOT_INFO);
    CHECK_OK(create_with_identity(dir, &id));
    a = raw_get_blob(dir, "root_ca_key", &la);
    b = raw_get_blob(dir, "tmp_ca_key", &lb);
    CHECK(a != NULL && b != NULL);
    CHECK(raw_set_blob(dir, "root_ca_key", b, lb) == SQLITE_OK);
    CHECK(raw_set_blob(dir, "tmp_ca_key", a, la) == SQLITE_OK);
    CHECK_RC(load_from(dir, &got), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("cannot unseal identity/root_ca_key");
    CHECK(got.root_ca_key_pem == NULL);
    /* the rpc key moved into the root CA column: same outcome */
    CHECK(raw_set_blob(dir, "tmp_ca_key", b, lb) == SQLITE_OK);
    free(b);
    b = raw_get_blob(dir, "rpc_key", &lb);
    CHECK(raw_set_blob(dir, "root_ca_key", b, lb) == SQLITE_OK);
    CHECK_RC(load_from(dir, &got), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("identity/root_ca_key");
    CHECK(raw_set_blob(dir, "root_ca_key", a, la) == SQLITE_OK);
    CHECK_OK(load_from(dir, &got));
    CHECK(st_identity_eq(&id, &got));
    kms_identity_clear(&got);
    free(a);
    free(b);
    kms_identity_clear(&id);
    st_tmpdir_free(dir);
}

/* ---- KEK file and providers ---- */

/* Proves: a KEK file with group/other access, the wrong size, or behind a symlink is refused
 * with KMS_ERR_STORE_SEAL; an explicit kek_path outside data_dir is honoured. */
static void test_kek_file_checks(void)
{
    char *dir = st_tmpdir_new("storage");
    char *kek = st_path_in(dir, "kek.bin");
    struct kms_store *st = NULL;
    struct kms_seal_cfg cfg = {0};
    uint8_t k[33] = {1};
    char *d2, *kek2, *link;

    CHECK_OK(kms_store_open(dir, NULL, &st));
    kms_store_close(st);
    st = NULL;
    CHECK(chmod(kek, 0644) == 0);
    CHECK_RC(kms_store_open(dir, NULL, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("has mode 0644");
    CHECK_DETAIL("chmod 600");
    CHECK(chmod(kek, 0640) == 0);
    CHECK_RC(kms_store_open(dir, NULL, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("has mode 0640");
    CHECK(chmod(kek, 0602) == 0);
    CHECK_RC(kms_store_open(dir, NULL, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("group or others");
    CHECK(chmod(kek, 0600) == 0);
    CHECK_OK(kms_store_open(dir, NULL, &st));
    kms_store_close(st);
    st = NULL;

    /* wrong size: fresh dir, KEK provided with 31 and 33 bytes */
    d2 = st_tmpdir_new("storage");
    CHECK(write_file(d2, "kek.bin", k, 31, 0600) == 0);
    CHECK_RC(kms_store_open(d2, NULL, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("has 31 bytes; a KEK is exactly 32 bytes");
    CHECK(write_file(d2, "kek.bin", k, 33, 0600) == 0);
    CHECK_RC(kms_store_open(d2, NULL, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("has 33 bytes");
    CHECK(write_file(d2, "kek.bin", k, 32, 0600) == 0);
    CHECK_OK(kms_store_open(d2, NULL, &st)); /* an operator-provided KEK is used as is */
    kms_store_close(st);
    st = NULL;

    /* symlink refused */
    link = st_path_in(dir, "kek-link");
    CHECK(symlink(kek, link) == 0);
    cfg.provider = "file";
    cfg.kek_path = link;
    st_tmpdir_free(d2);
    d2 = st_tmpdir_new("storage");
    CHECK_RC(kms_store_open(d2, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("symbolic link");

    /* explicit path: created there, not in data_dir */
    kek2 = st_path_in(dir, "elsewhere.kek");
    cfg.kek_path = kek2;
    CHECK_OK(kms_store_open(d2, &cfg, &st));
    kms_store_close(st);
    st = NULL;
    CHECK(kms_file_exists(kek2));
    {
        char *def = st_path_in(d2, "kek.bin");

        CHECK(!kms_file_exists(def));
        free(def);
    }
    free(link);
    free(kek2);
    free(kek);
    st_tmpdir_free(d2);
    st_tmpdir_free(dir);
}

/* Proves: the "tpm" provider validates its PCR selection before touching a TPM (the TPM itself
 * is tested in test_seal_tpm), and an unknown provider is an invalid argument naming the
 * available ones; neither leaves a store open. */
static void test_providers(void)
{
    char *dir = st_tmpdir_new("storage");
    char *db = st_path_in(dir, "kms.db");
    struct kms_store *st = NULL;
    struct kms_seal_cfg cfg = {.provider = "tpm", .pcrs = "sha256:24"};

    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_INVAL);
    CHECK_DETAIL("\"24\" is not a PCR index 0..23");
    CHECK(st == NULL);
    cfg.provider = "vault";
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_INVAL);
    CHECK_DETAIL("unknown seal provider \"vault\"; available providers: file, tpm");
    cfg.provider = "file";
    CHECK_OK(kms_store_open(dir, &cfg, &st));
    kms_store_close(st);
    free(db);
    st_tmpdir_free(dir);
}

/* ---- schema ---- */

/* Proves: a database from a newer schema, or a non-kmsd SQLite file, is refused. */
static void test_schema_guards(void)
{
    char *dir = st_tmpdir_new("storage");
    struct kms_store *st = NULL;

    CHECK_OK(kms_store_open(dir, NULL, &st));
    kms_store_close(st);
    st = NULL;
    CHECK(raw_exec(dir, "PRAGMA user_version = 2") == SQLITE_OK);
    CHECK_RC(kms_store_open(dir, NULL, &st), KMS_ERR_STORE_DB);
    CHECK_DETAIL("schema version 2 is newer");
    CHECK(raw_exec(dir, "PRAGMA user_version = 1") == SQLITE_OK);
    CHECK(raw_exec(dir, "PRAGMA application_id = 7") == SQLITE_OK);
    CHECK_RC(kms_store_open(dir, NULL, &st), KMS_ERR_STORE_DB);
    CHECK_DETAIL("not a kmsd database");
    st_tmpdir_free(dir);

    dir = st_tmpdir_new("storage");
    CHECK(raw_exec(dir, "CREATE TABLE other(x)") == SQLITE_OK);
    CHECK_RC(kms_store_open(dir, NULL, &st), KMS_ERR_STORE_DB);
    CHECK_DETAIL("not a kmsd database");
    st_tmpdir_free(dir);
}

/* ---- metadata ---- */

/* Proves: meta values round-trip, overwrite, persist, and a missing key is KMS_ERR_NOTFOUND. */
static void test_meta(void)
{
    char *dir = st_tmpdir_new("storage");
    struct kms_store *st = NULL;
    char *v = NULL;

    CHECK_OK(kms_store_open(dir, NULL, &st));
    CHECK_RC(kms_store_meta_get(st, "state", &v), KMS_ERR_NOTFOUND);
    CHECK_DETAIL("no metadata value for key \"state\"");
    CHECK(v == NULL);
    CHECK_OK(kms_store_meta_set(st, "state", "onboarding"));
    CHECK_OK(kms_store_meta_set(st, "state", "serving"));
    CHECK_OK(kms_store_meta_set(st, "empty", ""));
    CHECK_RC(kms_store_meta_set(st, "", "x"), KMS_ERR_INVAL);
    kms_store_close(st);
    st = NULL;
    CHECK_OK(kms_store_open(dir, NULL, &st));
    CHECK_OK(kms_store_meta_get(st, "state", &v));
    CHECK(v != NULL && strcmp(v, "serving") == 0);
    free(v);
    CHECK_OK(kms_store_meta_get(st, "empty", &v));
    CHECK(v != NULL && v[0] == '\0');
    free(v);
    kms_store_close(st);
    st_tmpdir_free(dir);
}

/* ---- audit ---- */

/* Proves: the audit chain verifies; rows cannot be updated through normal SQL; an edited row
 * (detail, ts, prev_hash), a deleted row, and a renumbered row each make verify fail with
 * KMS_ERR_VERIFY naming the first broken row; the head reports count and last hash. */
struct audit_writer {
    struct kms_store *st;
    int id;
    int failed;
};

static void *audit_writer_run(void *arg)
{
    struct audit_writer *w = arg;

    for (int i = 0; i < 50; i++) {
        char detail[64];

        snprintf(detail, sizeof(detail), "writer=%d seq=%d", w->id, i);
        if (kms_store_audit(w->st, "GetAppKey", "released", detail) < 0)
            w->failed++;
    }
    return NULL;
}

/* 8 threads append 50 rows each at once (key releases audit concurrently): the rows form one
 * intact chain, none lost, each writer's rows in its order. */
static void test_audit_concurrent(void)
{
    char *dir = st_tmpdir_new("storage");
    struct kms_store *st = NULL;
    struct audit_writer w[8];
    pthread_t t[8];
    int next[8] = {0};
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    size_t n = 0;
    int in_order = 1;

    CHECK_OK(kms_store_open(dir, NULL, &st));
    for (int i = 0; i < 8; i++) {
        w[i].st = st;
        w[i].id = i;
        w[i].failed = 0;
        CHECK(pthread_create(&t[i], NULL, audit_writer_run, &w[i]) == 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        CHECK(w[i].failed == 0);
    }
    CHECK_OK(kms_store_audit_verify(st, &n));
    CHECK(n == 400);
    kms_store_close(st);
    {
        char *p = st_path_in(dir, "kms.db");

        CHECK(sqlite3_open_v2(p, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
        free(p);
    }
    CHECK(sqlite3_prepare_v2(db, "SELECT detail FROM audit ORDER BY id", -1, &q, NULL) ==
          SQLITE_OK);
    while (q != NULL && sqlite3_step(q) == SQLITE_ROW) {
        int wi = -1, seq = -1;

        if (sscanf((const char *)sqlite3_column_text(q, 0), "writer=%d seq=%d", &wi, &seq) != 2 ||
            wi < 0 || wi >= 8 || seq != next[wi]++)
            in_order = 0;
    }
    CHECK(in_order);
    for (int i = 0; i < 8; i++)
        CHECK(next[i] == 50);
    sqlite3_finalize(q);
    sqlite3_close(db);
    st_tmpdir_free(dir);
}

static void test_audit_chain(void)
{
    char *dir = st_tmpdir_new("storage");
    struct kms_store *st = NULL;
    uint8_t head[32], zero[32] = {0};
    size_t n = 0;

    CHECK_OK(kms_store_open(dir, NULL, &st));
    CHECK_OK(kms_store_audit_verify(st, &n));
    CHECK(n == 0);
    CHECK_OK(kms_store_audit_head(st, &n, head));
    CHECK(n == 0 && memcmp(head, zero, 32) == 0);
    for (int i = 0; i < 5; i++) {
        char detail[64];

        snprintf(detail, sizeof(detail), "app_id=0x%02x", i);
        CHECK_OK(kms_store_audit(st, "GetAppKey", i % 2 ? "denied" : "allowed", detail));
    }
    CHECK_RC(kms_store_audit(st, "", "allowed", NULL), KMS_ERR_INVAL);
    CHECK_OK(kms_store_audit_verify(st, &n));
    CHECK(n == 5);
    CHECK_OK(kms_store_audit_head(st, &n, head));
    CHECK(n == 5 && memcmp(head, zero, 32) != 0);
    kms_store_close(st);
    st = NULL;

    /* the triggers keep the log append-only for ordinary SQL */
    CHECK(raw_exec(dir, "UPDATE audit SET detail = 'x' WHERE id = 3") == SQLITE_CONSTRAINT);
    CHECK(raw_exec(dir, "DELETE FROM audit WHERE id = 3") == SQLITE_CONSTRAINT);
    CHECK(raw_exec(dir, "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;") ==
          SQLITE_OK);

    CHECK_OK(kms_store_open(dir, NULL, &st));
    CHECK(raw_exec(dir, "UPDATE audit SET detail = 'app_id=0xff' WHERE id = 3") == SQLITE_OK);
    CHECK_RC(kms_store_audit_verify(st, &n), KMS_ERR_VERIFY);
    CHECK_DETAIL("audit log broken at row 3: its hash does not match its contents");
    CHECK(n == 2);
    CHECK(raw_exec(dir, "UPDATE audit SET detail = 'app_id=0x02' WHERE id = 3") == SQLITE_OK);
    CHECK_OK(kms_store_audit_verify(st, &n));
    CHECK(n == 5);

    CHECK(raw_exec(dir, "UPDATE audit SET outcome = 'allowed' WHERE id = 4") == SQLITE_OK);
    CHECK_RC(kms_store_audit_verify(st, &n), KMS_ERR_VERIFY);
    CHECK_DETAIL("row 4:");
    CHECK(raw_exec(dir, "UPDATE audit SET outcome = 'denied' WHERE id = 4") == SQLITE_OK);

    CHECK(raw_exec(dir, "UPDATE audit SET ts = ts + 1 WHERE id = 2") == SQLITE_OK);
    CHECK_RC(kms_store_audit_verify(st, &n), KMS_ERR_VERIFY);
    CHECK_DETAIL("row 2:");
    CHECK(raw_exec(dir, "UPDATE audit SET ts = ts - 1 WHERE id = 2") == SQLITE_OK);

    /* rewriting row 2's hash to match its edit still breaks row 3's prev_hash link */
    CHECK(raw_exec(dir, "UPDATE audit SET prev_hash = zeroblob(32) WHERE id = 2") == SQLITE_OK);
    CHECK_RC(kms_store_audit_verify(st, &n), KMS_ERR_VERIFY);
    CHECK_DETAIL("row 2: prev_hash does not match");
    CHECK(n == 1);
    CHECK(raw_exec(dir, "UPDATE audit SET prev_hash = (SELECT hash FROM audit WHERE id = 1) "
                        "WHERE id = 2") == SQLITE_OK);
    CHECK_OK(kms_store_audit_verify(st, &n));

    CHECK(raw_exec(dir, "DELETE FROM audit WHERE id = 4") == SQLITE_OK);
    CHECK_RC(kms_store_audit_verify(st, &n), KMS_ERR_VERIFY);
    CHECK_DETAIL("audit log broken at row 5: expected row 4");
    CHECK(n == 3);
    kms_store_close(st);
    st_tmpdir_free(dir);
}

/* ---- dstack key directory import ---- */

struct dstack_dir {
    char *dir;
    char *root_pem, *tmp_pem, *rpc_pem;
    uint8_t k256[32];
};

static void dstack_dir_make(struct dstack_dir *d)
{
    d->dir = st_tmpdir_new("storage");
    d->root_pem = st_gen_pem("P-256", 0);
    d->tmp_pem = st_gen_pem("P-256", 0);
    d->rpc_pem = st_gen_pem("P-256", 0);
    RAND_bytes(d->k256, 32);
    d->k256[0] = 0x7f;
    CHECK(write_file(d->dir, "root-ca.key", d->root_pem, strlen(d->root_pem), 0600) == 0);
    CHECK(write_file(d->dir, "tmp-ca.key", d->tmp_pem, strlen(d->tmp_pem), 0600) == 0);
    CHECK(write_file(d->dir, "root-k256.key", d->k256, 32, 0600) == 0);
}

static void dstack_dir_free(struct dstack_dir *d)
{
    free(d->root_pem);
    free(d->tmp_pem);
    free(d->rpc_pem);
    st_tmpdir_free(d->dir);
}

/* Proves: a dstack directory (keys made by OpenSSL here) is read exactly, optional files are
 * NULL when absent, rpc-domain is trimmed, origin names the dir, and the result can be saved
 * and loaded back unchanged. */
static void test_dstack_import(void)
{
    struct dstack_dir d;
    struct kms_identity id, got;
    char origin[600];
    const char *info = "{\"ca_pubkey\":\"0xab\",\"k256_pubkey\":\"0xcd\",\"attestation\":\"0x\"}";
    char *store;

    dstack_dir_make(&d);
    CHECK_OK(kms_dstack_read_dir(d.dir, &id));
    CHECK(st_str_eq(id.root_ca_key_pem, d.root_pem) && st_str_eq(id.tmp_ca_key_pem, d.tmp_pem));
    CHECK(memcmp(id.root_k256, d.k256, 32) == 0);
    CHECK(id.rpc_key_pem == NULL && id.domain == NULL && id.bootstrap_info_json == NULL);
    snprintf(origin, sizeof(origin), "import %s", d.dir);
    CHECK(st_str_eq(id.origin, origin));
    kms_identity_clear(&id);
    CHECK(id.origin == NULL && id.root_ca_key_pem == NULL);

    CHECK(write_file(d.dir, "rpc.key", d.rpc_pem, strlen(d.rpc_pem), 0600) == 0);
    CHECK(write_file(d.dir, "rpc-domain", "  kms.example.com\n", 18, 0644) == 0);
    CHECK(write_file(d.dir, "bootstrap-info.json", info, strlen(info), 0644) == 0);
    CHECK_OK(kms_dstack_read_dir(d.dir, &id));
    CHECK(st_str_eq(id.rpc_key_pem, d.rpc_pem));
    CHECK(st_str_eq(id.domain, "kms.example.com"));
    CHECK(st_str_eq(id.bootstrap_info_json, info));

    store = st_path_in(d.dir, "store");
    CHECK_OK(create_with_identity(store, &id));
    CHECK_OK(load_from(store, &got));
    CHECK(st_identity_eq(&id, &got));
    kms_identity_clear(&got);
    kms_identity_clear(&id);
    free(store);
    dstack_dir_free(&d);
}

/* Proves each validation of kms_dstack_read_dir: the exact input is flipped and the precise
 * error code and a detail naming the file come back; out is left empty. */
static void test_dstack_import_negative(void)
{
    struct dstack_dir d;
    struct kms_identity id;
    uint8_t k[33];
    char *p;
    char *pem;

    dstack_dir_make(&d);

    /* missing required file */
    p = st_path_in(d.dir, "tmp-ca.key");
    CHECK(unlink(p) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_NOTFOUND);
    CHECK_DETAIL("has no tmp-ca.key (required)");
    CHECK(id.root_ca_key_pem == NULL && id.origin == NULL);
    CHECK(write_file(d.dir, "tmp-ca.key", d.tmp_pem, strlen(d.tmp_pem), 0600) == 0);
    free(p);
    p = st_path_in(d.dir, "root-k256.key");
    CHECK(unlink(p) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_NOTFOUND);
    CHECK_DETAIL("root-k256.key");
    free(p);

    /* k256 of 31 and 33 bytes; zero; not below the order */
    memcpy(k, d.k256, 32);
    k[32] = 0;
    CHECK(write_file(d.dir, "root-k256.key", k, 31, 0600) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("root-k256.key in");
    CHECK_DETAIL("has 31 bytes; it must be exactly 32 raw bytes");
    CHECK(write_file(d.dir, "root-k256.key", k, 33, 0600) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("has 33 bytes");
    memset(k, 0, 32);
    CHECK(write_file(d.dir, "root-k256.key", k, 32, 0600) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("root-k256.key is zero");
    memset(k, 0xff, 32);
    CHECK(write_file(d.dir, "root-k256.key", k, 32, 0600) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("root-k256.key is not below the secp256k1 group order");
    /* exactly the order n is invalid, n - 1 is valid */
    {
        static const uint8_t n[32] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE,
                                      0xBA, 0xAE, 0xDC, 0xE6, 0xAF, 0x48, 0xA0, 0x3B,
                                      0xBF, 0xD2, 0x5E, 0x8C, 0xD0, 0x36, 0x41, 0x41};
        memcpy(k, n, 32);
        CHECK_RC(kms_store_check_k256(k, "k"), KMS_ERR_PARSE);
        k[31] = 0x40;
        CHECK_OK(kms_store_check_k256(k, "k"));
    }
    CHECK(write_file(d.dir, "root-k256.key", d.k256, 32, 0600) == 0);

    /* non-EC key (Ed25519), EC on the wrong curve, SEC1 "EC PRIVATE KEY", garbage, trailing */
    pem = st_gen_pem(NULL, 0);
    CHECK(write_file(d.dir, "root-ca.key", pem, strlen(pem), 0600) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("root-ca.key is a ED25519 key, not an EC P-256 key");
    free(pem);
    pem = st_gen_pem("secp256k1", 0);
    CHECK(write_file(d.dir, "root-ca.key", pem, strlen(pem), 0600) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("root-ca.key is an EC key on curve secp256k1, not P-256");
    free(pem);
    pem = st_gen_pem("P-256", 1);
    CHECK(strstr(pem, "EC PRIVATE KEY") != NULL);
    CHECK(write_file(d.dir, "root-ca.key", pem, strlen(pem), 0600) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("root-ca.key is a PEM \"EC PRIVATE KEY\", not a PKCS#8 \"PRIVATE KEY\"");
    free(pem);
    CHECK(write_file(d.dir, "root-ca.key", "not a key\n", 10, 0600) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("root-ca.key is not a PEM block");
    if (asprintf(&pem, "%sjunk\n", d.root_pem) < 0)
        exit(2);
    CHECK(write_file(d.dir, "root-ca.key", pem, strlen(pem), 0600) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("root-ca.key has data after its PEM block");
    free(pem);
    CHECK(write_file(d.dir, "root-ca.key", d.root_pem, strlen(d.root_pem), 0600) == 0);

    /* optional files, when present, are validated too */
    pem = st_gen_pem(NULL, 0);
    CHECK(write_file(d.dir, "rpc.key", pem, strlen(pem), 0600) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("rpc.key is a ED25519 key");
    free(pem);
    p = st_path_in(d.dir, "rpc.key");
    unlink(p);
    free(p);
    CHECK(write_file(d.dir, "rpc-domain", " \n", 2, 0644) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("rpc-domain in");
    CHECK_DETAIL("is empty");
    CHECK(write_file(d.dir, "rpc-domain", "a b\n", 4, 0644) == 0);
    CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_PARSE);
    CHECK_DETAIL("rpc-domain in");
    CHECK(write_file(d.dir, "rpc-domain", "ok.example\n", 11, 0644) == 0);

    /* oversized key file */
    {
        size_t big = 20000;
        char *b = malloc(big);

        memset(b, 'A', big);
        CHECK(write_file(d.dir, "tmp-ca.key", b, big, 0600) == 0);
        CHECK_RC(kms_dstack_read_dir(d.dir, &id), KMS_ERR_PARSE);
        CHECK_DETAIL("tmp-ca.key in");
        CHECK_DETAIL("is larger than 16384 bytes");
        free(b);
        CHECK(write_file(d.dir, "tmp-ca.key", d.tmp_pem, strlen(d.tmp_pem), 0600) == 0);
    }
    CHECK_OK(kms_dstack_read_dir(d.dir, &id));
    CHECK(st_str_eq(id.domain, "ok.example"));
    kms_identity_clear(&id);
    dstack_dir_free(&d);
}

int main(void)
{
    kms_log_set_level(KMS_LOG_WARN); /* KEK creation notices */
    RUN(test_roundtrip);
    RUN(test_second_save_refused);
    RUN(test_save_validates);
    RUN(test_set_rpc_key);
    RUN(test_no_plaintext_on_disk);
    RUN(test_wrong_kek);
    RUN(test_flipped_byte);
    RUN(test_swapped_columns);
    RUN(test_kek_file_checks);
    RUN(test_providers);
    RUN(test_schema_guards);
    RUN(test_meta);
    RUN(test_audit_chain);
    RUN(test_audit_concurrent);
    RUN(test_dstack_import);
    RUN(test_dstack_import_negative);
    TEST_MAIN_END();
}
