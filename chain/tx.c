/*
 * chain: signed Ethereum transactions for `kmsctl chain`: EIP-1559 (type 2) and EIP-155
 * legacy, RLP-encoded and signed with libsecp256k1 (RFC 6979 nonces, low-s).
 */
#include <openssl/crypto.h>
#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <string.h>

#include "chain/eth.h"
#include "common/keccak.h"

static int fields_common(struct kms_buf *l, const struct kms_eth_tx *tx)
{
    int rc = 0;

    KMS_GUARD(kms_rlp_put_uint(l, tx->gas_limit));
    if (tx->create)
        KMS_GUARD(kms_rlp_put_bytes(l, NULL, 0));
    else
        KMS_GUARD(kms_rlp_put_bytes(l, tx->to, 20));
    KMS_GUARD(kms_rlp_put_uint(l, 0)); /* value: the KMS never transfers ether */
    KMS_GUARD(kms_rlp_put_bytes(l, tx->data, tx->data_len));
out:
    return rc;
}

/* The list body before the signature fields. */
static int unsigned_body(const struct kms_eth_tx *tx, struct kms_buf *l)
{
    int rc = 0;

    if (tx->legacy) {
        KMS_GUARD(kms_rlp_put_uint(l, tx->nonce));
        KMS_GUARD(kms_rlp_put_uint(l, tx->gas_price));
        KMS_GUARD(fields_common(l, tx));
    } else {
        KMS_GUARD(kms_rlp_put_uint(l, tx->chain_id));
        KMS_GUARD(kms_rlp_put_uint(l, tx->nonce));
        KMS_GUARD(kms_rlp_put_uint(l, tx->max_priority_fee));
        KMS_GUARD(kms_rlp_put_uint(l, tx->max_fee));
        KMS_GUARD(fields_common(l, tx));
        KMS_GUARD(kms_rlp_put_list(l, NULL, 0)); /* empty access list */
    }
out:
    return rc;
}

int kms_eth_tx_sign(const struct kms_eth_tx *tx, const uint8_t key[32], struct kms_buf *raw,
                    uint8_t txhash[32])
{
    secp256k1_context *ctx = NULL;
    secp256k1_ecdsa_recoverable_signature sig;
    struct kms_buf body = {0}, pre = {0};
    uint8_t h[32], rs[64];
    int recid = 0, rc = 0;
    size_t start;

    KMS_ENSURE(tx != NULL && key != NULL && raw != NULL && txhash != NULL, KMS_ERR_INVAL,
               "tx sign: missing argument");
    KMS_ENSURE(!tx->legacy || tx->chain_id <= (UINT64_MAX - 36) / 2, KMS_ERR_INVAL,
               "chain id too large for an EIP-155 signature");
    KMS_GUARD(unsigned_body(tx, &body));
    /* Signing payload. */
    if (tx->legacy) {
        KMS_GUARD(kms_rlp_put_uint(&body, tx->chain_id));
        KMS_GUARD(kms_rlp_put_uint(&body, 0));
        KMS_GUARD(kms_rlp_put_uint(&body, 0));
    } else {
        KMS_GUARD(kms_buf_put_u8(&pre, 0x02));
    }
    KMS_GUARD(kms_rlp_put_list(&pre, body.data, body.len));
    kms_keccak256(pre.data, pre.len, h);

    ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    KMS_ENSURE(ctx != NULL, KMS_ERR_CRYPTO, "secp256k1 context creation failed");
    KMS_ENSURE(secp256k1_ec_seckey_verify(ctx, key) == 1, KMS_ERR_CRYPTO,
               "the Ethereum private key is not a valid secp256k1 key");
    KMS_ENSURE(secp256k1_ecdsa_sign_recoverable(ctx, &sig, h, key, NULL, NULL) == 1, KMS_ERR_CRYPTO,
               "secp256k1 signing failed");
    KMS_ENSURE(secp256k1_ecdsa_recoverable_signature_serialize_compact(ctx, rs, &recid, &sig) == 1,
               KMS_ERR_CRYPTO, "secp256k1 signature serialization failed");

    /* Signed transaction: body again, then v/yParity, r, s. */
    body.len = 0;
    KMS_GUARD(unsigned_body(tx, &body));
    if (tx->legacy)
        KMS_GUARD(kms_rlp_put_uint(&body, (uint64_t)recid + 35 + 2 * tx->chain_id));
    else
        KMS_GUARD(kms_rlp_put_uint(&body, (uint64_t)recid));
    KMS_GUARD(kms_rlp_put_uint_be(&body, rs, 32));
    KMS_GUARD(kms_rlp_put_uint_be(&body, rs + 32, 32));
    start = raw->len;
    if (!tx->legacy)
        KMS_GUARD(kms_buf_put_u8(raw, 0x02));
    KMS_GUARD(kms_rlp_put_list(raw, body.data, body.len));
    kms_keccak256(raw->data + start, raw->len - start, txhash);
out:
    OPENSSL_cleanse(&sig, sizeof(sig));
    if (ctx != NULL)
        secp256k1_context_destroy(ctx);
    kms_buf_free(&body);
    kms_buf_free(&pre);
    return rc;
}

int kms_eth_key_address(const uint8_t key[32], uint8_t addr[20])
{
    secp256k1_context *ctx = NULL;
    secp256k1_pubkey pub;
    uint8_t ser[65], h[32];
    size_t len = sizeof(ser);
    int rc = 0;

    ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    KMS_ENSURE(ctx != NULL, KMS_ERR_CRYPTO, "secp256k1 context creation failed");
    KMS_ENSURE(secp256k1_ec_pubkey_create(ctx, &pub, key) == 1, KMS_ERR_CRYPTO,
               "the Ethereum private key is not a valid secp256k1 key");
    KMS_ENSURE(secp256k1_ec_pubkey_serialize(ctx, ser, &len, &pub, SECP256K1_EC_UNCOMPRESSED) == 1,
               KMS_ERR_CRYPTO, "secp256k1 public key serialization failed");
    kms_keccak256(ser + 1, 64, h);
    memcpy(addr, h + 12, 20);
out:
    if (ctx != NULL)
        secp256k1_context_destroy(ctx);
    return rc;
}
