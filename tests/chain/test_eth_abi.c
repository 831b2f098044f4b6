/*
 * eth: ABI, RLP, address and transaction encoding, byte for byte against vectors produced by
 * an independent encoder (ethers v6, see gen_vectors.js), plus the strict decoders' rejection
 * of malformed return data and auth-eth's hex normalization rules.
 */
#include <stdlib.h>
#include <string.h>

#include "chain/eth.h"
#include "common/hex.h"
#include "eth_vectors.h"
#include "test.h"

/* Builds a BootInfo as the KMS holds it (raw bytes) from the vector's hex fields. */
struct bi_holder {
    struct kms_boot_info bi;
    uint8_t *bufs[4];
};

static void set_bytes(struct kms_bytes *b, const char *hex, uint8_t **keep)
{
    size_t n = 0;

    CHECK_OK(kms_hex_decode(hex, &b->p, &n));
    b->len = n;
    *keep = b->p;
}

static void bi_make(struct bi_holder *h, const char *app, const char *compose, const char *inst,
                    const char *dev, const char *mra, const char *mrs, const char *os,
                    const char *tcb, char **adv, size_t nadv)
{
    memset(h, 0, sizeof(*h));
    set_bytes(&h->bi.app_id, app, &h->bufs[0]);
    set_bytes(&h->bi.compose_hash, compose, &h->bufs[1]);
    set_bytes(&h->bi.instance_id, inst, &h->bufs[2]);
    set_bytes(&h->bi.os_image_hash, os, &h->bufs[3]);
    CHECK_OK(kms_hex_decode_exact(dev, h->bi.device_id, 32));
    CHECK_OK(kms_hex_decode_exact(mra, h->bi.mr_aggregated, 32));
    CHECK_OK(kms_hex_decode_exact(mrs, h->bi.mr_system, 32));
    snprintf(h->bi.tcb_status, sizeof(h->bi.tcb_status), "%s", tcb);
    h->bi.advisory_ids = adv;
    h->bi.n_advisory_ids = nadv;
}

static void bi_clear(struct bi_holder *h)
{
    for (int i = 0; i < 4; i++)
        free(h->bufs[i]);
}

/* tcb, when non-NULL, replaces the TCB status after normalization (kms_boot_info holds at most
 * 31 bytes; the ABI string has no such limit). */
static void check_calldata(int is_kms, struct bi_holder *h, const char *tcb,
                           const unsigned char *want, size_t n)
{
    struct kms_eth_boot_info eb;
    struct kms_buf cd = {0};

    CHECK_OK(kms_eth_boot_info_from(&h->bi, &eb));
    if (tcb != NULL)
        eb.tcb_status = tcb;
    CHECK_OK(kms_eth_abi_boot_info_call(is_kms, &eb, &cd));
    CHECK(cd.len == n);
    if (cd.len == n)
        CHECK_MEM(cd.data, want, n);
    kms_buf_free(&cd);
}

/* isAppAllowed with full-size fields and two advisories equals ethers' calldata. */
static void test_calldata_app_full(void)
{
    char *adv[] = VEC_APP_FULL_ADV;
    struct bi_holder h;

    bi_make(&h, VEC_APP_FULL_APPID, VEC_APP_FULL_COMPOSE, VEC_APP_FULL_INSTANCE,
            VEC_APP_FULL_DEVICE, VEC_APP_FULL_MRAGG, VEC_APP_FULL_MRSYS, VEC_APP_FULL_OS,
            VEC_APP_FULL_TCB, adv, VEC_APP_FULL_NADV);
    check_calldata(0, &h, NULL, vec_app_full, VEC_APP_FULL_LEN);
    CHECK(vec_app_full[0] == 0x1e && vec_app_full[3] == 0x98); /* selector 0x1e079198 */
    bi_clear(&h);
}

/* isKmsAllowed with short fields (left-padded as auth-eth does), empty instance id, empty
 * TCB status and no advisories. */
