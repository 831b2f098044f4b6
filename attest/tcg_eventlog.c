/*
 * TCG2 crypto-agile event logs (TCG PC Client Platform Firmware Profile §9.4): the kernel's
 * binary_bios_measurements on GCP and the TDX ACPI CCEL. All little-endian.
 */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/tpm.h"
#include "common/buf.h"

#define SPEC_ID_SIG "Spec ID Event03"

static const EVP_MD *tcg_md(uint16_t alg)
{
    switch (alg) {
    case KMS_TPM_ALG_SHA1:
        return EVP_sha1();
    case KMS_TPM_ALG_SHA256:
        return EVP_sha256();
    case KMS_TPM_ALG_SHA384:
        return EVP_sha384();
    case KMS_TPM_ALG_SHA512:
        return EVP_sha512();
    default:
        return NULL;
    }
}

/* TCG_EfiSpecIdEvent inside the header event's data; must be consumed exactly. */
static int parse_spec_id(const uint8_t *p, size_t len, struct kms_tcg_log *log)
{
    struct kms_reader r;
    uint8_t sig[16];
    uint32_t n_algs;
    uint8_t vendor_len;
    int rc = 0;

    kms_rd_init(&r, p, len);
    KMS_GUARD(kms_rd_copy(&r, sig, sizeof(sig)));
    KMS_ENSURE(memcmp(sig, SPEC_ID_SIG, sizeof(sig)) == 0, KMS_ERR_ATT_FORMAT,
               "TCG event log: first event is not a \"" SPEC_ID_SIG "\" header (not a "
               "crypto-agile log)");
    KMS_GUARD(kms_rd_u32le(&r, &log->platform_class));
    KMS_GUARD(kms_rd_u8(&r, &log->spec_minor));
    KMS_GUARD(kms_rd_u8(&r, &log->spec_major));
    KMS_GUARD(kms_rd_u8(&r, &log->spec_errata));
    KMS_GUARD(kms_rd_u8(&r, &log->uintn_size));
    KMS_GUARD(kms_rd_u32le(&r, &n_algs));
    KMS_ENSURE(n_algs >= 1 && n_algs <= KMS_TCG_MAX_ALGS, KMS_ERR_ATT_FORMAT,
               "TCG event log: Spec ID event announces %u digest algorithms (1..%u allowed)",
               n_algs, KMS_TCG_MAX_ALGS);
    for (uint32_t i = 0; i < n_algs; i++) {
        KMS_GUARD(kms_rd_u16le(&r, &log->alg[i]));
        KMS_GUARD(kms_rd_u16le(&r, &log->alg_size[i]));
        KMS_ENSURE(log->alg_size[i] >= 1 && log->alg_size[i] <= KMS_TCG_MAX_DIGEST,
                   KMS_ERR_ATT_FORMAT, "TCG event log: digest size %u for algorithm 0x%04x",
                   log->alg_size[i], log->alg[i]);
        for (uint32_t j = 0; j < i; j++)
            KMS_ENSURE(log->alg[j] != log->alg[i], KMS_ERR_ATT_FORMAT,
                       "TCG event log: algorithm 0x%04x announced twice", log->alg[i]);
    }
    log->n_algs = n_algs;
    KMS_GUARD(kms_rd_u8(&r, &vendor_len));
    KMS_GUARD(kms_rd_skip(&r, vendor_len));
    KMS_ENSURE(kms_rd_left(&r) == 0, KMS_ERR_ATT_FORMAT,
               "TCG event log: %zu unexpected bytes after the Spec ID event", kms_rd_left(&r));
out:
    if (rc == KMS_ERR_PARSE)
        rc = kms_err_set(KMS_ERR_ATT_FORMAT, "TCG event log: truncated Spec ID event");
    return rc;
}

static int alg_size(const struct kms_tcg_log *log, uint16_t alg)
{
    for (size_t i = 0; i < log->n_algs; i++) {
        if (log->alg[i] == alg)
            return log->alg_size[i];
    }
    return -1;
}

static int parse_event(struct kms_reader *r, const struct kms_tcg_log *log,
                       struct kms_tcg_event *ev)
{
    uint32_t n;
    int sz;
    int rc = 0;

