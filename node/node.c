/* Node lifecycle: configuration checks, identity bootstrap/adoption, certificates, the state
 * machine (onboard mode → serving mode) and self-authorization. */
#include "node/node.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "attest/events.h"
#include "attest/collateral.h"
#include "attest/image.h" /* osimage */
#include "attest/sim.h"
#include "common/buf.h"
#include "common/crypto/crypto.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/log.h"
#include "node/admin.h" /* admin */
#include "node/http.h"
#include "replication/replication.h"

const char *kms_node_state_name(enum kms_node_state s)
{
    switch (s) {
    case KMS_STATE_UNINITIALIZED:
        return "uninitialized";
    case KMS_STATE_ONBOARDING:
        return "onboarding";
    case KMS_STATE_SERVING:
        return "serving";
    case KMS_STATE_NOT_AUTHORIZED:
        return "not-authorized";
    case KMS_STATE_SEALED:
        return "sealed";
    case KMS_STATE_DEGRADED:
        return "degraded";
    }
    return "unknown";
}

static int validate_domain(const char *d)
{
    size_t n = d != NULL ? strlen(d) : 0;

    if (n == 0 || n > 253)
        return kms_err_set(KMS_ERR_INVAL, "domain must be 1 to 253 characters");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];

        if (!isalnum(c) && c != '-' && c != '.')
            return kms_err_set(KMS_ERR_INVAL,
                               "domain may contain only letters, digits, '-' and '.'");
    }
    return 0;
}

void kms_node_keys_clear(struct kms_node_keys *k)
{
    EVP_PKEY_free(k->root_ca_key);
    EVP_PKEY_free(k->tmp_ca_key);
    EVP_PKEY_free(k->rpc_key);
    X509_free(k->root_ca_cert);
    X509_free(k->tmp_ca_cert);
    X509_free(k->rpc_cert);
    free(k->root_ca_pem);
    free(k->tmp_ca_pem);
    if (k->tmp_ca_key_pem != NULL)
        kms_free_secret(k->tmp_ca_key_pem, strlen(k->tmp_ca_key_pem));
    free(k->rpc_cert_pem);
    free(k->ca_spki);
    free(k->domain);
    free(k->bootstrap_info_json);
    OPENSSL_cleanse(k, sizeof(*k));
}

/* Runtime events of the node's own (simulated) boot, mirroring a dstack guest. */
static int sim_self_events(struct kms_node *n, struct kms_attestation **out,
                           const uint8_t report_data[64])
{
    struct kms_runtime_event ev[5];
    uint8_t app_id[32], compose[32], inst[32];
    char cfg[128];
    uint8_t img[32];
    char img_hex[65];
    int rc;

    SHA256((const uint8_t *)"kmsd-sim-kms-app", 16, app_id);
    SHA256((const uint8_t *)"kmsd-sim-compose", 16, compose);
    SHA256((const uint8_t *)n->cfg.data_dir, strlen(n->cfg.data_dir), inst);
    SHA256((const uint8_t *)"kmsd-sim-os-image", 17, img);
    kms_hex_encode(img, 32, img_hex);
    snprintf(cfg, sizeof(cfg), "{\"os_image_hash\":\"%s\"}", img_hex);
    kms_app_boot_events(ev, app_id, compose, inst, 20);
    /* evidence: sim-nitro / sim-gcp produce the same boot through their platform */
    /* --vm-config, when given, is the operator's, as on hardware */
    if (n->platform != NULL)
        return kms_platform_attest(n->platform, report_data, ev, 5,
                                   n->cfg.vm_config != NULL ? n->cfg.vm_config : cfg, out);
    rc = kms_sim_attest(n->sim, NULL, report_data, ev, 5,
                        n->cfg.vm_config != NULL ? n->cfg.vm_config : cfg, out);
    return rc;
}

int kms_node_attest(struct kms_node *n, const uint8_t report_data[64], struct kms_attestation **out)
{
    /* evidence: hardware producers quote what the guest measured (runtime_events.log, or the
     * dstack guest agent's own log) */
    if (n->platform != NULL && (kms_platform_get_kind(n->platform) == KMS_PLATFORM_TDX ||
                                kms_platform_get_kind(n->platform) == KMS_PLATFORM_GCP_TDX ||
                                kms_platform_get_kind(n->platform) == KMS_PLATFORM_DSTACK))
        /* tdx, gcp-tdx: --vm-config, which a guest without an agent cannot learn otherwise */
        return kms_platform_attest(n->platform, report_data, NULL, 0, n->cfg.vm_config, out);
    if (n->sim != NULL || n->platform != NULL)
        return sim_self_events(n, out, report_data);
    return kms_err_set(KMS_ERR_ATT_UNSUPPORTED,
                       "no TEE evidence producer for --tee %s in this build", n->cfg.tee);
}

/* ---- auth: self-authorization, checked at start and then every --auth-interval ---- */

#define SA_NONE 0
#define SA_DENIED 1
#define SA_ALLOWED 2
#define SA_DEFAULT_INTERVAL_MS 60000
#define SA_DEFAULT_GRACE_MS 300000
#define SA_FIRST_RETRY_MS 1000

static long long mono_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static long sa_interval(const struct kms_node *n)
{
    return n->cfg.auth_interval_ms > 0 ? n->cfg.auth_interval_ms : SA_DEFAULT_INTERVAL_MS;
}

static long sa_grace(const struct kms_node *n)
{
    if (n->cfg.auth_grace_ms == 0)
        return SA_DEFAULT_GRACE_MS;
    return n->cfg.auth_grace_ms < 0 ? 0 : n->cfg.auth_grace_ms;
}

/* One check; *backend says whether a failure (rc < 0) came from the authorization backend. */
static int self_check(struct kms_node *n, struct kms_auth_result *res, int *backend)
{
    uint8_t rd[64] = {0};
    struct kms_attestation *att = NULL;
    struct kms_verified v;
    struct kms_boot_info bi;
    int rc = 0;

    *backend = 0;
    memset(&v, 0, sizeof(v));
    memset(&bi, 0, sizeof(bi));
    KMS_GUARD(kms_node_attest(n, rd, &att));
    rc = kms_attest_verify(n->actx, att, &v);
    if (rc < 0) {
        kms_err_wrap(rc, "own attestation does not verify");
        goto out;
    }
    KMS_GUARD(kms_boot_info_derive(n->actx, att, &v, NULL, 0, &bi));
    rc = kms_auth_check(n->auth, 1, &bi, res);
    if (rc < 0) {
        *backend = 1;
        kms_err_wrap(rc, "self-authorization: the authorization backend did not answer");
    }
out:
    kms_boot_info_free(&bi);
    kms_verified_free(&v);
    kms_att_free(att);
    return rc;
}

