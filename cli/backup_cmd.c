/* kmsctl backup (create / inspect / restore: encrypted identity backup with M-of-N recovery
 * shares) and kmsctl audit (verify / show the hash-chained audit log). DESIGN.md §1, §7. Secrets
 * are never printed, except the shares with an explicit --print-shares. */
#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/buf.h"
#include "common/file.h"
#include "common/hex.h"
#include "storage/storage.h"

#define SHARE_FILE_MAX (64u * 1024u) /* a share file or stdin: comments plus share lines */
#define MAX_GIVEN_SHARES (4 * KMS_BACKUP_MAX_SHARES)
#define PATH_LEN 4096

static int fail(const char *what)
{
    fprintf(stderr, "kmsctl: %s: %s\n", what, kms_err_detail());
    return 1;
}

/* ---------------------------------------------------------------- shared options */

#define SEAL_USAGE                                                                                 \
    "  --seal file|tpm    KEK seal provider of the keystore (default file)\n"                      \
    "  --kek-file PATH    KEK file for --seal file (default DIR/kek.bin)\n"                        \
    "  --tpm-tcti TCTI    TPM for --seal tpm (default device:/dev/tpmrm0)\n"                       \
    "  --seal-pcrs SPEC   PCRs a new KEK is sealed to for --seal tpm (restore only)\n"

enum { OPT_SEAL = 1000, OPT_KEK, OPT_TCTI, OPT_PCRS };

#define SEAL_OPTIONS                                                                               \
    {"seal", required_argument, NULL, OPT_SEAL}, {"kek-file", required_argument, NULL, OPT_KEK},   \
        {"tpm-tcti", required_argument, NULL, OPT_TCTI},                                           \
    {                                                                                              \
        "seal-pcrs", required_argument, NULL, OPT_PCRS                                             \
    }

/* Applies a seal option; returns 1 when c was one. */
static int seal_opt(int c, struct kms_seal_cfg *seal)
{
    switch (c) {
    case OPT_SEAL:
        seal->provider = optarg;
        return 1;
    case OPT_KEK:
        seal->kek_path = optarg;
        return 1;
    case OPT_TCTI:
        seal->tcti = optarg;
        return 1;
    case OPT_PCRS:
        seal->pcrs = optarg;
        return 1;
    default:
        return 0;
    }
}

static int seal_check(const struct kms_seal_cfg *seal)
{
    if (strcmp(seal->provider, "file") != 0 && strcmp(seal->provider, "tpm") != 0) {
        fprintf(stderr, "kmsctl: --seal must be file or tpm\n");
        return -1;
    }
    if (strcmp(seal->provider, "file") == 0 && (seal->tcti != NULL || seal->pcrs != NULL)) {
        fprintf(stderr, "kmsctl: --tpm-tcti and --seal-pcrs apply to --seal tpm only\n");
        return -1;
    }
    if (strcmp(seal->provider, "tpm") == 0 && seal->kek_path != NULL) {
        fprintf(stderr, "kmsctl: --kek-file applies to --seal file only\n");
        return -1;
    }
    return 0;
}

/* 1 when DIR/kms.db exists. */
static int have_db(const char *dir)
{
    char p[PATH_LEN];

    if (snprintf(p, sizeof(p), "%s/kms.db", dir) >= (int)sizeof(p))
        return 0;
    return kms_file_exists(p);
}

/* Opens an existing keystore (never creates one). */
static int open_existing(const char *dir, const struct kms_seal_cfg *seal, struct kms_store **st)
{
    *st = NULL;
    if (!have_db(dir))
        return kms_err_set(KMS_ERR_NOTFOUND, "no keystore in %s (no kms.db)", dir);
    return kms_store_open(dir, seal, st);
}

static int parse_count(const char *s, unsigned max, unsigned *v)
{
    char *end = NULL;
    unsigned long x;

    errno = 0;
    x = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || x > max || s[0] == '-')
        return -1;
    *v = (unsigned)x;
    return 0;
}

static void print_utc(FILE *f, int64_t unix_ms)
{
    time_t t = (time_t)(unix_ms / 1000);
    struct tm tm;
    char buf[32];

    if (gmtime_r(&t, &tm) == NULL || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        fprintf(f, "%lld", (long long)unix_ms);
        return;
    }
    fprintf(f, "%s.%03dZ", buf, (int)(unix_ms % 1000));
}

