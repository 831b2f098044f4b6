/* kmsctl ca pin: fetches a node's cluster root CA once (trust on first use, or checked against
 * the ca_pubkey Bootstrap printed), proves the node's TLS certificate chains to it, and writes
 * it to a file that --ca / $KMSCTL_CA then pin. A file that already pins another CA is never
 * replaced silently. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/crypto/crypto.h"
#include "common/file.h"
#include "common/hex.h"
#include "replication/replication.h"

static const char ca_usage[] =
    "Usage: kmsctl ca pin --kms URL --out FILE [--ca-pubkey HEX] [--force] [--json]\n"
    "                     [--timeout-ms MS]\n"
    "\n"
    "Pins the cluster's root CA for later commands (--ca FILE or KMSCTL_CA=FILE):\n"
    "  1. asks the node at URL for its root CA (GetTempCaCert.ca_cert). This first answer is\n"
    "     not authenticated: trust on first use, unless --ca-pubkey is given;\n"
    "  2. --ca-pubkey HEX: the CA's public key must equal it (the ca_pubkey that `kmsctl\n"
    "     bootstrap` printed, or GetMeta.ca_pubkey read from a node you trust; 0x optional);\n"
    "  3. calls GetMeta over TLS pinned to that CA: the node's certificate must chain to it and\n"
    "     GetMeta.ca_pubkey must be the CA's key;\n"
    "  4. writes the CA (PEM) to FILE. When FILE already pins a CA with another key, nothing is\n"
    "     written and kmsctl fails (a different cluster, or someone in the middle), unless\n"
    "     --force (only after re-creating the cluster deliberately).\n"
    "It prints the CA's SHA-256 fingerprint and public key: without --ca-pubkey, compare them\n"
    "out of band. --json prints {url, out, sha256, ca_pubkey, ca_pubkey_checked, unchanged}.\n"
    "Exit status: 0 pinned (or unchanged), 1 error or mismatch, 2 usage.\n";

/* SHA-256 of the certificate DER as colon-free hex (65 bytes with NUL). */
static int cert_sha256(const char *pem, char out[65])
{
    X509 *x = NULL;
    unsigned char *der = NULL, md[32];
    int n, rc = 0;

    KMS_GUARD(kms_cert_from_pem(pem, &x));
    n = i2d_X509(x, &der);
    KMS_ENSURE(n > 0, KMS_ERR_CRYPTO, "cannot encode the CA certificate");
    SHA256(der, (size_t)n, md);
    kms_hex_encode(md, 32, out);
out:
    OPENSSL_free(der);
    X509_free(x);
    return rc;
}

struct pin_result {
    char sha[65];
    char *pubkey_hex; /* 0x-hex SPKI */
    int unchanged;
};

