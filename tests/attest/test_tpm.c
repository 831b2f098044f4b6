/*
 * GCP vTPM pieces: TPMS_ATTEST parsing, TCG2 event logs (GCE firmware log, TDX CCEL), the pinned
 * GCP AK root, and (mode "swtpm") end-to-end quotes from a software TPM checked by
 * kms_tpm_verify, with one negative test per check.
 * Usage: test_tpm unit | test_tpm swtpm
 */
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tctildr.h>
#include <unistd.h>

#include "attest/attest.h"
#include "attest/events.h"
#include "attest/internal.h"
#include "attest/tpm.h"
#include "common/buf.h"
#include "common/file.h"
#include "common/hex.h"
#include "kmstest_swtpm.h"
#include "test.h"

static int hex_prefix(const uint8_t *p, size_t n, const char *prefix)
{
    char hex[2 * 64 + 1];

    if (n > 64)
        return 0;
    kms_hex_encode(p, n, hex);
    return strncmp(hex, prefix, strlen(prefix)) == 0;
}

static int hex_suffix(const uint8_t *p, size_t n, const char *suffix)
{
    char hex[2 * 64 + 1];
    size_t sl = strlen(suffix);

    if (n > 64)
        return 0;
    kms_hex_encode(p, n, hex);
    return strlen(hex) >= sl && strcmp(hex + strlen(hex) - sl, suffix) == 0;
}

static void print_hex(const char *label, const uint8_t *p, size_t n)
{
    char hex[2 * 64 + 1];

    kms_hex_encode(p, n, hex);
    printf("  %s %s\n", label, hex);
}

/* ================================================================ unit */

/* The fixture TPMS_ATTEST parses: extraData 12345678, sha256 PCRs 0,1,2, 32-byte digest. */
static void test_tpms_attest_sample(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tpm/tpms-attest-sample.bin", &len);
    struct kms_tpms_attest a;
    static const uint8_t extra[4] = {0x12, 0x34, 0x56, 0x78};

    CHECK(len == 117);
    CHECK_OK(kms_tpms_attest_parse(p, len, &a));
    CHECK(a.extra_data_len == 4 && memcmp(a.extra_data, extra, 4) == 0);
    CHECK(a.qualified_signer_len == 34);
    CHECK(a.n_pcrs == 3);
    for (size_t i = 0; i < a.n_pcrs && i < 3; i++) {
        CHECK(a.pcr_index[i] == i);
        CHECK(a.pcr_alg[i] == KMS_TPM_ALG_SHA256);
    }
    CHECK(a.pcr_digest_len == 32);
    free(p);
}

/* Each structural rule of TPMS_ATTEST is enforced: magic, type, TPM2B maxima, truncation,
 * trailing bytes. */
