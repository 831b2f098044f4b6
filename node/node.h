/*
 * kmsd node: configuration, the startup state machine (onboard mode until keys exist, then
 * serving mode), and the Onboard and KMS RPC services (kms-reference.md §1-§3).
 */
#ifndef KMS_NODE_NODE_H
#define KMS_NODE_NODE_H

#include <pthread.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "attest/attest.h"
#include "chain/auth.h"
#include "common/err.h"
#include "node/answer_cache.h"
#include "common/lru.h"
#include "replication/replication.h"
#include "storage/storage.h"

/* node error codes (-200..-299) */
enum {
    KMS_ERR_NODE_CONFIG = -200,
    KMS_ERR_NODE_STATE = -201,
    KMS_ERR_NODE_AUTH_BACKEND = -202, /* the authorization backend failed or was unreachable */
};

#define KMS_NODE_MAX_PEERS 16
#define KMS_NODE_MAX_ETH_RPC 16 /* = the eth backend's limit */

struct kms_node_cfg {
    const char *data_dir;       /* --data-dir */
    const char *listen;         /* --listen: KMS HTTPS */
    const char *onboard_listen; /* --onboard-listen: Onboard HTTP (default: --listen) */
    const char *tee;            /* --tee: auto|tdx|gcp-tdx|sim|sim-nitro|sim-gcp */
    const char *dstack_socket;  /* --dstack-socket (--tee dstack; NULL = default) */
    const char *vm_config;      /* --vm-config: this node's vm_config JSON (tdx, gcp-tdx, sim) */
    const char *sim_dir;        /* --sim-dir (default <data_dir>/sim) */
    int insecure_sim;           /* --insecure-sim */
    const char *auth_type;      /* --auth: dev | webhook | eth */
    const char *auth_url;       /* --auth-url (webhook) */
    long auth_timeout_ms;       /* --auth-timeout-ms */
    long auth_interval_ms;      /* --auth-interval (0 = 60 s) */
    long auth_grace_ms;         /* --auth-grace (0 = 300 s, < 0 = none) */
    const char *gateway_app_id; /* --gateway-app-id (dev) */
    const char *auto_bootstrap_domain;     /* --auto-bootstrap-domain */
    const char *seal_provider;             /* --seal: file */
    const char *kek_path;                  /* --kek-file */
    const char *log_level;                 /* --log-level */
    const char *name;                      /* --name: log tag */
    const char *expect_k256_pubkey;        /* --expect-k256-pubkey (onboard pin, hex 33 B) */
    const char *expect_ca_spki;            /* --expect-ca-spki (onboard pin, hex SPKI DER) */
    const char *peers[KMS_NODE_MAX_PEERS]; /* --peer URL (repeatable) */
    size_t n_peers;
    long peer_interval_ms;      /* --peer-interval-ms */
    long peer_confirm_window_s; /* --peer-confirm-window (0: replication's default) */
    const char *nitro_root;     /* --nitro-root PEM (default: embedded AWS root) */
    const char *gcp_root;       /* --gcp-root PEM (default: embedded Google root) */
    const char *trust_sim_root; /* --trust-sim-root PEM: extra simulation root */
    int nitro_device_id_fixed;  /* --nitro-device-id=fixed */
    /* ---- --auth eth (chain/eth.c); see struct kms_auth_cfg for the semantics ---- */
    const char *eth_rpc_urls[KMS_NODE_MAX_ETH_RPC]; /* --eth-rpc URL (repeatable) */
    size_t n_eth_rpc_urls;
    const char *eth_policy;    /* --eth-policy failover|quorum */
    unsigned eth_quorum_k;     /* --eth-quorum K (0 = majority) */
    const char *kms_contract;  /* --kms-contract ADDR (DstackKms) */
    const char *eth_block_tag; /* --eth-block latest|safe|finalized */
    uint64_t eth_chain_id;     /* --eth-chain-id N (0 = not checked) */
    long eth_cache_ttl_ms;     /* --eth-cache-ttl-ms (0 = default, < 0 = no cache) */
    int sim_collateral;        /* --sim-collateral: TCB of sim quotes from sim collateral */
    /* ---- end --auth eth ---- */
    /* --seal tpm (storage/seal_tpm.c) */
    const char *tpm_tcti;  /* --tpm-tcti (default device:/dev/tpmrm0) */
    const char *seal_pcrs; /* --seal-pcrs (default sha256:0,2,14) */
    /* ---- collateral (owner: collateral): TDX TCB evaluation with Intel collateral ---- */
    const char *pccs_url;        /* --pccs-url (default: env PCCS_URL; NULL = none) */
    const char *collateral_file; /* --collateral-file: air-gapped collateral JSON */
    /* ---- end collateral ---- */
    /* ---- aia (owner: aia): GCP AK intermediates fetched through AIA caIssuers ---- */
    const char *aia_fetch;    /* --aia-fetch on|off (NULL: on, off with --insecure-sim) */
    const char *aia_hosts[8]; /* --aia-host SUFFIX (repeatable; default googleapis.com) */
    size_t n_aia_hosts;
    const char *gcp_pcr0[8]; /* --gcp-pcr0 HEX (repeatable; default the reference's OVMF v2) */
    size_t n_gcp_pcr0;
    int gcp_pcr0_any; /* --gcp-pcr0 any */
    /* ---- end aia ---- */
    /* ---- admin (owner: admin, node/admin.c): the Admin service listener ---- */
    const char *admin_listen;     /* --admin-listen HOST:PORT (NULL: no admin listener) */
    const char *admin_token_file; /* --admin-token-file FILE (required with --admin-listen) */
    int admin_allow_remote;       /* --admin-allow-remote: a non-loopback --admin-listen */
    /* ---- end admin ---- */
    /* ---- osimage (node/service_kms.c): plain-TDX OS-image measurement manifests ---- */
    const char *image_manifest_dir;   /* --image-manifest-dir DIR (<hex>.json) */
    const char *image_manifest_url;   /* --image-manifest-url URL with {OS_IMAGE_HASH} */
    long image_manifest_timeout_ms;   /* --image-manifest-timeout-ms (0: default 10 s) */
    int insecure_skip_os_image_check; /* --insecure-skip-os-image-check */
    /* ---- end osimage ---- */
};

