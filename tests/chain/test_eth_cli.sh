#!/bin/sh
# eth: `kmsctl chain` as an operator uses it, against anvil (label `chain`). Proves: --help on
# every subcommand; usage errors exit 2; the signing key never appears in any output, whether
# it comes from the environment or a file; deploy → add-image → create-app → is-app-allowed
# allowed (exit 0) → app remove-hash → denied with the contract's reason (exit 3); status shows
# the state; a non-owner key is refused with the contract's error and nothing is sent; hex
# arguments of the wrong length (63 digits) are refused before anything is sent (exit 2); the
# seed guide's RPC_URL / PRIVATE_KEY / KMS_CONTRACT_ADDRESS work as aliases (conflicts refused);
# --json gives one JSON object with decoded events (PolicyChanged named); requireTcbUpToDate is
# set, read and enforced.
# Usage: test_eth_cli.sh KMSCTL. Tools missing: fail, unless KMS_ALLOW_SKIP_CHAIN=1 (exit 77).
set -u
KMSCTL=$1
SRC=${KMS_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
HERE=$SRC/tests/chain
fails=0
pass=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; }
expect_rc() { # want_rc name cmd...
    want=$1; name=$2; shift 2
    "$@" >"$T/out" 2>&1; rc=$?
    if [ "$rc" = "$want" ]; then ok "$name"; else bad "$name (exit $rc, want $want)"; cat "$T/out"; fi
}
expect_out() { # substring name
    if grep -q -- "$1" "$T/out"; then ok "$2"; else bad "$2 (output lacks \"$1\")"; cat "$T/out"; fi
}

if ! sh "$HERE/setup.sh"; then
    if [ "${KMS_ALLOW_SKIP_CHAIN:-}" = 1 ]; then
        echo "SKIP: chain tools could not be installed; KMS_ALLOW_SKIP_CHAIN=1 is set"
        exit 77
    fi
    echo "FAIL: tests/chain/setup.sh could not install anvil and solcjs; set KMS_ALLOW_SKIP_CHAIN=1 to skip"
    exit 1
