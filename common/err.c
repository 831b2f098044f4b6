#include "common/err.h"

#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define KMS_ERR_DETAIL_MAX 1024

static _Thread_local char err_detail[KMS_ERR_DETAIL_MAX];

int kms_err_setf(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err_detail, sizeof(err_detail), fmt, ap);
    va_end(ap);
    return 0;
}

int kms_err_wrapf(const char *fmt, ...)
{
    char prefix[KMS_ERR_DETAIL_MAX];
    char old[KMS_ERR_DETAIL_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err_detail, sizeof(old));
    if (old[0] != '\0')
        snprintf(err_detail, sizeof(err_detail), "%s: %s", prefix, old);
    else
        snprintf(err_detail, sizeof(err_detail), "%s", prefix);
    return 0;
}

int kms_err_osslf(const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;

    if (reason != NULL)
        snprintf(err_detail, sizeof(err_detail), "%s: %s", what, reason);
    else
        snprintf(err_detail, sizeof(err_detail), "%s", what);
    ERR_clear_error();
    return 0;
}

const char *kms_err_detail(void)
{
    return err_detail;
}

void kms_err_clear(void)
{
    err_detail[0] = '\0';
}

const char *kms_err_name(int code)
{
    switch (code) {
    case KMS_OK:
        return "ok";
    case KMS_ERR_NOMEM:
        return "out of memory";
    case KMS_ERR_INVAL:
        return "invalid input";
    case KMS_ERR_PARSE:
        return "malformed data";
    case KMS_ERR_IO:
        return "I/O error";
    case KMS_ERR_CRYPTO:
        return "cryptographic failure";
    case KMS_ERR_VERIFY:
        return "verification failed";
    case KMS_ERR_DENIED:
        return "denied";
    case KMS_ERR_NET:
        return "network error";
    case KMS_ERR_TIMEOUT:
        return "timed out";
    case KMS_ERR_STATE:
        return "wrong state";
    case KMS_ERR_NOTFOUND:
        return "not found";
    case KMS_ERR_EXISTS:
        return "already exists";
    case KMS_ERR_TOOBIG:
        return "too large";
    default:
        return "error";
    }
}
