#!/usr/bin/env bash
# Configures and builds kmsd into BUILD_DIR (default build/) with warnings as errors
# (-DKMS_WERROR=ON, as CI does). Extra args go to cmake configure and can override it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} -DKMS_WERROR=ON "$@" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
