/*
 * attest: OS-image measurement manifests for plain-TDX guests (issue 11 item 5; the reference
 * KMS's verify_os_image_hash). The reference downloads the image named by os_image_hash and
 * recomputes MRTD and RTMR0-2 with dstack-mr; kmsd instead reads the image's measurement
 * manifest: per image, the MRTD and RTMR0-2 a guest of a given VM shape (cpu_count,
 * memory_size, ... of its vm_config) measures. Format: docs/os-image-manifest.md.
 *
 * Sources, in order: for simulated evidence <sim_dir>/image-manifests/<hex>.json (written by
 * the simulated TEE for its own image), then <dir>/<hex>.json, then the URL template with every
 * "{OS_IMAGE_HASH}" replaced by the lowercase hex hash (http/https, timeout, size limit, no
 * redirects). A parsed manifest is cached in memory until kms_image_cache_clear; a missing
 * one is looked up again on the next request.
 *
 * Limits: a manifest is at most KMS_IMAGE_MANIFEST_MAX bytes with at most
 * KMS_IMAGE_MAX_ENTRIES measurement entries; at most KMS_IMAGE_CACHE_MAX manifests are cached
 * (least recently used evicted); a URL template is at most KMS_IMAGE_URL_MAX bytes.
 */
#ifndef KMS_ATTEST_IMAGE_H
#define KMS_ATTEST_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define KMS_IMAGE_MANIFEST_MAX (256u * 1024u)
#define KMS_IMAGE_MAX_ENTRIES 64u
#define KMS_IMAGE_CACHE_MAX 64u
#define KMS_IMAGE_URL_MAX 2048u
#define KMS_IMAGE_TIMEOUT_MS_DEFAULT 10000L
#define KMS_IMAGE_SIM_SUBDIR "image-manifests"

/* The measurements a manifest entry fixes: MRTD and RTMR0..2 (48 bytes each). */
struct kms_image_mrs {
    uint8_t mrtd[48];
    uint8_t rtmr[3][48];
};

/* ---------------------------------------------------------------- manifests */

struct kms_image_manifest;

/* Parses a manifest (strict: unknown keys, bad hex, wrong types and sizes are KMS_ERR_PARSE).
 * When hash != NULL the manifest's os_image_hash must equal it (KMS_ERR_ATT_IMAGE). *out is
 * caller-owned (kms_image_manifest_free). */
KMS_WUR int kms_image_manifest_parse(const char *text, size_t len, const uint8_t hash[32],
                                     struct kms_image_manifest **out);
void kms_image_manifest_free(struct kms_image_manifest *m);
/* Checks actual against the entries whose vm_shape matches vm_config (a JSON object; keys it
 * lacks take the reference's VmConfig defaults). 0 when one matching entry has exactly these
 * measurements; else KMS_ERR_ATT_IMAGE: "MRs do not match: <REG> mismatch: expected=<hex>,
 * actual=<hex>" against the first matching entry, or no entry for this VM shape; a vm_config
 * that is not a JSON object is KMS_ERR_ATT_FORMAT. */
KMS_WUR int kms_image_manifest_check(const struct kms_image_manifest *m, const char *vm_config,
                                     const struct kms_image_mrs *actual);

/* Builds manifest JSON text: existing (a manifest's text, or NULL for a new one of hash and
 * image) plus one entry of mrs for vm_shape (JSON object text; NULL or "" = {} = every shape).
 * With existing, hash must equal its os_image_hash and image is ignored. Caller frees *out. */
KMS_WUR int kms_image_manifest_build(const char *existing, const uint8_t hash[32],
                                     const char *image, const char *vm_shape,
                                     const struct kms_image_mrs *mrs, char **out);

/* ---------------------------------------------------------------- the verifier */

struct kms_image_cfg {
    const char *dir;          /* manifests <dir>/<hex>.json; NULL: none */
    const char *url_template; /* http(s) URL with {OS_IMAGE_HASH}; NULL: none */
    const char *sim_dir;      /* simulated evidence: <sim_dir>/image-manifests; NULL: none */
    long timeout_ms;          /* whole fetch; 0: KMS_IMAGE_TIMEOUT_MS_DEFAULT */
};

struct kms_image_verifier;

/* Checks cfg (a URL template must be http(s), hold {OS_IMAGE_HASH} and fit
 * KMS_IMAGE_URL_MAX: else KMS_ERR_INVAL) and copies its strings. Caller frees *out. */
KMS_WUR int kms_image_verifier_new(const struct kms_image_cfg *cfg,
                                   struct kms_image_verifier **out);
void kms_image_verifier_free(struct kms_image_verifier *iv);
/* The OS-image check of a verified plain-TDX quote: the manifest of os_image_hash (hash,
 * hash_len; the vm_config's claim) from the cache or the sources (sim: evidence verified
 * through a simulation root, which may also use the simulated TEE's manifests), then
 * kms_image_manifest_check. KMS_ERR_ATT_IMAGE when the hash is not 32 bytes, no source has a
 * manifest, a manifest is invalid or does not match; a failed fetch keeps its KMS_ERR_NET /
 * KMS_ERR_TIMEOUT / KMS_ERR_TOOBIG. Thread-safe. */
KMS_WUR int kms_image_verify(struct kms_image_verifier *iv, const uint8_t *hash, size_t hash_len,
                             const char *vm_config, const struct kms_image_mrs *actual, int sim);
/* Drops the cached manifest of hash (hash_len 32), or all of them (hash NULL). Returns how
 * many were dropped. Thread-safe. */
size_t kms_image_cache_clear(struct kms_image_verifier *iv, const uint8_t *hash, size_t hash_len);
/* Manifests loaded from a source since creation (cache misses that found one), for tests and
 * metrics. */
unsigned long kms_image_loads(struct kms_image_verifier *iv);

#endif
