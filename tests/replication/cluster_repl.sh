#!/usr/bin/env bash
# Integration: 3 kmsd processes as separate hosts — each in its own network namespace joined
# by veth pairs to a bridge (when `ip netns add` works, i.e. as root), otherwise on distinct
# loopback addresses 127.0.0.2-4. Proves: identical GetMeta identity and identical app keys on
# all three; `kmsctl cluster verify` agrees; get-keys fails over past a dead first URL; a
# killed node → the other two keep serving and `cluster status` shows it down within two
# check intervals; restarted → up again with the same identity; a separately bootstrapped
# node added as a peer → inconsistent (and `cluster verify` names it).
# KMS_TEST_NO_NETNS=1 forces the loopback variant.
set -euo pipefail
BIN=${KMS_BIN_DIR:?}
KMSD=$BIN/node/kmsd
KMSCTL=$BIN/cli/kmsctl
WORK=$(mktemp -d /tmp/kms-repl-XXXXXX)
SIM=$WORK/sim
# Peer check interval; each call of a check gets half of it, at most 5 s (replication/peers.c).
# Under ASan on a loaded machine one call can take seconds: 1 s and 2 s timed out there.
INTERVAL=10000
# kmsctl's per-request timeout: an upper bound only (idle, calls answer in milliseconds).
TMO=60000
APP=92e5c15e971558323c3ebbbe862247de0838950b
TAG=kr$$
PORT=8443
declare -A PID IP
NETNS=0

log() { printf '[cluster_repl] %s\n' "$*"; }
fail() {
    echo "FAIL: $*"
    for f in "$WORK"/*.log; do echo "--- $f"; tail -15 "$f"; done
    exit 1
}
cleanup() {
    for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PID[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ $NETNS -eq 1 ]; then
        for i in 1 2 3 4; do ip netns del "$TAG-n$i" 2>/dev/null || true; done
        ip link del "$TAG-br" 2>/dev/null || true
    fi
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

# ---- topology
# A /24 that no route covers yet: runs on one host at the same time (and bridges left behind by
# a run that was killed) must not share addresses, or one run's requests reach another's nodes.
free_net() {
    local a b
    for _ in $(seq 64); do
        a=$((64 + RANDOM % 160))
        b=$((RANDOM % 256))
        if [ -z "$(ip -4 route show to match "10.$a.$b.0/24" 2>/dev/null | grep -v '^default')" ]; then
            NET=10.$a.$b
            return 0
        fi
    done
    return 1
}
if [ "${KMS_TEST_NO_NETNS:-0}" != 1 ] && [ "$(id -u)" = 0 ] && free_net &&
    ip netns add "$TAG-probe" 2>/dev/null; then
    ip netns del "$TAG-probe"
    if ip link add "$TAG-br" type bridge 2>/dev/null; then
        NETNS=1
        ip addr add "$NET.1/24" dev "$TAG-br"
        ip link set "$TAG-br" up
        for i in 1 2 3 4; do
            ns=$TAG-n$i
            ip netns add "$ns"
            ip link add "$TAG-h$i" type veth peer name "$TAG-p$i"
            ip link set "$TAG-p$i" netns "$ns"
            ip link set "$TAG-h$i" master "$TAG-br" up
            ip netns exec "$ns" ip link set lo up
            ip netns exec "$ns" ip addr add "$NET.$((10 + i))/24" dev "$TAG-p$i"
            ip netns exec "$ns" ip link set "$TAG-p$i" up
            IP[$i]=$NET.$((10 + i))
        done
    fi
fi
if [ $NETNS -eq 0 ]; then
    PORT=$((10000 + RANDOM % 20000))
    for i in 1 2 3 4; do IP[$i]=127.0.0.$((1 + i)); done
    log "network namespaces unavailable: distinct loopback addresses"
else
    log "each node in its own network namespace (veth + bridge, $NET.0/24)"
fi

# Readiness waits poll until the condition holds, up to READY_S seconds: generous, because
# under ASan on a loaded machine a start or a peer round takes seconds; when idle they return
# at the first success.
READY_S=120
# until_ok SECONDS command...: 0 as soon as command succeeds, 1 if it never did in time.
until_ok() {
    local end=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.1
    done
}

url() { echo "https://${IP[$1]}:$PORT"; }
ourl() { echo "http://${IP[$1]}:$PORT"; }

start() { # i [extra kmsd args]
    local i=$1
    shift
    local cmd=("$KMSD" --data-dir "$WORK/n$i" --sim-dir "$SIM" --tee sim --insecure-sim
        --listen "${IP[$i]}:$PORT" --name "n$i" --peer-interval-ms $INTERVAL "$@")
    if [ $NETNS -eq 1 ]; then
        ip netns exec "$TAG-n$i" "${cmd[@]}" >>"$WORK/n$i.log" 2>&1 &
    else
        "${cmd[@]}" >>"$WORK/n$i.log" 2>&1 &
    fi
    PID[$i]=$!
    until_ok $READY_S listening "$i" || fail "node $i did not start"
}
# The node answers /health on its onboard (HTTP) or KMS (HTTPS) listener; fails once it exited.
listening() {
    kill -0 "${PID[$1]}" 2>/dev/null || fail "node $1 exited at start"
    curl -s -o /dev/null --max-time 5 "$(ourl "$1")/health" ||
        curl -sk -o /dev/null --max-time 5 "$(url "$1")/health"
}
health_code() { curl -sk -o /dev/null -w '%{http_code}' --max-time 30 "$(url "$1")/health" || true; }
health_is() { [ "$(health_code "$1")" = "$2" ]; }
serving() { case $(health_code "$1") in 200 | 207) return 0 ;; esac; return 1; }
wait_serving() { until_ok $READY_S serving "$1" || fail "node $1 is not serving"; }
# Top-level fields only (bootstrap_info nests another k256_pubkey).
k256() { "$KMSCTL" meta --kms "$(url "$1")" | grep '^  "k256_pubkey"' | tr -d ' ,'; }
ca() { "$KMSCTL" meta --kms "$(url "$1")" | grep '^  "ca_pubkey"' | tr -d ' ,'; }
# The status of peer URL in node i's view, from `kmsctl cluster status --json`.
peer_status() {
    "$KMSCTL" cluster status --kms "$(url "$1")" --json --timeout-ms $TMO |
        grep -A3 "\"url\": \"$2\"" | grep '"status"' | sed 's/.*"status": "\([a-z]*\)".*/\1/'
}
keys() { grep -E '"(disk_crypt_key|env_crypt_key|k256_key|k256_signature)"' "$1"; }
get_keys() { # out url...
    local out=$1
    shift
    local args=()
    for u in "$@"; do args+=(--kms "$u"); done
    "$KMSCTL" get-keys "${args[@]}" --app-id $APP --tee sim --insecure-sim --sim-dir "$SIM" \
        --timeout-ms $TMO --out "$out"
}