static void test_tpms_attest_negative(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tpm/tpms-attest-sample.bin", &len);
    uint8_t *b = malloc(len + 1);
    struct kms_tpms_attest a;

    memcpy(b, p, len);
    b[0] ^= 1; /* magic */
    CHECK_RC(kms_tpms_attest_parse(b, len, &a), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("magic");
    memcpy(b, p, len);
    b[5] = 0x17; /* type 0x8017 (certify) */
    CHECK_RC(kms_tpms_attest_parse(b, len, &a), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("type");
    memcpy(b, p, len);
    b[0x2a] = 0x00; /* extraData size 0x0004 → 0x0041 (65 > TPM2B_DATA max 64) */
    b[0x2b] = 0x41;
    CHECK_RC(kms_tpms_attest_parse(b, len, &a), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("extraData");
    memcpy(b, p, len);
    CHECK_RC(kms_tpms_attest_parse(b, len - 1, &a), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("truncated");
    b[len] = 0;
    CHECK_RC(kms_tpms_attest_parse(b, len + 1, &a), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("trailing");
    free(b);
    free(p);
}

/* The GCE firmware log replays to PCR0 0cca9ec1… (see below) and PCR2 1f74355f…, its third PCR2
 * event is the UKI digest 9ab14a46…5f0f, and the TpmEvent[] conversion replays to the same PCR2. */
static void test_gce_eventlog(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tpm/gce-tcg2-eventlog.bin", &len);
    struct kms_tcg_log log;
    struct kms_tpm_event *ev = NULL;
    size_t n_ev = 0, n2 = 0, dlen = 0;
    uint8_t pcr[KMS_TCG_MAX_DIGEST];
    uint8_t mine[32];
    const struct kms_tpm_event *pcr2[8];

    CHECK_OK(kms_tcg_log_parse(p, len, &log));
    CHECK(log.n_algs == 3);
    CHECK(log.alg[0] == KMS_TPM_ALG_SHA1 && log.alg[1] == KMS_TPM_ALG_SHA256 &&
          log.alg[2] == KMS_TPM_ALG_SHA384);
    CHECK(log.alg_size[1] == 32);
    printf("  %zu events\n", log.n_events);
    /* TCG replay skips EV_NO_ACTION (not extended, as the reference's tpm.rs does): PCR0 is then
     * the reference's hard-coded "GCP OVMF v2" value (attestation-reference.md §2.4). */
    CHECK_OK(kms_tcg_log_replay(&log, KMS_TPM_ALG_SHA256, 0, pcr, &dlen));
    CHECK(dlen == 32 &&
          hex_prefix(pcr, 32, "0cca9ec161b09288802e5a112255d21340ed5b797f5fe29cecccfd8f67b9f802"));
    print_hex("PCR0 sha256", pcr, 32);
    /* fixtures/README.md's 68bdae22… is what a replay gets when it also extends the two
     * EV_NO_ACTION (SP800-155) events' zero digests into PCR0, as tpm2_eventlog 5.4 does */
    memset(mine, 0, sizeof(mine));
    for (size_t i = 0; i < log.n_events; i++) {
        uint8_t buf[64];
        const uint8_t *d = kms_tcg_event_digest(&log.events[i], KMS_TPM_ALG_SHA256, NULL);

        if (log.events[i].pcr_index != 0 || d == NULL)
            continue;
        memcpy(buf, mine, 32);
        memcpy(buf + 32, d, 32);
        EVP_Digest(buf, 64, mine, NULL, EVP_sha256(), NULL);
    }
    CHECK(hex_prefix(mine, 32, "68bdae22"));
    print_hex("PCR0 incl. EV_NO_ACTION", mine, 32);
    CHECK_OK(kms_tcg_log_replay(&log, KMS_TPM_ALG_SHA256, 2, pcr, &dlen));
    CHECK(dlen == 32 && hex_prefix(pcr, 32, "1f74355f"));
    print_hex("PCR2 sha256", pcr, 32);

    CHECK_OK(kms_tcg_log_to_tpm_events(&log, &ev, &n_ev));
    for (size_t i = 0; i < n_ev; i++) {
        CHECK(ev[i].digest.len == 32);
        if (ev[i].pcr_index == 2 && n2 < 8)
            pcr2[n2++] = &ev[i];
    }
    CHECK(n2 == 4);
    if (n2 >= 3) {
        CHECK(hex_prefix(pcr2[2]->digest.p, 32, "9ab14a46"));
        CHECK(hex_suffix(pcr2[2]->digest.p, 32, "5f0f"));
        print_hex("PCR2 event[2] (UKI)", pcr2[2]->digest.p, 32);
    }
    /* independent replay over the converted events */
    memset(mine, 0, sizeof(mine));
    for (size_t i = 0; i < n_ev; i++) {
        uint8_t buf[64];

        if (ev[i].pcr_index != 2)
            continue;
        memcpy(buf, mine, 32);
        memcpy(buf + 32, ev[i].digest.p, 32);
        EVP_Digest(buf, 64, mine, NULL, EVP_sha256(), NULL);
    }
    CHECK_OK(kms_tcg_log_replay(&log, KMS_TPM_ALG_SHA256, 2, pcr, &dlen));
    CHECK_MEM(mine, pcr, 32);
    kms_tpm_events_free(ev, n_ev);
    kms_tcg_log_free(&log);
    free(p);
}

/* Malformed logs are rejected: a wrong Spec ID signature, a truncated event, an event with a
 * digest algorithm the header did not announce. */
static void test_eventlog_negative(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tpm/gce-tcg2-eventlog.bin", &len);
    uint8_t *b = malloc(len);
    struct kms_tcg_log log;
    size_t first;

    memcpy(b, p, len);
    b[0x20] = 'X'; /* "Spec ID Event03" → "Xpec ..." */
    CHECK_RC(kms_tcg_log_parse(b, len, &log), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("Spec ID");
    memcpy(b, p, len);
    CHECK_RC(kms_tcg_log_parse(b, len - 3, &log), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("truncated");
    /* first TCG_PCR_EVENT2 starts after the 32-byte header prefix and 41-byte Spec ID event;
     * its first digest algorithm id is at +12 */
    first = 32 + 41;
    CHECK(b[first + 12] == 0x04 && b[first + 13] == 0x00); /* sha1 as laid out in the fixture */
    b[first + 12] = 0x99;
    CHECK_RC(kms_tcg_log_parse(b, len, &log), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("not announced");
    free(b);
    free(p);
}

/* The TDX CCEL parses as a SHA-384-only log of 18 events (the reference's snapshot), ending at
 * the 0xFF padding; its first event is the TdxTable event 2b630fa1… in MR index 1 (RTMR0). */
static void test_ccel(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tdx/ccel.bin", &len);
    struct kms_tcg_log log;
    uint8_t mr[KMS_TCG_MAX_DIGEST];
    size_t dlen = 0;
    const uint8_t *d;
    int idx_ok = 1;

    CHECK(len == 65536);
    CHECK_OK(kms_tcg_log_parse(p, len, &log));
    CHECK(log.n_algs == 1 && log.alg[0] == KMS_TPM_ALG_SHA384 && log.alg_size[0] == 48);
    CHECK(log.n_events == 18);
    if (log.n_events > 0) {
        CHECK(log.events[0].pcr_index == 1);
        CHECK(log.events[0].event_type == 0x8000000Bu);
        d = kms_tcg_event_digest(&log.events[0], KMS_TPM_ALG_SHA384, &dlen);
        CHECK(d != NULL && dlen == 48 && hex_prefix(d, 48, "2b630fa1d8fa9b6e"));
    }
    for (size_t i = 0; i < log.n_events; i++) {
        if (log.events[i].pcr_index < 1 || log.events[i].pcr_index > 4 ||
            log.events[i].n_digests != 1)
            idx_ok = 0;
    }
    CHECK(idx_ok);
    CHECK(kms_tcg_event_digest(&log.events[0], KMS_TPM_ALG_SHA256, NULL) == NULL);
    for (uint32_t i = 1; i <= 2; i++) {
        char label[32];

        CHECK_OK(kms_tcg_log_replay(&log, KMS_TPM_ALG_SHA384, i, mr, &dlen));
        CHECK(dlen == 48);
        snprintf(label, sizeof(label), "CCEL RTMR%u", i - 1);
        print_hex(label, mr, 48);
    }
    /* the SHA-256 bank does not exist in this log */
    CHECK_RC(kms_tcg_log_replay(&log, KMS_TPM_ALG_SHA256, 1, mr, &dlen), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("no 0x000b digest");
    kms_tcg_log_free(&log);
    free(p);
}

/* The compiled-in GCP AK root is the pinned Google "EK/AK CA Root" and equals both
 * attest/roots/gcp-ek-ak-root-ca.pem and the fixture. */
static void test_gcp_root(void)
{
    X509 *x = kms_attest_gcp_root();
    X509 *f = NULL;
    uint8_t fp[32];
    unsigned n = 0;
    char path[4096];
    const char *src = getenv("KMS_SOURCE_DIR");
    FILE *fh;

    CHECK(x != NULL);
    if (x == NULL)
        return;
    CHECK(X509_digest(x, EVP_sha256(), fp, &n) == 1 && n == 32);
    CHECK(hex_prefix(fp, 32, "594759594b9b61524f6c8ef668f7177f7b9066bc0674f2f49fe9e052be78beb2"));
    fh = fopen(kms_test_fixture("roots/gcp-ek-ak-root-ca.pem"), "r");
    CHECK(fh != NULL);
    if (fh != NULL) {
        f = PEM_read_X509(fh, NULL, NULL, NULL);
        fclose(fh);
        CHECK(f != NULL && X509_cmp(x, f) == 0);
        X509_free(f);
    }
    snprintf(path, sizeof(path), "%s/attest/roots/gcp-ek-ak-root-ca.pem", src != NULL ? src : "..");
    fh = fopen(path, "r");
    CHECK(fh != NULL);
    if (fh != NULL) {
        f = PEM_read_X509(fh, NULL, NULL, NULL);
        fclose(fh);
        CHECK(f != NULL && X509_cmp(x, f) == 0);
        X509_free(f);
    }
    X509_free(x);
}

/* ================================================================ swtpm */

static struct kmstest_swtpm g_swtpm;

/* swtpm is up once a vTPM context opens on it (kept in *arg). */
static int vtpm_ready(const char *tcti, void *arg)
{
    return kms_vtpm_open(tcti, arg) == 0;
}

static struct kms_vtpm *tpm;
static X509 *ca;
static EVP_PKEY *ca_key;
static uint8_t tdx_qd[32];

static void sha256(const char *s, uint8_t out[32])
{
    EVP_Digest(s, strlen(s), out, NULL, EVP_sha256(), NULL);
}

static int bytes_dup(struct kms_bytes *b, const uint8_t *p, size_t n)
{
    b->p = malloc(n);
    if (b->p == NULL)
        return -1;
    memcpy(b->p, p, n);
    b->len = n;
    return 0;
}

/* Firmware-like events: PCR0 ← fw-0, PCR2 ← gpt, uki; PCR14 ← runtime event "app-id". */
static struct kms_runtime_event rt_event = {"app-id", {(uint8_t *)"0123456789abcdefghij", 20}};
static const char *fw_names[3] = {"fw-0", "gpt", "uki"};
static const uint32_t fw_pcrs[3] = {0, 2, 2};

static void extend_fixture_pcrs(void)
{
    uint8_t d[32];

    for (int i = 0; i < 3; i++) {
        sha256(fw_names[i], d);
        CHECK_OK(kms_vtpm_pcr_extend(tpm, fw_pcrs[i], d));
    }
    kms_att_event_digest(0, rt_event.event, rt_event.payload.p, rt_event.payload.len, d);
    CHECK_OK(kms_vtpm_pcr_extend(tpm, 14, d));
}

/* A quote plus AK cert (issued by ca/ca_key unless given) and the firmware events. */
static int make_quote(enum kms_vtpm_ak_kind kind, X509 *issuer, EVP_PKEY *issuer_key,
                      struct kms_tpm_quote *q)
{
    EVP_PKEY *ak = NULL;
    int rc;

    memset(q, 0, sizeof(*q));
    rc = kms_vtpm_create_ak(tpm, kind, &ak);
    if (rc == 0)
        rc = kms_vtpm_quote(tpm, tdx_qd, sizeof(tdx_qd), q);
    if (rc == 0)
        rc = kms_vtpm_issue_ak_cert(ak, issuer != NULL ? issuer : ca,
                                    issuer_key != NULL ? issuer_key : ca_key, &q->ak_cert.p,
                                    &q->ak_cert.len);
    if (rc == 0) {
        q->events = calloc(3, sizeof(*q->events));
        if (q->events == NULL)
            rc = -1;
        for (size_t i = 0; rc == 0 && i < 3; i++) {
            uint8_t d[32];

            sha256(fw_names[i], d);
            q->events[i].pcr_index = fw_pcrs[i];
            rc = bytes_dup(&q->events[i].digest, d, 32);
            if (rc == 0)
                q->n_events = i + 1;
        }
    }
    EVP_PKEY_free(ak);
    return rc;
}

static struct kms_attest_ctx *ctx_with(X509 *root, int is_sim)
{
    struct kms_attest_ctx *c = kms_attest_ctx_new();

    if (c != NULL && root != NULL && kms_attest_ctx_add_root(c, KMS_ROOT_GCP, root, is_sim) < 0) {
        kms_attest_ctx_free(c);
        return NULL;
    }
    return c;
}

/* A genuine swtpm quote verifies: PCR0/PCR2 replay from the events, PCR14 equals the runtime
 * replay, and the result carries PCR0, PCR2, PCR14 as read from the TPM. */
static void check_accepts(enum kms_vtpm_ak_kind kind)
{
    struct kms_attest_ctx *c = ctx_with(ca, 0);
    struct kms_tpm_quote q;
    struct kms_verified v;
    uint8_t want[32];
    uint8_t pcr14[32];

    memset(&v, 0, sizeof(v));
    CHECK_OK(make_quote(kind, NULL, NULL, &q));
    CHECK_OK(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v));
    CHECK(v.sim == 0);
    CHECK_OK(kms_vtpm_pcr_read(tpm, 0, want));
    CHECK_MEM(v.pcr[0], want, 32);
    CHECK_OK(kms_vtpm_pcr_read(tpm, 2, want));
    CHECK_MEM(v.pcr[1], want, 32);
    kms_att_replay(0, &rt_event, 1, NULL, pcr14);
    CHECK_MEM(v.pcr[2], pcr14, 32);
    print_hex(kind == KMS_VTPM_AK_ECC ? "ECDSA quote PCR14" : "RSASSA quote PCR14", v.pcr[2], 32);
    printf("  message %zu B, signature %zu B, AK cert %zu B\n", q.message.len, q.signature.len,
           q.ak_cert.len);
    kms_tpm_quote_clear(&q);
    kms_attest_ctx_free(c);
}

static void test_swtpm_ecdsa_accepts(void)
{
    check_accepts(KMS_VTPM_AK_ECC);
}

static void test_swtpm_rsa_accepts(void)
{
    check_accepts(KMS_VTPM_AK_RSA);
}

/* Each check of kms_tpm_verify rejects exactly its input: signature, signed message, signature
 * hash, PCR value, PCR order, event digest, qualifying data. */
static void check_negatives(enum kms_vtpm_ak_kind kind)
{
    struct kms_attest_ctx *c = ctx_with(ca, 0);
    struct kms_tpm_quote q;
    struct kms_verified v;
    uint8_t save;
    uint8_t wrong_qd[32];
    struct kms_pcr_value tmp;

    memset(&v, 0, sizeof(v));
    CHECK_OK(make_quote(kind, NULL, NULL, &q));
    CHECK_OK(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v));

    save = q.signature.p[q.signature.len - 1];
    q.signature.p[q.signature.len - 1] ^= 0x01;
    CHECK_RC(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v), KMS_ERR_ATT_TPM_SIG);
    CHECK_DETAIL("does not verify");
    q.signature.p[q.signature.len - 1] = save;

    save = q.signature.p[3];
    q.signature.p[3] = 0x0C; /* hashAlg SHA-384 */
    CHECK_RC(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v), KMS_ERR_ATT_TPM_SIG);
    CHECK_DETAIL("not SHA-256");
    q.signature.p[3] = save;

    save = q.message.p[q.message.len - 40]; /* inside clockInfo/firmwareVersion */
    q.message.p[q.message.len - 40] ^= 0x01;
    CHECK_RC(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v), KMS_ERR_ATT_TPM_SIG);
    CHECK_DETAIL("does not verify");
    q.message.p[q.message.len - 40] = save;

    q.pcrs[2].value.p[0] ^= 0x01; /* PCR14 claimed value */
    CHECK_RC(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v), KMS_ERR_ATT_PCR);
    CHECK_DETAIL("pcrDigest");
    q.pcrs[2].value.p[0] ^= 0x01;

    tmp = q.pcrs[0];
    q.pcrs[0] = q.pcrs[1];
    q.pcrs[1] = tmp;
    CHECK_RC(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v), KMS_ERR_ATT_PCR);
    CHECK_DETAIL("selects PCR");
    tmp = q.pcrs[0];
    q.pcrs[0] = q.pcrs[1];
    q.pcrs[1] = tmp;

    q.events[2].digest.p[0] ^= 0x01; /* the "uki" event of PCR2 */
    CHECK_RC(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v), KMS_ERR_ATT_PCR);
    CHECK_DETAIL("PCR 2");
    q.events[2].digest.p[0] ^= 0x01;

    memcpy(wrong_qd, tdx_qd, 32);
    wrong_qd[31] ^= 0x01;
    CHECK_RC(kms_tpm_verify(c, &q, wrong_qd, sizeof(wrong_qd), &v), KMS_ERR_ATT_REPORT_DATA);
    CHECK_DETAIL("extraData");

    /* restored: accepted again, so each failure above came from the one flip */
    CHECK_OK(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v));
    kms_tpm_quote_clear(&q);
    kms_attest_ctx_free(c);
}

