/*
 * Disaster recovery unit tests (storage/backup.c): Shamir M-of-N over GF(2^8) exhaustively for
 * every M <= 5, N <= 8 and every subset of shares; fewer than M shares reveal nothing; the backup
 * header names the right keys (cross-checked with libsecp256k1 and OpenSSL); backup round trip;
 * every refusal with its precise error (too few shares, mistyped share named by its label,
 * share of another backup, conflicting shares, tampered file bytes, truncation, restore into a
 * store that holds keys); and the read-only audit reader.
 */
#include <ftw.h>
#include <secp256k1.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "common/file.h"
#include "storage/storage.h"
#include "storage_testutil.h"
#include "test.h"

/* ---- helpers ---- */

/* the identity backed up (its RPC key must NOT be in the backup) */
#define BOOT_INFO "{\"ca_pubkey\":\"0x01\",\"k256_pubkey\":\"0x02\"}"

static int contains(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return 1;
    return 0;
}

/* A base64 body line of a PEM (the second line), to search for it in the file. */
static void pem_line(const char *pem, char *out, size_t cap)
{
    const char *a = strchr(pem, '\n');
    const char *b = a != NULL ? strchr(a + 1, '\n') : NULL;
    size_t n = (a != NULL && b != NULL) ? (size_t)(b - a - 1) : 0;

    if (n >= cap)
        n = cap - 1;
    memcpy(out, a != NULL ? a + 1 : "", n);
    out[n] = '\0';
}

/* Builds a share line as storage.h documents it (checksum included) from chosen fields. */
static void share_line(unsigned m, unsigned n, unsigned idx, const uint8_t set[8],
                       const uint8_t y[32], char out[KMS_BACKUP_SHARE_TEXT_MAX + 1])
{
    const size_t cap = KMS_BACKUP_SHARE_TEXT_MAX + 1;
    uint8_t buf[13 + 3 + 8 + 32];
    uint8_t md[32];
    unsigned int mdlen = 0;
    size_t off;

    memcpy(buf, "kmsd-share-v1", 13);
    buf[13] = (uint8_t)m;
    buf[14] = (uint8_t)n;
    buf[15] = (uint8_t)idx;
    memcpy(buf + 16, set, 8);
    memcpy(buf + 24, y, 32);
    EVP_Digest(buf, sizeof(buf), md, &mdlen, EVP_sha256(), NULL);
    off = (size_t)snprintf(out, cap, "kmsd-share-v1:%u:%u:%u:", m, n, idx);
    for (int i = 0; i < 8; i++)
        off += (size_t)snprintf(out + off, cap - off, "%02x", set[i]);
    out[off++] = ':';
    for (int i = 0; i < 32; i++)
        off += (size_t)snprintf(out + off, cap - off, "%02x", y[i]);
    out[off++] = ':';
    for (int i = 0; i < 4; i++)
        off += (size_t)snprintf(out + off, cap - off, "%02x", md[i]);
}

/* ---- Shamir ---- */

/* Proves: for every 2 <= M <= 5, M <= N <= 8, every subset of at least M shares recovers the
 * secret, and every subset of M-1 shares interpolates to something else. */
static void test_shamir_exhaustive(void)
{
    uint8_t secret[32];
    uint8_t ys[KMS_BACKUP_MAX_SHARES * 32];
    uint8_t got[32];
    size_t ok_subsets = 0;
    size_t low_subsets = 0;
    int low_equal = 0;

    for (unsigned n = 2; n <= 8; n++) {
        for (unsigned m = 2; m <= n && m <= 5; m++) {
            RAND_bytes(secret, sizeof(secret));
            CHECK_OK(kms_shamir_split(secret, 32, m, n, ys));
            for (unsigned mask = 1; mask < (1u << n); mask++) {
                uint8_t xs[8];
                const uint8_t *yp[8];
                size_t k = 0;

                for (unsigned i = 0; i < n; i++) {
                    if (mask & (1u << i)) {
                        xs[k] = (uint8_t)(i + 1);
                        yp[k] = ys + (size_t)i * 32;
                        k++;
                    }
                }
                if (k < m - 1)
                    continue;
                CHECK_OK(kms_shamir_combine(xs, yp, k, 32, got));
                if (k >= m) {
                    CHECK(memcmp(got, secret, 32) == 0);
                    ok_subsets++;
                } else {
                    low_equal += memcmp(got, secret, 32) == 0;
                    low_subsets++;
                }
            }
        }
    }
    CHECK(low_equal == 0);
    printf("  shamir: %zu subsets >= M recovered the secret, %zu subsets of M-1 did not\n",
           ok_subsets, low_subsets);
    CHECK(ok_subsets > 1000 && low_subsets > 100);
}

