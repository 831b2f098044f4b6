/*
 * Fuzz target: AWS Nitro Enclave image files (attest/eif.c), measured from memory. Reaches the
 * header and section-table checks, the section walk and counts, the signature section's CBOR
 * and PEM, and the CRC-32.
 *
 * Invariants: a rejection is PARSE, VERIFY (CRC), TOOBIG, IO, NOMEM or CRYPTO and leaves the
 * measurements zeroed; an accepted image has one ramdisk at least and its size is the input's.
 */
#include <string.h>

#include "attest/eif.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_eif_measurements m;
    int rc = kms_eif_measure_mem(data, size, &m);

    if (rc < 0) {
        static const struct kms_eif_measurements zero;

        FUZZ_ASSERT(rc == KMS_ERR_PARSE || rc == KMS_ERR_VERIFY || rc == KMS_ERR_TOOBIG ||
                    rc == KMS_ERR_IO || rc == KMS_ERR_NOMEM || rc == KMS_ERR_CRYPTO);
        FUZZ_ASSERT(memcmp(&m, &zero, sizeof(m)) == 0);
        return 0;
    }
    FUZZ_ASSERT(m.n_ramdisks >= 1 && m.size == size && m.num_sections >= 3);
    return 0;
}
