/*
 * Regenerates the seed corpora in tests/fuzz/corpus/ from tests/fixtures (real evidence)
 * plus small synthetic inputs that reach the branches the fixtures do not (GCP vTPM
 * attestations, RA-TLS certificates, pRPC bodies, ABI return data, CSRs, webhook answers). Not
 * run by ctest: the output is checked in. Build with `cmake --build <dir> --target
 * fuzz_gen_corpus` and run it; seeds are rewritten in place, byte for byte the same while the
 * fixtures do not change. The backup and collateral seeds embed fresh keys, nonces and dates
 * (a real backup, real simulated collateral), so they are written once and kept: delete
 * corpus/backup/ or corpus/collateral/ to make new ones.
 */
#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attest/attest.h"
#include "attest/collateral.h"
#include "attest/sim.h"
#include "attest/tdx.h"
#include "attest/tpm.h"
#include "common/buf.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/crypto/csr.h"
#include "storage/storage.h"

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

    snprintf(path, sizeof(path), "%s/%s", KMS_FIXTURES_DIR, rel);
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
    if (X509_sign(c, key, NULL) <= 0)
        DIE("cannot sign %s", name);
    len = i2d_X509(c, &der);
    if (len <= 0)
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

/* ---------------------------------------------------------------- CSR, backup, collateral,
 * webhook */

/* Seeds with fresh randomness are made once: 1 when corpus/target/name already exists. */
static int kept(const char *target, const char *name)
{
    char path[1024];

    snprintf(path, sizeof(path), "%s/%s/%s", KMS_FUZZ_CORPUS_DIR, target, name);
    if (access(path, F_OK) != 0)
        return 0;
    printf("%-60s kept (made once)\n", path + strlen(KMS_FUZZ_CORPUS_DIR) + 1);
    return 1;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);

    if (d == NULL)
        DIE("out of memory");
    return d;
}

static void put_csr(const char *name, const struct kms_csr *c)
{
    uint8_t *p = NULL;
    size_t len = 0;
    struct kms_csr d;

    if (kms_csr_encode(c, &p, &len) < 0 || kms_csr_decode(c->version, p, len, &d) < 0)
        DIE("cannot encode the CSR %s", name);
    /* V1 seeds must reach the V1 → V2 upgrade */
    if (d.version == 1 && kms_csr_upgrade(&d) < 0)
        DIE("the V1 CSR %s does not upgrade", name);
    kms_csr_free(&d);
    put("csr", name, p, len);
    free(p);
}

