/*
 * End-to-end SignCert against a real kmsd over HTTPS: a simulated app (kms_sim_attest on the
 * node's simulation root) sends a SCALE CSR signed by its fresh key; the returned chain
 * [leaf, App CA, root CA] verifies with OpenSSL to the root CA that GetMeta reports, the leaf
 * carries usage "app:custom" and the app id, and the App CA key is the same on every call.
 * Refusals over the wire keep their message (bad signature, bad api_version, unbound
 * attestation).
 */
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "attest/sim.h"
#include "common/hex.h"
#include "common/crypto/crypto.h"
#include "common/crypto/csr.h"
#include "replication/replication.h"
#include "kmstest_proc.h"
#include "test.h"

static char g_tmp[256];
static char g_sim[300];
static struct kms_sim *g_simh;

/* ---- the simulated app */

static const uint8_t APP_ID[20] = {0x5a, 0x5b, 0x5c, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
                                   0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11};

struct csr_req {
    EVP_PKEY *key;
    uint8_t *spki;
    size_t spki_len;
    char *body; /* JSON request */
};

static void csr_req_free(struct csr_req *r)
{
    EVP_PKEY_free(r->key);
    free(r->spki);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* Builds the JSON SignCert request of a fresh app key. unbound: attestation over another key;
 * bad_sig: signature over different bytes; api: the api_version sent. */
static int make_request(int unbound, int bad_sig, int api, struct csr_req *r)
{
    struct kms_runtime_event ev[4];
    struct kms_csr c;
    uint8_t rd[64], *enc = NULL, *sig = NULL;
    size_t enc_len = 0, sig_len = 0;
    char *csr_hex = NULL, *sig_hex = NULL;
    char vmc[128];
    json_t *o = NULL;
    int rc = 0;

    memset(&c, 0, sizeof(c));
    memset(ev, 0, sizeof(ev));
    KMS_GUARD(kms_p256_generate(&r->key));
    KMS_GUARD(kms_pkey_spki_der(r->key, &r->spki, &r->spki_len));
    ev[0].event = (char *)"system-preparing";
    ev[1].event = (char *)"app-id";
    ev[1].payload.p = (uint8_t *)APP_ID;
    ev[1].payload.len = 20;
    ev[2].event = (char *)"compose-hash";
    ev[2].payload.p = (uint8_t *)APP_ID; /* any 20+ bytes */
    ev[2].payload.len = 20;
    ev[3].event = (char *)"boot-mr-done";
    kms_report_data("ratls-cert", r->spki, r->spki_len, rd);
    if (unbound)
        rd[63] ^= 0x80;
    c.version = 2;
    KMS_GUARD(kms_sim_attest(g_simh, NULL, rd, ev, 4, "", &c.att));
    c.confirm = strdup(KMS_CSR_CONFIRM);
    c.pubkey.p = malloc(r->spki_len);
    KMS_GUARD_PTR(c.pubkey.p);
    memcpy(c.pubkey.p, r->spki, r->spki_len);
    c.pubkey.len = r->spki_len;
    c.config.subject = strdup("svc.app.example");
    c.config.n_san = 1;
    c.config.san = calloc(1, sizeof(char *));
    KMS_GUARD_PTR(c.config.san);
    c.config.san[0] = strdup("svc.app.example");
    c.config.usage_server_auth = 1;
    c.config.ext_quote = 1;
    c.config.ext_app_info = 1;
    KMS_GUARD(kms_csr_encode(&c, &enc, &enc_len));
    if (bad_sig)
        enc[enc_len - 1] ^= 1; /* sign other bytes ... */
    KMS_GUARD(kms_csr_sign_bytes(r->key, enc, enc_len, &sig, &sig_len));
    if (bad_sig)
        enc[enc_len - 1] ^= 1; /* ... and send the original */
    csr_hex = kms_hex_dup(enc, enc_len, 1);
    sig_hex = kms_hex_dup(sig, sig_len, 1);
    KMS_GUARD_PTR(csr_hex);
    KMS_GUARD_PTR(sig_hex);
    KMS_GUARD(kms_sim_vm_config(vmc, sizeof(vmc))); /* the simulated TEE's image */
    o = json_pack("{s:i, s:s, s:s, s:s}", "api_version", api, "csr", csr_hex, "signature", sig_hex,
                  "vm_config", vmc);
    KMS_GUARD_PTR(o);
    r->body = json_dumps(o, JSON_COMPACT);
    KMS_GUARD_PTR(r->body);
out:
    json_decref(o);
    free(csr_hex);
    free(sig_hex);
    free(enc);
    free(sig);
    kms_csr_free(&c);
    return rc;
}

static X509 *pem_cert(const char *pem)
{
    X509 *c = NULL;

    return pem != NULL && kms_cert_from_pem(pem, &c) == 0 ? c : NULL;
}

static int ext_is(X509 *c, const char *oid, const void *want, size_t len)
{
    uint8_t *got = NULL;
    size_t n = 0;
    int eq;

    if (kms_ratls_get_ext(c, oid, &got, &n) < 0)
        return 0;
    eq = n == len && memcmp(got, want, len) == 0;
    free(got);
    return eq;
}

/* Verifies the 3-element chain with OpenSSL, trusting only root_pem (from GetMeta); returns
 * the App CA SPKI DER (caller frees) or NULL. */
static uint8_t *check_chain(json_t *resp, const char *root_pem, const struct csr_req *r,
                            size_t *ca_spki_len)
{
    json_t *arr = json_object_get(resp, "certificate_chain");
    X509 *leaf = NULL, *ca = NULL, *root = NULL, *meta_root = pem_cert(root_pem);
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    uint8_t *leaf_spki = NULL, *ca_spki = NULL;
    int n;

    *ca_spki_len = 0;
    CHECK(json_is_array(arr) && json_array_size(arr) == 3);
    leaf = pem_cert(json_string_value(json_array_get(arr, 0)));
    ca = pem_cert(json_string_value(json_array_get(arr, 1)));
    root = pem_cert(json_string_value(json_array_get(arr, 2)));
    CHECK(leaf != NULL && ca != NULL && root != NULL && meta_root != NULL);
    if (leaf == NULL || ca == NULL || root == NULL || meta_root == NULL)
        goto out;
    CHECK(X509_cmp(root, meta_root) == 0); /* the third element is GetMeta's root CA */
    X509_STORE_add_cert(st, meta_root);
    sk_X509_push(untrusted, ca);
    X509_STORE_CTX_init(ctx, st, leaf, untrusted);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
    CHECK(X509_verify_cert(ctx) == 1);
    CHECK(ext_is(leaf, KMS_OID_CERT_USAGE, "app:custom", 10));
    CHECK(ext_is(leaf, KMS_OID_APP_ID, APP_ID, 20));
    CHECK(ext_is(ca, KMS_OID_CERT_USAGE, "app:ca", 6));
    CHECK(ext_is(ca, KMS_OID_APP_ID, APP_ID, 20));
    {
        uint8_t *ai = NULL;
        size_t ai_len = 0;

        /* app_info msgpack: fixarray(8), first element bin8(20) = app id */
        CHECK_OK(kms_ratls_get_ext(leaf, KMS_OID_APP_INFO, &ai, &ai_len));
        CHECK(ai != NULL && ai_len > 23 && ai[0] == 0x98 && ai[1] == 0xc4 && ai[2] == 20 &&
              memcmp(ai + 3, APP_ID, 20) == 0);
        free(ai);
    }
    n = i2d_PUBKEY(X509_get0_pubkey(leaf), &leaf_spki);
    CHECK(n > 0 && (size_t)n == r->spki_len && memcmp(leaf_spki, r->spki, r->spki_len) == 0);
    n = i2d_PUBKEY(X509_get0_pubkey(ca), &ca_spki);
    CHECK(n > 0);
    *ca_spki_len = n > 0 ? (size_t)n : 0;
out:
    OPENSSL_free(leaf_spki);
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    X509_STORE_free(st);
    X509_free(leaf);
    X509_free(ca);
    X509_free(root);
    X509_free(meta_root);
    return ca_spki;
}

/* A real kmsd signs app CSRs; the chain verifies to GetMeta's root CA; the App CA key is
 * stable across calls; refusals carry their message over the wire. */
static void test_signcert_e2e(void)
{
    unsigned port = kmstest_free_port();
    char ob[64], url[64];
    json_t *r = NULL, *meta = NULL, *resp1 = NULL, *resp2 = NULL;
    struct csr_req a, b;
    uint8_t *spki1 = NULL, *spki2 = NULL;
    size_t l1 = 0, l2 = 0;
    const char *root_pem;
    pid_t pid;

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    snprintf(ob, sizeof(ob), "http://127.0.0.1:%u", port);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    pid = kmstest_kmsd_start(g_tmp, "n-signcert", g_sim, port, NULL);
    CHECK_OK(kmstest_call(ob, "Bootstrap", "{\"domain\":\"127.0.0.1\"}", &r));
    json_decref(r);
    r = NULL;
    /* The node answers Finish before it closes the onboard listener: the reply must arrive. */
    CHECK_OK(kmstest_call(ob, "Finish", NULL, &r));
    json_decref(r);
    CHECK_OK(kmstest_wait_serving(url));
    CHECK_OK(kmstest_call(url, "GetMeta", NULL, &meta));
    root_pem = json_string_value(json_object_get(meta, "ca_cert"));
    CHECK(root_pem != NULL);

    CHECK_OK(make_request(0, 0, 2, &a));
    CHECK_OK(kmstest_call(url, "SignCert", a.body, &resp1));
    if (resp1 != NULL)
        spki1 = check_chain(resp1, root_pem, &a, &l1);
    /* a second app key of the same app: a new App CA certificate with the same key */
    CHECK_OK(make_request(0, 0, 2, &b));
    CHECK_OK(kmstest_call(url, "SignCert", b.body, &resp2));
    if (resp2 != NULL)
        spki2 = check_chain(resp2, root_pem, &b, &l2);
    CHECK(spki1 != NULL && spki2 != NULL && l1 == l2 && memcmp(spki1, spki2, l1) == 0);
    CHECK(resp1 != NULL && resp2 != NULL &&
          !json_equal(json_array_get(json_object_get(resp1, "certificate_chain"), 1),
                      json_array_get(json_object_get(resp2, "certificate_chain"), 1)));
    csr_req_free(&a);
    csr_req_free(&b);

    /* refusals over the wire */
    CHECK_OK(make_request(0, 1, 2, &a));
    CHECK_RC(kmstest_call(url, "SignCert", a.body, &r), KMS_ERR_REPL_RPC);
    CHECK_DETAIL("Failed to verify csr signature: Invalid signature");
    csr_req_free(&a);
    CHECK_OK(make_request(0, 0, 7, &a));
    CHECK_RC(kmstest_call(url, "SignCert", a.body, &r), KMS_ERR_REPL_RPC);
    CHECK_DETAIL("Unsupported API version: 7");
    csr_req_free(&a);
    CHECK_OK(make_request(1, 0, 2, &a));
    CHECK_RC(kmstest_call(url, "SignCert", a.body, &r), KMS_ERR_REPL_RPC);
    CHECK_DETAIL("Quote verification failed");
    csr_req_free(&a);
    CHECK_RC(kmstest_call(url, "SignCert", "{\"api_version\":2,\"csr\":\"0xzz\"}", &r),
             KMS_ERR_REPL_RPC);
    CHECK_DETAIL("csr");

    OPENSSL_free(spki1);
    OPENSSL_free(spki2);
    json_decref(resp1);
    json_decref(resp2);
    json_decref(meta);
    kmstest_kmsd_stop(pid);
}

int main(void)
{
    char tmpl[] = "/tmp/kms-e2e-signcert-XXXXXX";

    curl_global_init(CURL_GLOBAL_DEFAULT);
    kmstest_rpc_timeout_ms = 20000;
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_tmp, sizeof(g_tmp), "%s", mkdtemp(tmpl));
    snprintf(g_sim, sizeof(g_sim), "%s/sim", g_tmp);
    if (kms_sim_open(g_sim, &g_simh) < 0) {
        fprintf(stderr, "cannot open sim: %s\n", kms_err_detail());
        return 1;
    }
    RUN(test_signcert_e2e);
    kms_sim_free(g_simh);
    kmstest_tmp_finish(g_tmp, kms_test_failures);
    curl_global_cleanup();
    TEST_MAIN_END();
}
