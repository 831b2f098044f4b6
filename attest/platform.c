/*
 * Evidence producers by platform (attest.h "evidence" section): TEE detection as the
 * reference does (C:dstack-types Platform::detect, attestation-reference.md §1.1, §2.1), the
 * simulated platforms (sim-tdx, sim-nitro, sim-gcp) and the hardware ones (tdx, gcp-tdx).
 *
 * sim-gcp: the TDX half is a kms_sim quote; the vTPM half is a software TPM2_Quote in the real
 * formats, signed by a fresh P-256 AK whose certificate chains to sim-gcp-root.pem in the
 * simulation directory, so the production verifier (verify.c + tpm.c) checks it unchanged.
 */
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attest/dstack_agent.h"
#include "attest/events.h"
#include "attest/internal.h"
#include "attest/nitro.h"
#include "attest/nsm.h"
#include "attest/scale.h"
#include "attest/sim.h"
#include "attest/sim_files.h"
#include "attest/tdx.h"
#include "attest/tpm.h"
#include "common/buf.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/log.h"

#define PLAT_LOG_MAX (4u * 1024u * 1024u) /* TCG logs and the runtime event log */
#define PLAT_PATH_MAX 4096u
#define SIM_GCP_ROOT_CN "kmsd SIMULATION GCP EK/AK Root - NOT FOR PRODUCTION"
#define TPM_ST_ATTEST_QUOTE 0x8018u
#define TPM_GENERATED_VALUE 0xff544347u
#define TPM_ALG_ECDSA 0x0018u

struct kms_platform {
    enum kms_platform_kind kind;
    char *sim_dir;
    struct kms_sim *sim; /* sim-tdx, sim-gcp */
    struct kms_platform_paths paths;
    uint8_t nitro_pcrs[3][48];
};

/* ---------------------------------------------------------------- names, detection */

static const struct {
    enum kms_platform_kind kind;
    const char *name;
} kind_names[] = {
    {KMS_PLATFORM_NONE, "none"},
    {KMS_PLATFORM_SIM_TDX, "sim-tdx"},
    {KMS_PLATFORM_SIM_NITRO, "sim-nitro"},
    {KMS_PLATFORM_SIM_GCP, "sim-gcp"},
    {KMS_PLATFORM_TDX, "tdx"},
    {KMS_PLATFORM_GCP_TDX, "gcp-tdx"},
    {KMS_PLATFORM_NITRO, "nitro"},
    {KMS_PLATFORM_DSTACK, "dstack"},
};

const char *kms_platform_kind_name(enum kms_platform_kind k)
{
    for (size_t i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++) {
        if (kind_names[i].kind == k)
            return kind_names[i].name;
    }
    return "unknown";
}

int kms_platform_kind_parse(const char *s, enum kms_platform_kind *out)
{
    if (s != NULL && strcmp(s, "sim") == 0) {
        *out = KMS_PLATFORM_SIM_TDX;
        return 0;
    }
    for (size_t i = 1; s != NULL && i < sizeof(kind_names) / sizeof(kind_names[0]); i++) {
        if (strcmp(s, kind_names[i].name) == 0) {
            *out = kind_names[i].kind;
            return 0;
        }
    }
    return kms_err_set(KMS_ERR_INVAL,
                       "unknown TEE \"%s\": use sim (= sim-tdx), sim-nitro, sim-gcp, tdx, "
                       "gcp-tdx, nitro or dstack",
                       s != NULL ? s : "");
}

void kms_platform_paths_default(struct kms_platform_paths *p)
{
    memset(p, 0, sizeof(*p));
    p->nsm_dev = "/dev/nsm";
    p->tdx_guest_dev = KMS_TDX_GUEST_DEV;
    p->tsm_report_dir = KMS_TSM_REPORT_DIR;
    p->dmi_product_name = "/sys/class/dmi/id/product_name";
    p->ccel = "/sys/firmware/acpi/tables/data/CCEL";
    p->tpm_event_log = "/sys/kernel/security/tpm0/binary_bios_measurements";
    p->runtime_events_log = "/run/log/dstack/runtime_events.log";
    p->tcti = NULL;
    p->dstack_socket = KMS_DSTACK_SOCKET;
    p->dstack_timeout_ms = 0;
}

static int path_exists(const char *p)
{
    struct stat st;

    return p != NULL && stat(p, &st) == 0;
}

static int socket_exists(const char *p)
{
    struct stat st;

    return p != NULL && stat(p, &st) == 0 && S_ISSOCK(st.st_mode);
}

