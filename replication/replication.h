/*
 * replication: the RA-TLS client (pRPC over mutually attested TLS), onboarding from a peer,
 * peer health and identity-consistency checks (DESIGN.md §3, §8).
 *
 * Layering: below node/. The node owns a struct kms_repl, created from a struct kms_repl_cfg
 * that hands over everything replication needs (store, attestation context, auth policy,
 * peers, timing) and the callbacks through which it reaches back into the node (its own
 * attestation, self-authorization, the onboarding state, adopting an identity). Nothing here
 * includes a node/ header or calls a node function directly.
 */
#ifndef KMS_REPLICATION_H
#define KMS_REPLICATION_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/x509.h>

#include "attest/attest.h"
#include "chain/auth.h"
#include "common/buf.h"
#include "common/err.h"
#include "storage/storage.h"

/* replication error codes (-500..-599) */
enum {
    KMS_ERR_REPL_RPC = -500,      /* the remote answered with a pRPC error */
    KMS_ERR_REPL_IDENTITY = -501, /* identity mismatch (pin, peer divergence) */
};

/* ---- pRPC bytes fields (replication/prpc_bytes.c): server (node/) and clients alike */

/* JSON value for bytes: "0x..." (new reference; NULL when out of memory). p may be secret: the
 * temporary hex text is wiped before it is freed. */
json_t *kms_prpc_bytes(const uint8_t *p, size_t n);
/* Frees kms_prpc_bytes' hex text after the wipe; free unless a test replaces it to check that
 * the block it receives is all zero. */
extern void (*kms_prpc_free_hex)(void *p);
/* Reads an optional bytes field ("0x" hex or hex) of obj into a malloc'd buffer (caller frees
 * *out; an absent or null field gives an empty one). KMS_ERR_PARSE for a non-string or bad hex. */
KMS_WUR int kms_prpc_get_bytes(json_t *obj, const char *field, uint8_t **out, size_t *len);

/* ---- the RA-TLS pRPC client (replication/raclient.c) */

/* A client session: calls made with the same session keep their connections open between
 * calls (HTTP keep-alive; a connection is reused by a later call with the same TLS settings),
 * and the session can open its first TCP connection ahead of time, while other calls run.
 * One thread at a time. */
struct kms_rpc_session;

/* Caller frees *out with kms_rpc_session_free. */
KMS_WUR int kms_rpc_session_new(struct kms_rpc_session **out);
/* Closes the session's connections; accepts NULL. */
void kms_rpc_session_free(struct kms_rpc_session *s);
/* Starts a TCP connection to url's host and port without waiting for it; the session's next
 * call that opens a connection to that address takes it (waiting for it to complete within its
 * connect timeout). Nothing is opened when a proxy may carry the calls (proxy as in
 * kms_rpc_opts: a non-empty proxy, or NULL with a *_proxy environment variable set). Best
 * effort: on any failure the call connects as usual. */
void kms_rpc_session_preconnect(struct kms_rpc_session *s, const char *url, const char *proxy);

/* One pRPC call. url is the KMS base ("https://host:port", with or without "/prpc").
 * ca_pem NULL disables server verification (only for GetTempCaCert, as the reference).
 * With ca_pem, the hostname is checked. client_* give an mTLS certificate. */
