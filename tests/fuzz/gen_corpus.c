/*
 * Regenerates the seed corpora in tests/fuzz/corpus/ from ../shared/fixtures (real evidence)
 * plus small synthetic inputs that reach the branches the fixtures do not (GCP vTPM
 * attestations, RA-TLS certificates, pRPC bodies, ABI return data). Not run by ctest: the
 * output is checked in. Build with `cmake --build <dir> --target fuzz_gen_corpus` and run it;
 * seeds are rewritten in place, byte for byte the same while the fixtures do not change.
 */
#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "attest/attest.h"
#include "common/file.h"
#include "common/hex.h"

#define DIE(...)                                                                                   \
    do {                                                                                           \
        fprintf(stderr, "gen_corpus: " __VA_ARGS__);                                               \
        fprintf(stderr, " (%s)\n", kms_err_detail());                                              \
        exit(1);                                                                                   \
    } while (0)

static uint8_t *load(const char *rel, size_t *len)
{
    char path[1024];
    uint8_t *p = NULL;

    snprintf(path, sizeof(path), "%s/fixtures/%s", KMS_SHARED_DIR, rel);
    if (kms_file_read(path, 4u << 20, &p, len) < 0)
        DIE("cannot read %s", path);
    return p;
}

static void put(const char *target, const char *name, const void *p, size_t len)
{
    char path[1024];
    FILE *f;

    if (mkdir(KMS_FUZZ_CORPUS_DIR, 0755) != 0 && errno != EEXIST)
        DIE("cannot create %s", KMS_FUZZ_CORPUS_DIR);
    snprintf(path, sizeof(path), "%s/%s", KMS_FUZZ_CORPUS_DIR, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        DIE("cannot create %s", path);
    snprintf(path, sizeof(path), "%s/%s/%s", KMS_FUZZ_CORPUS_DIR, target, name);
    f = fopen(path, "wb");
    if (f == NULL || (len > 0 && fwrite(p, 1, len, f) != len) || fclose(f) != 0)
        DIE("cannot write %s", path);
    printf("%-60s %6zu bytes\n", path + strlen(KMS_FUZZ_CORPUS_DIR) + 1, len);
}

/* SCALE attestations seed both the decoder and the BootInfo target. */
static void put_scale(const char *name, const void *p, size_t len)
{
    put("scale", name, p, len);
    put("bootinfo", name, p, len);
}

static void put_str(const char *target, const char *name, const char *s)
{
    put(target, name, s, strlen(s));
}

static void put_att(const char *name, const struct kms_attestation *att, int stripped)
{
    uint8_t *p = NULL;
    size_t len = 0;

    if (kms_att_encode(att, stripped, &p, &len) < 0)
        DIE("cannot encode %s", name);
    put_scale(name, p, len);
    free(p);
}

static void set_bytes(struct kms_bytes *b, const void *p, size_t len)
{
    free(b->p);
    b->p = malloc(len > 0 ? len : 1);
    if (b->p == NULL)
        DIE("out of memory");
    if (len > 0)
        memcpy(b->p, p, len);
    b->len = len;
}

/* ---------------------------------------------------------------- synthetic evidence */

/* A v4 quote that parses but verifies nowhere (as fuzz_legacy.c builds it). */
static void minimal_quote(uint8_t *q, size_t len)
{
    const size_t auth = 64 + 64 + 2 + 4 + KMS_TDX_QE_REPORT_LEN + 64 + 2 + 2 + 4;
    uint8_t *p = q;

    memset(q, 0, len);
    p[0] = 4;
    p[2] = 2;
    p[4] = 0x81;
    p += KMS_TDX_HEADER_LEN + KMS_TDX_BODY_LEN;
    p[0] = (uint8_t)auth;
    p[1] = (uint8_t)(auth >> 8);
    p += 4 + 128;
    p[0] = 6;
    p[2] = (uint8_t)(KMS_TDX_QE_REPORT_LEN + 64 + 2 + 2 + 4);
    p[3] = (uint8_t)((KMS_TDX_QE_REPORT_LEN + 64 + 2 + 2 + 4) >> 8);
    p += 6 + KMS_TDX_QE_REPORT_LEN + 64 + 2;
    p[0] = 5;
}

#define MIN_QUOTE_LEN                                                                              \
    (KMS_TDX_HEADER_LEN + KMS_TDX_BODY_LEN + 4 + 64 + 64 + 2 + 4 + KMS_TDX_QE_REPORT_LEN + 64 +    \
     2 + 2 + 4)

/* A DstackGcpTdx attestation: the TDX fixture plus a TPM quote built from the TPMS_ATTEST
 * sample, a fake ECDSA TPMT_SIGNATURE, the GCP root as "AK certificate" and the GCE log's
 * SHA-256 events. */
static struct kms_attestation *gcp_attestation(const uint8_t *tdx, size_t tdx_len)
{
    static const uint8_t sig[] = {0x00, 0x18, 0x00, 0x0b, 0x00, 0x02,
                                  0x11, 0x22, 0x00, 0x02, 0x33, 0x44};
    struct kms_attestation *att = NULL;
    struct kms_tcg_log log;
    struct kms_tpm_event *ev = NULL;
    size_t n_ev = 0;
    uint8_t *msg, *gce, *der = NULL;
    size_t msg_len, gce_len;
    X509 *root = kms_attest_gcp_root();
    int der_len;

    if (kms_att_decode(tdx, tdx_len, &att) < 0)
        DIE("cannot decode the TDX fixture");
    att->mode = KMS_ATT_GCP_TDX;
    msg = load("tpm/tpms-attest-sample.bin", &msg_len);
    set_bytes(&att->tpm.message, msg, msg_len);
    set_bytes(&att->tpm.signature, sig, sizeof(sig));
    att->tpm.pcrs = calloc(3, sizeof(*att->tpm.pcrs));
    if (att->tpm.pcrs == NULL)
        DIE("out of memory");
    for (uint32_t i = 0; i < 3; i++) {
        uint8_t v[32];

        memset(v, (int)(0x10 * (i + 1)), sizeof(v));
        att->tpm.pcrs[i].index = i;
        att->tpm.pcrs[i].algorithm = strdup("sha256");
        set_bytes(&att->tpm.pcrs[i].value, v, sizeof(v));
        att->tpm.n_pcrs = i + 1;
    }
    der_len = root != NULL ? i2d_X509(root, &der) : -1;
    if (der_len <= 0)
        DIE("cannot encode the GCP root");
    set_bytes(&att->tpm.ak_cert, der, (size_t)der_len);
    OPENSSL_free(der);
    X509_free(root);
    att->tpm.platform = 1;
    gce = load("tpm/gce-tcg2-eventlog.bin", &gce_len);
    if (kms_tcg_log_parse(gce, gce_len, &log) < 0 ||
        kms_tcg_log_to_tpm_events(&log, &ev, &n_ev) < 0)
        DIE("cannot parse the GCE log");
    att->tpm.events = ev;
    att->tpm.n_events = n_ev < 12 ? n_ev : 12; /* keep the seed small */
    for (size_t i = att->tpm.n_events; i < n_ev; i++)
        free(ev[i].digest.p);
    kms_tcg_log_free(&log);
    free(gce);
    free(msg);
    return att;
}

/* Self-signed certificate "CN=fuzz" carrying att (if any) and a few dstack extensions. */
static void put_cert(const char *name, const struct kms_attestation *att, int extra_exts)
{
    /* Ed25519 from a fixed private key: deterministic signatures, so seeds are byte-stable */
    static const uint8_t priv[32] = {0x6b, 0x6d, 0x73, 0x2d, 0x66, 0x75, 0x7a, 0x7a};
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, priv, sizeof(priv));
    X509 *c = X509_new();
    X509_NAME *nm = X509_NAME_new();
    uint8_t *der = NULL;
    int len;

    if (key == NULL || c == NULL || nm == NULL)
        DIE("out of memory");
    if (X509_set_version(c, 2) != 1 || ASN1_INTEGER_set(X509_get_serialNumber(c), 1) != 1 ||
        X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz", -1, -1,
                                   0) != 1 ||
        X509_set_subject_name(c, nm) != 1 || X509_set_issuer_name(c, nm) != 1 ||
        ASN1_TIME_set_string(X509_getm_notBefore(c), "20250101000000Z") != 1 ||
        ASN1_TIME_set_string(X509_getm_notAfter(c), "20350101000000Z") != 1 ||
        X509_set_pubkey(c, key) != 1)
        DIE("cannot build certificate %s", name);
    if (att != NULL && kms_ratls_add_attestation(c, att) < 0)
        DIE("cannot add the attestation to %s", name);
    if (extra_exts) {
        static const uint8_t app_id[20] = {0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c};

        if (kms_ratls_add_ext(c, KMS_OID_APP_ID, app_id, sizeof(app_id)) < 0 ||
            kms_ratls_add_ext(c, KMS_OID_CERT_USAGE, (const uint8_t *)"app:client", 10) < 0 ||
            kms_ratls_add_ext(c, KMS_OID_APP_INFO, (const uint8_t *)"{\"k\":1}", 7) < 0)
            DIE("cannot add extensions to %s", name);
    }
    if (X509_sign(c, key, NULL) <= 0 || (len = i2d_X509(c, &der)) <= 0)
        DIE("cannot sign %s", name);
    put("ratls", name, der, (size_t)len);
    OPENSSL_free(der);
    X509_NAME_free(nm);
    X509_free(c);
    EVP_PKEY_free(key);
}