fi
T=$(mktemp -d /tmp/kms-eth-cli-XXXXXX)
APID=
cleanup() { [ -n "$APID" ] && kill "$APID" 2>/dev/null && wait "$APID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

# --help on every subcommand (no RPC needed)
for c in deploy add-image remove-image add-mr remove-mr add-device remove-device register-app \
    set-app-impl create-app "app add-hash" "app remove-hash" "app add-device" "app remove-device" \
    "app set-allow-any-device" "app set-require-tcb-up-to-date" set-gateway set-info status is-kms-allowed is-app-allowed; do
    # shellcheck disable=SC2086
    expect_rc 0 "help: $c" "$KMSCTL" chain $c --help
    expect_out "usage: kmsctl chain $c" "help text: $c"
done
expect_rc 0 "help: top level" "$KMSCTL" chain --help
expect_rc 2 "usage: unknown command" "$KMSCTL" chain frobnicate
expect_rc 2 "usage: unknown option" "$KMSCTL" chain status --private-key 00

(cd "$HERE" && ./node_modules/.bin/solcjs --bin --abi --optimize --base-path contracts -o "$T/out.d" \
    contracts/DstackKms.sol contracts/DstackApp.sol contracts/ERC1967Proxy.sol) >"$T/solc.log" 2>&1 ||
    { echo "FAIL: solcjs"; cat "$T/solc.log"; exit 1; }
"$HERE/node_modules/.bin/anvil" --host 127.0.0.1 --port 0 >"$T/anvil.log" 2>&1 &
APID=$!
end=$(($(date +%s) + 120)) # generous: a loaded machine; idle, anvil is up in a second
while ! grep -q 'Listening on 127.0.0.1:' "$T/anvil.log" && [ "$(date +%s)" -lt $end ]; do sleep 0.05; done
PORT=$(sed -n 's/.*Listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$T/anvil.log" | head -1)
[ -n "$PORT" ] || { echo "FAIL: anvil did not start"; cat "$T/anvil.log"; exit 1; }
export KMS_ETH_RPC_URL=http://127.0.0.1:$PORT
KEYHEX=ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80 # anvil's public dev key
printf '0x%s\n' "$KEYHEX" >"$T/key"
chmod 600 "$T/key"

expect_rc 1 "no key: refused" env -u KMS_ETH_PRIVATE_KEY "$KMSCTL" chain deploy --artifacts "$T/out.d"
expect_out "set KMS_ETH_PRIVATE_KEY or pass --key-file" "no key: message"
expect_rc 0 "deploy (key file)" "$KMSCTL" chain deploy --artifacts "$T/out.d" --key-file "$T/key"
expect_out "KMS_CONTRACT_ADDR=0x" "deploy: prints the contract"
cp "$T/out" "$T/all"
KMS_CONTRACT_ADDR=$(sed -n 's/^KMS_CONTRACT_ADDR=//p' "$T/out")
export KMS_CONTRACT_ADDR
export KMS_ETH_PRIVATE_KEY=0x$KEYHEX
OS=0x$(printf '%064d' 7)
H=0x$(printf '%064d' 9)
expect_rc 0 "add-image" "$KMSCTL" chain add-image "$OS"
expect_out "OsImageHashAdded($OS)" "add-image: prints the event"
cat "$T/out" >>"$T/all"
expect_rc 0 "create-app" "$KMSCTL" chain create-app --allow-any-device --hash "$H"
expect_out "App ID: 0x" "create-app: prints the app id"
cat "$T/out" >>"$T/all"
APP=$(sed -n 's/^App ID: //p' "$T/out")
expect_rc 0 "is-app-allowed: allowed" "$KMSCTL" chain is-app-allowed --app-id "$APP" --compose-hash "$H" --os-image-hash "$OS"
expect_out "^allowed" "is-app-allowed: says allowed"
expect_rc 0 "app remove-hash" "$KMSCTL" chain app remove-hash --app-id "$APP" "$H"
cat "$T/out" >>"$T/all"
expect_rc 3 "is-app-allowed: denied" "$KMSCTL" chain is-app-allowed --app-id "$APP" --compose-hash "$H" --os-image-hash "$OS"
expect_out "denied: Compose hash not allowed" "is-app-allowed: contract's reason"
printf '{"appId":"%s","composeHash":"%s","osImageHash":"%s","instanceId":"","deviceId":"","mrAggregated":"","tcbStatus":"UpToDate"}' \
    "${APP#0x}" "${H#0x}" "${OS#0x}" >"$T/bi.json"
expect_rc 3 "is-app-allowed --boot-info" "$KMSCTL" chain is-app-allowed --boot-info "$T/bi.json"
expect_rc 0 "status" "$KMSCTL" chain status --app-id "$APP"
expect_out "chain id:           31337" "status: chain id"
expect_out "app registered:     yes" "status: app registered"

# strict hex: a wrong length is refused before anything is sent, never padded
expect_rc 2 "add-mr: 63 hex digits refused" "$KMSCTL" chain add-mr "0x$(printf '%063d' 9)"
expect_out "must be 32 bytes: 64 hex digits (0x optional), got 63" "add-mr 63: says why"
if grep -q "^tx 0x" "$T/out"; then bad "add-mr 63: nothing sent"; else ok "add-mr 63: nothing sent"; fi
expect_rc 2 "add-mr: 65 hex digits refused" "$KMSCTL" chain add-mr "0x$(printf '%065d' 9)"
expect_rc 2 "app add-hash: 31 bytes refused" "$KMSCTL" chain app add-hash --app-id "$APP" "0x$(printf '%062d' 9)"
expect_rc 2 "is-app-allowed: short compose hash refused" "$KMSCTL" chain is-app-allowed \
    --app-id "$APP" --compose-hash 0x1234
expect_rc 0 "add-mr: 64 digits, no 0x" "$KMSCTL" chain add-mr "$(printf '%064d' 5)"
expect_out "KmsAggregatedMrAdded(0x$(printf '%064d' 5))" "add-mr: the full value registered"

# the seed guide's variable names
expect_rc 0 "aliases: RPC_URL, KMS_CONTRACT_ADDRESS, PRIVATE_KEY" env -u KMS_ETH_RPC_URL \
    -u KMS_CONTRACT_ADDR -u KMS_ETH_PRIVATE_KEY RPC_URL="$KMS_ETH_RPC_URL" \
    KMS_CONTRACT_ADDRESS="$KMS_CONTRACT_ADDR" PRIVATE_KEY="$KMS_ETH_PRIVATE_KEY" \
    "$KMSCTL" chain status
expect_out "signer:             0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266" "aliases: key used"
cat "$T/out" >>"$T/all"
expect_rc 2 "aliases: conflicting values refused" env RPC_URL=http://127.0.0.1:1 "$KMSCTL" chain status
expect_out "KMS_ETH_RPC_URL and RPC_URL are both set" "aliases: conflict named"

# --json: one object on stdout, events decoded (PolicyChanged with its policy's name)
if "$KMSCTL" chain app add-hash --app-id "$APP" "$H" --json >"$T/json" 2>"$T/err" &&
    python3 - "$T/json" "$H" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] is True and r["exit_status"] == 0 and r["command"] == "app add-hash", r
tx = r["transactions"][0]
assert tx["status"] == "mined" and tx["function"] == "addComposeHash(bytes32)", tx
ev = {e["event"]: e["args"] for e in tx["events"]}
assert ev["ComposeHashAdded"] == [sys.argv[2]], ev
assert ev["PolicyChanged"][1:] == ["compose-hash", sys.argv[2], "true"], ev
PY
then ok "--json: transaction with decoded events"; else bad "--json: app add-hash"; cat "$T/json" "$T/err"; fi
if "$KMSCTL" chain is-app-allowed --app-id "$APP" --compose-hash "$H" --os-image-hash "$OS" \
    --json >"$T/json" 2>/dev/null &&
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["allowed"] is True, r' "$T/json"
then ok "--json: is-app-allowed"; else bad "--json: is-app-allowed"; cat "$T/json"; fi

# requireTcbUpToDate: read, set (events decoded), enforced by the contract
expect_rc 0 "status: requireTcbUpToDate" "$KMSCTL" chain status --app-id "$APP"
expect_out "app requireTcbUpToDate: false" "status: requireTcbUpToDate false"
expect_rc 0 "app set-require-tcb-up-to-date true" "$KMSCTL" chain app set-require-tcb-up-to-date \
    --app-id "$APP" true
expect_out "RequireTcbUpToDateSet(true)" "tcb: event decoded"
expect_out 'PolicyChanged(0x[0-9a-fA-F]*, "require-tcb-up-to-date", 0x0*, true)' "tcb: PolicyChanged decoded"
cat "$T/out" >>"$T/all"
expect_rc 0 "status: requireTcbUpToDate set" "$KMSCTL" chain status --app-id "$APP"
expect_out "app requireTcbUpToDate: true" "status: requireTcbUpToDate true"
expect_rc 3 "tcb: OutOfDate denied" "$KMSCTL" chain is-app-allowed --app-id "$APP" --compose-hash "$H" \
    --os-image-hash "$OS" --tcb-status OutOfDate
expect_out "denied: TCB status is not up to date" "tcb: the contract's reason"
expect_rc 0 "tcb: UpToDate allowed" "$KMSCTL" chain is-app-allowed --app-id "$APP" --compose-hash "$H" \
    --os-image-hash "$OS" --tcb-status UpToDate
expect_rc 2 "tcb: not a boolean" "$KMSCTL" chain app set-require-tcb-up-to-date --app-id "$APP" yes

expect_rc 1 "non-owner refused" env KMS_ETH_PRIVATE_KEY=0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d \
    "$KMSCTL" chain add-mr "$H"
expect_out "would revert: OwnableUnauthorizedAccount" "non-owner: contract's error"
expect_out "nothing sent" "non-owner: nothing sent"
cat "$T/out" >>"$T/all"
if grep -qi "$KEYHEX" "$T/all" || grep -qi 59c6995e998f97a5 "$T/all"; then bad "key never printed"; else ok "key never printed"; fi
echo "$pass passed, $fails failed"
[ "$fails" = 0 ]
