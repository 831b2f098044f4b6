/*
 * RA-TLS certificate extensions (attest/ratls.c, kms-reference.md §5.1): the double OCTET
 * STRING wrapping at the DER level, the writer rule (TDX → .1.1 + .1.2, others → .1.8 stripped
 * SCALE), the reader rule (.1.8, else .1.1 + .1.2, else none) and the report_data binding.
 */
#include <ftw.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "attest/attest.h"
#include "attest/sim.h"
#include "common/file.h"
#include "test.h"

static char g_dir[256];

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

static EVP_PKEY *g_key;

/* A minimal certificate for g_key; extensions are added by the tests, then it is signed. */
static X509 *new_cert(void)
{
    X509 *c = X509_new();

    if (c == NULL)
        return NULL;
    X509_set_version(c, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(c), 1);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(c), "CN", MBSTRING_ASC,
                               (const unsigned char *)"RA-TLS TEMP Cert", -1, -1, 0);
    X509_set_issuer_name(c, X509_get_subject_name(c));
    X509_gmtime_adj(X509_getm_notBefore(c), 0);
    X509_gmtime_adj(X509_getm_notAfter(c), 3600);
    X509_set_pubkey(c, g_key);
    return c;
}

/* Signs, serialises and re-parses, so reads go through a certificate as a peer would see it. */
static X509 *reparse(X509 *c)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    X509 *r = NULL;
    int n;

    CHECK(X509_sign(c, g_key, EVP_sha256()) > 0);
    n = i2d_X509(c, &der);
    CHECK(n > 0);
    p = der;
    if (n > 0)
        r = d2i_X509(NULL, &p, n);
    CHECK(r != NULL);
    OPENSSL_free(der);
    X509_free(c);
    return r;
}

static int has_ext(X509 *c, const char *oid)
{
    ASN1_OBJECT *o = OBJ_txt2obj(oid, 1);
    int idx = X509_get_ext_by_OBJ(c, o, -1);

    ASN1_OBJECT_free(o);
    return idx >= 0;
}

static int memmem_found(const uint8_t *h, size_t hn, const uint8_t *n, size_t nn)
{
    return memmem(h, hn, n, nn) != NULL;
}

/* The exact DER of one extension: SEQUENCE { OID, OCTET STRING { OCTET STRING { "abc" } } },
 * no critical BOOLEAN (non-critical, DER omits the default). */
static void test_ext_der_exact(void)
{
    /* 1.3.6.1.4.1.62397.1.3: 62397 = 3*128^2 + 103*128 + 61 → 83 e7 3d */
    static const uint8_t want[] = {0x30, 0x13, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xe7,
                                   0x3d, 0x01, 0x03, 0x04, 0x05, 0x04, 0x03, 'a',  'b',  'c'};
    X509 *c = new_cert();
    const ASN1_OCTET_STRING *val;
    X509_EXTENSION *ext;
    unsigned char *der = NULL;
    uint8_t *out = NULL;
    size_t len = 0;
    int n;

    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_APP_ID, (const uint8_t *)"abc", 3));
    c = reparse(c);
    if (c == NULL)
        return;
    n = i2d_X509(c, &der);
    CHECK(n > 0 && memmem_found(der, (size_t)n, want, sizeof(want)));
    CHECK(X509_get_ext_count(c) == 1);
    ext = X509_get_ext(c, 0);
    CHECK(ext != NULL);
    if (ext != NULL) {
        CHECK(X509_EXTENSION_get_critical(ext) == 0);
        val = X509_EXTENSION_get_data(ext);
        CHECK(ASN1_STRING_length(val) == 5);
        CHECK(memcmp(ASN1_STRING_get0_data(val), want + 16, 5) == 0); /* 04 03 'a' 'b' 'c' */
    }
    CHECK_OK(kms_ratls_get_ext(c, KMS_OID_APP_ID, &out, &len));
    CHECK(len == 3 && out != NULL && memcmp(out, "abc", 3) == 0);
    free(out);
    OPENSSL_free(der);
    X509_free(c);
}

/* Every RA-TLS OID round-trips its content exactly, including empty content and content long
 * enough to need a multi-byte DER length; writing an OID again replaces it. */
