/* attest: AIA issuer fetching for the GCP AK chain (aia.c). Not a public API. */
#ifndef KMS_ATTEST_AIA_H
#define KMS_ATTEST_AIA_H

#include <openssl/x509.h>

#include "attest/attest.h"

/* AIA path building: when a chain does not verify with the configured anchors alone, issuer
 * certificates are fetched from the caIssuers URLs of the Authority Information Access
 * extension (http/https only, no redirects) and offered to the verifier as untrusted
 * intermediates; the anchor is always a pinned root. Limits: KMS_AIA_MAX_HOPS fetches per
 * verification, all within one budget of timeout_ms; an answer of at most KMS_AIA_MAX_CERT
 * bytes holding one DER certificate or a PEM CERTIFICATE block; a URL of at most
 * KMS_AIA_MAX_URL printable ASCII characters. Certificates that completed a verified chain are
 * cached per URL (at most max_entries, each until min(its notAfter, now + max_age_s) on the wall
 * clock). Thread-safe. */
#define KMS_AIA_MAX_HOPS 3
#define KMS_AIA_MAX_CERT (64u * 1024u)
#define KMS_AIA_MAX_URL 2048u
#define KMS_AIA_TIMEOUT_MS 5000L
#define KMS_AIA_CACHE_ENTRIES 32u
#define KMS_AIA_MAX_AGE_S (24L * 3600L)

struct kms_aia;

struct kms_aia_opts {
    long timeout_ms;    /* budget for the fetches of one verification; 0 = KMS_AIA_TIMEOUT_MS */
    size_t max_entries; /* cached certificates; 0 = KMS_AIA_CACHE_ENTRIES */
    long max_age_s;     /* longest a cached certificate is reused; 0 = KMS_AIA_MAX_AGE_S */
};

struct kms_aia_stats {
    unsigned long hits, misses, fetches; /* cache lookups and HTTP requests made */
    size_t entries;                      /* cached certificates now */
};

/* o may be NULL (defaults). KMS_ERR_INVAL for a timeout outside 0..600000 ms. Caller frees *out
 * with kms_aia_free (or hands it to kms_attest_ctx_set_aia). */
int kms_aia_new(const struct kms_aia_opts *o, struct kms_aia **out);
void kms_aia_free(struct kms_aia *a); /* accepts NULL */
void kms_aia_get_stats(struct kms_aia *a, struct kms_aia_stats *st);
void kms_aia_flush(struct kms_aia *a);
/* Replaces ctx's fetcher (ctx takes a, frees the previous one); NULL turns fetching off. */
void kms_attest_ctx_set_aia(struct kms_attest_ctx *ctx, struct kms_aia *a);
/* 1 when url may be fetched: http:// or https://, printable ASCII, at most KMS_AIA_MAX_URL. */
int kms_aia_url_allowed(const char *url);
/* kms_attest_verify_chain, then, while it fails with KMS_ERR_ATT_CHAIN and ctx->aia is set,
 * fetch the issuer of the top of the partial path from its caIssuers URL and retry. Errors:
 * those of kms_attest_verify_chain; KMS_ERR_ATT_CHAIN with a detail naming the URL and why when
 * a fetch is refused, fails, times out, or answers something that is not the issuer. */
int kms_aia_verify_chain(const struct kms_attest_ctx *ctx, enum kms_root_kind kind, X509 *leaf,
                         STACK_OF(X509) * intermediates, const char *what, int *is_sim);

#endif
