/*
 * BootInfo derivation (kms-reference.md §6): the TDX fixture gives the documented mr_system
 * and mr_aggregated and its app-info events; boot-time MRs stop at boot-mr-done and drop the
 * key provider; the MRCONFIGID append rule; vm_config precedence; GCP formulas; the Nitro
 * fixture's documented BootInfo including the device_id quirk and its corrected form.
 */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/events.h"
#include "common/file.h"
#include "common/hex.h"
#include "test.h"

#define T_VALID ((time_t)1780272000)
#define T_NITRO_PROD ((time_t)1766678659) /* document timestamp of attestation-prod.bin */

static int hex_is(const uint8_t *p, size_t n, const char *want)
{
    char buf[256];

    if (2 * n + 1 > sizeof(buf))
        return 0;
    kms_hex_encode(p, n, buf);
    return strcmp(buf, want) == 0;
}

static void sha256(const void *p, size_t n, uint8_t out[32])
{
    EVP_Digest(p, n, out, NULL, EVP_sha256(), NULL);
}

static int same(const struct kms_bytes *b, const struct kms_bytes *want)
{
    return b->len == want->len && (b->len == 0 || memcmp(b->p, want->p, b->len) == 0);
}

/* Decodes and fully verifies the TDX fixture (pinned to the Intel root). */
static struct kms_attestation *tdx_fixture(struct kms_verified *v)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tdx/attestation-tdx.bin", &len);
    struct kms_attestation *att = NULL;
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    X509 *root = kms_attest_intel_root();

    if (kms_att_decode(p, len, &att) < 0 || kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, root, 0) < 0)
        exit(2);
    kms_attest_ctx_set_time(ctx, T_VALID);
    CHECK_OK(kms_attest_verify(ctx, att, v));
    X509_free(root);
    kms_attest_ctx_free(ctx);
    free(p);
    return att;
}

/* The TDX fixture gives the documented mr_system/mr_aggregated; app_id, compose_hash,
 * instance_id and key_provider_info are the event payloads; device_id = sha256(PPID);
 * the SysConfig-style config has no top-level os_image_hash, so it is empty. */
static void test_tdx_fixture(void)
{
    struct kms_verified v;
    struct kms_attestation *att = tdx_fixture(&v);
    struct kms_boot_info bi;
    uint8_t dev[32];

    CHECK(v.ppid_len == 16);
    CHECK_OK(kms_boot_info_derive(NULL, att, &v, NULL, 0, &bi));
    CHECK(bi.mode == KMS_ATT_TDX);
    CHECK(hex_is(bi.mr_system, 32,
                 "51ea38f8eee6dc72dbae9b74531ae6d6204295d265dabb4e6c34621a2a1a1197"));
    CHECK(hex_is(bi.mr_aggregated, 32,
                 "85334a62c97d0f8bf82d0245d31b539d17a2d7c258e2a13efc928aaea0e107cb"));
    CHECK(bi.app_id.len == 20 && same(&bi.app_id, &att->events[1].payload));
    CHECK(bi.compose_hash.len == 32 && same(&bi.compose_hash, &att->events[2].payload));
    CHECK(bi.instance_id.len == 20 && same(&bi.instance_id, &att->events[3].payload));
    CHECK(same(&bi.key_provider_info, &att->events[6].payload));
    CHECK(bi.key_provider_info.len > 0 &&
          strstr((const char *)bi.key_provider_info.p, "3059301306072a8648ce3d02") != NULL);
    /* mr_config_id is MrConfig V1: 01 || compose_hash */
    CHECK(v.td.mr_config_id[0] == 1 && memcmp(v.td.mr_config_id + 1, bi.compose_hash.p, 32) == 0);
    sha256(v.ppid, v.ppid_len, dev);
    CHECK(memcmp(bi.device_id, dev, 32) == 0);
    CHECK(bi.os_image_hash.len == 0);
    CHECK(strcmp(bi.tcb_status, "") == 0 && bi.n_advisory_ids == 0);
    kms_boot_info_free(&bi);
    kms_verified_free(&v);
    kms_att_free(att);
}

