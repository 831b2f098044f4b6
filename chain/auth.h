/*
 * chain: authorization backends. `dev` allows everything (as the reference); `webhook` speaks
 * the auth-api protocol (kms-reference.md §7) with a timeout on every call; `eth` is the
 * native Ethereum backend (chain/eth*.c; "eth backend not built" when absent).
 *
 * The webhook uses libcurl: the process must call curl_global_init(CURL_GLOBAL_DEFAULT) once,
 * before any thread uses this module. A handle is immutable after kms_auth_new, so
 * kms_auth_check / kms_auth_info may be called concurrently on one handle.
 * Webhook limits: response body at most 1 MiB; http/https only; no redirects; environment
 * proxies ignored; the timeout bounds connect and the whole exchange.
 */
#ifndef KMS_CHAIN_AUTH_H
#define KMS_CHAIN_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "attest/attest.h"
#include "common/err.h"

/* chain error codes (-400..-499) */
enum {
    KMS_ERR_AUTH_UNREACHABLE = -400, /* connect failure */
    KMS_ERR_AUTH_TIMEOUT = -401,     /* no answer within the timeout */
    KMS_ERR_AUTH_HTTP = -402,        /* non-2xx status */
    KMS_ERR_AUTH_RESPONSE = -403,    /* malformed JSON / missing fields */
};

struct kms_auth_cfg {
    const char *type;               /* "dev" | "webhook" | "eth" */
    const char *webhook_url;        /* base URL, e.g. http://127.0.0.1:8001; no query */
    long timeout_ms;                /* per call; 0 = 5000; at most 600000 */
    const char *dev_gateway_app_id; /* default "any" */
    /* type "eth": native Ethereum backend (chain/eth.c). Strings are borrowed for the call. */
    const char *const *eth_rpc_urls; /* JSON-RPC endpoints (node or light client); >= 1 */
    size_t eth_n_rpc_urls;           /* at most 16 */
    const char *eth_policy;          /* "failover" (default: first healthy) | "quorum" */
    unsigned eth_quorum_k;           /* quorum: answers that must agree; 0 = majority of n */
    const char *eth_contract;        /* DstackKms address, 0x + 40 hex */
    const char *eth_block_tag;       /* "latest" (default) | "safe" | "finalized" */
    uint64_t eth_chain_id;           /* expected eth_chainId; 0 = not checked */
    long eth_cache_ttl_ms;           /* allow decisions only; 0 = 2000, < 0 = no cache */
    int eth_retries;                 /* extra attempts per RPC call; 0 = 1, < 0 = none */
};

struct kms_auth;

/* Validates cfg (KMS_ERR_INVAL) and creates the backend; caller frees *out with
 * kms_auth_free (*out is NULL on failure). cfg strings are copied. */
KMS_WUR int kms_auth_new(const struct kms_auth_cfg *cfg, struct kms_auth **out);
/* Accepts NULL. */
void kms_auth_free(struct kms_auth *a);
int kms_auth_is_dev(const struct kms_auth *a);

struct kms_auth_result {
    int allowed;
    char reason[512];
    char gateway_app_id[256];
};

/* Asks bootAuth/kms (is_kms) or bootAuth/app. rc < 0: the backend could not answer (fail
 * closed: out->allowed is 0); rc 0: see out->allowed / out->reason (reason truncated at a
 * UTF-8 boundary to fit). Webhook errors: KMS_ERR_AUTH_UNREACHABLE (connect/transport),
 * KMS_ERR_AUTH_TIMEOUT, KMS_ERR_AUTH_HTTP (non-2xx; status and a sanitized excerpt of the body
 * in the detail), KMS_ERR_AUTH_RESPONSE (not a JSON object, a required field missing or
 * mistyped, duplicate keys, gatewayAppId longer than 255 bytes, body over 1 MiB). */
KMS_WUR int kms_auth_check(struct kms_auth *a, int is_kms, const struct kms_boot_info *bi,
                           struct kms_auth_result *out);

/* GET / (webhook) or dev defaults, for GetMeta. Strings are owned; kms_auth_info_clear.
 * dev: is_dev 1, gateway_app_id set, the other strings NULL and chain_id 0. Webhook: all five
 * fields required (errors as kms_auth_check); ethRpcUrl optional (NULL when absent or null;
 * a string when present); out is cleared on failure. */
struct kms_auth_info {
    int is_dev;
    char *status;
    char *kms_contract_addr;
    char *gateway_app_id;
    char *app_implementation;
    char *eth_rpc_url; /* the auth-api's RPC (GET / ethRpcUrl), for GetAttestationInfo */
    uint64_t chain_id;
};

KMS_WUR int kms_auth_info(struct kms_auth *a, struct kms_auth_info *out);
void kms_auth_info_clear(struct kms_auth_info *info);

/* The BootInfo JSON body (compact, camelCase in the reference's key order, lowercase hex
 * without 0x) sent to the webhook; caller frees. NULL (detail set) on an unknown mode or
 * strings that are not UTF-8. */
char *kms_auth_boot_info_json(const struct kms_boot_info *bi);

#endif
