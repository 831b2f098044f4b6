#!/usr/bin/env bash
# kmsd --vm-config: a node without a guest agent (plain TDX; here the simulated TDX) states its
# vm_config, which its own attestation then carries, as a dstack guest's sys_config does:
#  - GetAttestationInfo's os_image_hash is the one --vm-config names;
#  - onboarding carries it to the source, whose OS-image check decides on it: the simulated
#    image's hash onboards, another image's hash is refused with the check's reason;
#  - malformed values and TEEs whose evidence has no vm_config are refused at start.
set -euo pipefail
BIN=${KMS_BIN_DIR:?}
KMSD=$BIN/node/kmsd
KMSCTL=$BIN/cli/kmsctl
WORK=$(mktemp -d /tmp/kms-vmconfig-XXXXXX)
SIM=$WORK/sim
PA=$((10000 + RANDOM % 20000))
PB=$((PA + 1))
PC=$((PA + 2))
PIDS=()
unset KMSCTL_CA
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

start() { # name port [args]
    local name=$1 port=$2
    shift 2
    "$KMSD" --data-dir "$WORK/$name" --sim-dir "$SIM" --tee sim --insecure-sim --auth dev \
        --listen "127.0.0.1:$port" --name "$name" "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
}
wait_up() { # port scheme pid
    local end=$((SECONDS + 120)) # generous: a loaded machine
    until curl -sk -o /dev/null --max-time 5 "$2://127.0.0.1:$1/health"; do
        kill -0 "$3" 2>/dev/null || fail "kmsd on port $1 exited"
        [ $SECONDS -lt $end ] || fail "kmsd on port $1 did not start"
        sleep 0.1
    done
}
att_field() { # port field
    curl -s --max-time 30 -X POST "http://127.0.0.1:$1/prpc/Onboard.GetAttestationInfo?json" |
        python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}

SIM_IMAGE=$(printf 'kmsd-sim-os-image' | sha256sum | cut -c1-64)
OTHER=$(printf 'another OS image' | sha256sum | cut -c1-64)

# A: the source, serving; its OS-image check admits only the simulated image
start a "$PA" --auto-bootstrap-domain 127.0.0.1
wait_up "$PA" https "${PIDS[0]}"

# B: --vm-config with another image: carried in its attestation, refused by A's check
start b "$PB" --vm-config "{\"os_image_hash\":\"$OTHER\",\"cpu_count\":2}"
wait_up "$PB" http "${PIDS[1]}"
[ "$(att_field "$PB" os_image_hash)" = "0x$OTHER" ] ||
    fail "GetAttestationInfo os_image_hash is $(att_field "$PB" os_image_hash), want 0x$OTHER"
rc=0
"$KMSCTL" onboard --onboard-url "http://127.0.0.1:$PB" --source "https://127.0.0.1:$PA" \
    --domain 127.0.0.1 >"$WORK/onb-b.txt" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || fail "onboarding another image: exit $rc"
grep -q "OS image" "$WORK/onb-b.txt" || fail "onboarding another image: $(cat "$WORK/onb-b.txt")"

# C: --vm-config naming the simulated image: onboards
start c "$PC" --vm-config "{\"os_image_hash\":\"$SIM_IMAGE\"}"
wait_up "$PC" http "${PIDS[2]}"
[ "$(att_field "$PC" os_image_hash)" = "0x$SIM_IMAGE" ] || fail "C's os_image_hash"
"$KMSCTL" onboard --onboard-url "http://127.0.0.1:$PC" --source "https://127.0.0.1:$PA" \
    --domain 127.0.0.1 >"$WORK/onb-c.txt" 2>&1 || fail "onboarding the simulated image"
wait_up "$PC" https "${PIDS[2]}"

# refused at start
refused() { # message args...
    local want=$1
    shift
    if "$KMSD" --data-dir "$WORK/bad" --sim-dir "$SIM" --insecure-sim --auth dev \
        --listen "127.0.0.1:$((PA + 3))" "$@" >"$WORK/bad.txt" 2>&1; then
        fail "kmsd started with: $*"
    fi
    grep -qF -- "$want" "$WORK/bad.txt" || fail "for $* want '$want': $(cat "$WORK/bad.txt")"
}
refused "--vm-config is not a JSON object" --tee sim --vm-config 'not json'
refused "--vm-config is not a JSON object" --tee sim --vm-config '["os_image_hash"]'
refused 'needs "os_image_hash": 64 hex digits' --tee sim --vm-config '{}'
refused 'needs "os_image_hash": 64 hex digits' --tee sim --vm-config "{\"os_image_hash\":\"${OTHER:2}\"}"
refused 'needs "os_image_hash": 64 hex digits' --tee sim --vm-config '{"os_image_hash":7}'
refused 'needs "os_image_hash": 64 hex digits without 0x' --tee sim --vm-config "{\"os_image_hash\":\"0x$OTHER\"}"
refused "--vm-config is longer than 4096 bytes" --tee sim --vm-config "{\"os_image_hash\":\"$OTHER\",\"x\":\"$(head -c 5000 /dev/zero | tr '\0' a)\"}"
refused "this TEE's evidence carries no vm_config" --tee sim-nitro --vm-config "{\"os_image_hash\":\"$OTHER\"}"
echo "PASS: --vm-config"
