/* SCALE codec for dstack VersionedAttestation V0 (kms-reference.md §5.3). */
#include <stdlib.h>
#include <string.h>

#include "attest/events.h"
#include "attest/internal.h"
#include "attest/scale.h"
#include "common/buf.h"
#include "common/utf8.h"

const char *kms_att_mode_name(enum kms_att_mode m)
{
    switch (m) {
    case KMS_ATT_TDX:
        return "dstack-tdx";
    case KMS_ATT_GCP_TDX:
        return "dstack-gcp-tdx";
    case KMS_ATT_NITRO:
        return "dstack-nitro-enclave";
    }
    return "unknown";
}

static void bytes_free(struct kms_bytes *b)
{
    free(b->p);
    b->p = NULL;
    b->len = 0;
}

static void tpm_free(struct kms_tpm_quote *q)
{
    bytes_free(&q->message);
    bytes_free(&q->signature);
    for (size_t i = 0; i < q->n_pcrs; i++) {
        free(q->pcrs[i].algorithm);
        bytes_free(&q->pcrs[i].value);
    }
    free(q->pcrs);
    bytes_free(&q->ak_cert);
    for (size_t i = 0; i < q->n_events; i++)
        bytes_free(&q->events[i].digest);
    free(q->events);
    memset(q, 0, sizeof(*q));
}

void kms_att_free(struct kms_attestation *att)
{
    if (att == NULL)
        return;
    bytes_free(&att->tdx_quote);
    for (size_t i = 0; i < att->n_tdx_events; i++) {
        bytes_free(&att->tdx_events[i].digest);
        free(att->tdx_events[i].event);
        bytes_free(&att->tdx_events[i].payload);
    }
    free(att->tdx_events);
    tpm_free(&att->tpm);
    bytes_free(&att->nsm_quote);
    for (size_t i = 0; i < att->n_events; i++) {
        free(att->events[i].event);
        bytes_free(&att->events[i].payload);
    }
    free(att->events);
    free(att->config);
    free(att);
}

int kms_bytes_dup(struct kms_bytes *dst, const void *p, size_t n)
{
    dst->p = malloc(n > 0 ? n : 1);
    if (dst->p == NULL)
        return kms_err_set(KMS_ERR_NOMEM, "out of memory");
    if (n > 0)
        memcpy(dst->p, p, n);
    dst->len = n;
    return 0;
}

/* ---------------------------------------------------------------- SCALE primitives (attest.h) */

int kms_scale_get_compact(struct kms_reader *r, size_t *out)
{
    size_t at = r->off;
    uint8_t b0;
    uint16_t v16;
    uint32_t v32;

    if (kms_rd_u8(r, &b0) < 0)
        return kms_err_set(KMS_ERR_PARSE, "truncated SCALE compact length at offset %zu", at);
    switch (b0 & 3u) {
    case 0:
        *out = b0 >> 2;
        return 0;
    case 1:
        r->off = at;
        if (kms_rd_u16le(r, &v16) < 0)
            return kms_err_set(KMS_ERR_PARSE, "truncated SCALE compact length at offset %zu", at);
        if ((v16 >> 2) < 64u)
            return kms_err_set(KMS_ERR_PARSE, "non-canonical compact length at offset %zu", at);
        *out = v16 >> 2;
        return 0;
    case 2:
        r->off = at;
        if (kms_rd_u32le(r, &v32) < 0)
            return kms_err_set(KMS_ERR_PARSE, "truncated SCALE compact length at offset %zu", at);
        if ((v32 >> 2) < (1u << 14))
            return kms_err_set(KMS_ERR_PARSE, "non-canonical compact length at offset %zu", at);
        *out = v32 >> 2;
        return 0;
    default:
        return kms_err_set(KMS_ERR_PARSE,
                           "SCALE compact big-integer length at offset %zu is not supported", at);
    }
}

