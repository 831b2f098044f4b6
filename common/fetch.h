/*
 * One HTTP exchange over libcurl: the tree's only libcurl body sink. Every call has a total and
 * a connect timeout, speaks http/https only, follows no redirects, never raises signals, and
 * keeps at most max_body bytes of the answer (a longer answer aborts the transfer). Options a
 * caller needs beyond that (TLS pinning, client certificates, SSL_CTX callbacks, response
 * header callbacks) are set by its setup callback; what it reads from the handle after the
 * transfer (peer certificates, content type) by its done callback.
 *
 * Library: kms_fetch (common/CMakeLists.txt), so that only modules that speak HTTP link curl.
 * The caller runs curl_global_init once before threads start (curl_easy_init does it lazily,
 * which is not thread-safe).
 */
#ifndef KMS_COMMON_FETCH_H
#define KMS_COMMON_FETCH_H

#include <curl/curl.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/err.h"

struct kms_fetch_req {
    const char *url;  /* required */
    const char *post; /* POST body of post_len bytes (not copied); NULL: GET */
    size_t post_len;
    const char *const *headers; /* NULL-terminated request header lines, or NULL; the copies
                                 * curl gets are wiped after the call (they may hold tokens) */
    long timeout_ms;            /* whole transfer; required, > 0 */
    long connect_timeout_ms;    /* connect phase; 0: timeout_ms */
    size_t max_body;            /* longest answer body kept; required, > 0 */
    const char *user_agent;     /* NULL: none */
    int no_env_proxy;           /* 1: ignore http_proxy & co from the environment */
    /* Called after the common options are set: 0, or a negative KMS_ERR_* that ends the call
     * with that error (detail set by the callback). */
    int (*setup)(CURL *h, void *arg);
    /* Called after a transfer that completed (any HTTP status), before the handle is freed:
     * 0, or a negative KMS_ERR_* returned by kms_fetch. */
    int (*done)(CURL *h, void *arg);
    void *arg; /* for setup and done */
};

struct kms_fetch_resp {
    struct kms_buf body;          /* the answer body (also the part read before an error) */
    long status;                  /* HTTP status of a completed transfer, else 0 */
    CURLcode cc;                  /* libcurl's result of the transfer */
    int too_big;                  /* the answer exceeded max_body; the transfer was aborted */
    char errbuf[CURL_ERROR_SIZE]; /* libcurl's detail about cc; may be empty */
};

/*
 * Performs req. *resp is reset first; the caller frees it with kms_fetch_resp_free, also on
 * error. Returns 0 when the transfer completed, whatever the HTTP status (resp->status), else:
 *   KMS_ERR_TIMEOUT  no complete answer within timeout_ms (resp->cc CURLE_OPERATION_TIMEDOUT)
 *   KMS_ERR_TOOBIG   the answer exceeds max_body (resp->too_big)
 *   KMS_ERR_NET      any other transfer failure (resp->cc, resp->errbuf)
 *   KMS_ERR_NOMEM, KMS_ERR_INVAL (bad req), KMS_ERR_INTERNAL (libcurl refused an option),
 *   or what setup / done returned.
 * The detail never names the URL (URLs may carry credentials): callers say what they fetched.
 */
KMS_WUR int kms_fetch(const struct kms_fetch_req *req, struct kms_fetch_resp *resp);

/* libcurl's description of a failed transfer: errbuf when set, else curl_easy_strerror(cc).
 * Borrowed from resp (or static). */
const char *kms_fetch_why(const struct kms_fetch_resp *resp);

/* Frees the body; resp may be NULL. */
void kms_fetch_resp_free(struct kms_fetch_resp *resp);

#endif
