/*
 * The in-tree CBOR writer (attest/cbor.c) against libcbor, the independent reference: the
 * product no longer links libcbor to encode, so every byte it emits is compared here with what
 * libcbor's cbor_serialize produces for the same items. Covered: the NSM Attestation request
 * (attest/nsm.c) in every field combination, and a simulated Nitro document (attest/
 * sim_nitro.c): its COSE_Sign1, its payload and the Sig_structure its signature covers, each
 * rebuilt with libcbor from the decoded parts exactly as the former libcbor builders did; and
 * every head width at its boundaries (23/24, 255/256, 65535/65536, 2^32-1/2^32) for each major
 * type, against libcbor's cbor_encode_* and cbor_serialize.
 */
#include <cbor.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attest/attest.h"
#include "attest/cbor.h"
#include "attest/nsm.h"
#include "attest/sim.h"
#include "test.h"

/* libcbor serialization of item into a malloc'd buffer (caller frees); consumes item. */
static uint8_t *lc_serialize(cbor_item_t *item, size_t *len)
{
    unsigned char *buf = NULL;
    size_t cap = 0;

    *len = item != NULL ? cbor_serialize_alloc(item, &buf, &cap) : 0;
    if (item != NULL)
        cbor_decref(&item);
    if (*len == 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void lc_map_put(cbor_item_t *m, cbor_item_t *k, cbor_item_t *v)
{
    CHECK(k != NULL && v != NULL && cbor_map_add(m, (struct cbor_pair){.key = k, .value = v}));
    if (k != NULL)
        cbor_decref(&k);
    if (v != NULL)
        cbor_decref(&v);
}

static void lc_push(cbor_item_t *a, cbor_item_t *v)
{
    CHECK(v != NULL && cbor_array_push(a, v));
    if (v != NULL)
        cbor_decref(&v);
}

static cbor_item_t *lc_opt_bstr(const uint8_t *p, size_t n)
{
    return p != NULL ? cbor_build_bytestring(p, n) : cbor_new_null();
}

/* ---------------------------------------------------------------- heads */

static const uint64_t g_bounds[] = {
    0, 1, 23, 24, 255, 256, 65535, 65536, 0xffffffffu, 0x100000000u, UINT64_MAX - 1, UINT64_MAX};

/* libcbor's head encoder for a major type (arguments above SIZE_MAX do not occur on 64-bit). */
static size_t lc_head(uint8_t major, uint64_t v, uint8_t *out, size_t cap)
{
    switch (major) {
    case KMS_CBOR_UINT:
        return cbor_encode_uint(v, out, cap);
    case KMS_CBOR_NEGINT:
        return cbor_encode_negint(v, out, cap);
    case KMS_CBOR_BSTR:
        return cbor_encode_bytestring_start((size_t)v, out, cap);
    case KMS_CBOR_TSTR:
        return cbor_encode_string_start((size_t)v, out, cap);
    case KMS_CBOR_ARRAY:
        return cbor_encode_array_start((size_t)v, out, cap);
    case KMS_CBOR_MAP:
        return cbor_encode_map_start((size_t)v, out, cap);
    case KMS_CBOR_TAG:
        return cbor_encode_tag(v, out, cap);
    default:
        return 0;
    }
}

/* Each major type's head at every width boundary is libcbor's, 1/2/3/5/9 bytes long; the typed
 * helpers write the same heads; a major type above 7 is refused and leaves the buffer as it was. */
static void test_heads_match_libcbor(void)
{
    uint8_t want[16];
    size_t want_len;
    int compared = 0;

    for (uint8_t major = 0; major <= 6; major++) {
        for (size_t i = 0; i < sizeof(g_bounds) / sizeof(g_bounds[0]); i++) {
            struct kms_buf b = {0}, t = {0};
            uint64_t v = g_bounds[i];
            size_t expect = v < 24 ? 1 : v <= 0xff ? 2 : v <= 0xffff ? 3 : v <= 0xffffffffu ? 5 : 9;

            want_len = lc_head(major, v, want, sizeof(want));
            CHECK(want_len == expect);
            CHECK_OK(kms_cbor_put_head(&b, major, v));
            CHECK(b.len == want_len && memcmp(b.data, want, want_len) == 0);
            if (major == KMS_CBOR_UINT)
                CHECK_OK(kms_cbor_put_uint(&t, v));
            else if (major == KMS_CBOR_ARRAY)
                CHECK_OK(kms_cbor_put_array(&t, (size_t)v));
            else if (major == KMS_CBOR_MAP)
                CHECK_OK(kms_cbor_put_map(&t, (size_t)v));
            if (t.len > 0)
                CHECK(t.len == want_len && memcmp(t.data, want, want_len) == 0);
            kms_buf_free(&b);
            kms_buf_free(&t);
            compared++;
        }
    }
    CHECK(compared == 7 * 12);
    {
        struct kms_buf b = {0};

        CHECK_OK(kms_buf_put_u8(&b, 0x80));
        CHECK_RC(kms_cbor_put_head(&b, 8, 0), KMS_ERR_INVAL);
        CHECK_DETAIL("major type 8");
        CHECK(b.len == 1 && b.data[0] == 0x80);
        CHECK_OK(kms_cbor_put_head(&b, 7, 22)); /* simple value 22 is null */
        CHECK_OK(kms_cbor_put_null(&b));
        want_len = cbor_encode_null(want, sizeof(want));
        CHECK(b.len == 3 && want_len == 1 && b.data[1] == want[0] && b.data[2] == want[0]);
        kms_buf_free(&b);
    }
}

/* Strings at the length boundaries serialize as libcbor's definite strings; an empty byte
 * string may come from NULL; a string that would take the buffer past KMS_BUF_MAX is refused
 * before anything is written. */
static void test_strings_match_libcbor(void)
{
    static const size_t lens[] = {0, 1, 23, 24, 255, 256, 65535, 65536};
    static char text[65537];
    struct kms_buf b = {0};
    uint8_t *want;
    size_t want_len;

    memset(text, 'a', sizeof(text) - 1);
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        size_t n = lens[i];

        want = lc_serialize(cbor_build_bytestring((const uint8_t *)text, n), &want_len);
        CHECK_OK(kms_cbor_put_bstr(&b, (const uint8_t *)text, n));
        CHECK(want != NULL && b.len == want_len && memcmp(b.data, want, want_len) == 0);
        free(want);
        kms_buf_free(&b);
        text[n] = '\0';
        want = lc_serialize(cbor_build_string(text), &want_len);
        CHECK_OK(kms_cbor_put_tstr(&b, text));
        CHECK(want != NULL && b.len == want_len && memcmp(b.data, want, want_len) == 0);
        text[n] = 'a';
        free(want);
        kms_buf_free(&b);
    }
    CHECK_OK(kms_cbor_put_bstr(&b, NULL, 0));
    CHECK(b.len == 1 && b.data[0] == 0x40);
    /* 5-byte head + (KMS_BUF_MAX - 4) bytes is one byte too many; never read from text */
    CHECK_RC(kms_cbor_put_bstr(&b, (const uint8_t *)text, KMS_BUF_MAX - 4), KMS_ERR_TOOBIG);
    CHECK_DETAIL("exceeds");
    CHECK(b.len == 1 && b.data[0] == 0x40);
    CHECK_RC(kms_cbor_put_bstr(&b, (const uint8_t *)text, (size_t)0x100000000u), KMS_ERR_TOOBIG);
    CHECK(b.len == 1);
    kms_buf_free(&b);
}

/* ---------------------------------------------------------------- NSM request */

/* The request as the former libcbor encoder in nsm.c built it. Caller frees. */
static uint8_t *lc_nsm_request(const struct kms_nsm_att_req *req, size_t *len)
{
    cbor_item_t *top = cbor_new_definite_map(1);
    cbor_item_t *body = cbor_new_definite_map(3);

    lc_map_put(body, cbor_build_string("user_data"),
               lc_opt_bstr(req->user_data, req->user_data_len));
    lc_map_put(body, cbor_build_string("nonce"), lc_opt_bstr(req->nonce, req->nonce_len));
    lc_map_put(body, cbor_build_string("public_key"),
               lc_opt_bstr(req->public_key, req->public_key_len));
    lc_map_put(top, cbor_build_string("Attestation"), body);
    return lc_serialize(top, len);
}

/* Every combination of absent / empty / short / long (2-byte head) fields encodes as libcbor
 * encodes it; a buffer of exactly the encoded size suffices and one byte less is refused. */
static void test_nsm_request_matches_libcbor(void)
{
    static uint8_t data[KMS_NSM_PUBLIC_KEY_MAX];
    static const size_t lens[] = {0, 23, 24, 64, 255, 256, 512};
    uint8_t out[KMS_NSM_REQUEST_MAX];
    struct kms_nsm_att_req req;
    size_t len, want_len;
    uint8_t *want;
    int compared = 0;

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7u + 1u);
    /* mask bit 0/1/2: user_data/nonce/public_key present; each length from lens */
    for (unsigned mask = 0; mask < 8; mask++) {
        for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
            memset(&req, 0, sizeof(req));
            if (mask & 1u) {
                req.user_data = data;
                req.user_data_len = lens[li];
            }
            if (mask & 2u) {
                req.nonce = data + 1;
                req.nonce_len = lens[li];
            }
            if (mask & 4u) {
                req.public_key = data + 2;
                req.public_key_len = lens[li];
            }
            want = lc_nsm_request(&req, &want_len);
            CHECK(want != NULL);
            if (want == NULL)
                return;
            len = 0;
            CHECK_OK(kms_nsm_encode_attestation(&req, out, sizeof(out), &len));
            CHECK(len == want_len);
            CHECK(len == want_len && memcmp(out, want, len) == 0);
            CHECK_OK(kms_nsm_encode_attestation(&req, out, want_len, &len));
            CHECK(len == want_len && memcmp(out, want, len) == 0);
            CHECK_RC(kms_nsm_encode_attestation(&req, out, want_len - 1, &len), KMS_ERR_TOOBIG);
            CHECK(len == 0);
            free(want);
            compared++;
            if (mask == 0)
                break; /* lengths do not matter without fields */
        }
    }
    CHECK(compared == 1 + 7 * 7);
}

