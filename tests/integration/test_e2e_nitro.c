/*
 * End to end, an AWS Nitro Enclave client: `kmsctl get-keys --tee nitro` against a real kmsd
 * (simulated TDX, --insecure-sim), its evidence from the fake NSM through the real ioctl code
 * path, its HTTPS through a loopback CONNECT proxy, its app_keys.json delivered over vsock to
 * the parent's listener, byte for byte what `kmsctl get-keys --tee sim-nitro` writes to a file.
 *
 * Stand-ins, because this machine has neither CUSE nor an AF_VSOCK loopback transport
 * (tests/support/nsm_preload.c says why): kmsctl runs with nsm_preload.so in LD_PRELOAD, which
 * hands the NSM ioctl on the fake device file to the fake NSM (kmstest_nitro.c: documents
 * signed under the simulation Nitro root, PCRs those of sim-nitro) and turns AF_VSOCK
 * connections into Unix-socket ones to a receiver in this process. Everything in kmsctl, from
 * open()/ioctl() and socket(AF_VSOCK)/connect() outwards, is the production code.
 *
 * The same again without LD_PRELOAD, under kmstest_enclave (tests/support/kmstest_enclave.c: a
 * seccomp user-notification supervisor answering the NSM ioctl and AF_VSOCK connect() at the
 * syscall boundary, as the kernel would), which also reaches a statically linked kmsctl: with
 * KMS_STATIC_KMSCTL set, that one runs as the root of an otherwise empty chroot (the binary and
 * an empty dev/nsm, nothing else), as in an enclave image.
 *
 * Refusals: no NSM device, a proxy that refuses (403) or is not there, no vsock listener, a
 * malformed vsock address, --sim-dir without --insecure-sim; under the supervisor: an NSM that
 * answers an error, an NSM ioctl on a file that is not the NSM, no vsock listener.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/sha.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "attest/nsm.h"
#include "common/file.h"
#include "kmstest_nitro.h"
#include "kmstest_proc.h"
#include "test.h"

#define APP_ID "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3"

static char g_tmp[256];
static char g_sim[300];
static char g_vsock[300];
static const char *g_preload;
static const char *g_enclave;
static uint8_t *g_ref; /* app_keys.json as --tee sim-nitro writes it */
static size_t g_ref_len;

/* The PCRs kms_platform_open gives sim-nitro by default (platform.c default_nitro_pcr_seed). */
static void sim_nitro_pcrs(uint8_t pcrs[3][48])
{
    static const uint8_t seed[] = "kmsd-sim-nitro-pcr";
    uint8_t in[sizeof(seed) + 1], h[64];

    for (int i = 0; i < 3; i++) {
        memcpy(in, seed, sizeof(seed));
        in[sizeof(seed)] = (uint8_t)i;
        SHA512(in, sizeof(in), h);
        memcpy(pcrs[i], h, 48);
    }
}

/* Runs `env ENV WRAP BIN get-keys ...` (BIN NULL: the build's kmsctl; WRAP e.g. the enclave
 * supervisor); returns the exit status, stderr in err. */
