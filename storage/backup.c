/*
 * Disaster recovery (DESIGN.md §1): an AES-256-GCM encrypted backup of the cluster identity
 * whose key is split into M-of-N Shamir shares over GF(2^8), and a read-only view of the audit
 * log. Formats are described in storage.h. GF(2^8) arithmetic runs in constant time (shift and
 * mask loops, no tables indexed by secrets); share y values are hex coded without branches.
 */
#include "storage/storage.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "common/buf.h"
#include "common/file.h"
#include "common/hex.h"

#define MAGIC "KMSDBKP1"
#define MAGIC_LEN 8
#define FILE_VERSION 1
#define RECORD_VERSION 1
#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define SET_ID_LEN 8
#define PEM_MAX (16u * 1024u)
#define TEXT_MAX (256u * 1024u)
#define SHARE_PREFIX "kmsd-share-v1"
#define CHECKSUM_LEN 4
#define PATH_MAX_LEN 4096
#define ORIGIN_NAME_MAX 1024 /* restore audit detail: file name cut to this */

/* ---- GF(2^8), x^8 + x^4 + x^3 + x + 1, constant time ---- */

static uint8_t gf_mul(uint8_t a, uint8_t b)
{
    unsigned p = 0;
    unsigned aa = a;
    unsigned bb = b;

    for (int i = 0; i < 8; i++) {
        p ^= (0u - (bb & 1u)) & aa;
        aa = (aa << 1) ^ ((0u - (aa >> 7)) & 0x11bu);
        bb >>= 1;
    }
    return (uint8_t)p;
}

/* a^254 = a^-1 (0 for 0): a fixed sequence of multiplications. */
static uint8_t gf_inv(uint8_t a)
{
    uint8_t s = a;
    uint8_t r = 1;

    for (int i = 1; i < 8; i++) {
        s = gf_mul(s, s);
        r = gf_mul(r, s);
    }
    return r;
}

int kms_shamir_split(const uint8_t *secret, size_t len, unsigned m, unsigned n, uint8_t *ys)
{
    uint8_t *coef = NULL; /* (m-1)*len random coefficients, degree 1..m-1 */
    size_t clen = 0;
    int rc = 0;

    KMS_ENSURE(m >= 2 && n >= m && n <= KMS_BACKUP_MAX_SHARES, KMS_ERR_INVAL,
               "share threshold must satisfy 2 <= M <= N <= %d (got M=%u, N=%u)",
               KMS_BACKUP_MAX_SHARES, m, n);
    KMS_ENSURE(len > 0 && len <= 1024, KMS_ERR_INVAL, "secret to split must be 1..1024 bytes");
    clen = (size_t)(m - 1) * len;
    coef = malloc(clen);
    KMS_GUARD_PTR(coef);
    KMS_GUARD_OSSL(RAND_priv_bytes(coef, (int)clen), "shamir: random coefficients");
    for (unsigned i = 0; i < n; i++) {
        uint8_t x = (uint8_t)(i + 1);

        for (size_t b = 0; b < len; b++) {
            /* Horner: y = c[m-1]; y = y*x + c[k] down to c[0] = secret */
            uint8_t y = coef[(size_t)(m - 2) * len + b];

            for (unsigned k = m - 1; k-- > 0;)
                y = (uint8_t)(gf_mul(y, x) ^
                              (k == 0 ? secret[b] : coef[(size_t)(k - 1) * len + b]));
            ys[(size_t)i * len + b] = y;
        }
    }
out:
    kms_free_secret(coef, clen);
    if (rc < 0 && ys != NULL && m >= 2 && n >= m && n <= KMS_BACKUP_MAX_SHARES && len <= 1024)
        OPENSSL_cleanse(ys, (size_t)n * len);
    return rc;
}

int kms_shamir_combine(const uint8_t *xs, const uint8_t *const *ys, size_t k, size_t len,
                       uint8_t *secret)
{
    int rc = 0;

    KMS_ENSURE(k >= 1 && k <= 255, KMS_ERR_INVAL, "need 1..255 shares to combine, got %zu", k);
    for (size_t i = 0; i < k; i++) {
        KMS_ENSURE(xs[i] != 0, KMS_ERR_INVAL, "share index 0 is not valid");
        for (size_t j = 0; j < i; j++)
            KMS_ENSURE(xs[i] != xs[j], KMS_ERR_INVAL, "share index %u given twice", xs[i]);
    }
    memset(secret, 0, len);
    for (size_t i = 0; i < k; i++) {
        /* Lagrange basis at 0: prod_{j != i} x_j / (x_j - x_i); indexes are public */
        uint8_t num = 1;
        uint8_t den = 1;
        uint8_t l;

        for (size_t j = 0; j < k; j++) {
            if (j == i)
                continue;
            num = gf_mul(num, xs[j]);
            den = gf_mul(den, (uint8_t)(xs[j] ^ xs[i]));
        }
        l = gf_mul(num, gf_inv(den));
        for (size_t b = 0; b < len; b++)
            secret[b] ^= gf_mul(ys[i][b], l);
    }
out:
    return rc;
}

/* ---- constant-time hex for share values ---- */

