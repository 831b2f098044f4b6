/*
 * Admin service (DESIGN.md §3; kms-reference.md §11, U's [core.admin]): a separate plain-HTTP
 * listener, loopback only unless --admin-allow-remote, on which every call carries a token
 * (`Authorization: Bearer <token>` or `X-Admin-Token: <token>`). pRPC JSON under /prpc/ with
 * the optional "Admin." prefix: ListPeers, AddPeer, RemovePeer, AuditHead, ClearImageCache.
 * Only SHA-256 of the token is kept; every call (refused ones too) goes to the audit log.
 * Limits: token KMS_ADMIN_TOKEN_MIN..KMS_ADMIN_TOKEN_MAX visible ASCII characters.
 */
#ifndef KMS_NODE_ADMIN_H
#define KMS_NODE_ADMIN_H

#include <stddef.h>

#include "common/err.h"
#include "node/node.h"

#define KMS_ADMIN_TOKEN_MIN 16
#define KMS_ADMIN_TOKEN_MAX 1024

struct kms_admin;

/* Checks the admin options of cfg and, with --admin-listen, reads the token file: a regular
 * file without group or other permissions holding one token (a trailing newline is ignored).
 * The token is wiped once hashed. *out = NULL without --admin-listen. KMS_ERR_NODE_CONFIG on
 * a refused option or file. *out is owned by the caller (kms_admin_free). */
KMS_WUR int kms_admin_new(const struct kms_node_cfg *cfg, struct kms_admin **out);
/* Starts the listener for node n (n->admin; nothing to do when NULL). Call once the KMS
 * service is serving. */
KMS_WUR int kms_admin_start(struct kms_node *n);
/* Stops the listener and frees; accepts NULL. */
void kms_admin_free(struct kms_admin *a);
/* 1 when token[0..len) is the configured token (SHA-256 compared in constant time), else 0. */
int kms_admin_token_ok(const struct kms_admin *a, const char *token, size_t len);
/* The HTTP handler of the admin listener; arg is the node. */
struct kms_http_req;
struct kms_http_resp;
void kms_admin_handle(void *arg, const struct kms_http_req *req, struct kms_http_resp *resp);

#endif
