/*
 * End-to-end tests of one kmsd process over real TLS: bootstrap (once), the full RA-TLS
 * GetAppKey flow, every refusal of an attested RPC (no cert, foreign CA, unbound report_data,
 * one flipped byte in quote / QE report / PCK chain), policy by a real auth-api webhook
 * (deny, slow, unreachable: fail closed), malformed and oversized requests, and import of
 * dstack keys reproducing the independent vectors of tests/fixtures/kdf exactly.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "attest/events.h"
#include "attest/sim.h"
#include "attest/tdx.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/crypto/crypto.h"
#include "replication/replication.h"
#include "kmstest_proc.h"
#include "test.h"

static char g_tmp[256];
static char g_sim[300];
static struct kms_sim *g_simh;

/* ---- the app client with controllable evidence */

enum tamper { T_NONE, T_UNBOUND, T_QUOTE, T_QE, T_PCK, T_EXPIRED };

struct app {
    uint8_t app_id[20];
    uint8_t inst[20];
    size_t inst_len;
    enum tamper t;
};

static int app_attest(void *arg, const uint8_t rd[64], struct kms_attestation **out)
{
    struct app *a = arg;
    struct kms_runtime_event ev[5];
    uint8_t compose[32] = {7};
    uint8_t zero[64] = {0};
    struct kms_tdx_quote q;
    int rc;

    kms_app_boot_events(ev, a->app_id, compose, a->inst, a->inst_len);
    rc = kms_sim_attest(g_simh, NULL, a->t == T_UNBOUND ? zero : rd, ev, 5, "", out);
    if (rc < 0 || a->t == T_NONE || a->t == T_UNBOUND)
        return rc;
    if (kms_tdx_quote_parse((*out)->tdx_quote.p, (*out)->tdx_quote.len, &q) < 0)
        return -1;
    if (a->t == T_QUOTE) {
        (*out)->tdx_quote.p[48 + 150] ^= 1; /* mr_td */
    } else if (a->t == T_QE) {
        (*out)->tdx_quote.p[(size_t)(q.qe_report - (*out)->tdx_quote.p) + 10] ^= 1;
    } else {
        const char *e1 = strstr((const char *)q.pck_chain, "-----END CERTIFICATE-----");
        const char *e2 = e1 != NULL ? strstr(e1 + 1, "-----END CERTIFICATE-----") : NULL;
        uint8_t *c;

        if (e2 == NULL)
            return -1;
        c = (*out)->tdx_quote.p + ((const uint8_t *)e2 - (*out)->tdx_quote.p) - 10;
        *c = *c == 'A' ? 'B' : 'A';
    }
    return 0;
}

