/*
 * The simulated TEE (DESIGN.md §5): a locally generated PCK chain
 *   sim-root (self-signed) → sim-pck-ca → sim-pck (carries the Intel SGX extension)
 * plus a QE attestation key, all in one directory, and a producer of real-format v4 TDX
 * quotes (attestation-reference.md §3.1) signed with them. The production verifier accepts
 * them only when sim-root.pem is configured as a simulation TDX root.
 *
 * Files: sim-root.pem/.key, sim-pck-ca.pem/.key, sim-pck.pem/.key, sim-ak.key (keys PEM,
 * 0600). Generation runs under an flock on <dir>/.lock and writes sim-root.pem last, so a
 * present sim-root.pem means a complete directory even when processes race.
 */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attest/events.h"
#include "attest/image.h"
#include "attest/internal.h"
#include "attest/scale.h"
#include "attest/sim.h"
#include "attest/sim_files.h"
#include "attest/tdx.h"
#include "common/buf.h"
#include "common/file.h"
#include "common/hex.h"

/* Validity of every simulation certificate: fixed, so evidence verifies with a pinned clock. */
#define SIM_NOT_BEFORE ((time_t)1577836800) /* 2020-01-01T00:00:00Z */
#define SIM_NOT_AFTER ((time_t)2524607999)  /* 2049-12-31T23:59:59Z */

/* Quote header constants (attestation-reference.md §3.1). */
#define SIM_QE_SVN 8u
#define SIM_PCE_SVN 11u
#define SIM_QE_AUTH_LEN 32u
static const uint8_t sim_qe_vendor_id[16] = {0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
                                             0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07};
/* FMSPC and TCB components placed in the simulated PCK certificate. */
static const uint8_t sim_fmspc[6] = {0x90, 0xc0, 0x6f, 0x00, 0x00, 0x00};
static const uint8_t sim_cpusvn[16] = {2, 2, 2, 2, 3, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0};
/* DER of 1.2.840.113741.1.13.1 (content octets only); sub-OIDs append one arc byte each. */
static const uint8_t sgx_ext_oid[9] = {0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01};

#define SIM_ROOT_CN "kmsd SIMULATION Root CA \xe2\x80\x94 NOT FOR PRODUCTION"
#define SIM_CA_CN "kmsd SIMULATION PCK Platform CA \xe2\x80\x94 NOT FOR PRODUCTION"
#define SIM_PCK_CN "kmsd SIMULATION PCK Certificate \xe2\x80\x94 NOT FOR PRODUCTION"

struct kms_sim {
    char *dir;
    char *root_path;
    X509 *root;
    EVP_PKEY *pck_key;  /* signs QE reports */
    EVP_PKEY *ak_key;   /* QE attestation key: signs quotes */
    uint8_t ak_pub[64]; /* X || Y */
    uint8_t *chain_pem; /* leaf, intermediate, root */
    size_t chain_len;
};

/* ---------------------------------------------------------------- small DER writer */

static int der_len(struct kms_buf *b, size_t n)
{
    int rc = 0;

    if (n < 0x80)
        return kms_buf_put_u8(b, (uint8_t)n);
    KMS_ENSURE(n <= 0xffff, KMS_ERR_TOOBIG, "DER element too large");
    if (n <= 0xff) {
        KMS_GUARD(kms_buf_put_u8(b, 0x81));
        KMS_GUARD(kms_buf_put_u8(b, (uint8_t)n));
    } else {
        KMS_GUARD(kms_buf_put_u8(b, 0x82));
        KMS_GUARD(kms_buf_put_u16be(b, (uint16_t)n));
    }
out:
    return rc;
}

static int der_tlv(struct kms_buf *b, uint8_t tag, const void *p, size_t n)
{
    int rc = 0;

    KMS_GUARD(kms_buf_put_u8(b, tag));
    KMS_GUARD(der_len(b, n));
    KMS_GUARD(kms_buf_put(b, p, n));
out:
    return rc;
}

