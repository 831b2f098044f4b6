#include "node/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <openssl/rand.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/version.h"
#include "node/proto.h"

/* ---- connection management ----
 *
 * libmicrohttpd's own limits are a total, a per-IP count and an idle timeout that every byte
 * resets, so clients that trickle bytes (or just hold TCP connections) can fill every slot.
 * Here each connection is tracked from accept (MHD_OPTION_NOTIFY_CONNECTION) to close, with the
 * time it entered its current stage; a timer thread closes connections past their stage's
 * deadline (TLS handshake + request headers: KMS_HTTP_HEADER_TIMEOUT_MS, however slowly the
 * bytes come), and when the table is full a new connection evicts the oldest connection that is
 * waiting for request headers from the source address holding the most connections. A
 * connection is closed with shutdown(): MHD then sees EOF and cleans it up in its own thread;
 * the entry (and so the fd) stays valid until MHD's CLOSED notification, which MHD sends before
 * close(), under the same lock. */

enum conn_stage {
    ST_HEADERS = 0, /* TLS handshake and request headers (or idle between requests) */
    ST_BODY,        /* headers complete, the request body is arriving */
    ST_HANDLING,    /* the handler runs or the response is being sent: never cut */
};

struct ip_ent {
    struct ip_ent *next; /* hash chain */
    uint8_t addr[16];    /* IPv4 as ::ffff:a.b.c.d */
    unsigned live;       /* connections not yet shut down by us */
    unsigned refs;       /* entries pointing here */
};

struct conn_ent {
    struct conn_ent *prev, *next; /* accept order, oldest first */
    struct ip_ent *ip;
    int fd;
    enum conn_stage stage;
    uint64_t stage_ms; /* when the current stage began */
    int served;        /* completed a request (so now idle keep-alive) */
    int doomed;        /* shut down by us; MHD closes it */
};

#define IP_BUCKETS 1024u

struct kms_http_server {
    struct MHD_Daemon *daemon;
    kms_http_handler handler;
    void *arg;
    char *key_pem;
    char *cert_pem;
    char *ca_pem;
    char name[80]; /* "https 127.0.0.1:8443", for logs */
    /* connection table, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int mu_ok;
    struct conn_ent *head, *tail;
    unsigned live;
    unsigned max_conns;
    unsigned per_ip;
    struct ip_ent *ips[IP_BUCKETS];
    /* deadline timer */
    pthread_t timer;
    int timer_ok;
    int timer_stop;
};

/* Per-request state, from the request line (uri_log_cb) to NOTIFY_COMPLETED. */
struct req_ctx {
    struct kms_buf body;
    int too_big;
    int started;         /* the handler saw the complete headers */
    const char *raw_uri; /* the request target as received (MHD's buffer) */
    size_t raw_len;      /* its strlen: shorter than the target when it holds a NUL */
    int has_pct00;       /* "%00" in the target */
    void (*on_sent)(void *arg);
    void *on_sent_arg;
    char req_id[KMS_LOG_REQUEST_ID_MAX + 1]; /* set when the headers are complete */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- limits sized to the file-descriptor limit ---- */

static pthread_once_t limits_once = PTHREAD_ONCE_INIT;
static unsigned limits_max_conns = 64;

/* Raises the soft RLIMIT_NOFILE to the hard one, then gives each listener half of what is left
 * after KMS_HTTP_FD_RESERVE (the keystore, outgoing RPCs, logs), capped. */
static void limits_init(void)
{
    struct rlimit rl;
    rlim_t cur = 1024;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        cur = rl.rlim_cur;
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < rl.rlim_max) {
            struct rlimit want = rl;

            want.rlim_cur = rl.rlim_max == RLIM_INFINITY ? (rlim_t)1 << 20 : rl.rlim_max;
            if (setrlimit(RLIMIT_NOFILE, &want) == 0)
                cur = want.rlim_cur;
        }
    }
    if (cur == RLIM_INFINITY || cur > (rlim_t)1 << 20)
        cur = (rlim_t)1 << 20;
    cur = cur > KMS_HTTP_FD_RESERVE ? (cur - KMS_HTTP_FD_RESERVE) / 2 : 0;
    if (cur > KMS_HTTP_MAX_CONNECTIONS)
        cur = KMS_HTTP_MAX_CONNECTIONS;
    if (cur < 16)
        cur = 16;
    limits_max_conns = (unsigned)cur;
}

