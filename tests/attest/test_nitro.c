/*
 * Nitro Enclave verifier (attest/nitro.c) and simulated Nitro producer (attest/sim_nitro.c).
 * Real AWS-signed documents verify at their own timestamps against the pinned AWS root; every
 * check the verifier makes is shown to fire by changing exactly the input it guards.
 */
#include <cbor.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "attest/attest.h"
#include "attest/internal.h"
#include "attest/nitro.h"
#include "attest/sim.h"
#include "common/file.h"
#include "common/hex.h"
#include "test.h"

/* From fixtures/README.md (inputs that describe the fixtures, not verifier outputs). */
#define PROD_TS_MS 1766678659346ull
#define DEBUG_TS_MS 1766650846577ull
#define PROD_MODULE "i-0827e799ec9232d44-enc019b5640fdf630d6"
#define DEBUG_MODULE "i-0fd3fdaad4e904e69-enc019b54988b2d89ba"
#define PROD_PCR0                                                                                  \
    "eb7d0dab08ff41546d7e5659aee883af7b32bb2e58e46815b719f9f7bfae7b880188a10d86317e6509923740526c" \
    "f74a"
#define PROD_PCR1                                                                                  \
    "0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf321726696257d623e8805f3f605946b3d8b0" \
    "c6aa"
#define PROD_PCR2                                                                                  \
    "d7b0a76788c1be24898bd148117ea1239578ba0e72f5d87a33a6c6476026675b6f996940f062e0e3f0b5edd2ddf7" \
    "8811"
#define PROD_PCR_HASH "1894b0b29e94a9db16e88a2914f0923e52bb16c08bf3bb484df786a147e2eb79"
#define DEBUG_PCR_HASH "81c611f35bff79491538b2f7cf201c7597a661a5c549633541c62bdc8af1613f"
#define AWS_ROOT_FP "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
#define SIM_MODULE "i-0123456789abcdef0-enc0123456789abcdef"

/* A decoded fixture: the SCALE attestation and a private copy of its COSE bytes. */
struct fx {
    struct kms_attestation *att;
    uint8_t *cose;
    size_t len;
    time_t ts;
};

static int load_fx(const char *name, uint64_t ts_ms, struct fx *f)
{
    uint8_t *raw = NULL;
    size_t n = 0;
    int rc;

    memset(f, 0, sizeof(*f));
    rc = kms_file_read(kms_test_fixture(name), KMS_ATT_MAX_BYTES, &raw, &n);
    if (rc == 0)
        rc = kms_att_decode(raw, n, &f->att);
    free(raw);
    if (rc < 0)
        return rc;
    if (f->att->mode != KMS_ATT_NITRO)
        return kms_err_set(KMS_ERR_INVAL, "fixture is not a Nitro attestation");
    f->len = f->att->nsm_quote.len;
    f->cose = malloc(f->len + 16);
    if (f->cose == NULL)
        return KMS_ERR_NOMEM;
    memcpy(f->cose, f->att->nsm_quote.p, f->len);
    f->ts = (time_t)(ts_ms / 1000u);
    return 0;
}

static void free_fx(struct fx *f)
{
    kms_att_free(f->att);
    free(f->cose);
}

static struct kms_attest_ctx *aws_ctx(time_t now)
{
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    X509 *root = kms_attest_nitro_root();

    if (ctx == NULL || root == NULL || kms_attest_ctx_add_root(ctx, KMS_ROOT_NITRO, root, 0) < 0) {
        X509_free(root);
        kms_attest_ctx_free(ctx);
        return NULL;
    }
    X509_free(root);
    kms_attest_ctx_set_time(ctx, now);
    return ctx;
}

/* Verifies p against the fixture's report_data at the fixture time. */
static int verify_at(const struct fx *f, const uint8_t *p, size_t len, time_t now,
                     struct kms_verified *v)
{
    struct kms_attest_ctx *ctx = aws_ctx(now);
    int rc;

    memset(v, 0, sizeof(*v));
    if (ctx == NULL)
        return KMS_ERR_NOMEM;
    rc = kms_nitro_verify(ctx, p, len, f->att->report_data, v);
    kms_attest_ctx_free(ctx);
    return rc;
}

static int verify_bytes(const struct fx *f, const uint8_t *p, size_t len)
{
    struct kms_verified v;

    return verify_at(f, p, len, f->ts, &v);
}

/* Offset of the unique occurrence of needle in hay, or SIZE_MAX. */
static size_t find_unique(const uint8_t *hay, size_t hlen, const uint8_t *needle, size_t nlen)
{
    size_t at = SIZE_MAX;

    for (size_t i = 0; i + nlen <= hlen; i++) {
        if (memcmp(hay + i, needle, nlen) == 0) {
            if (at != SIZE_MAX)
                return SIZE_MAX;
            at = i;
        }
    }
    return at;
}

/* The payload map of a COSE document (caller decrefs), via libcbor independently of nitro.c. */
static cbor_item_t *payload_map(const uint8_t *cose, size_t len)
{
    struct cbor_load_result r;
    cbor_item_t *top = cbor_load(cose, len, &r), *pl, *m = NULL;

    if (top == NULL)
        return NULL;
    pl = cbor_array_get(top, 2);
    if (pl != NULL) {
        m = cbor_load(cbor_bytestring_handle(pl), cbor_bytestring_length(pl), &r);
        cbor_decref(&pl);
    }
    cbor_decref(&top);
    return m;
}

/* Borrowed value of text key `k` in map m. */
static cbor_item_t *map_get(cbor_item_t *m, const char *k)
{
    struct cbor_pair *p = cbor_map_handle(m);

    for (size_t i = 0; i < cbor_map_size(m); i++) {
        if (cbor_isa_string(p[i].key) && cbor_string_length(p[i].key) == strlen(k) &&
            memcmp(cbor_string_handle(p[i].key), k, strlen(k)) == 0)
            return p[i].value;
    }
    return NULL;
}

/* Offset/length in f->cose of a byte-string field of the payload: "certificate", or
 * "cabundle" entry idx. */
static size_t field_offset(const struct fx *f, const char *key, int idx, size_t *len)
{
    cbor_item_t *m = payload_map(f->cose, f->len), *v;
    size_t off = SIZE_MAX;

    if (m == NULL)
        return SIZE_MAX;
    v = map_get(m, key);
    if (v != NULL && idx >= 0)
        v = cbor_array_handle(v)[idx];
    if (v != NULL && cbor_isa_bytestring(v)) {
        *len = cbor_bytestring_length(v);
        off = find_unique(f->cose, f->len, cbor_bytestring_handle(v), *len);
    }
    cbor_decref(&m);
    return off;
}

/* Builds a COSE_Sign1 [prot, {}, payload, sig] from parts with libcbor. Caller frees *out. */
static int build_cose(const uint8_t *prot, size_t prot_len, const uint8_t *pl, size_t pl_len,
                      const uint8_t *sig, size_t sig_len, uint8_t **out, size_t *len)
{
    cbor_item_t *a = cbor_new_definite_array(4);
    cbor_item_t *it[4] = {cbor_build_bytestring(prot, prot_len), cbor_new_definite_map(0),
                          cbor_build_bytestring(pl, pl_len), cbor_build_bytestring(sig, sig_len)};
    size_t cap = 0;

    for (int i = 0; i < 4; i++) {
        if (!cbor_array_push(a, it[i]))
            return KMS_ERR_NOMEM;
        cbor_decref(&it[i]);
    }
    *out = NULL;
    *len = cbor_serialize_alloc(a, out, &cap);
    cbor_decref(&a);
    return *len > 0 ? 0 : KMS_ERR_NOMEM;
}

/* The fixture's COSE parts: borrowed pointers into f->cose (layout 84 44 <prot4> a0 59 <len16>
 * <payload> 58 60 <sig96>, checked here). */
