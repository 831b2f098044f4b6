/*
 * chain internals of the native Ethereum backend and `kmsctl chain`: ABI encoding/decoding
 * (abi.c), RLP (rlp.c), signed transactions (tx.c) and JSON-RPC over libcurl (jsonrpc.c).
 *
 * Limits: one JSON-RPC reply is at most KMS_ETH_MAX_REPLY bytes; decoded eth_call return data
 * at most KMS_ETH_MAX_RETURN bytes; an ABI string at most KMS_ETH_MAX_STRING bytes; a BootInfo
 * carries at most KMS_ETH_MAX_ADVISORIES advisory ids.
 */
#ifndef KMS_CHAIN_ETH_H
#define KMS_CHAIN_ETH_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "attest/attest.h"
#include "chain/auth.h"
#include "common/buf.h"
#include "common/err.h"

#define KMS_ETH_MAX_URLS 16
#define KMS_ETH_MAX_REPLY (4u * 1024u * 1024u)
#define KMS_ETH_MAX_RETURN (256u * 1024u)
#define KMS_ETH_MAX_STRING 4096u
#define KMS_ETH_MAX_ADVISORIES 256u

/* Ethereum-specific chain codes (-440..-459), beside the KMS_ERR_AUTH_* transport codes. */
enum {
    KMS_ERR_ETH_RPC = -440,      /* the node answered with a JSON-RPC error object */
    KMS_ERR_ETH_CHAIN_ID = -441, /* eth_chainId differs from the configured chain id */
    KMS_ERR_ETH_QUORUM = -442,   /* quorum: too few answers, or answers disagree */
    KMS_ERR_ETH_REVERT = -443,   /* the call reverted (detail carries the decoded reason) */
    KMS_ERR_ETH_TX = -444,       /* a transaction failed or was not mined in time */
};

/* ---------------------------------------------------------------- ABI (abi.c) */

/* AppBootInfo in ABI tuple order, fields already normalized to their fixed sizes. */
struct kms_eth_boot_info {
    uint8_t app_id[20];
    uint8_t compose_hash[32];
    uint8_t instance_id[20];
    uint8_t device_id[32];
    uint8_t mr_aggregated[32];
    uint8_t mr_system[32];
    uint8_t os_image_hash[32];
    const char *tcb_status;          /* borrowed; NULL = "" */
    const char *const *advisory_ids; /* borrowed */
    size_t n_advisory_ids;
};

/* Left-pads p (n bytes) with zeros to size bytes, as auth-eth's decodeHex does. n > size
 * fails with KMS_ERR_TOOBIG naming field. */
KMS_WUR int kms_eth_pad(const char *field, const uint8_t *p, size_t n, uint8_t *out, size_t size);
/* The same for a hex string (optional 0x, odd length allowed: padded as text). */
KMS_WUR int kms_eth_pad_hex(const char *field, const char *hex, uint8_t *out, size_t size);
/* Normalizes a BootInfo. out borrows bi's strings (valid while bi lives). */
KMS_WUR int kms_eth_boot_info_from(const struct kms_boot_info *bi, struct kms_eth_boot_info *out);

/* One ABI argument: a 32-byte head word, a dynamic bytes/string, or a pre-encoded dynamic
 * value (tuple or array encoding) that goes into the tail as is. Memory is borrowed. */
enum kms_eth_abi_kind { KMS_ABI_WORD, KMS_ABI_BYTES, KMS_ABI_ENCODED };
struct kms_eth_abi_arg {
    enum kms_eth_abi_kind kind;
    const uint8_t *p; /* WORD: 32 bytes */
    size_t n;
};

/* Appends sel (4 bytes; NULL for constructor arguments or an inner tuple) and the head/tail
 * encoding of args to out. */
KMS_WUR int kms_eth_abi_encode(const uint8_t *sel, const struct kms_eth_abi_arg *args, size_t n,
                               struct kms_buf *out);
/* Appends the encoding of a string[] / bytes[] (length word, offsets, tails). */
KMS_WUR int kms_eth_abi_encode_str_array(const char *const *s, size_t n, struct kms_buf *out);
/* Words for the head. */
void kms_eth_word_address(const uint8_t addr[20], uint8_t w[32]);
void kms_eth_word_u64(uint64_t v, uint8_t w[32]);
/* selector = first 4 bytes of keccak256(signature). */
void kms_eth_selector(const char *signature, uint8_t sel[4]);

/* Calldata of isAppAllowed / isKmsAllowed(AppBootInfo) into out (appended). */
KMS_WUR int kms_eth_abi_boot_info_call(int is_kms, const struct kms_eth_boot_info *b,
                                       struct kms_buf *out);

/* Decoders of eth_call return data. They check every offset and length against the data and
 * reject non-canonical booleans and addresses. Strings come back malloc'd (caller frees),
 * NUL-terminated, with control and non-ASCII bytes replaced by '?'. */
