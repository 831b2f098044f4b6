/*
 * An empty keystore next to an existing KEK (issue 10): a 0-byte kms.db beside kek.bin (or a
 * TPM-sealed kek.tpm) is refused at open, at every start, with a message that says to restore
 * or to remove the KEK deliberately, instead of starting a new empty node that a Bootstrap
 * would give a second identity. What stays accepted: a KEK with no kms.db at all (an operator-
 * provided KEK for a new node), a 0-byte kms.db without a KEK (a first start cut short), and
 * a 0-byte kms.db whose WAL still holds the data.
 */
#include <fcntl.h>
#include <unistd.h>

#include "storage_testutil.h"
#include "test.h"

static int touch(const char *dir, const char *name, size_t len)
{
    char *p = st_path_in(dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    uint8_t b[32] = {1};
    int ok = fd >= 0 && (len == 0 || write(fd, b, len) == (ssize_t)len);

    if (fd >= 0)
        close(fd);
    free(p);
    return ok ? 0 : -1;
}

static void rm_in(const char *dir, const char *name)
{
    char *p = st_path_in(dir, name);

    (void)unlink(p);
    free(p);
}

/* Proves: keys saved, kms.db truncated to 0 bytes: refused (twice: nothing was written), with
 * the restore/remove advice; after the KEK is removed deliberately, a new empty node opens. */
static void test_truncated_db_refused(void)
{
    char *dir = st_tmpdir_new("emptyks");
    struct kms_store *st = NULL;
    struct kms_identity id, got;

    st_make_identity(&id, "kms.example", 1, 0);
    CHECK_OK(kms_store_open(dir, NULL, &st));
    CHECK_OK(kms_store_save_identity(st, &id));
    kms_store_close(st);
    st = NULL;
    CHECK(touch(dir, "kms.db", 0) == 0);
    rm_in(dir, "kms.db-wal");
    rm_in(dir, "kms.db-shm");
    for (int i = 0; i < 2; i++) {
        CHECK_RC(kms_store_open(dir, NULL, &st), KMS_ERR_STORE_SEAL);
        CHECK(st == NULL);
        CHECK_DETAIL("is empty (0 bytes) but a KEK exists at");
        CHECK_DETAIL("kek.bin");
        CHECK_DETAIL("Restore kms.db from a backup");
        CHECK_DETAIL("remove");
    }
    rm_in(dir, "kek.bin");
    CHECK_OK(kms_store_open(dir, NULL, &st));
    memset(&got, 0, sizeof(got));
    CHECK_RC(kms_store_load_identity(st, &got), KMS_ERR_STORE_MISSING);
    kms_store_close(st);
    kms_identity_clear(&id);
    kms_identity_clear(&got);
    st_tmpdir_free(dir);
}

/* Proves: with the "tpm" provider a 0-byte kms.db beside kek.tpm is refused the same way,
 * before any TPM is contacted (the TCTI here points nowhere). */
static void test_truncated_db_tpm(void)
{
    char *dir = st_tmpdir_new("emptyks");
    struct kms_seal_cfg cfg = {0};
    struct kms_store *st = NULL;

    cfg.provider = "tpm";
    cfg.tcti = "swtpm:host=127.0.0.1,port=1";
    CHECK(touch(dir, "kms.db", 0) == 0);
    CHECK(touch(dir, "kek.tpm", 32) == 0);
    CHECK_RC(kms_store_open(dir, &cfg, &st), KMS_ERR_STORE_SEAL);
    CHECK_DETAIL("kek.tpm");
    CHECK_DETAIL("is empty (0 bytes)");
    st_tmpdir_free(dir);
}

/* Proves: what stays accepted: an operator-provided KEK without kms.db; a 0-byte kms.db
 * without a KEK. */
static void test_still_accepted(void)
{
    char *d1 = st_tmpdir_new("emptyks");
    char *d2 = st_tmpdir_new("emptyks");
    struct kms_store *st = NULL;

    CHECK(touch(d1, "kek.bin", 32) == 0);
    CHECK_OK(kms_store_open(d1, NULL, &st));
    kms_store_close(st);
    st = NULL;
    CHECK(touch(d2, "kms.db", 0) == 0);
    CHECK_OK(kms_store_open(d2, NULL, &st));
    kms_store_close(st);
    st_tmpdir_free(d1);
    st_tmpdir_free(d2);
}

int main(void)
{
    RUN(test_truncated_db_refused);
    RUN(test_truncated_db_tpm);
    RUN(test_still_accepted);
    TEST_MAIN_END();
}
