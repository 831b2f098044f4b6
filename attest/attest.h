/*
 * attest: the public API of the attestation module, for node/, replication/, chain/ and cli/:
 *  - the dstack VersionedAttestation V0 data model and its SCALE codec (kms-reference.md §5.3)
 *  - RA-TLS certificate extensions, OIDs 1.3.6.1.4.1.62397.1.x (§5.1), report_data binding
 *  - the verification context (pinned roots, time, AIA) and verification entry points
 *  - BootInfo derivation (kms-reference.md §6)
 *  - evidence producers per platform (struct kms_platform)
 * Format-specific functions live in per-format headers under attest/ (scale.h, events.h, tdx.h,
 * nitro.h, tpm.h, collateral.h, sim.h, aia.h, pki.h); include them explicitly.
 *
 * Limits: an attestation is at most KMS_ATT_MAX_BYTES; at most KMS_ATT_MAX_EVENTS events of
 * each kind; a single string/vec field at most KMS_ATT_MAX_FIELD bytes.
 * All structs below own their memory unless said otherwise; free with the matching _free.
 */
#ifndef KMS_ATTEST_H
#define KMS_ATTEST_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "common/err.h"

#define KMS_ATT_MAX_BYTES (1024u * 1024u)
#define KMS_ATT_MAX_EVENTS 1024u
#define KMS_ATT_MAX_FIELD (256u * 1024u)

/* attest error codes (-100..-199); the detail string says exactly which check failed. */
enum {
    KMS_ERR_ATT_NONE = -100,        /* certificate carries no attestation */
    KMS_ERR_ATT_FORMAT = -101,      /* malformed evidence (SCALE, quote layout, CBOR, ...) */
    KMS_ERR_ATT_QUOTE_SIG = -102,   /* quote not signed by the attestation key */
    KMS_ERR_ATT_QE_SIG = -103,      /* QE report not signed by the PCK key */
    KMS_ERR_ATT_QE_BINDING = -104,  /* QE report data does not bind the attestation key */
    KMS_ERR_ATT_CHAIN = -105,       /* certificate chain does not reach the pinned root */
    KMS_ERR_ATT_REPORT_DATA = -106, /* report_data mismatch (binding to TLS key / attestation) */
    KMS_ERR_ATT_RTMR = -107,        /* event replay does not match RTMR/PCR */
    KMS_ERR_ATT_TCB = -108,         /* TCB policy (debug TD, mr_signer_seam, ...) */
    KMS_ERR_ATT_EXPIRED = -109,     /* certificate outside validity at the verification time */
    KMS_ERR_ATT_UNSUPPORTED = -110, /* evidence mode or version this build cannot verify */
    KMS_ERR_ATT_SIM = -111,         /* simulated evidence while simulation roots are not allowed */
    KMS_ERR_ATT_COSE_SIG = -112,    /* Nitro COSE_Sign1 signature invalid */
    KMS_ERR_ATT_PCR = -113,         /* PCR values / digest mismatch */
    KMS_ERR_ATT_TPM_SIG = -114,     /* TPM quote signature invalid */
    KMS_ERR_ATT_IMAGE = -115,       /* os_image_hash check failed */
};

/* collateral error codes (TCB evaluation with Intel collateral, attest/collateral.h) */
enum {
    KMS_ERR_ATT_COLLATERAL = -120,     /* collateral unavailable, malformed or not for this platform
                                          (FMSPC/PCE-ID mismatch, wrong id/version) */
    KMS_ERR_ATT_COLLATERAL_SIG = -121, /* collateral signature, issuer chain or CRL signature bad */
    KMS_ERR_ATT_REVOKED = -122,        /* a certificate is on a CRL, or the TCB level is Revoked */
};

/* ---------------------------------------------------------------- data model (SCALE) */

enum kms_att_mode {
    KMS_ATT_TDX = 0,     /* "dstack-tdx" */
    KMS_ATT_GCP_TDX = 1, /* "dstack-gcp-tdx" */
    KMS_ATT_NITRO = 2,   /* "dstack-nitro-enclave" */
};

/* Owned byte string. */
struct kms_bytes {
    uint8_t *p;
    size_t len;
};

struct kms_tdx_event {
    uint32_t imr;
    uint32_t event_type;
    struct kms_bytes digest;
    char *event; /* NUL-terminated, never NULL after decode */
    struct kms_bytes payload;
};

struct kms_runtime_event {
    char *event;
    struct kms_bytes payload;
};

struct kms_pcr_value {
    uint32_t index;
    char *algorithm; /* "sha256" */
    struct kms_bytes value;
};

