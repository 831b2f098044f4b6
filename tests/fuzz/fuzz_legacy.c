/*
 * Fuzz target: the legacy RA-TLS event log (OID .1.2), a JSON array read by
 * kms_att_from_legacy. The input is the JSON text; the quote is a fixed, minimal but
 * well-formed v4 quote built here, so every input reaches the JSON parser (the quote parser has
 * its own target, and fuzz_ratls mutates both halves together).
 *
 * Invariants: a rejection is KMS_ERR_ATT_FORMAT (or NOMEM) with *out == NULL; an accepted log
 * gives a TDX attestation whose report_data is the quote's and whose runtime events are exactly
 * the 0x08000001 entries; writing the log back as JSON and reading it again gives the same
 * events.
 */
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/events.h"
#include "attest/tdx.h"
#include "fuzz.h"

#define Q_AUTH_LEN (64u + 64u + 2u + 4u + KMS_TDX_QE_REPORT_LEN + 64u + 2u + 2u + 4u)
#define Q_LEN (KMS_TDX_HEADER_LEN + KMS_TDX_BODY_LEN + 4u + Q_AUTH_LEN)

static uint8_t quote[Q_LEN];

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}

/* header: version 4, ECDSA P-256 key, TEE type TDX; report_data 0x00..0x3f; the certification
 * data is a zero QE report and signatures, no QE auth data, an empty PCK chain. */
static void build_quote(void)
{
    uint8_t *p = quote;

    put16(p, 4);
    put16(p + 2, 2);
    put32(p + 4, 0x81);
    p += KMS_TDX_HEADER_LEN;
    for (unsigned i = 0; i < 64; i++)
        p[KMS_TDX_BODY_LEN - 64 + i] = (uint8_t)i;
    p += KMS_TDX_BODY_LEN;
    put32(p, Q_AUTH_LEN);
    p += 4 + 128;
    put16(p, 6);
    put32(p + 2, KMS_TDX_QE_REPORT_LEN + 64u + 2u + 2u + 4u);
    p += 6 + KMS_TDX_QE_REPORT_LEN + 64 + 2;
    put16(p, 5);
}

static int bytes_eq(const struct kms_bytes *a, const struct kms_bytes *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    struct kms_attestation *att = NULL;
    struct kms_attestation *again = NULL;
    char *json = NULL;
    size_t n_runtime = 0;
    int rc;

    if (!ready) {
        struct kms_tdx_quote q;

        build_quote();
        FUZZ_ASSERT(kms_tdx_quote_parse(quote, sizeof(quote), &q) == 0);
        ready = 1;
    }
    rc = kms_att_from_legacy(quote, sizeof(quote), (const char *)data, size, &att);
    if (rc < 0) {
        FUZZ_ASSERT(att == NULL);
        FUZZ_ASSERT(rc == KMS_ERR_ATT_FORMAT || rc == KMS_ERR_NOMEM);
        return 0;
    }
    FUZZ_ASSERT(att->mode == KMS_ATT_TDX && att->config != NULL && att->config[0] == '\0');
    FUZZ_ASSERT(att->tdx_quote.len == sizeof(quote));
    FUZZ_ASSERT(memcmp(att->report_data, quote + sizeof(quote) - Q_AUTH_LEN - 4 - 64, 64) == 0);
    for (size_t i = 0; i < att->n_tdx_events; i++) {
        const struct kms_tdx_event *e = &att->tdx_events[i];

        FUZZ_ASSERT(e->event != NULL && e->digest.p != NULL && e->payload.p != NULL);
        if (e->event_type != KMS_EVENT_TYPE_RUNTIME)
            continue;
        FUZZ_ASSERT(n_runtime < att->n_events);
        FUZZ_ASSERT(strcmp(att->events[n_runtime].event, e->event) == 0);
        FUZZ_ASSERT(bytes_eq(&att->events[n_runtime].payload, &e->payload));
        n_runtime++;
    }
    FUZZ_ASSERT(n_runtime == att->n_events);

    /* JSON written by us reads back to the same events */
    FUZZ_ASSERT(kms_att_event_log_json(att, &json) == 0);
    FUZZ_ASSERT(kms_att_from_legacy(quote, sizeof(quote), json, strlen(json), &again) == 0);
    FUZZ_ASSERT(again->n_tdx_events == att->n_tdx_events && again->n_events == att->n_events);
    for (size_t i = 0; i < att->n_tdx_events; i++) {
        const struct kms_tdx_event *a = &att->tdx_events[i];
        const struct kms_tdx_event *b = &again->tdx_events[i];

        FUZZ_ASSERT(a->imr == b->imr && a->event_type == b->event_type);
        FUZZ_ASSERT(bytes_eq(&a->digest, &b->digest) && bytes_eq(&a->payload, &b->payload));
        FUZZ_ASSERT(strcmp(a->event, b->event) == 0);
    }
    free(json);
    kms_att_free(again);
    kms_att_free(att);
    return 0;
}