static void test_ext_roundtrip_all(void)
{
    static const char *const oids[] = {KMS_OID_TDX_QUOTE,  KMS_OID_EVENT_LOG,   KMS_OID_APP_ID,
                                       KMS_OID_CERT_USAGE, KMS_OID_ATTESTATION, KMS_OID_APP_INFO};
    static const size_t sizes[] = {5000, 0, 20, 7, 70000, 127};
    uint8_t *data[6];
    X509 *c = new_cert();

    for (int i = 0; i < 6; i++) {
        data[i] = malloc(sizes[i] + 1);
        CHECK(RAND_bytes(data[i], (int)sizes[i] + 1) == 1);
        /* written twice: the second content wins and there is one extension */
        CHECK_OK(kms_ratls_add_ext(c, oids[i], data[i] + 1, sizes[i]));
        CHECK_OK(kms_ratls_add_ext(c, oids[i], data[i], sizes[i]));
    }
    c = reparse(c);
    CHECK(c != NULL && X509_get_ext_count(c) == 6);
    for (int i = 0; i < 6 && c != NULL; i++) {
        uint8_t *out = NULL;
        size_t len = 99;

        CHECK_OK(kms_ratls_get_ext(c, oids[i], &out, &len));
        CHECK(len == sizes[i]);
        CHECK(out != NULL && (sizes[i] == 0 || memcmp(out, data[i], sizes[i]) == 0));
        free(out);
    }
    for (int i = 0; i < 6; i++)
        free(data[i]);
    X509_free(c);
}

/* Adds an extension with raw extnValue bytes (bypassing the writer). */
static void add_raw_ext(X509 *c, const char *oid, const uint8_t *v, size_t n)
{
    ASN1_OBJECT *o = OBJ_txt2obj(oid, 1);
    ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    X509_EXTENSION *e;

    ASN1_OCTET_STRING_set(os, v, (int)n);
    e = X509_EXTENSION_create_by_OBJ(NULL, o, 0, os);
    CHECK(X509_add_ext(c, e, -1) == 1);
    X509_EXTENSION_free(e);
    ASN1_OCTET_STRING_free(os);
    ASN1_OBJECT_free(o);
}

/* The reader insists on the inner DER OCTET STRING: single wrapping, trailing bytes, a wrong
 * tag, a non-minimal length and a duplicated extension are KMS_ERR_ATT_FORMAT; a missing one is
 * KMS_ERR_NOTFOUND; bad OIDs and oversized content are refused by the writer. */
static void test_ext_malformed(void)
{
    static const uint8_t single[] = {'a', 'b', 'c'};
    static const uint8_t trailing[] = {0x04, 0x01, 'a', 0x00};
    static const uint8_t short_len[] = {0x04, 0x05, 'a'};
    static const uint8_t wrong_tag[] = {0x0c, 0x01, 'a'};
    static const uint8_t long_form[] = {0x04, 0x81, 0x01, 'a'};
    static const struct {
        const uint8_t *v;
        size_t n;
    } cases[] = {{single, sizeof(single)},
                 {trailing, sizeof(trailing)},
                 {short_len, sizeof(short_len)},
                 {wrong_tag, sizeof(wrong_tag)},
                 {long_form, sizeof(long_form)}};
    uint8_t *out = NULL;
    size_t len = 0;
    uint8_t *big;
    X509 *c;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        c = new_cert();
        add_raw_ext(c, KMS_OID_APP_ID, cases[i].v, cases[i].n);
        c = reparse(c);
        CHECK_RC(kms_ratls_get_ext(c, KMS_OID_APP_ID, &out, &len), KMS_ERR_ATT_FORMAT);
        CHECK_DETAIL(KMS_OID_APP_ID);
        CHECK(out == NULL);
        X509_free(c);
    }

    c = new_cert();
    add_raw_ext(c, KMS_OID_APP_ID, (const uint8_t *)"\x04\x01z", 3);
    add_raw_ext(c, KMS_OID_APP_ID, (const uint8_t *)"\x04\x01y", 3);
    CHECK_RC(kms_ratls_get_ext(c, KMS_OID_APP_ID, &out, &len), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("more than once");
    CHECK_RC(kms_ratls_get_ext(c, KMS_OID_APP_INFO, &out, &len), KMS_ERR_NOTFOUND);
    CHECK_RC(kms_ratls_add_ext(c, "not an oid", (const uint8_t *)"x", 1), KMS_ERR_INVAL);
    big = calloc(1, KMS_ATT_MAX_BYTES + 1);
    CHECK_RC(kms_ratls_add_ext(c, KMS_OID_APP_INFO, big, KMS_ATT_MAX_BYTES + 1), KMS_ERR_TOOBIG);
    free(big);
    X509_free(c);
}

