/*
 * TDX TCB evaluation with Intel DCAP collateral (attest.h, collateral section). Collateral is
 * made and signed by the simulated TEE's own CA (kms_sim_collateral: a simulation TCB signing
 * certificate under the simulation root, CRLs by the simulation PCK CA and root), and quotes come
 * from the simulated TEE, so every check of the production verifier is exercised:
 * TCB status and advisory IDs, CRL revocation, nextUpdate expiry, collateral signatures and
 * issuer chains, FMSPC/PCE-ID, QE identity, TDX module identity; the PCCS fetch path against an
 * in-process libmicrohttpd PCCS (down / slow → clear error within the timeout); the caches (hit,
 * expiry at nextUpdate, bounds, no reuse across roots, thread safety). Each negative test flips
 * exactly one input and expects one error code and a detail substring.
 */
#include <jansson.h>
#include <microhttpd.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "attest/attest.h"
#include "attest/collateral.h"
#include "attest/sim.h"
#include "attest/tdx.h"
#include "common/buf.h"
#include "common/file.h"
#include "common/hex.h"
#include "test.h"

/* 2025-06-15T15:06:40Z: inside the simulation certificates' validity. */
#define T0 ((time_t)1750000000)
#define DAY 86400

static char g_dir[256];  /* simulation directory */
static char g_dir2[256]; /* a second, unrelated simulation directory (other root, other keys) */
static struct kms_sim *g_sim;
static struct kms_sim *g_sim2;

/* ---------------------------------------------------------------- helpers */

static struct kms_attestation *make_att(const struct kms_sim *sim, int debug)
{
    struct kms_sim_measurements m = {.debug = debug};
    struct kms_attestation *att = NULL;
    uint8_t rd[64];

    memset(rd, 0x5a, sizeof(rd));
    if (kms_sim_attest(sim, &m, rd, NULL, 0, "", &att) < 0) {
        fprintf(stderr, "kms_sim_attest: %s\n", kms_err_detail());
        exit(2);
    }
    return att;
}

static struct kms_attest_ctx *make_ctx(const struct kms_sim *sim, time_t t,
                                       struct kms_collateral_source *src)
{
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();

    if (ctx == NULL || kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, kms_sim_root(sim), 1) < 0)
        exit(2);
    kms_attest_ctx_set_time(ctx, t);
    kms_attest_ctx_set_collateral_source(ctx, src);
    return ctx;
}

static void sim_coll(const char *dir, const struct kms_sim_collateral_opts *o,
                     struct kms_collateral *c)
{
    struct kms_sim_collateral_opts d = {.now = T0};

    if (o != NULL)
        d = *o;
    if (d.now == 0)
        d.now = T0;
    if (kms_sim_collateral(dir, &d, c) < 0) {
        fprintf(stderr, "kms_sim_collateral: %s\n", kms_err_detail());
        exit(2);
    }
}

static struct kms_collateral_source *src_of(const struct kms_collateral *c, int no_cache)
{
    struct kms_collateral_source_opts so = {.no_cache = no_cache};
    struct kms_collateral_source *src = NULL;

    if (kms_collateral_source_new(&so, &src) < 0 ||
        (c != NULL && kms_collateral_source_add(src, c) < 0))
        exit(2);
    return src;
}

/* Verifies the sim's default attestation at time t with collateral c; v receives the result. */
static int verify_c(const struct kms_collateral *c, time_t t, struct kms_verified *v)
{
    struct kms_collateral_source *src = src_of(c, 1);
    struct kms_attest_ctx *ctx = make_ctx(g_sim, t, src);
    struct kms_attestation *att = make_att(g_sim, 0);
    int rc = kms_attest_verify(ctx, att, v);

    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(src);
    return rc;
}

/* Verifies with collateral built from opts; returns rc, fills status (may be NULL). */
static int verify_o(const struct kms_sim_collateral_opts *o, time_t t, struct kms_verified *v)
{
    struct kms_collateral c;
    int rc;

    sim_coll(g_dir, o, &c);
    rc = verify_c(&c, t, v);
    kms_collateral_clear(&c);
    return rc;
}

/* Replaces the first `from` by `to` in *text and re-signs it with the simulation TCB signing key
 * (so only the edited field differs, the signature stays valid). */
static void edit_signed(char **text, struct kms_bytes *sig, const char *from, const char *to)
{
    char *p = strstr(*text, from);
    size_t n;
    char *r;

    if (p == NULL) {
        fprintf(stderr, "edit_signed: \"%s\" not found\n", from);
        exit(2);
    }
    n = strlen(*text) - strlen(from) + strlen(to);
    r = malloc(n + 1);
    memcpy(r, *text, (size_t)(p - *text));
    snprintf(r + (p - *text), n + 1 - (size_t)(p - *text), "%s%s", to, p + strlen(from));
    free(*text);
    *text = r;
    if (kms_sim_sign_raw(g_dir, "sim-tcb-signing.key", (const uint8_t *)r, strlen(r), sig->p) < 0)
        exit(2);
}

static char *levels(const char *sgx, unsigned pcesvn, const char *tdx, const char *status,
                    const char *adv)
{
    static char buf[4][2048];
    static int k;
    char comps_sgx[512] = "";
    char comps_tdx[512] = "";
    const char *src[2] = {sgx, tdx};
    char *dst[2] = {comps_sgx, comps_tdx};
    char *out = buf[k++ % 4];

    /* sgx/tdx: 16 comma-separated SVNs */
    for (int w = 0; w < 2; w++) {
        const char *p = src[w];
        size_t off = (size_t)snprintf(dst[w], sizeof(comps_sgx), "[");

        for (int i = 0; i < 16; i++) {
            char one[24];
            long v = strtol(p, (char **)&p, 10);

            snprintf(one, sizeof(one), "%s{\"svn\":%ld}", i ? "," : "", v);
            off += (size_t)snprintf(dst[w] + off, sizeof(comps_sgx) - off, "%s", one);
            if (*p == ',')
                p++;
        }
        snprintf(dst[w] + off, sizeof(comps_sgx) - off, "]");
    }
    snprintf(out, 2048,
             "{\"tcb\":{\"sgxtcbcomponents\":%s,\"pcesvn\":%u,\"tdxtcbcomponents\":%s},"
             "\"tcbDate\":\"2025-01-01T00:00:00Z\",\"tcbStatus\":\"%s\"%s%s%s}",
             comps_sgx, pcesvn, comps_tdx, status, adv != NULL ? ",\"advisoryIDs\":" : "",
             adv != NULL ? adv : "", "");
    return out;
}

#define SIM_SVN "2,2,2,2,3,1,0,3,0,0,0,0,0,0,0,0"
#define HIGH_SVN "3,3,3,3,3,3,3,3,0,0,0,0,0,0,0,0"

/* ---------------------------------------------------------------- TCB status */

/* Collateral describing exactly the simulated platform gives UpToDate with no advisories, the
 * sim flag, the PPID, and the report fields, through kms_attest_verify. */
static void test_up_to_date(void)
{
    struct kms_verified v;

    CHECK_OK(verify_o(NULL, T0, &v));
    CHECK(strcmp(v.tcb_status, "UpToDate") == 0);
    CHECK(v.n_advisory_ids == 0);
    CHECK(v.sim == 1);
    CHECK(v.ppid_len == 16);
    CHECK(v.mode == KMS_ATT_TDX);
    kms_verified_free(&v);
}

/* Without a collateral source nothing is evaluated (tcb_status ""), as before. */
static void test_no_source_no_status(void)
{
    struct kms_attest_ctx *ctx = make_ctx(g_sim, T0, NULL);
    struct kms_attestation *att = make_att(g_sim, 0);
    struct kms_verified v;

    CHECK_OK(kms_attest_verify(ctx, att, &v));
    CHECK(v.tcb_status[0] == '\0');
    kms_verified_free(&v);
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
}

