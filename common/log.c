#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum kms_log_level log_level = KMS_LOG_INFO;
static char log_tag[64];
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

/* Test hooks (kms_log_test_hooks). */
static uint64_t (*log_clock)(void);
static unsigned limit_burst = KMS_LOG_LIMIT_BURST;
static unsigned limit_window_ms = KMS_LOG_LIMIT_WINDOW_MS;
static void (*log_sink)(void *arg, const char *line);
static void *log_sink_arg;

/* One rate-limited key: lines shown and suppressed in the window that began at start_ms. */
struct limit_slot {
    int used;
    enum kms_log_level lvl;
    char key[KMS_LOG_LIMIT_KEY_MAX + 1];
    uint64_t start_ms;
    unsigned shown;
    unsigned long suppressed;
};

static struct limit_slot limit_slots[KMS_LOG_LIMIT_KEYS];

void kms_log_set_level(enum kms_log_level lvl)
{
    log_level = lvl;
}

int kms_log_parse_level(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error"};

    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0)
            return i;
    }
    return -1;
}

void kms_log_set_tag(const char *tag)
{
    snprintf(log_tag, sizeof(log_tag), "%s", tag != NULL ? tag : "");
}

void kms_log_test_hooks(uint64_t (*now_ms)(void), unsigned burst, unsigned window_ms,
                        void (*sink)(void *arg, const char *line), void *sink_arg)
{
    pthread_mutex_lock(&log_lock);
    log_clock = now_ms;
    limit_burst = burst != 0 ? burst : KMS_LOG_LIMIT_BURST;
    limit_window_ms = window_ms != 0 ? window_ms : KMS_LOG_LIMIT_WINDOW_MS;
    log_sink = sink;
    log_sink_arg = sink_arg;
    memset(limit_slots, 0, sizeof(limit_slots));
    pthread_mutex_unlock(&log_lock);
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    if (log_clock != NULL)
        return log_clock();
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Writes one line; log_lock held. */
static void vemit(enum kms_log_level lvl, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void vemit(enum kms_log_level lvl, const char *fmt, va_list ap)
{
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char ts[32];
    struct timespec now;
    struct tm tm;

    if (log_sink != NULL) {
        char line[2048];

        vsnprintf(line, sizeof(line), fmt, ap);
        log_sink(log_sink_arg, line);
        return;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %-5s %s%s", ts, now.tv_nsec / 1000000, names[lvl], log_tag,
            log_tag[0] != '\0' ? " " : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

static void emit(enum kms_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void emit(enum kms_log_level lvl, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vemit(lvl, fmt, ap);
    va_end(ap);
}

void kms_log(enum kms_log_level lvl, const char *fmt, ...)
{
    va_list ap;

    if (lvl < log_level)
        return;
    pthread_mutex_lock(&log_lock);
    va_start(ap, fmt);
    vemit(lvl, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&log_lock);
}

/* The summary of a slot's window, if anything was suppressed; log_lock held. */
static void slot_summary(const struct limit_slot *s, uint64_t now)
{
    uint64_t secs = (now - s->start_ms + 999u) / 1000u;

    if (s->suppressed > 0)
        emit(s->lvl, "%s: ... %lu more in the last %llu s", s->key, s->suppressed,
             (unsigned long long)secs);
}

/* The slot of key: found, free, or the oldest one (summarised and reused); log_lock held. */
static struct limit_slot *slot_for(const char *key, enum kms_log_level lvl, uint64_t now)
{
    struct limit_slot *free_slot = NULL;
    struct limit_slot *oldest = NULL;

    for (size_t i = 0; i < KMS_LOG_LIMIT_KEYS; i++) {
        struct limit_slot *s = &limit_slots[i];

        if (!s->used) {
            if (free_slot == NULL)
                free_slot = s;
            continue;
        }
        if (strcmp(s->key, key) == 0)
            return s;
        if (oldest == NULL || s->start_ms < oldest->start_ms)
            oldest = s;
    }
    if (free_slot == NULL) {
        slot_summary(oldest, now);
        free_slot = oldest;
    }
    memset(free_slot, 0, sizeof(*free_slot));
    free_slot->used = 1;
    free_slot->lvl = lvl;
    free_slot->start_ms = now;
    snprintf(free_slot->key, sizeof(free_slot->key), "%s", key);
    return free_slot;
}

/* The key as stored: at most KMS_LOG_LIMIT_KEY_MAX bytes, line breaks (keys may be format
 * strings) turned into spaces, trailing spaces dropped, so a summary stays one line. */
static void key_norm(const char *key, char out[KMS_LOG_LIMIT_KEY_MAX + 1])
{
    size_t n = 0;

    for (; key != NULL && key[n] != '\0' && n < KMS_LOG_LIMIT_KEY_MAX; n++)
        out[n] = key[n] == '\n' || key[n] == '\r' ? ' ' : key[n];
    while (n > 0 && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
}

void kms_log_vlimited(enum kms_log_level lvl, const char *key, const char *fmt, va_list ap)
{
    char k[KMS_LOG_LIMIT_KEY_MAX + 1];
    struct limit_slot *s;
    uint64_t now;

    if (lvl < log_level)
        return;
    key_norm(key, k);
    pthread_mutex_lock(&log_lock);
    now = now_ms();
    s = slot_for(k, lvl, now);
    if (now - s->start_ms >= limit_window_ms) {
        slot_summary(s, now);
        s->start_ms = now;
        s->shown = 0;
        s->suppressed = 0;
    }
    if (s->shown < limit_burst) {
        s->shown++;
        vemit(lvl, fmt, ap);
    } else {
        s->suppressed++;
    }
    pthread_mutex_unlock(&log_lock);
}

void kms_log_limited(enum kms_log_level lvl, const char *key, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    kms_log_vlimited(lvl, key, fmt, ap);
    va_end(ap);
}

void kms_log_limited_flush(void)
{
    uint64_t now;

    pthread_mutex_lock(&log_lock);
    now = now_ms();
    for (size_t i = 0; i < KMS_LOG_LIMIT_KEYS; i++) {
        struct limit_slot *s = &limit_slots[i];

        if (s->used && now - s->start_ms >= limit_window_ms) {
            slot_summary(s, now);
            s->used = 0;
        }
    }
    pthread_mutex_unlock(&log_lock);
}
