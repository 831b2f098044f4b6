/*
 * SignCert (kms-reference.md §1.2, §4 "App CA cert" and "SignCert leaf"): an app sends a SCALE
 * CSR signed by its new key and carrying an attestation bound to that key; after the same
 * authorization as GetAppKey (boot-time MRs), the KMS returns [leaf, App CA, root CA].
 */
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/crypto/crypto.h"
#include "common/crypto/csr.h"
#include "node/http.h"
#include "node/node.h"
#include "node/sign_cert.h"

#define DEFAULT_VALIDITY_SECS (3650LL * 86400LL) /* the reference: now + 10 * 365 days */
#define MAX_CERT_TIME 253402300799ULL            /* 9999-12-31T23:59:59Z, the X.509 maximum */

void kms_sign_cert_result_clear(struct kms_sign_cert_result *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < 3; i++)
        free(r->chain[i]);
    kms_boot_info_free(&r->bi);
    memset(r, 0, sizeof(*r));
}

/* Moves the last extension (just appended) in front of the extension `before_oid`, so the
 * order is the reference's: app_id, app_info, usage, attestation. */
static int move_last_ext_before(X509 *cert, const char *before_oid)
{
    ASN1_OBJECT *obj = OBJ_txt2obj(before_oid, 1);
    X509_EXTENSION *ext = NULL;
    int loc, last;
    int rc = 0;

    KMS_GUARD_PTR(obj);
    last = X509_get_ext_count(cert) - 1;
    loc = X509_get_ext_by_OBJ(cert, obj, -1);
    if (loc < 0 || loc >= last)
        goto out; /* nothing to move in front of */
    ext = X509_delete_ext(cert, last);
    KMS_ENSURE(ext != NULL, KMS_ERR_INTERNAL, "cannot reorder certificate extensions");
    KMS_GUARD_OSSL(X509_add_ext(cert, ext, loc), "certificate extension reorder");
out:
    X509_EXTENSION_free(ext);
    ASN1_OBJECT_free(obj);
    return rc;
}

/* Adds what kms_cert_issue cannot express (an empty app_id ext, the app_info ext, a not_before
 * of exactly 0) and signs the certificate again with the issuer key. */
struct cert_fixups {
    int empty_app_id;
    const uint8_t *app_info;
    size_t app_info_len;
    int not_before_zero;
};

static int apply_fixups(X509 *cert, const struct cert_fixups *f, EVP_PKEY *issuer_key)
{
    int rc = 0;

    if (!f->empty_app_id && f->app_info == NULL && !f->not_before_zero)
        return 0;
    if (f->empty_app_id) {
        KMS_GUARD(kms_ratls_add_ext(cert, KMS_OID_APP_ID, NULL, 0));
        KMS_GUARD(move_last_ext_before(cert, KMS_OID_CERT_USAGE));
    }
    if (f->app_info != NULL) {
        KMS_GUARD(kms_ratls_add_ext(cert, KMS_OID_APP_INFO, f->app_info, f->app_info_len));
        KMS_GUARD(move_last_ext_before(cert, KMS_OID_CERT_USAGE));
    }
    if (f->not_before_zero)
        KMS_ENSURE(ASN1_TIME_set(X509_getm_notBefore(cert), 0) != NULL, KMS_ERR_INVAL,
                   "certificate not_before out of range");
    if (X509_sign(cert, issuer_key, EVP_sha256()) <= 0) {
        rc = kms_err_ossl(KMS_ERR_CRYPTO, "certificate signing failed");
        goto out;
    }
out:
    return rc;
}

/* App CA (derive_app_ca): O=Dstack, CN "Dstack App CA", CA pathLen 0, app_id, usage "app:ca",
 * signed by the root CA. */
static int issue_app_ca(struct kms_node *n, const struct kms_bytes *app_id, EVP_PKEY *ca_key,
                        X509 **out)
{
    struct kms_cert_params p;
    struct cert_fixups f;
    int rc = 0;

    memset(&p, 0, sizeof(p));
    memset(&f, 0, sizeof(f));
    p.org = "Dstack";
    p.cn = "Dstack App CA";
    p.is_ca = 1;
    p.path_len = 0;
    p.usage = "app:ca";
    if (app_id->len > 0) {
        p.app_id = app_id->p;
        p.app_id_len = app_id->len;
    } else {
        f.empty_app_id = 1;
    }
    KMS_GUARD(kms_cert_issue(&p, ca_key, n->keys.root_ca_key, n->keys.root_ca_cert, out));
    rc = apply_fixups(*out, &f, n->keys.root_ca_key);
out:
    if (rc < 0) {
        X509_free(*out);
        *out = NULL;
    }
    return rc;
}

