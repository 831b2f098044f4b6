/*
 * AWS Nitro Enclave image files (EIF, aws-nitro-enclaves-image-format src/defs): measurement
 * as `nitro-cli describe-eif` does it, without Rust or nitro-cli.
 *
 * Layout (big endian): a 548-byte header (magic ".eif", version u16, flags u16, default_mem u64,
 * default_cpus u64, reserved u16, num_sections u16, section_offsets[32] u64, section_sizes[32]
 * u64, unused u32, eif_crc32 u32), then num_sections sections, each a 12-byte header (type u16:
 * 1 kernel, 2 cmdline, 3 ramdisk, 4 signature, 5 metadata; flags u16; size u64) and its data.
 * section_offsets[i] is where section i's header starts and section_sizes[i] its data size.
 * eif_crc32 is CRC-32 (ISO-HDLC, as zlib) over the header without its last 4 bytes and every
 * section header and data, in file order.
 *
 * Measurements (SHA-384, sections hashed in file order, PCR = SHA-384(48 zero bytes || digest)):
 *   PCR0 = over kernel, cmdline and every ramdisk
 *   PCR1 = over kernel, cmdline and the first ramdisk (the AWS bootstrap ramdisk)
 *   PCR2 = over every later ramdisk (the application; no later ramdisk = digest of nothing)
 *   PCR8 = over the DER of the signing certificate (signed images only)
 * OS_IMAGE_HASH (dstack's os_image_hash of a Nitro app) = SHA-256(PCR0 || PCR1 || PCR2).
 */
#ifndef KMS_ATTEST_EIF_H
#define KMS_ATTEST_EIF_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define KMS_EIF_HEADER_LEN 548u
#define KMS_EIF_SECTION_HEADER_LEN 12u
#define KMS_EIF_MAX_SECTIONS 32u
#define KMS_EIF_MAX_VERSION 4u                        /* newest format this parser knows */
#define KMS_EIF_MAX_FILE (64ull * 1024 * 1024 * 1024) /* 64 GiB: far above any enclave */
#define KMS_EIF_MAX_CMDLINE (64u * 1024u)
#define KMS_EIF_MAX_SIGNATURE (64u * 1024u)
#define KMS_EIF_MAX_METADATA (1024u * 1024u)

struct kms_eif_measurements {
    uint8_t pcr0[48];
    uint8_t pcr1[48];
    uint8_t pcr2[48];
    uint8_t pcr8[48]; /* valid when is_signed */
    int is_signed;
    uint8_t os_image_hash[32];
    uint16_t version;
    uint16_t num_sections;
    uint32_t n_ramdisks;
    uint32_t crc32; /* the header's, checked equal to the content's */
    uint64_t size;  /* bytes in the file */
};

/* Measures the EIF at path (streamed; the file is never loaded whole). Rejects: a bad magic,
 * an unknown version, a section table that does not match the sections in the file (an entry
 * out of order, overlapping, pointing past the end, or set beyond num_sections), a truncated
 * section, an unknown section type, trailing bytes, a kernel or cmdline count other than one,
 * no ramdisk, more than one signature or metadata section, an unreadable signature section,
 * sizes above the limits above, and a CRC-32 mismatch (KMS_ERR_VERIFY). Other errors are
 * KMS_ERR_PARSE (KMS_ERR_IO for the file itself); the detail names the section. */
KMS_WUR int kms_eif_measure_file(const char *path, struct kms_eif_measurements *out);
/* The same over a buffer (tests, fuzzing). */
KMS_WUR int kms_eif_measure_mem(const uint8_t *p, size_t len, struct kms_eif_measurements *out);

/* CRC-32 (ISO-HDLC: reflected 0xEDB88320, init and final xor 0xffffffff), continued from crc
 * (start with 0). */
uint32_t kms_eif_crc32(uint32_t crc, const uint8_t *p, size_t n);

#endif
