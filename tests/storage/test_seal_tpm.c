/*
 * "tpm" seal provider tests. Mode "unit" (no TPM): the PCR selection spec is validated before a
 * TPM is touched. Mode "swtpm" (label tpm; exit 77 when swtpm is missing): against real software
 * TPMs started here, the KEK seals and unseals across reopen with the same identity; a change of
 * a sealed PCR keeps the store sealed (and undoing it unseals again); a modified, truncated,
 * foreign or missing blob is refused; the KEK is never on disk; providers cannot be swapped.
 *
 * Usage: test_seal_tpm unit | test_seal_tpm swtpm
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_tctildr.h>

#include "common/file.h"
#include "common/hex.h"
#include "common/log.h"
#include "storage/storage.h"
#include "storage_testutil.h"
#include "kmstest_swtpm.h"
#include "test.h"

#define TEST_PCR 16 /* debug PCR: extendable and resettable from locality 0 */

/* ---- helpers ---- */

static uint8_t *slurp(const char *path, size_t *len)
{
    uint8_t *p = NULL;

    if (kms_file_read(path, 1u << 26, &p, len) < 0)
        return NULL;
    return p;
}

static int spit(const char *path, const uint8_t *p, size_t n)
{
    return kms_file_write_atomic(path, p, n, 0600);
}

/* Rewrites the trailing sha256 of a blob so a change passes the file checksum and reaches the
 * TPM (or the header checks) instead. */
static void fix_checksum(uint8_t *b, size_t n)
{
    EVP_Digest(b, n - 32, b + n - 32, NULL, EVP_sha256(), NULL);
}

/* Offset of section k (0 = primary name, 1 = PCR selection, then the PCR values count, ...)
 * of a v1 blob: "kmsd-tpm" u16 version, then u16-length sections. Returns the offset of the
 * section's length field. */
static size_t blob_section(const uint8_t *b, size_t n, int k)
{
    size_t off = 8 + 2;

    for (int i = 0; i < k && off + 2 <= n; i++)
        off += 2 + (size_t)((b[off] << 8) | b[off + 1]);
    return off;
}

/* ---- software TPMs ---- */

/* Connects and disconnects (swtpm serves one client at a time). */
static int tpm_reachable(const char *tcti, void *arg)
{
    TSS2_TCTI_CONTEXT *tc = NULL;

    (void)arg;
    if (Tss2_TctiLdr_Initialize(tcti, &tc) != TSS2_RC_SUCCESS)
        return 0;
    Tss2_TctiLdr_Finalize(&tc);
    return 1;
}

/* Extends (extend = 1) or resets (extend = 0) a PCR in all banks, as a changed boot would. */
static int pcr_change(const char *tcti, unsigned pcr, int extend)
{
    TSS2_TCTI_CONTEXT *tc = NULL;
    ESYS_CONTEXT *esys = NULL;
    TPML_DIGEST_VALUES v;
    TSS2_RC r;

    if (Tss2_TctiLdr_Initialize(tcti, &tc) != TSS2_RC_SUCCESS)
        return -1;
    r = Esys_Initialize(&esys, tc, NULL);
    if (r == TSS2_RC_SUCCESS) {
        if (extend) {
            memset(&v, 0, sizeof(v));
            v.count = 1;
            v.digests[0].hashAlg = TPM2_ALG_SHA256;
            memset(v.digests[0].digest.sha256, 0xab, 32);
            r = Esys_PCR_Extend(esys, ESYS_TR_PCR0 + pcr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                ESYS_TR_NONE, &v);
        } else {
            r = Esys_PCR_Reset(esys, ESYS_TR_PCR0 + pcr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                               ESYS_TR_NONE);
        }
        Esys_Finalize(&esys);
    }
    Tss2_TctiLdr_Finalize(&tc);
    return r == TSS2_RC_SUCCESS ? 0 : -1;
}

/* ---- a recording TCP proxy in front of swtpm's command port: what an attacker on the bus
 * between kmsd and the TPM sees ---- */

struct proxy {
    int lfd;
    int target_port;
    int port;
    volatile int stop;
    pthread_t th;
    pthread_mutex_t mu;
    uint8_t *rec;
    size_t len, cap;
};