/* SEQUENCE { OID sgx_ext_oid.arcs..., value-TLV } with value already DER-encoded. */
static int sgx_entry(struct kms_buf *b, const uint8_t *arcs, size_t n_arcs, const uint8_t *tlv,
                     size_t tlv_len)
{
    struct kms_buf e = {0};
    uint8_t oid[16];
    int rc = 0;

    memcpy(oid, sgx_ext_oid, sizeof(sgx_ext_oid));
    memcpy(oid + sizeof(sgx_ext_oid), arcs, n_arcs);
    KMS_GUARD(der_tlv(&e, 0x06, oid, sizeof(sgx_ext_oid) + n_arcs));
    KMS_GUARD(kms_buf_put(&e, tlv, tlv_len));
    KMS_GUARD(der_tlv(b, 0x30, e.data, e.len));
out:
    kms_buf_free(&e);
    return rc;
}

/* Intel SGX PCK extension value: PPID, TCB (comp SVNs, PCESVN, CPUSVN), PCE-ID, FMSPC, SGX type,
 * in the layout of real PCK certificates so the production parser reads it unchanged. */
static int sgx_extension_der(const uint8_t ppid[16], struct kms_buf *out)
{
    struct kms_buf tcb = {0};
    struct kms_buf seq = {0};
    struct kms_buf tmp = {0};
    uint8_t arcs[2];
    uint8_t v[3];
    int rc = 0;

    /* TCB: .2.1 .. .2.16 component SVNs, .2.17 PCESVN, .2.18 CPUSVN */
    for (uint8_t i = 0; i < 16; i++) {
        arcs[0] = 2;
        arcs[1] = (uint8_t)(i + 1);
        v[0] = 0x02;
        v[1] = 1;
        v[2] = sim_cpusvn[i];
        KMS_GUARD(sgx_entry(&tcb, arcs, 2, v, 3));
    }
    arcs[1] = 17;
    v[2] = (uint8_t)SIM_PCE_SVN;
    KMS_GUARD(sgx_entry(&tcb, arcs, 2, v, 3));
    arcs[1] = 18;
    KMS_GUARD(der_tlv(&tmp, 0x04, sim_cpusvn, sizeof(sim_cpusvn)));
    KMS_GUARD(sgx_entry(&tcb, arcs, 2, tmp.data, tmp.len));
    kms_buf_free(&tmp);

    arcs[0] = 1; /* PPID */
    KMS_GUARD(der_tlv(&tmp, 0x04, ppid, 16));
    KMS_GUARD(sgx_entry(&seq, arcs, 1, tmp.data, tmp.len));
    kms_buf_free(&tmp);
    arcs[0] = 2; /* TCB */
    KMS_GUARD(der_tlv(&tmp, 0x30, tcb.data, tcb.len));
    KMS_GUARD(sgx_entry(&seq, arcs, 1, tmp.data, tmp.len));
    kms_buf_free(&tmp);
    arcs[0] = 3; /* PCE-ID */
    KMS_GUARD(der_tlv(&tmp, 0x04, "\0\0", 2));
    KMS_GUARD(sgx_entry(&seq, arcs, 1, tmp.data, tmp.len));
    kms_buf_free(&tmp);
    arcs[0] = 4; /* FMSPC */
    KMS_GUARD(der_tlv(&tmp, 0x04, sim_fmspc, sizeof(sim_fmspc)));
    KMS_GUARD(sgx_entry(&seq, arcs, 1, tmp.data, tmp.len));
    kms_buf_free(&tmp);
    arcs[0] = 5; /* SGX type: Standard */
    KMS_GUARD(der_tlv(&tmp, 0x0a, "\0", 1));
    KMS_GUARD(sgx_entry(&seq, arcs, 1, tmp.data, tmp.len));
    KMS_GUARD(der_tlv(out, 0x30, seq.data, seq.len));
out:
    kms_buf_free(&tmp);
    kms_buf_free(&seq);
    kms_buf_free(&tcb);
    return rc;
}

/* ---------------------------------------------------------------- certificate generation */