int kms_node_self_authorize(struct kms_node *n)
{
    struct kms_auth_result res;
    int backend = 0;
    int rc;

    memset(&res, 0, sizeof(res));
    rc = self_check(n, &res, &backend);
    pthread_mutex_lock(&n->lock);
    n->sa_checks++;
    if (rc < 0) {
        /* The last decision stays; only the grace period can end it (self_auth_transition). */
        n->sa_answered = 0;
        n->sa_backend = backend;
        if (backend)
            n->sa_backend_errors++;
        snprintf(n->sa_error, sizeof(n->sa_error), "%s", kms_err_detail());
    } else {
        n->sa_answered = 1;
        n->sa_answer_ms = mono_ms();
        n->sa_decision = res.allowed ? SA_ALLOWED : SA_DENIED;
        n->sa_error[0] = '\0';
        snprintf(n->sa_denial, sizeof(n->sa_denial), "%s", res.allowed ? "" : res.reason);
    }
    pthread_mutex_unlock(&n->lock);
    if (rc == 0 && !res.allowed)
        rc = kms_err_set(KMS_ERR_DENIED, "KMS is not authorized by its own policy: %s", res.reason);
    return rc;
}

/*
 * Moves SERVING <-> NOT_AUTHORIZED after what the last check said: an allow holds while the
 * backend answers and for the grace period after its last answer; a denial holds until an
 * allow. `initial` also leaves the startup state. Logs each change with its cause.
 */
static void self_auth_transition(struct kms_node *n, int initial)
{
    long long now = mono_ms();
    enum kms_node_state was, want;
    char why[sizeof(n->self_auth_reason)];

    why[0] = '\0';
    pthread_mutex_lock(&n->lock);
    was = n->state;
    if (!initial && was != KMS_STATE_SERVING && was != KMS_STATE_NOT_AUTHORIZED) {
        pthread_mutex_unlock(&n->lock);
        return;
    }
    if (n->sa_decision == SA_ALLOWED &&
        (n->sa_answered || now - n->sa_answer_ms < (long long)sa_grace(n))) {
        want = KMS_STATE_SERVING;
    } else if (n->sa_decision == SA_DENIED) {
        want = KMS_STATE_NOT_AUTHORIZED;
        snprintf(why, sizeof(why), "%s", n->sa_denial);
    } else {
        want = KMS_STATE_NOT_AUTHORIZED;
        if (n->sa_decision == SA_ALLOWED)
            snprintf(why, sizeof(why), "%.400s (no answer for %lld s, grace period %ld s ended)",
                     n->sa_error, (now - n->sa_answer_ms) / 1000, sa_grace(n) / 1000);
        else
            snprintf(why, sizeof(why), "%s", n->sa_error);
    }
    n->state = want;
    memcpy(n->self_auth_reason, why, sizeof(why));
    pthread_mutex_unlock(&n->lock);
    if (was == want && !initial)
        return;
    if (want == KMS_STATE_SERVING)
        KMS_INFO("state: serving (own authorization confirmed)");
    else
        KMS_ERROR("state: not-authorized (%s: %s)",
                  n->sa_decision == SA_DENIED ? "denied by its own policy"
                                              : "authorization not confirmed",
                  why);
}

/* Checks once and applies the outcome. Returns 1 when the backend answered. */
static int self_auth_step(struct kms_node *n, int initial)
{
    int rc = kms_node_self_authorize(n);
    int answered;

    pthread_mutex_lock(&n->lock);
    answered = n->sa_answered;
    pthread_mutex_unlock(&n->lock);
    if (rc < 0 && !answered)
        KMS_WARN_LIMITED("self-authorization check failed, will retry: %s", kms_err_detail());
    self_auth_transition(n, initial);
    return answered;
}

/* Re-checks every interval; after a failure retries from 1 s, doubling up to the interval, and
 * wakes when the grace period ends so a lost backend fails closed on time. */
static void *self_auth_main(void *arg)
{
    struct kms_node *n = arg;
    long interval = sa_interval(n);
    long backoff = interval < SA_FIRST_RETRY_MS ? interval : SA_FIRST_RETRY_MS;
    int answered;

    pthread_mutex_lock(&n->lock);
    answered = n->sa_answered;
    pthread_mutex_unlock(&n->lock);
    for (;;) {
        long long now = mono_ms(), deadline;
        struct timespec ts;
        int stop;

        deadline = now + (answered ? interval : backoff);
        pthread_mutex_lock(&n->lock);
        if (!answered && n->sa_decision == SA_ALLOWED) {
            long long end = n->sa_answer_ms + sa_grace(n);

            if (end > now && end < deadline)
                deadline = end;
        }
        ts.tv_sec = (time_t)(deadline / 1000);
        ts.tv_nsec = (long)(deadline % 1000) * 1000000;
        while (!n->sa_stop && !n->stop_requested && mono_ms() < deadline)
            pthread_cond_timedwait(&n->sa_cond, &n->lock, &ts);
        stop = n->sa_stop || n->stop_requested;
        pthread_mutex_unlock(&n->lock);
        if (stop)
            break;
        self_auth_transition(n, 0); /* the grace period may have ended while waiting */
        if (!answered && backoff < interval)
            backoff = backoff > interval / 2 ? interval : backoff * 2;
        answered = self_auth_step(n, 0);
        if (answered)
            backoff = interval < SA_FIRST_RETRY_MS ? interval : SA_FIRST_RETRY_MS;
    }
    return NULL;
}

/* dev allows everything: there is nothing to re-check. */
static int self_auth_start(struct kms_node *n)
{
    int err;

    if (kms_auth_is_dev(n->auth))
        return 0;
    err = pthread_create(&n->sa_thread, NULL, self_auth_main, n);
    if (err != 0)
        return kms_err_set(KMS_ERR_INTERNAL, "cannot start the self-authorization thread (%d)",
                           err);
    n->sa_running = 1;
    KMS_INFO("self-authorization re-checked every %ld ms; an allow is kept for %ld ms without "
             "an answer",
             sa_interval(n), sa_grace(n));
    return 0;
}

