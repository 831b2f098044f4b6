/* Runtime-event digests and replay, the JSON event log (OID .1.2) and report_data tags. */
#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/events.h"
#include "attest/tdx.h"
#include "common/hex.h"

/* One-shot digest helper; these never fail short of memory exhaustion, in which case the
 * output is zeroed so it cannot match a genuine measurement. */
static void digest_parts(const EVP_MD *md, const void *const *parts, const size_t *lens, size_t n,
                         uint8_t *out)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c != NULL && EVP_DigestInit_ex(c, md, NULL) == 1;

    for (size_t i = 0; ok && i < n; i++)
        ok = EVP_DigestUpdate(c, parts[i], lens[i]) == 1;
    if (ok)
        ok = EVP_DigestFinal_ex(c, out, NULL) == 1;
    if (!ok)
        memset(out, 0, (size_t)EVP_MD_get_size(md));
    EVP_MD_CTX_free(c);
}

void kms_att_event_digest(int sha384, const char *name, const uint8_t *payload, size_t len,
                          uint8_t *out)
{
    /* u32::to_ne_bytes on x86, i.e. little-endian, independent of our host */
    static const uint8_t type_le[4] = {0x01, 0x00, 0x00, 0x08};
    const void *parts[5] = {type_le, ":", name, ":", payload};
    size_t lens[5] = {4, 1, strlen(name), 1, len};

    digest_parts(sha384 ? EVP_sha384() : EVP_sha256(), parts, lens, len > 0 ? 5 : 4, out);
}

void kms_att_replay(int sha384, const struct kms_runtime_event *ev, size_t n,
                    const char *stop_after, uint8_t *out)
{
    size_t hl = sha384 ? 48 : 32;
    uint8_t d[48];

    memset(out, 0, hl);
    for (size_t i = 0; i < n; i++) {
        const void *parts[2] = {out, d};
        size_t lens[2] = {hl, hl};

        kms_att_event_digest(sha384, ev[i].event, ev[i].payload.p, ev[i].payload.len, d);
        digest_parts(sha384 ? EVP_sha384() : EVP_sha256(), parts, lens, 2, out);
        if (stop_after != NULL && strcmp(ev[i].event, stop_after) == 0)
            break;
    }
}

void kms_app_boot_events(struct kms_runtime_event ev[KMS_APP_BOOT_EVENTS], const uint8_t *app_id,
                         const uint8_t *compose, const uint8_t *instance, size_t instance_len)
{
    memset(ev, 0, KMS_APP_BOOT_EVENTS * sizeof(ev[0]));
    ev[0].event = (char *)"system-preparing";
    ev[1].event = (char *)"app-id";
    ev[1].payload.p = (uint8_t *)app_id;
    ev[1].payload.len = 20;
    ev[2].event = (char *)"compose-hash";
    ev[2].payload.p = (uint8_t *)compose;
    ev[2].payload.len = 32;
    ev[3].event = (char *)"instance-id";
    ev[3].payload.p = (uint8_t *)instance;
    ev[3].payload.len = instance != NULL ? instance_len : 0;
    ev[4].event = (char *)"boot-mr-done";
}

const struct kms_runtime_event *kms_att_find_event(const struct kms_attestation *att,
                                                   const char *name)
{
    for (size_t i = 0; i < att->n_events; i++) {
        if (strcmp(att->events[i].event, "system-ready") == 0)
            break;
        if (strcmp(att->events[i].event, name) == 0)
            return &att->events[i];
    }
    return NULL;
}

void kms_report_data(const char *tag, const uint8_t *content, size_t len, uint8_t out[64])
{
    const void *parts[3] = {tag, ":", content};
    size_t lens[3] = {strlen(tag), 1, len};

    digest_parts(EVP_sha512(), parts, lens, len > 0 ? 3 : 2, out);
}

/* ------------------------------------------------------------------------------- JSON */

static json_t *hex_json(const struct kms_bytes *b)
{
    char *h = kms_hex_dup(b->p, b->len, 0);
    json_t *j;

    if (h == NULL)
        return NULL;
    j = json_string(h);
    free(h);
    return j;
}