static void proxy_record(struct proxy *p, const uint8_t *b, size_t n)
{
    pthread_mutex_lock(&p->mu);
    if (p->cap - p->len < n) {
        size_t cap = (p->len + n) * 2;
        uint8_t *r = realloc(p->rec, cap);

        if (r == NULL)
            exit(2);
        p->rec = r;
        p->cap = cap;
    }
    memcpy(p->rec + p->len, b, n);
    p->len += n;
    pthread_mutex_unlock(&p->mu);
}

static int connect_port(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void *proxy_main(void *arg)
{
    struct proxy *p = arg;
    uint8_t buf[4096];

    while (!p->stop) {
        struct pollfd lp = {.fd = p->lfd, .events = POLLIN};
        int c, t;

        if (poll(&lp, 1, 50) <= 0)
            continue;
        c = accept(p->lfd, NULL, NULL);
        if (c < 0)
            continue;
        t = connect_port(p->target_port);
        while (t >= 0 && !p->stop) {
            struct pollfd fds[2] = {{.fd = c, .events = POLLIN}, {.fd = t, .events = POLLIN}};
            int open = 1;

            if (poll(fds, 2, 50) <= 0)
                continue;
            for (int i = 0; i < 2 && open; i++) {
                ssize_t n;

                if (fds[i].revents == 0)
                    continue;
                n = read(fds[i].fd, buf, sizeof(buf));
                if (n <= 0 || write(fds[1 - i].fd, buf, (size_t)n) != n) {
                    open = 0;
                    break;
                }
                proxy_record(p, buf, (size_t)n);
            }
            if (!open)
                break;
        }
        if (t >= 0)
            close(t);
        close(c);
    }
    return NULL;
}

static int proxy_start(struct proxy *p, int port, int target_port)
{
    struct sockaddr_in a;
    int one = 1;

    memset(p, 0, sizeof(p[0]));
    p->target_port = target_port;
    p->port = port;
    p->lfd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)p->port);
    setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (p->port < 0 || bind(p->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(p->lfd, 4) != 0)
        return -1;
    pthread_mutex_init(&p->mu, NULL);
    return pthread_create(&p->th, NULL, proxy_main, p) == 0 ? 0 : -1;
}

/* Stops forwarding; the recording stays readable until the caller frees p->rec. */
static void proxy_stop(struct proxy *p)
{
    p->stop = 1;
    pthread_join(p->th, NULL);
    close(p->lfd);
    pthread_mutex_destroy(&p->mu);
}

static int mem_has(const uint8_t *hay, size_t hlen, const uint8_t *needle, size_t nlen)
{
    for (size_t i = 0; hlen >= nlen && i <= hlen - nlen; i++)
        if (memcmp(hay + i, needle, nlen) == 0)
            return 1;
    return 0;
}

/* ---- unit: PCR selection spec (no TPM is contacted) ---- */

/* Proves: each malformed --seal-pcrs is refused with KMS_ERR_INVAL naming the fault, before any
 * TPM is opened (the TCTI here would fail with KMS_ERR_STORE_SEAL); well-formed specs pass the
 * parser (then the missing blob is reported: KMS_ERR_NOTFOUND with may_create = 0). */
