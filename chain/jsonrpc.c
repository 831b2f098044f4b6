/*
 * chain: Ethereum JSON-RPC over libcurl. Every call has a timeout and a bounded number of
 * retries; replies are size-capped and checked field by field. Error details name the RPC by
 * scheme://host:port only, because RPC URLs often carry an API key in the path or query.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chain/eth.h"
#include "common/fetch.h"
#include "common/hex.h"

/* scheme://host[:port] of url, without path, query or user info. */
static void url_label(const char *url, char *out, size_t cap)
{
    const char *s = strstr(url, "://");
    const char *h = s != NULL ? s + 3 : url;
    const char *at, *end;

    end = h + strcspn(h, "/?#");
    at = memchr(h, '@', (size_t)(end - h));
    if (at != NULL)
        h = at + 1;
    snprintf(out, cap, "%.*s%.*s%s", s != NULL ? (int)(s + 3 - url) : 0, url, (int)(end - h), h,
             *end != '\0' ? "/…" : "");
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* One HTTP POST; returns 0 with the body in *r (reset by the call; caller frees with
 * kms_fetch_resp_free), or a KMS_ERR_AUTH_* code. *retry says whether another attempt could
 * help. */
static int post_once(const char *url, const char *label, const struct kms_eth_rpc_opts *o,
                     const char *method, const char *body, struct kms_fetch_resp *r, int *retry)
{
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};
    struct kms_fetch_req req = {0};
    int rc = 0;

    *retry = 0;
    req.url = url;
    req.post = body;
    req.post_len = strlen(body);
    req.headers = hdrs;
    req.timeout_ms = o->timeout_ms;
    req.max_body = KMS_ETH_MAX_REPLY;
    rc = kms_fetch(&req, r);
    if (rc == KMS_ERR_TIMEOUT) {
        *retry = 1;
        rc = kms_err_set(KMS_ERR_AUTH_TIMEOUT, "Ethereum RPC %s did not answer %s within %ld ms",
                         label, method, o->timeout_ms);
        goto out;
    }
    if (rc == KMS_ERR_TOOBIG) {
        rc = kms_err_set(KMS_ERR_AUTH_RESPONSE,
                         "Ethereum RPC %s sent a %s reply larger than %u bytes", label, method,
                         KMS_ETH_MAX_REPLY);
        goto out;
    }
    if (rc == KMS_ERR_NET) {
        *retry = 1;
        rc = kms_err_set(KMS_ERR_AUTH_UNREACHABLE, "Ethereum RPC %s unreachable for %s: %s", label,
                         method, curl_easy_strerror(r->cc));
        goto out;
    }
    if (rc < 0)
        goto out;
    if (r->status < 200 || r->status > 299) {
        *retry = r->status >= 500 || r->status == 429;
        rc = kms_err_set(KMS_ERR_AUTH_HTTP, "Ethereum RPC %s answered %s with HTTP status %ld",
                         label, method, r->status);
        goto out;
    }
out:
    return rc;
}

/* The JSON-RPC error object as a short sentence (message sanitized, bounded). */
static void describe_error(const json_t *err, char *buf, size_t cap)
{
    const json_t *code = json_object_get(err, "code");
    const char *msg = json_string_value(json_object_get(err, "message"));
    char clean[201];
    size_t i = 0;

    if (msg == NULL)
        msg = "(no message)";
    for (; msg[i] != '\0' && i < sizeof(clean) - 1; i++)
        clean[i] = (msg[i] >= 0x20 && msg[i] < 0x7f) ? msg[i] : '?';
    clean[i] = '\0';
    snprintf(buf, cap, "error %lld: %s",
             json_is_integer(code) ? (long long)json_integer_value(code) : 0LL, clean);
}

