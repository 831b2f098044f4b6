/*
 * The NSM client (attest/nsm.c) and the `nitro` evidence producer (attest/platform.c).
 *
 * The request bytes are compared with the serde_cbor encoding the reference client sends
 * (aws-nitro-enclaves-nsm-api Request::Attestation, as nsm_attest::get_attestation fills it:
 * user_data = report_data, nonce and public_key None), written out by hand here. The device
 * path runs through a real open() and ioctl(NSM_IOCTL_RAW): tests/support/nsm_preload.c is
 * linked into this test and interposes ioctl() for the fake device file only (no CUSE on this
 * machine; see that file), forwarding to the fake NSM of kmstest_nitro.c, which answers with
 * documents signed under the simulation Nitro root. The producer's attestation must then pass
 * the production verifier with that root.
 */
#include <openssl/sha.h>
#include <stdlib.h>
#include <unistd.h>

#include "attest/attest.h"
#include "attest/nsm.h"
#include "common/hex.h"
#include "kmstest_nitro.h"
#include "test.h"

static char g_dir[64];

static void test_encode(void)
{
    uint8_t rd[64], out[0x1000], big[513];
    size_t len = 0, off = 0;
    uint8_t want[0x100];
    struct kms_nsm_att_req req;

    for (int i = 0; i < 64; i++)
        rd[i] = (uint8_t)i;
    /* {"Attestation": {"user_data": h'00..3f', "nonce": null, "public_key": null}} */
    want[off++] = 0xa1;
    want[off++] = 0x6b;
    memcpy(want + off, "Attestation", 11);
    off += 11;
    want[off++] = 0xa3;
    want[off++] = 0x69;
    memcpy(want + off, "user_data", 9);
    off += 9;
    want[off++] = 0x58;
    want[off++] = 0x40;
    memcpy(want + off, rd, 64);
    off += 64;
    want[off++] = 0x65;
    memcpy(want + off, "nonce", 5);
    off += 5;
    want[off++] = 0xf6;
    want[off++] = 0x6a;
    memcpy(want + off, "public_key", 10);
    off += 10;
    want[off++] = 0xf6;
    memset(&req, 0, sizeof(req));
    req.user_data = rd;
    req.user_data_len = 64;
    CHECK_OK(kms_nsm_encode_attestation(&req, out, sizeof(out), &len));
    CHECK(len == off);
    CHECK_MEM(out, want, off);
    /* AWS limits and the caller's buffer */
    memset(big, 1, sizeof(big));
    req.user_data = big;
    req.user_data_len = sizeof(big);
    CHECK_RC(kms_nsm_encode_attestation(&req, out, sizeof(out), &len), KMS_ERR_TOOBIG);
    CHECK_DETAIL("user_data of 513 bytes");
    req.user_data = rd;
    req.user_data_len = 64;
    CHECK_RC(kms_nsm_encode_attestation(&req, out, 40, &len), KMS_ERR_TOOBIG);
}

