/*
 * EIF measurement (eif.h). The file is walked section by section in file order, the way the
 * format's reader (EifReader::from_eif) does, and the section table in the header must agree
 * with what the walk finds, so a table that overlaps, skips or points past the end is refused
 * instead of being trusted. Data is streamed through the hashes in 64 KiB chunks.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "attest/cbor.h"
#include "attest/eif.h"
#include "common/buf.h"

#define EIF_CHUNK (64u * 1024u)

enum {
    SEC_KERNEL = 1,
    SEC_CMDLINE = 2,
    SEC_RAMDISK = 3,
    SEC_SIGNATURE = 4,
    SEC_METADATA = 5,
};

static const char *const sec_names[] = {"invalid", "kernel",    "cmdline",
                                        "ramdisk", "signature", "metadata"};

static void crc_table(uint32_t t[256])
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        t[i] = c;
    }
}

static uint32_t crc_update(const uint32_t t[256], uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = t[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
    return ~crc;
}

uint32_t kms_eif_crc32(uint32_t crc, const uint8_t *p, size_t n)
{
    uint32_t t[256];

    crc_table(t);
    return crc_update(t, crc, p, n);
}

/* ---------------------------------------------------------------- signature section */

/* A Vec<u8> as serde_cbor writes it (an array of small unsigned integers), or a byte string.
 * Copied into b when b is not NULL. */
static int cb_bytes(struct kms_reader *r, struct kms_buf *b)
{
    const uint8_t *p;
    uint8_t major, v8;
    uint64_t n, v;
    int rc = 0;

    KMS_GUARD(kms_cbor_head32(r, &major, &n));
    KMS_ENSURE(n <= kms_rd_left(r), KMS_ERR_PARSE, "byte sequence of %llu exceeds the section",
               (unsigned long long)n);
    if (major == 2) {
        KMS_GUARD(kms_rd_ptr(r, (size_t)n, &p));
        if (b != NULL)
            KMS_GUARD(kms_buf_put(b, p, (size_t)n));
        goto out;
    }
    KMS_ENSURE(major == 4, KMS_ERR_PARSE, "expected a byte sequence");
    for (uint64_t i = 0; i < n; i++) {
        KMS_GUARD(kms_cbor_head32(r, &major, &v));
        KMS_ENSURE(major == 0 && v <= 0xff, KMS_ERR_PARSE, "byte sequence element is not 0..255");
        v8 = (uint8_t)v;
        if (b != NULL)
            KMS_GUARD(kms_buf_put(b, &v8, 1));
    }
out:
    return rc;
}

/* SHA-384 of the DER of the first signing certificate: Vec<PcrSignature>, each a map
 * {"signing_certificate": PEM bytes, "signature": COSE_Sign1 bytes}. */
static int signing_cert_digest(const uint8_t *p, size_t len, uint8_t digest[48])
{
    struct kms_reader r;
    struct kms_buf pem = {0};
    const uint8_t *k;
    uint8_t major;
    uint64_t n, m;
    int have_cert = 0;
    BIO *bio = NULL;
    X509 *x = NULL;
    uint8_t *der = NULL;
    int der_len;
    int rc = 0;

    kms_rd_init(&r, p, len);
    KMS_GUARD(kms_cbor_head32(&r, &major, &n));
    KMS_ENSURE(major == 4 && n >= 1, KMS_ERR_PARSE, "not a non-empty array of PCR signatures");
    KMS_GUARD(kms_cbor_head32(&r, &major, &m));
    KMS_ENSURE(major == 5 && m <= 8, KMS_ERR_PARSE, "PCR signature is not a small map");
    for (uint64_t i = 0; i < m; i++) {
        uint64_t kn;

        KMS_GUARD(kms_cbor_head32(&r, &major, &kn));
        KMS_ENSURE(major == 3 && kn <= kms_rd_left(&r), KMS_ERR_PARSE,
                   "PCR signature key is not text");
        KMS_GUARD(kms_rd_ptr(&r, (size_t)kn, &k));
        if (kn == 19 && memcmp(k, "signing_certificate", 19) == 0) {
            KMS_ENSURE(!have_cert, KMS_ERR_PARSE, "signing_certificate appears twice");
            KMS_GUARD(cb_bytes(&r, &pem));
            have_cert = 1;
        } else {
            KMS_ENSURE(kn == 9 && memcmp(k, "signature", 9) == 0, KMS_ERR_PARSE,
                       "unknown PCR signature field");
            KMS_GUARD(cb_bytes(&r, NULL));
        }
    }
    KMS_ENSURE(have_cert && pem.len > 0 && pem.len <= INT32_MAX, KMS_ERR_PARSE,
               "no signing_certificate");
    bio = BIO_new_mem_buf(pem.data, (int)pem.len);
    KMS_GUARD_PTR(bio);
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    KMS_ENSURE(x != NULL, KMS_ERR_PARSE, "signing_certificate is not a PEM certificate");
    der_len = i2d_X509(x, &der);
    KMS_ENSURE(der_len > 0, KMS_ERR_CRYPTO, "cannot encode the signing certificate");
    SHA384(der, (size_t)der_len, digest);
out:
    OPENSSL_free(der);
    X509_free(x);
    BIO_free(bio);
    kms_buf_free(&pem);
    return rc;
}

