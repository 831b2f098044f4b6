/*
 * Import of a dstack KMS key directory (kms-reference.md §2.3) and the key-format checks the
 * keystore applies before it seals anything.
 */
#include "storage/storage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/buf.h"
#include "common/file.h"

#define KEY_FILE_MAX (16u * 1024u) /* a P-256 PKCS#8 PEM is ~240 bytes */
#define K256_FILE_MAX 4096u        /* read more than 32 to report the real size */
#define DOMAIN_MAX 253u
#define BOOTSTRAP_INFO_MAX (64u * 1024u)
#define DIR_MAX 4000u

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

int kms_store_check_p256_pem(const char *pem, const char *what)
{
    BIO *bio = NULL;
    char *name = NULL;
    char *header = NULL;
    unsigned char *der = NULL;
    long der_len = 0;
    const unsigned char *p;
    PKCS8_PRIV_KEY_INFO *p8 = NULL;
    EVP_PKEY *pk = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    char group[64];
    size_t glen = 0;
    char *rest = NULL;
    long rest_len;
    size_t n;
    int rc = 0;

    KMS_ENSURE(pem != NULL, KMS_ERR_INVAL, "%s is missing", what);
    n = strnlen(pem, KEY_FILE_MAX + 1);
    KMS_ENSURE(n <= KEY_FILE_MAX, KMS_ERR_PARSE, "%s is larger than %u bytes", what, KEY_FILE_MAX);
    bio = BIO_new_mem_buf(pem, (int)n);
    KMS_GUARD_PTR(bio);
    KMS_ENSURE(PEM_read_bio(bio, &name, &header, &der, &der_len) == 1, KMS_ERR_PARSE,
               "%s is not a PEM block", what);
    KMS_ENSURE(strcmp(name, "PRIVATE KEY") == 0, KMS_ERR_PARSE,
               "%s is a PEM \"%s\", not a PKCS#8 \"PRIVATE KEY\"", what, name);
    KMS_ENSURE(header[0] == '\0', KMS_ERR_PARSE,
               "%s has PEM headers (encrypted keys are not supported)", what);
    rest_len = BIO_get_mem_data(bio, &rest);
    for (long i = 0; i < rest_len; i++)
        KMS_ENSURE(is_space(rest[i]), KMS_ERR_PARSE, "%s has data after its PEM block", what);
    p = der;
    p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, der_len);
    KMS_ENSURE(p8 != NULL && p == der + der_len, KMS_ERR_PARSE,
               "%s is not a valid DER PKCS#8 private key", what);
    pk = EVP_PKCS82PKEY(p8);
    KMS_ENSURE(pk != NULL, KMS_ERR_PARSE, "%s: unsupported or malformed PKCS#8 key", what);
    KMS_ENSURE(EVP_PKEY_is_a(pk, "EC"), KMS_ERR_PARSE, "%s is a %s key, not an EC P-256 key", what,
               EVP_PKEY_get0_type_name(pk) != NULL ? EVP_PKEY_get0_type_name(pk) : "?");
    KMS_ENSURE(EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                              &glen) == 1 &&
                   strcmp(group, "prime256v1") == 0,
               KMS_ERR_PARSE, "%s is an EC key on curve %s, not P-256", what,
               glen > 0 ? group : "(explicit parameters)");
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    KMS_GUARD_PTR(ctx);
    KMS_ENSURE(EVP_PKEY_private_check(ctx) == 1, KMS_ERR_PARSE,
               "%s has an out-of-range private scalar", what);
out:
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pk);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (der != NULL)
        OPENSSL_clear_free(der, (size_t)der_len);
    OPENSSL_free(name);
    OPENSSL_free(header);
    BIO_free(bio);
    ERR_clear_error();
    return rc;
}

int kms_store_check_k256(const uint8_t k[32], const char *what)
{
    /* secp256k1 group order n, big-endian */
    static const uint8_t n[32] = {
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0xBA, 0xAE, 0xDC, 0xE6, 0xAF, 0x48,
        0xA0, 0x3B, 0xBF, 0xD2, 0x5E, 0x8C, 0xD0, 0x36, 0x41, 0x41,
    };
    unsigned borrow = 0;
    unsigned nz = 0;

    /* k - n computed byte by byte without branches on k: a final borrow means k < n */
    for (int i = 31; i >= 0; i--) {
        unsigned d = (unsigned)k[i] - (unsigned)n[i] - borrow;

        borrow = (d >> 8) & 1u;
        nz |= k[i];
    }
    if (nz == 0)
        return kms_err_set(KMS_ERR_PARSE, "%s is zero, not a valid secp256k1 secret key", what);
    if (borrow == 0)
        return kms_err_set(KMS_ERR_PARSE,
                           "%s is not below the secp256k1 group order; not a valid secret key",
                           what);
    return 0;
}

/* Reads dir/name (at most max bytes). Absent file: KMS_ERR_NOTFOUND naming it when required,
 * else 0 with *out NULL. *out is NUL-terminated; caller frees with kms_free_secret(*out, *len+1).
 */
