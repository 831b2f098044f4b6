/*
 * AWS Nitro Enclave NSM attestation documents (attestation-reference.md §1): COSE_Sign1 (ES384)
 * over a CBOR document whose certificate chains to the pinned AWS Nitro Enclaves Root G1.
 *
 * Every CBOR input first passes a bounded well-formedness walk (struct kms_reader): it bounds
 * nesting depth, rejects any declared length or item count larger than the bytes that remain and
 * checks every text string is UTF-8. The fields are then read from the checked bytes through the
 * in-tree item views (attest/cbor.h): zero-copy, nothing allocated on an untrusted count.
 */
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <string.h>

#include "attest/cbor.h"
#include "attest/internal.h"
#include "attest/nitro.h"
#include "common/buf.h"

#define NITRO_MAX_DEPTH 8u   /* COSE and the NSM document nest at most 3 deep */
#define NITRO_SIG_LEN 96u    /* ES384 r||s */
#define NITRO_PCR_LEN 48u    /* SHA-384 PCRs */
#define NITRO_MAX_PCRS 32u   /* NSM exposes PCR0..31 */
#define NITRO_MAX_CERT 4096u /* AWS spec: DER 1..1024; leave room */
#define NITRO_MAX_CABUNDLE 16u
#define NITRO_MAX_USER_DATA 512u /* AWS spec */
#define NITRO_MAX_NONCE 512u     /* AWS spec */
#define NITRO_MAX_PUBKEY 1024u   /* AWS spec */
#define NITRO_MAX_MODULE_ID 127u /* fits kms_verified.module_id */
#define COSE_TAG_SIGN1 18u
#define COSE_HDR_ALG 1u
#define COSE_HDR_CRIT 2u
#define COSE_ALG_ES384_NEG 34u /* -35 is stored as negint 34 */

/* What a parsed document gives the verifier; pointers borrow from the input document. */
struct nitro_doc {
    const uint8_t *prot;
    size_t prot_len;
    const uint8_t *payload;
    size_t payload_len;
    const uint8_t *sig;
    char module_id[NITRO_MAX_MODULE_ID + 1];
    uint64_t timestamp_ms;
    const uint8_t *pcr[3];
    const uint8_t *cert;
    size_t cert_len;
    const uint8_t *cab[NITRO_MAX_CABUNDLE];
    size_t cab_len[NITRO_MAX_CABUNDLE];
    size_t n_cab;
    const uint8_t *user_data; /* NULL when absent or null */
    size_t user_data_len;
};

/* ---------------------------------------------------------------- CBOR well-formedness */

/* Walks one item. Allowed: integers, definite byte/text strings, definite or indefinite arrays
 * and maps (AWS emits the document as an indefinite map), false/true/null. Rejected: tags (the
 * only legal one, COSE_Sign1's 18 at the top, is removed before), indefinite strings, floats,
 * other simple values, stray breaks, depth > NITRO_MAX_DEPTH. A text string that is not UTF-8
 * sets *bad_text and the walk goes on (the caller reports it only for an otherwise valid item). */
static int doc_walk(struct kms_reader *r, unsigned depth, int *bad_text)
{
    struct kms_cbor_item it;
    struct kms_cbor_iter in;
    int more;
    int rc = 0;

    KMS_ENSURE(depth <= NITRO_MAX_DEPTH, KMS_ERR_PARSE, "nesting deeper than %u", NITRO_MAX_DEPTH);
    KMS_GUARD(kms_cbor_read(r, &it));
    switch (it.major) {
    case KMS_CBOR_TSTR:
        if (!kms_cbor_utf8_ok(it.p, it.len))
            *bad_text = 1;
        break;
    case KMS_CBOR_ARRAY:
    case KMS_CBOR_MAP:
        kms_cbor_iter_init(&in, r, &it);
        for (;;) {
            KMS_GUARD(kms_cbor_next(&in, &more));
            if (!more)
                break;
            KMS_GUARD(doc_walk(r, depth + 1, bad_text));
            if (it.major == KMS_CBOR_MAP)
                KMS_GUARD(doc_walk(r, depth + 1, bad_text));
        }
        break;
    case KMS_CBOR_TAG:
        rc = kms_err_set(KMS_ERR_PARSE, "unexpected CBOR tag %llu", (unsigned long long)it.val);
        goto out;
    case KMS_CBOR_SIMPLE:
        KMS_ENSURE(!it.indef, KMS_ERR_PARSE, "unexpected break");
        KMS_ENSURE(it.ai >= KMS_CBOR_FALSE && it.ai <= KMS_CBOR_NULL, KMS_ERR_PARSE,
                   "unsupported simple value or float (additional information %u)", it.ai);
        break;
    default: /* integers and byte strings were checked by kms_cbor_read */
        break;
    }
out:
    return rc;
}

