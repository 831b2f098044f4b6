/* Onboard.Onboard: pull the cluster identity from a running node over RA-TLS (DESIGN.md §3).
 * The source is authenticated during the TLS handshake (attested kms:rpc certificate, and the
 * new node's own bootAuth/kms policy) before GetKmsKey is sent on that connection. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/crypto/crypto.h"
#include "common/hex.h"
#include "common/log.h"
#include "replication/internal.h"
#include "replication/replication.h"

#define ONBOARD_TIMEOUT_MS 15000

/* TEST ONLY: KMSD_TEST_CRASH_AT=<step> makes the process SIGKILL itself at that onboarding
 * step (temp-ca, client-cert, got-keys, stored, done), so the crash-safety test can prove a
 * kill anywhere leaves no keys or complete keys. Unset in any real deployment. */
static void crash_point(const char *step)
{
    const char *at = getenv("KMSD_TEST_CRASH_AT");

    if (at != NULL && strcmp(at, step) == 0) {
        KMS_WARN("KMSD_TEST_CRASH_AT=%s: killing this process (test only)", step);
        raise(SIGKILL);
    }
}

struct source_check {
    const struct kms_repl_cfg *cfg;
    const char *own_vm_config; /* this node's vm_config (its own attestation's config) */
    int checked;
};

/* Runs inside the handshake: attestation of the source and the new node's own KMS policy. */
static int check_source(void *arg, X509 *leaf)
{
    struct source_check *sc = arg;
    struct kms_attestation *att = NULL;
    struct kms_verified v;
    struct kms_boot_info bi;
    struct kms_auth_result res;
    int rc = 0;

    memset(&v, 0, sizeof(v));
    memset(&bi, 0, sizeof(bi));
    KMS_GUARD(kms_check_kms_cert(sc->cfg->actx, leaf, &att, &v));
    /* A TDX RA-TLS certificate carries no vm_config: as the reference, take the os_image_hash
     * from our own vm_config then (mr_aggregated still binds the source's image). */
    KMS_GUARD(kms_boot_info_derive(
        sc->cfg->actx, att, &v,
        att->config == NULL || att->config[0] == '\0' ? sc->own_vm_config : NULL, 0, &bi));
    rc = kms_auth_check(sc->cfg->auth, 1, &bi, &res);
    if (rc < 0) {
        kms_err_wrap(rc, "cannot check the source KMS against this node's policy");
        goto out;
    }
    KMS_ENSURE(res.allowed, KMS_ERR_DENIED, "source KMS denied by this node's policy: %s",
               res.reason);
    sc->checked = 1;
out:
    kms_boot_info_free(&bi);
    kms_verified_free(&v);
    kms_att_free(att);
    return rc;
}

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* One pin: expected is hex (0x optional); what names it in the refusal. */
static int check_pin(const char *expected, const uint8_t *got, size_t got_len, const char *what)
{
    uint8_t *want = NULL;
    size_t wl = 0;
    int rc;

    if (expected == NULL)
        return 0;
    rc = kms_hex_decode(expected, &want, &wl);
    if (rc < 0)
        return kms_err_wrap(rc, "%s", what);
    rc = (wl == got_len && memcmp(want, got, wl) == 0)
             ? 0
             : kms_err_set(KMS_ERR_REPL_IDENTITY, "source identity mismatch: %s", what);
    free(want);
    return rc;
}

/* The node's pins (cfg), then the request's (ui: Onboard form); all that are set must match. */
static int check_pins(const struct kms_repl_cfg *cfg, const struct kms_repl_pins *req,
                      const uint8_t *spki, size_t spki_len, const uint8_t pub33[33])
{
    int rc = 0;

    KMS_GUARD(check_pin(cfg->expect_k256_pubkey, pub33, 33,
                        "k256 public key differs from --expect-k256-pubkey"));
    KMS_GUARD(check_pin(cfg->expect_ca_spki, spki, spki_len,
                        "root CA key differs from --expect-ca-spki"));
    if (req != NULL) {
        KMS_GUARD(check_pin(req->k256_pubkey, pub33, 33,
                            "k256 public key differs from the requested expect_k256_pubkey"));
        KMS_GUARD(check_pin(req->ca_spki, spki, spki_len,
                            "root CA key differs from the requested expect_ca_spki"));
    }
out:
    return rc;
}

