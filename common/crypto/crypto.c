/*
 * Key derivation (kms-reference.md §4): HKDF-SHA256 salt "RATLS", P-256 child keys and their
 * 138-byte PKCS#8 DER, secp256k1 recoverable signatures, X25519 public keys, app keys and the
 * bootstrap report_data (§2.5). Certificates are in certs.c.
 */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/hex.h"
#include "common/keccak.h"
#include "common/crypto/crypto.h"

/* OpenSSL 3.0 HKDF refuses info longer than 1024 bytes; every ctx we build is far shorter. */
#define KDF_INFO_MAX 1024u
/* A PEM private key larger than this is not a P-256 key we wrote. */
#define PEM_KEY_MAX (16u * 1024u)

static const uint8_t PKCS8_PREFIX[] = {
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
    0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02, 0x01, 0x01, 0x04, 0x20,
};
static const uint8_t PKCS8_PUB_HDR[] = {0xa1, 0x44, 0x03, 0x42, 0x00};

/* Like KMS_GUARD_PTR, for OpenSSL constructors whose NULL means a crypto failure. */
#define GUARD_OSSL_PTR(ptr, what)                                                                  \
    do {                                                                                           \
        if ((ptr) == NULL) {                                                                       \
            rc = kms_err_ossl(KMS_ERR_CRYPTO, (what));                                             \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------------ HKDF */

int kms_kdf_derive(const uint8_t *ikm, size_t ikm_len, const struct kms_slice *ctx, size_t n_ctx,
                   uint8_t *out, size_t out_len)
{
    static const char salt[] = "RATLS";
    uint8_t info[KDF_INFO_MAX];
    size_t info_len = 0;
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *kctx = NULL;
    OSSL_PARAM params[5];
    size_t np = 0;
    int rc = 0;

    KMS_ENSURE(ikm != NULL && ikm_len > 0 && out != NULL && out_len > 0, KMS_ERR_INVAL,
               "key derivation needs a non-empty input key and output");
    KMS_ENSURE(n_ctx == 0 || ctx != NULL, KMS_ERR_INVAL, "key derivation context missing");
    /* ring's multi-part info is the plain concatenation of the parts. */
    for (size_t i = 0; i < n_ctx; i++) {
        KMS_ENSURE(ctx[i].len == 0 || ctx[i].p != NULL, KMS_ERR_INVAL,
                   "key derivation context part %zu is NULL", i);
        KMS_ENSURE(ctx[i].len <= sizeof(info) - info_len, KMS_ERR_TOOBIG,
                   "key derivation context exceeds %u bytes", KDF_INFO_MAX);
        if (ctx[i].len > 0)
            memcpy(info + info_len, ctx[i].p, ctx[i].len);
        info_len += ctx[i].len;
    }
    kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    GUARD_OSSL_PTR(kdf, "HKDF unavailable");
    kctx = EVP_KDF_CTX_new(kdf);
    KMS_GUARD_PTR(kctx);
    params[np++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[np++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
    params[np++] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, sizeof(salt) - 1);
    params[np++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, info_len);
    params[np] = OSSL_PARAM_construct_end();
    KMS_GUARD_OSSL(EVP_KDF_derive(kctx, out, out_len, params), "HKDF-SHA256 derivation failed");
out:
    OPENSSL_cleanse(info, sizeof(info));
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    if (rc < 0 && out != NULL)
        OPENSSL_cleanse(out, out_len);
    return rc;
}

/* ------------------------------------------------------------------ P-256 */

/* Fails unless key is an EC key on P-256. */
static int p256_check(const EVP_PKEY *key)
{
    char group[64];
    size_t glen = 0;

    if (key == NULL || !EVP_PKEY_is_a(key, "EC"))
        return kms_err_set(KMS_ERR_INVAL, "key is not an EC key");
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       &glen) != 1) {
        return kms_err_ossl(KMS_ERR_INVAL, "EC key has no named curve");
    }
    if (strcmp(group, "prime256v1") != 0)
        return kms_err_set(KMS_ERR_INVAL, "EC key is on curve %s, not P-256", group);
    return 0;
}

int kms_p256_generate(EVP_PKEY **out)
{
    *out = EVP_EC_gen("P-256");
    if (*out == NULL)
        return kms_err_ossl(KMS_ERR_CRYPTO, "P-256 key generation failed");
    return 0;
}

int kms_p256_from_scalar(const uint8_t d[32], EVP_PKEY **out)
{
    EC_GROUP *group = NULL;
    EC_POINT *pub = NULL;
    BIGNUM *priv = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    uint8_t pub65[65];
    int rc = 0;

    *out = NULL;
    group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    KMS_GUARD_PTR(group);
    priv = BN_secure_new();
    KMS_GUARD_PTR(priv);
    KMS_ENSURE(BN_bin2bn(d, 32, priv) != NULL, KMS_ERR_NOMEM, "out of memory");
    /* The reference rejects scalars outside 0 < d < n (negligible for HKDF output). */
    KMS_ENSURE(!BN_is_zero(priv) && BN_cmp(priv, EC_GROUP_get0_order(group)) < 0, KMS_ERR_CRYPTO,
               "P-256 private scalar is out of range");
    pub = EC_POINT_new(group);
    KMS_GUARD_PTR(pub);
    KMS_GUARD_OSSL(EC_POINT_mul(group, pub, priv, NULL, NULL, NULL), "P-256 point multiply");
    KMS_ENSURE(EC_POINT_point2oct(group, pub, POINT_CONVERSION_UNCOMPRESSED, pub65, sizeof(pub65),
                                  NULL) == sizeof(pub65),
               KMS_ERR_CRYPTO, "P-256 point encoding failed");
    bld = OSSL_PARAM_BLD_new();
    KMS_GUARD_PTR(bld);
    KMS_GUARD_OSSL(
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0),
        "P-256 key parameters");
    KMS_GUARD_OSSL(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv),
                   "P-256 key parameters");
    KMS_GUARD_OSSL(
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub65, sizeof(pub65)),
        "P-256 key parameters");
    params = OSSL_PARAM_BLD_to_param(bld);
    KMS_GUARD_PTR(params);
    pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    KMS_GUARD_PTR(pctx);
    KMS_GUARD_OSSL(EVP_PKEY_fromdata_init(pctx), "P-256 key import");
    KMS_GUARD_OSSL(EVP_PKEY_fromdata(pctx, out, EVP_PKEY_KEYPAIR, params), "P-256 key import");