static int get_keys_in(const char *env, const char *wrap, const char *bin, const char *args,
                       const char *tag, char *err, size_t errlen)
{
    char kmsctl[512];
    char cmd[4096], log[512];
    const char *asan = getenv("ASAN_OPTIONS");
    uint8_t *b = NULL;
    size_t n = 0;
    int st;

    if (bin != NULL)
        snprintf(kmsctl, sizeof(kmsctl), "%s", bin);
    else
        snprintf(kmsctl, sizeof(kmsctl), "%s/cli/kmsctl", getenv("KMS_BIN_DIR"));
    snprintf(log, sizeof(log), "%s/get-keys-%s.log", g_tmp, tag);
    snprintf(cmd, sizeof(cmd),
             "env %s ASAN_OPTIONS=%s%sverify_asan_link_order=0 %s %s get-keys --kms "
             "https://127.0.0.1:%s --app-id " APP_ID " %s 2>%s",
             env, asan != NULL ? asan : "", asan != NULL ? ":" : "", wrap, kmsctl,
             getenv("KMSTEST_PORT"), args, log);
    st = system(cmd);
    err[0] = '\0';
    if (kms_file_read(log, 1u << 16, &b, &n) == 0) {
        snprintf(err, errlen, "%s", (const char *)b);
        free(b);
    }
    if (!WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* kmsctl get-keys with the interposer and env, as get_keys_in. */
static int get_keys(const char *env, const char *args, const char *tag, char *err, size_t errlen)
{
    return get_keys_in(env, "", NULL, args, tag, err, errlen);
}

/* The supervisor's command prefix for the fake NSM device `dev` (extra: more of its options). */
static void enclave_wrap(char *out, size_t cap, const char *dev, const char *extra)
{
    snprintf(out, cap, "%s --nsm %s --vsock-dir %s %s --", g_enclave, dev, g_vsock, extra);
}

static void test_nitro_get_keys(struct kmstest_nsm *nsm)
{
    struct kmstest_proxy px;
    struct kmstest_vsock_rx rx;
    char args[2048], env[1024], err[8192], ref_path[400];
    uint8_t *ref = NULL;
    size_t ref_len = 0;

    /* the reference: the simulated Nitro client writing a file */
    snprintf(ref_path, sizeof(ref_path), "%s/keys-sim-nitro.json", g_tmp);
    snprintf(args, sizeof(args), "--tee sim-nitro --insecure-sim --sim-dir %s --out %s", g_sim,
             ref_path);
    CHECK(get_keys("", args, "sim-nitro", err, sizeof(err)) == 0);
    CHECK_OK(kms_file_read(ref_path, 1u << 20, &ref, &ref_len));

    /* the enclave: fake NSM, CONNECT proxy, vsock delivery to CID 3 port 9999 */
    CHECK(kmstest_proxy_start(&px, 0) == 0);
    CHECK(kmstest_vsock_rx_start(&rx, g_vsock, 3, 9999) == 0);
    snprintf(env, sizeof(env), "LD_PRELOAD=%s KMS_FAKE_NSM=%s KMS_FAKE_VSOCK_DIR=%s", g_preload,
             nsm->dev, g_vsock);
    snprintf(args, sizeof(args),
             "--tee nitro --nsm-dev %s --proxy http://127.0.0.1:%u --out vsock:3:9999 "
             "--insecure-sim --sim-dir %s",
             nsm->dev, px.port, g_sim);
    CHECK(get_keys(env, args, "nitro", err, sizeof(err)) == 0);
    CHECK(strstr(err, "keys sent to vsock CID 3 port 9999") != NULL);
    kmstest_vsock_rx_finish(&rx);
    CHECK(rx.data != NULL && ref != NULL && rx.len == ref_len &&
          memcmp(rx.data, ref, ref_len) == 0);
    if (rx.data == NULL || ref == NULL || rx.len != ref_len || memcmp(rx.data, ref, ref_len) != 0)
        fprintf(stderr, "  vsock got %zu bytes, sim-nitro file %zu; kmsctl said:\n%s\n", rx.len,
                ref_len, err);
    /* GetTempCaCert through one tunnel; GetAppKey and GetMeta share the RA-TLS one */
    CHECK(px.n_connects == 2);
    /* the NSM was asked once, the reference's way */
    CHECK(nsm->n_requests == 1 && nsm->last_ok_shape && nsm->last_user_data_len == 64 &&
          nsm->last_nonce_null && nsm->last_public_key_null);
    free(rx.data);

    /* https_proxy from the environment, file output, no server attestation check (the
     * production default without --sim-dir): same keys, through the proxy again */
    {
        char out[400];
        uint8_t *b = NULL;
        size_t n = 0;

        snprintf(out, sizeof(out), "%s/keys-nitro-env.json", g_tmp);
        snprintf(env, sizeof(env), "LD_PRELOAD=%s KMS_FAKE_NSM=%s https_proxy=http://127.0.0.1:%u",
                 g_preload, nsm->dev, px.port);
        snprintf(args, sizeof(args), "--tee nitro --nsm-dev %s --out %s", nsm->dev, out);
        CHECK(get_keys(env, args, "nitro-env", err, sizeof(err)) == 0);
        CHECK(px.n_connects == 4);
        CHECK_OK(kms_file_read(out, 1u << 20, &b, &n));
        CHECK(b != NULL && ref != NULL && n == ref_len && memcmp(b, ref, n) == 0);
        free(b);
        /* --proxy "" overrides the environment: straight to the KMS */
        snprintf(args, sizeof(args), "--tee nitro --nsm-dev %s --out %s --proxy ''", nsm->dev, out);
        CHECK(get_keys(env, args, "nitro-noproxy", err, sizeof(err)) == 0);
        CHECK(px.n_connects == 4);
    }
    kmstest_proxy_stop(&px);
    g_ref = ref; /* for the cases under the enclave supervisor */
    g_ref_len = ref_len;
}

/* Did the vsock receiver get exactly the sim-nitro keys? */
static int got_ref_keys(const struct kmstest_vsock_rx *rx, const char *err)
{
    int ok = rx->data != NULL && g_ref != NULL && rx->len == g_ref_len &&
             memcmp(rx->data, g_ref, g_ref_len) == 0;

    if (!ok)
        fprintf(stderr, "  vsock got %zu bytes, sim-nitro file %zu; kmsctl said:\n%s\n", rx->len,
                g_ref_len, err);
    return ok;
}

/* The dynamic kmsctl under kmstest_enclave, no LD_PRELOAD: the NSM ioctl and the AF_VSOCK
 * connect() are answered at the syscall boundary; same keys as sim-nitro over vsock. */
static void test_enclave_get_keys(struct kmstest_nsm *nsm)
{
    struct kmstest_proxy px;
    struct kmstest_vsock_rx rx;
    char args[2048], wrap[1024], err[8192];
    int before = nsm->n_requests;

    CHECK(kmstest_proxy_start(&px, 0) == 0);
    CHECK(kmstest_vsock_rx_start(&rx, g_vsock, 3, 9999) == 0);
    enclave_wrap(wrap, sizeof(wrap), nsm->dev, "");
    snprintf(args, sizeof(args),
             "--tee nitro --nsm-dev %s --proxy http://127.0.0.1:%u --out vsock:3:9999 "
             "--insecure-sim --sim-dir %s",
             nsm->dev, px.port, g_sim);
    CHECK(get_keys_in("-u LD_PRELOAD", wrap, NULL, args, "enclave", err, sizeof(err)) == 0);
    CHECK(strstr(err, "keys sent to vsock CID 3 port 9999") != NULL);
    kmstest_vsock_rx_finish(&rx);
    CHECK(got_ref_keys(&rx, err));
    free(rx.data);
    CHECK(px.n_connects == 2);
    CHECK(nsm->n_requests == before + 1 && nsm->last_ok_shape && nsm->last_user_data_len == 64);
    kmstest_proxy_stop(&px);
}

/* Counts the entries of dir (without . and ..); -1 when it cannot be read. */
static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    for (;;) {
        e = readdir(d);
        if (e == NULL)
            break;
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    }
    closedir(d);
    return n;
}

/* The static kmsctl ($KMS_STATIC_KMSCTL) as the root of an empty chroot: only /kmsctl and an
 * empty /dev/nsm; the fake NSM's socket and the vsock receiver stay outside. 1 when run, 0 when
 * there is no static kmsctl to run. */
static int test_enclave_chroot(struct kmstest_nsm *nsm)
{
    const char *bin = getenv("KMS_STATIC_KMSCTL");
    struct kmstest_proxy px;
    struct kmstest_vsock_rx rx;
    char root[400], path[500], extra[600], wrap[2048], args[1024], err[8192], sock[300];
    uint8_t *b = NULL;
    size_t n = 0;
    int before = nsm->n_requests;

    if (bin == NULL || bin[0] == '\0') {
        printf("skipped: no static kmsctl (set KMS_STATIC_KMSCTL)\n");
        return 0;
    }
    if (geteuid() != 0) {
        printf("skipped: static kmsctl in a chroot needs root (chroot)\n");
        return 0;
    }
    snprintf(root, sizeof(root), "%s/enclave-root", g_tmp);
    CHECK(mkdir(root, 0755) == 0);
    CHECK_OK(kms_file_read(bin, 64u << 20, &b, &n));
    snprintf(path, sizeof(path), "%s/kmsctl", root);
    CHECK_OK(kms_file_write_atomic(path, b, n, 0755));
    free(b);
    snprintf(path, sizeof(path), "%s/dev", root);
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof(path), "%s/dev/nsm", root);
    CHECK_OK(kms_file_write_atomic(path, "", 0, 0644));

    CHECK(kmstest_proxy_start(&px, 0) == 0);
    CHECK(kmstest_vsock_rx_start(&rx, g_vsock, 3, 9999) == 0);
    snprintf(sock, sizeof(sock), "%s.sock", nsm->dev);
    snprintf(extra, sizeof(extra), "--nsm-sock %s --chroot %s", sock, root);
    enclave_wrap(wrap, sizeof(wrap), path, extra);
    /* paths are the enclave's: /kmsctl, /dev/nsm; no --sim-dir (it is not in the image) */
    snprintf(args, sizeof(args),
             "--tee nitro --nsm-dev /dev/nsm --proxy http://127.0.0.1:%u --out vsock:3:9999",
             px.port);
    CHECK(get_keys_in("-i", wrap, "/kmsctl", args, "enclave-chroot", err, sizeof(err)) == 0);
    CHECK(strstr(err, "keys sent to vsock CID 3 port 9999") != NULL);
    kmstest_vsock_rx_finish(&rx);
    CHECK(got_ref_keys(&rx, err));
    free(rx.data);
    CHECK(px.n_connects == 2);
    CHECK(nsm->n_requests == before + 1);
    kmstest_proxy_stop(&px);
    /* and the image stayed empty: the binary and dev/nsm, nothing written next to them */
    CHECK(dir_entries(root) == 2);
    snprintf(path, sizeof(path), "%s/dev", root);
    CHECK(dir_entries(path) == 1);
    return 1;
}

