/*
 * common/crypto (kms_crypto): key derivation reproduces the reference vectors byte for byte
 * (fixtures/kdf/ JSON files), secp256k1 signatures recover to the signer and only to it, and
 * certificates issued by kms_cert_issue build a chain OpenSSL accepts.
 */
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/hex.h"
#include "common/keccak.h"
#include "common/crypto/crypto.h"
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
    struct kms_slice three[3] = {
        {(const uint8_t *)"ab", 2}, {(const uint8_t *)"", 0}, {(const uint8_t *)"cdef", 4}};
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

/* OpenSSL's own PKCS#8 encoder output; returns its length. */
static int ossl_pkcs8(EVP_PKEY *k, unsigned char **der)
{
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
    int n = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, der) : -1;

    PKCS8_PRIV_KEY_INFO_free(p8);
    return n;
}

/* Our byte-built PKCS#8 equals OpenSSL's own encoder for random keys, and the PEM
 * round-trips the key. */
static void test_pkcs8_matches_openssl(void)
{
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
        n = ossl_pkcs8(k, &ossl);
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
}

/* A scalar with leading zero bytes is padded back to 32 bytes (and still matches OpenSSL's
 * encoder); 0 and n are rejected. */
static void test_scalar_edges(void)
{
    uint8_t d[32] = {0}, back[32], der[138];
    unsigned char *ossl = NULL;
    EVP_PKEY *k = NULL;
    static const uint8_t n_order[32] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
                                        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                        0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84,
                                        0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};

    d[31] = 7;
    CHECK_OK(kms_p256_from_scalar(d, &k));
    CHECK_OK(kms_p256_scalar(k, back));
    CHECK_MEM(d, back, 32);
    CHECK_OK(kms_p256_pkcs8_der(k, der));
    CHECK_MEM(der + 36, d, 32);
    CHECK(ossl_pkcs8(k, &ossl) == 138);
    if (ossl != NULL)
        CHECK_MEM(der, ossl, 138);
    OPENSSL_free(ossl);
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

/* Input limits and malformed inputs get their precise error: HKDF info over 1024 bytes,
 * an oversized / garbage / passphrase-protected PEM key (never prompts). */
