/*
 * CBOR item views (attest/cbor.h decoder block): heads of every width, strings borrowed from the
 * input, refused lengths and counts past the end, bounded skipping and counting of nested and
 * indefinite containers, iteration, and the UTF-8 check, whose decision is compared byte for byte
 * with libcbor 0.8 (the decoder the Nitro verifier used before, which rejects text that is not
 * UTF-8).
 */
#include <cbor.h>
#include <stdint.h>
#include <string.h>

#include "attest/cbor.h"
#include "common/buf.h"
#include "test.h"

static int read1(const uint8_t *p, size_t len, struct kms_cbor_item *it, size_t *off)
{
    struct kms_reader r;
    int rc;

    kms_rd_init(&r, p, len);
    rc = kms_cbor_read(&r, it);
    *off = r.off;
    return rc;
}

/* Integers of every head width, negative integers, simple values and tags as heads. */
static void test_read_scalars(void)
{
    static const struct {
        uint8_t b[9];
        size_t len;
        uint8_t major;
        uint64_t val;
    } cases[] = {
        {{0x17}, 1, KMS_CBOR_UINT, 23},
        {{0x18, 0x18}, 2, KMS_CBOR_UINT, 24},
        {{0x18, 0x01}, 2, KMS_CBOR_UINT, 1}, /* not the shortest form: still 1 */
        {{0x19, 0x01, 0x00}, 3, KMS_CBOR_UINT, 256},
        {{0x1a, 0x00, 0x01, 0x00, 0x00}, 5, KMS_CBOR_UINT, 65536},
        {{0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9, KMS_CBOR_UINT, UINT64_MAX},
        {{0x38, 0x22}, 2, KMS_CBOR_NEGINT, 34}, /* -35 */
        {{0xc1}, 1, KMS_CBOR_TAG, 1},
        {{0xd8, 0x12}, 2, KMS_CBOR_TAG, 18},
    };
    struct kms_cbor_item it;
    size_t off;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK_OK(read1(cases[i].b, cases[i].len, &it, &off));
        CHECK(it.major == cases[i].major && it.val == cases[i].val && !it.indef);
        CHECK(off == cases[i].len && it.p == NULL);
    }
    CHECK_OK(read1((const uint8_t *)"\x18\x01", 2, &it, &off));
    CHECK(kms_cbor_is_uint(&it, 1) && !kms_cbor_is_uint(&it, 2) && !kms_cbor_is_null(&it));
    CHECK_OK(read1((const uint8_t *)"\x21", 1, &it, &off));
    CHECK(!kms_cbor_is_uint(&it, 1)); /* -2 */
    CHECK_OK(read1((const uint8_t *)"\xf6", 1, &it, &off));
    CHECK(it.major == KMS_CBOR_SIMPLE && it.ai == KMS_CBOR_NULL && kms_cbor_is_null(&it));
    CHECK_OK(read1((const uint8_t *)"\xf5", 1, &it, &off));
    CHECK(it.ai == KMS_CBOR_TRUE && !kms_cbor_is_null(&it));
    /* a break is a major 7 head with indef set (the caller judges it) */
    CHECK_OK(read1((const uint8_t *)"\xff", 1, &it, &off));
    CHECK(it.major == KMS_CBOR_SIMPLE && it.indef && !kms_cbor_is_null(&it));
    /* a half float's two bytes are consumed */
    CHECK_OK(read1((const uint8_t *)"\xf9\x3c\x00", 3, &it, &off));
    CHECK(it.major == KMS_CBOR_SIMPLE && it.ai == 25 && off == 3);
}

