/*
 * AIA path building for the GCP AK chain (attest/aia.c): a test hierarchy root → intermediate
 * → AK leaf whose AIA caIssuers URL points at an in-process libmicrohttpd server on 127.0.0.1
 * that serves the intermediate. Only the root is ever pinned.
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "attest/aia.h"
#include "attest/internal.h"
#include "attest/tpm.h"
#include "common/buf.h"
#include "test.h"

/* ---------------------------------------------------------------- certificates */

static EVP_PKEY *p256(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");

    if (k == NULL)
        exit(2);
    return k;
}

static void add_ext(X509 *c, X509 *issuer, int nid, const char *val)
{
    X509V3_CTX v;
    X509_EXTENSION *e;

    X509V3_set_ctx(&v, issuer, c, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &v, nid, val);
    if (e == NULL || X509_add_ext(c, e, -1) != 1)
        exit(2);
    X509_EXTENSION_free(e);
}

/* "CN=<cn>" for key, valid [now + nb_s, now + na_s]; self-signed when issuer == NULL; a CA when
 * ca; with an AIA caIssuers URI when aia != NULL. */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, int ca,
                       const char *aia, long nb_s, long na_s)
{
    static long serial = 1;
    X509 *c = X509_new();
    X509_NAME *n = X509_NAME_new();
    char buf[2300];

    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), serial++);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(c, n);
    X509_set_issuer_name(c, issuer != NULL ? X509_get_subject_name(issuer) : n);
    X509_NAME_free(n);
    X509_time_adj_ex(X509_getm_notBefore(c), 0, nb_s, NULL);
    X509_time_adj_ex(X509_getm_notAfter(c), 0, na_s, NULL);
    X509_set_pubkey(c, key);
    add_ext(c, c, NID_subject_key_identifier, "hash");
    add_ext(c, issuer != NULL ? issuer : c, NID_authority_key_identifier, "keyid:always");
    add_ext(c, c, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    add_ext(c, c, NID_key_usage, ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    if (aia != NULL) {
        snprintf(buf, sizeof(buf), "caIssuers;URI:%s", aia);
        add_ext(c, c, NID_info_access, buf);
    }
    if (X509_sign(c, issuer_key != NULL ? issuer_key : key, EVP_sha256()) <= 0)
        exit(2);
    return c;
}

static uint8_t *der_of(X509 *x, size_t *len)
{
    unsigned char *p = NULL;
    int n = i2d_X509(x, &p);

    if (n <= 0)
        exit(2);
    *len = (size_t)n;
    return p;
}

/* ---------------------------------------------------------------- in-process AIA server */

#define MAX_ROUTES 64

struct route {
    char path[64];
    uint8_t *body;
    size_t len;
    unsigned status;
    int delay_ms;
    int hits;
};

struct server {
    struct MHD_Daemon *d;
    unsigned short port;
    pthread_mutex_t mu;
    struct route r[MAX_ROUTES];
    size_t n;
    int requests; /* all paths */
    int stopping;
};

static struct server srv;

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_size, void **state)
{
    struct server *s = cls;
    struct MHD_Response *resp;
    uint8_t *body = NULL;
    size_t len = 0;
    unsigned status = 404;
    int delay = 0;
    enum MHD_Result ret;

    (void)method;
    (void)version;
    (void)upload_data;
    (void)upload_size;
    (void)state;
    pthread_mutex_lock(&s->mu);
    s->requests++;
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->r[i].path, url) == 0) {
            s->r[i].hits++;
            status = s->r[i].status;
            delay = s->r[i].delay_ms;
            len = s->r[i].len;
            body = malloc(len + 1);
            memcpy(body, s->r[i].body, len);
        }
    }
    pthread_mutex_unlock(&s->mu);
    for (int waited = 0; waited < delay; waited += 20) {
        if (__atomic_load_n(&s->stopping, __ATOMIC_SEQ_CST))
            break;
        usleep(20000);
    }
    if (body == NULL)
        resp = MHD_create_response_from_buffer(9, (void *)"not found", MHD_RESPMEM_PERSISTENT);
    else
        resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void server_start(void)
{
    struct sockaddr_in sa;
    const union MHD_DaemonInfo *info;

    memset(&srv, 0, sizeof(srv));
    pthread_mutex_init(&srv.mu, NULL);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    srv.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                             NULL, NULL, handler, &srv, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_END);
    if (srv.d == NULL)
        exit(2);
    info = MHD_get_daemon_info(srv.d, MHD_DAEMON_INFO_BIND_PORT);
    srv.port = info->port;
}

