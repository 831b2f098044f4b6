/* kmsctl get-keys: an app's keys over RA-TLS, the way a dstack guest fetches them, with
 * evidence from a real TEE (Nitro NSM, TDX, GCP TDX, the dstack guest agent) or a simulated one;
 * keys to a file or over AF_VSOCK to an enclave's parent. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "attest/dstack_agent.h"
#include "attest/events.h"
#include "attest/sim.h" /* osimage */
#include "cli/cli.h"
#include "common/crypto/crypto.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/secmem.h"
#include "replication/replication.h"

#define MAX_KMS 16

static const char getkeys_usage[] =
    "Usage: kmsctl get-keys --kms URL [--kms URL ...] --app-id HEX [--instance-id HEX]\n"
    "                       [--compose-hash HEX] [--vm-config JSON]\n"
    "                       --out FILE|vsock:CID:PORT [--proxy URL] [--timeout-ms MS]\n"
    "                       [--ca FILE] [--json]\n"
    "                       --tee nitro|tdx|gcp-tdx|dstack [--nsm-dev PATH]\n"
    "                       [--dstack-socket PATH]\n"
    "                       | --tee sim|sim-nitro|sim-gcp --insecure-sim --sim-dir DIR\n"
    "\n"
    "Fetches an app's keys the way a dstack guest does: GetTempCaCert; a fresh key and an\n"
    "RA-TLS client certificate carrying the app's attestation (runtime events app-id,\n"
    "compose-hash, instance-id); mutual TLS pinned to the KMS root CA with hostname check;\n"
    "GetAppKey. The server certificate must have the kms:rpc usage (its attestation is\n"
    "checked with --sim-dir, see below). k256_signature is checked against GetMeta.k256_pubkey.\n"
    "Writes app_keys.json (dstack format) to FILE, or sends the same bytes over an AF_VSOCK\n"
    "stream to vsock:CID:PORT (an enclave hands its keys to the parent instance: CID 3 is the\n"
    "parent; the peer must listen before get-keys starts, which connects first). Several --kms\n"
    "URLs are tried in order (failover): each node gets --timeout-ms (default 5000) for its\n"
    "whole attempt, and the one that served is printed.\n"
    "\n"
    "Proxy: --proxy URL (http://HOST:PORT) sends every request through that HTTP proxy, HTTPS\n"
    "by CONNECT (an enclave reaches the network only this way, through a vsock bridge on the\n"
    "parent). Without --proxy the https_proxy / HTTPS_PROXY environment variables are used\n"
    "(http_proxy for http:// URLs), except for hosts in no_proxy; --proxy \"\" uses none.\n"
    "\n"
    "Evidence:\n"
    "  --tee nitro            inside an AWS Nitro Enclave: an NSM attestation document\n"
    "                         (/dev/nsm, or --nsm-dev) with user_data = report_data, no nonce, no\n"
    "                         public_key, config {os_image_hash}; only app-id is carried\n"
    "  --tee tdx, gcp-tdx     inside a TDX (GCP TDX + vTPM) guest: the quote of the hardware and\n"
    "                         the guest's runtime event log, as the dstack guest sends them\n"
    "  --tee dstack           inside a dstack CVM (TDX or GCP TDX): the attestation of the dstack\n"
    "                         guest agent (Attest over its Unix socket, --dstack-socket, default\n"
    "                         /var/run/dstack.sock, 30 s per call); the app id, compose hash and\n"
    "                         instance id it measured are the ones that count (--app-id may be\n"
    "                         left out: the agent's Info gives it; if given it must match);\n"
    "                         GetAppKey carries Info's vm_config unless --vm-config is given\n"
    "  --tee sim (= sim-tdx)  simulated TDX guest (DstackTdx, legacy OIDs); without --vm-config\n"
    "                         it sends the simulated image's {\"os_image_hash\": ...}, whose\n"
    "                         measurement manifest the simulated TEE keeps in --sim-dir\n"
    "  --tee sim-nitro        simulated AWS Nitro Enclave\n"
    "  --tee sim-gcp          simulated GCP TDX CVM (TDX quote + vTPM quote, PCR14 = events)\n"
    "Simulated TEEs need --insecure-sim and the cluster's --sim-dir. The server certificate must\n"
    "chain to the KMS root CA of GetTempCaCert and carry the kms:rpc usage; with --sim-dir\n"
    "(and --insecure-sim) its attestation must also verify under the simulation roots there.\n"
    "\n"
    "Root CA: --ca FILE (default $KMSCTL_CA; `kmsctl ca pin` writes it) pins the cluster's root\n"
    "CA: GetTempCaCert is then asked only over TLS whose certificate chains to it, and the CA\n"
    "the node reports must be the same key, else the node is refused. Without a pinned CA,\n"
    "kmsctl trusts the CA of the unverified GetTempCaCert answer (as a dstack guest does) and\n"
    "says so on stderr.\n"
    "Hex arguments: exactly 20 (--app-id, --instance-id) or 32 (--compose-hash) bytes, 0x\n"
    "optional; any other length is refused.\n"
    "--json: print {served_by, out, root_ca_pinned, attestation_checked} on stdout (never keys).\n"
    "Exit status: 0 keys written, 1 no node served them (each failure is printed), 2 usage.\n"
