#!/usr/bin/env bash
# Integration: the README's main job end to end (3 kmsd processes on loopback: bootstrap,
# onboard chain, identical keys on every node), plus refused onboarding of a node that
# already has keys and onboarding from an unreachable source (clear error, no keys written).
set -euo pipefail
BIN=${KMS_BIN_DIR:?}
WORK=$(mktemp -d /tmp/kms-cluster-test-XXXXXX)
BASE=$((10000 + RANDOM % 20000))
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -20 "$f"; done; exit 1; }

cd "$(dirname "$0")/../.."
# --keep leaves the nodes running, also when the script fails: stop them on every exit.
pids=
trap 'kill $pids $(pgrep -f "kmsd --data-dir $WORK/" || true) 2>/dev/null || true' EXIT
out=$(KMS_SKIP_BUILD=1 KMS_CLUSTER_DIR=$WORK KMS_BASE_PORT=$BASE BUILD_DIR=$BIN bash deploy/local-cluster.sh --keep 2>&1) ||
    { echo "$out"; fail "local cluster script"; }
echo "$out" | grep -q "OK: all three nodes derived identical keys" || fail "keys differ"

# Onboarding a node that already has keys: refused (its onboard service is gone; a restart
# with keys serves directly, and the Onboard RPC is not on the KMS listener).
r=$(curl -sk -X POST "https://127.0.0.1:$BASE/prpc/Onboard.Onboard?json" -d '{"source_url":"https://127.0.0.1:1","domain":"x"}')
echo "$r" | grep -q '"error"' || fail "Onboard on a serving node was not refused: $r"

# Unreachable source: clear error within the timeout, no keys written.
P4=$((BASE + 3))
"$BIN/node/kmsd" --data-dir "$WORK/node4" --sim-dir "$WORK/sim" --tee sim --insecure-sim \
    --listen "127.0.0.1:$P4" --name node4 >"$WORK/node4.log" 2>&1 &
pids="$pids $!"
# Wait (generously: ASan on a loaded machine) until its onboard listener answers.
end=$((SECONDS + 120))
until curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$P4/health"; do
    [ $SECONDS -lt $end ] || fail "node4 did not start"
    sleep 0.1
done
start=$(date +%s)
if "$BIN/cli/kmsctl" onboard --onboard-url "http://127.0.0.1:$P4" --source "https://127.0.0.1:1" \
    --domain 127.0.0.1 2>"$WORK/err.txt"; then fail "onboard from an unreachable source succeeded"; fi
grep -q "cannot reach" "$WORK/err.txt" || fail "unclear error: $(cat "$WORK/err.txt")"
[ $(( $(date +%s) - start )) -lt 30 ] || fail "onboard did not fail within the timeout"
st=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P4/health")
[ "$st" = 503 ] || fail "node4 should still be uninitialized (503), got $st"
echo "cluster integration: all checks passed"
rm -rf "$WORK"
