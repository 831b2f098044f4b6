/*
 * End to end: the protobuf encoding of pRPC (kms-reference.md §0) on a real kmsd. A client
 * that POSTs protobuf (no ?json, no JSON Content-Type) gets application/octet-stream protobuf
 * carrying the same values as the JSON path: Onboard.GetAttestationInfo, Onboard.Bootstrap
 * (against the bootstrap_info the JSON GetMeta reports), Finish (empty body), GetMeta,
 * GetTempCaCert, GetAppEnvEncryptPubKey and GetAppKey through the RA-TLS client certificate
 * flow. Errors are HTTP 400 ProtoError whose message equals the JSON error (second Bootstrap,
 * bad app_id, no attestation); malformed protobuf and oversized bodies are ProtoErrors too.
 * A JSON Content-Type without ?json, and GET, stay JSON.
 *
 * When protoc is installed, it is the independent check: it encodes the requests from text
 * format, and each protobuf answer must be byte-identical to protoc's encoding of the JSON
 * path's answer with tests/integration/kms_rpc_messages.proto (the message definitions
 * transcribed from the spec), so field numbers, wire types and proto3 default omission are
 * checked by another implementation.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "attest/events.h"
#include "attest/sim.h"
#include "common/buf.h"
#include "common/fetch.h"
#include "common/file.h"
#include "common/hex.h"
#include "node/proto.h"
#include "replication/replication.h"
#include "kmstest_proc.h"
#include "test.h"

static char g_tmp[256];
static char g_sim[300];
static struct kms_sim *g_simh;
static int g_protoc; /* protoc is installed */

/* ---- HTTP(S) with an optional client certificate, binary bodies */

struct res {
    long status;
    char ctype[128];
    struct kms_buf body;
};

struct http_tls {
    const char *cert;
    const char *key;
    struct res *r;
};

/* kms_fetch setup: no server check; cert/key (PEM, may be NULL) as client certificate. */
static int http_setup(CURL *c, void *arg)
{
    const struct http_tls *t = arg;

    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    if (t->cert != NULL) {
        struct curl_blob cb = {(void *)t->cert, strlen(t->cert), CURL_BLOB_COPY};
        struct curl_blob kb = {(void *)t->key, strlen(t->key), CURL_BLOB_COPY};

        curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &cb);
        curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &kb);
        curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
    }
    return 0;
}

static int http_done(CURL *c, void *arg)
{
    const struct http_tls *t = arg;
    char *ct = NULL;

    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    snprintf(t->r->ctype, sizeof(t->r->ctype), "%s", ct != NULL ? ct : "");
    return 0;
}

/* POSTs len bytes of body to url (GET when body is NULL). ctype NULL sends no Content-Type.
 * cert/key (PEM, may be NULL) are the client certificate. */
static void http(const char *url, const char *ctype, const void *body, size_t len, const char *cert,
                 const char *key, struct res *r)
{
    struct http_tls t = {cert, key, r};
    struct kms_fetch_req req = {0};
    struct kms_fetch_resp fr;
    const char *hdrs[2] = {NULL, NULL};
    char hdr[160];

    memset(r, 0, sizeof(*r));
    req.url = url;
    req.timeout_ms = 20000;
    req.max_body = 8u * 1024u * 1024u;
    req.setup = http_setup;
    req.done = http_done;
    req.arg = &t;
    if (body != NULL) {
        req.post = body;
        req.post_len = len;
        snprintf(hdr, sizeof(hdr), "Content-Type:%s%s", ctype != NULL ? " " : "",
                 ctype != NULL ? ctype : ""); /* "Content-Type:" removes curl's default */
        hdrs[0] = hdr;
        req.headers = hdrs;
    }
    if (kms_fetch(&req, &fr) == 0) {
        r->status = fr.status;
        r->body = fr.body;
        memset(&fr.body, 0, sizeof(fr.body));
    }
    kms_fetch_resp_free(&fr);
}

static void res_free(struct res *r)
{
    kms_buf_free(&r->body);
}