static void self_auth_stop(struct kms_node *n)
{
    if (!n->sa_running)
        return;
    pthread_mutex_lock(&n->lock);
    n->sa_stop = 1;
    pthread_cond_broadcast(&n->sa_cond);
    pthread_mutex_unlock(&n->lock);
    pthread_join(n->sa_thread, NULL);
    n->sa_running = 0;
}

int kms_node_self_auth_reason(struct kms_node *n, char *buf, size_t cap)
{
    int denied;

    pthread_mutex_lock(&n->lock);
    snprintf(buf, cap, "%s", n->self_auth_reason);
    /* "not confirmed" only when the last check got no answer and no denial is in force */
    denied = !(n->sa_checks > 0 && !n->sa_answered && n->sa_decision != SA_DENIED);
    pthread_mutex_unlock(&n->lock);
    return denied;
}

/* unknown | allowed | denied | backend-unreachable | check-failed (under lock). */
static const char *sa_status(const struct kms_node *n)
{
    if (n->sa_checks == 0)
        return "unknown";
    if (!n->sa_answered)
        return n->sa_backend ? "backend-unreachable" : "check-failed";
    return n->sa_decision == SA_ALLOWED ? "allowed" : "denied";
}

json_t *kms_node_self_auth_json(struct kms_node *n)
{
    static const char *const decisions[] = {"none", "denied", "allowed"};
    json_t *o = json_object();
    long long now = mono_ms();

    if (o == NULL)
        return NULL;
    pthread_mutex_lock(&n->lock);
    json_object_set_new(o, "status", json_string(sa_status(n)));
    json_object_set_new(o, "decision", json_string(decisions[n->sa_decision]));
    if (!n->sa_answered && n->sa_checks > 0)
        json_object_set_new(o, "reason", json_string(n->sa_error));
    else if (n->sa_decision == SA_DENIED)
        json_object_set_new(o, "reason", json_string(n->sa_denial));
    if (n->sa_decision != SA_NONE)
        json_object_set_new(o, "last_answer_age_ms",
                            json_integer((json_int_t)(now - n->sa_answer_ms)));
    if (!n->sa_answered && n->sa_decision == SA_ALLOWED) {
        long long left = n->sa_answer_ms + sa_grace(n) - now;

        json_object_set_new(o, "grace_left_ms", json_integer((json_int_t)(left > 0 ? left : 0)));
    }
    json_object_set_new(o, "interval_ms", json_integer((json_int_t)sa_interval(n)));
    json_object_set_new(o, "grace_ms", json_integer((json_int_t)sa_grace(n)));
    json_object_set_new(o, "checks", json_integer((json_int_t)n->sa_checks));
    json_object_set_new(o, "backend_errors", json_integer((json_int_t)n->sa_backend_errors));
    pthread_mutex_unlock(&n->lock);
    return o;
}

int kms_node_self_auth_metrics(struct kms_node *n, struct kms_buf *b)
{
    static const char *const states[] = {"unknown", "allowed", "denied", "backend-unreachable",
                                         "check-failed"};
    char line[256];
    const char *cur;
    unsigned long checks, errors;
    int rc = 0;

    pthread_mutex_lock(&n->lock);
    cur = sa_status(n);
    checks = n->sa_checks;
    errors = n->sa_backend_errors;
    pthread_mutex_unlock(&n->lock);
    KMS_GUARD(kms_buf_put_str(b, "# HELP kmsd_self_auth_state This node's own authorization: 1 "
                                 "for the status of the last check.\n"
                                 "# TYPE kmsd_self_auth_state gauge\n"));
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
        snprintf(line, sizeof(line), "kmsd_self_auth_state{state=\"%s\"} %d\n", states[i],
                 strcmp(states[i], cur) == 0);
        KMS_GUARD(kms_buf_put_str(b, line));
    }
    snprintf(line, sizeof(line),
             "# HELP kmsd_self_auth_checks_total Self-authorization checks made.\n"
             "# TYPE kmsd_self_auth_checks_total counter\nkmsd_self_auth_checks_total %lu\n",
             checks);
    KMS_GUARD(kms_buf_put_str(b, line));
    snprintf(line, sizeof(line),
             "# HELP kmsd_auth_backend_errors_total Self-authorization checks the authorization "
             "backend did not answer.\n"
             "# TYPE kmsd_auth_backend_errors_total counter\nkmsd_auth_backend_errors_total "
             "%lu\n",
             errors);
    KMS_GUARD(kms_buf_put_str(b, line));
out:
    return rc;
}

/* ---- end auth ---- */

static json_t *bytes_json(const uint8_t *p, size_t len)
{
    return kms_prpc_bytes(p, len);
}

int kms_node_bootstrap(struct kms_node *n, const char *domain, char **response_json)
{
    EVP_PKEY *tmp = NULL, *ca = NULL, *rpc = NULL;
    uint8_t k256[32], k256_pub[33], rd[64];
    uint8_t *spki = NULL, *att_bytes = NULL;
    size_t spki_len = 0, att_len = 0;
    struct kms_attestation *att = NULL;
    struct kms_identity id;
    json_t *o = NULL;
    char *json = NULL;
    int rc = 0;

    memset(&id, 0, sizeof(id));
    KMS_GUARD(validate_domain(domain));
    rc = kms_store_has_identity(n->store);
    KMS_GUARD(rc);
    KMS_ENSURE(rc == 0, KMS_ERR_EXISTS,
               "this node already has keys: Bootstrap runs only once (keys unchanged)");
    KMS_GUARD(kms_node_self_authorize(n));
    KMS_GUARD(kms_p256_generate(&tmp));
    KMS_GUARD(kms_p256_generate(&ca));
    KMS_GUARD(kms_p256_generate(&rpc));
    KMS_GUARD(kms_k256_random(k256));
    KMS_GUARD(kms_k256_pubkey(k256, k256_pub));
    KMS_GUARD(kms_pkey_spki_der(ca, &spki, &spki_len));
    KMS_GUARD(kms_bootstrap_report_data(spki, spki_len, k256_pub, rd));
    KMS_GUARD(kms_node_attest(n, rd, &att));
    KMS_GUARD(kms_att_encode(att, 0, &att_bytes, &att_len));
    o = json_object();
    KMS_GUARD_PTR(o);
    json_object_set_new(o, "ca_pubkey", bytes_json(spki, spki_len));
    json_object_set_new(o, "k256_pubkey", bytes_json(k256_pub, 33));
    json_object_set_new(o, "attestation", bytes_json(att_bytes, att_len));
    json = json_dumps(o, JSON_COMPACT);
    KMS_GUARD_PTR(json);
    KMS_GUARD(kms_pkey_to_pem(ca, &id.root_ca_key_pem));
    KMS_GUARD(kms_pkey_to_pem(tmp, &id.tmp_ca_key_pem));
    KMS_GUARD(kms_pkey_to_pem(rpc, &id.rpc_key_pem));
    memcpy(id.root_k256, k256, 32);
    id.domain = strdup(domain);
    id.bootstrap_info_json = strdup(json);
    id.origin = strdup("bootstrap");
    KMS_GUARD_PTR(id.domain);
    KMS_GUARD_PTR(id.bootstrap_info_json);
    KMS_GUARD_PTR(id.origin);
    rc = kms_store_save_identity(n->store, &id);
    if (rc == KMS_ERR_STORE_EXISTS)
        rc = kms_err_set(KMS_ERR_EXISTS, "this node already has keys: Bootstrap runs only once");
    KMS_GUARD(rc);
    if (kms_store_audit(n->store, "Bootstrap", "ok", domain) < 0)
        KMS_WARN("audit log append failed: %s", kms_err_detail());
    KMS_INFO("bootstrapped new root keys for domain %s", domain);
    *response_json = json;
    json = NULL;
out:
    OPENSSL_cleanse(k256, sizeof(k256));
    kms_identity_clear(&id);
    EVP_PKEY_free(tmp);
    EVP_PKEY_free(ca);
    EVP_PKEY_free(rpc);
    free(spki);
    free(att_bytes);
    kms_att_free(att);
    json_decref(o);
    free(json);
    return rc;
}

