/*
 * chain: authorization dispatch and the `dev` backend (kms-reference.md §7): argument checks,
 * fail-closed results, the BootInfo JSON body shared with the webhook backend.
 */
#include "chain/auth.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chain/internal.h"
#include "common/hex.h"
#include "common/utf8.h"

/* Longest dev gateway id we accept; it must fit kms_auth_result.gateway_app_id. */
#define DEV_GATEWAY_MAX (sizeof(((struct kms_auth_result *)0)->gateway_app_id) - 1)

/* ---------------------------------------------------------------- handle */

int kms_auth_wrap(const struct kms_auth_ops *ops, void *priv, int is_dev, struct kms_auth **out)
{
    struct kms_auth *a = NULL;
    int rc = 0;

    KMS_ENSURE(ops != NULL && out != NULL, KMS_ERR_INVAL, "kms_auth_wrap: missing argument");
    a = calloc(1, sizeof(*a));
    KMS_GUARD_PTR(a);
    a->ops = ops;
    a->priv = priv;
    a->is_dev = is_dev;
    pthread_mutex_init(&a->info_mu, NULL);
    *out = a;
    priv = NULL;
out:
    if (rc < 0 && ops != NULL && ops->free != NULL)
        ops->free(priv);
    return rc;
}

int kms_auth_new(const struct kms_auth_cfg *cfg, struct kms_auth **out)
{
    int rc = 0;

    KMS_ENSURE(out != NULL, KMS_ERR_INVAL, "kms_auth_new: missing output argument");
    *out = NULL;
    KMS_ENSURE(cfg != NULL && cfg->type != NULL, KMS_ERR_INVAL,
               "auth_api.type is not set; use \"dev\", \"webhook\" or \"eth\"");
    if (strcmp(cfg->type, "dev") == 0)
        rc = kms_auth_dev_new(cfg, out);
    else if (strcmp(cfg->type, "webhook") == 0)
        rc = kms_auth_webhook_new(cfg, out);
    else if (strcmp(cfg->type, "eth") == 0)
        rc = kms_auth_eth_new(cfg, out); /* chain/eth.c */
    else
        rc = kms_err_set(KMS_ERR_INVAL,
                         "unknown auth_api.type \"%.64s\"; use \"dev\", \"webhook\" or \"eth\"",
                         cfg->type);
out:
    return rc;
}

void kms_auth_free(struct kms_auth *a)
{
    if (a == NULL)
        return;
    if (a->ops != NULL && a->ops->free != NULL)
        a->ops->free(a->priv);
    kms_auth_info_clear(&a->info_cache);
    pthread_mutex_destroy(&a->info_mu);
    free(a);
}

int kms_auth_is_dev(const struct kms_auth *a)
{
    return a != NULL && a->is_dev;
}

int kms_auth_check(struct kms_auth *a, int is_kms, const struct kms_boot_info *bi,
                   struct kms_auth_result *out)
{
    int rc = 0;

    if (out != NULL)
        memset(out, 0, sizeof(*out));
    KMS_ENSURE(a != NULL && a->ops != NULL && a->ops->check != NULL && bi != NULL && out != NULL,
               KMS_ERR_INVAL, "kms_auth_check: missing argument");
    rc = a->ops->check(a->priv, is_kms != 0, bi, out);
out:
    if (out != NULL) {
        /* Fail closed whatever the backend left behind; always NUL-terminated. */
        if (rc < 0)
            memset(out, 0, sizeof(*out));
        out->allowed = out->allowed != 0;
        out->reason[sizeof(out->reason) - 1] = '\0';
        out->gateway_app_id[sizeof(out->gateway_app_id) - 1] = '\0';
    }
    return rc;
}

static long long mono_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int info_copy(const struct kms_auth_info *src, struct kms_auth_info *dst)
{
    memset(dst, 0, sizeof(*dst));
    dst->is_dev = src->is_dev;
    dst->chain_id = src->chain_id;
#define DUP(f)                                                                                     \
    do {                                                                                           \
        if (src->f != NULL) {                                                                      \
            dst->f = strdup(src->f);                                                               \
            if (dst->f == NULL) {                                                                  \
                kms_auth_info_clear(dst);                                                          \
                return kms_err_set(KMS_ERR_NOMEM, "out of memory");                                \
            }                                                                                      \
        }                                                                                          \
    } while (0)
    DUP(status);
    DUP(kms_contract_addr);
    DUP(gateway_app_id);
    DUP(app_implementation);
    DUP(eth_rpc_url);
#undef DUP
    return 0;
}

