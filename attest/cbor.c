/* CBOR item heads (RFC 8949 §3): read bounds-checked through kms_reader, written to kms_buf. */
#include <string.h>

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

/* ---------------------------------------------------------------- writer */

/* The head of (major, val) in its shortest form into h (9 bytes); returns its length. */
static size_t head_bytes(uint8_t major, uint64_t val, uint8_t h[9])
{
    size_t n, i;

    if (val < 24) {
        h[0] = (uint8_t)(major << 5 | val);
        return 1;
    }
    if (val <= UINT8_MAX) {
        h[0] = (uint8_t)(major << 5 | 24u);
        n = 1;
    } else if (val <= UINT16_MAX) {
        h[0] = (uint8_t)(major << 5 | 25u);
        n = 2;
    } else if (val <= UINT32_MAX) {
        h[0] = (uint8_t)(major << 5 | 26u);
        n = 4;
    } else {
        h[0] = (uint8_t)(major << 5 | 27u);
        n = 8;
    }
    for (i = 0; i < n; i++)
        h[n - i] = (uint8_t)(val >> (8 * i));
    return n + 1;
}

int kms_cbor_put_head(struct kms_buf *b, uint8_t major, uint64_t val)
{
    uint8_t h[9];
    int rc = 0;

    KMS_ENSURE(major <= 7, KMS_ERR_INVAL, "CBOR major type %u does not exist", major);
    KMS_GUARD(kms_buf_put(b, h, head_bytes(major, val, h)));
out:
    return rc;
}

int kms_cbor_put_uint(struct kms_buf *b, uint64_t v)
{
    return kms_cbor_put_head(b, KMS_CBOR_UINT, v);
}

/* A string head and its n bytes, all or nothing. */
static int put_string(struct kms_buf *b, uint8_t major, const void *p, size_t n)
{
    uint8_t h[9];
    size_t hn = head_bytes(major, (uint64_t)n, h);
    int rc = 0;

    KMS_ENSURE(n <= KMS_BUF_MAX - hn, KMS_ERR_TOOBIG, "CBOR string of %zu bytes exceeds %u bytes",
               n, KMS_BUF_MAX);
    KMS_GUARD(kms_buf_reserve(b, hn + n));
    KMS_GUARD(kms_buf_put(b, h, hn));
    KMS_GUARD(kms_buf_put(b, p, n));
out:
    return rc;
}

int kms_cbor_put_bstr(struct kms_buf *b, const uint8_t *p, size_t n)
{
    return put_string(b, KMS_CBOR_BSTR, p, n);
}

int kms_cbor_put_tstr(struct kms_buf *b, const char *s)
{
    return put_string(b, KMS_CBOR_TSTR, s, strlen(s));
}

int kms_cbor_put_null(struct kms_buf *b)
{
    return kms_buf_put_u8(b, 0xf6);
}

int kms_cbor_put_array(struct kms_buf *b, size_t n)
{
    return kms_cbor_put_head(b, KMS_CBOR_ARRAY, (uint64_t)n);
}

int kms_cbor_put_map(struct kms_buf *b, size_t n)
{
    return kms_cbor_put_head(b, KMS_CBOR_MAP, (uint64_t)n);
}
