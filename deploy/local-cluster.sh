#!/usr/bin/env bash
# The main job: a local 3-node kmsd cluster on the embedded defaults (SQLite keystore,
# simulated TEE, dev authorization). Node 1 bootstraps, node 2 onboards from node 1, node 3
# from node 2; then the same app's keys are fetched from every node and compared.
# Usage: bash deploy/local-cluster.sh [--keep]   (--keep leaves the nodes running)
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
[ "${1:-}" = "--help" ] && { sed -n 2,6p "$0"; exit 0; }

# KMS_SKIP_BUILD=1 (used by the tests) runs the binaries already built in BUILD_DIR.
if [ "${KMS_SKIP_BUILD:-0}" != 1 ]; then
    bash deploy/install-deps.sh
    BUILD_DIR=${BUILD_DIR:-build} bash deploy/build.sh
fi
BIN=${BUILD_DIR:-build}
KMSD=$BIN/node/kmsd
KMSCTL=$BIN/cli/kmsctl
WORK=${KMS_CLUSTER_DIR:-$(mktemp -d /tmp/kmsd-cluster-XXXXXX)}
SIM=$WORK/sim
BASE_PORT=${KMS_BASE_PORT:-18400}
APP_ID=${APP_ID:-92e5c15e971558323c3ebbbe862247de0838950b}
# Per-request timeout of kmsctl (an upper bound; a debug build on a loaded machine is slow).
TIMEOUT_MS=${KMS_TIMEOUT_MS:-60000}
PIDS=()

cleanup() {
    if [ $KEEP -eq 0 ]; then
        for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
    fi
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }

start_node() { # name port
    "$KMSD" --data-dir "$WORK/$1" --sim-dir "$SIM" --tee sim --insecure-sim --auth dev \
        --listen "127.0.0.1:$2" --name "$1" >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    local end=$((SECONDS + 120)) # generous: a debug build on a loaded machine starts slowly
    while [ $SECONDS -lt $end ]; do
        curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$2/health" && return 0
        curl -sk -o /dev/null --max-time 5 "https://127.0.0.1:$2/health" && return 0
        sleep 0.1
    done
    echo "node $1 did not start; log:"; cat "$WORK/$1.log"; exit 1
}

wait_https() { # port
    local end=$((SECONDS + 120))
    while [ $SECONDS -lt $end ]; do
        curl -sk -o /dev/null --max-time 5 "https://127.0.0.1:$1/health" && return 0
        sleep 0.1
    done
    echo "node on port $1 is not serving"; exit 1
}

P1=$BASE_PORT; P2=$((BASE_PORT + 1)); P3=$((BASE_PORT + 2))
step "work directory $WORK"
step "starting node1 (127.0.0.1:$P1) and bootstrapping the cluster's root keys"
start_node node1 "$P1"
"$KMSCTL" bootstrap --onboard-url "http://127.0.0.1:$P1" --domain 127.0.0.1 >"$WORK/bootstrap.json"
wait_https "$P1"
echo "bootstrap info: $(head -c 200 "$WORK/bootstrap.json" | tr -d '\n') ..."
step "starting node2 (127.0.0.1:$P2), onboarding from node1 over RA-TLS"
start_node node2 "$P2"
"$KMSCTL" onboard --onboard-url "http://127.0.0.1:$P2" --source "https://127.0.0.1:$P1" --domain 127.0.0.1
wait_https "$P2"
step "starting node3 (127.0.0.1:$P3), onboarding from node2 over RA-TLS"
start_node node3 "$P3"
"$KMSCTL" onboard --onboard-url "http://127.0.0.1:$P3" --source "https://127.0.0.1:$P2" --domain 127.0.0.1
wait_https "$P3"

step "fetching app $APP_ID's keys from every node"
for i in 1 2 3; do
    port=$((BASE_PORT + i - 1))
    "$KMSCTL" get-keys --kms "https://127.0.0.1:$port" --app-id "$APP_ID" --timeout-ms "$TIMEOUT_MS" \
        --tee sim --insecure-sim --sim-dir "$SIM" --out "$WORK/app_keys.$i.json"
    meta=$("$KMSCTL" meta --kms "https://127.0.0.1:$port")
    echo "$meta" | grep '"k256_pubkey"' | head -1 | sed "s/^ */node$i /"
done
step "identity challenge across the nodes (same root keys, nothing revealed)"
"$KMSCTL" cluster verify --kms "https://127.0.0.1:$P1" --kms "https://127.0.0.1:$P2" \
    --kms "https://127.0.0.1:$P3" --insecure-sim --sim-dir "$SIM" --timeout-ms "$TIMEOUT_MS" 2>&1 ||
    { echo "cluster verify failed"; exit 1; }
step "comparing"
keys() { jq -S '{disk_crypt_key, env_crypt_key, k256_key, k256_signature}' "$1" 2>/dev/null ||
         grep -E '"(disk_crypt_key|env_crypt_key|k256_key|k256_signature)"' "$1"; }
if [ "$(keys "$WORK/app_keys.1.json")" = "$(keys "$WORK/app_keys.2.json")" ] &&
   [ "$(keys "$WORK/app_keys.1.json")" = "$(keys "$WORK/app_keys.3.json")" ]; then
    echo "OK: all three nodes derived identical keys for app $APP_ID"
    grep -E '"(disk_crypt_key|k256_key)"' "$WORK/app_keys.1.json" | sed 's/: "\(.\{12\}\).*"/: "\1..."/'
else
    echo "MISMATCH between nodes"; exit 1
fi
[ $KEEP -eq 1 ] && echo "nodes left running (pids ${PIDS[*]}); logs in $WORK"
exit 0
