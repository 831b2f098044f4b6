/* kmsctl admin: the Admin service of a node (node/admin.h) over its token-protected listener. */
#include <getopt.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/buf.h"
#include "common/fetch.h"
#include "common/file.h"
#include "replication/replication.h"

#define ADMIN_MAX_BODY (1024u * 1024u)
#define ADMIN_TOKEN_FILE_MAX 1100u /* the node accepts tokens of up to 1024 characters */

static const char admin_usage[] =
    "Usage: kmsctl admin peers       --admin URL --token-file FILE [--json]\n"
    "       kmsctl admin add-peer    URL --admin URL --token-file FILE [--json]\n"
    "       kmsctl admin remove-peer URL --admin URL --token-file FILE [--json]\n"
    "       kmsctl admin audit-head  --admin URL --token-file FILE [--json]\n"
    "       (each also takes [--ca FILE] [--timeout-ms MS])\n"
    "\n"
    "Calls the Admin service of a node (kmsd --admin-listen, --admin-token-file):\n"
    "  peers        the node's peer list with the status of each peer's last check\n"
    "  add-peer     add a peer KMS (https://host:port) to check; kept across restarts\n"
    "  remove-peer  stop checking a peer; kept across restarts, also for --peer options\n"
    "  audit-head   the audit log's row count and last row hash (anchor it elsewhere)\n"
    "Every call, refused ones included, is recorded in the node's audit log.\n"
    "  --admin URL         the admin listener, e.g. http://127.0.0.1:8001\n"
    "  --token-file FILE   file holding the admin token (sent as Authorization: Bearer)\n"
    "  --json              print the node's JSON answer\n"
    "  --timeout-ms MS     timeout of the request (default 10000)\n"
    "  --ca FILE           for an https:// --admin URL (a TLS proxy in front): the only CA its\n"
    "                      certificate may chain to (default $KMSCTL_CA; else the system's CAs)\n"
    "TLS: kmsd's admin listener is plain HTTP on loopback; kmsctl says so on stderr (the answer\n"
    "is not authenticated; the token protects the node, not you).\n"
    "Exit status: 0 on success, 1 when the node refused or failed, 2 on usage errors.\n";

/* The token from path with a trailing newline removed; caller frees with kms_free_secret. */
static int read_token(const char *path, char **out)
{
    uint8_t *buf = NULL;
    size_t len = 0, flen = 0;
    int rc = 0;

    KMS_GUARD(kms_file_read(path, ADMIN_TOKEN_FILE_MAX, &buf, &flen));
    len = flen;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    KMS_ENSURE(len > 0 && memchr(buf, '\n', len) == NULL && memchr(buf, '\0', len) == NULL,
               KMS_ERR_INVAL, "%s must hold one line: the admin token", path);
    *out = malloc(len + 1);
    KMS_GUARD_PTR(*out);
    memcpy(*out, buf, len);
    (*out)[len] = '\0';
out:
    if (buf != NULL)
        kms_free_secret(buf, flen);
    return rc;
}

/* https admin URL with a pinned CA (arg): only that CA is trusted, host name not checked. */
static int pin_ca(CURL *h, void *arg)
{
    const char *ca = arg;
    struct curl_blob b = {(void *)ca, strlen(ca), CURL_BLOB_COPY};

    curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &b);
    curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    return 0;
}

/* POST base/prpc/Admin.<method>?json with body; *res the JSON answer (caller owns), *status
 * the HTTP code. ca: the CA an https:// server must chain to (NULL: the system's CAs). */
