/*
 * Continuous self-authorization through a real kmsd with --auth webhook (a fake auth-api on
 * loopback that can deny, allow, go down and come back). Proves, with short --auth-interval and
 * --auth-grace:
 *  - a denial on a running node moves it to not-authorized within the interval (GetTempCaCert
 *    refused with the policy's reason), and an allow moves it back, without restart;
 *  - a backend outage keeps the last allow for the grace period (/health 200, status
 *    backend-unreachable, GetTempCaCert served), then fails closed (403, "cannot confirm");
 *  - backend down at start: not-authorized with status backend-unreachable, serving once the
 *    backend answers;
 *  - /health, /metrics and the log tell an outage from a denial.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "replication/replication.h"
#include "support/kmstest_proc.h"
#include "test.h"

#define INTERVAL_MS 500
#define GRACE_MS 4000
/* A check is a sim attestation, its verification and one webhook call: allow this much on top
 * of the interval on a loaded machine (ASan) before calling a transition late. */
#define SLACK_MS 4000
#define WAIT_MAX_MS 30000

static char g_tmp[256];
static char g_sim[300];
static volatile int hook_deny;

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
    if (*ptr == NULL) {
        *ptr = (void *)1;
        return MHD_YES;
    }
    if (*ups > 0) {
        *ups = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") == 0)
        body = "{\"status\":\"ok\",\"kmsContractAddr\":\"0x00\",\"gatewayAppId\":\"gw\","
               "\"chainId\":1,\"appImplementation\":\"0x00\"}";
    else if (strstr(url, "bootAuth/kms") != NULL && hook_deny)
        body = "{\"isAllowed\":false,\"gatewayAppId\":\"\",\"reason\":\"KMS not registered\"}";
    else
        body = "{\"isAllowed\":true,\"gatewayAppId\":\"gw\",\"reason\":\"\"}";
    r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static long long now_ms(void);

/*
 * The fake auth-api on *port. A fresh port (may_move) can be taken by another test between
 * kmstest_free_port and the bind: then another is tried. A restart on the same port is retried
 * for at most 5 s (the old socket may linger). NULL if it never started.
 */
static struct MHD_Daemon *hook_start(unsigned *port, int may_move)
{
    long long t0 = now_ms();
    struct MHD_Daemon *d = NULL;

    for (int i = 0; i < 100 && d == NULL && now_ms() - t0 < 5000; i++) {
        if (i > 0 && may_move)
            *port = kmstest_free_port();
        else if (i > 0)
            usleep(50000);
        d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                             (uint16_t)*port, NULL, NULL, hook, NULL, MHD_OPTION_END);
    }
    CHECK(d != NULL);
    return d;
}

static long long now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* GET base/health: HTTP status, and self_auth.status / state / reason copied out. */
static long health(const char *base, char status[64], char state[64], char reason[600])
{
    char url[128], out[8192];
    json_t *j, *sa;
    long st;

    status[0] = state[0] = reason[0] = '\0';
    snprintf(url, sizeof(url), "%s/health", base);
    st = kmstest_http_get(url, out, sizeof(out));
    j = json_loads(out, 0, NULL);
    if (j == NULL)
        return st;
    sa = json_object_get(j, "self_auth");
    snprintf(status, 64, "%s",
             json_string_value(json_object_get(sa, "status")) != NULL
                 ? json_string_value(json_object_get(sa, "status"))
                 : "");
    snprintf(state, 64, "%s",
             json_string_value(json_object_get(j, "state")) != NULL
                 ? json_string_value(json_object_get(j, "state"))
                 : "");
    snprintf(reason, 600, "%s",
             json_string_value(json_object_get(j, "reason")) != NULL
                 ? json_string_value(json_object_get(j, "reason"))
                 : "");
    json_decref(j);
    return st;
}

/* Polls /health until the HTTP status is want_http and self_auth.status is want_status (every
 * 50 ms, at most WAIT_MAX_MS). Returns the ms it took, or -1 (with what it saw last). */