static void test_key_input_errors(void)
{
    static uint8_t big[600];
    struct kms_slice parts[2] = {{big, sizeof(big)}, {big, sizeof(big)}};
    const uint8_t ikm[32] = {9};
    uint8_t out[32];
    EVP_PKEY *k = NULL, *back = NULL;
    char *huge = malloc(20000);
    BIO *bio = BIO_new(BIO_s_mem());
    BUF_MEM *mem = NULL;
    char *enc = NULL;

    CHECK_OK(kms_kdf_derive(ikm, sizeof(ikm), parts, 1, out, sizeof(out)));
    CHECK_RC(kms_kdf_derive(ikm, sizeof(ikm), parts, 2, out, sizeof(out)), KMS_ERR_TOOBIG);
    CHECK_DETAIL("exceeds 1024 bytes");
    if (huge != NULL) {
        memset(huge, 'A', 19999);
        huge[19999] = '\0';
        CHECK_RC(kms_pkey_from_pem(huge, &back), KMS_ERR_TOOBIG);
        free(huge);
    }
    CHECK_RC(
        kms_pkey_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", &back),
        KMS_ERR_PARSE);
    CHECK_DETAIL("cannot parse PEM private key");
    CHECK_OK(kms_p256_generate(&k));
    CHECK(bio != NULL && PEM_write_bio_PKCS8PrivateKey(bio, k, EVP_aes_256_cbc(), NULL, 0, NULL,
                                                       (void *)"pass") == 1);
    BIO_get_mem_ptr(bio, &mem);
    if (mem != NULL && mem->length > 0) {
        enc = strndup(mem->data, mem->length);
        CHECK_RC(kms_pkey_from_pem(enc, &back), KMS_ERR_PARSE);
        CHECK(back == NULL);
        free(enc);
    }
    BIO_free(bio);
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
        CHECK_OK(
            kms_hex_decode_exact(json_string_value(json_object_get(c, "k256_signature")), sig, 65));
        CHECK_OK(kms_hex_decode_exact(json_string_value(json_object_get(c, "k256_pubkey")), app_pub,
                                      33));
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
    static const uint8_t half_n[32] = {0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                       0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                       0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d,
                                       0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0};
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

struct sign_job {
    uint8_t sk[32];
    uint8_t pub[33];
    int failures;
};

static void *sign_worker(void *arg)
{
    struct sign_job *job = arg;
    uint8_t digest[32], sig[65], again[65];

    for (int i = 0; i < 200; i++) {
        kms_keccak256(&i, sizeof(i), digest);
        if (kms_k256_sign(job->sk, digest, sig) != 0 ||
            kms_k256_sign(job->sk, digest, again) != 0 || memcmp(sig, again, 65) != 0 ||
            kms_k256_verify_recover(sig, digest, job->pub) != 0)
            job->failures++;
    }
    return NULL;
}

/* The shared secp256k1 context is safe to use from several threads at once: concurrent
 * signers each get deterministic signatures that recover to their own key. */
static void test_k256_threads(void)
{
    struct sign_job jobs[4];
    pthread_t th[4];

    for (int t = 0; t < 4; t++) {
        memset(&jobs[t], 0, sizeof(jobs[t]));
        CHECK_OK(kms_k256_random(jobs[t].sk));
        CHECK_OK(kms_k256_pubkey(jobs[t].sk, jobs[t].pub));
    }
    for (int t = 0; t < 4; t++)
        CHECK(pthread_create(&th[t], NULL, sign_worker, &jobs[t]) == 0);
    for (int t = 0; t < 4; t++) {
        CHECK(pthread_join(th[t], NULL) == 0);
        CHECK(jobs[t].failures == 0);
    }
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
    snprintf(msg, strlen(hs) + 200, "dstack-kms-genereted-keys-v1:%s;%s;", hs, hp);
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

/* ------------------------------------------------------------------ certificates */

/* Issues a self-signed CA (O+CN, pathLen 1) and a leaf with SAN, usage and app id. */
static int make_chain(EVP_PKEY **ca_key, X509 **ca, EVP_PKEY **leaf_key, X509 **leaf)
{
    static const uint8_t app_id[20] = {0xaa, 0xbb, 0xcc};
    static const char *const san[] = {"kms.example.com", "alt.example.com"};
    struct kms_cert_params cap = {
        .org = "Dstack", .cn = "Dstack KMS CA", .is_ca = 1, .path_len = 1};
    struct kms_cert_params lp = {.cn = "kms.example.com",
                                 .san_dns = san,
                                 .n_san = 2,
                                 .path_len = -1,
                                 .usage = "kms:rpc",
                                 .app_id = app_id,
                                 .app_id_len = sizeof(app_id),
                                 .eku_server_auth = 1};

    *ca_key = *leaf_key = NULL;
    *ca = *leaf = NULL;
    if (kms_p256_generate(ca_key) != 0 || kms_p256_generate(leaf_key) != 0)
        return -1;
    if (kms_cert_issue(&cap, *ca_key, *ca_key, NULL, ca) != 0)
        return -1;
    if (kms_cert_issue(&lp, *leaf_key, *ca_key, *ca, leaf) != 0)
        return -1;
    return 0;
}

/* 1 if OpenSSL verifies leaf against the trust anchor root (purpose any). */
static int ossl_verify(X509 *root, X509 *leaf, int *err)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int ok = 0;

    *err = -1;
    if (st != NULL && ctx != NULL && X509_STORE_add_cert(st, root) == 1 &&
        X509_STORE_CTX_init(ctx, st, leaf, NULL) == 1) {
        ok = X509_verify_cert(ctx) == 1;
        *err = X509_STORE_CTX_get_error(ctx);
    }
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    ERR_clear_error();
    return ok;
}

/* A self-signed CA + leaf chain verifies with X509_verify_cert; a leaf from another CA with
 * the same DN does not (key ids and signature keep them apart). */
static void test_cert_chain(void)
{
    EVP_PKEY *ca_key, *leaf_key, *other_key = NULL;
    X509 *ca, *leaf, *other_ca = NULL;
    int err;
    struct kms_cert_params cap = {
        .org = "Dstack", .cn = "Dstack KMS CA", .is_ca = 1, .path_len = 1};

    CHECK(make_chain(&ca_key, &ca, &leaf_key, &leaf) == 0);
    CHECK(ossl_verify(ca, leaf, &err));
    CHECK(err == X509_V_OK);
    CHECK(ossl_verify(ca, ca, &err));
    /* same subject DN, different key: the leaf must not verify under it */
    CHECK_OK(kms_p256_generate(&other_key));
    CHECK_OK(kms_cert_issue(&cap, other_key, other_key, NULL, &other_ca));
    CHECK(!ossl_verify(other_ca, leaf, &err));
    CHECK(err != X509_V_OK);
    X509_free(other_ca);
    EVP_PKEY_free(other_key);
    X509_free(leaf);
    EVP_PKEY_free(leaf_key);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
}

/* The fields come back as issued: DN, SAN, KeyUsage, BasicConstraints/pathLen, EKU, usage
 * and app id extensions (non-critical), v3, positive serial, validity defaults. */
static void test_cert_fields(void)
{
    EVP_PKEY *ca_key, *leaf_key;
    X509 *ca, *leaf;
    uint8_t *ext = NULL;
    size_t ext_len = 0;
    GENERAL_NAMES *gens;
    char buf[256];
    const ASN1_INTEGER *serial;
    BIGNUM *sbn;
    int crit = -1, idx;

    CHECK(make_chain(&ca_key, &ca, &leaf_key, &leaf) == 0);
    if (leaf == NULL)
        return;
    CHECK(X509_get_version(ca) == X509_VERSION_3);
    /* DN: O then CN, UTF8String */
    CHECK(X509_NAME_entry_count(X509_get_subject_name(ca)) == 2);
    CHECK(OBJ_obj2nid(X509_NAME_ENTRY_get_object(
              X509_NAME_get_entry(X509_get_subject_name(ca), 0))) == NID_organizationName);
    CHECK(ASN1_STRING_type(X509_NAME_ENTRY_get_data(
              X509_NAME_get_entry(X509_get_subject_name(ca), 1))) == V_ASN1_UTF8STRING);
    CHECK(X509_NAME_get_text_by_NID(X509_get_subject_name(ca), NID_commonName, buf, sizeof(buf)) >
              0 &&
          strcmp(buf, "Dstack KMS CA") == 0);
    CHECK(X509_NAME_cmp(X509_get_issuer_name(leaf), X509_get_subject_name(ca)) == 0);
    CHECK(X509_NAME_entry_count(X509_get_subject_name(leaf)) == 1);
    /* CA: basicConstraints CA pathLen 1, keyUsage digitalSignature|keyCertSign|cRLSign */
    CHECK(X509_check_ca(ca) == 1);
    CHECK(X509_get_pathlen(ca) == 1);
    CHECK(X509_get_key_usage(ca) == (KU_DIGITAL_SIGNATURE | KU_KEY_CERT_SIGN | KU_CRL_SIGN));
    idx = X509_get_ext_by_NID(ca, NID_key_usage, -1);
    CHECK(idx >= 0 && X509_EXTENSION_get_critical(X509_get_ext(ca, idx)) == 1);
    idx = X509_get_ext_by_NID(ca, NID_basic_constraints, -1);
    CHECK(idx >= 0 && X509_EXTENSION_get_critical(X509_get_ext(ca, idx)) == 1);
    CHECK(X509_get_extended_key_usage(ca) == UINT32_MAX); /* no EKU on the CA */
    /* leaf: no basicConstraints, digitalSignature only, serverAuth EKU only */
    CHECK(X509_check_ca(leaf) == 0);
    CHECK(X509_get_ext_by_NID(leaf, NID_basic_constraints, -1) < 0);
    CHECK(X509_get_key_usage(leaf) == KU_DIGITAL_SIGNATURE);
    CHECK(X509_get_extended_key_usage(leaf) == XKU_SSL_SERVER);
    gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, &crit, NULL);
    CHECK(gens != NULL && sk_GENERAL_NAME_num(gens) == 2 && crit == 0);
    if (gens != NULL && sk_GENERAL_NAME_num(gens) == 2) {
        int type;
        ASN1_IA5STRING *d = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, 1), &type);
        CHECK(type == GEN_DNS && ASN1_STRING_length(d) == 15 &&
              memcmp(ASN1_STRING_get0_data(d), "alt.example.com", 15) == 0);
    }
    GENERAL_NAMES_free(gens);
    CHECK(X509_check_host(leaf, "kms.example.com", 0, 0, NULL) == 1);
    CHECK(X509_check_host(leaf, "other.example.com", 0, 0, NULL) == 0);
    /* custom extensions read back, non-critical */
    CHECK_OK(kms_ratls_get_ext(leaf, KMS_OID_CERT_USAGE, &ext, &ext_len));
    CHECK(ext_len == 7 && ext != NULL && memcmp(ext, "kms:rpc", 7) == 0);
    free(ext);
    ext = NULL;
    CHECK_OK(kms_ratls_get_ext(leaf, KMS_OID_APP_ID, &ext, &ext_len));
    CHECK(ext_len == 20 && ext != NULL && ext[0] == 0xaa && ext[19] == 0);
    free(ext);
    ext = NULL;
    for (int i = 0; i < X509_get_ext_count(leaf); i++) {
        X509_EXTENSION *e = X509_get_ext(leaf, i);
        char oid[64];
        OBJ_obj2txt(oid, sizeof(oid), X509_EXTENSION_get_object(e), 1);
        if (strncmp(oid, "1.3.6.1.4.1.62397.", 18) == 0)
            CHECK(X509_EXTENSION_get_critical(e) == 0);
    }
    CHECK_RC(kms_ratls_get_ext(ca, KMS_OID_CERT_USAGE, &ext, &ext_len), KMS_ERR_NOTFOUND);
    /* positive serial, at most 20 octets */
    serial = X509_get0_serialNumber(leaf);
    sbn = ASN1_INTEGER_to_BN(serial, NULL);
    CHECK(sbn != NULL && !BN_is_negative(sbn) && !BN_is_zero(sbn) && BN_num_bytes(sbn) <= 20);
    BN_free(sbn);
    /* validity defaults: now - 1 h .. + 3650 days */
    {
        int days = 0, secs = 0;
        CHECK(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(leaf), X509_get0_notAfter(leaf)));
        CHECK(days == 3650 && secs == 0);
        CHECK(X509_cmp_current_time(X509_get0_notBefore(leaf)) < 0);
    }
    /* key ids: leaf AKID = CA SKID */
    CHECK(X509_get0_subject_key_id(ca) != NULL && X509_get0_authority_key_id(leaf) != NULL &&
          ASN1_OCTET_STRING_cmp(X509_get0_subject_key_id(ca), X509_get0_authority_key_id(leaf)) ==
              0);
    X509_free(leaf);
    EVP_PKEY_free(leaf_key);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
}

