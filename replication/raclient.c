/* RA-TLS pRPC client over libcurl (OpenSSL backend), used by kmsctl and by onboarding. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/crypto/crypto.h"
#include "common/fetch.h"
#include "common/log.h"
#include "replication/replication.h"

#define RPC_MAX_RESPONSE (4u * 1024u * 1024u)

struct check_ctx {
    const struct kms_rpc_opts *o;
    int rc;
    char detail[1024];
    int want_leaf; /* read the server leaf certificate after the transfer */
    X509 *leaf;
    int leaf_rc;
    char leaf_detail[256];
};

static int verify_cb(X509_STORE_CTX *sctx, void *arg)
{
    struct check_ctx *cc = arg;
    X509 *leaf = X509_STORE_CTX_get0_cert(sctx);

    if (cc->o->ca_pem != NULL && X509_verify_cert(sctx) != 1) {
        cc->rc =
            kms_err_set(KMS_ERR_VERIFY, "server certificate does not chain to the pinned CA: %s",
                        X509_verify_cert_error_string(X509_STORE_CTX_get_error(sctx)));
        snprintf(cc->detail, sizeof(cc->detail), "%s", kms_err_detail());
        return 0;
    }
    cc->rc = cc->o->server_check(cc->o->server_check_arg, leaf);
    if (cc->rc < 0) {
        snprintf(cc->detail, sizeof(cc->detail), "%s", kms_err_detail());
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return 1;
}

static CURLcode ssl_ctx_cb(CURL *c, void *ssl_ctx, void *arg)
{
    (void)c;
    SSL_CTX_set_cert_verify_callback((SSL_CTX *)ssl_ctx, verify_cb, arg);
    return CURLE_OK;
}

static int server_leaf(CURL *c, X509 **out)
{
    struct curl_certinfo *ci = NULL;
    int rc = 0;

    *out = NULL;
    if (curl_easy_getinfo(c, CURLINFO_CERTINFO, &ci) != CURLE_OK || ci == NULL ||
        ci->num_of_certs < 1)
        return kms_err_set(KMS_ERR_NET, "the server presented no certificate");
    for (struct curl_slist *s = ci->certinfo[0]; s != NULL; s = s->next) {
        if (strncmp(s->data, "Cert:", 5) == 0) {
            BIO *bio = BIO_new_mem_buf(s->data + 5, -1);

            if (bio != NULL) {
                *out = PEM_read_bio_X509(bio, NULL, NULL, NULL);
                BIO_free(bio);
            }
            break;
        }
    }
    if (*out == NULL)
        rc = kms_err_set(KMS_ERR_PARSE, "cannot read the server certificate");
    return rc;
}

struct kms_rpc_session {
    CURLSH *share; /* the connection cache of the session's calls */
    int pre_fd;    /* connecting socket not yet handed to libcurl; -1 = none */
    struct sockaddr_storage pre_addr;
    socklen_t pre_len;
    int handed_fd;       /* pre_fd just handed over: already connected */
    long pre_timeout_ms; /* how long the taking call waits for it */
};

int kms_rpc_session_new(struct kms_rpc_session **out)
{
    struct kms_rpc_session *s = calloc(1, sizeof(*s));
    int rc = 0;

    *out = NULL;
    KMS_GUARD_PTR(s);
    s->pre_fd = -1;
    s->handed_fd = -1;
    s->share = curl_share_init();
    KMS_ENSURE(s->share != NULL, KMS_ERR_NOMEM, "cannot create an HTTP connection cache");
    KMS_ENSURE(curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) == CURLSHE_OK,
               KMS_ERR_INTERNAL, "libcurl cannot share connections between calls");
    *out = s;
    s = NULL;
out:
    kms_rpc_session_free(s);
    return rc;
}

void kms_rpc_session_free(struct kms_rpc_session *s)
{
    if (s == NULL)
        return;
    if (s->share != NULL)
        curl_share_cleanup(s->share);
    if (s->pre_fd >= 0)
        close(s->pre_fd);
    free(s);
}

/* Whether libcurl may send calls through a proxy (o->proxy semantics): then a connection
 * opened ahead to the server itself would go unused. */
