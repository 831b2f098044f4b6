/*
 * Onboard refusals and crash safety with real kmsd processes. Every refused onboarding must
 * name its precise cause and write no key: the node stays uninitialized (/health 503) and,
 * once stopped, its keystore holds no identity. Cases: a source whose RPC certificate has no
 * attestation (an in-process TLS server), a source attested by a root the new node does not
 * trust, a source denied by the new node's own bootAuth/kms policy, a new node denied by the
 * source's policy, pinned identity mismatches (k256 and CA SPKI), a node that already has
 * keys, an unreachable and a hanging source (clear error within the onboarding timeout).
 * Crash test: KMSD_TEST_CRASH_AT kills the onboarding node (SIGKILL) at each step; after a
 * restart it either serves the cluster identity or onboards again cleanly.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "attest/sim.h"
#include "common/hex.h"
#include "common/crypto/crypto.h"
#include "node/http.h"
#include "node/node.h"
#include "replication/replication.h"
#include "storage/storage.h"
#include "kmstest_proc.h"
#include "test.h"

static char g_tmp[256];
static char g_sim[300];       /* the cluster's simulated TEE */
static char g_sim_other[300]; /* a TEE root nobody else trusts */

struct node {
    char name[32];
    char dir[300];
    char http[64];  /* onboard URL */
    char https[64]; /* KMS URL */
    unsigned port;
    pid_t pid;
};

/* Starts kmsd; crash_at sets KMSD_TEST_CRASH_AT. Waits until /health answers (HTTP or HTTPS). */
static void spawn(struct node *nd, const char *name, const char *sim, const char *const *extra,
                  const char *crash_at)
{
    if (nd->port == 0) {
        snprintf(nd->name, sizeof(nd->name), "%s", name);
        snprintf(nd->dir, sizeof(nd->dir), "%s/%s", g_tmp, name);
        nd->port = kmstest_free_port();
        snprintf(nd->http, sizeof(nd->http), "http://127.0.0.1:%u", nd->port);
        snprintf(nd->https, sizeof(nd->https), "https://127.0.0.1:%u", nd->port);
    }
    nd->pid = kmstest_kmsd_spawn(g_tmp, nd->name, sim, nd->port, extra, crash_at);
    if (kmstest_kmsd_wait_up(nd->pid, nd->port) < 0)
        fprintf(stderr, "  %s did not start\n", nd->name);
}

static void stop(struct node *nd)
{
    kmstest_kmsd_stop(nd->pid);
    nd->pid = 0;
}

/* Finish: the node answers before it closes its onboard listener, so the reply must arrive.
 * The caller then waits for HTTPS with wait_serving. */
static int finish(const struct node *nd)
{
    return kmstest_call0(nd->http, "Finish", NULL);
}

/* Polls /health until serving (200) or degraded (207), for at most 120 s (ASan, loaded host). */
static int wait_serving(const char *url)
{
    time_t end = time(NULL) + 120;

    while (time(NULL) < end) {
        long st = kmstest_health(url);

        if (st == 200 || st == 207)
            return 0;
        usleep(100000);
    }
    return -1;
}

/* The k256 public key a serving node reports (hex, caller-sized). */
static void meta_k256(const char *url, char out[80])
{
    json_t *m = NULL;

    out[0] = '\0';
    CHECK_OK(kmstest_call(url, "GetMeta", NULL, &m));
    if (json_is_string(json_object_get(m, "k256_pubkey")))
        snprintf(out, 80, "%s", json_string_value(json_object_get(m, "k256_pubkey")));
    json_decref(m);
}

static int onboard(const struct node *nd, const char *source)
{
    char body[300];

    snprintf(body, sizeof(body), "{\"source_url\":\"%s\",\"domain\":\"127.0.0.1\"}", source);
    return kmstest_call0(nd->http, "Onboard", body);
}

