/*
 * chain: Solidity ABI encoding of the calls the KMS makes (AppBootInfo tuple, admin calls) and
 * strict decoding of what comes back (attestation-reference.md §4.1, §4.5).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "chain/eth.h"
#include "common/hex.h"
#include "common/keccak.h"

/* ---------------------------------------------------------------- normalization */

int kms_eth_pad(const char *field, const uint8_t *p, size_t n, uint8_t *out, size_t size)
{
    int rc = 0;

    KMS_ENSURE(n <= size, KMS_ERR_TOOBIG,
               "%s is %zu bytes, longer than the %zu bytes of its contract type", field, n, size);
    memset(out, 0, size);
    if (n > 0)
        memcpy(out + (size - n), p, n);
out:
    return rc;
}

int kms_eth_pad_hex(const char *field, const char *hex, uint8_t *out, size_t size)
{
    char buf[2 * 64 + 1];
    size_t len;
    int rc = 0;

    KMS_ENSURE(hex != NULL && size <= 64, KMS_ERR_INVAL, "%s: missing value", field);
    if (hex[0] == '0' && (hex[1] == 'x' || hex[1] == 'X'))
        hex += 2;
    len = strlen(hex);
    KMS_ENSURE(len <= 2 * size, KMS_ERR_TOOBIG,
               "%s has %zu hex digits, more than the %zu of its contract type", field, len,
               2 * size);
    for (size_t i = 0; i < len; i++)
        KMS_ENSURE(isxdigit((unsigned char)hex[i]), KMS_ERR_PARSE,
                   "%s is not hex (bad character at position %zu)", field, i + 1);
    /* Pad as text, as auth-eth does with padStart, so odd lengths work too. */
    memset(buf, '0', 2 * size - len);
    memcpy(buf + (2 * size - len), hex, len);
    buf[2 * size] = '\0';
    rc = kms_hex_decode_exact(buf, out, size);
    if (rc < 0)
        rc = kms_err_wrap(rc, "%s", field);
out:
    return rc;
}

int kms_eth_boot_info_from(const struct kms_boot_info *bi, struct kms_eth_boot_info *out)
{
    int rc = 0;

    KMS_ENSURE(bi != NULL && out != NULL, KMS_ERR_INVAL, "boot info: missing argument");
    memset(out, 0, sizeof(*out));
    KMS_ENSURE(bi->n_advisory_ids <= KMS_ETH_MAX_ADVISORIES, KMS_ERR_TOOBIG,
               "boot info carries %zu advisory ids, more than %u", bi->n_advisory_ids,
               KMS_ETH_MAX_ADVISORIES);
    KMS_GUARD(kms_eth_pad("appId", bi->app_id.p, bi->app_id.len, out->app_id, 20));
    KMS_GUARD(kms_eth_pad("composeHash", bi->compose_hash.p, bi->compose_hash.len,
                          out->compose_hash, 32));
    KMS_GUARD(
        kms_eth_pad("instanceId", bi->instance_id.p, bi->instance_id.len, out->instance_id, 20));
    memcpy(out->device_id, bi->device_id, 32);
    memcpy(out->mr_aggregated, bi->mr_aggregated, 32);
    memcpy(out->mr_system, bi->mr_system, 32);
    KMS_GUARD(kms_eth_pad("osImageHash", bi->os_image_hash.p, bi->os_image_hash.len,
                          out->os_image_hash, 32));
    out->tcb_status = bi->tcb_status;
    out->advisory_ids = (const char *const *)bi->advisory_ids;
    out->n_advisory_ids = bi->n_advisory_ids;
    for (size_t i = 0; i < bi->n_advisory_ids; i++)
        KMS_ENSURE(bi->advisory_ids[i] != NULL, KMS_ERR_INVAL, "advisory id %zu is missing", i);
out:
    return rc;
}

/* ---------------------------------------------------------------- encoding */

void kms_eth_word_address(const uint8_t addr[20], uint8_t w[32])
{
    memset(w, 0, 12);
    memcpy(w + 12, addr, 20);
}

void kms_eth_word_u64(uint64_t v, uint8_t w[32])
{
    memset(w, 0, 32);
    for (int i = 0; i < 8; i++)
        w[31 - i] = (uint8_t)(v >> (8 * i));
}

void kms_eth_selector(const char *signature, uint8_t sel[4])
{
    uint8_t h[32];

    kms_keccak256(signature, strlen(signature), h);
    memcpy(sel, h, 4);
}

static size_t pad32(size_t n)
{
    return (n + 31) / 32 * 32;
}

static int put_zeros(struct kms_buf *b, size_t n)
{
    static const uint8_t z[32];
    int rc = 0;

    while (n > 0) {
        size_t k = n < sizeof(z) ? n : sizeof(z);
        KMS_GUARD(kms_buf_put(b, z, k));
        n -= k;
    }
out:
    return rc;
}

