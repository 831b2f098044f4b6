/*
 * chain: the native Ethereum authorization backend (type "eth"). It does what the reference
 * auth-eth server does (attestation-reference.md §4.5): eth_call of DstackKms.isKmsAllowed /
 * isAppAllowed with the normalized AppBootInfo, then gatewayAppId(); GetMeta reads
 * gatewayAppId(), appImplementation() and eth_chainId.
 *
 * Reads are pinned: the block the configured tag names is resolved first, then every eth_call
 * targets that block number, so one decision never mixes two chain states. With several RPCs,
 * `failover` takes the first healthy one and `quorum` needs k identical answers for the same
 * block; anything less fails closed with a detail naming each RPC and what it said.
 *
 * A small cache keeps allow decisions for a short TTL; denials and errors are never cached, so
 * the cache cannot turn a denial into an allow, and revocations take effect within the TTL.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "chain/eth.h"
#include "chain/internal.h"
#include "common/keccak.h"
#include "common/log.h"
#include "common/lru.h"

#define CACHE_SLOTS 256
#define DEFAULT_TTL_MS 2000
#define DEFAULT_TIMEOUT_MS 5000
#define SUMMARY_MAX 160
#define LAG_BLOCKS 2 /* how far back a read steps when a backend lacks the pinned block */

struct eth_state {
    char **urls;
    char **labels;
    size_t n;
    int quorum;
    unsigned k;
    uint8_t contract[20];
    char contract_str[43];
    char tag[16];
    uint64_t chain_id;
    long ttl_ms;
    struct kms_eth_rpc_opts o;
    pthread_mutex_t mu;
    int *chain_ok;         /* per URL: chain id verified (under mu) */
    struct kms_lru *cache; /* keccak(is_kms ‖ calldata) → struct kms_auth_result, allows only */
    struct kms_buf last_info; /* last good info answer (under mu), for GetMeta when RPCs fail */
};

/* One RPC's answer to a query: canonical bytes to compare and a short human summary. */
struct answer {
    int rc;
    struct kms_buf blob;
    char summary[SUMMARY_MAX];
};

typedef int (*query_fn)(struct eth_state *st, const char *url, const char *block, void *arg,
                        struct answer *a);

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* scheme://host:port, as jsonrpc.c prints it; RPC URLs may carry API keys in the path. */
static char *label_dup(const char *url)
{
    const char *s = strstr(url, "://");
    const char *h = s != NULL ? s + 3 : url;
    size_t hl = strcspn(h, "/?#");
    const char *at = memchr(h, '@', hl);
    char *out;
    size_t pre = (size_t)(h - url);

    if (at != NULL) {
        hl -= (size_t)(at + 1 - h);
        h = at + 1;
    }
    out = malloc(pre + hl + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, url, s != NULL ? (size_t)(s + 3 - url) : 0);
    pre = s != NULL ? (size_t)(s + 3 - url) : 0;
    memcpy(out + pre, h, hl);
    out[pre + hl] = '\0';
    return out;
}

