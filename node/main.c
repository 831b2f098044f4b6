/* kmsd: the key management node daemon. */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "common/log.h"
#include "common/version.h"
#include "common/secmem.h"
#include "node/node.h"

static struct kms_node *g_node;

static const char usage_head[] =
    "Usage: kmsd [OPTIONS]\n"
    "\n"
    "kmsd is a key management node for confidential computing, wire-compatible with the dstack\n"
    "KMS. Without keys it serves the Onboard service (plain HTTP) until an operator calls\n"
    "Bootstrap (new cluster) or Onboard (join a running node) and then Finish; it then serves\n"
    "the KMS service over RA-TLS (HTTPS) on --listen.\n"
    "\n"
    "Start a development node on the embedded defaults (SQLite keystore, simulated TEE, dev\n"
    "authorization):\n"
    "  kmsd --data-dir /tmp/kms1 --tee sim --insecure-sim --auth dev --listen 127.0.0.1:8001\n"
    "  kmsctl bootstrap --onboard-url http://127.0.0.1:8001 --domain localhost\n"
    "\n"
    "Options:\n";

static const char usage_tail[] =
    "\n"
    "HTTP endpoints: /prpc/<Method>?json (pRPC JSON, also with the KMS./Onboard. prefix),\n"
    "GET /health (state with distinct status codes), GET /metrics (Prometheus).\n";

/* SIGINT/SIGTERM are blocked in every thread and taken here with sigwait, so stopping the
 * node runs in a normal thread (locks are not async-signal-safe). */
static pthread_mutex_t g_node_lock = PTHREAD_MUTEX_INITIALIZER;

static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    int sig;

    for (;;) {
        if (sigwait(set, &sig) != 0)
            continue;
        pthread_mutex_lock(&g_node_lock);
        if (g_node != NULL)
            kms_node_stop(g_node);
        pthread_mutex_unlock(&g_node_lock);
    }
    return NULL;
}

/*
 * One row per option: the getopt table, --help and the --config file parser are all made
 * from it, so they cannot disagree. An option takes a value exactly when it has a placeholder
 * (arg) for --help. A setter returns 0, 1 to stop with exit status 0 (--help), or -1 after
 * printing why the value is refused (exit status 2).
 */
struct opt {
    const char *name; /* the long option, without "--" */
    char short_name;  /* -X as well; 0 for none */
    const char *arg;  /* the value's placeholder in --help; NULL: a flag without value */
    const char *conf; /* its name in a --config file; NULL: command line only */
    int (*set)(struct kms_node_cfg *cfg, const struct opt *o, const char *arg);
    size_t off;       /* the struct kms_node_cfg field of set_str, set_flag, set_ms */
    const char *help; /* lines after the first are indented under the first */
};

static void usage(void);

static int set_str(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    *(const char **)(void *)((char *)cfg + o->off) = arg;
    return 0;
}

static int set_flag(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    (void)arg;
    *(int *)(void *)((char *)cfg + o->off) = 1;
    return 0;
}

static int set_ms(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    char *end = NULL;
    long v = strtol(arg, &end, 10);

    if (end == arg || *end != '\0' || v <= 0 || v > 600000) {
        fprintf(stderr, "kmsd: --%s must be a number of milliseconds (1..600000)\n", o->name);
        return -1;
    }
    *(long *)(void *)((char *)cfg + o->off) = v;
    return 0;
}

static int set_peer_window(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    char *end = NULL;
    long v = strtol(arg, &end, 10);

    if (end == arg || *end != '\0' || v <= 0 || v > 7L * 86400) {
        fprintf(stderr, "kmsd: --%s must be a number of seconds (1..604800)\n", o->name);
        return -1;
    }
    cfg->peer_confirm_window_s = v;
    return 0;
}