#ifdef KMSCTL_ENCLAVE
    "This static kmsctl (-DKMSCTL_STATIC=ON) has no --tee gcp-tdx (tpm2-tss is not linked).\n"
#endif
    ;

struct app_ev {
    struct kms_platform *platform; /* evidence: the --tee producer */
    int own_events;                /* tdx, gcp-tdx: the guest's own runtime event log */
    uint8_t app_id[20];
    uint8_t instance_id[20];
    size_t instance_len;
    uint8_t compose[32];
    const char *vm_config;
};

static int app_attest(void *arg, const uint8_t rd[64], struct kms_attestation **out)
{
    struct app_ev *a = arg;
    struct kms_runtime_event ev[5];

    kms_app_boot_events(ev, a->app_id, a->compose, a->instance_id, a->instance_len);
    if (a->own_events)
        return kms_platform_attest(a->platform, rd, NULL, 0,
                                   a->vm_config[0] != '\0' ? a->vm_config : NULL, out);
    /* evidence: empty --vm-config lets sim-gcp describe its own image */
    return kms_platform_attest(a->platform, rd, ev, 5,
                               a->vm_config[0] != '\0' ? a->vm_config : NULL, out);
}

static int kms_cert_check(void *arg, X509 *leaf)
{
    return kms_check_kms_cert(arg, leaf, NULL, NULL);
}

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Converts a 0x-hex JSON field to plain hex (app_keys.json format) after a length check. */
static json_t *plain_hex(json_t *o, const char *k, size_t want)
{
    const char *s = jstr(o, k);
    uint8_t *b = NULL;
    size_t n = 0;
    char *h;
    json_t *r;

    if (s == NULL || kms_hex_decode(s, &b, &n) < 0 || n != want) {
        if (b != NULL)
            kms_free_secret(b, n);
        return NULL;
    }
    h = kms_hex_dup(b, n, 0);
    kms_free_secret(b, n);
    r = h != NULL ? json_string(h) : NULL;
    if (h != NULL)
        kms_free_secret(h, strlen(h));
    return r;
}

/* What is left of an attempt's time budget; KMS_ERR_TIMEOUT once spent. */
static int budget(const struct timespec *deadline, const char *url, long total, long *left)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    *left =
        (long)(deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
    if (*left <= 0)
        return kms_err_set(KMS_ERR_TIMEOUT, "%s did not serve the keys within %ld ms", url, total);
    return 0;
}

/* One get-keys attempt at url. pin: the root CA the node must present and report (NULL: the
 * ca_cert of its unverified GetTempCaCert answer is trusted, as the dstack guest does). */
static int get_keys_from(const char *url, const char *proxy, const char *pin, struct app_ev *a,
                         struct kms_attest_ctx *actx, long timeout_ms, json_t **app_keys)
{
    struct timespec deadline;
    struct kms_rpc_opts o;
    struct kms_ra_identity ra;
    struct kms_rpc_session *sess = NULL;
    json_t *tmp = NULL, *key = NULL, *meta = NULL, *out = NULL, *kp;
    const char *tmp_cert, *tmp_key, *ca_cert;
    uint8_t *sig = NULL, *k256 = NULL, *meta_pub = NULL, *spki = NULL;
    size_t sig_len = 0, k256_len = 0, meta_pub_len = 0;
    uint8_t pub[33], rec[33], digest[32];
    X509 *ca = NULL;
    int spki_len;
    char *spki_hex = NULL, *body = NULL;
    char prpc_url[1100];
    int rc = 0;

