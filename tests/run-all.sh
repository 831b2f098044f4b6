#!/usr/bin/env bash
# The whole test suite: installs what it needs (apt packages; npm packages for the test
# chain), builds with ASan+UBSan and runs every test, then builds normally and runs every
# test again. Ends with ctest's summary of the normal build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
if [ -f tests/chain/setup.sh ]; then
    bash tests/chain/setup.sh
fi
JOBS=$(nproc)

echo "==> ASan+UBSan build and tests"
BUILD_DIR=build-asan BUILD_TYPE=Debug bash deploy/build.sh -DKMS_SANITIZE=ON
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$JOBS"

echo "==> release build and tests"
BUILD_DIR=build bash deploy/build.sh
ctest --test-dir build --output-on-failure -j"$JOBS"
