/* UTF-8 checks for strings that came from the wire or from disk. */
#ifndef KMS_COMMON_UTF8_H
#define KMS_COMMON_UTF8_H

#include <stddef.h>

/* 1 if the n bytes at s are strict UTF-8 (RFC 3629: no overlong forms, no surrogates
 * U+D800..U+DFFF, nothing above U+10FFFF, no truncated sequence) and hold no NUL byte (strings
 * are kept as C strings), else 0. s may be NULL when n is 0. */
int kms_utf8_valid(const void *s, size_t n);

/* Length of the longest prefix of the C string s that is at most max bytes and does not end
 * inside a UTF-8 sequence (for truncating valid UTF-8 on a character boundary). */
size_t kms_utf8_prefix(const char *s, size_t max);

#endif
