/*
 * kmsctl chain: admin commands for the DstackKms / DstackApp contracts, replacing the
 * reference's Hardhat tasks (attestation-reference.md §4.4). Transactions are built, signed
 * (secp256k1; EIP-1559, or EIP-155 with --legacy) and sent here; each command waits for the
 * receipt and prints the events the contract emitted, i.e. what changed.
 *
 * The private key comes from KMS_ETH_PRIVATE_KEY or --key-file, never from the command line,
 * and is never printed. Exit status: 0 done (or "allowed"), 1 error, 2 usage, 3 "denied".
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "cli/cli.h"
#include "chain/eth.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/keccak.h"

#define EXIT_ERR 1
#define EXIT_USAGE 2
#define EXIT_DENIED 3
#define MAX_POS 8
#define MAX_ADV 32
#define BIN_MAX (1024u * 1024u)

struct opts {
    const char *rpc, *contract, *key_file, *block, *app_id, *device, *hash, *owner;
    const char *artifacts, *app_bin, *kms_bin, *proxy_bin, *boot_info;
    const char *bi_app_id, *bi_compose, *bi_instance, *bi_device, *bi_mra, *bi_mrs, *bi_os, *bi_tcb;
    const char *adv[MAX_ADV];
    size_t nadv;
    int legacy, allow_any, disable_upgrades, help, json;
    long timeout_ms, wait_s;
    uint64_t chain_id;
    const char *pos[MAX_POS];
    int npos;
};

struct ctx {
    struct opts o;
    struct kms_eth_rpc_opts ro;
    uint8_t contract[20];
    uint8_t key[32];
    int have_key;
    uint8_t from[20];
    const char *fn; /* the function of the next transaction (for --json) */
};

/* ---------------------------------------------------------------- output */

/* Human lines: stdout, or stderr with --json (stdout then carries only the JSON result). */
static FILE *txt_out;
/* The --json result the commands fill in: {command, transactions: [...], ...}. */
static json_t *result;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(txt_out != NULL ? txt_out : stdout, fmt, ap);
    va_end(ap);
}

/* result[key] = v (reference stolen; nothing when v is NULL). */
static void put(const char *key, json_t *v)
{
    if (result != NULL && v != NULL)
        json_object_set_new(result, key, v);
    else
        json_decref(v);
}

/* ---------------------------------------------------------------- help */

static const char *const usage_global =
    "usage: kmsctl chain [options] <command> [args]\n"
    "\n"
    "Administers the DstackKms / DstackApp contracts (replaces the Hardhat tasks).\n"
    "\n"
    "commands:\n"
    "  deploy                      deploy DstackApp impl, DstackKms impl and the DstackKms proxy\n"
    "  add-image H | remove-image H        allow / disallow an OS image hash\n"
    "  add-mr MR | remove-mr MR            allow / disallow a KMS aggregated MR\n"
    "  add-device D | remove-device D      allow / disallow a KMS device id\n"
    "  register-app A              register an existing app contract\n"
    "  create-app [--allow-any-device] [--device D] [--hash H]   deploy and register an app\n"
    "  app add-hash|remove-hash --app-id A H   app compose-hash allow list\n"
    "  app add-device|remove-device --app-id A D   app device allow list\n"
    "  app set-allow-any-device --app-id A true|false\n"
    "  app set-require-tcb-up-to-date --app-id A true|false   (read: status --app-id A)\n"
    "  set-gateway ID              set the gateway app id\n"
    "  set-app-impl A              set the DstackApp implementation used by create-app\n"
    "  set-info FILE               set KMS info from JSON (k256Pubkey, caPubkey, quote, eventlog)\n"
    "  status                      show contract, chain, owner, gateway and app implementation\n"
    "  is-kms-allowed | is-app-allowed [boot info]   ask the contract, print its reason\n"
    "\n"
    "options (anywhere on the line):\n"
    "  --rpc URL          JSON-RPC endpoint (default $KMS_ETH_RPC_URL, or $RPC_URL)\n"
    "  --contract ADDR    DstackKms address (default $KMS_CONTRACT_ADDR, or\n"
    "                     $KMS_CONTRACT_ADDRESS)\n"
    "  --key-file FILE    hex private key file (default: $KMS_ETH_PRIVATE_KEY, or\n"
    "                     $PRIVATE_KEY)\n"
    "  --json             human lines go to stderr; stdout gets one JSON object: command, ok,\n"
    "                     exit_status, error, transactions [{function, tx_hash, block,\n"
    "                     gas_used, status, events [{event, args, address}]}] and the\n"
    "                     command's fields (app_id, allowed, reason, status fields, ...)\n"
    "  --chain-id N       refuse to act unless the RPC serves this chain\n"
    "  --legacy           send EIP-155 legacy transactions instead of EIP-1559\n"
    "  --timeout-ms N     per RPC call (default 10000)\n"
    "  --wait-s N         how long to wait for a receipt (default 120)\n"
    "  -h, --help         help (also after any command)\n"
    "\n"
    "The seed guide's variable names (RPC_URL, PRIVATE_KEY, KMS_CONTRACT_ADDRESS) are aliases;\n"
    "both spellings set to different values are refused.\n"
    "Hex values: bytes32 arguments need exactly 64 hex digits, addresses 40 (0x optional);\n"
    "another length is refused (exit 2), never padded.\n"
    "Events are decoded, PolicyChanged(actor, policy, value, enabled) with the policy's name.\n"
    "\n"
    "exit status: 0 done/allowed, 1 error, 2 usage (also a malformed value), 3 denied\n";

struct cmd {
    const char *name; /* "app add-hash" for two-word commands */
    const char *help;
    int (*fn)(struct ctx *c);
};

/* ---------------------------------------------------------------- small helpers */

static int fail(void)
{
    fprintf(stderr, "kmsctl chain: %s\n", kms_err_detail());
    return EXIT_ERR;
}

/* kmsctl's variable `name`, else the seed guide's `alias` (RPC_URL, PRIVATE_KEY,
 * KMS_CONTRACT_ADDRESS); NULL when neither is set. When both are set and differ, kmsctl's wins:
 * env_conflicts() refuses that case before any command runs. */
