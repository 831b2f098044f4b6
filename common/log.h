/* Logging to stderr. Never pass secret material to these functions. */
#ifndef KMS_COMMON_LOG_H
#define KMS_COMMON_LOG_H

enum kms_log_level { KMS_LOG_DEBUG = 0, KMS_LOG_INFO = 1, KMS_LOG_WARN = 2, KMS_LOG_ERROR = 3 };

void kms_log_set_level(enum kms_log_level lvl);
/* Parses "debug|info|warn|error"; returns -1 on unknown. */
int kms_log_parse_level(const char *s);
/* Prefix added to every line (e.g. the node name); copied. */
void kms_log_set_tag(const char *tag);
void kms_log(enum kms_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define KMS_DEBUG(...) kms_log(KMS_LOG_DEBUG, __VA_ARGS__)
#define KMS_INFO(...) kms_log(KMS_LOG_INFO, __VA_ARGS__)
#define KMS_WARN(...) kms_log(KMS_LOG_WARN, __VA_ARGS__)
#define KMS_ERROR(...) kms_log(KMS_LOG_ERROR, __VA_ARGS__)

#endif
