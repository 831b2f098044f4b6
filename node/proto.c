/* Bounded proto3 codec and the pRPC message schemas (see proto.h). */
#include "node/proto.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/hex.h"
#include "common/utf8.h"

/* ---- wire primitives */

int kms_pb_read_varint(struct kms_reader *r, uint64_t *v)
{
    uint64_t x = 0;

    for (unsigned i = 0; i < 10; i++) {
        uint8_t b;

        if (kms_rd_u8(r, &b) < 0)
            return kms_err_set(KMS_ERR_PARSE, "protobuf varint is truncated");
        if (i == 9 && b > 1)
            return kms_err_set(KMS_ERR_PARSE, "protobuf varint is longer than 64 bits");
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *v = x;
            return 0;
        }
    }
    return kms_err_set(KMS_ERR_PARSE, "protobuf varint is longer than 10 bytes");
}

int kms_pb_read_key(struct kms_reader *r, uint32_t *field, unsigned *wire)
{
    uint64_t k;
    int rc = kms_pb_read_varint(r, &k);

    if (rc < 0)
        return rc;
    if (k > UINT32_MAX)
        return kms_err_set(KMS_ERR_PARSE, "protobuf field key exceeds 32 bits");
    if ((k >> 3) == 0)
        return kms_err_set(KMS_ERR_PARSE, "protobuf field number 0 is invalid");
    if ((k & 7) > KMS_PB_WIRE_FIXED32)
        return kms_err_set(KMS_ERR_PARSE, "protobuf wire type %u is invalid", (unsigned)(k & 7));
    *field = (uint32_t)(k >> 3);
    *wire = (unsigned)(k & 7);
    return 0;
}

int kms_pb_read_len(struct kms_reader *r, const uint8_t **p, size_t *n)
{
    uint64_t len;
    int rc = kms_pb_read_varint(r, &len);

    if (rc < 0)
        return rc;
    if (len > kms_rd_left(r))
        return kms_err_set(KMS_ERR_PARSE, "protobuf length %llu exceeds the %zu bytes left",
                           (unsigned long long)len, kms_rd_left(r));
    *n = (size_t)len;
    return kms_rd_ptr(r, *n, p);
}

int kms_pb_skip(struct kms_reader *r, uint32_t field, unsigned wire, unsigned depth)
{
    uint64_t v;
    const uint8_t *p;
    size_t n;

    switch (wire) {
    case KMS_PB_WIRE_VARINT:
        return kms_pb_read_varint(r, &v);
    case KMS_PB_WIRE_FIXED64:
    case KMS_PB_WIRE_FIXED32:
        n = wire == KMS_PB_WIRE_FIXED64 ? 8 : 4;
        if (kms_rd_left(r) < n)
            return kms_err_set(KMS_ERR_PARSE, "protobuf fixed%zu value is truncated", n * 8);
        return kms_rd_skip(r, n);
    case KMS_PB_WIRE_LEN:
        return kms_pb_read_len(r, &p, &n);
    case KMS_PB_WIRE_SGROUP:
        /* a group's content is one level down, as a sub-message's */
        if (depth + 1 >= KMS_PB_MAX_DEPTH)
            return kms_err_set(KMS_ERR_TOOBIG, "protobuf nesting exceeds %d levels",
                               KMS_PB_MAX_DEPTH);
        for (;;) {
            uint32_t f;
            unsigned w;
            int rc;

            if (kms_rd_left(r) == 0)
                return kms_err_set(KMS_ERR_PARSE, "protobuf group %u is not closed",
                                   (unsigned)field);
            rc = kms_pb_read_key(r, &f, &w);
            if (rc < 0)
                return rc;
            if (w == KMS_PB_WIRE_EGROUP) {
                if (f != field)
                    return kms_err_set(KMS_ERR_PARSE,
                                       "protobuf group %u is closed by an end-group tag %u",
                                       (unsigned)field, (unsigned)f);
                return 0;
            }
            rc = kms_pb_skip(r, f, w, depth + 1);
            if (rc < 0)
                return rc;
        }
    default:
        return kms_err_set(KMS_ERR_PARSE, "protobuf end-group tag %u without a start",
                           (unsigned)field);
    }
}

int kms_pb_put_varint(struct kms_buf *b, uint64_t v)
{
    uint8_t t[10];
    size_t n = 0;

    do {
        t[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v != 0)
            t[n] |= 0x80;
        n++;
    } while (v != 0);
    return kms_buf_put(b, t, n);
}

