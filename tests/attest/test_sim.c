/*
 * The simulated TEE (attest/sim.c): its evidence is accepted by the production TDX verifier
 * only through the simulation root, and every verifier check rejects exactly the input it
 * guards when one byte of simulated evidence is changed.
 */
#include <ftw.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "attest/attest.h"
#include "attest/events.h"
#include "attest/sim.h"
#include "attest/tdx.h"
#include "test.h"

static char g_dir[256];

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

static void rm_rf(const char *d)
{
    (void)nftw(d, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void new_dir(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/kms-test-sim-XXXXXX");
    if (mkdtemp(buf) == NULL) {
        perror("mkdtemp");
        exit(2);
    }
}

static const char *const ev_names[] = {"system-preparing", "app-id",       "compose-hash",
                                       "instance-id",      "boot-mr-done", "system-ready"};
static uint8_t ev_payload[6][20];
static struct kms_runtime_event g_events[6];

static void init_events(void)
{
    for (size_t i = 0; i < 6; i++) {
        for (size_t j = 0; j < sizeof(ev_payload[i]); j++)
            ev_payload[i][j] = (uint8_t)(i * 31 + j);
        g_events[i].event = (char *)ev_names[i];
        g_events[i].payload.p = ev_payload[i];
        /* system-preparing and boot-mr-done carry empty payloads, like the reference */
        g_events[i].payload.len = (i == 0 || i == 4) ? 0 : sizeof(ev_payload[i]);
    }
}

static struct kms_attest_ctx *sim_ctx(const struct kms_sim *sim, int is_sim)
{
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();

    CHECK(ctx != NULL);
    CHECK_OK(kms_attest_ctx_add_root_file(ctx, KMS_ROOT_TDX, kms_sim_root_path(sim), is_sim));
    return ctx;
}

static struct kms_attestation *make_att(const struct kms_sim *sim,
                                        const struct kms_sim_measurements *m, uint8_t rd[64])
{
    struct kms_attestation *att = NULL;

    CHECK(RAND_bytes(rd, 64) == 1);
    CHECK_OK(kms_sim_attest(sim, m, rd, g_events, 6, "{\"os_image_hash\":\"00\"}", &att));
    CHECK(att != NULL);
    return att;
}

/* A simulated attestation verifies with the production verifier when sim-root.pem is a
 * simulation root: sim flag set, PPID from the PCK certificate, RTMR3 = replay of the runtime
 * events, default measurements are the documented constants, events mirrored as imr-3 TDX
 * events with their SHA-384 digests. */
static void test_sim_attest_verifies(void)
{
    struct kms_sim *sim = NULL;
    struct kms_attestation *att;
    struct kms_attest_ctx *ctx;
    struct kms_verified v;
    uint8_t rd[64];
    uint8_t want[48];
    static const uint8_t zero[64];

    CHECK_OK(kms_sim_open(g_dir, &sim));
    if (sim == NULL)
        return;
    att = make_att(sim, NULL, rd);
    ctx = sim_ctx(sim, 1);
    if (att == NULL || ctx == NULL)
        goto out;
    CHECK(att->mode == KMS_ATT_TDX);
    CHECK_MEM(att->report_data, rd, 64);
    CHECK(strcmp(att->config, "{\"os_image_hash\":\"00\"}") == 0);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    CHECK(v.sim == 1);
    CHECK(v.mode == KMS_ATT_TDX);
    CHECK(v.ppid_len == 16);
    CHECK(memcmp(v.ppid, zero, v.ppid_len) != 0);
    CHECK_MEM(v.td.report_data, rd, 64);
    kms_att_replay(1, g_events, 6, NULL, want);
    CHECK_MEM(v.td.rtmr[3], want, 48);
    SHA384((const uint8_t *)"kmsd-sim-mrtd", 13, want);
    CHECK_MEM(v.td.mr_td, want, 48);
    SHA384((const uint8_t *)"kmsd-sim-rtmr0", 14, want);
    CHECK_MEM(v.td.rtmr[0], want, 48);
    /* td_attributes 0000001000000000: SEPT_VE_DISABLE only, as real guests */
    CHECK(v.td.td_attributes[0] == 0 && v.td.td_attributes[3] == 0x10);
    CHECK_MEM(v.td.mr_signer_seam, zero, 48);
    CHECK(att->n_events == 6);
    CHECK(att->n_tdx_events == 6);
    for (size_t i = 0; i < att->n_tdx_events && i < 6; i++) {
        const struct kms_tdx_event *e = &att->tdx_events[i];

        CHECK(e->imr == 3);
        CHECK(e->event_type == KMS_EVENT_TYPE_RUNTIME);
        CHECK(strcmp(e->event, ev_names[i]) == 0);
        CHECK(e->payload.len == g_events[i].payload.len);
        CHECK(e->digest.len == 48);
        kms_att_event_digest(1, ev_names[i], g_events[i].payload.p, g_events[i].payload.len, want);
        CHECK(e->digest.len == 48 && memcmp(e->digest.p, want, 48) == 0);
        CHECK(strcmp(att->events[i].event, ev_names[i]) == 0);
        CHECK(att->events[i].payload.len == g_events[i].payload.len);
    }
    kms_verified_free(&v);
out:
    kms_attest_ctx_free(ctx);
    kms_att_free(att);
    kms_sim_free(sim);
}

/* The sim flag comes from the configuration of the anchor, not from the evidence: the same
 * root configured as a production root gives sim == 0. */
static void test_sim_flag_from_config(void)
{
    struct kms_sim *sim = NULL;
    struct kms_attestation *att;
    struct kms_attest_ctx *ctx;
    struct kms_verified v;
    uint8_t rd[64];

    CHECK_OK(kms_sim_open(g_dir, &sim));
    if (sim == NULL)
        return;
    att = make_att(sim, NULL, rd);
    ctx = sim_ctx(sim, 0);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    CHECK(v.sim == 0);
    kms_verified_free(&v);
    kms_attest_ctx_free(ctx);
    kms_att_free(att);
    kms_sim_free(sim);
}

/* Simulated evidence FAILS when only the real Intel SGX root is configured. */
static void test_sim_rejected_by_intel_root(void)
{
    struct kms_sim *sim = NULL;
    struct kms_attestation *att;
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    struct kms_verified v;
    X509 *intel = kms_attest_intel_root();
    uint8_t rd[64];

    CHECK(intel != NULL);
    CHECK_OK(kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, intel, 0));
    CHECK_OK(kms_sim_open(g_dir, &sim));
    if (sim == NULL)
        goto out;
    att = make_att(sim, NULL, rd);
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("PCK chain");
    kms_att_free(att);
out:
    X509_free(intel);
    kms_attest_ctx_free(ctx);
    kms_sim_free(sim);
}

/* One changed byte in each signed part of a simulated quote gives exactly the matching error:
 * header/body → QUOTE_SIG, QE report → QE_SIG, QE auth data → QE_BINDING, attestation key →
 * QUOTE_SIG (the quote signature is checked with it first). */
static void test_sim_quote_flips(void)
{
    struct kms_sim *sim = NULL;
    struct kms_attest_ctx *ctx = NULL;
    struct kms_tdx_report rep;
    struct kms_tdx_quote q;
    struct kms_verified v;
    uint8_t *quote = NULL;
    size_t len = 0;
    size_t off;

    CHECK_OK(kms_sim_open(g_dir, &sim));
    if (sim == NULL)
        return;
    ctx = sim_ctx(sim, 1);
    memset(&rep, 0, sizeof(rep));
    memset(rep.mr_td, 0x5a, sizeof(rep.mr_td));
    memset(rep.report_data, 0xa5, sizeof(rep.report_data));
    rep.td_attributes[3] = 0x10; /* SEPT_VE_DISABLE */
    CHECK_OK(kms_sim_quote(sim, &rep, &quote, &len));
    if (quote == NULL)
        goto out;
    CHECK_OK(kms_tdx_quote_verify(ctx, quote, len, &v));
    CHECK_MEM(v.td.mr_td, rep.mr_td, 48);
    kms_verified_free(&v);

    CHECK_OK(kms_tdx_quote_parse(quote, len, &q));
    CHECK(q.version == 4 && q.att_key_type == 2 && q.tee_type == 0x81);
    CHECK(q.qe_auth_len == 32);
    CHECK(memcmp(q.qe_vendor_id, "\x93\x9a\x72\x33\xf7\x9c\x4c\xa9\x94\x0a\x0d\xb3\x95\x7f\x06\x07",
                 16) == 0);

    /* body: mr_td at absolute offset 184 */
    quote[184] ^= 1;
    CHECK_RC(kms_tdx_quote_verify(ctx, quote, len, &v), KMS_ERR_ATT_QUOTE_SIG);
    CHECK_DETAIL("attestation key");
    quote[184] ^= 1;
    /* header: qe_svn */
    quote[8] ^= 1;
    CHECK_RC(kms_tdx_quote_verify(ctx, quote, len, &v), KMS_ERR_ATT_QUOTE_SIG);
    quote[8] ^= 1;

    off = (size_t)(q.qe_report - quote) + 64; /* mr_enclave */
    quote[off] ^= 1;
    CHECK_RC(kms_tdx_quote_verify(ctx, quote, len, &v), KMS_ERR_ATT_QE_SIG);
    CHECK_DETAIL("PCK");
    quote[off] ^= 1;

    off = (size_t)(q.qe_auth - quote);
    quote[off] ^= 1;
    CHECK_RC(kms_tdx_quote_verify(ctx, quote, len, &v), KMS_ERR_ATT_QE_BINDING);
    CHECK_DETAIL("QE report data");
    quote[off] ^= 1;

    off = (size_t)(q.attest_key - quote) + 63;
    quote[off] ^= 1;
    CHECK_RC(kms_tdx_quote_verify(ctx, quote, len, &v), KMS_ERR_ATT_QUOTE_SIG);
    quote[off] ^= 1;

    CHECK_OK(kms_tdx_quote_verify(ctx, quote, len, &v));
    kms_verified_free(&v);
out:
    free(quote);
    kms_attest_ctx_free(ctx);
    kms_sim_free(sim);
}

/* A flipped body byte inside a full attestation fails verification with QUOTE_SIG. */
static void test_sim_attest_flip_body(void)
{
    struct kms_sim *sim = NULL;
    struct kms_attestation *att;
    struct kms_attest_ctx *ctx;
    struct kms_verified v;
    uint8_t rd[64];

    CHECK_OK(kms_sim_open(g_dir, &sim));
    if (sim == NULL)
        return;
    att = make_att(sim, NULL, rd);
    ctx = sim_ctx(sim, 1);
    att->tdx_quote.p[KMS_TDX_HEADER_LEN + 200] ^= 0x80;
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_QUOTE_SIG);
    kms_attest_ctx_free(ctx);
    kms_att_free(att);
    kms_sim_free(sim);
}

