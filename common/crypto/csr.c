/* SignCert CSRs: SCALE codec, signature, V1 → V2 upgrade, AppInfo msgpack (common/crypto/csr.h). */
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "attest/scale.h"
#include "common/buf.h"
#include "common/crypto/csr.h"

void kms_csr_free(struct kms_csr *csr)
{
    if (csr == NULL)
        return;
    free(csr->confirm);
    free(csr->pubkey.p);
    free(csr->config.org_name);
    free(csr->config.subject);
    for (size_t i = 0; i < csr->config.n_san; i++)
        free(csr->config.san[i]);
    free(csr->config.san);
    free(csr->quote.p);
    free(csr->event_log.p);
    kms_att_free(csr->att);
    memset(csr, 0, sizeof(*csr));
}

/* ---------------------------------------------------------------- SCALE primitives */

static int parse_err(const struct kms_reader *r, const char *what)
{
    return kms_err_set(KMS_ERR_PARSE, "Failed to parse csr: %s at offset %zu", what, r->off);
}

/* The shared SCALE readers (attest.h) with this codec's limits; their detail gets the
 * "Failed to parse csr" prefix of every CSR parse error. */
static int csr_err(int rc)
{
    return rc < 0 && rc != KMS_ERR_NOMEM ? kms_err_wrap(rc, "Failed to parse csr") : rc;
}

static int rd_bool(struct kms_reader *r, int *out)
{
    uint8_t b;

    if (kms_rd_u8(r, &b) < 0)
        return parse_err(r, "truncated bool");
    if (b > 1)
        return parse_err(r, "bool is neither 0 nor 1");
    *out = b;
    return 0;
}

/* Vec<u8> of at most max bytes, copied. */
static int rd_vec(struct kms_reader *r, size_t max, const char *what, struct kms_bytes *b)
{
    return csr_err(kms_scale_get_bytes(r, max, what, b));
}

static int rd_string(struct kms_reader *r, const char *what, char **out)
{
    return csr_err(kms_scale_get_str(r, KMS_CSR_MAX_STR, what, out));
}

/* Option tag: 0 None, 1 Some. */
static int rd_option(struct kms_reader *r, int *some)
{
    uint8_t b;

    if (kms_rd_u8(r, &b) < 0)
        return parse_err(r, "truncated option");
    if (b > 1)
        return parse_err(r, "option tag is neither 0 nor 1");
    *some = b;
    return 0;
}

static int rd_opt_u64(struct kms_reader *r, int *some, uint64_t *v)
{
    int rc = rd_option(r, some);

    if (rc < 0 || !*some)
        return rc;
    if (kms_rd_u64le(r, v) < 0)
        return parse_err(r, "truncated u64");
    return 0;
}

static int rd_config(struct kms_reader *r, int v2, struct kms_csr_config *c)
{
    size_t n;
    int some;
    int rc = 0;

    KMS_GUARD(rd_option(r, &some));
    if (some)
        KMS_GUARD(rd_string(r, "org_name", &c->org_name));
    KMS_GUARD(rd_string(r, "subject", &c->subject));
    KMS_GUARD(csr_err(kms_scale_get_compact(r, &n)));
    if (n > KMS_CSR_MAX_SAN) {
        rc = kms_err_set(KMS_ERR_TOOBIG, "Failed to parse csr: %zu subject_alt_names, above %u", n,
                         KMS_CSR_MAX_SAN);
        goto out;
    }
    if (n > 0) {
        c->san = calloc(n, sizeof(char *));
        KMS_GUARD_PTR(c->san);
    }
    for (size_t i = 0; i < n; i++) {
        KMS_GUARD(rd_string(r, "subject_alt_name", &c->san[i]));
        c->n_san = i + 1;
    }
    KMS_GUARD(rd_bool(r, &c->usage_server_auth));
    KMS_GUARD(rd_bool(r, &c->usage_client_auth));
    KMS_GUARD(rd_bool(r, &c->ext_quote));
    if (v2) {
        KMS_GUARD(rd_bool(r, &c->ext_app_info));
        KMS_GUARD(rd_opt_u64(r, &c->has_not_before, &c->not_before));
        KMS_GUARD(rd_opt_u64(r, &c->has_not_after, &c->not_after));
    }
out:
    return rc;
}