/* ---------------------------------------------------------------- backup */

static const char backup_usage[] =
    "Usage: kmsctl backup create --data-dir DIR --out FILE --shares N --threshold M\n"
    "                            (--share-dir DIR | --print-shares)\n"
    "       kmsctl backup inspect FILE\n"
    "       kmsctl backup restore --data-dir DIR --backup FILE [--share FILE]...\n"
    "\n"
    "Disaster recovery: an encrypted backup of the cluster identity (root CA key, temp CA key,\n"
    "root k256 key) whose key is split into N recovery shares; any M of them restore it.\n"
    "kmsctl backup create --help / inspect --help / restore --help for details.\n";

static const char create_usage[] =
    "Usage: kmsctl backup create --data-dir DIR --out FILE --shares N --threshold M\n"
    "                            (--share-dir DIR | --print-shares) [seal options]\n"
    "\n"
    "Writes the cluster identity of the keystore in DIR (root CA key, temp CA key, root k256\n"
    "key, domain, bootstrap info; not the node's RPC key or KEK) to FILE (0600), encrypted with\n"
    "AES-256-GCM under a fresh random key. That key is split into N recovery shares (Shamir,\n"
    "2 <= M <= N <= 16); any M restore the backup, fewer reveal nothing. FILE's clear header\n"
    "names the identity (k256 public key, root CA public key), the time and M-of-N.\n"
    "Safe while kmsd runs (the keystore is SQLite WAL). Appends a \"Backup\" audit row.\n"
    "  --share-dir DIR    write share-1.txt .. share-N.txt (0600) into DIR (created 0700);\n"
    "                     give each share to a different custodian and delete the copies\n"
    "  --print-shares     print the N share lines to stdout (the only way kmsctl prints\n"
    "                     secrets); the summary goes to stderr\n"
    "  --json             print {backup, bytes, share_set, threshold, shares, share_dir}\n"
    "                     (with --share-dir only: shares never go into JSON)\n" SEAL_USAGE
    "Refuses to overwrite FILE or an existing share file.\n";

static const char inspect_usage[] =
    "Usage: kmsctl backup inspect [--json] FILE\n"
    "\n"
    "Prints a backup's clear header without shares: format version, creation time, M-of-N,\n"
    "share set id, k256 public key and root CA public key (SPKI, and its SHA-256). The header\n"
    "is authenticated only when the backup is restored. --json prints the same fields as JSON.\n";

static const char restore_usage[] =
    "Usage: kmsctl backup restore --data-dir DIR --backup FILE [--share FILE]... [--domain NAME]\n"
    "                             [seal options]\n"
    "\n"
    "Decrypts FILE with M (or more) recovery shares and stores the identity, sealed, in a new\n"
    "keystore in DIR (refused when DIR already holds keys); origin \"restore FILE\". Start kmsd\n"
    "with --data-dir DIR afterwards: it generates a new RPC key and serves the same apps with\n"
    "the same keys. Shares come from --share files (one share line each, or several; '#'\n"
    "comment lines are ignored; --share - reads stdin), or, without --share, from stdin (one\n"
    "per line). A mistyped\n"
    "share is rejected by name; so is a share of another backup.\n"
    "  --domain NAME      replace the RPC certificate domain stored in the backup\n"
    "  --json             print {restored_from, data_dir, k256_pubkey}\n" SEAL_USAGE;

static int write_new(const char *path, const void *p, size_t n)
{
    if (kms_file_exists(path))
        return kms_err_set(KMS_ERR_EXISTS, "%s exists; refusing to overwrite it", path);
    return kms_file_write_atomic(path, p, n, 0600);
}

static int share_path(const char *dir, unsigned i, char *out, size_t cap)
{
    if (snprintf(out, cap, "%s/share-%u.txt", dir, i) >= (int)cap)
        return kms_err_set(KMS_ERR_INVAL, "share directory path is too long");
    return 0;
}

