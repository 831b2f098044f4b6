/*
 * EIF measurement (attest/eif.c) and `kmsctl nitro measure`. The images are assembled here by
 * the rules of aws-nitro-enclaves-image-format (EifBuilder::write_to: header, kernel, cmdline,
 * metadata, ramdisks, signature; table offsets at each section header; CRC-32 over everything
 * but the CRC field) and the expected PCRs are computed from the spec's definition
 * (PCR = SHA-384(0^48 || SHA-384(measured sections))). Every structural check of the parser
 * has a malformed image that must fail with its own message.
 */
#include <cbor.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "attest/eif.h"
#include "common/buf.h"
#include "common/hex.h"
#include "test.h"

struct sec {
    uint16_t type;
    const uint8_t *p;
    size_t n;
};

static char g_dir[64];

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* The image of sections s[0..n) into b (EifBuilder layout and CRC). */
static void build(const struct sec *s, size_t n, struct kms_buf *b)
{
    uint8_t hdr[KMS_EIF_HEADER_LEN], sh[12];
    uint64_t off = KMS_EIF_HEADER_LEN;
    uint32_t crc;

    memset(hdr, 0, sizeof(hdr));
    memcpy(hdr, ".eif", 4);
    put16(hdr + 4, 4);   /* version */
    put64(hdr + 8, 512); /* default_mem */
    put64(hdr + 16, 2);  /* default_cpus */
    put16(hdr + 26, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        put64(hdr + 28 + 8 * i, off);
        put64(hdr + 28 + 256 + 8 * i, s[i].n);
        off += 12 + s[i].n;
    }
    crc = kms_eif_crc32(0, hdr, sizeof(hdr) - 4);
    for (size_t i = 0; i < n; i++) {
        put16(sh, s[i].type);
        put16(sh + 2, 0);
        put64(sh + 4, s[i].n);
        crc = kms_eif_crc32(crc, sh, 12);
        crc = kms_eif_crc32(crc, s[i].p, s[i].n);
    }
    put32(hdr + sizeof(hdr) - 4, crc);
    b->len = 0;
    if (kms_buf_put(b, hdr, sizeof(hdr)) < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        put16(sh, s[i].type);
        put16(sh + 2, 0);
        put64(sh + 4, s[i].n);
        if (kms_buf_put(b, sh, 12) < 0 || kms_buf_put(b, s[i].p, s[i].n) < 0)
            return;
    }
}

/* Rewrites the CRC after a test altered the image on purpose (so only the alteration fails). */
static void fix_crc(struct kms_buf *b)
{
    uint32_t crc = kms_eif_crc32(0, b->data, KMS_EIF_HEADER_LEN - 4);

    crc = kms_eif_crc32(crc, b->data + KMS_EIF_HEADER_LEN, b->len - KMS_EIF_HEADER_LEN);
    put32(b->data + KMS_EIF_HEADER_LEN - 4, crc);
}

/* PCR = SHA-384(0^48 || SHA-384(a || b || c ...)) over the parts given. */
static void pcr_of(const struct sec *const *parts, size_t n, uint8_t pcr[48])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t cat[96];
    unsigned dl = 0;

    memset(cat, 0, 48);
    EVP_DigestInit_ex(md, EVP_sha384(), NULL);
    for (size_t i = 0; i < n; i++)
        EVP_DigestUpdate(md, parts[i]->p, parts[i]->n);
    EVP_DigestFinal_ex(md, cat + 48, &dl);
    EVP_MD_CTX_free(md);
    SHA384(cat, sizeof(cat), pcr);
}

static uint8_t g_kernel[3000], g_ramdisk0[70000], g_ramdisk1[5000];
static const uint8_t g_cmdline[] = "reboot=k panic=30 pci=off nomodules console=ttyS0";
static const uint8_t g_meta[] = "{\"ImageName\":\"test\",\"ImageVersion\":\"1.0\"}";

static void content(void)
{
    for (size_t i = 0; i < sizeof(g_kernel); i++)
        g_kernel[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < sizeof(g_ramdisk0); i++)
        g_ramdisk0[i] = (uint8_t)(i * 13 + 1); /* larger than one 64 KiB read */
    for (size_t i = 0; i < sizeof(g_ramdisk1); i++)
        g_ramdisk1[i] = (uint8_t)(i * 31 + 5);
}

static const struct sec s_kernel = {1, g_kernel, sizeof(g_kernel)};
static const struct sec s_cmdline = {2, g_cmdline, sizeof(g_cmdline) - 1};
static const struct sec s_meta = {5, g_meta, sizeof(g_meta) - 1};
static const struct sec s_rd0 = {3, g_ramdisk0, sizeof(g_ramdisk0)};
static const struct sec s_rd1 = {3, g_ramdisk1, sizeof(g_ramdisk1)};

