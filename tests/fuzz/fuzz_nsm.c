/*
 * Fuzz target: NSM responses to an Attestation request (attest/nsm.c
 * kms_nsm_decode_attestation), what the /dev/nsm ioctl hands back.
 *
 * Invariants: a rejection is PARSE or IO (an NSM error answer) and leaves no document; an
 * accepted answer's document is non-empty and lies inside the input.
 */
#include "attest/nsm.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *doc = NULL;
    size_t n = 0;
    int rc = kms_nsm_decode_attestation(data, size, &doc, &n);

    if (rc < 0) {
        FUZZ_ASSERT(rc == KMS_ERR_PARSE || rc == KMS_ERR_IO);
        FUZZ_ASSERT(doc == NULL && n == 0);
        return 0;
    }
    FUZZ_ASSERT(doc != NULL && n > 0 && doc >= data && n <= size &&
                (size_t)(doc - data) <= size - n);
    return 0;
}
