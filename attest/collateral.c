/*
 * Intel DCAP collateral for TDX quotes (attestation-reference.md §3.3): the collateral set
 * (parse, serialise, fetch from a PCCS), its verification (TCB signing chain, signatures, CRLs,
 * nextUpdate) and the TCB evaluation of a quote against it (FMSPC/PCE-ID, QE identity, TDX
 * module identity, TCB levels → tcb_status + advisory_ids), with the verification caches.
 * Matching follows dcap-qvl, which the reference KMS uses.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/lru.h"
#include "attest/collateral.h"
#include "attest/internal.h"
#include "attest/pki.h"
#include "attest/scale.h"
#include "attest/tdx.h"
#include "common/buf.h"
#include "common/fetch.h"
#include "common/file.h"
#include "common/hex.h"

#define OID_SGX_EXT "1.2.840.113741.1.13.1"
#define JSON_MAX_DEPTH 64
#define DEFAULT_TIMEOUT_MS 10000L
#define DEFAULT_MAX_ENTRIES 32u
#define DEFAULT_MAX_CHAINS 256u
#define HDR_MAX (64u * 1024u)

static const uint8_t intel_qe_vendor_id[16] = {0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
                                               0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07};

/* ================================================================ small helpers */

static char *dup_str(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static long long days_from_civil(long long y, unsigned m, unsigned d)
{
    long long era;
    unsigned yoe;
    unsigned doy;
    unsigned doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

static int digits(const char *s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        *v = *v * 10 + (s[i] - '0');
    }
    return 0;
}

/* RFC 3339 "YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)" → Unix seconds. */
static int parse_rfc3339(const char *s, const char *what, time_t *out)
{
    int y, mo, d, h, mi, sec, oh = 0, om = 0;
    long long t;
    const char *p;
    int sign = 0;

    if (s == NULL || strlen(s) < 20 || digits(s, 4, &y) < 0 || s[4] != '-' ||
        digits(s + 5, 2, &mo) < 0 || s[7] != '-' || digits(s + 8, 2, &d) < 0 ||
        (s[10] != 'T' && s[10] != 't') || digits(s + 11, 2, &h) < 0 || s[13] != ':' ||
        digits(s + 14, 2, &mi) < 0 || s[16] != ':' || digits(s + 17, 2, &sec) < 0)
        goto bad;
    p = s + 19;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            goto bad;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
        sign = 0;
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && digits(p + 1, 2, &oh) == 0 &&
               p[3] == ':' && digits(p + 4, 2, &om) == 0) {
        sign = *p == '+' ? 1 : -1;
    } else {
        goto bad;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || oh > 23 || om > 59)
        goto bad;
    t = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400LL + h * 3600LL + mi * 60LL + sec;
    t -= sign * (oh * 3600LL + om * 60LL);
    *out = (time_t)t;
    return 0;
bad:
    return kms_err_set(KMS_ERR_ATT_COLLATERAL, "%s is not an RFC 3339 time", what);
}

static void fmt_time(time_t t, char out[32])
{
    struct tm tm;

    if (gmtime_r(&t, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "@%lld", (long long)t);
}

static int asn1_time_to_unix(const ASN1_TIME *a, time_t *out)
{
    struct tm tm;

    if (a == NULL || ASN1_TIME_to_tm(a, &tm) != 1) {
        ERR_clear_error();
        return kms_err_set(KMS_ERR_ATT_COLLATERAL, "unreadable certificate or CRL time");
    }
    *out = timegm(&tm);
    return 0;
}

/* ---------------------------------------------------------------- raw JSON member text */

static void json_ws(const char *s, size_t n, size_t *i)
{
    while (*i < n && (s[*i] == ' ' || s[*i] == '\t' || s[*i] == '\r' || s[*i] == '\n'))
        (*i)++;
}

/* Skips one JSON value at s[*i]; the text is already known to be valid JSON (jansson). */
static int json_skip(const char *s, size_t n, size_t *i, int depth)
{
    int rc = 0;

    KMS_ENSURE(depth < JSON_MAX_DEPTH && *i < n, KMS_ERR_ATT_COLLATERAL,
               "collateral JSON nested too deeply or truncated");
    if (s[*i] == '"') {
        for ((*i)++; *i < n && s[*i] != '"'; (*i)++) {
            if (s[*i] == '\\')
                (*i)++;
        }
        KMS_ENSURE(*i < n, KMS_ERR_ATT_COLLATERAL, "unterminated JSON string in collateral");
        (*i)++;
    } else if (s[*i] == '{' || s[*i] == '[') {
        char close = s[*i] == '{' ? '}' : ']';

        (*i)++;
        json_ws(s, n, i);
        while (*i < n && s[*i] != close) {
            if (close == '}') {
                KMS_GUARD(json_skip(s, n, i, depth + 1)); /* key */
                json_ws(s, n, i);
                KMS_ENSURE(*i < n && s[*i] == ':', KMS_ERR_ATT_COLLATERAL,
                           "malformed JSON object in collateral");
                (*i)++;
                json_ws(s, n, i);
            }
            KMS_GUARD(json_skip(s, n, i, depth + 1));
            json_ws(s, n, i);
            if (*i < n && s[*i] == ',') {
                (*i)++;
                json_ws(s, n, i);
            }
        }
        KMS_ENSURE(*i < n, KMS_ERR_ATT_COLLATERAL, "truncated JSON in collateral");
        (*i)++;
    } else {
        while (*i < n && strchr(",]} \t\r\n", s[*i]) == NULL)
            (*i)++;
    }
out:
    return rc;
}

/* The exact text of top-level member `key` of the JSON object s (validated first). */
static int json_raw_member(const char *s, size_t n, const char *key, char **out)
{
    json_error_t jerr;
    json_t *doc = json_loadb(s, n, 0, &jerr);
    size_t klen = strlen(key);
    size_t i = 0;
    size_t start;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(doc != NULL && json_is_object(doc), KMS_ERR_ATT_COLLATERAL,
               "collateral answer is not a JSON object");
    json_ws(s, n, &i);
    KMS_ENSURE(i < n && s[i] == '{', KMS_ERR_ATT_COLLATERAL, "collateral answer is not an object");
    i++;
    for (;;) {
        int match;

        json_ws(s, n, &i);
        KMS_ENSURE(i < n && s[i] == '"', KMS_ERR_ATT_COLLATERAL,
                   "collateral answer has no \"%s\" member", key);
        match = n - i > klen + 1 && memcmp(s + i + 1, key, klen) == 0 && s[i + 1 + klen] == '"';
        KMS_GUARD(json_skip(s, n, &i, 1));
        json_ws(s, n, &i);
        KMS_ENSURE(i < n && s[i] == ':', KMS_ERR_ATT_COLLATERAL, "malformed collateral JSON");
        i++;
        json_ws(s, n, &i);
        start = i;
        KMS_GUARD(json_skip(s, n, &i, 1));
        if (match) {
            *out = strndup(s + start, i - start);
            KMS_GUARD_PTR(*out);
            break;
        }
        json_ws(s, n, &i);
        KMS_ENSURE(i < n && s[i] == ',', KMS_ERR_ATT_COLLATERAL,
                   "collateral answer has no \"%s\" member", key);
        i++;
    }
out:
    json_decref(doc);
    return rc;
}

/* ================================================================ the collateral set */

void kms_collateral_clear(struct kms_collateral *c)
{
    if (c == NULL)
        return;
    free(c->pck_crl_issuer_chain);
    free(c->root_ca_crl.p);
    free(c->pck_crl.p);
    free(c->tcb_info_issuer_chain);
    free(c->tcb_info);
    free(c->tcb_info_signature.p);
    free(c->qe_identity_issuer_chain);
    free(c->qe_identity);
    free(c->qe_identity_signature.p);
    memset(c, 0, sizeof(*c));
}

void kms_collateral_free(struct kms_collateral *sets, size_t n)
{
    if (sets == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        kms_collateral_clear(&sets[i]);
    free(sets);
}

int kms_collateral_copy(struct kms_collateral *dst, const struct kms_collateral *src)
{
    int rc = 0;

    memset(dst, 0, sizeof(*dst));
    dst->pck_crl_issuer_chain = dup_str(src->pck_crl_issuer_chain);
    dst->tcb_info_issuer_chain = dup_str(src->tcb_info_issuer_chain);
    dst->tcb_info = dup_str(src->tcb_info);
    dst->qe_identity_issuer_chain = dup_str(src->qe_identity_issuer_chain);
    dst->qe_identity = dup_str(src->qe_identity);
    KMS_GUARD_PTR(dst->pck_crl_issuer_chain);
    KMS_GUARD_PTR(dst->tcb_info_issuer_chain);
    KMS_GUARD_PTR(dst->tcb_info);
    KMS_GUARD_PTR(dst->qe_identity_issuer_chain);
    KMS_GUARD_PTR(dst->qe_identity);
    KMS_GUARD(kms_bytes_dup(&dst->root_ca_crl, src->root_ca_crl.p, src->root_ca_crl.len));
    KMS_GUARD(kms_bytes_dup(&dst->pck_crl, src->pck_crl.p, src->pck_crl.len));
    KMS_GUARD(kms_bytes_dup(&dst->tcb_info_signature, src->tcb_info_signature.p,
                            src->tcb_info_signature.len));
    KMS_GUARD(kms_bytes_dup(&dst->qe_identity_signature, src->qe_identity_signature.p,
                            src->qe_identity_signature.len));
out:
    if (rc < 0)
        kms_collateral_clear(dst);
    return rc;
}

/* A CRL given as DER bytes, PEM text or hex text → DER. */
static int crl_to_der(const uint8_t *p, size_t n, const char *what, struct kms_bytes *out)
{
    BIO *bio = NULL;
    X509_CRL *crl = NULL;
    unsigned char *der = NULL;
    int der_len;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    KMS_ENSURE(n > 0 && n <= KMS_COLL_MAX_ITEM, KMS_ERR_ATT_COLLATERAL, "%s is empty or too large",
               what);
    if (n > 10 && memcmp(p, "-----BEGIN", 10) == 0) {
        bio = BIO_new_mem_buf(p, (int)n);
        KMS_GUARD_PTR(bio);
        crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
        ERR_clear_error();
        KMS_ENSURE(crl != NULL, KMS_ERR_ATT_COLLATERAL, "%s is not a PEM CRL", what);
        der_len = i2d_X509_CRL(crl, &der);
        KMS_ENSURE(der_len > 0, KMS_ERR_CRYPTO, "cannot encode %s", what);
        KMS_GUARD(kms_bytes_dup(out, der, (size_t)der_len));
    } else if (p[0] != 0x30) {
        char *s = strndup((const char *)p, n);
        uint8_t *bin = NULL;
        size_t blen = 0;

        KMS_GUARD_PTR(s);
        blen = strlen(s);
        while (blen > 0 && isspace((unsigned char)s[blen - 1])) {
            s[blen - 1] = '\0';
            blen--;
        }
        rc = kms_hex_decode(s, &bin, &blen);
        free(s);
        if (rc < 0) {
            rc = kms_err_set(KMS_ERR_ATT_COLLATERAL, "%s is neither DER, PEM nor hex", what);
            goto out;
        }
        if (blen == 0) { /* only whitespace: as empty as "" (refused above) */
            free(bin);
            rc = kms_err_set(KMS_ERR_ATT_COLLATERAL, "%s is empty", what);
            goto out;
        }
        out->p = bin;
        out->len = blen;
    } else {
        KMS_GUARD(kms_bytes_dup(out, p, n));
    }
out:
    OPENSSL_free(der);
    X509_CRL_free(crl);
    BIO_free(bio);
    return rc;
}

/* A byte field of a collateral JSON object: hex string, or array of byte numbers (serde_bytes). */
static int json_bytes(json_t *o, const char *key, int crl, struct kms_bytes *out)
{
    json_t *v = json_object_get(o, key);
    struct kms_buf b = {0};
    size_t i;
    json_t *e;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    KMS_ENSURE(v != NULL, KMS_ERR_ATT_COLLATERAL, "collateral lacks \"%s\"", key);
    if (json_is_string(v)) {
        if (crl) {
            KMS_GUARD(
                crl_to_der((const uint8_t *)json_string_value(v), json_string_length(v), key, out));
        } else if (kms_hex_decode(json_string_value(v), &out->p, &out->len) < 0) {
            rc = kms_err_set(KMS_ERR_ATT_COLLATERAL, "collateral \"%s\" is not hex", key);
            goto out;
        }
    } else if (json_is_array(v)) {
        KMS_ENSURE(json_array_size(v) <= KMS_COLL_MAX_ITEM, KMS_ERR_ATT_COLLATERAL,
                   "collateral \"%s\" is too large", key);
        json_array_foreach(v, i, e)
        {
            json_int_t x = json_integer_value(e);

            KMS_ENSURE(json_is_integer(e) && x >= 0 && x <= 255, KMS_ERR_ATT_COLLATERAL,
                       "collateral \"%s\" has a non-byte element", key);
            KMS_GUARD(kms_buf_put_u8(&b, (uint8_t)x));
        }
        if (crl) {
            KMS_GUARD(crl_to_der(b.data, b.len, key, out));
        } else {
            KMS_GUARD(kms_bytes_dup(out, b.data, b.len));
        }
    } else {
        rc = kms_err_set(KMS_ERR_ATT_COLLATERAL, "collateral \"%s\" must be hex or a byte array",
                         key);
    }
out:
    kms_buf_free(&b);
    return rc;
}

static int json_text(json_t *o, const char *key, char **out)
{
    json_t *v = json_object_get(o, key);

    *out = NULL;
    if (v == NULL)
        return kms_err_set(KMS_ERR_ATT_COLLATERAL, "collateral lacks \"%s\"", key);
    if (!json_is_string(v) || json_string_length(v) > KMS_COLL_MAX_ITEM ||
        strlen(json_string_value(v)) != json_string_length(v))
        return kms_err_set(KMS_ERR_ATT_COLLATERAL, "collateral \"%s\" must be a string", key);
    *out = strdup(json_string_value(v));
    return *out != NULL ? 0 : kms_err_set(KMS_ERR_NOMEM, "out of memory");
}

static int parse_one(json_t *o, struct kms_collateral *c)
{
    int rc = 0;

    memset(c, 0, sizeof(*c));
    KMS_ENSURE(json_is_object(o), KMS_ERR_ATT_COLLATERAL, "a collateral set must be an object");
    KMS_GUARD(json_text(o, "pck_crl_issuer_chain", &c->pck_crl_issuer_chain));
    KMS_GUARD(json_bytes(o, "root_ca_crl", 1, &c->root_ca_crl));
    KMS_GUARD(json_bytes(o, "pck_crl", 1, &c->pck_crl));
    KMS_GUARD(json_text(o, "tcb_info_issuer_chain", &c->tcb_info_issuer_chain));
    KMS_GUARD(json_text(o, "tcb_info", &c->tcb_info));
    KMS_GUARD(json_bytes(o, "tcb_info_signature", 0, &c->tcb_info_signature));
    KMS_GUARD(json_text(o, "qe_identity_issuer_chain", &c->qe_identity_issuer_chain));
    KMS_GUARD(json_text(o, "qe_identity", &c->qe_identity));
    KMS_GUARD(json_bytes(o, "qe_identity_signature", 0, &c->qe_identity_signature));
out:
    if (rc < 0)
        kms_collateral_clear(c);
    return rc;
}

int kms_collateral_parse(const char *json, size_t len, struct kms_collateral **sets, size_t *n)
{
    json_error_t jerr;
    json_t *doc = NULL;
    struct kms_collateral *arr = NULL;
    size_t count = 0;
    int rc = 0;

    *sets = NULL;
    *n = 0;
    KMS_ENSURE(len <= KMS_COLL_MAX_FILE, KMS_ERR_ATT_COLLATERAL,
               "collateral JSON of %zu bytes is too large (max %u)", len, KMS_COLL_MAX_FILE);
    doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL) {
        /* jansson quotes the offending token raw: keep control bytes out of logs and errors */
        for (char *c = jerr.text; *c != '\0'; c++) {
            if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f)
                *c = '?';
        }
    }
    KMS_ENSURE(doc != NULL, KMS_ERR_ATT_COLLATERAL, "collateral is not JSON: %s (line %d)",
               jerr.text, jerr.line);
    count = json_is_array(doc) ? json_array_size(doc) : 1;
    KMS_ENSURE(count >= 1 && count <= KMS_COLL_MAX_SETS, KMS_ERR_ATT_COLLATERAL,
               "collateral must hold 1..%u sets, not %zu", KMS_COLL_MAX_SETS, count);
    arr = calloc(count, sizeof(*arr));
    KMS_GUARD_PTR(arr);
    for (size_t i = 0; i < count; i++) {
        rc = parse_one(json_is_array(doc) ? json_array_get(doc, i) : doc, &arr[i]);
        if (rc < 0) {
            rc = kms_err_wrap(rc, "collateral set %zu", i);
            goto out;
        }
    }
    *sets = arr;
    *n = count;
    arr = NULL;
out:
    kms_collateral_free(arr, count);
    json_decref(doc);
    return rc;
}