static int add_sgx_ext(X509 *cert, const uint8_t ppid[16])
{
    struct kms_buf der = {0};
    ASN1_OBJECT *obj = NULL;
    ASN1_OCTET_STRING *os = NULL;
    X509_EXTENSION *ext = NULL;
    int rc = 0;

    KMS_GUARD(sgx_extension_der(ppid, &der));
    obj = OBJ_txt2obj("1.2.840.113741.1.13.1", 1);
    os = ASN1_OCTET_STRING_new();
    KMS_GUARD_PTR(obj);
    KMS_GUARD_PTR(os);
    KMS_GUARD_OSSL(ASN1_OCTET_STRING_set(os, der.data, (int)der.len), "ASN1_OCTET_STRING_set");
    ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, os);
    KMS_ENSURE(ext != NULL, KMS_ERR_CRYPTO, "cannot create the SGX extension");
    KMS_GUARD_OSSL(X509_add_ext(cert, ext, -1), "X509_add_ext");
out:
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(os);
    ASN1_OBJECT_free(obj);
    kms_buf_free(&der);
    return rc;
}

/* issuer == NULL: self-signed (issuer_key == key). kind: 0 root, 1 intermediate, 2 PCK leaf. */
static int make_cert(int kind, const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                     const uint8_t ppid[16], X509 **out)
{
    X509 *cert = X509_new();
    X509_NAME *name = X509_NAME_new();
    BIGNUM *serial = BN_new();
    int rc = 0;

    *out = NULL;
    KMS_GUARD_PTR(cert);
    KMS_GUARD_PTR(name);
    KMS_GUARD_PTR(serial);
    KMS_GUARD_OSSL(X509_set_version(cert, X509_VERSION_3), "X509_set_version");
    KMS_GUARD_OSSL(BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY), "BN_rand");
    KMS_ENSURE(BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert)) != NULL, KMS_ERR_CRYPTO,
               "cannot set serial number");
    KMS_GUARD_OSSL(
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0),
        "X509_NAME_add_entry");
    KMS_GUARD_OSSL(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                              (const unsigned char *)"kmsd simulation", -1, -1, 0),
                   "X509_NAME_add_entry");
    KMS_GUARD_OSSL(X509_set_subject_name(cert, name), "X509_set_subject_name");
    KMS_GUARD_OSSL(
        X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer) : name),
        "X509_set_issuer_name");
    KMS_ENSURE(ASN1_TIME_set(X509_getm_notBefore(cert), SIM_NOT_BEFORE) != NULL, KMS_ERR_CRYPTO,
               "cannot set notBefore");
    KMS_ENSURE(ASN1_TIME_set(X509_getm_notAfter(cert), SIM_NOT_AFTER) != NULL, KMS_ERR_CRYPTO,
               "cannot set notAfter");
    KMS_GUARD_OSSL(X509_set_pubkey(cert, key), "X509_set_pubkey");
    KMS_GUARD(
        kms_simf_add_ext(cert, issuer != NULL ? issuer : cert, NID_subject_key_identifier, "hash"));
    KMS_GUARD(kms_simf_add_ext(cert, issuer != NULL ? issuer : cert, NID_authority_key_identifier,
                               "keyid:always"));
    if (kind == 2) {
        KMS_GUARD(kms_simf_add_ext(cert, issuer, NID_key_usage,
                                   "critical,digitalSignature,nonRepudiation"));
        KMS_GUARD(kms_simf_add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE"));
        KMS_GUARD(add_sgx_ext(cert, ppid));
    } else {
        KMS_GUARD(kms_simf_add_ext(cert, issuer != NULL ? issuer : cert, NID_key_usage,
                                   "critical,keyCertSign,cRLSign"));
        KMS_GUARD(kms_simf_add_ext(cert, issuer != NULL ? issuer : cert, NID_basic_constraints,
                                   kind == 0 ? "critical,CA:TRUE,pathlen:1"
                                             : "critical,CA:TRUE,pathlen:0"));
    }
    KMS_ENSURE(X509_sign(cert, issuer_key, EVP_sha256()) > 0, KMS_ERR_CRYPTO,
               "cannot sign simulation certificate");
    *out = cert;
    cert = NULL;
out:
    if (rc < 0)
        ERR_clear_error();
    BN_free(serial);
    X509_NAME_free(name);
    X509_free(cert);
    return rc;
}

