/* attest-internal declarations shared by the files of this module. Not a public API. */
#ifndef KMS_ATTEST_INTERNAL_H
#define KMS_ATTEST_INTERNAL_H

#include <openssl/x509.h>

#include "attest/attest.h"

#define KMS_ATTEST_MAX_ROOTS 8

struct kms_attest_root {
    X509 *cert;
    int is_sim;
};

struct kms_attest_ctx {
    struct kms_attest_root roots[3][KMS_ATTEST_MAX_ROOTS];
    size_t n_roots[3];
    time_t now;                /* 0 = current time */
    int nitro_device_id_fixed; /* 0 = reference quirk */
    /* ---- collateral (owner: collateral) ---- */
    struct kms_collateral_source *coll_src; /* borrowed; NULL = no TCB evaluation */
    /* ---- end collateral ---- */
    /* ---- aia (owner: aia) ---- */
    struct kms_aia *aia; /* owned; NULL = no AIA fetching (default) */
    /* ---- end aia ---- */
};

/* The verification time of ctx. */
time_t kms_attest_now(const struct kms_attest_ctx *ctx);

/* Verifies leaf (with untrusted intermediates, may be NULL) to one of ctx's roots of `kind`,
 * at kms_attest_now(ctx). *is_sim is set when the anchor is a simulation root.
 * KMS_ERR_ATT_EXPIRED when a certificate is outside its validity, else KMS_ERR_ATT_CHAIN;
 * `what` names the chain in the detail ("PCK chain", "Nitro chain", ...). */
int kms_attest_verify_chain(const struct kms_attest_ctx *ctx, enum kms_root_kind kind, X509 *leaf,
                            STACK_OF(X509) * intermediates, const char *what, int *is_sim);

/* kms_attest_verify_chain that also returns the verified chain leaf .. anchor in *chain
 * (caller frees with sk_X509_pop_free; NULL on error). */
int kms_attest_verify_chain_get(const struct kms_attest_ctx *ctx, enum kms_root_kind kind,
                                X509 *leaf, STACK_OF(X509) * intermediates, const char *what,
                                int *is_sim, STACK_OF(X509) * *chain);

/* The signature and binding checks of every TDX quote verification (tdx_quote.c): parses the
 * quote into *q, then checks the quote signature by the attestation key, the QE report signature
 * by the PCK leaf (the first PEM certificate the quote carries) and that the QE report data is
 * SHA-256(attestation key || QE auth data) || 0^32. *pck_certs receives the certificates the
 * quote carries, leaf first (caller frees with sk_X509_pop_free; NULL on error). */
int kms_tdx_quote_check_sigs(const uint8_t *quote, size_t len, struct kms_tdx_quote *q,
                             STACK_OF(X509) * *pck_certs);
/* The PCK chain (pck_certs as above) to a pinned TDX root of ctx at its verification time:
 * *chain = leaf .. root (caller frees), *is_sim. Errors of kms_attest_verify_chain. */
int kms_tdx_pck_chain(const struct kms_attest_ctx *ctx, STACK_OF(X509) * pck_certs,
                      STACK_OF(X509) * *chain, int *is_sim);

/* Nitro (nitro.c): verifies a COSE_Sign1 NSM document: alg ES384, chain to the Nitro root,
 * signature, digest SHA384, PCR sizes, user_data == report_data. Fills mode, pcr[0..2] (48 B),
 * module_id, sim. */
int kms_nitro_verify(const struct kms_attest_ctx *ctx, const uint8_t *cose, size_t len,
                     const uint8_t report_data[64], struct kms_verified *out);

/* TPM (tpm.c): verifies a vTPM quote: TPMS_ATTEST, signature by the AK certificate key, AK chain
 * to the GCP root, PCR digest, event-log replay, extraData == qualifying_data. Fills
 * pcr[0] = PCR0, pcr[1] = PCR2, pcr[2] = PCR14 (32 B each). */
int kms_tpm_verify(const struct kms_attest_ctx *ctx, const struct kms_tpm_quote *q,
                   const uint8_t *qualifying_data, size_t qd_len, struct kms_verified *out);

/* ---- collateral (owner: collateral; cache.c) ----
 * A bounded cache of refcounted values keyed by 32 bytes, each valid in [not_before, not_after]
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
/* ---- end collateral ---- */

/* ---- aia (owner: aia; aia.c) ----
 * AIA path building: when a chain does not verify with the configured anchors alone, issuer
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
/* ---- end aia ---- */

/* dst = a malloc'd copy of the n bytes at p (at least 1 byte allocated, so p may be NULL when
 * n == 0); KMS_ERR_NOMEM. dst is overwritten, not freed (scale.c). */
int kms_bytes_dup(struct kms_bytes *dst, const void *p, size_t n);

/* ---- simulation files (sim_files.c) ----
 * Keys and certificates of the simulated TEEs (sim.c, sim_nitro.c, platform.c sim-gcp,
 * collateral_sim.c) in their directory: PEM files written atomically (keys 0600), read with a
 * size limit of KMS_SIMF_PEM_MAX, and key/certificate pairs created once under an flock. */
#define KMS_SIMF_PEM_MAX (64u * 1024u)
#define KMS_SIMF_PATH_MAX 4096u

/* buf = dir/name; KMS_ERR_INVAL when it does not fit. */
int kms_simf_path(char buf[KMS_SIMF_PATH_MAX], const char *dir, const char *name);
/* Writes key as PKCS#8 PEM with mode 0600, or cert as PEM with mode, atomically to dir/name. */
int kms_simf_write_key(const char *dir, const char *name, EVP_PKEY *key);
int kms_simf_write_cert(const char *dir, const char *name, X509 *cert, unsigned mode);
/* The bytes of dir/name (caller frees *pem). */
int kms_simf_read(const char *dir, const char *name, uint8_t **pem, size_t *len);
/* dir/name parsed as a PEM certificate / private key (caller frees *out; NULL on error;
 * KMS_ERR_PARSE when the file holds none). */
int kms_simf_read_cert(const char *dir, const char *name, X509 **out);
int kms_simf_read_key(const char *dir, const char *name, EVP_PKEY **out);
/* Exclusive flock on dir/name (created 0600). On success the caller closes *fd to release it;
 * on error *fd is -1. */
int kms_simf_lock(const char *dir, const char *name, int *fd);

/* A key/certificate pair kept in the simulation directory. */
struct kms_simf_pair {
    const char *cert_name;
    const char *key_name;
    const char *lock_name; /* flock taken while the pair is generated */
    unsigned cert_mode;    /* the key is always 0600 */
    /* Makes a new pair (caller-owned on success). */
    int (*gen)(void *arg, X509 **cert, EVP_PKEY **key);
    void *arg;
};

/* Loads the pair p from dir. When the certificate is absent: creates dir (0700), takes the lock,
 * and unless another process made the pair meanwhile, generates it and writes the key before the
 * certificate (so a present certificate always has its key). A key that does not match its
 * certificate is KMS_ERR_STATE. Caller frees *cert and *key (both NULL on error). */
int kms_simf_load_pair(const char *dir, const struct kms_simf_pair *p, X509 **cert, EVP_PKEY **key);

/* Adds the X509v3 extension nid = value (OpenSSL config syntax) in the context of issuer. */
int kms_simf_add_ext(X509 *cert, X509 *issuer, int nid, const char *value);
/* ECDSA P-256/SHA-256 signature of msg as r || s (32 bytes each). */
int kms_simf_sign_rs(EVP_PKEY *key, const uint8_t *msg, size_t len, uint8_t out[64]);
/* ---- end simulation files ---- */

#endif
