/*
 * Fuzz target: SCALE VersionedAttestation decoding (kms_att_decode), the parser every RA-TLS
 * certificate and every GetAppKey request goes through.
 *
 * Invariants checked beyond "no crash, no leak":
 *  - a rejection is KMS_ERR_ATT_FORMAT (or NOMEM) with *out == NULL;
 *  - the decoder is strict (canonical compact lengths, no trailing bytes), so an accepted input
 *    re-encodes to exactly the same bytes;
 *  - the stripped encoding decodes again and is a fixed point of stripping;
 *  - for TDX modes, the event log survives the legacy JSON path (event_log_json →
 *    from_legacy) unchanged when the quote parses.
 */
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/events.h"
#include "attest/tdx.h"
#include "fuzz.h"

static int bytes_eq(const struct kms_bytes *a, const struct kms_bytes *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static void check_legacy_path(const struct kms_attestation *att)
{
    struct kms_attestation *leg = NULL;
    struct kms_tdx_quote q;
    char *json = NULL;

    FUZZ_ASSERT(kms_att_event_log_json(att, &json) == 0);
    if (kms_tdx_quote_parse(att->tdx_quote.p, att->tdx_quote.len, &q) == 0) {
        FUZZ_ASSERT(kms_att_from_legacy(att->tdx_quote.p, att->tdx_quote.len, json, strlen(json),
                                        &leg) == 0);
        FUZZ_ASSERT(leg->n_tdx_events == att->n_tdx_events);
        for (size_t i = 0; i < att->n_tdx_events; i++) {
            const struct kms_tdx_event *a = &att->tdx_events[i];
            const struct kms_tdx_event *b = &leg->tdx_events[i];

            FUZZ_ASSERT(a->imr == b->imr && a->event_type == b->event_type);
            FUZZ_ASSERT(bytes_eq(&a->digest, &b->digest) && bytes_eq(&a->payload, &b->payload));
            FUZZ_ASSERT(strcmp(a->event, b->event) == 0);
        }
        FUZZ_ASSERT(memcmp(leg->report_data, q.report.report_data, 64) == 0);
    }
    kms_att_free(leg);
    free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_attestation *att = NULL;
    struct kms_attestation *st = NULL;
    uint8_t *enc = NULL;
    uint8_t *senc = NULL;
    uint8_t *senc2 = NULL;
    size_t enc_len = 0;
    size_t senc_len = 0;
    size_t senc2_len = 0;
    uint8_t rtmr[48];
    int rc;

    rc = kms_att_decode(data, size, &att);
    if (rc < 0) {
        FUZZ_ASSERT(att == NULL);
        FUZZ_ASSERT(rc == KMS_ERR_ATT_FORMAT || rc == KMS_ERR_NOMEM);
        return 0;
    }
    FUZZ_ASSERT(att != NULL && att->config != NULL);

    /* exact round trip */
    FUZZ_ASSERT(kms_att_encode(att, 0, &enc, &enc_len) == 0);
    FUZZ_ASSERT(enc_len == size && memcmp(enc, data, size) == 0);

    /* stripped form: decodable, and stripping it again changes nothing */
    FUZZ_ASSERT(kms_att_encode(att, 1, &senc, &senc_len) == 0);
    FUZZ_ASSERT(kms_att_decode(senc, senc_len, &st) == 0);
    FUZZ_ASSERT(kms_att_encode(st, 1, &senc2, &senc2_len) == 0);
    FUZZ_ASSERT(senc2_len == senc_len && memcmp(senc, senc2, senc_len) == 0);

    /* the consumers of a decoded attestation that need no roots */
    kms_att_replay(1, att->events, att->n_events, NULL, rtmr);
    kms_att_replay(0, att->events, att->n_events, "boot-mr-done", rtmr);
    (void)kms_att_find_event(att, "app-id");
    if (att->mode == KMS_ATT_TDX || att->mode == KMS_ATT_GCP_TDX)
        check_legacy_path(att);

    free(enc);
    free(senc);
    free(senc2);
    kms_att_free(st);
    kms_att_free(att);
    return 0;
}
