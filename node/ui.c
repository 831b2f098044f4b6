/* The embedded web UI: static pages from the generated asset table, and /status.json. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node/http.h"
#include "node/node.h"
#include "node/ui.h"
#include "replication/replication.h"

/* Scripts and styles from this origin only (no inline code, no eval); fetch to this origin. */
const char *const kms_ui_headers[] = {
    "Content-Security-Policy",
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options",
    "nosniff",
    "X-Frame-Options",
    "DENY",
    "Referrer-Policy",
    "no-referrer",
    "Cross-Origin-Opener-Policy",
    "same-origin",
    "Cross-Origin-Resource-Policy",
    "same-origin",
    "Cache-Control",
    "no-store",
    NULL,
};

static unsigned long counter(unsigned long *c)
{
    return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* Public facts only: state, public keys, peers, counters (the page derives rates). */
static void status_json(struct kms_node *n, struct kms_http_resp *resp)
{
    json_t *o = json_object();
    json_t *c = json_object();
    enum kms_node_state s = kms_node_effective_state(n);
    struct timespec now;
    char *txt = NULL;

    if (o == NULL || c == NULL)
        goto out;
    clock_gettime(CLOCK_REALTIME, &now);
    json_object_set_new(o, "state", json_string(kms_node_state_name(s)));
    json_object_set_new(o, "name", json_string(n->cfg.name != NULL ? n->cfg.name : ""));
    json_object_set_new(o, "insecure_simulation", json_boolean(n->cfg.insecure_sim));
    if (n->have_keys) {
        json_object_set_new(o, "domain", json_string(n->keys.domain));
        json_object_set_new(o, "k256_pubkey", kms_prpc_bytes(n->keys.k256_pubkey, 33));
        json_object_set_new(o, "ca_pubkey", kms_prpc_bytes(n->keys.ca_spki, n->keys.ca_spki_len));
    }
    /* self-authorization: the node's own boot was refused (or its keystore is sealed) */
    json_object_set_new(
        o, "self_authorized",
        json_boolean(s != KMS_STATE_NOT_AUTHORIZED && s != KMS_STATE_SEALED && n->have_keys));
    if (s == KMS_STATE_NOT_AUTHORIZED || s == KMS_STATE_SEALED)
        json_object_set_new(o, "reason", json_string(n->self_auth_reason));
    json_object_set_new(o, "peers", kms_repl_peers_json(n->repl));
    json_object_set_new(c, "keys_released", json_integer((json_int_t)counter(&n->m.keys_released)));
    json_object_set_new(c, "refusals_attestation",
                        json_integer((json_int_t)counter(&n->m.refusals_attestation)));
    json_object_set_new(c, "refusals_policy",
                        json_integer((json_int_t)counter(&n->m.refusals_policy)));
    json_object_set_new(c, "refusals_input",
                        json_integer((json_int_t)counter(&n->m.refusals_input)));
    json_object_set_new(c, "rpc_requests", json_integer((json_int_t)counter(&n->m.rpc_requests)));
    /* every attested RPC answered with an error: the refusals the page rates */
    json_object_set_new(c, "attested_requests",
                        json_integer((json_int_t)counter(&n->m.attestation_requests)));
    json_object_set_new(c, "attested_failures",
                        json_integer((json_int_t)counter(&n->m.attestation_failures)));
    json_object_set_new(o, "counters", c);
    c = NULL;
    json_object_set_new(
        o, "time_ms",
        json_integer((json_int_t)now.tv_sec * 1000 + (json_int_t)(now.tv_nsec / 1000000)));
    txt = json_dumps(o, JSON_COMPACT);
out:
    json_decref(c);
    json_decref(o);
    if (txt == NULL) {
        kms_http_resp_text(resp, 500, "application/json", "{\"error\": \"out of memory\"}");
        return;
    }
    kms_http_resp_own(resp, 200, "application/json", txt);
    resp->headers = kms_ui_headers;
}

int kms_ui_handle(struct kms_node *n, const struct kms_http_req *req, struct kms_http_resp *resp,
                  int onboard)
{
    const char *path = req->path;
    char *body;

    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0)
        return 0;
    if (strcmp(path, "/status.json") == 0) {
        status_json(n, resp);
        return 1;
    }
    /* "/" is the onboarding page, served by the onboard listener only */
    if (strcmp(path, "/") == 0 && !onboard)
        return 0;
    for (size_t i = 0; i < kms_ui_n_assets; i++) {
        const struct kms_ui_asset *a = &kms_ui_assets[i];

        if (strcmp(path, a->path) != 0)
            continue;
        body = malloc(a->len + 1);
        if (body == NULL) {
            kms_http_resp_text(resp, 500, "text/plain", "out of memory\n");
            return 1;
        }
        memcpy(body, a->data, a->len);
        body[a->len] = '\0';
        kms_http_resp_own_len(resp, 200, a->content_type, body, a->len);
        resp->headers = kms_ui_headers;
        return 1;
    }
    return 0;
}
