/*
 * attest: TDX collateral: TCB evaluation from Intel DCAP collateral, PCCS fetch, air-gapped
 * files, the collateral source with its verification caches (collateral.c, cache.c) and
 * collateral for the simulated TEE (collateral_sim.c).
 *
 * Collateral (attestation-reference.md §3.3): TDX TCB Info v3 {"tcbInfo":{...},"signature":hex}
 * and QE Identity v2 {"enclaveIdentity":{...},"signature":hex}, each ECDSA P-256 signed over the
 * exact text of the inner JSON value by the TCB signing certificate (issuer chain to the pinned
 * Intel root), the PCK CRL (signed by the PCK platform/processor CA) and the root CA CRL.
 *
 * Limits: one collateral item (JSON text, PEM chain, CRL) at most KMS_COLL_MAX_ITEM bytes; a
 * collateral file at most KMS_COLL_MAX_FILE bytes and KMS_COLL_MAX_SETS sets; at most
 * KMS_COLL_MAX_LEVELS TCB levels, KMS_COLL_MAX_ADVISORIES advisory IDs per level,
 * KMS_COLL_MAX_MODULES TDX module identities, KMS_COLL_MAX_CHAIN certificates per issuer chain.
 */
#ifndef KMS_ATTEST_COLLATERAL_H
#define KMS_ATTEST_COLLATERAL_H

#include <time.h>

#include "attest/attest.h"

#define KMS_COLL_MAX_ITEM (256u * 1024u)
#define KMS_COLL_MAX_FILE (4u * 1024u * 1024u)
#define KMS_COLL_MAX_SETS 64u
#define KMS_COLL_MAX_LEVELS 128u
#define KMS_COLL_MAX_ADVISORIES 64u
#define KMS_COLL_MAX_MODULES 16u
#define KMS_COLL_MAX_CHAIN 4u

/* One collateral set (one FMSPC), the layout of dcap-qvl's QuoteCollateralV3. Owns everything. */
struct kms_collateral {
    char *pck_crl_issuer_chain;             /* PEM: PCK platform/processor CA, root */
    struct kms_bytes root_ca_crl;           /* DER */
    struct kms_bytes pck_crl;               /* DER */
    char *tcb_info_issuer_chain;            /* PEM: TCB signing certificate, root */
    char *tcb_info;                         /* exact signed text of the "tcbInfo" value */
    struct kms_bytes tcb_info_signature;    /* 64 bytes r || s */
    char *qe_identity_issuer_chain;         /* PEM */
    char *qe_identity;                      /* exact signed text of the "enclaveIdentity" value */
    struct kms_bytes qe_identity_signature; /* 64 bytes r || s */
};

/* Frees the contents and zeroes *c (c itself is not freed); accepts NULL. */
void kms_collateral_clear(struct kms_collateral *c);
/* Clears and frees n sets allocated by the functions below; accepts NULL. */
void kms_collateral_free(struct kms_collateral *sets, size_t n);
/* Deep copy into *dst (zeroed by the call). */
KMS_WUR int kms_collateral_copy(struct kms_collateral *dst, const struct kms_collateral *src);
/* Parses collateral JSON: one object with the fields above (dcap-qvl QuoteCollateralV3 names;
 * byte fields as hex strings or arrays of byte numbers; CRLs also as PEM text), or an array of
 * such objects (one per FMSPC). *sets (n entries) is caller-owned: kms_collateral_free. Parsing
 * checks form only; signatures are checked at verification. KMS_ERR_ATT_COLLATERAL if malformed. */
KMS_WUR int kms_collateral_parse(const char *json, size_t len, struct kms_collateral **sets,
                                 size_t *n);
/* kms_collateral_parse of a file (at most KMS_COLL_MAX_FILE bytes), for air-gapped use. */
KMS_WUR int kms_collateral_load_file(const char *path, struct kms_collateral **sets, size_t *n);
/* Serialises one set as the JSON object kms_collateral_parse reads (byte fields as hex).
 * Caller frees *json. */
KMS_WUR int kms_collateral_to_json(const struct kms_collateral *c, char **json);
/* Fetches one set from a PCCS or Intel PCS (v4 API): {pccs}/tdx/certification/v4/tcb?fmspc=,
 * {pccs}/tdx/certification/v4/qe/identity, {pccs}/sgx/certification/v4/pckcrl?ca=&encoding=der,
 * {pccs}/sgx/certification/v4/rootcacrl (issuer chains from the TCB-Info-Issuer-Chain,
 * SGX-Enclave-Identity-Issuer-Chain and SGX-PCK-CRL-Issuer-Chain headers). pccs_url may end in
 * "/sgx/certification/v4" or "/tdx/certification/v4". fmspc: 12 hex digits; ca: "platform" or
 * "processor". timeout_ms bounds each request (connect + transfer). *out is zeroed by the call and
 * caller-owned (kms_collateral_clear). KMS_ERR_TIMEOUT when the PCCS did not answer in time,
 * KMS_ERR_NET on connection failure or a non-200 answer, KMS_ERR_ATT_COLLATERAL on a malformed
 * answer. Signatures are not checked here. */
KMS_WUR int kms_collateral_fetch(const char *pccs_url, const char *fmspc, const char *ca,
                                 long timeout_ms, struct kms_collateral *out);

/*
 * Collateral source: where kms_attest_verify gets collateral for TDX and GCP-TDX quotes, plus the
 * verification caches. Verified collateral is cached per (FMSPC, CA, root), bounded by
 * max_entries and by the earliest nextUpdate / CRL nextUpdate / signing-certificate notAfter of
 * the set (never served past it, nor before its issue dates, at the ctx's verification time).
 * Verified PCK chains are cached by SHA-256 of the leaf DER with the root they reached, bounded
 * by max_chains and by the chain's earliest notAfter. Thread-safe; may be shared by several ctxs.
 */
