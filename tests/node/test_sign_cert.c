/*
 * SignCert: the CSR SCALE codec (reference golden vectors, round trips, malformed input) and
 * the whole flow on an in-process node (simulated TEE, dev or webhook policy): V2 and V1
 * requests yield a chain that OpenSSL verifies to the root CA with the reference's extensions,
 * and every check refuses with its own error when exactly its input is flipped.
 */
#include <curl/curl.h>
#include <microhttpd.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "attest/events.h"
#include "attest/sim.h"
#include "attest/tdx.h"
#include "common/hex.h"
#include "common/crypto/crypto.h"
#include "common/crypto/csr.h"
#include "node/node.h"
#include "node/sign_cert.h"
#include "test.h"

/* ---------------------------------------------------------------- codec */

/* The reference's attestation of test_csr_v2_scale_encoding_stable: DstackTdx with the given
 * quote, no events, zero report_data, empty config. */
static struct kms_attestation *empty_tdx_att(const uint8_t *quote, size_t qlen)
{
    struct kms_attestation *a = calloc(1, sizeof(*a));

    a->mode = KMS_ATT_TDX;
    a->tdx_quote.p = malloc(qlen > 0 ? qlen : 1);
    if (qlen > 0)
        memcpy(a->tdx_quote.p, quote, qlen);
    a->tdx_quote.len = qlen;
    a->config = strdup("");
    return a;
}

static void golden_csr(struct kms_csr *c, int ext_quote, const uint8_t *quote, size_t qlen)
{
    static const uint8_t pk[3] = {1, 2, 3};

    memset(c, 0, sizeof(*c));
    c->version = 2;
    c->confirm = strdup(KMS_CSR_CONFIRM);
    c->pubkey.p = malloc(3);
    memcpy(c->pubkey.p, pk, 3);
    c->pubkey.len = 3;
    c->config.subject = strdup("test.example.com");
    c->config.usage_server_auth = 1;
    c->config.ext_quote = ext_quote;
    c->att = empty_tdx_att(quote, qlen);
}

/* Both golden vectors of ra-tls/src/cert.rs encode byte for byte, and decode back to the same
 * fields and the same bytes. */
static void test_golden_vectors(void)
{
    /* test_csr_v2_scale_encoding_stable */
    static const char *want1 =
        "44706c65617365207369676e20636572743a0c0102030040746573742e6578616d706c652e636f6d0001"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000";
    /* test_csr_v2_scale_encoding_stable_with_tdx_quote */
    static const char *want2 =
        "44706c65617365207369676e20636572743a0c0102030040746573742e6578616d706c652e636f6d0001"
        "000100000000000409000000000000000000000000000000000000000000000000000000000000000000"
        "00000000000000000000000000000000000000000000000000000000000000000000";
    static const uint8_t q9[1] = {9};
    struct kms_csr c, d;
    uint8_t *enc = NULL, *enc2 = NULL;
    size_t len = 0, len2 = 0;
    char *hex;

    for (int v = 0; v < 2; v++) {
        golden_csr(&c, v, v ? q9 : NULL, v ? 1 : 0);
        CHECK_OK(kms_csr_encode(&c, &enc, &len));
        hex = kms_hex_dup(enc, len, 0);
        CHECK(hex != NULL && strcmp(hex, v ? want2 : want1) == 0);
        free(hex);
        CHECK_OK(kms_csr_decode(2, enc, len, &d));
        CHECK(d.confirm != NULL && strcmp(d.confirm, KMS_CSR_CONFIRM) == 0);
        CHECK(d.pubkey.len == 3 && d.pubkey.p[2] == 3);
        CHECK(d.config.org_name == NULL && d.config.n_san == 0);
        CHECK(strcmp(d.config.subject, "test.example.com") == 0);
        CHECK(d.config.usage_server_auth == 1 && d.config.usage_client_auth == 0);
        CHECK(d.config.ext_quote == v && d.config.ext_app_info == 0);
        CHECK(!d.config.has_not_before && !d.config.has_not_after);
        CHECK(d.att != NULL && d.att->mode == KMS_ATT_TDX && d.att->tdx_quote.len == (size_t)v);
        CHECK_OK(kms_csr_encode(&d, &enc2, &len2));
        CHECK(len2 == len && memcmp(enc, enc2, len) == 0);
        free(enc);
        free(enc2);
        kms_csr_free(&c);
        kms_csr_free(&d);
    }
}

static char *sdup(const char *s)
{
    return strdup(s);
}

/* Every V2 field (Some org, SANs, all flags, both validity overrides) and every V1 field
 * survive encode → decode → encode unchanged. */
