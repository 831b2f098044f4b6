/*
 * vTPM evidence producer over tpm2-tss ESYS: an attestation key, quotes over the dstack PCR
 * policy sha256:0,2,14, PCR extend/read. (AK certificates for software TPMs: ak_cert.c.)
 */
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>

#include "attest/internal.h"
#include "attest/scale.h"
#include "attest/sim_files.h"
#include "attest/tpm.h"
#include "common/tpm.h"

#define VTPM_QUOTE_TRIES 4
#define VTPM_SIG_MAX 1024u

struct kms_vtpm {
    struct kms_tpm conn;
    ESYS_TR ak;
};

static const uint32_t policy_pcrs[3] = {0, 2, 14};

/* TPM failures of this producer are KMS_ERR_IO "TPM: <what> failed: ..." (KMS_TSS_GUARD). */

int kms_vtpm_available(void)
{
    return 0;
}

int kms_vtpm_open(const char *tcti, struct kms_vtpm **out)
{
    struct kms_vtpm *t = calloc(1, sizeof(*t));
    int rc = 0;

    *out = NULL;
    KMS_GUARD_PTR(t);
    t->ak = ESYS_TR_NONE;
    KMS_GUARD(kms_tpm_open(&t->conn, tcti, KMS_ERR_IO, NULL, NULL));
    *out = t;
    t = NULL;
out:
    kms_vtpm_free(t);
    return rc;
}

void kms_vtpm_free(struct kms_vtpm *t)
{
    if (t == NULL)
        return;
    if (t->conn.esys != NULL && t->ak != ESYS_TR_NONE)
        (void)Esys_FlushContext(t->conn.esys, t->ak);
    kms_tpm_close(&t->conn);
    free(t);
}

static void sha256_policy_selection(TPML_PCR_SELECTION *sel, uint32_t only)
{
    memset(sel, 0, sizeof(*sel));
    sel->count = 1;
    sel->pcrSelections[0].hash = TPM2_ALG_SHA256;
    sel->pcrSelections[0].sizeofSelect = 3;
    if (only != UINT32_MAX) {
        sel->pcrSelections[0].pcrSelect[only / 8] = (uint8_t)(1u << (only % 8));
        return;
    }
    for (size_t i = 0; i < 3; i++)
        sel->pcrSelections[0].pcrSelect[policy_pcrs[i] / 8] |=
            (uint8_t)(1u << (policy_pcrs[i] % 8));
}

/* TPM2B_PUBLIC of the AK → EVP_PKEY. */
static int public_to_pkey(const TPM2B_PUBLIC *pub, EVP_PKEY **out)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    BIGNUM *n = NULL, *e = NULL;
    uint8_t point[65];
    int rc = 0;

    *out = NULL;
    KMS_GUARD_PTR(bld);
    if (pub->publicArea.type == TPM2_ALG_ECC) {
        const TPMS_ECC_POINT *q = &pub->publicArea.unique.ecc;

        KMS_ENSURE(q->x.size <= 32 && q->y.size <= 32, KMS_ERR_CRYPTO,
                   "TPM: AK point coordinates exceed 32 bytes");
        memset(point, 0, sizeof(point));
        point[0] = 0x04;
        memcpy(point + 1 + 32 - q->x.size, q->x.buffer, q->x.size);
        memcpy(point + 33 + 32 - q->y.size, q->y.buffer, q->y.size);
        KMS_GUARD_OSSL(
            OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0),
            "OSSL_PARAM_BLD_push_utf8_string");
        KMS_GUARD_OSSL(
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)),
            "OSSL_PARAM_BLD_push_octet_string");
        pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    } else if (pub->publicArea.type == TPM2_ALG_RSA) {
        uint32_t exp = pub->publicArea.parameters.rsaDetail.exponent;

        n = BN_bin2bn(pub->publicArea.unique.rsa.buffer, pub->publicArea.unique.rsa.size, NULL);
        e = BN_new();
        KMS_GUARD_PTR(n);
        KMS_GUARD_PTR(e);
        KMS_GUARD_OSSL(BN_set_word(e, exp == 0 ? 65537u : exp), "BN_set_word");
        KMS_GUARD_OSSL(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n), "push n");
        KMS_GUARD_OSSL(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e), "push e");
        pctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    } else {
        rc = kms_err_set(KMS_ERR_CRYPTO, "TPM: AK type 0x%04x", pub->publicArea.type);
        goto out;
    }
    KMS_GUARD_PTR(pctx);
    params = OSSL_PARAM_BLD_to_param(bld);
    KMS_GUARD_PTR(params);
    KMS_GUARD_OSSL(EVP_PKEY_fromdata_init(pctx), "EVP_PKEY_fromdata_init");
    KMS_GUARD_OSSL(EVP_PKEY_fromdata(pctx, out, EVP_PKEY_PUBLIC_KEY, params), "EVP_PKEY_fromdata");
