/*
 * Load generator (issue 13 item 5): capacity of a kmsd node under concurrent RA-TLS clients,
 * against handshake-bound baselines measured in the same run on the same machine.
 *
 * Prepares, before any timing, 64 ready RA-TLS client identities (fresh P-256 keys with
 * simulated TDX attestations, certificates issued under the node's temp CA, each loaded once
 * into its own client SSL_CTX), then measures:
 *   - GetAppKey at concurrency 1/8/64, a new TLS connection per request and keep-alive;
 *   - the same request shapes against two bare mutual-TLS servers answering a fixed body of the
 *     GetAppKey answer's size: OpenSSL (thread per connection), and libmicrohttpd + GnuTLS set
 *     up as kmsd's listener (the TLS library kmsd serves with);
 *   - keep-alive GetMeta against /health (8 connections);
 *   - kmsd's CPU time (utime + stime from /proc/PID/stat) per full client flow (GetTempCaCert,
 *     fresh key and attestation, RA-TLS handshake, GetAppKey) over 240 flows from 4 clients;
 *   - kmsd's RSS with 1,000 concurrent TLS connections open (each has answered a GetMeta);
 *   - cached TDX quote verification against its ECDSA work (2 P-256 verifications).
 * With a second kmsd binary (--before), every node measurement is repeated against it in the
 * same run and the after/before ratios are printed.
 *
 * Usage: bench_load [--secs S] [--before KMSD_BEFORE] [--node-root DIR] KMSD
 * --node-root puts the nodes' data directories (SQLite store, audit log) under DIR, e.g. a tmpfs
 * (/dev/shm) to see what the audit log's fsync per key release costs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "attest/attest.h"
#include "attest/collateral.h"
#include "attest/sim.h"
#include "common/crypto/crypto.h"
#include "replication/replication.h"

#define N_IDENT 64
#define MAX_LAT 400000
#define RSS_CONNS 1000
#define FLOW_CLIENTS 4
#define FLOWS 240

static struct kms_sim *sim;
static double secs = 2.0;
static const char *node_root; /* --node-root: where kmsd keeps its data (default: the temp dir) */

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_load: %s: %s\n", what, kms_err_detail());
    exit(1);
}

static unsigned free_port(void)
{
    struct sockaddr_in sa;
    socklen_t l = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &l) != 0)
        exit(1);
    close(fd);
    return ntohs(sa.sin_port);
}

static long proc_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    size_t fl = strlen(field);
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, field, fl) == 0)
            kb = strtol(line + fl, NULL, 10);
    }
    fclose(f);
    return kb;
}

/* utime + stime of pid in seconds. */
static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    unsigned long ut = 0, st = 0;
    char *p;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ------------------------------------------------------------------ TLS client */

static int tcp_connect(unsigned port, uint32_t src)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    if (src != 0) {
        sa.sin_addr.s_addr = htonl(src);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            close(fd);
            return -1;
        }
    }
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

struct conn {
    int fd;
    SSL *ssl;
};

static void conn_close(struct conn *c)
{
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    c->ssl = NULL;
    c->fd = -1;
}

static int conn_open(SSL_CTX *ctx, unsigned port, uint32_t src, struct conn *c)
{
    c->ssl = NULL;
    c->fd = tcp_connect(port, src);
    if (c->fd < 0)
        return -1;
    c->ssl = SSL_new(ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 || SSL_connect(c->ssl) != 1) {
        conn_close(c);
        return -1;
    }
    return 0;
}

/* One request/answer on c: the HTTP status, or -1. body (optional, size cap) gets the answer
 * body NUL-terminated. */
static int exchange(struct conn *c, const char *req, size_t req_len, char *body, size_t cap)
{
    char buf[65536];
    size_t have = 0, hlen, clen, want;
    char *end, *cl;
    int status, n;

    if (SSL_write(c->ssl, req, (int)req_len) != (int)req_len)
        return -1;
    for (;;) {
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end != NULL)
            break;
        if (have >= sizeof(buf) - 1)
            return -1;
        n = SSL_read(c->ssl, buf + have, (int)(sizeof(buf) - 1 - have));
        if (n <= 0)
            return -1;
        have += (size_t)n;
    }
    hlen = (size_t)(end - buf) + 4;
    if (sscanf(buf, "HTTP/1.%*c %d", &status) != 1)
        return -1;
    *end = '\0';
    cl = strcasestr(buf, "\r\ncontent-length:");
    clen = cl != NULL ? strtoul(cl + 17, NULL, 10) : 0;
    if (clen > sizeof(buf) - 1 - hlen)
        return -1;
    want = hlen + clen; /* bounded by the check above */
    while (have < want) {
        n = SSL_read(c->ssl, buf + have, (int)(want - have));
        if (n <= 0)
            return -1;
        have += (size_t)n;
    }
    if (body != NULL && cap > 0) {
        size_t k = clen < cap - 1 ? clen : cap - 1;

        memcpy(body, buf + hlen, k);
        body[k] = '\0';
    }
    return status;
}

