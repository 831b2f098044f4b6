/* Peer health and identity consistency (DESIGN.md §8). A node knows its peers (--peer, the
 * node it onboarded from, nodes that onboarded from it), checks each on an interval, and
 * folds the result into /health, /metrics and the effective node state. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/crypto/crypto.h"
#include "common/hex.h"
#include "common/log.h"
#include "replication/internal.h"
#include "replication/replication.h"

#define META_PEERS "peers"
#define META_PEERS_MAX (64u * 1024u) /* longest persisted peer list we parse */

struct peer {
    char url[KMS_REPL_URL_MAX];
    char origin[24]; /* "config", "onboarded-from", "onboarded-to", "admin" */
    struct kms_peer_result res;
    time_t last_check; /* 0: never */
    /* A node that onboarded from us is only a candidate until a check proves it serves our
     * identity (it stored the keys): until then it is checked but never degrades us, and it is
     * dropped when unconfirmed after the confirmation window. 0: a confirmed peer. */
    time_t pending_since;
};

#define MAX_PENDING (KMS_REPL_MAX_PEERS / 4) /* onboarding churn cannot crowd out peers */

/* A peer list: the live one of a started kms_repl, or a copy of the persisted one. */
struct peer_list {
    struct peer p[KMS_REPL_MAX_PEERS];
    size_t n;
    char self_url[KMS_REPL_URL_MAX]; /* never listed as a peer; "" when unknown */
};

struct kms_repl {
    struct kms_repl_cfg cfg;     /* immutable after kms_repl_new */
    struct kms_repl_identity id; /* set once by kms_repl_start, before the thread runs */
    /* Guards everything below and the read-modify-write of the persisted lists, so a peer
     * that joins while the thread starts is never lost. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started; /* list is live (kms_repl_start ran) */
    int running; /* thr was created */
    int stop;
    pthread_t thr;
    struct peer_list list;
};

const char *kms_peer_status_name(enum kms_peer_status s)
{
    switch (s) {
    case KMS_PEER_UNKNOWN:
        return "unknown";
    case KMS_PEER_UP:
        return "up";
    case KMS_PEER_DOWN:
        return "down";
    case KMS_PEER_INCONSISTENT:
        return "inconsistent";
    }
    return "unknown";
}

/* ---------------------------------------------------------------- URLs */

/* Checks the authority part "host[:port]" of a peer URL: a DNS name or IPv4 address of
 * letters, digits and .-_ (or a bracketed IPv6 literal), then an optional port 1..65535. A
 * URL that cannot name one TLS endpoint is refused here, not at the first failed check. */
