/*
 * Shared bits of the fuzz harnesses. A harness must be deterministic, must not leak and must
 * treat every rejection as fine: only a crash, a sanitizer report or a broken invariant
 * (FUZZ_ASSERT) is a finding.
 */
#ifndef KMS_FUZZ_H
#define KMS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant the code under test promises; abort() so libFuzzer and the driver both stop. */
#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