int kms_node_adopt_identity(struct kms_node *n, struct kms_identity *id)
{
    int rc = kms_store_save_identity(n->store, id);

    if (rc == KMS_ERR_STORE_EXISTS)
        return kms_err_set(KMS_ERR_EXISTS, "this node already has keys: onboarding refused");
    return rc;
}

static int issue_certs(struct kms_node *n, struct kms_node_keys *k)
{
    struct kms_cert_params p;
    struct kms_attestation *att = NULL;
    const char *san[1];
    uint8_t rd[64];
    int rc = 0;

    memset(&p, 0, sizeof(p));
    p.org = "Dstack";
    p.cn = "Dstack Client Temp CA";
    p.is_ca = 1;
    p.path_len = 0;
    KMS_GUARD(kms_cert_issue(&p, k->tmp_ca_key, k->tmp_ca_key, NULL, &k->tmp_ca_cert));
    p.cn = "Dstack KMS CA";
    p.path_len = 1;
    KMS_GUARD(kms_cert_issue(&p, k->root_ca_key, k->root_ca_key, NULL, &k->root_ca_cert));
    memset(&p, 0, sizeof(p));
    san[0] = k->domain;
    p.cn = k->domain;
    p.san_dns = san;
    p.n_san = 1;
    p.path_len = -1;
    p.usage = "kms:rpc";
    KMS_GUARD(kms_report_data_for_pkey(k->rpc_key, rd));
    KMS_GUARD(kms_node_attest(n, rd, &att));
    p.att = att;
    KMS_GUARD(kms_cert_issue(&p, k->rpc_key, k->root_ca_key, k->root_ca_cert, &k->rpc_cert));
    KMS_GUARD(kms_cert_to_pem(k->tmp_ca_cert, &k->tmp_ca_pem));
    KMS_GUARD(kms_cert_to_pem(k->root_ca_cert, &k->root_ca_pem));
    KMS_GUARD(kms_cert_to_pem(k->rpc_cert, &k->rpc_cert_pem));
out:
    kms_att_free(att);
    return rc;
}

int kms_node_load_keys(struct kms_node *n)
{
    struct kms_identity id;
    struct kms_node_keys k;
    int rc = 0;

    memset(&id, 0, sizeof(id));
    memset(&k, 0, sizeof(k));
    KMS_GUARD(kms_store_load_identity(n->store, &id));
    KMS_GUARD(kms_pkey_from_pem(id.root_ca_key_pem, &k.root_ca_key));
    KMS_GUARD(kms_pkey_from_pem(id.tmp_ca_key_pem, &k.tmp_ca_key));
    if (id.rpc_key_pem == NULL) {
        char *pem = NULL;

        KMS_GUARD(kms_p256_generate(&k.rpc_key));
        KMS_GUARD(kms_pkey_to_pem(k.rpc_key, &pem));
        rc = kms_store_set_rpc_key(n->store, pem);
        kms_free_secret(pem, strlen(pem));
        KMS_GUARD(rc);
    } else {
        KMS_GUARD(kms_pkey_from_pem(id.rpc_key_pem, &k.rpc_key));
    }
    memcpy(k.root_k256, id.root_k256, 32);
    KMS_GUARD(kms_k256_pubkey(k.root_k256, k.k256_pubkey));
    k.tmp_ca_key_pem = id.tmp_ca_key_pem;
    id.tmp_ca_key_pem = NULL;
    KMS_ENSURE(id.domain != NULL && id.domain[0] != '\0', KMS_ERR_STATE,
               "stored identity has no RPC domain");
    k.domain = id.domain;
    id.domain = NULL;
    k.bootstrap_info_json = id.bootstrap_info_json;
    id.bootstrap_info_json = NULL;
    KMS_GUARD(kms_pkey_spki_der(k.root_ca_key, &k.ca_spki, &k.ca_spki_len));
    KMS_GUARD(issue_certs(n, &k));
    pthread_mutex_lock(&n->lock);
    kms_node_keys_clear(&n->keys);
    n->keys = k;
    n->have_keys = 1;
    n->keys_gen++;
    pthread_mutex_unlock(&n->lock);
    memset(&k, 0, sizeof(k));
out:
    kms_node_keys_clear(&k);
    kms_identity_clear(&id);
    return rc;
}

/* --sim-collateral: DCAP collateral signed under the sim root, so simulated TDX quotes get a
 * real TCB evaluation (tcbStatus "UpToDate", as DstackKms.isKmsAllowed requires) instead of
 * none (""). Quotes from another sim directory then fail: share --sim-dir across the cluster. */
