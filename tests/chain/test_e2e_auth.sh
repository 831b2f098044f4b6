#!/usr/bin/env bash
# Continuous self-authorization and robust reads through kmsd --auth eth on anvil (label chain),
# the RPC reached through tests/chain/rpc_proxy.py (a loopback JSON-RPC proxy that can be down,
# or lag like a load balancer). Short --auth-interval/--auth-grace. Proves:
#  - KMS removed on chain (remove-mr): not-authorized within the interval with the contract's
#    reason, key RPCs refused; re-added: serving again within the interval, no restart;
#  - a lagging backend (eth_blockNumber one block ahead of eth_call): no refusal, the read steps
#    back a block;
#  - RPC down at start: not-authorized, /health says backend-unreachable (not denied); the RPC
#    comes up: serving within the interval;
#  - --eth-block finalized on a contract not yet finalized: Bootstrap says the contract has no
#    code at the finalized block (not an ABI decoding error).
# Usage: test_e2e_auth.sh BUILD_DIR. Tools missing: fail, unless KMS_ALLOW_SKIP_CHAIN=1 (77).
set -u
BIN=${1:?usage: test_e2e_auth.sh BUILD_DIR}
SRC=${KMS_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
HERE=$SRC/tests/chain
KMSD=$BIN/node/kmsd
KMSCTL=$BIN/cli/kmsctl
INTERVAL_MS=1000
GRACE_MS=3000
SLACK_MS=5000 # a check (sim attestation + verification + eth_calls) on a loaded ASan machine
fails=0
pass=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; }
die() { echo "FAIL: $*"; for f in "$T"/*.log; do echo "--- $f"; tail -15 "$f"; done; exit 1; }
expect_fail() {
    local name=$1 rc
    shift
    "$@" >"$T/out" 2>&1
    rc=$?
    if [ "$rc" != 0 ]; then ok "$name"; else bad "$name (succeeded)"; cat "$T/out"; fi
}
expect_rc() {
    local want=$1 name=$2 rc
    shift 2
    "$@" >"$T/out" 2>&1
    rc=$?
    if [ "$rc" = "$want" ]; then ok "$name"; else bad "$name (exit $rc, want $want)"; cat "$T/out"; fi
}
expect_out() {
    if grep -qF -- "$1" "$T/out"; then ok "$2"; else bad "$2 (output lacks \"$1\")"; cat "$T/out"; fi
}
now_ms() { date +%s%3N; }

if ! sh "$HERE/setup.sh"; then
    if [ "${KMS_ALLOW_SKIP_CHAIN:-}" = 1 ]; then
        echo "SKIP: chain tools could not be installed; KMS_ALLOW_SKIP_CHAIN=1 is set"
        exit 77
    fi
    echo "FAIL: tests/chain/setup.sh could not install anvil and solcjs; set KMS_ALLOW_SKIP_CHAIN=1 to skip"
    exit 1
fi
[ -x "$KMSD" ] && [ -x "$KMSCTL" ] || { echo "FAIL: $KMSD or $KMSCTL not built"; exit 1; }
command -v python3 >/dev/null || { echo "FAIL: python3 is needed for the RPC proxy"; exit 1; }
T=$(mktemp -d /tmp/kms-e2e-auth-XXXXXX)
PIDS=()
APID=
XPID=
cleanup() {
    for p in "${PIDS[@]}" $APID $XPID; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ "$fails" = 0 ] && rm -rf "$T"
}
trap cleanup EXIT

# ---- chain: compile, start anvil, deploy
(cd "$HERE" && ./node_modules/.bin/solcjs --bin --abi --optimize --base-path contracts -o "$T/out.d" \
    contracts/DstackKms.sol contracts/DstackApp.sol contracts/ERC1967Proxy.sol) >"$T/solc.log" 2>&1 ||
    die "solcjs"
"$HERE/node_modules/.bin/anvil" --host 127.0.0.1 --port 0 >"$T/anvil.log" 2>&1 &
APID=$!
end=$((SECONDS + 120))
until grep -q "Listening on 127.0.0.1:" "$T/anvil.log" 2>/dev/null || [ $SECONDS -ge $end ]; do sleep 0.05; done
APORT=$(sed -n 's/.*Listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$T/anvil.log" | head -1)
[ -n "$APORT" ] || die "anvil did not start"
export KMS_ETH_RPC_URL=http://127.0.0.1:$APORT
export KMS_ETH_PRIVATE_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80 # anvil's public dev key
"$KMSCTL" chain deploy --artifacts "$T/out.d" >"$T/deploy.out" 2>&1 || { cat "$T/deploy.out"; die "deploy"; }
KMS_CONTRACT_ADDR=$(sed -n 's/^KMS_CONTRACT_ADDR=//p' "$T/deploy.out")
export KMS_CONTRACT_ADDR
[ -n "$KMS_CONTRACT_ADDR" ] || die "deploy printed no contract address"

# ---- the RPC proxy: proxy_start [--ahead N] (same port every time once chosen)
XPORT=0
proxy_start() {
    # emptied here, not only by the job's redirection: that runs in the forked job, possibly
    # after the loop below has already read the previous proxy's "listening" line
    : >"$T/proxy.log"
    python3 "$HERE/rpc_proxy.py" --port "$XPORT" --upstream "$KMS_ETH_RPC_URL" "$@" >"$T/proxy.log" 2>&1 &
    XPID=$!
    local end=$((SECONDS + 60))
    until grep -q "^listening " "$T/proxy.log" 2>/dev/null || [ $SECONDS -ge $end ]; do
        kill -0 "$XPID" 2>/dev/null || break
        sleep 0.05
    done
    XPORT=$(sed -n 's/^listening //p' "$T/proxy.log")
    [ -n "$XPORT" ] || die "RPC proxy did not start: $(tail -n 3 "$T/proxy.log")"
}
proxy_stop() { kill "$XPID" 2>/dev/null; wait "$XPID" 2>/dev/null; XPID=; }
proxy_start
PROXY=http://127.0.0.1:$XPORT

# ---- kmsd helpers
BASE=$((10000 + RANDOM % 20000))
SIM=$T/sim
start_node() { # name port extra-args...
    local name=$1 port=$2
    shift 2
    "$KMSD" --data-dir "$T/$name" --sim-dir "$SIM" --tee sim --insecure-sim \
        --listen "127.0.0.1:$port" --name "$name" "$@" >>"$T/$name.log" 2>&1 &
    PIDS+=($!)
    local end=$((SECONDS + 120))
    while [ $SECONDS -lt $end ]; do
        curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port/health" && return 0
        curl -sk -o /dev/null --max-time 5 "https://127.0.0.1:$port/health" && return 0
        sleep 0.05
    done
    die "node $name did not start"
}
att_field() { curl -s -X POST "http://127.0.0.1:$1/prpc/Onboard.GetAttestationInfo?json" | jq -r ".$2"; }
# wait_health PORT HTTP STATUS: polls /health until its HTTP status and self_auth.status match
# (at most 60 s); prints the ms it took, or fails with what it saw.
wait_health() {
    local port=$1 want=$2 status=$3 t0 code
    t0=$(now_ms)
    while [ $(($(now_ms) - t0)) -lt 60000 ]; do
        code=$(curl -sk -o "$T/health.json" -w '%{http_code}' --max-time 5 "https://127.0.0.1:$port/health")
        if [ "$code" = "$want" ] && [ "$(jq -r .self_auth.status "$T/health.json")" = "$status" ]; then
            echo $(($(now_ms) - t0))
            return 0
        fi
        sleep 0.05
    done
    echo "last /health: $code $(cat "$T/health.json")" >&2
    return 1
}
# within NAME MS: MS is set and at most one interval (plus a check's time)
within() {
    if [ -n "$2" ] && [ "$2" -le $((INTERVAL_MS + SLACK_MS)) ]; then ok "$1 (${2} ms)"; else bad "$1 (${2:-never} ms)"; fi
}
metric() { curl -sk --max-time 5 "https://127.0.0.1:$1/metrics" | sed -n "s/^$2 //p"; }
ETH=(--auth eth --eth-rpc "$PROXY" --kms-contract "$KMS_CONTRACT_ADDR" --eth-chain-id 31337
     --eth-block latest --eth-cache-ttl-ms 0 --auth-timeout-ms 2000 --sim-collateral
     --auth-interval "${INTERVAL_MS}ms" --auth-grace "${GRACE_MS}ms")
P1=$BASE; P2=$((BASE + 1))

# ---- node1: registered and bootstrapped through the proxy
start_node node1 "$P1" "${ETH[@]}"
OS=$(att_field "$P1" os_image_hash)
MR1=$(att_field "$P1" mr_aggregated)
DEV=$(att_field "$P1" device_id)
[ ${#OS} = 66 ] && [ ${#MR1} = 66 ] && [ ${#DEV} = 66 ] || die "GetAttestationInfo: '$OS' '$MR1' '$DEV'"
"$KMSCTL" chain add-image "$OS" >"$T/out" 2>&1 || die "add-image: $(cat "$T/out")"
"$KMSCTL" chain add-mr "$MR1" >"$T/out" 2>&1 || die "add-mr: $(cat "$T/out")"
"$KMSCTL" chain add-device "$DEV" >"$T/out" 2>&1 || die "add-device: $(cat "$T/out")"
expect_rc 0 "bootstrap" "$KMSCTL" bootstrap --onboard-url "http://127.0.0.1:$P1" --domain 127.0.0.1
wait_health "$P1" 200 allowed >/dev/null && ok "serving, self_auth allowed" || bad "serving, self_auth allowed"
temp_ca() { curl -sk -X POST --max-time 10 "https://127.0.0.1:$P1/prpc/KMS.GetTempCaCert?json" >"$T/out"; }

# ---- KMS removed on chain: stops within the interval; re-added: serves again
expect_rc 0 "remove-mr (node1)" "$KMSCTL" chain remove-mr "$MR1"
within "removed: not-authorized (denied)" "$(wait_health "$P1" 403 denied)"
[ "$(jq -r .reason "$T/health.json")" = "Aggregated MR not allowed" ] && ok "removed: /health has the contract's reason" ||
    bad "removed: /health reason $(cat "$T/health.json")"
temp_ca
expect_out "KMS is not authorized by its own policy: Aggregated MR not allowed" "removed: key RPCs refused"
grep -qF "state: not-authorized (denied by its own policy: Aggregated MR not allowed)" "$T/node1.log" &&
    ok "removed: logged as a denial" || bad "removed: logged as a denial"
[ "$(metric "$P1" 'kmsd_self_auth_state{state="denied"}')" = 1 ] && ok "removed: metrics say denied" ||
    bad "removed: metrics say denied"
expect_rc 0 "add-mr again (node1)" "$KMSCTL" chain add-mr "$MR1"
within "re-added: serving" "$(wait_health "$P1" 200 allowed)"
temp_ca
expect_out '"temp_ca_cert"' "re-added: key RPCs served"

# ---- a lagging load balancer: eth_blockNumber one block ahead of eth_call
proxy_stop
proxy_start --ahead 1
c0=$(metric "$P1" kmsd_self_auth_checks_total)
end=$((SECONDS + 60))
while [ "$(metric "$P1" kmsd_self_auth_checks_total)" -lt $((c0 + 3)) ] && [ $SECONDS -lt $end ]; do sleep 0.1; done
[ "$(metric "$P1" kmsd_self_auth_checks_total)" -ge $((c0 + 3)) ] && ok "lagging RPC: checks continue" ||
    bad "lagging RPC: checks continue"
code=$(curl -sk -o "$T/health.json" -w '%{http_code}' "https://127.0.0.1:$P1/health")
[ "$code" = 200 ] && [ "$(jq -r .self_auth.status "$T/health.json")" = allowed ] &&
    ok "lagging RPC: no refusal" || bad "lagging RPC: /health $code $(cat "$T/health.json")"
grep -q "lacks block .*BlockOutOfRange.*retrying one block back" "$T/node1.log" &&
    ok "lagging RPC: read stepped back a block" || bad "lagging RPC: no step back logged"
proxy_stop

# ---- RPC down at start, then up: serves within one interval
kill "${PIDS[0]}"
wait "${PIDS[0]}" 2>/dev/null
start_node node1 "$P1" "${ETH[@]}"
wait_health "$P1" 403 backend-unreachable >/dev/null && ok "RPC down at start: not-authorized, backend-unreachable" ||
    bad "RPC down at start: not-authorized, backend-unreachable"
[ "$(jq -r .self_auth.decision "$T/health.json")" = none ] && ok "RPC down at start: no decision yet" ||
    bad "RPC down at start: decision $(cat "$T/health.json")"
temp_ca
expect_out "KMS cannot confirm its own authorization" "RPC down at start: key RPCs refused, not as a denial"
[ "$(metric "$P1" kmsd_auth_backend_errors_total)" -ge 1 ] && ok "RPC down at start: backend errors counted" ||
    bad "RPC down at start: backend errors counted"
proxy_start
within "RPC up: serving" "$(wait_health "$P1" 200 allowed)"
temp_ca
expect_out '"temp_ca_cert"' "RPC up: key RPCs served"

# ---- --eth-block finalized on a contract not yet finalized: a clear error
FIN=("${ETH[@]}")
FIN[9]=finalized # the value after --eth-block
start_node node2 "$P2" "${FIN[@]}"
expect_fail "finalized, fresh contract: bootstrap refused" \
    "$KMSCTL" bootstrap --onboard-url "http://127.0.0.1:$P2" --domain 127.0.0.1
expect_out "has no code at the finalized block (not yet finalized? use --eth-block latest)" \
    "finalized, fresh contract: says the contract is not finalized"

echo "$pass passed, $fails failed"
[ "$fails" = 0 ]