static int is_gce(const char *dmi)
{
    char buf[128];
    FILE *f;
    size_t n;

    if (dmi == NULL)
        return 0;
    f = fopen(dmi, "r");
    if (f == NULL)
        return 0;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return strcmp(buf, "Google Compute Engine") == 0;
}

enum kms_platform_kind kms_platform_detect(const struct kms_platform_paths *p)
{
    struct kms_platform_paths def;

    if (p == NULL) {
        kms_platform_paths_default(&def);
        p = &def;
    }
    if (socket_exists(p->dstack_socket))
        return KMS_PLATFORM_DSTACK;
    if (path_exists(p->nsm_dev))
        return KMS_PLATFORM_NITRO;
    if (path_exists(p->tdx_guest_dev) && is_gce(p->dmi_product_name))
        return KMS_PLATFORM_GCP_TDX;
    if (path_exists(p->tdx_guest_dev) || path_exists(p->tsm_report_dir))
        return KMS_PLATFORM_TDX;
    return KMS_PLATFORM_NONE;
}

/* ---------------------------------------------------------------- sim-gcp root */

static int gen_gcp_root(void *arg, X509 **root, EVP_PKEY **key)
{
    (void)arg;
    return kms_vtpm_test_ca(SIM_GCP_ROOT_CN, NULL, NULL, root, key);
}

/* sim-gcp-root.{pem,key} in the simulation directory, created on first use. */
static const struct kms_simf_pair gcp_root = {
    .cert_name = "sim-gcp-root.pem",
    .key_name = "sim-gcp-root.key",
    .lock_name = ".gcp-lock",
    .cert_mode = 0600,
    .gen = gen_gcp_root,
};

/* ---------------------------------------------------------------- sim GCP vTPM quote */

static void extend256(uint8_t pcr[32], const uint8_t digest[32])
{
    uint8_t cat[64];

    memcpy(cat, pcr, 32);
    memcpy(cat + 32, digest, 32);
    SHA256(cat, sizeof(cat), pcr);
}

/* Synthetic GCE firmware log: two PCR0 events; PCR2 = separator, GPT, UKI, kernel (the order
 * attestation-reference.md §2.4 describes, so the UKI is the third PCR2 event). */
static int sim_firmware_log(const uint8_t uki[32], struct kms_tpm_quote *q, uint8_t pcr0[32],
                            uint8_t pcr2[32])
{
    static const uint8_t sep[4] = {0, 0, 0, 0};
    uint8_t d[6][32];
    static const uint32_t idx[6] = {0, 0, 2, 2, 2, 2};
    int rc = 0;

    SHA256((const uint8_t *)"kmsd-sim-gcp-ovmf", 17, d[0]);
    SHA256((const uint8_t *)"kmsd-sim-gcp-nonhostinfo", 24, d[1]);
    SHA256(sep, sizeof(sep), d[2]);
    SHA256((const uint8_t *)"kmsd-sim-gcp-gpt", 16, d[3]);
    memcpy(d[4], uki, 32);
    SHA256((const uint8_t *)"kmsd-sim-gcp-kernel", 19, d[5]);
    memset(pcr0, 0, 32);
    memset(pcr2, 0, 32);
    q->events = calloc(6, sizeof(*q->events));
    KMS_GUARD_PTR(q->events);
    for (size_t i = 0; i < 6; i++) {
        q->events[i].pcr_index = idx[i];
        KMS_GUARD(kms_bytes_dup(&q->events[i].digest, d[i], 32));
        q->n_events = i + 1;
        extend256(idx[i] == 0 ? pcr0 : pcr2, d[i]);
    }
out:
    return rc;
}

static int put_tpm2b(struct kms_buf *b, const uint8_t *p, size_t n)
{
    int rc = 0;

    KMS_GUARD(kms_buf_put_u16be(b, (uint16_t)n));
    KMS_GUARD(kms_buf_put(b, p, n));
out:
    return rc;
}