    KMS_GUARD(kms_rd_u32le(r, &ev->pcr_index));
    KMS_GUARD(kms_rd_u32le(r, &ev->event_type));
    KMS_GUARD(kms_rd_u32le(r, &n));
    KMS_ENSURE(n <= KMS_TCG_MAX_ALGS, KMS_ERR_ATT_FORMAT,
               "TCG event log: event has %u digests (max %u)", n, KMS_TCG_MAX_ALGS);
    for (uint32_t i = 0; i < n; i++) {
        struct kms_tcg_digest *d = &ev->digests[i];

        KMS_GUARD(kms_rd_u16le(r, &d->alg));
        sz = alg_size(log, d->alg);
        KMS_ENSURE(sz > 0, KMS_ERR_ATT_FORMAT,
                   "TCG event log: digest algorithm 0x%04x not announced by the Spec ID event",
                   d->alg);
        d->len = (uint16_t)sz;
        KMS_GUARD(kms_rd_ptr(r, d->len, &d->p));
    }
    ev->n_digests = n;
    KMS_GUARD(kms_rd_u32le(r, &ev->data_len));
    KMS_ENSURE(ev->data_len <= KMS_TCG_MAX_EVENT_DATA, KMS_ERR_ATT_FORMAT,
               "TCG event log: event data of %u bytes exceeds %u", ev->data_len,
               KMS_TCG_MAX_EVENT_DATA);
    KMS_GUARD(kms_rd_ptr(r, ev->data_len, &ev->data));
out:
    return rc;
}

int kms_tcg_log_parse(const uint8_t *p, size_t len, struct kms_tcg_log *out)
{
    struct kms_reader r;
    struct kms_tcg_log log;
    uint32_t hdr_pcr, hdr_type, hdr_size, idx;
    const uint8_t *hdr;
    size_t cap = 0;
    int rc = 0;

    memset(&log, 0, sizeof(log));
    memset(out, 0, sizeof(*out));
    kms_rd_init(&r, p, len);
    /* header: TCG_PCClientPCREvent with a SHA-1-sized digest field */
    KMS_GUARD(kms_rd_u32le(&r, &hdr_pcr));
    KMS_GUARD(kms_rd_u32le(&r, &hdr_type));
    KMS_ENSURE(hdr_type == KMS_TCG_EV_NO_ACTION, KMS_ERR_ATT_FORMAT,
               "TCG event log: header event type 0x%x is not EV_NO_ACTION", hdr_type);
    KMS_GUARD(kms_rd_skip(&r, 20));
    KMS_GUARD(kms_rd_u32le(&r, &hdr_size));
    KMS_ENSURE(hdr_size <= KMS_TCG_MAX_EVENT_DATA, KMS_ERR_ATT_FORMAT,
               "TCG event log: header event of %u bytes", hdr_size);
    KMS_GUARD(kms_rd_ptr(&r, hdr_size, &hdr));
    KMS_GUARD(parse_spec_id(hdr, hdr_size, &log));
    (void)hdr_pcr;

    while (kms_rd_left(&r) > 0) {
        size_t at = r.off;

        KMS_ENSURE(kms_rd_left(&r) >= 4, KMS_ERR_ATT_FORMAT,
                   "TCG event log: %zu stray bytes at offset %zu", kms_rd_left(&r), at);
        idx = (uint32_t)p[at] | (uint32_t)p[at + 1] << 8 | (uint32_t)p[at + 2] << 16 |
              (uint32_t)p[at + 3] << 24;
        if (idx == 0xFFFFFFFFu)
            break; /* erased flash / CCEL padding: end of log */
        KMS_ENSURE(log.n_events < KMS_TCG_MAX_EVENTS, KMS_ERR_ATT_FORMAT,
                   "TCG event log: more than %u events", KMS_TCG_MAX_EVENTS);
        if (log.n_events == cap) {
            size_t ncap = cap == 0 ? 64 : cap * 2;
            struct kms_tcg_event *ne = realloc(log.events, ncap * sizeof(*ne));

            KMS_GUARD_PTR(ne);
            log.events = ne;
            cap = ncap;
        }
        memset(&log.events[log.n_events], 0, sizeof(log.events[0]));
        rc = parse_event(&r, &log, &log.events[log.n_events]);
        if (rc == KMS_ERR_PARSE)
            rc = kms_err_set(KMS_ERR_ATT_FORMAT,
                             "TCG event log: event %zu at offset %zu is truncated", log.n_events,
                             at);
        if (rc < 0)
            goto out;
        log.n_events++;
    }
    *out = log;
    memset(&log, 0, sizeof(log));
out:
    if (rc == KMS_ERR_PARSE)
        rc = kms_err_set(KMS_ERR_ATT_FORMAT, "TCG event log: truncated header event");
    kms_tcg_log_free(&log);
    return rc;
}

