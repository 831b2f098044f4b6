/*
 * Files of the simulated TEEs (internal.h "simulation files"): PEM keys and certificates in the
 * simulation directory, written atomically (keys 0600, through wiped memory), read back with a
 * size limit, and key/certificate pairs created once under an flock. Also the two certificate
 * and signature helpers every simulator needs.
 */
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "attest/internal.h"
#include "attest/sim_files.h"
#include "common/buf.h"
#include "common/file.h"

int kms_simf_path(char buf[KMS_SIMF_PATH_MAX], const char *dir, const char *name)
{
    int n = snprintf(buf, KMS_SIMF_PATH_MAX, "%s/%s", dir, name);

    if (n < 0 || (size_t)n >= KMS_SIMF_PATH_MAX)
        return kms_err_set(KMS_ERR_INVAL, "simulation directory path too long");
    return 0;
}

/* Writes the PEM of key (when not NULL) or cert to dir/name with mode. */
static int write_pem(const char *dir, const char *name, EVP_PKEY *key, X509 *cert, unsigned mode)
{
    char path[KMS_SIMF_PATH_MAX];
    BIO *bio = BIO_new(BIO_s_secmem()); /* wiped on free: it may hold a private key */
    char *data;
    long n;
    int rc = 0;

    KMS_GUARD_PTR(bio);
    KMS_GUARD(kms_simf_path(path, dir, name));
    if (key != NULL)
        KMS_GUARD_OSSL(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL),
                       "PEM_write_bio_PrivateKey");
    else
        KMS_GUARD_OSSL(PEM_write_bio_X509(bio, cert), "PEM_write_bio_X509");
    n = BIO_get_mem_data(bio, &data);
    KMS_ENSURE(n > 0, KMS_ERR_CRYPTO, "cannot encode %s", name);
    KMS_GUARD(kms_file_write_atomic(path, data, (size_t)n, mode));
out:
    BIO_free(bio);
    return rc;
}

int kms_simf_write_key(const char *dir, const char *name, EVP_PKEY *key)
{
    return write_pem(dir, name, key, NULL, 0600);
}

int kms_simf_write_cert(const char *dir, const char *name, X509 *cert, unsigned mode)
{
    return write_pem(dir, name, NULL, cert, mode);
}

int kms_simf_read(const char *dir, const char *name, uint8_t **pem, size_t *len)
{
    char path[KMS_SIMF_PATH_MAX];
    int rc = kms_simf_path(path, dir, name);

    if (rc < 0)
        return rc;
    return kms_file_read(path, KMS_SIMF_PEM_MAX, pem, len);
}

/* Parses dir/name as a PEM certificate (cert != NULL) or private key. */
static int read_pem(const char *dir, const char *name, X509 **cert, EVP_PKEY **key)
{
    uint8_t *pem = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    int rc = 0;

    KMS_GUARD(kms_simf_read(dir, name, &pem, &len));
    bio = BIO_new_mem_buf(pem, (int)len);
    KMS_GUARD_PTR(bio);
    if (cert != NULL) {
        *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        KMS_ENSURE(*cert != NULL, KMS_ERR_PARSE, "%s/%s holds no PEM certificate", dir, name);
    } else {
        *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        KMS_ENSURE(*key != NULL, KMS_ERR_PARSE, "%s/%s holds no PEM private key", dir, name);
    }
out:
    ERR_clear_error();
    BIO_free(bio);
    kms_free_secret(pem, len);
    return rc;
}

int kms_simf_read_cert(const char *dir, const char *name, X509 **out)
{
    *out = NULL;
    return read_pem(dir, name, out, NULL);
}

int kms_simf_read_key(const char *dir, const char *name, EVP_PKEY **out)
{
    *out = NULL;
    return read_pem(dir, name, NULL, out);
}

int kms_simf_lock(const char *dir, const char *name, int *fd)
{
    char path[KMS_SIMF_PATH_MAX];
    int rc = 0;

    *fd = -1;
    KMS_GUARD(kms_simf_path(path, dir, name));
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    KMS_ENSURE(*fd >= 0, KMS_ERR_IO, "cannot open %s", path);
    if (flock(*fd, LOCK_EX) != 0) {
        close(*fd);
        *fd = -1;
        rc = kms_err_set(KMS_ERR_IO, "cannot lock %s", path);
    }
out:
    return rc;
}

int kms_simf_load_pair(const char *dir, const struct kms_simf_pair *p, X509 **cert, EVP_PKEY **key)
{
    char cert_path[KMS_SIMF_PATH_MAX];
    int lock = -1;
    int rc = 0;

    *cert = NULL;
    *key = NULL;
    KMS_GUARD(kms_simf_path(cert_path, dir, p->cert_name));
    if (!kms_file_exists(cert_path)) {
        KMS_GUARD(kms_mkdir_p(dir, 0700));
        KMS_GUARD(kms_simf_lock(dir, p->lock_name, &lock));
        if (!kms_file_exists(cert_path)) {
            KMS_GUARD(p->gen(p->arg, cert, key));
            /* key first: a certificate on disk always has its key next to it */
            KMS_GUARD(kms_simf_write_key(dir, p->key_name, *key));
            KMS_GUARD(kms_simf_write_cert(dir, p->cert_name, *cert, p->cert_mode));
            goto out;
        }
    }
    KMS_GUARD(kms_simf_read_cert(dir, p->cert_name, cert));
    KMS_GUARD(kms_simf_read_key(dir, p->key_name, key));
    KMS_ENSURE(X509_check_private_key(*cert, *key) == 1, KMS_ERR_STATE,
               "%s/%s does not match %s; delete both to regenerate the simulation files", dir,
               p->key_name, cert_path);
out:
    ERR_clear_error();
    if (lock >= 0)
        close(lock); /* releases the flock */
    if (rc < 0) {
        X509_free(*cert);
        EVP_PKEY_free(*key);
        *cert = NULL;
        *key = NULL;
    }
    return rc;
}

int kms_simf_add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    int rc = 0;

    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return kms_err_ossl(KMS_ERR_CRYPTO, "X509V3_EXT_conf_nid");
    if (X509_add_ext(cert, ext, -1) != 1)
        rc = kms_err_ossl(KMS_ERR_CRYPTO, "X509_add_ext");
    X509_EXTENSION_free(ext);
    return rc;
}

int kms_simf_sign_rs(EVP_PKEY *key, const uint8_t *msg, size_t len, uint8_t out[64])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t der[80];
    size_t der_len = sizeof(der);
    const unsigned char *p = der;
    ECDSA_SIG *sig = NULL;
    const BIGNUM *r;
    const BIGNUM *s;
    int rc = 0;

    KMS_GUARD_PTR(md);
    KMS_GUARD_OSSL(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), "EVP_DigestSignInit");
    KMS_GUARD_OSSL(EVP_DigestSign(md, der, &der_len, msg, len), "EVP_DigestSign");
    sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    KMS_ENSURE(sig != NULL, KMS_ERR_CRYPTO, "cannot decode ECDSA signature");
    ECDSA_SIG_get0(sig, &r, &s);
    KMS_ENSURE(BN_bn2binpad(r, out, 32) == 32 && BN_bn2binpad(s, out + 32, 32) == 32,
               KMS_ERR_CRYPTO, "ECDSA signature component does not fit 32 bytes");
out:
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(md);
    return rc;
}
