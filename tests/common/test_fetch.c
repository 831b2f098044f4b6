/*
 * common/fetch: the one HTTP helper, against a scripted HTTP/1.1 listener on 127.0.0.1 run by
 * this test (one thread, one connection at a time). Proves the body cap (at the limit, over it
 * with and without Content-Length), the total timeout (no answer, a stalled body), connection
 * errors, no redirects, http/https only, POST bodies and headers, and the setup/done hooks.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/fetch.h"
#include "test.h"

#define LIMIT 1000u

enum mode { M_OK, M_EXACT, M_BIG_LENGTH, M_BIG_CHUNKED, M_HANG, M_STALL, M_REDIRECT, M_404 };

static struct {
    int lfd;
    int stop[2]; /* pipe: a byte ends the server thread */
    int port;
    pthread_t thread;
    pthread_mutex_t mu;
    enum mode mode;  /* under mu */
    char req[8192];  /* the last request, headers and body (under mu) */
    size_t req_len;  /* under mu */
    unsigned n_reqs; /* under mu */
} g_srv;

static void set_mode(enum mode m)
{
    pthread_mutex_lock(&g_srv.mu);
    g_srv.mode = m;
    pthread_mutex_unlock(&g_srv.mu);
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);

        if (w <= 0)
            return; /* the client gave up (over-limit answers): fine */
        c += w;
        n -= (size_t)w;
    }
}

/* Waits until the client closes fd (or the test ends): models a server that never answers. */
static void wait_close(int fd)
{
    struct pollfd p[2] = {{fd, POLLIN, 0}, {g_srv.stop[0], POLLIN, 0}};
    char b[256];

    for (;;) {
        if (poll(p, 2, -1) < 0)
            return;
        if (p[1].revents != 0)
            return;
        if (p[0].revents != 0 && recv(fd, b, sizeof(b), 0) <= 0)
            return;
    }
}

/* Reads one request (headers and a Content-Length body) into g_srv.req. */
static void read_request(int fd)
{
    char buf[8192];
    size_t len = 0;
    size_t want = 0;
    char *end = NULL;

    while (len < sizeof(buf) - 1) {
        ssize_t r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);

        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = '\0';
        if (end == NULL) {
            end = strstr(buf, "\r\n\r\n");
            if (end != NULL) {
                const char *cl = strstr(buf, "Content-Length: ");

                want = (size_t)(end + 4 - buf) + (cl != NULL ? strtoul(cl + 16, NULL, 10) : 0);
            }
        }
        if (end != NULL && len >= want)
            break;
    }
    pthread_mutex_lock(&g_srv.mu);
    memcpy(g_srv.req, buf, len);
    g_srv.req_len = len;
    g_srv.n_reqs++;
    pthread_mutex_unlock(&g_srv.mu);
}