static int check_authority(const char *a, size_t len)
{
    static const char name_ok[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_";
    static const char v6_ok[] = "0123456789abcdefABCDEF:.";
    size_t host_end, i;
    unsigned long port = 0;

    if (a[0] == '[') {
        for (i = 1; i < len && a[i] != ']'; i++) {
            if (strchr(v6_ok, a[i]) == NULL || a[i] == '\0')
                return kms_err_set(KMS_ERR_INVAL, "peer URL has a malformed IPv6 address");
        }
        if (i >= len || i == 1)
            return kms_err_set(KMS_ERR_INVAL, "peer URL has a malformed IPv6 address");
        host_end = i + 1;
    } else {
        for (i = 0; i < len && a[i] != ':'; i++) {
            if (strchr(name_ok, a[i]) == NULL || a[i] == '\0')
                return kms_err_set(KMS_ERR_INVAL,
                                   "peer URL may hold only letters, digits and .-_ in its host "
                                   "(no path, query or user part)");
        }
        if (i == 0)
            return kms_err_set(KMS_ERR_INVAL, "peer URL has no host");
        host_end = i;
    }
    if (host_end == len)
        return 0;
    if (a[host_end] != ':' || host_end + 1 == len || len - host_end - 1 > 5)
        return kms_err_set(KMS_ERR_INVAL, "peer URL port must be a number from 1 to 65535");
    for (i = host_end + 1; i < len; i++) {
        if (a[i] < '0' || a[i] > '9')
            return kms_err_set(KMS_ERR_INVAL, "peer URL port must be a number from 1 to 65535");
        port = port * 10 + (unsigned long)(a[i] - '0');
    }
    if (port == 0 || port > 65535)
        return kms_err_set(KMS_ERR_INVAL, "peer URL port must be a number from 1 to 65535");
    return 0;
}

int kms_repl_peer_url_normalize(const char *in, char out[KMS_REPL_URL_MAX])
{
    size_t len;
    int rc;

    if (in == NULL || strncmp(in, "https://", 8) != 0)
        return kms_err_set(KMS_ERR_INVAL, "peer URL must start with https://");
    len = strlen(in);
    if (len >= KMS_REPL_URL_MAX)
        return kms_err_set(KMS_ERR_INVAL, "peer URL longer than %d bytes", KMS_REPL_URL_MAX - 1);
    while (len > 8 && in[len - 1] == '/')
        len--;
    if (len >= 8 + 5 && strncmp(in + len - 5, "/prpc", 5) == 0)
        len -= 5;
    while (len > 8 && in[len - 1] == '/')
        len--;
    if (len == 8)
        return kms_err_set(KMS_ERR_INVAL, "peer URL has no host");
    rc = check_authority(in + 8, len - 8);
    if (rc < 0)
        return rc;
    memcpy(out, in, len);
    out[len] = '\0';
    return 0;
}

int kms_repl_self_url(const char *listen, const char *domain, char out[KMS_REPL_URL_MAX])
{
    const char *colon = listen != NULL ? strrchr(listen, ':') : NULL;
    char tmp[KMS_REPL_URL_MAX + 16];
    int rc = 0;

    KMS_ENSURE(colon != NULL && colon[1] != '\0' && strlen(colon + 1) <= 5, KMS_ERR_INVAL,
               "--listen has no port");
    KMS_ENSURE(domain != NULL && strlen(domain) < KMS_REPL_URL_MAX - 16, KMS_ERR_INVAL,
               "domain too long for a peer URL");
    snprintf(tmp, sizeof(tmp), "https://%s:%s", domain, colon + 1);
    KMS_GUARD(kms_repl_peer_url_normalize(tmp, out));
out:
    return rc;
}

/* ---------------------------------------------------------------- one peer check */

struct cert_check {
    const struct kms_peer_self *self;
    int failed; /* the handshake was aborted by our certificate check */
};

static int peer_cert_cb(void *arg, X509 *leaf)
{
    struct cert_check *cc = arg;
    int rc = kms_check_kms_cert(cc->self->actx, leaf, NULL, NULL);

    if (rc < 0) {
        cc->failed = 1;
        kms_err_wrap(rc, "peer RPC certificate rejected");
    }
    return rc;
}

/* A call whose server certificate is checked in the handshake; no CA pin (an inconsistent
 * peer has another root CA, and must still be told apart from a dead one). */
static int checked_call(const struct kms_peer_self *self, const char *url, const char *method,
                        const char *body, json_t **resp, int *cert_failed)
{
    struct kms_rpc_opts o;
    struct cert_check cc;
    int rc;

    memset(&o, 0, sizeof(o));
    memset(&cc, 0, sizeof(cc));
    cc.self = self;
    o.url = url;
    o.timeout_ms = self->timeout_ms > 0 ? self->timeout_ms : 5000;
    o.server_check = peer_cert_cb;
    o.server_check_arg = &cc;
    rc = kms_rpc_call(&o, method, body, resp, NULL);
    *cert_failed = cc.failed;
    return rc;
}

/* Reads a "0x.." bytes field of exactly want bytes. */
static int get_exact(json_t *o, const char *field, uint8_t *out, size_t want)
{
    uint8_t *b = NULL;
    size_t n = 0;
    int rc = 0;

    KMS_ENSURE(json_is_string(json_object_get(o, field)), KMS_ERR_PARSE, "peer answer lacks %s",
               field);
    KMS_GUARD(kms_prpc_get_bytes(o, field, &b, &n));
    KMS_ENSURE(n == want, KMS_ERR_PARSE, "peer %s is %zu bytes, want %zu", field, n, want);
    memcpy(out, b, want);
out:
    free(b);
    return rc;
}

int kms_repl_challenge_verify(const struct kms_peer_self *self,
                              const uint8_t app_id[KMS_REPL_CHALLENGE_APP_ID_LEN],
                              json_t *peer_resp)
{
    struct kms_env_pubkey mine;
    uint8_t pub[32], sig[65];
    int rc = 0;

    memset(&mine, 0, sizeof(mine));
    KMS_GUARD(get_exact(peer_resp, "public_key", pub, sizeof(pub)));
    KMS_GUARD(get_exact(peer_resp, "signature", sig, sizeof(sig)));
    KMS_GUARD(kms_derive_env_pubkey(self->root_ca_key, self->root_k256, app_id,
                                    KMS_REPL_CHALLENGE_APP_ID_LEN, 0, &mine));
    KMS_ENSURE(memcmp(mine.public_key, pub, sizeof(pub)) == 0, KMS_ERR_REPL_IDENTITY,
               "identity challenge failed: the peer's env-encrypt public key for a random app "
               "id differs (it holds another root CA key)");
    KMS_ENSURE(memcmp(mine.signature, sig, sizeof(sig)) == 0, KMS_ERR_REPL_IDENTITY,
               "identity challenge failed: the peer's k256 signature for a random app id "
               "differs (it holds another root k256 key)");
out:
    OPENSSL_cleanse(&mine, sizeof(mine));
    return rc;
}

static long ms_since(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (long)(t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Classifies a failed step: transport → down, anything the peer said or showed → inconsistent. */
static void classify(struct kms_peer_result *res, int rc, int cert_failed, const char *step)
{
    int down = !cert_failed && (rc == KMS_ERR_NET || rc == KMS_ERR_TIMEOUT ||
                                rc == KMS_ERR_TOOBIG || rc == KMS_ERR_REPL_RPC);

    res->status = down ? KMS_PEER_DOWN : KMS_PEER_INCONSISTENT;
    if (step != NULL)
        snprintf(res->reason, sizeof(res->reason), "%s: %s", step, kms_err_detail());
    else /* the RPC client's detail already names the method */
        snprintf(res->reason, sizeof(res->reason), "%s", kms_err_detail());
}

int kms_repl_check_peer(const struct kms_peer_self *self, const char *url,
                        struct kms_peer_result *res)
{
    uint8_t app_id[KMS_REPL_CHALLENGE_APP_ID_LEN];
    uint8_t *spki = NULL;
    size_t spki_len = 0;
    json_t *meta = NULL, *ek = NULL, *st;
    char body[128], hex[2 * KMS_REPL_CHALLENGE_APP_ID_LEN + 1];
    struct timespec t0;
    int cert_failed = 0;
    int rc = 0;

    memset(res, 0, sizeof(*res));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = checked_call(self, url, "GetMeta", NULL, &meta, &cert_failed);
    if (rc < 0) {
        classify(res, rc, cert_failed, NULL);
        goto out;
    }
    st = json_object_get(meta, "state");
    if (json_is_string(st))
        snprintf(res->peer_state, sizeof(res->peer_state), "%s", json_string_value(st));
    rc = get_exact(meta, "k256_pubkey", res->k256_pubkey, 33);
    if (rc < 0) {
        classify(res, rc, 1, "GetMeta");
        goto out;
    }
    res->have_k256 = 1;
    if (memcmp(res->k256_pubkey, self->k256_pubkey, 33) != 0) {
        rc = kms_err_set(KMS_ERR_REPL_IDENTITY, "the peer's k256_pubkey differs from ours");
        classify(res, rc, 1, "GetMeta");
        goto out;
    }
    rc = kms_prpc_get_bytes(meta, "ca_pubkey", &spki, &spki_len);
    if (rc == 0 && (spki_len != self->ca_spki_len || memcmp(spki, self->ca_spki, spki_len) != 0))
        rc = kms_err_set(KMS_ERR_REPL_IDENTITY, "the peer's root CA public key (ca_pubkey) %s",
                         spki_len == 0 ? "is missing" : "differs from ours");
    if (rc < 0) {
        classify(res, rc, 1, "GetMeta");
        goto out;
    }
    /* The challenge: a fresh random app id, so an answer cannot be replayed or precomputed. */
    if (RAND_bytes(app_id, sizeof(app_id)) != 1) {
        rc = kms_err_ossl(KMS_ERR_CRYPTO, "random challenge app id");
        classify(res, rc, 1, "challenge");
        goto out;
    }
    kms_hex_encode(app_id, sizeof(app_id), hex);
    snprintf(body, sizeof(body), "{\"app_id\":\"0x%s\"}", hex);
    rc = checked_call(self, url, "GetAppEnvEncryptPubKey", body, &ek, &cert_failed);
    if (rc < 0) {
        classify(res, rc, cert_failed, "challenge");
        goto out;
    }
    rc = kms_repl_challenge_verify(self, app_id, ek);
    if (rc < 0) {
        classify(res, rc, 1, "challenge");
        goto out;
    }
    res->status = KMS_PEER_UP;
out:
    res->latency_ms = ms_since(&t0);
    free(spki);
    json_decref(meta);
    json_decref(ek);
    return rc;
}

/* ---------------------------------------------------------------- peer list */

static size_t list_pending(const struct peer_list *r)
{
    size_t n = 0;

    for (size_t i = 0; i < r->n; i++)
        n += r->p[i].pending_since != 0;
    return n;
}

/* Adds url (normalized) unless present or our own; returns 1 if added. pending_since != 0
 * adds an unconfirmed candidate (see struct peer). */
static int list_add(struct peer_list *r, const char *url, const char *origin, time_t pending_since)
{
    char norm[KMS_REPL_URL_MAX];

    if (kms_repl_peer_url_normalize(url, norm) < 0) {
        KMS_WARN("ignoring peer %.100s: %s", url, kms_err_detail());
        return 0;
    }
    if (strcmp(norm, r->self_url) == 0)
        return 0;
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->p[i].url, norm) == 0)
            return 0;
    }
    if (r->n >= KMS_REPL_MAX_PEERS) {
        KMS_WARN("ignoring peer %s: at most %d peers", norm, KMS_REPL_MAX_PEERS);
        return 0;
    }
    if (pending_since != 0 && list_pending(r) >= MAX_PENDING) {
        KMS_WARN("ignoring peer candidate %s: %d candidates await confirmation already", norm,
                 MAX_PENDING);
        return 0;
    }
    memset(&r->p[r->n], 0, sizeof(r->p[r->n]));
    snprintf(r->p[r->n].url, sizeof(r->p[r->n].url), "%s", norm);
    snprintf(r->p[r->n].origin, sizeof(r->p[r->n].origin), "%s", origin);
    r->p[r->n].pending_since = pending_since;
    r->n++;
    return 1;
}

