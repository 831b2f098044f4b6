/* kmsctl keystore import-dstack: a dstack KMS key directory into a kmsd keystore. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/file.h"
#include "common/hex.h"
#include "storage/storage.h"

static const char import_usage[] =
    "Usage: kmsctl keystore import-dstack --data-dir DIR [--domain NAME] [--kek-file PATH] "
    "[--json] SRC_DIR\n"
    "\n"
    "Imports the root keys of a dstack KMS (root-ca.key, tmp-ca.key, root-k256.key, and\n"
    "rpc-domain / bootstrap-info.json when present) from SRC_DIR into the kmsd keystore in\n"
    "DIR, sealed. The node then serves the same apps with the same keys. Refused when the\n"
    "keystore already holds keys. --domain overrides rpc-domain. --json prints\n"
    "{imported_from, data_dir, domain}. Exit status: 0 imported, 1 error, 2 usage.\n";

static int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data-dir", required_argument, NULL, 'd'}, {"domain", required_argument, NULL, 'n'},
        {"kek-file", required_argument, NULL, 'k'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    const char *data_dir = NULL, *domain = NULL, *kek = NULL;
    struct kms_seal_cfg seal = {.provider = "file"};
    struct kms_store *st = NULL;
    struct kms_identity id;
    int c, rc, as_json = 0;

    memset(&id, 0, sizeof(id));
    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'd':
            data_dir = optarg;
            break;
        case 'n':
            domain = optarg;
            break;
        case 'k':
            kek = optarg;
            break;
        case 'j':
            as_json = 1;
            break;
        case 'h':
            fputs(import_usage, stdout);
            return 0;
        default:
            fputs(import_usage, stderr);
            return 2;
        }
    }
    if (data_dir == NULL || optind + 1 != argc) {
        fputs(import_usage, stderr);
        return 2;
    }
    seal.kek_path = kek;
    if (kms_dstack_read_dir(argv[optind], &id) < 0)
        return kms_cli_die("cannot read the dstack key directory");
    if (domain != NULL) {
        free(id.domain);
        id.domain = strdup(domain);
    }
    if (id.domain == NULL || id.domain[0] == '\0') {
        kms_identity_clear(&id);
        fprintf(stderr, "kmsctl: no rpc-domain in %s: pass --domain NAME\n", argv[optind]);
        return 2;
    }
    rc = kms_mkdir_p(data_dir, 0700);
    if (rc == 0)
        rc = kms_store_open(data_dir, &seal, &st);
    if (rc == 0)
        rc = kms_store_save_identity(st, &id);
    if (rc == 0 && kms_store_audit(st, "Import", "ok", argv[optind]) < 0)
        rc = -1;
    if (rc == 0 && as_json) {
        json_t *o = json_pack("{s:s,s:s,s:s}", "imported_from", argv[optind], "data_dir", data_dir,
                              "domain", id.domain);

        kms_cli_print_json(o);
        json_decref(o);
    } else if (rc == 0) {
        printf("imported root keys from %s into %s\n", argv[optind], data_dir);
    }
    kms_identity_clear(&id);
    kms_store_close(st);
    if (rc < 0)
        return kms_cli_die("import failed");
    return 0;
}

/* `keystore SUBCOMMAND`: import-dstack is the only one so far. */
int kms_cli_keystore(int argc, char **argv)
{
    int help = argc >= 2 && strcmp(argv[1], "--help") == 0;

    if (argc >= 2 && strcmp(argv[1], "import-dstack") == 0)
        return cmd_import(argc - 1, argv + 1);
    fputs(import_usage, help ? stdout : stderr);
    return help ? 0 : 2;
}
