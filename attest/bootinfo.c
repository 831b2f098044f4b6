/* BootInfo derivation: app_id, compose_hash, mr_* and device_id (kms-reference.md §6). */
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/events.h"
#include "attest/internal.h"
#include "attest/scale.h"
#include "common/hex.h"

#define VM_CONFIG_MAX (1024u * 1024u)

void kms_boot_info_free(struct kms_boot_info *bi)
{
    if (bi == NULL)
        return;
    free(bi->os_image_hash.p);
    free(bi->app_id.p);
    free(bi->compose_hash.p);
    free(bi->instance_id.p);
    free(bi->key_provider_info.p);
    for (size_t i = 0; i < bi->n_advisory_ids; i++)
        free(bi->advisory_ids[i]);
    free(bi->advisory_ids);
    memset(bi, 0, sizeof(*bi));
}

static int event_payload(const struct kms_attestation *att, const char *name, struct kms_bytes *dst)
{
    const struct kms_runtime_event *e = kms_att_find_event(att, name);

    return e != NULL ? kms_bytes_dup(dst, e->payload.p, e->payload.len)
                     : kms_bytes_dup(dst, NULL, 0);
}

static int sha256_parts(const void *const *parts, const size_t *lens, size_t n, uint8_t out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c != NULL && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1;

    for (size_t i = 0; ok && i < n; i++)
        ok = EVP_DigestUpdate(c, parts[i], lens[i]) == 1;
    ok = ok && EVP_DigestFinal_ex(c, out, NULL) == 1;
    EVP_MD_CTX_free(c);
    return ok ? 0 : kms_err_set(KMS_ERR_CRYPTO, "SHA-256 failed");
}

static int sha256(const void *p, size_t n, uint8_t out[32])
{
    const void *parts[1] = {p};
    size_t lens[1] = {n};

    return sha256_parts(parts, lens, 1, out);
}

int kms_vm_config_os_image_hash(const char *cfg, struct kms_bytes *out)
{
    json_error_t jerr;
    json_t *root = NULL;
    json_t *h;
    const char *s;
    int rc = 0;

    KMS_ENSURE(strlen(cfg) <= VM_CONFIG_MAX, KMS_ERR_ATT_FORMAT, "vm_config too large");
    root = json_loads(cfg, 0, &jerr);
    KMS_ENSURE(json_is_object(root), KMS_ERR_ATT_FORMAT, "vm_config is not a JSON object: %s",
               root == NULL ? jerr.text : "wrong type");
    h = json_object_get(root, "os_image_hash");
    if (h == NULL || json_is_null(h)) {
        KMS_GUARD(kms_bytes_dup(out, NULL, 0));
        goto out;
    }
    KMS_ENSURE(json_is_string(h), KMS_ERR_ATT_FORMAT, "vm_config os_image_hash is not a string");
    s = json_string_value(h);
    KMS_ENSURE(!(s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) &&
                   kms_hex_decode(s, &out->p, &out->len) == 0,
               KMS_ERR_ATT_FORMAT, "vm_config os_image_hash is not plain hex");
out:
    json_decref(root);
    return rc;
}

/* Nitro raw device id. The reference takes module_id.split_once('-').0, which is always "i"
 * ("i-<instance>-enc<enclave>"), so every enclave shares one device_id. "Corrected" keeps what
 * the reference comment intended, the EC2 instance id "i-<instance>": module_id up to its
 * second '-' (the whole module_id when it has fewer dashes). */
static size_t nitro_raw_device_id_len(const char *module_id, int fixed)
{
    const char *d1 = strchr(module_id, '-');
    const char *d2;

    if (d1 == NULL)
        return strlen(module_id);
    if (!fixed)
        return (size_t)(d1 - module_id);
    d2 = strchr(d1 + 1, '-');
    return d2 != NULL ? (size_t)(d2 - module_id) : strlen(module_id);
}

int kms_boot_info_derive(const struct kms_attest_ctx *ctx, const struct kms_attestation *att,
                         const struct kms_verified *v, const char *vm_config, int use_boottime_mr,
                         struct kms_boot_info *out)
{
    static const uint8_t zero48[48];
    const char *stop = use_boottime_mr ? "boot-mr-done" : NULL;
    const char *cfg;
    uint8_t mr_kp[32];
    uint8_t mr[48];
    int rc = 0;

    memset(out, 0, sizeof(*out));
    KMS_ENSURE(v->mode == att->mode, KMS_ERR_INVAL,
               "verified result is for mode %s but the attestation is %s",
               kms_att_mode_name(v->mode), kms_att_mode_name(att->mode));
    out->mode = att->mode;

