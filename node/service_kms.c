/* KMS service over HTTPS (kms-reference.md §1.2, §4): attested key release and public RPCs. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "attest/image.h"
#include "common/buf.h"
#include "common/hex.h"
#include "common/lru.h"
#include "common/log.h"
#include "common/crypto/crypto.h"
#include "node/http.h"
#include "node/node.h"
#include "node/proto.h"
#include "node/ui.h"
#include "replication/replication.h"

/* The verified caller of one request. */
struct kms_rpc_caller {
    struct kms_attestation *att;
    struct kms_verified v;
    int attested;
    int cert_present;
    void *ref; /* att and v are borrowed from this entry of n->callers */
};

/* A verified client certificate's attestation, kept by n->callers. */
struct caller_entry {
    struct kms_attestation *att;
    struct kms_verified v;
};

void kms_node_caller_free(void *p)
{
    struct caller_entry *e = p;

    if (e == NULL)
        return;
    kms_att_free(e->att);
    kms_verified_free(&e->v);
    free(e);
}

static void caller_clear(struct kms_node *n, struct kms_rpc_caller *c)
{
    if (c->ref != NULL) {
        kms_lru_release(n->callers, c->ref);
    } else {
        kms_att_free(c->att);
        kms_verified_free(&c->v);
    }
    memset(c, 0, sizeof(*c));
}

static int64_t mono_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Cache key of a client certificate: its SHA-256 under this node's key generation (the temp CA
 * that must have issued it). 0, or -1 when the certificate cannot be encoded. */
static int caller_key(struct kms_node *n, X509 *cert, uint8_t key[KMS_LRU_KEY_LEN])
{
    unsigned int len = 0;
    unsigned long gen;

    if (X509_digest(cert, EVP_sha256(), key, &len) != 1 || len != KMS_LRU_KEY_LEN)
        return -1;
    pthread_mutex_lock(&n->lock);
    gen = n->keys_gen;
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; i < sizeof(gen); i++)
        key[i] ^= (uint8_t)(gen >> (8 * i));
    return 0;
}

/* Verifies the client certificate: issued by our temp CA, carrying an attestation bound to
 * its key. rc < 0 fails every RPC of the request; no attestation only fails attested RPCs.
 * A certificate verified in the last KMS_NODE_CALLER_TTL_MS (same bytes, same temp CA) is not
 * verified again: keep-alive clients send the same certificate with every request. Its validity
 * period is checked every time. */
static int verify_caller(struct kms_node *n, X509 *cert, struct kms_rpc_caller *c)
{
    EVP_PKEY *pub;
    uint8_t *spki = NULL;
    uint8_t key[KMS_LRU_KEY_LEN];
    int have_key = 0;
    struct caller_entry *e = NULL;
    int spki_len;
    int rc = 0;

    memset(c, 0, sizeof(*c));
    if (cert == NULL)
        return 0;
    c->cert_present = 1;
    if (n->callers != NULL && caller_key(n, cert, key) == 0) {
        have_key = 1;
        e = kms_lru_get(n->callers, key, mono_ms(), &c->ref);
        if (e != NULL) {
            c->att = e->att;
            c->v = e->v;
        }
    }
    if (e == NULL)
        KMS_ENSURE(kms_cert_signed_by(cert, n->keys.tmp_ca_key) == 1, KMS_ERR_ATT_CHAIN,
                   "client certificate is not issued by this KMS's temp CA");
    /* As the reference's TLS layer would: the certificate must be within its validity. */
    KMS_ENSURE(X509_cmp_current_time(X509_get0_notBefore(cert)) < 0 &&
                   X509_cmp_current_time(X509_get0_notAfter(cert)) > 0,
               KMS_ERR_ATT_EXPIRED, "client certificate is expired or not yet valid");
    if (e != NULL) {
        c->attested = 1;
        return 0;
    }
    rc = kms_ratls_get_attestation(cert, &c->att);
    if (rc == KMS_ERR_ATT_NONE) {
        rc = 0;
        goto out;
    }
    KMS_GUARD(rc);
    pub = X509_get0_pubkey(cert);
    KMS_ENSURE(pub != NULL, KMS_ERR_PARSE, "client certificate has no public key");
    spki_len = i2d_PUBKEY(pub, &spki);
    KMS_ENSURE(spki_len > 0, KMS_ERR_CRYPTO, "cannot encode the client certificate key");
    KMS_GUARD(kms_attest_verify_bound(n->actx, c->att, spki, (size_t)spki_len, &c->v));
    c->attested = 1;
    if (have_key) {
        /* The cache takes the verified attestation; this request borrows it from there. */
        e = malloc(sizeof(*e));
        if (e != NULL) {
            int64_t now = mono_ms();

            e->att = c->att;
            e->v = c->v;
            if (kms_lru_put(n->callers, key, e, now, now + KMS_NODE_CALLER_TTL_MS, &c->ref) < 0) {
                /* the cache freed e, and with it att and v: verify nothing again, refuse */
                memset(c, 0, sizeof(*c));
                rc = kms_err_set(KMS_ERR_NOMEM, "out of memory keeping the verified caller");
                goto out;
            }
        }
    }
out:
    OPENSSL_free(spki);
    return rc;
}