static int setup_sim_collateral(struct kms_node *n)
{
    struct kms_collateral c;
    int rc = 0;

    memset(&c, 0, sizeof(c));
    if (n->sim_coll == NULL) /* else the --pccs-url / --collateral-file source gets the set */
        KMS_GUARD(kms_collateral_source_new(NULL, &n->sim_coll));
    KMS_GUARD(kms_sim_collateral(n->cfg.sim_dir, NULL, &c));
    KMS_GUARD(kms_collateral_source_add(n->sim_coll, &c));
    kms_attest_ctx_set_collateral_source(n->actx, n->sim_coll);
    KMS_WARN("INSECURE: --sim-collateral: simulated quotes are evaluated against collateral made "
             "for %s",
             n->cfg.sim_dir);
out:
    kms_collateral_clear(&c);
    return rc;
}

/* --auth eth settings into acfg (borrowed); eth options with another backend are a mistake. */
static int eth_auth_cfg(const struct kms_node_cfg *cfg, struct kms_auth_cfg *acfg)
{
    int is_eth = cfg->auth_type != NULL && strcmp(cfg->auth_type, "eth") == 0;
    int any = cfg->n_eth_rpc_urls > 0 || cfg->eth_policy != NULL || cfg->eth_quorum_k != 0 ||
              cfg->kms_contract != NULL || cfg->eth_block_tag != NULL || cfg->eth_chain_id != 0 ||
              cfg->eth_cache_ttl_ms != 0;
    int rc = 0;

    KMS_ENSURE(is_eth || !any, KMS_ERR_NODE_CONFIG,
               "--eth-* and --kms-contract options apply to --auth eth only");
    if (!is_eth)
        goto out;
    KMS_ENSURE(cfg->n_eth_rpc_urls > 0, KMS_ERR_NODE_CONFIG,
               "--auth eth needs at least one --eth-rpc URL (an Ethereum node or light client)");
    KMS_ENSURE(cfg->kms_contract != NULL, KMS_ERR_NODE_CONFIG,
               "--auth eth needs --kms-contract ADDR (the DstackKms proxy address)");
    KMS_ENSURE(cfg->eth_quorum_k == 0 ||
                   (cfg->eth_policy != NULL && strcmp(cfg->eth_policy, "quorum") == 0),
               KMS_ERR_NODE_CONFIG, "--eth-quorum applies to --eth-policy quorum only");
    acfg->eth_rpc_urls = cfg->eth_rpc_urls;
    acfg->eth_n_rpc_urls = cfg->n_eth_rpc_urls;
    acfg->eth_policy = cfg->eth_policy;
    acfg->eth_quorum_k = cfg->eth_quorum_k;
    acfg->eth_contract = cfg->kms_contract;
    acfg->eth_block_tag = cfg->eth_block_tag;
    acfg->eth_chain_id = cfg->eth_chain_id;
    acfg->eth_cache_ttl_ms = cfg->eth_cache_ttl_ms;
out:
    return rc;
}

static int setup_attest_ctx(struct kms_node *n)
{
    X509 *root;
    int rc = 0;

    n->actx = kms_attest_ctx_new();
    KMS_GUARD_PTR(n->actx);
    root = kms_attest_intel_root();
    KMS_ENSURE(root != NULL, KMS_ERR_INTERNAL, "embedded Intel root unavailable");
    rc = kms_attest_ctx_add_root(n->actx, KMS_ROOT_TDX, root, 0);
    X509_free(root);
    KMS_GUARD(rc);
    if (n->cfg.nitro_root != NULL) {
        KMS_GUARD(kms_attest_ctx_add_root_file(n->actx, KMS_ROOT_NITRO, n->cfg.nitro_root, 0));
    } else {
        root = kms_attest_nitro_root();
        KMS_ENSURE(root != NULL, KMS_ERR_INTERNAL, "embedded AWS Nitro root unavailable");
        rc = kms_attest_ctx_add_root(n->actx, KMS_ROOT_NITRO, root, 0);
        X509_free(root);
        KMS_GUARD(rc);
    }
    kms_attest_ctx_set_nitro_device_id_fixed(n->actx, n->cfg.nitro_device_id_fixed);
    /* ---- collateral (owner: collateral): --pccs-url / --collateral-file ---- */
    if (n->cfg.pccs_url != NULL || n->cfg.collateral_file != NULL) {
        struct kms_collateral_source_opts co = {.pccs_url = n->cfg.pccs_url,
                                                .collateral_file = n->cfg.collateral_file};

        KMS_GUARD(kms_collateral_source_new(&co, &n->sim_coll));
        kms_attest_ctx_set_collateral_source(n->actx, n->sim_coll);
        KMS_INFO("TDX TCB evaluation with Intel collateral from %s%s%s",
                 n->cfg.collateral_file != NULL ? n->cfg.collateral_file : "",
                 n->cfg.collateral_file != NULL && n->cfg.pccs_url != NULL ? " and " : "",
                 n->cfg.pccs_url != NULL ? n->cfg.pccs_url : "");
    }
    /* ---- end collateral ---- */
    /* evidence: the Google EK/AK root for GCP vTPM quotes, and the --tee producer */
    if (n->cfg.gcp_root != NULL) {
        KMS_GUARD(kms_attest_ctx_add_root_file(n->actx, KMS_ROOT_GCP, n->cfg.gcp_root, 0));
    } else {
        root = kms_attest_gcp_root();
        KMS_ENSURE(root != NULL, KMS_ERR_INTERNAL, "embedded Google EK/AK root unavailable");
        rc = kms_attest_ctx_add_root(n->actx, KMS_ROOT_GCP, root, 0);
        X509_free(root);
        KMS_GUARD(rc);
    }
    /* ---- aia: the AK intermediate is not in GCP evidence; a dev node stays offline ---- */
    if (n->cfg.aia_fetch != NULL ? strcmp(n->cfg.aia_fetch, "on") == 0 : !n->cfg.insecure_sim) {
        static const char *const google[] = {"googleapis.com"};

        KMS_GUARD(kms_attest_ctx_set_aia_fetch(n->actx, 1, 0));
        /* Only from the allowed hosts: the URL comes from not-yet-trusted client evidence. */
        if (n->cfg.n_aia_hosts > 0)
            KMS_GUARD(kms_attest_ctx_set_aia_hosts(n->actx, n->cfg.aia_hosts, n->cfg.n_aia_hosts));
        else
            KMS_GUARD(kms_attest_ctx_set_aia_hosts(n->actx, google, 1));
        KMS_INFO("GCP AK certificates: issuers fetched through AIA caIssuers when needed");
    }
    /* ---- end aia ---- */
    if (strcmp(n->cfg.tee, "sim") != 0) {
        struct kms_platform_cfg pc;
        struct kms_platform_paths paths;

        memset(&pc, 0, sizeof(pc));
        KMS_GUARD(kms_platform_kind_parse(n->cfg.tee, &pc.kind));
        pc.sim_dir = n->cfg.sim_dir;
        kms_platform_paths_default(&paths); /* dstack: --dstack-socket (borrowed from cfg) */
        if (n->cfg.dstack_socket != NULL)
            paths.dstack_socket = n->cfg.dstack_socket;
        pc.paths = &paths;
        KMS_GUARD(kms_platform_open(&pc, &n->platform));
        KMS_INFO("evidence producer: %s", kms_platform_kind_name(pc.kind));
    }
    /* evidence end */
    if (n->cfg.insecure_sim) {
        char path[4096];

        KMS_GUARD(kms_sim_open(n->cfg.sim_dir, &n->sim));
        /* evidence: simulated Nitro / GCP clients sharing --sim-dir may start after the node */
        KMS_GUARD(kms_platform_sim_init(n->cfg.sim_dir));
        KMS_GUARD(kms_attest_ctx_add_root(n->actx, KMS_ROOT_TDX, kms_sim_root(n->sim), 1));
        if (n->cfg.sim_collateral)
            KMS_GUARD(setup_sim_collateral(n));
        snprintf(path, sizeof(path), "%s/sim-nitro-root.pem", n->cfg.sim_dir);
        if (kms_file_exists(path))
            KMS_GUARD(kms_attest_ctx_add_root_file(n->actx, KMS_ROOT_NITRO, path, 1));
        /* evidence: simulated GCP vTPM root, when a sim-gcp client or node created it */
        snprintf(path, sizeof(path), "%s/sim-gcp-root.pem", n->cfg.sim_dir);
        if (kms_file_exists(path))
            KMS_GUARD(kms_attest_ctx_add_root_file(n->actx, KMS_ROOT_GCP, path, 1));
        if (n->cfg.trust_sim_root != NULL)
            KMS_GUARD(
                kms_attest_ctx_add_root_file(n->actx, KMS_ROOT_TDX, n->cfg.trust_sim_root, 1));
        KMS_WARN("INSECURE: simulated TEE enabled (--insecure-sim); simulation roots from %s are "
                 "trusted. Never use this in production.",
                 n->cfg.sim_dir);
    }
out:
    return rc;
}