/* Checks that p[0..len) is exactly one item the walk accepts, with UTF-8 text strings only, and
 * sets *r at its start (r borrows p). */
static int doc_check(const uint8_t *p, size_t len, const char *what, struct kms_reader *r)
{
    int bad_text = 0;
    int rc = 0;

    kms_rd_init(r, p, len);
    rc = doc_walk(r, 0, &bad_text);
    if (rc < 0) {
        rc = kms_err_wrap(KMS_ERR_ATT_FORMAT, "Nitro %s is not valid CBOR", what);
        goto out;
    }
    KMS_ENSURE(kms_rd_left(r) == 0, KMS_ERR_ATT_FORMAT,
               "Nitro %s has %zu trailing bytes after the CBOR item", what, kms_rd_left(r));
    KMS_ENSURE(!bad_text, KMS_ERR_ATT_FORMAT,
               "Nitro %s: CBOR decoder rejected it (invalid UTF-8 text)", what);
    kms_rd_init(r, p, len);
out:
    return rc;
}

/* Element count of the container it (just read from checked input). Reads of checked input do
 * not fail, but their codes are still passed on (fail closed). */
static int count_of(const struct kms_reader *r, const struct kms_cbor_item *it, uint64_t *n)
{
    return kms_cbor_count(r, it, NITRO_MAX_DEPTH, n);
}

/* ---------------------------------------------------------------- COSE_Sign1 */

/* Protected header: a map with alg (1) = -35 (ES384); crit (2), when present, may list only alg. */
static int parse_protected(const uint8_t *p, size_t len)
{
    struct kms_reader r;
    struct kms_cbor_item hdr, k, v, c;
    struct kms_cbor_iter pairs, crit;
    uint64_t n;
    int have_alg = 0, have_crit = 0, more;
    int rc = 0;

    KMS_GUARD(doc_check(p, len, "COSE protected header", &r));
    KMS_GUARD(kms_cbor_read(&r, &hdr));
    KMS_ENSURE(hdr.major == KMS_CBOR_MAP, KMS_ERR_ATT_FORMAT,
               "Nitro COSE protected header is not a map");
    kms_cbor_iter_init(&pairs, &r, &hdr);
    for (;;) {
        KMS_GUARD(kms_cbor_next(&pairs, &more));
        if (!more)
            break;
        KMS_GUARD(kms_cbor_read(&r, &k));
        if (kms_cbor_is_uint(&k, COSE_HDR_ALG)) {
            KMS_ENSURE(!have_alg, KMS_ERR_ATT_FORMAT, "Nitro COSE header repeats alg");
            have_alg = 1;
            KMS_GUARD(kms_cbor_read(&r, &v));
            KMS_ENSURE(v.major == KMS_CBOR_NEGINT && v.val == COSE_ALG_ES384_NEG,
                       KMS_ERR_ATT_FORMAT,
                       "Nitro COSE alg is not ES384 (-35); only ES384 documents are accepted");
        } else if (kms_cbor_is_uint(&k, COSE_HDR_CRIT)) {
            KMS_ENSURE(!have_crit, KMS_ERR_ATT_FORMAT, "Nitro COSE header repeats crit");
            have_crit = 1;
            KMS_GUARD(kms_cbor_read(&r, &v));
            n = 0;
            if (v.major == KMS_CBOR_ARRAY)
                KMS_GUARD(count_of(&r, &v, &n));
            KMS_ENSURE(v.major == KMS_CBOR_ARRAY && n > 0, KMS_ERR_ATT_FORMAT,
                       "Nitro COSE crit header is not a non-empty array");
            kms_cbor_iter_init(&crit, &r, &v);
            for (;;) {
                KMS_GUARD(kms_cbor_next(&crit, &more));
                if (!more)
                    break;
                KMS_GUARD(kms_cbor_read(&r, &c));
                KMS_ENSURE(kms_cbor_is_uint(&c, COSE_HDR_ALG) || kms_cbor_is_text(&c, "alg"),
                           KMS_ERR_ATT_FORMAT,
                           "Nitro COSE crit header lists a parameter this verifier does not "
                           "understand");
            }
        } else {
            /* other labels carry no meaning for ES384 and are not critical */
            KMS_GUARD(kms_cbor_skip_rest(&r, &k, NITRO_MAX_DEPTH));
            KMS_GUARD(kms_cbor_skip(&r, NITRO_MAX_DEPTH));
        }
    }
    KMS_ENSURE(have_alg, KMS_ERR_ATT_FORMAT, "Nitro COSE protected header has no alg");
out:
    return rc;
}

