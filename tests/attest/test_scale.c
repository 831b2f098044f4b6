/*
 * SCALE codec and runtime events: real fixtures decode and re-encode byte-identically;
 * malformed inputs (truncated, trailing, oversize, non-canonical) fail with KMS_ERR_ATT_FORMAT;
 * event digests and replays reproduce the quote's RTMRs; the legacy JSON path round-trips.
 */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/events.h"
#include "attest/tdx.h"
#include "common/file.h"
#include "common/hex.h"
#include "test.h"

/* Decode then encode must give back exactly the input bytes. */
static void roundtrip_fixture(const char *rel, enum kms_att_mode mode)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture(rel, &len);
    struct kms_attestation *att = NULL;
    uint8_t *enc = NULL;
    size_t enc_len = 0;

    CHECK_OK(kms_att_decode(p, len, &att));
    if (att != NULL) {
        CHECK(att->mode == mode);
        CHECK_OK(kms_att_encode(att, 0, &enc, &enc_len));
        CHECK(enc_len == len);
        CHECK(enc != NULL && enc_len == len && memcmp(enc, p, len) == 0);
    }
    free(enc);
    kms_att_free(att);
    free(p);
}

static void test_roundtrip_fixtures(void)
{
    roundtrip_fixture("tdx/attestation-tdx.bin", KMS_ATT_TDX);
    roundtrip_fixture("nitro/attestation-prod.bin", KMS_ATT_NITRO);
    roundtrip_fixture("nitro/attestation-debug.bin", KMS_ATT_NITRO);
}