static int require_attested(const struct kms_rpc_caller *c)
{
    if (!c->attested)
        return kms_err_set(KMS_ERR_ATT_NONE, "No attestation provided");
    return 0;
}

int kms_node_require_serving(struct kms_node *n)
{
    enum kms_node_state s;
    char why[sizeof(n->self_auth_reason)];

    pthread_mutex_lock(&n->lock);
    s = n->state;
    pthread_mutex_unlock(&n->lock);
    if (s != KMS_STATE_NOT_AUTHORIZED)
        return 0;
    /* auth: a denial, or no answer from the authorization backend (node/node.c) */
    if (kms_node_self_auth_reason(n, why, sizeof(why)))
        return kms_err_set(KMS_ERR_DENIED, "KMS is not authorized by its own policy: %s", why);
    return kms_err_set(KMS_ERR_DENIED, "KMS cannot confirm its own authorization: %s", why);
}

/* OS-image check before authorization (DESIGN.md §3): Nitro PCRs must match the claimed hash. */
/* GCP (reference verify_os_image_hash_for_gcp_tdx): the third PCR2 event (bound by the PCR2
 * replay the TPM verifier did) is the UKI whose hash is os_image_hash; PCR0 must be an allowed
 * firmware measurement (simulated evidence has no real firmware: PCR0 is not checked there). */
static int check_gcp_image(const struct kms_node *n, const struct kms_attestation *att,
                           const struct kms_boot_info *bi, const struct kms_verified *v)
{
    static const char gcp_ovmf_v2[] =
        "0cca9ec161b09288802e5a112255d21340ed5b797f5fe29cecccfd8f67b9f802";
    const struct kms_tpm_event *uki = NULL;
    size_t seen = 0;
    char pcr0[65];

    for (size_t i = 0; i < att->tpm.n_events && uki == NULL; i++) {
        if (att->tpm.events[i].pcr_index == 2 && ++seen == 3)
            uki = &att->tpm.events[i];
    }
    if (uki == NULL || uki->digest.len != 32 || bi->os_image_hash.len != 32 ||
        memcmp(uki->digest.p, bi->os_image_hash.p, 32) != 0)
        return kms_err_set(KMS_ERR_ATT_IMAGE,
                           "OS image hash mismatch: vm_config os_image_hash is not the UKI "
                           "measured as the third PCR2 event");
    if (v->sim || n->cfg.gcp_pcr0_any)
        return 0;
    kms_hex_encode(v->pcr[0], 32, pcr0);
    if (n->cfg.n_gcp_pcr0 == 0)
        return strcmp(pcr0, gcp_ovmf_v2) == 0
                   ? 0
                   : kms_err_set(KMS_ERR_ATT_IMAGE,
                                 "TPM PCR0 %s is not the GCP OVMF measurement this node allows "
                                 "(--gcp-pcr0)",
                                 pcr0);
    for (size_t i = 0; i < n->cfg.n_gcp_pcr0; i++) {
        if (strcasecmp(n->cfg.gcp_pcr0[i], pcr0) == 0)
            return 0;
    }
    return kms_err_set(KMS_ERR_ATT_IMAGE,
                       "TPM PCR0 %s is not among the allowed GCP firmware measurements "
                       "(--gcp-pcr0)",
                       pcr0);
}