/* Runs the client flow; returns rc of GetAppKey, *resp on success. ca: foreign CA if set. */
static int get_app_key(const char *url, struct app *a, int no_cert, int foreign_ca, json_t **resp)
{
    json_t *tmp = NULL;
    struct kms_rpc_opts o;
    struct kms_ra_identity ra;
    const char *tc, *tk;
    char *fc_pem = NULL, *fk_pem = NULL;
    int rc;

    memset(&o, 0, sizeof(o));
    memset(&ra, 0, sizeof(ra));
    *resp = NULL;
    o.url = url;
    o.timeout_ms = 10000;
    rc = kms_rpc_call(&o, "GetTempCaCert", NULL, &tmp, NULL);
    if (rc < 0)
        return rc;
    tc = json_string_value(json_object_get(tmp, "temp_ca_cert"));
    tk = json_string_value(json_object_get(tmp, "temp_ca_key"));
    o.ca_pem = json_string_value(json_object_get(tmp, "ca_cert"));
    if (foreign_ca) {
        EVP_PKEY *k = NULL;
        X509 *c = NULL;
        struct kms_cert_params p;

        memset(&p, 0, sizeof(p));
        p.cn = "Dstack Client Temp CA";
        p.org = "Dstack";
        p.is_ca = 1;
        CHECK_OK(kms_p256_generate(&k));
        CHECK_OK(kms_cert_issue(&p, k, k, NULL, &c));
        CHECK_OK(kms_cert_to_pem(c, &fc_pem));
        CHECK_OK(kms_pkey_to_pem(k, &fk_pem));
        tc = fc_pem;
        tk = fk_pem;
        EVP_PKEY_free(k);
        X509_free(c);
    }
    if (!no_cert && a->t == T_EXPIRED) {
        /* A genuine RA-TLS certificate from the temp CA, but outside its validity. */
        EVP_PKEY *k = NULL, *cak = NULL;
        X509 *ca = NULL, *c = NULL;
        struct kms_attestation *att = NULL;
        struct kms_cert_params p;
        uint8_t rd[64];

        memset(&p, 0, sizeof(p));
        a->t = T_NONE;
        CHECK_OK(kms_p256_generate(&k));
        CHECK_OK(kms_report_data_for_pkey(k, rd));
        CHECK_OK(app_attest(a, rd, &att));
        CHECK_OK(kms_cert_from_pem(tc, &ca));
        CHECK_OK(kms_pkey_from_pem(tk, &cak));
        p.cn = "RA-TLS TEMP Cert";
        p.path_len = -1;
        p.att = att;
        p.not_before = time(NULL) - 7200;
        p.not_after = time(NULL) - 3600;
        CHECK_OK(kms_cert_issue(&p, k, cak, ca, &c));
        CHECK_OK(kms_cert_to_pem(c, &ra.cert_pem));
        CHECK_OK(kms_pkey_to_pem(k, &ra.key_pem));
        a->t = T_EXPIRED;
        o.client_cert_pem = ra.cert_pem;
        o.client_key_pem = ra.key_pem;
        kms_att_free(att);
        EVP_PKEY_free(k);
        EVP_PKEY_free(cak);
        X509_free(ca);
        X509_free(c);
    } else if (!no_cert) {
        rc = kms_ra_identity_new(tc, tk, app_attest, a, &ra);
        if (rc < 0)
            goto out;
        o.client_cert_pem = ra.cert_pem;
        o.client_key_pem = ra.key_pem;
    }
    {
        /* The simulated TEE's image, whose measurement manifest the sim dir holds. */
        char vmc[128];
        json_t *req;
        char *txt;

        CHECK_OK(kms_sim_vm_config(vmc, sizeof(vmc)));
        req = json_pack("{s:i,s:s}", "api_version", 1, "vm_config", vmc);
        txt = json_dumps(req, JSON_COMPACT);
        rc = kms_rpc_call(&o, "GetAppKey", txt, resp, NULL);
        free(txt);
        json_decref(req);
    }
out:
    kms_ra_identity_clear(&ra);
    free(fc_pem);
    free(fk_pem);
    json_decref(tmp);
    return rc;
}

/* ---- a real auth-api webhook (in-process HTTP server) */

static volatile int hook_mode;     /* 0 allow, 1 deny, 2 slow */
static volatile int hook_kms_deny; /* bootAuth/kms answers "KMS not registered" */
static volatile int hook_app_calls;

