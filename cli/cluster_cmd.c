/* kmsctl cluster: status (a node's view of its peers, from /health) and verify (the identity
 * challenge run by the operator across nodes, trusting none of them). DESIGN.md §8. */
#include <curl/curl.h>
#include <getopt.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attest/sim.h"
#include "cli/cli.h"
#include "common/buf.h"
#include "common/fetch.h"
#include "common/hex.h"
#include "common/crypto/crypto.h"
#include "replication/replication.h"

#define CLUSTER_MAX_NODES 16
#define HEALTH_MAX_BODY (1024u * 1024u)
#define STATUS_DEGRADED 3    /* cluster status: serving, but a peer is down or inconsistent */
#define STATUS_NOT_SERVING 4 /* cluster status: sealed, not-authorized, no keys, ... */

static const char cluster_usage[] =
    "Usage: kmsctl cluster status --kms URL [--ca FILE] [--json] [--timeout-ms MS]\n"
    "       kmsctl cluster verify --kms URL --kms URL ... [--insecure-sim --sim-dir DIR]\n"
    "                             [--skip-attestation] [--ca FILE] [--json] [--timeout-ms MS]\n"
    "\n"
    "status: the node's state and its view of each peer (from GET /health).\n"
    "verify: runs the identity challenge across the given nodes itself.\n"
    "kmsctl cluster status --help / kmsctl cluster verify --help for details.\n";

static const char status_usage[] =
    "Usage: kmsctl cluster status --kms URL [--ca FILE] [--json] [--timeout-ms MS]\n"
    "\n"
    "Prints the node at URL (state, identity = k256 public key prefix) and each of its peers as\n"
    "the node last checked them: status (up, down, inconsistent, unknown), the peer's k256\n"
    "public key prefix, time of the last check, latency, and the reason of a failure. Peers are\n"
    "checked by the node every --peer-interval-ms: reachable, attested kms:rpc certificate, same\n"
    "k256 and root CA public keys, and the identity challenge (see `cluster verify`).\n"
    "The data comes from GET URL/health (the node's own report; use `cluster verify` for an\n"
    "authenticated identity check).\n"
    "  --ca FILE         the cluster's root CA (PEM; `kmsctl ca pin` writes it; default\n"
    "                    $KMSCTL_CA): the node's certificate must chain to it, or kmsctl\n"
    "                    fails. Without one the certificate is NOT verified (said on stderr,\n"
    "                    in the table and in --json)\n"
    "  --json            print the node's /health document with \"url\", \"http_status\",\n"
    "                    \"server_verified\", \"verdict\" and \"exit_status\"\n"
    "  --timeout-ms MS   timeout of the request (default 5000)\n"
    "Exit status: 0 serving and no peer down or inconsistent; 1 unreachable, or its\n"
    "certificate refused; 2 usage; 3 degraded (a peer down or inconsistent); 4 not serving\n"
    "(sealed, not-authorized, uninitialized, onboarding).\n";

static const char verify_usage[] =
    "Usage: kmsctl cluster verify --kms URL --kms URL ... [--insecure-sim --sim-dir DIR]\n"
    "                             [--skip-attestation] [--ca FILE] [--json] [--timeout-ms MS]\n"
    "\n"
    "Runs the identity challenge across the given nodes: a fresh random 20-byte app id; on each\n"
    "node GetMeta (k256_pubkey, ca_pubkey) and GetAppEnvEncryptPubKey(app id), each over TLS\n"
    "whose server certificate must carry the kms:rpc usage and an attestation that verifies.\n"
    "Each node's legacy signature must recover to the k256 public key it reports, and every\n"
    "node must give the first node's k256 public key, root CA public key, env-encrypt public\n"
    "key and signature. Equal answers prove the same root keys without revealing them.\n"
    "  --insecure-sim --sim-dir DIR  also trust the simulated TEE root in DIR (development)\n"
    "  --skip-attestation            check only the kms:rpc usage of server certificates\n"
    "  --ca FILE                     the cluster's root CA (default $KMSCTL_CA): every node's\n"
    "                                certificate must chain to it and its GetMeta.ca_pubkey\n"
    "                                must be its key. Without it the nodes are compared with\n"
    "                                each other only (said on stderr)\n"
    "  --json                        print {challenge_app_id, root_ca_pinned,\n"
    "                                attestation_checked, nodes: [{url, result, reason}],\n"
    "                                all_agree}\n"
    "  --timeout-ms MS               timeout of each request (default 5000)\n"
    "Exit status: 0 when all nodes agree; 1 naming each node that diverges or fails.\n";

