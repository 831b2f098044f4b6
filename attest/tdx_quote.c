/* TDX v4 and v5 quotes: parsing, the reference's TD-attribute rules and offline signature
 * verification (attestation-reference.md §3). Where a rule says "as dcap-qvl", it follows the
 * reference verifier Phala-Network/dcap-qvl 0.5.2 (src/quote.rs, src/verify.rs). */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "attest/internal.h"
#include "attest/pki.h"
#include "attest/tdx.h"
#include "common/buf.h"

#define TDX_ATT_KEY_ECDSA_P256 2u
#define TDX_TEE_TYPE 0x81u
#define CERT_TYPE_QE_REPORT 6u
#define CERT_TYPE_PCK_CHAIN 5u
#define PCK_CHAIN_MAX_CERTS 8
#define TDX_MAX_DATA_LEN (1024u * 1024u) /* dcap-qvl's bound on a length-prefixed field */

/* Intel SGX extension OIDs in the PCK certificate. */
#define OID_SGX_EXT "1.2.840.113741.1.13.1"
#define OID_SGX_PPID "1.2.840.113741.1.13.1.1"

static int rd_report(struct kms_reader *r, struct kms_tdx_report *t)
{
    int rc = 0;

    KMS_GUARD(kms_rd_copy(r, t->tee_tcb_svn, 16));
    KMS_GUARD(kms_rd_copy(r, t->mr_seam, 48));
    KMS_GUARD(kms_rd_copy(r, t->mr_signer_seam, 48));
    KMS_GUARD(kms_rd_copy(r, t->seam_attributes, 8));
    KMS_GUARD(kms_rd_copy(r, t->td_attributes, 8));
    KMS_GUARD(kms_rd_copy(r, t->xfam, 8));
    KMS_GUARD(kms_rd_copy(r, t->mr_td, 48));
    KMS_GUARD(kms_rd_copy(r, t->mr_config_id, 48));
    KMS_GUARD(kms_rd_copy(r, t->mr_owner, 48));
    KMS_GUARD(kms_rd_copy(r, t->mr_owner_config, 48));
    for (int i = 0; i < 4; i++)
        KMS_GUARD(kms_rd_copy(r, t->rtmr[i], 48));
    KMS_GUARD(kms_rd_copy(r, t->report_data, 64));
out:
    return rc;
}

/* SGX report body of the quoting enclave (KMS_TDX_QE_REPORT_LEN bytes). */
static int rd_qe_report(const uint8_t *p, struct kms_tdx_qe_report *e)
{
    struct kms_reader r;
    int rc = 0;

    kms_rd_init(&r, p, KMS_TDX_QE_REPORT_LEN);
    KMS_GUARD(kms_rd_copy(&r, e->cpu_svn, 16));
    KMS_GUARD(kms_rd_u32le(&r, &e->misc_select));
    KMS_GUARD(kms_rd_skip(&r, 28));
    KMS_GUARD(kms_rd_copy(&r, e->attributes, 16));
    KMS_GUARD(kms_rd_copy(&r, e->mr_enclave, 32));
    KMS_GUARD(kms_rd_skip(&r, 32));
    KMS_GUARD(kms_rd_copy(&r, e->mr_signer, 32));
    KMS_GUARD(kms_rd_skip(&r, 96));
    KMS_GUARD(kms_rd_u16le(&r, &e->isv_prod_id));
    KMS_GUARD(kms_rd_u16le(&r, &e->isv_svn));
    KMS_GUARD(kms_rd_skip(&r, 60));
    KMS_GUARD(kms_rd_copy(&r, e->report_data, 64));
out:
    return rc;
}

