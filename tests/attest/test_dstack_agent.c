/*
 * --tee dstack, the producer side: kms_platform (kind dstack) against the fake guest agent
 * (tests/support/kmstest_dstack.h) on a Unix socket. Proves that TDX and GCP TDX attestations
 * from the agent's Attest arrive decoded and verify under the simulation roots, over both answer
 * framings (Content-Length and chunked); that detection prefers a live agent socket; and that
 * each way the agent can fail is refused with its exact error: socket missing, connection
 * refused, not JSON, attestation not hex, HTTP error, Nitro evidence, report_data not echoed,
 * no answer within the timeout.
 */
#include <ftw.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "attest/attest.h"
#include "attest/dstack_agent.h"
#include "kmstest_dstack.h"
#include "test.h"

static char g_tmp[256];
static char g_sim[300];
static char g_sock[300];

static const uint8_t app_id[20] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9,
                                   0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf, 0xb0, 0xb1, 0xb2, 0xb3};

static struct kms_platform *open_dstack(const char *sock, long timeout_ms, int *rc)
{
    struct kms_platform_paths paths;
    struct kms_platform_cfg cfg;
    struct kms_platform *p = NULL;

    kms_platform_paths_default(&paths);
    paths.dstack_socket = sock;
    paths.dstack_timeout_ms = timeout_ms;
    memset(&cfg, 0, sizeof(cfg));
    cfg.kind = KMS_PLATFORM_DSTACK;
    cfg.paths = &paths; /* copied by open; the strings are ours */
    *rc = kms_platform_open(&cfg, &p);
    return p;
}

/* Attests through the agent and verifies under the simulation roots; the mode it carries. */
static int attest_and_verify(struct kms_platform *p, enum kms_att_mode *mode)
{
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    struct kms_attestation *att = NULL;
    struct kms_verified v;
    const struct kms_runtime_event *e;
    uint8_t rd[64];
    int rc;

    memset(&v, 0, sizeof(v));
    for (int i = 0; i < 64; i++)
        rd[i] = (uint8_t)(i * 7 + 1);
    rc = ctx == NULL ? KMS_ERR_NOMEM : kms_platform_add_sim_roots(g_sim, ctx);
    if (rc == 0)
        rc = kms_platform_attest(p, rd, NULL, 0, NULL, &att);
    if (rc == 0) {
        CHECK_MEM(att->report_data, rd, 64);
        e = kms_att_find_event(att, "app-id");
        CHECK(e != NULL && e->payload.len == 20 && memcmp(e->payload.p, app_id, 20) == 0);
        *mode = att->mode;
        rc = kms_attest_verify(ctx, att, &v);
        CHECK(v.sim == 1);
    }
    kms_verified_free(&v);
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    return rc;
}

/* sim-tdx and sim-gcp agents: the evidence decodes, carries the agent's app-id, verifies. */
static void test_attest_tdx_and_gcp(void)
{
    static const enum kms_platform_kind kinds[] = {KMS_PLATFORM_SIM_TDX, KMS_PLATFORM_SIM_GCP};
    static const enum kms_att_mode modes[] = {KMS_ATT_TDX, KMS_ATT_GCP_TDX};

    for (size_t i = 0; i < 2; i++) {
        struct kmstest_agent *a = NULL;
        struct kms_platform *p;
        enum kms_att_mode mode = KMS_ATT_NITRO;
        int rc;

        CHECK_OK(kmstest_agent_start(g_sock, kinds[i], g_sim, app_id, NULL, 0, NULL, &a));
        p = open_dstack(g_sock, 0, &rc);
        CHECK_OK(rc);
        CHECK(p != NULL && kms_platform_get_kind(p) == KMS_PLATFORM_DSTACK);
        if (p != NULL) {
            CHECK_OK(attest_and_verify(p, &mode));
            CHECK(mode == modes[i]);
            kmstest_agent_set_mode(a, KMSTEST_AGENT_CHUNKED);
            CHECK_OK(attest_and_verify(p, &mode));
            CHECK(mode == modes[i]);
            CHECK(kmstest_agent_attest_calls(a) == 2);
        }
        kms_platform_free(p);
        kmstest_agent_stop(a);
    }
}

