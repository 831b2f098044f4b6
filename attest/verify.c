/* Full attestation verification, dispatched by mode (kms-reference.md §5.2). */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "attest/collateral.h"
#include "attest/events.h"
#include "attest/internal.h"
#include "attest/nitro.h"
#include "attest/tdx.h"
#include "attest/tpm.h"

void kms_verified_free(struct kms_verified *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->n_advisory_ids; i++)
        free(v->advisory_ids[i]);
    free(v->advisory_ids);
    memset(v, 0, sizeof(*v));
}

static int is_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;

    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* validate_tcb: the reference policy for TD 1.0 reports. */
static int validate_tcb(const struct kms_tdx_report *td)
{
    if (td->td_attributes[0] & 1u)
        return kms_err_set(KMS_ERR_ATT_TCB,
                           "debug TD (td_attributes DEBUG bit set) is not allowed");
    if (!is_zero(td->mr_signer_seam, sizeof(td->mr_signer_seam)))
        return kms_err_set(KMS_ERR_ATT_TCB, "mr_signer_seam is not zero (non-Intel TDX module)");
    return 0;
}

static int verify_tdx(const struct kms_attest_ctx *ctx, const struct kms_attestation *att,
                      struct kms_verified *out)
{
    uint8_t rtmr3[48];
    int rc = 0;

    /* ---- collateral (owner: collateral): with a collateral source the quote is verified
     * with Intel collateral (CRLs, TCB level → tcb_status/advisory_ids) ---- */
    if (ctx->coll_src != NULL)
        KMS_GUARD(kms_tdx_quote_verify_collateral(ctx, att->tdx_quote.p, att->tdx_quote.len, out));
    else
        KMS_GUARD(kms_tdx_quote_verify(ctx, att->tdx_quote.p, att->tdx_quote.len, out));
    /* ---- end collateral ---- */
    KMS_GUARD(validate_tcb(&out->td));
    kms_att_replay(1, att->events, att->n_events, NULL, rtmr3);
    KMS_ENSURE(memcmp(rtmr3, out->td.rtmr[3], 48) == 0, KMS_ERR_ATT_RTMR,
               "SHA-384 replay of %zu runtime events does not match RTMR3", att->n_events);
    KMS_ENSURE(memcmp(out->td.report_data, att->report_data, 64) == 0, KMS_ERR_ATT_REPORT_DATA,
               "TD report report_data differs from the attestation's report_data");
out:
    return rc;
}

static int verify_gcp(const struct kms_attest_ctx *ctx, const struct kms_attestation *att,
                      struct kms_verified *out)
{
    struct kms_verified tv = {0};
    uint8_t qd[32];
    uint8_t pcr14[32];
    int rc = 0;

    KMS_GUARD(verify_tdx(ctx, att, out));
    KMS_ENSURE(EVP_Digest(att->tdx_quote.p, att->tdx_quote.len, qd, NULL, EVP_sha256(), NULL) == 1,
               KMS_ERR_CRYPTO, "SHA-256 failed");
    /* the TPM verifier gets its own result so it cannot clobber the TDX fields */
    KMS_GUARD(kms_tpm_verify(ctx, &att->tpm, qd, sizeof(qd), &tv));
    memcpy(out->pcr, tv.pcr, sizeof(out->pcr));
    out->sim = out->sim || tv.sim;
    kms_att_replay(0, att->events, att->n_events, NULL, pcr14);
    KMS_ENSURE(memcmp(pcr14, out->pcr[2], 32) == 0, KMS_ERR_ATT_RTMR,
               "SHA-256 replay of %zu runtime events does not match TPM PCR14", att->n_events);
out:
    kms_verified_free(&tv);
    return rc;
}

int kms_attest_verify(const struct kms_attest_ctx *ctx, const struct kms_attestation *att,
                      struct kms_verified *out)
{
    int rc = 0;

    memset(out, 0, sizeof(*out));
    switch (att->mode) {
    case KMS_ATT_TDX:
        KMS_GUARD(verify_tdx(ctx, att, out));
        break;
    case KMS_ATT_GCP_TDX:
        KMS_GUARD(verify_gcp(ctx, att, out));
        break;
    case KMS_ATT_NITRO:
        KMS_GUARD(
            kms_nitro_verify(ctx, att->nsm_quote.p, att->nsm_quote.len, att->report_data, out));
        break;
    default:
        rc = kms_err_set(KMS_ERR_ATT_UNSUPPORTED, "unknown attestation mode %d", (int)att->mode);
        goto out;
    }
    out->mode = att->mode;
out:
    if (rc < 0)
        kms_verified_free(out);
    return rc;
}

int kms_attest_verify_bound(const struct kms_attest_ctx *ctx, const struct kms_attestation *att,
                            const uint8_t *spki, size_t spki_len, struct kms_verified *out)
{
    uint8_t want[64];
    int rc = 0;

    memset(out, 0, sizeof(*out));
    /* binding first, as the reference does, so an unbound certificate fails cheaply */
    kms_report_data("ratls-cert", spki, spki_len, want);
    KMS_ENSURE(memcmp(want, att->report_data, 64) == 0, KMS_ERR_ATT_REPORT_DATA,
               "attestation report_data is not bound to the certificate key "
               "(want SHA-512(\"ratls-cert:\" || SPKI))");
    KMS_GUARD(kms_attest_verify(ctx, att, out));
out:
    return rc;
}