# ---- 1. the cluster: n1 bootstraps, n2 onboards from n1, n3 from n2
mkdir -p "$WORK"
start 1
# kmsctl calls Finish too: its reply must arrive (the node answers before it switches).
"$KMSCTL" bootstrap --onboard-url "$(ourl 1)" --domain "${IP[1]}" >/dev/null 2>"$WORK/err" ||
    fail "bootstrap: $(cat "$WORK/err")"
wait_serving 1
for i in 2 3; do
    start $i
    "$KMSCTL" onboard --onboard-url "$(ourl $i)" --source "$(url $((i - 1)))" \
        --domain "${IP[$i]}" >/dev/null 2>"$WORK/err" || fail "onboard n$i: $(cat "$WORK/err")"
    wait_serving $i
done
log "3 nodes serving"

# ---- 2. identical identity and keys
[ "$(k256 1)" = "$(k256 2)" ] && [ "$(k256 1)" = "$(k256 3)" ] || fail "k256_pubkey differs"
[ "$(ca 1)" = "$(ca 2)" ] && [ "$(ca 1)" = "$(ca 3)" ] || fail "ca_pubkey differs"
for i in 1 2 3; do get_keys "$WORK/keys.$i.json" "$(url $i)" 2>/dev/null || fail "get-keys n$i"; done
[ "$(keys "$WORK/keys.1.json")" = "$(keys "$WORK/keys.2.json")" ] &&
    [ "$(keys "$WORK/keys.1.json")" = "$(keys "$WORK/keys.3.json")" ] || fail "app keys differ"
[ -n "$(keys "$WORK/keys.1.json")" ] || fail "no keys read"
log "identical GetMeta identity and app keys on all three"
"$KMSCTL" cluster verify --kms "$(url 1)" --kms "$(url 2)" --kms "$(url 3)" --insecure-sim \
    --sim-dir "$SIM" --timeout-ms $TMO >"$WORK/verify.txt" || fail "cluster verify: $(cat "$WORK/verify.txt")"
grep -q "all 3 node(s) hold the same identity" "$WORK/verify.txt" || fail "verify output"

