/*
 * Collateral for the simulated TEE (attest.h, kms_sim_collateral): TCB info and QE identity
 * describing the platform sim.c simulates, signed by a simulation TCB signing certificate under
 * the simulation root, and CRLs from the simulation PCK CA and root. Tests and benchmarks use it
 * to exercise the production collateral verifier; nothing here is trusted in production.
 */
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "common/buf.h"
#include "common/file.h"
#include "common/hex.h"

#define PEM_MAX (64u * 1024u)
#define PATH_MAX_LEN 4096u
#define SIGNING_CN "kmsd SIMULATION TCB Signing \xe2\x80\x94 NOT FOR PRODUCTION"
#define SIM_NOT_BEFORE ((time_t)1577836800) /* as sim.c */
#define SIM_NOT_AFTER ((time_t)2524607999)

/* What sim.c puts in its PCK certificate and quotes (kept in step with sim.c). */
static const char sim_fmspc_hex[] = "90c06f000000";
static const uint8_t sim_svn[16] = {2, 2, 2, 2, 3, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0};
#define SIM_PCE_SVN 11u
#define SIM_QE_SVN 8u

static int path_of(char *buf, const char *dir, const char *name)
{
    int n = snprintf(buf, PATH_MAX_LEN, "%s/%s", dir, name);

    if (n < 0 || (size_t)n >= PATH_MAX_LEN)
        return kms_err_set(KMS_ERR_INVAL, "simulation directory path too long");
    return 0;
}

static int read_cert(const char *dir, const char *name, X509 **out)
{
    char path[PATH_MAX_LEN];
    uint8_t *pem = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    int rc = 0;

    *out = NULL;
    KMS_GUARD(path_of(path, dir, name));
    KMS_GUARD(kms_file_read(path, PEM_MAX, &pem, &len));
    bio = BIO_new_mem_buf(pem, (int)len);
    KMS_GUARD_PTR(bio);
    *out = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    ERR_clear_error();
    KMS_ENSURE(*out != NULL, KMS_ERR_PARSE, "%s is not a PEM certificate", path);
out:
    BIO_free(bio);
    free(pem);
    return rc;
}

static int read_key(const char *dir, const char *name, EVP_PKEY **out)
{
    char path[PATH_MAX_LEN];
    uint8_t *pem = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    int rc = 0;

    *out = NULL;
    KMS_GUARD(path_of(path, dir, name));
    KMS_GUARD(kms_file_read(path, PEM_MAX, &pem, &len));
    bio = BIO_new_mem_buf(pem, (int)len);
    KMS_GUARD_PTR(bio);
    *out = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    ERR_clear_error();
    KMS_ENSURE(*out != NULL, KMS_ERR_PARSE, "%s is not a PEM private key", path);
out:
    BIO_free(bio);
    kms_free_secret(pem, len);
    return rc;
}

static int pem_of(X509 *cert, struct kms_buf *out)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    long n;
    int rc = 0;

    KMS_GUARD_PTR(bio);
    KMS_GUARD_OSSL(PEM_write_bio_X509(bio, cert), "PEM_write_bio_X509");
    n = BIO_get_mem_data(bio, &data);
    KMS_ENSURE(n > 0, KMS_ERR_CRYPTO, "cannot encode certificate");
    KMS_GUARD(kms_buf_put(out, data, (size_t)n));
out:
    BIO_free(bio);
    return rc;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    int rc = 0;

    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return kms_err_ossl(KMS_ERR_CRYPTO, "X509V3_EXT_conf_nid");
    if (X509_add_ext(cert, ext, -1) != 1)
        rc = kms_err_ossl(KMS_ERR_CRYPTO, "X509_add_ext");
    X509_EXTENSION_free(ext);
    return rc;
}