static SSL_CTX *client_ctx(const char *cert_pem, const char *key_pem)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;

    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* the load generator trusts its server */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (cert_pem != NULL) {
        if (kms_cert_from_pem(cert_pem, &cert) < 0 || kms_pkey_from_pem(key_pem, &key) < 0 ||
            SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1) {
            SSL_CTX_free(ctx);
            ctx = NULL;
        }
    }
    X509_free(cert);
    EVP_PKEY_free(key);
    return ctx;
}

/* ------------------------------------------------------------------ identities */

static int attest_cb(void *arg, const uint8_t rd[64], struct kms_attestation **out)
{
    struct kms_runtime_event ev[2];
    uint8_t app_id[20];

    (void)arg;
    memset(app_id, 0x5a, sizeof(app_id));
    memset(ev, 0, sizeof(ev));
    ev[0].event = (char *)"app-id";
    ev[0].payload.p = app_id;
    ev[0].payload.len = 20;
    ev[1].event = (char *)"boot-mr-done";
    return kms_sim_attest(sim, NULL, rd, ev, 2, "", out);
}

struct node_info {
    char *tmp_ca_cert, *tmp_ca_key, *ca_cert;
};

static SSL_CTX *new_identity_ctx(const struct node_info *ni)
{
    struct kms_ra_identity ra;
    SSL_CTX *ctx;

    if (kms_ra_identity_new(ni->tmp_ca_cert, ni->tmp_ca_key, attest_cb, NULL, &ra) < 0)
        return NULL;
    ctx = client_ctx(ra.cert_pem, ra.key_pem);
    kms_ra_identity_clear(&ra);
    return ctx;
}

/* ------------------------------------------------------------------ load phases */

/* GetAppKey requests carry the simulated image's vm_config, as a dstack guest sends its own:
 * kmsd's plain-TDX OS-image check needs its os_image_hash. Built once in main. */
static char req_appkey[512];
static char req_appkey_close[512];

