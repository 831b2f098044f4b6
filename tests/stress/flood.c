/*
 * A connection flooder for the stress tests (loopback only): holds, from source addresses
 * 127.0.0.FIRST .. FIRST+COUNT-1, PER connections each to 127.0.0.1:PORT, and reconnects (after
 * 100-200 ms) whenever the server closes one. Modes:
 *   idle     TCP connections that never send a byte;
 *   slow     plain HTTP that sends a request line, then one header line every --interval-ms;
 *   slowtls  the same inside TLS (handshake first; no client certificate, server not verified).
 *
 *   flood --port P [--seconds S] [--interval-ms MS] MODE:FIRST:COUNT:PER ...
 *
 * Prints "flood: ready" once every connection was attempted, then one status line a second;
 * stops on SIGTERM/SIGINT or after S seconds (default 120), closing everything. The caller
 * raises the fd limit (ulimit -n) to cover the connections.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_SLOTS 8192
#define MAX_NEW_PER_TICK 256

enum mode { M_IDLE, M_SLOW, M_SLOWTLS };
enum state { S_WAIT, S_CONNECTING, S_TLS, S_OPEN };

struct slot {
    enum mode mode;
    int src; /* last octet of the source address */
    enum state st;
    int fd;
    SSL *ssl;
    long long t_next; /* S_WAIT: reconnect at; S_OPEN (slow modes): next header line at */
    int lines;
};

static struct slot g_slots[MAX_SLOTS];
static size_t g_n;
static unsigned g_port;
static long long g_interval_ms = 1000;
static volatile sig_atomic_t g_stop;
static SSL_CTX *g_ctx;
static unsigned long g_reconnects, g_closed_by_server;

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void slot_close(struct slot *s, int by_server)
{
    if (s->ssl != NULL) {
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->st = S_WAIT;
    s->t_next = now_ms() + 100 + rand() % 100;
    if (by_server)
        g_closed_by_server++;
}

static void slot_connect(struct slot *s)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        s->t_next = now_ms() + 500;
        return;
    }
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)s->src);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        s->t_next = now_ms() + 500;
        return;
    }
    a.sin_addr.s_addr = htonl(0x7f000001u);
    a.sin_port = htons((uint16_t)g_port);
    s->fd = fd;
    s->lines = 0;
    g_reconnects++;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 && errno != EINPROGRESS) {
        slot_close(s, 0);
        return;
    }
    s->st = S_CONNECTING;
}

/* The next bytes of a slow request: the request line, then one header line at a time. */
static void slow_send(struct slot *s)
{
    char line[64];
    int n;

    if (s->lines == 0)
        n = snprintf(line, sizeof(line), "GET /prpc/GetMeta?json HTTP/1.1\r\n");
    else
        n = snprintf(line, sizeof(line), "X-Slow-%d: %d\r\n", s->lines, s->lines);
    s->lines++;
    if (s->mode == M_SLOWTLS)
        (void)SSL_write(s->ssl, line, n);
    else
        (void)send(s->fd, line, (size_t)n, MSG_NOSIGNAL);
    s->t_next = now_ms() + g_interval_ms;
}

static void slot_opened(struct slot *s)
{
    s->st = S_OPEN;
    if (s->mode != M_IDLE)
        slow_send(s);
}

static void tls_step(struct slot *s)
{
    int r = SSL_do_handshake(s->ssl);

    if (r == 1) {
        slot_opened(s);
        return;
    }
    r = SSL_get_error(s->ssl, r);
    if (r != SSL_ERROR_WANT_READ && r != SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        slot_close(s, 1);
    }
}

static short slot_events(const struct slot *s)
{
    if (s->st == S_CONNECTING)
        return POLLOUT;
    if (s->st == S_TLS)
        return SSL_want_write(s->ssl) ? POLLOUT : POLLIN;
    return POLLIN;
}

static void slot_ready(struct slot *s, short rev)
{
    char buf[4096];

    if (s->st == S_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);

        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            slot_close(s, 1);
            return;
        }
        if (s->mode == M_SLOWTLS) {
            s->ssl = SSL_new(g_ctx);
            if (s->ssl == NULL || SSL_set_fd(s->ssl, s->fd) != 1) {
                slot_close(s, 0);
                return;
            }
            SSL_set_connect_state(s->ssl);
            s->st = S_TLS;
            tls_step(s);
        } else {
            slot_opened(s);
        }
        return;
    }
    if (s->st == S_TLS) {
        tls_step(s);
        return;
    }
    if (rev & (POLLIN | POLLHUP | POLLERR)) {
        /* anything from the server (an answer, EOF, a reset) ends this connection */
        if (s->mode == M_SLOWTLS) {
            int r = SSL_read(s->ssl, buf, sizeof(buf));

            if (r <= 0) {
                int e = SSL_get_error(s->ssl, r);

                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    return; /* e.g. a session ticket */
                ERR_clear_error();
            }
            slot_close(s, 1);
        } else {
            ssize_t r = recv(s->fd, buf, sizeof(buf), 0);

            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            slot_close(s, 1);
        }
    }
}

