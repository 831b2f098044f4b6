/*
 * End to end across platforms: one kmsd node (simulated TDX, webhook policy) serves GetAppKey
 * over the full RA-TLS flow to a simulated AWS Nitro Enclave client and to a simulated GCP
 * TDX + vTPM client (evidence from kms_platform, carried in OID .1.8). The BootInfo the webhook
 * receives is checked (Nitro: mode dstack-nitro-enclave, compose_hash = os_image_hash =
 * sha256(PCR0||PCR1||PCR2), device_id = sha256("i"); GCP: mode dstack-gcp-tdx, app_id,
 * compose_hash, mr_aggregated = sha256(PCR0||PCR2||PCR14)). Each client is refused with its
 * precise error when its evidence is altered: a COSE signature byte; a TPM quote signature
 * byte; a PCR14 event (the vTPM measured another app-id than the runtime events say). Finally
 * `kmsctl get-keys --tee sim-nitro|sim-gcp` gets keys from the same node.
 */
#include <jansson.h>
#include <microhttpd.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <unistd.h>

#include "attest/events.h"
#include "attest/sim.h"
#include "attest/tpm.h"
#include "common/file.h"
#include "common/hex.h"
#include "replication/replication.h"
#include "kmstest_proc.h"
#include "test.h"

static char g_tmp[256];
static char g_sim[300];

/* ---- the auth-api webhook: allows everything and keeps the last bootAuth/app body */

static pthread_mutex_t g_hook_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_last_app[8192];

struct upload {
    char buf[8192];
    size_t len;
};

