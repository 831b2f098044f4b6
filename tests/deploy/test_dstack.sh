#!/usr/bin/env bash
# deploy: the dstack-cloud project files (deploy/dstack/). Each compose variant, raw (as
# measured) and resolved by `docker-compose config` after prelaunch.sh: services, ports 12001
# and 18545, images by digest through required variables, the data volume, restart policy,
# secrets only in the containers' environment (never argv, .env or the measured compose).
# prelaunch.sh: the allow-list is honoured, hostile .user-config values stay inert (refused,
# nothing executed), a missing EXECUTION_RPC is refused, file modes.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
$PY -c 'import yaml' 2>/dev/null || PY=python3
$PY -c 'import yaml' || { echo "FAIL: python3-yaml is not installed (deploy/install-deps.sh)"; exit 1; }
command -v jq >/dev/null || { echo "FAIL: jq is not installed"; exit 1; }
COMPOSE=
command -v docker-compose >/dev/null 2>&1 && COMPOSE=docker-compose

WORK=$(mktemp -d /tmp/kms-deploy-dstack-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
RPC="https://eth-mainnet.example/v2/SECRETKEY$RANDOM;x=1"
DDKEY=0123456789abcdef0123456789abcdef
CHECKPOINT=0x$(printf '%064d' 7)

# fresh project dir: the compose files and prelaunch.sh as dstack-cloud copies them
project() {
    rm -rf "$WORK/p"
    mkdir -p "$WORK/p"
    cp "$SRC"/deploy/dstack/docker-compose.*.yaml "$SRC/deploy/dstack/prelaunch.sh" "$WORK/p/"
}
prelaunch() { (cd "$WORK/p" && env -i PATH="$PATH" "$@" sh prelaunch.sh) >"$WORK/pl.out" 2>&1; }

# ---- raw compose files
for v in direct light datadog; do
    $PY "$HERE/check_compose.py" "$v" "$SRC/deploy/dstack/docker-compose.$v.yaml" || fail "compose $v"
done

# ---- prelaunch + resolved compose
project
jq -n --arg rpc "$RPC" --arg dd "$DDKEY" \
    '{EXECUTION_RPC: $rpc, DD_API_KEY: $dd, KMSD_NAME: "us-east-1", DD_SITE: "datadoghq.eu",
      KMSD_IMAGE: "evil/kmsd:latest", KMS_CONTRACT_ADDR: "0xbad", LD_PRELOAD: "/tmp/x.so",
      PATH: "/tmp", HELIOS_CONSENSUS_RPC: "https://evil.example"}' >"$WORK/p/.user-config"
prelaunch HELIOS_CHECKPOINT="$CHECKPOINT" || { cat "$WORK/pl.out"; fail "prelaunch with a good .user-config"; }
env=$WORK/p/.env
grep -qx 'KMSD_NAME=us-east-1' "$env" || fail "allowed KMSD_NAME not imported"
grep -qx 'DD_SITE=datadoghq.eu' "$env" || fail "allowed DD_SITE not imported"
grep -q 'evil' "$env" && fail "a key outside the allow-list reached .env"
grep -q '0xbad\|LD_PRELOAD\|/tmp/x.so' "$env" && fail "a key outside the allow-list reached .env"
grep -Eq '^KMSD_IMAGE=[^@]+@sha256:[0-9a-f]{64}$' "$env" || fail "KMSD_IMAGE in .env is not a digest reference"
grep -q "SECRETKEY\|$DDKEY" "$env" && fail "a secret was written to .env"
[ "$(stat -c %a "$WORK/p/secrets")" = 700 ] || fail "secrets dir not 0700"
[ "$(stat -c %a "$WORK/p/secrets/kmsd.env")" = 600 ] || fail "secrets/kmsd.env not 0600"
[ "$(stat -c %a "$WORK/p/secrets/datadog.env")" = 600 ] || fail "secrets/datadog.env not 0600"
[ "$(stat -c %a "$env")" = 644 ] || fail ".env not 0644"
grep -qxF "KMSD_ETH_RPC='$RPC'" "$WORK/p/secrets/kmsd.env" || fail "RPC URL not in secrets/kmsd.env"