static void check_same_events(const struct kms_attestation *a, const struct kms_attestation *b)
{
    CHECK(a->n_events == b->n_events);
    for (size_t i = 0; i < a->n_events && i < b->n_events; i++) {
        CHECK(strcmp(a->events[i].event, b->events[i].event) == 0);
        CHECK(a->events[i].payload.len == b->events[i].payload.len);
        CHECK(a->events[i].payload.len == 0 ||
              memcmp(a->events[i].payload.p, b->events[i].payload.p, a->events[i].payload.len) ==
                  0);
    }
}

/* TDX writer emits .1.1 (raw quote) + .1.2 (event-log JSON) and not .1.8; the reader returns
 * the same quote, runtime events and report_data, config "", and the result still verifies. */
static void test_tdx_writer_reader(void)
{
    static const char *names[] = {"app-id", "compose-hash", "system-ready"};
    struct kms_runtime_event ev[3];
    uint8_t payload[3][32];
    struct kms_sim *sim = NULL;
    struct kms_attestation *att = NULL;
    struct kms_attestation *back = NULL;
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    struct kms_verified v;
    uint8_t rd[64];
    uint8_t *q = NULL;
    uint8_t *js = NULL;
    size_t qlen = 0;
    size_t jlen = 0;
    char *want_json = NULL;
    X509 *c;

    CHECK(RAND_bytes(&payload[0][0], sizeof(payload)) == 1);
    for (int i = 0; i < 3; i++) {
        ev[i].event = (char *)names[i];
        ev[i].payload.p = payload[i];
        ev[i].payload.len = sizeof(payload[i]);
    }
    CHECK_OK(kms_sim_open(g_dir, &sim));
    if (sim == NULL)
        goto out;
    c = new_cert();
    CHECK_OK(kms_report_data_for_cert(c, rd));
    CHECK_OK(kms_sim_attest(sim, NULL, rd, ev, 3, "{\"x\":1}", &att));
    if (att == NULL) {
        X509_free(c);
        goto out;
    }
    /* a stale .1.8 is removed by the TDX writer */
    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_ATTESTATION, (const uint8_t *)"zz", 2));
    CHECK_OK(kms_ratls_add_attestation(c, att));
    c = reparse(c);
    CHECK(has_ext(c, KMS_OID_TDX_QUOTE));
    CHECK(has_ext(c, KMS_OID_EVENT_LOG));
    CHECK(!has_ext(c, KMS_OID_ATTESTATION));
    CHECK_OK(kms_ratls_get_ext(c, KMS_OID_TDX_QUOTE, &q, &qlen));
    CHECK(qlen == att->tdx_quote.len && q != NULL && memcmp(q, att->tdx_quote.p, qlen) == 0);
    CHECK_OK(kms_ratls_get_ext(c, KMS_OID_EVENT_LOG, &js, &jlen));
    CHECK_OK(kms_att_event_log_json(att, &want_json));
    CHECK(want_json != NULL && js != NULL && jlen == strlen(want_json) &&
          memcmp(js, want_json, jlen) == 0);

    CHECK_OK(kms_ratls_get_attestation(c, &back));
    if (back != NULL) {
        CHECK(back->mode == KMS_ATT_TDX);
        CHECK(back->tdx_quote.len == att->tdx_quote.len &&
              memcmp(back->tdx_quote.p, att->tdx_quote.p, att->tdx_quote.len) == 0);
        CHECK_MEM(back->report_data, rd, 64);
        CHECK(strcmp(back->config, "") == 0);
        check_same_events(att, back);
        CHECK(back->n_tdx_events == 3);
        CHECK_OK(kms_attest_ctx_add_root_file(ctx, KMS_ROOT_TDX, kms_sim_root_path(sim), 1));
        CHECK_OK(kms_attest_verify(ctx, back, &v));
        kms_verified_free(&v);
    }
    X509_free(c);
out:
    free(want_json);
    free(q);
    free(js);
    kms_att_free(back);
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    kms_sim_free(sim);
}

/* Non-TDX writer emits only .1.8 = stripped SCALE (exactly kms_att_encode(att, 1)); the reader
 * gives back the same Nitro document, runtime events, report_data and config. */