/* TPMS_ATTEST of a quote over sha256:{0,2,14}. */
static int build_tpms_attest(EVP_PKEY *ak, const uint8_t *qd, size_t qd_len,
                             const uint8_t pcr[3][32], struct kms_buf *m)
{
    static const uint8_t select[3] = {0x05, 0x40, 0x00}; /* PCR 0, 2 | PCR 14 */
    uint8_t name[34], digest[32], cat[96];
    uint8_t *spki = NULL;
    int spki_len;
    int rc = 0;

    KMS_ENSURE(qd_len <= 64, KMS_ERR_INVAL, "qualifying data of %zu bytes (max 64)", qd_len);
    spki_len = i2d_PUBKEY(ak, &spki);
    KMS_ENSURE(spki_len > 0, KMS_ERR_CRYPTO, "cannot encode the AK public key");
    name[0] = 0x00; /* TPMT_HA: sha256 name algorithm */
    name[1] = 0x0b;
    SHA256(spki, (size_t)spki_len, name + 2);
    memcpy(cat, pcr[0], 32);
    memcpy(cat + 32, pcr[1], 32);
    memcpy(cat + 64, pcr[2], 32);
    SHA256(cat, sizeof(cat), digest);
    KMS_GUARD(kms_buf_put_u32be(m, TPM_GENERATED_VALUE));
    KMS_GUARD(kms_buf_put_u16be(m, TPM_ST_ATTEST_QUOTE));
    KMS_GUARD(put_tpm2b(m, name, sizeof(name)));
    KMS_GUARD(put_tpm2b(m, qd, qd_len));
    KMS_GUARD(kms_buf_put_u64be(m, (uint64_t)time(NULL) * 1000u)); /* clock */
    KMS_GUARD(kms_buf_put_u32be(m, 1));                            /* resetCount */
    KMS_GUARD(kms_buf_put_u32be(m, 0));                            /* restartCount */
    KMS_GUARD(kms_buf_put_u8(m, 1));                               /* safe */
    KMS_GUARD(kms_buf_put_u64be(m, 0x2023071200000000ull));        /* firmwareVersion */
    KMS_GUARD(kms_buf_put_u32be(m, 1));
    KMS_GUARD(kms_buf_put_u16be(m, KMS_TPM_ALG_SHA256));
    KMS_GUARD(kms_buf_put_u8(m, sizeof(select)));
    KMS_GUARD(kms_buf_put(m, select, sizeof(select)));
    KMS_GUARD(put_tpm2b(m, digest, sizeof(digest)));
out:
    OPENSSL_free(spki);
    return rc;
}

/* TPMT_SIGNATURE: ECDSA, SHA-256, r and s as 32-byte TPM2B_ECC_PARAMETERs. */
static int sign_ecdsa(EVP_PKEY *ak, const uint8_t *msg, size_t len, struct kms_buf *sig)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t *der = NULL;
    const uint8_t *q;
    size_t der_len = 0;
    ECDSA_SIG *es = NULL;
    const BIGNUM *r, *s;
    uint8_t rb[32], sb[32];
    int rc = 0;

    KMS_GUARD_PTR(md);
    KMS_GUARD_OSSL(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, ak), "EVP_DigestSignInit");
    KMS_GUARD_OSSL(EVP_DigestSign(md, NULL, &der_len, msg, len), "EVP_DigestSign");
    der = OPENSSL_malloc(der_len);
    KMS_GUARD_PTR(der);
    KMS_GUARD_OSSL(EVP_DigestSign(md, der, &der_len, msg, len), "EVP_DigestSign");
    q = der;
    es = d2i_ECDSA_SIG(NULL, &q, (long)der_len);
    KMS_ENSURE(es != NULL, KMS_ERR_CRYPTO, "cannot decode the ECDSA signature");
    ECDSA_SIG_get0(es, &r, &s);
    KMS_ENSURE(BN_bn2binpad(r, rb, 32) == 32 && BN_bn2binpad(s, sb, 32) == 32, KMS_ERR_CRYPTO,
               "ECDSA signature component too long");
    KMS_GUARD(kms_buf_put_u16be(sig, TPM_ALG_ECDSA));
    KMS_GUARD(kms_buf_put_u16be(sig, KMS_TPM_ALG_SHA256));
    KMS_GUARD(put_tpm2b(sig, rb, 32));
    KMS_GUARD(put_tpm2b(sig, sb, 32));
out:
    ECDSA_SIG_free(es);
    OPENSSL_free(der);
    EVP_MD_CTX_free(md);
    return rc;
}

int kms_sim_gcp_tpm_quote(const char *sim_dir, const uint8_t *qd, size_t qd_len,
                          const struct kms_runtime_event *events, size_t n_events,
                          const uint8_t *os_image_hash, size_t os_image_hash_len,
                          struct kms_tpm_quote *q)
{
    static const uint32_t index[3] = {0, 2, 14};
    X509 *root = NULL;
    EVP_PKEY *root_key = NULL, *ak = NULL;
    struct kms_buf msg = {0}, sig = {0};
    uint8_t pcr[3][32];
    uint8_t uki[32];
    int rc = 0;