/* Plain TDX (reference verify_os_image_hash_for_dstack_tdx): the quote's MRTD and RTMR0-2 must
 * be the measurements the image's manifest lists for this VM shape. */
static int check_tdx_image(const struct kms_node *n, const struct kms_attestation *att,
                           const struct kms_boot_info *bi, const struct kms_verified *v,
                           const char *vm_config)
{
    struct kms_image_mrs mrs;
    const char *cfg;
    int rc;

    if (n->cfg.insecure_skip_os_image_check)
        return 0;
    if (n->image == NULL)
        return kms_err_set(KMS_ERR_ATT_IMAGE,
                           "Failed to verify os image hash: no image manifest source is set up");
    /* The vm_config kms_boot_info_derive took os_image_hash from. */
    cfg = vm_config != NULL && vm_config[0] != '\0'
              ? vm_config
              : (att->config != NULL && att->config[0] != '\0' ? att->config : "{}");
    memcpy(mrs.mrtd, v->td.mr_td, 48);
    for (int i = 0; i < 3; i++)
        memcpy(mrs.rtmr[i], v->td.rtmr[i], 48);
    rc = kms_image_verify(n->image, bi->os_image_hash.p, bi->os_image_hash.len, cfg, &mrs, v->sim);
    if (rc < 0)
        return kms_err_wrap(rc, "Failed to verify os image hash");
    return 0;
}

int kms_node_check_os_image(const struct kms_node *n, const struct kms_attestation *att,
                            const struct kms_boot_info *bi, const struct kms_verified *v,
                            const char *vm_config)
{
    uint8_t expect[32];
    static const uint8_t zero[48 * 3];

    if (bi->mode == KMS_ATT_GCP_TDX)
        return check_gcp_image(n, att, bi, v);
    if (bi->mode == KMS_ATT_TDX)
        return check_tdx_image(n, att, bi, v, vm_config);
    if (bi->mode != KMS_ATT_NITRO)
        return kms_err_set(KMS_ERR_ATT_IMAGE, "Failed to verify os image hash: unknown mode");
    if (memcmp(v->pcr, zero, sizeof(zero)) == 0) {
        memset(expect, 0, sizeof(expect));
    } else {
        uint8_t cat[144];

        memcpy(cat, v->pcr[0], 48);
        memcpy(cat + 48, v->pcr[1], 48);
        memcpy(cat + 96, v->pcr[2], 48);
        SHA256(cat, sizeof(cat), expect);
    }
    if (bi->os_image_hash.len != 32 || memcmp(bi->os_image_hash.p, expect, 32) != 0)
        return kms_err_set(KMS_ERR_ATT_IMAGE,
                           "OS image hash mismatch: vm_config os_image_hash does not match "
                           "sha256(PCR0||PCR1||PCR2)");
    return 0;
}

int kms_node_image_setup(struct kms_node *n)
{
    struct kms_image_cfg ic;
    int rc = 0;

    if (n->cfg.insecure_skip_os_image_check) {
        KMS_WARN("INSECURE: --insecure-skip-os-image-check: the MRTD and RTMR0-2 of plain-TDX "
                 "clients are not checked against their OS image; os_image_hash is whatever the "
                 "client's vm_config claims. Never use this in production.");
        return 0;
    }
    memset(&ic, 0, sizeof(ic));
    ic.dir = n->cfg.image_manifest_dir;
    ic.url_template = n->cfg.image_manifest_url;
    ic.sim_dir = n->cfg.insecure_sim ? n->cfg.sim_dir : NULL;
    ic.timeout_ms = n->cfg.image_manifest_timeout_ms;
    rc = kms_image_verifier_new(&ic, &n->image);
    if (rc < 0)
        return kms_err_wrap(KMS_ERR_NODE_CONFIG, "--image-manifest-url");
    if (ic.dir == NULL && ic.url_template == NULL)
        KMS_WARN("no --image-manifest-dir or --image-manifest-url: plain-TDX clients are refused "
                 "(no measurement manifest)%s",
                 ic.sim_dir != NULL ? ", except simulated ones of the simulated TEE's image" : "");
    return 0;
}