static void build_appkey_requests(void)
{
    char vmc[256], body[400];
    json_t *req;
    char *txt;

    if (kms_sim_vm_config(vmc, sizeof(vmc)) < 0)
        die("simulated vm_config");
    req = json_pack("{s:i,s:s}", "api_version", 1, "vm_config", vmc);
    txt = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (txt == NULL || strlen(txt) >= sizeof(body))
        die("GetAppKey request");
    snprintf(body, sizeof(body), "%s", txt);
    free(txt);
    snprintf(req_appkey, sizeof(req_appkey),
             "POST /prpc/GetAppKey?json HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    snprintf(req_appkey_close, sizeof(req_appkey_close),
             "POST /prpc/GetAppKey?json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
}

static const char req_meta[] = "GET /prpc/GetMeta?json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
static const char req_health[] = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
static const char req_tmpca_close[] = "GET /prpc/GetTempCaCert?json HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                      "Connection: close\r\n\r\n";

struct worker {
    pthread_t th;
    SSL_CTX *ctx;
    unsigned port;
    int keepalive;
    const char *req, *req_close;
    double deadline;
    double *lat;
    size_t n_lat;
    long errors;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct conn c = {-1, NULL};
    const char *req = w->keepalive ? w->req : w->req_close;
    size_t len = strlen(req);

    while (now_s() < w->deadline && w->n_lat < MAX_LAT / 64) {
        double t0 = now_s();
        int st;

        if (c.ssl == NULL && conn_open(w->ctx, w->port, 0, &c) < 0) {
            w->errors++;
            continue;
        }
        st = exchange(&c, req, len, NULL, 0);
        if (st != 200)
            w->errors++;
        if (!w->keepalive || st != 200)
            conn_close(&c);
        if (st == 200)
            w->lat[w->n_lat++] = now_s() - t0;
    }
    conn_close(&c);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

struct result {
    double rps, p50_ms, p99_ms;
    long errors;
};

/* conc workers for secs seconds; ctxs[i % n_ctx] is worker i's identity. */
static struct result run_load(SSL_CTX **ctxs, int n_ctx, unsigned port, int conc, int keepalive,
                              const char *req, const char *req_close)
{
    struct worker w[64];
    static double lat[MAX_LAT];
    size_t n = 0;
    double t0, t;
    struct result r = {0};

    t0 = now_s();
    for (int i = 0; i < conc; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].ctx = ctxs[i % n_ctx];
        w[i].port = port;
        w[i].keepalive = keepalive;
        w[i].req = req;
        w[i].req_close = req_close;
        w[i].deadline = t0 + secs;
        w[i].lat = malloc(sizeof(double) * (MAX_LAT / 64));
        if (w[i].lat == NULL || pthread_create(&w[i].th, NULL, worker_run, &w[i]) != 0)
            exit(1);
    }
    for (int i = 0; i < conc; i++) {
        pthread_join(w[i].th, NULL);
        memcpy(lat + n, w[i].lat, w[i].n_lat * sizeof(double));
        n += w[i].n_lat;
        r.errors += w[i].errors;
        free(w[i].lat);
    }
    t = now_s() - t0;
    if (n > 0) {
        qsort(lat, n, sizeof(double), cmp_double);
        r.rps = (double)n / t;
        r.p50_ms = lat[n / 2] * 1e3;
        r.p99_ms = lat[(n * 99) / 100] * 1e3;
    }
    return r;
}

/* ------------------------------------------------------------------ bare baselines */

static char fixed_resp[8192];
static size_t fixed_len;
static SSL_CTX *bare_ctx;
static size_t appkey_len; /* length of kmsd's GetAppKey answer body */

static void *bare_conn(void *arg)
{
    SSL *ssl = arg;
    char buf[8192];
    size_t have = 0;
    int n;

    if (SSL_accept(ssl) != 1)
        goto out;
    for (;;) {
        char *end;

        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end == NULL) {
            if (have >= sizeof(buf) - 1)
                break;
            n = SSL_read(ssl, buf + have, (int)(sizeof(buf) - 1 - have));
            if (n <= 0)
                break;
            have += (size_t)n;
            continue;
        }
        {
            /* the request body (if any) follows the headers: skip Content-Length bytes */
            size_t hlen = (size_t)(end - buf) + 4, clen = 0, want;
            char *cl;
            int close_after;

            *end = '\0';
            cl = strcasestr(buf, "\r\ncontent-length:");
            if (cl != NULL)
                clen = strtoul(cl + 17, NULL, 10);
            close_after = strcasestr(buf, "\r\nconnection: close") != NULL;
            if (clen > sizeof(buf) - 1 - hlen)
                goto out;
            want = hlen + clen; /* bounded by the check above */
            while (have < want) {
                n = SSL_read(ssl, buf + have, (int)(want - have));
                if (n <= 0)
                    goto out;
                have += (size_t)n;
            }
            if (SSL_write(ssl, fixed_resp, (int)fixed_len) != (int)fixed_len || close_after)
                goto out;
            memmove(buf, buf + want, have - want);
            have -= want;
        }
    }
out:
    close(SSL_get_fd(ssl));
    SSL_free(ssl);
    return NULL;
}

static void bare_openssl_serve(int lfd)
{
    for (;;) {
        int fd = accept(lfd, NULL, NULL), one = 1;
        pthread_t th;
        SSL *ssl;

        if (fd < 0)
            continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        ssl = SSL_new(bare_ctx);
        SSL_set_fd(ssl, fd);
        if (pthread_create(&th, NULL, bare_conn, ssl) != 0) {
            close(fd);
            SSL_free(ssl);
            continue;
        }
        pthread_detach(th);
    }
}

static const char *fixed_body;

