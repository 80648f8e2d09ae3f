#!/usr/bin/env bash
# Browser check of the built book (tools/check_site.py; arguments are passed
# on, e.g. --pdf FILE). Installs chromium and the CJK fonts first when they
# are missing and this machine can (tools/install_browser.sh); where it
# cannot, it says so loudly and skips the check, except under CI, where a
# check that did not run fails: it is not a pass.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
tools/install_browser.sh || status=$?
if [ "$status" = 2 ]; then
  echo "BROWSER CHECK NOT RUN (see above)" >&2
  exit 0
elif [ "$status" != 0 ]; then
  exit "$status"
fi
exec .venv/bin/python tools/check_site.py "$@"
