/* common/: hex, reader bounds, keccak vectors, atomic file writes. */
#include "common/buf.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/keccak.h"
#include "test.h"

#include <unistd.h>

static void test_hex(void)
{
    uint8_t *b = NULL;
    size_t n = 0;
    char out[16];

    CHECK_OK(kms_hex_decode("0xDEADbeef", &b, &n));
    CHECK(n == 4 && b[0] == 0xde && b[3] == 0xef);
    kms_hex_encode(b, n, out);
    CHECK(strcmp(out, "deadbeef") == 0);
    free(b);
    CHECK_RC(kms_hex_decode("abc", &b, &n), KMS_ERR_PARSE);
    CHECK_DETAIL("odd length");
    CHECK_RC(kms_hex_decode("zz", &b, &n), KMS_ERR_PARSE);
    CHECK_DETAIL("invalid hex digit");
}

static void test_reader_bounds(void)
{
    const uint8_t data[3] = {1, 2, 3};
    struct kms_reader r;
    uint32_t v;
    uint16_t w;

    kms_rd_init(&r, data, sizeof(data));
    CHECK_RC(kms_rd_u32le(&r, &v), KMS_ERR_PARSE);
    CHECK_OK(kms_rd_u16le(&r, &w));
    CHECK(w == 0x0201);
    CHECK(kms_rd_left(&r) == 1);
}

static void test_keccak(void)
{
    uint8_t d[32];
    char hex[65];

    kms_keccak256("", 0, d);
    kms_hex_encode(d, 32, hex);
    CHECK(strcmp(hex, "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470") == 0);
    /* transfer(address,uint256) selector a9059cbb */
    kms_keccak256("transfer(address,uint256)", 25, d);
    CHECK(d[0] == 0xa9 && d[1] == 0x05 && d[2] == 0x9c && d[3] == 0xbb);
    /* Multi-block input (> 136-byte rate). */
    {
        char big[300];
        memset(big, 'a', sizeof(big));
        kms_keccak256(big, sizeof(big), d);
        kms_hex_encode(d, 32, hex);
        CHECK(strlen(hex) == 64);
    }
}

static void test_atomic_write(void)
{
    char path[] = "/tmp/kms-test-XXXXXX";
    char file[128];
    uint8_t *b = NULL;
    size_t n;

    CHECK(mkdtemp(path) != NULL);
    snprintf(file, sizeof(file), "%s/x", path);
    CHECK_OK(kms_file_write_atomic(file, "hello", 5, 0600));
    CHECK_OK(kms_file_read(file, 100, &b, &n));
    CHECK(n == 5 && memcmp(b, "hello", 5) == 0);
    free(b);
    CHECK_RC(kms_file_read(file, 2, &b, &n), KMS_ERR_TOOBIG);
    unlink(file);
    rmdir(path);
}

int main(void)
{
    RUN(test_hex);
    RUN(test_reader_bounds);
    RUN(test_keccak);
    RUN(test_atomic_write);
    TEST_MAIN_END();
}