    KMS_GUARD(kms_simf_load_pair(sim_dir, &gcp_root, &root, &root_key));
    ak = EVP_EC_gen(SN_X9_62_prime256v1);
    KMS_ENSURE(ak != NULL, KMS_ERR_CRYPTO, "cannot generate the simulated AK");
    KMS_GUARD(kms_vtpm_issue_ak_cert(ak, root, root_key, &q->ak_cert.p, &q->ak_cert.len));
    if (os_image_hash != NULL && os_image_hash_len == 32)
        memcpy(uki, os_image_hash, 32);
    else
        SHA256((const uint8_t *)"kmsd-sim-gcp-uki", 16, uki);
    KMS_GUARD(sim_firmware_log(uki, q, pcr[0], pcr[1]));
    kms_att_replay(0, events, n_events, NULL, pcr[2]);
    KMS_GUARD(build_tpms_attest(ak, qd, qd_len, (const uint8_t(*)[32])pcr, &msg));
    KMS_GUARD(sign_ecdsa(ak, msg.data, msg.len, &sig));
    q->pcrs = calloc(3, sizeof(*q->pcrs));
    KMS_GUARD_PTR(q->pcrs);
    for (size_t i = 0; i < 3; i++) {
        q->pcrs[i].index = index[i];
        q->pcrs[i].algorithm = strdup("sha256");
        KMS_GUARD_PTR(q->pcrs[i].algorithm);
        KMS_GUARD(kms_bytes_dup(&q->pcrs[i].value, pcr[i], 32));
        q->n_pcrs = i + 1;
    }
    KMS_GUARD(kms_bytes_dup(&q->message, msg.data, msg.len));
    KMS_GUARD(kms_bytes_dup(&q->signature, sig.data, sig.len));
    q->platform = 1; /* gcp */
out:
    if (rc < 0)
        kms_tpm_quote_clear(q);
    kms_buf_free(&msg);
    kms_buf_free(&sig);
    X509_free(root);
    EVP_PKEY_free(root_key);
    EVP_PKEY_free(ak);
    return rc;
}

/* ---------------------------------------------------------------- open / free */

static const uint8_t default_nitro_pcr_seed[] = "kmsd-sim-nitro-pcr";

int kms_platform_open(const struct kms_platform_cfg *cfg, struct kms_platform **out)
{
    struct kms_platform *p = NULL;
    X509 *root = NULL;
    EVP_PKEY *key = NULL;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(cfg->kind != KMS_PLATFORM_NONE, KMS_ERR_ATT_UNSUPPORTED,
               "no evidence producer for TEE %s in this build", kms_platform_kind_name(cfg->kind));
    if (cfg->kind == KMS_PLATFORM_GCP_TDX)
        KMS_GUARD(kms_vtpm_available()); /* before anything else: builds without tpm2-tss */
    p = calloc(1, sizeof(*p));
    KMS_GUARD_PTR(p);
    p->kind = cfg->kind;
    if (cfg->paths != NULL)
        p->paths = *cfg->paths; /* strings are borrowed: they must outlive p (documented) */
    else
        kms_platform_paths_default(&p->paths);
    if (cfg->nitro_pcrs != NULL) {
        memcpy(p->nitro_pcrs, cfg->nitro_pcrs, sizeof(p->nitro_pcrs));
    } else {
        uint8_t h[64];

        for (int i = 0; i < 3; i++) {
            uint8_t in[sizeof(default_nitro_pcr_seed) + 1];

            memcpy(in, default_nitro_pcr_seed, sizeof(default_nitro_pcr_seed));
            in[sizeof(default_nitro_pcr_seed)] = (uint8_t)i;
            SHA512(in, sizeof(in), h);
            memcpy(p->nitro_pcrs[i], h, 48);
        }
    }
    switch (p->kind) {
    case KMS_PLATFORM_SIM_TDX:
    case KMS_PLATFORM_SIM_GCP:
    case KMS_PLATFORM_SIM_NITRO:
        KMS_ENSURE(cfg->sim_dir != NULL && cfg->sim_dir[0] != '\0', KMS_ERR_INVAL,
                   "TEE %s needs a simulation directory (--sim-dir)",
                   kms_platform_kind_name(p->kind));
        p->sim_dir = strdup(cfg->sim_dir);
        KMS_GUARD_PTR(p->sim_dir);
        if (p->kind != KMS_PLATFORM_SIM_NITRO)
            KMS_GUARD(kms_sim_open(p->sim_dir, &p->sim));
        if (p->kind == KMS_PLATFORM_SIM_GCP) {
            KMS_GUARD(kms_simf_load_pair(p->sim_dir, &gcp_root, &root, &key));
        } else if (p->kind == KMS_PLATFORM_SIM_NITRO) {
            struct kms_attestation *att = NULL;
            uint8_t rd[64] = {0};

            /* issues one throw-away document so that sim-nitro-root.pem exists before a
             * verifier looks for it */
            KMS_GUARD(kms_sim_nitro_attest(p->sim_dir, (const uint8_t(*)[48])p->nitro_pcrs, rd,
                                           NULL, &att));
            kms_att_free(att);
        }
        break;
    case KMS_PLATFORM_DSTACK: {
        json_t *info = NULL;
        const char *name, *cloud;

        /* fail at start, not at the first attestation, when the agent is absent or mute */
        KMS_GUARD(kms_dstack_agent_info(p->paths.dstack_socket, p->paths.dstack_timeout_ms, &info));
        name = json_string_value(json_object_get(info, "app_name"));
        cloud = json_string_value(json_object_get(info, "cloud_product"));
        KMS_INFO("dstack guest agent at %s: app %s, app_id %s%s%s", p->paths.dstack_socket,
                 name != NULL && name[0] != '\0' ? name : "(unnamed)",
                 json_string_value(json_object_get(info, "app_id")),
                 cloud != NULL && cloud[0] != '\0' ? ", on " : "",
                 cloud != NULL && cloud[0] != '\0' ? cloud : "");
        json_decref(info);
        break;
    }
    default:
        break;
    }
    *out = p;
    p = NULL;
out:
    X509_free(root);
    EVP_PKEY_free(key);
    kms_platform_free(p);
    return rc;
}