/* Parses the persisted list [{url, origin}] with stated limits; bad entries are skipped. */
static void list_load_meta(struct peer_list *r, struct kms_store *st)
{
    char *txt = NULL;
    json_t *arr;
    json_t *e;
    size_t i;

    if (kms_store_meta_get(st, META_PEERS, &txt) < 0)
        return;
    if (strlen(txt) > META_PEERS_MAX) {
        KMS_WARN("persisted peer list is larger than %u bytes: ignored", META_PEERS_MAX);
        free(txt);
        return;
    }
    arr = json_loads(txt, 0, NULL);
    free(txt);
    if (!json_is_array(arr)) {
        KMS_WARN("persisted peer list is not a JSON array: ignored");
        json_decref(arr);
        return;
    }
    json_array_foreach(arr, i, e)
    {
        json_t *u = json_object_get(e, "url");
        json_t *o = json_object_get(e, "origin");
        json_t *ps = json_object_get(e, "pending_since");
        time_t since = 0;

        /* A candidate stays one across restarts, with its original deadline. */
        if (json_is_integer(ps) && json_integer_value(ps) > 0)
            since = (time_t)json_integer_value(ps);
        if (json_is_string(u))
            list_add(r, json_string_value(u),
                     json_is_string(o) ? json_string_value(o) : "persisted", since);
    }
    json_decref(arr);
}

