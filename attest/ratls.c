/*
 * RA-TLS certificate extensions (kms-reference.md §5.1, attestation-reference.md §0.2).
 * Every extension is non-critical and its extnValue is the DER of an OCTET STRING holding the
 * content, so the content is wrapped twice. The inner wrapping is parsed here as strict DER
 * through a kms_reader (OpenSSL's d2i would also accept BER forms).
 */
#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "common/buf.h"

/* Inner DER header: tag + at most 5 length bytes. */
#define RATLS_DER_HDR_MAX 6u

static int oid_obj(const char *oid, ASN1_OBJECT **obj)
{
    *obj = oid != NULL ? OBJ_txt2obj(oid, 1) : NULL;
    if (*obj == NULL) {
        ERR_clear_error();
        return kms_err_set(KMS_ERR_INVAL, "invalid extension OID \"%s\"", oid != NULL ? oid : "");
    }
    return 0;
}

/* Deletes every extension with this OID (the writer never leaves two copies). */
static void delete_ext(X509 *cert, const ASN1_OBJECT *obj)
{
    int idx = X509_get_ext_by_OBJ(cert, obj, -1);

    while (idx >= 0) {
        X509_EXTENSION_free(X509_delete_ext(cert, idx));
        idx = X509_get_ext_by_OBJ(cert, obj, -1);
    }
}

static int delete_ext_oid(X509 *cert, const char *oid)
{
    ASN1_OBJECT *obj = NULL;
    int rc = oid_obj(oid, &obj);

    if (rc == 0)
        delete_ext(cert, obj);
    ASN1_OBJECT_free(obj);
    return rc;
}

int kms_ratls_add_ext(X509 *cert, const char *oid, const uint8_t *content, size_t len)
{
    ASN1_OBJECT *obj = NULL;
    ASN1_OCTET_STRING *inner = NULL;
    ASN1_OCTET_STRING *outer = NULL;
    X509_EXTENSION *ext = NULL;
    unsigned char *der = NULL;
    int der_len;
    int rc = 0;

    KMS_ENSURE(cert != NULL && (content != NULL || len == 0), KMS_ERR_INVAL,
               "RA-TLS extension: invalid argument");
    KMS_ENSURE(len <= KMS_ATT_MAX_BYTES, KMS_ERR_TOOBIG,
               "RA-TLS extension %s: content of %zu bytes exceeds %u", oid, len, KMS_ATT_MAX_BYTES);
    KMS_GUARD(oid_obj(oid, &obj));
    inner = ASN1_OCTET_STRING_new();
    outer = ASN1_OCTET_STRING_new();
    KMS_GUARD_PTR(inner);
    KMS_GUARD_PTR(outer);
    KMS_GUARD_OSSL(ASN1_OCTET_STRING_set(inner, content, (int)len), "ASN1_OCTET_STRING_set");
    der_len = i2d_ASN1_OCTET_STRING(inner, &der);
    KMS_ENSURE(der_len > 0, KMS_ERR_CRYPTO, "cannot DER-encode extension content");
    ASN1_STRING_set0(outer, der, der_len); /* outer owns der now */
    der = NULL;
    ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, outer);
    if (ext == NULL) {
        rc = kms_err_ossl(KMS_ERR_CRYPTO, "X509_EXTENSION_create_by_OBJ");
        goto out;
    }
    delete_ext(cert, obj);
    KMS_GUARD_OSSL(X509_add_ext(cert, ext, -1), "X509_add_ext"); /* copies ext */
out:
    OPENSSL_free(der);
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(outer);
    ASN1_OCTET_STRING_free(inner);
    ASN1_OBJECT_free(obj);
    return rc;
}