static enum MHD_Result hook(void *cls, struct MHD_Connection *c, const char *url,
                            const char *method, const char *ver, const char *up, size_t *ups,
                            void **ptr)
{
    const char *body;
    struct MHD_Response *r;
    enum MHD_Result ret;

    (void)cls;
    (void)ver;
    (void)up;
    if (*ptr == NULL) {
        *ptr = (void *)1;
        return MHD_YES;
    }
    if (*ups > 0) {
        *ups = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") == 0) {
        /* ethRpcUrl with credentials: GetAttestationInfo must show scheme://host only */
        body = "{\"status\":\"ok\",\"kmsContractAddr\":\"0x00\",\"gatewayAppId\":\"gw\","
               "\"chainId\":1,\"appImplementation\":\"0x00\","
               "\"ethRpcUrl\":\"https://user:pw@rpc.example:8545/v2/SECRETKEY\"}";
    } else if (strstr(url, "bootAuth/kms") != NULL) {
        body = hook_kms_deny
                   ? "{\"isAllowed\":false,\"gatewayAppId\":\"\",\"reason\":\"KMS not registered\"}"
                   : "{\"isAllowed\":true,\"gatewayAppId\":\"gw\",\"reason\":\"\"}";
    } else {
        hook_app_calls++;
        if (hook_mode == 2)
            sleep(3);
        body = hook_mode == 1
                   ? "{\"isAllowed\":false,\"gatewayAppId\":\"\",\"reason\":\"App not registered\"}"
                   : "{\"isAllowed\":true,\"gatewayAppId\":\"gw\",\"reason\":\"\"}";
    }
    r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static void expect_refused(int rc, const char *detail)
{
    CHECK(rc == KMS_ERR_REPL_RPC);
    CHECK_DETAIL(detail);
}

/* pRPC transport as the reference: with and without the KMS. prefix, GET and POST, GET fields
 * from the query string, 0x-hex bytes, 400 {"error"} for unknown methods, 404 elsewhere. */
static void check_transport(const char *base)
{
    static char a[65536], b[65536];
    char url[256];
    const char *app = "0x4242424242424242424242424242424242424242";
    json_t *ja, *jb;

    snprintf(url, sizeof(url), "%s/prpc/GetMeta?json", base);
    CHECK(kmstest_http_get(url, a, sizeof(a)) == 200);
    snprintf(url, sizeof(url), "%s/prpc/KMS.GetMeta?json", base);
    memset(b, 0, sizeof(b));
    CHECK(kmstest_http_post(url, "", 0, b, sizeof(b)) == 200);
    ja = json_loads(a, 0, NULL);
    jb = json_loads(b, 0, NULL);
    CHECK(ja != NULL && jb != NULL &&
          json_equal(json_object_get(ja, "k256_pubkey"), json_object_get(jb, "k256_pubkey")));
    CHECK(ja != NULL &&
          strncmp(json_string_value(json_object_get(ja, "k256_pubkey")), "0x", 2) == 0);
    json_decref(ja);
    json_decref(jb);
    snprintf(url, sizeof(url), "%s/prpc/GetAppEnvEncryptPubKey?json&app_id=%s", base, app);
    memset(a, 0, sizeof(a));
    CHECK(kmstest_http_get(url, a, sizeof(a)) == 200);
    snprintf(url, sizeof(url), "%s/prpc/KMS.GetAppEnvEncryptPubKey?json", base);
    snprintf(b, sizeof(b), "{\"app_id\":\"%s\"}", app);
    {
        char body[128];

        snprintf(body, sizeof(body), "%s", b);
        memset(b, 0, sizeof(b));
        CHECK(kmstest_http_post(url, body, strlen(body), b, sizeof(b)) == 200);
    }
    ja = json_loads(a, 0, NULL);
    jb = json_loads(b, 0, NULL);
    CHECK(ja != NULL && jb != NULL &&
          json_equal(json_object_get(ja, "public_key"), json_object_get(jb, "public_key")));
    json_decref(ja);
    json_decref(jb);
    snprintf(url, sizeof(url), "%s/prpc/NoSuchMethod?json", base);
    memset(a, 0, sizeof(a));
    CHECK(kmstest_http_post(url, "{}", 2, a, sizeof(a)) == 400);
    CHECK(strstr(a, "\"error\": \"method not found: NoSuchMethod\"") != NULL);
    snprintf(url, sizeof(url), "%s/elsewhere", base);
    CHECK(kmstest_http_get(url, a, sizeof(a)) == 404);
}

/* Bootstrap once (a second Bootstrap is refused and keys stay), the RA-TLS flow, every
 * attestation refusal, webhook policy outcomes, malformed/oversized input. */
static void test_node_webhook(void)
{
    unsigned port = kmstest_free_port(), hport = kmstest_free_port();
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                         (uint16_t)hport, NULL, NULL, hook, NULL, MHD_OPTION_END);
    char hook_url[64], ob[64], url[64], raw[128], out[4096];
    char to[16] = "1000";
    const char *extra[] = {"--auth", "webhook", "--auth-url", hook_url, "--auth-timeout-ms",
                           to,       NULL};
    json_t *r1 = NULL, *r2 = NULL, *resp = NULL;
    struct app a;
    struct timespec t0, t1;
    pid_t pid;
    int rc;

    CHECK(d != NULL);
    snprintf(hook_url, sizeof(hook_url), "http://127.0.0.1:%u", hport);
    snprintf(ob, sizeof(ob), "http://127.0.0.1:%u", port);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    pid = kmstest_kmsd_start(g_tmp, "n-webhook", g_sim, port, extra);
    /* GetAttestationInfo names the auth-api's RPC (GET / ethRpcUrl), never its credentials */
    CHECK_OK(kmstest_call(ob, "GetAttestationInfo", NULL, &r1));
    CHECK(r1 != NULL && json_is_string(json_object_get(r1, "eth_rpc_url")) &&
          strcmp(json_string_value(json_object_get(r1, "eth_rpc_url")),
                 "https://rpc.example:8545/<hidden>") == 0);
    CHECK(r1 != NULL &&
          strcmp(json_string_value(json_object_get(r1, "kms_contract_address")), "0x00") == 0);
    json_decref(r1);
    r1 = NULL;
    CHECK_OK(kmstest_call(ob, "Bootstrap", "{\"domain\":\"127.0.0.1\"}", &r1));
    /* A second Bootstrap is refused and the keys stay those of the first. */
    CHECK_RC(kmstest_call(ob, "Bootstrap", "{\"domain\":\"127.0.0.1\"}", &r2), KMS_ERR_REPL_RPC);
    CHECK_DETAIL("already has keys");
    CHECK_OK(kmstest_call(ob, "Finish", NULL, &r2));
    json_decref(r2);
    r2 = NULL;
    CHECK_OK(kmstest_wait_serving(url));
    CHECK_OK(kmstest_call(url, "GetMeta", NULL, &r2));
    CHECK(json_equal(json_object_get(r1, "k256_pubkey"), json_object_get(r2, "k256_pubkey")));
    CHECK(strcmp(json_string_value(json_object_get(r2, "gateway_app_id")), "gw") == 0);
    json_decref(r2);

    check_transport(url);
    memset(&a, 0, sizeof(a));
    memset(a.app_id, 0x42, 20);
    hook_mode = 0;
    CHECK_OK(get_app_key(url, &a, 0, 0, &resp));
    CHECK(resp != NULL && json_is_string(json_object_get(resp, "disk_crypt_key")));
    CHECK(resp != NULL &&
          strcmp(json_string_value(json_object_get(resp, "gateway_app_id")), "gw") == 0);
    json_decref(resp);

    expect_refused(get_app_key(url, &a, 1, 0, &resp), "No attestation provided");
    expect_refused(get_app_key(url, &a, 0, 1, &resp), "not issued by this KMS's temp CA");
    a.t = T_UNBOUND;
    expect_refused(get_app_key(url, &a, 0, 0, &resp), "not bound to the certificate key");
    a.t = T_QUOTE;
    expect_refused(get_app_key(url, &a, 0, 0, &resp),
                   "invalid quote: TDX quote signature does not verify");
    a.t = T_QE;
    expect_refused(get_app_key(url, &a, 0, 0, &resp), "QE report signature does not verify");
    a.t = T_PCK;
    expect_refused(get_app_key(url, &a, 0, 0, &resp), "PCK chain");
    a.t = T_EXPIRED;
    expect_refused(get_app_key(url, &a, 0, 0, &resp),
                   "client certificate is expired or not yet valid");
    a.t = T_NONE;

    hook_mode = 1;
    expect_refused(get_app_key(url, &a, 0, 0, &resp), "Boot denied: App not registered");
    hook_mode = 2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = get_app_key(url, &a, 0, 0, &resp);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    expect_refused(rc, "did not answer within 1000 ms");
    CHECK(t1.tv_sec - t0.tv_sec < 3); /* failed closed at the timeout, not after the stall */
    MHD_stop_daemon(d);
    d = NULL;
    expect_refused(get_app_key(url, &a, 0, 0, &resp), "auth");

    /* Malformed and oversized requests: 400, and the node keeps serving. */
    snprintf(raw, sizeof(raw), "%s/prpc/GetAppEnvEncryptPubKey?json", url);
    CHECK(kmstest_http_post(raw, "{bad", 4, out, sizeof(out)) == 400);
    CHECK(strstr(out, "invalid JSON") != NULL);
    {
        size_t big = 2u * 1024u * 1024u;
        char *b = malloc(big);

        memset(b, ' ', big);
        memset(out, 0, sizeof(out));
        CHECK(kmstest_http_post(raw, b, big, out, sizeof(out)) == 400);
        CHECK(strstr(out, "exceeds") != NULL);
        free(b);
    }
    {
        const char *ok = "{\"app_id\":\"0x4242424242424242424242424242424242424242\"}";

        CHECK(kmstest_http_post(raw, ok, strlen(ok), out, sizeof(out)) == 200);
    }
    json_decref(r1);
    kmstest_kmsd_stop(pid);
}

