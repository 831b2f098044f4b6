/*
 * Constant answers built once per state change (GetMeta, GetTempCaCert): the encoded response
 * body of each slot is kept with the key it was built from (a string naming every input: node
 * state, key generation, policy info). A request whose key matches gets a copy of the body; any
 * other key rebuilds it. Only 200 answers are kept. Thread-safe.
 */
#ifndef KMS_NODE_ANSWER_CACHE_H
#define KMS_NODE_ANSWER_CACHE_H

#include <pthread.h>
#include <stddef.h>

#include "node/http.h"

enum {
    KMS_ANSWER_META_JSON = 0,
    KMS_ANSWER_META_PB,
    KMS_ANSWER_TMPCA_JSON,
    KMS_ANSWER_TMPCA_PB,
    KMS_ANSWER_SLOTS,
};

#define KMS_ANSWER_KEY_MAX 1024u /* longer keys are not cached */

struct kms_answer_slot {
    char *key;  /* what the body was built from; NULL = empty slot */
    char *body; /* the encoded answer */
    size_t len;
    const char *ctype; /* static string */
};

struct kms_answer_cache {
    pthread_mutex_t mu;
    struct kms_answer_slot slot[KMS_ANSWER_SLOTS];
};

void kms_answer_cache_init(struct kms_answer_cache *c);
/* Frees every kept body; the cache must be initialised again before reuse. */
void kms_answer_cache_free(struct kms_answer_cache *c);
/* Fills resp with a copy of slot's body when it was built from key: 1 when served, 0 when not
 * (also when out of memory; the caller then builds the answer). */
int kms_answer_cache_get(struct kms_answer_cache *c, unsigned slot, const char *key,
                         struct kms_http_resp *resp);
/* Keeps a copy of resp's body for key when resp is a 200 answer (else leaves the slot). */
void kms_answer_cache_put(struct kms_answer_cache *c, unsigned slot, const char *key,
                          const struct kms_http_resp *resp);

#endif