/* Under the supervisor: the NSM's error, an ioctl on a file that is not the NSM, no vsock
 * listener; each the message kmsctl gives with the real device / the interposer. */
static void test_enclave_refusals(struct kmstest_nsm *nsm)
{
    char args[2048], wrap[1024], env[1024], err[8192], out[400], other[400];

    snprintf(out, sizeof(out), "%s/keys-enclave-refused.json", g_tmp);
    enclave_wrap(wrap, sizeof(wrap), nsm->dev, "");
    snprintf(args, sizeof(args), "--tee nitro --nsm-dev %s --out %s", nsm->dev, out);
    /* the NSM answers {"Error": "InvalidArgument"}: the same text as through the interposer */
    nsm->mode = KMSTEST_NSM_ERROR;
    snprintf(env, sizeof(env), "LD_PRELOAD=%s KMS_FAKE_NSM=%s", g_preload, nsm->dev);
    CHECK(get_keys(env, args, "nsm-error-preload", err, sizeof(err)) == 1);
    CHECK(strstr(err, "the NSM refused the attestation request: InvalidArgument") != NULL);
    CHECK(get_keys_in("-u LD_PRELOAD", wrap, NULL, args, "nsm-error-enclave", err, sizeof(err)) ==
          1);
    CHECK(strstr(err, "the NSM refused the attestation request: InvalidArgument") != NULL);
    /* the NSM's errno travels back as the ioctl's */
    nsm->mode = KMSTEST_NSM_NOT_NSM;
    CHECK(get_keys_in("-u LD_PRELOAD", wrap, NULL, args, "nsm-enotty-enclave", err, sizeof(err)) ==
          1);
    CHECK(strstr(err, "is not a Nitro Security Module (ioctl: Inappropriate ioctl for device)") !=
          NULL);
    nsm->mode = KMSTEST_NSM_OK;
    CHECK(!kms_file_exists(out));
    /* only an fd on the --nsm file reaches the fake NSM: another empty file is the kernel's,
     * whose ioctl on a regular file fails with ENOTTY */
    snprintf(other, sizeof(other), "%s/not-nsm", g_tmp);
    CHECK_OK(kms_file_write_atomic(other, "", 0, 0644));
    snprintf(args, sizeof(args), "--tee nitro --nsm-dev %s --out %s", other, out);
    CHECK(get_keys_in("-u LD_PRELOAD", wrap, NULL, args, "not-nsm-enclave", err, sizeof(err)) == 1);
    CHECK(strstr(err, "is not a Nitro Security Module") != NULL);
    /* no vsock listener: ECONNREFUSED, as a vsock peer without one */
    snprintf(args, sizeof(args), "--tee nitro --nsm-dev %s --out vsock:3:9998", nsm->dev);
    CHECK(get_keys_in("-u LD_PRELOAD", wrap, NULL, args, "vsock-absent-enclave", err,
                      sizeof(err)) == 1);
    CHECK(strstr(err, "nobody listens on vsock CID 3 port 9998") != NULL);
}

