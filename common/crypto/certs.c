/*
 * Certificates shaped like rcgen 0.13 output (kms-reference.md §2.2): X.509 v3, ECDSA-SHA256,
 * DN O=<org> + CN as UTF8String, critical KeyUsage and BasicConstraints, optional EKU and SAN,
 * plus SubjectKeyIdentifier / AuthorityKeyIdentifier so OpenSSL builds chains by key id, and
 * the RA-TLS custom extensions (non-critical, written by attest/ratls.c).
 */
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto/crypto.h"

/* Hard limits on what we put in / accept. */
#define CERT_MAX_SAN 64u
#define CERT_MAX_NAME 1024u
#define CERT_PEM_MAX (8u * 1024u * 1024u) /* RA-TLS certs carry quotes and event logs */
#define CERT_SERIAL_LEN 20u               /* RFC 5280: at most 20 octets */
#define DEFAULT_DAYS 3650

/* 20 random bytes with the top bit clear: a positive INTEGER of at most 20 octets. */
static int set_serial(X509 *cert)
{
    uint8_t raw[CERT_SERIAL_LEN];
    BIGNUM *bn = NULL;
    int rc = 0;

    KMS_GUARD_OSSL(RAND_bytes(raw, sizeof(raw)), "random certificate serial");
    raw[0] &= 0x7f;
    raw[0] |= 0x01; /* never zero, keeps the full length */
    bn = BN_bin2bn(raw, sizeof(raw), NULL);
    KMS_GUARD_PTR(bn);
    KMS_ENSURE(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL, KMS_ERR_NOMEM,
               "out of memory");
out:
    BN_free(bn);
    return rc;
}

static int add_name_entry(X509_NAME *name, int nid, const char *value)
{
    size_t len = strnlen(value, CERT_MAX_NAME + 1);

    if (len == 0 || len > CERT_MAX_NAME)
        return kms_err_set(KMS_ERR_INVAL, "certificate name attribute must be 1..%u bytes",
                           CERT_MAX_NAME);
    /* rcgen writes &str values as UTF8String. */
    if (X509_NAME_add_entry_by_NID(name, nid, V_ASN1_UTF8STRING, (const unsigned char *)value,
                                   (int)len, -1, 0) != 1)
        return kms_err_ossl(KMS_ERR_CRYPTO, "certificate name attribute");
    return 0;
}

static int build_subject(const struct kms_cert_params *p, X509_NAME **out)
{
    X509_NAME *name = X509_NAME_new();
    int rc = 0;

    KMS_GUARD_PTR(name);
    if (p->org != NULL)
        KMS_GUARD(add_name_entry(name, NID_organizationName, p->org));
    KMS_GUARD(add_name_entry(name, NID_commonName, p->cn));
out:
    if (rc < 0) {
        X509_NAME_free(name);
        name = NULL;
    }
    *out = name;
    return rc;
}

/* Adds an extension from its internal (i2d-able) structure. */
static int add_ext_i2d(X509 *cert, int nid, void *value, int crit, const char *what)
{
    if (X509_add1_ext_i2d(cert, nid, value, crit, X509V3_ADD_REPLACE) != 1)
        return kms_err_ossl(KMS_ERR_CRYPTO, what);
    return 0;
}

