/*
 * Fuzz target: TCG2 crypto-agile event logs (kms_tcg_log_parse): the GCE firmware log and the
 * TDX CCEL, plus the consumers of a parsed log (digest lookup, replay, SHA-256 bank export).
 *
 * Invariants: a rejection is KMS_ERR_ATT_FORMAT and leaves *out zeroed; on success the limits in
 * attest.h hold, every digest and data pointer lies inside the input with the size announced by
 * the Spec ID event, and replay / export either succeed or fail with a documented code.
 */
#include <string.h>

#include "attest/attest.h"
#include "attest/tpm.h"
#include "fuzz.h"

static int inside(const uint8_t *base, size_t size, const uint8_t *p, size_t n)
{
    if (n == 0)
        return 1;
    return p != NULL && p >= base && (size_t)(p - base) <= size && n <= size - (size_t)(p - base);
}

static void check_event(const struct kms_tcg_log *log, const struct kms_tcg_event *ev,
                        const uint8_t *data, size_t size)
{
    FUZZ_ASSERT(ev->n_digests <= KMS_TCG_MAX_ALGS);
    FUZZ_ASSERT(ev->data_len <= KMS_TCG_MAX_EVENT_DATA &&
                inside(data, size, ev->data, ev->data_len));
    for (size_t d = 0; d < ev->n_digests; d++) {
        const struct kms_tcg_digest *dg = &ev->digests[d];
        size_t want = 0;
        size_t got = 0;

        FUZZ_ASSERT(dg->len <= KMS_TCG_MAX_DIGEST && inside(data, size, dg->p, dg->len));
        for (size_t a = 0; a < log->n_algs; a++)
            if (log->alg[a] == dg->alg)
                want = log->alg_size[a];
        FUZZ_ASSERT(want == dg->len);
        FUZZ_ASSERT(kms_tcg_event_digest(ev, dg->alg, &got) != NULL && got <= KMS_TCG_MAX_DIGEST);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint16_t algs[] = {KMS_TPM_ALG_SHA1, KMS_TPM_ALG_SHA256, KMS_TPM_ALG_SHA384,
                                    KMS_TPM_ALG_SHA512, 0x0012 /* SM3: unsupported */};
    struct kms_tcg_log log;
    struct kms_tpm_event *tev = NULL;
    size_t n_tev = 0;
    int rc = kms_tcg_log_parse(data, size, &log);

    if (rc < 0) {
        static const struct kms_tcg_log zero;

        FUZZ_ASSERT(rc == KMS_ERR_ATT_FORMAT);
        FUZZ_ASSERT(memcmp(&log, &zero, sizeof(log)) == 0);
        return 0;
    }
    FUZZ_ASSERT(log.n_algs <= KMS_TCG_MAX_ALGS && log.n_events <= KMS_TCG_MAX_EVENTS);
    for (size_t a = 0; a < log.n_algs; a++)
        FUZZ_ASSERT(log.alg_size[a] <= KMS_TCG_MAX_DIGEST);
    for (size_t i = 0; i < log.n_events; i++)
        check_event(&log, &log.events[i], data, size);

    for (size_t a = 0; a < sizeof(algs) / sizeof(algs[0]); a++) {
        for (uint32_t pcr = 0; pcr < 4; pcr++) {
            uint8_t out[KMS_TCG_MAX_DIGEST];
            size_t out_len = 0;

            rc = kms_tcg_log_replay(&log, algs[a], pcr, out, &out_len);
            FUZZ_ASSERT(rc == 0 || rc == KMS_ERR_ATT_FORMAT || rc == KMS_ERR_ATT_UNSUPPORTED);
            FUZZ_ASSERT(rc < 0 || out_len <= KMS_TCG_MAX_DIGEST);
        }
    }
    rc = kms_tcg_log_to_tpm_events(&log, &tev, &n_tev);
    FUZZ_ASSERT(rc == 0 || rc == KMS_ERR_NOMEM || rc == KMS_ERR_ATT_FORMAT);
    for (size_t i = 0; rc == 0 && i < n_tev; i++)
        FUZZ_ASSERT(tev[i].digest.len == 32);
    kms_tpm_events_free(tev, n_tev);
    kms_tcg_log_free(&log);
    return 0;
}