    memset(&o, 0, sizeof(o));
    memset(&ra, 0, sizeof(ra));
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    o.url = url;
    o.proxy = proxy;
    if (pin != NULL) {
        /* the pinned CA, not the answer, decides whom GetTempCaCert is asked */
        o.ca_pem = pin;
        o.no_host_check = 1;
        o.server_check = kms_cert_check;
        o.server_check_arg = actx;
    }
    /* Round trips (issue 13): GetAppKey and GetMeta share one RA-TLS connection, whose TCP
     * connection opens while GetTempCaCert runs on its own. */
    KMS_GUARD(kms_rpc_session_new(&sess));
    kms_rpc_session_preconnect(sess, url, proxy);
    KMS_GUARD(budget(&deadline, url, timeout_ms, &o.timeout_ms));
    KMS_GUARD(kms_rpc_call(&o, "GetTempCaCert", NULL, &tmp, NULL));
    tmp_cert = jstr(tmp, "temp_ca_cert");
    tmp_key = jstr(tmp, "temp_ca_key");
    ca_cert = jstr(tmp, "ca_cert");
    KMS_ENSURE(tmp_cert != NULL && tmp_key != NULL && ca_cert != NULL, KMS_ERR_PARSE,
               "GetTempCaCert response is incomplete");
    if (pin != NULL) {
        rc = kms_cli_same_ca(pin, ca_cert);
        KMS_GUARD(rc);
        KMS_ENSURE(rc == 1, KMS_ERR_VERIFY,
                   "the node reports another root CA than the pinned one (--ca)");
        rc = 0;
    }
    o.no_host_check = 0;
    KMS_GUARD(kms_ra_identity_new(tmp_cert, tmp_key, app_attest, a, &ra));
    o.ca_pem = ca_cert;
    o.client_cert_pem = ra.cert_pem;
    o.client_key_pem = ra.key_pem;
    o.server_check = kms_cert_check;
    o.server_check_arg = actx;
    o.session = sess;
    {
        /* As the dstack guest (GetAppKey{vm_config: sys_config.vm_config}): a TDX RA-TLS
         * certificate carries no vm_config, so it travels in the request ("" = none). */
        json_t *req = json_pack("{s:i,s:s}", "api_version", 1, "vm_config",
                                a->vm_config != NULL ? a->vm_config : "");

        body = json_dumps(req, JSON_COMPACT);
        json_decref(req);
    }
    KMS_GUARD(budget(&deadline, url, timeout_ms, &o.timeout_ms));
    KMS_GUARD(kms_rpc_call(&o, "GetAppKey", body, &key, NULL));
    KMS_GUARD(budget(&deadline, url, timeout_ms, &o.timeout_ms));
    KMS_GUARD(kms_rpc_call(&o, "GetMeta", NULL, &meta, NULL));
    /* k256_signature must come from the cluster's root k256 key. */
    KMS_GUARD(kms_prpc_get_bytes(key, "k256_signature", &sig, &sig_len));
    KMS_GUARD(kms_prpc_get_bytes(key, "k256_key", &k256, &k256_len));
    KMS_GUARD(kms_prpc_get_bytes(meta, "k256_pubkey", &meta_pub, &meta_pub_len));
    KMS_ENSURE(sig_len == 65 && k256_len == 32 && meta_pub_len == 33, KMS_ERR_PARSE,
               "GetAppKey/GetMeta returned fields of the wrong size");
    KMS_GUARD(kms_k256_pubkey(k256, pub));
    kms_k256_issued_digest(a->app_id, 20, pub, digest);
    rc = kms_k256_recover(sig, digest, rec);
    KMS_ENSURE(rc == 0 && memcmp(rec, meta_pub, 33) == 0, KMS_ERR_VERIFY,
               "k256_signature does not verify against GetMeta.k256_pubkey");
    KMS_GUARD(kms_cert_from_pem(ca_cert, &ca));
    spki_len = i2d_PUBKEY(X509_get0_pubkey(ca), &spki);
    KMS_ENSURE(spki_len > 0, KMS_ERR_CRYPTO, "cannot encode the root CA key");
    spki_hex = kms_hex_dup(spki, (size_t)spki_len, 0);
    KMS_GUARD_PTR(spki_hex);
    out = json_object();
    KMS_GUARD_PTR(out);
    json_object_set_new(out, "disk_crypt_key", plain_hex(key, "disk_crypt_key", 32));
    json_object_set_new(out, "env_crypt_key", plain_hex(key, "env_crypt_key", 32));
    json_object_set_new(out, "k256_key", plain_hex(key, "k256_key", 32));
    json_object_set_new(out, "k256_signature", plain_hex(key, "k256_signature", 65));
    KMS_ENSURE(json_object_size(out) == 4, KMS_ERR_PARSE, "GetAppKey response is incomplete");
    json_object_set_new(
        out, "gateway_app_id",
        json_string(jstr(key, "gateway_app_id") != NULL ? jstr(key, "gateway_app_id") : ""));
    json_object_set_new(out, "ca_cert", json_string(ca_cert));
    snprintf(prpc_url, sizeof(prpc_url), "%s/prpc", url);
    kp = json_pack("{s:{s:s,s:s,s:s,s:s}}", "Kms", "url", prpc_url, "pubkey", spki_hex,
                   "tmp_ca_key", tmp_key, "tmp_ca_cert", tmp_cert);
    json_object_set_new(out, "key_provider", kp);
    *app_keys = out;
    out = NULL;
out:
    kms_rpc_session_free(sess);
    json_decref(out);
    json_decref(tmp);
    json_decref(key);
    json_decref(meta);
    kms_ra_identity_clear(&ra);
    free(sig);
    if (k256 != NULL)
        kms_free_secret(k256, k256_len);
    free(meta_pub);
    OPENSSL_free(spki);
    free(spki_hex);
    free(body);
    X509_free(ca);
    OPENSSL_cleanse(pub, sizeof(pub));
    return rc;
}

