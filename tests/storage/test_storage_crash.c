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
#include "test.h"

static char *tmpdir_new(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    char *d;

    snprintf(tmpl, sizeof(tmpl), "%s/kms-crash-XXXXXX", base != NULL ? base : "/tmp");
    d = mkdtemp(tmpl);
    if (d == NULL) {
        perror("mkdtemp");
        exit(2);
    }
    return strdup(d);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void tmpdir_free(char *d)
{
    nftw(d, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(d);
}

static char *gen_pem(void)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    long n;
    char *out;

    if (pk == NULL || b == NULL)
        exit(2);
    PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL);
    n = BIO_get_mem_data(b, &data);
    out = strndup(data, (size_t)n);
    BIO_free(b);
    EVP_PKEY_free(pk);
    return out;
}

static struct kms_identity g_id;

static int str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

static int identity_eq(const struct kms_identity *a, const struct kms_identity *b)
{
    return str_eq(a->root_ca_key_pem, b->root_ca_key_pem) &&
           str_eq(a->tmp_ca_key_pem, b->tmp_ca_key_pem) &&
           memcmp(a->root_k256, b->root_k256, 32) == 0 && str_eq(a->rpc_key_pem, b->rpc_key_pem) &&
           str_eq(a->domain, b->domain) && str_eq(a->bootstrap_info_json, b->bootstrap_info_json) &&
           str_eq(a->origin, b->origin);
}

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
        if (kms_store_load_identity(st, &got) == 0 && identity_eq(&got, &g_id))
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
        char *dir = tmpdir_new();
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
        tmpdir_free(dir);
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
    dir = tmpdir_new();
    t0 = now_s();
    pid = fork();
    if (pid == 0)
        child_save(dir, 0);
    waitpid(pid, NULL, 0);
    span = now_s() - t0;
    tmpdir_free(dir);
    seed = env != NULL ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
    srand(seed);
    printf("  timed: seed %u (KMS_TEST_SEED), child run %.1f ms\n", seed, span * 1000);

    for (int i = 0; i < rounds; i++) {
        useconds_t delay = (useconds_t)((double)rand() / RAND_MAX * span * 1.2e6);
        int status = 0;

        dir = tmpdir_new();
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
        tmpdir_free(dir);
    }
    printf("  timed: %d rounds, %d left no identity, %d left the full identity\n", rounds, none,
           full);
    CHECK(bad == 0);
    CHECK(none + full == rounds);
}

int main(void)
{
    kms_log_set_level(KMS_LOG_WARN);
    memset(&g_id, 0, sizeof(g_id));
    g_id.root_ca_key_pem = gen_pem();
    g_id.tmp_ca_key_pem = gen_pem();
    g_id.rpc_key_pem = gen_pem();
    RAND_bytes(g_id.root_k256, 32);
    g_id.root_k256[0] = 0x11;
    g_id.domain = strdup("crash.test");
    g_id.origin = strdup("bootstrap");
    g_id.bootstrap_info_json = strdup("{}");
    fflush(stdout);
    RUN(test_kill_sweep);
    fflush(stdout);
    RUN(test_kill_timed);
    kms_identity_clear(&g_id);
    TEST_MAIN_END();
}
