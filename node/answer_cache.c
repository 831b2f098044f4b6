/* Constant answers built once per state change (node/answer_cache.h). */
#include "node/answer_cache.h"

#include <stdlib.h>
#include <string.h>

void kms_answer_cache_init(struct kms_answer_cache *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
}

static void slot_clear(struct kms_answer_slot *s)
{
    free(s->key);
    free(s->body);
    memset(s, 0, sizeof(*s));
}

void kms_answer_cache_free(struct kms_answer_cache *c)
{
    if (c == NULL)
        return;
    for (unsigned i = 0; i < KMS_ANSWER_SLOTS; i++)
        slot_clear(&c->slot[i]);
    pthread_mutex_destroy(&c->mu);
}

int kms_answer_cache_get(struct kms_answer_cache *c, unsigned slot, const char *key,
                         struct kms_http_resp *resp)
{
    struct kms_answer_slot *s;
    char *copy = NULL;
    size_t len = 0;
    const char *ctype = NULL;

    if (slot >= KMS_ANSWER_SLOTS)
        return 0;
    s = &c->slot[slot];
    pthread_mutex_lock(&c->mu);
    if (s->key != NULL && strcmp(s->key, key) == 0) {
        /* +1: a JSON body stays NUL-terminated as kms_http_resp_own expects */
        copy = malloc(s->len + 1);
        if (copy != NULL) {
            memcpy(copy, s->body, s->len);
            copy[s->len] = '\0';
            len = s->len;
            ctype = s->ctype;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (copy == NULL)
        return 0;
    kms_http_resp_own_len(resp, 200, ctype, copy, len);
    return 1;
}

void kms_answer_cache_put(struct kms_answer_cache *c, unsigned slot, const char *key,
                          const struct kms_http_resp *resp)
{
    struct kms_answer_slot n;
    size_t klen = strlen(key);

    if (slot >= KMS_ANSWER_SLOTS || resp->status != 200 || klen >= KMS_ANSWER_KEY_MAX ||
        (resp->body == NULL && resp->body_len > 0))
        return;
    memset(&n, 0, sizeof(n));
    n.key = malloc(klen + 1);
    n.body = malloc(resp->body_len + 1);
    if (n.key == NULL || n.body == NULL) {
        slot_clear(&n);
        return;
    }
    memcpy(n.key, key, klen + 1);
    if (resp->body_len > 0)
        memcpy(n.body, resp->body, resp->body_len);
    n.len = resp->body_len;
    n.ctype = resp->content_type;
    pthread_mutex_lock(&c->mu);
    slot_clear(&c->slot[slot]);
    c->slot[slot] = n;
    pthread_mutex_unlock(&c->mu);
}
