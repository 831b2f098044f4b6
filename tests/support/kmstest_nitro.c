/* Fake NSM, CONNECT proxy and vsock receiver for the Nitro tests (kmstest_nitro.h). */
#include "kmstest_nitro.h"

#include <arpa/inet.h>
#include <cbor.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "attest/attest.h"
#include "attest/sim.h"

static int io_all(int fd, void *p, size_t n, int wr)
{
    uint8_t *b = p;

    while (n > 0) {
        ssize_t k = wr ? write(fd, b, n) : read(fd, b, n);

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

static int unix_listen(const char *path)
{
    struct sockaddr_un sa;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (s < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    unlink(path);
    if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(s, 8) != 0) {
        close(s);
        return -1;
    }
    return s;
}

/* ---------------------------------------------------------------- fake NSM */

static const cbor_item_t *map_get(const cbor_item_t *m, const char *k)
{
    struct cbor_pair *p = cbor_map_handle(m);

    for (size_t i = 0; i < cbor_map_size(m); i++) {
        if (cbor_isa_string(p[i].key) && cbor_string_length(p[i].key) == strlen(k) &&
            memcmp(cbor_string_handle(p[i].key), k, strlen(k)) == 0)
            return p[i].value;
    }
    return NULL;
}

/* Records what the client asked for; returns the user_data (borrowed) or NULL. */
static void record(struct kmstest_nsm *n, const uint8_t *req, size_t len)
{
    struct cbor_load_result res;
    cbor_item_t *top = cbor_load(req, len, &res);
    const cbor_item_t *body = NULL, *ud = NULL, *nonce = NULL, *pk = NULL;

    pthread_mutex_lock(&n->lock);
    n->n_requests++;
    n->last_ok_shape = 0;
    n->last_user_data_len = 0;
    if (top != NULL && res.read == len && cbor_isa_map(top) && cbor_map_size(top) == 1)
        body = map_get(top, "Attestation");
    if (body != NULL && cbor_isa_map(body) && cbor_map_size(body) == 3) {
        ud = map_get(body, "user_data");
        nonce = map_get(body, "nonce");
        pk = map_get(body, "public_key");
    }
    if (ud != NULL && nonce != NULL && pk != NULL) {
        n->last_ok_shape = 1;
        n->last_nonce_null = cbor_is_null(nonce);
        n->last_public_key_null = cbor_is_null(pk);
        if (cbor_isa_bytestring(ud) && cbor_bytestring_length(ud) <= sizeof(n->last_user_data)) {
            n->last_user_data_len = cbor_bytestring_length(ud);
            memcpy(n->last_user_data, cbor_bytestring_handle(ud), n->last_user_data_len);
        }
    }
    pthread_mutex_unlock(&n->lock);
    if (top != NULL)
        cbor_decref(&top);
}

/* {"Attestation": {"document": doc}} or {"Error": name}, serialized (caller frees). */
static uint8_t *nsm_answer(const uint8_t *doc, size_t doc_len, const char *error, size_t *len)
{
    cbor_item_t *top = cbor_new_definite_map(1), *body = NULL;
    unsigned char *buf = NULL;
    size_t cap = 0;

    if (error != NULL) {
        cbor_map_add(top, (struct cbor_pair){.key = cbor_move(cbor_build_string("Error")),
                                             .value = cbor_move(cbor_build_string(error))});
    } else {
        body = cbor_new_definite_map(1);
        cbor_map_add(body,
                     (struct cbor_pair){.key = cbor_move(cbor_build_string("document")),
                                        .value = cbor_move(cbor_build_bytestring(doc, doc_len))});
        cbor_map_add(top, (struct cbor_pair){.key = cbor_move(cbor_build_string("Attestation")),
                                             .value = cbor_move(body)});
    }
    *len = cbor_serialize_alloc(top, &buf, &cap);
    cbor_decref(&top);
    return buf;
}

static void nsm_serve(struct kmstest_nsm *n, int c)
{
    uint8_t req[0x1000];
    uint32_t len, rlen = 0;
    int32_t err = 0;
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    struct kms_attestation *att = NULL;

    if (io_all(c, &len, 4, 0) < 0 || len > sizeof(req) || io_all(c, req, len, 0) < 0)
        return;
    record(n, req, len);
    if (n->mode == KMSTEST_NSM_NOT_NSM) {
        err = ENOTTY;
    } else if (n->mode == KMSTEST_NSM_ERROR) {
        resp = nsm_answer(NULL, 0, "InvalidArgument", &resp_len);
    } else if (n->mode == KMSTEST_NSM_GARBAGE) {
        resp = malloc(8);
        if (resp != NULL)
            memcpy(resp,
                   "\xa1\x63"
                   "Bad\xf6\xff\xff",
                   8);
        resp_len = 8;
    } else {
        /* the user_data the client sent becomes the document's, like the real NSM */
        pthread_mutex_lock(&n->lock);
        int ok = n->last_ok_shape && n->last_user_data_len == 64;
        uint8_t ud[64];

        if (ok)
            memcpy(ud, n->last_user_data, 64);
        pthread_mutex_unlock(&n->lock);
        if (ok &&
            kms_sim_nitro_attest(n->sim_dir, (const uint8_t(*)[48])n->pcrs, ud, NULL, &att) == 0)
            resp = nsm_answer(att->nsm_quote.p, att->nsm_quote.len, NULL, &resp_len);
        else
            resp = nsm_answer(NULL, 0, "InvalidArgument", &resp_len);
        kms_att_free(att);
    }
    rlen = (uint32_t)resp_len;
    if (io_all(c, &err, 4, 1) == 0 && io_all(c, &rlen, 4, 1) == 0 && rlen > 0)
        (void)io_all(c, resp, rlen, 1);
    free(resp);
}

static void *nsm_thread(void *arg)
{
    struct kmstest_nsm *n = arg;

    for (;;) {
        int c = accept(n->lfd, NULL, NULL);

        if (c < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        nsm_serve(n, c);
        close(c);
    }
    return NULL;
}

int kmstest_nsm_start(struct kmstest_nsm *n, const char *dir, const char *sim_dir,
                      const uint8_t pcrs[3][48])
{
    char sock[300];
    int fd;

    memset(n, 0, sizeof(*n));
    pthread_mutex_init(&n->lock, NULL);
    snprintf(n->dev, sizeof(n->dev), "%s/nsm", dir);
    snprintf(n->sim_dir, sizeof(n->sim_dir), "%s", sim_dir);
    memcpy(n->pcrs, pcrs, sizeof(n->pcrs));
    fd = open(n->dev, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    close(fd);
    snprintf(sock, sizeof(sock), "%s.sock", n->dev);
    n->lfd = unix_listen(sock);
    if (n->lfd < 0)
        return -1;
    return pthread_create(&n->th, NULL, nsm_thread, n) == 0 ? 0 : -1;
}

void kmstest_nsm_stop(struct kmstest_nsm *n)
{
    shutdown(n->lfd, SHUT_RDWR);
    pthread_join(n->th, NULL);
    close(n->lfd);
    pthread_mutex_destroy(&n->lock);
}

/* ---------------------------------------------------------------- CONNECT proxy */

#define PROXY_HDR_MAX 8192

struct tunnel {
    struct kmstest_proxy *p;
    int c;
};

/* Copies both ways until either side closes. */
static void relay(int a, int b)
{
    struct pollfd pf[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
    char buf[16384];

    for (;;) {
        if (poll(pf, 2, 30000) <= 0)
            return;
        for (int i = 0; i < 2; i++) {
            ssize_t k;

            if ((pf[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0)
                continue;
            k = read(pf[i].fd, buf, sizeof(buf));
            if (k <= 0 || io_all(pf[1 - i].fd, buf, (size_t)k, 1) < 0)
                return;
        }
    }
}

static void *tunnel_thread(void *arg)
{
    struct tunnel *t = arg;
    char hdr[PROXY_HDR_MAX + 1];
    size_t len = 0;
    char host[64];
    unsigned port = 0;
    int up = -1;

    /* read the request head, bounded */
    while (len < PROXY_HDR_MAX) {
        ssize_t k = read(t->c, hdr + len, PROXY_HDR_MAX - len);

        if (k <= 0)
            goto out;
        len += (size_t)k;
        hdr[len] = '\0';
        if (strstr(hdr, "\r\n\r\n") != NULL)
            break;
    }
    if (strstr(hdr, "\r\n\r\n") == NULL ||
        sscanf(hdr, "CONNECT %63[^:]:%u HTTP/1.", host, &port) != 2 || t->p->refuse ||
        strcmp(host, "127.0.0.1") != 0 || port == 0 || port > 65535) {
        static const char no[] = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";

        (void)io_all(t->c, (void *)no, sizeof(no) - 1, 1);
        goto out;
    }
    {
        struct sockaddr_in sa;
        static const char yes[] = "HTTP/1.1 200 Connection established\r\n\r\n";

        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (up < 0 || connect(up, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            static const char bad[] = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";

            (void)io_all(t->c, (void *)bad, sizeof(bad) - 1, 1);
            goto out;
        }
        pthread_mutex_lock(&t->p->lock);
        t->p->n_connects++;
        pthread_mutex_unlock(&t->p->lock);
        if (io_all(t->c, (void *)yes, sizeof(yes) - 1, 1) < 0)
            goto out;
        /* a client sends nothing after the head before the 200, so no bytes are pending */
        relay(t->c, up);
    }
out:
    if (up >= 0)
        close(up);
    close(t->c);
    free(t);
    return NULL;
}

static void *proxy_thread(void *arg)
{
    struct kmstest_proxy *p = arg;

    for (;;) {
        int c = accept(p->lfd, NULL, NULL);
        struct tunnel *t;
        pthread_t th;

        if (c < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        t = malloc(sizeof(*t));
        if (t == NULL) {
            close(c);
            continue;
        }
        t->p = p;
        t->c = c;
        if (pthread_create(&th, NULL, tunnel_thread, t) != 0) {
            close(c);
            free(t);
            continue;
        }
        pthread_detach(th);
    }
    return NULL;
}

int kmstest_proxy_start(struct kmstest_proxy *p, int refuse)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);

    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    p->refuse = refuse;
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(p->lfd, 16) != 0 || getsockname(p->lfd, (struct sockaddr *)&sa, &sl) != 0)
        return -1;
    p->port = ntohs(sa.sin_port);
    return pthread_create(&p->th, NULL, proxy_thread, p) == 0 ? 0 : -1;
}

void kmstest_proxy_stop(struct kmstest_proxy *p)
{
    shutdown(p->lfd, SHUT_RDWR);
    pthread_join(p->th, NULL);
    close(p->lfd);
}

/* ---------------------------------------------------------------- vsock receiver */

static void *rx_thread(void *arg)
{
    struct kmstest_vsock_rx *r = arg;
    int c = accept(r->lfd, NULL, NULL);
    size_t cap = 1u << 20;

    if (c < 0)
        return NULL;
    r->data = malloc(cap);
    while (r->data != NULL && r->len < cap) {
        ssize_t k = read(c, r->data + r->len, cap - r->len);

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        r->len += (size_t)k;
    }
    r->done = 1;
    close(c);
    return NULL;
}

int kmstest_vsock_rx_start(struct kmstest_vsock_rx *r, const char *dir, unsigned cid, unsigned port)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->path, sizeof(r->path), "%s/vsock-%u-%u", dir, cid, port);
    r->lfd = unix_listen(r->path);
    if (r->lfd < 0)
        return -1;
    return pthread_create(&r->th, NULL, rx_thread, r) == 0 ? 0 : -1;
}

void kmstest_vsock_rx_finish(struct kmstest_vsock_rx *r)
{
    struct pollfd pf = {.fd = r->lfd, .events = POLLIN};

    /* nobody connected and nobody waits in the backlog: wake accept(); else the thread reads
     * the connection to its end */
    if (!r->done && poll(&pf, 1, 0) == 0)
        shutdown(r->lfd, SHUT_RD);
    pthread_join(r->th, NULL);
    close(r->lfd);
    unlink(r->path);
}
