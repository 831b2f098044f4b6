/*
 * attest: evidence formats and verification.
 *  - SCALE codec for dstack VersionedAttestation V0 (kms-reference.md §5.3)
 *  - RA-TLS certificate extensions, OIDs 1.3.6.1.4.1.62397.1.x (§5.1)
 *  - runtime-event digests and replay (attestation-reference.md §0.4)
 *  - TDX v4 quote parsing and signature verification (attestation-reference.md §3)
 *  - BootInfo derivation (kms-reference.md §6)
 *  - evidence producers: the simulated TEE (DESIGN.md §5)
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

/* ---------------------------------------------------------------- SCALE primitives
 * (scale.c; shared with node/csr.c)
 * Bounded SCALE reading and writing over common/buf.h's kms_reader / kms_buf. Readers never
 * trust a length: it is checked against the caller's maximum and the bytes left. They fail with
 * KMS_ERR_PARSE (truncated or malformed input) or KMS_ERR_TOOBIG (a length above max), the
 * detail naming `what` and the offset; callers map these to their layer's codes. */
struct kms_reader;
struct kms_buf;

/* Compact<u32> used as a length: canonical forms only (a value that fits a shorter form is
 * refused, so every value has one encoding); the big-integer form is refused. */
KMS_WUR int kms_scale_get_compact(struct kms_reader *r, size_t *out);
/* Vec<u8> of at most max bytes, copied into *out (malloc'd, at least 1 byte; caller frees
 * out->p; untouched on error). */
KMS_WUR int kms_scale_get_bytes(struct kms_reader *r, size_t max, const char *what,
                                struct kms_bytes *out);
/* String of at most max bytes: strict UTF-8 (no overlongs, surrogates or code points above
 * U+10FFFF) and no NUL, since it is kept as a C string. *out is malloc'd and NUL-terminated
 * (caller frees; untouched on error). */
KMS_WUR int kms_scale_get_str(struct kms_reader *r, size_t max, const char *what, char **out);
/* Compact length n (KMS_ERR_TOOBIG from 2^30 on). */
KMS_WUR int kms_scale_put_compact(struct kms_buf *b, size_t n);
/* Vec<u8>: compact length, then the n bytes (p may be NULL when n == 0). */
KMS_WUR int kms_scale_put_bytes(struct kms_buf *b, const uint8_t *p, size_t n);

/* ---------------------------------------------------------------- runtime events, replay */

#define KMS_EVENT_TYPE_RUNTIME 0x08000001u

/* digest = H(le32(0x08000001) || ":" || name || ":" || payload); sha384 != 0 → SHA-384 (48 B)
 * else SHA-256 (32 B). */
void kms_att_event_digest(int sha384, const char *name, const uint8_t *payload, size_t len,
                          uint8_t *out);
/* Replays events from zeros; stop_after != NULL stops after the first event with that name.
 * out receives 48 (sha384) or 32 bytes. */
void kms_att_replay(int sha384, const struct kms_runtime_event *ev, size_t n,
                    const char *stop_after, uint8_t *out);
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

/* The quoting enclave's SGX report body (reserved fields skipped). */
struct kms_tdx_qe_report {
    uint8_t cpu_svn[16];
    uint32_t misc_select;
    uint8_t attributes[16];
    uint8_t mr_enclave[32];
    uint8_t mr_signer[32];
    uint16_t isv_prod_id;
    uint16_t isv_svn;
    uint8_t report_data[64];
};

/* A parsed v4 TDX quote. Pointers borrow from the input buffer. */
struct kms_tdx_quote {
    uint16_t version;
    uint16_t att_key_type;
    uint32_t tee_type;
    uint16_t qe_svn;
    uint16_t pce_svn;
    uint8_t qe_vendor_id[16];
    struct kms_tdx_report report;
    const uint8_t *signed_data; /* header || body */
    size_t signed_len;
    const uint8_t *sig;        /* 64: r||s */
    const uint8_t *attest_key; /* 64: X||Y */
    const uint8_t *qe_report;  /* 384: the signed bytes of qe */
    struct kms_tdx_qe_report qe;
    const uint8_t *qe_report_sig; /* 64 */
    const uint8_t *qe_auth;
    size_t qe_auth_len;
    const uint8_t *pck_chain; /* PEM, cert-data type 5 */
    size_t pck_chain_len;
};

#define KMS_TDX_HEADER_LEN 48u
#define KMS_TDX_BODY_LEN 584u
#define KMS_TDX_QE_REPORT_LEN 384u

/* Parses a v4 quote (trailing zero padding after the used length is allowed). */
KMS_WUR int kms_tdx_quote_parse(const uint8_t *p, size_t len, struct kms_tdx_quote *q);

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