static void ct_hex_encode(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < 2 * n; i++) {
        unsigned v = (i % 2 == 0) ? (unsigned)(p[i / 2] >> 4) : (unsigned)(p[i / 2] & 0xf);
        /* v < 10: '0' + v; else 'a' + v - 10 (= '0' + v + 39) */
        unsigned letter = ((9u - v) >> 8) & 1u;

        out[i] = (char)(48u + v + ((0u - letter) & 39u));
    }
    out[2 * n] = '\0';
}

/* Decodes exactly 2*n hex characters; returns 0, or -1 when any is not a hex digit (only that
 * aggregate is branched on). */
static int ct_hex_decode(const char *s, uint8_t *out, size_t n)
{
    unsigned bad = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;

        for (size_t h = 0; h < 2; h++) {
            int c = (unsigned char)s[2 * i + h];
            unsigned is_d = ((unsigned)(47 - c) & (unsigned)(c - 58)) >> 31;
            unsigned is_l = ((unsigned)(96 - c) & (unsigned)(c - 103)) >> 31;
            unsigned is_u = ((unsigned)(64 - c) & (unsigned)(c - 71)) >> 31;
            unsigned d = ((0u - is_d) & (unsigned)(c - 48)) | ((0u - is_l) & (unsigned)(c - 87)) |
                         ((0u - is_u) & (unsigned)(c - 55));

            bad |= (is_d | is_l | is_u) ^ 1u;
            v = (v << 4) | (d & 0xfu);
        }
        out[i] = (uint8_t)v;
    }
    return bad != 0 ? -1 : 0;
}

/* ---- shares ---- */

static int share_checksum(unsigned m, unsigned n, unsigned index, const uint8_t set_id[8],
                          const uint8_t y[32], uint8_t out[CHECKSUM_LEN])
{
    uint8_t buf[sizeof(SHARE_PREFIX) - 1 + 3 + SET_ID_LEN + KEY_LEN];
    uint8_t md[32];
    unsigned int mdlen = 0;
    size_t off = sizeof(SHARE_PREFIX) - 1;
    int rc = 0;

    memcpy(buf, SHARE_PREFIX, off);
    buf[off++] = (uint8_t)m;
    buf[off++] = (uint8_t)n;
    buf[off++] = (uint8_t)index;
    memcpy(buf + off, set_id, SET_ID_LEN);
    off += SET_ID_LEN;
    memcpy(buf + off, y, KEY_LEN);
    off += KEY_LEN;
    KMS_GUARD_OSSL(EVP_Digest(buf, off, md, &mdlen, EVP_sha256(), NULL), "share checksum");
    memcpy(out, md, CHECKSUM_LEN);
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    OPENSSL_cleanse(md, sizeof(md));
    return rc;
}

/* "kmsd-share-v1:M:N:I:SET:Y:CHK"; *out (caller frees with kms_free_secret) */
static int share_format(unsigned m, unsigned n, unsigned index, const uint8_t set_id[8],
                        const uint8_t y[32], char **out)
{
    char set_hex[2 * SET_ID_LEN + 1];
    char y_hex[2 * KEY_LEN + 1];
    uint8_t chk[CHECKSUM_LEN];
    char chk_hex[2 * CHECKSUM_LEN + 1];
    char *s = NULL;
    int len;
    int rc = 0;

    KMS_GUARD(share_checksum(m, n, index, set_id, y, chk));
    kms_hex_encode(set_id, SET_ID_LEN, set_hex);
    kms_hex_encode(chk, CHECKSUM_LEN, chk_hex);
    ct_hex_encode(y, KEY_LEN, y_hex);
    s = malloc(KMS_BACKUP_SHARE_TEXT_MAX + 1);
    KMS_GUARD_PTR(s);
    len = snprintf(s, KMS_BACKUP_SHARE_TEXT_MAX + 1, SHARE_PREFIX ":%u:%u:%u:%s:%s:%s", m, n, index,
                   set_hex, y_hex, chk_hex);
    KMS_ENSURE(len > 0 && len <= (int)KMS_BACKUP_SHARE_TEXT_MAX, KMS_ERR_INTERNAL,
               "share line too long");
    *out = s;
    s = NULL;
out:
    kms_free_secret(s, KMS_BACKUP_SHARE_TEXT_MAX + 1);
    OPENSSL_cleanse(y_hex, sizeof(y_hex));
    return rc;
}

void kms_backup_shares_free(char **shares, size_t n)
{
    if (shares == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        if (shares[i] != NULL) {
            kms_free_secret(shares[i], strlen(shares[i]));
            shares[i] = NULL;
        }
    }
}

/* Parses a decimal 1..max (no sign, no leading zeros) from s up to ':'; advances *s past it. */
static int parse_small(const char **s, unsigned max, unsigned *v)
{
    const char *p = *s;
    unsigned x = 0;
    size_t nd = 0;

    while (p[nd] >= '0' && p[nd] <= '9' && nd < 3) {
        x = x * 10 + (unsigned)(p[nd] - '0');
        nd++;
    }
    if (nd == 0 || p[nd] != ':' || (nd > 1 && p[0] == '0') || x < 1 || x > max)
        return -1;
    *v = x;
    *s = p + nd + 1;
    return 0;
}

/* Checks that s has exactly n characters before ':' (or before the end when last). */
static int field_len_is(const char *s, size_t n, int last)
{
    size_t i = 0;

    while (s[i] != '\0' && s[i] != ':')
        i++;
    return i == n && (last ? s[i] == '\0' : s[i] == ':') ? 0 : -1;
}

