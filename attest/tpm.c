/*
 * GCP vTPM quote verification (attestation-reference.md §2.2, TPM part): TPMS_ATTEST parsing,
 * TPMT_SIGNATURE check with the AK certificate key, AK chain to the pinned GCP roots, PCR digest,
 * firmware event-log replay and the extraData binding. All TPM structures are big-endian.
 *
 * AK chain: the AK certificate must chain to a KMS_ROOT_GCP anchor (a self-signed root; no
 * partial chains). The GCP "EK/AK CA Intermediate" is not in the evidence: with
 * kms_attest_ctx_set_aia_fetch it is fetched from the AK certificate's AIA caIssuers URL (as the
 * reference does) and cached (aia.c); otherwise put it into the PEM file with the root. CRLs
 * (CDPs) are not fetched.
 */
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "attest/aia.h"
#include "attest/internal.h"
#include "attest/tpm.h"
#include "common/buf.h"

#define TPM_GENERATED_VALUE 0xff544347u
#define TPM_ST_ATTEST_QUOTE 0x8018u
#define TPM_ALG_RSASSA 0x0014u
#define TPM_ALG_ECDSA 0x0018u
#define TPM2B_NAME_MAX 66u /* sizeof(TPMU_NAME) = sizeof(TPMT_HA) */
#define TPM2B_DATA_MAX 64u /* sizeof(TPMT_HA) minus the alg id */
#define TPM2B_DIGEST_MAX 64u
#define TPM_RSA_SIG_MAX 512u /* RSA-4096 */
#define TPM_ECC_PARAM_MAX 66u

/* Google "EK/AK CA Root" (attest/roots/gcp-ek-ak-root-ca.pem; the reference's
 * tpm-qvl/certs/gcp-root-ca.pem). */
