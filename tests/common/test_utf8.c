/* common/utf8: the one strict UTF-8 validator (RFC 3629) and the boundary-safe prefix. */
#include "common/utf8.h"
#include "test.h"

#define V(lit) kms_utf8_valid((lit), sizeof(lit) - 1)

/* Proves: ASCII, and the shortest form of every sequence length up to U+10FFFF, pass. */
static void test_valid(void)
{
    CHECK(kms_utf8_valid(NULL, 0) == 1);
    CHECK(V("") == 1);
    CHECK(V("hello, world") == 1);
    CHECK(V("\xc2\x80") == 1);         /* U+0080, shortest 2-byte */
    CHECK(V("\xdf\xbf") == 1);         /* U+07FF */
    CHECK(V("\xe0\xa0\x80") == 1);     /* U+0800, shortest 3-byte */
    CHECK(V("\xed\x9f\xbf") == 1);     /* U+D7FF, just below the surrogates */
    CHECK(V("\xee\x80\x80") == 1);     /* U+E000, just above */
    CHECK(V("\xef\xbf\xbf") == 1);     /* U+FFFF */
    CHECK(V("\xf0\x90\x80\x80") == 1); /* U+10000, shortest 4-byte */
    CHECK(V("\xf4\x8f\xbf\xbf") == 1); /* U+10FFFF, the last code point */
    CHECK(V("gr\xc3\xbc\xc3\x9f dich \xe2\x82\xac \xf0\x9f\x94\x91") == 1);
}

/* Proves: overlong forms of every length are refused (also of NUL and '/'). */
static void test_overlong(void)
{
    CHECK(V("\xc0\x80") == 0);                 /* NUL as 2 bytes */
    CHECK(V("\xc0\xaf") == 0);                 /* '/' as 2 bytes */
    CHECK(V("\xc1\xbf") == 0);                 /* U+007F as 2 bytes */
    CHECK(V("\xe0\x80\xaf") == 0);             /* '/' as 3 bytes */
    CHECK(V("\xe0\x9f\xbf") == 0);             /* U+07FF as 3 bytes */
    CHECK(V("\xf0\x80\x80\xaf") == 0);         /* '/' as 4 bytes */
    CHECK(V("\xf0\x8f\xbf\xbf") == 0);         /* U+FFFF as 4 bytes */
    CHECK(V("\xf8\x88\x80\x80\x80") == 0);     /* 5-byte form */
    CHECK(V("\xfc\x84\x80\x80\x80\x80") == 0); /* 6-byte form */
}

/* Proves: UTF-16 surrogates (lone or paired, CESU-8) and code points above U+10FFFF are
 * refused. */
static void test_surrogates_and_range(void)
{
    CHECK(V("\xed\xa0\x80") == 0);             /* U+D800 */
    CHECK(V("\xed\xbf\xbf") == 0);             /* U+DFFF */
    CHECK(V("\xed\xa0\xbd\xed\xb4\x91") == 0); /* a CESU-8 pair */
    CHECK(V("\xf4\x90\x80\x80") == 0);         /* U+110000 */
    CHECK(V("\xf5\x80\x80\x80") == 0);         /* lead byte past U+10FFFF */
    CHECK(V("\xff") == 0);
    CHECK(V("\xfe") == 0);
}

/* Proves: truncated sequences (at the end and in the middle), stray continuation bytes and
 * NUL are refused; the length bound is honoured (no read past n). */
static void test_truncated(void)
{
    static const char tail[] = "ab\xe2\x82\xac";

    CHECK(V("\xc3") == 0);
    CHECK(V("\xe2\x82") == 0);
    CHECK(V("\xf0\x9f\x94") == 0);
    CHECK(V("\xe2\x82x") == 0); /* cut in the middle */
    CHECK(V("\xf0\x9f\x94\xc3\xa4") == 0);
    CHECK(V("\x80") == 0); /* stray continuation */
    CHECK(V("a\xbf") == 0);
    CHECK(V("a\0b") == 0); /* NUL: strings are C strings */
    CHECK(kms_utf8_valid(tail, 5) == 1);
    CHECK(kms_utf8_valid(tail, 4) == 0); /* the euro sign cut by n */
    CHECK(kms_utf8_valid(tail, 3) == 0);
    CHECK(kms_utf8_valid(tail, 2) == 1);
}

/* Proves: the prefix never ends inside a sequence and is the longest such within max. */
static void test_prefix(void)
{
    const char *s = "ab\xe2\x82\xac"
                    "c"; /* a b € c */

    CHECK(kms_utf8_prefix(s, 100) == 6);
    CHECK(kms_utf8_prefix(s, 6) == 6);
    CHECK(kms_utf8_prefix(s, 5) == 5);
    CHECK(kms_utf8_prefix(s, 4) == 2);
    CHECK(kms_utf8_prefix(s, 3) == 2);
    CHECK(kms_utf8_prefix(s, 2) == 2);
    CHECK(kms_utf8_prefix(s, 0) == 0);
    CHECK(kms_utf8_prefix("\xf0\x9f\x94\x91", 3) == 0);
}

int main(void)
{
    RUN(test_valid);
    RUN(test_overlong);
    RUN(test_surrogates_and_range);
    RUN(test_truncated);
    RUN(test_prefix);
    TEST_MAIN_END();
}
