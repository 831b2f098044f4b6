#!/usr/bin/env bash
# Stress (issue 10): a kmsd node keeps serving legitimate clients while others flood it, on
# loopback aliases only (127.0.0.0/8 is all loopback on Linux). Bounded: 3 scenarios, a fixed
# number of requests each, every process time-limited.
#  kms:       16 addresses x 64 idle TCP + 16 addresses x 64 slow-header TLS connections (the
#             flooder reconnects whatever the server closes); N sequential `kmsctl get-keys`
#             from 127.0.0.1 (N=100): 100% succeed, p99 <= 1 s; after the flood, served within 1 s.
#  kms-small: the same against a kmsd whose fd limit is 1024 (a 384-connection table, 48 per
#             address): the flood overfills it, so evictions keep the table open for clients.
#  onboard:   the same flood (plain HTTP) on the Onboard listener: `kmsctl bootstrap` succeeds
#             within 2 s (release), then the node serves get-keys under the continuing flood,
#             and the node's log stays bounded (rate-limited warnings).
# Under ASan (KMS_STRESS_SANITIZED=1, set by CMake) timing bounds are relaxed, success is not.
set -euo pipefail
BIN=${KMS_BIN_DIR:?}
KMSD=$BIN/node/kmsd
KMSCTL=$BIN/cli/kmsctl
FLOOD=$BIN/tests/stress/flood
N=${KMS_STRESS_REQUESTS:-100}
APP_ID=5fe2b2c0dc2a8b1d4d6a2b0c8c8e1f4a9b3d7e60
WORK=$(mktemp -d /tmp/kms-stress-XXXXXX)
SIM=$WORK/sim
P99_MAX_MS=1000
RECOVERY_MAX_MS=1000
BOOTSTRAP_MAX_MS=2000
if [ "${KMS_STRESS_SANITIZED:-0}" = 1 ]; then
    P99_MAX_MS=8000
    RECOVERY_MAX_MS=8000
    BOOTSTRAP_MAX_MS=15000
fi
KPID=
FPID=
log() { echo "[stress] $*"; }
fail() {
    echo "FAIL: $*"
    for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -25 "$f"; }; done
    exit 1
}
cleanup() {
    [ -n "$FPID" ] && kill "$FPID" 2>/dev/null
    [ -n "$KPID" ] && kill "$KPID" 2>/dev/null
    wait 2>/dev/null || true
}
trap cleanup EXIT
ms() { echo $(($(date +%s%N) / 1000000)); }

# 127.0.0.2..33 must be usable as source addresses (Linux loopback /8)
for a in 2 33; do
    python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.$a', 0))" 2>/dev/null ||
        { echo "SKIP: 127.0.0.$a is not a local address"; exit 77; }
done

start_kmsd() { # name nofile [extra args]
    local name=$1 nofile=$2
    shift 2
    PORT=$((10000 + RANDOM % 20000))
    (
        [ "$nofile" = default ] || ulimit -n "$nofile"
        exec "$KMSD" --data-dir "$WORK/$name" --sim-dir "$SIM" --tee sim --insecure-sim \
            --auth dev --listen "127.0.0.1:$PORT" --name "$name" "$@"
    ) >"$WORK/$name.log" 2>&1 &
    KPID=$!
    for _ in $(seq 150); do
        curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && return 0
        curl -sk -o /dev/null "https://127.0.0.1:$PORT/health" && return 0
        kill -0 "$KPID" 2>/dev/null || fail "kmsd $name exited"
        sleep 0.1
    done
    fail "kmsd $name did not start"
}
stop_kmsd() { kill "$KPID"; wait "$KPID" 2>/dev/null || true; KPID=; }

start_flood() { # name spec...
    local name=$1
    shift
    # niced: on loopback the flooder's own TLS work competes with kmsd and kmsctl for this
    # machine's cores; a real attacker spends its own CPU
    (ulimit -n 4500 && exec nice -n 15 "$FLOOD" --port "$PORT" --seconds 240 "$@") \
        >"$WORK/flood-$name.log" 2>&1 &
    FPID=$!
    for _ in $(seq 600); do
        grep -q "flood: ready" "$WORK/flood-$name.log" && break
        kill -0 "$FPID" 2>/dev/null || fail "flooder exited: $(cat "$WORK/flood-$name.log")"
        sleep 0.05
    done
    grep -q "flood: ready" "$WORK/flood-$name.log" || fail "flooder not ready"
    sleep 2 # let the connections pile up (and the first slow ones reach the header deadline)
}
stop_flood() {
    kill "$FPID" 2>/dev/null || true
    wait "$FPID" 2>/dev/null || true
    FPID=
}