/* The JSON path: POST {base}/prpc/{method}?json; the parsed answer (caller decrefs). */
static json_t *json_call(const char *base, const char *method, const char *body, long want,
                         const char *cert, const char *key)
{
    char url[300];
    struct res r;
    json_t *o;

    snprintf(url, sizeof(url), "%s/prpc/%s?json", base, method);
    http(url, NULL, body, strlen(body), cert, key, &r);
    CHECK(r.status == want);
    CHECK(strcmp(r.ctype, "application/json") == 0);
    o = r.body.len > 0 ? json_loadb((const char *)r.body.data, r.body.len, 0, NULL) : NULL;
    CHECK(o != NULL);
    res_free(&r);
    return o;
}

/* The protobuf path: POST {base}/prpc/{method} with len bytes of req. */
static void pb_call(const char *base, const char *method, const char *ctype, const void *req,
                    size_t len, const char *cert, const char *key, struct res *r)
{
    char url[300];

    snprintf(url, sizeof(url), "%s/prpc/%s", base, method);
    http(url, ctype, req != NULL ? req : "", len, cert, key, r);
    CHECK(strcmp(r->ctype, "application/octet-stream") == 0);
}

/* Decodes a protobuf answer with the method's response schema (or ProtoError). */
static json_t *pb_decode(const char *svc, const char *method, int error, const struct res *r)
{
    const struct kms_pb_method *m = kms_pb_method_find(svc, method);
    const struct kms_pb_msg *s = error ? &kms_pb_proto_error : m->resp;
    json_t *o = NULL;

    CHECK_OK(kms_pb_to_json(s, r->body.data != NULL ? r->body.data : (const uint8_t *)"",
                            r->body.len, &o));
    return o;
}

/* ---- protoc as the independent encoder */

/* bytes fields of the services (kms-reference.md §1, §11): their JSON is 0x-hex */
static int is_bytes_field(const char *name)
{
    static const char *const names[] = {
        "ca_pubkey",     "k256_pubkey", "attestation",    "disk_crypt_key",
        "env_crypt_key", "k256_key",    "k256_signature", "os_image_hash",
        "public_key",    "signature",   "signature_v1",   "app_id",
        "csr",           "device_id",   "mr_aggregated",  "ppid"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(names[i], name) == 0)
            return 1;
    }
    return 0;
}

static void put_octal(struct kms_buf *t, const uint8_t *p, size_t n)
{
    char e[8];

    CHECK_OK(kms_buf_put_u8(t, '"'));
    for (size_t i = 0; i < n; i++) {
        snprintf(e, sizeof(e), "\\%03o", p[i]);
        CHECK_OK(kms_buf_put_str(t, e));
    }
    CHECK_OK(kms_buf_put_u8(t, '"'));
}

/* Text format of a JSON answer: null members are absent, bytes from 0x-hex. */
static void to_text(const json_t *o, struct kms_buf *t);

static void value_text(const char *k, const json_t *v, struct kms_buf *t)
{
    char num[32];

    if (json_is_object(v)) {
        CHECK_OK(kms_buf_put_str(t, k));
        CHECK_OK(kms_buf_put_str(t, " { "));
        to_text(v, t);
        CHECK_OK(kms_buf_put_str(t, "} "));
        return;
    }
    CHECK_OK(kms_buf_put_str(t, k));
    CHECK_OK(kms_buf_put_str(t, ": "));
    if (json_is_string(v) && is_bytes_field(k)) {
        uint8_t *b = NULL;
        size_t n = 0;

        CHECK_OK(kms_hex_decode(json_string_value(v), &b, &n));
        put_octal(t, b, n);
        free(b);
    } else if (json_is_string(v)) {
        put_octal(t, (const uint8_t *)json_string_value(v), json_string_length(v));
    } else if (json_is_integer(v)) {
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
        CHECK_OK(kms_buf_put_str(t, num));
    } else {
        CHECK_OK(kms_buf_put_str(t, json_is_true(v) ? "true" : "false"));
    }
    CHECK_OK(kms_buf_put_u8(t, ' '));
}