static int proxy_may_apply(const char *proxy)
{
    static const char *const vars[] = {"https_proxy", "HTTPS_PROXY", "http_proxy",
                                       "all_proxy",   "ALL_PROXY",   NULL};

    if (proxy != NULL)
        return proxy[0] != '\0';
    for (size_t i = 0; vars[i] != NULL; i++) {
        const char *v = getenv(vars[i]);

        if (v != NULL && v[0] != '\0')
            return 1;
    }
    return 0;
}

void kms_rpc_session_preconnect(struct kms_rpc_session *s, const char *url, const char *proxy)
{
    struct addrinfo hints, *ai = NULL;
    char *host = NULL, *port = NULL;
    CURLU *u = NULL;
    int fd = -1;

    if (s == NULL || s->pre_fd >= 0 || proxy_may_apply(proxy))
        return;
    u = curl_url();
    if (u == NULL)
        goto out;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        goto out;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* an IPv6 literal comes bracketed */
    if (host[0] == '[') {
        size_t hl = strlen(host);

        if (hl < 2 || host[hl - 1] != ']')
            goto out;
        host[hl - 1] = '\0';
        memmove(host, host + 1, hl - 1);
    }
    if (getaddrinfo(host, port, &hints, &ai) != 0 || ai == NULL ||
        ai->ai_addrlen > sizeof(s->pre_addr))
        goto out;
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        goto out;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS)
        goto out;
    memcpy(&s->pre_addr, ai->ai_addr, ai->ai_addrlen);
    s->pre_len = ai->ai_addrlen;
    s->pre_fd = fd;
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    if (ai != NULL)
        freeaddrinfo(ai);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
}

/* Hands libcurl the session's pre-connected socket when it asks for one to that address (not a
 * proxy's, say), once the connection completed; anything else gets a new socket. */
static curl_socket_t open_socket_cb(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct kms_rpc_session *s = arg;
    int fd = s->pre_fd, err = 0;
    socklen_t el = sizeof(err);
    struct pollfd pfd;

    if (purpose == CURLSOCKTYPE_IPCXN && fd >= 0 && a->addrlen == s->pre_len &&
        memcmp(&a->addr, &s->pre_addr, s->pre_len) == 0) {
        s->pre_fd = -1;
        pfd.fd = fd;
        pfd.events = POLLOUT;
        pfd.revents = 0;
        if (poll(&pfd, 1, (int)s->pre_timeout_ms) == 1 &&
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0) {
            s->handed_fd = fd;
            return fd;
        }
        close(fd); /* not connected in time: connect afresh */
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static int sockopt_cb(void *arg, curl_socket_t fd, curlsocktype purpose)
{
    struct kms_rpc_session *s = arg;

    (void)purpose;
    if (fd == s->handed_fd) {
        s->handed_fd = -1;
        return CURL_SOCKOPT_ALREADY_CONNECTED;
    }
    return CURL_SOCKOPT_OK;
}

/* TLS options of a call (kms_fetch setup callback): CA pinning, client certificate, the
 * server check. */
static int rpc_setup(CURL *c, void *arg)
{
    struct check_ctx *chk = arg;
    const struct kms_rpc_opts *o = chk->o;

    if (o->proxy != NULL) /* NULL: libcurl's environment proxies; "": none */
        curl_easy_setopt(c, CURLOPT_PROXY, o->proxy);
    if (o->ca_pem != NULL) {
        struct curl_blob ca = {(void *)o->ca_pem, strlen(o->ca_pem), CURL_BLOB_COPY};

        curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &ca);
        curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, o->no_host_check ? 0L : 2L);
    } else {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (o->client_cert_pem != NULL) {
        struct curl_blob cert = {(void *)o->client_cert_pem, strlen(o->client_cert_pem),
                                 CURL_BLOB_COPY};
        struct curl_blob key = {(void *)o->client_key_pem, strlen(o->client_key_pem),
                                CURL_BLOB_COPY};

        curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &cert);
        curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &key);
        curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
    }
    if (chk->want_leaf)
        curl_easy_setopt(c, CURLOPT_CERTINFO, 1L);
    if (o->session != NULL) {
        o->session->pre_timeout_ms =
            o->timeout_ms > 0 && o->timeout_ms < 5000 ? o->timeout_ms : 5000;
        curl_easy_setopt(c, CURLOPT_SHARE, o->session->share);
        if (o->session->pre_fd >= 0) {
            curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
            curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, o->session);
            curl_easy_setopt(c, CURLOPT_SOCKOPTFUNCTION, sockopt_cb);
            curl_easy_setopt(c, CURLOPT_SOCKOPTDATA, o->session);
        }
    }
    if (o->server_check != NULL) {
        /* Our callback must run even without a pinned CA, so peer verification stays on and
         * the callback itself decides. */
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
        curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, chk);
    }
    return 0;
}