/* The debug flag sets td_attributes bit 0 and the TCB policy rejects the TD. */
static void test_sim_debug_rejected(void)
{
    struct kms_sim *sim = NULL;
    struct kms_sim_measurements m = {0};
    struct kms_attestation *att;
    struct kms_attest_ctx *ctx;
    struct kms_verified v;
    struct kms_tdx_quote q;
    uint8_t rd[64];

    CHECK_OK(kms_sim_open(g_dir, &sim));
    if (sim == NULL)
        return;
    m.debug = 1;
    att = make_att(sim, &m, rd);
    ctx = sim_ctx(sim, 1);
    CHECK_OK(kms_tdx_quote_parse(att->tdx_quote.p, att->tdx_quote.len, &q));
    CHECK(q.report.td_attributes[0] == 0x01);
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("Debug mode is enabled");
    kms_attest_ctx_free(ctx);
    kms_att_free(att);
    kms_sim_free(sim);
}

/* A runtime event changed after quoting breaks the RTMR3 replay; a changed report_data breaks
 * the report_data consistency check. */
static void test_sim_changed_event_and_report_data(void)
{
    struct kms_sim *sim = NULL;
    struct kms_attestation *att;
    struct kms_attest_ctx *ctx;
    struct kms_verified v;
    uint8_t rd[64];

    CHECK_OK(kms_sim_open(g_dir, &sim));
    if (sim == NULL)
        return;
    att = make_att(sim, NULL, rd);
    ctx = sim_ctx(sim, 1);
    att->events[2].payload.p[0] ^= 1; /* compose-hash */
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_RTMR);
    CHECK_DETAIL("RTMR3");
    att->events[2].payload.p[0] ^= 1;
    att->report_data[63] ^= 1;
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_REPORT_DATA);
    att->report_data[63] ^= 1;
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
    kms_attest_ctx_free(ctx);
    kms_att_free(att);
    kms_sim_free(sim);
}

