/*
 * Client of the AWS Nitro Security Module (NSM) inside a Nitro Enclave: the raw request /
 * response protocol of /dev/nsm (Linux drivers/misc/nsm.c, uapi linux/nsm.h; the same ABI as
 * aws-nitro-enclaves-nsm-api's driver): one ioctl NSM_IOCTL_RAW = _IOWR(0x0A, 0, struct
 * nsm_raw) carrying two iovecs, a CBOR request (at most 0x1000 bytes) and a buffer for the CBOR
 * response (at most 0x3000 bytes; the driver sets response.len to the bytes written).
 *
 * Messages are serde_cbor encodings of the Rust enums: an Attestation request is
 *   {"Attestation": {"user_data": bstr|null, "nonce": bstr|null, "public_key": bstr|null}}
 * and its answer {"Attestation": {"document": bstr}} (a COSE_Sign1 attestation document) or
 * {"Error": "InvalidArgument" | ...}.
 */
#ifndef KMS_ATTEST_NSM_H
#define KMS_ATTEST_NSM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>

#include "common/err.h"

#define KMS_NSM_DEV "/dev/nsm"
#define KMS_NSM_REQUEST_MAX 0x1000u
#define KMS_NSM_RESPONSE_MAX 0x3000u
#define KMS_NSM_USER_DATA_MAX 512u /* AWS limits of the attestation request fields */
#define KMS_NSM_NONCE_MAX 512u
#define KMS_NSM_PUBLIC_KEY_MAX 1024u

/* The uapi structures (linux/nsm.h), declared here because older kernel headers lack them. */
struct kms_nsm_iovec {
    uint64_t addr;
    uint64_t len;
};

struct kms_nsm_raw {
    struct kms_nsm_iovec request;
    struct kms_nsm_iovec response;
};

#define KMS_NSM_IOCTL_RAW _IOWR(0x0A, 0, struct kms_nsm_raw)

/* An Attestation request: each field is borrowed; NULL sends CBOR null (absent). */
struct kms_nsm_att_req {
    const uint8_t *user_data;
    size_t user_data_len;
    const uint8_t *nonce;
    size_t nonce_len;
    const uint8_t *public_key;
    size_t public_key_len;
};

/* Encodes the Attestation request into out (cap bytes; *len = bytes used). KMS_ERR_TOOBIG when
 * a field exceeds its AWS limit or the encoding exceeds cap. */
KMS_WUR int kms_nsm_encode_attestation(const struct kms_nsm_att_req *req, uint8_t *out, size_t cap,
                                       size_t *len);

/* Decodes an NSM response to an Attestation request: *doc borrows from resp (valid while resp
 * is). An {"Error": name} answer gives KMS_ERR_IO with the NSM's error name in the detail;
 * anything else that is not {"Attestation": {"document": bstr}} gives KMS_ERR_PARSE. */
KMS_WUR int kms_nsm_decode_attestation(const uint8_t *resp, size_t len, const uint8_t **doc,
                                       size_t *doc_len);

/* Opens dev (NULL = /dev/nsm), asks the NSM for an attestation document and returns a copy in
 * *doc (caller frees). KMS_ERR_NOTFOUND when the device is missing ("not inside a Nitro
 * Enclave"), KMS_ERR_IO when it cannot be opened, is not an NSM or answers with an error. */
KMS_WUR int kms_nsm_get_attestation(const char *dev, const struct kms_nsm_att_req *req,
                                    uint8_t **doc, size_t *doc_len);

#endif
