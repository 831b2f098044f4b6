/*
 * chain: RLP encoding (Ethereum yellow paper, appendix B) for signed transactions. Only the
 * encoder is needed: the KMS never parses RLP from the network.
 */
#include <string.h>

#include "chain/eth.h"

/* Short form below 56 bytes; else 0xb7/0xf7 + length of the big-endian length. */
static int put_header(struct kms_buf *b, uint8_t short_base, size_t n)
{
    uint8_t lenbe[8];
    int k = 0, rc = 0;

    if (n < 56) {
        KMS_GUARD(kms_buf_put_u8(b, (uint8_t)(short_base + n)));
        goto out;
    }
    for (size_t v = n; v > 0; v >>= 8)
        lenbe[7 - k++] = (uint8_t)(v & 0xff);
    KMS_GUARD(kms_buf_put_u8(b, (uint8_t)(short_base + 55 + k)));
    KMS_GUARD(kms_buf_put(b, lenbe + 8 - k, (size_t)k));
out:
    return rc;
}

int kms_rlp_put_bytes(struct kms_buf *b, const uint8_t *p, size_t n)
{
    int rc = 0;

    if (n == 1 && p[0] < 0x80)
        return kms_buf_put_u8(b, p[0]);
    KMS_GUARD(put_header(b, 0x80, n));
    if (n > 0)
        KMS_GUARD(kms_buf_put(b, p, n));
out:
    return rc;
}

int kms_rlp_put_uint_be(struct kms_buf *b, const uint8_t *p, size_t n)
{
    while (n > 0 && p[0] == 0) {
        p++;
        n--;
    }
    return kms_rlp_put_bytes(b, p, n);
}

int kms_rlp_put_uint(struct kms_buf *b, uint64_t v)
{
    uint8_t be[8];

    for (int i = 0; i < 8; i++)
        be[7 - i] = (uint8_t)(v >> (8 * i));
    return kms_rlp_put_uint_be(b, be, 8);
}

int kms_rlp_put_list(struct kms_buf *out, const uint8_t *payload, size_t n)
{
    int rc = 0;

    KMS_GUARD(put_header(out, 0xc0, n));
    if (n > 0)
        KMS_GUARD(kms_buf_put(out, payload, n));
out:
    return rc;
}