int kms_tdx_qe_report_put(struct kms_buf *b, const struct kms_tdx_qe_report *e)
{
    static const uint8_t zero[96];
    int rc = 0;

    KMS_GUARD(kms_buf_put(b, e->cpu_svn, 16));
    KMS_GUARD(kms_buf_put_u32le(b, e->misc_select));
    KMS_GUARD(kms_buf_put(b, zero, 28));
    KMS_GUARD(kms_buf_put(b, e->attributes, 16));
    KMS_GUARD(kms_buf_put(b, e->mr_enclave, 32));
    KMS_GUARD(kms_buf_put(b, zero, 32));
    KMS_GUARD(kms_buf_put(b, e->mr_signer, 32));
    KMS_GUARD(kms_buf_put(b, zero, 96));
    KMS_GUARD(kms_buf_put_u16le(b, e->isv_prod_id));
    KMS_GUARD(kms_buf_put_u16le(b, e->isv_svn));
    KMS_GUARD(kms_buf_put(b, zero, 60));
    KMS_GUARD(kms_buf_put(b, e->report_data, 64));
out:
    return rc;
}

/* v5 body: type and size (signed with the report); only the TD report types are TDX quotes. */
static int rd_v5_body(struct kms_reader *r, struct kms_tdx_quote *q)
{
    uint32_t size;
    uint32_t want;
    int rc = 0;

    KMS_GUARD(kms_rd_u16le(r, &q->body_type));
    KMS_ENSURE(q->body_type == KMS_TDX_BODY_TD10 || q->body_type == KMS_TDX_BODY_TD15,
               KMS_ERR_ATT_UNSUPPORTED,
               "TDX v5 quote body type %u is not supported (2 = TD report 1.0, 3 = TD report 1.5)",
               q->body_type);
    KMS_GUARD(kms_rd_u32le(r, &size));
    want = q->body_type == KMS_TDX_BODY_TD15 ? KMS_TDX_BODY15_LEN : KMS_TDX_BODY_LEN;
    KMS_ENSURE(size == want, KMS_ERR_ATT_FORMAT, "TDX v5 quote body type %u has size %u, want %u",
               q->body_type, size, want);
out:
    return rc;
}

static int parse_inner(struct kms_reader *r, struct kms_tdx_quote *q)
{
    struct kms_reader auth;
    struct kms_reader cert;
    const uint8_t *p;
    uint32_t auth_len;
    uint32_t cert_len;
    uint16_t cert_type;
    uint16_t qe_auth_len;
    uint8_t user_data[20];
    int rc = 0;

    KMS_GUARD(kms_rd_u16le(r, &q->version));
    KMS_ENSURE(q->version == 4 || q->version == 5,
               q->version == 3 ? KMS_ERR_ATT_FORMAT : KMS_ERR_ATT_UNSUPPORTED,
               "TDX quote version %u is not supported (only 4 and 5)", q->version);
    KMS_GUARD(kms_rd_u16le(r, &q->att_key_type));
    KMS_ENSURE(q->att_key_type == TDX_ATT_KEY_ECDSA_P256, KMS_ERR_ATT_UNSUPPORTED,
               "TDX quote attestation key type %u is not supported (only ECDSA P-256)",
               q->att_key_type);
    KMS_GUARD(kms_rd_u32le(r, &q->tee_type));
    KMS_ENSURE(q->tee_type == TDX_TEE_TYPE, KMS_ERR_ATT_FORMAT,
               "quote TEE type 0x%x is not TDX (0x81)", q->tee_type);
    KMS_GUARD(kms_rd_u16le(r, &q->qe_svn));
    KMS_GUARD(kms_rd_u16le(r, &q->pce_svn));
    KMS_GUARD(kms_rd_copy(r, q->qe_vendor_id, 16));
    KMS_GUARD(kms_rd_copy(r, user_data, 20));
    q->body_type = KMS_TDX_BODY_TD10;
    if (q->version == 5)
        KMS_GUARD(rd_v5_body(r, q));
    KMS_GUARD(rd_report(r, &q->report));
    if (q->body_type == KMS_TDX_BODY_TD15) {
        KMS_GUARD(kms_rd_copy(r, q->tee_tcb_svn2, 16));
        KMS_GUARD(kms_rd_copy(r, q->mr_service_td, 48));
    }
    q->signed_data = r->p;
    q->signed_len = r->off;

    /* Authentication data (v5 uses the v4 layout). As dcap-qvl reads it, each length-prefixed
     * container is decoded from its own bytes and what follows its last field is ignored. */
    KMS_GUARD(kms_rd_u32le(r, &auth_len));
    KMS_GUARD(kms_rd_ptr(r, auth_len, &p));
    kms_rd_init(&auth, p, auth_len);
    KMS_GUARD(kms_rd_ptr(&auth, 64, &q->sig));
    KMS_GUARD(kms_rd_ptr(&auth, 64, &q->attest_key));
    KMS_GUARD(kms_rd_u16le(&auth, &cert_type)); /* 6 (QE report) by Intel's spec; not checked */
    KMS_GUARD(kms_rd_u32le(&auth, &cert_len));
    KMS_GUARD(kms_rd_ptr(&auth, cert_len, &p));

    kms_rd_init(&cert, p, cert_len);
    KMS_GUARD(kms_rd_ptr(&cert, KMS_TDX_QE_REPORT_LEN, &q->qe_report));
    KMS_GUARD(rd_qe_report(q->qe_report, &q->qe));
    KMS_GUARD(kms_rd_ptr(&cert, 64, &q->qe_report_sig));
    KMS_GUARD(kms_rd_u16le(&cert, &qe_auth_len));
    q->qe_auth_len = qe_auth_len;
    KMS_GUARD(kms_rd_ptr(&cert, q->qe_auth_len, &q->qe_auth));
    KMS_GUARD(kms_rd_u16le(&cert, &cert_type));
    KMS_GUARD(kms_rd_u32le(&cert, &cert_len));
    KMS_ENSURE(cert_len <= TDX_MAX_DATA_LEN, KMS_ERR_ATT_FORMAT,
               "PCK certification data of %u bytes is too large", cert_len);
    q->pck_chain_len = cert_len;
    KMS_GUARD(kms_rd_ptr(&cert, q->pck_chain_len, &q->pck_chain));
    KMS_ENSURE(cert_type == CERT_TYPE_PCK_CHAIN, KMS_ERR_ATT_UNSUPPORTED,
               "Unsupported DCAP PCK cert format: %u (want 5, PCK certificate chain)", cert_type);
out:
    return rc;
}