out:
    BN_free(n);
    BN_free(e);
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return rc;
}

int kms_vtpm_create_ak(struct kms_vtpm *t, enum kms_vtpm_ak_kind kind, EVP_PKEY **ak_pub)
{
    TPM2B_PUBLIC tmpl;
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR handle = ESYS_TR_NONE;
    int rc = 0;

    if (ak_pub != NULL)
        *ak_pub = NULL;
    kms_tpm_template_ak(&tmpl, kind == KMS_VTPM_AK_ECC ? KMS_TPM_AK_ECC_P256 : KMS_TPM_AK_RSA_2048);
    KMS_TSS_GUARD(
        kms_tpm_create_primary(t->conn.esys, ESYS_TR_RH_ENDORSEMENT, &tmpl, &handle, &pub),
        KMS_ERR_IO, NULL, "creating the attestation key (Esys_CreatePrimary)", NULL);
    if (ak_pub != NULL)
        KMS_GUARD(public_to_pkey(pub, ak_pub));
    if (t->ak != ESYS_TR_NONE)
        (void)Esys_FlushContext(t->conn.esys, t->ak);
    t->ak = handle;
    handle = ESYS_TR_NONE;
out:
    if (handle != ESYS_TR_NONE)
        (void)Esys_FlushContext(t->conn.esys, handle);
    Esys_Free(pub);
    return rc;
}

/* Reads the policy PCRs (or one PCR when only != UINT32_MAX) into vals (32 bytes each). */
static int pcr_read(struct kms_vtpm *t, uint32_t only, uint8_t vals[3][32], size_t *n)
{
    TPML_PCR_SELECTION sel;
    TPML_PCR_SELECTION *sel_out = NULL;
    TPML_DIGEST *digests = NULL;
    uint32_t counter = 0;
    size_t want = only == UINT32_MAX ? 3 : 1;
    int rc = 0;

    sha256_policy_selection(&sel, only);
    KMS_TSS_GUARD(Esys_PCR_Read(t->conn.esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &sel,
                                &counter, &sel_out, &digests),
                  KMS_ERR_IO, NULL, "Esys_PCR_Read", NULL);
    KMS_ENSURE(digests->count == want, KMS_ERR_IO,
               "TPM: PCR read returned %u values, want %zu (is the sha256 bank allocated?)",
               digests->count, want);
    for (size_t i = 0; i < want; i++) {
        KMS_ENSURE(digests->digests[i].size == 32, KMS_ERR_IO, "TPM: PCR value of %u bytes",
                   digests->digests[i].size);
        memcpy(vals[i], digests->digests[i].buffer, 32);
    }
    *n = want;
out:
    Esys_Free(sel_out);
    Esys_Free(digests);
    return rc;
}

