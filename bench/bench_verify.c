/*
 * Verification cost of repeated TDX evidence from one platform, with and without the
 * verification caches (attest.h: kms_collateral_source). Each round verifies the same set of
 * distinct simulated attestations (fresh quotes, one PCK chain, one collateral set) through
 * kms_attest_verify:
 *   - uncached: collateral source with no_cache (every call verifies the PCK chain, the TCB
 *     signing chains, both collateral signatures, both CRLs and parses the JSON);
 *   - cached:   default source (verified collateral and PCK chain reused);
 *   - baseline: no collateral at all (quote signatures and PCK chain only), for reference.
 * Prints per-verification time of each and the ratio cached/uncached measured in this run.
 *
 * Usage: bench_verify [iterations (default 2000)] [cached]  ("cached": that mode only, to profile)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attest/attest.h"
#include "attest/collateral.h"
#include "attest/sim.h"

#define N_ATT 16

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_verify: %s: %s\n", what, kms_err_detail());
    exit(1);
}

/* Seconds per verification over iters calls (after one warm-up pass). */
static double run(struct kms_attest_ctx *ctx, struct kms_attestation **att, long iters,
                  const char *want_status)
{
    struct kms_verified v;
    double t;

    for (int i = 0; i < N_ATT; i++) {
        if (kms_attest_verify(ctx, att[i], &v) < 0)
            die("warm-up verification");
        kms_verified_free(&v);
    }
    t = now_s();
    for (long i = 0; i < iters; i++) {
        if (kms_attest_verify(ctx, att[i % N_ATT], &v) < 0)
            die("verification");
        if (strcmp(v.tcb_status, want_status) != 0)
            die("unexpected tcb_status");
        kms_verified_free(&v);
    }
    return (now_s() - t) / (double)iters;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? strtol(argv[1], NULL, 10) : 2000;
    char dir[] = "/tmp/kms-bench-XXXXXX";
    struct kms_sim *sim = NULL;
    struct kms_attestation *att[N_ATT];
    struct kms_collateral coll;
    struct kms_sim_collateral_opts co = {0};
    struct kms_collateral_source_opts uo = {.no_cache = 1};
    struct kms_collateral_source *unc = NULL;
    struct kms_collateral_source *cac = NULL;
    struct kms_attest_ctx *ctx;
    struct kms_collateral_stats st;
    double t_base;
    double t_unc;
    double t_cac;
    char cmd[64];

    if (iters < 1)
        iters = 1;
    if (mkdtemp(dir) == NULL || kms_sim_open(dir, &sim) < 0)
        die("simulation directory");
    for (int i = 0; i < N_ATT; i++) {
        uint8_t rd[64];

        memset(rd, i, sizeof(rd));
        if (kms_sim_attest(sim, NULL, rd, NULL, 0, "", &att[i]) < 0)
            die("kms_sim_attest");
    }
    if (kms_sim_collateral(dir, &co, &coll) < 0)
        die("kms_sim_collateral");
    if (kms_collateral_source_new(&uo, &unc) < 0 || kms_collateral_source_add(unc, &coll) < 0 ||
        kms_collateral_source_new(NULL, &cac) < 0 || kms_collateral_source_add(cac, &coll) < 0)
        die("collateral source");
    ctx = kms_attest_ctx_new();
    if (ctx == NULL || kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, kms_sim_root(sim), 1) < 0)
        die("ctx");

    t_base = t_unc = 0;
    if (argc <= 2 || strcmp(argv[2], "cached") != 0) {
        kms_attest_ctx_set_collateral_source(ctx, NULL);
        t_base = run(ctx, att, iters, "");
        kms_attest_ctx_set_collateral_source(ctx, unc);
        t_unc = run(ctx, att, iters, "UpToDate");
    }
    kms_attest_ctx_set_collateral_source(ctx, cac);
    t_cac = run(ctx, att, iters, "UpToDate");
    kms_collateral_source_stats(cac, &st);

    printf("bench_verify: %ld verifications each, %d distinct simulated TDX attestations\n", iters,
           N_ATT);
    printf("  no collateral (quote + PCK chain only): %8.1f us/verify\n", t_base * 1e6);
    printf("  collateral, uncached:                   %8.1f us/verify\n", t_unc * 1e6);
    printf("  collateral, cached:                     %8.1f us/verify\n", t_cac * 1e6);
    printf("  ratio cached/uncached: %.3f (speed-up %.1fx)\n", t_cac / t_unc, t_unc / t_cac);
    printf("  cache: collateral hits %lu misses %lu, chain hits %lu misses %lu\n", st.coll_hits,
           st.coll_misses, st.chain_hits, st.chain_misses);

    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(unc);
    kms_collateral_source_free(cac);
    kms_collateral_clear(&coll);
    for (int i = 0; i < N_ATT; i++)
        kms_att_free(att[i]);
    kms_sim_free(sim);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return 0;
}