static const char *env_get(const char *name, const char *alias)
{
    const char *v = getenv(name);

    if (v != NULL && v[0] != '\0')
        return v;
    v = getenv(alias);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

static const char *const env_aliases[3][2] = {{"KMS_ETH_RPC_URL", "RPC_URL"},
                                              {"KMS_CONTRACT_ADDR", "KMS_CONTRACT_ADDRESS"},
                                              {"KMS_ETH_PRIVATE_KEY", "PRIVATE_KEY"}};

/* Both spellings set to different values: which one was meant is unclear, so refuse (the
 * message names the variables, never their values). */
static int env_conflicts(void)
{
    for (size_t i = 0; i < 3; i++) {
        const char *a = getenv(env_aliases[i][0]), *b = getenv(env_aliases[i][1]);

        if (a != NULL && b != NULL && a[0] != '\0' && b[0] != '\0' && strcmp(a, b) != 0)
            return kms_err_set(KMS_ERR_INVAL,
                               "%s and %s are both set, to different values: unset one",
                               env_aliases[i][0], env_aliases[i][1]);
    }
    return 0;
}

/* A bytes32 / bytes20 argument: exactly 2*n hex digits ("0x" optional), never padded. Empty
 * (or absent) only where empty_ok: all zero. */
static int usage_error; /* set by a malformed argument value: exit status 2 */

static int strict_hex(const char *field, const char *s, uint8_t *out, size_t n, int empty_ok)
{
    size_t len;

    usage_error = 1; /* until the value is known good */

    if (s == NULL || s[0] == '\0') {
        if (!empty_ok)
            return kms_err_set(KMS_ERR_INVAL, "%s: missing value", field);
        memset(out, 0, n);
        usage_error = 0;
        return 0;
    }
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2;
    len = strlen(s);
    for (size_t i = 0; i < len; i++) {
        if (!isxdigit((unsigned char)s[i]))
            return kms_err_set(KMS_ERR_INVAL, "%s is not hex (bad character at position %zu)",
                               field, i + 1);
    }
    if (len != 2 * n)
        return kms_err_set(KMS_ERR_INVAL,
                           "%s must be %zu bytes: %zu hex digits (0x optional), got %zu; nothing "
                           "was sent",
                           field, n, 2 * n, len);
    if (kms_hex_decode_exact(s, out, n) < 0)
        return -1;
    usage_error = 0;
    return 0;
}

static int parse_u64(const char *s, uint64_t *v)
{
    char *end = NULL;
    unsigned long long x;

    errno = 0;
    x = strtoull(s, &end, 0);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-')
        return kms_err_set(KMS_ERR_INVAL, "not a number: \"%.40s\"", s);
    *v = x;
    return 0;
}

static int load_key(struct ctx *c)
{
    uint8_t *file = NULL;
    size_t flen = 0;
    char *hex = NULL;
    const char *env;
    size_t n;
    int rc = 0;

    if (c->have_key)
        return 0;
    if (c->o.key_file != NULL) {
        struct stat sb;

        KMS_GUARD(kms_file_read(c->o.key_file, 4096, &file, &flen));
        if (stat(c->o.key_file, &sb) == 0 && (sb.st_mode & 077) != 0)
            fprintf(stderr, "kmsctl chain: warning: key file %s is readable by others\n",
                    c->o.key_file);
        hex = strndup((const char *)file, flen);
    } else {
        env = env_get("KMS_ETH_PRIVATE_KEY", "PRIVATE_KEY");
        KMS_ENSURE(
            env != NULL && env[0] != '\0', KMS_ERR_INVAL,
            "no signing key: set KMS_ETH_PRIVATE_KEY or pass --key-file FILE (PRIVATE_KEY is "
            "accepted too)");
        hex = strdup(env);
    }
    KMS_GUARD_PTR(hex);
    /* trim whitespace around the key */
    n = strlen(hex);
    while (n > 0 && (hex[n - 1] == '\n' || hex[n - 1] == '\r' || hex[n - 1] == ' '))
        hex[--n] = '\0';
    rc = kms_hex_decode_exact(hex[0] == ' ' ? hex + strspn(hex, " ") : hex, c->key, 32);
    if (rc < 0) {
        rc = kms_err_set(KMS_ERR_INVAL, "the signing key must be 32 bytes of hex");
        goto out;
    }
    KMS_GUARD(kms_eth_key_address(c->key, c->from));
    c->have_key = 1;
out:
    if (hex != NULL)
        kms_free_secret(hex, strlen(hex));
    kms_free_secret(file, flen);
    return rc;
}

static int need_contract(struct ctx *c)
{
    int rc = 0;

    KMS_ENSURE(c->o.contract != NULL, KMS_ERR_INVAL,
               "no contract: pass --contract ADDR or set KMS_CONTRACT_ADDR");
    rc = kms_eth_parse_address(c->o.contract, c->contract);
    if (rc < 0)
        rc = kms_err_wrap(rc, "--contract");
out:
    return rc;
}

static int check_chain(struct ctx *c, uint64_t *id)
{
    int rc = 0;

    KMS_GUARD(kms_eth_chain_id(c->o.rpc, &c->ro, id));
    KMS_ENSURE(c->o.chain_id == 0 || c->o.chain_id == *id, KMS_ERR_ETH_CHAIN_ID,
               "the RPC serves chain %llu but --chain-id %llu was given", (unsigned long long)*id,
               (unsigned long long)c->o.chain_id);
out:
    return rc;
}

/* ---------------------------------------------------------------- events */

struct ev {
    const char *sig;
    const char *args; /* per non-indexed arg: 'h' bytes32, 'a' address, 's' string, 'b' bool,
                         'B' bytes (length only), 'u' uint; indexed args (topics): 'A' address,
                         'H' bytes32, 'P' PolicyChanged's policy (hash of a known name) */
};

static const struct ev events[] = {
    {"AppRegistered(address)", "a"},
    {"KmsInfoSet(bytes)", "B"},
    {"KmsAggregatedMrAdded(bytes32)", "h"},
    {"KmsAggregatedMrRemoved(bytes32)", "h"},
    {"KmsDeviceAdded(bytes32)", "h"},
    {"KmsDeviceRemoved(bytes32)", "h"},
    {"OsImageHashAdded(bytes32)", "h"},
    {"OsImageHashRemoved(bytes32)", "h"},
    {"GatewayAppIdSet(string)", "s"},
    {"AppImplementationSet(address)", "a"},
    {"AppDeployedViaFactory(address,address)", "AA"},
    {"ComposeHashAdded(bytes32)", "h"},
    {"ComposeHashRemoved(bytes32)", "h"},
    {"DeviceAdded(bytes32)", "h"},
    {"DeviceRemoved(bytes32)", "h"},
    {"UpgradesDisabled()", ""},
    {"AllowAnyDeviceSet(bool)", "b"},
    {"RequireTcbUpToDateSet(bool)", "b"},
    {"PolicyChanged(address,bytes32,bytes32,bool)", "APHb"},
    {"Upgraded(address)", "A"},
    {"Initialized(uint64)", "u"},
    {"OwnershipTransferred(address,address)", "AA"},
};

/* Policy names DstackKms / DstackApp hash into PolicyChanged's indexed `policy` topic. */
static const char *const policies[] = {
    "compose-hash",       "device",
    "allow-any-device",   "require-tcb-up-to-date",
    "upgrades-disabled",  "implementation-upgrade",
    "app-implementation", "kms-info",
    "gateway-app-id",     "registered-app",
    "kms-aggregated-mr",  "kms-device",
    "os-image",
};

/* Topic `t` (32 bytes of hex) as text for arg kind k ('A' address, 'H' bytes32, 'P' policy). */
static void topic_text(const char *t, char k, char *buf, size_t cap)
{
    uint8_t tw[32], h[32];

    if (t == NULL || kms_hex_decode_exact(t, tw, 32) != 0) {
        kms_err_clear();
        snprintf(buf, cap, "?");
        return;
    }
    if (k == 'A') {
        char sum[43];

        kms_eth_addr_checksum(tw + 12, sum);
        snprintf(buf, cap, "%s", sum);
        return;
    }
    if (k == 'P') {
        for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++) {
            kms_keccak256(policies[i], strlen(policies[i]), h);
            if (memcmp(h, tw, 32) == 0) {
                snprintf(buf, cap, "%s", policies[i]);
                return;
            }
        }
    }
    buf[0] = '0';
    buf[1] = 'x';
    kms_hex_encode(tw, 32, buf + 2);
}

/* One decoded log: {event, args: [strings], address}; the text line "  Event(args)  [at 0x...]"
 * (string args quoted) is printed too. Unknown events by topic. */
static void print_log(const json_t *log, json_t *events_out)
{
    const json_t *topics = json_object_get(log, "topics");
    uint8_t *data = NULL, t0[32], emitter[20];
    size_t dlen = 0;
    const char *addr = json_string_value(json_object_get(log, "address"));
    char em[43] = "?", line[2048];
    json_t *ev = NULL, *args = NULL;

    if (addr != NULL && kms_eth_parse_address(addr, emitter) == 0)
        kms_eth_addr_checksum(emitter, em);
    if (!json_is_array(topics) || json_array_size(topics) < 1 ||
        kms_hex_decode_exact(json_string_value(json_array_get(topics, 0)) != NULL
                                 ? json_string_value(json_array_get(topics, 0))
                                 : "",
                             t0, 32) != 0 ||
        kms_eth_data(json_object_get(log, "data"), KMS_ETH_MAX_RETURN, &data, &dlen) != 0) {
        kms_err_clear();
        say("  (undecodable log from %s)\n", em);
        json_array_append_new(events_out, json_pack("{s:s,s:s}", "event", "?", "address", em));
        free(data);
        return;
    }
    for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
        uint8_t h[32];
        size_t word = 0, topic = 1, used;
        int nl = (int)strcspn(events[i].sig, "(");

        kms_keccak256(events[i].sig, strlen(events[i].sig), h);
        if (memcmp(h, t0, 32) != 0)
            continue;
        args = json_array();
        used = (size_t)snprintf(line, sizeof(line), "  %.*s(", nl, events[i].sig);
        for (const char *a = events[i].args; *a != '\0'; a++) {
            const uint8_t *w = (word + 1) * 32 <= dlen ? data + word * 32 : NULL;
            char buf[300];
            int quote = 0;

            if (*a == 'A' || *a == 'H' || *a == 'P') {
                topic_text(json_string_value(json_array_get(topics, topic++)), *a, buf,
                           sizeof(buf));
                quote = *a == 'P';
            } else if (*a == 's' || *a == 'B') {
                char *str = NULL;

                if (*a == 's' && kms_eth_abi_decode_string(data, dlen, &str) == 0) {
                    snprintf(buf, sizeof(buf), "%s", str);
                    quote = 1;
                } else if (*a == 'B' && dlen >= 64) {
                    snprintf(buf, sizeof(buf), "%zu bytes", (size_t)data[62] << 8 | data[63]);
                } else {
                    snprintf(buf, sizeof(buf), "?");
                }
                kms_err_clear();
                free(str);
                word++;
            } else if (w == NULL) {
                snprintf(buf, sizeof(buf), "?");
            } else {
                word++;
                if (*a == 'h') {
                    buf[0] = '0';
                    buf[1] = 'x';
                    kms_hex_encode(w, 32, buf + 2);
                } else if (*a == 'a') {
                    kms_eth_addr_checksum(w + 12, buf);
                } else if (*a == 'b') {
                    snprintf(buf, sizeof(buf), "%s", w[31] ? "true" : "false");
                } else {
                    uint64_t v = 0;

                    for (int k = 24; k < 32; k++)
                        v = (v << 8) | w[k];
                    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
                }
            }
            json_array_append_new(args, json_string(buf));
            if (used < sizeof(line))
                used += (size_t)snprintf(line + used, sizeof(line) - used, "%s%s%s%s",
                                         a != events[i].args ? ", " : "", quote ? "\"" : "", buf,
                                         quote ? "\"" : "");
        }
        say("%s)  [at %s]\n", line, em);
        ev = json_pack("{s:s%,s:o,s:s}", "event", events[i].sig, (size_t)nl, "args", args,
                       "address", em);
        json_array_append_new(events_out, ev);
        free(data);
        return;
    }
    {
        char hx[67] = "0x";

        kms_hex_encode(t0, 32, hx + 2);
        say("  unknown event, topic0 %s\n", hx);
        json_array_append_new(
            events_out, json_pack("{s:s,s:s,s:s}", "event", "?", "topic0", hx, "address", em));
    }
    free(data);
}