out:
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params); /* the scalar copy sits in secure memory (secure BN), cleared here */
    OSSL_PARAM_BLD_free(bld);
    EC_POINT_free(pub);
    BN_clear_free(priv);
    EC_GROUP_free(group);
    return rc;
}

int kms_p256_scalar(const EVP_PKEY *key, uint8_t d[32])
{
    BIGNUM *priv = NULL;
    int rc = 0;

    KMS_GUARD(p256_check(key));
    KMS_GUARD_OSSL(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &priv),
                   "P-256 key has no private scalar");
    /* Big-endian, left-padded: a scalar with leading zero bytes still gives 32 bytes. */
    KMS_ENSURE(BN_bn2binpad(priv, d, 32) == 32, KMS_ERR_CRYPTO,
               "P-256 private scalar does not fit 32 bytes");
out:
    BN_clear_free(priv);
    return rc;
}

/* Uncompressed public point 04||X||Y of a P-256 key. */
static int p256_point(const EVP_PKEY *key, uint8_t pub65[65])
{
    BIGNUM *x = NULL;
    BIGNUM *y = NULL;
    int rc = 0;

    KMS_GUARD(p256_check(key));
    /* X and Y separately: independent of the key's point-conversion setting. */
    KMS_GUARD_OSSL(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x), "P-256 public X");
    KMS_GUARD_OSSL(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y), "P-256 public Y");
    pub65[0] = 0x04;
    KMS_ENSURE(BN_bn2binpad(x, pub65 + 1, 32) == 32 && BN_bn2binpad(y, pub65 + 33, 32) == 32,
               KMS_ERR_CRYPTO, "P-256 public point does not fit 32 bytes per coordinate");
out:
    BN_free(x);
    BN_free(y);
    return rc;
}

int kms_p256_pkcs8_der(const EVP_PKEY *key, uint8_t out[138])
{
    uint8_t pub65[65];
    size_t off = 0;
    int rc = 0;

    KMS_GUARD(p256_point(key, pub65));
    memcpy(out, PKCS8_PREFIX, sizeof(PKCS8_PREFIX));
    off = sizeof(PKCS8_PREFIX);
    KMS_GUARD(kms_p256_scalar(key, out + off));
    off += 32;
    memcpy(out + off, PKCS8_PUB_HDR, sizeof(PKCS8_PUB_HDR));
    off += sizeof(PKCS8_PUB_HDR);
    memcpy(out + off, pub65, sizeof(pub65));
out:
    if (rc < 0)
        OPENSSL_cleanse(out, 138);
    return rc;
}