int kms_auth_info(struct kms_auth *a, struct kms_auth_info *out)
{
    int rc = 0;

    if (out != NULL)
        memset(out, 0, sizeof(*out));
    KMS_ENSURE(a != NULL && a->ops != NULL && a->ops->info != NULL && out != NULL, KMS_ERR_INVAL,
               "kms_auth_info: missing argument");
    pthread_mutex_lock(&a->info_mu);
    if (a->info_expiry_ms > mono_ms()) {
        rc = info_copy(&a->info_cache, out);
        pthread_mutex_unlock(&a->info_mu);
        goto out;
    }
    pthread_mutex_unlock(&a->info_mu);
    rc = a->ops->info(a->priv, out);
    if (rc == 0) {
        struct kms_auth_info copy;

        /* Only answers are cached, never failures. */
        if (info_copy(out, &copy) == 0) {
            pthread_mutex_lock(&a->info_mu);
            kms_auth_info_clear(&a->info_cache);
            a->info_cache = copy;
            a->info_expiry_ms = mono_ms() + KMS_AUTH_INFO_TTL_MS;
            pthread_mutex_unlock(&a->info_mu);
        }
    }
out:
    if (rc < 0 && out != NULL)
        kms_auth_info_clear(out);
    return rc;
}

void kms_auth_info_clear(struct kms_auth_info *info)
{
    if (info == NULL)
        return;
    free(info->status);
    free(info->kms_contract_addr);
    free(info->gateway_app_id);
    free(info->app_implementation);
    free(info->eth_rpc_url);
    memset(info, 0, sizeof(*info));
}

/* ---------------------------------------------------------------- helpers */

int kms_auth_result_set(struct kms_auth_result *out, int allowed, const char *reason,
                        const char *gateway_app_id)
{
    size_t n;
    int rc = 0;

    KMS_ENSURE(out != NULL, KMS_ERR_INVAL, "kms_auth_result_set: missing output");
    if (reason == NULL)
        reason = "";
    if (gateway_app_id == NULL)
        gateway_app_id = "";
    n = strlen(gateway_app_id);
    KMS_ENSURE(n < sizeof(out->gateway_app_id), KMS_ERR_AUTH_RESPONSE,
               "gatewayAppId is %zu bytes, longer than the %zu allowed", n,
               sizeof(out->gateway_app_id) - 1);
    memcpy(out->gateway_app_id, gateway_app_id, n + 1);
    n = kms_utf8_prefix(reason, sizeof(out->reason) - 1);
    memcpy(out->reason, reason, n);
    out->reason[n] = '\0';
    out->allowed = allowed != 0;
out:
    return rc;
}

const char *kms_auth_mode_name(enum kms_att_mode m)
{
    switch (m) {
    case KMS_ATT_TDX:
        return "dstack-tdx";
    case KMS_ATT_GCP_TDX:
        return "dstack-gcp-tdx";
    case KMS_ATT_NITRO:
        return "dstack-nitro-enclave";
    }
    return NULL;
}

/* ---------------------------------------------------------------- BootInfo JSON */

/* Sets obj[key] = lowercase hex of p[0..n) without 0x (serde_human_bytes). */
static int json_set_hex(json_t *obj, const char *key, const uint8_t *p, size_t n)
{
    char *hex = NULL;
    int rc = 0;

    KMS_ENSURE(p != NULL || n == 0, KMS_ERR_INVAL, "BootInfo field %s has a length but no data",
               key);
    hex = kms_hex_dup(p, n, 0);
    KMS_GUARD_PTR(hex);
    KMS_ENSURE(json_object_set_new(obj, key, json_string(hex)) == 0, KMS_ERR_NOMEM,
               "out of memory building BootInfo JSON");
out:
    free(hex);
    return rc;
}

static int json_set_str(json_t *obj, const char *key, const char *s)
{
    json_t *v = json_string(s);
    int rc = 0;

    KMS_ENSURE(v != NULL, KMS_ERR_INVAL, "BootInfo field %s is not valid UTF-8", key);
    KMS_ENSURE(json_object_set_new(obj, key, v) == 0, KMS_ERR_NOMEM,
               "out of memory building BootInfo JSON");
out:
    return rc;
}