/* BootInfo + image check + policy; on success the gateway app id is in res. */
int kms_node_authorize(struct kms_node *n, const struct kms_attestation *att,
                       const struct kms_verified *v, int is_kms, const char *vm_config,
                       int boottime, struct kms_boot_info *bi, struct kms_auth_result *res)
{
    int rc = 0;

    KMS_GUARD(kms_boot_info_derive(n->actx, att, v, vm_config, boottime, bi));
    KMS_GUARD(kms_node_check_os_image(n, att, bi, v, vm_config));
    rc = kms_auth_check(n->auth, is_kms, bi, res);
    if (rc < 0) {
        /* an outage, not a decision: classed apart from policy denials (refusal_class) */
        rc = kms_err_wrap(KMS_ERR_NODE_AUTH_BACKEND, "authorization backend unavailable");
        goto out;
    }
    if (!res->allowed)
        rc = kms_err_set(KMS_ERR_DENIED, "Boot denied: %s", res->reason);
out:
    return rc;
}

/* The class of a refusal, as in kmsd_refusals_total{reason} (docs/observability.md), and the
 * counter it adds to. */
static const char *refusal_class(struct kms_node *n, int rc, unsigned long **counter)
{
    if (rc == KMS_ERR_NODE_AUTH_BACKEND) {
        *counter = &n->m.refusals_backend;
        return "backend";
    }
    if (rc == KMS_ERR_DENIED) {
        *counter = &n->m.refusals_policy;
        return "policy";
    }
    if (rc <= -100 && rc > -200) {
        *counter = &n->m.refusals_attestation;
        return "attestation";
    }
    if (rc == KMS_ERR_INVAL || rc == KMS_ERR_PARSE || rc == KMS_ERR_TOOBIG ||
        rc == KMS_ERR_VERIFY) {
        *counter = &n->m.refusals_input;
        return "input";
    }
    *counter = &n->m.refusals_internal;
    return "internal";
}

/* One info line per decision, and a refusal counted in its class; never key material (the
 * detail strings carry none). */
static void log_decision(struct kms_node *n, const char *ev, int rc, const char *app,
                         const char *instance)
{
    if (rc >= 0) {
        const char *kv[] = {"event", "released",    "method", ev,  "app_id",
                            app,     "instance_id", instance, NULL};

        kms_log_fields(KMS_LOG_INFO, kv, "%s: released", ev);
    } else {
        unsigned long *counter;
        const char *cls = refusal_class(n, rc, &counter);
        const char *kv[] = {"event",  "refused",        "method", ev,      "app_id",
                            app,      "instance_id",    instance, "class", cls,
                            "reason", kms_err_detail(), NULL};
        char key[64];

        __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
        snprintf(key, sizeof(key), "%s refused (%s)", ev, cls);
        kms_log_limited_fields(rc == KMS_ERR_NODE_AUTH_BACKEND ? KMS_LOG_WARN : KMS_LOG_INFO, key,
                               kv, "%s: refused", ev);
    }
}

void kms_node_audit(struct kms_node *n, const char *ev, int rc, const struct kms_boot_info *bi)
{
    char detail[768];
    char app[65] = "";
    char instance[65] = "";

    if (bi != NULL && bi->app_id.len > 0 && bi->app_id.len <= 32)
        kms_hex_encode(bi->app_id.p, bi->app_id.len, app);
    if (bi != NULL && bi->instance_id.len > 0 && bi->instance_id.len <= 32)
        kms_hex_encode(bi->instance_id.p, bi->instance_id.len, instance);
    log_decision(n, ev, rc, app, instance);
    snprintf(detail, sizeof(detail), "app_id=%s%s%s", app, rc < 0 ? " reason=" : "",
             rc < 0 ? kms_err_detail() : "");
    if (kms_store_audit(n->store, ev, rc < 0 ? "refused" : "released", detail) < 0)
        KMS_WARN("audit log append failed: %s", kms_err_detail());
}

