/*
 * NSM client (nsm.h): the /dev/nsm raw ioctl with CBOR messages. Requests are written with the
 * in-tree CBOR writer (attest/cbor.h) and copied into a fixed buffer; responses are read with a
 * bounded reader that accepts only the two shapes an Attestation request can get back, so no
 * untrusted count is ever allocated on.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "attest/cbor.h"
#include "attest/nsm.h"
#include "common/buf.h"

/* ---------------------------------------------------------------- request */

/* key: bstr, or key: null when p is NULL. */
static int put_field(struct kms_buf *b, const char *key, const uint8_t *p, size_t n)
{
    int rc = 0;

    KMS_GUARD(kms_cbor_put_tstr(b, key));
    if (p != NULL)
        KMS_GUARD(kms_cbor_put_bstr(b, p, n));
    else
        KMS_GUARD(kms_cbor_put_null(b));
out:
    return rc;
}

int kms_nsm_encode_attestation(const struct kms_nsm_att_req *req, uint8_t *out, size_t cap,
                               size_t *len)
{
    struct kms_buf b = {0};
    int rc = 0;

    *len = 0;
    KMS_ENSURE(req->user_data == NULL || req->user_data_len <= KMS_NSM_USER_DATA_MAX,
               KMS_ERR_TOOBIG, "NSM user_data of %zu bytes (max %u)", req->user_data_len,
               KMS_NSM_USER_DATA_MAX);
    KMS_ENSURE(req->nonce == NULL || req->nonce_len <= KMS_NSM_NONCE_MAX, KMS_ERR_TOOBIG,
               "NSM nonce of %zu bytes (max %u)", req->nonce_len, KMS_NSM_NONCE_MAX);
    KMS_ENSURE(req->public_key == NULL || req->public_key_len <= KMS_NSM_PUBLIC_KEY_MAX,
               KMS_ERR_TOOBIG, "NSM public_key of %zu bytes (max %u)", req->public_key_len,
               KMS_NSM_PUBLIC_KEY_MAX);
    /* {"Attestation": {...}}, fields in the Rust struct's order, as serde_cbor writes them */
    KMS_GUARD(kms_cbor_put_map(&b, 1));
    KMS_GUARD(kms_cbor_put_tstr(&b, "Attestation"));
    KMS_GUARD(kms_cbor_put_map(&b, 3));
    KMS_GUARD(put_field(&b, "user_data", req->user_data, req->user_data_len));
    KMS_GUARD(put_field(&b, "nonce", req->nonce, req->nonce_len));
    KMS_GUARD(put_field(&b, "public_key", req->public_key, req->public_key_len));
    KMS_ENSURE(b.len <= cap, KMS_ERR_TOOBIG, "NSM request larger than %zu bytes", cap);
    memcpy(out, b.data, b.len);
    *len = b.len;
out:
    kms_buf_free(&b);
    return rc;
}

/* ---------------------------------------------------------------- response */

/* A text or byte string of the given major type, borrowed from r. */
static int string(struct kms_reader *r, uint8_t want, const uint8_t **p, size_t *n)
{
    uint8_t major;
    uint64_t val;
    int rc = 0;

    KMS_GUARD(kms_cbor_head32(r, &major, &val));
    KMS_ENSURE(major == want, KMS_ERR_PARSE, "expected a CBOR %s string",
               want == 3 ? "text" : "byte");
    KMS_ENSURE(val <= kms_rd_left(r), KMS_ERR_PARSE, "CBOR string of %llu bytes exceeds input",
               (unsigned long long)val);
    *n = (size_t)val;
    KMS_GUARD(kms_rd_ptr(r, *n, p));
out:
    return rc;
}