/* Verifies a quote's signatures and PCK chain (no event-log checks). */
KMS_WUR int kms_tdx_quote_verify(const struct kms_attest_ctx *ctx, const uint8_t *quote, size_t len,
                                 struct kms_verified *out);
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

/* Derives BootInfo (kms-reference.md §6). vm_config: the request's vm_config, NULL or "" to use
 * att->config (then "{}"). use_boottime_mr: replay stops after "boot-mr-done" and
 * key_provider_info is empty. */
KMS_WUR int kms_boot_info_derive(const struct kms_attest_ctx *ctx,
                                 const struct kms_attestation *att, const struct kms_verified *v,
                                 const char *vm_config, int use_boottime_mr,
                                 struct kms_boot_info *out);
void kms_boot_info_free(struct kms_boot_info *bi);

/* ---------------------------------------------------------------- evidence producers */

/*
 * The simulated TEE: a directory holding a locally generated simulation PCK chain
 * (sim-root.pem/.key → sim-pck-ca.pem/.key → sim-pck.pem/.key) and a QE attestation key.
 * Quotes it produces are real-format v4 TDX quotes that the production verifier accepts when
 * sim-root.pem is configured as a (simulation) TDX root.
 */
struct kms_sim;

/* Creates the directory and generates the chain if sim-root.pem is missing; then opens it. */
KMS_WUR int kms_sim_open(const char *dir, struct kms_sim **out);
void kms_sim_free(struct kms_sim *sim);
/* Borrowed root certificate (valid while sim lives). */
X509 *kms_sim_root(const struct kms_sim *sim);
/* Path of the root PEM inside the directory (borrowed). */
const char *kms_sim_root_path(const struct kms_sim *sim);

/* Simulated TD measurements; NULL fields take fixed defaults. */
struct kms_sim_measurements {
    const uint8_t *mr_td;        /* 48 */
    const uint8_t *rtmr0;        /* 48 */
    const uint8_t *rtmr1;        /* 48 */
    const uint8_t *rtmr2;        /* 48 */
    const uint8_t *mr_config_id; /* 48 */
    int debug;                   /* set td_attributes DEBUG bit (for negative tests) */
};

/* Produces a DstackTdx attestation: a signed v4 quote whose RTMR3 is the SHA-384 replay of
 * the given runtime events, with those events as imr-3 TDX events and runtime events.
 * m may be NULL. config may be NULL (""). Caller frees *out. */
KMS_WUR int kms_sim_attest(const struct kms_sim *sim, const struct kms_sim_measurements *m,
                           const uint8_t report_data[64], const struct kms_runtime_event *events,
                           size_t n_events, const char *config, struct kms_attestation **out);

/* Raw quote for given report fields (used by tests to flip bytes). Caller frees *quote. */
KMS_WUR int kms_sim_quote(const struct kms_sim *sim, const struct kms_tdx_report *report,
                          uint8_t **quote, size_t *len);

/*
 * Simulated Nitro Enclave: sim_dir holds a P-384 simulation root (sim-nitro-root.pem/.key, 0600,
 * created on first use). Each call issues a fresh P-384 leaf (valid 3 h from now) and produces a
 * real-format NSM COSE_Sign1 document (ES384; module_id "i-0123456789abcdef0-enc0123456789abcdef",
 * PCR0..2 = pcrs, PCR3..15 zero, user_data = report_data (null when report_data is NULL, for
 * negative tests; att->report_data is then zero), cabundle [root]) wrapped in a NITRO attestation
 * with config {"os_image_hash":"<hex sha256(PCR0||PCR1||PCR2)>"} and, when app_id_hex != NULL,
 * the runtime event "app-id". The production verifier accepts it when
 * sim-nitro-root.pem is configured as a simulation Nitro root. Caller frees *out (kms_att_free).
 */
KMS_WUR int kms_sim_nitro_attest(const char *sim_dir, const uint8_t pcrs[3][48],
                                 const uint8_t report_data[64], const char *app_id_hex,
                                 struct kms_attestation **out);

/* ================================================================ GCP vTPM: TPM quotes, TCG event
 * logs, vTPM evidence producer (tpm.c, tcg_eventlog.c, vtpm.c; owner: tpm)
 *
 * Limits: a TPMS_ATTEST selects at most KMS_TPM_MAX_PCRS PCRs in at most KMS_TPM_MAX_SELECTIONS
 * banks (bitmaps of at most KMS_TPM_MAX_SELECT bytes); a TCG log has at most KMS_TCG_MAX_EVENTS
 * events, KMS_TCG_MAX_ALGS digest algorithms and KMS_TCG_MAX_EVENT_DATA bytes of event data each.
 */