/* ---- the connection table (s->mu held unless said otherwise) ---- */

static void addr_key(const struct sockaddr *sa, uint8_t key[16])
{
    memset(key, 0, 16);
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

        key[10] = 0xff;
        key[11] = 0xff;
        memcpy(key + 12, &in->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;

        memcpy(key, &in6->sin6_addr, 16);
    }
}

static void addr_text(const uint8_t key[16], char *out, size_t outlen)
{
    static const uint8_t v4[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (memcmp(key, v4, 12) == 0)
        inet_ntop(AF_INET, key + 12, out, (socklen_t)outlen);
    else
        inet_ntop(AF_INET6, key, out, (socklen_t)outlen);
}

static struct ip_ent **ip_slot(struct kms_http_server *s, const uint8_t key[16])
{
    uint32_t h = 2166136261u;
    struct ip_ent **pp;

    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    pp = &s->ips[h & (IP_BUCKETS - 1)];
    while (*pp != NULL && memcmp((*pp)->addr, key, 16) != 0)
        pp = &(*pp)->next;
    return pp;
}

static unsigned ip_live(struct kms_http_server *s, const uint8_t key[16])
{
    struct ip_ent **pp = ip_slot(s, key);

    return *pp != NULL ? (*pp)->live : 0;
}

/* Shuts a connection down (MHD closes it) and stops counting it. */
static void conn_doom(struct kms_http_server *s, struct conn_ent *e, const char *why)
{
    char ip[INET6_ADDRSTRLEN];

    if (e->doomed)
        return;
    e->doomed = 1;
    e->ip->live--;
    s->live--;
    (void)shutdown(e->fd, SHUT_RDWR);
    addr_text(e->ip->addr, ip, sizeof(ip));
    kms_log_limited(KMS_LOG_WARN, why, "%s: closed a connection from %s: %s", s->name, ip, why);
}

/* The oldest connection waiting for request headers from the address that holds the most
 * connections (a client with few connections is the last to lose one), or NULL. */
static struct conn_ent *conn_victim(struct kms_http_server *s)
{
    struct conn_ent *victim = NULL;
    unsigned best = 0;

    for (struct conn_ent *e = s->head; e != NULL; e = e->next) {
        if (e->doomed || e->stage != ST_HEADERS)
            continue;
        if (e->ip->live > best) {
            best = e->ip->live;
            victim = e;
        }
    }
    return victim;
}

static void conn_add(struct kms_http_server *s, struct MHD_Connection *conn, void **socket_ctx)
{
    const union MHD_ConnectionInfo *fdi =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *ai =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    struct conn_ent *e = calloc(1, sizeof(*e));
    struct ip_ent **pp;
    uint8_t key[16];

    if (e == NULL || fdi == NULL) {
        /* untracked: close it rather than let it escape the limits */
        if (fdi != NULL)
            (void)shutdown(fdi->connect_fd, SHUT_RDWR);
        free(e);
        return;
    }
    addr_key(ai != NULL ? ai->client_addr : NULL, key);
    pthread_mutex_lock(&s->mu);
    pp = ip_slot(s, key);
    if (*pp == NULL) {
        *pp = calloc(1, sizeof(**pp));
        if (*pp == NULL) {
            pthread_mutex_unlock(&s->mu);
            (void)shutdown(fdi->connect_fd, SHUT_RDWR);
            free(e);
            return;
        }
        memcpy((*pp)->addr, key, 16);
    }
    e->ip = *pp;
    e->ip->refs++;
    e->ip->live++;
    e->fd = fdi->connect_fd;
    e->stage = ST_HEADERS;
    e->stage_ms = mono_ms();
    e->prev = s->tail;
    if (s->tail != NULL)
        s->tail->next = e;
    else
        s->head = e;
    s->tail = e;
    s->live++;
    *socket_ctx = e;
    if (e->ip->live > s->per_ip) {
        conn_doom(s, e, "too many connections from this address");
    } else if (s->live > s->max_conns) {
        struct conn_ent *v = conn_victim(s);

        if (v != NULL)
            conn_doom(s, v,
                      "connection table full: evicted the oldest connection without "
                      "complete request headers of the busiest address");
        else
            conn_doom(s, e, "connection table full of requests in progress");
    }
    pthread_mutex_unlock(&s->mu);
}

static void conn_remove(struct kms_http_server *s, void **socket_ctx)
{
    struct conn_ent *e = *socket_ctx;
    struct ip_ent **pp;

    if (e == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    if (!e->doomed) {
        e->ip->live--;
        s->live--;
    }
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        s->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        s->tail = e->prev;
    if (--e->ip->refs == 0) {
        pp = ip_slot(s, e->ip->addr);
        *pp = e->ip->next;
        free(e->ip);
    }
    pthread_mutex_unlock(&s->mu);
    free(e);
    *socket_ctx = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct kms_http_server *s = cls;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        conn_add(s, conn, socket_ctx);
    else if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
        conn_remove(s, socket_ctx);
}

/* Moves the connection of a request to another stage. */
static void conn_stage(struct kms_http_server *s, struct MHD_Connection *conn,
                       enum conn_stage stage, int served)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn_ent *e = ci != NULL ? ci->socket_context : NULL;

    if (e == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    e->stage = stage;
    e->stage_ms = mono_ms();
    if (served)
        e->served = 1;
    pthread_mutex_unlock(&s->mu);
}

/* Refuses a new connection before any TLS work when its address is at its limit (the firm
 * check is in conn_add). */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    struct kms_http_server *s = cls;
    uint8_t key[16];
    unsigned n;

    (void)addrlen;
    addr_key(addr, key);
    pthread_mutex_lock(&s->mu);
    n = ip_live(s, key);
    pthread_mutex_unlock(&s->mu);
    if (n >= s->per_ip) {
        char ip[INET6_ADDRSTRLEN];

        addr_text(key, ip, sizeof(ip));
        kms_log_limited(KMS_LOG_WARN, "http: per-address limit",
                        "%s: refused a connection from %s: it holds %u connections (limit %u)",
                        s->name, ip, n, s->per_ip);
        return MHD_NO;
    }
    return MHD_YES;
}

/* Closes connections past their stage's deadline; flushes rate-limited log summaries. */
static void *timer_main(void *arg)
{
    struct kms_http_server *s = arg;
    uint64_t last_flush = mono_ms();

    pthread_mutex_lock(&s->mu);
    while (!s->timer_stop) {
        struct timespec ts;
        uint64_t now;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += KMS_HTTP_TIMER_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        (void)pthread_cond_timedwait(&s->cond, &s->mu, &ts);
        if (s->timer_stop)
            break;
        now = mono_ms();
        for (struct conn_ent *e = s->head; e != NULL; e = e->next) {
            uint64_t age = now - e->stage_ms;

            if (e->doomed)
                continue;
            if (e->stage == ST_HEADERS && !e->served && age >= KMS_HTTP_HEADER_TIMEOUT_MS)
                conn_doom(s, e, "no complete request headers within the deadline");
            else if (e->stage == ST_HEADERS && e->served && age >= KMS_HTTP_IDLE_TIMEOUT_MS)
                conn_doom(s, e, "idle keep-alive connection past the deadline");
            else if (e->stage == ST_BODY && age >= KMS_HTTP_BODY_TIMEOUT_MS)
                conn_doom(s, e, "request body not complete within the deadline");
        }
        if (now - last_flush >= 1000) {
            last_flush = now;
            pthread_mutex_unlock(&s->mu);
            kms_log_limited_flush();
            pthread_mutex_lock(&s->mu);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* MHD's error log, one rate-limited key per message format (per-connection noise such as
 * GnuTLS "handshake message out of context" comes once per junk connection). */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct kms_http_server *s = cls;
    char msg[512];
    size_t n;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    kms_log_limited(KMS_LOG_WARN, fmt, "%s: %s", s->name, msg);
}

int kms_http_parse_listen(const char *listen, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(listen, ':');
    char *end = NULL;
    long port;
    size_t hl;

    if (colon == NULL)
        return kms_err_set(KMS_ERR_INVAL, "listen address '%s' must be host:port", listen);
    hl = (size_t)(colon - listen);
    if (hl == 0 || hl >= sizeof(host))
        return kms_err_set(KMS_ERR_INVAL, "listen address '%s' has an invalid host", listen);
    memcpy(host, listen, hl);
    host[hl] = '\0';
    port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port < 0 || port > 65535)
        return kms_err_set(KMS_ERR_INVAL, "listen address '%s' has an invalid port", listen);
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return kms_err_set(KMS_ERR_INVAL, "listen address '%s': host must be an IPv4 address",
                           listen);
    return 0;
}

void kms_http_resp_own(struct kms_http_resp *r, int status, const char *ctype, char *body)
{
    free(r->body);
    r->status = status;
    r->content_type = ctype;
    r->body = body;
    r->body_len = body != NULL ? strlen(body) : 0;
}

void kms_http_resp_own_len(struct kms_http_resp *r, int status, const char *ctype, char *body,
                           size_t len)
{
    free(r->body);
    r->status = status;
    r->content_type = ctype;
    r->body = body;
    r->body_len = body != NULL ? len : 0;
}

void kms_http_resp_text(struct kms_http_resp *r, int status, const char *ctype, const char *text)
{
    kms_http_resp_own(r, status, ctype, strdup(text));
}

const char *kms_http_query_arg(const struct kms_http_req *req, const char *key)
{
    return MHD_lookup_connection_value((struct MHD_Connection *)req->conn, MHD_GET_ARGUMENT_KIND,
                                       key);
}

/* admin: Authorization / X-Admin-Token of the Admin service */
const char *kms_http_header(const struct kms_http_req *req, const char *name)
{
    if (req->conn == NULL)
        return NULL;
    return MHD_lookup_connection_value((struct MHD_Connection *)req->conn, MHD_HEADER_KIND, name);
}

struct query_iter {
    void (*fn)(void *arg, const char *key, const char *value);
    void *arg;
};

static enum MHD_Result query_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    struct query_iter *it = cls;

    (void)kind;
    it->fn(it->arg, key, value != NULL ? value : "");
    return MHD_YES;
}