static void test_calldata_kms_short(void)
{
    char *adv[] = VEC_KMS_SHORT_ADV;
    struct bi_holder h;

    bi_make(&h, VEC_KMS_SHORT_APPID, VEC_KMS_SHORT_COMPOSE, VEC_KMS_SHORT_INSTANCE,
            VEC_KMS_SHORT_DEVICE, VEC_KMS_SHORT_MRAGG, VEC_KMS_SHORT_MRSYS, VEC_KMS_SHORT_OS,
            VEC_KMS_SHORT_TCB, adv, VEC_KMS_SHORT_NADV);
    check_calldata(1, &h, NULL, vec_kms_short, VEC_KMS_SHORT_LEN);
    CHECK(vec_kms_short[0] == 0xe0 && vec_kms_short[3] == 0x9d); /* selector 0xe067ec9d */
    bi_clear(&h);
}

/* Padding edges: a 51-byte TCB string, advisories of 32, 33, 0 and 1 bytes. */
static void test_calldata_edges(void)
{
    char *adv[] = VEC_APP_EDGES_ADV;
    struct bi_holder h;

    bi_make(&h, VEC_APP_EDGES_APPID, VEC_APP_EDGES_COMPOSE, VEC_APP_EDGES_INSTANCE,
            VEC_APP_EDGES_DEVICE, VEC_APP_EDGES_MRAGG, VEC_APP_EDGES_MRSYS, VEC_APP_EDGES_OS,
            VEC_APP_EDGES_TCB, adv, VEC_APP_EDGES_NADV);
    check_calldata(0, &h, VEC_APP_EDGES_TCB, vec_app_edges, VEC_APP_EDGES_LEN);
    bi_clear(&h);
}

/* Over-length fields are refused with KMS_ERR_TOOBIG naming the field (the backend turns
 * that into a denial, as ethers' throw does in auth-eth). */
static void test_normalize_overlength(void)
{
    char *adv[] = VEC_APP_FULL_ADV;
    struct kms_eth_boot_info eb;
    struct bi_holder h;
    uint8_t out[32];

    bi_make(&h, VEC_APP_FULL_APPID "00", VEC_APP_FULL_COMPOSE, VEC_APP_FULL_INSTANCE,
            VEC_APP_FULL_DEVICE, VEC_APP_FULL_MRAGG, VEC_APP_FULL_MRSYS, VEC_APP_FULL_OS,
            VEC_APP_FULL_TCB, adv, VEC_APP_FULL_NADV);
    CHECK_RC(kms_eth_boot_info_from(&h.bi, &eb), KMS_ERR_TOOBIG);
    CHECK_DETAIL("appId is 21 bytes");
    bi_clear(&h);
    bi_make(&h, VEC_APP_FULL_APPID, VEC_APP_FULL_COMPOSE "aa", VEC_APP_FULL_INSTANCE,
            VEC_APP_FULL_DEVICE, VEC_APP_FULL_MRAGG, VEC_APP_FULL_MRSYS, VEC_APP_FULL_OS,
            VEC_APP_FULL_TCB, adv, VEC_APP_FULL_NADV);
    CHECK_RC(kms_eth_boot_info_from(&h.bi, &eb), KMS_ERR_TOOBIG);
    CHECK_DETAIL("composeHash is 33 bytes");
    bi_clear(&h);
    bi_make(&h, VEC_APP_FULL_APPID, VEC_APP_FULL_COMPOSE, VEC_APP_FULL_INSTANCE "01",
            VEC_APP_FULL_DEVICE, VEC_APP_FULL_MRAGG, VEC_APP_FULL_MRSYS, VEC_APP_FULL_OS,
            VEC_APP_FULL_TCB, adv, VEC_APP_FULL_NADV);
    CHECK_RC(kms_eth_boot_info_from(&h.bi, &eb), KMS_ERR_TOOBIG);
    CHECK_DETAIL("instanceId is 21 bytes");
    bi_clear(&h);
    bi_make(&h, VEC_APP_FULL_APPID, VEC_APP_FULL_COMPOSE, VEC_APP_FULL_INSTANCE,
            VEC_APP_FULL_DEVICE, VEC_APP_FULL_MRAGG, VEC_APP_FULL_MRSYS, VEC_APP_FULL_OS "ff",
            VEC_APP_FULL_TCB, adv, VEC_APP_FULL_NADV);
    CHECK_RC(kms_eth_boot_info_from(&h.bi, &eb), KMS_ERR_TOOBIG);
    CHECK_DETAIL("osImageHash is 33 bytes");
    bi_clear(&h);

    /* Hex-string form (CLI): odd lengths pad as text; too many digits fail. */
    CHECK_OK(kms_eth_pad_hex("appId", "0xabc", out, 20));
    CHECK(out[18] == 0x0a && out[19] == 0xbc && out[0] == 0);
    CHECK_RC(kms_eth_pad_hex("appId", "0x" VEC_APP_FULL_APPID "0", out, 20), KMS_ERR_TOOBIG);
    CHECK_DETAIL("appId has 41 hex digits");
    CHECK_RC(kms_eth_pad_hex("deviceId", "0xzz", out, 32), KMS_ERR_PARSE);
    CHECK_DETAIL("deviceId is not hex");
}