/* The simulation TCB signing certificate, made once per directory. */
static int signing_cert(const char *dir, X509 *root, EVP_PKEY *root_key, X509 **cert,
                        EVP_PKEY **key)
{
    char path[PATH_MAX_LEN];
    X509 *c = NULL;
    X509_NAME *name = NULL;
    EVP_PKEY *k = NULL;
    BIO *bio = NULL;
    struct kms_buf pem = {0};
    char *data;
    long n;
    int rc = 0;

    *cert = NULL;
    *key = NULL;
    KMS_GUARD(path_of(path, dir, "sim-tcb-signing.pem"));
    if (kms_file_exists(path)) {
        KMS_GUARD(read_cert(dir, "sim-tcb-signing.pem", cert));
        KMS_GUARD(read_key(dir, "sim-tcb-signing.key", key));
        goto out;
    }
    k = EVP_EC_gen("P-256");
    c = X509_new();
    name = X509_NAME_new();
    KMS_GUARD_PTR(k);
    KMS_GUARD_PTR(c);
    KMS_GUARD_PTR(name);
    KMS_GUARD_OSSL(X509_set_version(c, X509_VERSION_3), "X509_set_version");
    KMS_GUARD_OSSL(ASN1_INTEGER_set(X509_get_serialNumber(c), 0x5ca1ab1e), "serial");
    KMS_GUARD_OSSL(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                              (const unsigned char *)SIGNING_CN, -1, -1, 0),
                   "X509_NAME_add_entry");
    KMS_GUARD_OSSL(X509_set_subject_name(c, name), "X509_set_subject_name");
    KMS_GUARD_OSSL(X509_set_issuer_name(c, X509_get_subject_name(root)), "X509_set_issuer_name");
    KMS_ENSURE(ASN1_TIME_set(X509_getm_notBefore(c), SIM_NOT_BEFORE) != NULL &&
                   ASN1_TIME_set(X509_getm_notAfter(c), SIM_NOT_AFTER) != NULL,
               KMS_ERR_CRYPTO, "cannot set validity");
    KMS_GUARD_OSSL(X509_set_pubkey(c, k), "X509_set_pubkey");
    KMS_GUARD(add_ext(c, root, NID_authority_key_identifier, "keyid:always"));
    KMS_GUARD(add_ext(c, root, NID_key_usage, "critical,digitalSignature,nonRepudiation"));
    KMS_GUARD(add_ext(c, root, NID_basic_constraints, "critical,CA:FALSE"));
    KMS_ENSURE(X509_sign(c, root_key, EVP_sha256()) > 0, KMS_ERR_CRYPTO,
               "cannot sign the simulation TCB signing certificate");
    bio = BIO_new(BIO_s_secmem());
    KMS_GUARD_PTR(bio);
    KMS_GUARD_OSSL(PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL),
                   "PEM_write_bio_PrivateKey");
    n = BIO_get_mem_data(bio, &data);
    KMS_GUARD(path_of(path, dir, "sim-tcb-signing.key"));
    KMS_GUARD(kms_file_write_atomic(path, data, (size_t)n, 0600));
    KMS_GUARD(pem_of(c, &pem));
    KMS_GUARD(path_of(path, dir, "sim-tcb-signing.pem"));
    KMS_GUARD(kms_file_write_atomic(path, pem.data, pem.len, 0644));
    *cert = c;
    *key = k;
    c = NULL;
    k = NULL;
out:
    BIO_free(bio);
    kms_buf_free(&pem);
    X509_NAME_free(name);
    X509_free(c);
    EVP_PKEY_free(k);
    return rc;
}

static int sign_rs(EVP_PKEY *key, const uint8_t *msg, size_t len, uint8_t out[64])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t der[80];
    size_t der_len = sizeof(der);
    const unsigned char *p = der;
    ECDSA_SIG *sig = NULL;
    const BIGNUM *r;
    const BIGNUM *s;
    int rc = 0;

    KMS_GUARD_PTR(md);
    KMS_GUARD_OSSL(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), "EVP_DigestSignInit");
    KMS_GUARD_OSSL(EVP_DigestSign(md, der, &der_len, msg, len), "EVP_DigestSign");
    sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    KMS_ENSURE(sig != NULL, KMS_ERR_CRYPTO, "cannot decode ECDSA signature");
    ECDSA_SIG_get0(sig, &r, &s);
    KMS_ENSURE(BN_bn2binpad(r, out, 32) == 32 && BN_bn2binpad(s, out + 32, 32) == 32,
               KMS_ERR_CRYPTO, "ECDSA signature component does not fit 32 bytes");
