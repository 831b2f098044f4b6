/*
 * Test support for the Nitro client (label nitro): the fake NSM behind nsm_preload.c, a bounded
 * loopback HTTP CONNECT proxy, and a receiver standing in for the parent's vsock listener.
 * Each runs on its own thread in the test process until stopped. Nothing here checks results.
 */
#ifndef KMSTEST_NITRO_H
#define KMSTEST_NITRO_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

enum kmstest_nsm_mode {
    KMSTEST_NSM_OK = 0,  /* a document signed under sim_dir's simulation Nitro root */
    KMSTEST_NSM_ERROR,   /* {"Error": "InvalidArgument"} */
    KMSTEST_NSM_GARBAGE, /* bytes that are not an NSM response */
    KMSTEST_NSM_NOT_NSM, /* the ioctl fails with ENOTTY (not an NSM device) */
};

/* The fake NSM: the device file `dev` (created, empty) and its socket dev.sock. */
struct kmstest_nsm {
    char dev[256];
    char sim_dir[256];
    uint8_t pcrs[3][48];
    enum kmstest_nsm_mode mode;
    int lfd;
    pthread_t th;
    /* the last Attestation request as received (for the test to check) */
    pthread_mutex_t lock;
    int n_requests;
    int last_ok_shape;           /* {"Attestation": {user_data, nonce, public_key}} */
    uint8_t last_user_data[512]; /* valid when last_user_data_len > 0 */
    size_t last_user_data_len;
    int last_nonce_null;
    int last_public_key_null;
};

/* Starts the fake NSM at dir/nsm (pcrs: PCR0..2 of its documents). 0 on success. */
int kmstest_nsm_start(struct kmstest_nsm *n, const char *dir, const char *sim_dir,
                      const uint8_t pcrs[3][48]);
void kmstest_nsm_stop(struct kmstest_nsm *n);

/* A CONNECT proxy on 127.0.0.1:port that tunnels only to 127.0.0.1 (else 403). refuse = answer
 * every CONNECT with 403. */
struct kmstest_proxy {
    unsigned port;
    int refuse;
    int lfd;
    pthread_t th;
    pthread_mutex_t lock;
    int n_connects; /* tunnels opened */
    int stop;
};

int kmstest_proxy_start(struct kmstest_proxy *p, int refuse);
void kmstest_proxy_stop(struct kmstest_proxy *p);

/* The parent's vsock listener, over the Unix socket dir/vsock-CID-PORT that nsm_preload.c maps
 * AF_VSOCK connections to: accepts one connection and keeps what it sends (at most 1 MiB). */
struct kmstest_vsock_rx {
    char path[300];
    int lfd;
    pthread_t th;
    uint8_t *data;
    size_t len;
    int done;
};

int kmstest_vsock_rx_start(struct kmstest_vsock_rx *r, const char *dir, unsigned cid,
                           unsigned port);
/* Waits for the connection to end and stops; r->data / r->len hold what arrived (caller frees
 * r->data). */
void kmstest_vsock_rx_finish(struct kmstest_vsock_rx *r);

#endif