static void test_swtpm_ecdsa_negatives(void)
{
    check_negatives(KMS_VTPM_AK_ECC);
}

static void test_swtpm_rsa_negatives(void)
{
    check_negatives(KMS_VTPM_AK_RSA);
}

/* The AK certificate must chain to a configured GCP root: another CA, no root, the real Google
 * root only, an expired verification time, a certificate for another key, and a malformed
 * certificate are each rejected with their own code. */
static void test_swtpm_ak_chain(void)
{
    struct kms_attest_ctx *c = ctx_with(ca, 0);
    struct kms_attest_ctx *none = ctx_with(NULL, 0);
    X509 *google = kms_attest_gcp_root();
    struct kms_attest_ctx *g = ctx_with(google, 0);
    X509 *other = NULL;
    EVP_PKEY *other_key = NULL;
    EVP_PKEY *stranger = EVP_EC_gen("P-256");
    struct kms_tpm_quote q;
    struct kms_verified v;
    struct kms_bytes save;
    uint8_t *der = NULL;
    size_t der_len = 0;

    memset(&v, 0, sizeof(v));
    CHECK_OK(kms_vtpm_test_ca("other CA", NULL, NULL, &other, &other_key));
    CHECK_OK(make_quote(KMS_VTPM_AK_ECC, other, other_key, &q));
    CHECK_RC(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("TPM AK certificate chain");
    CHECK_RC(kms_tpm_verify(none, &q, tdx_qd, sizeof(tdx_qd), &v), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("no trust anchor");
    CHECK_RC(kms_tpm_verify(g, &q, tdx_qd, sizeof(tdx_qd), &v), KMS_ERR_ATT_CHAIN);
    kms_tpm_quote_clear(&q);

    CHECK_OK(make_quote(KMS_VTPM_AK_ECC, NULL, NULL, &q));
    kms_attest_ctx_set_time(c, time(NULL) + 2 * 365 * 24 * 3600L);
    CHECK_RC(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v), KMS_ERR_ATT_EXPIRED);
    kms_attest_ctx_set_time(c, 0);

    /* a valid certificate from the right CA, but for a key that did not sign */
    save = q.ak_cert;
    CHECK_OK(kms_vtpm_issue_ak_cert(stranger, ca, ca_key, &der, &der_len));
    q.ak_cert.p = der;
    q.ak_cert.len = der_len;
    CHECK_RC(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v), KMS_ERR_ATT_TPM_SIG);
    CHECK_DETAIL("does not verify");
    free(der);

    /* trailing garbage after the DER certificate */
    der = malloc(save.len + 1);
    memcpy(der, save.p, save.len);
    der[save.len] = 0;
    q.ak_cert.p = der;
    q.ak_cert.len = save.len + 1;
    CHECK_RC(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("one DER certificate");
    free(der);
    q.ak_cert = save;
    CHECK_OK(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v));
    kms_tpm_quote_clear(&q);

    X509_free(other);
    EVP_PKEY_free(other_key);
    EVP_PKEY_free(stranger);
    X509_free(google);
    kms_attest_ctx_free(g);
    kms_attest_ctx_free(none);
    kms_attest_ctx_free(c);
}

