/*
 * chain auth backends: dev and webhook. A libmicrohttpd server on 127.0.0.1 (ephemeral port)
 * plays the auth-api: it records each request and answers with a canned status/body/delay
 * set by the test, so every check the client makes on a response has a negative case.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "chain/auth.h"
#include "chain/internal.h"
#include "test.h"

/* ---------------------------------------------------------------- fake auth-api */

static struct {
    struct MHD_Daemon *d;
    uint16_t port;
    pthread_mutex_t mu;
    /* canned answer */
    unsigned status;
    char *body;
    size_t body_len;
    unsigned sleep_ms;
    const char *location;
    /* last request */
    char method[16];
    char path[512];
    char content_type[128];
    char *req_body;
    int hits;
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER};

struct upload {
    char *p;
    size_t len;
};

static void srv_answer(unsigned status, const char *body)
{
    pthread_mutex_lock(&srv.mu);
    free(srv.body);
    srv.status = status;
    srv.body = strdup(body);
    srv.body_len = strlen(body);
    srv.sleep_ms = 0;
    srv.location = NULL;
    srv.hits = 0;
    srv.method[0] = srv.path[0] = srv.content_type[0] = '\0';
    free(srv.req_body);
    srv.req_body = NULL;
    pthread_mutex_unlock(&srv.mu);
}

static enum MHD_Result srv_handler(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_data_size, void **con_cls)
{
    struct upload *up = *con_cls;
    struct MHD_Response *r;
    const char *ct;
    unsigned status;
    unsigned sleep_ms;
    enum MHD_Result ret;

    (void)cls;
    (void)version;
    if (up == NULL) {
        up = calloc(1, sizeof(*up));
        if (up == NULL)
            return MHD_NO;
        *con_cls = up;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        char *np = realloc(up->p, up->len + *upload_data_size + 1);

        if (np == NULL)
            return MHD_NO;
        up->p = np;
        memcpy(up->p + up->len, upload_data, *upload_data_size);
        up->len += *upload_data_size;
        up->p[up->len] = '\0';
        *upload_data_size = 0;
        return MHD_YES;
    }
    ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    pthread_mutex_lock(&srv.mu);
    snprintf(srv.method, sizeof(srv.method), "%s", method);
    snprintf(srv.path, sizeof(srv.path), "%s", url);
    snprintf(srv.content_type, sizeof(srv.content_type), "%s", ct != NULL ? ct : "");
    free(srv.req_body);
    srv.req_body = strdup(up->p != NULL ? up->p : "");
    srv.hits++;
    status = srv.status;
    sleep_ms = srv.sleep_ms;
    r = MHD_create_response_from_buffer(srv.body_len, srv.body, MHD_RESPMEM_MUST_COPY);
    if (srv.location != NULL)
        MHD_add_response_header(r, "Location", srv.location);
    pthread_mutex_unlock(&srv.mu);
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (sleep_ms != 0)
        usleep(sleep_ms * 1000u);
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static void srv_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                          enum MHD_RequestTerminationCode toe)
{
    struct upload *up = *con_cls;

    (void)cls;
    (void)c;
    (void)toe;
    if (up != NULL) {
        free(up->p);
        free(up);
        *con_cls = NULL;
    }
}

static int srv_start(void)
{
    struct sockaddr_in sa = {0};
    const union MHD_DaemonInfo *di;

    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    srv.d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0,
                             NULL, NULL, srv_handler, NULL, MHD_OPTION_SOCK_ADDR, &sa,
                             MHD_OPTION_NOTIFY_COMPLETED, srv_completed, NULL, MHD_OPTION_END);
    if (srv.d == NULL)
        return -1;
    di = MHD_get_daemon_info(srv.d, MHD_DAEMON_INFO_BIND_PORT);
    if (di == NULL || di->port == 0)
        return -1;
    srv.port = di->port;
    return 0;
}