int kms_p256_derive_child(const EVP_PKEY *parent, const struct kms_slice *ctx, size_t n_ctx,
                          EVP_PKEY **out)
{
    uint8_t d[32];
    uint8_t child[32];
    int rc = 0;

    *out = NULL;
    KMS_GUARD(kms_p256_scalar(parent, d));
    KMS_GUARD(kms_kdf_derive(d, sizeof(d), ctx, n_ctx, child, sizeof(child)));
    KMS_GUARD(kms_p256_from_scalar(child, out));
out:
    OPENSSL_cleanse(d, sizeof(d));
    OPENSSL_cleanse(child, sizeof(child));
    return rc;
}

int kms_derive_dh_secret(const EVP_PKEY *parent, const struct kms_slice *ctx, size_t n_ctx,
                         uint8_t out[32])
{
    EVP_PKEY *child = NULL;
    uint8_t der[138];
    int rc = 0;

    KMS_GUARD(kms_p256_derive_child(parent, ctx, n_ctx, &child));
    KMS_GUARD(kms_p256_pkcs8_der(child, der));
    SHA256(der, sizeof(der), out);
out:
    OPENSSL_cleanse(der, sizeof(der));
    EVP_PKEY_free(child);
    return rc;
}

/* ------------------------------------------------------------------ encodings */

int kms_pkey_to_pem(const EVP_PKEY *key, char **pem)
{
    uint8_t der[138];
    BIO *bio = NULL;
    BUF_MEM *mem = NULL;
    int rc = 0;

    *pem = NULL;
    bio = BIO_new(BIO_s_secmem());
    KMS_GUARD_PTR(bio);
    if (p256_check(key) == 0) {
        /* Our own DER, so the file is byte-identical to what ring/rcgen writes. */
        KMS_GUARD(kms_p256_pkcs8_der(key, der));
        KMS_ENSURE(PEM_write_bio(bio, "PRIVATE KEY", "", der, (long)sizeof(der)) > 0,
                   KMS_ERR_CRYPTO, "PEM encoding of private key failed");
    } else {
        kms_err_clear();
        KMS_ENSURE(key != NULL, KMS_ERR_INVAL, "no key to encode");
        KMS_GUARD_OSSL(PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL),
                       "PEM encoding of private key");
    }
    BIO_get_mem_ptr(bio, &mem);
    KMS_ENSURE(mem != NULL && mem->length > 0, KMS_ERR_CRYPTO, "PEM encoding produced nothing");
    *pem = malloc(mem->length + 1);
    KMS_GUARD_PTR(*pem);
    memcpy(*pem, mem->data, mem->length);
    (*pem)[mem->length] = '\0';
out:
    OPENSSL_cleanse(der, sizeof(der));
    BIO_free(bio); /* secure memory BIO wipes its buffer */
    return rc;
}

/* Never prompt for a passphrase: encrypted keys are simply rejected. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

int kms_pkey_from_pem(const char *pem, EVP_PKEY **out)
{
    BIO *bio = NULL;
    size_t len;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(pem != NULL, KMS_ERR_INVAL, "no PEM private key given");
    len = strnlen(pem, PEM_KEY_MAX + 1);
    KMS_ENSURE(len <= PEM_KEY_MAX, KMS_ERR_TOOBIG, "PEM private key exceeds %u bytes", PEM_KEY_MAX);
    bio = BIO_new_mem_buf(pem, (int)len);
    KMS_GUARD_PTR(bio);
    *out = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (*out == NULL) {
        rc = kms_err_ossl(KMS_ERR_PARSE, "cannot parse PEM private key");
        goto out;
    }
out:
    BIO_free(bio);
    return rc;
}

int kms_pkey_spki_der(const EVP_PKEY *key, uint8_t **der, size_t *len)
{
    uint8_t *p = NULL;
    int n;

    *der = NULL;
    *len = 0;
    if (key == NULL)
        return kms_err_set(KMS_ERR_INVAL, "no key to encode");
    n = i2d_PUBKEY(key, &p);
    if (n <= 0)
        return kms_err_ossl(KMS_ERR_CRYPTO, "SubjectPublicKeyInfo encoding failed");
    /* Hand out malloc memory so callers free() it. */
    *der = malloc((size_t)n);
    if (*der == NULL) {
        OPENSSL_free(p);
        return kms_err_set(KMS_ERR_NOMEM, "out of memory");
    }
    memcpy(*der, p, (size_t)n);
    OPENSSL_free(p);
    *len = (size_t)n;
    return 0;
}