out:
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(md);
    return rc;
}

int kms_sim_sign_raw(const char *sim_dir, const char *name, const uint8_t *msg, size_t len,
                     uint8_t sig[64])
{
    EVP_PKEY *key = NULL;
    int rc = 0;

    KMS_GUARD(read_key(sim_dir, name, &key));
    KMS_GUARD(sign_rs(key, msg, len, sig));
out:
    EVP_PKEY_free(key);
    return rc;
}

/* DER CRL by issuer/key listing `revoked` (may be NULL). */
static int make_crl(X509 *issuer, EVP_PKEY *key, X509 *revoked, time_t this_update,
                    time_t next_update, struct kms_bytes *out)
{
    X509_CRL *crl = X509_CRL_new();
    X509_REVOKED *rev = NULL;
    ASN1_TIME *t = NULL;
    unsigned char *der = NULL;
    int der_len;
    int rc = 0;

    KMS_GUARD_PTR(crl);
    KMS_GUARD_OSSL(X509_CRL_set_version(crl, X509_CRL_VERSION_2), "X509_CRL_set_version");
    KMS_GUARD_OSSL(X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer)),
                   "X509_CRL_set_issuer_name");
    t = ASN1_TIME_set(NULL, this_update);
    KMS_GUARD_PTR(t);
    KMS_GUARD_OSSL(X509_CRL_set1_lastUpdate(crl, t), "X509_CRL_set1_lastUpdate");
    KMS_ENSURE(ASN1_TIME_set(t, next_update) != NULL, KMS_ERR_CRYPTO, "ASN1_TIME_set");
    KMS_GUARD_OSSL(X509_CRL_set1_nextUpdate(crl, t), "X509_CRL_set1_nextUpdate");
    if (revoked != NULL) {
        rev = X509_REVOKED_new();
        KMS_GUARD_PTR(rev);
        KMS_GUARD_OSSL(X509_REVOKED_set_serialNumber(rev, X509_get_serialNumber(revoked)),
                       "X509_REVOKED_set_serialNumber");
        KMS_ENSURE(ASN1_TIME_set(t, this_update) != NULL, KMS_ERR_CRYPTO, "ASN1_TIME_set");
        KMS_GUARD_OSSL(X509_REVOKED_set_revocationDate(rev, t), "X509_REVOKED_set_revocationDate");
        KMS_GUARD_OSSL(X509_CRL_add0_revoked(crl, rev), "X509_CRL_add0_revoked");
        rev = NULL;
    }
    KMS_GUARD_OSSL(X509_CRL_sort(crl), "X509_CRL_sort");
    KMS_ENSURE(X509_CRL_sign(crl, key, EVP_sha256()) > 0, KMS_ERR_CRYPTO, "cannot sign CRL");
    der_len = i2d_X509_CRL(crl, &der);
    KMS_ENSURE(der_len > 0, KMS_ERR_CRYPTO, "cannot encode CRL");
    out->p = malloc((size_t)der_len);
    KMS_GUARD_PTR(out->p);
    memcpy(out->p, der, (size_t)der_len);
    out->len = (size_t)der_len;
out:
    if (rc < 0)
        ERR_clear_error();
    OPENSSL_free(der);
    X509_REVOKED_free(rev);
    ASN1_TIME_free(t);
    X509_CRL_free(crl);
    return rc;
}

