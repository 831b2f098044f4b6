/* CBOR item heads (RFC 8949 §3): bounds-checked through kms_reader. */
#include "attest/cbor.h"
#include "common/err.h"

int kms_cbor_head(struct kms_reader *r, uint8_t *major, uint8_t *ai, uint64_t *val, int *indef)
{
    uint8_t ib, b8;
    uint16_t b16;
    uint32_t b32;
    int rc = 0;

    *indef = 0;
    *val = 0;
    KMS_GUARD(kms_rd_u8(r, &ib));
    *major = (uint8_t)(ib >> 5);
    *ai = (uint8_t)(ib & 0x1f);
    if (*ai < 24) {
        *val = *ai;
    } else if (*ai == 24) {
        KMS_GUARD(kms_rd_u8(r, &b8));
        *val = b8;
    } else if (*ai == 25) {
        KMS_GUARD(kms_rd_u16be(r, &b16));
        *val = b16;
    } else if (*ai == 26) {
        KMS_GUARD(kms_rd_u32be(r, &b32));
        *val = b32;
    } else if (*ai == 27) {
        KMS_GUARD(kms_rd_u64be(r, val));
    } else if (*ai == 31) {
        *indef = 1;
    } else {
        rc = kms_err_set(KMS_ERR_PARSE, "reserved additional information %u", *ai);
    }
out:
    return rc;
}

int kms_cbor_head32(struct kms_reader *r, uint8_t *major, uint64_t *val)
{
    uint8_t ai;
    int indef;
    int rc;

    rc = kms_cbor_head(r, major, &ai, val, &indef);
    if (rc == 0 && (indef || ai == 27))
        rc = kms_err_set(KMS_ERR_PARSE, "unsupported CBOR length encoding %u", ai);
    return rc;
}
