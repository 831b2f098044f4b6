/* common/log.c: the rate limiter of kms_log_limited, on an injected clock and a capturing sink,
 * so every window boundary is deterministic. */
#include "common/log.h"
#include "test.h"

static uint64_t g_now;
static char g_lines[128][256];
static size_t g_n;

static uint64_t fake_now(void)
{
    return g_now;
}

static void sink(void *arg, const char *line)
{
    (void)arg;
    if (g_n < 128)
        snprintf(g_lines[g_n], sizeof(g_lines[g_n]), "%s", line);
    g_n++;
}

static void reset(unsigned burst, unsigned window_ms)
{
    g_now = 1000000;
    g_n = 0;
    kms_log_test_hooks(fake_now, burst, window_ms, sink, NULL);
}

/* Proves: the first `burst` lines of a key are written, the rest counted; the next line after
 * the window first writes "<key>: ... N more in the last 10 s", then itself. */
static void test_burst_then_summary(void)
{
    reset(3, 10000);
    for (int i = 0; i < 1237; i++) {
        kms_log_limited(KMS_LOG_WARN, "tls-junk", "junk %d", i);
        g_now += 5; /* 1237 lines in 6.2 s: one window */
    }
    CHECK(g_n == 3);
    CHECK(strcmp(g_lines[0], "junk 0") == 0 && strcmp(g_lines[2], "junk 2") == 0);
    g_now = 1000000 + 9999;
    kms_log_limited(KMS_LOG_WARN, "tls-junk", "junk late");
    CHECK(g_n == 3); /* still inside the window */
    g_now = 1000000 + 10000;
    kms_log_limited(KMS_LOG_WARN, "tls-junk", "junk next");
    CHECK(g_n == 5);
    CHECK(strcmp(g_lines[3], "tls-junk: ... 1235 more in the last 10 s") == 0);
    CHECK(strcmp(g_lines[4], "junk next") == 0);
    /* a new window: burst again, no summary when nothing was suppressed */
    kms_log_limited(KMS_LOG_WARN, "tls-junk", "a");
    kms_log_limited(KMS_LOG_WARN, "tls-junk", "b");
    CHECK(g_n == 7);
    g_now += 20000;
    kms_log_limited(KMS_LOG_WARN, "tls-junk", "c");
    CHECK(g_n == 8 && strcmp(g_lines[7], "c") == 0);
}

/* Proves: keys are limited independently; flush reports a burst that stopped (and only once,
 * only after its window), and a key never suppressed gets no summary. */
static void test_keys_and_flush(void)
{
    reset(2, 10000);
    for (int i = 0; i < 10; i++) {
        kms_log_limited(KMS_LOG_WARN, "a", "a%d", i);
        kms_log_limited(KMS_LOG_WARN, "b", "b%d", i);
    }
    kms_log_limited(KMS_LOG_WARN, "c", "c0");
    CHECK(g_n == 5);
    g_now += 9000;
    kms_log_limited_flush();
    CHECK(g_n == 5); /* windows not over yet */
    g_now += 1000;
    kms_log_limited_flush();
    CHECK(g_n == 7);
    CHECK(strcmp(g_lines[5], "a: ... 8 more in the last 10 s") == 0);
    CHECK(strcmp(g_lines[6], "b: ... 8 more in the last 10 s") == 0);
    g_now += 60000;
    kms_log_limited_flush();
    CHECK(g_n == 7); /* nothing left to report */
    kms_log_limited(KMS_LOG_WARN, "a", "again");
    CHECK(g_n == 8 && strcmp(g_lines[7], "again") == 0);

    /* a format string as key: the summary stays one line */
    reset(1, 10000);
    kms_log_limited(KMS_LOG_WARN, "Error: out of context.\n", "x");
    kms_log_limited(KMS_LOG_WARN, "Error: out of context.\n", "x");
    g_now += 10000;
    kms_log_limited_flush();
    CHECK(g_n == 2 &&
          strcmp(g_lines[1], "Error: out of context.: ... 1 more in the last 10 s") == 0);
}

/* Proves: with every key slot taken, a new key reuses the oldest slot after summarising it;
 * lines below the log level are neither written nor counted. */
static void test_slot_reuse_and_level(void)
{
    char key[32];

    reset(1, 10000);
    kms_log_limited(KMS_LOG_WARN, "first", "f");
    kms_log_limited(KMS_LOG_WARN, "first", "f");
    for (int i = 1; i < KMS_LOG_LIMIT_KEYS; i++) {
        g_now++;
        snprintf(key, sizeof(key), "k%d", i);
        kms_log_limited(KMS_LOG_WARN, key, "%s", key);
    }
    CHECK(g_n == (size_t)KMS_LOG_LIMIT_KEYS);
    g_now++;
    kms_log_limited(KMS_LOG_WARN, "newcomer", "n");
    CHECK(g_n == (size_t)KMS_LOG_LIMIT_KEYS + 2);
    CHECK(strcmp(g_lines[KMS_LOG_LIMIT_KEYS], "first: ... 1 more in the last 1 s") == 0);
    CHECK(strcmp(g_lines[KMS_LOG_LIMIT_KEYS + 1], "n") == 0);

    reset(1, 10000);
    kms_log_set_level(KMS_LOG_WARN);
    for (int i = 0; i < 5; i++)
        kms_log_limited(KMS_LOG_INFO, "quiet", "q");
    g_now += 10000;
    kms_log_limited_flush();
    CHECK(g_n == 0);
    kms_log_set_level(KMS_LOG_INFO);
}

int main(void)
{
    RUN(test_burst_then_summary);
    RUN(test_keys_and_flush);
    RUN(test_slot_reuse_and_level);
    kms_log_test_hooks(NULL, 0, 0, NULL, NULL);
    TEST_MAIN_END();
}
