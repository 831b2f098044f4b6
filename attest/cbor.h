/* attest-internal: CBOR item heads (cbor.c), shared by the Nitro document walk, the NSM
 * response parser and the EIF signature section, and a writer for the NSM request and the
 * simulated Nitro documents. Not a public API. */
#ifndef KMS_ATTEST_CBOR_H
#define KMS_ATTEST_CBOR_H

#include <stdint.h>

#include "common/buf.h"

/* Reads one item head: *major (0..7), *ai (additional information), *val (the argument, 0 for
 * indefinite), *indef set for ai 31. ai 28..30 is refused (reserved). */
int kms_cbor_head(struct kms_reader *r, uint8_t *major, uint8_t *ai, uint64_t *val, int *indef);
/* A definite head with an argument of at most 32 bits: all NSM and serde_cbor (EIF) emit;
 * 64-bit arguments and indefinite lengths are refused. */
int kms_cbor_head32(struct kms_reader *r, uint8_t *major, uint64_t *val);

/* Major types (RFC 8949 §3.1). */
#define KMS_CBOR_UINT 0u
#define KMS_CBOR_NEGINT 1u
#define KMS_CBOR_BSTR 2u
#define KMS_CBOR_TSTR 3u
#define KMS_CBOR_ARRAY 4u
#define KMS_CBOR_MAP 5u
#define KMS_CBOR_TAG 6u
#define KMS_CBOR_SIMPLE 7u

/*
 * Writer: each call appends one definite item (or head) to b, with the argument in its shortest
 * form (RFC 8949 §4.2.1 preferred serialization; the bytes libcbor's cbor_serialize writes for
 * definite items, except that libcbor keeps the width an integer was built with). Returns 0,
 * KMS_ERR_NOMEM, or KMS_ERR_TOOBIG when b would exceed KMS_BUF_MAX; on failure b keeps its
 * previous contents. Arrays and maps are written as a head followed by their items; the caller
 * writes exactly the announced count (map: key, value, key, value, ...).
 */
/* A head: major type (0..7, else KMS_ERR_INVAL) and its argument. */
KMS_WUR int kms_cbor_put_head(struct kms_buf *b, uint8_t major, uint64_t val);
KMS_WUR int kms_cbor_put_uint(struct kms_buf *b, uint64_t v);
/* Byte string of n bytes from p (p may be NULL when n is 0). */
KMS_WUR int kms_cbor_put_bstr(struct kms_buf *b, const uint8_t *p, size_t n);
/* Text string s (NUL-terminated, written without the NUL; UTF-8 is the caller's duty). */
KMS_WUR int kms_cbor_put_tstr(struct kms_buf *b, const char *s);
/* The simple value null (0xf6). */
KMS_WUR int kms_cbor_put_null(struct kms_buf *b);
/* Heads of a definite array of n items / a definite map of n pairs. */
KMS_WUR int kms_cbor_put_array(struct kms_buf *b, size_t n);
KMS_WUR int kms_cbor_put_map(struct kms_buf *b, size_t n);

#endif