/* Path length: a CA with pathLen 0 can issue a leaf but not an intermediate CA that issues a
 * leaf; path_len -1 writes no constraint; EKU clientAuth appears only when asked. */
static void test_cert_pathlen(void)
{
    EVP_PKEY *rk = NULL, *ik = NULL, *lk = NULL;
    X509 *root = NULL, *inter = NULL, *leaf = NULL;
    struct kms_cert_params rp = {.org = "Dstack", .cn = "Root", .is_ca = 1, .path_len = 0};
    struct kms_cert_params ip = {.cn = "Inter", .is_ca = 1, .path_len = -1};
    struct kms_cert_params lp = {.cn = "leaf", .path_len = -1, .eku_client_auth = 1};
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();

    CHECK_OK(kms_p256_generate(&rk));
    CHECK_OK(kms_p256_generate(&ik));
    CHECK_OK(kms_p256_generate(&lk));
    CHECK_OK(kms_cert_issue(&rp, rk, rk, NULL, &root));
    CHECK_OK(kms_cert_issue(&ip, ik, rk, root, &inter));
    CHECK_OK(kms_cert_issue(&lp, lk, ik, inter, &leaf));
    CHECK(X509_get_pathlen(root) == 0);
    CHECK(X509_get_pathlen(inter) == -1 && X509_check_ca(inter) == 1);
    CHECK(X509_get_extended_key_usage(leaf) == XKU_SSL_CLIENT);
    CHECK(X509_STORE_add_cert(st, root) == 1);
    sk_X509_push(untrusted, inter);
    CHECK(X509_STORE_CTX_init(ctx, st, leaf, untrusted) == 1);
    CHECK(X509_verify_cert(ctx) != 1);
    CHECK(X509_STORE_CTX_get_error(ctx) == X509_V_ERR_PATH_LENGTH_EXCEEDED);
    ERR_clear_error();
    sk_X509_free(untrusted);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    X509_free(leaf);
    X509_free(inter);
    X509_free(root);
    EVP_PKEY_free(lk);
    EVP_PKEY_free(ik);
    EVP_PKEY_free(rk);
}