static void server_stop(void)
{
    __atomic_store_n(&srv.stopping, 1, __ATOMIC_SEQ_CST);
    MHD_stop_daemon(srv.d);
    for (size_t i = 0; i < srv.n; i++)
        free(srv.r[i].body);
    pthread_mutex_destroy(&srv.mu);
}

/* Serves body (copied) at path; returns the full URL in a static-per-call buffer of the caller. */
static void serve(const char *path, const void *body, size_t len, unsigned status, int delay_ms)
{
    struct route *r;

    pthread_mutex_lock(&srv.mu);
    if (srv.n >= MAX_ROUTES)
        exit(2);
    r = &srv.r[srv.n++];
    snprintf(r->path, sizeof(r->path), "%s", path);
    r->body = malloc(len + 1);
    memcpy(r->body, body, len);
    r->len = len;
    r->status = status;
    r->delay_ms = delay_ms;
    pthread_mutex_unlock(&srv.mu);
}

static void serve_cert(const char *path, X509 *x)
{
    size_t len;
    uint8_t *d = der_of(x, &len);

    serve(path, d, len, 200, 0);
    OPENSSL_free(d);
}

static int hits(const char *path)
{
    int n = -1;

    pthread_mutex_lock(&srv.mu);
    for (size_t i = 0; i < srv.n; i++) {
        if (strcmp(srv.r[i].path, path) == 0)
            n = srv.r[i].hits;
    }
    pthread_mutex_unlock(&srv.mu);
    return n;
}

static int total_requests(void)
{
    int n;

    pthread_mutex_lock(&srv.mu);
    n = srv.requests;
    pthread_mutex_unlock(&srv.mu);
    return n;
}

static const char *url_of(const char *path)
{
    static char buf[8][256];
    static int k;

    k = (k + 1) % 8;
    snprintf(buf[k], sizeof(buf[k]), "http://127.0.0.1:%u%s", srv.port, path);
    return buf[k];
}

/* ---------------------------------------------------------------- shared hierarchy */

static EVP_PKEY *root_key, *inter_key, *ak_key;
static X509 *root, *inter;

static struct kms_attest_ctx *ctx_aia(long timeout_ms, int enabled)
{
    struct kms_attest_ctx *c = kms_attest_ctx_new();

    if (c == NULL || kms_attest_ctx_add_root(c, KMS_ROOT_GCP, root, 0) < 0)
        exit(2);
    if (enabled && kms_attest_ctx_set_aia_fetch(c, 1, timeout_ms) < 0)
        exit(2);
    return c;
}

/* AK leaf for ak_key under inter with caIssuers URL url. */
static X509 *ak_leaf(const char *url)
{
    return make_cert("AIA test AK", ak_key, inter, inter_key, 0, url, -3600, 86400);
}

static int verify_leaf(const struct kms_attest_ctx *c, X509 *leaf)
{
    int is_sim = -1;

    return kms_aia_verify_chain(c, KMS_ROOT_GCP, leaf, NULL, "TPM AK certificate chain", &is_sim);
}

static long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ---------------------------------------------------------------- software TPM quote */

static const uint8_t qd[32] = {0xa1, 0xa2, 0xa3};

static void put16(struct kms_buf *b, uint16_t v)
{
    CHECK_OK(kms_buf_put_u16be(b, v));
}

/* A TPM2_Quote over sha256 PCRs 0, 2, 14 (values 0x01.., 0x02.., 0x03..) with extraData qd,
 * ECDSA-P256 signed by ak_key, carrying ak_cert. *q must be zeroed. */