void kms_http_query_each(const struct kms_http_req *req,
                         void (*fn)(void *arg, const char *key, const char *value), void *arg)
{
    struct query_iter it = {fn, arg};

    MHD_get_connection_values((struct MHD_Connection *)req->conn, MHD_GET_ARGUMENT_KIND, query_cb,
                              &it);
}

static X509 *client_cert_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    const gnutls_datum_t *peers;
    unsigned int n = 0;
    const unsigned char *p;

    if (ci == NULL || ci->tls_session == NULL)
        return NULL;
    peers = gnutls_certificate_get_peers((gnutls_session_t)ci->tls_session, &n);
    if (peers == NULL || n == 0)
        return NULL;
    p = peers[0].data;
    return d2i_X509(NULL, &p, (long)peers[0].size);
}

/* Response bodies may carry key material (GetAppKey, GetKmsKey), as text or as protobuf with
 * NUL bytes: wipe all body_len bytes when MHD is done. */
struct sent_body {
    char *p;
    size_t n;
};

static void wipe_free(void *cls)
{
    struct sent_body *sb = cls;

    kms_free_secret(sb->p, sb->n);
    free(sb);
}

static enum MHD_Result send_resp(struct MHD_Connection *conn, struct kms_http_resp *r,
                                 const char *allow)
{
    struct MHD_Response *resp;
    struct sent_body *sb = calloc(1, sizeof(*sb));
    enum MHD_Result ret;

    if (r->body == NULL) {
        r->body = strdup("");
        r->body_len = 0;
    }
    if (sb == NULL || r->body == NULL) {
        free(sb);
        kms_free_secret(r->body, r->body_len);
        return MHD_NO;
    }
    sb->p = r->body;
    sb->n = r->body_len;
    resp =
        MHD_create_response_from_buffer_with_free_callback_cls(r->body_len, r->body, wipe_free, sb);
    if (resp == NULL) {
        wipe_free(sb);
        return MHD_NO;
    }
    r->body = NULL;
    MHD_add_response_header(resp, "Content-Type",
                            r->content_type != NULL ? r->content_type : "application/json");
    MHD_add_response_header(resp, "X-App-Version", "kmsd v" KMS_VERSION_STRING);
    if (kms_log_request_id()[0] != '\0')
        MHD_add_response_header(resp, "X-Request-Id", kms_log_request_id());
    if (allow != NULL)
        MHD_add_response_header(resp, "Allow", allow);
    for (size_t i = 0; r->headers != NULL && r->headers[i] != NULL && r->headers[i + 1] != NULL;
         i += 2)
        MHD_add_response_header(resp, r->headers[i], r->headers[i + 1]);
    ret = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static int json_arg_set(struct MHD_Connection *conn)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "json");

    if (v == NULL) {
        /* "?json" without '=' has a NULL value but is present. */
        return MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, "json", 4, NULL, NULL) ==
               MHD_YES;
    }
    return v[0] == '\0' || strcmp(v, "true") == 0 || strcmp(v, "1") == 0;
}

