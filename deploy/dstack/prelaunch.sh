#!/bin/sh
# dstack-cloud pre-launch script of the kmsd project: runs in the CVM before `docker compose
# up`. It is part of the measured app, so the settings below are measured; per-instance values
# come from the unmeasured JSON .user-config, of which only the keys in ALLOWED are read (with
# jq, as data: nothing from it is evaluated by a shell).
#   .env           non-secret values only (compose interpolation: image digests, contract, ...)
#   secrets/*.env  secrets (EXECUTION_RPC, DD_API_KEY), mode 0600, handed to the containers'
#                  environment with `env_file:` (never argv, never the measured compose)
# A value that does not have the shape of its key is refused (naming the key, never printing
# the value), so nothing unexpected reaches compose's interpolation or kmsd's config.
# An allowed key may also come from the environment (e.g. dstack's encrypted env vars).
set -eu
umask 077

# ---- measured settings (edit before deploying)
KMSD_IMAGE=${KMSD_IMAGE:-"docker.io/example/kmsd@sha256:0000000000000000000000000000000000000000000000000000000000000000"}
HELIOS_IMAGE=${HELIOS_IMAGE:-"docker.io/example/helios@sha256:0000000000000000000000000000000000000000000000000000000000000000"}
DATADOG_IMAGE=${DATADOG_IMAGE:-"gcr.io/datadoghq/agent@sha256:0000000000000000000000000000000000000000000000000000000000000000"}
KMS_CONTRACT_ADDR=${KMS_CONTRACT_ADDR:-"0x0000000000000000000000000000000000000000"}
ETH_CHAIN_ID=${ETH_CHAIN_ID:-1}
HELIOS_NETWORK=${HELIOS_NETWORK:-mainnet}
HELIOS_CHECKPOINT=${HELIOS_CHECKPOINT:-""}
HELIOS_CONSENSUS_RPC=${HELIOS_CONSENSUS_RPC:-"https://ethereum.operationsolarstorm.org"}

# ---- per-instance settings from .user-config
ALLOWED="EXECUTION_RPC DD_API_KEY DD_SITE KMSD_NAME"
USER_CONFIG=${USER_CONFIG:-.user-config}
ENV_FILE=${ENV_FILE:-.env}
SECRETS_DIR=${SECRETS_DIR:-secrets}

die() { echo "prelaunch: $*" >&2; exit 1; }

# valid KEY VALUE: the shape each key may have (no quotes, $, backquotes, blanks, newlines)
valid() {
    case $1 in
        EXECUTION_RPC) pat='https?://[A-Za-z0-9._~:/?#@!&+,;=%[-]+' ;;
        DD_API_KEY) pat='[A-Za-z0-9]{16,64}' ;;
        DD_SITE) pat='[a-z0-9.-]{1,64}' ;;
        KMSD_NAME) pat='[A-Za-z0-9._-]{1,64}' ;;
        *) return 1 ;;
    esac
    # one line only: grep matches lines, so a value with a newline must be refused first
    [ "$(printf '%s' "$2" | wc -l)" -eq 0 ] && printf '%s' "$2" | grep -Eqx "$pat"
}

# get KEY: from the environment, else from .user-config (a JSON string; other types ignored)
get() {
    v=$(printenv "$1" || true)
    if [ -z "$v" ] && [ -f "$USER_CONFIG" ]; then
        v=$(jq -r --arg k "$1" 'if (.[$k] | type) == "string" then .[$k] else empty end' \
            "$USER_CONFIG") || die "cannot read $USER_CONFIG"
    fi
    [ -z "$v" ] || valid "$1" "$v" || die "$1 has an invalid value (refused)"
    printf '%s' "$v"
}

command -v jq >/dev/null 2>&1 || die "jq is required"
if [ -f "$USER_CONFIG" ]; then
    jq -e 'type == "object"' "$USER_CONFIG" >/dev/null 2>&1 || die "$USER_CONFIG is not a JSON object"
fi
EXECUTION_RPC=$(get EXECUTION_RPC)
DD_API_KEY=$(get DD_API_KEY)
DD_SITE=$(get DD_SITE)
KMSD_NAME=$(get KMSD_NAME)
[ -n "$EXECUTION_RPC" ] ||
    die "EXECUTION_RPC is required (in $USER_CONFIG): the Ethereum RPC the DstackKms contract is read from"

mkdir -p "$SECRETS_DIR"
chmod 0700 "$SECRETS_DIR"
# kmsd's entrypoint puts KMSD_ETH_RPC into its private config file; helios reads
# EXECUTION_RPC as its execution RPC. Single quotes: compose takes the value literally.
printf "KMSD_ETH_RPC='%s'\nEXECUTION_RPC='%s'\n" "$EXECUTION_RPC" "$EXECUTION_RPC" \
    >"$SECRETS_DIR/kmsd.env.tmp"
mv -f "$SECRETS_DIR/kmsd.env.tmp" "$SECRETS_DIR/kmsd.env"
printf "DD_API_KEY='%s'\n" "$DD_API_KEY" >"$SECRETS_DIR/datadog.env.tmp"
mv -f "$SECRETS_DIR/datadog.env.tmp" "$SECRETS_DIR/datadog.env"

{
    echo "# written by prelaunch.sh: non-secret values only"
    echo "KMSD_IMAGE=$KMSD_IMAGE"
    echo "HELIOS_IMAGE=$HELIOS_IMAGE"
    echo "DATADOG_IMAGE=$DATADOG_IMAGE"
    echo "KMS_CONTRACT_ADDR=$KMS_CONTRACT_ADDR"
    echo "ETH_CHAIN_ID=$ETH_CHAIN_ID"
    echo "HELIOS_NETWORK=$HELIOS_NETWORK"
    echo "HELIOS_CHECKPOINT=$HELIOS_CHECKPOINT"
    echo "HELIOS_CONSENSUS_RPC=$HELIOS_CONSENSUS_RPC"
    echo "KMSD_NAME=${KMSD_NAME:-kms}"
    echo "DD_SITE=${DD_SITE:-datadoghq.com}"
    echo "KMSD_SECRETS_DIR=$SECRETS_DIR"
} >"$ENV_FILE.tmp"
chmod 0644 "$ENV_FILE.tmp"
mv -f "$ENV_FILE.tmp" "$ENV_FILE"
echo "prelaunch: wrote $ENV_FILE and $SECRETS_DIR/ (keys read: $ALLOWED)"