static void test_refusals(struct kmstest_nsm *nsm)
{
    struct kmstest_proxy px;
    char args[2048], env[1024], err[8192], out[400];
    int before;

    snprintf(out, sizeof(out), "%s/keys-refused.json", g_tmp);
    /* no NSM device: the default /dev/nsm does not exist on this machine */
    if (access("/dev/nsm", F_OK) != 0) {
        snprintf(args, sizeof(args), "--tee nitro --out %s", out);
        CHECK(get_keys("", args, "no-nsm", err, sizeof(err)) == 1);
        CHECK(strstr(err, "no /dev/nsm: not inside a Nitro Enclave") != NULL);
    }
    /* a proxy that refuses the tunnel */
    CHECK(kmstest_proxy_start(&px, 1) == 0);
    snprintf(env, sizeof(env), "LD_PRELOAD=%s KMS_FAKE_NSM=%s", g_preload, nsm->dev);
    snprintf(args, sizeof(args), "--tee nitro --nsm-dev %s --proxy http://127.0.0.1:%u --out %s",
             nsm->dev, px.port, out);
    CHECK(get_keys(env, args, "proxy-403", err, sizeof(err)) == 1);
    CHECK(strstr(err, "403") != NULL);
    CHECK(strstr(err, "no KMS served the keys") != NULL);
    kmstest_proxy_stop(&px);
    /* a proxy that is not there */
    snprintf(args, sizeof(args), "--tee nitro --nsm-dev %s --proxy http://127.0.0.1:%u --out %s",
             nsm->dev, kmstest_free_port(), out);
    CHECK(get_keys(env, args, "proxy-absent", err, sizeof(err)) == 1);
    CHECK(strstr(err, "cannot reach") != NULL);
    CHECK(!kms_file_exists(out));
    /* no vsock listener: refused before the NSM or the KMS are asked */
    before = nsm->n_requests;
    snprintf(env, sizeof(env), "LD_PRELOAD=%s KMS_FAKE_NSM=%s KMS_FAKE_VSOCK_DIR=%s", g_preload,
             nsm->dev, g_vsock);
    snprintf(args, sizeof(args), "--tee nitro --nsm-dev %s --out vsock:3:9998", nsm->dev);
    CHECK(get_keys(env, args, "vsock-absent", err, sizeof(err)) == 1);
    CHECK(strstr(err, "nobody listens on vsock CID 3 port 9998") != NULL);
    CHECK(nsm->n_requests == before);
    /* the real AF_VSOCK (no interposer): no parent here, so a clear failure either way */
    snprintf(args, sizeof(args), "--tee nitro --nsm-dev %s --out vsock:3:9998", nsm->dev);
    CHECK(get_keys("", args, "vsock-real", err, sizeof(err)) == 1);
    CHECK(strstr(err, "vsock") != NULL);
    /* malformed addresses and unsafe combinations are usage errors */
    snprintf(args, sizeof(args), "--tee nitro --out vsock:3");
    CHECK(get_keys("", args, "vsock-bad", err, sizeof(err)) == 2);
    CHECK(strstr(err, "expected vsock:CID:PORT") != NULL);
    snprintf(args, sizeof(args), "--tee nitro --sim-dir %s --out %s", g_sim, out);
    CHECK(get_keys("", args, "sim-dir", err, sizeof(err)) == 2);
    CHECK(strstr(err, "add --insecure-sim") != NULL);
}