static int put_u64_word(struct kms_buf *b, uint64_t v)
{
    uint8_t w[32];

    kms_eth_word_u64(v, w);
    return kms_buf_put(b, w, 32);
}

/* Size of one argument's tail (0 for head words). */
static int tail_size(const struct kms_eth_abi_arg *a, size_t *sz)
{
    int rc = 0;

    switch (a->kind) {
    case KMS_ABI_WORD:
        *sz = 0;
        break;
    case KMS_ABI_BYTES:
        KMS_ENSURE(a->n <= KMS_BUF_MAX / 2, KMS_ERR_TOOBIG, "ABI argument too large");
        *sz = 32 + pad32(a->n);
        break;
    case KMS_ABI_ENCODED:
        KMS_ENSURE(a->n <= KMS_BUF_MAX / 2 && a->n % 32 == 0, KMS_ERR_INVAL,
                   "pre-encoded ABI value is not a whole number of words");
        *sz = a->n;
        break;
    default:
        rc = kms_err_set(KMS_ERR_INVAL, "unknown ABI argument kind");
    }
out:
    return rc;
}

int kms_eth_abi_encode(const uint8_t *sel, const struct kms_eth_abi_arg *args, size_t n,
                       struct kms_buf *out)
{
    size_t off;
    int rc = 0;

    KMS_ENSURE(out != NULL && (n == 0 || args != NULL) && n <= 64, KMS_ERR_INVAL,
               "ABI encode: bad arguments");
    if (sel != NULL)
        KMS_GUARD(kms_buf_put(out, sel, 4));
    /* Offsets of tails are relative to the start of the head (after the selector). */
    off = 32 * n;
    for (size_t i = 0; i < n; i++) {
        size_t sz;

        KMS_GUARD(tail_size(&args[i], &sz));
        if (args[i].kind == KMS_ABI_WORD) {
            KMS_GUARD(kms_buf_put(out, args[i].p, 32));
        } else {
            KMS_GUARD(put_u64_word(out, off));
            off += sz;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (args[i].kind == KMS_ABI_BYTES) {
            KMS_GUARD(put_u64_word(out, args[i].n));
            if (args[i].n > 0)
                KMS_GUARD(kms_buf_put(out, args[i].p, args[i].n));
            KMS_GUARD(put_zeros(out, pad32(args[i].n) - args[i].n));
        } else if (args[i].kind == KMS_ABI_ENCODED && args[i].n > 0) {
            KMS_GUARD(kms_buf_put(out, args[i].p, args[i].n));
        }
    }
out:
    return rc;
}

int kms_eth_abi_encode_str_array(const char *const *s, size_t n, struct kms_buf *out)
{
    struct kms_eth_abi_arg *args = NULL;
    int rc = 0;

    KMS_ENSURE(n <= KMS_ETH_MAX_ADVISORIES, KMS_ERR_TOOBIG, "string array too long");
    KMS_GUARD(put_u64_word(out, n));
    if (n == 0)
        goto out;
    args = calloc(n, sizeof(*args));
    KMS_GUARD_PTR(args);
    for (size_t i = 0; i < n; i++) {
        args[i].kind = KMS_ABI_BYTES;
        args[i].p = (const uint8_t *)s[i];
        args[i].n = strlen(s[i]);
    }
    /* An array's elements are encoded as a tuple of n elements (no selector). */
    {
        size_t off = 32 * n;

        for (size_t i = 0; i < n; i++) {
            KMS_GUARD(put_u64_word(out, off));
            off += 32 + pad32(args[i].n);
        }
        for (size_t i = 0; i < n; i++) {
            KMS_GUARD(put_u64_word(out, args[i].n));
            if (args[i].n > 0)
                KMS_GUARD(kms_buf_put(out, args[i].p, args[i].n));
            KMS_GUARD(put_zeros(out, pad32(args[i].n) - args[i].n));
        }
    }
out:
    free(args);
    return rc;
}

int kms_eth_abi_boot_info_call(int is_kms, const struct kms_eth_boot_info *b, struct kms_buf *out)
{
    static const char *const sig_app = "isAppAllowed((address,bytes32,address,bytes32,bytes32,"
                                       "bytes32,bytes32,string,string[]))";
    static const char *const sig_kms = "isKmsAllowed((address,bytes32,address,bytes32,bytes32,"
                                       "bytes32,bytes32,string,string[]))";
    struct kms_buf arr = {0}, tuple = {0};
    uint8_t app_w[32], inst_w[32], sel[4];
    const char *tcb;
    int rc = 0;

    KMS_ENSURE(b != NULL && out != NULL, KMS_ERR_INVAL, "ABI encode: missing argument");
    tcb = b->tcb_status != NULL ? b->tcb_status : "";
    kms_eth_word_address(b->app_id, app_w);
    kms_eth_word_address(b->instance_id, inst_w);
    KMS_GUARD(kms_eth_abi_encode_str_array(b->advisory_ids, b->n_advisory_ids, &arr));
    {
        const struct kms_eth_abi_arg f[9] = {
            {KMS_ABI_WORD, app_w, 32},
            {KMS_ABI_WORD, b->compose_hash, 32},
            {KMS_ABI_WORD, inst_w, 32},
            {KMS_ABI_WORD, b->device_id, 32},
            {KMS_ABI_WORD, b->mr_aggregated, 32},
            {KMS_ABI_WORD, b->mr_system, 32},
            {KMS_ABI_WORD, b->os_image_hash, 32},
            {KMS_ABI_BYTES, (const uint8_t *)tcb, strlen(tcb)},
            {KMS_ABI_ENCODED, arr.data, arr.len},
        };
        KMS_GUARD(kms_eth_abi_encode(NULL, f, 9, &tuple));
    }
    {
        /* The struct is dynamic, so the single argument is an offset (0x20) and a tail. */
        const struct kms_eth_abi_arg a = {KMS_ABI_ENCODED, tuple.data, tuple.len};

        kms_eth_selector(is_kms ? sig_kms : sig_app, sel);
        KMS_GUARD(kms_eth_abi_encode(sel, &a, 1, out));
    }
out:
    kms_buf_free(&arr);
    kms_buf_free(&tuple);
    return rc;
}

/* ---------------------------------------------------------------- decoding */

/* A word that must hold a small unsigned integer (<= max). */
static int word_size(const uint8_t *w, size_t max, const char *what, size_t *out)
{
    uint64_t v = 0;
    int rc = 0;

    for (int i = 0; i < 24; i++)
        KMS_ENSURE(w[i] == 0, KMS_ERR_PARSE, "ABI %s out of range", what);
    for (int i = 24; i < 32; i++)
        v = (v << 8) | w[i];
    KMS_ENSURE(v <= max, KMS_ERR_PARSE, "ABI %s %llu exceeds %zu", what, (unsigned long long)v,
               max);
    *out = (size_t)v;
out:
    return rc;
}

/* The dynamic bytes/string whose offset is head word idx. */
static int read_dyn(const uint8_t *p, size_t n, size_t idx, size_t max, const uint8_t **data,
                    size_t *len)
{
    struct kms_reader r;
    const uint8_t *w;
    size_t off, l;
    int rc = 0;

    kms_rd_init(&r, p, n);
    KMS_GUARD(kms_rd_skip(&r, 32 * idx));
    KMS_GUARD(kms_rd_ptr(&r, 32, &w));
    KMS_GUARD(word_size(w, n, "offset", &off));
    kms_rd_init(&r, p, n);
    KMS_GUARD(kms_rd_skip(&r, off));
    KMS_GUARD(kms_rd_ptr(&r, 32, &w));
    KMS_GUARD(word_size(w, max, "length", &l));
    KMS_GUARD(kms_rd_ptr(&r, l, data));
    *len = l;
out:
    if (rc < 0)
        rc = kms_err_wrap(KMS_ERR_PARSE, "malformed ABI return data");
    return rc;
}

static char *sanitize_dup(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);