static enum MHD_Result bare_mhd_req(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_size, void **con_cls)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload_data;
    if (*con_cls == NULL) {
        *con_cls = conn;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        *upload_size = 0;
        return MHD_YES;
    }
    r = MHD_create_response_from_buffer(strlen(fixed_body), (void *)fixed_body,
                                        MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", "application/json");
    ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* Server chain of the bare servers: a P-256 leaf issued by the node's temp CA. Forks one
 * server; returns its pid. kind 0 = OpenSSL, 1 = libmicrohttpd + GnuTLS. */
static pid_t bare_start(int kind, const struct node_info *ni, const char *body, unsigned port)
{
    EVP_PKEY *key = NULL, *ca_key = NULL;
    X509 *ca = NULL, *cert = NULL;
    struct kms_cert_params p;
    const char *san[] = {"127.0.0.1"};
    char *cert_pem = NULL, *key_pem = NULL;
    pid_t pid;

    memset(&p, 0, sizeof(p));
    p.cn = "bench";
    p.san_dns = san;
    p.n_san = 1;
    p.path_len = -1;
    p.eku_server_auth = 1;
    if (kms_cert_from_pem(ni->tmp_ca_cert, &ca) < 0 ||
        kms_pkey_from_pem(ni->tmp_ca_key, &ca_key) < 0 || kms_p256_generate(&key) < 0 ||
        kms_cert_issue(&p, key, ca_key, ca, &cert) < 0 || kms_cert_to_pem(cert, &cert_pem) < 0 ||
        kms_pkey_to_pem(key, &key_pem) < 0)
        die("bare server certificate");
    fixed_body = body;
    fixed_len = (size_t)snprintf(fixed_resp, sizeof(fixed_resp),
                                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 "Content-Length: %zu\r\n\r\n%s",
                                 strlen(body), body);
    pid = fork();
    if (pid != 0) {
        X509_free(ca);
        X509_free(cert);
        EVP_PKEY_free(key);
        EVP_PKEY_free(ca_key);
        free(cert_pem);
        free(key_pem);
        return pid;
    }
    if (kind == 0) {
        struct sockaddr_in sa;
        int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        X509_STORE *st;

        bare_ctx = SSL_CTX_new(TLS_server_method());
        SSL_CTX_use_certificate(bare_ctx, cert);
        SSL_CTX_use_PrivateKey(bare_ctx, key);
        st = SSL_CTX_get_cert_store(bare_ctx);
        X509_STORE_add_cert(st, ca);
        SSL_CTX_set_verify(bare_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons((uint16_t)port);
        if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 1024) != 0)
            _exit(1);
        bare_openssl_serve(lfd);
    } else {
        struct MHD_Daemon *d = MHD_start_daemon(
            MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_TLS, (uint16_t)port, NULL,
            NULL, bare_mhd_req, NULL, MHD_OPTION_THREAD_POOL_SIZE, 4u, MHD_OPTION_CONNECTION_LIMIT,
            4096u, MHD_OPTION_HTTPS_MEM_KEY, key_pem, MHD_OPTION_HTTPS_MEM_CERT, cert_pem,
            MHD_OPTION_HTTPS_MEM_TRUST, ni->tmp_ca_cert, MHD_OPTION_END);

        if (d == NULL)
            _exit(1);
        for (;;)
            pause();
    }
    _exit(0);
}

/* Waits until a TLS GET / is answered on port (readiness, not a fixed delay). */
static void wait_ready(SSL_CTX *ctx, unsigned port, const char *req)
{
    for (int i = 0; i < 600; i++) {
        struct conn c = {-1, NULL};

        if (conn_open(ctx, port, 0, &c) == 0) {
            int st = exchange(&c, req, strlen(req), NULL, 0);

            conn_close(&c);
            if (st > 0)
                return;
        }
        usleep(50000);
    }
    fprintf(stderr, "bench_load: server on port %u never became ready\n", port);
    exit(1);
}

/* ------------------------------------------------------------------ kmsd */

struct node_run {
    const char *label;
    struct result appkey[2][3]; /* [keepalive][conc 1/8/64] */
    struct result meta, health;
    double cpu_ms_per_flow;
    double flows_per_s;
    long rss_idle_kb, rss_1000_kb, rss_hwm_kb;
    int conns_open;
};