static int cose_parts(const struct fx *f, const uint8_t **prot, const uint8_t **pl, size_t *pl_len,
                      const uint8_t **sig)
{
    if (f->len < 9 + 98 || f->cose[0] != 0x84 || f->cose[1] != 0x44 || f->cose[6] != 0xa0 ||
        f->cose[7] != 0x59)
        return KMS_ERR_PARSE;
    *prot = f->cose + 2;
    *pl_len = ((size_t)f->cose[8] << 8) | f->cose[9];
    *pl = f->cose + 10;
    if (10 + *pl_len + 98 != f->len || f->cose[10 + *pl_len] != 0x58 ||
        f->cose[11 + *pl_len] != 0x60)
        return KMS_ERR_PARSE;
    *sig = f->cose + 12 + *pl_len;
    return 0;
}

/* Re-wraps a modified payload with the original protected header and signature. */
static int with_payload(const struct fx *f, const uint8_t *pl, size_t pl_len, uint8_t **out,
                        size_t *len)
{
    const uint8_t *prot, *opl, *sig;
    size_t opl_len;

    if (cose_parts(f, &prot, &opl, &opl_len, &sig) < 0)
        return KMS_ERR_PARSE;
    return build_cose(prot, 4, pl, pl_len, sig, 96, out, len);
}

static void hex_to(const char *hex, uint8_t *out, size_t n)
{
    CHECK_OK(kms_hex_decode_exact(hex, out, n));
}

static void check_pcr_hash(const struct kms_verified *v, const char *want_hex)
{
    uint8_t h[32], want[32];

    SHA256(&v->pcr[0][0], 3 * 48, h);
    hex_to(want_hex, want, 32);
    CHECK_MEM(h, want, 32);
}

/* ---------------------------------------------------------------- tests */

/* The compiled-in root is the pinned AWS Nitro Enclaves Root G1: its DER fingerprint is the
 * published one and it equals both attest/roots/ and the fixture copy. */
static void test_pinned_root(void)
{
    X509 *x = kms_attest_nitro_root(), *file;
    unsigned char *der = NULL;
    uint8_t fp[32], want[32];
    char paths[2][4096];
    const char *src = getenv("KMS_SOURCE_DIR");
    FILE *fh;
    int n;

    CHECK(x != NULL);
    if (x == NULL)
        return;
    n = i2d_X509(x, &der);
    CHECK(n > 0);
    SHA256(der, (size_t)n, fp);
    hex_to(AWS_ROOT_FP, want, 32);
    CHECK_MEM(fp, want, 32);
    OPENSSL_free(der);
    snprintf(paths[0], sizeof(paths[0]), "%s",
             kms_test_fixture("roots/aws-nitro-enclaves-root-g1.pem"));
    snprintf(paths[1], sizeof(paths[1]), "%s/attest/roots/aws-nitro-enclaves-root-g1.pem",
             src != NULL ? src : ".");
    for (int i = 0; i < 2; i++) {
        fh = fopen(paths[i], "r");
        CHECK(fh != NULL);
        if (fh == NULL)
            continue;
        file = PEM_read_X509(fh, NULL, NULL, NULL);
        fclose(fh);
        CHECK(file != NULL && X509_cmp(file, x) == 0);
        X509_free(file);
    }
    X509_free(x);
}

/* The production fixture verifies at its own timestamp against the AWS root, and the verifier
 * reports the PCRs, module_id and non-sim status the README gives. */
static void test_prod_verifies(void)
{
    struct fx f;
    struct kms_verified v;
    uint8_t pcr[48];

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    CHECK_OK(verify_at(&f, f.cose, f.len, f.ts, &v));
    CHECK(v.mode == KMS_ATT_NITRO);
    CHECK(v.sim == 0);
    CHECK(strcmp(v.module_id, PROD_MODULE) == 0);
    hex_to(PROD_PCR0, pcr, 48);
    CHECK_MEM(v.pcr[0], pcr, 48);
    hex_to(PROD_PCR1, pcr, 48);
    CHECK_MEM(v.pcr[1], pcr, 48);
    hex_to(PROD_PCR2, pcr, 48);
    CHECK_MEM(v.pcr[2], pcr, 48);
    check_pcr_hash(&v, PROD_PCR_HASH);
    free_fx(&f);
}

/* The debug-enclave fixture verifies too (its PCR0..2 are all zero). */
static void test_debug_verifies(void)
{
    static const uint8_t zero[48];
    struct fx f;
    struct kms_verified v;

    CHECK_OK(load_fx("nitro/attestation-debug.bin", DEBUG_TS_MS, &f));
    if (f.att == NULL)
        return;
    CHECK_OK(verify_at(&f, f.cose, f.len, f.ts, &v));
    CHECK(strcmp(v.module_id, DEBUG_MODULE) == 0);
    for (int i = 0; i < 3; i++)
        CHECK_MEM(v.pcr[i], zero, 48);
    check_pcr_hash(&v, DEBUG_PCR_HASH);
    free_fx(&f);
}

/* The full dispatcher (kms_attest_verify, NITRO mode) reaches this verifier with the SCALE
 * attestation's report_data. */
static void test_dispatch(void)
{
    struct fx f;
    struct kms_verified v;
    struct kms_attest_ctx *ctx;

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    ctx = aws_ctx(f.ts);
    CHECK_OK(kms_attest_verify(ctx, f.att, &v));
    CHECK(v.mode == KMS_ATT_NITRO && strcmp(v.module_id, PROD_MODULE) == 0);
    kms_verified_free(&v);
    f.att->report_data[63] ^= 1;
    CHECK_RC(kms_attest_verify(ctx, f.att, &v), KMS_ERR_ATT_REPORT_DATA);
    kms_attest_ctx_free(ctx);
    free_fx(&f);
}

/* Certificate validity is enforced at the context time: one hour after the leaf's notAfter and
 * one hour before its notBefore both give EXPIRED. */
static void test_expired(void)
{
    struct fx f;
    struct kms_verified v;
    size_t off, len = 0;
    const uint8_t *p;
    X509 *leaf = NULL;
    time_t na, nb;
    struct tm tm;

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    off = field_offset(&f, "certificate", -1, &len);
    CHECK(off != SIZE_MAX);
    if (off == SIZE_MAX)
        goto out;
    p = f.cose + off;
    leaf = d2i_X509(NULL, &p, (long)len);
    CHECK(leaf != NULL);
    if (leaf == NULL)
        goto out;
    CHECK(ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) == 1);
    na = timegm(&tm);
    CHECK(ASN1_TIME_to_tm(X509_get0_notBefore(leaf), &tm) == 1);
    nb = timegm(&tm);
    CHECK(nb <= f.ts && f.ts <= na);
    CHECK_RC(verify_at(&f, f.cose, f.len, na + 3600, &v), KMS_ERR_ATT_EXPIRED);
    CHECK_DETAIL("Nitro certificate chain");
    CHECK_RC(verify_at(&f, f.cose, f.len, nb - 3600, &v), KMS_ERR_ATT_EXPIRED);
    /* still valid one second before notAfter */
    CHECK_OK(verify_at(&f, f.cose, f.len, na - 1, &v));
out:
    X509_free(leaf);
    free_fx(&f);
}

/* One flipped byte in the COSE signature → COSE_SIG. */
static void test_flip_signature(void)
{
    struct fx f;

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    f.cose[f.len - 10] ^= 0x01;
    CHECK_RC(verify_bytes(&f, f.cose, f.len), KMS_ERR_ATT_COSE_SIG);
    CHECK_DETAIL("signature does not verify");
    free_fx(&f);
}

/* One flipped byte inside the PCR0 value of the signed payload → COSE_SIG. */
static void test_flip_pcr(void)
{
    struct fx f;
    uint8_t pcr0[48];
    size_t off;

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    hex_to(PROD_PCR0, pcr0, 48);
    off = find_unique(f.cose, f.len, pcr0, 48);
    CHECK(off != SIZE_MAX);
    if (off != SIZE_MAX) {
        f.cose[off + 20] ^= 0x80;
        CHECK_RC(verify_bytes(&f, f.cose, f.len), KMS_ERR_ATT_COSE_SIG);
        CHECK_DETAIL("signature does not verify");
    }
    free_fx(&f);
}

/* One flipped byte in an intermediate (cabundle[1], last byte = inside its signature) → CHAIN.
 * The chain is checked before the COSE signature, so CHAIN wins even though the payload
 * changed too. */
