/*
 * chain: the `webhook` backend, a client of the reference auth-api (kms-reference.md §7):
 * POST <url>/bootAuth/{app,kms} with the BootInfo JSON (a '/' is added to url if missing),
 * GET <url> as configured for GetMeta.
 *
 * Unlike the reference (reqwest, no timeout) every call is bounded by the configured timeout,
 * the response is capped at WH_RESPONSE_MAX, only http/https are spoken, redirects are not
 * followed and proxies from the environment are ignored (the policy call goes where the
 * operator configured it, nowhere else). One curl easy handle per call: the backend is
 * stateless after construction and so safe to share between threads. Answer parsing is kept
 * apart from the HTTP exchange (kms_webhook_parse_*, internal.h) for the fuzz target.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chain/internal.h"
#include "common/buf.h"
#include "common/fetch.h"

#define WH_DEFAULT_TIMEOUT_MS 5000L
#define WH_MAX_TIMEOUT_MS (10L * 60L * 1000L)
#define WH_URL_MAX 2048u
#define WH_RESPONSE_MAX (1024u * 1024u)
#define WH_BODY_IN_DETAIL 256u /* bytes of an error body quoted in the detail */
#define WH_INFO_STR_MAX 4096u  /* longest string accepted in GET / */

struct webhook {
    char *url;       /* as configured: GET / goes here (the reference does not join) */
    char *base;      /* url with a trailing '/': POST base + "bootAuth/..." */
    char *shown_url; /* url and base with credentials removed, for messages */
    char *shown_base;
    long timeout_ms;
};

/* ---------------------------------------------------------------- URL handling */

static int has_prefix_ci(const char *s, const char *p)
{
    return strncasecmp(s, p, strlen(p)) == 0;
}

/* Accepts http(s)://host[:port][/path] made of visible ASCII, without query or fragment (a
 * path is appended to it). */
static int url_check(const char *url)
{
    const char *host;
    size_t n;
    int rc = 0;

    KMS_ENSURE(url != NULL && url[0] != '\0', KMS_ERR_INVAL,
               "auth_api.webhook.url is not set; give the auth-api base URL, e.g. "
               "http://auth-api:8000");
    n = strlen(url);
    KMS_ENSURE(n <= WH_URL_MAX, KMS_ERR_INVAL,
               "auth_api.webhook.url is %zu bytes long; at most %u are allowed", n, WH_URL_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];

        KMS_ENSURE(c > 0x20 && c < 0x7f, KMS_ERR_INVAL,
                   "auth_api.webhook.url has a space or control character at offset %zu", i);
        KMS_ENSURE(c != '?' && c != '#', KMS_ERR_INVAL,
                   "auth_api.webhook.url must not contain a query or fragment ('%c' at offset "
                   "%zu): the request path is appended to it",
                   c, i);
    }
    if (has_prefix_ci(url, "http://"))
        host = url + 7;
    else if (has_prefix_ci(url, "https://"))
        host = url + 8;
    else
        host = NULL;
    KMS_ENSURE(host != NULL, KMS_ERR_INVAL,
               "auth_api.webhook.url must start with http:// or https://");
    KMS_ENSURE(host[0] != '\0' && host[0] != '/', KMS_ERR_INVAL,
               "auth_api.webhook.url has no host");
out:
    return rc;
}

/* Copy of a checked URL with any user:password@ replaced by "***@". Caller frees. */
static char *url_redact(const char *url)
{
    const char *auth = strstr(url, "://") + 3;
    const char *end = auth + strcspn(auth, "/");
    const char *at = NULL;
    char *s;
    size_t n;

    for (const char *p = auth; p < end; p++) {
        if (*p == '@')
            at = p;
    }
    if (at == NULL)
        return strdup(url);
    n = (size_t)(auth - url) + 3 + strlen(at) + 1;
    s = malloc(n);
    if (s == NULL)
        return NULL;
    snprintf(s, n, "%.*s***%s", (int)(auth - url), url, at);
    return s;
}

/* ---------------------------------------------------------------- HTTP */