int kms_collateral_load_file(const char *path, struct kms_collateral **sets, size_t *n)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = 0;

    *sets = NULL;
    *n = 0;
    rc = kms_file_read(path, KMS_COLL_MAX_FILE, &data, &len);
    if (rc < 0) {
        rc = kms_err_wrap(KMS_ERR_ATT_COLLATERAL, "cannot read collateral file %s", path);
        goto out;
    }
    rc = kms_collateral_parse((const char *)data, len, sets, n);
    if (rc < 0)
        rc = kms_err_wrap(rc, "collateral file %s", path);
out:
    free(data);
    return rc;
}

int kms_collateral_to_json(const struct kms_collateral *c, char **json)
{
    char *h[4] = {NULL, NULL, NULL, NULL};
    json_t *o = NULL;
    int rc = 0;

    *json = NULL;
    h[0] = kms_hex_dup(c->root_ca_crl.p, c->root_ca_crl.len, 0);
    h[1] = kms_hex_dup(c->pck_crl.p, c->pck_crl.len, 0);
    h[2] = kms_hex_dup(c->tcb_info_signature.p, c->tcb_info_signature.len, 0);
    h[3] = kms_hex_dup(c->qe_identity_signature.p, c->qe_identity_signature.len, 0);
    for (int i = 0; i < 4; i++)
        KMS_GUARD_PTR(h[i]);
    o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "pck_crl_issuer_chain",
                  c->pck_crl_issuer_chain, "root_ca_crl", h[0], "pck_crl", h[1],
                  "tcb_info_issuer_chain", c->tcb_info_issuer_chain, "tcb_info", c->tcb_info,
                  "tcb_info_signature", h[2], "qe_identity_issuer_chain",
                  c->qe_identity_issuer_chain, "qe_identity", c->qe_identity,
                  "qe_identity_signature", h[3]);
    KMS_ENSURE(o != NULL, KMS_ERR_INVAL, "incomplete collateral set");
    *json = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    KMS_GUARD_PTR(*json);
out:
    json_decref(o);
    for (int i = 0; i < 4; i++)
        free(h[i]);
    return rc;
}

/* ================================================================ PCCS fetch */

struct http_ctx {
    struct kms_fetch_resp resp;
    const char *const *hdr_names;
    char *hdr; /* value of the first matching header (raw) */
};

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
    struct http_ctx *h = ud;
    size_t n = sz * nm;
    const char *colon = memchr(p, ':', n);
    size_t name_len;
    size_t vs;
    size_t ve;

    if (colon == NULL || h->hdr_names == NULL || h->hdr != NULL || n > HDR_MAX)
        return n;
    name_len = (size_t)(colon - p);
    for (const char *const *nm2 = h->hdr_names; *nm2 != NULL; nm2++) {
        if (strlen(*nm2) == name_len && strncasecmp(p, *nm2, name_len) == 0) {
            vs = name_len + 1;
            ve = n;
            while (vs < ve && (p[vs] == ' ' || p[vs] == '\t'))
                vs++;
            while (ve > vs && (p[ve - 1] == '\r' || p[ve - 1] == '\n' || p[ve - 1] == ' '))
                ve--;
            h->hdr = strndup(p + vs, ve - vs);
            break;
        }
    }
    return n;
}

static int url_decode(const char *s, char **out)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    size_t j = 0;

    *out = NULL;
    if (d == NULL)
        return kms_err_set(KMS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n + 0 && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hx[3] = {s[i + 1], s[i + 2], 0};

            d[j++] = (char)strtol(hx, NULL, 16);
            i += 2;
        } else {
            d[j++] = s[i];
        }
    }
    d[j] = '\0';
    *out = d;
    return 0;
}

