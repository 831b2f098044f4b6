/*
 * node/http.c over raw sockets on loopback (plain HTTP; the TLS listener shares the code):
 *  - strict HTTP: a raw NUL or %00 in the target (400), an unknown method (405, Allow), two
 *    different Content-Length headers or Content-Length with Transfer-Encoding (400), an absurd
 *    Content-Length (413 at once, without the body); none of them reaches the handler;
 *  - deadlines: a connection that trickles header bytes is closed at the header deadline;
 *  - fairness: with the table full of idle connections from busy addresses, a new client from
 *    another address is served, and the connection closed for it is the busiest address's
 *    oldest (the test lowers its own fd limit so the table holds 22 connections, 8 per address).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "node/http.h"
#include "test.h"

static atomic_int g_handled;
static unsigned g_port;
static struct kms_http_server *g_srv;

static void handler(void *arg, const struct kms_http_req *req, struct kms_http_resp *resp)
{
    (void)arg;
    atomic_fetch_add(&g_handled, 1);
    if (strcmp(req->method, "POST") == 0)
        kms_http_resp_text(resp, 200, "text/plain", (const char *)req->body);
    else
        kms_http_resp_text(resp, 200, "text/plain", req->path);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A TCP connection to the server from 127.0.0.<src>; -1 on failure. */
static int dial(int src)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)src);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        goto fail;
    a.sin_addr.s_addr = htonl(0x7f000001u);
    a.sin_port = htons((uint16_t)g_port);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        goto fail;
    return fd;
fail:
    close(fd);
    return -1;
}

/* 1 when the server closed fd within ms (EOF or reset), 0 when it is still open. */
static int closed_within(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    char b[4096];
    ssize_t n;

    while (poll(&p, 1, ms) == 1) {
        n = recv(fd, b, sizeof(b), 0);
        if (n <= 0)
            return 1;
    }
    return 0;
}

/* Sends raw bytes, reads the answer until the server closes or 5 s pass. Returns the status
 * (0 if none) and the answer in out. */
static int exchange(const char *req, size_t len, char *out, size_t outlen)
{
    int fd = dial(1);
    size_t got = 0;
    int status = 0;
    struct pollfd p;

    out[0] = '\0';
    if (fd < 0)
        return 0;
    if (send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len)
        goto out;
    p.fd = fd;
    p.events = POLLIN;
    while (got + 1 < outlen && poll(&p, 1, 5000) == 1) {
        ssize_t n = recv(fd, out + got, outlen - 1 - got, 0);

        if (n <= 0)
            break;
        got += (size_t)n;
        out[got] = '\0';
        if (strstr(out, "\r\n\r\n") != NULL && strstr(out, "Content-Length: 0") == NULL &&
            strncmp(out, "HTTP/1.1 200", 12) == 0)
            break; /* keep-alive 200: enough */
    }
    if (sscanf(out, "HTTP/1.%*d %d", &status) != 1)
        status = 0;
out:
    close(fd);
    return status;
}

#define EXCH(lit, out) exchange((lit), sizeof(lit) - 1, (out), sizeof(out))

/* Proves: each strict-HTTP refusal, before the handler, and a normal request still served. */
static void test_strict(void)
{
    char out[4096];
    int before;
    double t0;

    before = atomic_load(&g_handled);
    CHECK(EXCH("GET /prpc/KMS.GetAppKey%00.zzz?json HTTP/1.1\r\nHost: x\r\n\r\n", out) == 400);
    CHECK(strstr(out, "%00") != NULL);
    CHECK(EXCH("GET /prpc/KMS.GetAppKey\0.zzz?json HTTP/1.1\r\nHost: x\r\n\r\n", out) == 400);
    CHECK(strstr(out, "NUL byte") != NULL);
    CHECK(EXCH("GET /x?json=%00 HTTP/1.1\r\nHost: x\r\n\r\n", out) == 400);
    CHECK(EXCH("FOOBAR /prpc/GetMeta?json HTTP/1.1\r\nHost: x\r\n\r\n", out) == 405);
    CHECK(strstr(out, "Allow: GET, HEAD, POST") != NULL);
    CHECK(EXCH("DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n", out) == 405);
    CHECK(EXCH("POST /prpc/GetMeta?json HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
               "Content-Length: 6\r\n\r\nhello!",
               out) == 400);
    CHECK(strstr(out, "conflicting Content-Length") != NULL);
    CHECK(EXCH("POST /prpc/GetMeta?json HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
               "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
               out) == 400);
    t0 = now_s();
    CHECK(EXCH("POST /prpc/GetMeta?json HTTP/1.1\r\nHost: x\r\n"
               "Content-Length: 18446744073709551615\r\n\r\n",
               out) == 413);
    CHECK(now_s() - t0 < 2.0); /* answered at once, not after waiting for the body */
    CHECK(strstr(out, "exceeds the 1 MiB limit") != NULL);
    CHECK(EXCH("POST /prpc/GetMeta?json HTTP/1.1\r\nHost: x\r\n"
               "Content-Length: 99999999999999999999999\r\n\r\n",
               out) == 413);
    CHECK(atomic_load(&g_handled) == before); /* no handler ran */

    /* still served: GET, POST with a body, identical repeated Content-Length */
    CHECK(EXCH("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", out) == 200);
    CHECK(strstr(out, "/health") != NULL);
    CHECK(EXCH("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n"
               "Connection: close\r\n\r\nhello",
               out) == 200);
    CHECK(strstr(out, "hello") != NULL);
    CHECK(atomic_load(&g_handled) == before + 2);
}