/* Strings borrow the input; text compares by bytes. */
static void test_read_strings(void)
{
    static const uint8_t b[] = {0x43, 'a', 'b', 'c', 0x66, 'S', 'H', 'A', '3', '8', '4', 0x40};
    struct kms_reader r;
    struct kms_cbor_item it;

    kms_rd_init(&r, b, sizeof(b));
    CHECK_OK(kms_cbor_read(&r, &it));
    CHECK(it.major == KMS_CBOR_BSTR && it.len == 3 && it.p == b + 1 && r.off == 4);
    CHECK(!kms_cbor_is_text(&it, "abc")); /* a byte string is not text */
    CHECK_OK(kms_cbor_read(&r, &it));
    CHECK(it.major == KMS_CBOR_TSTR && it.len == 6 && it.p == b + 5);
    CHECK(kms_cbor_is_text(&it, "SHA384") && !kms_cbor_is_text(&it, "SHA38") &&
          !kms_cbor_is_text(&it, "SHA3840") && !kms_cbor_is_text(&it, "SHA256"));
    CHECK_OK(kms_cbor_read(&r, &it));
    CHECK(it.major == KMS_CBOR_BSTR && it.len == 0 && r.off == sizeof(b));
    CHECK(kms_rd_left(&r) == 0);
}

/* Each malformation is refused with its own detail; nothing is read past the end. */
static void test_read_refused(void)
{
    static const struct {
        uint8_t b[10];
        size_t len;
        const char *detail;
    } cases[] = {
        {{0x1f}, 1, "integer with indefinite length"},
        {{0x3f}, 1, "integer with indefinite length"},
        {{0x5f, 0x41, 0x00, 0xff}, 4, "indefinite-length string"},
        {{0x7f, 0xff}, 2, "indefinite-length string"},
        {{0x43, 'a', 'b'}, 3, "string length 3 exceeds input"},
        {{0x5a, 0xff, 0xff, 0xff, 0xff, 0x00}, 6, "string length 4294967295 exceeds input"},
        {{0x83, 0x01, 0x02}, 3, "item count 3 exceeds input"},
        {{0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9, "item count"},
        {{0xa2, 0x01, 0x02, 0x03}, 4, "item count 2 exceeds input"}, /* 2 pairs need 4 bytes */
        {{0x1c}, 1, "reserved additional information 28"},
        {{0x19, 0x01}, 2, "truncated"},
        {{0}, 0, "truncated"},
    };
    struct kms_cbor_item it;
    size_t off;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK_RC(read1(cases[i].b, cases[i].len, &it, &off), KMS_ERR_PARSE);
        CHECK_DETAIL(cases[i].detail);
    }
    /* the pair count bound is exact: {1: 2} in 2 bytes is fine */
    CHECK_OK(read1((const uint8_t *)"\xa1\x01\x02", 3, &it, &off));
    CHECK(it.major == KMS_CBOR_MAP && it.val == 1 && off == 1);
}

/* Skipping: nested definite and indefinite containers, tags, floats; depth bounded; stray and
 * misplaced breaks refused. */