int kms_csr_decode(int api_version, const uint8_t *p, size_t len, struct kms_csr *out)
{
    struct kms_reader r;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    KMS_ENSURE(api_version == 1 || api_version == 2, KMS_ERR_INVAL, "Unsupported API version: %d",
               api_version);
    KMS_ENSURE(p != NULL || len == 0, KMS_ERR_INVAL, "no csr bytes");
    KMS_ENSURE(len <= KMS_CSR_MAX_BYTES, KMS_ERR_TOOBIG, "Failed to parse csr: %zu bytes, above %u",
               len, KMS_CSR_MAX_BYTES);
    out->version = api_version;
    kms_rd_init(&r, p, len);
    KMS_GUARD(rd_string(&r, "confirm", &out->confirm));
    KMS_GUARD(rd_vec(&r, KMS_CSR_MAX_PUBKEY, "pubkey", &out->pubkey));
    KMS_GUARD(rd_config(&r, api_version == 2, &out->config));
    if (api_version == 1) {
        KMS_GUARD(rd_vec(&r, KMS_ATT_MAX_BYTES, "quote", &out->quote));
        KMS_GUARD(rd_vec(&r, KMS_ATT_MAX_BYTES, "event_log", &out->event_log));
        KMS_ENSURE(kms_rd_left(&r) == 0, KMS_ERR_PARSE, "Failed to parse csr: %zu trailing bytes",
                   kms_rd_left(&r));
    } else {
        /* The attestation is the last field: attest decodes the rest strictly. */
        rc = kms_att_decode(p + r.off, kms_rd_left(&r), &out->att);
        if (rc < 0) {
            rc = kms_err_wrap(rc, "Failed to parse csr attestation");
            goto out;
        }
    }
out:
    if (rc < 0)
        kms_csr_free(out);
    return rc;
}

/* ---------------------------------------------------------------- encoding */

static int put_string(struct kms_buf *b, const char *s)
{
    if (s == NULL)
        return kms_err_set(KMS_ERR_INVAL, "csr string field missing");
    return kms_scale_put_bytes(b, (const uint8_t *)s, strlen(s));
}

static int put_opt_u64(struct kms_buf *b, int some, uint64_t v)
{
    int rc = kms_buf_put_u8(b, some ? 1 : 0);

    if (rc < 0 || !some)
        return rc;
    return kms_buf_put_u64le(b, v);
}