static void soft_quote(X509 *ak_cert, struct kms_tpm_quote *q)
{
    static const uint32_t pcrs[3] = {0, 2, 14};
    struct kms_buf m = {0}, sg = {0};
    uint8_t vals[3][32], digest[32], bitmap[3] = {0, 0, 0}, der[128], rb[32], sb[32];
    size_t der_len = sizeof(der);
    const uint8_t *dp = der;
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    ECDSA_SIG *sig;
    const BIGNUM *r, *s;

    for (size_t i = 0; i < 3; i++) {
        memset(vals[i], (int)(i + 1), 32);
        bitmap[pcrs[i] / 8] |= (uint8_t)(1u << (pcrs[i] % 8));
    }
    EVP_Digest(vals, sizeof(vals), digest, NULL, EVP_sha256(), NULL);
    CHECK_OK(kms_buf_put_u32be(&m, 0xff544347u));
    put16(&m, 0x8018);
    put16(&m, 2);
    put16(&m, 0x000b);
    put16(&m, sizeof(qd));
    CHECK_OK(kms_buf_put(&m, qd, sizeof(qd)));
    CHECK_OK(kms_buf_put_u64be(&m, 1));
    CHECK_OK(kms_buf_put_u32be(&m, 0));
    CHECK_OK(kms_buf_put_u32be(&m, 0));
    CHECK_OK(kms_buf_put_u8(&m, 1));
    CHECK_OK(kms_buf_put_u64be(&m, 0));
    CHECK_OK(kms_buf_put_u32be(&m, 1));
    put16(&m, KMS_TPM_ALG_SHA256);
    CHECK_OK(kms_buf_put_u8(&m, 3));
    CHECK_OK(kms_buf_put(&m, bitmap, 3));
    put16(&m, 32);
    CHECK_OK(kms_buf_put(&m, digest, 32));
    q->message.p = kms_buf_steal(&m, &q->message.len);

    CHECK(EVP_DigestSignInit(mctx, NULL, EVP_sha256(), NULL, ak_key) == 1);
    CHECK(EVP_DigestSign(mctx, der, &der_len, q->message.p, q->message.len) == 1);
    sig = d2i_ECDSA_SIG(NULL, &dp, (long)der_len);
    CHECK(sig != NULL);
    ECDSA_SIG_get0(sig, &r, &s);
    BN_bn2binpad(r, rb, 32);
    BN_bn2binpad(s, sb, 32);
    put16(&sg, 0x0018);
    put16(&sg, 0x000b);
    put16(&sg, 32);
    CHECK_OK(kms_buf_put(&sg, rb, 32));
    put16(&sg, 32);
    CHECK_OK(kms_buf_put(&sg, sb, 32));
    q->signature.p = kms_buf_steal(&sg, &q->signature.len);
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(mctx);

    q->pcrs = calloc(3, sizeof(*q->pcrs));
    for (size_t i = 0; i < 3; i++) {
        q->pcrs[i].index = pcrs[i];
        q->pcrs[i].algorithm = strdup("sha256");
        q->pcrs[i].value.p = malloc(32);
        memcpy(q->pcrs[i].value.p, vals[i], 32);
        q->pcrs[i].value.len = 32;
    }
    q->n_pcrs = 3;
    q->platform = 1;
    {
        size_t len;
        uint8_t *d = der_of(ak_cert, &len);

        q->ak_cert.p = malloc(len);
        memcpy(q->ak_cert.p, d, len);
        q->ak_cert.len = len;
        OPENSSL_free(d);
    }
}

/* ---------------------------------------------------------------- tests */

/* End to end: a TPM quote whose AK certificate is issued by an intermediate the evidence does
 * not carry verifies with only the root pinned, by fetching the intermediate once; the second
 * verification is served from the cache (the server sees one request). With fetching disabled
 * (never enabled, or switched off) the same quote fails with KMS_ERR_ATT_CHAIN as before. */