int kms_repl_onboard(struct kms_repl *r, const char *source_url, const char *domain,
                     uint8_t k256_pub[33])
{
    return kms_repl_onboard_pinned(r, source_url, domain, NULL, k256_pub);
}

int kms_repl_onboard_pinned(struct kms_repl *r, const char *source_url, const char *domain,
                            const struct kms_repl_pins *pins, uint8_t k256_pub[33])
{
    const struct kms_repl_cfg *cfg = kms_repl_cfg_of(r);
    struct kms_rpc_opts o;
    struct kms_ra_identity ra;
    struct source_check sc;
    struct kms_identity id;
    json_t *tmp = NULL, *keys = NULL, *k0;
    EVP_PKEY *ca_key = NULL;
    X509 *src_ca = NULL;
    uint8_t *spki = NULL, *k256 = NULL;
    size_t spki_len = 0, k256_len = 0;
    uint8_t *src_spki = NULL;
    int src_spki_len;
    char *vm_body = NULL;
    struct kms_attestation *self_att = NULL;
    uint8_t zero_rd[64] = {0};
    const char *ca_key_pem, *tmp_key_pem, *tmp_cert_pem, *ca_cert_pem;
    int rc = 0;

    memset(&o, 0, sizeof(o));
    memset(&ra, 0, sizeof(ra));
    memset(&id, 0, sizeof(id));
    memset(&sc, 0, sizeof(sc));
    rc = cfg->onboard_begin(cfg->cb_arg);
    if (rc < 0)
        return rc;
    rc = kms_store_has_identity(cfg->store);
    KMS_GUARD(rc);
    KMS_ENSURE(rc == 0, KMS_ERR_EXISTS, "this node already has keys: onboarding refused");
    KMS_ENSURE(
        domain != NULL && domain[0] != '\0' && strlen(domain) <= 253 &&
            strspn(domain, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") ==
                strlen(domain),
        KMS_ERR_INVAL, "domain may contain only letters, digits, '-' and '.'");
    KMS_ENSURE(source_url != NULL && strncmp(source_url, "https://", 8) == 0, KMS_ERR_INVAL,
               "source_url must be an https:// URL of a running KMS");
    KMS_GUARD(cfg->self_authorize(cfg->cb_arg));
    /* Our vm_config, sent in GetKmsKey as the reference does (a TDX cert does not carry it). */
    KMS_GUARD(cfg->attest(cfg->cb_arg, zero_rd, &self_att));
    sc.own_vm_config = self_att->config != NULL ? self_att->config : "";

    /* 1. Temp CA of the source (unauthenticated by design; the attestation is the trust). */
    o.url = source_url;
    o.timeout_ms = ONBOARD_TIMEOUT_MS;
    KMS_GUARD(kms_rpc_call(&o, "GetTempCaCert", NULL, &tmp, NULL));
    crash_point("temp-ca");
    tmp_cert_pem = jstr(tmp, "temp_ca_cert");
    tmp_key_pem = jstr(tmp, "temp_ca_key");
    ca_cert_pem = jstr(tmp, "ca_cert");
    KMS_ENSURE(tmp_cert_pem != NULL && tmp_key_pem != NULL && ca_cert_pem != NULL, KMS_ERR_PARSE,
               "source GetTempCaCert response lacks temp_ca_cert/key or ca_cert");
    KMS_GUARD(kms_cert_from_pem(ca_cert_pem, &src_ca));
    src_spki_len = i2d_PUBKEY(X509_get0_pubkey(src_ca), &src_spki);
    KMS_ENSURE(src_spki_len > 0, KMS_ERR_CRYPTO, "cannot encode the source root CA key");

    /* 2. Our RA-TLS client certificate. */
    KMS_GUARD(kms_ra_identity_new(tmp_cert_pem, tmp_key_pem, cfg->attest, cfg->cb_arg, &ra));
    crash_point("client-cert");
    /* kmsd extension: advertise our URL so the source lists us as a peer (the reference
     * ignores unknown request fields). */
    {
        char self_url[KMS_REPL_URL_MAX];
        json_t *req =
            kms_repl_self_url(cfg->listen, domain, self_url) == 0
                ? json_pack("{s:s,s:s}", "vm_config", sc.own_vm_config, "kmsd_peer_url", self_url)
                : json_pack("{s:s}", "vm_config", sc.own_vm_config);

        KMS_GUARD_PTR(req);
        vm_body = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        KMS_GUARD_PTR(vm_body);
    }

    /* 3. One connection: handshake checks the source, then GetKmsKey. */
    o.ca_pem = ca_cert_pem;
    o.no_host_check = 1;
    o.client_cert_pem = ra.cert_pem;
    o.client_key_pem = ra.key_pem;
    sc.cfg = cfg;
    o.server_check = check_source;
    o.server_check_arg = &sc;
    KMS_GUARD(kms_rpc_call(&o, "GetKmsKey", vm_body, &keys, NULL));
    KMS_ENSURE(sc.checked, KMS_ERR_INTERNAL, "source was not checked");
    crash_point("got-keys");

    /* 4. Validate what we received before writing anything. */
    tmp_key_pem = jstr(keys, "temp_ca_key");
    k0 = json_array_get(json_object_get(keys, "keys"), 0);
    KMS_ENSURE(tmp_key_pem != NULL && json_array_size(json_object_get(keys, "keys")) == 1 &&
                   json_is_object(k0),
               KMS_ERR_PARSE, "GetKmsKey response must hold temp_ca_key and exactly one key set");
    ca_key_pem = jstr(k0, "ca_key");
    KMS_ENSURE(ca_key_pem != NULL, KMS_ERR_PARSE, "GetKmsKey response lacks ca_key");
    KMS_GUARD(kms_prpc_get_bytes(k0, "k256_key", &k256, &k256_len));
    KMS_ENSURE(k256_len == 32, KMS_ERR_PARSE, "k256_key must be 32 bytes");
    KMS_GUARD(kms_pkey_from_pem(ca_key_pem, &ca_key));
    KMS_GUARD(kms_pkey_spki_der(ca_key, &spki, &spki_len));
    KMS_ENSURE(spki_len == (size_t)src_spki_len && memcmp(spki, src_spki, spki_len) == 0,
               KMS_ERR_REPL_IDENTITY,
               "source sent a root CA key that does not match its own root CA certificate");
    KMS_GUARD(kms_k256_pubkey(k256, k256_pub));
    KMS_GUARD(check_pins(cfg, pins, spki, spki_len, k256_pub));

    /* 5. Store in one transaction. */
    id.root_ca_key_pem = strdup(ca_key_pem);
    id.tmp_ca_key_pem = strdup(tmp_key_pem);
    memcpy(id.root_k256, k256, 32);
    id.domain = strdup(domain);
    id.origin = malloc(strlen(source_url) + 10);
    KMS_GUARD_PTR(id.root_ca_key_pem);
    KMS_GUARD_PTR(id.tmp_ca_key_pem);
    KMS_GUARD_PTR(id.domain);
    KMS_GUARD_PTR(id.origin);
    snprintf(id.origin, strlen(source_url) + 10, "onboard %s", source_url);
    KMS_GUARD(cfg->adopt_identity(cfg->cb_arg, &id));
    crash_point("stored");
    if (kms_store_meta_set(cfg->store, "onboarded_from", source_url) < 0)
        KMS_WARN("cannot record the onboarding source: %s", kms_err_detail());
    if (kms_store_audit(cfg->store, "Onboard", "ok", source_url) < 0)
        KMS_WARN("audit log append failed: %s", kms_err_detail());
    KMS_INFO("onboarded from %s", source_url);
    crash_point("done");
out:
    cfg->onboard_end(cfg->cb_arg);
    if (k256 != NULL)
        kms_free_secret(k256, k256_len);
    kms_identity_clear(&id);
    kms_ra_identity_clear(&ra);
    EVP_PKEY_free(ca_key);
    X509_free(src_ca);
    free(spki);
    OPENSSL_free(src_spki);
    free(vm_body);
    kms_att_free(self_att);
    json_decref(tmp);
    json_decref(keys);
    return rc;
}
