/* CBOR item heads (RFC 8949 §3): read bounds-checked through kms_reader, written to kms_buf. */
#include <string.h>

#include "attest/cbor.h"
#include "common/err.h"

int kms_cbor_head(struct kms_reader *r, uint8_t *major, uint8_t *ai, uint64_t *val, int *indef)
{
    uint8_t ib, b8;
    uint16_t b16;
    uint32_t b32;
    int rc = 0;

    *indef = 0;
    *val = 0;
    KMS_GUARD(kms_rd_u8(r, &ib));
    *major = (uint8_t)(ib >> 5);
    *ai = (uint8_t)(ib & 0x1f);
    if (*ai < 24) {
        *val = *ai;
    } else if (*ai == 24) {
        KMS_GUARD(kms_rd_u8(r, &b8));
        *val = b8;
    } else if (*ai == 25) {
        KMS_GUARD(kms_rd_u16be(r, &b16));
        *val = b16;
    } else if (*ai == 26) {
        KMS_GUARD(kms_rd_u32be(r, &b32));
        *val = b32;
    } else if (*ai == 27) {
        KMS_GUARD(kms_rd_u64be(r, val));
    } else if (*ai == 31) {
        *indef = 1;
    } else {
        rc = kms_err_set(KMS_ERR_PARSE, "reserved additional information %u", *ai);
    }
out:
    return rc;
}

int kms_cbor_head32(struct kms_reader *r, uint8_t *major, uint64_t *val)
{
    uint8_t ai;
    int indef;
    int rc;

    rc = kms_cbor_head(r, major, &ai, val, &indef);
    if (rc == 0 && (indef || ai == 27))
        rc = kms_err_set(KMS_ERR_PARSE, "unsupported CBOR length encoding %u", ai);
    return rc;
}

/* ---------------------------------------------------------------- writer */

/* The head of (major, val) in its shortest form into h (9 bytes); returns its length. */
static size_t head_bytes(uint8_t major, uint64_t val, uint8_t h[9])
{
    size_t n, i;

    if (val < 24) {
        h[0] = (uint8_t)(major << 5 | val);
        return 1;
    }
    if (val <= UINT8_MAX) {
        h[0] = (uint8_t)(major << 5 | 24u);
        n = 1;
    } else if (val <= UINT16_MAX) {
        h[0] = (uint8_t)(major << 5 | 25u);
        n = 2;
    } else if (val <= UINT32_MAX) {
        h[0] = (uint8_t)(major << 5 | 26u);
        n = 4;
    } else {
        h[0] = (uint8_t)(major << 5 | 27u);
        n = 8;
    }
    for (i = 0; i < n; i++)
        h[n - i] = (uint8_t)(val >> (8 * i));
    return n + 1;
}

int kms_cbor_put_head(struct kms_buf *b, uint8_t major, uint64_t val)
{
    uint8_t h[9];
    int rc = 0;

    KMS_ENSURE(major <= 7, KMS_ERR_INVAL, "CBOR major type %u does not exist", major);
    KMS_GUARD(kms_buf_put(b, h, head_bytes(major, val, h)));
out:
    return rc;
}

int kms_cbor_put_uint(struct kms_buf *b, uint64_t v)
{
    return kms_cbor_put_head(b, KMS_CBOR_UINT, v);
}

/* A string head and its n bytes, all or nothing. */
static int put_string(struct kms_buf *b, uint8_t major, const void *p, size_t n)
{
    uint8_t h[9];
    size_t hn = head_bytes(major, (uint64_t)n, h);
    int rc = 0;

    KMS_ENSURE(n <= KMS_BUF_MAX - hn, KMS_ERR_TOOBIG, "CBOR string of %zu bytes exceeds %u bytes",
               n, KMS_BUF_MAX);
    KMS_GUARD(kms_buf_reserve(b, hn + n));
    KMS_GUARD(kms_buf_put(b, h, hn));
    KMS_GUARD(kms_buf_put(b, p, n));
out:
    return rc;
}