enum kms_node_state {
    KMS_STATE_UNINITIALIZED = 0, /* no keys; Onboard service running */
    KMS_STATE_ONBOARDING,        /* onboarding from a peer in progress */
    KMS_STATE_SERVING,
    KMS_STATE_NOT_AUTHORIZED, /* self-authorization refused */
    KMS_STATE_SEALED,         /* keystore cannot be unsealed */
    KMS_STATE_DEGRADED,       /* serving, but a peer is inconsistent/unreachable */
};

const char *kms_node_state_name(enum kms_node_state s);

/* Upper bounds in seconds of the latency histogram's buckets but the last (+Inf); up to 10 s,
 * beyond the default authorization timeout (node/health.c). */
#define KMS_NODE_LATENCY_BUCKETS 12
extern const double kms_node_latency_bounds[KMS_NODE_LATENCY_BUCKETS - 1];

/* Metrics (atomic counters). */
struct kms_node_metrics {
    unsigned long attestation_requests;
    unsigned long attestation_failures;
    unsigned long rpc_requests;
    unsigned long refusals_attestation;
    unsigned long refusals_policy;
    unsigned long refusals_input;
    unsigned long refusals_backend;  /* the authorization backend failed: not a policy denial */
    unsigned long refusals_internal; /* refused for a fault of this node (out of memory, ...) */
    unsigned long keys_released;
    /* latency histogram of attested RPCs: one count per bucket (not cumulative) */
    unsigned long latency_bucket[KMS_NODE_LATENCY_BUCKETS];
    double latency_sum_s;
    unsigned long latency_count;
    unsigned long admin_requests;     /* admin: authorized Admin calls */
    unsigned long admin_unauthorized; /* admin: refused for a missing or wrong token */
};

struct kms_http_server;
struct kms_sim;
struct kms_admin;          /* admin: node/admin.h */
struct kms_image_verifier; /* osimage: attest/image.h */

/* Serving keys, loaded once identity exists. All owned by the node. */
struct kms_node_keys {
    EVP_PKEY *root_ca_key;
    EVP_PKEY *tmp_ca_key;
    EVP_PKEY *rpc_key;
    uint8_t root_k256[32];
    uint8_t k256_pubkey[33];
    X509 *root_ca_cert;
    X509 *tmp_ca_cert;
    X509 *rpc_cert;
    char *root_ca_pem;
    char *tmp_ca_pem;
    char *tmp_ca_key_pem; /* given out on purpose by GetTempCaCert */
    char *rpc_cert_pem;
    uint8_t *ca_spki;
    size_t ca_spki_len;
    char *domain;
    char *bootstrap_info_json;
};

