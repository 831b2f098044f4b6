/*
 * Fuzz target: GCP vTPM quote verification (kms_tpm_verify) past the AK certificate chain, so
 * the TPMT_SIGNATURE parser (RSASSA / ECDSA, TPM2B lengths), the signature check and the
 * TPMS_ATTEST / PCR checks see fuzzed bytes. The AK certificates are issued at start-up by a
 * locally generated "GCP" root that the context pins (production would pin Google's root).
 *
 * Input: byte 0 bit 0 selects the AK (0 = ECC P-256, 1 = RSA-2048); bytes 1..2 are the
 * big-endian length n of the TPMT_SIGNATURE that follows; the rest is the TPMS_ATTEST. The
 * quote claims PCRs 0, 2, 14 (SHA-256, zero) and carries no event log.
 *
 * Invariants: the keys are fresh, so no input can carry a valid signature: verification always
 * fails, with an attest error code (or NOMEM/CRYPTO), and leaves no advisory ids.
 */
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#include "attest/internal.h"
#include "attest/tpm.h"
#include "fuzz.h"

static struct kms_attest_ctx *ctx;
static uint8_t *ak_der[2];
static size_t ak_der_len[2];

static void setup(void)
{
    X509 *ca = NULL;
    EVP_PKEY *ca_key = NULL;
    EVP_PKEY *ak[2];

    FUZZ_ASSERT(kms_vtpm_test_ca("fuzz GCP EK/AK root", NULL, NULL, &ca, &ca_key) == 0);
    ak[0] = EVP_EC_gen("P-256");
    ak[1] = EVP_RSA_gen(2048);
    FUZZ_ASSERT(ak[0] != NULL && ak[1] != NULL);
    for (int i = 0; i < 2; i++) {
        FUZZ_ASSERT(kms_vtpm_issue_ak_cert(ak[i], ca, ca_key, &ak_der[i], &ak_der_len[i]) == 0);
        EVP_PKEY_free(ak[i]);
    }
    ctx = kms_attest_ctx_new();
    FUZZ_ASSERT(ctx != NULL && kms_attest_ctx_add_root(ctx, KMS_ROOT_GCP, ca, 0) == 0);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t idx[3] = {0, 2, 14};
    static uint8_t zero32[32];
    static char sha256[] = "sha256";
    struct kms_pcr_value pcrs[3];
    struct kms_tpm_quote q;
    struct kms_verified v;
    size_t n;
    int which;
    int rc;

    if (ctx == NULL)
        setup();
    if (size < 3)
        return 0;
    which = data[0] & 1;
    n = (size_t)data[1] << 8 | data[2];
    if (n > size - 3)
        return 0;
    memset(&q, 0, sizeof(q));
    for (int i = 0; i < 3; i++) {
        pcrs[i].index = idx[i];
        pcrs[i].algorithm = sha256;
        pcrs[i].value.p = zero32;
        pcrs[i].value.len = 32;
    }
    q.signature.p = (uint8_t *)(uintptr_t)(data + 3); /* read only */
    q.signature.len = n;
    q.message.p = (uint8_t *)(uintptr_t)(data + 3 + n);
    q.message.len = size - 3 - n;
    q.pcrs = pcrs;
    q.n_pcrs = 3;
    q.ak_cert.p = ak_der[which];
    q.ak_cert.len = ak_der_len[which];
    q.platform = 1;

    memset(&v, 0, sizeof(v));
    rc = kms_tpm_verify(ctx, &q, zero32, sizeof(zero32), &v);
    FUZZ_ASSERT(rc < 0);
    FUZZ_ASSERT((rc <= KMS_ERR_ATT_NONE && rc >= KMS_ERR_ATT_IMAGE) || rc == KMS_ERR_NOMEM ||
                rc == KMS_ERR_CRYPTO);
    FUZZ_ASSERT(v.n_advisory_ids == 0);
    kms_verified_free(&v);
    return 0;
}
