/* attest: runtime-event digests and replay (events.c; attestation-reference.md §0.4). */
#ifndef KMS_ATTEST_EVENTS_H
#define KMS_ATTEST_EVENTS_H

#include "attest/attest.h"

/* ---------------------------------------------------------------- runtime events, replay */

#define KMS_EVENT_TYPE_RUNTIME 0x08000001u

/* digest = H(le32(0x08000001) || ":" || name || ":" || payload); sha384 != 0 → SHA-384 (48 B)
 * else SHA-256 (32 B). */
void kms_att_event_digest(int sha384, const char *name, const uint8_t *payload, size_t len,
                          uint8_t *out);
/* Replays events from zeros; stop_after != NULL stops after the first event with that name.
 * out receives 48 (sha384) or 32 bytes. */
void kms_att_replay(int sha384, const struct kms_runtime_event *ev, size_t n,
                    const char *stop_after, uint8_t *out);

#define KMS_APP_BOOT_EVENTS 5
/* The runtime events a dstack app's boot extends, in order: system-preparing, app-id,
 * compose-hash, instance-id (instance_len 0: empty), boot-mr-done. ev borrows the buffers. */
void kms_app_boot_events(struct kms_runtime_event ev[KMS_APP_BOOT_EVENTS], const uint8_t *app_id,
                         const uint8_t *compose, const uint8_t *instance, size_t instance_len);

#endif
