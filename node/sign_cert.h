/*
 * The SignCert flow (node/sign_cert.c): verify a CSR (common/crypto/csr.h), authorize the app
 * as for GetAppKey, issue [leaf, App CA, root CA].
 */
#ifndef KMS_NODE_SIGN_CERT_H
#define KMS_NODE_SIGN_CERT_H

#include <stddef.h>
#include <stdint.h>

#include "attest/attest.h"
#include "common/err.h"

struct kms_node;

/* Result of one SignCert: PEM chain [leaf, App CA, root CA] (owned; kms_sign_cert_result_clear)
 * and the BootInfo used for the decision (for the audit log; may be partly empty on error). */
struct kms_sign_cert_result {
    char *chain[3];
    struct kms_boot_info bi;
};

void kms_sign_cert_result_clear(struct kms_sign_cert_result *r);

/* Runs SignCert on node n: decode, signature and confirm, upgrade, attestation bound to the CSR
 * pubkey, BootInfo (use_boottime_mr), OS image, bootAuth/app, App CA, leaf. Every refusal
 * returns < 0 with the detail the client sees. vm_config may be NULL. */
KMS_WUR int kms_sign_cert_run(struct kms_node *n, long long api_version, const uint8_t *csr,
                              size_t csr_len, const uint8_t *sig, size_t sig_len,
                              const char *vm_config, struct kms_sign_cert_result *out);

#endif