static void test_skip(void)
{
    /* [1, {"a": [_ h'00', 2.0]}, 18(h''), null] then a trailing 0x07 */
    static const uint8_t nested[] = {0x84, 0x01, 0xa1, 0x61, 'a',  0x9f, 0x41, 0x00,
                                     0xf9, 0x40, 0x00, 0xff, 0xd2, 0x40, 0xf6, 0x07};
    static const uint8_t deep[] = {0x81, 0x81, 0x81, 0x00}; /* [[[0]]]: depth 3 */
    struct kms_reader r;

    kms_rd_init(&r, nested, sizeof(nested));
    CHECK_OK(kms_cbor_skip(&r, 8));
    CHECK(r.off == sizeof(nested) - 1);

    kms_rd_init(&r, deep, sizeof(deep));
    CHECK_OK(kms_cbor_skip(&r, 3));
    CHECK(r.off == sizeof(deep));
    kms_rd_init(&r, deep, sizeof(deep));
    CHECK_RC(kms_cbor_skip(&r, 2), KMS_ERR_PARSE);
    CHECK_DETAIL("nesting deeper than 2");
    /* a tag counts as a level */
    kms_rd_init(&r, (const uint8_t *)"\xc1\xc1\x00", 3);
    CHECK_RC(kms_cbor_skip(&r, 1), KMS_ERR_PARSE);
    CHECK_DETAIL("nesting deeper than 1");

    kms_rd_init(&r, (const uint8_t *)"\xff", 1);
    CHECK_RC(kms_cbor_skip(&r, 8), KMS_ERR_PARSE);
    CHECK_DETAIL("unexpected break");
    /* {_ 1: break }: a break in place of a value */
    kms_rd_init(&r, (const uint8_t *)"\xbf\x01\xff", 3);
    CHECK_RC(kms_cbor_skip(&r, 8), KMS_ERR_PARSE);
    CHECK_DETAIL("unexpected break");
    /* a break inside a definite array */
    kms_rd_init(&r, (const uint8_t *)"\x82\x01\xff", 3);
    CHECK_RC(kms_cbor_skip(&r, 8), KMS_ERR_PARSE);
    CHECK_DETAIL("unexpected break");
    kms_rd_init(&r, (const uint8_t *)"\x9f\x01\x02", 3);
    CHECK_RC(kms_cbor_skip(&r, 8), KMS_ERR_PARSE);
    CHECK_DETAIL("unterminated container");
    kms_rd_init(&r, (const uint8_t *)"\xdf\x00", 2);
    CHECK_RC(kms_cbor_skip(&r, 8), KMS_ERR_PARSE);
    CHECK_DETAIL("tag with indefinite length");
    /* an inner malformation is passed on */
    kms_rd_init(&r, (const uint8_t *)"\x81\x5f\xff", 3);
    CHECK_RC(kms_cbor_skip(&r, 8), KMS_ERR_PARSE);
    CHECK_DETAIL("indefinite-length string");
}

/* kms_cbor_skip_rest after a head: the rest of a container; nothing for a scalar. */
static void test_skip_rest(void)
{
    static const uint8_t b[] = {0x82, 0x01, 0x02, 0x03};
    struct kms_reader r;
    struct kms_cbor_item it;

    kms_rd_init(&r, b, sizeof(b));
    CHECK_OK(kms_cbor_read(&r, &it));
    CHECK(r.off == 1);
    CHECK_OK(kms_cbor_skip_rest(&r, &it, 8));
    CHECK(r.off == 3);
    CHECK_OK(kms_cbor_read(&r, &it));
    CHECK_OK(kms_cbor_skip_rest(&r, &it, 8));
    CHECK(r.off == 4 && kms_cbor_is_uint(&it, 3));
}

/* Counting leaves the reader where it was; an indefinite container is counted to its break. */
static void test_count(void)
{
    /* {_ "a": [_ 1, 2], "b": {} } and [_ ] and [_ 1 (unterminated) */
    static const uint8_t indef_map[] = {0xbf, 0x61, 'a', 0x9f, 0x01, 0x02,
                                        0xff, 0x61, 'b', 0xa0, 0xff};
    struct kms_reader r;
    struct kms_cbor_item it;
    uint64_t n = 99;

    kms_rd_init(&r, indef_map, sizeof(indef_map));
    CHECK_OK(kms_cbor_read(&r, &it));
    CHECK(it.major == KMS_CBOR_MAP && it.indef);
    CHECK_OK(kms_cbor_count(&r, &it, 8, &n));
    CHECK(n == 2 && r.off == 1);

    kms_rd_init(&r, (const uint8_t *)"\x83\x01\x02\x03", 4);
    CHECK_OK(kms_cbor_read(&r, &it));
    CHECK_OK(kms_cbor_count(&r, &it, 8, &n));
    CHECK(n == 3 && r.off == 1);

    kms_rd_init(&r, (const uint8_t *)"\x9f\xff", 2);
    CHECK_OK(kms_cbor_read(&r, &it));
    CHECK_OK(kms_cbor_count(&r, &it, 8, &n));
    CHECK(n == 0);

    kms_rd_init(&r, (const uint8_t *)"\x9f\x01", 2);
    CHECK_OK(kms_cbor_read(&r, &it));
    CHECK_RC(kms_cbor_count(&r, &it, 8, &n), KMS_ERR_PARSE);
    CHECK_DETAIL("unterminated container");
    CHECK(n == 0);
    /* the elements' nesting is bounded too: [_ [[0]] ] holds depth 3 */
    kms_rd_init(&r, (const uint8_t *)"\x9f\x81\x81\x00\xff", 5);
    CHECK_OK(kms_cbor_read(&r, &it));
    CHECK_RC(kms_cbor_count(&r, &it, 2, &n), KMS_ERR_PARSE);
    CHECK_DETAIL("nesting deeper than 2");
    CHECK_OK(kms_cbor_count(&r, &it, 3, &n));
    CHECK(n == 1);

    kms_rd_init(&r, (const uint8_t *)"\x01", 1);
    CHECK_OK(kms_cbor_read(&r, &it));
    CHECK_RC(kms_cbor_count(&r, &it, 8, &n), KMS_ERR_INVAL);
}

