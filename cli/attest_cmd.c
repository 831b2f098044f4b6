/*
 * kmsctl attest verify: verifies evidence offline with the production verifiers and the
 * pinned roots, and prints what verification established (report, PCRs, BootInfo).
 * With --collateral-file / --pccs-url (or PCCS_URL) TDX quotes also get the TCB evaluation.
 * Accepted inputs (detected): a SCALE VersionedAttestation, a raw TDX quote, or a bare Nitro
 * COSE_Sign1 document.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/collateral.h"
#include "attest/tdx.h"
#include "cli/cli.h"
#include "attest/attest.h"
#include "attest/nitro.h"
#include "common/file.h"
#include "common/hex.h"

#define EVIDENCE_MAX KMS_ATT_MAX_BYTES

static const char attest_usage[] =
    "Usage: kmsctl attest verify --evidence FILE [--time UNIX_SECONDS] [--json]\n"
    "                            [--sim-dir DIR --insecure-sim] [--nitro-device-id quirk|fixed]\n"
    "                            [--aia-fetch on|off] [--aia-host SUFFIX]\n"
    "                            [--collateral-file FILE] [--pccs-url URL]\n"
    "\n"
    "Verifies evidence with the production verifiers and the embedded roots (Intel SGX Root CA,\n"
    "AWS Nitro Enclaves Root G1, Google EK/AK CA Root) and prints the verified report (mode,\n"
    "measurements, PCRs, tcb_status, ppid / module_id) and the BootInfo the KMS would send to its\n"
    "authorization backend. FILE is a SCALE attestation (as in RA-TLS OID .1.8), a raw TDX quote,\n"
    "or a bare Nitro COSE_Sign1 document; the format is detected.\n"
    "\n"
    "  --time T           verify certificates at UNIX time T instead of now (real Nitro leaves\n"
    "                     live about 3 hours)\n"
    "  --json             print JSON instead of text\n"
    "  --sim-dir DIR      also trust the simulation roots in DIR; requires --insecure-sim\n"
    "  --nitro-device-id  quirk (default, the reference's sha256(\"i\")) or fixed\n"
    "  --aia-fetch on|off GCP vTPM: fetch the AK certificate's issuer from its AIA caIssuers URL\n"
    "                     (default on; off with --insecure-sim)\n"
    "  --aia-host SUFFIX  hosts that fetching may contact (default googleapis.com)\n"
    "  --collateral-file FILE\n"
    "                     evaluate the TCB of TDX quotes offline with Intel collateral from a\n"
    "                     JSON file (the format of kmsd --collateral-file: dcap-qvl's\n"
    "                     QuoteCollateralV3, one object or an array of them), used before\n"
    "                     --pccs-url; the report then has tcb_status and advisory_ids\n"
    "  --pccs-url URL     fetch that collateral from this PCCS or Intel PCS (v4 API; each request\n"
    "                     times out after 10 s); default: env PCCS_URL. Neither: no TCB\n"
    "                     evaluation (tcb_status \"\")\n"
    "\n"
    "Exit status 0 only when everything verified; 1 with the failing check otherwise; 2 for\n"
    "usage errors.\n";

enum evidence_kind { EV_SCALE, EV_TDX_QUOTE, EV_NITRO_COSE };

static const char *kind_name(enum evidence_kind k)
{
    switch (k) {
    case EV_SCALE:
        return "SCALE attestation";
    case EV_TDX_QUOTE:
        return "raw TDX quote";
    case EV_NITRO_COSE:
        return "Nitro COSE_Sign1 document";
    }
    return "?";
}

/* Adds key: hex(p, n) to o. */
static void jhex(json_t *o, const char *k, const uint8_t *p, size_t n)
{
    char *h = kms_hex_dup(p, n, 0);

    json_object_set_new(o, k, json_string(h != NULL ? h : ""));
    free(h);
}

/* Detects the format and builds an attestation (raw quote: *att stays NULL). */
static int load_evidence(const uint8_t *p, size_t len, enum evidence_kind *kind,
                         struct kms_attestation **att)
{
    int rc = 0;