static void gen_csr(void)
{
    /* The reference's golden vectors (ra-tls cert.rs test_csr_v2_scale_encoding_stable and
     * ..._with_tdx_quote), as checked in tests/node/test_sign_cert.c. */
    static const char *const golden[2] = {
        "44706c65617365207369676e20636572743a0c0102030040746573742e6578616d706c652e636f6d0001"
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000",
        "44706c65617365207369676e20636572743a0c0102030040746573742e6578616d706c652e636f6d0001"
        "000100000000000409000000000000000000000000000000000000000000000000000000000000000000"
        "00000000000000000000000000000000000000000000000000000000000000000000",
    };
    static const char *const golden_name[2] = {"golden-v2.bin", "golden-v2-tdx-quote.bin"};
    /* a P-256 SubjectPublicKeyInfo, as real clients send */
    static const char spki_hex[] =
        "3059301306072a8648ce3d020106082a8648ce3d0301070342000488473375b766f812facc65c65c50327a"
        "942bb371b60e9680a6499262fe014665b7006e103d27f300815c6140c4398432449eec1c749e6fa56efb9b"
        "0f55d585a3";
    static const char one_runtime[] =
        "[{\"imr\":3,\"event_type\":134217729,\"digest\":\"\",\"event\":\"app-id\","
        "\"event_payload\":\"e3b0c442\"}]";
    size_t tdx_len;
    uint8_t *tdx = load("tdx/attestation-tdx.bin", &tdx_len);
    struct kms_attestation *att_tdx = NULL;
    struct kms_attestation *att;
    uint8_t minq[MIN_QUOTE_LEN];
    uint8_t *spki = NULL;
    size_t spki_len = 0;
    struct kms_csr c;
    char *log = NULL;

    for (int i = 0; i < 2; i++) {
        uint8_t *p = NULL;
        size_t len = 0;
        struct kms_csr d;

        if (kms_hex_decode(golden[i], &p, &len) < 0 || kms_csr_decode(2, p, len, &d) < 0)
            DIE("golden CSR %d does not decode", i);
        kms_csr_free(&d);
        put("csr", golden_name[i], p, len);
        free(p);
    }
    if (kms_att_decode(tdx, tdx_len, &att_tdx) < 0 ||
        kms_hex_decode(spki_hex, &spki, &spki_len) < 0)
        DIE("cannot decode the TDX fixture");
    minimal_quote(minq, sizeof(minq));

    /* V2 with every field: Some org, SANs, all flags, both validity overrides */
    memset(&c, 0, sizeof(c));
    c.version = 2;
    c.confirm = xstrdup(KMS_CSR_CONFIRM);
    set_bytes(&c.pubkey, spki, spki_len);
    c.config.org_name = xstrdup("Fuzz Org \xc3\xbc");
    c.config.subject = xstrdup("app.fuzz.example");
    c.config.san = calloc(2, sizeof(char *));
    if (c.config.san == NULL)
        DIE("out of memory");
    c.config.san[0] = xstrdup("app.fuzz.example");
    c.config.san[1] = xstrdup("10.0.0.1");
    c.config.n_san = 2;
    c.config.usage_server_auth = 1;
    c.config.usage_client_auth = 1;
    c.config.ext_quote = 1;
    c.config.ext_app_info = 1;
    c.config.has_not_before = 1;
    c.config.not_before = 1767225600;
    c.config.has_not_after = 1;
    c.config.not_after = 1798761600;
    att = calloc(1, sizeof(*att));
    if (att == NULL)
        DIE("out of memory");
    att->mode = KMS_ATT_TDX;
    set_bytes(&att->tdx_quote, minq, sizeof(minq));
    att->config = xstrdup("{\"os_image_hash\":\"00\"}");
    if (kms_att_add_runtime_event(att, "app-id", (const uint8_t *)"\x01\x02", 2) < 0)
        DIE("cannot build the CSR attestation");
    c.att = att;
    put_csr("all-fields-v2.bin", &c);
    /* the TDX fixture's attestation, and a small Nitro one without validity overrides */
    c.att = att_tdx;
    put_csr("tdx-fixture-v2.bin", &c);
    att->mode = KMS_ATT_NITRO;
    set_bytes(&att->tdx_quote, NULL, 0);
    set_bytes(&att->nsm_quote, "\xd2\x84", 2);
    c.att = att;
    c.config.has_not_before = 0;
    c.config.has_not_after = 0;
    put_csr("nitro-small-v2.bin", &c);
    c.att = NULL;

    /* V1: legacy quote + JSON event log (minimal, then the fixture's) */
    c.version = 1;
    c.config.ext_app_info = 0;
    set_bytes(&c.quote, minq, sizeof(minq));
    set_bytes(&c.event_log, one_runtime, strlen(one_runtime));
    put_csr("all-fields-v1.bin", &c);
    if (kms_att_event_log_json(att_tdx, &log) < 0)
        DIE("cannot write the fixture's event log");
    set_bytes(&c.quote, att_tdx->tdx_quote.p, att_tdx->tdx_quote.len);
    set_bytes(&c.event_log, log, strlen(log));
    free(c.config.org_name);
    c.config.org_name = NULL;
    for (size_t i = 0; i < c.config.n_san; i++)
        free(c.config.san[i]);
    c.config.n_san = 0;
    c.config.usage_client_auth = 0;
    c.config.ext_quote = 0;
    put_csr("tdx-fixture-v1.bin", &c);
    free(log);

    kms_csr_free(&c);
    kms_att_free(att);
    kms_att_free(att_tdx);
    free(spki);
    free(tdx);
}

static char *p256_pem(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n;
    char *out;

    if (k == NULL || b == NULL || PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) != 1)
        DIE("cannot make a P-256 key");
    n = BIO_get_mem_data(b, &data);
    out = strndup(data, (size_t)n);
    if (out == NULL)
        DIE("out of memory");
    BIO_free(b);
    EVP_PKEY_free(k);
    return out;
}

#define BACKUP_SEP "\n--shares--\n" /* as fuzz_backup.c */

/* file || separator || the given shares, one per line */
static void put_open(const char *name, const uint8_t *file, size_t len, char *const *sh,
                     const int *pick, size_t n)
{
    struct kms_buf b = {0};

    if (kms_buf_put(&b, file, len) < 0 || kms_buf_put(&b, BACKUP_SEP, strlen(BACKUP_SEP)) < 0)
        DIE("out of memory");
    for (size_t i = 0; i < n; i++)
        if (kms_buf_put(&b, sh[pick[i]], strlen(sh[pick[i]])) < 0 || kms_buf_put(&b, "\n", 1) < 0)
            DIE("out of memory");
    put("backup", name, b.data, b.len);
    kms_buf_free(&b);
}

