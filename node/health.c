/* GET /health (state with distinct HTTP codes, DESIGN.md §8) and GET /metrics (Prometheus). */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/hex.h"
#include "common/version.h"
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

enum kms_node_state kms_node_effective_state(struct kms_node *n)
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

    s = kms_node_effective_state(n);
    json_object_set_new(o, "state", json_string(kms_node_state_name(s)));
    json_object_set_new(o, "insecure_simulation", json_boolean(n->cfg.insecure_sim));
    if (n->have_keys) {
        json_object_set_new(o, "k256_pubkey", kms_prpc_bytes(n->keys.k256_pubkey, 33));
        json_object_set_new(o, "ca_pubkey", kms_prpc_bytes(n->keys.ca_spki, n->keys.ca_spki_len));
        json_object_set_new(o, "domain", json_string(n->keys.domain));
    }
    if (s == KMS_STATE_NOT_AUTHORIZED || s == KMS_STATE_SEALED) {
        char why[sizeof(n->self_auth_reason)];

        (void)kms_node_self_auth_reason(n, why, sizeof(why));
        json_object_set_new(o, "reason", json_string(why));
    }
    /* auth: denied by policy vs backend unreachable, with the reason */
    json_object_set_new(o, "self_auth", kms_node_self_auth_json(n));
    json_object_set_new(o, "peers", kms_repl_peers_json(n->repl));
    txt = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    kms_http_resp_own(resp, state_http_code(s), "application/json", txt);
}

/* ---- /metrics (Prometheus text format 0.0.4; `promtool check metrics` clean) ----
 * Every family has HELP and TYPE. The reference's two counters keep their names
 * (dstack_kms_*); process_* are the names Prometheus client libraries use. The reference of
 * every metric: docs/observability.md. */

const double kms_node_latency_bounds[KMS_NODE_LATENCY_BUCKETS - 1] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

static unsigned long load(unsigned long *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* "# HELP name help\n# TYPE name type\n" */
static int family(struct kms_buf *b, const char *name, const char *type, const char *help)
{
    char line[512];

    snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    return kms_buf_put_str(b, line);
}

/* One sample: name, optional {labels}, value (whole numbers up to 2^53 printed exactly). */
static int sample(struct kms_buf *b, const char *name, const char *labels, double v)
{
    char line[512];
    char num[40];

    if (v >= 0 && v < 9007199254740992.0 && v == (double)(unsigned long long)v)
        snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
    else
        snprintf(num, sizeof(num), "%.9g", v);
    snprintf(line, sizeof(line), "%s%s%s%s %s\n", name, labels != NULL ? "{" : "",
             labels != NULL ? labels : "", labels != NULL ? "}" : "", num);
    return kms_buf_put_str(b, line);
}

/* A family with one unlabelled sample. */
static int single(struct kms_buf *b, const char *name, const char *type, const char *help, double v)
{
    int rc = family(b, name, type, help);

    return rc < 0 ? rc : sample(b, name, NULL, v);
}

static int metrics_rpc(struct kms_node *n, struct kms_buf *b)
{
    struct kms_node_metrics *m = &n->m;
    static const char *refusal_reasons[] = {"attestation", "policy", "backend", "input",
                                            "internal"};
    unsigned long *refusals[] = {&m->refusals_attestation, &m->refusals_policy,
                                 &m->refusals_backend, &m->refusals_input, &m->refusals_internal};
    int rc = 0;

    KMS_GUARD(single(b, "dstack_kms_attestation_requests_total", "counter",
                     "Attested RPCs (GetAppKey, GetKmsKey, SignCert).",
                     (double)load(&m->attestation_requests)));
    KMS_GUARD(single(b, "dstack_kms_attestation_failures_total", "counter",
                     "Attested RPCs answered with a status of 400 or more.",
                     (double)load(&m->attestation_failures)));
    KMS_GUARD(single(b, "kmsd_rpc_requests_total", "counter",
                     "KMS service RPCs received (every method).", (double)load(&m->rpc_requests)));
    KMS_GUARD(single(b, "kmsd_keys_released_total", "counter", "App keys released by GetAppKey.",
                     (double)load(&m->keys_released)));
    KMS_GUARD(family(b, "kmsd_refusals_total", "counter",
                     "Refused requests by reason: attestation, policy (a denial), backend (the "
                     "authorization backend failed or was unreachable), input, internal."));
    for (size_t i = 0; i < sizeof(refusal_reasons) / sizeof(refusal_reasons[0]); i++) {
        char label[64];

        snprintf(label, sizeof(label), "reason=\"%s\"", refusal_reasons[i]);
        KMS_GUARD(sample(b, "kmsd_refusals_total", label, (double)load(refusals[i])));
    }
out:
    return rc;
}

static int metrics_latency(struct kms_node *n, struct kms_buf *b)
{
    unsigned long cum = 0;
    unsigned long count;
    double sum;
    int rc = 0;

    KMS_GUARD(family(b, "kmsd_attested_rpc_seconds", "histogram",
                     "Latency of attested RPCs (GetAppKey, GetKmsKey, SignCert)."));
    for (int i = 0; i < KMS_NODE_LATENCY_BUCKETS; i++) {
        char label[32];

        cum += load(&n->m.latency_bucket[i]);
        if (i < KMS_NODE_LATENCY_BUCKETS - 1)
            snprintf(label, sizeof(label), "le=\"%g\"", kms_node_latency_bounds[i]);
        else
            snprintf(label, sizeof(label), "le=\"+Inf\"");
        KMS_GUARD(sample(b, "kmsd_attested_rpc_seconds_bucket", label, (double)cum));
    }
    pthread_mutex_lock(&n->lock);
    sum = n->m.latency_sum_s;
    count = n->m.latency_count;
    pthread_mutex_unlock(&n->lock);
    /* the buckets are read without the lock: never let +Inf fall below _count */
    if (count < cum)
        count = cum;
    KMS_GUARD(sample(b, "kmsd_attested_rpc_seconds_sum", NULL, sum));
    KMS_GUARD(sample(b, "kmsd_attested_rpc_seconds_count", NULL, (double)count));
out:
    return rc;
}

static int metrics_node(struct kms_node *n, struct kms_buf *b)
{
    static const enum kms_node_state states[] = {KMS_STATE_UNINITIALIZED, KMS_STATE_ONBOARDING,
                                                 KMS_STATE_SERVING,       KMS_STATE_DEGRADED,
                                                 KMS_STATE_SEALED,        KMS_STATE_NOT_AUTHORIZED};
    enum kms_node_state cur = kms_node_effective_state(n);
    char label[64];
    int rc = 0;

    KMS_GUARD(family(b, "kmsd_state", "gauge",
                     "1 for the node's current state (as /health), 0 for the others."));
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
        snprintf(label, sizeof(label), "state=\"%s\"", kms_node_state_name(states[i]));
        KMS_GUARD(sample(b, "kmsd_state", label, states[i] == cur ? 1 : 0));
    }
    /* admin: the Admin listener's calls and token refusals */
    KMS_GUARD(single(b, "kmsd_admin_requests_total", "counter", "Admin calls with a valid token.",
                     (double)load(&n->m.admin_requests)));
    KMS_GUARD(single(b, "kmsd_admin_unauthorized_total", "counter",
                     "Admin calls refused for a missing or wrong token.",
                     (double)load(&n->m.admin_unauthorized)));
    KMS_GUARD(single(b, "kmsd_insecure_simulation", "gauge",
                     "1 when the node accepts simulated attestations (--insecure-sim).",
                     n->cfg.insecure_sim ? 1 : 0));
    KMS_GUARD(family(b, "kmsd_build_info", "gauge", "Always 1; the kmsd version as a label."));
    snprintf(label, sizeof(label), "version=\"%s\"", KMS_VERSION_STRING);
    KMS_GUARD(sample(b, "kmsd_build_info", label, 1));
out:
    return rc;
}

