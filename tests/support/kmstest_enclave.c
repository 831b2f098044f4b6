/*
 * kmstest_enclave: runs a program as if inside a Nitro Enclave, at the kernel's syscall boundary.
 *
 *   kmstest_enclave --nsm HOSTPATH --vsock-dir DIR [--nsm-sock PATH] [--chroot DIR] [--cwd DIR]
 *                   [--timeout-s N] -- PROG ARGS...
 *
 * Why: this machine has no CUSE (no fake character device can answer the NSM ioctl, whose
 * iovecs point into the caller's memory) and no vsock loopback transport. nsm_preload.c fakes
 * both by LD_PRELOAD, which cannot reach a statically linked program. A seccomp filter sees
 * every syscall of every binary, static or not, so the supervisor answers the two syscalls an
 * enclave needs the way the kernel would, and the program runs unchanged:
 *
 *  - ioctl(fd, NSM_IOCTL_RAW, &raw) on an fd open on the --nsm file: the request iovec is read
 *    from the program's memory, sent to the fake NSM on "HOSTPATH.sock" or --nsm-sock (which
 *    keeps the socket out of an otherwise empty chroot) (kmstest_nitro.h:
 *    [u32 len][request] -> [i32 errno][u32 len][response]), the response written into the
 *    program's response buffer (truncated to its length) and response.len set to the bytes
 *    written, as the Linux driver does; the ioctl returns 0 or -errno.
 *  - connect(fd, {AF_VSOCK, cid, port}): a Unix stream socket connected to DIR/vsock-CID-PORT
 *    replaces the program's fd (same number, same O_NONBLOCK and close-on-exec); no listener
 *    gives ECONNREFUSED, as a vsock peer without one answers.
 *
 * Every other syscall, and ioctl/connect that are not these, run in the kernel untouched
 * (SECCOMP_USER_NOTIF_FLAG_CONTINUE: fine for a test tool, never a security boundary). With
 * --chroot the program runs with DIR as its root (PROG is looked up inside it); paths given
 * here (--nsm, --vsock-dir) are host paths. Exits with the program's status (signal n: 128+n),
 * 125 on a usage or setup error, 124 when --timeout-s (default 120) passes and the program is
 * killed.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/vm_sockets.h>

#include "attest/nsm.h"

#if defined(__x86_64__)
#define ENC_ARCH AUDIT_ARCH_X86_64
#define ENC_X32_BIT 0x40000000u /* __X32_SYSCALL_BIT: x32 calls share the x86_64 arch value */
#elif defined(__aarch64__)
#define ENC_ARCH AUDIT_ARCH_AARCH64
#else
#error "kmstest_enclave: seccomp filter written for x86_64 and aarch64 only"
#endif
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kmstest_enclave: the filter reads the low word of syscall arguments (little endian)"
#endif

#define ENC_EXIT_SETUP 125
#define ENC_EXIT_TIMEOUT 124
#define ENC_NSM_RESP_MAX (64u * 1024u) /* what the fake NSM may answer, at most */
#define ENC_IO_TIMEOUT_S 30            /* per read/write to the fake NSM */

struct enc_opts {
    char nsm_sock[PATH_MAX]; /* the fake NSM's socket: --nsm-sock, or --nsm as given + .sock */
    char nsm[PATH_MAX];      /* its realpath, to recognise the target's fd */
    const char *vsock_dir;
    const char *root;
    const char *cwd;
    long timeout_s;
    char **argv;
};

static void usage(FILE *f)
{
    fputs("usage: kmstest_enclave --nsm HOSTPATH --vsock-dir DIR [--nsm-sock PATH]\n"
          "                       [--chroot DIR] [--cwd DIR] [--timeout-s N] -- PROG ARGS...\n"
          "Runs PROG under a seccomp user-notification supervisor that answers the NSM ioctl\n"
          "on the HOSTPATH file (fake NSM on HOSTPATH.sock) and turns AF_VSOCK connect() into\n"
          "Unix-socket connections to DIR/vsock-CID-PORT. Test tool (works for static binaries).\n"
          "  --nsm-sock PATH  the fake NSM's Unix socket (default HOSTPATH.sock)\n"
          "  --chroot DIR     run PROG with DIR as its root directory (needs CAP_SYS_CHROOT)\n"
          "  --cwd DIR        working directory of PROG (inside the chroot; default / with it)\n"
          "  --timeout-s N    kill PROG after N seconds (1..3600, default 120): exit 124\n",
          f);
}

