/* kmsctl: operator and client CLI for kmsd (and any dstack-compatible KMS).
 *
 * Built two ways: the full CLI, and with KMSCTL_ENCLAVE (the static kmsctl of -DKMSCTL_STATIC=ON,
 * docs/nitro-enclave.md) only the commands an enclave or CVM image needs, so that the static
 * binary links none of the storage, chain or TPM code (nor their libraries). */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/secmem.h"
#include "common/version.h"

#ifdef KMSCTL_ENCLAVE
#define BUILD_NOTE                                                                                 \
    "\nThis is the static kmsctl for enclave and CVM images (-DKMSCTL_STATIC=ON): it has the\n"    \
    "commands above only, and no --tee gcp-tdx (tpm2-tss is not linked).\n"
#else
#define BUILD_NOTE ""
#endif

static const char main_usage[] =
    "Usage: kmsctl COMMAND [OPTIONS]   (kmsctl COMMAND --help for details)\n"
    "       kmsctl --version\n"
    "\n"
    "Commands:\n"
#ifndef KMSCTL_ENCLAVE
    "  bootstrap       bootstrap the root keys of a new cluster on a node without keys\n"
    "  onboard         make a node without keys join a running cluster\n"
#endif
    "  get-keys        fetch an app's keys over RA-TLS (the dstack client flow)\n"
    "  meta            print a node's GetMeta\n"
    "  ca pin          fetch a node's root CA once, check it, and pin it in a file (--ca)\n"
#ifndef KMSCTL_ENCLAVE
    "  keystore import-dstack   import a dstack KMS key directory into a kmsd keystore\n"
    "  chain           on-chain policy administration (DstackKms / DstackApp)\n"
    "  cluster         cluster status and identity verification across nodes\n"
    "  attest          verify evidence (attest verify --evidence FILE)\n"
    /* disaster recovery (cli/backup_cmd.c) */
    "  backup          encrypted identity backup with M-of-N recovery shares; restore\n"
    "  audit           verify / show the keystore's hash-chained audit log\n"
    "  admin           a node's Admin service: peers, add-peer, remove-peer, audit-head\n"
#endif
    "  nitro measure   PCR0/1/2 and OS_IMAGE_HASH of an AWS Nitro Enclave image (EIF)\n"
#ifndef KMSCTL_ENCLAVE
    "  image manifest  an OS image's measurement manifest for kmsd's plain-TDX image check\n"
#endif
    "\n"
    "TLS: commands that talk to a serving node (meta, get-keys, cluster, admin over https) verify\n"
    "its certificate against the cluster root CA given with --ca FILE or $KMSCTL_CA (write it\n"
    "once with `kmsctl ca pin`); without one they say on stderr that nothing was verified.\n"
    "Every command prints a result with --json (JSON on stdout); progress and warnings go to\n"
    "stderr. Exit status: 0 success, 1 error, 2 usage; `cluster status` and `chain` add their\n"
    "own (see their --help).\n" BUILD_NOTE;

static const struct kms_cli_sub commands[] = {
    {"get-keys", kms_cli_get_keys},
    {"meta", kms_cli_meta},
    {"ca", kms_cli_ca},
    {"nitro", kms_cli_nitro},
#ifndef KMSCTL_ENCLAVE
    {"bootstrap", kms_cli_bootstrap},
    {"onboard", kms_cli_onboard},
    {"keystore", kms_cli_keystore},
    {"chain", kms_cli_chain},
    {"cluster", kms_cli_cluster},
    {"attest", kms_cli_attest},
    {"backup", kms_cli_backup}, /* disaster recovery */
    {"audit", kms_cli_audit},
    {"admin", kms_cli_admin},
    {"image", kms_cli_image}, /* osimage */
#endif
};

int main(int argc, char **argv)
{
    int rc;

    if (argc >= 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0)) {
        printf("kmsctl %s\n", KMS_VERSION_STRING);
        return 0;
    }
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(main_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) != 0)
            continue;
        kms_secmem_install_jansson();
        curl_global_init(CURL_GLOBAL_DEFAULT);
        rc = commands[i].run(argc - 1, argv + 1);
        curl_global_cleanup();
        return rc;
    }
    fprintf(stderr, "kmsctl: unknown command '%s'\n%s", argv[1], main_usage);
    return 2;
}
