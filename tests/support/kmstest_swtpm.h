/*
 * Test support: a software TPM (swtpm) for the tests of the vTPM evidence producer and of the
 * "tpm" seal provider. It listens on two consecutive free loopback ports (server, control)
 * with its state in a fresh temp directory.
 */
#ifndef KMSTEST_SWTPM_H
#define KMSTEST_SWTPM_H

#include <sys/types.h>

struct kmstest_swtpm {
    pid_t pid;      /* <= 0 when not running */
    char dir[64];   /* state directory ("" when none) */
    char tcti[128]; /* "swtpm:host=127.0.0.1,port=N" */
};

/* A free loopback TCP port whose successor is free too (bound, then released); -1 if none. */
int kmstest_port_pair(void);

/* Starts swtpm socket --tpm2 (flags not-need-init, startup-clear) into *t, then calls
 * ready(t->tcti, arg) every 50 ms, at most 100 times, until it returns 1 (ready may keep what it
 * opened in arg). Returns 0 when ready, 77 when swtpm is not installed, -1 on failure. Call
 * kmstest_swtpm_stop in every case. */
int kmstest_swtpm_start(struct kmstest_swtpm *t, int (*ready)(const char *tcti, void *arg),
                        void *arg);

/* Stops swtpm and removes its state directory; a no-op for a zeroed or stopped *t. */
void kmstest_swtpm_stop(struct kmstest_swtpm *t);

#endif