static const char gcp_root_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIGATCCA+mgAwIBAgIUAKZdpPnjKPOANcOnPU9yQyvfFdwwDQYJKoZIhvcNAQEL\n"
    "BQAwfjELMAkGA1UEBhMCVVMxEzARBgNVBAgTCkNhbGlmb3JuaWExFjAUBgNVBAcT\n"
    "DU1vdW50YWluIFZpZXcxEzARBgNVBAoTCkdvb2dsZSBMTEMxFTATBgNVBAsTDEdv\n"
    "b2dsZSBDbG91ZDEWMBQGA1UEAxMNRUsvQUsgQ0EgUm9vdDAgFw0yMjA3MDgwMDQw\n"
    "MzRaGA8yMTIyMDcwODA1NTcyM1owfjELMAkGA1UEBhMCVVMxEzARBgNVBAgTCkNh\n"
    "bGlmb3JuaWExFjAUBgNVBAcTDU1vdW50YWluIFZpZXcxEzARBgNVBAoTCkdvb2ds\n"
    "ZSBMTEMxFTATBgNVBAsTDEdvb2dsZSBDbG91ZDEWMBQGA1UEAxMNRUsvQUsgQ0Eg\n"
    "Um9vdDCCAiIwDQYJKoZIhvcNAQEBBQADggIPADCCAgoCggIBAJ0l9VCoyJZLSol8\n"
    "KyhNpbS7pBnuicE6ptrdtxAWIR2TnLxSgxNFiR7drtofxI0ruceoCIpsa9NHIKrz\n"
    "3sM/N/E8mFNHiJAuyVf3pPpmDpLJZQ1qe8yHkpGSs3Kj3s5YYWtEecCVfzNs4MtK\n"
    "vGfA+WKB49A6Noi8R9R1GonLIN6wSXX3kP1ibRn0NGgdqgfgRe5HC3kKAhjZ6scT\n"
    "8Eb1SGlaByGzE5WoGTnNbyifkyx9oUZxXVJsqv2q611W3apbPxcgev8z5JXQUbrr\n"
    "Q7EbO0StK1DsKRsKLuD+YLxjrBRQ4UeIN5WHp6G0vgYiOptHm6YKZxQemO/kVMLR\n"
    "zsm1AYH7eNOFekcBIKRjSqpk5m4ud04qum6f0hBj3iE/Pe+DvIbVhLh9ItAunISG\n"
    "QPA9dYEgfA/qWir+pU7LV3phpLeGhull8G/zYmQhF3heg0buIR70aavzT8iLAQrx\n"
    "VMNRZJEGMwIN/tq8YiT3+3EZIcSqq6GAGjiuVw3NIsXC3+CuSJGQ5GbDp49Lc6VW\n"
    "PHeWeFvwSUGgxKXq5r1+PRsoYgK6S4hhecgXEX5c7Rta6TcFlEFb0XK9fpy1dr89\n"
    "LeFGxUBpdDvKxDRLMm3FQen8rmR/PSReEcJsaqbUP/q7Pc7k0RfF9Mb6AfPZfnqg\n"
    "pYJQ+IFSr9EjRSW1wPcL03zoTP47AgMBAAGjdTBzMA4GA1UdDwEB/wQEAwIBBjAQ\n"
    "BgNVHSUECTAHBgVngQUIATAPBgNVHRMBAf8EBTADAQH/MB0GA1UdDgQWBBRJ50pb\n"
    "Vin1nXm3pjA8A7KP5xTdTDAfBgNVHSMEGDAWgBRJ50pbVin1nXm3pjA8A7KP5xTd\n"
    "TDANBgkqhkiG9w0BAQsFAAOCAgEAlfHRvOB3CJoLTl1YG/AvjGoZkpNMyp5X5je1\n"
    "ICCQ68b296En9hIUlcYY/+nuEPSPUjDA3izwJ8DAfV4REgpQzqoh6XhR3TgyfHXj\n"
    "J6DC7puzEgtzF1+wHShUpBoe3HKuL4WhB3rvwk2SEsudBu92o9BuBjcDJ/GW5GRt\n"
    "pD/H71HAE8rI9jJ41nS0FvkkjaX0glsntMVUXiwcta8GI0QOE2ijsJBwk41uQGt0\n"
    "YOj2SGlEwNAC5DBTB5kZ7+6X9xGE6/c+M3TAA0ONoX18rNfif94cCx/mPYOs8pUk\n"
    "ANRAQ4aTRBvpBrryGT8R1ahTBkMeRQG3tdsLHRT8fJCFUANd5WLWsi83005y/WuM\n"
    "z8/gFKc0PL+F+MubCsJ1ODPTRscH93QlS4zEMg5hDAIks+fDoRJ2QiROqo7GAqbT\n"
    "c7STKfGcr9+pa63na7f3oy1sZPWPdxB8tx5z3lghiPP3ktQx/yK/1Fwf1hgxJHFy\n"
    "/2UcaGuOXRRRTPyEnppZp82Kigs9aPHWtaVm2/LrXX2fvT9iM/k0CovNAj8rztHx\n"
    "sUEoA0xJnSOJNPpe9PRdjsTj7/u3Xu6hQLNNidBHgI3Hcmi704HMMd/3yZ424OOr\n"
    "S32ylpeU1oeQHFrLE6hYX4/ttMETbmESIKd2rTgstPotSvkuB5TljbKYPR+lq7hQ\n"
    "av16U4E=\n"
    "-----END CERTIFICATE-----\n";

X509 *kms_attest_gcp_root(void)
{
    BIO *bio = BIO_new_mem_buf(gcp_root_pem, (int)(sizeof(gcp_root_pem) - 1));
    X509 *x;

    if (bio == NULL)
        return NULL;
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    return x;
}

/* TPM2B: u16 size then bytes, size at most max. */
static int rd_tpm2b(struct kms_reader *r, size_t max, const char *what, const uint8_t **p,
                    size_t *len)
{
    uint16_t n;
    int rc = 0;

    KMS_GUARD(kms_rd_u16be(r, &n));
    KMS_ENSURE(n <= max, KMS_ERR_ATT_FORMAT, "TPM: %s of %u bytes exceeds %zu", what, n, max);
    KMS_GUARD(kms_rd_ptr(r, n, p));
    *len = n;
out:
    return rc;
}