/* kms_fetch setup: the response headers go to on_header. */
static int http_setup(CURL *c, void *arg)
{
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, arg);
    return 0;
}

/* GET url; body into h->resp.body, first header of h->hdr_names into h->hdr. */
static int http_get(const char *url, long timeout_ms, struct http_ctx *h)
{
    struct kms_fetch_req req = {0};
    int rc = 0;

    req.url = url;
    req.timeout_ms = timeout_ms;
    req.max_body = KMS_COLL_MAX_ITEM;
    req.setup = http_setup;
    req.arg = h;
    rc = kms_fetch(&req, &h->resp);
    if (rc == KMS_ERR_TIMEOUT) {
        rc = kms_err_set(KMS_ERR_TIMEOUT, "PCCS did not answer %s within %ld ms", url, timeout_ms);
        goto out;
    }
    KMS_ENSURE(rc != KMS_ERR_TOOBIG, KMS_ERR_ATT_COLLATERAL, "PCCS answer to %s exceeds %u bytes",
               url, KMS_COLL_MAX_ITEM);
    KMS_ENSURE(rc != KMS_ERR_NET, KMS_ERR_NET, "PCCS request %s failed: %s", url,
               curl_easy_strerror(h->resp.cc));
    KMS_GUARD(rc);
    KMS_ENSURE(h->resp.status == 200, KMS_ERR_NET, "PCCS answered HTTP %ld to %s", h->resp.status,
               url);
out:
    return rc;
}

static int fetch_item(const char *url, long timeout_ms, const char *const *hdr_names,
                      const char *hdr_what, struct kms_buf *body, char **chain_pem)
{
    struct http_ctx h = {.hdr_names = hdr_names};
    int rc = 0;

    if (chain_pem != NULL)
        *chain_pem = NULL;
    KMS_GUARD(http_get(url, timeout_ms, &h));
    if (chain_pem != NULL) {
        KMS_ENSURE(h.hdr != NULL, KMS_ERR_ATT_COLLATERAL, "PCCS answer to %s lacks the %s header",
                   url, hdr_what);
        KMS_GUARD(url_decode(h.hdr, chain_pem));
    }
    *body = h.resp.body;
    h.resp.body = (struct kms_buf){0};
out:
    kms_fetch_resp_free(&h.resp);
    free(h.hdr);
    return rc;
}

/* {"<key>":{...},"signature":"hex"} → exact inner text + 64-byte signature. */
static int split_signed(const struct kms_buf *b, const char *key, char **text,
                        struct kms_bytes *sig)
{
    char *sig_text = NULL;
    json_t *sj = NULL;
    int rc = 0;

    KMS_GUARD(json_raw_member((const char *)b->data, b->len, key, text));
    KMS_GUARD(json_raw_member((const char *)b->data, b->len, "signature", &sig_text));
    sj = json_loads(sig_text, JSON_DECODE_ANY, NULL);
    KMS_ENSURE(json_is_string(sj) && kms_hex_decode(json_string_value(sj), &sig->p, &sig->len) == 0,
               KMS_ERR_ATT_COLLATERAL, "\"signature\" beside \"%s\" is not a hex string", key);
out:
    json_decref(sj);
    free(sig_text);
    return rc;
}

int kms_collateral_fetch(const char *pccs_url, const char *fmspc, const char *ca, long timeout_ms,
                         struct kms_collateral *out)
{
    static const char *const tcb_hdr[] = {"TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain",
                                          NULL};
    static const char *const qe_hdr[] = {"SGX-Enclave-Identity-Issuer-Chain", NULL};
    static const char *const crl_hdr[] = {"SGX-PCK-CRL-Issuer-Chain", NULL};
    static const char *const suffixes[] = {"/sgx/certification/v4", "/tdx/certification/v4"};
    struct kms_buf body = {0};
    char *base = NULL;
    char url[2048];
    size_t n;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    KMS_ENSURE(pccs_url != NULL && pccs_url[0] != '\0', KMS_ERR_INVAL, "no PCCS URL configured");
    KMS_ENSURE(fmspc != NULL && strlen(fmspc) == 12 &&
                   strspn(fmspc, "0123456789abcdefABCDEF") == 12,
               KMS_ERR_INVAL, "FMSPC must be 12 hex digits");
    KMS_ENSURE(ca != NULL && (strcmp(ca, "platform") == 0 || strcmp(ca, "processor") == 0),
               KMS_ERR_INVAL, "PCK CA must be \"platform\" or \"processor\"");
    if (timeout_ms <= 0)
        timeout_ms = DEFAULT_TIMEOUT_MS;
    base = strdup(pccs_url);
    KMS_GUARD_PTR(base);
    n = strlen(base);
    while (n > 0 && base[n - 1] == '/') {
        base[n - 1] = '\0';
        n--;
    }
    for (int i = 0; i < 2; i++) {
        size_t sl = strlen(suffixes[i]);

        n = strlen(base);
        if (n >= sl && strcmp(base + n - sl, suffixes[i]) == 0)
            base[n - sl] = '\0';
    }

    snprintf(url, sizeof(url), "%s/tdx/certification/v4/tcb?fmspc=%s", base, fmspc);
    KMS_GUARD(fetch_item(url, timeout_ms, tcb_hdr, "TCB-Info-Issuer-Chain", &body,
                         &out->tcb_info_issuer_chain));
    KMS_GUARD(split_signed(&body, "tcbInfo", &out->tcb_info, &out->tcb_info_signature));
    kms_buf_free(&body);

    snprintf(url, sizeof(url), "%s/tdx/certification/v4/qe/identity", base);
    KMS_GUARD(fetch_item(url, timeout_ms, qe_hdr, "SGX-Enclave-Identity-Issuer-Chain", &body,
                         &out->qe_identity_issuer_chain));
    KMS_GUARD(
        split_signed(&body, "enclaveIdentity", &out->qe_identity, &out->qe_identity_signature));
    kms_buf_free(&body);

    snprintf(url, sizeof(url), "%s/sgx/certification/v4/pckcrl?ca=%s&encoding=der", base, ca);
    KMS_GUARD(fetch_item(url, timeout_ms, crl_hdr, "SGX-PCK-CRL-Issuer-Chain", &body,
                         &out->pck_crl_issuer_chain));
    KMS_GUARD(crl_to_der(body.data, body.len, "PCK CRL", &out->pck_crl));
    kms_buf_free(&body);

    snprintf(url, sizeof(url), "%s/sgx/certification/v4/rootcacrl", base);
    KMS_GUARD(fetch_item(url, timeout_ms, NULL, NULL, &body, NULL));
    KMS_GUARD(crl_to_der(body.data, body.len, "root CA CRL", &out->root_ca_crl));
out:
    if (rc < 0) {
        kms_collateral_clear(out);
        rc = kms_err_wrap(rc, "fetching collateral for FMSPC %s from %s",
                          fmspc != NULL ? fmspc : "", pccs_url != NULL ? pccs_url : "");
    }
    kms_buf_free(&body);
    free(base);
    return rc;
}

/* ================================================================ parsed TCB info / QE identity */

enum tcb_status {
    ST_UP_TO_DATE = 0,
    ST_SW_HARDENING,
    ST_CONFIG,
    ST_CONFIG_SW_HARDENING,
    ST_OUT_OF_DATE,
    ST_OUT_OF_DATE_CONFIG,
    ST_REVOKED,
    ST_COUNT
};

/* Ordered by severity: merging keeps the worse. */
static const char *const status_names[ST_COUNT] = {"UpToDate",
                                                   "SWHardeningNeeded",
                                                   "ConfigurationNeeded",
                                                   "ConfigurationAndSWHardeningNeeded",
                                                   "OutOfDate",
                                                   "OutOfDateConfigurationNeeded",
                                                   "Revoked"};

struct level {
    uint8_t sgx[16];
    uint8_t tdx[16];
    uint16_t pcesvn;
    uint16_t isvsvn; /* QE identity and module identity levels */
    int status;
    char **adv;
    size_t n_adv;
};

struct module_id {
    char id[32];
    uint8_t mrsigner[48];
    uint8_t attributes[8];
    uint8_t mask[8];
    struct level *levels;
    size_t n_levels;
};

struct tcb_info {
    uint8_t fmspc[6];
    uint8_t pce_id[2];
    time_t issue;
    time_t next;
    int has_module;
    struct module_id module; /* tdxModule (no levels) */
    struct module_id *mods;
    size_t n_mods;
    struct level *levels;
    size_t n_levels;
};

struct qe_identity {
    time_t issue;
    time_t next;
    uint8_t miscselect[4];
    uint8_t miscselect_mask[4];
    uint8_t attributes[16];
    uint8_t attributes_mask[16];
    uint8_t mrsigner[32];
    uint16_t isvprodid;
    struct level *levels;
    size_t n_levels;
};

static void levels_free(struct level *l, size_t n)
{
    for (size_t i = 0; i < n && l != NULL; i++) {
        for (size_t j = 0; j < l[i].n_adv; j++)
            free(l[i].adv[j]);
        free(l[i].adv);
    }
    free(l);
}

static void tcb_info_clear(struct tcb_info *t)
{
    for (size_t i = 0; i < t->n_mods && t->mods != NULL; i++)
        levels_free(t->mods[i].levels, t->mods[i].n_levels);
    free(t->mods);
    levels_free(t->levels, t->n_levels);
    memset(t, 0, sizeof(*t));
}

static void qe_identity_clear(struct qe_identity *q)
{
    levels_free(q->levels, q->n_levels);
    memset(q, 0, sizeof(*q));
}

static int get_hex(json_t *o, const char *key, const char *what, uint8_t *out, size_t n)
{
    json_t *v = json_object_get(o, key);

    if (!json_is_string(v) || kms_hex_decode_exact(json_string_value(v), out, n) < 0)
        return kms_err_set(KMS_ERR_ATT_COLLATERAL, "%s \"%s\" must be %zu hex bytes", what, key, n);
    return 0;
}

static int get_uint(json_t *o, const char *key, const char *what, json_int_t max, json_int_t *out)
{
    json_t *v = json_object_get(o, key);

    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return kms_err_set(KMS_ERR_ATT_COLLATERAL, "%s \"%s\" must be an integer 0..%lld", what,
                           key, (long long)max);
    *out = json_integer_value(v);
    return 0;
}