int kms_cbor_put_bstr(struct kms_buf *b, const uint8_t *p, size_t n)
{
    return put_string(b, KMS_CBOR_BSTR, p, n);
}

int kms_cbor_put_tstr(struct kms_buf *b, const char *s)
{
    return put_string(b, KMS_CBOR_TSTR, s, strlen(s));
}

int kms_cbor_put_null(struct kms_buf *b)
{
    return kms_buf_put_u8(b, 0xf6);
}

int kms_cbor_put_array(struct kms_buf *b, size_t n)
{
    return kms_cbor_put_head(b, KMS_CBOR_ARRAY, (uint64_t)n);
}

int kms_cbor_put_map(struct kms_buf *b, size_t n)
{
    return kms_cbor_put_head(b, KMS_CBOR_MAP, (uint64_t)n);
}

/* ---------------------------------------------------------------- decoder: item views */

int kms_cbor_read(struct kms_reader *r, struct kms_cbor_item *it)
{
    int rc = 0;

    memset(it, 0, sizeof(*it));
    KMS_GUARD(kms_cbor_head(r, &it->major, &it->ai, &it->val, &it->indef));
    switch (it->major) {
    case KMS_CBOR_UINT:
    case KMS_CBOR_NEGINT:
        KMS_ENSURE(!it->indef, KMS_ERR_PARSE, "integer with indefinite length");
        break;
    case KMS_CBOR_BSTR:
    case KMS_CBOR_TSTR:
        KMS_ENSURE(!it->indef, KMS_ERR_PARSE, "indefinite-length string");
        KMS_ENSURE(it->val <= kms_rd_left(r), KMS_ERR_PARSE, "string length %llu exceeds input",
                   (unsigned long long)it->val);
        it->len = (size_t)it->val;
        KMS_GUARD(kms_rd_ptr(r, it->len, &it->p));
        break;
    case KMS_CBOR_ARRAY:
    case KMS_CBOR_MAP:
        /* every element takes at least one byte, a pair two */
        KMS_ENSURE(it->indef || (it->val <= kms_rd_left(r) &&
                                 (it->major == KMS_CBOR_ARRAY || it->val <= kms_rd_left(r) / 2)),
                   KMS_ERR_PARSE, "item count %llu exceeds input", (unsigned long long)it->val);
        break;
    default: /* tags and major 7: the caller judges them */
        break;
    }
out:
    return rc;
}

void kms_cbor_iter_init(struct kms_cbor_iter *it, struct kms_reader *r,
                        const struct kms_cbor_item *c)
{
    it->r = r;
    it->indef = c->indef;
    it->done = 0;
    it->left = c->indef ? 0 : c->val;
}

int kms_cbor_next(struct kms_cbor_iter *it, int *more)
{
    uint8_t brk;
    int rc = 0;

    *more = 0;
    if (it->done)
        goto out;
    if (!it->indef) {
        if (it->left == 0) {
            it->done = 1;
            goto out;
        }
        it->left--;
        *more = 1;
        goto out;
    }
    KMS_ENSURE(kms_rd_left(it->r) > 0, KMS_ERR_PARSE, "unterminated container");
    if (it->r->p[it->r->off] == 0xff) {
        KMS_GUARD(kms_rd_u8(it->r, &brk));
        it->done = 1;
        goto out;
    }
    *more = 1;
out:
    return rc;
}

static int skip_item(struct kms_reader *r, unsigned depth, unsigned max_depth);