get_keys() { # out
    "$KMSCTL" get-keys --kms "https://127.0.0.1:$PORT" --app-id "$APP_ID" --tee sim \
        --insecure-sim --sim-dir "$SIM" --timeout-ms 10000 --out "$1" >/dev/null 2>>"$WORK/get-keys.err"
}

# N sequential get-keys; checks 100% success and p99 <= P99_MAX_MS.
measure() { # label
    local label=$1 ok=0 t0 t1 lat=()
    for i in $(seq "$N"); do
        t0=$(ms)
        if get_keys "$WORK/keys.json"; then ok=$((ok + 1)); fi
        t1=$(ms)
        lat+=($((t1 - t0)))
    done
    local sorted p99 p50 idx
    sorted=$(printf '%s\n' "${lat[@]}" | sort -n)
    idx=$(((N * 99 + 99) / 100))
    p99=$(echo "$sorted" | sed -n "${idx}p")
    p50=$(echo "$sorted" | sed -n "$(((N + 1) / 2))p")
    log "$label: $ok/$N get-keys succeeded; latency p50 ${p50} ms, p99 ${p99} ms, max $(echo "$sorted" | tail -1) ms"
    [ "$ok" = "$N" ] || fail "$label: only $ok of $N get-keys succeeded: $(tail -3 "$WORK/get-keys.err")"
    [ "$p99" -le "$P99_MAX_MS" ] || fail "$label: p99 ${p99} ms > ${P99_MAX_MS} ms"
}

# After the flood ends: served again within RECOVERY_MAX_MS.
recovery() { # label
    local t0 t1
    t0=$(ms)
    get_keys "$WORK/keys.json" || fail "$1: get-keys right after the flood failed"
    t1=$(ms)
    log "$1: served $((t1 - t0)) ms after the flood ended"
    [ $((t1 - t0)) -le "$RECOVERY_MAX_MS" ] || fail "$1: recovery $((t1 - t0)) ms > ${RECOVERY_MAX_MS} ms"
}

FLOOD_TLS=(idle:2:16:64 slowtls:18:16:64)
FLOOD_PLAIN=(idle:2:16:64 slow:18:16:64)

# ---- kms: default fd limit
start_kmsd kms default --auto-bootstrap-domain 127.0.0.1
get_keys "$WORK/keys.json" || fail "get-keys before the flood"
N_SAVE=$N
N=10 measure "kms, no flood"
N=$N_SAVE
start_flood kms "${FLOOD_TLS[@]}"
measure "kms, flooded"
tail -1 "$WORK/flood-kms.log"
stop_flood
recovery "kms"
stop_kmsd

# ---- kms-small: fd limit 1024 -> the flood overfills the table
start_kmsd kms-small 1024 --auto-bootstrap-domain 127.0.0.1
start_flood kms-small "${FLOOD_TLS[@]}"
measure "kms-small (fd limit 1024), flooded"
tail -1 "$WORK/flood-kms-small.log"
stop_flood
recovery "kms-small"
grep -q "evicted the oldest connection" "$WORK/kms-small.log" || fail "kms-small: no eviction logged"
stop_kmsd

# ---- onboard: the plain-HTTP Onboard listener under the same flood
start_kmsd onboard default
start_flood onboard "${FLOOD_PLAIN[@]}"
t0=$(ms)
"$KMSCTL" bootstrap --onboard-url "http://127.0.0.1:$PORT" --domain 127.0.0.1 >/dev/null \
    2>"$WORK/bootstrap.err" || grep -q "Empty reply" "$WORK/bootstrap.err" ||
    fail "bootstrap under flood: $(cat "$WORK/bootstrap.err")"
t1=$(ms)
log "onboard: bootstrap under flood took $((t1 - t0)) ms"
[ $((t1 - t0)) -le "$BOOTSTRAP_MAX_MS" ] || fail "bootstrap took $((t1 - t0)) ms > ${BOOTSTRAP_MAX_MS} ms"
for _ in $(seq 100); do
    curl -sk -o /dev/null "https://127.0.0.1:$PORT/health" && break
    sleep 0.1
done
N=20 measure "onboard -> serving, flood continuing"
stop_flood
recovery "onboard"
lines=$(wc -l <"$WORK/onboard.log")
log "onboard: kmsd log has $lines lines after the flood"
[ "$lines" -lt 400 ] || fail "kmsd log not bounded: $lines lines"
stop_kmsd

log "all stress checks passed"
rm -rf "$WORK"
