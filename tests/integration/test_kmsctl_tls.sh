#!/usr/bin/env bash
# Integration: kmsctl verifies the node's TLS certificate against the cluster's root CA (issue 10
# item 8). Two sim nodes bootstrap two clusters A and B. `kmsctl meta` and `kmsctl cluster status`
# with --ca of A succeed on A; with B's root CA they fail naming the chain; without --ca they
# work but say plainly (stderr, and "server_verified": false) that nothing was verified.
set -euo pipefail
BIN=${KMS_BIN_DIR:?}
KMSD=$BIN/node/kmsd
KMSCTL=$BIN/cli/kmsctl
WORK=$(mktemp -d /tmp/kms-kmsctl-tls-XXXXXX)
SIM=$WORK/sim
PORT_A=$((10000 + RANDOM % 20000))
PORT_B=$((PORT_A + 1))
PIDS=()
fail() {
    echo "FAIL: $*"
    for f in "$WORK"/*.log "$WORK"/*.txt; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }; done
    exit 1
}
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

start_node() { # name port
    "$KMSD" --data-dir "$WORK/$1" --sim-dir "$SIM" --tee sim --insecure-sim --auth dev \
        --listen "127.0.0.1:$2" --name "$1" --auto-bootstrap-domain 127.0.0.1 >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    local pid=$! end=$((SECONDS + 120)) # generous: ASan on a loaded machine
    while [ $SECONDS -lt $end ]; do
        curl -sk -o /dev/null --max-time 5 "https://127.0.0.1:$2/health" && return 0
        kill -0 "$pid" 2>/dev/null || fail "kmsd $1 exited"
        sleep 0.1
    done
    fail "kmsd $1 did not start serving"
}
root_ca() { # port out: the ca_cert GetTempCaCert reports
    curl -sk --max-time 10 -X POST -H 'Content-Type: application/json' -d '{}' \
        "https://127.0.0.1:$1/prpc/GetTempCaCert?json" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["ca_cert"], end="")' >"$2"
    openssl x509 -noout -in "$2" || fail "no root CA from port $1"
}

start_node a "$PORT_A"
start_node b "$PORT_B"
root_ca "$PORT_A" "$WORK/ca-a.pem"
root_ca "$PORT_B" "$WORK/ca-b.pem"
URL=https://127.0.0.1:$PORT_A

# right CA: success, verified, no warning
"$KMSCTL" meta --kms "$URL" --ca "$WORK/ca-a.pem" >"$WORK/out.txt" 2>"$WORK/err.txt" ||
    fail "meta --ca A"
grep -q '"server_verified": true' "$WORK/out.txt" || fail "meta --ca: not marked verified"
grep -q '"k256_pubkey"' "$WORK/out.txt" || fail "meta --ca: no GetMeta"
grep -q "NOT verified" "$WORK/err.txt" && fail "meta --ca warned"
"$KMSCTL" cluster status --kms "$URL" --ca "$WORK/ca-a.pem" >"$WORK/out.txt" 2>"$WORK/err.txt" ||
    fail "status --ca A"
grep -q "verified against --ca" "$WORK/out.txt" || fail "status --ca: not marked verified"
"$KMSCTL" cluster status --kms "$URL" --ca "$WORK/ca-a.pem" --json >"$WORK/out.txt" ||
    fail "status --json --ca A"
grep -q '"server_verified": true' "$WORK/out.txt" || fail "status --json --ca: not verified"
echo "ok: --ca of the right cluster"

# another cluster's CA: refused, naming the chain
for cmd in "meta --kms $URL" "cluster status --kms $URL" "cluster status --json --kms $URL"; do
    # shellcheck disable=SC2086
    if "$KMSCTL" $cmd --ca "$WORK/ca-b.pem" >"$WORK/out.txt" 2>"$WORK/err.txt"; then
        fail "$cmd with another cluster's CA succeeded"
    fi
    grep -q "does not chain to the pinned CA" "$WORK/err.txt" ||
        fail "$cmd: unclear error: $(cat "$WORK/err.txt")"
    [ -s "$WORK/out.txt" ] && fail "$cmd printed a result with the wrong CA"
done
echo "ok: another cluster's CA refused ($(head -c 200 "$WORK/err.txt"))"

# no CA: works, but says so
"$KMSCTL" meta --kms "$URL" >"$WORK/out.txt" 2>"$WORK/err.txt" || fail "meta without --ca"
grep -q "NOT verified" "$WORK/err.txt" || fail "meta without --ca: no warning"
grep -q '"server_verified": false' "$WORK/out.txt" || fail "meta without --ca: field"
"$KMSCTL" cluster status --kms "$URL" >"$WORK/out.txt" 2>"$WORK/err.txt" || fail "status"
grep -q "NOT verified" "$WORK/err.txt" || fail "status without --ca: no warning"
grep -q "NOT verified" "$WORK/out.txt" || fail "status without --ca: no line"
"$KMSCTL" cluster status --kms "$URL" --json >"$WORK/out.txt" 2>"$WORK/err.txt" || fail "status"
grep -q '"server_verified": false' "$WORK/out.txt" || fail "status --json without --ca: field"
echo "ok: without --ca, output says not verified"

# a file that is not a certificate
echo junk >"$WORK/junk.pem"
if "$KMSCTL" meta --kms "$URL" --ca "$WORK/junk.pem" >/dev/null 2>"$WORK/err.txt"; then
    fail "meta --ca junk succeeded"
fi
grep -q "not a PEM certificate" "$WORK/err.txt" || fail "--ca junk: $(cat "$WORK/err.txt")"
echo "PASS"