int kms_vtpm_pcr_read(struct kms_vtpm *t, uint32_t pcr, uint8_t out[32])
{
    uint8_t vals[3][32];
    size_t n = 0;
    int rc = 0;

    KMS_ENSURE(pcr < 24, KMS_ERR_INVAL, "TPM: PCR %u out of range", pcr);
    KMS_GUARD(pcr_read(t, pcr, vals, &n));
    memcpy(out, vals[0], 32);
out:
    return rc;
}

int kms_vtpm_pcr_extend(struct kms_vtpm *t, uint32_t pcr, const uint8_t digest[32])
{
    TPML_DIGEST_VALUES dv;
    int rc = 0;

    KMS_ENSURE(pcr < 24, KMS_ERR_INVAL, "TPM: PCR %u out of range", pcr);
    memset(&dv, 0, sizeof(dv));
    dv.count = 1;
    dv.digests[0].hashAlg = TPM2_ALG_SHA256;
    memcpy(dv.digests[0].digest.sha256, digest, 32);
    KMS_TSS_GUARD(Esys_PCR_Extend(t->conn.esys, (ESYS_TR)(ESYS_TR_PCR0 + pcr), ESYS_TR_PASSWORD,
                                  ESYS_TR_NONE, ESYS_TR_NONE, &dv),
                  KMS_ERR_IO, NULL, "Esys_PCR_Extend", NULL);
out:
    return rc;
}

int kms_vtpm_quote(struct kms_vtpm *t, const uint8_t *qd, size_t qd_len, struct kms_tpm_quote *out)
{
    TPM2B_DATA qdata;
    TPMT_SIG_SCHEME scheme;
    TPML_PCR_SELECTION sel;
    TPM2B_ATTEST *quoted = NULL;
    TPMT_SIGNATURE *sig = NULL;
    struct kms_tpms_attest a;
    uint8_t vals[3][32];
    uint8_t digest[32];
    uint8_t sigbuf[VTPM_SIG_MAX];
    size_t sig_len = 0;
    size_t n = 0;
    int matched = 0;
    int rc = 0;

    KMS_ENSURE(t->ak != ESYS_TR_NONE, KMS_ERR_STATE, "TPM: no attestation key (create it first)");
    KMS_ENSURE(qd_len <= sizeof(qdata.buffer), KMS_ERR_INVAL,
               "TPM: qualifying data of %zu bytes exceeds %zu", qd_len, sizeof(qdata.buffer));
    memset(&qdata, 0, sizeof(qdata));
    qdata.size = (UINT16)qd_len;
    if (qd_len > 0)
        memcpy(qdata.buffer, qd, qd_len);
    memset(&scheme, 0, sizeof(scheme));
    scheme.scheme = TPM2_ALG_NULL; /* the AK's own scheme */
    sha256_policy_selection(&sel, UINT32_MAX);
    /* PCRs are read separately from the quote; retry if an extend slipped in between */
    for (int i = 0; i < VTPM_QUOTE_TRIES && !matched; i++) {
        Esys_Free(quoted);
        Esys_Free(sig);
        quoted = NULL;
        sig = NULL;
        KMS_GUARD(pcr_read(t, UINT32_MAX, vals, &n));
        KMS_TSS_GUARD(Esys_Quote(t->conn.esys, t->ak, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                 &qdata, &scheme, &sel, &quoted, &sig),
                      KMS_ERR_IO, NULL, "Esys_Quote", NULL);
        KMS_GUARD(kms_tpms_attest_parse(quoted->attestationData, quoted->size, &a));
        KMS_ENSURE(EVP_Digest(vals, sizeof(vals), digest, NULL, EVP_sha256(), NULL) == 1,
                   KMS_ERR_CRYPTO, "SHA-256 failed");
        matched = a.pcr_digest_len == 32 && memcmp(a.pcr_digest, digest, 32) == 0;
    }
    KMS_ENSURE(matched, KMS_ERR_STATE, "TPM: PCRs kept changing while quoting (%d tries)",
               VTPM_QUOTE_TRIES);
    KMS_TSS_GUARD(Tss2_MU_TPMT_SIGNATURE_Marshal(sig, sigbuf, sizeof(sigbuf), &sig_len), KMS_ERR_IO,
                  NULL, "marshalling TPMT_SIGNATURE", NULL);
    KMS_GUARD(kms_bytes_dup(&out->message, quoted->attestationData, quoted->size));
    KMS_GUARD(kms_bytes_dup(&out->signature, sigbuf, sig_len));
    out->pcrs = calloc(3, sizeof(*out->pcrs));
    KMS_GUARD_PTR(out->pcrs);
    out->n_pcrs = 3;
    for (size_t i = 0; i < 3; i++) {
        out->pcrs[i].index = policy_pcrs[i];
        out->pcrs[i].algorithm = strdup("sha256");
        KMS_GUARD_PTR(out->pcrs[i].algorithm);
        KMS_GUARD(kms_bytes_dup(&out->pcrs[i].value, vals[i], 32));
    }
    out->platform = 1;
out:
    if (rc < 0)
        kms_tpm_quote_clear(out);
    Esys_Free(quoted);
    Esys_Free(sig);
    return rc;
}

