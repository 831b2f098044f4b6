/*
 * Fuzz target: TDX v4/v5 quote layout parsing (kms_tdx_quote_parse).
 *
 * Invariants: a rejection is KMS_ERR_ATT_FORMAT / KMS_ERR_ATT_UNSUPPORTED; on success every
 * borrowed pointer and length the parser hands out lies inside the input (the verifier trusts
 * them), the signed part is header || [v5: body type, size] || body, and the TD report's
 * report_data is the last 64 bytes of its 1.0 part.
 */
#include <string.h>

#include "attest/attest.h"
#include "attest/tdx.h"
#include "fuzz.h"

static int inside(const uint8_t *base, size_t size, const uint8_t *p, size_t n)
{
    return p != NULL && p >= base && (size_t)(p - base) <= size && n <= size - (size_t)(p - base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_tdx_quote q;
    int rc = kms_tdx_quote_parse(data, size, &q);
    size_t hdr;

    if (rc < 0) {
        FUZZ_ASSERT(rc == KMS_ERR_ATT_FORMAT || rc == KMS_ERR_ATT_UNSUPPORTED);
        return 0;
    }
    FUZZ_ASSERT((q.version == 4 || q.version == 5) && q.tee_type == 0x81);
    FUZZ_ASSERT(q.body_type == KMS_TDX_BODY_TD10 ||
                (q.version == 5 && q.body_type == KMS_TDX_BODY_TD15));
    hdr = KMS_TDX_HEADER_LEN + (q.version == 5 ? KMS_TDX_V5_BODY_HDR : 0);
    FUZZ_ASSERT(q.signed_data == data &&
                q.signed_len == hdr + (q.body_type == KMS_TDX_BODY_TD15 ? KMS_TDX_BODY15_LEN
                                                                        : KMS_TDX_BODY_LEN));
    FUZZ_ASSERT(inside(data, size, q.signed_data, q.signed_len));
    FUZZ_ASSERT(inside(data, size, q.sig, 64));
    FUZZ_ASSERT(inside(data, size, q.attest_key, 64));
    FUZZ_ASSERT(inside(data, size, q.qe_report, KMS_TDX_QE_REPORT_LEN));
    FUZZ_ASSERT(inside(data, size, q.qe_report_sig, 64));
    FUZZ_ASSERT(q.qe_auth_len == 0 || inside(data, size, q.qe_auth, q.qe_auth_len));
    FUZZ_ASSERT(q.pck_chain_len == 0 || inside(data, size, q.pck_chain, q.pck_chain_len));
    FUZZ_ASSERT(memcmp(q.report.report_data, data + hdr + KMS_TDX_BODY_LEN - 64, 64) == 0);
    return 0;
}