/* (bool,string), string, Error(string) decode to ethers' values. */
static void test_decode_returns(void)
{
    char *s = NULL, buf[256];
    int flag = -1;

    CHECK_OK(kms_eth_abi_decode_bool_string(vec_ret_denied, VEC_RET_DENIED_LEN, &flag, &s));
    CHECK(flag == 0 && s != NULL && strcmp(s, "App not registered") == 0);
    free(s);
    CHECK_OK(kms_eth_abi_decode_bool_string(vec_ret_allowed, VEC_RET_ALLOWED_LEN, &flag, &s));
    CHECK(flag == 1 && s != NULL && strcmp(s, "") == 0);
    free(s);
    CHECK_OK(kms_eth_abi_decode_string(vec_ret_string, VEC_RET_STRING_LEN, &s));
    CHECK(s != NULL && strcmp(s, "gateway-app-id-0123456789abcdef0123456789abcdef") == 0);
    free(s);
    kms_eth_revert_describe(vec_revert_error, VEC_REVERT_ERROR_LEN, buf, sizeof(buf));
    CHECK(strcmp(buf, "Upgrades are permanently disabled") == 0);
    kms_eth_revert_describe(NULL, 0, buf, sizeof(buf));
    CHECK(strcmp(buf, "no revert data") == 0);
}

/* Each malformation of (bool,string) return data is refused with KMS_ERR_PARSE. */
static void test_decode_malformed(void)
{
    uint8_t d[VEC_RET_DENIED_LEN];
    char *s = NULL;
    int flag;

    /* bool = 2 */
    memcpy(d, vec_ret_denied, sizeof(d));
    d[31] = 2;
    CHECK_RC(kms_eth_abi_decode_bool_string(d, sizeof(d), &flag, &s), KMS_ERR_PARSE);
    CHECK_DETAIL("bool is not 0 or 1");
    /* offset pointing past the end */
    memcpy(d, vec_ret_denied, sizeof(d));
    d[63] = 0xa0;
    CHECK_RC(kms_eth_abi_decode_bool_string(d, sizeof(d), &flag, &s), KMS_ERR_PARSE);
    CHECK_DETAIL("malformed ABI return data");
    /* offset with high bytes set */
    memcpy(d, vec_ret_denied, sizeof(d));
    d[40] = 1;
    CHECK_RC(kms_eth_abi_decode_bool_string(d, sizeof(d), &flag, &s), KMS_ERR_PARSE);
    CHECK_DETAIL("offset out of range");
    /* length beyond the data */
    memcpy(d, vec_ret_denied, sizeof(d));
    d[95] = 0x41;
    CHECK_RC(kms_eth_abi_decode_bool_string(d, sizeof(d), &flag, &s), KMS_ERR_PARSE);
    /* truncated */
    CHECK_RC(kms_eth_abi_decode_bool_string(vec_ret_denied, 100, &flag, &s), KMS_ERR_PARSE);
    CHECK_RC(kms_eth_abi_decode_bool_string(vec_ret_denied, 0, &flag, &s), KMS_ERR_PARSE);
    CHECK_DETAIL("too short for a bool");
    CHECK(s == NULL);
    /* address with high bytes */
    memset(d, 0, 32);
    d[0] = 1;
    {
        uint8_t a[20];

        CHECK_RC(kms_eth_abi_decode_address(d, 32, a), KMS_ERR_PARSE);
        CHECK_DETAIL("non-zero high bytes");
    }
}