/* No key written: uninitialized while running, and no identity in the stopped keystore. */
static void assert_no_keys(struct node *nd)
{
    struct kms_store *st = NULL;

    CHECK(kmstest_health(nd->http) == 503);
    stop(nd);
    CHECK_OK(kms_store_open(nd->dir, NULL, &st));
    CHECK(st != NULL && kms_store_has_identity(st) == 0);
    kms_store_close(st);
}

/* Expects a refused Onboard with the given detail, then no keys. */
static void refused(struct node *nd, const char *source, const char *detail)
{
    CHECK_RC(onboard(nd, source), KMS_ERR_REPL_RPC);
    CHECK_DETAIL(detail);
    assert_no_keys(nd);
}

/* ---- the auth-api webhook: denies bootAuth/kms for one instance id */

static char g_deny_instance[41];

static void hook(void *arg, const struct kms_http_req *req, struct kms_http_resp *resp)
{
    (void)arg;
    if (strcmp(req->method, "GET") == 0) {
        kms_http_resp_text(resp, 200, "application/json",
                           "{\"status\":\"ok\",\"kmsContractAddr\":\"0x00\",\"gatewayAppId\":"
                           "\"gw\",\"chainId\":1,\"appImplementation\":\"0x00\"}");
    } else if (g_deny_instance[0] != '\0' && strstr((const char *)req->body, g_deny_instance)) {
        kms_http_resp_text(resp, 200, "application/json",
                           "{\"isAllowed\":false,\"gatewayAppId\":\"\",\"reason\":"
                           "\"KMS instance not registered\"}");
    } else {
        kms_http_resp_text(resp, 200, "application/json",
                           "{\"isAllowed\":true,\"gatewayAppId\":\"gw\",\"reason\":\"\"}");
    }
}

/* The instance id a simulated kmsd attests: the first 20 bytes of sha256(data dir). */
static void instance_of(const struct node *nd, char out[41])
{
    uint8_t h[32];

    SHA256((const uint8_t *)nd->dir, strlen(nd->dir), h);
    kms_hex_encode(h, 20, out);
}

/* ---- a TLS "source" whose kms:rpc certificate carries no attestation */

static char g_fake_tmp_cert[4096], g_fake_tmp_key[4096], g_fake_ca[4096];

static void fake_source(void *arg, const struct kms_http_req *req, struct kms_http_resp *resp)
{
    const char *m = kms_prpc_method(req->path, "KMS");

    (void)arg;
    if (m != NULL && strcmp(m, "GetTempCaCert") == 0) {
        kms_prpc_ok(resp, json_pack("{s:s,s:s,s:s}", "temp_ca_cert", g_fake_tmp_cert, "temp_ca_key",
                                    g_fake_tmp_key, "ca_cert", g_fake_ca));
    } else {
        /* Root keys must never be requested from an unattested source. */
        kms_prpc_ok(resp, json_pack("{s:s,s:[]}", "temp_ca_key", "x", "keys"));
    }
}

static struct kms_http_server *start_unattested_source(char url[64])
{
    struct kms_http_server *srv = NULL;
    struct kms_http_tls tls;
    struct kms_cert_params p;
    EVP_PKEY *ca = NULL, *tmp = NULL, *key = NULL;
    X509 *ca_cert = NULL, *tmp_cert = NULL, *cert = NULL;
    char *s1 = NULL, *s2 = NULL, *s3 = NULL, *s4 = NULL, *s5 = NULL, chain[8192];
    const char *san[1] = {"127.0.0.1"};

