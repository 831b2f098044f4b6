/*
 * Crash safety of kms_store_save_identity (DESIGN.md §3: a kill at any point leaves either no
 * keys or complete keys). A child process saves an identity and is SIGKILLed part-way; the
 * parent then reopens the store and requires: no identity, or exactly the saved one.
 *  - sweep: the child kills itself from a SQLite progress handler after k VM steps inside
 *    save_identity, for every k until the save completes (deterministic, every step boundary);
 *  - timed: the parent kills the child after a random delay covering open + save (this also
 *    lands inside system calls: KEK creation, WAL writes, fsync).
 */
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "common/log.h"
#include "storage/storage.h"
#include "storage_testutil.h"
#include "test.h"

static struct kms_identity g_id;

/* ---- child side: progress-handler kill ---- */

static volatile int g_armed;
static long g_steps;
static long g_kill_at;

static int progress_cb(void *arg)
{
    (void)arg;
    if (g_armed && ++g_steps >= g_kill_at)
        raise(SIGKILL);
    return 0;
}

/* Installed on every connection the child opens (the store's own included). */
static int auto_ext(sqlite3 *db, const char **err, const void *api)
{
    (void)err;
    (void)api;
    sqlite3_progress_handler(db, 1, progress_cb, NULL);
    return SQLITE_OK;
}

/* Child: open, arm, save. Exit 0 when the save completed (not killed), 3 on error. */
static void child_save(const char *dir, long kill_at)
{
    struct kms_store *st = NULL;

    if (kill_at > 0) {
        g_kill_at = kill_at;
        sqlite3_auto_extension((void (*)(void))auto_ext);
    }
    if (kms_store_open(dir, NULL, &st) != 0)
        _exit(3);
    g_armed = 1;
    if (kms_store_save_identity(st, &g_id) != 0)
        _exit(3);
    g_armed = 0;
    kms_store_close(st);
    _exit(0);
}

/* ---- parent side ---- */

/* After a crash: the store must open, and hold no identity or exactly g_id. With none, a new
 * save must succeed (no half state blocks it). Returns 1 if an identity was found, 0 if not,
 * -1 on a violation. */
static int check_after_crash(const char *dir)
{
    struct kms_store *st = NULL;
    struct kms_identity got = {0};
    int has;
    int ret = -1;

    if (kms_store_open(dir, NULL, &st) != 0) {
        fprintf(stderr, "  reopen after kill failed: %s\n", kms_err_detail());
        return -1;
    }
    has = kms_store_has_identity(st);
    if (has == 1) {
        if (kms_store_load_identity(st, &got) == 0 && st_identity_eq(&got, &g_id))
            ret = 1;
        else
            fprintf(stderr, "  identity present but not complete/equal: %s\n", kms_err_detail());
    } else if (has == 0) {
        if (kms_store_load_identity(st, &got) == KMS_ERR_STORE_MISSING &&
            kms_store_save_identity(st, &g_id) == 0)
            ret = 0;
        else
            fprintf(stderr, "  no identity, but store unusable: %s\n", kms_err_detail());
    }
    kms_identity_clear(&got);
    kms_store_close(st);
    return ret;
}

/* Proves: killing the process at every SQLite step boundary inside save_identity leaves no
 * identity or the complete identity; both outcomes occur (kills land before and after the
 * commit point). */
static void test_kill_sweep(void)
{
    int none = 0, full = 0, bad = 0, completed = 0;
    long k;

    for (k = 1; k < 100000 && !completed; k++) {
        char *dir = st_tmpdir_new("crash");
        pid_t pid = fork();
        int status = 0;

        if (pid == 0)
            child_save(dir, k);
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            completed = 1; /* k exceeded the steps save_identity takes */
        } else if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
            fprintf(stderr, "  child at k=%ld ended unexpectedly (status %d)\n", k, status);
            bad++;
        }
        switch (check_after_crash(dir)) {
        case 0:
            none++;
            break;
        case 1:
            full += !completed; /* count only killed runs */
            break;
        default:
            fprintf(stderr, "  violation after kill at step %ld\n", k);
            bad++;
        }
        st_tmpdir_free(dir);
    }
    printf("  sweep: %ld kill points, %d left no identity, %d left the full identity\n", k - 2,
           none, full);
    CHECK(completed);
    CHECK(bad == 0);
    CHECK(none > 0);
    CHECK(full > 0);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Proves: SIGKILL at a random time during open + save_identity (including inside file writes
 * and fsync) never leaves a half identity or an unopenable store. */
static void test_kill_timed(void)
{
    const int rounds = 150;
    int none = 0, full = 0, bad = 0;
    double t0, span;
    char *dir;
    pid_t pid;
    unsigned seed;
    const char *env = getenv("KMS_TEST_SEED");

    /* calibrate: how long an uninterrupted child takes */
    dir = st_tmpdir_new("crash");
    t0 = now_s();
    pid = fork();
    if (pid == 0)
        child_save(dir, 0);
    waitpid(pid, NULL, 0);
    span = now_s() - t0;
    st_tmpdir_free(dir);
    seed = env != NULL ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
    srand(seed);
    printf("  timed: seed %u (KMS_TEST_SEED), child run %.1f ms\n", seed, span * 1000);

    for (int i = 0; i < rounds; i++) {
        useconds_t delay = (useconds_t)((double)rand() / RAND_MAX * span * 1.2e6);
        int status = 0;

        dir = st_tmpdir_new("crash");
        pid = fork();
        if (pid == 0)
            child_save(dir, 0);
        usleep(delay);
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        switch (check_after_crash(dir)) {
        case 0:
            none++;
            break;
        case 1:
            full++;
            break;
        default:
            fprintf(stderr, "  violation after kill at %u us\n", (unsigned)delay);
            bad++;
        }
        st_tmpdir_free(dir);
    }
    printf("  timed: %d rounds, %d left no identity, %d left the full identity\n", rounds, none,
           full);
    CHECK(bad == 0);
    CHECK(none + full == rounds);
}

int main(void)
{
    kms_log_set_level(KMS_LOG_WARN);
    st_make_identity(&g_id, "crash.test", 1, "{}");
    fflush(stdout);
    RUN(test_kill_sweep);
    fflush(stdout);
    RUN(test_kill_timed);
    kms_identity_clear(&g_id);
    TEST_MAIN_END();
}