static int admin_call(const char *base, const char *ca, const char *token, long timeout_ms,
                      const char *method, const char *body, long *status, json_t **res)
{
    char url[KMS_REPL_URL_MAX + 64];
    const char *hdrs[3] = {NULL, "Content-Type: application/json", NULL};
    struct kms_fetch_req req = {0};
    struct kms_fetch_resp fr = {0};
    char *auth = NULL;
    size_t ul = strlen(base);
    json_error_t jerr;
    int rc = 0;

    *res = NULL;
    while (ul > 0 && base[ul - 1] == '/')
        ul--;
    KMS_ENSURE(strncmp(base, "http://", 7) == 0 || strncmp(base, "https://", 8) == 0, KMS_ERR_INVAL,
               "--admin must be an http:// or https:// URL");
    KMS_ENSURE(ul < KMS_REPL_URL_MAX, KMS_ERR_INVAL, "--admin URL too long");
    snprintf(url, sizeof(url), "%.*s/prpc/Admin.%s?json", (int)ul, base, method);
    auth = malloc(strlen(token) + 32);
    KMS_GUARD_PTR(auth);
    snprintf(auth, strlen(token) + 32, "Authorization: Bearer %s", token);
    hdrs[0] = auth;
    req.url = url;
    req.post = body != NULL ? body : "{}";
    req.post_len = strlen(req.post);
    req.headers = hdrs;
    req.timeout_ms = timeout_ms;
    req.max_body = ADMIN_MAX_BODY;
    if (ca != NULL) {
        req.setup = pin_ca;
        req.arg = (void *)ca;
    }
    rc = kms_fetch(&req, &fr);
    KMS_ENSURE(rc != KMS_ERR_TIMEOUT, KMS_ERR_TIMEOUT, "no answer from %s within %ld ms", base,
               timeout_ms);
    KMS_ENSURE(rc != KMS_ERR_TOOBIG, KMS_ERR_TOOBIG, "answer larger than %u bytes", ADMIN_MAX_BODY);
    KMS_ENSURE(rc != KMS_ERR_NET, KMS_ERR_NET, "cannot reach %s: %s", base, kms_fetch_why(&fr));
    KMS_GUARD(rc);
    *status = fr.status;
    *res = json_loadb(fr.body.data != NULL ? (const char *)fr.body.data : "", fr.body.len,
                      JSON_DECODE_ANY, &jerr);
    KMS_ENSURE(*res != NULL, KMS_ERR_PARSE, "%s answered HTTP %ld without JSON", base, *status);
    if (*status != 200) {
        json_t *e = json_object_get(*res, "error");

        rc = kms_err_set(*status == 401 ? KMS_ERR_DENIED : KMS_ERR_REPL_RPC, "%s (HTTP %ld)",
                         json_is_string(e) ? json_string_value(e) : "error", *status);
    }
out:
    if (rc < 0) {
        json_decref(*res);
        *res = NULL;
    }
    if (auth != NULL)
        kms_free_secret(auth, strlen(auth));
    kms_fetch_resp_free(&fr);
    return rc;
}

static const char *str_or(json_t *o, const char *k, const char *dflt)
{
    json_t *v = json_object_get(o, k);

    return json_is_string(v) ? json_string_value(v) : dflt;
}

static void print_peers(json_t *res)
{
    json_t *peers = json_object_get(res, "peers");
    json_t *p;
    size_t i;

    if (json_array_size(peers) == 0) {
        printf("no peers\n");
        return;
    }
    printf("%-40s %-13s %-15s %s\n", "PEER", "STATUS", "ORIGIN", "REASON");
    json_array_foreach(peers, i, p)
    {
        printf("%-40s %-13s %-15s %s\n", str_or(p, "url", "?"), str_or(p, "status", "?"),
               str_or(p, "origin", "?"), str_or(p, "reason", ""));
    }
}

