/*
 * storage: the node's SQLite keystore (DESIGN.md §7). Secrets (root keys, RPC key) are stored
 * only sealed: AES-256-GCM under a KEK, with the row's identity as associated data. The KEK
 * comes from a seal provider: "file" (a 0600 file, development) or "tpm" (sealed to PCRs in the
 * TPM, seal_tpm.c).
 * Identity writes are one transaction; an identity is either absent or complete.
 */
#ifndef KMS_STORAGE_H
#define KMS_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* storage error codes (-300..-399) */
enum {
    KMS_ERR_STORE_DB = -300,      /* SQLite failure */
    KMS_ERR_STORE_SEAL = -301,    /* KEK unavailable / unseal failed / tag mismatch */
    KMS_ERR_STORE_EXISTS = -302,  /* identity already present */
    KMS_ERR_STORE_MISSING = -303, /* no identity */
};

struct kms_seal_cfg {
    const char *provider; /* "file" (default) or "tpm" */
    const char *kek_path; /* file provider: default <data_dir>/kek.bin */
    /* tpm provider (seal_tpm.c); NULL/empty fields take the defaults */
    const char *tcti;      /* tpm2-tss TCTI, default "device:/dev/tpmrm0" */
    const char *pcrs;      /* PCR selection "bank:i,j[+bank:k]", default "sha256:0,2,14" */
    const char *blob_path; /* sealed KEK blob, default <data_dir>/kek.tpm */
};

#define KMS_SEAL_TPM_DEFAULT_TCTI "device:/dev/tpmrm0"
#define KMS_SEAL_TPM_DEFAULT_PCRS "sha256:0,2,14"

struct kms_store;

/* Opens (creating if needed, dir 0700, file 0600) <data_dir>/kms.db with WAL; creates/loads the
 * KEK. seal may be NULL (provider "file", default path). Provider "tpm" unseals the KEK from the
 * blob file (creating and sealing a new KEK only while the database holds nothing sealed); a bad
 * PCR spec is KMS_ERR_INVAL, any TPM or unseal failure (PCRs changed, blob tampered, missing or
 * from another TPM, TPM unreachable) KMS_ERR_STORE_SEAL. A database sealed by one provider is
 * refused under the other (KMS_ERR_STORE_SEAL). A KEK file that is group/other-accessible, not
 * 32 bytes, a symlink, or not the KEK the database was sealed with is refused
 * (KMS_ERR_STORE_SEAL). A missing KEK file is created only while the database holds nothing
 * sealed. *out: caller closes. All calls on one store are serialised internally (safe from
 * several threads). */
KMS_WUR int kms_store_open(const char *data_dir, const struct kms_seal_cfg *seal,
                           struct kms_store **out);
/* Closes and wipes the KEK; accepts NULL. */
void kms_store_close(struct kms_store *st);

/* The cluster identity plus this node's RPC key. PEM strings are PKCS#8 "PRIVATE KEY".
 * Fields are owned (malloc'd); kms_identity_clear wipes and frees them. */
struct kms_identity {
    char *root_ca_key_pem;
    char *tmp_ca_key_pem;
    uint8_t root_k256[32];
    char *rpc_key_pem;         /* may be NULL (import: generated on first start) */
    char *domain;              /* RPC certificate domain */
    char *bootstrap_info_json; /* Bootstrap response JSON, NULL when onboarded/imported */
    char *origin;              /* "bootstrap", "onboard <url>", "import <dir>" */
};

void kms_identity_clear(struct kms_identity *id);

/* 1 if a complete identity is stored, 0 if none, <0 on error. */
KMS_WUR int kms_store_has_identity(struct kms_store *st);
/* Stores the identity in one transaction; KMS_ERR_STORE_EXISTS if one exists. Validates the
 * keys first (KMS_ERR_PARSE) and requires domain and origin (KMS_ERR_INVAL). id is borrowed. */