static void iso(time_t t, char out[32])
{
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int put_components(struct kms_buf *b, const uint8_t svn[16])
{
    char tmp[32];
    int rc = 0;

    KMS_GUARD(kms_buf_put_str(b, "["));
    for (int i = 0; i < 16; i++) {
        snprintf(tmp, sizeof(tmp), "%s{\"svn\":%u}", i > 0 ? "," : "", svn[i]);
        KMS_GUARD(kms_buf_put_str(b, tmp));
    }
    KMS_GUARD(kms_buf_put_str(b, "]"));
out:
    return rc;
}

static int signed_item(EVP_PKEY *key, struct kms_buf *text, char **out_text, struct kms_bytes *sig)
{
    int rc = 0;

    KMS_GUARD(kms_buf_put_u8(text, 0));
    sig->p = malloc(64);
    KMS_GUARD_PTR(sig->p);
    sig->len = 64;
    KMS_GUARD(sign_rs(key, text->data, text->len - 1, sig->p));
    *out_text = (char *)kms_buf_steal(text, NULL);
out:
    return rc;
}

int kms_sim_collateral(const char *sim_dir, const struct kms_sim_collateral_opts *o,
                       struct kms_collateral *out)
{
    struct kms_sim_collateral_opts d = {0};
    X509 *root = NULL;
    X509 *ca = NULL;
    X509 *pck = NULL;
    X509 *signer = NULL;
    EVP_PKEY *root_key = NULL;
    EVP_PKEY *ca_key = NULL;
    EVP_PKEY *signer_key = NULL;
    struct kms_buf b = {0};
    struct kms_buf chain = {0};
    uint8_t qe_signer[32];
    char qe_signer_hex[65];
    char t_issue[32];
    char t_next[32];
    char tmp[512];
    int rc = 0;

    memset(out, 0, sizeof(*out));
    if (o != NULL)
        d = *o;
    if (d.now == 0)
        d.now = time(NULL);
    if (d.issue_date == 0)
        d.issue_date = d.now - 3600;
    if (d.next_update == 0)
        d.next_update = d.now + 30 * 86400;
    if (d.crl_next_update == 0)
        d.crl_next_update = d.next_update;
    iso(d.issue_date, t_issue);
    iso(d.next_update, t_next);
    SHA256((const uint8_t *)"kmsd-sim-qe-signer", 18, qe_signer); /* as sim.c's QE */
    kms_hex_encode(qe_signer, 32, qe_signer_hex);

    KMS_GUARD(read_cert(sim_dir, "sim-root.pem", &root));
    KMS_GUARD(read_cert(sim_dir, "sim-pck-ca.pem", &ca));
    KMS_GUARD(read_cert(sim_dir, "sim-pck.pem", &pck));
    KMS_GUARD(read_key(sim_dir, "sim-root.key", &root_key));
    KMS_GUARD(read_key(sim_dir, "sim-pck-ca.key", &ca_key));
    KMS_GUARD(signing_cert(sim_dir, root, root_key, &signer, &signer_key));

    /* TCB info v3 */
    snprintf(tmp, sizeof(tmp),
             "{\"id\":\"TDX\",\"version\":3,\"issueDate\":\"%s\",\"nextUpdate\":\"%s\","
             "\"fmspc\":\"%s\",\"pceId\":\"%s\",\"tcbType\":0,\"tcbEvaluationDataNumber\":17,"
             "\"tdxModule\":{\"mrsigner\":\"",
             t_issue, t_next, d.fmspc_hex != NULL ? d.fmspc_hex : sim_fmspc_hex,
             d.pce_id_hex != NULL ? d.pce_id_hex : "0000");
    KMS_GUARD(kms_buf_put_str(&b, tmp));
    for (int i = 0; i < 48; i++)
        KMS_GUARD(kms_buf_put_str(&b, "00"));
    KMS_GUARD(kms_buf_put_str(&b, "\",\"attributes\":\"0000000000000000\",\"attributesMask\":"
                                  "\"FFFFFFFFFFFFFFFF\"},\"tdxModuleIdentities\":"));
    if (d.module_identities_json != NULL) {
        KMS_GUARD(kms_buf_put_str(&b, d.module_identities_json));
    } else {
        KMS_GUARD(kms_buf_put_str(&b, "[{\"id\":\"TDX_02\",\"mrsigner\":\""));
        for (int i = 0; i < 48; i++)
            KMS_GUARD(kms_buf_put_str(&b, "00"));
        snprintf(tmp, sizeof(tmp),
                 "\",\"attributes\":\"0000000000000000\",\"attributesMask\":\"FFFFFFFFFFFFFFFF\","
                 "\"tcbLevels\":[{\"tcb\":{\"isvsvn\":%u},\"tcbDate\":\"%s\","
                 "\"tcbStatus\":\"UpToDate\"}]}]",
                 sim_svn[0], t_issue);
        KMS_GUARD(kms_buf_put_str(&b, tmp));
    }
    KMS_GUARD(kms_buf_put_str(&b, ",\"tcbLevels\":"));
    if (d.tcb_levels_json != NULL) {
        KMS_GUARD(kms_buf_put_str(&b, d.tcb_levels_json));
    } else {
        KMS_GUARD(kms_buf_put_str(&b, "[{\"tcb\":{\"sgxtcbcomponents\":"));
        KMS_GUARD(put_components(&b, sim_svn));
        snprintf(tmp, sizeof(tmp), ",\"pcesvn\":%u,\"tdxtcbcomponents\":", SIM_PCE_SVN);
        KMS_GUARD(kms_buf_put_str(&b, tmp));
        KMS_GUARD(put_components(&b, sim_svn));
        snprintf(tmp, sizeof(tmp), "},\"tcbDate\":\"%s\",\"tcbStatus\":\"UpToDate\"}]", t_issue);
        KMS_GUARD(kms_buf_put_str(&b, tmp));
    }
    KMS_GUARD(kms_buf_put_str(&b, "}"));
    KMS_GUARD(signed_item(signer_key, &b, &out->tcb_info, &out->tcb_info_signature));
    kms_buf_free(&b);

    /* QE identity v2 */
    snprintf(tmp, sizeof(tmp),
             "{\"id\":\"TD_QE\",\"version\":2,\"issueDate\":\"%s\",\"nextUpdate\":\"%s\","
             "\"tcbEvaluationDataNumber\":17,\"miscselect\":\"00000000\",\"miscselectMask\":"
             "\"FFFFFFFF\",\"attributes\":\"11000000000000000000000000000000\","
             "\"attributesMask\":\"FBFFFFFFFFFFFFFF0000000000000000\",\"mrsigner\":\"%s\","
             "\"isvprodid\":2,\"tcbLevels\":",
             t_issue, t_next, d.qe_mrsigner_hex != NULL ? d.qe_mrsigner_hex : qe_signer_hex);
    KMS_GUARD(kms_buf_put_str(&b, tmp));
    if (d.qe_tcb_levels_json != NULL) {
        KMS_GUARD(kms_buf_put_str(&b, d.qe_tcb_levels_json));
    } else {
        snprintf(tmp, sizeof(tmp),
                 "[{\"tcb\":{\"isvsvn\":%u},\"tcbDate\":\"%s\",\"tcbStatus\":\"UpToDate\"}]",
                 SIM_QE_SVN, t_issue);
        KMS_GUARD(kms_buf_put_str(&b, tmp));
    }
    KMS_GUARD(kms_buf_put_str(&b, "}"));
    KMS_GUARD(signed_item(signer_key, &b, &out->qe_identity, &out->qe_identity_signature));
    kms_buf_free(&b);

    /* issuer chains and CRLs */
    KMS_GUARD(pem_of(signer, &chain));
    KMS_GUARD(pem_of(root, &chain));
    KMS_GUARD(kms_buf_put_u8(&chain, 0));
    out->tcb_info_issuer_chain = strdup((const char *)chain.data);
    out->qe_identity_issuer_chain = strdup((const char *)chain.data);
    KMS_GUARD_PTR(out->tcb_info_issuer_chain);
    KMS_GUARD_PTR(out->qe_identity_issuer_chain);
    kms_buf_free(&chain);
    KMS_GUARD(pem_of(ca, &chain));
    KMS_GUARD(pem_of(root, &chain));
    KMS_GUARD(kms_buf_put_u8(&chain, 0));
    out->pck_crl_issuer_chain = (char *)kms_buf_steal(&chain, NULL);
    KMS_GUARD(make_crl(ca, ca_key, d.revoke_pck ? pck : NULL, d.issue_date, d.crl_next_update,
                       &out->pck_crl));
    KMS_GUARD(make_crl(root, root_key, d.revoke_pck_ca ? ca : NULL, d.issue_date,
                       d.crl_next_update, &out->root_ca_crl));
out:
    if (rc < 0)
        kms_collateral_clear(out);
    kms_buf_free(&b);
    kms_buf_free(&chain);
    X509_free(root);
    X509_free(ca);
    X509_free(pck);
    X509_free(signer);
    EVP_PKEY_free(root_key);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(signer_key);
    return rc;
}
