#!/usr/bin/env bash
# kmsd --config: options from a file (quoted values, flags, comments) start a node; the command
# line overrides the file; malformed files are refused with a message naming file and line.
set -euo pipefail
BIN=${KMS_BIN_DIR:?}
WORK=$(mktemp -d /tmp/kms-config-test-XXXXXX)
P1=$((10000 + RANDOM % 20000)); P2=$((P1 + 1))
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$WORK/log" ] && tail -5 "$WORK/log"; exit 1; }

cat >"$WORK/kmsd.conf" <<CONF
# a development node
data-dir = "$WORK/data"
listen = 127.0.0.1:$P1
tee = sim
insecure-sim = true
auth = dev
auto-bootstrap-domain = "127.0.0.1"
name = "cfg node"
CONF
"$BIN/node/kmsd" --config "$WORK/kmsd.conf" --listen "127.0.0.1:$P2" >"$WORK/log" 2>&1 &
PID=$!
st=
end=$((SECONDS + 120)) # generous: ASan on a loaded machine; idle, the first answers end it
while [ $SECONDS -lt $end ]; do
    st=$(curl -sk -o /dev/null --max-time 5 -w '%{http_code}' "https://127.0.0.1:$P2/health" || true)
    [ "$st" = 200 ] && break
    kill -0 "$PID" 2>/dev/null || fail "kmsd exited"
    sleep 0.1
done
[ "$st" = 200 ] || fail "node from --config did not serve on the overriding --listen"
# --version: one string for kmsd, kmsctl and the X-App-Version header of every answer.
ver=$("$BIN/node/kmsd" --version) || fail "kmsd --version failed"
case $ver in "kmsd "[0-9]*.[0-9]*.[0-9]*) ;; *) fail "kmsd --version printed '$ver'" ;; esac
[ "$("$BIN/cli/kmsctl" --version)" = "kmsctl ${ver#kmsd }" ] || fail "kmsctl --version differs"
hdr=$(curl -sk -D - -o /dev/null --max-time 5 "https://127.0.0.1:$P2/health" |
    sed -n 's/^[Xx]-[Aa]pp-[Vv]ersion: \(.*\)\r$/\1/p')
[ "$hdr" = "kmsd v${ver#kmsd }" ] || fail "X-App-Version '$hdr' for '$ver'"
curl -sk -o /dev/null "https://127.0.0.1:$P1/health" && fail "the file's listen address was used"
grep -q "cfg node" "$WORK/log" || fail "quoted name with a space not applied"

expect_refused() { # content message
    printf '%s\n' "$1" >"$WORK/bad.conf"
    if "$BIN/node/kmsd" --config "$WORK/bad.conf" >"$WORK/err" 2>&1; then fail "accepted: $1"; fi
    grep -qF -- "$2" "$WORK/err" || fail "for '$1' want '$2', got: $(cat "$WORK/err")"
}
expect_refused 'bogus = 1' "bad.conf:1: unknown option 'bogus'"
expect_refused 'insecure-sim = yes' "bad.conf:1: insecure-sim takes true or false"
expect_refused 'data-dir = "abc' "bad.conf:1: unterminated quoted value"
expect_refused 'just words' "bad.conf:1: expected \`name = value\`"
expect_refused 'help = true' "unknown option 'help'"
# An empty file plus more arguments than the merged argv holds: refused, not overflowed.
: >"$WORK/empty.conf"
# shellcheck disable=SC2046
if "$BIN/node/kmsd" --config "$WORK/empty.conf" $(seq 600 | sed 's/.*/--insecure-sim/') \
    >"$WORK/err" 2>&1; then fail "600 arguments with --config accepted"; fi
grep -qF "too many command-line arguments with --config" "$WORK/err" ||
    fail "600 arguments with --config: $(cat "$WORK/err")"
# --help and the --config parser come from one option table: every option --help documents
# (but help, version and config) is a name the file accepts; "stray" stops kmsd right after parsing.
opts=$("$BIN/node/kmsd" --help | sed -n 's/^  \(-h, \)\{0,1\}--\([a-z0-9-]*\).*/\2/p')
[ "$(printf '%s\n' "$opts" | wc -l)" -ge 43 ] || fail "kmsd --help documents too few options: $opts"
for o in $opts; do
    case $o in help | version | config) continue ;; esac
    printf '%s = x\n' "$o" >"$WORK/one.conf"
    if "$BIN/node/kmsd" --config "$WORK/one.conf" stray >"$WORK/err" 2>&1; then
        fail "$o = x with a stray argument accepted"
    fi
    grep -q "unknown option" "$WORK/err" && fail "--help documents --$o but --config refuses it"
done
if "$BIN/node/kmsd" --config "$WORK/none.conf" 2>"$WORK/err"; then fail "missing file accepted"; fi
grep -q "cannot open" "$WORK/err" || fail "missing file: $(cat "$WORK/err")"
echo "config: all checks passed"