/* The content of it (just read) at nesting depth `depth`. */
static int skip_content(struct kms_reader *r, const struct kms_cbor_item *it, unsigned depth,
                        unsigned max_depth)
{
    struct kms_cbor_iter in;
    int more;
    int rc = 0;

    switch (it->major) {
    case KMS_CBOR_ARRAY:
    case KMS_CBOR_MAP:
        kms_cbor_iter_init(&in, r, it);
        for (;;) {
            KMS_GUARD(kms_cbor_next(&in, &more));
            if (!more)
                break;
            KMS_GUARD(skip_item(r, depth + 1, max_depth));
            if (it->major == KMS_CBOR_MAP)
                KMS_GUARD(skip_item(r, depth + 1, max_depth));
        }
        break;
    case KMS_CBOR_TAG:
        KMS_ENSURE(!it->indef, KMS_ERR_PARSE, "tag with indefinite length");
        KMS_GUARD(skip_item(r, depth + 1, max_depth));
        break;
    case KMS_CBOR_SIMPLE:
        KMS_ENSURE(!it->indef, KMS_ERR_PARSE, "unexpected break");
        break;
    default: /* integers and strings are complete */
        break;
    }
out:
    return rc;
}

static int skip_item(struct kms_reader *r, unsigned depth, unsigned max_depth)
{
    struct kms_cbor_item it;
    int rc = 0;

    KMS_ENSURE(depth <= max_depth, KMS_ERR_PARSE, "nesting deeper than %u", max_depth);
    KMS_GUARD(kms_cbor_read(r, &it));
    KMS_GUARD(skip_content(r, &it, depth, max_depth));
out:
    return rc;
}

int kms_cbor_skip_rest(struct kms_reader *r, const struct kms_cbor_item *it, unsigned max_depth)
{
    return skip_content(r, it, 0, max_depth);
}

int kms_cbor_skip(struct kms_reader *r, unsigned max_depth)
{
    return skip_item(r, 0, max_depth);
}

int kms_cbor_count(const struct kms_reader *r, const struct kms_cbor_item *c, unsigned max_depth,
                   uint64_t *n)
{
    struct kms_reader copy = *r;
    struct kms_cbor_iter in;
    uint64_t count = 0;
    int more;
    int rc = 0;

    *n = 0;
    KMS_ENSURE(c->major == KMS_CBOR_ARRAY || c->major == KMS_CBOR_MAP, KMS_ERR_INVAL,
               "CBOR item is not an array or map");
    if (!c->indef) {
        *n = c->val;
        goto out;
    }
    kms_cbor_iter_init(&in, &copy, c);
    for (;;) {
        KMS_GUARD(kms_cbor_next(&in, &more));
        if (!more)
            break;
        KMS_GUARD(skip_item(&copy, 1, max_depth));
        if (c->major == KMS_CBOR_MAP)
            KMS_GUARD(skip_item(&copy, 1, max_depth));
        count++;
    }
    *n = count;
out:
    return rc;
}

int kms_cbor_is_text(const struct kms_cbor_item *it, const char *s)
{
    size_t n = strlen(s);

    return it->major == KMS_CBOR_TSTR && it->len == n && (n == 0 || memcmp(it->p, s, n) == 0);
}

int kms_cbor_is_uint(const struct kms_cbor_item *it, uint64_t v)
{
    return it->major == KMS_CBOR_UINT && it->val == v;
}

int kms_cbor_is_null(const struct kms_cbor_item *it)
{
    return it->major == KMS_CBOR_SIMPLE && !it->indef && it->ai == KMS_CBOR_NULL;
}

int kms_cbor_utf8_ok(const uint8_t *p, size_t n)
{
    size_t i = 0, more;
    uint8_t c, lo, hi;

    while (i < n) {
        c = p[i];
        lo = 0x80;
        hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
            if (c == 0xe0)
                lo = 0xa0; /* overlong */
            else if (c == 0xed)
                hi = 0x9f; /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
            if (c == 0xf0)
                lo = 0x90; /* overlong */
            else if (c == 0xf4)
                hi = 0x8f; /* past U+10FFFF */
        } else {
            return 0; /* continuation byte, C0/C1 (overlong) or F5..FF */
        }
        if (n - i - 1 < more || p[i + 1] < lo || p[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= more; k++) {
            if (p[i + k] < 0x80 || p[i + k] > 0xbf)
                return 0;
        }
        i += more + 1;
    }
    return 1;
}