static void state_free(void *priv)
{
    struct eth_state *st = priv;

    if (st == NULL)
        return;
    for (size_t i = 0; i < st->n; i++) {
        free(st->urls != NULL ? st->urls[i] : NULL);
        free(st->labels != NULL ? st->labels[i] : NULL);
    }
    free(st->urls);
    free(st->labels);
    free(st->chain_ok);
    kms_buf_free(&st->last_info);
    kms_lru_free(st->cache);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

/* ---------------------------------------------------------------- per-RPC helpers */

/* Verifies eth_chainId once per RPC (a chain id never changes under a healthy endpoint). */
static int ensure_chain(struct eth_state *st, size_t i)
{
    uint64_t id = 0;
    int ok, rc = 0;

    if (st->chain_id == 0)
        return 0;
    pthread_mutex_lock(&st->mu);
    ok = st->chain_ok[i];
    pthread_mutex_unlock(&st->mu);
    if (ok)
        return 0;
    KMS_GUARD(kms_eth_chain_id(st->urls[i], &st->o, &id));
    KMS_ENSURE(id == st->chain_id, KMS_ERR_ETH_CHAIN_ID,
               "Ethereum RPC %s serves chain id %llu, but chain id %llu is configured; "
               "point eth_rpc_urls at the right network",
               st->labels[i], (unsigned long long)id, (unsigned long long)st->chain_id);
    pthread_mutex_lock(&st->mu);
    st->chain_ok[i] = 1;
    pthread_mutex_unlock(&st->mu);
out:
    return rc;
}

static void answer_reset(struct answer *a)
{
    kms_buf_free(&a->blob);
    memset(a, 0, sizeof(*a));
}

/*
 * True when the last error says the answering backend does not have the requested block yet:
 * behind a load balancer, eth_blockNumber may come from a backend a block or two ahead.
 */
static int block_missing(int rc)
{
    const char *d = kms_err_detail();

    return rc == KMS_ERR_ETH_RPC &&
           (strstr(d, "BlockOutOfRange") != NULL || strstr(d, "header not found") != NULL ||
            strstr(d, "unknown block") != NULL || strstr(d, "block not found") != NULL);
}

/* Runs q on RPC i at its own pinned block (failover) or at `block` (quorum). */
static int ask(struct eth_state *st, size_t i, query_fn q, void *arg, const char *block,
               uint64_t *num_out, struct answer *a)
{
    char blk[24];
    uint64_t num = 0;
    int rc = 0;

    answer_reset(a);
    KMS_GUARD(ensure_chain(st, i));
    if (block != NULL) {
        KMS_GUARD(q(st, st->urls[i], block, arg, a));
        goto out;
    }
    KMS_GUARD(kms_eth_block_number(st->urls[i], &st->o, st->tag, &num));
    /* Failover pins per RPC, so stepping back a block stays one consistent chain state. */
    for (unsigned back = 0;; back++) {
        kms_eth_fmt_quantity(num, blk, sizeof(blk));
        rc = q(st, st->urls[i], blk, arg, a);
        if (rc == 0 || !block_missing(rc) || back >= LAG_BLOCKS || num == 0)
            break;
        KMS_WARN_LIMITED("eth auth: RPC %s lacks block %llu (%s); retrying one block back",
                         st->labels[i], (unsigned long long)num, kms_err_detail());
        kms_buf_free(&a->blob);
        num--;
    }
    if (rc < 0)
        goto out;
    if (num_out != NULL)
        *num_out = num;
out:
    a->rc = rc;
    if (rc < 0)
        snprintf(a->summary, sizeof(a->summary), "%s", kms_err_detail());
    return rc;
}

/* Appends "label: text; " to msg (bounded). */
static void note(char *msg, size_t cap, const char *label, const char *text)
{
    size_t used = strlen(msg);

    if (used + 8 >= cap)
        return;
    snprintf(msg + used, cap - used, "%s%s: %.*s", used > 0 ? "; " : "", label, SUMMARY_MAX, text);
}

static int cmp_u64_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? 1 : (x > y ? -1 : 0);
}

/* Largest number of identical successful answers; *best_i is one of them. */
static size_t agreement(const struct eth_state *st, const struct answer *ans, const int *have,
                        size_t *best_i)
{
    size_t best = 0;

    for (size_t i = 0; i < st->n; i++) {
        size_t same = 0;

        if (!have[i] || ans[i].rc < 0)
            continue;
        for (size_t j = 0; j < st->n; j++)
            if (have[j] && ans[j].rc == 0 && ans[j].blob.len == ans[i].blob.len &&
                memcmp(ans[j].blob.data, ans[i].blob.data, ans[i].blob.len) == 0)
                same++;
        if (same > best) {
            best = same;
            *best_i = i;
        }
    }
    return best;
}

/*
 * Runs q under the configured policy and hands back the agreed answer blob (moved into out).
 */
