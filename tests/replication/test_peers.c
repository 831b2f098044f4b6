/*
 * Peer checks against fake peers served in-process over real TLS. Proves that a node tells
 * apart: a consistent peer (up); a peer that copies our identity into GetMeta but answers the
 * identity challenge with other root keys (inconsistent *by the challenge*, the case a public
 * key comparison alone misses); a peer holding only one of the two root keys; a peer whose
 * GetMeta reports another k256 or CA key; RPC certificates without kms:rpc, without an
 * attestation, or with an attestation from an untrusted root (inconsistent, checked in the
 * handshake); a malformed answer; and dead or hanging peers (down, within the timeout).
 * Also unit tests of the challenge comparison (one flipped byte per compared value) and of
 * peer URL normalization, and struct kms_repl driven through its interface with no node.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/file.h"
#include "attest/sim.h"
#include "common/hex.h"
#include "common/crypto/crypto.h"
#include "node/http.h"
#include "node/node.h"
#include "replication/replication.h"
#include "test.h"

/* A cluster identity held by the test. */
struct ident {
    EVP_PKEY *ca;
    X509 *ca_cert;
    uint8_t k256[32];
    uint8_t k256_pub[33];
    uint8_t *spki;
    size_t spki_len;
};

enum fake_mode {
    F_HONEST,     /* identity X everywhere */
    F_LIE_META,   /* GetMeta says X, challenge answered with Y's keys */
    F_HALF,       /* GetMeta says X, challenge with X's CA key but Y's k256 key */
    F_META_K256,  /* GetMeta reports Y's k256 */
    F_META_CA,    /* GetMeta reports Y's CA key */
    F_BAD_LENGTH, /* challenge public_key of 31 bytes */
};

static struct ident g_x, g_y;
static struct kms_sim *g_sim, *g_sim_other;
static volatile enum fake_mode g_mode;

static void ident_new(struct ident *id)
{
    struct kms_cert_params p;

    memset(id, 0, sizeof(*id));
    memset(&p, 0, sizeof(p));
    CHECK_OK(kms_p256_generate(&id->ca));
    CHECK_OK(kms_k256_random(id->k256));
    CHECK_OK(kms_k256_pubkey(id->k256, id->k256_pub));
    CHECK_OK(kms_pkey_spki_der(id->ca, &id->spki, &id->spki_len));
    p.cn = "Dstack KMS CA";
    p.is_ca = 1;
    p.path_len = 1;
    CHECK_OK(kms_cert_issue(&p, id->ca, id->ca, NULL, &id->ca_cert));
}

static void ident_free(struct ident *id)
{
    EVP_PKEY_free(id->ca);
    X509_free(id->ca_cert);
    free(id->spki);
    OPENSSL_cleanse(id->k256, 32);
}

/* Per-call timeout of the checks: generous, since a check is a few RA-TLS calls that take
 * seconds under ASan on a loaded machine; test_down_and_hanging sets a shorter one to time it. */
static long g_timeout_ms = 30000;

static void self_of(const struct ident *id, struct kms_attest_ctx *actx, struct kms_peer_self *s)
{
    memset(s, 0, sizeof(*s));
    s->actx = actx;
    s->root_ca_key = id->ca;
    s->root_k256 = id->k256;
    s->k256_pubkey = id->k256_pub;
    s->ca_spki = id->spki;
    s->ca_spki_len = id->spki_len;
    s->timeout_ms = g_timeout_ms;
}

static void env_answer(EVP_PKEY *ca, const uint8_t k256[32], json_t *body,
                       struct kms_http_resp *resp)
{
    uint8_t *app = NULL;
    size_t len = 0;
    struct kms_env_pubkey ek;
    json_t *o;

