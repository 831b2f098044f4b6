/*
 * node/crypto: key derivation reproduces the reference vectors byte for byte
 * (fixtures/kdf/ JSON files), secp256k1 signatures recover to the signer and only to it, and
 * certificates issued by kms_cert_issue build a chain OpenSSL accepts.
 */
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/hex.h"
#include "common/keccak.h"
#include "node/crypto.h"
#include "test.h"

/* ------------------------------------------------------------------ fixture helpers */

static json_t *load_json(const char *rel)
{
    json_error_t jerr;
    json_t *j = json_load_file(kms_test_fixture(rel), 0, &jerr);

    if (j == NULL)
        fprintf(stderr, "  cannot load %s: %s\n", rel, jerr.text);
    return j;
}

/* Decodes hex field `name` of object o into a malloc'd buffer. */
static uint8_t *jhex(json_t *o, const char *name, size_t *len)
{
    const char *s = json_string_value(json_object_get(o, name));
    uint8_t *p = NULL;

    *len = 0;
    if (s == NULL || kms_hex_decode(s, &p, len) != 0) {
        fprintf(stderr, "  fixture field %s missing or not hex\n", name);
        return NULL;
    }
    return p;
}

/* 1 if hex field `name` equals the n bytes at p. */
static int jhex_eq(json_t *o, const char *name, const uint8_t *p, size_t n)
{
    size_t len;
    uint8_t *want = jhex(o, name, &len);
    int eq = want != NULL && len == n && memcmp(want, p, n) == 0;

    if (!eq) {
        char *got = kms_hex_dup(p, n, 0);
        fprintf(stderr, "  %s mismatch: got %s want %s\n", name, got ? got : "?",
                json_string_value(json_object_get(o, name)));
        free(got);
    }
    free(want);
    return eq;
}

/* The root CA key of a vector case, from its scalar. */
static EVP_PKEY *case_root(json_t *c)
{
    uint8_t d[32];
    EVP_PKEY *k = NULL;

    if (kms_hex_decode_exact(json_string_value(json_object_get(c, "root_ca_scalar")), d, 32) != 0)
        return NULL;
    if (kms_p256_from_scalar(d, &k) != 0)
        k = NULL;
    OPENSSL_cleanse(d, sizeof(d));
    return k;
}

/* ------------------------------------------------------------------ HKDF / P-256 */

/* RFC 5869 test case 1 shape, but with salt "RATLS": HKDF output is deterministic and the
 * ctx parts are concatenated (splitting the info differently gives the same bytes). */
static void test_kdf_concat(void)
{
    const uint8_t ikm[32] = {1, 2, 3};
    struct kms_slice one[1] = {{(const uint8_t *)"abcdef", 6}};
    struct kms_slice three[3] = {{(const uint8_t *)"ab", 2}, {(const uint8_t *)"", 0},
                                 {(const uint8_t *)"cdef", 4}};
    struct kms_slice other[1] = {{(const uint8_t *)"abcdeg", 6}};
    uint8_t a[42], b[42], c[42];

    CHECK_OK(kms_kdf_derive(ikm, sizeof(ikm), one, 1, a, sizeof(a)));
    CHECK_OK(kms_kdf_derive(ikm, sizeof(ikm), three, 3, b, sizeof(b)));
    CHECK_MEM(a, b, sizeof(a));
    CHECK_OK(kms_kdf_derive(ikm, sizeof(ikm), other, 1, c, sizeof(c)));
    CHECK(memcmp(a, c, sizeof(a)) != 0);
    CHECK_RC(kms_kdf_derive(NULL, 0, one, 1, a, sizeof(a)), KMS_ERR_INVAL);
}

/* The HKDF salt is "RATLS": compare against OpenSSL's HKDF with the salt given explicitly
 * through the one-shot EVP_PKEY interface (independent code path). */