/* The n-byte body of a Vec<u8> or String of at most max bytes, borrowed from r. */
static int get_body(struct kms_reader *r, size_t max, const char *what, const char *kind,
                    const uint8_t **p, size_t *n)
{
    int rc = kms_scale_get_compact(r, n);

    if (rc < 0)
        return kms_err_wrap(rc, "%s", what);
    if (*n > max)
        return kms_err_set(KMS_ERR_TOOBIG, "%s: %zu bytes exceed the field maximum of %zu", what,
                           *n, max);
    if (kms_rd_ptr(r, *n, p) < 0)
        return kms_err_set(KMS_ERR_PARSE, "%s: truncated %s at offset %zu", what, kind, r->off);
    return 0;
}

int kms_scale_get_bytes(struct kms_reader *r, size_t max, const char *what, struct kms_bytes *out)
{
    const uint8_t *p;
    size_t n;
    int rc = get_body(r, max, what, "byte vector", &p, &n);

    if (rc < 0)
        return rc;
    return kms_bytes_dup(out, p, n);
}

int kms_scale_get_str(struct kms_reader *r, size_t max, const char *what, char **out)
{
    const uint8_t *p;
    size_t n;
    char *s;
    int rc = get_body(r, max, what, "string", &p, &n);

    if (rc < 0)
        return rc;
    if (!kms_utf8_valid(p, n))
        return kms_err_set(KMS_ERR_PARSE, "%s is not UTF-8 without NUL", what);
    s = malloc(n + 1);
    if (s == NULL)
        return kms_err_set(KMS_ERR_NOMEM, "out of memory");
    memcpy(s, p, n);
    s[n] = '\0';
    *out = s;
    return 0;
}

int kms_scale_put_compact(struct kms_buf *b, size_t n)
{
    if (n < 64u)
        return kms_buf_put_u8(b, (uint8_t)(n << 2));
    if (n < (1u << 14))
        return kms_buf_put_u16le(b, (uint16_t)((n << 2) | 1u));
    if (n < (1u << 30))
        return kms_buf_put_u32le(b, (uint32_t)((n << 2) | 2u));
    return kms_err_set(KMS_ERR_TOOBIG, "length %zu too large for a SCALE compact", n);
}

int kms_scale_put_bytes(struct kms_buf *b, const uint8_t *p, size_t n)
{
    int rc = kms_scale_put_compact(b, n);

    if (rc < 0 || n == 0)
        return rc;
    return kms_buf_put(b, p, n);
}

/* ------------------------------------------------------------------------------- decoding
 * Primitive errors (KMS_ERR_PARSE, KMS_ERR_TOOBIG) become KMS_ERR_ATT_FORMAT in
 * kms_att_decode. */

/* Length of a vector of elements each at least min_elem bytes long, at most max elements. */
static int rd_count(struct kms_reader *r, size_t max, size_t min_elem, const char *what, size_t *n)
{
    int rc = kms_scale_get_compact(r, n);

    if (rc < 0)
        return kms_err_wrap(rc, "%s", what);
    if (*n > max)
        return kms_err_set(KMS_ERR_ATT_FORMAT, "%s: %zu entries exceed the maximum of %zu", what,
                           *n, max);
    if (*n > kms_rd_left(r) / min_elem)
        return kms_err_set(KMS_ERR_ATT_FORMAT, "%s: %zu entries cannot fit in %zu remaining bytes",
                           what, *n, kms_rd_left(r));
    return 0;
}

static int rd_bytes(struct kms_reader *r, const char *what, struct kms_bytes *b)
{
    return kms_scale_get_bytes(r, KMS_ATT_MAX_FIELD, what, b);
}

static int rd_string(struct kms_reader *r, const char *what, char **out)
{
    return kms_scale_get_str(r, KMS_ATT_MAX_FIELD, what, out);
}

