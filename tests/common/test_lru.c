/* common/lru: the one bounded cache (attest collateral and AIA caches, chain eth decisions). */
#include <pthread.h>

#include "common/lru.h"
#include "test.h"

static int g_freed[64];

struct val {
    int id;
};

static void free_val(void *p)
{
    struct val *v = p;

    g_freed[v->id]++;
    free(v);
}

static struct val *mk(int id)
{
    struct val *v = malloc(sizeof(*v));

    if (v == NULL)
        exit(2);
    v->id = id;
    return v;
}

static void key_of(int i, uint8_t k[KMS_LRU_KEY_LEN])
{
    memset(k, 0, KMS_LRU_KEY_LEN);
    k[0] = (uint8_t)i;
    k[31] = 0xa5;
}

/* 1 when key i is held and valid at now (a lookup, so it also refreshes its use). */
static int has(struct kms_lru *c, int i, int64_t now)
{
    uint8_t k[KMS_LRU_KEY_LEN];
    void *ref;
    struct val *v;

    key_of(i, k);
    v = kms_lru_get(c, k, now, &ref);
    if (v != NULL)
        CHECK(v->id == i);
    kms_lru_release(c, ref);
    return v != NULL;
}

static void put(struct kms_lru *c, int i, int64_t nb, int64_t na)
{
    uint8_t k[KMS_LRU_KEY_LEN];

    key_of(i, k);
    CHECK_OK(kms_lru_put(c, k, mk(i), nb, na, NULL));
}

/* Proves: beyond max the least recently used entry goes (a lookup counts as a use), its value
 * is freed exactly once, and the others stay. */
static void test_eviction_order(void)
{
    struct kms_lru *c = kms_lru_new(3, free_val);

    memset(g_freed, 0, sizeof(g_freed));
    CHECK(c != NULL);
    put(c, 1, KMS_LRU_NO_START, KMS_LRU_NO_END);
    put(c, 2, KMS_LRU_NO_START, KMS_LRU_NO_END);
    put(c, 3, KMS_LRU_NO_START, KMS_LRU_NO_END);
    CHECK(kms_lru_count(c) == 3);
    CHECK(has(c, 1, 0)); /* 1 is now the most recent: 2 is the LRU */
    put(c, 4, KMS_LRU_NO_START, KMS_LRU_NO_END);
    CHECK(g_freed[2] == 1 && g_freed[1] == 0 && g_freed[3] == 0);
    CHECK(!has(c, 2, 0));
    CHECK(has(c, 1, 0) && has(c, 3, 0) && has(c, 4, 0));
    /* order of use now 1, 3, 4: 5 evicts 1 */
    put(c, 5, KMS_LRU_NO_START, KMS_LRU_NO_END);
    CHECK(g_freed[1] == 1 && !has(c, 1, 0));
    CHECK(kms_lru_count(c) == 3);
    /* the same key replaces (frees the old value) without evicting another */
    put(c, 4, KMS_LRU_NO_START, KMS_LRU_NO_END);
    CHECK(g_freed[4] == 1 && has(c, 3, 0) && has(c, 4, 0) && has(c, 5, 0));
    kms_lru_flush(c);
    CHECK(kms_lru_count(c) == 0 && g_freed[3] == 1 && g_freed[4] == 2 && g_freed[5] == 1);
    kms_lru_free(c);
    CHECK(kms_lru_new(0, free_val) == NULL);
}

/* Proves: an entry is served only within [not_before, not_after] of the caller's clock; past
 * not_after it is dropped (freed), before not_before it is a miss but kept. */
static void test_expiry(void)
{
    struct kms_lru *c = kms_lru_new(4, free_val);

    memset(g_freed, 0, sizeof(g_freed));
    put(c, 1, 100, 200);
    CHECK(!has(c, 1, 99));
    CHECK(kms_lru_count(c) == 1 && g_freed[1] == 0);
    CHECK(has(c, 1, 100) && has(c, 1, 200));
    CHECK(!has(c, 1, 201));
    CHECK(kms_lru_count(c) == 0 && g_freed[1] == 1);
    /* no end: valid for ever, in any clock (e.g. monotonic milliseconds) */
    put(c, 2, KMS_LRU_NO_START, KMS_LRU_NO_END);
    CHECK(has(c, 2, INT64_MIN) && has(c, 2, INT64_MAX));
    kms_lru_free(c);
    CHECK(g_freed[2] == 1);
}

/* Proves: a value a caller holds survives its eviction and the cache's free, and is freed at
 * the last release; put with a reference hands one out. */
static void test_references(void)
{
    struct kms_lru *c = kms_lru_new(1, free_val);
    uint8_t k[KMS_LRU_KEY_LEN];
    void *ref1, *ref2;
    struct val *v;

    memset(g_freed, 0, sizeof(g_freed));
    key_of(1, k);
    CHECK_OK(kms_lru_put(c, k, mk(1), 0, 10, &ref1));
    CHECK(ref1 != NULL);
    v = kms_lru_get(c, k, 5, &ref2);
    CHECK(v != NULL && v->id == 1 && ref2 != NULL);
    put(c, 2, 0, 10); /* evicts 1 while two references are out */
    CHECK(g_freed[1] == 0);
    kms_lru_release(c, ref1);
    CHECK(g_freed[1] == 0 && v->id == 1);
    kms_lru_release(c, ref2);
    CHECK(g_freed[1] == 1);
    v = kms_lru_get(c, k, 5, &ref1);
    CHECK(v == NULL && ref1 == NULL);
    kms_lru_release(c, NULL);
    kms_lru_free(c);
    CHECK(g_freed[2] == 1);
    kms_lru_free(NULL);
}

struct worker {
    struct kms_lru *c;
    int base;
};

static void free_plain(void *p)
{
    free(p);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    uint8_t k[KMS_LRU_KEY_LEN];

    for (int i = 0; i < 2000; i++) {
        void *ref;
        int *v;

        key_of((w->base + i) % 40, k);
        v = kms_lru_get(w->c, k, i, &ref);
        if (v == NULL) {
            v = malloc(sizeof(*v));
            if (v == NULL)
                return (void *)1;
            *v = i;
            if (kms_lru_put(w->c, k, v, 0, i + 50, NULL) < 0)
                return (void *)1;
        } else if (*v < 0) {
            return (void *)1;
        }
        kms_lru_release(w->c, ref);
    }
    return NULL;
}

/* Proves: concurrent gets and puts from several threads keep the count bounded (ASan/TSan
 * builds catch races on the values). */
static void test_threads(void)
{
    struct kms_lru *c = kms_lru_new(16, free_plain);
    pthread_t t[4];
    struct worker w[4];
    void *res;

    for (int i = 0; i < 4; i++) {
        w[i].c = c;
        w[i].base = i * 7;
        CHECK(pthread_create(&t[i], NULL, work, &w[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        CHECK(pthread_join(t[i], &res) == 0);
        CHECK(res == NULL);
    }
    CHECK(kms_lru_count(c) <= 16);
    kms_lru_free(c);
}

int main(void)
{
    RUN(test_eviction_order);
    RUN(test_expiry);
    RUN(test_references);
    RUN(test_threads);
    TEST_MAIN_END();
}