static int write_share_file(const char *path, const char *share, unsigned i,
                            const struct kms_backup_info *info, const char *backup)
{
    char set_hex[17];
    char pub_hex[67];
    char *text = NULL;
    int n;
    int rc;

    kms_hex_encode(info->set_id, sizeof(info->set_id), set_hex);
    kms_hex_encode(info->k256_pubkey, sizeof(info->k256_pubkey), pub_hex);
    n = asprintf(&text,
                 "# kmsd recovery share %u of %u; any %u of them restore the backup\n"
                 "# backup %s, share set %s, k256 public key 0x%s\n"
                 "# keep this file offline, apart from the other shares\n"
                 "%s\n",
                 i, info->shares, info->threshold, backup, set_hex, pub_hex, share);
    if (n < 0)
        return kms_err_set(KMS_ERR_NOMEM, "out of memory");
    rc = write_new(path, text, (size_t)n);
    kms_free_secret(text, (size_t)n);
    return rc;
}

static int cmd_create(int argc, char **argv)
{
    static const struct option opts[] = {{"data-dir", required_argument, NULL, 'd'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"shares", required_argument, NULL, 'n'},
                                         {"threshold", required_argument, NULL, 'm'},
                                         {"share-dir", required_argument, NULL, 's'},
                                         {"print-shares", no_argument, NULL, 'p'},
                                         {"json", no_argument, NULL, 'J'},
                                         {"help", no_argument, NULL, 'h'},
                                         SEAL_OPTIONS,
                                         {NULL, 0, NULL, 0}};
    const char *data_dir = NULL, *out = NULL, *share_dir = NULL;
    unsigned n = 0, m = 0;
    int print_shares = 0;
    struct kms_seal_cfg seal = {.provider = "file"};
    struct kms_store *st = NULL;
    struct kms_identity id;
    struct kms_backup_info info;
    char *shares[KMS_BACKUP_MAX_SHARES] = {NULL};
    uint8_t *file = NULL;
    size_t file_len = 0;
    unsigned written = 0;
    int wrote_backup = 0;
    char path[PATH_LEN];
    int c, rc = 0, as_json = 0;

    memset(&id, 0, sizeof(id));
    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        if (seal_opt(c, &seal))
            continue;
        switch (c) {
        case 'd':
            data_dir = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'n':
            if (parse_count(optarg, 255, &n) < 0) {
                fprintf(stderr, "kmsctl: --shares must be a number 2..%d\n", KMS_BACKUP_MAX_SHARES);
                return 2;
            }
            break;
        case 'm':
            if (parse_count(optarg, 255, &m) < 0) {
                fprintf(stderr, "kmsctl: --threshold must be a number 2..%d\n",
                        KMS_BACKUP_MAX_SHARES);
                return 2;
            }
            break;
        case 's':
            share_dir = optarg;
            break;
        case 'J':
            as_json = 1;
            break;
        case 'p':
            print_shares = 1;
            break;
        case 'h':
            fputs(create_usage, stdout);
            return 0;
        default:
            fputs(create_usage, stderr);
            return 2;
        }
    }
    if (data_dir == NULL || out == NULL || n == 0 || m == 0 || optind != argc) {
        fputs(create_usage, stderr);
        return 2;
    }
    if (as_json && print_shares) {
        fprintf(stderr, "kmsctl: --json with --print-shares would put the shares into a JSON "
                        "document: use --share-dir DIR\n");
        return 2;
    }
    if (share_dir == NULL && !print_shares) {
        fprintf(stderr, "kmsctl: say where the shares go: --share-dir DIR or --print-shares "
                        "(the shares are never written next to the backup by default)\n");
        return 2;
    }
    if (m < 2 || m > n || n > KMS_BACKUP_MAX_SHARES) {
        fprintf(stderr, "kmsctl: need 2 <= --threshold <= --shares <= %d (got %u of %u)\n",
                KMS_BACKUP_MAX_SHARES, m, n);
        return 2;
    }
    if (seal_check(&seal) < 0)
        return 2;
    if (kms_file_exists(out)) {
        fprintf(stderr, "kmsctl: %s exists; refusing to overwrite a backup\n", out);
        return 1;
    }
    if (share_dir != NULL) {
        for (unsigned i = 1; i <= n; i++) {
            if (share_path(share_dir, i, path, sizeof(path)) < 0)
                return fail("share directory");
            if (kms_file_exists(path)) {
                fprintf(stderr, "kmsctl: %s exists; refusing to overwrite a share\n", path);
                return 1;
            }
        }
    }
    KMS_GUARD(open_existing(data_dir, &seal, &st));
    KMS_GUARD(kms_store_load_identity(st, &id));
    KMS_GUARD(kms_backup_create(&id, m, n, &file, &file_len, shares, &info));
    kms_identity_clear(&id);
    KMS_GUARD(write_new(out, file, file_len));
    wrote_backup = 1;
    if (share_dir != NULL) {
        KMS_GUARD(kms_mkdir_p(share_dir, 0700));
        for (unsigned i = 1; i <= n; i++) {
            KMS_GUARD(share_path(share_dir, i, path, sizeof(path)));
            KMS_GUARD(write_share_file(path, shares[i - 1], i, &info, out));
            written = i;
        }
    }
    {
        char set_hex[17];
        char detail[PATH_LEN + 128];

        kms_hex_encode(info.set_id, sizeof(info.set_id), set_hex);
        snprintf(detail, sizeof(detail), "%.1024s share set %s (%u-of-%u)", out, set_hex, m, n);
        KMS_GUARD(kms_store_audit(st, "Backup", "created", detail));
    }
    if (print_shares) {
        for (unsigned i = 0; i < n; i++)
            printf("%s\n", shares[i]);
        fflush(stdout);
    }
    if (as_json) {
        char set_hex[17];
        json_t *o;

        kms_hex_encode(info.set_id, sizeof(info.set_id), set_hex);
        o = json_pack("{s:s,s:I,s:s,s:i,s:i,s:s?}", "backup", out, "bytes", (json_int_t)file_len,
                      "share_set", set_hex, "threshold", (int)m, "shares", (int)n, "share_dir",
                      share_dir);
        kms_cli_print_json(o);
        json_decref(o);
    } else {
        FILE *f = print_shares ? stderr : stdout;
        char set_hex[17];

        kms_hex_encode(info.set_id, sizeof(info.set_id), set_hex);
        fprintf(f, "wrote backup %s (%zu bytes, share set %s): any %u of %u shares restore it\n",
                out, file_len, set_hex, m, n);
        if (share_dir != NULL)
            fprintf(f,
                    "shares: %s/share-1.txt .. share-%u.txt (hand each to a different "
                    "custodian, then delete them here)\n",
                    share_dir, n);
    }