static void test_pcr_spec(void)
{
    static const struct {
        const char *spec;
        const char *detail;
    } bad[] = {
        {"sha256", "expected BANK:PCR"},
        {"sha256:", "selects no PCR"},
        {"sha256:24", "\"24\" is not a PCR index 0..23"},
        {"sha256:-1", "\"-1\" is not a PCR index"},
        {"sha256:1x", "\"1x\" is not a PCR index"},
        {"sha256: 1", "\" 1\" is not a PCR index"},
        {"sha256:+1", "expected BANK:PCR"},
        {"md5:0", "unknown bank \"md5\""},
        {"sha256:0+sha256:1", "PCR bank sha256 appears twice"},
        {"sha1:0+sha256:0+sha384:0+sha512:0+sha1:1", "more than 4 banks"},
        {"", "must name 1..4 banks"},
    };
    static const char *good[] = {"sha256:0,2,14", "sha256:16", "sha1:0+sha256:7,23",
                                 ("sha384:0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,"
                                  "22,23")};
    struct kms_seal_cfg cfg = {.provider = "tpm",
                               .tcti = "swtpm:host=127.0.0.1,port=1",
                               .blob_path = "/nonexistent/kek.tpm"};
    uint8_t kek[32];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* "" means "default" in the config, so the empty spec is checked as "+" (no bank) */
        cfg.pcrs = bad[i].spec[0] != '\0' ? bad[i].spec : "+";
        CHECK_RC(kms_seal_tpm_kek(&cfg, 1, kek, NULL), KMS_ERR_INVAL);
        CHECK_DETAIL(bad[i].detail);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        cfg.pcrs = good[i];
        CHECK_RC(kms_seal_tpm_kek(&cfg, 0, kek, NULL), KMS_ERR_NOTFOUND);
        CHECK_DETAIL("does not exist");
    }
    cfg.pcrs = NULL; /* default sha256:0,2,14 */
    CHECK_RC(kms_seal_tpm_kek(&cfg, 0, kek, NULL), KMS_ERR_NOTFOUND);
    cfg.blob_path = NULL;
    CHECK_RC(kms_seal_tpm_kek(&cfg, 0, kek, NULL), KMS_ERR_INVAL);
    CHECK_DETAIL("blob path is not set");
}

/* Proves: a TCTI that cannot be reached is KMS_ERR_STORE_SEAL naming the TCTI layer and the
 * option to check, and no blob is written. */
static void test_unreachable_tcti(void)
{
    char *dir = st_tmpdir_new("sealtpm");
    char *blob = st_path_in(dir, "kek.tpm");
    struct kms_seal_cfg cfg = {
        .provider = "tpm", .tcti = "swtpm:host=127.0.0.1,port=1", .pcrs = "sha256:16"};
    struct kms_store *st = NULL;

    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("TPM (swtpm:host=127.0.0.1,port=1): opening the TCTI failed");
    CHECK_DETAIL("check --tpm-tcti");
    CHECK(st == NULL);
    CHECK(!kms_file_exists(blob));
    cfg.tcti = "nosuchtcti:x";
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("opening the TCTI failed");
    free(blob);
    st_tmpdir_free(dir);
}

/* ---- swtpm ---- */

static struct kmstest_swtpm tpm_a, tpm_b;

static struct kms_seal_cfg cfg_for(const struct kmstest_swtpm *t, const char *pcrs)
{
    struct kms_seal_cfg c = {.provider = "tpm", .tcti = t->tcti, .pcrs = pcrs};

    return c;
}

/* Creates a store sealed by tpm_a to PCR 16 holding a fresh identity (copied to *id). */
static char *sealed_store(struct kms_identity *id)
{
    char *dir = st_tmpdir_new("sealtpm");
    struct kms_seal_cfg cfg = cfg_for(&tpm_a, "sha256:16");
    struct kms_store *st = NULL;

    st_make_identity(id, "kms.tpm.test", 1, NULL);
    CHECK_OK(kms_store_open(dir, &cfg, &st));
    if (st != NULL)
        CHECK_OK(kms_store_save_identity(st, id));
    kms_store_close(st);
    return dir;
}

static void check_reopen(const char *dir, const struct kms_seal_cfg *cfg,
                         const struct kms_identity *want)
{
    struct kms_store *st = NULL;
    struct kms_identity got;

    memset(&got, 0, sizeof(got));
    CHECK_OK(kms_store_open(dir, cfg, &st));
    if (st == NULL)
        return;
    CHECK_OK(kms_store_load_identity(st, &got));
    CHECK(memcmp(got.root_k256, want->root_k256, 32) == 0);
    CHECK(got.root_ca_key_pem != NULL && strcmp(got.root_ca_key_pem, want->root_ca_key_pem) == 0);
    CHECK(got.rpc_key_pem != NULL && strcmp(got.rpc_key_pem, want->rpc_key_pem) == 0);
    kms_identity_clear(&got);
    kms_store_close(st);
}

/* Proves: a KEK sealed by the TPM survives close/reopen: the identity unsealed after reopen is
 * the one saved; the blob is 0600 and no file-provider KEK exists; the default blob path is
 * <data_dir>/kek.tpm and an explicit blob_path is honoured. */