#define KMS_TPM_MAX_PCRS 32u
#define KMS_TPM_MAX_SELECTIONS 4u
#define KMS_TPM_MAX_SELECT 8u
#define KMS_TPM_ALG_SHA1 0x0004u
#define KMS_TPM_ALG_SHA256 0x000Bu
#define KMS_TPM_ALG_SHA384 0x000Cu
#define KMS_TPM_ALG_SHA512 0x000Du

/* A parsed TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE. Pointers borrow from the input buffer. */
struct kms_tpms_attest {
    const uint8_t *qualified_signer; /* TPM2B_NAME contents */
    size_t qualified_signer_len;
    const uint8_t *extra_data; /* qualifying data the quote was asked for */
    size_t extra_data_len;
    uint64_t clock;
    uint32_t reset_count;
    uint32_t restart_count;
    uint8_t safe;
    uint64_t firmware_version;
    size_t n_pcrs; /* selected PCRs, selections in order, bitmap bit order within each */
    uint32_t pcr_index[KMS_TPM_MAX_PCRS];
    uint16_t pcr_alg[KMS_TPM_MAX_PCRS];
    const uint8_t *pcr_digest;
    size_t pcr_digest_len;
};

/* Parses a TPMS_ATTEST (big-endian; magic 0xff544347, type 0x8018; no trailing bytes).
 * KMS_ERR_ATT_FORMAT on malformed input. */
KMS_WUR int kms_tpms_attest_parse(const uint8_t *p, size_t len, struct kms_tpms_attest *out);

#define KMS_TCG_MAX_EVENTS 8192u
#define KMS_TCG_MAX_ALGS 8u
#define KMS_TCG_MAX_DIGEST 64u
#define KMS_TCG_MAX_EVENT_DATA (1024u * 1024u)
#define KMS_TCG_EV_NO_ACTION 0x00000003u

struct kms_tcg_digest {
    uint16_t alg;
    uint16_t len;
    const uint8_t *p; /* borrowed from the log buffer */
};

/* One TCG_PCR_EVENT2. pcr_index is the PCR (TPM logs) or the CC MR index (CCEL: 1 = RTMR0...). */
struct kms_tcg_event {
    uint32_t pcr_index;
    uint32_t event_type;
    size_t n_digests;
    struct kms_tcg_digest digests[KMS_TCG_MAX_ALGS];
    const uint8_t *data; /* borrowed */
    uint32_t data_len;
};

/* A parsed TCG2 crypto-agile log (kernel binary_bios_measurements or the ACPI CCEL). The events
 * array is owned; digest and data pointers borrow from the input buffer. */
struct kms_tcg_log {
    uint32_t platform_class;
    uint8_t spec_major, spec_minor, spec_errata, uintn_size;
    size_t n_algs; /* digest sizes announced by the Spec ID event */
    uint16_t alg[KMS_TCG_MAX_ALGS];
    uint16_t alg_size[KMS_TCG_MAX_ALGS];
    struct kms_tcg_event *events; /* excludes the Spec ID header event */
    size_t n_events;
};

/* Parses a log: a TCG_PCClientPCREvent carrying "Spec ID Event03", then TCG_PCR_EVENT2 records
 * until the end of the buffer or a pcrIndex of 0xFFFFFFFF (CCEL padding). Digest sizes come from
 * the Spec ID event. KMS_ERR_ATT_FORMAT on malformed input. Free with kms_tcg_log_free. */
KMS_WUR int kms_tcg_log_parse(const uint8_t *p, size_t len, struct kms_tcg_log *out);
/* Frees the events array and zeroes *log; accepts NULL. */
void kms_tcg_log_free(struct kms_tcg_log *log);
/* The event's digest for alg (borrowed), or NULL when the event has none. */
const uint8_t *kms_tcg_event_digest(const struct kms_tcg_event *ev, uint16_t alg, size_t *len);
/* Replays index `pcr` of bank `alg` from zeros: pcr = H(pcr || digest), EV_NO_ACTION skipped.
 * out needs KMS_TCG_MAX_DIGEST bytes; *out_len receives the digest size. KMS_ERR_ATT_FORMAT when
 * an extended event lacks that bank, KMS_ERR_ATT_UNSUPPORTED for an unknown hash. */
KMS_WUR int kms_tcg_log_replay(const struct kms_tcg_log *log, uint16_t alg, uint32_t pcr,
                               uint8_t *out, size_t *out_len);