out:
    if (rc < 0) {
        /* no half-written backup set is left behind */
        if (wrote_backup)
            (void)unlink(out);
        for (unsigned i = 1; i <= written; i++)
            if (share_path(share_dir, i, path, sizeof(path)) == 0)
                (void)unlink(path);
    }
    kms_identity_clear(&id);
    kms_backup_shares_free(shares, KMS_BACKUP_MAX_SHARES);
    free(file);
    kms_store_close(st);
    return rc < 0 ? fail("backup create failed") : 0;
}

static int read_backup(const char *path, uint8_t **file, size_t *len)
{
    int rc = kms_file_read(path, KMS_BACKUP_FILE_MAX, file, len);

    if (rc < 0)
        return kms_err_wrap(rc, "cannot read backup %s", path);
    return 0;
}

static int cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'J'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    struct kms_backup_info info;
    int as_json = 0;
    uint8_t *file = NULL;
    size_t len = 0;
    uint8_t fp[32];
    unsigned int fplen = 0;
    char set_hex[17];
    char pub_hex[67];
    char fp_hex[65];
    char *spki_hex = NULL;
    int c, rc = 0;

    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'J':
            as_json = 1;
            break;
        case 'h':
            fputs(inspect_usage, stdout);
            return 0;
        default:
            fputs(inspect_usage, stderr);
            return 2;
        }
    }
    if (optind + 1 != argc) {
        fputs(inspect_usage, stderr);
        return 2;
    }
    KMS_GUARD(read_backup(argv[optind], &file, &len));
    KMS_GUARD(kms_backup_inspect(file, len, &info));
    KMS_GUARD_OSSL(EVP_Digest(info.ca_spki, info.ca_spki_len, fp, &fplen, EVP_sha256(), NULL),
                   "sha256");
    kms_hex_encode(info.set_id, sizeof(info.set_id), set_hex);
    kms_hex_encode(info.k256_pubkey, sizeof(info.k256_pubkey), pub_hex);
    kms_hex_encode(fp, sizeof(fp), fp_hex);
    spki_hex = kms_hex_dup(info.ca_spki, info.ca_spki_len, 1);
    KMS_GUARD_PTR(spki_hex);
    if (as_json) {
        json_t *o = json_pack(
            "{s:s,s:i,s:I,s:I,s:i,s:i,s:s,s:s+,s:s,s:s}", "backup", argv[optind], "format_version",
            (int)info.version, "bytes", (json_int_t)len, "created_at", (json_int_t)info.created_at,
            "threshold", (int)info.threshold, "shares", (int)info.shares, "share_set", set_hex,
            "k256_pubkey", "0x", pub_hex, "ca_spki", spki_hex, "ca_spki_sha256", fp_hex);

        kms_cli_print_json(o);
        json_decref(o);
        goto out;
    }
    printf("backup:              %s (format version %u, %zu bytes)\n", argv[optind], info.version,
           len);
    printf("created:             ");
    print_utc(stdout, (int64_t)info.created_at * 1000);
    printf(" (unix %llu)\n", (unsigned long long)info.created_at);
    printf("shares:              any %u of %u\n", info.threshold, info.shares);
    printf("share set:           %s\n", set_hex);
    printf("k256 pubkey:         0x%s\n", pub_hex);
    printf("root CA SPKI:        %s\n", spki_hex);
    printf("root CA SPKI sha256: %s\n", fp_hex);