/* auth: a duration, N[ms|s|m|h] (bare N: seconds), into a long field in ms. */
static int parse_duration(const struct opt *o, const char *arg, long min_ms, long *ms)
{
    char *end = NULL;
    long long v, mul = 1000;

    errno = 0;
    v = strtoll(arg, &end, 10);
    if (arg[0] < '0' || arg[0] > '9' || end == arg || errno != 0)
        goto bad;
    if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else if (strcmp(end, "s") != 0 && *end != '\0')
        goto bad;
    if (v > 7LL * 24 * 3600 * 1000 / mul || v * mul < min_ms)
        goto bad;
    *ms = (long)(v * mul);
    return 0;
bad:
    fprintf(stderr,
            "kmsd: --%s must be a duration from %ld ms to 7 days: N (seconds), Nms, Ns, Nm or "
            "Nh\n",
            o->name, min_ms);
    return -1;
}

static int set_auth_interval(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    return parse_duration(o, arg, 100, &cfg->auth_interval_ms);
}

/* 0 is stored as -1: "no grace" (0 in the config struct means the default). */
static int set_auth_grace(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    if (parse_duration(o, arg, 0, &cfg->auth_grace_ms) < 0)
        return -1;
    if (cfg->auth_grace_ms == 0)
        cfg->auth_grace_ms = -1;
    return 0;
}

/* Unsigned decimal in [min, max] into *v. */
static int parse_uint(const char *s, const struct opt *o, unsigned long long min,
                      unsigned long long max, unsigned long long *v)
{
    char *end = NULL;

    errno = 0;
    *v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || end == s || *end != '\0' || errno != 0 || *v < min ||
        *v > max) {
        fprintf(stderr, "kmsd: --%s must be a number from %llu to %llu\n", o->name, min, max);
        return -1;
    }
    return 0;
}

/* Appends arg to a repeatable option's list of at most max values. */
static int add_value(const char **list, size_t *n, size_t max, const struct opt *o, const char *arg)
{
    if (*n >= max) {
        fprintf(stderr, "kmsd: at most %zu --%s options\n", max, o->name);
        return -1;
    }
    list[(*n)++] = arg;
    return 0;
}

static int set_eth_rpc(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    return add_value(cfg->eth_rpc_urls, &cfg->n_eth_rpc_urls, KMS_NODE_MAX_ETH_RPC, o, arg);
}

static int set_aia_host(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    return add_value(cfg->aia_hosts, &cfg->n_aia_hosts, 8, o, arg);
}

static int set_peer(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    return add_value(cfg->peers, &cfg->n_peers, KMS_NODE_MAX_PEERS, o, arg);
}

static int set_eth_quorum(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    unsigned long long v;

    if (parse_uint(arg, o, 1, KMS_NODE_MAX_ETH_RPC, &v) < 0)
        return -1;
    cfg->eth_quorum_k = (unsigned)v;
    return 0;
}

static int set_eth_chain_id(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    unsigned long long v;

    if (parse_uint(arg, o, 1, UINT64_MAX, &v) < 0)
        return -1;
    cfg->eth_chain_id = v;
    return 0;
}

static int set_eth_cache_ttl(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    unsigned long long v;

    if (parse_uint(arg, o, 0, 600000, &v) < 0)
        return -1;
    /* 0 on the command line disables the cache (the backend's "< 0") */
    cfg->eth_cache_ttl_ms = v == 0 ? -1 : (long)v;
    return 0;
}

static int set_aia_fetch(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    if (strcmp(arg, "on") != 0 && strcmp(arg, "off") != 0) {
        fprintf(stderr, "kmsd: --aia-fetch must be on or off\n");
        return -1;
    }
    return set_str(cfg, o, arg);
}

static int set_gcp_pcr0(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    (void)o;
    if (strcmp(arg, "any") == 0) {
        cfg->gcp_pcr0_any = 1;
        return 0;
    }
    if (strlen(arg) != 64 || strspn(arg, "0123456789abcdefABCDEF") != 64) {
        fprintf(stderr, "kmsd: --gcp-pcr0 must be 64 hex digits or any\n");
        return -1;
    }
    if (cfg->n_gcp_pcr0 >= 8) {
        fprintf(stderr, "kmsd: at most 8 --gcp-pcr0 values\n");
        return -1;
    }
    cfg->gcp_pcr0[cfg->n_gcp_pcr0++] = arg;
    return 0;
}

