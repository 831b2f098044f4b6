#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int kms_cli_subcommands(const char *family, const char *usage, const struct kms_cli_sub *subs,
                        size_t n, int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(argv[1], subs[i].name) == 0)
            return subs[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "kmsctl: unknown %s command '%s'\n%s", family, argv[1], usage);
    return 2;
}