/* A live agent socket wins detection over every kernel interface; a plain file is no agent. */
static void test_detect(void)
{
    struct kmstest_agent *a = NULL;
    struct kms_platform_paths p;
    char file[400];
    FILE *f;

    kms_platform_paths_default(&p);
    p.nsm_dev = "/nonexistent/nsm";
    p.tdx_guest_dev = "/nonexistent/tdx_guest";
    p.tsm_report_dir = "/nonexistent/tsm";
    p.dstack_socket = g_sock;
    CHECK(kms_platform_detect(&p) == KMS_PLATFORM_NONE);
    CHECK_OK(kmstest_agent_start(g_sock, KMS_PLATFORM_SIM_TDX, g_sim, app_id, NULL, 0, NULL, &a));
    CHECK(kms_platform_detect(&p) == KMS_PLATFORM_DSTACK);
    p.tsm_report_dir = g_tmp; /* an existing dir: TDX by itself, but the agent comes first */
    CHECK(kms_platform_detect(&p) == KMS_PLATFORM_DSTACK);
    kmstest_agent_stop(a);
    snprintf(file, sizeof(file), "%s/not-a-socket", g_tmp);
    f = fopen(file, "w");
    if (f != NULL)
        fclose(f);
    p.dstack_socket = file;
    CHECK(kms_platform_detect(&p) == KMS_PLATFORM_TDX);
}

/* "dstack" parses and names both ways. */
static void test_kind_name(void)
{
    enum kms_platform_kind k = KMS_PLATFORM_NONE;

    CHECK_OK(kms_platform_kind_parse("dstack", &k));
    CHECK(k == KMS_PLATFORM_DSTACK);
    CHECK(strcmp(kms_platform_kind_name(KMS_PLATFORM_DSTACK), "dstack") == 0);
}

/* No socket at the path: open fails with NOTFOUND and says what to do. */
static void test_socket_missing(void)
{
    char path[400];
    int rc;

    snprintf(path, sizeof(path), "%s/absent.sock", g_tmp);
    CHECK(open_dstack(path, 0, &rc) == NULL);
    CHECK(rc == KMS_ERR_NOTFOUND);
    CHECK_DETAIL("no dstack guest agent socket at");
    CHECK_DETAIL("--dstack-socket");
}

/* A socket file nobody listens on: connection refused (KMS_ERR_NET). */
static void test_socket_refused(void)
{
    struct sockaddr_un sa;
    char path[400];
    int fd, rc;

    snprintf(path, sizeof(path), "%s/stale.sock", g_tmp);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    if (fd >= 0)
        close(fd); /* bound, never listened: the file stays, connects are refused */
    CHECK(open_dstack(path, 0, &rc) == NULL);
    CHECK(rc == KMS_ERR_NET);
    CHECK_DETAIL("cannot connect to the dstack guest agent at");
    CHECK_DETAIL("Couldn't connect to server"); /* libcurl's words for ECONNREFUSED */
    unlink(path);
}