static int run_policy(struct eth_state *st, query_fn q, void *arg, struct kms_buf *out)
{
    struct answer *ans = NULL;
    uint64_t *nums = NULL, *sorted = NULL;
    int *have = NULL;
    char msg[900] = "";
    size_t reachable = 0;
    int rc = 0, last = KMS_ERR_AUTH_UNREACHABLE;

    ans = calloc(st->n, sizeof(*ans));
    nums = calloc(st->n, sizeof(*nums));
    sorted = calloc(st->n, sizeof(*sorted));
    have = calloc(st->n, sizeof(*have));
    KMS_GUARD_PTR(ans);
    KMS_GUARD_PTR(nums);
    KMS_GUARD_PTR(sorted);
    KMS_GUARD_PTR(have);

    if (!st->quorum) {
        for (size_t i = 0; i < st->n; i++) {
            if (ask(st, i, q, arg, NULL, NULL, &ans[i]) == 0) {
                *out = ans[i].blob;
                memset(&ans[i].blob, 0, sizeof(ans[i].blob));
                if (i > 0)
                    KMS_WARN("eth auth: failed over to RPC %s (%s)", st->labels[i], msg);
                goto out;
            }
            last = ans[i].rc;
            note(msg, sizeof(msg), st->labels[i], ans[i].summary);
        }
        if (st->n == 1) /* keep the precise code and detail */
            rc = kms_err_set(last, "%s", ans[0].summary);
        else
            rc = kms_err_set(last, "all %zu Ethereum RPCs failed (failover): %s", st->n, msg);
        goto out;
    }

    /* quorum: pin the block that at least k RPCs have reached, then compare answers there. */
    for (size_t i = 0; i < st->n; i++) {
        if (ensure_chain(st, i) == 0 &&
            kms_eth_block_number(st->urls[i], &st->o, st->tag, &nums[i]) == 0) {
            have[i] = 1;
            sorted[reachable++] = nums[i];
        } else {
            ans[i].rc = KMS_ERR_AUTH_UNREACHABLE;
            snprintf(ans[i].summary, sizeof(ans[i].summary), "%s", kms_err_detail());
        }
    }
    if (reachable < st->k) {
        for (size_t i = 0; i < st->n; i++)
            if (!have[i])
                note(msg, sizeof(msg), st->labels[i], ans[i].summary);
        rc = kms_err_set(KMS_ERR_ETH_QUORUM,
                         "Ethereum RPC quorum not reached: %zu of %zu RPCs answered, %u needed "
                         "(%s)",
                         reachable, st->n, st->k, msg);
        goto out;
    }
    qsort(sorted, reachable, sizeof(*sorted), cmp_u64_desc);
    {
        uint64_t pin = sorted[st->k - 1];
        char blk[24];
        size_t best = 0, best_i = 0;

        /*
         * Every RPC is asked at the same block. Only when that gives no quorum and some RPC
         * lacked the block do all step back together, so the answers compared are always for
         * one block.
         */
        for (unsigned back = 0;; back++) {
            int missing = 0;

            kms_eth_fmt_quantity(pin, blk, sizeof(blk));
            for (size_t i = 0; i < st->n; i++)
                if (have[i] && ask(st, i, q, arg, blk, NULL, &ans[i]) < 0 &&
                    block_missing(ans[i].rc))
                    missing = 1;
            best = agreement(st, ans, have, &best_i);
            if (best >= st->k || !missing || back >= LAG_BLOCKS || pin == 0)
                break;
            KMS_WARN_LIMITED("eth auth: some RPCs lack block %llu; asking all one block back",
                             (unsigned long long)pin);
            pin--;
        }
        if (best >= st->k) {
            *out = ans[best_i].blob;
            memset(&ans[best_i].blob, 0, sizeof(ans[best_i].blob));
            if (best < reachable)
                KMS_WARN("eth auth: %zu of %zu RPCs agree at block %llu (quorum %u); "
                         "others differ",
                         best, st->n, (unsigned long long)pin, st->k);
            goto out;
        }
        for (size_t i = 0; i < st->n; i++)
            note(msg, sizeof(msg), st->labels[i], ans[i].summary);
        rc = kms_err_set(KMS_ERR_ETH_QUORUM,
                         "Ethereum RPCs disagree at block %llu: at most %zu of %zu gave the same "
                         "answer, %u needed; failing closed (%s)",
                         (unsigned long long)pin, best, st->n, st->k, msg);
    }
out:
    if (ans != NULL)
        for (size_t i = 0; i < st->n; i++)
            answer_reset(&ans[i]);
    free(ans);
    free(nums);
    free(sorted);
    free(have);
    return rc;
}