/* ---------------------------------------------------------------- per target */

static void gen_attest(void)
{
    size_t tdx_len, prod_len, dbg_len, qv4_len, qr_len, gce_len, ccel_len, tpms_len;
    uint8_t *tdx = load("tdx/attestation-tdx.bin", &tdx_len);
    uint8_t *prod = load("nitro/attestation-prod.bin", &prod_len);
    uint8_t *dbg = load("nitro/attestation-debug.bin", &dbg_len);
    uint8_t *qv4 = load("tdx/quote-v4.bin", &qv4_len);
    uint8_t *qr = load("tdx/quote-report.json", &qr_len);
    uint8_t *gce = load("tpm/gce-tcg2-eventlog.bin", &gce_len);
    uint8_t *ccel = load("tdx/ccel.bin", &ccel_len);
    uint8_t *tpms = load("tpm/tpms-attest-sample.bin", &tpms_len);
    struct kms_attestation *att_tdx = NULL, *att_prod = NULL, *att_dbg = NULL, *gcp, *small;
    uint8_t minq[MIN_QUOTE_LEN];
    json_error_t jerr;
    json_t *report;
    char *json = NULL;
    uint8_t *qr_quote = NULL;
    size_t qr_quote_len = 0;
    struct kms_tcg_log log;
    size_t used;

    if (kms_att_decode(tdx, tdx_len, &att_tdx) < 0 ||
        kms_att_decode(prod, prod_len, &att_prod) < 0 || kms_att_decode(dbg, dbg_len, &att_dbg) < 0)
        DIE("cannot decode the fixtures");
    report = json_loadb((const char *)qr, qr_len, 0, &jerr);
    if (report == NULL || kms_hex_decode(json_string_value(json_object_get(report, "quote")),
                                         &qr_quote, &qr_quote_len) < 0)
        DIE("cannot read quote-report.json");
    minimal_quote(minq, sizeof(minq));

    /* scale: real attestations (full and stripped), a synthetic GCP one, a tiny Nitro one */
    put_scale("tdx.bin", tdx, tdx_len);
    put_att("tdx-stripped.bin", att_tdx, 1);
    put_scale("nitro-prod.bin", prod, prod_len);
    gcp = gcp_attestation(tdx, tdx_len);
    put_att("gcp-synthetic.bin", gcp, 0);
    small = calloc(1, sizeof(*small));
    if (small == NULL)
        DIE("out of memory");
    small->mode = KMS_ATT_NITRO;
    small->config = strdup("{\"os_image_hash\":\"00\"}");
    set_bytes(&small->nsm_quote, "\xd2\x84", 2);
    if (kms_att_add_runtime_event(small, "app-id", (const uint8_t *)"\x01\x02", 2) < 0 ||
        kms_att_add_runtime_event(small, "system-ready", NULL, 0) < 0)
        DIE("cannot build the small attestation");
    put_att("nitro-small.bin", small, 0);
    small->mode = KMS_ATT_TDX;
    set_bytes(&small->tdx_quote, minq, sizeof(minq));
    put_att("tdx-small.bin", small, 0);

    /* legacy: the event logs of both TDX fixtures, and small hand-written ones */
    put_str("legacy", "quote-report-event-log.json",
            json_string_value(json_object_get(report, "event_log")));
    if (kms_att_event_log_json(att_tdx, &json) < 0)
        DIE("cannot write the event log");
    put_str("legacy", "attestation-tdx-event-log.json", json);
    free(json);
    put_str("legacy", "empty.json", "[]");
    put_str("legacy", "one-runtime.json",
            "[{\"imr\":3,\"event_type\":134217729,\"digest\":\"\",\"event\":\"app-id\","
            "\"event_payload\":\"e3b0c442\"}]");
    put_str("legacy", "no-payload.json",
            "[{\"imr\":0,\"event_type\":1,\"digest\":\"00ff\",\"event\":\"\"},"
            "{\"imr\":4294967295,\"event_type\":0,\"digest\":\"AbCd\",\"event\":\"\\u00e9\","
            "\"event_payload\":\"\"}]");

    /* quotes */
    put("tdx_quote", "quote-v4.bin", qv4, qv4_len);
    put("tdx_quote", "attestation-tdx-quote.bin", att_tdx->tdx_quote.p, att_tdx->tdx_quote.len);
    put("tdx_quote", "minimal.bin", minq, sizeof(minq));
    put("tdx_verify", "quote-v4.bin", qv4, qv4_len);
    put("tdx_verify", "attestation-tdx-quote.bin", att_tdx->tdx_quote.p, att_tdx->tdx_quote.len);
    if (qr_quote_len != qv4_len || memcmp(qr_quote, qv4, qv4_len) != 0)
        put("tdx_verify", "quote-report-quote.bin", qr_quote, qr_quote_len);

    /* Nitro COSE documents */
    put("nitro", "prod.cose", att_prod->nsm_quote.p, att_prod->nsm_quote.len);
    put("nitro", "debug.cose", att_dbg->nsm_quote.p, att_dbg->nsm_quote.len);

    /* TPM */
    put("tpms_attest", "sample.bin", tpms, tpms_len);
    {
        /* two banks (SHA-1 PCR 7, SHA-256 PCRs 0, 2, 14), empty signer, 32-byte digest */
        static const uint8_t two[] = {
            0xff, 0x54, 0x43, 0x47, 0x80, 0x18, 0x00, 0x00, 0x00, 0x04, 1,    2,    3,
            4,    0,    0,    0,    0,    0,    0,    0,    9,    0,    0,    0,    1,
            0,    0,    0,    2,    1,    0,    0,    0,    0,    0,    0,    0,    7,
            0x00, 0x00, 0x00, 0x02, 0x00, 0x04, 0x03, 0x80, 0x00, 0x00, 0x00, 0x0b, 0x03,
            0x05, 0x40, 0x00, 0x00, 0x20, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
            0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
            0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa,
        };
        struct kms_tpms_attest a;

        if (kms_tpms_attest_parse(two, sizeof(two), &a) < 0)
            DIE("two-bank TPMS_ATTEST does not parse");
        put("tpms_attest", "two-banks.bin", two, sizeof(two));
    }
    /* tpm_quote: selector byte, BE16 signature length, TPMT_SIGNATURE, TPMS_ATTEST */
    {
        uint8_t in[3 + 4 + 2 + 256 + 256];
        size_t n;

        /* ECDSA-SHA256, r and s of 32 bytes */
        memset(in, 0, sizeof(in));
        n = 4 + 2 + 32 + 2 + 32;
        in[1] = (uint8_t)(n >> 8);
        in[2] = (uint8_t)n;
        memcpy(in + 3, "\x00\x18\x00\x0b\x00\x20", 6);
        memset(in + 9, 0x31, 32);
        memcpy(in + 41, "\x00\x20", 2);
        memset(in + 43, 0x32, 32);
        memcpy(in + 3 + n, tpms, tpms_len);
        put("tpm_quote", "ecdsa-sample.bin", in, 3 + n + tpms_len);
        /* RSASSA-SHA256, 256-byte signature */
        memset(in, 0, sizeof(in));
        in[0] = 1;
        n = 4 + 2 + 256;
        in[1] = (uint8_t)(n >> 8);
        in[2] = (uint8_t)n;
        memcpy(in + 3, "\x00\x14\x00\x0b\x01\x00", 6);
        memset(in + 9, 0x5c, 256);
        memcpy(in + 3 + n, tpms, tpms_len);
        put("tpm_quote", "rsassa-sample.bin", in, 3 + n + tpms_len);
    }
    put("tcg_log", "gce.bin", gce, gce_len);
    /* the CCEL is a 64 KiB ACPI table mostly made of 0xff padding: keep the used part + end */
    if (kms_tcg_log_parse(ccel, ccel_len, &log) < 0 || log.n_events == 0)
        DIE("cannot parse the CCEL");
    {
        const struct kms_tcg_event *last = &log.events[log.n_events - 1];

        used = (size_t)(last->data - ccel) + last->data_len;
    }
    kms_tcg_log_free(&log);
    put("tcg_log", "ccel-used.bin", ccel, used + 4 <= ccel_len ? used + 4 : used);
    /* the GCE log's first six events: a short seed that still parses */
    if (kms_tcg_log_parse(gce, gce_len, &log) < 0 || log.n_events < 6)
        DIE("cannot parse the GCE log");
    used = (size_t)(log.events[5].data - gce) + log.events[5].data_len;
    kms_tcg_log_free(&log);
    put("tcg_log", "gce-head.bin", gce, used);

    /* RA-TLS certificates */
    put_cert("nitro-1.8.der", att_prod, 1);
    put_cert("tdx-legacy-pair.der", att_tdx, 0);
    put_cert("gcp-1.8.der", gcp, 0);
    put_cert("small-tdx-legacy.der", small, 1);
    put_cert("no-attestation.der", NULL, 1);

    kms_att_free(small);
    kms_att_free(gcp);
    kms_att_free(att_tdx);
    kms_att_free(att_prod);
    kms_att_free(att_dbg);
    json_decref(report);
    free(qr_quote);
    free(tdx);
    free(prod);
    free(dbg);
    free(qv4);
    free(qr);
    free(gce);
    free(ccel);
    free(tpms);
}

