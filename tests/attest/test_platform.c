/*
 * Evidence producers (attest/tdx_tsm.c, attest/platform.c):
 *  - configfs-tsm against a fake report tree: a helper thread plays the kernel (reads inblob,
 *    bumps generation, writes outblob through FIFOs), and pre-populated trees give the
 *    generation-changed, short-outblob, wrong-report_data and wrong-provider refusals; a missing
 *    tree and a missing /dev/tdx_guest give NOTFOUND;
 *  - the legacy GetQuote buffer codec;
 *  - TEE detection with fake paths;
 *  - the simulated platforms (sim-gcp, sim-nitro, sim-tdx) verified by the production verifiers,
 *    with each GCP check refused when exactly its input is altered;
 *  - the hardware "tdx" producer run against a fake configfs tree and runtime event log.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attest/attest.h"
#include "attest/events.h"
#include "attest/sim.h"
#include "attest/tdx.h"
#include "attest/tpm.h"
#include "common/file.h"
#include "common/hex.h"
#include "test.h"

static char g_tmp[256];
static char g_sim[300];
static struct kms_sim *g_simh;

static void write_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[600];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    CHECK_OK(kms_file_write_atomic(path, p, n, 0600));
}

static void mkdirs(const char *path)
{
    CHECK_OK(kms_mkdir_p(path, 0700));
}

/* A sim quote whose report carries report_data (and rtmr3 when given). */
static void sim_quote(const uint8_t rd[64], const uint8_t *rtmr3, uint8_t **q, size_t *len)
{
    struct kms_tdx_report rep;

    memset(&rep, 0, sizeof(rep));
    memset(rep.mr_td, 0x11, sizeof(rep.mr_td));
    rep.td_attributes[3] = 0x10; /* SEPT_VE_DISABLE, as every real guest */
    memcpy(rep.report_data, rd, 64);
    if (rtmr3 != NULL)
        memcpy(rep.rtmr[3], rtmr3, 48);
    CHECK_OK(kms_sim_quote(g_simh, &rep, q, len));
}

static struct kms_attest_ctx *sim_ctx(void)
{
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();

    CHECK(ctx != NULL);
    CHECK_OK(kms_platform_add_sim_roots(g_sim, ctx));
    return ctx;
}

/* ---------------------------------------------------------------- configfs-tsm fake kernel */

struct fake_kernel {
    char dir[600];
    pthread_t th;
    int started;
    int gen_after; /* generation to leave behind after the outblob is read */
};

/* The kernel side of one report: waits for the 64-byte inblob, makes a quote over it, then
 * serves it through the outblob FIFO. */