static void test_roundtrip_all_fields(void)
{
    struct kms_csr c, d;
    uint8_t *e1 = NULL, *e2 = NULL;
    size_t l1 = 0, l2 = 0;

    for (int ver = 1; ver <= 2; ver++) {
        golden_csr(&c, 1, (const uint8_t *)"\x01\x02", 2);
        c.version = ver;
        c.config.org_name = sdup("Org ünïcode");
        c.config.n_san = 2;
        c.config.san = calloc(2, sizeof(char *));
        c.config.san[0] = sdup("a.example");
        c.config.san[1] = sdup("10.0.0.1");
        c.config.usage_client_auth = 1;
        if (ver == 2) {
            c.config.ext_app_info = 1;
            c.config.has_not_before = 1;
            c.config.not_before = 1700000000;
            c.config.has_not_after = 1;
            c.config.not_after = 0x0102030405060708ULL;
        } else {
            c.quote.p = malloc(300);
            memset(c.quote.p, 0x5a, 300); /* > 63: two-byte compact */
            c.quote.len = 300;
            c.event_log.p = (uint8_t *)sdup("[]");
            c.event_log.len = 2;
        }
        CHECK_OK(kms_csr_encode(&c, &e1, &l1));
        CHECK_OK(kms_csr_decode(ver, e1, l1, &d));
        CHECK(d.config.org_name != NULL && strcmp(d.config.org_name, "Org ünïcode") == 0);
        CHECK(d.config.n_san == 2 && strcmp(d.config.san[1], "10.0.0.1") == 0);
        CHECK(d.config.usage_client_auth == 1 && d.config.ext_quote == 1);
        if (ver == 2) {
            CHECK(d.config.ext_app_info == 1 && d.config.has_not_before &&
                  d.config.not_before == 1700000000 && d.config.has_not_after &&
                  d.config.not_after == 0x0102030405060708ULL);
        } else {
            CHECK(d.quote.len == 300 && d.quote.p[299] == 0x5a && d.event_log.len == 2);
            CHECK(d.att == NULL);
        }
        CHECK_OK(kms_csr_encode(&d, &e2, &l2));
        CHECK(l1 == l2 && memcmp(e1, e2, l1) == 0);
        free(e1);
        free(e2);
        kms_csr_free(&c);
        kms_csr_free(&d);
    }
}

/* Malformed SCALE is refused with the field and offset: trailing byte, truncation, a bool
 * of 2, an Option tag of 2, a non-canonical compact, non-UTF-8 and NUL in strings, too many
 * SANs, an unknown api_version. */