void kms_platform_free(struct kms_platform *p)
{
    if (p == NULL)
        return;
    kms_sim_free(p->sim);
    free(p->sim_dir);
    free(p);
}

enum kms_platform_kind kms_platform_get_kind(const struct kms_platform *p)
{
    return p->kind;
}

/* ---------------------------------------------------------------- attest */

/* vm_config os_image_hash (hex) into out (32 bytes); 0 when present and 32 bytes. */
static int config_image_hash(const char *config, uint8_t out[32])
{
    json_t *root = config != NULL ? json_loads(config, 0, NULL) : NULL;
    const char *s = json_string_value(json_object_get(root, "os_image_hash"));
    int rc = s != NULL && kms_hex_decode_exact(s, out, 32) == 0 ? 0 : -1;

    json_decref(root);
    return rc;
}

static int attest_sim_gcp(struct kms_platform *p, const uint8_t rd[64],
                          const struct kms_runtime_event *events, size_t n_events,
                          const char *config, struct kms_attestation **out)
{
    struct kms_attestation *att = NULL;
    uint8_t img[32], qd[32];
    char def[100], hex[65];
    int have_img;
    int rc = 0;

    if (config == NULL) {
        SHA256((const uint8_t *)"kmsd-sim-gcp-uki", 16, img);
        kms_hex_encode(img, 32, hex);
        snprintf(def, sizeof(def), "{\"os_image_hash\":\"%s\"}", hex);
        config = def;
    }
    have_img = config_image_hash(config, img) == 0;
    KMS_GUARD(kms_sim_attest(p->sim, NULL, rd, events, n_events, config, &att));
    att->mode = KMS_ATT_GCP_TDX;
    SHA256(att->tdx_quote.p, att->tdx_quote.len, qd);
    KMS_GUARD(kms_sim_gcp_tpm_quote(p->sim_dir, qd, sizeof(qd), events, n_events,
                                    have_img ? img : NULL, have_img ? 32 : 0, &att->tpm));
    *out = att;
    att = NULL;
out:
    kms_att_free(att);
    return rc;
}

static int attest_sim_nitro(struct kms_platform *p, const uint8_t rd[64],
                            const struct kms_runtime_event *events, size_t n_events,
                            struct kms_attestation **out)
{
    char *app_hex = NULL;
    int rc = 0;

    for (size_t i = 0; i < n_events; i++) {
        if (strcmp(events[i].event, "app-id") == 0) {
            app_hex = kms_hex_dup(events[i].payload.p, events[i].payload.len, 0);
            KMS_GUARD_PTR(app_hex);
            break;
        }
    }
    KMS_GUARD(
        kms_sim_nitro_attest(p->sim_dir, (const uint8_t(*)[48])p->nitro_pcrs, rd, app_hex, out));
out:
    free(app_hex);
    return rc;
}

