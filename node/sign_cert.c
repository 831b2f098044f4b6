/* SignCert (kms-reference.md §1.2): CSR v1/v2 in SCALE, signed by the CSR key. */
#include <jansson.h>

#include "node/http.h"
#include "node/node.h"

void kms_sign_cert(struct kms_node *n, int has_cert, json_t *body, struct kms_http_resp *resp)
{
    (void)n;
    (void)has_cert;
    (void)body;
    kms_prpc_error(resp, "SignCert is not supported by this kmsd build yet");
}