/* ---- replication's callbacks into the node (struct kms_repl_cfg); arg is the node */

static int repl_attest(void *arg, const uint8_t report_data[64], struct kms_attestation **out)
{
    return kms_node_attest(arg, report_data, out);
}

static int repl_self_authorize(void *arg)
{
    return kms_node_self_authorize(arg);
}

/* Onboarding is allowed only from UNINITIALIZED, and only one at a time. */
static int repl_onboard_begin(void *arg)
{
    struct kms_node *n = arg;
    int busy = 0;

    pthread_mutex_lock(&n->lock);
    if (n->state != KMS_STATE_UNINITIALIZED)
        busy = 1;
    else
        n->state = KMS_STATE_ONBOARDING;
    pthread_mutex_unlock(&n->lock);
    if (busy)
        return kms_err_set(KMS_ERR_STATE, "onboarding refused: node is %s",
                           kms_node_state_name(n->state));
    return 0;
}

static void repl_onboard_end(void *arg)
{
    struct kms_node *n = arg;

    pthread_mutex_lock(&n->lock);
    if (n->state == KMS_STATE_ONBOARDING)
        n->state = KMS_STATE_UNINITIALIZED;
    pthread_mutex_unlock(&n->lock);
}

static int repl_adopt_identity(void *arg, struct kms_identity *id)
{
    return kms_node_adopt_identity(arg, id);
}

/* Hands replication what it needs from this node (all owned by the node, which outlives it). */
static int setup_repl(struct kms_node *n)
{
    struct kms_repl_cfg rc;

    memset(&rc, 0, sizeof(rc));
    rc.store = n->store;
    rc.actx = n->actx;
    rc.auth = n->auth;
    rc.listen = n->cfg.listen;
    rc.peers = n->cfg.peers;
    rc.n_peers = n->cfg.n_peers;
    rc.interval_ms = n->cfg.peer_interval_ms;
    rc.confirm_window_s = n->cfg.peer_confirm_window_s;
    rc.expect_k256_pubkey = n->cfg.expect_k256_pubkey;
    rc.expect_ca_spki = n->cfg.expect_ca_spki;
    rc.cb_arg = n;
    rc.attest = repl_attest;
    rc.self_authorize = repl_self_authorize;
    rc.onboard_begin = repl_onboard_begin;
    rc.onboard_end = repl_onboard_end;
    rc.adopt_identity = repl_adopt_identity;
    return kms_repl_new(&rc, &n->repl);
}

/* Starts the peer checks against this node's identity (its serving keys). */
static int start_repl(struct kms_node *n)
{
    struct kms_repl_identity id;

    if (!n->have_keys)
        return 0;
    memset(&id, 0, sizeof(id));
    id.root_ca_key = n->keys.root_ca_key;
    id.root_k256 = n->keys.root_k256;
    id.k256_pubkey = n->keys.k256_pubkey;
    id.ca_spki = n->keys.ca_spki;
    id.ca_spki_len = n->keys.ca_spki_len;
    id.domain = n->keys.domain;
    return kms_repl_start(n->repl, &id);
}

/* --vm-config: a JSON object whose os_image_hash is 32 bytes of hex (what the OS-image checks
 * and BootInfo read), for the producers that carry the caller's vm_config. */
static int check_vm_config(const char *vmc, enum kms_platform_kind kind)
{
    struct kms_bytes hash = {0};
    json_t *j = NULL;
    int rc = 0;

    KMS_ENSURE(kind == KMS_PLATFORM_TDX || kind == KMS_PLATFORM_GCP_TDX ||
                   kind == KMS_PLATFORM_SIM_TDX || kind == KMS_PLATFORM_SIM_GCP,
               KMS_ERR_NODE_CONFIG, "--vm-config is for --tee tdx, gcp-tdx, sim and sim-gcp: %s",
               kind == KMS_PLATFORM_DSTACK
                   ? "with --tee dstack the guest agent supplies the vm_config"
                   : "this TEE's evidence carries no vm_config");
    KMS_ENSURE(strlen(vmc) <= 4096, KMS_ERR_NODE_CONFIG, "--vm-config is longer than 4096 bytes");
    j = json_loads(vmc, JSON_REJECT_DUPLICATES, NULL);
    KMS_ENSURE(j != NULL && json_is_object(j), KMS_ERR_NODE_CONFIG,
               "--vm-config is not a JSON object");
    /* read as BootInfo will read it from the node's attestation */
    KMS_ENSURE(kms_vm_config_os_image_hash(vmc, &hash) == 0 && hash.len == 32, KMS_ERR_NODE_CONFIG,
               "--vm-config needs \"os_image_hash\": 64 hex digits without 0x (the OS image's "
               "hash)");
out:
    free(hash.p);
    json_decref(j);
    return rc;
}