/* A loopback port with nothing listening (bound once, then released). */
static uint16_t closed_port(void)
{
    struct sockaddr_in sa = {0};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    uint16_t port = 0;

    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* ---------------------------------------------------------------- fixtures */

static uint8_t app_id[20] = {0xde, 0xad, 0xbe, 0xef};
static uint8_t os_image[32];
static uint8_t compose[32];
static uint8_t kpi[3] = {0x7b, 0x22, 0x7d};
static char adv0[] = "INTEL-SA-00334";
static char adv1[] = "INTEL-SA-00615";
static char *advs[2] = {adv0, adv1};

static void make_boot_info(struct kms_boot_info *bi)
{
    memset(bi, 0, sizeof(*bi));
    memset(os_image, 0x0c, sizeof(os_image));
    memset(compose, 0xef, sizeof(compose));
    bi->mode = KMS_ATT_TDX;
    memset(bi->mr_aggregated, 0xab, 32);
    memset(bi->mr_system, 0xcd, 32);
    memset(bi->device_id, 0x12, 32);
    bi->os_image_hash = (struct kms_bytes){os_image, sizeof(os_image)};
    bi->app_id = (struct kms_bytes){app_id, sizeof(app_id)};
    bi->compose_hash = (struct kms_bytes){compose, sizeof(compose)};
    bi->instance_id = (struct kms_bytes){NULL, 0};
    bi->key_provider_info = (struct kms_bytes){kpi, sizeof(kpi)};
    snprintf(bi->tcb_status, sizeof(bi->tcb_status), "UpToDate");
    bi->advisory_ids = advs;
    bi->n_advisory_ids = 2;
}

/* s repeated n times into out (cap bytes, truncated to fit). */
static const char *rep(char *out, size_t cap, const char *s, int n)
{
    size_t off = 0;

    out[0] = '\0';
    for (int i = 0; i < n && off < cap; i++)
        off += (size_t)snprintf(out + off, cap - off, "%s", s);
    return out;
}

/* The body the spec prescribes for make_boot_info(), written out by hand from §7. */
static void expected_body(char *out, size_t outsz)
{
    char a[80], o[80], m[80], z[40], c[80], d[80];

    snprintf(out, outsz,
             "{\"attestationMode\":\"dstack-tdx\",\"mrAggregated\":\"%s\",\"osImageHash\":\"%s\","
             "\"mrSystem\":\"%s\",\"appId\":\"deadbeef%s\",\"composeHash\":\"%s\","
             "\"instanceId\":\"\",\"deviceId\":\"%s\",\"keyProviderInfo\":\"7b227d\","
             "\"tcbStatus\":\"UpToDate\",\"advisoryIds\":[\"INTEL-SA-00334\",\"INTEL-SA-00615\"]}",
             rep(a, sizeof(a), "ab", 32), rep(o, sizeof(o), "0c", 32), rep(m, sizeof(m), "cd", 32),
             rep(z, sizeof(z), "00", 16), rep(c, sizeof(c), "ef", 32), rep(d, sizeof(d), "12", 32));
}

static struct kms_auth *webhook_at(const char *url, long timeout_ms)
{
    struct kms_auth_cfg cfg = {.type = "webhook", .webhook_url = url, .timeout_ms = timeout_ms};
    struct kms_auth *a = NULL;

    CHECK_OK(kms_auth_new(&cfg, &a));
    return a;
}

static struct kms_auth *webhook(void)
{
    char url[64];

    snprintf(url, sizeof(url), "http://127.0.0.1:%u", srv.port);
    return webhook_at(url, 2000);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- BootInfo JSON */

/* The POST body is exactly the reference's camelCase BootInfo: key order, lowercase hex
 * without 0x, empty bytes as "", advisory ids as an array. */
static void test_boot_info_json_exact(void)
{
    struct kms_boot_info bi;
    char want[2048];
    char *got;

    make_boot_info(&bi);
    expected_body(want, sizeof(want));
    got = kms_auth_boot_info_json(&bi);
    CHECK(got != NULL);
    if (got != NULL)
        CHECK(strcmp(got, want) == 0);
    free(got);
}

/* Each attestation mode has its reference name; Nitro's empty tcbStatus/advisoryIds encode
 * as "" and []. */
static void test_boot_info_json_modes(void)
{
    struct kms_boot_info bi;
    char *s;

    make_boot_info(&bi);
    bi.mode = KMS_ATT_GCP_TDX;
    s = kms_auth_boot_info_json(&bi);
    CHECK(s != NULL && strstr(s, "{\"attestationMode\":\"dstack-gcp-tdx\",") == s);
    free(s);
    bi.mode = KMS_ATT_NITRO;
    bi.tcb_status[0] = '\0';
    bi.n_advisory_ids = 0;
    bi.advisory_ids = NULL;
    s = kms_auth_boot_info_json(&bi);
    CHECK(s != NULL && strstr(s, "{\"attestationMode\":\"dstack-nitro-enclave\",") == s);
    CHECK(s != NULL && strstr(s, ",\"tcbStatus\":\"\",\"advisoryIds\":[]}") != NULL);
    free(s);
}

/* Encoding refuses: an unknown mode, a non-UTF-8 tcbStatus or advisory id, a byte field with
 * a length but no data, a missing advisory array. */
static void test_boot_info_json_invalid(void)
{
    struct kms_boot_info bi;
    char bad_adv[] = "INTEL-\xff";
    char *bad_advs[1] = {bad_adv};

    make_boot_info(&bi);
    bi.mode = (enum kms_att_mode)7;
    CHECK(kms_auth_boot_info_json(&bi) == NULL);
    CHECK_DETAIL("unknown attestation mode 7");

    make_boot_info(&bi);
    bi.tcb_status[0] = (char)0xc3; /* truncated UTF-8 sequence */
    bi.tcb_status[1] = '\0';
    CHECK(kms_auth_boot_info_json(&bi) == NULL);
    CHECK_DETAIL("tcbStatus is not valid UTF-8");

    make_boot_info(&bi);
    bi.advisory_ids = bad_advs;
    bi.n_advisory_ids = 1;
    CHECK(kms_auth_boot_info_json(&bi) == NULL);
    CHECK_DETAIL("advisory id 0 is not valid UTF-8");

    make_boot_info(&bi);
    bi.app_id.p = NULL;
    CHECK(kms_auth_boot_info_json(&bi) == NULL);
    CHECK_DETAIL("appId has a length but no data");

    make_boot_info(&bi);
    bi.advisory_ids = NULL;
    CHECK(kms_auth_boot_info_json(&bi) == NULL);
    CHECK_DETAIL("advisory_ids missing");
}

/* ---------------------------------------------------------------- config */

/* kms_auth_new rejects: missing cfg/type, unknown type, missing/ill-formed URL, bad timeout,
 * a dev gateway id too long to return. */
static void test_config_invalid(void)
{
    struct kms_auth_cfg cfg = {0};
    struct kms_auth *a = (struct kms_auth *)&cfg; /* must be reset to NULL on failure */
    char longid[300];

    CHECK_RC(kms_auth_new(NULL, &a), KMS_ERR_INVAL);
    CHECK(a == NULL);
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("auth_api.type is not set");
    cfg.type = "chain";
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("unknown auth_api.type \"chain\"");

    cfg.type = "webhook";
    cfg.webhook_url = NULL;
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("auth_api.webhook.url is not set");
    cfg.webhook_url = "";
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("auth_api.webhook.url is not set");
    cfg.webhook_url = "ftp://127.0.0.1/";
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("must start with http:// or https://");
    cfg.webhook_url = "file:///etc/passwd";
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("must start with http:// or https://");
    cfg.webhook_url = "http://";
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("has no host");
    cfg.webhook_url = "http://auth-api:8000/?x=1";
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("must not contain a query or fragment");
    cfg.webhook_url = "http://auth api:8000";
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("space or control character at offset 11");
    cfg.webhook_url = "http://auth-api:8000";
    cfg.timeout_ms = -1;
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("timeout -1 ms is out of range");
    cfg.timeout_ms = 3600L * 1000L;
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("out of range");
    CHECK(a == NULL);

    cfg.type = "dev";
    memset(longid, 'g', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    cfg.dev_gateway_app_id = longid;
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("dev.gateway_app_id is 299 bytes");
    CHECK(a == NULL);
}

/* "eth" dispatches to the native backend (chain/eth.c, always built): an empty eth config is
 * refused by that backend's own checks, never with the "eth backend not built" of the old
 * weak-symbol default. */
static void test_eth_dispatch(void)
{
    struct kms_auth_cfg cfg = {.type = "eth"};
    struct kms_auth *a = NULL;
    int rc;

    rc = kms_auth_new(&cfg, &a);
    CHECK_RC(rc, KMS_ERR_INVAL);
    CHECK(strstr(kms_err_detail(), "eth backend not built") == NULL);
    CHECK(a == NULL);
    kms_auth_free(a);
}

/* ---------------------------------------------------------------- dev */

/* dev allows everything with an empty reason and the configured gateway id ("any" when
 * unset), and never calls out; GetMeta reports is_dev with null contract fields. */
static void test_dev(void)
{
    struct kms_auth_cfg cfg = {.type = "dev"};
    struct kms_auth_result res;
    struct kms_auth_info info;
    struct kms_boot_info bi;
    struct kms_auth *a = NULL;

    make_boot_info(&bi);
    CHECK_OK(kms_auth_new(&cfg, &a));
    CHECK(kms_auth_is_dev(a) == 1);
    CHECK_OK(kms_auth_check(a, 0, &bi, &res));
    CHECK(res.allowed == 1 && strcmp(res.gateway_app_id, "any") == 0 && res.reason[0] == '\0');
    CHECK_OK(kms_auth_check(a, 1, &bi, &res));
    CHECK(res.allowed == 1);
    CHECK_OK(kms_auth_info(a, &info));
    CHECK(info.is_dev == 1 && info.kms_contract_addr == NULL && info.status == NULL &&
          info.app_implementation == NULL && info.chain_id == 0);
    CHECK(info.gateway_app_id != NULL && strcmp(info.gateway_app_id, "any") == 0);
    kms_auth_info_clear(&info);
    kms_auth_free(a);

    cfg.dev_gateway_app_id = "my-gateway";
    CHECK_OK(kms_auth_new(&cfg, &a));
    CHECK_OK(kms_auth_check(a, 0, &bi, &res));
    CHECK(res.allowed == 1 && strcmp(res.gateway_app_id, "my-gateway") == 0);
    kms_auth_free(a);
}

/* ---------------------------------------------------------------- dispatch */

static int fake_check(void *priv, int is_kms, const struct kms_boot_info *bi,
                      struct kms_auth_result *out)
{
    (void)priv;
    (void)is_kms;
    (void)bi;
    out->allowed = 1; /* a buggy backend that says yes and fails */
    return kms_err_set(KMS_ERR_AUTH_TIMEOUT, "fake backend timed out");
}

static int fake_info(void *priv, struct kms_auth_info *out)
{
    (void)priv;
    out->status = strdup("half-filled");
    return kms_err_set(KMS_ERR_AUTH_RESPONSE, "fake backend failed");
}

static const struct kms_auth_ops fake_ops = {
    .name = "fake", .check = fake_check, .info = fake_info, .free = NULL};

/* The dispatcher fails closed (allowed forced to 0 whenever rc < 0), clears a half-filled
 * info, and rejects NULL arguments. */
static void test_dispatch_fail_closed(void)
{
    struct kms_auth_result res;
    struct kms_auth_info info;
    struct kms_boot_info bi;
    struct kms_auth *a = NULL;

    make_boot_info(&bi);
    CHECK_OK(kms_auth_wrap(&fake_ops, NULL, 0, &a));
    CHECK_RC(kms_auth_check(a, 0, &bi, &res), KMS_ERR_AUTH_TIMEOUT);
    CHECK(res.allowed == 0);
    CHECK_RC(kms_auth_info(a, &info), KMS_ERR_AUTH_RESPONSE);
    CHECK(info.status == NULL);
    CHECK_RC(kms_auth_check(a, 0, NULL, &res), KMS_ERR_INVAL);
    CHECK_RC(kms_auth_check(NULL, 0, &bi, &res), KMS_ERR_INVAL);
    CHECK(res.allowed == 0);
    CHECK_RC(kms_auth_info(NULL, &info), KMS_ERR_INVAL);
    kms_auth_free(a);
}

/* ---------------------------------------------------------------- webhook: bootAuth */

/* An allowing auth-api: the client POSTs the exact BootInfo JSON with a JSON content type to
 * <url>/bootAuth/app (or /bootAuth/kms), and returns isAllowed and gatewayAppId. */
static void test_webhook_allow(void)
{
    struct kms_auth_result res;
    struct kms_boot_info bi;
    struct kms_auth *a = webhook();
    char want[2048];

    make_boot_info(&bi);
    expected_body(want, sizeof(want));
    srv_answer(200, "{\"isAllowed\":true,\"gatewayAppId\":\"gw-123\",\"reason\":\"\"}");
    CHECK(kms_auth_is_dev(a) == 0);
    CHECK_OK(kms_auth_check(a, 0, &bi, &res));
    CHECK(res.allowed == 1 && strcmp(res.gateway_app_id, "gw-123") == 0 && res.reason[0] == 0);
    pthread_mutex_lock(&srv.mu);
    CHECK(strcmp(srv.method, "POST") == 0);
    CHECK(strcmp(srv.path, "/bootAuth/app") == 0);
    CHECK(strcmp(srv.content_type, "application/json") == 0);
    CHECK(srv.req_body != NULL && strcmp(srv.req_body, want) == 0);
    pthread_mutex_unlock(&srv.mu);

    CHECK_OK(kms_auth_check(a, 1, &bi, &res));
    CHECK(res.allowed == 1);
    pthread_mutex_lock(&srv.mu);
    CHECK(strcmp(srv.path, "/bootAuth/kms") == 0);
    CHECK(srv.req_body != NULL && strcmp(srv.req_body, want) == 0);
    pthread_mutex_unlock(&srv.mu);
    kms_auth_free(a);
}

/* url_join: a trailing '/' is not doubled, and a base path is kept. Any 2xx is success. */
static void test_webhook_url_join(void)
{
    struct kms_auth_info info;
    struct kms_auth_result res;
    struct kms_boot_info bi;
    struct kms_auth *a;
    char url[96];

    make_boot_info(&bi);
    srv_answer(201, "{\"isAllowed\":true,\"gatewayAppId\":\"\",\"reason\":\"\"}");
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", srv.port);
    a = webhook_at(url, 2000);
    CHECK_OK(kms_auth_check(a, 0, &bi, &res));
    CHECK(strcmp(srv.path, "/bootAuth/app") == 0);
    kms_auth_free(a);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/auth", srv.port);
    a = webhook_at(url, 2000);
    CHECK_OK(kms_auth_check(a, 1, &bi, &res));
    CHECK(strcmp(srv.path, "/auth/bootAuth/kms") == 0);
    /* GET goes to the configured URL itself, not joined (as the reference's http_get) */
    srv_answer(200, "{\"status\":\"ok\",\"kmsContractAddr\":\"\",\"gatewayAppId\":\"\","
                    "\"chainId\":0,\"appImplementation\":\"\"}");
    CHECK_OK(kms_auth_info(a, &info));
    CHECK(strcmp(srv.method, "GET") == 0 && strcmp(srv.path, "/auth") == 0);
    kms_auth_info_clear(&info);
    kms_auth_free(a);
}

/* A denying auth-api: rc 0, allowed 0, the reason passed through. */
static void test_webhook_deny(void)
{
    struct kms_auth_result res;
    struct kms_boot_info bi;
    struct kms_auth *a = webhook();

    make_boot_info(&bi);
    srv_answer(200, "{\"isAllowed\":false,\"gatewayAppId\":\"\",\"reason\":\"not registered\"}");
    CHECK_OK(kms_auth_check(a, 0, &bi, &res));
    CHECK(res.allowed == 0 && strcmp(res.reason, "not registered") == 0);
    kms_auth_free(a);
}

/* Non-2xx is KMS_ERR_AUTH_HTTP with the status and a sanitized body; redirects are not
 * followed (the 302 itself is the error). */
static void test_webhook_http_error(void)
{
    struct kms_auth_result res;
    struct kms_boot_info bi;
    struct kms_auth *a = webhook();
    char big[2000];

    make_boot_info(&bi);
    srv_answer(500, "internal boom\x01\n");
    CHECK_RC(kms_auth_check(a, 0, &bi, &res), KMS_ERR_AUTH_HTTP);
    CHECK(res.allowed == 0);
    CHECK_DETAIL("returned HTTP 500: internal boom..");
    srv_answer(404, "{\"isAllowed\":true,\"gatewayAppId\":\"\",\"reason\":\"\"}");
    CHECK_RC(kms_auth_check(a, 0, &bi, &res), KMS_ERR_AUTH_HTTP);
    CHECK_DETAIL("HTTP 404");

    srv_answer(302, "");
    srv.location = "/bootAuth/elsewhere";
    CHECK_RC(kms_auth_check(a, 0, &bi, &res), KMS_ERR_AUTH_HTTP);
    CHECK_DETAIL("HTTP 302");
    CHECK(srv.hits == 1);

    /* a long body is cut in the detail */
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    srv_answer(503, big);
    CHECK_RC(kms_auth_check(a, 0, &bi, &res), KMS_ERR_AUTH_HTTP);
    CHECK_DETAIL("xxx...");
    CHECK(strlen(kms_err_detail()) < 500);
    kms_auth_free(a);
}

/* Each required response check, flipped one at a time: every case is KMS_ERR_AUTH_RESPONSE
 * with allowed left 0. */
static void test_webhook_bad_response(void)
{
    static const struct {
        const char *body;
        const char *detail;
    } cases[] = {
        {"{not json", "invalid JSON"},
        {"", "invalid JSON"},
        {"[true]", "not an object"},
        {"{\"gatewayAppId\":\"\",\"reason\":\"\"}", "lacks required field isAllowed"},
        {"{\"isAllowed\":true,\"reason\":\"\"}", "lacks required field gatewayAppId"},
        {"{\"isAllowed\":true,\"gatewayAppId\":\"\"}", "lacks required field reason"},
        {"{\"isAllowed\":\"true\",\"gatewayAppId\":\"\",\"reason\":\"\"}",
         "isAllowed is not a boolean"},
        {"{\"isAllowed\":1,\"gatewayAppId\":\"\",\"reason\":\"\"}", "isAllowed is not a boolean"},
        {"{\"isAllowed\":true,\"gatewayAppId\":5,\"reason\":\"\"}", "gatewayAppId is not a string"},
        {"{\"isAllowed\":true,\"gatewayAppId\":\"\",\"reason\":null}", "reason is not a string"},
        {"{\"isAllowed\":false,\"isAllowed\":true,\"gatewayAppId\":\"\",\"reason\":\"\"}",
         "duplicate"},
    };
    struct kms_auth_result res;
    struct kms_boot_info bi;
    struct kms_auth *a = webhook();

    make_boot_info(&bi);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        srv_answer(200, cases[i].body);
        CHECK_RC(kms_auth_check(a, 0, &bi, &res), KMS_ERR_AUTH_RESPONSE);
        CHECK(res.allowed == 0);
        CHECK_DETAIL(cases[i].detail);
    }
    kms_auth_free(a);
}

/* Length limits: gatewayAppId must fit whole (300 bytes is refused); a long reason is
 * truncated at a UTF-8 boundary; a body over 1 MiB is refused while being read. */
static void test_webhook_limits(void)
{
    struct kms_auth_result res;
    struct kms_boot_info bi;
    struct kms_auth *a = webhook();
    const size_t body_cap = 1024 * 1024 + 64;
    char *body = malloc(body_cap);
    char gw[301];

    make_boot_info(&bi);
    memset(gw, 'g', 300);
    gw[300] = '\0';
    snprintf(body, 1024, "{\"isAllowed\":true,\"gatewayAppId\":\"%s\",\"reason\":\"\"}", gw);
    srv_answer(200, body);
    CHECK_RC(kms_auth_check(a, 0, &bi, &res), KMS_ERR_AUTH_RESPONSE);
    CHECK_DETAIL("gatewayAppId is 300 bytes");

    /* 510 'a' then U+00E9 (2 bytes at offsets 510..511): the 511-byte limit cuts inside it */
    snprintf(body, body_cap, "{\"isAllowed\":false,\"gatewayAppId\":\"\",\"reason\":\"");
    memset(body + strlen(body), 'a', 510);
    snprintf(body + 47 + 510, body_cap - 47 - 510, "\xc3\xa9 tail\"}");
    srv_answer(200, body);
    CHECK_OK(kms_auth_check(a, 0, &bi, &res));
    CHECK(res.allowed == 0 && strlen(res.reason) == 510 && res.reason[509] == 'a');

    memset(body, ' ', 1024 * 1024 + 8);
    snprintf(body + 1024 * 1024 + 8, body_cap - 1024 * 1024 - 8, "{\"isAllowed\":true}");
    srv_answer(200, body);
    CHECK_RC(kms_auth_check(a, 0, &bi, &res), KMS_ERR_AUTH_RESPONSE);
    CHECK_DETAIL("exceeds 1048576 bytes");
    CHECK(res.allowed == 0);
    free(body);
    kms_auth_free(a);
}

/* A server slower than the timeout: KMS_ERR_AUTH_TIMEOUT naming the budget, returned within
 * timeout + 1 s. */
static void test_webhook_timeout(void)
{
    struct kms_auth_result res;
    struct kms_auth_info info;
    struct kms_boot_info bi;
    struct kms_auth *a;
    char url[64];
    double t0;
    double dt;

    make_boot_info(&bi);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", srv.port);
    a = webhook_at(url, 400);
    srv_answer(200, "{\"isAllowed\":true,\"gatewayAppId\":\"\",\"reason\":\"\"}");
    srv.sleep_ms = 1500;
    t0 = now_s();
    CHECK_RC(kms_auth_check(a, 0, &bi, &res), KMS_ERR_AUTH_TIMEOUT);
    dt = now_s() - t0;
    CHECK(res.allowed == 0);
    CHECK_DETAIL("auth-api did not answer within 400 ms");
    CHECK(dt >= 0.35 && dt < 1.4);
    t0 = now_s();
    CHECK_RC(kms_auth_info(a, &info), KMS_ERR_AUTH_TIMEOUT);
    CHECK(now_s() - t0 < 1.4);
    kms_auth_free(a);
}

/* Nothing listening: KMS_ERR_AUTH_UNREACHABLE; credentials in the URL never reach the
 * detail. */
static void test_webhook_unreachable(void)
{
    struct kms_auth_result res;
    struct kms_auth_info info;
    struct kms_boot_info bi;
    struct kms_auth *a;
    uint16_t port = closed_port();
    char url[96];

    CHECK(port != 0);
    make_boot_info(&bi);
    snprintf(url, sizeof(url), "http://admin:s3cret@127.0.0.1:%u/", port);
    a = webhook_at(url, 2000);
    CHECK_RC(kms_auth_check(a, 0, &bi, &res), KMS_ERR_AUTH_UNREACHABLE);
    CHECK(res.allowed == 0);
    CHECK_DETAIL("cannot connect to the auth-api at http://***@127.0.0.1:");
    CHECK(strstr(kms_err_detail(), "s3cret") == NULL);
    CHECK_RC(kms_auth_info(a, &info), KMS_ERR_AUTH_UNREACHABLE);
    kms_auth_free(a);
}

/* The backend is shared by request threads: concurrent checks all get their answer. */
#define N_THREADS 4
#define N_CALLS 10

static void *thread_main(void *arg)
{
    struct kms_auth *a = arg;
    struct kms_auth_result res;
    struct kms_boot_info bi;
    intptr_t ok = 0;

    make_boot_info(&bi);
    for (int i = 0; i < N_CALLS; i++) {
        if (kms_auth_check(a, i & 1, &bi, &res) == 0 && res.allowed == 1 &&
            strcmp(res.gateway_app_id, "gw-t") == 0)
            ok++;
    }
    return (void *)ok;
}

static void test_webhook_threads(void)
{
    pthread_t th[N_THREADS];
    struct kms_auth *a = webhook();
    intptr_t total = 0;

    srv_answer(200, "{\"isAllowed\":true,\"gatewayAppId\":\"gw-t\",\"reason\":\"\"}");
    for (int i = 0; i < N_THREADS; i++)
        CHECK(pthread_create(&th[i], NULL, thread_main, a) == 0);
    for (int i = 0; i < N_THREADS; i++) {
        void *r = NULL;

        pthread_join(th[i], &r);
        total += (intptr_t)r;
    }
    CHECK(total == N_THREADS * N_CALLS);
    CHECK(srv.hits == N_THREADS * N_CALLS);
    kms_auth_free(a);
}

/* ---------------------------------------------------------------- webhook: GET / */

/* GET <url>/ parses the five required fields (extra fields such as appAuthImplementation are
 * ignored). */
static void test_webhook_info(void)
{
    struct kms_auth_info info;
    struct kms_auth *a = webhook();

    srv_answer(
        200,
        "{\"status\":\"ok\",\"kmsContractAddr\":\"0x5FbDB2315678afecb367f032d93F642f64180aa3\","
        "\"gatewayAppId\":\"gw-9\",\"chainId\":31337,\"appAuthImplementation\":\"0x01\","
        "\"appImplementation\":\"0x02\"}");
    CHECK_OK(kms_auth_info(a, &info));
    CHECK(strcmp(srv.method, "GET") == 0 && strcmp(srv.path, "/") == 0);
    CHECK(info.is_dev == 0);
    CHECK(info.status != NULL && strcmp(info.status, "ok") == 0);
    CHECK(info.kms_contract_addr != NULL &&
          strcmp(info.kms_contract_addr, "0x5FbDB2315678afecb367f032d93F642f64180aa3") == 0);
    CHECK(info.gateway_app_id != NULL && strcmp(info.gateway_app_id, "gw-9") == 0);
    CHECK(info.chain_id == 31337);
    CHECK(info.app_implementation != NULL && strcmp(info.app_implementation, "0x02") == 0);
    CHECK(info.eth_rpc_url == NULL); /* optional, absent here */
    kms_auth_info_clear(&info);
    CHECK(info.status == NULL);
    /* A second GetMeta within KMS_AUTH_INFO_TTL_MS is answered from the short cache: no new
     * outbound request, same values. */
    {
        int before = srv.hits;

        CHECK_OK(kms_auth_info(a, &info));
        CHECK(srv.hits == before);
        CHECK(info.gateway_app_id != NULL && strcmp(info.gateway_app_id, "gw-9") == 0);
        CHECK(info.chain_id == 31337);
        kms_auth_info_clear(&info);
    }
    kms_auth_free(a);
}

/* GET /'s optional ethRpcUrl: kept when a string, absent when null; any other type refused. */
static void test_webhook_info_rpc_url(void)
{
    static const char base[] = "{\"status\":\"ok\",\"kmsContractAddr\":\"0xk\",\"gatewayAppId\":"
                               "\"g\",\"chainId\":1,\"appImplementation\":\"0xa\",\"ethRpcUrl\":";
    struct kms_auth_info info;
    char body[512];

    snprintf(body, sizeof(body), "%s\"https://rpc.example/v2/K\"}", base);
    srv_answer(200, body);
    {
        struct kms_auth *a = webhook();

        CHECK_OK(kms_auth_info(a, &info));
        CHECK(info.eth_rpc_url != NULL &&
              strcmp(info.eth_rpc_url, "https://rpc.example/v2/K") == 0);
        kms_auth_info_clear(&info);
        CHECK(info.eth_rpc_url == NULL);
        /* the cached copy carries it too */
        CHECK_OK(kms_auth_info(a, &info));
        CHECK(info.eth_rpc_url != NULL &&
              strcmp(info.eth_rpc_url, "https://rpc.example/v2/K") == 0);
        kms_auth_info_clear(&info);
        kms_auth_free(a);
    }
    snprintf(body, sizeof(body), "%snull}", base);
    srv_answer(200, body);
    {
        struct kms_auth *a = webhook();

        CHECK_OK(kms_auth_info(a, &info));
        CHECK(info.eth_rpc_url == NULL && info.status != NULL);
        kms_auth_info_clear(&info);
        kms_auth_free(a);
    }
    snprintf(body, sizeof(body), "%s7}", base);
    srv_answer(200, body);
    {
        struct kms_auth *a = webhook();

        CHECK_RC(kms_auth_info(a, &info), KMS_ERR_AUTH_RESPONSE);
        CHECK_DETAIL("response field ethRpcUrl is not a string");
        CHECK(info.status == NULL && info.eth_rpc_url == NULL);
        kms_auth_free(a);
    }
}

/* GET /: each required field removed or mistyped in turn gives KMS_ERR_AUTH_RESPONSE naming
 * it, with nothing left allocated; a non-2xx is KMS_ERR_AUTH_HTTP. */
static void test_webhook_info_invalid(void)
{
    static const char *fields[] = {"\"status\":\"ok\"", "\"kmsContractAddr\":\"0xk\"",
                                   "\"gatewayAppId\":\"g\"", "\"chainId\":1",
                                   "\"appImplementation\":\"0xa\""};
    static const char *names[] = {"status", "kmsContractAddr", "gatewayAppId", "chainId",
                                  "appImplementation"};
    static const struct {
        const char *chain;
        const char *detail;
    } bad_chain[] = {
        {"\"1\"", "chainId is not a non-negative integer"},
        {"-1", "chainId is not a non-negative integer"},
        {"1.5", "chainId is not a non-negative integer"},
        {"null", "chainId is not a non-negative integer"},
    };
    struct kms_auth_info info;
    struct kms_auth *a = webhook();
    char body[512];

    for (size_t skip = 0; skip < 5; skip++) {
        size_t off = 0;
        char want[64];

        off += (size_t)snprintf(body + off, sizeof(body) - off, "{");
        for (size_t i = 0; i < 5; i++) {
            if (i == skip)
                continue;
            off += (size_t)snprintf(body + off, sizeof(body) - off, "%s%s", off > 1 ? "," : "",
                                    fields[i]);
        }
        snprintf(body + off, sizeof(body) - off, "}");
        srv_answer(200, body);
        CHECK_RC(kms_auth_info(a, &info), KMS_ERR_AUTH_RESPONSE);
        snprintf(want, sizeof(want), "lacks required field %s", names[skip]);
        CHECK_DETAIL(want);
        CHECK(info.status == NULL && info.kms_contract_addr == NULL &&
              info.gateway_app_id == NULL && info.app_implementation == NULL);
    }
    for (size_t i = 0; i < sizeof(bad_chain) / sizeof(bad_chain[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"status\":\"ok\",\"kmsContractAddr\":\"0xk\",\"gatewayAppId\":\"g\","
                 "\"chainId\":%s,\"appImplementation\":\"0xa\"}",
                 bad_chain[i].chain);
        srv_answer(200, body);
        CHECK_RC(kms_auth_info(a, &info), KMS_ERR_AUTH_RESPONSE);
        CHECK_DETAIL(bad_chain[i].detail);
    }
    srv_answer(200, "{\"status\":7,\"kmsContractAddr\":\"0xk\",\"gatewayAppId\":\"g\","
                    "\"chainId\":1,\"appImplementation\":\"0xa\"}");
    CHECK_RC(kms_auth_info(a, &info), KMS_ERR_AUTH_RESPONSE);
    CHECK_DETAIL("status is not a string");
    srv_answer(500, "nope");
    CHECK_RC(kms_auth_info(a, &info), KMS_ERR_AUTH_HTTP);
    CHECK_DETAIL("HTTP 500: nope");
    kms_auth_free(a);
}

int main(void)
{
    /* The library leaves curl_global_init to the process (it is not thread-safe). */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || srv_start() != 0) {
        fprintf(stderr, "setup failed\n");
        return 1;
    }
    RUN(test_boot_info_json_exact);
    RUN(test_boot_info_json_modes);
    RUN(test_boot_info_json_invalid);
    RUN(test_config_invalid);
    RUN(test_eth_dispatch);
    RUN(test_dev);
    RUN(test_dispatch_fail_closed);
    RUN(test_webhook_allow);
    RUN(test_webhook_url_join);
    RUN(test_webhook_deny);
    RUN(test_webhook_http_error);
    RUN(test_webhook_bad_response);
    RUN(test_webhook_limits);
    RUN(test_webhook_unreachable);
    RUN(test_webhook_threads);
    RUN(test_webhook_info);
    RUN(test_webhook_info_rpc_url);
    RUN(test_webhook_info_invalid);
    RUN(test_webhook_timeout);
    MHD_stop_daemon(srv.d);
    free(srv.body);
    free(srv.req_body);
    curl_global_cleanup();
    TEST_MAIN_END();
}