/* An AK issued by an intermediate verifies only when the intermediate is configured next to the
 * root (no AIA fetching); a simulation root marks the result sim. */
static void test_swtpm_intermediate_and_sim(void)
{
    X509 *inter = NULL;
    EVP_PKEY *inter_key = NULL;
    struct kms_attest_ctx *root_only = ctx_with(ca, 0);
    struct kms_attest_ctx *both = ctx_with(ca, 0);
    struct kms_attest_ctx *sim = ctx_with(ca, 1);
    struct kms_tpm_quote q;
    struct kms_verified v;

    memset(&v, 0, sizeof(v));
    CHECK_OK(kms_vtpm_test_ca("test EK/AK CA Intermediate", ca, ca_key, &inter, &inter_key));
    CHECK_OK(kms_attest_ctx_add_root(both, KMS_ROOT_GCP, inter, 0));
    CHECK_OK(make_quote(KMS_VTPM_AK_ECC, inter, inter_key, &q));
    CHECK_RC(kms_tpm_verify(root_only, &q, tdx_qd, sizeof(tdx_qd), &v), KMS_ERR_ATT_CHAIN);
    CHECK_OK(kms_tpm_verify(both, &q, tdx_qd, sizeof(tdx_qd), &v));
    CHECK(v.sim == 0);
    kms_tpm_quote_clear(&q);

    CHECK_OK(make_quote(KMS_VTPM_AK_ECC, NULL, NULL, &q));
    CHECK_OK(kms_tpm_verify(sim, &q, tdx_qd, sizeof(tdx_qd), &v));
    CHECK(v.sim == 1);
    kms_tpm_quote_clear(&q);

    X509_free(inter);
    EVP_PKEY_free(inter_key);
    kms_attest_ctx_free(root_only);
    kms_attest_ctx_free(both);
    kms_attest_ctx_free(sim);
}