/* ---------------------------------------------------------------- GCP pre-provisioned AK */

#define GCP_NV_AK_RSA_CERT 0x01C10000u
#define GCP_NV_AK_RSA_TEMPLATE 0x01C10001u
#define GCP_NV_AK_ECC_CERT 0x01C10002u
#define GCP_NV_AK_ECC_TEMPLATE 0x01C10003u
#define NV_CHUNK 512u
#define NV_MAX (64u * 1024u)

/* Reads a whole NV index (owner authorization when OWNERREAD, else the index's own empty auth).
 * Caller frees *out. */
static int nv_read(struct kms_vtpm *t, uint32_t index, uint8_t **out, size_t *out_len)
{
    ESYS_TR nv = ESYS_TR_NONE;
    TPM2B_NV_PUBLIC *pub = NULL;
    TPM2B_NAME *name = NULL;
    TPM2B_MAX_NV_BUFFER *chunk = NULL;
    uint8_t *buf = NULL;
    size_t size = 0, off = 0;
    ESYS_TR auth;
    int rc = 0;

    *out = NULL;
    *out_len = 0;
    if (Esys_TR_FromTPMPublic(t->conn.esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nv) !=
        TSS2_RC_SUCCESS) {
        rc = kms_err_set(KMS_ERR_NOTFOUND, "TPM: NV index 0x%08x is not defined", index);
        goto out;
    }
    KMS_TSS_GUARD(
        Esys_NV_ReadPublic(t->conn.esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, &name),
        KMS_ERR_IO, NULL, "Esys_NV_ReadPublic", NULL);
    size = pub->nvPublic.dataSize;
    KMS_ENSURE(size > 0 && size <= NV_MAX, KMS_ERR_IO, "TPM: NV index 0x%08x holds %zu bytes",
               index, size);
    auth = (pub->nvPublic.attributes & TPMA_NV_OWNERREAD) != 0 ? ESYS_TR_RH_OWNER : nv;
    buf = malloc(size);
    KMS_GUARD_PTR(buf);
    while (off < size) {
        UINT16 n = (UINT16)(size - off < NV_CHUNK ? size - off : NV_CHUNK);

        KMS_TSS_GUARD(Esys_NV_Read(t->conn.esys, auth, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                   ESYS_TR_NONE, n, (UINT16)off, &chunk),
                      KMS_ERR_IO, NULL, "Esys_NV_Read", NULL);
        KMS_ENSURE(chunk->size == n, KMS_ERR_IO, "TPM: short NV read");
        memcpy(buf + off, chunk->buffer, n);
        off += n;
        Esys_Free(chunk);
        chunk = NULL;
    }
    *out = buf;
    *out_len = size;
    buf = NULL;
out:
    free(buf);
    Esys_Free(chunk);
    Esys_Free(pub);
    Esys_Free(name);
    if (nv != ESYS_TR_NONE)
        (void)Esys_TR_Close(t->conn.esys, &nv);
    return rc;
}