static void test_kdf_salt(void)
{
    const uint8_t ikm[32] = {0x42};
    struct kms_slice info[1] = {{(const uint8_t *)"info", 4}};
    uint8_t got[32], want[32];
    size_t wl = sizeof(want);
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);

    CHECK(pc != NULL);
    CHECK(EVP_PKEY_derive_init(pc) == 1);
    CHECK(EVP_PKEY_CTX_set_hkdf_md(pc, EVP_sha256()) == 1);
    CHECK(EVP_PKEY_CTX_set1_hkdf_salt(pc, (const unsigned char *)"RATLS", 5) == 1);
    CHECK(EVP_PKEY_CTX_set1_hkdf_key(pc, ikm, sizeof(ikm)) == 1);
    CHECK(EVP_PKEY_CTX_add1_hkdf_info(pc, (const unsigned char *)"info", 4) == 1);
    CHECK(EVP_PKEY_derive(pc, want, &wl) == 1);
    EVP_PKEY_CTX_free(pc);
    CHECK_OK(kms_kdf_derive(ikm, sizeof(ikm), info, 1, got, sizeof(got)));
    CHECK_MEM(got, want, sizeof(got));
}

/* The reference's own vector: the root PKCS#8 DER is reproduced exactly from the scalar, and
 * derive_dh_secret(root, ["context one","context two"]) gives the published secret. */
static void test_upstream_vector(void)
{
    json_t *j = load_json("kdf/upstream-vector.json");
    size_t der_len = 0;
    uint8_t *der = j ? jhex(j, "root_ca_pkcs8_der", &der_len) : NULL;
    struct kms_slice ctx[2];
    uint8_t mine[138], secret[32], d[32];
    EVP_PKEY *root = NULL;
    json_t *cj;

    CHECK(der != NULL && der_len == 138);
    if (der == NULL || der_len != 138)
        goto out;
    /* scalar at offset 36 of the DER */
    memcpy(d, der + 36, 32);
    CHECK_OK(kms_p256_from_scalar(d, &root));
    if (root == NULL)
        goto out;
    CHECK_OK(kms_p256_pkcs8_der(root, mine));
    CHECK_MEM(mine, der, 138);
    cj = json_object_get(j, "context");
    CHECK(json_array_size(cj) == 2);
    for (size_t i = 0; i < 2; i++) {
        const char *s = json_string_value(json_array_get(cj, i));
        ctx[i].p = (const uint8_t *)(s ? s : "");
        ctx[i].len = s ? strlen(s) : 0;
    }
    CHECK_OK(kms_derive_dh_secret(root, ctx, 2, secret));
    CHECK(jhex_eq(j, "dh_secret", secret, 32));
    /* one context part changed → a different secret */
    {
        uint8_t before[32];

        memcpy(before, secret, 32);
        ctx[1].len--;
        CHECK_OK(kms_derive_dh_secret(root, ctx, 2, secret));
        CHECK(memcmp(before, secret, 32) != 0);
    }
out:
    EVP_PKEY_free(root);
    free(der);
    json_decref(j);
}

/* Our byte-built PKCS#8 equals OpenSSL's own encoder for random keys (including scalars with
 * a leading zero byte, which must stay 32 bytes), and the PEM round-trips the key. */
static void test_pkcs8_matches_openssl(void)
{
    int leading_zero_seen = 0;

    for (int i = 0; i < 300; i++) {
        EVP_PKEY *k = NULL, *k2 = NULL;
        uint8_t mine[138], d[32], d2[32];
        unsigned char *ossl = NULL;
        char *pem = NULL;
        int n;

        CHECK_OK(kms_p256_generate(&k));
        if (k == NULL)
            return;
        CHECK_OK(kms_p256_pkcs8_der(k, mine));
        CHECK_OK(kms_p256_scalar(k, d));
        leading_zero_seen |= d[0] == 0;
        {
            PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
            n = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &ossl) : -1;
            PKCS8_PRIV_KEY_INFO_free(p8);
        }
        CHECK(n == 138);
        if (n == 138)
            CHECK_MEM(mine, ossl, 138);
        OPENSSL_free(ossl);
        if (i < 5) {
            CHECK_OK(kms_pkey_to_pem(k, &pem));
            CHECK(pem != NULL && strstr(pem, "-----BEGIN PRIVATE KEY-----") == pem);
            CHECK_OK(kms_pkey_from_pem(pem, &k2));
            if (k2 != NULL) {
                CHECK_OK(kms_p256_scalar(k2, d2));
                CHECK_MEM(d, d2, 32);
                CHECK(EVP_PKEY_eq(k, k2) == 1);
            }
            kms_free_secret(pem, pem ? strlen(pem) : 0);
            EVP_PKEY_free(k2);
        }
        EVP_PKEY_free(k);
    }
    /* 300 keys: P(no leading zero) = (255/256)^300 ≈ 0.31; only informative */
    printf("     (leading-zero scalar seen: %s)\n", leading_zero_seen ? "yes" : "no");
}