/* Overridden measurements appear verbatim in the verified TD report. */
static void test_sim_measurements_override(void)
{
    struct kms_sim *sim = NULL;
    struct kms_sim_measurements m = {0};
    struct kms_attestation *att;
    struct kms_attest_ctx *ctx;
    struct kms_verified v;
    uint8_t mr[5][48];
    uint8_t rd[64];

    CHECK(RAND_bytes(&mr[0][0], sizeof(mr)) == 1);
    m.mr_td = mr[0];
    m.rtmr0 = mr[1];
    m.rtmr1 = mr[2];
    m.rtmr2 = mr[3];
    m.mr_config_id = mr[4];
    CHECK_OK(kms_sim_open(g_dir, &sim));
    if (sim == NULL)
        return;
    att = make_att(sim, &m, rd);
    ctx = sim_ctx(sim, 1);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    CHECK_MEM(v.td.mr_td, mr[0], 48);
    CHECK_MEM(v.td.rtmr[0], mr[1], 48);
    CHECK_MEM(v.td.rtmr[1], mr[2], 48);
    CHECK_MEM(v.td.rtmr[2], mr[3], 48);
    CHECK_MEM(v.td.mr_config_id, mr[4], 48);
    kms_verified_free(&v);
    kms_attest_ctx_free(ctx);
    kms_att_free(att);
    kms_sim_free(sim);
}