/* After the transfer (kms_fetch done callback): keeps the server leaf when asked for; a
 * failure is reported by kms_rpc_call after the answer's own checks. */
static int rpc_done(CURL *c, void *arg)
{
    struct check_ctx *chk = arg;

    if (chk->want_leaf) {
        chk->leaf_rc = server_leaf(c, &chk->leaf);
        if (chk->leaf_rc < 0)
            snprintf(chk->leaf_detail, sizeof(chk->leaf_detail), "%s", kms_err_detail());
    }
    return 0;
}

int kms_rpc_call(const struct kms_rpc_opts *o, const char *method, const char *body, json_t **resp,
                 X509 **server_cert)
{
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};
    struct kms_fetch_req req = {0};
    struct kms_fetch_resp fr = {0};
    char url[2048];
    size_t ul = strlen(o->url);
    long timeout = o->timeout_ms > 0 ? o->timeout_ms : 10000;
    json_error_t jerr;
    json_t *j = NULL;
    struct check_ctx chk;
    int rc = 0;

    memset(&chk, 0, sizeof(chk));
    chk.o = o;
    chk.want_leaf = server_cert != NULL;
    *resp = NULL;
    if (server_cert != NULL)
        *server_cert = NULL;
    while (ul > 0 && o->url[ul - 1] == '/')
        ul--;
    KMS_ENSURE(ul < 1500, KMS_ERR_INVAL, "URL too long");
    if (ul >= 5 && strncmp(o->url + ul - 5, "/prpc", 5) == 0)
        snprintf(url, sizeof(url), "%.*s/%s?json", (int)ul, o->url, method);
    else
        snprintf(url, sizeof(url), "%.*s/prpc/%s?json", (int)ul, o->url, method);
    req.url = url;
    req.post = body != NULL ? body : "{}";
    req.post_len = strlen(req.post);
    req.headers = hdrs;
    req.timeout_ms = timeout;
    req.connect_timeout_ms = timeout < 5000 ? timeout : 5000L;
    req.max_body = RPC_MAX_RESPONSE;
    req.setup = rpc_setup;
    req.done = rpc_done;
    req.arg = &chk;
    rc = kms_fetch(&req, &fr);
    if (chk.rc < 0) {
        rc = kms_err_set(chk.rc, "%s", chk.detail);
        goto out;
    }
    if (rc == KMS_ERR_TIMEOUT) {
        rc = kms_err_set(KMS_ERR_TIMEOUT, "%s: no answer from %.*s within %ld ms", method, (int)ul,
                         o->url, timeout);
        goto out;
    }
    KMS_ENSURE(rc != KMS_ERR_TOOBIG, KMS_ERR_TOOBIG, "%s: response larger than %u bytes", method,
               RPC_MAX_RESPONSE);
    KMS_ENSURE(rc != KMS_ERR_NET, KMS_ERR_NET, "%s: cannot reach %.*s: %s", method, (int)ul, o->url,
               kms_fetch_why(&fr));
    KMS_GUARD(rc);
    j = json_loadb(fr.body.data != NULL ? (const char *)fr.body.data : "", fr.body.len,
                   JSON_DECODE_ANY, &jerr);
    if (fr.status == 400 && json_is_object(j) && json_is_string(json_object_get(j, "error"))) {
        rc = kms_err_set(KMS_ERR_REPL_RPC, "%s", json_string_value(json_object_get(j, "error")));
        goto out;
    }
    KMS_ENSURE(fr.status == 200, KMS_ERR_NET, "%s: HTTP status %ld from %.*s", method, fr.status,
               (int)ul, o->url);
    KMS_ENSURE(j != NULL, KMS_ERR_PARSE, "%s: invalid JSON response: %s", method, jerr.text);
    if (server_cert != NULL) {
        if (chk.leaf_rc < 0) {
            rc = kms_err_set(chk.leaf_rc, "%s", chk.leaf_detail);
            goto out;
        }
        *server_cert = chk.leaf;
        chk.leaf = NULL;
    }
    *resp = j;
    j = NULL;