static int add_san(X509 *cert, const struct kms_cert_params *p)
{
    GENERAL_NAMES *gens = NULL;
    int rc = 0;

    KMS_ENSURE(p->n_san <= CERT_MAX_SAN, KMS_ERR_TOOBIG, "more than %u SAN names", CERT_MAX_SAN);
    KMS_ENSURE(p->n_san == 0 || p->san_dns != NULL, KMS_ERR_INVAL, "SAN list missing");
    gens = GENERAL_NAMES_new();
    KMS_GUARD_PTR(gens);
    for (size_t i = 0; i < p->n_san; i++) {
        const char *dns = p->san_dns[i];
        size_t len = dns != NULL ? strnlen(dns, CERT_MAX_NAME + 1) : 0;
        ASN1_IA5STRING *ia5 = NULL;
        GENERAL_NAME *gen = NULL;

        KMS_ENSURE(len > 0 && len <= CERT_MAX_NAME, KMS_ERR_INVAL,
                   "SAN DNS name %zu must be 1..%u bytes", i, CERT_MAX_NAME);
        /* Like rcgen: a name that parses as an IP address becomes an iPAddress SAN. */
        {
            ASN1_OCTET_STRING *ip = a2i_IPADDRESS(dns);

            ERR_clear_error();
            if (ip != NULL) {
                gen = GENERAL_NAME_new();
                if (gen == NULL) {
                    ASN1_OCTET_STRING_free(ip);
                    rc = kms_err_set(KMS_ERR_NOMEM, "out of memory");
                    goto out;
                }
                GENERAL_NAME_set0_value(gen, GEN_IPADD, ip);
                if (sk_GENERAL_NAME_push(gens, gen) <= 0) {
                    GENERAL_NAME_free(gen);
                    rc = kms_err_set(KMS_ERR_NOMEM, "out of memory");
                    goto out;
                }
                continue;
            }
        }
        ia5 = ASN1_IA5STRING_new();
        KMS_GUARD_PTR(ia5);
        if (ASN1_STRING_set(ia5, dns, (int)len) != 1) {
            ASN1_IA5STRING_free(ia5);
            rc = kms_err_set(KMS_ERR_NOMEM, "out of memory");
            goto out;
        }
        gen = GENERAL_NAME_new();
        if (gen == NULL) {
            ASN1_IA5STRING_free(ia5);
            rc = kms_err_set(KMS_ERR_NOMEM, "out of memory");
            goto out;
        }
        GENERAL_NAME_set0_value(gen, GEN_DNS, ia5);
        if (sk_GENERAL_NAME_push(gens, gen) <= 0) {
            GENERAL_NAME_free(gen);
            rc = kms_err_set(KMS_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    /* rcgen marks SAN critical only when the subject is empty, which we never produce. */
    KMS_GUARD(add_ext_i2d(cert, NID_subject_alt_name, gens, 0, "subjectAltName extension"));
out:
    GENERAL_NAMES_free(gens);
    return rc;
}

static int add_key_usage(X509 *cert, int is_ca)
{
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    int rc = 0;

    KMS_GUARD_PTR(ku);
    /* bit 0 digitalSignature; CAs add 5 keyCertSign and 6 cRLSign */
    KMS_GUARD_OSSL(ASN1_BIT_STRING_set_bit(ku, 0, 1), "keyUsage bits");
    if (is_ca) {
        KMS_GUARD_OSSL(ASN1_BIT_STRING_set_bit(ku, 5, 1), "keyUsage bits");
        KMS_GUARD_OSSL(ASN1_BIT_STRING_set_bit(ku, 6, 1), "keyUsage bits");
    }
    KMS_GUARD(add_ext_i2d(cert, NID_key_usage, ku, 1, "keyUsage extension"));
out:
    ASN1_BIT_STRING_free(ku);
    return rc;
}

static int add_eku(X509 *cert, const struct kms_cert_params *p)
{
    EXTENDED_KEY_USAGE *eku = NULL;
    int rc = 0;

    if (!p->eku_server_auth && !p->eku_client_auth)
        return 0;
    eku = sk_ASN1_OBJECT_new_null();
    KMS_GUARD_PTR(eku);
    if (p->eku_server_auth)
        KMS_ENSURE(sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) > 0, KMS_ERR_NOMEM,
                   "out of memory");
    if (p->eku_client_auth)
        KMS_ENSURE(sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)) > 0, KMS_ERR_NOMEM,
                   "out of memory");
    KMS_GUARD(add_ext_i2d(cert, NID_ext_key_usage, eku, 0, "extendedKeyUsage extension"));
out:
    sk_ASN1_OBJECT_free(eku); /* objects from OBJ_nid2obj are static */
    return rc;
}

static int add_basic_constraints(X509 *cert, int path_len)
{
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    int rc = 0;

    KMS_GUARD_PTR(bc);
    bc->ca = 0xff;
    if (path_len >= 0) {
        bc->pathlen = ASN1_INTEGER_new();
        KMS_GUARD_PTR(bc->pathlen);
        KMS_GUARD_OSSL(ASN1_INTEGER_set(bc->pathlen, path_len), "pathLenConstraint");
    }
    KMS_GUARD(add_ext_i2d(cert, NID_basic_constraints, bc, 1, "basicConstraints extension"));
out:
    BASIC_CONSTRAINTS_free(bc);
    return rc;
}

