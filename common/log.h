/* Logging to stderr. Never pass secret material to these functions.
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

#define KMS_LOG_LIMIT_BURST 5
#define KMS_LOG_LIMIT_WINDOW_MS 10000u
#define KMS_LOG_LIMIT_KEYS 64
#define KMS_LOG_LIMIT_KEY_MAX 80 /* longer keys are compared on their first 80 bytes */

void kms_log_set_level(enum kms_log_level lvl);
/* Parses "debug|info|warn|error"; returns -1 on unknown. */
int kms_log_parse_level(const char *s);
/* Prefix added to every line (e.g. the node name); copied. */
void kms_log_set_tag(const char *tag);
void kms_log(enum kms_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* kms_log, limited per key (a call site or message key, e.g. a format string; copied). */
void kms_log_limited(enum kms_log_level lvl, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void kms_log_vlimited(enum kms_log_level lvl, const char *key, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Writes the summary of every key whose window has ended and forgets those keys. Call it now
 * and then (node/http.c does, once a second) so a burst that stopped is still reported. */
void kms_log_limited_flush(void);

/* Tests: a clock in ms (NULL = CLOCK_MONOTONIC), other limits (0 = the defaults), and a sink
 * that receives each complete line without the trailing newline instead of stderr (NULL =
 * stderr). Not thread-safe against concurrent logging; set them before logging starts. */
void kms_log_test_hooks(uint64_t (*now_ms)(void), unsigned burst, unsigned window_ms,
                        void (*sink)(void *arg, const char *line), void *sink_arg);

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