/* A real Nitro Enclave, as the reference's nsm_attest::get_attestation: user_data = the 64-byte
 * report_data, no nonce, no public_key; only the app-id event travels (Nitro has no RTMR);
 * config = {"os_image_hash": sha256(PCR0||PCR1||PCR2)}, all zero when the PCRs are (debug). */
static int attest_nitro(struct kms_platform *p, const uint8_t rd[64],
                        const struct kms_runtime_event *events, size_t n_events,
                        struct kms_attestation **out)
{
    static const uint8_t zero[3 * 48];
    struct kms_nsm_att_req req;
    struct kms_attestation *att = NULL;
    uint8_t pcrs[3][48], h[32];
    char hex[65], config[100];
    int rc = 0;

    memset(&req, 0, sizeof(req));
    req.user_data = rd;
    req.user_data_len = 64;
    att = calloc(1, sizeof(*att));
    KMS_GUARD_PTR(att);
    att->mode = KMS_ATT_NITRO;
    memcpy(att->report_data, rd, 64);
    KMS_GUARD(
        kms_nsm_get_attestation(p->paths.nsm_dev, &req, &att->nsm_quote.p, &att->nsm_quote.len));
    rc = kms_nitro_doc_pcrs(att->nsm_quote.p, att->nsm_quote.len, pcrs);
    if (rc < 0) {
        kms_err_wrap(rc, "the NSM returned a document this build cannot read");
        goto out;
    }
    if (memcmp(pcrs, zero, sizeof(zero)) == 0)
        memset(h, 0, sizeof(h));
    else
        SHA256(&pcrs[0][0], sizeof(pcrs), h);
    kms_hex_encode(h, sizeof(h), hex);
    snprintf(config, sizeof(config), "{\"os_image_hash\":\"%s\"}", hex);
    att->config = strdup(config);
    KMS_GUARD_PTR(att->config);
    for (size_t i = 0; i < n_events; i++) {
        if (strcmp(events[i].event, "app-id") == 0) {
            KMS_GUARD(kms_att_add_runtime_event(att, "app-id", events[i].payload.p,
                                                events[i].payload.len));
            break;
        }
    }
    *out = att;
    att = NULL;
out:
    kms_att_free(att);
    return rc;
}

/* Appends one TDX event (deep copies). */
static int add_tdx_event(struct kms_attestation *att, uint32_t imr, uint32_t type,
                         const uint8_t *digest, size_t dlen, const char *name,
                         const uint8_t *payload, size_t plen)
{
    struct kms_tdx_event *ev;
    struct kms_tdx_event e;
    int rc = 0;

    memset(&e, 0, sizeof(e));
    KMS_ENSURE(att->n_tdx_events < KMS_ATT_MAX_EVENTS * 8u, KMS_ERR_TOOBIG, "too many TDX events");
    e.imr = imr;
    e.event_type = type;
    KMS_GUARD(kms_bytes_dup(&e.digest, digest, dlen));
    KMS_GUARD(kms_bytes_dup(&e.payload, payload, plen));
    e.event = strdup(name);
    KMS_GUARD_PTR(e.event);
    ev = realloc(att->tdx_events, (att->n_tdx_events + 1) * sizeof(*ev));
    KMS_GUARD_PTR(ev);
    att->tdx_events = ev;
    att->tdx_events[att->n_tdx_events++] = e;
    memset(&e, 0, sizeof(e));
out:
    free(e.digest.p);
    free(e.payload.p);
    free(e.event);
    return rc;
}

/* Boot events from the ACPI CCEL (SHA-384 bank; MR index 0 dropped, imr = index - 1). A
 * missing table is not an error: the verifier only replays RTMR3. */
static int add_ccel_events(const char *path, struct kms_attestation *att)
{
    struct kms_tcg_log log;
    uint8_t *buf = NULL;
    size_t len = 0, dlen;
    const uint8_t *d;
    int rc = 0;

    memset(&log, 0, sizeof(log));
    if (path == NULL || !kms_file_exists(path))
        return 0;
    KMS_GUARD(kms_file_read(path, PLAT_LOG_MAX, &buf, &len));
    KMS_GUARD(kms_tcg_log_parse(buf, len, &log));
    for (size_t i = 0; i < log.n_events; i++) {
        const struct kms_tcg_event *e = &log.events[i];

        if (e->pcr_index == 0 || e->event_type == KMS_TCG_EV_NO_ACTION)
            continue;
        d = kms_tcg_event_digest(e, KMS_TPM_ALG_SHA384, &dlen);
        if (d == NULL)
            continue;
        KMS_GUARD(
            add_tdx_event(att, e->pcr_index - 1, e->event_type, d, dlen, "", e->data, e->data_len));
    }
out:
    kms_tcg_log_free(&log);
    free(buf);
    return rc;
}

