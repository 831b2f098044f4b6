/*
 * replication: the RA-TLS client (pRPC over mutually attested TLS), onboarding from a peer,
 * peer health and identity-consistency checks (DESIGN.md §3, §8).
 */
#ifndef KMS_REPLICATION_H
#define KMS_REPLICATION_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/x509.h>

#include "common/buf.h"
#include "common/err.h"
#include "node/node.h"

/* replication error codes (-500..-599) */
enum {
    KMS_ERR_REPL_RPC = -500,      /* the remote answered with a pRPC error */
    KMS_ERR_REPL_IDENTITY = -501, /* identity mismatch (pin, peer divergence) */
};

/* One pRPC call. url is the KMS base ("https://host:port", with or without "/prpc").
 * ca_pem NULL disables server verification (only for GetTempCaCert, as the reference).
 * With ca_pem, the hostname is checked. client_* give an mTLS certificate. */
struct kms_rpc_opts {
    const char *url;
    long timeout_ms;            /* total; 0 = 10000 */
    const char *ca_pem;
    const char *client_cert_pem;
    const char *client_key_pem; /* secret */
    int want_server_cert;       /* return the server leaf certificate */
    int no_host_check;          /* pin the CA but don't match the hostname */
    /* Called during the TLS handshake with the server leaf, before any request is sent;
     * a negative return aborts the connection (and the error detail is kept). */
    int (*server_check)(void *arg, X509 *leaf);
    void *server_check_arg;
};

/* POSTs {url}/prpc/{method}?json with body (NULL = "{}"). *resp caller-owned json (may be
 * JSON null). server_cert: caller frees (X509_free) when requested. A pRPC error (HTTP 400)
 * gives KMS_ERR_REPL_RPC with the remote's message; timeouts KMS_ERR_TIMEOUT; connection
 * failures KMS_ERR_NET. */
KMS_WUR int kms_rpc_call(const struct kms_rpc_opts *o, const char *method, const char *body,
                         json_t **resp, X509 **server_cert);

/* An RA-TLS client identity: fresh P-256 key, certificate signed by the KMS temp CA, carrying
 * an attestation over report_data = SHA-512("ratls-cert:" || SPKI). */
struct kms_ra_identity {
    char *cert_pem;
    char *key_pem; /* secret */
};

void kms_ra_identity_clear(struct kms_ra_identity *id);
/* att_producer builds the attestation over the given report_data. */
typedef int (*kms_attest_fn)(void *arg, const uint8_t report_data[64],
                             struct kms_attestation **out);
KMS_WUR int kms_ra_identity_new(const char *tmp_ca_cert_pem, const char *tmp_ca_key_pem,
                                kms_attest_fn producer, void *arg, struct kms_ra_identity *out);

/* Checks a KMS server certificate: special usage "kms:rpc"; if actx is non-NULL the
 * certificate must carry an attestation that verifies and is bound to its key; v receives it
 * (may be NULL). Caller frees *att when non-NULL. */
KMS_WUR int kms_check_kms_cert(const struct kms_attest_ctx *actx, X509 *cert,
                               struct kms_attestation **att, struct kms_verified *v);

/* Node-side hooks. */
KMS_WUR int kms_repl_start(struct kms_node *n);
void kms_repl_stop(struct kms_node *n);
/* Onboard.Onboard: pull the cluster identity from source_url. k256_pub receives the cluster
 * public key. */
KMS_WUR int kms_repl_onboard(struct kms_node *n, const char *source_url, const char *domain,
                             uint8_t k256_pub[33]);
/* The node state with peer health folded in (serving → degraded on a bad peer). */
enum kms_node_state kms_repl_effective_state(struct kms_node *n);
/* New reference: peer status array for /health. */
json_t *kms_repl_peers_json(struct kms_node *n);
/* Appends peer gauges to the /metrics text. */
KMS_WUR int kms_repl_metrics(struct kms_node *n, struct kms_buf *b);

#endif