/* Proves perfect secrecy for M-1 shares: together with one more point (x = M, v) for each of
 * the 256 values v, the same M-1 shares are consistent with every possible secret byte, each
 * exactly once (so M-1 shares say nothing about the secret). */
static void test_shamir_secrecy(void)
{
    for (unsigned m = 2; m <= 5; m++) {
        uint8_t secret[1] = {0xA5};
        uint8_t ys[KMS_BACKUP_MAX_SHARES];
        int seen[256] = {0};
        int distinct = 0;

        CHECK_OK(kms_shamir_split(secret, 1, m, m, ys));
        for (unsigned v = 0; v < 256; v++) {
            uint8_t xs[5];
            const uint8_t *yp[5];
            uint8_t extra = (uint8_t)v;
            uint8_t got = 0;

            for (unsigned i = 0; i + 1 < m; i++) {
                xs[i] = (uint8_t)(i + 1);
                yp[i] = ys + i;
            }
            xs[m - 1] = (uint8_t)m; /* the withheld share's position, any value */
            yp[m - 1] = &extra;
            CHECK_OK(kms_shamir_combine(xs, yp, m, 1, &got));
            if (!seen[got]++)
                distinct++;
        }
        CHECK(distinct == 256);
    }
}

/* Proves: bad thresholds and bad share indexes are refused with KMS_ERR_INVAL; N = 16 works. */
static void test_shamir_args(void)
{
    uint8_t s[32] = {1, 2, 3};
    uint8_t ys[KMS_BACKUP_MAX_SHARES * 32];
    uint8_t got[32];
    uint8_t xs[3] = {1, 1, 2};
    const uint8_t *yp[3] = {ys, ys + 32, ys + 64};

    CHECK_RC(kms_shamir_split(s, 32, 1, 3, ys), KMS_ERR_INVAL);
    CHECK_DETAIL("2 <= M <= N <= 16");
    CHECK_RC(kms_shamir_split(s, 32, 4, 3, ys), KMS_ERR_INVAL);
    CHECK_RC(kms_shamir_split(s, 32, 2, 17, ys), KMS_ERR_INVAL);
    CHECK_OK(kms_shamir_split(s, 32, 16, 16, ys));
    CHECK_RC(kms_shamir_combine(xs, yp, 3, 32, got), KMS_ERR_INVAL);
    CHECK_DETAIL("given twice");
    xs[1] = 0;
    CHECK_RC(kms_shamir_combine(xs, yp, 3, 32, got), KMS_ERR_INVAL);
    CHECK_DETAIL("index 0");
    {
        uint8_t x16[16];
        const uint8_t *y16[16];

        for (int i = 0; i < 16; i++) {
            x16[i] = (uint8_t)(16 - i); /* any order */
            y16[i] = ys + (size_t)(15 - i) * 32;
        }
        CHECK_OK(kms_shamir_combine(x16, y16, 16, 32, got));
        CHECK(memcmp(got, s, 32) == 0);
        CHECK_OK(kms_shamir_combine(x16, y16, 15, 32, got));
        CHECK(memcmp(got, s, 32) != 0);
    }
}

/* ---- backup create / open ---- */

struct fixture {
    struct kms_identity id;
    uint8_t *file;
    size_t len;
    char *shares[KMS_BACKUP_MAX_SHARES];
    struct kms_backup_info info;
};

static void fixture_make(struct fixture *f, unsigned m, unsigned n)
{
    memset(f, 0, sizeof(*f));
    st_make_identity(&f->id, "kms.backup.example", 1, BOOT_INFO);
    if (kms_backup_create(&f->id, m, n, &f->file, &f->len, f->shares, &f->info) < 0) {
        fprintf(stderr, "backup create failed: %s\n", kms_err_detail());
        exit(2);
    }
}

static void fixture_free(struct fixture *f)
{
    kms_identity_clear(&f->id);
    free(f->file);
    kms_backup_shares_free(f->shares, KMS_BACKUP_MAX_SHARES);
}

/* Proves: the clear header carries M, N, a recent time, the k256 public key (as libsecp256k1
 * computes it) and the root CA SPKI (as OpenSSL encodes it); inspect reads the same header; the
 * file holds none of the secrets in clear (root/temp CA PEM bodies, k256, RPC key); share lines
 * have the documented shape. */