KMS_WUR int kms_store_save_identity(struct kms_store *st, const struct kms_identity *id);
/* Loads and unseals into out (overwritten; caller clears with kms_identity_clear; cleared on
 * error). KMS_ERR_STORE_MISSING if none; KMS_ERR_STORE_SEAL if any sealed column fails to
 * authenticate (then no secret is returned). */
KMS_WUR int kms_store_load_identity(struct kms_store *st, struct kms_identity *out);
/* Replaces only the RPC key (sealed) of an existing identity; KMS_ERR_STORE_MISSING if none. */
KMS_WUR int kms_store_set_rpc_key(struct kms_store *st, const char *rpc_key_pem);

/* Non-secret key/value metadata (node state, peers, ...). *value caller-frees; NOTFOUND. */
KMS_WUR int kms_store_meta_set(struct kms_store *st, const char *key, const char *value);
KMS_WUR int kms_store_meta_get(struct kms_store *st, const char *key, char **value);

/* Append-only hash-chained audit log. event e.g. "GetAppKey"; outcome "allowed"/"denied"/...;
 * detail: non-secret text (app id hex, reason). */
KMS_WUR int kms_store_audit(struct kms_store *st, const char *event, const char *outcome,
                            const char *detail);
/* Verifies the hash chain; KMS_ERR_VERIFY names the first broken row. *count = rows verified
 * (all rows on success, the intact prefix on failure); count may be NULL.
 * Row hash = sha256(prev_hash || u64be(id) || u64be(ts_ms) || u32be(len) event || u32be(len)
 * outcome || u32be(len) detail); the first row's prev_hash is 32 zero bytes. */
KMS_WUR int kms_store_audit_verify(struct kms_store *st, size_t *count);

/* Last audit row's id (the row count of an intact log) and its hash, zero when empty, so the
 * head can be anchored outside the database (the chain alone cannot reveal a cut-off tail). */
KMS_WUR int kms_store_audit_head(struct kms_store *st, size_t *count, uint8_t hash[32]);

/* Checks that pem is exactly one PEM PKCS#8 "PRIVATE KEY" holding a valid EC P-256 private key
 * (OpenSSL parse + private-key check). what names the key in the detail. KMS_ERR_PARSE if not. */
KMS_WUR int kms_store_check_p256_pem(const char *pem, const char *what);
/* Checks a raw big-endian secp256k1 secret: non-zero and below the group order. KMS_ERR_PARSE
 * if not. Constant time. */
KMS_WUR int kms_store_check_k256(const uint8_t k[32], const char *what);

/* Reads a dstack KMS key directory (root-ca.key, tmp-ca.key: PEM PKCS#8; root-k256.key: raw
 * 32 bytes; optional rpc-domain, rpc.key, bootstrap-info.json) into out. Validates formats.
 * out is overwritten (caller clears it with kms_identity_clear, also after an error is safe);
 * absent optional files leave NULL (domain too); origin = "import <dir>". A missing required
 * file is KMS_ERR_NOTFOUND, an invalid one KMS_ERR_PARSE; the detail names the file. */
KMS_WUR int kms_dstack_read_dir(const char *dir, struct kms_identity *out);

/* Internal to storage (store.c calls it; exposed for tests): the "tpm" seal provider. Unseals the
 * 32-byte KEK from cfg->blob_path (required here) into kek; when the blob file does not exist and
 * may_create is set, generates a KEK (OpenSSL DRBG xor TPM RNG), seals it under a primary storage
 * key recreated in the owner hierarchy with PolicyPCR over cfg->pcrs, writes the blob (0600, never
 * replacing an existing one) and unseals it back to prove the policy holds. *created (may be NULL)
 * is set to 1 then. KMS_ERR_NOTFOUND when the blob is absent and !may_create; KMS_ERR_INVAL for a
 * bad spec; KMS_ERR_STORE_SEAL for everything else. kek is wiped on error. */
KMS_WUR int kms_seal_tpm_kek(const struct kms_seal_cfg *cfg, int may_create, uint8_t kek[32],
                             int *created);

#endif
