/*
 * TDX v4 quote verification: the real Intel-signed fixtures verify offline to the pinned Intel
 * SGX Root CA; each check (quote signature, QE report signature, QE binding, PCK chain,
 * validity) has a negative test that flips exactly its input; full TDX verification checks the
 * TCB policy, RTMR3 replay and report_data (TCB cases use quotes this test signs itself with
 * its own test PCK hierarchy, pinned as a simulation root).
 */
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/events.h"
#include "attest/tdx.h"
#include "common/buf.h"
#include "common/file.h"
#include "common/hex.h"
#include "test.h"

/* 2026-06-01: inside the validity of both fixture PCK leaves. */
#define T_VALID ((time_t)1780272000)
/* 2034-01-01: after both PCK leaves (and the platform CA) expired. */
#define T_EXPIRED ((time_t)2019686400)
/* 2024-01-01: before the quote-v4.bin PCK leaf was issued. */
#define T_EARLY ((time_t)1704067200)
/* inside the validity of the dcap-qvl sample quotes' PCK leaves */
#define T_V5 ((time_t)1771419600)

#define SEPT_VE_DISABLE 0x10 /* td_attributes byte 3 */

static struct kms_attest_ctx *intel_ctx(time_t t)
{
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    X509 *root = kms_attest_intel_root();

    if (ctx == NULL || root == NULL || kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, root, 0) < 0)
        exit(2);
    X509_free(root);
    kms_attest_ctx_set_time(ctx, t);
    return ctx;
}

/* Verifies a copy of quote with byte `off` xor-ed with 0x01. */
static int verify_flipped(const struct kms_attest_ctx *ctx, const uint8_t *q, size_t len,
                          size_t off)
{
    uint8_t *c = malloc(len);
    struct kms_verified v;
    int rc;

    memcpy(c, q, len);
    c[off] ^= 0x01;
    rc = kms_tdx_quote_verify(ctx, c, len, &v);
    if (rc == 0)
        kms_verified_free(&v);
    free(c);
    return rc;
}

/* The compiled-in root is the Intel SGX Root CA and equals the committed PEM file. */
static void test_intel_root(void)
{
    X509 *root = kms_attest_intel_root();
    uint8_t md[32];
    unsigned int n = 0;
    char hex[65];
    char path[4096];
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    const char *src = getenv("KMS_SOURCE_DIR");

    CHECK(root != NULL);
    if (root == NULL)
        return;
    CHECK(X509_digest(root, EVP_sha256(), md, &n) == 1 && n == 32);
    kms_hex_encode(md, 32, hex);
    CHECK(strcmp(hex, "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3") == 0);
    snprintf(path, sizeof(path), "%s/attest/roots/intel-sgx-root-ca.pem", src != NULL ? src : ".");
    CHECK_OK(kms_attest_ctx_add_root_file(ctx, KMS_ROOT_TDX, path, 0));
    kms_attest_ctx_free(ctx);
    X509_free(root);
}

/* The bare fixture quote parses with the documented layout and verifies to the Intel root;
 * the PPID comes out of the PCK certificate and the TD report is copied. */
static void test_fixture_quote_verifies(void)
{
    size_t len;
    uint8_t *q = kms_test_load_fixture("tdx/quote-v4.bin", &len);
    struct kms_attest_ctx *ctx = intel_ctx(T_VALID);
    struct kms_tdx_quote pq;
    struct kms_verified v;

    CHECK_OK(kms_tdx_quote_parse(q, len, &pq));
    CHECK(pq.version == 4 && pq.att_key_type == 2 && pq.tee_type == 0x81);
    CHECK(pq.signed_len == 632 && pq.qe_auth_len == 32);
    CHECK(pq.pck_chain_len > 0 && memcmp(pq.pck_chain, "-----BEGIN", 10) == 0);
    CHECK_OK(kms_tdx_quote_verify(ctx, q, len, &v));
    CHECK(v.sim == 0);
    CHECK(v.ppid_len == 16);
    CHECK(memcmp(v.td.mr_td, pq.report.mr_td, 48) == 0);
    CHECK(memcmp(v.td.rtmr[3], pq.report.rtmr[3], 48) == 0);
    CHECK(memcmp(v.td.report_data, q + 568, 64) == 0);
    kms_verified_free(&v);
    kms_attest_ctx_free(ctx);
    free(q);
}

/* The quote inside attestation-tdx.bin (zero padded) verifies, and so does the whole
 * attestation (TCB policy, RTMR3 replay, report_data). */
static void test_fixture_attestation_verifies(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tdx/attestation-tdx.bin", &len);
    struct kms_attestation *att = NULL;
    struct kms_attest_ctx *ctx = intel_ctx(T_VALID);
    struct kms_verified v;
    char hex[97];

    CHECK_OK(kms_att_decode(p, len, &att));
    if (att == NULL)
        goto out;
    CHECK_OK(kms_tdx_quote_verify(ctx, att->tdx_quote.p, att->tdx_quote.len, &v));
    kms_verified_free(&v);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    CHECK(v.mode == KMS_ATT_TDX && v.sim == 0 && v.ppid_len == 16);
    kms_hex_encode(v.td.mr_td, 48, hex);
    CHECK(strncmp(hex, "e53236d44a074bc78e784cdfa1a2c858a5f6b53afc1b60d8f079662314978b64", 64) ==
          0);
    kms_verified_free(&v);
out:
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    free(p);
}

