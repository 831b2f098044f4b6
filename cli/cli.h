/* kmsctl internals shared by the command files. */
#ifndef KMS_CLI_CLI_H
#define KMS_CLI_CLI_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct kms_cli_sub {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
};

/* `kmsctl FAMILY SUB ...`: runs the matching subcommand. No subcommand: usage on stderr, 2;
 * --help/-h: usage on stdout, 0; an unknown one: a message naming it plus usage, 2. */
int kms_cli_subcommands(const char *family, const char *usage, const struct kms_cli_sub *subs,
                        size_t n, int argc, char **argv);

/* The environment variable naming the root CA file when --ca is not given. */
#define KMS_CLI_CA_ENV "KMSCTL_CA"

/* Reads the cluster's root CA certificate (PEM, the ca_cert of GetTempCaCert / `kmsctl ca pin`)
 * from path into *pem (caller frees); refused unless it parses as a certificate. */
int kms_cli_read_ca(const char *path, char **pem);

/* The root CA to pin: the file opt (--ca), else the file named by $KMSCTL_CA, else none
 * (*pem NULL, 0 returned). Caller frees *pem. */
int kms_cli_load_ca(const char *opt, char **pem);

/* Says plainly on stderr that the answer of url is not verified: an https:// server's
 * certificate was not checked (no root CA pinned), or http:// is not authenticated at all. */
void kms_cli_warn_unverified(const char *url);

/* pRPC call to url/prpc/method. ca_pem non-NULL: the server certificate must chain to it
 * (host name not checked: the root CA is the cluster's identity); NULL: not verified, and
 * kms_cli_warn_unverified says so. *resp as kms_rpc_call. */
int kms_cli_rpc(const char *url, const char *ca_pem, long timeout_ms, const char *method,
                const char *body, json_t **resp);

/* A plain-language hint for a failed call to url with error detail (http vs https, wrong port,
 * nothing listening, foreign certificate), or NULL. Static string. */
const char *kms_cli_hint(const char *url, const char *detail);

/* Prints "kmsctl: WHAT: <error detail>" and, when one applies, the hint for url (may be NULL)
 * to stderr; returns 1 (the exit status of a failed command). */
int kms_cli_fail(const char *what, const char *url);

/* A --timeout-ms value: a decimal 1..600000; -1 for anything else. */
long kms_cli_parse_ms(const char *s);

/* Strict hex argument: exactly n bytes (2n digits, "0x" optional) into out; KMS_ERR_INVAL
 * naming `what` and the expected length otherwise (never padded). */
int kms_cli_hex_arg(const char *what, const char *s, uint8_t *out, size_t n);

/* The SubjectPublicKeyInfo DER of the certificate in pem into *der (caller frees). */
int kms_cli_ca_spki(const char *pem, uint8_t **der, size_t *len);

/* 1 when both PEM certificates carry the same public key, 0 when not, negative on a parse
 * error. */
int kms_cli_same_ca(const char *pem_a, const char *pem_b);

/* Prints "kmsctl: WHAT: <error detail>" to stderr (no hint: not a network call); returns 1. */
int kms_cli_die(const char *what);

/* Prints j as indented JSON and a newline on stdout. */
void kms_cli_print_json(json_t *j);

/* The command families (argv[0] is the family name; each handles --help). */
int kms_cli_admin(int argc, char **argv);     /* cli/admin_cmd.c: a node's Admin service */
int kms_cli_nitro(int argc, char **argv);     /* cli/nitro_cmd.c: nitro measure (EIF PCRs) */
int kms_cli_attest(int argc, char **argv);    /* cli/attest_cmd.c: verify evidence */
int kms_cli_audit(int argc, char **argv);     /* cli/backup_cmd.c: the keystore's audit log */
int kms_cli_backup(int argc, char **argv);    /* cli/backup_cmd.c: backup and restore */
int kms_cli_chain(int argc, char **argv);     /* cli/chain_cmd.c: on-chain policy */
int kms_cli_cluster(int argc, char **argv);   /* cli/cluster_cmd.c: cluster status, identity */
int kms_cli_ca(int argc, char **argv);        /* cli/ca_cmd.c: ca pin (the root CA, TOFU) */
int kms_cli_image(int argc, char **argv);     /* cli/image_cmd.c: OS-image measurement manifests */
int kms_cli_get_keys(int argc, char **argv);  /* cli/getkeys_cmd.c: an app's keys (RA-TLS) */
int kms_cli_meta(int argc, char **argv);      /* cli/node_cmd.c: a node's GetMeta */
int kms_cli_bootstrap(int argc, char **argv); /* cli/node_cmd.c: Onboard.Bootstrap */
int kms_cli_onboard(int argc, char **argv);   /* cli/node_cmd.c: Onboard.Onboard */
int kms_cli_keystore(int argc, char **argv);  /* cli/keystore_cmd.c: import-dstack */

#endif