out:
    free(spki_hex);
    free(file);
    return rc < 0 ? fail("backup inspect failed") : 0;
}

/* Share lines collected from files / stdin; every string is a secret. */
struct share_set {
    char *line[MAX_GIVEN_SHARES];
    char *label[MAX_GIVEN_SHARES];
    size_t n;
};

static void share_set_free(struct share_set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        kms_free_secret(s->line[i], strlen(s->line[i]));
        free(s->label[i]);
    }
    s->n = 0;
}

/* Adds every share line of text (blank and '#' lines skipped); labels are src, or "src line K"
 * when the text holds several shares. */
static int share_set_add_text(struct share_set *s, const char *text, const char *src)
{
    const char *p = text;
    size_t first = s->n;
    size_t lineno = 0;
    int rc = 0;

    while (*p != '\0') {
        const char *e = strchr(p, '\n');
        size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
        size_t b = 0;

        lineno++;
        while (b < len && (p[b] == ' ' || p[b] == '\t' || p[b] == '\r'))
            b++;
        if (b < len && p[b] != '#') {
            KMS_ENSURE(s->n < MAX_GIVEN_SHARES, KMS_ERR_TOOBIG, "more than %d shares given",
                       MAX_GIVEN_SHARES);
            s->line[s->n] = strndup(p, len);
            KMS_GUARD_PTR(s->line[s->n]);
            if (asprintf(&s->label[s->n], "%s line %zu", src, lineno) < 0) {
                kms_free_secret(s->line[s->n], len);
                rc = kms_err_set(KMS_ERR_NOMEM, "out of memory");
                goto out;
            }
            s->n++;
        }
        p += len;
        if (*p == '\n')
            p++;
    }
    KMS_ENSURE(s->n > first, KMS_ERR_BACKUP_SHARE, "%s holds no share line", src);
    if (s->n == first + 1) {
        free(s->label[first]);
        s->label[first] = strdup(src);
        KMS_GUARD_PTR(s->label[first]);
    }
out:
    return rc;
}

static int share_set_add_file(struct share_set *s, const char *path)
{
    uint8_t *text = NULL;
    size_t len = 0;
    int rc = 0;

    rc = kms_file_read(path, SHARE_FILE_MAX, &text, &len);
    if (rc < 0)
        return kms_err_wrap(rc, "cannot read share file %s", path);
    rc = share_set_add_text(s, (const char *)text, path);
    kms_free_secret(text, len + 1);
    return rc;
}

static int share_set_add_stdin(struct share_set *s)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    size_t r;
    int rc = 0;

    if (isatty(STDIN_FILENO))
        fprintf(stderr, "enter the recovery shares, one per line, then Ctrl-D:\n");
    buf = malloc(SHARE_FILE_MAX + 1);
    KMS_GUARD_PTR(buf);
    while (len < SHARE_FILE_MAX) {
        r = fread(buf + len, 1, SHARE_FILE_MAX - len, stdin);
        if (r == 0)
            break;
        len += r;
    }
    KMS_ENSURE(len < SHARE_FILE_MAX, KMS_ERR_TOOBIG, "stdin holds more than %u bytes",
               SHARE_FILE_MAX);
    buf[len] = '\0';
    KMS_GUARD(share_set_add_text(s, (const char *)buf, "stdin"));