static void test_flip_intermediate(void)
{
    struct fx f;
    size_t off, len = 0;

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    off = field_offset(&f, "cabundle", 1, &len);
    CHECK(off != SIZE_MAX);
    if (off != SIZE_MAX) {
        f.cose[off + len - 1] ^= 0x01;
        CHECK_RC(verify_bytes(&f, f.cose, f.len), KMS_ERR_ATT_CHAIN);
        CHECK_DETAIL("does not verify to the pinned root");
    }
    free_fx(&f);
}

/* cabundle[0] is never trusted or parsed (the pinned root is the anchor): a flipped byte in it
 * leaves the chain valid, so only the COSE signature over the payload catches it. */
static void test_cabundle0_ignored(void)
{
    struct fx f;
    size_t off, len = 0;

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    off = field_offset(&f, "cabundle", 0, &len);
    CHECK(off != SIZE_MAX);
    if (off != SIZE_MAX) {
        f.cose[off] ^= 0x01; /* not even DER any more */
        CHECK_RC(verify_bytes(&f, f.cose, f.len), KMS_ERR_ATT_COSE_SIG);
    }
    free_fx(&f);
}

/* One flipped byte in the leaf certificate → CHAIN: its issuer signature no longer verifies, and
 * the chain check runs before the COSE signature check (which would also fail). A flip in the
 * middle of the TBS (inside the public key) gives the same result. */
static void test_flip_leaf(void)
{
    struct fx f;
    size_t off, len = 0;

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    off = field_offset(&f, "certificate", -1, &len);
    CHECK(off != SIZE_MAX);
    if (off != SIZE_MAX) {
        f.cose[off + len - 1] ^= 0x01;
        CHECK_RC(verify_bytes(&f, f.cose, f.len), KMS_ERR_ATT_CHAIN);
        CHECK_DETAIL("does not verify to the pinned root");
        f.cose[off + len - 1] ^= 0x01;
        CHECK_OK(verify_bytes(&f, f.cose, f.len));
    }
    free_fx(&f);
}

/* user_data is bound to report_data: any other report_data → REPORT_DATA. */
static void test_report_data_mismatch(void)
{
    struct fx f;
    struct kms_verified v;
    struct kms_attest_ctx *ctx;
    uint8_t rd[64];
    uint8_t want[64] = {0};

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    /* README: user_data = sha256("") || 32 zero bytes */
    SHA256((const uint8_t *)"", 0, want);
    CHECK_MEM(f.att->report_data, want, 64);
    ctx = aws_ctx(f.ts);
    memcpy(rd, f.att->report_data, 64);
    rd[63] ^= 0x01; /* the last byte: all 64 bytes are compared */
    CHECK_RC(kms_nitro_verify(ctx, f.cose, f.len, rd, &v), KMS_ERR_ATT_REPORT_DATA);
    CHECK_DETAIL("user_data does not equal");
    kms_attest_ctx_free(ctx);
    free_fx(&f);
}

/* Without a Nitro root in the context nothing verifies (CHAIN). */
static void test_no_root(void)
{
    struct fx f;
    struct kms_verified v;
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL || ctx == NULL)
        return;
    kms_attest_ctx_set_time(ctx, f.ts);
    CHECK_RC(kms_nitro_verify(ctx, f.cose, f.len, f.att->report_data, &v), KMS_ERR_ATT_CHAIN);
    kms_attest_ctx_free(ctx);
    free_fx(&f);
}

/* COSE envelope structure: trailing byte, other tag, not an array of 4, header types,
 * signature length, malformed CBOR → FORMAT; tag 18 is accepted. */