static int get_time(json_t *o, const char *key, const char *what, time_t *out)
{
    json_t *v = json_object_get(o, key);
    char buf[96];

    snprintf(buf, sizeof(buf), "%s \"%s\"", what, key);
    return parse_rfc3339(json_is_string(v) ? json_string_value(v) : NULL, buf, out);
}

/* 16 {"svn":n} components. */
static int get_components(json_t *tcb, const char *key, const char *what, uint8_t out[16])
{
    json_t *arr = json_object_get(tcb, key);
    size_t i;
    json_t *c;
    int rc = 0;

    KMS_ENSURE(json_is_array(arr) && json_array_size(arr) == 16, KMS_ERR_ATT_COLLATERAL,
               "%s \"%s\" must hold 16 components", what, key);
    json_array_foreach(arr, i, c)
    {
        json_int_t v = 0;

        KMS_GUARD(get_uint(c, "svn", what, 255, &v));
        out[i] = (uint8_t)v;
    }
out:
    return rc;
}

static int parse_level(json_t *lv, const char *what, int kind, struct level *l)
{
    json_t *tcb = json_object_get(lv, "tcb");
    json_t *st = json_object_get(lv, "tcbStatus");
    json_t *adv = json_object_get(lv, "advisoryIDs");
    json_int_t v = 0;
    int rc = 0;

    KMS_ENSURE(json_is_object(lv) && json_is_object(tcb) && json_is_string(st),
               KMS_ERR_ATT_COLLATERAL, "%s TCB level lacks tcb or tcbStatus", what);
    l->status = -1;
    for (int i = 0; i < ST_COUNT; i++) {
        if (strcmp(json_string_value(st), status_names[i]) == 0)
            l->status = i;
    }
    KMS_ENSURE(l->status >= 0, KMS_ERR_ATT_COLLATERAL, "%s has unknown tcbStatus \"%.40s\"", what,
               json_string_value(st));
    if (kind == 0) { /* platform level */
        KMS_GUARD(get_components(tcb, "sgxtcbcomponents", what, l->sgx));
        KMS_GUARD(get_components(tcb, "tdxtcbcomponents", what, l->tdx));
        KMS_GUARD(get_uint(tcb, "pcesvn", what, 65535, &v));
        l->pcesvn = (uint16_t)v;
    } else {
        KMS_GUARD(get_uint(tcb, "isvsvn", what, kind == 1 ? 65535 : 255, &v));
        l->isvsvn = (uint16_t)v;
    }
    if (adv != NULL) {
        size_t i;
        json_t *a;

        KMS_ENSURE(json_is_array(adv) && json_array_size(adv) <= KMS_COLL_MAX_ADVISORIES,
                   KMS_ERR_ATT_COLLATERAL, "%s advisoryIDs must be an array of at most %u", what,
                   KMS_COLL_MAX_ADVISORIES);
        l->adv = calloc(json_array_size(adv) + 1, sizeof(char *));
        KMS_GUARD_PTR(l->adv);
        json_array_foreach(adv, i, a)
        {
            KMS_ENSURE(json_is_string(a) && json_string_length(a) < 64, KMS_ERR_ATT_COLLATERAL,
                       "%s advisory ID must be a short string", what);
            l->adv[i] = strdup(json_string_value(a));
            KMS_GUARD_PTR(l->adv[i]);
            l->n_adv = i + 1;
        }
    }
out:
    return rc;
}

/* kind: 0 platform, 1 QE (isvsvn u16), 2 TDX module (isvsvn u8). */
static int parse_levels(json_t *arr, const char *what, int kind, struct level **out, size_t *n)
{
    size_t i;
    json_t *lv;
    int rc = 0;

    *out = NULL;
    *n = 0;
    KMS_ENSURE(json_is_array(arr) && json_array_size(arr) >= 1 &&
                   json_array_size(arr) <= KMS_COLL_MAX_LEVELS,
               KMS_ERR_ATT_COLLATERAL, "%s tcbLevels must hold 1..%u levels", what,
               KMS_COLL_MAX_LEVELS);
    *out = calloc(json_array_size(arr), sizeof(**out));
    KMS_GUARD_PTR(*out);
    json_array_foreach(arr, i, lv)
    {
        *n = i + 1;
        KMS_GUARD(parse_level(lv, what, kind, &(*out)[i]));
    }
out:
    return rc;
}

static int parse_module(json_t *o, const char *what, struct module_id *m)
{
    int rc = 0;

    KMS_ENSURE(json_is_object(o), KMS_ERR_ATT_COLLATERAL, "%s must be an object", what);
    KMS_GUARD(get_hex(o, "mrsigner", what, m->mrsigner, 48));
    KMS_GUARD(get_hex(o, "attributes", what, m->attributes, 8));
    KMS_GUARD(get_hex(o, "attributesMask", what, m->mask, 8));
out:
    return rc;
}

/* Platform levels sorted as Intel's QVL (and dcap-qvl) do: SGX components, then PCESVN, then
 * TDX components, all descending; the first level the platform reaches is its level. */
static int cmp_level(const void *a, const void *b)
{
    const struct level *x = a;
    const struct level *y = b;
    int c = memcmp(y->sgx, x->sgx, 16);

    if (c != 0)
        return c;
    if (x->pcesvn != y->pcesvn)
        return y->pcesvn > x->pcesvn ? 1 : -1;
    return memcmp(y->tdx, x->tdx, 16);
}

static int parse_tcb_info(const char *text, struct tcb_info *t)
{
    static const char what[] = "TCB info";
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    json_t *v;
    json_int_t ver = 0;
    int rc = 0;

    memset(t, 0, sizeof(*t));
    KMS_ENSURE(json_is_object(o), KMS_ERR_ATT_COLLATERAL, "TCB info is not a JSON object");
    v = json_object_get(o, "id");
    KMS_GUARD(get_uint(o, "version", what, 255, &ver));
    KMS_ENSURE(json_is_string(v) && strcmp(json_string_value(v), "TDX") == 0 && ver == 3,
               KMS_ERR_ATT_COLLATERAL,
               "TCB info is not TDX TCB info v3 (id \"%.16s\", version %lld): the PCCS served "
               "SGX collateral",
               json_is_string(v) ? json_string_value(v) : "?", (long long)ver);
    KMS_GUARD(get_time(o, "issueDate", what, &t->issue));
    KMS_GUARD(get_time(o, "nextUpdate", what, &t->next));
    KMS_GUARD(get_hex(o, "fmspc", what, t->fmspc, 6));
    KMS_GUARD(get_hex(o, "pceId", what, t->pce_id, 2));
    v = json_object_get(o, "tdxModule");
    if (v != NULL) {
        KMS_GUARD(parse_module(v, "TCB info tdxModule", &t->module));
        t->has_module = 1;
    }
    v = json_object_get(o, "tdxModuleIdentities");
    if (v != NULL) {
        size_t i;
        json_t *m;

        KMS_ENSURE(json_is_array(v) && json_array_size(v) <= KMS_COLL_MAX_MODULES,
                   KMS_ERR_ATT_COLLATERAL, "TCB info tdxModuleIdentities: at most %u entries",
                   KMS_COLL_MAX_MODULES);
        t->mods = calloc(json_array_size(v) + 1, sizeof(*t->mods));
        KMS_GUARD_PTR(t->mods);
        json_array_foreach(v, i, m)
        {
            json_t *id = json_object_get(m, "id");

            t->n_mods = i + 1;
            KMS_ENSURE(json_is_string(id) && json_string_length(id) < sizeof(t->mods[i].id),
                       KMS_ERR_ATT_COLLATERAL, "TDX module identity lacks a short \"id\"");
            memcpy(t->mods[i].id, json_string_value(id), json_string_length(id) + 1);
            KMS_GUARD(parse_module(m, "TCB info tdxModuleIdentity", &t->mods[i]));
            KMS_GUARD(parse_levels(json_object_get(m, "tcbLevels"), "TDX module identity", 2,
                                   &t->mods[i].levels, &t->mods[i].n_levels));
        }
    }
    KMS_GUARD(parse_levels(json_object_get(o, "tcbLevels"), what, 0, &t->levels, &t->n_levels));
    qsort(t->levels, t->n_levels, sizeof(*t->levels), cmp_level);
out:
    json_decref(o);
    if (rc < 0)
        tcb_info_clear(t);
    return rc;
}

static int parse_qe_identity(const char *text, struct qe_identity *q)
{
    static const char what[] = "QE identity";
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    json_t *v;
    json_int_t x = 0;
    int rc = 0;

    memset(q, 0, sizeof(*q));
    KMS_ENSURE(json_is_object(o), KMS_ERR_ATT_COLLATERAL, "QE identity is not a JSON object");
    v = json_object_get(o, "id");
    KMS_GUARD(get_uint(o, "version", what, 255, &x));
    KMS_ENSURE(json_is_string(v) && strcmp(json_string_value(v), "TD_QE") == 0 &&
                   (x == 2 || x == 3),
               KMS_ERR_ATT_COLLATERAL,
               "QE identity is not a TD_QE identity v2 (id \"%.16s\", version %lld)",
               json_is_string(v) ? json_string_value(v) : "?", (long long)x);
    KMS_GUARD(get_time(o, "issueDate", what, &q->issue));
    KMS_GUARD(get_time(o, "nextUpdate", what, &q->next));
    KMS_GUARD(get_hex(o, "miscselect", what, q->miscselect, 4));
    KMS_GUARD(get_hex(o, "miscselectMask", what, q->miscselect_mask, 4));
    KMS_GUARD(get_hex(o, "attributes", what, q->attributes, 16));
    KMS_GUARD(get_hex(o, "attributesMask", what, q->attributes_mask, 16));
    KMS_GUARD(get_hex(o, "mrsigner", what, q->mrsigner, 32));
    KMS_GUARD(get_uint(o, "isvprodid", what, 65535, &x));
    q->isvprodid = (uint16_t)x;
    KMS_GUARD(parse_levels(json_object_get(o, "tcbLevels"), what, 1, &q->levels, &q->n_levels));
out:
    json_decref(o);
    if (rc < 0)
        qe_identity_clear(q);
    return rc;
}