/* A scalar with leading zero bytes is padded back to 32 bytes; 0 and n are rejected. */
static void test_scalar_edges(void)
{
    uint8_t d[32] = {0}, back[32], der[138];
    EVP_PKEY *k = NULL;
    static const uint8_t n_order[32] = {
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};

    d[31] = 7;
    CHECK_OK(kms_p256_from_scalar(d, &k));
    CHECK_OK(kms_p256_scalar(k, back));
    CHECK_MEM(d, back, 32);
    CHECK_OK(kms_p256_pkcs8_der(k, der));
    CHECK_MEM(der + 36, d, 32);
    EVP_PKEY_free(k);
    k = NULL;
    d[31] = 0;
    CHECK_RC(kms_p256_from_scalar(d, &k), KMS_ERR_CRYPTO);
    CHECK_DETAIL("out of range");
    CHECK(k == NULL);
    CHECK_RC(kms_p256_from_scalar(n_order, &k), KMS_ERR_CRYPTO);
    CHECK_DETAIL("out of range");
}

/* Non-P-256 keys are refused by the P-256 functions. */
static void test_wrong_curve(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-384");
    uint8_t d[32];

    CHECK(k != NULL);
    CHECK_RC(kms_p256_scalar(k, d), KMS_ERR_INVAL);
    CHECK_DETAIL("not P-256");
    EVP_PKEY_free(k);
}

/* ------------------------------------------------------------------ app keys */

/* Every case of app-key-vectors.json reproduces byte for byte. */
static void test_app_key_vectors(void)
{
    json_t *j = load_json("kdf/app-key-vectors.json");
    size_t n = json_array_size(j);

    CHECK(n >= 3);
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(j, i);
        EVP_PKEY *root = case_root(c), *app_ca = NULL;
        uint8_t k256[32], pub[32], *spki = NULL;
        size_t app_len = 0, inst_len = 0, spki_len = 0;
        uint8_t *app = jhex(c, "app_id", &app_len);
        uint8_t *inst = jhex(c, "instance_id", &inst_len);
        struct kms_app_keys keys, keys2;

        CHECK(root != NULL && app != NULL && inst != NULL);
        if (root == NULL || app == NULL || inst == NULL)
            goto next;
        CHECK_OK(kms_hex_decode_exact(json_string_value(json_object_get(c, "root_k256_scalar")),
                                      k256, 32));
        CHECK_OK(kms_derive_app_keys(root, k256, app, app_len, inst, inst_len, &keys));
        CHECK(jhex_eq(c, "disk_crypt_key", keys.disk_crypt_key, 32));
        CHECK(jhex_eq(c, "env_crypt_key", keys.env_crypt_key, 32));
        CHECK(jhex_eq(c, "k256_key", keys.k256_key, 32));
        CHECK(jhex_eq(c, "k256_pubkey", keys.k256_pubkey, 33));
        CHECK(jhex_eq(c, "k256_signature", keys.k256_signature, 65));
        /* deterministic: a second run gives the same signature */
        CHECK_OK(kms_derive_app_keys(root, k256, app, app_len, inst, inst_len, &keys2));
        CHECK_MEM(keys.k256_signature, keys2.k256_signature, 65);
        CHECK_OK(kms_x25519_pubkey(keys.env_crypt_key, pub));
        CHECK(jhex_eq(c, "env_crypt_pubkey", pub, 32));
        CHECK_OK(kms_derive_app_ca_key(root, app, app_len, &app_ca));
        if (app_ca != NULL) {
            CHECK_OK(kms_pkey_spki_der(app_ca, &spki, &spki_len));
            CHECK(jhex_eq(c, "app_ca_spki", spki, spki_len));
        }
        OPENSSL_cleanse(&keys, sizeof(keys));
        OPENSSL_cleanse(&keys2, sizeof(keys2));
    next:
        free(spki);
        EVP_PKEY_free(app_ca);
        EVP_PKEY_free(root);
        free(app);
        free(inst);
    }
    json_decref(j);
}

