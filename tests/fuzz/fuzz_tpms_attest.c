/*
 * Fuzz target: TPMS_ATTEST parsing (kms_tpms_attest_parse), the signed message of a GCP vTPM
 * quote.
 *
 * Invariants: a rejection is KMS_ERR_ATT_FORMAT; on success every borrowed pointer lies inside
 * the input, at most KMS_TPM_MAX_PCRS PCRs are reported, each index fits the bitmap it came from
 * (at most KMS_TPM_MAX_SELECT bytes), and the structure ends exactly at the end of the input
 * (magic and type as documented).
 */
#include <string.h>

#include "attest/attest.h"
#include "attest/tpm.h"
#include "fuzz.h"

static int inside(const uint8_t *base, size_t size, const uint8_t *p, size_t n)
{
    if (n == 0)
        return 1;
    return p != NULL && p >= base && (size_t)(p - base) <= size && n <= size - (size_t)(p - base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_tpms_attest a;
    int rc = kms_tpms_attest_parse(data, size, &a);

    if (rc < 0) {
        FUZZ_ASSERT(rc == KMS_ERR_ATT_FORMAT);
        return 0;
    }
    FUZZ_ASSERT(size >= 6 && data[0] == 0xff && data[1] == 0x54 && data[2] == 0x43 &&
                data[3] == 0x47 && data[4] == 0x80 && data[5] == 0x18);
    FUZZ_ASSERT(inside(data, size, a.qualified_signer, a.qualified_signer_len));
    FUZZ_ASSERT(inside(data, size, a.extra_data, a.extra_data_len));
    FUZZ_ASSERT(inside(data, size, a.pcr_digest, a.pcr_digest_len));
    /* pcrDigest is the last field: the parser consumed the input exactly */
    FUZZ_ASSERT(a.pcr_digest + a.pcr_digest_len == data + size || a.pcr_digest_len == 0);
    FUZZ_ASSERT(a.n_pcrs <= KMS_TPM_MAX_PCRS);
    for (size_t i = 0; i < a.n_pcrs; i++)
        FUZZ_ASSERT(a.pcr_index[i] < 8u * KMS_TPM_MAX_SELECT);
    return 0;
}
