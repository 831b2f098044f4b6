/*
 * Fuzz target: what the KMS derives from an attestation after verification and before asking
 * the authorization backend: kms_boot_info_derive (vm_config JSON from the attestation's config,
 * runtime-event lookups, MR replays, the Nitro device id) and the webhook body built from it
 * (kms_auth_boot_info_json). The input is a SCALE attestation; verification is replaced by a
 * fixed kms_verified of the same mode (TD report from the quote when it parses), so the fuzzer
 * reaches these consumers without forging signatures.
 *
 * Invariants: derivation fails with KMS_ERR_ATT_FORMAT (or NOMEM) and a cleared result, or
 * succeeds with app_id / compose_hash / instance_id equal to the runtime events' payloads;
 * the webhook body is valid JSON whenever it is produced.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/tdx.h"
#include "chain/auth.h"
#include "fuzz.h"

static void fake_verified(const struct kms_attestation *att, struct kms_verified *v)
{
    struct kms_tdx_quote q;

    memset(v, 0, sizeof(*v));
    v->mode = att->mode;
    if (att->mode != KMS_ATT_NITRO &&
        kms_tdx_quote_parse(att->tdx_quote.p, att->tdx_quote.len, &q) == 0)
        v->td = q.report;
    memset(v->ppid, 0x5a, 16);
    v->ppid_len = 16;
    for (int i = 0; i < 3; i++)
        memset(v->pcr[i], 0x11 * (i + 1), sizeof(v->pcr[i]));
    snprintf(v->module_id, sizeof(v->module_id), "i-0827e799ec9232d44-enc019b5640fdf630d6");
}

static void check_payload(const struct kms_attestation *att, const char *name,
                          const struct kms_bytes *b)
{
    const struct kms_runtime_event *e = kms_att_find_event(att, name);

    if (e == NULL) {
        FUZZ_ASSERT(b->len == 0);
        return;
    }
    FUZZ_ASSERT(b->len == e->payload.len &&
                (b->len == 0 || memcmp(b->p, e->payload.p, b->len) == 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_attestation *att = NULL;
    struct kms_verified v;

    if (kms_att_decode(data, size, &att) < 0)
        return 0;
    fake_verified(att, &v);
    for (int boottime = 0; boottime <= 1; boottime++) {
        struct kms_boot_info bi;
        int rc = kms_boot_info_derive(NULL, att, &v, NULL, boottime, &bi);
        char *json;

        if (rc < 0) {
            static const struct kms_boot_info zero;

            FUZZ_ASSERT(rc == KMS_ERR_ATT_FORMAT || rc == KMS_ERR_NOMEM);
            FUZZ_ASSERT(memcmp(&bi, &zero, sizeof(bi)) == 0);
            continue;
        }
        FUZZ_ASSERT(bi.mode == att->mode);
        check_payload(att, "app-id", &bi.app_id);
        if (att->mode != KMS_ATT_NITRO) {
            check_payload(att, "compose-hash", &bi.compose_hash);
            check_payload(att, "instance-id", &bi.instance_id);
        }
        if (boottime)
            FUZZ_ASSERT(bi.key_provider_info.len == 0);
        else
            check_payload(att, "key-provider", &bi.key_provider_info);
        json = kms_auth_boot_info_json(&bi);
        if (json != NULL) {
            json_error_t jerr;
            json_t *o = json_loads(json, 0, &jerr);

            FUZZ_ASSERT(json_is_object(o));
            json_decref(o);
            free(json);
        }
        kms_boot_info_free(&bi);
    }
    kms_verified_free(&v);
    kms_att_free(att);
    return 0;
}