static int set_nitro_device_id(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    (void)o;
    if (strcmp(arg, "fixed") == 0) {
        cfg->nitro_device_id_fixed = 1;
    } else if (strcmp(arg, "quirk") != 0) {
        fprintf(stderr, "kmsd: --nitro-device-id must be quirk or fixed\n");
        return -1;
    }
    return 0;
}

static int set_log_level(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    int lvl = kms_log_parse_level(arg);

    (void)cfg;
    (void)o;
    if (lvl < 0) {
        fprintf(stderr, "kmsd: --log-level must be debug, info, warn or error\n");
        return -1;
    }
    kms_log_set_level((enum kms_log_level)lvl);
    return 0;
}

static int set_log_format(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    int f = kms_log_parse_format(arg);

    (void)cfg;
    (void)o;
    if (f < 0) {
        fprintf(stderr, "kmsd: --log-format must be text or json\n");
        return -1;
    }
    kms_log_set_format((enum kms_log_format)f);
    return 0;
}

/* --config is read before the other options (load_config). */
static int set_config(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    (void)cfg;
    (void)o;
    (void)arg;
    return 0;
}

static int set_help(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    (void)cfg;
    (void)o;
    (void)arg;
    usage();
    return 1;
}

static int set_version(struct kms_node_cfg *cfg, const struct opt *o, const char *arg)
{
    (void)cfg;
    (void)o;
    (void)arg;
    printf("kmsd %s\n", KMS_VERSION_STRING);
    return 1;
}

#define FIELD(f) offsetof(struct kms_node_cfg, f)

