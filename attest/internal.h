/* attest-internal declarations shared by the files of this module. Not a public API. */
#ifndef KMS_ATTEST_INTERNAL_H
#define KMS_ATTEST_INTERNAL_H

#include <openssl/x509.h>

#include "attest/attest.h"

#define KMS_ATTEST_MAX_ROOTS 8

struct kms_attest_root {
    X509 *cert;
    int is_sim;
};

struct kms_attest_ctx {
    struct kms_attest_root roots[3][KMS_ATTEST_MAX_ROOTS];
    size_t n_roots[3];
    time_t now;                /* 0 = current time */
    int nitro_device_id_fixed; /* 0 = reference quirk */
    /* ---- collateral (owner: collateral) ---- */
    struct kms_collateral_source *coll_src; /* borrowed; NULL = no TCB evaluation */
    /* ---- end collateral ---- */
};

/* The verification time of ctx. */
time_t kms_attest_now(const struct kms_attest_ctx *ctx);

/* Verifies leaf (with untrusted intermediates, may be NULL) to one of ctx's roots of `kind`,
 * at kms_attest_now(ctx). *is_sim is set when the anchor is a simulation root.
 * KMS_ERR_ATT_EXPIRED when a certificate is outside its validity, else KMS_ERR_ATT_CHAIN;
 * `what` names the chain in the detail ("PCK chain", "Nitro chain", ...). */
int kms_attest_verify_chain(const struct kms_attest_ctx *ctx, enum kms_root_kind kind,
                            X509 *leaf, STACK_OF(X509) *intermediates, const char *what,
                            int *is_sim);

/* Nitro (nitro.c): verifies a COSE_Sign1 NSM document: alg ES384, chain to the Nitro root,
 * signature, digest SHA384, PCR sizes, user_data == report_data. Fills mode, pcr[0..2] (48 B),
 * module_id, sim. */
int kms_nitro_verify(const struct kms_attest_ctx *ctx, const uint8_t *cose, size_t len,
                     const uint8_t report_data[64], struct kms_verified *out);

/* TPM (tpm.c): verifies a vTPM quote: TPMS_ATTEST, signature by the AK certificate key, AK chain
 * to the GCP root, PCR digest, event-log replay, extraData == qualifying_data. Fills
 * pcr[0] = PCR0, pcr[1] = PCR2, pcr[2] = PCR14 (32 B each). */
int kms_tpm_verify(const struct kms_attest_ctx *ctx, const struct kms_tpm_quote *q,
                   const uint8_t *qualifying_data, size_t qd_len, struct kms_verified *out);

/* ---- collateral (owner: collateral; cache.c) ----
 * A bounded cache of refcounted values keyed by 32 bytes, each valid in [not_before, not_after]
 * (checked at every lookup against the caller's time; an entry past not_after is dropped).
 * Least recently used entries are evicted beyond max. Thread-safe. */
struct kms_lru;

/* free_val frees a value once it is evicted and no longer referenced. */
struct kms_lru *kms_lru_new(size_t max, void (*free_val)(void *));
void kms_lru_free(struct kms_lru *c);
/* A referenced value (release with kms_lru_release) or NULL on miss. */
void *kms_lru_get(struct kms_lru *c, const uint8_t key[32], time_t now, void **ref);
/* Inserts (replacing an entry of the same key); the cache takes val, also on failure. When
 * ref != NULL the caller also gets a reference to release. */
int kms_lru_put(struct kms_lru *c, const uint8_t key[32], void *val, time_t not_before,
                time_t not_after, void **ref);
void kms_lru_release(struct kms_lru *c, void *ref);
void kms_lru_flush(struct kms_lru *c);
size_t kms_lru_count(struct kms_lru *c);
/* ---- end collateral ---- */

#endif
