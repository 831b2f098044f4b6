/*
 * The dstack guest agent client (`--tee dstack`): inside a dstack CVM the app container gets its
 * evidence from the guest agent over a Unix socket (default /var/run/dstack.sock), service
 * DstackGuest, pRPC JSON transport as the reference SDKs speak it:
 *   POST /Attest  {"report_data": hex(64 bytes)} -> {"attestation": hex(SCALE
 * VersionedAttestation)} POST /Info    {}                             -> {"app_id": hex,
 * "instance_id": hex, ...} over HTTP/1.1 (Host: dstack, Connection: close). The agent answers TDX
 * and GCP TDX CVMs alike: Attest returns the full (unstripped) attestation whose mode says which.
 *
 * Limits: an answer is at most KMS_DSTACK_MAX_ANSWER bytes; every call (connect, write,
 * read) finishes within its timeout (timeout_ms <= 0: KMS_DSTACK_TIMEOUT_MS).
 * Errors: KMS_ERR_NOTFOUND (no socket at the path), KMS_ERR_NET (connect refused, I/O error, the
 * agent closed early or did not speak HTTP, or it answered an HTTP error: the detail carries its
 * message), KMS_ERR_TIMEOUT, KMS_ERR_PARSE (not JSON, a field missing or not hex), KMS_ERR_TOOBIG,
 * and from Attest KMS_ERR_ATT_* (attest.h).
 */
#ifndef KMS_ATTEST_DSTACK_AGENT_H
#define KMS_ATTEST_DSTACK_AGENT_H

#include <jansson.h>
#include <stdint.h>

#include "attest/attest.h"

#define KMS_DSTACK_SOCKET "/var/run/dstack.sock"
#define KMS_DSTACK_TIMEOUT_MS 30000L
#define KMS_DSTACK_MAX_ANSWER (4u * 1024u * 1024u)

/* One pRPC JSON call: POST /<method> with body (a JSON object text; NULL = "{}"). On success
 * *out is the answer's JSON object (caller decrefs). */
KMS_WUR int kms_dstack_agent_call(const char *socket_path, long timeout_ms, const char *method,
                                  const char *body, json_t **out);

/* DstackGuest.Attest over report_data; the answer is decoded (SCALE V0) and must be a TDX or GCP
 * TDX attestation whose report_data is exactly the one asked for (else KMS_ERR_ATT_REPORT_DATA,
 * KMS_ERR_ATT_UNSUPPORTED). *out is caller-owned (kms_att_free). */
KMS_WUR int kms_dstack_agent_attest(const char *socket_path, long timeout_ms,
                                    const uint8_t report_data[64], struct kms_attestation **out);

/* DstackGuest.Info: *out is the AppInfo JSON object (caller decrefs); app_id must be hex. */
KMS_WUR int kms_dstack_agent_info(const char *socket_path, long timeout_ms, json_t **out);

#endif