int kms_backup_share_parse(const char *text, const char *label, struct kms_backup_share *out)
{
    char line[KMS_BACKUP_SHARE_TEXT_MAX + 1];
    const char *p;
    size_t b;
    size_t e;
    uint8_t chk[CHECKSUM_LEN];
    uint8_t want[CHECKSUM_LEN];
    const char *name = label != NULL ? label : "given";
    int rc = 0;

    memset(out, 0, sizeof(*out));
    memset(line, 0, sizeof(line));
    KMS_ENSURE(text != NULL, KMS_ERR_INVAL, "share %s is missing", name);
    b = 0;
    while (text[b] == ' ' || text[b] == '\t' || text[b] == '\r' || text[b] == '\n')
        b++;
    e = strnlen(text + b, KMS_BACKUP_SHARE_TEXT_MAX + 64) + b;
    while (e > b && (text[e - 1] == ' ' || text[e - 1] == '\t' || text[e - 1] == '\r' ||
                     text[e - 1] == '\n'))
        e--;
    KMS_ENSURE(e - b <= KMS_BACKUP_SHARE_TEXT_MAX, KMS_ERR_BACKUP_SHARE,
               "share %s is too long to be a kmsd recovery share", name);
    memcpy(line, text + b, e - b);
    line[e - b] = '\0';
    p = line;
    KMS_ENSURE(strncmp(p, SHARE_PREFIX ":", sizeof(SHARE_PREFIX)) == 0, KMS_ERR_BACKUP_SHARE,
               "share %s is not a kmsd recovery share (expected " SHARE_PREFIX
               ":M:N:INDEX:SET:VALUE:CHECKSUM)",
               name);
    p += sizeof(SHARE_PREFIX);
    KMS_ENSURE(parse_small(&p, KMS_BACKUP_MAX_SHARES, &out->threshold) == 0 &&
                   parse_small(&p, KMS_BACKUP_MAX_SHARES, &out->shares) == 0 &&
                   parse_small(&p, KMS_BACKUP_MAX_SHARES, &out->index) == 0,
               KMS_ERR_BACKUP_SHARE,
               "share %s: M, N or index is not a number 1..%d; the share was mistyped", name,
               KMS_BACKUP_MAX_SHARES);
    KMS_ENSURE(field_len_is(p, 2 * SET_ID_LEN, 0) == 0, KMS_ERR_BACKUP_SHARE,
               "share %s: the share set id is not %d hex digits", name, 2 * SET_ID_LEN);
    {
        char set_hex[2 * SET_ID_LEN + 1];

        memcpy(set_hex, p, 2 * SET_ID_LEN);
        set_hex[2 * SET_ID_LEN] = '\0';
        rc = kms_hex_decode_exact(set_hex, out->set_id, SET_ID_LEN);
        if (rc < 0) {
            rc = kms_err_set(KMS_ERR_BACKUP_SHARE,
                             "share %s: the share set id is not hex; the share was mistyped", name);
            goto out;
        }
    }
    p += 2 * SET_ID_LEN + 1;
    KMS_ENSURE(field_len_is(p, 2 * KEY_LEN, 0) == 0 && ct_hex_decode(p, out->y, KEY_LEN) == 0,
               KMS_ERR_BACKUP_SHARE,
               "share %s: the share value is not %d hex digits; the share was mistyped", name,
               2 * KEY_LEN);
    p += 2 * KEY_LEN + 1;
    KMS_ENSURE(field_len_is(p, 2 * CHECKSUM_LEN, 1) == 0 &&
                   kms_hex_decode_exact(p, want, CHECKSUM_LEN) == 0,
               KMS_ERR_BACKUP_SHARE, "share %s: the checksum is not %d hex digits", name,
               2 * CHECKSUM_LEN);
    KMS_GUARD(share_checksum(out->threshold, out->shares, out->index, out->set_id, out->y, chk));
    KMS_ENSURE(CRYPTO_memcmp(chk, want, CHECKSUM_LEN) == 0, KMS_ERR_BACKUP_SHARE,
               "share %s (index %u) fails its checksum: it was mistyped or damaged; enter it "
               "again from the original",
               name, out->index);
    KMS_ENSURE(out->threshold >= 2 && out->threshold <= out->shares && out->index <= out->shares,
               KMS_ERR_BACKUP_SHARE, "share %s: inconsistent M=%u, N=%u, index=%u", name,
               out->threshold, out->shares, out->index);
out:
    OPENSSL_cleanse(line, sizeof(line));
    if (rc < 0)
        OPENSSL_cleanse(out->y, sizeof(out->y));
    return rc;
}

/* ---- public identity values for the header ---- */

