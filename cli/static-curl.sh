#!/usr/bin/env bash
# Builds the static libcurl of the static kmsctl (-DKMSCTL_STATIC=ON; docs/nitro-enclave.md)
# into PREFIX (PREFIX/lib/libcurl.a, PREFIX/include/curl). Why from source: Debian's libcurl.a
# needs static Kerberos (GSSAPI), nghttp2, libpsl, librtmp and libssh2 archives, and Debian has
# no static Kerberos. This build is HTTP/HTTPS only over OpenSSL, nothing else.
#
# The source is Debian's own curl source package, the version apt would install (so Debian's
# security patches are in), fetched with apt-get source through a private apt configuration
# (PREFIX/apt: the system's apt sources are not touched) and authenticated by apt against the
# Debian archive keyring. Idempotent: a PREFIX built from the same source version by this same script is kept.
# Needs dpkg-dev (dpkg-source) and a C compiler; run as root or as a user apt can write for.
#
# Usage: static-curl.sh PREFIX
set -euo pipefail
prefix=${1:?usage: static-curl.sh PREFIX}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
work=$prefix/src
apt_dir=$prefix/apt
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:?}")

# The version apt would install: the source package of the same version carries its patches.
version=$(dpkg-query -W -f='${Version}' libcurl4-openssl-dev 2>/dev/null || true)
if [ -z "$version" ]; then
    version=$(apt-cache policy curl | awk '/Candidate:/ {print $2}')
fi
[ -n "$version" ] && [ "$version" != "(none)" ] || {
    echo "static-curl: cannot tell which curl version apt has" >&2
    exit 1
}
# The stamp names the source version and this script (its configure options).
stamp="$version $(sha256sum "$0" | cut -c1-16)"
if [ -f "$prefix/lib/libcurl.a" ] && [ "$(cat "$prefix/.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "static-curl: $prefix has curl $version already"
    exit 0
fi

[ -r "$keyring" ] || {
    echo "static-curl: $keyring missing (package debian-archive-keyring)" >&2
    exit 1
}
rm -rf "$apt_dir" "$work"
mkdir -p "$apt_dir/parts" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$work"
cat >"$apt_dir/parts/debian-src.sources" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: $keyring

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: $codename-security
Components: main
Signed-By: $keyring
EOF
apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/parts"
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
          -o "APT::Sandbox::User=root" -o "Acquire::Retries=3" -o "Acquire::http::Timeout=60")
echo "static-curl: fetching Debian's curl $version source"
apt-get -qq "${apt_opts[@]}" update
(cd "$work" && apt-get -qq "${apt_opts[@]}" source --download-only "curl=$version")
dsc=$(ls "$work"/curl_*.dsc)
# apt checked every file against the signed Sources index; dpkg-source checks them again
# against the .dsc (its own signature check needs a keyring of maintainer keys: not relied on).
dpkg-source -x "$dsc" "$work/curl" >/dev/null 2>&1 || {
    echo "static-curl: dpkg-source could not unpack $dsc" >&2
    exit 1
}

echo "static-curl: building a static HTTP(S)-only libcurl"
cd "$work/curl"
./configure --prefix="$prefix" --disable-shared --enable-static --with-openssl \
    --without-ca-bundle --without-ca-path --without-zlib --without-brotli --without-zstd \
    --without-libpsl --without-libidn2 --without-nghttp2 --without-librtmp --without-libssh2 \
    --without-gssapi --disable-ldap --disable-ldaps --disable-rtsp --disable-dict \
    --disable-telnet --disable-tftp --disable-pop3 --disable-imap --disable-smtp \
    --disable-gopher --disable-mqtt --disable-smb --disable-ftp --disable-file \
    --disable-ntlm --disable-ntlm-wb --disable-netrc --disable-cookies --disable-alt-svc \
    --disable-hsts --disable-manual --disable-docs >"$work/configure.log" 2>&1 || {
    tail -30 "$work/configure.log" >&2
    echo "static-curl: configure failed (whole log: $work/configure.log)" >&2
    exit 1
}
make -j"$(nproc)" -C lib >"$work/make.log" 2>&1 || {
    tail -30 "$work/make.log" >&2
    echo "static-curl: build failed (whole log: $work/make.log)" >&2
    exit 1
}
make -C lib install >/dev/null
make -C include install >/dev/null
echo "$stamp" >"$prefix/.stamp"
echo "static-curl: $prefix/lib/libcurl.a (curl $version)"
