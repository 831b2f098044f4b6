/* Keccak-256 (original Keccak padding 0x01, as Ethereum uses; not SHA3-256). */
#ifndef KMS_COMMON_KECCAK_H
#define KMS_COMMON_KECCAK_H

#include <stddef.h>
#include <stdint.h>

struct kms_keccak {
    uint64_t st[25];
    size_t pos;
};

void kms_keccak256_init(struct kms_keccak *k);
void kms_keccak256_update(struct kms_keccak *k, const void *p, size_t n);
/* Writes 32 bytes and wipes the state. */
void kms_keccak256_final(struct kms_keccak *k, uint8_t out[32]);
void kms_keccak256(const void *p, size_t n, uint8_t out[32]);

#endif