static long long wait_health(const char *base, long want_http, const char *want_status)
{
    long long t0 = now_ms();
    char status[64], state[64], reason[600];
    long st = 0;

    while (now_ms() - t0 < WAIT_MAX_MS) {
        st = health(base, status, state, reason);
        if (st == want_http && strcmp(status, want_status) == 0)
            return now_ms() - t0;
        usleep(50000);
    }
    fprintf(stderr, "  /health: %ld %s self_auth %s, want %ld %s\n", st, state, status, want_http,
            want_status);
    return -1;
}

static int metrics_have(const char *base, const char *needle)
{
    char url[128];
    char *out = malloc(65536);
    int found;

    if (out == NULL)
        return 0;
    snprintf(url, sizeof(url), "%s/metrics", base);
    found = kmstest_http_get(url, out, 65536) == 200 && strstr(out, needle) != NULL;
    free(out);
    return found;
}

static int log_has(const char *name, const char *needle)
{
    char path[400];
    char *txt = NULL;
    size_t len = 0;
    int found;

    snprintf(path, sizeof(path), "%s/%s.log", g_tmp, name);
    if (kms_file_read(path, 1 << 22, (uint8_t **)&txt, &len) < 0)
        return 0;
    found = memmem(txt, len, needle, strlen(needle)) != NULL;
    free(txt);
    return found;
}

static void test_webhook_continuous(void)
{
    unsigned port = kmstest_free_port(), hport = kmstest_free_port();
    int f0 = kms_test_failures;
    char hook_url[64], ob[64], url[64], iv[16], gr[16];
    char status[64], state[64], reason[600];
    const char *extra[] = {"--auth",
                           "webhook",
                           "--auth-url",
                           hook_url,
                           "--auth-interval",
                           iv,
                           "--auth-grace",
                           gr,
                           "--auth-timeout-ms",
                           "1000",
                           NULL};
    struct MHD_Daemon *d;
    long long t;
    pid_t pid = -1;

    hook_deny = 0;
    d = hook_start(&hport, 1);
    if (d == NULL)
        return;
    snprintf(hook_url, sizeof(hook_url), "http://127.0.0.1:%u", hport);
    snprintf(ob, sizeof(ob), "http://127.0.0.1:%u", port);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    snprintf(iv, sizeof(iv), "%dms", INTERVAL_MS);
    snprintf(gr, sizeof(gr), "%dms", GRACE_MS);
    pid = kmstest_kmsd_start(g_tmp, "n-self", g_sim, port, extra);
    CHECK_OK(kmstest_call0(ob, "Bootstrap", "{\"domain\":\"127.0.0.1\"}"));
    CHECK_OK(kmstest_call0(ob, "Finish", NULL));
    CHECK_OK(kmstest_wait_serving(url));
    CHECK(wait_health(url, 200, "allowed") >= 0);
    if (kms_test_failures != f0)
        goto out; /* no serving node: every step below would only wait for nothing */
    CHECK(metrics_have(url, "kmsd_self_auth_state{state=\"allowed\"} 1"));
    CHECK(metrics_have(url, "# TYPE kmsd_auth_backend_errors_total counter"));

    /* policy denies the running node: not-authorized within the interval, no restart */
    hook_deny = 1;
    t = wait_health(url, 403, "denied");
    CHECK(t >= 0 && t <= INTERVAL_MS + SLACK_MS);
    CHECK(health(url, status, state, reason) == 403);
    CHECK(strcmp(reason, "KMS not registered") == 0);
    CHECK_RC(kmstest_call0(url, "GetTempCaCert", NULL), KMS_ERR_REPL_RPC);
    CHECK_DETAIL("KMS is not authorized by its own policy: KMS not registered");
    CHECK(metrics_have(url, "kmsd_self_auth_state{state=\"denied\"} 1"));
    CHECK(
        log_has("n-self", "state: not-authorized (denied by its own policy: KMS not registered)"));

    /* allowed again: serving within the interval */
    hook_deny = 0;
    t = wait_health(url, 200, "allowed");
    CHECK(t >= 0 && t <= INTERVAL_MS + SLACK_MS);
    CHECK_OK(kmstest_call0(url, "GetTempCaCert", NULL));
    CHECK(log_has("n-self", "state: serving (own authorization confirmed)"));

    /* backend outage: the allow holds for the grace period, then the node fails closed */
    MHD_stop_daemon(d);
    d = NULL;
    CHECK(wait_health(url, 200, "backend-unreachable") >= 0);
    CHECK_OK(kmstest_call0(url, "GetTempCaCert", NULL));
    CHECK(metrics_have(url, "kmsd_self_auth_state{state=\"backend-unreachable\"} 1"));
    CHECK(!metrics_have(url, "kmsd_auth_backend_errors_total 0\n"));
    t = wait_health(url, 403, "backend-unreachable");
    CHECK(t >= 0);
    CHECK(health(url, status, state, reason) == 403);
    CHECK(strstr(reason, "the authorization backend did not answer") != NULL);
    CHECK(strstr(reason, "grace period 4 s ended") != NULL);
    CHECK_RC(kmstest_call0(url, "GetTempCaCert", NULL), KMS_ERR_REPL_RPC);
    CHECK_DETAIL("KMS cannot confirm its own authorization");
    CHECK(log_has("n-self", "state: not-authorized (authorization not confirmed:"));

    /* backend back: serving within one interval (retries back off up to the interval) */
    d = hook_start(&hport, 0);
    if (d == NULL)
        goto out;
    t = wait_health(url, 200, "allowed");
    CHECK(t >= 0 && t <= INTERVAL_MS + SLACK_MS);
    CHECK_OK(kmstest_call0(url, "GetTempCaCert", NULL));
    kmstest_kmsd_stop(pid);

    /* backend down at start: refused (no decision to keep), serving once it answers */
    MHD_stop_daemon(d);
    d = NULL;
    pid = kmstest_kmsd_start(g_tmp, "n-self", g_sim, port, extra);
    CHECK(wait_health(url, 403, "backend-unreachable") >= 0);
    CHECK_RC(kmstest_call0(url, "GetTempCaCert", NULL), KMS_ERR_REPL_RPC);
    CHECK_DETAIL("KMS cannot confirm its own authorization: self-authorization: the "
                 "authorization backend did not answer");
    d = hook_start(&hport, 0);
    if (d == NULL)
        goto out;
    t = wait_health(url, 200, "allowed");
    CHECK(t >= 0 && t <= INTERVAL_MS + SLACK_MS);
    CHECK_OK(kmstest_call0(url, "GetTempCaCert", NULL));
out:
    kmstest_kmsd_stop(pid);
    if (d != NULL)
        MHD_stop_daemon(d);
}