/* ---------------------------------------------------------------- status */

/* arg: the root CA PEM the server must chain to, or NULL (not verified, see --help). */
static int health_tls(CURL *h, void *arg)
{
    const char *ca = arg;

    if (ca != NULL) {
        struct curl_blob b = {(void *)ca, strlen(ca), CURL_BLOB_COPY};

        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &b);
        curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    } else {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
    }
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    return 0;
}

/* GET base/health: *status the HTTP code, *out the JSON document (caller owns). */
static int get_health(const char *base, const char *ca, long timeout_ms, long *status, json_t **out)
{
    struct kms_fetch_req req = {0};
    struct kms_fetch_resp fr = {0};
    char url[KMS_REPL_URL_MAX + 16];
    json_error_t jerr;
    size_t ul = strlen(base);
    int rc = 0;

    *out = NULL;
    while (ul > 0 && base[ul - 1] == '/')
        ul--;
    KMS_ENSURE(ul < KMS_REPL_URL_MAX, KMS_ERR_INVAL, "URL too long");
    snprintf(url, sizeof(url), "%.*s/health", (int)ul, base);
    req.url = url;
    req.timeout_ms = timeout_ms;
    req.max_body = HEALTH_MAX_BODY;
    req.setup = health_tls;
    req.arg = (void *)ca;
    rc = kms_fetch(&req, &fr);
    KMS_ENSURE(rc != KMS_ERR_TIMEOUT, KMS_ERR_TIMEOUT, "no answer from %s within %ld ms", url,
               timeout_ms);
    KMS_ENSURE(rc != KMS_ERR_TOOBIG, KMS_ERR_TOOBIG, "/health answer larger than %u bytes",
               HEALTH_MAX_BODY);
    KMS_ENSURE(rc != KMS_ERR_NET, KMS_ERR_NET, "cannot reach %s: %s", url, kms_fetch_why(&fr));
    KMS_GUARD(rc);
    *status = fr.status;
    *out =
        json_loadb(fr.body.data != NULL ? (const char *)fr.body.data : "", fr.body.len, 0, &jerr);
    KMS_ENSURE(json_is_object(*out), KMS_ERR_PARSE, "%s is not a kmsd /health document (HTTP %ld)",
               url, *status);
out:
    if (rc < 0) {
        json_decref(*out);
        *out = NULL;
    }
    kms_fetch_resp_free(&fr);
    return rc;
}

static const char *str_or(json_t *o, const char *k, const char *dflt)
{
    json_t *v = json_object_get(o, k);

    return json_is_string(v) && json_string_value(v)[0] != '\0' ? json_string_value(v) : dflt;
}

/* "0x02ab12cd34ef.." — enough to tell identities apart at a glance. */
static void ident_prefix(json_t *o, char out[24])
{
    const char *k = str_or(o, "k256_pubkey", NULL);

    if (k == NULL)
        snprintf(out, 24, "-");
    else
        snprintf(out, 24, "%.14s..", k);
}

