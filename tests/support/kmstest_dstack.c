/*
 * The fake dstack guest agent (kmstest_dstack.h). One connection at a time; every wait polls the
 * stop pipe too, so kmstest_agent_stop never blocks on a client.
 */
#include <errno.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "attest/events.h"
#include "attest/sim.h"
#include "common/hex.h"
#include "kmstest_dstack.h"

#define REQ_MAX 65536
#define IO_WAIT_MS 10000

struct kmstest_agent {
    char *path;
    int lfd;
    int stop_pipe[2];
    pthread_t thread;
    pthread_mutex_t lock;
    enum kmstest_agent_mode mode;
    unsigned attest_calls;
    struct kms_platform *p;
    enum kms_platform_kind kind;
    uint8_t app_id[20];
    uint8_t compose[32];
    uint8_t instance[32];
    size_t instance_len;
    char *config;
    char buf[REQ_MAX]; /* the request being served */
};

/* 1: fd ready, 0: stop requested or IO_WAIT_MS passed. */
static int wait_ready(struct kmstest_agent *a, int fd, short ev)
{
    struct pollfd p[2] = {{.fd = fd, .events = ev}, {.fd = a->stop_pipe[0], .events = POLLIN}};
    int n;

    do {
        n = poll(p, 2, IO_WAIT_MS);
    } while (n < 0 && errno == EINTR);
    return n > 0 && (p[0].revents != 0) && p[1].revents == 0;
}

static void send_all(struct kmstest_agent *a, int fd, const char *s, size_t n)
{
    while (n > 0 && wait_ready(a, fd, POLLOUT)) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);

        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void answer(struct kmstest_agent *a, int fd, int status, const char *body, int chunked)
{
    char head[256];
    size_t len = strlen(body);

    if (chunked) {
        size_t half = len / 2;
        char sz[32];

        snprintf(head, sizeof(head),
                 "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nTransfer-Encoding: "
                 "chunked\r\nConnection: close\r\n\r\n",
                 status);
        send_all(a, fd, head, strlen(head));
        /* two chunks, the first with an extension, then the terminator */
        snprintf(sz, sizeof(sz), "%zx;ext=1\r\n", half);
        send_all(a, fd, sz, strlen(sz));
        send_all(a, fd, body, half);
        snprintf(sz, sizeof(sz), "\r\n%zX\r\n", len - half);
        send_all(a, fd, sz, strlen(sz));
        send_all(a, fd, body + half, len - half);
        send_all(a, fd, "\r\n0\r\n\r\n", 7);
        return;
    }
    snprintf(head, sizeof(head),
             "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n",
             status, len);
    send_all(a, fd, head, strlen(head));
    send_all(a, fd, body, len);
}

/* The attestation of the app boot over rd, hex of its SCALE encoding (caller frees). */
static char *attest_hex(struct kmstest_agent *a, const uint8_t rd[64])
{
    struct kms_runtime_event ev[5];
    struct kms_attestation *att = NULL;
    uint8_t *bin = NULL;
    size_t len = 0;
    char *hex = NULL;

    kms_app_boot_events(ev, a->app_id, a->compose, a->instance, a->instance_len);
    if (kms_platform_attest(a->p, rd, ev, 5, a->config, &att) == 0 &&
        kms_att_encode(att, 0, &bin, &len) == 0)
        hex = kms_hex_dup(bin, len, 0);
    if (hex == NULL)
        fprintf(stderr, "fake agent: cannot attest: %s\n", kms_err_detail());
    free(bin);
    kms_att_free(att);
    return hex;
}

