/*
 * Bounded byte reader (all wire/disk parsing goes through it) and a growable byte buffer.
 * Limits: a kms_buf never grows beyond KMS_BUF_MAX bytes.
 */
#ifndef KMS_COMMON_BUF_H
#define KMS_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define KMS_BUF_MAX (64u * 1024u * 1024u)

/* Read cursor over borrowed memory. Every read fails with KMS_ERR_PARSE past the end. */
struct kms_reader {
    const uint8_t *p;
    size_t len;
    size_t off;
};

void kms_rd_init(struct kms_reader *r, const uint8_t *p, size_t len);
size_t kms_rd_left(const struct kms_reader *r);
KMS_WUR int kms_rd_u8(struct kms_reader *r, uint8_t *v);
KMS_WUR int kms_rd_u16le(struct kms_reader *r, uint16_t *v);
KMS_WUR int kms_rd_u32le(struct kms_reader *r, uint32_t *v);
KMS_WUR int kms_rd_u64le(struct kms_reader *r, uint64_t *v);
KMS_WUR int kms_rd_u16be(struct kms_reader *r, uint16_t *v);
KMS_WUR int kms_rd_u32be(struct kms_reader *r, uint32_t *v);
KMS_WUR int kms_rd_u64be(struct kms_reader *r, uint64_t *v);
/* Copies n bytes into dst. */
KMS_WUR int kms_rd_copy(struct kms_reader *r, void *dst, size_t n);
/* Borrows n bytes: *pp points into the reader's memory. */
KMS_WUR int kms_rd_ptr(struct kms_reader *r, size_t n, const uint8_t **pp);
KMS_WUR int kms_rd_skip(struct kms_reader *r, size_t n);

/* Growable buffer. Zero-initialise; kms_buf_free wipes the contents before freeing. */
struct kms_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

KMS_WUR int kms_buf_reserve(struct kms_buf *b, size_t extra);
KMS_WUR int kms_buf_put(struct kms_buf *b, const void *p, size_t n);
KMS_WUR int kms_buf_put_u8(struct kms_buf *b, uint8_t v);
KMS_WUR int kms_buf_put_u16le(struct kms_buf *b, uint16_t v);
KMS_WUR int kms_buf_put_u32le(struct kms_buf *b, uint32_t v);
KMS_WUR int kms_buf_put_u64le(struct kms_buf *b, uint64_t v);
KMS_WUR int kms_buf_put_u16be(struct kms_buf *b, uint16_t v);
KMS_WUR int kms_buf_put_u32be(struct kms_buf *b, uint32_t v);
KMS_WUR int kms_buf_put_u64be(struct kms_buf *b, uint64_t v);
KMS_WUR int kms_buf_put_str(struct kms_buf *b, const char *s);
/* Moves ownership of the data to the caller (caller must free *out); b is reset. */
uint8_t *kms_buf_steal(struct kms_buf *b, size_t *len);
/* Wipes and frees; accepts NULL. */
void kms_buf_free(struct kms_buf *b);

/* Wipes then frees p (len bytes); accepts NULL. */
void kms_free_secret(void *p, size_t len);

#endif