/* quote-report.json: the legacy pair (quote + JSON event log) builds an attestation that
 * passes full verification. */
static void test_legacy_pair_verifies(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tdx/quote-report.json", &len);
    json_t *root = json_loadb((const char *)p, len, 0, NULL);
    const char *qhex = json_string_value(json_object_get(root, "quote"));
    const char *log = json_string_value(json_object_get(root, "event_log"));
    uint8_t *q = NULL;
    size_t qlen = 0;
    struct kms_attestation *att = NULL;
    struct kms_attest_ctx *ctx = intel_ctx(T_VALID);
    struct kms_verified v;

    CHECK(qhex != NULL && log != NULL);
    if (qhex == NULL || log == NULL)
        goto out;
    CHECK_OK(kms_hex_decode(qhex, &q, &qlen));
    CHECK_OK(kms_att_from_legacy(q, qlen, log, strlen(log), &att));
    if (att == NULL)
        goto out;
    CHECK(att->n_tdx_events == 28);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
out:
    kms_att_free(att);
    free(q);
    json_decref(root);
    kms_attest_ctx_free(ctx);
    free(p);
}

/* Each signature input, flipped by one bit, fails with its own error code. */
static void test_flips(void)
{
    size_t len;
    uint8_t *q = kms_test_load_fixture("tdx/quote-v4.bin", &len);
    struct kms_attest_ctx *ctx = intel_ctx(T_VALID);
    struct kms_tdx_quote pq;
    size_t sig_off;
    size_t qe_off;
    const char *end1;
    const char *end2;

    CHECK_OK(kms_tdx_quote_parse(q, len, &pq));
    sig_off = (size_t)(pq.sig - q);
    qe_off = (size_t)(pq.qe_report - q);

    CHECK_RC(verify_flipped(ctx, q, len, 30), KMS_ERR_ATT_QUOTE_SIG); /* header user_data */
    CHECK_DETAIL("attestation key");
    CHECK_RC(verify_flipped(ctx, q, len, 184 + 5), KMS_ERR_ATT_QUOTE_SIG); /* mr_td */
    CHECK_RC(verify_flipped(ctx, q, len, 568), KMS_ERR_ATT_QUOTE_SIG);     /* report_data */
    CHECK_RC(verify_flipped(ctx, q, len, sig_off + 3), KMS_ERR_ATT_QUOTE_SIG);
    CHECK_RC(verify_flipped(ctx, q, len, sig_off + 40), KMS_ERR_ATT_QUOTE_SIG);
    CHECK_RC(verify_flipped(ctx, q, len, (size_t)(pq.attest_key - q) + 20), KMS_ERR_ATT_QUOTE_SIG);
    CHECK_RC(verify_flipped(ctx, q, len, qe_off + 10), KMS_ERR_ATT_QE_SIG);
    CHECK_DETAIL("PCK certificate key");
    CHECK_RC(verify_flipped(ctx, q, len, qe_off + 320), KMS_ERR_ATT_QE_SIG); /* QE report_data */
    CHECK_RC(verify_flipped(ctx, q, len, (size_t)(pq.qe_report_sig - q) + 7), KMS_ERR_ATT_QE_SIG);
    CHECK_RC(verify_flipped(ctx, q, len, (size_t)(pq.qe_auth - q) + 4), KMS_ERR_ATT_QE_BINDING);
    CHECK_DETAIL("QE report data");

    /* a base64 character near the end of the intermediate (PCK Platform CA) certificate:
     * its signature by the root no longer verifies; the leaf key is untouched */
    end1 = strstr((const char *)pq.pck_chain, "-----END CERTIFICATE-----");
    end2 = end1 != NULL ? strstr(end1 + 1, "-----END CERTIFICATE-----") : NULL;
    CHECK(end2 != NULL);
    if (end2 != NULL) {
        size_t off = (size_t)((const uint8_t *)end2 - q) - 10;
        uint8_t *c = malloc(len);
        struct kms_verified v;

        memcpy(c, q, len);
        c[off] = c[off] == 'A' ? 'B' : 'A';
        CHECK_RC(kms_tdx_quote_verify(ctx, c, len, &v), KMS_ERR_ATT_CHAIN);
        CHECK_DETAIL("PCK chain");
        free(c);
    }
    kms_attest_ctx_free(ctx);
    free(q);
}

/* Chain anchoring and validity: no root, a wrong root, the Intel root under another kind,
 * and verification times outside the PCK leaf's validity. */