int kms_pb_put_key(struct kms_buf *b, uint32_t field, unsigned wire)
{
    return kms_pb_put_varint(b, ((uint64_t)field << 3) | wire);
}

int kms_pb_put_len(struct kms_buf *b, uint32_t field, const void *p, size_t n)
{
    int rc = 0;

    KMS_GUARD(kms_pb_put_key(b, field, KMS_PB_WIRE_LEN));
    KMS_GUARD(kms_pb_put_varint(b, n));
    if (n > 0)
        KMS_GUARD(kms_buf_put(b, p, n));
out:
    return rc;
}

/* ---- decoding into JSON */

static const struct kms_pb_field *field_by_number(const struct kms_pb_msg *m, uint32_t num)
{
    for (size_t i = 0; i < m->n_fields; i++) {
        if (m->fields[i].number == num)
            return &m->fields[i];
    }
    return NULL;
}

static unsigned wire_of(const struct kms_pb_field *f)
{
    return f->type == KMS_PB_STRING || f->type == KMS_PB_BYTES || f->type == KMS_PB_MESSAGE
               ? KMS_PB_WIRE_LEN
               : KMS_PB_WIRE_VARINT;
}

static json_t *default_value(const struct kms_pb_field *f)
{
    if (f->flags & KMS_PB_REPEATED)
        return json_array();
    if ((f->flags & KMS_PB_OPTIONAL) || f->type == KMS_PB_MESSAGE)
        return json_null();
    switch (f->type) {
    case KMS_PB_STRING:
        return json_string("");
    case KMS_PB_BYTES:
        return json_string("0x");
    case KMS_PB_BOOL:
        return json_false();
    default:
        return json_integer(0);
    }
}

