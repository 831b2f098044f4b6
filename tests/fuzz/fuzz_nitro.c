/*
 * Fuzz target: Nitro Enclave attestation documents (COSE_Sign1 over CBOR), verified through
 * kms_attest_verify on a NITRO attestation whose nsm_quote is the input, with the pinned AWS
 * root and the time fixed at the nitro/attestation-prod.bin document timestamp. Reaches the
 * COSE tag stripping, the strict CBOR walk, the COSE and document field checks, the cabundle
 * chain and the ES384 signature.
 *
 * Invariants: a rejection is an attest error code (or NOMEM/CRYPTO) and leaves *out zeroed; an
 * accepted document is not simulated, its module_id is a C string, and it can only be the prod
 * fixture's (the report_data below is that fixture's user_data).
 */
#include <string.h>

#include "attest/attest.h"
#include "fuzz.h"

/* attestation-prod.bin: timestamp 1766678659346 ms; user_data = sha256("") || 32 zero bytes. */
#define T_PROD ((time_t)1766678659)

static const uint8_t prod_report_data[64] = {
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
};

static struct kms_attest_ctx *aws_ctx(void)
{
    static struct kms_attest_ctx *ctx;

    if (ctx == NULL) {
        X509 *root = kms_attest_nitro_root();

        ctx = kms_attest_ctx_new();
        FUZZ_ASSERT(ctx != NULL && root != NULL);
        FUZZ_ASSERT(kms_attest_ctx_add_root(ctx, KMS_ROOT_NITRO, root, 0) == 0);
        X509_free(root);
        kms_attest_ctx_set_time(ctx, T_PROD);
    }
    return ctx;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_attestation att;
    struct kms_verified v;
    int rc;

    memset(&att, 0, sizeof(att));
    att.mode = KMS_ATT_NITRO;
    att.nsm_quote.p = (uint8_t *)(uintptr_t)data; /* read only */
    att.nsm_quote.len = size;
    memcpy(att.report_data, prod_report_data, 64);
    att.config = (char *)(uintptr_t) "";
    rc = kms_attest_verify(aws_ctx(), &att, &v);
    if (rc < 0) {
        static const struct kms_verified zero;

        FUZZ_ASSERT((rc <= KMS_ERR_ATT_NONE && rc >= KMS_ERR_ATT_IMAGE) || rc == KMS_ERR_NOMEM ||
                    rc == KMS_ERR_CRYPTO);
        FUZZ_ASSERT(memcmp(&v, &zero, sizeof(v)) == 0);
        return 0;
    }
    FUZZ_ASSERT(v.mode == KMS_ATT_NITRO && !v.sim);
    FUZZ_ASSERT(memchr(v.module_id, '\0', sizeof(v.module_id)) != NULL);
    kms_verified_free(&v);
    return 0;
}