/* --out vsock:CID:PORT → 1 (cid, port set); a file path → 0; a malformed vsock spec → -1. */
static int parse_vsock(const char *spec, unsigned *cid, unsigned *port)
{
    unsigned long c, p;
    char *end;

    if (strncmp(spec, "vsock:", 6) != 0)
        return 0;
    errno = 0;
    c = strtoul(spec + 6, &end, 10);
    if (end == spec + 6 || *end != ':' || errno != 0 || c > 0xffffffffUL)
        return -1;
    spec = end + 1;
    p = strtoul(spec, &end, 10);
    if (end == spec || *end != '\0' || errno != 0 || p > 0xffffffffUL)
        return -1;
    *cid = (unsigned)c;
    *port = (unsigned)p;
    return 1;
}

/* Connects an AF_VSOCK stream to cid:port; *fd is the socket. */
static int vsock_connect(unsigned cid, unsigned port, int *fd)
{
    struct sockaddr_vm sa;
    int s, err;
    int rc = 0;

    *fd = -1;
    s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        err = errno;
        return kms_err_set(KMS_ERR_IO,
                           "AF_VSOCK is not available here (%s): vsock output works inside a "
                           "Nitro Enclave or a VM with a vsock device",
                           strerror(err));
    }
    memset(&sa, 0, sizeof(sa));
    sa.svm_family = AF_VSOCK;
    sa.svm_cid = cid;
    sa.svm_port = port;
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        err = errno;
        if (err == ECONNREFUSED || err == ECONNRESET)
            rc = kms_err_set(KMS_ERR_NET,
                             "nobody listens on vsock CID %u port %u: start the receiver first "
                             "(on the parent: socat -u VSOCK-LISTEN:%u CREATE:app_keys.json)",
                             cid, port, port);
        else
            rc = kms_err_set(KMS_ERR_NET,
                             "cannot reach vsock CID %u port %u: %s (is there a peer with that "
                             "CID? inside a Nitro Enclave the parent instance is CID 3)",
                             cid, port, strerror(err));
        close(s);
        return rc;
    }
    *fd = s;
    return 0;
}

