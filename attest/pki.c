/* PKI helpers shared by the verifiers: chains at a time T, PEM lists, raw ECDSA signatures. */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509_vfy.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/pki.h"
#include "common/lru.h"

int kms_attest_chain_at(X509 *const *anchors, size_t n_anchors, X509 *leaf,
                        STACK_OF(X509) * untrusted, time_t t, const char *what, int code_chain,
                        STACK_OF(X509) * *chain)
{
    X509_STORE *store = NULL;
    X509_STORE_CTX *sctx = NULL;
    int rc = 0;
    int err;

    *chain = NULL;
    KMS_ENSURE(n_anchors > 0, code_chain, "%s: no trust anchor configured", what);
    store = X509_STORE_new();
    sctx = X509_STORE_CTX_new();
    KMS_GUARD_PTR(store);
    KMS_GUARD_PTR(sctx);
    for (size_t i = 0; i < n_anchors; i++)
        KMS_GUARD_OSSL(X509_STORE_add_cert(store, anchors[i]), "X509_STORE_add_cert");
    KMS_GUARD_OSSL(X509_STORE_CTX_init(sctx, store, leaf, untrusted), "X509_STORE_CTX_init");
    X509_STORE_CTX_set_time(sctx, 0, t);
    if (X509_verify_cert(sctx) != 1) {
        err = X509_STORE_CTX_get_error(sctx);
        ERR_clear_error();
        if (err == X509_V_ERR_CERT_HAS_EXPIRED || err == X509_V_ERR_CERT_NOT_YET_VALID)
            rc = kms_err_set(KMS_ERR_ATT_EXPIRED,
                             "%s: certificate at depth %d is not valid at the verification time "
                             "(%s)",
                             what, X509_STORE_CTX_get_error_depth(sctx),
                             X509_verify_cert_error_string(err));
        else
            rc = kms_err_set(code_chain, "%s does not verify to the pinned root: %s (depth %d)",
                             what, X509_verify_cert_error_string(err),
                             X509_STORE_CTX_get_error_depth(sctx));
        goto out;
    }
    *chain = X509_STORE_CTX_get1_chain(sctx);
    KMS_GUARD_PTR(*chain);
out:
    X509_STORE_CTX_free(sctx);
    X509_STORE_free(store);
    return rc;
}

static int pem_certs_parse(const void *pem, size_t len, int max, STACK_OF(X509) * *out)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    BIO *bio = NULL;
    X509 *c;
    int rc = 0;

    *out = NULL;
    KMS_GUARD_PTR(sk);
    bio = BIO_new_mem_buf(pem, (int)len);
    KMS_GUARD_PTR(bio);
    for (;;) {
        c = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (c == NULL)
            break;
        if (sk_X509_num(sk) >= max || sk_X509_push(sk, c) <= 0) {
            X509_free(c);
            rc = KMS_ERR_TOOBIG;
            goto out;
        }
    }
    ERR_clear_error();
    *out = sk;
    sk = NULL;
out:
    BIO_free(bio);
    sk_X509_pop_free(sk, X509_free);
    return rc;
}

/* Parsed PEM lists by SHA-256 of (max, bytes): every quote of a platform carries the same PCK
 * chain, and parsing it (public-key decoding through the OpenSSL 3 decoder framework) cost more
 * than the quote's signature checks. Parsing is deterministic, so entries never expire; X509
 * objects are shared read-only (refcounted). */
#define PEM_CACHE_MAX 64

static struct kms_lru *pem_cache;
static pthread_once_t pem_cache_once = PTHREAD_ONCE_INIT;

static void pem_cache_free_val(void *v)
{
    sk_X509_pop_free(v, X509_free);
}

static void pem_cache_init(void)
{
    pem_cache = kms_lru_new(PEM_CACHE_MAX, pem_cache_free_val);
}

/* A new stack holding references to the certificates of sk. */
static STACK_OF(X509) * certs_ref(STACK_OF(X509) * sk)
{
    STACK_OF(X509) *r = sk_X509_new_reserve(NULL, sk_X509_num(sk));

    for (int i = 0; r != NULL && i < sk_X509_num(sk); i++) {
        X509 *c = sk_X509_value(sk, i);

        if (X509_up_ref(c) != 1) {
            sk_X509_pop_free(r, X509_free);
            return NULL;
        }
        (void)sk_X509_push(r, c); /* reserved above: cannot fail */
    }
    return r;
}