/* AppInfo as decode_app_info(false) of the CSR attestation: full (runtime) replay, the
 * key-provider payload, vm_config from the attestation; instance-id from the events in every
 * mode; device_id = sha256("") because the reference decodes the unverified attestation. */
static int app_info_ext(struct kms_node *n, const struct kms_attestation *att,
                        const struct kms_verified *v, uint8_t **out, size_t *len)
{
    struct kms_boot_info ai;
    const struct kms_runtime_event *inst;
    uint8_t dev[32];
    int rc = 0;

    memset(&ai, 0, sizeof(ai));
    rc = kms_boot_info_derive(n->actx, att, v, NULL, 0, &ai);
    if (rc < 0) {
        rc = kms_err_wrap(rc, "decode app info");
        goto out;
    }
    inst = kms_att_find_event(att, "instance-id");
    SHA256((const unsigned char *)"", 0, dev);
    KMS_GUARD(kms_csr_app_info_msgpack(&ai, inst != NULL ? inst->payload.p : NULL,
                                       inst != NULL ? inst->payload.len : 0, dev, out, len));
out:
    kms_boot_info_free(&ai);
    return rc;
}

/* The leaf (CaCert::sign_csr): CSR key, subject/O/SAN/EKU/validity from the config, app_id,
 * app_info (ext_app_info), attestation (ext_quote), usage "app:custom"; signed by the App CA. */
static int issue_leaf(struct kms_node *n, const struct kms_csr *csr, const struct kms_verified *v,
                      const struct kms_bytes *app_id, EVP_PKEY *ca_key, X509 *ca_cert, X509 **out)
{
    const struct kms_csr_config *c = &csr->config;
    const unsigned char *q = csr->pubkey.p;
    struct kms_cert_params p;
    struct cert_fixups f;
    EVP_PKEY *pub = NULL;
    uint8_t *ai = NULL;
    size_t ai_len = 0;
    time_t now = time(NULL);
    int rc = 0;

    *out = NULL;
    memset(&p, 0, sizeof(p));
    memset(&f, 0, sizeof(f));
    pub = d2i_PUBKEY(NULL, &q, (long)csr->pubkey.len);
    if (pub == NULL) {
        rc = kms_err_ossl(KMS_ERR_INVAL, "Failed to parse the CSR pubkey");
        goto out;
    }
    KMS_ENSURE(!c->has_not_before || c->not_before <= MAX_CERT_TIME, KMS_ERR_INVAL,
               "Failed to sign certificate: not_before %llu is beyond year 9999",
               (unsigned long long)c->not_before);
    KMS_ENSURE(!c->has_not_after || c->not_after <= MAX_CERT_TIME, KMS_ERR_INVAL,
               "Failed to sign certificate: not_after %llu is beyond year 9999",
               (unsigned long long)c->not_after);
    p.org = c->org_name;
    p.cn = c->subject;
    p.san_dns = (const char *const *)c->san;
    p.n_san = c->n_san;
    p.eku_server_auth = c->usage_server_auth;
    p.eku_client_auth = c->usage_client_auth;
    p.usage = "app:custom";
    if (app_id->len > 0) {
        p.app_id = app_id->p;
        p.app_id_len = app_id->len;
    } else {
        f.empty_app_id = 1;
    }
    p.att = c->ext_quote ? csr->att : NULL;
    if (c->has_not_before && c->not_before > 0)
        p.not_before = (time_t)c->not_before;
    else if (c->has_not_before)
        f.not_before_zero = 1; /* kms_cert_issue reads 0 as "default" */
    p.not_after = c->has_not_after ? (time_t)c->not_after : now + (time_t)DEFAULT_VALIDITY_SECS;
    KMS_ENSURE(p.not_after > 0, KMS_ERR_INVAL,
               "Failed to sign certificate: not_after must be after the unix epoch");
    if (c->ext_app_info) {
        KMS_GUARD(app_info_ext(n, csr->att, v, &ai, &ai_len));
        f.app_info = ai;
        f.app_info_len = ai_len;
    }
    rc = kms_cert_issue(&p, pub, ca_key, ca_cert, out);
    if (rc < 0) {
        rc = kms_err_wrap(rc, "Failed to sign certificate");
        goto out;
    }
    KMS_GUARD(apply_fixups(*out, &f, ca_key));
out:
    if (rc < 0) {
        X509_free(*out);
        *out = NULL;
    }
    free(ai);
    EVP_PKEY_free(pub);
    return rc;
}

