#include "common/secmem.h"

#include <jansson.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <stdlib.h>

/* Plain malloc, so blocks handed out by jansson (json_dumps) may still be released with free();
 * the wipe uses the allocator's own idea of the block size. */
void *kms_secmem_malloc(size_t n)
{
    return malloc(n);
}

void kms_secmem_free(void *p)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, malloc_usable_size(p));
    free(p);
}

void kms_secmem_install_jansson(void)
{
    json_set_alloc_funcs(kms_secmem_malloc, kms_secmem_free);
}
