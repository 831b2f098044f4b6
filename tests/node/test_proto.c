/*
 * Unit tests of the proto3 codec (node/proto.c) and of the pRPC helpers' protobuf mode
 * (node/prpc.c): wire primitives against hand-computed encodings, every malformed input the
 * reader refuses (with its code and detail), unknown fields of each wire type skipped, prost's
 * merge rules, the limits, schema round trips through JSON, and §0's choice of encoding.
 */
#include <jansson.h>

#include "common/buf.h"
#include "node/http.h"
#include "node/node.h"
#include "node/proto.h"
#include "test.h"

static const struct kms_pb_msg *req_of(const char *svc, const char *m)
{
    const struct kms_pb_method *pm = kms_pb_method_find(svc, m);

    return pm != NULL ? pm->req : NULL;
}

static const struct kms_pb_msg *resp_of(const char *svc, const char *m)
{
    const struct kms_pb_method *pm = kms_pb_method_find(svc, m);

    return pm != NULL ? pm->resp : NULL;
}

/* Decodes n bytes of p with m; returns the rc, *out the object (or NULL). */
static int dec(const struct kms_pb_msg *m, const uint8_t *p, size_t n, json_t **out)
{
    return kms_pb_to_json(m, p, n, out);
}

/* Varints: hand-computed encodings both ways, and every value decodes to itself. */
static void test_varint_roundtrip(void)
{
    static const uint64_t vals[] = {
        0, 1, 127, 128, 300, 16383, 16384, UINT32_MAX, (uint64_t)1 << 63, UINT64_MAX};
    static const size_t lens[] = {1, 1, 1, 2, 2, 2, 3, 5, 10, 10};
    struct kms_buf b = {0};
    struct kms_reader r;
    uint64_t v;

    CHECK_OK(kms_pb_put_varint(&b, 300));
    CHECK(b.len == 2 && b.data[0] == 0xac && b.data[1] == 0x02);
    kms_buf_free(&b);
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        CHECK_OK(kms_pb_put_varint(&b, vals[i]));
        CHECK(b.len == lens[i]);
        kms_rd_init(&r, b.data, b.len);
        CHECK_OK(kms_pb_read_varint(&r, &v));
        CHECK(v == vals[i] && kms_rd_left(&r) == 0);
        kms_buf_free(&b);
    }
    /* prost accepts non-minimal varints: 0x80 0x00 is 0 */
    {
        const uint8_t nm[] = {0x80, 0x00};

        kms_rd_init(&r, nm, sizeof(nm));
        CHECK_OK(kms_pb_read_varint(&r, &v));
        CHECK(v == 0);
    }
}