/* Strict DER OCTET STRING that must span exactly [p, p+n): borrows the content. */
static int der_octet_string(const uint8_t *p, size_t n, const uint8_t **content, size_t *len)
{
    struct kms_reader r;
    uint8_t tag;
    uint8_t b;
    size_t l = 0;
    int rc = 0;

    kms_rd_init(&r, p, n);
    KMS_GUARD(kms_rd_u8(&r, &tag));
    KMS_ENSURE(tag == 0x04, KMS_ERR_ATT_FORMAT,
               "extension value is not a DER OCTET STRING (tag 0x%02x)", tag);
    KMS_GUARD(kms_rd_u8(&r, &b));
    if (b < 0x80) {
        l = b;
    } else {
        size_t nb = b & 0x7fu;

        KMS_ENSURE(nb >= 1 && nb <= 4, KMS_ERR_ATT_FORMAT,
                   "extension value: unsupported DER length form 0x%02x", b);
        for (size_t i = 0; i < nb; i++) {
            KMS_GUARD(kms_rd_u8(&r, &b));
            KMS_ENSURE(i > 0 || b != 0, KMS_ERR_ATT_FORMAT,
                       "extension value: non-minimal DER length");
            l = (l << 8) | b;
        }
        KMS_ENSURE(l >= 0x80, KMS_ERR_ATT_FORMAT, "extension value: non-minimal DER length");
    }
    KMS_ENSURE(l == kms_rd_left(&r), KMS_ERR_ATT_FORMAT,
               "extension value: OCTET STRING length %zu does not match the %zu bytes present", l,
               kms_rd_left(&r));
    KMS_GUARD(kms_rd_ptr(&r, l, content));
    *len = l;
out:
    if (rc == KMS_ERR_PARSE)
        rc = kms_err_wrap(KMS_ERR_ATT_FORMAT, "extension value");
    return rc;
}

int kms_ratls_get_ext(X509 *cert, const char *oid, uint8_t **out, size_t *len)
{
    ASN1_OBJECT *obj = NULL;
    const ASN1_OCTET_STRING *value;
    const uint8_t *content;
    size_t clen = 0;
    uint8_t *copy = NULL;
    int idx;
    int vlen;
    int rc = 0;

    *out = NULL;
    *len = 0;
    KMS_ENSURE(cert != NULL, KMS_ERR_INVAL, "RA-TLS extension: no certificate");
    KMS_GUARD(oid_obj(oid, &obj));
    idx = X509_get_ext_by_OBJ(cert, obj, -1);
    KMS_ENSURE(idx >= 0, KMS_ERR_NOTFOUND, "certificate has no extension %s", oid);
    KMS_ENSURE(X509_get_ext_by_OBJ(cert, obj, idx) < 0, KMS_ERR_ATT_FORMAT,
               "certificate carries extension %s more than once", oid);
    value = X509_EXTENSION_get_data(X509_get_ext(cert, idx));
    KMS_ENSURE(value != NULL, KMS_ERR_ATT_FORMAT, "extension %s has no value", oid);
    vlen = ASN1_STRING_length(value);
    KMS_ENSURE(vlen >= 0 && (size_t)vlen <= KMS_ATT_MAX_BYTES + RATLS_DER_HDR_MAX, KMS_ERR_TOOBIG,
               "extension %s: value of %d bytes exceeds %u", oid, vlen, KMS_ATT_MAX_BYTES);
    rc = der_octet_string(ASN1_STRING_get0_data(value), (size_t)vlen, &content, &clen);
    if (rc < 0) {
        rc = kms_err_wrap(rc, "extension %s", oid);
        goto out;
    }
    KMS_ENSURE(clen <= KMS_ATT_MAX_BYTES, KMS_ERR_TOOBIG,
               "extension %s: content of %zu bytes exceeds %u", oid, clen, KMS_ATT_MAX_BYTES);
    /* +1: NUL-terminated so text contents (event log, usage) can be used as strings. */
    copy = malloc(clen + 1);
    KMS_GUARD_PTR(copy);
    if (clen > 0)
        memcpy(copy, content, clen);
    copy[clen] = '\0';
    *out = copy;
    *len = clen;
out:
    ASN1_OBJECT_free(obj);
    return rc;
}