/* ---------------------------------------------------------------- queries */

/*
 * eth_call of a contract without code returns empty data. At a safe/finalized block that is
 * usually a contract deployed too recently, so say so instead of an ABI decoding error.
 */
static int check_code(const struct eth_state *st, size_t ret_len)
{
    if (ret_len > 0)
        return 0;
    if (strcmp(st->tag, "latest") != 0)
        return kms_err_set(KMS_ERR_AUTH_RESPONSE,
                           "contract %s has no code at the %s block (not yet %s? use "
                           "--eth-block latest)",
                           st->contract_str, st->tag,
                           strcmp(st->tag, "safe") == 0 ? "safe" : "finalized");
    return kms_err_set(KMS_ERR_AUTH_RESPONSE,
                       "contract %s has no code at the latest block (wrong address or network?)",
                       st->contract_str);
}

/* gatewayAppId() at block; *s malloc'd. */
static int read_string_view(struct eth_state *st, const char *url, const char *block,
                            const char *sig, char **s)
{
    uint8_t sel[4], *ret = NULL;
    size_t ret_len = 0;
    int rc = 0;

    *s = NULL;
    kms_eth_selector(sig, sel);
    KMS_GUARD(kms_eth_call(url, &st->o, st->contract, sel, 4, block, &ret, &ret_len));
    KMS_GUARD(check_code(st, ret_len));
    rc = kms_eth_abi_decode_string(ret, ret_len, s);
    if (rc < 0)
        rc = kms_err_wrap(KMS_ERR_AUTH_RESPONSE,
                          "%s returned undecodable data (is %s a "
                          "DstackKms contract?)",
                          sig, st->contract_str);
out:
    free(ret);
    return rc;
}

struct check_arg {
    int is_kms;
    const uint8_t *calldata;
    size_t calldata_len;
};

/* Canonical check answer: allowed byte, reason NUL, gateway NUL. */
static int q_check(struct eth_state *st, const char *url, const char *block, void *arg,
                   struct answer *a)
{
    struct check_arg *c = arg;
    uint8_t *ret = NULL;
    size_t ret_len = 0;
    char *reason = NULL, *gw = NULL;
    char revert[600];
    int allowed = 0, rc = 0;

    rc = kms_eth_call(url, &st->o, st->contract, c->calldata, c->calldata_len, block, &ret,
                      &ret_len);
    if (rc == KMS_ERR_ETH_REVERT) {
        /* As auth-eth: a reverting policy call is a denial carrying the error message. */
        snprintf(revert, sizeof(revert), "contract call reverted: %s", kms_err_detail());
        reason = strdup(revert);
        KMS_GUARD_PTR(reason);
        rc = 0;
    } else if (rc < 0) {
        goto out;
    } else {
        KMS_GUARD(check_code(st, ret_len));
        rc = kms_eth_abi_decode_bool_string(ret, ret_len, &allowed, &reason);
        if (rc < 0) {
            rc = kms_err_wrap(KMS_ERR_AUTH_RESPONSE,
                              "%s returned undecodable data (is %s a DstackKms contract?)",
                              c->is_kms ? "isKmsAllowed" : "isAppAllowed", st->contract_str);
            goto out;
        }
    }
    KMS_GUARD(read_string_view(st, url, block, "gatewayAppId()", &gw));
    KMS_GUARD(kms_buf_put_u8(&a->blob, (uint8_t)allowed));
    KMS_GUARD(kms_buf_put(&a->blob, reason, strlen(reason) + 1));
    KMS_GUARD(kms_buf_put(&a->blob, gw, strlen(gw) + 1));
    if (allowed)
        snprintf(a->summary, sizeof(a->summary), "allowed (gatewayAppId \"%.40s\")", gw);
    else
        snprintf(a->summary, sizeof(a->summary), "denied: %.120s", reason);
out:
    free(ret);
    free(reason);
    free(gw);
    return rc;
}

