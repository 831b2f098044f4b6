/*
 * HTTP(S) serving on libmicrohttpd (GnuTLS underneath). The client certificate, when a client
 * presents one, is handed to the handler as an OpenSSL X509 (verified by the handler; the TLS
 * layer only requests it).
 *
 * Strict HTTP, refused by the server before any handler runs: a NUL byte in the request target,
 * raw or as %00 (400); a method other than GET, HEAD, POST (405); conflicting Content-Length
 * headers, or Content-Length with Transfer-Encoding (400); a declared body above
 * KMS_HTTP_DISCARD_MAX (413, answered at once, the body is not read). A body above
 * KMS_HTTP_MAX_BODY but within KMS_HTTP_DISCARD_MAX is read, dropped and answered 400 (answering
 * before it is read would make the kernel reset the connection under the client's reading).
 *
 * Connections: the soft RLIMIT_NOFILE is raised to the hard one, and each listener takes at most
 * (limit - KMS_HTTP_FD_RESERVE) / 2 connections (16..KMS_HTTP_MAX_CONNECTIONS), one eighth of
 * them (at least 8) per source address. A new connection must complete its TLS handshake and
 * request headers within KMS_HTTP_HEADER_TIMEOUT_MS, however it trickles bytes; a keep-alive
 * connection must send its next request's headers within KMS_HTTP_IDLE_TIMEOUT_MS; a body must
 * arrive within KMS_HTTP_BODY_TIMEOUT_MS. When all slots are taken, a new connection evicts the
 * oldest connection still waiting for request headers from the address holding the most
 * connections, so clients with few connections keep being served during a flood. Repeated
 * per-connection warnings are rate-limited (kms_log_limited).
 */
#ifndef KMS_NODE_HTTP_H
#define KMS_NODE_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "common/err.h"

#define KMS_HTTP_MAX_BODY (1024u * 1024u)
#define KMS_HTTP_DISCARD_MAX (16u * KMS_HTTP_MAX_BODY) /* declared above this: 413 at once */
#define KMS_HTTP_HEADER_TIMEOUT_MS 5000u /* accept -> TLS handshake and request headers */
#define KMS_HTTP_IDLE_TIMEOUT_MS 30000u  /* keep-alive: the next request's headers */
#define KMS_HTTP_BODY_TIMEOUT_MS 60000u  /* headers -> complete body */
#define KMS_HTTP_MAX_CONNECTIONS 4096u   /* per listener, whatever the fd limit */
#define KMS_HTTP_FD_RESERVE 256u         /* descriptors left for everything else */
#define KMS_HTTP_TIMER_MS 100            /* deadline check period */

struct kms_http_req {
    const char *method;       /* "GET", "POST", ... */
    const char *path;         /* URL path without query */
    int has_json_arg;         /* query has json, json=, json=true or json=1 */
    const char *content_type; /* may be NULL */
    const uint8_t *body;      /* NUL-terminated; may be empty */
    size_t body_len;
    X509 *client_cert; /* borrowed; NULL when none was presented */
    void *conn;        /* for kms_http_query_arg */
};

/* A query-string argument of the request, or NULL (borrowed). */
const char *kms_http_query_arg(const struct kms_http_req *req, const char *key);
/* A request header (case-insensitive name), or NULL (borrowed). admin: token headers. */
const char *kms_http_header(const struct kms_http_req *req, const char *name);
/* Calls fn for each query-string argument (value "" when absent). */
void kms_http_query_each(const struct kms_http_req *req,
                         void (*fn)(void *arg, const char *key, const char *value), void *arg);

struct kms_pb_method;

struct kms_http_resp {
    int status;
    char *body; /* malloc'd; the server wipes and frees it (body_len bytes) */
    size_t body_len;
    const char *content_type; /* static string */
    /* pRPC encoding of this exchange, set by kms_prpc_begin (node/prpc.c); zero = JSON. */
    int proto;                             /* the request is protobuf: answer protobuf */
    const struct kms_pb_method *pb_method; /* its schemas; NULL for an unknown method */
    /* Called once the response has been handed to the client (e.g. Finish stops the listener
     * only after its answer is out). */
    void (*on_sent)(void *arg);
    void *on_sent_arg;
    /* ui: extra headers, NULL-terminated name/value pairs (static strings); NULL = none. */
    const char *const *headers;
};

typedef void (*kms_http_handler)(void *arg, const struct kms_http_req *req,
                                 struct kms_http_resp *resp);

struct kms_http_tls {
    const char *cert_pem;      /* server chain PEM */
    const char *key_pem;       /* server key PEM (secret) */
    const char *client_ca_pem; /* request client certs from this CA; NULL = don't ask */
};

struct kms_http_server;

/* Starts a listener on "host:port" (port 0 = ephemeral). tls NULL = plain HTTP.
 * *out is owned by the caller; stop with kms_http_stop. */
KMS_WUR int kms_http_start(const char *listen, const struct kms_http_tls *tls,
                           kms_http_handler handler, void *arg, struct kms_http_server **out);
/* The bound port. */
unsigned kms_http_port(const struct kms_http_server *s);
/* Open connections the limits count (not those already being closed). */
unsigned kms_http_connections(struct kms_http_server *s);
/* Stops and frees; accepts NULL. */
void kms_http_stop(struct kms_http_server *s);

/* Helpers to fill a response. */
void kms_http_resp_text(struct kms_http_resp *r, int status, const char *ctype, const char *text);
/* Takes ownership of body (a NUL-terminated text). */
void kms_http_resp_own(struct kms_http_resp *r, int status, const char *ctype, char *body);
/* Takes ownership of body, len bytes of binary data (may be NULL when len is 0). */
void kms_http_resp_own_len(struct kms_http_resp *r, int status, const char *ctype, char *body,
                           size_t len);

/* Parses "host:port" into a sockaddr_in; KMS_ERR_INVAL on bad input. */
struct sockaddr_in;
KMS_WUR int kms_http_parse_listen(const char *listen, struct sockaddr_in *sa);

#endif