/* Qualifying data is bounded by TPM2B_DATA; an over-long request fails before the TPM. */
static void test_swtpm_quote_limits(void)
{
    uint8_t big[65] = {0};
    struct kms_tpm_quote q;

    memset(&q, 0, sizeof(q));
    CHECK_OK(kms_vtpm_create_ak(tpm, KMS_VTPM_AK_ECC, NULL));
    CHECK_RC(kms_vtpm_quote(tpm, big, sizeof(big), &q), KMS_ERR_INVAL);
    CHECK(q.message.p == NULL);
}

/* ================================================================ soft-signed quotes (unit) */

/* A TPMS_ATTEST built by hand and signed by an OpenSSL key, so that selections a vTPM producer
 * never makes (other banks, other PCRs) can be tested. */
struct soft {
    X509 *ca;
    EVP_PKEY *ca_key;
    EVP_PKEY *key;
    struct kms_tpm_quote q;
};

static void put_be16(struct kms_buf *b, uint16_t v)
{
    CHECK_OK(kms_buf_put_u16be(b, v));
}

/* pcrs: indices of a single selection in bank alg; values: 32 bytes each, value i = i+1 repeated.
 */
static void soft_build(struct soft *s, uint16_t alg, const uint32_t *pcrs, size_t n,
                       const uint8_t *extra, size_t extra_len)
{
    struct kms_buf m = {0};
    uint8_t bitmap[3] = {0, 0, 0};
    uint8_t vals[8][32];
    uint8_t digest[32];
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    uint8_t der[128];
    size_t der_len = sizeof(der);
    const uint8_t *dp = der;
    ECDSA_SIG *sig;
    const BIGNUM *r, *sv;
    uint8_t rb[32], sb[32];
    struct kms_buf sg = {0};

    memset(&s->q, 0, sizeof(s->q));
    for (size_t i = 0; i < n; i++) {
        memset(vals[i], (int)(i + 1), 32);
        bitmap[pcrs[i] / 8] |= (uint8_t)(1u << (pcrs[i] % 8));
    }
    EVP_Digest(vals, n * 32, digest, NULL, EVP_sha256(), NULL);
    CHECK_OK(kms_buf_put_u32be(&m, 0xff544347u));
    put_be16(&m, 0x8018);
    put_be16(&m, 2); /* qualifiedSigner: a bare alg id, enough for the parser */
    put_be16(&m, 0x000b);
    put_be16(&m, (uint16_t)extra_len);
    CHECK_OK(kms_buf_put(&m, extra, extra_len));
    CHECK_OK(kms_buf_put_u64be(&m, 1234));
    CHECK_OK(kms_buf_put_u32be(&m, 1));
    CHECK_OK(kms_buf_put_u32be(&m, 0));
    CHECK_OK(kms_buf_put_u8(&m, 1));
    CHECK_OK(kms_buf_put_u64be(&m, 0x2016051100162800ull));
    CHECK_OK(kms_buf_put_u32be(&m, 1));
    put_be16(&m, alg);
    CHECK_OK(kms_buf_put_u8(&m, 3));
    CHECK_OK(kms_buf_put(&m, bitmap, 3));
    put_be16(&m, 32);
    CHECK_OK(kms_buf_put(&m, digest, 32));
    s->q.message.p = kms_buf_steal(&m, &s->q.message.len);

    CHECK(EVP_DigestSignInit(mctx, NULL, EVP_sha256(), NULL, s->key) == 1);
    CHECK(EVP_DigestSign(mctx, der, &der_len, s->q.message.p, s->q.message.len) == 1);
    sig = d2i_ECDSA_SIG(NULL, &dp, (long)der_len);
    CHECK(sig != NULL);
    ECDSA_SIG_get0(sig, &r, &sv);
    BN_bn2binpad(r, rb, 32);
    BN_bn2binpad(sv, sb, 32);
    put_be16(&sg, 0x0018);
    put_be16(&sg, 0x000b);
    put_be16(&sg, 32);
    CHECK_OK(kms_buf_put(&sg, rb, 32));
    put_be16(&sg, 32);
    CHECK_OK(kms_buf_put(&sg, sb, 32));
    s->q.signature.p = kms_buf_steal(&sg, &s->q.signature.len);
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(mctx);

    s->q.pcrs = calloc(n, sizeof(*s->q.pcrs));
    for (size_t i = 0; i < n; i++) {
        s->q.pcrs[i].index = pcrs[i];
        s->q.pcrs[i].algorithm = strdup("sha256");
        s->q.pcrs[i].value.p = malloc(32);
        memcpy(s->q.pcrs[i].value.p, vals[i], 32);
        s->q.pcrs[i].value.len = 32;
    }
    s->q.n_pcrs = n;
    s->q.platform = 1;
    CHECK_OK(kms_vtpm_issue_ak_cert(s->key, s->ca, s->ca_key, &s->q.ak_cert.p, &s->q.ak_cert.len));
}

