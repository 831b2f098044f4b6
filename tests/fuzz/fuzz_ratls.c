/*
 * Fuzz target: RA-TLS certificate extensions. The input is a DER certificate (d2i_X509, as a
 * TLS peer would present it); kms_ratls_get_attestation then reads OID .1.8 (SCALE) or the
 * legacy pair .1.1 + .1.2 (raw quote + JSON event log), and the other dstack extensions are read
 * with kms_ratls_get_ext.
 *
 * Invariants: rejections carry a documented code and leave *out NULL; extension contents come
 * back NUL-terminated; an attestation read from a certificate can be written to a new
 * certificate and read back with the same content (stripped SCALE for non-TDX modes, the same
 * event log for TDX when its quote parses).
 */
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

#include "attest/attest.h"
#include "attest/tdx.h"
#include "fuzz.h"

static int bytes_eq(const struct kms_bytes *a, const struct kms_bytes *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static void check_rewrite(const struct kms_attestation *att)
{
    struct kms_attestation *back = NULL;
    X509 *c2 = X509_new();
    int rc;

    FUZZ_ASSERT(c2 != NULL);
    rc = kms_ratls_add_attestation(c2, att);
    if (att->mode == KMS_ATT_TDX && att->tdx_quote.len == 0) {
        FUZZ_ASSERT(rc == KMS_ERR_INVAL);
        X509_free(c2);
        return;
    }
    FUZZ_ASSERT(rc == 0);
    rc = kms_ratls_get_attestation(c2, &back);
    if (att->mode == KMS_ATT_TDX) {
        struct kms_tdx_quote q;

        if (kms_tdx_quote_parse(att->tdx_quote.p, att->tdx_quote.len, &q) < 0) {
            FUZZ_ASSERT(rc < 0 && back == NULL);
        } else {
            FUZZ_ASSERT(rc == 0 && back->n_tdx_events == att->n_tdx_events);
            for (size_t i = 0; i < att->n_tdx_events; i++) {
                FUZZ_ASSERT(strcmp(back->tdx_events[i].event, att->tdx_events[i].event) == 0);
                FUZZ_ASSERT(bytes_eq(&back->tdx_events[i].digest, &att->tdx_events[i].digest));
                FUZZ_ASSERT(bytes_eq(&back->tdx_events[i].payload, &att->tdx_events[i].payload));
            }
            FUZZ_ASSERT(bytes_eq(&back->tdx_quote, &att->tdx_quote));
        }
    } else {
        uint8_t *a = NULL;
        uint8_t *b = NULL;
        size_t alen = 0;
        size_t blen = 0;

        FUZZ_ASSERT(rc == 0);
        FUZZ_ASSERT(kms_att_encode(att, 1, &a, &alen) == 0);
        FUZZ_ASSERT(kms_att_encode(back, 1, &b, &blen) == 0);
        FUZZ_ASSERT(alen == blen && memcmp(a, b, alen) == 0);
        free(a);
        free(b);
    }
    kms_att_free(back);
    X509_free(c2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const oids[] = {KMS_OID_APP_ID,    KMS_OID_CERT_USAGE, KMS_OID_APP_INFO,
                                       KMS_OID_TDX_QUOTE, KMS_OID_EVENT_LOG,  KMS_OID_ATTESTATION};
    const uint8_t *p = data;
    struct kms_attestation *att = NULL;
    uint8_t rd[64];
    X509 *cert;
    int rc;

    if (size > KMS_ATT_MAX_BYTES + 65536)
        return 0;
    cert = d2i_X509(NULL, &p, (long)size);
    if (cert == NULL) {
        ERR_clear_error();
        return 0;
    }
    for (size_t i = 0; i < sizeof(oids) / sizeof(oids[0]); i++) {
        uint8_t *v = NULL;
        size_t vlen = 0;

        rc = kms_ratls_get_ext(cert, oids[i], &v, &vlen);
        FUZZ_ASSERT(rc == 0 || rc == KMS_ERR_NOTFOUND || rc == KMS_ERR_ATT_FORMAT ||
                    rc == KMS_ERR_TOOBIG || rc == KMS_ERR_NOMEM);
        FUZZ_ASSERT(rc == 0 ? (v != NULL && v[vlen] == '\0') : v == NULL);
        free(v);
    }
    rc = kms_ratls_get_attestation(cert, &att);
    if (rc < 0) {
        FUZZ_ASSERT(att == NULL);
        FUZZ_ASSERT(rc == KMS_ERR_ATT_NONE || rc == KMS_ERR_ATT_FORMAT ||
                    rc == KMS_ERR_ATT_UNSUPPORTED || rc == KMS_ERR_TOOBIG || rc == KMS_ERR_NOMEM);
    } else {
        FUZZ_ASSERT(att != NULL);
        check_rewrite(att);
        kms_att_free(att);
    }
    rc = kms_report_data_for_cert(cert, rd);
    FUZZ_ASSERT(rc == 0 || rc == KMS_ERR_CRYPTO);
    ERR_clear_error();
    X509_free(cert);
    return 0;
}
