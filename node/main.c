/* kmsd: the key management node daemon. */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "common/log.h"
#include "common/secmem.h"
#include "node/node.h"

static struct kms_node *g_node;

static const char usage_text[] =
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
    "Options:\n"
    "  --data-dir DIR           keystore directory (SQLite kms.db, KEK file); required\n"
    "  --listen HOST:PORT       KMS HTTPS listener (default 0.0.0.0:8000)\n"
    "  --onboard-listen H:P     Onboard HTTP listener before keys exist (default: --listen)\n"
    "  --name NAME              node name for logs and GetAttestationInfo.site_name\n"
    "  --tee TEE                evidence producer (default sim):\n"
    "                             auto     detect as dstack does (/dev/nsm: Nitro, refused;\n"
    "                                      GCE DMI + /dev/tdx_guest: gcp-tdx; /dev/tdx_guest\n"
    "                                      or configfs-tsm: tdx)\n"
    "                             tdx      TDX quotes via configfs-tsm (/sys/kernel/config/tsm/\n"
    "                                      report), else the /dev/tdx_guest ioctl; runtime\n"
    "                                      events from /run/log/dstack/runtime_events.log\n"
    "                             gcp-tdx  tdx plus a vTPM quote (GCP AK from NV, /dev/tpmrm0)\n"
    "                             sim | sim-nitro | sim-gcp  simulated TDX / Nitro Enclave /\n"
    "                                      GCP TDX+vTPM evidence (needs --insecure-sim)\n"
    "  --insecure-sim           accept the simulated TEE and trust its simulation roots\n"
    "                           (development only; reported in logs, /health and GetMeta)\n"
    "  --sim-dir DIR            simulated TEE directory (default DATA_DIR/sim); share it between\n"
    "                           nodes and clients of one local cluster\n"
    "  --trust-sim-root FILE    also trust this simulation TDX root (PEM)\n"
    "  --sim-collateral         with --insecure-sim: evaluate the TCB of simulated TDX quotes\n"
    "                           against collateral made for --sim-dir, so they report tcbStatus\n"
    "                           \"UpToDate\" (what DstackKms.isKmsAllowed requires)\n"
    "  --pccs-url URL           evaluate the TCB of TDX quotes with Intel collateral (TCB info,\n"
    "                           QE identity, CRLs) from this PCCS or Intel PCS (v4 API), cached\n"
    "                           until its nextUpdate (default: env PCCS_URL; neither: no TCB\n"
    "                           evaluation, tcbStatus \"\")\n"
    "  --collateral-file FILE   air-gapped TCB evaluation: collateral from a JSON file (see the\n"
    "                           operator guide), used before --pccs-url\n"
    "  --aia-fetch on|off       GCP vTPM: fetch the AK certificate's issuer (Google's EK/AK CA\n"
    "                           Intermediate, not in the evidence) from its AIA caIssuers URL\n"
    "                           (http/https, 5 s, 3 hops, cached); the anchor stays the pinned\n"
    "                           Google root (default on; off with --insecure-sim)\n"
    "  --aia-host SUFFIX        hosts AIA fetching may contact: SUFFIX or its subdomains\n"
    "                           (repeatable, at most 8; default googleapis.com)\n"
    "  --gcp-root FILE          GCP vTPM AK roots (PEM; default: embedded Google EK/AK CA Root)\n"
    "  --gcp-pcr0 HEX|any       GCP: allowed TPM PCR0 (firmware) values, checked with the UKI\n"
    "                           (third PCR2 event) == os_image_hash before authorization\n"
    "                           (repeatable; default the reference's GCP OVMF v2 value)\n"
    "  --auth dev|webhook|eth   authorization backend (default dev)\n"
    "  --auth-url URL           auth-api base URL for --auth webhook\n"
    "  --eth-rpc URL            --auth eth: Ethereum JSON-RPC endpoint (node or light client);\n"
    "                           repeatable, at most 16\n"
    "  --eth-policy P           failover (default: first healthy URL) | quorum (K answers for\n"
    "                           the same block must agree, else fail closed)\n"
    "  --eth-quorum K           answers that must agree under quorum (default: majority)\n"
    "  --kms-contract ADDR      --auth eth: DstackKms (proxy) address, 0x + 40 hex; required\n"
    "  --eth-block TAG          block the contract is read at: latest (default), safe, finalized\n"
    "  --eth-chain-id N         refuse an RPC that serves another chain (default: not checked)\n"
    "  --eth-cache-ttl-ms MS    how long an allow decision is reused (default 2000; 0 = never);\n"
    "                           denials are never cached\n"
    "  --auth-timeout-ms MS     timeout of each authorization call (default 5000)\n"
    "  --gateway-app-id ID      gateway app id reported in dev mode (default \"any\")\n"
    "  --auto-bootstrap-domain D  bootstrap at start with domain D when no keys exist\n"
    "  --seal file|tpm          KEK seal provider (default file: a 0600 key file, development\n"
    "                           only; tpm: the KEK is sealed by the TPM to PCR values)\n"
    "  --kek-file PATH          KEK file for --seal file (default DATA_DIR/kek.bin)\n"
    "  --tpm-tcti TCTI          TPM for --seal tpm (default device:/dev/tpmrm0; a simulator:\n"
    "                           swtpm:host=127.0.0.1,port=2321); sealed KEK: DATA_DIR/kek.tpm\n"
    "  --seal-pcrs SPEC         PCRs a new KEK is sealed to (default sha256:0,2,14; banks joined\n"
    "                           with +, e.g. sha1:0+sha256:0,7); fixed once the KEK is sealed\n"
    "  --expect-k256-pubkey HEX onboarding: refuse a source whose k256 public key differs\n"
    "  --expect-ca-spki HEX     onboarding: refuse a source whose root CA SPKI differs\n"
    "  --peer URL               a peer KMS to health-check (repeatable)\n"
    "  --peer-interval-ms MS    peer check interval (default 5000)\n"
    "  --nitro-root FILE        AWS Nitro root (default: embedded AWS Nitro Enclaves Root G1)\n"
    "  --nitro-device-id quirk|fixed  Nitro device_id: reference quirk sha256(\"i\") (default)\n"
    "                           or the corrected per-instance derivation\n"
    "  --admin-listen HOST:PORT Admin service (plain HTTP, pRPC JSON: ListPeers, AddPeer,\n"
    "                           RemovePeer, AuditHead, ClearImageCache) once serving; off by\n"
    "                           default; loopback addresses only (e.g. 127.0.0.1:8001)\n"
    "  --admin-token-file FILE  the admin token (one line, 16..1024 visible characters), sent\n"
    "                           as `Authorization: Bearer <token>` or `X-Admin-Token`; required\n"
    "                           with --admin-listen; the file must be mode 0600 or stricter;\n"
    "                           kmsd keeps only its SHA-256\n"
    "  --admin-allow-remote     allow a non-loopback --admin-listen (the token then crosses the\n"
    "                           network in clear: put a TLS proxy in front)\n"
    "  --log-level LEVEL        debug|info|warn|error (default info)\n"
    "  --config FILE            read options from FILE first: one `name = value` per line\n"
    "                           (long option names without --; \"quoted\" values; flags take\n"
    "                           true/false; # comments); the command line overrides it\n"
    "  -h, --help               show this help\n"
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

