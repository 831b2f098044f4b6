/*
 * AIA path building (internal.h, "aia" section): completes a certificate chain that does not
 * verify with the configured anchors alone by fetching issuer certificates from the
 * Authority Information Access caIssuers URLs of the certificates themselves, as GCP vTPM AK
 * certificates need (their "EK/AK CA Intermediate" is not in the evidence).
 *
 * A fetched certificate is untrusted input: it only joins the untrusted intermediates handed
 * to the chain verifier, so the anchor is still a pinned root. Limits: http/https only, no
 * redirects, KMS_AIA_MAX_HOPS fetches per verification, all within one time budget, each
 * answer at most KMS_AIA_MAX_CERT bytes. Certificates that completed a verified chain are
 * cached per URL, bounded in count and by min(notAfter, max age) on the wall clock.
 */
#include <ctype.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "attest/aia.h"
#include "common/lru.h"
#include "attest/internal.h"
#include "common/buf.h"
#include "common/fetch.h"

#define AIA_DETAIL_MAX 1024
#define AIA_NAME_MAX 160

#define AIA_MAX_HOSTS 8
#define AIA_MAX_HOST_LEN 253

struct kms_aia {
    struct kms_aia_opts o;
    char hosts[AIA_MAX_HOSTS][AIA_MAX_HOST_LEN + 1]; /* allowed host suffixes; none = any */
    size_t n_hosts;
    struct kms_lru *cache; /* key SHA-256(url), value X509* */
    pthread_mutex_t mu;    /* guards st */
    struct kms_aia_stats st;
};

static void free_cert(void *p)
{
    X509_free(p);
}

int kms_aia_new(const struct kms_aia_opts *o, struct kms_aia **out)
{
    struct kms_aia *a = NULL;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(o == NULL || (o->timeout_ms >= 0 && o->timeout_ms <= 600000 && o->max_age_s >= 0),
               KMS_ERR_INVAL, "AIA options: timeout must be 0..600000 ms and max age >= 0");
    a = calloc(1, sizeof(*a));
    KMS_GUARD_PTR(a);
    if (o != NULL)
        a->o = *o;
    if (a->o.timeout_ms == 0)
        a->o.timeout_ms = KMS_AIA_TIMEOUT_MS;
    if (a->o.max_entries == 0)
        a->o.max_entries = KMS_AIA_CACHE_ENTRIES;
    if (a->o.max_age_s == 0)
        a->o.max_age_s = KMS_AIA_MAX_AGE_S;
    a->cache = kms_lru_new(a->o.max_entries, free_cert);
    KMS_GUARD_PTR(a->cache);
    if (pthread_mutex_init(&a->mu, NULL) != 0) {
        kms_lru_free(a->cache);
        a->cache = NULL;
        rc = kms_err_set(KMS_ERR_INTERNAL, "pthread_mutex_init failed");
        goto out;
    }
    *out = a;
    a = NULL;
out:
    if (a != NULL) {
        kms_lru_free(a->cache);
        free(a);
    }
    return rc;
}