/* fmspc of a set without verifying it (to pick the set for a platform). */
static int peek_fmspc(const struct kms_collateral *c, uint8_t fmspc[6])
{
    json_t *o = json_loads(c->tcb_info, 0, NULL);
    int rc = o != NULL ? get_hex(o, "fmspc", "TCB info", fmspc, 6) : -1;

    json_decref(o);
    return rc;
}

/* ================================================================ crypto helpers */

static int load_pem_chain(const char *pem, size_t len, const char *what, STACK_OF(X509) * *out)
{
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(pem != NULL && len <= KMS_COLL_MAX_ITEM, KMS_ERR_ATT_COLLATERAL,
               "%s is missing or too large", what);
    /* every PEM block must be a certificate, as in the PCK chain of a quote */
    rc = kms_tdx_pem_certs((const uint8_t *)pem, len, (int)KMS_COLL_MAX_CHAIN + 4, out);
    KMS_ENSURE(rc != KMS_ERR_TOOBIG, KMS_ERR_ATT_COLLATERAL, "%s has too many certificates", what);
    if (rc == KMS_ERR_ATT_FORMAT)
        rc = kms_err_wrap(KMS_ERR_ATT_COLLATERAL, "%s", what);
    KMS_GUARD(rc);
    KMS_ENSURE(sk_X509_num(*out) > 0, KMS_ERR_ATT_COLLATERAL, "%s holds no PEM certificate", what);
out:
    if (rc < 0) {
        sk_X509_pop_free(*out, X509_free);
        *out = NULL;
    }
    return rc;
}

/* Narrows [*nb, *na] to every certificate's validity. */
static int chain_window(STACK_OF(X509) * chain, time_t *nb, time_t *na)
{
    int rc = 0;

    for (int i = 0; i < sk_X509_num(chain); i++) {
        time_t b = 0;
        time_t a = 0;

        KMS_GUARD(asn1_time_to_unix(X509_get0_notBefore(sk_X509_value(chain, i)), &b));
        KMS_GUARD(asn1_time_to_unix(X509_get0_notAfter(sk_X509_value(chain, i)), &a));
        if (b > *nb)
            *nb = b;
        if (a < *na)
            *na = a;
    }
out:
    return rc;
}

static X509 *chain_top(STACK_OF(X509) * chain)
{
    return sk_X509_value(chain, sk_X509_num(chain) - 1);
}

/* ================================================================ verified collateral */

struct coll_verified {
    struct tcb_info ti;
    struct qe_identity qe;
    X509 *anchor;       /* the root all collateral chains reached */
    X509_CRL *root_crl; /* signed by anchor */
    X509_CRL *pck_crl;  /* signed by pck_crl_ca */
    X509 *pck_crl_ca;   /* PCK platform/processor CA from the CRL issuer chain */
    time_t not_before;  /* validity window of the whole set */
    time_t not_after;
};

static void coll_verified_free(void *p)
{
    struct coll_verified *cv = p;

    if (cv == NULL)
        return;
    tcb_info_clear(&cv->ti);
    qe_identity_clear(&cv->qe);
    X509_free(cv->anchor);
    X509_CRL_free(cv->root_crl);
    X509_CRL_free(cv->pck_crl);
    X509_free(cv->pck_crl_ca);
    free(cv);
}

/* A CRL signed by issuer, valid at now; narrows the window to [thisUpdate, nextUpdate]. */
static int load_crl(const struct kms_bytes *der, X509 *issuer, time_t now, const char *what,
                    X509_CRL **out, time_t *nb, time_t *na)
{
    const unsigned char *p = der->p;
    X509_CRL *crl = NULL;
    time_t tu = 0;
    time_t nu = 0;
    char ts[32];
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(der->len > 0 && der->len <= KMS_COLL_MAX_ITEM, KMS_ERR_ATT_COLLATERAL,
               "%s is missing", what);
    crl = d2i_X509_CRL(NULL, &p, (long)der->len);
    ERR_clear_error();
    KMS_ENSURE(crl != NULL && p == der->p + der->len, KMS_ERR_ATT_COLLATERAL, "%s is not a DER CRL",
               what);
    KMS_ENSURE(X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(issuer)) == 0,
               KMS_ERR_ATT_COLLATERAL_SIG,
               "%s is not issued by the CA of the verified chain (another root or CA)", what);
    if (X509_CRL_verify(crl, X509_get0_pubkey(issuer)) != 1) {
        ERR_clear_error();
        rc = kms_err_set(KMS_ERR_ATT_COLLATERAL_SIG,
                         "%s signature does not verify with its "
                         "issuer's key",
                         what);
        goto out;
    }
    KMS_ENSURE(X509_CRL_get0_nextUpdate(crl) != NULL, KMS_ERR_ATT_COLLATERAL,
               "%s has no nextUpdate", what);
    KMS_GUARD(asn1_time_to_unix(X509_CRL_get0_lastUpdate(crl), &tu));
    KMS_GUARD(asn1_time_to_unix(X509_CRL_get0_nextUpdate(crl), &nu));
    fmt_time(nu, ts);
    KMS_ENSURE(now <= nu, KMS_ERR_ATT_EXPIRED,
               "%s expired (nextUpdate %s is before the verification time): refresh the "
               "collateral",
               what, ts);
    fmt_time(tu, ts);
    KMS_ENSURE(now >= tu, KMS_ERR_ATT_EXPIRED, "%s is not yet valid (thisUpdate %s)", what, ts);
    if (tu > *nb)
        *nb = tu;
    if (nu < *na)
        *na = nu;
    *out = crl;
    crl = NULL;
out:
    X509_CRL_free(crl);
    return rc;
}

/* KMS_ERR_ATT_REVOKED when cert is on crl. */
static int check_revoked(X509_CRL *crl, X509 *cert, const char *what)
{
    X509_REVOKED *rev = NULL;

    if (X509_CRL_get0_by_cert(crl, &rev, cert) == 1) {
        char serial[80] = "?";
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
        char *hx = bn != NULL ? BN_bn2hex(bn) : NULL;

        if (hx != NULL)
            snprintf(serial, sizeof(serial), "%s", hx);
        OPENSSL_free(hx);
        BN_free(bn);
        return kms_err_set(KMS_ERR_ATT_REVOKED, "%s (serial %s) is revoked by its CRL", what,
                           serial);
    }
    return 0;
}

/* Signing chain of a signed JSON item: verified to anchor, intermediates not on the root CRL,
 * signature over the exact text. */
static int verify_signed_item(X509 *anchor, X509_CRL *root_crl, const char *chain_pem,
                              const char *text, const struct kms_bytes *sig, time_t now,
                              const char *what, time_t *nb, time_t *na)
{
    STACK_OF(X509) *certs = NULL;
    STACK_OF(X509) *chain = NULL;
    char cwhat[96];
    int ok;
    int rc = 0;

    snprintf(cwhat, sizeof(cwhat), "%s issuer chain", what);
    KMS_GUARD(load_pem_chain(chain_pem, chain_pem != NULL ? strlen(chain_pem) : 0, cwhat, &certs));
    KMS_GUARD(kms_attest_chain_at(&anchor, 1, sk_X509_value(certs, 0), certs, now, cwhat,
                                  KMS_ERR_ATT_COLLATERAL_SIG, &chain));
    KMS_GUARD(chain_window(chain, nb, na));
    for (int i = 0; i < sk_X509_num(chain) - 1; i++)
        KMS_GUARD(check_revoked(root_crl, sk_X509_value(chain, i), cwhat));
    ok = kms_attest_ecdsa_p256_verify(X509_get0_pubkey(sk_X509_value(chain, 0)),
                                      (const uint8_t *)text, strlen(text), sig->p, sig->len);
    KMS_GUARD(ok);
    KMS_ENSURE(ok == 1, KMS_ERR_ATT_COLLATERAL_SIG,
               "%s signature does not verify with the TCB signing certificate", what);
out:
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(certs, X509_free);
    return rc;
}

static int check_dates(time_t issue, time_t next, time_t now, const char *what)
{
    char ts[32];

    fmt_time(next, ts);
    if (now > next)
        return kms_err_set(KMS_ERR_ATT_EXPIRED,
                           "%s expired: nextUpdate %s is before the verification time; refresh "
                           "the collateral (PCCS or --collateral-file)",
                           what, ts);
    fmt_time(issue, ts);
    if (now < issue)
        return kms_err_set(KMS_ERR_ATT_EXPIRED, "%s is not yet valid (issueDate %s)", what, ts);
    return 0;
}

static int verify_collateral(const struct kms_collateral *c, X509 *anchor, time_t now,
                             struct coll_verified **out)
{
    struct coll_verified *cv = calloc(1, sizeof(*cv));
    STACK_OF(X509) *certs = NULL;
    STACK_OF(X509) *chain = NULL;
    int rc = 0;

    *out = NULL;
    KMS_GUARD_PTR(cv);
    cv->not_before = 0;
    cv->not_after = (time_t)INT64_MAX;
    KMS_GUARD_OSSL(X509_up_ref(anchor), "X509_up_ref");
    cv->anchor = anchor;
    KMS_GUARD(load_crl(&c->root_ca_crl, anchor, now, "root CA CRL", &cv->root_crl, &cv->not_before,
                       &cv->not_after));

    KMS_GUARD(verify_signed_item(anchor, cv->root_crl, c->tcb_info_issuer_chain, c->tcb_info,
                                 &c->tcb_info_signature, now, "TCB info", &cv->not_before,
                                 &cv->not_after));
    KMS_GUARD(parse_tcb_info(c->tcb_info, &cv->ti));
    KMS_GUARD(check_dates(cv->ti.issue, cv->ti.next, now, "TCB info"));

    KMS_GUARD(verify_signed_item(anchor, cv->root_crl, c->qe_identity_issuer_chain, c->qe_identity,
                                 &c->qe_identity_signature, now, "QE identity", &cv->not_before,
                                 &cv->not_after));
    KMS_GUARD(parse_qe_identity(c->qe_identity, &cv->qe));
    KMS_GUARD(check_dates(cv->qe.issue, cv->qe.next, now, "QE identity"));

