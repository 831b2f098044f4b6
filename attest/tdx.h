/* attest: TDX v4 and v5 quotes (parsing, signature verification; attestation-reference.md §3) and
 * TDX quote generation on real hardware (configfs-tsm, /dev/tdx_guest). */
#ifndef KMS_ATTEST_TDX_H
#define KMS_ATTEST_TDX_H

#include <openssl/x509.h>

#include "attest/attest.h"

/* ------------------------------------------------------------- v4/v5 quotes (tdx_quote.c) */

/* The quoting enclave's SGX report body (reserved fields skipped). */
struct kms_tdx_qe_report {
    uint8_t cpu_svn[16];
    uint32_t misc_select;
    uint8_t attributes[16];
    uint8_t mr_enclave[32];
    uint8_t mr_signer[32];
    uint16_t isv_prod_id;
    uint16_t isv_svn;
    uint8_t report_data[64];
};

struct kms_buf;
/* Appends the KMS_TDX_QE_REPORT_LEN-byte SGX report body of e (reserved fields zero); used by
 * the simulated QE. */
KMS_WUR int kms_tdx_qe_report_put(struct kms_buf *b, const struct kms_tdx_qe_report *e);

/* A parsed v4 or v5 TDX quote. Pointers borrow from the input buffer. */
struct kms_tdx_quote {
    uint16_t version;   /* 4 or 5 */
    uint16_t body_type; /* KMS_TDX_BODY_TD10 or KMS_TDX_BODY_TD15 (a v4 quote: TD10) */
    uint16_t att_key_type;
    uint32_t tee_type;
    uint16_t qe_svn;
    uint16_t pce_svn;
    uint8_t qe_vendor_id[16];
    struct kms_tdx_report report;
    uint8_t tee_tcb_svn2[16];   /* TD 1.5 body only (else zero) */
    uint8_t mr_service_td[48];  /* TD 1.5 body only (else zero) */
    const uint8_t *signed_data; /* header || [v5: body type, size] || body */
    size_t signed_len;
    const uint8_t *sig;        /* 64: r||s */
    const uint8_t *attest_key; /* 64: X||Y */
    const uint8_t *qe_report;  /* 384: the signed bytes of qe */
    struct kms_tdx_qe_report qe;
    const uint8_t *qe_report_sig; /* 64 */
    const uint8_t *qe_auth;
    size_t qe_auth_len;
    const uint8_t *pck_chain; /* PEM, cert-data type 5 */
    size_t pck_chain_len;
};

#define KMS_TDX_HEADER_LEN 48u
#define KMS_TDX_BODY_LEN 584u   /* TD report 1.0 */
#define KMS_TDX_BODY15_LEN 648u /* TD report 1.5: 1.0 || tee_tcb_svn2 || mr_service_td */
#define KMS_TDX_V5_BODY_HDR 6u  /* v5: body type (u16) || body size (u32) */
#define KMS_TDX_BODY_TD10 2u
#define KMS_TDX_BODY_TD15 3u
#define KMS_TDX_QE_REPORT_LEN 384u
#define KMS_TDX_QE_AUTH_LEN 32u /* dcap-qvl refuses other QE authentication data lengths */

/* Parses a v4 or v5 quote (v5 body types 2 = TD report 1.0 and 3 = TD report 1.5), with the
 * reference verifier's (dcap-qvl) tolerance of unsigned trailing bytes: after the quote's
 * authentication data, after the QE certification data inside it, and after the PCK chain inside
 * that. The certification-data type of the QE report is not checked (dcap-qvl ignores it); the
 * PCK chain's must be 5. KMS_ERR_ATT_FORMAT when malformed, KMS_ERR_ATT_UNSUPPORTED for another
 * version, body type or attestation key type. */
KMS_WUR int kms_tdx_quote_parse(const uint8_t *p, size_t len, struct kms_tdx_quote *q);

/* The reference verifier's TD-attribute rules (dcap-qvl validate_td10 / validate_td15), with its
 * error texts, as KMS_ERR_ATT_TCB: TUD bits 7:1 or SEC/OTHER reserved bits set ("Reserved bits
 * in TD attributes are set"), TUD.DEBUG set ("Debug mode is enabled"), SEPT_VE_DISABLE clear
 * ("SEPT_VE_DISABLE is not enabled"), and for a TD 1.5 body a non-zero MR service TD ("Invalid
 * MR service TD"). */
KMS_WUR int kms_tdx_check_attributes(const struct kms_tdx_quote *q);

/* Strict PEM certificate list (PCK chains, collateral issuer chains): every
 * "-----BEGIN <label>-----" .. "-----END <label>-----" block must have matching labels, no
 * encapsulated headers, canonical base64 (whitespace ignored) and exactly one DER certificate;
 * text outside blocks is ignored, as dcap-qvl's PEM reader does. At most max certificates
 * (KMS_ERR_TOOBIG beyond). *out: caller frees with sk_X509_pop_free (NULL on error; may be empty).
 * KMS_ERR_ATT_FORMAT names the block that failed. */