/* A program to run under kmstest_enclave (this binary with --probe MODE [DEV]), for the
 * supervisor's own checks; its exit status is the answer. */
static int probe(const char *mode, const char *dev)
{
    if (strcmp(mode, "native") == 0)
        return syscall(SYS_getpid) == getpid() ? 0 : 1;
    if (strcmp(mode, "hang") == 0) {
        pause(); /* until the supervisor's deadline kills it */
        return 7;
    }
#if defined(__x86_64__)
    if (strcmp(mode, "x32") == 0) {
        (void)syscall(SYS_getpid | 0x40000000L); /* the x32 ABI's getpid */
        return 0;
    }
    if (strcmp(mode, "i386") == 0) {
        long r;

        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory"); /* i386 getpid */
        return r == (long)getpid() ? 0 : 2;
    }
#endif
    if (dev != NULL && strncmp(mode, "nsm-", 4) == 0) {
        uint8_t req[KMS_NSM_REQUEST_MAX + 1], resp[4];
        struct kms_nsm_raw raw;
        int fd = open(dev, O_RDWR | O_CLOEXEC), rc;

        if (fd < 0)
            return 3;
        memset(req, 0, sizeof(req));
        memset(resp, 0, sizeof(resp));
        raw.request.addr = (uint64_t)(uintptr_t)req;
        raw.request.len = strcmp(mode, "nsm-big") == 0 ? sizeof(req) : 1;
        raw.response.addr = (uint64_t)(uintptr_t)resp;
        raw.response.len = sizeof(resp);
        rc = ioctl(fd, KMS_NSM_IOCTL_RAW, &raw);
        close(fd);
        if (strcmp(mode, "nsm-big") == 0)
            return rc != 0 && errno == EMSGSIZE ? 0 : 4;
        /* nsm-short: the answer ({"Error": ...}, a1 65 'E' 'r' ...) cut to the buffer */
        return rc == 0 && raw.response.len == 4 &&
                       memcmp(resp,
                              "\xa1\x65"
                              "Er",
                              4) == 0
                   ? 0
                   : 5;
    }
    return 6;
}

