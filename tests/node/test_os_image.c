/* OS-image checks the node runs before asking the policy (DESIGN.md §3): Nitro PCRs vs the
 * claimed os_image_hash; GCP UKI (third PCR2 event) vs os_image_hash and PCR0 allow-list. */
#include <openssl/sha.h>
#include <stdlib.h>

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
    CHECK_OK(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v));
    c.uki[0] ^= 1;
    CHECK_RC(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("is not the UKI measured as the third PCR2 event");
    gcp_setup(&c, 2); /* only two PCR2 events: no UKI */
    CHECK_RC(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v), KMS_ERR_ATT_IMAGE);
    gcp_setup(&c, 4);
    c.v.pcr[0][31] ^= 1;
    CHECK_RC(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("is not the GCP OVMF measurement this node allows");
    c.v.sim = 1; /* simulated firmware: PCR0 not checked */
    CHECK_OK(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v));
    c.v.sim = 0;
    c.n.cfg.gcp_pcr0_any = 1;
    CHECK_OK(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v));
    c.n.cfg.gcp_pcr0_any = 0;
    allowed[0] = "0CCA9EC161B09288802E5A112255D21340ED5B797F5FE29CECCCFD8F67B9F803";
    c.n.cfg.gcp_pcr0[0] = allowed[0];
    c.n.cfg.n_gcp_pcr0 = 1; /* an explicit list replaces the default */
    CHECK_OK(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v));
    c.v.pcr[0][31] ^= 1;
    CHECK_RC(kms_node_check_os_image(&c.n, &c.att, &c.bi, &c.v), KMS_ERR_ATT_IMAGE);
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
    CHECK_OK(kms_node_check_os_image(&n, &att, &bi, &v));
    v.pcr[1][0] ^= 1;
    CHECK_RC(kms_node_check_os_image(&n, &att, &bi, &v), KMS_ERR_ATT_IMAGE);
    CHECK_DETAIL("sha256(PCR0||PCR1||PCR2)");
    memset(v.pcr, 0, sizeof(v.pcr));
    memset(h, 0, sizeof(h));
    CHECK_OK(kms_node_check_os_image(&n, &att, &bi, &v));
}

/* TDX: the image check needs dstack-mr (not built); the node does not refuse here. */
static void test_tdx_passes(void)
{
    struct kms_node n;
    struct kms_attestation att;
    struct kms_boot_info bi;
    struct kms_verified v;

    memset(&n, 0, sizeof(n));
    memset(&att, 0, sizeof(att));
    memset(&bi, 0, sizeof(bi));
    memset(&v, 0, sizeof(v));
    CHECK_OK(kms_node_check_os_image(&n, &att, &bi, &v));
}

int main(void)
{
    RUN(test_gcp);
    RUN(test_nitro);
    RUN(test_tdx_passes);
    TEST_MAIN_END();
}