static void test_backup_header(void)
{
    struct fixture f;
    struct kms_backup_info in;
    secp256k1_context *ctx = secp256k1_context_create(SECP256K1_CONTEXT_SIGN);
    secp256k1_pubkey pk;
    uint8_t pub[33];
    size_t publen = 33;
    BIO *b;
    EVP_PKEY *k;
    uint8_t *spki = NULL;
    int spki_len;
    char line[128];
    time_t now = time(NULL);

    fixture_make(&f, 3, 5);
    CHECK(f.info.threshold == 3 && f.info.shares == 5 && f.info.version == 1);
    CHECK(f.info.created_at + 60 >= (uint64_t)now && f.info.created_at <= (uint64_t)now + 60);
    CHECK(secp256k1_ec_pubkey_create(ctx, &pk, f.id.root_k256) == 1);
    CHECK(secp256k1_ec_pubkey_serialize(ctx, pub, &publen, &pk, SECP256K1_EC_COMPRESSED) == 1);
    CHECK(memcmp(pub, f.info.k256_pubkey, 33) == 0);
    b = BIO_new_mem_buf(f.id.root_ca_key_pem, -1);
    k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    spki_len = i2d_PUBKEY(k, &spki);
    CHECK(spki_len > 0 && (size_t)spki_len == f.info.ca_spki_len &&
          memcmp(spki, f.info.ca_spki, (size_t)spki_len) == 0);
    OPENSSL_free(spki);
    EVP_PKEY_free(k);
    BIO_free(b);
    secp256k1_context_destroy(ctx);

    CHECK_OK(kms_backup_inspect(f.file, f.len, &in));
    CHECK(memcmp(&in, &f.info, sizeof(in)) == 0);

    pem_line(f.id.root_ca_key_pem, line, sizeof(line));
    CHECK(strlen(line) > 20 && !contains(f.file, f.len, line, strlen(line)));
    pem_line(f.id.tmp_ca_key_pem, line, sizeof(line));
    CHECK(strlen(line) > 20 && !contains(f.file, f.len, line, strlen(line)));
    pem_line(f.id.rpc_key_pem, line, sizeof(line));
    CHECK(strlen(line) > 20 && !contains(f.file, f.len, line, strlen(line)));
    CHECK(!contains(f.file, f.len, f.id.root_k256, 32));
    CHECK(!contains(f.file, f.len, "kms.backup.example", 18));

    for (int i = 0; i < 5; i++) {
        char prefix[32];

        snprintf(prefix, sizeof(prefix), "kmsd-share-v1:3:5:%d:", i + 1);
        CHECK(f.shares[i] != NULL && strncmp(f.shares[i], prefix, strlen(prefix)) == 0);
        CHECK(f.shares[i] != NULL && strlen(f.shares[i]) == strlen(prefix) + 16 + 1 + 64 + 1 + 8);
    }
    CHECK(f.shares[5] == NULL);
    fixture_free(&f);
}

static int identity_matches(const struct kms_identity *a, const struct kms_identity *b)
{
    return st_str_eq(a->root_ca_key_pem, b->root_ca_key_pem) &&
           st_str_eq(a->tmp_ca_key_pem, b->tmp_ca_key_pem) &&
           memcmp(a->root_k256, b->root_k256, 32) == 0 && st_str_eq(a->domain, b->domain) &&
           st_str_eq(a->bootstrap_info_json, b->bootstrap_info_json);
}

/* Proves: every 3-subset and the 4- and 5-sets of a 3-of-5 backup's shares open it to the same
 * identity (keys, domain, bootstrap info); the RPC key is not restored; origin is left unset;
 * the order of shares does not matter; a share given twice counts once. */
static void test_backup_roundtrip(void)
{
    struct fixture f;
    int opened = 0;

    fixture_make(&f, 3, 5);
    for (unsigned mask = 0; mask < 32; mask++) {
        const char *sh[5];
        size_t k = 0;
        struct kms_identity out;

        if (__builtin_popcount(mask) < 3)
            continue;
        for (int i = 4; i >= 0; i--) /* reverse order on purpose */
            if (mask & (1u << i))
                sh[k++] = f.shares[i];
        CHECK_OK(kms_backup_open(f.file, f.len, sh, NULL, k, &out, NULL));
        CHECK(identity_matches(&out, &f.id));
        CHECK(out.rpc_key_pem == NULL && out.origin == NULL);
        opened += identity_matches(&out, &f.id);
        kms_identity_clear(&out);
    }
    CHECK(opened == 16); /* C(5,3) + C(5,4) + C(5,5) */
    {
        const char *sh[4] = {f.shares[0], f.shares[0], f.shares[3], f.shares[4]};
        struct kms_identity out;

        CHECK_OK(kms_backup_open(f.file, f.len, sh, NULL, 4, &out, NULL));
        CHECK(identity_matches(&out, &f.id));
        kms_identity_clear(&out);
    }
    /* a backup without bootstrap info (onboarded node) round-trips with NULL */
    {
        struct kms_identity id2 = f.id;
        uint8_t *file = NULL;
        size_t len = 0;
        char *sh[KMS_BACKUP_MAX_SHARES];
        struct kms_identity out;

        id2.bootstrap_info_json = NULL;
        CHECK_OK(kms_backup_create(&id2, 2, 2, &file, &len, sh, NULL));
        CHECK_OK(kms_backup_open(file, len, (const char *const *)sh, NULL, 2, &out, NULL));
        CHECK(out.bootstrap_info_json == NULL && st_str_eq(out.domain, f.id.domain));
        kms_identity_clear(&out);
        kms_backup_shares_free(sh, KMS_BACKUP_MAX_SHARES);
        free(file);
    }
    fixture_free(&f);
}