/* Malformed varints, keys and lengths: each is KMS_ERR_PARSE with a detail naming it. */
static void test_malformed_primitives(void)
{
    const uint8_t trunc[] = {0x80};
    const uint8_t over[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    const uint8_t ten_ok[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    const uint8_t eleven[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x00};
    const uint8_t field0[] = {0x00};
    const uint8_t wire6[] = {0x0e};
    const uint8_t wire7[] = {0x0f};
    const uint8_t key33[] = {0x80, 0x80, 0x80, 0x80, 0x10}; /* 2^32 */
    const uint8_t len_past[] = {0x05, 'a', 'b'};
    struct kms_reader r;
    uint64_t v;
    uint32_t f;
    unsigned w;
    const uint8_t *p;
    size_t n;

    kms_rd_init(&r, trunc, sizeof(trunc));
    CHECK_RC(kms_pb_read_varint(&r, &v), KMS_ERR_PARSE);
    CHECK_DETAIL("truncated");
    kms_rd_init(&r, over, sizeof(over));
    CHECK_RC(kms_pb_read_varint(&r, &v), KMS_ERR_PARSE);
    CHECK_DETAIL("longer than 64 bits");
    kms_rd_init(&r, ten_ok, sizeof(ten_ok));
    CHECK_OK(kms_pb_read_varint(&r, &v));
    CHECK(v == UINT64_MAX);
    kms_rd_init(&r, eleven, sizeof(eleven));
    CHECK_RC(kms_pb_read_varint(&r, &v), KMS_ERR_PARSE);
    CHECK_DETAIL("longer than 64 bits");

    kms_rd_init(&r, field0, sizeof(field0));
    CHECK_RC(kms_pb_read_key(&r, &f, &w), KMS_ERR_PARSE);
    CHECK_DETAIL("field number 0");
    kms_rd_init(&r, wire6, sizeof(wire6));
    CHECK_RC(kms_pb_read_key(&r, &f, &w), KMS_ERR_PARSE);
    CHECK_DETAIL("wire type 6");
    kms_rd_init(&r, wire7, sizeof(wire7));
    CHECK_RC(kms_pb_read_key(&r, &f, &w), KMS_ERR_PARSE);
    CHECK_DETAIL("wire type 7");
    kms_rd_init(&r, key33, sizeof(key33));
    CHECK_RC(kms_pb_read_key(&r, &f, &w), KMS_ERR_PARSE);
    CHECK_DETAIL("exceeds 32 bits");

    kms_rd_init(&r, len_past, sizeof(len_past));
    CHECK_RC(kms_pb_read_len(&r, &p, &n), KMS_ERR_PARSE);
    CHECK_DETAIL("length 5 exceeds the 2 bytes left");
    kms_rd_init(&r, len_past, 1); /* length alone, no payload */
    CHECK_RC(kms_pb_read_len(&r, &p, &n), KMS_ERR_PARSE);
    kms_rd_init(&r, trunc, sizeof(trunc)); /* truncated length varint */
    CHECK_RC(kms_pb_read_len(&r, &p, &n), KMS_ERR_PARSE);
    CHECK_DETAIL("truncated");
}

/* Malformed messages through the schema decoder: the same errors, with the field named. */
static void test_malformed_messages(void)
{
    const struct kms_pb_msg *app_id = req_of("KMS", "GetAppEnvEncryptPubKey");
    const struct kms_pb_msg *gak = req_of("KMS", "GetAppKey");
    const uint8_t len_past[] = {0x0a, 0x14, 0x42, 0x42}; /* app_id: 20 bytes announced */
    const uint8_t wrong_wire[] = {0x08, 0x01};           /* app_id as a varint */
    const uint8_t trunc_varint[] = {0x08, 0x81};         /* api_version cut */
    const uint8_t fixed64_cut[] = {0x49, 1, 2, 3};       /* unknown field 9, fixed64 */
    const uint8_t fixed32_cut[] = {0x4d, 1, 2};          /* unknown field 9, fixed32 */
    const uint8_t egroup_alone[] = {0x4c};               /* end group 9 */
    const uint8_t group_open[] = {0x4b, 0x08, 0x01};     /* group 9 never closed */
    const uint8_t group_mismatch[] = {0x4b, 0x54};       /* group 9 closed by 10 */
    const uint8_t bad_utf8[] = {0x12, 0x02, 0xc3, 0x28}; /* vm_config */
    const uint8_t nul_str[] = {0x12, 0x03, 'a', 0x00, 'b'};
    const uint8_t overlong[] = {0x12, 0x02, 0xc0, 0x80}; /* overlong NUL */
    const uint8_t surrogate[] = {0x12, 0x03, 0xed, 0xa0, 0x80};
    json_t *o = NULL;

    CHECK(app_id != NULL && gak != NULL);
    CHECK_RC(dec(app_id, len_past, sizeof(len_past), &o), KMS_ERR_PARSE);
    CHECK_DETAIL("exceeds the 2 bytes left");
    CHECK(o == NULL);
    CHECK_RC(dec(app_id, wrong_wire, sizeof(wrong_wire), &o), KMS_ERR_PARSE);
    CHECK_DETAIL("field AppId.app_id has wire type 0, expected 2");
    CHECK_RC(dec(gak, trunc_varint, sizeof(trunc_varint), &o), KMS_ERR_PARSE);
    CHECK_DETAIL("truncated");
    CHECK_RC(dec(gak, fixed64_cut, sizeof(fixed64_cut), &o), KMS_ERR_PARSE);
    CHECK_DETAIL("fixed64 value is truncated");
    CHECK_RC(dec(gak, fixed32_cut, sizeof(fixed32_cut), &o), KMS_ERR_PARSE);
    CHECK_DETAIL("fixed32 value is truncated");
    CHECK_RC(dec(gak, egroup_alone, sizeof(egroup_alone), &o), KMS_ERR_PARSE);
    CHECK_DETAIL("end-group tag 9 without a start");
    CHECK_RC(dec(gak, group_open, sizeof(group_open), &o), KMS_ERR_PARSE);
    CHECK_DETAIL("group 9 is not closed");
    CHECK_RC(dec(gak, group_mismatch, sizeof(group_mismatch), &o), KMS_ERR_PARSE);
    CHECK_DETAIL("closed by an end-group tag 10");
    CHECK_RC(dec(gak, bad_utf8, sizeof(bad_utf8), &o), KMS_ERR_PARSE);
    CHECK_DETAIL("GetAppKeyRequest.vm_config is not UTF-8");
    CHECK_RC(dec(gak, nul_str, sizeof(nul_str), &o), KMS_ERR_PARSE);
    CHECK_DETAIL("without NUL");
    CHECK_RC(dec(gak, overlong, sizeof(overlong), &o), KMS_ERR_PARSE);
    CHECK_RC(dec(gak, surrogate, sizeof(surrogate), &o), KMS_ERR_PARSE);
    CHECK(o == NULL);
}

/* Unknown fields of every wire type (varint, fixed64, length, group with nested content,
 * fixed32), before, between and after known ones, are skipped: the result equals the decoding
 * of the known fields alone. */
static void test_unknown_fields_skipped(void)
{
    const struct kms_pb_msg *m = req_of("KMS", "GetAppKey");
    const uint8_t known[] = {0x08, 0x01, 0x12, 0x01, 'x'};
    const uint8_t mixed[] = {
        0x18, 0xac, 0x02,                                  /* 3: varint 300 */
        0x08, 0x01,                                        /* api_version = 1 */
        0x21, 1,    2,    3,    4,    5,    6,    7,    8, /* 4: fixed64 */
        0x2a, 0x03, 'z',  'z',  'z',                       /* 5: bytes */
        0x33, 0x08, 0x07, 0x3b, 0x0a, 0x00, 0x3c, 0x34,    /* 6: group { 1:7, group 7 {1:""} } */
        0x12, 0x01, 'x',                                   /* vm_config = "x" */
        0xfd, 0xff, 0xff, 0xff, 0x0f, 9,    9,    9,    9, /* 2^29-1: fixed32 */
    };
    json_t *a = NULL, *b = NULL;

    CHECK_OK(dec(m, known, sizeof(known), &a));
    CHECK_OK(dec(m, mixed, sizeof(mixed), &b));
    CHECK(a != NULL && b != NULL && json_equal(a, b));
    CHECK(json_integer_value(json_object_get(b, "api_version")) == 1);
    CHECK(strcmp(json_string_value(json_object_get(b, "vm_config")), "x") == 0);
    json_decref(a);
    json_decref(b);
}

/* prost's rules: the last scalar wins, uint32 keeps the low 32 bits, bool is "!= 0", a
 * sub-message given twice is merged, repeated fields append, absent fields take defaults. */
static void test_merge_rules(void)
{
    const struct kms_pb_msg *gak = req_of("KMS", "GetAppKey");
    const struct kms_pb_msg *meta = resp_of("KMS", "GetMeta");
    const uint8_t twice[] = {0x08, 0x05, 0x12, 0x01, 'a', 0x08, 0x01, 0x12, 0x01, 'b'};
    const uint8_t wide[] = {0x08, 0x81, 0x80, 0x80, 0x80, 0x10}; /* 2^32 + 1 */
    /* GetMetaResponse: is_dev=7 (true), bootstrap_info{ca_pubkey=01}, bootstrap_info{
     * k256_pubkey=02} */
    const uint8_t merge[] = {0x28, 0x07, 0x22, 0x03, 0x0a, 0x01,
                             0x01, 0x22, 0x03, 0x12, 0x01, 0x02};
    json_t *o = NULL, *bi;

    CHECK_OK(dec(gak, twice, sizeof(twice), &o));
    CHECK(json_integer_value(json_object_get(o, "api_version")) == 1);
    CHECK(strcmp(json_string_value(json_object_get(o, "vm_config")), "b") == 0);
    json_decref(o);
    CHECK_OK(dec(gak, wide, sizeof(wide), &o));
    CHECK(json_integer_value(json_object_get(o, "api_version")) == 1);
    json_decref(o);
    CHECK_OK(dec(meta, merge, sizeof(merge), &o));
    CHECK(json_is_true(json_object_get(o, "is_dev")));
    CHECK(json_is_false(json_object_get(o, "allow_any_upgrade")));
    bi = json_object_get(o, "bootstrap_info");
    CHECK(strcmp(json_string_value(json_object_get(bi, "ca_pubkey")), "0x01") == 0);
    CHECK(strcmp(json_string_value(json_object_get(bi, "k256_pubkey")), "0x02") == 0);
    CHECK(strcmp(json_string_value(json_object_get(bi, "attestation")), "0x") == 0);
    /* absent: string "", bytes "0x", optional null */
    CHECK(strcmp(json_string_value(json_object_get(o, "ca_cert")), "") == 0);
    CHECK(strcmp(json_string_value(json_object_get(o, "k256_pubkey")), "0x") == 0);
    CHECK(json_is_null(json_object_get(o, "chain_id")));
    CHECK(json_is_null(json_object_get(o, "gateway_app_id")));
    json_decref(o);
    /* empty input: all defaults, api_version a number */
    CHECK_OK(dec(gak, (const uint8_t *)"", 0, &o));
    CHECK(json_is_integer(json_object_get(o, "api_version")) &&
          json_integer_value(json_object_get(o, "api_version")) == 0);
    json_decref(o);
}

/* Encodings against hand-computed bytes: proto3 defaults omitted, optional fields and
 * sub-messages encoded when set even at their default, JSON members without a field number
 * dropped, fields in number order. */
static void test_encode_golden(void)
{
    const struct kms_pb_msg *gak = req_of("KMS", "GetAppKey");
    const struct kms_pb_msg *meta = resp_of("KMS", "GetMeta");
    const struct kms_pb_msg *pk = resp_of("KMS", "GetAppEnvEncryptPubKey");
    const uint8_t want_gak[] = {0x08, 0x01, 0x12, 0x01, 'x'};
    /* allow_any_upgrade true, bootstrap_info {} present, chain_id Some(0), gateway "" */
    const uint8_t want_meta[] = {0x10, 0x01, 0x22, 0x00, 0x32, 0x00, 0x40, 0x00};
    const uint8_t want_pk[] = {0x0a, 0x01, 0xab, 0x18, 0x96, 0x01};
    struct kms_buf b = {0};
    json_t *o;

    o = json_pack("{s:s,s:i}", "vm_config", "x", "api_version", 1);
    CHECK_OK(kms_pb_from_json(gak, o, &b));
    CHECK(b.len == sizeof(want_gak) && memcmp(b.data, want_gak, b.len) == 0);
    json_decref(o);
    kms_buf_free(&b);

    o = json_pack("{s:s,s:b,s:s,s:{},s:b,s:s,s:n,s:i,s:n,s:b,s:s}", "ca_cert", "",
                  "allow_any_upgrade", 1, "k256_pubkey", "0x", "bootstrap_info", "is_dev", 0,
                  "gateway_app_id", "", "kms_contract_address", "chain_id", 0,
                  "app_auth_implementation", "insecure_simulation", 1, "state", "serving");
    CHECK_OK(kms_pb_from_json(meta, o, &b));
    CHECK(b.len == sizeof(want_meta) && memcmp(b.data, want_meta, b.len) == 0);
    json_decref(o);
    kms_buf_free(&b);

    o = json_pack("{s:s,s:s,s:i,s:s}", "public_key", "0xab", "signature", "", "timestamp", 150,
                  "signature_v1", "0x");
    CHECK_OK(kms_pb_from_json(pk, o, &b));
    CHECK(b.len == sizeof(want_pk) && memcmp(b.data, want_pk, b.len) == 0);
    json_decref(o);
    kms_buf_free(&b);

    /* ProtoError{message} */
    CHECK_OK(kms_pb_encode_error("ab", &b));
    CHECK(b.len == 4 && memcmp(b.data,
                               "\x0a\x02"
                               "ab",
                               4) == 0);
    kms_buf_free(&b);
}

/* Every response schema: a handler-shaped JSON object encodes and decodes back to itself
 * (repeated sub-messages and strings, an empty repeated string kept, nested bootstrap_info,
 * optional uint64 0 kept as 0). */
static void test_schema_roundtrip(void)
{
    struct {
        const char *svc, *m;
        int resp;
        const char *json;
    } cases[] = {
        {"KMS", "GetAppKey", 1,
         "{\"ca_cert\":\"-----BEGIN CERTIFICATE-----\\n\",\"disk_crypt_key\":\"0x0102\","
         "\"env_crypt_key\":\"0x03\",\"k256_key\":\"0x04\",\"k256_signature\":\"0x05\","
         "\"tproxy_app_id\":\"gw\",\"gateway_app_id\":\"gw\",\"os_image_hash\":\"0x06\"}"},
        {"KMS", "GetKmsKey", 1,
         "{\"temp_ca_key\":\"pem\",\"keys\":[{\"ca_key\":\"k1\",\"k256_key\":\"0x11\"},"
         "{\"ca_key\":\"\",\"k256_key\":\"0x\"}]}"},
        {"KMS", "GetAppEnvEncryptPubKey", 1,
         "{\"public_key\":\"0xaa\",\"signature\":\"0xbb\",\"timestamp\":1700000000,"
         "\"signature_v1\":\"0xcc\"}"},
        {"KMS", "GetMeta", 1,
         "{\"ca_cert\":\"c\",\"allow_any_upgrade\":false,\"k256_pubkey\":\"0x02\","
         "\"bootstrap_info\":{\"ca_pubkey\":\"0x30\",\"k256_pubkey\":\"0x03\","
         "\"attestation\":\"0x\"},\"is_dev\":true,\"gateway_app_id\":null,"
         "\"kms_contract_address\":\"0xabc\",\"chain_id\":0,\"app_auth_implementation\":null}"},
        {"KMS", "GetTempCaCert", 1,
         "{\"temp_ca_cert\":\"a\",\"temp_ca_key\":\"b\",\"ca_cert\":\"c\"}"},
        {"KMS", "SignCert", 1, "{\"certificate_chain\":[\"leaf\",\"\",\"root\"]}"},
        {"KMS", "SignCert", 0,
         "{\"api_version\":2,\"csr\":\"0x0a0b\",\"signature\":\"0x0c\",\"vm_config\":\"{}\"}"},
        {"KMS", "GetAppKey", 0, "{\"api_version\":4294967295,\"vm_config\":\"\\u00e9\"}"},
        {"KMS", "GetKmsKey", 0, "{\"vm_config\":\"v\"}"},
        {"KMS", "GetAppEnvEncryptPubKey", 0, "{\"app_id\":\"0x4242\"}"},
        {"Onboard", "Bootstrap", 0, "{\"domain\":\"kms.example\"}"},
        {"Onboard", "Bootstrap", 1,
         "{\"ca_pubkey\":\"0x01\",\"k256_pubkey\":\"0x02\",\"attestation\":\"0x03\"}"},
        {"Onboard", "Onboard", 0, "{\"source_url\":\"https://x/prpc\",\"domain\":\"d\"}"},
        {"Onboard", "Onboard", 1, "{\"k256_pubkey\":\"0x02aa\"}"},
        {"Onboard", "GetAttestationInfo", 1,
         "{\"device_id\":\"0x01\",\"mr_aggregated\":\"0x02\",\"os_image_hash\":\"0x03\","
         "\"tee_variant\":\"dstack-tdx\",\"site_name\":\"s\",\"eth_rpc_url\":\"\","
         "\"kms_contract_address\":\"a\",\"ppid\":\"0x04\"}"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct kms_pb_msg *m =
            cases[i].resp ? resp_of(cases[i].svc, cases[i].m) : req_of(cases[i].svc, cases[i].m);
        json_t *in = json_loads(cases[i].json, 0, NULL), *out = NULL;
        struct kms_buf b = {0};

        CHECK(m != NULL && in != NULL);
        if (m == NULL || in == NULL)
            continue;
        CHECK_OK(kms_pb_from_json(m, in, &b));
        CHECK_OK(kms_pb_to_json(m, b.data != NULL ? b.data : (const uint8_t *)"", b.len, &out));
        if (!json_equal(in, out)) {
            char *s = json_dumps(out, 0);

            fprintf(stderr, "  case %zu (%s %s): got %s\n", i, cases[i].m,
                    cases[i].resp ? "resp" : "req", s);
            free(s);
            CHECK(0);
        }
        json_decref(in);
        json_decref(out);
        kms_buf_free(&b);
    }
}

/* Encoding refusals: each wrong JSON type is KMS_ERR_INVAL naming the field; non-hex bytes
 * KMS_ERR_PARSE; out-of-range integers KMS_ERR_INVAL. */
static void test_encode_refusals(void)
{
    const struct kms_pb_msg *gak = req_of("KMS", "GetAppKey");
    const struct kms_pb_msg *ak = resp_of("KMS", "GetAppKey");
    const struct kms_pb_msg *kk = resp_of("KMS", "GetKmsKey");
    const struct kms_pb_msg *meta = resp_of("KMS", "GetMeta");
    const struct kms_pb_msg *pk = resp_of("KMS", "GetAppEnvEncryptPubKey");
    struct {
        const struct kms_pb_msg *m;
        const char *json;
        int rc;
        const char *detail;
    } cases[] = {
        {gak, "{\"api_version\":\"1\"}", KMS_ERR_INVAL,
         "GetAppKeyRequest.api_version must be an integer"},
        {gak, "{\"api_version\":-1}", KMS_ERR_INVAL, "api_version is out of range"},
        {gak, "{\"api_version\":4294967296}", KMS_ERR_INVAL, "api_version is out of range"},
        {gak, "{\"vm_config\":1}", KMS_ERR_INVAL, "vm_config must be a string"},
        {ak, "{\"k256_key\":\"0xzz\"}", KMS_ERR_PARSE, "AppKeyResponse.k256_key"},
        {ak, "{\"k256_key\":\"0x123\"}", KMS_ERR_PARSE, "odd length"},
        {ak, "{\"k256_key\":7}", KMS_ERR_INVAL, "k256_key must be a hex string"},
        {kk, "{\"keys\":{}}", KMS_ERR_INVAL, "KmsKeyResponse.keys must be an array"},
        {kk, "{\"keys\":[1]}", KMS_ERR_INVAL, "KmsKeys must be a JSON object"},
        {meta, "{\"is_dev\":1}", KMS_ERR_INVAL, "is_dev must be a boolean"},
        {meta, "{\"bootstrap_info\":\"x\"}", KMS_ERR_INVAL,
         "BootstrapResponse must be a JSON object"},
        {pk, "{\"timestamp\":-5}", KMS_ERR_INVAL, "timestamp is out of range"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *o = json_loads(cases[i].json, 0, NULL);
        struct kms_buf b = {0};

        CHECK(o != NULL);
        CHECK_RC(kms_pb_from_json(cases[i].m, o, &b), cases[i].rc);
        CHECK_DETAIL(cases[i].detail);
        json_decref(o);
        kms_buf_free(&b);
    }
}

/* A self-referencing schema to reach the depth limit, which no service schema can. */
static const struct kms_pb_msg rec_msg;
static const struct kms_pb_field rec_fields[] = {{1, "child", KMS_PB_MESSAGE, 0, &rec_msg},
                                                 {2, "n", KMS_PB_UINT32, 0, NULL}};
static const struct kms_pb_msg rec_msg = {"Rec", rec_fields, 2};

/* levels nested Rec messages, the innermost with n = 1. */
static void nest(struct kms_buf *b, int levels)
{
    struct kms_buf inner = {0};

    if (levels == 0) {
        CHECK_OK(kms_buf_put(b, "\x10\x01", 2));
        return;
    }
    nest(&inner, levels - 1);
    CHECK_OK(kms_pb_put_len(b, 1, inner.data, inner.len));
    kms_buf_free(&inner);
}

/* Limits: KMS_PB_MAX_DEPTH - 1 nested messages decode, one more is KMS_ERR_TOOBIG (same for
 * the encoder and for groups in skipped fields); KMS_PB_MAX_REPEATED elements decode, one more
 * is KMS_ERR_TOOBIG; a message over KMS_PB_MAX_SIZE is KMS_ERR_TOOBIG. */
static void test_limits(void)
{
    const struct kms_pb_msg *sc = resp_of("KMS", "SignCert");
    const struct kms_pb_msg *gak = req_of("KMS", "GetAppKey");
    struct kms_buf b = {0};
    json_t *o = NULL, *deep;
    uint8_t *big;

    nest(&b, KMS_PB_MAX_DEPTH - 1);
    CHECK_OK(kms_pb_to_json(&rec_msg, b.data, b.len, &o));
    {
        struct kms_buf b2 = {0};

        CHECK_OK(kms_pb_from_json(&rec_msg, o, &b2)); /* the encoder accepts it back */
        CHECK(b2.len == b.len && memcmp(b2.data, b.data, b.len) == 0);
        kms_buf_free(&b2);
    }
    json_decref(o);
    kms_buf_free(&b);
    nest(&b, KMS_PB_MAX_DEPTH);
    CHECK_RC(kms_pb_to_json(&rec_msg, b.data, b.len, &o), KMS_ERR_TOOBIG);
    CHECK_DETAIL("nesting exceeds 8 levels");
    kms_buf_free(&b);
    deep = json_pack("{s:n}", "child");
    for (int i = 0; i < KMS_PB_MAX_DEPTH; i++)
        deep = json_pack("{s:o}", "child", deep);
    CHECK_RC(kms_pb_from_json(&rec_msg, deep, &b), KMS_ERR_TOOBIG);
    CHECK_DETAIL("nesting exceeds");
    json_decref(deep);
    kms_buf_free(&b);

    /* groups nested in an unknown field: 7 levels skip, 8 do not */
    for (int levels = KMS_PB_MAX_DEPTH - 1; levels <= KMS_PB_MAX_DEPTH; levels++) {
        for (int i = 0; i < levels; i++)
            CHECK_OK(kms_buf_put_u8(&b, 0x4b)); /* start group 9 */
        for (int i = 0; i < levels; i++)
            CHECK_OK(kms_buf_put_u8(&b, 0x4c)); /* end group 9 */
        if (levels < KMS_PB_MAX_DEPTH) {
            CHECK_OK(kms_pb_to_json(gak, b.data, b.len, &o));
            json_decref(o);
        } else {
            CHECK_RC(kms_pb_to_json(gak, b.data, b.len, &o), KMS_ERR_TOOBIG);
            CHECK_DETAIL("nesting exceeds");
        }
        kms_buf_free(&b);
    }

    for (int i = 0; i < KMS_PB_MAX_REPEATED; i++)
        CHECK_OK(kms_pb_put_len(&b, 1, "c", 1));
    CHECK_OK(kms_pb_to_json(sc, b.data, b.len, &o));
    CHECK(json_array_size(json_object_get(o, "certificate_chain")) == KMS_PB_MAX_REPEATED);
    {
        struct kms_buf b2 = {0};

        json_array_append_new(json_object_get(o, "certificate_chain"), json_string("c"));
        CHECK_RC(kms_pb_from_json(sc, o, &b2), KMS_ERR_TOOBIG);
        CHECK_DETAIL("more than 256 elements");
        kms_buf_free(&b2);
    }
    json_decref(o);
    CHECK_OK(kms_pb_put_len(&b, 1, "c", 1));
    CHECK_RC(kms_pb_to_json(sc, b.data, b.len, &o), KMS_ERR_TOOBIG);
    CHECK_DETAIL("SignCertResponse.certificate_chain has more than 256 elements");
    kms_buf_free(&b);

    big = calloc(1, KMS_PB_MAX_SIZE + 1);
    CHECK(big != NULL);
    CHECK_RC(kms_pb_to_json(gak, big, KMS_PB_MAX_SIZE + 1, &o), KMS_ERR_TOOBIG);
    CHECK_DETAIL("exceeds");
    free(big);

    /* a uint64 beyond the JSON integer range */
    {
        const struct kms_pb_msg *pk = resp_of("KMS", "GetAppEnvEncryptPubKey");

        CHECK_OK(kms_pb_put_key(&b, 3, KMS_PB_WIRE_VARINT));
        CHECK_OK(kms_pb_put_varint(&b, (uint64_t)INT64_MAX + 1));
        CHECK_RC(kms_pb_to_json(pk, b.data, b.len, &o), KMS_ERR_PARSE);
        CHECK_DETAIL("PublicKeyResponse.timestamp exceeds the JSON integer range");
        kms_buf_free(&b);
    }
}

/* §0: JSON for GET, for ?json (the flag), for an application/json Content-Type with or
 * without parameters in any case; protobuf otherwise. Method table per service. */
static void test_encoding_choice(void)
{
    CHECK(kms_pb_request_is_json("GET", 0, NULL) == 1);
    CHECK(kms_pb_request_is_json("POST", 1, NULL) == 1);
    CHECK(kms_pb_request_is_json("POST", 0, "application/json") == 1);
    CHECK(kms_pb_request_is_json("POST", 0, "Application/JSON; charset=utf-8") == 1);
    CHECK(kms_pb_request_is_json("POST", 0, NULL) == 0);
    CHECK(kms_pb_request_is_json("POST", 0, "application/octet-stream") == 0);
    CHECK(kms_pb_request_is_json("POST", 0, "application/protobuf") == 0);
    CHECK(kms_pb_request_is_json("POST", 0, "application/jsonx") == 0);
    CHECK(kms_pb_request_is_json("POST", 0, "text/json") == 0);
    CHECK(kms_pb_request_is_json("POST", 0, "application/x-www-form-urlencoded") == 0);

    CHECK(kms_pb_method_find("KMS", "GetMeta") != NULL && req_of("KMS", "GetMeta") == NULL);
    CHECK(kms_pb_method_find("Onboard", "Finish") != NULL && resp_of("Onboard", "Finish") == NULL);
    CHECK(kms_pb_method_find("Onboard", "GetMeta") == NULL);
    CHECK(kms_pb_method_find("KMS", "Bootstrap") == NULL);
    CHECK(kms_pb_method_find("KMS", "NoSuchMethod") == NULL);
    CHECK(kms_pb_method_find("Other", "GetMeta") == NULL);
}

static void fake_req(struct kms_http_req *req, const char *method, int json_arg, const char *ctype,
                     const uint8_t *body, size_t len)
{
    memset(req, 0, sizeof(*req));
    req->method = method;
    req->path = "/prpc/KMS.GetAppKey";
    req->has_json_arg = json_arg;
    req->content_type = ctype;
    req->body = body;
    req->body_len = len;
}

/* The pRPC helpers: a protobuf exchange decodes the body with the method's schema, answers
 * application/octet-stream protobuf, errors are 400 ProtoError; the JSON exchange (and a
 * response never begun, as in test servers) stays byte-identical to json_dumps(indent 2). */
static void test_prpc_helpers(void)
{
    const uint8_t body[] = {0x08, 0x01, 0x12, 0x01, 'x'};
    const uint8_t bad[] = {0x12, 0x05, 'x'};
    struct kms_http_req req;
    struct kms_http_resp resp;
    json_t *o, *r;

    /* protobuf request */
    fake_req(&req, "POST", 0, NULL, body, sizeof(body));
    memset(&resp, 0, sizeof(resp));
    kms_prpc_begin(&req, &resp, "KMS", "GetAppKey");
    CHECK(resp.proto == 1 && resp.pb_method != NULL);
    o = kms_prpc_body(&req, &resp);
    CHECK(o != NULL && json_integer_value(json_object_get(o, "api_version")) == 1);
    CHECK(o != NULL && strcmp(json_string_value(json_object_get(o, "vm_config")), "x") == 0);
    json_decref(o);
    kms_prpc_ok(&resp, json_pack("{s:s,s:s,s:s}", "ca_cert", "C", "k256_key", "0x0001", "extra",
                                 "dropped"));
    CHECK(resp.status == 200 && strcmp(resp.content_type, "application/octet-stream") == 0);
    CHECK(resp.body_len == 7 && memcmp(resp.body,
                                       "\x0a\x01"
                                       "C"
                                       "\x22\x02\x00\x01",
                                       7) == 0);
    free(resp.body);

    /* malformed protobuf body: 400 ProtoError "failed to decode request: ..." */
    memset(&resp, 0, sizeof(resp));
    fake_req(&req, "POST", 0, "application/octet-stream", bad, sizeof(bad));
    kms_prpc_begin(&req, &resp, "KMS", "GetAppKey");
    CHECK(kms_prpc_body(&req, &resp) == NULL);
    CHECK(resp.status == 400 && strcmp(resp.content_type, "application/octet-stream") == 0);
    CHECK_OK(kms_pb_to_json(&kms_pb_proto_error, (const uint8_t *)resp.body, resp.body_len, &r));
    CHECK(strncmp(json_string_value(json_object_get(r, "message")),
                  "failed to decode request: protobuf length 5 exceeds", 51) == 0);
    json_decref(r);
    free(resp.body);

    /* an Empty request ignores the body; an Empty response is an empty body */
    memset(&resp, 0, sizeof(resp));
    fake_req(&req, "POST", 0, NULL, bad, sizeof(bad));
    kms_prpc_begin(&req, &resp, "Onboard", "Finish");
    o = kms_prpc_body(&req, &resp);
    CHECK(o != NULL && json_object_size(o) == 0);
    json_decref(o);
    kms_prpc_ok(&resp, json_null());
    CHECK(resp.status == 200 && resp.body_len == 0 &&
          strcmp(resp.content_type, "application/octet-stream") == 0);
    free(resp.body);

    /* an answer that does not fit the schema is a ProtoError, not a partial message */
    memset(&resp, 0, sizeof(resp));
    fake_req(&req, "POST", 0, NULL, body, sizeof(body));
    kms_prpc_begin(&req, &resp, "KMS", "GetAppKey");
    kms_prpc_ok(&resp, json_pack("{s:i}", "ca_cert", 5));
    CHECK(resp.status == 400);
    CHECK_OK(kms_pb_to_json(&kms_pb_proto_error, (const uint8_t *)resp.body, resp.body_len, &r));
    CHECK(strstr(json_string_value(json_object_get(r, "message")),
                 "failed to encode the response: field AppKeyResponse.ca_cert") != NULL);
    json_decref(r);
    free(resp.body);

    /* JSON: ?json with a protobuf-looking Content-Type, and a JSON Content-Type alone */
    for (int i = 0; i < 3; i++) {
        const char *js = "{\"api_version\":1}";
        char *want;

        memset(&resp, 0, sizeof(resp));
        fake_req(&req, "POST", i == 0, i == 1 ? "application/json" : "application/octet-stream",
                 (const uint8_t *)js, strlen(js));
        if (i < 2)
            kms_prpc_begin(&req, &resp, "KMS", "GetAppKey"); /* i == 2: never begun */
        CHECK(resp.proto == 0);
        o = kms_prpc_body(&req, &resp);
        CHECK(o != NULL && json_object_size(o) == 1);
        json_decref(o);
        o = json_pack("{s:s,s:s}", "ca_cert", "C", "extra", "kept");
        want = json_dumps(o, JSON_ENCODE_ANY | JSON_INDENT(2));
        kms_prpc_ok(&resp, o);
        CHECK(resp.status == 200 && strcmp(resp.content_type, "application/json") == 0);
        CHECK(resp.body != NULL && strcmp(resp.body, want) == 0);
        free(want);
        free(resp.body);
        memset(&resp, 0, sizeof(resp));
        if (i < 2)
            kms_prpc_begin(&req, &resp, "KMS", "GetAppKey");
        kms_prpc_error(&resp, "bad app_id");
        CHECK(resp.status == 400 && strcmp(resp.body, "{\n  \"error\": \"bad app_id\"\n}") == 0);
        free(resp.body);
    }
}

/* One table per service drives dispatch, the attestation metrics and the codec: exactly
 * GetAppKey, GetKmsKey and SignCert are attested; every row is found by name at its own
 * address; a row without a handler (ClearImageCache) and an unknown method are answered
 * "method not found". */
static void test_method_tables(void)
{
    const struct kms_pb_service *svcs[] = {&kms_kms_service, &kms_onboard_service};
    struct kms_http_req req;
    struct kms_http_resp resp;
    size_t n_attested = 0;

    for (size_t i = 0; i < 2; i++) {
        for (size_t j = 0; j < svcs[i]->n_methods; j++) {
            const struct kms_pb_method *pm = &svcs[i]->methods[j];
            int want =
                i == 0 && (strcmp(pm->name, "GetAppKey") == 0 ||
                           strcmp(pm->name, "GetKmsKey") == 0 || strcmp(pm->name, "SignCert") == 0);

            CHECK(kms_pb_method_find(svcs[i]->name, pm->name) == pm);
            CHECK(pm->attested == want);
            n_attested += pm->attested != 0;
            CHECK((pm->handler == NULL) == (strcmp(pm->name, "ClearImageCache") == 0));
        }
    }
    CHECK(n_attested == 3);
    CHECK(kms_kms_service.n_methods == 7 && kms_onboard_service.n_methods == 4);

    for (int i = 0; i < 2; i++) {
        const char *m = i == 0 ? "ClearImageCache" : "NoSuchMethod";
        char want[100];

        fake_req(&req, "POST", 1, NULL, NULL, 0);
        memset(&resp, 0, sizeof(resp));
        kms_prpc_begin(&req, &resp, "KMS", m);
        CHECK((resp.pb_method != NULL) == (i == 0));
        kms_prpc_call(NULL, NULL, m, NULL, &resp);
        snprintf(want, sizeof(want), "{\n  \"error\": \"method not found: %s\"\n}", m);
        CHECK(resp.status == 400 && resp.body != NULL && strcmp(resp.body, want) == 0);
        free(resp.body);
    }
}

static size_t g_hex_len, g_hex_frees, g_hex_nonzero;

/* Stands in for free in kms_prpc_bytes: counts the bytes of the hex text left unwiped. */
static void free_checking_wipe(void *p)
{
    const unsigned char *b = p;

    g_hex_frees++;
    for (size_t i = 0; i < g_hex_len; i++)
        g_hex_nonzero += b[i] != 0;
    free(p);
}

/* kms_prpc_bytes (GetAppKey's and GetKmsKey's keys) wipes the whole hex text, "0x" and every
 * digit, before freeing it; the JSON value still carries the hex. */
static void test_prpc_bytes_wiped(void)
{
    void (*saved)(void *) = kms_prpc_free_hex;
    uint8_t key[32];
    json_t *j;

    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)(0xa0 + i);
    g_hex_len = 2 + 2 * sizeof(key);
    kms_prpc_free_hex = free_checking_wipe;
    j = kms_prpc_bytes(key, sizeof(key));
    kms_prpc_free_hex = saved;
    CHECK(g_hex_frees == 1);
    CHECK(g_hex_nonzero == 0);
    CHECK(j != NULL && strlen(json_string_value(j)) == g_hex_len &&
          strncmp(json_string_value(j), "0xa0a1a2", 8) == 0);
    json_decref(j);
}

int main(void)
{
    RUN(test_varint_roundtrip);
    RUN(test_malformed_primitives);
    RUN(test_malformed_messages);
    RUN(test_unknown_fields_skipped);
    RUN(test_merge_rules);
    RUN(test_encode_golden);
    RUN(test_schema_roundtrip);
    RUN(test_encode_refusals);
    RUN(test_limits);
    RUN(test_encoding_choice);
    RUN(test_prpc_helpers);
    RUN(test_method_tables);
    RUN(test_prpc_bytes_wiped);
    TEST_MAIN_END();
}
