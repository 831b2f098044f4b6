/*
 * eth backend against tiny in-process fake JSON-RPC nodes (no chain needed): every RPC failure
 * (down, slow, malformed JSON, HTTP error, wrong chain id, JSON-RPC error) fails closed with its
 * own code and a message naming the RPC; failover moves past a dead RPC; quorum refuses
 * disagreeing RPCs; the decision cache keeps allows only; a stalled RPC does not hold up checks
 * through other handles; config validation.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "chain/eth.h"
#include "common/hex.h"
#include "test.h"

#define CONTRACT "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"

enum mode { M_GOOD, M_STALL, M_GARBAGE, M_HTTP500, M_RPCERR, M_REVERT, M_EMPTY, M_FLAKY, M_HUGE };

struct fake {
    int fd;
    int port;
    pthread_t th;
    int stop;
    enum mode mode;
    int allowed;
    const char *reason;
    const char *gateway;
    uint64_t chain_id;
    uint64_t block;
    int stall_ms;
    int requests;
    int calls;           /* eth_call count */
    char last_block[32]; /* block parameter of the last eth_call */
    int ahead;           /* eth_blockNumber says block+ahead; eth_call above block is refused */
    int no_code;         /* eth_call returns "0x" (no contract code at that block) */
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

        if (k <= 0)
            return;
        p += k;
        n -= (size_t)k;
    }
}

static void reply(int fd, int status, const char *body)
{
    char hdr[256];

    snprintf(hdr, sizeof(hdr),
             "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n",
             status, strlen(body));
    send_all(fd, hdr, strlen(hdr));
    send_all(fd, body, strlen(body));
}

/* ABI-encoded return values the fake node gives. */
static char *abi_hex_bool_string(int flag, const char *s)
{
    uint8_t w[32];
    struct kms_buf b = {0};
    char *hex;
    struct kms_eth_abi_arg a[2];

    kms_eth_word_u64((uint64_t)flag, w);
    a[0].kind = KMS_ABI_WORD;
    a[0].p = w;
    a[0].n = 32;
    a[1].kind = KMS_ABI_BYTES;
    a[1].p = (const uint8_t *)s;
    a[1].n = strlen(s);
    if (kms_eth_abi_encode(NULL, flag >= 0 ? a : a + 1, flag >= 0 ? 2 : 1, &b) < 0)
        return NULL;
    hex = kms_hex_dup(b.data, b.len, 1);
    kms_buf_free(&b);
    return hex;
}

