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

#include "attest/collateral.h"
#include "attest/internal.h"
#include "attest/sim_files.h"
#include "common/buf.h"
#include "common/file.h"
#include "common/hex.h"

#define SIGNING_CN "kmsd SIMULATION TCB Signing \xe2\x80\x94 NOT FOR PRODUCTION"
#define SIM_NOT_BEFORE ((time_t)1577836800) /* as sim.c */
#define SIM_NOT_AFTER ((time_t)2524607999)

/* What sim.c puts in its PCK certificate and quotes (kept in step with sim.c). */
static const char sim_fmspc_hex[] = "90c06f000000";
static const uint8_t sim_svn[16] = {2, 2, 2, 2, 3, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0};
#define SIM_PCE_SVN 11u
#define SIM_QE_SVN 8u

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

struct signer_issuer {
    X509 *root;
    EVP_PKEY *root_key;
};

/* A new simulation TCB signing certificate and key, issued by the simulation root. */
static int gen_signer(void *arg, X509 **cert, EVP_PKEY **key)
{
    const struct signer_issuer *is = arg;
    X509 *c = NULL;
    X509_NAME *name = NULL;
    EVP_PKEY *k = NULL;
    int rc = 0;

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
    KMS_GUARD_OSSL(X509_set_issuer_name(c, X509_get_subject_name(is->root)),
                   "X509_set_issuer_name");
    KMS_ENSURE(ASN1_TIME_set(X509_getm_notBefore(c), SIM_NOT_BEFORE) != NULL &&
                   ASN1_TIME_set(X509_getm_notAfter(c), SIM_NOT_AFTER) != NULL,
               KMS_ERR_CRYPTO, "cannot set validity");
    KMS_GUARD_OSSL(X509_set_pubkey(c, k), "X509_set_pubkey");
    KMS_GUARD(kms_simf_add_ext(c, is->root, NID_authority_key_identifier, "keyid:always"));
    KMS_GUARD(
        kms_simf_add_ext(c, is->root, NID_key_usage, "critical,digitalSignature,nonRepudiation"));
    KMS_GUARD(kms_simf_add_ext(c, is->root, NID_basic_constraints, "critical,CA:FALSE"));
    KMS_ENSURE(X509_sign(c, is->root_key, EVP_sha256()) > 0, KMS_ERR_CRYPTO,
               "cannot sign the simulation TCB signing certificate");
    *cert = c;
    *key = k;
    c = NULL;
    k = NULL;
out:
    X509_NAME_free(name);
    X509_free(c);
    EVP_PKEY_free(k);
    return rc;
}

/* The simulation TCB signing certificate, made once per directory. */
static int signing_cert(const char *dir, X509 *root, EVP_PKEY *root_key, X509 **cert,
                        EVP_PKEY **key)
{
    struct signer_issuer is = {root, root_key};
    struct kms_simf_pair pair = {
        .cert_name = "sim-tcb-signing.pem",
        .key_name = "sim-tcb-signing.key",
        .lock_name = ".tcb-lock",
        .cert_mode = 0644,
        .gen = gen_signer,
        .arg = &is,
    };

    return kms_simf_load_pair(dir, &pair, cert, key);
}

int kms_sim_sign_raw(const char *sim_dir, const char *name, const uint8_t *msg, size_t len,
                     uint8_t sig[64])
{
    EVP_PKEY *key = NULL;
    int rc = 0;

    KMS_GUARD(kms_simf_read_key(sim_dir, name, &key));
    KMS_GUARD(kms_simf_sign_rs(key, msg, len, sig));
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
    KMS_GUARD(kms_simf_sign_rs(key, text->data, text->len - 1, sig->p));
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

    KMS_GUARD(kms_simf_read_cert(sim_dir, "sim-root.pem", &root));
    KMS_GUARD(kms_simf_read_cert(sim_dir, "sim-pck-ca.pem", &ca));
    KMS_GUARD(kms_simf_read_cert(sim_dir, "sim-pck.pem", &pck));
    KMS_GUARD(kms_simf_read_key(sim_dir, "sim-root.key", &root_key));
    KMS_GUARD(kms_simf_read_key(sim_dir, "sim-pck-ca.key", &ca_key));
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
    KMS_GUARD(make_crl(root, root_key, d.revoke_pck_ca ? ca : NULL, d.issue_date, d.crl_next_update,
                       &out->root_ca_crl));
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