static void test_chain_policy(void)
{
    size_t len;
    uint8_t *q = kms_test_load_fixture("tdx/quote-v4.bin", &len);
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    struct kms_verified v;
    X509 *root = kms_attest_intel_root();

    kms_attest_ctx_set_time(ctx, T_VALID);
    CHECK_RC(kms_tdx_quote_verify(ctx, q, len, &v), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("no trust anchor");
    CHECK_OK(kms_attest_ctx_add_root(ctx, KMS_ROOT_NITRO, root, 0));
    CHECK_RC(kms_tdx_quote_verify(ctx, q, len, &v), KMS_ERR_ATT_CHAIN);
    kms_attest_ctx_free(ctx);

    ctx = kms_attest_ctx_new();
    kms_attest_ctx_set_time(ctx, T_VALID);
    CHECK_OK(kms_attest_ctx_add_root_file(
        ctx, KMS_ROOT_TDX, kms_test_fixture("roots/aws-nitro-enclaves-root-g1.pem"), 0));
    CHECK_RC(kms_tdx_quote_verify(ctx, q, len, &v), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("pinned root");
    kms_attest_ctx_free(ctx);

    ctx = intel_ctx(T_EXPIRED);
    CHECK_RC(kms_tdx_quote_verify(ctx, q, len, &v), KMS_ERR_ATT_EXPIRED);
    CHECK_DETAIL("not valid at the verification time");
    kms_attest_ctx_set_time(ctx, T_EARLY);
    CHECK_RC(kms_tdx_quote_verify(ctx, q, len, &v), KMS_ERR_ATT_EXPIRED);
    kms_attest_ctx_free(ctx);
    X509_free(root);
    free(q);
}

/* Layout checks of the parser: version, key type, TEE type, padding, truncation. */
static void test_parse_errors(void)
{
    size_t len;
    uint8_t *q = kms_test_load_fixture("tdx/quote-v4.bin", &len);
    uint8_t *c = malloc(len + 8);
    struct kms_tdx_quote pq;
    size_t used;

    memcpy(c, q, len);
    c[0] = 3;
    CHECK_RC(kms_tdx_quote_parse(c, len, &pq), KMS_ERR_ATT_FORMAT);
    c[0] = 6;
    CHECK_RC(kms_tdx_quote_parse(c, len, &pq), KMS_ERR_ATT_UNSUPPORTED);
    CHECK_DETAIL("version 6");
    c[0] = 5; /* a v4 layout read as v5: bytes 48-49 are not a TD body type */
    CHECK_RC(kms_tdx_quote_parse(c, len, &pq), KMS_ERR_ATT_UNSUPPORTED);
    CHECK_DETAIL("body type");
    c[0] = 4;
    c[2] = 3;
    CHECK_RC(kms_tdx_quote_parse(c, len, &pq), KMS_ERR_ATT_UNSUPPORTED);
    c[2] = 2;
    c[4] = 0;
    CHECK_RC(kms_tdx_quote_parse(c, len, &pq), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("not TDX");
    c[4] = 0x81;
    memset(c + len, 0, 8);
    CHECK_OK(kms_tdx_quote_parse(c, len + 8, &pq)); /* zero padding is fine */
    c[len + 5] = 1;
    /* and so are other trailing bytes: dcap-qvl ignores what follows the authentication data */
    CHECK_OK(kms_tdx_quote_parse(c, len + 8, &pq));
    /* every cut inside the used part fails; cuts inside the zero padding are fine */
    CHECK_OK(kms_tdx_quote_parse(q, len, &pq));
    used = (size_t)(pq.pck_chain - q) + pq.pck_chain_len;
    CHECK(used == 4936 && used < len);
    for (size_t n = 0; n < used; n += 13)
        CHECK_RC(kms_tdx_quote_parse(q, n, &pq), KMS_ERR_ATT_FORMAT);
    CHECK_RC(kms_tdx_quote_parse(q, used - 1, &pq), KMS_ERR_ATT_FORMAT);
    CHECK_OK(kms_tdx_quote_parse(q, used, &pq));
    free(c);
    free(q);
}

/* Full TDX verification: runtime events must replay to RTMR3, report_data must match, and
 * the binding to a TLS key is checked by kms_attest_verify_bound. */
static void test_full_verify_negatives(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tdx/attestation-tdx.bin", &len);
    struct kms_attestation *att = NULL;
    struct kms_attest_ctx *ctx = intel_ctx(T_VALID);
    struct kms_verified v;
    static const uint8_t spki[] = {0x30, 0x03, 0x02, 0x01, 0x00};

    CHECK_OK(kms_att_decode(p, len, &att));
    if (att == NULL)
        goto out;
    att->events[1].payload.p[0] ^= 1;
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_RTMR);
    CHECK_DETAIL("RTMR3");
    att->events[1].payload.p[0] ^= 1;
    CHECK_OK(kms_att_add_runtime_event(att, "extra", NULL, 0));
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_RTMR);
    att->n_events--;
    free(att->events[att->n_events].event);
    free(att->events[att->n_events].payload.p);
    att->report_data[63] ^= 1;
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_REPORT_DATA);
    CHECK_DETAIL("report_data");
    att->report_data[63] ^= 1;
    CHECK_RC(kms_attest_verify_bound(ctx, att, spki, sizeof(spki), &v), KMS_ERR_ATT_REPORT_DATA);
    CHECK_DETAIL("not bound to the certificate key");
    att->tdx_quote.p[200] ^= 1;
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_QUOTE_SIG);
    att->tdx_quote.p[200] ^= 1;
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
out:
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    free(p);
}

