/* Onboard service (plain HTTP, before keys exist): Bootstrap, Onboard, GetAttestationInfo,
 * Finish, GET /finish (kms-reference.md §1.1), and the onboarding page at / (node/ui.h). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"
#include "common/log.h"
#include "node/http.h"
#include "node/node.h"
#include "node/proto.h"
#include "node/ui.h"
#include "replication/replication.h"

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

/* kmsd extension (ui: the Onboard form): optional identity pins in the JSON request,
 * checked before anything is stored. Refused up front when malformed. */
static int onboard_pins(json_t *body, struct kms_repl_pins *pins)
{
    static const char *const names[2] = {"expect_k256_pubkey", "expect_ca_spki"};
    const char **dst[2] = {&pins->k256_pubkey, &pins->ca_spki};
    int rc = 0;

    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(body, names[i]);
        uint8_t *raw = NULL;
        size_t len = 0;

        *dst[i] = NULL;
        if (v == NULL || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0))
            continue;
        KMS_ENSURE(json_is_string(v), KMS_ERR_INVAL,
                   "failed to decode request: %s must be a hex string", names[i]);
        rc = kms_hex_decode(json_string_value(v), &raw, &len);
        free(raw);
        KMS_ENSURE(rc == 0, KMS_ERR_INVAL, "failed to decode request: %s is not hex", names[i]);
        KMS_ENSURE(i != 0 || len == 33, KMS_ERR_INVAL,
                   "failed to decode request: expect_k256_pubkey must be 33 bytes (a compressed "
                   "public key, 66 hex digits)");
        KMS_ENSURE(len > 0 && len <= 1024, KMS_ERR_INVAL,
                   "failed to decode request: expect_ca_spki must be 1 to 1024 bytes");
        *dst[i] = json_string_value(v);
    }
out:
    return rc;
}

static void do_onboard(struct kms_node *n, struct kms_rpc_caller *c, json_t *body,
                       struct kms_http_resp *resp)
{
    json_t *src = json_object_get(body, "source_url");
    json_t *dom = json_object_get(body, "domain");
    struct kms_repl_pins pins;
    uint8_t k256_pub[33];
    json_t *o;
    int rc;

    (void)c;
    if (!json_is_string(src) || !json_is_string(dom)) {
        kms_prpc_error(resp, "failed to decode request: source_url and domain must be strings");
        return;
    }
    if (onboard_pins(body, &pins) < 0) {
        kms_prpc_error(resp, kms_err_detail());
        return;
    }
    rc = kms_repl_onboard_pinned(n->repl, json_string_value(src), json_string_value(dom), &pins,
                                 k256_pub);
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
    const char *rpc;
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
    /* --auth eth: the first --eth-rpc; webhook: what the auth-api's GET / names (ethRpcUrl,
     * as upstream forwards it); dev: none */
    rpc = n->cfg.n_eth_rpc_urls > 0 ? n->cfg.eth_rpc_urls[0] : info.eth_rpc_url;
    if (rpc != NULL && rpc[0] != '\0') {
        char *u = public_rpc_url(rpc);

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

/* ui: a browser's cross-site request (another page POSTing to this unauthenticated listener)
 * carries an Origin naming another host; kmsctl and same-origin pages pass. */
static int same_origin(const struct kms_http_req *req)
{
    const char *origin = kms_http_header(req, "Origin");
    const char *host = kms_http_header(req, "Host");

    if (origin == NULL)
        return 1;
    if (host == NULL || strncmp(origin, "http://", 7) != 0)
        return 0;
    return strcmp(origin + 7, host) == 0;
}

static void refuse_cross_origin(struct kms_http_resp *resp)
{
    kms_http_resp_text(resp, 403, "application/json",
                       "{\"error\": \"cross-origin request refused: open the onboarding page on "
                       "this node's own address\"}");
}

void kms_onboard_handle(void *arg, const struct kms_http_req *req, struct kms_http_resp *resp)
{
    struct kms_node *n = arg;
    const char *m;
    json_t *body;

    if (kms_node_handle_common(n, req, resp))
        return;
    if (kms_ui_handle(n, req, resp, 1))
        return;
    if (strcmp(req->path, "/finish") == 0) {
        if (!same_origin(req))
            refuse_cross_origin(resp);
        else if (finish_allowed(n, resp)) {
            kms_http_resp_text(resp, 200, "text/plain", "OK");
            resp->on_sent = request_finish;
            resp->on_sent_arg = n;
        }
        return;
    }
    m = kms_prpc_method(req->path, "Onboard");
    if (m != NULL && !same_origin(req)) {
        refuse_cross_origin(resp);
        return;
    }
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