struct kms_rpc_opts {
    const char *url;
    long timeout_ms; /* total; 0 = 10000 */
    const char *ca_pem;
    const char *client_cert_pem;
    const char *client_key_pem; /* secret */
    int want_server_cert;       /* return the server leaf certificate */
    int no_host_check;          /* pin the CA but don't match the hostname */
    /* HTTP(S) proxy URL ("http://host:port": HTTPS goes through CONNECT). NULL = libcurl's
     * default: the https_proxy / HTTPS_PROXY (http_proxy for http://) and no_proxy environment
     * variables; "" = no proxy at all, whatever the environment says. */
    const char *proxy;
    /* Called during the TLS handshake with the server leaf, before any request is sent;
     * a negative return aborts the connection (and the error detail is kept). */
    int (*server_check)(void *arg, X509 *leaf);
    void *server_check_arg;
    /* Borrowed; NULL = a fresh connection for this call, closed after it. */
    struct kms_rpc_session *session;
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
/* An attestation producer: this client's (or node's) attestation over report_data, called
 * with arg. The caller frees *out. */
typedef int (*kms_attest_fn)(void *arg, const uint8_t report_data[64],
                             struct kms_attestation **out);
KMS_WUR int kms_ra_identity_new(const char *tmp_ca_cert_pem, const char *tmp_ca_key_pem,
                                kms_attest_fn producer, void *arg, struct kms_ra_identity *out);

/* Checks a KMS server certificate: special usage "kms:rpc"; if actx is non-NULL the
 * certificate must carry an attestation that verifies and is bound to its key; v receives it
 * (may be NULL). Caller frees *att when non-NULL. */
KMS_WUR int kms_check_kms_cert(const struct kms_attest_ctx *actx, X509 *cert,
                               struct kms_attestation **att, struct kms_verified *v);

/* ---- peer health and identity consistency (replication/peers.c, DESIGN.md §8) */

#define KMS_REPL_MAX_PEERS 64 /* configured + learned peers per node */
#define KMS_REPL_URL_MAX 256  /* longest peer URL, including the NUL */
#define KMS_REPL_CHALLENGE_APP_ID_LEN 20

enum kms_peer_status {
    KMS_PEER_UNKNOWN = 0,  /* not checked yet */
    KMS_PEER_UP,           /* reachable, attested kms:rpc certificate, same identity */
    KMS_PEER_DOWN,         /* unreachable, timed out, or no valid pRPC answer */
    KMS_PEER_INCONSISTENT, /* answered, but certificate, attestation or identity differs */
};

/* Static name: "unknown", "up", "down", "inconsistent". */
const char *kms_peer_status_name(enum kms_peer_status s);

/* What a peer is compared against: this node's own identity. All borrowed; root_ca_key and
 * root_k256 are secrets used only to derive the challenge answer locally. */
struct kms_peer_self {
    const struct kms_attest_ctx *actx; /* verifies the peer's RPC certificate attestation */
    EVP_PKEY *root_ca_key;
    const uint8_t *root_k256;   /* 32 bytes */
    const uint8_t *k256_pubkey; /* 33 bytes, compressed */
    const uint8_t *ca_spki;     /* root CA SubjectPublicKeyInfo DER */
    size_t ca_spki_len;
    long timeout_ms; /* per RPC (connect + TLS + answer) */
};

/* Outcome of one peer check. */
struct kms_peer_result {
    enum kms_peer_status status;
    char reason[512];        /* "" when up; never holds secrets */
    uint8_t k256_pubkey[33]; /* what the peer reported (valid when have_k256) */
    int have_k256;
    long latency_ms;     /* wall time of the whole check */
    char peer_state[32]; /* the peer's own GetMeta.state, "" if not reported */
};

/* One health check of the peer at url: GetMeta and GetAppEnvEncryptPubKey, each on a fresh
 * TLS connection whose server certificate must carry the kms:rpc usage and an attestation
 * that verifies with self->actx (checked in the handshake, before any request). Then the
 * identity: GetMeta k256_pubkey and ca_pubkey equal ours, and the identity challenge
 * (kms_repl_challenge_verify) for a fresh random app id. Always fills *res. Returns 0 when
 * the peer is up; otherwise the error of the first failed step (res->status says DOWN for
 * transport failures, INCONSISTENT for everything the peer answered wrongly). */
KMS_WUR int kms_repl_check_peer(const struct kms_peer_self *self, const char *url,
                                struct kms_peer_result *res);

/* The identity challenge: peer_resp is the peer's GetAppEnvEncryptPubKey answer for app_id.
 * Its public_key and legacy `signature` (RFC 6979, hence deterministic) must equal what this
 * node derives locally with kms_derive_env_pubkey; equality proves the peer holds the same
 * root CA key and root k256 key without either side revealing them. KMS_ERR_REPL_IDENTITY
 * (detail names the differing value) on divergence, KMS_ERR_PARSE on a malformed answer. */
KMS_WUR int kms_repl_challenge_verify(const struct kms_peer_self *self,
                                      const uint8_t app_id[KMS_REPL_CHALLENGE_APP_ID_LEN],
                                      json_t *peer_resp);

/* Canonical peer URL: "https://host[:port]" without a trailing "/" or "/prpc". Only
 * https:// URLs of at most KMS_REPL_URL_MAX-1 bytes made of [A-Za-z0-9.:_[]-] after the
 * scheme are accepted (they are printed into /metrics labels unescaped). KMS_ERR_INVAL. */
KMS_WUR int kms_repl_peer_url_normalize(const char *in, char out[KMS_REPL_URL_MAX]);

/* The URL this node advertises to the source when onboarding ("https://DOMAIN:PORT", PORT
 * from listen, the --listen HOST:PORT of the KMS service). KMS_ERR_INVAL if it cannot be
 * formed. */
KMS_WUR int kms_repl_self_url(const char *listen, const char *domain, char out[KMS_REPL_URL_MAX]);

/* ---- the replication state a node owns (replication/peers.c, replication/onboard.c) */

struct kms_repl;

/* What replication is given. Everything is borrowed and must outlive the kms_repl. */
struct kms_repl_cfg {
    struct kms_store *store;           /* peer lists, onboarding record; NULL: sealed node */
    const struct kms_attest_ctx *actx; /* verifies peers' and sources' attestations */
    struct kms_auth *auth;             /* this node's bootAuth/kms policy for a source */
    const char *listen;                /* --listen HOST:PORT: the port of this node's URL */
    const char *const *peers;          /* --peer URLs */
    size_t n_peers;
    long interval_ms;               /* between peer checks (<= 0: 5000 ms) */
    long confirm_window_s;          /* a node onboarded from us must serve our identity within this
                                     * to become a peer (<= 0: 3600 s) */
    const char *expect_k256_pubkey; /* onboarding pin: hex of 33 bytes, or NULL */
    const char *expect_ca_spki;     /* onboarding pin: hex SPKI DER, or NULL */
    /* Callbacks into the owner, each called with cb_arg. */
    void *cb_arg;
    kms_attest_fn attest;             /* own attestation (RA-TLS client cert, vm_config) */
    int (*self_authorize)(void *arg); /* own bootAuth/kms decision, before onboarding */
    /* Claims the onboarding state (< 0 with detail, e.g. KMS_ERR_STATE, unless the node is
     * waiting for keys and not onboarding yet); onboard_end releases it after success or
     * failure. */
    int (*onboard_begin)(void *arg);
    void (*onboard_end)(void *arg);
    /* Stores an identity received from a source (one transaction); id stays the caller's. */
    int (*adopt_identity)(void *arg, struct kms_identity *id);
};

/* This node's cluster identity, which peers are compared against. All borrowed (the node's
 * serving keys) until kms_repl_free; root_ca_key and root_k256 are secrets used only to
 * derive the challenge answer locally. */
struct kms_repl_identity {
    EVP_PKEY *root_ca_key;
    const uint8_t *root_k256;   /* 32 bytes */
    const uint8_t *k256_pubkey; /* 33 bytes, compressed */
    const uint8_t *ca_spki;     /* root CA SubjectPublicKeyInfo DER */
    size_t ca_spki_len;
    const char *domain; /* this node's URL is https://domain:PORT */
};

/* Creates the replication state (no thread yet). cfg is copied; what it points to is
 * borrowed. Caller frees *out with kms_repl_free. */
KMS_WUR int kms_repl_new(const struct kms_repl_cfg *cfg, struct kms_repl **out);
/* Starts the peer check thread (serving mode; keys loaded). Peers: cfg->peers, store meta
 * "onboarded_from", and the persisted list (meta "peers", which it rewrites merged). Every
 * interval all peers are checked in parallel, each RPC with a timeout of
 * clamp(interval/2, 200, 5000) ms. id is copied (its pointers borrowed). Once only. */
KMS_WUR int kms_repl_start(struct kms_repl *r, const struct kms_repl_identity *id);
/* Stops and joins the thread and frees the state; accepts NULL and a never started r. */
void kms_repl_free(struct kms_repl *r);

/* Onboard.Onboard: pull the cluster identity from source_url (claims the onboarding state
 * through cfg->onboard_begin first). k256_pub receives the cluster public key. */
KMS_WUR int kms_repl_onboard(struct kms_repl *r, const char *source_url, const char *domain,
                             uint8_t k256_pub[33]);
/* ui: identity pins of one Onboard request (hex, 0x optional; NULL = not pinned), checked in
 * addition to the node's --expect-* pins before anything is stored. */
struct kms_repl_pins {
    const char *k256_pubkey; /* 33-byte compressed k256 public key */
    const char *ca_spki;     /* DER SubjectPublicKeyInfo of the root CA key */
};
/* kms_repl_onboard with pins (may be NULL); a mismatch fails with KMS_ERR_REPL_IDENTITY
 * "source identity mismatch: ... differs from the requested expect_...". */
KMS_WUR int kms_repl_onboard_pinned(struct kms_repl *r, const char *source_url, const char *domain,
                                    const struct kms_repl_pins *pins, uint8_t k256_pub[33]);

/* Hook for KMS.GetKmsKey: root keys were just released to an attested, authorized KMS that
 * advertised peer_url (NULL or invalid: ignored with a warning). Adds it as a candidate
 * (persisted, store meta "peers"): checked like a peer but never degrading this node; it
 * becomes a peer when a check finds it serving this cluster's identity (so it stored the
 * keys) or an operator adds it, and is dropped if unconfirmed after cfg->confirm_window_s.
 * Safe from any thread, also before kms_repl_start. */
void kms_repl_peer_joined(struct kms_repl *r, const char *peer_url);

/* ---- admin (node/admin.c): operator-managed peers ---- */
/* Admin.AddPeer: adds url (normalized into norm, may be NULL) with origin "admin" and persists
 * the list (meta "peers"); also forgets an earlier removal. Returns 1 when added (or a
 * candidate was confirmed by it), 0 when it was already a peer; KMS_ERR_INVAL for a bad URL or this
 * node's own URL, KMS_ERR_TOOBIG when the list is full. Safe from any thread, also before
 * kms_repl_start. */
KMS_WUR int kms_repl_peer_add(struct kms_repl *r, const char *url, char norm[KMS_REPL_URL_MAX]);
/* Admin.RemovePeer: drops url from the list and persists it; the URL is also remembered in
 * meta "peers_removed" so that a --peer option or the onboarded-from source does not bring it
 * back at the next start (a later AddPeer undoes that). KMS_ERR_NOTFOUND when not listed,
 * KMS_ERR_INVAL for a bad URL. Safe from any thread, also before kms_repl_start. */
KMS_WUR int kms_repl_peer_remove(struct kms_repl *r, const char *url, char norm[KMS_REPL_URL_MAX]);
/* ---- end admin ---- */

/* 1 while at least one peer's last completed check said DOWN or INCONSISTENT (peers not
 * checked yet, UNKNOWN, do not count), else 0; 0 for NULL or before kms_repl_start. The node
 * folds it into its state (SERVING becomes DEGRADED). */
int kms_repl_degraded(struct kms_repl *r);
/* Peer array for /health: [{url, origin, status, reason, last_check (unix s, null before the
 * first check), latency_ms, k256_pubkey ("0x.." or null), peer_state}]; empty before
 * kms_repl_start or for NULL. Caller owns it (NULL when out of memory). */
json_t *kms_repl_peers_json(struct kms_repl *r);
/* Appends the gauges kmsd_peer_up{peer="URL"} (1: the peer answered its last check, up or
 * inconsistent) and kmsd_peer_identity_consistent{peer="URL"} (1: status up). */
KMS_WUR int kms_repl_metrics(struct kms_repl *r, struct kms_buf *b);

#endif