/* The SHA-256 bank as TpmEvent[] (EV_NO_ACTION and events without a SHA-256 digest skipped,
 * as the reference does). Caller frees with kms_tpm_events_free. */
KMS_WUR int kms_tcg_log_to_tpm_events(const struct kms_tcg_log *log, struct kms_tpm_event **out,
                                      size_t *n);
void kms_tpm_events_free(struct kms_tpm_event *ev, size_t n);
/* Frees the contents of q and zeroes it (q itself is not freed); accepts NULL. */
void kms_tpm_quote_clear(struct kms_tpm_quote *q);

/* vTPM evidence producer over tpm2-tss ESYS. */
struct kms_vtpm;

enum kms_vtpm_ak_kind { KMS_VTPM_AK_ECC = 0, KMS_VTPM_AK_RSA = 1 };

/* Opens a TPM through a TCTI configuration string ("swtpm:host=127.0.0.1,port=2321",
 * "mssim:host=...,port=...", "device:/dev/tpmrm0"; NULL = tss2 default). Caller frees *out. */
KMS_WUR int kms_vtpm_open(const char *tcti, struct kms_vtpm **out);
void kms_vtpm_free(struct kms_vtpm *t);
/* Creates the AK as a primary key in the endorsement hierarchy: restricted signing, ECC P-256
 * ECDSA-SHA256 or RSA-2048 RSASSA-SHA256. Replaces a previously created AK. When ak_pub != NULL,
 * *ak_pub receives the public key (caller frees). */
KMS_WUR int kms_vtpm_create_ak(struct kms_vtpm *t, enum kms_vtpm_ak_kind kind, EVP_PKEY **ak_pub);
/* Quotes sha256 PCRs 0, 2, 14 with qualifying data qd (at most 64 bytes) using the AK and fills
 * *out: message (TPMS_ATTEST), signature (marshalled TPMT_SIGNATURE), pcrs with the values read
 * (re-read until they match the quoted digest), platform 1 (gcp); events and ak_cert are left
 * empty for the caller. *out must be zeroed; free with kms_tpm_quote_clear. */
KMS_WUR int kms_vtpm_quote(struct kms_vtpm *t, const uint8_t *qd, size_t qd_len,
                           struct kms_tpm_quote *out);
/* Recreates GCP's pre-provisioned AK (attestation-reference.md §2.1): the template from NV
 * 0x01C10003 (ECC) / 0x01C10001 (RSA) as a primary key in the endorsement hierarchy, and its
 * Google-issued certificate from NV 0x01C10002 / 0x01C10000, which must certify that key
 * (KMS_ERR_STATE otherwise). KMS_ERR_NOTFOUND when the NV index is absent (not on GCP). The AK
 * is then used by kms_vtpm_quote. *cert is the DER (caller frees); ak_pub optional. */
KMS_WUR int kms_vtpm_load_gcp_ak(struct kms_vtpm *t, enum kms_vtpm_ak_kind kind, uint8_t **cert,
                                 size_t *cert_len, EVP_PKEY **ak_pub);
/* Extends sha256 PCR `pcr` with a 32-byte digest (runtime events go to PCR 14). */
KMS_WUR int kms_vtpm_pcr_extend(struct kms_vtpm *t, uint32_t pcr, const uint8_t digest[32]);
/* Reads sha256 PCR `pcr` into out (32 bytes). */
KMS_WUR int kms_vtpm_pcr_read(struct kms_vtpm *t, uint32_t pcr, uint8_t out[32]);

/* Test/dev helpers (not for production trust decisions). */
/* Makes a P-256 CA certificate "CN=<cn>" valid from now - 1 h for 10 years: self-signed when
 * issuer == NULL, else signed by issuer/issuer_key. Caller frees *cert and *key. */
KMS_WUR int kms_vtpm_test_ca(const char *cn, X509 *issuer, EVP_PKEY *issuer_key, X509 **cert,
                             EVP_PKEY **key);
/* Issues an AK certificate for ak_pub signed by ca/ca_key (valid from now - 1 h for 1 year).
 * Caller frees *der. */
KMS_WUR int kms_vtpm_issue_ak_cert(EVP_PKEY *ak_pub, X509 *ca, EVP_PKEY *ca_key, uint8_t **der,
                                   size_t *der_len);

/* ================================================================ Evidence on real hardware and
 * per-platform producers: TDX quotes via configfs-tsm / /dev/tdx_guest (tdx_tsm.c), TEE
 * detection and the struct kms_platform producer abstraction incl. the simulated GCP TDX+vTPM
 * platform (platform.c; owner: evidence)
 */