/* In --help order. */
static const struct opt options[] = {
    {"data-dir", 0, "DIR", "data-dir", set_str, FIELD(data_dir),
     "keystore directory (SQLite kms.db, KEK file); required"},
    {"listen", 0, "HOST:PORT", "listen", set_str, FIELD(listen),
     "KMS HTTPS listener (default 0.0.0.0:8000)"},
    {"onboard-listen", 0, "H:P", "onboard-listen", set_str, FIELD(onboard_listen),
     "Onboard HTTP listener before keys exist (default: --listen)"},
    {"name", 0, "NAME", "name", set_str, FIELD(name),
     "node name for logs and GetAttestationInfo.site_name"},
    {"tee", 0, "TEE", "tee", set_str, FIELD(tee),
     "evidence producer (default sim):\n"
     "  auto     the guest agent socket when it exists: dstack; else\n"
     "           detect as dstack does (/dev/nsm: Nitro, refused;\n"
     "           GCE DMI + /dev/tdx_guest: gcp-tdx; /dev/tdx_guest\n"
     "           or configfs-tsm: tdx)\n"
     "  tdx      TDX quotes via configfs-tsm (/sys/kernel/config/tsm/\n"
     "           report), else the /dev/tdx_guest ioctl; runtime\n"
     "           events from /run/log/dstack/runtime_events.log\n"
     "  gcp-tdx  tdx plus a vTPM quote (GCP AK from NV, /dev/tpmrm0)\n"
     "  dstack   inside a dstack CVM (TDX or GCP TDX): evidence from\n"
     "           the dstack guest agent's Attest (--dstack-socket)\n"
     "  sim | sim-nitro | sim-gcp  simulated TDX / Nitro Enclave /\n"
     "           GCP TDX+vTPM evidence (needs --insecure-sim)"},
    {"dstack-socket", 0, "PATH", "dstack-socket", set_str, FIELD(dstack_socket),
     "the dstack guest agent's Unix socket for --tee dstack and auto\n"
     "(default /var/run/dstack.sock; 30 s timeout per call)"},
    {"vm-config", 0, "JSON", "vm-config", set_str, FIELD(vm_config),
     "this node's vm_config (a JSON object with \"os_image_hash\", 64\n"
     "hex digits), carried in its own attestation as a dstack guest's\n"
     "sys_config carries it: a peer's OS-image check needs it to\n"
     "onboard this node. For --tee tdx, gcp-tdx (no guest agent) and\n"
     "sim; --tee dstack takes the agent's (docs/os-image-manifest.md)"},
    {"insecure-sim", 0, NULL, "insecure-sim", set_flag, FIELD(insecure_sim),
     "accept the simulated TEE and trust its simulation roots\n"
     "(development only; reported in logs, /health and GetMeta)"},
    {"sim-dir", 0, "DIR", "sim-dir", set_str, FIELD(sim_dir),
     "simulated TEE directory (default DATA_DIR/sim); share it between\n"
     "nodes and clients of one local cluster"},
    {"trust-sim-root", 0, "FILE", "trust-sim-root", set_str, FIELD(trust_sim_root),
     "also trust this simulation TDX root (PEM)"},
    {"sim-collateral", 0, NULL, "sim-collateral", set_flag, FIELD(sim_collateral),
     "with --insecure-sim: evaluate the TCB of simulated TDX quotes\n"
     "against collateral made for --sim-dir, so they report tcbStatus\n"
     "\"UpToDate\" (what DstackKms.isKmsAllowed requires)"},
    {"pccs-url", 0, "URL", "pccs-url", set_str, FIELD(pccs_url),
     "evaluate the TCB of TDX quotes with Intel collateral (TCB info,\n"
     "QE identity, CRLs) from this PCCS or Intel PCS (v4 API), cached\n"
     "until its nextUpdate (default: env PCCS_URL; neither: no TCB\n"
     "evaluation, tcbStatus \"\")"},
    {"collateral-file", 0, "FILE", "collateral-file", set_str, FIELD(collateral_file),
     "air-gapped TCB evaluation: collateral from a JSON file (see the\n"
     "operator guide), used before --pccs-url"},
    {"aia-fetch", 0, "on|off", "aia-fetch", set_aia_fetch, FIELD(aia_fetch),
     "GCP vTPM: fetch the AK certificate's issuer (Google's EK/AK CA\n"
     "Intermediate, not in the evidence) from its AIA caIssuers URL\n"
     "(http/https, 5 s, 3 hops, cached); the anchor stays the pinned\n"
     "Google root (default on; off with --insecure-sim)"},
    {"aia-host", 0, "SUFFIX", "aia-host", set_aia_host, 0,
     "hosts AIA fetching may contact: SUFFIX or its subdomains\n"
     "(repeatable, at most 8; default googleapis.com)"},
    {"gcp-root", 0, "FILE", "gcp-root", set_str, FIELD(gcp_root),
     "GCP vTPM AK roots (PEM; default: embedded Google EK/AK CA Root)"},
    {"gcp-pcr0", 0, "HEX|any", "gcp-pcr0", set_gcp_pcr0, 0,
     "GCP: allowed TPM PCR0 (firmware) values, checked with the UKI\n"
     "(third PCR2 event) == os_image_hash before authorization\n"
     "(repeatable; default the reference's GCP OVMF v2 value)"},
    /* osimage: plain-TDX OS-image measurement manifests (docs/os-image-manifest.md) */
    {"image-manifest-dir", 0, "DIR", "image-manifest-dir", set_str, FIELD(image_manifest_dir),
     "plain TDX: before authorization, the client's MRTD and RTMR0-2\n"
     "must be the measurements that the manifest DIR/<os_image_hash>.json\n"
     "lists for its vm_config's VM shape (see docs/os-image-manifest.md)"},
    {"image-manifest-url", 0, "URL", "image-manifest-url", set_str, FIELD(image_manifest_url),
     "plain TDX: fetch manifests the directory lacks from URL, an\n"
     "http(s) template in which {OS_IMAGE_HASH} is replaced by the hex\n"
     "hash (as the reference's image download_url); 404 = no manifest;\n"
     "at most 256 KiB, no redirects; cached in memory until the Admin\n"
     "ClearImageCache call"},
    {"image-manifest-timeout-ms", 0, "MS", "image-manifest-timeout-ms", set_ms,
     FIELD(image_manifest_timeout_ms), "whole manifest fetch (default 10000)"},
    {"insecure-skip-os-image-check", 0, NULL, "insecure-skip-os-image-check", set_flag,
     FIELD(insecure_skip_os_image_check),
     "do not check plain-TDX clients' MRTD/RTMR0-2 against their\n"
     "OS image: os_image_hash is then whatever the client claims\n"
     "(warning at start; without it a plain-TDX client with no\n"
     "matching manifest is refused; simulated clients use the\n"
     "simulated TEE's manifest in --sim-dir)"},
    {"auth", 0, "dev|webhook|eth", "auth", set_str, FIELD(auth_type),
     "authorization backend (default dev)"},
    {"auth-url", 0, "URL", "auth-url", set_str, FIELD(auth_url),
     "auth-api base URL for --auth webhook"},
    {"eth-rpc", 0, "URL", "eth-rpc", set_eth_rpc, 0,
     "--auth eth: Ethereum JSON-RPC endpoint (node or light client);\n"
     "repeatable, at most 16"},
    {"eth-policy", 0, "P", "eth-policy", set_str, FIELD(eth_policy),
     "failover (default: first healthy URL) | quorum (K answers for\n"
     "the same block must agree, else fail closed)"},
    {"eth-quorum", 0, "K", "eth-quorum", set_eth_quorum, 0,
     "answers that must agree under quorum (default: majority)"},
    {"kms-contract", 0, "ADDR", "kms-contract", set_str, FIELD(kms_contract),
     "--auth eth: DstackKms (proxy) address, 0x + 40 hex; required"},
    {"eth-block", 0, "TAG", "eth-block", set_str, FIELD(eth_block_tag),
     "block the contract is read at: latest (default), safe, finalized"},
    {"eth-chain-id", 0, "N", "eth-chain-id", set_eth_chain_id, 0,
     "refuse an RPC that serves another chain (default: not checked)"},
    {"eth-cache-ttl-ms", 0, "MS", "eth-cache-ttl-ms", set_eth_cache_ttl, 0,
     "how long an allow decision is reused (default 2000; 0 = never);\n"
     "denials are never cached"},
    {"auth-timeout-ms", 0, "MS", "auth-timeout-ms", set_ms, FIELD(auth_timeout_ms),
     "timeout of each authorization call (default 5000)"},
    {"auth-interval", 0, "DURATION", "auth-interval", set_auth_interval, 0,
     "re-check this node's own authorization every DURATION (N s, or\n"
     "with a unit: 500ms, 30s, 5m; default 60s); after a failed check\n"
     "retry from 1 s, doubling up to DURATION. A KMS removed from its\n"
     "policy stops releasing keys within DURATION (not with --auth dev)"},
    {"auth-grace", 0, "DURATION", "auth-grace", set_auth_grace, 0,
     "while the authorization backend does not answer, keep the last\n"
     "allow for DURATION after its last answer, then refuse key RPCs\n"
     "until it answers again (default 300s; 0 = refuse at once)"},
    {"gateway-app-id", 0, "ID", "gateway-app-id", set_str, FIELD(gateway_app_id),
     "gateway app id reported in dev mode (default \"any\")"},
    {"auto-bootstrap-domain", 0, "D", "auto-bootstrap-domain", set_str,
     FIELD(auto_bootstrap_domain), "bootstrap at start with domain D when no keys exist"},
    {"seal", 0, "file|tpm", "seal", set_str, FIELD(seal_provider),
     "KEK seal provider (default file: a 0600 key file, development\n"
     "only; tpm: the KEK is sealed by the TPM to PCR values)"},
    {"kek-file", 0, "PATH", "kek-file", set_str, FIELD(kek_path),
     "KEK file for --seal file (default DATA_DIR/kek.bin)"},
    {"tpm-tcti", 0, "TCTI", "tpm-tcti", set_str, FIELD(tpm_tcti),
     "TPM for --seal tpm (default device:/dev/tpmrm0; a simulator:\n"
     "swtpm:host=127.0.0.1,port=2321); sealed KEK: DATA_DIR/kek.tpm"},
    {"seal-pcrs", 0, "SPEC", "seal-pcrs", set_str, FIELD(seal_pcrs),
     "PCRs a new KEK is sealed to (default sha256:0,2,14; banks joined\n"
     "with +, e.g. sha1:0+sha256:0,7); fixed once the KEK is sealed"},
    {"expect-k256-pubkey", 0, "HEX", "expect-k256-pubkey", set_str, FIELD(expect_k256_pubkey),
     "onboarding: refuse a source whose k256 public key differs"},
    {"expect-ca-spki", 0, "HEX", "expect-ca-spki", set_str, FIELD(expect_ca_spki),
     "onboarding: refuse a source whose root CA SPKI differs"},
    {"peer", 0, "URL", "peer", set_peer, 0, "a peer KMS to health-check (repeatable)"},
    {"peer-interval-ms", 0, "MS", "peer-interval-ms", set_ms, FIELD(peer_interval_ms),
     "peer check interval (default 5000)"},
    {"peer-confirm-window", 0, "SECONDS", "peer-confirm-window", set_peer_window, 0,
     "a node that onboarded from this one becomes its peer once a\n"
     "check finds it serving the cluster identity; unconfirmed\n"
     "after this long it is dropped (default 3600)"},
    {"nitro-root", 0, "FILE", "nitro-root", set_str, FIELD(nitro_root),
     "AWS Nitro root (default: embedded AWS Nitro Enclaves Root G1)"},
    {"nitro-device-id", 0, "quirk|fixed", "nitro-device-id", set_nitro_device_id, 0,
     "Nitro device_id: reference quirk sha256(\"i\") (default)\n"
     "or the corrected per-instance derivation"},
    {"admin-listen", 0, "HOST:PORT", "admin-listen", set_str, FIELD(admin_listen),
     "Admin service (plain HTTP, pRPC JSON: ListPeers, AddPeer,\n"
     "RemovePeer, AuditHead, ClearImageCache) once serving; off by\n"
     "default; loopback addresses only (e.g. 127.0.0.1:8001)"},
    {"admin-token-file", 0, "FILE", "admin-token-file", set_str, FIELD(admin_token_file),
     "the admin token (one line, 16..1024 visible characters), sent\n"
     "as `Authorization: Bearer <token>` or `X-Admin-Token`; required\n"
     "with --admin-listen; the file must be mode 0600 or stricter;\n"
     "kmsd keeps only its SHA-256"},
    {"admin-allow-remote", 0, NULL, "admin-allow-remote", set_flag, FIELD(admin_allow_remote),
     "allow a non-loopback --admin-listen (the token then crosses the\n"
     "network in clear: put a TLS proxy in front)"},
    {"log-level", 0, "LEVEL", "log-level", set_log_level, 0,
     "debug|info|warn|error (default info)"},
    {"log-format", 0, "FORMAT", "log-format", set_log_format, 0,
     "text (default) or json: one JSON object per line with ts, level,\n"
     "node, request_id, msg and fields (docs/observability.md)"},
    {"config", 0, "FILE", NULL, set_config, 0,
     "read options from FILE first: one `name = value` per line\n"
     "(long option names without --; \"quoted\" values; flags take\n"
     "true/false; # comments); the command line overrides it"},
    {"version", 'V', NULL, NULL, set_version, 0, "print the version and exit"},
    {"help", 'h', NULL, NULL, set_help, 0, "show this help"},
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

/* --help: "  --name ARG" padded to column 27 (two spaces after a longer label), the help text's
 * further lines indented to the same column. */
static void usage(void)
{
    fputs(usage_head, stdout);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct opt *o = &options[i];
        char label[64];
        const char *h = o->help;

        if (o->short_name != 0)
            snprintf(label, sizeof(label), "-%c, --%s", o->short_name, o->name);
        else
            snprintf(label, sizeof(label), "--%s%s%s", o->name, o->arg != NULL ? " " : "",
                     o->arg != NULL ? o->arg : "");
        printf(strlen(label) <= 24 ? "  %-24s " : "  %s  ", label);
        for (;;) {
            const char *nl = strchr(h, '\n');

            if (nl == NULL) {
                printf("%s\n", h);
                break;
            }
            printf("%.*s\n%27s", (int)(nl - h), h, "");
            h = nl + 1;
        }
    }
    fputs(usage_tail, stdout);
}

