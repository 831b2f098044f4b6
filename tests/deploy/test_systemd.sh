#!/usr/bin/env bash
# deploy: deploy/systemd/kmsd.service under a real systemd. A privileged podman container runs
# systemd as PID 1 (Debian 12, systemd 252, no configfs-tsm, no /dev/tdx_guest, no TPM) with
# kmsd from the image of deploy/container, the unit and the sysusers.d file as installed. The
# unit must start (the issue's 226/NAMESPACE failure came from a missing ReadWritePaths), run
# as the kmsd user without capabilities, serve the Onboard service, be bootstrapped from the
# host, serve keys, and serve the same keys after `systemctl restart`.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
source "$HERE/lib.sh"
BIN=${KMS_BIN_DIR:?}
CTL=$BIN/cli/kmsctl
kms_podman_usable || exit 77
kms_podman_env

WORK=$(mktemp -d /tmp/kms-deploy-sd-XXXXXX)
NAME=kmsd-deploy-systemd-$$
TAG=$KMS_TEST_TAG
SDTAG=${KMS_TEST_TAG/kmsd:/kmsd-systemd:}
P=$((20000 + RANDOM % 20000))
APP=92e5c15e971558323c3ebbbe862247de0838950b
fail() {
    echo "FAIL: $*"
    podman exec "$NAME" journalctl -u kmsd --no-pager 2>/dev/null | tail -30 || true
    exit 1
}
cleanup() {
    podman rm -f -t 5 "$NAME" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
if ! out=$(podman run --rm --network none "$(kms_base_image)" true 2>&1); then
    echo "SKIP: podman cannot run a container here: $out"
    exit 77
fi

t0=$(date +%s)
timeout 1200 bash -c "source '$HERE/lib.sh'; kms_podman_env; kms_kmsd_image '$TAG'" >"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log"; fail "kmsd image build"; }

# the systemd image: kmsd's image plus systemd, the unit and sysusers.d file as installed
mkdir -p "$WORK/ctx"
cp "$SRC/deploy/systemd/kmsd.service" "$SRC/deploy/systemd/kmsd.sysusers" "$WORK/ctx/"
cat >"$WORK/ctx/kmsd.conf" <<CONF
data-dir = "/var/lib/kmsd"
listen = 0.0.0.0:$P
name = "sd-node"
tee = sim
insecure-sim = true
sim-dir = "/var/lib/kmsd/sim"
auth = dev
CONF
cat >"$WORK/ctx/Containerfile" <<'CF'
ARG KMSD_IMAGE
FROM ${KMSD_IMAGE}
USER root
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd systemd-sysv \
    && rm -rf /var/lib/apt/lists/* \
    && userdel kmsd && (groupdel kmsd || true) \
    && rm -rf /var/lib/kmsd /run/kmsd \
    # only what the test needs: no getty, no udev-driven units
    && systemctl mask getty.target systemd-udevd.service systemd-logind.service \
        systemd-remount-fs.service 2>/dev/null || true
COPY kmsd.service /usr/local/lib/systemd/system/kmsd.service
COPY kmsd.sysusers /usr/lib/sysusers.d/kmsd.conf
COPY kmsd.conf /etc/kmsd/kmsd.conf
RUN systemctl enable kmsd.service
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/sbin/init"]
CMD []
CF
timeout 600 podman build --network host --format docker --build-arg KMSD_IMAGE="$TAG" -t "$SDTAG" \
    "$WORK/ctx" >"$WORK/sdbuild.log" 2>&1 || { tail -30 "$WORK/sdbuild.log"; fail "systemd image build"; }
echo "images ready in $(($(date +%s) - t0)) s"

podman run -d --name "$NAME" --no-healthcheck --privileged --systemd=always -p "127.0.0.1:$P:$P" "$SDTAG" >/dev/null ||
    fail "podman run (systemd as PID 1)"
[ "$(podman exec "$NAME" cat /proc/1/comm)" = systemd ] || fail "PID 1 is not systemd"
active() { [ "$(podman exec "$NAME" systemctl is-active kmsd.service 2>/dev/null)" = active ]; }
kms_wait 60 active || { podman exec "$NAME" systemctl status kmsd.service --no-pager || true; fail "kmsd.service did not start"; }
kms_wait 30 curl -s -o /dev/null "http://127.0.0.1:$P/health" || fail "Onboard service not answering"

pid=$(podman exec "$NAME" systemctl show -p MainPID --value kmsd.service)
[ "$(podman exec "$NAME" awk '/^Uid:/{print $2}' "/proc/$pid/status")" = "$(podman exec "$NAME" id -u kmsd)" ] ||
    fail "kmsd does not run as the kmsd user"
[ "$(podman exec "$NAME" awk '/^CapEff:/{print $2}' "/proc/$pid/status")" = 0000000000000000 ] ||
    fail "kmsd has capabilities"
[ "$(podman exec "$NAME" awk '/^NoNewPrivs:/{print $2}' "/proc/$pid/status")" = 1 ] || fail "NoNewPrivs not set"
[ "$(podman exec "$NAME" awk '/^Seccomp:/{print $2}' "/proc/$pid/status")" = 2 ] || fail "no seccomp filter"
[ "$(podman exec "$NAME" stat -c %U:%a /var/lib/kmsd/)" = kmsd:700 ] || fail "state directory not kmsd 0700"
if podman exec "$NAME" journalctl -u kmsd --no-pager | grep -q "226/NAMESPACE"; then fail "namespace setup failed"; fi

timeout 60 "$CTL" bootstrap --onboard-url "http://127.0.0.1:$P" --domain 127.0.0.1 >"$WORK/boot.json" ||
    fail "kmsctl bootstrap"
kms_wait 30 curl -skf -o /dev/null "https://127.0.0.1:$P/health" || fail "not serving after bootstrap"
podman cp "$NAME:/var/lib/kmsd/sim" "$WORK/sim" || fail "copying the simulated TEE material out"
timeout 60 "$CTL" get-keys --kms "https://127.0.0.1:$P" --app-id "$APP" --tee sim --insecure-sim \
    --sim-dir "$WORK/sim" --out "$WORK/keys1.json" || fail "get-keys"

podman exec "$NAME" systemctl restart kmsd.service || fail "systemctl restart"
kms_wait 30 active || fail "kmsd.service not active after restart"
kms_wait 30 curl -skf -o /dev/null "https://127.0.0.1:$P/health" || fail "not serving after restart"
timeout 60 "$CTL" get-keys --kms "https://127.0.0.1:$P" --app-id "$APP" --tee sim --insecure-sim \
    --sim-dir "$WORK/sim" --out "$WORK/keys2.json" || fail "get-keys after restart"
k() { jq -S '{disk_crypt_key, env_crypt_key, k256_key}' "$1"; }
[ "$(k "$WORK/keys1.json")" = "$(k "$WORK/keys2.json")" ] || fail "keys differ after restart"
echo "systemd: all checks passed ($(($(date +%s) - t0)) s)"