static void test_decode(void)
{
    static const uint8_t ok[] = {0xa1, 0x6b, 'A', 't', 't',  'e',  's', 't', 'a',
                                 't',  'i',  'o', 'n', 0xa1, 0x68, 'd', 'o', 'c',
                                 'u',  'm',  'e', 'n', 't',  0x43, 1,   2,   3};
    static const uint8_t err[] = {0xa1, 0x65, 'E', 'r', 'r', 'o', 'r', 0x6f, 'I', 'n', 'v', 'a',
                                  'l',  'i',  'd', 'A', 'r', 'g', 'u', 'm',  'e', 'n', 't'};
    static const uint8_t other[] = {0xa1, 0x69, 'G', 'e', 't', 'R', 'a', 'n', 'd', 'o', 'm', 0xf6};
    uint8_t buf[64];
    const uint8_t *d = NULL;
    size_t n = 0;

    CHECK_OK(kms_nsm_decode_attestation(ok, sizeof(ok), &d, &n));
    CHECK(n == 3 && d == ok + sizeof(ok) - 3);
    CHECK_RC(kms_nsm_decode_attestation(err, sizeof(err), &d, &n), KMS_ERR_IO);
    CHECK_DETAIL("refused the attestation request: InvalidArgument");
    CHECK(d == NULL && n == 0);
    CHECK_RC(kms_nsm_decode_attestation(other, sizeof(other), &d, &n), KMS_ERR_PARSE);
    CHECK_DETAIL("answered GetRandom");
    /* every truncation is refused */
    for (size_t i = 0; i < sizeof(ok); i++)
        CHECK_RC(kms_nsm_decode_attestation(ok, i, &d, &n), KMS_ERR_PARSE);
    /* trailing bytes, a document length past the end, an empty document */
    memcpy(buf, ok, sizeof(ok));
    buf[sizeof(ok)] = 0;
    CHECK_RC(kms_nsm_decode_attestation(buf, sizeof(ok) + 1, &d, &n), KMS_ERR_PARSE);
    CHECK_DETAIL("trailing");
    memcpy(buf, ok, sizeof(ok));
    buf[sizeof(ok) - 4] = 0x5a; /* 4-byte length follows: 0x01020300... */
    CHECK_RC(kms_nsm_decode_attestation(buf, sizeof(ok), &d, &n), KMS_ERR_PARSE);
    buf[sizeof(ok) - 4] = 0x40;
    CHECK_RC(kms_nsm_decode_attestation(buf, sizeof(ok) - 3, &d, &n), KMS_ERR_PARSE);
    CHECK_DETAIL("empty attestation document");
}

static void test_device_errors(void)
{
    struct kms_nsm_att_req req;
    uint8_t rd[64] = {0}, *doc = NULL;
    size_t n = 0;
    char plain[128];
    FILE *f;

    memset(&req, 0, sizeof(req));
    req.user_data = rd;
    req.user_data_len = 64;
    snprintf(plain, sizeof(plain), "%s/missing", g_dir);
    CHECK_RC(kms_nsm_get_attestation(plain, &req, &doc, &n), KMS_ERR_NOTFOUND);
    CHECK_DETAIL("not inside a Nitro Enclave");
    /* a file that is not an NSM: the ioctl reaches the kernel and fails with ENOTTY */
    snprintf(plain, sizeof(plain), "%s/plain", g_dir);
    f = fopen(plain, "w");
    CHECK(f != NULL);
    if (f != NULL)
        fclose(f);
    CHECK_RC(kms_nsm_get_attestation(plain, &req, &doc, &n), KMS_ERR_IO);
    CHECK_DETAIL("is not a Nitro Security Module");
    CHECK(doc == NULL);
}

static void default_pcrs(uint8_t pcrs[3][48])
{
    for (int i = 0; i < 3; i++)
        memset(pcrs[i], 0x10 + i, 48);
}

static void app_event(struct kms_runtime_event ev[2], uint8_t app_id[20])
{
    memset(ev, 0, 2 * sizeof(*ev));
    memset(app_id, 0xa7, 20);
    ev[0].event = (char *)"system-preparing";
    ev[1].event = (char *)"app-id";
    ev[1].payload.p = app_id;
    ev[1].payload.len = 20;
}

