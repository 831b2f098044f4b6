/*
 * Fuzz target: what the native Ethereum backend parses from an RPC node it does not control:
 * eth_call return data (ABI bool/string/address decoders, revert-data descriptions) and
 * JSON-RPC quantities and data strings. (The webhook backend's response parsing is static in
 * chain/webhook.c, so it has no target of its own.)
 *
 * The input is the raw return data; when it also parses as JSON, each JSON string in a top-level
 * array or the value itself goes through kms_eth_quantity / kms_eth_data.
 *
 * Invariants: decoded strings are NUL-terminated printable ASCII of at most KMS_ETH_MAX_STRING
 * bytes; decoded addresses need 12 zero high bytes; booleans are 0 or 1; revert descriptions
 * are NUL-terminated inside the buffer.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "chain/eth.h"
#include "fuzz.h"

static void check_str(const char *s)
{
    size_t n = strlen(s);

    FUZZ_ASSERT(n <= KMS_ETH_MAX_STRING);
    for (size_t i = 0; i < n; i++)
        FUZZ_ASSERT(s[i] >= 0x20 && s[i] < 0x7f);
}

static void json_values(const json_t *v)
{
    uint64_t q;
    uint8_t *d = NULL;
    size_t dlen = 0;
    int rc;

    rc = kms_eth_quantity(v, &q);
    FUZZ_ASSERT(rc <= 0);
    rc = kms_eth_data(v, KMS_ETH_MAX_RETURN, &d, &dlen);
    FUZZ_ASSERT(rc < 0 || dlen <= KMS_ETH_MAX_RETURN);
    if (rc == 0 && dlen > 0) {
        int flag = -1;
        char *s = NULL;

        if (kms_eth_abi_decode_bool_string(d, dlen, &flag, &s) == 0) {
            FUZZ_ASSERT(flag == 0 || flag == 1);
            check_str(s);
        }
        free(s);
    }
    free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = NULL;
    char desc[256];
    uint8_t addr[20];
    int flag = -1;
    json_error_t jerr;
    json_t *j;

    if (size > KMS_ETH_MAX_RETURN)
        return 0;
    if (kms_eth_abi_decode_bool(data, size, &flag) == 0)
        FUZZ_ASSERT(flag == 0 || flag == 1);
    if (kms_eth_abi_decode_string(data, size, &s) == 0)
        check_str(s);
    free(s);
    s = NULL;
    flag = -1;
    if (kms_eth_abi_decode_bool_string(data, size, &flag, &s) == 0) {
        FUZZ_ASSERT(flag == 0 || flag == 1);
        check_str(s);
    }
    free(s);
    if (kms_eth_abi_decode_address(data, size, addr) == 0) {
        char sum[43];
        uint8_t back[20];

        kms_eth_addr_checksum(addr, sum);
        FUZZ_ASSERT(kms_eth_parse_address(sum, back) == 0 && memcmp(back, addr, 20) == 0);
    }
    memset(desc, 0x55, sizeof(desc));
    kms_eth_revert_describe(data, size, desc, sizeof(desc));
    FUZZ_ASSERT(memchr(desc, '\0', sizeof(desc)) != NULL);

    j = json_loadb((const char *)data, size, JSON_DECODE_ANY, &jerr);
    if (j != NULL) {
        json_values(j);
        if (json_is_array(j))
            for (size_t i = 0; i < json_array_size(j) && i < 16; i++)
                json_values(json_array_get(j, i));
        json_decref(j);
    }
    return 0;
}
