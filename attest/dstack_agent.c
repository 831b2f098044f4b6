/*
 * The dstack guest agent client (dstack_agent.h): HTTP/1.1 over its Unix stream socket through
 * kms_fetch (libcurl: CURLOPT_UNIX_SOCKET_PATH), one request per call under one deadline.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "attest/dstack_agent.h"
#include "common/buf.h"
#include "common/fetch.h"
#include "common/hex.h"

#define AGENT_MSG_MAX 200u /* characters of an agent error message quoted in ours */
#define AGENT_METHOD_MAX 64u

static void quote_message(const uint8_t *body, size_t len, char *msg, size_t cap)
{
    json_t *j = json_loadb((const char *)body, len, 0, NULL);
    const char *s = json_string_value(json_object_get(j, "error"));
    size_t n = 0, slen;

    if (s == NULL) {
        s = (const char *)body;
        slen = len;
    } else {
        slen = strlen(s);
    }
    for (size_t i = 0; i < slen && n + 1 < cap; i++)
        msg[n++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    msg[n] = '\0';
    json_decref(j);
}

static int unix_socket_setup(CURL *h, void *arg)
{
    if (curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, (const char *)arg) != CURLE_OK)
        return kms_err_set(KMS_ERR_INTERNAL, "libcurl cannot talk over a Unix socket");
    return 0;
}

int kms_dstack_agent_call(const char *socket_path, long timeout_ms, const char *method,
                          const char *body, json_t **out)
{
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};
    struct kms_fetch_req req = {0};
    struct kms_fetch_resp fr = {0};
    char url[AGENT_METHOD_MAX + 32], msg[AGENT_MSG_MAX + 1];
    json_error_t jerr;
    json_t *j = NULL;
    struct stat sb;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(method != NULL && strlen(method) < AGENT_METHOD_MAX &&
                   strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") ==
                       strlen(method),
               KMS_ERR_INVAL, "bad guest agent method name");
    KMS_ENSURE(socket_path != NULL && socket_path[0] != '\0', KMS_ERR_INVAL,
               "no dstack guest agent socket configured (--dstack-socket)");
    /* libcurl says only "couldn't connect": name the usual mistake ourselves */
    if (stat(socket_path, &sb) != 0 && errno == ENOENT) {
        rc = kms_err_set(KMS_ERR_NOTFOUND,
                         "no dstack guest agent socket at %s: run inside a dstack CVM with the "
                         "socket mounted into the container, or set --dstack-socket",
                         socket_path);
        goto out;
    }
    snprintf(url, sizeof(url), "http://dstack/%s", method);
    req.url = url;
    req.post = body != NULL ? body : "{}";
    req.post_len = strlen(req.post);
    req.headers = hdrs;
    req.timeout_ms = timeout_ms > 0 ? timeout_ms : KMS_DSTACK_TIMEOUT_MS;
    req.max_body = KMS_DSTACK_MAX_ANSWER;
    req.no_env_proxy = 1;
    req.setup = unix_socket_setup;
    req.arg = (void *)socket_path;
    rc = kms_fetch(&req, &fr);
    if (rc == KMS_ERR_TIMEOUT) {
        rc = kms_err_set(KMS_ERR_TIMEOUT,
                         "dstack guest agent at %s: %s did not answer within the timeout",
                         socket_path, method);
        goto out;
    }
    if (rc == KMS_ERR_TOOBIG) {
        rc = kms_err_set(KMS_ERR_TOOBIG, "dstack guest agent at %s: %s answer exceeds %u bytes",
                         socket_path, method, KMS_DSTACK_MAX_ANSWER);
        goto out;
    }
    if (rc < 0 && fr.cc == CURLE_COULDNT_CONNECT) {
        rc = kms_err_set(KMS_ERR_NET,
                         "cannot connect to the dstack guest agent at %s: %s (is the guest agent "
                         "running?)",
                         socket_path, kms_fetch_why(&fr));
        goto out;
    }
    if (rc < 0) {
        rc = kms_err_set(rc, "dstack guest agent at %s: %s failed: %s", socket_path, method,
                         kms_fetch_why(&fr));
        goto out;
    }
    if (fr.status < 200 || fr.status > 299) {
        quote_message(fr.body.data, fr.body.len, msg, sizeof(msg));
        rc = kms_err_set(KMS_ERR_NET, "dstack guest agent at %s: %s failed (HTTP %ld): %s",
                         socket_path, method, fr.status, msg[0] != '\0' ? msg : "no message");
        goto out;
    }
    j = json_loadb((const char *)fr.body.data, fr.body.len, 0, &jerr);
    KMS_ENSURE(json_is_object(j), KMS_ERR_PARSE,
               "dstack guest agent at %s: the %s answer is not a JSON object", socket_path, method);
    *out = j;
    j = NULL;