# Peers learned from onboarding (both directions): n2 knows n1 and n3.
peer_is() { [ "$(peer_status "$1" "$2")" = "$3" ]; }
until_ok $READY_S peer_is 2 "$(url 1)" up || fail "n2 does not see n1 up"
until_ok $READY_S peer_is 2 "$(url 3)" up || fail "n2 does not see n3 (onboarded from it) up"
until_ok $READY_S peer_is 1 "$(url 2)" up || fail "n1 does not see n2 up"
until_ok $READY_S health_is 2 200 || fail "n2 should be serving (200)"
metric_has() { curl -sk --max-time 30 "$(url "$1")/metrics" | grep -qF "$2"; }
until_ok $READY_S metric_has 2 "kmsd_peer_identity_consistent{peer=\"$(url 3)\"} 1" ||
    fail "metrics lack the consistent gauge"
log "peers up both ways; gauges exported"

# ---- 3. client failover: first URL dead
DEAD="https://${IP[1]}:$((PORT + 7))"
get_keys "$WORK/keys.fo.json" "$DEAD" "$(url 2)" 2>"$WORK/fo.txt" || fail "failover get-keys"
grep -q "keys served by $(url 2)" "$WORK/fo.txt" || fail "failover: $(cat "$WORK/fo.txt")"
[ "$(keys "$WORK/keys.fo.json")" = "$(keys "$WORK/keys.1.json")" ] || fail "failover keys differ"
log "get-keys failed over past a dead URL"

# ---- 4. kill n3: n1, n2 keep serving; n2 shows it down within two intervals
K3=$(k256 3)
kill -9 "${PID[3]}"
t0=$(date +%s%N)
while [ "$(peer_status 2 "$(url 3)")" != down ]; do
    [ $((($(date +%s%N) - t0) / 1000000)) -lt $((2 * INTERVAL + 500)) ] || fail "n3 not down in time"
    sleep 0.1
done
ms=$((($(date +%s%N) - t0) / 1000000))
rc=0
"$KMSCTL" cluster status --kms "$(url 2)" --timeout-ms $TMO >"$WORK/status.txt" || rc=$?
[ $rc -eq 3 ] || fail "cluster status of degraded n2: exit $rc, want 3"
grep -q "$(url 3) *down" "$WORK/status.txt" || fail "table does not show n3 down"
until_ok $READY_S health_is 2 207 || fail "n2 should be degraded (207)"
for i in 1 2; do get_keys "$WORK/k.$i" "$(url $i)" 2>/dev/null || fail "n$i stopped serving"; done
log "n3 killed: shown down after ${ms} ms (interval $INTERVAL ms); n1, n2 keep serving"

# ---- 5. restart n3: up again with the same identity
start 3
wait_serving 3
[ "$(k256 3)" = "$K3" ] || fail "n3 came back with another identity"
until_ok $READY_S peer_is 2 "$(url 3)" up || fail "n3 not up again"
until_ok $READY_S health_is 2 200 || fail "n2 not back to serving"
log "n3 restarted: up, same identity"

# ---- 6. a separately bootstrapped node added as a peer: inconsistent
start 4
"$KMSCTL" bootstrap --onboard-url "$(ourl 4)" --domain "${IP[4]}" >/dev/null 2>"$WORK/err" ||
    fail "bootstrap n4: $(cat "$WORK/err")"
wait_serving 4
kill "${PID[1]}"
wait "${PID[1]}" 2>/dev/null || true
start 1 --peer "$(url 4)"
wait_serving 1
until_ok $READY_S peer_is 1 "$(url 4)" inconsistent || fail "foreign node not flagged"
rc=0
"$KMSCTL" cluster status --kms "$(url 1)" --timeout-ms $TMO >"$WORK/status4.txt" || rc=$?
[ $rc -eq 3 ] || fail "cluster status with an inconsistent peer: exit $rc, want 3"
grep "$(url 4)" "$WORK/status4.txt" | grep -q "inconsistent" || fail "table lacks inconsistent"
metric_has 1 "kmsd_peer_identity_consistent{peer=\"$(url 4)\"} 0" || fail "metrics do not flag n4"
if "$KMSCTL" cluster verify --kms "$(url 1)" --kms "$(url 2)" --kms "$(url 4)" --insecure-sim \
    --sim-dir "$SIM" --timeout-ms $TMO >"$WORK/verify4.txt" 2>&1; then fail "verify accepted a foreign node"; fi
grep -q "DIVERGES  $(url 4)" "$WORK/verify4.txt" || fail "verify did not name n4: $(cat "$WORK/verify4.txt")"
log "separately bootstrapped n4: inconsistent in n1's checks, named by cluster verify"
echo "cluster_repl: all checks passed ($([ $NETNS -eq 1 ] && echo netns || echo loopback))"
