/* pRPC transport (kms-reference.md §0): paths, JSON or protobuf per request, 0x-hex bytes,
 * HTTP 400 {"error": ...} or ProtoError. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "node/http.h"
#include "node/node.h"
#include "node/proto.h"

const char *kms_prpc_method(const char *path, const char *prefix)
{
    const char *m;
    size_t pl = strlen(prefix);

    if (strncmp(path, "/prpc/", 6) != 0)
        return NULL;
    m = path + 6;
    if (strncmp(m, prefix, pl) == 0 && m[pl] == '.')
        m += pl + 1;
    return m;
}

const struct kms_pb_method *kms_pb_method_find(const char *service, const char *name)
{
    static const struct kms_pb_service *const services[] = {&kms_kms_service, &kms_onboard_service};

    if (service == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++) {
        const struct kms_pb_service *s = services[i];

        if (strcmp(s->name, service) != 0)
            continue;
        for (size_t j = 0; j < s->n_methods; j++) {
            if (strcmp(s->methods[j].name, name) == 0)
                return &s->methods[j];
        }
        return NULL;
    }
    return NULL;
}

void kms_prpc_begin(const struct kms_http_req *req, struct kms_http_resp *resp, const char *service,
                    const char *method)
{
    resp->proto = !kms_pb_request_is_json(req->method, req->has_json_arg, req->content_type);
    resp->pb_method = kms_pb_method_find(service, method);
}

/* Hands the encoding in b to resp (b is reset). */
static void resp_own_buf(struct kms_http_resp *resp, int status, struct kms_buf *b)
{
    size_t n = b->len;

    kms_http_resp_own_len(resp, status, "application/octet-stream", (char *)kms_buf_steal(b, NULL),
                          n);
}

void kms_prpc_call(struct kms_node *n, struct kms_rpc_caller *c, const char *method, json_t *body,
                   struct kms_http_resp *resp)
{
    char msg[160];

    if (resp->pb_method != NULL && resp->pb_method->handler != NULL) {
        resp->pb_method->handler(n, c, body, resp);
        return;
    }
    snprintf(msg, sizeof(msg), "method not found: %.100s", method);
    kms_prpc_error(resp, msg);
}

void kms_prpc_error(struct kms_http_resp *resp, const char *msg)
{
    json_t *o;
    char *s;

    if (resp->proto) {
        struct kms_buf b = {0};

        if (kms_pb_encode_error(msg, &b) < 0)
            kms_buf_free(&b); /* out of memory: an empty ProtoError */
        resp_own_buf(resp, 400, &b);
        return;
    }
    o = json_pack("{s:s}", "error", msg);
    s = o != NULL ? json_dumps(o, JSON_INDENT(2)) : NULL;
    json_decref(o);
    if (s == NULL)
        s = strdup("{\"error\": \"internal error\"}");
    kms_http_resp_own(resp, 400, "application/json", s);
}

/* The handler's answer as the method's protobuf response (Empty: no bytes). */
static void ok_proto(struct kms_http_resp *resp, json_t *obj)
{
    struct kms_buf b = {0};
    char msg[600];
    int rc;

    if (resp->pb_method == NULL) {
        kms_prpc_error(resp, "failed to encode the response: no protobuf schema for the method");
        return;
    }
    rc = resp->pb_method->resp != NULL ? kms_pb_from_json(resp->pb_method->resp, obj, &b) : 0;
    if (rc < 0) {
        kms_buf_free(&b);
        snprintf(msg, sizeof(msg), "failed to encode the response: %s", kms_err_detail());
        kms_prpc_error(resp, msg);
        return;
    }
    resp_own_buf(resp, 200, &b);
}

void kms_prpc_ok(struct kms_http_resp *resp, json_t *obj)
{
    char *s;

    if (resp->proto) {
        ok_proto(resp, obj);
        json_decref(obj);
        return;
    }
    s = json_dumps(obj, JSON_ENCODE_ANY | JSON_INDENT(2));
    json_decref(obj);
    if (s == NULL) {
        kms_prpc_error(resp, "failed to encode the response");
        return;
    }
    kms_http_resp_own(resp, 200, "application/json", s);
}

/* GET carries its fields in the query string (other than the `json` switch); digit-only
 * values become numbers so numeric fields decode as they do from a JSON body. */
static void query_field(void *arg, const char *key, const char *value)
{
    json_t *o = arg;
    size_t n = strlen(value);

    if (strcmp(key, "json") == 0)
        return;
    if (n > 0 && n < 16 && strspn(value, "0123456789") == n)
        json_object_set_new(o, key, json_integer((json_int_t)strtoll(value, NULL, 10)));
    else
        json_object_set_new(o, key, json_string(value));
}

json_t *kms_prpc_body(const struct kms_http_req *req, struct kms_http_resp *resp)
{
    json_error_t jerr;
    json_t *o;
    size_t i = 0;

    if (resp->proto) {
        char msg[600];

        /* An Empty request (or an unknown method, refused later) ignores the body. */
        if (resp->pb_method == NULL || resp->pb_method->req == NULL)
            return json_object();
        if (kms_pb_to_json(resp->pb_method->req, req->body, req->body_len, &o) == 0)
            return o;
        snprintf(msg, sizeof(msg), "failed to decode request: %s", kms_err_detail());
        kms_prpc_error(resp, msg);
        return NULL;
    }
    if (strcmp(req->method, "GET") == 0) {
        o = json_object();
        if (o != NULL && req->conn != NULL)
            kms_http_query_each(req, query_field, o);
        return o;
    }

    while (i < req->body_len && (req->body[i] == ' ' || req->body[i] == '\n' ||
                                 req->body[i] == '\r' || req->body[i] == '\t'))
        i++;
    {
        size_t j = req->body_len;

        while (j > i && (req->body[j - 1] == ' ' || req->body[j - 1] == '\n' ||
                         req->body[j - 1] == '\r' || req->body[j - 1] == '\t'))
            j--;
        if (i == j || (j - i == 4 && memcmp(req->body + i, "null", 4) == 0))
            return json_object();
    }
    o = json_loadb((const char *)req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (o == NULL) {
        char msg[300];

        snprintf(msg, sizeof(msg), "failed to decode request: invalid JSON at line %d: %s",
                 jerr.line, jerr.text);
        kms_prpc_error(resp, msg);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        kms_prpc_error(resp, "failed to decode request: expected a JSON object");
        return NULL;
    }
    return o;
}