/* Iteration: definite and indefinite; the break is consumed once and later calls read nothing. */
static void test_iter(void)
{
    /* [_ 7, 8] 0x05 */
    static const uint8_t b[] = {0x9f, 0x07, 0x08, 0xff, 0x05};
    static const uint8_t m[] = {0xa2, 0x01, 0x02, 0x03, 0x04, 0x05};
    struct kms_reader r;
    struct kms_cbor_item it, el;
    struct kms_cbor_iter in;
    uint64_t sum = 0, seen = 0;
    int more;

    kms_rd_init(&r, b, sizeof(b));
    CHECK_OK(kms_cbor_read(&r, &it));
    kms_cbor_iter_init(&in, &r, &it);
    for (;;) {
        CHECK_OK(kms_cbor_next(&in, &more));
        if (!more)
            break;
        CHECK_OK(kms_cbor_read(&r, &el));
        sum += el.val;
        seen++;
    }
    CHECK(seen == 2 && sum == 15 && r.off == 4);
    CHECK_OK(kms_cbor_next(&in, &more));
    CHECK(!more && r.off == 4);

    kms_rd_init(&r, m, sizeof(m));
    CHECK_OK(kms_cbor_read(&r, &it));
    kms_cbor_iter_init(&in, &r, &it);
    seen = 0;
    sum = 0;
    for (;;) {
        CHECK_OK(kms_cbor_next(&in, &more));
        if (!more)
            break;
        CHECK_OK(kms_cbor_read(&r, &el));
        sum += el.val;
        CHECK_OK(kms_cbor_read(&r, &el));
        sum += 10 * el.val;
        seen++;
    }
    CHECK(seen == 2 && sum == 1 + 20 + 3 + 40 && r.off == 5);
    CHECK_OK(kms_cbor_next(&in, &more));
    CHECK(!more && r.off == 5);
}

/* UTF-8 by RFC 3629, independently of libcbor. */
static void test_utf8_cases(void)
{
    static const struct {
        const char *s;
        size_t len;
        int ok;
    } cases[] = {
        {"", 0, 1},
        {"a\0b", 3, 1},                  /* NUL is a code point */
        {"\xc2\x80", 2, 1},              /* U+0080 */
        {"\xdf\xbf", 2, 1},              /* U+07FF */
        {"\xe0\xa0\x80", 3, 1},          /* U+0800 */
        {"\xed\x9f\xbf", 3, 1},          /* U+D7FF */
        {"\xee\x80\x80", 3, 1},          /* U+E000 */
        {"\xef\xbf\xbf", 3, 1},          /* U+FFFF */
        {"\xf0\x90\x80\x80", 4, 1},      /* U+10000 */
        {"\xf4\x8f\xbf\xbf", 4, 1},      /* U+10FFFF */
        {"\x80", 1, 0},                  /* lone continuation */
        {"\xc0\x80", 2, 0},              /* overlong NUL */
        {"\xc1\xbf", 2, 0},              /* overlong */
        {"\xe0\x9f\xbf", 3, 0},          /* overlong */
        {"\xed\xa0\x80", 3, 0},          /* surrogate U+D800 */
        {"\xed\xbf\xbf", 3, 0},          /* surrogate U+DFFF */
        {"\xf0\x8f\xbf\xbf", 4, 0},      /* overlong */
        {"\xf4\x90\x80\x80", 4, 0},      /* U+110000 */
        {"\xf5\x80\x80\x80", 4, 0},      /* past U+10FFFF */
        {"\xff", 1, 0},                  /* never in UTF-8 */
        {"\xe2\x82", 2, 0},              /* truncated */
        {"ab\xf0\x9f\x98", 5, 0},        /* truncated at the end */
        {"\xe2\x82\xac\xc3\xa9x", 6, 1}, /* euro, e-acute, x */
        {"\xe2\x82\x41", 3, 0},          /* ASCII in place of a continuation */
        {"\xf0\x9f\x98\x80\x80", 5, 0},  /* one continuation too many */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int ok = kms_cbor_utf8_ok((const uint8_t *)cases[i].s, cases[i].len);

        CHECK(ok == cases[i].ok);
        if (ok != cases[i].ok)
            fprintf(stderr, "  case %zu\n", i);
    }
}

