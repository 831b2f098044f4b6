#!/usr/bin/env bash
# deploy: deploy/systemd/kmsd.service is hardened (systemd-analyze security --offline=true
# exposure <= 2.0) and cannot fail on hosts without TEE interfaces (every ReadWritePaths entry
# optional; no PrivateDevices hiding the TDX/TPM devices; a dedicated user with a sysusers.d
# file). Under a real systemd: test_systemd.sh.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
UNIT=$SRC/deploy/systemd/kmsd.service
fail() { echo "FAIL: $*"; exit 1; }
command -v systemd-analyze >/dev/null || { echo "FAIL: systemd-analyze not installed"; exit 1; }

out=$(systemd-analyze security --offline=true "$UNIT" 2>&1) || true
score=$(echo "$out" | sed -n 's/.*Overall exposure level for kmsd.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || { echo "$out"; fail "no exposure level in systemd-analyze output"; }
awk -v s="$score" 'BEGIN {exit !(s <= 2.0)}' || { echo "$out"; fail "exposure $score > 2.0"; }
echo "exposure level: $score"

val() { sed -n "s/^$1=//p" "$UNIT"; }
[ "$(val User)" = kmsd ] || fail "User is not kmsd"
[ "$(val UMask)" = 0077 ] || fail "UMask is not 0077"
grep -qx 'CapabilityBoundingSet=' "$UNIT" || fail "CapabilityBoundingSet is not empty"
grep -qx 'SystemCallFilter=@system-service' "$UNIT" || fail "no SystemCallFilter=@system-service"
for k in ProtectKernelTunables ProtectClock ProtectHostname RestrictRealtime NoNewPrivileges; do
    [ "$(val $k)" = yes ] || fail "$k is not yes"
done
[ "$(val ProtectProc)" = invisible ] || fail "ProtectProc is not invisible"
val ReadWritePaths | tr ' ' '\n' | grep -v '^$' | while read -r p; do
    case $p in -/*) ;; *) fail "ReadWritePaths=$p is not optional ('-'): the unit fails on hosts without it" ;; esac
done
[ "$(val PrivateDevices)" != yes ] || fail "PrivateDevices hides /dev/tdx_guest and /dev/tpmrm0"
grep -q '^u kmsd ' "$SRC/deploy/systemd/kmsd.sysusers" || fail "sysusers.d file does not create kmsd"
echo "unit security: all checks passed"
