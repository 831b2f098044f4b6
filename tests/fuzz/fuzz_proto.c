/*
 * Fuzz target: the protobuf pRPC codec (node/proto.c). The first input byte picks a request
 * schema of the KMS/Onboard services; the rest is decoded with kms_pb_to_json.
 *
 * Invariants: a refusal is KMS_ERR_PARSE or KMS_ERR_TOOBIG with no object; an accepted message
 * re-encodes (kms_pb_from_json) and that encoding decodes to an equal JSON object.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "fuzz.h"
#include "node/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[][2] = {
        {"KMS", "GetAppKey"}, {"KMS", "GetKmsKey"},     {"KMS", "GetAppEnvEncryptPubKey"},
        {"KMS", "SignCert"},  {"Onboard", "Bootstrap"}, {"Onboard", "Onboard"},
        {"KMS", "GetMeta"},   {"KMS", "GetTempCaCert"},
    };
    const struct kms_pb_method *m;
    const struct kms_pb_msg *msg;
    struct kms_buf enc = {0};
    json_t *o = NULL, *o2 = NULL;
    int rc;

    if (size < 1)
        return 0;
    m = kms_pb_method_find(methods[data[0] % 8][0], methods[data[0] % 8][1]);
    FUZZ_ASSERT(m != NULL);
    /* Requests, and for the Empty-request methods their responses (richer schemas). */
    msg = m->req != NULL ? m->req : m->resp;
    if (msg == NULL)
        return 0;
    rc = kms_pb_to_json(msg, data + 1, size - 1, &o);
    if (rc < 0) {
        FUZZ_ASSERT(rc == KMS_ERR_PARSE || rc == KMS_ERR_TOOBIG);
        FUZZ_ASSERT(o == NULL);
        return 0;
    }
    FUZZ_ASSERT(json_is_object(o));
    rc = kms_pb_from_json(msg, o, &enc);
    FUZZ_ASSERT(rc == 0);
    rc = kms_pb_to_json(msg, enc.data != NULL ? enc.data : (const uint8_t *)"", enc.len, &o2);
    FUZZ_ASSERT(rc == 0 && json_equal(o, o2));
    json_decref(o);
    json_decref(o2);
    kms_buf_free(&enc);
    return 0;
}