/* Byte string view with a size range; FORMAT otherwise. */
static int get_bstr(const struct kms_cbor_item *it, size_t min, size_t max, const char *what,
                    const uint8_t **p, size_t *len)
{
    int rc = 0;

    KMS_ENSURE(it->major == KMS_CBOR_BSTR, KMS_ERR_ATT_FORMAT, "Nitro %s is not a byte string",
               what);
    *len = it->len;
    KMS_ENSURE(*len >= min && *len <= max, KMS_ERR_ATT_FORMAT,
               "Nitro %s is %zu bytes, expected %zu..%zu", what, *len, min, max);
    *p = it->p;
out:
    return rc;
}

/* null, or a byte string of at most max bytes. */
static int get_opt_bstr(const struct kms_cbor_item *it, size_t max, const char *what,
                        const uint8_t **p, size_t *len)
{
    *p = NULL;
    *len = 0;
    if (kms_cbor_is_null(it))
        return 0;
    return get_bstr(it, 0, max, what, p, len);
}

/* The optional COSE_Sign1 tag (18) in front of the array: *body is what follows it. */
static int strip_cose_tag(const uint8_t *p, size_t len, const uint8_t **body, size_t *body_len)
{
    struct kms_reader r;
    uint8_t major, ai;
    uint64_t val;
    int indef;
    int rc = 0;

    *body = p;
    *body_len = len;
    if ((p[0] >> 5) != KMS_CBOR_TAG)
        return 0;
    kms_rd_init(&r, p, len);
    rc = kms_cbor_head(&r, &major, &ai, &val, &indef);
    if (rc < 0) {
        rc = kms_err_wrap(KMS_ERR_ATT_FORMAT, "Nitro document tag is not valid CBOR");
        goto out;
    }
    KMS_ENSURE(val == COSE_TAG_SIGN1 && !indef, KMS_ERR_ATT_FORMAT,
               "Nitro document carries CBOR tag %llu, expected 18 (COSE_Sign1)",
               (unsigned long long)val);
    *body = p + r.off;
    *body_len = len - r.off;
out:
    return rc;
}

/* COSE_Sign1 = [protected bstr, unprotected map, payload bstr, signature bstr(96)], read from the
 * checked document at r. Fills prot, payload, sig. */