struct kms_tpm_event {
    uint32_t pcr_index;
    struct kms_bytes digest;
};

struct kms_tpm_quote {
    struct kms_bytes message;   /* TPMS_ATTEST */
    struct kms_bytes signature; /* TPMT_SIGNATURE */
    struct kms_pcr_value *pcrs;
    size_t n_pcrs;
    struct kms_bytes ak_cert; /* DER */
    uint8_t platform;         /* 0 dstack, 1 gcp, 2 nitro_enclave */
    struct kms_tpm_event *events;
    size_t n_events;
};

struct kms_attestation {
    enum kms_att_mode mode;
    struct kms_bytes tdx_quote; /* TDX, GCP_TDX */
    struct kms_tdx_event *tdx_events;
    size_t n_tdx_events;
    struct kms_tpm_quote tpm;   /* GCP_TDX */
    struct kms_bytes nsm_quote; /* NITRO: COSE_Sign1 bytes */
    struct kms_runtime_event *events;
    size_t n_events;
    uint8_t report_data[64];
    char *config; /* vm_config JSON string; never NULL after decode ("" allowed) */
};

const char *kms_att_mode_name(enum kms_att_mode m); /* "dstack-tdx", ... */

/* Frees everything; accepts NULL. */
void kms_att_free(struct kms_attestation *att);
/* Decodes SCALE VersionedAttestation V0 (strict: no trailing bytes). *out is caller-owned. */
KMS_WUR int kms_att_decode(const uint8_t *p, size_t len, struct kms_attestation **out);
/* Encodes SCALE V0. stripped != 0 applies into_stripped (keep imr==3 TDX events; runtime events
 * lose digest, others lose payload). Caller frees *out. */
KMS_WUR int kms_att_encode(const struct kms_attestation *att, int stripped, uint8_t **out,
                           size_t *len);
/* Builds a DstackTdx attestation from the legacy pair (raw quote + JSON event log, OIDs .1.1/.1.2):
 * runtime_events = events with event_type 0x08000001, report_data from the TD report, config "". */
KMS_WUR int kms_att_from_legacy(const uint8_t *quote, size_t quote_len, const char *event_log_json,
                                size_t json_len, struct kms_attestation **out);
/* serde_json of the TDX event log ([{imr,event_type,digest,event,event_payload}], hex fields).
 * Caller frees *json. */
KMS_WUR int kms_att_event_log_json(const struct kms_attestation *att, char **json);

/* Deep copies of helper structs; used to build attestations in producers. */
KMS_WUR int kms_att_add_runtime_event(struct kms_attestation *att, const char *name,
                                      const uint8_t *payload, size_t len);

/* ---------------------------------------------------------------- runtime events */

/* find_event: first event named `name`, scanning only up to the first "system-ready".
 * Returns a borrowed pointer or NULL. */
const struct kms_runtime_event *kms_att_find_event(const struct kms_attestation *att,
                                                   const char *name);

/* ---------------------------------------------------------------- report_data binding */

/* out = SHA-512(tag || ":" || content). */
void kms_report_data(const char *tag, const uint8_t *content, size_t len, uint8_t out[64]);
/* out = SHA-512("ratls-cert:" || SPKI DER of cert's key). */
KMS_WUR int kms_report_data_for_cert(X509 *cert, uint8_t out[64]);
KMS_WUR int kms_report_data_for_pkey(EVP_PKEY *pkey, uint8_t out[64]);

/* ---------------------------------------------------------------- RA-TLS extensions */

#define KMS_OID_TDX_QUOTE "1.3.6.1.4.1.62397.1.1"
#define KMS_OID_EVENT_LOG "1.3.6.1.4.1.62397.1.2"
#define KMS_OID_APP_ID "1.3.6.1.4.1.62397.1.3"
#define KMS_OID_CERT_USAGE "1.3.6.1.4.1.62397.1.4"
#define KMS_OID_ATTESTATION "1.3.6.1.4.1.62397.1.8"
#define KMS_OID_APP_INFO "1.3.6.1.4.1.62397.1.9"

/* Adds a non-critical extension whose extnValue is DER OCTET STRING(DER OCTET STRING(content)). */
KMS_WUR int kms_ratls_add_ext(X509 *cert, const char *oid, const uint8_t *content, size_t len);
/* Reads such an extension. KMS_ERR_NOTFOUND when absent; caller frees *out. */
KMS_WUR int kms_ratls_get_ext(X509 *cert, const char *oid, uint8_t **out, size_t *len);
/* Writer rule: TDX → .1.1 + .1.2 (full event log JSON); other modes → .1.8 stripped SCALE. */
KMS_WUR int kms_ratls_add_attestation(X509 *cert, const struct kms_attestation *att);
/* Reader rule: .1.8, else .1.1 + .1.2 (both required), else KMS_ERR_ATT_NONE. */
KMS_WUR int kms_ratls_get_attestation(X509 *cert, struct kms_attestation **out);