static int rd_tdx_quote(struct kms_reader *r, struct kms_attestation *att)
{
    size_t n;
    int rc = 0;

    KMS_GUARD(rd_bytes(r, "TDX quote", &att->tdx_quote));
    /* imr + event_type + four 1-byte lengths */
    KMS_GUARD(rd_count(r, KMS_ATT_MAX_EVENTS, 11, "TDX event log", &n));
    att->tdx_events = calloc(n > 0 ? n : 1, sizeof(*att->tdx_events));
    KMS_GUARD_PTR(att->tdx_events);
    for (size_t i = 0; i < n; i++) {
        struct kms_tdx_event *e = &att->tdx_events[i];

        att->n_tdx_events = i + 1;
        KMS_GUARD(kms_rd_u32le(r, &e->imr));
        KMS_GUARD(kms_rd_u32le(r, &e->event_type));
        KMS_GUARD(rd_bytes(r, "TDX event digest", &e->digest));
        KMS_GUARD(rd_string(r, "TDX event name", &e->event));
        KMS_GUARD(rd_bytes(r, "TDX event payload", &e->payload));
    }
out:
    return rc;
}

static int rd_tpm_quote(struct kms_reader *r, struct kms_tpm_quote *q)
{
    size_t n;
    int rc = 0;

    KMS_GUARD(rd_bytes(r, "TPM quote message", &q->message));
    KMS_GUARD(rd_bytes(r, "TPM quote signature", &q->signature));
    KMS_GUARD(rd_count(r, KMS_ATT_MAX_EVENTS, 6, "TPM PCR values", &n));
    q->pcrs = calloc(n > 0 ? n : 1, sizeof(*q->pcrs));
    KMS_GUARD_PTR(q->pcrs);
    for (size_t i = 0; i < n; i++) {
        q->n_pcrs = i + 1;
        KMS_GUARD(kms_rd_u32le(r, &q->pcrs[i].index));
        KMS_GUARD(rd_string(r, "TPM PCR algorithm", &q->pcrs[i].algorithm));
        KMS_GUARD(rd_bytes(r, "TPM PCR value", &q->pcrs[i].value));
    }
    KMS_GUARD(rd_bytes(r, "TPM AK certificate", &q->ak_cert));
    KMS_GUARD(kms_rd_u8(r, &q->platform));
    KMS_ENSURE(q->platform <= 2, KMS_ERR_ATT_FORMAT, "unknown TPM platform variant %u",
               q->platform);
    KMS_GUARD(rd_count(r, KMS_ATT_MAX_EVENTS, 5, "TPM event log", &n));
    q->events = calloc(n > 0 ? n : 1, sizeof(*q->events));
    KMS_GUARD_PTR(q->events);
    for (size_t i = 0; i < n; i++) {
        q->n_events = i + 1;
        KMS_GUARD(kms_rd_u32le(r, &q->events[i].pcr_index));
        KMS_GUARD(rd_bytes(r, "TPM event digest", &q->events[i].digest));
    }
out:
    return rc;
}

static int rd_attestation(struct kms_reader *r, struct kms_attestation *att)
{
    uint8_t version;
    uint8_t variant;
    size_t n;
    int rc = 0;

    KMS_GUARD(kms_rd_u8(r, &version));
    KMS_ENSURE(version == 0, KMS_ERR_ATT_FORMAT,
               "unsupported VersionedAttestation variant %u (only V0)", version);
    KMS_GUARD(kms_rd_u8(r, &variant));
    switch (variant) {
    case 0:
        att->mode = KMS_ATT_TDX;
        KMS_GUARD(rd_tdx_quote(r, att));
        break;
    case 1:
        att->mode = KMS_ATT_GCP_TDX;
        KMS_GUARD(rd_tdx_quote(r, att));
        KMS_GUARD(rd_tpm_quote(r, &att->tpm));
        break;
    case 2:
        att->mode = KMS_ATT_NITRO;
        KMS_GUARD(rd_bytes(r, "NSM quote", &att->nsm_quote));
        break;
    default:
        rc = kms_err_set(KMS_ERR_ATT_FORMAT, "unknown attestation quote variant %u", variant);
        goto out;
    }
    KMS_GUARD(rd_count(r, KMS_ATT_MAX_EVENTS, 2, "runtime events", &n));
    att->events = calloc(n > 0 ? n : 1, sizeof(*att->events));
    KMS_GUARD_PTR(att->events);
    for (size_t i = 0; i < n; i++) {
        att->n_events = i + 1;
        KMS_GUARD(rd_string(r, "runtime event name", &att->events[i].event));
        KMS_GUARD(rd_bytes(r, "runtime event payload", &att->events[i].payload));
    }
    KMS_GUARD(kms_rd_copy(r, att->report_data, 64));
    KMS_GUARD(rd_string(r, "config", &att->config));
    KMS_ENSURE(kms_rd_left(r) == 0, KMS_ERR_ATT_FORMAT, "%zu trailing bytes after the attestation",
               kms_rd_left(r));
out:
    return rc;
}