static void test_decode_malformed(void)
{
    struct kms_csr c, d;
    uint8_t *e = NULL, *m = NULL;
    size_t l = 0;
    /* offsets in the golden V2 layout: 0 confirm len, 18 pubkey len, 22 org tag,
     * 23 subject len, 40 SAN count, 41 server_auth */
    golden_csr(&c, 0, NULL, 0);
    CHECK_OK(kms_csr_encode(&c, &e, &l));
    m = malloc(l + 1);

    memcpy(m, e, l);
    m[l] = 0;
    CHECK_RC(kms_csr_decode(2, m, l + 1, &d), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("Failed to parse csr attestation");
    CHECK_RC(kms_csr_decode(2, e, 30, &d), KMS_ERR_PARSE);
    CHECK_DETAIL("truncated string");

    memcpy(m, e, l);
    m[41] = 2;
    CHECK_RC(kms_csr_decode(2, m, l, &d), KMS_ERR_PARSE);
    CHECK_DETAIL("bool is neither 0 nor 1 at offset 42");

    memcpy(m, e, l);
    m[22] = 2;
    CHECK_RC(kms_csr_decode(2, m, l, &d), KMS_ERR_PARSE);
    CHECK_DETAIL("option tag is neither 0 nor 1");

    /* the confirm length 17 written as a two-byte compact */
    {
        uint8_t nc[8] = {(17 << 2) | 1, 0};

        CHECK_RC(kms_csr_decode(2, nc, 2, &d), KMS_ERR_PARSE);
        CHECK_DETAIL("non-canonical compact length");
    }

    memcpy(m, e, l);
    m[24] = 0xff; /* first byte of the subject */
    CHECK_RC(kms_csr_decode(2, m, l, &d), KMS_ERR_PARSE);
    CHECK_DETAIL("subject is not UTF-8 without NUL");
    m[24] = 0;
    CHECK_RC(kms_csr_decode(2, m, l, &d), KMS_ERR_PARSE);
    CHECK_DETAIL("subject is not UTF-8 without NUL");

    memcpy(m, e, l);
    m[40] = (uint8_t)((KMS_CSR_MAX_SAN + 1) << 2 | 1);
    m[41] = (uint8_t)((KMS_CSR_MAX_SAN + 1) >> 6);
    CHECK_RC(kms_csr_decode(2, m, l, &d), KMS_ERR_TOOBIG);
    CHECK_DETAIL("subject_alt_names");

    CHECK_RC(kms_csr_decode(3, e, l, &d), KMS_ERR_INVAL);
    CHECK_DETAIL("Unsupported API version: 3");

    /* V1 bytes with a trailing byte */
    c.version = 1;
    free(e);
    CHECK_OK(kms_csr_encode(&c, &e, &l));
    free(m);
    m = malloc(l + 1);
    memcpy(m, e, l);
    m[l] = 7;
    CHECK_OK(kms_csr_decode(1, m, l, &d));
    kms_csr_free(&d);
    CHECK_RC(kms_csr_decode(1, m, l + 1, &d), KMS_ERR_PARSE);
    CHECK_DETAIL("1 trailing bytes");
    free(m);
    free(e);
    kms_csr_free(&c);
}

/* ---------------------------------------------------------------- in-process node */

static struct kms_node g_node;
static struct kms_sim *g_sim;
static struct kms_auth *g_dev_auth;
static char g_tmp[128];

static int node_setup(void)
{
    struct kms_auth_cfg acfg;
    struct kms_cert_params p;
    char dir[200];
    int rc = 0;

    memset(&g_node, 0, sizeof(g_node));
    snprintf(dir, sizeof(dir), "%s/sim", g_tmp);
    KMS_GUARD(kms_sim_open(dir, &g_sim));
    g_node.actx = kms_attest_ctx_new();
    KMS_GUARD_PTR(g_node.actx);
    KMS_GUARD(kms_attest_ctx_add_root(g_node.actx, KMS_ROOT_TDX, kms_sim_root(g_sim), 1));
    memset(&acfg, 0, sizeof(acfg));
    acfg.type = "dev";
    KMS_GUARD(kms_auth_new(&acfg, &g_dev_auth));
    g_node.auth = g_dev_auth;
    pthread_mutex_init(&g_node.lock, NULL);
    g_node.state = KMS_STATE_SERVING;
    /* osimage: the apps here claim an image (OS_HASH_HEX) without a measurement manifest; the
     * OS-image check has its own tests (test_os_image, test_e2e_image). */
    g_node.cfg.insecure_skip_os_image_check = 1;
    KMS_GUARD(kms_p256_generate(&g_node.keys.root_ca_key));
    memset(&p, 0, sizeof(p));
    p.org = "Dstack";
    p.cn = "Dstack KMS CA";
    p.is_ca = 1;
    p.path_len = 1;
    KMS_GUARD(kms_cert_issue(&p, g_node.keys.root_ca_key, g_node.keys.root_ca_key, NULL,
                             &g_node.keys.root_ca_cert));
    KMS_GUARD(kms_cert_to_pem(g_node.keys.root_ca_cert, &g_node.keys.root_ca_pem));
out:
    return rc;
}

static void node_teardown(void)
{
    EVP_PKEY_free(g_node.keys.root_ca_key);
    X509_free(g_node.keys.root_ca_cert);
    free(g_node.keys.root_ca_pem);
    kms_attest_ctx_free(g_node.actx);
    kms_auth_free(g_dev_auth);
    pthread_mutex_destroy(&g_node.lock);
    kms_sim_free(g_sim);
}

/* ---------------------------------------------------------------- the app side */

static const uint8_t APP_ID[20] = {0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa,
                                   0xab, 0xac, 0xad, 0xae, 0xaf, 0xb0, 0xb1, 0xb2, 0xb3, 0xb4};
static const uint8_t INST_ID[20] = {0x11, 0x12, 0x13};
static const uint8_t COMPOSE[32] = {0xc0, 0x5e};
static const uint8_t KP[4] = {'k', 'p', '!', '!'};
#define OS_HASH_HEX "abababababababababababababababababababababababababababababababab"

enum tamper { T_NONE, T_UNBOUND, T_QUOTE };

/* A simulated app attestation bound to spki; the key-provider event comes after boot-mr-done,
 * so boot-time and runtime measurements differ. */
static struct kms_attestation *app_att(const uint8_t *spki, size_t spki_len, enum tamper t)
{
    struct kms_runtime_event ev[6];
    struct kms_attestation *att = NULL;
    uint8_t rd[64];

    kms_app_boot_events(ev, (const uint8_t *)APP_ID, (const uint8_t *)COMPOSE,
                        (const uint8_t *)INST_ID, 20);
    ev[5].event = (char *)"key-provider";
    ev[5].payload.p = (uint8_t *)KP;
    ev[5].payload.len = 4;
    kms_report_data("ratls-cert", spki, spki_len, rd);
    if (t == T_UNBOUND)
        rd[0] ^= 1;
    if (kms_sim_attest(g_sim, NULL, rd, ev, 6, "{\"os_image_hash\":\"" OS_HASH_HEX "\"}", &att) < 0)
        return NULL;
    if (t == T_QUOTE)
        att->tdx_quote.p[48 + 150] ^= 1; /* a byte of MRTD: the quote signature breaks */
    return att;
}

struct req {
    uint8_t *csr;
    size_t csr_len;
    uint8_t *sig;
    size_t sig_len;
    uint8_t *spki;
    size_t spki_len;
    EVP_PKEY *key;
};

static void req_free(struct req *r)
{
    free(r->csr);
    free(r->sig);
    free(r->spki);
    EVP_PKEY_free(r->key);
    memset(r, 0, sizeof(*r));
}

enum flip { F_NONE, F_SIG_OTHER_BYTES, F_CONFIRM };

/* Builds a signed CSR of version ver for a fresh P-256 key (or the given key). */
static int make_req(int ver, enum tamper t, enum flip f, int ext_app_info, struct req *r)
{
    struct kms_csr c;
    struct kms_attestation *att = NULL;
    char *evlog = NULL;
    int rc = 0;

    memset(&c, 0, sizeof(c));
    if (r->key == NULL)
        KMS_GUARD(kms_p256_generate(&r->key));
    KMS_GUARD(kms_pkey_spki_der(r->key, &r->spki, &r->spki_len));
    att = app_att(r->spki, r->spki_len, t);
    KMS_GUARD_PTR(att);
    c.version = ver;
    c.confirm = sdup(f == F_CONFIRM ? "please sign cert!" : KMS_CSR_CONFIRM);
    c.pubkey.p = malloc(r->spki_len);
    memcpy(c.pubkey.p, r->spki, r->spki_len);
    c.pubkey.len = r->spki_len;
    c.config.org_name = sdup("Acme");
    c.config.subject = sdup("app.example.com");
    c.config.n_san = 2;
    c.config.san = calloc(2, sizeof(char *));
    c.config.san[0] = sdup("app.example.com");
    c.config.san[1] = sdup("203.0.113.7");
    c.config.usage_server_auth = 1;
    c.config.usage_client_auth = 1;
    c.config.ext_quote = 1;
    if (ver == 2) {
        c.config.ext_app_info = ext_app_info;
        c.config.has_not_after = 1;
        c.config.not_after = (uint64_t)time(NULL) + 86400;
        c.att = att;
        att = NULL;
    } else {
        KMS_GUARD(kms_att_event_log_json(att, &evlog));
        c.quote.p = malloc(att->tdx_quote.len);
        memcpy(c.quote.p, att->tdx_quote.p, att->tdx_quote.len);
        c.quote.len = att->tdx_quote.len;
        c.event_log.p = (uint8_t *)evlog;
        c.event_log.len = strlen(evlog);
        evlog = NULL;
    }
    KMS_GUARD(kms_csr_encode(&c, &r->csr, &r->csr_len));
    if (f == F_SIG_OTHER_BYTES) {
        /* sign the CSR with a different subject, send the original bytes */
        uint8_t *other = NULL;
        size_t ol = 0;

        free(c.config.subject);
        c.config.subject = sdup("evil.example.com");
        KMS_GUARD(kms_csr_encode(&c, &other, &ol));
        rc = kms_csr_sign_bytes(r->key, other, ol, &r->sig, &r->sig_len);
        free(other);
        KMS_GUARD(rc);
    } else {
        KMS_GUARD(kms_csr_sign_bytes(r->key, r->csr, r->csr_len, &r->sig, &r->sig_len));
    }
out:
    free(evlog);
    kms_att_free(att);
    kms_csr_free(&c);
    return rc;
}

static int run(int ver, const struct req *r, struct kms_sign_cert_result *out)
{
    return kms_sign_cert_run(&g_node, ver, r->csr, r->csr_len, r->sig, r->sig_len, NULL, out);
}

/* ---------------------------------------------------------------- chain checks */

static X509 *pem_cert(const char *pem)
{
    X509 *c = NULL;

    return kms_cert_from_pem(pem, &c) == 0 ? c : NULL;
}

static int ext_equals(X509 *c, const char *oid, const void *want, size_t len)
{
    uint8_t *got = NULL;
    size_t n = 0;
    int eq;

    if (kms_ratls_get_ext(c, oid, &got, &n) < 0)
        return 0;
    eq = n == len && (len == 0 || memcmp(got, want, len) == 0);
    free(got);
    return eq;
}

static int has_ext(X509 *c, const char *oid)
{
    ASN1_OBJECT *o = OBJ_txt2obj(oid, 1);
    int i = X509_get_ext_by_OBJ(c, o, -1);

    ASN1_OBJECT_free(o);
    return i >= 0;
}

static int ext_index(X509 *c, const char *oid)
{
    ASN1_OBJECT *o = OBJ_txt2obj(oid, 1);
    int i = X509_get_ext_by_OBJ(c, o, -1);

    ASN1_OBJECT_free(o);
    return i;
}

static int name_entry_is(X509 *c, int nid, const char *want)
{
    char buf[256];

    return X509_NAME_get_text_by_NID(X509_get_subject_name(c), nid, buf, sizeof(buf)) > 0 &&
           strcmp(buf, want) == 0;
}

/* OpenSSL verifies leaf → App CA → root (trusted), at the current time. */
static int verify_chain(X509 *leaf, X509 *app_ca, X509 *root)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    int ok;

    X509_STORE_add_cert(st, root);
    sk_X509_push(untrusted, app_ca);
    X509_STORE_CTX_init(ctx, st, leaf, untrusted);
    ok = X509_verify_cert(ctx) == 1;
    if (!ok)
        fprintf(stderr, "  chain: %s\n",
                X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    X509_STORE_free(st);
    return ok;
}

static void spki_of(X509 *c, uint8_t **der, size_t *len)
{
    int n;

    *der = NULL;
    n = i2d_PUBKEY(X509_get0_pubkey(c), der);
    *len = n > 0 ? (size_t)n : 0;
}

/* Common checks of a successful chain: OpenSSL verification, App CA shape, leaf fields. */
static void check_chain(const struct kms_sign_cert_result *res, const struct req *r,
                        int expect_not_after)
{
    X509 *leaf = pem_cert(res->chain[0]);
    X509 *ca = pem_cert(res->chain[1]);
    X509 *root = pem_cert(res->chain[2]);
    EVP_PKEY *want_ca = NULL;
    uint8_t *spki = NULL;
    size_t spki_len = 0;
    BASIC_CONSTRAINTS *bc = NULL;
    EXTENDED_KEY_USAGE *eku = NULL;
    GENERAL_NAMES *san = NULL;

    CHECK(leaf != NULL && ca != NULL && root != NULL);
    if (leaf == NULL || ca == NULL || root == NULL)
        goto out;
    CHECK(strcmp(res->chain[2], g_node.keys.root_ca_pem) == 0);
    CHECK(verify_chain(leaf, ca, root));
    /* App CA: derived key, O=Dstack, CN, CA pathLen 0, app_id, app:ca */
    CHECK_OK(kms_derive_app_ca_key(g_node.keys.root_ca_key, APP_ID, 20, &want_ca));
    CHECK(want_ca != NULL && EVP_PKEY_eq(X509_get0_pubkey(ca), want_ca) == 1);
    CHECK(name_entry_is(ca, NID_organizationName, "Dstack"));
    CHECK(name_entry_is(ca, NID_commonName, "Dstack App CA"));
    bc = X509_get_ext_d2i(ca, NID_basic_constraints, NULL, NULL);
    CHECK(bc != NULL && bc->ca && bc->pathlen != NULL && ASN1_INTEGER_get(bc->pathlen) == 0);
    CHECK(ext_equals(ca, KMS_OID_APP_ID, APP_ID, 20));
    CHECK(ext_equals(ca, KMS_OID_CERT_USAGE, "app:ca", 6));
    /* leaf: CSR key, subject, SANs, EKU, app id, usage, attestation, validity */
    spki_of(leaf, &spki, &spki_len);
    CHECK(spki_len == r->spki_len && memcmp(spki, r->spki, spki_len) == 0);
    CHECK(name_entry_is(leaf, NID_organizationName, "Acme"));
    CHECK(name_entry_is(leaf, NID_commonName, "app.example.com"));
    san = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    CHECK(san != NULL && sk_GENERAL_NAME_num(san) == 2 &&
          sk_GENERAL_NAME_value(san, 0)->type == GEN_DNS &&
          sk_GENERAL_NAME_value(san, 1)->type == GEN_IPADD);
    eku = X509_get_ext_d2i(leaf, NID_ext_key_usage, NULL, NULL);
    CHECK(eku != NULL && sk_ASN1_OBJECT_num(eku) == 2 &&
          OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)) == NID_server_auth &&
          OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 1)) == NID_client_auth);
    CHECK(ext_equals(leaf, KMS_OID_APP_ID, APP_ID, 20));
    CHECK(ext_equals(leaf, KMS_OID_CERT_USAGE, "app:custom", 10));
    CHECK(has_ext(leaf, KMS_OID_TDX_QUOTE) && has_ext(leaf, KMS_OID_EVENT_LOG));
    if (expect_not_after) {
        int day, sec;

        CHECK(ASN1_TIME_diff(&day, &sec, NULL, X509_get0_notAfter(leaf)) == 1);
        CHECK(day == 0 || (day == 1 && sec <= 0)); /* about now + 1 day */
    }