/* ---------------------------------------------------------------- simulated document */

static cbor_item_t *map_get(const cbor_item_t *m, const char *key)
{
    size_t n = strlen(key);

    for (size_t i = 0; i < cbor_map_size(m); i++) {
        const cbor_item_t *k = cbor_map_handle(m)[i].key;

        if (cbor_isa_string(k) && cbor_string_length(k) == n &&
            memcmp(cbor_string_handle(k), key, n) == 0)
            return cbor_map_handle(m)[i].value;
    }
    return NULL;
}

static cbor_item_t *bstr_of(const cbor_item_t *it)
{
    if (it == NULL || !cbor_isa_bytestring(it) || !cbor_bytestring_is_definite(it))
        return NULL;
    return cbor_build_bytestring(cbor_bytestring_handle(it), cbor_bytestring_length(it));
}

/* The payload as the former libcbor builder in sim_nitro.c built it, from the decoded one's
 * values (keys in the same order, the timestamp as cbor_build_uint64, PCR indexes as
 * cbor_build_uint8). Caller frees. */
static uint8_t *lc_payload(const cbor_item_t *doc, size_t *len)
{
    static const char *const order[] = {"module_id",  "digest",      "timestamp",
                                        "pcrs",       "certificate", "cabundle",
                                        "public_key", "user_data",   "nonce"};
    cbor_item_t *m = cbor_new_definite_map(9), *pm, *cab, *ud, *v;
    const cbor_item_t *pcrs;
    uint8_t *enc = NULL;

    *len = 0;
    CHECK(cbor_map_size(doc) == 9);
    for (size_t i = 0; i < 9 && i < cbor_map_size(doc); i++) {
        const cbor_item_t *k = cbor_map_handle(doc)[i].key;

        CHECK(cbor_isa_string(k) && cbor_string_length(k) == strlen(order[i]) &&
              memcmp(cbor_string_handle(k), order[i], strlen(order[i])) == 0);
    }
    v = map_get(doc, "module_id");
    CHECK(v != NULL && cbor_isa_string(v));
    if (v == NULL || !cbor_isa_string(v))
        goto out;
    lc_map_put(m, cbor_build_string("module_id"),
               cbor_build_stringn((const char *)cbor_string_handle(v), cbor_string_length(v)));
    lc_map_put(m, cbor_build_string("digest"), cbor_build_string("SHA384"));
    v = map_get(doc, "timestamp");
    CHECK(v != NULL && cbor_isa_uint(v));
    if (v == NULL || !cbor_isa_uint(v))
        goto out;
    lc_map_put(m, cbor_build_string("timestamp"), cbor_build_uint64(cbor_get_int(v)));
    pcrs = map_get(doc, "pcrs");
    CHECK(pcrs != NULL && cbor_isa_map(pcrs) && cbor_map_size(pcrs) == 16);
    if (pcrs == NULL || !cbor_isa_map(pcrs))
        goto out;
    pm = cbor_new_definite_map(16);
    for (size_t i = 0; i < cbor_map_size(pcrs); i++) {
        const struct cbor_pair pr = cbor_map_handle(pcrs)[i];

        CHECK(cbor_isa_uint(pr.key) && cbor_get_int(pr.key) == i);
        lc_map_put(pm, cbor_build_uint8((uint8_t)i), bstr_of(pr.value));
    }
    lc_map_put(m, cbor_build_string("pcrs"), pm);
    lc_map_put(m, cbor_build_string("certificate"), bstr_of(map_get(doc, "certificate")));
    v = map_get(doc, "cabundle");
    CHECK(v != NULL && cbor_isa_array(v) && cbor_array_size(v) == 1);
    if (v == NULL || !cbor_isa_array(v) || cbor_array_size(v) != 1)
        goto out;
    cab = cbor_new_definite_array(1);
    lc_push(cab, bstr_of(cbor_array_handle(v)[0]));
    lc_map_put(m, cbor_build_string("cabundle"), cab);
    lc_map_put(m, cbor_build_string("public_key"), cbor_new_null());
    ud = map_get(doc, "user_data");
    CHECK(ud != NULL);
    if (ud == NULL)
        goto out;
    lc_map_put(m, cbor_build_string("user_data"), cbor_is_null(ud) ? cbor_new_null() : bstr_of(ud));
    lc_map_put(m, cbor_build_string("nonce"), cbor_new_null());
    enc = lc_serialize(m, len);
    m = NULL; /* consumed */
out:
    if (m != NULL)
        cbor_decref(&m);
    return enc;
}

