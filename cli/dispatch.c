#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/crypto/crypto.h"
#include "common/err.h"
#include "common/file.h"
#include "replication/replication.h"

#define CA_MAX_BYTES (64u * 1024u)

int kms_cli_read_ca(const char *path, char **pem)
{
    uint8_t *data = NULL;
    size_t len = 0;
    X509 *x = NULL;
    int rc = 0;

    *pem = NULL;
    KMS_GUARD(kms_file_read(path, CA_MAX_BYTES, &data, &len));
    *pem = malloc(len + 1);
    KMS_GUARD_PTR(*pem);
    memcpy(*pem, data, len);
    (*pem)[len] = '\0';
    rc = kms_cert_from_pem(*pem, &x);
    KMS_ENSURE(rc == 0, KMS_ERR_PARSE, "--ca %s is not a PEM certificate", path);
out:
    X509_free(x);
    free(data);
    if (rc < 0) {
        free(*pem);
        *pem = NULL;
    }
    return rc;
}

/* The chain to ca_pem is checked by the RPC client before this runs. */
static int chain_only(void *arg, X509 *leaf)
{
    (void)arg;
    (void)leaf;
    return 0;
}

int kms_cli_rpc(const char *url, const char *ca_pem, long timeout_ms, const char *method,
                const char *body, json_t **resp)
{
    struct kms_rpc_opts o;

    memset(&o, 0, sizeof(o));
    o.url = url;
    o.timeout_ms = timeout_ms;
    if (ca_pem != NULL) {
        o.ca_pem = ca_pem;
        o.no_host_check = 1;
        o.server_check = chain_only;
    } else if (strncmp(url, "https://", 8) == 0) {
        fprintf(stderr, "kmsctl: WARNING: server certificate of %s NOT verified (no --ca given)\n",
                url);
    }
    return kms_rpc_call(&o, method, body, resp, NULL);
}

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
