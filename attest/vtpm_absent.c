/*
 * The vTPM producer of builds without tpm2-tss (the static kmsctl, -DKMSCTL_STATIC=ON: Debian
 * ships no static tpm2-tss archive). Every entry point refuses with the same error, and
 * opening the gcp-tdx platform asks kms_vtpm_available first, so `--tee gcp-tdx` fails at once
 * with a message that says why instead of a link error or a crash;
 * everything else (sim-gcp, verification of vTPM quotes) is unaffected.
 */
#include <stddef.h>

#include "attest/internal.h"
#include "attest/tpm.h"

static int absent(void)
{
    return kms_err_set(KMS_ERR_STATE, "this kmsctl is built without tpm2-tss (the static enclave "
                                      "build): it cannot use a vTPM, so --tee gcp-tdx is not "
                                      "available; use the dynamically linked kmsctl");
}

int kms_vtpm_available(void)
{
    return absent();
}

int kms_vtpm_open(const char *tcti, struct kms_vtpm **out)
{
    (void)tcti;
    *out = NULL;
    return absent();
}

void kms_vtpm_free(struct kms_vtpm *t)
{
    (void)t;
}

int kms_vtpm_create_ak(struct kms_vtpm *t, enum kms_vtpm_ak_kind kind, EVP_PKEY **ak_pub)
{
    (void)t;
    (void)kind;
    if (ak_pub != NULL)
        *ak_pub = NULL;
    return absent();
}

int kms_vtpm_quote(struct kms_vtpm *t, const uint8_t *qd, size_t qd_len, struct kms_tpm_quote *out)
{
    (void)t;
    (void)qd;
    (void)qd_len;
    (void)out;
    return absent();
}

int kms_vtpm_load_gcp_ak(struct kms_vtpm *t, enum kms_vtpm_ak_kind kind, uint8_t **cert,
                         size_t *cert_len, EVP_PKEY **ak_pub)
{
    (void)t;
    (void)kind;
    *cert = NULL;
    *cert_len = 0;
    if (ak_pub != NULL)
        *ak_pub = NULL;
    return absent();
}

int kms_vtpm_pcr_extend(struct kms_vtpm *t, uint32_t pcr, const uint8_t digest[32])
{
    (void)t;
    (void)pcr;
    (void)digest;
    return absent();
}

int kms_vtpm_pcr_read(struct kms_vtpm *t, uint32_t pcr, uint8_t out[32])
{
    (void)t;
    (void)pcr;
    (void)out;
    return absent();
}