/* ------------------------------------------------------------------ secp256k1 */

static secp256k1_context *k256_ctx;
static pthread_once_t k256_once = PTHREAD_ONCE_INIT;

/* One context for the process: randomized once for side-channel blinding, then only read,
 * which libsecp256k1 documents as safe from many threads. */
static void k256_init(void)
{
    uint8_t seed[32];
    int blinded;

    k256_ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    if (k256_ctx == NULL)
        return;
    /* Blinding is defence in depth: if it fails the context stays valid, only unblinded. */
    blinded = RAND_priv_bytes(seed, sizeof(seed)) == 1 &&
              secp256k1_context_randomize(k256_ctx, seed) == 1;
    (void)blinded;
    OPENSSL_cleanse(seed, sizeof(seed));
}

static const secp256k1_context *k256(void)
{
    (void)pthread_once(&k256_once, k256_init);
    return k256_ctx;
}

int kms_k256_random(uint8_t sk[32])
{
    const secp256k1_context *ctx = k256();

    if (ctx == NULL)
        return kms_err_set(KMS_ERR_CRYPTO, "secp256k1 context unavailable");
    for (int i = 0; i < 64; i++) {
        if (RAND_priv_bytes(sk, 32) != 1)
            return kms_err_ossl(KMS_ERR_CRYPTO, "random bytes for secp256k1 key");
        if (secp256k1_ec_seckey_verify(ctx, sk) == 1)
            return 0;
    }
    OPENSSL_cleanse(sk, 32);
    return kms_err_set(KMS_ERR_CRYPTO, "no valid secp256k1 scalar after 64 attempts");
}

static int k256_pub(const uint8_t sk[32], secp256k1_pubkey *pk)
{
    const secp256k1_context *ctx = k256();

    if (ctx == NULL)
        return kms_err_set(KMS_ERR_CRYPTO, "secp256k1 context unavailable");
    if (secp256k1_ec_pubkey_create(ctx, pk, sk) != 1)
        return kms_err_set(KMS_ERR_INVAL, "secp256k1 private scalar is out of range");
    return 0;
}

int kms_k256_pubkey(const uint8_t sk[32], uint8_t pub33[33])
{
    secp256k1_pubkey pk;
    size_t n = 33;
    int rc = 0;

    KMS_GUARD(k256_pub(sk, &pk));
    KMS_ENSURE(secp256k1_ec_pubkey_serialize(k256(), pub33, &n, &pk, SECP256K1_EC_COMPRESSED) ==
                       1 &&
                   n == 33,
               KMS_ERR_CRYPTO, "secp256k1 public key encoding failed");
out:
    return rc;
}

int kms_k256_pubkey_uncompressed(const uint8_t sk[32], uint8_t pub64[64])
{
    secp256k1_pubkey pk;
    uint8_t pub65[65];
    size_t n = sizeof(pub65);
    int rc = 0;

    KMS_GUARD(k256_pub(sk, &pk));
    KMS_ENSURE(secp256k1_ec_pubkey_serialize(k256(), pub65, &n, &pk, SECP256K1_EC_UNCOMPRESSED) ==
                       1 &&
                   n == sizeof(pub65),
               KMS_ERR_CRYPTO, "secp256k1 public key encoding failed");
    memcpy(pub64, pub65 + 1, 64);
out:
    return rc;
}

int kms_k256_sign(const uint8_t sk[32], const uint8_t digest[32], uint8_t sig65[65])
{
    const secp256k1_context *ctx = k256();
    secp256k1_ecdsa_recoverable_signature sig;
    int recid = 0;
    int rc = 0;

    KMS_ENSURE(ctx != NULL, KMS_ERR_CRYPTO, "secp256k1 context unavailable");
    /* Default nonce = RFC 6979; libsecp256k1 always emits low-S (as k256 normalizes). */
    KMS_ENSURE(secp256k1_ecdsa_sign_recoverable(ctx, &sig, digest, sk, NULL, NULL) == 1,
               KMS_ERR_INVAL, "secp256k1 signing failed: private scalar out of range");
    KMS_ENSURE(secp256k1_ecdsa_recoverable_signature_serialize_compact(ctx, sig65, &recid, &sig) ==
                       1 &&
                   recid >= 0 && recid <= 3,
               KMS_ERR_CRYPTO, "secp256k1 signature encoding failed");
    sig65[64] = (uint8_t)recid;
out:
    return rc;
}

