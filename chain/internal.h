/*
 * chain internals: the authorization backend vtable shared by auth.c (dispatch, dev),
 * webhook.c (auth-api) and the native Ethereum backend (eth*.c).
 *
 * A backend's constructor validates its config, allocates its private state and hands it to
 * kms_auth_wrap(). The public kms_auth_* functions check arguments, zero the output, call the
 * backend and enforce fail-closed results, so backends only fill in answers.
 *
 * Thread safety: one handle is shared by all request threads; ops->check and ops->info must
 * be safe to call concurrently (keep priv immutable after construction, or lock inside).
 */
#ifndef KMS_CHAIN_INTERNAL_H
#define KMS_CHAIN_INTERNAL_H

#include <pthread.h>

#include "chain/auth.h"

struct kms_auth_ops {
    const char *name; /* "dev", "webhook", "eth": used in error details */
    /* out is zeroed by the caller. rc < 0: no answer (the caller forces allowed = 0). Fill
     * out with kms_auth_result_set(). */
    int (*check)(void *priv, int is_kms, const struct kms_boot_info *bi,
                 struct kms_auth_result *out);
    /* out is zeroed by the caller; strings are malloc'd and owned by out (the caller clears
     * out on failure, so a backend may fail half-way). */
    int (*info)(void *priv, struct kms_auth_info *out);
    /* Frees priv; accepts NULL. */
    void (*free)(void *priv);
};

/* GetMeta asks for the backend info on every call; a short cache keeps unauthenticated
 * callers from turning GetMeta into one outbound request each (bounded staleness). */
#define KMS_AUTH_INFO_TTL_MS 2000

struct kms_auth {
    const struct kms_auth_ops *ops;
    void *priv;
    int is_dev;
    pthread_mutex_t info_mu;
    struct kms_auth_info info_cache; /* valid until info_expiry_ms (monotonic) */
    long long info_expiry_ms;
};

/* Wraps backend state in a new handle (*out, caller frees with kms_auth_free). On success
 * the handle owns priv; on failure priv is freed with ops->free. */
KMS_WUR int kms_auth_wrap(const struct kms_auth_ops *ops, void *priv, int is_dev,
                          struct kms_auth **out);

/* Fills out. reason is copied, truncated at a UTF-8 boundary to fit; gateway_app_id must
 * fit whole (else KMS_ERR_AUTH_RESPONSE, as truncating an identifier would change it).
 * NULL strings are taken as "". */
KMS_WUR int kms_auth_result_set(struct kms_auth_result *out, int allowed, const char *reason,
                                const char *gateway_app_id);

/* "dstack-tdx" | "dstack-gcp-tdx" | "dstack-nitro-enclave", NULL for an unknown mode. */
const char *kms_auth_mode_name(enum kms_att_mode m);

/* Webhook (auth-api) answer parsing, apart from the HTTP exchange in webhook.c so the fuzz
 * target (tests/fuzz/fuzz_webhook.c) runs the code the backend runs. body: the bytes of a 2xx
 * answer (len bytes, not NUL-terminated; NULL when len is 0), capped by the caller. shown_base
 * / shown_url and path name the request in errors (credentials already removed). Errors:
 * KMS_ERR_AUTH_RESPONSE (not a JSON object, duplicate key, a required field missing or of the
 * wrong type or too long), KMS_ERR_NOMEM; details quote at most 256 sanitized body bytes. */
/* POST bootAuth answer {isAllowed, gatewayAppId, reason}: fills *out on success, leaves it
 * unchanged on error. */
KMS_WUR int kms_webhook_parse_decision(const char *body, size_t len, const char *shown_base,
                                       const char *path, struct kms_auth_result *out);
/* GET / answer {status, kmsContractAddr, gatewayAppId, chainId, appImplementation}: out must
 * be zeroed by the caller; its strings are malloc'd and owned by out, also when the call fails
 * half-way (clear with kms_auth_info_clear either way). */
KMS_WUR int kms_webhook_parse_info(const char *body, size_t len, const char *shown_url,
                                   struct kms_auth_info *out);

/* Backend constructors. cfg is validated by the backend; *out as for kms_auth_new. */
KMS_WUR int kms_auth_dev_new(const struct kms_auth_cfg *cfg, struct kms_auth **out);
KMS_WUR int kms_auth_webhook_new(const struct kms_auth_cfg *cfg, struct kms_auth **out);
/* Native Ethereum backend (chain/eth.c). */
KMS_WUR int kms_auth_eth_new(const struct kms_auth_cfg *cfg, struct kms_auth **out);

#endif
