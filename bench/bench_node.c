/*
 * Node benchmark: the cost of a full RA-TLS GetAppKey (GetTempCaCert, fresh key, simulated
 * attestation, mutual TLS, verification, policy, derivation) against a baseline measured in
 * the same run on the same node: GetMeta over a fresh TLS connection. Reports ops/s of each,
 * the ratio, and kmsd's resident memory idle and after the load.
 * Usage: bench_node KMSD_PATH [ITERATIONS]
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "attest/sim.h"
#include "replication/replication.h"

static struct kms_sim *sim;

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static unsigned free_port(void)
{
    struct sockaddr_in sa;
    socklen_t l = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &l) != 0)
        exit(1);
    close(fd);
    return ntohs(sa.sin_port);
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    }
    fclose(f);
    return kb;
}

static int attest_cb(void *arg, const uint8_t rd[64], struct kms_attestation **out)
{
    struct kms_runtime_event ev[2];
    uint8_t app_id[20];

    (void)arg;
    memset(app_id, 0x5a, sizeof(app_id));
    memset(ev, 0, sizeof(ev));
    ev[0].event = (char *)"app-id";
    ev[0].payload.p = app_id;
    ev[0].payload.len = 20;
    ev[1].event = (char *)"boot-mr-done";
    return kms_sim_attest(sim, NULL, rd, ev, 2, "", out);
}

static int one_get_app_key(const char *url)
{
    struct kms_rpc_opts o;
    struct kms_ra_identity ra;
    json_t *tmp = NULL, *r = NULL;
    int rc;

    memset(&o, 0, sizeof(o));
    o.url = url;
    rc = kms_rpc_call(&o, "GetTempCaCert", NULL, &tmp, NULL);
    if (rc < 0)
        return rc;
    rc = kms_ra_identity_new(json_string_value(json_object_get(tmp, "temp_ca_cert")),
                             json_string_value(json_object_get(tmp, "temp_ca_key")), attest_cb,
                             NULL, &ra);
    if (rc == 0) {
        o.ca_pem = json_string_value(json_object_get(tmp, "ca_cert"));
        o.client_cert_pem = ra.cert_pem;
        o.client_key_pem = ra.key_pem;
        rc = kms_rpc_call(&o, "GetAppKey", "{\"api_version\":1}", &r, NULL);
    }
    kms_ra_identity_clear(&ra);
    json_decref(tmp);
    json_decref(r);
    return rc;
}

int main(int argc, char **argv)
{
    char dir[] = "/tmp/kms-bench-XXXXXX", data[64], simdir[64], listen[32], url[64], ob[64];
    int iters = argc > 2 ? atoi(argv[2]) : 200;
    unsigned port = free_port();
    double t0, t_meta, t_key;
    long rss_idle, rss_load;
    json_t *r = NULL;
    struct kms_rpc_opts o;
    pid_t pid;

    if (argc < 2 || iters <= 0) {
        fprintf(stderr, "usage: bench_node KMSD_PATH [ITERATIONS]\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(data, sizeof(data), "%s/node", dir);
    snprintf(simdir, sizeof(simdir), "%s/sim", dir);
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    snprintf(ob, sizeof(ob), "http://127.0.0.1:%u", port);
    if (kms_sim_open(simdir, &sim) < 0)
        return 1;
    pid = fork();
    if (pid == 0) {
        if (freopen("/dev/null", "w", stderr) == NULL)
            _exit(127);
        execl(argv[1], argv[1], "--data-dir", data, "--sim-dir", simdir, "--tee", "sim",
              "--insecure-sim", "--listen", listen, "--auto-bootstrap-domain", "127.0.0.1",
              (char *)NULL);
        _exit(127);
    }
    memset(&o, 0, sizeof(o));
    o.url = url;
    for (int i = 0; i < 100 && kms_rpc_call(&o, "GetMeta", NULL, &r, NULL) < 0; i++)
        usleep(100000);
    json_decref(r);
    (void)ob;
    rss_idle = rss_kb(pid);

    t0 = now_s();
    for (int i = 0; i < iters; i++) {
        r = NULL;
        if (kms_rpc_call(&o, "GetMeta", NULL, &r, NULL) < 0) {
            fprintf(stderr, "GetMeta failed: %s\n", kms_err_detail());
            goto fail;
        }
        json_decref(r);
    }
    t_meta = now_s() - t0;
    t0 = now_s();
    for (int i = 0; i < iters; i++) {
        if (one_get_app_key(url) < 0) {
            fprintf(stderr, "GetAppKey failed: %s\n", kms_err_detail());
            goto fail;
        }
    }
    t_key = now_s() - t0;
    rss_load = rss_kb(pid);
    printf("iterations                 %d\n", iters);
    printf("baseline GetMeta (TLS)     %.1f ops/s\n", iters / t_meta);
    printf("RA-TLS GetAppKey flow      %.1f ops/s\n", iters / t_key);
    printf("ratio GetAppKey/GetMeta    %.3f (time per op: %.2fx the baseline)\n", t_meta / t_key,
           t_key / t_meta);
    printf("kmsd RSS idle / after load %ld kB / %ld kB (ratio %.2f)\n", rss_idle, rss_load,
           rss_idle > 0 ? (double)rss_load / (double)rss_idle : 0.0);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    kms_sim_free(sim);
    return 0;
fail:
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    return 1;
}
