#!/usr/bin/env bash
# deploy: runs every locally runnable command of docs/deploy-dstack-cloud.md (the blocks marked
# <!-- docs-test -->) in order, in one shell, as the guide's "rehearsal": anvil as the chain
# (the test tree's DstackKms-compatible contracts), local kmsd nodes with a simulated TEE and
# --sim-collateral as the two regions' CVMs, podman building the image on the mmdebstrap base.
# The hooks below stand in for what the guide does outside the shell (deploying the CVMs); the
# only other substitution is the podman wrapper adding the base image to `podman build`.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
source "$HERE/lib.sh"
BIN=${KMS_BIN_DIR:?}
PY=/usr/bin/python3
[ -x $PY ] || PY=python3
kms_podman_usable || exit 77
kms_podman_env
command -v docker-compose >/dev/null || { echo "FAIL: docker-compose is not installed (deploy/install-deps.sh)"; exit 1; }
sh "$SRC/tests/chain/setup.sh" >/dev/null 2>&1 || { echo "FAIL: tests/chain/setup.sh (anvil, solcjs)"; exit 1; }

WORK=$(mktemp -d /tmp/kms-deploy-docs-XXXXXX)
PIDS=()
# The guide's blocks run in a subshell: what they start is recorded in $WORK/pids, so that
# this (parent) shell can stop it.
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -f "$WORK/pids" ]; then
        while read -r p; do kill "$p" 2>/dev/null || true; done <"$WORK/pids"
    fi
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
$PY "$HERE/docs_blocks.py" "$SRC/docs/deploy-dstack-cloud.md" >"$WORK/blocks.sh"

BASE=$((10000 + RANDOM % 20000)) # below the ephemeral range (32768-)
export HOME=$WORK/home
mkdir -p "$HOME"
export PATH=$BIN/node:$BIN/cli:$PATH
export KMS_ETH_PRIVATE_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80 # anvil's public dev key
export KMSD_SRC=$SRC
export ARTIFACTS=$WORK/artifacts
export SIM_DIR=$WORK/sim
export SIM_OPTS="--insecure-sim --sim-dir $SIM_DIR"
export KMS_DOMAIN=127.0.0.1 KMS2_DOMAIN=127.0.0.1
export KMS_ONBOARD=http://127.0.0.1:$BASE KMS_URL=https://127.0.0.1:$BASE
export KMS2_ONBOARD=http://127.0.0.1:$((BASE + 1)) KMS2_URL=https://127.0.0.1:$((BASE + 1))
BASE_IMAGE=$(kms_base_image)
export BASE_IMAGE

docs_block() { echo "==> block $1 (docs/deploy-dstack-cloud.md:$2)"; }
docs_done() { echo "docs: all $1 blocks ran"; }
# podman build on this machine: the mmdebstrap base (no registry) and the host network
podman() {
    if [ "$1" = build ]; then
        shift
        command podman build --network host --build-arg BASE_IMAGE="$BASE_IMAGE" "$@"
    else
        command podman "$@"
    fi
}
chain_up() {
    (cd "$SRC/tests/chain" && ./node_modules/.bin/solcjs --bin --abi --optimize --base-path contracts \
        -o "$ARTIFACTS" contracts/DstackKms.sol contracts/DstackApp.sol contracts/ERC1967Proxy.sol) \
        >"$WORK/solc.log" 2>&1 || { cat "$WORK/solc.log"; return 1; }
    "$SRC/tests/chain/node_modules/.bin/anvil" --host 127.0.0.1 --port 0 >"$WORK/anvil.log" 2>&1 &
    PIDS+=($!)
    echo $! >>"$WORK/pids"
    kms_wait 20 grep -q "Listening on 127.0.0.1:" "$WORK/anvil.log" || { echo "anvil did not start"; return 1; }
    KMS_ETH_RPC_URL=http://127.0.0.1:$(sed -n 's/.*Listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/anvil.log" | head -1)
    export KMS_ETH_RPC_URL
}
start_cvm() { # name port: a region's CVM, as the compose file runs kmsd (auth eth, port as given)
    kmsd --data-dir "$WORK/$1" --sim-dir "$SIM_DIR" --tee sim --insecure-sim --sim-collateral \
        --auth eth --eth-rpc "$KMS_ETH_RPC_URL" --kms-contract "$KMS_CONTRACT_ADDR" --eth-chain-id 31337 \
        --eth-cache-ttl-ms 0 --listen "127.0.0.1:$2" --name "$1" >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    echo $! >>"$WORK/pids"
    kms_wait 30 curl -s -o /dev/null "http://127.0.0.1:$2/health" || { tail "$WORK/$1.log"; return 1; }
}
start_cvm1() { start_cvm kms-us-east "$BASE"; }
start_cvm2() { start_cvm kms-eu-west "$((BASE + 1))"; }
wait_serving1() { kms_wait 30 curl -skf -o /dev/null "$KMS_URL/health"; }
wait_serving2() { kms_wait 30 curl -skf -o /dev/null "$KMS2_URL/health"; }

before=$(git -C "$SRC" status --porcelain 2>/dev/null || true)
cd "$HOME"
t0=$(date +%s)
set +e
(
    set -euo pipefail
    set -o errtrace
    trap 'echo "FAIL: docs command failed (exit $?): $BASH_COMMAND"' ERR
    source "$WORK/blocks.sh"
) 2>&1 | tee "$WORK/run.log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then
    for f in "$WORK"/*.log; do echo "--- $f"; tail -15 "$f"; done
    echo "FAIL: a docs block failed"
    exit 1
fi
grep -q "^docs: all" "$WORK/run.log" || { echo "FAIL: not every block ran"; exit 1; }
grep -qx "same keys" "$WORK/run.log" || { echo "FAIL: the two regions' keys were not compared equal"; exit 1; }
[ "$(git -C "$SRC" status --porcelain 2>/dev/null || true)" = "$before" ] ||
    { echo "FAIL: the guide's commands wrote into the checkout"; git -C "$SRC" status --short; exit 1; }
echo "docs: passed in $(($(date +%s) - t0)) s"
