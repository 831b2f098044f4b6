/*
 * AK certificates for software TPMs (sim-gcp and the swtpm tests): a software TPM has no
 * Google-issued AK certificate. OpenSSL only, apart from vtpm.c, so builds without tpm2-tss
 * (the static kmsctl) keep the simulated GCP platform.
 */
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "attest/internal.h"
#include "attest/sim_files.h"
#include "attest/tpm.h"

/* Fills the common fields; issuer == NULL means self-signed. */
static int make_cert(X509 *cert, const char *cn, EVP_PKEY *pub, X509 *issuer, long days)
{
    X509_NAME *name = X509_NAME_new();
    uint8_t serial[16];
    BIGNUM *bn = NULL;
    int rc = 0;

    KMS_GUARD_PTR(name);
    KMS_GUARD_OSSL(X509_set_version(cert, 2), "X509_set_version");
    KMS_GUARD_OSSL(RAND_bytes(serial, sizeof(serial)), "RAND_bytes");
    serial[0] &= 0x7f;
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    KMS_GUARD_PTR(bn);
    KMS_ENSURE(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL, KMS_ERR_CRYPTO,
               "BN_to_ASN1_INTEGER failed");
    KMS_GUARD_OSSL(
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0),
        "X509_NAME_add_entry_by_txt");
    KMS_GUARD_OSSL(X509_set_subject_name(cert, name), "X509_set_subject_name");
    KMS_GUARD_OSSL(
        X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer) : name),
        "X509_set_issuer_name");
    KMS_ENSURE(X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != NULL, KMS_ERR_CRYPTO,
               "X509_gmtime_adj failed");
    KMS_ENSURE(X509_time_adj_ex(X509_getm_notAfter(cert), (int)days, 0, NULL) != NULL,
               KMS_ERR_CRYPTO, "X509_time_adj_ex failed");
    KMS_GUARD_OSSL(X509_set_pubkey(cert, pub), "X509_set_pubkey");
out:
    BN_free(bn);
    X509_NAME_free(name);
    return rc;
}

int kms_vtpm_test_ca(const char *cn, X509 *issuer, EVP_PKEY *issuer_key, X509 **cert,
                     EVP_PKEY **key)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *c = X509_new();
    int rc = 0;

    *cert = NULL;
    *key = NULL;
    KMS_GUARD_PTR(k);
    KMS_GUARD_PTR(c);
    KMS_GUARD(make_cert(c, cn, k, issuer, 3650));
    KMS_GUARD(kms_simf_add_ext(c, issuer != NULL ? issuer : c, NID_basic_constraints,
                               "critical,CA:TRUE"));
    KMS_GUARD(kms_simf_add_ext(c, issuer != NULL ? issuer : c, NID_key_usage,
                               "critical,keyCertSign,cRLSign"));
    KMS_GUARD(kms_simf_add_ext(c, issuer != NULL ? issuer : c, NID_subject_key_identifier, "hash"));
    KMS_ENSURE(X509_sign(c, issuer_key != NULL ? issuer_key : k, EVP_sha256()) > 0, KMS_ERR_CRYPTO,
               "X509_sign failed");
    *cert = c;
    *key = k;
    c = NULL;
    k = NULL;
out:
    X509_free(c);
    EVP_PKEY_free(k);
    return rc;
}

int kms_vtpm_issue_ak_cert(EVP_PKEY *ak_pub, X509 *ca, EVP_PKEY *ca_key, uint8_t **der,
                           size_t *der_len)
{
    X509 *c = X509_new();
    unsigned char *p = NULL;
    int n;
    int rc = 0;

    *der = NULL;
    *der_len = 0;
    KMS_GUARD_PTR(c);
    KMS_GUARD(make_cert(c, "kmsd test vTPM AK", ak_pub, ca, 365));
    KMS_GUARD(kms_simf_add_ext(c, ca, NID_basic_constraints, "critical,CA:FALSE"));
    KMS_GUARD(kms_simf_add_ext(c, ca, NID_key_usage, "critical,digitalSignature"));
    KMS_ENSURE(X509_sign(c, ca_key, EVP_sha256()) > 0, KMS_ERR_CRYPTO, "X509_sign failed");
    n = i2d_X509(c, &p);
    KMS_ENSURE(n > 0, KMS_ERR_CRYPTO, "i2d_X509 failed");
    /* plain malloc so the bytes can live in a kms_tpm_quote (freed with free()) */
    *der = malloc((size_t)n);
    KMS_GUARD_PTR(*der);
    memcpy(*der, p, (size_t)n);
    *der_len = (size_t)n;
out:
    OPENSSL_free(p);
    X509_free(c);
    return rc;
}
