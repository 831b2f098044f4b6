/* Lowercase hex encoding and tolerant decoding (optional 0x prefix). */
#ifndef KMS_COMMON_HEX_H
#define KMS_COMMON_HEX_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Writes 2*n hex chars plus NUL into out (caller provides 2*n+1 bytes). */
void kms_hex_encode(const uint8_t *p, size_t n, char *out);
/* Returns a malloc'd NUL-terminated hex string (caller frees), or NULL. prefix0x adds "0x". */
char *kms_hex_dup(const uint8_t *p, size_t n, int prefix0x);
/* Decodes hex (a leading "0x"/"0X" is skipped) into a malloc'd buffer; caller frees *out.
 * Empty input gives *out non-NULL, *len 0. Fails with KMS_ERR_PARSE on odd length or bad digit. */
KMS_WUR int kms_hex_decode(const char *s, uint8_t **out, size_t *len);
/* Decodes into a fixed buffer; the decoded length must be exactly n. */
KMS_WUR int kms_hex_decode_exact(const char *s, uint8_t *out, size_t n);

#endif