static int gen_key(EVP_PKEY **key)
{
    *key = EVP_EC_gen("P-256");
    if (*key == NULL)
        return kms_err_ossl(KMS_ERR_CRYPTO, "cannot generate a P-256 key");
    return 0;
}

/* Generates the whole directory content; sim-root.pem is written last. */
static int generate(const char *dir)
{
    EVP_PKEY *root_key = NULL;
    EVP_PKEY *ca_key = NULL;
    EVP_PKEY *pck_key = NULL;
    EVP_PKEY *ak_key = NULL;
    X509 *root = NULL;
    X509 *ca = NULL;
    X509 *pck = NULL;
    uint8_t ppid[16];
    int rc = 0;

    KMS_GUARD_OSSL(RAND_bytes(ppid, sizeof(ppid)), "RAND_bytes");
    KMS_GUARD(gen_key(&root_key));
    KMS_GUARD(gen_key(&ca_key));
    KMS_GUARD(gen_key(&pck_key));
    KMS_GUARD(gen_key(&ak_key));
    KMS_GUARD(make_cert(0, SIM_ROOT_CN, root_key, NULL, root_key, NULL, &root));
    KMS_GUARD(make_cert(1, SIM_CA_CN, ca_key, root, root_key, NULL, &ca));
    KMS_GUARD(make_cert(2, SIM_PCK_CN, pck_key, ca, ca_key, ppid, &pck));
    KMS_GUARD(kms_simf_write_key(dir, "sim-root.key", root_key));
    KMS_GUARD(kms_simf_write_key(dir, "sim-pck-ca.key", ca_key));
    KMS_GUARD(kms_simf_write_key(dir, "sim-pck.key", pck_key));
    KMS_GUARD(kms_simf_write_key(dir, "sim-ak.key", ak_key));
    KMS_GUARD(kms_simf_write_cert(dir, "sim-pck-ca.pem", ca, 0644));
    KMS_GUARD(kms_simf_write_cert(dir, "sim-pck.pem", pck, 0644));
    KMS_GUARD(kms_simf_write_cert(dir, "sim-root.pem", root, 0644));
out:
    X509_free(pck);
    X509_free(ca);
    X509_free(root);
    EVP_PKEY_free(ak_key);
    EVP_PKEY_free(pck_key);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(root_key);
    return rc;
}

/* Generates under an exclusive flock unless another process finished first. */
static int ensure_generated(const char *dir, const char *root_path)
{
    int fd = -1;
    int rc = 0;

    if (kms_file_exists(root_path))
        return 0;
    KMS_GUARD(kms_simf_lock(dir, ".lock", &fd));
    if (!kms_file_exists(root_path))
        KMS_GUARD(generate(dir));
out:
    if (fd >= 0)
        close(fd); /* releases the lock */
    return rc;
}

/* ---------------------------------------------------------------- loading */

static int load_cert_pem(const uint8_t *pem, size_t len, const char *name, X509 **out)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);

    *out = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (*out == NULL) {
        ERR_clear_error();
        return kms_err_set(KMS_ERR_PARSE, "%s is not a PEM certificate", name);
    }
    return 0;
}

static int load_key(const char *dir, const char *name, EVP_PKEY **out)
{
    int rc = kms_simf_read_key(dir, name, out);

    if (rc == 0 && !(EVP_PKEY_is_a(*out, "EC") && EVP_PKEY_get_bits(*out) == 256)) {
        EVP_PKEY_free(*out);
        *out = NULL;
        rc = kms_err_set(KMS_ERR_PARSE, "simulation key %s is not a P-256 key", name);
    }
    return rc;
}

static int ec_pub_xy(EVP_PKEY *key, uint8_t out[64])
{
    BIGNUM *x = NULL;
    BIGNUM *y = NULL;
    int rc = 0;

    KMS_GUARD_OSSL(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x), "EC public X");
    KMS_GUARD_OSSL(EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y), "EC public Y");
    KMS_ENSURE(BN_bn2binpad(x, out, 32) == 32 && BN_bn2binpad(y, out + 32, 32) == 32,
               KMS_ERR_CRYPTO, "EC public key does not fit 32 bytes");
out:
    BN_free(x);
    BN_free(y);
    return rc;
}