out:
    X509_free(chk.leaf);
    json_decref(j);
    kms_fetch_resp_free(&fr);
    return rc;
}

void kms_ra_identity_clear(struct kms_ra_identity *id)
{
    free(id->cert_pem);
    if (id->key_pem != NULL)
        kms_free_secret(id->key_pem, strlen(id->key_pem));
    memset(id, 0, sizeof(*id));
}

int kms_ra_identity_new(const char *tmp_ca_cert_pem, const char *tmp_ca_key_pem,
                        kms_attest_fn producer, void *arg, struct kms_ra_identity *out)
{
    EVP_PKEY *key = NULL, *ca_key = NULL;
    X509 *ca = NULL, *cert = NULL;
    struct kms_attestation *att = NULL;
    struct kms_cert_params p;
    uint8_t rd[64];
    int rc = 0;

    memset(out, 0, sizeof(*out));
    memset(&p, 0, sizeof(p));
    KMS_GUARD(kms_cert_from_pem(tmp_ca_cert_pem, &ca));
    KMS_GUARD(kms_pkey_from_pem(tmp_ca_key_pem, &ca_key));
    KMS_GUARD(kms_p256_generate(&key));
    KMS_GUARD(kms_report_data_for_pkey(key, rd));
    KMS_GUARD(producer(arg, rd, &att));
    p.cn = "RA-TLS TEMP Cert";
    p.path_len = -1;
    p.att = att;
    KMS_GUARD(kms_cert_issue(&p, key, ca_key, ca, &cert));
    KMS_GUARD(kms_cert_to_pem(cert, &out->cert_pem));
    KMS_GUARD(kms_pkey_to_pem(key, &out->key_pem));
out:
    if (rc < 0)
        kms_ra_identity_clear(out);
    kms_att_free(att);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
    X509_free(ca);
    X509_free(cert);
    return rc;
}

int kms_check_kms_cert(const struct kms_attest_ctx *actx, X509 *cert,
                       struct kms_attestation **att_out, struct kms_verified *v)
{
    uint8_t *usage = NULL, *spki = NULL;
    size_t ulen = 0;
    int spki_len;
    struct kms_attestation *att = NULL;
    struct kms_verified local;
    int rc = 0;

    memset(&local, 0, sizeof(local));
    if (att_out != NULL)
        *att_out = NULL;
    rc = kms_ratls_get_ext(cert, KMS_OID_CERT_USAGE, &usage, &ulen);
    KMS_ENSURE(rc == 0 && ulen == 7 && memcmp(usage, "kms:rpc", 7) == 0, KMS_ERR_VERIFY,
               "server certificate lacks the kms:rpc usage: not a KMS RPC certificate");
    rc = 0;
    if (actx == NULL)
        goto out;
    rc = kms_ratls_get_attestation(cert, &att);
    if (rc == KMS_ERR_ATT_NONE) {
        rc = kms_err_set(KMS_ERR_ATT_NONE, "server certificate carries no attestation");
        goto out;
    }
    KMS_GUARD(rc);
    spki_len = i2d_PUBKEY(X509_get0_pubkey(cert), &spki);
    KMS_ENSURE(spki_len > 0, KMS_ERR_CRYPTO, "cannot encode the server key");
    rc = kms_attest_verify_bound(actx, att, spki, (size_t)spki_len, v != NULL ? v : &local);
    if (rc < 0) {
        kms_err_wrap(rc, "server attestation does not verify");
        goto out;
    }
    if (att_out != NULL) {
        *att_out = att;
        att = NULL;
    }
out:
    free(usage);
    OPENSSL_free(spki);
    kms_att_free(att);
    kms_verified_free(&local);
    return rc;
}
