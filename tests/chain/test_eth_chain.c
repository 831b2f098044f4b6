/*
 * eth end to end on a real chain (label `chain`): anvil from npm, the project's
 * DstackKms/DstackApp-compatible contracts compiled with solcjs, deployed and administered
 * through `kmsctl chain` (this binary runs the same CLI code when called as `<self> chain ...`),
 * and decisions read through kms_auth_check / kms_auth_info of the eth backend:
 *   app: fresh contract denied with the contract's reason → image, app and compose hash and
 *        device registered → allowed → hash removed → denied again;
 *   KMS: denied → add-mr / add-device → allowed → remove-mr → denied;
 *   two anvils with different state under quorum fail closed; failover and k=1 work.
 * Tools missing: fails, unless KMS_ALLOW_SKIP_CHAIN=1 (then exit 77 = skipped).
 */
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chain/eth.h"
#include "common/hex.h"
#include "test.h"

int kms_cli_chain(int argc, char **argv);
extern char **environ;

/* anvil's first well-known development account (public test key, not a secret). */
#define DEV_KEY "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
/* second development account: not the contract owner */
#define OTHER_KEY "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"

static char g_tmp[256], g_self[4096], g_src[4096];
static char g_contract[64], g_rpc[2][128];
static pid_t g_anvil[2] = {-1, -1};