static const uint32_t policy[3] = {0, 2, 14};
static const uint8_t soft_qd[4] = {1, 2, 3, 4};

/* A soft-signed quote over sha256:0,2,14 verifies (the verifier is not tied to swtpm output);
 * then every structural check of the signature and of the PCR list rejects its own flip. */
static void test_soft_quote(void)
{
    struct soft s = {0};
    struct kms_attest_ctx *c;
    struct kms_verified v;
    struct kms_bytes save;
    uint8_t *b;
    EVP_PKEY *p384 = EVP_EC_gen("P-384");
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    static const uint32_t no14[3] = {0, 2, 15};

    memset(&v, 0, sizeof(v));
    CHECK_OK(kms_vtpm_test_ca("soft CA", NULL, NULL, &s.ca, &s.ca_key));
    s.key = EVP_EC_gen("P-256");
    c = ctx_with(s.ca, 0);
    soft_build(&s, KMS_TPM_ALG_SHA256, policy, 3, soft_qd, sizeof(soft_qd));
    CHECK_OK(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v));
    CHECK(v.pcr[2][0] == 3 && v.pcr[1][0] == 2 && v.pcr[0][0] == 1);

    /* signature structure */
    s.q.signature.p[1] = 0x15; /* sigAlg 0x0015 (RSAPSS) */
    CHECK_RC(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v), KMS_ERR_ATT_TPM_SIG);
    CHECK_DETAIL("neither RSASSA nor ECDSA");
    s.q.signature.p[1] = 0x14; /* RSASSA claimed, EC key */
    CHECK_RC(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v), KMS_ERR_ATT_TPM_SIG);
    CHECK_DETAIL("not RSA");
    s.q.signature.p[1] = 0x18;
    CHECK_OK(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v));
    s.q.signature.len--;
    CHECK_RC(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v), KMS_ERR_ATT_TPM_SIG);
    CHECK_DETAIL("malformed");
    s.q.signature.len++;
    b = realloc(s.q.signature.p, s.q.signature.len + 1);
    s.q.signature.p = b;
    b[s.q.signature.len] = 0;
    s.q.signature.len++;
    CHECK_RC(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v), KMS_ERR_ATT_TPM_SIG);
    CHECK_DETAIL("trailing");
    s.q.signature.len--;

    /* AK certificate key of the wrong type or curve */
    save = s.q.ak_cert;
    CHECK_OK(kms_vtpm_issue_ak_cert(p384, s.ca, s.ca_key, &s.q.ak_cert.p, &s.q.ak_cert.len));
    CHECK_RC(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v), KMS_ERR_ATT_TPM_SIG);
    CHECK_DETAIL("P-256");
    free(s.q.ak_cert.p);
    CHECK_OK(kms_vtpm_issue_ak_cert(rsa, s.ca, s.ca_key, &s.q.ak_cert.p, &s.q.ak_cert.len));
    CHECK_RC(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v), KMS_ERR_ATT_TPM_SIG);
    CHECK_DETAIL("not EC");
    free(s.q.ak_cert.p);
    s.q.ak_cert.p = NULL;
    s.q.ak_cert.len = 0;
    CHECK_RC(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("no AK certificate");
    s.q.ak_cert = save;

    /* PCR list against the selection */
    s.q.n_pcrs = 2;
    CHECK_RC(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v), KMS_ERR_ATT_PCR);
    CHECK_DETAIL("pcr_values has 2");
    s.q.n_pcrs = 3;
    s.q.pcrs[1].value.len = 31;
    CHECK_RC(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v), KMS_ERR_ATT_PCR);
    CHECK_DETAIL("want 32");
    s.q.pcrs[1].value.len = 32;
    /* an event with a non-SHA-256 digest */
    s.q.events = calloc(1, sizeof(*s.q.events));
    s.q.n_events = 1;
    s.q.events[0].pcr_index = 0;
    s.q.events[0].digest.p = calloc(1, 20);
    s.q.events[0].digest.len = 20;
    CHECK_RC(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("20-byte digest");
    kms_tpm_events_free(s.q.events, 1);
    s.q.events = NULL;
    s.q.n_events = 0;
    CHECK_OK(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v));
    kms_tpm_quote_clear(&s.q);

    /* selections a GCP quote must not have: the SHA-1 bank, no PCR 14 */
    soft_build(&s, KMS_TPM_ALG_SHA1, policy, 3, soft_qd, sizeof(soft_qd));
    CHECK_RC(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v), KMS_ERR_ATT_PCR);
    CHECK_DETAIL("bank 0x0004");
    kms_tpm_quote_clear(&s.q);
    soft_build(&s, KMS_TPM_ALG_SHA256, no14, 3, soft_qd, sizeof(soft_qd));
    CHECK_RC(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v), KMS_ERR_ATT_PCR);
    CHECK_DETAIL("does not cover PCR 14");
    kms_tpm_quote_clear(&s.q);
    /* empty qualifying data must match empty extraData, not anything */
    soft_build(&s, KMS_TPM_ALG_SHA256, policy, 3, NULL, 0);
    CHECK_OK(kms_tpm_verify(c, &s.q, NULL, 0, &v));
    CHECK_RC(kms_tpm_verify(c, &s.q, soft_qd, sizeof(soft_qd), &v), KMS_ERR_ATT_REPORT_DATA);
    kms_tpm_quote_clear(&s.q);

    EVP_PKEY_free(p384);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(s.key);
    X509_free(s.ca);
    EVP_PKEY_free(s.ca_key);
    kms_attest_ctx_free(c);
}