/* ---------------------------------------------------------------- transactions */

static int rpc_u64(struct ctx *c, const char *method, json_t *params, uint64_t *v)
{
    json_t *res = NULL;
    int rc = 0;

    KMS_GUARD(kms_eth_rpc(c->o.rpc, &c->ro, method, params, &res, NULL));
    KMS_GUARD(kms_eth_quantity(res, v));
out:
    json_decref(res);
    return rc;
}

/* Describes the revert of an eth_estimateGas / eth_call error object into buf. */
static void revert_reason(const json_t *err, char *buf, size_t cap)
{
    const json_t *d = json_object_get(err, "data");
    const char *msg = json_string_value(json_object_get(err, "message"));
    uint8_t *rd = NULL;
    size_t n = 0;

    if (json_is_object(d))
        d = json_object_get(d, "data");
    if (json_is_string(d) && kms_eth_data(d, KMS_ETH_MAX_RETURN, &rd, &n) == 0) {
        kms_eth_revert_describe(rd, n, buf, cap);
    } else {
        kms_err_clear();
        snprintf(buf, cap, "%.200s", msg != NULL ? msg : "unknown error");
    }
    free(rd);
}

/*
 * Signs and sends a transaction to `to` (NULL: contract creation) with data, waits for the
 * receipt and prints it. *receipt (optional) gets a new reference.
 */
static int send_tx(struct ctx *c, const uint8_t *to, const uint8_t *data, size_t n,
                   json_t **receipt)
{
    struct kms_eth_tx tx = {0};
    struct kms_buf raw = {0};
    json_t *params = NULL, *res = NULL, *err = NULL, *rcpt = NULL, *txj = NULL;
    char *from_hex = NULL, *to_hex = NULL, *data_hex = NULL, *raw_hex = NULL;
    uint8_t txhash[32], sent[32];
    uint64_t est = 0, status = 0, blk = 0, gas_used = 0;
    char why[512], hx[65];
    int rc = 0;
    time_t deadline;

    if (receipt != NULL)
        *receipt = NULL;
    KMS_GUARD(load_key(c));
    KMS_GUARD(check_chain(c, &tx.chain_id));
    from_hex = kms_hex_dup(c->from, 20, 1);
    data_hex = kms_hex_dup(data, n, 1);
    KMS_GUARD_PTR(from_hex);
    KMS_GUARD_PTR(data_hex);
    if (to != NULL) {
        to_hex = kms_hex_dup(to, 20, 1);
        KMS_GUARD_PTR(to_hex);
        memcpy(tx.to, to, 20);
    } else {
        tx.create = 1;
    }
    KMS_GUARD(
        rpc_u64(c, "eth_getTransactionCount", json_pack("[s, s]", from_hex, "pending"), &tx.nonce));

    /* Estimate first: a call that would revert is reported with its reason, and not sent. */
    params = to != NULL
                 ? json_pack("[{s:s, s:s, s:s}]", "from", from_hex, "to", to_hex, "data", data_hex)
                 : json_pack("[{s:s, s:s}]", "from", from_hex, "data", data_hex);
    KMS_GUARD_PTR(params);
    rc = kms_eth_rpc(c->o.rpc, &c->ro, "eth_estimateGas", params, &res, &err);
    params = NULL;
    if (rc == KMS_ERR_ETH_RPC && err != NULL) {
        revert_reason(err, why, sizeof(why));
        rc =
            kms_err_set(KMS_ERR_ETH_REVERT, "the transaction would revert: %s (nothing sent)", why);
        goto out;
    }
    KMS_GUARD(rc);
    KMS_GUARD(kms_eth_quantity(res, &est));
    json_decref(res);
    res = NULL;
    tx.gas_limit = est + est / 5 + 10000;

    tx.legacy = c->o.legacy;
    if (!tx.legacy) {
        uint64_t base = 0;
        json_t *b;

        KMS_GUARD(kms_eth_rpc(c->o.rpc, &c->ro, "eth_getBlockByNumber",
                              json_pack("[s, b]", "latest", 0), &res, NULL));
        b = json_object_get(res, "baseFeePerGas");
        if (b == NULL) {
            tx.legacy = 1; /* pre-London chain */
        } else {
            KMS_GUARD(kms_eth_quantity(b, &base));
            if (rpc_u64(c, "eth_maxPriorityFeePerGas", NULL, &tx.max_priority_fee) < 0)
                tx.max_priority_fee = 1000000000ull; /* 1 gwei when the node has no opinion */
            KMS_ENSURE(base <= (UINT64_MAX - tx.max_priority_fee) / 2, KMS_ERR_AUTH_RESPONSE,
                       "base fee out of range");
            tx.max_fee = 2 * base + tx.max_priority_fee;
        }
        json_decref(res);
        res = NULL;
    }
    if (tx.legacy)
        KMS_GUARD(rpc_u64(c, "eth_gasPrice", NULL, &tx.gas_price));
    tx.data = data;
    tx.data_len = n;
    KMS_GUARD(kms_eth_tx_sign(&tx, c->key, &raw, txhash));
    raw_hex = kms_hex_dup(raw.data, raw.len, 1);
    KMS_GUARD_PTR(raw_hex);
    rc = kms_eth_rpc(c->o.rpc, &c->ro, "eth_sendRawTransaction", json_pack("[s]", raw_hex), &res,
                     NULL);
    KMS_GUARD(rc);
    kms_hex_encode(txhash, 32, hx);
    KMS_ENSURE(json_is_string(res) && kms_hex_decode_exact(json_string_value(res), sent, 32) == 0 &&
                   memcmp(sent, txhash, 32) == 0,
               KMS_ERR_AUTH_RESPONSE, "the node returned a different transaction hash than 0x%s",
               hx);
    txj = json_pack("{s:s,s:s,s:s,s:I,s:I}", "function", c->fn != NULL ? c->fn : "(deploy)",
                    "tx_hash", "", "type", tx.legacy ? "legacy" : "eip1559", "nonce",
                    (json_int_t)tx.nonce, "gas_limit", (json_int_t)tx.gas_limit);
    {
        char q[70];

        snprintf(q, sizeof(q), "0x%s", hx);
        json_object_set_new(txj, "tx_hash", json_string(q));
    }
    say("tx 0x%s sent (%s, nonce %llu, gas limit %llu)\n", hx,
        tx.legacy ? "legacy EIP-155" : "EIP-1559", (unsigned long long)tx.nonce,
        (unsigned long long)tx.gas_limit);

    deadline = time(NULL) + c->o.wait_s;
    for (long delay = 100;; delay = delay < 1000 ? delay * 2 : 1000) {
        char q[70];

        snprintf(q, sizeof(q), "0x%s", hx);
        json_decref(rcpt);
        rcpt = NULL;
        KMS_GUARD(kms_eth_rpc(c->o.rpc, &c->ro, "eth_getTransactionReceipt", json_pack("[s]", q),
                              &rcpt, NULL));
        if (json_is_object(rcpt))
            break;
        KMS_ENSURE(time(NULL) < deadline, KMS_ERR_ETH_TX,
                   "tx 0x%s not mined within %ld s; check it later or raise --wait-s", hx,
                   c->o.wait_s);
        {
            struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};

            nanosleep(&ts, NULL);
        }
    }
    KMS_GUARD(kms_eth_quantity(json_object_get(rcpt, "status"), &status));
    KMS_GUARD(kms_eth_quantity(json_object_get(rcpt, "blockNumber"), &blk));
    KMS_GUARD(kms_eth_quantity(json_object_get(rcpt, "gasUsed"), &gas_used));
    json_object_set_new(txj, "block", json_integer((json_int_t)blk));
    json_object_set_new(txj, "gas_used", json_integer((json_int_t)gas_used));
    json_object_set_new(txj, "status", json_string(status == 1 ? "mined" : "failed"));
    KMS_ENSURE(status == 1, KMS_ERR_ETH_TX, "tx 0x%s failed (status 0) in block %llu", hx,
               (unsigned long long)blk);
    say("mined in block %llu, gas used %llu\n", (unsigned long long)blk,
        (unsigned long long)gas_used);
    {
        json_t *logs = json_object_get(rcpt, "logs");
        json_t *evs = json_array();
        size_t i;
        json_t *l;

        if (json_is_array(logs) && json_array_size(logs) > 0) {
            say("events:\n");
            json_array_foreach(logs, i, l) print_log(l, evs);
        }
        json_object_set_new(txj, "events", evs);
    }
    if (receipt != NULL) {
        *receipt = rcpt;
        rcpt = NULL;
    }