#define KMS_TSM_REPORT_DIR "/sys/kernel/config/tsm/report"
#define KMS_TDX_GUEST_DEV "/dev/tdx_guest"
#define KMS_TSM_MAX_OUTBLOB (64u * 1024u) /* a v4 quote with its PCK chain is about 5 KB */
#define KMS_TDX_REPORT_LEN 1024u          /* TDREPORT (TDG.MR.REPORT) */

/* configfs-tsm options. */
struct kms_tsm_opts {
    const char *root; /* report root; NULL = KMS_TSM_REPORT_DIR */
    /* Test seam: called right after the report directory is created and before inblob is
     * written, standing in for the kernel that populates a new report directory with its
     * attributes (inblob, outblob, generation, provider). NULL in production. */
    int (*on_mkdir)(void *arg, const char *report_dir);
    void *arg;
};

/* TDX quote through configfs-tsm: mkdir <root>/<unique>, write the 64-byte inblob, read
 * outblob, then require generation == 1 (no other writer touched the report between our write
 * and read) and provider "tdx_guest" (when present); the outblob must parse as a TDX quote
 * carrying report_data. The report directory is removed afterwards. KMS_ERR_NOTFOUND when the
 * root does not exist, KMS_ERR_IO on OS errors, KMS_ERR_STATE when the generation changed,
 * KMS_ERR_ATT_FORMAT for a short or wrong outblob. Caller frees *quote. */
KMS_WUR int kms_tsm_tdx_quote(const struct kms_tsm_opts *o, const uint8_t report_data[64],
                              uint8_t **quote, size_t *len);

/* Legacy TDX quote: TDX_CMD_GET_REPORT0 then TDX_CMD_GET_QUOTE (GetQuote TDVMCALL carrying a QGS
 * get-quote message) on dev (NULL = KMS_TDX_GUEST_DEV). KMS_ERR_NOTFOUND when dev is absent.
 * Caller frees *quote. */
KMS_WUR int kms_tdx_guest_quote(const char *dev, const uint8_t report_data[64], uint8_t **quote,
                                size_t *len);

/* configfs-tsm when its root exists, else the /dev/tdx_guest ioctl. Caller frees *quote. */
KMS_WUR int kms_tdx_get_quote(const struct kms_tsm_opts *o, const char *dev,
                              const uint8_t report_data[64], uint8_t **quote, size_t *len);

/* The GetQuote shared buffer of the legacy ioctl (exposed for tests): build the request around a
 * TDREPORT into buf (cap bytes, *len = bytes used by header + message), and extract the quote
 * from a completed buffer (status, lengths and QGS message checked; caller frees *quote). */
KMS_WUR int kms_tdx_qgs_request(const uint8_t tdreport[KMS_TDX_REPORT_LEN], uint8_t *buf,
                                size_t cap, size_t *len);
KMS_WUR int kms_tdx_qgs_response(const uint8_t *buf, size_t len, uint8_t **quote,
                                 size_t *quote_len);

enum kms_platform_kind {
    KMS_PLATFORM_NONE = 0,  /* detection: no TEE found */
    KMS_PLATFORM_SIM_TDX,   /* "sim-tdx" (alias "sim"): simulated TDX (kms_sim) */
    KMS_PLATFORM_SIM_NITRO, /* "sim-nitro": simulated Nitro Enclave (kms_sim_nitro_attest) */
    KMS_PLATFORM_SIM_GCP,   /* "sim-gcp": simulated GCP TDX quote + software vTPM quote */
    KMS_PLATFORM_TDX,       /* "tdx": configfs-tsm or /dev/tdx_guest */
    KMS_PLATFORM_GCP_TDX,   /* "gcp-tdx": TDX quote + GCP vTPM (tpm2-tss) */
    KMS_PLATFORM_NITRO,     /* "nitro": detected only; this build has no NSM producer */
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
    /* test seam passed to kms_tsm_opts.on_mkdir (NULL in production) */
    int (*tsm_on_mkdir)(void *arg, const char *report_dir);
    void *tsm_arg;
};

/* Fills the production paths. */
void kms_platform_paths_default(struct kms_platform_paths *p);
/* TEE detection as the reference does: /dev/nsm → NITRO; DMI product_name "Google Compute
 * Engine" and /dev/tdx_guest → GCP_TDX; /dev/tdx_guest or the configfs-tsm report dir → TDX;
 * else NONE. p NULL = production paths. */
enum kms_platform_kind kms_platform_detect(const struct kms_platform_paths *p);