/* With no runtime events RTMR3 is all zero and the attestation still verifies. */
static void test_sim_no_events(void)
{
    struct kms_sim *sim = NULL;
    struct kms_attestation *att = NULL;
    struct kms_attest_ctx *ctx;
    struct kms_verified v;
    static const uint8_t zero[64];

    CHECK_OK(kms_sim_open(g_dir, &sim));
    if (sim == NULL)
        return;
    CHECK_OK(kms_sim_attest(sim, NULL, zero, NULL, 0, NULL, &att));
    ctx = sim_ctx(sim, 1);
    if (att != NULL) {
        CHECK(strcmp(att->config, "") == 0);
        CHECK_OK(kms_attest_verify(ctx, att, &v));
        CHECK_MEM(v.td.rtmr[3], zero, 48);
        kms_verified_free(&v);
    }
    kms_attest_ctx_free(ctx);
    kms_att_free(att);
    kms_sim_free(sim);
}

static int der_sha256(X509 *c, uint8_t out[32])
{
    unsigned char *der = NULL;
    int n = i2d_X509(c, &der);
    int ok = n > 0 && EVP_Digest(der, (size_t)n, out, NULL, EVP_sha256(), NULL) == 1;

    OPENSSL_free(der);
    return ok;
}

/* The directory persists: reopening gives the same root and PPID; another directory gets a
 * different root and PPID; keys are 0600; the root carries the simulation CN; the quote embeds
 * leaf, intermediate and root with the root last. */