/* GCP mode runs every TDX check before the TPM part: a runtime-event or report_data mismatch
 * against the TDX quote fails with the TDX error, whatever the TPM quote holds. */
static void test_gcp_runs_tdx_checks_first(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tdx/attestation-tdx.bin", &len);
    struct kms_attestation *att = NULL;
    struct kms_attest_ctx *ctx = intel_ctx(T_VALID);
    struct kms_verified v;

    CHECK_OK(kms_att_decode(p, len, &att));
    if (att == NULL)
        goto out;
    att->mode = KMS_ATT_GCP_TDX;
    att->events[2].payload.p[0] ^= 1;
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_RTMR);
    CHECK_DETAIL("RTMR3");
    att->events[2].payload.p[0] ^= 1;
    att->report_data[0] ^= 1;
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_REPORT_DATA);
    att->report_data[0] ^= 1;
    att->tdx_quote.p[600] ^= 1;
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_QUOTE_SIG);
    att->tdx_quote.p[600] ^= 1;
    /* the TDX part passes; the empty TPM quote must then fail (never verify) */
    CHECK(kms_attest_verify(ctx, att, &v) < 0);
out:
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    free(p);
}

/* ------------------------------------------------------------ a test PCK hierarchy */

struct forge {
    EVP_PKEY *root_key;
    X509 *root;
    EVP_PKEY *pck_key;
    X509 *pck;
    EVP_PKEY *ak;
    uint8_t ak_xy[64];
};

static EVP_PKEY *p256_key(void)
{
    return EVP_EC_gen("P-256");
}

static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, int ca,
                       const uint8_t *ppid)
{
    X509 *c = X509_new();
    X509_NAME *n = X509_NAME_new();
    X509V3_CTX v3;
    X509_EXTENSION *ext;

    X509_set_version(c, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(c), ca ? 1 : 2);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(c, n);
    X509_set_issuer_name(c, issuer != NULL ? X509_get_subject_name(issuer) : n);
    X509_time_adj_ex(X509_getm_notBefore(c), 0, 0, &(time_t){T_VALID - 86400});
    X509_time_adj_ex(X509_getm_notAfter(c), 0, 0, &(time_t){T_VALID + 86400});
    X509_set_pubkey(c, key);
    X509V3_set_ctx(&v3, issuer != NULL ? issuer : c, c, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
                              ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    X509_add_ext(c, ext, -1);
    X509_EXTENSION_free(ext);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage,
                              ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    X509_add_ext(c, ext, -1);
    X509_EXTENSION_free(ext);
    if (ppid != NULL) {
        /* SEQUENCE { SEQUENCE { OID 1.2.840.113741.1.13.1.1, OCTET STRING(16) } } */
        uint8_t der[2 + 2 + 12 + 2 + 16] = {0x30, 32,   0x30, 30,   0x06, 10,   0x2a, 0x86, 0x48,
                                            0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01, 0x01, 0x04, 16};
        ASN1_OBJECT *obj = OBJ_txt2obj("1.2.840.113741.1.13.1", 1);
        ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();

        memcpy(der + 18, ppid, 16);
        ASN1_OCTET_STRING_set(os, der, sizeof(der));
        ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, os);
        X509_add_ext(c, ext, -1);
        X509_EXTENSION_free(ext);
        ASN1_OCTET_STRING_free(os);
        ASN1_OBJECT_free(obj);
    }
    X509_sign(c, issuer_key, EVP_sha256());
    X509_NAME_free(n);
    return c;
}

static void forge_init(struct forge *f, const uint8_t *ppid)
{
    uint8_t pt[65];
    size_t n = 0;

    f->root_key = p256_key();
    f->pck_key = p256_key();
    f->ak = p256_key();
    f->root = make_cert("test TDX root", f->root_key, NULL, f->root_key, 1, NULL);
    f->pck = make_cert("test PCK", f->pck_key, f->root, f->root_key, 0, ppid);
    EVP_PKEY_get_octet_string_param(f->ak, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &n);
    if (n != 65)
        exit(2);
    memcpy(f->ak_xy, pt + 1, 64);
}

static void forge_free(struct forge *f)
{
    EVP_PKEY_free(f->root_key);
    EVP_PKEY_free(f->pck_key);
    EVP_PKEY_free(f->ak);
    X509_free(f->root);
    X509_free(f->pck);
}

