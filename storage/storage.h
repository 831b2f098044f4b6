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
 * sealed. An existing but empty (0-byte) kms.db next to an existing KEK is refused
 * (KMS_ERR_STORE_SEAL: restore it, or remove the KEK deliberately). *out: caller closes. All calls
 * on one store are serialised internally (safe from several threads). */
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

/* ==== Disaster recovery: encrypted identity backup, M-of-N recovery shares, audit reading ====
 * (storage/backup.c; DESIGN.md §1, §7.) A backup holds the cluster identity (root CA key, temp
 * CA key, root k256, domain, bootstrap info; never the node's RPC key or KEK) encrypted with
 * AES-256-GCM under a random 32-byte backup key. The backup key is split with Shamir secret
 * sharing over GF(2^8) into N shares; any M of them (2 <= M <= N <= 16) recover it, fewer reveal
 * nothing. The clear header (authenticated as AAD) identifies a backup without the shares.
 * File (big-endian): "KMSDBKP1" || u16 version=1 || u64 created (unix s) || u8 M || u8 N ||
 *   set_id[8] || k256_pubkey[33] || u16 spki_len || root CA SPKI DER || nonce[12] ||
 *   u32 ct_len || ciphertext || tag[16].
 * Plaintext record: u8 version=1 || u32 len root CA PEM || u32 len temp CA PEM || k256[32] ||
 *   u32 len domain || u32 len bootstrap info (0 = none).
 * Share text: "kmsd-share-v1:<M>:<N>:<index>:<set id, 16 hex>:<y, 64 hex>:<checksum, 8 hex>",
 *   checksum = first 4 bytes of sha256("kmsd-share-v1" || M || N || index || set_id || y): a
 *   mistyped share is rejected by name; set_id binds shares to their backup. */

enum {
    KMS_ERR_BACKUP_SHARE = -340,     /* a share is malformed or fails its checksum */
    KMS_ERR_BACKUP_SET = -341,       /* a share belongs to another backup / conflicts */
    KMS_ERR_BACKUP_THRESHOLD = -342, /* fewer than M distinct shares */
    KMS_ERR_BACKUP_AUTH = -343,      /* backup failed AES-GCM authentication (modified) */
};

#define KMS_BACKUP_MAX_SHARES 16
#define KMS_BACKUP_FILE_MAX (2u * 1024u * 1024u) /* largest backup file accepted */
#define KMS_BACKUP_SPKI_MAX 256
#define KMS_BACKUP_SHARE_TEXT_MAX 160 /* longest share line accepted (after trimming) */

/* Clear, authenticated header of a backup file. */
struct kms_backup_info {
    unsigned version;
    uint64_t created_at; /* unix seconds */
    unsigned threshold;  /* M */
    unsigned shares;     /* N */
    uint8_t set_id[8];
    uint8_t k256_pubkey[33]; /* compressed, as GetMeta.k256_pubkey */
    uint8_t ca_spki[KMS_BACKUP_SPKI_MAX];
    size_t ca_spki_len;
};

/* One decoded share; y is secret (wipe it with OPENSSL_cleanse). */
struct kms_backup_share {
    unsigned threshold, shares, index; /* index 1..N is the Shamir x coordinate */
    uint8_t set_id[8];
    uint8_t y[32];
};

/* Shamir over GF(2^8) (AES polynomial), constant-time arithmetic. Splits len secret bytes into n
 * shares with threshold m (2 <= m <= n <= KMS_BACKUP_MAX_SHARES): share i (x = i+1) is written
 * to ys + i*len (caller provides n*len bytes, wipes them). KMS_ERR_INVAL on bad m/n. */
KMS_WUR int kms_shamir_split(const uint8_t *secret, size_t len, unsigned m, unsigned n,
                             uint8_t *ys);
/* Interpolates at 0 the polynomial through the k points (xs[i], ys[i][..len]): with k >= M
 * shares of one split it is the secret, with fewer it is unrelated to it. xs must be distinct
 * and non-zero (KMS_ERR_INVAL). secret: len bytes, caller wipes. */
KMS_WUR int kms_shamir_combine(const uint8_t *xs, const uint8_t *const *ys, size_t k, size_t len,
                               uint8_t *secret);