static void test_sim_persistence(void)
{
    static const char *const keys[] = {"sim-root.key", "sim-pck-ca.key", "sim-pck.key",
                                       "sim-ak.key"};
    struct kms_sim *a = NULL;
    struct kms_sim *b = NULL;
    struct kms_sim *c = NULL;
    struct kms_attestation *att1 = NULL;
    struct kms_attestation *att2 = NULL;
    struct kms_attest_ctx *ctx;
    struct kms_verified v1;
    struct kms_verified v2;
    struct kms_tdx_quote q;
    char other[256];
    char path[512];
    char cn[256];
    uint8_t h1[32];
    uint8_t h2[32];
    uint8_t rd[64];
    struct stat st;
    BIO *bio;
    X509 *x;
    X509 *last = NULL;
    int n = 0;

    CHECK_OK(kms_sim_open(g_dir, &a));
    CHECK_OK(kms_sim_open(g_dir, &b));
    new_dir(other, sizeof(other));
    CHECK_OK(kms_sim_open(other, &c));
    if (a == NULL || b == NULL || c == NULL)
        goto out;
    CHECK(der_sha256(kms_sim_root(a), h1) && der_sha256(kms_sim_root(b), h2));
    CHECK_MEM(h1, h2, 32);
    CHECK(der_sha256(kms_sim_root(c), h2));
    CHECK(memcmp(h1, h2, 32) != 0);
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "%s/%s", g_dir, keys[i]);
        CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    }
    CHECK(X509_NAME_get_text_by_NID(X509_get_subject_name(kms_sim_root(a)), NID_commonName, cn,
                                    sizeof(cn)) > 0);
    CHECK(strcmp(cn, "kmsd SIMULATION Root CA \xe2\x80\x94 NOT FOR PRODUCTION") == 0);

    /* same PPID through both handles of the same dir, a different one for the other dir */
    att1 = make_att(b, NULL, rd);
    ctx = sim_ctx(a, 1);
    CHECK_OK(kms_attest_verify(ctx, att1, &v1));
    kms_attest_ctx_free(ctx);
    att2 = make_att(c, NULL, rd);
    ctx = sim_ctx(c, 1);
    CHECK_OK(kms_attest_verify(ctx, att2, &v2));
    kms_attest_ctx_free(ctx);
    CHECK(v1.ppid_len == 16 && v2.ppid_len == 16 && memcmp(v1.ppid, v2.ppid, 16) != 0);
    kms_verified_free(&v1);
    kms_verified_free(&v2);

    CHECK_OK(kms_tdx_quote_parse(att1->tdx_quote.p, att1->tdx_quote.len, &q));
    bio = BIO_new_mem_buf(q.pck_chain, (int)q.pck_chain_len);
    for (;;) {
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x == NULL)
            break;
        X509_free(last);
        last = x;
        n++;
    }
    BIO_free(bio);
    CHECK(n == 3);
    CHECK(last != NULL && X509_cmp(last, kms_sim_root(a)) == 0);
    X509_free(last);
out:
    kms_att_free(att1);
    kms_att_free(att2);
    kms_sim_free(a);
    kms_sim_free(b);
    kms_sim_free(c);
    rm_rf(other);
}

/* Two or more processes opening a fresh directory at once end up with one consistent chain:
 * every process sees the same root and produces evidence that verifies against it. */