/* ---------------------------------------------------------------- verification */

/* Verification context: pinned roots, time, options. Opaque; thread-safe for verification
 * after configuration. */
struct kms_attest_ctx;

enum kms_root_kind { KMS_ROOT_TDX = 0, KMS_ROOT_NITRO = 1, KMS_ROOT_GCP = 2 };

struct kms_attest_ctx *kms_attest_ctx_new(void);
void kms_attest_ctx_free(struct kms_attest_ctx *ctx);
/* Adds a trust anchor (the ctx takes its own reference). is_sim marks a simulation root:
 * evidence verified through it is flagged `sim` in the result. */
KMS_WUR int kms_attest_ctx_add_root(struct kms_attest_ctx *ctx, enum kms_root_kind kind, X509 *root,
                                    int is_sim);
/* Loads PEM roots from a file (one or more certs). */
KMS_WUR int kms_attest_ctx_add_root_file(struct kms_attest_ctx *ctx, enum kms_root_kind kind,
                                         const char *path, int is_sim);
/* Fixed verification time (0 = use the current time). */
void kms_attest_ctx_set_time(struct kms_attest_ctx *ctx, time_t now);
/* Nitro device_id: 0 = reference quirk sha256("i") (default); 1 = corrected derivation. */
void kms_attest_ctx_set_nitro_device_id_fixed(struct kms_attest_ctx *ctx, int fixed);

struct kms_tdx_report {
    uint8_t tee_tcb_svn[16];
    uint8_t mr_seam[48];
    uint8_t mr_signer_seam[48];
    uint8_t seam_attributes[8];
    uint8_t td_attributes[8];
    uint8_t xfam[8];
    uint8_t mr_td[48];
    uint8_t mr_config_id[48];
    uint8_t mr_owner[48];
    uint8_t mr_owner_config[48];
    uint8_t rtmr[4][48];
    uint8_t report_data[64];
};

/* What verification established. */
struct kms_verified {
    enum kms_att_mode mode;
    int sim;                  /* verified through a simulation root */
    struct kms_tdx_report td; /* TDX, GCP_TDX */
    uint8_t ppid[64];         /* from the PCK certificate (TDX, GCP_TDX) */
    size_t ppid_len;
    char tcb_status[48]; /* "" when not evaluated (no collateral) or Nitro; 48 holds
                            "ConfigurationAndSWHardeningNeeded" (collateral) */
    char **advisory_ids;
    size_t n_advisory_ids;
    uint8_t pcr[3][48];  /* NITRO: PCR0..2 (48 B); GCP: PCR0, PCR2, PCR14 (32 B) */
    char module_id[128]; /* NITRO */
};

void kms_verified_free(struct kms_verified *v);

/* The Intel SGX Root CA (pinned TDX PCK root), compiled in; also
 * attest/roots/intel-sgx-root-ca.pem. Caller frees with X509_free; NULL on allocation failure. */
X509 *kms_attest_intel_root(void);

/* Full verification per mode (quote, chain, replay, report_data consistency, TCB policy). */
KMS_WUR int kms_attest_verify(const struct kms_attest_ctx *ctx, const struct kms_attestation *att,
                              struct kms_verified *out);
/* kms_attest_verify plus report_data == SHA-512("ratls-cert:" || spki). */
KMS_WUR int kms_attest_verify_bound(const struct kms_attest_ctx *ctx,
                                    const struct kms_attestation *att, const uint8_t *spki,
                                    size_t spki_len, struct kms_verified *out);

/* The pinned AWS Nitro Enclaves Root G1 (compiled in; SHA-256 of the DER
 * 641a0321…bb5b). Returns a new X509 the caller frees, or NULL on allocation failure. */
X509 *kms_attest_nitro_root(void);

/* Google "EK/AK CA Root" for GCP vTPM attestation keys (compiled in; also
 * attest/roots/gcp-ek-ak-root-ca.pem; SHA-256 of the DER 59475959…beb2). Returns a new X509 the
 * caller frees, or NULL on allocation failure. */
X509 *kms_attest_gcp_root(void);

/* ---------------------------------------------------------------- BootInfo */

