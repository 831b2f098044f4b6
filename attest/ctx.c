/* Verification context: pinned roots, time, and chain verification shared by all verifiers. */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

#include "attest/aia.h"
#include "attest/internal.h"
#include "attest/pki.h"

struct kms_attest_ctx *kms_attest_ctx_new(void)
{
    return calloc(1, sizeof(struct kms_attest_ctx));
}

void kms_attest_ctx_free(struct kms_attest_ctx *ctx)
{
    if (ctx == NULL)
        return;
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < ctx->n_roots[k]; i++)
            X509_free(ctx->roots[k][i].cert);
    }
    kms_aia_free(ctx->aia); /* aia */
    free(ctx);
}

int kms_attest_ctx_add_root(struct kms_attest_ctx *ctx, enum kms_root_kind kind, X509 *root,
                            int is_sim)
{
    if ((int)kind < 0 || kind > KMS_ROOT_GCP || root == NULL)
        return kms_err_set(KMS_ERR_INVAL, "invalid trust anchor");
    if (ctx->n_roots[kind] >= KMS_ATTEST_MAX_ROOTS)
        return kms_err_set(KMS_ERR_TOOBIG, "too many trust anchors (max %d)", KMS_ATTEST_MAX_ROOTS);
    if (X509_up_ref(root) != 1)
        return kms_err_ossl(KMS_ERR_CRYPTO, "X509_up_ref");
    ctx->roots[kind][ctx->n_roots[kind]].cert = root;
    ctx->roots[kind][ctx->n_roots[kind]].is_sim = is_sim;
    ctx->n_roots[kind]++;
    return 0;
}

int kms_attest_ctx_add_root_file(struct kms_attest_ctx *ctx, enum kms_root_kind kind,
                                 const char *path, int is_sim)
{
    BIO *bio = BIO_new_file(path, "r");
    X509 *cert;
    int n = 0;
    int rc = 0;

    if (bio == NULL)
        return kms_err_ossl(KMS_ERR_IO, "cannot open trust anchor file");
    for (;;) {
        cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (cert == NULL)
            break;
        rc = kms_attest_ctx_add_root(ctx, kind, cert, is_sim);
        X509_free(cert);
        if (rc < 0)
            goto out;
        n++;
    }
    ERR_clear_error();
    if (n == 0)
        rc = kms_err_set(KMS_ERR_PARSE, "no PEM certificate in trust anchor file %s", path);
out:
    BIO_free(bio);
    return rc;
}

void kms_attest_ctx_set_time(struct kms_attest_ctx *ctx, time_t now)
{
    ctx->now = now;
}

void kms_attest_ctx_set_nitro_device_id_fixed(struct kms_attest_ctx *ctx, int fixed)
{
    ctx->nitro_device_id_fixed = fixed;
}

time_t kms_attest_now(const struct kms_attest_ctx *ctx)
{
    return ctx->now != 0 ? ctx->now : time(NULL);
}

int kms_attest_verify_chain_get(const struct kms_attest_ctx *ctx, enum kms_root_kind kind,
                                X509 *leaf, STACK_OF(X509) * intermediates, const char *what,
                                int *is_sim, STACK_OF(X509) * *chain)
{
    X509 *anchors[KMS_ATTEST_MAX_ROOTS];
    X509 *top;
    int rc = 0;

    *is_sim = 0;
    for (size_t i = 0; i < ctx->n_roots[kind]; i++)
        anchors[i] = ctx->roots[kind][i].cert;
    KMS_GUARD(kms_attest_chain_at(anchors, ctx->n_roots[kind], leaf, intermediates,
                                  kms_attest_now(ctx), what, KMS_ERR_ATT_CHAIN, chain));
    top = sk_X509_value(*chain, sk_X509_num(*chain) - 1);
    for (size_t i = 0; i < ctx->n_roots[kind]; i++) {
        if (X509_cmp(top, ctx->roots[kind][i].cert) == 0)
            *is_sim = ctx->roots[kind][i].is_sim;
    }
out:
    return rc;
}

int kms_attest_verify_chain(const struct kms_attest_ctx *ctx, enum kms_root_kind kind, X509 *leaf,
                            STACK_OF(X509) * intermediates, const char *what, int *is_sim)
{
    STACK_OF(X509) *chain = NULL;
    int rc;

    rc = kms_attest_verify_chain_get(ctx, kind, leaf, intermediates, what, is_sim, &chain);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}