static void print_row(const char *indent, const char *url, const char *state, json_t *o,
                      json_t *last, json_t *lat, const char *reason)
{
    char id[24], lc[32], lt[32];

    ident_prefix(o, id);
    if (json_is_integer(last)) {
        long ago = (long)(time(NULL) - (time_t)json_integer_value(last));

        snprintf(lc, sizeof(lc), "%lds ago", ago < 0 ? 0 : ago);
    } else {
        snprintf(lc, sizeof(lc), "-");
    }
    if (json_is_integer(lat))
        snprintf(lt, sizeof(lt), "%lld ms", (long long)json_integer_value(lat));
    else
        snprintf(lt, sizeof(lt), "-");
    printf("%s%-*s %-14s %-18s %-10s %-9s %s\n", indent, 38 - (int)strlen(indent), url, state, id,
           lc, lt, reason);
}

/* The exit status of `cluster status` for a /health document (see status_usage) and the word
 * that says why. */
static const char *status_verdict(json_t *h, int *code)
{
    const char *state = str_or(h, "state", "?");
    json_t *p;
    size_t i;

    if (strcmp(state, "degraded") == 0) {
        *code = STATUS_DEGRADED;
        return "degraded: a peer is down or inconsistent";
    }
    if (strcmp(state, "serving") != 0) {
        *code = STATUS_NOT_SERVING;
        return "not serving (sealed, not authorized, or without keys)";
    }
    json_array_foreach(json_object_get(h, "peers"), i, p)
    {
        const char *ps = str_or(p, "status", "unknown");

        if (strcmp(ps, "up") != 0 && strcmp(ps, "unknown") != 0) {
            *code = STATUS_DEGRADED;
            return "degraded: a peer is down or inconsistent";
        }
    }
    *code = 0;
    return "ok: serving, no peer down";
}

static int cmd_status(int argc, char **argv)
{
    static const struct option opts[] = {
        {"kms", required_argument, NULL, 'k'}, {"ca", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},      {"timeout-ms", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},      {NULL, 0, NULL, 0}};
    const char *url = NULL, *ca_path = NULL;
    char *ca = NULL;
    int as_json = 0, c, rc, verified;
    long timeout_ms = 5000, status = 0;
    const char *verdict;
    json_t *h = NULL, *meta = NULL, *peers, *p;
    size_t i;

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
            as_json = 1;
            break;
        case 'T':
            timeout_ms = kms_cli_parse_ms(optarg);
            break;
        case 'h':
            fputs(status_usage, stdout);
            return 0;
        default:
            fputs(status_usage, stderr);
            return 2;
        }
    }
    if (url == NULL || optind != argc || timeout_ms <= 0) {
        fputs(status_usage, stderr);
        return 2;
    }
    if (kms_cli_load_ca(ca_path, &ca) < 0)
        return kms_cli_fail("cluster status", NULL);
    verified = ca != NULL;
    /* With a CA, GetMeta first: its TLS check names a certificate of another cluster plainly. */
    if (ca != NULL && kms_cli_rpc(url, ca, timeout_ms, "GetMeta", NULL, &meta) < 0) {
        free(ca);
        return kms_cli_fail("cluster status", url);
    }
    json_decref(meta);
    if (ca == NULL)
        kms_cli_warn_unverified(url);
    if (get_health(url, ca, timeout_ms, &status, &h) < 0) {
        free(ca);
        return kms_cli_fail("cluster status", url);
    }
    free(ca);
    verdict = status_verdict(h, &rc);
    if (as_json) {
        json_object_set_new(h, "url", json_string(url));
        json_object_set_new(h, "http_status", json_integer(status));
        json_object_set_new(h, "server_verified", json_boolean(verified));
        json_object_set_new(h, "verdict", json_string(verdict));
        json_object_set_new(h, "exit_status", json_integer(rc));
        kms_cli_print_json(h);
        json_decref(h);
        return rc;
    }
    printf("server certificate: %s\n",
           verified ? "verified against the pinned root CA" : "NOT verified (no --ca)");
    printf("%-38s %-14s %-18s %-10s %-9s %s\n", "NODE / PEER", "STATE", "IDENTITY (k256)",
           "LAST CHECK", "LATENCY", "REASON");
    print_row("", url, str_or(h, "state", "?"), h, NULL, NULL, str_or(h, "reason", ""));
    peers = json_object_get(h, "peers");
    json_array_foreach(peers, i, p)
    {
        print_row("  ", str_or(p, "url", "?"), str_or(p, "status", "?"), p,
                  json_object_get(p, "last_check"), json_object_get(p, "latency_ms"),
                  str_or(p, "reason", ""));
    }
    if (json_array_size(peers) == 0)
        printf("  (no peers known)\n");
    printf("verdict: %s\n", verdict);
    json_decref(h);
    return rc;
}