static void to_text(const json_t *o, struct kms_buf *t)
{
    const char *k;
    const json_t *v;

    json_object_foreach((json_t *)o, k, v)
    {
        if (json_is_null(v))
            continue;
        if (json_is_array(v)) {
            for (size_t i = 0; i < json_array_size(v); i++)
                value_text(k, json_array_get(v, i), t);
        } else {
            value_text(k, v, t);
        }
    }
}

/* protoc --encode=kms.<type> of the text in t; the bytes in out. */
static int protoc_encode(const char *type, const struct kms_buf *t, struct kms_buf *out)
{
    char in[400], outp[400], cmd[1500];
    uint8_t *d = NULL;
    size_t n = 0;
    int rc;

    snprintf(in, sizeof(in), "%s/protoc.in", g_tmp);
    snprintf(outp, sizeof(outp), "%s/protoc.out", g_tmp);
    CHECK_OK(
        kms_file_write_atomic(in, t->data != NULL ? t->data : (const uint8_t *)"", t->len, 0600));
    snprintf(cmd, sizeof(cmd),
             "protoc -I %s/tests/integration --encode=kms.%s kms_rpc_messages.proto <%s >%s",
             getenv("KMS_SOURCE_DIR"), type, in, outp);
    rc = system(cmd);
    CHECK(rc == 0);
    if (rc != 0)
        return -1;
    CHECK_OK(kms_file_read(outp, 1u << 24, &d, &n));
    memset(out, 0, sizeof(*out));
    if (d != NULL && n > 0)
        CHECK_OK(kms_buf_put(out, d, n));
    free(d);
    return 0;
}

/* The protobuf answer r must be protoc's encoding of the JSON answer j (as type). */
static void same_as_protoc(const char *type, const json_t *j, const struct res *r)
{
    struct kms_buf t = {0}, want = {0};

    if (!g_protoc)
        return;
    to_text(j, &t);
    if (protoc_encode(type, &t, &want) == 0) {
        CHECK(want.len == r->body.len &&
              (want.len == 0 || memcmp(want.data, r->body.data, want.len) == 0));
        if (want.len != r->body.len)
            fprintf(stderr, "  %s: protoc %zu bytes, kmsd %zu bytes\n", type, want.len,
                    r->body.len);
    }
    kms_buf_free(&t);
    kms_buf_free(&want);
}

/* A request's bytes: protoc's encoding of text when installed, else kmsd's codec of json. */
static void request_bytes(const char *svc, const char *method, const char *type, const char *text,
                          const char *json, struct kms_buf *out)
{
    json_t *o = json_loads(json, 0, NULL);
    struct kms_buf mine = {0};

    memset(out, 0, sizeof(*out));
    CHECK(o != NULL);
    CHECK_OK(kms_pb_from_json(kms_pb_method_find(svc, method)->req, o, &mine));
    if (g_protoc) {
        struct kms_buf t = {0};

        CHECK_OK(kms_buf_put_str(&t, text));
        if (protoc_encode(type, &t, out) == 0) /* both encoders agree on requests too */
            CHECK(out->len == mine.len &&
                  (mine.len == 0 || memcmp(out->data, mine.data, mine.len) == 0));
        kms_buf_free(&t);
        kms_buf_free(&mine);
    } else {
        *out = mine;
    }
    json_decref(o);
}

/* Fields of schema message `a` (a decoded protobuf answer) equal in the JSON answer `j`. */
static void same_fields(const json_t *a, const json_t *j)
{
    const char *k;
    const json_t *v;

    json_object_foreach((json_t *)a, k, v)
    {
        const json_t *w = json_object_get(j, k);

        if (!json_equal(v, w) && !(json_is_null(w) && json_is_null(v))) {
            char *s1 = json_dumps(v, JSON_ENCODE_ANY), *s2 = json_dumps(w, JSON_ENCODE_ANY);

            fprintf(stderr, "  field %s: protobuf %.80s, JSON %.80s\n", k, s1, s2 ? s2 : "-");
            free(s1);
            free(s2);
            CHECK(0);
        }
    }
}

