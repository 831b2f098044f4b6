/* kmsctl internals shared by the command files. */
#ifndef KMS_CLI_CLI_H
#define KMS_CLI_CLI_H

#include <stddef.h>

struct kms_cli_sub {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
};

/* `kmsctl FAMILY SUB ...`: runs the matching subcommand. No subcommand: usage on stderr, 2;
 * --help/-h: usage on stdout, 0; an unknown one: a message naming it plus usage, 2. */
int kms_cli_subcommands(const char *family, const char *usage, const struct kms_cli_sub *subs,
                        size_t n, int argc, char **argv);

/* The command families (argv[0] is the family name; each handles --help). */
int kms_cli_admin(int argc, char **argv);   /* cli/admin_cmd.c: a node's Admin service */
int kms_cli_nitro(int argc, char **argv);   /* cli/nitro_cmd.c: nitro measure (EIF PCRs) */
int kms_cli_attest(int argc, char **argv);  /* cli/attest_cmd.c: verify evidence */
int kms_cli_audit(int argc, char **argv);   /* cli/backup_cmd.c: the keystore's audit log */
int kms_cli_backup(int argc, char **argv);  /* cli/backup_cmd.c: backup and restore */
int kms_cli_chain(int argc, char **argv);   /* cli/chain_cmd.c: on-chain policy */
int kms_cli_cluster(int argc, char **argv); /* cli/cluster_cmd.c: cluster status, identity */
int kms_cli_image(int argc, char **argv);   /* cli/image_cmd.c: OS-image measurement manifests */

#endif