static void test_crc(void)
{
    /* the CRC-32/ISO-HDLC check value */
    CHECK(kms_eif_crc32(0, (const uint8_t *)"123456789", 9) == 0xcbf43926u);
    CHECK(kms_eif_crc32(kms_eif_crc32(0, (const uint8_t *)"1234", 4), (const uint8_t *)"56789",
                        5) == 0xcbf43926u);
}

/* The layout nitro-cli builds: kernel, cmdline, metadata, bootstrap ramdisk, app ramdisk. */
static void test_measure(void)
{
    struct sec s[5] = {s_kernel, s_cmdline, s_meta, s_rd0, s_rd1};
    const struct sec *p0[] = {&s_kernel, &s_cmdline, &s_rd0, &s_rd1};
    const struct sec *p1[] = {&s_kernel, &s_cmdline, &s_rd0};
    const struct sec *p2[] = {&s_rd1};
    struct kms_buf b = {0};
    struct kms_eif_measurements m;
    uint8_t pcr[3][48], img[32];

    build(s, 5, &b);
    pcr_of(p0, 4, pcr[0]);
    pcr_of(p1, 3, pcr[1]);
    pcr_of(p2, 1, pcr[2]);
    SHA256(&pcr[0][0], sizeof(pcr), img);
    CHECK_OK(kms_eif_measure_mem(b.data, b.len, &m));
    CHECK_MEM(m.pcr0, pcr[0], 48);
    CHECK_MEM(m.pcr1, pcr[1], 48);
    CHECK_MEM(m.pcr2, pcr[2], 48);
    CHECK_MEM(m.os_image_hash, img, 32);
    CHECK(!m.is_signed && m.n_ramdisks == 2 && m.num_sections == 5 && m.version == 4);
    CHECK(m.size == b.len);
    /* one ramdisk: PCR2 is the digest of nothing */
    {
        struct sec s1[4] = {s_kernel, s_cmdline, s_meta, s_rd0};
        static const uint8_t none[1];
        const struct sec empty = {3, none, 0};
        const struct sec *pe[] = {&empty};

        build(s1, 4, &b);
        pcr_of(pe, 1, pcr[2]);
        CHECK_OK(kms_eif_measure_mem(b.data, b.len, &m));
        CHECK_MEM(m.pcr1, pcr[1], 48);
        CHECK_MEM(m.pcr2, pcr[2], 48);
        CHECK(m.n_ramdisks == 1);
    }
    kms_buf_free(&b);
}

/* A signed image: PCR8 = SHA-384(0^48 || SHA-384(DER of the signing certificate)); the
 * signature section is serde_cbor's Vec<PcrSignature> (Vec<u8> as arrays of integers). */