static void get_app_key(struct kms_node *n, struct kms_rpc_caller *c, json_t *body,
                        struct kms_http_resp *resp)
{
    json_t *ver = json_object_get(body, "api_version");
    json_t *vmc = json_object_get(body, "vm_config");
    struct kms_boot_info bi;
    struct kms_auth_result res;
    struct kms_app_keys keys;
    json_t *o = NULL;
    int rc = 0;

    memset(&bi, 0, sizeof(bi));
    memset(&keys, 0, sizeof(keys));
    KMS_ENSURE(ver == NULL || json_is_integer(ver), KMS_ERR_INVAL,
               "failed to decode request: api_version must be a number");
    KMS_ENSURE(vmc == NULL || json_is_string(vmc), KMS_ERR_INVAL,
               "failed to decode request: vm_config must be a string");
    KMS_ENSURE(ver == NULL || (json_integer_value(ver) >= 0 && json_integer_value(ver) <= 1),
               KMS_ERR_INVAL, "Unsupported API version");
    KMS_GUARD(require_attested(c));
    KMS_GUARD(kms_node_require_serving(n));
    KMS_GUARD(kms_node_authorize(n, c->att, &c->v, 0, vmc != NULL ? json_string_value(vmc) : NULL,
                                 0, &bi, &res));
    KMS_GUARD(kms_derive_app_keys(n->keys.root_ca_key, n->keys.root_k256, bi.app_id.p,
                                  bi.app_id.len, bi.instance_id.p, bi.instance_id.len, &keys));
    o = json_object();
    KMS_GUARD_PTR(o);
    json_object_set_new(o, "ca_cert", json_string(n->keys.root_ca_pem));
    json_object_set_new(o, "disk_crypt_key", kms_prpc_bytes(keys.disk_crypt_key, 32));
    json_object_set_new(o, "env_crypt_key", kms_prpc_bytes(keys.env_crypt_key, 32));
    json_object_set_new(o, "k256_key", kms_prpc_bytes(keys.k256_key, 32));
    json_object_set_new(o, "k256_signature", kms_prpc_bytes(keys.k256_signature, 65));
    json_object_set_new(o, "tproxy_app_id", json_string(res.gateway_app_id));
    json_object_set_new(o, "gateway_app_id", json_string(res.gateway_app_id));
    json_object_set_new(o, "os_image_hash",
                        kms_prpc_bytes(bi.os_image_hash.p, bi.os_image_hash.len));
    __atomic_add_fetch(&n->m.keys_released, 1, __ATOMIC_RELAXED);
out:
    kms_node_audit(n, "GetAppKey", rc, &bi);
    if (rc < 0) {
        json_decref(o);
        kms_prpc_error(resp, kms_err_detail());
    } else {
        kms_prpc_ok(resp, o);
    }
    OPENSSL_cleanse(&keys, sizeof(keys));
    kms_boot_info_free(&bi);
}

static void get_kms_key(struct kms_node *n, struct kms_rpc_caller *c, json_t *body,
                        struct kms_http_resp *resp)
{
    json_t *vmc = json_object_get(body, "vm_config");
    struct kms_boot_info bi;
    struct kms_auth_result res;
    char *ca_pem = NULL;
    json_t *o = NULL, *arr, *k;
    int rc = 0;