/* Raw r||s ECDSA P-256 signature over SHA-256(msg). */
static void sign_raw(EVP_PKEY *k, const uint8_t *msg, size_t len, uint8_t out[64])
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    uint8_t der[80];
    size_t dl = sizeof(der);
    const uint8_t *dp = der;
    ECDSA_SIG *s;

    EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, k);
    EVP_DigestSign(m, der, &dl, msg, len);
    s = d2i_ECDSA_SIG(NULL, &dp, (long)dl);
    BN_bn2binpad(ECDSA_SIG_get0_r(s), out, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(s), out + 32, 32);
    ECDSA_SIG_free(s);
    EVP_MD_CTX_free(m);
}

static void put_report(struct kms_buf *b, const struct kms_tdx_report *t)
{
    int rc = 0;

    rc |= kms_buf_put(b, t->tee_tcb_svn, 16);
    rc |= kms_buf_put(b, t->mr_seam, 48);
    rc |= kms_buf_put(b, t->mr_signer_seam, 48);
    rc |= kms_buf_put(b, t->seam_attributes, 8);
    rc |= kms_buf_put(b, t->td_attributes, 8);
    rc |= kms_buf_put(b, t->xfam, 8);
    rc |= kms_buf_put(b, t->mr_td, 48);
    rc |= kms_buf_put(b, t->mr_config_id, 48);
    rc |= kms_buf_put(b, t->mr_owner, 48);
    rc |= kms_buf_put(b, t->mr_owner_config, 48);
    for (int i = 0; i < 4; i++)
        rc |= kms_buf_put(b, t->rtmr[i], 48);
    rc |= kms_buf_put(b, t->report_data, 64);
    if (rc != 0)
        exit(2);
}

/* A v4 quote over `report` signed by the forge's attestation key, QE and PCK. */
/* A quote of the given version (4, or 5 with body type 2 or 3; for 3, mr_service_td may be NULL
 * = zero) signed by the test hierarchy. */