static void test_sim_concurrent_open(void)
{
    enum { NPROC = 4 };
    char dir[256];
    int fds[NPROC][2];
    pid_t pids[NPROC];
    uint8_t h[NPROC][32];
    uint8_t mine[32];
    struct kms_sim *sim = NULL;

    new_dir(dir, sizeof(dir));
    strncat(dir, "/sub", sizeof(dir) - strlen(dir) - 1); /* also exercises mkdir */
    for (int i = 0; i < NPROC; i++) {
        CHECK(pipe(fds[i]) == 0);
        pids[i] = fork();
        if (pids[i] == 0) {
            struct kms_sim *s = NULL;
            struct kms_attestation *att = NULL;
            struct kms_attest_ctx *ctx = kms_attest_ctx_new();
            struct kms_verified v;
            uint8_t rd[64] = {0};
            uint8_t d[32];
            int ok =
                kms_sim_open(dir, &s) == 0 && der_sha256(kms_sim_root(s), d) &&
                kms_sim_attest(s, NULL, rd, g_events, 6, NULL, &att) == 0 &&
                kms_attest_ctx_add_root_file(ctx, KMS_ROOT_TDX, kms_sim_root_path(s), 1) == 0 &&
                kms_attest_verify(ctx, att, &v) == 0;

            if (ok)
                ok = write(fds[i][1], d, 32) == 32;
            _exit(ok ? 0 : 1);
        }
        close(fds[i][1]);
    }
    for (int i = 0; i < NPROC; i++) {
        int status = 0;

        CHECK(read(fds[i][0], h[i], 32) == 32);
        close(fds[i][0]);
        CHECK(waitpid(pids[i], &status, 0) == pids[i]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    CHECK_OK(kms_sim_open(dir, &sim));
    if (sim != NULL) {
        CHECK(der_sha256(kms_sim_root(sim), mine));
        for (int i = 0; i < NPROC; i++)
            CHECK_MEM(h[i], mine, 32);
    }
    kms_sim_free(sim);
    dir[strlen(dir) - 4] = '\0';
    rm_rf(dir);
}

/* Simulation certificates have fixed validity (2020..2049), so evidence verifies at a pinned
 * past time and is reported expired before 2020. */
static void test_sim_validity_window(void)
{
    struct kms_sim *sim = NULL;
    struct kms_attestation *att;
    struct kms_attest_ctx *ctx;
    struct kms_verified v;
    uint8_t rd[64];

    CHECK_OK(kms_sim_open(g_dir, &sim));
    if (sim == NULL)
        return;
    att = make_att(sim, NULL, rd);
    ctx = sim_ctx(sim, 1);
    kms_attest_ctx_set_time(ctx, (time_t)1766678659); /* 2025-12-25 */
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
    kms_attest_ctx_set_time(ctx, (time_t)1546300800); /* 2019-01-01 */
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_EXPIRED);
    kms_attest_ctx_free(ctx);
    kms_att_free(att);
    kms_sim_free(sim);
}

/* Bad arguments are refused with KMS_ERR_INVAL, not a crash. */
static void test_sim_bad_args(void)
{
    struct kms_sim *sim = NULL;
    struct kms_attestation *att = NULL;
    struct kms_runtime_event bad = {0};
    uint8_t rd[64] = {0};

    CHECK_RC(kms_sim_open("", &sim), KMS_ERR_INVAL);
    CHECK(sim == NULL);
    CHECK_OK(kms_sim_open(g_dir, &sim));
    if (sim == NULL)
        return;
    CHECK_RC(kms_sim_attest(sim, NULL, rd, &bad, 1, NULL, &att), KMS_ERR_INVAL);
    CHECK(att == NULL);
    kms_sim_free(sim);
}

int main(void)
{
    init_events();
    new_dir(g_dir, sizeof(g_dir));
    RUN(test_sim_attest_verifies);
    RUN(test_sim_flag_from_config);
    RUN(test_sim_rejected_by_intel_root);
    RUN(test_sim_quote_flips);
    RUN(test_sim_attest_flip_body);
    RUN(test_sim_debug_rejected);
    RUN(test_sim_changed_event_and_report_data);
    RUN(test_sim_measurements_override);
    RUN(test_sim_no_events);
    RUN(test_sim_persistence);
    RUN(test_sim_concurrent_open);
    RUN(test_sim_validity_window);
    RUN(test_sim_bad_args);
    rm_rf(g_dir);
    TEST_MAIN_END();
}