/* kms_cert_signed_by: true for the real issuer, false for another key and after one byte of
 * the signature is flipped; PEM round trip keeps the certificate byte-identical. */
static void test_cert_signed_by_and_pem(void)
{
    EVP_PKEY *ca_key, *leaf_key;
    X509 *ca, *leaf, *back = NULL, *tampered = NULL;
    char *pem = NULL;
    unsigned char *der = NULL, *der2 = NULL;
    int n, n2;

    CHECK(make_chain(&ca_key, &ca, &leaf_key, &leaf) == 0);
    if (leaf == NULL)
        return;
    CHECK(kms_cert_signed_by(leaf, ca_key) == 1);
    CHECK(kms_cert_signed_by(ca, ca_key) == 1);
    CHECK(kms_cert_signed_by(leaf, leaf_key) == 0);
    CHECK(kms_cert_signed_by(NULL, ca_key) == 0);
    CHECK_OK(kms_cert_to_pem(leaf, &pem));
    CHECK(pem != NULL && strncmp(pem, "-----BEGIN CERTIFICATE-----", 27) == 0);
    CHECK_OK(kms_cert_from_pem(pem, &back));
    n = i2d_X509(leaf, &der);
    n2 = back != NULL ? i2d_X509(back, &der2) : -1;
    CHECK(n > 0 && n == n2 && memcmp(der, der2, (size_t)n) == 0);
    /* flip the last byte (inside the signature) */
    if (n > 0) {
        const unsigned char *q = der;
        der[n - 1] ^= 0x01;
        tampered = d2i_X509(NULL, &q, n);
        CHECK(tampered != NULL);
        CHECK(kms_cert_signed_by(tampered, ca_key) == 0);
    }
    {
        X509 *junk = NULL;

        CHECK_RC(kms_cert_from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                                   &junk),
                 KMS_ERR_PARSE);
        CHECK_DETAIL("no parsable PEM certificate");
        CHECK_RC(kms_cert_from_pem("", &junk), KMS_ERR_PARSE);
        CHECK(junk == NULL);
    }
    OPENSSL_free(der);
    OPENSSL_free(der2);
    X509_free(tampered);
    X509_free(back);
    free(pem);
    X509_free(leaf);
    EVP_PKEY_free(leaf_key);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
}