    memset(&bi, 0, sizeof(bi));
    KMS_ENSURE(vmc == NULL || json_is_string(vmc), KMS_ERR_INVAL,
               "failed to decode request: vm_config must be a string");
    /* Always attested and authorized: no switch hands root keys to an unattested caller. */
    KMS_GUARD(require_attested(c));
    KMS_GUARD(kms_node_require_serving(n));
    KMS_GUARD(kms_node_authorize(n, c->att, &c->v, 1, vmc != NULL ? json_string_value(vmc) : NULL,
                                 0, &bi, &res));
    KMS_GUARD(kms_pkey_to_pem(n->keys.root_ca_key, &ca_pem));
    o = json_object();
    arr = json_array();
    k = json_object();
    KMS_GUARD_PTR(o);
    KMS_GUARD_PTR(arr);
    KMS_GUARD_PTR(k);
    json_object_set_new(k, "ca_key", json_string(ca_pem));
    json_object_set_new(k, "k256_key", kms_prpc_bytes(n->keys.root_k256, 32));
    json_array_append_new(arr, k);
    json_object_set_new(o, "temp_ca_key", json_string(n->keys.tmp_ca_key_pem));
    json_object_set_new(o, "keys", arr);
    KMS_INFO("root keys released to an attested, authorized KMS");
    /* kmsd extension field: the new node's URL, so it becomes our peer. */
    kms_repl_peer_joined(n->repl, json_string_value(json_object_get(body, "kmsd_peer_url")));
out:
    kms_node_audit(n, "GetKmsKey", rc, &bi);
    if (rc < 0) {
        json_decref(o);
        kms_prpc_error(resp, kms_err_detail());
    } else {
        /* The response carries root keys: encode, send, and wipe the JSON text's source. */
        kms_prpc_ok(resp, o);
    }
    if (ca_pem != NULL)
        kms_free_secret(ca_pem, strlen(ca_pem));
    kms_boot_info_free(&bi);
}

static void get_env_pubkey(struct kms_node *n, struct kms_rpc_caller *c, json_t *body,
                           struct kms_http_resp *resp)
{
    uint8_t *app_id = NULL;
    size_t len = 0;
    struct kms_env_pubkey ek;
    json_t *o;
    int rc = 0;

    (void)c;
    /* As upstream's enforce_self_authorization: a KMS refused by its own policy signs nothing. */
    KMS_GUARD(kms_node_require_serving(n));
    KMS_GUARD(kms_prpc_get_bytes(body, "app_id", &app_id, &len));
    KMS_ENSURE(len == 20, KMS_ERR_INVAL, "app_id must be 20 bytes, got %zu", len);
    KMS_GUARD(kms_derive_env_pubkey(n->keys.root_ca_key, n->keys.root_k256, app_id, len,
                                    (uint64_t)time(NULL), &ek));
    o = json_object();
    json_object_set_new(o, "public_key", kms_prpc_bytes(ek.public_key, 32));
    json_object_set_new(o, "signature", kms_prpc_bytes(ek.signature, 65));
    json_object_set_new(o, "timestamp", json_integer((json_int_t)ek.timestamp));
    json_object_set_new(o, "signature_v1", kms_prpc_bytes(ek.signature_v1, 65));
    kms_prpc_ok(resp, o);
out:
    free(app_id);
    if (rc < 0)
        kms_prpc_error(resp, kms_err_detail());
}

/* State and key generation, read together: the part of every cache key that the node owns. */
static void answer_base(struct kms_node *n, enum kms_node_state *state, unsigned long *gen)
{
    pthread_mutex_lock(&n->lock);
    *state = n->state;
    *gen = n->keys_gen;
    pthread_mutex_unlock(&n->lock);
}

/* An optional string as a cache key part that cannot be confused with another: "-" for NULL,
 * else its length and the string; a part that does not fit clears *ok (no caching). */
static const char *key_part(const char *v, char buf[300], int *ok)
{
    int l;

    if (v == NULL)
        return "-";
    l = snprintf(buf, 300, "%zu:%s", strlen(v), v);
    if (l > 0 && l < 300)
        return buf;
    *ok = 0;
    return "";
}

static void get_meta(struct kms_node *n, struct kms_rpc_caller *c, json_t *body,
                     struct kms_http_resp *resp)
{
    struct kms_auth_info info;
    enum kms_node_state state;
    unsigned long gen;
    unsigned slot = resp->proto ? KMS_ANSWER_META_PB : KMS_ANSWER_META_JSON;
    char key[KMS_ANSWER_KEY_MAX], p1[300], p2[300], p3[300];
    json_t *o, *bi = json_null();
    int rc, kl, cacheable = 1;

