/* Internal to replication/: shared between its files, not part of the module's interface. */
#ifndef KMS_REPLICATION_INTERNAL_H
#define KMS_REPLICATION_INTERNAL_H

#include "replication/replication.h"

/* The configuration r was created with (replication/peers.c); borrowed, valid as long as r. */
const struct kms_repl_cfg *kms_repl_cfg_of(const struct kms_repl *r);

#endif
