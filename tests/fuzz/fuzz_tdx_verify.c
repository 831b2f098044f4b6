/*
 * Fuzz target: full offline TDX quote verification (kms_tdx_quote_verify) against the pinned
 * Intel SGX root at a fixed time inside the fixture PCK certificates' validity: attestation-key
 * point decoding, both ECDSA checks, the PEM PCK chain, the chain walk and the PPID extension.
 *
 * Invariants: a rejection is one of the attest error codes (or NOMEM/CRYPTO) and leaves no
 * advisory ids behind; an accepted quote is not simulated and its TD report is the one the
 * parser reads from the same bytes.
 */
#include <string.h>

#include "attest/attest.h"
#include "attest/tdx.h"
#include "fuzz.h"

/* 2026-06-01: inside the validity of the fixture PCK leaves (as tests/attest/test_tdx.c). */
#define T_VALID ((time_t)1780272000)

static struct kms_attest_ctx *intel_ctx(void)
{
    static struct kms_attest_ctx *ctx;

    if (ctx == NULL) {
        X509 *root = kms_attest_intel_root();

        ctx = kms_attest_ctx_new();
        FUZZ_ASSERT(ctx != NULL && root != NULL);
        FUZZ_ASSERT(kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, root, 0) == 0);
        X509_free(root);
        kms_attest_ctx_set_time(ctx, T_VALID);
    }
    return ctx;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_verified v;
    struct kms_tdx_quote q;
    int rc = kms_tdx_quote_verify(intel_ctx(), data, size, &v);

    if (rc < 0) {
        FUZZ_ASSERT((rc <= KMS_ERR_ATT_NONE && rc >= KMS_ERR_ATT_IMAGE) || rc == KMS_ERR_NOMEM ||
                    rc == KMS_ERR_CRYPTO);
        FUZZ_ASSERT(v.n_advisory_ids == 0 && v.advisory_ids == NULL);
        kms_verified_free(&v);
        return 0;
    }
    FUZZ_ASSERT(!v.sim && v.mode == KMS_ATT_TDX && v.ppid_len <= sizeof(v.ppid));
    FUZZ_ASSERT(kms_tdx_quote_parse(data, size, &q) == 0);
    FUZZ_ASSERT(memcmp(&q.report, &v.td, sizeof(v.td)) == 0);
    kms_verified_free(&v);
    return 0;
}