static pid_t kmsd_start(const char *bin, const char *dir, unsigned port)
{
    char data[512], listen[32];
    pid_t pid;

    snprintf(data, sizeof(data), "%s/kms-bench-node-%d-%u", node_root != NULL ? node_root : dir,
             (int)getpid(), port);
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
    pid = fork();
    if (pid == 0) {
        char simdir[512];

        snprintf(simdir, sizeof(simdir), "%s/sim", dir);
        if (freopen("/dev/null", "w", stderr) == NULL)
            _exit(127);
        execl(bin, bin, "--data-dir", data, "--sim-dir", simdir, "--tee", "sim", "--insecure-sim",
              "--listen", listen, "--auto-bootstrap-domain", "127.0.0.1", "--log-level", "error",
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

static char *json_field(const char *body, const char *k)
{
    json_t *j = json_loads(body, 0, NULL);
    const char *v = json_string_value(json_object_get(j, k));
    char *r = v != NULL ? strdup(v) : NULL;

    json_decref(j);
    return r;
}

struct flow_worker {
    pthread_t th;
    SSL_CTX *plain;
    const struct node_info *ni;
    unsigned port;
    int flows;
    int errors;
};

/* Full client flows: GetTempCaCert on a new connection, a fresh identity, GetAppKey over a
 * new RA-TLS connection. */
static void *flow_run(void *arg)
{
    struct flow_worker *w = arg;

    for (int i = 0; i < w->flows; i++) {
        struct conn c = {-1, NULL};
        SSL_CTX *id;
        int st = -1;

        if (conn_open(w->plain, w->port, 0, &c) == 0)
            st = exchange(&c, req_tmpca_close, strlen(req_tmpca_close), NULL, 0);
        conn_close(&c);
        id = st == 200 ? new_identity_ctx(w->ni) : NULL;
        if (id != NULL && conn_open(id, w->port, 0, &c) == 0)
            st = exchange(&c, req_appkey_close, strlen(req_appkey_close), NULL, 0);
        else
            st = -1;
        conn_close(&c);
        SSL_CTX_free(id);
        if (st != 200)
            w->errors++;
    }
    return NULL;
}

static void run_node(const char *bin, const char *dir, struct node_run *nr, SSL_CTX *plain,
                     struct node_info *ni_out, int first)
{
    unsigned port = free_port();
    pid_t pid = kmsd_start(bin, dir, port);
    static char body[16384];
    static SSL_CTX *ids[N_IDENT];
    struct node_info ni;
    struct conn c = {-1, NULL};
    struct conn *many;
    struct flow_worker fw[FLOW_CLIENTS];
    double cpu0, t0;
    int st, errors = 0;
    static const int concs[3] = {1, 8, 64};

    wait_ready(plain, port, req_meta);
    if (conn_open(plain, port, 0, &c) < 0)
        die("connect to kmsd");
    st = exchange(&c, req_tmpca_close, strlen(req_tmpca_close), body, sizeof(body));
    conn_close(&c);
    if (st != 200)
        die("GetTempCaCert");
    ni.tmp_ca_cert = json_field(body, "temp_ca_cert");
    ni.tmp_ca_key = json_field(body, "temp_ca_key");
    ni.ca_cert = json_field(body, "ca_cert");
    for (int i = 0; i < N_IDENT; i++) {
        ids[i] = new_identity_ctx(&ni);
        if (ids[i] == NULL)
            die("RA-TLS identity");
    }
    if (conn_open(ids[0], port, 0, &c) < 0 ||
        exchange(&c, req_appkey_close, strlen(req_appkey_close), body, sizeof(body)) != 200)
        die("GetAppKey");
    conn_close(&c);
    appkey_len = strlen(body);
    nr->rss_idle_kb = proc_kb(pid, "VmRSS:");
    fprintf(stderr, "  [%s] GetAppKey load...\n", nr->label);
    for (int ka = 0; ka < 2; ka++) {
        for (int ci = 0; ci < 3; ci++) {
            nr->appkey[ka][ci] =
                run_load(ids, N_IDENT, port, concs[ci], ka, req_appkey, req_appkey_close);
            errors += (int)nr->appkey[ka][ci].errors;
        }
    }
    fprintf(stderr, "  [%s] GetMeta and /health...\n", nr->label);
    nr->meta = run_load(&plain, 1, port, 8, 1, req_meta, req_meta);
    nr->health = run_load(&plain, 1, port, 8, 1, req_health, req_health);
    errors += (int)(nr->meta.errors + nr->health.errors);

    fprintf(stderr, "  [%s] full flows...\n", nr->label);
    cpu0 = proc_cpu_s(pid);
    t0 = now_s();
    for (int i = 0; i < FLOW_CLIENTS; i++) {
        memset(&fw[i], 0, sizeof(fw[i]));
        fw[i].plain = plain;
        fw[i].ni = &ni;
        fw[i].port = port;
        fw[i].flows = FLOWS / FLOW_CLIENTS;
        if (pthread_create(&fw[i].th, NULL, flow_run, &fw[i]) != 0)
            exit(1);
    }
    for (int i = 0; i < FLOW_CLIENTS; i++) {
        pthread_join(fw[i].th, NULL);
        errors += fw[i].errors;
    }
    nr->flows_per_s = FLOWS / (now_s() - t0);
    nr->cpu_ms_per_flow = (proc_cpu_s(pid) - cpu0) * 1e3 / FLOWS;

    fprintf(stderr, "  [%s] %d concurrent connections...\n", nr->label, RSS_CONNS);
    many = calloc(RSS_CONNS, sizeof(*many));
    nr->conns_open = 0;
    for (int i = 0; i < RSS_CONNS; i++) {
        /* 32 source addresses: the node admits at most one eighth of its slots per address */
        many[i].fd = -1;
        if (conn_open(plain, port, 0x7f000002u + (uint32_t)(i % 32), &many[i]) == 0 &&
            exchange(&many[i], req_meta, strlen(req_meta), NULL, 0) == 200)
            nr->conns_open++;
    }
    nr->rss_1000_kb = proc_kb(pid, "VmRSS:");
    nr->rss_hwm_kb = proc_kb(pid, "VmHWM:");
    for (int i = 0; i < RSS_CONNS; i++)
        conn_close(&many[i]);
    free(many);
    if (errors > 0)
        fprintf(stderr, "  [%s] %d failed requests (not counted in the rates)\n", nr->label,
                errors);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    {
        char cmd[640];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s/kms-bench-node-%d-%u'",
                 node_root != NULL ? node_root : dir, (int)getpid(), port);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove the node's data directory\n");
    }
    if (first) {
        *ni_out = ni;
    } else {
        free(ni.tmp_ca_cert);
        free(ni.tmp_ca_key);
        free(ni.ca_cert);
    }
    for (int i = 0; i < N_IDENT; i++)
        SSL_CTX_free(ids[i]);
}

/* ------------------------------------------------------------------ TDX verify vs ECDSA */

static void tdx_vs_ecdsa(double *t_cached, double *t_ecdsa)
{
    char dir[] = "/tmp/kms-bench-tdx-XXXXXX";
    struct kms_sim *s = NULL;
    struct kms_attestation *att[16];
    struct kms_collateral coll;
    struct kms_sim_collateral_opts co = {0};
    struct kms_collateral_source *cac = NULL;
    struct kms_attest_ctx *ctx;
    struct kms_verified v;
    EVP_PKEY *k = NULL;
    uint8_t msg[632], sig[80];
    size_t sig_len = sizeof(sig);
    EVP_MD_CTX *m;
    long iters = 2000;
    double t = now_s();
    char cmd[96];

    if (mkdtemp(dir) == NULL || kms_sim_open(dir, &s) < 0)
        die("simulation directory");
    for (int i = 0; i < 16; i++) {
        uint8_t rd[64];

        memset(rd, i, sizeof(rd));
        if (kms_sim_attest(s, NULL, rd, NULL, 0, "", &att[i]) < 0)
            die("kms_sim_attest");
    }
    if (kms_sim_collateral(dir, &co, &coll) < 0 || kms_collateral_source_new(NULL, &cac) < 0 ||
        kms_collateral_source_add(cac, &coll) < 0)
        die("collateral");
    ctx = kms_attest_ctx_new();
    if (ctx == NULL || kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, kms_sim_root(s), 1) < 0)
        die("ctx");
    kms_attest_ctx_set_collateral_source(ctx, cac);
    for (long i = 0; i < iters + 16; i++) {
        if (i == 16)
            t = now_s();
        if (kms_attest_verify(ctx, att[i % 16], &v) < 0)
            die("verification");
        kms_verified_free(&v);
    }
    *t_cached = (now_s() - t) / (double)iters;

    /* The ECDSA work of one quote: the quote signature and the QE report signature, each a
     * P-256 verification of a SHA-256 digest with a ready key. */
    memset(msg, 7, sizeof(msg));
    m = EVP_MD_CTX_new();
    if (kms_p256_generate(&k) < 0 || EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, k) != 1 ||
        EVP_DigestSign(m, sig, &sig_len, msg, sizeof(msg)) != 1)
        die("ECDSA setup");
    t = now_s();
    for (long i = 0; i < 2 * iters; i++) {
        EVP_MD_CTX_reset(m);
        if (EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, k) != 1 ||
            EVP_DigestVerify(m, sig, sig_len, msg, sizeof(msg)) != 1)
            die("ECDSA verify");
    }
    *t_ecdsa = (now_s() - t) / (double)iters;
    EVP_MD_CTX_free(m);
    EVP_PKEY_free(k);
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(cac);
    kms_collateral_clear(&coll);
    for (int i = 0; i < 16; i++)
        kms_att_free(att[i]);
    kms_sim_free(s);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