/* RFC 5280 method 1: SHA-1 of the subjectPublicKey BIT STRING contents. */
static int key_id_of(const X509 *c, ASN1_OCTET_STRING **out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    ASN1_OCTET_STRING *oct = NULL;
    int rc = 0;

    *out = NULL;
    KMS_GUARD_OSSL(X509_pubkey_digest(c, EVP_sha1(), md, &mdlen), "key identifier digest");
    oct = ASN1_OCTET_STRING_new();
    KMS_GUARD_PTR(oct);
    KMS_GUARD_OSSL(ASN1_OCTET_STRING_set(oct, md, (int)mdlen), "key identifier");
    *out = oct;
    oct = NULL;
out:
    ASN1_OCTET_STRING_free(oct);
    return rc;
}

static int add_key_ids(X509 *cert, X509 *issuer_cert)
{
    ASN1_OCTET_STRING *ski = NULL;
    AUTHORITY_KEYID *akid = NULL;
    const ASN1_OCTET_STRING *issuer_ski;
    int rc = 0;

    KMS_GUARD(key_id_of(cert, &ski));
    KMS_GUARD(
        add_ext_i2d(cert, NID_subject_key_identifier, ski, 0, "subjectKeyIdentifier extension"));
    akid = AUTHORITY_KEYID_new();
    KMS_GUARD_PTR(akid);
    if (issuer_cert == NULL) {
        akid->keyid = ski;
        ski = NULL;
    } else {
        issuer_ski = X509_get0_subject_key_id(issuer_cert);
        if (issuer_ski != NULL) {
            akid->keyid = ASN1_OCTET_STRING_dup(issuer_ski);
            KMS_GUARD_PTR(akid->keyid);
        } else {
            KMS_GUARD(key_id_of(issuer_cert, &akid->keyid));
        }
    }
    KMS_GUARD(add_ext_i2d(cert, NID_authority_key_identifier, akid, 0,
                          "authorityKeyIdentifier extension"));
out:
    AUTHORITY_KEYID_free(akid);
    ASN1_OCTET_STRING_free(ski);
    return rc;
}

