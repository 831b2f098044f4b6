/*
 * TDX quotes on real hardware (DESIGN.md §4 "tdx via configfs-tsm"):
 *  - configfs-tsm (Linux >= 6.7, Documentation/ABI/testing/configfs-tsm): a report is a
 *    directory under /sys/kernel/config/tsm/report; writing 64 bytes to inblob and reading
 *    outblob yields a quote; `generation` counts writes, so reading it after outblob tells
 *    whether another writer changed the request in between.
 *  - the legacy /dev/tdx_guest ioctl TDX_CMD_GET_QUOTE (out-of-tree tdx-guest uapi used by
 *    older guest kernels): TDREPORT via TDX_CMD_GET_REPORT0, then a GetQuote shared buffer that
 *    carries a QGS get-quote message.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/ioctl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attest/attest.h"
#include "attest/tdx.h"
#include "common/buf.h"
#include "common/log.h"

/* ---------------------------------------------------------------- legacy uapi (tdx-guest.h) */

struct kms_tdx_report_req {
    uint8_t reportdata[64];
    uint8_t tdreport[KMS_TDX_REPORT_LEN];
};

struct kms_tdx_quote_req {
    uint64_t buf;
    uint64_t len;
};

#define KMS_TDX_CMD_GET_REPORT0 _IOWR('T', 1, struct kms_tdx_report_req)
#define KMS_TDX_CMD_GET_QUOTE _IOR('T', 2, struct kms_tdx_quote_req)

/* struct tdx_quote_hdr: u64 version, u64 status, u32 in_len, u32 out_len, then data. */
#define QHDR_LEN 24u
#define QHDR_VERSION 1u
#define GET_QUOTE_SUCCESS 0u
#define GET_QUOTE_IN_FLIGHT 0xffffffffffffffffull
#define GET_QUOTE_SERVICE_UNAVAILABLE 0x8000000000000001ull
/* The data is a 4-byte big-endian length, then a QGS message: header {u16 major, u16 minor,
 * u32 type, u32 size, u32 error_code}, for a request {u32 report_size, u32 id_list_size,
 * report}, for a response {u32 selected_id_size, u32 quote_size, id, quote}. */
#define QGS_HDR_LEN 16u
#define QGS_GET_QUOTE_REQ 0u
#define QGS_GET_QUOTE_RESP 1u
#define QGS_REQ_LEN (QGS_HDR_LEN + 8u + KMS_TDX_REPORT_LEN)
#define QUOTE_BUF_LEN (16u * 4096u) /* the kernel driver's GetQuote buffer size */

/* Smallest outblob that can be a v4 quote: header, body, auth-data size. */
#define MIN_QUOTE_LEN (KMS_TDX_HEADER_LEN + KMS_TDX_BODY_LEN + 4u)

/* ---------------------------------------------------------------- configfs-tsm */

static int read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return kms_err_set(errno == ENOENT ? KMS_ERR_NOTFOUND : KMS_ERR_IO, "cannot open %s: %s",
                           path, strerror(errno));
    n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        return kms_err_set(KMS_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    buf[n] = '\0';
    return 0;
}