    if (kms_prpc_get_bytes(body, "app_id", &app, &len) < 0 || len != 20 ||
        kms_derive_env_pubkey(ca, k256, app, len, (uint64_t)time(NULL), &ek) < 0) {
        free(app);
        kms_prpc_error(resp, "bad app id");
        return;
    }
    o = json_object();
    json_object_set_new(o, "public_key",
                        kms_prpc_bytes(ek.public_key, g_mode == F_BAD_LENGTH ? 31 : 32));
    json_object_set_new(o, "signature", kms_prpc_bytes(ek.signature, 65));
    json_object_set_new(o, "timestamp", json_integer((json_int_t)ek.timestamp));
    json_object_set_new(o, "signature_v1", kms_prpc_bytes(ek.signature_v1, 65));
    kms_prpc_ok(resp, o);
    free(app);
}

/* The fake KMS: GetMeta and GetAppEnvEncryptPubKey per g_mode. */
static void fake_handle(void *arg, const struct kms_http_req *req, struct kms_http_resp *resp)
{
    const char *m = kms_prpc_method(req->path, "KMS");
    json_t *body;

    (void)arg;
    if (m == NULL) {
        kms_http_resp_text(resp, 404, "application/json", "{}");
        return;
    }
    body = kms_prpc_body(req, resp);
    if (body == NULL)
        return;
    if (strcmp(m, "GetMeta") == 0) {
        json_t *o = json_object();
        const struct ident *k = g_mode == F_META_K256 ? &g_y : &g_x;
        const struct ident *c = g_mode == F_META_CA ? &g_y : &g_x;

        json_object_set_new(o, "k256_pubkey", kms_prpc_bytes(k->k256_pub, 33));
        json_object_set_new(o, "ca_pubkey", kms_prpc_bytes(c->spki, c->spki_len));
        json_object_set_new(o, "state", json_string("serving"));
        kms_prpc_ok(resp, o);
    } else if (strcmp(m, "GetAppEnvEncryptPubKey") == 0) {
        if (g_mode == F_LIE_META)
            env_answer(g_y.ca, g_y.k256, body, resp);
        else if (g_mode == F_HALF)
            env_answer(g_x.ca, g_y.k256, body, resp);
        else
            env_answer(g_x.ca, g_x.k256, body, resp);
    } else {
        kms_prpc_error(resp, "method not found");
    }
    json_decref(body);
}

enum cert_kind { C_GOOD, C_NO_USAGE, C_NO_ATTESTATION, C_FOREIGN_ROOT };

/* Starts a fake peer whose RPC certificate (issued by X's CA) is of the given kind. */
static struct kms_http_server *fake_start(enum cert_kind kind, char url[64])
{
    struct kms_http_server *srv = NULL;
    struct kms_http_tls tls;
    struct kms_cert_params p;
    struct kms_attestation *att = NULL;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    char *cert_pem = NULL, *ca_pem = NULL, *key_pem = NULL, chain[8192];
    const char *san[1] = {"127.0.0.1"};
    uint8_t rd[64];

    memset(&p, 0, sizeof(p));
    CHECK_OK(kms_p256_generate(&key));
    CHECK_OK(kms_report_data_for_pkey(key, rd));
    if (kind != C_NO_ATTESTATION)
        CHECK_OK(kms_sim_attest(kind == C_FOREIGN_ROOT ? g_sim_other : g_sim, NULL, rd, NULL, 0, "",
                                &att));
    p.cn = "127.0.0.1";
    p.san_dns = san;
    p.n_san = 1;
    p.path_len = -1;
    p.usage = kind == C_NO_USAGE ? NULL : "kms:rpc";
    p.att = att;
    CHECK_OK(kms_cert_issue(&p, key, g_x.ca, g_x.ca_cert, &cert));
    CHECK_OK(kms_cert_to_pem(cert, &cert_pem));
    CHECK_OK(kms_cert_to_pem(g_x.ca_cert, &ca_pem));
    CHECK_OK(kms_pkey_to_pem(key, &key_pem));
    snprintf(chain, sizeof(chain), "%s%s", cert_pem, ca_pem);
    memset(&tls, 0, sizeof(tls));
    tls.cert_pem = chain;
    tls.key_pem = key_pem;
    CHECK_OK(kms_http_start("127.0.0.1:0", &tls, fake_handle, NULL, &srv));
    snprintf(url, 64, "https://127.0.0.1:%u", srv != NULL ? kms_http_port(srv) : 0);
    kms_att_free(att);
    EVP_PKEY_free(key);
    X509_free(cert);
    free(cert_pem);
    free(ca_pem);
    free(key_pem);
    return srv;
}