static int list_persist(const struct peer_list *r, struct kms_store *st)
{
    json_t *arr = json_array();
    char *txt = NULL;
    int rc = 0;

    KMS_GUARD_PTR(arr);
    for (size_t i = 0; i < r->n; i++) {
        json_t *e = json_pack("{s:s,s:s}", "url", r->p[i].url, "origin", r->p[i].origin);

        KMS_GUARD_PTR(e);
        if (r->p[i].pending_since != 0)
            json_object_set_new(e, "pending_since",
                                json_integer((json_int_t)r->p[i].pending_since));
        json_array_append_new(arr, e);
    }
    txt = json_dumps(arr, JSON_COMPACT);
    KMS_GUARD_PTR(txt);
    KMS_GUARD(kms_store_meta_set(st, META_PEERS, txt));
out:
    free(txt);
    json_decref(arr);
    return rc;
}

void kms_repl_peer_joined(struct kms_repl *r, const char *peer_url)
{
    struct peer_list tmp;
    char norm[KMS_REPL_URL_MAX];

    if (peer_url == NULL) {
        KMS_INFO("a KMS onboarded from this node without advertising its URL: not added as peer");
        return;
    }
    if (kms_repl_peer_url_normalize(peer_url, norm) < 0) {
        KMS_WARN("onboarded KMS advertised an unusable URL: %s", kms_err_detail());
        return;
    }
    if (r == NULL || r->cfg.store == NULL) {
        KMS_WARN("peer %s onboarded from this node, but this node keeps no peer list", norm);
        return;
    }
    pthread_mutex_lock(&r->mu);
    if (!r->started) {
        /* Not started yet: amend the persisted list; kms_repl_start reads it under the lock. */
        memset(&tmp, 0, sizeof(tmp));
        list_load_meta(&tmp, r->cfg.store);
        if (list_add(&tmp, norm, "onboarded-to", time(NULL)) &&
            list_persist(&tmp, r->cfg.store) < 0)
            KMS_WARN("cannot persist the peer list: %s", kms_err_detail());
    } else {
        if (list_add(&r->list, norm, "onboarded-to", time(NULL)) &&
            list_persist(&r->list, r->cfg.store) < 0)
            KMS_WARN("cannot persist the peer list: %s", kms_err_detail());
        pthread_cond_broadcast(&r->cv); /* check the newcomer now */
    }
    pthread_mutex_unlock(&r->mu);
    KMS_INFO("root keys released to %s: a peer once it serves this cluster's identity", norm);
}