static void test_nitro_writer_reader(void)
{
    struct kms_attestation *att = calloc(1, sizeof(*att));
    struct kms_attestation *back = NULL;
    uint8_t *want = NULL;
    uint8_t *got = NULL;
    size_t want_len = 0;
    size_t got_len = 0;
    X509 *c = new_cert();

    att->mode = KMS_ATT_NITRO;
    att->nsm_quote.p = malloc(300);
    att->nsm_quote.len = 300;
    CHECK(RAND_bytes(att->nsm_quote.p, 300) == 1);
    CHECK(RAND_bytes(att->report_data, 64) == 1);
    att->config = strdup("{\"os_image_hash\":\"aa\"}");
    CHECK_OK(kms_att_add_runtime_event(att, "app-id", (const uint8_t *)"0123456789abcdefghij", 20));
    /* stale legacy extensions are removed by the non-TDX writer */
    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_TDX_QUOTE, (const uint8_t *)"q", 1));
    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_EVENT_LOG, (const uint8_t *)"[]", 2));
    CHECK_OK(kms_ratls_add_attestation(c, att));
    c = reparse(c);
    CHECK(has_ext(c, KMS_OID_ATTESTATION));
    CHECK(!has_ext(c, KMS_OID_TDX_QUOTE));
    CHECK(!has_ext(c, KMS_OID_EVENT_LOG));
    CHECK_OK(kms_att_encode(att, 1, &want, &want_len));
    CHECK_OK(kms_ratls_get_ext(c, KMS_OID_ATTESTATION, &got, &got_len));
    CHECK(got != NULL && want != NULL && got_len == want_len && memcmp(got, want, want_len) == 0);
    CHECK_OK(kms_ratls_get_attestation(c, &back));
    if (back != NULL) {
        CHECK(back->mode == KMS_ATT_NITRO);
        CHECK(back->nsm_quote.len == 300 && memcmp(back->nsm_quote.p, att->nsm_quote.p, 300) == 0);
        CHECK_MEM(back->report_data, att->report_data, 64);
        CHECK(strcmp(back->config, att->config) == 0);
        check_same_events(att, back);
    }
    free(want);
    free(got);
    kms_att_free(back);
    kms_att_free(att);
    X509_free(c);
}

/* .1.8 takes precedence over the legacy pair when both are present. */
static void test_reader_prefers_attestation_oid(void)
{
    struct kms_attestation *att = calloc(1, sizeof(*att));
    struct kms_attestation *back = NULL;
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    X509 *c = new_cert();

    att->mode = KMS_ATT_NITRO;
    att->nsm_quote.p = malloc(4);
    memcpy(att->nsm_quote.p, "cose", 4);
    att->nsm_quote.len = 4;
    att->config = strdup("");
    CHECK_OK(kms_att_encode(att, 1, &enc, &enc_len));
    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_ATTESTATION, enc, enc_len));
    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_TDX_QUOTE, (const uint8_t *)"garbage", 7));
    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_EVENT_LOG, (const uint8_t *)"[]", 2));
    c = reparse(c);
    CHECK_OK(kms_ratls_get_attestation(c, &back));
    CHECK(back != NULL && back->mode == KMS_ATT_NITRO);
    free(enc);
    kms_att_free(back);
    kms_att_free(att);
    X509_free(c);
}

/* Reader errors: only .1.1 → KMS_ERR_ATT_FORMAT naming the missing event log; no attestation
 * extension at all → KMS_ERR_ATT_NONE "No attestation provided"; an undecodable .1.8 →
 * KMS_ERR_ATT_FORMAT (no fallback to the legacy pair). */
static void test_reader_errors(void)
{
    struct kms_attestation *back = NULL;
    struct kms_sim *sim = NULL;
    struct kms_tdx_report rep;
    uint8_t *quote = NULL;
    size_t qlen = 0;
    X509 *c;

    CHECK_OK(kms_sim_open(g_dir, &sim));
    if (sim == NULL)
        return;
    memset(&rep, 0, sizeof(rep));
    rep.td_attributes[3] = 0x10; /* SEPT_VE_DISABLE */
    CHECK_OK(kms_sim_quote(sim, &rep, &quote, &qlen));

    c = new_cert();
    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_TDX_QUOTE, quote, qlen));
    c = reparse(c);
    CHECK_RC(kms_ratls_get_attestation(c, &back), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("no event log");
    CHECK(back == NULL);
    X509_free(c);

    c = new_cert();
    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_APP_ID, (const uint8_t *)"id", 2));
    c = reparse(c);
    CHECK_RC(kms_ratls_get_attestation(c, &back), KMS_ERR_ATT_NONE);
    CHECK_DETAIL("No attestation provided");
    X509_free(c);

    c = new_cert();
    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_ATTESTATION, (const uint8_t *)"\x07\x00", 2));
    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_TDX_QUOTE, quote, qlen));
    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_EVENT_LOG, (const uint8_t *)"[]", 2));
    c = reparse(c);
    CHECK_RC(kms_ratls_get_attestation(c, &back), KMS_ERR_ATT_FORMAT);
    CHECK(back == NULL);
    X509_free(c);

    c = new_cert();
    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_TDX_QUOTE, quote, qlen));
    CHECK_OK(kms_ratls_add_ext(c, KMS_OID_EVENT_LOG, (const uint8_t *)"{not json", 9));
    c = reparse(c);
    CHECK_RC(kms_ratls_get_attestation(c, &back), KMS_ERR_ATT_FORMAT);
    X509_free(c);
    free(quote);
    kms_sim_free(sim);
}