static struct kms_attest_ctx *g_actx;

static int check(const char *url, struct kms_peer_result *res)
{
    struct kms_peer_self s;

    self_of(&g_x, g_actx, &s);
    return kms_repl_check_peer(&s, url, res);
}

/* A consistent peer is up; its k256 key and state are reported. */
static void test_up(void)
{
    char url[64];
    struct kms_http_server *srv = fake_start(C_GOOD, url);
    struct kms_peer_result r;

    g_mode = F_HONEST;
    CHECK_OK(check(url, &r));
    CHECK(r.status == KMS_PEER_UP);
    CHECK(r.have_k256 && memcmp(r.k256_pubkey, g_x.k256_pub, 33) == 0);
    CHECK(strcmp(r.peer_state, "serving") == 0);
    CHECK(r.reason[0] == '\0');
    kms_http_stop(srv);
}

/* GetMeta copies our identity, but the challenge answer comes from other root keys: only the
 * challenge catches it. Also: only the k256 key differs (the CA-derived value matches). */
static void test_challenge_catches_lying_meta(void)
{
    char url[64];
    struct kms_http_server *srv = fake_start(C_GOOD, url);
    struct kms_peer_result r;

    g_mode = F_LIE_META;
    CHECK_RC(check(url, &r), KMS_ERR_REPL_IDENTITY);
    CHECK(r.status == KMS_PEER_INCONSISTENT);
    CHECK(r.have_k256 && memcmp(r.k256_pubkey, g_x.k256_pub, 33) == 0); /* GetMeta agreed */
    CHECK(strstr(r.reason, "challenge: identity challenge failed") != NULL);
    CHECK(strstr(r.reason, "env-encrypt public key") != NULL);
    g_mode = F_HALF;
    CHECK_RC(check(url, &r), KMS_ERR_REPL_IDENTITY);
    CHECK(r.status == KMS_PEER_INCONSISTENT);
    CHECK(strstr(r.reason, "k256 signature for a random app id differs") != NULL);
    kms_http_stop(srv);
}

/* GetMeta reporting another k256 key or another CA key: inconsistent before the challenge. */
static void test_meta_mismatch(void)
{
    char url[64];
    struct kms_http_server *srv = fake_start(C_GOOD, url);
    struct kms_peer_result r;

    g_mode = F_META_K256;
    CHECK_RC(check(url, &r), KMS_ERR_REPL_IDENTITY);
    CHECK(r.status == KMS_PEER_INCONSISTENT);
    CHECK(strstr(r.reason, "k256_pubkey differs") != NULL);
    CHECK(r.have_k256 && memcmp(r.k256_pubkey, g_y.k256_pub, 33) == 0);
    g_mode = F_META_CA;
    CHECK_RC(check(url, &r), KMS_ERR_REPL_IDENTITY);
    CHECK(r.status == KMS_PEER_INCONSISTENT);
    CHECK(strstr(r.reason, "ca_pubkey) differs") != NULL);
    g_mode = F_BAD_LENGTH;
    CHECK_RC(check(url, &r), KMS_ERR_PARSE);
    CHECK(r.status == KMS_PEER_INCONSISTENT);
    CHECK(strstr(r.reason, "public_key is 31 bytes") != NULL);
    kms_http_stop(srv);
}