/* ---- the app client (simulated TDX evidence for app_id 0x42..) */

static int app_attest(void *arg, const uint8_t rd[64], struct kms_attestation **out)
{
    struct kms_runtime_event ev[5];
    uint8_t app_id[20], compose[32] = {7};

    (void)arg;
    memset(app_id, 0x42, sizeof(app_id));
    kms_app_boot_events(ev, app_id, compose, NULL, 0);
    return kms_sim_attest(g_simh, NULL, rd, ev, 5, "", out);
}

/* ---- the test */

/* Onboard service over protobuf: GetAttestationInfo and Bootstrap as JSON would answer,
 * second Bootstrap refused with the JSON error's message, Finish with an empty body. Returns
 * the protobuf Bootstrap answer (caller decrefs). */
static json_t *onboard_phase(const char *ob)
{
    struct kms_buf req = {0};
    struct res r;
    json_t *a, *j, *boot, *e;

    /* GetAttestationInfo (Empty request: no body at all) */
    pb_call(ob, "Onboard.GetAttestationInfo", NULL, NULL, 0, NULL, NULL, &r);
    CHECK(r.status == 200);
    a = pb_decode("Onboard", "GetAttestationInfo", 0, &r);
    j = json_call(ob, "Onboard.GetAttestationInfo", "", 200, NULL, NULL);
    CHECK(a != NULL && j != NULL && json_object_size(a) == 8);
    same_fields(a, j);
    same_as_protoc("AttestationInfoResponse", j, &r);
    json_decref(a);
    json_decref(j);
    res_free(&r);

    /* Bootstrap */
    request_bytes("Onboard", "Bootstrap", "BootstrapRequest", "domain: \"127.0.0.1\"",
                  "{\"domain\":\"127.0.0.1\"}", &req);
    pb_call(ob, "Onboard.Bootstrap", "application/octet-stream", req.data, req.len, NULL, NULL, &r);
    CHECK(r.status == 200);
    boot = pb_decode("Onboard", "Bootstrap", 0, &r);
    {
        const char *pub = json_string_value(json_object_get(boot, "k256_pubkey"));

        CHECK(pub != NULL && strlen(pub) == 2 + 66 &&
              (strncmp(pub, "0x02", 4) == 0 || strncmp(pub, "0x03", 4) == 0));
    }
    CHECK(json_string_length(json_object_get(boot, "ca_pubkey")) > 100);
    res_free(&r);

    /* a second Bootstrap: ProtoError with the JSON path's message */
    pb_call(ob, "Bootstrap", "application/octet-stream", req.data, req.len, NULL, NULL, &r);
    CHECK(r.status == 400);
    e = pb_decode("Onboard", "Bootstrap", 1, &r);
    j = json_call(ob, "Onboard.Bootstrap", "{\"domain\":\"127.0.0.1\"}", 400, NULL, NULL);
    CHECK(e != NULL && j != NULL &&
          json_equal(json_object_get(e, "message"), json_object_get(j, "error")));
    CHECK(strstr(json_string_value(json_object_get(e, "message")), "already has keys") != NULL);
    {
        json_t *pe = json_pack("{s:O}", "message", json_object_get(j, "error"));

        same_as_protoc("ProtoError", pe, &r);
        json_decref(pe);
    }
    json_decref(e);
    json_decref(j);
    res_free(&r);
    kms_buf_free(&req);

    /* Finish: Empty → Empty, an empty body */
    pb_call(ob, "Onboard.Finish", NULL, NULL, 0, NULL, NULL, &r);
    CHECK(r.status == 200 && r.body.len == 0);
    res_free(&r);
    return boot;
}