/* An error answered by the server itself (no handler ran), in the request's pRPC encoding:
 * {"error": msg} for JSON, a ProtoError otherwise. msg is a fixed string (no client bytes). */
static enum MHD_Result send_error(struct MHD_Connection *conn, const char *method, int status,
                                  const char *msg, const char *allow)
{
    struct kms_http_resp resp = {0};

    if (kms_pb_request_is_json(
            method, json_arg_set(conn),
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type"))) {
        char body[256];

        snprintf(body, sizeof(body), "{\n  \"error\": \"%s\"\n}", msg);
        kms_http_resp_text(&resp, status, "application/json", body);
    } else {
        struct kms_buf b = {0};
        size_t n;

        if (kms_pb_encode_error(msg, &b) < 0)
            return MHD_NO;
        n = b.len;
        kms_http_resp_own_len(&resp, status, "application/octet-stream",
                              (char *)kms_buf_steal(&b, NULL), n);
    }
    return send_resp(conn, &resp, allow);
}

/* The request line, before MHD splits off the query and unescapes the path: keep the target as
 * received to detect NUL bytes (raw, which MHD's C strings silently cut, or as %00). The
 * returned context becomes the request's *con_cls. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct req_ctx *rc = calloc(1, sizeof(*rc));

    (void)cls;
    (void)conn;
    if (rc == NULL)
        return NULL;
    rc->raw_uri = uri;
    rc->raw_len = uri != NULL ? strlen(uri) : 0;
    for (size_t i = 0; i + 2 < rc->raw_len; i++) {
        if (uri[i] == '%' && uri[i + 1] == '0' && uri[i + 2] == '0')
            rc->has_pct00 = 1;
    }
    return rc;
}

struct cl_scan {
    int n_cl;
    int n_te;
    int conflict;
    const char *first;
};

static enum MHD_Result cl_scan_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    struct cl_scan *c = cls;

    (void)kind;
    if (strcasecmp(key, "Content-Length") == 0) {
        if (c->n_cl++ == 0)
            c->first = value != NULL ? value : "";
        else if (value == NULL || strcmp(value, c->first) != 0)
            c->conflict = 1;
    } else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        c->n_te++;
    }
    return MHD_YES;
}

/* Strict HTTP, checked once the headers are complete and before any handler or body: returns
 * the status to refuse with (0 = fine) and its message. */
static int request_refusal(struct MHD_Connection *conn, const struct req_ctx *rc,
                           const char *method, const char *version, const char **msg)
{
    struct cl_scan c = {0};

    if (version != NULL && version[0] != '\0' && rc->raw_uri != NULL) {
        /* MHD cut the request line at the space before the version: the target spans up to
         * there, and its strlen is shorter exactly when a NUL is inside. */
        uintptr_t a = (uintptr_t)rc->raw_uri, v = (uintptr_t)version;

        if (v <= a || v - a - 1 != rc->raw_len) {
            *msg = "request target contains a NUL byte";
            return 400;
        }
    }
    if (rc->has_pct00) {
        *msg = "request target contains an encoded NUL byte (%00)";
        return 400;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0 && strcmp(method, "HEAD") != 0) {
        *msg = "method not allowed: use GET, HEAD or POST";
        return 405;
    }
    MHD_get_connection_values(conn, MHD_HEADER_KIND, cl_scan_cb, &c);
    if (c.conflict) {
        *msg = "conflicting Content-Length headers";
        return 400;
    }
    if (c.n_cl > 0 && c.n_te > 0) {
        *msg = "both Content-Length and Transfer-Encoding";
        return 400;
    }
    if (c.n_cl > 0) {
        unsigned long long n;

        errno = 0;
        n = strtoull(c.first, NULL, 10);
        if (errno != 0 || n > KMS_HTTP_DISCARD_MAX) {
            *msg = "request body exceeds the 1 MiB limit";
            return 413;
        }
    }
    return 0;
}

/* ---- request ids ----
 * The client's X-Request-Id when it is 1..KMS_LOG_REQUEST_ID_MAX characters of [A-Za-z0-9._-]
 * (so a caller can follow its request through the logs), else "<process prefix>-<counter>". */

static pthread_once_t req_id_once = PTHREAD_ONCE_INIT;
static uint32_t req_id_prefix;
static unsigned long req_id_seq;

static void req_id_init(void)
{
    if (RAND_bytes((unsigned char *)&req_id_prefix, sizeof(req_id_prefix)) != 1)
        req_id_prefix = (uint32_t)time(NULL) ^ (uint32_t)getpid();
}

static void request_id_set(struct MHD_Connection *conn, struct req_ctx *rc)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    size_t n = h != NULL ? strlen(h) : 0;
    int ok = n > 0 && n <= KMS_LOG_REQUEST_ID_MAX;

    for (size_t i = 0; ok && i < n; i++) {
        char c = h[i];

        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '_' || c == '-';
    }
    if (ok) {
        memcpy(rc->req_id, h, n + 1);
        return;
    }
    pthread_once(&req_id_once, req_id_init);
    snprintf(rc->req_id, sizeof(rc->req_id), "%08x-%06lx", (unsigned)req_id_prefix,
             __atomic_add_fetch(&req_id_seq, 1, __ATOMIC_RELAXED));
}