#define CONFIG_MAX_BYTES (64u * 1024u)
#define CONFIG_MAX_ARGS 512

/* Strips surrounding whitespace in place. */
static char *trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

/* Unquotes a "..." value (\\ and \" escapes) in place; bare values are taken as they are. */
static int unquote(char *v, const char *path, int line)
{
    size_t n = strlen(v);
    char *w = v;

    if (n == 0 || v[0] != '"')
        return 0;
    if (n < 2 || v[n - 1] != '"') {
        fprintf(stderr, "kmsd: %s:%d: unterminated quoted value\n", path, line);
        return -1;
    }
    v[n - 1] = '\0';
    for (char *r = v + 1; *r != '\0'; r++) {
        if (*r == '\\' && (r[1] == '"' || r[1] == '\\'))
            r++;
        else if (*r == '"') {
            fprintf(stderr, "kmsd: %s:%d: stray quote in value\n", path, line);
            return -1;
        }
        *w++ = *r;
    }
    *w = '\0';
    return 0;
}

/*
 * --config FILE: one option per line as `name = value` (the long option without "--"; values
 * may be "quoted"; flags take true/false; repeatable options may repeat; # comments). The
 * file's options come first, so the command line overrides them. Returns a new argv (kept
 * for the process lifetime) or NULL after printing the error.
 */