/* KMS service public methods: protobuf answers carry the JSON path's values. */
static void public_methods(const char *url, const json_t *boot)
{
    static const char app[] = "0x4242424242424242424242424242424242424242";
    struct kms_buf req = {0};
    struct res r;
    json_t *a, *j, *e;
    char body[128];

    /* GetMeta: also the bootstrap_info the JSON path stored equals the protobuf Bootstrap */
    pb_call(url, "GetMeta", NULL, NULL, 0, NULL, NULL, &r);
    CHECK(r.status == 200);
    a = pb_decode("KMS", "GetMeta", 0, &r);
    j = json_call(url, "KMS.GetMeta", "", 200, NULL, NULL);
    CHECK(a != NULL && j != NULL);
    same_fields(a, j);
    CHECK(json_equal(json_object_get(j, "bootstrap_info"), boot));
    CHECK(json_equal(json_object_get(a, "bootstrap_info"), boot));
    /* kmsd's extra members have no field number: not in the protobuf answer */
    CHECK(json_object_get(j, "state") != NULL && json_object_get(a, "state") == NULL);
    json_object_del(j, "state");
    json_object_del(j, "insecure_simulation");
    json_object_del(j, "ca_pubkey");
    same_as_protoc("GetMetaResponse", j, &r);
    json_decref(a);
    json_decref(j);
    res_free(&r);

    /* GetTempCaCert */
    pb_call(url, "KMS.GetTempCaCert", "application/octet-stream", NULL, 0, NULL, NULL, &r);
    CHECK(r.status == 200);
    a = pb_decode("KMS", "GetTempCaCert", 0, &r);
    j = json_call(url, "GetTempCaCert", "", 200, NULL, NULL);
    CHECK(a != NULL && j != NULL && json_equal(a, j));
    CHECK(strstr(json_string_value(json_object_get(a, "temp_ca_cert")), "BEGIN CERTIFICATE"));
    same_as_protoc("GetTempCaCertResponse", j, &r);
    json_decref(a);
    json_decref(j);
    res_free(&r);

    /* GetAppEnvEncryptPubKey: same key and legacy signature; the timestamp is the call's */
    request_bytes("KMS", "GetAppEnvEncryptPubKey", "AppId",
                  "app_id: \"\\102\\102\\102\\102\\102\\102\\102\\102\\102\\102\\102\\102\\102"
                  "\\102\\102\\102\\102\\102\\102\\102\"",
                  "{\"app_id\":\"0x4242424242424242424242424242424242424242\"}", &req);
    pb_call(url, "GetAppEnvEncryptPubKey", "application/x-protobuf", req.data, req.len, NULL, NULL,
            &r);
    CHECK(r.status == 200);
    a = pb_decode("KMS", "GetAppEnvEncryptPubKey", 0, &r);
    snprintf(body, sizeof(body), "{\"app_id\":\"%s\"}", app);
    j = json_call(url, "GetAppEnvEncryptPubKey", body, 200, NULL, NULL);
    CHECK(a != NULL && j != NULL);
    CHECK(json_equal(json_object_get(a, "public_key"), json_object_get(j, "public_key")));
    CHECK(json_equal(json_object_get(a, "signature"), json_object_get(j, "signature")));
    CHECK(json_string_length(json_object_get(a, "signature_v1")) == 2 + 130);
    CHECK(llabs((long long)(json_integer_value(json_object_get(a, "timestamp")) -
                            json_integer_value(json_object_get(j, "timestamp")))) <= 5);
    json_decref(a);
    json_decref(j);
    res_free(&r);
    kms_buf_free(&req);

    /* an error: a 3-byte app_id is HTTP 400 ProtoError with the JSON path's message */
    request_bytes("KMS", "GetAppEnvEncryptPubKey", "AppId", "app_id: \"\\001\\002\\003\"",
                  "{\"app_id\":\"0x010203\"}", &req);
    pb_call(url, "KMS.GetAppEnvEncryptPubKey", NULL, req.data, req.len, NULL, NULL, &r);
    CHECK(r.status == 400);
    e = pb_decode("KMS", "GetAppEnvEncryptPubKey", 1, &r);
    j = json_call(url, "KMS.GetAppEnvEncryptPubKey", "{\"app_id\":\"0x010203\"}", 400, NULL, NULL);
    CHECK(e != NULL && j != NULL &&
          json_equal(json_object_get(e, "message"), json_object_get(j, "error")));
    CHECK(strcmp(json_string_value(json_object_get(e, "message")),
                 "app_id must be 20 bytes, got 3") == 0);
    {
        json_t *pe = json_pack("{s:O}", "message", json_object_get(j, "error"));

        same_as_protoc("ProtoError", pe, &r);
        json_decref(pe);
    }
    json_decref(e);
    json_decref(j);
    res_free(&r);
    kms_buf_free(&req);

    /* malformed protobuf (a length past the end): ProtoError "failed to decode request" */
    pb_call(url, "GetAppEnvEncryptPubKey", NULL, "\x0a\x14\x42", 3, NULL, NULL, &r);
    CHECK(r.status == 400);
    e = pb_decode("KMS", "GetAppEnvEncryptPubKey", 1, &r);
    CHECK(e != NULL && strncmp(json_string_value(json_object_get(e, "message")),
                               "failed to decode request: protobuf length 20", 44) == 0);
    json_decref(e);
    res_free(&r);

    /* an unknown method: ProtoError "method not found" */
    pb_call(url, "NoSuchMethod", NULL, "", 0, NULL, NULL, &r);
    CHECK(r.status == 400);
    e = pb_decode("KMS", "GetMeta", 1, &r);
    CHECK(e != NULL && strcmp(json_string_value(json_object_get(e, "message")),
                              "method not found: NoSuchMethod") == 0);
    json_decref(e);
    res_free(&r);
}