static void test_cose_structure(void)
{
    struct fx f;
    const uint8_t *prot, *pl, *sig;
    size_t pl_len;
    uint8_t *b = NULL;

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    CHECK_OK(cose_parts(&f, &prot, &pl, &pl_len, &sig));
    b = malloc(f.len + 1);
    CHECK(b != NULL);
    if (b == NULL)
        goto out;

    /* trailing byte */
    memcpy(b, f.cose, f.len);
    b[f.len] = 0x00;
    CHECK_RC(verify_bytes(&f, b, f.len + 1), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("trailing");

    /* tag 18 (COSE_Sign1) is optional and accepted; tag 17 is not */
    b[0] = 0xd2;
    memcpy(b + 1, f.cose, f.len);
    CHECK_OK(verify_bytes(&f, b, f.len + 1));
    b[0] = 0xd1;
    CHECK_RC(verify_bytes(&f, b, f.len + 1), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("tag 17");

    /* array of 3 elements */
    memcpy(b, f.cose, f.len);
    b[0] = 0x83;
    CHECK_RC(verify_bytes(&f, b, f.len), KMS_ERR_ATT_FORMAT);

    /* unprotected header not a map: a0 → 80 (empty array) */
    memcpy(b, f.cose, f.len);
    b[6] = 0x80;
    CHECK_RC(verify_bytes(&f, b, f.len), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("unprotected header is not a map");

    /* signature as a text string of 96 ASCII bytes: 58 60 → 78 60 */
    memcpy(b, f.cose, f.len);
    b[10 + pl_len] = 0x78;
    memset(b + 12 + pl_len, 'a', 96);
    CHECK_RC(verify_bytes(&f, b, f.len), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("signature is not a byte string");
    /* a nested tag (tags are legal only in front of the array) */
    memcpy(b, f.cose, f.len);
    b[6] = 0xc1; /* tag 1 in place of the unprotected header */
    CHECK_RC(verify_bytes(&f, b, f.len), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("not valid CBOR");

    /* signature of 95 bytes: 58 5f and the last byte dropped */
    memcpy(b, f.cose, f.len);
    b[11 + pl_len] = 0x5f;
    CHECK_RC(verify_bytes(&f, b, f.len - 1), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("expected 96");

    /* truncated document */
    CHECK_RC(verify_bytes(&f, f.cose, f.len - 1), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("not valid CBOR");
out:
    free(b);
    free_fx(&f);
}

/* Protected header: alg must be ES384 (-35), present, and crit may list only alg. */
static void test_protected_header(void)
{
    static const struct {
        uint8_t prot[8];
        size_t len;
        int want;
        const char *detail;
    } cases[] = {
        {{0xa1, 0x01, 0x26}, 3, KMS_ERR_ATT_FORMAT, "not ES384"},             /* {1: -7} ES256 */
        {{0xa1, 0x01, 0x38, 0x23}, 4, KMS_ERR_ATT_FORMAT, "not ES384"},       /* {1: -36} ES512 */
        {{0xa1, 0x01, 0x78, 0x01, 0x41}, 5, KMS_ERR_ATT_FORMAT, "not ES384"}, /* {1: "A"} */
        {{0xa0}, 1, KMS_ERR_ATT_FORMAT, "no alg"},                            /* {} */
        {{0}, 0, KMS_ERR_ATT_FORMAT, "not valid CBOR"},                       /* empty bstr */
        {{0x80}, 1, KMS_ERR_ATT_FORMAT, "not a map"},                         /* [] */
        {{0xa2, 0x01, 0x38, 0x22, 0x01, 0x26}, 6, KMS_ERR_ATT_FORMAT, "repeats alg"},
        /* crit [4] (kid): a critical parameter this verifier does not understand */
        {{0xa2, 0x01, 0x38, 0x22, 0x02, 0x81, 0x04}, 7, KMS_ERR_ATT_FORMAT, "crit"},
        /* crit [] */
        {{0xa2, 0x01, 0x38, 0x22, 0x02, 0x80}, 6, KMS_ERR_ATT_FORMAT, "crit"},
        /* crit [1] passes the header check; the header bytes are signed, so the (unchanged)
         * signature then fails */
        {{0xa2, 0x01, 0x38, 0x22, 0x02, 0x81, 0x01}, 7, KMS_ERR_ATT_COSE_SIG, "signature"},
        /* truncated header: crit [ "alg" with its 3 text bytes missing */
        {{0xa2, 0x01, 0x38, 0x22, 0x02, 0x81, 0x63}, 7, KMS_ERR_ATT_FORMAT, "not valid CBOR"},
    };
    struct fx f;
    const uint8_t *prot, *pl, *sig;
    size_t pl_len, len;
    uint8_t *b;

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    CHECK_OK(cose_parts(&f, &prot, &pl, &pl_len, &sig));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK_OK(build_cose(cases[i].prot, cases[i].len, pl, pl_len, sig, 96, &b, &len));
        CHECK_RC(verify_bytes(&f, b, len), cases[i].want);
        CHECK_DETAIL(cases[i].detail);
        free(b);
    }
    /* crit ["alg"] passes the header check like crit [1] */
    {
        static const uint8_t crit_alg[] = {0xa2, 0x01, 0x38, 0x22, 0x02, 0x81, 0x63, 'a', 'l', 'g'};

        CHECK_OK(build_cose(crit_alg, sizeof(crit_alg), pl, pl_len, sig, 96, &b, &len));
        CHECK_RC(verify_bytes(&f, b, len), KMS_ERR_ATT_COSE_SIG);
        free(b);
    }
    /* the unchanged header re-encoded through the same builder still verifies */
    CHECK_OK(build_cose(prot, 4, pl, pl_len, sig, 96, &b, &len));
    CHECK_OK(verify_bytes(&f, b, len));
    free(b);
    free_fx(&f);
}

/* Replaces payload bytes [off, off + flen) by `to` (tlen bytes), re-wraps the payload with the
 * original header and signature, and expects `want` with `detail`. */
static void payload_replace(const struct fx *f, size_t off, size_t flen, const uint8_t *to,
                            size_t tlen, int want, const char *detail)
{
    const uint8_t *prot, *pl, *sig;
    size_t pl_len, n, len;
    uint8_t *np, *b;

    CHECK_OK(cose_parts(f, &prot, &pl, &pl_len, &sig));
    CHECK(off <= pl_len && flen <= pl_len - off);
    if (off > pl_len || flen > pl_len - off)
        return;
    n = pl_len - flen + tlen;
    np = malloc(n);
    CHECK(np != NULL);
    if (np == NULL)
        return;
    memcpy(np, pl, off);
    memcpy(np + off, to, tlen);
    memcpy(np + off + tlen, pl + off + flen, pl_len - off - flen);
    CHECK_OK(with_payload(f, np, n, &b, &len));
    CHECK_RC(verify_bytes(f, b, len), want);
    CHECK_DETAIL(detail);
    free(b);
    free(np);
}

/* Replaces the first occurrence of `from` (flen bytes) in the payload by `to`. */
static void payload_edit(const struct fx *f, const uint8_t *from, size_t flen, const uint8_t *to,
                         size_t tlen, int want, const char *detail)
{
    const uint8_t *prot, *pl, *sig;
    size_t pl_len, off = SIZE_MAX;

    CHECK_OK(cose_parts(f, &prot, &pl, &pl_len, &sig));
    for (size_t i = 0; i + flen <= pl_len && off == SIZE_MAX; i++) {
        if (memcmp(pl + i, from, flen) == 0)
            off = i;
    }
    CHECK(off != SIZE_MAX);
    if (off != SIZE_MAX)
        payload_replace(f, off, flen, to, tlen, want, detail);
}

/* Replaces a whole byte-string field (head included; head_len 2 or 3 bytes) located by
 * field_offset with `to`. */
static void field_replace(const struct fx *f, const char *key, int idx, size_t head_len,
                          const uint8_t *to, size_t tlen, int want, const char *detail)
{
    size_t len = 0, off = field_offset(f, key, idx, &len);

    CHECK(off != SIZE_MAX && off >= 10 + head_len);
    if (off != SIZE_MAX && off >= 10 + head_len)
        payload_replace(f, off - 10 - head_len, len + head_len, to, tlen, want, detail);
}

#define STR(s) (const uint8_t *)(s), sizeof(s) - 1

/* Attestation document fields: wrong types, wrong digest, PCR sizes and presence, sizes of the
 * optional fields, duplicates and missing fields → FORMAT (all before any signature check). */
static void test_document_fields(void)
{
    struct fx f;
    uint8_t pcr0[48], from[64], to[700];
    size_t n;

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    hex_to(PROD_PCR0, pcr0, 48);

    /* digest "SHA256" */
    payload_edit(&f,
                 STR("\x66"
                     "digest\x66SHA384"),
                 STR("\x66"
                     "digest\x66SHA256"),
                 KMS_ERR_ATT_FORMAT, "SHA384");
    /* PCR0 of 47 bytes: 00 58 30 <48> → 00 58 2f <47> */
    from[0] = 0x00, from[1] = 0x58, from[2] = 0x30;
    memcpy(from + 3, pcr0, 48);
    memcpy(to, from, 50);
    to[2] = 0x2f;
    payload_edit(&f, from, 51, to, 50, KMS_ERR_ATT_FORMAT, "PCR0 is 47 bytes");
    /* PCR0 of 49 bytes */
    memcpy(to, from, 51);
    to[2] = 0x31;
    to[51] = 0x00;
    payload_edit(&f, from, 51, to, 52, KMS_ERR_ATT_FORMAT, "PCR0 is 49 bytes");
    /* PCR0 missing: pcrs b0 00 58 30 <48> → af */
    from[0] = 0xb0, from[1] = 0x00, from[2] = 0x58, from[3] = 0x30;
    memcpy(from + 4, pcr0, 48);
    to[0] = 0xaf;
    payload_edit(&f, from, 52, to, 1, KMS_ERR_ATT_FORMAT, "lacks PCR0");
    /* PCR0 given twice (PCR1's key renamed to 0) */
    from[0] = 0x01, from[1] = 0x58, from[2] = 0x30;
    hex_to(PROD_PCR1, from + 3, 48);
    memcpy(to, from, 51);
    to[0] = 0x00;
    payload_edit(&f, from, 51, to, 51, KMS_ERR_ATT_FORMAT, "PCR0 appears twice");
    /* PCR index 32 */
    to[0] = 0x18, to[1] = 0x20;
    memcpy(to + 2, from + 1, 50);
    payload_edit(&f, from, 51, to, 52, KMS_ERR_ATT_FORMAT, "out of range");
    /* PCR1 value as a (valid UTF-8) text string */
    payload_edit(&f, from, 51, STR("\x01\x61x"), KMS_ERR_ATT_FORMAT, "PCR1 is not a byte string");
    /* PCR1 value as binary text (invalid UTF-8): rejected by the decoder */
    memcpy(to, from, 51);
    to[1] = 0x78;
    payload_edit(&f, from, 51, to, 51, KMS_ERR_ATT_FORMAT, "invalid UTF-8");
    /* pcrs empty: the whole pcrs map (between "pcrs" and "certificate") replaced */
    {
        const uint8_t *prot, *pl, *sig;
        size_t pl_len, off = SIZE_MAX, end = SIZE_MAX;

        CHECK_OK(cose_parts(&f, &prot, &pl, &pl_len, &sig));
        for (size_t i = 0; i + 5 <= pl_len; i++) {
            if (off == SIZE_MAX && memcmp(pl + i, "\x64pcrs", 5) == 0)
                off = i + 5;
            if (end == SIZE_MAX && i + 12 <= pl_len &&
                memcmp(pl + i,
                       "\x6b"
                       "certificate",
                       12) == 0)
                end = i;
        }
        CHECK(off != SIZE_MAX && end != SIZE_MAX && end > off);
        if (off != SIZE_MAX && end != SIZE_MAX && end > off) {
            n = end - off;
            uint8_t *whole = malloc(n);

            CHECK(whole != NULL);
            if (whole != NULL) {
                memcpy(whole, pl + off, n);
                to[0] = 0xa0;
                payload_edit(&f, whole, n, to, 1, KMS_ERR_ATT_FORMAT, "pcrs holds 0 entries");
                to[0] = 0x80; /* pcrs as an empty array */
                payload_edit(&f, whole, n, to, 1, KMS_ERR_ATT_FORMAT, "pcrs is not a map");
            }
            free(whole);
        }
    }
    /* module_id as a byte string: 69 module_id 78 27 → 58 27 */
    payload_edit(&f, STR("\x69module_id\x78\x27"), STR("\x69module_id\x58\x27"), KMS_ERR_ATT_FORMAT,
                 "module_id is not a text string");
    /* timestamp negative: 1b → 3b */
    payload_edit(&f, STR("\x69timestamp\x1b"), STR("\x69timestamp\x3b"), KMS_ERR_ATT_FORMAT,
                 "timestamp is not an unsigned integer");
    /* certificate as text */
    field_replace(&f, "certificate", -1, 3, STR("\x61x"), KMS_ERR_ATT_FORMAT,
                  "certificate is not a byte string");
    /* certificate empty */
    field_replace(&f, "certificate", -1, 3, STR("\x40"), KMS_ERR_ATT_FORMAT,
                  "certificate is 0 bytes");
    /* cabundle as a map of 2 (4 entries become 2 pairs) */
    payload_edit(&f,
                 STR("\x68"
                     "cabundle\x84"),
                 STR("\x68"
                     "cabundle\xa2"),
                 KMS_ERR_ATT_FORMAT, "cabundle is not an array");
    /* cabundle entry as text (even cabundle[0], which is otherwise unused, must be a bstr) */
    field_replace(&f, "cabundle", 0, 3, STR("\x61x"), KMS_ERR_ATT_FORMAT,
                  "cabundle entry is not a byte string");
    /* user_data as text */
    field_replace(&f, "user_data", -1, 2, STR("\x61x"), KMS_ERR_ATT_FORMAT,
                  "user_data is not a byte string");
    /* user_data of 513 bytes (max 512): new head 59 0201 and 449 extra bytes before the
     * original 64 */
    memcpy(to, "\x69user_data\x59\x02\x01", 13);
    memset(to + 13, 0x11, 513);
    payload_edit(&f, STR("\x69user_data\x58\x40"), to, 13 + 513 - 64, KMS_ERR_ATT_FORMAT,
                 "user_data is");
    /* public_key as an integer instead of null/bstr */
    payload_edit(&f, STR("\x6apublic_key\xf6"), STR("\x6apublic_key\x01"), KMS_ERR_ATT_FORMAT,
                 "public_key is not a byte string");
    /* nonce true */
    payload_edit(&f, STR("\x65nonce\xf6"), STR("\x65nonce\xf5"), KMS_ERR_ATT_FORMAT,
                 "nonce is not a byte string");
    /* a duplicated field: timestamp renamed module_id */
    payload_edit(&f, STR("\x69timestamp"), STR("\x69module_id"), KMS_ERR_ATT_FORMAT, "repeats");
    /* a missing required field: certificate renamed (unknown keys are ignored) */
    payload_edit(&f,
                 STR("\x6b"
                     "certificate"),
                 STR("\x6b"
                     "certificatX"),
                 KMS_ERR_ATT_FORMAT, "lacks a required field");
    /* a non-text key */
    payload_edit(&f, STR("\x65nonce\xf6"), STR("\x05\xf6"), KMS_ERR_ATT_FORMAT,
                 "key is not a text string");
    /* a float value (not allowed anywhere) */
    payload_edit(&f, STR("\x65nonce\xf6"), STR("\x65nonce\xf9\x00\x00"), KMS_ERR_ATT_FORMAT,
                 "not valid CBOR");
    /* the payload followed by a stray byte inside its bstr */
    payload_edit(&f, STR("\x65nonce\xf6\xff"), STR("\x65nonce\xf6\xff\x00"), KMS_ERR_ATT_FORMAT,
                 "trailing");
    /* an intermediate (cabundle[1], 708 bytes) that is not DER: SEQUENCE tag 30 → 31 */
    payload_edit(&f, STR("\x59\x02\xc4\x30\x82\x02\xc0"), STR("\x59\x02\xc4\x31\x82\x02\xc0"),
                 KMS_ERR_ATT_FORMAT, "not a single DER certificate");
    /* the leaf (639 bytes) not DER */
    payload_edit(&f, STR("\x59\x02\x7f\x30\x82\x02\x7b"), STR("\x59\x02\x7f\x31\x82\x02\x7b"),
                 KMS_ERR_ATT_FORMAT, "not a single DER certificate");
    free_fx(&f);
}

/* Hostile CBOR heads are rejected by the bounded walk before libcbor allocates: a 2^64-1 element
 * array, a 4 GiB string, deep nesting, indefinite strings, reserved additional info. */
static void test_hostile_cbor(void)
{
    static const struct {
        uint8_t b[16];
        size_t len;
    } cases[] = {
        {{0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9},
        {{0xbb, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00}, 9},
        {{0x84, 0x5a, 0xff, 0xff, 0xff, 0xff, 0x00}, 7},
        {{0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x80}, 12},
        {{0x84, 0x5f, 0x41, 0x00, 0xff, 0xa0, 0x40, 0x40}, 8},
        {{0x84, 0x5c}, 2},
        {{0xff}, 1},
        {{0x9f, 0x40}, 2},
    };
    struct fx f;

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK_RC(verify_bytes(&f, cases[i].b, cases[i].len), KMS_ERR_ATT_FORMAT);
        CHECK_DETAIL("not valid CBOR");
    }
    CHECK_RC(verify_bytes(&f, cases[0].b, 0), KMS_ERR_ATT_FORMAT);
    free_fx(&f);
}

/* Head of a CBOR item (shortest form) for hand-assembled documents. */
static size_t put_hd(uint8_t *o, uint8_t major, size_t v)
{
    uint8_t m = (uint8_t)(major << 5);

    if (v < 24) {
        o[0] = (uint8_t)(m | v);
        return 1;
    }
    if (v < 256) {
        o[0] = (uint8_t)(m | 24);
        o[1] = (uint8_t)v;
        return 2;
    }
    o[0] = (uint8_t)(m | 25);
    o[1] = (uint8_t)(v >> 8);
    o[2] = (uint8_t)v;
    return 3;
}

/* [prot, unprot, payload, sig] by hand: unprot is raw CBOR, indef makes the array indefinite
 * (9f ... ff). Caller frees *out. */
static int assemble(const uint8_t *prot, size_t prot_len, const uint8_t *unprot, size_t ulen,
                    const uint8_t *pl, size_t pl_len, const uint8_t *sig, int indef, uint8_t **out,
                    size_t *len)
{
    uint8_t *o = malloc(prot_len + ulen + pl_len + 96 + 16);
    size_t n = 0;

    *out = o;
    if (o == NULL)
        return KMS_ERR_NOMEM;
    o[n++] = indef ? 0x9f : 0x84;
    n += put_hd(o + n, 2, prot_len);
    memcpy(o + n, prot, prot_len);
    n += prot_len;
    memcpy(o + n, unprot, ulen);
    n += ulen;
    n += put_hd(o + n, 2, pl_len);
    memcpy(o + n, pl, pl_len);
    n += pl_len;
    n += put_hd(o + n, 2, 96);
    memcpy(o + n, sig, 96);
    n += 96;
    if (indef)
        o[n++] = 0xff;
    *len = n;
    return 0;
}

/* Replaces the first `from` in p[0..*len) by `to` in place (cap bytes available). */
static int splice(uint8_t *p, size_t *len, size_t cap, const uint8_t *from, size_t flen,
                  const uint8_t *to, size_t tlen)
{
    for (size_t i = 0; i + flen <= *len; i++) {
        if (memcmp(p + i, from, flen) != 0)
            continue;
        if (cap - (*len - flen) < tlen)
            return KMS_ERR_TOOBIG;
        memmove(p + i + tlen, p + i + flen, *len - i - flen);
        memcpy(p + i, to, tlen);
        *len = *len - flen + tlen;
        return 0;
    }
    return KMS_ERR_NOTFOUND;
}

/* The payload with two splices, re-wrapped with the original header and signature; expects
 * want and detail. */
static void payload_splice2(const struct fx *f, const uint8_t *f1, size_t l1, const uint8_t *t1,
                            size_t tl1, const uint8_t *f2, size_t l2, const uint8_t *t2, size_t tl2,
                            int want, const char *detail)
{
    const uint8_t *prot, *pl, *sig;
    size_t pl_len, n, cap, len;
    uint8_t *np = NULL, *b = NULL;

    CHECK_OK(cose_parts(f, &prot, &pl, &pl_len, &sig));
    cap = pl_len + 64;
    np = malloc(cap);
    CHECK(np != NULL);
    if (np == NULL)
        return;
    memcpy(np, pl, pl_len);
    n = pl_len;
    CHECK_OK(splice(np, &n, cap, f1, l1, t1, tl1));
    if (f2 != NULL)
        CHECK_OK(splice(np, &n, cap, f2, l2, t2, tl2));
    CHECK_OK(with_payload(f, np, n, &b, &len));
    if (b != NULL) {
        CHECK_RC(verify_bytes(f, b, len), want);
        CHECK_DETAIL(detail);
    }
    free(b);
    free(np);
}

/* Text strings must be UTF-8 wherever they are, even where the verifier reads nothing (an
 * unknown document key, the unprotected header, an extra protected label): the decoder before
 * (libcbor 0.8) refused such documents and so does the in-tree walk. Each case flips only the
 * second byte of a two-byte character (c3 a9 "é" → c3 28); the valid twin passes the parse. */
static void test_text_utf8(void)
{
    static const uint8_t prot_ok[] = {0xa2, 0x01, 0x38, 0x22, 0x03, 0x62, 0xc3, 0xa9};
    static const uint8_t prot_bad[] = {0xa2, 0x01, 0x38, 0x22, 0x03, 0x62, 0xc3, 0x28};
    static const uint8_t unprot_ok[] = {0xa1, 0x04, 0x62, 0xc3, 0xa9};
    static const uint8_t unprot_bad[] = {0xa1, 0x04, 0x62, 0xc3, 0x28};
    struct fx f;
    const uint8_t *prot, *pl, *sig;
    size_t pl_len, len;
    uint8_t *b = NULL;

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    CHECK_OK(cose_parts(&f, &prot, &pl, &pl_len, &sig));

    /* an unknown document key "é" (value null) in front of module_id */
    payload_edit(&f, STR("\x69module_id"), STR("\x62\xc3\xa9\xf6\x69module_id"),
                 KMS_ERR_ATT_COSE_SIG, "signature");
    payload_edit(&f, STR("\x69module_id"), STR("\x62\xc3\x28\xf6\x69module_id"), KMS_ERR_ATT_FORMAT,
                 "Nitro attestation document: CBOR decoder rejected it (invalid UTF-8 text)");
    /* invalid UTF-8 comes after malformed CBOR and trailing bytes, before any field check */
    payload_splice2(&f, STR("\x69module_id"), STR("\x62\xc3\x28\xf6\x69module_id"),
                    STR("\x65nonce\xf6"), STR("\x65nonce\xf7"), KMS_ERR_ATT_FORMAT,
                    "not valid CBOR");
    payload_splice2(&f, STR("\x69module_id"), STR("\x62\xc3\x28\xf6\x69module_id"),
                    STR("\x65nonce\xf6\xff"), STR("\x65nonce\xf6\xff\x00"), KMS_ERR_ATT_FORMAT,
                    "trailing");
    payload_splice2(&f, STR("\x69module_id"), STR("\x62\xc3\x28\xf6\x69module_id"),
                    STR("\x66SHA384"), STR("\x66SHA256"), KMS_ERR_ATT_FORMAT, "invalid UTF-8");
    /* an extra protected label 3 (content type) of text */
    CHECK_OK(build_cose(prot_ok, sizeof(prot_ok), pl, pl_len, sig, 96, &b, &len));
    CHECK_RC(verify_bytes(&f, b, len), KMS_ERR_ATT_COSE_SIG);
    free(b);
    CHECK_OK(build_cose(prot_bad, sizeof(prot_bad), pl, pl_len, sig, 96, &b, &len));
    CHECK_RC(verify_bytes(&f, b, len), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("Nitro COSE protected header: CBOR decoder rejected it (invalid UTF-8 text)");
    free(b);
    /* the unprotected header {4: "é"} is not signed: the valid twin verifies */
    CHECK_OK(assemble(prot, 4, unprot_ok, sizeof(unprot_ok), pl, pl_len, sig, 0, &b, &len));
    CHECK_OK(verify_bytes(&f, b, len));
    free(b);
    CHECK_OK(assemble(prot, 4, unprot_bad, sizeof(unprot_bad), pl, pl_len, sig, 0, &b, &len));
    CHECK_RC(verify_bytes(&f, b, len), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("Nitro COSE_Sign1 document: CBOR decoder rejected it (invalid UTF-8 text)");
    free(b);
    free_fx(&f);
}

/* Encodings the decoder before accepted stay accepted with the same meaning: indefinite-length
 * COSE array, unprotected header, pcrs, cabundle and crit; integer keys in a longer head; an
 * unknown key holding nested containers. Counts of indefinite containers are checked as for
 * definite ones. */
static void test_indefinite_and_wide(void)
{
    static const uint8_t unprot_indef[] = {0xbf, 0x04, 0x41, 0x00, 0x63, 'a',
                                           'b',  'c',  0x81, 0x01, 0xff};
    static const struct {
        uint8_t prot[13];
        size_t len;
        int want;
        const char *detail;
    } hdrs[] = {
        /* {1: -35} with the key in a 2-byte head: the header check passes, the signature
         * (over the original header bytes) does not */
        {{0xa1, 0x18, 0x01, 0x38, 0x22}, 5, KMS_ERR_ATT_COSE_SIG, "signature"},
        /* {_ 1: -35, 2: [_ 1, "alg"]} */
        {{0xbf, 0x01, 0x38, 0x22, 0x02, 0x9f, 0x01, 0x63, 'a', 'l', 'g', 0xff, 0xff},
         13,
         KMS_ERR_ATT_COSE_SIG,
         "signature"},
        /* {1: -35, 2: [_ ]}: an empty indefinite crit */
        {{0xa2, 0x01, 0x38, 0x22, 0x02, 0x9f, 0xff},
         7,
         KMS_ERR_ATT_FORMAT,
         "crit header is not a non-empty array"},
        /* {1: -35, 2: [_ 4]} */
        {{0xa2, 0x01, 0x38, 0x22, 0x02, 0x9f, 0x04, 0xff},
         8,
         KMS_ERR_ATT_FORMAT,
         "does not understand"},
        /* {1: -35, 5: [[{}]]}: an unknown label with nested containers is skipped */
        {{0xa2, 0x01, 0x38, 0x22, 0x05, 0x81, 0x81, 0xa0}, 8, KMS_ERR_ATT_COSE_SIG, "signature"},
    };
    struct fx f;
    const uint8_t *prot, *pl, *sig;
    size_t pl_len, len;
    uint8_t *b = NULL;

    CHECK_OK(load_fx("nitro/attestation-prod.bin", PROD_TS_MS, &f));
    if (f.att == NULL)
        return;
    CHECK_OK(cose_parts(&f, &prot, &pl, &pl_len, &sig));

    /* the COSE array and the unprotected header of indefinite length verify */
    CHECK_OK(assemble(prot, 4, unprot_indef, sizeof(unprot_indef), pl, pl_len, sig, 1, &b, &len));
    CHECK_OK(verify_bytes(&f, b, len));
    free(b);
    /* an indefinite array of 3 or 5 elements is not COSE_Sign1 */
    CHECK_OK(assemble(prot, 4, unprot_indef, sizeof(unprot_indef), pl, pl_len, sig, 1, &b, &len));
    if (b != NULL) {
        b[len - 1] = 0xf6;                                      /* a fifth element (null) ... */
        CHECK_RC(verify_bytes(&f, b, len), KMS_ERR_ATT_FORMAT); /* ... and no break */
        CHECK_DETAIL("not valid CBOR");
        b[len] = 0xff; /* room was left by assemble */
        CHECK_RC(verify_bytes(&f, b, len + 1), KMS_ERR_ATT_FORMAT);
        CHECK_DETAIL("not a COSE_Sign1 array of 4 elements");
        b[len - 99] = 0xff; /* a break in place of the signature: 3 elements */
        CHECK_RC(verify_bytes(&f, b, len - 98), KMS_ERR_ATT_FORMAT);
        CHECK_DETAIL("not a COSE_Sign1 array of 4 elements");
    }
    free(b);

    for (size_t i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++) {
        CHECK_OK(build_cose(hdrs[i].prot, hdrs[i].len, pl, pl_len, sig, 96, &b, &len));
        CHECK_RC(verify_bytes(&f, b, len), hdrs[i].want);
        CHECK_DETAIL(hdrs[i].detail);
        free(b);
    }

    /* pcrs {_ ...} and cabundle [_ ...]: parsed as their definite twins (then the changed
     * payload fails the signature) */
    payload_splice2(&f, STR("\x64pcrs\xb0"), STR("\x64pcrs\xbf"),
                    STR("\x6b"
                        "certificate"),
                    STR("\xff\x6b"
                        "certificate"),
                    KMS_ERR_ATT_COSE_SIG, "signature");
    payload_splice2(&f,
                    STR("\x68"
                        "cabundle\x84"),
                    STR("\x68"
                        "cabundle\x9f"),
                    STR("\x6apublic_key"), STR("\xff\x6apublic_key"), KMS_ERR_ATT_COSE_SIG,
                    "signature");
    /* ... their entries and counts are checked as for definite ones: a 17th PCR (index 16) of
     * 1 byte, empty pcrs and cabundle (the original maps move to unknown keys) */
    payload_splice2(&f, STR("\x64pcrs\xb0"), STR("\x64pcrs\xbf\x10\x41\x00"),
                    STR("\x6b"
                        "certificate"),
                    STR("\xff\x6b"
                        "certificate"),
                    KMS_ERR_ATT_FORMAT, "PCR16 is 1 bytes");
    payload_splice2(&f,
                    STR("\x68"
                        "cabundle\x84"),
                    STR("\x68"
                        "cabundle\x9f\xff\x68"
                        "cabundlX\x84"),
                    NULL, 0, NULL, 0, KMS_ERR_ATT_FORMAT, "cabundle holds 0 certificates");
    payload_splice2(&f, STR("\x64pcrs\xb0"), STR("\x64pcrs\xbf\xff\x64pcrX\xb0"), NULL, 0, NULL, 0,
                    KMS_ERR_ATT_FORMAT, "pcrs holds 0 entries");
    /* an unknown key holding {"k": [_ 1, {}]} before module_id is skipped whole */
    payload_edit(&f, STR("\x69module_id"), STR("\x63zzz\xa1\x61k\x9f\x01\xa0\xff\x69module_id"),
                 KMS_ERR_ATT_COSE_SIG, "signature");
    free_fx(&f);
}

/* ---------------------------------------------------------------- simulated Nitro */

static void sim_inputs(uint8_t pcrs[3][48], uint8_t rd[64])
{
    for (int i = 0; i < 3; i++)
        memset(pcrs[i], 0x10 + i, 48);
    kms_report_data("ratls-cert", (const uint8_t *)"spki", 4, rd);
}

static int mkdtemp_dir(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/kms-test-nitro-XXXXXX");
    return mkdtemp(buf) != NULL ? 0 : KMS_ERR_IO;
}

static void rm_sim_dir(const char *dir)
{
    char p[4096];

    snprintf(p, sizeof(p), "%s/sim-nitro-root.pem", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/sim-nitro-root.key", dir);
    unlink(p);
    rmdir(dir);
}

/* A simulated document verifies when its root is configured as a simulation root (sim == 1,
 * PCRs and module_id as produced), carries the documented config and app-id event, keeps its
 * root files private and reuses them on the next call. */
static void test_sim_verifies(void)
{
    char dir[64], path[4096], want_cfg[128], hexh[65];
    uint8_t pcrs[3][48], rd[64], h[32], *root1 = NULL, *root2 = NULL;
    size_t l1 = 0, l2 = 0;
    struct kms_attestation *att = NULL, *att2 = NULL;
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    struct kms_verified v;
    struct stat st;

    sim_inputs(pcrs, rd);
    CHECK_OK(mkdtemp_dir(dir, sizeof(dir)));
    CHECK_OK(kms_sim_nitro_attest(dir, pcrs, rd, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4", &att));
    if (att == NULL || ctx == NULL)
        goto out;
    snprintf(path, sizeof(path), "%s/sim-nitro-root.pem", dir);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK_OK(kms_file_read(path, 65536, &root1, &l1));
    snprintf(path, sizeof(path), "%s/sim-nitro-root.key", dir);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    snprintf(path, sizeof(path), "%s/sim-nitro-root.pem", dir);
    CHECK_OK(kms_attest_ctx_add_root_file(ctx, KMS_ROOT_NITRO, path, 1));

    CHECK(att->mode == KMS_ATT_NITRO);
    CHECK_MEM(att->report_data, rd, 64);
    CHECK_OK(kms_nitro_verify(ctx, att->nsm_quote.p, att->nsm_quote.len, att->report_data, &v));
    CHECK(v.sim == 1);
    CHECK(strcmp(v.module_id, SIM_MODULE) == 0);
    for (int i = 0; i < 3; i++)
        CHECK_MEM(v.pcr[i], pcrs[i], 48);
    SHA256(&pcrs[0][0], 144, h);
    kms_hex_encode(h, 32, hexh);
    snprintf(want_cfg, sizeof(want_cfg), "{\"os_image_hash\":\"%s\"}", hexh);
    CHECK(att->config != NULL && strcmp(att->config, want_cfg) == 0);
    CHECK(att->n_events == 1 && strcmp(att->events[0].event, "app-id") == 0 &&
          att->events[0].payload.len == 20 && att->events[0].payload.p[0] == 0xe3 &&
          att->events[0].payload.p[19] == 0xe4);

    /* through the dispatcher as well */
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    CHECK(v.sim == 1 && v.mode == KMS_ATT_NITRO);
    kms_verified_free(&v);

    /* second call: same root on disk, no app-id event, still verifies */
    CHECK_OK(kms_sim_nitro_attest(dir, pcrs, rd, NULL, &att2));
    CHECK_OK(kms_file_read(path, 65536, &root2, &l2));
    CHECK(l1 == l2 && root1 != NULL && root2 != NULL && memcmp(root1, root2, l1) == 0);
    if (att2 != NULL) {
        CHECK(att2->n_events == 0);
        CHECK_OK(kms_nitro_verify(ctx, att2->nsm_quote.p, att2->nsm_quote.len, rd, &v));
    }
out:
    free(root1);
    free(root2);
    kms_att_free(att);
    kms_att_free(att2);
    kms_attest_ctx_free(ctx);
    rm_sim_dir(dir);
}

/* A simulated document does not verify against the AWS root alone (CHAIN); with the sim root
 * added as a non-simulation root it verifies with sim == 0 (the flag comes from the anchor). */
static void test_sim_needs_sim_root(void)
{
    char dir[64], path[4096];
    uint8_t pcrs[3][48], rd[64];
    struct kms_attestation *att = NULL;
    struct kms_attest_ctx *ctx = aws_ctx(0);
    struct kms_verified v;

    sim_inputs(pcrs, rd);
    CHECK_OK(mkdtemp_dir(dir, sizeof(dir)));
    CHECK_OK(kms_sim_nitro_attest(dir, pcrs, rd, NULL, &att));
    if (att == NULL || ctx == NULL)
        goto out;
    CHECK_RC(kms_nitro_verify(ctx, att->nsm_quote.p, att->nsm_quote.len, rd, &v),
             KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("does not verify to the pinned root");
    snprintf(path, sizeof(path), "%s/sim-nitro-root.pem", dir);
    CHECK_OK(kms_attest_ctx_add_root_file(ctx, KMS_ROOT_NITRO, path, 0));
    CHECK_OK(kms_nitro_verify(ctx, att->nsm_quote.p, att->nsm_quote.len, rd, &v));
    CHECK(v.sim == 0);
out:
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    rm_sim_dir(dir);
}

/* Simulated documents are held to the same checks: a flipped PCR byte → COSE_SIG, another
 * report_data → REPORT_DATA, user_data null → REPORT_DATA. */
static void test_sim_negatives(void)
{
    char dir[64], path[4096];
    uint8_t pcrs[3][48], rd[64], other[64];
    struct kms_attestation *att = NULL, *nul = NULL;
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    struct kms_verified v;
    size_t off;

    sim_inputs(pcrs, rd);
    CHECK_OK(mkdtemp_dir(dir, sizeof(dir)));
    CHECK_OK(kms_sim_nitro_attest(dir, pcrs, rd, NULL, &att));
    CHECK_OK(kms_sim_nitro_attest(dir, pcrs, NULL, NULL, &nul));
    if (att == NULL || nul == NULL || ctx == NULL)
        goto out;
    snprintf(path, sizeof(path), "%s/sim-nitro-root.pem", dir);
    CHECK_OK(kms_attest_ctx_add_root_file(ctx, KMS_ROOT_NITRO, path, 1));

    memcpy(other, rd, 64);
    other[0] ^= 0x01;
    CHECK_RC(kms_nitro_verify(ctx, att->nsm_quote.p, att->nsm_quote.len, other, &v),
             KMS_ERR_ATT_REPORT_DATA);
    CHECK_DETAIL("user_data does not equal");
    CHECK_RC(kms_nitro_verify(ctx, nul->nsm_quote.p, nul->nsm_quote.len, rd, &v),
             KMS_ERR_ATT_REPORT_DATA);
    CHECK_DETAIL("no user_data");

    off = find_unique(att->nsm_quote.p, att->nsm_quote.len, pcrs[1], 48);
    CHECK(off != SIZE_MAX);
    if (off != SIZE_MAX) {
        att->nsm_quote.p[off + 47] ^= 0x01;
        CHECK_RC(kms_nitro_verify(ctx, att->nsm_quote.p, att->nsm_quote.len, rd, &v),
                 KMS_ERR_ATT_COSE_SIG);
    }
out:
    kms_att_free(att);
    kms_att_free(nul);
    kms_attest_ctx_free(ctx);
    rm_sim_dir(dir);
}

/* Issues a P-256 leaf under the sim root in dir (DER in *der, caller frees). */
static int p256_leaf_under_sim_root(const char *dir, uint8_t **der, size_t *der_len)
{
    char path[4096];
    FILE *fh;
    X509 *root = NULL, *leaf = X509_new();
    EVP_PKEY *root_key = NULL, *key = EVP_EC_gen("P-256");
    int n, rc = KMS_ERR_CRYPTO;

    snprintf(path, sizeof(path), "%s/sim-nitro-root.pem", dir);
    fh = fopen(path, "r");
    if (fh != NULL) {
        root = PEM_read_X509(fh, NULL, NULL, NULL);
        fclose(fh);
    }
    snprintf(path, sizeof(path), "%s/sim-nitro-root.key", dir);
    fh = fopen(path, "r");
    if (fh != NULL) {
        root_key = PEM_read_PrivateKey(fh, NULL, NULL, NULL);
        fclose(fh);
    }
    if (root == NULL || root_key == NULL || leaf == NULL || key == NULL)
        goto out;
    X509_set_version(leaf, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(leaf), 7);
    X509_set_subject_name(leaf, X509_get_subject_name(root));
    X509_NAME_add_entry_by_txt(X509_get_subject_name(leaf), "OU", MBSTRING_ASC,
                               (const unsigned char *)"p256 leaf", -1, -1, 0);
    X509_set_issuer_name(leaf, X509_get_subject_name(root));
    X509_gmtime_adj(X509_getm_notBefore(leaf), -60);
    X509_gmtime_adj(X509_getm_notAfter(leaf), 3600);
    X509_set_pubkey(leaf, key);
    if (X509_sign(leaf, root_key, EVP_sha384()) <= 0)
        goto out;
    *der = NULL;
    n = i2d_X509(leaf, der);
    if (n > 0) {
        *der_len = (size_t)n;
        rc = 0;
    }
out:
    X509_free(root);
    X509_free(leaf);
    EVP_PKEY_free(root_key);
    EVP_PKEY_free(key);
    return rc;
}

/* The leaf key must be EC P-384 (ES384): a document whose leaf chains correctly but holds a
 * P-256 key → COSE_SIG, before any signature arithmetic. */
static void test_leaf_not_p384(void)
{
    char dir[64], path[4096];
    uint8_t pcrs[3][48], rd[64], *der = NULL, *pl_bytes = NULL, *cose = NULL;
    size_t der_len = 0, pl_len = 0, cose_len = 0, cap = 0;
    struct kms_attestation *att = NULL;
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    struct kms_verified v;
    struct cbor_load_result r;
    cbor_item_t *top = NULL, *pl = NULL, *m = NULL, *sig = NULL, *prot = NULL;
    struct cbor_pair *pairs;

    sim_inputs(pcrs, rd);
    CHECK_OK(mkdtemp_dir(dir, sizeof(dir)));
    CHECK_OK(kms_sim_nitro_attest(dir, pcrs, rd, NULL, &att));
    if (att == NULL || ctx == NULL)
        goto out;
    CHECK_OK(p256_leaf_under_sim_root(dir, &der, &der_len));
    top = cbor_load(att->nsm_quote.p, att->nsm_quote.len, &r);
    CHECK(top != NULL);
    if (top == NULL || der == NULL)
        goto out;
    prot = cbor_array_get(top, 0);
    pl = cbor_array_get(top, 2);
    sig = cbor_array_get(top, 3);
    m = cbor_load(cbor_bytestring_handle(pl), cbor_bytestring_length(pl), &r);
    CHECK(m != NULL);
    if (m == NULL)
        goto out;
    pairs = cbor_map_handle(m);
    for (size_t i = 0; i < cbor_map_size(m); i++) {
        if (cbor_string_length(pairs[i].key) == 11 &&
            memcmp(cbor_string_handle(pairs[i].key), "certificate", 11) == 0) {
            cbor_decref(&pairs[i].value);
            pairs[i].value = cbor_build_bytestring(der, der_len);
        }
    }
    pl_len = cbor_serialize_alloc(m, &pl_bytes, &cap);
    CHECK(pl_len > 0);
    CHECK_OK(build_cose(cbor_bytestring_handle(prot), cbor_bytestring_length(prot), pl_bytes,
                        pl_len, cbor_bytestring_handle(sig), 96, &cose, &cose_len));
    snprintf(path, sizeof(path), "%s/sim-nitro-root.pem", dir);
    CHECK_OK(kms_attest_ctx_add_root_file(ctx, KMS_ROOT_NITRO, path, 1));
    CHECK_RC(kms_nitro_verify(ctx, cose, cose_len, rd, &v), KMS_ERR_ATT_COSE_SIG);
    CHECK_DETAIL("not an EC P-384 key");
out:
    if (m != NULL)
        cbor_decref(&m);
    if (pl != NULL)
        cbor_decref(&pl);
    if (sig != NULL)
        cbor_decref(&sig);
    if (prot != NULL)
        cbor_decref(&prot);
    if (top != NULL)
        cbor_decref(&top);
    free(pl_bytes);
    free(cose);
    OPENSSL_free(der);
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    rm_sim_dir(dir);
}

int main(void)
{
    RUN(test_pinned_root);
    RUN(test_prod_verifies);
    RUN(test_debug_verifies);
    RUN(test_dispatch);
    RUN(test_expired);
    RUN(test_flip_signature);
    RUN(test_flip_pcr);
    RUN(test_flip_intermediate);
    RUN(test_cabundle0_ignored);
    RUN(test_flip_leaf);
    RUN(test_report_data_mismatch);
    RUN(test_no_root);
    RUN(test_cose_structure);
    RUN(test_protected_header);
    RUN(test_document_fields);
    RUN(test_hostile_cbor);
    RUN(test_text_utf8);
    RUN(test_indefinite_and_wide);
    RUN(test_sim_verifies);
    RUN(test_sim_needs_sim_root);
    RUN(test_sim_negatives);
    RUN(test_leaf_not_p384);
    TEST_MAIN_END();
}