/* The producer through the fake NSM: the request is the reference's, the attestation verifies. */
static void test_producer(void)
{
    struct kmstest_nsm nsm;
    struct kms_platform_paths paths;
    struct kms_platform_cfg cfg;
    struct kms_platform *p = NULL;
    struct kms_attestation *att = NULL;
    struct kms_attest_ctx *ctx = NULL;
    struct kms_verified v;
    struct kms_runtime_event ev[2];
    uint8_t pcrs[3][48], rd[64], app_id[20], h[32];
    char sim[128], want[128], hex[65];

    memset(&v, 0, sizeof(v));
    snprintf(sim, sizeof(sim), "%s/sim", g_dir);
    CHECK_OK(kms_platform_sim_init(sim));
    default_pcrs(pcrs);
    CHECK(kmstest_nsm_start(&nsm, g_dir, sim, (const uint8_t(*)[48])pcrs) == 0);
    setenv("KMS_FAKE_NSM", nsm.dev, 1);
    kms_platform_paths_default(&paths);
    paths.nsm_dev = nsm.dev;
    memset(&cfg, 0, sizeof(cfg));
    cfg.kind = KMS_PLATFORM_NITRO;
    cfg.paths = &paths;
    CHECK_OK(kms_platform_open(&cfg, &p));
    for (int i = 0; i < 64; i++)
        rd[i] = (uint8_t)(0xc0 ^ i);
    app_event(ev, app_id);
    if (p != NULL)
        CHECK_OK(kms_platform_attest(p, rd, ev, 2, NULL, &att));
    /* what the NSM was asked */
    CHECK(nsm.n_requests == 1 && nsm.last_ok_shape);
    CHECK(nsm.last_user_data_len == 64 && memcmp(nsm.last_user_data, rd, 64) == 0);
    CHECK(nsm.last_nonce_null && nsm.last_public_key_null);
    CHECK(att != NULL);
    if (att != NULL) {
        CHECK(att->mode == KMS_ATT_NITRO);
        CHECK_MEM(att->report_data, rd, 64);
        SHA256(&pcrs[0][0], sizeof(pcrs), h);
        kms_hex_encode(h, 32, hex);
        snprintf(want, sizeof(want), "{\"os_image_hash\":\"%s\"}", hex);
        CHECK(att->config != NULL && strcmp(att->config, want) == 0);
        /* only app-id travels, as the reference's non-composable Nitro mode */
        CHECK(att->n_events == 1 && strcmp(att->events[0].event, "app-id") == 0 &&
              att->events[0].payload.len == 20 &&
              memcmp(att->events[0].payload.p, app_id, 20) == 0);
        ctx = kms_attest_ctx_new();
        CHECK(ctx != NULL);
        if (ctx != NULL) {
            CHECK_OK(kms_platform_add_sim_roots(sim, ctx));
            CHECK_OK(kms_attest_verify(ctx, att, &v));
            CHECK(v.mode == KMS_ATT_NITRO && v.sim);
            CHECK_MEM(v.pcr[0], pcrs[0], 48);
        }
    }
    kms_verified_free(&v);
    kms_attest_ctx_free(ctx);
    kms_att_free(att);
    att = NULL;

    /* debug enclaves have zero PCRs: os_image_hash is then zero, as the reference */
    memset(nsm.pcrs, 0, sizeof(nsm.pcrs));
    if (p != NULL)
        CHECK_OK(kms_platform_attest(p, rd, ev, 2, NULL, &att));
    memset(hex, '0', 64);
    hex[64] = '\0';
    snprintf(want, sizeof(want), "{\"os_image_hash\":\"%s\"}", hex);
    CHECK(att != NULL && att->config != NULL && strcmp(att->config, want) == 0);
    kms_att_free(att);
    att = NULL;

    /* the NSM's refusals and malformed answers */
    nsm.mode = KMSTEST_NSM_ERROR;
    if (p != NULL)
        CHECK_RC(kms_platform_attest(p, rd, ev, 2, NULL, &att), KMS_ERR_IO);
    CHECK_DETAIL("InvalidArgument");
    nsm.mode = KMSTEST_NSM_GARBAGE;
    if (p != NULL)
        CHECK_RC(kms_platform_attest(p, rd, ev, 2, NULL, &att), KMS_ERR_PARSE);
    nsm.mode = KMSTEST_NSM_NOT_NSM;
    if (p != NULL)
        CHECK_RC(kms_platform_attest(p, rd, ev, 2, NULL, &att), KMS_ERR_IO);
    CHECK_DETAIL("is not a Nitro Security Module");
    CHECK(att == NULL);
    unsetenv("KMS_FAKE_NSM");
    kms_platform_free(p);
    kmstest_nsm_stop(&nsm);
}

int main(void)
{
    char tmpl[] = "/tmp/kms-nsm-XXXXXX";

    if (mkdtemp(tmpl) == NULL)
        return 1;
    snprintf(g_dir, sizeof(g_dir), "%s", tmpl);
    RUN(test_encode);
    RUN(test_decode);
    RUN(test_device_errors);
    RUN(test_producer);
    if (kms_test_failures == 0) {
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", g_dir);
    }
    TEST_MAIN_END();
}