int kms_sign_cert_run(struct kms_node *n, long long api_version, const uint8_t *csr_bytes,
                      size_t csr_len, const uint8_t *sig, size_t sig_len, const char *vm_config,
                      struct kms_sign_cert_result *out)
{
    struct kms_csr csr;
    struct kms_verified v;
    struct kms_auth_result res;
    EVP_PKEY *app_ca_key = NULL;
    X509 *app_ca = NULL, *leaf = NULL;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    memset(&csr, 0, sizeof(csr));
    memset(&v, 0, sizeof(v));
    memset(&res, 0, sizeof(res));
    KMS_ENSURE(api_version == 1 || api_version == 2, KMS_ERR_INVAL, "Unsupported API version: %lld",
               api_version);
    KMS_GUARD(kms_node_require_serving(n));
    KMS_GUARD(kms_csr_decode((int)api_version, csr_bytes, csr_len, &csr));
    KMS_GUARD(kms_csr_verify(&csr, csr_bytes, csr_len, sig, sig_len));
    KMS_GUARD(kms_csr_upgrade(&csr));
    rc = kms_attest_verify_bound(n->actx, csr.att, csr.pubkey.p, csr.pubkey.len, &v);
    if (rc < 0) {
        rc = kms_err_wrap(rc, "Quote verification failed");
        goto out;
    }
    KMS_GUARD(kms_node_authorize(n, csr.att, &v, 0, vm_config, 1, &out->bi, &res));
    KMS_GUARD(kms_derive_app_ca_key(n->keys.root_ca_key, out->bi.app_id.p, out->bi.app_id.len,
                                    &app_ca_key));
    KMS_GUARD(issue_app_ca(n, &out->bi.app_id, app_ca_key, &app_ca));
    KMS_GUARD(issue_leaf(n, &csr, &v, &out->bi.app_id, app_ca_key, app_ca, &leaf));
    KMS_GUARD(kms_cert_to_pem(leaf, &out->chain[0]));
    KMS_GUARD(kms_cert_to_pem(app_ca, &out->chain[1]));
    out->chain[2] = strdup(n->keys.root_ca_pem);
    KMS_GUARD_PTR(out->chain[2]);
out:
    if (rc < 0) {
        for (int i = 0; i < 3; i++) {
            free(out->chain[i]);
            out->chain[i] = NULL;
        }
    }
    X509_free(leaf);
    X509_free(app_ca);
    EVP_PKEY_free(app_ca_key); /* EVP_PKEY_free wipes the private scalar */
    kms_verified_free(&v);
    kms_csr_free(&csr);
    return rc;
}

void kms_sign_cert(struct kms_node *n, int has_cert, json_t *body, struct kms_http_resp *resp)
{
    json_t *ver = json_object_get(body, "api_version");
    json_t *vmc = json_object_get(body, "vm_config");
    struct kms_sign_cert_result r;
    uint8_t *csr = NULL, *sig = NULL;
    size_t csr_len = 0, sig_len = 0;
    json_t *o = NULL, *arr = NULL;
    char msg[1536];
    int rc = 0;

    (void)has_cert; /* the attestation travels inside the CSR, not in the TLS client cert */
    memset(&r, 0, sizeof(r));
    KMS_ENSURE(ver == NULL || json_is_integer(ver), KMS_ERR_INVAL,
               "failed to decode request: api_version must be a number");
    KMS_ENSURE(vmc == NULL || json_is_null(vmc) || json_is_string(vmc), KMS_ERR_INVAL,
               "failed to decode request: vm_config must be a string");
    KMS_GUARD(kms_prpc_get_bytes(body, "csr", &csr, &csr_len));
    KMS_GUARD(kms_prpc_get_bytes(body, "signature", &sig, &sig_len));
    rc = kms_sign_cert_run(n, ver != NULL ? (long long)json_integer_value(ver) : 0, csr, csr_len,
                           sig, sig_len, json_is_string(vmc) ? json_string_value(vmc) : NULL, &r);
    if (rc < 0)
        goto out;
    o = json_object();
    arr = json_array();
    KMS_GUARD_PTR(o);
    KMS_GUARD_PTR(arr);
    for (int i = 0; i < 3; i++)
        KMS_ENSURE(json_array_append_new(arr, json_string(r.chain[i])) == 0, KMS_ERR_NOMEM,
                   "out of memory");
    KMS_ENSURE(json_object_set_new(o, "certificate_chain", arr) == 0, KMS_ERR_NOMEM,
               "out of memory");
    arr = NULL;
    KMS_INFO("SignCert: issued an app:custom certificate");
out:
    if (rc < 0)
        snprintf(msg, sizeof(msg), "%s", kms_err_detail()); /* the audit may reset the detail */
    kms_node_audit(n, "SignCert", rc, &r.bi);
    if (rc < 0) {
        json_decref(arr);
        json_decref(o);
        kms_prpc_error(resp, msg);
    } else {
        kms_prpc_ok(resp, o);
    }
    free(csr);
    free(sig);
    kms_sign_cert_result_clear(&r);
}