static int k256_pubkey(const uint8_t sk[32], uint8_t pub[33])
{
    EC_GROUP *g = NULL;
    EC_POINT *pt = NULL;
    BIGNUM *d = NULL;
    BN_CTX *ctx = NULL;
    int rc = 0;

    g = EC_GROUP_new_by_curve_name(NID_secp256k1);
    d = BN_secure_new();
    ctx = BN_CTX_secure_new();
    KMS_GUARD_PTR(g);
    KMS_GUARD_PTR(d);
    KMS_GUARD_PTR(ctx);
    pt = EC_POINT_new(g);
    KMS_GUARD_PTR(pt);
    BN_set_flags(d, BN_FLG_CONSTTIME);
    KMS_ENSURE(BN_bin2bn(sk, 32, d) != NULL, KMS_ERR_CRYPTO, "k256: load secret");
    KMS_GUARD_OSSL(EC_POINT_mul(g, pt, d, NULL, NULL, ctx), "k256: public key");
    KMS_ENSURE(EC_POINT_point2oct(g, pt, POINT_CONVERSION_COMPRESSED, pub, 33, ctx) == 33,
               KMS_ERR_CRYPTO, "k256: encode public key");
out:
    BN_clear_free(d);
    EC_POINT_free(pt);
    EC_GROUP_free(g);
    BN_CTX_free(ctx);
    return rc;
}

static int pem_spki(const char *pem, uint8_t *spki, size_t cap, size_t *len)
{
    BIO *b = NULL;
    EVP_PKEY *k = NULL;
    uint8_t *der = NULL;
    int n;
    int rc = 0;

    b = BIO_new_mem_buf(pem, -1);
    KMS_GUARD_PTR(b);
    k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    KMS_ENSURE(k != NULL, KMS_ERR_PARSE, "root CA key is not a PEM private key");
    n = i2d_PUBKEY(k, &der);
    KMS_ENSURE(n > 0 && (size_t)n <= cap, KMS_ERR_CRYPTO, "cannot encode the root CA public key");
    memcpy(spki, der, (size_t)n);
    *len = (size_t)n;
out:
    OPENSSL_free(der);
    EVP_PKEY_free(k);
    BIO_free(b);
    return rc;
}

/* ---- file encoding ---- */

static int header_write(struct kms_buf *b, const struct kms_backup_info *info,
                        const uint8_t nonce[NONCE_LEN], size_t ct_len)
{
    int rc = 0;

    KMS_GUARD(kms_buf_put(b, MAGIC, MAGIC_LEN));
    KMS_GUARD(kms_buf_put_u16be(b, FILE_VERSION));
    KMS_GUARD(kms_buf_put_u64be(b, info->created_at));
    KMS_GUARD(kms_buf_put_u8(b, (uint8_t)info->threshold));
    KMS_GUARD(kms_buf_put_u8(b, (uint8_t)info->shares));
    KMS_GUARD(kms_buf_put(b, info->set_id, SET_ID_LEN));
    KMS_GUARD(kms_buf_put(b, info->k256_pubkey, 33));
    KMS_GUARD(kms_buf_put_u16be(b, (uint16_t)info->ca_spki_len));
    KMS_GUARD(kms_buf_put(b, info->ca_spki, info->ca_spki_len));
    KMS_GUARD(kms_buf_put(b, nonce, NONCE_LEN));
    KMS_ENSURE(ct_len <= UINT32_MAX, KMS_ERR_TOOBIG, "backup record too large");
    KMS_GUARD(kms_buf_put_u32be(b, (uint32_t)ct_len));
out:
    return rc;
}

/* Parsed layout of a backup file; pointers borrow the file. */
struct parsed {
    struct kms_backup_info info;
    size_t aad_len; /* header bytes, magic through ct_len */
    const uint8_t *nonce;
    const uint8_t *ct;
    size_t ct_len;
    const uint8_t *tag;
};

static int file_parse(const uint8_t *file, size_t len, struct parsed *p)
{
    struct kms_reader r;
    const uint8_t *magic = NULL;
    uint16_t ver = 0;
    uint16_t spki_len = 0;
    uint32_t ct_len = 0;
    uint8_t m = 0;
    uint8_t n = 0;
    int rc = 0;

    memset(p, 0, sizeof(*p));
    KMS_ENSURE(file != NULL, KMS_ERR_INVAL, "no backup file given");
    KMS_ENSURE(len <= KMS_BACKUP_FILE_MAX, KMS_ERR_TOOBIG, "backup file is larger than %u bytes",
               KMS_BACKUP_FILE_MAX);
    kms_rd_init(&r, file, len);
    rc = kms_rd_ptr(&r, MAGIC_LEN, &magic);
    KMS_ENSURE(rc == 0 && memcmp(magic, MAGIC, MAGIC_LEN) == 0, KMS_ERR_PARSE,
               "not a kmsd backup file (bad magic)");
    KMS_ENSURE(kms_rd_u16be(&r, &ver) == 0, KMS_ERR_PARSE, "backup file is truncated");
    KMS_ENSURE(ver == FILE_VERSION, KMS_ERR_PARSE,
               "backup file format version %u is not supported (this kmsd reads version %d)", ver,
               FILE_VERSION);
    p->info.version = ver;
    KMS_ENSURE(kms_rd_u64be(&r, &p->info.created_at) == 0 && kms_rd_u8(&r, &m) == 0 &&
                   kms_rd_u8(&r, &n) == 0 && kms_rd_copy(&r, p->info.set_id, SET_ID_LEN) == 0 &&
                   kms_rd_copy(&r, p->info.k256_pubkey, 33) == 0 &&
                   kms_rd_u16be(&r, &spki_len) == 0,
               KMS_ERR_PARSE, "backup file header is truncated");
    KMS_ENSURE(m >= 2 && n >= m && n <= KMS_BACKUP_MAX_SHARES, KMS_ERR_PARSE,
               "backup file header has an invalid share threshold (M=%u, N=%u)", m, n);
    p->info.threshold = m;
    p->info.shares = n;
    KMS_ENSURE(spki_len > 0 && spki_len <= KMS_BACKUP_SPKI_MAX, KMS_ERR_PARSE,
               "backup file header has an invalid root CA key length %u", spki_len);
    KMS_ENSURE(kms_rd_copy(&r, p->info.ca_spki, spki_len) == 0 &&
                   kms_rd_ptr(&r, NONCE_LEN, &p->nonce) == 0 && kms_rd_u32be(&r, &ct_len) == 0,
               KMS_ERR_PARSE, "backup file header is truncated");
    p->info.ca_spki_len = spki_len;
    p->aad_len = r.off;
    KMS_ENSURE(ct_len > 0 && kms_rd_left(&r) >= TAG_LEN && kms_rd_left(&r) - TAG_LEN == ct_len,
               KMS_ERR_PARSE,
               "backup file is truncated or has trailing bytes (record length %u, %zu bytes "
               "follow)",
               ct_len, kms_rd_left(&r));
    KMS_GUARD(kms_rd_ptr(&r, ct_len, &p->ct));
    KMS_GUARD(kms_rd_ptr(&r, TAG_LEN, &p->tag));
    p->ct_len = ct_len;
out:
    return rc;
}

