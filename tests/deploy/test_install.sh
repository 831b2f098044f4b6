#!/usr/bin/env bash
# deploy: `cmake --install` into a DESTDIR (binaries, unit pointing at the installed binary,
# sysusers.d file, example config, docs, license), then `cpack -G DEB` and the package
# inspected with dpkg-deb: Debian metadata, shared-library dependencies, contents, maintainer
# scripts that create the user and enable but do not start the unit.
set -euo pipefail
BIN=$(cd "${KMS_BIN_DIR:?}" && pwd)
WORK=$(mktemp -d /tmp/kms-deploy-install-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

DESTDIR=$WORK/root cmake --install "$BIN" --prefix /usr/local >"$WORK/install.log" 2>&1 ||
    { cat "$WORK/install.log"; fail "cmake --install"; }
R=$WORK/root/usr/local
for f in bin/kmsd bin/kmsctl lib/systemd/system/kmsd.service lib/sysusers.d/kmsd.conf \
    share/doc/kmsd/examples/kmsd.conf.example share/doc/kmsd/operator-guide.md \
    share/doc/kmsd/deploy-dstack-cloud.md share/doc/kmsd/CHANGELOG.md share/doc/kmsd/copyright; do
    [ -e "$R/$f" ] || fail "cmake --install did not install $f"
done
[ -x "$R/bin/kmsd" ] && [ -x "$R/bin/kmsctl" ] || fail "binaries not executable"
grep -qx 'ExecStart=/usr/local/bin/kmsd --config /etc/kmsd/kmsd.conf' "$R/lib/systemd/system/kmsd.service" ||
    fail "installed unit does not start the installed binary"
"$R/bin/kmsd" --help >/dev/null || fail "installed kmsd does not run"
grep -q "Apache License" "$R/share/doc/kmsd/copyright" || fail "license not installed"
# another prefix: the unit follows
DESTDIR=$WORK/root2 cmake --install "$BIN" --prefix /opt/kmsd >/dev/null 2>&1 || fail "install to /opt/kmsd"
grep -qx 'ExecStart=/opt/kmsd/bin/kmsd --config /etc/kmsd/kmsd.conf' "$WORK/root2/opt/kmsd/lib/systemd/system/kmsd.service" ||
    fail "unit does not follow --prefix"

command -v cpack >/dev/null || fail "cpack not found"
command -v dpkg-shlibdeps >/dev/null || fail "dpkg-shlibdeps not found (dpkg-dev; deploy/install-deps.sh)"
(cd "$WORK" && cpack -G DEB --config "$BIN/CPackConfig.cmake" -B "$WORK/pkg") >"$WORK/cpack.log" 2>&1 ||
    { cat "$WORK/cpack.log"; fail "cpack -G DEB"; }
DEB=$(ls "$WORK"/pkg/kmsd_*.deb 2>/dev/null | head -1)
[ -n "$DEB" ] || { cat "$WORK/cpack.log"; fail "no kmsd_*.deb"; }
echo "package: $(basename "$DEB")"
f() { dpkg-deb -f "$DEB" "$1"; }
[ "$(f Package)" = kmsd ] || fail "Package is not kmsd"
f Version | grep -Eq '^[0-9][A-Za-z0-9.+~-]*$' || fail "Version '$(f Version)' is not a Debian version"
[ "$(f Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture"
[ -n "$(f Maintainer)" ] || fail "no Maintainer"
[ "$(f Section)" = net ] || fail "Section"
for d in libssl3 libmicrohttpd12 libsqlite3-0 adduser; do
    f Depends | grep -q "$d" || fail "Depends lacks $d: $(f Depends)"
done
dpkg-deb -c "$DEB" | awk '{print $6}' >"$WORK/contents"
for p in ./usr/bin/kmsd ./usr/bin/kmsctl ./usr/lib/systemd/system/kmsd.service ./usr/lib/sysusers.d/kmsd.conf \
    ./usr/share/doc/kmsd/copyright ./usr/share/doc/kmsd/examples/kmsd.conf.example; do
    grep -qx "$p" "$WORK/contents" || fail "package lacks $p"
done
grep -q '^\./usr/local' "$WORK/contents" && fail "package installs under /usr/local"
grep -q '^\./etc/kmsd/kmsd.conf$' "$WORK/contents" && fail "package ships a live config"
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/lib/systemd/system/kmsd.service >"$WORK/unit"
grep -qx 'ExecStart=/usr/bin/kmsd --config /etc/kmsd/kmsd.conf' "$WORK/unit" || fail "packaged unit ExecStart"
dpkg-deb -e "$DEB" "$WORK/ctrl"
for s in postinst prerm postrm; do
    [ -x "$WORK/ctrl/$s" ] || fail "$s missing or not executable"
    sh -n "$WORK/ctrl/$s" || fail "$s: syntax"
done
grep -q 'systemd-sysusers\|adduser --system' "$WORK/ctrl/postinst" || fail "postinst creates no user"
grep -q 'enable kmsd.service' "$WORK/ctrl/postinst" || fail "postinst does not enable the unit"
grep -v '^ *#' "$WORK/ctrl/postinst" | grep -Eq '(systemctl|invoke-rc.d|deb-systemd-invoke) +(start|restart)' &&
    fail "postinst starts the unit"
echo "install: all checks passed"