int kms_cert_issue(const struct kms_cert_params *p, EVP_PKEY *subject_key, EVP_PKEY *issuer_key,
                   X509 *issuer_cert, X509 **out)
{
    X509 *cert = NULL;
    X509_NAME *subject = NULL;
    time_t nb, na;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(p != NULL && p->cn != NULL && subject_key != NULL && issuer_key != NULL,
               KMS_ERR_INVAL,
               "certificate needs parameters with a CN, a subject key and an "
               "issuer key");
    KMS_ENSURE(p->app_id == NULL || p->app_id_len > 0, KMS_ERR_INVAL,
               "app id extension given with zero length");
    KMS_ENSURE(!p->is_ca || p->path_len >= -1, KMS_ERR_INVAL, "pathLen must be -1 or >= 0");
    if (issuer_cert == NULL) {
        /* self-signed: the signing key must be the subject key */
        KMS_ENSURE(EVP_PKEY_eq(subject_key, issuer_key) == 1, KMS_ERR_INVAL,
                   "self-signed certificate: issuer key differs from the subject key");
    } else {
        KMS_ENSURE(X509_check_private_key(issuer_cert, issuer_key) == 1, KMS_ERR_INVAL,
                   "issuer key does not match the issuer certificate");
    }
    ERR_clear_error();

    cert = X509_new();
    KMS_GUARD_PTR(cert);
    KMS_GUARD_OSSL(X509_set_version(cert, X509_VERSION_3), "certificate version");
    KMS_GUARD(set_serial(cert));
    KMS_GUARD(build_subject(p, &subject));
    KMS_GUARD_OSSL(X509_set_subject_name(cert, subject), "certificate subject");
    KMS_GUARD_OSSL(X509_set_issuer_name(
                       cert, issuer_cert != NULL ? X509_get_subject_name(issuer_cert) : subject),
                   "certificate issuer");
    nb = p->not_before != 0 ? p->not_before : time(NULL) - 3600;
    na = p->not_after != 0 ? p->not_after : nb + (time_t)DEFAULT_DAYS * 86400;
    KMS_ENSURE(na > nb, KMS_ERR_INVAL, "certificate not_after is not after not_before");
    /* ASN1_TIME_set picks UTCTime before 2050 and GeneralizedTime after, like rcgen. */
    KMS_ENSURE(ASN1_TIME_set(X509_getm_notBefore(cert), nb) != NULL, KMS_ERR_INVAL,
               "certificate not_before out of range");
    KMS_ENSURE(ASN1_TIME_set(X509_getm_notAfter(cert), na) != NULL, KMS_ERR_INVAL,
               "certificate not_after out of range");
    KMS_GUARD_OSSL(X509_set_pubkey(cert, subject_key), "certificate public key");

    /* rcgen's order: SAN, KeyUsage, EKU, key ids, BasicConstraints, custom extensions. */
    if (p->n_san > 0)
        KMS_GUARD(add_san(cert, p));
    KMS_GUARD(add_key_usage(cert, p->is_ca));
    KMS_GUARD(add_eku(cert, p));
    KMS_GUARD(add_key_ids(cert, issuer_cert));
    if (p->is_ca)
        KMS_GUARD(add_basic_constraints(cert, p->path_len));
    if (p->app_id != NULL)
        KMS_GUARD(kms_ratls_add_ext(cert, KMS_OID_APP_ID, p->app_id, p->app_id_len));
    if (p->usage != NULL)
        KMS_GUARD(kms_ratls_add_ext(cert, KMS_OID_CERT_USAGE, (const uint8_t *)p->usage,
                                    strnlen(p->usage, CERT_MAX_NAME)));
    if (p->att != NULL)
        KMS_GUARD(kms_ratls_add_attestation(cert, p->att));

    if (X509_sign(cert, issuer_key, EVP_sha256()) <= 0) {
        rc = kms_err_ossl(KMS_ERR_CRYPTO, "certificate signing failed");
        goto out;
    }
    *out = cert;
    cert = NULL;
out:
    X509_NAME_free(subject);
    X509_free(cert);
    return rc;
}

int kms_cert_to_pem(X509 *cert, char **pem)
{
    BIO *bio = NULL;
    BUF_MEM *mem = NULL;
    int rc = 0;

    *pem = NULL;
    KMS_ENSURE(cert != NULL, KMS_ERR_INVAL, "no certificate to encode");
    bio = BIO_new(BIO_s_mem());
    KMS_GUARD_PTR(bio);
    KMS_GUARD_OSSL(PEM_write_bio_X509(bio, cert), "certificate PEM encoding");
    BIO_get_mem_ptr(bio, &mem);
    KMS_ENSURE(mem != NULL && mem->length > 0, KMS_ERR_CRYPTO, "certificate PEM is empty");
    *pem = malloc(mem->length + 1);
    KMS_GUARD_PTR(*pem);
    memcpy(*pem, mem->data, mem->length);
    (*pem)[mem->length] = '\0';
out:
    BIO_free(bio);
    return rc;
}

int kms_cert_from_pem(const char *pem, X509 **out)
{
    BIO *bio = NULL;
    size_t len;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(pem != NULL, KMS_ERR_INVAL, "no certificate PEM given");
    len = strnlen(pem, CERT_PEM_MAX + 1);
    KMS_ENSURE(len <= CERT_PEM_MAX, KMS_ERR_TOOBIG, "certificate PEM exceeds %u bytes",
               CERT_PEM_MAX);
    bio = BIO_new_mem_buf(pem, (int)len);
    KMS_GUARD_PTR(bio);
    *out = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (*out == NULL) {
        rc = kms_err_ossl(KMS_ERR_PARSE, "no parsable PEM certificate");
        goto out;
    }
out:
    BIO_free(bio);
    return rc;
}

int kms_cert_signed_by(X509 *cert, EVP_PKEY *issuer_pub)
{
    int ok;

    if (cert == NULL || issuer_pub == NULL)
        return 0;
    ok = X509_verify(cert, issuer_pub) == 1;
    ERR_clear_error();
    return ok;
}
