#!/usr/bin/env bash
# Browser check of the built book (see tools/check_site.py). Installs Debian's chromium when
# it is missing and this machine can (root with apt-get); otherwise says so loudly and, under
# CI, fails: a check that silently did not run is not a pass.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "browser check: chromium is missing; installing Debian's chromium (and CJK fonts for the screenshots; about 2 minutes, once)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
  else
    cat >&2 <<'MSG'
##########################################################################
#  BROWSER CHECK NOT RUN: chromium is not installed and cannot be        #
#  installed here (needs root and apt-get). Install Debian's `chromium`  #
#  package, or any Chromium, and run `make test` again.                  #
##########################################################################
MSG
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    exit 0
  fi
fi
exec .venv/bin/python tools/check_site.py "$@"
