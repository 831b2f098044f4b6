/*
 * Test interposer for the Nitro client (LD_PRELOAD into kmsctl, or linked into a test).
 *
 * Why an interposer: a fake /dev/nsm needs a character device that answers the NSM ioctl, and
 * this machine has no CUSE (/dev/cuse is absent and the kernel lists no cuse misc device);
 * a plain FUSE file cannot serve it either, since the NSM ioctl carries pointers to user
 * buffers (iovecs) that only CUSE's unrestricted ioctls may follow. AF_VSOCK has no loopback
 * transport here (vsock_loopback is not loaded: connecting to CID 1 times out). So:
 *
 *  - ioctl(fd, NSM_IOCTL_RAW, &raw) on an fd opened on the file named by $KMS_FAKE_NSM is sent
 *    to the fake NSM listening on the Unix socket "$KMS_FAKE_NSM.sock" (kmstest_nitro.h):
 *    [u32 request length][request], answered with [i32 errno][u32 length][response]. The
 *    client's code path is unchanged up to and including the ioctl() call and the iovec
 *    contract (response.len is updated, as the Linux driver does). Any other ioctl goes to libc.
 *  - socket(AF_VSOCK, ...) becomes an AF_UNIX socket and connect() to {cid, port} connects to
 *    "$KMS_FAKE_VSOCK_DIR/vsock-CID-PORT" (ENOENT is reported as ECONNREFUSED, as a vsock peer
 *    without a listener answers), only while $KMS_FAKE_VSOCK_DIR is set.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "attest/nsm.h"

typedef int (*ioctl_fn)(int, unsigned long, void *);
typedef int (*socket_fn)(int, int, int);
typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

static int io_all(int fd, void *p, size_t n, int wr)
{
    uint8_t *b = p;

    while (n > 0) {
        ssize_t k = wr ? write(fd, b, n) : read(fd, b, n);

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Is fd open on the fake NSM file? */
static int is_fake_nsm(int fd, const char *dev)
{
    char link[64], target[PATH_MAX], want[PATH_MAX];
    ssize_t n;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0 || realpath(dev, want) == NULL)
        return 0;
    target[n] = '\0';
    return strcmp(target, want) == 0;
}

static int fake_nsm_ioctl(const char *dev, struct kms_nsm_raw *raw)
{
    connect_fn real_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
    struct sockaddr_un sa;
    uint32_t len, rlen;
    int32_t err = EIO;
    int s = -1, rc = -1;
    uint8_t *tmp = NULL;

    if (raw->request.len > KMS_NSM_REQUEST_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s.sock", dev) >= (int)sizeof(sa.sun_path))
        goto out;
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || real_connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        goto out;
    len = (uint32_t)raw->request.len;
    if (io_all(s, &len, 4, 1) < 0 || io_all(s, (void *)(uintptr_t)raw->request.addr, len, 1) < 0 ||
        io_all(s, &err, 4, 0) < 0 || io_all(s, &rlen, 4, 0) < 0 || rlen > 1u << 20) {
        err = EIO;
        goto out;
    }
    tmp = malloc(rlen > 0 ? rlen : 1);
    if (tmp == NULL || io_all(s, tmp, rlen, 0) < 0) {
        err = EIO;
        goto out;
    }
    if (err != 0)
        goto out;
    if (rlen > raw->response.len) {
        err = EMSGSIZE;
        goto out;
    }
    memcpy((void *)(uintptr_t)raw->response.addr, tmp, rlen);
    raw->response.len = rlen;
    rc = 0;
out:
    free(tmp);
    if (s >= 0)
        close(s);
    if (rc < 0)
        errno = err;
    return rc;
}

int ioctl(int fd, unsigned long req, ...)
{
    ioctl_fn real = (ioctl_fn)dlsym(RTLD_NEXT, "ioctl");
    const char *dev = getenv("KMS_FAKE_NSM");
    va_list ap;
    void *arg;

    va_start(ap, req);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (req == (unsigned long)KMS_NSM_IOCTL_RAW && dev != NULL && is_fake_nsm(fd, dev))
        return fake_nsm_ioctl(dev, arg);
    return real(fd, req, arg);
}

int socket(int domain, int type, int protocol)
{
    socket_fn real = (socket_fn)dlsym(RTLD_NEXT, "socket");

    if (domain == AF_VSOCK && getenv("KMS_FAKE_VSOCK_DIR") != NULL)
        return real(AF_UNIX, type, 0);
    return real(domain, type, protocol);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    connect_fn real = (connect_fn)dlsym(RTLD_NEXT, "connect");
    const char *dir = getenv("KMS_FAKE_VSOCK_DIR");
    const struct sockaddr_vm *vm = (const struct sockaddr_vm *)(const void *)addr;
    struct sockaddr_un sa;
    int rc;

    if (dir == NULL || addr == NULL || addr->sa_family != AF_VSOCK || len < sizeof(*vm))
        return real(fd, addr, len);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/vsock-%u-%u", dir, vm->svm_cid,
                 vm->svm_port) >= (int)sizeof(sa.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    rc = real(fd, (struct sockaddr *)&sa, sizeof(sa));
    if (rc != 0 && errno == ENOENT)
        errno = ECONNREFUSED;
    return rc;
}