struct kms_platform_cfg {
    enum kms_platform_kind kind;
    const char *sim_dir;                    /* sim kinds: the simulation directory */
    const struct kms_platform_paths *paths; /* hardware kinds; NULL = production paths */
    const uint8_t (*nitro_pcrs)[48];        /* sim-nitro: PCR0..2; NULL = fixed defaults */
};

/* An evidence producer for one platform. */
struct kms_platform;

/* Opens a producer (copies cfg; sim kinds create their simulation roots in sim_dir if missing).
 * KMS_ERR_ATT_UNSUPPORTED for NONE and NITRO. Caller frees *out. */
KMS_WUR int kms_platform_open(const struct kms_platform_cfg *cfg, struct kms_platform **out);
void kms_platform_free(struct kms_platform *p);
enum kms_platform_kind kms_platform_get_kind(const struct kms_platform *p);

/* Produces an attestation over report_data with the given runtime events (borrowed).
 *  - sim-tdx, sim-gcp: events are replayed into RTMR3 (and PCR14 for sim-gcp).
 *  - sim-nitro: only the "app-id" event is carried (Nitro has no RTMR); config is generated.
 *  - tdx, gcp-tdx: the quote's RTMR3 holds what the guest extended; events NULL/0 means "read
 *    paths->runtime_events_log" (JSON lines {event, payload(base64)}), absent file = none.
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

/* Simulated GCP vTPM: a software TPM2_Quote in the real formats (TPMS_ATTEST, ECDSA-P256
 * TPMT_SIGNATURE) over sha256 PCRs 0, 2, 14 with extraData = qd, signed by a fresh AK whose
 * certificate chains to sim_dir/sim-gcp-root.pem (created on first use). PCR0 and PCR2 replay
 * a synthetic firmware log carried in q->events (the third PCR2 event, the "UKI", has digest
 * os_image_hash when it is 32 bytes); PCR14 = SHA-256 replay of events. *q must be zeroed; free
 * with kms_tpm_quote_clear. */
KMS_WUR int kms_sim_gcp_tpm_quote(const char *sim_dir, const uint8_t *qd, size_t qd_len,
                                  const struct kms_runtime_event *events, size_t n_events,
                                  const uint8_t *os_image_hash, size_t os_image_hash_len,
                                  struct kms_tpm_quote *q);
/* ================================================================ end evidence */

/* ================================================================ TDX collateral: TCB evaluation
 * from Intel DCAP collateral, PCCS fetch, air-gapped files, verification caches
 * (collateral.c, collateral_sim.c, cache.c; owner: collateral)
 *
 * Collateral (attestation-reference.md §3.3): TDX TCB Info v3 {"tcbInfo":{...},"signature":hex}
 * and QE Identity v2 {"enclaveIdentity":{...},"signature":hex}, each ECDSA P-256 signed over the
 * exact text of the inner JSON value by the TCB signing certificate (issuer chain to the pinned
 * Intel root), the PCK CRL (signed by the PCK platform/processor CA) and the root CA CRL.
 *
 * Limits: one collateral item (JSON text, PEM chain, CRL) at most KMS_COLL_MAX_ITEM bytes; a
 * collateral file at most KMS_COLL_MAX_FILE bytes and KMS_COLL_MAX_SETS sets; at most
 * KMS_COLL_MAX_LEVELS TCB levels, KMS_COLL_MAX_ADVISORIES advisory IDs per level,
 * KMS_COLL_MAX_MODULES TDX module identities, KMS_COLL_MAX_CHAIN certificates per issuer chain.
 */
#define KMS_COLL_MAX_ITEM (256u * 1024u)
#define KMS_COLL_MAX_FILE (4u * 1024u * 1024u)
#define KMS_COLL_MAX_SETS 64u
#define KMS_COLL_MAX_LEVELS 128u
#define KMS_COLL_MAX_ADVISORIES 64u
#define KMS_COLL_MAX_MODULES 16u
#define KMS_COLL_MAX_CHAIN 4u

enum {
    KMS_ERR_ATT_COLLATERAL = -120,     /* collateral unavailable, malformed or not for this platform
                                          (FMSPC/PCE-ID mismatch, wrong id/version) */
    KMS_ERR_ATT_COLLATERAL_SIG = -121, /* collateral signature, issuer chain or CRL signature bad */
    KMS_ERR_ATT_REVOKED = -122,        /* a certificate is on a CRL, or the TCB level is Revoked */
};

