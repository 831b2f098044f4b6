#!/usr/bin/env bash
# deploy: the container image (deploy/container/). Builds it with podman on a Debian base made
# with mmdebstrap from the configured apt mirror, runs it (non-root, data on a named volume,
# the dstack port 12001 published), checks the healthcheck in onboard mode, bootstraps it from
# the host with kmsctl, checks the healthcheck serving, gets an app's keys, restarts the
# container and gets the same keys; then checks that the entrypoint keeps the RPC URL out of
# kmsd's argv and refuses a value that could break out of the config file's quotes.
# Skips (77) only when podman cannot run containers at all here.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
BIN=${KMS_BIN_DIR:?}
CTL=$BIN/cli/kmsctl
kms_podman_usable || exit 77
kms_podman_env

WORK=$(mktemp -d /tmp/kms-deploy-ctr-XXXXXX)
NAME=kmsd-deploy-test-$$
VOL=$NAME-data
TAG=$KMS_TEST_TAG
P=$((10000 + RANDOM % 20000)) # below the ephemeral range (32768-)
APP=92e5c15e971558323c3ebbbe862247de0838950b
fail() {
    echo "FAIL: $*"
    podman logs "$NAME" 2>&1 | tail -30 || true
    exit 1
}
cleanup() {
    podman rm -f -t 2 "$NAME" "$NAME-2" >/dev/null 2>&1 || true
    podman volume rm -f "$VOL" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# podman must be able to run something at all; otherwise this machine cannot run the test.
if ! out=$(podman run --rm --network none "$(kms_base_image)" true 2>&1); then
    echo "SKIP: podman cannot run a container here: $out"
    exit 77
fi

t0=$(date +%s)
timeout 1200 bash -c "source '$HERE/lib.sh'; kms_podman_env; kms_kmsd_image '$TAG'" >"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log"; fail "image build"; }
echo "image built in $(($(date +%s) - t0)) s"

# image metadata: non-root user, healthcheck kept (docker format), OCI labels
[ "$(podman image inspect "$TAG" --format '{{.Config.User}}')" = kmsd:kmsd ] || fail "image user is not kmsd"
podman image inspect "$TAG" --format '{{json .Config.Healthcheck}}' | grep -q kmsd-healthcheck ||
    fail "image has no HEALTHCHECK"
[ "$(podman image inspect "$TAG" --format '{{index .Config.Labels "org.opencontainers.image.version"}}')" = 0.0.0-test ] ||
    fail "no org.opencontainers.image.version label"
[ "$(podman image inspect "$TAG" --format '{{index .Config.Labels "org.opencontainers.image.licenses"}}')" = Apache-2.0 ] ||
    fail "no licenses label"
# the runtime stage carries no compiler, no sources
if podman run --rm --entrypoint sh "$TAG" -c 'command -v cc || command -v gcc || test -d /src'; then
    fail "runtime image carries build tools or sources"
fi

# the simulated TEE's material is shared with the host client (kmsctl get-keys)
mkdir -p "$WORK/sim"
chown 10001:10001 "$WORK/sim"
podman volume create "$VOL" >/dev/null
run() {
    podman run -d --name "$NAME" -p "127.0.0.1:$P:12001" -v "$VOL:/var/lib/kmsd" -v "$WORK/sim:/sim" \
        "$TAG" --tee sim --insecure-sim --auth dev --sim-dir /sim --name ctr-node >/dev/null 2>"$WORK/run.err" ||
        { cat "$WORK/run.err"; fail "podman run"; }
}
run
kms_wait 30 curl -sf -o /dev/null -w '' "http://127.0.0.1:$P/health" ||
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/health")" = 503 ] ||
    fail "onboard service did not come up on the published port 12001"
podman healthcheck run "$NAME" 2>/dev/null || fail "healthcheck unhealthy in onboard mode (HTTP 503)"
[ "$(podman exec "$NAME" id -u)" = 10001 ] || fail "kmsd does not run as the kmsd user"
[ "$(podman exec "$NAME" awk '/^Uid:/{print $2}' /proc/1/status)" = 10001 ] || fail "PID 1 is not uid 10001"
[ "$(podman exec "$NAME" stat -c %U:%a /var/lib/kmsd)" = kmsd:700 ] || fail "data volume not owned by kmsd (0700)"