struct kms_node {
    struct kms_node_cfg cfg;
    struct kms_store *store;
    struct kms_auth *auth;
    struct kms_attest_ctx *actx;
    struct kms_sim *sim;
    struct kms_platform *platform; /* evidence: --tee other than the legacy "sim" */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    enum kms_node_state state;
    int finish_requested;
    int stop_requested;
    struct kms_node_keys keys;
    int have_keys;
    struct kms_http_server *onboard_srv;
    struct kms_http_server *kms_srv;
    struct kms_node_metrics m;
    char self_auth_reason[512];
    struct kms_repl *repl; /* peers, onboarding (replication/replication.h); owned */
    char sim_dir_buf[4096];
    struct kms_collateral_source *sim_coll; /* --sim-collateral, --pccs-url, --collateral-file;
                                               owned */
    struct kms_admin *admin;          /* admin: token hash and listener; owned (node/admin.h) */
    struct kms_image_verifier *image; /* osimage: manifests and their cache; owned; NULL only
                                         with --insecure-skip-os-image-check */
    /* ---- auth: continuous self-authorization (node/node.c); fields under lock ---- */
    int sa_decision;                 /* last answer: 0 none, 1 denied, 2 allowed */
    int sa_answered;                 /* the last check got an answer */
    int sa_backend;                  /* the last failed check failed at the backend */
    long long sa_answer_ms;          /* monotonic time of the last answer */
    char sa_denial[512];             /* the policy's reason of the last denial */
    char sa_error[512];              /* why the last check got no answer */
    unsigned long sa_checks;         /* checks made */
    unsigned long sa_backend_errors; /* checks the backend did not answer */
    int sa_stop;                     /* the check thread must end */
    int sa_running;                  /* sa_thread was started */
    pthread_cond_t sa_cond;          /* CLOCK_MONOTONIC; wakes the check thread */
    pthread_t sa_thread;
    /* ---- end auth ---- */
    /* perf: constant answers (GetMeta, GetTempCaCert) keyed on state and keys_gen, which
     * kms_node_load_keys bumps (under lock) each time it replaces keys. */
    struct kms_answer_cache answers;
    unsigned long keys_gen;
    struct kms_lru *callers; /* perf: verified client certificates (node/service_kms.c) */
};

/* perf: verified client certificates kept (keep-alive clients resend theirs with each
 * request), for at most this long. */
#define KMS_NODE_CALLER_CACHE 128
#define KMS_NODE_CALLER_TTL_MS 60000
/* Frees an entry of kms_node.callers. */
void kms_node_caller_free(void *entry);

/* The state /health reports (node/health.c): SERVING becomes DEGRADED while a peer's last
 * completed check said DOWN or INCONSISTENT; every other state is returned unchanged. */
enum kms_node_state kms_node_effective_state(struct kms_node *n);
/* Creates a node from cfg (validates it; opens the store; sets up auth and verification).
 * Strings in cfg must outlive the node. */
KMS_WUR int kms_node_new(const struct kms_node_cfg *cfg, struct kms_node **out);
void kms_node_free(struct kms_node *n);
/* Runs the state machine until kms_node_stop. */
KMS_WUR int kms_node_run(struct kms_node *n);
void kms_node_stop(struct kms_node *n);

/* ---- internal to node/ */

/* Own attestation over report_data (simulated TEE or hardware). Caller frees *out. */
KMS_WUR int kms_node_attest(struct kms_node *n, const uint8_t report_data[64],
                            struct kms_attestation **out);
/* Generates root keys, stores them (one transaction); fills the Bootstrap response JSON. */
KMS_WUR int kms_node_bootstrap(struct kms_node *n, const char *domain, char **response_json);
/* Stores an identity received from a peer (one transaction). */
KMS_WUR int kms_node_adopt_identity(struct kms_node *n, struct kms_identity *id);
/* Loads keys from the store, issues certificates, self-authorizes. */
KMS_WUR int kms_node_load_keys(struct kms_node *n);
void kms_node_keys_clear(struct kms_node_keys *k);
/* BootInfo of this node's own attestation, and the auth decision for it (bootAuth/kms); the
 * outcome is recorded for /health and /metrics. KMS_ERR_DENIED when the policy refused. */
KMS_WUR int kms_node_self_authorize(struct kms_node *n);
/* Copies why the node is not serving into buf (cap bytes, NUL-terminated). Returns 0 when the
 * last check got no answer from the backend and no denial is in force, else 1 (a denial). */
int kms_node_self_auth_reason(struct kms_node *n, char *buf, size_t cap);
/* /health's "self_auth" object (new reference, NULL on allocation failure). */
struct json_t *kms_node_self_auth_json(struct kms_node *n);
/* Appends the self-authorization metrics (Prometheus text) to b. */
struct kms_buf;
KMS_WUR int kms_node_self_auth_metrics(struct kms_node *n, struct kms_buf *b);