/* The issued k256 signature recovers to the root k256 public key; flipping any one of a few
 * signature bytes (r, s, recid) or the digest makes kms_k256_verify_recover fail. */
static void test_k256_recover(void)
{
    json_t *j = load_json("kdf/app-key-vectors.json");

    for (size_t i = 0; i < json_array_size(j); i++) {
        json_t *c = json_array_get(j, i);
        uint8_t root_sk[32], root_pub[33], got[33], sig[65], digest[32], app_pub[33];
        size_t app_len = 0;
        uint8_t *app = jhex(c, "app_id", &app_len);
        static const size_t flips[] = {0, 31, 32, 63, 64};

        CHECK_OK(kms_hex_decode_exact(json_string_value(json_object_get(c, "root_k256_scalar")),
                                      root_sk, 32));
        CHECK_OK(kms_hex_decode_exact(json_string_value(json_object_get(c, "k256_signature")),
                                      sig, 65));
        CHECK_OK(kms_hex_decode_exact(json_string_value(json_object_get(c, "k256_pubkey")),
                                      app_pub, 33));
        CHECK_OK(kms_k256_pubkey(root_sk, root_pub));
        kms_k256_issued_digest(app, app_len, app_pub, digest);
        CHECK_OK(kms_k256_recover(sig, digest, got));
        CHECK_MEM(got, root_pub, 33);
        CHECK_OK(kms_k256_verify_recover(sig, digest, root_pub));
        for (size_t f = 0; f < sizeof(flips) / sizeof(flips[0]); f++) {
            sig[flips[f]] ^= 0x01;
            CHECK_RC(kms_k256_verify_recover(sig, digest, root_pub), KMS_ERR_VERIFY);
            sig[flips[f]] ^= 0x01;
        }
        digest[5] ^= 0x80;
        CHECK_RC(kms_k256_verify_recover(sig, digest, root_pub), KMS_ERR_VERIFY);
        CHECK_DETAIL("different secp256k1 key");
        digest[5] ^= 0x80;
        /* recid outside 0..3 is refused outright */
        sig[64] = 27;
        CHECK_RC(kms_k256_recover(sig, digest, got), KMS_ERR_VERIFY);
        CHECK_DETAIL("recovery id");
        /* s = 0 is not a signature */
        sig[64] = 0;
        memset(sig + 32, 0, 32);
        CHECK_RC(kms_k256_recover(sig, digest, got), KMS_ERR_VERIFY);
        free(app);
    }
    json_decref(j);
}

/* Signatures are low-S (s <= n/2) and the uncompressed key matches the compressed one. */
static void test_k256_low_s(void)
{
    static const uint8_t half_n[32] = {
        0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0};
    uint8_t sk[32], pub33[33], pub64[64], digest[32], sig[65];

    CHECK_OK(kms_k256_random(sk));
    CHECK_OK(kms_k256_pubkey(sk, pub33));
    CHECK_OK(kms_k256_pubkey_uncompressed(sk, pub64));
    CHECK_MEM(pub33 + 1, pub64, 32);
    CHECK(pub33[0] == (uint8_t)(0x02 | (pub64[63] & 1)));
    for (int i = 0; i < 64; i++) {
        kms_keccak256(&i, sizeof(i), digest);
        CHECK_OK(kms_k256_sign(sk, digest, sig));
        CHECK(memcmp(sig + 32, half_n, 32) <= 0);
        CHECK(sig[64] <= 1);
        CHECK_OK(kms_k256_verify_recover(sig, digest, pub33));
    }
    memset(sk, 0, sizeof(sk));
    CHECK_RC(kms_k256_sign(sk, digest, sig), KMS_ERR_INVAL);
    CHECK_RC(kms_k256_pubkey(sk, pub33), KMS_ERR_INVAL);
}

/* GetAppEnvEncryptPubKey: the public key is the X25519 key of env_crypt_key, both signatures
 * recover to the root k256 key over their own messages, and v1 binds the timestamp. */