/* The signature (r||s, 96 bytes) verifies under the leaf certificate over the libcbor encoding
 * of ["Signature1", prot, h'', payload]. */
static int sig_verifies(const cbor_item_t *cert, const cbor_item_t *prot,
                        const cbor_item_t *payload, const cbor_item_t *sig)
{
    cbor_item_t *a = cbor_new_definite_array(4);
    const unsigned char *cp = cbor_bytestring_handle(cert);
    X509 *x = d2i_X509(NULL, &cp, (long)cbor_bytestring_length(cert));
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = NULL, *s = NULL;
    unsigned char *der = NULL;
    uint8_t *tbs = NULL;
    size_t tbs_len = 0;
    int der_len, ok = 0;

    lc_push(a, cbor_build_string("Signature1"));
    lc_push(a, bstr_of(prot));
    lc_push(a, cbor_new_definite_bytestring());
    lc_push(a, bstr_of(payload));
    tbs = lc_serialize(a, &tbs_len);
    if (x == NULL || md == NULL || es == NULL || tbs == NULL || cbor_bytestring_length(sig) != 96)
        goto out;
    r = BN_bin2bn(cbor_bytestring_handle(sig), 48, NULL);
    s = BN_bin2bn(cbor_bytestring_handle(sig) + 48, 48, NULL);
    if (r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1)
        goto out;
    r = s = NULL;
    der_len = i2d_ECDSA_SIG(es, &der);
    if (der_len <= 0)
        goto out;
    ok = EVP_DigestVerifyInit(md, NULL, EVP_sha384(), NULL, X509_get0_pubkey(x)) == 1 &&
         EVP_DigestVerify(md, der, (size_t)der_len, tbs, tbs_len) == 1;
out:
    BN_free(r);
    BN_free(s);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    X509_free(x);
    free(tbs);
    return ok;
}

