/*
 * A small bounded proto3 codec for the pRPC protobuf encoding (kms-reference.md §0), and the
 * message schemas of the KMS and Onboard services (§1, §11; field numbers as in the
 * reference's kms_rpc.proto).
 *
 * Protobuf is only a second wire form of the JSON the handlers already speak: a request is
 * decoded into the json_t the JSON path would give (every field present with its proto3
 * default, bytes as 0x-hex strings, integers as numbers, absent optional fields and
 * sub-messages as null, repeated fields as arrays), and a handler's json_t answer is encoded
 * back (0x-hex strings to bytes, proto3 defaults omitted except for `optional` fields and
 * sub-messages, JSON members without a field number ignored).
 *
 * Decoding follows prost: unknown fields (all wire types, groups included) are skipped, the
 * last value of a scalar wins, a repeated sub-message appends, a sub-message seen twice is
 * merged, uint32 takes the low 32 bits of the varint, bool is "varint != 0", strings must be
 * UTF-8 (and, as jansson's JSON path, free of NUL). A known field with the wrong wire type, a
 * truncated or over-long varint, a length past the end, field number 0, wire types 6/7 or an
 * unbalanced group is KMS_ERR_PARSE.
 *
 * Limits: KMS_PB_MAX_SIZE bytes per message, KMS_PB_MAX_DEPTH levels of nesting (the top
 * message is level 1; sub-messages and groups, skipped or not, add one each),
 * KMS_PB_MAX_REPEATED elements per repeated field (KMS_ERR_TOOBIG beyond them).
 * All parsing goes through struct kms_reader.
 */
#ifndef KMS_NODE_PROTO_H
#define KMS_NODE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/err.h"

#define KMS_PB_MAX_SIZE (4u * 1024u * 1024u)
#define KMS_PB_MAX_DEPTH 8
#define KMS_PB_MAX_REPEATED 256

enum kms_pb_wire {
    KMS_PB_WIRE_VARINT = 0,
    KMS_PB_WIRE_FIXED64 = 1,
    KMS_PB_WIRE_LEN = 2,
    KMS_PB_WIRE_SGROUP = 3,
    KMS_PB_WIRE_EGROUP = 4,
    KMS_PB_WIRE_FIXED32 = 5,
};

/* ---- wire primitives */

/* A base-128 varint of at most 10 bytes (the 10th at most 1). */
KMS_WUR int kms_pb_read_varint(struct kms_reader *r, uint64_t *v);
/* A field key: number 1..2^29-1 and wire type 0..5. */
KMS_WUR int kms_pb_read_key(struct kms_reader *r, uint32_t *field, unsigned *wire);
/* A length-delimited payload; *p borrows the reader's memory. */
KMS_WUR int kms_pb_read_len(struct kms_reader *r, const uint8_t **p, size_t *n);
/* Skips the value of a field whose key was just read, in a message at nesting depth (0 for
 * the top message); groups count towards KMS_PB_MAX_DEPTH. */
KMS_WUR int kms_pb_skip(struct kms_reader *r, uint32_t field, unsigned wire, unsigned depth);

KMS_WUR int kms_pb_put_varint(struct kms_buf *b, uint64_t v);
KMS_WUR int kms_pb_put_key(struct kms_buf *b, uint32_t field, unsigned wire);
/* Key, length and n bytes of p (a string, bytes or an encoded sub-message). */
KMS_WUR int kms_pb_put_len(struct kms_buf *b, uint32_t field, const void *p, size_t n);

/* ---- schemas */

enum kms_pb_type {
    KMS_PB_STRING,
    KMS_PB_BYTES,
    KMS_PB_UINT32,
    KMS_PB_UINT64,
    KMS_PB_BOOL,
    KMS_PB_MESSAGE,
};

#define KMS_PB_REPEATED 1u /* string or message only */
#define KMS_PB_OPTIONAL 2u /* proto3 `optional`: null in JSON when absent, encoded when set */

struct kms_pb_msg;