static enum MHD_Result serve(struct kms_http_server *s, struct MHD_Connection *conn,
                             struct req_ctx *rc, const char *url, const char *method,
                             const char *version, const char *upload_data, size_t *upload_data_size)
{
    struct kms_http_req req;
    struct kms_http_resp resp = {0};
    enum MHD_Result ret;

    if (!rc->started) {
        const char *msg = NULL;
        const char *cl;
        int status = request_refusal(conn, rc, method, version, &msg);

        rc->started = 1;
        if (status != 0) {
            conn_stage(s, conn, ST_HANDLING, 0);
            /* queued before the body: MHD answers at once and closes the connection */
            return send_error(conn, method, status, msg, status == 405 ? "GET, HEAD, POST" : NULL);
        }
        cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl != NULL && strtoull(cl, NULL, 10) > KMS_HTTP_MAX_BODY)
            rc->too_big = 1; /* read and drop, answered 400 (see KMS_HTTP_DISCARD_MAX) */
        conn_stage(s, conn, ST_BODY, 0);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (!rc->too_big && KMS_HTTP_MAX_BODY - rc->body.len >= *upload_data_size) {
            if (kms_buf_put(&rc->body, upload_data, *upload_data_size) < 0)
                rc->too_big = 1;
        } else {
            rc->too_big = 1;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    conn_stage(s, conn, ST_HANDLING, 0);
    /* read (and dropped) past the limit: answered as before, once the client can read it */
    if (rc->too_big)
        return send_error(conn, method, 400, "request body exceeds the 1 MiB limit", NULL);
    if (kms_buf_put_u8(&rc->body, 0) < 0)
        return MHD_NO;
    rc->body.len--;
    memset(&req, 0, sizeof(req));
    req.method = method;
    req.path = url;
    req.has_json_arg = json_arg_set(conn);
    req.content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
    req.body = rc->body.data;
    req.body_len = rc->body.len;
    req.client_cert = client_cert_of(conn);
    req.conn = conn;
    s->handler(s->arg, &req, &resp);
    X509_free(req.client_cert);
    if (resp.status == 0)
        resp.status = 500;
    rc->on_sent = resp.on_sent;
    rc->on_sent_arg = resp.on_sent_arg;
    ret = send_resp(conn, &resp, NULL);
    return ret;
}

/* Every line logged while MHD runs this request's callback carries its id. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct req_ctx *rc = *con_cls;
    enum MHD_Result ret;

    if (rc == NULL)
        return MHD_NO; /* on_uri could not allocate: close */
    if (rc->req_id[0] == '\0')
        request_id_set(conn, rc);
    kms_log_set_request_id(rc->req_id);
    ret = serve(cls, conn, rc, url, method, version, upload_data, upload_data_size);
    kms_log_set_request_id(NULL);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct kms_http_server *s = cls;
    struct req_ctx *rc = *con_cls;

    /* keep-alive: the connection waits for the next request's headers */
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        conn_stage(s, conn, ST_HEADERS, 1);
    if (rc != NULL) {
        if (rc->on_sent != NULL) {
            kms_log_set_request_id(rc->req_id);
            rc->on_sent(rc->on_sent_arg);
            kms_log_set_request_id(NULL);
        }
        kms_buf_free(&rc->body);
        free(rc);
        *con_cls = NULL;
    }
}