int kms_backup_inspect(const uint8_t *file, size_t len, struct kms_backup_info *info)
{
    struct parsed p;
    int rc = 0;

    KMS_GUARD(file_parse(file, len, &p));
    *info = p.info;
out:
    return rc;
}

static int put_str32(struct kms_buf *b, const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    int rc = 0;

    KMS_ENSURE(n <= TEXT_MAX, KMS_ERR_TOOBIG, "identity field too large for a backup");
    KMS_GUARD(kms_buf_put_u32be(b, (uint32_t)n));
    KMS_GUARD(kms_buf_put(b, s, n));
out:
    return rc;
}

/* Reads a u32-length-prefixed string (1..max bytes, no NUL; 0 allowed when may_be_empty, then
 * *out stays NULL). *out caller-frees (wipe). */
static int get_str32(struct kms_reader *r, size_t max, int may_be_empty, const char *what,
                     char **out)
{
    const uint8_t *ptr = NULL;
    uint32_t n = 0;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(kms_rd_u32be(r, &n) == 0, KMS_ERR_PARSE, "backup record is truncated at %s", what);
    KMS_ENSURE(n <= max, KMS_ERR_PARSE, "backup record: %s is longer than %zu bytes", what, max);
    if (n == 0) {
        KMS_ENSURE(may_be_empty, KMS_ERR_PARSE, "backup record: %s is empty", what);
        goto out;
    }
    KMS_ENSURE(kms_rd_ptr(r, n, &ptr) == 0, KMS_ERR_PARSE, "backup record is truncated at %s",
               what);
    KMS_ENSURE(memchr(ptr, 0, n) == NULL, KMS_ERR_PARSE, "backup record: %s contains a NUL byte",
               what);
    *out = malloc((size_t)n + 1);
    KMS_GUARD_PTR(*out);
    memcpy(*out, ptr, n);
    (*out)[n] = '\0';
out:
    return rc;
}

static int record_encode(const struct kms_identity *id, struct kms_buf *b)
{
    int rc = 0;

    KMS_GUARD(kms_buf_put_u8(b, RECORD_VERSION));
    KMS_GUARD(put_str32(b, id->root_ca_key_pem));
    KMS_GUARD(put_str32(b, id->tmp_ca_key_pem));
    KMS_GUARD(kms_buf_put(b, id->root_k256, 32));
    KMS_GUARD(put_str32(b, id->domain));
    KMS_GUARD(put_str32(b, id->bootstrap_info_json));
out:
    return rc;
}

static int record_decode(const uint8_t *p, size_t len, struct kms_identity *out)
{
    struct kms_reader r;
    uint8_t ver = 0;
    int rc = 0;

    kms_rd_init(&r, p, len);
    KMS_ENSURE(kms_rd_u8(&r, &ver) == 0 && ver == RECORD_VERSION, KMS_ERR_PARSE,
               "backup record version %u is not supported", ver);
    KMS_GUARD(get_str32(&r, PEM_MAX, 0, "root CA key", &out->root_ca_key_pem));
    KMS_GUARD(get_str32(&r, PEM_MAX, 0, "temp CA key", &out->tmp_ca_key_pem));
    KMS_ENSURE(kms_rd_copy(&r, out->root_k256, 32) == 0, KMS_ERR_PARSE,
               "backup record is truncated at the root k256 key");
    KMS_GUARD(get_str32(&r, TEXT_MAX, 0, "domain", &out->domain));
    KMS_GUARD(get_str32(&r, TEXT_MAX, 1, "bootstrap info", &out->bootstrap_info_json));
    KMS_ENSURE(kms_rd_left(&r) == 0, KMS_ERR_PARSE, "backup record has %zu trailing bytes",
               kms_rd_left(&r));
out:
    return rc;
}