out:
    if (txj != NULL && result != NULL) {
        json_t *txs = json_object_get(result, "transactions");

        if (txs == NULL) {
            txs = json_array();
            json_object_set_new(result, "transactions", txs);
        }
        json_array_append_new(txs, txj);
    } else {
        json_decref(txj);
    }
    c->fn = NULL;
    json_decref(params);
    json_decref(res);
    json_decref(err);
    json_decref(rcpt);
    free(from_hex);
    free(to_hex);
    free(data_hex);
    free(raw_hex);
    kms_buf_free(&raw);
    return rc;
}

/* Sends sel(args) to the DstackKms contract (to == NULL) or another address. */
static int call_tx(struct ctx *c, const uint8_t *to, const char *sig,
                   const struct kms_eth_abi_arg *args, size_t n, json_t **receipt)
{
    struct kms_buf cd = {0};
    uint8_t sel[4];
    int rc = 0;

    if (to == NULL) {
        KMS_GUARD(need_contract(c));
        to = c->contract;
    }
    kms_eth_selector(sig, sel);
    KMS_GUARD(kms_eth_abi_encode(sel, args, n, &cd));
    say("%s\n", sig);
    c->fn = sig;
    KMS_GUARD(send_tx(c, to, cd.data, cd.len, receipt));
out:
    kms_buf_free(&cd);
    return rc;
}

/* eth_call of a view with no arguments (or one pre-encoded word) on `to`. */
static int call_view(struct ctx *c, const uint8_t *to, const char *sig, const uint8_t *word,
                     uint8_t **ret, size_t *n)
{
    uint8_t cd[36];

    kms_eth_selector(sig, cd);
    if (word != NULL)
        memcpy(cd + 4, word, 32);
    return kms_eth_call(c->o.rpc, &c->ro, to, cd, word != NULL ? 36 : 4,
                        c->o.block != NULL ? c->o.block : "latest", ret, n);
}

/* ---------------------------------------------------------------- commands */

static int arg_word(const char *field, const char *hex, uint8_t w[32])
{
    return strict_hex(field, hex, w, 32, 0);
}

static int one_hash_cmd(struct ctx *c, const char *sig, const char *what)
{
    uint8_t w[32];
    int rc = 0;

    KMS_ENSURE(c->o.npos == 2, KMS_ERR_INVAL, "%s takes exactly one %s argument", c->o.pos[0],
               what);
    KMS_GUARD(arg_word(what, c->o.pos[1], w));
    {
        const struct kms_eth_abi_arg a = {KMS_ABI_WORD, w, 32};

        KMS_GUARD(call_tx(c, NULL, sig, &a, 1, NULL));
    }
out:
    return rc;
}

static int cmd_add_image(struct ctx *c)
{
    return one_hash_cmd(c, "addOsImageHash(bytes32)", "os image hash");
}
static int cmd_remove_image(struct ctx *c)
{
    return one_hash_cmd(c, "removeOsImageHash(bytes32)", "os image hash");
}
static int cmd_add_mr(struct ctx *c)
{
    return one_hash_cmd(c, "addKmsAggregatedMr(bytes32)", "aggregated MR");
}
static int cmd_remove_mr(struct ctx *c)
{
    return one_hash_cmd(c, "removeKmsAggregatedMr(bytes32)", "aggregated MR");
}
static int cmd_add_device(struct ctx *c)
{
    return one_hash_cmd(c, "addKmsDevice(bytes32)", "device id");
}
static int cmd_remove_device(struct ctx *c)
{
    return one_hash_cmd(c, "removeKmsDevice(bytes32)", "device id");
}

static int one_address_cmd(struct ctx *c, const char *sig)
{
    uint8_t a[20], w[32];
    int rc = 0;

    KMS_ENSURE(c->o.npos == 2, KMS_ERR_INVAL, "%s takes exactly one address argument", c->o.pos[0]);
    KMS_GUARD(kms_eth_parse_address(c->o.pos[1], a));
    kms_eth_word_address(a, w);
    {
        const struct kms_eth_abi_arg arg = {KMS_ABI_WORD, w, 32};

        KMS_GUARD(call_tx(c, NULL, sig, &arg, 1, NULL));
    }
out:
    return rc;
}

static int cmd_register_app(struct ctx *c)
{
    return one_address_cmd(c, "registerApp(address)");
}
static int cmd_set_app_impl(struct ctx *c)
{
    return one_address_cmd(c, "setAppImplementation(address)");
}

static int cmd_set_gateway(struct ctx *c)
{
    int rc = 0;

    KMS_ENSURE(c->o.npos == 2, KMS_ERR_INVAL, "set-gateway takes exactly one app id argument");
    {
        const struct kms_eth_abi_arg a = {KMS_ABI_BYTES, (const uint8_t *)c->o.pos[1],
                                          strlen(c->o.pos[1])};

        KMS_GUARD(call_tx(c, NULL, "setGatewayAppId(string)", &a, 1, NULL));
    }
out:
    return rc;
}

/* Finds the AppDeployedViaFactory event in a receipt: topic1 is the app id. */
static int find_app_id(const json_t *rcpt, uint8_t app[20])
{
    const char *sig = "AppDeployedViaFactory(address,address)";
    json_t *logs = json_object_get(rcpt, "logs"), *l;
    uint8_t h[32], t[32];
    size_t i;

    kms_keccak256(sig, strlen(sig), h);
    json_array_foreach(logs, i, l)
    {
        json_t *topics = json_object_get(l, "topics");
        const char *t0 = json_string_value(json_array_get(topics, 0));
        const char *t1 = json_string_value(json_array_get(topics, 1));

        if (t0 != NULL && t1 != NULL && kms_hex_decode_exact(t0, t, 32) == 0 &&
            memcmp(t, h, 32) == 0 && kms_hex_decode_exact(t1, t, 32) == 0) {
            memcpy(app, t + 12, 20);
            return 0;
        }
    }
    return kms_err_set(KMS_ERR_ETH_TX, "no AppDeployedViaFactory event in the receipt");
}