/* A platform below the newest level gets that level's status and advisory IDs; levels are
 * matched in Intel's order (highest first) whatever their order in the JSON. */
static void test_out_of_date_advisories(void)
{
    struct kms_sim_collateral_opts o = {.now = T0};
    struct kms_verified v;
    char json[8192];

    snprintf(json, sizeof(json), "[%s,%s]",
             levels(SIM_SVN, 11, SIM_SVN, "OutOfDate", "[\"INTEL-SA-00837\",\"INTEL-SA-00960\"]"),
             levels(HIGH_SVN, 13, HIGH_SVN, "UpToDate", NULL));
    o.tcb_levels_json = json;
    CHECK_OK(verify_o(&o, T0, &v));
    CHECK(strcmp(v.tcb_status, "OutOfDate") == 0);
    CHECK(v.n_advisory_ids == 2);
    CHECK(v.n_advisory_ids == 2 && strcmp(v.advisory_ids[0], "INTEL-SA-00837") == 0 &&
          strcmp(v.advisory_ids[1], "INTEL-SA-00960") == 0);
    kms_verified_free(&v);

    /* a PCESVN below the level's is enough to fall to the next level */
    snprintf(json, sizeof(json), "[%s,%s]", levels(SIM_SVN, 12, SIM_SVN, "UpToDate", NULL),
             levels(SIM_SVN, 10, SIM_SVN, "OutOfDate", "[\"INTEL-SA-00001\"]"));
    CHECK_OK(verify_o(&o, T0, &v));
    CHECK(strcmp(v.tcb_status, "OutOfDate") == 0);
    kms_verified_free(&v);

    /* a TDX TEE TCB SVN below the level's likewise */
    snprintf(json, sizeof(json), "[%s,%s]",
             levels(SIM_SVN, 11, "2,2,2,2,3,1,0,4,0,0,0,0,0,0,0,0", "UpToDate", NULL),
             levels(SIM_SVN, 11, SIM_SVN, "SWHardeningNeeded", "[\"INTEL-SA-00615\"]"));
    CHECK_OK(verify_o(&o, T0, &v));
    CHECK(strcmp(v.tcb_status, "SWHardeningNeeded") == 0);
    CHECK(v.n_advisory_ids == 1);
    kms_verified_free(&v);
}

/* Every non-revoked status is reported verbatim. */
static void test_all_statuses(void)
{
    static const char *const st[] = {"UpToDate",
                                     "SWHardeningNeeded",
                                     "ConfigurationNeeded",
                                     "ConfigurationAndSWHardeningNeeded",
                                     "OutOfDate",
                                     "OutOfDateConfigurationNeeded"};
    struct kms_sim_collateral_opts o = {.now = T0};
    struct kms_verified v;
    char json[4096];

    for (size_t i = 0; i < sizeof(st) / sizeof(st[0]); i++) {
        snprintf(json, sizeof(json), "[%s]", levels(SIM_SVN, 11, SIM_SVN, st[i], NULL));
        o.tcb_levels_json = json;
        CHECK_OK(verify_o(&o, T0, &v));
        CHECK(strcmp(v.tcb_status, st[i]) == 0);
        kms_verified_free(&v);
    }
}

/* QE identity and TDX module levels merge in: the worst status wins, advisories are united. */
static void test_qe_and_module_merge(void)
{
    struct kms_sim_collateral_opts o = {.now = T0};
    struct kms_verified v;
    char mods[2048];
    char zeros[97];

    o.qe_tcb_levels_json = "[{\"tcb\":{\"isvsvn\":9},\"tcbStatus\":\"UpToDate\"},"
                           "{\"tcb\":{\"isvsvn\":8},\"tcbStatus\":\"OutOfDate\","
                           "\"advisoryIDs\":[\"INTEL-SA-00999\"]}]";
    CHECK_OK(verify_o(&o, T0, &v));
    CHECK(strcmp(v.tcb_status, "OutOfDate") == 0);
    CHECK(v.n_advisory_ids == 1 && strcmp(v.advisory_ids[0], "INTEL-SA-00999") == 0);
    kms_verified_free(&v);

    memset(zeros, '0', 96);
    zeros[96] = '\0';
    snprintf(mods, sizeof(mods),
             "[{\"id\":\"TDX_02\",\"mrsigner\":\"%s\",\"attributes\":\"0000000000000000\","
             "\"attributesMask\":\"FFFFFFFFFFFFFFFF\",\"tcbLevels\":[{\"tcb\":{\"isvsvn\":3},"
             "\"tcbStatus\":\"UpToDate\"},{\"tcb\":{\"isvsvn\":2},\"tcbStatus\":"
             "\"ConfigurationNeeded\",\"advisoryIDs\":[\"INTEL-SA-00888\"]}]}]",
             zeros);
    o.qe_tcb_levels_json = NULL;
    o.module_identities_json = mods;
    CHECK_OK(verify_o(&o, T0, &v));
    CHECK(strcmp(v.tcb_status, "ConfigurationNeeded") == 0);
    CHECK(v.n_advisory_ids == 1 && strcmp(v.advisory_ids[0], "INTEL-SA-00888") == 0);
    kms_verified_free(&v);
}

/* A TCB level whose status is Revoked fails with its own error. */
static void test_tcb_revoked(void)
{
    struct kms_sim_collateral_opts o = {.now = T0};
    struct kms_verified v;
    char json[4096];

    snprintf(json, sizeof(json), "[%s]", levels(SIM_SVN, 11, SIM_SVN, "Revoked", NULL));
    o.tcb_levels_json = json;
    CHECK_RC(verify_o(&o, T0, &v), KMS_ERR_ATT_REVOKED);
    CHECK_DETAIL("TCB status is Revoked");
}

