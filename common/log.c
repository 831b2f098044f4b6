#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/utf8.h"

static enum kms_log_level log_level = KMS_LOG_INFO;
static enum kms_log_format log_format = KMS_LOG_FORMAT_TEXT;
static char log_tag[64];
static _Thread_local char tl_request_id[KMS_LOG_REQUEST_ID_MAX + 1];
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

/* Test hooks (kms_log_test_hooks). */
static uint64_t (*log_clock)(void);
static unsigned limit_burst = KMS_LOG_LIMIT_BURST;
static unsigned limit_window_ms = KMS_LOG_LIMIT_WINDOW_MS;
static void (*log_sink)(void *arg, const char *line);
static void *log_sink_arg;
static void (*log_line_sink)(void *arg, const char *line);
static void *log_line_sink_arg;

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

int kms_log_parse_format(const char *s)
{
    if (strcmp(s, "text") == 0)
        return KMS_LOG_FORMAT_TEXT;
    if (strcmp(s, "json") == 0)
        return KMS_LOG_FORMAT_JSON;
    return -1;
}

void kms_log_set_format(enum kms_log_format f)
{
    log_format = f;
}

void kms_log_set_request_id(const char *id)
{
    size_t n = 0;

    for (; id != NULL && *id != '\0' && n < KMS_LOG_REQUEST_ID_MAX; id++) {
        char c = *id;

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '.' || c == '_' || c == '-')
            tl_request_id[n++] = c;
    }
    tl_request_id[n] = '\0';
}

const char *kms_log_request_id(void)
{
    return tl_request_id;
}

void kms_log_test_line_sink(void (*sink)(void *arg, const char *line), void *sink_arg)
{
    pthread_mutex_lock(&log_lock);
    log_line_sink = sink;
    log_line_sink_arg = sink_arg;
    pthread_mutex_unlock(&log_lock);
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

/* ---- line building (log_lock held: the buffers are static) ---- */

/* A line under construction: never more than cap bytes; a part that does not fit is cut. */
struct line {
    char *p;
    size_t len;
    size_t cap;
};

static char line_buf[KMS_LOG_LINE_MAX + 1];
static char msg_buf[KMS_LOG_LINE_MAX];

/* Appends n bytes whole, or nothing (returns 0 then). */
static int put_raw(struct line *l, const char *s, size_t n)
{
    if (l->cap - l->len < n)
        return 0;
    memcpy(l->p + l->len, s, n);
    l->len += n;
    return 1;
}

static int put_str(struct line *l, const char *s)
{
    return put_raw(l, s, strlen(s));
}

/* Length of the strict UTF-8 sequence at s (2..4), or 0 when s does not start one. */
static size_t utf8_seq(const unsigned char *s)
{
    size_t n;

    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if (s[i] == '\0')
            return 0;
    }
    return kms_utf8_valid(s, n) ? n : 0;
}

/* Appends s as a JSON string; keeps room for the closing quote, so the result is always a
 * complete string (cut at a whole escape or character when the line is full). */
static void put_json_str(struct line *l, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t saved = l->cap;

    if (l->cap - l->len < 2)
        return; /* callers check the room first: never reached */
    put_raw(l, "\"", 1);
    l->cap--; /* the closing quote */
    while (*u != '\0') {
        char esc[8];
        size_t n = 1;
        int ok;

        if (*u == '"' || *u == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*u;
            ok = put_raw(l, esc, 2);
        } else if (*u == '\n') {
            ok = put_raw(l, "\\n", 2);
        } else if (*u == '\r') {
            ok = put_raw(l, "\\r", 2);
        } else if (*u == '\t') {
            ok = put_raw(l, "\\t", 2);
        } else if (*u < 0x20 || *u == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", *u);
            ok = put_raw(l, esc, 6);
        } else if (*u < 0x80) {
            ok = put_raw(l, (const char *)u, 1);
        } else {
            n = utf8_seq(u);
            if (n > 0) {
                ok = put_raw(l, (const char *)u, n);
            } else {
                n = 1;
                ok = put_raw(l, "\\ufffd", 6);
            }
        }
        if (!ok)
            break;
        u += n;
    }
    l->cap = saved;
    l->p[l->len++] = '"';
}

/* Appends ,"name":"value" (the comma only after the opening brace's first member); a member
 * whose name and empty value do not fit is left out. */
static void put_json_member(struct line *l, const char *name, const char *val)
{
    if (l->cap - l->len < strlen(name) + 6)
        return;
    if (l->len > 1)
        put_raw(l, ",", 1);
    put_json_str(l, name);
    put_raw(l, ":", 1);
    put_json_str(l, val);
}

/* Appends " name=value" for the text format; value in double quotes (with \" and \\) when it is
 * empty or holds a space, quote, backslash, '=' or a control character. */