/* ---------------------------------------------------------------- admin: add / remove */

#define META_REMOVED "peers_removed"
#define REMOVED_MAX (2 * KMS_REPL_MAX_PEERS) /* oldest removals are forgotten beyond this */

/* The persisted set of removed peer URLs (normalized strings); an empty array when absent or
 * unreadable. NULL only when out of memory. Caller owns it. */
static json_t *removed_load(struct kms_store *st)
{
    json_t *out = json_array();
    json_t *arr = NULL, *e;
    char *txt = NULL;
    size_t i;

    if (out == NULL || kms_store_meta_get(st, META_REMOVED, &txt) < 0)
        return out;
    if (strlen(txt) <= META_PEERS_MAX)
        arr = json_loads(txt, 0, NULL);
    free(txt);
    if (!json_is_array(arr)) {
        KMS_WARN("persisted list of removed peers is unreadable: ignored");
        json_decref(arr);
        return out;
    }
    json_array_foreach(arr, i, e)
    {
        char norm[KMS_REPL_URL_MAX];

        if (json_is_string(e) && json_array_size(out) < REMOVED_MAX &&
            kms_repl_peer_url_normalize(json_string_value(e), norm) == 0)
            json_array_append_new(out, json_string(norm));
    }
    json_decref(arr);
    return out;
}

/* Index of url (normalized by the caller) in the removed set, or -1. */
static long removed_find(json_t *set, const char *norm)
{
    json_t *e;
    size_t i;

    json_array_foreach(set, i, e)
    {
        if (json_is_string(e) && strcmp(json_string_value(e), norm) == 0)
            return (long)i;
    }
    return -1;
}

/* 1 if url (any spelling) was removed by an operator and must not come back from config. */
static int removed_has(json_t *set, const char *url)
{
    char norm[KMS_REPL_URL_MAX];

    if (set == NULL || kms_repl_peer_url_normalize(url, norm) < 0)
        return 0;
    return removed_find(set, norm) >= 0;
}

static int removed_persist(struct kms_store *st, json_t *set)
{
    char *txt = json_dumps(set, JSON_COMPACT);
    int rc = 0;

    KMS_GUARD_PTR(txt);
    KMS_GUARD(kms_store_meta_set(st, META_REMOVED, txt));
out:
    free(txt);
    return rc;
}

/* The list to change: the live one, or before kms_repl_start a copy of the persisted one in
 * *tmp (caller frees). r->mu held by the caller. */
static struct peer_list *admin_list(struct kms_repl *r, struct peer_list **tmp)
{
    if (r->started)
        return &r->list;
    *tmp = calloc(1, sizeof(**tmp));
    if (*tmp == NULL)
        return NULL;
    if (r->id.domain == NULL ||
        kms_repl_self_url(r->cfg.listen, r->id.domain, (*tmp)->self_url) < 0)
        (*tmp)->self_url[0] = '\0';
    list_load_meta(*tmp, r->cfg.store);
    return *tmp;
}

int kms_repl_peer_add(struct kms_repl *r, const char *url, char norm_out[KMS_REPL_URL_MAX])
{
    char norm[KMS_REPL_URL_MAX];
    struct peer_list *l, *tmp = NULL;
    json_t *removed = NULL;
    int added = 0;
    long idx;
    int rc;

    rc = kms_repl_peer_url_normalize(url, norm);
    if (rc < 0)
        return rc;
    if (norm_out != NULL)
        memcpy(norm_out, norm, sizeof(norm));
    if (r == NULL || r->cfg.store == NULL)
        return kms_err_set(KMS_ERR_STATE, "this node keeps no peer list (no keystore)");
    pthread_mutex_lock(&r->mu);
    l = admin_list(r, &tmp);
    KMS_GUARD_PTR(l);
    KMS_ENSURE(strcmp(norm, l->self_url) != 0, KMS_ERR_INVAL,
               "%s is this node's own URL, not a peer", norm);
    for (size_t i = 0; i < l->n && !added; i++) {
        if (strcmp(l->p[i].url, norm) != 0)
            continue;
        /* An operator's add confirms a candidate that onboarded from us. */
        added = l->p[i].pending_since != 0 ? 1 : -1;
        l->p[i].pending_since = 0;
    }
    if (added == 0) {
        KMS_ENSURE(l->n < KMS_REPL_MAX_PEERS, KMS_ERR_TOOBIG,
                   "the peer list is full (%d peers): remove one first", KMS_REPL_MAX_PEERS);
        added = list_add(l, norm, "admin", 0);
        KMS_GUARD(list_persist(l, r->cfg.store));
    } else if (added == 1) {
        KMS_GUARD(list_persist(l, r->cfg.store));
    } else {
        added = 0;
    }
    /* An explicit add undoes an earlier removal. */
    removed = removed_load(r->cfg.store);
    KMS_GUARD_PTR(removed);
    idx = removed_find(removed, norm);
    if (idx >= 0) {
        json_array_remove(removed, (size_t)idx);
        KMS_GUARD(removed_persist(r->cfg.store, removed));
    }
    if (r->started)
        pthread_cond_broadcast(&r->cv); /* check the newcomer now */
    rc = added;
out:
    pthread_mutex_unlock(&r->mu);
    free(tmp);
    json_decref(removed);
    if (rc == 1)
        KMS_INFO("peer %s added by an operator", norm);
    return rc;
}