    (void)c;
    (void)body;
    memset(&info, 0, sizeof(info));
    rc = kms_auth_info(n->auth, &info);
    if (rc < 0) {
        kms_prpc_error(resp, kms_err_detail());
        return;
    }
    /* Every input of the answer: built once per state, key or policy-info change. */
    answer_base(n, &state, &gen);
    kl = snprintf(key, sizeof(key), "%d|%lu|%d|%llu|%s|%s|%s", (int)state, gen, info.is_dev,
                  (unsigned long long)info.chain_id, key_part(info.gateway_app_id, p1, &cacheable),
                  key_part(info.kms_contract_addr, p2, &cacheable),
                  key_part(info.app_implementation, p3, &cacheable));
    if (kl <= 0 || (size_t)kl >= sizeof(key))
        cacheable = 0;
    if (cacheable && kms_answer_cache_get(&n->answers, slot, key, resp)) {
        kms_auth_info_clear(&info);
        return;
    }
    if (n->keys.bootstrap_info_json != NULL) {
        json_t *p = json_loads(n->keys.bootstrap_info_json, 0, NULL);

        if (p != NULL) {
            json_decref(bi);
            bi = p;
        }
    }
    o = json_object();
    json_object_set_new(o, "ca_cert", json_string(n->keys.root_ca_pem));
    json_object_set_new(o, "allow_any_upgrade", json_boolean(info.is_dev));
    json_object_set_new(o, "k256_pubkey", kms_prpc_bytes(n->keys.k256_pubkey, 33));
    json_object_set_new(o, "bootstrap_info", bi);
    json_object_set_new(o, "is_dev", json_boolean(info.is_dev));
#define OPT_STR(k, v) json_object_set_new(o, k, (v) != NULL ? json_string(v) : json_null())
    OPT_STR("gateway_app_id", info.is_dev ? NULL : info.gateway_app_id);
    OPT_STR("kms_contract_address", info.kms_contract_addr);
    json_object_set_new(o, "chain_id",
                        info.is_dev ? json_null() : json_integer((json_int_t)info.chain_id));
    OPT_STR("app_auth_implementation", info.app_implementation);
#undef OPT_STR
    /* kmsd additions (ignored by dstack clients). */
    json_object_set_new(o, "insecure_simulation", json_boolean(n->cfg.insecure_sim));
    json_object_set_new(o, "ca_pubkey", kms_prpc_bytes(n->keys.ca_spki, n->keys.ca_spki_len));
    json_object_set_new(o, "state", json_string(kms_node_state_name(state)));
    kms_auth_info_clear(&info);
    kms_prpc_ok(resp, o);
    if (cacheable)
        kms_answer_cache_put(&n->answers, slot, key, resp);
}

static void get_temp_ca_cert(struct kms_node *n, struct kms_rpc_caller *c, json_t *body,
                             struct kms_http_resp *resp)
{
    enum kms_node_state state;
    unsigned long gen;
    unsigned slot = resp->proto ? KMS_ANSWER_TMPCA_PB : KMS_ANSWER_TMPCA_JSON;
    char key[64];
    json_t *o;

    (void)c;
    (void)body;
    /* As upstream's enforce_self_authorization: no client flow starts at an unauthorized KMS. */
    if (kms_node_require_serving(n) < 0) {
        kms_prpc_error(resp, kms_err_detail());
        return;
    }
    answer_base(n, &state, &gen);
    snprintf(key, sizeof(key), "%d|%lu", (int)state, gen);
    if (kms_answer_cache_get(&n->answers, slot, key, resp))
        return;
    o = json_object();

    json_object_set_new(o, "temp_ca_cert", json_string(n->keys.tmp_ca_pem));
    /* Public on purpose (as the reference): trust comes from the attestation, not this CA. */
    json_object_set_new(o, "temp_ca_key", json_string(n->keys.tmp_ca_key_pem));
    json_object_set_new(o, "ca_cert", json_string(n->keys.root_ca_pem));
    kms_prpc_ok(resp, o);
    kms_answer_cache_put(&n->answers, slot, key, resp);
}