/* Proves: a client that sends a header line every 400 ms is still closed at the header
 * deadline (libmicrohttpd's idle timeout alone would keep it forever); a complete request is
 * answered well before it. */
static void test_header_deadline(void)
{
    int fd = dial(5);
    double t0 = now_s(), t;
    int closed = 0;

    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(send(fd, "GET / HTTP/1.1\r\n", 16, MSG_NOSIGNAL) == 16);
    while (now_s() - t0 < KMS_HTTP_HEADER_TIMEOUT_MS / 1000.0 + 3.0) {
        if (send(fd, "X-Slow: 1\r\n", 11, MSG_NOSIGNAL) != 11 || closed_within(fd, 400)) {
            closed = 1;
            break;
        }
    }
    t = now_s() - t0;
    printf("  slow-header connection closed after %.2f s\n", t);
    CHECK(closed);
    CHECK(t >= KMS_HTTP_HEADER_TIMEOUT_MS / 1000.0 - 0.5);
    CHECK(t < KMS_HTTP_HEADER_TIMEOUT_MS / 1000.0 + 2.0);
    close(fd);
}

/* Proves: per-address limit (8 here: the 9th connection from one address is closed at once);
 * a full table (22) makes room for a client from a quiet address by closing the oldest idle
 * connection of the busiest address, and that client is served. */
static void test_fairness(void)
{
    int busy[3][8];
    int extra, legit;
    char out[512];
    size_t got = 0;
    int n_closed[3] = {0, 0, 0};
    const char req[] = "GET /fair HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    unsigned n = 0;

    for (int a = 0; a < 3; a++) {
        for (int i = 0; i < 8; i++) {
            busy[a][i] = -1;
            if (a == 2 && i >= 6)
                continue;
            busy[a][i] = dial(10 + a);
            CHECK(busy[a][i] >= 0);
            /* one at a time, so the server's age order is the dial order */
            n++;
            for (int k = 0; k < 500 && kms_http_connections(g_srv) < n; k++)
                usleep(2000);
        }
    }
    /* wait until the server has accounted all 22 */
    for (int i = 0; i < 500 && kms_http_connections(g_srv) < 22; i++)
        usleep(10000);
    CHECK(kms_http_connections(g_srv) == 22);
    extra = dial(10);
    CHECK(extra >= 0 && closed_within(extra, 1000)); /* 9th from 127.0.0.10 */
    for (int a = 0; a < 3; a++) {
        for (int i = 0; i < 8; i++)
            CHECK(busy[a][i] < 0 || !closed_within(busy[a][i], 0));
    }
    legit = dial(1);
    CHECK(legit >= 0);
    CHECK(send(legit, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1));
    {
        struct pollfd p = {legit, POLLIN, 0};

        while (got + 1 < sizeof(out) && poll(&p, 1, 3000) == 1) {
            ssize_t r = recv(legit, out + got, sizeof(out) - 1 - got, 0);

            if (r <= 0)
                break;
            got += (size_t)r;
        }
        out[got] = '\0';
    }
    CHECK(strncmp(out, "HTTP/1.1 200", 12) == 0 && strstr(out, "/fair") != NULL);
    for (int a = 0; a < 3; a++) {
        for (int i = 0; i < 8; i++) {
            if (busy[a][i] >= 0 && closed_within(busy[a][i], a == 0 && i == 0 ? 1000 : 0))
                n_closed[a]++;
        }
    }
    printf("  closed for the newcomer: %d/%d/%d (addresses .10/.11/.12)\n", n_closed[0],
           n_closed[1], n_closed[2]);
    CHECK(n_closed[0] == 1 && n_closed[1] == 0 && n_closed[2] == 0);
    CHECK(busy[0][0] >= 0 && closed_within(busy[0][0], 0)); /* the oldest of .10 */
    for (int a = 0; a < 3; a++) {
        for (int i = 0; i < 8; i++) {
            if (busy[a][i] >= 0)
                close(busy[a][i]);
        }
    }
    close(extra);
    close(legit);
}

int main(void)
{
    struct kms_http_server *srv = NULL;
    struct rlimit rl = {300, 300};

    /* a small table: (300 - 256) / 2 = 22 connections, 8 per address */
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    CHECK_OK(kms_http_start("127.0.0.1:0", NULL, handler, NULL, &srv));
    if (srv == NULL)
        return 1;
    g_port = kms_http_port(srv);
    g_srv = srv;
    RUN(test_strict);
    RUN(test_header_deadline);
    RUN(test_fairness);
    kms_http_stop(srv);
    TEST_MAIN_END();
}
