/*
 * Round trips of one `kmsctl get-keys` flow (issue 13 item 5), counted by a latency-adding
 * loopback TCP proxy between kmsctl and a sim kmsd: at most 6 at 150 ms round-trip time
 * (connection reuse, TLS 1.3, no redundant calls).
 *
 * The proxy delays every chunk by LAT_MS in each direction (and a new connection's first bytes
 * by one more round trip, the TCP handshake a real network costs), so the client meets real
 * latency. It counts the critical path logically, not by the clock: each chunk gets a depth in
 * half trips, 1 + the deepest chunk it may depend on (client to server: anything the client had
 * been handed, on any connection, before sending, and its connection's SYN-ACK; server to
 * client: what the server had been handed on that connection). Round trips = (deepest + 1) / 2.
 * A single pRPC call over a fresh connection is checked to count exactly 3 (TCP, TLS 1.3, the
 * request), which proves the counter and that the node speaks TLS 1.3.
 *
 * Also the node's verified-caller cache (keep-alive clients resend their certificate with each
 * request): two GetAppKey calls with one RA-TLS identity on one kept-alive connection give the
 * same keys; a certificate from a foreign CA is refused with the same error on both calls (a
 * refusal is never kept).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "attest/sim.h"
#include "common/crypto/crypto.h"
#include "kmstest_proc.h"
#include "replication/replication.h"
#include "test.h"

#define LAT_MS 75 /* each way: 150 ms round trip */
#define MAX_CONNS 32

struct chunk {
    struct chunk *next;
    size_t len;     /* 0: end of stream */
    double due;     /* when to hand it on */
    unsigned depth; /* half trips on its critical path */
    char data[];
};

struct pipe_dir {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct chunk *head, *tail;
};