/* libcbor 0.8's verdict on the text string of the given bytes (1 = loads). */
static int libcbor_text_ok(const uint8_t *s, size_t n)
{
    uint8_t b[16];
    struct cbor_load_result res;
    cbor_item_t *it;
    int ok;

    b[0] = (uint8_t)(0x60 | n); /* n < 24 */
    memcpy(b + 1, s, n);
    memset(&res, 0, sizeof(res));
    it = cbor_load(b, n + 1, &res);
    ok = it != NULL && res.error.code == CBOR_ERR_NONE && res.read == n + 1;
    if (it != NULL)
        cbor_decref(&it);
    return ok;
}

/* The UTF-8 decision equals libcbor 0.8's for every 1- and 2-byte string, every 3-byte string
 * with a multi-byte lead, 4-byte strings over every 4-byte-or-more lead and second byte (boundary
 * values for the last two), and 2-byte candidates between ASCII bytes. */
static void test_utf8_matches_libcbor(void)
{
    static const uint8_t edge[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf,
                                   0xc0, 0xc2, 0xe0, 0xed, 0xf0, 0xf4, 0xf5, 0xff};
    uint8_t s[6];
    unsigned long n = 0, bad = 0;

    for (unsigned a = 0; a < 256; a++) {
        s[0] = (uint8_t)a;
        bad += kms_cbor_utf8_ok(s, 1) != libcbor_text_ok(s, 1);
        n++;
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (uint8_t)b;
            bad += kms_cbor_utf8_ok(s, 2) != libcbor_text_ok(s, 2);
            n++;
            /* the third byte only matters behind a lead that asks for more */
            if (a < 0xe0)
                continue;
            for (unsigned c = 0; c < 256; c++) {
                s[2] = (uint8_t)c;
                bad += kms_cbor_utf8_ok(s, 3) != libcbor_text_ok(s, 3);
                n++;
            }
            if (a < 0xf0)
                continue;
            for (size_t c = 0; c < sizeof(edge); c++) {
                for (size_t d = 0; d < sizeof(edge); d++) {
                    s[2] = edge[c];
                    s[3] = edge[d];
                    bad += kms_cbor_utf8_ok(s, 4) != libcbor_text_ok(s, 4);
                    n++;
                }
            }
        }
    }
    /* with ASCII around a 2-byte candidate */
    for (unsigned a = 0x80; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            s[0] = 'x';
            s[1] = (uint8_t)a;
            s[2] = (uint8_t)b;
            s[3] = 'y';
            bad += kms_cbor_utf8_ok(s, 4) != libcbor_text_ok(s, 4);
            n++;
        }
    }
    CHECK(bad == 0);
    CHECK(n > 1000000ul);
    printf("  %lu strings compared, %lu differ\n", n, bad);
}

int main(void)
{
    RUN(test_read_scalars);
    RUN(test_read_strings);
    RUN(test_read_refused);
    RUN(test_skip);
    RUN(test_skip_rest);
    RUN(test_count);
    RUN(test_iter);
    RUN(test_utf8_cases);
    RUN(test_utf8_matches_libcbor);
    TEST_MAIN_END();
}