static void answer(int fd, enum mode m)
{
    char head[256];
    char body[LIMIT + 1];

    memset(body, 'x', sizeof(body));
    switch (m) {
    case M_OK:
        send_all(fd,
                 "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                 "Connection: close\r\n\r\nhello",
                 strlen("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                        "Connection: close\r\n\r\nhello"));
        break;
    case M_404:
        snprintf(head, sizeof(head),
                 "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope");
        send_all(fd, head, strlen(head));
        break;
    case M_EXACT:
    case M_BIG_LENGTH: {
        size_t n = m == M_EXACT ? LIMIT : LIMIT + 1;

        snprintf(head, sizeof(head),
                 "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", n);
        send_all(fd, head, strlen(head));
        send_all(fd, body, n);
        break;
    }
    case M_BIG_CHUNKED:
        snprintf(head, sizeof(head),
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                 "Connection: close\r\n\r\n");
        send_all(fd, head, strlen(head));
        for (int i = 0; i < 3; i++) { /* 3 x 400 bytes > LIMIT */
            send_all(fd, "190\r\n", 5);
            send_all(fd, body, 400);
            send_all(fd, "\r\n", 2);
        }
        send_all(fd, "0\r\n\r\n", 5);
        break;
    case M_HANG:
        wait_close(fd);
        break;
    case M_STALL:
        snprintf(head, sizeof(head),
                 "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nabc");
        send_all(fd, head, strlen(head));
        wait_close(fd);
        break;
    case M_REDIRECT:
        snprintf(head, sizeof(head),
                 "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/elsewhere\r\n"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n",
                 g_srv.port);
        send_all(fd, head, strlen(head));
        break;
    }
}

static void *serve(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd p[2] = {{g_srv.lfd, POLLIN, 0}, {g_srv.stop[0], POLLIN, 0}};
        enum mode m;
        int fd;

        if (poll(p, 2, -1) < 0 || p[1].revents != 0)
            return NULL;
        fd = accept(g_srv.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        read_request(fd);
        pthread_mutex_lock(&g_srv.mu);
        m = g_srv.mode;
        pthread_mutex_unlock(&g_srv.mu);
        answer(fd, m);
        shutdown(fd, SHUT_WR);
        close(fd);
    }
}

/* Listening before the thread starts: no readiness race. */
static int srv_start(void)
{
    struct sockaddr_in a = {0};
    socklen_t al = sizeof(a);

    pthread_mutex_init(&g_srv.mu, NULL);
    if (pipe(g_srv.stop) != 0)
        return -1;
    g_srv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (g_srv.lfd < 0 || bind(g_srv.lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(g_srv.lfd, 8) != 0 || getsockname(g_srv.lfd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    g_srv.port = ntohs(a.sin_port);
    return pthread_create(&g_srv.thread, NULL, serve, NULL) == 0 ? 0 : -1;
}

static void srv_stop(void)
{
    if (write(g_srv.stop[1], "x", 1) != 1)
        return;
    pthread_join(g_srv.thread, NULL);
    close(g_srv.lfd);
    close(g_srv.stop[0]);
    close(g_srv.stop[1]);
    pthread_mutex_destroy(&g_srv.mu);
}

static unsigned n_reqs(void)
{
    unsigned n;

    pthread_mutex_lock(&g_srv.mu);
    n = g_srv.n_reqs;
    pthread_mutex_unlock(&g_srv.mu);
    return n;
}

static void url(char *out, size_t cap, const char *path)
{
    snprintf(out, cap, "http://127.0.0.1:%d%s", g_srv.port, path);
}

static long elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (long)(t1.tv_sec - t0->tv_sec) * 1000L + (t1.tv_nsec - t0->tv_nsec) / 1000000L;
}

static void req_init(struct kms_fetch_req *r, const char *u)
{
    memset(r, 0, sizeof(*r));
    r->url = u;
    r->timeout_ms = 10000;
    r->max_body = LIMIT;
}

/* Proves: a GET returns the body and status; a non-2xx status is not an error of the
 * transfer; an answer of exactly max_body bytes is accepted. */
static void test_get(void)
{
    struct kms_fetch_req r;
    struct kms_fetch_resp fr;
    char u[128];

    url(u, sizeof(u), "/a");
    req_init(&r, u);
    set_mode(M_OK);
    CHECK_OK(kms_fetch(&r, &fr));
    CHECK(fr.status == 200 && fr.body.len == 5 && memcmp(fr.body.data, "hello", 5) == 0);
    pthread_mutex_lock(&g_srv.mu);
    CHECK(strncmp(g_srv.req, "GET /a HTTP/1.1\r\n", 17) == 0);
    pthread_mutex_unlock(&g_srv.mu);
    kms_fetch_resp_free(&fr);

    set_mode(M_404);
    CHECK_OK(kms_fetch(&r, &fr));
    CHECK(fr.status == 404 && fr.body.len == 4);
    kms_fetch_resp_free(&fr);

    set_mode(M_EXACT);
    CHECK_OK(kms_fetch(&r, &fr));
    CHECK(fr.status == 200 && fr.body.len == LIMIT);
    kms_fetch_resp_free(&fr);
}

/* Proves: an answer over max_body aborts with KMS_ERR_TOOBIG, announced by Content-Length or
 * streamed without one, and never more than max_body bytes are kept. */
static void test_over_limit(void)
{
    struct kms_fetch_req r;
    struct kms_fetch_resp fr;
    char u[128];

    url(u, sizeof(u), "/big");
    req_init(&r, u);
    set_mode(M_BIG_LENGTH);
    CHECK_RC(kms_fetch(&r, &fr), KMS_ERR_TOOBIG);
    CHECK_DETAIL("the answer exceeds 1000 bytes");
    CHECK(fr.too_big && fr.body.len <= LIMIT);
    kms_fetch_resp_free(&fr);

    set_mode(M_BIG_CHUNKED);
    CHECK_RC(kms_fetch(&r, &fr), KMS_ERR_TOOBIG);
    CHECK(fr.too_big && fr.body.len <= LIMIT && fr.cc == CURLE_WRITE_ERROR);
    kms_fetch_resp_free(&fr);
}

/* Proves: the total timeout ends a call to a server that never answers, and one whose body
 * stalls after the headers, with KMS_ERR_TIMEOUT close to the timeout. */
static void test_timeouts(void)
{
    struct kms_fetch_req r;
    struct kms_fetch_resp fr;
    struct timespec t0;
    char u[128];
    long ms;

    url(u, sizeof(u), "/slow");
    req_init(&r, u);
    r.timeout_ms = 300;
    set_mode(M_HANG);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_RC(kms_fetch(&r, &fr), KMS_ERR_TIMEOUT);
    ms = elapsed_ms(&t0);
    CHECK_DETAIL("no answer within 300 ms");
    CHECK(fr.cc == CURLE_OPERATION_TIMEDOUT);
    CHECK(ms >= 250 && ms < 10000);
    kms_fetch_resp_free(&fr);

    set_mode(M_STALL);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_RC(kms_fetch(&r, &fr), KMS_ERR_TIMEOUT);
    ms = elapsed_ms(&t0);
    CHECK(ms >= 250 && ms < 10000);
    kms_fetch_resp_free(&fr);
}

/* Proves: nothing listening is KMS_ERR_NET with libcurl's reason; only http/https are spoken;
 * redirects are returned, not followed; a bad request is refused before any I/O. */
static void test_errors(void)
{
    struct sockaddr_in a = {0};
    socklen_t al = sizeof(a);
    struct kms_fetch_req r;
    struct kms_fetch_resp fr;
    char u[128];
    unsigned before;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    /* a port that was just free: bound, never listened on */
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
          getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    req_init(&r, u);
    CHECK_RC(kms_fetch(&r, &fr), KMS_ERR_NET);
    CHECK(fr.cc == CURLE_COULDNT_CONNECT && strlen(kms_fetch_why(&fr)) > 0);
    kms_fetch_resp_free(&fr);
    close(fd);

    req_init(&r, "file:///etc/hostname");
    CHECK_RC(kms_fetch(&r, &fr), KMS_ERR_NET);
    CHECK(fr.cc == CURLE_UNSUPPORTED_PROTOCOL);
    kms_fetch_resp_free(&fr);

    url(u, sizeof(u), "/moved");
    req_init(&r, u);
    set_mode(M_REDIRECT);
    before = n_reqs();
    CHECK_OK(kms_fetch(&r, &fr));
    CHECK(fr.status == 302 && n_reqs() == before + 1);
    kms_fetch_resp_free(&fr);

    req_init(&r, u);
    r.max_body = 0;
    CHECK_RC(kms_fetch(&r, &fr), KMS_ERR_INVAL);
    req_init(&r, u);
    r.timeout_ms = 0;
    CHECK_RC(kms_fetch(&r, &fr), KMS_ERR_INVAL);
    CHECK(n_reqs() == before + 1);
}

struct hooks {
    int setup_calls;
    int done_calls;
    int setup_rc;
    char ctype[64];
};

static int setup_hook(CURL *h, void *arg)
{
    struct hooks *k = arg;

    k->setup_calls++;
    curl_easy_setopt(h, CURLOPT_USERAGENT, "from-setup");
    if (k->setup_rc < 0)
        return kms_err_set(k->setup_rc, "setup refused");
    return 0;
}

static int done_hook(CURL *h, void *arg)
{
    struct hooks *k = arg;
    char *ct = NULL;

    k->done_calls++;
    curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
    snprintf(k->ctype, sizeof(k->ctype), "%s", ct != NULL ? ct : "");
    return 0;
}

/* Proves: a POST sends exactly post_len bytes (binary) with the given headers; setup runs
 * after the common options (its options win) and its error ends the call before any request;
 * done sees the completed transfer. */
static void test_post_and_hooks(void)
{
    static const char body[] = "a\0b{}";
    const char *hdrs[] = {"X-Test: 1", "Content-Type: application/json", NULL};
    struct hooks k = {0};
    struct kms_fetch_req r;
    struct kms_fetch_resp fr;
    char u[128];
    char *p;
    unsigned before;

    url(u, sizeof(u), "/post");
    req_init(&r, u);
    r.post = body;
    r.post_len = sizeof(body) - 1;
    r.headers = hdrs;
    r.user_agent = "kmsd-test";
    r.setup = setup_hook;
    r.done = done_hook;
    r.arg = &k;
    set_mode(M_OK);
    CHECK_OK(kms_fetch(&r, &fr));
    CHECK(k.setup_calls == 1 && k.done_calls == 1 && strcmp(k.ctype, "text/plain") == 0);
    pthread_mutex_lock(&g_srv.mu);
    CHECK(strncmp(g_srv.req, "POST /post HTTP/1.1\r\n", 21) == 0);
    CHECK(strstr(g_srv.req, "\r\nX-Test: 1\r\n") != NULL);
    CHECK(strstr(g_srv.req, "\r\nContent-Type: application/json\r\n") != NULL);
    CHECK(strstr(g_srv.req, "\r\nContent-Length: 5\r\n") != NULL);
    CHECK(strstr(g_srv.req, "\r\nUser-Agent: from-setup\r\n") != NULL);
    p = strstr(g_srv.req, "\r\n\r\n");
    CHECK(p != NULL && g_srv.req_len == (size_t)(p + 4 - g_srv.req) + 5 &&
          memcmp(p + 4, body, 5) == 0);
    pthread_mutex_unlock(&g_srv.mu);
    kms_fetch_resp_free(&fr);

    k.setup_rc = KMS_ERR_DENIED;
    before = n_reqs();
    CHECK_RC(kms_fetch(&r, &fr), KMS_ERR_DENIED);
    CHECK_DETAIL("setup refused");
    CHECK(n_reqs() == before && k.done_calls == 1);
    kms_fetch_resp_free(&fr);
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || srv_start() != 0) {
        fprintf(stderr, "cannot start the test listener\n");
        return 2;
    }
    RUN(test_get);
    RUN(test_over_limit);
    RUN(test_timeouts);
    RUN(test_errors);
    RUN(test_post_and_hooks);
    srv_stop();
    curl_global_cleanup();
    TEST_MAIN_END();
}