    *att = NULL;
    KMS_ENSURE(len > 0, KMS_ERR_ATT_FORMAT, "evidence file is empty");
    if (p[0] == 0x00 && len > 1 && p[1] <= 2) {
        *kind = EV_SCALE;
        KMS_GUARD(kms_att_decode(p, len, att));
    } else if (len >= 8 && (p[0] == 4 || p[0] == 5) && p[1] == 0 && p[4] == 0x81 && p[5] == 0 &&
               p[6] == 0 && p[7] == 0) {
        *kind = EV_TDX_QUOTE; /* version 4/5 LE, tee_type 0x81 (TDX) */
    } else if (p[0] == 0x84 || (p[0] == 0xd2 && len > 1 && p[1] == 0x84)) {
        *kind = EV_NITRO_COSE; /* CBOR array(4), optionally tag 18 */
        *att = calloc(1, sizeof(**att));
        KMS_GUARD_PTR(*att);
        (*att)->mode = KMS_ATT_NITRO;
        (*att)->config = strdup("");
        KMS_GUARD_PTR((*att)->config);
        (*att)->nsm_quote.p = malloc(len);
        KMS_GUARD_PTR((*att)->nsm_quote.p);
        memcpy((*att)->nsm_quote.p, p, len);
        (*att)->nsm_quote.len = len;
        KMS_GUARD(kms_nitro_doc_user_data(p, len, (*att)->report_data));
    } else {
        rc = kms_err_set(KMS_ERR_ATT_FORMAT,
                         "evidence is neither a SCALE attestation (00 0x), a TDX quote (version "
                         "4/5, tee_type 0x81) nor a Nitro COSE_Sign1 document (84 / d2 84)");
    }
out:
    if (rc < 0) {
        kms_att_free(*att);
        *att = NULL;
    }
    return rc;
}

static json_t *report_json(const struct kms_verified *v, int tdx)
{
    json_t *o = json_object();
    json_t *adv = json_array();
    const struct kms_tdx_report *t = &v->td;

    json_object_set_new(o, "mode", json_string(kms_att_mode_name(v->mode)));
    json_object_set_new(o, "sim", json_boolean(v->sim));
    if (tdx) {
        jhex(o, "tee_tcb_svn", t->tee_tcb_svn, 16);
        jhex(o, "mr_seam", t->mr_seam, 48);
        jhex(o, "mr_signer_seam", t->mr_signer_seam, 48);
        jhex(o, "seam_attributes", t->seam_attributes, 8);
        jhex(o, "td_attributes", t->td_attributes, 8);
        jhex(o, "xfam", t->xfam, 8);
        jhex(o, "mr_td", t->mr_td, 48);
        jhex(o, "mr_config_id", t->mr_config_id, 48);
        jhex(o, "mr_owner", t->mr_owner, 48);
        jhex(o, "mr_owner_config", t->mr_owner_config, 48);
        jhex(o, "rtmr0", t->rtmr[0], 48);
        jhex(o, "rtmr1", t->rtmr[1], 48);
        jhex(o, "rtmr2", t->rtmr[2], 48);
        jhex(o, "rtmr3", t->rtmr[3], 48);
        jhex(o, "report_data", t->report_data, 64);
        jhex(o, "ppid", v->ppid, v->ppid_len);
    }
    if (v->mode == KMS_ATT_NITRO) {
        json_object_set_new(o, "module_id", json_string(v->module_id));
        jhex(o, "pcr0", v->pcr[0], 48);
        jhex(o, "pcr1", v->pcr[1], 48);
        jhex(o, "pcr2", v->pcr[2], 48);
    } else if (v->mode == KMS_ATT_GCP_TDX) {
        jhex(o, "tpm_pcr0", v->pcr[0], 32);
        jhex(o, "tpm_pcr2", v->pcr[1], 32);
        jhex(o, "tpm_pcr14", v->pcr[2], 32);
    }
    json_object_set_new(o, "tcb_status", json_string(v->tcb_status));
    for (size_t i = 0; i < v->n_advisory_ids; i++)
        json_array_append_new(adv, json_string(v->advisory_ids[i]));
    json_object_set_new(o, "advisory_ids", adv);
    return o;
}

static json_t *boot_info_json(const struct kms_boot_info *b)
{
    json_t *o = json_object();
    json_t *adv = json_array();

    json_object_set_new(o, "attestation_mode", json_string(kms_att_mode_name(b->mode)));
    jhex(o, "mr_aggregated", b->mr_aggregated, 32);
    jhex(o, "os_image_hash", b->os_image_hash.p, b->os_image_hash.len);
    jhex(o, "mr_system", b->mr_system, 32);
    jhex(o, "app_id", b->app_id.p, b->app_id.len);
    jhex(o, "compose_hash", b->compose_hash.p, b->compose_hash.len);
    jhex(o, "instance_id", b->instance_id.p, b->instance_id.len);
    jhex(o, "device_id", b->device_id, 32);
    jhex(o, "key_provider_info", b->key_provider_info.p, b->key_provider_info.len);
    json_object_set_new(o, "tcb_status", json_string(b->tcb_status));
    for (size_t i = 0; i < b->n_advisory_ids; i++)
        json_array_append_new(adv, json_string(b->advisory_ids[i]));
    json_object_set_new(o, "advisory_ids", adv);
    return o;
}