/* Shared by the attested KMS RPCs (node/service_kms.c, node/sign_cert.c). */
/* KMS_ERR_DENIED when self-authorization refused this node. */
KMS_WUR int kms_node_require_serving(struct kms_node *n);
/* The OS-image check before authorization (KMS_ERR_ATT_IMAGE; a failed manifest fetch keeps
 * its network code). Nitro: os_image_hash must equal sha256(PCR0||PCR1||PCR2). GCP: the UKI
 * (third PCR2 event) is os_image_hash, PCR0 an allowed firmware. Plain TDX: MRTD and RTMR0-2
 * must be the measurements of the os_image_hash's manifest for the VM shape of vm_config (the
 * request's, else att->config, else "{}", as kms_boot_info_derive), unless
 * --insecure-skip-os-image-check; errors start "Failed to verify os image hash: ". */
KMS_WUR int kms_node_check_os_image(const struct kms_node *n, const struct kms_attestation *att,
                                    const struct kms_boot_info *bi, const struct kms_verified *v,
                                    const char *vm_config);
/* osimage: creates n->image from n->cfg (warns when the check is turned off). */
KMS_WUR int kms_node_image_setup(struct kms_node *n);
/* BootInfo of a verified attestation, OS-image check, then bootAuth/kms (is_kms) or
 * bootAuth/app; "Boot denied: <reason>" (KMS_ERR_DENIED) on refusal, "authorization backend
 * unavailable: ..." (KMS_ERR_NODE_AUTH_BACKEND) when the backend failed; each is counted in
 * its own refusal metric. bi is filled (caller frees with kms_boot_info_free, also on error);
 * res has the gateway app id. */
KMS_WUR int kms_node_authorize(struct kms_node *n, const struct kms_attestation *att,
                               const struct kms_verified *v, int is_kms, const char *vm_config,
                               int boottime, struct kms_boot_info *bi, struct kms_auth_result *res);
/* Appends the released/refused decision for ev (app id, reason) to the store's audit log, and
 * logs it at info (app id, instance id, refusal class and reason; refusals rate-limited per
 * event and class, since any client can cause them). */
void kms_node_audit(struct kms_node *n, const char *ev, int rc, const struct kms_boot_info *bi);

/* HTTP handlers (node/service_*.c). arg is the node. */
struct kms_http_req;
struct kms_http_resp;
void kms_onboard_handle(void *arg, const struct kms_http_req *req, struct kms_http_resp *resp);
void kms_kms_handle(void *arg, const struct kms_http_req *req, struct kms_http_resp *resp);
/* SignCert (node/sign_cert.c). */
struct json_t;
void kms_sign_cert(struct kms_node *n, int has_cert, struct json_t *body,
                   struct kms_http_resp *resp);
/* GET /health and /metrics (both listeners). Returns 1 if handled. */
int kms_node_handle_common(struct kms_node *n, const struct kms_http_req *req,
                           struct kms_http_resp *resp);

/* pRPC helpers (node/prpc.c). */
/* Method name from a /prpc/ path, with "KMS."/"Onboard." prefix stripped; NULL if not pRPC. */
const char *kms_prpc_method(const char *path, const char *prefix);
/* Chooses the encoding of the exchange (§0: JSON for GET, ?json or a JSON Content-Type, else
 * protobuf) and the method's schemas (service "KMS" or "Onboard"; method as returned by
 * kms_prpc_method), recorded in resp. Without this call every helper below speaks JSON. */
void kms_prpc_begin(const struct kms_http_req *req, struct kms_http_resp *resp, const char *service,
                    const char *method);
/* Calls the handler of the method kms_prpc_begin recorded in resp (c as for the service's
 * table); "method not found: <method>" when the service has no such method or does not serve
 * it. */
struct kms_rpc_caller;
void kms_prpc_call(struct kms_node *n, struct kms_rpc_caller *c, const char *method,
                   struct json_t *body, struct kms_http_resp *resp);
/* HTTP 400 {"error": msg} (pretty-printed like the reference), or ProtoError{message = msg}
 * as application/octet-stream for a protobuf exchange. */
void kms_prpc_error(struct kms_http_resp *resp, const char *msg);
/* 200 with JSON, or with obj encoded as the method's protobuf response (Empty: no bytes;
 * members without a field number are dropped). Takes ownership of the json_t reference. */
struct json_t;
void kms_prpc_ok(struct kms_http_resp *resp, struct json_t *obj);
/* The request as a JSON object: the JSON body ({} for empty), or the protobuf body decoded
 * with the method's request schema (every field present with its default; {} for Empty and
 * unknown methods). NULL + error response on failure. */
struct json_t *kms_prpc_body(const struct kms_http_req *req, struct kms_http_resp *resp);
/* kms_prpc_bytes and kms_prpc_get_bytes: replication/replication.h (clients use them too). */

#endif
