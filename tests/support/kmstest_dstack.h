/*
 * A fake dstack guest agent for the --tee dstack tests: a thread answering DstackGuest.Attest and
 * Info over a Unix socket, pRPC JSON transport as the real agent (POST /Attest {report_data: hex}
 * -> {attestation: hex(SCALE V0)}), with simulated evidence from kms_platform (sim-tdx, sim-gcp,
 * sim-nitro) over the runtime events of a dstack app boot: system-preparing, app-id,
 * compose-hash (= sha256(app_id), kmsctl get-keys' default), instance-id, boot-mr-done.
 * Modes make it misbehave in exactly one way each, for the negative tests.
 */
#ifndef KMSTEST_DSTACK_H
#define KMSTEST_DSTACK_H

#include <stddef.h>
#include <stdint.h>

#include "attest/attest.h"

enum kmstest_agent_mode {
    KMSTEST_AGENT_OK = 0,     /* Content-Length answers */
    KMSTEST_AGENT_CHUNKED,    /* the same, Transfer-Encoding: chunked */
    KMSTEST_AGENT_JUNK,       /* 200 with a body that is not JSON */
    KMSTEST_AGENT_NOT_HEX,    /* {"attestation": "zz..."} */
    KMSTEST_AGENT_WRONG_RD,   /* a valid attestation over report_data with its first byte flipped */
    KMSTEST_AGENT_HTTP_ERROR, /* 400 {"error": "Failed to get attestation: simulated failure"} */
    KMSTEST_AGENT_HANG,       /* reads the request, never answers (until stopped) */
};

struct kmstest_agent;

/* Listens on socket_path (removed first) and serves until kmstest_agent_stop. kind: sim-tdx,
 * sim-gcp or sim-nitro with simulation roots in sim_dir; app_id 20 bytes; instance_id may be
 * NULL (empty instance-id payload); config: the vm_config of the attestations (NULL = the
 * producer's default). Strings are copied. 0 or -1 (message on stderr). */
int kmstest_agent_start(const char *socket_path, enum kms_platform_kind kind, const char *sim_dir,
                        const uint8_t app_id[20], const uint8_t *instance_id, size_t instance_len,
                        const char *config, struct kmstest_agent **out);
/* Switches the behaviour of the following calls. */
void kmstest_agent_set_mode(struct kmstest_agent *a, enum kmstest_agent_mode m);
/* Attest calls answered so far (any mode). */
unsigned kmstest_agent_attest_calls(struct kmstest_agent *a);
/* Stops the thread, removes the socket, frees; accepts NULL. */
void kmstest_agent_stop(struct kmstest_agent *a);

#endif