    memset(&p, 0, sizeof(p));
    CHECK_OK(kms_p256_generate(&ca));
    CHECK_OK(kms_p256_generate(&tmp));
    CHECK_OK(kms_p256_generate(&key));
    p.cn = "Dstack KMS CA";
    p.is_ca = 1;
    p.path_len = 1;
    CHECK_OK(kms_cert_issue(&p, ca, ca, NULL, &ca_cert));
    p.cn = "Dstack Client Temp CA";
    p.path_len = 0;
    CHECK_OK(kms_cert_issue(&p, tmp, tmp, NULL, &tmp_cert));
    memset(&p, 0, sizeof(p));
    p.cn = "127.0.0.1";
    p.san_dns = san;
    p.n_san = 1;
    p.path_len = -1;
    p.usage = "kms:rpc"; /* a KMS RPC certificate in every respect but the attestation */
    CHECK_OK(kms_cert_issue(&p, key, ca, ca_cert, &cert));
    CHECK_OK(kms_cert_to_pem(ca_cert, &s1));
    CHECK_OK(kms_cert_to_pem(tmp_cert, &s2));
    CHECK_OK(kms_pkey_to_pem(tmp, &s3));
    CHECK_OK(kms_cert_to_pem(cert, &s4));
    CHECK_OK(kms_pkey_to_pem(key, &s5));
    snprintf(g_fake_ca, sizeof(g_fake_ca), "%s", s1);
    snprintf(g_fake_tmp_cert, sizeof(g_fake_tmp_cert), "%s", s2);
    snprintf(g_fake_tmp_key, sizeof(g_fake_tmp_key), "%s", s3);
    snprintf(chain, sizeof(chain), "%s%s", s4, s1);
    memset(&tls, 0, sizeof(tls));
    tls.cert_pem = chain;
    tls.key_pem = s5;
    tls.client_ca_pem = s2;
    CHECK_OK(kms_http_start("127.0.0.1:0", &tls, fake_source, NULL, &srv));
    snprintf(url, 64, "https://127.0.0.1:%u", srv != NULL ? kms_http_port(srv) : 0);
    EVP_PKEY_free(ca);
    EVP_PKEY_free(tmp);
    EVP_PKEY_free(key);
    X509_free(ca_cert);
    X509_free(tmp_cert);
    X509_free(cert);
    free(s1);
    free(s2);
    free(s3);
    free(s4);
    free(s5);
    return srv;
}

/* ---- the tests */

static struct node g_src; /* the cluster: bootstrapped, dev auth */
static char g_src_k256[80];

static void bootstrap(struct node *nd, const char *name, const char *sim, const char *const *extra)
{
    spawn(nd, name, sim, extra, NULL);
    CHECK_OK(kmstest_call0(nd->http, "Bootstrap", "{\"domain\":\"127.0.0.1\"}"));
    CHECK_OK(finish(nd));
    CHECK_OK(wait_serving(nd->https));
}

/* The source's certificate has kms:rpc but no attestation: refused in the handshake. */
static void test_source_without_attestation(void)
{
    char url[64];
    struct kms_http_server *srv = start_unattested_source(url);
    struct node n;

    memset(&n, 0, sizeof(n));
    spawn(&n, "new-noatt", g_sim, NULL, NULL);
    refused(&n, url, "server certificate carries no attestation");
    kms_http_stop(srv);
}

/* The source's attestation chains to a simulation root the new node does not trust. */
static void test_source_attestation_fails(void)
{
    struct node other, n;

    memset(&other, 0, sizeof(other));
    memset(&n, 0, sizeof(n));
    bootstrap(&other, "src-foreign", g_sim_other, NULL);
    spawn(&n, "new-foreign", g_sim, NULL, NULL);
    refused(&n, other.https, "server attestation does not verify");
    stop(&other);
}

/* The new node's own bootAuth/kms policy denies the source (its self-check is allowed). */
static void test_source_denied_by_new_node(void)
{
    struct kms_http_server *h = NULL;
    char hook_url[64];
    const char *extra[] = {"--auth", "webhook", "--auth-url", hook_url, NULL};
    struct node n;

    memset(&n, 0, sizeof(n));
    CHECK_OK(kms_http_start("127.0.0.1:0", NULL, hook, NULL, &h));
    snprintf(hook_url, sizeof(hook_url), "http://127.0.0.1:%u", kms_http_port(h));
    instance_of(&g_src, g_deny_instance);
    spawn(&n, "new-policy", g_sim, extra, NULL);
    refused(&n, g_src.https,
            "source KMS denied by this node's policy: KMS instance not registered");
    g_deny_instance[0] = '\0';
    kms_http_stop(h);
}