/* Canonical info answer: chain id (8 bytes BE), gateway NUL, implementation (20 bytes). */
static int q_info(struct eth_state *st, const char *url, const char *block, void *arg,
                  struct answer *a)
{
    uint8_t sel[4], impl[20], *ret = NULL;
    size_t ret_len = 0;
    uint64_t id = 0;
    char *gw = NULL;
    int rc = 0;

    (void)arg;
    KMS_GUARD(kms_eth_chain_id(url, &st->o, &id));
    KMS_GUARD(read_string_view(st, url, block, "gatewayAppId()", &gw));
    kms_eth_selector("appImplementation()", sel);
    KMS_GUARD(kms_eth_call(url, &st->o, st->contract, sel, 4, block, &ret, &ret_len));
    KMS_GUARD(check_code(st, ret_len));
    rc = kms_eth_abi_decode_address(ret, ret_len, impl);
    if (rc < 0) {
        rc = kms_err_wrap(KMS_ERR_AUTH_RESPONSE, "appImplementation() returned undecodable data");
        goto out;
    }
    KMS_GUARD(kms_buf_put_u64be(&a->blob, id));
    KMS_GUARD(kms_buf_put(&a->blob, gw, strlen(gw) + 1));
    KMS_GUARD(kms_buf_put(&a->blob, impl, 20));
    snprintf(a->summary, sizeof(a->summary), "chain %llu, gatewayAppId \"%.40s\"",
             (unsigned long long)id, gw);
out:
    free(ret);
    free(gw);
    return rc;
}

/* ---------------------------------------------------------------- cache */

static void cache_key(int is_kms, const uint8_t *calldata, size_t n, uint8_t key[32])
{
    struct kms_keccak k;
    uint8_t b = (uint8_t)is_kms;

    kms_keccak256_init(&k);
    kms_keccak256_update(&k, &b, 1);
    kms_keccak256_update(&k, calldata, n);
    kms_keccak256_final(&k, key);
}

static void cache_val_free(void *p)
{
    kms_free_secret(p, sizeof(struct kms_auth_result));
}

static int cache_get(struct eth_state *st, const uint8_t key[32], struct kms_auth_result *out)
{
    const struct kms_auth_result *r;
    void *ref;
    int hit = 0;

    if (st->cache == NULL)
        return 0;
    r = kms_lru_get(st->cache, key, now_ms(), &ref);
    if (r != NULL && r->allowed) {
        *out = *r;
        hit = 1;
    }
    kms_lru_release(st->cache, ref);
    return hit;
}

/* Caching is an optimisation: a failure to cache is not an error of the check. */
static void cache_put(struct eth_state *st, const uint8_t key[32], const struct kms_auth_result *r)
{
    struct kms_auth_result *v;

    if (st->cache == NULL || !r->allowed)
        return;
    v = malloc(sizeof(*v));
    if (v == NULL)
        return;
    *v = *r;
    /* served while now < put time + TTL (monotonic ms) */
    if (kms_lru_put(st->cache, key, v, KMS_LRU_NO_START, now_ms() + st->ttl_ms - 1, NULL) < 0)
        kms_err_clear();
}

/* ---------------------------------------------------------------- backend ops */

static int eth_check(void *priv, int is_kms, const struct kms_boot_info *bi,
                     struct kms_auth_result *out)
{
    struct eth_state *st = priv;
    struct kms_eth_boot_info eb;
    struct kms_buf cd = {0}, ans = {0};
    struct check_arg ca;
    uint8_t key[32];
    const char *reason, *gw;
    size_t rlen;
    int rc = 0;