int kms_att_decode(const uint8_t *p, size_t len, struct kms_attestation **out)
{
    struct kms_attestation *att = NULL;
    struct kms_reader r;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(len <= KMS_ATT_MAX_BYTES, KMS_ERR_ATT_FORMAT,
               "attestation of %zu bytes exceeds the maximum of %u", len, KMS_ATT_MAX_BYTES);
    att = calloc(1, sizeof(*att));
    KMS_GUARD_PTR(att);
    kms_rd_init(&r, p, len);
    rc = rd_attestation(&r, att);
    if (rc == KMS_ERR_PARSE || rc == KMS_ERR_TOOBIG)
        rc = kms_err_wrap(KMS_ERR_ATT_FORMAT, "SCALE attestation");
    if (rc < 0)
        goto out;
    *out = att;
    att = NULL;
out:
    kms_att_free(att);
    return rc;
}

/* ------------------------------------------------------------------------------- encoding */

static int put_string(struct kms_buf *b, const char *s)
{
    if (s == NULL)
        s = "";
    return kms_scale_put_bytes(b, (const uint8_t *)s, strlen(s));
}

static int put_tdx_quote(struct kms_buf *b, const struct kms_attestation *att, int stripped)
{
    size_t n = 0;
    int rc = 0;

    KMS_GUARD(kms_scale_put_bytes(b, att->tdx_quote.p, att->tdx_quote.len));
    for (size_t i = 0; i < att->n_tdx_events; i++)
        n += !stripped || att->tdx_events[i].imr == 3;
    KMS_GUARD(kms_scale_put_compact(b, n));
    for (size_t i = 0; i < att->n_tdx_events; i++) {
        const struct kms_tdx_event *e = &att->tdx_events[i];
        int runtime = e->event_type == KMS_EVENT_TYPE_RUNTIME;

        if (stripped && e->imr != 3)
            continue;
        KMS_GUARD(kms_buf_put_u32le(b, e->imr));
        KMS_GUARD(kms_buf_put_u32le(b, e->event_type));
        /* into_stripped: runtime events drop the digest (recomputable), others the payload */
        if (stripped && runtime)
            KMS_GUARD(kms_scale_put_compact(b, 0));
        else
            KMS_GUARD(kms_scale_put_bytes(b, e->digest.p, e->digest.len));
        KMS_GUARD(put_string(b, e->event));
        if (stripped && !runtime)
            KMS_GUARD(kms_scale_put_compact(b, 0));
        else
            KMS_GUARD(kms_scale_put_bytes(b, e->payload.p, e->payload.len));
    }
out:
    return rc;
}

static int put_tpm_quote(struct kms_buf *b, const struct kms_tpm_quote *q)
{
    int rc = 0;

    KMS_GUARD(kms_scale_put_bytes(b, q->message.p, q->message.len));
    KMS_GUARD(kms_scale_put_bytes(b, q->signature.p, q->signature.len));
    KMS_GUARD(kms_scale_put_compact(b, q->n_pcrs));
    for (size_t i = 0; i < q->n_pcrs; i++) {
        KMS_GUARD(kms_buf_put_u32le(b, q->pcrs[i].index));
        KMS_GUARD(put_string(b, q->pcrs[i].algorithm));
        KMS_GUARD(kms_scale_put_bytes(b, q->pcrs[i].value.p, q->pcrs[i].value.len));
    }
    KMS_GUARD(kms_scale_put_bytes(b, q->ak_cert.p, q->ak_cert.len));
    KMS_GUARD(kms_buf_put_u8(b, q->platform));
    KMS_GUARD(kms_scale_put_compact(b, q->n_events));
    for (size_t i = 0; i < q->n_events; i++) {
        KMS_GUARD(kms_buf_put_u32le(b, q->events[i].pcr_index));
        KMS_GUARD(kms_scale_put_bytes(b, q->events[i].digest.p, q->events[i].digest.len));
    }
out:
    return rc;
}

