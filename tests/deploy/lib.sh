#!/usr/bin/env bash
# Shared helpers of the deploy tests: a Debian base image made with mmdebstrap from the host's
# configured apt mirror (no image registry is reachable on CI machines), podman settings that
# work on small sandboxed hosts (runc, nofile/nproc limits below the host's hard limits), and
# readiness waits. Source it; it defines functions and variables only.

KMS_DEPLOY_CACHE=${KMS_DEPLOY_CACHE:-/var/tmp/kmsd-deploy-cache}
# Packages of the base (minbase + these); the cache key is derived from this list and the mirror.
KMS_BASE_PKGS=${KMS_BASE_PKGS:-ca-certificates}
KMS_SUITE=${KMS_SUITE:-bookworm}

# podman on hosts whose hard nofile limit is below podman's default (1048576) and whose
# default OCI runtime (crun) cannot set up cgroups: runc and lower default ulimits.
kms_podman_env() {
    mkdir -p "$KMS_DEPLOY_CACHE"
    local hard
    hard=$(ulimit -Hn)
    [ "$hard" = unlimited ] && hard=65536
    local n=$((hard < 65536 ? hard : 65536))
    # nproc: runc fails to set values near the host's limit in some sandboxes ("setting
    # rlimit type 6: operation not permitted"); 4096 is plenty for kmsd and apt.
    cat >"$KMS_DEPLOY_CACHE/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$n:$n", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    export CONTAINERS_CONF="$KMS_DEPLOY_CACHE/containers.conf"
}

# Prints the first Debian mirror URL configured for apt (deb822 or one-line format).
kms_apt_mirror() {
    local u
    u=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        awk '{print $2}' | grep -E '/debian/?$' | head -1)
    [ -n "$u" ] || u=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '{for (i = 2; i <= NF; i++) if ($i !~ /^\[/) {print $i; break}}' | grep -E '/debian/?$' | head -1)
    echo "${u:-http://deb.debian.org/debian}"
}

# Ensures the podman image localhost/kmsd-base:<key> exists; prints its name. The mmdebstrap
# tarball is cached in KMS_DEPLOY_CACHE keyed by suite, mirror and package list.
kms_base_image() {
    local mirror key tar img
    mirror=$(kms_apt_mirror)
    key=$(printf '%s|%s|%s' "$KMS_SUITE" "$mirror" "$KMS_BASE_PKGS" | sha256sum | cut -c1-12)
    img=localhost/kmsd-base:$key
    if podman image exists "$img"; then echo "$img"; return 0; fi
    tar=$KMS_DEPLOY_CACHE/debian-$KMS_SUITE-$key.tar
    if [ ! -s "$tar" ]; then
        echo "mmdebstrap: $KMS_SUITE from $mirror (+ $KMS_BASE_PKGS) -> $tar" >&2
        mmdebstrap --variant=minbase --format=tar --include="$KMS_BASE_PKGS" \
            --aptopt='Acquire::Retries "3"' \
            --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
            "$KMS_SUITE" "$tar.tmp" "$mirror" >&2 || { rm -f "$tar.tmp"; return 1; }
        mv "$tar.tmp" "$tar"
    fi
    podman import --change 'CMD ["/bin/bash"]' "$tar" "$img" >/dev/null || return 1
    echo "$img"
}

# kms_wait TIMEOUT_S CMD...: runs CMD until it succeeds, at most TIMEOUT_S seconds.
kms_wait() {
    local t=$1
    shift
    local end=$(($(date +%s) + t))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.5
    done
}

# kms_podman_usable: podman exists and can run a container here (else the caller skips).
kms_podman_usable() {
    command -v podman >/dev/null 2>&1 || { echo "SKIP: podman is not installed (deploy/install-deps.sh)"; return 1; }
    command -v mmdebstrap >/dev/null 2>&1 || { echo "SKIP: mmdebstrap is not installed (deploy/install-deps.sh)"; return 1; }
    [ "$(id -u)" = 0 ] || { echo "SKIP: the deploy tests run podman as root (rootless podman needs subuid setup)"; return 1; }
    return 0
}

# kms_kmsd_image TAG [podman build args...]: builds deploy/container/Containerfile on the
# mmdebstrap base (the layer cache makes a rebuild with unchanged sources take seconds).
kms_kmsd_image() {
    local tag=$1 base src
    shift
    src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    base=$(kms_base_image) || return 1
    podman build --network host --format docker -f "$src/deploy/container/Containerfile" \
        --build-arg BASE_IMAGE="$base" --build-arg VERSION="${KMSD_VERSION:-0.0.0-test}" \
        --build-arg REVISION="$(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)" \
        "$@" -t "$tag" "$src"
}

# The test image's tag, per source tree (two checkouts testing at once do not share it).
KMS_TEST_TAG=localhost/kmsd:deploy-test-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd | sha256sum | cut -c1-8)
