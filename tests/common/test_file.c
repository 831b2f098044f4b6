/* common/file: the one atomic-file writer (replace and no-replace publishing). */
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file.h"
#include "test.h"

static char g_dir[64];

/* Number of directory entries other than . and .. (temp files left behind show up here). */
static int entries(void)
{
    DIR *d = opendir(g_dir);
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    for (e = readdir(d); e != NULL; e = readdir(d))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static int content_is(const char *path, const char *want)
{
    uint8_t *b = NULL;
    size_t n = 0;
    int ok;

    if (kms_file_read(path, 1024, &b, &n) < 0)
        return 0;
    ok = n == strlen(want) && memcmp(b, want, n) == 0;
    free(b);
    return ok;
}

static mode_t mode_of(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (st.st_mode & 07777) : (mode_t)-1;
}

/* Proves: the file gets exactly the requested mode whatever the umask, a second write replaces
 * it (with the new mode), and no temp file is left in the directory. */
static void test_replace(void)
{
    char p[128];
    mode_t old = umask(077);

    snprintf(p, sizeof(p), "%s/a", g_dir);
    CHECK_OK(kms_file_write_atomic(p, "one", 3, 0640));
    CHECK(content_is(p, "one"));
    CHECK(mode_of(p) == 0640);
    CHECK_OK(kms_file_write_atomic(p, "second", 6, 0600));
    CHECK(content_is(p, "second"));
    CHECK(mode_of(p) == 0600);
    CHECK_OK(kms_file_write_atomic(p, NULL, 0, 0600)); /* empty file */
    CHECK(content_is(p, ""));
    CHECK(entries() == 1);
    umask(old);
    unlink(p);
}

/* Proves: KMS_FILE_NOREPLACE creates a missing file but never replaces one (KMS_ERR_EXISTS,
 * content kept), and removes its temp file either way. */
static void test_noreplace(void)
{
    char p[128];

    snprintf(p, sizeof(p), "%s/kek", g_dir);
    CHECK_OK(kms_file_write_atomic_ex(p, "first", 5, 0600, KMS_FILE_NOREPLACE));
    CHECK(content_is(p, "first") && mode_of(p) == 0600);
    CHECK_RC(kms_file_write_atomic_ex(p, "other", 5, 0600, KMS_FILE_NOREPLACE), KMS_ERR_EXISTS);
    CHECK_DETAIL("already exists");
    CHECK(content_is(p, "first"));
    CHECK(entries() == 1);
    unlink(p);
}

/* Proves: a missing directory and an over-long path fail with clear errors and leave nothing. */
static void test_errors(void)
{
    char p[128];
    char *longp = malloc(5000);

    snprintf(p, sizeof(p), "%s/missing/x", g_dir);
    CHECK_RC(kms_file_write_atomic(p, "x", 1, 0600), KMS_ERR_IO);
    CHECK_DETAIL("cannot create temp file for");
    CHECK_RC(kms_file_write_atomic_ex(p, "x", 1, 0600, KMS_FILE_NOREPLACE), KMS_ERR_IO);
    CHECK(longp != NULL);
    if (longp != NULL) {
        memset(longp, 'a', 4999);
        longp[0] = '/';
        longp[4999] = '\0';
        CHECK_RC(kms_file_write_atomic(longp, "x", 1, 0600), KMS_ERR_INVAL);
        CHECK_DETAIL("path too long");
    }
    free(longp);
    CHECK(entries() == 0);
}

int main(void)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/kms-test-file-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return 2;
    RUN(test_replace);
    RUN(test_noreplace);
    RUN(test_errors);
    rmdir(g_dir);
    TEST_MAIN_END();
}