/* Runs `kmstest_enclave --nsm dev ... -- this --probe mode dev`; its exit status. */
static int run_probe(const char *self, const char *dev, const char *extra, const char *mode)
{
    char cmd[2048];
    int st;

    snprintf(cmd, sizeof(cmd), "%s --nsm %s --vsock-dir %s %s -- %s --probe %s %s", g_enclave, dev,
             g_vsock, extra, self, mode, dev);
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The supervisor itself: exit status passthrough, other syscall ABIs killed, the NSM request
 * bound, the response cut to the caller's buffer, its deadline. */
static void test_enclave_supervisor(const char *self, struct kmstest_nsm *nsm)
{
    char cmd[1024];
    int before = nsm->n_requests, st;

    CHECK(run_probe(self, nsm->dev, "", "native") == 0);
    CHECK(run_probe(self, nsm->dev, "", "bogus") == 6);
#if defined(__x86_64__)
    /* x32 and i386 syscalls share no numbers with the filter's: killed by SIGSYS (128 + 31) */
    CHECK(run_probe(self, nsm->dev, "", "x32") == 128 + SIGSYS);
    /* i386 emulation may be configured out: then there is no such ABI to refuse */
    snprintf(cmd, sizeof(cmd), "%s --probe i386 >/dev/null 2>&1", self);
    st = system(cmd);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        CHECK(run_probe(self, nsm->dev, "", "i386") == 128 + SIGSYS);
#endif
    /* a request over the NSM's 4 KiB: EMSGSIZE, the fake NSM not asked */
    CHECK(run_probe(self, nsm->dev, "", "nsm-big") == 0);
    CHECK(nsm->n_requests == before);
    /* a 4-byte response buffer: the answer cut to it, response.len = 4 */
    CHECK(run_probe(self, nsm->dev, "", "nsm-short") == 0);
    CHECK(nsm->n_requests == before + 1);
    /* usage errors and the deadline */
    snprintf(cmd, sizeof(cmd), "%s --vsock-dir %s -- true 2>/dev/null", g_enclave, g_vsock);
    st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 125);
    CHECK(run_probe(self, nsm->dev, "--timeout-s 1 2>/dev/null", "hang") == 124);
}