static void serve_one(struct fake *f, int cfd)
{
    char buf[65536];
    size_t len = 0;
    char *body, *result = NULL, out[70000];
    json_t *req = NULL;
    const char *method;
    long clen = -1;

    /* read headers and body */
    for (;;) {
        struct pollfd p = {cfd, POLLIN, 0};
        ssize_t k;
        char *hend;

        if (poll(&p, 1, 2000) <= 0)
            goto done;
        k = recv(cfd, buf + len, sizeof(buf) - 1 - len, 0);
        if (k <= 0)
            goto done;
        len += (size_t)k;
        buf[len] = '\0';
        hend = strstr(buf, "\r\n\r\n");
        if (hend != NULL) {
            char *cl = strcasestr(buf, "Content-Length:");

            clen = cl != NULL ? strtol(cl + 15, NULL, 10) : 0;
            if ((long)(len - (size_t)(hend + 4 - buf)) >= clen)
                break;
        }
    }
    __atomic_add_fetch(&f->requests, 1, __ATOMIC_SEQ_CST);
    body = strstr(buf, "\r\n\r\n") + 4;
    switch (f->mode) {
    case M_STALL:
        for (int64_t end = now_ms() + f->stall_ms; now_ms() < end && !f->stop;)
            usleep(20000);
        goto done;
    case M_GARBAGE:
        reply(cfd, 200, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":");
        goto done;
    case M_HTTP500:
        reply(cfd, 500, "oops");
        goto done;
    case M_FLAKY: /* every other request fails with 503 */
        if (f->requests % 2 == 1) {
            reply(cfd, 503, "busy");
            goto done;
        }
        break;
    case M_HUGE: { /* 5 MiB of JSON whitespace then a valid reply */
        static char pad[65536];
        const char *tail = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"0x1\"}";
        size_t total = 80u * sizeof(pad) + strlen(tail);
        char hdr[160];

        memset(pad, ' ', sizeof(pad));
        snprintf(hdr, sizeof(hdr), "HTTP/1.1 200 X\r\nContent-Length: %zu\r\n\r\n", total);
        send_all(cfd, hdr, strlen(hdr));
        for (int i = 0; i < 80; i++)
            send_all(cfd, pad, sizeof(pad));
        send_all(cfd, tail, strlen(tail));
        goto done;
    }
    default:
        break;
    }
    req = json_loads(body, 0, NULL);
    method = json_string_value(json_object_get(req, "method"));
    if (method == NULL) {
        reply(cfd, 400, "{}");
        goto done;
    }
    if (strcmp(method, "eth_chainId") == 0) {
        snprintf(out, sizeof(out), "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"0x%llx\"}",
                 (unsigned long long)f->chain_id);
    } else if (strcmp(method, "eth_blockNumber") == 0) {
        snprintf(out, sizeof(out), "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"0x%llx\"}",
                 (unsigned long long)(f->block + (uint64_t)f->ahead));
    } else if (strcmp(method, "eth_getBlockByNumber") == 0) {
        snprintf(out, sizeof(out),
                 "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"number\":\"0x%llx\"}}",
                 (unsigned long long)(f->block - 2));
    } else if (strcmp(method, "eth_call") == 0) {
        const char *data = json_string_value(
            json_object_get(json_array_get(json_object_get(req, "params"), 0), "data"));
        int is_gw = data != NULL && strncmp(data, "0x95f51931", 10) == 0;

        __atomic_add_fetch(&f->calls, 1, __ATOMIC_SEQ_CST);
        snprintf(f->last_block, sizeof(f->last_block), "%s",
                 json_string_value(json_array_get(json_object_get(req, "params"), 1)) != NULL
                     ? json_string_value(json_array_get(json_object_get(req, "params"), 1))
                     : "?");
        if (f->ahead > 0 && strtoull(f->last_block, NULL, 16) > f->block) {
            snprintf(out, sizeof(out),
                     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32000,"
                     "\"message\":\"BlockOutOfRangeError: block height is %llu but requested "
                     "was %llu\"}}",
                     (unsigned long long)f->block, strtoull(f->last_block, NULL, 16));
        } else if (f->no_code) {
            snprintf(out, sizeof(out), "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"0x\"}");
        } else if (f->mode == M_RPCERR) {
            snprintf(out, sizeof(out),
                     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32000,"
                     "\"message\":\"header not found\"}}");
        } else if (f->mode == M_REVERT && !is_gw) {
            char *h = abi_hex_bool_string(-1, "boom");

            snprintf(out, sizeof(out),
                     "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":3,\"message\":"
                     "\"execution reverted\",\"data\":\"0x08c379a0%s\"}}",
                     h != NULL ? h + 2 : "");
            free(h);
        } else if (f->mode == M_EMPTY) {
            reply(cfd, 200, "");
            goto done;
        } else {
            result = is_gw ? abi_hex_bool_string(-1, f->gateway)
                           : abi_hex_bool_string(f->allowed, f->reason);
            snprintf(out, sizeof(out), "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"%s\"}",
                     result != NULL ? result : "0x");
        }
    } else {
        snprintf(out, sizeof(out),
                 "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32601,"
                 "\"message\":\"method not found\"}}");
    }
    reply(cfd, 200, out);
done:
    free(result);
    json_decref(req);
    close(cfd);
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;

    while (!__atomic_load_n(&f->stop, __ATOMIC_SEQ_CST)) {
        struct pollfd p = {f->fd, POLLIN, 0};
        int cfd;

        if (poll(&p, 1, 50) <= 0)
            continue;
        cfd = accept(f->fd, NULL, NULL);
        if (cfd >= 0)
            serve_one(f, cfd);
    }
    return NULL;
}