static int run_sh(const char *cmd)
{
    int st = system(cmd);

    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Runs `<self> chain <args>` with KMS_ETH_RPC_URL/KMS_CONTRACT_ADDR/KMS_ETH_PRIVATE_KEY set;
 * output (stdout+stderr) into out; returns the exit status. */
static int cli(char *out, size_t cap, const char *rpc, const char *key, const char *args)
{
    char cmd[8192];
    FILE *p;
    size_t n = 0;
    int st;

    snprintf(cmd, sizeof(cmd),
             "KMS_ETH_RPC_URL='%s' KMS_CONTRACT_ADDR='%s' KMS_ETH_PRIVATE_KEY='%s' '%s' chain %s "
             "2>&1",
             rpc, g_contract, key != NULL ? key : "", g_self, args);
    p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    while (n + 1 < cap) {
        size_t k = fread(out + n, 1, cap - 1 - n, p);

        if (k == 0)
            break;
        n += k;
    }
    out[n] = '\0';
    st = pclose(p);
    if (getenv("KMS_TEST_VERBOSE") != NULL)
        printf("$ kmsctl chain %s\n%s", args, out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int start_anvil(int idx)
{
    char log[512], bin[4096], line[512];
    posix_spawn_file_actions_t fa;
    char *argv[] = {bin, "--host", "127.0.0.1", "--port", "0", NULL};
    int port = 0;

    snprintf(bin, sizeof(bin), "%s/tests/chain/node_modules/.bin/anvil", g_src);
    snprintf(log, sizeof(log), "%s/anvil%d.log", g_tmp, idx);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (posix_spawn(&g_anvil[idx], bin, &fa, NULL, argv, environ) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    /* Until anvil logs its port, at most 120 s (a loaded machine); idle it takes a second. */
    for (time_t end = time(NULL) + 120; time(NULL) < end && port == 0;) {
        FILE *f = fopen(log, "r");

        if (f != NULL) {
            while (fgets(line, sizeof(line), f) != NULL) {
                char *l = strstr(line, "Listening on 127.0.0.1:");

                if (l != NULL)
                    port = atoi(l + strlen("Listening on 127.0.0.1:"));
            }
            fclose(f);
        }
        if (port == 0)
            usleep(50000);
    }
    if (port == 0)
        return -1;
    snprintf(g_rpc[idx], sizeof(g_rpc[idx]), "http://127.0.0.1:%d", port);
    return 0;
}

static void stop_anvils(void)
{
    for (int i = 0; i < 2; i++) {
        if (g_anvil[i] > 0) {
            kill(g_anvil[i], SIGTERM);
            waitpid(g_anvil[i], NULL, 0);
            g_anvil[i] = -1;
        }
    }
}

/* Value of "key: value" / "KEY=value" in CLI output. */
static int grab(const char *out, const char *key, char *val, size_t cap)
{
    const char *p = strstr(out, key);
    size_t n;

    if (p == NULL)
        return -1;
    p += strlen(key);
    while (*p == ' ')
        p++;
    n = strcspn(p, " \r\n");
    if (n >= cap)
        return -1;
    memcpy(val, p, n);
    val[n] = '\0';
    return 0;
}

static struct kms_auth *make(const char **urls, size_t n, const char *policy, unsigned k,
                             uint64_t chain_id)
{
    struct kms_auth_cfg cfg;
    struct kms_auth *a = NULL;

    memset(&cfg, 0, sizeof(cfg));
    cfg.type = "eth";
    cfg.eth_rpc_urls = urls;
    cfg.eth_n_rpc_urls = n;
    cfg.eth_policy = policy;
    cfg.eth_quorum_k = k;
    cfg.eth_contract = g_contract;
    cfg.eth_chain_id = chain_id;
    cfg.eth_cache_ttl_ms = -1; /* each step must see the chain's new state */
    cfg.timeout_ms = 30000;    /* an upper bound: anvil answers slowly on a loaded machine */
    CHECK_OK(kms_auth_new(&cfg, &a));
    return a;
}

#define OS_HASH "0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
#define COMPOSE "0xc0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"
#define DEVICE "0xdededededededededededededededededededededededededededededededede"
#define MR_AGG "0x4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d"

static uint8_t g_app_id[20], g_os[32], g_compose[32];

static void bi_fill(struct kms_boot_info *bi)
{
    memset(bi, 0, sizeof(*bi));
    CHECK_OK(kms_hex_decode_exact(OS_HASH, g_os, 32));
    CHECK_OK(kms_hex_decode_exact(COMPOSE, g_compose, 32));
    CHECK_OK(kms_hex_decode_exact(DEVICE, bi->device_id, 32));
    CHECK_OK(kms_hex_decode_exact(MR_AGG, bi->mr_aggregated, 32));
    bi->app_id.p = g_app_id;
    bi->app_id.len = 20;
    bi->os_image_hash.p = g_os;
    bi->os_image_hash.len = 32;
    bi->compose_hash.p = g_compose;
    bi->compose_hash.len = 32;
    snprintf(bi->tcb_status, sizeof(bi->tcb_status), "UpToDate");
}

/* Expects a decision (rc 0) with the given allowed flag and reason. */
#define EXPECT(a, is_kms, bi, want_allowed, want_reason)                                           \
    do {                                                                                           \
        struct kms_auth_result r_;                                                                 \
        CHECK_OK(kms_auth_check((a), (is_kms), (bi), &r_));                                        \
        CHECK(r_.allowed == (want_allowed));                                                       \
        if (strcmp(r_.reason, (want_reason)) != 0) {                                               \
            fprintf(stderr, "  FAIL %s:%d: reason \"%s\", want \"%s\"\n", __FILE__, __LINE__,      \
                    r_.reason, (want_reason));                                                     \
            kms_test_failures++;                                                                   \
        }                                                                                          \
    } while (0)

static char out[65536];

/* Deploys the contracts on anvil idx through `kmsctl chain deploy`. */
static void deploy(int idx)
{
    char args[1024], addr[64];

    snprintf(args, sizeof(args), "deploy --artifacts '%s/out'", g_tmp);
    CHECK(cli(out, sizeof(out), g_rpc[idx], DEV_KEY, args) == 0);
    CHECK(grab(out, "KMS_CONTRACT_ADDR=", addr, sizeof(addr)) == 0);
    CHECK(strstr(out, &DEV_KEY[2]) == NULL); /* the key is never printed */
    if (idx == 0)
        snprintf(g_contract, sizeof(g_contract), "%s", addr);
    else
        CHECK(strcmp(addr, g_contract) == 0); /* same deployer and nonces → same address */
}

/* App onboarding: the Done-when sequence with the contract's reasons at each step. */
static void test_app_flow(void)
{
    const char *urls[1] = {g_rpc[0]};
    struct kms_boot_info bi;
    struct kms_auth_info info;
    struct kms_auth *a;
    char app[64], args[512];

    bi_fill(&bi);
    memset(g_app_id, 0x11, 20);
    a = make(urls, 1, NULL, 0, 31337);
    EXPECT(a, 0, &bi, 0, "App not registered");

    CHECK(cli(out, sizeof(out), g_rpc[0], DEV_KEY, "create-app --hash " COMPOSE) == 0);
    CHECK(strstr(out, "ComposeHashAdded(" COMPOSE ")") != NULL); /* prints what changed */
    CHECK(grab(out, "App ID:", app, sizeof(app)) == 0);
    CHECK_OK(kms_eth_parse_address(app, g_app_id));
    EXPECT(a, 0, &bi, 0, "OS image is not allowed");

    CHECK(cli(out, sizeof(out), g_rpc[0], DEV_KEY, "add-image " OS_HASH) == 0);
    CHECK(strstr(out, "OsImageHashAdded(" OS_HASH ")") != NULL);
    EXPECT(a, 0, &bi, 0, "Device not allowed");

    snprintf(args, sizeof(args), "app add-device --app-id %s " DEVICE, app);
    CHECK(cli(out, sizeof(out), g_rpc[0], DEV_KEY, args) == 0);
    EXPECT(a, 0, &bi, 1, "");

    /* gateway id comes with the decision and in GetMeta */
    CHECK(cli(out, sizeof(out), g_rpc[0], DEV_KEY, "set-gateway gw-e2e") == 0);
    {
        struct kms_auth_result r;

        CHECK_OK(kms_auth_check(a, 0, &bi, &r));
        CHECK(r.allowed == 1 && strcmp(r.gateway_app_id, "gw-e2e") == 0);
    }
    CHECK_OK(kms_auth_info(a, &info));
    CHECK(info.chain_id == 31337 && strcmp(info.gateway_app_id, "gw-e2e") == 0);
    CHECK(strcasecmp(info.kms_contract_addr, g_contract) == 0);
    CHECK(info.app_implementation != NULL &&
          strcmp(info.app_implementation, "0x0000000000000000000000000000000000000000") != 0);
    kms_auth_info_clear(&info);

    /* the CLI shows the same decision and reason (exit 0 allowed, 3 denied) */
    snprintf(args, sizeof(args),
             "is-app-allowed --app-id %s --compose-hash " COMPOSE " --os-image-hash " OS_HASH
             " --device-id " DEVICE,
             app);
    CHECK(cli(out, sizeof(out), g_rpc[0], NULL, args) == 0);
    CHECK(strncmp(out, "allowed", 7) == 0);

    snprintf(args, sizeof(args), "app remove-hash --app-id %s " COMPOSE, app);
    CHECK(cli(out, sizeof(out), g_rpc[0], DEV_KEY, args) == 0);
    CHECK(strstr(out, "ComposeHashRemoved(" COMPOSE ")") != NULL);
    EXPECT(a, 0, &bi, 0, "Compose hash not allowed");
    snprintf(args, sizeof(args),
             "is-app-allowed --app-id %s --compose-hash " COMPOSE " --os-image-hash " OS_HASH, app);
    CHECK(cli(out, sizeof(out), g_rpc[0], NULL, args) == 3);
    CHECK(strstr(out, "denied: Compose hash not allowed") != NULL);

    /* allow any device: a hash re-added, another device passes */
    snprintf(args, sizeof(args), "app add-hash --app-id %s " COMPOSE, app);
    CHECK(cli(out, sizeof(out), g_rpc[0], DEV_KEY, args) == 0);
    bi.device_id[0] ^= 1;
    EXPECT(a, 0, &bi, 0, "Device not allowed");
    snprintf(args, sizeof(args), "app set-allow-any-device --app-id %s true", app);
    CHECK(cli(out, sizeof(out), g_rpc[0], DEV_KEY, args) == 0);
    CHECK(strstr(out, "AllowAnyDeviceSet(true)") != NULL);
    EXPECT(a, 0, &bi, 1, "");
    kms_auth_free(a);
}

/* KMS onboarding: TCB, image, MR and device checks in the contract's order. */
static void test_kms_flow(void)
{
    const char *urls[1] = {g_rpc[0]};
    struct kms_boot_info bi;
    struct kms_auth *a;

    bi_fill(&bi);
    a = make(urls, 1, NULL, 0, 0);
    snprintf(bi.tcb_status, sizeof(bi.tcb_status), "OutOfDate");
    EXPECT(a, 1, &bi, 0, "TCB status is not up to date");
    snprintf(bi.tcb_status, sizeof(bi.tcb_status), "UpToDate");
    EXPECT(a, 1, &bi, 0, "Aggregated MR not allowed"); /* image was added in the app flow */
    CHECK(cli(out, sizeof(out), g_rpc[0], DEV_KEY, "add-mr " MR_AGG) == 0);
    EXPECT(a, 1, &bi, 0, "KMS is not allowed to boot on this device");
    CHECK(cli(out, sizeof(out), g_rpc[0], DEV_KEY, "add-device " DEVICE " --legacy") == 0);
    CHECK(strstr(out, "legacy EIP-155") != NULL);
    EXPECT(a, 1, &bi, 1, "");
    CHECK(cli(out, sizeof(out), g_rpc[0], NULL,
              "is-kms-allowed --tcb-status UpToDate "
              "--os-image-hash " OS_HASH " --mr-aggregated " MR_AGG " --device-id " DEVICE) == 0);
    CHECK(cli(out, sizeof(out), g_rpc[0], DEV_KEY, "remove-mr " MR_AGG) == 0);
    EXPECT(a, 1, &bi, 0, "Aggregated MR not allowed");

    /* only the owner may administer: another key's transaction is refused before sending */
    CHECK(cli(out, sizeof(out), g_rpc[0], OTHER_KEY, "add-mr " MR_AGG) == 1);
    CHECK(strstr(out, "would revert: OwnableUnauthorizedAccount") != NULL);
    CHECK(strstr(out, &OTHER_KEY[2]) == NULL);
    EXPECT(a, 1, &bi, 0, "Aggregated MR not allowed");
    /* a CLI pinned to another chain id refuses to sign */
    CHECK(cli(out, sizeof(out), g_rpc[0], DEV_KEY, "add-mr " MR_AGG " --chain-id 1") == 1);
    CHECK(strstr(out, "serves chain 31337 but --chain-id 1") != NULL);
    /* Block tags: anvil's finalized block trails the head by 64. Before that many blocks the
     * contract does not exist there, so the read fails closed; later a change is visible at
     * "latest" at once and at "finalized" only once it is 64 blocks deep. */
    {
        struct kms_eth_rpc_opts o = {30000, 0};
        struct kms_auth_cfg cfg;
        struct kms_auth *f = NULL;
        struct kms_auth_result r;
        json_t *res = NULL;

        memset(&cfg, 0, sizeof(cfg));
        cfg.type = "eth";
        cfg.eth_rpc_urls = urls;
        cfg.eth_n_rpc_urls = 1;
        cfg.eth_contract = g_contract;
        cfg.eth_block_tag = "finalized";
        cfg.eth_cache_ttl_ms = -1;
        CHECK_OK(kms_auth_new(&cfg, &f));
        CHECK_RC(kms_auth_check(f, 1, &bi, &r), KMS_ERR_AUTH_RESPONSE);
        CHECK_DETAIL("has no code at the finalized block (not yet finalized?");
        CHECK(r.allowed == 0);
        CHECK_OK(kms_eth_rpc(g_rpc[0], &o, "anvil_mine", json_pack("[s]", "0x64"), &res, NULL));
        json_decref(res);
        res = NULL;
        EXPECT(f, 1, &bi, 0, "Aggregated MR not allowed");
        CHECK(cli(out, sizeof(out), g_rpc[0], DEV_KEY, "add-mr " MR_AGG) == 0);
        EXPECT(a, 1, &bi, 1, "");
        EXPECT(f, 1, &bi, 0, "Aggregated MR not allowed");
        CHECK_OK(kms_eth_rpc(g_rpc[0], &o, "anvil_mine", json_pack("[s]", "0x64"), &res, NULL));
        json_decref(res);
        EXPECT(f, 1, &bi, 1, "");
        kms_auth_free(f);
    }
    kms_auth_free(a);
}

/* Two RPCs with different state (second anvil: contracts deployed, nothing registered). */
static void test_quorum_two_chains(void)
{
    const char *both[2] = {g_rpc[0], g_rpc[1]}, *rev[2] = {g_rpc[1], g_rpc[0]};
    char dead[64];
    const char *dead_first[2] = {dead, g_rpc[0]};
    struct kms_boot_info bi;
    struct kms_auth_result r;
    struct kms_auth *a;
    char hp[160];

    bi_fill(&bi);
    /* Move the second chain ahead, so the pinned block (the 2nd highest) is the first
     * chain's head, where the app is registered; the second chain never registered it. */
    {
        /* mining 1024 blocks took over 30 s on a loaded machine: an upper bound only */
        struct kms_eth_rpc_opts o = {180000, 0};
        json_t *res = NULL;

        CHECK_OK(kms_eth_rpc(g_rpc[1], &o, "anvil_mine", json_pack("[s]", "0x400"), &res, NULL));
        json_decref(res);
    }
    a = make(both, 2, "quorum", 2, 31337);
    CHECK_RC(kms_auth_check(a, 0, &bi, &r), KMS_ERR_ETH_QUORUM);
    CHECK_DETAIL("disagree at block");
    snprintf(hp, sizeof(hp), "%s: allowed", g_rpc[0]);
    CHECK_DETAIL(hp);
    snprintf(hp, sizeof(hp), "%s: denied: App not registered", g_rpc[1]);
    CHECK_DETAIL(hp);
    CHECK(r.allowed == 0);
    kms_auth_free(a);
    /* k = 1 of 2: any answer at the pinned block will do */
    a = make(rev, 2, "quorum", 1, 0);
    CHECK_OK(kms_auth_check(a, 0, &bi, &r));
    kms_auth_free(a);
    /* failover past a dead RPC to the live one */
    snprintf(dead, sizeof(dead), "http://127.0.0.1:1");
    a = make(dead_first, 2, "failover", 0, 31337);
    EXPECT(a, 0, &bi, 1, "");
    kms_auth_free(a);
    /* a chain id the RPCs do not serve fails closed */
    a = make(both, 2, "failover", 0, 84532);
    CHECK_RC(kms_auth_check(a, 0, &bi, &r), KMS_ERR_ETH_CHAIN_ID);
    CHECK_DETAIL("serves chain id 31337, but chain id 84532 is configured");
    kms_auth_free(a);
}

int main(int argc, char **argv)
{
    const char *src = getenv("KMS_SOURCE_DIR");
    char cmd[8192];
    ssize_t n;

    if (argc > 1 && strcmp(argv[1], "chain") == 0)
        return kms_cli_chain(argc - 1, argv + 1);
    n = readlink("/proc/self/exe", g_self, sizeof(g_self) - 1);
    if (n <= 0)
        return 1;
    g_self[n] = '\0';
    snprintf(g_src, sizeof(g_src), "%s", src != NULL ? src : KMS_TEST_SOURCE_DIR);
    snprintf(cmd, sizeof(cmd), "sh '%s/tests/chain/setup.sh'", g_src);
    if (run_sh(cmd) != 0) {
        const char *skip = getenv("KMS_ALLOW_SKIP_CHAIN");

        if (skip != NULL && strcmp(skip, "1") == 0) {
            printf("SKIP: chain tools (node/npm, anvil, solcjs) could not be installed by "
                   "tests/chain/setup.sh; KMS_ALLOW_SKIP_CHAIN=1 is set\n");
            return 77;
        }
        fprintf(stderr, "FAIL: tests/chain/setup.sh could not install anvil and solcjs (needs "
                        "node and npm with registry access); set KMS_ALLOW_SKIP_CHAIN=1 to "
                        "skip the chain tests\n");
        return 1;
    }
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/kms-eth-chain-XXXXXX");
    if (mkdtemp(g_tmp) == NULL)
        return 1;
    snprintf(cmd, sizeof(cmd),
             "cd '%s/tests/chain' && ./node_modules/.bin/solcjs --bin --abi --optimize "
             "--base-path contracts -o '%s/out' contracts/DstackKms.sol contracts/DstackApp.sol "
             "contracts/ERC1967Proxy.sol >'%s/solc.log' 2>&1",
             g_src, g_tmp, g_tmp);
    if (run_sh(cmd) != 0) {
        fprintf(stderr, "FAIL: solcjs could not compile tests/chain/contracts (see %s/solc.log)\n",
                g_tmp);
        return 1;
    }
    if (start_anvil(0) < 0 || start_anvil(1) < 0) {
        fprintf(stderr, "FAIL: anvil did not start (see %s/anvil*.log)\n", g_tmp);
        stop_anvils();
        return 1;
    }
    deploy(0);
    deploy(1);
    if (kms_test_failures == 0) {
        RUN(test_app_flow);
        RUN(test_kms_flow);
        RUN(test_quorum_two_chains);
    }
    stop_anvils();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_tmp);
    (void)run_sh(cmd);
    TEST_MAIN_END();
}