/* Runtime events of the guest: dstack's runtime_events.log, JSON lines
 * {"event": name, "payload": base64}. A missing file means no events. */
static int load_runtime_events(const char *path, struct kms_attestation *att)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    char *line, *save = NULL;
    uint8_t *bin = NULL;
    json_t *j = NULL;
    int rc = 0;

    if (path == NULL || !kms_file_exists(path))
        return 0;
    KMS_GUARD(kms_file_read(path, PLAT_LOG_MAX, &buf, &len));
    /* kms_file_read NUL-terminates, so the buffer is one C string */
    for (line = strtok_r((char *)buf, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        const char *name, *b64;
        size_t b64_len;
        int n;

        j = json_loads(line, 0, NULL);
        name = json_string_value(json_object_get(j, "event"));
        b64 = json_string_value(json_object_get(j, "payload"));
        KMS_ENSURE(name != NULL && b64 != NULL, KMS_ERR_ATT_FORMAT,
                   "%s: a line is not {\"event\": string, \"payload\": base64}", path);
        b64_len = strlen(b64);
        KMS_ENSURE(b64_len % 4 == 0 && b64_len <= KMS_ATT_MAX_FIELD, KMS_ERR_ATT_FORMAT,
                   "%s: event %s payload is not base64", path, name);
        bin = malloc(b64_len / 4 * 3 + 1);
        KMS_GUARD_PTR(bin);
        n = EVP_DecodeBlock(bin, (const unsigned char *)b64, (int)b64_len);
        KMS_ENSURE(n >= 0, KMS_ERR_ATT_FORMAT, "%s: event %s payload is not base64", path, name);
        /* EVP_DecodeBlock counts '=' padding as zero bytes */
        if (b64_len > 0 && b64[b64_len - 1] == '=')
            n--;
        if (b64_len > 1 && b64[b64_len - 2] == '=')
            n--;
        KMS_GUARD(kms_att_add_runtime_event(att, name, bin, (size_t)n));
        free(bin);
        bin = NULL;
        json_decref(j);
        j = NULL;
    }
out:
    free(bin);
    json_decref(j);
    free(buf);
    return rc;
}

static int attest_hw(struct kms_platform *p, const uint8_t rd[64],
                     const struct kms_runtime_event *events, size_t n_events, const char *config,
                     struct kms_attestation **out)
{
    struct kms_attestation *att = NULL;
    struct kms_tsm_opts tsm;
    struct kms_vtpm *t = NULL;
    struct kms_tcg_log log;
    uint8_t *buf = NULL;
    size_t len = 0;
    uint8_t digest[48], qd[32];
    int rc = 0;

    memset(&log, 0, sizeof(log));
    memset(&tsm, 0, sizeof(tsm));
    tsm.root = p->paths.tsm_report_dir;
    tsm.on_mkdir = p->paths.tsm_on_mkdir;
    tsm.arg = p->paths.tsm_arg;
    att = calloc(1, sizeof(*att));
    KMS_GUARD_PTR(att);
    att->mode = p->kind == KMS_PLATFORM_GCP_TDX ? KMS_ATT_GCP_TDX : KMS_ATT_TDX;
    memcpy(att->report_data, rd, 64);
    att->config = strdup(config != NULL ? config : "");
    KMS_GUARD_PTR(att->config);
    KMS_GUARD(kms_tdx_get_quote(&tsm, p->paths.tdx_guest_dev, rd, &att->tdx_quote.p,
                                &att->tdx_quote.len));
    KMS_GUARD(add_ccel_events(p->paths.ccel, att));
    if (events == NULL || n_events == 0) {
        KMS_GUARD(load_runtime_events(p->paths.runtime_events_log, att));
    } else {
        for (size_t i = 0; i < n_events; i++)
            KMS_GUARD(kms_att_add_runtime_event(att, events[i].event, events[i].payload.p,
                                                events[i].payload.len));
    }
    for (size_t i = 0; i < att->n_events; i++) {
        const struct kms_runtime_event *e = &att->events[i];

        kms_att_event_digest(1, e->event, e->payload.p, e->payload.len, digest);
        KMS_GUARD(add_tdx_event(att, 3, KMS_EVENT_TYPE_RUNTIME, digest, 48, e->event, e->payload.p,
                                e->payload.len));
    }
    if (p->kind == KMS_PLATFORM_GCP_TDX) {
        SHA256(att->tdx_quote.p, att->tdx_quote.len, qd);
        KMS_GUARD(kms_vtpm_open(p->paths.tcti != NULL ? p->paths.tcti : "device:/dev/tpmrm0", &t));
        KMS_GUARD(kms_vtpm_load_gcp_ak(t, KMS_VTPM_AK_ECC, &att->tpm.ak_cert.p,
                                       &att->tpm.ak_cert.len, NULL));
        {
            /* kms_vtpm_quote wants a zeroed quote: keep the AK certificate aside */
            struct kms_bytes cert = att->tpm.ak_cert;

            memset(&att->tpm, 0, sizeof(att->tpm));
            rc = kms_vtpm_quote(t, qd, sizeof(qd), &att->tpm);
            att->tpm.ak_cert = cert;
            KMS_GUARD(rc);
        }
        KMS_GUARD(kms_file_read(p->paths.tpm_event_log, PLAT_LOG_MAX, &buf, &len));
        KMS_GUARD(kms_tcg_log_parse(buf, len, &log));
        KMS_GUARD(kms_tcg_log_to_tpm_events(&log, &att->tpm.events, &att->tpm.n_events));
    }
    *out = att;
    att = NULL;
out:
    kms_tcg_log_free(&log);
    free(buf);
    kms_vtpm_free(t);
    kms_att_free(att);
    return rc;
}

