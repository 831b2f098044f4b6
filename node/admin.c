/* Admin service: token check, the loopback listener and the Admin.* methods (node/admin.h). */
#include "node/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attest/image.h" /* osimage */
#include "common/hex.h"
#include "common/log.h"
#include "node/http.h"
#include "replication/replication.h"

#define ADMIN_METHOD_MAX 48    /* longest method name put into an audit event */
#define ADMIN_HASH_ARG_MAX 128 /* longest hex image_hash / config_hash */

struct kms_admin {
    uint8_t token_hash[32];
    const char *listen; /* borrowed from the node's cfg */
    struct kms_http_server *srv;
};

/* Reads the token from path: regular file, no group/other permission bits (checked on the
 * opened file, so a swap after the check does not help), bounded. Hashes it into a. */
static int load_token(struct kms_admin *a, const char *path)
{
    char buf[KMS_ADMIN_TOKEN_MAX + 3];
    struct stat st;
    size_t len = 0;
    int fd = -1;
    int rc = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    KMS_ENSURE(fd >= 0, KMS_ERR_NODE_CONFIG, "--admin-token-file %s: cannot open: %s", path,
               strerror(errno));
    KMS_ENSURE(fstat(fd, &st) == 0 && S_ISREG(st.st_mode), KMS_ERR_NODE_CONFIG,
               "--admin-token-file %s is not a regular file", path);
    KMS_ENSURE((st.st_mode & (S_IRWXG | S_IRWXO)) == 0, KMS_ERR_NODE_CONFIG,
               "--admin-token-file %s has mode %04o: it must not be accessible by group or "
               "others (chmod 600 it)",
               path, (unsigned)(st.st_mode & 07777));
    for (;;) {
        ssize_t r = read(fd, buf + len, sizeof(buf) - len);

        if (r < 0 && errno == EINTR)
            continue;
        KMS_ENSURE(r >= 0, KMS_ERR_NODE_CONFIG, "--admin-token-file %s: read failed: %s", path,
                   strerror(errno));
        if (r == 0)
            break;
        len += (size_t)r;
        KMS_ENSURE(len < sizeof(buf), KMS_ERR_NODE_CONFIG,
                   "--admin-token-file %s: the token is longer than %d characters", path,
                   KMS_ADMIN_TOKEN_MAX);
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    KMS_ENSURE(len >= KMS_ADMIN_TOKEN_MIN && len <= KMS_ADMIN_TOKEN_MAX, KMS_ERR_NODE_CONFIG,
               "--admin-token-file %s: the token must be %d to %d characters (e.g. openssl rand "
               "-hex 32)",
               path, KMS_ADMIN_TOKEN_MIN, KMS_ADMIN_TOKEN_MAX);
    for (size_t i = 0; i < len; i++) {
        KMS_ENSURE(buf[i] > 0x20 && buf[i] < 0x7f, KMS_ERR_NODE_CONFIG,
                   "--admin-token-file %s: the token must be one line of visible ASCII characters "
                   "(it travels in an HTTP header)",
                   path);
    }
    SHA256((const uint8_t *)buf, len, a->token_hash);
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    if (fd >= 0)
        close(fd);
    return rc;
}

int kms_admin_new(const struct kms_node_cfg *cfg, struct kms_admin **out)
{
    struct kms_admin *a = NULL;
    struct sockaddr_in sa;
    int rc = 0;

    *out = NULL;
    if (cfg->admin_listen == NULL) {
        KMS_ENSURE(cfg->admin_token_file == NULL && !cfg->admin_allow_remote, KMS_ERR_NODE_CONFIG,
                   "--admin-token-file and --admin-allow-remote apply to --admin-listen only");
        return 0;
    }
    rc = kms_http_parse_listen(cfg->admin_listen, &sa);
    KMS_ENSURE(rc == 0, KMS_ERR_NODE_CONFIG, "--admin-listen: %s", kms_err_detail());
    /* 127.0.0.0/8: the admin calls are plain HTTP, meant for the host's operator only. */
    KMS_ENSURE(cfg->admin_allow_remote || (ntohl(sa.sin_addr.s_addr) >> 24) == 127,
               KMS_ERR_NODE_CONFIG,
               "--admin-listen %s is not a loopback address: the admin listener is plain HTTP; "
               "use 127.0.0.1:PORT (or --admin-allow-remote behind a TLS proxy)",
               cfg->admin_listen);
    KMS_ENSURE(cfg->admin_token_file != NULL, KMS_ERR_NODE_CONFIG,
               "--admin-listen needs --admin-token-file FILE: the admin listener never runs "
               "without a token");
    a = calloc(1, sizeof(*a));
    KMS_GUARD_PTR(a);
    a->listen = cfg->admin_listen;
    KMS_GUARD(load_token(a, cfg->admin_token_file));
    if (cfg->admin_allow_remote && (ntohl(sa.sin_addr.s_addr) >> 24) != 127)
        KMS_WARN("--admin-allow-remote: the admin listener on %s is plain HTTP reachable from "
                 "the network; the token travels in clear",
                 cfg->admin_listen);
    *out = a;
    a = NULL;
out:
    kms_admin_free(a);
    return rc;
}

int kms_admin_start(struct kms_node *n)
{
    struct kms_admin *a = n->admin;
    int rc = 0;

    if (a == NULL || a->srv != NULL)
        return 0;
    KMS_GUARD(kms_http_start(a->listen, NULL, kms_admin_handle, n, &a->srv));
    KMS_INFO("Admin service (plain HTTP, token required) on %s", a->listen);
out:
    return rc;
}

void kms_admin_free(struct kms_admin *a)
{
    if (a == NULL)
        return;
    kms_http_stop(a->srv);
    OPENSSL_cleanse(a, sizeof(*a));
    free(a);
}

int kms_admin_token_ok(const struct kms_admin *a, const char *token, size_t len)
{
    uint8_t h[32];
    int ok;

    if (a == NULL || token == NULL || len == 0 || len > KMS_ADMIN_TOKEN_MAX)
        return 0;
    SHA256((const uint8_t *)token, len, h);
    ok = CRYPTO_memcmp(h, a->token_hash, sizeof(h)) == 0;
    OPENSSL_cleanse(h, sizeof(h));
    return ok;
}

/* ---------------------------------------------------------------- the handler */

/* The presented token: "Authorization: Bearer <t>" (scheme case-insensitive), else
 * "X-Admin-Token: <t>". NULL when neither is there. */
static const char *presented_token(const struct kms_http_req *req)
{
    const char *h = kms_http_header(req, "Authorization");

    if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0) {
        h += 7;
        while (*h == ' ')
            h++;
        return h;
    }
    return kms_http_header(req, "X-Admin-Token");
}