/* One collateral set (one FMSPC), the layout of dcap-qvl's QuoteCollateralV3. Owns everything. */
struct kms_collateral {
    char *pck_crl_issuer_chain;             /* PEM: PCK platform/processor CA, root */
    struct kms_bytes root_ca_crl;           /* DER */
    struct kms_bytes pck_crl;               /* DER */
    char *tcb_info_issuer_chain;            /* PEM: TCB signing certificate, root */
    char *tcb_info;                         /* exact signed text of the "tcbInfo" value */
    struct kms_bytes tcb_info_signature;    /* 64 bytes r || s */
    char *qe_identity_issuer_chain;         /* PEM */
    char *qe_identity;                      /* exact signed text of the "enclaveIdentity" value */
    struct kms_bytes qe_identity_signature; /* 64 bytes r || s */
};

/* Frees the contents and zeroes *c (c itself is not freed); accepts NULL. */
void kms_collateral_clear(struct kms_collateral *c);
/* Clears and frees n sets allocated by the functions below; accepts NULL. */
void kms_collateral_free(struct kms_collateral *sets, size_t n);
/* Deep copy into *dst (zeroed by the call). */
KMS_WUR int kms_collateral_copy(struct kms_collateral *dst, const struct kms_collateral *src);
/* Parses collateral JSON: one object with the fields above (dcap-qvl QuoteCollateralV3 names;
 * byte fields as hex strings or arrays of byte numbers; CRLs also as PEM text), or an array of
 * such objects (one per FMSPC). *sets (n entries) is caller-owned: kms_collateral_free. Parsing
 * checks form only; signatures are checked at verification. KMS_ERR_ATT_COLLATERAL if malformed. */
KMS_WUR int kms_collateral_parse(const char *json, size_t len, struct kms_collateral **sets,
                                 size_t *n);
/* kms_collateral_parse of a file (at most KMS_COLL_MAX_FILE bytes), for air-gapped use. */
KMS_WUR int kms_collateral_load_file(const char *path, struct kms_collateral **sets, size_t *n);
/* Serialises one set as the JSON object kms_collateral_parse reads (byte fields as hex).
 * Caller frees *json. */
KMS_WUR int kms_collateral_to_json(const struct kms_collateral *c, char **json);
/* Fetches one set from a PCCS or Intel PCS (v4 API): {pccs}/tdx/certification/v4/tcb?fmspc=,
 * {pccs}/tdx/certification/v4/qe/identity, {pccs}/sgx/certification/v4/pckcrl?ca=&encoding=der,
 * {pccs}/sgx/certification/v4/rootcacrl (issuer chains from the TCB-Info-Issuer-Chain,
 * SGX-Enclave-Identity-Issuer-Chain and SGX-PCK-CRL-Issuer-Chain headers). pccs_url may end in
 * "/sgx/certification/v4" or "/tdx/certification/v4". fmspc: 12 hex digits; ca: "platform" or
 * "processor". timeout_ms bounds each request (connect + transfer). *out is zeroed by the call and
 * caller-owned (kms_collateral_clear). KMS_ERR_TIMEOUT when the PCCS did not answer in time,
 * KMS_ERR_NET on connection failure or a non-200 answer, KMS_ERR_ATT_COLLATERAL on a malformed
 * answer. Signatures are not checked here. */
KMS_WUR int kms_collateral_fetch(const char *pccs_url, const char *fmspc, const char *ca,
                                 long timeout_ms, struct kms_collateral *out);

/*
 * Collateral source: where kms_attest_verify gets collateral for TDX and GCP-TDX quotes, plus the
 * verification caches. Verified collateral is cached per (FMSPC, CA, root), bounded by
 * max_entries and by the earliest nextUpdate / CRL nextUpdate / signing-certificate notAfter of
 * the set (never served past it, nor before its issue dates, at the ctx's verification time).
 * Verified PCK chains are cached by SHA-256 of the leaf DER with the root they reached, bounded
 * by max_chains and by the chain's earliest notAfter. Thread-safe; may be shared by several ctxs.
 */
struct kms_collateral_source;

struct kms_collateral_source_opts {
    const char *pccs_url;        /* PCCS/PCS base URL to fetch from (NULL: no fetching) */
    const char *collateral_file; /* air-gapped collateral JSON (NULL: none) */
    long timeout_ms;             /* per PCCS request; 0 = 10000 */
    size_t max_entries;          /* verified collateral sets cached; 0 = 32 */
    size_t max_chains;           /* verified PCK chains cached; 0 = 256 */
    int no_cache;                /* 1: verify everything on every call (benchmarks, tests) */
};

/* Sets from collateral_file (and kms_collateral_source_add) are used first: without a PCCS a
 * single set is used for every platform (its FMSPC is then checked), else the set whose tcbInfo
 * FMSPC is the PCK certificate's; otherwise the PCCS is asked. Caller frees *out with
 * kms_collateral_source_free (after every ctx using it). */