/* A real backup of a throwaway identity (fresh keys), its shares, and both together. */
static void one_backup(unsigned m, unsigned n, const char *bootstrap, const char *tag)
{
    struct kms_identity id, back;
    char *sh[KMS_BACKUP_MAX_SHARES];
    const char *use[3];
    uint8_t *file = NULL;
    size_t len = 0;
    char name[64];
    char line[KMS_BACKUP_SHARE_TEXT_MAX + 8];

    memset(&id, 0, sizeof(id));
    id.root_ca_key_pem = p256_pem();
    id.tmp_ca_key_pem = p256_pem();
    if (RAND_bytes(id.root_k256, 32) != 1)
        DIE("no randomness");
    id.root_k256[0] = 0x42; /* below the secp256k1 order */
    id.domain = xstrdup("kms.fuzz.example");
    id.bootstrap_info_json = bootstrap != NULL ? xstrdup(bootstrap) : NULL;
    if (kms_backup_create(&id, m, n, &file, &len, sh, NULL) < 0)
        DIE("cannot create a backup");
    for (unsigned i = 0; i < m; i++)
        use[i] = sh[n - 1 - i];
    if (kms_backup_open(file, len, use, NULL, m, &back, NULL) < 0)
        DIE("the backup does not open");
    kms_identity_clear(&back);
    snprintf(name, sizeof(name), "backup-%s.bin", tag);
    put("backup", name, file, len);
    snprintf(name, sizeof(name), "share-%s-1.txt", tag);
    put_str("backup", name, sh[0]);
    snprintf(name, sizeof(name), "share-%s-2-crlf.txt", tag);
    snprintf(line, sizeof(line), "  %s\r\n", sh[1]);
    put_str("backup", name, line);
    if (m == 2) {
        static const int two[] = {0, 2}, dup[] = {1, 1, 0}, one[] = {1};

        put_open("open-2of3.bin", file, len, sh, two, 2);
        put_open("open-2of3-dup.bin", file, len, sh, dup, 3);
        put_open("open-2of3-too-few.bin", file, len, sh, one, 1);
    } else {
        static const int three[] = {4, 0, 2};

        snprintf(name, sizeof(name), "open-%s.bin", tag);
        put_open(name, file, len, sh, three, 3);
    }
    kms_backup_shares_free(sh, n);
    kms_identity_clear(&id);
    free(file);
}

static void gen_backup(void)
{
    if (kept("backup", "backup-2of3.bin"))
        return;
    one_backup(2, 3, "{\"ca_pubkey\":\"0x01\",\"k256_pubkey\":\"0x02\"}", "2of3");
    one_backup(3, 5, NULL, "3of5");
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static json_t *byte_array(const struct kms_bytes *b)
{
    json_t *a = json_array();

    for (size_t i = 0; a != NULL && i < b->len; i++)
        if (json_array_append_new(a, json_integer(b->p[i])) != 0)
            DIE("out of memory");
    if (a == NULL)
        DIE("out of memory");
    return a;
}

static json_t *crl_pem(const struct kms_bytes *der)
{
    const unsigned char *p = der->p;
    X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)der->len);
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n;
    json_t *s;

    if (crl == NULL || b == NULL || PEM_write_bio_X509_CRL(b, crl) != 1)
        DIE("cannot write a CRL as PEM");
    n = BIO_get_mem_data(b, &data);
    s = json_stringn(data, (size_t)n);
    BIO_free(b);
    X509_CRL_free(crl);
    return s;
}