static int identity_check(const struct kms_identity *id)
{
    int rc = 0;

    KMS_ENSURE(id != NULL && id->root_ca_key_pem != NULL && id->tmp_ca_key_pem != NULL,
               KMS_ERR_INVAL, "identity has no root keys to back up");
    KMS_ENSURE(id->domain != NULL && id->domain[0] != '\0', KMS_ERR_INVAL,
               "identity has no domain");
    KMS_GUARD(kms_store_check_p256_pem(id->root_ca_key_pem, "root CA key"));
    KMS_GUARD(kms_store_check_p256_pem(id->tmp_ca_key_pem, "temp CA key"));
    KMS_GUARD(kms_store_check_k256(id->root_k256, "root k256 key"));
out:
    return rc;
}

int kms_backup_create(const struct kms_identity *id, unsigned m, unsigned n, uint8_t **file,
                      size_t *file_len, char *shares[KMS_BACKUP_MAX_SHARES],
                      struct kms_backup_info *info_out)
{
    struct kms_backup_info info;
    struct kms_buf plain = {0};
    struct kms_buf out = {0};
    EVP_CIPHER_CTX *c = NULL;
    uint8_t key[KEY_LEN];
    uint8_t ys[KMS_BACKUP_MAX_SHARES * KEY_LEN];
    uint8_t nonce[NONCE_LEN];
    uint8_t *ct = NULL;
    int l = 0;
    int rc = 0;

    *file = NULL;
    *file_len = 0;
    for (unsigned i = 0; i < KMS_BACKUP_MAX_SHARES; i++)
        shares[i] = NULL;
    memset(&info, 0, sizeof(info));
    KMS_ENSURE(m >= 2 && n >= m && n <= KMS_BACKUP_MAX_SHARES, KMS_ERR_INVAL,
               "share threshold must satisfy 2 <= M <= N <= %d (got M=%u, N=%u)",
               KMS_BACKUP_MAX_SHARES, m, n);
    KMS_GUARD(identity_check(id));
    info.version = FILE_VERSION;
    info.created_at = (uint64_t)time(NULL);
    info.threshold = m;
    info.shares = n;
    KMS_GUARD(k256_pubkey(id->root_k256, info.k256_pubkey));
    KMS_GUARD(pem_spki(id->root_ca_key_pem, info.ca_spki, sizeof(info.ca_spki), &info.ca_spki_len));
    KMS_GUARD_OSSL(RAND_bytes(info.set_id, SET_ID_LEN), "backup: share set id");
    KMS_GUARD_OSSL(RAND_bytes(nonce, NONCE_LEN), "backup: nonce");
    KMS_GUARD_OSSL(RAND_priv_bytes(key, KEY_LEN), "backup: key");

    KMS_GUARD(record_encode(id, &plain));
    KMS_ENSURE(plain.len < KMS_BACKUP_FILE_MAX / 2, KMS_ERR_TOOBIG,
               "identity too large for a backup");
    KMS_GUARD(header_write(&out, &info, nonce, plain.len));
    ct = malloc(plain.len + TAG_LEN);
    KMS_GUARD_PTR(ct);
    c = EVP_CIPHER_CTX_new();
    KMS_GUARD_PTR(c);
    KMS_GUARD_OSSL(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce), "backup: init");
    KMS_GUARD_OSSL(EVP_EncryptUpdate(c, NULL, &l, out.data, (int)out.len), "backup: aad");
    KMS_GUARD_OSSL(EVP_EncryptUpdate(c, ct, &l, plain.data, (int)plain.len), "backup: encrypt");
    KMS_GUARD_OSSL(EVP_EncryptFinal_ex(c, ct + plain.len, &l), "backup: final");
    KMS_GUARD_OSSL(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, ct + plain.len),
                   "backup: tag");
    KMS_GUARD(kms_buf_put(&out, ct, plain.len + TAG_LEN));

    KMS_GUARD(kms_shamir_split(key, KEY_LEN, m, n, ys));
    for (unsigned i = 0; i < n; i++)
        KMS_GUARD(share_format(m, n, i + 1, info.set_id, ys + (size_t)i * KEY_LEN, &shares[i]));
    if (info_out != NULL)
        *info_out = info;
    *file = kms_buf_steal(&out, file_len);
out:
    EVP_CIPHER_CTX_free(c);
    free(ct);
    kms_buf_free(&plain);
    kms_buf_free(&out);
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(ys, sizeof(ys));
    if (rc < 0)
        kms_backup_shares_free(shares, KMS_BACKUP_MAX_SHARES);
    return rc;
}

