#include "node/http.h"

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/version.h"
#include "node/proto.h"

struct kms_http_server {
    struct MHD_Daemon *daemon;
    kms_http_handler handler;
    void *arg;
    char *key_pem;
    char *cert_pem;
    char *ca_pem;
};

/* Per-request state while the body arrives. */
struct req_ctx {
    struct kms_buf body;
    int too_big;
    void (*on_sent)(void *arg);
    void *on_sent_arg;
};

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

static enum MHD_Result send_resp(struct MHD_Connection *conn, struct kms_http_resp *r)
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct kms_http_server *s = cls;
    struct req_ctx *rc = *con_cls;
    struct kms_http_req req;
    struct kms_http_resp resp = {0};
    enum MHD_Result ret;

    (void)version;
    if (rc == NULL) {
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");

        rc = calloc(1, sizeof(*rc));
        if (rc == NULL)
            return MHD_NO;
        *con_cls = rc;
        if (cl != NULL && strtoull(cl, NULL, 10) > KMS_HTTP_MAX_BODY)
            rc->too_big = 1;
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
    if (rc->too_big) {
        static const char msg[] = "request body exceeds the 1 MiB limit";

        if (kms_pb_request_is_json(
                method, json_arg_set(conn),
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type"))) {
            kms_http_resp_text(&resp, 400, "application/json",
                               "{\n  \"error\": \"request body exceeds the 1 MiB limit\"\n}");
        } else {
            struct kms_buf b = {0};
            size_t n;

            if (kms_pb_encode_error(msg, &b) < 0)
                return MHD_NO;
            n = b.len;
            kms_http_resp_own_len(&resp, 400, "application/octet-stream",
                                  (char *)kms_buf_steal(&b, NULL), n);
        }
        return send_resp(conn, &resp);
    }
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
    ret = send_resp(conn, &resp);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct req_ctx *rc = *con_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (rc != NULL) {
        if (rc->on_sent != NULL)
            rc->on_sent(rc->on_sent_arg);
        kms_buf_free(&rc->body);
        free(rc);
        *con_cls = NULL;
    }
}

static void free_server(struct kms_http_server *s)
{
    if (s == NULL)
        return;
    if (s->key_pem != NULL)
        kms_free_secret(s->key_pem, strlen(s->key_pem));
    free(s->cert_pem);
    free(s->ca_pem);
    free(s);
}

int kms_http_start(const char *listen, const struct kms_http_tls *tls, kms_http_handler handler,
                   void *arg, struct kms_http_server **out)
{
    struct sockaddr_in sa;
    struct kms_http_server *s = NULL;
    /* ITC: needed to quiesce (stop accepting) before stopping; see kms_http_stop. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC;
    int rc = 0;

    KMS_GUARD(kms_http_parse_listen(listen, &sa));
    s = calloc(1, sizeof(*s));
    KMS_GUARD_PTR(s);
    s->handler = handler;
    s->arg = arg;
    if (tls == NULL) {
        s->daemon =
            MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &sa,
                             MHD_OPTION_THREAD_POOL_SIZE, 4u, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
                             MHD_OPTION_CONNECTION_LIMIT, 256u, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                             64u, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    } else {
        s->key_pem = strdup(tls->key_pem);
        s->cert_pem = strdup(tls->cert_pem);
        KMS_GUARD_PTR(s->key_pem);
        KMS_GUARD_PTR(s->cert_pem);
        if (tls->client_ca_pem != NULL) {
            s->ca_pem = strdup(tls->client_ca_pem);
            KMS_GUARD_PTR(s->ca_pem);
            s->daemon = MHD_start_daemon(
                flags | MHD_USE_TLS, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &sa,
                MHD_OPTION_HTTPS_MEM_KEY, s->key_pem, MHD_OPTION_HTTPS_MEM_CERT, s->cert_pem,
                MHD_OPTION_HTTPS_MEM_TRUST, s->ca_pem, MHD_OPTION_THREAD_POOL_SIZE, 4u,
                MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_CONNECTION_LIMIT, 256u,
                MHD_OPTION_PER_IP_CONNECTION_LIMIT, 64u, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
                s, MHD_OPTION_END);
        } else {
            s->daemon = MHD_start_daemon(
                flags | MHD_USE_TLS, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &sa,
                MHD_OPTION_HTTPS_MEM_KEY, s->key_pem, MHD_OPTION_HTTPS_MEM_CERT, s->cert_pem,
                MHD_OPTION_THREAD_POOL_SIZE, 4u, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
                MHD_OPTION_CONNECTION_LIMIT, 256u, MHD_OPTION_PER_IP_CONNECTION_LIMIT, 64u,
                MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
        }
    }
    KMS_ENSURE(s->daemon != NULL, KMS_ERR_IO,
               "cannot listen on %s (address in use, or invalid TLS key/certificate)", listen);
    *out = s;
    s = NULL;
out:
    free_server(s);
    return rc;
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
        for (int i = 0; i < 100; i++) {
            const union MHD_DaemonInfo *di =
                MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);

            if (di == NULL || di->num_connections == 0)
                break;
            usleep(20000);
        }
        MHD_stop_daemon(s->daemon);
        /* MHD hands the quiesced listen socket to us: close it after the daemon is gone. */
        if (lfd != MHD_INVALID_SOCKET)
            close(lfd);
    }
    free_server(s);
}
