/* tpm2-tss plumbing shared by attest/vtpm.c and storage/seal_tpm.c. */
#include <string.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "common/tpm.h"

int kms_tss_err(int code, const char *label, TSS2_RC r, const char *what, const char *hint)
{
    if (label == NULL)
        return kms_err_set(code, "TPM: %s failed: %s (0x%x)%s%s", what, Tss2_RC_Decode(r),
                           (unsigned)r, hint != NULL ? "; " : "", hint != NULL ? hint : "");
    return kms_err_set(code, "TPM (%s): %s failed: %s (0x%x)%s%s", label, what, Tss2_RC_Decode(r),
                       (unsigned)r, hint != NULL ? "; " : "", hint != NULL ? hint : "");
}

int kms_tpm_open(struct kms_tpm *t, const char *tcti, int code, const char *label,
                 const char *tcti_hint)
{
    int rc = 0;

    memset(t, 0, sizeof(*t));
    KMS_TSS_GUARD(Tss2_TctiLdr_Initialize(tcti, &t->tcti), code, label, "opening the TCTI",
                  tcti_hint);
    KMS_TSS_GUARD(Esys_Initialize(&t->esys, t->tcti, NULL), code, label, "Esys_Initialize", NULL);
out:
    if (rc < 0)
        kms_tpm_close(t);
    return rc;
}

void kms_tpm_close(struct kms_tpm *t)
{
    if (t == NULL)
        return;
    if (t->esys != NULL)
        Esys_Finalize(&t->esys);
    if (t->tcti != NULL)
        Tss2_TctiLdr_Finalize(&t->tcti);
    memset(t, 0, sizeof(*t));
}

void kms_tpm_template_ak(TPM2B_PUBLIC *tmpl, enum kms_tpm_ak_alg alg)
{
    memset(tmpl, 0, sizeof(*tmpl));
    tmpl->publicArea.nameAlg = TPM2_ALG_SHA256;
    /* an attestation key: restricted signing, never leaves this TPM */
    tmpl->publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                        TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                        TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;
    if (alg == KMS_TPM_AK_ECC_P256) {
        TPMS_ECC_PARMS *e = &tmpl->publicArea.parameters.eccDetail;

        tmpl->publicArea.type = TPM2_ALG_ECC;
        e->symmetric.algorithm = TPM2_ALG_NULL;
        e->scheme.scheme = TPM2_ALG_ECDSA;
        e->scheme.details.ecdsa.hashAlg = TPM2_ALG_SHA256;
        e->curveID = TPM2_ECC_NIST_P256;
        e->kdf.scheme = TPM2_ALG_NULL;
    } else {
        TPMS_RSA_PARMS *r = &tmpl->publicArea.parameters.rsaDetail;

        tmpl->publicArea.type = TPM2_ALG_RSA;
        r->symmetric.algorithm = TPM2_ALG_NULL;
        r->scheme.scheme = TPM2_ALG_RSASSA;
        r->scheme.details.rsassa.hashAlg = TPM2_ALG_SHA256;
        r->keyBits = 2048;
        r->exponent = 0;
    }
}

void kms_tpm_template_srk(TPM2B_PUBLIC *tmpl)
{
    TPMS_ECC_PARMS *e = &tmpl->publicArea.parameters.eccDetail;

    memset(tmpl, 0, sizeof(*tmpl));
    tmpl->publicArea.type = TPM2_ALG_ECC;
    tmpl->publicArea.nameAlg = TPM2_ALG_SHA256;
    tmpl->publicArea.objectAttributes =
        TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
        TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
    e->symmetric.algorithm = TPM2_ALG_AES;
    e->symmetric.keyBits.aes = 128;
    e->symmetric.mode.aes = TPM2_ALG_CFB;
    e->scheme.scheme = TPM2_ALG_NULL;
    e->curveID = TPM2_ECC_NIST_P256;
    e->kdf.scheme = TPM2_ALG_NULL;
    tmpl->publicArea.unique.ecc.x.size = 32; /* zero-filled, as in the TCG template */
    tmpl->publicArea.unique.ecc.y.size = 32;
}

void kms_tpm_template_sealed(TPM2B_PUBLIC *tmpl)
{
    memset(tmpl, 0, sizeof(*tmpl));
    tmpl->publicArea.type = TPM2_ALG_KEYEDHASH;
    tmpl->publicArea.nameAlg = TPM2_ALG_SHA256;
    /* no userWithAuth: only the policy authorizes; noDA: a policy miss is not an attack on a
     * password, so it must not lock the TPM out */
    tmpl->publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                        TPMA_OBJECT_ADMINWITHPOLICY | TPMA_OBJECT_NODA;
    tmpl->publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL;
}

TSS2_RC kms_tpm_create_primary(ESYS_CONTEXT *esys, ESYS_TR hierarchy, const TPM2B_PUBLIC *tmpl,
                               ESYS_TR *handle, TPM2B_PUBLIC **pub)
{
    TPM2B_SENSITIVE_CREATE sens;
    TPM2B_DATA outside;
    TPML_PCR_SELECTION creation;
    TPM2B_PUBLIC *out_pub = NULL;
    TPM2B_CREATION_DATA *cdata = NULL;
    TPM2B_DIGEST *chash = NULL;
    TPMT_TK_CREATION *ticket = NULL;
    TSS2_RC r;

    memset(&sens, 0, sizeof(sens));
    memset(&outside, 0, sizeof(outside));
    memset(&creation, 0, sizeof(creation));
    r = Esys_CreatePrimary(esys, hierarchy, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens,
                           tmpl, &outside, &creation, handle, &out_pub, &cdata, &chash, &ticket);
    if (pub != NULL) {
        *pub = out_pub;
        out_pub = NULL;
    }
    Esys_Free(out_pub);
    Esys_Free(cdata);
    Esys_Free(chash);
    Esys_Free(ticket);
    return r;
}
