/*
 * tpm2-tss plumbing shared by the vTPM evidence producer (attest/vtpm.c) and the TPM seal
 * provider (storage/seal_tpm.c): the TCTI + ESYS connection, the key templates they create, and
 * one macro that turns a TSS2_RC into a house error. Library kms_tpm (links tss2), so kms_common
 * stays free of tss2.
 */
#ifndef KMS_COMMON_TPM_H
#define KMS_COMMON_TPM_H

#include <tss2/tss2_esys.h>

#include "common/err.h"

/* A TCTI + ESYS connection. Zero-initialise; kms_tpm_close accepts a zeroed or half-open one. */
struct kms_tpm {
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
};

/* Sets the detail "TPM: <what> failed: <Tss2_RC_Decode(r)> (0x<r>)" ("TPM (<label>): ..." when
 * label != NULL), followed by "; <hint>" when hint != NULL, and returns code. */
int kms_tss_err(int code, const char *label, TSS2_RC r, const char *what, const char *hint);

/* In a function with `int rc` and an `out:` label: on a TSS2 failure of expr, rc =
 * kms_tss_err(code, label, r, what, hint) and goto out. */
#define KMS_TSS_GUARD(expr, code, label, what, hint)                                               \
    do {                                                                                           \
        TSS2_RC r_ = (expr);                                                                       \
        if (r_ != TSS2_RC_SUCCESS) {                                                               \
            rc = kms_tss_err((code), (label), r_, (what), (hint));                                 \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* Opens the TCTI named by tcti (NULL = the tss2 default) and an ESYS context over it. Errors
 * via kms_tss_err(code, label, ...): "opening the TCTI" (with tcti_hint) or "Esys_Initialize".
 * On error t is closed again. */
KMS_WUR int kms_tpm_open(struct kms_tpm *t, const char *tcti, int code, const char *label,
                         const char *tcti_hint);
/* Finalises ESYS and the TCTI and zeroes *t; accepts a zeroed or half-open t. */
void kms_tpm_close(struct kms_tpm *t);

/* Key templates (the whole TPM2B_PUBLIC is overwritten). */
enum kms_tpm_ak_alg { KMS_TPM_AK_ECC_P256 = 0, KMS_TPM_AK_RSA_2048 = 1 };
/* Attestation key: restricted signing, fixedTPM/fixedParent, userWithAuth, SHA-256 name;
 * ECC P-256 ECDSA-SHA256 or RSA-2048 RSASSA-SHA256. */
void kms_tpm_template_ak(TPM2B_PUBLIC *tmpl, enum kms_tpm_ak_alg alg);
/* Storage primary key (TCG SRK template): ECC P-256, restricted decrypt, AES-128-CFB, noDA,
 * zero-filled 32-byte unique. */
void kms_tpm_template_srk(TPM2B_PUBLIC *tmpl);
/* Sealed data object (keyedhash, no scheme) authorised by its policy only: fixedTPM/fixedParent,
 * adminWithPolicy, noDA, no userWithAuth. The caller sets authPolicy. */
void kms_tpm_template_sealed(TPM2B_PUBLIC *tmpl);

/* Esys_CreatePrimary in hierarchy (ESYS_TR_RH_OWNER, ESYS_TR_RH_ENDORSEMENT, ...) with an empty
 * password session, empty sensitive data, no outside info and no creation PCRs. *handle receives
 * the object (caller flushes); *pub (optional) its public area (caller Esys_Free's). Returns the
 * TSS2_RC (for KMS_TSS_GUARD). */
TSS2_RC kms_tpm_create_primary(ESYS_CONTEXT *esys, ESYS_TR hierarchy, const TPM2B_PUBLIC *tmpl,
                               ESYS_TR *handle, TPM2B_PUBLIC **pub);

#endif