int kms_k256_recover(const uint8_t sig65[65], const uint8_t digest[32], uint8_t pub33[33])
{
    const secp256k1_context *ctx = k256();
    secp256k1_ecdsa_recoverable_signature sig;
    secp256k1_pubkey pk;
    size_t n = 33;
    int rc = 0;

    KMS_ENSURE(ctx != NULL, KMS_ERR_CRYPTO, "secp256k1 context unavailable");
    KMS_ENSURE(sig65[64] <= 3, KMS_ERR_VERIFY, "signature recovery id %u is not 0..3", sig65[64]);
    KMS_ENSURE(secp256k1_ecdsa_recoverable_signature_parse_compact(ctx, &sig, sig65, sig65[64]) ==
                   1,
               KMS_ERR_VERIFY, "signature r or s is out of range");
    KMS_ENSURE(secp256k1_ecdsa_recover(ctx, &pk, &sig, digest) == 1, KMS_ERR_VERIFY,
               "no public key recovers from this signature");
    KMS_ENSURE(secp256k1_ec_pubkey_serialize(ctx, pub33, &n, &pk, SECP256K1_EC_COMPRESSED) == 1 &&
                   n == 33,
               KMS_ERR_CRYPTO, "secp256k1 public key encoding failed");
out:
    return rc;
}

int kms_k256_verify_recover(const uint8_t sig65[65], const uint8_t digest[32],
                            const uint8_t expect_pub33[33])
{
    uint8_t pub33[33];
    int rc = 0;

    KMS_GUARD(kms_k256_recover(sig65, digest, pub33));
    KMS_ENSURE(memcmp(pub33, expect_pub33, sizeof(pub33)) == 0, KMS_ERR_VERIFY,
               "signature recovers to a different secp256k1 key than expected");
out:
    return rc;
}

/* ------------------------------------------------------------------ X25519 */

int kms_x25519_pubkey(const uint8_t sk[32], uint8_t pub[32])
{
    EVP_PKEY *k = NULL;
    size_t n = 32;
    int rc = 0;

    /* OpenSSL clamps a copy internally; sk itself stays unclamped like x25519-dalek's. */
    k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, 32);
    GUARD_OSSL_PTR(k, "X25519 key import");
    KMS_GUARD_OSSL(EVP_PKEY_get_raw_public_key(k, pub, &n), "X25519 public key");
    KMS_ENSURE(n == 32, KMS_ERR_CRYPTO, "X25519 public key has %zu bytes", n);
out:
    EVP_PKEY_free(k);
    return rc;
}

/* ------------------------------------------------------------------ app keys */

#define SLICE_STR(s) ((struct kms_slice){(const uint8_t *)(s), sizeof(s) - 1})

void kms_k256_issued_digest(const uint8_t *app_id, size_t app_id_len, const uint8_t pub33[33],
                            uint8_t digest[32])
{
    struct kms_keccak k;

    kms_keccak256_init(&k);
    kms_keccak256_update(&k, "dstack-kms-issued:", 18);
    kms_keccak256_update(&k, app_id, app_id_len);
    kms_keccak256_update(&k, pub33, 33);
    kms_keccak256_final(&k, digest);
}

void kms_env_pubkey_digest(const uint8_t *app_id, size_t app_id_len, const uint64_t *timestamp,
                           const uint8_t pub[32], uint8_t digest[32])
{
    struct kms_keccak k;

    kms_keccak256_init(&k);
    kms_keccak256_update(&k, "dstack-env-encrypt-pubkey:", 26);
    kms_keccak256_update(&k, app_id, app_id_len);
    if (timestamp != NULL) {
        uint8_t be[8];

        for (int i = 0; i < 8; i++)
            be[i] = (uint8_t)(*timestamp >> (56 - 8 * i));
        kms_keccak256_update(&k, be, sizeof(be));
    }
    kms_keccak256_update(&k, pub, 32);
    kms_keccak256_final(&k, digest);
}

static int env_crypt_key(const EVP_PKEY *root_ca, const uint8_t *app_id, size_t app_id_len,
                         uint8_t key[32])
{
    struct kms_slice ctx[2] = {{app_id, app_id_len}, SLICE_STR("env-encrypt-key")};

    return kms_derive_dh_secret(root_ca, ctx, 2, key);
}