static int cmd_create_app(struct ctx *c)
{
    uint8_t owner[20], w_owner[32], w_dis[32], w_any[32], w_dev[32] = {0}, w_hash[32] = {0};
    uint8_t app[20];
    char sum[43];
    json_t *rcpt = NULL;
    int rc = 0;

    KMS_ENSURE(c->o.npos == 1, KMS_ERR_INVAL, "create-app takes no positional arguments");
    if (c->o.owner != NULL) {
        KMS_GUARD(kms_eth_parse_address(c->o.owner, owner));
    } else {
        KMS_GUARD(load_key(c));
        memcpy(owner, c->from, 20);
    }
    if (c->o.device != NULL)
        KMS_GUARD(arg_word("device id", c->o.device, w_dev));
    if (c->o.hash != NULL)
        KMS_GUARD(arg_word("compose hash", c->o.hash, w_hash));
    kms_eth_word_address(owner, w_owner);
    kms_eth_word_u64((uint64_t)c->o.disable_upgrades, w_dis);
    kms_eth_word_u64((uint64_t)c->o.allow_any, w_any);
    {
        const struct kms_eth_abi_arg a[5] = {
            {KMS_ABI_WORD, w_owner, 32}, {KMS_ABI_WORD, w_dis, 32},  {KMS_ABI_WORD, w_any, 32},
            {KMS_ABI_WORD, w_dev, 32},   {KMS_ABI_WORD, w_hash, 32},
        };

        KMS_GUARD(call_tx(c, NULL, "deployAndRegisterApp(address,bool,bool,bytes32,bytes32)", a, 5,
                          &rcpt));
    }
    KMS_GUARD(find_app_id(rcpt, app));
    kms_eth_addr_checksum(app, sum);
    say("App ID: %s\n", sum);
    put("app_id", json_string(sum));
out:
    json_decref(rcpt);
    return rc;
}

/* app <verb> --app-id A <value> */
static int app_cmd(struct ctx *c, const char *sig, const char *what, int is_bool)
{
    uint8_t app[20], w[32];
    int rc = 0;

    KMS_ENSURE(c->o.app_id != NULL, KMS_ERR_INVAL, "app %s needs --app-id ADDR", c->o.pos[1]);
    KMS_ENSURE(c->o.npos == 3, KMS_ERR_INVAL, "app %s takes exactly one %s argument", c->o.pos[1],
               what);
    KMS_GUARD(kms_eth_parse_address(c->o.app_id, app));
    if (is_bool) {
        const char *v = c->o.pos[2];

        usage_error = strcmp(v, "true") != 0 && strcmp(v, "false") != 0;
        KMS_ENSURE(!usage_error, KMS_ERR_INVAL, "app %s takes true or false", c->o.pos[1]);
        kms_eth_word_u64(strcmp(v, "true") == 0, w);
    } else {
        KMS_GUARD(arg_word(what, c->o.pos[2], w));
    }
    {
        const struct kms_eth_abi_arg a = {KMS_ABI_WORD, w, 32};

        KMS_GUARD(call_tx(c, app, sig, &a, 1, NULL));
    }
out:
    return rc;
}

static int cmd_app_add_hash(struct ctx *c)
{
    return app_cmd(c, "addComposeHash(bytes32)", "compose hash", 0);
}
static int cmd_app_remove_hash(struct ctx *c)
{
    return app_cmd(c, "removeComposeHash(bytes32)", "compose hash", 0);
}
static int cmd_app_add_device(struct ctx *c)
{
    return app_cmd(c, "addDevice(bytes32)", "device id", 0);
}
static int cmd_app_remove_device(struct ctx *c)
{
    return app_cmd(c, "removeDevice(bytes32)", "device id", 0);
}
static int cmd_app_set_any(struct ctx *c)
{
    return app_cmd(c, "setAllowAnyDevice(bool)", "flag", 1);
}
static int cmd_app_set_tcb(struct ctx *c)
{
    return app_cmd(c, "setRequireTcbUpToDate(bool)", "flag", 1);
}

/* JSON string field (first of two spellings) decoded from hex; empty when absent. */
static int json_hex_field(const json_t *o, const char *k1, const char *k2, uint8_t **p, size_t *n)
{
    const char *s = json_string_value(json_object_get(o, k1));

    if (s == NULL)
        s = json_string_value(json_object_get(o, k2));
    if (s == NULL)
        s = "";
    return kms_hex_decode(s, p, n);
}

static int cmd_set_info(struct ctx *c)
{
    static const char *const keys[4][2] = {{"k256Pubkey", "k256_pubkey"},
                                           {"caPubkey", "ca_pubkey"},
                                           {"quote", "quote"},
                                           {"eventlog", "eventlog"}};
    uint8_t *file = NULL, *v[4] = {0};
    size_t flen = 0, vn[4] = {0};
    struct kms_buf inner = {0};
    struct kms_eth_abi_arg a[4];
    json_t *j = NULL;
    json_error_t je;
    int rc = 0;

    KMS_ENSURE(c->o.npos == 2, KMS_ERR_INVAL, "set-info takes exactly one JSON file argument");
    KMS_GUARD(kms_file_read(c->o.pos[1], 16u * 1024u * 1024u, &file, &flen));
    j = json_loadb((const char *)file, flen, JSON_REJECT_DUPLICATES, &je);
    KMS_ENSURE(json_is_object(j), KMS_ERR_PARSE, "%s: not a JSON object (%s)", c->o.pos[1],
               je.text);
    for (int i = 0; i < 4; i++) {
        rc = json_hex_field(j, keys[i][0], keys[i][1], &v[i], &vn[i]);
        if (rc < 0) {
            rc = kms_err_wrap(rc, "%s: field %s", c->o.pos[1], keys[i][0]);
            goto out;
        }
        a[i].kind = KMS_ABI_BYTES;
        a[i].p = v[i];
        a[i].n = vn[i];
    }
    KMS_GUARD(kms_eth_abi_encode(NULL, a, 4, &inner));
    {
        const struct kms_eth_abi_arg t = {KMS_ABI_ENCODED, inner.data, inner.len};

        KMS_GUARD(call_tx(c, NULL, "setKmsInfo((bytes,bytes,bytes,bytes))", &t, 1, NULL));
    }
out:
    for (int i = 0; i < 4; i++)
        free(v[i]);
    free(file);
    json_decref(j);
    kms_buf_free(&inner);
    return rc;
}

static int cmd_status(struct ctx *c)
{
    uint8_t *ret = NULL, a[20];
    size_t n = 0;
    uint64_t id = 0, blk = 0;
    char *s = NULL, sum[43];
    int rc = 0;

    KMS_GUARD(need_contract(c));
    KMS_GUARD(check_chain(c, &id));
    KMS_GUARD(kms_eth_block_number(c->o.rpc, &c->ro, "latest", &blk));
    kms_eth_addr_checksum(c->contract, sum);
    say("contract:           %s\nchain id:           %llu\nlatest block:       %llu\n", sum,
        (unsigned long long)id, (unsigned long long)blk);
    put("contract", json_string(sum));
    put("chain_id", json_integer((json_int_t)id));
    put("latest_block", json_integer((json_int_t)blk));
    KMS_GUARD(call_view(c, c->contract, "owner()", NULL, &ret, &n));
    KMS_GUARD(kms_eth_abi_decode_address(ret, n, a));
    kms_eth_addr_checksum(a, sum);
    say("owner:              %s\n", sum);
    put("owner", json_string(sum));
    free(ret);
    ret = NULL;
    KMS_GUARD(call_view(c, c->contract, "gatewayAppId()", NULL, &ret, &n));
    KMS_GUARD(kms_eth_abi_decode_string(ret, n, &s));
    say("gatewayAppId:       \"%s\"\n", s);
    put("gateway_app_id", json_string(s));
    free(ret);
    ret = NULL;
    KMS_GUARD(call_view(c, c->contract, "appImplementation()", NULL, &ret, &n));
    KMS_GUARD(kms_eth_abi_decode_address(ret, n, a));
    kms_eth_addr_checksum(a, sum);
    say("appImplementation:  %s\n", sum);
    put("app_implementation", json_string(sum));
    if (c->o.app_id != NULL) {
        uint8_t app[20], w[32];
        int flag = 0;

        KMS_GUARD(kms_eth_parse_address(c->o.app_id, app));
        kms_eth_word_address(app, w);
        free(ret);
        ret = NULL;
        KMS_GUARD(call_view(c, c->contract, "registeredApps(address)", w, &ret, &n));
        KMS_GUARD(kms_eth_abi_decode_bool(ret, n, &flag));
        say("app registered:     %s\n", flag ? "yes" : "no");
        put("app_registered", json_boolean(flag));
        free(ret);
        ret = NULL;
        if (call_view(c, app, "allowAnyDevice()", NULL, &ret, &n) == 0 &&
            kms_eth_abi_decode_bool(ret, n, &flag) == 0) {
            say("app allowAnyDevice: %s\n", flag ? "true" : "false");
            put("app_allow_any_device", json_boolean(flag));
        }
        kms_err_clear();
        free(ret);
        ret = NULL;
        /* newer DstackApp only: an older one has no such view (the call reverts) */
        if (call_view(c, app, "requireTcbUpToDate()", NULL, &ret, &n) == 0 &&
            kms_eth_abi_decode_bool(ret, n, &flag) == 0) {
            say("app requireTcbUpToDate: %s\n", flag ? "true" : "false");
            put("app_require_tcb_up_to_date", json_boolean(flag));
        } else {
            say("app requireTcbUpToDate: (not in this DstackApp version)\n");
            put("app_require_tcb_up_to_date", json_null());
        }
        kms_err_clear();
    }
    if (c->have_key || env_get("KMS_ETH_PRIVATE_KEY", "PRIVATE_KEY") != NULL ||
        c->o.key_file != NULL) {
        KMS_GUARD(load_key(c));
        kms_eth_addr_checksum(c->from, sum);
        say("signer:             %s\n", sum);
        put("signer", json_string(sum));
    }
out:
    free(ret);
    free(s);
    return rc;
}