static void put_text_field(struct line *l, const char *name, const char *val)
{
    int quote = val[0] == '\0';

    for (const char *c = val; *c != '\0' && !quote; c++)
        quote = *c == ' ' || *c == '"' || *c == '\\' || *c == '=' || (unsigned char)*c < 0x20;
    if (!put_raw(l, " ", 1) || !put_str(l, name) || !put_raw(l, "=", 1))
        return;
    if (!quote) {
        put_str(l, val);
        return;
    }
    put_raw(l, "\"", 1);
    for (const char *c = val; *c != '\0'; c++) {
        char ch = (unsigned char)*c < 0x20 ? ' ' : *c;

        if ((ch == '"' || ch == '\\') && !put_raw(l, "\\", 1))
            break;
        if (!put_raw(l, &ch, 1))
            break;
    }
    put_raw(l, "\"", 1);
}

/* The message and, for the text format, its fields into msg_buf. */
static void format_msg(int with_fields, const char *const *kv, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void format_msg(int with_fields, const char *const *kv, const char *fmt, va_list ap)
{
    struct line m = {msg_buf, 0, sizeof(msg_buf) - 1};
    int n = vsnprintf(msg_buf, sizeof(msg_buf), fmt, ap);

    m.len = n < 0 ? 0 : (size_t)n < m.cap ? (size_t)n : m.cap;
    for (size_t i = 0; with_fields && kv != NULL && kv[i] != NULL; i += 2) {
        if (kv[i + 1] != NULL)
            put_text_field(&m, kv[i], kv[i + 1]);
    }
    msg_buf[m.len] = '\0';
}

/* Writes one line; log_lock held. */
static void vemit(enum kms_log_level lvl, const char *const *kv, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void vemit(enum kms_log_level lvl, const char *const *kv, const char *fmt, va_list ap)
{
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    static const char *json_names[] = {"debug", "info", "warn", "error"};
    struct line l = {line_buf, 0, sizeof(line_buf) - 1};
    int json = log_format == KMS_LOG_FORMAT_JSON;
    char ts[48];
    struct timespec now;
    struct tm tm;
    size_t n;

    if (log_sink != NULL && log_line_sink == NULL) {
        format_msg(1, kv, fmt, ap);
        log_sink(log_sink_arg, msg_buf);
        return;
    }
    format_msg(!json, kv, fmt, ap);
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03ldZ", now.tv_nsec / 1000000);
    if (json) {
        l.cap -= 1; /* the closing brace */
        put_raw(&l, "{", 1);
        put_json_member(&l, "ts", ts);
        put_json_member(&l, "level", json_names[lvl]);
        if (log_tag[0] != '\0')
            put_json_member(&l, "node", log_tag);
        if (tl_request_id[0] != '\0')
            put_json_member(&l, "request_id", tl_request_id);
        put_json_member(&l, "msg", msg_buf);
        for (size_t i = 0; kv != NULL && kv[i] != NULL; i += 2) {
            if (kv[i + 1] != NULL)
                put_json_member(&l, kv[i], kv[i + 1]);
        }
        l.p[l.len++] = '}';
    } else {
        char head[160];

        snprintf(head, sizeof(head), "%s %-5s %s%s", ts, names[lvl], log_tag,
                 log_tag[0] != '\0' ? " " : "");
        put_str(&l, head);
        if (tl_request_id[0] != '\0') {
            put_str(&l, "req=");
            put_str(&l, tl_request_id);
            put_str(&l, " ");
        }
        put_raw(&l, msg_buf, strnlen(msg_buf, l.cap - l.len));
    }
    if (log_line_sink != NULL) {
        line_buf[l.len] = '\0';
        log_line_sink(log_line_sink_arg, line_buf);
        return;
    }
    line_buf[l.len++] = '\n';
    fwrite(line_buf, 1, l.len, stderr);
}

static void emit(enum kms_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void emit(enum kms_log_level lvl, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vemit(lvl, NULL, fmt, ap);
    va_end(ap);
}

void kms_log(enum kms_log_level lvl, const char *fmt, ...)
{
    va_list ap;

    if (lvl < log_level)
        return;
    pthread_mutex_lock(&log_lock);
    va_start(ap, fmt);
    vemit(lvl, NULL, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&log_lock);
}

void kms_log_fields(enum kms_log_level lvl, const char *const *kv, const char *fmt, ...)
{
    va_list ap;

    if (lvl < log_level)
        return;
    pthread_mutex_lock(&log_lock);
    va_start(ap, fmt);
    vemit(lvl, kv, fmt, ap);
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

static void vlimited(enum kms_log_level lvl, const char *key, const char *const *kv,
                     const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));
static void vlimited(enum kms_log_level lvl, const char *key, const char *const *kv,
                     const char *fmt, va_list ap)
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
        vemit(lvl, kv, fmt, ap);
    } else {
        s->suppressed++;
    }
    pthread_mutex_unlock(&log_lock);
}

void kms_log_vlimited(enum kms_log_level lvl, const char *key, const char *fmt, va_list ap)
{
    vlimited(lvl, key, NULL, fmt, ap);
}

void kms_log_limited_fields(enum kms_log_level lvl, const char *key, const char *const *kv,
                            const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlimited(lvl, key, kv, fmt, ap);
    va_end(ap);
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