/* Proves: fewer than M distinct shares is KMS_ERR_BACKUP_THRESHOLD with the needed count in the
 * detail (also when the missing share is replaced by a duplicate); no identity is returned. */
static void test_backup_too_few(void)
{
    struct fixture f;
    struct kms_identity out;
    const char *two[2];
    const char *dup[3];

    fixture_make(&f, 3, 5);
    two[0] = f.shares[1];
    two[1] = f.shares[4];
    CHECK_RC(kms_backup_open(f.file, f.len, two, NULL, 2, &out, NULL), KMS_ERR_BACKUP_THRESHOLD);
    CHECK_DETAIL("needs 3 of its 5 shares");
    CHECK_DETAIL("2 distinct share(s) given");
    CHECK(out.root_ca_key_pem == NULL && out.domain == NULL);
    dup[0] = f.shares[1];
    dup[1] = f.shares[4];
    dup[2] = f.shares[1];
    CHECK_RC(kms_backup_open(f.file, f.len, dup, NULL, 3, &out, NULL), KMS_ERR_BACKUP_THRESHOLD);
    CHECK_RC(kms_backup_open(f.file, f.len, NULL, NULL, 0, &out, NULL), KMS_ERR_BACKUP_THRESHOLD);
    fixture_free(&f);
}

/* Proves: a share with any single character changed (in M, N, index, set id, value or checksum)
 * is refused with KMS_ERR_BACKUP_SHARE naming that share by its label, and the detail never
 * contains the share's secret value; malformed lines are refused the same way. */
static void test_share_typo(void)
{
    struct fixture f;
    struct kms_identity out;
    const char *labels[3] = {"share-1.txt", "share-2.txt", "share-5.txt"};
    char bad[KMS_BACKUP_SHARE_TEXT_MAX + 1];
    char value[65];
    size_t pre = strlen("kmsd-share-v1:");
    size_t positions = 0;
    size_t refused = 0;

    fixture_make(&f, 3, 5);
    memcpy(value, f.shares[1] + pre + 6 + 17, 64);
    value[64] = '\0';
    for (size_t pos = pre; pos < strlen(f.shares[1]); pos++) {
        const char *sh[3] = {f.shares[0], bad, f.shares[4]};
        char c = f.shares[1][pos];
        int rc;

        if (c == ':')
            continue;
        snprintf(bad, sizeof(bad), "%s", f.shares[1]);
        /* a plausible typo: another character of the same class */
        bad[pos] = (c >= '0' && c <= '9') ? (char)('0' + (c - '0' + 1) % 10)
                                          : (char)(c == 'f' ? 'a' : c + 1);
        positions++;
        rc = kms_backup_open(f.file, f.len, sh, labels, 3, &out, NULL);
        if (rc == KMS_ERR_BACKUP_SHARE && strstr(kms_err_detail(), "share-2.txt") != NULL &&
            strstr(kms_err_detail(), value) == NULL)
            refused++;
        else
            fprintf(stderr, "  typo at %zu: rc %d, detail %s\n", pos, rc, kms_err_detail());
    }
    CHECK(positions > 90 && refused == positions);

    /* a value typo says "checksum" and "mistyped" */
    snprintf(bad, sizeof(bad), "%s", f.shares[1]);
    bad[pre + 6 + 17 + 10] = bad[pre + 6 + 17 + 10] == '0' ? '1' : '0';
    CHECK_RC(kms_backup_share_parse(bad, "share-2.txt", &(struct kms_backup_share){0}),
             KMS_ERR_BACKUP_SHARE);
    CHECK_DETAIL("share share-2.txt (index 2) fails its checksum");
    CHECK_DETAIL("mistyped");

    CHECK_RC(kms_backup_share_parse("hello", "stdin line 4", &(struct kms_backup_share){0}),
             KMS_ERR_BACKUP_SHARE);
    CHECK_DETAIL("share stdin line 4 is not a kmsd recovery share");
    snprintf(bad, sizeof(bad), "%s", f.shares[1]);
    bad[strlen(bad) - 1] = '\0'; /* truncated checksum */
    CHECK_RC(kms_backup_share_parse(bad, "x", &(struct kms_backup_share){0}), KMS_ERR_BACKUP_SHARE);
    CHECK_DETAIL("checksum is not 8 hex digits");
    snprintf(bad, sizeof(bad), "%s", f.shares[1]);
    bad[pre + 6 + 17 + 3] = 'g'; /* not hex */
    CHECK_RC(kms_backup_share_parse(bad, "x", &(struct kms_backup_share){0}), KMS_ERR_BACKUP_SHARE);
    CHECK_DETAIL("share value is not 64 hex digits");
    /* surrounding whitespace and upper case hex are accepted */
    {
        char ok[KMS_BACKUP_SHARE_TEXT_MAX + 8];
        struct kms_backup_share s;

        snprintf(ok, sizeof(ok), "  %s \r\n", f.shares[2]);
        for (char *p = ok; *p; p++)
            if (*p >= 'a' && *p <= 'f' && p > ok + 2 + pre)
                *p = (char)(*p - 'a' + 'A');
        CHECK_OK(kms_backup_share_parse(ok, "x", &s));
        CHECK(s.threshold == 3 && s.shares == 5 && s.index == 3);
    }
    fixture_free(&f);
}

