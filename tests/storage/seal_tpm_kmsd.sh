#!/usr/bin/env bash
# kmsd --seal tpm against a software TPM: the node bootstraps and serves, restarts serving the
# same k256 public key (KEK unsealed by the TPM), keeps no file KEK (kek.tpm is 0600); after a
# sealed PCR is extended it stays up sealed (/health 423 naming the changed PCR, nothing else served);
# once the PCR is restored it serves the same key again. Exit 77 (skip) without swtpm/tpm2-tools.
set -euo pipefail
BIN=${KMS_BIN_DIR:?}
command -v swtpm >/dev/null || { echo "skip: swtpm not installed"; exit 77; }
command -v tpm2_pcrextend >/dev/null || { echo "skip: tpm2-tools not installed"; exit 77; }
command -v curl >/dev/null || { echo "skip: curl not installed"; exit 77; }

WORK=$(mktemp -d /tmp/kms-sealtpm-kmsd-XXXXXX)
BASE=$((10000 + RANDOM % 20000))
TPM_PORT=$BASE
KMS_PORT=$((BASE + 2))
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$TPM_PORT"
KMSD_PID=
SWTPM_PID=
cleanup() {
    [ -n "$KMSD_PID" ] && kill "$KMSD_PID" 2>/dev/null && wait "$KMSD_PID" 2>/dev/null
    [ -n "$SWTPM_PID" ] && kill "$SWTPM_PID" 2>/dev/null && wait "$SWTPM_PID" 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log; do echo "--- $f"; tail -20 "$f"; done; exit 1; }

mkdir -p "$WORK/tpm"
swtpm socket --tpm2 --server "type=tcp,port=$TPM_PORT,bindaddr=127.0.0.1" \
    --ctrl "type=tcp,port=$((TPM_PORT + 1)),bindaddr=127.0.0.1" \
    --flags not-need-init,startup-clear --tpmstate "dir=$WORK/tpm" >"$WORK/swtpm.log" 2>&1 &
SWTPM_PID=$!
end=$((SECONDS + 60))
until tpm2_getrandom 4 >/dev/null 2>&1 || [ $SECONDS -ge $end ]; do sleep 0.1; done
tpm2_getrandom 4 >/dev/null 2>&1 || fail "swtpm did not come up"

KMSD=("$BIN/node/kmsd" --data-dir "$WORK/node" --tee sim --insecure-sim --auth dev
      --listen "127.0.0.1:$KMS_PORT" --auto-bootstrap-domain localhost --name tpmnode
      --seal tpm --tpm-tcti "$TPM2TOOLS_TCTI" --seal-pcrs sha256:16)

# Starts kmsd, waits for /health 200, sets KEY to the k256 public key, leaves it running.
start_serving() {
    KEY=
    "${KMSD[@]}" >>"$WORK/kmsd.log" 2>&1 &
    KMSD_PID=$!
    local end=$((SECONDS + 120)) # generous: ASan on a loaded machine
    while [ $SECONDS -lt $end ]; do
        body=$(curl -sk --max-time 5 -w '\n%{http_code}' "https://127.0.0.1:$KMS_PORT/health" || true)
        if [ "${body##*$'\n'}" = 200 ]; then
            KEY=$(echo "$body" | sed -n 's/.*"k256_pubkey": *"\([^"]*\)".*/\1/p')
            return 0
        fi
        kill -0 "$KMSD_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
stop_kmsd() { kill "$KMSD_PID"; wait "$KMSD_PID" || true; KMSD_PID=; }

start_serving || fail "kmsd --seal tpm did not bootstrap and serve"
k1=$KEY
[ -n "$k1" ] || fail "no k256_pubkey in /health"
stop_kmsd
[ -f "$WORK/node/kek.tpm" ] || fail "no sealed KEK blob"
[ "$(stat -c %a "$WORK/node/kek.tpm")" = 600 ] || fail "kek.tpm is not 0600"
[ ! -e "$WORK/node/kek.bin" ] || fail "a file KEK exists next to the TPM-sealed one"

start_serving || fail "kmsd did not restart with the TPM-sealed KEK"
k2=$KEY
[ "$k1" = "$k2" ] || fail "k256 public key changed across restart: $k1 vs $k2"
stop_kmsd

# A sealed PCR changes (as a different boot chain would): the node stays sealed.
tpm2_pcrextend "16:sha256=$(printf 'ab%.0s' $(seq 32))" || fail "PCR extend"
"${KMSD[@]}" >"$WORK/sealed.log" 2>&1 &
KMSD_PID=$!
st=
end=$((SECONDS + 120))
while [ $SECONDS -lt $end ]; do
    st=$(curl -s --max-time 5 -o "$WORK/health.json" -w '%{http_code}' "http://127.0.0.1:$KMS_PORT/health" || true)
    [ "$st" = 423 ] && break
    kill -0 "$KMSD_PID" 2>/dev/null || fail "kmsd exited instead of staying up sealed"
    sleep 0.1
done
[ "$st" = 423 ] || fail "/health is $st, want 423 (sealed)"
grep -q '"state": "sealed"' "$WORK/health.json" || fail "/health does not say sealed"
grep -q "changed: sha256:16" "$WORK/health.json" || fail "/health does not name the changed PCR"
st=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$KMS_PORT/prpc/Bootstrap?json" -d '{"domain":"x"}')
[ "$st" = 423 ] || fail "a sealed node answered Bootstrap with $st, want 423"
grep -q "keystore is sealed (state sealed)" "$WORK/sealed.log" || fail "sealed state not logged"
grep -q "changed: sha256:16" "$WORK/sealed.log" || fail "changed PCR not named in the log"
stop_kmsd
[ -f "$WORK/node/kek.tpm" ] || fail "the blob was removed"

# Restored measurements unseal again.
tpm2_pcrreset 16 || fail "PCR reset"
start_serving || fail "kmsd did not serve after the PCR was restored"
k3=$KEY
[ "$k1" = "$k3" ] || fail "k256 public key changed after PCR restore"
stop_kmsd
echo "seal_tpm_kmsd: all checks passed (k256 $k1)"