int kms_att_encode(const struct kms_attestation *att, int stripped, uint8_t **out, size_t *len)
{
    struct kms_buf b = {0};
    int rc = 0;

    *out = NULL;
    *len = 0;
    KMS_GUARD(kms_buf_put_u8(&b, 0)); /* V0 */
    switch (att->mode) {
    case KMS_ATT_TDX:
        KMS_GUARD(kms_buf_put_u8(&b, 0));
        KMS_GUARD(put_tdx_quote(&b, att, stripped));
        break;
    case KMS_ATT_GCP_TDX:
        KMS_GUARD(kms_buf_put_u8(&b, 1));
        KMS_GUARD(put_tdx_quote(&b, att, stripped));
        KMS_GUARD(put_tpm_quote(&b, &att->tpm));
        break;
    case KMS_ATT_NITRO:
        KMS_GUARD(kms_buf_put_u8(&b, 2));
        KMS_GUARD(kms_scale_put_bytes(&b, att->nsm_quote.p, att->nsm_quote.len));
        break;
    default:
        rc = kms_err_set(KMS_ERR_INVAL, "unknown attestation mode %d", (int)att->mode);
        goto out;
    }
    KMS_GUARD(kms_scale_put_compact(&b, att->n_events));
    for (size_t i = 0; i < att->n_events; i++) {
        KMS_GUARD(put_string(&b, att->events[i].event));
        KMS_GUARD(kms_scale_put_bytes(&b, att->events[i].payload.p, att->events[i].payload.len));
    }
    KMS_GUARD(kms_buf_put(&b, att->report_data, 64));
    KMS_GUARD(put_string(&b, att->config));
    KMS_ENSURE(b.len <= KMS_ATT_MAX_BYTES, KMS_ERR_TOOBIG,
               "encoded attestation of %zu bytes exceeds the maximum of %u", b.len,
               KMS_ATT_MAX_BYTES);
    *out = kms_buf_steal(&b, len);
    KMS_GUARD_PTR(*out);
out:
    kms_buf_free(&b);
    return rc;
}

int kms_att_add_runtime_event(struct kms_attestation *att, const char *name, const uint8_t *payload,
                              size_t len)
{
    struct kms_runtime_event *ev;
    struct kms_runtime_event e = {0};
    int rc = 0;

    KMS_ENSURE(att->n_events < KMS_ATT_MAX_EVENTS, KMS_ERR_TOOBIG,
               "too many runtime events (max %u)", KMS_ATT_MAX_EVENTS);
    KMS_ENSURE(len <= KMS_ATT_MAX_FIELD && strlen(name) <= KMS_ATT_MAX_FIELD, KMS_ERR_TOOBIG,
               "runtime event field exceeds %u bytes", KMS_ATT_MAX_FIELD);
    e.event = strdup(name);
    KMS_GUARD_PTR(e.event);
    e.payload.p = malloc(len > 0 ? len : 1);
    KMS_GUARD_PTR(e.payload.p);
    if (len > 0)
        memcpy(e.payload.p, payload, len);
    e.payload.len = len;
    ev = realloc(att->events, (att->n_events + 1) * sizeof(*ev));
    KMS_GUARD_PTR(ev);
    att->events = ev;
    att->events[att->n_events++] = e;
    memset(&e, 0, sizeof(e));
out:
    free(e.event);
    free(e.payload.p);
    return rc;
}
