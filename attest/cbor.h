/* attest-internal: CBOR item heads (cbor.c), shared by the Nitro document walk, the NSM
 * response parser and the EIF signature section, a writer for the NSM request and the
 * simulated Nitro documents, and zero-copy item views for the Nitro document verifier. Not a
 * public API. */
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

/* ---------------------------------------------------------------- decoder: item views */
/* Zero-copy views of decoded items over a kms_reader: nothing is allocated, strings borrow the
 * reader's memory, every declared length or count is checked against the bytes that remain, and
 * recursion (kms_cbor_skip, kms_cbor_count) is bounded by the caller's max_depth. */

#define KMS_CBOR_FALSE 20u /* additional information of the simple values */
#define KMS_CBOR_TRUE 21u
#define KMS_CBOR_NULL 22u

/* One item as kms_cbor_read leaves it. */
struct kms_cbor_item {
    uint8_t major;    /* KMS_CBOR_* */
    uint8_t ai;       /* additional information of the head */
    int indef;        /* array/map of indefinite length; a break (0xff) in major 7 */
    uint64_t val;     /* integer argument, string length, definite array/map count, tag number */
    const uint8_t *p; /* strings: their val bytes, borrowed from the reader; NULL otherwise */
    size_t len;       /* strings: val */
};

/* Reads one item head. Strings are consumed whole (it->p borrows them; indefinite-length strings
 * and lengths past the end are refused); a definite array/map whose count exceeds the bytes that
 * remain is refused (every element takes at least one byte); the elements of a container and the
 * content of a tag stay unread. Tags and major 7 come back as heads: the caller judges them (an
 * indefinite tag is malformed, an indefinite major 7 is a break). */
KMS_WUR int kms_cbor_read(struct kms_reader *r, struct kms_cbor_item *it);
/* After kms_cbor_read of it: skips what it contains (array/map elements, a tag's content), at
 * most max_depth levels deep; nothing for other items. Refuses malformed and stray breaks. */
KMS_WUR int kms_cbor_skip_rest(struct kms_reader *r, const struct kms_cbor_item *it,
                               unsigned max_depth);
/* Skips one whole item (kms_cbor_read then kms_cbor_skip_rest). */
KMS_WUR int kms_cbor_skip(struct kms_reader *r, unsigned max_depth);
/* After kms_cbor_read of the array/map c: its element count (map: pairs) in *n, r unmoved
 * (an indefinite container is skipped on a copy of the reader, at most max_depth deep). */
KMS_WUR int kms_cbor_count(const struct kms_reader *r, const struct kms_cbor_item *c,
                           unsigned max_depth, uint64_t *n);

/* Iteration over the elements of an array/map whose head was just read. The reader is borrowed
 * and must outlive the iterator. */
struct kms_cbor_iter {
    struct kms_reader *r;
    int indef;
    int done;      /* the container is complete: kms_cbor_next reads nothing more */
    uint64_t left; /* definite: elements (map: pairs) not yet started */
};
void kms_cbor_iter_init(struct kms_cbor_iter *it, struct kms_reader *r,
                        const struct kms_cbor_item *c);
/* *more = 1: the next element (map: its key, then its value) is next in the reader, and the
 * caller reads or skips it (both, for a map pair) before the next call. *more = 0: the container
 * is complete (an indefinite one's break consumed), and stays so on later calls. */
KMS_WUR int kms_cbor_next(struct kms_cbor_iter *it, int *more);

/* 1 if it is a text string equal to the C string s, else 0. */
int kms_cbor_is_text(const struct kms_cbor_item *it, const char *s);
/* 1 if it is the unsigned integer v (in any head width), else 0. */
int kms_cbor_is_uint(const struct kms_cbor_item *it, uint64_t v);
/* 1 if it is null, else 0. */
int kms_cbor_is_null(const struct kms_cbor_item *it);
/* 1 if p[0..n) is well-formed UTF-8 (RFC 3629: no overlong forms, surrogates, code points past
 * U+10FFFF or truncated sequences; NUL is allowed), else 0. */
int kms_cbor_utf8_ok(const uint8_t *p, size_t n);

#endif