out:
    BASIC_CONSTRAINTS_free(bc);
    EXTENDED_KEY_USAGE_free(eku);
    GENERAL_NAMES_free(san);
    EVP_PKEY_free(want_ca);
    OPENSSL_free(spki);
    X509_free(leaf);
    X509_free(ca);
    X509_free(root);
}

/* V2 CSR with ext_quote and ext_app_info: the chain verifies to the root; the app_info ext is
 * the msgpack of AppInfo computed here from the quote (runtime MRs, key-provider included,
 * device_id = sha256("")), placed between app_id and usage; the App CA key is stable. */
static void test_v2_ok(void)
{
    struct req r;
    struct kms_sign_cert_result res, res2;
    X509 *leaf = NULL, *ca1 = NULL, *ca2 = NULL;

    memset(&r, 0, sizeof(r));
    memset(&res, 0, sizeof(res));
    memset(&res2, 0, sizeof(res2));
    CHECK_OK(make_req(2, T_NONE, F_NONE, 1, &r));
    CHECK_OK(run(2, &r, &res));
    if (res.chain[0] == NULL)
        goto out;
    check_chain(&res, &r, 1);
    /* the BootInfo used for policy is boot-time: no key-provider */
    CHECK(res.bi.app_id.len == 20 && memcmp(res.bi.app_id.p, APP_ID, 20) == 0);
    CHECK(res.bi.key_provider_info.len == 0);
    leaf = pem_cert(res.chain[0]);
    {
        struct kms_tdx_quote q;
        struct kms_attestation *att = NULL;
        uint8_t kp_hash[32], rtmr3[48], mr_sys[32], mr_agg[32], dev[32], want[400];
        size_t n = 0;
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned int l;

        /* recompute what the reference's decode_app_info(false) gives for this CSR */
        struct kms_csr d;

        CHECK_OK(kms_csr_decode(2, r.csr, r.csr_len, &d));
        att = d.att;
        CHECK_OK(kms_tdx_quote_parse(att->tdx_quote.p, att->tdx_quote.len, &q));
        SHA256(KP, 4, kp_hash);
        kms_att_replay(1, att->events, att->n_events, NULL, rtmr3);
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        EVP_DigestUpdate(md, q.report.mr_td, 48);
        EVP_DigestUpdate(md, q.report.rtmr[0], 48);
        EVP_DigestUpdate(md, q.report.rtmr[1], 48);
        EVP_DigestUpdate(md, q.report.rtmr[2], 48);
        EVP_DigestUpdate(md, kp_hash, 32);
        EVP_DigestFinal_ex(md, mr_sys, &l);
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        EVP_DigestUpdate(md, q.report.mr_td, 48);
        EVP_DigestUpdate(md, q.report.rtmr[0], 48);
        EVP_DigestUpdate(md, q.report.rtmr[1], 48);
        EVP_DigestUpdate(md, q.report.rtmr[2], 48);
        EVP_DigestUpdate(md, rtmr3, 48); /* sim mr_config_id/owner are zero: 5 parts */
        EVP_DigestFinal_ex(md, mr_agg, &l);
        EVP_MD_CTX_free(md);
        SHA256((const unsigned char *)"", 0, dev);
        want[n++] = 0x98;
#define BIN(p, len)                                                                                \
    do {                                                                                           \
        want[n++] = 0xc4;                                                                          \
        want[n++] = (uint8_t)(len);                                                                \
        memcpy(want + n, (p), (len));                                                              \
        n += (len);                                                                                \
    } while (0)
        BIN(APP_ID, 20);
        BIN(COMPOSE, 32);
        BIN(INST_ID, 20);
        BIN(dev, 32);
        BIN(mr_sys, 32);
        BIN(mr_agg, 32);
        {
            uint8_t os[32];

            memset(os, 0xab, 32);
            BIN(os, 32);
        }
        BIN(KP, 4);
#undef BIN
        CHECK(ext_equals(leaf, KMS_OID_APP_INFO, want, n));
        CHECK(ext_index(leaf, KMS_OID_APP_ID) < ext_index(leaf, KMS_OID_APP_INFO));
        CHECK(ext_index(leaf, KMS_OID_APP_INFO) < ext_index(leaf, KMS_OID_CERT_USAGE));
        CHECK(ext_index(leaf, KMS_OID_CERT_USAGE) < ext_index(leaf, KMS_OID_TDX_QUOTE));
        kms_csr_free(&d);
    }
    /* second call: new App CA certificate, same App CA key */
    CHECK_OK(run(2, &r, &res2));
    ca1 = pem_cert(res.chain[1]);
    ca2 = pem_cert(res2.chain[1]);
    CHECK(ca1 != NULL && ca2 != NULL &&
          EVP_PKEY_eq(X509_get0_pubkey(ca1), X509_get0_pubkey(ca2)) == 1);
    CHECK(strcmp(res.chain[1], res2.chain[1]) != 0); /* fresh serial */
out:
    X509_free(leaf);
    X509_free(ca1);
    X509_free(ca2);
    kms_sign_cert_result_clear(&res);
    kms_sign_cert_result_clear(&res2);
    req_free(&r);
}

