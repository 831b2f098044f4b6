/* attest-internal PKI helpers shared by every verifier in attest/: certificate chains at a
 * given time, PEM certificate lists, raw r || s ECDSA signatures. Not a public API. */
#ifndef KMS_ATTEST_PKI_H
#define KMS_ATTEST_PKI_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* Verifies leaf (with untrusted certificates, may be NULL) to one of the n_anchors anchors at
 * time t. On success *chain is leaf .. anchor (caller frees with sk_X509_pop_free); NULL on
 * error. Errors: KMS_ERR_ATT_EXPIRED when a certificate is outside its validity at t, code_chain
 * when there is no anchor or the chain does not verify; `what` names the chain in the detail. */
int kms_attest_chain_at(X509 *const *anchors, size_t n_anchors, X509 *leaf,
                        STACK_OF(X509) * untrusted, time_t t, const char *what, int code_chain,
                        STACK_OF(X509) * *chain);

/* Reads the PEM certificates in pem (len bytes, at most INT_MAX) in order into *out
 * (caller-owned, possibly empty: callers report an empty list in their own words).
 * KMS_ERR_TOOBIG (detail not set: callers name the list) when there are more than max,
 * KMS_ERR_NOMEM. */
int kms_attest_pem_certs(const void *pem, size_t len, int max, STACK_OF(X509) * *out);

/* P-256 public key from the raw X || Y point. KMS_ERR_ATT_QUOTE_SIG when it is not a valid point
 * (it is the quote's attestation key). Caller frees *out. */
int kms_attest_p256_from_raw(const uint8_t xy[64], EVP_PKEY **out);

/* Verifies a raw r || s P-256 ECDSA signature (rs_len bytes, 32 each) over SHA-256(msg) with
 * pk. 1 valid, 0 invalid (also for rs_len != 64), < 0 on error. */
int kms_attest_ecdsa_p256_verify(EVP_PKEY *pk, const uint8_t *msg, size_t len, const uint8_t *rs,
                                 size_t rs_len);

#endif