int kms_ratls_add_attestation(X509 *cert, const struct kms_attestation *att)
{
    char *json = NULL;
    uint8_t *scale = NULL;
    size_t scale_len = 0;
    int rc = 0;

    KMS_ENSURE(cert != NULL && att != NULL, KMS_ERR_INVAL, "RA-TLS attestation: invalid argument");
    if (att->mode == KMS_ATT_TDX) {
        /* Legacy pair for readers that predate .1.8 (the reference writes only these). */
        KMS_ENSURE(att->tdx_quote.len > 0, KMS_ERR_INVAL, "TDX attestation has no quote");
        KMS_GUARD(kms_att_event_log_json(att, &json));
        KMS_GUARD(kms_ratls_add_ext(cert, KMS_OID_TDX_QUOTE, att->tdx_quote.p, att->tdx_quote.len));
        KMS_GUARD(kms_ratls_add_ext(cert, KMS_OID_EVENT_LOG, (const uint8_t *)json, strlen(json)));
        KMS_GUARD(delete_ext_oid(cert, KMS_OID_ATTESTATION));
    } else {
        KMS_GUARD(kms_att_encode(att, 1, &scale, &scale_len));
        KMS_GUARD(kms_ratls_add_ext(cert, KMS_OID_ATTESTATION, scale, scale_len));
        KMS_GUARD(delete_ext_oid(cert, KMS_OID_TDX_QUOTE));
        KMS_GUARD(delete_ext_oid(cert, KMS_OID_EVENT_LOG));
    }
out:
    free(json);
    free(scale);
    return rc;
}

int kms_ratls_get_attestation(X509 *cert, struct kms_attestation **out)
{
    uint8_t *a = NULL;
    uint8_t *b = NULL;
    size_t alen = 0;
    size_t blen = 0;
    int rc = 0;

    *out = NULL;
    rc = kms_ratls_get_ext(cert, KMS_OID_ATTESTATION, &a, &alen);
    if (rc == 0) {
        KMS_GUARD(kms_att_decode(a, alen, out));
        goto out;
    }
    if (rc != KMS_ERR_NOTFOUND)
        goto out;
    rc = kms_ratls_get_ext(cert, KMS_OID_TDX_QUOTE, &a, &alen);
    if (rc == KMS_ERR_NOTFOUND) {
        rc = kms_err_set(KMS_ERR_ATT_NONE, "No attestation provided");
        goto out;
    }
    KMS_GUARD(rc);
    rc = kms_ratls_get_ext(cert, KMS_OID_EVENT_LOG, &b, &blen);
    if (rc == KMS_ERR_NOTFOUND) {
        rc = kms_err_set(KMS_ERR_ATT_FORMAT,
                         "certificate has a TDX quote (OID %s) but no event log (OID %s)",
                         KMS_OID_TDX_QUOTE, KMS_OID_EVENT_LOG);
        goto out;
    }
    KMS_GUARD(rc);
    KMS_GUARD(kms_att_from_legacy(a, alen, (const char *)b, blen, out));
out:
    free(a);
    free(b);
    return rc;
}

static int spki_report_data(const uint8_t *spki, int spki_len, uint8_t out[64])
{
    if (spki_len <= 0)
        return kms_err_ossl(KMS_ERR_CRYPTO, "cannot DER-encode the subject public key");
    kms_report_data("ratls-cert", spki, (size_t)spki_len, out);
    return 0;
}

int kms_report_data_for_cert(X509 *cert, uint8_t out[64])
{
    unsigned char *der = NULL;
    int n;
    int rc;

    if (cert == NULL || X509_get_X509_PUBKEY(cert) == NULL)
        return kms_err_set(KMS_ERR_INVAL, "certificate has no public key");
    n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    rc = spki_report_data(der, n, out);
    OPENSSL_free(der);
    return rc;
}

int kms_report_data_for_pkey(EVP_PKEY *pkey, uint8_t out[64])
{
    unsigned char *der = NULL;
    int n;
    int rc;

    if (pkey == NULL)
        return kms_err_set(KMS_ERR_INVAL, "no public key");
    n = i2d_PUBKEY(pkey, &der);
    rc = spki_report_data(der, n, out);
    OPENSSL_free(der);
    return rc;
}