static int parse_cose(struct kms_reader *r, struct nitro_doc *d)
{
    struct kms_cbor_item arr, el;
    const uint8_t *sig = NULL;
    size_t sig_len = 0;
    uint64_t n = 0;
    int rc = 0;

    KMS_GUARD(kms_cbor_read(r, &arr));
    if (arr.major == KMS_CBOR_ARRAY)
        KMS_GUARD(count_of(r, &arr, &n));
    KMS_ENSURE(arr.major == KMS_CBOR_ARRAY && n == 4, KMS_ERR_ATT_FORMAT,
               "Nitro document is not a COSE_Sign1 array of 4 elements");
    /* four elements follow the head (an indefinite array's break is not read) */
    KMS_GUARD(kms_cbor_read(r, &el));
    KMS_GUARD(get_bstr(&el, 0, NITRO_MAX_CERT, "COSE protected header", &d->prot, &d->prot_len));
    KMS_GUARD(parse_protected(d->prot, d->prot_len));
    KMS_GUARD(kms_cbor_read(r, &el));
    KMS_ENSURE(el.major == KMS_CBOR_MAP, KMS_ERR_ATT_FORMAT,
               "Nitro COSE unprotected header is not a map");
    KMS_GUARD(kms_cbor_skip_rest(r, &el, NITRO_MAX_DEPTH));
    KMS_GUARD(kms_cbor_read(r, &el));
    KMS_GUARD(get_bstr(&el, 1, KMS_ATT_MAX_BYTES, "COSE payload", &d->payload, &d->payload_len));
    KMS_GUARD(kms_cbor_read(r, &el));
    KMS_GUARD(get_bstr(&el, 0, KMS_ATT_MAX_BYTES, "COSE signature", &sig, &sig_len));
    KMS_ENSURE(sig_len == NITRO_SIG_LEN, KMS_ERR_ATT_FORMAT,
               "Nitro COSE signature is %zu bytes, expected 96 (ES384 r||s)", sig_len);
    d->sig = sig;
out:
    return rc;
}

/* ---------------------------------------------------------------- NSM document */

/* pcrs: the map m (just read from r) of PCR index to 48-byte value; consumes it. */
static int parse_pcrs(struct kms_reader *r, const struct kms_cbor_item *m, struct nitro_doc *d)
{
    struct kms_cbor_item k, v;
    struct kms_cbor_iter pairs;
    uint32_t seen = 0;
    uint64_t n = 0, idx;
    int more;
    int rc = 0;

    KMS_ENSURE(m->major == KMS_CBOR_MAP, KMS_ERR_ATT_FORMAT, "Nitro pcrs is not a map");
    KMS_GUARD(count_of(r, m, &n));
    KMS_ENSURE(n > 0 && n <= NITRO_MAX_PCRS, KMS_ERR_ATT_FORMAT,
               "Nitro pcrs holds %zu entries, expected 1..%u", (size_t)n, NITRO_MAX_PCRS);
    kms_cbor_iter_init(&pairs, r, m);
    for (;;) {
        KMS_GUARD(kms_cbor_next(&pairs, &more));
        if (!more)
            break;
        KMS_GUARD(kms_cbor_read(r, &k));
        KMS_ENSURE(k.major == KMS_CBOR_UINT, KMS_ERR_ATT_FORMAT,
                   "Nitro pcrs key is not an unsigned integer");
        idx = k.val;
        KMS_ENSURE(idx < NITRO_MAX_PCRS, KMS_ERR_ATT_FORMAT, "Nitro PCR index %llu out of range",
                   (unsigned long long)idx);
        KMS_ENSURE((seen & (1u << idx)) == 0, KMS_ERR_ATT_FORMAT, "Nitro PCR%llu appears twice",
                   (unsigned long long)idx);
        seen |= 1u << idx;
        KMS_GUARD(kms_cbor_read(r, &v));
        KMS_ENSURE(v.major == KMS_CBOR_BSTR, KMS_ERR_ATT_FORMAT,
                   "Nitro PCR%llu is not a byte string", (unsigned long long)idx);
        KMS_ENSURE(v.len == NITRO_PCR_LEN, KMS_ERR_ATT_FORMAT,
                   "Nitro PCR%llu is %zu bytes, expected 48 (SHA-384)", (unsigned long long)idx,
                   v.len);
        if (idx < 3)
            d->pcr[idx] = v.p;
    }
    KMS_ENSURE((seen & 7u) == 7u, KMS_ERR_ATT_FORMAT, "Nitro document lacks PCR0, PCR1 or PCR2");
out:
    return rc;
}