int kms_tpms_attest_parse(const uint8_t *p, size_t len, struct kms_tpms_attest *out)
{
    struct kms_reader r;
    uint32_t magic, n_sel;
    uint16_t type, alg;
    uint8_t size_sel;
    const uint8_t *bitmap;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    kms_rd_init(&r, p, len);
    KMS_GUARD(kms_rd_u32be(&r, &magic));
    KMS_ENSURE(magic == TPM_GENERATED_VALUE, KMS_ERR_ATT_FORMAT,
               "TPMS_ATTEST: magic 0x%08x is not TPM_GENERATED_VALUE 0xff544347", magic);
    KMS_GUARD(kms_rd_u16be(&r, &type));
    KMS_ENSURE(type == TPM_ST_ATTEST_QUOTE, KMS_ERR_ATT_FORMAT,
               "TPMS_ATTEST: type 0x%04x is not TPM_ST_ATTEST_QUOTE 0x8018", type);
    KMS_GUARD(rd_tpm2b(&r, TPM2B_NAME_MAX, "qualifiedSigner", &out->qualified_signer,
                       &out->qualified_signer_len));
    KMS_GUARD(rd_tpm2b(&r, TPM2B_DATA_MAX, "extraData", &out->extra_data, &out->extra_data_len));
    KMS_GUARD(kms_rd_u64be(&r, &out->clock));
    KMS_GUARD(kms_rd_u32be(&r, &out->reset_count));
    KMS_GUARD(kms_rd_u32be(&r, &out->restart_count));
    KMS_GUARD(kms_rd_u8(&r, &out->safe));
    KMS_GUARD(kms_rd_u64be(&r, &out->firmware_version));
    KMS_GUARD(kms_rd_u32be(&r, &n_sel));
    KMS_ENSURE(n_sel <= KMS_TPM_MAX_SELECTIONS, KMS_ERR_ATT_FORMAT,
               "TPMS_ATTEST: %u PCR selections (max %u)", n_sel, KMS_TPM_MAX_SELECTIONS);
    for (uint32_t s = 0; s < n_sel; s++) {
        KMS_GUARD(kms_rd_u16be(&r, &alg));
        KMS_GUARD(kms_rd_u8(&r, &size_sel));
        KMS_ENSURE(size_sel <= KMS_TPM_MAX_SELECT, KMS_ERR_ATT_FORMAT,
                   "TPMS_ATTEST: PCR bitmap of %u bytes (max %u)", size_sel, KMS_TPM_MAX_SELECT);
        KMS_GUARD(kms_rd_ptr(&r, size_sel, &bitmap));
        for (uint32_t byte = 0; byte < size_sel; byte++) {
            for (uint32_t bit = 0; bit < 8; bit++) {
                if ((bitmap[byte] & (1u << bit)) == 0)
                    continue;
                KMS_ENSURE(out->n_pcrs < KMS_TPM_MAX_PCRS, KMS_ERR_ATT_FORMAT,
                           "TPMS_ATTEST: more than %u PCRs selected", KMS_TPM_MAX_PCRS);
                out->pcr_index[out->n_pcrs] = byte * 8 + bit;
                out->pcr_alg[out->n_pcrs] = alg;
                out->n_pcrs++;
            }
        }
    }
    KMS_GUARD(rd_tpm2b(&r, TPM2B_DIGEST_MAX, "pcrDigest", &out->pcr_digest, &out->pcr_digest_len));
    KMS_ENSURE(kms_rd_left(&r) == 0, KMS_ERR_ATT_FORMAT, "TPMS_ATTEST: %zu trailing bytes",
               kms_rd_left(&r));
out:
    if (rc == KMS_ERR_PARSE)
        rc = kms_err_set(KMS_ERR_ATT_FORMAT, "TPMS_ATTEST is truncated (%zu bytes)", len);
    return rc;
}