    /* key-provider is emitted after the keys are fetched, so boot-time MRs never include it */
    if (use_boottime_mr)
        KMS_GUARD(kms_bytes_dup(&out->key_provider_info, NULL, 0));
    else
        KMS_GUARD(event_payload(att, "key-provider", &out->key_provider_info));
    if (out->key_provider_info.len > 0)
        KMS_GUARD(sha256(out->key_provider_info.p, out->key_provider_info.len, mr_kp));
    else
        memset(mr_kp, 0, sizeof(mr_kp));

    cfg = vm_config != NULL && vm_config[0] != '\0'
              ? vm_config
              : (att->config != NULL && att->config[0] != '\0' ? att->config : "{}");
    KMS_GUARD(kms_vm_config_os_image_hash(cfg, &out->os_image_hash));
    KMS_GUARD(event_payload(att, "app-id", &out->app_id));

    switch (att->mode) {
    case KMS_ATT_TDX: {
        const struct kms_tdx_report *t = &v->td;
        const void *sys[5] = {t->mr_td, t->rtmr[0], t->rtmr[1], t->rtmr[2], mr_kp};
        size_t sys_l[5] = {48, 48, 48, 48, 32};
        const void *agg[8] = {t->mr_td, t->rtmr[0],      t->rtmr[1],  t->rtmr[2],
                              mr,       t->mr_config_id, t->mr_owner, t->mr_owner_config};
        size_t agg_l[8] = {48, 48, 48, 48, 48, 48, 48, 48};
        int extra = memcmp(t->mr_config_id, zero48, 48) != 0 ||
                    memcmp(t->mr_owner, zero48, 48) != 0 ||
                    memcmp(t->mr_owner_config, zero48, 48) != 0;

        KMS_GUARD(sha256_parts(sys, sys_l, 5, out->mr_system));
        kms_att_replay(1, att->events, att->n_events, stop, mr);
        KMS_GUARD(sha256_parts(agg, agg_l, extra ? 8 : 5, out->mr_aggregated));
        KMS_GUARD(event_payload(att, "compose-hash", &out->compose_hash));
        KMS_GUARD(event_payload(att, "instance-id", &out->instance_id));
        KMS_GUARD(sha256(v->ppid, v->ppid_len, out->device_id));
        break;
    }
    case KMS_ATT_GCP_TDX: {
        const void *sys[2] = {out->os_image_hash.p, mr_kp};
        size_t sys_l[2] = {out->os_image_hash.len, 32};
        const void *agg[3] = {v->pcr[0], v->pcr[1], mr};
        size_t agg_l[3] = {32, 32, 32};

        KMS_GUARD(sha256_parts(sys, sys_l, 2, out->mr_system));
        kms_att_replay(0, att->events, att->n_events, stop, mr);
        KMS_GUARD(sha256_parts(agg, agg_l, 3, out->mr_aggregated));
        KMS_GUARD(event_payload(att, "compose-hash", &out->compose_hash));
        KMS_GUARD(event_payload(att, "instance-id", &out->instance_id));
        KMS_GUARD(sha256(v->ppid, v->ppid_len, out->device_id));
        break;
    }
    case KMS_ATT_NITRO: {
        const void *pcrs[3] = {v->pcr[0], v->pcr[1], v->pcr[2]};
        size_t pcr_l[3] = {48, 48, 48};
        char module_id[sizeof(v->module_id)];
        int fixed = ctx != NULL && ctx->nitro_device_id_fixed;

        KMS_GUARD(sha256_parts(pcrs, pcr_l, 3, out->mr_system));
        memcpy(out->mr_aggregated, out->mr_system, 32);
        KMS_GUARD(kms_bytes_dup(&out->compose_hash, out->os_image_hash.p, out->os_image_hash.len));
        KMS_GUARD(kms_bytes_dup(&out->instance_id, NULL, 0));
        memcpy(module_id, v->module_id, sizeof(module_id));
        module_id[sizeof(module_id) - 1] = '\0';
        KMS_GUARD(sha256(module_id, nitro_raw_device_id_len(module_id, fixed), out->device_id));
        break;
    }
    default:
        rc = kms_err_set(KMS_ERR_ATT_UNSUPPORTED, "unknown attestation mode %d", (int)att->mode);
        goto out;
    }

    snprintf(out->tcb_status, sizeof(out->tcb_status), "%s", v->tcb_status);
    if (v->n_advisory_ids > 0) {
        out->advisory_ids = calloc(v->n_advisory_ids, sizeof(char *));
        KMS_GUARD_PTR(out->advisory_ids);
        for (size_t i = 0; i < v->n_advisory_ids; i++) {
            out->advisory_ids[i] = strdup(v->advisory_ids[i]);
            KMS_GUARD_PTR(out->advisory_ids[i]);
            out->n_advisory_ids = i + 1;
        }
    }
out:
    if (rc < 0)
        kms_boot_info_free(out);
    return rc;
}