timeout 60 "$CTL" bootstrap --onboard-url "http://127.0.0.1:$P" --domain 127.0.0.1 >"$WORK/boot.json" ||
    fail "kmsctl bootstrap"
kms_wait 30 curl -skf -o /dev/null "https://127.0.0.1:$P/health" || fail "not serving over HTTPS after bootstrap"
podman healthcheck run "$NAME" 2>/dev/null || fail "healthcheck unhealthy while serving (HTTPS 200)"
timeout 60 "$CTL" get-keys --kms "https://127.0.0.1:$P" --app-id "$APP" --tee sim --insecure-sim \
    --sim-dir "$WORK/sim" --out "$WORK/keys1.json" || fail "get-keys"
jq -e '.disk_crypt_key | length > 0' "$WORK/keys1.json" >/dev/null || fail "no disk_crypt_key"

podman restart -t 10 "$NAME" >/dev/null 2>&1 || fail "podman restart"
kms_wait 30 curl -skf -o /dev/null "https://127.0.0.1:$P/health" || fail "not serving after restart"
podman healthcheck run "$NAME" 2>/dev/null || fail "healthcheck unhealthy after restart"
timeout 60 "$CTL" get-keys --kms "https://127.0.0.1:$P" --app-id "$APP" --tee sim --insecure-sim \
    --sim-dir "$WORK/sim" --out "$WORK/keys2.json" || fail "get-keys after restart"
k() { jq -S '{disk_crypt_key, env_crypt_key, k256_key}' "$1"; }
[ "$(k "$WORK/keys1.json")" = "$(k "$WORK/keys2.json")" ] || fail "keys differ after restart"
podman rm -f -t 5 "$NAME" >/dev/null 2>&1

# a new container on the same volume serves the same keys (the volume carries the keystore)
run
kms_wait 30 curl -skf -o /dev/null "https://127.0.0.1:$P/health" || fail "new container on the volume not serving"
timeout 60 "$CTL" get-keys --kms "https://127.0.0.1:$P" --app-id "$APP" --tee sim --insecure-sim \
    --sim-dir "$WORK/sim" --out "$WORK/keys3.json" || fail "get-keys from a new container"
[ "$(k "$WORK/keys1.json")" = "$(k "$WORK/keys3.json")" ] || fail "keys differ in a new container"

# the healthcheck follows the configured port (no hard-coded 8000/12001)
SECRET=apikey-$RANDOM$RANDOM
podman run -d --name "$NAME-2" --network none -e KMSD_LISTEN=127.0.0.1:9443 \
    -e KMSD_ETH_RPC="https://rpc.example/v2/$SECRET" "$TAG" --tee sim --insecure-sim \
    --auth eth --kms-contract 0x1111111111111111111111111111111111111111 >/dev/null
kms_wait 30 podman healthcheck run "$NAME-2" || { podman logs "$NAME-2" | tail; fail "healthcheck on port 9443"; }
podman exec "$NAME-2" sh -c 'tr "\0" " " </proc/1/cmdline' >"$WORK/cmdline"
grep -q -- "--config /run/kmsd/kmsd.conf" "$WORK/cmdline" || fail "kmsd not started with its generated config: $(cat "$WORK/cmdline")"
if grep -q "$SECRET" "$WORK/cmdline"; then fail "the RPC URL is on kmsd's command line"; fi
[ "$(podman exec "$NAME-2" stat -c %a /run/kmsd/kmsd.conf)" = 600 ] || fail "generated config is not 0600"
podman exec "$NAME-2" grep -q "eth-rpc = \"https://rpc.example/v2/$SECRET\"" /run/kmsd/kmsd.conf ||
    fail "RPC URL not in the generated config"
# a value that could end the quotes is refused before kmsd starts
if podman run --rm --network none -e 'KMSD_ETH_RPC=https://x"
auth = dev' "$TAG" --tee sim --insecure-sim >"$WORK/bad.log" 2>&1; then
    fail "entrypoint accepted a value with a quote and a newline"
fi
grep -q "contains a quote" "$WORK/bad.log" || fail "unclear refusal: $(cat "$WORK/bad.log")"
echo "container: all checks passed ($(($(date +%s) - t0)) s)"