struct kms_collateral_source;

struct kms_collateral_source_opts {
    const char *pccs_url;        /* PCCS/PCS base URL to fetch from (NULL: no fetching) */
    const char *collateral_file; /* air-gapped collateral JSON (NULL: none) */
    long timeout_ms;             /* per PCCS request; 0 = 10000 */
    size_t max_entries;          /* verified collateral sets cached; 0 = 32 */
    size_t max_chains;           /* verified PCK chains cached; 0 = 256 */
    int no_cache;                /* 1: verify everything on every call (benchmarks, tests) */
};

/* Sets from collateral_file (and kms_collateral_source_add) are used first: without a PCCS a
 * single set is used for every platform (its FMSPC is then checked), else the set whose tcbInfo
 * FMSPC is the PCK certificate's; otherwise the PCCS is asked. Caller frees *out with
 * kms_collateral_source_free (after every ctx using it). */
KMS_WUR int kms_collateral_source_new(const struct kms_collateral_source_opts *o,
                                      struct kms_collateral_source **out);
void kms_collateral_source_free(struct kms_collateral_source *src);
/* Adds an in-memory set (copied), as if it came from collateral_file. */
KMS_WUR int kms_collateral_source_add(struct kms_collateral_source *src,
                                      const struct kms_collateral *c);
/* Drops every cached verification result (e.g. after replacing the collateral file). */
void kms_collateral_source_flush(struct kms_collateral_source *src);

struct kms_collateral_stats {
    unsigned long coll_hits, coll_misses, fetches, chain_hits, chain_misses;
    size_t coll_entries, chain_entries;
};
void kms_collateral_source_stats(struct kms_collateral_source *src,
                                 struct kms_collateral_stats *st);

/* Makes kms_attest_verify (TDX and GCP-TDX) evaluate the TCB with collateral from src: on
 * success v->tcb_status is "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
 * "ConfigurationAndSWHardeningNeeded", "OutOfDate" or "OutOfDateConfigurationNeeded" and
 * v->advisory_ids lists the advisories; "Revoked" fails with KMS_ERR_ATT_REVOKED. src is borrowed
 * and must outlive the ctx's use; NULL turns collateral off (tcb_status stays ""). */
void kms_attest_ctx_set_collateral_source(struct kms_attest_ctx *ctx,
                                          struct kms_collateral_source *src);

/* Full DCAP verification of a v4 or v5 TDX quote with collateral from ctx's source (which must be
 * set): quote and QE report signatures, QE binding, PCK chain to a pinned root and CRLs, TCB info
 * and QE identity signatures by the TCB signing chain to the same root, nextUpdate,
 * FMSPC/PCE-ID, QE identity, TDX module identity, TCB level, then the TD-attribute rules
 * (kms_tdx_check_attributes). Fills what kms_tdx_quote_verify
 * fills plus tcb_status and advisory_ids (kms_verified_free). Errors: those of
 * kms_tdx_quote_verify, KMS_ERR_ATT_EXPIRED for collateral past nextUpdate, and the three above. */
KMS_WUR int kms_tdx_quote_verify_collateral(const struct kms_attest_ctx *ctx, const uint8_t *quote,
                                            size_t len, struct kms_verified *out);

/* Collateral for the simulated TEE (tests, benchmarks, --insecure-sim): a TCB signing
 * certificate under sim-root.key (sim-tcb-signing.pem/.key in sim_dir, made on first use) signs
 * TCB info and QE identity describing the simulated
 * platform (FMSPC 90c06f000000, PCE-ID 0000, the sim's SVNs and QE); the CRLs are signed by
 * sim-pck-ca.key and sim-root.key. NULL/0 fields take the defaults in brackets. */
struct kms_sim_collateral_opts {
    time_t now;                         /* reference time [time(NULL)] */
    time_t issue_date;                  /* [now - 1 h] */
    time_t next_update;                 /* TCB info / QE identity nextUpdate [now + 30 d] */
    time_t crl_next_update;             /* both CRLs [next_update] */
    const char *fmspc_hex;              /* tcbInfo fmspc [the sim's] */
    const char *pce_id_hex;             /* tcbInfo pceId ["0000"] */
    const char *tcb_levels_json;        /* tcbInfo tcbLevels array [one UpToDate level = the sim] */
    const char *module_identities_json; /* tdxModuleIdentities [TDX_02, isvsvn 2, UpToDate] */
    const char *qe_tcb_levels_json;     /* QE identity tcbLevels [isvsvn 8 UpToDate] */
    const char *qe_mrsigner_hex;        /* QE identity mrsigner [the sim QE's] */
    int revoke_pck;                     /* 1: PCK CRL lists the sim PCK certificate */
    int revoke_pck_ca;                  /* 1: root CA CRL lists the sim PCK CA */
};
/* Builds one set for the simulation directory sim_dir (made by kms_sim_open). *out is zeroed by
 * the call and caller-owned (kms_collateral_clear). */
KMS_WUR int kms_sim_collateral(const char *sim_dir, const struct kms_sim_collateral_opts *o,
                               struct kms_collateral *out);
/* Signs msg with the key sim_dir/name ("sim-tcb-signing.key", ...): ECDSA P-256 SHA-256,
 * r || s. For tests that re-sign edited collateral. */
KMS_WUR int kms_sim_sign_raw(const char *sim_dir, const char *name, const uint8_t *msg, size_t len,
                             uint8_t sig[64]);

#endif