/* Control characters from the chain never reach a reason string. */
static void test_decode_sanitizes(void)
{
    uint8_t d[VEC_RET_DENIED_LEN];
    char *s = NULL;
    int flag;

    memcpy(d, vec_ret_denied, sizeof(d));
    d[96] = '\n';
    d[97] = 0xff;
    CHECK_OK(kms_eth_abi_decode_bool_string(d, sizeof(d), &flag, &s));
    CHECK(s != NULL && strcmp(s, "??p not registered") == 0);
    free(s);
}

static void check_rlp(const uint8_t *in, size_t n, const unsigned char *want, size_t wn)
{
    struct kms_buf b = {0};

    CHECK_OK(kms_rlp_put_bytes(&b, in, n));
    CHECK(b.len == wn && memcmp(b.data, want, wn) == 0);
    kms_buf_free(&b);
}

/* RLP strings at the short/long boundaries and a nested list equal ethers.encodeRlp. */
static void test_rlp(void)
{
    uint8_t v[300] = {0};
    struct kms_buf l = {0}, b = {0};

    check_rlp(v, 0, vec_rlp_empty, VEC_RLP_EMPTY_LEN);
    v[0] = 0x00;
    check_rlp(v, 1, vec_rlp_zero, VEC_RLP_ZERO_LEN);
    v[0] = 0x7f;
    check_rlp(v, 1, vec_rlp_7f, VEC_RLP_7F_LEN);
    v[0] = 0x80;
    check_rlp(v, 1, vec_rlp_80, VEC_RLP_80_LEN);
    memset(v, 0xaa, 55);
    check_rlp(v, 55, vec_rlp_55, VEC_RLP_55_LEN);
    memset(v, 0xbb, 56);
    check_rlp(v, 56, vec_rlp_56, VEC_RLP_56_LEN);
    memset(v, 0xcc, 300);
    check_rlp(v, 300, vec_rlp_300, VEC_RLP_300_LEN);
    v[0] = 1;
    CHECK_OK(kms_rlp_put_bytes(&l, v, 1));
    memset(v, 0xdd, 60);
    CHECK_OK(kms_rlp_put_bytes(&l, v, 60));
    CHECK_OK(kms_rlp_put_list(&l, NULL, 0));
    CHECK_OK(kms_rlp_put_list(&b, l.data, l.len));
    CHECK(b.len == VEC_RLP_LIST_LEN && memcmp(b.data, vec_rlp_list, b.len) == 0);
    kms_buf_free(&l);
    kms_buf_free(&b);
}