/* Process metrics from /proc (Linux); a value that cannot be read is left out. */
static int metrics_process(struct kms_buf *b)
{
    struct rlimit rl;
    double open_fds = -1;
    double utime = -1, stime = -1, start = -1, vsize = -1, rss = -1;
    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    DIR *d = opendir("/proc/self/fd");
    FILE *f;
    int rc = 0;

    if (d != NULL) {
        struct dirent *e = readdir(d);

        open_fds = 0;
        for (; e != NULL; e = readdir(d)) {
            if (e->d_name[0] != '.')
                open_fds++;
        }
        closedir(d);
        open_fds--; /* the directory stream's own descriptor */
    }
    f = fopen("/proc/self/stat", "r");
    if (f != NULL) {
        char st[1024];
        size_t len = fread(st, 1, sizeof(st) - 1, f);
        char *p;
        unsigned long long ut, sti, stt, vs;
        long long rs;

        fclose(f);
        st[len] = '\0';
        /* after the command name "(...)", which may hold spaces: fields 3.. */
        p = strrchr(st, ')');
        if (p != NULL && tck > 0 && page > 0 &&
            sscanf(p + 1,
                   " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                   "%*d %llu %llu %lld",
                   &ut, &sti, &stt, &vs, &rs) == 5) {
            utime = (double)ut / (double)tck;
            stime = (double)sti / (double)tck;
            start = (double)stt / (double)tck;
            vsize = (double)vs;
            rss = (double)rs * (double)page;
        }
    }
    if (start >= 0) {
        char ln[256];
        double btime = -1;

        f = fopen("/proc/stat", "r");
        while (f != NULL && fgets(ln, sizeof(ln), f) != NULL) {
            unsigned long long bt;

            if (sscanf(ln, "btime %llu", &bt) == 1)
                btime = (double)bt;
        }
        if (f != NULL)
            fclose(f);
        start = btime >= 0 ? btime + start : -1;
    }
    if (utime >= 0)
        KMS_GUARD(single(b, "process_cpu_seconds_total", "counter",
                         "User and system CPU time spent in seconds.", utime + stime));
    if (open_fds >= 0)
        KMS_GUARD(
            single(b, "process_open_fds", "gauge", "Number of open file descriptors.", open_fds));
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        KMS_GUARD(single(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
                         (double)rl.rlim_cur));
    if (rss >= 0) {
        KMS_GUARD(single(b, "process_resident_memory_bytes", "gauge",
                         "Resident memory size in bytes.", rss));
        KMS_GUARD(single(b, "process_virtual_memory_bytes", "gauge",
                         "Virtual memory size in bytes.", vsize));
    }
    if (start >= 0)
        KMS_GUARD(single(b, "process_start_time_seconds", "gauge",
                         "Start time of the process since the Unix epoch in seconds.", start));
out:
    return rc;
}

static void metrics(struct kms_node *n, struct kms_http_resp *resp)
{
    struct kms_buf b = {0};
    int rc = 0;

    KMS_GUARD(metrics_rpc(n, &b));
    KMS_GUARD(metrics_latency(n, &b));
    KMS_GUARD(metrics_node(n, &b));
    KMS_GUARD(kms_node_self_auth_metrics(n, &b)); /* auth */
    KMS_GUARD(metrics_process(&b));
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
