/*
 * Plain-TDX OS-image check end to end (issue 11 item 5; docs/os-image-manifest.md): a real
 * kmsd with --image-manifest-dir, an --image-manifest-url served by a loopback HTTP server in
 * this test, and the Admin listener. Simulated TDX clients with chosen MRTD/RTMR0-2 and
 * vm_config: a client matching its image's manifest gets keys; one register off, an unknown
 * image or another image's claim is refused with the exact reason; a fetched manifest is cached
 * until ClearImageCache (the server sees the re-fetch); the simulated TEE's own image passes by
 * default; --insecure-skip-os-image-check accepts a mismatch and warns at start; `kmsctl
 * image manifest --from-quote` on a real dstack quote gives a manifest its real vm_config
 * passes.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "attest/events.h"
#include "attest/image.h"
#include "attest/sim.h"
#include "attest/tdx.h"
#include "common/fetch.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/crypto/crypto.h"
#include "replication/replication.h"
#include "kmstest_proc.h"
#include "test.h"

#define TOKEN "osimage-admin-token-0123456789"

static char g_tmp[256];
static char g_sim[300];
static struct kms_sim *g_simh;

/* ---- the client: a simulated TDX guest with chosen measurements and vm_config */

struct client {
    struct kms_image_mrs mrs;
    int default_mrs; /* the simulated TEE's own measurements */
    char vm_config[256];
};

static int client_attest(void *arg, const uint8_t rd[64], struct kms_attestation **out)
{
    struct client *c = arg;
    struct kms_sim_measurements m;
    struct kms_runtime_event ev[5];
    uint8_t app_id[20], compose[32] = {7};

    memset(app_id, 0x42, sizeof(app_id));
    kms_app_boot_events(ev, app_id, compose, NULL, 0);
    memset(&m, 0, sizeof(m));
    m.mr_td = c->mrs.mrtd;
    m.rtmr0 = c->mrs.rtmr[0];
    m.rtmr1 = c->mrs.rtmr[1];
    m.rtmr2 = c->mrs.rtmr[2];
    return kms_sim_attest(g_simh, c->default_mrs ? NULL : &m, rd, ev, 5, "", out);
}

/* GetTempCaCert, then GetAppKey with an RA-TLS client certificate and c->vm_config. */
static int get_app_key(const char *url, struct client *c)
{
    json_t *tmp = NULL, *resp = NULL, *req = NULL;
    struct kms_rpc_opts o;
    struct kms_ra_identity ra;
    char *body = NULL;
    int rc;

    memset(&o, 0, sizeof(o));
    memset(&ra, 0, sizeof(ra));
    o.url = url;
    o.timeout_ms = 20000;
    rc = kms_rpc_call(&o, "GetTempCaCert", NULL, &tmp, NULL);
    if (rc < 0)
        goto out;
    o.ca_pem = json_string_value(json_object_get(tmp, "ca_cert"));
    rc = kms_ra_identity_new(json_string_value(json_object_get(tmp, "temp_ca_cert")),
                             json_string_value(json_object_get(tmp, "temp_ca_key")), client_attest,
                             c, &ra);
    if (rc < 0)
        goto out;
    o.client_cert_pem = ra.cert_pem;
    o.client_key_pem = ra.key_pem;
    req = json_pack("{s:i,s:s}", "api_version", 1, "vm_config", c->vm_config);
    body = json_dumps(req, JSON_COMPACT);
    rc = kms_rpc_call(&o, "GetAppKey", body, &resp, NULL);
    if (rc == 0 && !json_is_string(json_object_get(resp, "disk_crypt_key")))
        rc = kms_err_set(KMS_ERR_PARSE, "GetAppKey answer without disk_crypt_key");
out:
    free(body);
    json_decref(req);
    json_decref(resp);
    json_decref(tmp);
    kms_ra_identity_clear(&ra);
    return rc;
}

static void set_mrs(struct kms_image_mrs *m, uint8_t seed)
{
    memset(m->mrtd, seed, 48);
    for (int i = 0; i < 3; i++)
        memset(m->rtmr[i], seed + 1 + i, 48);
}

static void set_vm_config(struct client *c, const uint8_t img[32], const char *shape)
{
    char hex[65];

    kms_hex_encode(img, 32, hex);
    snprintf(c->vm_config, sizeof(c->vm_config), "{\"os_image_hash\":\"%s\"%s%s}", hex,
             shape[0] != '\0' ? "," : "", shape);
}

/* ---- the manifest server (--image-manifest-url): /m/<hex>.json from one slot, else 404 */