/* Key → address and EIP-55 checksums match ethers; a wrong checksum is refused. */
static void test_addresses(void)
{
    uint8_t addr[20], back[20];
    char sum[43], bad[43];

    CHECK_OK(kms_eth_key_address(vec_key, addr));
    kms_eth_addr_checksum(addr, sum);
    CHECK(strcmp(sum, VEC_KEY_ADDR) == 0);
    kms_eth_addr_checksum(vec_tx_to, sum);
    CHECK(strcmp(sum, VEC_TX_TO_CHECKSUM) == 0);
    CHECK_OK(kms_eth_parse_address(VEC_TX_TO_CHECKSUM, back));
    CHECK_MEM(back, vec_tx_to, 20);
    /* flip the case of one letter */
    snprintf(bad, sizeof(bad), "%s", VEC_TX_TO_CHECKSUM);
    for (int i = 2; i < 42; i++) {
        if (bad[i] >= 'a' && bad[i] <= 'f') {
            bad[i] = (char)(bad[i] - 'a' + 'A');
            break;
        }
        if (bad[i] >= 'A' && bad[i] <= 'F') {
            bad[i] = (char)(bad[i] - 'A' + 'a');
            break;
        }
    }
    CHECK_RC(kms_eth_parse_address(bad, back), KMS_ERR_PARSE);
    CHECK_DETAIL("EIP-55 checksum");
    CHECK_RC(kms_eth_parse_address("0x1234", back), KMS_ERR_PARSE);
    CHECK_DETAIL("40 hex digits");
}

static void check_tx(const struct kms_eth_tx *tx, const unsigned char *want, size_t n)
{
    struct kms_buf raw = {0};
    uint8_t h[32];

    CHECK_OK(kms_eth_tx_sign(tx, vec_key, &raw, h));
    CHECK(raw.len == n);
    if (raw.len == n)
        CHECK_MEM(raw.data, want, n);
    kms_buf_free(&raw);
}

/* EIP-1559, EIP-155 legacy and contract-creation transactions signed by us equal ethers'
 * signed serialization (both use RFC 6979, so signatures are deterministic). */
static void test_tx_sign(void)
{
    struct kms_eth_tx tx = {0};
    struct kms_buf raw = {0};
    uint8_t h[32];

    tx.chain_id = 31337;
    tx.nonce = 7;
    tx.max_priority_fee = 1000000000ull;
    tx.max_fee = 3000000000ull;
    tx.gas_limit = 100000;
    memcpy(tx.to, vec_tx_to, 20);
    tx.data = vec_tx_data;
    tx.data_len = VEC_TX_DATA_LEN;
    check_tx(&tx, vec_tx_1559, VEC_TX_1559_LEN);
    CHECK_OK(kms_eth_tx_sign(&tx, vec_key, &raw, h));
    CHECK_MEM(h, vec_tx_1559_hash, 32);
    kms_buf_free(&raw);

    memset(&tx, 0, sizeof(tx));
    tx.legacy = 1;
    tx.chain_id = 84532;
    tx.nonce = 300;
    tx.gas_price = 2000000000ull;
    tx.gas_limit = 50000;
    memcpy(tx.to, vec_tx_to, 20);
    tx.data = vec_tx_data;
    tx.data_len = VEC_TX_DATA_LEN;
    check_tx(&tx, vec_tx_legacy, VEC_TX_LEGACY_LEN);

    memset(&tx, 0, sizeof(tx));
    tx.chain_id = 1;
    tx.max_fee = 7;
    tx.gas_limit = 3000000;
    tx.create = 1;
    tx.data = vec_tx_create_data;
    tx.data_len = VEC_TX_CREATE_DATA_LEN;
    check_tx(&tx, vec_tx_create, VEC_TX_CREATE_LEN);

    /* an invalid key (zero) is refused */
    {
        uint8_t zero[32] = {0};

        CHECK_RC(kms_eth_tx_sign(&tx, zero, &raw, h), KMS_ERR_CRYPTO);
        CHECK_DETAIL("not a valid secp256k1 key");
        kms_buf_free(&raw);
    }
}

int main(void)
{
    RUN(test_calldata_app_full);
    RUN(test_calldata_kms_short);
    RUN(test_calldata_edges);
    RUN(test_normalize_overlength);
    RUN(test_decode_returns);
    RUN(test_decode_malformed);
    RUN(test_decode_sanitizes);
    RUN(test_rlp);
    RUN(test_addresses);
    RUN(test_tx_sign);
    TEST_MAIN_END();
}