enum {
    OPT_DATA_DIR = 1000,
    OPT_LISTEN,
    OPT_ONBOARD_LISTEN,
    OPT_NAME,
    OPT_TEE,
    OPT_INSECURE_SIM,
    OPT_SIM_DIR,
    OPT_TRUST_SIM_ROOT,
    OPT_AUTH,
    OPT_AUTH_URL,
    OPT_AUTH_TIMEOUT,
    OPT_GATEWAY,
    OPT_AUTO_BOOTSTRAP,
    OPT_SEAL,
    OPT_KEK,
    OPT_EXPECT_K256,
    OPT_EXPECT_SPKI,
    OPT_PEER,
    OPT_PEER_INTERVAL,
    OPT_NITRO_ROOT,
    OPT_NITRO_DEVICE_ID,
    OPT_LOG_LEVEL,
    OPT_ETH_RPC,
    OPT_ETH_POLICY,
    OPT_ETH_QUORUM,
    OPT_KMS_CONTRACT,
    OPT_ETH_BLOCK, /* --auth eth */
    OPT_ETH_CHAIN_ID,
    OPT_ETH_CACHE_TTL,
    OPT_SIM_COLLATERAL,
    OPT_TPM_TCTI,
    OPT_SEAL_PCRS, /* --seal tpm */
    OPT_PCCS_URL,
    OPT_COLLATERAL_FILE, /* collateral */
    OPT_AIA_FETCH,
    OPT_AIA_HOST,
    OPT_GCP_ROOT,
    OPT_GCP_PCR0, /* aia, gcp image */
    OPT_ADMIN_LISTEN,
    OPT_ADMIN_TOKEN_FILE,
    OPT_ADMIN_ALLOW_REMOTE, /* admin */
    OPT_CONFIG,
};

