/* attest-internal: the verification context and chain verification against its roots (ctx.c).
 * Not a public API. */
#ifndef KMS_ATTEST_INTERNAL_H
#define KMS_ATTEST_INTERNAL_H

#include <openssl/x509.h>

#include "attest/attest.h"
#include "common/lru.h"

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
    /* ---- aia (owner: aia) ---- */
    struct kms_aia *aia; /* owned; NULL = no AIA fetching (default) */
    /* ---- end aia ---- */
};

/* The verification time of ctx. */
time_t kms_attest_now(const struct kms_attest_ctx *ctx);

/* Verifies leaf (with untrusted intermediates, may be NULL) to one of ctx's roots of `kind`,
 * at kms_attest_now(ctx). *is_sim is set when the anchor is a simulation root.
 * KMS_ERR_ATT_EXPIRED when a certificate is outside its validity, else KMS_ERR_ATT_CHAIN;
 * `what` names the chain in the detail ("PCK chain", "Nitro chain", ...). */
int kms_attest_verify_chain(const struct kms_attest_ctx *ctx, enum kms_root_kind kind, X509 *leaf,
                            STACK_OF(X509) * intermediates, const char *what, int *is_sim);

/* kms_attest_verify_chain that also returns the verified chain leaf .. anchor in *chain
 * (caller frees with sk_X509_pop_free; NULL on error). */
int kms_attest_verify_chain_get(const struct kms_attest_ctx *ctx, enum kms_root_kind kind,
                                X509 *leaf, STACK_OF(X509) * intermediates, const char *what,
                                int *is_sim, STACK_OF(X509) * *chain);

#endif