static void timer_stop(struct kms_http_server *s)
{
    if (!s->timer_ok)
        return;
    pthread_mutex_lock(&s->mu);
    s->timer_stop = 1;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->timer, NULL);
    s->timer_ok = 0;
}

static void free_server(struct kms_http_server *s)
{
    if (s == NULL)
        return;
    timer_stop(s);
    if (s->key_pem != NULL)
        kms_free_secret(s->key_pem, strlen(s->key_pem));
    free(s->cert_pem);
    free(s->ca_pem);
    /* MHD is stopped: every connection was reported CLOSED; free what a failed start left */
    while (s->head != NULL) {
        struct conn_ent *e = s->head;

        s->head = e->next;
        free(e);
    }
    for (size_t i = 0; i < IP_BUCKETS; i++) {
        while (s->ips[i] != NULL) {
            struct ip_ent *ip = s->ips[i];

            s->ips[i] = ip->next;
            free(ip);
        }
    }
    if (s->mu_ok) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cond);
    }
    free(s);
}

int kms_http_start(const char *listen, const struct kms_http_tls *tls, kms_http_handler handler,
                   void *arg, struct kms_http_server **out)
{
    struct sockaddr_in sa;
    struct kms_http_server *s = NULL;
    /* ITC: needed to quiesce (stop accepting) before stopping; see kms_http_stop. poll:
     * select() cannot watch descriptors above 1023, and MHD 0.9.75's epoll mode stalls TLS
     * connections (a GetMeta answer took > 500 ms and the peer gave up, in cluster_repl). */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC;
    struct MHD_OptionItem ops[20];
    size_t n = 0;
    int rc = 0;

    KMS_GUARD(kms_http_parse_listen(listen, &sa));
    (void)pthread_once(&limits_once, limits_init);
    s = calloc(1, sizeof(*s));
    KMS_GUARD_PTR(s);
    KMS_ENSURE(pthread_mutex_init(&s->mu, NULL) == 0, KMS_ERR_INTERNAL, "mutex init failed");
    if (pthread_cond_init(&s->cond, NULL) != 0) {
        pthread_mutex_destroy(&s->mu);
        rc = kms_err_set(KMS_ERR_INTERNAL, "condition variable init failed");
        goto out;
    }
    s->mu_ok = 1;
    s->handler = handler;
    s->arg = arg;
    s->max_conns = limits_max_conns;
    s->per_ip = s->max_conns / 8 > 8 ? s->max_conns / 8 : 8;
    snprintf(s->name, sizeof(s->name), "%s %s", tls != NULL ? "https" : "http", listen);
    flags |= MHD_USE_POLL;
    /* first, so that MHD logs nothing through its own stderr logger */
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, s};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &sa};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, 4, NULL};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, 30, NULL};
    /* room above our own limit for connections we shut down that MHD has not reaped yet */
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT,
                                       (intptr_t)(s->max_conns + s->max_conns / 4 + 16), NULL};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, s};
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, s};
    if (tls != NULL) {
        flags |= MHD_USE_TLS;
        s->key_pem = strdup(tls->key_pem);
        s->cert_pem = strdup(tls->cert_pem);
        KMS_GUARD_PTR(s->key_pem);
        KMS_GUARD_PTR(s->cert_pem);
        ops[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->key_pem};
        ops[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert_pem};
        if (tls->client_ca_pem != NULL) {
            s->ca_pem = strdup(tls->client_ca_pem);
            KMS_GUARD_PTR(s->ca_pem);
            ops[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0, s->ca_pem};
        }
    }
    ops[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    KMS_ENSURE(pthread_create(&s->timer, NULL, timer_main, s) == 0, KMS_ERR_INTERNAL,
               "cannot start the connection timer thread");
    s->timer_ok = 1;
    s->daemon = MHD_start_daemon(flags, 0, on_accept, s, on_request, s, MHD_OPTION_ARRAY, ops,
                                 MHD_OPTION_END);
    KMS_ENSURE(s->daemon != NULL, KMS_ERR_IO,
               "cannot listen on %s (address in use, or invalid TLS key/certificate)", listen);
    KMS_DEBUG("%s: at most %u connections, %u per address", s->name, s->max_conns, s->per_ip);
    *out = s;
    s = NULL;
out:
    free_server(s);
    return rc;
}

