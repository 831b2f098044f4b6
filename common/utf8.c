#include "common/utf8.h"

#include <stdint.h>
#include <string.h>

int kms_utf8_valid(const void *s, size_t n)
{
    const uint8_t *p = s;
    size_t i = 0;

    while (i < n) {
        uint8_t c = p[i];
        size_t k;
        uint32_t cp;

        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        /* 0x80..0xc1 are continuation bytes or overlong 2-byte leads; 0xf5.. exceed U+10FFFF. */
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1fu;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0fu;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07u;
        } else {
            return 0;
        }
        if (n - i - 1 < k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0u) != 0x80u)
                return 0;
            cp = (cp << 6) | (p[i + j] & 0x3fu);
        }
        if ((k == 2 && cp < 0x800u) || (k == 3 && (cp < 0x10000u || cp > 0x10ffffu)) ||
            (cp >= 0xd800u && cp <= 0xdfffu))
            return 0;
        i += k + 1;
    }
    return 1;
}

size_t kms_utf8_prefix(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n <= max)
        return n;
    n = max;
    /* Back off continuation bytes, then drop the lead byte whose sequence was cut. */
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}
