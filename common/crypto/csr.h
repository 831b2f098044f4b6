/*
 * SignCert certificate signing requests (kms-reference.md §1.2 "CSR SCALE layouts"):
 * SCALE CertSigningRequestV1 / V2, their ECDSA P-256 signature and the V1 → V2 upgrade. The
 * SignCert flow itself (verify, authorize, issue [leaf, App CA, root CA]) is node/sign_cert.h.
 *
 * Limits: a CSR is at most KMS_CSR_MAX_BYTES; a string field at most KMS_CSR_MAX_STR bytes;
 * at most KMS_CSR_MAX_SAN alt names; the pubkey at most KMS_CSR_MAX_PUBKEY bytes; V1 quote and
 * event_log at most KMS_ATT_MAX_BYTES each (the V2 attestation has attest's own limits).
 * Strings are strict UTF-8 without NUL (kept as C strings).
 */
#ifndef KMS_COMMON_CRYPTO_CSR_H
#define KMS_COMMON_CRYPTO_CSR_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "attest/attest.h"
#include "common/err.h"

#define KMS_CSR_MAX_BYTES (3u * 1024u * 1024u)
#define KMS_CSR_MAX_STR 4096u
#define KMS_CSR_MAX_SAN 64u
#define KMS_CSR_MAX_PUBKEY 1024u

#define KMS_CSR_CONFIRM "please sign cert:"

/* CertConfigV2; a V1 CertConfig is the same without ext_app_info and validity (zero). */
struct kms_csr_config {
    char *org_name; /* Option<String>: NULL = None */
    char *subject;
    char **san; /* subject_alt_names */
    size_t n_san;
    int usage_server_auth;
    int usage_client_auth;
    int ext_quote;
    int ext_app_info;   /* V2 only */
    int has_not_before; /* V2 only: Option<u64> unix seconds */
    uint64_t not_before;
    int has_not_after;
    uint64_t not_after;
};

/* One CSR of either version. version 1 uses quote/event_log (att NULL until upgraded);
 * version 2 uses att. Owns everything; free with kms_csr_free. */
struct kms_csr {
    int version; /* 1 or 2 */
    char *confirm;
    struct kms_bytes pubkey; /* SPKI DER */
    struct kms_csr_config config;
    struct kms_bytes quote;      /* V1 */
    struct kms_bytes event_log;  /* V1: JSON */
    struct kms_attestation *att; /* V2 (or V1 after kms_csr_upgrade) */
};

/* Frees the contents and zeroes *csr; accepts NULL. */
void kms_csr_free(struct kms_csr *csr);

/* Decodes the SCALE bytes of a CSR of api_version 1 or 2 (strict: no trailing bytes).
 * KMS_ERR_INVAL for another version, KMS_ERR_PARSE / KMS_ERR_TOOBIG for malformed input
 * (or attest's KMS_ERR_ATT_FORMAT inside the attestation). Fills *out (caller frees). */
KMS_WUR int kms_csr_decode(int api_version, const uint8_t *p, size_t len, struct kms_csr *out);

/* SCALE encoding of csr per csr->version (V2: the attestation unstripped). Caller frees *out. */
KMS_WUR int kms_csr_encode(const struct kms_csr *csr, uint8_t **out, size_t *len);

/* V1 → V2 as the reference: attestation = DstackTdx from (quote, event_log JSON),
 * ext_app_info 0, no validity overrides. A V2 CSR is left unchanged. */
KMS_WUR int kms_csr_upgrade(struct kms_csr *csr);

/* ECDSA P-256/SHA-256 DER signature over msg with key. Caller frees *sig. */
KMS_WUR int kms_csr_sign_bytes(EVP_PKEY *key, const uint8_t *msg, size_t msg_len, uint8_t **sig,
                               size_t *sig_len);

/* The reference's Csr::verify: pubkey (SPKI DER) must be an EC key (KMS_ERR_INVAL "Unsupported
 * algorithm") on P-256, signature must verify over msg (KMS_ERR_VERIFY "Invalid signature"),
 * then confirm must be "please sign cert:" (KMS_ERR_INVAL "Invalid confirm word"). */
KMS_WUR int kms_csr_verify(const struct kms_csr *csr, const uint8_t *msg, size_t msg_len,
                           const uint8_t *sig, size_t sig_len);

/* msgpack (rmp-serde, struct as array, hex_bytes fields as bin) of the reference's AppInfo
 * {app_id, compose_hash, instance_id, device_id, mr_system, mr_aggregated, os_image_hash,
 * key_provider_info}. Caller frees *out. */
KMS_WUR int kms_csr_app_info_msgpack(const struct kms_boot_info *ai, const uint8_t *instance_id,
                                     size_t instance_id_len, const uint8_t device_id[32],
                                     uint8_t **out, size_t *len);

#endif
