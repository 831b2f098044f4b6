/* Small file helpers. */
#ifndef KMS_COMMON_FILE_H
#define KMS_COMMON_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Reads a whole file (at most max bytes) into a malloc'd, NUL-terminated buffer; caller frees
 * *out (with kms_free_secret if it may hold secrets). */
KMS_WUR int kms_file_read(const char *path, size_t max, uint8_t **out, size_t *len);
/* Writes atomically: temp file in the same directory, fsync, rename, fsync dir. mode e.g. 0600. */
KMS_WUR int kms_file_write_atomic(const char *path, const void *p, size_t n, unsigned mode);
/* Creates a directory (and parents) with the given mode if missing. */
KMS_WUR int kms_mkdir_p(const char *path, unsigned mode);
/* 1 if path exists, else 0. */
int kms_file_exists(const char *path);

#endif