/* Reads a whole attribute (at most max bytes; more is an error). Caller frees *out. */
static int read_blob(const char *path, size_t max, uint8_t **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t *b = NULL;
    size_t n = 0;
    ssize_t r;
    int rc = 0;

    *out = NULL;
    KMS_ENSURE(fd >= 0, KMS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    b = malloc(max + 1);
    KMS_GUARD_PTR(b);
    for (;;) {
        r = read(fd, b + n, max + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        KMS_ENSURE(r >= 0, KMS_ERR_IO, "cannot read %s: %s", path, strerror(errno));
        if (r == 0)
            break;
        n += (size_t)r;
        KMS_ENSURE(n <= max, KMS_ERR_ATT_FORMAT, "%s is larger than %zu bytes", path, max);
    }
    *out = b;
    *len = n;
    b = NULL;
out:
    if (fd >= 0)
        close(fd);
    free(b);
    return rc;
}

static int write_all(const char *path, const uint8_t *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    size_t off = 0;
    ssize_t w;
    int rc = 0;

    KMS_ENSURE(fd >= 0, KMS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    while (off < n) {
        w = write(fd, p + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        KMS_ENSURE(w > 0, KMS_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        off += (size_t)w;
    }
out:
    if (fd >= 0 && close(fd) != 0 && rc == 0)
        rc = kms_err_set(KMS_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return rc;
}

int kms_tsm_tdx_quote(const struct kms_tsm_opts *o, const uint8_t report_data[64], uint8_t **quote,
                      size_t *len)
{
    static atomic_uint seq;
    const char *root = o != NULL && o->root != NULL ? o->root : KMS_TSM_REPORT_DIR;
    char dir[4096], path[4200], txt[64];
    struct kms_tdx_quote q;
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    struct stat st;
    int made = 0;
    char *end;
    unsigned long gen;
    int rc = 0;

    *quote = NULL;
    *len = 0;
    KMS_ENSURE(stat(root, &st) == 0 && S_ISDIR(st.st_mode), KMS_ERR_NOTFOUND,
               "configfs-tsm report directory %s is not available (Linux >= 6.7 with a TDX "
               "guest and configfs mounted)",
               root);
    /* a private report directory per request: concurrent users do not share inblob */
    KMS_ENSURE(snprintf(dir, sizeof(dir), "%s/kmsd-%ld-%u", root, (long)getpid(),
                        atomic_fetch_add(&seq, 1u)) < (int)sizeof(dir),
               KMS_ERR_INVAL, "configfs-tsm path too long");
    KMS_ENSURE(mkdir(dir, 0700) == 0, KMS_ERR_IO, "cannot create configfs-tsm report %s: %s", dir,
               strerror(errno));
    made = 1;
    if (o != NULL && o->on_mkdir != NULL)
        KMS_GUARD(o->on_mkdir(o->arg, dir));
    snprintf(path, sizeof(path), "%s/provider", dir);
    rc = read_small(path, txt, sizeof(txt));
    if (rc == 0) {
        txt[strcspn(txt, "\n")] = '\0';
        KMS_ENSURE(strcmp(txt, "tdx_guest") == 0, KMS_ERR_ATT_UNSUPPORTED,
                   "configfs-tsm provider is \"%s\", not tdx_guest", txt);
    } else if (rc != KMS_ERR_NOTFOUND) {
        goto out;
    }
    rc = 0;
    snprintf(path, sizeof(path), "%s/inblob", dir);
    KMS_GUARD(write_all(path, report_data, 64));
    snprintf(path, sizeof(path), "%s/outblob", dir);
    KMS_GUARD(read_blob(path, KMS_TSM_MAX_OUTBLOB, &blob, &blob_len));
    snprintf(path, sizeof(path), "%s/generation", dir);
    KMS_GUARD(read_small(path, txt, sizeof(txt)));
    errno = 0;
    gen = strtoul(txt, &end, 10);
    KMS_ENSURE(errno == 0 && end != txt && (*end == '\n' || *end == '\0'), KMS_ERR_ATT_FORMAT,
               "configfs-tsm generation \"%.20s\" is not a number", txt);
    /* our inblob write is the only one this fresh report may have seen */
    KMS_ENSURE(gen == 1, KMS_ERR_STATE,
               "configfs-tsm report %s changed while the quote was read (generation %lu, want "
               "1): another writer used it; retry",
               dir, gen);
    KMS_ENSURE(blob_len >= MIN_QUOTE_LEN, KMS_ERR_ATT_FORMAT,
               "configfs-tsm outblob is %zu bytes, too short for a TDX quote (at least %u)",
               blob_len, MIN_QUOTE_LEN);
    KMS_GUARD(kms_tdx_quote_parse(blob, blob_len, &q));
    KMS_ENSURE(memcmp(q.report.report_data, report_data, 64) == 0, KMS_ERR_ATT_REPORT_DATA,
               "configfs-tsm outblob carries different report_data than the inblob written");
    *quote = blob;
    *len = blob_len;
    blob = NULL;
out:
    /* configfs removes the attributes with the directory; on a plain directory this fails */
    if (made && rmdir(dir) != 0)
        KMS_DEBUG("configfs-tsm: rmdir %s: %s", dir, strerror(errno));
    free(blob);
    return rc;
}

/* ---------------------------------------------------------------- legacy ioctl */

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int kms_tdx_qgs_request(const uint8_t tdreport[KMS_TDX_REPORT_LEN], uint8_t *buf, size_t cap,
                        size_t *len)
{
    uint8_t *m;
    int rc = 0;

    KMS_ENSURE(cap >= QHDR_LEN + 4u + QGS_REQ_LEN, KMS_ERR_INVAL,
               "GetQuote buffer of %zu bytes is too small", cap);
    memset(buf, 0, cap);
    put_le64(buf, QHDR_VERSION);
    put_le64(buf + 8, 0);
    put_le32(buf + 16, 4u + QGS_REQ_LEN); /* in_len */
    put_le32(buf + 20, 0);                /* out_len */
    /* transport length is big-endian, the QGS message little-endian */
    buf[QHDR_LEN] = 0;
    buf[QHDR_LEN + 1] = 0;
    buf[QHDR_LEN + 2] = (uint8_t)(QGS_REQ_LEN >> 8);
    buf[QHDR_LEN + 3] = (uint8_t)QGS_REQ_LEN;
    m = buf + QHDR_LEN + 4;
    put_le16(m, 1);     /* major */
    put_le16(m + 2, 0); /* minor */
    put_le32(m + 4, QGS_GET_QUOTE_REQ);
    put_le32(m + 8, QGS_REQ_LEN);
    put_le32(m + 12, 0); /* error_code */
    put_le32(m + 16, KMS_TDX_REPORT_LEN);
    put_le32(m + 20, 0); /* id_list_size */
    memcpy(m + 24, tdreport, KMS_TDX_REPORT_LEN);
    *len = QHDR_LEN + 4u + QGS_REQ_LEN;
out:
    return rc;
}

int kms_tdx_qgs_response(const uint8_t *buf, size_t len, uint8_t **quote, size_t *quote_len)
{
    struct kms_reader r, m;
    uint64_t version, status;
    uint32_t in_len, out_len, msg_len, type, size, err, id_size, q_size;
    uint16_t major, minor;
    uint8_t be[4];
    const uint8_t *msg, *qp;
    int rc = 0;

    *quote = NULL;
    kms_rd_init(&r, buf, len);
    KMS_GUARD(kms_rd_u64le(&r, &version));
    KMS_GUARD(kms_rd_u64le(&r, &status));
    KMS_GUARD(kms_rd_u32le(&r, &in_len));
    KMS_GUARD(kms_rd_u32le(&r, &out_len));
    KMS_ENSURE(version == QHDR_VERSION, KMS_ERR_ATT_FORMAT, "GetQuote header version %llu",
               (unsigned long long)version);
    KMS_ENSURE(status != GET_QUOTE_IN_FLIGHT, KMS_ERR_TIMEOUT,
               "GetQuote is still in flight (the host quote service did not answer)");
    KMS_ENSURE(status != GET_QUOTE_SERVICE_UNAVAILABLE, KMS_ERR_NET,
               "GetQuote: the host quote generation service is unavailable");
    KMS_ENSURE(status == GET_QUOTE_SUCCESS, KMS_ERR_IO, "GetQuote failed with status 0x%llx",
               (unsigned long long)status);
    KMS_ENSURE(out_len >= 4 && out_len <= kms_rd_left(&r), KMS_ERR_ATT_FORMAT,
               "GetQuote out_len %u exceeds the %zu-byte buffer", out_len, kms_rd_left(&r));
    KMS_GUARD(kms_rd_copy(&r, be, 4));
    msg_len = (uint32_t)be[0] << 24 | (uint32_t)be[1] << 16 | (uint32_t)be[2] << 8 | be[3];
    KMS_ENSURE(msg_len == out_len - 4, KMS_ERR_ATT_FORMAT,
               "GetQuote message length %u does not match out_len %u", msg_len, out_len);
    KMS_GUARD(kms_rd_ptr(&r, msg_len, &msg));
    kms_rd_init(&m, msg, msg_len);
    KMS_GUARD(kms_rd_u16le(&m, &major));
    KMS_GUARD(kms_rd_u16le(&m, &minor));
    KMS_GUARD(kms_rd_u32le(&m, &type));
    KMS_GUARD(kms_rd_u32le(&m, &size));
    KMS_GUARD(kms_rd_u32le(&m, &err));
    KMS_ENSURE(major == 1 && type == QGS_GET_QUOTE_RESP && size == msg_len, KMS_ERR_ATT_FORMAT,
               "QGS response header is wrong (major %u, type %u, size %u of %u)", major, type, size,
               msg_len);
    KMS_ENSURE(err == 0, KMS_ERR_IO, "QGS returned error 0x%x", err);
    KMS_GUARD(kms_rd_u32le(&m, &id_size));
    KMS_GUARD(kms_rd_u32le(&m, &q_size));
    KMS_GUARD(kms_rd_skip(&m, id_size));
    KMS_ENSURE(q_size >= MIN_QUOTE_LEN && q_size == kms_rd_left(&m), KMS_ERR_ATT_FORMAT,
               "QGS quote size %u is wrong (%zu bytes left)", q_size, kms_rd_left(&m));
    KMS_GUARD(kms_rd_ptr(&m, q_size, &qp));
    *quote = malloc(q_size);
    KMS_GUARD_PTR(*quote);
    memcpy(*quote, qp, q_size);
    *quote_len = q_size;
    (void)in_len;
    (void)minor;
out:
    if (rc == KMS_ERR_PARSE)
        rc = kms_err_set(KMS_ERR_ATT_FORMAT, "GetQuote buffer is truncated");
    return rc;
}

int kms_tdx_guest_quote(const char *dev, const uint8_t report_data[64], uint8_t **quote,
                        size_t *len)
{
    struct kms_tdx_report_req rr;
    struct kms_tdx_quote_req qr;
    uint8_t *buf = NULL;
    size_t used = 0;
    int fd;
    int rc = 0;

    *quote = NULL;
    if (dev == NULL)
        dev = KMS_TDX_GUEST_DEV;
    fd = open(dev, O_RDWR | O_CLOEXEC);
    KMS_ENSURE(fd >= 0, errno == ENOENT ? KMS_ERR_NOTFOUND : KMS_ERR_IO,
               "cannot open %s: %s (not a TDX guest, or no permission)", dev, strerror(errno));
    memset(&rr, 0, sizeof(rr));
    memcpy(rr.reportdata, report_data, 64);
    KMS_ENSURE(ioctl(fd, KMS_TDX_CMD_GET_REPORT0, &rr) == 0, KMS_ERR_IO,
               "TDX_CMD_GET_REPORT0 on %s failed: %s", dev, strerror(errno));
    buf = calloc(1, QUOTE_BUF_LEN);
    KMS_GUARD_PTR(buf);
    KMS_GUARD(kms_tdx_qgs_request(rr.tdreport, buf, QUOTE_BUF_LEN, &used));
    qr.buf = (uint64_t)(uintptr_t)buf;
    qr.len = QUOTE_BUF_LEN;
    KMS_ENSURE(ioctl(fd, KMS_TDX_CMD_GET_QUOTE, &qr) == 0, KMS_ERR_IO,
               "TDX_CMD_GET_QUOTE on %s failed: %s", dev, strerror(errno));
    KMS_GUARD(kms_tdx_qgs_response(buf, QUOTE_BUF_LEN, quote, len));
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

int kms_tdx_get_quote(const struct kms_tsm_opts *o, const char *dev, const uint8_t report_data[64],
                      uint8_t **quote, size_t *len)
{
    int rc = kms_tsm_tdx_quote(o, report_data, quote, len);

    if (rc != KMS_ERR_NOTFOUND)
        return rc;
    KMS_INFO("configfs-tsm unavailable (%s); trying the legacy %s ioctl", kms_err_detail(),
             dev != NULL ? dev : KMS_TDX_GUEST_DEV);
    rc = kms_tdx_guest_quote(dev, report_data, quote, len);
    if (rc == KMS_ERR_NOTFOUND)
        rc = kms_err_set(KMS_ERR_NOTFOUND,
                         "no TDX quote interface: neither configfs-tsm (%s) nor %s exists",
                         o != NULL && o->root != NULL ? o->root : KMS_TSM_REPORT_DIR,
                         dev != NULL ? dev : KMS_TDX_GUEST_DEV);
    return rc;
}