if [ -n "$COMPOSE" ]; then
    for v in direct light datadog; do
        secrets=("SECRETKEY")
        [ $v = datadog ] && secrets+=("$DDKEY")
        (cd "$WORK/p" && $COMPOSE -f "docker-compose.$v.yaml" config) >"$WORK/res.$v.yaml" 2>"$WORK/err" ||
            { cat "$WORK/err"; fail "docker-compose config ($v)"; }
        $PY "$HERE/check_compose.py" "$v" "$WORK/p/docker-compose.$v.yaml" "$WORK/res.$v.yaml" "${secrets[@]}" ||
            fail "resolved compose $v"
        grep -qF -- "$RPC" "$WORK/res.$v.yaml" || fail "$v: the RPC URL (with ';') did not reach the environment literally"
    done
    # without prelaunch.sh's .env: compose refuses, naming what is missing
    rm -f "$WORK/p/.env"
    for v in direct light datadog; do
        if (cd "$WORK/p" && $COMPOSE -f "docker-compose.$v.yaml" config) >/dev/null 2>"$WORK/err"; then
            fail "$v: compose accepted a project without .env"
        fi
        grep -q "must name\|is required\|run prelaunch.sh" "$WORK/err" || fail "$v: unclear compose error: $(cat "$WORK/err")"
    done
    # the light variant without a checkpoint fails clearly
    prelaunch || { cat "$WORK/pl.out"; fail "prelaunch"; }
    if (cd "$WORK/p" && $COMPOSE -f docker-compose.light.yaml config) >/dev/null 2>"$WORK/err"; then
        fail "light: compose accepted an empty HELIOS_CHECKPOINT"
    fi
    grep -q "HELIOS_CHECKPOINT" "$WORK/err" || fail "light: unclear error: $(cat "$WORK/err")"
else
    echo "note: docker-compose not installed; resolved-compose checks skipped"
fi

# ---- missing EXECUTION_RPC: refused, nothing written
project
echo '{"DD_API_KEY": "'$DDKEY'"}' >"$WORK/p/.user-config"
prelaunch && fail "prelaunch accepted a .user-config without EXECUTION_RPC"
grep -q "EXECUTION_RPC is required" "$WORK/pl.out" || fail "unclear refusal: $(cat "$WORK/pl.out")"
[ ! -e "$WORK/p/.env" ] || fail ".env written although EXECUTION_RPC is missing"
# no .user-config at all: the same
rm -f "$WORK/p/.user-config"
prelaunch && fail "prelaunch accepted a project without .user-config"
# not JSON / not an object
echo 'EXECUTION_RPC=https://x' >"$WORK/p/.user-config"
prelaunch && fail "prelaunch accepted a non-JSON .user-config"
echo '["EXECUTION_RPC"]' >"$WORK/p/.user-config"
prelaunch && fail "prelaunch accepted a JSON array"
# a non-string value is ignored (then missing)
echo '{"EXECUTION_RPC": {"url": "https://x"}}' >"$WORK/p/.user-config"
prelaunch && fail "prelaunch accepted an object as EXECUTION_RPC"

# ---- hostile values: refused and inert (nothing runs, nothing written)
PWN=$WORK/pwned
hostile=(
    "\$(touch $PWN)"
    "https://x.example/\$(touch $PWN)"
    "https://x.example/\`touch $PWN\`"
    "\`touch $PWN\`"
    "https://x.example/'; touch $PWN; '"
    "https://x.example/\"; touch $PWN; \""
    "https://x.example/
touch $PWN"
    "https://x.example/ \${PATH}"
    "https://x.example/\\\$(touch $PWN)"
)
for key in EXECUTION_RPC DD_API_KEY KMSD_NAME DD_SITE; do
    for val in "${hostile[@]}"; do
        project
        jq -n --arg k "$key" --arg v "$val" --arg rpc "$RPC" '{EXECUTION_RPC: $rpc} + {($k): $v}' \
            >"$WORK/p/.user-config"
        if prelaunch HELIOS_CHECKPOINT="$CHECKPOINT"; then
            fail "$key: hostile value accepted: $val"
        fi
        grep -q "$key has an invalid value" "$WORK/pl.out" || fail "$key: unclear refusal: $(cat "$WORK/pl.out")"
        grep -qF "touch" "$WORK/pl.out" && fail "$key: the refusal echoes the value"
        [ ! -e "$PWN" ] || fail "$key: hostile value executed: $val"
        [ ! -e "$WORK/p/.env" ] || fail "$key: .env written despite a refused value"
    done
done
# the same values from the environment (dstack encrypted env) are refused too
project
echo '{}' >"$WORK/p/.user-config"
prelaunch EXECUTION_RPC="https://x.example/\$(touch $PWN)" && fail "hostile EXECUTION_RPC from the environment accepted"
[ ! -e "$PWN" ] || fail "hostile value from the environment executed"
echo "dstack: all checks passed"