/* Issuance refuses inconsistent inputs: a self-signed cert whose issuer key is not the subject
 * key, an issuer key that does not match the issuer certificate, reversed validity. */
static void test_cert_issue_rejects(void)
{
    EVP_PKEY *a = NULL, *b = NULL;
    X509 *ca = NULL, *x = NULL;
    struct kms_cert_params p = {.cn = "x", .is_ca = 1, .path_len = 0};
    struct kms_cert_params bad_time = {
        .cn = "x", .path_len = -1, .not_before = 2000000000, .not_after = 1000000000};
    struct kms_cert_params no_cn = {.path_len = -1};

    CHECK_OK(kms_p256_generate(&a));
    CHECK_OK(kms_p256_generate(&b));
    CHECK_RC(kms_cert_issue(&p, a, b, NULL, &x), KMS_ERR_INVAL);
    CHECK_DETAIL("issuer key differs");
    CHECK(x == NULL);
    CHECK_OK(kms_cert_issue(&p, a, a, NULL, &ca));
    CHECK_RC(kms_cert_issue(&p, b, b, ca, &x), KMS_ERR_INVAL);
    CHECK_DETAIL("does not match the issuer certificate");
    CHECK_RC(kms_cert_issue(&bad_time, b, a, ca, &x), KMS_ERR_INVAL);
    CHECK_DETAIL("not_after");
    CHECK_RC(kms_cert_issue(&no_cn, b, a, ca, &x), KMS_ERR_INVAL);
    CHECK(x == NULL);
    X509_free(ca);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

/* With p->att set, the attestation goes into the certificate (writer rule of attest/ratls.c)
 * and reads back with the same mode, quote and report_data; without it there is none. */
static void test_cert_attestation_ext(void)
{
    static uint8_t quote[] = {0xd2, 0x84, 0x44, 0xa1};
    static char config[] = "{}";
    struct kms_attestation att;
    struct kms_attestation *back = NULL;
    struct kms_cert_params p = {.cn = "rpc", .path_len = -1, .usage = "kms:rpc", .att = &att};
    EVP_PKEY *k = NULL;
    X509 *c = NULL, *plain = NULL;

    memset(&att, 0, sizeof(att));
    att.mode = KMS_ATT_NITRO;
    att.nsm_quote.p = quote;
    att.nsm_quote.len = sizeof(quote);
    memset(att.report_data, 0x5a, sizeof(att.report_data));
    att.config = config;
    CHECK_OK(kms_p256_generate(&k));
    CHECK_OK(kms_cert_issue(&p, k, k, NULL, &c));
    if (c != NULL) {
        CHECK_OK(kms_ratls_get_attestation(c, &back));
        CHECK(back != NULL && back->mode == KMS_ATT_NITRO && back->nsm_quote.len == sizeof(quote) &&
              memcmp(back->nsm_quote.p, quote, sizeof(quote)) == 0 &&
              memcmp(back->report_data, att.report_data, 64) == 0);
        kms_att_free(back);
        back = NULL;
    }
    p.att = NULL;
    CHECK_OK(kms_cert_issue(&p, k, k, NULL, &plain));
    if (plain != NULL)
        CHECK_RC(kms_ratls_get_attestation(plain, &back), KMS_ERR_ATT_NONE);
    X509_free(plain);
    X509_free(c);
    EVP_PKEY_free(k);
}

/* A SAN entry that parses as an IP address is written as iPAddress (as rcgen does), so
 * OpenSSL's IP check matches it and a DNS check for the same text does not. */
static void test_cert_san_ip(void)
{
    const char *names[2] = {"127.0.0.1", "kms.local"};
    struct kms_cert_params p = {.cn = "127.0.0.1", .san_dns = names, .n_san = 2, .path_len = -1};
    EVP_PKEY *k = NULL;
    X509 *c = NULL;
    GENERAL_NAMES *gens = NULL;
    int type = -1;

    CHECK_OK(kms_p256_generate(&k));
    CHECK_OK(kms_cert_issue(&p, k, k, NULL, &c));
    if (c != NULL) {
        gens = X509_get_ext_d2i(c, NID_subject_alt_name, NULL, NULL);
        CHECK(gens != NULL && sk_GENERAL_NAME_num(gens) == 2);
        if (gens != NULL && sk_GENERAL_NAME_num(gens) == 2) {
            (void)GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, 0), &type);
            CHECK(type == GEN_IPADD);
            (void)GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, 1), &type);
            CHECK(type == GEN_DNS);
        }
        GENERAL_NAMES_free(gens);
        CHECK(X509_check_ip_asc(c, "127.0.0.1", 0) == 1);
        CHECK(X509_check_ip_asc(c, "127.0.0.2", 0) == 0);
        CHECK(X509_check_host(c, "kms.local", 0, 0, NULL) == 1);
    }
    X509_free(c);
    EVP_PKEY_free(k);
}