    KMS_GUARD(load_pem_chain(c->pck_crl_issuer_chain,
                             c->pck_crl_issuer_chain != NULL ? strlen(c->pck_crl_issuer_chain) : 0,
                             "PCK CRL issuer chain", &certs));
    KMS_GUARD(kms_attest_chain_at(&anchor, 1, sk_X509_value(certs, 0), certs, now,
                                  "PCK CRL issuer chain", KMS_ERR_ATT_COLLATERAL_SIG, &chain));
    KMS_GUARD(chain_window(chain, &cv->not_before, &cv->not_after));
    for (int i = 0; i < sk_X509_num(chain) - 1; i++)
        KMS_GUARD(check_revoked(cv->root_crl, sk_X509_value(chain, i), "PCK CA certificate"));
    cv->pck_crl_ca = sk_X509_value(chain, 0);
    KMS_GUARD_OSSL(X509_up_ref(cv->pck_crl_ca), "X509_up_ref");
    KMS_GUARD(load_crl(&c->pck_crl, cv->pck_crl_ca, now, "PCK CRL", &cv->pck_crl, &cv->not_before,
                       &cv->not_after));

    if (cv->ti.issue > cv->not_before)
        cv->not_before = cv->ti.issue;
    if (cv->qe.issue > cv->not_before)
        cv->not_before = cv->qe.issue;
    if (cv->ti.next < cv->not_after)
        cv->not_after = cv->ti.next;
    if (cv->qe.next < cv->not_after)
        cv->not_after = cv->qe.next;
    *out = cv;
    cv = NULL;
out:
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(certs, X509_free);
    coll_verified_free(cv);
    return rc;
}

/* ================================================================ source and caches */

struct kms_collateral_source {
    char *pccs_url;
    long timeout_ms;
    int no_cache;
    pthread_mutex_t mu; /* sets and stats */
    struct kms_collateral *sets;
    size_t n_sets;
    struct kms_lru *coll_cache;
    struct kms_lru *chain_cache;
    struct kms_collateral_stats st;
};

/* A verified PCK chain: leaf .. anchor. */
static void chain_entry_free(void *p)
{
    sk_X509_pop_free(p, X509_free);
}

int kms_collateral_source_new(const struct kms_collateral_source_opts *o,
                              struct kms_collateral_source **out)
{
    struct kms_collateral_source *s = calloc(1, sizeof(*s));
    int rc = 0;

    *out = NULL;
    KMS_GUARD_PTR(s);
    KMS_ENSURE(pthread_mutex_init(&s->mu, NULL) == 0, KMS_ERR_INTERNAL, "mutex init failed");
    s->timeout_ms = o != NULL && o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
    s->no_cache = o != NULL && o->no_cache;
    if (o != NULL && o->pccs_url != NULL && o->pccs_url[0] != '\0') {
        KMS_ENSURE(strncmp(o->pccs_url, "http://", 7) == 0 ||
                       strncmp(o->pccs_url, "https://", 8) == 0,
                   KMS_ERR_INVAL, "PCCS URL must start with http:// or https://");
        s->pccs_url = strdup(o->pccs_url);
        KMS_GUARD_PTR(s->pccs_url);
    }
    if (o != NULL && o->collateral_file != NULL && o->collateral_file[0] != '\0')
        KMS_GUARD(kms_collateral_load_file(o->collateral_file, &s->sets, &s->n_sets));
    if (!s->no_cache) {
        s->coll_cache =
            kms_lru_new(o != NULL && o->max_entries > 0 ? o->max_entries : DEFAULT_MAX_ENTRIES,
                        coll_verified_free);
        s->chain_cache = kms_lru_new(
            o != NULL && o->max_chains > 0 ? o->max_chains : DEFAULT_MAX_CHAINS, chain_entry_free);
        KMS_GUARD_PTR(s->coll_cache);
        KMS_GUARD_PTR(s->chain_cache);
    }
    *out = s;
    s = NULL;
out:
    kms_collateral_source_free(s);
    return rc;
}

void kms_collateral_source_free(struct kms_collateral_source *src)
{
    if (src == NULL)
        return;
    kms_lru_free(src->coll_cache);
    kms_lru_free(src->chain_cache);
    kms_collateral_free(src->sets, src->n_sets);
    free(src->pccs_url);
    pthread_mutex_destroy(&src->mu);
    free(src);
}

int kms_collateral_source_add(struct kms_collateral_source *src, const struct kms_collateral *c)
{
    struct kms_collateral *grown;
    int rc = 0;

    pthread_mutex_lock(&src->mu);
    KMS_ENSURE(src->n_sets < KMS_COLL_MAX_SETS, KMS_ERR_TOOBIG,
               "at most %u collateral sets per source", KMS_COLL_MAX_SETS);
    grown = realloc(src->sets, (src->n_sets + 1) * sizeof(*grown));
    KMS_GUARD_PTR(grown);
    src->sets = grown;
    KMS_GUARD(kms_collateral_copy(&src->sets[src->n_sets], c));
    src->n_sets++;
out:
    pthread_mutex_unlock(&src->mu);
    return rc;
}

void kms_collateral_source_flush(struct kms_collateral_source *src)
{
    kms_lru_flush(src->coll_cache);
    kms_lru_flush(src->chain_cache);
}

void kms_collateral_source_stats(struct kms_collateral_source *src, struct kms_collateral_stats *st)
{
    pthread_mutex_lock(&src->mu);
    *st = src->st;
    pthread_mutex_unlock(&src->mu);
    st->coll_entries = kms_lru_count(src->coll_cache);
    st->chain_entries = kms_lru_count(src->chain_cache);
}

void kms_attest_ctx_set_collateral_source(struct kms_attest_ctx *ctx,
                                          struct kms_collateral_source *src)
{
    ctx->coll_src = src;
}

static void count(struct kms_collateral_source *src, unsigned long *field)
{
    pthread_mutex_lock(&src->mu);
    (*field)++;
    pthread_mutex_unlock(&src->mu);
}

/* Index of anchor among ctx's TDX roots, or -1. */
static int ctx_root_index(const struct kms_attest_ctx *ctx, X509 *anchor)
{
    for (size_t i = 0; i < ctx->n_roots[KMS_ROOT_TDX]; i++) {
        if (X509_cmp(ctx->roots[KMS_ROOT_TDX][i].cert, anchor) == 0)
            return (int)i;
    }
    return -1;
}

/* The PCK chain leaf .. anchor, from the cache (by SHA-256 of the leaf DER) or verified now.
 * *ref != NULL: release with the cache; else the caller frees *chain. */
static int pck_chain(const struct kms_attest_ctx *ctx, struct kms_collateral_source *src,
                     STACK_OF(X509) * certs, time_t now, STACK_OF(X509) * *chain, void **ref,
                     int *is_sim)
{
    uint8_t key[32];
    unsigned int klen = 0;
    time_t nb = 0;
    time_t na = (time_t)INT64_MAX;
    int idx;
    int rc = 0;

    *chain = NULL;
    *ref = NULL;
    KMS_GUARD_OSSL(X509_digest(sk_X509_value(certs, 0), EVP_sha256(), key, &klen), "X509_digest");
    if (src->chain_cache != NULL) {
        *chain = kms_lru_get(src->chain_cache, key, now, ref);
        if (*chain != NULL) {
            idx = ctx_root_index(ctx, chain_top(*chain));
            if (idx >= 0) {
                *is_sim = ctx->roots[KMS_ROOT_TDX][idx].is_sim;
                count(src, &src->st.chain_hits);
                return 0;
            }
            kms_lru_release(src->chain_cache, *ref); /* reached a root this ctx does not pin */
            *chain = NULL;
            *ref = NULL;
        }
    }
    count(src, &src->st.chain_misses);
    KMS_GUARD(kms_tdx_pck_chain(ctx, certs, chain, is_sim));
    KMS_ENSURE(sk_X509_num(*chain) == 3, KMS_ERR_ATT_CHAIN,
               "PCK chain has %d certificates; want PCK certificate, PCK CA, root",
               sk_X509_num(*chain));
    idx = ctx_root_index(ctx, chain_top(*chain));
    KMS_ENSURE(idx >= 0, KMS_ERR_ATT_CHAIN, "PCK chain does not end at a pinned root");
    KMS_GUARD(chain_window(*chain, &nb, &na));
    if (src->chain_cache != NULL) {
        rc = kms_lru_put(src->chain_cache, key, *chain, nb, na, ref);
        if (rc < 0)
            *chain = NULL; /* the cache freed it */
    }
out:
    if (rc < 0 && *ref == NULL) {
        sk_X509_pop_free(*chain, X509_free);
        *chain = NULL;
    }
    return rc;
}

/* Picks a configured set for fmspc (copied into *raw): the only set when there is one and no
 * PCCS, else the set whose tcbInfo names this FMSPC. 1 found, 0 none. */
static int pick_set(struct kms_collateral_source *src, const uint8_t fmspc[6],
                    struct kms_collateral *raw)
{
    int rc = 0;

    pthread_mutex_lock(&src->mu);
    if (src->n_sets == 1 && src->pccs_url == NULL) {
        rc = kms_collateral_copy(raw, &src->sets[0]);
        rc = rc < 0 ? rc : 1;
        goto out;
    }
    for (size_t i = 0; i < src->n_sets; i++) {
        uint8_t f[6];

        if (peek_fmspc(&src->sets[i], f) == 0 && memcmp(f, fmspc, 6) == 0) {
            rc = kms_collateral_copy(raw, &src->sets[i]);
            rc = rc < 0 ? rc : 1;
            goto out;
        }
    }
out:
    pthread_mutex_unlock(&src->mu);
    return rc;
}