int kms_cli_admin(int argc, char **argv)
{
    static const struct option opts[] = {
        {"admin", required_argument, NULL, 'a'},
        {"token-file", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"timeout-ms", required_argument, NULL, 'T'},
        {"ca", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *ca_path = NULL;
    char *ca = NULL;
    const char *admin = NULL, *token_file = NULL, *sub, *method, *arg = NULL;
    long timeout_ms = 10000, status = 0;
    char *token = NULL, *body = NULL;
    json_t *res = NULL;
    int as_json = 0, c, rc;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(admin_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    sub = argv[1];
    if (strcmp(sub, "peers") == 0)
        method = "ListPeers";
    else if (strcmp(sub, "add-peer") == 0)
        method = "AddPeer";
    else if (strcmp(sub, "remove-peer") == 0)
        method = "RemovePeer";
    else if (strcmp(sub, "audit-head") == 0)
        method = "AuditHead";
    else {
        fprintf(stderr, "kmsctl admin: unknown subcommand '%s'\n%s", sub, admin_usage);
        return 2;
    }
    optind = 1;
    for (;;) {
        c = getopt_long(argc - 1, argv + 1, "h", opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'a':
            admin = optarg;
            break;
        case 't':
            token_file = optarg;
            break;
        case 'c':
            ca_path = optarg;
            break;
        case 'j':
            as_json = 1;
            break;
        case 'T':
            timeout_ms = kms_cli_parse_ms(optarg);
            if (timeout_ms < 0) {
                fprintf(stderr, "kmsctl admin: --timeout-ms must be 1..600000\n");
                return 2;
            }
            break;
        case 'h':
            fputs(admin_usage, stdout);
            return 0;
        default:
            fputs(admin_usage, stderr);
            return 2;
        }
    }
    if (strcmp(method, "AddPeer") == 0 || strcmp(method, "RemovePeer") == 0) {
        if (optind + 1 != argc - 1) {
            fprintf(stderr, "kmsctl admin %s: give exactly one peer URL\n", sub);
            return 2;
        }
        arg = argv[1 + optind];
    } else if (optind != argc - 1) {
        fprintf(stderr, "kmsctl admin %s: unexpected argument '%s'\n", sub, argv[1 + optind]);
        return 2;
    }
    if (admin == NULL || token_file == NULL) {
        fprintf(stderr, "kmsctl admin %s: --admin URL and --token-file FILE are required\n", sub);
        return 2;
    }
    if (arg != NULL) {
        json_t *o = json_pack("{s:s}", "url", arg);

        body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (body == NULL) {
            fprintf(stderr, "kmsctl admin: out of memory\n");
            return 1;
        }
    }
    if (ca_path != NULL && strncmp(admin, "https://", 8) != 0) {
        fprintf(stderr, "kmsctl admin %s: --ca applies to an https:// --admin URL only\n", sub);
        free(body);
        return 2;
    }
    rc = read_token(token_file, &token);
    /* the admin listener is plain HTTP (loopback); $KMSCTL_CA is for https:// only */
    if (rc == 0 && strncmp(admin, "https://", 8) == 0)
        rc = kms_cli_load_ca(ca_path, &ca);
    if (rc == 0 && strncmp(admin, "https://", 8) != 0)
        fprintf(stderr,
                "kmsctl admin: note: %s is plain HTTP: the answer is not authenticated "
                "(kmsd serves Admin on loopback only, unless --admin-allow-remote)\n",
                admin);
    if (rc == 0)
        rc = admin_call(admin, ca, token, timeout_ms, method, body, &status, &res);
    if (token != NULL)
        kms_free_secret(token, strlen(token));
    free(body);
    free(ca);
    if (rc < 0) {
        char what[64];

        snprintf(what, sizeof(what), "admin %s", sub);
        return kms_cli_fail(what, admin);
    }
    if (as_json) {
        char *s = json_dumps(res, JSON_INDENT(2) | JSON_ENCODE_ANY);

        printf("%s\n", s != NULL ? s : "null");
        free(s);
    } else if (strcmp(method, "ListPeers") == 0) {
        print_peers(res);
    } else if (strcmp(method, "AddPeer") == 0) {
        printf("%s %s\n", json_is_true(json_object_get(res, "added")) ? "added" : "already listed:",
               str_or(res, "url", arg));
    } else if (strcmp(method, "RemovePeer") == 0) {
        printf("removed %s\n", str_or(res, "url", arg));
    } else {
        printf("count %lld\nlast_hash %s\n",
               (long long)json_integer_value(json_object_get(res, "count")),
               str_or(res, "last_hash", "?"));
    }
    json_decref(res);
    return 0;
}
