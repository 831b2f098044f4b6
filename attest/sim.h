/* attest: the simulated TEEs (sim.c, sim_nitro.c, platform.c sim-gcp; DESIGN.md §5). */
#ifndef KMS_ATTEST_SIM_H
#define KMS_ATTEST_SIM_H

#include "attest/attest.h"

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

/* The simulated TEE's OS image (osimage): os_image_hash = SHA-256("kmsd-sim-os-image"); its
 * vm_config {"os_image_hash":"<hex>"} into buf (KMS_ERR_INVAL when len is too small); and its
 * measurement manifest (attest/image.h; the default MRTD/RTMR0-2 of kms_sim_attest for every
 * VM shape) written to dir/image-manifests/<hex>.json unless present (kms_sim_open does). */
void kms_sim_os_image_hash(uint8_t out[32]);
KMS_WUR int kms_sim_vm_config(char *buf, size_t len);
KMS_WUR int kms_sim_write_image_manifest(const char *dir);

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

#endif