int kms_platform_attest(struct kms_platform *p, const uint8_t report_data[64],
                        const struct kms_runtime_event *events, size_t n_events, const char *config,
                        struct kms_attestation **out)
{
    *out = NULL;
    switch (p->kind) {
    case KMS_PLATFORM_SIM_TDX:
        return kms_sim_attest(p->sim, NULL, report_data, events, n_events, config, out);
    case KMS_PLATFORM_SIM_GCP:
        return attest_sim_gcp(p, report_data, events, n_events, config, out);
    case KMS_PLATFORM_SIM_NITRO:
        return attest_sim_nitro(p, report_data, events, n_events, out);
    case KMS_PLATFORM_NITRO:
        return attest_nitro(p, report_data, events, n_events, out);
    case KMS_PLATFORM_TDX:
    case KMS_PLATFORM_GCP_TDX:
        return attest_hw(p, report_data, events, n_events, config, out);
    case KMS_PLATFORM_DSTACK:
        /* the agent measured the boot: its events and vm_config travel, not the caller's */
        return kms_dstack_agent_attest(p->paths.dstack_socket, p->paths.dstack_timeout_ms,
                                       report_data, out);
    default:
        return kms_err_set(KMS_ERR_ATT_UNSUPPORTED, "no evidence producer for TEE %s",
                           kms_platform_kind_name(p->kind));
    }
}

int kms_platform_sim_init(const char *sim_dir)
{
    static const enum kms_platform_kind kinds[] = {KMS_PLATFORM_SIM_TDX, KMS_PLATFORM_SIM_NITRO,
                                                   KMS_PLATFORM_SIM_GCP};
    struct kms_platform_cfg cfg;
    struct kms_platform *p = NULL;
    int rc = 0;

    memset(&cfg, 0, sizeof(cfg));
    cfg.sim_dir = sim_dir;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        cfg.kind = kinds[i];
        KMS_GUARD(kms_platform_open(&cfg, &p)); /* opening creates the kind's root */
        kms_platform_free(p);
        p = NULL;
    }
out:
    return rc;
}

int kms_platform_add_sim_roots(const char *sim_dir, struct kms_attest_ctx *ctx)
{
    static const struct {
        const char *file;
        enum kms_root_kind kind;
    } roots[] = {{"sim-root.pem", KMS_ROOT_TDX},
                 {"sim-nitro-root.pem", KMS_ROOT_NITRO},
                 {"sim-gcp-root.pem", KMS_ROOT_GCP}};
    char path[PLAT_PATH_MAX];
    int found = 0;
    int rc = 0;

    for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
        KMS_ENSURE(snprintf(path, sizeof(path), "%s/%s", sim_dir, roots[i].file) <
                       (int)sizeof(path),
                   KMS_ERR_INVAL, "simulation directory path too long");
        if (!kms_file_exists(path))
            continue;
        KMS_GUARD(kms_attest_ctx_add_root_file(ctx, roots[i].kind, path, 1));
        found++;
    }
    KMS_ENSURE(found > 0, KMS_ERR_NOTFOUND, "no simulation root in %s", sim_dir);
out:
    return rc;
}