/* SignCert (node/sign_cert.c): the attestation travels inside the CSR. */
static void sign_cert(struct kms_node *n, struct kms_rpc_caller *c, json_t *body,
                      struct kms_http_resp *resp)
{
    kms_sign_cert(n, c->att != NULL ? 1 : 0, body, resp);
}

/* The KMS service (kms_rpc.proto `service KMS`). ClearImageCache is served by the Admin
 * listener only (node/admin.c). */
static const struct kms_pb_method kms_methods[] = {
    {"GetAppKey", get_app_key, 1, &kms_pb_GetAppKeyRequest, &kms_pb_AppKeyResponse},
    {"GetKmsKey", get_kms_key, 1, &kms_pb_GetKmsKeyRequest, &kms_pb_KmsKeyResponse},
    {"GetAppEnvEncryptPubKey", get_env_pubkey, 0, &kms_pb_AppId, &kms_pb_PublicKeyResponse},
    {"GetMeta", get_meta, 0, NULL, &kms_pb_GetMetaResponse},
    {"GetTempCaCert", get_temp_ca_cert, 0, NULL, &kms_pb_GetTempCaCertResponse},
    {"SignCert", sign_cert, 1, &kms_pb_SignCertRequest, &kms_pb_SignCertResponse},
    {"ClearImageCache", NULL, 0, &kms_pb_ClearImageCacheRequest, NULL},
};

const struct kms_pb_service kms_kms_service = {"KMS", kms_methods,
                                               sizeof(kms_methods) / sizeof(kms_methods[0])};

static void observe(struct kms_node *n, const struct kms_pb_method *pm, int status, double secs)
{
    int i = 0;

    if (pm == NULL || !pm->attested)
        return;
    __atomic_add_fetch(&n->m.attestation_requests, 1, __ATOMIC_RELAXED);
    if (status >= 400)
        __atomic_add_fetch(&n->m.attestation_failures, 1, __ATOMIC_RELAXED);
    while (i < KMS_NODE_LATENCY_BUCKETS - 1 && secs > kms_node_latency_bounds[i])
        i++;
    __atomic_add_fetch(&n->m.latency_bucket[i], 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&n->lock);
    n->m.latency_sum_s += secs;
    n->m.latency_count++;
    pthread_mutex_unlock(&n->lock);
}

void kms_kms_handle(void *arg, const struct kms_http_req *req, struct kms_http_resp *resp)
{
    struct kms_node *n = arg;
    struct kms_rpc_caller c;
    struct timespec t0, t1;
    const char *m;
    json_t *body = NULL;
    int rc;

    memset(&c, 0, sizeof(c));
    if (kms_node_handle_common(n, req, resp) || kms_ui_handle(n, req, resp, 0))
        return;
    m = kms_prpc_method(req->path, "KMS");
    if (m == NULL) {
        kms_http_resp_text(resp, 404, "application/json", "{\"error\": \"not found\"}");
        return;
    }
    kms_prpc_begin(req, resp, "KMS", m);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    __atomic_add_fetch(&n->m.rpc_requests, 1, __ATOMIC_RELAXED);
    rc = verify_caller(n, req->client_cert, &c);
    if (rc < 0) {
        char msg[1200];
        const char *kv[] = {"event",       "refused", "method", m,   "class",
                            "attestation", "reason",  msg,      NULL};

        __atomic_add_fetch(&n->m.refusals_attestation, 1, __ATOMIC_RELAXED);
        snprintf(msg, sizeof(msg), "invalid quote: %s", kms_err_detail());
        /* any client can send a bad certificate: one limit for all (m is the client's) */
        kms_log_limited_fields(KMS_LOG_INFO, "KMS refused (client certificate)", kv, "%s: refused",
                               m);
        kms_prpc_error(resp, msg);
        goto out;
    }
    body = kms_prpc_body(req, resp);
    if (body == NULL) {
        __atomic_add_fetch(&n->m.refusals_input, 1, __ATOMIC_RELAXED);
        goto out;
    }
    kms_prpc_call(n, &c, m, body, resp);
out:
    clock_gettime(CLOCK_MONOTONIC, &t1);
    observe(n, resp->pb_method, resp->status,
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    json_decref(body);
    caller_clear(n, &c);
}
