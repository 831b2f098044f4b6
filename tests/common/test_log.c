/* common/log.c: the rate limiter of kms_log_limited, on an injected clock and a capturing sink,
 * so every window boundary is deterministic; the JSON and text line formats, fields and request
 * ids, on a sink that receives whole lines (each JSON line parsed by jansson). */
#include <jansson.h>
#include <pthread.h>

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

/* ---- whole lines ---- */

static char g_full[8][KMS_LOG_LINE_MAX + 1];
static size_t g_nfull;

static void line_sink(void *arg, const char *line)
{
    (void)arg;
    if (g_nfull < 8)
        snprintf(g_full[g_nfull], sizeof(g_full[g_nfull]), "%s", line);
    g_nfull++;
}

static void reset_full(enum kms_log_format f)
{
    reset(0, 0);
    g_nfull = 0;
    kms_log_set_format(f);
    kms_log_test_line_sink(line_sink, NULL);
}

/* The last line, parsed; NULL (and a failure) when it is not one JSON object. */
static json_t *last_json(void)
{
    json_error_t e;
    json_t *o;

    if (g_nfull == 0 || g_nfull > 8)
        return NULL;
    o = json_loads(g_full[g_nfull - 1], 0, &e);
    if (o == NULL || !json_is_object(o)) {
        fprintf(stderr, "  not JSON (%s): %s\n", e.text, g_full[g_nfull - 1]);
        json_decref(o);
        return NULL;
    }
    return o;
}