int kms_tdx_quote_parse(const uint8_t *p, size_t len, struct kms_tdx_quote *q)
{
    struct kms_reader r;
    int rc;

    memset(q, 0, sizeof(*q));
    if (len > KMS_ATT_MAX_FIELD)
        return kms_err_set(KMS_ERR_ATT_FORMAT, "TDX quote of %zu bytes is too large", len);
    kms_rd_init(&r, p, len);
    rc = parse_inner(&r, q);
    if (rc == KMS_ERR_PARSE)
        rc = kms_err_wrap(KMS_ERR_ATT_FORMAT, "TDX quote");
    return rc;
}

/* ------------------------------------------------------------------------- TD attributes */

int kms_tdx_check_attributes(const struct kms_tdx_quote *q)
{
    static const uint8_t zero[48];
    const uint8_t *a = q->report.td_attributes;
    /* the fields as dcap-qvl's TDAttributes::parse splits them (TDX module spec A.3.4); its
     * OTHER "reserved" mask is bits 38:32 and 63:40, so bit 39 is allowed and bit 63 (PERFMON)
     * is refused, and we keep that */
    uint32_t sec_reserved = (uint32_t)(a[3] & 0x0fu) << 16 | (uint32_t)a[2] << 8 | a[1];
    uint32_t other_reserved =
        (uint32_t)a[7] << 24 | (uint32_t)a[6] << 16 | (uint32_t)a[5] << 8 | (a[4] & 0x7fu);
    int rc = 0;

    if (q->body_type == KMS_TDX_BODY_TD15)
        KMS_ENSURE(memcmp(q->mr_service_td, zero, 48) == 0, KMS_ERR_ATT_TCB,
                   "Invalid MR service TD");
    KMS_ENSURE((a[0] & 0xfeu) == 0, KMS_ERR_ATT_TCB, "Reserved bits in TD attributes are set");
    KMS_ENSURE((a[0] & 0x01u) == 0, KMS_ERR_ATT_TCB, "Debug mode is enabled");
    KMS_ENSURE(sec_reserved == 0 && (a[3] & 0x20u) == 0 && other_reserved == 0, KMS_ERR_ATT_TCB,
               "Reserved bits in TD attributes are set");
    KMS_ENSURE((a[3] & 0x10u) != 0, KMS_ERR_ATT_TCB, "SEPT_VE_DISABLE is not enabled");
out:
    return rc;
}