int kms_node_new(const struct kms_node_cfg *cfg, struct kms_node **out)
{
    struct kms_node *n = NULL;
    struct kms_seal_cfg seal;
    struct kms_auth_cfg acfg;
    enum kms_platform_kind tee_kind = KMS_PLATFORM_NONE; /* evidence */
    int rc = 0;

    KMS_ENSURE(cfg->data_dir != NULL && cfg->data_dir[0] != '\0', KMS_ERR_NODE_CONFIG,
               "--data-dir is required");
    /* evidence: --tee auto|tdx|gcp-tdx|dstack|sim|sim-tdx|sim-nitro|sim-gcp */
    if (strcmp(cfg->tee, "auto") == 0) {
        struct kms_platform_paths dp;

        kms_platform_paths_default(&dp); /* the guest agent's socket first, when it exists */
        if (cfg->dstack_socket != NULL)
            dp.dstack_socket = cfg->dstack_socket;
        tee_kind = kms_platform_detect(&dp);
        KMS_ENSURE(tee_kind == KMS_PLATFORM_TDX || tee_kind == KMS_PLATFORM_GCP_TDX ||
                       tee_kind == KMS_PLATFORM_DSTACK,
                   KMS_ERR_NODE_CONFIG,
                   "--tee auto: detected %s, but kmsd produces evidence only from a dstack guest "
                   "agent, TDX and GCP TDX; use --tee sim --insecure-sim for development",
                   kms_platform_kind_name(tee_kind));
        KMS_INFO("--tee auto: detected %s", kms_platform_kind_name(tee_kind));
    } else {
        KMS_ENSURE(kms_platform_kind_parse(cfg->tee, &tee_kind) == 0 &&
                       tee_kind != KMS_PLATFORM_NITRO,
                   KMS_ERR_NODE_CONFIG,
                   "--tee %s is not supported: use auto, tdx, gcp-tdx, dstack, or sim, sim-nitro, "
                   "sim-gcp with --insecure-sim",
                   cfg->tee);
    }
    if (cfg->vm_config != NULL)
        KMS_GUARD(check_vm_config(cfg->vm_config, tee_kind));
    KMS_ENSURE(cfg->insecure_sim || tee_kind == KMS_PLATFORM_TDX ||
                   tee_kind == KMS_PLATFORM_GCP_TDX || tee_kind == KMS_PLATFORM_DSTACK,
               KMS_ERR_NODE_CONFIG,
               "--tee %s produces simulated evidence and trusts simulation roots: start with "
               "--insecure-sim to accept that (development only)",
               cfg->tee);
    /* evidence end */
    KMS_ENSURE(!cfg->sim_collateral || cfg->insecure_sim, KMS_ERR_NODE_CONFIG,
               "--sim-collateral needs --insecure-sim (it makes simulated quotes look up to date)");
    KMS_ENSURE(cfg->aia_fetch == NULL || strcmp(cfg->aia_fetch, "on") == 0 || /* aia */
                   strcmp(cfg->aia_fetch, "off") == 0,
               KMS_ERR_NODE_CONFIG, "--aia-fetch must be on or off, not %s", cfg->aia_fetch);
    n = calloc(1, sizeof(*n));
    KMS_GUARD_PTR(n);
    n->cfg = *cfg;
    if (strcmp(cfg->tee, "auto") == 0) /* evidence: the detected kind from here on */
        n->cfg.tee = kms_platform_kind_name(tee_kind);
    if (strcmp(cfg->tee, "auto") == 0) /* evidence: the detected kind from here on */
        n->cfg.tee = kms_platform_kind_name(tee_kind);
    if (n->cfg.sim_dir == NULL) {
        snprintf(n->sim_dir_buf, sizeof(n->sim_dir_buf), "%s/sim", cfg->data_dir);
        n->cfg.sim_dir = n->sim_dir_buf;
    }
    if (n->cfg.onboard_listen == NULL)
        n->cfg.onboard_listen = n->cfg.listen;
    pthread_mutex_init(&n->lock, NULL);
    kms_answer_cache_init(&n->answers);
    n->callers = kms_lru_new(KMS_NODE_CALLER_CACHE, kms_node_caller_free);
    KMS_GUARD_PTR(n->callers);
    pthread_cond_init(&n->cond, NULL);
    {
        pthread_condattr_t ca;

        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&n->sa_cond, &ca);
        pthread_condattr_destroy(&ca);
    }
    KMS_GUARD(kms_admin_new(&n->cfg, &n->admin)); /* admin: refuse a bad setup at start */
    KMS_GUARD(kms_mkdir_p(cfg->data_dir, 0700));
    memset(&seal, 0, sizeof(seal));
    seal.provider = cfg->seal_provider;
    seal.kek_path = cfg->kek_path;
    seal.tcti = cfg->tpm_tcti; /* --seal tpm */
    seal.pcrs = cfg->seal_pcrs;
    rc = kms_store_open(cfg->data_dir, &seal, &n->store);
    if (rc == KMS_ERR_STORE_SEAL) {
        /* e.g. TPM PCRs changed: stay up in the sealed state so /health says why (423),
         * but serve nothing else. */
        kms_err_wrap(rc, "keystore is sealed (state %s)", kms_node_state_name(KMS_STATE_SEALED));
        KMS_ERROR("%s", kms_err_detail());
        snprintf(n->self_auth_reason, sizeof(n->self_auth_reason), "%s", kms_err_detail());
        n->state = KMS_STATE_SEALED;
        n->store = NULL;
        rc = 0;
    }
    KMS_GUARD(rc);
    memset(&acfg, 0, sizeof(acfg));
    acfg.type = cfg->auth_type;
    acfg.webhook_url = cfg->auth_url;
    acfg.timeout_ms = cfg->auth_timeout_ms;
    acfg.dev_gateway_app_id = cfg->gateway_app_id;
    KMS_GUARD(eth_auth_cfg(cfg, &acfg));
    KMS_GUARD(kms_auth_new(&acfg, &n->auth));
    KMS_GUARD(setup_attest_ctx(n));
    KMS_GUARD(kms_node_image_setup(n)); /* osimage */
    KMS_GUARD(setup_repl(n));
    *out = n;
    n = NULL;
