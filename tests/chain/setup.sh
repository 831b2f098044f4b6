#!/bin/sh
# Installs the chain-test tools (anvil, solcjs) from the npm registry into
# tests/chain/node_modules, pinned by package-lock.json. Idempotent: does nothing when the
# pinned versions are already there. Exit status 0 = tools ready.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
if ! command -v npm >/dev/null 2>&1; then
    echo "setup.sh: npm not found; install nodejs and npm (Debian: apt-get install nodejs npm)" >&2
    exit 2
fi
if [ -x node_modules/.bin/anvil ] && [ -x node_modules/.bin/solcjs ] &&
    [ node_modules/.package-lock.json -nt package-lock.json ]; then
    exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
test -x node_modules/.bin/anvil
test -x node_modules/.bin/solcjs