/* JSON stays JSON: a JSON Content-Type without ?json (with and without parameters) and GET. */
static void json_without_query(const char *url)
{
    static const char body[] = "{\"app_id\":\"0x4242424242424242424242424242424242424242\"}";
    char u[300];
    struct res r;
    json_t *o;

    snprintf(u, sizeof(u), "%s/prpc/GetAppEnvEncryptPubKey", url);
    http(u, "application/json", body, strlen(body), NULL, NULL, &r);
    CHECK(r.status == 200 && strcmp(r.ctype, "application/json") == 0);
    o = json_loadb((const char *)r.body.data, r.body.len, 0, NULL);
    CHECK(o != NULL && strncmp(json_string_value(json_object_get(o, "public_key")), "0x", 2) == 0);
    json_decref(o);
    res_free(&r);
    http(u, "application/json; charset=utf-8", "{\"app_id\":\"0x01\"}", 17, NULL, NULL, &r);
    CHECK(r.status == 400 && strcmp(r.ctype, "application/json") == 0);
    CHECK(r.body.len > 0 && strstr((const char *)r.body.data,
                                   "\"error\": \"app_id must be 20 bytes, got 1\"") != NULL);
    res_free(&r);
    snprintf(u, sizeof(u), "%s/prpc/GetMeta", url);
    http(u, NULL, NULL, 0, NULL, NULL, &r); /* GET without ?json */
    CHECK(r.status == 200 && strcmp(r.ctype, "application/json") == 0);
    o = json_loadb((const char *)r.body.data, r.body.len, 0, NULL);
    CHECK(o != NULL && json_is_string(json_object_get(o, "k256_pubkey")));
    json_decref(o);
    res_free(&r);
}

/* GetAppKey through the RA-TLS client certificate: the protobuf answer has the JSON answer's
 * keys; without a certificate both paths refuse with the same message. An oversized protobuf
 * body is refused with a ProtoError. */