/* RPC certificate checks in the handshake: each flaw alone makes the peer inconsistent. */
static void test_cert_checks(void)
{
    static const struct {
        enum cert_kind kind;
        int rc;
        const char *detail;
    } cases[] = {
        {C_NO_USAGE, KMS_ERR_VERIFY, "lacks the kms:rpc usage"},
        {C_NO_ATTESTATION, KMS_ERR_ATT_NONE, "carries no attestation"},
        {C_FOREIGN_ROOT, 0, "server attestation does not verify"},
    };

    g_mode = F_HONEST;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char url[64];
        struct kms_http_server *srv = fake_start(cases[i].kind, url);
        struct kms_peer_result r;
        int rc = check(url, &r);

        if (cases[i].rc != 0)
            CHECK_RC(rc, cases[i].rc);
        else
            CHECK(rc < 0);
        CHECK(r.status == KMS_PEER_INCONSISTENT);
        CHECK(strstr(r.reason, "peer RPC certificate rejected") != NULL);
        CHECK(strstr(r.reason, cases[i].detail) != NULL);
        if (strstr(r.reason, cases[i].detail) == NULL)
            fprintf(stderr, "  case %zu reason: %s\n", i, r.reason);
        kms_http_stop(srv);
    }
}

static unsigned listen_never_answer(int *fd_out)
{
    struct sockaddr_in sa;
    socklen_t l = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(listen(fd, 8) == 0); /* the kernel completes TCP; nobody ever speaks TLS */
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &l) == 0);
    *fd_out = fd;
    return ntohs(sa.sin_port);
}