/* The filter: NSM ioctl and connect go to the supervisor, everything else runs; a syscall of
 * another ABI (i386, x32) kills the process rather than slipping past the number checks. */
static int install_filter(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ENC_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#ifdef ENC_X32_BIT
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, ENC_X32_BIT, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
#endif
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_connect, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 3),
        /* the kernel passes ioctl's request as an unsigned int: compare the low word */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)KMS_NSM_IOCTL_RAW, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = (unsigned short)(sizeof(f) / sizeof(f[0])), .filter = f};

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                        &prog);
}

static int send_fd(int sock, int fd)
{
    char c = 'L';
    struct iovec iov = {.iov_base = &c, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr m;
    struct cmsghdr *cm;

    memset(&m, 0, sizeof(m));
    memset(&u, 0, sizeof(u));
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.buf;
    m.msg_controllen = sizeof(u.buf);
    cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    return sendmsg(sock, &m, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

/* The fd the child sent, or -1 (the child failed before sending and closed its end). */
static int recv_fd(int sock)
{
    char c;
    struct iovec iov = {.iov_base = &c, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr m;
    struct cmsghdr *cm;
    ssize_t n;
    int fd = -1;

    memset(&m, 0, sizeof(m));
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = u.buf;
    m.msg_controllen = sizeof(u.buf);
    do {
        n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n != 1)
        return -1;
    cm = CMSG_FIRSTHDR(&m);
    if (cm == NULL || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
        cm->cmsg_len != CMSG_LEN(sizeof(int)))
        return -1;
    memcpy(&fd, CMSG_DATA(cm), sizeof(int));
    return fd;
}

/* In the child: filter, hand the listener over, enter the enclave's root, run PROG. */
static void child_run(int sock, const struct enc_opts *o, pid_t parent)
{
    int lfd;

    /* no orphaned enclave when the supervisor dies (ctest timeout) */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != parent)
        _exit(ENC_EXIT_SETUP);
    lfd = install_filter();
    if (lfd < 0) {
        fprintf(stderr, "kmstest_enclave: seccomp filter: %s\n", strerror(errno));
        _exit(ENC_EXIT_SETUP);
    }
    if (send_fd(sock, lfd) != 0) {
        fprintf(stderr, "kmstest_enclave: handing the listener over: %s\n", strerror(errno));
        _exit(ENC_EXIT_SETUP);
    }
    close(lfd);
    close(sock);
    if (o->root != NULL && chroot(o->root) != 0) {
        fprintf(stderr, "kmstest_enclave: chroot %s: %s\n", o->root, strerror(errno));
        _exit(ENC_EXIT_SETUP);
    }
    if (o->cwd != NULL || o->root != NULL) {
        const char *d = o->cwd != NULL ? o->cwd : "/";

        if (chdir(d) != 0) {
            fprintf(stderr, "kmstest_enclave: chdir %s: %s\n", d, strerror(errno));
            _exit(ENC_EXIT_SETUP);
        }
    }
    execvp(o->argv[0], o->argv);
    fprintf(stderr, "kmstest_enclave: cannot run %s: %s\n", o->argv[0], strerror(errno));
    _exit(127);
}

/* Exactly n bytes between the target's memory at addr and buf; 0 or -1. */
static int mem_io(pid_t pid, uint64_t addr, void *buf, size_t n, int wr)
{
    struct iovec local = {.iov_base = buf, .iov_len = n};
    struct iovec remote = {.iov_base = (void *)(uintptr_t)addr, .iov_len = n};
    ssize_t k;

    if (n == 0)
        return 0;
    k = wr ? process_vm_writev(pid, &local, 1, &remote, 1, 0)
           : process_vm_readv(pid, &local, 1, &remote, 1, 0);
    return k == (ssize_t)n ? 0 : -1;
}

/* Is the notification still pending (the target still in that syscall, its pid not reused)? */
static int notif_valid(int lfd, uint64_t id)
{
    return ioctl(lfd, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

/* Is the target's fd open on the file `want` (a realpath; prefix: its link starts so)? */
static int fd_is(pid_t pid, int fd, const char *want, int prefix)
{
    char link[64], target[PATH_MAX];
    ssize_t n;

    snprintf(link, sizeof(link), "/proc/%d/fd/%d", (int)pid, fd);
    n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0)
        return 0;
    target[n] = '\0';
    if (prefix)
        return strncmp(target, want, strlen(want)) == 0;
    return strcmp(target, want) == 0;
}

static int io_all(int fd, void *p, size_t n, int wr)
{
    uint8_t *b = p;

    while (n > 0) {
        ssize_t k = wr ? send(fd, b, n, MSG_NOSIGNAL) : recv(fd, b, n, 0);

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* One exchange with the fake NSM: 0 with *resp (caller frees) and *err (the NSM's errno), or
 * -1 when the fake NSM cannot be reached or answers out of bounds. */
static int nsm_exchange(const char *path, const uint8_t *req, uint32_t len, uint8_t **resp,
                        uint32_t *resp_len, int32_t *err)
{
    struct timeval tv = {.tv_sec = ENC_IO_TIMEOUT_S, .tv_usec = 0};
    struct sockaddr_un sa;
    uint32_t rlen = 0;
    uint8_t *b = NULL;
    int s = -1, rc = -1;

    *resp = NULL;
    *resp_len = 0;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path) >= (int)sizeof(sa.sun_path))
        goto out;
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        goto out;
    if (setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
        connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        goto out;
    if (io_all(s, &len, 4, 1) != 0 || io_all(s, (void *)(uintptr_t)req, len, 1) != 0 ||
        io_all(s, err, 4, 0) != 0 || io_all(s, &rlen, 4, 0) != 0 || rlen > ENC_NSM_RESP_MAX)
        goto out;
    b = malloc(rlen > 0 ? rlen : 1);
    if (b == NULL || io_all(s, b, rlen, 0) != 0)
        goto out;
    *resp = b;
    *resp_len = rlen;
    b = NULL;
    rc = 0;
out:
    free(b);
    if (s >= 0)
        close(s);
    return rc;
}

/* ioctl(fd, NSM_IOCTL_RAW, raw): answered in r, or r->flags = CONTINUE when fd is not the NSM. */
static void on_ioctl(int lfd, const struct seccomp_notif *n, const struct enc_opts *o,
                     struct seccomp_notif_resp *r)
{
    pid_t pid = (pid_t)n->pid;
    int fd = (int)(uint32_t)n->data.args[0];
    uint64_t at = n->data.args[2];
    struct kms_nsm_raw raw;
    uint8_t req[KMS_NSM_REQUEST_MAX];
    uint8_t *resp = NULL;
    uint32_t resp_len = 0;
    int32_t err = 0;
    uint64_t put;

    if (!fd_is(pid, fd, o->nsm, 0)) {
        r->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        return;
    }
    /* pid was still the caller's when /proc was read (not a reused one) */
    if (!notif_valid(lfd, n->id))
        return;
    if (mem_io(pid, at, &raw, sizeof(raw), 0) != 0) {
        r->error = -EFAULT;
        return;
    }
    if (raw.request.len > KMS_NSM_REQUEST_MAX) {
        r->error = -EMSGSIZE;
        return;
    }
    if (mem_io(pid, raw.request.addr, req, (size_t)raw.request.len, 0) != 0) {
        r->error = -EFAULT;
        return;
    }
    if (nsm_exchange(o->nsm_sock, req, (uint32_t)raw.request.len, &resp, &resp_len, &err) != 0) {
        r->error = -EIO;
        goto out;
    }
    if (err != 0) {
        r->error = err > 0 && err < 4096 ? -err : -EIO;
        goto out;
    }
    put = resp_len < raw.response.len ? resp_len : raw.response.len;
    raw.response.len = put;
    /* the target may have been interrupted meanwhile: then its memory is no longer ours */
    if (!notif_valid(lfd, n->id))
        goto out;
    if (mem_io(pid, raw.response.addr, resp, (size_t)put, 1) != 0 ||
        mem_io(pid, at + offsetof(struct kms_nsm_raw, response.len), &raw.response.len,
               sizeof(raw.response.len), 1) != 0) {
        r->error = -EFAULT;
        goto out;
    }
    r->val = 0;
out:
    free(resp);
}

/* O_NONBLOCK and close-on-exec of the target's fd, from /proc/PID/fdinfo; -1 if unknown. */
static int fd_flags(pid_t pid, int fd)
{
    char path[64], line[128];
    FILE *f;
    int flags = -1;

    snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)pid, fd);
    f = fopen(path, "re");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "flags:", 6) == 0) {
            char *end = NULL;
            long v = strtol(line + 6, &end, 8);

            if (end != line + 6 && v >= 0 && v <= INT_MAX)
                flags = (int)v;
            break;
        }
    }
    fclose(f);
    return flags;
}

/* connect(fd, addr, len): AF_VSOCK becomes a Unix socket put in place of fd; else CONTINUE. */
static void on_connect(int lfd, const struct seccomp_notif *n, const struct enc_opts *o,
                       struct seccomp_notif_resp *r)
{
    pid_t pid = (pid_t)n->pid;
    int fd = (int)(uint32_t)n->data.args[0];
    uint64_t len = n->data.args[2];
    struct sockaddr_vm vm;
    struct sockaddr_un sa;
    struct seccomp_notif_addfd add;
    int s = -1, flags;

    r->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    /* anything odd (short, unreadable, not vsock) is the kernel's to judge */
    if (len < sizeof(vm) || mem_io(pid, n->data.args[1], &vm, sizeof(vm), 0) != 0 ||
        vm.svm_family != AF_VSOCK || !fd_is(pid, fd, "socket:", 1))
        return;
    r->flags = 0;
    flags = fd_flags(pid, fd);
    if (flags < 0) {
        r->error = -EBADF;
        return;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/vsock-%u-%u", o->vsock_dir, vm.svm_cid,
                 vm.svm_port) >= (int)sizeof(sa.sun_path)) {
        r->error = -ENAMETOOLONG;
        return;
    }
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) {
        r->error = -errno;
        return;
    }
    /* non-blocking: a listener with a full backlog answers EAGAIN instead of stalling us */
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;

        r->error = e == ENOENT || e == ECONNREFUSED || e == EAGAIN ? -ECONNREFUSED : -e;
        goto out;
    }
    if ((flags & O_NONBLOCK) == 0 && fcntl(s, F_SETFL, 0) != 0) {
        r->error = -errno;
        goto out;
    }
    memset(&add, 0, sizeof(add));
    add.id = n->id;
    add.flags = SECCOMP_ADDFD_FLAG_SETFD;
    add.srcfd = (uint32_t)s;
    add.newfd = (uint32_t)fd;
    add.newfd_flags = (flags & O_CLOEXEC) != 0 ? (uint32_t)O_CLOEXEC : 0u;
    if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_ADDFD, &add) < 0) {
        r->error = -EBADF;
        goto out;
    }
    r->val = 0;