    if (s == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        s[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
    s[n] = '\0';
    return s;
}

int kms_eth_abi_decode_bool(const uint8_t *p, size_t n, int *flag)
{
    int rc = 0;

    KMS_ENSURE(p != NULL && n >= 32, KMS_ERR_PARSE,
               "ABI return data too short for a bool (%zu bytes)", n);
    for (int i = 0; i < 31; i++)
        KMS_ENSURE(p[i] == 0, KMS_ERR_PARSE, "ABI bool is not 0 or 1");
    KMS_ENSURE(p[31] <= 1, KMS_ERR_PARSE, "ABI bool is not 0 or 1");
    *flag = p[31];
out:
    return rc;
}

int kms_eth_abi_decode_string(const uint8_t *p, size_t n, char **str)
{
    const uint8_t *d;
    size_t len;
    int rc = 0;

    *str = NULL;
    KMS_ENSURE(p != NULL, KMS_ERR_PARSE, "ABI return data is empty");
    KMS_GUARD(read_dyn(p, n, 0, KMS_ETH_MAX_STRING, &d, &len));
    *str = sanitize_dup(d, len);
    KMS_GUARD_PTR(*str);
out:
    return rc;
}

int kms_eth_abi_decode_bool_string(const uint8_t *p, size_t n, int *flag, char **str)
{
    const uint8_t *d;
    size_t len;
    int rc = 0;

    *str = NULL;
    KMS_GUARD(kms_eth_abi_decode_bool(p, n, flag));
    KMS_GUARD(read_dyn(p, n, 1, KMS_ETH_MAX_STRING, &d, &len));
    *str = sanitize_dup(d, len);
    KMS_GUARD_PTR(*str);
out:
    return rc;
}

int kms_eth_abi_decode_address(const uint8_t *p, size_t n, uint8_t addr[20])
{
    int rc = 0;

    KMS_ENSURE(p != NULL && n >= 32, KMS_ERR_PARSE,
               "ABI return data too short for an address (%zu bytes)", n);
    for (int i = 0; i < 12; i++)
        KMS_ENSURE(p[i] == 0, KMS_ERR_PARSE, "ABI address has non-zero high bytes");
    memcpy(addr, p + 12, 20);
out:
    return rc;
}

void kms_eth_revert_describe(const uint8_t *p, size_t n, char *buf, size_t cap)
{
    /* Custom errors our contracts (and OpenZeppelin's) raise, for readable admin output. */
    static const char *const known[] = {
        "OwnableUnauthorizedAccount(address)",
        "OwnableInvalidOwner(address)",
        "InvalidInitialization()",
        "NotInitializing()",
        "UUPSUnauthorizedCallContext()",
        "UUPSUnsupportedProxiableUUID(bytes32)",
        "ERC1967InvalidImplementation(address)",
    };
    static const uint8_t err_sel[4] = {0x08, 0xc3, 0x79, 0xa0};   /* Error(string) */
    static const uint8_t panic_sel[4] = {0x4e, 0x48, 0x7b, 0x71}; /* Panic(uint256) */
    char hex[9];

    if (cap == 0)
        return;
    buf[0] = '\0';
    if (p == NULL || n == 0) {
        snprintf(buf, cap, "no revert data");
        return;
    }
    if (n >= 4 && memcmp(p, err_sel, 4) == 0) {
        char *s = NULL;

        if (kms_eth_abi_decode_string(p + 4, n - 4, &s) == 0) {
            snprintf(buf, cap, "%s", s);
            free(s);
            return;
        }
        kms_err_clear();
        snprintf(buf, cap, "malformed Error(string) revert data");
        return;
    }
    if (n == 36 && memcmp(p, panic_sel, 4) == 0) {
        snprintf(buf, cap, "panic code 0x%02x", p[35]);
        return;
    }
    if (n >= 4) {
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
            uint8_t sel[4];

            kms_eth_selector(known[i], sel);
            if (memcmp(sel, p, 4) == 0) {
                size_t k = strcspn(known[i], "(");

                if (n == 36 && strstr(known[i], "(address)") != NULL) {
                    char a[43];

                    kms_eth_addr_checksum(p + 16, a);
                    snprintf(buf, cap, "%.*s(%s)", (int)k, known[i], a);
                } else {
                    snprintf(buf, cap, "%.*s", (int)k, known[i]);
                }
                return;
            }
        }
    }
    kms_hex_encode(p, n < 4 ? n : 4, hex);
    snprintf(buf, cap, "custom error 0x%s (%zu bytes of revert data)", hex, n);
}

/* ---------------------------------------------------------------- addresses */

void kms_eth_addr_checksum(const uint8_t addr[20], char out[43])
{
    char lower[41];
    uint8_t h[32];

    kms_hex_encode(addr, 20, lower);
    kms_keccak256(lower, 40, h);
    out[0] = '0';
    out[1] = 'x';
    for (int i = 0; i < 40; i++) {
        int nib = (i % 2 == 0) ? (h[i / 2] >> 4) : (h[i / 2] & 0x0f);
        char c = lower[i];

        out[2 + i] = (c >= 'a' && nib >= 8) ? (char)(c - 'a' + 'A') : c;
    }
    out[42] = '\0';
}

int kms_eth_parse_address(const char *s, uint8_t out[20])
{
    int upper = 0, lower = 0;
    char sum[43];
    int rc = 0;

    KMS_ENSURE(s != NULL, KMS_ERR_INVAL, "missing address");
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2;
    KMS_ENSURE(strlen(s) == 40, KMS_ERR_PARSE,
               "address must be 0x followed by 40 hex digits (got %zu digits)", strlen(s));
    for (int i = 0; i < 40; i++) {
        KMS_ENSURE(isxdigit((unsigned char)s[i]), KMS_ERR_PARSE, "address is not hex");
        upper |= (s[i] >= 'A' && s[i] <= 'F');
        lower |= (s[i] >= 'a' && s[i] <= 'f');
    }
    KMS_GUARD(kms_hex_decode_exact(s, out, 20));
    if (upper && lower) {
        kms_eth_addr_checksum(out, sum);
        KMS_ENSURE(strcmp(sum + 2, s) == 0, KMS_ERR_PARSE,
                   "address 0x%s has a wrong EIP-55 checksum (expected %s)", s, sum);
    }
out:
    return rc;
}