/* A node whose own policy refuses it (bootAuth/kms) at start stays up as not-authorized:
 * /health 403 with the reason, GetMeta answers, but nothing that starts or serves a key flow
 * (GetTempCaCert, GetAppEnvEncryptPubKey) — as upstream's enforce_self_authorization. */
static void test_not_authorized(void)
{
    unsigned port = kmstest_free_port(), hport = kmstest_free_port();
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                         (uint16_t)hport, NULL, NULL, hook, NULL, MHD_OPTION_END);
    char hook_url[64], ob[64], url[64];
    const char *extra[] = {"--auth", "webhook", "--auth-url", hook_url, NULL};
    json_t *r = NULL;
    long st = 0;
    pid_t pid;

    CHECK(d != NULL);
    snprintf(hook_url, sizeof(hook_url), "http://127.0.0.1:%u", hport);
    snprintf(ob, sizeof(ob), "http://127.0.0.1:%u", port);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    hook_kms_deny = 0;
    pid = kmstest_kmsd_start(g_tmp, "n-unauth", g_sim, port, extra);
    CHECK_OK(kmstest_call0(ob, "Bootstrap", "{\"domain\":\"127.0.0.1\"}"));
    CHECK_OK(kmstest_call0(ob, "Finish", NULL));
    CHECK_OK(kmstest_wait_serving(url));
    kmstest_kmsd_stop(pid);
    hook_kms_deny = 1;
    pid = kmstest_kmsd_start(g_tmp, "n-unauth", g_sim, port, extra);
    for (int i = 0; i < 100 && st != 403; i++) {
        st = kmstest_health(url);
        if (st != 403)
            usleep(100000);
    }
    CHECK(st == 403);
    CHECK_OK(kmstest_call(url, "GetMeta", NULL, &r));
    json_decref(r);
    CHECK_RC(kmstest_call0(url, "GetTempCaCert", NULL), KMS_ERR_REPL_RPC);
    CHECK_DETAIL("KMS is not authorized by its own policy: KMS not registered");
    CHECK_RC(kmstest_call0(url, "GetAppEnvEncryptPubKey",
                           "{\"app_id\":\"0x4242424242424242424242424242424242424242\"}"),
             KMS_ERR_REPL_RPC);
    CHECK_DETAIL("KMS is not authorized by its own policy");
    kmstest_kmsd_stop(pid);
    hook_kms_deny = 0;
    MHD_stop_daemon(d);
}