/* cabundle: the array a (just read from r) of 1..16 DER certificates; consumes it. */
static int parse_cabundle(struct kms_reader *r, const struct kms_cbor_item *a, struct nitro_doc *d)
{
    struct kms_cbor_item v;
    struct kms_cbor_iter els;
    uint64_t n = 0;
    size_t i = 0;
    int more;
    int rc = 0;

    KMS_ENSURE(a->major == KMS_CBOR_ARRAY, KMS_ERR_ATT_FORMAT, "Nitro cabundle is not an array");
    KMS_GUARD(count_of(r, a, &n));
    KMS_ENSURE(n > 0 && n <= NITRO_MAX_CABUNDLE, KMS_ERR_ATT_FORMAT,
               "Nitro cabundle holds %zu certificates, expected 1..%u", (size_t)n,
               NITRO_MAX_CABUNDLE);
    kms_cbor_iter_init(&els, r, a);
    for (;;) {
        KMS_GUARD(kms_cbor_next(&els, &more));
        if (!more)
            break;
        /* the count above bounds the loop; fail closed should they ever disagree */
        KMS_ENSURE(i < n, KMS_ERR_INTERNAL, "Nitro cabundle count changed while reading");
        KMS_GUARD(kms_cbor_read(r, &v));
        KMS_GUARD(get_bstr(&v, 1, NITRO_MAX_CERT, "cabundle entry", &d->cab[i], &d->cab_len[i]));
        i++;
    }
    d->n_cab = i;
out:
    return rc;
}

enum {
    F_MODULE_ID = 1 << 0,
    F_DIGEST = 1 << 1,
    F_TIMESTAMP = 1 << 2,
    F_PCRS = 1 << 3,
    F_CERT = 1 << 4,
    F_CABUNDLE = 1 << 5,
    F_PUBKEY = 1 << 6,
    F_USER_DATA = 1 << 7,
    F_NONCE = 1 << 8,
    F_REQUIRED = F_MODULE_ID | F_DIGEST | F_TIMESTAMP | F_PCRS | F_CERT | F_CABUNDLE,
};

static const struct {
    const char *name;
    unsigned flag;
} nitro_fields[] = {
    {"module_id", F_MODULE_ID}, {"digest", F_DIGEST},       {"timestamp", F_TIMESTAMP},
    {"pcrs", F_PCRS},           {"certificate", F_CERT},    {"cabundle", F_CABUNDLE},
    {"public_key", F_PUBKEY},   {"user_data", F_USER_DATA}, {"nonce", F_NONCE},
};

/* The value of a known field, read (and on success consumed) from r. */
static int parse_field(unsigned flag, struct kms_reader *r, struct nitro_doc *d)
{
    struct kms_cbor_item v;
    const uint8_t *p;
    size_t n;
    int rc = 0;

    KMS_GUARD(kms_cbor_read(r, &v));
    switch (flag) {
    case F_MODULE_ID:
        KMS_ENSURE(v.major == KMS_CBOR_TSTR, KMS_ERR_ATT_FORMAT,
                   "Nitro module_id is not a text string");
        n = v.len;
        p = v.p;
        KMS_ENSURE(n > 0 && n <= NITRO_MAX_MODULE_ID && memchr(p, 0, n) == NULL, KMS_ERR_ATT_FORMAT,
                   "Nitro module_id is empty, too long or contains NUL");
        memcpy(d->module_id, p, n);
        d->module_id[n] = '\0';
        break;
    case F_DIGEST:
        KMS_ENSURE(kms_cbor_is_text(&v, "SHA384"), KMS_ERR_ATT_FORMAT,
                   "Nitro document digest is not \"SHA384\"");
        break;
    case F_TIMESTAMP:
        KMS_ENSURE(v.major == KMS_CBOR_UINT, KMS_ERR_ATT_FORMAT,
                   "Nitro timestamp is not an unsigned integer");
        d->timestamp_ms = v.val;
        break;
    case F_PCRS:
        KMS_GUARD(parse_pcrs(r, &v, d));
        break;
    case F_CERT:
        KMS_GUARD(get_bstr(&v, 1, NITRO_MAX_CERT, "certificate", &d->cert, &d->cert_len));
        break;
    case F_CABUNDLE:
        KMS_GUARD(parse_cabundle(r, &v, d));
        break;
    case F_PUBKEY:
        KMS_GUARD(get_opt_bstr(&v, NITRO_MAX_PUBKEY, "public_key", &p, &n));
        break;
    case F_USER_DATA:
        KMS_GUARD(
            get_opt_bstr(&v, NITRO_MAX_USER_DATA, "user_data", &d->user_data, &d->user_data_len));
        break;
    default: /* F_NONCE */
        KMS_GUARD(get_opt_bstr(&v, NITRO_MAX_NONCE, "nonce", &p, &n));
        break;
    }
out:
    return rc;
}