out:
    kms_free_secret(buf, SHARE_FILE_MAX + 1);
    return rc;
}

static int cmd_restore(int argc, char **argv)
{
    static const struct option opts[] = {{"data-dir", required_argument, NULL, 'd'},
                                         {"backup", required_argument, NULL, 'b'},
                                         {"share", required_argument, NULL, 's'},
                                         {"domain", required_argument, NULL, 'n'},
                                         {"json", no_argument, NULL, 'J'},
                                         {"help", no_argument, NULL, 'h'},
                                         SEAL_OPTIONS,
                                         {NULL, 0, NULL, 0}};
    const char *data_dir = NULL, *backup = NULL, *domain = NULL;
    const char *share_files[MAX_GIVEN_SHARES];
    size_t nfiles = 0;
    struct kms_seal_cfg seal = {.provider = "file"};
    struct kms_store *st = NULL;
    struct kms_identity id;
    struct kms_backup_info info;
    struct share_set set;
    uint8_t *file = NULL;
    size_t len = 0;
    int c, rc = 0, as_json = 0;

    memset(&id, 0, sizeof(id));
    memset(&set, 0, sizeof(set));
    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        if (seal_opt(c, &seal))
            continue;
        switch (c) {
        case 'd':
            data_dir = optarg;
            break;
        case 'b':
            backup = optarg;
            break;
        case 'n':
            domain = optarg;
            break;
        case 's':
            if (nfiles == MAX_GIVEN_SHARES) {
                fprintf(stderr, "kmsctl: at most %d --share files\n", MAX_GIVEN_SHARES);
                return 2;
            }
            share_files[nfiles++] = optarg;
            break;
        case 'J':
            as_json = 1;
            break;
        case 'h':
            fputs(restore_usage, stdout);
            return 0;
        default:
            fputs(restore_usage, stderr);
            return 2;
        }
    }
    if (data_dir == NULL || backup == NULL || optind != argc) {
        fputs(restore_usage, stderr);
        return 2;
    }
    if (seal_check(&seal) < 0)
        return 2;
    KMS_GUARD(read_backup(backup, &file, &len));
    for (size_t i = 0; i < nfiles; i++) {
        if (strcmp(share_files[i], "-") == 0)
            KMS_GUARD(share_set_add_stdin(&set));
        else
            KMS_GUARD(share_set_add_file(&set, share_files[i]));
    }
    if (nfiles == 0)
        KMS_GUARD(share_set_add_stdin(&set));
    /* decrypt and check everything before touching DIR */
    KMS_GUARD(kms_backup_open(file, len, (const char *const *)set.line,
                              (const char *const *)set.label, set.n, &id, &info));
    share_set_free(&set);
    KMS_GUARD(kms_mkdir_p(data_dir, 0700));
    KMS_GUARD(kms_store_open(data_dir, &seal, &st));
    KMS_GUARD(kms_backup_restore_identity(st, &id, &info, backup, domain));
    {
        char pub_hex[67];

        kms_hex_encode(info.k256_pubkey, sizeof(info.k256_pubkey), pub_hex);
        if (as_json) {
            json_t *o = json_pack("{s:s,s:s,s:s+}", "restored_from", backup, "data_dir", data_dir,
                                  "k256_pubkey", "0x", pub_hex);

            kms_cli_print_json(o);
            json_decref(o);
            goto out;
        }
        printf("restored the cluster identity (k256 public key 0x%s) from %s into %s\n", pub_hex,
               backup, data_dir);
        printf("start kmsd with --data-dir %s; it generates a new RPC key on first start\n",
               data_dir);
    }
out:
    share_set_free(&set);
    kms_identity_clear(&id);
    free(file);
    kms_store_close(st);
    return rc < 0 ? fail("backup restore failed") : 0;
}

int kms_cli_backup(int argc, char **argv)
{
    static const struct kms_cli_sub subs[] = {
        {"create", cmd_create}, {"inspect", cmd_inspect}, {"restore", cmd_restore}};

    return kms_cli_subcommands("backup", backup_usage, subs, 3, argc, argv);
}

/* ---------------------------------------------------------------- audit */

static const char audit_usage[] =
    "Usage: kmsctl audit verify --data-dir DIR [--anchor COUNT:HASH] [seal options]\n"
    "       kmsctl audit show --data-dir DIR [--last N]\n"
    "\n"
    "The keystore's append-only, hash-chained audit log (every key release and refusal,\n"
    "bootstrap, onboarding, import, backup, restore).\n"
    "kmsctl audit verify --help / audit show --help for details.\n";

