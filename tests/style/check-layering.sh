#!/usr/bin/env bash
# Layering check: the module graph is one-way,
#   node -> replication -> {common/crypto, attest, chain, storage} -> common
# (cli may use everything but node; tests and bench anything). A file may include headers of
# its own module and of the modules listed for it below, nothing else. Also: kmsctl, a client,
# does not link libmicrohttpd or GnuTLS, and the CMake files use explicit source lists and
# per-target include directories.
# Usage: check-layering.sh [PATH/TO/kmsctl]   (KMS_SOURCE_DIR = the source root)
set -euo pipefail
cd "${KMS_SOURCE_DIR:?}"
kmsctl=${1:-}
fail=0

# The module a path (file or include) belongs to; "" for none.
module_of() {
    case "$1" in
    common/crypto/*) echo crypto ;;
    common/*) echo common ;;
    attest/* | chain/* | storage/* | replication/* | node/* | cli/*) echo "${1%%/*}" ;;
    *) echo "" ;;
    esac
}

# What each module may include besides itself.
allowed() {
    case "$1" in
    common) echo "" ;;
    attest) echo "common" ;;
    storage) echo "common" ;;
    crypto) echo "common attest" ;;
    chain) echo "common attest" ;;
    replication) echo "common crypto attest chain storage" ;;
    node) echo "common crypto attest chain storage replication" ;;
    cli) echo "common crypto attest chain storage replication" ;;
    esac
}

checked=0
while IFS= read -r f; do
    from=$(module_of "$f")
    ok=" $from $(allowed "$from") "
    checked=$((checked + 1))
    while IFS= read -r line; do
        [[ "$line" =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\"([^\"]*)\" ]] || continue
        inc=${BASH_REMATCH[1]}
        to=$(module_of "$inc")
        [ -n "$to" ] || continue
        if [[ "$ok" != *" $to "* ]]; then
            echo "layering: $f ($from) includes $inc ($to); $from may use only itself and: $(allowed "$from")"
            fail=1
        fi
    done < <(grep -E '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" || true)
done < <(find common attest chain storage replication node cli -name '*.[ch]' | sort)

# CMake: no globbing of sources, no include directory for every target at once.
while IFS= read -r c; do
    if grep -nE '^[[:space:]]*file[[:space:]]*\([[:space:]]*GLOB' "$c"; then
        echo "layering: $c globs its sources; list them"
        fail=1
    fi
    if grep -nE '^[[:space:]]*include_directories[[:space:]]*\(' "$c"; then
        echo "layering: $c sets include directories globally; use target_include_directories"
        fail=1
    fi
done < <(find . -name CMakeLists.txt -not -path './build*' -not -path '*/node_modules/*' | sort)

# kmsctl is a client: neither it nor anything it loads is libmicrohttpd, and it does not link
# GnuTLS itself. (Debian's libcurl4 loads GnuTLS through libldap; that indirect copy is
# accepted only when the system libcurl is what brings it.)
if [ -n "$kmsctl" ]; then
    if [ ! -x "$kmsctl" ]; then
        echo "layering: $kmsctl is not an executable"
        fail=1
    else
        needed=$(objdump -p "$kmsctl" | awk '$1 == "NEEDED" {print $2}')
        if grep -Ei 'microhttpd|gnutls' <<<"$needed"; then
            echo "layering: kmsctl links libmicrohttpd or GnuTLS directly (NEEDED above)"
            fail=1
        fi
        deps=$(ldd "$kmsctl")
        if grep -i microhttpd <<<"$deps"; then
            echo "layering: kmsctl loads libmicrohttpd (ldd above)"
            fail=1
        fi
        # (here-strings, not pipes into grep -q: with pipefail an early grep exit fails the pipe)
        if grep -qi gnutls <<<"$deps"; then
            curl_so=$(awk '$1 ~ /^libcurl/ {print $3; exit}' <<<"$deps")
            curl_deps=$([ -n "$curl_so" ] && ldd "$curl_so" || true)
            if ! grep -qi gnutls <<<"$curl_deps"; then
                grep -i gnutls <<<"$deps"
                echo "layering: kmsctl loads GnuTLS, and not through the system libcurl"
                fail=1
            else
                echo "layering: note: GnuTLS is loaded only by the system libcurl ($curl_so)"
            fi
        fi
    fi
fi

if [ "$fail" -ne 0 ]; then
    exit 1
fi
echo "layering: $checked files follow node -> replication -> {crypto, attest, chain, storage} -> common${kmsctl:+; kmsctl links neither libmicrohttpd nor GnuTLS}"