/* The payload (checked, at r): a map keyed by text strings; unknown keys are ignored, known keys
 * appear once. */
static int parse_document(struct kms_reader *r, struct nitro_doc *d)
{
    struct kms_cbor_item m, k;
    struct kms_cbor_iter pairs;
    unsigned seen = 0, flag;
    int more;
    int rc = 0;

    KMS_GUARD(kms_cbor_read(r, &m));
    KMS_ENSURE(m.major == KMS_CBOR_MAP, KMS_ERR_ATT_FORMAT,
               "Nitro attestation document is not a map");
    kms_cbor_iter_init(&pairs, r, &m);
    for (;;) {
        KMS_GUARD(kms_cbor_next(&pairs, &more));
        if (!more)
            break;
        KMS_GUARD(kms_cbor_read(r, &k));
        KMS_ENSURE(k.major == KMS_CBOR_TSTR, KMS_ERR_ATT_FORMAT,
                   "Nitro attestation document key is not a text string");
        flag = 0;
        for (size_t f = 0; f < sizeof(nitro_fields) / sizeof(nitro_fields[0]); f++) {
            if (kms_cbor_is_text(&k, nitro_fields[f].name))
                flag = nitro_fields[f].flag;
        }
        if (flag == 0) {
            KMS_GUARD(kms_cbor_skip(r, NITRO_MAX_DEPTH));
            continue;
        }
        KMS_ENSURE((seen & flag) == 0, KMS_ERR_ATT_FORMAT,
                   "Nitro attestation document repeats a field");
        seen |= flag;
        KMS_GUARD(parse_field(flag, r, d));
    }
    KMS_ENSURE((seen & F_REQUIRED) == F_REQUIRED, KMS_ERR_ATT_FORMAT,
               "Nitro attestation document lacks a required field (module_id, digest, timestamp, "
               "pcrs, certificate, cabundle)");
out:
    return rc;
}

/* Tag, envelope, protected header and document of cose[0..len) into *d (pointers borrow cose). */
static int parse_all(const uint8_t *cose, size_t len, struct nitro_doc *d)
{
    struct kms_reader r;
    const uint8_t *body;
    size_t body_len;
    int rc = 0;

    KMS_ENSURE(cose != NULL && len > 0 && len <= KMS_ATT_MAX_BYTES, KMS_ERR_ATT_FORMAT,
               "Nitro document is empty or larger than %u bytes", KMS_ATT_MAX_BYTES);
    KMS_GUARD(strip_cose_tag(cose, len, &body, &body_len));
    KMS_GUARD(doc_check(body, body_len, "COSE_Sign1 document", &r));
    KMS_GUARD(parse_cose(&r, d));
    KMS_GUARD(doc_check(d->payload, d->payload_len, "attestation document", &r));
    KMS_GUARD(parse_document(&r, d));
out:
    return rc;
}

/* ---------------------------------------------------------------- chain and signature */