static int read_file(const char *dir, const char *name, size_t max, int required, uint8_t **out,
                     size_t *len)
{
    char path[DIR_MAX + 64];
    int rc;

    *out = NULL;
    *len = 0;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    rc = kms_file_read(path, max, out, len);
    if (rc == KMS_ERR_NOTFOUND) {
        if (!required)
            return 0;
        return kms_err_set(KMS_ERR_NOTFOUND, "dstack key directory %s has no %s (required)", dir,
                           name);
    }
    if (rc == KMS_ERR_TOOBIG)
        return kms_err_set(KMS_ERR_PARSE, "%s in %s is larger than %zu bytes", name, dir, max);
    return rc;
}

static int read_pem(const char *dir, const char *name, int required, char **out)
{
    uint8_t *b = NULL;
    size_t len = 0;
    int rc = 0;

    KMS_GUARD(read_file(dir, name, KEY_FILE_MAX, required, &b, &len));
    if (b == NULL)
        goto out;
    KMS_ENSURE(strlen((char *)b) == len, KMS_ERR_PARSE, "%s in %s contains a NUL byte", name, dir);
    rc = kms_store_check_p256_pem((char *)b, name);
    if (rc < 0) {
        rc = kms_err_wrap(rc, "in %s", dir);
        goto out;
    }
    *out = (char *)b;
    b = NULL;
out:
    if (b != NULL)
        kms_free_secret(b, len + 1);
    return rc;
}

/* Optional text file, whitespace-trimmed; *out NULL when absent. */
static int read_text(const char *dir, const char *name, size_t max, char **out)
{
    uint8_t *b = NULL;
    size_t len = 0;
    size_t s = 0;
    int rc = 0;

    KMS_GUARD(read_file(dir, name, max, 0, &b, &len));
    if (b == NULL)
        goto out;
    KMS_ENSURE(strlen((char *)b) == len, KMS_ERR_PARSE, "%s in %s contains a NUL byte", name, dir);
    while (len > 0 && is_space((char)b[len - 1]))
        len--;
    while (s < len && is_space((char)b[s]))
        s++;
    KMS_ENSURE(s < len, KMS_ERR_PARSE, "%s in %s is empty", name, dir);
    *out = strndup((char *)b + s, len - s);
    KMS_GUARD_PTR(*out);
out:
    free(b);
    return rc;
}

int kms_dstack_read_dir(const char *dir, struct kms_identity *out)
{
    uint8_t *k = NULL;
    size_t klen = 0;
    size_t olen;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    KMS_ENSURE(dir != NULL && dir[0] != '\0', KMS_ERR_INVAL, "dstack key directory is empty");
    KMS_ENSURE(strlen(dir) <= DIR_MAX, KMS_ERR_INVAL, "dstack key directory path is too long");
    KMS_GUARD(read_pem(dir, "root-ca.key", 1, &out->root_ca_key_pem));
    KMS_GUARD(read_pem(dir, "tmp-ca.key", 1, &out->tmp_ca_key_pem));
    KMS_GUARD(read_file(dir, "root-k256.key", K256_FILE_MAX, 1, &k, &klen));
    KMS_ENSURE(klen == sizeof(out->root_k256), KMS_ERR_PARSE,
               "root-k256.key in %s has %zu bytes; it must be exactly 32 raw bytes (not PEM or "
               "hex)",
               dir, klen);
    rc = kms_store_check_k256(k, "root-k256.key");
    if (rc < 0) {
        rc = kms_err_wrap(rc, "in %s", dir);
        goto out;
    }
    memcpy(out->root_k256, k, sizeof(out->root_k256));
    KMS_GUARD(read_pem(dir, "rpc.key", 0, &out->rpc_key_pem));
    KMS_GUARD(read_text(dir, "rpc-domain", 4096, &out->domain));
    if (out->domain != NULL) {
        size_t dl = strlen(out->domain);

        KMS_ENSURE(dl <= DOMAIN_MAX, KMS_ERR_PARSE, "rpc-domain in %s is longer than %u bytes", dir,
                   DOMAIN_MAX);
        for (size_t i = 0; i < dl; i++)
            KMS_ENSURE(out->domain[i] > 0x20 && out->domain[i] < 0x7f, KMS_ERR_PARSE,
                       "rpc-domain in %s contains a space or non-printable character", dir);
    }
    KMS_GUARD(read_text(dir, "bootstrap-info.json", BOOTSTRAP_INFO_MAX, &out->bootstrap_info_json));
    olen = strlen("import ") + strlen(dir) + 1;
    out->origin = malloc(olen);
    KMS_GUARD_PTR(out->origin);
    snprintf(out->origin, olen, "import %s", dir);
out:
    if (k != NULL)
        kms_free_secret(k, klen + 1);
    if (rc < 0)
        kms_identity_clear(out);
    return rc;
}