static void test_seal_reopen(void)
{
    struct kms_identity id;
    char *dir = sealed_store(&id);
    char *blob = st_path_in(dir, "kek.tpm");
    char *kekbin = st_path_in(dir, "kek.bin");
    char *dir2 = st_tmpdir_new("sealtpm");
    char *blob2 = st_path_in(dir2, "elsewhere.tpm");
    struct kms_seal_cfg cfg = cfg_for(&tpm_a, "sha256:16");
    struct kms_store *st = NULL;
    struct stat sb;

    CHECK(stat(blob, &sb) == 0 && S_ISREG(sb.st_mode) && (sb.st_mode & 0777) == 0600);
    CHECK(!kms_file_exists(kekbin));
    check_reopen(dir, &cfg, &id);
    check_reopen(dir, &cfg, &id); /* twice: unsealing does not consume anything */
    cfg.blob_path = blob2;
    CHECK_OK(kms_store_open(dir2, &cfg, &st));
    kms_store_close(st);
    CHECK(kms_file_exists(blob2));
    free(blob2);
    blob2 = st_path_in(dir2, "kek.tpm");
    CHECK(!kms_file_exists(blob2));
    kms_identity_clear(&id);
    free(blob);
    free(kekbin);
    free(blob2);
    st_tmpdir_free(dir);
    st_tmpdir_free(dir2);
}

/* Proves: sealing to a multi-bank selection works (sha1 and sha256 banks, two PCRs each); PCR 23
 * extended in the sha256 bank only keeps it sealed and exactly that bank's PCR is named;
 * resetting it unseals again. */
static void test_multi_bank(void)
{
    char *dir = st_tmpdir_new("sealtpm");
    struct kms_seal_cfg cfg = cfg_for(&tpm_a, "sha1:16,23+sha256:16,23");
    struct kms_store *st = NULL;

    CHECK_OK(kms_store_open(dir, &cfg, &st));
    kms_store_close(st);
    st = NULL;
    CHECK_OK(kms_store_open(dir, &cfg, &st));
    kms_store_close(st);
    st = NULL;
    CHECK(pcr_change(tpm_a.tcti, 23, 1) == 0);
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("(changed: sha256:23)");
    CHECK(pcr_change(tpm_a.tcti, 23, 0) == 0);
    CHECK_OK(kms_store_open(dir, &cfg, &st));
    kms_store_close(st);
    st_tmpdir_free(dir);
}

/* Proves: extending a PCR the KEK is sealed to makes the TPM refuse to unseal: kms_store_open
 * fails with KMS_ERR_STORE_SEAL (the node's "sealed" state), naming the changed PCR and what to
 * do; the blob is kept, so restoring the PCR value (reset of debug PCR 16) unseals the same
 * identity again. A PCR outside the selection changing does not matter. */
static void test_pcr_change(void)
{
    struct kms_identity id;
    char *dir = sealed_store(&id);
    char *blob = st_path_in(dir, "kek.tpm");
    struct kms_seal_cfg cfg = cfg_for(&tpm_a, "sha256:16");
    struct kms_store *st = NULL;
    size_t n1 = 0, n2 = 0;
    uint8_t *b1 = slurp(blob, &n1);
    uint8_t *b2;

    CHECK(pcr_change(tpm_a.tcti, 23, 1) == 0); /* not selected */
    check_reopen(dir, &cfg, &id);
    CHECK(pcr_change(tpm_a.tcti, 23, 0) == 0);
    CHECK(pcr_change(tpm_a.tcti, TEST_PCR, 1) == 0);
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("the TPM refused to unseal the KEK");
    CHECK_DETAIL("PCRs it is sealed to (sha256:16) no longer hold the values they had at seal "
                 "time (changed: sha256:16)");
    CHECK_DETAIL("re-provision this node");
    CHECK(st == NULL);
    b2 = slurp(blob, &n2);
    CHECK(b1 != NULL && b2 != NULL && n1 == n2 && memcmp(b1, b2, n1) == 0);
    CHECK(pcr_change(tpm_a.tcti, TEST_PCR, 0) == 0);
    check_reopen(dir, &cfg, &id);
    kms_identity_clear(&id);
    free(b1);
    free(b2);
    free(blob);
    st_tmpdir_free(dir);
}