static int d2i_cert(const uint8_t *p, size_t len, const char *what, X509 **out)
{
    const uint8_t *q = p;
    int rc = 0;

    *out = d2i_X509(NULL, &q, (long)len);
    if (*out == NULL || q != p + len) {
        ERR_clear_error();
        X509_free(*out);
        *out = NULL;
        rc = kms_err_set(KMS_ERR_ATT_FORMAT, "Nitro %s is not a single DER certificate", what);
    }
    return rc;
}

/* Leaf = certificate; intermediates = cabundle[1..]; cabundle[0] (the root) is not trusted from
 * the document: the anchor is the pinned root in ctx. */
static int verify_chain(const struct kms_attest_ctx *ctx, const struct nitro_doc *d, X509 **leaf,
                        int *is_sim)
{
    STACK_OF(X509) *inter = NULL;
    X509 *c = NULL;
    int rc = 0;

    KMS_GUARD(d2i_cert(d->cert, d->cert_len, "leaf certificate", leaf));
    inter = sk_X509_new_null();
    KMS_GUARD_PTR(inter);
    for (size_t i = 1; i < d->n_cab; i++) {
        KMS_GUARD(d2i_cert(d->cab[i], d->cab_len[i], "cabundle certificate", &c));
        KMS_ENSURE(sk_X509_push(inter, c) > 0, KMS_ERR_NOMEM, "out of memory");
        c = NULL;
    }
    KMS_GUARD(kms_attest_verify_chain(ctx, KMS_ROOT_NITRO, *leaf, inter, "Nitro certificate chain",
                                      is_sim));
out:
    X509_free(c);
    sk_X509_pop_free(inter, X509_free);
    return rc;
}

/* Sig_structure = ["Signature1", protected, h'', payload] (RFC 9052 §4.4), canonical CBOR. */
static int sig_structure(const struct nitro_doc *d, struct kms_buf *b)
{
    int rc = 0;

    KMS_GUARD(kms_cbor_put_array(b, 4));
    KMS_GUARD(kms_cbor_put_tstr(b, "Signature1"));
    KMS_GUARD(kms_cbor_put_bstr(b, d->prot, d->prot_len));
    KMS_GUARD(kms_cbor_put_bstr(b, NULL, 0));
    KMS_GUARD(kms_cbor_put_bstr(b, d->payload, d->payload_len));
out:
    return rc;
}

/* ES384 over SHA-384(Sig_structure) with the leaf's P-384 key; r||s converted to DER. */
static int verify_signature(const struct nitro_doc *d, X509 *leaf)
{
    struct kms_buf tbs = {0};
    EVP_PKEY *pk = X509_get0_pubkey(leaf);
    EVP_MD_CTX *md = NULL;
    ECDSA_SIG *es = NULL;
    BIGNUM *r = NULL, *s = NULL;
    uint8_t *der = NULL;
    char group[32];
    size_t glen = 0;
    int der_len, ok;
    int rc = 0;

    KMS_ENSURE(pk != NULL && EVP_PKEY_is_a(pk, "EC") &&
                   EVP_PKEY_get_utf8_string_param(pk, "group", group, sizeof(group), &glen) == 1 &&
                   strcmp(group, SN_secp384r1) == 0,
               KMS_ERR_ATT_COSE_SIG, "Nitro leaf certificate key is not an EC P-384 key");
    KMS_GUARD(sig_structure(d, &tbs));
    es = ECDSA_SIG_new();
    r = BN_bin2bn(d->sig, 48, NULL);
    s = BN_bin2bn(d->sig + 48, 48, NULL);
    KMS_GUARD_PTR(es);
    KMS_GUARD_PTR(r);
    KMS_GUARD_PTR(s);
    KMS_GUARD_OSSL(ECDSA_SIG_set0(es, r, s), "ECDSA_SIG_set0");
    r = NULL;
    s = NULL;
    der_len = i2d_ECDSA_SIG(es, &der);
    KMS_ENSURE(der_len > 0, KMS_ERR_CRYPTO, "cannot encode the ECDSA signature");
    md = EVP_MD_CTX_new();
    KMS_GUARD_PTR(md);
    KMS_GUARD_OSSL(EVP_DigestVerifyInit(md, NULL, EVP_sha384(), NULL, pk), "EVP_DigestVerifyInit");
    ok = EVP_DigestVerify(md, der, (size_t)der_len, tbs.data, tbs.len);
    ERR_clear_error();
    KMS_ENSURE(ok == 1, KMS_ERR_ATT_COSE_SIG,
               "Nitro COSE_Sign1 signature does not verify with the leaf certificate key "
               "(document altered or not signed by this enclave's NSM)");
out:
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    kms_buf_free(&tbs);
    return rc;
}

