/*
 * Minimal test harness: each test binary runs its cases, prints one line per case and exits
 * non-zero on any failure. Fixtures are found through KMS_FIXTURES_DIR (set by ctest to
 * tests/fixtures).
 */
#ifndef KMS_TEST_H
#define KMS_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/file.h"

extern int kms_test_failures;
int kms_test_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  FAIL %s:%d: %s (detail: %s)\n", __FILE__, __LINE__, #cond,          \
                    kms_err_detail());                                                             \
            kms_test_failures++;                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_RC(expr, want)                                                                       \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != (want)) {                                                                       \
            fprintf(stderr, "  FAIL %s:%d: %s returned %d, want %d (detail: %s)\n", __FILE__,      \
                    __LINE__, #expr, rc_, (int)(want), kms_err_detail());                          \
            kms_test_failures++;                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr) CHECK_RC(expr, 0)

/* Checks that the current error detail contains substring s. */
#define CHECK_DETAIL(s)                                                                            \
    do {                                                                                           \
        if (strstr(kms_err_detail(), (s)) == NULL) {                                               \
            fprintf(stderr, "  FAIL %s:%d: error detail \"%s\" lacks \"%s\"\n", __FILE__,          \
                    __LINE__, kms_err_detail(), (s));                                              \
            kms_test_failures++;                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_MEM(a, b, n) CHECK(memcmp((a), (b), (n)) == 0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        int before_ = kms_test_failures;                                                           \
        fn();                                                                                      \
        printf("%s %s\n", kms_test_failures == before_ ? "ok  " : "FAIL", #fn);                    \
    } while (0)

#define TEST_MAIN_END()                                                                            \
    do {                                                                                           \
        printf("%s: %d failure(s)\n", __FILE__, kms_test_failures);                                \
        return kms_test_failures == 0 ? 0 : 1;                                                     \
    } while (0)

/* Path under the fixtures dir (tests/fixtures); returns a static buffer. */
static inline const char *kms_test_fixture(const char *rel)
{
    static char buf[4096];
    const char *d = getenv("KMS_FIXTURES_DIR");

    snprintf(buf, sizeof(buf), "%s/%s", d != NULL ? d : "tests/fixtures", rel);
    return buf;
}

/* The bytes of fixture rel (at most 4 MiB; caller frees). Exits with status 2 when it cannot be
 * read: no test could run without it. */
static inline uint8_t *kms_test_load_fixture(const char *rel, size_t *len)
{
    uint8_t *p = NULL;

    if (kms_file_read(kms_test_fixture(rel), 4u << 20, &p, len) < 0) {
        fprintf(stderr, "cannot read fixture %s: %s\n", rel, kms_err_detail());
        exit(2);
    }
    return p;
}

#endif