struct kms_pb_field {
    uint32_t number;
    const char *name; /* the JSON member name: the proto field name */
    enum kms_pb_type type;
    unsigned flags;
    const struct kms_pb_msg *msg; /* KMS_PB_MESSAGE only */
};

struct kms_pb_msg {
    const char *name;
    const struct kms_pb_field *fields; /* ascending field numbers */
    size_t n_fields;
};

/* Decodes a message into a new JSON object (caller decrefs *out). Detail names the field. */
KMS_WUR int kms_pb_to_json(const struct kms_pb_msg *m, const uint8_t *p, size_t n, json_t **out);
/* Appends the encoding of obj (a JSON object; borrowed) to out. A member of the wrong JSON
 * type is KMS_ERR_INVAL; a bytes member that is not hex is KMS_ERR_PARSE. On error out may
 * hold a partial encoding (the caller frees it). */
KMS_WUR int kms_pb_from_json(const struct kms_pb_msg *m, const json_t *obj, struct kms_buf *out);

/* ---- the pRPC services */

/* The message schemas of kms_rpc.proto (static storage), for the services' method tables. */
extern const struct kms_pb_msg kms_pb_BootstrapRequest, kms_pb_BootstrapResponse,
    kms_pb_OnboardRequest, kms_pb_OnboardResponse, kms_pb_AttestationInfoResponse,
    kms_pb_GetAppKeyRequest, kms_pb_AppKeyResponse, kms_pb_GetKmsKeyRequest, kms_pb_KmsKeys,
    kms_pb_KmsKeyResponse, kms_pb_AppId, kms_pb_PublicKeyResponse, kms_pb_GetMetaResponse,
    kms_pb_GetTempCaCertResponse, kms_pb_SignCertRequest, kms_pb_SignCertResponse,
    kms_pb_ClearImageCacheRequest;

struct kms_node;
struct kms_http_resp;
/* The verified TLS client of a KMS call (node/service_kms.c); NULL on the Onboard service. */
struct kms_rpc_caller;

/* Answers one call through kms_prpc_ok / kms_prpc_error; body is the decoded request
 * (borrowed). */
typedef void (*kms_rpc_handler)(struct kms_node *n, struct kms_rpc_caller *c, json_t *body,
                                struct kms_http_resp *resp);

/* One RPC of a service: the single row that dispatch, the attestation metrics and the protobuf
 * codec all read. req/resp NULL means google.protobuf.Empty; handler NULL means the method is
 * in the .proto but not served ("method not found", after the request was decoded). */
struct kms_pb_method {
    const char *name;
    kms_rpc_handler handler;
    int attested; /* released against an attestation: counted in the attestation metrics */
    const struct kms_pb_msg *req;
    const struct kms_pb_msg *resp;
};

/* A service's method table (static storage). */
struct kms_pb_service {
    const char *name; /* the pRPC path prefix: "KMS" or "Onboard" */
    const struct kms_pb_method *methods;
    size_t n_methods;
};

/* node/service_kms.c and node/service_onboard.c. */
extern const struct kms_pb_service kms_kms_service, kms_onboard_service;

/* The method `name` (prefix already stripped) of service "KMS" or "Onboard"; NULL if unknown.
 * Static storage. Defined with the pRPC transport (node/prpc.c). */
const struct kms_pb_method *kms_pb_method_find(const char *service, const char *name);

/* The error body message ProtoError{string message = 1}. */
extern const struct kms_pb_msg kms_pb_proto_error;

/* §0: the request is JSON when the HTTP method is GET, when the query has json (empty, true or
 * 1: has_json_arg), or when the Content-Type is application/json (parameters allowed, case
 * insensitive); otherwise protobuf. content_type may be NULL. Returns 1 for JSON. */
int kms_pb_request_is_json(const char *http_method, int has_json_arg, const char *content_type);

/* ProtoError{message} appended to out. */
KMS_WUR int kms_pb_encode_error(const char *message, struct kms_buf *out);

#endif