static void *kernel_thread(void *arg)
{
    struct fake_kernel *k = arg;
    char path[700];
    uint8_t rd[64];
    uint8_t *q = NULL;
    size_t len = 0, got = 0;
    char gen[16];
    int fd;
    ssize_t n;

    snprintf(path, sizeof(path), "%s/inblob", k->dir);
    fd = open(path, O_RDONLY);
    while (fd >= 0 && got < 64) {
        n = read(fd, rd + got, 64 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (fd >= 0)
        close(fd);
    if (got != 64)
        return NULL;
    snprintf(gen, sizeof(gen), "%d\n", k->gen_after);
    sim_quote(rd, NULL, &q, &len);
    snprintf(path, sizeof(path), "%s/generation", k->dir);
    if (kms_file_write_atomic(path, gen, strlen(gen), 0600) < 0)
        return NULL;
    snprintf(path, sizeof(path), "%s/outblob", k->dir);
    fd = open(path, O_WRONLY);
    if (fd >= 0) {
        if (write(fd, q, len) != (ssize_t)len)
            fprintf(stderr, "fake kernel: short write\n");
        close(fd);
    }
    free(q);
    return NULL;
}

/* on_mkdir seam: populate attributes as the kernel would, then start the kernel thread. */
static int fake_mkdir_fifo(void *arg, const char *dir)
{
    struct fake_kernel *k = arg;
    char p[700];

    snprintf(k->dir, sizeof(k->dir), "%s", dir);
    write_file(dir, "generation", "0\n", 2);
    write_file(dir, "provider", "tdx_guest\n", 10);
    snprintf(p, sizeof(p), "%s/inblob", dir);
    if (mkfifo(p, 0600) != 0)
        return kms_err_set(KMS_ERR_IO, "mkfifo inblob");
    snprintf(p, sizeof(p), "%s/outblob", dir);
    if (mkfifo(p, 0600) != 0)
        return kms_err_set(KMS_ERR_IO, "mkfifo outblob");
    if (pthread_create(&k->th, NULL, kernel_thread, k) != 0)
        return kms_err_set(KMS_ERR_IO, "pthread_create");
    k->started = 1;
    return 0;
}

/* Pre-populated report: what outblob/generation/provider hold is fixed before the write. */
struct prepop {
    const uint8_t *outblob;
    size_t out_len;
    const char *generation;
    const char *provider; /* NULL: no provider attribute */
};

static int fake_mkdir_prepop(void *arg, const char *dir)
{
    struct prepop *pp = arg;

    write_file(dir, "inblob", "", 0);
    write_file(dir, "outblob", pp->outblob, pp->out_len);
    write_file(dir, "generation", pp->generation, strlen(pp->generation));
    if (pp->provider != NULL)
        write_file(dir, "provider", pp->provider, strlen(pp->provider));
    return 0;
}

/* The real configfs-tsm code path delivers report_data to the "kernel" and returns the quote
 * the kernel produced over it; the quote verifies to the (simulation) root. */
static void test_tsm_fifo_kernel(void)
{
    char root[400];
    struct fake_kernel k;
    struct kms_tsm_opts o = {0};
    struct kms_attest_ctx *ctx = sim_ctx();
    struct kms_verified v;
    uint8_t rd[64];
    uint8_t *q = NULL;
    size_t len = 0;

    memset(&k, 0, sizeof(k));
    k.gen_after = 1;
    for (int i = 0; i < 64; i++)
        rd[i] = (uint8_t)(i * 3);
    snprintf(root, sizeof(root), "%s/tsm-fifo/report", g_tmp);
    mkdirs(root);
    o.root = root;
    o.on_mkdir = fake_mkdir_fifo;
    o.arg = &k;
    CHECK_OK(kms_tsm_tdx_quote(&o, rd, &q, &len));
    if (k.started)
        pthread_join(k.th, NULL);
    CHECK(q != NULL && len > 632);
    CHECK_OK(kms_tdx_quote_verify(ctx, q, len, &v));
    CHECK(v.sim == 1);
    CHECK_MEM(v.td.report_data, rd, 64);
    kms_verified_free(&v);
    free(q);
    /* the same through the dispatcher (configfs first) */
    memset(&k, 0, sizeof(k));
    k.gen_after = 1;
    q = NULL;
    CHECK_OK(kms_tdx_get_quote(&o, "/nonexistent/tdx_guest", rd, &q, &len));
    if (k.started)
        pthread_join(k.th, NULL);
    CHECK(q != NULL);
    free(q);
    kms_attest_ctx_free(ctx);
}

/* Another writer bumped generation between our inblob write and outblob read: refused. */
static void test_tsm_generation_changed(void)
{
    char root[400];
    struct fake_kernel k;
    struct kms_tsm_opts o = {0};
    uint8_t rd[64] = {1};
    uint8_t *q = NULL, *good = NULL;
    size_t len = 0, good_len = 0;
    struct prepop pp;

    snprintf(root, sizeof(root), "%s/tsm-gen/report", g_tmp);
    mkdirs(root);
    memset(&k, 0, sizeof(k));
    k.gen_after = 2;
    o.root = root;
    o.on_mkdir = fake_mkdir_fifo;
    o.arg = &k;
    CHECK_RC(kms_tsm_tdx_quote(&o, rd, &q, &len), KMS_ERR_STATE);
    CHECK_DETAIL("generation 2, want 1");
    if (k.started)
        pthread_join(k.th, NULL);
    CHECK(q == NULL);
    /* pre-populated variant */
    sim_quote(rd, NULL, &good, &good_len);
    pp.outblob = good;
    pp.out_len = good_len;
    pp.generation = "3\n";
    pp.provider = NULL;
    o.on_mkdir = fake_mkdir_prepop;
    o.arg = &pp;
    CHECK_RC(kms_tsm_tdx_quote(&o, rd, &q, &len), KMS_ERR_STATE);
    CHECK_DETAIL("changed while the quote was read");
    /* control: the same tree with generation 1 is accepted */
    pp.generation = "1\n";
    CHECK_OK(kms_tsm_tdx_quote(&o, rd, &q, &len));
    CHECK(q != NULL && len == good_len && memcmp(q, good, len) == 0);
    free(q);
    free(good);
}

/* An outblob too short for a quote, one over other report_data, a non-TDX provider and a
 * non-numeric generation are each refused with their own error. */
static void test_tsm_bad_outblob(void)
{
    char root[400];
    struct kms_tsm_opts o = {0};
    uint8_t rd[64] = {2}, other[64] = {3};
    uint8_t shortblob[100];
    uint8_t *q = NULL, *foreign = NULL;
    size_t len = 0, flen = 0;
    struct prepop pp;

    snprintf(root, sizeof(root), "%s/tsm-bad/report", g_tmp);
    mkdirs(root);
    o.root = root;
    o.on_mkdir = fake_mkdir_prepop;
    o.arg = &pp;
    memset(shortblob, 4, sizeof(shortblob));
    pp.outblob = shortblob;
    pp.out_len = sizeof(shortblob);
    pp.generation = "1\n";
    pp.provider = "tdx_guest\n";
    CHECK_RC(kms_tsm_tdx_quote(&o, rd, &q, &len), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("outblob is 100 bytes, too short");
    pp.out_len = 0;
    CHECK_RC(kms_tsm_tdx_quote(&o, rd, &q, &len), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("outblob is 0 bytes");

    sim_quote(other, NULL, &foreign, &flen);
    pp.outblob = foreign;
    pp.out_len = flen;
    CHECK_RC(kms_tsm_tdx_quote(&o, rd, &q, &len), KMS_ERR_ATT_REPORT_DATA);
    CHECK_DETAIL("different report_data");

    pp.provider = "sev_guest\n";
    CHECK_RC(kms_tsm_tdx_quote(&o, other, &q, &len), KMS_ERR_ATT_UNSUPPORTED);
    CHECK_DETAIL("provider is \"sev_guest\"");

    pp.provider = NULL;
    pp.generation = "x\n";
    CHECK_RC(kms_tsm_tdx_quote(&o, other, &q, &len), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("generation \"x");
    CHECK(q == NULL);
    free(foreign);
}

/* No configfs-tsm tree: NOTFOUND; with no /dev/tdx_guest either the dispatcher says neither
 * interface exists. A device node that is not the TDX driver fails the ioctl with IO. */
static void test_tsm_missing(void)
{
    struct kms_tsm_opts o = {0};
    uint8_t rd[64] = {0};
    uint8_t *q = NULL;
    size_t len = 0;
    char root[400];

    snprintf(root, sizeof(root), "%s/no-such-tsm/report", g_tmp);
    o.root = root;
    CHECK_RC(kms_tsm_tdx_quote(&o, rd, &q, &len), KMS_ERR_NOTFOUND);
    CHECK_DETAIL("is not available");
    CHECK_RC(kms_tdx_guest_quote("/nonexistent/tdx_guest", rd, &q, &len), KMS_ERR_NOTFOUND);
    CHECK_RC(kms_tdx_get_quote(&o, "/nonexistent/tdx_guest", rd, &q, &len), KMS_ERR_NOTFOUND);
    CHECK_DETAIL("neither configfs-tsm");
    CHECK_RC(kms_tdx_guest_quote("/dev/null", rd, &q, &len), KMS_ERR_IO);
    CHECK_DETAIL("TDX_CMD_GET_REPORT0");
    CHECK(q == NULL);
}

/* ---------------------------------------------------------------- legacy GetQuote codec */

static size_t make_response(uint8_t *buf, size_t cap, uint64_t status, const uint8_t *quote,
                            uint32_t qlen, uint32_t type)
{
    uint32_t msg = 16 + 8 + qlen;
    uint8_t *m = buf + 28;

    memset(buf, 0, cap);
    buf[0] = 1;
    for (int i = 0; i < 8; i++)
        buf[8 + i] = (uint8_t)(status >> (8 * i));
    buf[16] = 0x2c; /* in_len (ignored) */
    buf[20] = (uint8_t)(msg + 4);
    buf[21] = (uint8_t)((msg + 4) >> 8);
    buf[24] = (uint8_t)(msg >> 24);
    buf[25] = (uint8_t)(msg >> 16);
    buf[26] = (uint8_t)(msg >> 8);
    buf[27] = (uint8_t)msg;
    m[0] = 1;
    m[4] = (uint8_t)type;
    m[8] = (uint8_t)msg;
    m[9] = (uint8_t)(msg >> 8);
    m[20] = (uint8_t)qlen;
    m[21] = (uint8_t)(qlen >> 8);
    memcpy(m + 24, quote, qlen);
    return 28 + msg;
}

/* The request carries the TDREPORT in a QGS get-quote message; a completed buffer yields the
 * quote; in-flight, service-unavailable, wrong type and a lying out_len are refused. */
static void test_qgs_codec(void)
{
    static uint8_t buf[16384];
    uint8_t report[KMS_TDX_REPORT_LEN];
    uint8_t rd[64] = {9};
    uint8_t *quote = NULL, *got = NULL;
    size_t qlen = 0, glen = 0, used = 0;

    memset(report, 0xab, sizeof(report));
    CHECK_OK(kms_tdx_qgs_request(report, buf, sizeof(buf), &used));
    CHECK(used == 24 + 4 + 16 + 8 + 1024);
    CHECK(buf[0] == 1 && buf[16] == (uint8_t)(used - 24) && buf[17] == (uint8_t)((used - 24) >> 8));
    CHECK(buf[26] == 0x04 && buf[27] == 0x18); /* BE message length 1048 */
    CHECK(memcmp(buf + 28 + 24, report, 1024) == 0);
    CHECK_RC(kms_tdx_qgs_request(report, buf, 100, &used), KMS_ERR_INVAL);

    sim_quote(rd, NULL, &quote, &qlen);
    make_response(buf, sizeof(buf), 0, quote, (uint32_t)qlen, 1);
    CHECK_OK(kms_tdx_qgs_response(buf, sizeof(buf), &got, &glen));
    CHECK(glen == qlen && got != NULL && memcmp(got, quote, qlen) == 0);
    free(got);
    make_response(buf, sizeof(buf), 0xffffffffffffffffull, quote, (uint32_t)qlen, 1);
    CHECK_RC(kms_tdx_qgs_response(buf, sizeof(buf), &got, &glen), KMS_ERR_TIMEOUT);
    make_response(buf, sizeof(buf), 0x8000000000000001ull, quote, (uint32_t)qlen, 1);
    CHECK_RC(kms_tdx_qgs_response(buf, sizeof(buf), &got, &glen), KMS_ERR_NET);
    make_response(buf, sizeof(buf), 0, quote, (uint32_t)qlen, 0);
    CHECK_RC(kms_tdx_qgs_response(buf, sizeof(buf), &got, &glen), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("QGS response header");
    make_response(buf, sizeof(buf), 0, quote, (uint32_t)qlen, 1);
    buf[21] = 0xff; /* out_len far beyond the buffer */
    buf[22] = 0xff;
    CHECK_RC(kms_tdx_qgs_response(buf, sizeof(buf), &got, &glen), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("out_len");
    CHECK_RC(kms_tdx_qgs_response(buf, 10, &got, &glen), KMS_ERR_ATT_FORMAT);
    free(quote);
}

/* ---------------------------------------------------------------- detection */

/* Detection follows the reference: /dev/nsm wins, GCE DMI + tdx_guest is GCP, tdx_guest or the
 * configfs-tsm report dir alone is TDX, nothing is NONE. */
static void test_detect(void)
{
    char base[400], nsm[500], tdx[500], tsm[500], dmi[500];
    struct kms_platform_paths p;

    snprintf(base, sizeof(base), "%s/detect", g_tmp);
    mkdirs(base);
    snprintf(nsm, sizeof(nsm), "%s/nsm", base);
    snprintf(tdx, sizeof(tdx), "%s/tdx_guest", base);
    snprintf(tsm, sizeof(tsm), "%s/tsm/report", base);
    snprintf(dmi, sizeof(dmi), "%s/product_name", base);
    kms_platform_paths_default(&p);
    p.nsm_dev = nsm;
    p.tdx_guest_dev = tdx;
    p.tsm_report_dir = tsm;
    p.dmi_product_name = dmi;
    CHECK(kms_platform_detect(&p) == KMS_PLATFORM_NONE);
    mkdirs(tsm);
    CHECK(kms_platform_detect(&p) == KMS_PLATFORM_TDX);
    write_file(base, "tdx_guest", "", 0);
    CHECK(kms_platform_detect(&p) == KMS_PLATFORM_TDX);
    write_file(base, "product_name", "Standard PC (Q35 + ICH9, 2009)\n", 31);
    CHECK(kms_platform_detect(&p) == KMS_PLATFORM_TDX);
    write_file(base, "product_name", "Google Compute Engine\n", 22);
    CHECK(kms_platform_detect(&p) == KMS_PLATFORM_GCP_TDX);
    /* GCE without a TDX device is not a GCP TDX guest */
    p.tdx_guest_dev = "/nonexistent/tdx_guest";
    CHECK(kms_platform_detect(&p) == KMS_PLATFORM_TDX); /* tsm dir still there */
    p.tsm_report_dir = "/nonexistent/tsm";
    CHECK(kms_platform_detect(&p) == KMS_PLATFORM_NONE);
    write_file(base, "nsm", "", 0);
    CHECK(kms_platform_detect(&p) == KMS_PLATFORM_NITRO);
    p.tdx_guest_dev = tdx;
    CHECK(kms_platform_detect(&p) == KMS_PLATFORM_NITRO);
}

/* Names parse both ways; "sim" is sim-tdx; unknown names and the producer-less kinds fail. */
static void test_kind_names(void)
{
    static const char *names[] = {"sim-tdx", "sim-nitro", "sim-gcp", "tdx", "gcp-tdx"};
    enum kms_platform_kind k;
    struct kms_platform_cfg cfg;
    struct kms_platform *p = NULL;

    for (size_t i = 0; i < 5; i++) {
        CHECK_OK(kms_platform_kind_parse(names[i], &k));
        CHECK(strcmp(kms_platform_kind_name(k), names[i]) == 0);
    }
    CHECK_OK(kms_platform_kind_parse("sim", &k));
    CHECK(k == KMS_PLATFORM_SIM_TDX);
    CHECK_RC(kms_platform_kind_parse("sgx", &k), KMS_ERR_INVAL);
    CHECK_DETAIL("unknown TEE \"sgx\"");
    memset(&cfg, 0, sizeof(cfg));
    cfg.kind = KMS_PLATFORM_NONE;
    CHECK_RC(kms_platform_open(&cfg, &p), KMS_ERR_ATT_UNSUPPORTED);
    {
        /* nitro opens anywhere; evidence needs the NSM device (tests/attest/test_nsm.c) */
        struct kms_platform_paths paths;
        struct kms_attestation *att = NULL;
        uint8_t rd[64] = {0};

        kms_platform_paths_default(&paths);
        paths.nsm_dev = "/nonexistent/nsm";
        cfg.kind = KMS_PLATFORM_NITRO;
        cfg.paths = &paths;
        CHECK_OK(kms_platform_open(&cfg, &p));
        if (p != NULL)
            CHECK_RC(kms_platform_attest(p, rd, NULL, 0, NULL, &att), KMS_ERR_NOTFOUND);
        CHECK_DETAIL("not inside a Nitro Enclave");
        CHECK(att == NULL);
        kms_platform_free(p);
        p = NULL;
        cfg.paths = NULL;
    }
    cfg.kind = KMS_PLATFORM_SIM_GCP;
    CHECK_RC(kms_platform_open(&cfg, &p), KMS_ERR_INVAL);
    CHECK_DETAIL("needs a simulation directory");
    CHECK(p == NULL);
}

/* ---------------------------------------------------------------- simulated platforms */

static void boot_events(struct kms_runtime_event ev[4], uint8_t app_id[20], uint8_t compose[32])
{
    memset(ev, 0, 4 * sizeof(*ev));
    memset(app_id, 0x5a, 20);
    memset(compose, 0xc0, 32);
    ev[0].event = (char *)"system-preparing";
    ev[1].event = (char *)"app-id";
    ev[1].payload.p = app_id;
    ev[1].payload.len = 20;
    ev[2].event = (char *)"compose-hash";
    ev[2].payload.p = compose;
    ev[2].payload.len = 32;
    ev[3].event = (char *)"boot-mr-done";
}

static struct kms_platform *open_sim(enum kms_platform_kind kind)
{
    struct kms_platform_cfg cfg;
    struct kms_platform *p = NULL;

    memset(&cfg, 0, sizeof(cfg));
    cfg.kind = kind;
    cfg.sim_dir = g_sim;
    CHECK_OK(kms_platform_open(&cfg, &p));
    CHECK(p != NULL && kms_platform_get_kind(p) == kind);
    return p;
}

/* Re-encodes stripped (as RA-TLS carries it) and decodes again. */
static struct kms_attestation *roundtrip(const struct kms_attestation *att)
{
    uint8_t *b = NULL;
    size_t n = 0;
    struct kms_attestation *back = NULL;

    CHECK_OK(kms_att_encode(att, 1, &b, &n));
    CHECK_OK(kms_att_decode(b, n, &back));
    free(b);
    return back;
}

/* sim-gcp evidence is a real-format DstackGcpTdx attestation: the production verifier accepts
 * it through the simulation roots (also after SCALE stripping), PCR14 is the SHA-256 replay of
 * the runtime events, and BootInfo follows the GCP formulas (§2.3). */
static void test_sim_gcp_verifies(void)
{
    struct kms_platform *p = open_sim(KMS_PLATFORM_SIM_GCP);
    struct kms_attest_ctx *ctx = sim_ctx();
    struct kms_runtime_event ev[4];
    uint8_t app_id[20], compose[32], rd[64], pcr14[32], want[32], cat[96];
    struct kms_attestation *att = NULL, *back;
    struct kms_verified v;
    struct kms_boot_info bi;

    memset(rd, 0x77, sizeof(rd));
    boot_events(ev, app_id, compose);
    CHECK_OK(kms_platform_attest(p, rd, ev, 4, NULL, &att));
    CHECK(att != NULL && att->mode == KMS_ATT_GCP_TDX && att->tpm.platform == 1);
    CHECK(att->tpm.n_pcrs == 3 && att->tpm.n_events == 6 && att->tpm.ak_cert.len > 0);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    CHECK(v.mode == KMS_ATT_GCP_TDX && v.sim == 1);
    kms_att_replay(0, ev, 4, NULL, pcr14);
    CHECK_MEM(v.pcr[2], pcr14, 32);
    CHECK_OK(kms_boot_info_derive(ctx, att, &v, NULL, 0, &bi));
    CHECK(bi.mode == KMS_ATT_GCP_TDX && bi.app_id.len == 20 &&
          memcmp(bi.app_id.p, app_id, 20) == 0);
    CHECK(bi.compose_hash.len == 32 && memcmp(bi.compose_hash.p, compose, 32) == 0);
    memcpy(cat, v.pcr[0], 32);
    memcpy(cat + 32, v.pcr[1], 32);
    memcpy(cat + 64, pcr14, 32);
    SHA256(cat, sizeof(cat), want);
    CHECK_MEM(bi.mr_aggregated, want, 32);
    SHA256((const uint8_t *)"kmsd-sim-gcp-uki", 16, want);
    CHECK(bi.os_image_hash.len == 32 && memcmp(bi.os_image_hash.p, want, 32) == 0);
    /* the UKI event (third PCR2 event) carries os_image_hash, as on GCP OVMF */
    CHECK(att->tpm.events[4].pcr_index == 2 && memcmp(att->tpm.events[4].digest.p, want, 32) == 0);
    kms_boot_info_free(&bi);
    kms_verified_free(&v);
    back = roundtrip(att);
    CHECK(back != NULL && back->mode == KMS_ATT_GCP_TDX);
    if (back != NULL)
        CHECK_OK(kms_attest_verify(ctx, back, &v));
    kms_verified_free(&v);
    kms_att_free(back);
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    kms_platform_free(p);
}

/* Each GCP check, with exactly its input altered: TPM signature byte → TPM_SIG; a vTPM quote
 * made over different PCR14 events → RTMR (PCR14); a quote for another TDX quote → REPORT_DATA
 * (extraData); a quoted PCR value → PCR (digest); no simulation GCP root → CHAIN. */
static void test_sim_gcp_refusals(void)
{
    struct kms_platform *p = open_sim(KMS_PLATFORM_SIM_GCP);
    struct kms_attest_ctx *ctx = sim_ctx();
    struct kms_attest_ctx *tdx_only = kms_attest_ctx_new();
    struct kms_runtime_event ev[4], ev2[4];
    uint8_t app_id[20], compose[32], rd[64] = {5}, qd[32], other_app[20];
    struct kms_attestation *att = NULL;
    struct kms_tpm_quote alt;
    struct kms_verified v;

    boot_events(ev, app_id, compose);
    CHECK_OK(kms_platform_attest(p, rd, ev, 4, NULL, &att));

    att->tpm.signature.p[att->tpm.signature.len - 1] ^= 1;
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_TPM_SIG);
    CHECK_DETAIL("TPM quote signature (ECDSA) does not verify");
    att->tpm.signature.p[att->tpm.signature.len - 1] ^= 1;
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);

    /* the vTPM measured another app-id into PCR14 than RTMR3 and the runtime events say */
    memcpy(ev2, ev, sizeof(ev2));
    memset(other_app, 0x6b, sizeof(other_app));
    ev2[1].payload.p = other_app;
    SHA256(att->tdx_quote.p, att->tdx_quote.len, qd);
    memset(&alt, 0, sizeof(alt));
    CHECK_OK(kms_sim_gcp_tpm_quote(g_sim, qd, 32, ev2, 4, NULL, 0, &alt));
    kms_tpm_quote_clear(&att->tpm);
    att->tpm = alt;
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_RTMR);
    CHECK_DETAIL("does not match TPM PCR14");

    /* qualifying data bound to some other TDX quote */
    memset(qd, 0xee, sizeof(qd));
    memset(&alt, 0, sizeof(alt));
    CHECK_OK(kms_sim_gcp_tpm_quote(g_sim, qd, 32, ev, 4, NULL, 0, &alt));
    kms_tpm_quote_clear(&att->tpm);
    att->tpm = alt;
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_REPORT_DATA);
    CHECK_DETAIL("extraData");

    /* a correct quote, then one reported PCR value altered */
    SHA256(att->tdx_quote.p, att->tdx_quote.len, qd);
    memset(&alt, 0, sizeof(alt));
    CHECK_OK(kms_sim_gcp_tpm_quote(g_sim, qd, 32, ev, 4, NULL, 0, &alt));
    kms_tpm_quote_clear(&att->tpm);
    att->tpm = alt;
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
    att->tpm.pcrs[0].value.p[0] ^= 1;
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_PCR);
    CHECK_DETAIL("pcrDigest");
    att->tpm.pcrs[0].value.p[0] ^= 1;

    /* TDX simulation root only: the AK chain has no anchor */
    CHECK_OK(kms_attest_ctx_add_root(tdx_only, KMS_ROOT_TDX, kms_sim_root(g_simh), 1));
    CHECK_RC(kms_attest_verify(tdx_only, att, &v), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("TPM AK certificate chain");
    kms_att_free(att);
    kms_attest_ctx_free(tdx_only);
    kms_attest_ctx_free(ctx);
    kms_platform_free(p);
}

/* sim-nitro carries only the app-id event and its own config; it verifies through the
 * simulation Nitro root and gives the Nitro BootInfo (compose_hash = os_image_hash =
 * sha256(PCR0..2), device_id = sha256("i")). sim-tdx is kms_sim_attest. */
static void test_sim_nitro_and_tdx(void)
{
    struct kms_platform *n = open_sim(KMS_PLATFORM_SIM_NITRO);
    struct kms_platform *t = open_sim(KMS_PLATFORM_SIM_TDX);
    struct kms_attest_ctx *ctx = sim_ctx();
    struct kms_runtime_event ev[4];
    uint8_t app_id[20], compose[32], rd[64] = {8}, h[32];
    struct kms_attestation *att = NULL;
    struct kms_verified v;
    struct kms_boot_info bi;

    boot_events(ev, app_id, compose);
    CHECK_OK(kms_platform_attest(n, rd, ev, 4, "ignored", &att));
    CHECK(att != NULL && att->mode == KMS_ATT_NITRO && att->n_events == 1);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    CHECK(v.sim == 1);
    CHECK_OK(kms_boot_info_derive(ctx, att, &v, NULL, 0, &bi));
    SHA256((const uint8_t *)"i", 1, h);
    CHECK_MEM(bi.device_id, h, 32);
    CHECK(bi.app_id.len == 20 && memcmp(bi.app_id.p, app_id, 20) == 0);
    CHECK(bi.compose_hash.len == 32 && memcmp(bi.compose_hash.p, bi.mr_system, 32) == 0);
    CHECK(bi.os_image_hash.len == 32 && memcmp(bi.os_image_hash.p, bi.mr_system, 32) == 0);
    kms_boot_info_free(&bi);
    kms_verified_free(&v);
    kms_att_free(att);

    CHECK_OK(kms_platform_attest(t, rd, ev, 4, NULL, &att));
    CHECK(att != NULL && att->mode == KMS_ATT_TDX);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    kms_platform_free(n);
    kms_platform_free(t);
}

/* The hardware "tdx" producer over a fake host: the quote comes through the configfs-tsm path
 * (fake tree), the runtime events from dstack's runtime_events.log (base64 payloads); the
 * attestation carries them as runtime and imr-3 TDX events and the verifier accepts it. A
 * malformed log line is refused; a host without any TDX interface gives NOTFOUND. */
static void test_hw_tdx_fake_host(void)
{
    static const char log[] =
        "{\"event\":\"system-preparing\",\"payload\":\"\"}\n"
        "{\"event\":\"app-id\",\"payload\":\"AQIDBAUGBwgJCgsMDQ4PEBESExQ=\"}\n"
        "{\"event\":\"compose-hash\",\"payload\":\"qg==\"}\n";
    struct kms_platform_paths paths;
    struct kms_platform_cfg cfg;
    struct kms_platform *p = NULL;
    struct kms_attest_ctx *ctx = sim_ctx();
    struct kms_attestation *att = NULL;
    struct kms_runtime_event ev[3];
    uint8_t app_id[20], aa = 0xaa, rd[64], rtmr3[48];
    uint8_t *q = NULL;
    size_t qlen = 0;
    struct prepop pp;
    struct kms_verified v;
    char base[400], tsm[500], logp[500];

    for (int i = 0; i < 20; i++)
        app_id[i] = (uint8_t)(i + 1);
    memset(ev, 0, sizeof(ev));
    ev[0].event = (char *)"system-preparing";
    ev[1].event = (char *)"app-id";
    ev[1].payload.p = app_id;
    ev[1].payload.len = 20;
    ev[2].event = (char *)"compose-hash";
    ev[2].payload.p = &aa;
    ev[2].payload.len = 1;
    kms_att_replay(1, ev, 3, NULL, rtmr3);
    memset(rd, 0x3c, sizeof(rd));
    sim_quote(rd, rtmr3, &q, &qlen);

    snprintf(base, sizeof(base), "%s/hw", g_tmp);
    snprintf(tsm, sizeof(tsm), "%s/tsm/report", base);
    snprintf(logp, sizeof(logp), "%s/runtime_events.log", base);
    mkdirs(tsm);
    write_file(base, "runtime_events.log", log, strlen(log));
    pp.outblob = q;
    pp.out_len = qlen;
    pp.generation = "1\n";
    pp.provider = "tdx_guest\n";
    kms_platform_paths_default(&paths);
    paths.tsm_report_dir = tsm;
    paths.tdx_guest_dev = "/nonexistent/tdx_guest";
    paths.ccel = "/nonexistent/CCEL";
    paths.runtime_events_log = logp;
    paths.tsm_on_mkdir = fake_mkdir_prepop;
    paths.tsm_arg = &pp;
    memset(&cfg, 0, sizeof(cfg));
    cfg.kind = KMS_PLATFORM_TDX;
    cfg.paths = &paths;
    CHECK_OK(kms_platform_open(&cfg, &p));
    CHECK_OK(kms_platform_attest(p, rd, NULL, 0, "{}", &att));
    CHECK(att != NULL && att->mode == KMS_ATT_TDX && att->n_events == 3 && att->n_tdx_events == 3);
    if (att != NULL && att->n_events == 3) {
        CHECK(att->events[1].payload.len == 20 &&
              memcmp(att->events[1].payload.p, app_id, 20) == 0);
        CHECK(att->events[2].payload.len == 1 && att->events[2].payload.p[0] == 0xaa);
        CHECK(att->tdx_events[1].imr == 3 && att->tdx_events[1].digest.len == 48);
        CHECK(strcmp(att->config, "{}") == 0);
        CHECK_OK(kms_attest_verify(ctx, att, &v));
        kms_verified_free(&v);
    }
    kms_att_free(att);
    att = NULL;
    write_file(base, "runtime_events.log", "{\"event\":\"x\"}\n", 14);
    CHECK_RC(kms_platform_attest(p, rd, NULL, 0, NULL, &att), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("is not {\"event\"");
    kms_platform_free(p);
    p = NULL;
    paths.tsm_report_dir = "/nonexistent/tsm";
    CHECK_OK(kms_platform_open(&cfg, &p));
    CHECK_RC(kms_platform_attest(p, rd, NULL, 0, NULL, &att), KMS_ERR_NOTFOUND);
    CHECK_DETAIL("no TDX quote interface");
    kms_platform_free(p);
    free(q);
    kms_attest_ctx_free(ctx);
}

int main(void)
{
    const char *t = getenv("TMPDIR");

    snprintf(g_tmp, sizeof(g_tmp), "%s/kms-platform-XXXXXX", t != NULL ? t : "/tmp");
    if (mkdtemp(g_tmp) == NULL)
        return 1;
    snprintf(g_sim, sizeof(g_sim), "%s/sim", g_tmp);
    if (kms_sim_open(g_sim, &g_simh) < 0) {
        fprintf(stderr, "sim: %s\n", kms_err_detail());
        return 1;
    }
    RUN(test_tsm_fifo_kernel);
    RUN(test_tsm_generation_changed);
    RUN(test_tsm_bad_outblob);
    RUN(test_tsm_missing);
    RUN(test_qgs_codec);
    RUN(test_detect);
    RUN(test_kind_names);
    RUN(test_sim_gcp_verifies);
    RUN(test_sim_gcp_refusals);
    RUN(test_sim_nitro_and_tdx);
    RUN(test_hw_tdx_fake_host);
    kms_sim_free(g_simh);
    TEST_MAIN_END();
}