/* The source's policy denies the new node: GetKmsKey refused, nothing stored. */
static void test_caller_denied_by_source(void)
{
    struct kms_http_server *h = NULL;
    char hook_url[64];
    const char *extra[] = {"--auth", "webhook", "--auth-url", hook_url, NULL};
    struct node src, n;

    memset(&src, 0, sizeof(src));
    memset(&n, 0, sizeof(n));
    CHECK_OK(kms_http_start("127.0.0.1:0", NULL, hook, NULL, &h));
    snprintf(hook_url, sizeof(hook_url), "http://127.0.0.1:%u", kms_http_port(h));
    bootstrap(&src, "src-policy", g_sim, extra);
    spawn(&n, "new-denied", g_sim, NULL, NULL);
    instance_of(&n, g_deny_instance);
    refused(&n, src.https, "Boot denied: KMS instance not registered");
    g_deny_instance[0] = '\0';
    stop(&src);
    kms_http_stop(h);
}

/* Pinned identity: another k256 key or another CA SPKI than the source's is refused. */
static void test_pinned_mismatch(void)
{
    const char *pin_k[] = {"--expect-k256-pubkey",
                           "02"
                           "1111111111111111111111111111111111111111111111111111111111111111",
                           NULL};
    const char *pin_c[] = {"--expect-ca-spki",
                           "3059301306072a8648ce3d020106082a8648ce3d03010703"
                           "4200041111",
                           NULL};
    const char *pin_ok[] = {"--expect-k256-pubkey", g_src_k256 + 2, NULL};
    struct node a, b, c;
    char k[80];

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    spawn(&a, "new-pin-k", g_sim, pin_k, NULL);
    refused(&a, g_src.https, "k256 public key differs from --expect-k256-pubkey");
    spawn(&b, "new-pin-ca", g_sim, pin_c, NULL);
    refused(&b, g_src.https, "root CA key differs from --expect-ca-spki");
    /* The correct pin is accepted (so the refusals above are about the value). */
    spawn(&c, "new-pin-ok", g_sim, pin_ok, NULL);
    CHECK_OK(onboard(&c, g_src.https));
    CHECK_OK(finish(&c));
    CHECK_OK(wait_serving(c.https));
    meta_k256(c.https, k);
    CHECK(strcmp(k, g_src_k256) == 0);
    stop(&c);
}

/* A node with keys refuses Onboard, whether it onboarded or bootstrapped; keys unchanged. */
static void test_already_has_keys(void)
{
    struct node a, b, other;
    char k[80], other_k[80];

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&other, 0, sizeof(other));
    bootstrap(&other, "src-other", g_sim, NULL);
    meta_k256(other.https, other_k);
    spawn(&a, "new-twice", g_sim, NULL, NULL);
    CHECK_OK(onboard(&a, g_src.https));
    CHECK_RC(onboard(&a, other.https), KMS_ERR_REPL_RPC);
    CHECK_DETAIL("this node already has keys: onboarding refused");
    CHECK_OK(finish(&a));
    CHECK_OK(wait_serving(a.https));
    meta_k256(a.https, k);
    CHECK(strcmp(k, g_src_k256) == 0); /* still the first cluster's identity */

    spawn(&b, "new-bootstrapped", g_sim, NULL, NULL);
    CHECK_OK(kmstest_call0(b.http, "Bootstrap", "{\"domain\":\"127.0.0.1\"}"));
    CHECK_RC(onboard(&b, g_src.https), KMS_ERR_REPL_RPC);
    CHECK_DETAIL("this node already has keys: onboarding refused");
    stop(&a);
    stop(&b);
    stop(&other);
}

