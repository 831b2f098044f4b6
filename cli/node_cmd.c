/* kmsctl bootstrap, onboard and meta: a node's Onboard listener and its GetMeta. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "common/hex.h"
#include "replication/replication.h"

/* A pRPC call to a node's plain-HTTP Onboard listener (no TLS: a node without keys has no
 * certificate; the commands say so on stderr). */
static int plain_call(const char *url, const char *method, const char *body, json_t **resp)
{
    struct kms_rpc_opts o;

    memset(&o, 0, sizeof(o));
    o.url = url;
    o.timeout_ms = 30000;
    return kms_rpc_call(&o, method, body, resp, NULL);
}

static const char bootstrap_usage[] =
    "Usage: kmsctl bootstrap --onboard-url URL --domain NAME [--no-finish] [--json]\n"
    "\n"
    "Calls Onboard.Bootstrap on a node without keys (generates the cluster's root keys), prints\n"
    "the bootstrap info (JSON: root CA public key, k256 public key, attestation; --json is\n"
    "accepted for uniformity), then calls GET /finish so the node starts serving. Progress lines\n"
    "go to stderr. The Onboard listener is plain HTTP (a node without keys has no certificate):\n"
    "its answer is not authenticated, which kmsctl says on stderr. Afterwards pin the new root\n"
    "CA with `kmsctl ca pin --kms https://HOST:PORT --ca-pubkey CA_PUBKEY --out root-ca.pem`\n"
    "(CA_PUBKEY: the ca_pubkey printed here).\n"
    "Exit status: 0 done, 1 refused or unreachable, 2 usage.\n";

static const char onboard_usage[] =
    "Usage: kmsctl onboard --onboard-url URL --source KMS_URL --domain NAME [--no-finish] "
    "[--json]\n"
    "\n"
    "Calls Onboard.Onboard on a node without keys: it pulls the cluster identity from the\n"
    "running KMS at KMS_URL over mutually attested TLS, then GET /finish. Prints the answer\n"
    "(JSON: the cluster's k256 public key) on stdout and a progress line per step on stderr.\n"
    "The Onboard listener is plain HTTP (not authenticated, said on stderr); the node itself\n"
    "authenticates the source by its attestation.\n"
    "Exit status: 0 done, 1 refused or unreachable, 2 usage.\n";

static int finish(const char *url)
{
    json_t *r = NULL;
    int rc = plain_call(url, "Finish", NULL, &r);

    json_decref(r);
    return rc;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static int bootstrap_onboard(int argc, char **argv, int onboard)
{
    static const struct option opts[] = {{"onboard-url", required_argument, NULL, 'u'},
                                         {"domain", required_argument, NULL, 'd'},
                                         {"source", required_argument, NULL, 's'},
                                         {"no-finish", no_argument, NULL, 'n'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *url = NULL, *domain = NULL, *source = NULL;
    const char *usage = onboard ? onboard_usage : bootstrap_usage;
    const char *what = onboard ? "Onboard" : "Bootstrap";
    int no_finish = 0, c, rc, steps;
    json_t *req, *resp = NULL;
    struct timespec t0, t1;
    char *body;

    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'u':
            url = optarg;
            break;
        case 'd':
            domain = optarg;
            break;
        case 's':
            source = optarg;
            break;
        case 'n':
            no_finish = 1;
            break;
        case 'j':
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (url == NULL || domain == NULL || (onboard && source == NULL) || optind != argc) {
        fputs(usage, stderr);
        return 2;
    }
    steps = no_finish ? 1 : 2;
    kms_cli_warn_unverified(url);
    req = onboard ? json_pack("{s:s,s:s}", "source_url", source, "domain", domain)
                  : json_pack("{s:s}", "domain", domain);
    body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (onboard)
        fprintf(stderr,
                "kmsctl: [1/%d] Onboard: %s pulls the cluster keys from %s over attested TLS "
                "(up to 30 s)...\n",
                steps, url, source);
    else
        fprintf(stderr, "kmsctl: [1/%d] Bootstrap: %s generates the root keys for domain %s...\n",
                steps, url, domain);
    rc = plain_call(url, what, body, &resp);
    free(body);
    if (rc < 0)
        return kms_cli_fail(onboard ? "onboard failed" : "bootstrap failed", url);
    fprintf(stderr, "kmsctl: [1/%d] done in %.1f s: %s\n", steps, seconds_since(&t0),
            onboard ? "keys received and stored" : "root keys generated and stored");
    kms_cli_print_json(resp);
    fflush(stdout);
    json_decref(resp);
    if (!no_finish) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        fprintf(stderr, "kmsctl: [2/2] Finish: the node leaves onboarding and starts serving...\n");
        if (finish(url) < 0)
            return kms_cli_fail("finish failed", url);
        fprintf(stderr,
                "kmsctl: [2/2] done in %.1f s: the node now serves KMS over TLS on its --listen "
                "address (https://)\n",
                seconds_since(&t1));
    } else {
        fprintf(stderr, "kmsctl: not finished (--no-finish): call GET %s/finish when ready\n", url);
    }
    return 0;
}

/* ---------------------------------------------------------------- meta */

static const char meta_usage[] =
    "Usage: kmsctl meta --kms URL [--ca FILE] [--json] [--timeout-ms MS]\n"
    "\n"
    "Prints KMS.GetMeta of the node (JSON, always; --json is accepted for uniformity), with\n"
    "\"server_verified\": whether its TLS certificate was checked against the root CA.\n"
    "  --ca FILE        the cluster's root CA (PEM; `kmsctl ca pin` writes it). The server\n"
    "                   certificate must chain to it, or kmsctl fails. Default: $KMSCTL_CA.\n"
    "                   Without either the certificate is NOT verified (said on stderr).\n"
    "  --timeout-ms MS  timeout of the request (default 30000)\n"
    "Exit status: 0 answered, 1 error (unreachable, certificate refused), 2 usage.\n";

int kms_cli_meta(int argc, char **argv)
{
    static const struct option opts[] = {
        {"kms", required_argument, NULL, 'k'}, {"ca", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},      {"timeout-ms", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},      {NULL, 0, NULL, 0}};
    const char *url = NULL, *ca_path = NULL;
    long timeout_ms = 30000;
    char *ca = NULL;
    json_t *r = NULL;
    int c;

    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'k':
            url = optarg;
            break;
        case 'c':
            ca_path = optarg;
            break;
        case 'j':
            break;
        case 'T':
            timeout_ms = kms_cli_parse_ms(optarg);
            break;
        case 'h':
            fputs(meta_usage, stdout);
            return 0;
        default:
            fputs(meta_usage, stderr);
            return 2;
        }
    }
    if (url == NULL || optind != argc || timeout_ms <= 0) {
        fputs(meta_usage, stderr);
        return 2;
    }
    if (kms_cli_load_ca(ca_path, &ca) < 0)
        return kms_cli_die("cannot read the root CA");
    if (kms_cli_rpc(url, ca, timeout_ms, "GetMeta", NULL, &r) < 0) {
        free(ca);
        return kms_cli_fail("GetMeta failed", url);
    }
    if (json_is_object(r))
        json_object_set_new(r, "server_verified", json_boolean(ca != NULL));
    kms_cli_print_json(r);
    json_decref(r);
    free(ca);
    return 0;
}

int kms_cli_bootstrap(int argc, char **argv)
{
    return bootstrap_onboard(argc, argv, 0);
}

int kms_cli_onboard(int argc, char **argv)
{
    return bootstrap_onboard(argc, argv, 1);
}