/* SAN limits: more than 64 names is TOOBIG, an empty name is INVAL. */
static void test_cert_san_limits(void)
{
    const char *names[65];
    const char *empty[1] = {""};
    struct kms_cert_params p = {.cn = "x", .san_dns = names, .n_san = 65, .path_len = -1};
    EVP_PKEY *k = NULL;
    X509 *c = NULL;

    for (int i = 0; i < 65; i++)
        names[i] = "a.example";
    CHECK_OK(kms_p256_generate(&k));
    CHECK_RC(kms_cert_issue(&p, k, k, NULL, &c), KMS_ERR_TOOBIG);
    CHECK_DETAIL("SAN");
    p.n_san = 64;
    CHECK_OK(kms_cert_issue(&p, k, k, NULL, &c));
    X509_free(c);
    c = NULL;
    p.san_dns = empty;
    p.n_san = 1;
    CHECK_RC(kms_cert_issue(&p, k, k, NULL, &c), KMS_ERR_INVAL);
    CHECK_DETAIL("SAN DNS name 0");
    CHECK(c == NULL);
    EVP_PKEY_free(k);
}

/* The App CA shape of kms-reference.md §4: derived key (stable SPKI across issues), app id
 * and "app:ca" usage, signed by the root CA, fresh serial each time. */