/* Unreachable and hanging sources: a clear error, the hanging one within the 15 s timeout. */
static void test_unreachable_and_hanging(void)
{
    struct node a, b;
    char url[64];
    struct sockaddr_in sa;
    socklen_t l = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    time_t t0;

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    spawn(&a, "new-unreach", g_sim, NULL, NULL);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", kmstest_free_port());
    refused(&a, url, "GetTempCaCert: cannot reach");

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 8) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &l) == 0);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", ntohs(sa.sin_port));
    spawn(&b, "new-hang", g_sim, NULL, NULL);
    t0 = time(NULL);
    CHECK_RC(onboard(&b, url), KMS_ERR_REPL_RPC);
    CHECK_DETAIL("GetTempCaCert: no answer from");
    CHECK_DETAIL("within 15000 ms");
    CHECK(time(NULL) - t0 <= 20);
    assert_no_keys(&b);
    close(fd);
}

/* SIGKILL at each onboarding step; after a restart the node serves the cluster identity (keys
 * were committed) or is uninitialized and onboards again cleanly (they were not). */
static void test_crash_at_each_step(void)
{
    static const struct {
        const char *step;
        int committed;
    } steps[] = {{"temp-ca", 0}, {"client-cert", 0}, {"got-keys", 0}, {"stored", 1}, {"done", 1}};

    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct node n;
        char name[48], k[80];
        int st = 0;

        memset(&n, 0, sizeof(n));
        snprintf(name, sizeof(name), "crash-%s", steps[i].step);
        spawn(&n, name, g_sim, NULL, steps[i].step);
        CHECK_RC(onboard(&n, g_src.https), KMS_ERR_NET); /* the node died mid-request */
        CHECK(waitpid(n.pid, &st, 0) == n.pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        n.pid = 0;
        spawn(&n, name, g_sim, NULL, NULL);
        if (steps[i].committed) {
            /* Complete keys: a restart serves directly (no Finish needed). */
            CHECK_OK(wait_serving(n.https));
        } else {
            CHECK(kmstest_health(n.http) == 503);
            CHECK_OK(onboard(&n, g_src.https));
            CHECK_OK(finish(&n));
            CHECK_OK(wait_serving(n.https));
        }
        meta_k256(n.https, k);
        CHECK(strcmp(k, g_src_k256) == 0);
        if (strcmp(k, g_src_k256) != 0)
            fprintf(stderr, "  step %s: identity %s\n", steps[i].step, k);
        stop(&n);
    }
}

int main(void)
{
    char tmpl[] = "/tmp/kms-onboard-XXXXXX";
    struct kms_sim *s = NULL;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    kmstest_rpc_timeout_ms = 30000;
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_tmp, sizeof(g_tmp), "%s", mkdtemp(tmpl));
    snprintf(g_sim, sizeof(g_sim), "%s/sim", g_tmp);
    snprintf(g_sim_other, sizeof(g_sim_other), "%s/sim-other", g_tmp);
    /* Create both simulated TEEs up front (concurrent first use would race). */
    if (kms_sim_open(g_sim, &s) < 0)
        return 1;
    kms_sim_free(s);
    if (kms_sim_open(g_sim_other, &s) < 0)
        return 1;
    kms_sim_free(s);
    memset(&g_src, 0, sizeof(g_src));
    bootstrap(&g_src, "source", g_sim, NULL);
    meta_k256(g_src.https, g_src_k256);
    CHECK(strlen(g_src_k256) == 68);
    RUN(test_source_without_attestation);
    RUN(test_source_attestation_fails);
    RUN(test_source_denied_by_new_node);
    RUN(test_caller_denied_by_source);
    RUN(test_pinned_mismatch);
    RUN(test_already_has_keys);
    RUN(test_unreachable_and_hanging);
    RUN(test_crash_at_each_step);
    stop(&g_src);
    kmstest_tmp_finish(g_tmp, kms_test_failures);
    curl_global_cleanup();
    TEST_MAIN_END();
}