struct pconn {
    int cfd, sfd;
    double accept_t;
    unsigned synack;      /* depth of this connection's SYN-ACK */
    unsigned server_seen; /* deepest chunk handed to the server on this connection */
    int first_sent;       /* the first client bytes were scheduled */
    struct pipe_dir c2s, s2c;
    pthread_t th[4];
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned g_client_seen; /* deepest chunk handed to the client, any connection */
static unsigned g_max_depth;
static unsigned g_conns_total;
static struct pconn *g_conns[MAX_CONNS];
static int g_nconns;
static int g_stop;
static int g_lfd;
static unsigned g_upstream;

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void push(struct pipe_dir *d, struct chunk *c)
{
    pthread_mutex_lock(&d->mu);
    c->next = NULL;
    if (d->tail != NULL)
        d->tail->next = c;
    else
        d->head = c;
    d->tail = c;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static struct chunk *pop(struct pipe_dir *d)
{
    struct chunk *c;

    pthread_mutex_lock(&d->mu);
    while (d->head == NULL)
        pthread_cond_wait(&d->cv, &d->mu);
    c = d->head;
    d->head = c->next;
    if (d->head == NULL)
        d->tail = NULL;
    pthread_mutex_unlock(&d->mu);
    return c;
}

static void sleep_until(double t)
{
    double d = t - now_s();

    if (d > 0) {
        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};

        nanosleep(&ts, NULL);
    }
}

/* Reads from the client: depth after all the client had been handed and the SYN-ACK. */
static void *read_c2s(void *arg)
{
    struct pconn *p = arg;

    for (;;) {
        struct chunk *c = malloc(sizeof(*c) + 16384);
        ssize_t n;
        double t;

        if (c == NULL)
            break;
        n = read(p->cfd, c->data, 16384);
        t = now_s();
        c->len = n > 0 ? (size_t)n : 0;
        pthread_mutex_lock(&g_mu);
        c->depth = (g_client_seen > p->synack ? g_client_seen : p->synack) + 1;
        pthread_mutex_unlock(&g_mu);
        c->due = t + LAT_MS / 1e3;
        if (!p->first_sent) {
            /* the TCP handshake: no client bytes leave before the SYN-ACK is back */
            double earliest = p->accept_t + 3 * LAT_MS / 1e3;

            if (c->due < earliest)
                c->due = earliest;
            p->first_sent = 1;
        }
        push(&p->c2s, c);
        if (c->len == 0)
            break;
    }
    return NULL;
}

/* Reads from the server: one deeper than what the server had been handed on the connection. */
static void *read_s2c(void *arg)
{
    struct pconn *p = arg;

    for (;;) {
        struct chunk *c = malloc(sizeof(*c) + 16384);
        ssize_t n;

        if (c == NULL)
            break;
        n = read(p->sfd, c->data, 16384);
        c->len = n > 0 ? (size_t)n : 0;
        pthread_mutex_lock(&g_mu);
        c->depth = p->server_seen + 1;
        pthread_mutex_unlock(&g_mu);
        c->due = now_s() + LAT_MS / 1e3;
        push(&p->s2c, c);
        if (c->len == 0)
            break;
    }
    return NULL;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void *write_c2s(void *arg)
{
    struct pconn *p = arg;

    for (;;) {
        struct chunk *c = pop(&p->c2s);
        size_t len = c->len;

        sleep_until(c->due);
        if (len == 0) {
            shutdown(p->sfd, SHUT_WR);
        } else {
            pthread_mutex_lock(&g_mu);
            if (c->depth > p->server_seen)
                p->server_seen = c->depth;
            pthread_mutex_unlock(&g_mu);
            write_all(p->sfd, c->data, len);
        }
        free(c);
        if (len == 0)
            break;
    }
    return NULL;
}

static void *write_s2c(void *arg)
{
    struct pconn *p = arg;

    for (;;) {
        struct chunk *c = pop(&p->s2c);
        size_t len = c->len;

        sleep_until(c->due);
        if (len == 0) {
            shutdown(p->cfd, SHUT_WR);
        } else {
            pthread_mutex_lock(&g_mu);
            if (c->depth > g_client_seen)
                g_client_seen = c->depth;
            if (c->depth > g_max_depth)
                g_max_depth = c->depth;
            pthread_mutex_unlock(&g_mu);
            write_all(p->cfd, c->data, len);
        }
        free(c);
        if (len == 0)
            break;
    }
    return NULL;
}

static int connect_upstream(void)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)g_upstream);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void *accept_loop(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&g_stop, __ATOMIC_SEQ_CST)) {
        struct pollfd pfd = {g_lfd, POLLIN, 0};
        struct pconn *p;
        int cfd, one = 1;

        if (poll(&pfd, 1, 50) <= 0)
            continue;
        cfd = accept(g_lfd, NULL, NULL);
        if (cfd < 0)
            continue;
        if (g_nconns >= MAX_CONNS) {
            close(cfd);
            continue;
        }
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        p = calloc(1, sizeof(*p));
        if (p == NULL) {
            close(cfd);
            continue;
        }
        p->cfd = cfd;
        p->sfd = connect_upstream();
        p->accept_t = now_s();
        pthread_mutex_init(&p->c2s.mu, NULL);
        pthread_cond_init(&p->c2s.cv, NULL);
        pthread_mutex_init(&p->s2c.mu, NULL);
        pthread_cond_init(&p->s2c.cv, NULL);
        pthread_mutex_lock(&g_mu);
        /* SYN after what the client had seen, SYN-ACK one half trip later */
        p->synack = g_client_seen + 2;
        g_conns_total++;
        pthread_mutex_unlock(&g_mu);
        g_conns[g_nconns++] = p;
        pthread_create(&p->th[0], NULL, read_c2s, p);
        pthread_create(&p->th[1], NULL, write_c2s, p);
        pthread_create(&p->th[2], NULL, read_s2c, p);
        pthread_create(&p->th[3], NULL, write_s2c, p);
    }
    return NULL;
}

static void counter_reset(void)
{
    pthread_mutex_lock(&g_mu);
    g_client_seen = 0;
    g_max_depth = 0;
    g_conns_total = 0;
    pthread_mutex_unlock(&g_mu);
}

static unsigned round_trips(void)
{
    unsigned d;

    pthread_mutex_lock(&g_mu);
    d = g_max_depth;
    pthread_mutex_unlock(&g_mu);
    return (d + 1) / 2;
}