static int text_is(const uint8_t *p, size_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

int kms_nsm_decode_attestation(const uint8_t *resp, size_t len, const uint8_t **doc,
                               size_t *doc_len)
{
    struct kms_reader r;
    const uint8_t *k, *v;
    size_t kn, vn;
    uint8_t major;
    uint64_t val;
    int rc = 0;

    *doc = NULL;
    *doc_len = 0;
    kms_rd_init(&r, resp, len);
    rc = kms_cbor_head32(&r, &major, &val);
    KMS_ENSURE(rc == 0 && major == 5 && val == 1, KMS_ERR_PARSE,
               "NSM response is not a CBOR map with one entry");
    KMS_GUARD(string(&r, 3, &k, &kn));
    if (text_is(k, kn, "Error")) {
        rc = string(&r, 3, &v, &vn);
        KMS_ENSURE(rc == 0 && vn <= 64, KMS_ERR_PARSE, "NSM error answer is malformed");
        rc = kms_err_set(KMS_ERR_IO, "the NSM refused the attestation request: %.*s", (int)vn,
                         (const char *)v);
        goto out;
    }
    KMS_ENSURE(text_is(k, kn, "Attestation"), KMS_ERR_PARSE,
               "NSM answered %.*s to an Attestation request", (int)(kn < 64 ? kn : 64),
               (const char *)k);
    rc = kms_cbor_head32(&r, &major, &val);
    KMS_ENSURE(rc == 0 && major == 5 && val == 1, KMS_ERR_PARSE,
               "NSM Attestation answer is not a map with one entry");
    KMS_GUARD(string(&r, 3, &k, &kn));
    KMS_ENSURE(text_is(k, kn, "document"), KMS_ERR_PARSE, "NSM Attestation answer has no document");
    KMS_GUARD(string(&r, 2, doc, doc_len));
    KMS_ENSURE(*doc_len > 0, KMS_ERR_PARSE, "NSM returned an empty attestation document");
    KMS_ENSURE(kms_rd_left(&r) == 0, KMS_ERR_PARSE, "NSM response has %zu trailing bytes",
               kms_rd_left(&r));
out:
    if (rc < 0) {
        *doc = NULL;
        *doc_len = 0;
    }
    return rc;
}

/* ---------------------------------------------------------------- device */

int kms_nsm_get_attestation(const char *dev, const struct kms_nsm_att_req *req, uint8_t **doc,
                            size_t *doc_len)
{
    uint8_t *rq = NULL, *rs = NULL;
    size_t rq_len = 0;
    const uint8_t *d;
    size_t dn;
    struct kms_nsm_raw raw;
    int fd = -1, err;
    int rc = 0;

    *doc = NULL;
    *doc_len = 0;
    if (dev == NULL)
        dev = KMS_NSM_DEV;
    fd = open(dev, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        err = errno;
        if (err == ENOENT)
            rc = kms_err_set(KMS_ERR_NOTFOUND,
                             "no %s: not inside a Nitro Enclave (the Nitro Security Module "
                             "device is missing)",
                             dev);
        else
            rc = kms_err_set(KMS_ERR_IO, "cannot open the NSM device %s: %s", dev, strerror(err));
        goto out;
    }
    rq = malloc(KMS_NSM_REQUEST_MAX);
    rs = calloc(1, KMS_NSM_RESPONSE_MAX);
    KMS_GUARD_PTR(rq);
    KMS_GUARD_PTR(rs);
    KMS_GUARD(kms_nsm_encode_attestation(req, rq, KMS_NSM_REQUEST_MAX, &rq_len));
    memset(&raw, 0, sizeof(raw));
    raw.request.addr = (uint64_t)(uintptr_t)rq;
    raw.request.len = rq_len;
    raw.response.addr = (uint64_t)(uintptr_t)rs;
    raw.response.len = KMS_NSM_RESPONSE_MAX;
    if (ioctl(fd, KMS_NSM_IOCTL_RAW, &raw) != 0) {
        err = errno;
        if (err == ENOTTY || err == EINVAL)
            rc = kms_err_set(KMS_ERR_IO, "%s is not a Nitro Security Module (ioctl: %s)", dev,
                             strerror(err));
        else
            rc = kms_err_set(KMS_ERR_IO, "NSM attestation request on %s failed: %s", dev,
                             strerror(err));
        goto out;
    }
    /* the driver reports the bytes written; never trust it beyond our buffer */
    KMS_ENSURE(raw.response.len > 0 && raw.response.len <= KMS_NSM_RESPONSE_MAX, KMS_ERR_PARSE,
               "NSM response length %llu is outside 1..%u", (unsigned long long)raw.response.len,
               KMS_NSM_RESPONSE_MAX);
    KMS_GUARD(kms_nsm_decode_attestation(rs, (size_t)raw.response.len, &d, &dn));
    *doc = malloc(dn);
    KMS_GUARD_PTR(*doc);
    memcpy(*doc, d, dn);
    *doc_len = dn;
out:
    if (fd >= 0)
        close(fd);
    free(rq);
    free(rs);
    return rc;
}
