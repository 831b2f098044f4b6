/* PKI helpers shared by the verifiers: chains at a time T, PEM lists, raw ECDSA signatures. */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <limits.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/pki.h"

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

int kms_attest_pem_certs(const void *pem, size_t len, int max, STACK_OF(X509) * *out)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    BIO *bio = NULL;
    X509 *c;
    int rc = 0;

    *out = NULL;
    KMS_GUARD_PTR(sk);
    KMS_ENSURE(len <= INT_MAX, KMS_ERR_TOOBIG, "PEM certificate list too large");
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