/* The real TDX fixture (SCALE DstackTdx, 33 event-log entries, 9 runtime events) written into a
 * certificate and read back through the legacy pair keeps its quote, runtime events and
 * report_data. */
static void test_fixture_roundtrip(void)
{
    struct kms_attestation *att = NULL;
    struct kms_attestation *back = NULL;
    uint8_t *bin = NULL;
    size_t len = 0;
    X509 *c;

    CHECK_OK(
        kms_file_read(kms_test_fixture("tdx/attestation-tdx.bin"), KMS_ATT_MAX_BYTES, &bin, &len));
    if (bin == NULL)
        return;
    CHECK_OK(kms_att_decode(bin, len, &att));
    if (att == NULL)
        goto out;
    CHECK(att->n_events == 9);
    c = new_cert();
    CHECK_OK(kms_ratls_add_attestation(c, att));
    c = reparse(c);
    CHECK(!has_ext(c, KMS_OID_ATTESTATION));
    CHECK_OK(kms_ratls_get_attestation(c, &back));
    if (back != NULL) {
        CHECK(back->tdx_quote.len == att->tdx_quote.len &&
              memcmp(back->tdx_quote.p, att->tdx_quote.p, att->tdx_quote.len) == 0);
        CHECK(back->n_tdx_events == att->n_tdx_events);
        CHECK_MEM(back->report_data, att->report_data, 64);
        check_same_events(att, back);
        CHECK(back->n_events == 9 && strcmp(back->events[8].event, "system-ready") == 0);
    }
    X509_free(c);
out:
    kms_att_free(back);
    kms_att_free(att);
    free(bin);
}

/* report_data for a certificate and for its key are both SHA-512("ratls-cert:" || SPKI DER);
 * another key gives another value. */
static void test_report_data_binding(void)
{
    static const char tag[] = "ratls-cert:";
    unsigned char *spki = NULL;
    uint8_t want[64];
    uint8_t a[64];
    uint8_t b[64];
    uint8_t o[64];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY *other = EVP_EC_gen("P-256");
    unsigned int wl = 0;
    int n = i2d_PUBKEY(g_key, &spki);
    X509 *c = new_cert();

    CHECK(n > 0);
    CHECK(EVP_DigestInit_ex(md, EVP_sha512(), NULL) == 1 &&
          EVP_DigestUpdate(md, tag, strlen(tag)) == 1 &&
          EVP_DigestUpdate(md, spki, (size_t)n) == 1 && EVP_DigestFinal_ex(md, want, &wl) == 1);
    CHECK(wl == 64);
    CHECK_OK(kms_report_data_for_cert(c, a));
    CHECK_OK(kms_report_data_for_pkey(g_key, b));
    CHECK_OK(kms_report_data_for_pkey(other, o));
    CHECK_MEM(a, want, 64);
    CHECK_MEM(b, want, 64);
    CHECK(memcmp(o, want, 64) != 0);
    CHECK_RC(kms_report_data_for_pkey(NULL, o), KMS_ERR_INVAL);
    OPENSSL_free(spki);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(other);
    X509_free(c);
}

int main(void)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/kms-test-ratls-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return 2;
    g_key = EVP_EC_gen("P-256");
    RUN(test_ext_der_exact);
    RUN(test_ext_roundtrip_all);
    RUN(test_ext_malformed);
    RUN(test_tdx_writer_reader);
    RUN(test_nitro_writer_reader);
    RUN(test_reader_prefers_attestation_oid);
    RUN(test_reader_errors);
    RUN(test_fixture_roundtrip);
    RUN(test_report_data_binding);
    EVP_PKEY_free(g_key);
    (void)nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    TEST_MAIN_END();
}