/* Parses shares, checks they belong to this backup, keeps the first M distinct, combines. */
static int shares_combine(const struct kms_backup_info *info, const char *const *shares,
                          const char *const *labels, size_t nshares, uint8_t key[KEY_LEN])
{
    struct kms_backup_share *sh = NULL;
    const char *used_label[KMS_BACKUP_MAX_SHARES];
    uint8_t xs[KMS_BACKUP_MAX_SHARES];
    const uint8_t *ys[KMS_BACKUP_MAX_SHARES];
    char set_hex[2 * SET_ID_LEN + 1];
    char got_hex[2 * SET_ID_LEN + 1];
    char label_buf[32];
    size_t k = 0;
    int rc = 0;

    kms_hex_encode(info->set_id, SET_ID_LEN, set_hex);
    KMS_ENSURE(nshares <= 4 * KMS_BACKUP_MAX_SHARES, KMS_ERR_INVAL, "too many shares given (%zu)",
               nshares);
    sh = calloc(nshares > 0 ? nshares : 1, sizeof(*sh));
    KMS_GUARD_PTR(sh);
    for (size_t i = 0; i < nshares; i++) {
        const char *label = labels != NULL && labels[i] != NULL ? labels[i] : NULL;
        size_t dup = k;

        if (label == NULL) {
            snprintf(label_buf, sizeof(label_buf), "#%zu", i + 1);
            label = label_buf;
        }
        KMS_GUARD(kms_backup_share_parse(shares[i], label, &sh[i]));
        kms_hex_encode(sh[i].set_id, SET_ID_LEN, got_hex);
        KMS_ENSURE(memcmp(sh[i].set_id, info->set_id, SET_ID_LEN) == 0, KMS_ERR_BACKUP_SET,
                   "share %s belongs to another backup (share set %s; this backup's set is %s)",
                   label, got_hex, set_hex);
        KMS_ENSURE(sh[i].threshold == info->threshold && sh[i].shares == info->shares,
                   KMS_ERR_BACKUP_SET,
                   "share %s is a %u-of-%u share but this backup is %u-of-%u (set %s)", label,
                   sh[i].threshold, sh[i].shares, info->threshold, info->shares, set_hex);
        for (size_t j = 0; j < k; j++) {
            if (xs[j] != sh[i].index)
                continue;
            KMS_ENSURE(CRYPTO_memcmp(ys[j], sh[i].y, KEY_LEN) == 0, KMS_ERR_BACKUP_SET,
                       "shares %s and %s both claim index %u but differ", used_label[j], label,
                       sh[i].index);
            dup = j;
        }
        if (dup != k || k == info->threshold)
            continue; /* same share twice, or enough already */
        xs[k] = (uint8_t)sh[i].index;
        ys[k] = sh[i].y;
        used_label[k] = label == label_buf ? "(unnamed)" : label;
        k++;
    }
    KMS_ENSURE(k >= info->threshold, KMS_ERR_BACKUP_THRESHOLD,
               "this backup needs %u of its %u shares to be restored; %zu distinct share(s) "
               "given",
               info->threshold, info->shares, k);
    KMS_GUARD(kms_shamir_combine(xs, ys, k, KEY_LEN, key));
out:
    if (sh != NULL) {
        OPENSSL_cleanse(sh, (nshares > 0 ? nshares : 1) * sizeof(*sh));
        free(sh);
    }
    return rc;
}

int kms_backup_open(const uint8_t *file, size_t len, const char *const *shares,
                    const char *const *labels, size_t nshares, struct kms_identity *out,
                    struct kms_backup_info *info_out)
{
    struct parsed p;
    EVP_CIPHER_CTX *c = NULL;
    uint8_t key[KEY_LEN];
    uint8_t pub[33];
    uint8_t spki[KMS_BACKUP_SPKI_MAX];
    size_t spki_len = 0;
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    int l = 0;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    memset(key, 0, sizeof(key));
    KMS_GUARD(file_parse(file, len, &p));
    KMS_GUARD(shares_combine(&p.info, shares, labels, nshares, key));
    plain_len = p.ct_len;
    plain = malloc(plain_len);
    KMS_GUARD_PTR(plain);
    c = EVP_CIPHER_CTX_new();
    KMS_GUARD_PTR(c);
    KMS_GUARD_OSSL(EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, p.nonce), "backup: init");
    KMS_GUARD_OSSL(EVP_DecryptUpdate(c, NULL, &l, file, (int)p.aad_len), "backup: aad");
    KMS_GUARD_OSSL(EVP_DecryptUpdate(c, plain, &l, p.ct, (int)p.ct_len), "backup: decrypt");
    KMS_GUARD_OSSL(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)p.tag),
                   "backup: tag");
    if (EVP_DecryptFinal_ex(c, plain + p.ct_len, &l) != 1) {
        rc = kms_err_set(KMS_ERR_BACKUP_AUTH,
                         "backup file failed authentication: it was modified or damaged (or the "
                         "shares do not reconstruct its key); nothing was restored");
        goto out;
    }
    KMS_GUARD(record_decode(plain, plain_len, out));
    KMS_GUARD(identity_check(out));
    KMS_GUARD(k256_pubkey(out->root_k256, pub));
    KMS_GUARD(pem_spki(out->root_ca_key_pem, spki, sizeof(spki), &spki_len));
    KMS_ENSURE(memcmp(pub, p.info.k256_pubkey, 33) == 0 && spki_len == p.info.ca_spki_len &&
                   memcmp(spki, p.info.ca_spki, spki_len) == 0,
               KMS_ERR_VERIFY,
               "backup header names other keys than the backup holds; not restoring it");
    if (info_out != NULL)
        *info_out = p.info;
out:
    EVP_CIPHER_CTX_free(c);
    kms_free_secret(plain, plain_len);
    OPENSSL_cleanse(key, sizeof(key));
    if (rc < 0)
        kms_identity_clear(out);
    return rc;
}