int kms_sim_open(const char *dir, struct kms_sim **out)
{
    struct kms_sim *sim = NULL;
    struct kms_buf chain = {0};
    static const char *const chain_files[3] = {"sim-pck.pem", "sim-pck-ca.pem", "sim-root.pem"};
    char path[KMS_SIMF_PATH_MAX];
    uint8_t *pem = NULL;
    size_t len = 0;
    X509 *cert = NULL;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(dir != NULL && dir[0] != '\0', KMS_ERR_INVAL, "no simulation directory given");
    KMS_GUARD(kms_simf_path(path, dir, "sim-root.pem"));
    KMS_GUARD(kms_mkdir_p(dir, 0700));
    KMS_GUARD(ensure_generated(dir, path));
    KMS_GUARD(kms_sim_write_image_manifest(dir)); /* osimage: its image's measurements */
    sim = calloc(1, sizeof(*sim));
    KMS_GUARD_PTR(sim);
    sim->dir = strdup(dir);
    sim->root_path = strdup(path);
    KMS_GUARD_PTR(sim->dir);
    KMS_GUARD_PTR(sim->root_path);
    for (int i = 0; i < 3; i++) {
        KMS_GUARD(kms_simf_read(dir, chain_files[i], &pem, &len));
        /* Parse each to fail early on a damaged directory. */
        KMS_GUARD(load_cert_pem(pem, len, chain_files[i], &cert));
        if (i == 2) {
            sim->root = cert;
            cert = NULL;
        }
        X509_free(cert);
        cert = NULL;
        KMS_GUARD(kms_buf_put(&chain, pem, len));
        free(pem);
        pem = NULL;
    }
    KMS_GUARD(load_key(dir, "sim-pck.key", &sim->pck_key));
    KMS_GUARD(load_key(dir, "sim-ak.key", &sim->ak_key));
    KMS_GUARD(ec_pub_xy(sim->ak_key, sim->ak_pub));
    sim->chain_pem = kms_buf_steal(&chain, &sim->chain_len);
    *out = sim;
    sim = NULL;
out:
    if (rc < 0)
        rc = kms_err_wrap(rc, "simulation directory %s", dir != NULL ? dir : "");
    free(pem);
    X509_free(cert);
    kms_buf_free(&chain);
    kms_sim_free(sim);
    return rc;
}

void kms_sim_free(struct kms_sim *sim)
{
    if (sim == NULL)
        return;
    free(sim->dir);
    free(sim->root_path);
    X509_free(sim->root);
    EVP_PKEY_free(sim->pck_key);
    EVP_PKEY_free(sim->ak_key);
    free(sim->chain_pem);
    free(sim);
}

X509 *kms_sim_root(const struct kms_sim *sim)
{
    return sim->root;
}

const char *kms_sim_root_path(const struct kms_sim *sim)
{
    return sim->root_path;
}

/* ---------------------------------------------------------------- quotes */

static int put_report(struct kms_buf *b, const struct kms_tdx_report *t)
{
    int rc = 0;

    KMS_GUARD(kms_buf_put(b, t->tee_tcb_svn, 16));
    KMS_GUARD(kms_buf_put(b, t->mr_seam, 48));
    KMS_GUARD(kms_buf_put(b, t->mr_signer_seam, 48));
    KMS_GUARD(kms_buf_put(b, t->seam_attributes, 8));
    KMS_GUARD(kms_buf_put(b, t->td_attributes, 8));
    KMS_GUARD(kms_buf_put(b, t->xfam, 8));
    KMS_GUARD(kms_buf_put(b, t->mr_td, 48));
    KMS_GUARD(kms_buf_put(b, t->mr_config_id, 48));
    KMS_GUARD(kms_buf_put(b, t->mr_owner, 48));
    KMS_GUARD(kms_buf_put(b, t->mr_owner_config, 48));
    for (int i = 0; i < 4; i++)
        KMS_GUARD(kms_buf_put(b, t->rtmr[i], 48));
    KMS_GUARD(kms_buf_put(b, t->report_data, 64));
out:
    return rc;
}