static const char verify_usage[] =
    "Usage: kmsctl audit verify --data-dir DIR [--anchor COUNT:HASH] [seal options]\n"
    "\n"
    "Recomputes the hash chain of the audit log in DIR's keystore and prints its head (row count\n"
    "and last hash). Record the head outside the node: the chain alone cannot show that rows\n"
    "were cut off the end. --anchor COUNT:HASH (a head printed earlier) also checks that row\n"
    "COUNT still has that hash, i.e. the log only grew since. Safe while kmsd runs.\n" SEAL_USAGE
    "--json prints {intact, rows, last_hash, anchor_checked} ({intact: false, rows_verified,\n"
    "error} when broken).\n"
    "Exit status: 0 intact; 1 broken (naming the first broken row) or anchor mismatch.\n";

static const char show_usage[] =
    "Usage: kmsctl audit show --data-dir DIR [--last N] [--json]\n"
    "\n"
    "Prints the audit log of DIR's keystore, one row per line: id, time (UTC), event, outcome,\n"
    "detail. --last N prints only the last N rows. Reads the database read-only and needs no\n"
    "KEK; it does not verify the chain (use audit verify). --json prints an array of\n"
    "{id, ts_ms, event, outcome, detail, hash}.\n";

struct anchor_find {
    int64_t id;
    uint8_t hash[32];
    int found;
};

static int anchor_cb(void *arg, const struct kms_audit_row *row)
{
    struct anchor_find *a = arg;

    if (row->id == a->id) {
        a->found = CRYPTO_memcmp(row->hash, a->hash, 32) == 0 ? 1 : -1;
    }
    return 0;
}

static int cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {{"data-dir", required_argument, NULL, 'd'},
                                         {"anchor", required_argument, NULL, 'a'},
                                         {"json", no_argument, NULL, 'J'},
                                         {"help", no_argument, NULL, 'h'},
                                         SEAL_OPTIONS,
                                         {NULL, 0, NULL, 0}};
    const char *data_dir = NULL, *anchor = NULL;
    struct kms_seal_cfg seal = {.provider = "file"};
    struct kms_store *st = NULL;
    struct anchor_find af;
    uint8_t head[32];
    char head_hex[65];
    size_t count = 0;
    int c, rc = 0, as_json = 0;

    memset(&af, 0, sizeof(af));
    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        if (seal_opt(c, &seal))
            continue;
        switch (c) {
        case 'd':
            data_dir = optarg;
            break;
        case 'a':
            anchor = optarg;
            break;
        case 'J':
            as_json = 1;
            break;
        case 'h':
            fputs(verify_usage, stdout);
            return 0;
        default:
            fputs(verify_usage, stderr);
            return 2;
        }
    }
    if (data_dir == NULL || optind != argc) {
        fputs(verify_usage, stderr);
        return 2;
    }
    if (seal_check(&seal) < 0)
        return 2;
    if (anchor != NULL) {
        const char *colon = strchr(anchor, ':');
        char *end = NULL;
        long long id;

        errno = 0;
        id = strtoll(anchor, &end, 10);
        if (colon == NULL || end != colon || errno != 0 || id < 1 ||
            kms_hex_decode_exact(colon + 1, af.hash, 32) < 0) {
            fprintf(stderr, "kmsctl: --anchor must be COUNT:HASH as printed by audit verify\n");
            return 2;
        }
        af.id = id;
    }
    KMS_GUARD(open_existing(data_dir, &seal, &st));
    rc = kms_store_audit_verify(st, &count);
    if (rc < 0) {
        fprintf(stderr, "kmsctl: audit log verification FAILED: %s\n", kms_err_detail());
        fprintf(stderr, "kmsctl: %zu row(s) verified before the break\n", count);
        if (as_json) {
            json_t *o = json_pack("{s:b,s:I,s:s}", "intact", 0, "rows_verified", (json_int_t)count,
                                  "error", kms_err_detail());

            kms_cli_print_json(o);
            json_decref(o);
        }
        kms_store_close(st);
        return 1;
    }
    KMS_GUARD(kms_store_audit_head(st, &count, head));
    kms_hex_encode(head, sizeof(head), head_hex);
    if (anchor != NULL) {
        KMS_GUARD(kms_store_audit_read(data_dir, 0, anchor_cb, &af));
        KMS_ENSURE(af.found == 1, KMS_ERR_VERIFY,
                   af.found == 0 ? "the anchored row %lld is gone: the log was cut off"
                                 : "row %lld no longer has the anchored hash: the log was "
                                   "rewritten",
                   (long long)af.id);
    }
    if (as_json) {
        json_t *o = json_pack("{s:b,s:I,s:s+,s:b}", "intact", 1, "rows", (json_int_t)count,
                              "last_hash", "0x", head_hex, "anchor_checked", anchor != NULL);

        kms_cli_print_json(o);
        json_decref(o);
        goto out;
    }
    printf("audit log intact: %zu rows\n", count);
    printf("head: %zu:0x%s\n", count, head_hex);
    if (anchor != NULL)
        printf("anchor %lld matches\n", (long long)af.id);