int kms_attest_pem_certs(const void *pem, size_t len, int max, STACK_OF(X509) * *out)
{
    uint8_t key[KMS_LRU_KEY_LEN];
    uint32_t m = (uint32_t)max;
    STACK_OF(X509) *sk = NULL;
    void *ref = NULL;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(len <= INT_MAX, KMS_ERR_TOOBIG, "PEM certificate list too large");
    pthread_once(&pem_cache_once, pem_cache_init);
    if (pem_cache == NULL)
        return pem_certs_parse(pem, len, max, out);
    SHA256(pem, len, key);
    for (size_t i = 0; i < sizeof(m); i++) /* the same bytes under another max: another entry */
        key[i] ^= (uint8_t)(m >> (8 * i));
    sk = kms_lru_get(pem_cache, key, 0, &ref);
    if (sk != NULL) {
        *out = certs_ref(sk);
        kms_lru_release(pem_cache, ref);
        KMS_GUARD_PTR(*out);
        return 0;
    }
    KMS_GUARD(pem_certs_parse(pem, len, max, &sk));
    *out = certs_ref(sk);
    if (*out == NULL) {
        sk_X509_pop_free(sk, X509_free);
        KMS_GUARD_PTR(*out);
    }
    /* Not cached is not an error: the caller has its list. */
    if (kms_lru_put(pem_cache, key, sk, KMS_LRU_NO_START, KMS_LRU_NO_END, NULL) < 0)
        kms_err_clear();
out:
    return rc;
}

int kms_attest_p256_from_raw(const uint8_t xy[64], EVP_PKEY **out)
{
    uint8_t pt[65];
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    int rc = 0;

    *out = NULL;
    pt[0] = 0x04;
    memcpy(pt + 1, xy, 64);
    bld = OSSL_PARAM_BLD_new();
    KMS_GUARD_PTR(bld);
    KMS_GUARD_OSSL(OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "P-256", 0),
                   "OSSL_PARAM_BLD_push_utf8_string");
    KMS_GUARD_OSSL(OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt)),
                   "OSSL_PARAM_BLD_push_octet_string");
    params = OSSL_PARAM_BLD_to_param(bld);
    KMS_GUARD_PTR(params);
    pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    KMS_GUARD_PTR(pctx);
    KMS_GUARD_OSSL(EVP_PKEY_fromdata_init(pctx), "EVP_PKEY_fromdata_init");
    if (EVP_PKEY_fromdata(pctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        ERR_clear_error();
        rc = kms_err_set(KMS_ERR_ATT_QUOTE_SIG, "attestation key is not a valid P-256 point");
        goto out;
    }
out:
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return rc;
}

int kms_attest_ecdsa_p256_verify(EVP_PKEY *pk, const uint8_t *msg, size_t len, const uint8_t *rs,
                                 size_t rs_len)
{
    ECDSA_SIG *sig = NULL;
    BIGNUM *r = NULL;
    BIGNUM *s = NULL;
    EVP_MD_CTX *mctx = NULL;
    unsigned char *der = NULL;
    int der_len;
    int rc = 0;

    if (rs_len != 64)
        return 0;
    sig = ECDSA_SIG_new();
    r = BN_bin2bn(rs, 32, NULL);
    s = BN_bin2bn(rs + 32, 32, NULL);
    mctx = EVP_MD_CTX_new();
    KMS_GUARD_PTR(sig);
    KMS_GUARD_PTR(r);
    KMS_GUARD_PTR(s);
    KMS_GUARD_PTR(mctx);
    KMS_GUARD_OSSL(ECDSA_SIG_set0(sig, r, s), "ECDSA_SIG_set0");
    r = NULL;
    s = NULL;
    der_len = i2d_ECDSA_SIG(sig, &der);
    KMS_ENSURE(der_len > 0, KMS_ERR_CRYPTO, "cannot encode ECDSA signature");
    KMS_GUARD_OSSL(EVP_DigestVerifyInit(mctx, NULL, EVP_sha256(), NULL, pk),
                   "EVP_DigestVerifyInit");
    rc = EVP_DigestVerify(mctx, der, (size_t)der_len, msg, len) == 1;
    ERR_clear_error();
out:
    OPENSSL_free(der);
    EVP_MD_CTX_free(mctx);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return rc;
}
