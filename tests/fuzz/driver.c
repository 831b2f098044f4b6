/*
 * Standalone driver for the fuzz harnesses when libFuzzer is not used (gcc, the default build):
 * runs LLVMFuzzerTestOneInput over every seed of a corpus and then over a fixed number of
 * deterministic mutations of those seeds, so each ctest run replays exactly the same inputs.
 *
 *   fuzz_x [--mutations N] [--seed S] [--time-budget SECONDS] DIR_OR_FILE...
 *
 * A directory contributes each regular file in it (sorted by name, so the order does not depend
 * on the file system); a file contributes itself. Mutations stack 1..4 edits on a seed picked
 * round-robin: bit flips, byte sets, "interesting" 16/32-bit values (lengths are what parsers
 * get wrong), truncation, insertion, deletion and duplication of a range. --time-budget stops the
 * mutation phase early (with a note) so a slow sanitizer build cannot turn into a timeout; the
 * seeds always run. A crash is a signal, a sanitizer report or abort(): the input that caused it
 * is then written to ./fuzz-crash-<target> so it can be replayed (`fuzz_x fuzz-crash-x`).
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SEED_MAX (4u << 20) /* larger seed files are skipped: keep the corpus small */
#define GROW_MAX 4096u      /* a mutation adds at most this many bytes */

struct seed {
    char *path;
    uint8_t *p;
    size_t len;
};

struct corpus {
    struct seed *s;
    size_t n;
};

static uint64_t rng_state;

/* xorshift64*: fixed, portable, good enough to pick offsets. */
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static size_t rng_below(size_t n)
{
    return n == 0 ? 0 : (size_t)(rng() % n);
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *p = NULL;
    long n;

    if (f == NULL)
        return -1;
    if (fseek(f, 0, SEEK_END) != 0)
        goto fail;
    n = ftell(f);
    if (n < 0 || (unsigned long)n > SEED_MAX || fseek(f, 0, SEEK_SET) != 0)
        goto fail;
    p = malloc((size_t)n + 1);
    if (p == NULL || fread(p, 1, (size_t)n, f) != (size_t)n)
        goto fail;
    fclose(f);
    *out = p;
    *len = (size_t)n;
    return 0;
fail:
    free(p);
    fclose(f);
    return -1;
}