/* A dead peer is down at once; a hanging one is down after the per-call timeout, not later. */
static void test_down_and_hanging(void)
{
    struct kms_peer_result r;
    struct timespec t0, t1;
    char url[64];
    int fd;
    unsigned port = listen_never_answer(&fd);
    long ms;

    close(fd); /* now nothing listens there */
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    CHECK_RC(check(url, &r), KMS_ERR_NET);
    CHECK(r.status == KMS_PEER_DOWN);
    CHECK(strstr(r.reason, "cannot reach") != NULL);
    CHECK(!r.have_k256);

    port = listen_never_answer(&fd);
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", port);
    /* 4 s: the bounds tell one call's timeout from two, with room for a loaded scheduler. */
    g_timeout_ms = 4000;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_RC(check(url, &r), KMS_ERR_TIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    g_timeout_ms = 30000;
    ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    CHECK(r.status == KMS_PEER_DOWN);
    CHECK(strstr(r.reason, "within 4000 ms") != NULL);
    CHECK(ms >= 3900 && ms < 8000);
    close(fd);
}

/* The comparison itself: the true answer passes; one flipped byte in either compared value,
 * or a short or missing field, is refused with the precise error. */
static void test_challenge_verify_unit(void)
{
    struct kms_peer_self s;
    struct kms_env_pubkey ek;
    uint8_t app[20];
    json_t *o;

    memset(app, 0x5a, sizeof(app));
    self_of(&g_x, NULL, &s);
    CHECK_OK(kms_derive_env_pubkey(g_x.ca, g_x.k256, app, 20, 1700000000, &ek));
    o = json_object();
    json_object_set_new(o, "public_key", kms_prpc_bytes(ek.public_key, 32));
    json_object_set_new(o, "signature", kms_prpc_bytes(ek.signature, 65));
    CHECK_OK(kms_repl_challenge_verify(&s, app, o));

    ek.public_key[7] ^= 1;
    json_object_set_new(o, "public_key", kms_prpc_bytes(ek.public_key, 32));
    CHECK_RC(kms_repl_challenge_verify(&s, app, o), KMS_ERR_REPL_IDENTITY);
    CHECK_DETAIL("env-encrypt public key for a random app id differs");
    ek.public_key[7] ^= 1;
    json_object_set_new(o, "public_key", kms_prpc_bytes(ek.public_key, 32));

    ek.signature[40] ^= 1;
    json_object_set_new(o, "signature", kms_prpc_bytes(ek.signature, 65));
    CHECK_RC(kms_repl_challenge_verify(&s, app, o), KMS_ERR_REPL_IDENTITY);
    CHECK_DETAIL("k256 signature for a random app id differs");
    ek.signature[40] ^= 1;

    /* Another app id: the same answer no longer matches (answers are per challenge). */
    json_object_set_new(o, "signature", kms_prpc_bytes(ek.signature, 65));
    app[0] ^= 1;
    CHECK_RC(kms_repl_challenge_verify(&s, app, o), KMS_ERR_REPL_IDENTITY);
    app[0] ^= 1;

    json_object_set_new(o, "signature", kms_prpc_bytes(ek.signature, 64));
    CHECK_RC(kms_repl_challenge_verify(&s, app, o), KMS_ERR_PARSE);
    CHECK_DETAIL("signature is 64 bytes, want 65");
    json_object_del(o, "signature");
    CHECK_RC(kms_repl_challenge_verify(&s, app, o), KMS_ERR_PARSE);
    CHECK_DETAIL("lacks signature");
    json_decref(o);
}

/* Peer URLs: canonical form, and everything that could break a metrics label is refused. */
static void test_url_normalize(void)
{
    char out[KMS_REPL_URL_MAX];
    char longu[400];

    CHECK_OK(kms_repl_peer_url_normalize("https://10.0.0.2:8000/prpc/", out));
    CHECK(strcmp(out, "https://10.0.0.2:8000") == 0);
    CHECK_OK(kms_repl_peer_url_normalize("https://kms.example.com//", out));
    CHECK(strcmp(out, "https://kms.example.com") == 0);
    CHECK_RC(kms_repl_peer_url_normalize("http://10.0.0.2:8000", out), KMS_ERR_INVAL);
    CHECK_DETAIL("https://");
    CHECK_RC(kms_repl_peer_url_normalize("https://a\"b", out), KMS_ERR_INVAL);
    CHECK_RC(kms_repl_peer_url_normalize("https://a/x", out), KMS_ERR_INVAL);
    CHECK_RC(kms_repl_peer_url_normalize("https://u@a", out), KMS_ERR_INVAL);
    CHECK_RC(kms_repl_peer_url_normalize("https:///", out), KMS_ERR_INVAL);
    CHECK_DETAIL("no host");
    memset(longu, 'a', sizeof(longu));
    memcpy(longu, "https://", 8);
    longu[sizeof(longu) - 1] = '\0';
    CHECK_RC(kms_repl_peer_url_normalize(longu, out), KMS_ERR_INVAL);
    CHECK_DETAIL("longer than");
    /* One TLS endpoint: host, optional port 1..65535, nothing else. */
    CHECK_OK(kms_repl_peer_url_normalize("https://[::1]:8000/", out));
    CHECK(strcmp(out, "https://[::1]:8000") == 0);
    CHECK_OK(kms_repl_peer_url_normalize("https://kms-1.example_x.com:65535", out));
    CHECK_RC(kms_repl_peer_url_normalize("https://a:b:c", out), KMS_ERR_INVAL);
    CHECK_DETAIL("port must be a number");
    CHECK_RC(kms_repl_peer_url_normalize("https://a:0", out), KMS_ERR_INVAL);
    CHECK_DETAIL("port must be a number");
    CHECK_RC(kms_repl_peer_url_normalize("https://a:65536", out), KMS_ERR_INVAL);
    CHECK_DETAIL("port must be a number");
    CHECK_RC(kms_repl_peer_url_normalize("https://a:123456", out), KMS_ERR_INVAL);
    CHECK_DETAIL("port must be a number");
    CHECK_RC(kms_repl_peer_url_normalize("https://a:", out), KMS_ERR_INVAL);
    CHECK_DETAIL("port must be a number");
    CHECK_RC(kms_repl_peer_url_normalize("https://:8000", out), KMS_ERR_INVAL);
    CHECK_DETAIL("no host");
    CHECK_RC(kms_repl_peer_url_normalize("https://[::1", out), KMS_ERR_INVAL);
    CHECK_DETAIL("IPv6");
    CHECK_RC(kms_repl_peer_url_normalize("https://[]:1", out), KMS_ERR_INVAL);
    CHECK_DETAIL("IPv6");
    CHECK_RC(kms_repl_peer_url_normalize("https://[::g]:1", out), KMS_ERR_INVAL);
    CHECK_DETAIL("IPv6");
    CHECK_RC(kms_repl_peer_url_normalize("https://[::1]x", out), KMS_ERR_INVAL);
    CHECK_DETAIL("port must be a number");
    CHECK_RC(kms_repl_peer_url_normalize("https://a b", out), KMS_ERR_INVAL);
    CHECK_DETAIL("only letters");
}

/* The peer status of url in a /health peers array, or NULL. */
static const char *status_of(json_t *arr, const char *url)
{
    json_t *e;
    size_t i;

    json_array_foreach(arr, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "url")), url) == 0)
            return json_string_value(json_object_get(e, "status"));
    }
    return NULL;
}