/* ECDSA r, s (big-endian, each at most 66 bytes) → DER ECDSA-Sig-Value. Caller frees *der. */
static int ecdsa_der(const uint8_t *r, size_t rlen, const uint8_t *s, size_t slen, uint8_t **der,
                     size_t *der_len)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *br = BN_bin2bn(r, (int)rlen, NULL);
    BIGNUM *bs = BN_bin2bn(s, (int)slen, NULL);
    unsigned char *p = NULL;
    int n;
    int rc = 0;

    KMS_GUARD_PTR(sig);
    KMS_GUARD_PTR(br);
    KMS_GUARD_PTR(bs);
    KMS_GUARD_OSSL(ECDSA_SIG_set0(sig, br, bs), "ECDSA_SIG_set0");
    br = NULL;
    bs = NULL;
    n = i2d_ECDSA_SIG(sig, &p);
    KMS_ENSURE(n > 0, KMS_ERR_CRYPTO, "i2d_ECDSA_SIG failed");
    *der = p;
    *der_len = (size_t)n;
out:
    BN_free(br);
    BN_free(bs);
    ECDSA_SIG_free(sig);
    return rc;
}

/* Checks TPMT_SIGNATURE sig over msg with the AK key. Structural errors in the signature are
 * KMS_ERR_ATT_TPM_SIG too: the signature is what failed. */
static int verify_signature(EVP_PKEY *ak, const uint8_t *msg, size_t msg_len, const uint8_t *sig,
                            size_t sig_len)
{
    struct kms_reader r;
    EVP_MD_CTX *mctx = NULL;
    uint16_t sig_alg, hash_alg;
    const uint8_t *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    uint8_t *der = NULL;
    size_t der_len = 0;
    const uint8_t *check;
    size_t check_len;
    int key_id = EVP_PKEY_get_base_id(ak);
    char group[64] = "";
    int rc = 0;

    kms_rd_init(&r, sig, sig_len);
    KMS_GUARD(kms_rd_u16be(&r, &sig_alg));
    KMS_GUARD(kms_rd_u16be(&r, &hash_alg));
    KMS_ENSURE(hash_alg == KMS_TPM_ALG_SHA256, KMS_ERR_ATT_TPM_SIG,
               "TPM quote signature hash 0x%04x is not SHA-256 (0x000b)", hash_alg);
    if (sig_alg == TPM_ALG_RSASSA) {
        KMS_ENSURE(key_id == EVP_PKEY_RSA, KMS_ERR_ATT_TPM_SIG,
                   "TPM quote has an RSASSA signature but the AK certificate key is not RSA");
        KMS_GUARD(rd_tpm2b(&r, TPM_RSA_SIG_MAX, "RSA signature", &a, &alen));
        check = a;
        check_len = alen;
    } else if (sig_alg == TPM_ALG_ECDSA) {
        KMS_ENSURE(key_id == EVP_PKEY_EC, KMS_ERR_ATT_TPM_SIG,
                   "TPM quote has an ECDSA signature but the AK certificate key is not EC");
        KMS_ENSURE(EVP_PKEY_get_utf8_string_param(ak, "group", group, sizeof(group), NULL) == 1 &&
                       strcmp(group, "prime256v1") == 0,
                   KMS_ERR_ATT_TPM_SIG, "TPM AK certificate key is not on P-256 (%s)", group);
        KMS_GUARD(rd_tpm2b(&r, TPM_ECC_PARAM_MAX, "ECDSA r", &a, &alen));
        KMS_GUARD(rd_tpm2b(&r, TPM_ECC_PARAM_MAX, "ECDSA s", &b, &blen));
        KMS_GUARD(ecdsa_der(a, alen, b, blen, &der, &der_len));
        check = der;
        check_len = der_len;
    } else {
        rc = kms_err_set(KMS_ERR_ATT_TPM_SIG,
                         "TPM quote signature scheme 0x%04x is neither RSASSA nor ECDSA", sig_alg);
        goto out;
    }
    KMS_ENSURE(kms_rd_left(&r) == 0, KMS_ERR_ATT_TPM_SIG, "TPMT_SIGNATURE has %zu trailing bytes",
               kms_rd_left(&r));
    mctx = EVP_MD_CTX_new();
    KMS_GUARD_PTR(mctx);
    /* RSA keys default to PKCS#1 v1.5 padding, which is what RSASSA is */
    KMS_GUARD_OSSL(EVP_DigestVerifyInit(mctx, NULL, EVP_sha256(), NULL, ak),
                   "EVP_DigestVerifyInit");
    if (EVP_DigestVerify(mctx, check, check_len, msg, msg_len) != 1) {
        ERR_clear_error();
        rc = kms_err_set(KMS_ERR_ATT_TPM_SIG,
                         "TPM quote signature (%s) does not verify with the AK certificate key",
                         sig_alg == TPM_ALG_RSASSA ? "RSASSA" : "ECDSA");
        goto out;
    }
out:
    if (rc == KMS_ERR_PARSE || rc == KMS_ERR_ATT_FORMAT)
        rc = kms_err_set(KMS_ERR_ATT_TPM_SIG, "TPMT_SIGNATURE is malformed (%zu bytes)", sig_len);
    OPENSSL_free(der);
    EVP_MD_CTX_free(mctx);
    return rc;
}

