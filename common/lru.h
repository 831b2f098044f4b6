/*
 * A small bounded cache of refcounted values keyed by 32 bytes (callers hash what identifies
 * a value: SHA-256, Keccak-256). Each entry is valid in [not_before, not_after], in whatever
 * clock the caller uses (wall-clock seconds, monotonic milliseconds), checked at every lookup
 * against the caller's `now`; an entry past not_after is dropped when seen. Beyond max entries
 * the least recently used one is evicted. Thread-safe (one mutex); sizes are small (up to a few
 * hundred) and a lookup is a linear scan.
 *
 * Values are refcounted so that a value a caller still uses survives its eviction: free_val
 * runs once the entry is gone and every reference was released.
 */
#ifndef KMS_COMMON_LRU_H
#define KMS_COMMON_LRU_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define KMS_LRU_KEY_LEN 32
/* not_before / not_after for an entry without a start or an end. */
#define KMS_LRU_NO_START INT64_MIN
#define KMS_LRU_NO_END INT64_MAX

struct kms_lru;

/* A cache of at most max (> 0) entries; free_val frees a value once it is evicted and no
 * longer referenced. NULL when max is 0 or on allocation failure. Free with kms_lru_free. */
struct kms_lru *kms_lru_new(size_t max, void (*free_val)(void *));
/* Drops every entry (values still referenced live on until released) and frees c. NULL is a
 * no-op. No reference may be released after this. */
void kms_lru_free(struct kms_lru *c);
/* The value for key valid at now, or NULL on a miss. On a hit *ref is a reference the caller
 * must pass to kms_lru_release when done with the value (the value is borrowed until then);
 * on a miss *ref is NULL. A hit makes the entry the most recently used. */
void *kms_lru_get(struct kms_lru *c, const uint8_t key[KMS_LRU_KEY_LEN], int64_t now, void **ref);
/* Inserts val for key, replacing an entry of the same key, else taking a free slot, else
 * evicting the least recently used entry. The cache takes val, also on failure (then it is
 * freed with free_val). When ref != NULL the caller also gets a reference to release. */
KMS_WUR int kms_lru_put(struct kms_lru *c, const uint8_t key[KMS_LRU_KEY_LEN], void *val,
                        int64_t not_before, int64_t not_after, void **ref);
/* Releases a reference from kms_lru_get or kms_lru_put. NULL ref is a no-op. */
void kms_lru_release(struct kms_lru *c, void *ref);
/* Drops every entry. */
void kms_lru_flush(struct kms_lru *c);
/* Number of entries held (expired ones not yet seen included). */
size_t kms_lru_count(struct kms_lru *c);

#endif
