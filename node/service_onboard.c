/* Onboard service (plain HTTP, before keys exist): Bootstrap, Onboard, GetAttestationInfo,
 * Finish, GET /finish (kms-reference.md §1.1). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "node/http.h"
#include "node/node.h"
#include "node/proto.h"
#include "replication/replication.h"

static const char onboard_page[] =
    "<!doctype html><html><head><title>kmsd onboarding</title></head><body>"
    "<h1>kmsd: no keys yet</h1>"
    "<p>Bootstrap a new cluster: <code>kmsctl bootstrap --onboard-url URL --domain NAME</code></p>"
    "<p>Join an existing cluster: <code>kmsctl onboard --onboard-url URL --source KMS_URL "
    "--domain NAME</code></p>"
    "<p>pRPC: POST /prpc/Onboard.Bootstrap?json, /prpc/Onboard.Onboard?json, "
    "/prpc/Onboard.GetAttestationInfo?json, /prpc/Onboard.Finish?json; GET /finish.</p>"
    "</body></html>";

static void request_finish(void *arg)
{
    struct kms_node *n = arg;

    pthread_mutex_lock(&n->lock);
    n->finish_requested = 1;
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
}

static void do_bootstrap(struct kms_node *n, struct kms_rpc_caller *c, json_t *body,
                         struct kms_http_resp *resp)
{
    json_t *d = json_object_get(body, "domain");
    char *out = NULL;
    json_t *o;
    int rc;

    (void)c;
    if (d != NULL && !json_is_string(d)) {
        kms_prpc_error(resp, "failed to decode request: domain must be a string");
        return;
    }
    rc = kms_node_bootstrap(n, d != NULL ? json_string_value(d) : "", &out);
    if (rc < 0) {
        KMS_WARN("Bootstrap refused: %s", kms_err_detail());
        kms_prpc_error(resp, kms_err_detail());
        return;
    }
    o = json_loads(out, 0, NULL);
    free(out);
    if (o == NULL) {
        kms_prpc_error(resp, "internal error encoding the bootstrap response");
        return;
    }
    kms_prpc_ok(resp, o);
}

static void do_onboard(struct kms_node *n, struct kms_rpc_caller *c, json_t *body,
                       struct kms_http_resp *resp)
{
    json_t *src = json_object_get(body, "source_url");
    json_t *dom = json_object_get(body, "domain");
    uint8_t k256_pub[33];
    json_t *o;
    int rc;

    (void)c;
    if (!json_is_string(src) || !json_is_string(dom)) {
        kms_prpc_error(resp, "failed to decode request: source_url and domain must be strings");
        return;
    }
    rc = kms_repl_onboard(n->repl, json_string_value(src), json_string_value(dom), k256_pub);
    if (rc < 0) {
        KMS_WARN("Onboard refused: %s", kms_err_detail());
        kms_prpc_error(resp, kms_err_detail());
        return;
    }
    o = json_object();
    json_object_set_new(o, "k256_pubkey", kms_prpc_bytes(k256_pub, 33));
    kms_prpc_ok(resp, o);
}

/* The RPC URL as GetAttestationInfo shows it: scheme://host[:port] of the first --eth-rpc, with
 * "/<hidden>" when a path, query or user info was dropped. The reference forwards the backend's
 * URL verbatim, but providers put API keys there (…/v2/KEY, ?apikey=, user:pass@) and this
 * answer is served to anyone on the plain-HTTP Onboard listener. NULL when out of memory. */
static char *public_rpc_url(const char *url)
{
    const char *p = strstr(url, "://"), *host, *end, *at;
    size_t hl, cap;
    char *out;
    int hidden;

    if (p == NULL)
        return strdup("<hidden>");
    host = p + 3;
    end = host + strcspn(host, "/?#");
    at = memchr(host, '@', (size_t)(end - host));
    hidden = at != NULL || (*end != '\0' && strcmp(end, "/") != 0);
    if (at != NULL) {
        /* the last '@' of the authority ends the user info */
        for (const char *q = at; q < end; q++) {
            if (*q == '@')
                at = q;
        }
        host = at + 1;
    }
    hl = (size_t)(end - host);
    cap = (size_t)(p - url) + 3 + hl + sizeof("/<hidden>");
    out = malloc(cap);
    if (out == NULL)
        return NULL;
    snprintf(out, cap, "%.*s://%.*s%s", (int)(p - url), url, (int)hl, host,
             hidden ? "/<hidden>" : "");
    return out;
}

static void do_attestation_info(struct kms_node *n, struct kms_rpc_caller *c, json_t *body,
                                struct kms_http_resp *resp)
{
    uint8_t rd[64] = {0};
    struct kms_attestation *att = NULL;
    struct kms_verified v;
    struct kms_boot_info bi;
    struct kms_auth_info info;
    json_t *o;
    int rc;