int kms_repl_peer_remove(struct kms_repl *r, const char *url, char norm_out[KMS_REPL_URL_MAX])
{
    char norm[KMS_REPL_URL_MAX];
    struct peer_list *l, *tmp = NULL;
    json_t *removed = NULL;
    size_t i;
    int rc;

    rc = kms_repl_peer_url_normalize(url, norm);
    if (rc < 0)
        return rc;
    if (norm_out != NULL)
        memcpy(norm_out, norm, sizeof(norm));
    if (r == NULL || r->cfg.store == NULL)
        return kms_err_set(KMS_ERR_STATE, "this node keeps no peer list (no keystore)");
    pthread_mutex_lock(&r->mu);
    l = admin_list(r, &tmp);
    KMS_GUARD_PTR(l);
    for (i = 0; i < l->n; i++) {
        if (strcmp(l->p[i].url, norm) == 0)
            break;
    }
    KMS_ENSURE(i < l->n, KMS_ERR_NOTFOUND, "peer %s is not in the peer list", norm);
    /* Remembered first: a --peer or onboarded-from peer must not return at the next start. */
    removed = removed_load(r->cfg.store);
    KMS_GUARD_PTR(removed);
    if (removed_find(removed, norm) < 0) {
        if (json_array_size(removed) >= REMOVED_MAX)
            json_array_remove(removed, 0);
        json_array_append_new(removed, json_string(norm));
        KMS_GUARD(removed_persist(r->cfg.store, removed));
    }
    memmove(&l->p[i], &l->p[i + 1], (l->n - i - 1) * sizeof(l->p[0]));
    l->n--;
    KMS_GUARD(list_persist(l, r->cfg.store));
out:
    pthread_mutex_unlock(&r->mu);
    free(tmp);
    json_decref(removed);
    if (rc == 0)
        KMS_INFO("peer %s removed by an operator", norm);
    return rc;
}

/* ---------------------------------------------------------------- the check loop */

struct job {
    const struct kms_peer_self *self;
    char url[KMS_REPL_URL_MAX];
    struct kms_peer_result res;
    pthread_t t;
    int started;
};

static void *job_run(void *arg)
{
    struct job *j = arg;

    /* The verdict is in j->res; the return code only repeats it. */
    if (kms_repl_check_peer(j->self, j->url, &j->res) < 0)
        KMS_DEBUG("peer %s: %s", j->url, j->res.reason);
    return NULL;
}

static long check_timeout_ms(long interval)
{
    long t = interval / 2;

    if (t < 200)
        t = 200;
    if (t > 5000)
        t = 5000;
    return t;
}

/* Stores a check's verdict; returns 1 when it confirmed a candidate (the list changed). */
static int record(struct peer_list *r, const struct job *j, time_t now)
{
    for (size_t i = 0; i < r->n; i++) {
        struct peer *p = &r->p[i];

        if (strcmp(p->url, j->url) != 0)
            continue;
        if (p->pending_since != 0) {
            p->res = j->res;
            p->last_check = now;
            if (j->res.status != KMS_PEER_UP)
                return 0;
            p->pending_since = 0;
            KMS_INFO("peer %s confirmed: it serves this cluster's identity", p->url);
            return 1;
        }
        if (p->res.status != j->res.status) {
            if (j->res.status == KMS_PEER_UP)
                KMS_INFO("peer %s is up", p->url);
            else
                KMS_WARN("peer %s is %s: %s", p->url, kms_peer_status_name(j->res.status),
                         j->res.reason);
        }
        p->res = j->res;
        p->last_check = now;
        return 0;
    }
    return 0;
}

/* Drops candidates unconfirmed for longer than window_s; returns the number dropped. */
static size_t expire_pending(struct peer_list *r, time_t now, long window_s)
{
    size_t dropped = 0;

    for (size_t i = 0; i < r->n;) {
        struct peer *p = &r->p[i];

        if (p->pending_since == 0 || now - p->pending_since <= window_s) {
            i++;
            continue;
        }
        KMS_WARN("peer candidate %s never confirmed within %ld s (last check: %s): dropped", p->url,
                 window_s, p->last_check != 0 ? p->res.reason : "none");
        memmove(&r->p[i], &r->p[i + 1], (r->n - i - 1) * sizeof(r->p[0]));
        r->n--;
        dropped++;
    }
    return dropped;
}

