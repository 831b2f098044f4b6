#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum kms_log_level log_level = KMS_LOG_INFO;
static char log_tag[64];
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

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

void kms_log(enum kms_log_level lvl, const char *fmt, ...)
{
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char ts[32];
    struct timespec now;
    struct tm tm;
    va_list ap;

    if (lvl < log_level)
        return;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%s.%03ldZ %-5s %s%s", ts, now.tv_nsec / 1000000, names[lvl], log_tag,
            log_tag[0] != '\0' ? " " : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    pthread_mutex_unlock(&log_lock);
}