static void serve_attest(struct kmstest_agent *a, int fd, json_t *req, enum kmstest_agent_mode m)
{
    const char *rdh = json_string_value(json_object_get(req, "report_data"));
    uint8_t rd[64];
    char *hex;
    json_t *o;
    char *body;

    if (rdh == NULL || kms_hex_decode_exact(rdh, rd, 64) < 0) {
        answer(a, fd, 400, "{\"error\":\"report_data must be 64 bytes of hex\"}", 0);
        return;
    }
    if (m == KMSTEST_AGENT_NOT_HEX) {
        answer(a, fd, 200, "{\"attestation\":\"zz00\"}", 0);
        return;
    }
    if (m == KMSTEST_AGENT_WRONG_RD)
        rd[0] ^= 1;
    hex = attest_hex(a, rd);
    if (hex == NULL) {
        answer(a, fd, 500, "{\"error\":\"fake agent: cannot attest\"}", 0);
        return;
    }
    o = json_pack("{s:s}", "attestation", hex);
    body = json_dumps(o, JSON_COMPACT);
    answer(a, fd, 200, body, m == KMSTEST_AGENT_CHUNKED);
    free(body);
    json_decref(o);
    free(hex);
}

static void serve_info(struct kmstest_agent *a, int fd, enum kmstest_agent_mode m)
{
    char app[41], inst[65];
    json_t *o;
    char *body;

    kms_hex_encode(a->app_id, 20, app);
    kms_hex_encode(a->instance, a->instance_len, inst);
    o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "app_id", app, "instance_id", inst, "app_name",
                  "kmstest-fake-agent", "app_cert", "", "tcb_info", "", "vm_config",
                  a->config != NULL ? a->config : "", "cloud_product",
                  a->kind == KMS_PLATFORM_SIM_GCP ? "Google Compute Engine" : "");
    body = json_dumps(o, JSON_COMPACT);
    answer(a, fd, 200, body, m == KMSTEST_AGENT_CHUNKED);
    free(body);
    json_decref(o);
}

/* Reads one request (head + Content-Length body) into buf; the body offset, 0 on failure. */
static size_t read_request(struct kmstest_agent *a, int fd, char *buf, size_t cap, size_t *total)
{
    size_t len = 0, body_off = 0, need = 0;

    for (;;) {
        ssize_t r;

        if (body_off != 0 && len >= body_off + need) {
            buf[body_off + need] = '\0';
            *total = body_off + need;
            return body_off;
        }
        if (len + 1 >= cap || !wait_ready(a, fd, POLLIN))
            return 0;
        r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r <= 0)
            return 0;
        len += (size_t)r;
        buf[len] = '\0';
        if (body_off == 0) {
            char *e = strstr(buf, "\r\n\r\n"), *cl;

            if (e == NULL)
                continue;
            body_off = (size_t)(e + 4 - buf);
            cl = strstr(buf, "\r\nContent-Length:");
            need = cl != NULL && cl < e ? strtoul(cl + 17, NULL, 10) : 0;
            if (need >= cap - body_off)
                return 0;
        }
    }
}

static void serve_conn(struct kmstest_agent *a, int fd)
{
    char *buf = a->buf;
    enum kmstest_agent_mode m;
    size_t total = 0, off = read_request(a, fd, buf, sizeof(a->buf), &total);
    json_t *req;

    if (off == 0)
        return;
    pthread_mutex_lock(&a->lock);
    m = a->mode;
    if (strncmp(buf, "POST /Attest ", 13) == 0)
        a->attest_calls++;
    pthread_mutex_unlock(&a->lock);
    if (m == KMSTEST_AGENT_HANG) {
        char c;

        /* until the client gives up (EOF) or the agent stops */
        while (wait_ready(a, fd, POLLIN) && recv(fd, &c, 1, 0) > 0)
            ;
        return;
    }
    if (m == KMSTEST_AGENT_JUNK) {
        answer(a, fd, 200, "<html>not the guest agent</html>", 0);
        return;
    }
    if (m == KMSTEST_AGENT_HTTP_ERROR) {
        answer(a, fd, 400, "{\"error\":\"Failed to get attestation: simulated failure\"}", 0);
        return;
    }
    req = json_loads(buf + off, 0, NULL);
    if (strncmp(buf, "POST /Attest ", 13) == 0 && json_is_object(req))
        serve_attest(a, fd, req, m);
    else if (strncmp(buf, "POST /Info ", 11) == 0)
        serve_info(a, fd, m);
    else
        answer(a, fd, 404, "{\"error\":\"no such method\"}", 0);
    json_decref(req);
}

