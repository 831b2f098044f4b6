#include "common/hex.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

void kms_hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 0xf];
    }
    out[2 * n] = '\0';
}

char *kms_hex_dup(const uint8_t *p, size_t n, int prefix0x)
{
    size_t off = prefix0x ? 2 : 0;
    char *s;

    if (n > (SIZE_MAX - 3) / 2)
        return NULL;
    s = malloc(2 * n + off + 1);
    if (s == NULL)
        return NULL;
    if (prefix0x) {
        s[0] = '0';
        s[1] = 'x';
    }
    kms_hex_encode(p, n, s + off);
    return s;
}

static int nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int kms_hex_decode(const char *s, uint8_t **out, size_t *len)
{
    size_t n;
    uint8_t *b;

    if (s == NULL)
        return kms_err_set(KMS_ERR_INVAL, "missing hex string");
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2;
    n = strlen(s);
    if (n % 2 != 0)
        return kms_err_set(KMS_ERR_PARSE, "hex string has odd length %zu", n);
    b = malloc(n / 2 + 1);
    if (b == NULL)
        return kms_err_set(KMS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n / 2; i++) {
        int hi = nibble(s[2 * i]);
        int lo = nibble(s[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            kms_free_secret(b, n / 2 + 1);
            return kms_err_set(KMS_ERR_PARSE, "invalid hex digit at position %zu", 2 * i);
        }
        b[i] = (uint8_t)((hi << 4) | lo);
    }
    *out = b;
    *len = n / 2;
    return 0;
}

int kms_hex_decode_exact(const char *s, uint8_t *out, size_t n)
{
    uint8_t *tmp = NULL;
    size_t len = 0;
    int rc = kms_hex_decode(s, &tmp, &len);

    if (rc < 0)
        return rc;
    if (len != n) {
        kms_free_secret(tmp, len);
        return kms_err_set(KMS_ERR_PARSE, "expected %zu bytes of hex, got %zu", n, len);
    }
    memcpy(out, tmp, n);
    kms_free_secret(tmp, len);
    return 0;
}
