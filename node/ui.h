/*
 * The web UI kmsd serves itself (issue 13 item 1): the onboarding page at / in onboard mode and
 * a read-only status page at /status with its JSON at /status.json. The HTML/CSS/JS under
 * node/ui are embedded at build time (node/ui/embed.cmake); no external assets, a strict CSP
 * (scripts and styles from this origin only, no inline code, no eval) and no secrets: the pages
 * show what GetAttestationInfo, /health and /metrics already publish.
 */
#ifndef KMS_NODE_UI_H
#define KMS_NODE_UI_H

#include <stddef.h>

/* One embedded file; the table is generated (ui_assets.c in the build tree). */
struct kms_ui_asset {
    const char *path;         /* URL path, e.g. "/status" */
    const char *content_type; /* with charset */
    const unsigned char *data;
    size_t len;
};
extern const struct kms_ui_asset kms_ui_assets[];
extern const size_t kms_ui_n_assets;

/* Security headers of every UI answer (NULL-terminated name/value pairs, static). */
extern const char *const kms_ui_headers[];

struct kms_node;
struct kms_http_req;
struct kms_http_resp;
/* Answers GET/HEAD of the UI paths: /status, /status.json, /ui/... and, when onboard is
 * non-zero, / (the onboarding page). Returns 1 when handled, 0 to let the caller route. */
int kms_ui_handle(struct kms_node *n, const struct kms_http_req *req, struct kms_http_resp *resp,
                  int onboard);

#endif