int kms_att_event_log_json(const struct kms_attestation *att, char **json)
{
    json_t *arr = json_array();
    json_t *o = NULL;
    int rc = 0;

    *json = NULL;
    KMS_GUARD_PTR(arr);
    for (size_t i = 0; i < att->n_tdx_events; i++) {
        const struct kms_tdx_event *e = &att->tdx_events[i];

        /* serde field order: imr, event_type, digest, event, event_payload */
        o = json_object();
        KMS_GUARD_PTR(o);
        KMS_ENSURE(json_object_set_new(o, "imr", json_integer(e->imr)) == 0 &&
                       json_object_set_new(o, "event_type", json_integer(e->event_type)) == 0 &&
                       json_object_set_new(o, "digest", hex_json(&e->digest)) == 0 &&
                       json_object_set_new(o, "event", json_string(e->event)) == 0 &&
                       json_object_set_new(o, "event_payload", hex_json(&e->payload)) == 0,
                   KMS_ERR_INVAL, "cannot encode TDX event %zu as JSON (invalid UTF-8 name?)", i);
        KMS_ENSURE(json_array_append_new(arr, o) == 0, KMS_ERR_NOMEM, "out of memory");
        o = NULL;
    }
    *json = json_dumps(arr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    KMS_GUARD_PTR(*json);
out:
    json_decref(o);
    json_decref(arr);
    return rc;
}

static int json_hex_field(json_t *obj, const char *key, int required, size_t i,
                          struct kms_bytes *out)
{
    json_t *v = json_object_get(obj, key);
    const char *s;

    if (v == NULL && !required) {
        out->p = malloc(1);
        out->len = 0;
        return out->p == NULL ? kms_err_set(KMS_ERR_NOMEM, "out of memory") : 0;
    }
    if (!json_is_string(v))
        return kms_err_set(KMS_ERR_ATT_FORMAT, "event log entry %zu: \"%s\" must be a hex string",
                           i, key);
    s = json_string_value(v);
    if (strlen(s) > 2u * KMS_ATT_MAX_FIELD)
        return kms_err_set(KMS_ERR_ATT_FORMAT, "event log entry %zu: \"%s\" too long", i, key);
    /* serde hex does not accept a 0x prefix */
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        return kms_err_set(KMS_ERR_ATT_FORMAT, "event log entry %zu: \"%s\" is not plain hex", i,
                           key);
    if (kms_hex_decode(s, &out->p, &out->len) < 0)
        return kms_err_set(KMS_ERR_ATT_FORMAT, "event log entry %zu: \"%s\" is not valid hex", i,
                           key);
    return 0;
}

static int json_u32_field(json_t *obj, const char *key, size_t i, uint32_t *out)
{
    json_t *v = json_object_get(obj, key);
    json_int_t x;

    if (!json_is_integer(v))
        return kms_err_set(KMS_ERR_ATT_FORMAT, "event log entry %zu: \"%s\" must be an integer", i,
                           key);
    x = json_integer_value(v);
    if (x < 0 || x > (json_int_t)UINT32_MAX)
        return kms_err_set(KMS_ERR_ATT_FORMAT, "event log entry %zu: \"%s\" out of u32 range", i,
                           key);
    *out = (uint32_t)x;
    return 0;
}

int kms_att_from_legacy(const uint8_t *quote, size_t quote_len, const char *event_log_json,
                        size_t json_len, struct kms_attestation **out)
{
    struct kms_attestation *att = NULL;
    struct kms_tdx_quote q;
    json_error_t jerr;
    json_t *root = NULL;
    size_t n;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(quote_len <= KMS_ATT_MAX_FIELD && json_len <= KMS_ATT_MAX_BYTES, KMS_ERR_ATT_FORMAT,
               "legacy attestation too large");
    KMS_GUARD(kms_tdx_quote_parse(quote, quote_len, &q));
    root = json_loadb(event_log_json, json_len, JSON_REJECT_DUPLICATES, &jerr);
    KMS_ENSURE(root != NULL, KMS_ERR_ATT_FORMAT, "event log is not valid JSON: %s (line %d)",
               jerr.text, jerr.line);
    KMS_ENSURE(json_is_array(root), KMS_ERR_ATT_FORMAT, "event log must be a JSON array");
    n = json_array_size(root);
    KMS_ENSURE(n <= KMS_ATT_MAX_EVENTS, KMS_ERR_ATT_FORMAT,
               "event log has %zu entries, more than the maximum of %u", n, KMS_ATT_MAX_EVENTS);

    att = calloc(1, sizeof(*att));
    KMS_GUARD_PTR(att);
    att->mode = KMS_ATT_TDX;
    att->config = strdup("");
    KMS_GUARD_PTR(att->config);
    att->tdx_quote.p = malloc(quote_len);
    KMS_GUARD_PTR(att->tdx_quote.p);
    memcpy(att->tdx_quote.p, quote, quote_len);
    att->tdx_quote.len = quote_len;
    memcpy(att->report_data, q.report.report_data, 64);
    att->tdx_events = calloc(n > 0 ? n : 1, sizeof(*att->tdx_events));
    KMS_GUARD_PTR(att->tdx_events);
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(root, i);
        struct kms_tdx_event *e = &att->tdx_events[i];
        json_t *name;

        att->n_tdx_events = i + 1;
        KMS_ENSURE(json_is_object(o), KMS_ERR_ATT_FORMAT, "event log entry %zu is not an object",
                   i);
        KMS_GUARD(json_u32_field(o, "imr", i, &e->imr));
        KMS_GUARD(json_u32_field(o, "event_type", i, &e->event_type));
        KMS_GUARD(json_hex_field(o, "digest", 0, i, &e->digest));
        name = json_object_get(o, "event");
        KMS_ENSURE(json_is_string(name), KMS_ERR_ATT_FORMAT,
                   "event log entry %zu: \"event\" must be a string", i);
        KMS_ENSURE(json_string_length(name) <= KMS_ATT_MAX_FIELD &&
                       strlen(json_string_value(name)) == json_string_length(name),
                   KMS_ERR_ATT_FORMAT, "event log entry %zu: bad event name", i);
        e->event = strdup(json_string_value(name));
        KMS_GUARD_PTR(e->event);
        KMS_GUARD(json_hex_field(o, "event_payload", 1, i, &e->payload));
        if (e->event_type == KMS_EVENT_TYPE_RUNTIME)
            KMS_GUARD(kms_att_add_runtime_event(att, e->event, e->payload.p, e->payload.len));
    }
    if (att->events == NULL) {
        att->events = calloc(1, sizeof(*att->events));
        KMS_GUARD_PTR(att->events);
    }
    *out = att;
    att = NULL;
out:
    json_decref(root);
    kms_att_free(att);
    return rc;
}
