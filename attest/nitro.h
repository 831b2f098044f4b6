/* attest: AWS Nitro Enclave NSM attestation documents (nitro.c). */
#ifndef KMS_ATTEST_NITRO_H
#define KMS_ATTEST_NITRO_H

#include "attest/attest.h"

/* Nitro (nitro.c): verifies a COSE_Sign1 NSM document: alg ES384, chain to the Nitro root,
 * signature, digest SHA384, PCR sizes, user_data == report_data. Fills mode, pcr[0..2] (48 B),
 * module_id, sim. */
int kms_nitro_verify(const struct kms_attest_ctx *ctx, const uint8_t *cose, size_t len,
                     const uint8_t report_data[64], struct kms_verified *out);
/* PCR0..2 of a Nitro document, parsed with the verifier's checks but NOT verified (for the
 * producer, which describes its own evidence). */
int kms_nitro_doc_pcrs(const uint8_t *cose, size_t len, uint8_t pcrs[3][48]);
/* user_data of a Nitro document, parsed with the verifier's checks but NOT verified (a bare
 * document given to `kmsctl attest verify` stands in its own report_data, which the verifier
 * then checks): all zero when the document has none; KMS_ERR_ATT_REPORT_DATA when it is not 64
 * bytes. */
int kms_nitro_doc_user_data(const uint8_t *cose, size_t len, uint8_t rd[64]);

#endif