char *kms_auth_boot_info_json(const struct kms_boot_info *bi)
{
    json_t *obj = NULL;
    json_t *adv = NULL;
    char tcb[sizeof(bi->tcb_status) + 1];
    const char *mode;
    char *s = NULL;
    int rc = 0;

    KMS_ENSURE(bi != NULL, KMS_ERR_INVAL, "kms_auth_boot_info_json: missing BootInfo");
    mode = kms_auth_mode_name(bi->mode);
    KMS_ENSURE(mode != NULL, KMS_ERR_INVAL, "BootInfo has unknown attestation mode %d",
               (int)bi->mode);
    KMS_ENSURE(bi->advisory_ids != NULL || bi->n_advisory_ids == 0, KMS_ERR_INVAL,
               "BootInfo advisory_ids missing for a count of %zu", bi->n_advisory_ids);
    obj = json_object();
    KMS_GUARD_PTR(obj);
    /* Key order is the reference struct's (serde serializes in declaration order). */
    KMS_GUARD(json_set_str(obj, "attestationMode", mode));
    KMS_GUARD(json_set_hex(obj, "mrAggregated", bi->mr_aggregated, sizeof(bi->mr_aggregated)));
    KMS_GUARD(json_set_hex(obj, "osImageHash", bi->os_image_hash.p, bi->os_image_hash.len));
    KMS_GUARD(json_set_hex(obj, "mrSystem", bi->mr_system, sizeof(bi->mr_system)));
    KMS_GUARD(json_set_hex(obj, "appId", bi->app_id.p, bi->app_id.len));
    KMS_GUARD(json_set_hex(obj, "composeHash", bi->compose_hash.p, bi->compose_hash.len));
    KMS_GUARD(json_set_hex(obj, "instanceId", bi->instance_id.p, bi->instance_id.len));
    KMS_GUARD(json_set_hex(obj, "deviceId", bi->device_id, sizeof(bi->device_id)));
    KMS_GUARD(
        json_set_hex(obj, "keyProviderInfo", bi->key_provider_info.p, bi->key_provider_info.len));
    /* tcb_status is a fixed array: do not rely on the producer having terminated it. */
    memcpy(tcb, bi->tcb_status, sizeof(bi->tcb_status));
    tcb[sizeof(bi->tcb_status)] = '\0';
    KMS_GUARD(json_set_str(obj, "tcbStatus", tcb));
    adv = json_array();
    KMS_GUARD_PTR(adv);
    for (size_t i = 0; i < bi->n_advisory_ids; i++) {
        json_t *v;

        KMS_ENSURE(bi->advisory_ids[i] != NULL, KMS_ERR_INVAL, "BootInfo advisory id %zu is NULL",
                   i);
        v = json_string(bi->advisory_ids[i]);
        KMS_ENSURE(v != NULL, KMS_ERR_INVAL, "BootInfo advisory id %zu is not valid UTF-8", i);
        KMS_ENSURE(json_array_append_new(adv, v) == 0, KMS_ERR_NOMEM,
                   "out of memory building BootInfo JSON");
    }
    rc = json_object_set_new(obj, "advisoryIds", adv);
    adv = NULL; /* set_new consumes the reference even on failure */
    KMS_ENSURE(rc == 0, KMS_ERR_NOMEM, "out of memory building BootInfo JSON");
    s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    KMS_GUARD_PTR(s);
out:
    json_decref(adv);
    json_decref(obj);
    if (rc < 0) {
        free(s);
        return NULL;
    }
    return s;
}

/* ---------------------------------------------------------------- dev backend */

struct dev_auth {
    char gateway_app_id[DEV_GATEWAY_MAX + 1];
};

static int dev_check(void *priv, int is_kms, const struct kms_boot_info *bi,
                     struct kms_auth_result *out)
{
    const struct dev_auth *d = priv;

    (void)is_kms;
    (void)bi;
    /* As the reference: no policy at all, allowed with an empty reason. */
    return kms_auth_result_set(out, 1, "", d->gateway_app_id);
}

static int dev_info(void *priv, struct kms_auth_info *out)
{
    const struct dev_auth *d = priv;
    int rc = 0;

    out->is_dev = 1;
    out->gateway_app_id = strdup(d->gateway_app_id);
    KMS_GUARD_PTR(out->gateway_app_id);
out:
    return rc;
}

static void dev_free(void *priv)
{
    free(priv);
}

static const struct kms_auth_ops dev_ops = {
    .name = "dev",
    .check = dev_check,
    .info = dev_info,
    .free = dev_free,
};

int kms_auth_dev_new(const struct kms_auth_cfg *cfg, struct kms_auth **out)
{
    const char *gw = cfg->dev_gateway_app_id != NULL ? cfg->dev_gateway_app_id : "any";
    struct dev_auth *d = NULL;
    size_t n = strlen(gw);
    int rc = 0;

    KMS_ENSURE(n <= DEV_GATEWAY_MAX, KMS_ERR_INVAL,
               "auth_api.dev.gateway_app_id is %zu bytes; at most %zu are allowed", n,
               DEV_GATEWAY_MAX);
    d = calloc(1, sizeof(*d));
    KMS_GUARD_PTR(d);
    memcpy(d->gateway_app_id, gw, n + 1);
    rc = kms_auth_wrap(&dev_ops, d, 1, out);
    d = NULL; /* owned by the handle, or freed by kms_auth_wrap */
out:
    free(d);
    return rc;
}