/* Creates a backup of id (its root CA key, temp CA key, root k256, domain, bootstrap info are
 * used; rpc_key_pem and origin are ignored) with an m-of-n share split. *file (caller frees)
 * gets *file_len bytes; shares[0..n) get malloc'd share lines (no newline; caller frees them
 * with kms_backup_shares_free). info (may be NULL) gets the header. KMS_ERR_INVAL for bad m/n
 * or an identity without domain, KMS_ERR_PARSE for an invalid key. Nothing is returned on
 * error. id is borrowed. */
KMS_WUR int kms_backup_create(const struct kms_identity *id, unsigned m, unsigned n, uint8_t **file,
                              size_t *file_len, char *shares[KMS_BACKUP_MAX_SHARES],
                              struct kms_backup_info *info);
/* Wipes and frees shares[0..n); accepts NULL entries. */
void kms_backup_shares_free(char **shares, size_t n);

/* Parses the clear header of a backup file (no shares needed, nothing decrypted; the header is
 * authenticated only when the backup is opened). KMS_ERR_PARSE if malformed, truncated, of an
 * unknown version, or followed by trailing bytes. */
KMS_WUR int kms_backup_inspect(const uint8_t *file, size_t len, struct kms_backup_info *info);

/* Parses one share line (surrounding whitespace ignored). label names it in errors (e.g. the
 * file it came from); the share's secret part never appears in an error. KMS_ERR_BACKUP_SHARE
 * if malformed or its checksum fails ("mistyped"). out->y is wiped on error. */
KMS_WUR int kms_backup_share_parse(const char *text, const char *label,
                                   struct kms_backup_share *out);

/* Decrypts a backup with shares (labels[i] names shares[i] in errors; labels may be NULL). Uses
 * the first M distinct shares; an identical share given twice counts once. Errors: a bad share
 * KMS_ERR_BACKUP_SHARE; a share of another backup, or two different shares claiming one index,
 * KMS_ERR_BACKUP_SET; fewer than M distinct shares KMS_ERR_BACKUP_THRESHOLD; a modified file
 * KMS_ERR_BACKUP_AUTH (or KMS_ERR_PARSE when its structure is broken); a decrypted identity that
 * does not match the header KMS_ERR_VERIFY. out (overwritten; caller clears with
 * kms_identity_clear, cleared on error) gets the keys, domain and bootstrap info; rpc_key_pem
 * and origin stay NULL. info (may be NULL) gets the header. */
KMS_WUR int kms_backup_open(const uint8_t *file, size_t len, const char *const *shares,
                            const char *const *labels, size_t nshares, struct kms_identity *out,
                            struct kms_backup_info *info);

/* Stores an identity recovered by kms_backup_open into st with origin "restore <name>" and
 * domain replaced by domain when non-NULL, then appends a "Restore" audit row. The RPC key is
 * generated by kmsd on its first start. KMS_ERR_STORE_EXISTS when st already holds keys. id
 * and info are borrowed. */
KMS_WUR int kms_backup_restore_identity(struct kms_store *st, const struct kms_identity *id,
                                        const struct kms_backup_info *info, const char *name,
                                        const char *domain);
/* kms_backup_open then kms_backup_restore_identity; refuses (KMS_ERR_STORE_EXISTS) before
 * decrypting when st already holds keys. */
KMS_WUR int kms_backup_restore(struct kms_store *st, const uint8_t *file, size_t len,
                               const char *name, const char *const *shares,
                               const char *const *labels, size_t nshares, const char *domain);

/* One audit row as read by kms_store_audit_read; strings borrowed for the callback only. */
struct kms_audit_row {
    int64_t id;
    int64_t ts_ms;
    const char *event;
    const char *outcome;
    const char *detail;
    uint8_t hash[32];
};

/* Reads the audit log of <data_dir>/kms.db on a read-only connection (no KEK needed; safe while
 * kmsd runs: WAL readers do not block it), calling cb for each row in id order; last > 0 limits
 * it to the last rows. Rows are not verified here (kms_store_audit_verify does). A cb result
 * < 0 stops the walk and is returned. KMS_ERR_NOTFOUND when there is no database. */
KMS_WUR int kms_store_audit_read(const char *data_dir, size_t last,
                                 int (*cb)(void *arg, const struct kms_audit_row *row), void *arg);
/* ==== end of disaster recovery section ==== */

#endif