/* Writes all of p to the vsock peer, then closes the stream so the peer sees the end. */
static int vsock_send(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return kms_err_set(KMS_ERR_NET, "sending the keys over vsock failed: %s",
                               strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    if (shutdown(fd, SHUT_WR) != 0)
        return kms_err_set(KMS_ERR_NET, "closing the vsock stream failed: %s", strerror(errno));
    return 0;
}

/* --tee dstack: the app id comes from the guest agent's Info (what its evidence carries, and
 * what the KMS signs keys for); --app-id, when given, must be that one. Info's vm_config goes
 * into vmc (when it fits) for GetAppKey, as the dstack guest sends its sys_config's. */
static int dstack_app_id(const char *sock, const char *app_hex, uint8_t app_id[20], char *vmc,
                         size_t vmc_len)
{
    const char *cfg;
    json_t *info = NULL;
    const char *measured;
    uint8_t m[20];
    int rc = -1;

    if (kms_dstack_agent_info(sock, 0, &info) < 0) {
        kms_cli_die("cannot open the TEE");
        goto out;
    }
    measured = json_string_value(json_object_get(info, "app_id"));
    if (measured == NULL) {
        fprintf(stderr, "kmsctl: the dstack guest agent's Info has no app_id\n");
        goto out;
    }
    if (kms_hex_decode_exact(measured, m, 20) < 0) {
        fprintf(stderr, "kmsctl: the dstack guest agent reports app_id \"%.64s\", not 20 bytes\n",
                measured);
        goto out;
    }
    if (app_hex != NULL && memcmp(m, app_id, 20) != 0) {
        fprintf(stderr,
                "kmsctl: --app-id %s is not the app id the dstack guest agent measured (%s)\n",
                app_hex, measured);
        goto out;
    }
    memcpy(app_id, m, 20);
    cfg = json_string_value(json_object_get(info, "vm_config"));
    if (cfg != NULL && strlen(cfg) >= vmc_len) {
        fprintf(stderr, "kmsctl: the dstack guest agent's vm_config is longer than %zu bytes\n",
                vmc_len - 1);
        goto out;
    }
    snprintf(vmc, vmc_len, "%s", cfg != NULL ? cfg : "");
    rc = 0;
out:
    json_decref(info);
    return rc;
}

static int usage_err(void)
{
    fprintf(stderr, "kmsctl: %s\n", kms_err_detail());
    return 2;
}

int kms_cli_get_keys(int argc, char **argv)
{
    static const struct option opts[] = {{"kms", required_argument, NULL, 'k'},
                                         {"app-id", required_argument, NULL, 'a'},
                                         {"instance-id", required_argument, NULL, 'i'},
                                         {"compose-hash", required_argument, NULL, 'c'},
                                         {"vm-config", required_argument, NULL, 'v'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"tee", required_argument, NULL, 't'},
                                         {"insecure-sim", no_argument, NULL, 'I'},
                                         {"sim-dir", required_argument, NULL, 's'},
                                         {"timeout-ms", required_argument, NULL, 'T'},
                                         {"proxy", required_argument, NULL, 'P'},
                                         {"nsm-dev", required_argument, NULL, 'N'},
                                         {"dstack-socket", required_argument, NULL, 'D'},
                                         {"ca", required_argument, NULL, 'C'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *urls[MAX_KMS];
    const char *proxy = NULL, *nsm_dev = NULL, *ca_path = NULL, *served = NULL;
    const char *dstack_socket = NULL;
    char *pin = NULL;
    int as_json = 0;
    struct kms_platform_paths paths;
    unsigned vcid = 0, vport = 0;
    int vsock = 0, vfd = -1, real;
    size_t n_urls = 0;
    const char *app_hex = NULL, *inst_hex = NULL, *compose_hex = NULL, *out_path = NULL;
    const char *tee = "sim", *sim_dir = NULL;
    int insecure = 0, c, rc = 1;
    long timeout_ms = 5000;
    struct app_ev a;
    struct kms_platform_cfg pcfg = {0};
    struct kms_attest_ctx *actx = NULL;
    json_t *keys = NULL;
    char *txt = NULL;
    char sim_vm_config[128]; /* osimage */
    char agent_vm_config[4096];

    memset(&a, 0, sizeof(a));
    a.vm_config = "";
    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'k':
            if (n_urls >= MAX_KMS) {
                fprintf(stderr, "kmsctl: at most %d --kms URLs\n", MAX_KMS);
                return 2;
            }
            urls[n_urls++] = optarg;
            break;
        case 'a':
            app_hex = optarg;
            break;
        case 'i':
            inst_hex = optarg;
            break;
        case 'c':
            compose_hex = optarg;
            break;
        case 'v':
            a.vm_config = optarg;
            break;
        case 'o':
            out_path = optarg;
            break;
        case 't':
            tee = optarg;
            break;
        case 'I':
            insecure = 1;
            break;
        case 's':
            sim_dir = optarg;
            break;
        case 'T':
            timeout_ms = kms_cli_parse_ms(optarg);
            break;
        case 'P':
            proxy = optarg;
            break;
        case 'N':
            nsm_dev = optarg;
            break;
        case 'D':
            dstack_socket = optarg;
            break;
        case 'C':
            ca_path = optarg;
            break;
        case 'j':
            as_json = 1;
            break;
        case 'h':
            fputs(getkeys_usage, stdout);
            return 0;
        default:
            fputs(getkeys_usage, stderr);
            return 2;
        }
    }
    if (n_urls == 0 || out_path == NULL || optind != argc || timeout_ms <= 0) {
        fputs(getkeys_usage, stderr);
        return 2;
    }
    /* evidence: --tee nitro | tdx | gcp-tdx | dstack, or sim | sim-tdx | sim-nitro | sim-gcp */
    if (kms_platform_kind_parse(tee, &pcfg.kind) < 0) {
        fprintf(stderr, "kmsctl: %s\n", kms_err_detail());
        return 2;
    }
    if (app_hex == NULL && pcfg.kind != KMS_PLATFORM_DSTACK) {
        fputs("kmsctl: --app-id is required (only --tee dstack reads it from the guest agent)\n",
              stderr);
        return 2;
    }
    /* osimage: a simulated TDX guest runs the simulated TEE's image (its manifest is in the
     * sim dir), so kmsd's OS-image check passes by default. */
    if (pcfg.kind == KMS_PLATFORM_SIM_TDX && a.vm_config[0] == '\0') {
        if (kms_sim_vm_config(sim_vm_config, sizeof(sim_vm_config)) < 0)
            return kms_cli_die("simulated vm_config");
        a.vm_config = sim_vm_config;
    }
    real = pcfg.kind == KMS_PLATFORM_TDX || pcfg.kind == KMS_PLATFORM_GCP_TDX ||
           pcfg.kind == KMS_PLATFORM_NITRO || pcfg.kind == KMS_PLATFORM_DSTACK;
    if (!real && (!insecure || sim_dir == NULL)) {
        fputs("kmsctl: simulated TEEs need --insecure-sim --sim-dir DIR (or use --tee nitro, tdx, "
              "gcp-tdx or dstack inside a real TEE)\n",
              stderr);
        return 2;
    }
    if (sim_dir != NULL && !insecure) {
        fputs("kmsctl: --sim-dir trusts simulation roots: add --insecure-sim (testing only)\n",
              stderr);
        return 2;
    }
    if (nsm_dev != NULL && pcfg.kind != KMS_PLATFORM_NITRO) {
        fputs("kmsctl: --nsm-dev needs --tee nitro\n", stderr);
        return 2;
    }
    if (dstack_socket != NULL && pcfg.kind != KMS_PLATFORM_DSTACK) {
        fputs("kmsctl: --dstack-socket needs --tee dstack\n", stderr);
        return 2;
    }
    vsock = parse_vsock(out_path, &vcid, &vport);
    if (vsock < 0) {
        fprintf(stderr, "kmsctl: --out %s: expected vsock:CID:PORT (decimal)\n", out_path);
        return 2;
    }
    kms_platform_paths_default(&paths);
    if (dstack_socket != NULL)
        paths.dstack_socket = dstack_socket;
    if (app_hex != NULL && kms_cli_hex_arg("--app-id", app_hex, a.app_id, 20) < 0)
        return usage_err();
    if (pcfg.kind == KMS_PLATFORM_DSTACK &&
        dstack_app_id(paths.dstack_socket, app_hex, a.app_id, agent_vm_config,
                      sizeof(agent_vm_config)) < 0)
        return 1;
    if (pcfg.kind == KMS_PLATFORM_DSTACK && a.vm_config[0] == '\0')
        a.vm_config = agent_vm_config;
    if (inst_hex != NULL) {
        if (kms_cli_hex_arg("--instance-id", inst_hex, a.instance_id, 20) < 0)
            return usage_err();
        a.instance_len = 20;
    }
    if (compose_hex != NULL) {
        if (kms_cli_hex_arg("--compose-hash", compose_hex, a.compose, 32) < 0)
            return usage_err();
    } else {
        SHA256(a.app_id, 20, a.compose);
    }
    if (kms_cli_load_ca(ca_path, &pin) < 0)
        return kms_cli_die("cannot read the root CA");
    if (nsm_dev != NULL)
        paths.nsm_dev = nsm_dev;
    pcfg.paths = &paths;
    pcfg.sim_dir = real ? NULL : sim_dir;
    a.own_events = pcfg.kind == KMS_PLATFORM_TDX || pcfg.kind == KMS_PLATFORM_GCP_TDX ||
                   pcfg.kind == KMS_PLATFORM_DSTACK;
    if (kms_platform_open(&pcfg, &a.platform) < 0) {
        free(pin);
        return kms_cli_die(real ? "cannot open the TEE" : "cannot open the simulated TEE");
    }
    if (pin == NULL)
        fprintf(stderr,
                "kmsctl: WARNING: no root CA pinned (--ca or " KMS_CLI_CA_ENV
                "): the CA of the node's unverified GetTempCaCert answer is trusted%s\n",
                sim_dir != NULL ? "; its certificate's attestation is checked"
                                : ", and its certificate's attestation is NOT checked");
    if (sim_dir != NULL) {
        actx = kms_attest_ctx_new();
        if (actx == NULL || kms_platform_add_sim_roots(sim_dir, actx) < 0) {
            rc = kms_cli_die("cannot set up verification");
            goto out;
        }
    }
    /* the receiver must be there before keys are fetched for it */
    if (vsock && vsock_connect(vcid, vport, &vfd) < 0) {
        rc = kms_cli_die("--out");
        goto out;
    }
    for (size_t i = 0; i < n_urls; i++) {
        /* only for messages: the proxy libcurl will use (no_proxy aside) */
        const char *via = proxy;

        if (via == NULL && strncmp(urls[i], "https:", 6) == 0)
            via = getenv("https_proxy") != NULL ? getenv("https_proxy") : getenv("HTTPS_PROXY");
        else if (via == NULL)
            via = getenv("http_proxy");
        if (get_keys_from(urls[i], proxy, pin, &a, actx, timeout_ms, &keys) == 0) {
            fprintf(stderr, "kmsctl: keys served by %s\n", urls[i]);
            served = urls[i];
            break;
        }
        if (via != NULL && via[0] != '\0') {
            fprintf(stderr, "kmsctl: %s (through proxy %s): %s\n", urls[i], via, kms_err_detail());
        } else {
            char msg[300];

            snprintf(msg, sizeof(msg), "%s", urls[i]);
            kms_cli_fail(msg, urls[i]);
        }
    }
    if (keys == NULL) {
        fprintf(stderr, "kmsctl: no KMS served the keys\n");
        goto out;
    }
    txt = json_dumps(keys, JSON_INDENT(2));
    if (txt == NULL) {
        rc = kms_cli_die("cannot encode the keys");
        goto out;
    }
    if (vsock) {
        if (vsock_send(vfd, txt, strlen(txt)) < 0) {
            rc = kms_cli_die("cannot deliver the keys");
            goto out;
        }
        fprintf(stderr, "kmsctl: keys sent to vsock CID %u port %u\n", vcid, vport);
    } else if (kms_file_write_atomic(out_path, txt, strlen(txt), 0600) < 0) {
        rc = kms_cli_die("cannot write the keys file");
        goto out;
    }
    if (as_json) {
        /* what happened, never the keys */
        json_t *o = json_pack("{s:s,s:s,s:b,s:b}", "served_by", served, "out", out_path,
                              "root_ca_pinned", pin != NULL, "attestation_checked", actx != NULL);

        kms_cli_print_json(o);
        json_decref(o);
    }
    rc = 0;
out:
    free(pin);
    if (vfd >= 0)
        close(vfd);
    if (txt != NULL)
        kms_free_secret(txt, strlen(txt));
    json_decref(keys);
    kms_attest_ctx_free(actx);
    kms_platform_free(a.platform);
    return rc;
}