int kms_eth_rpc(const char *url, const struct kms_eth_rpc_opts *o, const char *method,
                json_t *params, json_t **result, json_t **errobj)
{
    struct kms_fetch_resp r = {0};
    json_t *req = NULL, *rep = NULL, *v;
    char *body = NULL;
    char label[128], why[256];
    int rc = 0, retry = 0;
    json_error_t jerr;

    if (result != NULL)
        *result = NULL;
    if (errobj != NULL)
        *errobj = NULL;
    if (params == NULL)
        params = json_array();
    KMS_ENSURE(url != NULL && o != NULL && method != NULL && result != NULL && params != NULL,
               KMS_ERR_INVAL, "JSON-RPC: missing argument");
    KMS_ENSURE(o->timeout_ms > 0 && o->retries >= 0 && o->retries <= 10, KMS_ERR_INVAL,
               "JSON-RPC: timeout must be > 0 and retries 0..10");
    url_label(url, label, sizeof(label));
    req = json_pack("{s:s, s:i, s:s, s:O}", "jsonrpc", "2.0", "id", 1, "method", method, "params",
                    params);
    KMS_GUARD_PTR(req);
    body = json_dumps(req, JSON_COMPACT);
    KMS_GUARD_PTR(body);

    for (int attempt = 0; attempt <= o->retries; attempt++) {
        if (attempt > 0)
            sleep_ms(100L * attempt);
        kms_fetch_resp_free(&r);
        rc = post_once(url, label, o, method, body, &r, &retry);
        if (rc == 0 || !retry)
            break;
    }
    if (rc < 0)
        goto out;
    rep = json_loadb(r.body.data != NULL ? (const char *)r.body.data : "", r.body.len,
                     JSON_REJECT_DUPLICATES, &jerr);
    KMS_ENSURE(rep != NULL && json_is_object(rep), KMS_ERR_AUTH_RESPONSE,
               "Ethereum RPC %s sent malformed JSON for %s (%s)", label, method,
               rep == NULL ? jerr.text : "not an object");
    v = json_object_get(rep, "id");
    KMS_ENSURE(json_is_integer(v) && json_integer_value(v) == 1, KMS_ERR_AUTH_RESPONSE,
               "Ethereum RPC %s answered %s with a wrong or missing JSON-RPC id", label, method);
    v = json_object_get(rep, "error");
    if (v != NULL && !json_is_null(v)) {
        KMS_ENSURE(json_is_object(v), KMS_ERR_AUTH_RESPONSE,
                   "Ethereum RPC %s sent a malformed error for %s", label, method);
        describe_error(v, why, sizeof(why));
        if (errobj != NULL)
            *errobj = json_incref(v);
        rc = kms_err_set(KMS_ERR_ETH_RPC, "Ethereum RPC %s rejected %s: %s", label, method, why);
        goto out;
    }
    v = json_object_get(rep, "result");
    KMS_ENSURE(v != NULL, KMS_ERR_AUTH_RESPONSE, "Ethereum RPC %s answered %s without a result",
               label, method);
    *result = json_incref(v);
out:
    json_decref(params);
    json_decref(req);
    json_decref(rep);
    free(body);
    kms_fetch_resp_free(&r);
    return rc;
}

/* ---------------------------------------------------------------- value parsing */

int kms_eth_quantity(const json_t *v, uint64_t *out)
{
    const char *s = json_string_value(v);
    uint64_t x = 0;
    size_t n;
    int rc = 0;

    KMS_ENSURE(s != NULL && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'), KMS_ERR_AUTH_RESPONSE,
               "JSON-RPC quantity is not a 0x-prefixed hex string");
    s += 2;
    n = strlen(s);
    KMS_ENSURE(n >= 1 && n <= 64, KMS_ERR_AUTH_RESPONSE, "JSON-RPC quantity has %zu digits", n);
    for (size_t i = 0; i < n; i++) {
        int d;

        KMS_ENSURE(isxdigit((unsigned char)s[i]), KMS_ERR_AUTH_RESPONSE,
                   "JSON-RPC quantity is not hex");
        d = isdigit((unsigned char)s[i]) ? s[i] - '0' : (tolower((unsigned char)s[i]) - 'a' + 10);
        KMS_ENSURE(x <= (UINT64_MAX >> 4), KMS_ERR_AUTH_RESPONSE,
                   "JSON-RPC quantity does not fit 64 bits");
        x = (x << 4) | (uint64_t)d;
    }
    *out = x;
out:
    return rc;
}

int kms_eth_data(const json_t *v, size_t max, uint8_t **out, size_t *len)
{
    const char *s = json_string_value(v);
    int rc = 0;

    *out = NULL;
    *len = 0;
    KMS_ENSURE(s != NULL && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'), KMS_ERR_AUTH_RESPONSE,
               "JSON-RPC data is not a 0x-prefixed hex string");
    KMS_ENSURE(strlen(s + 2) / 2 <= max, KMS_ERR_AUTH_RESPONSE,
               "JSON-RPC data is longer than %zu bytes", max);
    rc = kms_hex_decode(s, out, len);
    if (rc < 0)
        rc = kms_err_wrap(KMS_ERR_AUTH_RESPONSE, "JSON-RPC data");
out:
    return rc;
}