/* ---------------------------------------------------------------- verify */

struct answer {
    const char *url;
    int ok; /* reached and self-consistent */
    uint8_t k256[33];
    uint8_t *ca_spki;
    size_t ca_spki_len;
    uint8_t pub[32];
    uint8_t sig[65];
};

static int cert_check(void *arg, X509 *leaf)
{
    return kms_check_kms_cert(arg, leaf, NULL, NULL);
}

static int field_exact(json_t *o, const char *field, uint8_t *out, size_t want)
{
    uint8_t *b = NULL;
    size_t n = 0;
    int rc = 0;

    KMS_ENSURE(json_is_string(json_object_get(o, field)), KMS_ERR_PARSE, "answer lacks %s", field);
    KMS_GUARD(kms_prpc_get_bytes(o, field, &b, &n));
    KMS_ENSURE(n == want, KMS_ERR_PARSE, "%s is %zu bytes, want %zu", field, n, want);
    memcpy(out, b, want);
out:
    free(b);
    return rc;
}

/* Asks one node; a->ok when it answered and its signature recovers to its own k256 key. */
static int ask(struct answer *a, const struct kms_attest_ctx *actx, const char *pin,
               long timeout_ms, const uint8_t app_id[20])
{
    struct kms_rpc_opts o;
    json_t *meta = NULL, *ek = NULL;
    uint8_t digest[32], rec[33];
    char body[80], hex[41];
    int rc = 0;

    memset(&o, 0, sizeof(o));
    o.url = a->url;
    o.timeout_ms = timeout_ms;
    o.server_check = cert_check;
    o.server_check_arg = (void *)actx;
    o.ca_pem = pin; /* NULL: chain not checked (the challenge compares the nodes) */
    o.no_host_check = 1;
    KMS_GUARD(kms_rpc_call(&o, "GetMeta", NULL, &meta, NULL));
    KMS_GUARD(field_exact(meta, "k256_pubkey", a->k256, 33));
    KMS_GUARD(kms_prpc_get_bytes(meta, "ca_pubkey", &a->ca_spki, &a->ca_spki_len));
    KMS_ENSURE(a->ca_spki_len > 0, KMS_ERR_PARSE, "GetMeta lacks ca_pubkey (not a kmsd node?)");
    kms_hex_encode(app_id, 20, hex);
    snprintf(body, sizeof(body), "{\"app_id\":\"0x%s\"}", hex);
    KMS_GUARD(kms_rpc_call(&o, "GetAppEnvEncryptPubKey", body, &ek, NULL));
    KMS_GUARD(field_exact(ek, "public_key", a->pub, 32));
    KMS_GUARD(field_exact(ek, "signature", a->sig, 65));
    kms_env_pubkey_digest(app_id, 20, NULL, a->pub, digest);
    rc = kms_k256_recover(a->sig, digest, rec);
    KMS_ENSURE(rc == 0 && memcmp(rec, a->k256, 33) == 0, KMS_ERR_REPL_IDENTITY,
               "its challenge signature does not come from the k256 key its GetMeta reports");
    a->ok = 1;
out:
    json_decref(meta);
    json_decref(ek);
    return rc;
}

static struct kms_attest_ctx *verify_ctx(int skip, int insecure_sim, const char *sim_dir)
{
    struct kms_attest_ctx *actx;
    struct kms_sim *sim = NULL;
    X509 *root;
    int ok;