int kms_derive_app_keys(const EVP_PKEY *root_ca, const uint8_t root_k256[32], const uint8_t *app_id,
                        size_t app_id_len, const uint8_t *instance_id, size_t instance_id_len,
                        struct kms_app_keys *out)
{
    struct kms_slice disk_ctx[3] = {
        {app_id, app_id_len}, {instance_id, instance_id_len}, SLICE_STR("app-disk-crypt-key")};
    struct kms_slice k256_ctx_parts[2] = {{app_id, app_id_len}, SLICE_STR("app-key")};
    uint8_t digest[32];
    int rc = 0;

    memset(out, 0, sizeof(*out));
    KMS_ENSURE(app_id != NULL || app_id_len == 0, KMS_ERR_INVAL, "app id missing");
    KMS_ENSURE(instance_id != NULL || instance_id_len == 0, KMS_ERR_INVAL, "instance id missing");
    KMS_GUARD(kms_derive_dh_secret(root_ca, disk_ctx, 3, out->disk_crypt_key));
    KMS_GUARD(env_crypt_key(root_ca, app_id, app_id_len, out->env_crypt_key));
    KMS_GUARD(kms_kdf_derive(root_k256, 32, k256_ctx_parts, 2, out->k256_key, 32));
    KMS_GUARD(kms_k256_pubkey(out->k256_key, out->k256_pubkey));
    kms_k256_issued_digest(app_id, app_id_len, out->k256_pubkey, digest);
    KMS_GUARD(kms_k256_sign(root_k256, digest, out->k256_signature));
out:
    if (rc < 0)
        OPENSSL_cleanse(out, sizeof(*out));
    return rc;
}

int kms_derive_env_pubkey(const EVP_PKEY *root_ca, const uint8_t root_k256[32],
                          const uint8_t *app_id, size_t app_id_len, uint64_t timestamp,
                          struct kms_env_pubkey *out)
{
    uint8_t key[32];
    uint8_t digest[32];
    int rc = 0;

    memset(out, 0, sizeof(*out));
    KMS_ENSURE(app_id != NULL || app_id_len == 0, KMS_ERR_INVAL, "app id missing");
    KMS_GUARD(env_crypt_key(root_ca, app_id, app_id_len, key));
    KMS_GUARD(kms_x25519_pubkey(key, out->public_key));
    kms_env_pubkey_digest(app_id, app_id_len, NULL, out->public_key, digest);
    KMS_GUARD(kms_k256_sign(root_k256, digest, out->signature));
    kms_env_pubkey_digest(app_id, app_id_len, &timestamp, out->public_key, digest);
    KMS_GUARD(kms_k256_sign(root_k256, digest, out->signature_v1));
    out->timestamp = timestamp;
out:
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

int kms_derive_app_ca_key(const EVP_PKEY *root_ca, const uint8_t *app_id, size_t app_id_len,
                          EVP_PKEY **out)
{
    struct kms_slice ctx[2] = {{app_id, app_id_len}, SLICE_STR("app-ca")};

    *out = NULL;
    if (app_id == NULL && app_id_len > 0)
        return kms_err_set(KMS_ERR_INVAL, "app id missing");
    return kms_p256_derive_child(root_ca, ctx, 2, out);
}

int kms_bootstrap_report_data(const uint8_t *ca_spki, size_t ca_spki_len,
                              const uint8_t k256_pub33[33], uint8_t out[64])
{
    static const char tag[] = "dstack-kms-genereted-keys-v1:"; /* typo is wire format */
    struct kms_keccak k;
    char *hex = NULL;
    char pubhex[67];
    int rc = 0;

    KMS_ENSURE(ca_spki != NULL && ca_spki_len > 0 && ca_spki_len <= 4096, KMS_ERR_INVAL,
               "root CA public key must be 1..4096 bytes of DER");
    hex = kms_hex_dup(ca_spki, ca_spki_len, 0);
    KMS_GUARD_PTR(hex);
    kms_hex_encode(k256_pub33, 33, pubhex);
    kms_keccak256_init(&k);
    kms_keccak256_update(&k, tag, sizeof(tag) - 1);
    kms_keccak256_update(&k, hex, strlen(hex));
    kms_keccak256_update(&k, ";", 1);
    kms_keccak256_update(&k, pubhex, 66);
    kms_keccak256_update(&k, ";", 1);
    kms_keccak256_final(&k, out);
    memset(out + 32, 0, 32);
out:
    free(hex);
    return rc;
}