static int get_collateral(struct kms_collateral_source *src, const uint8_t fmspc[6], const char *ca,
                          X509 *anchor, time_t now, struct coll_verified **out, void **ref)
{
    struct kms_collateral raw = {0};
    uint8_t key[32];
    uint8_t adig[32];
    unsigned int dlen = 0;
    char fmspc_hex[13];
    uint8_t kin[14 + 6 + 16 + 32];
    size_t kn = 0;
    int rc = 0;

    *out = NULL;
    *ref = NULL;
    KMS_GUARD_OSSL(X509_digest(anchor, EVP_sha256(), adig, &dlen), "X509_digest");
    memcpy(kin, "kms-collateral", 14);
    kn = 14;
    memcpy(kin + kn, fmspc, 6);
    kn += 6;
    memset(kin + kn, 0, 16);
    memcpy(kin + kn, ca, strlen(ca) < 16 ? strlen(ca) : 15);
    kn += 16;
    memcpy(kin + kn, adig, 32);
    kn += 32;
    SHA256(kin, kn, key);
    if (src->coll_cache != NULL) {
        *out = kms_lru_get(src->coll_cache, key, now, ref);
        if (*out != NULL) {
            count(src, &src->st.coll_hits);
            return 0;
        }
    }
    count(src, &src->st.coll_misses);
    kms_hex_encode(fmspc, 6, fmspc_hex);
    rc = pick_set(src, fmspc, &raw);
    KMS_GUARD(rc);
    if (rc == 0) {
        KMS_ENSURE(src->pccs_url != NULL, KMS_ERR_ATT_COLLATERAL,
                   "no TDX collateral for FMSPC %s: configure --pccs-url or a --collateral-file "
                   "holding this FMSPC",
                   fmspc_hex);
        count(src, &src->st.fetches);
        rc = kms_collateral_fetch(src->pccs_url, fmspc_hex, ca, src->timeout_ms, &raw);
        if (rc < 0) {
            rc = kms_err_wrap(KMS_ERR_ATT_COLLATERAL, "TDX collateral unavailable");
            goto out;
        }
    }
    rc = 0;
    KMS_GUARD(verify_collateral(&raw, anchor, now, out));
    if (src->coll_cache != NULL) {
        rc = kms_lru_put(src->coll_cache, key, *out, (*out)->not_before, (*out)->not_after, ref);
        if (rc < 0)
            *out = NULL;
    }
out:
    kms_collateral_clear(&raw);
    return rc;
}

/* ================================================================ PCK certificate extension */

struct pck_ext {
    uint8_t ppid[64];
    size_t ppid_len;
    uint8_t comp[16];
    uint16_t pcesvn;
    uint8_t pce_id[2];
    uint8_t fmspc[6];
    unsigned have; /* bit 0 tcb comps (all 16), 1 pcesvn, 2 pce_id, 3 fmspc */
};

static int octets(ASN1_TYPE *v, uint8_t *out, size_t n, size_t *got)
{
    int len;

    if (v->type != V_ASN1_OCTET_STRING)
        return -1;
    len = ASN1_STRING_length(v->value.octet_string);
    if (len < 0 || (got == NULL && (size_t)len != n) || (size_t)len > n)
        return -1;
    memcpy(out, ASN1_STRING_get0_data(v->value.octet_string), (size_t)len);
    if (got != NULL)
        *got = (size_t)len;
    return 0;
}

static int seq_any(const ASN1_STRING *s, STACK_OF(ASN1_TYPE) * *out)
{
    const unsigned char *p = ASN1_STRING_get0_data(s);

    *out = d2i_ASN1_SEQUENCE_ANY(NULL, &p, ASN1_STRING_length(s));
    return *out != NULL ? 0 : -1;
}

/* One SEQUENCE { OID, value } of the SGX extension → arcs after 1.2.840.113741.1.13.1. */
static int entry(ASN1_TYPE *t, STACK_OF(ASN1_TYPE) * *inner, const char **suffix, char *buf,
                 size_t cap)
{
    ASN1_TYPE *k;
    size_t base = strlen(OID_SGX_EXT);

    *inner = NULL;
    if (t->type != V_ASN1_SEQUENCE || seq_any(t->value.sequence, inner) < 0 ||
        sk_ASN1_TYPE_num(*inner) != 2)
        return -1;
    k = sk_ASN1_TYPE_value(*inner, 0);
    if (k->type != V_ASN1_OBJECT || OBJ_obj2txt(buf, (int)cap, k->value.object, 1) <= 0 ||
        strncmp(buf, OID_SGX_EXT ".", base + 1) != 0)
        return -1;
    *suffix = buf + base + 1;
    return 0;
}

static int parse_pck_ext(X509 *leaf, struct pck_ext *e)
{
    ASN1_OBJECT *oid = OBJ_txt2obj(OID_SGX_EXT, 1);
    STACK_OF(ASN1_TYPE) *outer = NULL;
    STACK_OF(ASN1_TYPE) *inner = NULL;
    STACK_OF(ASN1_TYPE) *tcb = NULL;
    STACK_OF(ASN1_TYPE) *tin = NULL;
    const char *sfx;
    char buf[80];
    int idx;
    int rc = 0;

    memset(e, 0, sizeof(*e));
    KMS_GUARD_PTR(oid);
    idx = X509_get_ext_by_OBJ(leaf, oid, -1);
    KMS_ENSURE(idx >= 0, KMS_ERR_ATT_COLLATERAL,
               "PCK certificate has no Intel SGX extension (FMSPC, TCB): cannot evaluate the TCB");
    KMS_ENSURE(seq_any(X509_EXTENSION_get_data(X509_get_ext(leaf, idx)), &outer) == 0,
               KMS_ERR_ATT_FORMAT, "malformed SGX extension in PCK certificate");
    for (int i = 0; i < sk_ASN1_TYPE_num(outer); i++) {
        ASN1_TYPE *val;

        KMS_ENSURE(entry(sk_ASN1_TYPE_value(outer, i), &inner, &sfx, buf, sizeof(buf)) == 0,
                   KMS_ERR_ATT_FORMAT, "malformed SGX extension entry in PCK certificate");
        val = sk_ASN1_TYPE_value(inner, 1);
        if (strcmp(sfx, "1") == 0) {
            KMS_ENSURE(octets(val, e->ppid, sizeof(e->ppid), &e->ppid_len) == 0, KMS_ERR_ATT_FORMAT,
                       "PPID in PCK certificate is malformed");
        } else if (strcmp(sfx, "3") == 0) {
            KMS_ENSURE(octets(val, e->pce_id, 2, NULL) == 0, KMS_ERR_ATT_FORMAT,
                       "PCE-ID in PCK certificate is malformed");
            e->have |= 4;
        } else if (strcmp(sfx, "4") == 0) {
            KMS_ENSURE(octets(val, e->fmspc, 6, NULL) == 0, KMS_ERR_ATT_FORMAT,
                       "FMSPC in PCK certificate is malformed");
            e->have |= 8;
        } else if (strcmp(sfx, "2") == 0) {
            unsigned comps = 0;

            KMS_ENSURE(val->type == V_ASN1_SEQUENCE && seq_any(val->value.sequence, &tcb) == 0,
                       KMS_ERR_ATT_FORMAT, "TCB in PCK certificate is malformed");
            for (int j = 0; j < sk_ASN1_TYPE_num(tcb); j++) {
                ASN1_TYPE *tv;
                long n;
                char tbuf[80];
                const char *ts;

                KMS_ENSURE(entry(sk_ASN1_TYPE_value(tcb, j), &tin, &ts, tbuf, sizeof(tbuf)) == 0,
                           KMS_ERR_ATT_FORMAT, "malformed TCB entry in PCK certificate");
                tv = sk_ASN1_TYPE_value(tin, 1);
                if (strncmp(ts, "2.", 2) == 0 && tv->type == V_ASN1_INTEGER) {
                    long arc = strtol(ts + 2, NULL, 10);

                    n = ASN1_INTEGER_get(tv->value.integer);
                    if (arc >= 1 && arc <= 16) {
                        KMS_ENSURE(n >= 0 && n <= 255, KMS_ERR_ATT_FORMAT,
                                   "TCB component SVN %ld out of range", n);
                        e->comp[arc - 1] = (uint8_t)n;
                        comps |= 1u << (arc - 1);
                    } else if (arc == 17) {
                        KMS_ENSURE(n >= 0 && n <= 65535, KMS_ERR_ATT_FORMAT,
                                   "PCESVN %ld out of range", n);
                        e->pcesvn = (uint16_t)n;
                        e->have |= 2;
                    }
                }
                sk_ASN1_TYPE_pop_free(tin, ASN1_TYPE_free);
                tin = NULL;
            }
            if (comps == 0xffffu)
                e->have |= 1;
            sk_ASN1_TYPE_pop_free(tcb, ASN1_TYPE_free);
            tcb = NULL;
        }
        sk_ASN1_TYPE_pop_free(inner, ASN1_TYPE_free);
        inner = NULL;
    }
    KMS_ENSURE(e->have == 15, KMS_ERR_ATT_COLLATERAL, "PCK certificate SGX extension lacks %s",
               !(e->have & 1)   ? "TCB component SVNs"
               : !(e->have & 2) ? "the PCESVN"
               : !(e->have & 4) ? "the PCE-ID"
                                : "the FMSPC");
out:
    ERR_clear_error();
    sk_ASN1_TYPE_pop_free(tin, ASN1_TYPE_free);
    sk_ASN1_TYPE_pop_free(tcb, ASN1_TYPE_free);
    sk_ASN1_TYPE_pop_free(inner, ASN1_TYPE_free);
    sk_ASN1_TYPE_pop_free(outer, ASN1_TYPE_free);
    ASN1_OBJECT_free(oid);
    return rc;
}

/* ================================================================ TCB evaluation */

struct status_acc {
    int status;
    char **adv;
    size_t n_adv;
};

static int merge(struct status_acc *a, const struct level *l)
{
    if (l->status > a->status)
        a->status = l->status;
    for (size_t i = 0; i < l->n_adv; i++) {
        int dup = 0;
        char **grown;

        for (size_t j = 0; j < a->n_adv; j++)
            dup |= strcmp(a->adv[j], l->adv[i]) == 0;
        if (dup)
            continue;
        grown = realloc(a->adv, (a->n_adv + 1) * sizeof(char *));
        if (grown == NULL)
            return kms_err_set(KMS_ERR_NOMEM, "out of memory");
        a->adv = grown;
        a->adv[a->n_adv] = strdup(l->adv[i]);
        if (a->adv[a->n_adv] == NULL)
            return kms_err_set(KMS_ERR_NOMEM, "out of memory");
        a->n_adv++;
    }
    return 0;
}

/* First level (sorted by isvsvn, descending) the given isvsvn reaches. */
static const struct level *isv_level(const struct level *l, size_t n, unsigned isvsvn)
{
    const struct level *best = NULL;

    for (size_t i = 0; i < n; i++) {
        if (isvsvn >= l[i].isvsvn && (best == NULL || l[i].isvsvn > best->isvsvn))
            best = &l[i];
    }
    return best;
}

static int check_qe(const struct qe_identity *qi, const struct kms_tdx_qe_report *rep,
                    struct status_acc *acc)
{
    uint32_t want_misc = (uint32_t)qi->miscselect[0] | (uint32_t)qi->miscselect[1] << 8 |
                         (uint32_t)qi->miscselect[2] << 16 | (uint32_t)qi->miscselect[3] << 24;
    uint32_t mask = (uint32_t)qi->miscselect_mask[0] | (uint32_t)qi->miscselect_mask[1] << 8 |
                    (uint32_t)qi->miscselect_mask[2] << 16 | (uint32_t)qi->miscselect_mask[3] << 24;
    const struct level *l;
    int rc = 0;

