#!/usr/bin/env bash
# eth end to end through kmsd (label `chain`): anvil with freshly deployed contracts, kmsd nodes
# with --auth eth (simulated TEE, --sim-collateral so their quotes carry tcbStatus "UpToDate"),
# everything administered with `kmsctl chain` the way an operator does it. Proves:
#  - the node's own measurements come from Onboard.GetAttestationInfo; Bootstrap (which
#    self-authorizes via isKmsAllowed) is refused with the contract's reason at each step:
#    "OS image is not allowed" → add-image → "Aggregated MR not allowed" → add-mr →
#    "KMS is not allowed to boot on this device" → add-device → bootstrapped and serving;
#  - without --sim-collateral the simulated TEE has no TCB status: "TCB status is not up to date";
#  - GetAppKey (kmsctl get-keys) is denied with "App not registered" → create-app with the
#    compose hash → keys released → app remove-hash → denied with "Compose hash not allowed";
#  - KMS onboarding: a second eth node is refused ("Aggregated MR not allowed": its instance, and
#    so its MR, differs) until add-mr, then joins and releases the same keys; a node with dev
#    auth (so its own check passes) is refused by the source's isKmsAllowed check;
#  - RPC down while serving: GetAppKey fails closed with a clear message; GetTempCaCert and
#    GetMeta still answer.
# Usage: test_e2e_eth.sh BUILD_DIR. Tools missing: fail, unless KMS_ALLOW_SKIP_CHAIN=1 (exit 77).
set -u
BIN=${1:?usage: test_e2e_eth.sh BUILD_DIR}
SRC=${KMS_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
HERE=$SRC/tests/chain
KMSD=$BIN/node/kmsd
KMSCTL=$BIN/cli/kmsctl
fails=0
pass=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; }
die() { echo "FAIL: $*"; for f in "$T"/*.log; do echo "--- $f"; tail -15 "$f"; done; exit 1; }
# expect_rc WANT NAME CMD...: runs CMD with output in $T/out
expect_rc() {
    local want=$1 name=$2 rc
    shift 2
    "$@" >"$T/out" 2>&1
    rc=$?
    if [ "$rc" = "$want" ]; then ok "$name"; else bad "$name (exit $rc, want $want)"; cat "$T/out"; fi
}
# expect_fail NAME CMD...: CMD must fail (any non-zero exit)
expect_fail() {
    local name=$1 rc
    shift
    "$@" >"$T/out" 2>&1
    rc=$?
    if [ "$rc" != 0 ]; then ok "$name"; else bad "$name (succeeded)"; cat "$T/out"; fi
}
expect_out() { # substring name
    if grep -qF -- "$1" "$T/out"; then ok "$2"; else bad "$2 (output lacks \"$1\")"; cat "$T/out"; fi
}
# The former known gaps (vm_config in GetAppKey/GetKmsKey, GetMeta while RPCs are down) are
# fixed: a check failing with a gap's old symptom is now an ordinary failure.
xfail=0
gap_or_bad() { # name symptom
    bad "$1"; cat "$T/out"
}
xexpect_rc() { # want name symptom cmd...
    local want=$1 name=$2 gap=$3 rc
    shift 3
    "$@" >"$T/out" 2>&1
    rc=$?
    if [ "$rc" = "$want" ]; then ok "$name"; else gap_or_bad "$name (exit $rc, want $want)" "$gap"; fi
    [ "$rc" = "$want" ]
}
xexpect_out() { # substring name symptom
    if grep -qF -- "$1" "$T/out"; then ok "$2"; else gap_or_bad "$2 (output lacks \"$1\")" "$3"; fi
}
# GAP_VMCONFIG: for TDX the RA-TLS certificate carries no vm_config (legacy OIDs, as the
# reference), so the vm_config must travel in the request, as the reference client does
# (GetAppKey{vm_config: sys_config.vm_config}, GetKmsKey{vm_config: Info.vm_config}); kmsctl
# get-keys and replication/onboard.c send "" instead, and the KMS then sees an empty
# os_image_hash. For a TDX source without a config the reference's joining node also falls back
# to its own os_image_hash (ensure_kms_allowed); replication/onboard.c does not.
GAP_VMCONFIG="OS image is not allowed"
# GAP_META: the eth backend asks the RPC on every GetMeta (no last-known-good info).
GAP_META="unreachable for eth_"

if ! sh "$HERE/setup.sh"; then
    if [ "${KMS_ALLOW_SKIP_CHAIN:-}" = 1 ]; then
        echo "SKIP: chain tools could not be installed; KMS_ALLOW_SKIP_CHAIN=1 is set"
        exit 77
    fi
    echo "FAIL: tests/chain/setup.sh could not install anvil and solcjs; set KMS_ALLOW_SKIP_CHAIN=1 to skip"
    exit 1
fi
[ -x "$KMSD" ] && [ -x "$KMSCTL" ] || { echo "FAIL: $KMSD or $KMSCTL not built"; exit 1; }
T=$(mktemp -d /tmp/kms-e2e-eth-XXXXXX)
PIDS=()
APID=
cleanup() {
    for p in "${PIDS[@]}" $APID; do kill "$p" 2>/dev/null; done
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
# Readiness waits poll up to 120 s (generous: ASan on a loaded machine); idle, they end at once.
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

# ---- kmsd helpers
BASE=$((10000 + RANDOM % 20000))
SIM=$T/sim
start_node() { # name port extra-args...
    local name=$1 port=$2
    shift 2
    "$KMSD" --data-dir "$T/$name" --sim-dir "$SIM" --tee sim --insecure-sim \
        --listen "127.0.0.1:$port" --name "$name" "$@" >"$T/$name.log" 2>&1 &
    PIDS+=($!)
    local end=$((SECONDS + 120))
    while [ $SECONDS -lt $end ]; do
        curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port/health" && return 0
        curl -sk -o /dev/null --max-time 5 "https://127.0.0.1:$port/health" && return 0
        sleep 0.05
    done
    die "node $name did not start"
}
wait_https() { # port
    local end=$((SECONDS + 120))
    while [ $SECONDS -lt $end ]; do
        curl -sk -o /dev/null --max-time 5 "https://127.0.0.1:$1/health" && return 0
        sleep 0.05
    done
    die "node on port $1 is not serving"
}
att_field() { # port field: from Onboard.GetAttestationInfo, as an operator reads it
    curl -s -X POST "http://127.0.0.1:$1/prpc/Onboard.GetAttestationInfo?json" | jq -r ".$2"
}
ETH=(--auth eth --eth-rpc "$KMS_ETH_RPC_URL" --kms-contract "$KMS_CONTRACT_ADDR" --eth-chain-id 31337
     --eth-block latest --eth-cache-ttl-ms 0 --auth-timeout-ms 2000 --sim-collateral)
P1=$BASE; P2=$((BASE + 1)); P3=$((BASE + 2)); P4=$((BASE + 3))
echo "ports: node1 $P1, node2 $P2, node3 $P3, nocoll $P4"

# ---- option checking
expect_rc 1 "kmsd: --auth eth without --eth-rpc refused" \
    "$KMSD" --data-dir "$T/bad" --tee sim --insecure-sim --auth eth --kms-contract "$KMS_CONTRACT_ADDR"
expect_out "--auth eth needs at least one --eth-rpc URL" "kmsd: says --eth-rpc is missing"
expect_rc 1 "kmsd: eth options with --auth dev refused" \
    "$KMSD" --data-dir "$T/bad" --tee sim --insecure-sim --auth dev --eth-rpc "$KMS_ETH_RPC_URL"
expect_out "apply to --auth eth only" "kmsd: says eth options need --auth eth"
expect_rc 2 "kmsd: bad --eth-chain-id refused" "$KMSD" --eth-chain-id 0x7a69
"$KMSD" --help >"$T/out"
expect_out "--kms-contract ADDR" "kmsd --help documents --kms-contract"

# ---- the simulated TEE without collateral has no TCB status
start_node nocoll "$P4" --auth eth --eth-rpc "$KMS_ETH_RPC_URL" --kms-contract "$KMS_CONTRACT_ADDR"
expect_fail "no --sim-collateral: bootstrap refused" \
    "$KMSCTL" bootstrap --onboard-url "http://127.0.0.1:$P4" --domain 127.0.0.1
expect_out "TCB status is not up to date" "no --sim-collateral: contract's TCB reason"
kill "${PIDS[-1]}"

# ---- an RPC URL with credentials: GetAttestationInfo (plain HTTP, unauthenticated) hides them
P5=$((BASE + 4))
start_node redact "$P5" --auth eth --eth-rpc "https://user:pw@rpc.invalid:8545/v2/SECRETKEY?apikey=SECRET2" \
    --kms-contract "$KMS_CONTRACT_ADDR"
RU=$(att_field "$P5" eth_rpc_url)
if [ "$RU" = "https://rpc.invalid:8545/<hidden>" ]; then ok "eth_rpc_url: credentials hidden"
else bad "eth_rpc_url with credentials shown as '$RU'"; fi
if curl -s -X POST "http://127.0.0.1:$P5/prpc/Onboard.GetAttestationInfo?json" | grep -q 'SECRET\|pw@'; then
    bad "GetAttestationInfo leaks the RPC credentials"
else ok "GetAttestationInfo: no RPC credentials"; fi
kill "${PIDS[-1]}"

# ---- node1: register its own measurements step by step
start_node node1 "$P1" "${ETH[@]}"
OS=$(att_field "$P1" os_image_hash)
MR1=$(att_field "$P1" mr_aggregated)
DEV=$(att_field "$P1" device_id)
[ ${#OS} = 66 ] && [ ${#MR1} = 66 ] && [ ${#DEV} = 66 ] || die "GetAttestationInfo: '$OS' '$MR1' '$DEV'"
# the backend's RPC URL and contract, for the operator who registers the node
if [ "$(att_field "$P1" eth_rpc_url)" = "$KMS_ETH_RPC_URL" ]; then ok "GetAttestationInfo: eth_rpc_url"
else bad "GetAttestationInfo: eth_rpc_url is '$(att_field "$P1" eth_rpc_url)'"; fi
CA_FIELD=$(att_field "$P1" kms_contract_address)
if [ "$(echo "$CA_FIELD" | tr A-F a-f)" = "$(echo "$KMS_CONTRACT_ADDR" | tr A-F a-f)" ]; then
    ok "GetAttestationInfo: kms_contract_address"
else bad "GetAttestationInfo: kms_contract_address is '$CA_FIELD'"; fi
boot1() { "$KMSCTL" bootstrap --onboard-url "http://127.0.0.1:$P1" --domain 127.0.0.1; }
expect_fail "fresh contract: bootstrap refused" boot1
expect_out "OS image is not allowed" "fresh contract: contract's reason"
expect_rc 0 "add-image" "$KMSCTL" chain add-image "$OS"
expect_fail "image only: bootstrap refused" boot1
expect_out "Aggregated MR not allowed" "image only: contract's reason"
expect_rc 0 "add-mr (node1)" "$KMSCTL" chain add-mr "$MR1"
expect_fail "no device: bootstrap refused" boot1
expect_out "KMS is not allowed to boot on this device" "no device: contract's reason"
expect_rc 0 "add-device" "$KMSCTL" chain add-device "$DEV"
expect_rc 0 "registered: bootstrap" boot1
wait_https "$P1"

# ---- app: denied → registered → allowed → hash removed → denied
H=$(printf '%064x' 0xc0ffee)
VM="{\"os_image_hash\":\"${OS#0x}\"}"
getkeys() { # port app-id out
    "$KMSCTL" get-keys --kms "https://127.0.0.1:$1" --app-id "$2" --compose-hash "$H" \
        --vm-config "$VM" --tee sim --insecure-sim --sim-dir "$SIM" --out "$3"
}
UNREG=92e5c15e971558323c3ebbbe862247de0838950b
expect_fail "unregistered app: GetAppKey denied" getkeys "$P1" "$UNREG" "$T/k0.json"
expect_out "App not registered" "unregistered app: contract's reason"
expect_rc 0 "create-app with the compose hash" "$KMSCTL" chain create-app --allow-any-device --hash "0x$H"
APP=$(sed -n 's/^App ID: 0x//p' "$T/out")
[ ${#APP} = 40 ] || die "create-app printed no app id"
if xexpect_rc 0 "registered app: GetAppKey released" "$GAP_VMCONFIG" getkeys "$P1" "$APP" "$T/k1.json"; then
    [ "$(jq -r '.disk_crypt_key | length' "$T/k1.json")" -gt 0 ] && ok "keys written" || bad "keys written"
fi
expect_rc 0 "app remove-hash" "$KMSCTL" chain app remove-hash --app-id "0x$APP" "0x$H"
expect_fail "hash removed: GetAppKey denied" getkeys "$P1" "$APP" "$T/k2.json"
xexpect_out "Compose hash not allowed" "hash removed: contract's reason" "$GAP_VMCONFIG"
expect_rc 0 "app add-hash (again)" "$KMSCTL" chain app add-hash --app-id "0x$APP" "0x$H"

# ---- KMS onboarding: node2 (eth) refused until its MR is registered
start_node node2 "$P2" "${ETH[@]}"
MR2=$(att_field "$P2" mr_aggregated)
[ "$MR2" != "$MR1" ] || die "node2 has node1's MR; the test cannot tell them apart"
[ "$(att_field "$P2" device_id)" = "$DEV" ] && ok "node2 runs on the registered device" ||
    bad "node2 device id differs"
onboard() { # port
    "$KMSCTL" onboard --onboard-url "http://127.0.0.1:$1" --source "https://127.0.0.1:$P1" --domain 127.0.0.1
}
expect_fail "node2 unregistered MR: onboarding refused" onboard "$P2"
expect_out "Aggregated MR not allowed" "node2: contract's reason"
# node3 checks itself with dev auth, so the refusal comes from node1's isKmsAllowed
start_node node3 "$P3" --auth dev --sim-collateral
expect_fail "node3 unregistered MR: source refuses" onboard "$P3"
xexpect_out "Aggregated MR not allowed" "node3: source's contract reason" "$GAP_VMCONFIG"
expect_rc 0 "add-mr (node2)" "$KMSCTL" chain add-mr "$MR2"
if xexpect_rc 0 "node2 registered: onboarded" "$GAP_VMCONFIG" onboard "$P2"; then
    wait_https "$P2"
    if xexpect_rc 0 "node2: GetAppKey released" "$GAP_VMCONFIG" getkeys "$P2" "$APP" "$T/k3.json"; then
        if [ "$(jq -S '{disk_crypt_key, env_crypt_key, k256_key}' "$T/k1.json")" = \
             "$(jq -S '{disk_crypt_key, env_crypt_key, k256_key}' "$T/k3.json")" ]; then
            ok "node1 and node2 release the same keys"
        else
            bad "node1 and node2 keys differ"
        fi
    fi
fi

# ---- RPC down while serving: fail closed, the rest keeps working
kill "$APID"
wait "$APID" 2>/dev/null
APID=
start=$(date +%s)
expect_fail "RPC down: GetAppKey fails closed" getkeys "$P1" "$APP" "$T/k4.json"
expect_out "authorization backend unavailable" "RPC down: clear message"
[ ! -s "$T/k4.json" ] && ok "RPC down: no keys written" || bad "RPC down: keys written"
[ $(($(date +%s) - start)) -lt 20 ] && ok "RPC down: answered within the timeout" || bad "RPC down: too slow"
curl -sk -X POST "https://127.0.0.1:$P1/prpc/KMS.GetTempCaCert?json" >"$T/out"
expect_out '"temp_ca_cert"' "RPC down: GetTempCaCert still served"
curl -sk -X POST "https://127.0.0.1:$P1/prpc/KMS.GetMeta?json" >"$T/out"
xexpect_out '"k256_pubkey"' "RPC down: GetMeta still served" "$GAP_META"
# /health is the node state: 200 serving, 207 when a peer check is stale (node2 was checked
# while still on plain HTTP); the RPC being down must not make it fail
st=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$P1/health")
case "$st" in 200 | 207) ok "RPC down: /health answers ($st)" ;; *) bad "RPC down: /health $st"; curl -sk "https://127.0.0.1:$P1/health" ;; esac

echo "$pass passed, $fails failed, $xfail known-gap (XFAIL)"
[ "$fails" = 0 ]