/* ext_quote / ext_app_info off and no validity override: no attestation or app_info ext,
 * not_after about now + 3650 days. */
static void test_v2_no_extensions(void)
{
    struct req r;
    struct kms_sign_cert_result res;
    struct kms_csr c;
    X509 *leaf = NULL;

    memset(&r, 0, sizeof(r));
    memset(&res, 0, sizeof(res));
    CHECK_OK(make_req(2, T_NONE, F_NONE, 0, &r));
    /* re-encode with ext_quote 0 and no not_after, re-sign */
    CHECK_OK(kms_csr_decode(2, r.csr, r.csr_len, &c));
    c.config.ext_quote = 0;
    c.config.has_not_after = 0;
    free(r.csr);
    free(r.sig);
    CHECK_OK(kms_csr_encode(&c, &r.csr, &r.csr_len));
    CHECK_OK(kms_csr_sign_bytes(r.key, r.csr, r.csr_len, &r.sig, &r.sig_len));
    kms_csr_free(&c);
    CHECK_OK(run(2, &r, &res));
    leaf = res.chain[0] != NULL ? pem_cert(res.chain[0]) : NULL;
    CHECK(leaf != NULL);
    if (leaf != NULL) {
        int day = 0, sec = 0;

        CHECK(!has_ext(leaf, KMS_OID_TDX_QUOTE) && !has_ext(leaf, KMS_OID_ATTESTATION));
        CHECK(!has_ext(leaf, KMS_OID_APP_INFO));
        CHECK(ext_equals(leaf, KMS_OID_CERT_USAGE, "app:custom", 10));
        CHECK(ASN1_TIME_diff(&day, &sec, NULL, X509_get0_notAfter(leaf)) == 1);
        CHECK(day >= 3649 && day <= 3650);
    }
    X509_free(leaf);
    kms_sign_cert_result_clear(&res);
    req_free(&r);
}

