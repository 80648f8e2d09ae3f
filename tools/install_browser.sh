#!/usr/bin/env bash
# What the browser check and the PDF need beyond the virtual environment:
# Debian's chromium, the Noto CJK fonts (the Chinese terms, on screenshots
# and in the PDF) and poppler-utils (pdftotext: the PDF check reads the text
# in 0.3 s instead of pypdf's 10 s; pypdf is used when it is missing).
# Installs what is missing when this machine can (root with apt-get);
# otherwise says so loudly and exits 1 under CI, 2 elsewhere (the caller
# decides whether a check that cannot run is skipped).
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fc-list : family 2>/dev/null | grep "Noto Sans CJK" >/dev/null || missing+=(fonts-noto-cjk)
command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's ${missing[*]} (about 2 minutes, once)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
if [ "${missing[*]}" = "poppler-utils" ]; then
  exit 0  # optional: the PDF check falls back to pypdf
fi
cat >&2 <<MSG
##########################################################################
#  MISSING: ${missing[*]}
#  The browser check and the PDF need Debian's chromium and
#  fonts-noto-cjk (and, for speed, poppler-utils), and they cannot be
#  installed here (needs root and apt-get). Install them and run again:
#    sudo apt-get install chromium fonts-noto-cjk poppler-utils
##########################################################################
MSG
if [ "${CI:-}" = "true" ]; then exit 1; fi
exit 2