out:
    kms_node_free(n);
    return rc;
}

void kms_node_free(struct kms_node *n)
{
    if (n == NULL)
        return;
    self_auth_stop(n);        /* auth: its checks use the store, auth and attestation */
    kms_admin_free(n->admin); /* admin: first, its handler uses the store and the peers */
    kms_http_stop(n->onboard_srv);
    kms_http_stop(n->kms_srv);
    kms_repl_free(n->repl); /* stops the peer checks, which borrow the keys and the store */
    kms_node_keys_clear(&n->keys);
    kms_store_close(n->store);
    kms_auth_free(n->auth);
    kms_attest_ctx_free(n->actx);
    kms_collateral_source_free(n->sim_coll); /* after the ctx that borrows it */
    kms_sim_free(n->sim);
    kms_platform_free(n->platform);    /* evidence */
    kms_image_verifier_free(n->image); /* osimage */
    pthread_mutex_destroy(&n->lock);
    kms_answer_cache_free(&n->answers);
    kms_lru_free(n->callers);
    pthread_cond_destroy(&n->cond);
    pthread_cond_destroy(&n->sa_cond);
    free(n);
}

void kms_node_stop(struct kms_node *n)
{
    pthread_mutex_lock(&n->lock);
    n->stop_requested = 1;
    pthread_cond_broadcast(&n->cond);
    pthread_cond_broadcast(&n->sa_cond);
    pthread_mutex_unlock(&n->lock);
}

static void set_state(struct kms_node *n, enum kms_node_state s)
{
    pthread_mutex_lock(&n->lock);
    n->state = s;
    pthread_mutex_unlock(&n->lock);
    KMS_INFO("state: %s", kms_node_state_name(s));
}

/* Onboard mode: serve the Onboard service until Finish (with keys) or stop. */
static int run_onboard(struct kms_node *n)
{
    int rc = 0;
    int stop;

    set_state(n, KMS_STATE_UNINITIALIZED);
    KMS_GUARD(kms_http_start(n->cfg.onboard_listen, NULL, kms_onboard_handle, n, &n->onboard_srv));
    KMS_INFO("no keys yet: Onboard service (plain HTTP) on %s; call Bootstrap or Onboard, then "
             "Finish",
             n->cfg.onboard_listen);
    pthread_mutex_lock(&n->lock);
    while (!n->finish_requested && !n->stop_requested)
        pthread_cond_wait(&n->cond, &n->lock);
    stop = n->stop_requested;
    pthread_mutex_unlock(&n->lock);
    kms_http_stop(n->onboard_srv);
    n->onboard_srv = NULL;
    if (stop)
        rc = 1;
out:
    return rc;
}

static void sealed_handle(void *arg, const struct kms_http_req *req, struct kms_http_resp *resp)
{
    struct kms_node *n = arg;
    char msg[700];

    if (kms_node_handle_common(n, req, resp))
        return;
    snprintf(msg, sizeof(msg), "node is sealed: %s", n->self_auth_reason);
    kms_prpc_error(resp, msg);
    resp->status = 423;
}

/* Sealed: the keystore cannot be unsealed; answer /health and /metrics only, until stopped. */
static int run_sealed(struct kms_node *n)
{
    int rc = 0;

    KMS_GUARD(kms_http_start(n->cfg.onboard_listen, NULL, sealed_handle, n, &n->onboard_srv));
    KMS_ERROR("node is sealed; serving only /health and /metrics (plain HTTP) on %s",
              n->cfg.onboard_listen);
    pthread_mutex_lock(&n->lock);
    while (!n->stop_requested)
        pthread_cond_wait(&n->cond, &n->lock);
    pthread_mutex_unlock(&n->lock);
out:
    return rc;
}

int kms_node_run(struct kms_node *n)
{
    struct kms_http_tls tls;
    char *chain = NULL;
    size_t chain_len;
    int rc = 0;

    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (n->state == KMS_STATE_SEALED)
        return run_sealed(n);
    rc = kms_store_has_identity(n->store);
    KMS_GUARD(rc);
    if (rc == 0) {
        if (n->cfg.auto_bootstrap_domain != NULL && n->cfg.auto_bootstrap_domain[0] != '\0') {
            char *resp = NULL;

            KMS_GUARD(kms_node_bootstrap(n, n->cfg.auto_bootstrap_domain, &resp));
            free(resp);
        } else {
            rc = run_onboard(n);
            KMS_GUARD(rc);
            if (rc == 1) {
                rc = 0;
                goto out;
            }
        }
    }
    rc = kms_node_load_keys(n);
    if (rc == KMS_ERR_STORE_SEAL) {
        set_state(n, KMS_STATE_SEALED);
        goto out;
    }
    KMS_GUARD(rc);
    (void)self_auth_step(n, 1); /* not authorized yet: refuses key RPCs, keeps checking */
    chain_len = strlen(n->keys.rpc_cert_pem) + strlen(n->keys.root_ca_pem) + 1;
    chain = malloc(chain_len);
    KMS_GUARD_PTR(chain);
    snprintf(chain, chain_len, "%s%s", n->keys.rpc_cert_pem, n->keys.root_ca_pem);
    memset(&tls, 0, sizeof(tls));
    tls.cert_pem = chain;
    {
        char *key_pem = NULL;

        KMS_GUARD(kms_pkey_to_pem(n->keys.rpc_key, &key_pem));
        tls.key_pem = key_pem;
        tls.client_ca_pem = n->keys.tmp_ca_pem;
        rc = kms_http_start(n->cfg.listen, &tls, kms_kms_handle, n, &n->kms_srv);
        kms_free_secret(key_pem, strlen(key_pem));
        KMS_GUARD(rc);
    }
    KMS_INFO("KMS service (HTTPS) on %s, domain %s", n->cfg.listen, n->keys.domain);
    KMS_GUARD(start_repl(n));
    KMS_GUARD(kms_admin_start(n)); /* admin: once the KMS service is serving */
    KMS_GUARD(self_auth_start(n));
    pthread_mutex_lock(&n->lock);
    while (!n->stop_requested)
        pthread_cond_wait(&n->cond, &n->lock);
    pthread_mutex_unlock(&n->lock);
out:
    free(chain);
    return rc;
}
