/*
 * attest: GCP vTPM evidence: TPM quotes (tpm.c), TCG event logs (tcg_eventlog.c) and the vTPM
 * evidence producer over tpm2-tss (vtpm.c).
 *
 * Limits: a TPMS_ATTEST selects at most KMS_TPM_MAX_PCRS PCRs in at most KMS_TPM_MAX_SELECTIONS
 * banks (bitmaps of at most KMS_TPM_MAX_SELECT bytes); a TCG log has at most KMS_TCG_MAX_EVENTS
 * events, KMS_TCG_MAX_ALGS digest algorithms and KMS_TCG_MAX_EVENT_DATA bytes of event data each.
 */
#ifndef KMS_ATTEST_TPM_H
#define KMS_ATTEST_TPM_H

#include <openssl/evp.h>

#include "attest/attest.h"

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

/* 0 when this build has the vTPM producer; else KMS_ERR_STATE saying it was built without
 * tpm2-tss (vtpm_absent.c: the static kmsctl). */
KMS_WUR int kms_vtpm_available(void);
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

/* TPM (tpm.c): verifies a vTPM quote: TPMS_ATTEST, signature by the AK certificate key, AK chain
 * to the GCP root, PCR digest, event-log replay, extraData == qualifying_data. Fills
 * pcr[0] = PCR0, pcr[1] = PCR2, pcr[2] = PCR14 (32 B each). */
int kms_tpm_verify(const struct kms_attest_ctx *ctx, const struct kms_tpm_quote *q,
                   const uint8_t *qualifying_data, size_t qd_len, struct kms_verified *out);

#endif