/* Boot-time MRs: RTMR3 replay stops after boot-mr-done and the key provider is dropped. */
static void test_tdx_boottime(void)
{
    static const uint8_t zero32[32];
    struct kms_verified v;
    struct kms_attestation *att = tdx_fixture(&v);
    struct kms_boot_info bi;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    uint8_t rtmr3[48];
    uint8_t want_sys[32];
    uint8_t want_agg[32];

    kms_att_replay(1, att->events, 5, NULL, rtmr3); /* the first five events end at boot-mr-done */
    CHECK(strcmp(att->events[4].event, "boot-mr-done") == 0);
    EVP_DigestInit_ex(m, EVP_sha256(), NULL);
    EVP_DigestUpdate(m, v.td.mr_td, 48);
    EVP_DigestUpdate(m, v.td.rtmr, 3 * 48);
    EVP_DigestUpdate(m, zero32, 32);
    EVP_DigestFinal_ex(m, want_sys, NULL);
    EVP_DigestInit_ex(m, EVP_sha256(), NULL);
    EVP_DigestUpdate(m, v.td.mr_td, 48);
    EVP_DigestUpdate(m, v.td.rtmr, 3 * 48);
    EVP_DigestUpdate(m, rtmr3, 48);
    EVP_DigestUpdate(m, v.td.mr_config_id, 48);
    EVP_DigestUpdate(m, v.td.mr_owner, 48);
    EVP_DigestUpdate(m, v.td.mr_owner_config, 48);
    EVP_DigestFinal_ex(m, want_agg, NULL);
    EVP_MD_CTX_free(m);

    CHECK_OK(kms_boot_info_derive(NULL, att, &v, NULL, 1, &bi));
    CHECK(bi.key_provider_info.len == 0);
    CHECK(memcmp(bi.mr_system, want_sys, 32) == 0);
    CHECK(memcmp(bi.mr_aggregated, want_agg, 32) == 0);
    CHECK(!hex_is(bi.mr_aggregated, 32,
                  "85334a62c97d0f8bf82d0245d31b539d17a2d7c258e2a13efc928aaea0e107cb"));
    kms_boot_info_free(&bi);
    kms_verified_free(&v);
    kms_att_free(att);
}

/* MRCONFIGID || MROWNER || MROWNERCONFIG are appended only when one of them is non-zero. */
static void test_tdx_config_id_rule(void)
{
    struct kms_verified v;
    struct kms_attestation *att = tdx_fixture(&v);
    struct kms_boot_info bi;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    uint8_t rtmr3[48];
    uint8_t want[32];
    uint8_t with_owner[32];

    memset(v.td.mr_config_id, 0, 48);
    kms_att_replay(1, att->events, att->n_events, NULL, rtmr3);
    EVP_DigestInit_ex(m, EVP_sha256(), NULL);
    EVP_DigestUpdate(m, v.td.mr_td, 48);
    EVP_DigestUpdate(m, v.td.rtmr, 3 * 48);
    EVP_DigestUpdate(m, rtmr3, 48);
    EVP_DigestFinal_ex(m, want, NULL);
    EVP_MD_CTX_free(m);
    CHECK_OK(kms_boot_info_derive(NULL, att, &v, NULL, 0, &bi));
    CHECK(memcmp(bi.mr_aggregated, want, 32) == 0);
    kms_boot_info_free(&bi);
    v.td.mr_owner_config[47] = 1; /* any one of the three re-enables the append */
    CHECK_OK(kms_boot_info_derive(NULL, att, &v, NULL, 0, &bi));
    memcpy(with_owner, bi.mr_aggregated, 32);
    CHECK(memcmp(with_owner, want, 32) != 0);
    kms_boot_info_free(&bi);
    kms_verified_free(&v);
    kms_att_free(att);
}

/* os_image_hash comes from the request's vm_config, else att->config, else "{}"; malformed
 * configs are format errors; a verified result of another mode is refused. */
