/*
 * Key derivation and certificates (kms-reference.md §2.2, §4). Byte-exact with the reference:
 * HKDF-SHA256 salt "RATLS", P-256 child keys, derive_dh_secret over the 138-byte PKCS#8 DER,
 * secp256k1 keys and RFC 6979 low-S recoverable signatures over keccak256.
 * All secret outputs are caller buffers; callers wipe them (OPENSSL_cleanse).
 */
#ifndef KMS_COMMON_CRYPTO_CRYPTO_H
#define KMS_COMMON_CRYPTO_CRYPTO_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "attest/attest.h"
#include "common/err.h"

/* A borrowed byte slice (one HKDF info part). */
struct kms_slice {
    const uint8_t *p;
    size_t len;
};

/* HKDF-SHA256(salt="RATLS", ikm, info = concatenation of ctx parts) → out_len bytes. */
KMS_WUR int kms_kdf_derive(const uint8_t *ikm, size_t ikm_len, const struct kms_slice *ctx,
                           size_t n_ctx, uint8_t *out, size_t out_len);

/* ---- P-256 */
KMS_WUR int kms_p256_generate(EVP_PKEY **out);
KMS_WUR int kms_p256_from_scalar(const uint8_t d[32], EVP_PKEY **out);
KMS_WUR int kms_p256_scalar(const EVP_PKEY *key, uint8_t d[32]);
/* The 138-byte unencrypted PKCS#8 DER (prefix 308187..., d, a144034200, 04||X||Y). */
KMS_WUR int kms_p256_pkcs8_der(const EVP_PKEY *key, uint8_t out[138]);
/* derive_p256_key_pair: d' = HKDF(d, ctx, 32). */
KMS_WUR int kms_p256_derive_child(const EVP_PKEY *parent, const struct kms_slice *ctx, size_t n_ctx,
                                  EVP_PKEY **out);
/* derive_dh_secret: SHA-256(PKCS#8 DER of the child key). */
KMS_WUR int kms_derive_dh_secret(const EVP_PKEY *parent, const struct kms_slice *ctx, size_t n_ctx,
                                 uint8_t out[32]);

/* ---- key encodings */
/* PEM PKCS#8 "PRIVATE KEY"; caller frees *pem with kms_free_secret(pem, strlen(pem)). */
KMS_WUR int kms_pkey_to_pem(const EVP_PKEY *key, char **pem);
KMS_WUR int kms_pkey_from_pem(const char *pem, EVP_PKEY **out);
/* SubjectPublicKeyInfo DER; caller frees *der. */
KMS_WUR int kms_pkey_spki_der(const EVP_PKEY *key, uint8_t **der, size_t *len);

/* ---- secp256k1 */
KMS_WUR int kms_k256_random(uint8_t sk[32]);
KMS_WUR int kms_k256_pubkey(const uint8_t sk[32], uint8_t pub33[33]);
/* sig65 = r || s || recid (0/1), RFC 6979, low-S. */
KMS_WUR int kms_k256_sign(const uint8_t sk[32], const uint8_t digest[32], uint8_t sig65[65]);
/* Recovers the compressed public key; KMS_ERR_VERIFY if the signature is invalid. */
KMS_WUR int kms_k256_recover(const uint8_t sig65[65], const uint8_t digest[32], uint8_t pub33[33]);
/* Recovers and compares with expect_pub33; KMS_ERR_VERIFY if the signature is invalid or
 * recovers to another key. */
KMS_WUR int kms_k256_verify_recover(const uint8_t sig65[65], const uint8_t digest[32],
                                    const uint8_t expect_pub33[33]);
/* Uncompressed 64-byte X||Y (for Ethereum addresses). */
KMS_WUR int kms_k256_pubkey_uncompressed(const uint8_t sk[32], uint8_t pub64[64]);

/* ---- X25519 */
KMS_WUR int kms_x25519_pubkey(const uint8_t sk[32], uint8_t pub[32]);

/* ---- app keys (kms-reference.md §4) */
struct kms_app_keys {
    uint8_t disk_crypt_key[32];
    uint8_t env_crypt_key[32];
    uint8_t k256_key[32];
    uint8_t k256_pubkey[33];
    uint8_t k256_signature[65];
};

KMS_WUR int kms_derive_app_keys(const EVP_PKEY *root_ca, const uint8_t root_k256[32],
                                const uint8_t *app_id, size_t app_id_len,
                                const uint8_t *instance_id, size_t instance_id_len,
                                struct kms_app_keys *out);
/* The message digest signed as k256_signature. */
void kms_k256_issued_digest(const uint8_t *app_id, size_t app_id_len, const uint8_t pub33[33],
                            uint8_t digest[32]);

/* Digest signed for GetAppEnvEncryptPubKey: timestamp NULL gives the legacy `signature`
 * message, non-NULL the `signature_v1` message (u64 big-endian timestamp before the key). */
void kms_env_pubkey_digest(const uint8_t *app_id, size_t app_id_len, const uint64_t *timestamp,
                           const uint8_t pub[32], uint8_t digest[32]);

struct kms_env_pubkey {
    uint8_t public_key[32];
    uint8_t signature[65];
    uint8_t signature_v1[65];
    uint64_t timestamp;
};

KMS_WUR int kms_derive_env_pubkey(const EVP_PKEY *root_ca, const uint8_t root_k256[32],
                                  const uint8_t *app_id, size_t app_id_len, uint64_t timestamp,
                                  struct kms_env_pubkey *out);
KMS_WUR int kms_derive_app_ca_key(const EVP_PKEY *root_ca, const uint8_t *app_id, size_t app_id_len,
                                  EVP_PKEY **out);

/* Bootstrap attestation report_data (keccak256 of "dstack-kms-genereted-keys-v1:" ...) || 0^32. */
KMS_WUR int kms_bootstrap_report_data(const uint8_t *ca_spki, size_t ca_spki_len,
                                      const uint8_t k256_pub33[33], uint8_t out[64]);

/* ---- certificates (rcgen-like; ECDSA-SHA256) */
struct kms_cert_params {
    const char *org; /* O=, optional */
    const char *cn;  /* CN= */
    const char *const *san_dns;
    size_t n_san;
    int is_ca;
    int path_len; /* when is_ca; -1 = none */
    int eku_server_auth;
    int eku_client_auth;
    const char *usage;     /* special usage ext .1.4 (e.g. "kms:rpc"), optional */
    const uint8_t *app_id; /* app id ext .1.3, optional */
    size_t app_id_len;
    const struct kms_attestation *att; /* attestation ext(s), optional */
    time_t not_before;                 /* 0 = now - 1 h */
    time_t not_after;                  /* 0 = not_before + 3650 days */
};

/* Issues a certificate for subject_key (public part used) signed by issuer_key; issuer_cert
 * NULL means self-signed. Caller frees *out (X509_free). */
KMS_WUR int kms_cert_issue(const struct kms_cert_params *p, EVP_PKEY *subject_key,
                           EVP_PKEY *issuer_key, X509 *issuer_cert, X509 **out);
/* PEM encoding; caller frees *pem. */
KMS_WUR int kms_cert_to_pem(X509 *cert, char **pem);
/* First certificate of a PEM string. */
KMS_WUR int kms_cert_from_pem(const char *pem, X509 **out);
/* 1 if cert's signature verifies with issuer_pub, else 0. */
int kms_cert_signed_by(X509 *cert, EVP_PKEY *issuer_pub);

#endif
