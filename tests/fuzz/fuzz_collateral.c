/*
 * Fuzz target: TDX collateral JSON (attest/collateral.c kms_collateral_parse), as read from an
 * air-gapped collateral file (--collateral-file) or assembled from a PCCS's answers: one
 * dcap-qvl QuoteCollateralV3 object or an array of them, byte fields as hex, byte arrays, and
 * CRLs also as PEM. Seeds: kms_collateral_to_json of kms_sim_collateral sets.
 *
 * Invariants:
 *  - a rejection is KMS_ERR_ATT_COLLATERAL (or NOMEM) with no sets returned;
 *  - accepted: 1..KMS_COLL_MAX_SETS sets, every field present, items within KMS_COLL_MAX_ITEM;
 *  - each set copies to an equal set, and kms_collateral_to_json of it parses back to an equal
 *    single set whose JSON is the same text (a fixed point).
 */
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/collateral.h"
#include "fuzz.h"

static int bytes_eq(const struct kms_bytes *a, const struct kms_bytes *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static int set_eq(const struct kms_collateral *a, const struct kms_collateral *b)
{
    return strcmp(a->pck_crl_issuer_chain, b->pck_crl_issuer_chain) == 0 &&
           bytes_eq(&a->root_ca_crl, &b->root_ca_crl) && bytes_eq(&a->pck_crl, &b->pck_crl) &&
           strcmp(a->tcb_info_issuer_chain, b->tcb_info_issuer_chain) == 0 &&
           strcmp(a->tcb_info, b->tcb_info) == 0 &&
           bytes_eq(&a->tcb_info_signature, &b->tcb_info_signature) &&
           strcmp(a->qe_identity_issuer_chain, b->qe_identity_issuer_chain) == 0 &&
           strcmp(a->qe_identity, b->qe_identity) == 0 &&
           bytes_eq(&a->qe_identity_signature, &b->qe_identity_signature);
}

static void check_str(const char *s)
{
    FUZZ_ASSERT(s != NULL && strlen(s) <= KMS_COLL_MAX_ITEM);
}

static void check_set(const struct kms_collateral *c)
{
    struct kms_collateral copy;
    struct kms_collateral *back = NULL;
    size_t n = 0;
    char *j1 = NULL, *j2 = NULL;
    int rc;

    check_str(c->pck_crl_issuer_chain);
    check_str(c->tcb_info_issuer_chain);
    check_str(c->tcb_info);
    check_str(c->qe_identity_issuer_chain);
    check_str(c->qe_identity);
    FUZZ_ASSERT(c->root_ca_crl.len <= KMS_COLL_MAX_ITEM && c->pck_crl.len <= KMS_COLL_MAX_ITEM);

    rc = kms_collateral_copy(&copy, c);
    FUZZ_ASSERT(rc == 0 || rc == KMS_ERR_NOMEM);
    if (rc == 0) {
        FUZZ_ASSERT(set_eq(&copy, c));
        kms_collateral_clear(&copy);
    }

    rc = kms_collateral_to_json(c, &j1);
    if (rc == KMS_ERR_NOMEM)
        return;
    FUZZ_ASSERT(rc == 0);
    rc = kms_collateral_parse(j1, strlen(j1), &back, &n);
    FUZZ_ASSERT(rc == 0 || rc == KMS_ERR_NOMEM);
    if (rc == 0) {
        FUZZ_ASSERT(n == 1 && set_eq(&back[0], c));
        rc = kms_collateral_to_json(&back[0], &j2);
        FUZZ_ASSERT(rc == 0 || rc == KMS_ERR_NOMEM);
        FUZZ_ASSERT(rc < 0 || strcmp(j1, j2) == 0);
    }
    kms_collateral_free(back, n);
    free(j1);
    free(j2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_collateral *sets = (struct kms_collateral *)&sets; /* overwritten by the call */
    size_t n = 99;
    int rc;

    if (size > 256 * 1024)
        return 0;
    rc = kms_collateral_parse((const char *)data, size, &sets, &n);
    if (rc < 0) {
        FUZZ_ASSERT(rc == KMS_ERR_ATT_COLLATERAL || rc == KMS_ERR_NOMEM);
        FUZZ_ASSERT(sets == NULL && n == 0);
        return 0;
    }
    FUZZ_ASSERT(sets != NULL && n >= 1 && n <= KMS_COLL_MAX_SETS);
    for (size_t i = 0; i < n; i++)
        check_set(&sets[i]);
    kms_collateral_free(sets, n);
    return 0;
}