static void test_app_ca_cert(void)
{
    static const uint8_t app_id[20] = {1, 2, 3, 4};
    EVP_PKEY *root_key = NULL, *app_key = NULL, *app_key2 = NULL;
    X509 *root = NULL, *c1 = NULL, *c2 = NULL;
    struct kms_cert_params rp = {.org = "Dstack", .cn = "Dstack KMS CA", .is_ca = 1, .path_len = 1};
    struct kms_cert_params ap = {.org = "Dstack",
                                 .cn = "Dstack App CA",
                                 .is_ca = 1,
                                 .path_len = 0,
                                 .usage = "app:ca",
                                 .app_id = app_id,
                                 .app_id_len = sizeof(app_id)};
    int err;

    CHECK_OK(kms_p256_generate(&root_key));
    CHECK_OK(kms_cert_issue(&rp, root_key, root_key, NULL, &root));
    CHECK_OK(kms_derive_app_ca_key(root_key, app_id, sizeof(app_id), &app_key));
    CHECK_OK(kms_derive_app_ca_key(root_key, app_id, sizeof(app_id), &app_key2));
    CHECK_OK(kms_cert_issue(&ap, app_key, root_key, root, &c1));
    CHECK_OK(kms_cert_issue(&ap, app_key2, root_key, root, &c2));
    if (c1 == NULL || c2 == NULL)
        goto out;
    CHECK(EVP_PKEY_eq(X509_get0_pubkey(c1), X509_get0_pubkey(c2)) == 1);
    CHECK(ASN1_INTEGER_cmp(X509_get0_serialNumber(c1), X509_get0_serialNumber(c2)) != 0);
    CHECK(ossl_verify(root, c1, &err));
    CHECK(kms_cert_signed_by(c1, root_key) == 1);
out:
    X509_free(c1);
    X509_free(c2);
    X509_free(root);
    EVP_PKEY_free(app_key);
    EVP_PKEY_free(app_key2);
    EVP_PKEY_free(root_key);
}

int main(void)
{
    RUN(test_kdf_concat);
    RUN(test_kdf_salt);
    RUN(test_upstream_vector);
    RUN(test_pkcs8_matches_openssl);
    RUN(test_scalar_edges);
    RUN(test_wrong_curve);
    RUN(test_key_input_errors);
    RUN(test_app_key_vectors);
    RUN(test_k256_recover);
    RUN(test_k256_low_s);
    RUN(test_k256_threads);
    RUN(test_env_pubkey);
    RUN(test_bootstrap_report_data);
    RUN(test_cert_chain);
    RUN(test_cert_fields);
    RUN(test_cert_pathlen);
    RUN(test_cert_signed_by_and_pem);
    RUN(test_cert_issue_rejects);
    RUN(test_cert_attestation_ext);
    RUN(test_cert_san_ip);
    RUN(test_cert_san_limits);
    RUN(test_app_ca_cert);
    TEST_MAIN_END();
}