    if (skip)
        return NULL;
    actx = kms_attest_ctx_new();
    if (actx == NULL)
        return NULL;
    root = kms_attest_intel_root();
    ok = root != NULL && kms_attest_ctx_add_root(actx, KMS_ROOT_TDX, root, 0) == 0;
    X509_free(root);
    root = ok ? kms_attest_nitro_root() : NULL;
    ok = root != NULL && kms_attest_ctx_add_root(actx, KMS_ROOT_NITRO, root, 0) == 0;
    X509_free(root);
    if (ok && insecure_sim) {
        ok = kms_sim_open(sim_dir, &sim) == 0 &&
             kms_attest_ctx_add_root(actx, KMS_ROOT_TDX, kms_sim_root(sim), 1) == 0;
        kms_sim_free(sim);
    }
    if (!ok) {
        kms_attest_ctx_free(actx);
        return NULL;
    }
    return actx;
}

static int cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {{"kms", required_argument, NULL, 'k'},
                                         {"insecure-sim", no_argument, NULL, 'I'},
                                         {"sim-dir", required_argument, NULL, 's'},
                                         {"skip-attestation", no_argument, NULL, 'S'},
                                         {"timeout-ms", required_argument, NULL, 'T'},
                                         {"ca", required_argument, NULL, 'c'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct answer a[CLUSTER_MAX_NODES];
    const char *ca_path = NULL;
    char *pin = NULL;
    uint8_t *pin_spki = NULL;
    size_t pin_spki_len = 0;
    int as_json = 0;
    json_t *jn = NULL, *jo = NULL;
    size_t n = 0, ref = CLUSTER_MAX_NODES, bad = 0;
    int insecure = 0, skip = 0, c;
    const char *sim_dir = NULL;
    long timeout_ms = 5000;
    struct kms_attest_ctx *actx = NULL;
    uint8_t app_id[20];
    char hex[41];

    memset(a, 0, sizeof(a));
    optind = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'k':
            if (n >= CLUSTER_MAX_NODES) {
                fprintf(stderr, "kmsctl: at most %d --kms URLs\n", CLUSTER_MAX_NODES);
                return 2;
            }
            a[n++].url = optarg;
            break;
        case 'I':
            insecure = 1;
            break;
        case 's':
            sim_dir = optarg;
            break;
        case 'S':
            skip = 1;
            break;
        case 'T':
            timeout_ms = kms_cli_parse_ms(optarg);
            break;
        case 'c':
            ca_path = optarg;
            break;
        case 'j':
            as_json = 1;
            break;
        case 'h':
            fputs(verify_usage, stdout);
            return 0;
        default:
            fputs(verify_usage, stderr);
            return 2;
        }
    }
    if (n == 0 || optind != argc || timeout_ms <= 0 || (insecure != (sim_dir != NULL))) {
        fputs(verify_usage, stderr);
        return 2;
    }
    if (kms_cli_load_ca(ca_path, &pin) < 0 ||
        (pin != NULL && kms_cli_ca_spki(pin, &pin_spki, &pin_spki_len) < 0)) {
        free(pin);
        return kms_cli_fail("cluster verify", NULL);
    }
    if (pin == NULL && skip)
        fprintf(stderr, "kmsctl: WARNING: no root CA pinned (--ca or " KMS_CLI_CA_ENV
                        ") and --skip-attestation: the nodes are only compared with each other; "
                        "who they are is NOT verified\n");
    else if (pin == NULL)
        fprintf(stderr, "kmsctl: note: no root CA pinned (--ca or " KMS_CLI_CA_ENV
                        "): the nodes are checked by attestation and against each other, not "
                        "against your cluster's root CA\n");
    actx = verify_ctx(skip, insecure, sim_dir);
    if (!skip && actx == NULL) {
        fprintf(stderr, "kmsctl: cannot set up attestation verification: %s\n", kms_err_detail());
        free(pin);
        free(pin_spki);
        return 1;
    }
    if (RAND_bytes(app_id, sizeof(app_id)) != 1) {
        fprintf(stderr, "kmsctl: no randomness for the challenge\n");
        kms_attest_ctx_free(actx);
        free(pin);
        free(pin_spki);
        return 1;
    }
    kms_hex_encode(app_id, 20, hex);
    jo = json_pack("{s:s,s:b,s:b,s:[]}", "challenge_app_id", hex, "root_ca_pinned", pin != NULL,
                   "attestation_checked", !skip, "nodes");
    jn = json_object_get(jo, "nodes");
    if (!as_json)
        printf("challenge app id 0x%s\n", hex);
    for (size_t i = 0; i < n; i++) {
        if (ask(&a[i], actx, pin, timeout_ms, &app_id[0]) < 0) {
            const char *hint = kms_cli_hint(a[i].url, kms_err_detail());

            if (!as_json)
                printf("FAIL      %s: %s\n", a[i].url, kms_err_detail());
            if (!as_json && hint != NULL)
                printf("          hint: %s\n", hint);
            json_array_append_new(jn, json_pack("{s:s,s:s,s:s}", "url", a[i].url, "result", "fail",
                                                "reason", kms_err_detail()));
            bad++;
        } else if (ref == CLUSTER_MAX_NODES) {
            ref = i;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct answer *r = ref < n ? &a[ref] : NULL;
        const char *what = NULL;
        char k[20], kfull[69];

        if (!a[i].ok)
            continue;
        if (pin_spki != NULL &&
            (a[i].ca_spki_len != pin_spki_len || memcmp(a[i].ca_spki, pin_spki, pin_spki_len) != 0))
            what = "root CA public key is not the pinned root CA (--ca)";
        else if (memcmp(a[i].k256, r->k256, 33) != 0)
            what = "k256_pubkey differs";
        else if (a[i].ca_spki_len != r->ca_spki_len ||
                 memcmp(a[i].ca_spki, r->ca_spki, r->ca_spki_len) != 0)
            what = "root CA public key differs";
        else if (memcmp(a[i].pub, r->pub, 32) != 0)
            what = "challenge env-encrypt public key differs (another root CA key)";
        else if (memcmp(a[i].sig, r->sig, 65) != 0)
            what = "challenge signature differs (another root k256 key)";
        kms_hex_encode(a[i].k256, 6, k);
        kfull[0] = '0';
        kfull[1] = 'x';
        kms_hex_encode(a[i].k256, 33, kfull + 2);
        if (what != NULL) {
            if (!as_json)
                printf("DIVERGES  %s: %s (compared with %s)\n", a[i].url, what, r->url);
            json_array_append_new(jn, json_pack("{s:s,s:s,s:s,s:s,s:s}", "url", a[i].url, "result",
                                                "diverges", "reason", what, "compared_with", r->url,
                                                "k256_pubkey", kfull));
            bad++;
        } else {
            if (!as_json)
                printf("OK        %s  k256 0x%s..\n", a[i].url, k);
            json_array_append_new(jn, json_pack("{s:s,s:s,s:s}", "url", a[i].url, "result", "ok",
                                                "k256_pubkey", kfull));
        }
    }
    for (size_t i = 0; i < n; i++)
        free(a[i].ca_spki);
    kms_attest_ctx_free(actx);
    free(pin);
    free(pin_spki);
    json_object_set_new(jo, "all_agree", json_boolean(bad == 0));
    if (as_json)
        kms_cli_print_json(jo);
    json_decref(jo);
    if (bad > 0) {
        fprintf(stderr, "kmsctl: cluster verify: %zu of %zu node(s) failed or diverge\n", bad, n);
        return 1;
    }
    if (!as_json)
        printf("all %zu node(s) hold the same identity\n", n);
    return 0;
}

int kms_cli_cluster(int argc, char **argv)
{
    static const struct kms_cli_sub subs[] = {{"status", cmd_status}, {"verify", cmd_verify}};

    return kms_cli_subcommands("cluster", cluster_usage, subs, 2, argc, argv);
}