/* ---------------------------------------------------------------- walk */

struct walk {
    FILE *f;
    uint64_t size;
    uint32_t crc_t[256];
    uint32_t crc;
    EVP_MD_CTX *h[3]; /* PCR0 image, PCR1 bootstrap, PCR2 application */
    uint8_t *chunk;
};

static int rd_exact(struct walk *w, uint8_t *p, size_t n, const char *what)
{
    if (fread(p, 1, n, w->f) != n)
        return kms_err_set(KMS_ERR_PARSE, "EIF truncated in the %s", what);
    return 0;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* PCR = SHA-384(zero[48] || SHA-384(data)): the hasher's tpm_extend_finalize_reset. */
static int pcr_final(EVP_MD_CTX *h, uint8_t pcr[48])
{
    uint8_t cat[96];
    unsigned n = 0;
    int rc = 0;

    memset(cat, 0, 48);
    KMS_GUARD_OSSL(EVP_DigestFinal_ex(h, cat + 48, &n), "EVP_DigestFinal_ex");
    KMS_ENSURE(n == 48, KMS_ERR_CRYPTO, "SHA-384 digest of %u bytes", n);
    SHA384(cat, sizeof(cat), pcr);
out:
    return rc;
}

static int measure(struct walk *w, struct kms_eif_measurements *out)
{
    uint8_t hdr[KMS_EIF_HEADER_LEN], sh[KMS_EIF_SECTION_HEADER_LEN];
    uint64_t offs[KMS_EIF_MAX_SECTIONS], sizes[KMS_EIF_MAX_SECTIONS];
    uint64_t pos, left;
    unsigned count[6] = {0};
    uint8_t *small = NULL; /* signature section */
    uint8_t digest[48], cat[96];
    int rc = 0;

    memset(out, 0, sizeof(*out));
    out->size = w->size;
    KMS_ENSURE(w->size <= KMS_EIF_MAX_FILE, KMS_ERR_TOOBIG, "EIF of %llu bytes (max %llu)",
               (unsigned long long)w->size, (unsigned long long)KMS_EIF_MAX_FILE);
    KMS_ENSURE(w->size >= KMS_EIF_HEADER_LEN, KMS_ERR_PARSE,
               "EIF truncated: %llu bytes, the header alone is %u", (unsigned long long)w->size,
               KMS_EIF_HEADER_LEN);
    KMS_GUARD(rd_exact(w, hdr, sizeof(hdr), "header"));
    KMS_ENSURE(memcmp(hdr, ".eif", 4) == 0, KMS_ERR_PARSE,
               "not an EIF: bad magic (expected \".eif\")");
    out->version = be16(hdr + 4);
    KMS_ENSURE(out->version >= 1 && out->version <= KMS_EIF_MAX_VERSION, KMS_ERR_PARSE,
               "EIF version %u is not one this parser knows (1..%u)", out->version,
               KMS_EIF_MAX_VERSION);
    out->num_sections = be16(hdr + 26);
    KMS_ENSURE(out->num_sections >= 1 && out->num_sections <= KMS_EIF_MAX_SECTIONS, KMS_ERR_PARSE,
               "EIF declares %u sections (1..%u)", out->num_sections, KMS_EIF_MAX_SECTIONS);
    for (unsigned i = 0; i < KMS_EIF_MAX_SECTIONS; i++) {
        offs[i] = be64(hdr + 28 + 8 * i);
        sizes[i] = be64(hdr + 28 + 8 * KMS_EIF_MAX_SECTIONS + 8 * i);
        KMS_ENSURE(i < out->num_sections || (offs[i] == 0 && sizes[i] == 0), KMS_ERR_PARSE,
                   "EIF section table entry %u is set beyond num_sections (%u)", i,
                   out->num_sections);
    }
    out->crc32 = be32(hdr + KMS_EIF_HEADER_LEN - 4);
    w->crc = crc_update(w->crc_t, 0, hdr, KMS_EIF_HEADER_LEN - 4);
    pos = KMS_EIF_HEADER_LEN;
    for (unsigned i = 0; i < out->num_sections; i++) {
        unsigned type;
        uint64_t n;
        int to[3];

        KMS_ENSURE(offs[i] == pos, KMS_ERR_PARSE,
                   "EIF section %u: the table says offset %llu but the previous section ends at "
                   "%llu (sections overlap or leave a gap)",
                   i, (unsigned long long)offs[i], (unsigned long long)pos);
        KMS_ENSURE(w->size - pos >= KMS_EIF_SECTION_HEADER_LEN, KMS_ERR_PARSE,
                   "EIF truncated: section %u header at %llu is past the end", i,
                   (unsigned long long)pos);
        KMS_GUARD(rd_exact(w, sh, sizeof(sh), "section header"));
        w->crc = crc_update(w->crc_t, w->crc, sh, sizeof(sh));
        type = be16(sh);
        n = be64(sh + 4);
        pos += KMS_EIF_SECTION_HEADER_LEN;
        KMS_ENSURE(type >= SEC_KERNEL && type <= SEC_METADATA, KMS_ERR_PARSE,
                   "EIF section %u has unknown type %u", i, type);
        KMS_ENSURE(n == sizes[i], KMS_ERR_PARSE,
                   "EIF section %u (%s): header says %llu bytes, the table %llu", i,
                   sec_names[type], (unsigned long long)n, (unsigned long long)sizes[i]);
        KMS_ENSURE(n <= w->size - pos, KMS_ERR_PARSE,
                   "EIF truncated: section %u (%s) of %llu bytes at %llu runs past the end "
                   "(%llu bytes)",
                   i, sec_names[type], (unsigned long long)n, (unsigned long long)pos,
                   (unsigned long long)w->size);
        KMS_ENSURE(type != SEC_CMDLINE || n <= KMS_EIF_MAX_CMDLINE, KMS_ERR_TOOBIG,
                   "EIF cmdline of %llu bytes (max %u)", (unsigned long long)n,
                   KMS_EIF_MAX_CMDLINE);
        KMS_ENSURE(type != SEC_SIGNATURE || n <= KMS_EIF_MAX_SIGNATURE, KMS_ERR_TOOBIG,
                   "EIF signature section of %llu bytes (max %u)", (unsigned long long)n,
                   KMS_EIF_MAX_SIGNATURE);
        KMS_ENSURE(type != SEC_METADATA || n <= KMS_EIF_MAX_METADATA, KMS_ERR_TOOBIG,
                   "EIF metadata of %llu bytes (max %u)", (unsigned long long)n,
                   KMS_EIF_MAX_METADATA);
        count[type]++;
        KMS_ENSURE((type != SEC_KERNEL && type != SEC_CMDLINE && type != SEC_SIGNATURE &&
                    type != SEC_METADATA) ||
                       count[type] == 1,
                   KMS_ERR_PARSE, "EIF has more than one %s section", sec_names[type]);
        /* which hashes this section feeds, as EifReader */
        to[0] = type == SEC_KERNEL || type == SEC_CMDLINE || type == SEC_RAMDISK;
        to[1] = type == SEC_KERNEL || type == SEC_CMDLINE || (type == SEC_RAMDISK && count[3] == 1);
        to[2] = type == SEC_RAMDISK && count[3] > 1;
        if (type == SEC_SIGNATURE) {
            small = malloc(n > 0 ? (size_t)n : 1);
            KMS_GUARD_PTR(small);
            KMS_GUARD(rd_exact(w, small, (size_t)n, "signature section"));
            w->crc = crc_update(w->crc_t, w->crc, small, (size_t)n);
            rc = signing_cert_digest(small, (size_t)n, digest);
            if (rc < 0) {
                rc = kms_err_wrap(KMS_ERR_PARSE, "EIF signature section %u is unreadable", i);
                goto out;
            }
            memset(cat, 0, 48);
            memcpy(cat + 48, digest, 48);
            SHA384(cat, sizeof(cat), out->pcr8);
            out->is_signed = 1;
            free(small);
            small = NULL;
        } else {
            for (left = n; left > 0;) {
                size_t c = left < EIF_CHUNK ? (size_t)left : EIF_CHUNK;

                KMS_GUARD(rd_exact(w, w->chunk, c, sec_names[type]));
                w->crc = crc_update(w->crc_t, w->crc, w->chunk, c);
                for (int k = 0; k < 3; k++) {
                    if (to[k])
                        KMS_GUARD_OSSL(EVP_DigestUpdate(w->h[k], w->chunk, c), "EVP_DigestUpdate");
                }
                left -= c;
            }
        }
        pos += n;
    }
    KMS_ENSURE(pos == w->size, KMS_ERR_PARSE,
               "EIF has %llu bytes after its %u sections (file not an EIF or table wrong)",
               (unsigned long long)(w->size - pos), out->num_sections);
    KMS_ENSURE(count[SEC_KERNEL] == 1 && count[SEC_CMDLINE] == 1, KMS_ERR_PARSE,
               "EIF must hold exactly one kernel and one cmdline section (has %u and %u)",
               count[SEC_KERNEL], count[SEC_CMDLINE]);
    KMS_ENSURE(count[SEC_RAMDISK] >= 1, KMS_ERR_PARSE, "EIF holds no ramdisk");
    out->n_ramdisks = count[SEC_RAMDISK];
    KMS_ENSURE(w->crc == out->crc32, KMS_ERR_VERIFY,
               "EIF CRC-32 mismatch: the header says %08x, the content gives %08x (the file is "
               "corrupted or was altered)",
               out->crc32, w->crc);
    KMS_GUARD(pcr_final(w->h[0], out->pcr0));
    KMS_GUARD(pcr_final(w->h[1], out->pcr1));
    KMS_GUARD(pcr_final(w->h[2], out->pcr2));
    memcpy(cat, out->pcr0, 48);
    memcpy(cat + 48, out->pcr1, 48);
    {
        uint8_t all[144];

        memcpy(all, cat, 96);
        memcpy(all + 96, out->pcr2, 48);
        SHA256(all, sizeof(all), out->os_image_hash);
    }
out:
    free(small);
    return rc;
}

static int measure_stream(FILE *f, uint64_t size, struct kms_eif_measurements *out)
{
    struct walk w;
    int rc = 0;

    memset(&w, 0, sizeof(w));
    w.f = f;
    w.size = size;
    crc_table(w.crc_t);
    w.chunk = malloc(EIF_CHUNK);
    KMS_GUARD_PTR(w.chunk);
    for (int k = 0; k < 3; k++) {
        w.h[k] = EVP_MD_CTX_new();
        KMS_GUARD_PTR(w.h[k]);
        KMS_GUARD_OSSL(EVP_DigestInit_ex(w.h[k], EVP_sha384(), NULL), "EVP_DigestInit_ex");
    }
    rc = measure(&w, out);
out:
    for (int k = 0; k < 3; k++)
        EVP_MD_CTX_free(w.h[k]);
    free(w.chunk);
    if (rc < 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

int kms_eif_measure_file(const char *path, struct kms_eif_measurements *out)
{
    struct stat st;
    FILE *f = fopen(path, "rb");
    int rc = 0;

    memset(out, 0, sizeof(*out));
    KMS_ENSURE(f != NULL, KMS_ERR_IO, "cannot open the EIF %s: %s", path, strerror(errno));
    KMS_ENSURE(fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode), KMS_ERR_IO,
               "%s is not a regular file", path);
    rc = measure_stream(f, (uint64_t)st.st_size, out);
    if (rc < 0)
        kms_err_wrap(rc, "%s", path);
out:
    if (f != NULL)
        fclose(f);
    return rc;
}

int kms_eif_measure_mem(const uint8_t *p, size_t len, struct kms_eif_measurements *out)
{
    FILE *f;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    KMS_ENSURE(len >= KMS_EIF_HEADER_LEN, KMS_ERR_PARSE,
               "EIF truncated: %zu bytes, the header alone is %u", len, KMS_EIF_HEADER_LEN);
    f = fmemopen((void *)p, len, "rb");
    KMS_ENSURE(f != NULL, KMS_ERR_IO, "fmemopen: %s", strerror(errno));
    rc = measure_stream(f, (uint64_t)len, out);
    fclose(f);
out:
    return rc;
}