static const char *member(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Proves: a JSON line is one object with ts, level, node, request_id, msg and the fields, all
 * strings; quotes, backslashes, control characters and UTF-8 survive escaping; bytes that are
 * not UTF-8 (a lone continuation byte, an overlong form, a surrogate, a cut sequence) become
 * U+FFFD instead of breaking the line; a NULL field value is left out. */
static void test_json_line(void)
{
    const char *kv[] = {"app_id", "0a0b", "skip", NULL, "reason", "say \"no\"\n\tnow", NULL};
    json_t *o;

    reset_full(KMS_LOG_FORMAT_JSON);
    kms_log_set_tag("node-1");
    kms_log_set_request_id("req-42");
    kms_log_fields(KMS_LOG_INFO, kv,
                   "a \"q\" \\ b\x01 caf\xc3\xa9 \x80 \xc0\xaf \xed\xa0\x80 \xe2\x82");
    CHECK(g_nfull == 1);
    CHECK(strchr(g_full[0], '\n') == NULL);
    o = last_json();
    CHECK(o != NULL);
    CHECK(json_object_size(o) == 7);
    CHECK(member(o, "ts") != NULL && strlen(member(o, "ts")) == 24 && member(o, "ts")[23] == 'Z');
    CHECK(member(o, "level") != NULL && strcmp(member(o, "level"), "info") == 0);
    CHECK(member(o, "node") != NULL && strcmp(member(o, "node"), "node-1") == 0);
    CHECK(member(o, "request_id") != NULL && strcmp(member(o, "request_id"), "req-42") == 0);
    CHECK(member(o, "msg") != NULL &&
          strcmp(member(o, "msg"), "a \"q\" \\ b\x01 caf\xc3\xa9 \xef\xbf\xbd "
                                   "\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
                                   "\xef\xbf\xbd\xef\xbf\xbd") == 0);
    CHECK(member(o, "app_id") != NULL && strcmp(member(o, "app_id"), "0a0b") == 0);
    CHECK(json_object_get(o, "skip") == NULL);
    CHECK(member(o, "reason") != NULL && strcmp(member(o, "reason"), "say \"no\"\n\tnow") == 0);
    json_decref(o);

    /* no tag, no request id: those members are absent */
    reset_full(KMS_LOG_FORMAT_JSON);
    kms_log_set_tag(NULL);
    kms_log_set_request_id(NULL);
    KMS_WARN("plain");
    o = last_json();
    CHECK(o != NULL && json_object_size(o) == 3);
    CHECK(o != NULL && strcmp(member(o, "level"), "warn") == 0);
    CHECK(o != NULL && strcmp(member(o, "msg"), "plain") == 0);
    json_decref(o);
    CHECK(kms_log_request_id()[0] == '\0');
}

/* Proves: a message longer than a line is cut and the line still parses, ends with the fields
 * that fit, and stays within KMS_LOG_LINE_MAX; also when the cut falls inside escapes. */
static void test_json_long(void)
{
    static char big[3 * KMS_LOG_LINE_MAX];
    const char *kv[] = {"k", "v", NULL};
    json_t *o;

    memset(big, '"', sizeof(big) - 1); /* every byte escapes to two */
    reset_full(KMS_LOG_FORMAT_JSON);
    kms_log_fields(KMS_LOG_ERROR, kv, "%s", big);
    CHECK(g_nfull == 1 && strlen(g_full[0]) <= KMS_LOG_LINE_MAX);
    o = last_json();
    CHECK(o != NULL);
    CHECK(o != NULL && member(o, "msg") != NULL && strlen(member(o, "msg")) > 1000);
    json_decref(o);
    memset(big, 0x01, sizeof(big) - 1); /* every byte escapes to six */
    kms_log_fields(KMS_LOG_ERROR, kv, "%s", big);
    o = last_json();
    CHECK(o != NULL && strlen(g_full[1]) <= KMS_LOG_LINE_MAX);
    json_decref(o);
}

/* Proves: the text format is "<time> <LEVEL> <tag> req=<id> <msg> k=v", a value with spaces or
 * quotes in double quotes; request ids keep only [A-Za-z0-9._-] and at most 64 bytes. */
static void test_text_line(void)
{
    const char *kv[] = {"app_id", "0a0b", "reason", "Boot denied: \"x\"", "empty", "", NULL};
    char want_id[KMS_LOG_REQUEST_ID_MAX + 1];
    const char *p;

    reset_full(KMS_LOG_FORMAT_TEXT);
    kms_log_set_tag("n1");
    kms_log_set_request_id("ab c\n\"d");
    kms_log_fields(KMS_LOG_INFO, kv, "GetAppKey: refused");
    CHECK(g_nfull == 1);
    p = strstr(g_full[0], "Z INFO  n1 req=abcd GetAppKey: refused app_id=0a0b "
                          "reason=\"Boot denied: \\\"x\\\"\" empty=\"\"");
    CHECK(p != NULL && p - g_full[0] == 23);
    memset(want_id, 'x', KMS_LOG_REQUEST_ID_MAX);
    want_id[KMS_LOG_REQUEST_ID_MAX] = '\0';
    {
        char longer[KMS_LOG_REQUEST_ID_MAX + 10];

        memset(longer, 'x', sizeof(longer) - 1);
        longer[sizeof(longer) - 1] = '\0';
        kms_log_set_request_id(longer);
    }
    CHECK(strcmp(kms_log_request_id(), want_id) == 0);
    kms_log_set_request_id(NULL);
    kms_log_set_tag(NULL);
}

static void *other_thread(void *arg)
{
    (void)arg;
    KMS_INFO("from another thread");
    return NULL;
}

/* Proves: the request id belongs to the thread that set it; the rate limiter keeps working in
 * JSON (a suppressed line is not written; the summary is a JSON line too). */
static void test_thread_and_limited(void)
{
    const char *kv[] = {"class", "policy", NULL};
    pthread_t t;
    json_t *o;

    reset_full(KMS_LOG_FORMAT_JSON);
    kms_log_set_request_id("mine");
    CHECK(pthread_create(&t, NULL, other_thread, NULL) == 0);
    pthread_join(t, NULL);
    o = last_json();
    CHECK(o != NULL && json_object_get(o, "request_id") == NULL);
    json_decref(o);
    kms_log_set_request_id(NULL);

    reset_full(KMS_LOG_FORMAT_JSON);
    kms_log_test_hooks(fake_now, 1, 10000, NULL, NULL);
    kms_log_test_line_sink(line_sink, NULL);
    kms_log_limited_fields(KMS_LOG_INFO, "refused", kv, "GetAppKey: refused");
    kms_log_limited_fields(KMS_LOG_INFO, "refused", kv, "GetAppKey: refused");
    CHECK(g_nfull == 1);
    o = last_json();
    CHECK(o != NULL && strcmp(member(o, "class"), "policy") == 0);
    json_decref(o);
    g_now += 10000;
    kms_log_limited_flush();
    CHECK(g_nfull == 2);
    o = last_json();
    CHECK(o != NULL && strcmp(member(o, "msg"), "refused: ... 1 more in the last 10 s") == 0);
    json_decref(o);
    kms_log_test_line_sink(NULL, NULL);
    kms_log_set_format(KMS_LOG_FORMAT_TEXT);
}

/* Proves: --log-format accepts exactly text and json. */
static void test_parse_format(void)
{
    CHECK(kms_log_parse_format("text") == KMS_LOG_FORMAT_TEXT);
    CHECK(kms_log_parse_format("json") == KMS_LOG_FORMAT_JSON);
    CHECK(kms_log_parse_format("JSON") == -1);
    CHECK(kms_log_parse_format("") == -1);
}

int main(void)
{
    RUN(test_burst_then_summary);
    RUN(test_keys_and_flush);
    RUN(test_slot_reuse_and_level);
    RUN(test_json_line);
    RUN(test_json_long);
    RUN(test_text_line);
    RUN(test_thread_and_limited);
    RUN(test_parse_format);
    kms_log_test_line_sink(NULL, NULL);
    kms_log_test_hooks(NULL, 0, 0, NULL, NULL);
    TEST_MAIN_END();
}