unsigned kms_http_connections(struct kms_http_server *s)
{
    unsigned n;

    pthread_mutex_lock(&s->mu);
    n = s->live;
    pthread_mutex_unlock(&s->mu);
    return n;
}

unsigned kms_http_port(const struct kms_http_server *s)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);

    return di != NULL ? di->port : 0;
}

/* Graceful stop: accept nothing new, let the connections in flight finish (at most 2 s; e.g.
 * the one that carried Finish, whose completion triggered this stop), then stop. Stopping
 * while a worker was still finishing such a connection crashed libmicrohttpd 0.9.75 now and
 * then. */
void kms_http_stop(struct kms_http_server *s)
{
    MHD_socket lfd = MHD_INVALID_SOCKET;

    if (s == NULL)
        return;
    if (s->daemon != NULL) {
        lfd = MHD_quiesce_daemon(s->daemon);
        /* connections that never completed request headers have nothing to finish (a
         * keep-alive one may still carry a follow-up request, e.g. Finish after Onboard) */
        pthread_mutex_lock(&s->mu);
        for (struct conn_ent *e = s->head; e != NULL; e = e->next) {
            if (e->stage == ST_HEADERS && !e->served && !e->doomed) {
                e->doomed = 1;
                e->ip->live--;
                s->live--;
                (void)shutdown(e->fd, SHUT_RDWR);
            }
        }
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < 100; i++) {
            const union MHD_DaemonInfo *di =
                MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);

            if (di == NULL || di->num_connections == 0)
                break;
            usleep(20000);
        }
        timer_stop(s);
        MHD_stop_daemon(s->daemon);
        /* MHD hands the quiesced listen socket to us: close it after the daemon is gone. */
        if (lfd != MHD_INVALID_SOCKET)
            close(lfd);
    }
    free_server(s);
}