struct kms_boot_info {
    enum kms_att_mode mode;
    uint8_t mr_aggregated[32];
    uint8_t mr_system[32];
    uint8_t device_id[32];
    struct kms_bytes os_image_hash;
    struct kms_bytes app_id;
    struct kms_bytes compose_hash;
    struct kms_bytes instance_id;
    struct kms_bytes key_provider_info;
    char tcb_status[48]; /* as kms_verified (collateral) */
    char **advisory_ids;
    size_t n_advisory_ids;
};

/* VmConfig.os_image_hash of a vm_config JSON, as BootInfo reads it: plain hex (no 0x), into
 * *out (caller frees out->p); absent or null gives an empty *out. KMS_ERR_ATT_FORMAT for a
 * vm_config that is not a JSON object (or over 1 MiB) or a hash that is not plain hex. */
KMS_WUR int kms_vm_config_os_image_hash(const char *cfg, struct kms_bytes *out);

/* Derives BootInfo (kms-reference.md §6). vm_config: the request's vm_config, NULL or "" to use
 * att->config (then "{}"). use_boottime_mr: replay stops after "boot-mr-done" and
 * key_provider_info is empty. */
KMS_WUR int kms_boot_info_derive(const struct kms_attest_ctx *ctx,
                                 const struct kms_attestation *att, const struct kms_verified *v,
                                 const char *vm_config, int use_boottime_mr,
                                 struct kms_boot_info *out);
void kms_boot_info_free(struct kms_boot_info *bi);

/* ---------------------------------------------------------------- evidence producers
 * TEE detection and the struct kms_platform producer abstraction (platform.c). */

enum kms_platform_kind {
    KMS_PLATFORM_NONE = 0,  /* detection: no TEE found */
    KMS_PLATFORM_SIM_TDX,   /* "sim-tdx" (alias "sim"): simulated TDX (kms_sim) */
    KMS_PLATFORM_SIM_NITRO, /* "sim-nitro": simulated Nitro Enclave (kms_sim_nitro_attest) */
    KMS_PLATFORM_SIM_GCP,   /* "sim-gcp": simulated GCP TDX quote + software vTPM quote */
    KMS_PLATFORM_TDX,       /* "tdx": configfs-tsm or /dev/tdx_guest */
    KMS_PLATFORM_GCP_TDX,   /* "gcp-tdx": TDX quote + GCP vTPM (tpm2-tss) */
    KMS_PLATFORM_NITRO,     /* "nitro": the NSM at paths->nsm_dev (attest/nsm.h) */
    KMS_PLATFORM_DSTACK,    /* "dstack": the dstack guest agent (attest/dstack_agent.h) */
};

/* Static name ("sim-tdx", ...; "none"). */
const char *kms_platform_kind_name(enum kms_platform_kind k);
/* Parses a name (also "sim" for sim-tdx). KMS_ERR_INVAL for anything else. */
KMS_WUR int kms_platform_kind_parse(const char *s, enum kms_platform_kind *out);

/* Host paths used by detection and the hardware producers; tests point them at fake trees. */
struct kms_platform_paths {
    const char *nsm_dev;            /* /dev/nsm */
    const char *tdx_guest_dev;      /* /dev/tdx_guest */
    const char *tsm_report_dir;     /* /sys/kernel/config/tsm/report */
    const char *dmi_product_name;   /* /sys/class/dmi/id/product_name */
    const char *ccel;               /* /sys/firmware/acpi/tables/data/CCEL (optional) */
    const char *tpm_event_log;      /* /sys/kernel/security/tpm0/binary_bios_measurements */
    const char *runtime_events_log; /* /run/log/dstack/runtime_events.log (optional) */
    const char *tcti;               /* tpm2-tss TCTI; NULL = "device:/dev/tpmrm0" */
    const char *dstack_socket;      /* /var/run/dstack.sock (the guest agent) */
    long dstack_timeout_ms;         /* each guest agent call; <= 0 = 30000 */
    /* test seam passed to kms_tsm_opts.on_mkdir (NULL in production) */
    int (*tsm_on_mkdir)(void *arg, const char *report_dir);
    void *tsm_arg;
};

/* Fills the production paths. */
void kms_platform_paths_default(struct kms_platform_paths *p);
/* TEE detection: a Unix socket at dstack_socket (the guest agent) → DSTACK; then as the
 * reference does: /dev/nsm → NITRO; DMI product_name "Google Compute Engine" and /dev/tdx_guest
 * → GCP_TDX; /dev/tdx_guest or the configfs-tsm report dir → TDX; else NONE. p NULL =
 * production paths. */