out:
    kms_store_close(st);
    if (rc < 0) {
        fprintf(stderr, "kmsctl: audit log verification FAILED: %s\n", kms_err_detail());
        return 1;
    }
    return 0;
}

static void print_clean(const char *s)
{
    /* the log is data from the network (app ids, reasons): no control characters to the tty */
    for (; *s != '\0'; s++)
        putchar(((unsigned char)*s < 0x20 || *s == 0x7f) ? '?' : *s);
}

/* s as a JSON string; bytes that are not printable ASCII become '?' when s is not UTF-8. */
static json_t *clean_json(const char *s)
{
    json_t *j = json_string(s);
    char *c;

    if (j != NULL)
        return j;
    c = strdup(s);
    if (c == NULL)
        return NULL;
    for (char *p = c; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    }
    j = json_string(c);
    free(c);
    return j;
}

/* --json: each row into the array arg; else printed. */
static int show_cb(void *arg, const struct kms_audit_row *row)
{
    if (arg != NULL) {
        char h[65];
        json_t *o = json_pack("{s:I,s:I,s:o,s:o,s:o}", "id", (json_int_t)row->id, "ts_ms",
                              (json_int_t)row->ts_ms, "event", clean_json(row->event), "outcome",
                              clean_json(row->outcome), "detail", clean_json(row->detail));

        kms_hex_encode(row->hash, 32, h);
        json_object_set_new(o, "hash", json_string(h));
        return json_array_append_new(arg, o) == 0 ? 0 : kms_err_set(KMS_ERR_NOMEM, "out of memory");
    }
    printf("%-6lld ", (long long)row->id);
    print_utc(stdout, row->ts_ms);
    putchar(' ');
    print_clean(row->event);
    putchar(' ');
    print_clean(row->outcome);
    putchar(' ');
    print_clean(row->detail);
    putchar('\n');
    return 0;
}

static int cmd_show(int argc, char **argv)
{
    static const struct option opts[] = {{"data-dir", required_argument, NULL, 'd'},
                                         {"last", required_argument, NULL, 'l'},
                                         {"json", no_argument, NULL, 'J'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *data_dir = NULL;
    unsigned last = 0;
    json_t *rows = NULL;
    int c, as_json = 0;

    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'd':
            data_dir = optarg;
            break;
        case 'l':
            if (parse_count(optarg, 1000000000u, &last) < 0 || last == 0) {
                fprintf(stderr, "kmsctl: --last must be a positive number\n");
                return 2;
            }
            break;
        case 'J':
            as_json = 1;
            break;
        case 'h':
            fputs(show_usage, stdout);
            return 0;
        default:
            fputs(show_usage, stderr);
            return 2;
        }
    }
    if (data_dir == NULL || optind != argc) {
        fputs(show_usage, stderr);
        return 2;
    }
    if (as_json) {
        rows = json_array();
        if (rows == NULL)
            return fail("out of memory");
    }
    if (kms_store_audit_read(data_dir, last, show_cb, rows) < 0) {
        json_decref(rows);
        return fail("audit show failed");
    }
    if (rows != NULL) {
        kms_cli_print_json(rows);
        json_decref(rows);
    }
    return 0;
}

int kms_cli_audit(int argc, char **argv)
{
    static const struct kms_cli_sub subs[] = {{"verify", cmd_verify}, {"show", cmd_show}};

    return kms_cli_subcommands("audit", audit_usage, subs, 2, argc, argv);
}