/* An object with every field of m at its default. NULL when out of memory. */
static json_t *default_object(const struct kms_pb_msg *m)
{
    json_t *o = json_object();

    for (size_t i = 0; o != NULL && i < m->n_fields; i++) {
        if (json_object_set_new(o, m->fields[i].name, default_value(&m->fields[i])) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

static int decode_into(const struct kms_pb_msg *m, const uint8_t *p, size_t n, json_t *obj,
                       unsigned depth);

/* A LEN-wire value of field f into a new JSON value, or (sub-message seen before) merged into
 * the existing object *v. */
static int decode_len_value(const struct kms_pb_msg *m, const struct kms_pb_field *f,
                            const uint8_t *vp, size_t vn, unsigned depth, json_t **v)
{
    char *hex;

    if (f->type == KMS_PB_STRING) {
        if (!kms_utf8_valid(vp, vn))
            return kms_err_set(KMS_ERR_PARSE, "field %s.%s is not UTF-8 text without NUL", m->name,
                               f->name);
        *v = json_stringn_nocheck((const char *)vp, vn);
    } else if (f->type == KMS_PB_BYTES) {
        hex = kms_hex_dup(vp, vn, 1);
        *v = hex != NULL ? json_string(hex) : NULL;
        free(hex);
    } else {
        int rc;

        if (depth + 1 >= KMS_PB_MAX_DEPTH)
            return kms_err_set(KMS_ERR_TOOBIG, "protobuf nesting exceeds %d levels",
                               KMS_PB_MAX_DEPTH);
        if (*v == NULL)
            *v = default_object(f->msg);
        if (*v == NULL)
            return kms_err_set(KMS_ERR_NOMEM, "out of memory");
        rc = decode_into(f->msg, vp, vn, *v, depth + 1);
        if (rc < 0)
            return kms_err_wrap(rc, "field %s.%s", m->name, f->name);
        return 0;
    }
    return *v != NULL ? 0 : kms_err_set(KMS_ERR_NOMEM, "out of memory");
}

static int decode_field(const struct kms_pb_msg *m, const struct kms_pb_field *f,
                        struct kms_reader *r, json_t *obj, unsigned depth)
{
    json_t *cur = json_object_get(obj, f->name);
    json_t *v = NULL;
    int rc = 0;

    if (wire_of(f) == KMS_PB_WIRE_VARINT) {
        uint64_t x;

        KMS_GUARD(kms_pb_read_varint(r, &x));
        if (f->type == KMS_PB_BOOL) {
            v = json_boolean(x != 0);
        } else if (f->type == KMS_PB_UINT32) {
            v = json_integer((json_int_t)(x & UINT32_MAX)); /* prost: `as u32` */
        } else {
            KMS_ENSURE(x <= (uint64_t)INT64_MAX, KMS_ERR_PARSE,
                       "field %s.%s exceeds the JSON integer range", m->name, f->name);
            v = json_integer((json_int_t)x);
        }
        KMS_GUARD_PTR(v);
    } else {
        const uint8_t *vp;
        size_t vn;

        KMS_GUARD(kms_pb_read_len(r, &vp, &vn));
        if (f->flags & KMS_PB_REPEATED) {
            KMS_ENSURE(json_array_size(cur) < KMS_PB_MAX_REPEATED, KMS_ERR_TOOBIG,
                       "field %s.%s has more than %d elements", m->name, f->name,
                       KMS_PB_MAX_REPEATED);
            KMS_GUARD(decode_len_value(m, f, vp, vn, depth, &v));
            KMS_ENSURE(json_array_append_new(cur, v) == 0, KMS_ERR_NOMEM, "out of memory");
            return 0;
        }
        if (f->type == KMS_PB_MESSAGE && json_is_object(cur))
            return decode_len_value(m, f, vp, vn, depth, &cur); /* merged in place */
        KMS_GUARD(decode_len_value(m, f, vp, vn, depth, &v));
    }
    KMS_ENSURE(json_object_set_new(obj, f->name, v) == 0, KMS_ERR_NOMEM, "out of memory");
    v = NULL;
out:
    json_decref(v);
    return rc;
}

static int decode_into(const struct kms_pb_msg *m, const uint8_t *p, size_t n, json_t *obj,
                       unsigned depth)
{
    struct kms_reader r;
    int rc = 0;

    kms_rd_init(&r, p, n);
    while (kms_rd_left(&r) > 0) {
        const struct kms_pb_field *f;
        uint32_t num;
        unsigned wire;

        KMS_GUARD(kms_pb_read_key(&r, &num, &wire));
        f = field_by_number(m, num);
        if (f == NULL) {
            KMS_GUARD(kms_pb_skip(&r, num, wire, depth));
            continue;
        }
        KMS_ENSURE(wire == wire_of(f), KMS_ERR_PARSE, "field %s.%s has wire type %u, expected %u",
                   m->name, f->name, wire, wire_of(f));
        KMS_GUARD(decode_field(m, f, &r, obj, depth));
    }
out:
    return rc;
}

int kms_pb_to_json(const struct kms_pb_msg *m, const uint8_t *p, size_t n, json_t **out)
{
    json_t *o = NULL;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(n <= KMS_PB_MAX_SIZE, KMS_ERR_TOOBIG, "protobuf message of %zu bytes exceeds %u", n,
               KMS_PB_MAX_SIZE);
    o = default_object(m);
    KMS_GUARD_PTR(o);
    KMS_GUARD(decode_into(m, p, n, o, 0));
    *out = o;
    o = NULL;
out:
    json_decref(o);
    return rc;
}

/* ---- encoding from JSON */

static int encode_msg(const struct kms_pb_msg *m, const json_t *obj, struct kms_buf *b,
                      unsigned depth);

/* One value of f; `always` encodes defaults too (optional fields, repeated elements,
 * sub-messages). */
static int encode_value(const struct kms_pb_msg *m, const struct kms_pb_field *f, const json_t *v,
                        int always, struct kms_buf *b, unsigned depth)
{
    uint8_t *bytes = NULL;
    size_t n = 0;
    struct kms_buf sub = {0};
    json_int_t x;
    int rc = 0;

    switch (f->type) {
    case KMS_PB_STRING:
        KMS_ENSURE(json_is_string(v), KMS_ERR_INVAL, "field %s.%s must be a string", m->name,
                   f->name);
        if (always || json_string_length(v) > 0)
            KMS_GUARD(kms_pb_put_len(b, f->number, json_string_value(v), json_string_length(v)));
        break;
    case KMS_PB_BYTES:
        KMS_ENSURE(json_is_string(v), KMS_ERR_INVAL, "field %s.%s must be a hex string", m->name,
                   f->name);
        rc = kms_hex_decode(json_string_value(v), &bytes, &n);
        if (rc < 0) {
            rc = kms_err_wrap(rc, "field %s.%s", m->name, f->name);
            goto out;
        }
        if (always || n > 0)
            KMS_GUARD(kms_pb_put_len(b, f->number, bytes, n));
        break;
    case KMS_PB_UINT32:
    case KMS_PB_UINT64:
        KMS_ENSURE(json_is_integer(v), KMS_ERR_INVAL, "field %s.%s must be an integer", m->name,
                   f->name);
        x = json_integer_value(v);
        KMS_ENSURE(x >= 0 && (f->type == KMS_PB_UINT64 || x <= (json_int_t)UINT32_MAX),
                   KMS_ERR_INVAL, "field %s.%s is out of range", m->name, f->name);
        if (always || x != 0) {
            KMS_GUARD(kms_pb_put_key(b, f->number, KMS_PB_WIRE_VARINT));
            KMS_GUARD(kms_pb_put_varint(b, (uint64_t)x));
        }
        break;
    case KMS_PB_BOOL:
        KMS_ENSURE(json_is_boolean(v), KMS_ERR_INVAL, "field %s.%s must be a boolean", m->name,
                   f->name);
        if (always || json_is_true(v)) {
            KMS_GUARD(kms_pb_put_key(b, f->number, KMS_PB_WIRE_VARINT));
            KMS_GUARD(kms_pb_put_varint(b, json_is_true(v) ? 1 : 0));
        }
        break;
    case KMS_PB_MESSAGE:
        KMS_ENSURE(depth + 1 < KMS_PB_MAX_DEPTH, KMS_ERR_TOOBIG,
                   "protobuf nesting exceeds %d levels", KMS_PB_MAX_DEPTH);
        KMS_GUARD(encode_msg(f->msg, v, &sub, depth + 1));
        KMS_GUARD(kms_pb_put_len(b, f->number, sub.data, sub.len));
        break;
    }
out:
    if (bytes != NULL)
        kms_free_secret(bytes, n);
    kms_buf_free(&sub); /* may hold key material (KmsKeys) */
    return rc;
}

static int encode_msg(const struct kms_pb_msg *m, const json_t *obj, struct kms_buf *b,
                      unsigned depth)
{
    int rc = 0;

    KMS_ENSURE(json_is_object(obj), KMS_ERR_INVAL, "%s must be a JSON object", m->name);
    for (size_t i = 0; i < m->n_fields; i++) {
        const struct kms_pb_field *f = &m->fields[i];
        const json_t *v = json_object_get(obj, f->name);

        if (v == NULL || json_is_null(v))
            continue;
        if (f->flags & KMS_PB_REPEATED) {
            KMS_ENSURE(json_is_array(v), KMS_ERR_INVAL, "field %s.%s must be an array", m->name,
                       f->name);
            KMS_ENSURE(json_array_size(v) <= KMS_PB_MAX_REPEATED, KMS_ERR_TOOBIG,
                       "field %s.%s has more than %d elements", m->name, f->name,
                       KMS_PB_MAX_REPEATED);
            for (size_t j = 0; j < json_array_size(v); j++)
                KMS_GUARD(encode_value(m, f, json_array_get(v, j), 1, b, depth));
        } else {
            KMS_GUARD(encode_value(m, f, v, (f->flags & KMS_PB_OPTIONAL) != 0, b, depth));
        }
        KMS_ENSURE(b->len <= KMS_PB_MAX_SIZE, KMS_ERR_TOOBIG,
                   "protobuf encoding of %s exceeds %u bytes", m->name, KMS_PB_MAX_SIZE);
    }
out:
    return rc;
}

int kms_pb_from_json(const struct kms_pb_msg *m, const json_t *obj, struct kms_buf *out)
{
    return encode_msg(m, obj, out, 0);
}

/* ---- schemas (kms_rpc.proto; AttestationInfoResponse and OnboardResponse.k256_pubkey from
 * the upstream variant, §11) */

#define F(num, nm, type)                                                                           \
    {                                                                                              \
        num, nm, KMS_PB_##type, 0, NULL                                                            \
    }
#define OPT(num, nm, type)                                                                         \
    {                                                                                              \
        num, nm, KMS_PB_##type, KMS_PB_OPTIONAL, NULL                                              \
    }

/* Message names as in the .proto; the schema is kms_pb_<name> (proto.h). */
#define MSG(name, ...)                                                                             \
    static const struct kms_pb_field name##_fields[] = {__VA_ARGS__};                              \
    const struct kms_pb_msg kms_pb_##name = {#name, name##_fields,                                 \
                                             sizeof(name##_fields) / sizeof(name##_fields[0])}

MSG(BootstrapRequest, F(1, "domain", STRING));
MSG(BootstrapResponse, F(1, "ca_pubkey", BYTES), F(2, "k256_pubkey", BYTES),
    F(3, "attestation", BYTES));
MSG(OnboardRequest, F(1, "source_url", STRING), F(2, "domain", STRING));
MSG(OnboardResponse, F(1, "k256_pubkey", BYTES));
MSG(AttestationInfoResponse, F(1, "device_id", BYTES), F(2, "mr_aggregated", BYTES),
    F(3, "os_image_hash", BYTES), F(4, "tee_variant", STRING), F(5, "site_name", STRING),
    F(6, "eth_rpc_url", STRING), F(7, "kms_contract_address", STRING), F(8, "ppid", BYTES));
MSG(GetAppKeyRequest, F(1, "api_version", UINT32), F(2, "vm_config", STRING));
MSG(AppKeyResponse, F(1, "ca_cert", STRING), F(2, "disk_crypt_key", BYTES),
    F(3, "env_crypt_key", BYTES), F(4, "k256_key", BYTES), F(5, "k256_signature", BYTES),
    F(6, "tproxy_app_id", STRING), F(7, "gateway_app_id", STRING), F(8, "os_image_hash", BYTES));
MSG(GetKmsKeyRequest, F(1, "vm_config", STRING));
MSG(KmsKeys, F(1, "ca_key", STRING), F(2, "k256_key", BYTES));
MSG(KmsKeyResponse, F(1, "temp_ca_key", STRING),
    {2, "keys", KMS_PB_MESSAGE, KMS_PB_REPEATED, &kms_pb_KmsKeys});
MSG(AppId, F(1, "app_id", BYTES));
MSG(PublicKeyResponse, F(1, "public_key", BYTES), F(2, "signature", BYTES),
    F(3, "timestamp", UINT64), F(4, "signature_v1", BYTES));
MSG(GetMetaResponse, F(1, "ca_cert", STRING), F(2, "allow_any_upgrade", BOOL),
    F(3, "k256_pubkey", BYTES), {4, "bootstrap_info", KMS_PB_MESSAGE, 0, &kms_pb_BootstrapResponse},
    F(5, "is_dev", BOOL), OPT(6, "gateway_app_id", STRING), OPT(7, "kms_contract_address", STRING),
    OPT(8, "chain_id", UINT64), OPT(9, "app_auth_implementation", STRING));
MSG(GetTempCaCertResponse, F(1, "temp_ca_cert", STRING), F(2, "temp_ca_key", STRING),
    F(3, "ca_cert", STRING));
MSG(SignCertRequest, F(1, "api_version", UINT32), F(2, "csr", BYTES), F(3, "signature", BYTES),
    F(4, "vm_config", STRING));
MSG(SignCertResponse, {1, "certificate_chain", KMS_PB_STRING, KMS_PB_REPEATED, NULL});
MSG(ClearImageCacheRequest, F(1, "token", STRING), F(2, "image_hash", STRING),
    F(3, "config_hash", STRING));

static const struct kms_pb_field ProtoError_fields[] = {F(1, "message", STRING)};
const struct kms_pb_msg kms_pb_proto_error = {"ProtoError", ProtoError_fields, 1};

int kms_pb_request_is_json(const char *http_method, int has_json_arg, const char *content_type)
{
    static const char json_type[] = "application/json";
    const char *c = content_type;
    size_t n = sizeof(json_type) - 1;

    if ((http_method != NULL && strcmp(http_method, "GET") == 0) || has_json_arg)
        return 1;
    if (c == NULL)
        return 0;
    while (*c == ' ' || *c == '\t')
        c++;
    /* Rocket's is_json: top and sub type only; parameters (charset=...) do not matter. */
    return strncasecmp(c, json_type, n) == 0 &&
           (c[n] == '\0' || c[n] == ';' || c[n] == ' ' || c[n] == '\t');
}

int kms_pb_encode_error(const char *message, struct kms_buf *out)
{
    size_t n = message != NULL ? strlen(message) : 0;

    return n > 0 ? kms_pb_put_len(out, 1, message, n) : 0;
}