/* Write a dstack key directory from raw scalars (OpenSSL-encoded PEM, raw k256). */
static void write_dstack_dir(const char *dir, const uint8_t ca_d[32], const uint8_t k256[32])
{
    EVP_PKEY *ca = NULL, *tmp = NULL;
    char *pem = NULL, p[600];

    CHECK_OK(kms_mkdir_p(dir, 0700));
    CHECK_OK(kms_p256_from_scalar(ca_d, &ca));
    CHECK_OK(kms_pkey_to_pem(ca, &pem));
    snprintf(p, sizeof(p), "%s/root-ca.key", dir);
    CHECK_OK(kms_file_write_atomic(p, pem, strlen(pem), 0600));
    free(pem);
    CHECK_OK(kms_p256_generate(&tmp));
    CHECK_OK(kms_pkey_to_pem(tmp, &pem));
    snprintf(p, sizeof(p), "%s/tmp-ca.key", dir);
    CHECK_OK(kms_file_write_atomic(p, pem, strlen(pem), 0600));
    free(pem);
    snprintf(p, sizeof(p), "%s/root-k256.key", dir);
    CHECK_OK(kms_file_write_atomic(p, k256, 32, 0600));
    snprintf(p, sizeof(p), "%s/rpc-domain", dir);
    CHECK_OK(kms_file_write_atomic(p, "127.0.0.1\n", 10, 0600));
    EVP_PKEY_free(ca);
    EVP_PKEY_free(tmp);
}

