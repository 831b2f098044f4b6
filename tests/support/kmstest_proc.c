/* Test support: kmsd processes and requests to them (kmstest_proc.h). */
#include "kmstest_proc.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "replication/replication.h"

#define KMSTEST_MAX_EXTRA 32

/* Upper bound for a kmsd to come up or to start serving. Generous on purpose: under ASan on a
 * loaded machine a start takes seconds; an idle machine never waits this long, the loops stop
 * as soon as the node answers. */
#define KMSTEST_READY_MS 120000

int kmstest_rpc_timeout_ms = 10000;

/* Whether port is free on 127.0.0.1 now (bind succeeds). */
static int port_free(unsigned port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int ok;

    if (fd < 0)
        return 0;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* A free port below the kernel's ephemeral range (32768 by default): a port the kernel handed
 * out for bind(port 0) can meanwhile become the source port of any outgoing connection (a
 * flood test opens thousands), and the node started on it then fails with "address in use". */
unsigned kmstest_free_port(void)
{
    static unsigned seed, given[32], n_given; /* not handed out twice (tests take 2 before use) */

    if (seed == 0)
        seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    for (int i = 0; i < 500; i++) {
        unsigned port = 10000u + (unsigned)rand_r(&seed) % 22000u;
        int dup = 0;

        for (unsigned j = 0; j < n_given && j < 32; j++)
            dup |= given[j] == port;
        if (dup || !port_free(port))
            continue;
        given[n_given++ % 32] = port;
        return port;
    }
    return 0;
}

pid_t kmstest_kmsd_spawn(const char *tmp, const char *name, const char *sim, unsigned port,
                         const char *const *extra, const char *crash_at)
{
    char bin[512], dir[512], listen[64], log[600];
    const char *argv[13 + KMSTEST_MAX_EXTRA + 1];
    int n = 0;
    pid_t pid;

    snprintf(bin, sizeof(bin), "%s/node/kmsd", getenv("KMS_BIN_DIR"));
    snprintf(dir, sizeof(dir), "%s/%s", tmp, name);
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
    snprintf(log, sizeof(log), "%s/%s.log", tmp, name);
    argv[n++] = bin;
    argv[n++] = "--data-dir";
    argv[n++] = dir;
    argv[n++] = "--sim-dir";
    argv[n++] = sim;
    argv[n++] = "--tee";
    argv[n++] = "sim";
    argv[n++] = "--insecure-sim";
    argv[n++] = "--listen";
    argv[n++] = listen;
    argv[n++] = "--name";
    argv[n++] = name;
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        if (i >= KMSTEST_MAX_EXTRA) {
            fprintf(stderr, "  kmstest_kmsd_spawn: more than %d extra arguments\n",
                    KMSTEST_MAX_EXTRA);
            return -1;
        }
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "a", stderr);

        (void)f;
        if (crash_at != NULL)
            setenv("KMSD_TEST_CRASH_AT", crash_at, 1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kmstest_kmsd_wait_up(pid_t pid, unsigned port)
{
    char http[64], https[64];
    long deadline = now_ms() + KMSTEST_READY_MS;
    int st;

    snprintf(http, sizeof(http), "http://127.0.0.1:%u", port);
    snprintf(https, sizeof(https), "https://127.0.0.1:%u", port);
    while (now_ms() < deadline) {
        /* Any HTTP answer means the listener accepts: plain HTTP before keys (onboard,
         * sealed), HTTPS once it has keys. */
        if (kmstest_health(http) != 0 || kmstest_health(https) != 0)
            return 0;
        if (pid > 0 && waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "  kmsd (pid %d) exited before it listened on port %u\n", (int)pid,
                    port);
            return -1;
        }
        usleep(50000);
    }
    fprintf(stderr, "  kmsd did not listen on port %u within %d ms\n", port, KMSTEST_READY_MS);
    return -1;
}

pid_t kmstest_kmsd_start(const char *tmp, const char *name, const char *sim, unsigned port,
                         const char *const *extra)
{
    pid_t pid = kmstest_kmsd_spawn(tmp, name, sim, port, extra, NULL);

    if (pid > 0)
        (void)kmstest_kmsd_wait_up(pid, port);
    return pid;
}

void kmstest_kmsd_stop(pid_t pid)
{
    int st;

    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
}

int kmstest_call(const char *url, const char *method, const char *body, json_t **resp)
{
    struct kms_rpc_opts o;

    memset(&o, 0, sizeof(o));
    o.url = url;
    o.timeout_ms = kmstest_rpc_timeout_ms;
    *resp = NULL;
    return kms_rpc_call(&o, method, body, resp, NULL);
}

int kmstest_call0(const char *url, const char *method, const char *body)
{
    json_t *r = NULL;
    int rc = kmstest_call(url, method, body, &r);

    json_decref(r);
    return rc;
}

int kmstest_wait_serving(const char *url)
{
    long deadline = now_ms() + KMSTEST_READY_MS;

    while (now_ms() < deadline) {
        if (kmstest_call0(url, "GetTempCaCert", NULL) == 0)
            return 0;
        usleep(100000);
    }
    return -1;
}

/* One request; body NULL means GET. out NULL discards the answer. */
static long http(const char *url, const char *body, size_t len, char *out, size_t outlen,
                 long timeout_s)
{
    CURL *c = curl_easy_init();
    FILE *f = out != NULL ? fmemopen(out, outlen, "w") : fopen("/dev/null", "w");
    long status = 0;

    if (c == NULL || f == NULL)
        goto out;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)len);
    }
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
out:
    if (f != NULL)
        fclose(f);
    curl_easy_cleanup(c);
    return status;
}

long kmstest_http_get(const char *url, char *out, size_t outlen)
{
    return http(url, NULL, 0, out, outlen, 20L);
}

long kmstest_http_post(const char *url, const char *body, size_t len, char *out, size_t outlen)
{
    return http(url, body, len, out, outlen, 20L);
}

long kmstest_health(const char *base)
{
    char url[128];

    snprintf(url, sizeof(url), "%s/health", base);
    return http(url, NULL, 0, NULL, 0, 5L);
}

void kmstest_tmp_finish(const char *dir, int failures)
{
    char cmd[600];

    if (failures == 0) {
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot clean %s\n", dir);
    } else {
        fprintf(stderr, "logs kept in %s\n", dir);
    }
}