/* A V1 CSR (raw quote + JSON event log) is upgraded to a DstackTdx attestation and signed. */
static void test_v1_ok(void)
{
    struct req r;
    struct kms_sign_cert_result res;

    memset(&r, 0, sizeof(r));
    memset(&res, 0, sizeof(res));
    CHECK_OK(make_req(1, T_NONE, F_NONE, 0, &r));
    CHECK_OK(run(1, &r, &res));
    if (res.chain[0] != NULL)
        check_chain(&res, &r, 0);
    /* the same V1 bytes announced as version 2 do not parse */
    kms_sign_cert_result_clear(&res);
    CHECK(run(2, &r, &res) < 0);
    kms_sign_cert_result_clear(&res);
    req_free(&r);
}

/* api_version other than 1 or 2 is refused before anything else. */
static void test_bad_version(void)
{
    struct req r;
    struct kms_sign_cert_result res;

    memset(&r, 0, sizeof(r));
    CHECK_OK(make_req(2, T_NONE, F_NONE, 0, &r));
    CHECK_RC(run(3, &r, &res), KMS_ERR_INVAL);
    CHECK_DETAIL("Unsupported API version: 3");
    CHECK_RC(run(0, &r, &res), KMS_ERR_INVAL);
    CHECK_DETAIL("Unsupported API version: 0");
    CHECK(res.chain[0] == NULL);
    req_free(&r);
}