int main(int argc, char **argv)
{
    char tmpl[] = "/tmp/kms-e2e-nitro-XXXXXX";
    unsigned port = kmstest_free_port();
    char ob[64], url[64], portstr[16], self[PATH_MAX];
    struct kmstest_nsm nsm;
    uint8_t pcrs[3][48];
    json_t *r = NULL;
    pid_t pid;

    if (argc >= 3 && strcmp(argv[1], "--probe") == 0)
        return probe(argv[2], argc > 3 ? argv[3] : NULL);
    if (argc < 3 || getenv("KMS_BIN_DIR") == NULL || mkdtemp(tmpl) == NULL)
        return 1;
    g_preload = argv[1];
    g_enclave = argv[2];
    snprintf(g_tmp, sizeof(g_tmp), "%s", tmpl);
    snprintf(g_sim, sizeof(g_sim), "%s/sim", g_tmp);
    snprintf(g_vsock, sizeof(g_vsock), "%s/vsock", g_tmp);
    CHECK(mkdir(g_vsock, 0700) == 0);
    {
        ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);

        CHECK(k > 0);
        self[k > 0 ? k : 0] = '\0';
    }
    snprintf(portstr, sizeof(portstr), "%u", port);
    setenv("KMSTEST_PORT", portstr, 1);
    snprintf(ob, sizeof(ob), "http://127.0.0.1:%u", port);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    pid = kmstest_kmsd_start(g_tmp, "nitro", g_sim, port, NULL);
    /* readiness, not time: a sanitizer build on a loaded machine binds late */
    for (int i = 0; i < 300 && kmstest_health(ob) == 0; i++)
        usleep(100000);
    CHECK_OK(kmstest_call(ob, "Bootstrap", "{\"domain\":\"127.0.0.1\"}", &r));
    json_decref(r);
    r = NULL;
    CHECK_OK(kmstest_call(ob, "Finish", NULL, &r));
    json_decref(r);
    CHECK_OK(kmstest_wait_serving(url));
    sim_nitro_pcrs(pcrs);
    CHECK(kmstest_nsm_start(&nsm, g_tmp, g_sim, (const uint8_t(*)[48])pcrs) == 0);
    {
        int before = kms_test_failures;

        test_nitro_get_keys(&nsm);
        printf("%s test_nitro_get_keys\n", kms_test_failures == before ? "ok  " : "FAIL");
        before = kms_test_failures;
        test_refusals(&nsm);
        printf("%s test_refusals\n", kms_test_failures == before ? "ok  " : "FAIL");
        before = kms_test_failures;
        test_enclave_get_keys(&nsm);
        printf("%s test_enclave_get_keys\n", kms_test_failures == before ? "ok  " : "FAIL");
        before = kms_test_failures;
        if (test_enclave_chroot(&nsm))
            printf("%s test_enclave_chroot\n", kms_test_failures == before ? "ok  " : "FAIL");
        before = kms_test_failures;
        test_enclave_supervisor(self, &nsm);
        printf("%s test_enclave_supervisor\n", kms_test_failures == before ? "ok  " : "FAIL");
        before = kms_test_failures;
        test_enclave_refusals(&nsm);
        printf("%s test_enclave_refusals\n", kms_test_failures == before ? "ok  " : "FAIL");
    }
    kmstest_nsm_stop(&nsm);
    free(g_ref);
    kmstest_kmsd_stop(pid);
    kmstest_tmp_finish(g_tmp, kms_test_failures);
    TEST_MAIN_END();
}