void kms_aia_free(struct kms_aia *a)
{
    if (a == NULL)
        return;
    kms_lru_free(a->cache);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

void kms_aia_get_stats(struct kms_aia *a, struct kms_aia_stats *st)
{
    memset(st, 0, sizeof(*st));
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    *st = a->st;
    pthread_mutex_unlock(&a->mu);
    st->entries = kms_lru_count(a->cache);
}

void kms_aia_flush(struct kms_aia *a)
{
    if (a != NULL)
        kms_lru_flush(a->cache);
}

static void count(struct kms_aia *a, unsigned long *field)
{
    pthread_mutex_lock(&a->mu);
    (*field)++;
    pthread_mutex_unlock(&a->mu);
}

void kms_attest_ctx_set_aia(struct kms_attest_ctx *ctx, struct kms_aia *a)
{
    kms_aia_free(ctx->aia);
    ctx->aia = a;
}

int kms_attest_ctx_set_aia_fetch(struct kms_attest_ctx *ctx, int enabled, long timeout_ms)
{
    struct kms_aia_opts o = {.timeout_ms = timeout_ms};
    struct kms_aia *a = NULL;
    int rc = 0;

    if (!enabled) {
        kms_attest_ctx_set_aia(ctx, NULL);
        return 0;
    }
    KMS_GUARD(kms_aia_new(&o, &a));
    kms_attest_ctx_set_aia(ctx, a);
out:
    return rc;
}

/* ---------------------------------------------------------------- URL and HTTP */

int kms_aia_url_allowed(const char *url)
{
    size_t n = strlen(url);

    if (n == 0 || n > KMS_AIA_MAX_URL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
            return 0;
    }
    return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

/* Host part of an http(s) URL (lowercased into host). 0 when it has userinfo or is empty. */
static int url_host(const char *url, char *host, size_t cap)
{
    const char *p = strstr(url, "://");
    size_t n = 0;

    if (p == NULL)
        return 0;
    p += 3;
    while (p[n] != '\0' && p[n] != '/' && p[n] != ':' && p[n] != '?' && p[n] != '#') {
        if (p[n] == '@' || n + 1 >= cap)
            return 0;
        host[n] = (char)tolower((unsigned char)p[n]);
        n++;
    }
    host[n] = '\0';
    return n > 0;
}

/* With an allow-list, the URL's host must equal an entry or end with "." + entry. */
static int host_allowed(const struct kms_aia *a, const char *url)
{
    char host[AIA_MAX_HOST_LEN + 1];
    size_t hl;

    if (a->n_hosts == 0)
        return 1;
    if (!url_host(url, host, sizeof(host)))
        return 0;
    hl = strlen(host);
    for (size_t i = 0; i < a->n_hosts; i++) {
        size_t sl = strlen(a->hosts[i]);

        if (hl == sl && strcmp(host, a->hosts[i]) == 0)
            return 1;
        if (hl > sl && host[hl - sl - 1] == '.' && strcmp(host + hl - sl, a->hosts[i]) == 0)
            return 1;
    }
    return 0;
}

int kms_attest_ctx_set_aia_hosts(struct kms_attest_ctx *ctx, const char *const *suffixes, size_t n)
{
    struct kms_aia *a = ctx->aia;

    if (a == NULL)
        return kms_err_set(KMS_ERR_STATE, "AIA fetching is off: enable it before its host list");
    if (n > AIA_MAX_HOSTS)
        return kms_err_set(KMS_ERR_TOOBIG, "at most %d AIA hosts", AIA_MAX_HOSTS);
    for (size_t i = 0; i < n; i++) {
        size_t l = suffixes[i] != NULL ? strlen(suffixes[i]) : 0;

        if (l == 0 || l > AIA_MAX_HOST_LEN ||
            strspn(suffixes[i],
                   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != l ||
            suffixes[i][0] == '.')
            return kms_err_set(KMS_ERR_INVAL, "AIA host '%s' is not a DNS name or suffix",
                               suffixes[i] != NULL ? suffixes[i] : "");
    }
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(suffixes[i]);

        for (size_t j = 0; j <= l; j++)
            a->hosts[i][j] = (char)tolower((unsigned char)suffixes[i][j]);
    }
    a->n_hosts = n;
    return 0;
}

/* The first caIssuers URI of cert that kms_aia_url_allowed accepts (copied into url), else
 * *refused receives the first caIssuers URI present (printable part, for the message).
 * Returns 1 when url was filled. */
static int ca_issuers_url(const struct kms_aia *a, X509 *cert, char *url, size_t cap, char *refused,
                          size_t rcap)
{
    AUTHORITY_INFO_ACCESS *aia = X509_get_ext_d2i(cert, NID_info_access, NULL, NULL);
    int found = 0;

    url[0] = '\0';
    refused[0] = '\0';
    for (int i = 0; aia != NULL && i < sk_ACCESS_DESCRIPTION_num(aia) && !found; i++) {
        ACCESS_DESCRIPTION *ad = sk_ACCESS_DESCRIPTION_value(aia, i);
        const ASN1_IA5STRING *s;
        char tmp[KMS_AIA_MAX_URL + 1];
        size_t len;

        if (OBJ_obj2nid(ad->method) != NID_ad_ca_issuers || ad->location->type != GEN_URI)
            continue;
        s = ad->location->d.uniformResourceIdentifier;
        len = (size_t)ASN1_STRING_length(s);
        if (len > KMS_AIA_MAX_URL)
            len = KMS_AIA_MAX_URL;
        memcpy(tmp, ASN1_STRING_get0_data(s), len);
        tmp[len] = '\0';
        /* an embedded NUL or an over-long URL fails the check below */
        if ((size_t)ASN1_STRING_length(s) == strlen(tmp) && kms_aia_url_allowed(tmp) &&
            host_allowed(a, tmp)) {
            snprintf(url, cap, "%s", tmp);
            found = 1;
        } else if (refused[0] == '\0') {
            size_t j = 0;

            for (size_t k = 0; k < len && j + 1 < rcap && k < 200; k++)
                refused[j++] = (tmp[k] > 0x20 && tmp[k] < 0x7f) ? tmp[k] : '?';
            refused[j] = '\0';
            if (refused[0] == '\0')
                snprintf(refused, rcap, "(empty)");
        }
    }
    AUTHORITY_INFO_ACCESS_free(aia);
    ERR_clear_error();
    return found;
}

/* Parses one certificate: exactly one DER certificate, or the first PEM CERTIFICATE block. */
static X509 *parse_cert(const uint8_t *p, size_t len)
{
    const uint8_t *q = p;
    X509 *x = d2i_X509(NULL, &q, (long)len);
    BIO *bio;

    if (x != NULL && q == p + len)
        return x;
    X509_free(x);
    x = NULL;
    ERR_clear_error();
    if (memmem(p, len, "-----BEGIN CERTIFICATE-----", 27) == NULL)
        return NULL;
    bio = BIO_new_mem_buf(p, (int)len);
    if (bio != NULL)
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    ERR_clear_error();
    return x;
}

/* GET url within timeout_ms; on success *out is the certificate it answered. On failure the
 * error detail says why (without the URL; the caller names it). */
static int http_fetch_cert(const char *url, long timeout_ms, X509 **out)
{
    struct kms_fetch_req req = {0};
    struct kms_fetch_resp fr = {0};
    int rc = 0;

    *out = NULL;
    req.url = url;
    req.timeout_ms = timeout_ms;
    req.max_body = KMS_AIA_MAX_CERT;
    req.user_agent = "kmsd-aia";
    rc = kms_fetch(&req, &fr);
    KMS_ENSURE(rc != KMS_ERR_TIMEOUT, KMS_ERR_TIMEOUT, "no answer within %ld ms", timeout_ms);
    KMS_ENSURE(rc != KMS_ERR_TOOBIG, KMS_ERR_TOOBIG, "the answer exceeds %u bytes",
               KMS_AIA_MAX_CERT);
    KMS_ENSURE(rc != KMS_ERR_NET, KMS_ERR_NET, "%s", curl_easy_strerror(fr.cc));
    KMS_GUARD(rc);
    KMS_ENSURE(fr.status == 200, KMS_ERR_NET, "the server answered HTTP %ld", fr.status);
    *out = parse_cert(fr.body.data, fr.body.len);
    KMS_ENSURE(*out != NULL, KMS_ERR_PARSE,
               "the answer (%zu bytes) is neither a DER nor a PEM certificate", fr.body.len);
out:
    kms_fetch_resp_free(&fr);
    return rc;
}

static long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void url_key(const char *url, uint8_t key[32])
{
    EVP_Digest(url, strlen(url), key, NULL, EVP_sha256(), NULL);
}

/* The cached certificate for url (a new reference) or NULL. */
static X509 *cache_get(struct kms_aia *a, const char *url)
{
    uint8_t key[32];
    void *ref;
    X509 *x;

    url_key(url, key);
    x = kms_lru_get(a->cache, key, time(NULL), &ref);
    if (x != NULL && X509_up_ref(x) != 1)
        x = NULL;
    kms_lru_release(a->cache, ref);
    count(a, x != NULL ? &a->st.hits : &a->st.misses);
    return x;
}

/* Caches cert (the cache takes its own reference) until min(notAfter, now + max age). */
static void cache_put(struct kms_aia *a, const char *url, X509 *cert)
{
    uint8_t key[32];
    struct tm tm;
    time_t now = time(NULL);
    time_t until = now + (time_t)a->o.max_age_s;
    time_t na;

    if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) {
        ERR_clear_error();
        return;
    }
    na = timegm(&tm);
    if (na < until)
        until = na;
    if (until <= now || X509_up_ref(cert) != 1)
        return;
    url_key(url, key);
    if (kms_lru_put(a->cache, key, cert, 0, until, NULL) < 0)
        kms_err_clear(); /* caching is an optimisation; the verification already succeeded */
}

/* ---------------------------------------------------------------- path building */

static void name_of(X509 *x, char *out, size_t cap)
{
    BIO *bio = BIO_new(BIO_s_mem());
    long n = 0;
    char *p = NULL;

    out[0] = '\0';
    if (bio != NULL && X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0)
        n = BIO_get_mem_data(bio, &p);
    if (n > 0 && p != NULL)
        snprintf(out, cap, "\"%.*s\"", (int)(n < (long)cap - 3 ? n : (long)cap - 3), p);
    else
        snprintf(out, cap, "(unnamed)");
    BIO_free(bio);
    ERR_clear_error();
}

/* The top of the partial path leaf → issuers in untrusted (bounded walk). */
static X509 *path_top(X509 *leaf, STACK_OF(X509) * untrusted)
{
    X509 *top = leaf;

    for (int depth = 0; depth < sk_X509_num(untrusted); depth++) {
        X509 *next = NULL;

        if (X509_check_issued(top, top) == X509_V_OK)
            break; /* self-issued */
        for (int i = 0; i < sk_X509_num(untrusted) && next == NULL; i++) {
            X509 *c = sk_X509_value(untrusted, i);

            if (c != top && X509_check_issued(c, top) == X509_V_OK)
                next = c;
        }
        if (next == NULL)
            break;
        top = next;
    }
    return top;
}

/* 1 when top is self-issued or issued by one of ctx's roots of kind: fetching cannot help. */
static int path_ends(const struct kms_attest_ctx *ctx, enum kms_root_kind kind, X509 *top)
{
    if (X509_check_issued(top, top) == X509_V_OK)
        return 1;
    for (size_t i = 0; i < ctx->n_roots[kind]; i++) {
        if (X509_check_issued(ctx->roots[kind][i].cert, top) == X509_V_OK)
            return 1;
    }
    return 0;
}

int kms_aia_verify_chain(const struct kms_attest_ctx *ctx, enum kms_root_kind kind, X509 *leaf,
                         STACK_OF(X509) * intermediates, const char *what, int *is_sim)
{
    struct kms_aia *a = ctx->aia;
    STACK_OF(X509) *untrusted = NULL;
    STACK_OF(X509) *fetched = NULL; /* owned references, in fetch order */
    char *urls[KMS_AIA_MAX_HOPS] = {NULL};
    char base[AIA_DETAIL_MAX];
    char why[AIA_DETAIL_MAX];
    char url[KMS_AIA_MAX_URL + 1];
    char refused[256];
    char subj[AIA_NAME_MAX];
    X509 *top;
    X509 *cert = NULL;
    long deadline;
    int hop;
    int rc;

    rc = kms_attest_verify_chain(ctx, kind, leaf, intermediates, what, is_sim);
    if (rc != KMS_ERR_ATT_CHAIN || a == NULL || ctx->n_roots[kind] == 0)
        return rc;
    snprintf(base, sizeof(base), "%s", kms_err_detail());
    rc = 0;
    deadline = mono_ms() + a->o.timeout_ms;
    untrusted = intermediates != NULL ? sk_X509_dup(intermediates) : sk_X509_new_null();
    fetched = sk_X509_new_null();
    KMS_GUARD_PTR(untrusted);
    KMS_GUARD_PTR(fetched);
    top = path_top(leaf, untrusted);
    for (hop = 0;; hop++) {
        long left = deadline - mono_ms();

        if (path_ends(ctx, kind, top)) {
            /* hop 0: nothing to fetch, the error stands; later: the last verification's error */
            rc = hop == 0 ? kms_err_set(KMS_ERR_ATT_CHAIN, "%s", base)
                          : kms_err_set(KMS_ERR_ATT_CHAIN, "%s (after %d AIA fetch%s)", base, hop,
                                        hop == 1 ? "" : "es");
            goto out;
        }
        name_of(top, subj, sizeof(subj));
        KMS_ENSURE(hop < KMS_AIA_MAX_HOPS, KMS_ERR_ATT_CHAIN,
                   "%s; AIA: no pinned root reached after %d issuer fetches (limit), path ends at "
                   "%s",
                   base, hop, subj);
        if (!ca_issuers_url(a, top, url, sizeof(url), refused, sizeof(refused))) {
            KMS_ENSURE(refused[0] == '\0', KMS_ERR_ATT_CHAIN,
                       "%s; AIA: refused to fetch the issuer of %s from %s: only http and https "
                       "caIssuers URLs on the allowed hosts are followed",
                       base, subj, refused);
            rc = kms_err_set(KMS_ERR_ATT_CHAIN,
                             "%s; AIA: %s carries no caIssuers URL to fetch its issuer from", base,
                             subj);
            goto out;
        }
        KMS_ENSURE(left > 0, KMS_ERR_ATT_CHAIN,
                   "%s; AIA: time budget of %ld ms spent before fetching %s", base, a->o.timeout_ms,
                   url);
        cert = cache_get(a, url);
        if (cert == NULL) {
            count(a, &a->st.fetches);
            if (http_fetch_cert(url, left, &cert) < 0) {
                snprintf(why, sizeof(why), "%s", kms_err_detail());
                rc = kms_err_set(KMS_ERR_ATT_CHAIN,
                                 "%s; AIA: fetching the issuer of %s from %s failed: %s", base,
                                 subj, url, why);
                goto out;
            }
        }
        KMS_ENSURE(X509_check_issued(cert, top) == X509_V_OK, KMS_ERR_ATT_CHAIN,
                   "%s; AIA: the certificate served at %s is not the issuer of %s", base, url,
                   subj);
        KMS_ENSURE(sk_X509_push(fetched, cert) > 0, KMS_ERR_NOMEM, "out of memory");
        top = cert;
        cert = NULL;
        KMS_ENSURE(sk_X509_push(untrusted, top) > 0, KMS_ERR_NOMEM, "out of memory");
        urls[hop] = strdup(url);
        KMS_GUARD_PTR(urls[hop]);
        rc = kms_attest_verify_chain(ctx, kind, leaf, untrusted, what, is_sim);
        if (rc == 0) {
            for (int i = 0; i <= hop; i++)
                cache_put(a, urls[i], sk_X509_value(fetched, i));
            goto out;
        }
        if (rc != KMS_ERR_ATT_CHAIN)
            goto out; /* expired: the path exists, the time is wrong; fetching more cannot help */
        snprintf(base, sizeof(base), "%s", kms_err_detail());
        rc = 0;
    }
out:
    X509_free(cert);
    for (int i = 0; i < KMS_AIA_MAX_HOPS; i++)
        free(urls[i]);
    sk_X509_pop_free(fetched, X509_free);
    sk_X509_free(untrusted);
    return rc;
}
