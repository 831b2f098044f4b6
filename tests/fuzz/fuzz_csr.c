/*
 * Fuzz target: SignCert CSRs (common/crypto/csr.c), the SCALE CertSigningRequestV1 / V2 a client
 * sends. The input is decoded as api_version 1 and as api_version 2 (the seeds hold both kinds).
 *
 * Invariants:
 *  - a rejection is KMS_ERR_PARSE / KMS_ERR_TOOBIG (V2 also attest's KMS_ERR_ATT_FORMAT) or
 *    NOMEM, and leaves the output zeroed;
 *  - an accepted CSR respects the header's limits (strings, SANs, pubkey), has the fields of
 *    its version only, and re-encodes to exactly the input bytes;
 *  - an accepted V1 CSR that upgrades to V2 (legacy quote + event log → DstackTdx) encodes to
 *    bytes that decode as V2 and re-encode identically; a failed upgrade leaves it V1.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "common/crypto/csr.h"

static int all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;

    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return 0;
    return 1;
}

static void check_str(const char *s)
{
    FUZZ_ASSERT(s != NULL && strlen(s) <= KMS_CSR_MAX_STR);
}

static void check_fields(const struct kms_csr *c, int ver)
{
    const struct kms_csr_config *k = &c->config;

    FUZZ_ASSERT(c->version == ver);
    check_str(c->confirm);
    check_str(k->subject);
    if (k->org_name != NULL)
        check_str(k->org_name);
    FUZZ_ASSERT(k->n_san <= KMS_CSR_MAX_SAN && (k->n_san == 0 || k->san != NULL));
    for (size_t i = 0; i < k->n_san; i++)
        check_str(k->san[i]);
    FUZZ_ASSERT(c->pubkey.len <= KMS_CSR_MAX_PUBKEY);
    FUZZ_ASSERT(k->usage_server_auth == !!k->usage_server_auth);
    FUZZ_ASSERT(k->usage_client_auth == !!k->usage_client_auth && k->ext_quote == !!k->ext_quote);
    if (ver == 1) {
        FUZZ_ASSERT(c->att == NULL && k->ext_app_info == 0);
        FUZZ_ASSERT(!k->has_not_before && !k->has_not_after);
        FUZZ_ASSERT(c->quote.len <= KMS_ATT_MAX_BYTES && c->event_log.len <= KMS_ATT_MAX_BYTES);
    } else {
        FUZZ_ASSERT(c->att != NULL && c->quote.len == 0 && c->event_log.len == 0);
        FUZZ_ASSERT(k->ext_app_info == !!k->ext_app_info);
    }
}

/* The upgraded V1 CSR is a V2 CSR that survives its own codec. */
static void check_upgrade(struct kms_csr *c)
{
    struct kms_csr d;
    uint8_t *e1 = NULL, *e2 = NULL;
    size_t l1 = 0, l2 = 0;
    int rc = kms_csr_upgrade(c);

    if (rc < 0) {
        FUZZ_ASSERT(c->version == 1 && c->att == NULL);
        return;
    }
    FUZZ_ASSERT(c->version == 2 && c->att != NULL && c->att->mode == KMS_ATT_TDX);
    FUZZ_ASSERT(c->config.ext_app_info == 0 && !c->config.has_not_before);
    rc = kms_csr_encode(c, &e1, &l1);
    if (rc == KMS_ERR_NOMEM)
        return;
    FUZZ_ASSERT(rc == 0);
    rc = kms_csr_decode(2, e1, l1, &d);
    FUZZ_ASSERT(rc == 0 || rc == KMS_ERR_NOMEM);
    if (rc == 0) {
        check_fields(&d, 2);
        FUZZ_ASSERT(kms_csr_encode(&d, &e2, &l2) == 0);
        FUZZ_ASSERT(l1 == l2 && memcmp(e1, e2, l1) == 0);
        kms_csr_free(&d);
    }
    free(e1);
    free(e2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > KMS_CSR_MAX_BYTES)
        return 0;
    for (int ver = 1; ver <= 2; ver++) {
        struct kms_csr c;
        uint8_t *enc = NULL;
        size_t len = 0;
        int rc;

        memset(&c, 0xa5, sizeof(c));
        rc = kms_csr_decode(ver, data, size, &c);
        if (rc < 0) {
            FUZZ_ASSERT(rc == KMS_ERR_PARSE || rc == KMS_ERR_TOOBIG || rc == KMS_ERR_NOMEM ||
                        (ver == 2 && rc == KMS_ERR_ATT_FORMAT));
            FUZZ_ASSERT(all_zero(&c, sizeof(c)));
            continue;
        }
        check_fields(&c, ver);
        rc = kms_csr_encode(&c, &enc, &len);
        FUZZ_ASSERT(rc == 0 || rc == KMS_ERR_NOMEM);
        if (rc == 0)
            FUZZ_ASSERT(len == size && memcmp(enc, data, size) == 0);
        free(enc);
        if (ver == 1)
            check_upgrade(&c);
        kms_csr_free(&c);
        FUZZ_ASSERT(all_zero(&c, sizeof(c)));
    }
    return 0;
}
