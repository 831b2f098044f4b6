#include "common/file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"

int kms_file_read(const char *path, size_t max, uint8_t **out, size_t *len)
{
    struct kms_buf b = {0};
    uint8_t tmp[4096];
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return kms_err_set(errno == ENOENT ? KMS_ERR_NOTFOUND : KMS_ERR_IO, "cannot open %s: %s",
                           path, strerror(errno));
    for (;;) {
        ssize_t n = read(fd, tmp, sizeof(tmp));

        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = kms_err_set(KMS_ERR_IO, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        KMS_ENSURE(max - b.len >= (size_t)n, KMS_ERR_TOOBIG, "%s is larger than %zu bytes", path,
                   max);
        KMS_GUARD(kms_buf_put(&b, tmp, (size_t)n));
    }
    KMS_GUARD(kms_buf_put_u8(&b, 0));
    b.len--;
    *out = kms_buf_steal(&b, len);
out:
    memset(tmp, 0, sizeof(tmp));
    close(fd);
    kms_buf_free(&b);
    return rc;
}

/* fsync of the directory holding path, so that a rename or link survives a crash. */
static void sync_dir(const char *path)
{
    char dirbuf[4096];
    int dfd;

    snprintf(dirbuf, sizeof(dirbuf), "%s", path);
    dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

int kms_file_write_atomic_ex(const char *path, const void *p, size_t n, unsigned mode,
                             unsigned flags)
{
    char tmpl[4096];
    const uint8_t *b = p;
    size_t off = 0;
    int rc = 0;
    int fd = -1;

    tmpl[0] = '\0';
    KMS_ENSURE(strlen(path) < sizeof(tmpl) - 16, KMS_ERR_INVAL, "path too long: %s", path);
    snprintf(tmpl, sizeof(tmpl), "%s.tmpXXXXXX", path);
    /* mkostemp: O_CREAT | O_EXCL, mode 0600 (never wider than the owner until fchmod) */
    fd = mkostemp(tmpl, O_CLOEXEC);
    if (fd < 0) {
        tmpl[0] = '\0';
        rc = kms_err_set(KMS_ERR_IO, "cannot create temp file for %s: %s", path, strerror(errno));
        goto out;
    }
    KMS_ENSURE(fchmod(fd, (mode_t)mode) == 0, KMS_ERR_IO, "chmod %s: %s", tmpl, strerror(errno));
    while (off < n) {
        ssize_t w = write(fd, b + off, n - off);

        if (w < 0 && errno == EINTR)
            continue;
        KMS_ENSURE(w > 0, KMS_ERR_IO, "cannot write %s: %s", tmpl, strerror(errno));
        off += (size_t)w;
    }
    KMS_ENSURE(fsync(fd) == 0, KMS_ERR_IO, "fsync %s: %s", tmpl, strerror(errno));
    close(fd);
    fd = -1;
    if (flags & KMS_FILE_NOREPLACE) {
        /* link() fails with EEXIST instead of replacing; the temp name is removed below */
        if (link(tmpl, path) != 0) {
            rc = errno == EEXIST
                     ? kms_err_set(KMS_ERR_EXISTS, "%s already exists", path)
                     : kms_err_set(KMS_ERR_IO, "cannot create %s: %s", path, strerror(errno));
            goto out;
        }
    } else {
        KMS_ENSURE(rename(tmpl, path) == 0, KMS_ERR_IO, "rename to %s: %s", path, strerror(errno));
        tmpl[0] = '\0';
    }
    sync_dir(path);
out:
    if (fd >= 0)
        close(fd);
    if (tmpl[0] != '\0')
        unlink(tmpl);
    return rc;
}

int kms_file_write_atomic(const char *path, const void *p, size_t n, unsigned mode)
{
    return kms_file_write_atomic_ex(path, p, n, mode, 0);
}

int kms_mkdir_p(const char *path, unsigned mode)
{
    char tmp[4096];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof(tmp))
        return kms_err_set(KMS_ERR_INVAL, "invalid directory path");
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == '\0') {
            char c = tmp[i];

            tmp[i] = '\0';
            if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST)
                return kms_err_set(KMS_ERR_IO, "cannot create directory %s: %s", tmp,
                                   strerror(errno));
            tmp[i] = c;
        }
    }
    return 0;
}

int kms_file_exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0;
}
