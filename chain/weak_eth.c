/*
 * Default for the native Ethereum backend when chain/eth*.c is not part of the build. It is
 * weak, so the real kms_auth_eth_new wins; it lives in its own file (sorting after eth*.c in
 * the archive) so the linker extracts eth.o first instead of settling for this one.
 */
#include "chain/internal.h"

__attribute__((weak)) int kms_auth_eth_new(const struct kms_auth_cfg *cfg, struct kms_auth **out)
{
    (void)cfg;
    if (out != NULL)
        *out = NULL;
    return kms_err_set(KMS_ERR_INVAL, "eth backend not built: this kmsd has no native Ethereum "
                                      "support; use auth_api.type \"webhook\" with auth-eth");
}
