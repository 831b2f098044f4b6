/*
 * Fuzz target: the webhook authorization backend's answers (chain/webhook.c), i.e. what an
 * auth-api returns with HTTP 2xx: the bootAuth decision {isAllowed, gatewayAppId, reason} and
 * the GET / info {status, kmsContractAddr, gatewayAppId, chainId, appImplementation}. The input
 * is the body; both parsers (kms_webhook_parse_decision / _info, chain/internal.h, the code the
 * backend itself runs after the HTTP exchange) read it.
 *
 * Invariants:
 *  - a rejection is KMS_ERR_AUTH_RESPONSE (or NOMEM); a refused decision leaves the result
 *    untouched (kms_auth_check then reports "not allowed");
 *  - an accepted decision is exactly what the JSON says: allowed = isAllowed, gatewayAppId
 *    whole, reason a prefix of the given one that is valid UTF-8 and NUL-terminated in its
 *    buffer; accepted info strings are at most 4096 bytes and chainId is the given integer;
 *  - every error detail names the auth-api and contains no control characters (details go to
 *    the log and to clients).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "chain/internal.h"
#include "common/utf8.h"
#include "fuzz.h"

static void check_detail(void)
{
    const char *d = kms_err_detail();

    FUZZ_ASSERT(strncmp(d, "auth-api ", 9) == 0 || strncmp(d, "gatewayAppId is ", 16) == 0 ||
                strcmp(d, "out of memory") == 0);
    for (; *d != '\0'; d++)
        FUZZ_ASSERT((unsigned char)*d >= 0x20 && *d != 0x7f);
}

static void check_decision(const uint8_t *data, size_t size)
{
    struct kms_auth_result res, before;
    json_error_t jerr;
    json_t *j;
    const char *gw, *reason;
    int rc;

    memset(&res, 0x5a, sizeof(res));
    before = res;
    rc = kms_webhook_parse_decision((const char *)data, size, "http://fuzz/", "bootAuth/app", &res);
    if (rc < 0) {
        FUZZ_ASSERT(rc == KMS_ERR_AUTH_RESPONSE || rc == KMS_ERR_NOMEM);
        FUZZ_ASSERT(memcmp(&res, &before, sizeof(res)) == 0);
        check_detail();
        return;
    }
    FUZZ_ASSERT(res.allowed == 0 || res.allowed == 1);
    FUZZ_ASSERT(memchr(res.reason, 0, sizeof(res.reason)) != NULL &&
                kms_utf8_valid(res.reason, strlen(res.reason)));
    FUZZ_ASSERT(memchr(res.gateway_app_id, 0, sizeof(res.gateway_app_id)) != NULL);
    j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    FUZZ_ASSERT(j != NULL && json_is_object(j));
    FUZZ_ASSERT(json_is_true(json_object_get(j, "isAllowed")) == res.allowed);
    gw = json_string_value(json_object_get(j, "gatewayAppId"));
    reason = json_string_value(json_object_get(j, "reason"));
    FUZZ_ASSERT(gw != NULL && strcmp(gw, res.gateway_app_id) == 0);
    FUZZ_ASSERT(reason != NULL && strncmp(reason, res.reason, strlen(res.reason)) == 0);
    FUZZ_ASSERT(strlen(reason) < sizeof(res.reason) ? strcmp(reason, res.reason) == 0
                                                    : strlen(res.reason) + 4 >= sizeof(res.reason));
    json_decref(j);
}

static void check_info(const uint8_t *data, size_t size)
{
    struct kms_auth_info info;
    int rc;

    memset(&info, 0, sizeof(info));
    rc = kms_webhook_parse_info((const char *)data, size, "http://fuzz/", &info);
    if (rc < 0) {
        FUZZ_ASSERT(rc == KMS_ERR_AUTH_RESPONSE || rc == KMS_ERR_NOMEM);
        check_detail();
    } else {
        json_error_t jerr;
        json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
        const char *const s[] = {info.status, info.kms_contract_addr, info.gateway_app_id,
                                 info.app_implementation};

        for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++)
            FUZZ_ASSERT(s[i] != NULL && strlen(s[i]) <= 4096);
        FUZZ_ASSERT(j != NULL && !info.is_dev);
        FUZZ_ASSERT(json_integer_value(json_object_get(j, "chainId")) == (json_int_t)info.chain_id);
        json_decref(j);
    }
    kms_auth_info_clear(&info);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024 * 1024)
        return 0; /* the backend caps answers at 1 MiB */
    check_decision(data, size);
    check_info(data, size);
    return 0;
}