static pthread_mutex_t srv_lock = PTHREAD_MUTEX_INITIALIZER;
static char srv_path[128];
static char *srv_body;
static int srv_hits; /* requests for srv_path */

static enum MHD_Result serve(void *cls, struct MHD_Connection *conn, const char *url,
                             const char *method, const char *ver, const char *up, size_t *ups,
                             void **ptr)
{
    struct MHD_Response *r;
    enum MHD_Result ret;
    unsigned status = 404;
    char *body = NULL;

    (void)cls;
    (void)method;
    (void)ver;
    (void)up;
    (void)ups;
    if (*ptr == NULL) {
        *ptr = (void *)1;
        return MHD_YES;
    }
    pthread_mutex_lock(&srv_lock);
    if (srv_body != NULL && strcmp(url, srv_path) == 0) {
        srv_hits++;
        status = 200;
        body = strdup(srv_body);
    }
    pthread_mutex_unlock(&srv_lock);
    if (body == NULL)
        body = strdup("not found");
    r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static void serve_manifest(const uint8_t img[32], const struct kms_image_mrs *mrs)
{
    char hex[65], *text = NULL;

    kms_hex_encode(img, 32, hex);
    CHECK_OK(kms_image_manifest_build(NULL, img, "served", NULL, mrs, &text));
    pthread_mutex_lock(&srv_lock);
    snprintf(srv_path, sizeof(srv_path), "/m/%s.json", hex);
    free(srv_body);
    srv_body = text;
    pthread_mutex_unlock(&srv_lock);
}

static int hits(void)
{
    int n;

    pthread_mutex_lock(&srv_lock);
    n = srv_hits;
    pthread_mutex_unlock(&srv_lock);
    return n;
}

/* ---- Admin ClearImageCache */

static void clear_cache(unsigned aport, const char *image_hash)
{
    static const char *const hdr[] = {"X-Admin-Token: " TOKEN, "Content-Type: application/json",
                                      NULL};
    struct kms_fetch_req req;
    struct kms_fetch_resp resp;
    char url[96], body[160];

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/prpc/ClearImageCache", aport);
    snprintf(body, sizeof(body), "{\"image_hash\":\"%s\"}", image_hash);
    memset(&req, 0, sizeof(req));
    req.url = url;
    req.post = body;
    req.post_len = strlen(body);
    req.headers = hdr;
    req.timeout_ms = 20000;
    req.max_body = 4096;
    req.no_env_proxy = 1;
    CHECK_OK(kms_fetch(&req, &resp));
    CHECK(resp.status == 200);
    kms_fetch_resp_free(&resp);
}

static void expect_refused(int rc, const char *why)
{
    CHECK(rc == KMS_ERR_REPL_RPC);
    CHECK_DETAIL(why);
}

static pid_t start_node(const char *name, unsigned port, const char *const *extra)
{
    char ob[64], url[64];
    json_t *r = NULL;
    pid_t pid = kmstest_kmsd_start(g_tmp, name, g_sim, port, extra);

    snprintf(ob, sizeof(ob), "http://127.0.0.1:%u", port);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    CHECK_OK(kmstest_call(ob, "Bootstrap", "{\"domain\":\"127.0.0.1\"}", &r));
    json_decref(r);
    CHECK_OK(kmstest_call0(ob, "Finish", NULL));
    CHECK_OK(kmstest_wait_serving(url));
    return pid;
}

static void test_image_check(void)
{
    unsigned port = kmstest_free_port(), hport = kmstest_free_port(), aport = kmstest_free_port();
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                         (uint16_t)hport, NULL, NULL, serve, NULL, MHD_OPTION_END);
    char dir[300], tokf[300], tmpl[96], admin[32], path[400], url[64], want[400];
    char hex1[65], hex2[65], e[97], a[97], *text = NULL;
    const char *extra[] = {"--image-manifest-dir",
                           dir,
                           "--image-manifest-url",
                           tmpl,
                           "--admin-listen",
                           admin,
                           "--admin-token-file",
                           tokf,
                           NULL};
    struct client c;
    struct kms_image_mrs m1, m2;
    uint8_t img1[32], img2[32], other[32];
    pid_t pid;

    CHECK(d != NULL);
    snprintf(dir, sizeof(dir), "%s/manifests", g_tmp);
    snprintf(tokf, sizeof(tokf), "%s/admin.token", g_tmp);
    snprintf(tmpl, sizeof(tmpl), "http://127.0.0.1:%u/m/{OS_IMAGE_HASH}.json", hport);
    snprintf(admin, sizeof(admin), "127.0.0.1:%u", aport);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    CHECK_OK(kms_file_write_atomic(tokf, TOKEN, strlen(TOKEN), 0600));
    CHECK_OK(kms_mkdir_p(dir, 0700));
    /* Image 1 in the directory (2 vCPUs only); image 2 served over HTTP. */
    SHA256((const uint8_t *)"image one", 9, img1);
    SHA256((const uint8_t *)"image two", 9, img2);
    SHA256((const uint8_t *)"image nobody has", 16, other);
    kms_hex_encode(img1, 32, hex1);
    kms_hex_encode(img2, 32, hex2);
    set_mrs(&m1, 0x10);
    set_mrs(&m2, 0x20);
    CHECK_OK(kms_image_manifest_build(NULL, img1, "one", "{\"cpu_count\":2}", &m1, &text));
    snprintf(path, sizeof(path), "%s/%s.json", dir, hex1);
    CHECK_OK(kms_file_write_atomic(path, text, strlen(text), 0600));
    free(text);
    serve_manifest(img2, &m2);
    pid = start_node("n-image", port, extra);

    memset(&c, 0, sizeof(c));
    /* The simulated TEE's own image: its manifest is in the sim dir. */
    c.default_mrs = 1;
    CHECK_OK(kms_sim_vm_config(c.vm_config, sizeof(c.vm_config)));
    CHECK_OK(get_app_key(url, &c));
    /* Image 1 from the directory, matching shape and measurements: keys. */
    c.default_mrs = 0;
    c.mrs = m1;
    set_vm_config(&c, img1, "\"cpu_count\":2");
    CHECK_OK(get_app_key(url, &c));
    /* One register off: refused with the reference's text naming it. */
    c.mrs.rtmr[1][47] ^= 0xff;
    kms_hex_encode(m1.rtmr[1], 48, e);
    kms_hex_encode(c.mrs.rtmr[1], 48, a);
    snprintf(want, sizeof(want),
             "Failed to verify os image hash: MRs do not match: RTMR1 mismatch: expected=%s, "
             "actual=%s",
             e, a);
    expect_refused(get_app_key(url, &c), want);
    c.mrs = m1;
    /* Another VM shape than the manifest's: refused. */
    set_vm_config(&c, img1, "\"cpu_count\":8");
    expect_refused(get_app_key(url, &c), "has no entry for this VM shape (cpu_count 8");
    /* The simulated image's measurements claiming image 1: refused. */
    c.default_mrs = 1;
    set_vm_config(&c, img1, "\"cpu_count\":2");
    expect_refused(get_app_key(url, &c), "MRs do not match: MRTD mismatch");
    c.default_mrs = 0;
    /* An image nobody has a manifest for (the server answers 404): refused. */
    set_vm_config(&c, other, "");
    expect_refused(get_app_key(url, &c), "Failed to verify os image hash: no measurement "
                                         "manifest for OS image");
    /* No os_image_hash at all: refused. */
    snprintf(c.vm_config, sizeof(c.vm_config), "{}");
    expect_refused(get_app_key(url, &c), "vm_config has no os_image_hash");

    /* Image 2 from the URL: fetched once, then cached. */
    c.mrs = m2;
    set_vm_config(&c, img2, "");
    CHECK_OK(get_app_key(url, &c));
    CHECK(hits() == 1);
    /* The server now describes other measurements: the cached manifest still decides. */
    m2.rtmr[0][0] ^= 1;
    serve_manifest(img2, &m2);
    CHECK_OK(get_app_key(url, &c));
    CHECK(hits() == 1);
    /* ClearImageCache of another image changes nothing; of image 2 makes kmsd fetch again. */
    clear_cache(aport, hex1);
    CHECK_OK(get_app_key(url, &c));
    CHECK(hits() == 1);
    clear_cache(aport, hex2);
    expect_refused(get_app_key(url, &c), "MRs do not match: RTMR0 mismatch");
    CHECK(hits() == 2);
    c.mrs = m2;
    CHECK_OK(get_app_key(url, &c));
    CHECK(hits() == 2);
    clear_cache(aport, "all");
    CHECK_OK(get_app_key(url, &c));
    CHECK(hits() == 3);
    kmstest_kmsd_stop(pid);
    MHD_stop_daemon(d);
}