static void *loop(void *arg)
{
    struct kms_repl *r = arg;
    struct kms_peer_self self;
    struct job *jobs = calloc(KMS_REPL_MAX_PEERS, sizeof(*jobs));
    long interval = r->cfg.interval_ms > 0 ? r->cfg.interval_ms : 5000;
    long window_s = r->cfg.confirm_window_s > 0 ? r->cfg.confirm_window_s : 3600;

    if (jobs == NULL) {
        KMS_ERROR("peer checks disabled: out of memory");
        return NULL;
    }
    memset(&self, 0, sizeof(self));
    self.actx = r->cfg.actx;
    self.root_ca_key = r->id.root_ca_key;
    self.root_k256 = r->id.root_k256;
    self.k256_pubkey = r->id.k256_pubkey;
    self.ca_spki = r->id.ca_spki;
    self.ca_spki_len = r->id.ca_spki_len;
    self.timeout_ms = check_timeout_ms(interval);
    for (;;) {
        struct timespec deadline;
        size_t nj, changed;

        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += interval / 1000;
        deadline.tv_nsec += (interval % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&r->mu);
        if (r->stop) {
            pthread_mutex_unlock(&r->mu);
            break;
        }
        nj = r->list.n;
        for (size_t i = 0; i < nj; i++) {
            memset(&jobs[i], 0, sizeof(jobs[i]));
            jobs[i].self = &self;
            memcpy(jobs[i].url, r->list.p[i].url, sizeof(jobs[i].url));
        }
        pthread_mutex_unlock(&r->mu);
        /* All peers in parallel, so one hanging peer delays nobody else's verdict. */
        for (size_t i = 0; i < nj; i++)
            jobs[i].started = pthread_create(&jobs[i].t, NULL, job_run, &jobs[i]) == 0;
        for (size_t i = 0; i < nj; i++) {
            if (jobs[i].started)
                pthread_join(jobs[i].t, NULL);
            else
                job_run(&jobs[i]);
        }
        pthread_mutex_lock(&r->mu);
        changed = 0;
        for (size_t i = 0; i < nj; i++)
            changed += record(&r->list, &jobs[i], time(NULL));
        changed += expire_pending(&r->list, time(NULL), window_s);
        if (changed && list_persist(&r->list, r->cfg.store) < 0)
            KMS_WARN("cannot persist the peer list: %s", kms_err_detail());
        /* Wait out the interval; a joining peer (broadcast) or stop ends the wait early. */
        if (!r->stop)
            pthread_cond_timedwait(&r->cv, &r->mu, &deadline);
        pthread_mutex_unlock(&r->mu);
    }
    free(jobs);
    return NULL;
}

int kms_repl_new(const struct kms_repl_cfg *cfg, struct kms_repl **out)
{
    struct kms_repl *r;

    *out = NULL;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return kms_err_set(KMS_ERR_NOMEM, "out of memory");
    r->cfg = *cfg;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    *out = r;
    return 0;
}

const struct kms_repl_cfg *kms_repl_cfg_of(const struct kms_repl *r)
{
    return &r->cfg;
}

int kms_repl_start(struct kms_repl *r, const struct kms_repl_identity *id)
{
    struct peer_list *l = &r->list;
    char *from = NULL;
    json_t *removed;
    int rc = 0;

    if (r->cfg.store == NULL)
        return kms_err_set(KMS_ERR_STATE, "peer checks need the keystore");
    pthread_mutex_lock(&r->mu);
    KMS_ENSURE(!r->started, KMS_ERR_STATE, "peer checks already started");
    r->id = *id;
    if (kms_repl_self_url(r->cfg.listen, id->domain, l->self_url) < 0)
        l->self_url[0] = '\0';
    /* admin: peers an operator removed stay removed, also when configured */
    removed = removed_load(r->cfg.store);
    for (size_t i = 0; i < r->cfg.n_peers; i++) {
        if (!removed_has(removed, r->cfg.peers[i]))
            list_add(l, r->cfg.peers[i], "config", 0);
    }
    if (kms_store_meta_get(r->cfg.store, "onboarded_from", &from) == 0) {
        if (!removed_has(removed, from))
            list_add(l, from, "onboarded-from", 0);
        free(from);
    }
    json_decref(removed);
    list_load_meta(l, r->cfg.store);
    if (list_persist(l, r->cfg.store) < 0)
        KMS_WARN("cannot persist the peer list: %s", kms_err_detail());
    r->started = 1;
    KMS_INFO("checking %zu peer(s) every %ld ms", l->n, r->cfg.interval_ms);
    rc = pthread_create(&r->thr, NULL, loop, r);
    if (rc != 0) {
        rc = kms_err_set(KMS_ERR_INTERNAL, "cannot start the peer check thread");
        goto out;
    }
    r->running = 1;
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void kms_repl_free(struct kms_repl *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->running)
        pthread_join(r->thr, NULL);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

/* ---------------------------------------------------------------- reporting */

int kms_repl_degraded(struct kms_repl *r)
{
    int degraded = 0;

    if (r == NULL)
        return 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; r->started && i < r->list.n; i++) {
        if (r->list.p[i].pending_since == 0 && (r->list.p[i].res.status == KMS_PEER_DOWN ||
                                                r->list.p[i].res.status == KMS_PEER_INCONSISTENT))
            degraded = 1;
    }
    pthread_mutex_unlock(&r->mu);
    return degraded;
}