int kms_nitro_verify(const struct kms_attest_ctx *ctx, const uint8_t *cose, size_t len,
                     const uint8_t report_data[64], struct kms_verified *out)
{
    struct nitro_doc d;
    X509 *leaf = NULL;
    int is_sim = 0;
    int rc = 0;

    memset(&d, 0, sizeof(d));
    KMS_GUARD(parse_all(cose, len, &d));
    KMS_GUARD(verify_chain(ctx, &d, &leaf, &is_sim));
    KMS_GUARD(verify_signature(&d, leaf));
    KMS_ENSURE(d.user_data != NULL, KMS_ERR_ATT_REPORT_DATA,
               "Nitro document carries no user_data; it must hold the 64-byte report_data");
    KMS_ENSURE(d.user_data_len == 64 && CRYPTO_memcmp(d.user_data, report_data, 64) == 0,
               KMS_ERR_ATT_REPORT_DATA,
               "Nitro user_data does not equal the attestation's report_data (evidence was "
               "produced for a different key or request)");
    out->mode = KMS_ATT_NITRO;
    out->sim = is_sim;
    out->tcb_status[0] = '\0';
    for (int i = 0; i < 3; i++)
        memcpy(out->pcr[i], d.pcr[i], NITRO_PCR_LEN);
    memcpy(out->module_id, d.module_id, sizeof(d.module_id));
out:
    X509_free(leaf);
    return rc;
}

int kms_nitro_doc_pcrs(const uint8_t *cose, size_t len, uint8_t pcrs[3][48])
{
    struct nitro_doc d;
    int rc = 0;

    memset(&d, 0, sizeof(d));
    KMS_GUARD(parse_all(cose, len, &d));
    for (int i = 0; i < 3; i++)
        memcpy(pcrs[i], d.pcr[i], NITRO_PCR_LEN);
out:
    return rc;
}

int kms_nitro_doc_user_data(const uint8_t *cose, size_t len, uint8_t rd[64])
{
    struct nitro_doc d;
    int rc = 0;

    memset(rd, 0, 64);
    memset(&d, 0, sizeof(d));
    KMS_GUARD(parse_all(cose, len, &d));
    if (d.user_data != NULL) {
        KMS_ENSURE(d.user_data_len == 64, KMS_ERR_ATT_REPORT_DATA,
                   "Nitro user_data is %zu bytes, not a 64-byte dstack report_data",
                   d.user_data_len);
        memcpy(rd, d.user_data, 64);
    }
out:
    return rc;
}

/* ---------------------------------------------------------------- pinned root */

/* AWS Nitro Enclaves Root G1, C=US O=Amazon OU=AWS CN=aws.nitro-enclaves, 2019-10-28..2049-10-28;
 * same bytes as attest/roots/aws-nitro-enclaves-root-g1.pem (a test compares them). */
static const char nitro_root_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL\n"
    "MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD\n"
    "VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4\n"
    "MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL\n"
    "DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG\n"
    "BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb\n"
    "48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE\n"
    "h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF\n"
    "R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC\n"
    "MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW\n"
    "rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N\n"
    "IwLz3/Y=\n"
    "-----END CERTIFICATE-----\n";

X509 *kms_attest_nitro_root(void)
{
    BIO *bio = BIO_new_mem_buf(nitro_root_pem, (int)(sizeof(nitro_root_pem) - 1));
    X509 *x = NULL;

    if (bio != NULL)
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (x == NULL)
        kms_err_ossl(KMS_ERR_CRYPTO, "cannot load the compiled-in Nitro root");
    return x;
}