KMS_WUR int kms_collateral_source_new(const struct kms_collateral_source_opts *o,
                                      struct kms_collateral_source **out);
void kms_collateral_source_free(struct kms_collateral_source *src);
/* Adds an in-memory set (copied), as if it came from collateral_file. */
KMS_WUR int kms_collateral_source_add(struct kms_collateral_source *src,
                                      const struct kms_collateral *c);
/* Drops every cached verification result (e.g. after replacing the collateral file). */
void kms_collateral_source_flush(struct kms_collateral_source *src);

struct kms_collateral_stats {
    unsigned long coll_hits, coll_misses, fetches, chain_hits, chain_misses;
    size_t coll_entries, chain_entries;
};
void kms_collateral_source_stats(struct kms_collateral_source *src,
                                 struct kms_collateral_stats *st);

/* Makes kms_attest_verify (TDX and GCP-TDX) evaluate the TCB with collateral from src: on
 * success v->tcb_status is "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
 * "ConfigurationAndSWHardeningNeeded", "OutOfDate" or "OutOfDateConfigurationNeeded" and
 * v->advisory_ids lists the advisories; "Revoked" fails with KMS_ERR_ATT_REVOKED. src is borrowed
 * and must outlive the ctx's use; NULL turns collateral off (tcb_status stays ""). */
void kms_attest_ctx_set_collateral_source(struct kms_attest_ctx *ctx,
                                          struct kms_collateral_source *src);

/* Full DCAP verification of a v4 TDX quote with collateral from ctx's source (which must be
 * set): quote and QE report signatures, QE binding, PCK chain to a pinned root and CRLs, TCB info
 * and QE identity signatures by the TCB signing chain to the same root, nextUpdate,
 * FMSPC/PCE-ID, QE identity, TDX module identity, TCB level. Fills what kms_tdx_quote_verify
 * fills plus tcb_status and advisory_ids (kms_verified_free). Errors: those of
 * kms_tdx_quote_verify, KMS_ERR_ATT_EXPIRED for collateral past nextUpdate, and the three above. */
KMS_WUR int kms_tdx_quote_verify_collateral(const struct kms_attest_ctx *ctx, const uint8_t *quote,
                                            size_t len, struct kms_verified *out);

/* Collateral for the simulated TEE (tests, benchmarks, --insecure-sim): a TCB signing
 * certificate under sim-root.key (sim-tcb-signing.pem/.key in sim_dir, made on first use) signs
 * TCB info and QE identity describing the simulated
 * platform (FMSPC 90c06f000000, PCE-ID 0000, the sim's SVNs and QE); the CRLs are signed by
 * sim-pck-ca.key and sim-root.key. NULL/0 fields take the defaults in brackets. */
struct kms_sim_collateral_opts {
    time_t now;                         /* reference time [time(NULL)] */
    time_t issue_date;                  /* [now - 1 h] */
    time_t next_update;                 /* TCB info / QE identity nextUpdate [now + 30 d] */
    time_t crl_next_update;             /* both CRLs [next_update] */
    const char *fmspc_hex;              /* tcbInfo fmspc [the sim's] */
    const char *pce_id_hex;             /* tcbInfo pceId ["0000"] */
    const char *tcb_levels_json;        /* tcbInfo tcbLevels array [one UpToDate level = the sim] */
    const char *module_identities_json; /* tdxModuleIdentities [TDX_02, isvsvn 2, UpToDate] */
    const char *qe_tcb_levels_json;     /* QE identity tcbLevels [isvsvn 8 UpToDate] */
    const char *qe_mrsigner_hex;        /* QE identity mrsigner [the sim QE's] */
    int revoke_pck;                     /* 1: PCK CRL lists the sim PCK certificate */
    int revoke_pck_ca;                  /* 1: root CA CRL lists the sim PCK CA */
};
/* Builds one set for the simulation directory sim_dir (made by kms_sim_open). *out is zeroed by
 * the call and caller-owned (kms_collateral_clear). */
KMS_WUR int kms_sim_collateral(const char *sim_dir, const struct kms_sim_collateral_opts *o,
                               struct kms_collateral *out);
/* Signs msg with the key sim_dir/name ("sim-tcb-signing.key", ...): ECDSA P-256 SHA-256,
 * r || s. For tests that re-sign edited collateral. */
KMS_WUR int kms_sim_sign_raw(const char *sim_dir, const char *name, const uint8_t *msg, size_t len,
                             uint8_t sig[64]);

/* ================================================================ AIA fetching for the GCP AK
 * chain (aia.c; owner: aia)
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
/* ================================================================ end AIA */

#endif