/* Boot info from --boot-info FILE (auth-api JSON body) overlaid by individual flags. */
static int boot_info_from_opts(struct ctx *c, struct kms_eth_boot_info *b, json_t **keep)
{
    const char *app = c->o.bi_app_id, *compose = c->o.bi_compose, *inst = c->o.bi_instance;
    const char *dev = c->o.bi_device, *mra = c->o.bi_mra, *mrs = c->o.bi_mrs, *os = c->o.bi_os;
    const char *tcb = c->o.bi_tcb;
    uint8_t *file = NULL;
    size_t flen = 0;
    json_t *j = NULL;
    json_error_t je;
    int rc = 0;

    memset(b, 0, sizeof(*b));
    *keep = NULL;
    if (c->o.boot_info != NULL) {
        json_t *adv;

        KMS_GUARD(kms_file_read(c->o.boot_info, 1024u * 1024u, &file, &flen));
        j = json_loadb((const char *)file, flen, JSON_REJECT_DUPLICATES, &je);
        KMS_ENSURE(json_is_object(j), KMS_ERR_PARSE, "%s: not a JSON object (%s)", c->o.boot_info,
                   je.text);
#define FROM_JSON(var, key)                                                                        \
    if (var == NULL)                                                                               \
    var = json_string_value(json_object_get(j, key))
        FROM_JSON(app, "appId");
        FROM_JSON(compose, "composeHash");
        FROM_JSON(inst, "instanceId");
        FROM_JSON(dev, "deviceId");
        FROM_JSON(mra, "mrAggregated");
        FROM_JSON(mrs, "mrSystem");
        FROM_JSON(os, "osImageHash");
        FROM_JSON(tcb, "tcbStatus");
#undef FROM_JSON
        adv = json_object_get(j, "advisoryIds");
        if (c->o.nadv == 0 && json_is_array(adv)) {
            size_t i;
            json_t *e;

            json_array_foreach(adv, i, e)
            {
                KMS_ENSURE(json_is_string(e) && c->o.nadv < MAX_ADV, KMS_ERR_PARSE,
                           "advisoryIds must be at most %d strings", MAX_ADV);
                c->o.adv[c->o.nadv++] = json_string_value(e);
            }
        }
    }
    KMS_GUARD(strict_hex("appId", app, b->app_id, 20, 1));
    KMS_GUARD(strict_hex("composeHash", compose, b->compose_hash, 32, 1));
    KMS_GUARD(strict_hex("instanceId", inst, b->instance_id, 20, 1));
    KMS_GUARD(strict_hex("deviceId", dev, b->device_id, 32, 1));
    KMS_GUARD(strict_hex("mrAggregated", mra, b->mr_aggregated, 32, 1));
    KMS_GUARD(strict_hex("mrSystem", mrs, b->mr_system, 32, 1));
    KMS_GUARD(strict_hex("osImageHash", os, b->os_image_hash, 32, 1));
    b->tcb_status = tcb != NULL ? tcb : "";
    b->advisory_ids = c->o.adv;
    b->n_advisory_ids = c->o.nadv;
    *keep = j;
    j = NULL;
out:
    json_decref(j);
    free(file);
    return rc;
}

static int is_allowed_cmd(struct ctx *c, int is_kms, int *denied)
{
    struct kms_eth_boot_info b;
    struct kms_buf cd = {0};
    uint8_t *ret = NULL;
    size_t n = 0;
    json_t *keep = NULL;
    char *reason = NULL;
    int allowed = 0, rc = 0;

    KMS_ENSURE(c->o.npos == 1, KMS_ERR_INVAL, "%s takes only options", c->o.pos[0]);
    KMS_GUARD(need_contract(c));
    {
        uint64_t id;

        KMS_GUARD(check_chain(c, &id));
    }
    KMS_GUARD(boot_info_from_opts(c, &b, &keep));
    KMS_GUARD(kms_eth_abi_boot_info_call(is_kms, &b, &cd));
    rc = kms_eth_call(c->o.rpc, &c->ro, c->contract, cd.data, cd.len,
                      c->o.block != NULL ? c->o.block : "latest", &ret, &n);
    if (rc == KMS_ERR_ETH_REVERT) {
        say("denied: contract call reverted: %s\n", kms_err_detail());
        put("allowed", json_false());
        put("reason", json_sprintf("contract call reverted: %s", kms_err_detail()));
        *denied = 1;
        rc = 0;
        goto out;
    }
    KMS_GUARD(rc);
    KMS_GUARD(kms_eth_abi_decode_bool_string(ret, n, &allowed, &reason));
    put("allowed", json_boolean(allowed));
    put("reason", json_string(reason != NULL ? reason : ""));
    if (allowed) {
        say("allowed\n");
    } else {
        say("denied: %s\n", reason);
        *denied = 1;
    }
out:
    free(ret);
    free(reason);
    json_decref(keep);
    kms_buf_free(&cd);
    return rc;
}

static int denied_flag;

static int cmd_is_kms_allowed(struct ctx *c)
{
    return is_allowed_cmd(c, 1, &denied_flag);
}
static int cmd_is_app_allowed(struct ctx *c)
{
    return is_allowed_cmd(c, 0, &denied_flag);
}

/* Reads a solc .bin (hex text) file. */
static int read_bin(const char *path, struct kms_buf *out)
{
    uint8_t *file = NULL, *bin = NULL;
    size_t flen = 0, blen = 0;
    char *s = NULL;
    int rc = 0;

    KMS_GUARD(kms_file_read(path, 2 * BIN_MAX, &file, &flen));
    s = strndup((const char *)file, flen);
    KMS_GUARD_PTR(s);
    s[strcspn(s, " \r\n\t")] = '\0';
    rc = kms_hex_decode(s, &bin, &blen);
    if (rc < 0) {
        rc = kms_err_wrap(rc, "%s is not a hex bytecode file", path);
        goto out;
    }
    KMS_ENSURE(blen > 0, KMS_ERR_PARSE, "%s holds no bytecode", path);
    KMS_GUARD(kms_buf_put(out, bin, blen));
out:
    free(file);
    free(s);
    free(bin);
    return rc;
}

static int deploy_one(struct ctx *c, const char *what, const char *key, const struct kms_buf *code,
                      uint8_t addr[20])
{
    json_t *rcpt = NULL;
    char sum[43];
    int rc = 0;

    say("deploying %s (%zu bytes)\n", what, code->len);
    KMS_GUARD(send_tx(c, NULL, code->data, code->len, &rcpt));
    rc = kms_eth_parse_address(json_string_value(json_object_get(rcpt, "contractAddress")), addr);
    if (rc < 0) {
        rc = kms_err_wrap(KMS_ERR_ETH_TX, "receipt of the %s deployment has no contract address",
                          what);
        goto out;
    }
    kms_eth_addr_checksum(addr, sum);
    say("%s: %s\n", what, sum);
    put(key, json_string(sum));
out:
    json_decref(rcpt);
    return rc;
}