int kms_backup_restore_identity(struct kms_store *st, const struct kms_identity *id,
                                const struct kms_backup_info *info, const char *name,
                                const char *domain)
{
    struct kms_identity copy;
    char set_hex[2 * SET_ID_LEN + 1];
    char pub_hex[2 * 33 + 1];
    char *detail = NULL;
    int have;
    int rc = 0;

    /* a shallow copy with our own origin (and domain); the key strings stay borrowed */
    copy = *id;
    copy.rpc_key_pem = NULL;
    copy.origin = NULL;
    have = kms_store_has_identity(st);
    KMS_GUARD(have);
    KMS_ENSURE(have == 0, KMS_ERR_STORE_EXISTS,
               "the keystore already holds keys; restore a backup only into a new data "
               "directory");
    KMS_ENSURE(name != NULL && name[0] != '\0', KMS_ERR_INVAL, "backup name is empty");
    KMS_ENSURE(asprintf(&copy.origin, "restore %.*s", ORIGIN_NAME_MAX, name) > 0, KMS_ERR_NOMEM,
               "out of memory");
    if (domain != NULL)
        copy.domain = (char *)domain;
    KMS_GUARD(kms_store_save_identity(st, &copy));
    kms_hex_encode(info->set_id, SET_ID_LEN, set_hex);
    kms_hex_encode(info->k256_pubkey, 33, pub_hex);
    KMS_ENSURE(asprintf(&detail, "%.*s share set %s (%u-of-%u) k256 0x%s", ORIGIN_NAME_MAX, name,
                        set_hex, info->threshold, info->shares, pub_hex) > 0,
               KMS_ERR_NOMEM, "out of memory");
    KMS_GUARD(kms_store_audit(st, "Restore", "ok", detail));
out:
    free(copy.origin);
    free(detail);
    return rc;
}

int kms_backup_restore(struct kms_store *st, const uint8_t *file, size_t len, const char *name,
                       const char *const *shares, const char *const *labels, size_t nshares,
                       const char *domain)
{
    struct kms_identity id;
    struct kms_backup_info info;
    int have;
    int rc = 0;

    memset(&id, 0, sizeof(id));
    have = kms_store_has_identity(st);
    KMS_GUARD(have);
    KMS_ENSURE(have == 0, KMS_ERR_STORE_EXISTS,
               "the keystore already holds keys; restore a backup only into a new data "
               "directory");
    KMS_GUARD(kms_backup_open(file, len, shares, labels, nshares, &id, &info));
    KMS_GUARD(kms_backup_restore_identity(st, &id, &info, name, domain));
out:
    kms_identity_clear(&id);
    return rc;
}

/* ---- audit log, read only ---- */

int kms_store_audit_read(const char *data_dir, size_t last,
                         int (*cb)(void *arg, const struct kms_audit_row *row), void *arg)
{
    char dbpath[PATH_MAX_LEN];
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    long long lim = last > 0 && last < (size_t)INT64_MAX ? (long long)last : -1;
    int step;
    int n;
    int rc = 0;

    KMS_ENSURE(data_dir != NULL && data_dir[0] != '\0', KMS_ERR_INVAL, "data_dir is empty");
    n = snprintf(dbpath, sizeof(dbpath), "%s/kms.db", data_dir);
    KMS_ENSURE(n > 0 && (size_t)n < sizeof(dbpath), KMS_ERR_INVAL, "data_dir path is too long");
    KMS_ENSURE(kms_file_exists(dbpath), KMS_ERR_NOTFOUND, "no keystore database at %s", dbpath);
    if (sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, NULL) !=
        SQLITE_OK) {
        rc = kms_err_set(KMS_ERR_STORE_DB, "cannot open database %s: %s", dbpath,
                         db != NULL ? sqlite3_errmsg(db) : "out of memory");
        goto out;
    }
    (void)sqlite3_busy_timeout(db, 5000);
    /* the last `last` rows, in ascending order */
    if (sqlite3_prepare_v2(db,
                           "SELECT id, ts, event, outcome, detail, hash FROM audit WHERE id > "
                           "(SELECT CASE WHEN ?1 < 0 THEN -1 ELSE coalesce(max(id), 0) - ?1 END "
                           "FROM audit) ORDER BY id",
                           -1, &s, NULL) != SQLITE_OK) {
        rc = kms_err_set(KMS_ERR_STORE_DB, "database: read audit log: %s", sqlite3_errmsg(db));
        goto out;
    }
    KMS_ENSURE(sqlite3_bind_int64(s, 1, lim) == SQLITE_OK, KMS_ERR_STORE_DB, "database: bind");
    step = sqlite3_step(s);
    while (step == SQLITE_ROW) {
        struct kms_audit_row row;
        const char *ev = (const char *)sqlite3_column_text(s, 2);
        const char *oc = (const char *)sqlite3_column_text(s, 3);
        const char *de = (const char *)sqlite3_column_text(s, 4);

        memset(&row, 0, sizeof(row));
        row.id = sqlite3_column_int64(s, 0);
        row.ts_ms = sqlite3_column_int64(s, 1);
        row.event = ev != NULL ? ev : "";
        row.outcome = oc != NULL ? oc : "";
        row.detail = de != NULL ? de : "";
        if (sqlite3_column_bytes(s, 5) == 32)
            memcpy(row.hash, sqlite3_column_blob(s, 5), 32);
        KMS_GUARD(cb(arg, &row));
        step = sqlite3_step(s);
    }
    KMS_ENSURE(step == SQLITE_DONE, KMS_ERR_STORE_DB, "database: read audit log: %s",
               sqlite3_errmsg(db));
out:
    sqlite3_finalize(s);
    if (db != NULL)
        sqlite3_close_v2(db);
    return rc;
}