/* One simulated document: libcbor rebuilds the COSE_Sign1 and the payload byte for byte, and
 * the signature covers libcbor's Sig_structure. */
static void check_sim_doc(const struct kms_bytes *cose, int with_user_data)
{
    struct cbor_load_result res;
    cbor_item_t *top = cbor_load(cose->p, cose->len, &res), *doc = NULL, *a = NULL;
    cbor_item_t **el;
    uint8_t *want = NULL;
    size_t want_len = 0;

    CHECK(top != NULL && res.read == cose->len && cbor_isa_array(top) && cbor_array_size(top) == 4);
    if (top == NULL || !cbor_isa_array(top) || cbor_array_size(top) != 4)
        goto out;
    el = cbor_array_handle(top);
    CHECK(cbor_isa_bytestring(el[0]) && cbor_isa_map(el[1]) && cbor_map_size(el[1]) == 0 &&
          cbor_isa_bytestring(el[2]) && cbor_isa_bytestring(el[3]));
    if (!cbor_isa_bytestring(el[0]) || !cbor_isa_bytestring(el[2]) || !cbor_isa_bytestring(el[3]))
        goto out;
    a = cbor_new_definite_array(4);
    lc_push(a, bstr_of(el[0]));
    lc_push(a, cbor_new_definite_map(0));
    lc_push(a, bstr_of(el[2]));
    lc_push(a, bstr_of(el[3]));
    want = lc_serialize(a, &want_len);
    CHECK(want != NULL && want_len == cose->len && memcmp(want, cose->p, want_len) == 0);
    free(want);
    want = NULL;
    doc = cbor_load(cbor_bytestring_handle(el[2]), cbor_bytestring_length(el[2]), &res);
    CHECK(doc != NULL && res.read == cbor_bytestring_length(el[2]) && cbor_isa_map(doc));
    if (doc == NULL || !cbor_isa_map(doc))
        goto out;
    CHECK(with_user_data ? cbor_isa_bytestring(map_get(doc, "user_data"))
                         : cbor_is_null(map_get(doc, "user_data")));
    want = lc_payload(doc, &want_len);
    CHECK(want != NULL && want_len == cbor_bytestring_length(el[2]) &&
          memcmp(want, cbor_bytestring_handle(el[2]), want_len) == 0);
    CHECK(map_get(doc, "certificate") != NULL &&
          sig_verifies(map_get(doc, "certificate"), el[0], el[2], el[3]));
out:
    free(want);
    if (doc != NULL)
        cbor_decref(&doc);
    if (top != NULL)
        cbor_decref(&top);
}