static void gen_prpc(void)
{
    put_str("prpc", "get-app-key.json",
            "{\"api_version\":1,\"vm_config\":\"{\\\"os_image_hash\\\":\\\"1894b0b2\\\"}\"}");
    put_str("prpc", "app-id.json", "{\"app_id\":\"0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4\"}");
    put_str("prpc", "sign-cert.json",
            "{\"api_version\":1,\"csr\":\"0x3081\",\"signature\":\"0xABCDEF\",\"vm_config\":\"\"}");
    put_str("prpc", "onboard.json",
            "{\"source_url\":\"https://127.0.0.1:8000/prpc\",\"domain\":\"kms.example\"}");
    put_str("prpc", "null.json", " \r\n\tnull");
    put_str("prpc", "empty.json", "");
    put_str("prpc", "array.json", "[{\"app_id\":null}]");
    put_str("prpc", "duplicate.json", "{\"a\":1,\"a\":2}");
}

static void gen_eth_abi(void)
{
    uint8_t w[4 + 32 * 4];

    /* (bool true, string "ok") */
    memset(w, 0, sizeof(w));
    w[31] = 1;
    w[63] = 0x40;
    w[95] = 2;
    memcpy(w + 96, "ok", 2);
    put("eth_abi", "bool-string.bin", w, 128);
    /* string "allowed\n" */
    memset(w, 0, sizeof(w));
    w[31] = 0x20;
    w[63] = 8;
    memcpy(w + 64, "allowed\n", 8);
    put("eth_abi", "string.bin", w, 96);
    /* address */
    memset(w, 0, sizeof(w));
    memset(w + 12, 0xab, 20);
    put("eth_abi", "address.bin", w, 32);
    /* Error(string) revert */
    memset(w, 0, sizeof(w));
    memcpy(w, "\x08\xc3\x79\xa0", 4);
    w[4 + 31] = 0x20;
    w[4 + 63] = 5;
    memcpy(w + 4 + 64, "nope!", 5);
    put("eth_abi", "revert-error.bin", w, 4 + 96);
    /* Panic(0x11) */
    memset(w, 0, sizeof(w));
    memcpy(w, "\x4e\x48\x7b\x71", 4);
    w[35] = 0x11;
    put("eth_abi", "revert-panic.bin", w, 36);
    /* OwnableUnauthorizedAccount(address) = 0x118cdaa7 */
    memset(w, 0, sizeof(w));
    memcpy(w, "\x11\x8c\xda\xa7", 4);
    memset(w + 16, 0x5a, 20);
    put("eth_abi", "revert-ownable.bin", w, 36);
    put_str("eth_abi", "rpc-values.json",
            "[\"0x1a\",\"0x0\",\"0x\",\"0x00000000000000000000000000000000000000000000000000000000"
            "00000001\",\"0xffffffffffffffff\"]");
}

int main(void)
{
    gen_attest();
    gen_prpc();
    gen_eth_abi();
    return 0;
}