static int cmd_deploy(struct ctx *c)
{
    struct kms_buf app = {0}, kms = {0}, proxy = {0}, init = {0};
    uint8_t app_addr[20], kms_addr[20], proxy_addr[20], owner[20], w_owner[32], w_impl[32],
        w_kimpl[32];
    char path[3][4096], sum[43];
    int rc = 0;

    KMS_ENSURE(c->o.npos == 1, KMS_ERR_INVAL, "deploy takes only options");
    if (c->o.artifacts != NULL) {
        snprintf(path[0], sizeof(path[0]), "%s/DstackApp_sol_DstackApp.bin", c->o.artifacts);
        snprintf(path[1], sizeof(path[1]), "%s/DstackKms_sol_DstackKms.bin", c->o.artifacts);
        snprintf(path[2], sizeof(path[2]), "%s/ERC1967Proxy_sol_ERC1967Proxy.bin", c->o.artifacts);
    }
    KMS_ENSURE(c->o.artifacts != NULL ||
                   (c->o.app_bin != NULL && c->o.kms_bin != NULL && c->o.proxy_bin != NULL),
               KMS_ERR_INVAL,
               "deploy needs --artifacts DIR or --app-bin, --kms-bin and --proxy-bin");
    KMS_GUARD(read_bin(c->o.app_bin != NULL ? c->o.app_bin : path[0], &app));
    KMS_GUARD(read_bin(c->o.kms_bin != NULL ? c->o.kms_bin : path[1], &kms));
    KMS_GUARD(read_bin(c->o.proxy_bin != NULL ? c->o.proxy_bin : path[2], &proxy));
    KMS_GUARD(load_key(c));
    if (c->o.owner != NULL)
        KMS_GUARD(kms_eth_parse_address(c->o.owner, owner));
    else
        memcpy(owner, c->from, 20);

    KMS_GUARD(deploy_one(c, "DstackApp implementation", "app_implementation", &app, app_addr));
    KMS_GUARD(deploy_one(c, "DstackKms implementation", "kms_implementation", &kms, kms_addr));
    /* proxy constructor(address implementation, bytes data = initialize(owner, appImpl)) */
    kms_eth_word_address(owner, w_owner);
    kms_eth_word_address(app_addr, w_impl);
    {
        const struct kms_eth_abi_arg ia[2] = {{KMS_ABI_WORD, w_owner, 32},
                                              {KMS_ABI_WORD, w_impl, 32}};
        uint8_t sel[4];

        kms_eth_selector("initialize(address,address)", sel);
        KMS_GUARD(kms_eth_abi_encode(sel, ia, 2, &init));
    }
    kms_eth_word_address(kms_addr, w_kimpl);
    {
        const struct kms_eth_abi_arg pa[2] = {{KMS_ABI_WORD, w_kimpl, 32},
                                              {KMS_ABI_BYTES, init.data, init.len}};

        KMS_GUARD(kms_eth_abi_encode(NULL, pa, 2, &proxy));
    }
    KMS_GUARD(deploy_one(c, "DstackKms proxy", "kms_contract_addr", &proxy, proxy_addr));
    kms_eth_addr_checksum(proxy_addr, sum);
    say("KMS_CONTRACT_ADDR=%s\n", sum);
out:
    kms_buf_free(&app);
    kms_buf_free(&kms);
    kms_buf_free(&proxy);
    kms_buf_free(&init);
    return rc;
}

static const struct cmd cmds[] = {
    {"deploy",
     "usage: kmsctl chain deploy (--artifacts DIR | --app-bin F --kms-bin F --proxy-bin F) "
     "[--owner ADDR]\n"
     "Deploys the DstackApp implementation, the DstackKms implementation and an ERC-1967 proxy\n"
     "initialized with initialize(owner, appImpl); prints KMS_CONTRACT_ADDR=<proxy>. DIR holds\n"
     "solc output (DstackApp_sol_DstackApp.bin, DstackKms_sol_DstackKms.bin,\n"
     "ERC1967Proxy_sol_ERC1967Proxy.bin). The owner defaults to the signer.\n",
     cmd_deploy},
    {"add-image",
     "usage: kmsctl chain add-image OS_IMAGE_HASH\nDstackKms.addOsImageHash (owner only).\n",
     cmd_add_image},
    {"remove-image",
     "usage: kmsctl chain remove-image OS_IMAGE_HASH\nDstackKms.removeOsImageHash (owner only).\n",
     cmd_remove_image},
    {"add-mr",
     "usage: kmsctl chain add-mr MR_AGGREGATED\nDstackKms.addKmsAggregatedMr (owner only).\n",
     cmd_add_mr},
    {"remove-mr",
     "usage: kmsctl chain remove-mr MR_AGGREGATED\nDstackKms.removeKmsAggregatedMr (owner only).\n",
     cmd_remove_mr},
    {"add-device",
     "usage: kmsctl chain add-device DEVICE_ID\nDstackKms.addKmsDevice (owner only).\n",
     cmd_add_device},
    {"remove-device",
     "usage: kmsctl chain remove-device DEVICE_ID\nDstackKms.removeKmsDevice (owner only).\n",
     cmd_remove_device},
    {"register-app",
     "usage: kmsctl chain register-app APP_ADDR\nDstackKms.registerApp (anyone may call it).\n",
     cmd_register_app},
    {"set-app-impl",
     "usage: kmsctl chain set-app-impl IMPL_ADDR\nDstackKms.setAppImplementation (owner only).\n",
     cmd_set_app_impl},
    {"create-app",
     "usage: kmsctl chain create-app [--allow-any-device] [--device D] [--hash H] [--owner A] "
     "[--disable-upgrades]\n"
     "DstackKms.deployAndRegisterApp(owner, disableUpgrades, allowAnyDevice, D|0, H|0); prints "
     "the\n"
     "new App ID. The owner defaults to the signer.\n",
     cmd_create_app},
    {"app add-hash",
     "usage: kmsctl chain app add-hash --app-id A COMPOSE_HASH\nDstackApp(A).addComposeHash (app "
     "owner only).\n",
     cmd_app_add_hash},
    {"app remove-hash",
     "usage: kmsctl chain app remove-hash --app-id A COMPOSE_HASH\nDstackApp(A).removeComposeHash "
     "(app owner only).\n",
     cmd_app_remove_hash},
    {"app add-device",
     "usage: kmsctl chain app add-device --app-id A DEVICE_ID\nDstackApp(A).addDevice (app owner "
     "only).\n",
     cmd_app_add_device},
    {"app remove-device",
     "usage: kmsctl chain app remove-device --app-id A DEVICE_ID\nDstackApp(A).removeDevice (app "
     "owner only).\n",
     cmd_app_remove_device},
    {"app set-allow-any-device",
     "usage: kmsctl chain app set-allow-any-device --app-id A "
     "true|false\nDstackApp(A).setAllowAnyDevice (app owner only).\n",
     cmd_app_set_any},
    {"app set-require-tcb-up-to-date",
     "usage: kmsctl chain app set-require-tcb-up-to-date --app-id A true|false\n"
     "DstackApp(A).setRequireTcbUpToDate (app owner only; newer DstackApp): with true, the app\n"
     "boots only on a platform whose TCB status is UpToDate. Read it with\n"
     "`kmsctl chain status --app-id A`. Emits RequireTcbUpToDateSet and PolicyChanged.\n",
     cmd_app_set_tcb},
    {"set-gateway",
     "usage: kmsctl chain set-gateway GATEWAY_APP_ID\nDstackKms.setGatewayAppId (owner only).\n",
     cmd_set_gateway},
    {"set-info",
     "usage: kmsctl chain set-info FILE.json\nDstackKms.setKmsInfo from a JSON object with hex "
     "fields k256Pubkey, caPubkey, quote, eventlog\n(snake_case accepted; missing = empty).\n",
     cmd_set_info},
    {"status",
     "usage: kmsctl chain status [--app-id A] [--block TAG]\nShows the contract, chain id, latest "
     "block, owner, gatewayAppId, appImplementation\n(and with --app-id, whether the app is "
     "registered, allowAnyDevice, requireTcbUpToDate). Read-only; no key needed.\n",
     cmd_status},
    {"is-kms-allowed",
     "usage: kmsctl chain is-kms-allowed [--boot-info FILE.json] [--mr-aggregated H] "
     "[--os-image-hash H]\n"
     "       [--device-id H] [--tcb-status S] [--app-id H] [--compose-hash H] [--instance-id H]\n"
     "       [--mr-system H] [--advisory-id ID]... [--block TAG]\n"
     "Calls DstackKms.isKmsAllowed with the boot info (FILE is the auth-api JSON body; each hex\n"
     "value exactly its size: 20 bytes for app/instance ids, 32 for the others; empty or absent\n"
     "= zero) and prints \"allowed\" or \"denied: <reason>\".\n"
     "Exit status 0 allowed, 3 denied. Read-only; no key needed.\n",
     cmd_is_kms_allowed},
    {"is-app-allowed",
     "usage: kmsctl chain is-app-allowed [boot info options as for is-kms-allowed]\n"
     "Calls DstackKms.isAppAllowed and prints \"allowed\" or \"denied: <reason>\".\n"
     "Exit status 0 allowed, 3 denied. Read-only; no key needed.\n",
     cmd_is_app_allowed},
};