/* Proves: a share of another backup (same M-of-N) is refused with KMS_ERR_BACKUP_SET naming it
 * and both set ids; two different shares claiming the same index are refused the same way. */
static void test_share_other_backup(void)
{
    struct fixture a, b;
    struct kms_identity out;
    const char *labels[3] = {"a1", "b2", "a3"};
    const char *sh[3];
    char set_a[17], set_b[17];

    fixture_make(&a, 3, 5);
    fixture_make(&b, 3, 5);
    sh[0] = a.shares[0];
    sh[1] = b.shares[1];
    sh[2] = a.shares[2];
    memcpy(set_a, a.shares[0] + strlen("kmsd-share-v1:3:5:1:"), 16);
    set_a[16] = '\0';
    memcpy(set_b, b.shares[1] + strlen("kmsd-share-v1:3:5:2:"), 16);
    set_b[16] = '\0';
    CHECK_RC(kms_backup_open(a.file, a.len, sh, labels, 3, &out, NULL), KMS_ERR_BACKUP_SET);
    CHECK_DETAIL("share b2 belongs to another backup");
    CHECK_DETAIL(set_a);
    CHECK_DETAIL(set_b);
    CHECK(out.root_ca_key_pem == NULL);

    /* a's set id pasted into b's share: its checksum no longer matches */
    {
        char forged[KMS_BACKUP_SHARE_TEXT_MAX + 1];
        const char *sh2[3] = {a.shares[0], forged, a.shares[2]};
        const char *lab2[3] = {"a1", "forged", "a3"};

        snprintf(forged, sizeof(forged), "%s", b.shares[1]);
        memcpy(forged + strlen("kmsd-share-v1:3:5:2:"), set_a, 16);
        CHECK_RC(kms_backup_open(a.file, a.len, sh2, lab2, 3, &out, NULL), KMS_ERR_BACKUP_SHARE);
        CHECK_DETAIL("share forged (index 2) fails its checksum");
    }
    /* a well-formed share (valid checksum, a's set) with a wrong value: next to a's own share 2
     * it conflicts (KMS_ERR_BACKUP_SET); in its place the key is wrong (KMS_ERR_BACKUP_AUTH) */
    {
        char forged[KMS_BACKUP_SHARE_TEXT_MAX + 1];
        const char *sh2[4] = {a.shares[0], a.shares[1], forged, a.shares[2]};
        const char *lab2[4] = {"a1", "a2", "forged", "a3"};
        const char *sh3[3] = {a.shares[0], forged, a.shares[2]};
        uint8_t set[8];
        uint8_t y[32];

        for (int i = 0; i < 8; i++)
            sscanf(set_a + 2 * i, "%2hhx", &set[i]);
        RAND_bytes(y, sizeof(y));
        share_line(3, 5, 2, set, y, forged);
        CHECK_OK(kms_backup_share_parse(forged, "forged", &(struct kms_backup_share){0}));
        CHECK_RC(kms_backup_open(a.file, a.len, sh2, lab2, 4, &out, NULL), KMS_ERR_BACKUP_SET);
        CHECK_DETAIL("shares a2 and forged both claim index 2 but differ");
        CHECK_RC(kms_backup_open(a.file, a.len, sh3, NULL, 3, &out, NULL), KMS_ERR_BACKUP_AUTH);
        CHECK_DETAIL("failed authentication");
        CHECK(out.root_ca_key_pem == NULL);
    }
    /* a 2-of-5 share of another backup: refused as another backup, not mixed */
    {
        struct fixture c;
        const char *sh3[3] = {a.shares[0], a.shares[1], NULL};

        fixture_make(&c, 2, 5);
        sh3[2] = c.shares[0];
        CHECK_RC(kms_backup_open(a.file, a.len, sh3, NULL, 3, &out, NULL), KMS_ERR_BACKUP_SET);
        CHECK_DETAIL("belongs to another backup");
        fixture_free(&c);
    }
    fixture_free(&a);
    fixture_free(&b);
}