static void test_env_pubkey(void)
{
    json_t *j = load_json("kdf/app-key-vectors.json");

    for (size_t i = 0; i < json_array_size(j); i++) {
        json_t *c = json_array_get(j, i);
        EVP_PKEY *root = case_root(c);
        uint8_t root_sk[32], root_pub[33], digest[32];
        size_t app_len = 0;
        uint8_t *app = jhex(c, "app_id", &app_len);
        const uint64_t ts = 1700000000123ull + i;
        uint64_t ts_other = ts + 1;
        struct kms_env_pubkey ep;
        struct kms_keccak k;
        uint8_t manual[32];

        CHECK_OK(kms_hex_decode_exact(json_string_value(json_object_get(c, "root_k256_scalar")),
                                      root_sk, 32));
        CHECK_OK(kms_k256_pubkey(root_sk, root_pub));
        CHECK_OK(kms_derive_env_pubkey(root, root_sk, app, app_len, ts, &ep));
        CHECK(ep.timestamp == ts);
        CHECK(jhex_eq(c, "env_crypt_pubkey", ep.public_key, 32));
        kms_env_pubkey_digest(app, app_len, NULL, ep.public_key, digest);
        /* the legacy message spelled out independently */
        kms_keccak256_init(&k);
        kms_keccak256_update(&k, "dstack-env-encrypt-pubkey", 25);
        kms_keccak256_update(&k, ":", 1);
        kms_keccak256_update(&k, app, app_len);
        kms_keccak256_update(&k, ep.public_key, 32);
        kms_keccak256_final(&k, manual);
        CHECK_MEM(digest, manual, 32);
        CHECK_OK(kms_k256_verify_recover(ep.signature, digest, root_pub));
        CHECK_RC(kms_k256_verify_recover(ep.signature_v1, digest, root_pub), KMS_ERR_VERIFY);
        kms_env_pubkey_digest(app, app_len, &ts, ep.public_key, digest);
        CHECK_OK(kms_k256_verify_recover(ep.signature_v1, digest, root_pub));
        kms_env_pubkey_digest(app, app_len, &ts_other, ep.public_key, digest);
        CHECK_RC(kms_k256_verify_recover(ep.signature_v1, digest, root_pub), KMS_ERR_VERIFY);
        EVP_PKEY_free(root);
        free(app);
    }
    json_decref(j);
}

/* Bootstrap report_data = keccak256(tag + hex(spki) + ";" + hex(pub) + ";") || 0^32, with the
 * hex lowercase; computed here independently from the spec's formula. */
static void test_bootstrap_report_data(void)
{
    EVP_PKEY *k = NULL;
    uint8_t *spki = NULL, sk[32], pub[33], rd[64], want[32], zero[32] = {0};
    size_t spki_len = 0;
    char *msg = NULL, *hs = NULL, hp[67];

    CHECK_OK(kms_p256_generate(&k));
    CHECK_OK(kms_pkey_spki_der(k, &spki, &spki_len));
    CHECK(spki_len == 91);
    CHECK_OK(kms_k256_random(sk));
    CHECK_OK(kms_k256_pubkey(sk, pub));
    CHECK_OK(kms_bootstrap_report_data(spki, spki_len, pub, rd));
    hs = kms_hex_dup(spki, spki_len, 0);
    kms_hex_encode(pub, 33, hp);
    msg = malloc(strlen(hs) + 200);
    sprintf(msg, "dstack-kms-genereted-keys-v1:%s;%s;", hs, hp);
    kms_keccak256(msg, strlen(msg), want);
    CHECK_MEM(rd, want, 32);
    CHECK_MEM(rd + 32, zero, 32);
    pub[10] ^= 1;
    CHECK_OK(kms_bootstrap_report_data(spki, spki_len, pub, rd));
    CHECK(memcmp(rd, want, 32) != 0);
    CHECK_RC(kms_bootstrap_report_data(spki, 0, pub, rd), KMS_ERR_INVAL);
    free(msg);
    free(hs);
    free(spki);
    EVP_PKEY_free(k);
}

/* CERT_TESTS */

int main(void)
{
    RUN(test_kdf_concat);
    RUN(test_kdf_salt);
    RUN(test_upstream_vector);
    RUN(test_pkcs8_matches_openssl);
    RUN(test_scalar_edges);
    RUN(test_wrong_curve);
    RUN(test_app_key_vectors);
    RUN(test_k256_recover);
    RUN(test_k256_low_s);
    RUN(test_env_pubkey);
    RUN(test_bootstrap_report_data);
    TEST_MAIN_END();
}