static void app_key(const char *url)
{
    struct kms_ra_identity ra;
    struct kms_buf req = {0};
    struct res r;
    json_t *tmp, *a, *j, *e, *jo;
    char vmc[128], text[256], *js;

    /* The simulated TEE's image, whose measurement manifest the sim dir holds. */
    CHECK_OK(kms_sim_vm_config(vmc, sizeof(vmc)));
    jo = json_pack("{s:i,s:s}", "api_version", 1, "vm_config", vmc);
    js = json_dumps(jo, JSON_COMPACT);
    json_decref(jo);
    jo = json_string(vmc);
    {
        char *q = json_dumps(jo, JSON_ENCODE_ANY); /* a quoted, escaped text-format string */

        snprintf(text, sizeof(text), "api_version: 1 vm_config: %s", q);
        free(q);
    }
    json_decref(jo);
    memset(&ra, 0, sizeof(ra));
    tmp = json_call(url, "GetTempCaCert", "", 200, NULL, NULL);
    CHECK_OK(kms_ra_identity_new(json_string_value(json_object_get(tmp, "temp_ca_cert")),
                                 json_string_value(json_object_get(tmp, "temp_ca_key")), app_attest,
                                 NULL, &ra));
    request_bytes("KMS", "GetAppKey", "GetAppKeyRequest", text, js, &req);
    pb_call(url, "GetAppKey", "application/octet-stream", req.data, req.len, ra.cert_pem,
            ra.key_pem, &r);
    CHECK(r.status == 200);
    a = pb_decode("KMS", "GetAppKey", 0, &r);
    j = json_call(url, "GetAppKey", js, 200, ra.cert_pem, ra.key_pem);
    CHECK(a != NULL && j != NULL && json_equal(a, j));
    CHECK(json_string_length(json_object_get(a, "disk_crypt_key")) == 66);
    CHECK(json_string_length(json_object_get(a, "k256_signature")) == 132);
    same_as_protoc("AppKeyResponse", j, &r);
    json_decref(a);
    json_decref(j);
    res_free(&r);

    pb_call(url, "GetAppKey", NULL, req.data, req.len, NULL, NULL, &r);
    CHECK(r.status == 400);
    e = pb_decode("KMS", "GetAppKey", 1, &r);
    j = json_call(url, "GetAppKey", js, 400, NULL, NULL);
    CHECK(e != NULL && j != NULL &&
          json_equal(json_object_get(e, "message"), json_object_get(j, "error")));
    CHECK(strcmp(json_string_value(json_object_get(e, "message")), "No attestation provided") == 0);
    json_decref(e);
    json_decref(j);
    res_free(&r);

    {
        size_t big = 2u * 1024u * 1024u;
        uint8_t *b = calloc(1, big);

        pb_call(url, "GetAppKey", NULL, b, big, NULL, NULL, &r);
        CHECK(r.status == 400);
        e = pb_decode("KMS", "GetAppKey", 1, &r);
        CHECK(e != NULL && strcmp(json_string_value(json_object_get(e, "message")),
                                  "request body exceeds the 1 MiB limit") == 0);
        json_decref(e);
        res_free(&r);
        free(b);
    }
    kms_buf_free(&req);
    kms_ra_identity_clear(&ra);
    json_decref(tmp);
    free(js);
}

static void test_proto_e2e(void)
{
    unsigned port = kmstest_free_port();
    char ob[64], url[64];
    json_t *boot;
    pid_t pid;

    snprintf(ob, sizeof(ob), "http://127.0.0.1:%u", port);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    pid = kmstest_kmsd_start(g_tmp, "n-proto", g_sim, port, NULL);
    CHECK(pid > 0);
    boot = onboard_phase(ob);
    CHECK_OK(kmstest_wait_serving(url));
    if (boot != NULL)
        public_methods(url, boot);
    json_without_query(url);
    app_key(url);
    json_decref(boot);
    kmstest_kmsd_stop(pid);
}

int main(void)
{
    char tmpl[] = "/tmp/kms-e2e-proto-XXXXXX";

    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_tmp, sizeof(g_tmp), "%s", mkdtemp(tmpl));
    snprintf(g_sim, sizeof(g_sim), "%s/sim", g_tmp);
    if (kms_sim_open(g_sim, &g_simh) < 0) {
        fprintf(stderr, "cannot open sim: %s\n", kms_err_detail());
        return 1;
    }
    g_protoc = system("protoc --version >/dev/null 2>&1") == 0;
    if (!g_protoc)
        printf("note: protoc not installed: the protoc cross-checks are skipped\n");
    RUN(test_proto_e2e);
    kms_sim_free(g_simh);
    kmstest_tmp_finish(g_tmp, kms_test_failures);
    curl_global_cleanup();
    TEST_MAIN_END();
}