static void test_vm_config(void)
{
    struct kms_verified v;
    struct kms_attestation *att = tdx_fixture(&v);
    struct kms_boot_info bi;

    CHECK_OK(kms_boot_info_derive(NULL, att, &v, "{\"os_image_hash\":\"abcd\",\"x\":1}", 0, &bi));
    CHECK(bi.os_image_hash.len == 2 && bi.os_image_hash.p[0] == 0xab);
    kms_boot_info_free(&bi);
    free(att->config);
    att->config = strdup("{\"os_image_hash\":\"0102\"}");
    CHECK_OK(kms_boot_info_derive(NULL, att, &v, "", 0, &bi));
    CHECK(bi.os_image_hash.len == 2 && bi.os_image_hash.p[1] == 0x02);
    kms_boot_info_free(&bi);
    att->config[0] = '\0';
    CHECK_OK(kms_boot_info_derive(NULL, att, &v, NULL, 0, &bi));
    CHECK(bi.os_image_hash.len == 0);
    kms_boot_info_free(&bi);
    CHECK_RC(kms_boot_info_derive(NULL, att, &v, "not json", 0, &bi), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("vm_config");
    CHECK_RC(kms_boot_info_derive(NULL, att, &v, "{\"os_image_hash\":\"zz\"}", 0, &bi),
             KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("os_image_hash");
    CHECK_RC(kms_boot_info_derive(NULL, att, &v, "{\"os_image_hash\":7}", 0, &bi),
             KMS_ERR_ATT_FORMAT);
    v.mode = KMS_ATT_NITRO;
    CHECK_RC(kms_boot_info_derive(NULL, att, &v, NULL, 0, &bi), KMS_ERR_INVAL);
    kms_verified_free(&v);
    kms_att_free(att);
}

/* GCP: mr_system = sha256(os_image_hash || mr_key_provider), mr_aggregated =
 * sha256(PCR0 || PCR2 || SHA-256 replay); device_id from the PPID; tcb/advisories copied. */
static void test_gcp_formulas(void)
{
    struct kms_attestation *att = calloc(1, sizeof(*att));
    struct kms_verified v;
    struct kms_boot_info bi;
    uint8_t kp_hash[32];
    uint8_t pcr14[32];
    uint8_t want[32];
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    static const char kp[] = "{\"name\":\"kms\",\"id\":\"00\"}";
    static const uint8_t img[2] = {0x12, 0x34};

    memset(&v, 0, sizeof(v));
    att->mode = KMS_ATT_GCP_TDX;
    att->config = strdup("{\"os_image_hash\":\"1234\"}");
    CHECK_OK(kms_att_add_runtime_event(att, "app-id", (const uint8_t *)"AAAAAAAAAAAAAAAAAAAA", 20));
    CHECK_OK(kms_att_add_runtime_event(att, "compose-hash", (const uint8_t *)"C", 1));
    CHECK_OK(kms_att_add_runtime_event(att, "boot-mr-done", NULL, 0));
    CHECK_OK(kms_att_add_runtime_event(att, "key-provider", (const uint8_t *)kp, strlen(kp)));
    v.mode = KMS_ATT_GCP_TDX;
    memset(v.pcr[0], 0xa0, 32);
    memset(v.pcr[1], 0xa2, 32);
    memset(v.ppid, 0x5a, 16);
    v.ppid_len = 16;
    snprintf(v.tcb_status, sizeof(v.tcb_status), "UpToDate");
    v.advisory_ids = calloc(1, sizeof(char *));
    v.advisory_ids[0] = strdup("INTEL-SA-00001");
    v.n_advisory_ids = 1;

    CHECK_OK(kms_boot_info_derive(NULL, att, &v, NULL, 0, &bi));
    sha256(kp, strlen(kp), kp_hash);
    EVP_DigestInit_ex(m, EVP_sha256(), NULL);
    EVP_DigestUpdate(m, img, 2);
    EVP_DigestUpdate(m, kp_hash, 32);
    EVP_DigestFinal_ex(m, want, NULL);
    CHECK(memcmp(bi.mr_system, want, 32) == 0);
    kms_att_replay(0, att->events, att->n_events, NULL, pcr14);
    EVP_DigestInit_ex(m, EVP_sha256(), NULL);
    EVP_DigestUpdate(m, v.pcr[0], 32);
    EVP_DigestUpdate(m, v.pcr[1], 32);
    EVP_DigestUpdate(m, pcr14, 32);
    EVP_DigestFinal_ex(m, want, NULL);
    CHECK(memcmp(bi.mr_aggregated, want, 32) == 0);
    CHECK(bi.compose_hash.len == 1 && bi.compose_hash.p[0] == 'C');
    CHECK(bi.instance_id.len == 0);
    sha256(v.ppid, 16, want);
    CHECK(memcmp(bi.device_id, want, 32) == 0);
    CHECK(strcmp(bi.tcb_status, "UpToDate") == 0);
    CHECK(bi.n_advisory_ids == 1 && strcmp(bi.advisory_ids[0], "INTEL-SA-00001") == 0);
    kms_boot_info_free(&bi);

    /* boot-time: replay to boot-mr-done, mr_key_provider = zeros */
    CHECK_OK(kms_boot_info_derive(NULL, att, &v, NULL, 1, &bi));
    kms_att_replay(0, att->events, 3, NULL, pcr14);
    EVP_DigestInit_ex(m, EVP_sha256(), NULL);
    EVP_DigestUpdate(m, v.pcr[0], 32);
    EVP_DigestUpdate(m, v.pcr[1], 32);
    EVP_DigestUpdate(m, pcr14, 32);
    EVP_DigestFinal_ex(m, want, NULL);
    CHECK(memcmp(bi.mr_aggregated, want, 32) == 0);
    CHECK(bi.key_provider_info.len == 0);
    kms_boot_info_free(&bi);

    /* no PPID: device_id = sha256("") */
    v.ppid_len = 0;
    CHECK_OK(kms_boot_info_derive(NULL, att, &v, NULL, 0, &bi));
    CHECK(hex_is(bi.device_id, 32,
                 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    kms_boot_info_free(&bi);
    EVP_MD_CTX_free(m);
    kms_verified_free(&v);
    kms_att_free(att);
}

static void nitro_prod_verified(struct kms_verified *v)
{
    memset(v, 0, sizeof(*v));
    v->mode = KMS_ATT_NITRO;
    if (kms_hex_decode_exact("eb7d0dab08ff41546d7e5659aee883af7b32bb2e58e46815b719f9f7bfae7b880188"
                             "a10d86317e6509923740526cf74a",
                             v->pcr[0], 48) < 0 ||
        kms_hex_decode_exact("0343b056cd8485ca7890ddd833476d78460aed2aa161548e4e26bedf32172669625"
                             "7d623e8805f3f605946b3d8b0c6aa",
                             v->pcr[1], 48) < 0 ||
        kms_hex_decode_exact("d7b0a76788c1be24898bd148117ea1239578ba0e72f5d87a33a6c6476026675b6f9"
                             "96940f062e0e3f0b5edd2ddf78811",
                             v->pcr[2], 48) < 0)
        exit(2);
    snprintf(v->module_id, sizeof(v->module_id), "i-0827e799ec9232d44-enc019b5640fdf630d6");
}

static void check_nitro_prod(const struct kms_attestation *att, const struct kms_verified *v)
{
    static const char img[] = "1894b0b29e94a9db16e88a2914f0923e52bb16c08bf3bb484df786a147e2eb79";
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    struct kms_boot_info bi;
    uint8_t want[32];

    CHECK_OK(kms_boot_info_derive(ctx, att, v, NULL, 0, &bi));
    CHECK(hex_is(bi.mr_system, 32, img));
    CHECK(hex_is(bi.mr_aggregated, 32, img));
    CHECK(hex_is(bi.os_image_hash.p, bi.os_image_hash.len, img));
    CHECK(hex_is(bi.compose_hash.p, bi.compose_hash.len, img));
    CHECK(hex_is(bi.app_id.p, bi.app_id.len, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4"));
    CHECK(bi.instance_id.len == 0 && bi.key_provider_info.len == 0);
    /* the reference quirk: module_id before the first '-' is always "i" */
    CHECK(hex_is(bi.device_id, 32,
                 "de7d1b721a1e0632b7cf04edf5032c8ecffa9f9a08492152b926f1a5a7e765d7"));
    CHECK(strcmp(bi.tcb_status, "") == 0 && bi.n_advisory_ids == 0);
    kms_boot_info_free(&bi);

    /* corrected: the EC2 instance id "i-<instance>" */
    kms_attest_ctx_set_nitro_device_id_fixed(ctx, 1);
    CHECK_OK(kms_boot_info_derive(ctx, att, v, NULL, 0, &bi));
    sha256("i-0827e799ec9232d44", 19, want);
    CHECK(memcmp(bi.device_id, want, 32) == 0);
    CHECK(bi.device_id[0] == 0x26 && bi.device_id[1] == 0xdd); /* 26dd8ae9… per the spec */
    kms_boot_info_free(&bi);
    kms_attest_ctx_free(ctx);
}

/* Nitro prod fixture with a kms_verified filled from the documented PCRs. */
static void test_nitro_fixture(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("nitro/attestation-prod.bin", &len);
    struct kms_attestation *att = NULL;
    struct kms_verified v;

    CHECK_OK(kms_att_decode(p, len, &att));
    if (att != NULL) {
        nitro_prod_verified(&v);
        check_nitro_prod(att, &v);
    }
    kms_att_free(att);
    free(p);
}

/* The same BootInfo from the real Nitro verifier at the document time (end to end). */
static void test_nitro_fixture_verified(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("nitro/attestation-prod.bin", &len);
    struct kms_attestation *att = NULL;
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    struct kms_verified v;

    CHECK_OK(kms_att_decode(p, len, &att));
    CHECK_OK(kms_attest_ctx_add_root_file(
        ctx, KMS_ROOT_NITRO, kms_test_fixture("roots/aws-nitro-enclaves-root-g1.pem"), 0));
    kms_attest_ctx_set_time(ctx, T_NITRO_PROD);
    if (att != NULL) {
        CHECK_OK(kms_attest_verify(ctx, att, &v));
        CHECK(v.mode == KMS_ATT_NITRO);
        check_nitro_prod(att, &v);
        kms_verified_free(&v);
    }
    kms_attest_ctx_free(ctx);
    kms_att_free(att);
    free(p);
}

int main(void)
{
    RUN(test_tdx_fixture);
    RUN(test_tdx_boottime);
    RUN(test_tdx_config_id_rule);
    RUN(test_vm_config);
    RUN(test_gcp_formulas);
    RUN(test_nitro_fixture);
    RUN(test_nitro_fixture_verified);
    TEST_MAIN_END();
}