/* Proves: flipping any single byte of the backup file makes opening fail (never a wrong
 * identity); each ciphertext, tag, nonce, k256 or SPKI byte fails AES-GCM authentication with
 * KMS_ERR_BACKUP_AUTH; magic/version/length bytes are KMS_ERR_PARSE; truncation at every length
 * and trailing bytes are KMS_ERR_PARSE. */
static void test_backup_tampered(void)
{
    struct fixture f;
    struct kms_identity out;
    const char *sh[3];
    uint8_t *copy;
    size_t auth = 0;
    size_t refused = 0;
    /* offsets: magic 0..7, version 8..9, created 10..17, M 18, N 19, set 20..27, k256 28..60,
     * spki_len 61..62, spki 63.., nonce, ct_len, ct, tag */
    size_t spki_end;

    fixture_make(&f, 3, 5);
    sh[0] = f.shares[0];
    sh[1] = f.shares[2];
    sh[2] = f.shares[4];
    spki_end = 63 + f.info.ca_spki_len;
    copy = malloc(f.len + 1);
    for (size_t i = 0; i < f.len; i++) {
        int rc;

        memcpy(copy, f.file, f.len);
        copy[i] ^= 0x01;
        rc = kms_backup_open(copy, f.len, sh, NULL, 3, &out, NULL);
        refused += rc < 0;
        if (rc == 0)
            fprintf(stderr, "  flipped byte %zu was accepted\n", i);
        if ((i >= 10 && i < 18) || (i >= 28 && i < 61) || (i >= 63 && i < spki_end) ||
            (i >= spki_end && i < spki_end + 12) || i >= spki_end + 16) {
            if (rc == KMS_ERR_BACKUP_AUTH && strstr(kms_err_detail(), "modified") != NULL)
                auth++;
            else
                fprintf(stderr, "  byte %zu: rc %d (%s)\n", i, rc, kms_err_detail());
        }
        kms_identity_clear(&out);
    }
    CHECK(refused == f.len);
    CHECK(auth == 8 + 33 + f.info.ca_spki_len + 12 + (f.len - spki_end - 16));

    memcpy(copy, f.file, f.len);
    copy[0] ^= 1;
    CHECK_RC(kms_backup_open(copy, f.len, sh, NULL, 3, &out, NULL), KMS_ERR_PARSE);
    CHECK_DETAIL("not a kmsd backup file");
    memcpy(copy, f.file, f.len);
    copy[9] = 2;
    CHECK_RC(kms_backup_inspect(copy, f.len, &(struct kms_backup_info){0}), KMS_ERR_PARSE);
    CHECK_DETAIL("format version 2 is not supported");
    memcpy(copy, f.file, f.len);
    copy[18] = 6; /* M > N */
    CHECK_RC(kms_backup_inspect(copy, f.len, &(struct kms_backup_info){0}), KMS_ERR_PARSE);
    CHECK_DETAIL("invalid share threshold");
    memcpy(copy, f.file, f.len);
    copy[20] ^= 1; /* set id: the shares no longer belong */
    CHECK_RC(kms_backup_open(copy, f.len, sh, NULL, 3, &out, NULL), KMS_ERR_BACKUP_SET);
    CHECK_RC(kms_backup_inspect(f.file, f.len - 1, &(struct kms_backup_info){0}), KMS_ERR_PARSE);
    CHECK_DETAIL("truncated or has trailing bytes");
    memcpy(copy, f.file, f.len);
    copy[f.len] = 0;
    CHECK_RC(kms_backup_inspect(copy, f.len + 1, &(struct kms_backup_info){0}), KMS_ERR_PARSE);
    CHECK_DETAIL("truncated or has trailing bytes");
    {
        size_t parse_errors = 0;

        /* every truncation is a structural error, before any decryption */
        for (size_t cut = 0; cut < f.len; cut++)
            parse_errors +=
                kms_backup_inspect(f.file, cut, &(struct kms_backup_info){0}) == KMS_ERR_PARSE;
        CHECK(parse_errors == f.len);
    }
    free(copy);
    fixture_free(&f);
}

