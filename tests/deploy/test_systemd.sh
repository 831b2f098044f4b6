#!/usr/bin/env bash
# deploy: the Debian package and its unit under a real systemd. The .deb is built with cpack from
# the image build stage of deploy/container (so from the same sources, whatever this build
# directory's flags), installed with apt in a Debian 12 image with systemd (systemd 252; no
# configfs-tsm, no /dev/tdx_guest, no TPM), which then runs as PID 1 in a privileged podman
# container. Checks: the maintainer scripts created the kmsd user and enabled the unit without
# starting it (no config yet: the unit's condition keeps it inactive); with a config the unit
# starts (the issue's 226/NAMESPACE failure came from a mandatory ReadWritePaths), runs as kmsd
# without capabilities under seccomp, serves the Onboard service, is bootstrapped from the
# host, serves keys, and serves the same keys after `systemctl restart`.
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
SDTAG=${KMS_TEST_TAG/kmsd:/kmsd-systemd:}
BUILDTAG=${KMS_TEST_TAG/kmsd:/kmsd-build:}
P=$((10000 + RANDOM % 20000)) # below the ephemeral range (32768-)
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

timeout 1200 bash -c "source '$HERE/lib.sh'; kms_podman_env; kms_kmsd_image '$BUILDTAG' --target build" \
    >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "kmsd build-stage image"; }

# the systemd image: Debian + systemd + the kmsd .deb made by cpack in the build stage. The
# context brings what the build stage's context leaves out (docs, unit, maintainer scripts).
mkdir -p "$WORK/ctx/src/deploy" "$WORK/ctx/src/docs"
cp -r "$SRC/deploy/systemd" "$SRC/deploy/debian" "$WORK/ctx/src/deploy/"
cp "$SRC"/docs/*.md "$WORK/ctx/src/docs/"
cp "$SRC/README.md" "$SRC/CHANGELOG.md" "$WORK/ctx/src/"
cat >"$WORK/kmsd.conf" <<CONF
data-dir = "/var/lib/kmsd"
listen = 0.0.0.0:$P
name = "sd-node"
tee = sim
insecure-sim = true
sim-dir = "/var/lib/kmsd/sim"
auth = dev
CONF
cat >"$WORK/ctx/Containerfile" <<'CF'
ARG BUILD_IMAGE
ARG BASE_IMAGE
FROM ${BUILD_IMAGE} AS pkg
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev file \
    && rm -rf /var/lib/apt/lists/*
COPY src/ /src/
RUN cmake -S /src -B /build -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON -DKMS_BUILD_TESTS=OFF >/dev/null \
    && cd /build && cpack -G DEB -B /pkg >/dev/null && ls /pkg/kmsd_*.deb

FROM ${BASE_IMAGE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd systemd-sysv \
    && rm -rf /var/lib/apt/lists/* \
    && systemctl mask getty.target systemd-udevd.service systemd-logind.service \
        systemd-remount-fs.service console-getty.service
COPY --from=pkg /pkg/ /tmp/pkg/
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends /tmp/pkg/kmsd_*.deb \
    && rm -rf /var/lib/apt/lists/* /tmp/pkg
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/sbin/init"]
CF
timeout 900 podman build --network host --format docker --build-arg BUILD_IMAGE="$BUILDTAG" \
    --build-arg BASE_IMAGE="$(kms_base_image)" -t "$SDTAG" "$WORK/ctx" >"$WORK/sdbuild.log" 2>&1 ||
    { tail -30 "$WORK/sdbuild.log"; fail "systemd image build (cpack, apt install of the .deb)"; }
echo "images ready in $(($(date +%s) - t0)) s"

podman run -d --name "$NAME" --no-healthcheck --privileged --systemd=always -p "127.0.0.1:$P:$P" "$SDTAG" >/dev/null ||
    fail "podman run (systemd as PID 1)"
[ "$(podman exec "$NAME" cat /proc/1/comm)" = systemd ] || fail "PID 1 is not systemd"
booted() { podman exec "$NAME" systemctl is-system-running 2>/dev/null | grep -Eq '^(running|degraded)$'; }
kms_wait 60 booted || fail "systemd did not finish booting"
# the package: user created, unit enabled, not started (no config yet: condition unmet)
podman exec "$NAME" getent passwd kmsd >/dev/null || fail "the package did not create the kmsd user"
[ "$(podman exec "$NAME" systemctl is-enabled kmsd.service)" = enabled ] || fail "the package did not enable kmsd.service"
[ "$(podman exec "$NAME" systemctl is-active kmsd.service)" = inactive ] || fail "kmsd.service runs without a config"
[ "$(podman exec "$NAME" systemctl show -p ConditionResult --value kmsd.service)" = no ] ||
    fail "kmsd.service was not held back by its config condition"
podman exec "$NAME" test -d /etc/kmsd || fail "no /etc/kmsd"
podman exec "$NAME" grep -qx 'ExecStart=/usr/bin/kmsd --config /etc/kmsd/kmsd.conf' /usr/lib/systemd/system/kmsd.service ||
    fail "packaged unit does not start /usr/bin/kmsd"
podman cp "$WORK/kmsd.conf" "$NAME:/etc/kmsd/kmsd.conf" || fail "copying the config in"
podman exec "$NAME" systemctl start kmsd.service || fail "systemctl start kmsd"
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
