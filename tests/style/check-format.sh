#!/usr/bin/env bash
# Style check (curl's model: a checker runs in CI): every C file is clang-format clean
# under the house .clang-format. Fix with: clang-format -i <file>.
set -euo pipefail
cd "${KMS_SOURCE_DIR:?}"
command -v clang-format >/dev/null || { echo "FAIL: clang-format is not installed"; exit 1; }
files=$(find common attest chain storage node replication cli bench tests -name '*.[ch]' \
        -not -path '*/node_modules/*' -not -path 'tests/fuzz/corpus/*' -not -name eth_vectors.h | sort)
bad=$(clang-format --dry-run $files 2>&1 | grep -o '^[^:]*\.[ch]:' | sort -u | tr -d ':' || true)
if [ -n "$bad" ]; then
    echo "not clang-format clean:"; echo "$bad"
    exit 1
fi
echo "style: $(echo "$files" | wc -l) files clang-format clean"