static enum MHD_Result hook(void *cls, struct MHD_Connection *c, const char *url,
                            const char *method, const char *ver, const char *up, size_t *ups,
                            void **ptr)
{
    struct upload *u = *ptr;
    const char *body;
    struct MHD_Response *r;
    enum MHD_Result ret;

    (void)cls;
    (void)ver;
    if (u == NULL) {
        u = calloc(1, sizeof(*u));
        *ptr = u;
        return MHD_YES;
    }
    if (*ups > 0) {
        size_t n = *ups < sizeof(u->buf) - 1 - u->len ? *ups : sizeof(u->buf) - 1 - u->len;

        memcpy(u->buf + u->len, up, n);
        u->len += n;
        *ups = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") == 0) {
        body = "{\"status\":\"ok\",\"kmsContractAddr\":\"0x00\",\"gatewayAppId\":\"gw\","
               "\"chainId\":1,\"appImplementation\":\"0x00\"}";
    } else {
        if (strstr(url, "bootAuth/app") != NULL) {
            pthread_mutex_lock(&g_hook_lock);
            memcpy(g_last_app, u->buf, u->len + 1);
            pthread_mutex_unlock(&g_hook_lock);
        }
        body = "{\"isAllowed\":true,\"gatewayAppId\":\"gw\",\"reason\":\"\"}";
    }
    r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static void hook_done(void *cls, struct MHD_Connection *c, void **ptr,
                      enum MHD_RequestTerminationCode tc)
{
    (void)cls;
    (void)c;
    (void)tc;
    free(*ptr);
    *ptr = NULL;
}

/* The last bootAuth/app body as JSON (caller decrefs); clears it. */
static json_t *last_boot_info(void)
{
    json_t *j;

    pthread_mutex_lock(&g_hook_lock);
    j = json_loads(g_last_app, 0, NULL);
    g_last_app[0] = '\0';
    pthread_mutex_unlock(&g_hook_lock);
    return j;
}

static void check_hex(json_t *o, const char *k, const uint8_t *want, size_t n)
{
    char hex[200];
    const char *got = json_string_value(json_object_get(o, k));

    kms_hex_encode(want, n, hex);
    CHECK(got != NULL && strcmp(got, hex) == 0);
    if (got == NULL || strcmp(got, hex) != 0)
        fprintf(stderr, "  %s: got %s want %s\n", k, got != NULL ? got : "(none)", hex);
}

/* ---- clients with controllable evidence */

enum tamper { T_NONE, T_COSE_SIG, T_TPM_SIG, T_PCR14 };

struct client {
    struct kms_platform *p;
    uint8_t app_id[20];
    uint8_t compose[32];
    enum tamper t;
    const char *vm_config; /* sent in GetAppKey (NULL = "") */
};

static void client_events(struct client *c, struct kms_runtime_event ev[4], uint8_t *app_id)
{
    memset(ev, 0, 4 * sizeof(*ev));
    ev[0].event = (char *)"system-preparing";
    ev[1].event = (char *)"app-id";
    ev[1].payload.p = app_id;
    ev[1].payload.len = 20;
    ev[2].event = (char *)"compose-hash";
    ev[2].payload.p = c->compose;
    ev[2].payload.len = 32;
    ev[3].event = (char *)"boot-mr-done";
}

static int client_attest(void *arg, const uint8_t rd[64], struct kms_attestation **out)
{
    struct client *c = arg;
    struct kms_runtime_event ev[4], ev2[4];
    uint8_t other[20], qd[32];
    struct kms_tpm_quote alt;
    int rc;

    client_events(c, ev, c->app_id);
    rc = kms_platform_attest(c->p, rd, ev, 4, NULL, out);
    if (rc < 0)
        return rc;
    switch (c->t) {
    case T_COSE_SIG: /* last byte of the COSE_Sign1: inside the 96-byte signature */
        (*out)->nsm_quote.p[(*out)->nsm_quote.len - 1] ^= 1;
        break;
    case T_TPM_SIG:
        (*out)->tpm.signature.p[(*out)->tpm.signature.len - 1] ^= 1;
        break;
    case T_PCR14:
        /* a validly signed vTPM quote whose PCR14 saw another app-id than RTMR3 */
        memset(other, 0x99, sizeof(other));
        client_events(c, ev2, other);
        SHA256((*out)->tdx_quote.p, (*out)->tdx_quote.len, qd);
        memset(&alt, 0, sizeof(alt));
        rc = kms_sim_gcp_tpm_quote(g_sim, qd, 32, ev2, 4, NULL, 0, &alt);
        if (rc < 0)
            return rc;
        kms_tpm_quote_clear(&(*out)->tpm);
        (*out)->tpm = alt;
        break;
    case T_NONE:
        break;
    }
    return 0;
}

static int get_app_key(const char *url, struct client *c, json_t **resp)
{
    json_t *tmp = NULL;
    struct kms_rpc_opts o;
    struct kms_ra_identity ra;
    int rc;

    memset(&o, 0, sizeof(o));
    memset(&ra, 0, sizeof(ra));
    *resp = NULL;
    o.url = url;
    o.timeout_ms = 10000;
    rc = kms_rpc_call(&o, "GetTempCaCert", NULL, &tmp, NULL);
    if (rc < 0)
        return rc;
    o.ca_pem = json_string_value(json_object_get(tmp, "ca_cert"));
    rc = kms_ra_identity_new(json_string_value(json_object_get(tmp, "temp_ca_cert")),
                             json_string_value(json_object_get(tmp, "temp_ca_key")), client_attest,
                             c, &ra);
    if (rc == 0) {
        o.client_cert_pem = ra.cert_pem;
        o.client_key_pem = ra.key_pem;
        json_t *req = json_pack("{s:i,s:s}", "api_version", 1, "vm_config",
                                c->vm_config != NULL ? c->vm_config : "");
        char *body = json_dumps(req, JSON_COMPACT);

        rc = kms_rpc_call(&o, "GetAppKey", body, resp, NULL);
        free(body);
        json_decref(req);
    }
    kms_ra_identity_clear(&ra);
    json_decref(tmp);
    return rc;
}

static void expect_refused(int rc, const char *detail)
{
    CHECK(rc == KMS_ERR_REPL_RPC);
    CHECK_DETAIL(detail);
}

static void test_nitro_client(const char *url)
{
    struct kms_platform_cfg cfg;
    struct client c;
    uint8_t pcrs[3][48], h[32];
    json_t *resp = NULL, *bi;

    memset(&c, 0, sizeof(c));
    for (int i = 0; i < 3; i++)
        memset(pcrs[i], 0x10 + i, 48);
    memset(&cfg, 0, sizeof(cfg));
    cfg.kind = KMS_PLATFORM_SIM_NITRO;
    cfg.sim_dir = g_sim;
    cfg.nitro_pcrs = (const uint8_t(*)[48])pcrs;
    CHECK_OK(kms_platform_open(&cfg, &c.p));
    memset(c.app_id, 0xa1, 20);
    memset(c.compose, 0xc1, 32);

    CHECK_OK(get_app_key(url, &c, &resp));
    CHECK(resp != NULL && json_is_string(json_object_get(resp, "disk_crypt_key")));
    json_decref(resp);
    bi = last_boot_info();
    CHECK(bi != NULL);
    CHECK(strcmp(json_string_value(json_object_get(bi, "attestationMode")) != NULL
                     ? json_string_value(json_object_get(bi, "attestationMode"))
                     : "",
                 "dstack-nitro-enclave") == 0);
    SHA256(&pcrs[0][0], sizeof(pcrs), h);
    check_hex(bi, "composeHash", h, 32);
    check_hex(bi, "osImageHash", h, 32);
    check_hex(bi, "mrSystem", h, 32);
    check_hex(bi, "mrAggregated", h, 32);
    check_hex(bi, "appId", c.app_id, 20);
    check_hex(bi, "instanceId", NULL, 0);
    SHA256((const uint8_t *)"i", 1, h);
    check_hex(bi, "deviceId", h, 32);
    json_decref(bi);

    c.t = T_COSE_SIG;
    expect_refused(get_app_key(url, &c, &resp),
                   "Nitro COSE_Sign1 signature does not verify with the leaf certificate key");
    kms_platform_free(c.p);
}

static void test_gcp_client(const char *url)
{
    struct kms_platform_cfg cfg;
    struct client c;
    uint8_t h[32], cat[96], pcr14[32];
    struct kms_runtime_event ev[4];
    json_t *resp = NULL, *bi;
    const char *mode;

    memset(&c, 0, sizeof(c));
    memset(&cfg, 0, sizeof(cfg));
    cfg.kind = KMS_PLATFORM_SIM_GCP;
    cfg.sim_dir = g_sim;
    CHECK_OK(kms_platform_open(&cfg, &c.p));
    memset(c.app_id, 0xb2, 20);
    memset(c.compose, 0xc2, 32);

    CHECK_OK(get_app_key(url, &c, &resp));
    CHECK(resp != NULL && json_is_string(json_object_get(resp, "env_crypt_key")));
    json_decref(resp);
    bi = last_boot_info();
    CHECK(bi != NULL);
    mode = json_string_value(json_object_get(bi, "attestationMode"));
    CHECK(mode != NULL && strcmp(mode, "dstack-gcp-tdx") == 0);
    check_hex(bi, "appId", c.app_id, 20);
    check_hex(bi, "composeHash", c.compose, 32);
    SHA256((const uint8_t *)"kmsd-sim-gcp-uki", 16, h);
    check_hex(bi, "osImageHash", h, 32);
    /* mr_aggregated = sha256(PCR0 || PCR2 || PCR14): recompute from a fresh sim quote (PCR0/2
     * are the simulated firmware's, PCR14 the runtime events') */
    client_events(&c, ev, c.app_id);
    {
        struct kms_attestation *att = NULL;
        uint8_t rd[64] = {0};

        CHECK_OK(kms_platform_attest(c.p, rd, ev, 4, NULL, &att));
        if (att != NULL && att->tpm.n_pcrs == 3) {
            kms_att_replay(0, ev, 4, NULL, pcr14);
            memcpy(cat, att->tpm.pcrs[0].value.p, 32);
            memcpy(cat + 32, att->tpm.pcrs[1].value.p, 32);
            memcpy(cat + 64, pcr14, 32);
            SHA256(cat, sizeof(cat), h);
            check_hex(bi, "mrAggregated", h, 32);
        }
        kms_att_free(att);
    }
    json_decref(bi);

    c.t = T_TPM_SIG;
    expect_refused(get_app_key(url, &c, &resp), "TPM quote signature (ECDSA) does not verify");
    c.t = T_PCR14;
    expect_refused(get_app_key(url, &c, &resp),
                   "SHA-256 replay of 4 runtime events does not match TPM PCR14");
    /* A vm_config claiming another image than the UKI measured in PCR2 (checked before policy). */
    c.t = T_NONE;
    c.vm_config =
        "{\"os_image_hash\":\"00000000000000000000000000000000000000000000000000000000000000ff\"}";
    expect_refused(get_app_key(url, &c, &resp), "is not the UKI measured as the third PCR2 event");
    c.vm_config = NULL;
    kms_platform_free(c.p);
}

/* `kmsctl get-keys` with the simulated Nitro and GCP TEEs writes an app_keys.json. */
static void test_kmsctl_get_keys(const char *url)
{
    static const char *tees[] = {"sim-nitro", "sim-gcp"};
    char cmd[2048], out[600];
    uint8_t *b = NULL;
    size_t n = 0;

    for (size_t i = 0; i < 2; i++) {
        snprintf(out, sizeof(out), "%s/keys-%s.json", g_tmp, tees[i]);
        snprintf(cmd, sizeof(cmd),
                 "%s/cli/kmsctl get-keys --kms %s --app-id %s --out %s --tee %s --insecure-sim "
                 "--sim-dir %s 2>%s/get-keys-%s.log",
                 getenv("KMS_BIN_DIR"), url, "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3", out,
                 tees[i], g_sim, g_tmp, tees[i]);
        CHECK(system(cmd) == 0);
        CHECK_OK(kms_file_read(out, 1u << 20, &b, &n));
        CHECK(b != NULL && strstr((const char *)b, "\"k256_signature\"") != NULL);
        if (b != NULL)
            kms_free_secret(b, n);
        b = NULL;
        {
            json_t *bi = last_boot_info();
            const char *mode = json_string_value(json_object_get(bi, "attestationMode"));

            CHECK(mode != NULL &&
                  strcmp(mode, i == 0 ? "dstack-nitro-enclave" : "dstack-gcp-tdx") == 0);
            json_decref(bi);
        }
    }
}

int main(void)
{
    char tmpl[] = "/tmp/kms-e2e-plat-XXXXXX";
    unsigned port = kmstest_free_port(), hport = kmstest_free_port();
    struct MHD_Daemon *d;
    char hook_url[64], ob[64], url[64];
    const char *extra[] = {"--auth", "webhook", "--auth-url", hook_url, NULL};
    json_t *r = NULL;
    pid_t pid;

    if (getenv("KMS_BIN_DIR") == NULL || mkdtemp(tmpl) == NULL)
        return 1;
    snprintf(g_tmp, sizeof(g_tmp), "%s", tmpl);
    snprintf(g_sim, sizeof(g_sim), "%s/sim", g_tmp);
    /* no simulation roots yet: the node creates all of them in --sim-dir at start, so clients
     * of every simulated kind that share the directory are verifiable */
    d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                         (uint16_t)hport, NULL, NULL, hook, NULL, MHD_OPTION_NOTIFY_COMPLETED,
                         hook_done, NULL, MHD_OPTION_END);
    CHECK(d != NULL);
    snprintf(hook_url, sizeof(hook_url), "http://127.0.0.1:%u", hport);
    snprintf(ob, sizeof(ob), "http://127.0.0.1:%u", port);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    pid = kmstest_kmsd_start(g_tmp, "platforms", g_sim, port, extra);
    CHECK_OK(kmstest_call(ob, "Bootstrap", "{\"domain\":\"127.0.0.1\"}", &r));
    json_decref(r);
    r = NULL;
    CHECK_OK(kmstest_call(ob, "Finish", NULL, &r));
    json_decref(r);
    CHECK_OK(kmstest_wait_serving(url));

    {
        int before = kms_test_failures;

        test_nitro_client(url);
        printf("%s test_nitro_client\n", kms_test_failures == before ? "ok  " : "FAIL");
        before = kms_test_failures;
        test_gcp_client(url);
        printf("%s test_gcp_client\n", kms_test_failures == before ? "ok  " : "FAIL");
        before = kms_test_failures;
        test_kmsctl_get_keys(url);
        printf("%s test_kmsctl_get_keys\n", kms_test_failures == before ? "ok  " : "FAIL");
    }
    kmstest_kmsd_stop(pid);
    if (d != NULL)
        MHD_stop_daemon(d);
    TEST_MAIN_END();
}