/* Text form: "key: value" lines, two-space indent per level, arrays comma-separated. */
static void print_text_obj(json_t *o, int indent)
{
    const char *k;
    json_t *v;

    json_object_foreach(o, k, v)
    {
        printf("%*s%s:", indent, "", k);
        if (json_is_object(v)) {
            printf("\n");
            print_text_obj(v, indent + 2);
        } else if (json_is_array(v)) {
            size_t i;
            json_t *e;

            json_array_foreach(v, i, e) printf("%s%s", i == 0 ? " " : ", ", json_string_value(e));
            printf("\n");
        } else if (json_is_boolean(v)) {
            printf(" %s\n", json_is_true(v) ? "yes" : "no");
        } else if (json_is_string(v)) {
            const char *s = json_string_value(v);

            printf("%s%s\n", s[0] != '\0' ? " " : "", s);
        } else if (json_is_null(v)) {
            printf(" (none)\n");
        }
    }
}

static int verify_cmd(int argc, char **argv)
{
    static const struct option opts[] = {{"evidence", required_argument, NULL, 'e'},
                                         {"time", required_argument, NULL, 't'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"sim-dir", required_argument, NULL, 's'},
                                         {"insecure-sim", no_argument, NULL, 'I'},
                                         {"nitro-device-id", required_argument, NULL, 'n'},
                                         {"aia-fetch", required_argument, NULL, 'a'},
                                         {"aia-host", required_argument, NULL, 'H'},
                                         {"collateral-file", required_argument, NULL, 'C'},
                                         {"pccs-url", required_argument, NULL, 'P'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *path = NULL, *sim_dir = NULL;
    int json = 0, insecure = 0, fixed = 0, aia = -1, c;
    const char *aia_host = "googleapis.com";
    const char *coll_file = NULL, *pccs_url = NULL;
    struct kms_collateral_source *src = NULL;
    long long t = 0;
    char *end;
    uint8_t *buf = NULL;
    size_t len = 0;
    enum evidence_kind kind = EV_SCALE;
    struct kms_attestation *att = NULL;
    struct kms_attest_ctx *ctx = NULL;
    struct kms_verified v;
    struct kms_boot_info bi;
    int have_bi = 0;
    json_t *out = NULL;
    X509 *root;
    int rc = 0;

    memset(&v, 0, sizeof(v));
    memset(&bi, 0, sizeof(bi));
    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'e':
            path = optarg;
            break;
        case 't':
            errno = 0;
            t = strtoll(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || t <= 0) {
                fprintf(stderr, "kmsctl: --time must be a positive number of UNIX seconds\n");
                return 2;
            }
            break;
        case 'j':
            json = 1;
            break;
        case 's':
            sim_dir = optarg;
            break;
        case 'I':
            insecure = 1;
            break;
        case 'n':
            if (strcmp(optarg, "fixed") == 0) {
                fixed = 1;
            } else if (strcmp(optarg, "quirk") != 0) {
                fprintf(stderr, "kmsctl: --nitro-device-id must be quirk or fixed\n");
                return 2;
            }
            break;
        case 'a':
            if (strcmp(optarg, "on") != 0 && strcmp(optarg, "off") != 0) {
                fprintf(stderr, "kmsctl: --aia-fetch must be on or off\n");
                return 2;
            }
            aia = strcmp(optarg, "on") == 0;
            break;
        case 'H':
            aia_host = optarg;
            break;
        case 'C':
            coll_file = optarg;
            break;
        case 'P':
            pccs_url = optarg;
            break;
        case 'h':
            fputs(attest_usage, stdout);
            return 0;
        default:
            fputs(attest_usage, stderr);
            return 2;
        }
    }
    if (path == NULL || optind != argc) {
        fputs(attest_usage, stderr);
        return 2;
    }
    if ((sim_dir != NULL) != (insecure != 0)) {
        fprintf(stderr, "kmsctl: --sim-dir and --insecure-sim go together: simulation roots "
                        "are trusted only on explicit request\n");
        return 2;
    }
    ctx = kms_attest_ctx_new();
    KMS_GUARD_PTR(ctx);
    root = kms_attest_intel_root();
    KMS_GUARD_PTR(root);
    rc = kms_attest_ctx_add_root(ctx, KMS_ROOT_TDX, root, 0);
    X509_free(root);
    KMS_GUARD(rc);
    root = kms_attest_nitro_root();
    KMS_GUARD_PTR(root);
    rc = kms_attest_ctx_add_root(ctx, KMS_ROOT_NITRO, root, 0);
    X509_free(root);
    KMS_GUARD(rc);
    root = kms_attest_gcp_root();
    KMS_GUARD_PTR(root);
    rc = kms_attest_ctx_add_root(ctx, KMS_ROOT_GCP, root, 0);
    X509_free(root);
    KMS_GUARD(rc);
    if (sim_dir != NULL)
        KMS_GUARD(kms_platform_add_sim_roots(sim_dir, ctx));
    kms_attest_ctx_set_time(ctx, (time_t)t);
    /* collateral as kmsd takes it: --pccs-url, else the PCCS_URL environment variable */
    if (pccs_url == NULL && getenv("PCCS_URL") != NULL && getenv("PCCS_URL")[0] != '\0')
        pccs_url = getenv("PCCS_URL");
    if (coll_file != NULL || pccs_url != NULL) {
        struct kms_collateral_source_opts co = {.pccs_url = pccs_url, .collateral_file = coll_file};

        KMS_GUARD(kms_collateral_source_new(&co, &src));
        kms_attest_ctx_set_collateral_source(ctx, src);
    }
    kms_attest_ctx_set_nitro_device_id_fixed(ctx, fixed);
    /* As kmsd: real GCP evidence lacks the AK intermediate, so fetch it (from allowed hosts). */
    if (aia == 1 || (aia == -1 && !insecure)) {
        KMS_GUARD(kms_attest_ctx_set_aia_fetch(ctx, 1, 0));
        KMS_GUARD(kms_attest_ctx_set_aia_hosts(ctx, &aia_host, 1));
    }

    KMS_GUARD(kms_file_read(path, EVIDENCE_MAX, &buf, &len));
    KMS_GUARD(load_evidence(buf, len, &kind, &att));
    if (kind == EV_TDX_QUOTE && src != NULL) {
        KMS_GUARD(kms_tdx_quote_verify_collateral(ctx, buf, len, &v));
        v.mode = KMS_ATT_TDX;
    } else if (kind == EV_TDX_QUOTE) {
        KMS_GUARD(kms_tdx_quote_verify(ctx, buf, len, &v));
        v.mode = KMS_ATT_TDX;
    } else {
        KMS_GUARD(kms_attest_verify(ctx, att, &v));
        KMS_GUARD(kms_boot_info_derive(ctx, att, &v, NULL, 0, &bi));
        have_bi = 1;
    }
    out = json_object();
    KMS_GUARD_PTR(out);
    json_object_set_new(out, "verified", json_true());
    json_object_set_new(out, "evidence", json_string(kind_name(kind)));
    json_object_set_new(out, "report", report_json(&v, v.mode != KMS_ATT_NITRO));
    json_object_set_new(out, "boot_info", have_bi ? boot_info_json(&bi) : json_null());
    if (json) {
        char *s = json_dumps(out, JSON_INDENT(2));

        if (s != NULL)
            puts(s);
        free(s);
    } else {
        print_text_obj(out, 0);
        if (!have_bi)
            printf("(a raw quote carries no event log: BootInfo needs a SCALE attestation)\n");
    }
out:
    if (rc < 0) {
        fprintf(stderr, "kmsctl: attest verify: %s (error %d)\n", kms_err_detail(), rc);
        if (json) {
            json_t *e =
                json_pack("{s:b,s:s,s:i}", "verified", 0, "error", kms_err_detail(), "code", rc);
            char *s = json_dumps(e, JSON_INDENT(2));

            if (s != NULL)
                puts(s);
            free(s);
            json_decref(e);
        }
    }
    json_decref(out);
    kms_boot_info_free(&bi);
    kms_verified_free(&v);
    kms_att_free(att);
    kms_attest_ctx_free(ctx);
    kms_collateral_source_free(src);
    free(buf);
    return rc < 0 ? 1 : 0;
}

int kms_cli_attest(int argc, char **argv)
{
    static const struct kms_cli_sub subs[] = {{"verify", verify_cmd}};

    return kms_cli_subcommands("attest", attest_usage, subs, 1, argc, argv);
}
