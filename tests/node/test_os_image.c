/* OS-image checks the node runs before asking the policy (DESIGN.md §3): Nitro PCRs vs the
 * claimed os_image_hash; GCP UKI (third PCR2 event) vs os_image_hash and PCR0 allow-list;
 * plain TDX MRTD/RTMR0-2 vs the image's measurement manifest (attest/image.h). */
#include <openssl/sha.h>
#include <stdlib.h>
#include <unistd.h>

#include "attest/image.h"
#include "attest/sim.h"

#include "common/hex.h"
#include "node/node.h"
#include "test.h"

static const char ovmf[] = "0cca9ec161b09288802e5a112255d21340ed5b797f5fe29cecccfd8f67b9f802";

struct gcp_case {
    struct kms_node n;
    struct kms_attestation att;
    struct kms_tpm_event ev[5];
    uint8_t d[5][32];
    struct kms_boot_info bi;
    struct kms_verified v;
    uint8_t uki[32];
};

static void gcp_setup(struct gcp_case *c, size_t pcr2_events)
{
    static const uint32_t idx[5] = {0, 2, 2, 2, 2};

    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < 5; i++) {
        memset(c->d[i], (int)(0x10 + i), 32);
        c->ev[i].pcr_index = idx[i];
        c->ev[i].digest.p = c->d[i];
        c->ev[i].digest.len = 32;
    }
    memcpy(c->uki, c->d[3], 32); /* third PCR2 event */
    c->att.mode = KMS_ATT_GCP_TDX;
    c->att.tpm.events = c->ev;
    c->att.tpm.n_events = 1 + pcr2_events;
    c->bi.mode = KMS_ATT_GCP_TDX;
    c->bi.os_image_hash.p = c->uki;
    c->bi.os_image_hash.len = 32;
    c->v.mode = KMS_ATT_GCP_TDX;
    CHECK_OK(kms_hex_decode_exact(ovmf, c->v.pcr[0], 32));
}

/* GCP: UKI == os_image_hash and PCR0 == the reference's OVMF value passes; each flip fails. */
static void test_gcp(void)
{
    struct gcp_case c;
    const char *allowed[1];

    gcp_setup(&c, 4);
    CHECK_OK(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v, NULL));
    c.uki[0] ^= 1;
    CHECK_RC(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v, NULL), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("is not the UKI measured as the third PCR2 event");
    gcp_setup(&c, 2); /* only two PCR2 events: no UKI */
    CHECK_RC(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v, NULL), KMS_ERR_ATT_IMAGE);
    gcp_setup(&c, 4);
    c.v.pcr[0][31] ^= 1;
    CHECK_RC(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v, NULL), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("is not the GCP OVMF measurement this node allows");
    c.v.sim = 1; /* simulated firmware: PCR0 not checked */
    CHECK_OK(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v, NULL));
    c.v.sim = 0;
    c.n.cfg.gcp_pcr0_any = 1;
    CHECK_OK(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v, NULL));
    c.n.cfg.gcp_pcr0_any = 0;
    allowed[0] = "0CCA9EC161B09288802E5A112255D21340ED5B797F5FE29CECCCFD8F67B9F803";
    c.n.cfg.gcp_pcr0[0] = allowed[0];
    c.n.cfg.n_gcp_pcr0 = 1; /* an explicit list replaces the default */
    CHECK_OK(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v, NULL));
    c.v.pcr[0][31] ^= 1;
    CHECK_RC(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v, NULL), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("not among the allowed GCP firmware measurements");
}

/* Nitro: sha256(PCR0||PCR1||PCR2) must equal the claimed os_image_hash; all-zero PCRs (debug
 * enclave) give 32 zero bytes as the reference. */