/* 384-byte SGX report body of the simulated QE; report_data binds the attestation key. */
static int qe_report(const struct kms_sim *sim, const uint8_t qe_auth[SIM_QE_AUTH_LEN],
                     uint8_t rep[KMS_TDX_QE_REPORT_LEN])
{
    static const char mr_enclave_tag[] = "kmsd-sim-qe";
    static const char mr_signer_tag[] = "kmsd-sim-qe-signer";
    struct kms_tdx_qe_report e;
    struct kms_buf b = {0};
    uint8_t bind[64 + SIM_QE_AUTH_LEN];
    int rc = 0;

    memset(&e, 0, sizeof(e));
    memcpy(e.cpu_svn, sim_cpusvn, 16);
    e.attributes[0] = 0x11; /* INIT|MODE64BIT */
    SHA256((const uint8_t *)mr_enclave_tag, strlen(mr_enclave_tag), e.mr_enclave);
    SHA256((const uint8_t *)mr_signer_tag, strlen(mr_signer_tag), e.mr_signer);
    e.isv_prod_id = 2; /* TDX QE */
    e.isv_svn = (uint16_t)SIM_QE_SVN;
    /* report_data = sha256(ak || qe_auth) || 0^32 */
    memcpy(bind, sim->ak_pub, sizeof(sim->ak_pub));
    memcpy(bind + sizeof(sim->ak_pub), qe_auth, SIM_QE_AUTH_LEN);
    SHA256(bind, sizeof(bind), e.report_data);
    KMS_GUARD(kms_tdx_qe_report_put(&b, &e));
    KMS_ENSURE(b.len == KMS_TDX_QE_REPORT_LEN, KMS_ERR_INTERNAL,
               "simulated QE report has %zu bytes", b.len);
    memcpy(rep, b.data, KMS_TDX_QE_REPORT_LEN);
out:
    kms_buf_free(&b);
    return rc;
}

int kms_sim_quote(const struct kms_sim *sim, const struct kms_tdx_report *report, uint8_t **quote,
                  size_t *len)
{
    struct kms_buf q = {0};
    uint8_t sig[64];
    uint8_t qe_rep[KMS_TDX_QE_REPORT_LEN];
    uint8_t qe_sig[64];
    uint8_t qe_auth[SIM_QE_AUTH_LEN];
    uint8_t user_data[20];
    size_t cert6_len;
    size_t auth_len;
    int rc = 0;

    *quote = NULL;
    *len = 0;
    KMS_ENSURE(sim != NULL && report != NULL, KMS_ERR_INVAL, "kms_sim_quote: invalid argument");
    for (size_t i = 0; i < sizeof(qe_auth); i++)
        qe_auth[i] = (uint8_t)i;
    memset(user_data, 0, sizeof(user_data));
    memcpy(user_data, "kmsd-sim-qe-id", 14);

    /* Header (48) */
    KMS_GUARD(kms_buf_put_u16le(&q, 4));
    KMS_GUARD(kms_buf_put_u16le(&q, 2));
    KMS_GUARD(kms_buf_put_u32le(&q, 0x81));
    KMS_GUARD(kms_buf_put_u16le(&q, (uint16_t)SIM_QE_SVN));
    KMS_GUARD(kms_buf_put_u16le(&q, (uint16_t)SIM_PCE_SVN));
    KMS_GUARD(kms_buf_put(&q, sim_qe_vendor_id, sizeof(sim_qe_vendor_id)));
    KMS_GUARD(kms_buf_put(&q, user_data, sizeof(user_data)));
    /* TD report body (584) */
    KMS_GUARD(put_report(&q, report));
    KMS_ENSURE(q.len == KMS_TDX_HEADER_LEN + KMS_TDX_BODY_LEN, KMS_ERR_INTERNAL,
               "simulated quote header/body has %zu bytes", q.len);
    KMS_GUARD(kms_simf_sign_rs(sim->ak_key, q.data, q.len, sig));

    KMS_GUARD(qe_report(sim, qe_auth, qe_rep));
    KMS_GUARD(kms_simf_sign_rs(sim->pck_key, qe_rep, sizeof(qe_rep), qe_sig));

    cert6_len = sizeof(qe_rep) + sizeof(qe_sig) + 2 + sizeof(qe_auth) + 2 + 4 + sim->chain_len;
    auth_len = sizeof(sig) + sizeof(sim->ak_pub) + 2 + 4 + cert6_len;
    KMS_ENSURE(auth_len <= UINT32_MAX, KMS_ERR_TOOBIG, "simulated quote too large");
    KMS_GUARD(kms_buf_put_u32le(&q, (uint32_t)auth_len));
    KMS_GUARD(kms_buf_put(&q, sig, sizeof(sig)));
    KMS_GUARD(kms_buf_put(&q, sim->ak_pub, sizeof(sim->ak_pub)));
    KMS_GUARD(kms_buf_put_u16le(&q, 6)); /* QE report certification data */
    KMS_GUARD(kms_buf_put_u32le(&q, (uint32_t)cert6_len));
    KMS_GUARD(kms_buf_put(&q, qe_rep, sizeof(qe_rep)));
    KMS_GUARD(kms_buf_put(&q, qe_sig, sizeof(qe_sig)));
    KMS_GUARD(kms_buf_put_u16le(&q, (uint16_t)sizeof(qe_auth)));
    KMS_GUARD(kms_buf_put(&q, qe_auth, sizeof(qe_auth)));
    KMS_GUARD(kms_buf_put_u16le(&q, 5)); /* PCK certificate chain, PEM */
    KMS_GUARD(kms_buf_put_u32le(&q, (uint32_t)sim->chain_len));
    KMS_GUARD(kms_buf_put(&q, sim->chain_pem, sim->chain_len));
    *quote = kms_buf_steal(&q, len);
out:
    kms_buf_free(&q);
    return rc;
}