static int pin(const char *url, const char *out_path, const char *want_hex, int force,
               long timeout_ms, struct pin_result *res)
{
    struct kms_rpc_opts o;
    json_t *tmp = NULL, *meta = NULL;
    const char *ca;
    uint8_t *spki = NULL, *want = NULL, *meta_pub = NULL, *old = NULL;
    size_t spki_len = 0, want_len = 0, meta_len = 0, old_len = 0;
    char *old_pem = NULL;
    int rc = 0;

    if (want_hex != NULL) {
        rc = kms_hex_decode(want_hex, &want, &want_len);
        KMS_ENSURE(rc == 0 && want_len > 0, KMS_ERR_INVAL,
                   "--ca-pubkey must be the CA public key in hex (ca_pubkey of Bootstrap)");
    }
    memset(&o, 0, sizeof(o));
    o.url = url;
    o.timeout_ms = timeout_ms;
    fprintf(stderr, "kmsctl: asking %s for its root CA (first contact, not authenticated%s)\n", url,
            want != NULL ? ": checked against --ca-pubkey next" : ": trust on first use");
    KMS_GUARD(kms_rpc_call(&o, "GetTempCaCert", NULL, &tmp, NULL));
    ca = json_string_value(json_object_get(tmp, "ca_cert"));
    KMS_ENSURE(ca != NULL, KMS_ERR_PARSE, "GetTempCaCert answer has no ca_cert");
    KMS_GUARD(kms_cli_ca_spki(ca, &spki, &spki_len));
    if (want != NULL)
        KMS_ENSURE(want_len == spki_len && memcmp(want, spki, spki_len) == 0, KMS_ERR_VERIFY,
                   "the node's root CA public key is not --ca-pubkey: another cluster, or someone "
                   "else answering at %s; nothing pinned",
                   url);
    KMS_GUARD(kms_cli_rpc(url, ca, timeout_ms, "GetMeta", NULL, &meta));
    KMS_GUARD(kms_prpc_get_bytes(meta, "ca_pubkey", &meta_pub, &meta_len));
    KMS_ENSURE(meta_len == spki_len && memcmp(meta_pub, spki, spki_len) == 0, KMS_ERR_VERIFY,
               "GetMeta.ca_pubkey is not the key of the CA the node sent; nothing pinned");
    KMS_GUARD(cert_sha256(ca, res->sha));
    res->pubkey_hex = kms_hex_dup(spki, spki_len, 1);
    KMS_GUARD_PTR(res->pubkey_hex);
    if (access(out_path, F_OK) == 0) {
        KMS_GUARD(kms_cli_read_ca(out_path, &old_pem));
        KMS_GUARD(kms_cli_ca_spki(old_pem, &old, &old_len));
        if (old_len == spki_len && memcmp(old, spki, spki_len) == 0) {
            res->unchanged = 1;
            goto out;
        }
        KMS_ENSURE(force, KMS_ERR_VERIFY,
                   "%s already pins ANOTHER root CA than %s presents (sha256 %s): a different "
                   "cluster, or someone in the middle; nothing written (use --force only after "
                   "re-creating the cluster deliberately)",
                   out_path, url, res->sha);
    }
    KMS_GUARD(kms_file_write_atomic(out_path, ca, strlen(ca), 0644));
out:
    json_decref(tmp);
    json_decref(meta);
    free(spki);
    free(want);
    free(meta_pub);
    free(old);
    free(old_pem);
    return rc;
}

static int cmd_pin(int argc, char **argv)
{
    static const struct option opts[] = {{"kms", required_argument, NULL, 'k'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"ca-pubkey", required_argument, NULL, 'p'},
                                         {"force", no_argument, NULL, 'f'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"timeout-ms", required_argument, NULL, 'T'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *url = NULL, *out_path = NULL, *want = NULL;
    int force = 0, as_json = 0, c;
    long timeout_ms = 10000;
    struct pin_result res;

    memset(&res, 0, sizeof(res));
    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'k':
            url = optarg;
            break;
        case 'o':
            out_path = optarg;
            break;
        case 'p':
            want = optarg;
            break;
        case 'f':
            force = 1;
            break;
        case 'j':
            as_json = 1;
            break;
        case 'T':
            timeout_ms = kms_cli_parse_ms(optarg);
            break;
        case 'h':
            fputs(ca_usage, stdout);
            return 0;
        default:
            fputs(ca_usage, stderr);
            return 2;
        }
    }
    if (url == NULL || out_path == NULL || optind != argc || timeout_ms <= 0) {
        fputs(ca_usage, stderr);
        return 2;
    }
    if (pin(url, out_path, want, force, timeout_ms, &res) < 0) {
        free(res.pubkey_hex);
        return kms_cli_fail("ca pin", url);
    }
    if (as_json) {
        json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:b,s:b}", "url", url, "out", out_path, "sha256",
                              res.sha, "ca_pubkey", res.pubkey_hex, "ca_pubkey_checked",
                              want != NULL, "unchanged", res.unchanged);

        kms_cli_print_json(o);
        json_decref(o);
    } else {
        printf("%s root CA of %s in %s\n", res.unchanged ? "already pinned:" : "pinned", url,
               out_path);
        printf("  sha256 (certificate): %s\n  ca_pubkey:            %s\n", res.sha, res.pubkey_hex);
        printf("  %s\n", want != NULL ? "checked against --ca-pubkey"
                                      : "NOT checked against Bootstrap's ca_pubkey (trust on "
                                        "first use): compare the values above out of band");
    }
    free(res.pubkey_hex);
    return 0;
}

int kms_cli_ca(int argc, char **argv)
{
    static const struct kms_cli_sub subs[] = {{"pin", cmd_pin}};

    return kms_cli_subcommands("ca", ca_usage, subs, 1, argc, argv);
}