static void *agent_main(void *arg)
{
    struct kmstest_agent *a = arg;

    for (;;) {
        struct pollfd p[2] = {{.fd = a->lfd, .events = POLLIN},
                              {.fd = a->stop_pipe[0], .events = POLLIN}};
        int fd;

        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents != 0)
            break;
        fd = accept(a->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        serve_conn(a, fd);
        close(fd);
    }
    return NULL;
}

int kmstest_agent_start(const char *socket_path, enum kms_platform_kind kind, const char *sim_dir,
                        const uint8_t app_id[20], const uint8_t *instance_id, size_t instance_len,
                        const char *config, struct kmstest_agent **out)
{
    struct kmstest_agent *a = calloc(1, sizeof(*a));
    struct kms_platform_cfg cfg;
    struct sockaddr_un sa;

    *out = NULL;
    if (a == NULL || instance_len > sizeof(a->instance) ||
        strlen(socket_path) >= sizeof(sa.sun_path))
        goto fail_early;
    a->lfd = -1;
    a->stop_pipe[0] = a->stop_pipe[1] = -1;
    pthread_mutex_init(&a->lock, NULL);
    a->kind = kind;
    memcpy(a->app_id, app_id, 20);
    SHA256(app_id, 20, a->compose);
    if (instance_id != NULL)
        memcpy(a->instance, instance_id, instance_len);
    a->instance_len = instance_id != NULL ? instance_len : 0;
    a->path = strdup(socket_path);
    if (config == NULL && kind == KMS_PLATFORM_SIM_TDX) {
        /* A real agent always has its CVM's vm_config (with os_image_hash); the simulated image's
         * keeps kmsd's plain-TDX image check satisfied from the simulated TEE's manifest. */
        char vmc[512];

        a->config = kms_sim_vm_config(vmc, sizeof(vmc)) == 0 ? strdup(vmc) : NULL;
        if (a->config == NULL)
            goto fail;
    } else {
        a->config = config != NULL ? strdup(config) : NULL;
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.kind = kind;
    cfg.sim_dir = sim_dir;
    if (a->path == NULL || kms_platform_open(&cfg, &a->p) < 0) {
        fprintf(stderr, "fake agent: cannot open the simulated TEE: %s\n", kms_err_detail());
        goto fail;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
    unlink(socket_path);
    a->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (a->lfd < 0 || bind(a->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(a->lfd, 16) != 0 || pipe(a->stop_pipe) != 0) {
        fprintf(stderr, "fake agent: cannot listen on %s: %s\n", socket_path, strerror(errno));
        goto fail;
    }
    if (pthread_create(&a->thread, NULL, agent_main, a) != 0)
        goto fail;
    *out = a;
    return 0;
fail:
    if (a->lfd >= 0)
        close(a->lfd);
    if (a->stop_pipe[0] >= 0) {
        close(a->stop_pipe[0]);
        close(a->stop_pipe[1]);
    }
    kms_platform_free(a->p);
    free(a->path);
    free(a->config);
    pthread_mutex_destroy(&a->lock);
fail_early:
    free(a);
    return -1;
}

void kmstest_agent_set_mode(struct kmstest_agent *a, enum kmstest_agent_mode m)
{
    pthread_mutex_lock(&a->lock);
    a->mode = m;
    pthread_mutex_unlock(&a->lock);
}

unsigned kmstest_agent_attest_calls(struct kmstest_agent *a)
{
    unsigned n;

    pthread_mutex_lock(&a->lock);
    n = a->attest_calls;
    pthread_mutex_unlock(&a->lock);
    return n;
}

void kmstest_agent_stop(struct kmstest_agent *a)
{
    if (a == NULL)
        return;
    if (write(a->stop_pipe[1], "x", 1) != 1)
        fprintf(stderr, "fake agent: cannot signal the thread to stop\n");
    pthread_join(a->thread, NULL);
    close(a->lfd);
    close(a->stop_pipe[0]);
    close(a->stop_pipe[1]);
    unlink(a->path);
    kms_platform_free(a->p);
    free(a->path);
    free(a->config);
    pthread_mutex_destroy(&a->lock);
    free(a);
}
