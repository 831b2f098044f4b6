/*
 * Simulated AWS Nitro Enclave: a local P-384 root stands in for the AWS root, and each call
 * issues a short-lived leaf and signs a real-format NSM document (COSE_Sign1, ES384) with it.
 * The CBOR is written with the in-tree writer (attest/cbor.h); tests/attest/test_cbor_writer.c
 * compares it byte for byte with libcbor, which stays the independent reference there.
 */
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attest/cbor.h"
#include "attest/internal.h"
#include "attest/sim.h"
#include "attest/sim_files.h"
#include "common/buf.h"
#include "common/file.h"
#include "common/hex.h"

#define SIM_NITRO_MODULE_ID "i-0123456789abcdef0-enc0123456789abcdef"
#define SIM_NITRO_ROOT_CN "kmsd simulated Nitro root"
#define SIM_NITRO_ROOT_DAYS 3650
#define SIM_NITRO_LEAF_SECS (3 * 3600) /* like AWS: leaves live about 3 h */
#define SIM_NITRO_NPCRS 16u            /* real documents carry PCR0..15 */

/* Issues a certificate for `key`, signed by issuer_key (self-signed when issuer is NULL). */
static int make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                     time_t not_before, long lifetime_secs, int is_ca, X509 **out)
{
    X509 *x = X509_new();
    X509_NAME *name = NULL;
    ASN1_INTEGER *serial = NULL;
    BIGNUM *bn = NULL;
    int rc = 0;

    KMS_GUARD_PTR(x);
    KMS_GUARD_OSSL(X509_set_version(x, 2), "X509_set_version");
    bn = BN_new();
    KMS_GUARD_PTR(bn);
    KMS_GUARD_OSSL(BN_rand(bn, 127, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY), "BN_rand");
    serial = BN_to_ASN1_INTEGER(bn, NULL);
    KMS_GUARD_PTR(serial);
    KMS_GUARD_OSSL(X509_set_serialNumber(x, serial), "X509_set_serialNumber");
    name = X509_NAME_new();
    KMS_GUARD_PTR(name);
    KMS_GUARD_OSSL(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                              (const unsigned char *)"kmsd simulation", -1, -1, 0),
                   "X509_NAME_add_entry_by_txt");
    KMS_GUARD_OSSL(
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0),
        "X509_NAME_add_entry_by_txt");
    KMS_GUARD_OSSL(X509_set_subject_name(x, name), "X509_set_subject_name");
    KMS_GUARD_OSSL(X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name),
                   "X509_set_issuer_name");
    KMS_ENSURE(X509_time_adj_ex(X509_getm_notBefore(x), 0, 0, &not_before) != NULL, KMS_ERR_CRYPTO,
               "cannot set notBefore");
    KMS_ENSURE(X509_time_adj_ex(X509_getm_notAfter(x), 0, lifetime_secs, &not_before) != NULL,
               KMS_ERR_CRYPTO, "cannot set notAfter");
    KMS_GUARD_OSSL(X509_set_pubkey(x, key), "X509_set_pubkey");
    if (is_ca) {
        KMS_GUARD(kms_simf_add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE"));
        KMS_GUARD(kms_simf_add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign"));
        KMS_GUARD(kms_simf_add_ext(x, x, NID_subject_key_identifier, "hash"));
    } else {
        KMS_GUARD(kms_simf_add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE"));
        KMS_GUARD(
            kms_simf_add_ext(x, issuer, NID_key_usage, "critical,digitalSignature,nonRepudiation"));
        KMS_GUARD(kms_simf_add_ext(x, issuer, NID_authority_key_identifier, "keyid"));
    }
    KMS_ENSURE(X509_sign(x, issuer_key, EVP_sha384()) > 0, KMS_ERR_CRYPTO,
               "cannot sign the simulated Nitro certificate");
    *out = x;
    x = NULL;
out:
    BN_free(bn);
    ASN1_INTEGER_free(serial);
    X509_NAME_free(name);
    X509_free(x);
    return rc;
}

static int gen_root(void *arg, X509 **root, EVP_PKEY **key)
{
    int rc = 0;

    (void)arg;
    *key = EVP_EC_gen(SN_secp384r1);
    KMS_ENSURE(*key != NULL, KMS_ERR_CRYPTO, "cannot generate the simulated Nitro root key");
    KMS_GUARD(make_cert(*key, SIM_NITRO_ROOT_CN, NULL, *key, time(NULL) - 86400,
                        (long)SIM_NITRO_ROOT_DAYS * 86400, 1, root));
out:
    return rc;
}

/* sim-nitro-root.{pem,key} in dir, created on first use. */
static const struct kms_simf_pair nitro_root = {
    .cert_name = "sim-nitro-root.pem",
    .key_name = "sim-nitro-root.key",
    .lock_name = ".nitro-lock",
    .cert_mode = 0600,
    .gen = gen_root,
};

/* ---------------------------------------------------------------- CBOR building */

static int der_of(X509 *x, uint8_t **der, size_t *len)
{
    int n;
    int rc = 0;

    *der = NULL;
    n = i2d_X509(x, der);
    KMS_ENSURE(n > 0, KMS_ERR_CRYPTO, "cannot encode a certificate");
    *len = (size_t)n;
out:
    return rc;
}

/* The document map, keys in the order AWS's NSM writes them. Caller frees *out. */
static int build_payload(const uint8_t pcrs[3][48], const uint8_t report_data[64], X509 *leaf,
                         X509 *root, uint8_t **out, size_t *len)
{
    static const uint8_t zero_pcr[48];
    struct kms_buf b = {0};
    uint8_t *leaf_der = NULL, *root_der = NULL;
    size_t leaf_len = 0, root_len = 0;
    struct timespec ts;
    int rc = 0;

    KMS_GUARD(der_of(leaf, &leaf_der, &leaf_len));
    KMS_GUARD(der_of(root, &root_der, &root_len));
    clock_gettime(CLOCK_REALTIME, &ts);
    KMS_GUARD(kms_cbor_put_map(&b, 9));
    KMS_GUARD(kms_cbor_put_tstr(&b, "module_id"));
    KMS_GUARD(kms_cbor_put_tstr(&b, SIM_NITRO_MODULE_ID));
    KMS_GUARD(kms_cbor_put_tstr(&b, "digest"));
    KMS_GUARD(kms_cbor_put_tstr(&b, "SHA384"));
    KMS_GUARD(kms_cbor_put_tstr(&b, "timestamp"));
    /* milliseconds since 1970 exceed 2^32, so this is the 9-byte form libcbor's uint64 had */
    KMS_GUARD(kms_cbor_put_uint(&b, (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u));
    KMS_GUARD(kms_cbor_put_tstr(&b, "pcrs"));
    KMS_GUARD(kms_cbor_put_map(&b, SIM_NITRO_NPCRS));
    for (unsigned i = 0; i < SIM_NITRO_NPCRS; i++) {
        KMS_GUARD(kms_cbor_put_uint(&b, i));
        KMS_GUARD(kms_cbor_put_bstr(&b, i < 3 ? pcrs[i] : zero_pcr, 48));
    }
    KMS_GUARD(kms_cbor_put_tstr(&b, "certificate"));
    KMS_GUARD(kms_cbor_put_bstr(&b, leaf_der, leaf_len));
    KMS_GUARD(kms_cbor_put_tstr(&b, "cabundle"));
    KMS_GUARD(kms_cbor_put_array(&b, 1));
    KMS_GUARD(kms_cbor_put_bstr(&b, root_der, root_len));
    KMS_GUARD(kms_cbor_put_tstr(&b, "public_key"));
    KMS_GUARD(kms_cbor_put_null(&b));
    KMS_GUARD(kms_cbor_put_tstr(&b, "user_data"));
    if (report_data != NULL)
        KMS_GUARD(kms_cbor_put_bstr(&b, report_data, 64));
    else
        KMS_GUARD(kms_cbor_put_null(&b));
    KMS_GUARD(kms_cbor_put_tstr(&b, "nonce"));
    KMS_GUARD(kms_cbor_put_null(&b));
    *out = kms_buf_steal(&b, len);
out:
    OPENSSL_free(leaf_der);
    OPENSSL_free(root_der);
    kms_buf_free(&b);
    return rc;
}

/* ES384: SHA-384 over the Sig_structure ["Signature1", prot, h'', payload], signature as r||s
 * (48 B each). The verifier encodes the Sig_structure itself; tests/attest/test_cbor_writer.c
 * checks these signatures against libcbor's encoding of it. */
static int sign_cose(EVP_PKEY *key, const uint8_t *prot, size_t prot_len, const uint8_t *payload,
                     size_t payload_len, uint8_t sig[96])
{
    struct kms_buf tbs = {0};
    uint8_t *der = NULL;
    const uint8_t *q;
    size_t der_len = 0;
    EVP_MD_CTX *md = NULL;
    ECDSA_SIG *es = NULL;
    const BIGNUM *r, *s;
    int rc = 0;

    KMS_GUARD(kms_cbor_put_array(&tbs, 4));
    KMS_GUARD(kms_cbor_put_tstr(&tbs, "Signature1"));
    KMS_GUARD(kms_cbor_put_bstr(&tbs, prot, prot_len));
    KMS_GUARD(kms_cbor_put_bstr(&tbs, NULL, 0));
    KMS_GUARD(kms_cbor_put_bstr(&tbs, payload, payload_len));
    md = EVP_MD_CTX_new();
    KMS_GUARD_PTR(md);
    KMS_GUARD_OSSL(EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, key), "EVP_DigestSignInit");
    KMS_GUARD_OSSL(EVP_DigestSign(md, NULL, &der_len, tbs.data, tbs.len), "EVP_DigestSign");
    der = OPENSSL_malloc(der_len);
    KMS_GUARD_PTR(der);
    KMS_GUARD_OSSL(EVP_DigestSign(md, der, &der_len, tbs.data, tbs.len), "EVP_DigestSign");
    q = der;
    es = d2i_ECDSA_SIG(NULL, &q, (long)der_len);
    KMS_ENSURE(es != NULL, KMS_ERR_CRYPTO, "cannot decode the ECDSA signature");
    ECDSA_SIG_get0(es, &r, &s);
    KMS_ENSURE(BN_bn2binpad(r, sig, 48) == 48 && BN_bn2binpad(s, sig + 48, 48) == 48,
               KMS_ERR_CRYPTO, "ECDSA signature component too long");
out:
    ECDSA_SIG_free(es);
    OPENSSL_free(der);
    EVP_MD_CTX_free(md);
    kms_buf_free(&tbs);
    return rc;
}

/* COSE_Sign1 [prot, {}, payload, sig], untagged as the NSM returns it. Caller frees *out. */
static int build_cose(EVP_PKEY *leaf_key, const uint8_t *payload, size_t payload_len, uint8_t **out,
                      size_t *len)
{
    static const uint8_t prot[] = {0xa1, 0x01, 0x38, 0x22}; /* {1: -35} */
    struct kms_buf b = {0};
    uint8_t sig[96];
    int rc = 0;

    KMS_GUARD(sign_cose(leaf_key, prot, sizeof(prot), payload, payload_len, sig));
    KMS_GUARD(kms_cbor_put_array(&b, 4));
    KMS_GUARD(kms_cbor_put_bstr(&b, prot, sizeof(prot)));
    KMS_GUARD(kms_cbor_put_map(&b, 0));
    KMS_GUARD(kms_cbor_put_bstr(&b, payload, payload_len));
    KMS_GUARD(kms_cbor_put_bstr(&b, sig, sizeof(sig)));
    *out = kms_buf_steal(&b, len);
out:
    kms_buf_free(&b);
    return rc;
}

int kms_sim_nitro_attest(const char *sim_dir, const uint8_t pcrs[3][48],
                         const uint8_t report_data[64], const char *app_id_hex,
                         struct kms_attestation **out)
{
    struct kms_attestation *att = NULL;
    X509 *root = NULL, *leaf = NULL;
    EVP_PKEY *root_key = NULL, *leaf_key = NULL;
    uint8_t *payload = NULL, *app_id = NULL;
    size_t payload_len = 0, app_id_len = 0;
    uint8_t h[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH + 1];
    char config[128];
    int rc = 0;

    *out = NULL;
    KMS_GUARD(kms_simf_load_pair(sim_dir, &nitro_root, &root, &root_key));
    leaf_key = EVP_EC_gen(SN_secp384r1);
    KMS_ENSURE(leaf_key != NULL, KMS_ERR_CRYPTO, "cannot generate the simulated enclave key");
    KMS_GUARD(make_cert(leaf_key, SIM_NITRO_MODULE_ID, root, root_key, time(NULL) - 60,
                        SIM_NITRO_LEAF_SECS, 0, &leaf));
    KMS_GUARD(build_payload(pcrs, report_data, leaf, root, &payload, &payload_len));
    att = calloc(1, sizeof(*att));
    KMS_GUARD_PTR(att);
    att->mode = KMS_ATT_NITRO;
    KMS_GUARD(build_cose(leaf_key, payload, payload_len, &att->nsm_quote.p, &att->nsm_quote.len));
    if (report_data != NULL)
        memcpy(att->report_data, report_data, 64);
    SHA256(&pcrs[0][0], 3 * 48, h);
    kms_hex_encode(h, sizeof(h), hex);
    snprintf(config, sizeof(config), "{\"os_image_hash\":\"%s\"}", hex);
    att->config = strdup(config);
    KMS_GUARD_PTR(att->config);
    if (app_id_hex != NULL) {
        KMS_GUARD(kms_hex_decode(app_id_hex, &app_id, &app_id_len));
        KMS_GUARD(kms_att_add_runtime_event(att, "app-id", app_id, app_id_len));
    }
    *out = att;
    att = NULL;
out:
    kms_att_free(att);
    free(app_id);
    free(payload);
    X509_free(leaf);
    X509_free(root);
    EVP_PKEY_free(leaf_key);
    EVP_PKEY_free(root_key);
    return rc;
}