/* Waits (bounded) until the thread has a verdict on every listed peer. */
static json_t *peers_checked(struct kms_repl *r, size_t want)
{
    for (int i = 0; i < 400; i++) {
        json_t *arr = kms_repl_peers_json(r);
        size_t done = 0, k;
        json_t *e;

        json_array_foreach(arr, k, e)
        {
            done += strcmp(json_string_value(json_object_get(e, "status")), "unknown") != 0;
        }
        if (done == want && json_array_size(arr) == want)
            return arr;
        json_decref(arr);
        usleep(50000);
    }
    return kms_repl_peers_json(r);
}

/* struct kms_repl as a node owns it, but with no node at all (the interface replication
 * offers): operator adds and removes before kms_repl_start go to the persisted list; after it,
 * the thread checks the listed peers against the identity it was given (a consistent fake
 * peer is up, a dead URL down and the node degraded), /health's peers JSON and the metrics
 * report them, and this node's own URL is refused as a peer. */
static const char *g_tmpdir;

static void test_repl_owned(void)
{
    static const char dead[] = "https://127.0.0.1:1";
    char url[64], dir[300], norm[KMS_REPL_URL_MAX], line[400];
    struct kms_http_server *srv = fake_start(C_GOOD, url);
    struct kms_seal_cfg seal = {.provider = "file"};
    struct kms_store *st = NULL;
    struct kms_repl_cfg cfg;
    struct kms_repl_identity id;
    struct kms_repl *r = NULL;
    struct kms_buf b = {0};
    json_t *arr;

    g_mode = F_HONEST;
    snprintf(dir, sizeof(dir), "%s/repl", g_tmpdir);
    CHECK_OK(kms_mkdir_p(dir, 0700));
    CHECK_OK(kms_store_open(dir, &seal, &st));
    memset(&cfg, 0, sizeof(cfg));
    cfg.store = st;
    cfg.actx = g_actx;
    cfg.listen = "127.0.0.1:9";
    cfg.interval_ms = 10000; /* checks at start and when a peer is added; RPC timeout 5 s */
    CHECK_OK(kms_repl_new(&cfg, &r));
    arr = kms_repl_peers_json(r);
    CHECK(json_array_size(arr) == 0);
    json_decref(arr);
    CHECK_RC(kms_repl_peer_add(r, url, norm), 1);
    CHECK(strcmp(norm, url) == 0);
    CHECK_RC(kms_repl_peer_add(r, url, NULL), 0);
    CHECK_RC(kms_repl_peer_add(r, dead, NULL), 1);
    CHECK_RC(kms_repl_peer_remove(r, "https://127.0.0.1:2", NULL), KMS_ERR_NOTFOUND);
    CHECK(kms_repl_degraded(r) == 0);

    memset(&id, 0, sizeof(id));
    id.root_ca_key = g_x.ca;
    id.root_k256 = g_x.k256;
    id.k256_pubkey = g_x.k256_pub;
    id.ca_spki = g_x.spki;
    id.ca_spki_len = g_x.spki_len;
    id.domain = "127.0.0.1";
    CHECK_OK(kms_repl_start(r, &id));
    CHECK_RC(kms_repl_peer_add(r, "https://127.0.0.1:9/", NULL), KMS_ERR_INVAL);
    CHECK_DETAIL("this node's own URL");
    arr = peers_checked(r, 2);
    CHECK(status_of(arr, url) != NULL && strcmp(status_of(arr, url), "up") == 0);
    CHECK(status_of(arr, dead) != NULL && strcmp(status_of(arr, dead), "down") == 0);
    json_decref(arr);
    CHECK(kms_repl_degraded(r) == 1);
    CHECK_OK(kms_repl_metrics(r, &b));
    CHECK_OK(kms_buf_put_u8(&b, 0));
    snprintf(line, sizeof(line), "kmsd_peer_identity_consistent{peer=\"%s\"} 1\n", url);
    CHECK(b.data != NULL && strstr((const char *)b.data, line) != NULL);
    snprintf(line, sizeof(line), "kmsd_peer_up{peer=\"%s\"} 0\n", dead);
    CHECK(b.data != NULL && strstr((const char *)b.data, line) != NULL);
    /* Removing the dead peer ends the degradation at once. */
    CHECK_OK(kms_repl_peer_remove(r, dead, NULL));
    CHECK(kms_repl_degraded(r) == 0);
    kms_repl_free(r);
    kms_store_close(st);
    kms_buf_free(&b);
    kms_http_stop(srv);
}