/* ------------------------------------------------------------------ report */

static const char *mode_name[2] = {"new conn", "keep-alive"};

static void print_row(const char *what, const char *mode, int conc, const struct result *r,
                      const struct result *ref, const char *ref_name)
{
    printf("| %-22s | %-10s | %3d | %8.0f | %7.2f | %7.2f |", what, mode, conc, r->rps, r->p50_ms,
           r->p99_ms);
    if (ref != NULL && ref->rps > 0)
        printf(" %.2fx %s |\n", r->rps / ref->rps, ref_name);
    else
        printf("  |\n");
}

int main(int argc, char **argv)
{
    char dir[] = "/tmp/kms-bench-load-XXXXXX", cmd[96];
    const char *after = NULL, *before = NULL;
    struct node_run nr[2];
    struct result bare[2][2][3]; /* [kind][keepalive][conc] */
    struct node_info ni;
    SSL_CTX *plain, *ids[N_IDENT];
    static const int concs[3] = {1, 8, 64};
    static const char *bare_name[2] = {"bare mTLS OpenSSL", "bare mTLS MHD+GnuTLS"};
    char *body;
    int n_runs;
    double t_cached, t_ecdsa;
    struct rlimit rl;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--secs") == 0 && i + 1 < argc)
            secs = atof(argv[++i]);
        else if (strcmp(argv[i], "--before") == 0 && i + 1 < argc)
            before = argv[++i];
        else if (strcmp(argv[i], "--node-root") == 0 && i + 1 < argc)
            node_root = argv[++i];
        else
            after = argv[i];
    }
    if (after == NULL || secs <= 0) {
        fprintf(stderr, "usage: bench_load [--secs S] [--before KMSD_BEFORE] [--node-root DIR] "
                        "KMSD\n");
        return 2;
    }
    build_appkey_requests();
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (mkdtemp(dir) == NULL)
        return 1;
    {
        char simdir[96];

        snprintf(simdir, sizeof(simdir), "%s/sim", dir);
        if (kms_sim_open(simdir, &sim) < 0)
            die("simulation directory");
    }
    plain = client_ctx(NULL, NULL);
    memset(nr, 0, sizeof(nr));
    n_runs = before != NULL ? 2 : 1;
    nr[0].label = "kmsd";
    nr[1].label = "kmsd before";
    fprintf(stderr, "bench_load: %.1f s per load phase\n", secs);
    run_node(after, dir, &nr[0], plain, &ni, 1);
    if (before != NULL)
        run_node(before, dir, &nr[1], plain, NULL, 0);

    /* Bare servers answer a body as long as GetAppKey's answer. */
    if (appkey_len == 0 || appkey_len > 4096)
        appkey_len = 2048;
    body = malloc(appkey_len + 1);
    if (body == NULL)
        return 1;
    memset(body, 'x', appkey_len);
    body[appkey_len] = '\0';
    for (int i = 0; i < N_IDENT; i++) {
        ids[i] = new_identity_ctx(&ni);
        if (ids[i] == NULL)
            die("RA-TLS identity");
    }
    for (int kind = 0; kind < 2; kind++) {
        unsigned port = free_port();
        pid_t pid = bare_start(kind, &ni, body, port);

        fprintf(stderr, "  [%s] load...\n", bare_name[kind]);
        wait_ready(ids[0], port, req_meta);
        for (int ka = 0; ka < 2; ka++)
            for (int ci = 0; ci < 3; ci++)
                bare[kind][ka][ci] =
                    run_load(ids, N_IDENT, port, concs[ci], ka, req_appkey, req_appkey_close);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    fprintf(stderr, "  TDX verification vs ECDSA...\n");
    tdx_vs_ecdsa(&t_cached, &t_ecdsa);

    printf("\nbench_load: %.1f s per phase, %d RA-TLS identities, %ld online CPUs\n\n", secs,
           N_IDENT, sysconf(_SC_NPROCESSORS_ONLN));
    printf("| server                 | mode       | c   |    req/s | p50 ms  | p99 ms  | "
           "ratio |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (int r = 0; r < n_runs; r++) {
        char what[64];

        snprintf(what, sizeof(what), "%s GetAppKey", nr[r].label);
        for (int ka = 0; ka < 2; ka++)
            for (int ci = 0; ci < 3; ci++)
                print_row(what, mode_name[ka], concs[ci], &nr[r].appkey[ka][ci], &bare[1][ka][ci],
                          "of MHD+GnuTLS");
    }
    for (int kind = 0; kind < 2; kind++)
        for (int ka = 0; ka < 2; ka++)
            for (int ci = 0; ci < 3; ci++)
                print_row(bare_name[kind], mode_name[ka], concs[ci], &bare[kind][ka][ci],
                          kind == 1 ? &bare[0][ka][ci] : NULL, "of OpenSSL");
    for (int r = 0; r < n_runs; r++) {
        char what[64];

        snprintf(what, sizeof(what), "%s GetMeta", nr[r].label);
        print_row(what, "keep-alive", 8, &nr[r].meta, &nr[r].health, "of /health");
        snprintf(what, sizeof(what), "%s /health", nr[r].label);
        print_row(what, "keep-alive", 8, &nr[r].health, NULL, "");
    }
    printf("\n| measure | ");
    for (int r = 0; r < n_runs; r++)
        printf("%s | ", nr[r].label);
    printf("target |\n|---|");
    for (int r = 0; r < n_runs; r++)
        printf("---|");
    printf("---|\n");
    printf("| new-conn GetAppKey / MHD+GnuTLS baseline, c=8 | ");
    for (int r = 0; r < n_runs; r++)
        printf("%.2f | ", nr[r].appkey[0][1].rps / bare[1][0][1].rps);
    printf(">= 0.5 |\n| new-conn GetAppKey / OpenSSL baseline, c=8 | ");
    for (int r = 0; r < n_runs; r++)
        printf("%.2f | ", nr[r].appkey[0][1].rps / bare[0][0][1].rps);
    printf(">= 0.5 |\n| keep-alive GetAppKey req/s, best c | ");
    for (int r = 0; r < n_runs; r++) {
        double b = 0;

        for (int ci = 0; ci < 3; ci++)
            b = nr[r].appkey[1][ci].rps > b ? nr[r].appkey[1][ci].rps : b;
        printf("%.0f | ", b);
    }
    printf(">= 3000 |\n| keep-alive GetMeta / /health | ");
    for (int r = 0; r < n_runs; r++)
        printf("%.2f | ", nr[r].meta.rps / nr[r].health.rps);
    printf(">= 0.5 |\n| server CPU per full flow (%d flows, %d clients) | ", FLOWS, FLOW_CLIENTS);
    for (int r = 0; r < n_runs; r++)
        printf("%.2f ms (%.0f flows/s) | ", nr[r].cpu_ms_per_flow, nr[r].flows_per_s);
    printf("<= 2 ms |\n| RSS idle / with %d connections (open) | ", RSS_CONNS);
    for (int r = 0; r < n_runs; r++)
        printf("%.1f / %.1f MiB (%d) | ", nr[r].rss_idle_kb / 1024.0, nr[r].rss_1000_kb / 1024.0,
               nr[r].conns_open);
    printf("<= 64 MiB |\n| cached TDX verify / its ECDSA work (2 P-256 verifies) | %.0f us / %.0f "
           "us = %.2f |",
           t_cached * 1e6, t_ecdsa * 1e6, t_cached / t_ecdsa);
    for (int r = 1; r < n_runs; r++)
        printf(" |");
    printf(" <= 2 |\n");
    if (n_runs == 2) {
        printf("\nafter/before: keep-alive GetAppKey c=8 %.2fx, new-conn c=8 %.2fx, GetMeta %.2fx, "
               "CPU per flow %.2fx\n",
               nr[0].appkey[1][1].rps / nr[1].appkey[1][1].rps,
               nr[0].appkey[0][1].rps / nr[1].appkey[0][1].rps, nr[0].meta.rps / nr[1].meta.rps,
               nr[0].cpu_ms_per_flow / nr[1].cpu_ms_per_flow);
    }
    for (int i = 0; i < N_IDENT; i++)
        SSL_CTX_free(ids[i]);
    SSL_CTX_free(plain);
    free(body);
    kms_sim_free(sim);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return 0;
}