static int add_spec(const char *spec)
{
    char m[16];
    int first, count, per;
    enum mode mode;

    if (sscanf(spec, "%15[a-z]:%d:%d:%d", m, &first, &count, &per) != 4 || first < 2 || count < 1 ||
        first > 254 || 255 - first < count || per < 1)
        return -1;
    if (strcmp(m, "idle") == 0)
        mode = M_IDLE;
    else if (strcmp(m, "slow") == 0)
        mode = M_SLOW;
    else if (strcmp(m, "slowtls") == 0)
        mode = M_SLOWTLS;
    else
        return -1;
    for (int a = 0; a < count; a++) {
        for (int i = 0; i < per; i++) {
            if (g_n >= MAX_SLOTS)
                return -1;
            g_slots[g_n].mode = mode;
            g_slots[g_n].src = first + a;
            g_slots[g_n].st = S_WAIT;
            g_slots[g_n].fd = -1;
            g_slots[g_n].t_next = 0;
            g_n++;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct pollfd pfd[MAX_SLOTS];
    static size_t idx[MAX_SLOTS];
    long long deadline, last_status;
    long seconds = 120;
    int ready = 0;
    size_t attempted = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            g_port = (unsigned)atoi(argv[++i]);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atol(argv[++i]);
        else if (strcmp(argv[i], "--interval-ms") == 0 && i + 1 < argc)
            g_interval_ms = atol(argv[++i]);
        else if (add_spec(argv[i]) != 0) {
            fprintf(stderr, "flood: bad argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (g_port == 0 || g_n == 0) {
        fprintf(stderr, "usage: flood --port P [--seconds S] [--interval-ms MS] "
                        "idle|slow|slowtls:FIRST:COUNT:PER ...\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)getpid());
    g_ctx = SSL_CTX_new(TLS_client_method());
    if (g_ctx == NULL)
        return 2;
    SSL_CTX_set_verify(g_ctx, SSL_VERIFY_NONE, NULL);
    deadline = now_ms() + seconds * 1000;
    last_status = now_ms();
    while (!g_stop && now_ms() < deadline) {
        long long now = now_ms();
        size_t np = 0, started = 0;
        unsigned long open[3] = {0, 0, 0};
        unsigned long held = 0; /* connecting, in the TLS handshake or open */

        /* first connections first (a budget of their own), so reconnects of the connections
         * the server refuses cannot starve them */
        for (size_t k = 0; attempted < g_n && k < MAX_NEW_PER_TICK; k++)
            slot_connect(&g_slots[attempted++]);
        for (size_t i = 0; i < g_n; i++) {
            struct slot *s = &g_slots[i];

            if (i < attempted && s->st == S_WAIT && now >= s->t_next &&
                started < MAX_NEW_PER_TICK) {
                started++;
                slot_connect(s);
            }
            if (s->st == S_OPEN && s->mode != M_IDLE && now >= s->t_next)
                slow_send(s);
            if (s->st == S_OPEN)
                open[s->mode]++;
            if (s->st != S_WAIT)
                held++;
            if (s->st != S_WAIT) {
                pfd[np].fd = s->fd;
                pfd[np].events = slot_events(s);
                pfd[np].revents = 0;
                idx[np++] = i;
            }
        }
        if (!ready && attempted == g_n) {
            ready = 1;
            printf("flood: ready (%zu connections attempted)\n", g_n);
            fflush(stdout);
        }
        if (now - last_status >= 1000) {
            last_status = now;
            printf("flood: held %lu, open idle=%lu slow=%lu slowtls=%lu; connects %lu, closed by "
                   "server %lu\n",
                   held, open[M_IDLE], open[M_SLOW], open[M_SLOWTLS], g_reconnects,
                   g_closed_by_server);
            fflush(stdout);
        }
        if (poll(pfd, (nfds_t)np, 50) < 0 && errno != EINTR)
            break;
        for (size_t k = 0; k < np; k++) {
            if (pfd[k].revents != 0)
                slot_ready(&g_slots[idx[k]], pfd[k].revents);
        }
    }
    for (size_t i = 0; i < g_n; i++) {
        if (g_slots[i].st != S_WAIT)
            slot_close(&g_slots[i], 0);
    }
    SSL_CTX_free(g_ctx);
    printf("flood: stopped; connects %lu, closed by server %lu\n", g_reconnects,
           g_closed_by_server);
    return 0;
}
