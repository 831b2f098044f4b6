/*
 * --tee dstack end to end: real kmsd and kmsctl processes take their evidence from fake dstack
 * guest agents (tests/support/kmstest_dstack.h, threads of this test on Unix sockets) that
 * answer with simulated TDX or GCP TDX attestations.
 *  - kmsd --tee dstack: GetAttestationInfo reports dstack-tdx from the agent's evidence, the node
 *    bootstraps and serves; `kmsctl get-keys` then verifies the evidence the node's RA-TLS
 *    certificate carries (--sim-dir) while getting keys.
 *  - kmsctl get-keys --tee dstack (TDX and GCP TDX agents measuring the same app) writes the same
 *    app_keys.json as kmsctl get-keys --tee sim.
 *  - kmsd --tee auto with a live agent socket detects dstack (GCP TDX agent: dstack-gcp-tdx) and
 *    bootstraps.
 *  - Refusals, each with its exact error: kmsd with no agent socket does not start; kmsctl with
 *    no socket, a junk Info answer, or an attestation over other report_data gets no keys.
 */
#include <jansson.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/file.h"
#include "kmstest_dstack.h"
#include "kmstest_proc.h"
#include "test.h"

#define APP_HEX "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3"

static char g_tmp[256];
static char g_sim[300];

static void path_in_tmp(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", g_tmp, name);
}

/* Does file contain s? */
static int file_has(const char *path, const char *s)
{
    uint8_t *b = NULL;
    size_t n = 0;
    int has;

    if (kms_file_read(path, 1u << 22, &b, &n) < 0)
        return 0;
    has = strstr((const char *)b, s) != NULL;
    free(b);
    return has;
}

/* kmsctl get-keys from url with --tee tee (and the agent socket for dstack) for --app-id app
 * (NULL: none) into tmp/keys-<tag>.json, stderr into tmp/get-keys-<tag>.log; the exit status. */
static int get_keys_app(const char *url, const char *tee, const char *sock, const char *app,
                        const char *tag)
{
    char cmd[2048], sockopt[400] = "", appopt[100] = "";

    if (sock != NULL)
        snprintf(sockopt, sizeof(sockopt), "--dstack-socket %s", sock);
    if (app != NULL)
        snprintf(appopt, sizeof(appopt), "--app-id %s", app);
    snprintf(cmd, sizeof(cmd),
             "%s/cli/kmsctl get-keys --kms %s %s --out %s/keys-%s.json --tee %s %s "
             "--insecure-sim --sim-dir %s 2>%s/get-keys-%s.log",
             getenv("KMS_BIN_DIR"), url, appopt, g_tmp, tag, tee, sockopt, g_sim, g_tmp, tag);
    return system(cmd);
}

static int get_keys(const char *url, const char *tee, const char *sock, const char *tag)
{
    return get_keys_app(url, tee, sock, APP_HEX, tag);
}

static int same_file(const char *a, const char *b)
{
    uint8_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int same;

    same = kms_file_read(a, 1u << 20, &x, &nx) == 0 && kms_file_read(b, 1u << 20, &y, &ny) == 0 &&
           nx == ny && nx > 0 && memcmp(x, y, nx) == 0;
    if (x != NULL)
        kms_free_secret(x, nx);
    if (y != NULL)
        kms_free_secret(y, ny);
    return same;
}

static void check_tee_variant(const char *ob, const char *want)
{
    json_t *r = NULL;
    const char *v;

    CHECK_OK(kmstest_call(ob, "GetAttestationInfo", NULL, &r));
    v = json_string_value(json_object_get(r, "tee_variant"));
    CHECK(v != NULL && strcmp(v, want) == 0);
    if (v == NULL || strcmp(v, want) != 0)
        fprintf(stderr, "  tee_variant %s, want %s\n", v != NULL ? v : "(none)", want);
    json_decref(r);
}

static void bootstrap(const char *ob)
{
    json_t *r = NULL;

    CHECK_OK(kmstest_call(ob, "Bootstrap", "{\"domain\":\"127.0.0.1\"}", &r));
    CHECK(json_is_string(json_object_get(r, "ca_pubkey")));
    json_decref(r);
}