static uint8_t *forge_quote_v(const struct forge *f, const struct kms_tdx_report *report,
                              int version, int body_type, const uint8_t *mr_service_td, size_t *len)
{
    struct kms_buf b = {0};
    uint8_t qe[384] = {0};
    uint8_t qe_auth[32];
    uint8_t sig[64];
    uint8_t qe_sig[64];
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem;
    long pem_len;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    uint8_t *quote;
    int rc = 0;

    for (int i = 0; i < 32; i++)
        qe_auth[i] = (uint8_t)i;
    PEM_write_bio_X509(bio, f->pck);
    PEM_write_bio_X509(bio, f->root);
    pem_len = BIO_get_mem_data(bio, &pem);
    EVP_DigestInit_ex(m, EVP_sha256(), NULL);
    EVP_DigestUpdate(m, f->ak_xy, 64);
    EVP_DigestUpdate(m, qe_auth, 32);
    EVP_DigestFinal_ex(m, qe + 320, NULL);
    EVP_MD_CTX_free(m);
    sign_raw(f->pck_key, qe, sizeof(qe), qe_sig);

    rc |= kms_buf_put_u16le(&b, (uint16_t)version);
    rc |= kms_buf_put_u16le(&b, 2);
    rc |= kms_buf_put_u32le(&b, 0x81);
    rc |= kms_buf_put_u16le(&b, 0);
    rc |= kms_buf_put_u16le(&b, 0);
    rc |= kms_buf_put(&b, "\x93\x9a\x72\x33\xf7\x9c\x4c\xa9\x94\x0a\x0d\xb3\x95\x7f\x06\x07", 16);
    rc |= kms_buf_put(&b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 20);
    if (version == 5) {
        rc |= kms_buf_put_u16le(&b, (uint16_t)body_type);
        rc |= kms_buf_put_u32le(&b, body_type == 3 ? KMS_TDX_BODY15_LEN : KMS_TDX_BODY_LEN);
    }
    put_report(&b, report);
    if (version == 5 && body_type == 3) {
        static const uint8_t zero[48];

        rc |= kms_buf_put(&b, "\x07\x01\x03\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
        rc |= kms_buf_put(&b, mr_service_td != NULL ? mr_service_td : zero, 48);
    }
    sign_raw(f->ak, b.data, b.len, sig);
    rc |= kms_buf_put_u32le(&b, (uint32_t)(64 + 64 + 6 + 384 + 64 + 2 + 32 + 6 + pem_len));
    rc |= kms_buf_put(&b, sig, 64);
    rc |= kms_buf_put(&b, f->ak_xy, 64);
    rc |= kms_buf_put_u16le(&b, 6);
    rc |= kms_buf_put_u32le(&b, (uint32_t)(384 + 64 + 2 + 32 + 6 + pem_len));
    rc |= kms_buf_put(&b, qe, 384);
    rc |= kms_buf_put(&b, qe_sig, 64);
    rc |= kms_buf_put_u16le(&b, 32);
    rc |= kms_buf_put(&b, qe_auth, 32);
    rc |= kms_buf_put_u16le(&b, 5);
    rc |= kms_buf_put_u32le(&b, (uint32_t)pem_len);
    rc |= kms_buf_put(&b, pem, (size_t)pem_len);
    BIO_free(bio);
    if (rc != 0)
        exit(2);
    quote = kms_buf_steal(&b, len);
    return quote;
}

static uint8_t *forge_quote(const struct forge *f, const struct kms_tdx_report *report, size_t *len)
{
    return forge_quote_v(f, report, 4, 2, NULL, len);
}

/* A TDX attestation around a forged quote whose RTMR3 and report_data match. */
static struct kms_attestation *forge_att(const struct forge *f, struct kms_tdx_report *r,
                                         const uint8_t report_data[64])
{
    struct kms_attestation *att = calloc(1, sizeof(*att));

    att->mode = KMS_ATT_TDX;
    att->config = strdup("");
    if (kms_att_add_runtime_event(att, "app-id", (const uint8_t *)"0123456789abcdefghij", 20) < 0)
        exit(2);
    kms_att_replay(1, att->events, att->n_events, NULL, r->rtmr[3]);
    memcpy(r->report_data, report_data, 64);
    memcpy(att->report_data, report_data, 64);
    att->tdx_quote.p = forge_quote(f, r, &att->tdx_quote.len);
    return att;
}

/* A quote from a simulation root verifies with sim = 1 and yields the embedded PPID; a debug
 * TD or a non-zero mr_signer_seam fails the TCB policy; the RA-TLS binding passes when
 * report_data = SHA-512("ratls-cert:" || spki). */
static void test_forged_policy(void)
{
    static const uint8_t ppid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    static const uint8_t spki[] = "test-spki-bytes";
    struct forge f;
    struct kms_tdx_report r;
    struct kms_attestation *att;
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    struct kms_verified v;
    uint8_t rd[64];

    forge_init(&f, ppid);
    kms_attest_ctx_set_time(ctx, T_VALID);
    CHECK_OK(kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, f.root, 1));
    kms_report_data("ratls-cert", spki, sizeof(spki), rd);

    memset(&r, 0, sizeof(r));
    memset(r.mr_td, 0x11, 48);
    r.td_attributes[3] = SEPT_VE_DISABLE;
    att = forge_att(&f, &r, rd);
    CHECK_OK(kms_attest_verify_bound(ctx, att, spki, sizeof(spki), &v));
    CHECK(v.sim == 1);
    CHECK(v.ppid_len == 16 && memcmp(v.ppid, ppid, 16) == 0);
    CHECK(memcmp(v.td.mr_td, r.mr_td, 48) == 0);
    kms_verified_free(&v);
    /* the Intel root does not anchor the test hierarchy */
    {
        struct kms_attest_ctx *ictx = intel_ctx(T_VALID);

        CHECK_RC(kms_attest_verify(ictx, att, &v), KMS_ERR_ATT_CHAIN);
        kms_attest_ctx_free(ictx);
    }
    kms_att_free(att);

    memset(&r, 0, sizeof(r));
    r.td_attributes[0] = 1;
    r.td_attributes[3] = SEPT_VE_DISABLE;
    att = forge_att(&f, &r, rd);
    CHECK_RC(kms_tdx_quote_verify(ctx, att->tdx_quote.p, att->tdx_quote.len, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("Debug mode is enabled");
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("Debug mode is enabled");
    kms_att_free(att);

    memset(&r, 0, sizeof(r));
    r.td_attributes[3] = SEPT_VE_DISABLE;
    r.mr_signer_seam[47] = 1;
    att = forge_att(&f, &r, rd);
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("mr_signer_seam");
    kms_att_free(att);

    kms_attest_ctx_free(ctx);
    forge_free(&f);
}

/* A PCK leaf without the SGX extension gives an empty PPID (device_id = sha256("")). */
static void test_forged_no_ppid(void)
{
    struct forge f;
    struct kms_tdx_report r;
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    struct kms_verified v;
    uint8_t *q;
    size_t len;

    forge_init(&f, NULL);
    kms_attest_ctx_set_time(ctx, T_VALID);
    CHECK_OK(kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, f.root, 0));
    memset(&r, 0, sizeof(r));
    r.td_attributes[3] = SEPT_VE_DISABLE;
    q = forge_quote(&f, &r, &len);
    CHECK_OK(kms_tdx_quote_verify(ctx, q, len, &v));
    CHECK(v.ppid_len == 0 && v.sim == 0);
    kms_verified_free(&v);
    free(q);
    kms_attest_ctx_free(ctx);
    forge_free(&f);
}

/* dcap-qvl's TD-attribute rules: every single bit of td_attributes flipped on a quote that
 * verifies (SEPT_VE_DISABLE set, as real guests) gives exactly the reference's verdict: TUD.DEBUG
 * "Debug mode is enabled", SEPT_VE_DISABLE cleared "SEPT_VE_DISABLE is not enabled", PKS, KL and
 * bit 39 accepted (dcap-qvl's OTHER mask leaves bit 39 out and takes in bit 63, PERFMON), every
 * other bit "Reserved bits in TD attributes are set". */
static void test_td_attributes(void)
{
    struct forge f;
    struct kms_tdx_report r;
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    struct kms_verified v;
    uint8_t *q;
    size_t len;

    forge_init(&f, NULL);
    kms_attest_ctx_set_time(ctx, T_VALID);
    CHECK_OK(kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, f.root, 1));
    memset(&r, 0, sizeof(r));
    r.td_attributes[3] = SEPT_VE_DISABLE;
    q = forge_quote(&f, &r, &len);
    CHECK_OK(kms_tdx_quote_verify(ctx, q, len, &v));
    kms_verified_free(&v);
    free(q);
    for (int bit = 0; bit < 64; bit++) {
        const char *want = "Reserved bits in TD attributes are set";

        if (bit == 0)
            want = "Debug mode is enabled";
        else if (bit == 28)
            want = "SEPT_VE_DISABLE is not enabled";
        else if (bit == 30 || bit == 31 || bit == 39)
            want = NULL;
        r.td_attributes[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        q = forge_quote(&f, &r, &len);
        if (want == NULL) {
            CHECK_OK(kms_tdx_quote_verify(ctx, q, len, &v));
            kms_verified_free(&v);
        } else {
            CHECK_RC(kms_tdx_quote_verify(ctx, q, len, &v), KMS_ERR_ATT_TCB);
            CHECK_DETAIL(want);
            if (strcmp(kms_err_detail(), want) != 0)
                fprintf(stderr, "  td_attributes bit %d: %s\n", bit, kms_err_detail());
        }
        free(q);
        r.td_attributes[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    kms_attest_ctx_free(ctx);
    forge_free(&f);
}

/* v5 quotes made by the format's rules under the test hierarchy: TD report 1.0 and 1.5 bodies
 * verify; a non-zero MR service TD (1.5) is refused as dcap-qvl does; a body size that is not
 * the body type's, or a body type that is not a TD report, is refused. */
static void test_v5_forged(void)
{
    struct forge f;
    struct kms_tdx_report r;
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    struct kms_verified v;
    struct kms_tdx_quote pq;
    uint8_t svc[48] = {0};
    uint8_t *q;
    size_t len;

    forge_init(&f, NULL);
    kms_attest_ctx_set_time(ctx, T_VALID);
    CHECK_OK(kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, f.root, 1));
    memset(&r, 0, sizeof(r));
    r.td_attributes[3] = SEPT_VE_DISABLE;
    memset(r.mr_td, 0x33, 48);
    for (int bt = 2; bt <= 3; bt++) {
        q = forge_quote_v(&f, &r, 5, bt, NULL, &len);
        CHECK_OK(kms_tdx_quote_parse(q, len, &pq));
        CHECK(pq.version == 5 && pq.body_type == bt);
        CHECK(pq.signed_len == 48 + 6 + (bt == 3 ? 648u : 584u));
        CHECK_OK(kms_tdx_quote_verify(ctx, q, len, &v));
        CHECK(memcmp(v.td.mr_td, r.mr_td, 48) == 0);
        kms_verified_free(&v);
        q[50] ^= 0x01; /* body size */
        CHECK_RC(kms_tdx_quote_parse(q, len, &pq), KMS_ERR_ATT_FORMAT);
        CHECK_DETAIL("has size");
        q[50] ^= 0x01;
        q[48] = 1; /* SGX enclave report body */
        CHECK_RC(kms_tdx_quote_parse(q, len, &pq), KMS_ERR_ATT_UNSUPPORTED);
        CHECK_DETAIL("body type 1");
        free(q);
    }
    svc[0] = 0x80;
    q = forge_quote_v(&f, &r, 5, 3, svc, &len);
    CHECK_RC(kms_tdx_quote_verify(ctx, q, len, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("Invalid MR service TD");
    free(q);
    kms_attest_ctx_free(ctx);
    forge_free(&f);
}

/* The real v5 quote (TD report 1.5 body) from dcap-qvl's samples parses and verifies to the
 * Intel root; its v5-only fields are signed: flipping the body type, body size, tee_tcb_svn2 or
 * mr_service_td fails. */
static void test_v5_fixture(void)
{
    size_t len;
    uint8_t *q = kms_test_load_fixture("tdx/dcap-qvl-quote-v5.bin", &len);
    struct kms_attest_ctx *ctx = intel_ctx(T_V5);
    struct kms_tdx_quote pq;
    struct kms_verified v;

    CHECK_OK(kms_tdx_quote_parse(q, len, &pq));
    CHECK(pq.version == 5 && pq.body_type == 3 && pq.signed_len == 702);
    CHECK(pq.tee_tcb_svn2[0] == 0x0d && pq.report.tee_tcb_svn[0] == 0x07);
    CHECK(pq.report.td_attributes[3] == SEPT_VE_DISABLE);
    CHECK_OK(kms_tdx_quote_verify(ctx, q, len, &v));
    CHECK(v.sim == 0 && v.ppid_len == 16);
    kms_verified_free(&v);
    CHECK_RC(verify_flipped(ctx, q, len, 48), KMS_ERR_ATT_FORMAT);              /* type 3 -> 2 */
    CHECK_RC(verify_flipped(ctx, q, len, 51), KMS_ERR_ATT_FORMAT);              /* size */
    CHECK_RC(verify_flipped(ctx, q, len, 54 + 584), KMS_ERR_ATT_QUOTE_SIG);     /* tee_tcb_svn2 */
    CHECK_RC(verify_flipped(ctx, q, len, 54 + 600 + 9), KMS_ERR_ATT_QUOTE_SIG); /* mr_service_td */
    CHECK_RC(verify_flipped(ctx, q, len, 54 + 568), KMS_ERR_ATT_QUOTE_SIG);     /* report_data */
    kms_attest_ctx_free(ctx);
    free(q);
}

/* Offset of the n-th (1-based) occurrence of s in q, or 0. */
static size_t nth(const uint8_t *q, size_t len, const char *s, int n)
{
    size_t m = strlen(s);

    for (size_t i = 0; i + m <= len; i++) {
        if (memcmp(q + i, s, m) == 0 && --n == 0)
            return i;
    }
    return 0;
}

/* Strict certificate data: every PEM block of the PCK chain must parse, so a corrupted copy of
 * the root (the third block, which chain building does not need) is refused, as are a block
 * without its END line and mismatched labels; unsigned bytes after the PCK chain, after the QE
 * certification data and after the quote are ignored, as dcap-qvl does. */
static void test_pem_strict(void)
{
    size_t len;
    uint8_t *q = kms_test_load_fixture("tdx/quote-v4.bin", &len);
    struct kms_attest_ctx *ctx = intel_ctx(T_VALID);
    struct kms_tdx_quote pq;
    struct kms_verified v;
    uint8_t *c = malloc(len + 16);
    size_t b3 = nth(q, len, "-----BEGIN CERTIFICATE-----", 3);
    size_t e3 = nth(q, len, "-----END CERTIFICATE-----", 3);
    size_t used;

    CHECK(b3 > 0 && e3 > b3 + 200);
    CHECK_OK(kms_tdx_quote_parse(q, len, &pq));
    used = (size_t)(pq.pck_chain - q) + pq.pck_chain_len;

    memcpy(c, q, len);
    c[b3 + 100] = '*'; /* not base64 */
    CHECK_RC(kms_tdx_quote_verify(ctx, c, len, &v), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("PEM block 3");
    memcpy(c, q, len);
    c[b3 + 120] = '='; /* padding inside the data */
    CHECK_RC(kms_tdx_quote_verify(ctx, c, len, &v), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("PEM block 3");
    memcpy(c, q, len);
    c[e3 + 9] = 'X'; /* END XERTIFICATE */
    CHECK_RC(kms_tdx_quote_verify(ctx, c, len, &v), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("mismatched");
    memcpy(c, q, len);
    c[e3 + 2] = 'x'; /* no END line */
    CHECK_RC(kms_tdx_quote_verify(ctx, c, len, &v), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("no END line");
    /* 5 bytes after the PCK chain inside the QE certification data, whose length and the
     * authentication data's length grow by 5: ignored */
    {
        size_t auth_off = pq.signed_len;
        size_t cert_len_off = auth_off + 4 + 64 + 64 + 2;
        uint32_t a = (uint32_t)q[auth_off] | (uint32_t)q[auth_off + 1] << 8 |
                     (uint32_t)q[auth_off + 2] << 16 | (uint32_t)q[auth_off + 3] << 24;
        uint32_t l = (uint32_t)q[cert_len_off] | (uint32_t)q[cert_len_off + 1] << 8 |
                     (uint32_t)q[cert_len_off + 2] << 16 | (uint32_t)q[cert_len_off + 3] << 24;

        memset(c, 0, len + 16);
        memcpy(c, q, used);
        memset(c + used, 0xab, 5);
        a += 5;
        l += 5;
        for (int i = 0; i < 4; i++) {
            c[auth_off + (size_t)i] = (uint8_t)(a >> (8 * i));
            c[cert_len_off + (size_t)i] = (uint8_t)(l >> (8 * i));
        }
        CHECK_OK(kms_tdx_quote_verify(ctx, c, used + 5, &v));
        kms_verified_free(&v);
        memset(c + used + 5, 0xcd, 7); /* and bytes after the quote */
        CHECK_OK(kms_tdx_quote_verify(ctx, c, used + 12, &v));
        kms_verified_free(&v);
    }
    free(c);
    kms_attest_ctx_free(ctx);
    free(q);
}

int main(void)
{
    RUN(test_intel_root);
    RUN(test_fixture_quote_verifies);
    RUN(test_fixture_attestation_verifies);
    RUN(test_legacy_pair_verifies);
    RUN(test_flips);
    RUN(test_chain_policy);
    RUN(test_parse_errors);
    RUN(test_full_verify_negatives);
    RUN(test_gcp_runs_tdx_checks_first);
    RUN(test_forged_policy);
    RUN(test_forged_no_ppid);
    RUN(test_td_attributes);
    RUN(test_v5_forged);
    RUN(test_v5_fixture);
    RUN(test_pem_strict);
    TEST_MAIN_END();
}