/* Writes data (zero-padded to size) into a fresh owner-defined NV index. */
static int nv_provision(ESYS_CONTEXT *e, uint32_t index, const uint8_t *data, size_t len,
                        size_t size)
{
    TPM2B_AUTH auth;
    TPM2B_NV_PUBLIC pub;
    ESYS_TR nv = ESYS_TR_NONE;
    TPM2B_MAX_NV_BUFFER chunk;
    uint8_t *buf = calloc(1, size);

    if (buf == NULL || len > size)
        return -1;
    memcpy(buf, data, len);
    memset(&auth, 0, sizeof(auth));
    memset(&pub, 0, sizeof(pub));
    pub.nvPublic.nvIndex = index;
    pub.nvPublic.nameAlg = TPM2_ALG_SHA256;
    pub.nvPublic.attributes =
        TPMA_NV_OWNERWRITE | TPMA_NV_OWNERREAD | TPMA_NV_AUTHREAD | TPMA_NV_NO_DA;
    pub.nvPublic.dataSize = (UINT16)size;
    if (Esys_NV_DefineSpace(e, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                            &auth, &pub, &nv) != TSS2_RC_SUCCESS) {
        free(buf);
        return -1;
    }
    for (size_t off = 0; off < size; off += 512) {
        size_t n = size - off < 512 ? size - off : 512;

        chunk.size = (UINT16)n;
        memcpy(chunk.buffer, buf + off, n);
        if (Esys_NV_Write(e, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                          &chunk, (UINT16)off) != TSS2_RC_SUCCESS) {
            free(buf);
            return -1;
        }
    }
    free(buf);
    return 0;
}

/* GCP's pre-provisioned AK: absent NV → NOTFOUND; a template (TPMT_PUBLIC) plus a certificate
 * for the recreated key in NV gives an AK whose quotes verify with the certificate read back;
 * a certificate for another key in NV is refused. swtpm serves one client, so the test closes
 * the producer while it provisions NV through its own ESYS context. */
