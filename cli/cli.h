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

#endif