/* Waits (bounded) until url's status in r's peer list is want (NULL: until url is gone);
 * returns the last status seen, or NULL. Caller frees *arr. */
static const char *status_when(struct kms_repl *r, const char *url, const char *want, json_t **arr)
{
    for (int i = 0; i < 1500; i++) {
        const char *s;

        *arr = kms_repl_peers_json(r);
        s = status_of(*arr, url);
        if ((want == NULL && s == NULL) || (want != NULL && s != NULL && strcmp(s, want) == 0))
            return s;
        json_decref(*arr);
        usleep(20000);
    }
    *arr = kms_repl_peers_json(r);
    return status_of(*arr, url);
}

/* The persisted peer list (store meta "peers") has url, with pending_since iff pending. */
static int persisted_as(struct kms_store *st, const char *url, int pending)
{
    char *txt = NULL;
    json_t *arr, *e;
    size_t i;
    int found = 0;

    if (kms_store_meta_get(st, "peers", &txt) < 0)
        return 0;
    arr = json_loads(txt, 0, NULL);
    free(txt);
    json_array_foreach(arr, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "url")), url) == 0)
            found = (json_object_get(e, "pending_since") != NULL) == pending;
    }
    json_decref(arr);
    return found;
}

/* Issue 10 item 4: a node that onboarded from us is a candidate, not a peer, until a check
 * finds it serving our identity; it never degrades us; unconfirmed ones expire (and vanish
 * from the persisted list); an operator's add confirms one; a candidate recorded before the
 * thread started stays a candidate; an unusable advertised URL is ignored. */
