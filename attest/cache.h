/* attest: verification caches (cache.c), used by the collateral source. Not a public API. */
#ifndef KMS_ATTEST_CACHE_H
#define KMS_ATTEST_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* A bounded cache of refcounted values keyed by 32 bytes, each valid in [not_before, not_after]
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

#endif