static void test_swtpm_gcp_ak(void)
{
    TSS2_TCTI_CONTEXT *tc = NULL;
    ESYS_CONTEXT *e = NULL;
    TPMT_PUBLIC tp;
    uint8_t tbuf[512];
    size_t tlen = 0;
    EVP_PKEY *ak = NULL, *loaded = NULL;
    EVP_PKEY *stranger = EVP_EC_gen("P-256");
    uint8_t *good = NULL, *bad = NULL, *cert = NULL;
    size_t good_len = 0, bad_len = 0, cert_len = 0;
    struct kms_attest_ctx *c = ctx_with(ca, 0);
    struct kms_tpm_quote q;
    struct kms_verified v;

    memset(&q, 0, sizeof(q));
    memset(&v, 0, sizeof(v));
    CHECK_RC(kms_vtpm_load_gcp_ak(tpm, KMS_VTPM_AK_ECC, &cert, &cert_len, NULL), KMS_ERR_NOTFOUND);
    CHECK_DETAIL("0x01c10003");
    /* the same template kms_vtpm_create_ak uses, so the recreated primary is the same key */
    CHECK_OK(kms_vtpm_create_ak(tpm, KMS_VTPM_AK_ECC, &ak));
    CHECK_OK(kms_vtpm_issue_ak_cert(ak, ca, ca_key, &good, &good_len));
    CHECK_OK(kms_vtpm_issue_ak_cert(stranger, ca, ca_key, &bad, &bad_len));
    memset(&tp, 0, sizeof(tp));
    tp.type = TPM2_ALG_ECC;
    tp.nameAlg = TPM2_ALG_SHA256;
    tp.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                          TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;
    tp.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
    tp.parameters.eccDetail.scheme.scheme = TPM2_ALG_ECDSA;
    tp.parameters.eccDetail.scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
    tp.parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
    tp.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
    CHECK(Tss2_MU_TPMT_PUBLIC_Marshal(&tp, tbuf, sizeof(tbuf), &tlen) == TSS2_RC_SUCCESS);

    kms_vtpm_free(tpm);
    tpm = NULL;
    CHECK(Tss2_TctiLdr_Initialize(g_swtpm.tcti, &tc) == TSS2_RC_SUCCESS);
    CHECK(tc != NULL && Esys_Initialize(&e, tc, NULL) == TSS2_RC_SUCCESS);
    if (e != NULL) {
        CHECK(nv_provision(e, 0x01C10003u, tbuf, tlen, tlen) == 0);
        CHECK(nv_provision(e, 0x01C10002u, bad, bad_len, 1024) == 0);
        Esys_Finalize(&e);
    }
    Tss2_TctiLdr_Finalize(&tc);
    CHECK_OK(kms_vtpm_open(g_swtpm.tcti, &tpm));
    if (tpm == NULL)
        goto out;
    CHECK_RC(kms_vtpm_load_gcp_ak(tpm, KMS_VTPM_AK_ECC, &cert, &cert_len, NULL), KMS_ERR_STATE);
    CHECK_DETAIL("another key");
    CHECK(cert == NULL);

    /* replace the certificate with the right one */
    kms_vtpm_free(tpm);
    tpm = NULL;
    CHECK(Tss2_TctiLdr_Initialize(g_swtpm.tcti, &tc) == TSS2_RC_SUCCESS);
    CHECK(tc != NULL && Esys_Initialize(&e, tc, NULL) == TSS2_RC_SUCCESS);
    if (e != NULL) {
        ESYS_TR nv = ESYS_TR_NONE;

        CHECK(Esys_TR_FromTPMPublic(e, 0x01C10002u, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                    &nv) == TSS2_RC_SUCCESS);
        CHECK(Esys_NV_UndefineSpace(e, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                    ESYS_TR_NONE) == TSS2_RC_SUCCESS);
        CHECK(nv_provision(e, 0x01C10002u, good, good_len, 1024) == 0);
        Esys_Finalize(&e);
    }
    Tss2_TctiLdr_Finalize(&tc);
    CHECK_OK(kms_vtpm_open(g_swtpm.tcti, &tpm));
    if (tpm == NULL)
        goto out;
    CHECK_OK(kms_vtpm_load_gcp_ak(tpm, KMS_VTPM_AK_ECC, &cert, &cert_len, &loaded));
    CHECK(cert_len == good_len && cert != NULL && memcmp(cert, good, good_len) == 0);
    CHECK(loaded != NULL && EVP_PKEY_eq(loaded, ak) == 1);
    CHECK_OK(kms_vtpm_quote(tpm, tdx_qd, sizeof(tdx_qd), &q));
    q.ak_cert.p = cert;
    q.ak_cert.len = cert_len;
    cert = NULL;
    CHECK_OK(kms_tpm_verify(c, &q, tdx_qd, sizeof(tdx_qd), &v));
out:
    kms_tpm_quote_clear(&q);
    free(cert);
    free(good);
    free(bad);
    EVP_PKEY_free(ak);
    EVP_PKEY_free(loaded);
    EVP_PKEY_free(stranger);
    kms_attest_ctx_free(c);
}

static int run_swtpm(void)
{
    int rc = kmstest_swtpm_start(&g_swtpm, vtpm_ready, &tpm);

    if (rc == 77) {
        printf("skip: swtpm not installed\n");
        return 77;
    }
    if (rc != 0) {
        kmstest_swtpm_stop(&g_swtpm);
        fprintf(stderr, "FAIL: cannot start swtpm\n");
        return 1;
    }
    sha256("stand-in for the TDX quote bytes", tdx_qd);
    if (kms_vtpm_test_ca("kmsd test EK/AK CA Root", NULL, NULL, &ca, &ca_key) < 0) {
        fprintf(stderr, "FAIL: test CA: %s\n", kms_err_detail());
        kms_test_failures++;
    } else {
        extend_fixture_pcrs();
        RUN(test_swtpm_ecdsa_accepts);
        RUN(test_swtpm_rsa_accepts);
        RUN(test_swtpm_ecdsa_negatives);
        RUN(test_swtpm_rsa_negatives);
        RUN(test_swtpm_ak_chain);
        RUN(test_swtpm_intermediate_and_sim);
        RUN(test_swtpm_quote_limits);
        RUN(test_swtpm_gcp_ak);
    }
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    kms_vtpm_free(tpm);
    kmstest_swtpm_stop(&g_swtpm);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "unit";

    if (strcmp(mode, "swtpm") == 0) {
        if (run_swtpm() == 77)
            return 77;
    } else {
        RUN(test_tpms_attest_sample);
        RUN(test_tpms_attest_negative);
        RUN(test_gce_eventlog);
        RUN(test_eventlog_negative);
        RUN(test_ccel);
        RUN(test_gcp_root);
        RUN(test_soft_quote);
    }
    TEST_MAIN_END();
}
