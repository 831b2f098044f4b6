/* attest-internal: CBOR item heads (cbor.c), shared by the Nitro document walk, the NSM
 * response parser and the EIF signature section. Not a public API. */
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

#endif
