#!/usr/bin/env bash
# The whole test suite: installs what it needs (apt packages; npm packages for the test
# chain), builds with ASan+UBSan and runs every test but the `deploy` label (those build and
# run container images of their own, not the sanitized binaries), builds with clang (warnings as errors)
# and runs the unit tests, builds the static kmsctl (-DKMSCTL_STATIC=ON), then builds normally
# and runs every test again (with the static kmsctl's tests). Every phase runs
# even when an earlier one failed; the exit status is non-zero if any failed. Ends with
# ctest's summary of the normal build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
if [ -f tests/chain/setup.sh ]; then
    bash tests/chain/setup.sh
fi
JOBS=$(nproc)
failed=()

echo "==> ASan+UBSan build and tests"
if BUILD_DIR=build-asan BUILD_TYPE=Debug bash deploy/build.sh -DKMS_SANITIZE=ON; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --test-dir build-asan --output-on-failure -j"$JOBS" -LE deploy ||
        failed+=("ASan+UBSan tests")
else
    failed+=("ASan+UBSan build")
fi

echo "==> clang build (-Werror) and unit tests"
if CC=clang BUILD_DIR=build-clang BUILD_TYPE=Release bash deploy/build.sh; then
    ctest --test-dir build-clang --output-on-failure -j"$JOBS" -L unit || failed+=("clang unit tests")
else
    failed+=("clang build")
fi

echo "==> static kmsctl (-DKMSCTL_STATIC=ON; the release tests run it)"
static_kmsctl=()
if cmake -S . -B build-static -DKMSCTL_STATIC=ON -DCMAKE_BUILD_TYPE=Release -DKMS_WERROR=ON \
    >/dev/null && cmake --build build-static -j"$JOBS"; then
    static_kmsctl=(-DKMS_STATIC_KMSCTL="$PWD/build-static/cli/kmsctl")
else
    failed+=("static kmsctl build")
    static_kmsctl=(-DKMS_STATIC_KMSCTL=)
fi

echo "==> release build and tests"
# Said here, so that the output still ends with the release tests' summary.
if [ ${#failed[@]} -gt 0 ]; then
    echo "==> FAILED so far: ${failed[*]} (the exit status will be non-zero)"
fi
if BUILD_DIR=build bash deploy/build.sh "${static_kmsctl[@]}"; then
    ctest --test-dir build --output-on-failure -j"$JOBS" || failed+=("release tests")
else
    failed+=("release build")
    echo "FAILED: ${failed[*]}"
fi
[ ${#failed[@]} -eq 0 ]