int kms_vtpm_load_gcp_ak(struct kms_vtpm *t, enum kms_vtpm_ak_kind kind, uint8_t **cert,
                         size_t *cert_len, EVP_PKEY **ak_pub)
{
    uint32_t tmpl_idx = kind == KMS_VTPM_AK_ECC ? GCP_NV_AK_ECC_TEMPLATE : GCP_NV_AK_RSA_TEMPLATE;
    uint32_t cert_idx = kind == KMS_VTPM_AK_ECC ? GCP_NV_AK_ECC_CERT : GCP_NV_AK_RSA_CERT;
    uint8_t *raw = NULL;
    size_t raw_len = 0, off = 0;
    TPM2B_PUBLIC tmpl;
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR handle = ESYS_TR_NONE;
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    const uint8_t *p;
    int rc = 0;

    *cert = NULL;
    *cert_len = 0;
    if (ak_pub != NULL)
        *ak_pub = NULL;
    memset(&tmpl, 0, sizeof(tmpl));
    KMS_GUARD(nv_read(t, tmpl_idx, &raw, &raw_len));
    /* the template is a marshalled TPMT_PUBLIC; accept a TPM2B_PUBLIC too */
    if (Tss2_MU_TPMT_PUBLIC_Unmarshal(raw, raw_len, &off, &tmpl.publicArea) != TSS2_RC_SUCCESS ||
        off != raw_len) {
        off = 0;
        memset(&tmpl, 0, sizeof(tmpl));
        KMS_ENSURE(Tss2_MU_TPM2B_PUBLIC_Unmarshal(raw, raw_len, &off, &tmpl) == TSS2_RC_SUCCESS &&
                       off == raw_len,
                   KMS_ERR_PARSE, "TPM: AK template in NV 0x%08x is not a TPMT_PUBLIC", tmpl_idx);
    }
    KMS_TSS_GUARD(
        kms_tpm_create_primary(t->conn.esys, ESYS_TR_RH_ENDORSEMENT, &tmpl, &handle, &pub),
        KMS_ERR_IO, NULL, "recreating the GCP AK from its NV template (Esys_CreatePrimary)", NULL);
    KMS_GUARD(public_to_pkey(pub, &key));
    KMS_GUARD(nv_read(t, cert_idx, cert, cert_len));
    p = *cert;
    x = d2i_X509(NULL, &p, (long)*cert_len);
    KMS_ENSURE(x != NULL, KMS_ERR_PARSE, "TPM: NV 0x%08x does not hold a DER certificate",
               cert_idx);
    /* NV may pad the certificate: keep only the DER */
    *cert_len = (size_t)(p - *cert);
    KMS_ENSURE(EVP_PKEY_eq(X509_get0_pubkey(x), key) == 1, KMS_ERR_STATE,
               "TPM: AK certificate in NV 0x%08x is for another key than the recreated AK",
               cert_idx);
    if (t->ak != ESYS_TR_NONE)
        (void)Esys_FlushContext(t->conn.esys, t->ak);
    t->ak = handle;
    handle = ESYS_TR_NONE;
    if (ak_pub != NULL) {
        *ak_pub = key;
        key = NULL;
    }
out:
    if (rc < 0) {
        ERR_clear_error();
        free(*cert);
        *cert = NULL;
        *cert_len = 0;
    }
    if (handle != ESYS_TR_NONE)
        (void)Esys_FlushContext(t->conn.esys, handle);
    X509_free(x);
    EVP_PKEY_free(key);
    free(raw);
    Esys_Free(pub);
    return rc;
}