static void test_nitro(void)
{
    struct kms_node n;
    struct kms_attestation att;
    struct kms_boot_info bi;
    struct kms_verified v;
    uint8_t h[32], cat[144];

    memset(&n, 0, sizeof(n));
    memset(&att, 0, sizeof(att));
    memset(&bi, 0, sizeof(bi));
    memset(&v, 0, sizeof(v));
    att.mode = bi.mode = v.mode = KMS_ATT_NITRO;
    memset(v.pcr, 0x33, sizeof(v.pcr));
    memcpy(cat, v.pcr, sizeof(cat));
    SHA256(cat, sizeof(cat), h);
    bi.os_image_hash.p = h;
    bi.os_image_hash.len = 32;
    CHECK_OK(kms_node_check_os_image(&n, &att, &bi, &v, NULL));
    v.pcr[1][0] ^= 1;
    CHECK_RC(kms_node_check_os_image(&n, &att, &bi, &v, NULL), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("sha256(PCR0||PCR1||PCR2)");
    memset(v.pcr, 0, sizeof(v.pcr));
    memset(h, 0, sizeof(h));
    CHECK_OK(kms_node_check_os_image(&n, &att, &bi, &v, NULL));
}

/* ---- plain TDX: MRTD/RTMR0-2 against the image's measurement manifest */

struct tdx_case {
    struct kms_node n;
    struct kms_attestation att;
    struct kms_boot_info bi;
    struct kms_verified v;
    uint8_t img[32];
    struct kms_image_mrs mrs;
    char dir[64];
    char vmc[256];
};

static void tdx_mrs(struct kms_image_mrs *m)
{
    memset(m->mrtd, 0xa0, 48);
    for (int i = 0; i < 3; i++)
        memset(m->rtmr[i], 0xb0 + i, 48);
}

/* A node whose --image-manifest-dir holds one manifest for img: cpu_count 2 + memory 2 GiB. */
static void tdx_setup(struct tdx_case *c)
{
    struct kms_image_cfg ic;
    char path[128], hex[65], *text = NULL;

    memset(c, 0, sizeof(*c));
    snprintf(c->dir, sizeof(c->dir), "/tmp/kms-osimage-XXXXXX");
    CHECK(mkdtemp(c->dir) != NULL);
    SHA256((const uint8_t *)"an os image", 11, c->img);
    kms_hex_encode(c->img, 32, hex);
    tdx_mrs(&c->mrs);
    CHECK_OK(kms_image_manifest_build(NULL, c->img, "test-image",
                                      "{\"cpu_count\":2,\"memory_size\":2147483648}", &c->mrs,
                                      &text));
    snprintf(path, sizeof(path), "%s/%s.json", c->dir, hex);
    CHECK_OK(kms_file_write_atomic(path, text, strlen(text), 0600));
    free(text);
    memset(&ic, 0, sizeof(ic));
    ic.dir = c->dir;
    CHECK_OK(kms_image_verifier_new(&ic, &c->n.image));
    c->att.mode = c->bi.mode = c->v.mode = KMS_ATT_TDX;
    c->bi.os_image_hash.p = c->img;
    c->bi.os_image_hash.len = 32;
    memcpy(c->v.td.mr_td, c->mrs.mrtd, 48);
    for (int i = 0; i < 3; i++)
        memcpy(c->v.td.rtmr[i], c->mrs.rtmr[i], 48);
    snprintf(c->vmc, sizeof(c->vmc),
             "{\"os_image_hash\":\"%s\",\"cpu_count\":2,\"memory_size\":2147483648}", hex);
}

static void tdx_done(struct tdx_case *c)
{
    char cmd[128];

    kms_image_verifier_free(c->n.image);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", c->dir);
    CHECK(system(cmd) == 0);
}

#define TDX_CHECK(c) kms_node_check_os_image(&(c)->n, &(c)->att, &(c)->bi, &(c)->v, (c)->vmc)

/* The manifest's measurements pass; flipping one byte of each register refuses with the
 * reference's text naming exactly that register. */
static void test_tdx_match_and_mismatch(void)
{
    static const char *const reg[4] = {"MRTD", "RTMR0", "RTMR1", "RTMR2"};
    struct tdx_case c;
    char want[300], e[97], a[97];

    tdx_setup(&c);
    CHECK_OK(TDX_CHECK(&c));
    for (int r = 0; r < 4; r++) {
        uint8_t *p = r == 0 ? c.v.td.mr_td : c.v.td.rtmr[r - 1];

        p[47] ^= 1;
        kms_hex_encode(r == 0 ? c.mrs.mrtd : c.mrs.rtmr[r - 1], 48, e);
        kms_hex_encode(p, 48, a);
        snprintf(want, sizeof(want),
                 "Failed to verify os image hash: MRs do not match: %s mismatch: expected=%s, "
                 "actual=%s",
                 reg[r], e, a);
        CHECK_RC(TDX_CHECK(&c), KMS_ERR_ATT_IMAGE);
        CHECK(strcmp(kms_err_detail(), want) == 0);
        p[47] ^= 1;
    }
    /* RTMR3 is not an image measurement (runtime events): not compared here. */
    c.v.td.rtmr[3][0] ^= 1;
    CHECK_OK(TDX_CHECK(&c));
    tdx_done(&c);
}

/* No manifest for the claimed hash, no hash at all, a VM shape the manifest lacks: refused. */
static void test_tdx_no_manifest(void)
{
    struct tdx_case c;
    char hex[65];

    tdx_setup(&c);
    c.img[0] ^= 1;
    kms_hex_encode(c.img, 32, hex);
    CHECK_RC(TDX_CHECK(&c), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("Failed to verify os image hash: no measurement manifest for OS image");
    CHECK_DETAIL(hex);
    c.img[0] ^= 1;
    c.bi.os_image_hash.len = 0;
    CHECK_RC(TDX_CHECK(&c), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("vm_config has no os_image_hash");
    c.bi.os_image_hash.len = 32;
    kms_hex_encode(c.img, 32, hex);
    snprintf(c.vmc, sizeof(c.vmc),
             "{\"os_image_hash\":\"%s\",\"cpu_count\":4,\"memory_size\":2147483648}", hex);
    CHECK_RC(TDX_CHECK(&c), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("has no entry for this VM shape (cpu_count 4");
    /* A key the vm_config lacks takes its default: hugepages false matches, true does not. */
    snprintf(c.vmc, sizeof(c.vmc),
             "{\"os_image_hash\":\"%s\",\"cpu_count\":2,\"memory_size\":2147483648,"
             "\"hugepages\":true}",
             hex);
    CHECK_OK(TDX_CHECK(&c)); /* the manifest does not constrain hugepages */
    /* No vm_config in the request: att->config, then "{}" (cpu_count 0: no entry). */
    c.att.config = c.vmc;
    CHECK_OK(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v, ""));
    c.att.config = NULL;
    CHECK_RC(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v, NULL), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("has no entry for this VM shape");
    tdx_done(&c);
}

/* A manifest is cached: removing the file changes nothing until the cache is cleared. */
static void test_tdx_cache(void)
{
    struct tdx_case c;
    char path[128], hex[65];

    tdx_setup(&c);
    CHECK_OK(TDX_CHECK(&c));
    CHECK(kms_image_loads(c.n.image) == 1);
    kms_hex_encode(c.img, 32, hex);
    snprintf(path, sizeof(path), "%s/%s.json", c.dir, hex);
    CHECK(unlink(path) == 0);
    CHECK_OK(TDX_CHECK(&c));
    CHECK(kms_image_loads(c.n.image) == 1);
    c.img[0] ^= 1; /* another hash: nothing dropped */
    CHECK(kms_image_cache_clear(c.n.image, c.img, 32) == 0);
    c.img[0] ^= 1;
    CHECK(kms_image_cache_clear(c.n.image, c.img, 32) == 1);
    CHECK_RC(TDX_CHECK(&c), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("no measurement manifest");
    tdx_done(&c);
}

/* The simulated TEE's manifests serve simulated evidence only. */
static void test_tdx_sim_manifest(void)
{
    struct kms_image_cfg ic;
    struct tdx_case c;
    char hex[65];
    uint8_t img[32];

    tdx_setup(&c);
    kms_image_verifier_free(c.n.image);
    memset(&ic, 0, sizeof(ic));
    ic.sim_dir = c.dir;
    CHECK_OK(kms_image_verifier_new(&ic, &c.n.image));
    CHECK_OK(kms_sim_write_image_manifest(c.dir));
    kms_sim_os_image_hash(img);
    kms_hex_encode(img, 32, hex);
    c.bi.os_image_hash.p = img;
    snprintf(c.vmc, sizeof(c.vmc), "{\"os_image_hash\":\"%s\"}", hex);
    c.v.sim = 1;
    CHECK_RC(TDX_CHECK(&c), KMS_ERR_ATT_IMAGE); /* not the simulated image's measurements */
    CHECK_DETAIL("MRs do not match: MRTD mismatch");
    c.v.sim = 0; /* real evidence never uses them, cached or not */
    CHECK_RC(TDX_CHECK(&c), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("no measurement manifest");
    tdx_done(&c);
}

/* --insecure-skip-os-image-check accepts anything; without it and without a verifier the node
 * refuses (fail closed). */
static void test_tdx_skip(void)
{
    struct tdx_case c;

    tdx_setup(&c);
    c.v.td.mr_td[0] ^= 1;
    c.n.cfg.insecure_skip_os_image_check = 1;
    CHECK_OK(TDX_CHECK(&c));
    c.n.cfg.insecure_skip_os_image_check = 0;
    kms_image_verifier_free(c.n.image);
    c.n.image = NULL;
    CHECK_RC(TDX_CHECK(&c), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("no image manifest source");
    tdx_done(&c);
}

/* The manifest parser is strict: each defect is refused with its reason. */
static void test_manifest_parse(void)
{
    static const char good[] =
        "{\"version\":1,\"os_image_hash\":\"%s\",\"measurements\":[{\"vm_shape\":{%s},"
        "\"mrtd\":\"%s\",\"rtmr0\":\"%s\",\"rtmr1\":\"%s\",\"rtmr2\":\"%s\"%s}]%s}";
    static const struct {
        const char *shape, *extra_entry, *extra_top, *why;
    } bad[] = {
        {"", "", ",\"x\":1", "unknown key x"},
        {"", ",\"rtmr3\":\"00\"", "", "unknown key rtmr3"},
        {"\"cpus\":2", "", "", "vm_shape key cpus is not a VM shape field"},
        {"\"cpu_count\":\"2\"", "", "", "vm_shape cpu_count has the wrong type"},
        {"\"cpu_count\":-1", "", "", "vm_shape cpu_count has the wrong type"},
        {"\"hugepages\":null", "", "", "vm_shape hugepages has the wrong type"},
    };
    struct kms_image_manifest *m = NULL;
    char text[2048], h[65], r[97];
    uint8_t img[32];

    memset(img, 0x11, 32);
    kms_hex_encode(img, 32, h);
    memset(r, 'a', 96);
    r[96] = '\0';
    snprintf(text, sizeof(text), good, h, "\"cpu_count\":1", r, r, r, r, "", "");
    CHECK_OK(kms_image_manifest_parse(text, strlen(text), img, &m));
    kms_image_manifest_free(m);
    m = NULL;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), good, h, bad[i].shape, r, r, r, r, bad[i].extra_entry,
                 bad[i].extra_top);
        CHECK_RC(kms_image_manifest_parse(text, strlen(text), img, &m), KMS_ERR_PARSE);
        CHECK_DETAIL(bad[i].why);
        CHECK(m == NULL);
    }
    r[95] = '\0'; /* 95 hex digits */
    snprintf(text, sizeof(text), good, h, "", r, r, r, r, "", "");
    CHECK_RC(kms_image_manifest_parse(text, strlen(text), img, &m), KMS_ERR_PARSE);
    CHECK_DETAIL("mrtd must be 96 hex digits");
    r[95] = 'a';
    snprintf(text, sizeof(text), good, h, "", r, r, r, r, "", "");
    img[0] ^= 1; /* found under another hash */
    CHECK_RC(kms_image_manifest_parse(text, strlen(text), img, &m), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("names another os_image_hash");
    img[0] ^= 1;
    snprintf(text, sizeof(text), "{\"version\":2,\"os_image_hash\":\"%s\",\"measurements\":[]}", h);
    CHECK_RC(kms_image_manifest_parse(text, strlen(text), img, &m), KMS_ERR_PARSE);
    CHECK_DETAIL("version must be 1");
}

/* URL templates: http(s) with the placeholder only. */
static void test_url_template(void)
{
    struct kms_image_cfg ic;
    struct kms_image_verifier *iv = NULL;

    memset(&ic, 0, sizeof(ic));
    ic.url_template = "ftp://h/{OS_IMAGE_HASH}.json";
    CHECK_RC(kms_image_verifier_new(&ic, &iv), KMS_ERR_INVAL);
    CHECK_DETAIL("must be http:// or https://");
    ic.url_template = "http://h/image.json";
    CHECK_RC(kms_image_verifier_new(&ic, &iv), KMS_ERR_INVAL);
    CHECK_DETAIL("must contain {OS_IMAGE_HASH}");
    ic.url_template = "https://h/{OS_IMAGE_HASH}/m.json";
    CHECK_OK(kms_image_verifier_new(&ic, &iv));
    kms_image_verifier_free(iv);
}

int main(void)
{
    RUN(test_gcp);
    RUN(test_nitro);
    RUN(test_tdx_match_and_mismatch);
    RUN(test_tdx_no_manifest);
    RUN(test_tdx_cache);
    RUN(test_tdx_sim_manifest);
    RUN(test_tdx_skip);
    RUN(test_manifest_parse);
    RUN(test_url_template);
    TEST_MAIN_END();
}