    rc = kms_eth_boot_info_from(bi, &eb);
    if (rc == KMS_ERR_TOOBIG) {
        /* auth-eth: ethers rejects an over-long value, which becomes a denial. */
        char why[400];

        snprintf(why, sizeof(why), "invalid boot info: %s", kms_err_detail());
        rc = kms_auth_result_set(out, 0, why, "");
        goto out;
    }
    KMS_GUARD(rc);
    KMS_GUARD(kms_eth_abi_boot_info_call(is_kms, &eb, &cd));
    cache_key(is_kms, cd.data, cd.len, key);
    if (cache_get(st, key, out))
        goto out;
    ca.is_kms = is_kms;
    ca.calldata = cd.data;
    ca.calldata_len = cd.len;
    KMS_GUARD(run_policy(st, q_check, &ca, &ans));
    /* The blob was built by q_check: allowed, reason\0, gateway\0. */
    KMS_ENSURE(ans.len >= 3 && ans.data[ans.len - 1] == '\0', KMS_ERR_INTERNAL,
               "eth auth: bad answer");
    reason = (const char *)ans.data + 1;
    rlen = strlen(reason);
    KMS_ENSURE(1 + rlen + 1 < ans.len, KMS_ERR_INTERNAL, "eth auth: bad answer");
    gw = reason + rlen + 1;
    KMS_GUARD(kms_auth_result_set(out, ans.data[0] == 1, reason, gw));
    cache_put(st, key, out);
out:
    kms_buf_free(&cd);
    kms_buf_free(&ans);
    return rc;
}

static int eth_info(void *priv, struct kms_auth_info *out)
{
    struct eth_state *st = priv;
    struct kms_buf ans = {0};
    char impl[43];
    const char *gw;
    uint64_t id = 0;
    int rc = 0;

    rc = run_policy(st, q_info, NULL, &ans);
    pthread_mutex_lock(&st->mu);
    if (rc == 0) {
        st->last_info.len = 0;
        if (kms_buf_put(&st->last_info, ans.data, ans.len) < 0)
            st->last_info.len = 0;
    } else if (st->last_info.len > 0) {
        /* Informational (GetMeta): the last good answer beats no answer; decisions never
         * take this path. */
        KMS_WARN("eth auth: RPC unavailable (%s); GetMeta uses the last good contract info",
                 kms_err_detail());
        kms_buf_free(&ans);
        rc = kms_buf_put(&ans, st->last_info.data, st->last_info.len);
    }
    pthread_mutex_unlock(&st->mu);
    KMS_GUARD(rc);
    KMS_ENSURE(ans.len >= 8 + 1 + 20 && ans.data[ans.len - 21] == '\0', KMS_ERR_INTERNAL,
               "eth auth: bad info answer");
    for (int i = 0; i < 8; i++)
        id = (id << 8) | ans.data[i];
    gw = (const char *)ans.data + 8;
    kms_eth_addr_checksum(ans.data + ans.len - 20, impl);
    out->is_dev = 0;
    out->chain_id = id;
    out->status = strdup("ok");
    out->kms_contract_addr = strdup(st->contract_str);
    out->gateway_app_id = strdup(gw);
    out->app_implementation = strdup(impl);
    KMS_ENSURE(out->status != NULL && out->kms_contract_addr != NULL &&
                   out->gateway_app_id != NULL && out->app_implementation != NULL,
               KMS_ERR_NOMEM, "out of memory");
out:
    kms_buf_free(&ans);
    return rc;
}

static const struct kms_auth_ops eth_ops = {
    .name = "eth",
    .check = eth_check,
    .info = eth_info,
    .free = state_free,
};