/* ---------------------------------------------------------------- option parsing */

struct optdef {
    const char *name;
    const char **str; /* string option */
    int *flag;        /* flag */
    int kind;         /* 0 string, 1 flag, 2 long, 3 u64, 4 advisory */
};

static int parse_args(int argc, char **argv, struct opts *o)
{
    const struct optdef defs[] = {
        {"--rpc", &o->rpc, NULL, 0},
        {"--contract", &o->contract, NULL, 0},
        {"--key-file", &o->key_file, NULL, 0},
        {"--block", &o->block, NULL, 0},
        {"--app-id", &o->app_id, NULL, 0},
        {"--device", &o->device, NULL, 0},
        {"--hash", &o->hash, NULL, 0},
        {"--owner", &o->owner, NULL, 0},
        {"--artifacts", &o->artifacts, NULL, 0},
        {"--app-bin", &o->app_bin, NULL, 0},
        {"--kms-bin", &o->kms_bin, NULL, 0},
        {"--proxy-bin", &o->proxy_bin, NULL, 0},
        {"--boot-info", &o->boot_info, NULL, 0},
        {"--compose-hash", &o->bi_compose, NULL, 0},
        {"--instance-id", &o->bi_instance, NULL, 0},
        {"--device-id", &o->bi_device, NULL, 0},
        {"--mr-aggregated", &o->bi_mra, NULL, 0},
        {"--mr-system", &o->bi_mrs, NULL, 0},
        {"--os-image-hash", &o->bi_os, NULL, 0},
        {"--tcb-status", &o->bi_tcb, NULL, 0},
        {"--legacy", NULL, &o->legacy, 1},
        {"--allow-any-device", NULL, &o->allow_any, 1},
        {"--disable-upgrades", NULL, &o->disable_upgrades, 1},
        {"--help", NULL, &o->help, 1},
        {"--json", NULL, &o->json, 1},
        {"-h", NULL, &o->help, 1},
        {"--timeout-ms", NULL, NULL, 2},
        {"--wait-s", NULL, NULL, 2},
        {"--chain-id", NULL, NULL, 3},
        {"--advisory-id", NULL, NULL, 4},
    };
    int rc = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const struct optdef *d = NULL;
        const char *val = NULL;
        size_t nl;

        if (a[0] != '-' || strcmp(a, "-") == 0) {
            KMS_ENSURE(o->npos < MAX_POS, KMS_ERR_INVAL, "too many arguments");
            o->pos[o->npos++] = a;
            continue;
        }
        nl = strcspn(a, "=");
        for (size_t k = 0; k < sizeof(defs) / sizeof(defs[0]); k++)
            if (strlen(defs[k].name) == nl && strncmp(defs[k].name, a, nl) == 0)
                d = &defs[k];
        KMS_ENSURE(d != NULL, KMS_ERR_INVAL, "unknown option %.*s", (int)nl, a);
        if (d->kind == 1) {
            KMS_ENSURE(a[nl] == '\0', KMS_ERR_INVAL, "%s takes no value", d->name);
            *d->flag = 1;
            continue;
        }
        if (a[nl] == '=') {
            val = a + nl + 1;
        } else {
            KMS_ENSURE(i + 1 < argc, KMS_ERR_INVAL, "%s needs a value", d->name);
            val = argv[++i];
        }
        if (d->kind == 0) {
            *d->str = val;
        } else if (d->kind == 4) {
            KMS_ENSURE(o->nadv < MAX_ADV, KMS_ERR_INVAL, "at most %d --advisory-id", MAX_ADV);
            o->adv[o->nadv++] = val;
        } else {
            uint64_t v = 0;

            KMS_GUARD(parse_u64(val, &v));
            if (strcmp(d->name, "--chain-id") == 0) {
                o->chain_id = v;
            } else {
                KMS_ENSURE(v > 0 && v < 86400000ull, KMS_ERR_INVAL, "%s out of range", d->name);
                if (strcmp(d->name, "--timeout-ms") == 0)
                    o->timeout_ms = (long)v;
                else
                    o->wait_s = (long)v;
            }
        }
    }
out:
    return rc;
}

int kms_cli_chain(int argc, char **argv)
{
    struct ctx c;
    const struct cmd *cmd = NULL;
    int rc = 0, ret = EXIT_ERR;

    memset(&c, 0, sizeof(c));
    c.o.timeout_ms = 10000;
    c.o.wait_s = 120;
    if (parse_args(argc, argv, &c.o) < 0) {
        fprintf(stderr, "kmsctl chain: %s\n%s", kms_err_detail(), usage_global);
        return EXIT_USAGE;
    }
    /* bi_app_id shares --app-id: for is-*-allowed it is the boot info's app id */
    c.o.bi_app_id = c.o.app_id;
    if (c.o.npos == 0) {
        fputs(usage_global, c.o.help ? stdout : stderr);
        return c.o.help ? 0 : EXIT_USAGE;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        const char *sp = strchr(cmds[i].name, ' ');

        if (sp == NULL && strcmp(cmds[i].name, c.o.pos[0]) == 0)
            cmd = &cmds[i];
        else if (sp != NULL && c.o.npos >= 2 &&
                 strncmp(cmds[i].name, c.o.pos[0], (size_t)(sp - cmds[i].name)) == 0 &&
                 c.o.pos[0][sp - cmds[i].name] == '\0' && strcmp(sp + 1, c.o.pos[1]) == 0)
            cmd = &cmds[i];
    }
    if (cmd == NULL) {
        if (strcmp(c.o.pos[0], "app") == 0) {
            printf("app commands:\n");
            for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
                if (strncmp(cmds[i].name, "app ", 4) == 0)
                    fputs(cmds[i].help, stdout);
            return c.o.help ? 0 : EXIT_USAGE;
        }
        fprintf(stderr, "kmsctl chain: unknown command \"%s\"\n%s", c.o.pos[0], usage_global);
        return EXIT_USAGE;
    }
    if (c.o.help) {
        fputs(cmd->help, stdout);
        fputs("common options: --rpc URL, --contract ADDR, --key-file FILE, --chain-id N, "
              "--legacy, --timeout-ms N, --wait-s N\n",
              stdout);
        return 0;
    }
    if (env_conflicts() < 0) {
        fprintf(stderr, "kmsctl chain: %s\n", kms_err_detail());
        return EXIT_USAGE;
    }
    if (c.o.rpc == NULL)
        c.o.rpc = env_get("KMS_ETH_RPC_URL", "RPC_URL");
    if (c.o.contract == NULL)
        c.o.contract = env_get("KMS_CONTRACT_ADDR", "KMS_CONTRACT_ADDRESS");
    if (c.o.rpc == NULL) {
        fprintf(stderr,
                "kmsctl chain: no RPC: pass --rpc URL or set KMS_ETH_RPC_URL (or RPC_URL)\n");
        return EXIT_USAGE;
    }
    txt_out = c.o.json ? stderr : stdout;
    result = c.o.json ? json_pack("{s:s}", "command", cmd->name) : NULL;
    c.ro.timeout_ms = c.o.timeout_ms;
    c.ro.retries = 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    denied_flag = 0;
    usage_error = 0;
    rc = cmd->fn(&c);
    if (rc < 0 && usage_error) {
        fail();
        ret = EXIT_USAGE;
    } else if (rc < 0) {
        ret = fail();
    } else {
        ret = denied_flag ? EXIT_DENIED : 0;
    }
    if (result != NULL) {
        /* the result so far, also after an error (e.g. a transaction that was sent) */
        put("ok", json_boolean(rc == 0));
        if (rc < 0)
            put("error", json_string(kms_err_detail()));
        put("exit_status", json_integer(ret));
        {
            char *txt = json_dumps(result, JSON_INDENT(2));

            printf("%s\n", txt != NULL ? txt : "null");
            free(txt);
        }
        json_decref(result);
        result = NULL;
    }
    txt_out = NULL;
    OPENSSL_cleanse(c.key, sizeof(c.key));
    return ret;
}