static void test_tpm_quote_via_aia(void)
{
    struct kms_tpm_quote q;
    struct kms_verified v;
    struct kms_attest_ctx *c = ctx_aia(2000, 1);
    struct kms_attest_ctx *off = ctx_aia(0, 0);
    struct kms_aia_stats st;
    X509 *leaf;

    serve_cert("/e2e/inter.crt", inter);
    leaf = ak_leaf(url_of("/e2e/inter.crt"));
    memset(&q, 0, sizeof(q));
    memset(&v, 0, sizeof(v));
    soft_quote(leaf, &q);

    CHECK_OK(kms_tpm_verify(c, &q, qd, sizeof(qd), &v));
    CHECK(v.sim == 0 && v.pcr[0][0] == 1 && v.pcr[1][0] == 2 && v.pcr[2][0] == 3);
    CHECK(hits("/e2e/inter.crt") == 1);
    CHECK_OK(kms_tpm_verify(c, &q, qd, sizeof(qd), &v));
    CHECK(hits("/e2e/inter.crt") == 1);
    kms_aia_get_stats(c->aia, &st);
    CHECK(st.fetches == 1 && st.hits == 1 && st.entries == 1);

    /* the quote is still checked after the chain: a wrong qualifying data fails as usual */
    CHECK_RC(kms_tpm_verify(c, &q, qd, 16, &v), KMS_ERR_ATT_REPORT_DATA);

    /* fetching never enabled: CHAIN, nothing fetched */
    CHECK_RC(kms_tpm_verify(off, &q, qd, sizeof(qd), &v), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("unable to get local issuer certificate");
    CHECK(hits("/e2e/inter.crt") == 1);
    /* switched off after use: the cache goes with it */
    CHECK_OK(kms_attest_ctx_set_aia_fetch(c, 0, 0));
    CHECK(c->aia == NULL);
    CHECK_RC(kms_tpm_verify(c, &q, qd, sizeof(qd), &v), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("TPM AK certificate chain does not verify to the pinned root");
    CHECK(hits("/e2e/inter.crt") == 1);
    CHECK_RC(kms_attest_ctx_set_aia_fetch(c, 1, -1), KMS_ERR_INVAL);

    kms_tpm_quote_clear(&q);
    X509_free(leaf);
    kms_attest_ctx_free(c);
    kms_attest_ctx_free(off);
}

/* A PEM answer works as well as DER; the cache is keyed by URL (two leaves naming one URL cost
 * one request); an intermediate the evidence already carries is used without fetching. */
static void test_pem_and_cache_key(void)
{
    struct kms_attest_ctx *c = ctx_aia(2000, 1);
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem;
    long n;
    X509 *a, *b;
    STACK_OF(X509) *given = sk_X509_new_null();
    int is_sim = -1;

    PEM_write_bio_X509(bio, inter);
    n = BIO_get_mem_data(bio, &pem);
    serve("/pem/inter.pem", pem, (size_t)n, 200, 0);
    BIO_free(bio);
    a = ak_leaf(url_of("/pem/inter.pem"));
    b = ak_leaf(url_of("/pem/inter.pem"));
    CHECK_OK(verify_leaf(c, a));
    CHECK_OK(verify_leaf(c, b));
    CHECK(hits("/pem/inter.pem") == 1);

    sk_X509_push(given, inter);
    kms_aia_flush(c->aia);
    CHECK_OK(kms_aia_verify_chain(c, KMS_ROOT_GCP, a, given, "AK chain", &is_sim));
    CHECK(is_sim == 0);
    CHECK(hits("/pem/inter.pem") == 1);
    sk_X509_free(given);
    X509_free(a);
    X509_free(b);
    kms_attest_ctx_free(c);
}

/* Server down: KMS_ERR_ATT_CHAIN naming the URL and the connection failure. */
static void test_server_down(void)
{
    struct kms_attest_ctx *c = ctx_aia(2000, 1);
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char url[128];
    X509 *leaf;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    close(fd); /* nothing listens on this port now */
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/down/inter.crt", ntohs(sa.sin_port));
    leaf = ak_leaf(url);
    CHECK_RC(verify_leaf(c, leaf), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL(url);
    CHECK_DETAIL("failed: Couldn't connect to server");
    X509_free(leaf);
    kms_attest_ctx_free(c);
}

/* Slow server: the verification fails within the timeout plus one second, saying so. */
static void test_slow_server(void)
{
    struct kms_attest_ctx *c = ctx_aia(1000, 1);
    size_t len;
    uint8_t *d = der_of(inter, &len);
    X509 *leaf;
    long t0, dt;

    serve("/slow/inter.crt", d, len, 200, 4000);
    OPENSSL_free(d);
    leaf = ak_leaf(url_of("/slow/inter.crt"));
    t0 = mono_ms();
    CHECK_RC(verify_leaf(c, leaf), KMS_ERR_ATT_CHAIN);
    dt = mono_ms() - t0;
    CHECK_DETAIL("no answer within");
    CHECK_DETAIL(url_of("/slow/inter.crt"));
    CHECK(dt >= 900 && dt < 2000);
    X509_free(leaf);
    kms_attest_ctx_free(c);
}

/* Wrong answers: garbage, an oversized body, a certificate that is not the issuer, HTTP 404,
 * truncated DER; each fails with KMS_ERR_ATT_CHAIN and its own detail, and nothing is cached. */
static void test_bad_answers(void)
{
    struct kms_attest_ctx *c = ctx_aia(2000, 1);
    struct kms_aia_stats st;
    uint8_t junk[512];
    uint8_t *big = calloc(1, KMS_AIA_MAX_CERT + 4096);
    EVP_PKEY *k = p256();
    X509 *other = make_cert("Some other CA", k, NULL, NULL, 1, NULL, -3600, 86400);
    size_t len;
    uint8_t *d = der_of(inter, &len);
    static const struct {
        const char *path;
        const char *detail;
    } cases[] = {
        {"/bad/garbage", "neither a DER nor a PEM certificate"},
        {"/bad/big", "exceeds 65536 bytes"},
        {"/bad/other.crt", "is not the issuer of"},
        {"/bad/missing", "HTTP 404"},
        {"/bad/truncated", "neither a DER nor a PEM certificate"},
    };

    RAND_bytes(junk, sizeof(junk));
    junk[0] = 0x01; /* not a SEQUENCE */
    serve("/bad/garbage", junk, sizeof(junk), 200, 0);
    big[0] = 0x30;
    serve("/bad/big", big, KMS_AIA_MAX_CERT + 4096, 200, 0);
    serve_cert("/bad/other.crt", other);
    serve("/bad/truncated", d, len - 1, 200, 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        X509 *leaf = ak_leaf(url_of(cases[i].path));

        CHECK_RC(verify_leaf(c, leaf), KMS_ERR_ATT_CHAIN);
        CHECK_DETAIL(cases[i].detail);
        CHECK_DETAIL(url_of(cases[i].path));
        X509_free(leaf);
    }
    kms_aia_get_stats(c->aia, &st);
    CHECK(st.entries == 0 && st.fetches == 5);
    OPENSSL_free(d);
    free(big);
    X509_free(other);
    EVP_PKEY_free(k);
    kms_attest_ctx_free(c);
}

/* Non-http schemes (file://, ftp://, even at our server's port) and malformed URLs are refused
 * without any request; a certificate without AIA fails as before, saying it has no URL. */
static void test_refused_schemes(void)
{
    struct kms_attest_ctx *c = ctx_aia(2000, 1);
    const int before = total_requests();
    char ftp[128];
    const char *urls[3];
    X509 *leaf;

    snprintf(ftp, sizeof(ftp), "ftp://127.0.0.1:%u/e2e/inter.crt", srv.port);
    urls[0] = "file:///etc/passwd";
    urls[1] = ftp;
    urls[2] = "gopher://127.0.0.1/x";
    for (int i = 0; i < 3; i++) {
        leaf = ak_leaf(urls[i]);
        CHECK_RC(verify_leaf(c, leaf), KMS_ERR_ATT_CHAIN);
        CHECK_DETAIL("only http and https caIssuers URLs on the allowed hosts are followed");
        CHECK_DETAIL(urls[i]);
        X509_free(leaf);
    }
    CHECK(total_requests() == before);
    CHECK(!kms_aia_url_allowed("http://exa mple/"));
    CHECK(!kms_aia_url_allowed("httpx://example/"));
    CHECK(!kms_aia_url_allowed(""));
    CHECK(kms_aia_url_allowed("HTTPS://example/ca.crt"));

    leaf = ak_leaf(NULL);
    CHECK_RC(verify_leaf(c, leaf), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("carries no caIssuers URL");
    X509_free(leaf);
    kms_attest_ctx_free(c);
}

/* The fetched certificate is untrusted: a forged intermediate (same name, own key) served at
 * the URL, self-signed or under an unpinned root that is fetched too, never becomes an anchor. */
/* A host allow-list: URLs on other hosts (including look-alike suffixes) are refused without
 * a request; the listed host (or a subdomain of a listed suffix) is fetched. */
static void test_host_allow_list(void)
{
    struct kms_attest_ctx *c = ctx_aia(2000, 1);
    const char *google[] = {"googleapis.com"};
    const char *local[] = {"127.0.0.1"};
    const char *bad[] = {".googleapis.com"};
    const int before = total_requests();
    char url[128];
    X509 *leaf;

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/e2e/inter.crt", srv.port);
    leaf = ak_leaf(url);
    CHECK_OK(kms_attest_ctx_set_aia_hosts(c, google, 1));
    CHECK_RC(verify_leaf(c, leaf), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("on the allowed hosts");
    CHECK(total_requests() == before);
    X509_free(leaf);
    leaf = ak_leaf("http://evil-googleapis.com/inter.crt");
    CHECK_RC(verify_leaf(c, leaf), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("on the allowed hosts");
    X509_free(leaf);
    leaf = ak_leaf("http://user@x.googleapis.com/inter.crt");
    CHECK_RC(verify_leaf(c, leaf), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("on the allowed hosts");
    X509_free(leaf);
    CHECK(total_requests() == before);
    CHECK_RC(kms_attest_ctx_set_aia_hosts(c, bad, 1), KMS_ERR_INVAL);
    CHECK_OK(kms_attest_ctx_set_aia_hosts(c, local, 1));
    leaf = ak_leaf(url);
    CHECK_OK(verify_leaf(c, leaf));
    X509_free(leaf);
    kms_attest_ctx_free(c);
    c = kms_attest_ctx_new();
    CHECK_RC(kms_attest_ctx_set_aia_hosts(c, local, 1), KMS_ERR_STATE);
    kms_attest_ctx_free(c);
}

static void test_forged_intermediate(void)
{
    struct kms_attest_ctx *c = ctx_aia(2000, 1);
    struct kms_aia_stats st;
    EVP_PKEY *fk = p256(), *frk = p256();
    X509 *fake_self = make_cert("AIA test intermediate", fk, NULL, NULL, 1, NULL, -3600, 86400);
    X509 *fake_root = make_cert("AIA test root", frk, NULL, NULL, 1, NULL, -3600, 86400);
    X509 *fake_inter = make_cert("AIA test intermediate", fk, fake_root, frk, 1,
                                 url_of("/forged/root.crt"), -3600, 86400);
    X509 *leaf;

    serve_cert("/forged/self.crt", fake_self);
    serve_cert("/forged/inter.crt", fake_inter);
    serve_cert("/forged/root.crt", fake_root);
    leaf = make_cert("AIA test AK", ak_key, fake_self, fk, 0, url_of("/forged/self.crt"), -3600,
                     86400);
    CHECK_RC(verify_leaf(c, leaf), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("self-signed certificate in certificate chain");
    CHECK_DETAIL("after 1 AIA fetch");
    X509_free(leaf);
    leaf = make_cert("AIA test AK", ak_key, fake_inter, fk, 0, url_of("/forged/inter.crt"), -3600,
                     86400);
    CHECK_RC(verify_leaf(c, leaf), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("after 2 AIA fetches");
    CHECK(hits("/forged/root.crt") == 1);
    kms_aia_get_stats(c->aia, &st);
    CHECK(st.entries == 0);
    X509_free(leaf);
    X509_free(fake_self);
    X509_free(fake_root);
    X509_free(fake_inter);
    EVP_PKEY_free(fk);
    EVP_PKEY_free(frk);
    kms_attest_ctx_free(c);
}

/* Builds root → i1 → ... → i<levels> → leaf, each i<k> (k >= 2) and the leaf pointing at its
 * issuer's URL /hops<levels>/i<k>.crt; returns the leaf. */
static X509 *deep_chain(int levels)
{
    EVP_PKEY *keys[8];
    X509 *certs[8];
    X509 *leaf;
    char path[64];
    const char *prev_url = NULL;

    for (int k = 1; k <= levels; k++) {
        keys[k] = p256();
        snprintf(path, sizeof(path), "AIA deep intermediate %d", k);
        certs[k] = make_cert(path, keys[k], k == 1 ? root : certs[k - 1],
                             k == 1 ? root_key : keys[k - 1], 1, prev_url, -3600, 86400);
        snprintf(path, sizeof(path), "/hops%d/i%d.crt", levels, k);
        serve_cert(path, certs[k]);
        prev_url = url_of(path);
    }
    leaf = make_cert("AIA deep AK", ak_key, certs[levels], keys[levels], 0, prev_url, -3600, 86400);
    for (int k = 1; k <= levels; k++) {
        X509_free(certs[k]);
        EVP_PKEY_free(keys[k]);
    }
    return leaf;
}

/* Hop limit: three missing intermediates are fetched (and reach the pinned root); four are not
 * (KMS_ERR_ATT_CHAIN after three fetches). */
static void test_hop_limit(void)
{
    struct kms_attest_ctx *c = ctx_aia(3000, 1);
    struct kms_aia_stats st;
    X509 *three = deep_chain(3);
    X509 *four = deep_chain(4);

    CHECK_OK(verify_leaf(c, three));
    kms_aia_get_stats(c->aia, &st);
    CHECK(st.fetches == 3 && st.entries == 3);
    CHECK_RC(verify_leaf(c, four), KMS_ERR_ATT_CHAIN);
    CHECK_DETAIL("no pinned root reached after 3 issuer fetches");
    CHECK(hits("/hops4/i1.crt") == 0 && hits("/hops4/i2.crt") == 1);
    X509_free(three);
    X509_free(four);
    kms_attest_ctx_free(c);
}

/* A fetched intermediate that completes the path but is expired at the verification time fails
 * with KMS_ERR_ATT_EXPIRED (the time is wrong, not the path), and is not cached. */
static void test_expired_intermediate(void)
{
    struct kms_attest_ctx *c = ctx_aia(2000, 1);
    struct kms_aia_stats st;
    EVP_PKEY *k = p256();
    X509 *old = make_cert("AIA old intermediate", k, root, root_key, 1, NULL, -7200, -3600);
    X509 *leaf =
        make_cert("AIA test AK", ak_key, old, k, 0, url_of("/expired/i.crt"), -3600, 86400);

    serve_cert("/expired/i.crt", old);
    CHECK_RC(verify_leaf(c, leaf), KMS_ERR_ATT_EXPIRED);
    CHECK_DETAIL("depth 1");
    kms_aia_get_stats(c->aia, &st);
    CHECK(st.entries == 0);
    X509_free(leaf);
    X509_free(old);
    EVP_PKEY_free(k);
    kms_attest_ctx_free(c);
}

/* Cache bounds: with one entry, a second URL evicts the first (re-fetched afterwards); an entry
 * is not reused past max_age_s, nor past the certificate's notAfter (the verification time is
 * fixed so the chain itself stays valid). */
static void test_cache_bounds(void)
{
    struct kms_aia_opts o1 = {.timeout_ms = 2000, .max_entries = 1};
    struct kms_aia_opts o2 = {.timeout_ms = 2000, .max_age_s = 1};
    struct kms_aia *a1 = NULL, *a2 = NULL;
    struct kms_attest_ctx *c1 = ctx_aia(0, 0), *c2 = ctx_aia(0, 0), *c3 = ctx_aia(2000, 1);
    EVP_PKEY *k = p256();
    X509 *inter2 = make_cert("AIA second intermediate", k, root, root_key, 1, NULL, -3600, 86400);
    X509 *short_lived = make_cert("AIA short intermediate", k, root, root_key, 1, NULL, -3600, 2);
    X509 *la, *lb, *lc, *ld;

    CHECK_OK(kms_aia_new(&o1, &a1));
    CHECK_OK(kms_aia_new(&o2, &a2));
    kms_attest_ctx_set_aia(c1, a1);
    kms_attest_ctx_set_aia(c2, a2);
    kms_attest_ctx_set_time(c3, time(NULL));
    serve_cert("/bound/a.crt", inter);
    serve_cert("/bound/b.crt", inter2);
    serve_cert("/bound/age.crt", inter);
    serve_cert("/bound/short.crt", short_lived);
    la = ak_leaf(url_of("/bound/a.crt"));
    lb = make_cert("AIA test AK", ak_key, inter2, k, 0, url_of("/bound/b.crt"), -3600, 86400);
    lc = ak_leaf(url_of("/bound/age.crt"));
    ld = make_cert("AIA test AK", ak_key, short_lived, k, 0, url_of("/bound/short.crt"), -3600,
                   86400);

    CHECK_OK(verify_leaf(c1, la));
    CHECK_OK(verify_leaf(c1, lb));
    CHECK_OK(verify_leaf(c1, la));
    CHECK(hits("/bound/a.crt") == 2 && hits("/bound/b.crt") == 1);

    CHECK_OK(verify_leaf(c2, lc));
    CHECK_OK(verify_leaf(c2, lc));
    CHECK(hits("/bound/age.crt") == 1);
    CHECK_OK(verify_leaf(c3, ld));
    CHECK_OK(verify_leaf(c3, ld));
    CHECK(hits("/bound/short.crt") == 1);
    sleep(3);
    CHECK_OK(verify_leaf(c2, lc));
    CHECK(hits("/bound/age.crt") == 2);
    CHECK_OK(verify_leaf(c3, ld));
    CHECK(hits("/bound/short.crt") == 2);

    X509_free(la);
    X509_free(lb);
    X509_free(lc);
    X509_free(ld);
    X509_free(inter2);
    X509_free(short_lived);
    EVP_PKEY_free(k);
    kms_attest_ctx_free(c1);
    kms_attest_ctx_free(c2);
    kms_attest_ctx_free(c3);
}

struct par {
    struct kms_attest_ctx *c;
    X509 *leaf;
    int failures;
};

static void *par_run(void *arg)
{
    struct par *p = arg;

    for (int i = 0; i < 10; i++) {
        if (verify_leaf(p->c, p->leaf) != 0)
            p->failures++;
    }
    return NULL;
}

/* Thread safety: eight threads verifying through one ctx all succeed; the intermediate is
 * fetched at most once per thread (usually once). */
static void test_concurrent(void)
{
    struct kms_attest_ctx *c = ctx_aia(3000, 1);
    pthread_t th[8];
    struct par p[8];
    X509 *leaf;

    serve_cert("/par/inter.crt", inter);
    leaf = ak_leaf(url_of("/par/inter.crt"));
    for (int i = 0; i < 8; i++) {
        p[i] = (struct par){.c = c, .leaf = leaf};
        CHECK(pthread_create(&th[i], NULL, par_run, &p[i]) == 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK(p[i].failures == 0);
    }
    CHECK(hits("/par/inter.crt") >= 1 && hits("/par/inter.crt") <= 8);
    X509_free(leaf);
    kms_attest_ctx_free(c);
}

int main(void)
{
    /* the AIA server is on loopback; a proxy from the environment must not be used */
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("https_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    root_key = p256();
    inter_key = p256();
    ak_key = p256();
    root = make_cert("AIA test root", root_key, NULL, NULL, 1, NULL, -3600, 10L * 365 * 86400);
    inter = make_cert("AIA test intermediate", inter_key, root, root_key, 1, NULL, -3600,
                      5L * 365 * 86400);
    server_start();

    RUN(test_tpm_quote_via_aia);
    RUN(test_pem_and_cache_key);
    RUN(test_server_down);
    RUN(test_slow_server);
    RUN(test_bad_answers);
    RUN(test_refused_schemes);
    RUN(test_host_allow_list);
    RUN(test_forged_intermediate);
    RUN(test_hop_limit);
    RUN(test_expired_intermediate);
    RUN(test_cache_bounds);
    RUN(test_concurrent);

    server_stop();
    X509_free(root);
    X509_free(inter);
    EVP_PKEY_free(root_key);
    EVP_PKEY_free(inter_key);
    EVP_PKEY_free(ak_key);
    TEST_MAIN_END();
}