/* Proves: the blob file is checked: one flipped byte fails the checksum; a flipped byte in the
 * sealed private area with a fixed-up checksum is refused by the TPM itself (Esys_Load
 * integrity); so is a changed policy in the public area; truncation, trailing bytes, a wrong
 * magic and an unknown version are refused; a missing blob with a sealed database is refused
 * (no new KEK). Each is KMS_ERR_STORE_SEAL; the good blob restored opens again. */
static void test_blob_tamper(void)
{
    struct kms_identity id;
    char *dir = sealed_store(&id);
    char *blob = st_path_in(dir, "kek.tpm");
    struct kms_seal_cfg cfg = cfg_for(&tpm_a, "sha256:16");
    struct kms_store *st = NULL;
    size_t n = 0;
    uint8_t *good = slurp(blob, &n);
    uint8_t *bad = malloc(n + 1);
    size_t off;

    CHECK(good != NULL && n > 100);
    if (good == NULL || bad == NULL)
        goto out;
    /* checksum */
    memcpy(bad, good, n);
    bad[n / 2] ^= 1;
    CHECK_OK(spit(blob, bad, n));
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("checksum mismatch");
    CHECK_DETAIL("restore it from a backup");
    /* private area (section 4 after the PCR count: name, sel, count+values, pub, priv) */
    memcpy(bad, good, n);
    off = blob_section(bad, n, 2);                       /* the u16 PCR count */
    off += 2 + 2 + 32;                                   /* count, one sha256 value */
    off += 2 + (size_t)((bad[off] << 8) | bad[off + 1]); /* public */
    CHECK(off + 20 < n - 32);
    bad[off + 20] ^= 0x40;
    fix_checksum(bad, n);
    CHECK_OK(spit(blob, bad, n));
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("loading the sealed KEK (Esys_Load) failed");
    CHECK_DETAIL("the blob file was modified or comes from another TPM");
    /* public area: the policy digest (last 32 bytes before unique/params are hard to find
     * generically; flip the last byte of the public section, inside the keyedhash unique) */
    memcpy(bad, good, n);
    off = blob_section(bad, n, 2) + 2 + 2 + 32;
    off += 2 + (size_t)((bad[off] << 8) | bad[off + 1]) - 1;
    bad[off] ^= 1;
    fix_checksum(bad, n);
    CHECK_OK(spit(blob, bad, n));
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("Esys_Load");
    /* truncated */
    CHECK_OK(spit(blob, good, n - 1));
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("checksum mismatch");
    memcpy(bad, good, n - 32);
    fix_checksum(bad, n - 1); /* drop the last private byte, valid checksum */
    CHECK_OK(spit(blob, bad, n - 1));
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("is not usable");
    /* trailing byte with a valid checksum */
    memcpy(bad, good, n - 32);
    bad[n - 32] = 0;
    fix_checksum(bad, n + 1);
    CHECK_OK(spit(blob, bad, n + 1));
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("trailing bytes");
    /* magic, version */
    memcpy(bad, good, n);
    bad[0] = 'X';
    fix_checksum(bad, n);
    CHECK_OK(spit(blob, bad, n));
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("bad magic");
    memcpy(bad, good, n);
    bad[9] = 2;
    fix_checksum(bad, n);
    CHECK_OK(spit(blob, bad, n));
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("unknown blob version 2");
    /* missing blob, database already sealed: no new KEK is made */
    CHECK(unlink(blob) == 0);
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("is missing, but this database is sealed with an existing KEK");
    CHECK(!kms_file_exists(blob));
    /* restored */
    CHECK_OK(spit(blob, good, n));
    check_reopen(dir, &cfg, &id);
out:
    kms_identity_clear(&id);
    free(good);
    free(bad);
    free(blob);
    st_tmpdir_free(dir);
}

/* Proves: a blob sealed by one TPM does not unseal on another: refused by the recorded storage
 * key name ("sealed by a different TPM"), and, with the name rewritten to the other TPM's, by
 * that TPM itself (Esys_Load integrity check). */