out:
    close(s);
}

/* Answers one notification; 0, or -1 when the listener is gone. */
static int serve_one(int lfd, const struct enc_opts *o)
{
    struct seccomp_notif n;
    struct seccomp_notif_resp r;

    memset(&n, 0, sizeof(n));
    if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_RECV, &n) != 0)
        return errno == EINTR || errno == ENOENT ? 0 : -1; /* ENOENT: the target went away */
    memset(&r, 0, sizeof(r));
    r.id = n.id;
    if (n.data.nr == __NR_ioctl)
        on_ioctl(lfd, &n, o, &r);
    else if (n.data.nr == __NR_connect)
        on_connect(lfd, &n, o, &r);
    else
        r.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    if ((r.flags & SECCOMP_USER_NOTIF_FLAG_CONTINUE) != 0) {
        r.error = 0;
        r.val = 0;
    }
    /* ENOENT: the target was interrupted and no longer waits for this answer */
    if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_SEND, &r) != 0 && errno != ENOENT)
        fprintf(stderr, "kmstest_enclave: answering syscall %d: %s\n", n.data.nr, strerror(errno));
    return 0;
}

static long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Serves the child's notifications until it exits; its exit status as ours. */
static int supervise(pid_t child, int lfd, const struct enc_opts *o)
{
    int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
    long deadline = now_ms() + o->timeout_s * 1000;
    struct pollfd p[2];
    int st = 0, timed_out = 0;

    if (pidfd < 0) {
        fprintf(stderr, "kmstest_enclave: pidfd_open: %s\n", strerror(errno));
        kill(child, SIGKILL);
        timed_out = -1;
    }
    p[0].fd = lfd;
    p[0].events = POLLIN;
    p[1].fd = pidfd;
    p[1].events = POLLIN;
    while (pidfd >= 0) {
        long left = deadline - now_ms();
        int k;

        if (left <= 0) {
            fprintf(stderr, "kmstest_enclave: %s still running after %ld s: killed\n", o->argv[0],
                    o->timeout_s);
            kill(child, SIGKILL);
            timed_out = 1;
            break;
        }
        k = poll(p, 2, (int)(left < 60000 ? left : 60000));
        if (k < 0 && errno != EINTR) {
            kill(child, SIGKILL);
            timed_out = -1;
            break;
        }
        if (k <= 0)
            continue;
        if (p[1].revents != 0)
            break;
        if ((p[0].revents & POLLIN) != 0 && serve_one(lfd, o) != 0)
            p[0].fd = -1;
        else if ((p[0].revents & (POLLHUP | POLLERR | POLLNVAL)) != 0)
            p[0].fd = -1; /* no filtered task left; the child's exit follows */
    }
    if (pidfd >= 0)
        close(pidfd);
    while (waitpid(child, &st, 0) < 0) {
        if (errno != EINTR)
            return ENC_EXIT_SETUP;
    }
    if (timed_out != 0)
        return timed_out > 0 ? ENC_EXIT_TIMEOUT : ENC_EXIT_SETUP;
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return ENC_EXIT_SETUP;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"nsm", required_argument, NULL, 'n'},
        {"vsock-dir", required_argument, NULL, 'v'},
        {"chroot", required_argument, NULL, 'r'},
        {"cwd", required_argument, NULL, 'c'},
        {"timeout-s", required_argument, NULL, 't'},
        {"nsm-sock", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct enc_opts o;
    const char *nsm = NULL, *nsm_sock = NULL;
    pid_t parent = getpid(), child;
    int sv[2], lfd, c;

    memset(&o, 0, sizeof(o));
    o.timeout_s = 120;
    for (;;) {
        char *end = NULL;

        c = getopt_long(argc, argv, "+h", opts, NULL);
        if (c < 0)
            break;
        if (c == 'n') {
            nsm = optarg;
        } else if (c == 'v') {
            o.vsock_dir = optarg;
        } else if (c == 's') {
            nsm_sock = optarg;
        } else if (c == 'r') {
            o.root = optarg;
        } else if (c == 'c') {
            o.cwd = optarg;
        } else if (c == 't') {
            o.timeout_s = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || o.timeout_s < 1 || o.timeout_s > 3600) {
                fputs("kmstest_enclave: --timeout-s takes 1..3600\n", stderr);
                return ENC_EXIT_SETUP;
            }
        } else if (c == 'h') {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return ENC_EXIT_SETUP;
        }
    }
    if (nsm == NULL || o.vsock_dir == NULL || optind >= argc) {
        usage(stderr);
        return ENC_EXIT_SETUP;
    }
    if (realpath(nsm, o.nsm) == NULL) {
        fprintf(stderr, "kmstest_enclave: --nsm %s: %s\n", nsm, strerror(errno));
        return ENC_EXIT_SETUP;
    }
    if (nsm_sock != NULL)
        c = snprintf(o.nsm_sock, sizeof(o.nsm_sock), "%s", nsm_sock);
    else
        c = snprintf(o.nsm_sock, sizeof(o.nsm_sock), "%s.sock", nsm);
    if (c < 0 || c >= (int)sizeof(o.nsm_sock)) {
        fputs("kmstest_enclave: the fake NSM's socket path is too long\n", stderr);
        return ENC_EXIT_SETUP;
    }
    o.argv = argv + optind;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        perror("kmstest_enclave: socketpair");
        return ENC_EXIT_SETUP;
    }
    child = fork();
    if (child < 0) {
        perror("kmstest_enclave: fork");
        return ENC_EXIT_SETUP;
    }
    if (child == 0) {
        close(sv[0]);
        child_run(sv[1], &o, parent);
    }
    close(sv[1]);
    lfd = recv_fd(sv[0]);
    close(sv[0]);
    if (lfd < 0) {
        int st = 0;

        fputs("kmstest_enclave: the child did not hand over its seccomp listener\n", stderr);
        kill(child, SIGKILL);
        (void)waitpid(child, &st, 0);
        return ENC_EXIT_SETUP;
    }
    c = supervise(child, lfd, &o);
    close(lfd);
    return c;
}