static void fake_start(struct fake *f, enum mode m)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);

    memset(f, 0, sizeof(*f));
    f->mode = m;
    f->allowed = 1;
    f->reason = "";
    f->gateway = "gw-test";
    f->chain_id = 31337;
    f->block = 100;
    f->stall_ms = 3000;
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(f->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(listen(f->fd, 16) == 0);
    CHECK(getsockname(f->fd, (struct sockaddr *)&sa, &sl) == 0);
    f->port = ntohs(sa.sin_port);
    CHECK(pthread_create(&f->th, NULL, fake_main, f) == 0);
}

static void fake_stop(struct fake *f)
{
    __atomic_store_n(&f->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(f->th, NULL);
    close(f->fd);
}

static void url_of(const struct fake *f, char *buf, size_t n)
{
    snprintf(buf, n, "http://127.0.0.1:%d/v3/SECRET-API-KEY", f->port);
}

/* A port with nothing listening: bind, read the port, close. */
static int dead_port(void)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    (void)bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    (void)getsockname(fd, (struct sockaddr *)&sa, &sl);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static struct kms_boot_info g_bi;
static uint8_t g_app[20] = {0xaa, 0xbb};

static void bi_init(void)
{
    memset(&g_bi, 0, sizeof(g_bi));
    g_bi.app_id.p = g_app;
    g_bi.app_id.len = 20;
    snprintf(g_bi.tcb_status, sizeof(g_bi.tcb_status), "UpToDate");
}

static struct kms_auth *make(const char **urls, size_t n, const char *policy, unsigned k,
                             uint64_t chain_id, long timeout_ms, long ttl)
{
    struct kms_auth_cfg cfg;
    struct kms_auth *a = NULL;

    memset(&cfg, 0, sizeof(cfg));
    cfg.type = "eth";
    cfg.eth_rpc_urls = urls;
    cfg.eth_n_rpc_urls = n;
    cfg.eth_policy = policy;
    cfg.eth_quorum_k = k;
    cfg.eth_contract = CONTRACT;
    cfg.eth_chain_id = chain_id;
    cfg.timeout_ms = timeout_ms;
    cfg.eth_cache_ttl_ms = ttl;
    cfg.eth_retries = -1;
    CHECK_OK(kms_auth_new(&cfg, &a));
    return a;
}

/* A healthy node's answer comes through with reason and gateway id; GetMeta info too. */
static void test_good_and_info(void)
{
    struct fake f;
    char u[128];
    const char *urls[1] = {u};
    struct kms_auth_result r;
    struct kms_auth_info info;
    struct kms_auth *a;

    fake_start(&f, M_GOOD);
    url_of(&f, u, sizeof(u));
    f.allowed = 0;
    f.reason = "App not registered";
    a = make(urls, 1, NULL, 0, 31337, 2000, -1);
    CHECK_OK(kms_auth_check(a, 0, &g_bi, &r));
    CHECK(r.allowed == 0 && strcmp(r.reason, "App not registered") == 0);
    CHECK(strcmp(r.gateway_app_id, "gw-test") == 0);
    CHECK_OK(kms_auth_info(a, &info));
    CHECK(info.is_dev == 0 && info.chain_id == 31337 && strcmp(info.status, "ok") == 0);
    CHECK(strcmp(info.kms_contract_addr, CONTRACT) == 0);
    CHECK(strcmp(info.gateway_app_id, "gw-test") == 0);
    kms_auth_info_clear(&info);
    kms_auth_free(a);
    fake_stop(&f);
}

/* RPC down: connection refused → KMS_ERR_AUTH_UNREACHABLE, the URL shown without its path. */
static void test_rpc_down(void)
{
    char u[128];
    const char *urls[1] = {u};
    struct kms_auth_result r;
    struct kms_auth *a;

    snprintf(u, sizeof(u), "http://127.0.0.1:%d/v3/SECRET-API-KEY", dead_port());
    a = make(urls, 1, NULL, 0, 0, 1000, -1);
    CHECK_RC(kms_auth_check(a, 1, &g_bi, &r), KMS_ERR_AUTH_UNREACHABLE);
    CHECK_DETAIL("unreachable");
    CHECK_DETAIL("http://127.0.0.1:");
    CHECK(strstr(kms_err_detail(), "SECRET") == NULL);
    CHECK(r.allowed == 0);
    kms_auth_free(a);
}

struct slow_arg {
    struct kms_auth *a;
    int rc;
    int64_t took;
};

static void *slow_thread(void *p)
{
    struct slow_arg *s = p;
    struct kms_auth_result r;
    int64_t t0 = now_ms();

    s->rc = kms_auth_check(s->a, 0, &g_bi, &r);
    s->took = now_ms() - t0;
    return NULL;
}

/* RPC slow: a stalled node times out with KMS_ERR_AUTH_TIMEOUT within the bound, and while it
 * stalls, a check through a healthy RPC completes promptly. */
static void test_rpc_slow(void)
{
    struct fake slow, good;
    char us[128], ug[128];
    const char *u1[1] = {us}, *u2[1] = {ug};
    struct slow_arg s;
    struct kms_auth_result r;
    struct kms_auth *b;
    pthread_t th;
    int64_t t0;

    fake_start(&slow, M_STALL);
    fake_start(&good, M_GOOD);
    url_of(&slow, us, sizeof(us));
    url_of(&good, ug, sizeof(ug));
    s.a = make(u1, 1, NULL, 0, 0, 700, -1);
    b = make(u2, 1, NULL, 0, 0, 700, -1);
    CHECK(pthread_create(&th, NULL, slow_thread, &s) == 0);
    usleep(100000);
    t0 = now_ms();
    CHECK_OK(kms_auth_check(b, 0, &g_bi, &r));
    CHECK(r.allowed == 1);
    CHECK(now_ms() - t0 < 500);
    pthread_join(th, NULL);
    CHECK(s.rc == KMS_ERR_AUTH_TIMEOUT);
    CHECK(s.took >= 600 && s.took < 2500);
    kms_auth_free(s.a);
    kms_auth_free(b);
    fake_stop(&slow);
    fake_stop(&good);
    /* the error detail lives in the other thread; check one directly */
    fake_start(&slow, M_STALL);
    url_of(&slow, us, sizeof(us));
    s.a = make(u1, 1, NULL, 0, 0, 300, -1);
    CHECK_RC(kms_auth_check(s.a, 0, &g_bi, &r), KMS_ERR_AUTH_TIMEOUT);
    CHECK_DETAIL("did not answer eth_blockNumber within 300 ms");
    kms_auth_free(s.a);
    fake_stop(&slow);
}

/* Malformed JSON → KMS_ERR_AUTH_RESPONSE; HTTP 500 → KMS_ERR_AUTH_HTTP; an error object →
 * KMS_ERR_ETH_RPC with the node's message. */
static void test_rpc_malformed_http_error(void)
{
    static const struct {
        enum mode m;
        int rc;
        const char *detail;
    } cases[] = {
        {M_GARBAGE, KMS_ERR_AUTH_RESPONSE, "malformed JSON"},
        {M_HTTP500, KMS_ERR_AUTH_HTTP, "HTTP status 500"},
        {M_RPCERR, KMS_ERR_ETH_RPC, "header not found"},
        {M_EMPTY, KMS_ERR_AUTH_RESPONSE, "malformed JSON"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fake f;
        char u[128];
        const char *urls[1] = {u};
        struct kms_auth_result r;
        struct kms_auth *a;

        fake_start(&f, cases[i].m);
        url_of(&f, u, sizeof(u));
        a = make(urls, 1, NULL, 0, 0, 1000, -1);
        CHECK_RC(kms_auth_check(a, 1, &g_bi, &r), cases[i].rc);
        CHECK_DETAIL(cases[i].detail);
        CHECK(r.allowed == 0);
        kms_auth_free(a);
        fake_stop(&f);
    }
}

/* Bounded retries: a node failing every other request with 503 is retried once and then
 * answers; with retries off the same failure surfaces as KMS_ERR_AUTH_HTTP. */
static void test_retries(void)
{
    struct fake f;
    char u[128];
    struct kms_eth_rpc_opts once = {1000, 0}, twice = {1000, 1};
    json_t *res = NULL;

    fake_start(&f, M_FLAKY);
    url_of(&f, u, sizeof(u));
    CHECK_OK(kms_eth_rpc(u, &twice, "eth_chainId", NULL, &res, NULL)); /* 503, then ok */
    CHECK(f.requests == 2);
    json_decref(res);
    res = NULL;
    CHECK_RC(kms_eth_rpc(u, &once, "eth_chainId", NULL, &res, NULL), KMS_ERR_AUTH_HTTP);
    CHECK_DETAIL("HTTP status 503");
    CHECK(f.requests == 3);
    fake_stop(&f);
}

/* A reply over the 4 MiB cap is refused, not buffered without bound. */
static void test_reply_cap(void)
{
    struct fake f;
    char u[128];
    struct kms_eth_rpc_opts o = {5000, 0};
    json_t *res = NULL;

    fake_start(&f, M_HUGE);
    url_of(&f, u, sizeof(u));
    CHECK_RC(kms_eth_rpc(u, &o, "eth_chainId", NULL, &res, NULL), KMS_ERR_AUTH_RESPONSE);
    CHECK_DETAIL("larger than 4194304 bytes");
    CHECK(res == NULL);
    fake_stop(&f);
}

/* A revert is a denial carrying the decoded reason (as auth-eth), not an allow or a crash. */
static void test_revert_is_denial(void)
{
    struct fake f;
    char u[128];
    const char *urls[1] = {u};
    struct kms_auth_result r;
    struct kms_auth *a;

    fake_start(&f, M_REVERT);
    url_of(&f, u, sizeof(u));
    a = make(urls, 1, NULL, 0, 0, 1000, 5000);
    CHECK_OK(kms_auth_check(a, 0, &g_bi, &r));
    CHECK(r.allowed == 0);
    CHECK(strstr(r.reason, "reverted") != NULL && strstr(r.reason, "boom") != NULL);
    kms_auth_free(a);
    fake_stop(&f);
}

/* Wrong chain id → KMS_ERR_ETH_CHAIN_ID naming both ids; with failover, a correct second RPC
 * is used instead. */
static void test_wrong_chain_id(void)
{
    struct fake f, g;
    char u[128], v[128];
    const char *one[1] = {u}, *two[2] = {u, v};
    struct kms_auth_result r;
    struct kms_auth *a;

    fake_start(&f, M_GOOD);
    fake_start(&g, M_GOOD);
    f.chain_id = 1;
    url_of(&f, u, sizeof(u));
    url_of(&g, v, sizeof(v));
    a = make(one, 1, NULL, 0, 84532, 1000, -1);
    CHECK_RC(kms_auth_check(a, 0, &g_bi, &r), KMS_ERR_ETH_CHAIN_ID);
    CHECK_DETAIL("serves chain id 1, but chain id 84532 is configured");
    CHECK(f.calls == 0); /* nothing asked of a node on the wrong chain */
    kms_auth_free(a);
    a = make(two, 2, "failover", 0, 31337, 1000, -1);
    g.allowed = 0;
    g.reason = "from the second";
    f.chain_id = 1;
    CHECK_OK(kms_auth_check(a, 0, &g_bi, &r));
    CHECK(r.allowed == 0 && strcmp(r.reason, "from the second") == 0);
    kms_auth_free(a);
    fake_stop(&f);
    fake_stop(&g);
}

/* Failover: a dead first RPC is skipped; all dead → error listing each RPC. */
static void test_failover(void)
{
    struct fake g;
    char d[128], v[128], d2[128];
    const char *two[2] = {d, v}, *dead[2] = {d, d2};
    struct kms_auth_result r;
    struct kms_auth *a;

    fake_start(&g, M_GOOD);
    snprintf(d, sizeof(d), "http://127.0.0.1:%d", dead_port());
    snprintf(d2, sizeof(d2), "http://127.0.0.1:%d", dead_port());
    url_of(&g, v, sizeof(v));
    a = make(two, 2, "failover", 0, 0, 1000, -1);
    CHECK_OK(kms_auth_check(a, 0, &g_bi, &r));
    CHECK(r.allowed == 1);
    kms_auth_free(a);
    a = make(dead, 2, "failover", 0, 0, 1000, -1);
    CHECK_RC(kms_auth_check(a, 0, &g_bi, &r), KMS_ERR_AUTH_UNREACHABLE);
    CHECK_DETAIL("all 2 Ethereum RPCs failed");
    CHECK_DETAIL(d + 7);
    CHECK_DETAIL(d2 + 7);
    kms_auth_free(a);
    fake_stop(&g);
}

/* Quorum: 2 of 3 agreeing wins even if the third differs; 1-1-1 fails closed naming RPCs;
 * fewer reachable than k fails closed. The block is pinned to the k-th highest number. */
static void test_quorum(void)
{
    struct fake f[3];
    char u[3][128], d[128];
    const char *urls[3] = {u[0], u[1], u[2]}, *withdead[3] = {u[0], u[1], d};
    struct kms_auth_result r;
    struct kms_auth *a;

    for (int i = 0; i < 3; i++) {
        fake_start(&f[i], M_GOOD);
        url_of(&f[i], u[i], sizeof(u[i]));
        f[i].block = 100 + (uint64_t)i;
    }
    f[2].allowed = 0;
    f[2].reason = "lagging node says no";
    a = make(urls, 3, "quorum", 2, 0, 1000, -1);
    CHECK_OK(kms_auth_check(a, 0, &g_bi, &r));
    CHECK(r.allowed == 1);
    for (int i = 0; i < 3; i++)
        CHECK(strcmp(f[i].last_block, "0x65") == 0); /* 2nd highest of 100,101,102 */
    f[1].allowed = 0;
    f[1].reason = "different";
    CHECK_RC(kms_auth_check(a, 0, &g_bi, &r), KMS_ERR_ETH_QUORUM);
    CHECK_DETAIL("disagree at block 101");
    CHECK_DETAIL("failing closed");
    CHECK_DETAIL("denied: different");
    {
        char hp[64];

        for (int i = 0; i < 3; i++) {
            snprintf(hp, sizeof(hp), "http://127.0.0.1:%d: ", f[i].port);
            CHECK_DETAIL(hp); /* each RPC named, without its secret path */
        }
        CHECK(strstr(kms_err_detail(), "SECRET") == NULL);
    }
    CHECK(r.allowed == 0);
    kms_auth_free(a);

    snprintf(d, sizeof(d), "http://127.0.0.1:%d", dead_port());
    a = make(withdead, 3, "quorum", 3, 0, 1000, -1);
    CHECK_RC(kms_auth_check(a, 0, &g_bi, &r), KMS_ERR_ETH_QUORUM);
    CHECK_DETAIL("2 of 3 RPCs answered, 3 needed");
    kms_auth_free(a);
    for (int i = 0; i < 3; i++)
        fake_stop(&f[i]);
}

/* Cache: an allow is served from the cache within the TTL (no RPC), a denial never is, and
 * after the TTL the chain is asked again. */
static void test_cache(void)
{
    struct fake f;
    char u[128];
    const char *urls[1] = {u};
    struct kms_auth_result r;
    struct kms_auth *a;
    int before;

    fake_start(&f, M_GOOD);
    url_of(&f, u, sizeof(u));
    a = make(urls, 1, NULL, 0, 0, 1000, 400);
    CHECK_OK(kms_auth_check(a, 0, &g_bi, &r));
    CHECK(r.allowed == 1);
    before = f.requests;
    CHECK_OK(kms_auth_check(a, 0, &g_bi, &r));
    CHECK(r.allowed == 1 && f.requests == before);
    /* the same boot info asked as KMS is a different decision */
    CHECK_OK(kms_auth_check(a, 1, &g_bi, &r));
    CHECK(f.requests > before);
    usleep(500000);
    f.allowed = 0;
    f.reason = "revoked";
    CHECK_OK(kms_auth_check(a, 0, &g_bi, &r));
    CHECK(r.allowed == 0 && strcmp(r.reason, "revoked") == 0);
    before = f.requests;
    CHECK_OK(kms_auth_check(a, 0, &g_bi, &r));
    CHECK(r.allowed == 0 && f.requests > before); /* denials are not cached */
    kms_auth_free(a);
    fake_stop(&f);
}

/* An over-length field is a denial with a clear reason, with no RPC made. */
static void test_overlength_denied(void)
{
    struct fake f;
    char u[128];
    const char *urls[1] = {u};
    struct kms_auth_result r;
    struct kms_auth *a;
    uint8_t big[33] = {1};
    struct kms_boot_info bi = g_bi;

    fake_start(&f, M_GOOD);
    url_of(&f, u, sizeof(u));
    a = make(urls, 1, NULL, 0, 0, 1000, -1);
    bi.compose_hash.p = big;
    bi.compose_hash.len = sizeof(big);
    CHECK_OK(kms_auth_check(a, 0, &bi, &r));
    CHECK(r.allowed == 0 && strstr(r.reason, "composeHash is 33 bytes") != NULL);
    CHECK(f.requests == 0);
    kms_auth_free(a);
    fake_stop(&f);
}

/* Config errors are refused at construction with KMS_ERR_INVAL and a precise message. */
static void test_config(void)
{
    const char *good[1] = {"http://127.0.0.1:1"}, *ftp[1] = {"ftp://x"};
    struct kms_auth_cfg cfg;
    struct kms_auth *a = NULL;

    memset(&cfg, 0, sizeof(cfg));
    cfg.type = "eth";
    cfg.eth_contract = CONTRACT;
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("no RPC URL configured");
    cfg.eth_rpc_urls = ftp;
    cfg.eth_n_rpc_urls = 1;
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("must start with http");
    cfg.eth_rpc_urls = good;
    cfg.eth_contract = "0x1234";
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("contract address");
    cfg.eth_contract = CONTRACT;
    cfg.eth_policy = "majority";
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("unknown RPC policy");
    cfg.eth_policy = "quorum";
    cfg.eth_quorum_k = 2;
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("quorum of 2 needs at least");
    cfg.eth_quorum_k = 0;
    cfg.eth_block_tag = "pending";
    CHECK_RC(kms_auth_new(&cfg, &a), KMS_ERR_INVAL);
    CHECK_DETAIL("unknown block tag");
    cfg.eth_block_tag = "finalized";
    CHECK_OK(kms_auth_new(&cfg, &a));
    CHECK(a != NULL && !kms_auth_is_dev(a));
    kms_auth_free(a);
}

/* safe/finalized resolve through eth_getBlockByNumber and the call is pinned there. */
static void test_block_tag(void)
{
    struct fake f;
    char u[128];
    const char *urls[1] = {u};
    struct kms_auth_cfg cfg;
    struct kms_auth_result r;
    struct kms_auth *a = NULL;
    struct kms_eth_rpc_opts o = {1000, 0};
    uint64_t num = 0;

    fake_start(&f, M_GOOD);
    url_of(&f, u, sizeof(u));
    CHECK_OK(kms_eth_block_number(u, &o, "finalized", &num));
    CHECK(num == 98);
    memset(&cfg, 0, sizeof(cfg));
    cfg.type = "eth";
    cfg.eth_rpc_urls = urls;
    cfg.eth_n_rpc_urls = 1;
    cfg.eth_contract = CONTRACT;
    cfg.eth_block_tag = "safe";
    cfg.eth_cache_ttl_ms = -1;
    CHECK_OK(kms_auth_new(&cfg, &a));
    CHECK_OK(kms_auth_check(a, 0, &g_bi, &r));
    CHECK(r.allowed == 1);
    CHECK(strcmp(f.last_block, "0x62") == 0); /* pinned to the safe block's number */
    kms_auth_free(a);
    fake_stop(&f);
}

/* A load-balanced RPC whose eth_blockNumber backend is ahead: the read steps back, no refusal. */
static void test_lagging_backend(void)
{
    struct fake f, g;
    char u[128], v[128];
    const char *urls[2] = {u, v};
    struct kms_auth_result r;
    struct kms_auth *a;

    fake_start(&f, M_GOOD);
    fake_start(&g, M_GOOD);
    f.ahead = 1;
    url_of(&f, u, sizeof(u));
    url_of(&g, v, sizeof(v));
    a = make(urls, 1, "failover", 0, 0, 2000, -1);
    CHECK_OK(kms_auth_check(a, 0, &g_bi, &r));
    CHECK(r.allowed == 1);
    CHECK(strcmp(f.last_block, "0x64") == 0);
    kms_auth_free(a);
    f.ahead = 3; /* too far behind: bounded, refused with the backend's words */
    a = make(urls, 1, "failover", 0, 0, 2000, -1);
    CHECK_RC(kms_auth_check(a, 0, &g_bi, &r), KMS_ERR_ETH_RPC);
    CHECK_DETAIL("BlockOutOfRangeError");
    kms_auth_free(a);
    /* quorum: both RPCs are asked at the same block, stepped back together */
    f.ahead = 1;
    g.ahead = 1;
    g.block = 101; /* g has 101, f only 100; the pin (101) moves to 100 for both */
    a = make(urls, 2, "quorum", 2, 0, 2000, -1);
    CHECK_OK(kms_auth_check(a, 0, &g_bi, &r));
    CHECK(r.allowed == 1);
    CHECK(strcmp(f.last_block, "0x64") == 0);
    CHECK(strcmp(g.last_block, "0x64") == 0);
    kms_auth_free(a);
    fake_stop(&f);
    fake_stop(&g);
}

/* quorum reached at the pin although one RPC lacks it: no step back, the pin is kept. */
static void test_lagging_quorum_kept(void)
{
    struct fake f, g, h;
    char u[128], v[128], w[128];
    const char *urls[3] = {u, v, w};
    struct kms_auth_result r;
    struct kms_auth *a;

    fake_start(&f, M_GOOD);
    fake_start(&g, M_GOOD);
    fake_start(&h, M_GOOD);
    h.block = 99; /* says 100 (ahead 1), has only 99: lacks the pin */
    h.ahead = 1;
    url_of(&f, u, sizeof(u));
    url_of(&g, v, sizeof(v));
    url_of(&h, w, sizeof(w));
    a = make(urls, 3, "quorum", 2, 0, 2000, -1);
    CHECK_OK(kms_auth_check(a, 0, &g_bi, &r));
    CHECK(r.allowed == 1);
    CHECK(strcmp(f.last_block, "0x64") == 0);
    CHECK(strcmp(g.last_block, "0x64") == 0);
    CHECK(strcmp(h.last_block, "0x64") == 0);
    kms_auth_free(a);
    fake_stop(&f);
    fake_stop(&g);
    fake_stop(&h);
}

/* finalized read of a contract with no code yet: a clear error, not an ABI decoding one. */
static void test_no_code_finalized(void)
{
    struct fake f;
    char u[128];
    const char *urls[1] = {u};
    struct kms_auth_cfg cfg;
    struct kms_auth_result r;
    struct kms_auth *a = NULL;

    fake_start(&f, M_GOOD);
    f.no_code = 1;
    url_of(&f, u, sizeof(u));
    memset(&cfg, 0, sizeof(cfg));
    cfg.type = "eth";
    cfg.eth_rpc_urls = urls;
    cfg.eth_n_rpc_urls = 1;
    cfg.eth_contract = CONTRACT;
    cfg.eth_block_tag = "finalized";
    cfg.eth_cache_ttl_ms = -1;
    CHECK_OK(kms_auth_new(&cfg, &a));
    CHECK_RC(kms_auth_check(a, 0, &g_bi, &r), KMS_ERR_AUTH_RESPONSE);
    CHECK(strcmp(kms_err_detail(),
                 "contract " CONTRACT " has no code at the finalized block (not yet "
                 "finalized? use --eth-block latest)") == 0);
    kms_auth_free(a);
    fake_stop(&f);
}

int main(void)
{
    bi_init();
    RUN(test_good_and_info);
    RUN(test_rpc_down);
    RUN(test_rpc_slow);
    RUN(test_rpc_malformed_http_error);
    RUN(test_retries);
    RUN(test_reply_cap);
    RUN(test_revert_is_denial);
    RUN(test_wrong_chain_id);
    RUN(test_failover);
    RUN(test_quorum);
    RUN(test_cache);
    RUN(test_overlength_denied);
    RUN(test_config);
    RUN(test_block_tag);
    RUN(test_lagging_backend);
    RUN(test_lagging_quorum_kept);
    RUN(test_no_code_finalized);
    TEST_MAIN_END();
}