/* Joins and frees the proxied connections once both ends have closed them. */
static void conns_reap(void)
{
    for (int i = 0; i < g_nconns; i++) {
        struct pconn *p = g_conns[i];

        /* the client has exited: its side reads EOF; close the server side so it ends too */
        for (int t = 0; t < 4; t++) {
            if (t == 2)
                shutdown(p->sfd, SHUT_RDWR);
            pthread_join(p->th[t], NULL);
        }
        close(p->cfd);
        if (p->sfd >= 0)
            close(p->sfd);
        pthread_mutex_destroy(&p->c2s.mu);
        pthread_cond_destroy(&p->c2s.cv);
        pthread_mutex_destroy(&p->s2c.mu);
        pthread_cond_destroy(&p->s2c.cv);
        free(p);
    }
    g_nconns = 0;
}

static int proxy_listen(unsigned *port)
{
    struct sockaddr_in sa;
    socklen_t l = sizeof(sa);

    g_lfd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (g_lfd < 0 || bind(g_lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(g_lfd, 64) != 0 || getsockname(g_lfd, (struct sockaddr *)&sa, &l) != 0)
        return -1;
    *port = ntohs(sa.sin_port);
    return 0;
}

static int attest_cb(void *arg, const uint8_t rd[64], struct kms_attestation **out)
{
    struct kms_runtime_event ev[2];
    uint8_t app_id[20];

    memset(app_id, 0x5a, sizeof(app_id));
    memset(ev, 0, sizeof(ev));
    ev[0].event = (char *)"app-id";
    ev[0].payload.p = app_id;
    ev[0].payload.len = 20;
    ev[1].event = (char *)"boot-mr-done";
    return kms_sim_attest(arg, NULL, rd, ev, 2, "", out);
}

/* Two GetAppKey calls with identity ra on one session; returns the two rcs, keys in k1/k2. */
static void two_calls(const char *url, const struct kms_ra_identity *ra, int rc[2], json_t *k[2])
{
    struct kms_rpc_session *sess = NULL;
    struct kms_rpc_opts o;
    char vmc[256], *body;
    json_t *req;

    memset(&o, 0, sizeof(o));
    o.url = url;
    o.client_cert_pem = ra->cert_pem;
    o.client_key_pem = ra->key_pem;
    CHECK_OK(kms_rpc_session_new(&sess));
    o.session = sess;
    rc[0] = rc[1] = -1;
    k[0] = k[1] = NULL;
    /* the simulated image's vm_config, so kmsd's plain-TDX image check passes */
    CHECK_OK(kms_sim_vm_config(vmc, sizeof(vmc)));
    req = json_pack("{s:i,s:s}", "api_version", 1, "vm_config", vmc);
    body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    CHECK(body != NULL);
    for (int i = 0; i < 2 && body != NULL; i++) {
        k[i] = NULL;
        rc[i] = kms_rpc_call(&o, "GetAppKey", body, &k[i], NULL);
        if (rc[i] < 0)
            CHECK_DETAIL("not issued by this KMS's temp CA");
    }
    free(body);
    kms_rpc_session_free(sess);
}

static void test_caller_cache(const char *url, const char *sim_dir)
{
    struct kms_sim *sim = NULL;
    struct kms_ra_identity ra, bad;
    json_t *tmp = NULL, *k[2];
    EVP_PKEY *ca_key = NULL;
    X509 *ca = NULL;
    struct kms_cert_params p;
    char *ca_pem = NULL, *ca_key_pem = NULL;
    int rc[2];

    memset(&ra, 0, sizeof(ra));
    memset(&bad, 0, sizeof(bad));
    CHECK_OK(kms_sim_open(sim_dir, &sim));
    CHECK_OK(kmstest_call(url, "GetTempCaCert", NULL, &tmp));
    CHECK_OK(kms_ra_identity_new(json_string_value(json_object_get(tmp, "temp_ca_cert")),
                                 json_string_value(json_object_get(tmp, "temp_ca_key")), attest_cb,
                                 sim, &ra));
    two_calls(url, &ra, rc, k);
    CHECK(rc[0] == 0 && rc[1] == 0);
    CHECK(json_is_string(json_object_get(k[0], "disk_crypt_key")) &&
          json_equal(json_object_get(k[0], "disk_crypt_key"),
                     json_object_get(k[1], "disk_crypt_key")));
    json_decref(k[0]);
    json_decref(k[1]);

    /* the same attestation shape under a CA this node never issued */
    memset(&p, 0, sizeof(p));
    p.cn = "foreign CA";
    p.is_ca = 1;
    p.path_len = -1;
    CHECK_OK(kms_p256_generate(&ca_key));
    CHECK_OK(kms_cert_issue(&p, ca_key, ca_key, NULL, &ca));
    CHECK_OK(kms_cert_to_pem(ca, &ca_pem));
    CHECK_OK(kms_pkey_to_pem(ca_key, &ca_key_pem));
    CHECK_OK(kms_ra_identity_new(ca_pem, ca_key_pem, attest_cb, sim, &bad));
    two_calls(url, &bad, rc, k);
    CHECK(rc[0] == KMS_ERR_REPL_RPC && rc[1] == KMS_ERR_REPL_RPC);
    json_decref(k[0]);
    json_decref(k[1]);

    kms_ra_identity_clear(&ra);
    kms_ra_identity_clear(&bad);
    free(ca_pem);
    if (ca_key_pem != NULL)
        kms_free_secret(ca_key_pem, strlen(ca_key_pem));
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    json_decref(tmp);
    kms_sim_free(sim);
}

int main(void)
{
    char tmpl[] = "/tmp/kms-rtt-XXXXXX", sim[64], url[64], purl[64], out[128], cmd[1024];
    const char *extra[] = {"--auto-bootstrap-domain", "127.0.0.1", NULL};
    unsigned port = kmstest_free_port(), pport = 0, rt;
    pthread_t acc;
    double t0;
    pid_t pid;

    if (getenv("KMS_BIN_DIR") == NULL || mkdtemp(tmpl) == NULL)
        return 1;
    snprintf(sim, sizeof(sim), "%s/sim", tmpl);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    pid = kmstest_kmsd_start(tmpl, "rtt", sim, port, extra);
    CHECK_OK(kmstest_wait_serving(url));
    g_upstream = port;
    CHECK(proxy_listen(&pport) == 0);
    pthread_create(&acc, NULL, accept_loop, NULL);
    snprintf(purl, sizeof(purl), "https://127.0.0.1:%u", pport);

    /* The counter: one call on a fresh connection is TCP + TLS 1.3 + the request. */
    counter_reset();
    CHECK_OK(kmstest_call0(purl, "GetMeta", NULL));
    rt = round_trips();
    printf("one GetMeta call: %u round trips\n", rt);
    CHECK(rt == 3);
    conns_reap();

    counter_reset();
    snprintf(out, sizeof(out), "%s/app_keys.json", tmpl);
    snprintf(cmd, sizeof(cmd),
             "%s/cli/kmsctl get-keys --kms %s --app-id %s --out %s --tee sim --insecure-sim "
             "--sim-dir %s --proxy '' --timeout-ms 30000 2>%s/get-keys.log",
             getenv("KMS_BIN_DIR"), purl, "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3", out, sim,
             tmpl);
    t0 = now_s();
    CHECK(system(cmd) == 0);
    rt = round_trips();
    printf("kmsctl get-keys: %u round trips at %d ms RTT over %u connections (%.2f s)\n", rt,
           2 * LAT_MS, g_conns_total, now_s() - t0);
    CHECK(access(out, F_OK) == 0);
    CHECK(rt > 0 && rt <= 6);
    conns_reap();

    test_caller_cache(url, sim);

    __atomic_store_n(&g_stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(acc, NULL);
    close(g_lfd);
    kmstest_kmsd_stop(pid);
    kmstest_tmp_finish(tmpl, kms_test_failures);
    printf("%s\n", kms_test_failures == 0 ? "PASS" : "FAIL");
    return kms_test_failures == 0 ? 0 : 1;
}