/* A signature over other bytes (same key) is refused. */
static void test_signature_other_bytes(void)
{
    struct req r;
    struct kms_sign_cert_result res;

    memset(&r, 0, sizeof(r));
    CHECK_OK(make_req(2, T_NONE, F_SIG_OTHER_BYTES, 0, &r));
    CHECK_RC(run(2, &r, &res), KMS_ERR_VERIFY);
    CHECK_DETAIL("Failed to verify csr signature: Invalid signature");
    req_free(&r);
    /* V1 too */
    CHECK_OK(make_req(1, T_NONE, F_SIG_OTHER_BYTES, 0, &r));
    CHECK_RC(run(1, &r, &res), KMS_ERR_VERIFY);
    CHECK_DETAIL("Invalid signature");
    req_free(&r);
}

/* A CSR pubkey that is not EC (Ed25519), or EC on another curve (P-384), is refused. */
static void test_non_ec_pubkey(void)
{
    static const char *algs[2] = {"ED25519", "EC"};

    for (int i = 0; i < 2; i++) {
        struct req r;
        struct kms_sign_cert_result res;
        EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_from_name(NULL, algs[i], NULL);

        memset(&r, 0, sizeof(r));
        CHECK(kc != NULL && EVP_PKEY_keygen_init(kc) == 1);
        if (i == 1)
            CHECK(EVP_PKEY_CTX_set_group_name(kc, "secp384r1") == 1);
        CHECK(EVP_PKEY_keygen(kc, &r.key) == 1);
        EVP_PKEY_CTX_free(kc);
        if (i == 0) {
            /* Ed25519 signs without a digest: build the CSR, sign it directly */
            EVP_MD_CTX *md = EVP_MD_CTX_new();

            /* make_req encodes the CSR, then its ECDSA-SHA256 signing fails for Ed25519 */
            CHECK_RC(make_req(2, T_NONE, F_NONE, 0, &r), KMS_ERR_CRYPTO);
            CHECK(r.csr != NULL);
            free(r.sig);
            r.sig = malloc(64);
            r.sig_len = 64;
            CHECK(EVP_DigestSignInit(md, NULL, NULL, NULL, r.key) == 1);
            CHECK(EVP_DigestSign(md, r.sig, &r.sig_len, r.csr, r.csr_len) == 1);
            EVP_MD_CTX_free(md);
        } else {
            CHECK_OK(make_req(2, T_NONE, F_NONE, 0, &r));
        }
        CHECK_RC(run(2, &r, &res), KMS_ERR_INVAL);
        CHECK_DETAIL("Failed to verify csr signature: Unsupported algorithm");
        req_free(&r);
    }
}

/* A correctly signed CSR whose confirm word is not "please sign cert:" is refused. */
static void test_wrong_confirm(void)
{
    struct req r;
    struct kms_sign_cert_result res;

    memset(&r, 0, sizeof(r));
    CHECK_OK(make_req(2, T_NONE, F_CONFIRM, 0, &r));
    CHECK_RC(run(2, &r, &res), KMS_ERR_INVAL);
    CHECK_DETAIL("Invalid confirm word");
    req_free(&r);
}

/* An attestation whose report_data is not SHA-512("ratls-cert:" || CSR pubkey) is refused;
 * so is one bound to another key that signed nothing. */
static void test_unbound_attestation(void)
{
    struct req r;
    struct kms_sign_cert_result res;

    memset(&r, 0, sizeof(r));
    CHECK_OK(make_req(2, T_UNBOUND, F_NONE, 0, &r));
    CHECK_RC(run(2, &r, &res), KMS_ERR_ATT_REPORT_DATA);
    CHECK_DETAIL("Quote verification failed: attestation report_data is not bound");
    req_free(&r);
}