out:
    json_decref(j);
    kms_fetch_resp_free(&fr);
    return rc;
}

int kms_dstack_agent_attest(const char *socket_path, long timeout_ms, const uint8_t report_data[64],
                            struct kms_attestation **out)
{
    char hex[129], body[160];
    json_t *ans = NULL;
    const char *s;
    uint8_t *bin = NULL;
    size_t len = 0;
    struct kms_attestation *att = NULL;
    int rc = 0;

    *out = NULL;
    kms_hex_encode(report_data, 64, hex);
    snprintf(body, sizeof(body), "{\"report_data\":\"%s\"}", hex);
    KMS_GUARD(kms_dstack_agent_call(socket_path, timeout_ms, "Attest", body, &ans));
    s = json_string_value(json_object_get(ans, "attestation"));
    KMS_ENSURE(s != NULL, KMS_ERR_PARSE,
               "dstack guest agent at %s: the Attest answer has no \"attestation\" string",
               socket_path);
    KMS_ENSURE(strlen(s) <= 2u * KMS_ATT_MAX_BYTES + 2u, KMS_ERR_TOOBIG,
               "dstack guest agent at %s: attestation larger than %u bytes", socket_path,
               KMS_ATT_MAX_BYTES);
    rc = kms_hex_decode(s, &bin, &len);
    if (rc < 0) {
        rc = kms_err_set(KMS_ERR_PARSE, "dstack guest agent at %s: the attestation is not hex",
                         socket_path);
        goto out;
    }
    rc = kms_att_decode(bin, len, &att);
    if (rc < 0) {
        kms_err_wrap(rc,
                     "dstack guest agent at %s: the attestation is not a SCALE "
                     "VersionedAttestation V0",
                     socket_path);
        goto out;
    }
    KMS_ENSURE(att->mode == KMS_ATT_TDX || att->mode == KMS_ATT_GCP_TDX, KMS_ERR_ATT_UNSUPPORTED,
               "dstack guest agent at %s: attestation mode %s; a dstack CVM gives dstack-tdx or "
               "dstack-gcp-tdx",
               socket_path, kms_att_mode_name(att->mode));
    KMS_ENSURE(memcmp(att->report_data, report_data, 64) == 0, KMS_ERR_ATT_REPORT_DATA,
               "dstack guest agent at %s: the attestation is over other report_data than asked "
               "for",
               socket_path);
    *out = att;
    att = NULL;
out:
    kms_att_free(att);
    free(bin);
    json_decref(ans);
    return rc;
}

int kms_dstack_agent_info(const char *socket_path, long timeout_ms, json_t **out)
{
    json_t *ans = NULL;
    const char *app;
    uint8_t *bin = NULL;
    size_t len = 0;
    int rc = 0;

    *out = NULL;
    KMS_GUARD(kms_dstack_agent_call(socket_path, timeout_ms, "Info", NULL, &ans));
    app = json_string_value(json_object_get(ans, "app_id"));
    KMS_ENSURE(app != NULL && kms_hex_decode(app, &bin, &len) == 0, KMS_ERR_PARSE,
               "dstack guest agent at %s: the Info answer has no hex \"app_id\"", socket_path);
    *out = ans;
    ans = NULL;
out:
    free(bin);
    json_decref(ans);
    return rc;
}