int kms_csr_encode(const struct kms_csr *csr, uint8_t **out, size_t *len)
{
    const struct kms_csr_config *c = &csr->config;
    struct kms_buf b;
    uint8_t *att = NULL;
    size_t att_len = 0;
    int rc = 0;

    memset(&b, 0, sizeof(b));
    *out = NULL;
    *len = 0;
    KMS_ENSURE(csr->version == 1 || csr->version == 2, KMS_ERR_INVAL, "Unsupported API version: %d",
               csr->version);
    KMS_ENSURE(csr->version == 1 || csr->att != NULL, KMS_ERR_INVAL,
               "a V2 csr needs an attestation");
    KMS_GUARD(put_string(&b, csr->confirm));
    KMS_GUARD(kms_scale_put_bytes(&b, csr->pubkey.p, csr->pubkey.len));
    KMS_GUARD(kms_buf_put_u8(&b, c->org_name != NULL ? 1 : 0));
    if (c->org_name != NULL)
        KMS_GUARD(put_string(&b, c->org_name));
    KMS_GUARD(put_string(&b, c->subject));
    KMS_GUARD(kms_scale_put_compact(&b, c->n_san));
    for (size_t i = 0; i < c->n_san; i++)
        KMS_GUARD(put_string(&b, c->san[i]));
    KMS_GUARD(kms_buf_put_u8(&b, c->usage_server_auth ? 1 : 0));
    KMS_GUARD(kms_buf_put_u8(&b, c->usage_client_auth ? 1 : 0));
    KMS_GUARD(kms_buf_put_u8(&b, c->ext_quote ? 1 : 0));
    if (csr->version == 1) {
        KMS_GUARD(kms_scale_put_bytes(&b, csr->quote.p, csr->quote.len));
        KMS_GUARD(kms_scale_put_bytes(&b, csr->event_log.p, csr->event_log.len));
    } else {
        KMS_GUARD(kms_buf_put_u8(&b, c->ext_app_info ? 1 : 0));
        KMS_GUARD(put_opt_u64(&b, c->has_not_before, c->not_before));
        KMS_GUARD(put_opt_u64(&b, c->has_not_after, c->not_after));
        KMS_GUARD(kms_att_encode(csr->att, 0, &att, &att_len));
        KMS_GUARD(kms_buf_put(&b, att, att_len));
    }
    *out = kms_buf_steal(&b, len);
out:
    free(att);
    kms_buf_free(&b);
    return rc;
}

int kms_csr_upgrade(struct kms_csr *csr)
{
    int rc = 0;

    if (csr->version == 2)
        return 0;
    KMS_ENSURE(csr->version == 1, KMS_ERR_INVAL, "Unsupported API version: %d", csr->version);
    rc = kms_att_from_legacy(csr->quote.p, csr->quote.len, (const char *)csr->event_log.p,
                             csr->event_log.len, &csr->att);
    if (rc < 0) {
        rc = kms_err_wrap(rc, "Failed to upgrade csr v1 to v2");
        goto out;
    }
    csr->config.ext_app_info = 0;
    csr->config.has_not_before = 0;
    csr->config.has_not_after = 0;
    csr->version = 2;
out:
    return rc;
}

/* ---------------------------------------------------------------- signature */

int kms_csr_sign_bytes(EVP_PKEY *key, const uint8_t *msg, size_t msg_len, uint8_t **sig,
                       size_t *sig_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t n = 0;
    int rc = 0;

    *sig = NULL;
    *sig_len = 0;
    KMS_GUARD_PTR(md);
    KMS_GUARD_OSSL(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), "csr signing init");
    KMS_GUARD_OSSL(EVP_DigestSign(md, NULL, &n, msg, msg_len), "csr signature size");
    *sig = malloc(n);
    KMS_GUARD_PTR(*sig);
    KMS_GUARD_OSSL(EVP_DigestSign(md, *sig, &n, msg, msg_len), "csr signing");
    *sig_len = n;
out:
    if (rc < 0) {
        free(*sig);
        *sig = NULL;
    }
    EVP_MD_CTX_free(md);
    return rc;
}

