#!/usr/bin/env bash
# Integration (issue 9 item 3): the static kmsctl of -DKMSCTL_STATIC=ON (KMS_STATIC_KMSCTL).
#  - `file` says statically linked, ldd finds no dynamic section, no interpreter;
#  - it has the enclave commands only (get-keys, meta, ca, nitro), refuses the others as unknown;
#  - in an empty chroot (the binary, a copy of the simulation directory, nothing else: no libc,
#    no /etc, no /dev) get-keys from a real kmsd writes the same app_keys.json as the dynamic
#    kmsctl, and meta reads the node;
#  - (nitro measure of the static binary: test_eif runs it too);
#  - --tee gcp-tdx says it needs tpm2-tss, which this build leaves out.
# The Nitro flow in a chroot (fake NSM at the syscall boundary, CONNECT proxy, vsock) is in
# test_e2e_nitro, which runs this same binary.
set -euo pipefail
BIN=${KMS_BIN_DIR:?}
STATIC=${KMS_STATIC_KMSCTL:?}
KMSD=$BIN/node/kmsd
KMSCTL=$BIN/cli/kmsctl
WORK=$(mktemp -d /tmp/kms-static-XXXXXX)
SIM=$WORK/sim
ROOT=$WORK/root
PORT=$((10000 + RANDOM % 20000))
PIDS=()
unset KMSCTL_CA https_proxy HTTPS_PROXY http_proxy no_proxy
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

# --- the binary
desc=$(file -b "$STATIC")
echo "file: $desc"
[[ "$desc" == *"statically linked"* ]] || fail "file does not say statically linked: $desc"
if ldd "$STATIC" >"$WORK/ldd.txt" 2>&1; then
    fail "ldd lists libraries: $(cat "$WORK/ldd.txt")"
fi
grep -q "not a dynamic executable" "$WORK/ldd.txt" || fail "ldd: $(cat "$WORK/ldd.txt")"
if readelf -l "$STATIC" | grep -q "INTERP"; then fail "has a program interpreter"; fi
echo "size: $(stat -c %s "$STATIC") bytes"

# --- the enclave command set
"$STATIC" --help >"$WORK/help.txt"
for c in get-keys meta "ca pin" "nitro measure"; do
    grep -q "^  $c " "$WORK/help.txt" || fail "--help does not list $c"
done
for c in chain bootstrap keystore backup admin; do
    if grep -q "^  $c " "$WORK/help.txt"; then fail "--help lists $c"; fi
    rc=0
    "$STATIC" "$c" --help >/dev/null 2>"$WORK/err.txt" || rc=$?
    [ "$rc" -eq 2 ] || fail "$c: exit $rc (want 2)"
    grep -q "unknown command '$c'" "$WORK/err.txt" || fail "$c: $(cat "$WORK/err.txt")"
done
"$STATIC" --version | grep -q "^kmsctl " || fail "--version"
"$STATIC" get-keys --help | grep -q "has no --tee gcp-tdx" || fail "get-keys --help does not say gcp-tdx is out"

# --- a node
"$KMSD" --data-dir "$WORK/node" --sim-dir "$SIM" --tee sim --insecure-sim --auth dev \
    --listen "127.0.0.1:$PORT" --name static --auto-bootstrap-domain 127.0.0.1 >"$WORK/node.log" 2>&1 &
PIDS+=($!)
end=$((SECONDS + 120)) # generous: a loaded machine
until curl -sk -o /dev/null --max-time 5 "https://127.0.0.1:$PORT/health"; do
    kill -0 "${PIDS[0]}" 2>/dev/null || fail "kmsd exited"
    [ $SECONDS -lt $end ] || fail "kmsd did not start"
    sleep 0.1
done

APP=0x$(printf '5a%.0s' $(seq 20))
getkeys_args=(get-keys --kms "https://127.0.0.1:$PORT" --app-id "$APP" --tee sim --insecure-sim
              --timeout-ms 60000)
"$KMSCTL" "${getkeys_args[@]}" --sim-dir "$SIM" --out "$WORK/dynamic.json" 2>"$WORK/dyn.txt" ||
    fail "dynamic get-keys"

# --- the empty chroot: the binary and the simulation roots, nothing else
mkdir -p "$ROOT"
cp "$STATIC" "$ROOT/kmsctl"
cp -a "$SIM" "$ROOT/sim"
echo "chroot: $(cd "$ROOT" && find . -mindepth 1 -maxdepth 1 | sort | tr '\n' ' ')"
chroot "$ROOT" /kmsctl "${getkeys_args[@]}" --sim-dir /sim --out /app_keys.json \
    >"$WORK/out.txt" 2>"$WORK/err.txt" || fail "get-keys in the chroot: $(cat "$WORK/err.txt")"
cmp "$WORK/dynamic.json" "$ROOT/app_keys.json" ||
    fail "the static kmsctl's app_keys.json differs from the dynamic kmsctl's"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["env_crypt_key"] and d["k256_key"]' \
    "$ROOT/app_keys.json" || fail "app_keys.json lacks keys"
chroot "$ROOT" /kmsctl meta --kms "https://127.0.0.1:$PORT" --json >"$WORK/meta.txt" 2>"$WORK/err.txt" ||
    fail "meta in the chroot: $(cat "$WORK/err.txt")"
grep -q '"k256_pubkey"' "$WORK/meta.txt" || fail "meta: $(cat "$WORK/meta.txt")"


# --- what this build leaves out says so
rc=0
chroot "$ROOT" /kmsctl get-keys --kms "https://127.0.0.1:$PORT" --app-id "$APP" --tee gcp-tdx \
    --timeout-ms 60000 --out /gcp.json >/dev/null 2>"$WORK/err.txt" || rc=$?
[ "$rc" -eq 1 ] || fail "gcp-tdx: exit $rc (want 1)"
grep -q "built without tpm2-tss" "$WORK/err.txt" || fail "gcp-tdx: $(cat "$WORK/err.txt")"
[ ! -e "$ROOT/gcp.json" ] || fail "gcp-tdx wrote a keys file"
echo "PASS: static kmsctl"
