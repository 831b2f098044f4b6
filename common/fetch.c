#include "common/fetch.h"

#include <openssl/crypto.h>
#include <string.h>

struct sink {
    struct kms_buf *b;
    size_t max;
    int too_big;
    int nomem;
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    struct sink *s = arg;
    size_t n = size * nmemb; /* curl guarantees size == 1 */

    if (s->max - s->b->len < n) {
        s->too_big = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (kms_buf_put(s->b, p, n) < 0) {
        s->nomem = 1;
        return 0;
    }
    return n;
}

/* Header lines may hold bearer tokens: wipe them before curl frees them. */
static void headers_free(struct curl_slist *h)
{
    for (struct curl_slist *i = h; i != NULL; i = i->next)
        OPENSSL_cleanse(i->data, strlen(i->data));
    curl_slist_free_all(h);
}

#define SETOPT(h, opt, val)                                                                        \
    do {                                                                                           \
        CURLcode sc_ = curl_easy_setopt((h), opt, val);                                            \
        KMS_ENSURE(sc_ == CURLE_OK, KMS_ERR_INTERNAL, "curl option %s: %s", #opt,                  \
                   curl_easy_strerror(sc_));                                                       \
    } while (0)

int kms_fetch(const struct kms_fetch_req *req, struct kms_fetch_resp *resp)
{
    struct sink s = {0};
    struct curl_slist *hdrs = NULL;
    struct curl_slist *tmp;
    CURL *h = NULL;
    long connect_ms;
    int rc = 0;

    memset(resp, 0, sizeof(*resp));
    resp->cc = CURLE_OK;
    KMS_ENSURE(req != NULL && req->url != NULL && req->timeout_ms > 0 && req->max_body > 0 &&
                   req->connect_timeout_ms >= 0,
               KMS_ERR_INVAL, "HTTP request: missing URL, timeout or body limit");
    s.b = &resp->body;
    s.max = req->max_body;
    connect_ms = req->connect_timeout_ms > 0 ? req->connect_timeout_ms : req->timeout_ms;
    for (const char *const *l = req->headers; l != NULL && *l != NULL; l++) {
        tmp = curl_slist_append(hdrs, *l);
        KMS_GUARD_PTR(tmp);
        hdrs = tmp;
    }
    h = curl_easy_init();
    KMS_ENSURE(h != NULL, KMS_ERR_NOMEM, "cannot create an HTTP client handle (curl_easy_init)");
    SETOPT(h, CURLOPT_URL, req->url);
    SETOPT(h, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(h, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(h, CURLOPT_NOSIGNAL, 1L);
    SETOPT(h, CURLOPT_TIMEOUT_MS, req->timeout_ms);
    SETOPT(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    /* refuses an answer whose Content-Length is already too long before reading it */
    SETOPT(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_body);
    SETOPT(h, CURLOPT_ERRORBUFFER, resp->errbuf);
    SETOPT(h, CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(h, CURLOPT_WRITEDATA, &s);
    if (req->user_agent != NULL)
        SETOPT(h, CURLOPT_USERAGENT, req->user_agent);
    if (req->no_env_proxy)
        SETOPT(h, CURLOPT_PROXY, "");
    if (hdrs != NULL)
        SETOPT(h, CURLOPT_HTTPHEADER, hdrs);
    if (req->post != NULL) {
        SETOPT(h, CURLOPT_POST, 1L);
        SETOPT(h, CURLOPT_POSTFIELDS, req->post);
        SETOPT(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->post_len);
    } else {
        SETOPT(h, CURLOPT_HTTPGET, 1L);
    }
    if (req->setup != NULL)
        KMS_GUARD(req->setup(h, req->arg));

    resp->cc = curl_easy_perform(h);
    if (resp->cc == CURLE_FILESIZE_EXCEEDED)
        s.too_big = 1;
    resp->too_big = s.too_big;
    if (resp->cc == CURLE_OPERATION_TIMEDOUT) {
        rc = kms_err_set(KMS_ERR_TIMEOUT, "no answer within %ld ms", req->timeout_ms);
        goto out;
    }
    KMS_ENSURE(!s.too_big, KMS_ERR_TOOBIG, "the answer exceeds %zu bytes", req->max_body);
    KMS_ENSURE(!s.nomem, KMS_ERR_NOMEM, "out of memory reading the answer");
    KMS_ENSURE(resp->cc == CURLE_OK, KMS_ERR_NET, "%s", kms_fetch_why(resp));
    KMS_ENSURE(curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status) == CURLE_OK,
               KMS_ERR_INTERNAL, "cannot read the HTTP status");
    if (req->done != NULL)
        KMS_GUARD(req->done(h, req->arg));
out:
    if (h != NULL)
        curl_easy_cleanup(h);
    headers_free(hdrs);
    return rc;
}

#undef SETOPT

const char *kms_fetch_why(const struct kms_fetch_resp *resp)
{
    return resp->errbuf[0] != '\0' ? resp->errbuf : curl_easy_strerror(resp->cc);
}

void kms_fetch_resp_free(struct kms_fetch_resp *resp)
{
    if (resp != NULL)
        kms_buf_free(&resp->body);
}