/* The options are checked: a duration needs a number and a known unit. */
static void test_options(void)
{
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "%s/node/kmsd --auth-interval 5x >/dev/null 2>&1",
             getenv("KMS_BIN_DIR") != NULL ? getenv("KMS_BIN_DIR") : ".");
    CHECK(WEXITSTATUS(system(cmd)) == 2);
    snprintf(cmd, sizeof(cmd), "%s/node/kmsd --auth-interval 50ms >/dev/null 2>&1",
             getenv("KMS_BIN_DIR") != NULL ? getenv("KMS_BIN_DIR") : ".");
    CHECK(WEXITSTATUS(system(cmd)) == 2);
    snprintf(cmd, sizeof(cmd), "%s/node/kmsd --auth-grace -1 >/dev/null 2>&1",
             getenv("KMS_BIN_DIR") != NULL ? getenv("KMS_BIN_DIR") : ".");
    CHECK(WEXITSTATUS(system(cmd)) == 2);
    snprintf(cmd, sizeof(cmd), "%s/node/kmsd --help 2>&1 | grep -q -- '--auth-grace DURATION'",
             getenv("KMS_BIN_DIR") != NULL ? getenv("KMS_BIN_DIR") : ".");
    CHECK(system(cmd) == 0);
}

int main(void)
{
    char tmpl[] = "/tmp/kms-selfauth-XXXXXX";

    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_tmp, sizeof(g_tmp), "%s", mkdtemp(tmpl));
    snprintf(g_sim, sizeof(g_sim), "%s/sim", g_tmp);
    RUN(test_options);
    RUN(test_webhook_continuous);
    kmstest_tmp_finish(g_tmp, kms_test_failures);
    curl_global_cleanup();
    TEST_MAIN_END();
}