KMS_WUR int kms_eth_abi_decode_bool_string(const uint8_t *p, size_t n, int *flag, char **str);
KMS_WUR int kms_eth_abi_decode_string(const uint8_t *p, size_t n, char **str);
KMS_WUR int kms_eth_abi_decode_address(const uint8_t *p, size_t n, uint8_t addr[20]);
KMS_WUR int kms_eth_abi_decode_bool(const uint8_t *p, size_t n, int *flag);
/* Describes revert data: Error(string) → its message, Panic(uint256) → "panic 0x..", a custom
 * error → its name when known or its selector, empty → "no revert data". Writes into buf. */
void kms_eth_revert_describe(const uint8_t *p, size_t n, char *buf, size_t cap);

/* EIP-55 mixed-case "0x..." (43 bytes with NUL). */
void kms_eth_addr_checksum(const uint8_t addr[20], char out[43]);
/* Parses "0x" + 40 hex digits; a mixed-case string must carry a valid EIP-55 checksum. */
KMS_WUR int kms_eth_parse_address(const char *s, uint8_t out[20]);

/* ---------------------------------------------------------------- RLP (rlp.c) */

KMS_WUR int kms_rlp_put_bytes(struct kms_buf *b, const uint8_t *p, size_t n);
/* A big-endian integer without leading zeros (zero = empty string). */
KMS_WUR int kms_rlp_put_uint(struct kms_buf *b, uint64_t v);
KMS_WUR int kms_rlp_put_uint_be(struct kms_buf *b, const uint8_t *p, size_t n);
/* Appends a list header for payload, then payload, to out. */
KMS_WUR int kms_rlp_put_list(struct kms_buf *out, const uint8_t *payload, size_t n);

/* ---------------------------------------------------------------- transactions (tx.c) */

struct kms_eth_tx {
    int legacy; /* 1: EIP-155 legacy; 0: EIP-1559 (type 2) */
    uint64_t chain_id;
    uint64_t nonce;
    uint64_t gas_limit;
    uint64_t gas_price;        /* legacy */
    uint64_t max_priority_fee; /* EIP-1559 */
    uint64_t max_fee;          /* EIP-1559 */
    int create;                /* 1: contract creation (no `to`) */
    uint8_t to[20];
    const uint8_t *data; /* borrowed */
    size_t data_len;
};

/* Signs tx with key (32 bytes, not kept) using RFC 6979 nonces; appends the raw signed
 * transaction to raw and writes its hash (the transaction id). */
KMS_WUR int kms_eth_tx_sign(const struct kms_eth_tx *tx, const uint8_t key[32], struct kms_buf *raw,
                            uint8_t txhash[32]);
/* The address of a private key. */
KMS_WUR int kms_eth_key_address(const uint8_t key[32], uint8_t addr[20]);

/* ---------------------------------------------------------------- JSON-RPC (jsonrpc.c) */

struct kms_eth_rpc_opts {
    long timeout_ms; /* whole call, per attempt; > 0 */
    int retries;     /* extra attempts after a transport failure; >= 0 */
};

/*
 * One JSON-RPC call to url. params is stolen (NULL = []). On success *result is a new
 * reference (caller json_decref). Transport failures map to KMS_ERR_AUTH_UNREACHABLE /
 * _TIMEOUT / _HTTP, a malformed reply to KMS_ERR_AUTH_RESPONSE, an error object to
 * KMS_ERR_ETH_RPC (then *errobj, when non-NULL, gets a new reference to it). Details name the
 * URL and the method.
 */
KMS_WUR int kms_eth_rpc(const char *url, const struct kms_eth_rpc_opts *o, const char *method,
                        json_t *params, json_t **result, json_t **errobj);

/* Parses a JSON-RPC quantity ("0x" hex, no leading zeros beyond "0x0", fits 64 bits). */
KMS_WUR int kms_eth_quantity(const json_t *v, uint64_t *out);
/* Parses a JSON-RPC data string ("0x" + even hex) into a malloc'd buffer of at most max bytes. */
KMS_WUR int kms_eth_data(const json_t *v, size_t max, uint8_t **out, size_t *len);

/* eth_call to `to` at block ("latest", "safe", "finalized" or a quantity). A revert gives
 * KMS_ERR_ETH_REVERT with "execution reverted: <reason>" as detail. *ret is malloc'd. */
KMS_WUR int kms_eth_call(const char *url, const struct kms_eth_rpc_opts *o, const uint8_t to[20],
                         const uint8_t *data, size_t n, const char *block, uint8_t **ret,
                         size_t *ret_len);
/* The number of the block a tag names: eth_blockNumber for "latest", else
 * eth_getBlockByNumber(tag).number. */
KMS_WUR int kms_eth_block_number(const char *url, const struct kms_eth_rpc_opts *o, const char *tag,
                                 uint64_t *num);
KMS_WUR int kms_eth_chain_id(const char *url, const struct kms_eth_rpc_opts *o, uint64_t *id);

/* Writes a hex quantity "0x.." of v into out (at least 19 bytes). */
void kms_eth_fmt_quantity(uint64_t v, char *out, size_t cap);

#endif