    (void)c;
    (void)body;
    memset(&v, 0, sizeof(v));
    memset(&bi, 0, sizeof(bi));
    memset(&info, 0, sizeof(info));
    rc = kms_node_attest(n, rd, &att);
    if (rc == 0)
        rc = kms_attest_verify(n->actx, att, &v);
    if (rc == 0)
        rc = kms_boot_info_derive(n->actx, att, &v, NULL, 0, &bi);
    if (rc < 0) {
        kms_prpc_error(resp, kms_err_detail());
        goto out;
    }
    if (kms_auth_info(n->auth, &info) < 0)
        memset(&info, 0, sizeof(info));
    o = json_object();
    json_object_set_new(o, "device_id", kms_prpc_bytes(bi.device_id, 32));
    json_object_set_new(o, "mr_aggregated", kms_prpc_bytes(bi.mr_aggregated, 32));
    json_object_set_new(o, "os_image_hash",
                        kms_prpc_bytes(bi.os_image_hash.p, bi.os_image_hash.len));
    json_object_set_new(o, "tee_variant", json_string(kms_att_mode_name(bi.mode)));
    json_object_set_new(o, "site_name", json_string(n->cfg.name != NULL ? n->cfg.name : ""));
    if (n->cfg.n_eth_rpc_urls > 0) {
        char *u = public_rpc_url(n->cfg.eth_rpc_urls[0]);

        json_object_set_new(o, "eth_rpc_url", json_string(u != NULL ? u : ""));
        free(u);
    } else {
        json_object_set_new(o, "eth_rpc_url", json_string(""));
    }
    json_object_set_new(o, "kms_contract_address",
                        json_string(info.kms_contract_addr != NULL ? info.kms_contract_addr : ""));
    json_object_set_new(o, "ppid", kms_prpc_bytes(v.ppid, v.ppid_len));
    kms_prpc_ok(resp, o);
out:
    kms_auth_info_clear(&info);
    kms_boot_info_free(&bi);
    kms_verified_free(&v);
    kms_att_free(att);
}

static int finish_allowed(struct kms_node *n, struct kms_http_resp *resp)
{
    int rc = kms_store_has_identity(n->store);

    if (rc != 1) {
        kms_prpc_error(resp, "no keys yet: call Bootstrap or Onboard before Finish");
        return 0;
    }
    return 1;
}

/* Finish: the listener stops once this answer is out. */
static void do_finish(struct kms_node *n, struct kms_rpc_caller *c, json_t *body,
                      struct kms_http_resp *resp)
{
    (void)c;
    (void)body;
    if (finish_allowed(n, resp)) {
        kms_prpc_ok(resp, json_null());
        resp->on_sent = request_finish;
        resp->on_sent_arg = n;
    }
}

/* The Onboard service (kms_rpc.proto `service Onboard`); none of it is attested. */
static const struct kms_pb_method onboard_methods[] = {
    {"Bootstrap", do_bootstrap, 0, &kms_pb_BootstrapRequest, &kms_pb_BootstrapResponse},
    {"Onboard", do_onboard, 0, &kms_pb_OnboardRequest, &kms_pb_OnboardResponse},
    {"Finish", do_finish, 0, NULL, NULL},
    {"GetAttestationInfo", do_attestation_info, 0, NULL, &kms_pb_AttestationInfoResponse},
};

const struct kms_pb_service kms_onboard_service = {
    "Onboard", onboard_methods, sizeof(onboard_methods) / sizeof(onboard_methods[0])};

void kms_onboard_handle(void *arg, const struct kms_http_req *req, struct kms_http_resp *resp)
{
    struct kms_node *n = arg;
    const char *m;
    json_t *body;

    if (kms_node_handle_common(n, req, resp))
        return;
    if (strcmp(req->path, "/") == 0 && strcmp(req->method, "GET") == 0) {
        kms_http_resp_text(resp, 200, "text/html; charset=utf-8", onboard_page);
        return;
    }
    if (strcmp(req->path, "/finish") == 0) {
        if (finish_allowed(n, resp)) {
            kms_http_resp_text(resp, 200, "text/plain", "OK");
            resp->on_sent = request_finish;
            resp->on_sent_arg = n;
        }
        return;
    }
    m = kms_prpc_method(req->path, "Onboard");
    if (m == NULL) {
        kms_http_resp_text(resp, 404, "application/json", "{\"error\": \"not found\"}");
        return;
    }
    kms_prpc_begin(req, resp, "Onboard", m);
    body = kms_prpc_body(req, resp);
    if (body == NULL)
        return;
    kms_prpc_call(n, NULL, m, body, resp);
    json_decref(body);
}
