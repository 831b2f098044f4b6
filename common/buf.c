#include "common/buf.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

void kms_rd_init(struct kms_reader *r, const uint8_t *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->off = 0;
}

size_t kms_rd_left(const struct kms_reader *r)
{
    return r->len - r->off;
}

static int need(const struct kms_reader *r, size_t n)
{
    if (r->len - r->off < n)
        return kms_err_set(KMS_ERR_PARSE, "truncated input: need %zu bytes at offset %zu, have %zu",
                           n, r->off, r->len - r->off);
    return 0;
}

int kms_rd_ptr(struct kms_reader *r, size_t n, const uint8_t **pp)
{
    int rc = need(r, n);

    if (rc < 0)
        return rc;
    *pp = r->p + r->off;
    r->off += n;
    return 0;
}

int kms_rd_copy(struct kms_reader *r, void *dst, size_t n)
{
    const uint8_t *p;
    int rc = kms_rd_ptr(r, n, &p);

    if (rc < 0)
        return rc;
    if (n > 0)
        memcpy(dst, p, n);
    return 0;
}

int kms_rd_skip(struct kms_reader *r, size_t n)
{
    const uint8_t *p;

    return kms_rd_ptr(r, n, &p);
}

int kms_rd_u8(struct kms_reader *r, uint8_t *v)
{
    return kms_rd_copy(r, v, 1);
}

static int rd_uint(struct kms_reader *r, size_t n, int be, uint64_t *v)
{
    const uint8_t *p;
    uint64_t x = 0;
    int rc = kms_rd_ptr(r, n, &p);

    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        size_t idx = be ? i : n - 1 - i;
        x = (x << 8) | p[idx];
    }
    *v = x;
    return 0;
}

int kms_rd_u16le(struct kms_reader *r, uint16_t *v)
{
    uint64_t x;
    int rc = rd_uint(r, 2, 0, &x);

    if (rc == 0)
        *v = (uint16_t)x;
    return rc;
}

int kms_rd_u32le(struct kms_reader *r, uint32_t *v)
{
    uint64_t x;
    int rc = rd_uint(r, 4, 0, &x);

    if (rc == 0)
        *v = (uint32_t)x;
    return rc;
}

int kms_rd_u64le(struct kms_reader *r, uint64_t *v)
{
    return rd_uint(r, 8, 0, v);
}

int kms_rd_u16be(struct kms_reader *r, uint16_t *v)
{
    uint64_t x;
    int rc = rd_uint(r, 2, 1, &x);

    if (rc == 0)
        *v = (uint16_t)x;
    return rc;
}

int kms_rd_u32be(struct kms_reader *r, uint32_t *v)
{
    uint64_t x;
    int rc = rd_uint(r, 4, 1, &x);

    if (rc == 0)
        *v = (uint32_t)x;
    return rc;
}

int kms_rd_u64be(struct kms_reader *r, uint64_t *v)
{
    return rd_uint(r, 8, 1, v);
}

int kms_buf_reserve(struct kms_buf *b, size_t extra)
{
    size_t ncap;
    uint8_t *n;

    if (KMS_BUF_MAX - b->len < extra)
        return kms_err_set(KMS_ERR_TOOBIG, "buffer would exceed %u bytes", KMS_BUF_MAX);
    if (b->cap - b->len >= extra)
        return 0;
    ncap = b->cap ? b->cap : 64;
    while (ncap - b->len < extra)
        ncap = ncap > KMS_BUF_MAX / 2 ? KMS_BUF_MAX : ncap * 2;
    /* Not realloc: the old block may hold secrets and must be wiped. */
    n = malloc(ncap);
    if (n == NULL)
        return kms_err_set(KMS_ERR_NOMEM, "out of memory");
    if (b->len > 0)
        memcpy(n, b->data, b->len);
    kms_free_secret(b->data, b->cap);
    b->data = n;
    b->cap = ncap;
    return 0;
}

int kms_buf_put(struct kms_buf *b, const void *p, size_t n)
{
    int rc = kms_buf_reserve(b, n);

    if (rc < 0)
        return rc;
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int kms_buf_put_u8(struct kms_buf *b, uint8_t v)
{
    return kms_buf_put(b, &v, 1);
}

static int put_uint(struct kms_buf *b, uint64_t v, size_t n, int be)
{
    uint8_t tmp[8];

    for (size_t i = 0; i < n; i++) {
        size_t idx = be ? n - 1 - i : i;
        tmp[idx] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
    return kms_buf_put(b, tmp, n);
}

int kms_buf_put_u16le(struct kms_buf *b, uint16_t v)
{
    return put_uint(b, v, 2, 0);
}

int kms_buf_put_u32le(struct kms_buf *b, uint32_t v)
{
    return put_uint(b, v, 4, 0);
}

int kms_buf_put_u64le(struct kms_buf *b, uint64_t v)
{
    return put_uint(b, v, 8, 0);
}

int kms_buf_put_u16be(struct kms_buf *b, uint16_t v)
{
    return put_uint(b, v, 2, 1);
}

int kms_buf_put_u32be(struct kms_buf *b, uint32_t v)
{
    return put_uint(b, v, 4, 1);
}

int kms_buf_put_u64be(struct kms_buf *b, uint64_t v)
{
    return put_uint(b, v, 8, 1);
}

int kms_buf_put_str(struct kms_buf *b, const char *s)
{
    return kms_buf_put(b, s, strlen(s));
}

uint8_t *kms_buf_steal(struct kms_buf *b, size_t *len)
{
    uint8_t *d = b->data;

    if (d == NULL) {
        /* Callers expect a valid pointer even for an empty result. */
        d = malloc(1);
    }
    if (len != NULL)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return d;
}

void kms_buf_free(struct kms_buf *b)
{
    if (b == NULL)
        return;
    kms_free_secret(b->data, b->cap);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void kms_free_secret(void *p, size_t len)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, len);
    free(p);
}