static void test_candidates(void)
{
    static const char dead[] = "https://127.0.0.1:1";
    static const char dead2[] = "https://127.0.0.1:2";
    static const char early[] = "https://127.0.0.1:3";
    char url[64], dir[300];
    struct kms_http_server *srv = fake_start(C_GOOD, url);
    struct kms_seal_cfg seal = {.provider = "file"};
    struct kms_store *st = NULL;
    struct kms_repl_cfg cfg;
    struct kms_repl_identity id;
    struct kms_repl *r = NULL;
    struct kms_buf b = {0};
    json_t *arr = NULL;

    g_mode = F_HONEST;
    snprintf(dir, sizeof(dir), "%s/cand", g_tmpdir);
    CHECK_OK(kms_mkdir_p(dir, 0700));
    CHECK_OK(kms_store_open(dir, &seal, &st));
    memset(&cfg, 0, sizeof(cfg));
    cfg.store = st;
    cfg.actx = g_actx;
    cfg.listen = "127.0.0.1:9";
    cfg.interval_ms = 2000; /* RPC timeout 1 s: the honest fake answers under load */
    CHECK_OK(kms_repl_new(&cfg, &r));
    kms_repl_peer_joined(r, early); /* before start: persisted as a candidate */
    CHECK(persisted_as(st, early, 1));
    kms_repl_peer_joined(r, "https://a/x"); /* invalid: ignored */
    kms_repl_peer_joined(r, NULL);
    memset(&id, 0, sizeof(id));
    id.root_ca_key = g_x.ca;
    id.root_k256 = g_x.k256;
    id.k256_pubkey = g_x.k256_pub;
    id.ca_spki = g_x.spki;
    id.ca_spki_len = g_x.spki_len;
    id.domain = "127.0.0.1";
    CHECK_OK(kms_repl_start(r, &id));
    kms_repl_peer_joined(r, dead);
    kms_repl_peer_joined(r, url);
    kms_repl_peer_joined(r, dead2);
    /* The honest one is confirmed by a check and persisted as a peer. */
    CHECK(status_when(r, url, "up", &arr) != NULL);
    json_decref(arr);
    CHECK(persisted_as(st, url, 0));
    /* The dead ones are checked but stay pending and do not degrade us. */
    CHECK(status_when(r, dead, "pending", &arr) != NULL);
    json_decref(arr);
    CHECK(kms_repl_degraded(r) == 0);
    CHECK_OK(kms_repl_metrics(r, &b));
    CHECK_OK(kms_buf_put_u8(&b, 0));
    CHECK(b.data != NULL && strstr((const char *)b.data, "kmsd_peer_candidates 3\n") != NULL);
    CHECK(b.data != NULL &&
          strstr((const char *)b.data, "kmsd_peer_up{peer=\"https://127.0.0.1:1\"}") == NULL);
    /* An operator's add confirms dead2: now a real (down) peer, which degrades us. */
    CHECK_RC(kms_repl_peer_add(r, dead2, NULL), 1);
    CHECK(persisted_as(st, dead2, 0));
    CHECK(status_when(r, dead2, "down", &arr) != NULL);
    json_decref(arr);
    CHECK(kms_repl_degraded(r) == 1);
    kms_repl_free(r);

    /* Restarted with a 1 s window: the persisted candidates keep their deadline and expire,
     * also from the persisted list; the confirmed peers stay. */
    cfg.confirm_window_s = 1;
    cfg.interval_ms = 200;
    CHECK_OK(kms_repl_new(&cfg, &r));
    CHECK_OK(kms_repl_start(r, &id));
    CHECK(status_when(r, dead, NULL, &arr) == NULL);
    json_decref(arr);
    CHECK(status_when(r, early, NULL, &arr) == NULL);
    json_decref(arr);
    CHECK(!persisted_as(st, dead, 1) && !persisted_as(st, dead, 0));
    CHECK(!persisted_as(st, early, 1));
    CHECK(persisted_as(st, url, 0) && persisted_as(st, dead2, 0));
    kms_repl_free(r);
    kms_store_close(st);
    kms_buf_free(&b);
    kms_http_stop(srv);
}

int main(void)
{
    char tmpl[] = "/tmp/kms-peers-XXXXXX";
    char d1[300], d2[300], cmd[400];
    const char *tmp;

    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tmp = mkdtemp(tmpl);
    if (tmp == NULL)
        return 1;
    snprintf(d1, sizeof(d1), "%s/sim", tmp);
    snprintf(d2, sizeof(d2), "%s/sim-other", tmp);
    if (kms_sim_open(d1, &g_sim) < 0 || kms_sim_open(d2, &g_sim_other) < 0) {
        fprintf(stderr, "cannot open sim: %s\n", kms_err_detail());
        return 1;
    }
    g_actx = kms_attest_ctx_new();
    CHECK(g_actx != NULL &&
          kms_attest_ctx_add_root(g_actx, KMS_ROOT_TDX, kms_sim_root(g_sim), 1) == 0);
    ident_new(&g_x);
    ident_new(&g_y);
    RUN(test_url_normalize);
    RUN(test_challenge_verify_unit);
    RUN(test_up);
    RUN(test_challenge_catches_lying_meta);
    RUN(test_meta_mismatch);
    RUN(test_cert_checks);
    RUN(test_down_and_hanging);
    g_tmpdir = tmp;
    RUN(test_repl_owned);
    RUN(test_candidates);
    ident_free(&g_x);
    ident_free(&g_y);
    kms_attest_ctx_free(g_actx);
    kms_sim_free(g_sim);
    kms_sim_free(g_sim_other);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot clean %s\n", tmp);
    curl_global_cleanup();
    TEST_MAIN_END();
}