static void test_sim_doc_matches_libcbor(void)
{
    char dir[] = "/tmp/kms-test-cborw-XXXXXX", p[4096];
    uint8_t pcrs[3][48], rd[64];
    struct kms_attestation *att = NULL, *nul = NULL;

    for (int i = 0; i < 3 * 48; i++)
        pcrs[i / 48][i % 48] = (uint8_t)(0xa0 + i);
    for (int i = 0; i < 64; i++)
        rd[i] = (uint8_t)(0x40 + i);
    CHECK(mkdtemp(dir) != NULL);
    CHECK_OK(kms_sim_nitro_attest(dir, pcrs, rd, NULL, &att));
    CHECK_OK(kms_sim_nitro_attest(dir, pcrs, NULL, NULL, &nul));
    if (att != NULL)
        check_sim_doc(&att->nsm_quote, 1);
    if (nul != NULL)
        check_sim_doc(&nul->nsm_quote, 0);
    kms_att_free(att);
    kms_att_free(nul);
    snprintf(p, sizeof(p), "%s/sim-nitro-root.pem", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/sim-nitro-root.key", dir);
    unlink(p);
    rmdir(dir);
}

int main(void)
{
    RUN(test_heads_match_libcbor);
    RUN(test_strings_match_libcbor);
    RUN(test_nsm_request_matches_libcbor);
    RUN(test_sim_doc_matches_libcbor);
    TEST_MAIN_END();
}