    KMS_ENSURE(memcmp(rep->mr_signer, qi->mrsigner, 32) == 0, KMS_ERR_ATT_TCB,
               "QE MRSIGNER does not match the QE identity: the quote was not made by Intel's "
               "TD quoting enclave");
    KMS_ENSURE(!(rep->attributes[0] & 0x02), KMS_ERR_ATT_TCB,
               "QE report has the DEBUG attribute set");
    KMS_ENSURE(rep->isv_prod_id == qi->isvprodid, KMS_ERR_ATT_TCB,
               "QE ISVPRODID %u does not match the QE identity (%u)", (unsigned)rep->isv_prod_id,
               qi->isvprodid);
    KMS_ENSURE((rep->misc_select & mask) == (want_misc & mask), KMS_ERR_ATT_TCB,
               "QE MISCSELECT %08x does not match the QE identity under its mask",
               rep->misc_select);
    for (int i = 0; i < 16; i++)
        KMS_ENSURE((rep->attributes[i] & qi->attributes_mask[i]) ==
                       (qi->attributes[i] & qi->attributes_mask[i]),
                   KMS_ERR_ATT_TCB,
                   "QE ATTRIBUTES byte %d does not match the QE identity under its mask", i);
    l = isv_level(qi->levels, qi->n_levels, rep->isv_svn);
    KMS_ENSURE(l != NULL, KMS_ERR_ATT_TCB, "QE ISVSVN %u is below every QE identity TCB level",
               (unsigned)rep->isv_svn);
    KMS_GUARD(merge(acc, l));
out:
    return rc;
}

static int check_module(const struct tcb_info *ti, const struct kms_tdx_report *td,
                        struct status_acc *acc)
{
    const struct module_id *m = &ti->module;
    const struct module_id *ident = NULL;
    unsigned version = td->tee_tcb_svn[1];
    int rc = 0;

    KMS_ENSURE(ti->has_module, KMS_ERR_ATT_COLLATERAL, "TDX TCB info lacks tdxModule");
    if (version > 0 && ti->n_mods > 0) {
        char want[16];

        snprintf(want, sizeof(want), "TDX_%02X", version);
        for (size_t i = 0; i < ti->n_mods && ident == NULL; i++) {
            if (strcasecmp(ti->mods[i].id, want) == 0)
                ident = &ti->mods[i];
        }
        KMS_ENSURE(ident != NULL, KMS_ERR_ATT_TCB,
                   "No TDX module identity with id %s found in TCB Info", want);
        m = ident;
    }
    if (memcmp(td->mr_signer_seam, m->mrsigner, 48) != 0) {
        char want[97];
        char got[97];

        kms_hex_encode(m->mrsigner, 48, want);
        kms_hex_encode(td->mr_signer_seam, 48, got);
        for (int i = 0; i < 96; i++) {
            want[i] = (char)toupper((unsigned char)want[i]);
            got[i] = (char)toupper((unsigned char)got[i]);
        }
        rc = kms_err_set(KMS_ERR_ATT_TCB, "TDX module MRSIGNER mismatch: expected %s, got %s", want,
                         got);
        goto out;
    }
    /* SEAMATTRIBUTES: the masked bits match and no bit outside the mask is set (dcap-qvl's
     * texts, byte by byte in the same order) */
    for (int i = 0; i < 8; i++) {
        unsigned want = m->attributes[i] & m->mask[i];
        unsigned got = td->seam_attributes[i] & m->mask[i];

        KMS_ENSURE(want == got, KMS_ERR_ATT_TCB,
                   "TDX module SEAMATTRIBUTES mismatch at byte %d: expected %02X (masked), got "
                   "%02X (masked)",
                   i, want, got);
        KMS_ENSURE((td->seam_attributes[i] & ~m->mask[i]) == 0, KMS_ERR_ATT_TCB,
                   "TDX module SEAMATTRIBUTES has bits set outside mask at byte %d", i);
    }
    if (ident != NULL) {
        const struct level *l = isv_level(ident->levels, ident->n_levels, td->tee_tcb_svn[0]);

        KMS_ENSURE(l != NULL, KMS_ERR_ATT_TCB,
                   "TDX module ISVSVN %u is below minimum required from TDX module TCB levels",
                   td->tee_tcb_svn[0]);
        KMS_GUARD(merge(acc, l));
    }
out:
    return rc;
}

static int check_platform(const struct tcb_info *ti, const struct pck_ext *e,
                          const struct kms_tdx_report *td, struct status_acc *acc)
{
    int rc = 0;

    for (size_t i = 0; i < ti->n_levels; i++) {
        const struct level *l = &ti->levels[i];
        int ok = e->pcesvn >= l->pcesvn;

        for (int j = 0; j < 16 && ok; j++)
            ok = e->comp[j] >= l->sgx[j] && td->tee_tcb_svn[j] >= l->tdx[j];
        if (ok)
            return merge(acc, l);
    }
    rc = kms_err_set(KMS_ERR_ATT_TCB,
                     "No matching TCB level found: the platform TCB (PCESVN %u) is below every "
                     "TCB level of the TCB info",
                     e->pcesvn);
    return rc;
}

int kms_tdx_quote_verify_collateral(const struct kms_attest_ctx *ctx, const uint8_t *quote,
                                    size_t len, struct kms_verified *out)
{
    struct kms_collateral_source *src = ctx->coll_src;
    struct kms_tdx_quote q;
    STACK_OF(X509) *certs = NULL;
    STACK_OF(X509) *chain = NULL;
    void *chain_ref = NULL;
    void *coll_ref = NULL;
    struct coll_verified *cv = NULL;
    struct status_acc acc = {0};
    struct pck_ext ext;
    X509 *leaf;
    time_t now = kms_attest_now(ctx);
    char a_hex[13];
    char b_hex[13];
    const char *ca;
    char cn[128] = "";
    int is_sim = 0;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    KMS_ENSURE(src != NULL, KMS_ERR_INVAL, "no collateral source configured");

    /* quote and QE report signatures, QE binding: the checks of kms_tdx_quote_verify */
    KMS_GUARD(kms_tdx_quote_check_sigs(quote, len, &q, &certs));
    KMS_ENSURE(memcmp(q.qe_vendor_id, intel_qe_vendor_id, 16) == 0, KMS_ERR_ATT_TCB,
               "quote QE vendor ID is not Intel's");

    /* the PCK chain reaches a pinned root (cached) */
    KMS_GUARD(pck_chain(ctx, src, certs, now, &chain, &chain_ref, &is_sim));
    leaf = sk_X509_value(chain, 0);
    KMS_GUARD(parse_pck_ext(leaf, &ext));
    X509_NAME_get_text_by_NID(X509_get_issuer_name(leaf), NID_commonName, cn, sizeof(cn));
    ca = strstr(cn, "Processor") != NULL ? "processor" : "platform";

    /* collateral signed to the same root */
    KMS_GUARD(get_collateral(src, ext.fmspc, ca, chain_top(chain), now, &cv, &coll_ref));

    /* revocation: the PCK certificate on the PCK CRL of its own CA, the CA on the root CRL */
    KMS_ENSURE(EVP_PKEY_eq(X509_get0_pubkey(sk_X509_value(chain, 1)),
                           X509_get0_pubkey(cv->pck_crl_ca)) == 1,
               KMS_ERR_ATT_COLLATERAL,
               "the PCK CRL is issued by another CA than the PCK certificate's (%s)", cn);
    ERR_clear_error();
    KMS_GUARD(check_revoked(cv->pck_crl, leaf, "PCK certificate"));
    KMS_GUARD(check_revoked(cv->root_crl, sk_X509_value(chain, 1), "PCK CA certificate"));

    /* the collateral describes this platform */
    kms_hex_encode(ext.fmspc, 6, a_hex);
    kms_hex_encode(cv->ti.fmspc, 6, b_hex);
    KMS_ENSURE(memcmp(ext.fmspc, cv->ti.fmspc, 6) == 0, KMS_ERR_ATT_COLLATERAL,
               "FMSPC mismatch: the PCK certificate has %s, the TCB info is for %s", a_hex, b_hex);
    KMS_ENSURE(memcmp(ext.pce_id, cv->ti.pce_id, 2) == 0, KMS_ERR_ATT_COLLATERAL,
               "PCE-ID mismatch: the PCK certificate has %02x%02x, the TCB info %02x%02x",
               ext.pce_id[0], ext.pce_id[1], cv->ti.pce_id[0], cv->ti.pce_id[1]);

    /* TCB: platform level, TDX module, QE identity; the worst status wins */
    KMS_GUARD(check_platform(&cv->ti, &ext, &q.report, &acc));
    KMS_GUARD(check_module(&cv->ti, &q.report, &acc));
    KMS_GUARD(check_qe(&cv->qe, &q.qe, &acc));
    KMS_ENSURE(acc.status != ST_REVOKED, KMS_ERR_ATT_REVOKED,
               "TCB status is Revoked: this platform's TCB level was revoked by Intel");
    /* the TD-attribute rules last, as dcap-qvl (validate_attrs) */
    KMS_GUARD(kms_tdx_check_attributes(&q));

    out->mode = KMS_ATT_TDX;
    out->sim = is_sim;
    out->td = q.report;
    memcpy(out->ppid, ext.ppid, ext.ppid_len);
    out->ppid_len = ext.ppid_len;
    snprintf(out->tcb_status, sizeof(out->tcb_status), "%s", status_names[acc.status]);
    out->advisory_ids = acc.adv;
    out->n_advisory_ids = acc.n_adv;
    acc.adv = NULL;
    acc.n_adv = 0;
out:
    for (size_t i = 0; i < acc.n_adv; i++)
        free(acc.adv[i]);
    free(acc.adv);
    if (coll_ref != NULL)
        kms_lru_release(src->coll_cache, coll_ref);
    else
        coll_verified_free(cv);
    if (chain_ref != NULL)
        kms_lru_release(src->chain_cache, chain_ref);
    else
        sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(certs, X509_free);
    if (rc < 0)
        kms_verified_free(out);
    return rc;
}
