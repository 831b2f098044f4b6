/* pRPC bytes fields (kms-reference.md §0): bytes travel as "0x"-prefixed hex JSON
 * strings; readers also take hex without the prefix. Used by the pRPC server (node/prpc.c and
 * the services) and by the clients (replication, kmsctl). */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"
#include "replication/replication.h"

void (*kms_prpc_free_hex)(void *p) = free;

json_t *kms_prpc_bytes(const uint8_t *p, size_t n)
{
    char *s = kms_hex_dup(p, n, 1);
    json_t *j;

    if (s == NULL)
        return NULL;
    j = json_string(s);
    /* p may be a key (GetAppKey, GetKmsKey): its hex must not linger in freed memory */
    OPENSSL_cleanse(s, strlen(s));
    kms_prpc_free_hex(s);
    return j;
}

int kms_prpc_get_bytes(json_t *obj, const char *field, uint8_t **out, size_t *len)
{
    json_t *v = json_object_get(obj, field);
    int rc;

    if (v == NULL || json_is_null(v)) {
        *out = calloc(1, 1);
        *len = 0;
        return *out != NULL ? 0 : kms_err_set(KMS_ERR_NOMEM, "out of memory");
    }
    if (!json_is_string(v))
        return kms_err_set(KMS_ERR_PARSE, "field %s must be a hex string", field);
    rc = kms_hex_decode(json_string_value(v), out, len);
    if (rc < 0)
        return kms_err_wrap(rc, "field %s", field);
    return 0;
}
