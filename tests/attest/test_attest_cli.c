/*
 * `kmsctl attest verify` on every fixture, run as the binary: the TDX attestation verifies to
 * the Intel root at a time its PCK chain is valid (no collateral: tcb_status empty) and prints
 * the README's mr_aggregated / mr_system; the raw v4 quote verifies; both Nitro attestations
 * verify at their timestamps with the README's PCRs and BootInfo; a bare COSE document is
 * detected and verified; one hour after the leaf expires, a flipped COSE signature byte, an
 * unknown format, and simulated evidence without the simulation roots each exit non-zero with
 * the precise error; simulated GCP evidence verifies with --sim-dir --insecure-sim.
 */
#include <sys/wait.h>
#include <unistd.h>

#include "attest/attest.h"
#include "common/file.h"
#include "test.h"

#define TDX_VALID 1780272000L
#define PROD_TS 1766678659L
#define DEBUG_TS 1766650846L
#define PROD_LEAF_END 1766689459L /* 2025-12-25 19:04:19 UTC */

static char g_tmp[256];
static char g_out[65536];

/* Runs kmsctl with args (shell-quoted by the caller); stdout+stderr into g_out; exit status. */
static int kmsctl(const char *args)
{
    char cmd[4096];
    FILE *f;
    size_t n;
    int st;

    snprintf(cmd, sizeof(cmd), "%s/cli/kmsctl %s 2>&1", getenv("KMS_BIN_DIR"), args);
    f = popen(cmd, "r");
    if (f == NULL)
        return -1;
    n = fread(g_out, 1, sizeof(g_out) - 1, f);
    g_out[n] = '\0';
    st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define HAS(s) CHECK(strstr(g_out, (s)) != NULL)

static void test_tdx_fixture(void)
{
    char a[1024];

    snprintf(a, sizeof(a), "attest verify --evidence %s --time %ld --json",
             kms_test_fixture("tdx/attestation-tdx.bin"), TDX_VALID);
    CHECK(kmsctl(a) == 0);
    HAS("\"verified\": true");
    HAS("\"mode\": \"dstack-tdx\"");
    HAS("\"mr_td\": \"e53236d44a074bc78e784cdfa1a2c858a5f6b53afc1b60d8f079662314978b64");
    HAS("\"mr_aggregated\": \"85334a62c97d0f8bf82d0245d31b539d17a2d7c258e2a13efc928aaea0e107cb\"");
    HAS("\"mr_system\": \"51ea38f8eee6dc72dbae9b74531ae6d6204295d265dabb4e6c34621a2a1a1197\"");
    HAS("\"tcb_status\": \"\"");
    HAS("\"ppid\": \"");
    /* text output carries the same */
    snprintf(a, sizeof(a), "attest verify --evidence %s --time %ld",
             kms_test_fixture("tdx/attestation-tdx.bin"), TDX_VALID);
    CHECK(kmsctl(a) == 0);
    HAS("verified: yes");
    HAS("mr_aggregated: 85334a62c97d0f8bf82d0245d31b539d17a2d7c258e2a13efc928aaea0e107cb");
    /* raw quote */
    snprintf(a, sizeof(a), "attest verify --evidence %s --time %ld",
             kms_test_fixture("tdx/quote-v4.bin"), TDX_VALID);
    CHECK(kmsctl(a) == 0);
    HAS("evidence: raw TDX quote");
    HAS("carries no event log");
}

static void test_nitro_fixtures(void)
{
    char a[1024];

    snprintf(a, sizeof(a), "attest verify --evidence %s --time %ld --json",
             kms_test_fixture("nitro/attestation-prod.bin"), PROD_TS);
    CHECK(kmsctl(a) == 0);
    HAS("\"mode\": \"dstack-nitro-enclave\"");
    HAS("\"module_id\": \"i-0827e799ec9232d44-enc019b5640fdf630d6\"");
    HAS("\"pcr0\": \"eb7d0dab08ff41546d7e5659aee883af7b32bb2e58e46815b719f9f7bfae7b880188a10d86317e"
        "6509923740526cf74a\"");
    HAS("\"pcr1\": \"0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf321726696257d623e8805f"
        "3f605946b3d8b0c6aa\"");
    HAS("\"pcr2\": \"d7b0a76788c1be24898bd148117ea1239578ba0e72f5d87a33a6c6476026675b6f996940f062e0"
        "e3f0b5edd2ddf78811\"");
    HAS("\"app_id\": \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4\"");
    HAS("\"compose_hash\": \"1894b0b29e94a9db16e88a2914f0923e52bb16c08bf3bb484df786a147e2eb79\"");
    HAS("\"os_image_hash\": \"1894b0b29e94a9db16e88a2914f0923e52bb16c08bf3bb484df786a147e2eb79\"");
    HAS("\"mr_system\": \"1894b0b29e94a9db16e88a2914f0923e52bb16c08bf3bb484df786a147e2eb79\"");
    HAS("\"mr_aggregated\": \"1894b0b29e94a9db16e88a2914f0923e52bb16c08bf3bb484df786a147e2eb79\"");
    HAS("\"device_id\": \"de7d1b721a1e0632b7cf04edf5032c8ecffa9f9a08492152b926f1a5a7e765d7\"");
    HAS("\"instance_id\": \"\"");
    HAS("\"key_provider_info\": \"\"");
    /* corrected device_id on request: sha256("i-0827e799ec9232d44") */
    snprintf(a, sizeof(a), "attest verify --evidence %s --time %ld --json --nitro-device-id fixed",
             kms_test_fixture("nitro/attestation-prod.bin"), PROD_TS);
    CHECK(kmsctl(a) == 0);
    HAS("\"device_id\": \"26dd8ae9");

    snprintf(a, sizeof(a), "attest verify --evidence %s --time %ld --json",
             kms_test_fixture("nitro/attestation-debug.bin"), DEBUG_TS);
    CHECK(kmsctl(a) == 0);
    HAS("\"module_id\": \"i-0fd3fdaad4e904e69-enc019b54988b2d89ba\"");
    HAS("\"pcr0\": \"000000000000");
    HAS("\"mr_system\": \"81c611f35bff79491538b2f7cf201c7597a661a5c549633541c62bdc8af1613f\"");
    HAS("\"os_image_hash\": \"81c611f3");
}

/* One hour after the leaf's notAfter: the chain check fails with the expiry error. */
static void test_nitro_expired(void)
{
    char a[1024];

    snprintf(a, sizeof(a), "attest verify --evidence %s --time %ld",
             kms_test_fixture("nitro/attestation-prod.bin"), PROD_LEAF_END + 3600);
    CHECK(kmsctl(a) == 1);
    HAS("Nitro certificate chain: certificate at depth 0 is not valid at the verification time "
        "(certificate has expired)");
    HAS("(error -109)");
    CHECK(strstr(g_out, "verified: yes") == NULL);
    /* JSON mode reports the failure too */
    snprintf(a, sizeof(a), "attest verify --evidence %s --time %ld --json",
             kms_test_fixture("nitro/attestation-prod.bin"), PROD_LEAF_END + 3600);
    CHECK(kmsctl(a) == 1);
    HAS("\"verified\": false");
    HAS("\"code\": -109");
}

/* A flipped COSE signature byte (the last byte of the COSE_Sign1 inside the SCALE file), and
 * the bare COSE document cut out of the SCALE file (detected and verified). */
static void test_nitro_flip_and_bare(void)
{
    uint8_t *b = NULL;
    size_t n = 0;
    size_t cose_len;
    char path[512], a[1024];

    CHECK_OK(kms_file_read(kms_test_fixture("nitro/attestation-prod.bin"), 1u << 20, &b, &n));
    if (b == NULL || n <= 8 || b[0] != 0 || b[1] != 2 || (b[2] & 3) != 1) {
        CHECK(!"attestation-prod.bin is a SCALE Nitro attestation with a 2-byte compact length");
        free(b);
        return;
    }
    cose_len = (size_t)(b[2] | (b[3] << 8)) >> 2; /* SCALE compact, 2-byte form */
    CHECK(4 + cose_len < n);
    snprintf(path, sizeof(path), "%s/bare.cose", g_tmp);
    CHECK_OK(kms_file_write_atomic(path, b + 4, cose_len, 0600));
    snprintf(a, sizeof(a), "attest verify --evidence %s --time %ld", path, PROD_TS);
    CHECK(kmsctl(a) == 0);
    HAS("evidence: Nitro COSE_Sign1 document");
    HAS("module_id: i-0827e799ec9232d44-enc019b5640fdf630d6");

    b[4 + cose_len - 1] ^= 1;
    snprintf(path, sizeof(path), "%s/flipped.bin", g_tmp);
    CHECK_OK(kms_file_write_atomic(path, b, n, 0600));
    snprintf(a, sizeof(a), "attest verify --evidence %s --time %ld", path, PROD_TS);
    CHECK(kmsctl(a) == 1);
    HAS("(error -112)");
    HAS("signature");
    free(b);
}

/* Flipped byte in the TDX quote (mr_td) and garbage input. */
static void test_tdx_flip_and_garbage(void)
{
    uint8_t *b = NULL;
    size_t n = 0;
    char path[512], a[1024];

    CHECK_OK(kms_file_read(kms_test_fixture("tdx/quote-v4.bin"), 1u << 20, &b, &n));
    if (b == NULL || n < 1024) {
        CHECK(!"quote-v4.bin is readable");
        free(b);
        return;
    }
    b[184 + 3] ^= 1;
    snprintf(path, sizeof(path), "%s/quote-flipped.bin", g_tmp);
    CHECK_OK(kms_file_write_atomic(path, b, n, 0600));
    snprintf(a, sizeof(a), "attest verify --evidence %s --time %ld", path, TDX_VALID);
    CHECK(kmsctl(a) == 1);
    HAS("(error -102)");
    HAS("TDX quote signature does not verify");
    free(b);
    snprintf(path, sizeof(path), "%s/garbage.bin", g_tmp);
    CHECK_OK(kms_file_write_atomic(path, "hello", 5, 0600));
    snprintf(a, sizeof(a), "attest verify --evidence %s", path);
    CHECK(kmsctl(a) == 1);
    HAS("(error -101)");
    CHECK(kmsctl("attest verify") == 2);
    snprintf(a, sizeof(a), "attest verify --evidence %s --sim-dir %s", path, g_tmp);
    CHECK(kmsctl(a) == 2);
    HAS("go together");
}

/* Simulated GCP evidence: refused without the simulation roots (AK / PCK chain), verified with
 * --sim-dir --insecure-sim, showing the TPM PCRs and the simulation flag. */
static void test_sim_gcp_cli(void)
{
    struct kms_platform_cfg cfg;
    struct kms_platform *p = NULL;
    struct kms_attestation *att = NULL;
    uint8_t rd[64] = {1};
    uint8_t *b = NULL;
    size_t n = 0;
    char sim[400], path[512], a[1024];

    snprintf(sim, sizeof(sim), "%s/sim", g_tmp);
    memset(&cfg, 0, sizeof(cfg));
    cfg.kind = KMS_PLATFORM_SIM_GCP;
    cfg.sim_dir = sim;
    CHECK_OK(kms_platform_open(&cfg, &p));
    CHECK_OK(kms_platform_attest(p, rd, NULL, 0, NULL, &att));
    CHECK_OK(kms_att_encode(att, 0, &b, &n));
    snprintf(path, sizeof(path), "%s/gcp.bin", g_tmp);
    CHECK_OK(kms_file_write_atomic(path, b, n, 0600));
    snprintf(a, sizeof(a), "attest verify --evidence %s", path);
    CHECK(kmsctl(a) == 1);
    HAS("(error -105)");
    snprintf(a, sizeof(a), "attest verify --evidence %s --sim-dir %s --insecure-sim", path, sim);
    CHECK(kmsctl(a) == 0);
    HAS("mode: dstack-gcp-tdx");
    HAS("sim: yes");
    HAS("tpm_pcr14: ");
    HAS("attestation_mode: dstack-gcp-tdx");
    free(b);
    kms_att_free(att);
    kms_platform_free(p);
}

/* --collateral-file: the real dcap-qvl sample quote with its collateral, at a time inside it,
 * reports tcb_status UpToDate in the JSON form of kmsd's collateral; without collateral the
 * status stays ""; --pccs-url and the PCCS_URL environment variable are used (a closed loopback
 * port: the fetch fails and says so), and the file is used before the PCCS. */
static void test_tdx_collateral_cli(void)
{
    char *quote = strdup(kms_test_fixture("tdx/dcap-qvl-quote-v4.bin"));
    char *coll = strdup(kms_test_fixture("tdx/dcap-qvl-collateral-v4.json"));
    char a[2048];

    snprintf(a, sizeof(a), "attest verify --evidence %s --time 1750334400 --json", quote);
    CHECK(kmsctl(a) == 0);
    HAS("\"tcb_status\": \"\"");
    snprintf(a, sizeof(a),
             "attest verify --evidence %s --time 1750334400 --json --collateral-file %s", quote,
             coll);
    CHECK(kmsctl(a) == 0);
    HAS("\"verified\": true");
    HAS("\"tcb_status\": \"UpToDate\"");
    HAS("\"advisory_ids\": []");
    HAS("\"td_attributes\": \"0000001000000000\"");
    /* after the collateral's nextUpdate (2025-07-19) */
    snprintf(a, sizeof(a),
             "attest verify --evidence %s --time 1760000000 --json --collateral-file %s", quote,
             coll);
    CHECK(kmsctl(a) == 1);
    HAS("\"verified\": false");
    snprintf(a, sizeof(a), "attest verify --evidence %s --time 1750334400 --pccs-url %s", quote,
             "http://127.0.0.1:1");
    CHECK(kmsctl(a) == 1);
    HAS("127.0.0.1:1");
    snprintf(a, sizeof(a), "attest verify --evidence %s --time 1750334400", quote);
    setenv("PCCS_URL", "http://127.0.0.1:1", 1);
    CHECK(kmsctl(a) == 1);
    HAS("127.0.0.1:1");
    snprintf(a, sizeof(a),
             "attest verify --evidence %s --time 1750334400 --json --collateral-file %s", quote,
             coll);
    CHECK(kmsctl(a) == 0);
    HAS("\"tcb_status\": \"UpToDate\"");
    unsetenv("PCCS_URL");
    CHECK(kmsctl("attest verify --help") == 0);
    HAS("--collateral-file FILE");
    HAS("PCCS_URL");
    free(quote);
    free(coll);
}

int main(void)
{
    const char *t = getenv("TMPDIR");

    if (getenv("KMS_BIN_DIR") == NULL) {
        fprintf(stderr, "KMS_BIN_DIR is not set (run through ctest)\n");
        return 1;
    }
    snprintf(g_tmp, sizeof(g_tmp), "%s/kms-attest-cli-XXXXXX", t != NULL ? t : "/tmp");
    if (mkdtemp(g_tmp) == NULL)
        return 1;
    RUN(test_tdx_fixture);
    RUN(test_nitro_fixtures);
    RUN(test_nitro_expired);
    RUN(test_nitro_flip_and_bare);
    RUN(test_tdx_flip_and_garbage);
    RUN(test_sim_gcp_cli);
    RUN(test_tdx_collateral_cli);
    TEST_MAIN_END();
}