int kms_csr_verify(const struct kms_csr *csr, const uint8_t *msg, size_t msg_len,
                   const uint8_t *sig, size_t sig_len)
{
    const unsigned char *q = csr->pubkey.p;
    EVP_PKEY *pub = NULL;
    EVP_MD_CTX *md = NULL;
    char curve[64];
    size_t curve_len = 0;
    int rc = 0;

    KMS_ENSURE(csr->pubkey.len > 0 && csr->pubkey.len <= KMS_CSR_MAX_PUBKEY, KMS_ERR_INVAL,
               "Failed to verify csr signature: Failed to parse pubkey (empty or too long)");
    pub = d2i_PUBKEY(NULL, &q, (long)csr->pubkey.len);
    ERR_clear_error();
    KMS_ENSURE(pub != NULL && q == csr->pubkey.p + csr->pubkey.len, KMS_ERR_INVAL,
               "Failed to verify csr signature: Failed to parse pubkey (not SPKI DER)");
    KMS_ENSURE(EVP_PKEY_base_id(pub) == EVP_PKEY_EC, KMS_ERR_INVAL,
               "Failed to verify csr signature: Unsupported algorithm (the CSR pubkey must be "
               "EC P-256)");
    KMS_ENSURE(EVP_PKEY_get_utf8_string_param(pub, "group", curve, sizeof(curve), &curve_len) ==
                       1 &&
                   strcmp(curve, "prime256v1") == 0,
               KMS_ERR_INVAL,
               "Failed to verify csr signature: Unsupported algorithm (the CSR pubkey must be "
               "EC P-256)");
    md = EVP_MD_CTX_new();
    KMS_GUARD_PTR(md);
    KMS_GUARD_OSSL(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub), "csr verify init");
    if (EVP_DigestVerify(md, sig, sig_len, msg, msg_len) != 1) {
        ERR_clear_error();
        rc = kms_err_set(KMS_ERR_VERIFY, "Failed to verify csr signature: Invalid signature");
        goto out;
    }
    KMS_ENSURE(csr->confirm != NULL && strcmp(csr->confirm, KMS_CSR_CONFIRM) == 0, KMS_ERR_INVAL,
               "Failed to verify csr signature: Invalid confirm word (want \"%s\")",
               KMS_CSR_CONFIRM);
out:
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pub);
    return rc;
}

/* ---------------------------------------------------------------- AppInfo msgpack */

/* msgpack bin family (rmp writes the shortest). */
static int mp_bin(struct kms_buf *b, const uint8_t *p, size_t n)
{
    int rc = 0;

    if (n <= 0xffu) {
        KMS_GUARD(kms_buf_put_u8(b, 0xc4));
        KMS_GUARD(kms_buf_put_u8(b, (uint8_t)n));
    } else if (n <= 0xffffu) {
        KMS_GUARD(kms_buf_put_u8(b, 0xc5));
        KMS_GUARD(kms_buf_put_u16be(b, (uint16_t)n));
    } else if (n <= 0xffffffffu) {
        KMS_GUARD(kms_buf_put_u8(b, 0xc6));
        KMS_GUARD(kms_buf_put_u32be(b, (uint32_t)n));
    } else {
        rc = kms_err_set(KMS_ERR_TOOBIG, "app info field too large for msgpack");
        goto out;
    }
    if (n > 0)
        KMS_GUARD(kms_buf_put(b, p, n));
out:
    return rc;
}

int kms_csr_app_info_msgpack(const struct kms_boot_info *ai, const uint8_t *instance_id,
                             size_t instance_id_len, const uint8_t device_id[32], uint8_t **out,
                             size_t *len)
{
    struct kms_buf b;
    int rc = 0;

    memset(&b, 0, sizeof(b));
    *out = NULL;
    *len = 0;
    KMS_GUARD(kms_buf_put_u8(&b, 0x98)); /* fixarray of the 8 AppInfo fields, in order */
    KMS_GUARD(mp_bin(&b, ai->app_id.p, ai->app_id.len));
    KMS_GUARD(mp_bin(&b, ai->compose_hash.p, ai->compose_hash.len));
    KMS_GUARD(mp_bin(&b, instance_id, instance_id_len));
    KMS_GUARD(mp_bin(&b, device_id, 32));
    KMS_GUARD(mp_bin(&b, ai->mr_system, 32));
    KMS_GUARD(mp_bin(&b, ai->mr_aggregated, 32));
    KMS_GUARD(mp_bin(&b, ai->os_image_hash.p, ai->os_image_hash.len));
    KMS_GUARD(mp_bin(&b, ai->key_provider_info.p, ai->key_provider_info.len));
    *out = kms_buf_steal(&b, len);
out:
    kms_buf_free(&b);
    return rc;
}
