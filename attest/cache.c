/*
 * Bounded verification cache (internal.h): refcounted values keyed by 32 bytes (a SHA-256),
 * each valid in [not_before, not_after]. Sizes are small (tens to hundreds of entries) and a
 * lookup is dwarfed by the signature checks it saves, so a linear scan under one mutex is enough.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "attest/cache.h"
#include "attest/internal.h"

/* Held by the table and by every caller that got it; the value is freed at refs == 0. */
struct lru_ref {
    void *val;
    unsigned refs;
};

struct lru_entry {
    uint8_t key[32];
    struct lru_ref *ref; /* NULL: free slot */
    time_t not_before;
    time_t not_after;
    unsigned long last_use;
};

struct kms_lru {
    pthread_mutex_t mu;
    size_t max;
    struct lru_entry *e;
    unsigned long tick;
    void (*free_val)(void *);
};

struct kms_lru *kms_lru_new(size_t max, void (*free_val)(void *))
{
    struct kms_lru *c;

    if (max == 0)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->e = calloc(max, sizeof(*c->e));
    if (c->e == NULL || pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c->e);
        free(c);
        return NULL;
    }
    c->max = max;
    c->free_val = free_val;
    return c;
}

/* Drops one reference; mu held. */
static void unref_locked(struct kms_lru *c, struct lru_ref *r)
{
    if (--r->refs == 0) {
        c->free_val(r->val);
        free(r);
    }
}

static void drop_locked(struct kms_lru *c, struct lru_entry *e)
{
    if (e->ref != NULL)
        unref_locked(c, e->ref);
    memset(e, 0, sizeof(*e));
}

void kms_lru_flush(struct kms_lru *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->max; i++)
        drop_locked(c, &c->e[i]);
    pthread_mutex_unlock(&c->mu);
}

void kms_lru_free(struct kms_lru *c)
{
    if (c == NULL)
        return;
    kms_lru_flush(c);
    pthread_mutex_destroy(&c->mu);
    free(c->e);
    free(c);
}

void *kms_lru_get(struct kms_lru *c, const uint8_t key[32], time_t now, void **ref)
{
    void *val = NULL;

    *ref = NULL;
    if (c == NULL)
        return NULL;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->max; i++) {
        struct lru_entry *e = &c->e[i];

        if (e->ref == NULL || memcmp(e->key, key, 32) != 0)
            continue;
        if (now > e->not_after) {
            drop_locked(c, e); /* never served past its end; the caller refreshes */
            break;
        }
        if (now < e->not_before)
            break; /* a caller with an earlier clock: not valid for it, but keep it */
        e->last_use = ++c->tick;
        e->ref->refs++;
        *ref = e->ref;
        val = e->ref->val;
        break;
    }
    pthread_mutex_unlock(&c->mu);
    return val;
}

int kms_lru_put(struct kms_lru *c, const uint8_t key[32], void *val, time_t not_before,
                time_t not_after, void **ref)
{
    struct lru_entry *slot = NULL;
    struct lru_ref *r;

    if (ref != NULL)
        *ref = NULL;
    if (c == NULL)
        return kms_err_set(KMS_ERR_INVAL, "no cache");
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        c->free_val(val);
        return kms_err_set(KMS_ERR_NOMEM, "out of memory");
    }
    r->val = val;
    r->refs = ref != NULL ? 2 : 1;
    if (ref != NULL)
        *ref = r;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->max && slot == NULL; i++) {
        if (c->e[i].ref != NULL && memcmp(c->e[i].key, key, 32) == 0)
            slot = &c->e[i];
    }
    for (size_t i = 0; i < c->max && slot == NULL; i++) {
        if (c->e[i].ref == NULL)
            slot = &c->e[i];
    }
    if (slot == NULL) {
        slot = &c->e[0];
        for (size_t i = 1; i < c->max; i++) {
            if (c->e[i].last_use < slot->last_use)
                slot = &c->e[i];
        }
    }
    drop_locked(c, slot);
    memcpy(slot->key, key, 32);
    slot->ref = r;
    slot->not_before = not_before;
    slot->not_after = not_after;
    slot->last_use = ++c->tick;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

void kms_lru_release(struct kms_lru *c, void *ref)
{
    if (c == NULL || ref == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    unref_locked(c, ref);
    pthread_mutex_unlock(&c->mu);
}

size_t kms_lru_count(struct kms_lru *c)
{
    size_t n = 0;

    if (c == NULL)
        return 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->max; i++)
        n += c->e[i].ref != NULL;
    pthread_mutex_unlock(&c->mu);
    return n;
}