/* A flipped byte in the quote body breaks its signature. */
static void test_tampered_quote(void)
{
    struct req r;
    struct kms_sign_cert_result res;

    memset(&r, 0, sizeof(r));
    CHECK_OK(make_req(2, T_QUOTE, F_NONE, 0, &r));
    CHECK_RC(run(2, &r, &res), KMS_ERR_ATT_QUOTE_SIG);
    CHECK_DETAIL("Quote verification failed: ");
    req_free(&r);
    CHECK_OK(make_req(1, T_QUOTE, F_NONE, 0, &r));
    CHECK_RC(run(1, &r, &res), KMS_ERR_ATT_QUOTE_SIG);
    req_free(&r);
}

/* ---- policy: a real auth-api webhook that denies bootAuth/app */

static volatile int hook_deny;
static volatile int hook_app_calls;

static enum MHD_Result hook(void *cls, struct MHD_Connection *c, const char *url,
                            const char *method, const char *ver, const char *up, size_t *ups,
                            void **ptr)
{
    const char *body;
    struct MHD_Response *r;
    enum MHD_Result ret;

    (void)cls;
    (void)ver;
    (void)up;
    (void)method;
    if (*ptr == NULL) {
        *ptr = (void *)1;
        return MHD_YES;
    }
    if (*ups > 0) {
        *ups = 0;
        return MHD_YES;
    }
    if (strstr(url, "bootAuth/app") != NULL)
        hook_app_calls++;
    body = hook_deny
               ? "{\"isAllowed\":false,\"gatewayAppId\":\"\",\"reason\":\"App not registered\"}"
               : "{\"isAllowed\":true,\"gatewayAppId\":\"gw\",\"reason\":\"\"}";
    r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* bootAuth/app refusing the app refuses SignCert with the policy's reason; allowing it signs.
 * A node refused by its own policy refuses SignCert. */
static void test_policy(void)
{
    struct MHD_Daemon *d = NULL;
    struct kms_auth *wh = NULL;
    struct kms_auth_cfg acfg;
    struct req r;
    struct kms_sign_cert_result res;
    char url[64];

    memset(&r, 0, sizeof(r));
    memset(&res, 0, sizeof(res));
    for (unsigned port = 28600; port < 28700 && d == NULL; port++)
        d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                             (uint16_t)port, NULL, NULL, hook, NULL, MHD_OPTION_END);
    CHECK(d != NULL);
    if (d == NULL)
        return;
    snprintf(url, sizeof(url), "http://127.0.0.1:%u",
             (unsigned)MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port);
    memset(&acfg, 0, sizeof(acfg));
    acfg.type = "webhook";
    acfg.webhook_url = url;
    acfg.timeout_ms = 5000;
    CHECK_OK(kms_auth_new(&acfg, &wh));
    g_node.auth = wh;
    CHECK_OK(make_req(2, T_NONE, F_NONE, 0, &r));

    hook_deny = 1;
    CHECK_RC(run(2, &r, &res), KMS_ERR_DENIED);
    CHECK_DETAIL("Boot denied: App not registered");
    CHECK(res.chain[0] == NULL && hook_app_calls == 1);
    kms_sign_cert_result_clear(&res);

    hook_deny = 0;
    CHECK_OK(run(2, &r, &res));
    CHECK(res.chain[0] != NULL && hook_app_calls == 2);
    kms_sign_cert_result_clear(&res);

    g_node.state = KMS_STATE_NOT_AUTHORIZED;
    snprintf(g_node.self_auth_reason, sizeof(g_node.self_auth_reason), "kms not registered");
    CHECK_RC(run(2, &r, &res), KMS_ERR_DENIED);
    CHECK_DETAIL("KMS is not authorized by its own policy: kms not registered");
    CHECK(hook_app_calls == 2);
    g_node.state = KMS_STATE_SERVING;

    g_node.auth = g_dev_auth;
    kms_auth_free(wh);
    MHD_stop_daemon(d);
    req_free(&r);
}

int main(void)
{
    char tmpl[] = "/tmp/kms-signcert-XXXXXX";

    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(g_tmp, sizeof(g_tmp), "%s", mkdtemp(tmpl));
    RUN(test_golden_vectors);
    RUN(test_roundtrip_all_fields);
    RUN(test_decode_malformed);
    if (node_setup() < 0) {
        fprintf(stderr, "node setup: %s\n", kms_err_detail());
        return 1;
    }
    RUN(test_v2_ok);
    RUN(test_v2_no_extensions);
    RUN(test_v1_ok);
    RUN(test_bad_version);
    RUN(test_signature_other_bytes);
    RUN(test_non_ec_pubkey);
    RUN(test_wrong_confirm);
    RUN(test_unbound_attestation);
    RUN(test_tampered_quote);
    RUN(test_policy);
    node_teardown();
    {
        char cmd[200];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", g_tmp);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot clean %s\n", g_tmp);
    }
    curl_global_cleanup();
    TEST_MAIN_END();
}
