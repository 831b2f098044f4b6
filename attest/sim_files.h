/* attest: files of the simulated TEEs (sim_files.c). Not a public API. */
#ifndef KMS_ATTEST_SIM_FILES_H
#define KMS_ATTEST_SIM_FILES_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* Keys and certificates of the simulated TEEs (sim.c, sim_nitro.c, platform.c sim-gcp,
 * collateral_sim.c) in their directory: PEM files written atomically (keys 0600), read with a
 * size limit of KMS_SIMF_PEM_MAX, and key/certificate pairs created once under an flock. */
#define KMS_SIMF_PEM_MAX (64u * 1024u)
#define KMS_SIMF_PATH_MAX 4096u

/* buf = dir/name; KMS_ERR_INVAL when it does not fit. */
int kms_simf_path(char buf[KMS_SIMF_PATH_MAX], const char *dir, const char *name);
/* Writes key as PKCS#8 PEM with mode 0600, or cert as PEM with mode, atomically to dir/name. */
int kms_simf_write_key(const char *dir, const char *name, EVP_PKEY *key);
int kms_simf_write_cert(const char *dir, const char *name, X509 *cert, unsigned mode);
/* The bytes of dir/name (caller frees *pem). */
int kms_simf_read(const char *dir, const char *name, uint8_t **pem, size_t *len);
/* dir/name parsed as a PEM certificate / private key (caller frees *out; NULL on error;
 * KMS_ERR_PARSE when the file holds none). */
int kms_simf_read_cert(const char *dir, const char *name, X509 **out);
int kms_simf_read_key(const char *dir, const char *name, EVP_PKEY **out);
/* Exclusive flock on dir/name (created 0600). On success the caller closes *fd to release it;
 * on error *fd is -1. */
int kms_simf_lock(const char *dir, const char *name, int *fd);

/* A key/certificate pair kept in the simulation directory. */
struct kms_simf_pair {
    const char *cert_name;
    const char *key_name;
    const char *lock_name; /* flock taken while the pair is generated */
    unsigned cert_mode;    /* the key is always 0600 */
    /* Makes a new pair (caller-owned on success). */
    int (*gen)(void *arg, X509 **cert, EVP_PKEY **key);
    void *arg;
};

/* Loads the pair p from dir. When the certificate is absent: creates dir (0700), takes the lock,
 * and unless another process made the pair meanwhile, generates it and writes the key before the
 * certificate (so a present certificate always has its key). A key that does not match its
 * certificate is KMS_ERR_STATE. Caller frees *cert and *key (both NULL on error). */
int kms_simf_load_pair(const char *dir, const struct kms_simf_pair *p, X509 **cert, EVP_PKEY **key);

/* Adds the X509v3 extension nid = value (OpenSSL config syntax) in the context of issuer. */
int kms_simf_add_ext(X509 *cert, X509 *issuer, int nid, const char *value);
/* ECDSA P-256/SHA-256 signature of msg as r || s (32 bytes each). */
int kms_simf_sign_rs(EVP_PKEY *key, const uint8_t *msg, size_t len, uint8_t out[64]);

#endif