/* One misbehaviour per case, each against an agent that answered Info correctly first. */
static void test_agent_refusals(void)
{
    static const struct {
        enum kms_platform_kind kind;
        enum kmstest_agent_mode mode;
        int rc;
        const char *detail;
    } cases[] = {
        {KMS_PLATFORM_SIM_TDX, KMSTEST_AGENT_JUNK, KMS_ERR_PARSE,
         "the Attest answer is not a JSON object"},
        {KMS_PLATFORM_SIM_TDX, KMSTEST_AGENT_NOT_HEX, KMS_ERR_PARSE, "the attestation is not hex"},
        {KMS_PLATFORM_SIM_TDX, KMSTEST_AGENT_HTTP_ERROR, KMS_ERR_NET,
         "Attest failed (HTTP 400): Failed to get attestation: simulated failure"},
        {KMS_PLATFORM_SIM_TDX, KMSTEST_AGENT_WRONG_RD, KMS_ERR_ATT_REPORT_DATA,
         "the attestation is over other report_data than asked for"},
        {KMS_PLATFORM_SIM_GCP, KMSTEST_AGENT_WRONG_RD, KMS_ERR_ATT_REPORT_DATA,
         "the attestation is over other report_data than asked for"},
        {KMS_PLATFORM_SIM_NITRO, KMSTEST_AGENT_OK, KMS_ERR_ATT_UNSUPPORTED,
         "attestation mode dstack-nitro-enclave"},
        {KMS_PLATFORM_SIM_TDX, KMSTEST_AGENT_HANG, KMS_ERR_TIMEOUT,
         "Attest did not answer within the timeout"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct kmstest_agent *a = NULL;
        struct kms_platform *p;
        struct kms_attestation *att = NULL;
        uint8_t rd[64];
        int rc;

        memset(rd, 0x5a, sizeof(rd));
        CHECK_OK(kmstest_agent_start(g_sock, cases[i].kind, g_sim, app_id, NULL, 0, NULL, &a));
        p = open_dstack(g_sock, 2000, &rc);
        CHECK_OK(rc);
        if (p != NULL && a != NULL) {
            kmstest_agent_set_mode(a, cases[i].mode);
            CHECK_RC(kms_platform_attest(p, rd, NULL, 0, NULL, &att), cases[i].rc);
            CHECK_DETAIL(cases[i].detail);
            CHECK(att == NULL);
            kmstest_agent_set_mode(a, KMSTEST_AGENT_OK); /* the same agent, well-behaved */
            if (cases[i].kind != KMS_PLATFORM_SIM_NITRO) {
                CHECK_OK(kms_platform_attest(p, rd, NULL, 0, NULL, &att));
                kms_att_free(att);
            }
        }
        kms_platform_free(p);
        kmstest_agent_stop(a);
    }
}

/* Info is asked at open: a junk answer or an HTTP error there fails the open. */
static void test_open_refusals(void)
{
    struct kmstest_agent *a = NULL;
    json_t *info = NULL;
    int rc;

    CHECK_OK(kmstest_agent_start(g_sock, KMS_PLATFORM_SIM_TDX, g_sim, app_id, NULL, 0, NULL, &a));
    if (a == NULL)
        return;
    CHECK_OK(kms_dstack_agent_info(g_sock, 0, &info));
    CHECK(strcmp(json_string_value(json_object_get(info, "app_id")) != NULL
                     ? json_string_value(json_object_get(info, "app_id"))
                     : "",
                 "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3") == 0);
    json_decref(info);
    kmstest_agent_set_mode(a, KMSTEST_AGENT_JUNK);
    CHECK(open_dstack(g_sock, 0, &rc) == NULL);
    CHECK(rc == KMS_ERR_PARSE);
    CHECK_DETAIL("the Info answer is not a JSON object");
    kmstest_agent_set_mode(a, KMSTEST_AGENT_HTTP_ERROR);
    CHECK(open_dstack(g_sock, 0, &rc) == NULL);
    CHECK(rc == KMS_ERR_NET);
    CHECK_DETAIL("Info failed (HTTP 400)");
    kmstest_agent_stop(a);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(path);
}

int main(void)
{
    const char *t = getenv("TMPDIR");

    /* short: a Unix socket path has at most 107 bytes */
    snprintf(g_tmp, sizeof(g_tmp), "%s/kms-dstk-XXXXXX", t != NULL ? t : "/tmp");
    if (mkdtemp(g_tmp) == NULL)
        return 1;
    snprintf(g_sim, sizeof(g_sim), "%s/sim", g_tmp);
    snprintf(g_sock, sizeof(g_sock), "%s/dstack.sock", g_tmp);
    if (kms_platform_sim_init(g_sim) < 0) {
        fprintf(stderr, "sim: %s\n", kms_err_detail());
        return 1;
    }
    RUN(test_attest_tdx_and_gcp);
    RUN(test_detect);
    RUN(test_kind_name);
    RUN(test_socket_missing);
    RUN(test_socket_refused);
    RUN(test_agent_refusals);
    RUN(test_open_refusals);
    if (kms_test_failures == 0) /* else kept for inspection */
        nftw(g_tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    TEST_MAIN_END();
}