/* ---------------------------------------------------------------- attestations */

static void sim_default(const char *tag, uint8_t out[48])
{
    SHA384((const uint8_t *)tag, strlen(tag), out);
}

int kms_sim_attest(const struct kms_sim *sim, const struct kms_sim_measurements *m,
                   const uint8_t report_data[64], const struct kms_runtime_event *events,
                   size_t n_events, const char *config, struct kms_attestation **out)
{
    static const uint8_t xfam[8] = {0xe7, 0x18, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00};
    struct kms_tdx_report rep;
    struct kms_attestation *att = NULL;
    uint8_t digest[48];
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(sim != NULL && report_data != NULL && (events != NULL || n_events == 0),
               KMS_ERR_INVAL, "kms_sim_attest: invalid argument");
    KMS_ENSURE(n_events <= KMS_ATT_MAX_EVENTS, KMS_ERR_TOOBIG, "too many runtime events (max %u)",
               KMS_ATT_MAX_EVENTS);
    for (size_t i = 0; i < n_events; i++)
        KMS_ENSURE(events[i].event != NULL &&
                       (events[i].payload.p != NULL || events[i].payload.len == 0),
                   KMS_ERR_INVAL, "runtime event %zu has no name", i);

    memset(&rep, 0, sizeof(rep));
    memcpy(rep.tee_tcb_svn, sim_cpusvn, sizeof(rep.tee_tcb_svn));
    sim_default("kmsd-sim-mrseam", rep.mr_seam);
    /* mr_signer_seam stays zero: the Intel TDX module (validate_tcb requires it). */
    memcpy(rep.xfam, xfam, sizeof(xfam));
    rep.td_attributes[3] = 0x10; /* SEPT_VE_DISABLE, as real guests (0000001000000000) */
    if (m != NULL && m->debug)
        rep.td_attributes[0] |= 0x01;
    if (m != NULL && m->mr_td != NULL)
        memcpy(rep.mr_td, m->mr_td, 48);
    else
        sim_default("kmsd-sim-mrtd", rep.mr_td);
    if (m != NULL && m->mr_config_id != NULL)
        memcpy(rep.mr_config_id, m->mr_config_id, 48);
    if (m != NULL && m->rtmr0 != NULL)
        memcpy(rep.rtmr[0], m->rtmr0, 48);
    else
        sim_default("kmsd-sim-rtmr0", rep.rtmr[0]);
    if (m != NULL && m->rtmr1 != NULL)
        memcpy(rep.rtmr[1], m->rtmr1, 48);
    else
        sim_default("kmsd-sim-rtmr1", rep.rtmr[1]);
    if (m != NULL && m->rtmr2 != NULL)
        memcpy(rep.rtmr[2], m->rtmr2, 48);
    else
        sim_default("kmsd-sim-rtmr2", rep.rtmr[2]);
    kms_att_replay(1, events, n_events, NULL, rep.rtmr[3]);
    memcpy(rep.report_data, report_data, 64);

    att = calloc(1, sizeof(*att));
    KMS_GUARD_PTR(att);
    att->mode = KMS_ATT_TDX;
    memcpy(att->report_data, report_data, 64);
    att->config = strdup(config != NULL ? config : "");
    KMS_GUARD_PTR(att->config);
    KMS_GUARD(kms_sim_quote(sim, &rep, &att->tdx_quote.p, &att->tdx_quote.len));
    if (n_events > 0) {
        att->tdx_events = calloc(n_events, sizeof(*att->tdx_events));
        KMS_GUARD_PTR(att->tdx_events);
    }
    for (size_t i = 0; i < n_events; i++) {
        struct kms_tdx_event *te = &att->tdx_events[i];

        att->n_tdx_events = i + 1;
        te->imr = 3;
        te->event_type = KMS_EVENT_TYPE_RUNTIME;
        kms_att_event_digest(1, events[i].event, events[i].payload.p, events[i].payload.len,
                             digest);
        KMS_GUARD(kms_bytes_dup(&te->digest, digest, sizeof(digest)));
        te->event = strdup(events[i].event);
        KMS_GUARD_PTR(te->event);
        KMS_GUARD(kms_bytes_dup(&te->payload, events[i].payload.p, events[i].payload.len));
        KMS_GUARD(kms_att_add_runtime_event(att, events[i].event, events[i].payload.p,
                                            events[i].payload.len));
    }
    *out = att;
    att = NULL;
out:
    kms_att_free(att);
    return rc;
}

