#!/usr/bin/env bash
# Installs the Debian packages kmsd needs to build and test. Idempotent: apt runs only when a
# package is missing. Run as root on Debian 12.
set -euo pipefail

PKGS=(build-essential cmake pkg-config git ca-certificates curl
      libssl-dev libmicrohttpd-dev libgnutls28-dev libjansson-dev libcurl4-openssl-dev
      libsecp256k1-dev libtss2-dev libsqlite3-dev libcbor-dev # libcbor: tests only
      swtpm swtpm-tools tpm2-tools sqlite3 iproute2 xxd protobuf-compiler clang clang-format
      nodejs npm)
# deploy tests (tests/deploy): podman with runc, the mmdebstrap base, compose and .deb checks
PKGS+=(podman buildah runc uidmap mmdebstrap jq python3-yaml docker-compose dpkg-dev)
# the static kmsctl (-DKMSCTL_STATIC=ON): cli/static-curl.sh unpacks Debian's curl source with
# dpkg-source (dpkg-dev); its test checks the binary with `file`
PKGS+=(dpkg-dev debian-archive-keyring file)
# promtool (package prometheus): tests/integration/test_obs.sh checks /metrics with it
PKGS+=(prometheus)
# ui tests (tests/ui): kmsd's web pages in headless Debian chromium, driven from Python 3
PKGS+=(chromium python3)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The machine may already have node/npm from elsewhere (not from apt): don't fight it.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    filtered=()
    for p in "${missing[@]}"; do
        [ "$p" = nodejs ] || [ "$p" = npm ] || filtered+=("$p")
    done
    missing=("${filtered[@]+"${filtered[@]}"}")
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