/* Replays q's events for one PCR from zeros; *found = number of events. */
static int replay_pcr(const struct kms_tpm_quote *q, uint32_t pcr, uint8_t out[32], size_t *found)
{
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    int rc = 0;

    *found = 0;
    memset(out, 0, 32);
    KMS_GUARD_PTR(mctx);
    for (size_t i = 0; i < q->n_events; i++) {
        const struct kms_tpm_event *ev = &q->events[i];

        if (ev->pcr_index != pcr)
            continue;
        KMS_ENSURE(ev->digest.len == 32, KMS_ERR_ATT_FORMAT,
                   "TPM event %zu (PCR %u) has a %zu-byte digest, want 32 (SHA-256)", i, pcr,
                   ev->digest.len);
        KMS_GUARD_OSSL(EVP_DigestInit_ex(mctx, EVP_sha256(), NULL), "EVP_DigestInit_ex");
        KMS_GUARD_OSSL(EVP_DigestUpdate(mctx, out, 32), "EVP_DigestUpdate");
        KMS_GUARD_OSSL(EVP_DigestUpdate(mctx, ev->digest.p, 32), "EVP_DigestUpdate");
        KMS_GUARD_OSSL(EVP_DigestFinal_ex(mctx, out, NULL), "EVP_DigestFinal_ex");
        (*found)++;
    }
out:
    EVP_MD_CTX_free(mctx);
    return rc;
}

static int check_pcrs(const struct kms_tpm_quote *q, const struct kms_tpms_attest *a,
                      struct kms_verified *out)
{
    static const uint32_t want[3] = {0, 2, 14};
    int have[3] = {0, 0, 0};
    EVP_MD_CTX *mctx = NULL;
    uint8_t digest[32];
    uint8_t replay[32];
    size_t n_ev;
    int rc = 0;

    KMS_ENSURE(a->n_pcrs == q->n_pcrs, KMS_ERR_ATT_PCR,
               "TPM quote selects %zu PCRs but pcr_values has %zu", a->n_pcrs, q->n_pcrs);
    for (size_t i = 0; i < q->n_pcrs; i++) {
        const struct kms_pcr_value *v = &q->pcrs[i];

        KMS_ENSURE(v->index == a->pcr_index[i], KMS_ERR_ATT_PCR,
                   "pcr_values[%zu] is PCR %u but the quote selects PCR %u there", i, v->index,
                   a->pcr_index[i]);
        /* stricter than the reference, which ignores the bank: only SHA-256 PCRs are used */
        KMS_ENSURE(a->pcr_alg[i] == KMS_TPM_ALG_SHA256, KMS_ERR_ATT_PCR,
                   "TPM quote selects PCR %u in bank 0x%04x, want SHA-256", v->index,
                   a->pcr_alg[i]);
        KMS_ENSURE(v->value.len == 32, KMS_ERR_ATT_PCR,
                   "pcr_values[%zu] (PCR %u) is %zu bytes, want 32", i, v->index, v->value.len);
    }
    mctx = EVP_MD_CTX_new();
    KMS_GUARD_PTR(mctx);
    KMS_GUARD_OSSL(EVP_DigestInit_ex(mctx, EVP_sha256(), NULL), "EVP_DigestInit_ex");
    for (size_t i = 0; i < q->n_pcrs; i++)
        KMS_GUARD_OSSL(EVP_DigestUpdate(mctx, q->pcrs[i].value.p, 32), "EVP_DigestUpdate");
    KMS_GUARD_OSSL(EVP_DigestFinal_ex(mctx, digest, NULL), "EVP_DigestFinal_ex");
    KMS_ENSURE(a->pcr_digest_len == 32 && memcmp(a->pcr_digest, digest, 32) == 0, KMS_ERR_ATT_PCR,
               "TPM quote pcrDigest does not equal SHA-256 of the %zu pcr_values", q->n_pcrs);
    for (size_t i = 0; i < q->n_pcrs; i++) {
        const struct kms_pcr_value *v = &q->pcrs[i];

        KMS_GUARD(replay_pcr(q, v->index, replay, &n_ev));
        /* PCRs without logged events (PCR 14: runtime events) are checked by the caller */
        KMS_ENSURE(n_ev == 0 || memcmp(replay, v->value.p, 32) == 0, KMS_ERR_ATT_PCR,
                   "replay of %zu event-log entries does not match quoted PCR %u", n_ev, v->index);
        for (int k = 0; k < 3; k++) {
            if (v->index == want[k]) {
                memcpy(out->pcr[k], v->value.p, 32);
                have[k] = 1;
            }
        }
    }
    for (int k = 0; k < 3; k++)
        KMS_ENSURE(have[k], KMS_ERR_ATT_PCR, "TPM quote does not cover PCR %u (policy 0,2,14)",
                   want[k]);
out:
    EVP_MD_CTX_free(mctx);
    return rc;
}

