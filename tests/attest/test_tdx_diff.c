/*
 * Differential test of the TDX quote verifier: a fixed, deterministic set of mutations of two
 * real quotes (tdx/quote-v4.bin, v4; tdx/dcap-qvl-quote-v5.bin, v5 with a TD report 1.5 body)
 * is verified offline (signatures, PCK chain to the Intel root, TD attributes) at a fixed time,
 * and every verdict (0 or the KMS_ERR_* code) must equal the one recorded in
 * tests/fixtures/tdx/diff-verdicts.txt. A change of any verdict fails the test: the change is
 * then either a regression, or deliberate and the file is regenerated and reviewed:
 *     KMS_DIFF_REGEN=tests/fixtures/tdx/diff-verdicts.txt build/tests/attest/test_tdx_diff
 * (run from the worktree with KMS_FIXTURES_DIR=tests/fixtures).
 * Mutations: single-byte flips (xor 0x01 and xor 0x80) at the first 64 offsets and every 37th
 * offset of the used length (header, body, signature, key, QE report, QE signature, QE auth data,
 * PCK chain), truncations (every 97th length and the region boundaries) and extensions (zero and
 * non-zero bytes appended).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/tdx.h"
#include "test.h"

#define MAX_CASES 2000

struct verdict {
    char name[64];
    int rc;
};

static struct verdict g_got[MAX_CASES];
static size_t g_n;

static void record(const char *quote, const char *what, size_t arg, int rc)
{
    if (g_n >= MAX_CASES) {
        fprintf(stderr, "too many cases\n");
        exit(2);
    }
    snprintf(g_got[g_n].name, sizeof(g_got[g_n].name), "%s:%s:%zu", quote, what, arg);
    g_got[g_n].rc = rc;
    g_n++;
}

static int verify(const struct kms_attest_ctx *ctx, const uint8_t *q, size_t len)
{
    struct kms_verified v;
    int rc = kms_tdx_quote_verify(ctx, q, len, &v);

    if (rc == 0)
        kms_verified_free(&v);
    return rc;
}

static void mutate(const char *tag, const char *fixture, time_t t)
{
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    X509 *root = kms_attest_intel_root();
    size_t len;
    uint8_t *q = kms_test_load_fixture(fixture, &len);
    uint8_t *c = malloc(len + 256);
    struct kms_tdx_quote pq;
    size_t used;
    size_t cuts[16];
    size_t n_cuts = 0;

    if (ctx == NULL || root == NULL || c == NULL ||
        kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, root, 0) < 0)
        exit(2);
    X509_free(root);
    kms_attest_ctx_set_time(ctx, t);
    CHECK_OK(kms_tdx_quote_parse(q, len, &pq));
    used = (size_t)(pq.pck_chain - q) + pq.pck_chain_len;
    record(tag, "original", 0, verify(ctx, q, len));

    for (size_t off = 0; off < used; off += off < 64 ? 1 : 37) {
        static const uint8_t masks[2] = {0x01, 0x80};

        for (int m = 0; m < 2; m++) {
            memcpy(c, q, len);
            c[off] ^= masks[m];
            record(tag, m == 0 ? "xor01" : "xor80", off, verify(ctx, c, len));
        }
    }
    for (size_t n = 0; n < used; n += 97)
        record(tag, "truncate", n, verify(ctx, q, n));
    cuts[n_cuts++] = pq.signed_len;
    cuts[n_cuts++] = pq.signed_len + 4;
    cuts[n_cuts++] = (size_t)(pq.qe_report - q);
    cuts[n_cuts++] = (size_t)(pq.qe_auth - q);
    cuts[n_cuts++] = (size_t)(pq.pck_chain - q);
    cuts[n_cuts++] = used - 1;
    cuts[n_cuts++] = used;
    for (size_t i = 0; i < n_cuts; i++)
        record(tag, "truncate", cuts[i], verify(ctx, q, cuts[i]));
    for (size_t n = 1; n <= 256; n *= 4) {
        memcpy(c, q, len);
        memset(c + len, 0, n);
        record(tag, "extend-zero", n, verify(ctx, c, len + n));
        memset(c + len, 0xa5, n);
        record(tag, "extend-a5", n, verify(ctx, c, len + n));
    }
    free(c);
    free(q);
    kms_attest_ctx_free(ctx);
}

int main(void)
{
    const char *regen = getenv("KMS_DIFF_REGEN");
    size_t len;
    uint8_t *want;
    char *line;
    char *save = NULL;
    size_t i = 0;
    size_t changed = 0;

    mutate("v4", "tdx/quote-v4.bin", (time_t)1780272000);          /* 2026-06-01 */
    mutate("v5", "tdx/dcap-qvl-quote-v5.bin", (time_t)1771419600); /* 2026-02-18 13:00 */
    if (regen != NULL) {
        FILE *f = fopen(regen, "w");

        if (f == NULL)
            return 2;
        fprintf(f, "# verdicts of tests/attest/test_tdx_diff.c (case rc); regenerate with\n"
                   "# KMS_DIFF_REGEN=tests/fixtures/tdx/diff-verdicts.txt "
                   "build/tests/attest/test_tdx_diff\n");
        for (size_t k = 0; k < g_n; k++)
            fprintf(f, "%s %d\n", g_got[k].name, g_got[k].rc);
        fclose(f);
        printf("wrote %zu verdicts to %s\n", g_n, regen);
        return 0;
    }
    want = kms_test_load_fixture("tdx/diff-verdicts.txt", &len);
    want = realloc(want, len + 1);
    if (want == NULL)
        return 2;
    want[len] = '\0';
    for (line = strtok_r((char *)want, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char name[64];
        int rc;

        if (line[0] == '#')
            continue;
        if (sscanf(line, "%63s %d", name, &rc) != 2 || i >= g_n ||
            strcmp(name, g_got[i].name) != 0) {
            fprintf(stderr, "  verdict file line \"%s\" does not match case %zu (%s)\n", line, i,
                    i < g_n ? g_got[i].name : "none");
            CHECK(0);
            break;
        }
        if (rc != g_got[i].rc) {
            fprintf(stderr, "  %s: verdict %d, recorded %d\n", name, g_got[i].rc, rc);
            changed++;
        }
        i++;
    }
    CHECK(i == g_n);
    CHECK(changed == 0);
    CHECK(g_n > 300);
    printf("%zu mutated quotes, %zu verdict changes\n", g_n, changed);
    free(want);
    TEST_MAIN_END();
}
