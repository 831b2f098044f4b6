/* Small file helpers. */
#ifndef KMS_COMMON_FILE_H
#define KMS_COMMON_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Reads a whole file (at most max bytes) into a malloc'd, NUL-terminated buffer; caller frees
 * *out (with kms_free_secret if it may hold secrets). */
KMS_WUR int kms_file_read(const char *path, size_t max, uint8_t **out, size_t *len);
/* The one atomic-file writer. Writes n bytes of p to a new temp file next to path (O_EXCL,
 * then exactly mode, e.g. 0600, whatever the umask), fsyncs it, publishes it at path and
 * fsyncs the directory: a crash leaves the old file or the complete new one, never a short
 * one. Publishing replaces an existing path (rename), or with KMS_FILE_NOREPLACE never does
 * (link; KMS_ERR_EXISTS when path exists, e.g. another process created it first). The temp
 * file is removed on every path. Errors: KMS_ERR_IO, KMS_ERR_INVAL (path too long). */
#define KMS_FILE_NOREPLACE 1u
KMS_WUR int kms_file_write_atomic_ex(const char *path, const void *p, size_t n, unsigned mode,
                                     unsigned flags);
/* kms_file_write_atomic_ex without flags: replaces path. */
KMS_WUR int kms_file_write_atomic(const char *path, const void *p, size_t n, unsigned mode);
/* Creates a directory (and parents) with the given mode if missing. */
KMS_WUR int kms_mkdir_p(const char *path, unsigned mode);
/* 1 if path exists, else 0. */
int kms_file_exists(const char *path);

#endif
