/*
 * Fuzz target: pRPC request bodies (node/prpc.c). The input is an HTTP POST body handed to
 * kms_prpc_body in a fake struct kms_http_req (NUL-terminated as node/http.c guarantees); an
 * accepted body is then read the way the services read it (hex byte fields through
 * kms_prpc_get_bytes, string and integer fields through jansson).
 *
 * Invariants: the body is accepted as a JSON object, or refused with HTTP 400 and a JSON body
 * {"error": "..."}; byte fields decode to a buffer or fail with a documented code.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "node/http.h"
#include "node/node.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const byte_fields[] = {"app_id", "csr", "signature", "quote"};
    struct kms_http_req req;
    struct kms_http_resp resp;
    uint8_t *body;
    json_t *o;

    if (size > KMS_HTTP_MAX_BODY)
        return 0;
    body = malloc(size + 1);
    FUZZ_ASSERT(body != NULL);
    if (size > 0)
        memcpy(body, data, size);
    body[size] = '\0';
    memset(&req, 0, sizeof(req));
    memset(&resp, 0, sizeof(resp));
    req.method = "POST";
    req.path = "/prpc/KMS.GetAppKey";
    req.content_type = "application/json";
    req.body = body;
    req.body_len = size;

    FUZZ_ASSERT(kms_prpc_method(req.path, "KMS") != NULL);
    o = kms_prpc_body(&req, &resp);
    if (o == NULL) {
        json_error_t jerr;
        json_t *err;

        FUZZ_ASSERT(resp.status == 400 && resp.body != NULL);
        err = json_loads(resp.body, 0, &jerr);
        FUZZ_ASSERT(err != NULL && json_is_string(json_object_get(err, "error")));
        json_decref(err);
        free(resp.body);
        free(body);
        return 0;
    }
    FUZZ_ASSERT(json_is_object(o) && resp.body == NULL);
    for (size_t i = 0; i < sizeof(byte_fields) / sizeof(byte_fields[0]); i++) {
        uint8_t *b = NULL;
        size_t blen = 0;
        int rc = kms_prpc_get_bytes(o, byte_fields[i], &b, &blen);

        FUZZ_ASSERT(rc == 0 || rc == KMS_ERR_PARSE || rc == KMS_ERR_INVAL || rc == KMS_ERR_NOMEM);
        FUZZ_ASSERT(rc == 0 ? b != NULL : 1);
        free(b);
    }
    (void)json_string_value(json_object_get(o, "vm_config"));
    (void)json_integer_value(json_object_get(o, "api_version"));
    json_decref(o);
    free(body);
    return 0;
}
