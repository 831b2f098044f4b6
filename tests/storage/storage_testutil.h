/*
 * Helpers shared by the storage tests: temp directories, fresh PEM keys and a complete
 * kms_identity to store. Test-only; any failure of the machinery itself (mkdtemp, key
 * generation, allocation) exits with status 2, since no test could run past it.
 */
#ifndef KMS_STORAGE_TESTUTIL_H
#define KMS_STORAGE_TESTUTIL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "storage/storage.h"

/* A new directory $TMPDIR/kms-<tag>-XXXXXX (/tmp without TMPDIR); caller frees with
 * st_tmpdir_free. */
static inline char *st_tmpdir_new(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    char *d;

    snprintf(tmpl, sizeof(tmpl), "%s/kms-%s-XXXXXX", base != NULL ? base : "/tmp", tag);
    d = mkdtemp(tmpl);
    if (d == NULL) {
        perror("mkdtemp");
        exit(2);
    }
    d = strdup(d);
    if (d == NULL)
        exit(2);
    return d;
}

static inline int st_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Removes the directory tree d and frees d. */
static inline void st_tmpdir_free(char *d)
{
    nftw(d, st_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(d);
}

/* "dir/name", malloc'd (caller frees). */
static inline char *st_path_in(const char *dir, const char *name)
{
    char *p = NULL;

    if (asprintf(&p, "%s/%s", dir, name) < 0)
        exit(2);
    return p;
}

/* A fresh private key as PEM (malloc'd): EC on curve ("P-256", ...), or Ed25519 when curve is
 * NULL; PKCS#8 unless traditional. */
static inline char *st_gen_pem(const char *curve, int traditional)
{
    EVP_PKEY *pk = curve != NULL ? EVP_EC_gen(curve) : EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n;
    char *out;

    if (pk == NULL || b == NULL)
        exit(2);
    if (traditional)
        PEM_write_bio_PrivateKey_traditional(b, pk, NULL, NULL, 0, NULL, NULL);
    else
        PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL);
    n = BIO_get_mem_data(b, &data);
    out = strndup(data, (size_t)n);
    BIO_free(b);
    EVP_PKEY_free(pk);
    if (out == NULL)
        exit(2);
    return out;
}

/* A complete identity with fresh P-256 keys (the RPC key only when with_rpc), a random k256
 * key certainly below the secp256k1 order, the given domain and bootstrap info (NULL: none),
 * origin "bootstrap". Caller clears with kms_identity_clear. */
static inline void st_make_identity(struct kms_identity *id, const char *domain, int with_rpc,
                                    const char *bootstrap_info)
{
    memset(id, 0, sizeof(*id));
    id->root_ca_key_pem = st_gen_pem("P-256", 0);
    id->tmp_ca_key_pem = st_gen_pem("P-256", 0);
    id->rpc_key_pem = with_rpc ? st_gen_pem("P-256", 0) : NULL;
    RAND_bytes(id->root_k256, 32);
    id->root_k256[0] = 0x42; /* below the secp256k1 order */
    id->domain = strdup(domain);
    id->bootstrap_info_json = bootstrap_info != NULL ? strdup(bootstrap_info) : NULL;
    id->origin = strdup("bootstrap");
}

/* Strings equal, or both NULL. */
static inline int st_str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

/* Every field of two identities equal. */
static inline int st_identity_eq(const struct kms_identity *a, const struct kms_identity *b)
{
    return st_str_eq(a->root_ca_key_pem, b->root_ca_key_pem) &&
           st_str_eq(a->tmp_ca_key_pem, b->tmp_ca_key_pem) &&
           memcmp(a->root_k256, b->root_k256, 32) == 0 &&
           st_str_eq(a->rpc_key_pem, b->rpc_key_pem) && st_str_eq(a->domain, b->domain) &&
           st_str_eq(a->bootstrap_info_json, b->bootstrap_info_json) &&
           st_str_eq(a->origin, b->origin);
}

#endif