/* kmsd --tee dstack serves with the agent's evidence; get-keys through agents == --tee sim. */
static void test_node_and_client(void)
{
    static const uint8_t kms_app[20] = {0x4b, 0x4d, 0x53};
    static const uint8_t app[20] = {0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3,
                                    0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3};
    struct kmstest_agent *k = NULL, *a = NULL, *g = NULL;
    char ksock[300], asock[300], gsock[300], none[300], ob[64], url[64], f1[300], f2[300];
    char log[300];
    const char *extra[] = {"--tee", "dstack", "--dstack-socket", ksock, NULL};
    unsigned port = kmstest_free_port(), calls;
    json_t *r = NULL;
    pid_t pid;

    path_in_tmp(ksock, sizeof(ksock), "kms.sock");
    path_in_tmp(asock, sizeof(asock), "app.sock");
    path_in_tmp(gsock, sizeof(gsock), "gcp.sock");
    path_in_tmp(none, sizeof(none), "none.sock");
    CHECK_OK(
        kmstest_agent_start(ksock, KMS_PLATFORM_SIM_TDX, g_sim, kms_app, kms_app, 20, NULL, &k));
    CHECK_OK(kmstest_agent_start(asock, KMS_PLATFORM_SIM_TDX, g_sim, app, NULL, 0, NULL, &a));
    CHECK_OK(kmstest_agent_start(gsock, KMS_PLATFORM_SIM_GCP, g_sim, app, NULL, 0, NULL, &g));
    if (k == NULL || a == NULL || g == NULL)
        goto out;
    snprintf(ob, sizeof(ob), "http://127.0.0.1:%u", port);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    pid = kmstest_kmsd_start(g_tmp, "dstack", g_sim, port, extra);
    check_tee_variant(ob, "dstack-tdx");
    calls = kmstest_agent_attest_calls(k);
    CHECK(calls >= 1); /* the node's own evidence came from the agent */
    bootstrap(ob);
    CHECK(kmstest_agent_attest_calls(k) > calls);
    CHECK_OK(kmstest_call(ob, "Finish", NULL, &r));
    json_decref(r);
    CHECK_OK(kmstest_wait_serving(url));

    /* the client verifies the node's certificate evidence under the simulation roots */
    CHECK(get_keys(url, "sim", NULL, "sim") == 0);
    calls = kmstest_agent_attest_calls(a);
    CHECK(get_keys(url, "dstack", asock, "dstack") == 0);
    CHECK(kmstest_agent_attest_calls(a) > calls);
    path_in_tmp(f1, sizeof(f1), "keys-sim.json");
    path_in_tmp(f2, sizeof(f2), "keys-dstack.json");
    CHECK(same_file(f1, f2));
    CHECK(get_keys(url, "dstack", gsock, "dstack-gcp") == 0);
    path_in_tmp(f2, sizeof(f2), "keys-dstack-gcp.json");
    CHECK(same_file(f1, f2));
    /* without --app-id: the agent's Info names the app */
    CHECK(get_keys_app(url, "dstack", asock, NULL, "dstack-noapp") == 0);
    path_in_tmp(f2, sizeof(f2), "keys-dstack-noapp.json");
    CHECK(same_file(f1, f2));

    /* refusals */
    CHECK(get_keys_app(url, "dstack", asock, "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c4",
                       "other-app") != 0);
    path_in_tmp(log, sizeof(log), "get-keys-other-app.log");
    CHECK(file_has(log, "is not the app id the dstack guest agent measured"));
    CHECK(get_keys(url, "dstack", none, "none") != 0);
    path_in_tmp(log, sizeof(log), "get-keys-none.log");
    CHECK(file_has(log, "cannot open the TEE: no dstack guest agent socket at"));
    kmstest_agent_set_mode(a, KMSTEST_AGENT_JUNK);
    CHECK(get_keys(url, "dstack", asock, "junk") != 0);
    path_in_tmp(log, sizeof(log), "get-keys-junk.log");
    CHECK(file_has(log, "the Info answer is not a JSON object"));
    kmstest_agent_set_mode(a, KMSTEST_AGENT_WRONG_RD);
    CHECK(get_keys(url, "dstack", asock, "wrong-rd") != 0);
    path_in_tmp(log, sizeof(log), "get-keys-wrong-rd.log");
    CHECK(file_has(log, "the attestation is over other report_data than asked for"));
    CHECK(file_has(log, "no KMS served the keys"));
    kmstest_kmsd_stop(pid);
out:
    kmstest_agent_stop(k);
    kmstest_agent_stop(a);
    kmstest_agent_stop(g);
}

/* --tee auto picks the agent socket when it exists; a GCP TDX agent gives dstack-gcp-tdx. */
static void test_auto_gcp(void)
{
    static const uint8_t kms_app[20] = {0x47, 0x43, 0x50};
    struct kmstest_agent *g = NULL;
    char sock[300], ob[64], log[300];
    const char *extra[] = {"--tee", "auto", "--dstack-socket", sock, NULL};
    unsigned port = kmstest_free_port();
    pid_t pid;

    path_in_tmp(sock, sizeof(sock), "kms-gcp.sock");
    CHECK_OK(kmstest_agent_start(sock, KMS_PLATFORM_SIM_GCP, g_sim, kms_app, NULL, 0, NULL, &g));
    if (g == NULL)
        return;
    snprintf(ob, sizeof(ob), "http://127.0.0.1:%u", port);
    pid = kmstest_kmsd_start(g_tmp, "dstack-auto", g_sim, port, extra);
    check_tee_variant(ob, "dstack-gcp-tdx");
    bootstrap(ob);
    kmstest_kmsd_stop(pid);
    path_in_tmp(log, sizeof(log), "dstack-auto.log");
    CHECK(file_has(log, "--tee auto: detected dstack"));
    kmstest_agent_stop(g);
}

/* kmsd --tee dstack without an agent socket exits at start and says why. */
static void test_node_no_agent(void)
{
    char sock[300], log[300];
    const char *extra[] = {"--tee", "dstack", "--dstack-socket", sock, NULL};
    unsigned port = kmstest_free_port();
    pid_t pid;

    path_in_tmp(sock, sizeof(sock), "absent.sock");
    pid = kmstest_kmsd_spawn(g_tmp, "dstack-none", g_sim, port, extra, NULL);
    CHECK(pid > 0);
    /* -1: exited before listening (and reaped) */
    CHECK(kmstest_kmsd_wait_up(pid, port) == -1);
    path_in_tmp(log, sizeof(log), "dstack-none.log");
    CHECK(file_has(log, "no dstack guest agent socket at"));
}

int main(void)
{
    char tmpl[] = "/tmp/kms-e2e-dstk-XXXXXX";

    if (getenv("KMS_BIN_DIR") == NULL || mkdtemp(tmpl) == NULL)
        return 1;
    snprintf(g_tmp, sizeof(g_tmp), "%s", tmpl);
    snprintf(g_sim, sizeof(g_sim), "%s/sim", g_tmp);
    RUN(test_node_and_client);
    RUN(test_auto_gcp);
    RUN(test_node_no_agent);
    kmstest_tmp_finish(g_tmp, kms_test_failures);
    TEST_MAIN_END();
}
