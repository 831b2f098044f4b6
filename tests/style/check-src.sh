#!/usr/bin/env bash
# Style check for what clang-format cannot see (curl's checksrc): no assignment inside
# conditions, no strcpy/strcat/sprintf/gets, no `len + n > max` bounds checks. The rules and
# their self-test are in checksrc.pl; --self-test proves each rule flags a bad sample.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v perl >/dev/null || { echo "FAIL: perl is not installed"; exit 1; }
if [ "${1:-}" = --self-test ]; then
    exec perl "$here/checksrc.pl" --self-test
fi
cd "${KMS_SOURCE_DIR:?}"
files=$(find common attest chain storage node replication cli bench tests -name '*.[ch]' \
        -not -path '*/node_modules/*' -not -path 'tests/fuzz/corpus/*' | sort)
# shellcheck disable=SC2086
exec perl "$here/checksrc.pl" --exempt "$here/checksrc-exempt.txt" $files