/* --insecure-skip-os-image-check: a mismatching client gets keys; kmsd warned at start. */
static void test_skip_flag(void)
{
    unsigned port = kmstest_free_port();
    const char *extra[] = {"--insecure-skip-os-image-check", NULL};
    char url[64], log[300];
    uint8_t img[32], *buf = NULL;
    size_t len = 0;
    struct client c;
    pid_t pid;

    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    pid = start_node("n-skip", port, extra);
    memset(&c, 0, sizeof(c));
    set_mrs(&c.mrs, 0x30);
    SHA256((const uint8_t *)"unchecked image", 15, img);
    set_vm_config(&c, img, "");
    CHECK_OK(get_app_key(url, &c));
    kmstest_kmsd_stop(pid);
    snprintf(log, sizeof(log), "%s/n-skip.log", g_tmp);
    CHECK_OK(kms_file_read(log, 16u << 20, &buf, &len));
    CHECK(buf != NULL &&
          strstr((const char *)buf, "INSECURE: --insecure-skip-os-image-check") != NULL);
    free(buf);
}

/* kmsctl image manifest --from-quote on a real dstack quote (tests/fixtures/tdx/
 * quote-report.json): the manifest it writes accepts that quote's MRTD/RTMR0-2 for the real
 * vm_config that came with it, refuses one register off and another VM shape. */
