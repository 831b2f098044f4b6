/* Helpers shared by the kmsctl command files: subcommand dispatch, the pinned root CA, the
 * "not verified" notices, hints for URL mistakes, strict hex arguments, JSON output. */
#include <errno.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/crypto/crypto.h"
#include "common/err.h"
#include "common/file.h"
#include "common/hex.h"
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

int kms_cli_load_ca(const char *opt, char **pem)
{
    const char *env = getenv(KMS_CLI_CA_ENV);

    *pem = NULL;
    if (opt != NULL)
        return kms_cli_read_ca(opt, pem);
    if (env != NULL && env[0] != '\0')
        return kms_cli_read_ca(env, pem);
    return 0;
}

void kms_cli_warn_unverified(const char *url)
{
    if (strncmp(url, "https://", 8) == 0)
        fprintf(stderr,
                "kmsctl: WARNING: server certificate of %s NOT verified (no --ca or " KMS_CLI_CA_ENV
                "; pin the cluster root CA with `kmsctl ca pin`)\n",
                url);
    else
        fprintf(stderr, "kmsctl: WARNING: %s is plain HTTP: the answer is NOT authenticated\n",
                url);
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
    } else {
        kms_cli_warn_unverified(url);
    }
    return kms_rpc_call(&o, method, body, resp, NULL);
}

/* ---------------------------------------------------------------- hints */

static int has(const char *s, const char *needle)
{
    return s != NULL && strstr(s, needle) != NULL;
}

const char *kms_cli_hint(const char *url, const char *detail)
{
    int tls = url != NULL && strncmp(url, "https://", 8) == 0;

    if (url != NULL && strncmp(url, "http://", 7) != 0 && !tls)
        return "URLs start with https:// (a serving node) or http:// (a node without keys: "
               "Onboard listener; admin listener)";
    if (tls && (has(detail, "wrong version number") || has(detail, "packet length too long") ||
                has(detail, "record layer failure") || has(detail, "unexpected eof") ||
                has(detail, "SSL_ERROR_SYSCALL") || has(detail, "Connection reset") ||
                has(detail, "SSL connect error")))
        return "the server does not speak TLS there: a node without keys serves Onboard over plain "
               "HTTP (use http://), and the admin listener is plain HTTP too; or is this the "
               "wrong port?";
    if (!tls && (has(detail, "Empty reply from server") || has(detail, "HTTP/0.9") ||
                 has(detail, "Connection reset")))
        return "the server did not answer plain HTTP: a serving kmsd speaks TLS on --listen "
               "(use https://), or this is the wrong port";
    if (has(detail, "Could not connect") || has(detail, "Couldn't connect") ||
        has(detail, "Connection refused") || has(detail, "Failed to connect"))
        return "nothing accepts connections there: is kmsd running, and is this its port "
               "(--listen, --onboard-listen, --admin-listen)?";
    if (has(detail, "resolve host"))
        return "the host name does not resolve: check the URL";
    if (has(detail, "HTTP status 404"))
        return "that server has no such endpoint: wrong port, or a node in another mode (Onboard "
               "is served only before the node has keys, KMS only after)";
    if (has(detail, "self-signed") || has(detail, "does not chain to the pinned CA") ||
        has(detail, "unable to get local issuer"))
        return "the server's certificate was not issued by the cluster root CA you pinned: "
               "another cluster, or someone else answering at that address";
    return NULL;
}

int kms_cli_fail(const char *what, const char *url)
{
    char detail[1024];
    const char *hint;

    snprintf(detail, sizeof(detail), "%s", kms_err_detail());
    fprintf(stderr, "kmsctl: %s: %s\n", what, detail);
    hint = kms_cli_hint(url, detail);
    if (hint != NULL)
        fprintf(stderr, "kmsctl: hint: %s\n", hint);
    return 1;
}

int kms_cli_die(const char *what)
{
    fprintf(stderr, "kmsctl: %s: %s\n", what, kms_err_detail());
    return 1;
}

/* ---------------------------------------------------------------- input, output */

long kms_cli_parse_ms(const char *s)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    return (end != s && *end == '\0' && errno == 0 && v > 0 && v <= 600000) ? v : -1;
}

int kms_cli_hex_arg(const char *what, const char *s, uint8_t *out, size_t n)
{
    size_t len;

    if (s == NULL)
        return kms_err_set(KMS_ERR_INVAL, "%s: missing value", what);
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2;
    len = strlen(s);
    for (size_t i = 0; i < len; i++) {
        if (!isxdigit((unsigned char)s[i]))
            return kms_err_set(KMS_ERR_INVAL, "%s is not hex (bad character at position %zu)", what,
                               i + 1);
    }
    if (len != 2 * n)
        return kms_err_set(KMS_ERR_INVAL,
                           "%s must be %zu bytes: %zu hex digits (0x optional), got %zu", what, n,
                           2 * n, len);
    return kms_hex_decode_exact(s, out, n);
}

void kms_cli_print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);

    printf("%s\n", s != NULL ? s : "null");
    free(s);
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

int kms_cli_ca_spki(const char *pem, uint8_t **der, size_t *len)
{
    X509 *x = NULL;
    unsigned char *p = NULL;
    int n, rc = 0;

    *der = NULL;
    *len = 0;
    KMS_GUARD(kms_cert_from_pem(pem, &x));
    n = i2d_PUBKEY(X509_get0_pubkey(x), &p);
    KMS_ENSURE(n > 0, KMS_ERR_CRYPTO, "cannot encode the CA public key");
    *der = malloc((size_t)n);
    KMS_GUARD_PTR(*der);
    memcpy(*der, p, (size_t)n);
    *len = (size_t)n;
out:
    OPENSSL_free(p);
    X509_free(x);
    return rc;
}

int kms_cli_same_ca(const char *pem_a, const char *pem_b)
{
    uint8_t *a = NULL, *b = NULL;
    size_t an = 0, bn = 0;
    int rc = 0;

    KMS_GUARD(kms_cli_ca_spki(pem_a, &a, &an));
    KMS_GUARD(kms_cli_ca_spki(pem_b, &b, &bn));
    rc = an == bn && memcmp(a, b, an) == 0;
out:
    free(a);
    free(b);
    return rc;
}
