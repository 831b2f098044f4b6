/*
 * The dstack guest agent client (dstack_agent.h): HTTP/1.1 over a Unix stream socket, one
 * request per connection, every step under one deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "attest/dstack_agent.h"
#include "common/buf.h"
#include "common/hex.h"

#define AGENT_HEAD_MAX (16u * 1024u)
#define AGENT_MSG_MAX 200u /* characters of an agent error message quoted in ours */
#define AGENT_METHOD_MAX 64u

static long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Waits until fd is ready for ev or the deadline passes. */
static int wait_fd(int fd, short ev, long deadline, const char *path, const char *method)
{
    struct pollfd pfd;
    long left;
    int n;

    for (;;) {
        left = deadline - now_ms();
        if (left <= 0)
            return kms_err_set(KMS_ERR_TIMEOUT,
                               "dstack guest agent at %s: %s did not answer within the timeout",
                               path, method);
        pfd.fd = fd;
        pfd.events = ev;
        pfd.revents = 0;
        n = poll(&pfd, 1, left > 60000L ? 60000 : (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return kms_err_set(KMS_ERR_NET, "dstack guest agent at %s: poll failed: %s", path,
                               strerror(errno));
    }
}

/* Connects with the remaining time as the send timeout (Linux applies it to a Unix connect),
 * then switches the socket to non-blocking for the polled I/O. */
static int agent_connect(const char *path, long deadline, int *fdp)
{
    struct sockaddr_un sa;
    struct timeval tv;
    long left = deadline - now_ms();
    int fd = -1, flags;
    int rc = 0;

    *fdp = -1;
    KMS_ENSURE(path != NULL && path[0] != '\0', KMS_ERR_INVAL,
               "no dstack guest agent socket configured (--dstack-socket)");
    KMS_ENSURE(strlen(path) < sizeof(sa.sun_path), KMS_ERR_INVAL,
               "dstack guest agent socket path %s is longer than %zu bytes", path,
               sizeof(sa.sun_path) - 1);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    KMS_ENSURE(fd >= 0, KMS_ERR_NET, "cannot create a Unix socket: %s", strerror(errno));
    if (left < 1)
        left = 1;
    tv.tv_sec = left / 1000L;
    tv.tv_usec = (left % 1000L) * 1000L;
    KMS_ENSURE(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == 0, KMS_ERR_NET,
               "cannot set a socket timeout: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;

        if (e == ENOENT)
            rc = kms_err_set(KMS_ERR_NOTFOUND,
                             "no dstack guest agent socket at %s: run inside a dstack CVM with "
                             "the socket mounted into the container, or set --dstack-socket",
                             path);
        else if (e == EAGAIN || e == ETIMEDOUT || e == EINPROGRESS)
            rc = kms_err_set(KMS_ERR_TIMEOUT,
                             "dstack guest agent at %s: connect did not complete within the "
                             "timeout",
                             path);
        else
            rc = kms_err_set(KMS_ERR_NET,
                             "cannot connect to the dstack guest agent at %s: %s (is the guest "
                             "agent running?)",
                             path, strerror(e));
        goto out;
    }
    flags = fcntl(fd, F_GETFL);
    KMS_ENSURE(flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0, KMS_ERR_NET,
               "cannot make the agent socket non-blocking: %s", strerror(errno));
    *fdp = fd;
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

static int send_all(int fd, const uint8_t *p, size_t n, long deadline, const char *path,
                    const char *method)
{
    ssize_t w;
    int rc = 0;

    while (n > 0) {
        KMS_GUARD(wait_fd(fd, POLLOUT, deadline, path, method));
        w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        KMS_ENSURE(w > 0, KMS_ERR_NET, "dstack guest agent at %s: sending %s failed: %s", path,
                   method, w < 0 ? strerror(errno) : "connection closed");
        p += w;
        n -= (size_t)w;
    }
out:
    return rc;
}

/* ---------------------------------------------------------------- HTTP answer parsing */

struct answer {
    int status;
    const uint8_t *body; /* into the receive buffer, or dechunked */
    size_t body_len;
    struct kms_buf dechunked;
};

/* Finds "\r\n\r\n" within the first AGENT_HEAD_MAX bytes; the offset after it, 0 if absent. */
static size_t head_end(const uint8_t *p, size_t len)
{
    size_t lim = len < AGENT_HEAD_MAX ? len : AGENT_HEAD_MAX;

    for (size_t i = 3; i < lim; i++) {
        if (p[i - 3] == '\r' && p[i - 2] == '\n' && p[i - 1] == '\r' && p[i] == '\n')
            return i + 1;
    }
    return 0;
}

/* Value of header `name` in head (NUL-terminated copy of the header block) into val. */
static int header_value(const char *head, const char *name, char *val, size_t cap)
{
    size_t nl = strlen(name);
    const char *line = strstr(head, "\r\n");

    while (line != NULL && line[2] != '\0') {
        const char *s = line + 2, *e = strstr(s, "\r\n");
        size_t len;

        if (e == NULL)
            break;
        if ((size_t)(e - s) > nl && strncasecmp(s, name, nl) == 0 && s[nl] == ':') {
            s += nl + 1;
            while (s < e && (*s == ' ' || *s == '\t'))
                s++;
            len = (size_t)(e - s);
            while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
                len--;
            if (len >= cap)
                return -1;
            memcpy(val, s, len);
            val[len] = '\0';
            return 1;
        }
        line = e;
    }
    return 0;
}

/* Decodes a chunked body from p[0..len). 1: complete (into out), 0: needs more bytes. */
static int dechunk(const uint8_t *p, size_t len, struct kms_buf *out, const char *path)
{
    size_t off = 0;
    int rc = 0;

    out->len = 0;
    for (;;) {
        size_t size = 0, i = off;
        int digits = 0;

        while (i < len && p[i] != '\r' && p[i] != ';') {
            int c = p[i], v;

            if (c >= '0' && c <= '9')
                v = c - '0';
            else if (c >= 'a' && c <= 'f')
                v = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F')
                v = c - 'A' + 10;
            else
                return kms_err_set(KMS_ERR_PARSE,
                                   "dstack guest agent at %s: bad chunk size in the answer", path);
            KMS_ENSURE(digits < 8, KMS_ERR_TOOBIG,
                       "dstack guest agent at %s: chunk larger than %u bytes", path,
                       KMS_DSTACK_MAX_ANSWER);
            size = size * 16u + (size_t)v;
            digits++;
            i++;
        }
        while (i + 1 < len && !(p[i] == '\r' && p[i + 1] == '\n'))
            i++; /* chunk extensions */
        if (i + 1 >= len)
            return 0;
        KMS_ENSURE(digits > 0, KMS_ERR_PARSE, "dstack guest agent at %s: empty chunk size", path);
        i += 2;
        if (size == 0)
            return 1; /* trailers, if any, are not needed */
        KMS_ENSURE(size <= KMS_DSTACK_MAX_ANSWER - out->len, KMS_ERR_TOOBIG,
                   "dstack guest agent at %s: answer larger than %u bytes", path,
                   KMS_DSTACK_MAX_ANSWER);
        if (len - i < size + 2)
            return 0;
        KMS_GUARD(kms_buf_put(out, p + i, size));
        KMS_ENSURE(p[i + size] == '\r' && p[i + size + 1] == '\n', KMS_ERR_PARSE,
                   "dstack guest agent at %s: chunk not terminated by CRLF", path);
        off = i + size + 2;
    }
out:
    return rc;
}

/* Parses what has arrived. 1: complete, 0: needs more (or EOF decides), < 0: error. */
static int parse_answer(const uint8_t *p, size_t len, int eof, struct answer *a, const char *path)
{
    char head[AGENT_HEAD_MAX + 1], val[64];
    size_t he = head_end(p, len);
    int hv, rc = 0;

    if (he == 0) {
        KMS_ENSURE(len < AGENT_HEAD_MAX, KMS_ERR_TOOBIG,
                   "dstack guest agent at %s: answer headers exceed %u bytes", path,
                   AGENT_HEAD_MAX);
        KMS_ENSURE(!eof, KMS_ERR_NET,
                   "dstack guest agent at %s: the connection closed before a complete HTTP "
                   "answer (%zu bytes received)",
                   path, len);
        return 0;
    }
    memcpy(head, p, he);
    head[he] = '\0';
    KMS_ENSURE(strncmp(head, "HTTP/1.", 7) == 0 && head[8] == ' ' && head[9] >= '1' &&
                   head[9] <= '5' && head[10] >= '0' && head[10] <= '9' && head[11] >= '0' &&
                   head[11] <= '9',
               KMS_ERR_PARSE, "dstack guest agent at %s: the answer is not HTTP/1.x", path);
    a->status = (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
    hv = header_value(head, "Transfer-Encoding", val, sizeof(val));
    KMS_ENSURE(hv >= 0, KMS_ERR_PARSE, "dstack guest agent at %s: bad Transfer-Encoding", path);
    if (hv == 1 && strcasecmp(val, "chunked") == 0) {
        rc = dechunk(p + he, len - he, &a->dechunked, path);
        if (rc < 0)
            goto out;
        if (rc == 0) {
            KMS_ENSURE(!eof, KMS_ERR_NET,
                       "dstack guest agent at %s: the connection closed mid-answer", path);
            return 0;
        }
        a->body = a->dechunked.data;
        a->body_len = a->dechunked.len;
        return 1;
    }
    KMS_ENSURE(hv == 0, KMS_ERR_PARSE,
               "dstack guest agent at %s: unsupported Transfer-Encoding \"%s\"", path, val);
    hv = header_value(head, "Content-Length", val, sizeof(val));
    KMS_ENSURE(hv >= 0, KMS_ERR_PARSE, "dstack guest agent at %s: bad Content-Length", path);
    if (hv == 1) {
        char *end = NULL;
        unsigned long long cl;

        errno = 0;
        cl = strtoull(val, &end, 10);
        KMS_ENSURE(val[0] >= '0' && val[0] <= '9' && end != NULL && *end == '\0' && errno == 0,
                   KMS_ERR_PARSE, "dstack guest agent at %s: bad Content-Length \"%s\"", path, val);
        KMS_ENSURE(cl <= KMS_DSTACK_MAX_ANSWER, KMS_ERR_TOOBIG,
                   "dstack guest agent at %s: answer of %llu bytes exceeds %u", path, cl,
                   KMS_DSTACK_MAX_ANSWER);
        if (len - he < cl) {
            KMS_ENSURE(!eof, KMS_ERR_NET,
                       "dstack guest agent at %s: the connection closed after %zu of %llu body "
                       "bytes",
                       path, len - he, cl);
            return 0;
        }
        a->body = p + he;
        a->body_len = (size_t)cl;
        return 1;
    }
    if (!eof)
        return 0; /* no length: the body ends with the connection (Connection: close) */
    a->body = p + he;
    a->body_len = len - he;
    return 1;
out:
    return rc;
}

/* Copies an agent's error text into msg, printable ASCII only, truncated. */
static void quote_message(const uint8_t *body, size_t len, char *msg, size_t cap)
{
    json_t *j = json_loadb((const char *)body, len, 0, NULL);
    const char *s = json_string_value(json_object_get(j, "error"));
    size_t n = 0, slen;

    if (s == NULL) {
        s = (const char *)body;
        slen = len;
    } else {
        slen = strlen(s);
    }
    for (size_t i = 0; i < slen && n + 1 < cap; i++)
        msg[n++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    msg[n] = '\0';
    json_decref(j);
}

int kms_dstack_agent_call(const char *socket_path, long timeout_ms, const char *method,
                          const char *body, json_t **out)
{
    long deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : KMS_DSTACK_TIMEOUT_MS);
    struct kms_buf req = {0}, in = {0};
    struct answer a;
    char head[256], msg[AGENT_MSG_MAX + 1];
    json_error_t jerr;
    json_t *j = NULL;
    int fd = -1, eof = 0, n;
    int rc = 0;

    *out = NULL;
    memset(&a, 0, sizeof(a));
    KMS_ENSURE(method != NULL && strlen(method) < AGENT_METHOD_MAX &&
                   strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") ==
                       strlen(method),
               KMS_ERR_INVAL, "bad guest agent method name");
    if (body == NULL)
        body = "{}";
    n = snprintf(head, sizeof(head),
                 "POST /%s HTTP/1.1\r\nHost: dstack\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                 method, strlen(body));
    KMS_ENSURE(n > 0 && (size_t)n < sizeof(head), KMS_ERR_INTERNAL, "request head too long");
    KMS_GUARD(kms_buf_put(&req, head, (size_t)n));
    KMS_GUARD(kms_buf_put(&req, body, strlen(body)));
    KMS_GUARD(agent_connect(socket_path, deadline, &fd));
    KMS_GUARD(send_all(fd, req.data, req.len, deadline, socket_path, method));
    for (;;) {
        ssize_t r;

        rc = parse_answer(in.data, in.len, eof, &a, socket_path);
        if (rc < 0)
            goto out;
        if (rc == 1)
            break;
        KMS_GUARD(wait_fd(fd, POLLIN, deadline, socket_path, method));
        KMS_ENSURE(in.len < KMS_DSTACK_MAX_ANSWER + AGENT_HEAD_MAX, KMS_ERR_TOOBIG,
                   "dstack guest agent at %s: %s answer exceeds %u bytes", socket_path, method,
                   KMS_DSTACK_MAX_ANSWER);
        KMS_GUARD(kms_buf_reserve(&in, 65536));
        r = recv(fd, in.data + in.len, in.cap - in.len, 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        KMS_ENSURE(r >= 0, KMS_ERR_NET,
                   "dstack guest agent at %s: reading the %s answer failed: %s", socket_path,
                   method, strerror(errno));
        if (r == 0)
            eof = 1;
        in.len += (size_t)r;
    }
    rc = 0;
    if (a.status < 200 || a.status > 299) {
        quote_message(a.body, a.body_len, msg, sizeof(msg));
        rc = kms_err_set(KMS_ERR_NET, "dstack guest agent at %s: %s failed (HTTP %d): %s",
                         socket_path, method, a.status, msg[0] != '\0' ? msg : "no message");
        goto out;
    }
    j = json_loadb((const char *)a.body, a.body_len, 0, &jerr);
    KMS_ENSURE(json_is_object(j), KMS_ERR_PARSE,
               "dstack guest agent at %s: the %s answer is not a JSON object", socket_path, method);
    *out = j;
    j = NULL;
out:
    if (fd >= 0)
        close(fd);
    json_decref(j);
    kms_buf_free(&a.dechunked);
    kms_buf_free(&in);
    kms_buf_free(&req);
    return rc;
}

int kms_dstack_agent_attest(const char *socket_path, long timeout_ms, const uint8_t report_data[64],
                            struct kms_attestation **out)
{
    char hex[129], body[160];
    json_t *ans = NULL;
    const char *s;
    uint8_t *bin = NULL;
    size_t len = 0;
    struct kms_attestation *att = NULL;
    int rc = 0;

    *out = NULL;
    kms_hex_encode(report_data, 64, hex);
    snprintf(body, sizeof(body), "{\"report_data\":\"%s\"}", hex);
    KMS_GUARD(kms_dstack_agent_call(socket_path, timeout_ms, "Attest", body, &ans));
    s = json_string_value(json_object_get(ans, "attestation"));
    KMS_ENSURE(s != NULL, KMS_ERR_PARSE,
               "dstack guest agent at %s: the Attest answer has no \"attestation\" string",
               socket_path);
    KMS_ENSURE(strlen(s) <= 2u * KMS_ATT_MAX_BYTES + 2u, KMS_ERR_TOOBIG,
               "dstack guest agent at %s: attestation larger than %u bytes", socket_path,
               KMS_ATT_MAX_BYTES);
    rc = kms_hex_decode(s, &bin, &len);
    if (rc < 0) {
        rc = kms_err_set(KMS_ERR_PARSE, "dstack guest agent at %s: the attestation is not hex",
                         socket_path);
        goto out;
    }
    rc = kms_att_decode(bin, len, &att);
    if (rc < 0) {
        kms_err_wrap(rc,
                     "dstack guest agent at %s: the attestation is not a SCALE "
                     "VersionedAttestation V0",
                     socket_path);
        goto out;
    }
    KMS_ENSURE(att->mode == KMS_ATT_TDX || att->mode == KMS_ATT_GCP_TDX, KMS_ERR_ATT_UNSUPPORTED,
               "dstack guest agent at %s: attestation mode %s; a dstack CVM gives dstack-tdx or "
               "dstack-gcp-tdx",
               socket_path, kms_att_mode_name(att->mode));
    KMS_ENSURE(memcmp(att->report_data, report_data, 64) == 0, KMS_ERR_ATT_REPORT_DATA,
               "dstack guest agent at %s: the attestation is over other report_data than asked "
               "for",
               socket_path);
    *out = att;
    att = NULL;
out:
    kms_att_free(att);
    free(bin);
    json_decref(ans);
    return rc;
}

int kms_dstack_agent_info(const char *socket_path, long timeout_ms, json_t **out)
{
    json_t *ans = NULL;
    const char *app;
    uint8_t *bin = NULL;
    size_t len = 0;
    int rc = 0;

    *out = NULL;
    KMS_GUARD(kms_dstack_agent_call(socket_path, timeout_ms, "Info", NULL, &ans));
    app = json_string_value(json_object_get(ans, "app_id"));
    KMS_ENSURE(app != NULL && kms_hex_decode(app, &bin, &len) == 0, KMS_ERR_PARSE,
               "dstack guest agent at %s: the Info answer has no hex \"app_id\"", socket_path);
    *out = ans;
    ans = NULL;
out:
    free(bin);
    json_decref(ans);
    return rc;
}