static void check_field(json_t *resp, const char *k, const char *want_hex)
{
    const char *got = json_string_value(json_object_get(resp, k));

    CHECK(got != NULL && strncmp(got, "0x", 2) == 0 && strcmp(got + 2, want_hex) == 0);
}

/* kmsctl keystore import-dstack of each kdf vector's root keys; GetAppKey through the full
 * RA-TLS flow returns exactly the vector's keys and signature. */
static void test_import_vectors(void)
{
    json_error_t e;
    json_t *vec = json_load_file(kms_test_fixture("kdf/app-key-vectors.json"), 0, &e);
    size_t i;
    json_t *v;

    CHECK(vec != NULL);
    json_array_foreach(vec, i, v)
    {
        char src[300], data[300], cmd[1400], name[32], url[64];
        uint8_t ca_d[32], k256[32];
        unsigned port = kmstest_free_port();
        const char *inst = json_string_value(json_object_get(v, "instance_id"));
        struct app a;
        json_t *resp = NULL;
        pid_t pid;

        if (i >= 2)
            break; /* one vector without and one with instance_id keep the test fast */
        snprintf(name, sizeof(name), "n-import%zu", i);
        snprintf(src, sizeof(src), "%s/dstack%zu", g_tmp, i);
        snprintf(data, sizeof(data), "%s/%s", g_tmp, name);
        CHECK_OK(kms_hex_decode_exact(json_string_value(json_object_get(v, "root_ca_scalar")), ca_d,
                                      32));
        CHECK_OK(kms_hex_decode_exact(json_string_value(json_object_get(v, "root_k256_scalar")),
                                      k256, 32));
        write_dstack_dir(src, ca_d, k256);
        snprintf(cmd, sizeof(cmd),
                 "%s/cli/kmsctl keystore import-dstack --data-dir %s %s >/dev/null",
                 getenv("KMS_BIN_DIR"), data, src);
        CHECK(system(cmd) == 0);
        /* importing twice is refused */
        snprintf(cmd, sizeof(cmd),
                 "%s/cli/kmsctl keystore import-dstack --data-dir %s %s 2>/dev/null",
                 getenv("KMS_BIN_DIR"), data, src);
        CHECK(system(cmd) != 0);
        pid = kmstest_kmsd_start(g_tmp, name, g_sim, port, NULL);
        snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
        CHECK_OK(kmstest_wait_serving(url));
        memset(&a, 0, sizeof(a));
        CHECK_OK(
            kms_hex_decode_exact(json_string_value(json_object_get(v, "app_id")), a.app_id, 20));
        if (inst != NULL && inst[0] != '\0') {
            CHECK_OK(kms_hex_decode_exact(inst, a.inst, 20));
            a.inst_len = 20;
        }
        CHECK_OK(get_app_key(url, &a, 0, 0, &resp));
        if (resp != NULL) {
            check_field(resp, "disk_crypt_key",
                        json_string_value(json_object_get(v, "disk_crypt_key")));
            check_field(resp, "env_crypt_key",
                        json_string_value(json_object_get(v, "env_crypt_key")));
            check_field(resp, "k256_key", json_string_value(json_object_get(v, "k256_key")));
            check_field(resp, "k256_signature",
                        json_string_value(json_object_get(v, "k256_signature")));
        }
        json_decref(resp);
        kmstest_kmsd_stop(pid);
    }
    json_decref(vec);
}

int main(void)
{
    char tmpl[] = "/tmp/kms-e2e-XXXXXX";

    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_tmp, sizeof(g_tmp), "%s", mkdtemp(tmpl));
    snprintf(g_sim, sizeof(g_sim), "%s/sim", g_tmp);
    if (kms_sim_open(g_sim, &g_simh) < 0) {
        fprintf(stderr, "cannot open sim: %s\n", kms_err_detail());
        return 1;
    }
    RUN(test_node_webhook);
    RUN(test_not_authorized);
    RUN(test_import_vectors);
    kms_sim_free(g_simh);
    kmstest_tmp_finish(g_tmp, kms_test_failures);
    curl_global_cleanup();
    TEST_MAIN_END();
}
