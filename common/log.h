/* Logging to stderr, one line per call. Never pass secret material to these functions.
 *
 * Formats (kms_log_set_format): text, "<time> <LEVEL> <tag> req=<id> <message> k=v ...", or
 * JSON, one object per line: {"ts":..., "level":..., "node":<tag>, "request_id":..., "msg":...,
 * <fields>...} with every value a string; bytes that are not UTF-8 become U+FFFD, so each line
 * parses. A line holds at most KMS_LOG_LINE_MAX bytes (a longer message is cut).
 *
 * Request ids: kms_log_set_request_id sets the id of the calling thread's current request
 * (node/http.c does, around each handler call); every line that thread logs carries it.
 *
 * Rate-limited lines (kms_log_limited): for noise a peer can cause at will (junk connections,
 * TLS errors), at most KMS_LOG_LIMIT_BURST lines per key per KMS_LOG_LIMIT_WINDOW_MS; the rest
 * are counted and reported as one summary line ("<key>: ... 1234 more in the last 10 s") when
 * the window ends (at the key's next line, or at kms_log_limited_flush). At most
 * KMS_LOG_LIMIT_KEYS keys are tracked; beyond that the oldest key is summarised and reused. */
#ifndef KMS_COMMON_LOG_H
#define KMS_COMMON_LOG_H

#include <stdarg.h>
#include <stdint.h>

enum kms_log_level { KMS_LOG_DEBUG = 0, KMS_LOG_INFO = 1, KMS_LOG_WARN = 2, KMS_LOG_ERROR = 3 };
enum kms_log_format { KMS_LOG_FORMAT_TEXT = 0, KMS_LOG_FORMAT_JSON = 1 };

#define KMS_LOG_LIMIT_BURST 5
#define KMS_LOG_LIMIT_WINDOW_MS 10000u
#define KMS_LOG_LIMIT_KEYS 64
#define KMS_LOG_LIMIT_KEY_MAX 80 /* longer keys are compared on their first 80 bytes */
#define KMS_LOG_LINE_MAX 8192
#define KMS_LOG_REQUEST_ID_MAX 64

void kms_log_set_level(enum kms_log_level lvl);
/* Parses "debug|info|warn|error"; returns -1 on unknown. */
int kms_log_parse_level(const char *s);
/* Parses "text|json"; returns -1 on unknown. */
int kms_log_parse_format(const char *s);
/* Set before logging starts (not synchronised with concurrent logging). */
void kms_log_set_format(enum kms_log_format f);
/* Prefix added to every line (e.g. the node name); copied. */
void kms_log_set_tag(const char *tag);
/* The calling thread's request id (copied; at most KMS_LOG_REQUEST_ID_MAX bytes, characters
 * other than [A-Za-z0-9._-] dropped); NULL or "" clears it. */
void kms_log_set_request_id(const char *id);
/* The calling thread's request id, "" when none (borrowed, valid until the next set). */
const char *kms_log_request_id(void);
void kms_log(enum kms_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* kms_log with fields: kv holds name/value pairs and ends with a NULL name; a NULL value skips
 * its pair. Names are plain identifiers ([a-z_]); values are any text (escaped as needed). */
void kms_log_fields(enum kms_log_level lvl, const char *const *kv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* kms_log, limited per key (a call site or message key, e.g. a format string; copied). */
void kms_log_limited(enum kms_log_level lvl, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void kms_log_vlimited(enum kms_log_level lvl, const char *key, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* kms_log_limited with fields (as kms_log_fields). */
void kms_log_limited_fields(enum kms_log_level lvl, const char *key, const char *const *kv,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Writes the summary of every key whose window has ended and forgets those keys. Call it now
 * and then (node/http.c does, once a second) so a burst that stopped is still reported. */
void kms_log_limited_flush(void);

/* Tests: a clock in ms (NULL = CLOCK_MONOTONIC), other limits (0 = the defaults), and a sink
 * that receives each line's message (with its fields as " k=v", no time, level or tag) instead
 * of stderr (NULL = stderr). Not thread-safe against concurrent logging; set them before
 * logging starts. */
void kms_log_test_hooks(uint64_t (*now_ms)(void), unsigned burst, unsigned window_ms,
                        void (*sink)(void *arg, const char *line), void *sink_arg);
/* Tests: a sink that receives each complete line as it would be written (in the current
 * format, without the trailing newline) instead of stderr; NULL = off. Takes precedence over
 * the message sink of kms_log_test_hooks. Same threading rule. */
void kms_log_test_line_sink(void (*sink)(void *arg, const char *line), void *sink_arg);

#define KMS_DEBUG(...) kms_log(KMS_LOG_DEBUG, __VA_ARGS__)
#define KMS_INFO(...) kms_log(KMS_LOG_INFO, __VA_ARGS__)
#define KMS_WARN(...) kms_log(KMS_LOG_WARN, __VA_ARGS__)
#define KMS_ERROR(...) kms_log(KMS_LOG_ERROR, __VA_ARGS__)
/* Rate-limited warning keyed by its call site. */
#define KMS_WARN_LIMITED(...)                                                                      \
    kms_log_limited(KMS_LOG_WARN, __FILE__ ":" KMS_LOG_STR(__LINE__), __VA_ARGS__)
#define KMS_LOG_STR(x) KMS_LOG_STR_(x)
#define KMS_LOG_STR_(x) #x

#endif