static char **load_config(const char *path, int argc, char **argv, int *out_argc)
{
    static char *args[CONFIG_MAX_ARGS];
    uint8_t *text = NULL;
    size_t len = 0;
    int n = 0, line = 0;
    char *save = NULL, *l;

    /* The command line is appended after the file's options: it must fit on its own too. */
    if (argc < 1 || argc > CONFIG_MAX_ARGS - 3) {
        fprintf(stderr, "kmsd: too many command-line arguments with --config\n");
        return NULL;
    }
    if (kms_file_read(path, CONFIG_MAX_BYTES, &text, &len) < 0) {
        fprintf(stderr, "kmsd: --config: %s\n", kms_err_detail());
        return NULL;
    }
    args[n++] = argv[0];
    for (l = strtok_r((char *)text, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        char *eq, *key, *val;
        const struct opt *o = NULL;

        line++;
        key = trim(l);
        if (key[0] == '\0' || key[0] == '#')
            continue;
        eq = strchr(key, '=');
        if (eq == NULL) {
            fprintf(stderr, "kmsd: %s:%d: expected `name = value`\n", path, line);
            return NULL;
        }
        *eq = '\0';
        key = trim(key);
        val = trim(eq + 1);
        if (unquote(val, path, line) < 0)
            return NULL;
        for (size_t i = 0; i < N_OPTIONS && o == NULL; i++) {
            if (options[i].conf != NULL && strcmp(options[i].conf, key) == 0)
                o = &options[i];
        }
        if (o == NULL) {
            fprintf(stderr, "kmsd: %s:%d: unknown option '%s' (see kmsd --help)\n", path, line,
                    key);
            return NULL;
        }
        if (CONFIG_MAX_ARGS - 2 - argc <= n) {
            fprintf(stderr, "kmsd: %s: too many options\n", path);
            return NULL;
        }
        if (o->arg == NULL) {
            if (strcmp(val, "true") != 0 && strcmp(val, "false") != 0) {
                fprintf(stderr, "kmsd: %s:%d: %s takes true or false\n", path, line, key);
                return NULL;
            }
            if (strcmp(val, "false") == 0)
                continue;
        }
        args[n] = malloc(strlen(o->name) + 3);
        if (args[n] == NULL)
            return NULL;
        snprintf(args[n++], strlen(o->name) + 3, "--%s", o->name);
        if (o->arg != NULL)
            args[n++] = val;
    }
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    *out_argc = n;
    return args;
}

/* The getopt table of options[]: val is the short name, else OPT_VAL_BASE + the row. */
#define OPT_VAL_BASE 1000

static const struct opt *option_of(int val)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (options[i].short_name != 0 ? val == options[i].short_name
                                       : val == OPT_VAL_BASE + (int)i)
            return &options[i];
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static struct option longopts[N_OPTIONS + 1];
    char shortopts[N_OPTIONS + 1];
    size_t n_short = 0;
    struct kms_node_cfg cfg;
    static sigset_t sigs;
    pthread_t sig_tid;
    int c, rc;

    memset(&cfg, 0, sizeof(cfg));
    cfg.listen = "0.0.0.0:8000";
    cfg.tee = "sim";
    cfg.auth_type = "dev";
    cfg.seal_provider = "file";
    cfg.peer_interval_ms = 5000;
    cfg.auth_timeout_ms = 5000;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct opt *o = &options[i];

        longopts[i].name = o->name;
        longopts[i].has_arg = o->arg != NULL ? required_argument : no_argument;
        longopts[i].val = o->short_name != 0 ? o->short_name : OPT_VAL_BASE + (int)i;
        if (o->short_name != 0)
            shortopts[n_short++] = o->short_name;
    }
    shortopts[n_short] = '\0';
    /* --config FILE (first, or anywhere as --config=FILE / --config FILE) */
    for (int i = 1; i < argc; i++) {
        const char *path = NULL;

        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
        if (path != NULL) {
            argv = load_config(path, argc, argv, &argc);
            if (argv == NULL)
                return 2;
            break;
        }
    }
    for (;;) {
        const struct opt *o;

        c = getopt_long(argc, argv, shortopts, longopts, NULL);
        if (c == -1)
            break;
        o = option_of(c);
        if (o == NULL) {
            fputs("Try 'kmsd --help'.\n", stderr);
            return 2;
        }
        rc = o->set(&cfg, o, optarg);
        if (rc != 0)
            return rc > 0 ? 0 : 2;
    }
    if (optind < argc) {
        fprintf(stderr, "kmsd: unexpected argument '%s'. Try 'kmsd --help'.\n", argv[optind]);
        return 2;
    }
    /* collateral: as the reference, the PCCS comes from the config, else the PCCS_URL env */
    if (cfg.pccs_url == NULL && getenv("PCCS_URL") != NULL && getenv("PCCS_URL")[0] != '\0')
        cfg.pccs_url = getenv("PCCS_URL");
    if (strcmp(cfg.seal_provider, "tpm") != 0 && (cfg.tpm_tcti != NULL || cfg.seal_pcrs != NULL)) {
        fprintf(stderr, "kmsd: --tpm-tcti and --seal-pcrs apply to --seal tpm only\n");
        return 2;
    }
    if (strcmp(cfg.seal_provider, "tpm") == 0 && cfg.kek_path != NULL) {
        fprintf(stderr, "kmsd: --kek-file applies to --seal file only\n");
        return 2;
    }
    if (cfg.name != NULL)
        kms_log_set_tag(cfg.name);
    /* tpm2-tss has no log callback (3.x): its own stderr lines stay off unless the operator
     * sets TSS2_LOG; kmsd reports TPM failures itself (common/tpm.c). */
    setenv("TSS2_LOG", "all+none", 0);
    kms_secmem_install_jansson();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* Before any thread exists, so all of them inherit the mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (pthread_create(&sig_tid, NULL, signal_thread, &sigs) != 0) {
        KMS_ERROR("cannot start the signal thread");
        return 1;
    }
    pthread_detach(sig_tid);
    rc = kms_node_new(&cfg, &g_node);
    if (rc < 0) {
        KMS_ERROR("cannot start: %s", kms_err_detail());
        return 1;
    }
    rc = kms_node_run(g_node);
    if (rc < 0)
        KMS_ERROR("stopped: %s", kms_err_detail());
    else
        KMS_INFO("stopped");
    pthread_mutex_lock(&g_node_lock);
    kms_node_free(g_node);
    g_node = NULL;
    pthread_mutex_unlock(&g_node_lock);
    curl_global_cleanup();
    return rc < 0 ? 1 : 0;
}