int kms_tpm_verify(const struct kms_attest_ctx *ctx, const struct kms_tpm_quote *q,
                   const uint8_t *qualifying_data, size_t qd_len, struct kms_verified *out)
{
    const uint8_t *p = q->ak_cert.p;
    X509 *ak = NULL;
    EVP_PKEY *key = NULL;
    struct kms_tpms_attest a;
    int is_sim = 0;
    int rc = 0;

    KMS_ENSURE(q->ak_cert.len > 0 && q->ak_cert.len <= KMS_ATT_MAX_FIELD, KMS_ERR_ATT_CHAIN,
               "TPM quote carries no AK certificate");
    ak = d2i_X509(NULL, &p, (long)q->ak_cert.len);
    if (ak == NULL || p != q->ak_cert.p + q->ak_cert.len) {
        rc = kms_err_ossl(KMS_ERR_ATT_FORMAT, "TPM AK certificate is not one DER certificate");
        goto out;
    }
    /* trust the key first, then the signature, and only then look inside the signed message */
    KMS_GUARD(
        kms_aia_verify_chain(ctx, KMS_ROOT_GCP, ak, NULL, "TPM AK certificate chain", &is_sim));
    key = X509_get_pubkey(ak);
    KMS_ENSURE(key != NULL, KMS_ERR_ATT_TPM_SIG, "TPM AK certificate key cannot be decoded");
    KMS_GUARD(
        verify_signature(key, q->message.p, q->message.len, q->signature.p, q->signature.len));
    KMS_GUARD(kms_tpms_attest_parse(q->message.p, q->message.len, &a));
    KMS_GUARD(check_pcrs(q, &a, out));
    KMS_ENSURE(a.extra_data_len == qd_len &&
                   (qd_len == 0 || memcmp(a.extra_data, qualifying_data, qd_len) == 0),
               KMS_ERR_ATT_REPORT_DATA,
               "TPM quote extraData (%zu bytes) does not equal the expected qualifying data "
               "(SHA-256 of the TDX quote)",
               a.extra_data_len);
    out->sim = is_sim;
out:
    EVP_PKEY_free(key);
    X509_free(ak);
    return rc;
}

void kms_tpm_quote_clear(struct kms_tpm_quote *q)
{
    if (q == NULL)
        return;
    free(q->message.p);
    free(q->signature.p);
    for (size_t i = 0; i < q->n_pcrs; i++) {
        free(q->pcrs[i].algorithm);
        free(q->pcrs[i].value.p);
    }
    free(q->pcrs);
    free(q->ak_cert.p);
    kms_tpm_events_free(q->events, q->n_events);
    memset(q, 0, sizeof(*q));
}
