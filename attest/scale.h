/* attest: SCALE primitives (scale.c), shared with node/csr.c. */
#ifndef KMS_ATTEST_SCALE_H
#define KMS_ATTEST_SCALE_H

#include "attest/attest.h"

/* ---------------------------------------------------------------- SCALE primitives
 * (scale.c; shared with node/csr.c)
 * Bounded SCALE reading and writing over common/buf.h's kms_reader / kms_buf. Readers never
 * trust a length: it is checked against the caller's maximum and the bytes left. They fail with
 * KMS_ERR_PARSE (truncated or malformed input) or KMS_ERR_TOOBIG (a length above max), the
 * detail naming `what` and the offset; callers map these to their layer's codes. */
struct kms_reader;
struct kms_buf;

/* Compact<u32> used as a length: canonical forms only (a value that fits a shorter form is
 * refused, so every value has one encoding); the big-integer form is refused. */
KMS_WUR int kms_scale_get_compact(struct kms_reader *r, size_t *out);
/* Vec<u8> of at most max bytes, copied into *out (malloc'd, at least 1 byte; caller frees
 * out->p; untouched on error). */
KMS_WUR int kms_scale_get_bytes(struct kms_reader *r, size_t max, const char *what,
                                struct kms_bytes *out);
/* String of at most max bytes: strict UTF-8 (no overlongs, surrogates or code points above
 * U+10FFFF) and no NUL, since it is kept as a C string. *out is malloc'd and NUL-terminated
 * (caller frees; untouched on error). */
KMS_WUR int kms_scale_get_str(struct kms_reader *r, size_t max, const char *what, char **out);
/* Compact length n (KMS_ERR_TOOBIG from 2^30 on). */
KMS_WUR int kms_scale_put_compact(struct kms_buf *b, size_t n);
/* Vec<u8>: compact length, then the n bytes (p may be NULL when n == 0). */
KMS_WUR int kms_scale_put_bytes(struct kms_buf *b, const uint8_t *p, size_t n);

/* dst = a malloc'd copy of the n bytes at p (at least 1 byte allocated, so p may be NULL when
 * n == 0); KMS_ERR_NOMEM. dst is overwritten, not freed (scale.c). */
int kms_bytes_dup(struct kms_bytes *dst, const void *p, size_t n);

#endif