static void test_other_tpm(void)
{
    struct kms_identity id;
    char *dir = sealed_store(&id);
    char *blob = st_path_in(dir, "kek.tpm");
    char *dir_b = st_tmpdir_new("sealtpm");
    char *blob_b = st_path_in(dir_b, "kek.tpm");
    struct kms_seal_cfg cfg_b = cfg_for(&tpm_b, "sha256:16");
    struct kms_store *st = NULL;
    size_t n = 0, nb = 0, name_len, name_len_b;
    uint8_t *a = slurp(blob, &n);
    uint8_t *b;
    uint8_t *mix = NULL;

    CHECK_RC(kms_store_open(dir, &cfg_b, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("was sealed by a different TPM");
    CHECK(st == NULL);
    /* learn tpm_b's storage key name from a blob it made */
    CHECK_OK(kms_store_open(dir_b, &cfg_b, &st));
    kms_store_close(st);
    st = NULL;
    b = slurp(blob_b, &nb);
    CHECK(a != NULL && b != NULL);
    if (a == NULL || b == NULL)
        goto out;
    name_len = (size_t)((a[10] << 8) | a[11]);
    name_len_b = (size_t)((b[10] << 8) | b[11]);
    CHECK(name_len == name_len_b && memcmp(a + 12, b + 12, name_len) != 0);
    mix = malloc(n);
    memcpy(mix, a, n);
    memcpy(mix + 12, b + 12, name_len);
    fix_checksum(mix, n);
    CHECK_OK(spit(blob, mix, n));
    CHECK_RC(kms_store_open(dir, &cfg_b, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("loading the sealed KEK (Esys_Load) failed");
out:
    kms_identity_clear(&id);
    free(a);
    free(b);
    free(mix);
    free(blob);
    free(blob_b);
    st_tmpdir_free(dir);
    st_tmpdir_free(dir_b);
}

/* Searches every file under dir for needle. */
static int found_in_dir(const char *dir, const uint8_t *needle, size_t nlen)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;

    while (d != NULL && !found) {
        char *p;
        uint8_t *data;
        size_t len = 0;

        e = readdir(d);
        if (e == NULL)
            break;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        p = st_path_in(dir, e->d_name);
        data = slurp(p, &len);
        for (size_t i = 0; data != NULL && len >= nlen && i <= len - nlen && !found; i++)
            found = memcmp(data + i, needle, nlen) == 0;
        free(data);
        free(p);
    }
    if (d != NULL)
        closedir(d);
    return found;
}

/* Decrypts the database's KEK check value with kek, as store.c sealed it. */
static int kek_opens_db(const char *dir, const uint8_t kek[32])
{
    char *p = st_path_in(dir, "kms.db");
    const char aad[] = "kmsd:v1:seal/kek_check";
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint8_t pt[64];
    int ok = 0;
    int l = 0;

    if (sqlite3_open(p, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT provider, kek_check FROM seal WHERE id = 1", -1, &s, NULL) ==
            SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW &&
        strcmp((const char *)sqlite3_column_text(s, 0), "tpm") == 0) {
        const uint8_t *b = sqlite3_column_blob(s, 1);
        int n = sqlite3_column_bytes(s, 1);
        int ctl = n - 1 - 12 - 16;

        ok = ctl > 0 && ctl < (int)sizeof(pt) && b[0] == 1 &&
             EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, kek, b + 1) == 1 &&
             EVP_DecryptUpdate(c, NULL, &l, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
             EVP_DecryptUpdate(c, pt, &l, b + 13, ctl) == 1 &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)(b + 13 + ctl)) == 1 &&
             EVP_DecryptFinal_ex(c, pt + l, &l) == 1 && memcmp(pt, "kmsd kek check v1", 17) == 0;
    }
    EVP_CIPHER_CTX_free(c);
    sqlite3_finalize(s);
    sqlite3_close(db);
    free(p);
    return ok;
}

/* Proves: the KEK (as unsealed by the provider, shown to be the database's real KEK by
 * decrypting its check value) appears nowhere under the data directory, raw or in hex, and the
 * same KEK comes back on every unseal. */
static void test_kek_not_on_disk(void)
{
    struct kms_identity id;
    char *dir = sealed_store(&id);
    char *blob = st_path_in(dir, "kek.tpm");
    struct kms_seal_cfg cfg = cfg_for(&tpm_a, "sha256:16");
    uint8_t kek[32], kek2[32];
    char hex[65];
    int created = -1;

    cfg.blob_path = blob;
    CHECK_OK(kms_seal_tpm_kek(&cfg, 0, kek, &created));
    CHECK(created == 0);
    CHECK_OK(kms_seal_tpm_kek(&cfg, 0, kek2, NULL));
    CHECK(memcmp(kek, kek2, 32) == 0);
    CHECK(kek_opens_db(dir, kek));
    CHECK(!found_in_dir(dir, kek, 32));
    kms_hex_encode(kek, 32, hex);
    CHECK(!found_in_dir(dir, (const uint8_t *)hex, 64));
    /* control: the search does find what is there */
    CHECK(found_in_dir(dir, (const uint8_t *)"kmsd-tpm", 8));
    OPENSSL_cleanse(kek, 32);
    OPENSSL_cleanse(kek2, 32);
    kms_identity_clear(&id);
    free(blob);
    st_tmpdir_free(dir);
}

/* Proves: kms_seal_tpm_kek creates a KEK only when asked (may_create) and reports it; a second
 * call unseals the KEK it created; a blob created by another process first is used, not
 * replaced. */
static void test_create_semantics(void)
{
    char *dir = st_tmpdir_new("sealtpm");
    char *blob = st_path_in(dir, "kek.tpm");
    struct kms_seal_cfg cfg = cfg_for(&tpm_a, "sha256:16");
    uint8_t k1[32], k2[32];
    int created = -1;

    cfg.blob_path = blob;
    CHECK_RC(kms_seal_tpm_kek(&cfg, 0, k1, &created), KMS_ERR_NOTFOUND);
    CHECK(created == 0 && !kms_file_exists(blob));
    CHECK_OK(kms_seal_tpm_kek(&cfg, 1, k1, &created));
    CHECK(created == 1);
    CHECK_OK(kms_seal_tpm_kek(&cfg, 1, k2, &created));
    CHECK(created == 0 && memcmp(k1, k2, 32) == 0);
    free(blob);
    st_tmpdir_free(dir);
}

/* Proves: the database records its provider: a tpm-sealed store is refused under "file" and a
 * file-sealed store under "tpm" (KMS_ERR_STORE_SEAL naming both and the --seal to use), and
 * the refused provider creates nothing. */
static void test_provider_mismatch(void)
{
    struct kms_identity id;
    char *dir = sealed_store(&id);
    char *dir2 = st_tmpdir_new("sealtpm");
    char *kekbin = st_path_in(dir, "kek.bin");
    char *blob2 = st_path_in(dir2, "kek.tpm");
    struct kms_seal_cfg file = {.provider = "file"};
    struct kms_seal_cfg tpm = cfg_for(&tpm_a, "sha256:16");
    struct kms_store *st = NULL;

    CHECK_RC(kms_store_open(dir, &file, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("sealed by provider \"tpm\", but provider \"file\" is configured; start kmsd "
                 "with --seal tpm");
    CHECK(!kms_file_exists(kekbin));
    CHECK_OK(kms_store_open(dir2, &file, &st));
    kms_store_close(st);
    st = NULL;
    CHECK_RC(kms_store_open(dir2, &tpm, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("sealed by provider \"file\", but provider \"tpm\" is configured");
    CHECK(!kms_file_exists(blob2));
    kms_identity_clear(&id);
    free(kekbin);
    free(blob2);
    st_tmpdir_free(dir);
    st_tmpdir_free(dir2);
}

/* Proves: the PCR selection is fixed at seal time: a store sealed to sha256:16 still opens when
 * another selection is configured (with a warning), and stays bound to PCR 16, not the newly
 * configured PCR. */
static void test_selection_fixed(void)
{
    struct kms_identity id;
    char *dir = sealed_store(&id);
    struct kms_seal_cfg cfg = cfg_for(&tpm_a, "sha256:23");
    struct kms_store *st = NULL;

    check_reopen(dir, &cfg, &id);
    CHECK(pcr_change(tpm_a.tcti, 23, 1) == 0);
    check_reopen(dir, &cfg, &id);
    CHECK(pcr_change(tpm_a.tcti, 23, 0) == 0);
    CHECK(pcr_change(tpm_a.tcti, TEST_PCR, 1) == 0);
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("changed: sha256:16");
    CHECK(pcr_change(tpm_a.tcti, TEST_PCR, 0) == 0);
    kms_identity_clear(&id);
    st_tmpdir_free(dir);
}

/* Proves: parameter encryption works: everything kmsd exchanges with the TPM while creating,
 * sealing and twice unsealing the KEK (recorded by a proxy on the TPM connection) never holds
 * the KEK in clear (nor the tail half of it). Control: the recording does hold the sealed
 * private blob, which crosses the bus in the Load command. */
static void test_bus_encrypted(void)
{
    char *dir = st_tmpdir_new("sealtpm");
    char *blob = st_path_in(dir, "kek.tpm");
    struct proxy px, ctl; /* the swtpm TCTI also opens port + 1 (control channel) */
    char tcti[128];
    struct kms_seal_cfg cfg = cfg_for(&tpm_a, "sha256:16");
    struct kms_store *st = NULL;
    uint8_t kek[32];
    uint8_t *b = NULL;
    size_t n = 0, off;
    int port = atoi(strrchr(tpm_a.tcti, '=') + 1);
    int mine = kmstest_port_pair();

    memset(&px, 0, sizeof(px));
    if (mine < 0 || proxy_start(&px, mine, port) != 0) {
        CHECK(!"cannot start the proxy");
        goto out;
    }
    if (proxy_start(&ctl, mine + 1, port + 1) != 0) {
        CHECK(!"cannot start the control proxy");
        proxy_stop(&px);
        goto out;
    }
    snprintf(tcti, sizeof(tcti), "swtpm:host=127.0.0.1,port=%d", px.port);
    cfg.tcti = tcti;
    CHECK_OK(kms_store_open(dir, &cfg, &st)); /* creates, seals, unseals back */
    kms_store_close(st);
    st = NULL;
    CHECK_OK(kms_store_open(dir, &cfg, &st)); /* unseals */
    kms_store_close(st);
    proxy_stop(&px);
    proxy_stop(&ctl);
    free(ctl.rec);
    cfg.tcti = tpm_a.tcti; /* unrecorded */
    cfg.blob_path = blob;
    CHECK_OK(kms_seal_tpm_kek(&cfg, 0, kek, NULL));
    CHECK(px.len > 1000);
    CHECK(!mem_has(px.rec, px.len, kek, 32));
    CHECK(!mem_has(px.rec, px.len, kek + 16, 16));
    b = slurp(blob, &n);
    CHECK(b != NULL);
    if (b != NULL) {
        off = blob_section(b, n, 2) + 2 + 2 + 32;
        off += 2 + (size_t)((b[off] << 8) | b[off + 1]); /* private section length field */
        CHECK(mem_has(px.rec, px.len, b + off + 2, (size_t)((b[off] << 8) | b[off + 1])));
    }
out:
    free(px.rec);
    OPENSSL_cleanse(kek, sizeof(kek));
    free(b);
    free(blob);
    st_tmpdir_free(dir);
}

static int run_swtpm(void)
{
    int ra = kmstest_swtpm_start(&tpm_a, tpm_reachable, NULL);
    int rb = ra == 0 ? kmstest_swtpm_start(&tpm_b, tpm_reachable, NULL) : ra;

    if (ra == 77) {
        printf("skip: swtpm not installed\n");
        return 77;
    }
    if (ra != 0 || rb != 0) {
        kmstest_swtpm_stop(&tpm_a);
        kmstest_swtpm_stop(&tpm_b);
        fprintf(stderr, "FAIL: cannot start swtpm\n");
        kms_test_failures++;
        return 1;
    }
    RUN(test_seal_reopen);
    RUN(test_create_semantics);
    RUN(test_pcr_change);
    RUN(test_multi_bank);
    RUN(test_selection_fixed);
    RUN(test_blob_tamper);
    RUN(test_other_tpm);
    RUN(test_kek_not_on_disk);
    RUN(test_bus_encrypted);
    RUN(test_provider_mismatch);
    kmstest_swtpm_stop(&tpm_a);
    kmstest_swtpm_stop(&tpm_b);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "unit";

    kms_log_set_level(KMS_LOG_ERROR); /* KEK creation notices */
    if (strcmp(mode, "swtpm") == 0) {
        if (run_swtpm() == 77)
            return 77;
    } else {
        RUN(test_pcr_spec);
        RUN(test_unreachable_tcti);
    }
    TEST_MAIN_END();
}