/* The decoded fields are the ones the fixture README documents. */
static void test_decoded_fields(void)
{
    static const char *names[9] = {"system-preparing", "app-id",       "compose-hash",
                                   "instance-id",      "boot-mr-done", "os-image-hash",
                                   "key-provider",     "storage-fs",   "system-ready"};
    static const uint8_t zero[64];
    size_t len;
    uint8_t *p = kms_test_load_fixture("tdx/attestation-tdx.bin", &len);
    struct kms_attestation *att = NULL;
    char hex[41];

    CHECK_OK(kms_att_decode(p, len, &att));
    if (att != NULL) {
        CHECK(att->tdx_quote.len == 5010);
        CHECK(att->n_tdx_events == 33);
        CHECK(att->n_events == 9);
        for (size_t i = 0; i < 9 && i < att->n_events; i++)
            CHECK(strcmp(att->events[i].event, names[i]) == 0);
        CHECK(memcmp(att->report_data, zero, 64) == 0);
        CHECK(att->config != NULL);
    }
    kms_att_free(att);
    free(p);

    p = kms_test_load_fixture("nitro/attestation-prod.bin", &len);
    CHECK_OK(kms_att_decode(p, len, &att));
    if (att != NULL) {
        CHECK(att->nsm_quote.len == 4526);
        CHECK(att->n_events == 1);
        if (att->n_events == 1) {
            CHECK(strcmp(att->events[0].event, "app-id") == 0);
            CHECK(att->events[0].payload.len == 20);
            kms_hex_encode(att->events[0].payload.p, 20, hex);
            CHECK(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4") == 0);
        }
        CHECK(strstr(att->config,
                     "1894b0b29e94a9db16e88a2914f0923e52bb16c08bf3bb484df786a147e2eb79") != NULL);
    }
    kms_att_free(att);
    free(p);
}

/* Every strict prefix of a valid attestation is rejected as a format error. */
static void test_truncated(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("nitro/attestation-prod.bin", &len);
    struct kms_attestation *att = NULL;
    int bad = 0;

    for (size_t n = 0; n < len; n++) {
        int rc = kms_att_decode(p, n, &att);

        if (rc != KMS_ERR_ATT_FORMAT || att != NULL)
            bad++;
        kms_att_free(att);
        att = NULL;
    }
    CHECK(bad == 0);
    free(p);

    p = kms_test_load_fixture("tdx/attestation-tdx.bin", &len);
    for (size_t n = 0; n < len; n += 7) {
        int rc = kms_att_decode(p, n, &att);

        if (rc != KMS_ERR_ATT_FORMAT)
            bad++;
        kms_att_free(att);
        att = NULL;
    }
    CHECK(bad == 0);
    free(p);
}

/* One extra byte after a valid attestation is rejected. */
static void test_trailing(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tdx/attestation-tdx.bin", &len);
    uint8_t *q = malloc(len + 1);
    struct kms_attestation *att = NULL;

    memcpy(q, p, len);
    q[len] = 0;
    CHECK_RC(kms_att_decode(q, len + 1, &att), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("trailing");
    CHECK(att == NULL);
    free(q);
    free(p);
}

/* Inputs over the stated limits are rejected before any allocation of that size. */
static void test_oversize(void)
{
    struct kms_attestation *att = NULL;
    uint8_t *big = calloc(1, KMS_ATT_MAX_BYTES + 1);
    /* V0, Nitro, compact u32 length MAX_FIELD + 1 */
    uint32_t l = ((KMS_ATT_MAX_FIELD + 1u) << 2) | 2u;
    uint8_t field[6] = {
        0, 2, (uint8_t)l, (uint8_t)(l >> 8), (uint8_t)(l >> 16), (uint8_t)(l >> 24)};
    /* V0, Nitro, empty quote, then 1025 runtime events (compact u16) */
    uint16_t c = (uint16_t)(((KMS_ATT_MAX_EVENTS + 1u) << 2) | 1u);
    uint8_t events[5] = {0, 2, 0, (uint8_t)c, (uint8_t)(c >> 8)};

    CHECK_RC(kms_att_decode(big, KMS_ATT_MAX_BYTES + 1, &att), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("exceeds the maximum");
    CHECK_RC(kms_att_decode(field, sizeof(field), &att), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("field maximum");
    CHECK_RC(kms_att_decode(events, sizeof(events), &att), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("exceed the maximum");
    CHECK(att == NULL);
    free(big);
}

/* Compact lengths: the big-integer form and over-long encodings are rejected; unknown
 * variants, bad UTF-8 and a non-V0 version too. */
static void test_malformed_compact_and_variants(void)
{
    struct kms_attestation *att = NULL;
    static const uint8_t bigint[] = {0, 2, 0x03, 0, 0, 0, 0};
    static const uint8_t overlong16[] = {0, 2, 0x01, 0x00};             /* 0 in 2 bytes */
    static const uint8_t overlong32[] = {0, 2, 0x02, 0x01, 0x00, 0x00}; /* 64 in 4 bytes */
    static const uint8_t v1[] = {1, 2, 0};
    static const uint8_t variant[] = {0, 3, 0};
    /* Nitro, empty quote, one runtime event whose name is the invalid UTF-8 byte 0xff */
    static const uint8_t utf8[] = {0, 2, 0, 4, 4, 0xff, 0};

    CHECK_RC(kms_att_decode(bigint, sizeof(bigint), &att), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("big-integer");
    CHECK_RC(kms_att_decode(overlong16, sizeof(overlong16), &att), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("non-canonical");
    CHECK_RC(kms_att_decode(overlong32, sizeof(overlong32), &att), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("non-canonical");
    CHECK_RC(kms_att_decode(v1, sizeof(v1), &att), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("only V0");
    CHECK_RC(kms_att_decode(variant, sizeof(variant), &att), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("variant");
    CHECK_RC(kms_att_decode(utf8, sizeof(utf8), &att), KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("UTF-8");
    CHECK(att == NULL);
}

/* All three compact forms and their boundaries survive encode → decode. */
static void test_compact_boundaries(void)
{
    static const size_t sizes[] = {0, 1, 63, 64, 16383, 16384, 70000};
    struct kms_attestation *att = calloc(1, sizeof(*att));
    struct kms_attestation *back = NULL;
    uint8_t *buf = malloc(70000);
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    char name[16];

    att->mode = KMS_ATT_NITRO;
    att->config = strdup("{}");
    for (size_t i = 0; i < 70000; i++)
        buf[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        snprintf(name, sizeof(name), "ev%zu", i);
        CHECK_OK(kms_att_add_runtime_event(att, name, buf, sizes[i]));
    }
    att->report_data[0] = 0xaa;
    CHECK_OK(kms_att_encode(att, 0, &enc, &enc_len));
    CHECK_OK(kms_att_decode(enc, enc_len, &back));
    if (back != NULL) {
        CHECK(back->n_events == sizeof(sizes) / sizeof(sizes[0]));
        for (size_t i = 0; i < back->n_events; i++) {
            CHECK(back->events[i].payload.len == sizes[i]);
            CHECK(sizes[i] == 0 || memcmp(back->events[i].payload.p, buf, sizes[i]) == 0);
        }
        CHECK(back->report_data[0] == 0xaa);
        CHECK(strcmp(back->config, "{}") == 0);
    }
    free(enc);
    kms_att_free(back);
    kms_att_free(att);
    free(buf);
}

/* Stripped encoding keeps only imr-3 TDX events; runtime ones lose their digest. */
static void test_stripped(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tdx/attestation-tdx.bin", &len);
    struct kms_attestation *att = NULL;
    struct kms_attestation *s = NULL;
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    size_t n3 = 0;

    CHECK_OK(kms_att_decode(p, len, &att));
    if (att == NULL)
        goto out;
    for (size_t i = 0; i < att->n_tdx_events; i++)
        n3 += att->tdx_events[i].imr == 3;
    CHECK(n3 > 0 && n3 < att->n_tdx_events);
    CHECK_OK(kms_att_encode(att, 1, &enc, &enc_len));
    CHECK(enc_len < len);
    CHECK_OK(kms_att_decode(enc, enc_len, &s));
    if (s == NULL)
        goto out;
    CHECK(s->n_tdx_events == n3);
    for (size_t i = 0; i < s->n_tdx_events; i++) {
        CHECK(s->tdx_events[i].imr == 3);
        if (s->tdx_events[i].event_type == KMS_EVENT_TYPE_RUNTIME)
            CHECK(s->tdx_events[i].digest.len == 0);
        else
            CHECK(s->tdx_events[i].payload.len == 0);
    }
    CHECK(s->n_events == att->n_events);
    CHECK(s->tdx_quote.len == att->tdx_quote.len);
out:
    free(enc);
    kms_att_free(s);
    kms_att_free(att);
    free(p);
}

static void test_mode_names(void)
{
    CHECK(strcmp(kms_att_mode_name(KMS_ATT_TDX), "dstack-tdx") == 0);
    CHECK(strcmp(kms_att_mode_name(KMS_ATT_GCP_TDX), "dstack-gcp-tdx") == 0);
    CHECK(strcmp(kms_att_mode_name(KMS_ATT_NITRO), "dstack-nitro-enclave") == 0);
}

/* report_data tag vector from the spec. */
static void test_report_data(void)
{
    uint8_t rd[64];
    char hex[129];

    kms_report_data("app-data", (const uint8_t *)"test content", 12, rd);
    kms_hex_encode(rd, 64, hex);
    CHECK(strncmp(hex, "7ea0b744ed5e9c0c", 16) == 0);
}

/* Replaying the fixture's event log gives RTMR0-2 and the runtime events give RTMR3; the
 * runtime events' recomputed digests equal the logged imr-3 digests. */
static void test_rtmr_replay(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tdx/attestation-tdx.bin", &len);
    struct kms_attestation *att = NULL;
    struct kms_tdx_quote q;
    uint8_t mr[4][48] = {{0}};
    uint8_t rtmr3[48];

    CHECK_OK(kms_att_decode(p, len, &att));
    if (att == NULL)
        goto out;
    CHECK_OK(kms_tdx_quote_parse(att->tdx_quote.p, att->tdx_quote.len, &q));
    for (size_t i = 0; i < att->n_tdx_events; i++) {
        const struct kms_tdx_event *e = &att->tdx_events[i];
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        uint8_t d[48];
        const uint8_t *dig = e->digest.p;

        CHECK(e->imr < 4);
        if (e->imr >= 4)
            continue;
        if (e->event_type == KMS_EVENT_TYPE_RUNTIME) {
            kms_att_event_digest(1, e->event, e->payload.p, e->payload.len, d);
            CHECK(e->digest.len == 48 && memcmp(d, e->digest.p, 48) == 0);
            dig = d;
        } else {
            CHECK(e->digest.len == 48);
        }
        EVP_DigestInit_ex(c, EVP_sha384(), NULL);
        EVP_DigestUpdate(c, mr[e->imr], 48);
        EVP_DigestUpdate(c, dig, 48);
        EVP_DigestFinal_ex(c, mr[e->imr], NULL);
        EVP_MD_CTX_free(c);
    }
    for (int i = 0; i < 4; i++)
        CHECK(memcmp(mr[i], q.report.rtmr[i], 48) == 0);
    kms_att_replay(1, att->events, att->n_events, NULL, rtmr3);
    CHECK(memcmp(rtmr3, q.report.rtmr[3], 48) == 0);
    /* stopping early gives a different (boot-time) value */
    kms_att_replay(1, att->events, att->n_events, "boot-mr-done", rtmr3);
    CHECK(memcmp(rtmr3, q.report.rtmr[3], 48) != 0);
out:
    kms_att_free(att);
    free(p);
}

/* find_event returns the first match and never looks past "system-ready". */
static void test_find_event(void)
{
    struct kms_attestation *att = calloc(1, sizeof(*att));
    const struct kms_runtime_event *e;

    CHECK_OK(kms_att_add_runtime_event(att, "app-id", (const uint8_t *)"A", 1));
    CHECK_OK(kms_att_add_runtime_event(att, "app-id", (const uint8_t *)"B", 1));
    CHECK_OK(kms_att_add_runtime_event(att, "system-ready", NULL, 0));
    CHECK_OK(kms_att_add_runtime_event(att, "key-provider", (const uint8_t *)"K", 1));
    e = kms_att_find_event(att, "app-id");
    CHECK(e != NULL && e->payload.len == 1 && e->payload.p[0] == 'A');
    CHECK(kms_att_find_event(att, "key-provider") == NULL);
    CHECK(kms_att_find_event(att, "missing") == NULL);
    kms_att_free(att);
}

/* event_log_json → from_legacy reproduces the event log and the runtime events; a missing
 * digest defaults to empty; malformed logs and quotes are format errors. */
static void test_legacy_json(void)
{
    size_t len;
    uint8_t *p = kms_test_load_fixture("tdx/attestation-tdx.bin", &len);
    struct kms_attestation *att = NULL;
    struct kms_attestation *leg = NULL;
    char *json = NULL;
    static const char nodigest[] =
        "[{\"imr\":3,\"event_type\":134217729,\"event\":\"app-id\",\"event_payload\":\"0102\"}]";
    static const char nopayload[] = "[{\"imr\":3,\"event_type\":1,\"event\":\"x\"}]";

    CHECK_OK(kms_att_decode(p, len, &att));
    if (att == NULL)
        goto out;
    CHECK_OK(kms_att_event_log_json(att, &json));
    CHECK(json != NULL && strncmp(json, "[{\"imr\":0,\"event_type\":", 23) == 0);
    CHECK_OK(kms_att_from_legacy(att->tdx_quote.p, att->tdx_quote.len, json, strlen(json), &leg));
    if (leg != NULL) {
        CHECK(leg->mode == KMS_ATT_TDX);
        CHECK(leg->n_tdx_events == att->n_tdx_events);
        for (size_t i = 0; i < leg->n_tdx_events && i < att->n_tdx_events; i++) {
            CHECK(leg->tdx_events[i].imr == att->tdx_events[i].imr);
            CHECK(leg->tdx_events[i].event_type == att->tdx_events[i].event_type);
            CHECK(leg->tdx_events[i].digest.len == att->tdx_events[i].digest.len);
            CHECK(strcmp(leg->tdx_events[i].event, att->tdx_events[i].event) == 0);
            CHECK(leg->tdx_events[i].payload.len == att->tdx_events[i].payload.len);
        }
        CHECK(leg->n_events == att->n_events);
        for (size_t i = 0; i < leg->n_events && i < att->n_events; i++)
            CHECK(strcmp(leg->events[i].event, att->events[i].event) == 0);
        CHECK(memcmp(leg->report_data, att->report_data, 64) == 0);
        CHECK(strcmp(leg->config, "") == 0);
    }
    kms_att_free(leg);
    leg = NULL;

    CHECK_OK(kms_att_from_legacy(att->tdx_quote.p, att->tdx_quote.len, nodigest, strlen(nodigest),
                                 &leg));
    if (leg != NULL) {
        CHECK(leg->n_tdx_events == 1 && leg->tdx_events[0].digest.len == 0);
        CHECK(leg->n_events == 1 && leg->events[0].payload.len == 2);
    }
    kms_att_free(leg);
    leg = NULL;

    CHECK_RC(kms_att_from_legacy(att->tdx_quote.p, att->tdx_quote.len, "{}", 2, &leg),
             KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("JSON array");
    CHECK_RC(kms_att_from_legacy(att->tdx_quote.p, att->tdx_quote.len, nopayload, strlen(nopayload),
                                 &leg),
             KMS_ERR_ATT_FORMAT);
    CHECK_DETAIL("event_payload");
    CHECK_RC(kms_att_from_legacy(att->tdx_quote.p, 100, json, strlen(json), &leg),
             KMS_ERR_ATT_FORMAT);
out:
    free(json);
    kms_att_free(leg);
    kms_att_free(att);
    free(p);
}

/* Deterministic mutation: random byte changes of real attestations never crash the decoder
 * (ASan/UBSan build) and fail, when they fail, only with KMS_ERR_ATT_FORMAT; whatever decodes
 * re-encodes to the same bytes. */
static void test_mutations(void)
{
    static const char *files[2] = {"tdx/attestation-tdx.bin", "nitro/attestation-prod.bin"};
    uint32_t seed = 12345;
    int bad = 0;

    for (int f = 0; f < 2; f++) {
        size_t len;
        uint8_t *p = kms_test_load_fixture(files[f], &len);
        uint8_t *c = malloc(len);

        for (int it = 0; it < 3000; it++) {
            struct kms_attestation *att = NULL;
            uint8_t *enc = NULL;
            size_t enc_len = 0;
            int rc;

            memcpy(c, p, len);
            for (int k = 0; k < 1 + it % 3; k++) {
                seed = seed * 1103515245u + 12345u;
                /* bias towards the first 200 bytes, where the structure (lengths) lives */
                size_t off = (seed >> 8) % (it % 2 ? len : (len < 200 ? len : 200));

                seed = seed * 1103515245u + 12345u;
                c[off] = (uint8_t)(seed >> 16);
            }
            rc = kms_att_decode(c, len, &att);
            if (rc != 0 && rc != KMS_ERR_ATT_FORMAT)
                bad++;
            if (rc == 0) {
                if (kms_att_encode(att, 0, &enc, &enc_len) != 0 || enc_len != len ||
                    memcmp(enc, c, len) != 0)
                    bad++;
            }
            free(enc);
            kms_att_free(att);
        }
        free(c);
        free(p);
    }
    CHECK(bad == 0);
}

int main(void)
{
    RUN(test_roundtrip_fixtures);
    RUN(test_decoded_fields);
    RUN(test_truncated);
    RUN(test_trailing);
    RUN(test_oversize);
    RUN(test_malformed_compact_and_variants);
    RUN(test_compact_boundaries);
    RUN(test_stripped);
    RUN(test_mode_names);
    RUN(test_report_data);
    RUN(test_rtmr_replay);
    RUN(test_find_event);
    RUN(test_legacy_json);
    RUN(test_mutations);
    TEST_MAIN_END();
}