void kms_tcg_log_free(struct kms_tcg_log *log)
{
    if (log == NULL)
        return;
    free(log->events);
    memset(log, 0, sizeof(*log));
}

const uint8_t *kms_tcg_event_digest(const struct kms_tcg_event *ev, uint16_t alg, size_t *len)
{
    for (size_t i = 0; i < ev->n_digests; i++) {
        if (ev->digests[i].alg == alg) {
            if (len != NULL)
                *len = ev->digests[i].len;
            return ev->digests[i].p;
        }
    }
    return NULL;
}

int kms_tcg_log_replay(const struct kms_tcg_log *log, uint16_t alg, uint32_t pcr, uint8_t *out,
                       size_t *out_len)
{
    const EVP_MD *md = tcg_md(alg);
    EVP_MD_CTX *mctx = NULL;
    const uint8_t *d;
    size_t dlen = 0;
    size_t hlen;
    int rc = 0;

    KMS_ENSURE(md != NULL, KMS_ERR_ATT_UNSUPPORTED, "TCG replay: unsupported hash 0x%04x", alg);
    hlen = (size_t)EVP_MD_get_size(md);
    memset(out, 0, hlen);
    mctx = EVP_MD_CTX_new();
    KMS_GUARD_PTR(mctx);
    for (size_t i = 0; i < log->n_events; i++) {
        const struct kms_tcg_event *ev = &log->events[i];

        if (ev->pcr_index != pcr || ev->event_type == KMS_TCG_EV_NO_ACTION)
            continue;
        d = kms_tcg_event_digest(ev, alg, &dlen);
        KMS_ENSURE(d != NULL && dlen == hlen, KMS_ERR_ATT_FORMAT,
                   "TCG replay: event %zu (index %u) has no 0x%04x digest", i, pcr, alg);
        KMS_GUARD_OSSL(EVP_DigestInit_ex(mctx, md, NULL), "EVP_DigestInit_ex");
        KMS_GUARD_OSSL(EVP_DigestUpdate(mctx, out, hlen), "EVP_DigestUpdate");
        KMS_GUARD_OSSL(EVP_DigestUpdate(mctx, d, dlen), "EVP_DigestUpdate");
        KMS_GUARD_OSSL(EVP_DigestFinal_ex(mctx, out, NULL), "EVP_DigestFinal_ex");
    }
    *out_len = hlen;
out:
    EVP_MD_CTX_free(mctx);
    return rc;
}

int kms_tcg_log_to_tpm_events(const struct kms_tcg_log *log, struct kms_tpm_event **out, size_t *n)
{
    struct kms_tpm_event *ev = NULL;
    size_t k = 0;
    const uint8_t *d;
    size_t dlen = 0;
    int rc = 0;

    *out = NULL;
    *n = 0;
    if (log->n_events == 0)
        return 0;
    ev = calloc(log->n_events, sizeof(*ev));
    KMS_GUARD_PTR(ev);
    for (size_t i = 0; i < log->n_events; i++) {
        if (log->events[i].event_type == KMS_TCG_EV_NO_ACTION)
            continue;
        d = kms_tcg_event_digest(&log->events[i], KMS_TPM_ALG_SHA256, &dlen);
        if (d == NULL)
            continue;
        ev[k].digest.p = malloc(dlen);
        KMS_GUARD_PTR(ev[k].digest.p);
        memcpy(ev[k].digest.p, d, dlen);
        ev[k].digest.len = dlen;
        ev[k].pcr_index = log->events[i].pcr_index;
        k++;
    }
    *out = ev;
    *n = k;
    ev = NULL;
out:
    kms_tpm_events_free(ev, k);
    return rc;
}

void kms_tpm_events_free(struct kms_tpm_event *ev, size_t n)
{
    if (ev == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(ev[i].digest.p);
    free(ev);
}