static void test_cli_from_real_quote(void)
{
    char qpath[300], mpath[300], cmd[2048],
        shape[] = "{\"cpu_count\":16,\"memory_size\":"
                  "68719476736,\"num_gpus\":1}";
    const char *qhex, *vmc, *img;
    struct kms_image_manifest *m = NULL;
    struct kms_image_mrs mrs;
    struct kms_tdx_quote q;
    uint8_t *buf = NULL, *raw = NULL;
    size_t len = 0, rlen = 0;
    json_t *fx;

    CHECK_OK(kms_file_read(kms_test_fixture("tdx/quote-report.json"), 1u << 20, &buf, &len));
    fx = json_loads((const char *)buf, 0, NULL);
    qhex = json_string_value(json_object_get(fx, "quote"));
    vmc = json_string_value(json_object_get(fx, "vm_config"));
    CHECK(qhex != NULL && vmc != NULL);
    if (qhex == NULL || vmc == NULL)
        goto out;
    img = strstr(vmc, "\"os_image_hash\": \"");
    CHECK(img != NULL);
    if (img == NULL)
        goto out;
    img += strlen("\"os_image_hash\": \"");
    snprintf(qpath, sizeof(qpath), "%s/quote.hex", g_tmp);
    snprintf(mpath, sizeof(mpath), "%s/real.json", g_tmp);
    CHECK_OK(kms_file_write_atomic(qpath, qhex, strlen(qhex), 0600));
    snprintf(cmd, sizeof(cmd),
             "%s/cli/kmsctl image manifest --os-image-hash %.64s --vm-shape '%s' --from-quote %s "
             "--out %s",
             getenv("KMS_BIN_DIR"), img, shape, qpath, mpath);
    CHECK(system(cmd) == 0);
    free(buf);
    buf = NULL;
    CHECK_OK(kms_file_read(mpath, KMS_IMAGE_MANIFEST_MAX, &buf, &len));
    CHECK_OK(kms_image_manifest_parse((const char *)buf, len, NULL, &m));
    CHECK_OK(kms_hex_decode(qhex, &raw, &rlen));
    CHECK_OK(kms_tdx_quote_parse(raw, rlen, &q));
    memcpy(mrs.mrtd, q.report.mr_td, 48);
    for (int i = 0; i < 3; i++)
        memcpy(mrs.rtmr[i], q.report.rtmr[i], 48);
    if (m == NULL)
        goto out;
    CHECK_OK(kms_image_manifest_check(m, vmc, &mrs));
    mrs.rtmr[2][5] ^= 1;
    CHECK_RC(kms_image_manifest_check(m, vmc, &mrs), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("MRs do not match: RTMR2 mismatch");
    mrs.rtmr[2][5] ^= 1;
    CHECK_RC(kms_image_manifest_check(m, "{\"cpu_count\":8,\"memory_size\":68719476736}", &mrs),
             KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("has no entry for this VM shape");
out:
    kms_image_manifest_free(m);
    json_decref(fx);
    free(raw);
    free(buf);
}

int main(void)
{
    char tmpl[] = "/tmp/kms-image-XXXXXX";

    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_tmp, sizeof(g_tmp), "%s", mkdtemp(tmpl));
    snprintf(g_sim, sizeof(g_sim), "%s/sim", g_tmp);
    if (kms_sim_open(g_sim, &g_simh) < 0) {
        fprintf(stderr, "cannot open sim: %s\n", kms_err_detail());
        return 1;
    }
    RUN(test_image_check);
    RUN(test_skip_flag);
    RUN(test_cli_from_real_quote);
    kms_sim_free(g_simh);
    free(srv_body);
    kmstest_tmp_finish(g_tmp, kms_test_failures);
    curl_global_cleanup();
    TEST_MAIN_END();
}