/* A platform below every TCB level has no status: TCB error. */
static void test_below_all_levels(void)
{
    struct kms_sim_collateral_opts o = {.now = T0};
    struct kms_verified v;
    char json[4096];

    snprintf(json, sizeof(json), "[%s]", levels(HIGH_SVN, 11, SIM_SVN, "UpToDate", NULL));
    o.tcb_levels_json = json;
    CHECK_RC(verify_o(&o, T0, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("below every TCB level");
}

/* ---------------------------------------------------------------- CRLs */

/* The PCK certificate on the PCK CRL, or its CA on the root CA CRL: revoked. */
static void test_crl_revocation(void)
{
    struct kms_sim_collateral_opts o = {.now = T0, .revoke_pck = 1};
    struct kms_verified v;

    CHECK_RC(verify_o(&o, T0, &v), KMS_ERR_ATT_REVOKED);
    CHECK_DETAIL("PCK certificate (serial");
    o.revoke_pck = 0;
    o.revoke_pck_ca = 1;
    CHECK_RC(verify_o(&o, T0, &v), KMS_ERR_ATT_REVOKED);
    CHECK_DETAIL("PCK CA certificate");
}

/* CRLs signed by another key than their issuer's, or past their nextUpdate, are refused. */
static void test_crl_signature_and_expiry(void)
{
    struct kms_collateral c;
    struct kms_collateral other;
    struct kms_sim_collateral_opts o = {.now = T0, .crl_next_update = T0 - 10};
    struct kms_verified v;
    struct kms_bytes tmp;

    sim_coll(g_dir, NULL, &c);
    sim_coll(g_dir2, NULL, &other); /* same issuer names, other keys */
    tmp = c.pck_crl;
    c.pck_crl = other.pck_crl;
    CHECK_RC(verify_c(&c, T0, &v), KMS_ERR_ATT_COLLATERAL_SIG);
    CHECK_DETAIL("PCK CRL signature does not verify");
    c.pck_crl = tmp;
    tmp = c.root_ca_crl;
    c.root_ca_crl = other.root_ca_crl;
    CHECK_RC(verify_c(&c, T0, &v), KMS_ERR_ATT_COLLATERAL_SIG);
    CHECK_DETAIL("root CA CRL signature does not verify");
    c.root_ca_crl = tmp;
    kms_collateral_clear(&c);
    kms_collateral_clear(&other);

    CHECK_RC(verify_o(&o, T0, &v), KMS_ERR_ATT_EXPIRED);
    CHECK_DETAIL("CRL expired");
}

/* ---------------------------------------------------------------- nextUpdate */

/* TCB info / QE identity past nextUpdate (or before issueDate) → EXPIRED, with what to do. */
static void test_expired_collateral(void)
{
    struct kms_collateral c;
    struct kms_verified v;

    sim_coll(g_dir, NULL, &c);
    /* the whole set expires after 30 days; CRLs last longer here to isolate nextUpdate */
    kms_collateral_clear(&c);
    {
        struct kms_sim_collateral_opts o = {.now = T0, .crl_next_update = T0 + 400 * DAY};

        sim_coll(g_dir, &o, &c);
    }
    CHECK_RC(verify_c(&c, T0 + 31 * DAY, &v), KMS_ERR_ATT_EXPIRED);
    CHECK_DETAIL("TCB info expired: nextUpdate");
    CHECK_DETAIL("refresh the collateral");
    CHECK_RC(verify_c(&c, T0 - 2 * 3600, &v), KMS_ERR_ATT_EXPIRED);
    CHECK_DETAIL("not yet valid");

    /* only the QE identity expired */
    {
        char want[64];
        char t[32];
        struct tm tm;
        time_t when = T0 + DAY;

        gmtime_r(&when, &tm);
        strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(want, sizeof(want), "\"nextUpdate\":\"%s\"", t);
        when = T0 + 30 * DAY;
        gmtime_r(&when, &tm);
        strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%SZ", &tm);
        {
            char from[64];

            snprintf(from, sizeof(from), "\"nextUpdate\":\"%s\"", t);
            edit_signed(&c.qe_identity, &c.qe_identity_signature, from, want);
        }
    }
    CHECK_OK(verify_c(&c, T0, &v));
    kms_verified_free(&v);
    CHECK_RC(verify_c(&c, T0 + 2 * DAY, &v), KMS_ERR_ATT_EXPIRED);
    CHECK_DETAIL("QE identity expired");
    kms_collateral_clear(&c);
}

/* ---------------------------------------------------------------- signatures and chains */

/* One flipped byte in a signature or in the signed text breaks it; an issuer chain to another
 * root is refused even when its signature is valid. */
static void test_collateral_signatures(void)
{
    struct kms_collateral c;
    struct kms_collateral other;
    struct kms_verified v;
    char *p;

    sim_coll(g_dir, NULL, &c);
    c.tcb_info_signature.p[10] ^= 1;
    CHECK_RC(verify_c(&c, T0, &v), KMS_ERR_ATT_COLLATERAL_SIG);
    CHECK_DETAIL("TCB info signature does not verify");
    c.tcb_info_signature.p[10] ^= 1;

    p = strstr(c.tcb_info, "UpToDate");
    p[0] = 'u'; /* text edited, signature kept */
    CHECK_RC(verify_c(&c, T0, &v), KMS_ERR_ATT_COLLATERAL_SIG);
    CHECK_DETAIL("TCB info signature does not verify");
    p[0] = 'U';

    c.qe_identity_signature.p[40] ^= 1;
    CHECK_RC(verify_c(&c, T0, &v), KMS_ERR_ATT_COLLATERAL_SIG);
    CHECK_DETAIL("QE identity signature does not verify");
    c.qe_identity_signature.p[40] ^= 1;
    CHECK_OK(verify_c(&c, T0, &v));
    kms_verified_free(&v);

    /* a fully valid set from another root (same names, other keys): its root CRL is the first
     * item that fails to verify with the PCK chain's root */
    sim_coll(g_dir2, NULL, &other);
    CHECK_RC(verify_c(&other, T0, &v), KMS_ERR_ATT_COLLATERAL_SIG);
    CHECK_DETAIL("root CA CRL signature does not verify");
    /* also when only the TCB info issuer chain is swapped */
    {
        char *tmp = c.tcb_info_issuer_chain;

        c.tcb_info_issuer_chain = other.tcb_info_issuer_chain;
        CHECK_RC(verify_c(&c, T0, &v), KMS_ERR_ATT_COLLATERAL_SIG);
        CHECK_DETAIL("TCB info issuer chain does not verify to the pinned root");
        c.tcb_info_issuer_chain = tmp;
    }
    kms_collateral_clear(&other);
    kms_collateral_clear(&c);
}

/* The TCB info must be for this platform's FMSPC and PCE-ID. */
static void test_fmspc_pceid_mismatch(void)
{
    struct kms_sim_collateral_opts o = {.now = T0, .fmspc_hex = "00906ed50000"};
    struct kms_verified v;

    CHECK_RC(verify_o(&o, T0, &v), KMS_ERR_ATT_COLLATERAL);
    CHECK_DETAIL("FMSPC mismatch: the PCK certificate has 90c06f000000, the TCB info is for "
                 "00906ed50000");
    o.fmspc_hex = NULL;
    o.pce_id_hex = "0100";
    CHECK_RC(verify_o(&o, T0, &v), KMS_ERR_ATT_COLLATERAL);
    CHECK_DETAIL("PCE-ID mismatch");
}

/* QE report checked against the QE identity: MRSIGNER, ISVPRODID, MISCSELECT, ATTRIBUTES, ISVSVN.
 */
static void test_qe_identity(void)
{
    struct kms_sim_collateral_opts o = {.now = T0};
    struct kms_collateral c;
    struct kms_verified v;

    o.qe_mrsigner_hex = "dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5";
    CHECK_RC(verify_o(&o, T0, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("QE MRSIGNER does not match");
    o.qe_mrsigner_hex = NULL;
    o.qe_tcb_levels_json = "[{\"tcb\":{\"isvsvn\":9},\"tcbStatus\":\"UpToDate\"}]";
    CHECK_RC(verify_o(&o, T0, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("QE ISVSVN 8 is below every QE identity TCB level");

    sim_coll(g_dir, NULL, &c);
    edit_signed(&c.qe_identity, &c.qe_identity_signature, "\"isvprodid\":2", "\"isvprodid\":1");
    CHECK_RC(verify_c(&c, T0, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("QE ISVPRODID 2 does not match");
    kms_collateral_clear(&c);

    sim_coll(g_dir, NULL, &c);
    edit_signed(&c.qe_identity, &c.qe_identity_signature, "\"miscselect\":\"00000000\"",
                "\"miscselect\":\"01000000\"");
    CHECK_RC(verify_c(&c, T0, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("QE MISCSELECT");
    kms_collateral_clear(&c);

    /* a masked-out MISCSELECT difference is accepted */
    sim_coll(g_dir, NULL, &c);
    edit_signed(&c.qe_identity, &c.qe_identity_signature,
                "\"miscselect\":\"00000000\",\"miscselectMask\":\"FFFFFFFF\"",
                "\"miscselect\":\"01000000\",\"miscselectMask\":\"FEFFFFFF\"");
    CHECK_OK(verify_c(&c, T0, &v));
    kms_verified_free(&v);
    kms_collateral_clear(&c);

    sim_coll(g_dir, NULL, &c);
    edit_signed(&c.qe_identity, &c.qe_identity_signature,
                "\"attributes\":\"11000000000000000000000000000000\"",
                "\"attributes\":\"13000000000000000000000000000000\"");
    CHECK_RC(verify_c(&c, T0, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("QE ATTRIBUTES byte 0");
    kms_collateral_clear(&c);

    sim_coll(g_dir, NULL, &c);
    edit_signed(&c.qe_identity, &c.qe_identity_signature, "\"id\":\"TD_QE\"", "\"id\":\"QE\"");
    CHECK_RC(verify_c(&c, T0, &v), KMS_ERR_ATT_COLLATERAL);
    CHECK_DETAIL("not a TD_QE identity");
    kms_collateral_clear(&c);
}

/* The v5 form of a simulated v4 quote: version 5, body type 2 (TD report 1.0) or 3 (1.5, with
 * tee_tcb_svn2 and mr_service_td appended), re-signed by the simulated attestation key; the
 * authentication data is unchanged (the QE report binds the key, not the quote). */
static uint8_t *sim_v5(const uint8_t *q4, size_t len4, int td15, const uint8_t *mr_service_td,
                       size_t *len)
{
    size_t body = td15 ? KMS_TDX_BODY15_LEN : KMS_TDX_BODY_LEN;
    size_t signed_len = KMS_TDX_HEADER_LEN + KMS_TDX_V5_BODY_HDR + body;
    size_t tail = len4 - (KMS_TDX_HEADER_LEN + KMS_TDX_BODY_LEN);
    uint8_t *q = calloc(1, signed_len + tail);
    uint8_t *p = q;

    memcpy(p, q4, KMS_TDX_HEADER_LEN);
    p[0] = 5;
    p += KMS_TDX_HEADER_LEN;
    p[0] = td15 ? 3 : 2;
    p[2] = (uint8_t)body;
    p[3] = (uint8_t)(body >> 8);
    p += KMS_TDX_V5_BODY_HDR;
    memcpy(p, q4 + KMS_TDX_HEADER_LEN, KMS_TDX_BODY_LEN);
    p += KMS_TDX_BODY_LEN;
    if (td15) {
        memset(p, 0x07, 16); /* tee_tcb_svn2 */
        if (mr_service_td != NULL)
            memcpy(p + 16, mr_service_td, 48);
        p += 64;
    }
    memcpy(p, q4 + KMS_TDX_HEADER_LEN + KMS_TDX_BODY_LEN, tail);
    if (kms_sim_sign_raw(g_dir, "sim-ak.key", q, signed_len, q + signed_len + 4) < 0)
        exit(2);
    *len = signed_len + tail;
    return q;
}

/* v5 quotes (TD report 1.0 and 1.5 bodies) get the full DCAP evaluation, TDX module identity
 * included: UpToDate with the default collateral, the module identity's OutOfDate level when
 * the module's ISVSVN only reaches that one, and a non-zero MR service TD is refused. */
static void test_v5_collateral(void)
{
    struct kms_sim_collateral_opts o = {.now = T0};
    struct kms_collateral c;
    struct kms_collateral_source *src;
    struct kms_attest_ctx *ctx;
    struct kms_verified v;
    char mods[1024];
    char zeros[97];

    memset(zeros, '0', 96);
    zeros[96] = '\0';
    for (int td15 = 0; td15 <= 1; td15++) {
        struct kms_attestation *att = make_att(g_sim, 0);
        uint8_t *q5;
        size_t len5;

        q5 = sim_v5(att->tdx_quote.p, att->tdx_quote.len, td15, NULL, &len5);
        free(att->tdx_quote.p);
        att->tdx_quote.p = q5;
        att->tdx_quote.len = len5;

        sim_coll(g_dir, NULL, &c);
        src = src_of(&c, 1);
        ctx = make_ctx(g_sim, T0, src);
        CHECK_OK(kms_attest_verify(ctx, att, &v));
        CHECK(strcmp(v.tcb_status, "UpToDate") == 0);
        kms_verified_free(&v);
        kms_attest_ctx_free(ctx);
        kms_collateral_source_free(src);
        kms_collateral_clear(&c);

        snprintf(mods, sizeof(mods),
                 "[{\"id\":\"TDX_02\",\"mrsigner\":\"%s\",\"attributes\":\"0000000000000000\","
                 "\"attributesMask\":\"FFFFFFFFFFFFFFFF\",\"tcbLevels\":[{\"tcb\":{\"isvsvn\":9},"
                 "\"tcbStatus\":\"UpToDate\"},{\"tcb\":{\"isvsvn\":1},\"tcbStatus\":"
                 "\"OutOfDate\",\"advisoryIDs\":[\"INTEL-SA-01111\"]}]}]",
                 zeros);
        o.module_identities_json = mods;
        sim_coll(g_dir, &o, &c);
        src = src_of(&c, 1);
        ctx = make_ctx(g_sim, T0, src);
        CHECK_OK(kms_attest_verify(ctx, att, &v));
        CHECK(strcmp(v.tcb_status, "OutOfDate") == 0);
        CHECK(v.n_advisory_ids == 1 && strcmp(v.advisory_ids[0], "INTEL-SA-01111") == 0);
        kms_verified_free(&v);
        kms_attest_ctx_free(ctx);
        kms_collateral_source_free(src);
        kms_collateral_clear(&c);
        o.module_identities_json = NULL;

        kms_att_free(att);
    }
}

/* A TD 1.5 quote with a non-zero MR service TD is refused with dcap-qvl's reason (its default,
 * allow_service_td = false); the same quote with a zero MR service TD verifies. */
static void test_v5_service_td(void)
{
    struct kms_collateral c;
    struct kms_collateral_source *src;
    struct kms_attest_ctx *ctx;
    struct kms_attestation *att = make_att(g_sim, 0);
    struct kms_verified v;
    uint8_t svc[48] = {0};
    uint8_t *q4 = att->tdx_quote.p;
    size_t len4 = att->tdx_quote.len;

    svc[47] = 1;
    att->tdx_quote.p = sim_v5(q4, len4, 1, svc, &att->tdx_quote.len);
    sim_coll(g_dir, NULL, &c);
    src = src_of(&c, 1);
    ctx = make_ctx(g_sim, T0, src);
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("Invalid MR service TD");
    free(att->tdx_quote.p);
    svc[47] = 0;
    att->tdx_quote.p = sim_v5(q4, len4, 1, svc, &att->tdx_quote.len);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
    free(q4);
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(src);
    kms_collateral_clear(&c);
}

/* The real quotes of dcap-qvl's sample directory with their collateral, at a time inside it:
 * the v4 quote is UpToDate (as dcap-qvl's own test says); the v5 (TD 1.5) quote's platform TCB
 * is below every level of its TCB info, which dcap-qvl also refuses ("No matching TCB level
 * found"; its test only passes with a TCB override). */
static void test_real_quotes_with_collateral(void)
{
    static const struct {
        const char *quote, *coll;
        time_t t;
    } cases[] = {{"tdx/dcap-qvl-quote-v4.bin", "tdx/dcap-qvl-collateral-v4.json", 1750334400},
                 {"tdx/dcap-qvl-quote-v5.bin", "tdx/dcap-qvl-collateral-v5.json", 1771419600}};

    for (size_t i = 0; i < 2; i++) {
        char *coll = strdup(kms_test_fixture(cases[i].coll));
        struct kms_collateral_source_opts so = {.collateral_file = coll, .no_cache = 1};
        struct kms_collateral_source *src = NULL;
        struct kms_attest_ctx *ctx = kms_attest_ctx_new();
        X509 *root = kms_attest_intel_root();
        struct kms_verified v;
        size_t len;
        uint8_t *q = kms_test_load_fixture(cases[i].quote, &len);

        CHECK_OK(kms_collateral_source_new(&so, &src));
        CHECK_OK(kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, root, 0));
        kms_attest_ctx_set_time(ctx, cases[i].t);
        kms_attest_ctx_set_collateral_source(ctx, src);
        if (i == 0) {
            CHECK_OK(kms_tdx_quote_verify_collateral(ctx, q, len, &v));
            CHECK(strcmp(v.tcb_status, "UpToDate") == 0 && v.n_advisory_ids == 0);
            kms_verified_free(&v);
        } else {
            CHECK_RC(kms_tdx_quote_verify_collateral(ctx, q, len, &v), KMS_ERR_ATT_TCB);
            CHECK_DETAIL("No matching TCB level found");
        }
        X509_free(root);
        kms_attest_ctx_free(ctx);
        kms_collateral_source_free(src);
        free(coll);
        free(q);
    }
}

/* TDX module identity: the module version's identity must exist, and its levels apply. */
static void test_module_identity(void)
{
    struct kms_sim_collateral_opts o = {.now = T0};
    struct kms_collateral c;
    struct kms_verified v;
    char mods[1024];
    char zeros[97];

    memset(zeros, '0', 96);
    zeros[96] = '\0';
    snprintf(mods, sizeof(mods),
             "[{\"id\":\"TDX_03\",\"mrsigner\":\"%s\",\"attributes\":\"0000000000000000\","
             "\"attributesMask\":\"FFFFFFFFFFFFFFFF\",\"tcbLevels\":[{\"tcb\":{\"isvsvn\":1},"
             "\"tcbStatus\":\"UpToDate\"}]}]",
             zeros);
    o.module_identities_json = mods;
    CHECK_RC(verify_o(&o, T0, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("No TDX module identity with id TDX_02 found in TCB Info");

    snprintf(mods, sizeof(mods),
             "[{\"id\":\"TDX_02\",\"mrsigner\":\"%s\",\"attributes\":\"0000000000000000\","
             "\"attributesMask\":\"FFFFFFFFFFFFFFFF\",\"tcbLevels\":[{\"tcb\":{\"isvsvn\":5},"
             "\"tcbStatus\":\"UpToDate\"}]}]",
             zeros);
    CHECK_RC(verify_o(&o, T0, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("TDX module ISVSVN 2 is below minimum required from TDX module TCB levels");

    zeros[0] = '1';
    snprintf(mods, sizeof(mods),
             "[{\"id\":\"TDX_02\",\"mrsigner\":\"%s\",\"attributes\":\"0000000000000000\","
             "\"attributesMask\":\"FFFFFFFFFFFFFFFF\",\"tcbLevels\":[{\"tcb\":{\"isvsvn\":1},"
             "\"tcbStatus\":\"UpToDate\"}]}]",
             zeros);
    CHECK_RC(verify_o(&o, T0, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("TDX module MRSIGNER");

    /* TCB info of the wrong kind */
    sim_coll(g_dir, NULL, &c);
    edit_signed(&c.tcb_info, &c.tcb_info_signature, "\"id\":\"TDX\"", "\"id\":\"SGX\"");
    CHECK_RC(verify_c(&c, T0, &v), KMS_ERR_ATT_COLLATERAL);
    CHECK_DETAIL("is not TDX TCB info v3");
    kms_collateral_clear(&c);
}

/* The verifier still applies the rest of §3.3 with collateral: a debug TD is refused. */
static void test_debug_td_still_refused(void)
{
    struct kms_collateral c;
    struct kms_collateral_source *src;
    struct kms_attest_ctx *ctx;
    struct kms_attestation *att = make_att(g_sim, 1);
    struct kms_verified v;

    sim_coll(g_dir, NULL, &c);
    src = src_of(&c, 0);
    ctx = make_ctx(g_sim, T0, src);
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_TCB);
    CHECK_DETAIL("Debug mode is enabled");
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(src);
    kms_collateral_clear(&c);
}

/* The quote's own checks still run on the collateral path: flipped quote signature, QE report
 * signature and QE binding each fail with their own code. */
static void test_quote_checks_on_collateral_path(void)
{
    struct kms_collateral c;
    struct kms_collateral_source *src;
    struct kms_attest_ctx *ctx;
    struct kms_attestation *att = make_att(g_sim, 0);
    struct kms_verified v;
    uint8_t *q = att->tdx_quote.p;

    sim_coll(g_dir, NULL, &c);
    src = src_of(&c, 0);
    ctx = make_ctx(g_sim, T0, src);
    CHECK_OK(kms_tdx_quote_verify_collateral(ctx, q, att->tdx_quote.len, &v)); /* warms caches */
    kms_verified_free(&v);
    q[636] ^= 1; /* quote signature (after the 4-byte auth size at 632) */
    CHECK_RC(kms_tdx_quote_verify_collateral(ctx, q, att->tdx_quote.len, &v),
             KMS_ERR_ATT_QUOTE_SIG);
    q[636] ^= 1;
    q[770 + 100] ^= 1; /* QE report body (636 + 64 + 64 + 2 + 4 = 770) */
    CHECK_RC(kms_tdx_quote_verify_collateral(ctx, q, att->tdx_quote.len, &v), KMS_ERR_ATT_QE_SIG);
    q[770 + 100] ^= 1;
    CHECK_OK(kms_tdx_quote_verify_collateral(ctx, q, att->tdx_quote.len, &v));
    kms_verified_free(&v);
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(src);
    kms_collateral_clear(&c);
}

/* ---------------------------------------------------------------- files */

/* Air-gapped: the set written as JSON loads back from a file and verifies; dcap-qvl's byte-array
 * form and PEM CRLs load too; malformed files are refused clearly. */
static void test_collateral_file(void)
{
    struct kms_collateral c;
    struct kms_collateral *sets = NULL;
    struct kms_collateral_source_opts so = {0};
    struct kms_collateral_source *src = NULL;
    struct kms_attest_ctx *ctx;
    struct kms_attestation *att = make_att(g_sim, 0);
    struct kms_verified v;
    char path[512];
    char *json = NULL;
    size_t n = 0;

    sim_coll(g_dir, NULL, &c);
    CHECK_OK(kms_collateral_to_json(&c, &json));
    snprintf(path, sizeof(path), "%s/collateral.json", g_dir);
    CHECK_OK(kms_file_write_atomic(path, json, strlen(json), 0644));
    so.collateral_file = path;
    CHECK_OK(kms_collateral_source_new(&so, &src));
    ctx = make_ctx(g_sim, T0, src);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    CHECK(strcmp(v.tcb_status, "UpToDate") == 0);
    kms_verified_free(&v);
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(src);
    free(json);

    /* dcap-qvl serde form: byte fields as arrays of numbers */
    {
        struct kms_buf b = {0};
        char num[8];

        CHECK_OK(kms_buf_put_str(&b, "[{\"tcb_info_signature\":["));
        for (size_t i = 0; i < c.tcb_info_signature.len; i++) {
            snprintf(num, sizeof(num), "%s%u", i ? "," : "", c.tcb_info_signature.p[i]);
            CHECK_OK(kms_buf_put_str(&b, num));
        }
        CHECK_OK(kms_buf_put_str(&b, "],\"x\":0}]"));
        CHECK_RC(kms_collateral_parse((const char *)b.data, b.len, &sets, &n),
                 KMS_ERR_ATT_COLLATERAL);
        CHECK_DETAIL("lacks \"pck_crl_issuer_chain\"");
        kms_buf_free(&b);
    }
    {
        struct kms_collateral c2;
        char *j2 = NULL;
        json_t *o;
        json_t *arr = json_array();
        BIO *bio = BIO_new(BIO_s_mem());
        const unsigned char *p = c.pck_crl.p;
        X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)c.pck_crl.len);
        char *pem;
        long pl;

        CHECK_OK(kms_collateral_to_json(&c, &j2));
        o = json_loads(j2, 0, NULL);
        for (size_t i = 0; i < c.qe_identity_signature.len; i++)
            json_array_append_new(arr, json_integer(c.qe_identity_signature.p[i]));
        json_object_set_new(o, "qe_identity_signature", arr);
        PEM_write_bio_X509_CRL(bio, crl);
        pl = BIO_get_mem_data(bio, &pem);
        json_object_set_new(o, "pck_crl", json_stringn(pem, (size_t)pl));
        free(j2);
        j2 = json_dumps(o, 0);
        CHECK_OK(kms_collateral_parse(j2, strlen(j2), &sets, &n));
        CHECK(n == 1);
        CHECK(n == 1 && sets[0].qe_identity_signature.len == 64 &&
              memcmp(sets[0].qe_identity_signature.p, c.qe_identity_signature.p, 64) == 0);
        CHECK(n == 1 && sets[0].pck_crl.len == c.pck_crl.len &&
              memcmp(sets[0].pck_crl.p, c.pck_crl.p, c.pck_crl.len) == 0);
        CHECK(n == 1 && verify_c(&sets[0], T0, &v) == 0);
        kms_verified_free(&v);
        kms_collateral_free(sets, n);
        sets = NULL;
        (void)c2;
        X509_CRL_free(crl);
        BIO_free(bio);
        json_decref(o);
        free(j2);
    }

    CHECK_RC(kms_collateral_parse("{not json", 9, &sets, &n), KMS_ERR_ATT_COLLATERAL);
    CHECK_DETAIL("not JSON");
    so.collateral_file = "/nonexistent/collateral.json";
    CHECK_RC(kms_collateral_source_new(&so, &src), KMS_ERR_ATT_COLLATERAL);
    CHECK_DETAIL("cannot read collateral file");
    kms_att_free(att);
    kms_collateral_clear(&c);
}

/* Several sets: the one for this FMSPC is used; none for it and no PCCS → clear error. */
static void test_set_selection(void)
{
    struct kms_sim_collateral_opts o = {.now = T0, .fmspc_hex = "00906ed50000"};
    struct kms_collateral good;
    struct kms_collateral other;
    struct kms_collateral_source *src = src_of(NULL, 0);
    struct kms_attest_ctx *ctx = make_ctx(g_sim, T0, src);
    struct kms_attestation *att = make_att(g_sim, 0);
    struct kms_verified v;

    sim_coll(g_dir, NULL, &good);
    sim_coll(g_dir, &o, &other);
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_COLLATERAL);
    CHECK_DETAIL("no TDX collateral for FMSPC 90c06f000000");
    CHECK_OK(kms_collateral_source_add(src, &other));
    o.fmspc_hex = "00a06f000000";
    kms_collateral_clear(&other);
    sim_coll(g_dir, &o, &other);
    CHECK_OK(kms_collateral_source_add(src, &other));
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_COLLATERAL);
    CHECK_DETAIL("no TDX collateral for FMSPC 90c06f000000");
    CHECK_OK(kms_collateral_source_add(src, &good));
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(src);
    kms_collateral_clear(&good);
    kms_collateral_clear(&other);
}

/* ---------------------------------------------------------------- caches */

/* A second verification hits both caches; past nextUpdate the cached set is never served (the
 * file's set is re-verified and found expired); flush empties the caches. */
static void test_cache_hit_and_expiry(void)
{
    struct kms_sim_collateral_opts o = {
        .now = T0, .next_update = T0 + DAY, .crl_next_update = T0 + 10 * DAY};
    struct kms_collateral c;
    struct kms_collateral_source *src;
    struct kms_attest_ctx *ctx;
    struct kms_attestation *att = make_att(g_sim, 0);
    struct kms_collateral_stats st;
    struct kms_verified v;

    sim_coll(g_dir, &o, &c);
    src = src_of(&c, 0);
    ctx = make_ctx(g_sim, T0, src);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
    kms_collateral_source_stats(src, &st);
    CHECK(st.coll_misses == 1 && st.coll_hits == 1);
    CHECK(st.chain_misses == 1 && st.chain_hits == 1);
    CHECK(st.coll_entries == 1 && st.chain_entries == 1);

    kms_attest_ctx_set_time(ctx, T0 + DAY - 1); /* still inside: hit */
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
    kms_attest_ctx_set_time(ctx, T0 + DAY + 1); /* past nextUpdate */
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_EXPIRED);
    CHECK_DETAIL("TCB info expired");
    kms_collateral_source_stats(src, &st);
    CHECK(st.coll_hits == 2 && st.coll_misses == 2);
    CHECK(st.coll_entries == 0); /* the expired entry was dropped */

    kms_attest_ctx_set_time(ctx, T0);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
    kms_collateral_source_flush(src);
    kms_collateral_source_stats(src, &st);
    CHECK(st.coll_entries == 0 && st.chain_entries == 0);
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(src);
    kms_collateral_clear(&c);
}

/* A chain cached for one ctx is not accepted by a ctx that does not pin its root; the caches
 * are bounded. */
static void test_cache_roots_and_bounds(void)
{
    struct kms_collateral c;
    struct kms_collateral c2;
    struct kms_collateral_source_opts so = {.max_entries = 1, .max_chains = 1};
    struct kms_collateral_source *src = NULL;
    struct kms_attest_ctx *ctx;
    struct kms_attest_ctx *ctx_other;
    struct kms_attest_ctx *ctx_both;
    struct kms_attestation *att = make_att(g_sim, 0);
    struct kms_attestation *att2 = make_att(g_sim2, 0);
    struct kms_collateral_stats st;
    struct kms_verified v;

    sim_coll(g_dir, NULL, &c);
    sim_coll(g_dir2, NULL, &c2);
    CHECK_OK(kms_collateral_source_new(&so, &src));
    CHECK_OK(kms_collateral_source_add(src, &c));
    ctx = make_ctx(g_sim, T0, src);
    ctx_other = make_ctx(g_sim2, T0, src);
    CHECK_OK(kms_attest_verify(ctx, att, &v)); /* caches g_sim's chain */
    kms_verified_free(&v);
    CHECK_RC(kms_attest_verify(ctx_other, att, &v), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("PCK chain does not verify to the pinned root");

    /* both roots pinned: two platforms alternate through one-entry caches */
    ctx_both = make_ctx(g_sim, T0, src);
    CHECK_OK(kms_attest_ctx_add_root(ctx_both, KMS_ROOT_TDX, kms_sim_root(g_sim2), 1));
    kms_collateral_source_free(src);
    src = NULL;
    CHECK_OK(kms_collateral_source_new(&so, &src));
    CHECK_OK(kms_collateral_source_add(src, &c));
    CHECK_OK(kms_collateral_source_add(src, &c2)); /* same FMSPC: the first matching set wins */
    kms_attest_ctx_set_collateral_source(ctx_both, src);
    CHECK_OK(kms_attest_verify(ctx_both, att, &v));
    kms_verified_free(&v);
    /* g_sim2's platform finds g_sim's set first, signed to another root */
    CHECK_RC(kms_attest_verify(ctx_both, att2, &v), KMS_ERR_ATT_COLLATERAL_SIG);
    kms_collateral_source_stats(src, &st);
    CHECK(st.chain_entries == 1 && st.coll_entries <= 1);
    CHECK(st.chain_misses == 2);
    kms_att_free(att);
    kms_att_free(att2);
    kms_attest_ctx_free(ctx);
    kms_attest_ctx_free(ctx_other);
    kms_attest_ctx_free(ctx_both);
    kms_collateral_source_free(src);
    kms_collateral_clear(&c);
    kms_collateral_clear(&c2);
}

struct thr_arg {
    struct kms_attest_ctx *ctx;
    struct kms_attestation *att;
    int failures;
};

static void *thr_main(void *p)
{
    struct thr_arg *a = p;

    for (int i = 0; i < 40; i++) {
        struct kms_verified v;

        if (kms_attest_verify(a->ctx, a->att, &v) != 0 || strcmp(v.tcb_status, "UpToDate") != 0)
            a->failures++;
        kms_verified_free(&v);
    }
    return NULL;
}

/* Concurrent verifications through one shared source (tiny caches force evictions). */
static void test_cache_threads(void)
{
    struct kms_collateral c;
    struct kms_collateral_source_opts so = {.max_entries = 1, .max_chains = 1};
    struct kms_collateral_source *src = NULL;
    struct kms_attest_ctx *ctx;
    struct kms_attestation *att = make_att(g_sim, 0);
    pthread_t th[4];
    struct thr_arg args[4];

    sim_coll(g_dir, NULL, &c);
    CHECK_OK(kms_collateral_source_new(&so, &src));
    CHECK_OK(kms_collateral_source_add(src, &c));
    ctx = make_ctx(g_sim, T0, src);
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thr_arg){.ctx = ctx, .att = att};
        CHECK(pthread_create(&th[i], NULL, thr_main, &args[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].failures == 0);
    }
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(src);
    kms_collateral_clear(&c);
}

/* ---------------------------------------------------------------- PCCS */

struct pccs {
    struct MHD_Daemon *d;
    unsigned short port;
    pthread_mutex_t mu;
    struct kms_collateral c;
    int delay_ms;
    int requests;
    char last_fmspc[32];
    char last_ca[32];
};

static char *url_encode(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(n * 3 + 1);
    size_t j = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            o[j++] = (char)ch;
        } else {
            snprintf(o + j, 4, "%%%02X", ch);
            j += 3;
        }
    }
    o[j] = '\0';
    return o;
}

static enum MHD_Result pccs_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_size, void **state)
{
    struct pccs *s = cls;
    struct MHD_Response *r = NULL;
    char *body = NULL;
    size_t body_len = 0;
    char *hdr = NULL;
    const char *hdr_name = NULL;
    enum MHD_Result ret;
    int delay;

    (void)method;
    (void)version;
    (void)upload_data;
    (void)upload_size;
    (void)state;
    pthread_mutex_lock(&s->mu);
    s->requests++;
    delay = s->delay_ms;
    if (strcmp(url, "/tdx/certification/v4/tcb") == 0) {
        const char *f = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "fmspc");
        char *hx = kms_hex_dup(s->c.tcb_info_signature.p, s->c.tcb_info_signature.len, 0);

        snprintf(s->last_fmspc, sizeof(s->last_fmspc), "%s", f != NULL ? f : "");
        body_len = strlen(s->c.tcb_info) + 256;
        body = malloc(body_len);
        body_len = (size_t)snprintf(body, body_len, "{\"tcbInfo\":%s,\"signature\":\"%s\"}",
                                    s->c.tcb_info, hx);
        free(hx);
        hdr_name = "TCB-Info-Issuer-Chain";
        hdr = url_encode(s->c.tcb_info_issuer_chain);
    } else if (strcmp(url, "/tdx/certification/v4/qe/identity") == 0) {
        char *hx = kms_hex_dup(s->c.qe_identity_signature.p, s->c.qe_identity_signature.len, 0);

        body_len = strlen(s->c.qe_identity) + 256;
        body = malloc(body_len);
        body_len = (size_t)snprintf(body, body_len, "{\"enclaveIdentity\":%s,\"signature\":\"%s\"}",
                                    s->c.qe_identity, hx);
        free(hx);
        hdr_name = "SGX-Enclave-Identity-Issuer-Chain";
        hdr = url_encode(s->c.qe_identity_issuer_chain);
    } else if (strcmp(url, "/sgx/certification/v4/pckcrl") == 0) {
        const char *ca = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "ca");

        snprintf(s->last_ca, sizeof(s->last_ca), "%s", ca != NULL ? ca : "");
        body = malloc(s->c.pck_crl.len);
        memcpy(body, s->c.pck_crl.p, s->c.pck_crl.len);
        body_len = s->c.pck_crl.len;
        hdr_name = "SGX-PCK-CRL-Issuer-Chain";
        hdr = url_encode(s->c.pck_crl_issuer_chain);
    } else if (strcmp(url, "/sgx/certification/v4/rootcacrl") == 0) {
        body = kms_hex_dup(s->c.root_ca_crl.p, s->c.root_ca_crl.len, 0); /* PCCS answers hex */
        body_len = strlen(body);
    }
    pthread_mutex_unlock(&s->mu);
    if (delay > 0)
        usleep((useconds_t)delay * 1000u);
    if (body == NULL) {
        r = MHD_create_response_from_buffer(9, (void *)"not found", MHD_RESPMEM_PERSISTENT);
        ret = MHD_queue_response(conn, MHD_HTTP_NOT_FOUND, r);
    } else {
        r = MHD_create_response_from_buffer(body_len, body, MHD_RESPMEM_MUST_FREE);
        if (hdr_name != NULL)
            MHD_add_response_header(r, hdr_name, hdr);
        ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    }
    MHD_destroy_response(r);
    free(hdr);
    return ret;
}

static void pccs_start(struct pccs *s, const struct kms_collateral *c)
{
    const union MHD_DaemonInfo *info;

    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    if (kms_collateral_copy(&s->c, c) < 0)
        exit(2);
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                            NULL, NULL, pccs_handler, s, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1,
                            MHD_OPTION_END);
    if (s->d == NULL)
        exit(2);
    info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info->port;
}

static void pccs_set(struct pccs *s, const struct kms_collateral *c)
{
    pthread_mutex_lock(&s->mu);
    kms_collateral_clear(&s->c);
    if (kms_collateral_copy(&s->c, c) < 0)
        exit(2);
    pthread_mutex_unlock(&s->mu);
}

static void pccs_stop(struct pccs *s)
{
    MHD_stop_daemon(s->d);
    kms_collateral_clear(&s->c);
    pthread_mutex_destroy(&s->mu);
}

/* kms_collateral_fetch reads all four endpoints (issuer chains from URL-encoded headers, hex
 * root CRL) into the same set the PCCS serves; a PCCS URL given with its /sgx/certification/v4
 * suffix works too. */
static void test_pccs_fetch(void)
{
    struct kms_collateral c;
    struct kms_collateral got;
    struct pccs s;
    char url[128];

    sim_coll(g_dir, NULL, &c);
    pccs_start(&s, &c);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/sgx/certification/v4/", s.port);
    CHECK_OK(kms_collateral_fetch(url, "90c06f000000", "platform", 5000, &got));
    CHECK(got.tcb_info != NULL && strcmp(got.tcb_info, c.tcb_info) == 0);
    CHECK(got.qe_identity != NULL && strcmp(got.qe_identity, c.qe_identity) == 0);
    CHECK(got.tcb_info_issuer_chain != NULL &&
          strcmp(got.tcb_info_issuer_chain, c.tcb_info_issuer_chain) == 0);
    CHECK(got.pck_crl_issuer_chain != NULL &&
          strcmp(got.pck_crl_issuer_chain, c.pck_crl_issuer_chain) == 0);
    CHECK(got.root_ca_crl.len == c.root_ca_crl.len &&
          memcmp(got.root_ca_crl.p, c.root_ca_crl.p, c.root_ca_crl.len) == 0);
    CHECK(got.pck_crl.len == c.pck_crl.len &&
          memcmp(got.pck_crl.p, c.pck_crl.p, c.pck_crl.len) == 0);
    CHECK(got.tcb_info_signature.len == 64 &&
          memcmp(got.tcb_info_signature.p, c.tcb_info_signature.p, 64) == 0);
    CHECK(strcmp(s.last_fmspc, "90c06f000000") == 0 && strcmp(s.last_ca, "platform") == 0);
    kms_collateral_clear(&got);
    CHECK_RC(kms_collateral_fetch(url, "90c06f", "platform", 5000, &got), KMS_ERR_INVAL);
    pccs_stop(&s);
    kms_collateral_clear(&c);
}

/* Verification through a PCCS: fetched once, then served from the cache until nextUpdate, then
 * fetched again; a PCCS that serves another FMSPC's TCB info is caught. */
static void test_pccs_verify_and_refresh(void)
{
    struct kms_sim_collateral_opts o = {.now = T0, .next_update = T0 + 100};
    struct kms_collateral c;
    struct pccs s;
    struct kms_collateral_source_opts so = {.timeout_ms = 5000};
    struct kms_collateral_source *src = NULL;
    struct kms_attest_ctx *ctx;
    struct kms_attestation *att = make_att(g_sim, 0);
    struct kms_collateral_stats st;
    struct kms_verified v;
    char url[128];

    sim_coll(g_dir, &o, &c);
    pccs_start(&s, &c);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", s.port);
    so.pccs_url = url;
    CHECK_OK(kms_collateral_source_new(&so, &src));
    ctx = make_ctx(g_sim, T0, src);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    CHECK(strcmp(v.tcb_status, "UpToDate") == 0);
    kms_verified_free(&v);
    kms_attest_ctx_set_time(ctx, T0 + 50);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
    kms_collateral_source_stats(src, &st);
    CHECK(st.fetches == 1 && s.requests == 4);

    /* past nextUpdate: a fresh set is fetched, never the cached one */
    kms_collateral_clear(&c);
    o.now = T0 + 200;
    o.next_update = T0 + 1000;
    sim_coll(g_dir, &o, &c);
    pccs_set(&s, &c);
    kms_attest_ctx_set_time(ctx, T0 + 200);
    CHECK_OK(kms_attest_verify(ctx, att, &v));
    kms_verified_free(&v);
    kms_collateral_source_stats(src, &st);
    CHECK(st.fetches == 2 && s.requests == 8);

    /* the PCCS answers with TCB info for another FMSPC */
    kms_collateral_source_flush(src);
    kms_collateral_clear(&c);
    o.fmspc_hex = "00906ed50000";
    sim_coll(g_dir, &o, &c);
    pccs_set(&s, &c);
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_COLLATERAL);
    CHECK_DETAIL("FMSPC mismatch");
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(src);
    pccs_stop(&s);
    kms_collateral_clear(&c);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* PCCS down (nothing listening) or slow (answers after the timeout): a clear error, within the
 * timeout. */
static void test_pccs_down_and_slow(void)
{
    struct kms_collateral c;
    struct kms_collateral got;
    struct pccs s;
    struct kms_collateral_source_opts so = {.timeout_ms = 300};
    struct kms_collateral_source *src = NULL;
    struct kms_attest_ctx *ctx;
    struct kms_attestation *att = make_att(g_sim, 0);
    struct kms_verified v;
    char url[128];
    unsigned short dead_port;
    double t;

    sim_coll(g_dir, NULL, &c);
    pccs_start(&s, &c);
    dead_port = s.port;
    pccs_stop(&s); /* the port is now closed */
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", dead_port);
    CHECK_RC(kms_collateral_fetch(url, "90c06f000000", "platform", 300, &got), KMS_ERR_NET);
    CHECK_DETAIL("PCCS request");
    so.pccs_url = url;
    CHECK_OK(kms_collateral_source_new(&so, &src));
    ctx = make_ctx(g_sim, T0, src);
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_COLLATERAL);
    CHECK_DETAIL("TDX collateral unavailable");
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(src);
    src = NULL;

    pccs_start(&s, &c);
    s.delay_ms = 1500;
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", s.port);
    t = now_s();
    CHECK_RC(kms_collateral_fetch(url, "90c06f000000", "platform", 300, &got), KMS_ERR_TIMEOUT);
    CHECK_DETAIL("did not answer");
    CHECK_DETAIL("within 300 ms");
    CHECK(now_s() - t < 1.2);
    so.pccs_url = url;
    CHECK_OK(kms_collateral_source_new(&so, &src));
    ctx = make_ctx(g_sim, T0, src);
    t = now_s();
    CHECK_RC(kms_attest_verify(ctx, att, &v), KMS_ERR_ATT_COLLATERAL);
    CHECK_DETAIL("within 300 ms");
    CHECK(now_s() - t < 1.2);
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(src);
    pccs_stop(&s);
    kms_att_free(att);
    kms_collateral_clear(&c);
}

/* The real Intel-signed fixture quote: its PCK certificate's FMSPC (b0c06f000000) and CA
 * (platform) are what the PCCS is asked for, and collateral signed to any other root than the
 * Intel root of the PCK chain is refused. */
static void test_real_quote_asks_pccs(void)
{
    struct kms_collateral c;
    struct pccs s;
    struct kms_collateral_source_opts so = {.timeout_ms = 5000};
    struct kms_collateral_source *src = NULL;
    struct kms_attest_ctx *ctx = kms_attest_ctx_new();
    X509 *root = kms_attest_intel_root();
    struct kms_verified v;
    uint8_t *q = NULL;
    size_t qlen = 0;
    char url[128];

    CHECK_OK(kms_file_read(kms_test_fixture("tdx/quote-v4.bin"), 1u << 20, &q, &qlen));
    sim_coll(g_dir, NULL, &c);
    pccs_start(&s, &c);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", s.port);
    so.pccs_url = url;
    CHECK_OK(kms_collateral_source_new(&so, &src));
    CHECK_OK(kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, root, 0));
    kms_attest_ctx_set_time(ctx, (time_t)1780272000); /* inside the fixture leaf's validity */
    kms_attest_ctx_set_collateral_source(ctx, src);
    CHECK_RC(kms_tdx_quote_verify_collateral(ctx, q, qlen, &v), KMS_ERR_ATT_COLLATERAL_SIG);
    CHECK_DETAIL("root CA CRL is not issued by the CA of the verified chain");
    CHECK(strcmp(s.last_fmspc, "b0c06f000000") == 0);
    CHECK(strcmp(s.last_ca, "platform") == 0);
    X509_free(root);
    free(q);
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(src);
    pccs_stop(&s);
    kms_collateral_clear(&c);
}

static void rm_dir(const char *d)
{
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", d);
}

int main(void)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/kms-coll-XXXXXX");
    snprintf(g_dir2, sizeof(g_dir2), "/tmp/kms-coll2-XXXXXX");
    if (mkdtemp(g_dir) == NULL || mkdtemp(g_dir2) == NULL || kms_sim_open(g_dir, &g_sim) < 0 ||
        kms_sim_open(g_dir2, &g_sim2) < 0) {
        fprintf(stderr, "setup: %s\n", kms_err_detail());
        return 2;
    }
    RUN(test_up_to_date);
    RUN(test_no_source_no_status);
    RUN(test_out_of_date_advisories);
    RUN(test_all_statuses);
    RUN(test_qe_and_module_merge);
    RUN(test_tcb_revoked);
    RUN(test_below_all_levels);
    RUN(test_crl_revocation);
    RUN(test_crl_signature_and_expiry);
    RUN(test_expired_collateral);
    RUN(test_collateral_signatures);
    RUN(test_fmspc_pceid_mismatch);
    RUN(test_qe_identity);
    RUN(test_module_identity);
    RUN(test_debug_td_still_refused);
    RUN(test_v5_collateral);
    RUN(test_v5_service_td);
    RUN(test_real_quotes_with_collateral);
    RUN(test_quote_checks_on_collateral_path);
    RUN(test_collateral_file);
    RUN(test_set_selection);
    RUN(test_cache_hit_and_expiry);
    RUN(test_cache_roots_and_bounds);
    RUN(test_cache_threads);
    RUN(test_pccs_fetch);
    RUN(test_pccs_verify_and_refresh);
    RUN(test_pccs_down_and_slow);
    RUN(test_real_quote_asks_pccs);
    kms_sim_free(g_sim);
    kms_sim_free(g_sim2);
    rm_dir(g_dir);
    rm_dir(g_dir2);
    TEST_MAIN_END();
}