void kms_eth_fmt_quantity(uint64_t v, char *out, size_t cap)
{
    snprintf(out, cap, "0x%llx", (unsigned long long)v);
}

/* ---------------------------------------------------------------- calls */

/* Revert data in an eth_call error: error.data is the hex string (geth, anvil) or an object
 * holding it (some providers). */
static const json_t *revert_data(const json_t *err)
{
    const json_t *d = json_object_get(err, "data");

    if (json_is_object(d))
        d = json_object_get(d, "data");
    return json_is_string(d) ? d : NULL;
}

int kms_eth_call(const char *url, const struct kms_eth_rpc_opts *o, const uint8_t to[20],
                 const uint8_t *data, size_t n, const char *block, uint8_t **ret, size_t *ret_len)
{
    json_t *params = NULL, *res = NULL, *err = NULL;
    char *to_hex = NULL, *data_hex = NULL;
    uint8_t *rd = NULL;
    size_t rd_len = 0;
    int rc = 0;

    *ret = NULL;
    *ret_len = 0;
    to_hex = kms_hex_dup(to, 20, 1);
    data_hex = kms_hex_dup(data, n, 1);
    KMS_GUARD_PTR(to_hex);
    KMS_GUARD_PTR(data_hex);
    params = json_pack("[{s:s, s:s}, s]", "to", to_hex, "data", data_hex, block);
    KMS_GUARD_PTR(params);
    rc = kms_eth_rpc(url, o, "eth_call", params, &res, &err);
    params = NULL;
    if (rc == KMS_ERR_ETH_RPC && err != NULL) {
        const json_t *code = json_object_get(err, "code");
        const json_t *d = revert_data(err);
        const char *msg = json_string_value(json_object_get(err, "message"));

        if (d != NULL || (json_is_integer(code) && json_integer_value(code) == 3) ||
            (msg != NULL && strstr(msg, "revert") != NULL)) {
            char why[512];

            if (d != NULL && kms_eth_data(d, KMS_ETH_MAX_RETURN, &rd, &rd_len) == 0)
                kms_eth_revert_describe(rd, rd_len, why, sizeof(why));
            else
                snprintf(why, sizeof(why), "no revert data");
            rc = kms_err_set(KMS_ERR_ETH_REVERT, "execution reverted: %s", why);
        }
        goto out;
    }
    if (rc < 0)
        goto out;
    KMS_GUARD(kms_eth_data(res, KMS_ETH_MAX_RETURN, ret, ret_len));
out:
    json_decref(params);
    json_decref(res);
    json_decref(err);
    free(to_hex);
    free(data_hex);
    free(rd);
    return rc;
}

int kms_eth_block_number(const char *url, const struct kms_eth_rpc_opts *o, const char *tag,
                         uint64_t *num)
{
    json_t *res = NULL;
    int rc = 0;

    if (strcmp(tag, "latest") == 0) {
        KMS_GUARD(kms_eth_rpc(url, o, "eth_blockNumber", NULL, &res, NULL));
        KMS_GUARD(kms_eth_quantity(res, num));
    } else {
        json_t *params = json_pack("[s, b]", tag, 0);

        KMS_GUARD_PTR(params);
        KMS_GUARD(kms_eth_rpc(url, o, "eth_getBlockByNumber", params, &res, NULL));
        KMS_ENSURE(json_is_object(res), KMS_ERR_AUTH_RESPONSE,
                   "the RPC node has no \"%s\" block (eth_getBlockByNumber returned %s)", tag,
                   json_is_null(res) ? "null" : "a non-object");
        KMS_GUARD(kms_eth_quantity(json_object_get(res, "number"), num));
    }
out:
    json_decref(res);
    return rc;
}

int kms_eth_chain_id(const char *url, const struct kms_eth_rpc_opts *o, uint64_t *id)
{
    json_t *res = NULL;
    int rc = 0;

    KMS_GUARD(kms_eth_rpc(url, o, "eth_chainId", NULL, &res, NULL));
    KMS_GUARD(kms_eth_quantity(res, id));
out:
    json_decref(res);
    return rc;
}