static void gen_collateral(void)
{
    struct kms_sim_collateral_opts o = {.now = 1767225600}; /* 2026-01-01 */
    char dir[] = "/tmp/kms-fuzz-gen-XXXXXX";
    struct kms_collateral c;
    struct kms_collateral *sets = NULL;
    struct kms_sim *sim = NULL;
    size_t n = 0;
    json_error_t jerr;
    json_t *arr, *o1, *o2;
    char *json = NULL, *json2 = NULL;

    /* the smallest set the parser accepts */
    put_str("collateral", "minimal.json",
            "{\"pck_crl_issuer_chain\":\"\",\"root_ca_crl\":\"30\",\"pck_crl\":[48,0],"
            "\"tcb_info_issuer_chain\":\"\",\"tcb_info\":\"{}\",\"tcb_info_signature\":\"\","
            "\"qe_identity_issuer_chain\":\"\",\"qe_identity\":\"{}\","
            "\"qe_identity_signature\":[]}");
    if (kept("collateral", "sim-set.json"))
        return;
    if (mkdtemp(dir) == NULL || kms_sim_open(dir, &sim) < 0 || kms_sim_collateral(dir, &o, &c) < 0)
        DIE("cannot make simulated collateral");
    if (kms_collateral_to_json(&c, &json) < 0)
        DIE("cannot serialise the collateral");
    put_str("collateral", "sim-set.json", json);
    /* two sets: CRLs as PEM and a signature as a byte array; CRLs as byte arrays */
    o1 = json_loads(json, 0, &jerr);
    o2 = json_loads(json, 0, &jerr);
    arr = json_array();
    if (o1 == NULL || o2 == NULL || arr == NULL ||
        json_object_set_new(o1, "root_ca_crl", crl_pem(&c.root_ca_crl)) != 0 ||
        json_object_set_new(o1, "pck_crl", crl_pem(&c.pck_crl)) != 0 ||
        json_object_set_new(o1, "tcb_info_signature", byte_array(&c.tcb_info_signature)) != 0 ||
        json_object_set_new(o2, "root_ca_crl", byte_array(&c.root_ca_crl)) != 0 ||
        json_object_set_new(o2, "pck_crl", byte_array(&c.pck_crl)) != 0 ||
        json_object_set_new(o2, "qe_identity_signature", byte_array(&c.qe_identity_signature)) !=
            0 ||
        json_array_append_new(arr, o1) != 0 || json_array_append_new(arr, o2) != 0)
        DIE("cannot build the collateral array");
    json2 = json_dumps(arr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (json2 == NULL || kms_collateral_parse(json2, strlen(json2), &sets, &n) < 0 || n != 2)
        DIE("the collateral array does not parse");
    put_str("collateral", "sim-array.json", json2);
    kms_collateral_free(sets, n);
    json_decref(arr);
    free(json);
    free(json2);
    kms_collateral_clear(&c);
    kms_sim_free(sim);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void gen_webhook(void)
{
    put_str("webhook", "allow.json",
            "{\"isAllowed\":true,\"gatewayAppId\":\"0x5aB0c9F3e1d2A4b6C8e0F1a3B5c7D9e1F3a5B7c9\","
            "\"reason\":\"\"}");
    put_str("webhook", "deny.json",
            "{\"isAllowed\":false,\"gatewayAppId\":\"\",\"reason\":\"app not registered: "
            "\\u00e9\\ud83d\\ude00\"}");
    {
        /* a reason longer than the 511 bytes kept, with a 4-byte character at the cut */
        char body[1024];
        size_t off = (size_t)snprintf(body, sizeof(body),
                                      "{\"isAllowed\":false,\"gatewayAppId\":\"g\",\"reason\":\"");

        memset(body + off, 'r', 509);
        off += 509;
        off += (size_t)snprintf(body + off, sizeof(body) - off, "\xf0\x9f\x98\x80 tail\"}");
        put("webhook", "long-reason.json", body, off);
    }
    put_str("webhook", "info.json",
            "{\"status\":\"ok\",\"kmsContractAddr\":\"0x0000000000000000000000000000000000000001\","
            "\"gatewayAppId\":\"0xg\",\"chainId\":8453,\"appImplementation\":\"0xa\"}");
    put_str("webhook", "both.json",
            "{\"isAllowed\":true,\"gatewayAppId\":\"gw\",\"reason\":\"ok\",\"status\":\"\","
            "\"kmsContractAddr\":\"\",\"chainId\":0,\"appImplementation\":\"\"}");
    put_str("webhook", "duplicate.json",
            "{\"isAllowed\":false,\"isAllowed\":true,\"gatewayAppId\":\"\",\"reason\":\"\"}");
    put_str("webhook", "nul-escape.json",
            "{\"isAllowed\":true,\"gatewayAppId\":\"a\\u0000b\",\"reason\":\"x\\u0000y\","
            "\"status\":\"s\\u0000\",\"kmsContractAddr\":\"k\",\"chainId\":9223372036854775807,"
            "\"appImplementation\":\"i\"}");
    put_str("webhook", "not-object.json", "[true]");
}

int main(void)
{
    gen_attest();
    gen_prpc();
    gen_eth_abi();
    gen_csr();
    gen_backup();
    gen_collateral();
    gen_webhook();
    return 0;
}