static long parse_ms(const char *s, const char *opt)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);

    if (end == s || *end != '\0' || v <= 0 || v > 600000) {
        fprintf(stderr, "kmsd: %s must be a number of milliseconds (1..600000)\n", opt);
        exit(2);
    }
    return v;
}

/* --auth eth: unsigned decimal in [min, max], else exit 2. */
static unsigned long long parse_uint(const char *s, const char *opt, unsigned long long min,
                                     unsigned long long max)
{
    char *end = NULL;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || end == s || *end != '\0' || errno != 0 || v < min || v > max) {
        fprintf(stderr, "kmsd: %s must be a number from %llu to %llu\n", opt, min, max);
        exit(2);
    }
    return v;
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
static char **load_config(const char *path, int argc, char **argv, const struct option *opts,
                          int *out_argc)
{
    static char *args[CONFIG_MAX_ARGS];
    uint8_t *text = NULL;
    size_t len = 0;
    int n = 0, line = 0;
    char *save = NULL, *l;

    if (kms_file_read(path, CONFIG_MAX_BYTES, &text, &len) < 0) {
        fprintf(stderr, "kmsd: --config: %s\n", kms_err_detail());
        return NULL;
    }
    args[n++] = argv[0];
    for (l = strtok_r((char *)text, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        char *eq, *key, *val;
        const struct option *o = NULL;

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
        for (const struct option *p = opts; p->name != NULL; p++) {
            if (strcmp(p->name, key) == 0)
                o = p;
        }
        if (o == NULL || strcmp(key, "help") == 0 || strcmp(key, "config") == 0) {
            fprintf(stderr, "kmsd: %s:%d: unknown option '%s' (see kmsd --help)\n", path, line,
                    key);
            return NULL;
        }
        if (n + 2 + argc >= CONFIG_MAX_ARGS) {
            fprintf(stderr, "kmsd: %s: too many options\n", path);
            return NULL;
        }
        if (o->has_arg == no_argument) {
            if (strcmp(val, "true") != 0 && strcmp(val, "false") != 0) {
                fprintf(stderr, "kmsd: %s:%d: %s takes true or false\n", path, line, key);
                return NULL;
            }
            if (strcmp(val, "false") == 0)
                continue;
        }
        args[n] = malloc(strlen(key) + 3);
        if (args[n] == NULL)
            return NULL;
        snprintf(args[n++], strlen(key) + 3, "--%s", key);
        if (o->has_arg != no_argument)
            args[n++] = val;
    }
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    *out_argc = n;
    return args;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"onboard-listen", required_argument, NULL, OPT_ONBOARD_LISTEN},
        {"name", required_argument, NULL, OPT_NAME},
        {"tee", required_argument, NULL, OPT_TEE},
        {"insecure-sim", no_argument, NULL, OPT_INSECURE_SIM},
        {"sim-dir", required_argument, NULL, OPT_SIM_DIR},
        {"trust-sim-root", required_argument, NULL, OPT_TRUST_SIM_ROOT},
        {"auth", required_argument, NULL, OPT_AUTH},
        {"auth-url", required_argument, NULL, OPT_AUTH_URL},
        {"auth-timeout-ms", required_argument, NULL, OPT_AUTH_TIMEOUT},
        {"eth-rpc", required_argument, NULL, OPT_ETH_RPC},
        {"eth-policy", required_argument, NULL, OPT_ETH_POLICY},
        {"eth-quorum", required_argument, NULL, OPT_ETH_QUORUM},
        {"kms-contract", required_argument, NULL, OPT_KMS_CONTRACT},
        {"eth-block", required_argument, NULL, OPT_ETH_BLOCK},
        {"eth-chain-id", required_argument, NULL, OPT_ETH_CHAIN_ID},
        {"eth-cache-ttl-ms", required_argument, NULL, OPT_ETH_CACHE_TTL},
        {"sim-collateral", no_argument, NULL, OPT_SIM_COLLATERAL},
        {"pccs-url", required_argument, NULL, OPT_PCCS_URL},               /* collateral */
        {"collateral-file", required_argument, NULL, OPT_COLLATERAL_FILE}, /* collateral */
        {"aia-fetch", required_argument, NULL, OPT_AIA_FETCH},             /* aia */
        {"aia-host", required_argument, NULL, OPT_AIA_HOST},
        {"gcp-root", required_argument, NULL, OPT_GCP_ROOT},
        {"gcp-pcr0", required_argument, NULL, OPT_GCP_PCR0},
        {"gateway-app-id", required_argument, NULL, OPT_GATEWAY},
        {"auto-bootstrap-domain", required_argument, NULL, OPT_AUTO_BOOTSTRAP},
        {"seal", required_argument, NULL, OPT_SEAL},
        {"kek-file", required_argument, NULL, OPT_KEK},
        {"tpm-tcti", required_argument, NULL, OPT_TPM_TCTI},
        {"seal-pcrs", required_argument, NULL, OPT_SEAL_PCRS},
        {"expect-k256-pubkey", required_argument, NULL, OPT_EXPECT_K256},
        {"expect-ca-spki", required_argument, NULL, OPT_EXPECT_SPKI},
        {"peer", required_argument, NULL, OPT_PEER},
        {"peer-interval-ms", required_argument, NULL, OPT_PEER_INTERVAL},
        {"nitro-root", required_argument, NULL, OPT_NITRO_ROOT},
        {"nitro-device-id", required_argument, NULL, OPT_NITRO_DEVICE_ID},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"admin-listen", required_argument, NULL, OPT_ADMIN_LISTEN},         /* admin */
        {"admin-token-file", required_argument, NULL, OPT_ADMIN_TOKEN_FILE}, /* admin */
        {"admin-allow-remote", no_argument, NULL, OPT_ADMIN_ALLOW_REMOTE},   /* admin */
        {"config", required_argument, NULL, OPT_CONFIG},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct kms_node_cfg cfg;
    static sigset_t sigs;
    pthread_t sig_tid;
    int c, rc, lvl;

    memset(&cfg, 0, sizeof(cfg));
    cfg.listen = "0.0.0.0:8000";
    cfg.tee = "sim";
    cfg.auth_type = "dev";
    cfg.seal_provider = "file";
    cfg.peer_interval_ms = 5000;
    cfg.auth_timeout_ms = 5000;
    /* --config FILE (first, or anywhere as --config=FILE / --config FILE) */
    for (int i = 1; i < argc; i++) {
        const char *path = NULL;

        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
        if (path != NULL) {
            argv = load_config(path, argc, argv, opts, &argc);
            if (argv == NULL)
                return 2;
            break;
        }
    }
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_DATA_DIR:
            cfg.data_dir = optarg;
            break;
        case OPT_LISTEN:
            cfg.listen = optarg;
            break;
        case OPT_ONBOARD_LISTEN:
            cfg.onboard_listen = optarg;
            break;
        case OPT_NAME:
            cfg.name = optarg;
            break;
        case OPT_TEE:
            cfg.tee = optarg;
            break;
        case OPT_INSECURE_SIM:
            cfg.insecure_sim = 1;
            break;
        case OPT_SIM_DIR:
            cfg.sim_dir = optarg;
            break;
        case OPT_TRUST_SIM_ROOT:
            cfg.trust_sim_root = optarg;
            break;
        case OPT_AUTH:
            cfg.auth_type = optarg;
            break;
        case OPT_AUTH_URL:
            cfg.auth_url = optarg;
            break;
        case OPT_AUTH_TIMEOUT:
            cfg.auth_timeout_ms = parse_ms(optarg, "--auth-timeout-ms");
            break;
        /* ---- --auth eth (validated with the other settings in kms_node_new) ---- */
        case OPT_ETH_RPC:
            if (cfg.n_eth_rpc_urls >= KMS_NODE_MAX_ETH_RPC) {
                fprintf(stderr, "kmsd: at most %d --eth-rpc options\n", KMS_NODE_MAX_ETH_RPC);
                return 2;
            }
            cfg.eth_rpc_urls[cfg.n_eth_rpc_urls++] = optarg;
            break;
        case OPT_ETH_POLICY:
            cfg.eth_policy = optarg;
            break;
        case OPT_ETH_QUORUM:
            cfg.eth_quorum_k =
                (unsigned)parse_uint(optarg, "--eth-quorum", 1, KMS_NODE_MAX_ETH_RPC);
            break;
        case OPT_KMS_CONTRACT:
            cfg.kms_contract = optarg;
            break;
        case OPT_ETH_BLOCK:
            cfg.eth_block_tag = optarg;
            break;
        case OPT_ETH_CHAIN_ID:
            cfg.eth_chain_id = parse_uint(optarg, "--eth-chain-id", 1, UINT64_MAX);
            break;
        case OPT_ETH_CACHE_TTL:
            /* 0 on the command line disables the cache (the backend's "< 0") */
            cfg.eth_cache_ttl_ms = (long)parse_uint(optarg, "--eth-cache-ttl-ms", 0, 600000);
            if (cfg.eth_cache_ttl_ms == 0)
                cfg.eth_cache_ttl_ms = -1;
            break;
        case OPT_SIM_COLLATERAL:
            cfg.sim_collateral = 1;
            break;
        case OPT_PCCS_URL:
            cfg.pccs_url = optarg;
            break; /* collateral */
        case OPT_COLLATERAL_FILE:
            cfg.collateral_file = optarg;
            break;          /* collateral */
        case OPT_AIA_FETCH: /* aia */
            if (strcmp(optarg, "on") != 0 && strcmp(optarg, "off") != 0) {
                fprintf(stderr, "kmsd: --aia-fetch must be on or off\n");
                return 2;
            }
            cfg.aia_fetch = optarg;
            break;
        case OPT_AIA_HOST:
            if (cfg.n_aia_hosts >= 8) {
                fprintf(stderr, "kmsd: at most 8 --aia-host options\n");
                return 2;
            }
            cfg.aia_hosts[cfg.n_aia_hosts++] = optarg;
            break;
        case OPT_GCP_ROOT:
            cfg.gcp_root = optarg;
            break;
        case OPT_GCP_PCR0:
            if (strcmp(optarg, "any") == 0) {
                cfg.gcp_pcr0_any = 1;
            } else if (strlen(optarg) != 64 || strspn(optarg, "0123456789abcdefABCDEF") != 64) {
                fprintf(stderr, "kmsd: --gcp-pcr0 must be 64 hex digits or any\n");
                return 2;
            } else if (cfg.n_gcp_pcr0 >= 8) {
                fprintf(stderr, "kmsd: at most 8 --gcp-pcr0 values\n");
                return 2;
            } else {
                cfg.gcp_pcr0[cfg.n_gcp_pcr0++] = optarg;
            }
            break;
        /* ---- end --auth eth ---- */
        case OPT_GATEWAY:
            cfg.gateway_app_id = optarg;
            break;
        case OPT_AUTO_BOOTSTRAP:
            cfg.auto_bootstrap_domain = optarg;
            break;
        case OPT_SEAL:
            cfg.seal_provider = optarg;
            break;
        case OPT_KEK:
            cfg.kek_path = optarg;
            break;
        case OPT_TPM_TCTI:
            cfg.tpm_tcti = optarg;
            break;
        case OPT_SEAL_PCRS:
            cfg.seal_pcrs = optarg;
            break;
        case OPT_EXPECT_K256:
            cfg.expect_k256_pubkey = optarg;
            break;
        case OPT_EXPECT_SPKI:
            cfg.expect_ca_spki = optarg;
            break;
        case OPT_PEER:
            if (cfg.n_peers >= KMS_NODE_MAX_PEERS) {
                fprintf(stderr, "kmsd: at most %d --peer options\n", KMS_NODE_MAX_PEERS);
                return 2;
            }
            cfg.peers[cfg.n_peers++] = optarg;
            break;
        case OPT_PEER_INTERVAL:
            cfg.peer_interval_ms = parse_ms(optarg, "--peer-interval-ms");
            break;
        case OPT_NITRO_ROOT:
            cfg.nitro_root = optarg;
            break;
        case OPT_NITRO_DEVICE_ID:
            if (strcmp(optarg, "fixed") == 0) {
                cfg.nitro_device_id_fixed = 1;
            } else if (strcmp(optarg, "quirk") != 0) {
                fprintf(stderr, "kmsd: --nitro-device-id must be quirk or fixed\n");
                return 2;
            }
            break;
        case OPT_LOG_LEVEL:
            lvl = kms_log_parse_level(optarg);
            if (lvl < 0) {
                fprintf(stderr, "kmsd: --log-level must be debug, info, warn or error\n");
                return 2;
            }
            kms_log_set_level((enum kms_log_level)lvl);
            break;
        case OPT_ADMIN_LISTEN:
            cfg.admin_listen = optarg;
            break; /* admin */
        case OPT_ADMIN_TOKEN_FILE:
            cfg.admin_token_file = optarg;
            break; /* admin */
        case OPT_ADMIN_ALLOW_REMOTE:
            cfg.admin_allow_remote = 1;
            break; /* admin */
        case OPT_CONFIG:
            break; /* loaded above */
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            fputs("Try 'kmsd --help'.\n", stderr);
            return 2;
        }
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
