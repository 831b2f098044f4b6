/*
 * Fuzz target: disaster-recovery input (storage/backup.c) an operator feeds to `kmsctl
 * backup inspect/restore`: backup files and recovery share lines, both of which may come
 * from anywhere.
 *
 * The whole input goes through kms_backup_inspect (as a file) and kms_backup_share_parse (as
 * text). When it contains the line "--shares--", what precedes it is a backup file and what
 * follows are share lines for kms_backup_open (the seeds are a real 2-of-3 backup made by
 * gen_corpus with its shares).
 *
 * Invariants:
 *  - inspect: KMS_ERR_PARSE / KMS_ERR_TOOBIG or a header within the documented limits;
 *  - share parse: KMS_ERR_BACKUP_SHARE with the share value wiped, or a consistent share
 *    whose value is the one written in the text;
 *  - open: one of the documented codes with the identity cleared, or an identity that passes
 *    the backup's own checks, whose header equals what inspect reads, and which can be backed
 *    up and opened again to the same keys;
 *  - no error detail repeats a share value (no run of more than 16 hex digits: set ids are 16).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "storage/storage.h"

#define SEP "\n--shares--\n"
#define MAX_LINES (4 * KMS_BACKUP_MAX_SHARES + 1) /* one more than open accepts */

static int all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;

    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return 0;
    return 1;
}

static void check_detail_has_no_secret(void)
{
    const char *d = kms_err_detail();
    size_t run = 0;

    for (; *d != '\0'; d++) {
        run = isxdigit((unsigned char)*d) ? run + 1 : 0;
        FUZZ_ASSERT(run <= 16);
    }
}

static void check_info(const struct kms_backup_info *i)
{
    FUZZ_ASSERT(i->version == 1 && i->threshold >= 2 && i->threshold <= i->shares &&
                i->shares <= KMS_BACKUP_MAX_SHARES);
    FUZZ_ASSERT(i->ca_spki_len > 0 && i->ca_spki_len <= KMS_BACKUP_SPKI_MAX);
}

static int str_eq(const char *a, const char *b)
{
    return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

static void check_share(const char *text)
{
    struct kms_backup_share sh;
    char hex[65];
    int rc;

    memset(&sh, 0xa5, sizeof(sh));
    rc = kms_backup_share_parse(text, "fuzz", &sh);
    if (rc < 0) {
        FUZZ_ASSERT(rc == KMS_ERR_BACKUP_SHARE || rc == KMS_ERR_CRYPTO);
        FUZZ_ASSERT(all_zero(sh.y, sizeof(sh.y)));
        check_detail_has_no_secret();
        return;
    }
    FUZZ_ASSERT(sh.threshold >= 2 && sh.threshold <= sh.shares &&
                sh.shares <= KMS_BACKUP_MAX_SHARES && sh.index >= 1 && sh.index <= sh.shares);
    for (size_t i = 0; i < 32; i++) {
        static const char digits[] = "0123456789abcdef";

        hex[2 * i] = digits[sh.y[i] >> 4];
        hex[2 * i + 1] = digits[sh.y[i] & 15];
    }
    hex[64] = '\0';
    FUZZ_ASSERT(strcasestr(text, hex) != NULL);
}

/* What open returned can be backed up again and opened to the same identity. */
static void check_reopen(const struct kms_identity *id)
{
    char *sh[KMS_BACKUP_MAX_SHARES];
    struct kms_identity back;
    uint8_t *file = NULL;
    size_t len = 0;
    int rc = kms_backup_create(id, 2, 2, &file, &len, sh, NULL);

    if (rc == KMS_ERR_NOMEM)
        return;
    FUZZ_ASSERT(rc == 0);
    rc = kms_backup_open(file, len, (const char *const *)sh, NULL, 2, &back, NULL);
    FUZZ_ASSERT(rc == 0 || rc == KMS_ERR_NOMEM);
    if (rc == 0) {
        FUZZ_ASSERT(str_eq(back.root_ca_key_pem, id->root_ca_key_pem) &&
                    str_eq(back.tmp_ca_key_pem, id->tmp_ca_key_pem) &&
                    memcmp(back.root_k256, id->root_k256, 32) == 0 &&
                    str_eq(back.domain, id->domain) &&
                    str_eq(back.bootstrap_info_json, id->bootstrap_info_json));
        kms_identity_clear(&back);
    }
    kms_backup_shares_free(sh, 2);
    free(file);
}

static void check_open(const uint8_t *file, size_t file_len, const uint8_t *text, size_t text_len)
{
    char *buf = malloc(text_len + 1);
    const char *lines[MAX_LINES];
    struct kms_identity id;
    struct kms_backup_info info, seen;
    size_t n = 0;
    int rc;

    FUZZ_ASSERT(buf != NULL);
    memcpy(buf, text, text_len);
    buf[text_len] = '\0';
    for (char *p = buf; n < MAX_LINES && *p != '\0';) {
        char *nl = strchr(p, '\n');

        lines[n++] = p;
        if (nl == NULL)
            break;
        *nl = '\0';
        p = nl + 1;
    }
    memset(&id, 0xa5, sizeof(id));
    rc = kms_backup_open(file, file_len, lines, NULL, n, &id, &info);
    if (rc < 0) {
        FUZZ_ASSERT(rc == KMS_ERR_PARSE || rc == KMS_ERR_TOOBIG || rc == KMS_ERR_INVAL ||
                    rc == KMS_ERR_BACKUP_SHARE || rc == KMS_ERR_BACKUP_SET ||
                    rc == KMS_ERR_BACKUP_THRESHOLD || rc == KMS_ERR_BACKUP_AUTH ||
                    rc == KMS_ERR_VERIFY || rc == KMS_ERR_NOMEM || rc == KMS_ERR_CRYPTO);
        FUZZ_ASSERT(id.root_ca_key_pem == NULL && id.tmp_ca_key_pem == NULL && id.domain == NULL &&
                    id.bootstrap_info_json == NULL && id.rpc_key_pem == NULL && id.origin == NULL);
        check_detail_has_no_secret();
        free(buf);
        return;
    }
    check_info(&info);
    FUZZ_ASSERT(kms_backup_inspect(file, file_len, &seen) == 0);
    FUZZ_ASSERT(memcmp(&seen, &info, sizeof(info)) == 0);
    FUZZ_ASSERT(id.root_ca_key_pem != NULL && id.tmp_ca_key_pem != NULL && id.domain != NULL &&
                id.domain[0] != '\0' && id.rpc_key_pem == NULL && id.origin == NULL);
    check_reopen(&id);
    kms_identity_clear(&id);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_backup_info info;
    const uint8_t *sep;
    int rc;

    if (size > 64 * 1024)
        return 0; /* the format's interesting part is small; keep runs fast */
    memset(&info, 0, sizeof(info));
    rc = kms_backup_inspect(data, size, &info);
    if (rc == 0)
        check_info(&info);
    else
        FUZZ_ASSERT(rc == KMS_ERR_PARSE || rc == KMS_ERR_TOOBIG ||
                    (rc == KMS_ERR_INVAL && data == NULL));

    if (size <= 2 * KMS_BACKUP_SHARE_TEXT_MAX) {
        char text[2 * KMS_BACKUP_SHARE_TEXT_MAX + 1];

        memcpy(text, data, size);
        text[size] = '\0';
        check_share(text);
    }

    sep = memmem(data, size, SEP, sizeof(SEP) - 1);
    if (sep != NULL) {
        size_t flen = (size_t)(sep - data);
        size_t off = flen + sizeof(SEP) - 1;

        check_open(data, flen, data + off, size - off);
    }
    return 0;
}