static void test_signed(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-384");
    X509 *x = X509_new();
    BIO *bio = BIO_new(BIO_s_mem());
    uint8_t *der = NULL, *pem = NULL, *sig = NULL;
    char *pem_p = NULL;
    long pem_len;
    int der_len;
    cbor_item_t *arr = cbor_new_definite_array(1), *m = cbor_new_definite_map(2), *cert, *cose;
    size_t sig_len = 0, cap = 0;
    struct kms_buf b = {0};
    struct kms_eif_measurements me;
    uint8_t want[48];

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"eif signer", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    CHECK(X509_sign(x, k, EVP_sha384()) > 0);
    der_len = i2d_X509(x, &der);
    PEM_write_bio_X509(bio, x);
    pem_len = BIO_get_mem_data(bio, &pem_p);
    cert = cbor_new_definite_array((size_t)pem_len);
    for (long i = 0; i < pem_len; i++)
        cbor_array_push(cert, cbor_move(cbor_build_uint8((uint8_t)pem_p[i])));
    cose = cbor_new_definite_array(3);
    for (int i = 0; i < 3; i++)
        cbor_array_push(cose, cbor_move(cbor_build_uint8((uint8_t)(0x84 + i))));
    cbor_map_add(m, (struct cbor_pair){.key = cbor_move(cbor_build_string("signing_certificate")),
                                       .value = cbor_move(cert)});
    cbor_map_add(m, (struct cbor_pair){.key = cbor_move(cbor_build_string("signature")),
                                       .value = cbor_move(cose)});
    cbor_array_push(arr, cbor_move(m));
    sig_len = cbor_serialize_alloc(arr, &sig, &cap);
    cbor_decref(&arr);
    {
        struct sec s[6] = {s_kernel, s_cmdline, s_meta, s_rd0, s_rd1, {4, sig, sig_len}};
        struct sec c = {0, der, (size_t)der_len};
        const struct sec *pc[] = {&c};

        build(s, 6, &b);
        pcr_of(pc, 1, want);
        CHECK_OK(kms_eif_measure_mem(b.data, b.len, &me));
        CHECK(me.is_signed);
        CHECK_MEM(me.pcr8, want, 48);
        /* a signature section that is not Vec<PcrSignature> */
        s[5].p = g_cmdline;
        s[5].n = 10;
        build(s, 6, &b);
        CHECK_RC(kms_eif_measure_mem(b.data, b.len, &me), KMS_ERR_PARSE);
        CHECK_DETAIL("signature section 5 is unreadable");
    }
    kms_buf_free(&b);
    free(sig);
    free(pem);
    OPENSSL_free(der);
    BIO_free(bio);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void expect_bad(struct kms_buf *b, int want, const char *detail)
{
    struct kms_eif_measurements m;

    CHECK_RC(kms_eif_measure_mem(b->data, b->len, &m), want);
    CHECK_DETAIL(detail);
}

static void test_malformed(void)
{
    struct sec s[5] = {s_kernel, s_cmdline, s_meta, s_rd0, s_rd1};
    struct kms_buf b = {0};
    struct kms_eif_measurements m;
    size_t full;

    build(s, 5, &b);
    full = b.len;
    /* truncated anywhere: in the header, a section header, a section */
    {
        static const size_t cuts[] = {0, 4, 547, 548, 555, 560, 548 + 12 + 100};

        for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
            CHECK_RC(kms_eif_measure_mem(b.data, cuts[i], &m), KMS_ERR_PARSE);
        CHECK_RC(kms_eif_measure_mem(b.data, full - 1, &m), KMS_ERR_PARSE);
        CHECK_DETAIL("truncated");
    }
    b.data[0] = 'E';
    expect_bad(&b, KMS_ERR_PARSE, "bad magic");
    build(s, 5, &b);
    put16(b.data + 4, 5);
    fix_crc(&b);
    expect_bad(&b, KMS_ERR_PARSE, "EIF version 5");
    build(s, 5, &b);
    put16(b.data + 26, 0);
    expect_bad(&b, KMS_ERR_PARSE, "declares 0 sections");
    build(s, 5, &b);
    put16(b.data + 26, 33);
    expect_bad(&b, KMS_ERR_PARSE, "declares 33 sections");
    /* the table: overlapping, past the end, a size that disagrees, an entry beyond the count */
    build(s, 5, &b);
    put64(b.data + 28 + 8, 548 + 12 + sizeof(g_kernel) - 8);
    fix_crc(&b);
    expect_bad(&b, KMS_ERR_PARSE, "sections overlap or leave a gap");
    build(s, 5, &b);
    put64(b.data + 28 + 8 * 4, 1ull << 40);
    fix_crc(&b);
    expect_bad(&b, KMS_ERR_PARSE, "section 4: the table says offset");
    build(s, 5, &b);
    put64(b.data + 28 + 256 + 8, 3);
    fix_crc(&b);
    expect_bad(&b, KMS_ERR_PARSE, "header says");
    build(s, 5, &b);
    put64(b.data + 28 + 8 * 7, 123);
    fix_crc(&b);
    expect_bad(&b, KMS_ERR_PARSE, "entry 7 is set beyond num_sections");
    /* an absurd section size (header and table agree): runs past the end */
    build(s, 5, &b);
    put64(b.data + 28 + 256 + 8 * 4, 1ull << 62);
    put64(b.data + 548 + 12 + sizeof(g_kernel) + 12 + s_cmdline.n + 12 + s_meta.n + 12 +
              sizeof(g_ramdisk0) + 4,
          1ull << 62);
    fix_crc(&b);
    expect_bad(&b, KMS_ERR_PARSE, "runs past the end");
    /* an unknown section type */
    build(s, 5, &b);
    put16(b.data + 548, 9);
    fix_crc(&b);
    expect_bad(&b, KMS_ERR_PARSE, "unknown type 9");
    /* trailing bytes */
    build(s, 5, &b);
    CHECK(kms_buf_put(&b, "x", 1) == 0);
    expect_bad(&b, KMS_ERR_PARSE, "1 bytes after its 5 sections");
    /* CRC: one flipped byte in a ramdisk */
    build(s, 5, &b);
    b.data[b.len - 10] ^= 1;
    expect_bad(&b, KMS_ERR_VERIFY, "CRC-32 mismatch");
    /* section counts */
    {
        struct sec two_k[5] = {s_kernel, s_kernel, s_cmdline, s_meta, s_rd0};
        struct sec no_rd[3] = {s_kernel, s_cmdline, s_meta};
        struct sec no_cmd[3] = {s_kernel, s_meta, s_rd0};

        build(two_k, 5, &b);
        expect_bad(&b, KMS_ERR_PARSE, "more than one kernel section");
        build(no_rd, 3, &b);
        expect_bad(&b, KMS_ERR_PARSE, "holds no ramdisk");
        build(no_cmd, 3, &b);
        expect_bad(&b, KMS_ERR_PARSE, "exactly one kernel and one cmdline");
    }
    kms_buf_free(&b);
}

/* kmsctl nitro measure on an image file: the text and --json forms. */
static void cli_case(const char *kmsctl)
{
    struct sec s[5] = {s_kernel, s_cmdline, s_meta, s_rd0, s_rd1};
    struct kms_buf b = {0};
    struct kms_eif_measurements m;
    char path[128], out[160], cmd[1024], pcr0[97], img[65], want[200];
    uint8_t *txt = NULL;
    size_t n = 0;

    build(s, 5, &b);
    CHECK_OK(kms_eif_measure_mem(b.data, b.len, &m));
    kms_hex_encode(m.pcr0, 48, pcr0);
    kms_hex_encode(m.os_image_hash, 32, img);
    snprintf(path, sizeof(path), "%s/app.eif", g_dir);
    snprintf(out, sizeof(out), "%s/out.txt", g_dir);
    CHECK_OK(kms_file_write_atomic(path, b.data, b.len, 0600));
    snprintf(cmd, sizeof(cmd), "%s nitro measure --eif %s > %s", kmsctl, path, out);
    CHECK(system(cmd) == 0);
    CHECK_OK(kms_file_read(out, 1u << 16, &txt, &n));
    snprintf(want, sizeof(want), "PCR0=%s\n", pcr0);
    CHECK(txt != NULL && strncmp((char *)txt, want, strlen(want)) == 0);
    snprintf(want, sizeof(want), "OS_IMAGE_HASH=%s\n", img);
    CHECK(txt != NULL && strstr((char *)txt, want) != NULL);
    free(txt);
    txt = NULL;
    snprintf(cmd, sizeof(cmd), "%s nitro measure --eif %s --json > %s", kmsctl, path, out);
    CHECK(system(cmd) == 0);
    CHECK_OK(kms_file_read(out, 1u << 16, &txt, &n));
    snprintf(want, sizeof(want), "\"OS_IMAGE_HASH\": \"%s\"", img);
    CHECK(txt != NULL && strstr((char *)txt, want) != NULL);
    snprintf(want, sizeof(want), "\"PCR0\": \"%s\"", pcr0);
    CHECK(txt != NULL && strstr((char *)txt, want) != NULL);
    free(txt);
    /* a malformed image: exit 1 and the reason */
    b.data[b.len - 1] ^= 1;
    CHECK_OK(kms_file_write_atomic(path, b.data, b.len, 0600));
    snprintf(cmd, sizeof(cmd), "%s nitro measure --eif %s 2> %s", kmsctl, path, out);
    CHECK(WEXITSTATUS(system(cmd)) == 1);
    txt = NULL;
    CHECK_OK(kms_file_read(out, 1u << 16, &txt, &n));
    CHECK(txt != NULL && strstr((char *)txt, "CRC-32 mismatch") != NULL);
    free(txt);
    kms_buf_free(&b);
}

/* The kmsctl of this build, and the static one (-DKMSCTL_STATIC=ON) when the build names it. */
static void test_cli(void)
{
    const char *st = getenv("KMS_STATIC_KMSCTL");
    char kmsctl[512];

    snprintf(kmsctl, sizeof(kmsctl), "%s/cli/kmsctl", getenv("KMS_BIN_DIR"));
    cli_case(kmsctl);
    if (st != NULL && st[0] != '\0')
        cli_case(st);
}

int main(void)
{
    char tmpl[] = "/tmp/kms-eif-XXXXXX";

    if (mkdtemp(tmpl) == NULL)
        return 1;
    snprintf(g_dir, sizeof(g_dir), "%s", tmpl);
    content();
    RUN(test_crc);
    RUN(test_measure);
    RUN(test_signed);
    RUN(test_malformed);
    if (getenv("KMS_BIN_DIR") != NULL)
        RUN(test_cli);
    if (kms_test_failures == 0) {
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", g_dir);
    }
    TEST_MAIN_END();
}
