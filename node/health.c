/* GET /health (state with distinct HTTP codes, DESIGN.md §8) and GET /metrics (Prometheus). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/hex.h"
#include "node/http.h"
#include "node/node.h"
#include "replication/replication.h"

/* Distinct codes so a load balancer can route on the status alone. */
static int state_http_code(enum kms_node_state s)
{
    switch (s) {
    case KMS_STATE_SERVING:
        return 200;
    case KMS_STATE_DEGRADED:
        return 207;
    case KMS_STATE_UNINITIALIZED:
        return 503;
    case KMS_STATE_ONBOARDING:
        return 425;
    case KMS_STATE_NOT_AUTHORIZED:
        return 403;
    case KMS_STATE_SEALED:
        return 423;
    }
    return 500;
}

/* The node state with peer health folded in: SERVING becomes DEGRADED while a peer's last
 * completed check said DOWN or INCONSISTENT; every other state is returned unchanged. */
static enum kms_node_state effective_state(struct kms_node *n)
{
    enum kms_node_state s;

    pthread_mutex_lock(&n->lock);
    s = n->state;
    pthread_mutex_unlock(&n->lock);
    if (s == KMS_STATE_SERVING && kms_repl_degraded(n->repl))
        s = KMS_STATE_DEGRADED;
    return s;
}

static void health(struct kms_node *n, struct kms_http_resp *resp)
{
    json_t *o = json_object();
    enum kms_node_state s;
    char *txt;

    s = effective_state(n);
    json_object_set_new(o, "state", json_string(kms_node_state_name(s)));
    json_object_set_new(o, "insecure_simulation", json_boolean(n->cfg.insecure_sim));
    if (n->have_keys) {
        json_object_set_new(o, "k256_pubkey", kms_prpc_bytes(n->keys.k256_pubkey, 33));
        json_object_set_new(o, "ca_pubkey", kms_prpc_bytes(n->keys.ca_spki, n->keys.ca_spki_len));
        json_object_set_new(o, "domain", json_string(n->keys.domain));
    }
    if (s == KMS_STATE_NOT_AUTHORIZED || s == KMS_STATE_SEALED)
        json_object_set_new(o, "reason", json_string(n->self_auth_reason));
    json_object_set_new(o, "peers", kms_repl_peers_json(n->repl));
    txt = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    kms_http_resp_own(resp, state_http_code(s), "application/json", txt);
}

static void metrics(struct kms_node *n, struct kms_http_resp *resp)
{
    static const char *bounds[8] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "+Inf"};
    struct kms_buf b = {0};
    char line[512];
    unsigned long cum = 0;
    double sum;
    unsigned long count;
    int rc = 0;

#define EMIT(...)                                                                                  \
    do {                                                                                           \
        snprintf(line, sizeof(line), __VA_ARGS__);                                                 \
        KMS_GUARD(kms_buf_put_str(&b, line));                                                      \
    } while (0)
    EMIT("# HELP dstack_kms_attestation_requests_total Attested RPCs (GetAppKey, GetKmsKey, "
         "SignCert).\n# TYPE dstack_kms_attestation_requests_total counter\n"
         "dstack_kms_attestation_requests_total %lu\n",
         __atomic_load_n(&n->m.attestation_requests, __ATOMIC_RELAXED));
    EMIT("# HELP dstack_kms_attestation_failures_total Attested RPCs that failed.\n"
         "# TYPE dstack_kms_attestation_failures_total counter\n"
         "dstack_kms_attestation_failures_total %lu\n",
         __atomic_load_n(&n->m.attestation_failures, __ATOMIC_RELAXED));
    EMIT("# TYPE kmsd_rpc_requests_total counter\nkmsd_rpc_requests_total %lu\n",
         __atomic_load_n(&n->m.rpc_requests, __ATOMIC_RELAXED));
    EMIT("# TYPE kmsd_keys_released_total counter\nkmsd_keys_released_total %lu\n",
         __atomic_load_n(&n->m.keys_released, __ATOMIC_RELAXED));
    EMIT("# HELP kmsd_refusals_total Refused requests by reason.\n"
         "# TYPE kmsd_refusals_total counter\n"
         "kmsd_refusals_total{reason=\"attestation\"} %lu\n"
         "kmsd_refusals_total{reason=\"policy\"} %lu\n"
         "kmsd_refusals_total{reason=\"input\"} %lu\n",
         __atomic_load_n(&n->m.refusals_attestation, __ATOMIC_RELAXED),
         __atomic_load_n(&n->m.refusals_policy, __ATOMIC_RELAXED),
         __atomic_load_n(&n->m.refusals_input, __ATOMIC_RELAXED));
    EMIT("# HELP kmsd_attested_rpc_seconds Latency of attested RPCs.\n"
         "# TYPE kmsd_attested_rpc_seconds histogram\n");
    for (int i = 0; i < 8; i++) {
        cum += __atomic_load_n(&n->m.latency_bucket[i], __ATOMIC_RELAXED);
        EMIT("kmsd_attested_rpc_seconds_bucket{le=\"%s\"} %lu\n", bounds[i], cum);
    }
    pthread_mutex_lock(&n->lock);
    sum = n->m.latency_sum_s;
    count = n->m.latency_count;
    pthread_mutex_unlock(&n->lock);
    EMIT("kmsd_attested_rpc_seconds_sum %.6f\nkmsd_attested_rpc_seconds_count %lu\n", sum, count);
    EMIT("# TYPE kmsd_state gauge\nkmsd_state{state=\"%s\"} 1\n",
         kms_node_state_name(effective_state(n)));
    /* admin: the Admin listener's calls and token refusals */
    EMIT("# HELP kmsd_admin_requests_total Admin calls with a valid token.\n"
         "# TYPE kmsd_admin_requests_total counter\nkmsd_admin_requests_total %lu\n"
         "# HELP kmsd_admin_unauthorized_total Admin calls refused for a missing or wrong "
         "token.\n# TYPE kmsd_admin_unauthorized_total counter\n"
         "kmsd_admin_unauthorized_total %lu\n",
         __atomic_load_n(&n->m.admin_requests, __ATOMIC_RELAXED),
         __atomic_load_n(&n->m.admin_unauthorized, __ATOMIC_RELAXED));
    EMIT("# TYPE kmsd_insecure_simulation gauge\nkmsd_insecure_simulation %d\n",
         n->cfg.insecure_sim ? 1 : 0);
#undef EMIT
    KMS_GUARD(kms_repl_metrics(n->repl, &b));
    KMS_GUARD(kms_buf_put_u8(&b, 0));
    kms_http_resp_own(resp, 200, "text/plain; version=0.0.4", (char *)kms_buf_steal(&b, NULL));
out:
    if (rc < 0)
        kms_http_resp_text(resp, 500, "text/plain", "metrics unavailable\n");
    kms_buf_free(&b);
}

int kms_node_handle_common(struct kms_node *n, const struct kms_http_req *req,
                           struct kms_http_resp *resp)
{
    if (strcmp(req->path, "/health") == 0) {
        health(n, resp);
        return 1;
    }
    if (strcmp(req->path, "/metrics") == 0) {
        metrics(n, resp);
        return 1;
    }
    return 0;
}