/* Proves: create refuses bad thresholds (KMS_ERR_INVAL), an identity without domain
 * (KMS_ERR_INVAL) and an invalid k256 key (KMS_ERR_PARSE), returning nothing. */
static void test_backup_create_checks(void)
{
    struct kms_identity id;
    uint8_t *file = (uint8_t *)1;
    size_t len = 7;
    char *sh[KMS_BACKUP_MAX_SHARES];
    char *domain;

    st_make_identity(&id, "kms.backup.example", 1, BOOT_INFO);
    CHECK_RC(kms_backup_create(&id, 1, 3, &file, &len, sh, NULL), KMS_ERR_INVAL);
    CHECK(file == NULL && len == 0 && sh[0] == NULL);
    CHECK_RC(kms_backup_create(&id, 3, 2, &file, &len, sh, NULL), KMS_ERR_INVAL);
    CHECK_RC(kms_backup_create(&id, 3, 17, &file, &len, sh, NULL), KMS_ERR_INVAL);
    domain = id.domain;
    id.domain = NULL;
    CHECK_RC(kms_backup_create(&id, 2, 3, &file, &len, sh, NULL), KMS_ERR_INVAL);
    CHECK_DETAIL("no domain");
    id.domain = domain;
    memset(id.root_k256, 0, 32);
    CHECK_RC(kms_backup_create(&id, 2, 3, &file, &len, sh, NULL), KMS_ERR_PARSE);
    CHECK_DETAIL("root k256 key is zero");
    CHECK(file == NULL);
    kms_identity_clear(&id);
}

/* ---- restore into a keystore ---- */

static int count_rows(void *arg, const struct kms_audit_row *row)
{
    size_t *n = arg;

    (void)row;
    (*n)++;
    return 0;
}

struct rows {
    int64_t ids[16];
    char events[16][32];
    char details[16][256];
    size_t n;
};

static int collect_rows(void *arg, const struct kms_audit_row *row)
{
    struct rows *r = arg;

    if (r->n < 16) {
        r->ids[r->n] = row->id;
        snprintf(r->events[r->n], sizeof(r->events[0]), "%s", row->event);
        snprintf(r->details[r->n], sizeof(r->details[0]), "%s", row->detail);
        r->n++;
    }
    return 0;
}

/* Proves: restore into a fresh keystore stores the identity (origin "restore <name>", no RPC
 * key, --domain override) and appends a verifying "Restore" audit row; a second restore, or a
 * restore into a store that already has other keys, is refused with KMS_ERR_STORE_EXISTS and
 * changes nothing; too few shares leave the fresh store without keys. */