KMS_WUR int kms_tdx_pem_certs(const uint8_t *pem, size_t len, int max, STACK_OF(X509) * *out);

/* Verifies a quote's signatures, PCK chain and TD attributes (no event-log checks). */
KMS_WUR int kms_tdx_quote_verify(const struct kms_attest_ctx *ctx, const uint8_t *quote, size_t len,
                                 struct kms_verified *out);

/* ---------------------------------------------------------------- quotes on real hardware:
 * configfs-tsm and /dev/tdx_guest (tdx_tsm.c) */

#define KMS_TSM_REPORT_DIR "/sys/kernel/config/tsm/report"
#define KMS_TDX_GUEST_DEV "/dev/tdx_guest"
#define KMS_TSM_MAX_OUTBLOB (64u * 1024u) /* a v4 quote with its PCK chain is about 5 KB */
#define KMS_TDX_REPORT_LEN 1024u          /* TDREPORT (TDG.MR.REPORT) */

/* configfs-tsm options. */
struct kms_tsm_opts {
    const char *root; /* report root; NULL = KMS_TSM_REPORT_DIR */
    /* Test seam: called right after the report directory is created and before inblob is
     * written, standing in for the kernel that populates a new report directory with its
     * attributes (inblob, outblob, generation, provider). NULL in production. */
    int (*on_mkdir)(void *arg, const char *report_dir);
    void *arg;
};

/* TDX quote through configfs-tsm: mkdir <root>/<unique>, write the 64-byte inblob, read
 * outblob, then require generation == 1 (no other writer touched the report between our write
 * and read) and provider "tdx_guest" (when present); the outblob must parse as a TDX quote
 * carrying report_data. The report directory is removed afterwards. KMS_ERR_NOTFOUND when the
 * root does not exist, KMS_ERR_IO on OS errors, KMS_ERR_STATE when the generation changed,
 * KMS_ERR_ATT_FORMAT for a short or wrong outblob. Caller frees *quote. */
KMS_WUR int kms_tsm_tdx_quote(const struct kms_tsm_opts *o, const uint8_t report_data[64],
                              uint8_t **quote, size_t *len);

/* Legacy TDX quote: TDX_CMD_GET_REPORT0 then TDX_CMD_GET_QUOTE (GetQuote TDVMCALL carrying a QGS
 * get-quote message) on dev (NULL = KMS_TDX_GUEST_DEV). KMS_ERR_NOTFOUND when dev is absent.
 * Caller frees *quote. */
KMS_WUR int kms_tdx_guest_quote(const char *dev, const uint8_t report_data[64], uint8_t **quote,
                                size_t *len);

/* configfs-tsm when its root exists, else the /dev/tdx_guest ioctl. Caller frees *quote. */
KMS_WUR int kms_tdx_get_quote(const struct kms_tsm_opts *o, const char *dev,
                              const uint8_t report_data[64], uint8_t **quote, size_t *len);

/* The GetQuote shared buffer of the legacy ioctl (exposed for tests): build the request around a
 * TDREPORT into buf (cap bytes, *len = bytes used by header + message), and extract the quote
 * from a completed buffer (status, lengths and QGS message checked; caller frees *quote). */
KMS_WUR int kms_tdx_qgs_request(const uint8_t tdreport[KMS_TDX_REPORT_LEN], uint8_t *buf,
                                size_t cap, size_t *len);
KMS_WUR int kms_tdx_qgs_response(const uint8_t *buf, size_t len, uint8_t **quote,
                                 size_t *quote_len);

/* ---- shared by the verifiers in attest/ (not for use outside attest/) ---- */

/* The signature and binding checks of every TDX quote verification (tdx_quote.c): parses the
 * quote into *q, then checks the quote signature by the attestation key, the QE report signature
 * by the PCK leaf (the first PEM certificate the quote carries) and that the QE report data is
 * SHA-256(attestation key || QE auth data) || 0^32. *pck_certs receives the certificates the
 * quote carries, leaf first (caller frees with sk_X509_pop_free; NULL on error). */
int kms_tdx_quote_check_sigs(const uint8_t *quote, size_t len, struct kms_tdx_quote *q,
                             STACK_OF(X509) * *pck_certs);
/* The PCK chain (pck_certs as above) to a pinned TDX root of ctx at its verification time:
 * *chain = leaf .. root (caller frees), *is_sim. Errors of kms_attest_verify_chain. */
int kms_tdx_pck_chain(const struct kms_attest_ctx *ctx, STACK_OF(X509) * pck_certs,
                      STACK_OF(X509) * *chain, int *is_sim);

#endif