/* ---------------------------------------------------------------- its OS image (osimage) */

void kms_sim_os_image_hash(uint8_t out[32])
{
    SHA256((const uint8_t *)"kmsd-sim-os-image", 17, out);
}

int kms_sim_vm_config(char *buf, size_t len)
{
    uint8_t h[32];
    char hex[65];
    int n;

    kms_sim_os_image_hash(h);
    kms_hex_encode(h, 32, hex);
    n = snprintf(buf, len, "{\"os_image_hash\":\"%s\"}", hex);
    if (n < 0 || (size_t)n >= len)
        return kms_err_set(KMS_ERR_INVAL, "vm_config buffer too small");
    return 0;
}

int kms_sim_write_image_manifest(const char *dir)
{
    struct kms_image_mrs mrs;
    char sub[KMS_SIMF_PATH_MAX], path[KMS_SIMF_PATH_MAX], name[80], hex[65];
    uint8_t h[32];
    char *text = NULL;
    int rc = 0;

    kms_sim_os_image_hash(h);
    kms_hex_encode(h, 32, hex);
    snprintf(name, sizeof(name), "%s.json", hex);
    KMS_GUARD(kms_simf_path(sub, dir, KMS_IMAGE_SIM_SUBDIR));
    KMS_GUARD(kms_simf_path(path, sub, name));
    if (kms_file_exists(path))
        goto out;
    /* The defaults of kms_sim_attest; any VM shape. */
    sim_default("kmsd-sim-mrtd", mrs.mrtd);
    sim_default("kmsd-sim-rtmr0", mrs.rtmr[0]);
    sim_default("kmsd-sim-rtmr1", mrs.rtmr[1]);
    sim_default("kmsd-sim-rtmr2", mrs.rtmr[2]);
    KMS_GUARD(kms_image_manifest_build(NULL, h, "kmsd-sim", NULL, &mrs, &text));
    KMS_GUARD(kms_mkdir_p(sub, 0755)); /* not secret; readable by a node of another uid */
    KMS_GUARD(kms_file_write_atomic(path, text, strlen(text), 0644));
out:
    free(text);
    return rc;
}