/* "Admin.<method>" for the audit log; the method is client input, so only [A-Za-z0-9_] of
 * bounded length is kept. */
static void audit_event(const char *m, char *ev, size_t evlen)
{
    size_t n = m != NULL ? strlen(m) : 0;

    if (n == 0 || n > ADMIN_METHOD_MAX ||
        strspn(m, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != n)
        m = "unknown";
    snprintf(ev, evlen, "Admin.%s", m);
}

static void audit(struct kms_node *n, const char *ev, const char *outcome, const char *detail)
{
    if (n->store == NULL || kms_store_audit(n->store, ev, outcome, detail) < 0)
        KMS_WARN("audit log append failed for %s: %s", ev, kms_err_detail());
}

static void unauthorized(struct kms_node *n, const char *ev, const char *why,
                         struct kms_http_resp *resp)
{
    __atomic_add_fetch(&n->m.admin_unauthorized, 1, __ATOMIC_RELAXED);
    KMS_WARN("%s refused: %s", ev, why);
    audit(n, ev, "unauthorized", why);
    kms_http_resp_text(resp, 401, "application/json",
                       "{\n  \"error\": \"admin token required\"\n}");
}

/* The "url" string of an AddPeer/RemovePeer request. */
static int url_field(json_t *body, const char **url)
{
    json_t *u = json_object_get(body, "url");

    if (!json_is_string(u) || json_string_length(u) == 0)
        return kms_err_set(KMS_ERR_INVAL, "field url (a peer's https:// URL) is required");
    *url = json_string_value(u);
    return 0;
}

static int list_peers(struct kms_node *n, json_t **res)
{
    json_t *peers = kms_repl_peers_json(n->repl);

    if (peers == NULL)
        return kms_err_set(KMS_ERR_NOMEM, "out of memory");
    *res = json_pack("{s:o}", "peers", peers);
    return *res != NULL ? 0 : kms_err_set(KMS_ERR_NOMEM, "out of memory");
}

static int add_peer(struct kms_node *n, json_t *body, json_t **res, char *detail, size_t dl)
{
    char norm[KMS_REPL_URL_MAX];
    const char *url = NULL;
    int rc = 0;

    KMS_GUARD(url_field(body, &url));
    rc = kms_repl_peer_add(n->repl, url, norm);
    KMS_GUARD(rc);
    snprintf(detail, dl, "%s%s", norm, rc == 1 ? "" : " (already listed)");
    *res = json_pack("{s:s,s:b}", "url", norm, "added", rc == 1);
    KMS_GUARD_PTR(*res);
    rc = 0;
out:
    return rc;
}

static int remove_peer(struct kms_node *n, json_t *body, json_t **res, char *detail, size_t dl)
{
    char norm[KMS_REPL_URL_MAX];
    const char *url = NULL;
    int rc = 0;

    KMS_GUARD(url_field(body, &url));
    KMS_GUARD(kms_repl_peer_remove(n->repl, url, norm));
    snprintf(detail, dl, "%s", norm);
    *res = json_pack("{s:s,s:b}", "url", norm, "removed", 1);
    KMS_GUARD_PTR(*res);
out:
    return rc;
}

static int audit_head(struct kms_node *n, json_t **res)
{
    uint8_t hash[32];
    size_t count = 0;
    int rc = 0;

    KMS_ENSURE(n->store != NULL, KMS_ERR_NODE_STATE, "the keystore is not open");
    KMS_GUARD(kms_store_audit_head(n->store, &count, hash));
    *res = json_pack("{s:I,s:o}", "count", (json_int_t)count, "last_hash",
                     kms_prpc_bytes(hash, sizeof(hash)));
    KMS_GUARD_PTR(*res);
out:
    return rc;
}

/* image_hash / config_hash: empty (no-op), "all", or hex, as U restricts them. *s is the
 * value (borrowed from body). */
static int cache_key(json_t *body, const char *field, const char **s, char *detail, size_t dl)
{
    json_t *v = json_object_get(body, field);
    size_t n;

    if (v == NULL || json_is_null(v))
        *s = "";
    else if (json_is_string(v))
        *s = json_string_value(v);
    else
        return kms_err_set(KMS_ERR_INVAL, "field %s must be a string", field);
    n = strlen(*s);
    if (n != 0 && strcmp(*s, "all") != 0 &&
        (n > ADMIN_HASH_ARG_MAX || strspn(*s, "0123456789abcdefABCDEF") != n))
        return kms_err_set(KMS_ERR_INVAL,
                           "field %s must be empty, \"all\" or a hex hash of at most %d digits",
                           field, ADMIN_HASH_ARG_MAX);
    snprintf(detail + strlen(detail), dl - strlen(detail), "%s%s=%s", detail[0] ? " " : "", field,
             n == 0 ? "\"\"" : *s);
    return 0;
}

/* osimage: image_hash drops cached measurement manifests (attest/image.h): "all", or the one
 * of that os_image_hash (a hex value that is not 32 bytes matches none). kmsd computes no
 * per-vm_config measurements, so config_hash has nothing to remove. */
static int clear_image_cache(struct kms_node *n, json_t *body, json_t **res, char *detail,
                             size_t dl)
{
    const char *img = NULL, *conf = NULL;
    uint8_t h[32];
    size_t dropped = 0;
    int rc = 0;

    KMS_GUARD(cache_key(body, "image_hash", &img, detail, dl));
    KMS_GUARD(cache_key(body, "config_hash", &conf, detail, dl));
    if (strcmp(img, "all") == 0)
        dropped = kms_image_cache_clear(n->image, NULL, 0);
    else if (strlen(img) == 64 && kms_hex_decode_exact(img, h, 32) == 0)
        dropped = kms_image_cache_clear(n->image, h, 32);
    snprintf(detail + strlen(detail), dl - strlen(detail), " (%zu cached image manifest%s removed)",
             dropped, dropped == 1 ? "" : "s");
    *res = json_null();
out:
    return rc;
}

void kms_admin_handle(void *arg, const struct kms_http_req *req, struct kms_http_resp *resp)
{
    struct kms_node *n = arg;
    const char *m = kms_prpc_method(req->path, "Admin");
    const char *tok = presented_token(req);
    char ev[16 + ADMIN_METHOD_MAX];
    char detail[600] = "";
    json_t *body = NULL, *res = NULL;
    int rc = 0;

    audit_event(m, ev, sizeof(ev));
    if (tok == NULL || tok[0] == '\0') {
        unauthorized(n, ev, "no admin token presented", resp);
        return;
    }
    if (!kms_admin_token_ok(n->admin, tok, strlen(tok))) {
        unauthorized(n, ev, "wrong admin token", resp);
        return;
    }
    __atomic_add_fetch(&n->m.admin_requests, 1, __ATOMIC_RELAXED);
    if (m == NULL) {
        audit(n, ev, "error", "not a /prpc/ path");
        kms_http_resp_text(resp, 404, "application/json", "{\"error\": \"not found\"}");
        return;
    }
    body = kms_prpc_body(req, resp); /* always JSON: the Admin service has no protobuf schema */
    if (body == NULL) {
        audit(n, ev, "error", "undecodable request");
        return;
    }
    if (strcmp(m, "ListPeers") == 0)
        rc = list_peers(n, &res);
    else if (strcmp(m, "AddPeer") == 0)
        rc = add_peer(n, body, &res, detail, sizeof(detail));
    else if (strcmp(m, "RemovePeer") == 0)
        rc = remove_peer(n, body, &res, detail, sizeof(detail));
    else if (strcmp(m, "AuditHead") == 0)
        rc = audit_head(n, &res);
    else if (strcmp(m, "ClearImageCache") == 0)
        rc = clear_image_cache(n, body, &res, detail, sizeof(detail));
    else
        rc = kms_err_set(KMS_ERR_NOTFOUND, "method not found: %.100s", m);
    if (rc < 0) {
        snprintf(detail, sizeof(detail), "%s", kms_err_detail());
        KMS_WARN("%s failed: %s", ev, detail);
        /* Audited before the answer, so a client that sees it can find the row. */
        audit(n, ev, "error", detail);
        kms_prpc_error(resp, detail);
    } else {
        audit(n, ev, "ok", detail);
        kms_prpc_ok(resp, res);
        res = NULL;
    }
    json_decref(res);
    json_decref(body);
}