static void test_restore_store(void)
{
    struct fixture f;
    char *dir = st_tmpdir_new("backup");
    char *dir2 = st_tmpdir_new("backup");
    char sub[600];
    struct kms_store *st = NULL;
    struct kms_identity got;
    const char *sh[3];
    struct rows rows;
    size_t n = 0;

    fixture_make(&f, 3, 5);
    sh[0] = f.shares[3];
    sh[1] = f.shares[1];
    sh[2] = f.shares[2];
    snprintf(sub, sizeof(sub), "%s/new", dir);
    CHECK_OK(kms_store_open(sub, NULL, &st));
    CHECK_RC(kms_backup_restore(st, f.file, f.len, "backup.bin", sh, NULL, 2, NULL),
             KMS_ERR_BACKUP_THRESHOLD);
    CHECK(kms_store_has_identity(st) == 0);
    CHECK_OK(kms_backup_restore(st, f.file, f.len, "backup.bin", sh, NULL, 3, NULL));
    CHECK_OK(kms_store_load_identity(st, &got));
    CHECK(identity_matches(&got, &f.id));
    CHECK(got.rpc_key_pem == NULL);
    CHECK(st_str_eq(got.origin, "restore backup.bin"));
    kms_identity_clear(&got);
    CHECK_OK(kms_store_audit_verify(st, &n));
    CHECK(n == 1);

    CHECK_RC(kms_backup_restore(st, f.file, f.len, "backup.bin", sh, NULL, 3, NULL),
             KMS_ERR_STORE_EXISTS);
    CHECK_DETAIL("already holds keys");
    kms_store_close(st);

    /* the read-only audit reader sees the restore row, with the share set and k256 key */
    memset(&rows, 0, sizeof(rows));
    CHECK_OK(kms_store_audit_read(sub, 0, collect_rows, &rows));
    CHECK(rows.n == 1 && rows.ids[0] == 1 && strcmp(rows.events[0], "Restore") == 0 &&
          strstr(rows.details[0], "backup.bin share set ") != NULL &&
          strstr(rows.details[0], "(3-of-5)") != NULL);

    /* a store holding other keys: refused, its keys unchanged */
    {
        struct kms_identity other;

        st_make_identity(&other, "kms.backup.example", 1, BOOT_INFO);
        CHECK_OK(kms_store_open(dir2, NULL, &st));
        CHECK_OK(kms_store_save_identity(st, &other));
        CHECK_RC(kms_backup_restore(st, f.file, f.len, "backup.bin", sh, NULL, 3, NULL),
                 KMS_ERR_STORE_EXISTS);
        CHECK_OK(kms_store_load_identity(st, &got));
        CHECK(identity_matches(&got, &other));
        kms_identity_clear(&got);
        kms_identity_clear(&other);
        kms_store_close(st);
        st = NULL;
    }
    /* domain override */
    {
        char sub2[600];

        snprintf(sub2, sizeof(sub2), "%s/new2", dir);
        CHECK_OK(kms_store_open(sub2, NULL, &st));
        CHECK_OK(kms_backup_restore(st, f.file, f.len, "b", sh, NULL, 3, "other.example"));
        CHECK_OK(kms_store_load_identity(st, &got));
        CHECK(st_str_eq(got.domain, "other.example"));
        kms_identity_clear(&got);
        kms_store_close(st);
        st = NULL;
    }
    fixture_free(&f);
    st_tmpdir_free(dir);
    st_tmpdir_free(dir2);
}

/* Proves: kms_store_audit_read returns all rows in order, or only the last N; it needs no KEK
 * (the KEK file is removed first); a missing database is KMS_ERR_NOTFOUND; a callback error
 * stops the walk and is returned. */
static void test_audit_read(void)
{
    char *dir = st_tmpdir_new("backup");
    char kek[600];
    struct kms_store *st = NULL;
    struct rows rows;
    size_t n = 0;

    CHECK_OK(kms_store_open(dir, NULL, &st));
    for (int i = 0; i < 7; i++) {
        char d[32];

        snprintf(d, sizeof(d), "row %d", i + 1);
        CHECK_OK(kms_store_audit(st, "GetAppKey", "released", d));
    }
    kms_store_close(st);
    snprintf(kek, sizeof(kek), "%s/kek.bin", dir);
    CHECK(unlink(kek) == 0);
    memset(&rows, 0, sizeof(rows));
    CHECK_OK(kms_store_audit_read(dir, 0, collect_rows, &rows));
    CHECK(rows.n == 7 && rows.ids[0] == 1 && rows.ids[6] == 7 &&
          strcmp(rows.details[6], "row 7") == 0);
    memset(&rows, 0, sizeof(rows));
    CHECK_OK(kms_store_audit_read(dir, 3, collect_rows, &rows));
    CHECK(rows.n == 3 && rows.ids[0] == 5 && rows.ids[2] == 7 &&
          strcmp(rows.details[0], "row 5") == 0);
    memset(&rows, 0, sizeof(rows));
    CHECK_OK(kms_store_audit_read(dir, 100, collect_rows, &rows));
    CHECK(rows.n == 7);
    CHECK_OK(kms_store_audit_read(dir, 0, count_rows, &n));
    CHECK(n == 7);
    {
        char missing[600];

        snprintf(missing, sizeof(missing), "%s/nothing", dir);
        CHECK_RC(kms_store_audit_read(missing, 0, count_rows, &n), KMS_ERR_NOTFOUND);
        CHECK_DETAIL("no keystore database");
    }
    st_tmpdir_free(dir);
}

int main(void)
{
    RUN(test_shamir_exhaustive);
    RUN(test_shamir_secrecy);
    RUN(test_shamir_args);
    RUN(test_backup_header);
    RUN(test_backup_roundtrip);
    RUN(test_backup_too_few);
    RUN(test_share_typo);
    RUN(test_share_other_backup);
    RUN(test_backup_tampered);
    RUN(test_backup_create_checks);
    RUN(test_restore_store);
    RUN(test_audit_read);
    TEST_MAIN_END();
}