/* ------------------------------------------------------------------------------ PEM */

/* First occurrence of needle in [p, p + n), or NULL. */
static const uint8_t *find(const uint8_t *p, size_t n, const char *needle)
{
    size_t m = strlen(needle);

    for (size_t i = 0; m <= n && i <= n - m; i++) {
        if (memcmp(p + i, needle, m) == 0)
            return p + i;
    }
    return NULL;
}

static int is_ws(uint8_t c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static int b64_val(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Canonical padded base64 with whitespace skipped (the base64 crate's STANDARD engine, as
 * dcap-qvl's PEM reader uses it: padding required, unused bits of the last symbol zero).
 * *out (caller frees) holds *n bytes. */
static int b64_decode(const uint8_t *p, size_t len, uint8_t **out, size_t *n)
{
    uint8_t *sym = malloc(len + 1);
    uint8_t *dst = NULL;
    size_t ns = 0;
    size_t pad = 0;
    size_t o = 0;
    int rc = 0;

    *out = NULL;
    *n = 0;
    KMS_GUARD_PTR(sym);
    for (size_t i = 0; i < len; i++) {
        if (!is_ws(p[i]))
            sym[ns++] = p[i];
    }
    KMS_ENSURE(ns % 4 == 0, KMS_ERR_ATT_FORMAT, "base64 of %zu symbols is not padded", ns);
    while (pad < 2 && pad < ns && sym[ns - 1 - pad] == '=')
        pad++;
    dst = malloc(ns / 4 * 3 + 1);
    KMS_GUARD_PTR(dst);
    for (size_t i = 0; i < ns; i += 4) {
        int v[4];
        uint32_t w = 0;
        int last = i + 4 == ns;

        for (int j = 0; j < 4; j++) {
            v[j] = (last && (size_t)j >= 4 - pad) ? 0 : b64_val(sym[i + (size_t)j]);
            KMS_ENSURE(v[j] >= 0, KMS_ERR_ATT_FORMAT, "invalid base64 symbol at %zu",
                       i + (size_t)j);
            w = w << 6 | (uint32_t)v[j];
        }
        KMS_ENSURE(!last || pad == 0 || (pad == 1 ? (v[2] & 0x03) == 0 : (v[1] & 0x0f) == 0),
                   KMS_ERR_ATT_FORMAT, "non-canonical base64 (unused bits of the last symbol)");
        dst[o++] = (uint8_t)(w >> 16);
        if (!last || pad < 2)
            dst[o++] = (uint8_t)(w >> 8);
        if (!last || pad < 1)
            dst[o++] = (uint8_t)w;
    }
    *out = dst;
    *n = o;
    dst = NULL;
out:
    free(sym);
    free(dst);
    return rc;
}

/* One block's payload: base64 DER of exactly one certificate. */
static int pem_block_cert(const uint8_t *p, size_t len, X509 **out)
{
    const unsigned char *d;
    uint8_t *der = NULL;
    size_t n = 0;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(find(p, len, "\n\n") == NULL && find(p, len, "\r\n\r\n") == NULL, KMS_ERR_ATT_FORMAT,
               "has encapsulated headers or an empty line");
    KMS_GUARD(b64_decode(p, len, &der, &n));
    KMS_ENSURE(n > 0 && n <= INT_MAX, KMS_ERR_ATT_FORMAT, "is empty");
    d = der;
    *out = d2i_X509(NULL, &d, (long)n);
    KMS_ENSURE(*out != NULL && d == der + n, KMS_ERR_ATT_FORMAT,
               "is not exactly one DER certificate");
out:
    if (rc < 0) {
        X509_free(*out);
        *out = NULL;
    }
    ERR_clear_error();
    free(der);
    return rc;
}

int kms_tdx_pem_certs(const uint8_t *pem, size_t len, int max, STACK_OF(X509) * *out)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    const uint8_t *cur = pem;
    const uint8_t *end = pem + len;
    X509 *c = NULL;
    int idx = 0;
    int rc = 0;

    *out = NULL;
    KMS_GUARD_PTR(sk);
    for (;;) {
        const uint8_t *b = find(cur, (size_t)(end - cur), "-----BEGIN ");
        const uint8_t *lab;
        const uint8_t *lab_end;
        const uint8_t *data;
        const uint8_t *e;
        const uint8_t *elab;
        const uint8_t *elab_end;

        if (b == NULL)
            break;
        idx++;
        lab = b + 11;
        lab_end = find(lab, (size_t)(end - lab), "-----");
        KMS_ENSURE(lab_end != NULL, KMS_ERR_ATT_FORMAT, "PEM block %d has no end of its BEGIN line",
                   idx);
        data = lab_end + 5;
        e = find(data, (size_t)(end - data), "-----END ");
        KMS_ENSURE(e != NULL, KMS_ERR_ATT_FORMAT, "PEM block %d has no END line", idx);
        elab = e + 9;
        elab_end = find(elab, (size_t)(end - elab), "-----");
        KMS_ENSURE(elab_end != NULL, KMS_ERR_ATT_FORMAT, "PEM block %d has no end of its END line",
                   idx);
        KMS_ENSURE(lab_end > lab && lab_end - lab == elab_end - elab &&
                       memcmp(lab, elab, (size_t)(lab_end - lab)) == 0,
                   KMS_ERR_ATT_FORMAT, "PEM block %d has an empty or mismatched BEGIN/END label",
                   idx);
        while (data < e && is_ws(*data))
            data++;
        rc = pem_block_cert(data, (size_t)(e - data), &c);
        if (rc < 0) {
            rc = kms_err_wrap(KMS_ERR_ATT_FORMAT, "PEM block %d", idx);
            goto out;
        }
        KMS_ENSURE(sk_X509_num(sk) < max, KMS_ERR_TOOBIG, "more than %d PEM certificates", max);
        KMS_ENSURE(sk_X509_push(sk, c) > 0, KMS_ERR_NOMEM, "out of memory");
        c = NULL;
        cur = elab_end + 5;
    }
    *out = sk;
    sk = NULL;
out:
    X509_free(c);
    sk_X509_pop_free(sk, X509_free);
    return rc;
}

/* ------------------------------------------------------------------------------- crypto */

static int load_pck_chain(const struct kms_tdx_quote *q, STACK_OF(X509) * *out)
{
    int rc = 0;

    *out = NULL;
    rc = kms_tdx_pem_certs(q->pck_chain, q->pck_chain_len, PCK_CHAIN_MAX_CERTS, out);
    KMS_ENSURE(rc != KMS_ERR_TOOBIG, KMS_ERR_ATT_FORMAT, "PCK chain has more than %d certificates",
               PCK_CHAIN_MAX_CERTS);
    if (rc < 0) {
        if (rc == KMS_ERR_ATT_FORMAT)
            rc = kms_err_wrap(KMS_ERR_ATT_FORMAT, "PCK chain in the quote");
        goto out;
    }
    KMS_ENSURE(sk_X509_num(*out) > 0, KMS_ERR_ATT_FORMAT, "quote carries no PEM PCK certificate");
out:
    if (rc < 0) {
        sk_X509_pop_free(*out, X509_free);
        *out = NULL;
    }
    return rc;
}

/* PPID from the Intel SGX extension: SEQUENCE OF SEQUENCE { OID, value }, PPID = OCTET STRING
 * under sub-OID .1. Absent extension → empty PPID; a malformed one is a format error. */
static int extract_ppid(X509 *leaf, struct kms_verified *v)
{
    ASN1_OBJECT *ext_oid = OBJ_txt2obj(OID_SGX_EXT, 1);
    STACK_OF(ASN1_TYPE) *outer = NULL;
    STACK_OF(ASN1_TYPE) *inner = NULL;
    const unsigned char *p;
    ASN1_OCTET_STRING *data;
    X509_EXTENSION *ext;
    char oid[64];
    int idx;
    int rc = 0;

    v->ppid_len = 0;
    KMS_GUARD_PTR(ext_oid);
    idx = X509_get_ext_by_OBJ(leaf, ext_oid, -1);
    if (idx < 0)
        goto out;
    ext = X509_get_ext(leaf, idx);
    data = X509_EXTENSION_get_data(ext);
    p = ASN1_STRING_get0_data(data);
    outer = d2i_ASN1_SEQUENCE_ANY(NULL, &p, ASN1_STRING_length(data));
    KMS_ENSURE(outer != NULL, KMS_ERR_ATT_FORMAT, "malformed SGX extension in PCK certificate");
    for (int i = 0; i < sk_ASN1_TYPE_num(outer); i++) {
        ASN1_TYPE *t = sk_ASN1_TYPE_value(outer, i);
        ASN1_TYPE *k;
        ASN1_TYPE *val;

        if (t->type != V_ASN1_SEQUENCE)
            continue;
        p = ASN1_STRING_get0_data(t->value.sequence);
        inner = d2i_ASN1_SEQUENCE_ANY(NULL, &p, ASN1_STRING_length(t->value.sequence));
        KMS_ENSURE(inner != NULL && sk_ASN1_TYPE_num(inner) == 2, KMS_ERR_ATT_FORMAT,
                   "malformed SGX extension entry in PCK certificate");
        k = sk_ASN1_TYPE_value(inner, 0);
        val = sk_ASN1_TYPE_value(inner, 1);
        KMS_ENSURE(k->type == V_ASN1_OBJECT, KMS_ERR_ATT_FORMAT,
                   "malformed SGX extension entry in PCK certificate");
        if (OBJ_obj2txt(oid, sizeof(oid), k->value.object, 1) > 0 &&
            strcmp(oid, OID_SGX_PPID) == 0) {
            int n;

            KMS_ENSURE(val->type == V_ASN1_OCTET_STRING, KMS_ERR_ATT_FORMAT,
                       "PPID in PCK certificate is not an OCTET STRING");
            n = ASN1_STRING_length(val->value.octet_string);
            KMS_ENSURE(n >= 0 && (size_t)n <= sizeof(v->ppid), KMS_ERR_ATT_FORMAT,
                       "PPID of %d bytes is too long", n);
            memcpy(v->ppid, ASN1_STRING_get0_data(val->value.octet_string), (size_t)n);
            v->ppid_len = (size_t)n;
        }
        sk_ASN1_TYPE_pop_free(inner, ASN1_TYPE_free);
        inner = NULL;
    }
out:
    ERR_clear_error();
    sk_ASN1_TYPE_pop_free(inner, ASN1_TYPE_free);
    sk_ASN1_TYPE_pop_free(outer, ASN1_TYPE_free);
    ASN1_OBJECT_free(ext_oid);
    return rc;
}

int kms_tdx_quote_check_sigs(const uint8_t *quote, size_t len, struct kms_tdx_quote *q,
                             STACK_OF(X509) * *pck_certs)
{
    EVP_PKEY *ak = NULL;
    EVP_PKEY *pck_key;
    uint8_t h[32];
    int ok;
    int rc = 0;

    *pck_certs = NULL;
    KMS_GUARD(kms_tdx_quote_parse(quote, len, q));

    /* (a) the quote (header || TD report) is signed by the QE's attestation key */
    KMS_GUARD(kms_attest_p256_from_raw(q->attest_key, &ak));
    ok = kms_attest_ecdsa_p256_verify(ak, q->signed_data, q->signed_len, q->sig, 64);
    KMS_GUARD(ok);
    KMS_ENSURE(ok == 1, KMS_ERR_ATT_QUOTE_SIG,
               "TDX quote signature does not verify with the attestation key");

    /* (b) the QE report is signed by the PCK leaf */
    KMS_GUARD(load_pck_chain(q, pck_certs));
    pck_key = X509_get0_pubkey(sk_X509_value(*pck_certs, 0));
    KMS_ENSURE(pck_key != NULL && EVP_PKEY_is_a(pck_key, "EC"), KMS_ERR_ATT_FORMAT,
               "PCK certificate key is not an EC key");
    ok = kms_attest_ecdsa_p256_verify(pck_key, q->qe_report, KMS_TDX_QE_REPORT_LEN,
                                      q->qe_report_sig, 64);
    KMS_GUARD(ok);
    KMS_ENSURE(ok == 1, KMS_ERR_ATT_QE_SIG,
               "QE report signature does not verify with the PCK certificate key");

    /* (c) QE report_data[0..32] = sha256(attest_key || qe_auth_data) binds the attestation key;
     * as dcap-qvl, the auth data must be 32 bytes and the second half is not compared */
    KMS_ENSURE(q->qe_auth_len == KMS_TDX_QE_AUTH_LEN, KMS_ERR_ATT_FORMAT,
               "Invalid QE auth data length: %zu bytes, want %u", q->qe_auth_len,
               KMS_TDX_QE_AUTH_LEN);
    {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        int dok = m != NULL && EVP_DigestInit_ex(m, EVP_sha256(), NULL) == 1 &&
                  EVP_DigestUpdate(m, q->attest_key, 64) == 1 &&
                  EVP_DigestUpdate(m, q->qe_auth, q->qe_auth_len) == 1 &&
                  EVP_DigestFinal_ex(m, h, NULL) == 1;

        EVP_MD_CTX_free(m);
        KMS_ENSURE(dok, KMS_ERR_CRYPTO, "SHA-256 failed");
    }
    KMS_ENSURE(memcmp(q->qe.report_data, h, 32) == 0, KMS_ERR_ATT_QE_BINDING,
               "QE report data does not bind the attestation key and QE auth data");
out:
    if (rc < 0) {
        sk_X509_pop_free(*pck_certs, X509_free);
        *pck_certs = NULL;
    }
    EVP_PKEY_free(ak);
    return rc;
}

int kms_tdx_pck_chain(const struct kms_attest_ctx *ctx, STACK_OF(X509) * pck_certs,
                      STACK_OF(X509) * *chain, int *is_sim)
{
    STACK_OF(X509) *rest = sk_X509_dup(pck_certs);
    int rc = 0;

    *chain = NULL;
    *is_sim = 0;
    KMS_GUARD_PTR(rest);
    (void)sk_X509_shift(rest);
    KMS_GUARD(kms_attest_verify_chain_get(ctx, KMS_ROOT_TDX, sk_X509_value(pck_certs, 0), rest,
                                          "PCK chain", is_sim, chain));
out:
    sk_X509_free(rest);
    return rc;
}

int kms_tdx_quote_verify(const struct kms_attest_ctx *ctx, const uint8_t *quote, size_t len,
                         struct kms_verified *out)
{
    struct kms_tdx_quote q;
    STACK_OF(X509) *certs = NULL;
    STACK_OF(X509) *chain = NULL;
    int is_sim = 0;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    KMS_GUARD(kms_tdx_quote_check_sigs(quote, len, &q, &certs));
    /* (d) the PCK chain reaches a pinned Intel (or simulation) root */
    KMS_GUARD(kms_tdx_pck_chain(ctx, certs, &chain, &is_sim));
    KMS_GUARD(extract_ppid(sk_X509_value(chain, 0), out));
    KMS_GUARD(kms_tdx_check_attributes(&q));
    out->mode = KMS_ATT_TDX;
    out->sim = is_sim;
    out->td = q.report;
out:
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(certs, X509_free);
    return rc;
}