json_t *kms_repl_peers_json(struct kms_repl *r)
{
    json_t *arr = json_array();

    if (arr == NULL || r == NULL)
        return arr;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; r->started && i < r->list.n; i++) {
        const struct peer *p = &r->list.p[i];
        json_t *o = json_object();

        if (o == NULL)
            break;
        json_object_set_new(o, "url", json_string(p->url));
        json_object_set_new(o, "origin", json_string(p->origin));
        json_object_set_new(
            o, "status",
            json_string(p->pending_since != 0 ? "pending" : kms_peer_status_name(p->res.status)));
        json_object_set_new(o, "pending_since",
                            p->pending_since != 0 ? json_integer((json_int_t)p->pending_since)
                                                  : json_null());
        json_object_set_new(o, "reason", json_string(p->res.reason));
        json_object_set_new(o, "last_check",
                            p->last_check != 0 ? json_integer((json_int_t)p->last_check)
                                               : json_null());
        json_object_set_new(o, "latency_ms",
                            p->last_check != 0 ? json_integer(p->res.latency_ms) : json_null());
        json_object_set_new(o, "k256_pubkey",
                            p->res.have_k256 ? kms_prpc_bytes(p->res.k256_pubkey, 33)
                                             : json_null());
        json_object_set_new(o, "peer_state", json_string(p->res.peer_state));
        json_array_append_new(arr, o);
    }
    pthread_mutex_unlock(&r->mu);
    return arr;
}

/* One gauge family per pass (the exposition format wants each family's samples together).
 * r NULL: the headers only. */
static int metric_family(const struct peer_list *r, struct kms_buf *b, int consistency)
{
    char line[KMS_REPL_URL_MAX + 96];
    int rc = 0;

    KMS_GUARD(kms_buf_put_str(
        b, consistency ? "# HELP kmsd_peer_identity_consistent 1 if the peer passed its last "
                         "identity check (same keys, challenge answered).\n"
                         "# TYPE kmsd_peer_identity_consistent gauge\n"
                       : "# HELP kmsd_peer_up 1 if the peer answered its last check.\n"
                         "# TYPE kmsd_peer_up gauge\n"));
    for (size_t i = 0; r != NULL && i < r->n; i++) {
        enum kms_peer_status s = r->p[i].res.status;
        int v = consistency ? s == KMS_PEER_UP : s == KMS_PEER_UP || s == KMS_PEER_INCONSISTENT;

        if (r->p[i].pending_since != 0)
            continue; /* counted in kmsd_peer_candidates */
        snprintf(line, sizeof(line), "%s{peer=\"%s\"} %d\n",
                 consistency ? "kmsd_peer_identity_consistent" : "kmsd_peer_up", r->p[i].url, v);
        KMS_GUARD(kms_buf_put_str(b, line));
    }
out:
    return rc;
}

int kms_repl_metrics(struct kms_repl *r, struct kms_buf *b)
{
    const struct peer_list *l = NULL;
    int rc;

    if (r != NULL) {
        pthread_mutex_lock(&r->mu);
        if (r->started)
            l = &r->list;
    }
    rc = metric_family(l, b, 0);
    if (rc == 0)
        rc = metric_family(l, b, 1);
    if (rc == 0)
        rc = kms_buf_put_str(b, "# HELP kmsd_peer_candidates Nodes that onboarded from this one "
                                "and have not yet been seen serving its identity.\n"
                                "# TYPE kmsd_peer_candidates gauge\n");
    if (rc == 0) {
        char line[64];

        snprintf(line, sizeof(line), "kmsd_peer_candidates %zu\n",
                 l != NULL ? list_pending(l) : (size_t)0);
        rc = kms_buf_put_str(b, line);
    }
    if (r != NULL)
        pthread_mutex_unlock(&r->mu);
    return rc;
}
