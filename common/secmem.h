/* Allocator that wipes every block on free, for libraries (jansson) that copy secrets into
 * their own allocations. Blocks are ordinary malloc blocks (free() stays valid). */
#ifndef KMS_COMMON_SECMEM_H
#define KMS_COMMON_SECMEM_H

#include <stddef.h>

void *kms_secmem_malloc(size_t n);
/* Wipes the whole block, then frees it; accepts NULL. */
void kms_secmem_free(void *p);
/* Makes jansson allocate through the wiping allocator (call once at startup, before any
 * jansson use). */
void kms_secmem_install_jansson(void);

#endif