/* Writes at most max bytes of p into out (size outsz) with non-printable bytes as '.'. */
static void sanitize(const uint8_t *p, size_t len, size_t max, char *out, size_t outsz)
{
    size_t n = len < max ? len : max;
    size_t i;

    if (n > outsz - 4)
        n = outsz - 4;
    for (i = 0; i < n; i++)
        out[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '.';
    if (n < len) {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
}

/* The detail for a failed transfer (kms_fetch's rc and resp). */
static int wh_fetch_error(const struct webhook *w, const char *method, const char *shown,
                          const char *path, int rc, const struct kms_fetch_resp *fr)
{
    if (rc == KMS_ERR_TIMEOUT)
        return kms_err_set(KMS_ERR_AUTH_TIMEOUT,
                           "auth-api did not answer within %ld ms (%s %s%s); check that it is "
                           "running and healthy",
                           w->timeout_ms, method, shown, path);
    if (rc == KMS_ERR_TOOBIG)
        return kms_err_set(KMS_ERR_AUTH_RESPONSE, "auth-api response to %s %s%s exceeds %u bytes",
                           method, shown, path, WH_RESPONSE_MAX);
    if (rc == KMS_ERR_NOMEM)
        return kms_err_set(KMS_ERR_NOMEM, "out of memory reading the auth-api response");
    if (rc != KMS_ERR_NET)
        return rc; /* option or handle failure: kms_fetch's detail */
    switch (fr->cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return kms_err_set(KMS_ERR_AUTH_UNREACHABLE,
                           "cannot connect to the auth-api at %s%s: %s; check "
                           "auth_api.webhook.url and that the auth-api is running",
                           shown, path, kms_fetch_why(fr));
    default:
        return kms_err_set(KMS_ERR_AUTH_UNREACHABLE, "auth-api request %s %s%s failed: %s", method,
                           shown, path, kms_fetch_why(fr));
    }
}

/*
 * The JSON object of a 2xx answer to method shown+path (for messages). body may be NULL when
 * len is 0. *json: new reference (caller decrefs).
 */
static int wh_parse_json(const char *body, size_t len, const char *method, const char *shown,
                         const char *path, json_t **json)
{
    char quoted[WH_BODY_IN_DETAIL + 4];
    char why[sizeof(((json_error_t *)NULL)->text) + 4];
    json_error_t jerr;
    json_t *j = NULL;
    int rc = 0;

    *json = NULL;
    sanitize((const uint8_t *)body, len, WH_BODY_IN_DETAIL, quoted, sizeof(quoted));
    j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        /* jansson quotes the offending token raw ("near '...'"): sanitize it like the body */
        sanitize((const uint8_t *)jerr.text, strlen(jerr.text), sizeof(jerr.text), why,
                 sizeof(why));
        rc = kms_err_set(KMS_ERR_AUTH_RESPONSE,
                         "auth-api %s %s%s answered with invalid JSON (%s, line %d): %s", method,
                         shown, path, why, jerr.line, quoted);
        goto out;
    }
    KMS_ENSURE(json_is_object(j), KMS_ERR_AUTH_RESPONSE,
               "auth-api %s %s%s answered with JSON that is not an object: %s", method, shown, path,
               quoted);
    *json = j;
    j = NULL;
out:
    json_decref(j);
    return rc;
}

/*
 * One request: GET the configured URL (body NULL, path "") or POST base+path with a JSON body.
 * On 2xx returns 0 with the answer's body in *resp (zeroed by the call; caller frees with
 * kms_buf_free, also on error). Errors: see auth.h.
 */
static int wh_request(const struct webhook *w, const char *path, const char *body,
                      struct kms_buf *resp)
{
    static const char *const get_hdrs[] = {"Accept: application/json", NULL};
    /* No "Expect: 100-continue" round trip for larger bodies. */
    static const char *const post_hdrs[] = {"Accept: application/json",
                                            "Content-Type: application/json", "Expect:", NULL};
    const char *method = body != NULL ? "POST" : "GET";
    const char *prefix = body != NULL ? w->base : w->url;
    const char *shown = body != NULL ? w->shown_base : w->shown_url;
    char quoted[WH_BODY_IN_DETAIL + 4];
    struct kms_fetch_req req = {0};
    struct kms_fetch_resp fr = {0};
    char *url = NULL;
    size_t n;
    int rc = 0;

    memset(resp, 0, sizeof(*resp));
    n = strlen(prefix) + strlen(path) + 1;
    url = malloc(n);
    KMS_GUARD_PTR(url);
    snprintf(url, n, "%s%s", prefix, path);

    req.url = url;
    req.timeout_ms = w->timeout_ms;
    req.max_body = WH_RESPONSE_MAX;
    req.user_agent = "kmsd";
    req.no_env_proxy = 1; /* ignore http_proxy & co from the environment */
    req.headers = body != NULL ? post_hdrs : get_hdrs;
    if (body != NULL) {
        req.post = body;
        req.post_len = strlen(body);
    }
    rc = kms_fetch(&req, &fr);
    if (rc < 0) {
        rc = wh_fetch_error(w, method, shown, path, rc, &fr);
        goto out;
    }
    sanitize(fr.body.data, fr.body.len, WH_BODY_IN_DETAIL, quoted, sizeof(quoted));
    KMS_ENSURE(fr.status >= 200 && fr.status <= 299, KMS_ERR_AUTH_HTTP,
               "auth-api %s %s%s returned HTTP %ld: %s", method, shown, path, fr.status, quoted);
    *resp = fr.body;
    memset(&fr.body, 0, sizeof(fr.body));
out:
    kms_fetch_resp_free(&fr);
    free(url);
    return rc;
}

/* ---------------------------------------------------------------- response fields */

/* Borrowed string field; required. */
static int get_str(json_t *obj, const char *key, const char *what, size_t max, const char **out)
{
    json_t *v = json_object_get(obj, key);
    int rc = 0;

    KMS_ENSURE(v != NULL, KMS_ERR_AUTH_RESPONSE, "auth-api %s response lacks required field %s",
               what, key);
    KMS_ENSURE(json_is_string(v), KMS_ERR_AUTH_RESPONSE,
               "auth-api %s response field %s is not a string", what, key);
    KMS_ENSURE(json_string_length(v) <= max, KMS_ERR_AUTH_RESPONSE,
               "auth-api %s response field %s is %zu bytes; at most %zu are allowed", what, key,
               json_string_length(v), max);
    *out = json_string_value(v);
out:
    return rc;
}

static int dup_str(json_t *obj, const char *key, char **out)
{
    const char *s;
    int rc = 0;

    KMS_GUARD(get_str(obj, key, "GET /", WH_INFO_STR_MAX, &s));
    *out = strdup(s);
    KMS_GUARD_PTR(*out);
out:
    return rc;
}

/* ---------------------------------------------------------------- response parsing */

int kms_webhook_parse_decision(const char *body, size_t len, const char *shown_base,
                               const char *path, struct kms_auth_result *out)
{
    json_t *resp = NULL;
    json_t *v;
    const char *gw;
    const char *reason;
    int rc = 0;

    KMS_GUARD(wh_parse_json(body, len, "POST", shown_base, path, &resp));
    v = json_object_get(resp, "isAllowed");
    KMS_ENSURE(v != NULL, KMS_ERR_AUTH_RESPONSE,
               "auth-api %s response lacks required field isAllowed", path);
    KMS_ENSURE(json_is_boolean(v), KMS_ERR_AUTH_RESPONSE,
               "auth-api %s response field isAllowed is not a boolean", path);
    KMS_GUARD(get_str(resp, "gatewayAppId", path, sizeof(out->gateway_app_id) - 1, &gw));
    /* reason is informational: any length is accepted and truncated on copy. */
    KMS_GUARD(get_str(resp, "reason", path, WH_RESPONSE_MAX, &reason));
    KMS_GUARD(kms_auth_result_set(out, json_is_true(v), reason, gw));
out:
    json_decref(resp);
    return rc;
}

int kms_webhook_parse_info(const char *body, size_t len, const char *shown_url,
                           struct kms_auth_info *out)
{
    json_t *resp = NULL;
    json_t *v;
    int rc = 0;

    KMS_GUARD(wh_parse_json(body, len, "GET", shown_url, "", &resp));
    KMS_GUARD(dup_str(resp, "status", &out->status));
    KMS_GUARD(dup_str(resp, "kmsContractAddr", &out->kms_contract_addr));
    KMS_GUARD(dup_str(resp, "gatewayAppId", &out->gateway_app_id));
    v = json_object_get(resp, "chainId");
    KMS_ENSURE(v != NULL, KMS_ERR_AUTH_RESPONSE,
               "auth-api GET / response lacks required field chainId");
    /* serde u64: a non-negative integer; jansson already rejects values beyond int64. */
    KMS_ENSURE(json_is_integer(v) && json_integer_value(v) >= 0, KMS_ERR_AUTH_RESPONSE,
               "auth-api GET / response field chainId is not a non-negative integer");
    out->chain_id = (uint64_t)json_integer_value(v);
    KMS_GUARD(dup_str(resp, "appImplementation", &out->app_implementation));
    /* optional (upstream's auth-api may name its RPC; GetAttestationInfo shows it) */
    v = json_object_get(resp, "ethRpcUrl");
    if (v != NULL && !json_is_null(v))
        KMS_GUARD(dup_str(resp, "ethRpcUrl", &out->eth_rpc_url));
out:
    json_decref(resp);
    return rc;
}

/* ---------------------------------------------------------------- backend ops */

static int wh_check(void *priv, int is_kms, const struct kms_boot_info *bi,
                    struct kms_auth_result *out)
{
    const struct webhook *w = priv;
    const char *path = is_kms ? "bootAuth/kms" : "bootAuth/app";
    struct kms_buf resp = {0};
    char *body = NULL;
    int rc = 0;

    body = kms_auth_boot_info_json(bi);
    if (body == NULL) {
        rc = kms_err_wrap(KMS_ERR_INVAL, "cannot encode BootInfo for the auth-api");
        goto out;
    }
    KMS_GUARD(wh_request(w, path, body, &resp));
    KMS_GUARD(
        kms_webhook_parse_decision((const char *)resp.data, resp.len, w->shown_base, path, out));
out:
    kms_buf_free(&resp);
    free(body);
    return rc;
}

static int wh_info(void *priv, struct kms_auth_info *out)
{
    const struct webhook *w = priv;
    struct kms_buf resp = {0};
    int rc = 0;

    KMS_GUARD(wh_request(w, "", NULL, &resp));
    KMS_GUARD(kms_webhook_parse_info((const char *)resp.data, resp.len, w->shown_url, out));
out:
    kms_buf_free(&resp);
    return rc;
}

static void wh_free(void *priv)
{
    struct webhook *w = priv;

    if (w == NULL)
        return;
    free(w->url);
    free(w->base);
    free(w->shown_url);
    free(w->shown_base);
    free(w);
}

static const struct kms_auth_ops webhook_ops = {
    .name = "webhook",
    .check = wh_check,
    .info = wh_info,
    .free = wh_free,
};

int kms_auth_webhook_new(const struct kms_auth_cfg *cfg, struct kms_auth **out)
{
    struct webhook *w = NULL;
    size_t n;
    int rc = 0;

    KMS_GUARD(url_check(cfg->webhook_url));
    KMS_ENSURE(cfg->timeout_ms >= 0 && cfg->timeout_ms <= WH_MAX_TIMEOUT_MS, KMS_ERR_INVAL,
               "auth-api timeout %ld ms is out of range (0 for the default %ld, at most %ld)",
               cfg->timeout_ms, WH_DEFAULT_TIMEOUT_MS, WH_MAX_TIMEOUT_MS);
    w = calloc(1, sizeof(*w));
    KMS_GUARD_PTR(w);
    w->timeout_ms = cfg->timeout_ms != 0 ? cfg->timeout_ms : WH_DEFAULT_TIMEOUT_MS;
    w->url = strdup(cfg->webhook_url);
    KMS_GUARD_PTR(w->url);
    n = strlen(cfg->webhook_url);
    w->base = malloc(n + 2);
    KMS_GUARD_PTR(w->base);
    memcpy(w->base, cfg->webhook_url, n + 1);
    /* url_join of the reference: append '/' if missing, then the path. */
    if (w->base[n - 1] != '/') {
        w->base[n] = '/';
        w->base[n + 1] = '\0';
    }
    w->shown_url = url_redact(w->url);
    KMS_GUARD_PTR(w->shown_url);
    w->shown_base = url_redact(w->base);
    KMS_GUARD_PTR(w->shown_base);
    rc = kms_auth_wrap(&webhook_ops, w, 0, out);
    w = NULL; /* owned by the handle, or freed by kms_auth_wrap */
out:
    wh_free(w);
    return rc;
}