enum kms_platform_kind kms_platform_detect(const struct kms_platform_paths *p);

struct kms_platform_cfg {
    enum kms_platform_kind kind;
    const char *sim_dir;                    /* sim kinds: the simulation directory */
    const struct kms_platform_paths *paths; /* hardware kinds; NULL = production paths */
    const uint8_t (*nitro_pcrs)[48];        /* sim-nitro: PCR0..2; NULL = fixed defaults */
};

/* An evidence producer for one platform. */
struct kms_platform;

/* Opens a producer (copies cfg; sim kinds create their simulation roots in sim_dir if missing;
 * dstack asks the guest agent for Info, so a missing or mute agent fails here, with the
 * dstack_agent.h errors). KMS_ERR_ATT_UNSUPPORTED for NONE. Caller frees *out. */
KMS_WUR int kms_platform_open(const struct kms_platform_cfg *cfg, struct kms_platform **out);
void kms_platform_free(struct kms_platform *p);
enum kms_platform_kind kms_platform_get_kind(const struct kms_platform *p);

/* Produces an attestation over report_data with the given runtime events (borrowed).
 *  - sim-tdx, sim-gcp: events are replayed into RTMR3 (and PCR14 for sim-gcp).
 *  - sim-nitro, nitro: only the "app-id" event is carried (Nitro has no RTMR); config is
 *    {"os_image_hash": sha256(PCR0||PCR1||PCR2)} (nitro: of the NSM document; zero PCRs give a
 *    zero hash, as the reference). nitro asks the NSM with user_data = report_data.
 *  - tdx, gcp-tdx: the quote's RTMR3 holds what the guest extended; events NULL/0 means "read
 *    paths->runtime_events_log" (JSON lines {event, payload(base64)}), absent file = none.
 *  - dstack: the guest agent's Attest (TDX or GCP TDX, its own events and vm_config); events
 *    and config are ignored, the answer must be over report_data.
 * config: vm_config JSON (NULL = ""; sim-gcp: NULL = {"os_image_hash": <sim UKI hash>}).
 * Caller frees *out (kms_att_free). */
KMS_WUR int kms_platform_attest(struct kms_platform *p, const uint8_t report_data[64],
                                const struct kms_runtime_event *events, size_t n_events,
                                const char *config, struct kms_attestation **out);

/* Creates every simulation root in sim_dir that is missing (TDX chain, sim-nitro-root,
 * sim-gcp-root), so a verifier started first trusts clients of every simulated kind. */
KMS_WUR int kms_platform_sim_init(const char *sim_dir);

/* Adds every simulation root present in sim_dir to ctx as a simulation anchor: sim-root.pem
 * (TDX), sim-nitro-root.pem (Nitro), sim-gcp-root.pem (GCP). Missing files are skipped;
 * KMS_ERR_NOTFOUND when none exists. */
KMS_WUR int kms_platform_add_sim_roots(const char *sim_dir, struct kms_attest_ctx *ctx);

/* ---------------------------------------------------------------- AIA fetching for the GCP AK
 * chain (aia.c)
 *
 * Real GCP AK certificates are issued by an intermediate ("EK/AK CA Intermediate") that the
 * evidence does not carry. When enabled, a GCP AK certificate that does not verify with the
 * KMS_ROOT_GCP anchors alone is completed with issuer certificates fetched from the
 * Authority Information Access caIssuers URLs (http/https only, no redirects, at most 3 fetches
 * of at most 64 KiB each, DER or PEM, all within timeout_ms; 0 = 5000). Fetched certificates
 * are untrusted: they only fill the path, the anchor stays the pinned root. Certificates that
 * completed a verified chain are cached per URL (32 entries, until min(notAfter, 24 h)).
 * Off by default. Call at configuration time, not concurrently with verification. Errors:
 * KMS_ERR_INVAL (timeout outside 0..600000 ms), KMS_ERR_NOMEM. */
KMS_WUR int kms_attest_ctx_set_aia_fetch(struct kms_attest_ctx *ctx, int enabled, long timeout_ms);
/* Restricts fetching to URLs whose host is one of suffixes or a subdomain of one (DNS names,
 * at most 8; n = 0 allows any host) so client evidence cannot point the node at arbitrary
 * hosts. Call after enabling fetching (else KMS_ERR_STATE); KMS_ERR_INVAL for a bad name. */
KMS_WUR int kms_attest_ctx_set_aia_hosts(struct kms_attest_ctx *ctx, const char *const *suffixes,
                                         size_t n);

#endif