static int add_seed(struct corpus *c, const char *path)
{
    struct seed *s = realloc(c->s, (c->n + 1) * sizeof(*s));

    if (s == NULL)
        return -1;
    c->s = s;
    s = &c->s[c->n];
    s->path = strdup(path);
    if (s->path == NULL || read_file(path, &s->p, &s->len) < 0) {
        fprintf(stderr, "fuzz driver: cannot read %s\n", path);
        free(s->path);
        return -1;
    }
    c->n++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_dir(struct corpus *c, const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0;
    int rc = 0;

    if (d == NULL) {
        fprintf(stderr, "fuzz driver: cannot open %s\n", dir);
        return -1;
    }
    for (;;) {
        char **nn;
        size_t sz;
        char *path;
        struct stat st;

        e = readdir(d);
        if (e == NULL)
            break;
        sz = strlen(dir) + strlen(e->d_name) + 2;
        if (e->d_name[0] == '.')
            continue;
        path = malloc(sz);
        if (path == NULL) {
            rc = -1;
            break;
        }
        snprintf(path, sz, "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(path);
            continue;
        }
        nn = realloc(names, (n + 1) * sizeof(*nn));
        if (nn == NULL) {
            free(path);
            rc = -1;
            break;
        }
        names = nn;
        names[n++] = path;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (rc == 0 && add_seed(c, names[i]) < 0)
            rc = -1;
        free(names[i]);
    }
    free(names);
    return rc;
}

static const uint32_t interesting[] = {
    0,       1,          2,          0x7f,       0x80,       0xff,       0x100,
    0x3f,    0x40,       0x3fff,     0x4000,     0x7fff,     0x8000,     0xffff,
    0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 0x3fffffff, 0x40000000,
};

/* One edit of buf (len in/out, capacity cap). */
static void mutate_once(uint8_t *buf, size_t *len, size_t cap)
{
    size_t n = *len;
    size_t off = rng_below(n);
    uint32_t v;

    switch (rng_below(n == 0 ? 1 : 9)) {
    case 0: { /* insert 1..16 random bytes (the only edit that works on an empty input) */
        size_t k = 1 + rng_below(16);

        if (cap - n < k)
            break;
        off = rng_below(n + 1);
        memmove(buf + off + k, buf + off, n - off);
        for (size_t i = 0; i < k; i++)
            buf[off + i] = (uint8_t)rng();
        *len = n + k;
        break;
    }
    case 1:
        buf[off] ^= (uint8_t)(1u << rng_below(8));
        break;
    case 2:
        buf[off] = (uint8_t)rng();
        break;
    case 3:
        buf[off] = (uint8_t)interesting[rng_below(7)];
        break;
    case 4: /* interesting 16/32-bit value, either byte order */
        v = interesting[rng_below(sizeof(interesting) / sizeof(interesting[0]))];
        if (rng() & 1)
            v = __builtin_bswap32(v);
        if (n - off >= 4 && (rng() & 1)) {
            memcpy(buf + off, &v, 4);
        } else if (n - off >= 2) {
            uint16_t h = (uint16_t)v;

            memcpy(buf + off, &h, 2);
        }
        break;
    case 5: /* truncate */
        *len = off;
        break;
    case 6: { /* delete a range */
        size_t k = 1 + rng_below(n - off < 64 ? n - off : 64);

        if (off >= n || k > n - off)
            break;
        memmove(buf + off, buf + off + k, n - off - k);
        *len = n - k;
        break;
    }
    case 7: { /* duplicate a range to another position */
        size_t k = 1 + rng_below(n - off < 256 ? n - off : 256);
        size_t to = rng_below(n + 1);

        size_t tail;

        if (n > cap || cap - n < k || to > n || off >= n || k > n - off)
            break;
        tail = n - to;
        if (tail > cap - k - to)
            break;
        memmove(buf + to + k, buf + to, tail);
        /* the source may have moved if it sat after the insertion point */
        memmove(buf + to, buf + (off >= to ? off + k : off), k);
        *len = n + k;
        break;
    }
    default: /* small arithmetic on a byte (length off by a few) */
        buf[off] = (uint8_t)(buf[off] + (int)rng_below(9) - 4);
        break;
    }
}

/* The input being run, for the crash handlers (set before each run). */
static const uint8_t *cur_p;
static size_t cur_len;
static char crash_path[256];

/* Async-signal-safe: leaves the current input in crash_path. */
static void save_crash_input(void)
{
    int fd = open(crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    size_t off = 0;

    if (fd < 0)
        return;
    while (off < cur_len) {
        ssize_t w = write(fd, cur_p + off, cur_len - off);

        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(fd);
    (void)!write(2, "fuzz driver: crashing input saved to ", 37);
    (void)!write(2, crash_path, strlen(crash_path));
    (void)!write(2, "\n", 1);
}

static void on_signal(int sig)
{
    save_crash_input();
    raise(sig); /* SA_RESETHAND: default action now */
}

/* Sanitizers that exit without a signal (no abort_on_error) call this instead. */
extern void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

static void install_crash_handlers(const char *target)
{
    static const int sigs[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    struct sigaction sa;

    snprintf(crash_path, sizeof(crash_path), "fuzz-crash-%s", target);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = (int)SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
    if (__sanitizer_set_death_callback != NULL)
        __sanitizer_set_death_callback(save_crash_input);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(const char *prog)
{
    fprintf(stderr, "usage: %s [--mutations N] [--seed S] [--time-budget SECONDS] DIR_OR_FILE...\n",
            prog);
}

int main(int argc, char **argv)
{
    struct corpus c = {0};
    unsigned long mutations = 2000;
    unsigned long long seed = 0x6b6d7366757a7a31ull; /* "kmsfuzz1" */
    double budget = 0;
    const char *target = strrchr(argv[0], '/') != NULL ? strrchr(argv[0], '/') + 1 : argv[0];
    uint8_t *buf = NULL;
    double t0 = now_s();
    unsigned long done = 0;
    int stopped = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mutations") == 0 && i + 1 < argc) {
            mutations = strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 0);
        } else if (strcmp(argv[i], "--time-budget") == 0 && i + 1 < argc) {
            budget = strtod(argv[++i], NULL);
        } else if (argv[i][0] == '-') {
            usage(argv[0]);
            return 2;
        } else {
            struct stat st;

            if (stat(argv[i], &st) != 0) {
                fprintf(stderr, "fuzz driver: %s does not exist\n", argv[i]);
                return 2;
            }
            if ((S_ISDIR(st.st_mode) ? add_dir(&c, argv[i]) : add_seed(&c, argv[i])) < 0)
                return 2;
        }
    }
    if (c.n == 0) {
        fprintf(stderr, "fuzz driver: no seeds (give a corpus directory or files)\n");
        usage(argv[0]);
        return 2;
    }

    install_crash_handlers(target);
    /* Seeds first, each from its own heap copy so ASan sees the exact bounds. */
    for (size_t i = 0; i < c.n; i++) {
        uint8_t *copy = malloc(c.s[i].len > 0 ? c.s[i].len : 1);

        if (copy == NULL)
            return 2;
        memcpy(copy, c.s[i].p, c.s[i].len);
        fprintf(stderr, "seed %s (%zu bytes)\n", c.s[i].path, c.s[i].len);
        cur_p = copy;
        cur_len = c.s[i].len;
        LLVMFuzzerTestOneInput(copy, c.s[i].len);
        free(copy);
    }

    rng_state = seed != 0 ? seed : 1;
    for (unsigned long m = 0; m < mutations; m++) {
        const struct seed *s = &c.s[m % c.n];
        size_t cap = s->len + 4 * GROW_MAX;
        size_t len = s->len;
        unsigned edits = 1 + (unsigned)rng_below(4);
        uint8_t *exact;

        if (budget > 0 && now_s() - t0 > budget) {
            stopped = 1;
            break;
        }
        buf = malloc(cap);
        if (buf == NULL)
            return 2;
        memcpy(buf, s->p, s->len);
        for (unsigned e = 0; e < edits; e++)
            mutate_once(buf, &len, cap);
        /* run on an exact-size copy so a one-byte over-read is caught */
        exact = malloc(len > 0 ? len : 1);
        if (exact == NULL)
            return 2;
        memcpy(exact, buf, len);
        free(buf);
        cur_p = exact;
        cur_len = len;
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
        done++;
    }
    if (stopped)
        fprintf(stderr, "note: time budget of %.0f s reached after %lu of %lu mutations\n", budget,
                done, mutations);
    printf("%s: %zu seeds + %lu mutations in %.1f s, no crash\n", target, c.n, done, now_s() - t0);
    for (size_t i = 0; i < c.n; i++) {
        free(c.s[i].path);
        free(c.s[i].p);
    }
    free(c.s);
    return 0;
}
