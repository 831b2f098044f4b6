/*
 * Test support for tests that run kmsd processes (integration, replication): a free port, a
 * kmsd started with simulated TDX in a temp dir, its stop, pRPC calls through replication's
 * client, raw HTTP(S) requests and the end-of-test temp dir clean-up.
 *
 * Every kmsd started here uses KMS_BIN_DIR/node/kmsd (set by ctest) with data in tmp/<name>
 * and its stderr appended to tmp/<name>.log. Nothing here checks results: callers do, with
 * test.h (not included here, it defines kms_test_failures).
 */
#ifndef KMSTEST_PROC_H
#define KMSTEST_PROC_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

/* A TCP port on 127.0.0.1 that was free a moment ago (bound, then released); 0 if none. */
unsigned kmstest_free_port(void);

/* Starts kmsd --data-dir tmp/name --sim-dir sim --tee sim --insecure-sim
 * --listen 127.0.0.1:port --name name, then extra (NULL-terminated, may be NULL; at most 32).
 * crash_at (may be NULL) sets KMSD_TEST_CRASH_AT in the child. Returns the child's pid at once
 * (-1 if it could not fork); the caller stops it with kmstest_kmsd_stop or reaps it. */
pid_t kmstest_kmsd_spawn(const char *tmp, const char *name, const char *sim, unsigned port,
                         const char *const *extra, const char *crash_at);

/* Waits until the kmsd on 127.0.0.1:port answers GET /health over HTTP or HTTPS (any status),
 * polling, for at most 120 s. 0 once it answers; -1 (message on stderr) if it did not, or if
 * pid (> 0) exited first; an exited pid is reaped. */
int kmstest_kmsd_wait_up(pid_t pid, unsigned port);

/* kmstest_kmsd_spawn without a crash point, then kmstest_kmsd_wait_up: the listener accepts
 * when it returns (unless kmsd failed: the wait's message is on stderr and the test's next
 * call fails). */
pid_t kmstest_kmsd_start(const char *tmp, const char *name, const char *sim, unsigned port,
                         const char *const *extra);

/* SIGTERM, then waits for the process to exit; pid <= 0 is ignored. */
void kmstest_kmsd_stop(pid_t pid);

/* Timeout of kmstest_call in ms (10000 unless a test sets another before its first call). */
extern int kmstest_rpc_timeout_ms;

/* A pRPC call with replication's kms_rpc_call (no client certificate, server not pinned).
 * *resp is set to NULL first; on success it holds the answer (caller decrefs). Returns the
 * kms_rpc_call code (KMS_ERR_REPL_RPC for a refusal, detail set). */
int kmstest_call(const char *url, const char *method, const char *body, json_t **resp);

/* kmstest_call, discarding the answer. */
int kmstest_call0(const char *url, const char *method, const char *body);

/* Polls GetTempCaCert at url (pause 100 ms between tries) until it answers, for at most 120 s:
 * 0 once it answers, else -1. */
int kmstest_wait_serving(const char *url);

/* Raw HTTP(S) requests without a client certificate and without verifying the server (20 s
 * timeout). The body is written into out (outlen bytes, NUL-terminated when it fits).
 * Return the HTTP status, 0 when nothing answered. */
long kmstest_http_get(const char *url, char *out, size_t outlen);
long kmstest_http_post(const char *url, const char *body, size_t len, char *out, size_t outlen);

/* Status of GET base/health (5 s timeout, body discarded); 0 when nothing answers. */
long kmstest_health(const char *base);

/* End of a test: removes dir (rm -rf) when failures == 0, else prints where the logs are kept. */
void kmstest_tmp_finish(const char *dir, int failures);

#endif