int kms_auth_eth_new(const struct kms_auth_cfg *cfg, struct kms_auth **out)
{
    struct eth_state *st = NULL;
    const char *policy, *tag;
    int rc = 0;

    KMS_ENSURE(cfg != NULL && out != NULL, KMS_ERR_INVAL, "eth auth: missing argument");
    *out = NULL;
    KMS_ENSURE(cfg->eth_n_rpc_urls >= 1 && cfg->eth_rpc_urls != NULL, KMS_ERR_INVAL,
               "auth_api eth: no RPC URL configured; set at least one Ethereum JSON-RPC URL");
    KMS_ENSURE(cfg->eth_n_rpc_urls <= KMS_ETH_MAX_URLS, KMS_ERR_INVAL,
               "auth_api eth: %zu RPC URLs configured, at most %d allowed", cfg->eth_n_rpc_urls,
               KMS_ETH_MAX_URLS);
    st = calloc(1, sizeof(*st));
    KMS_GUARD_PTR(st);
    pthread_mutex_init(&st->mu, NULL);
    st->n = cfg->eth_n_rpc_urls;
    st->urls = calloc(st->n, sizeof(*st->urls));
    st->labels = calloc(st->n, sizeof(*st->labels));
    st->chain_ok = calloc(st->n, sizeof(*st->chain_ok));
    KMS_GUARD_PTR(st->urls);
    KMS_GUARD_PTR(st->labels);
    KMS_GUARD_PTR(st->chain_ok);
    for (size_t i = 0; i < st->n; i++) {
        const char *u = cfg->eth_rpc_urls[i];

        KMS_ENSURE(u != NULL && (strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0),
                   KMS_ERR_INVAL, "auth_api eth: RPC URL %zu must start with http:// or https://",
                   i + 1);
        st->urls[i] = strdup(u);
        st->labels[i] = label_dup(u);
        KMS_GUARD_PTR(st->urls[i]);
        KMS_GUARD_PTR(st->labels[i]);
    }
    rc = kms_eth_parse_address(cfg->eth_contract, st->contract);
    if (rc < 0) {
        rc = kms_err_wrap(KMS_ERR_INVAL, "auth_api eth: DstackKms contract address");
        goto out;
    }
    kms_eth_addr_checksum(st->contract, st->contract_str);

    policy = cfg->eth_policy != NULL ? cfg->eth_policy : "failover";
    if (strcmp(policy, "quorum") == 0) {
        st->quorum = 1;
        st->k = cfg->eth_quorum_k != 0 ? cfg->eth_quorum_k : (unsigned)(st->n / 2 + 1);
        KMS_ENSURE(st->k <= st->n, KMS_ERR_INVAL,
                   "auth_api eth: quorum of %u needs at least that many RPC URLs (have %zu)", st->k,
                   st->n);
    } else {
        KMS_ENSURE(strcmp(policy, "failover") == 0, KMS_ERR_INVAL,
                   "auth_api eth: unknown RPC policy \"%.32s\"; use \"failover\" or \"quorum\"",
                   policy);
    }
    tag = cfg->eth_block_tag != NULL ? cfg->eth_block_tag : "latest";
    KMS_ENSURE(strcmp(tag, "latest") == 0 || strcmp(tag, "safe") == 0 ||
                   strcmp(tag, "finalized") == 0,
               KMS_ERR_INVAL,
               "auth_api eth: unknown block tag \"%.32s\"; use latest, safe or finalized", tag);
    snprintf(st->tag, sizeof(st->tag), "%s", tag);
    st->chain_id = cfg->eth_chain_id;
    st->o.timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    st->o.retries = cfg->eth_retries == 0 ? 1 : (cfg->eth_retries < 0 ? 0 : cfg->eth_retries);
    KMS_ENSURE(st->o.retries <= 10, KMS_ERR_INVAL, "auth_api eth: at most 10 retries");
    st->ttl_ms = cfg->eth_cache_ttl_ms == 0 ? DEFAULT_TTL_MS : cfg->eth_cache_ttl_ms;
    if (st->ttl_ms > 0) {
        st->cache = kms_lru_new(CACHE_SLOTS, cache_val_free);
        KMS_GUARD_PTR(st->cache);
    }
    KMS_ENSURE(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK, KMS_ERR_INTERNAL,
               "libcurl global initialisation failed");
    rc = kms_auth_wrap(&eth_ops, st, 0, out);
    st = NULL; /* owned by the handle, or freed by kms_auth_wrap */
out:
    state_free(st);
    return rc;
}
