/*
 * House error convention: a fallible function returns int (0 on success, a negative
 * KMS_ERR_* code naming the layer and the cause) or a pointer (NULL on failure), and sets a
 * thread-local detail string with the sentence a user sees. Detail strings never carry
 * secret material.
 *
 * Code ranges: common -1..-99, attest -100..-199, node -200..-299, storage -300..-399,
 * chain -400..-499, replication -500..-599. Each module defines its codes in its header.
 */
#ifndef KMS_COMMON_ERR_H
#define KMS_COMMON_ERR_H

#include <stddef.h>

#define KMS_WUR __attribute__((warn_unused_result))

enum {
    KMS_OK = 0,
    KMS_ERR_NOMEM = -1,   /* allocation failed */
    KMS_ERR_INVAL = -2,   /* bad argument or input */
    KMS_ERR_PARSE = -3,   /* malformed encoding */
    KMS_ERR_IO = -4,      /* file or OS error */
    KMS_ERR_CRYPTO = -5,  /* OpenSSL / libsecp256k1 failure */
    KMS_ERR_VERIFY = -6,  /* a signature or binding did not verify */
    KMS_ERR_DENIED = -7,  /* policy refused */
    KMS_ERR_NET = -8,     /* network failure */
    KMS_ERR_TIMEOUT = -9, /* network timeout */
    KMS_ERR_STATE = -10,  /* operation not allowed in this state */
    KMS_ERR_NOTFOUND = -11,
    KMS_ERR_EXISTS = -12,
    KMS_ERR_TOOBIG = -13, /* input exceeds a stated maximum */
    KMS_ERR_INTERNAL = -14,
};

/*
 * kms_err_set, kms_err_wrap and kms_err_ossl are macros that return their code argument
 * through an inline function, so that the compiler sees which value an error path returns
 * (and that outputs it leaves unset are never read: gcc -O3 -Wmaybe-uninitialized). The
 * kms_err_*f functions do the out-of-line work and return 0.
 */
int kms_err_setf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int kms_err_wrapf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int kms_err_osslf(const char *what);
static inline int kms_err_code_(int code, int ignored)
{
    (void)ignored;
    return code;
}
/* Sets the thread-local detail (printf format) and returns code. */
#define kms_err_set(code, ...) kms_err_code_((code), kms_err_setf(__VA_ARGS__))
/* Prefixes the current detail with "fmt: " (context while propagating) and returns code. */
#define kms_err_wrap(code, ...) kms_err_code_((code), kms_err_wrapf(__VA_ARGS__))
/* Appends the OpenSSL error queue's first reason to the detail, clears the queue, returns code. */
#define kms_err_ossl(code, what) kms_err_code_((code), kms_err_osslf(what))
/* The current detail; borrowed, valid until the next kms_err_* call on this thread. Never NULL. */
const char *kms_err_detail(void);
void kms_err_clear(void);
/* Static name of a generic code. */
const char *kms_err_name(int code);

/* Check-and-propagate macros; every function using them has `int rc` and an `out:` label. */
#define KMS_GUARD(expr)                                                                            \
    do {                                                                                           \
        rc = (expr);                                                                               \
        if (rc < 0)                                                                                \
            goto out;                                                                              \
    } while (0)

#define KMS_ENSURE(cond, code, ...)                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            rc = kms_err_set((code), __VA_ARGS__);                                                 \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* OpenSSL calls return 1 on success. */
#define KMS_GUARD_OSSL(expr, what)                                                                 \
    do {                                                                                           \
        if ((expr) != 1) {                                                                         \
            rc = kms_err_ossl(KMS_ERR_CRYPTO, (what));                                             \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

#define KMS_GUARD_PTR(ptr)                                                                         \
    do {                                                                                           \
        if ((ptr) == NULL) {                                                                       \
            rc = kms_err_set(KMS_ERR_NOMEM, "out of memory");                                      \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

#endif
