#!/usr/bin/env bash
# Make sure Debian's `chromium` is installed: tests/test_report.py renders the report's
# HTML in headless Chromium. Installs it with apt-get when missing and this runs as root
# on a system with apt-get; otherwise exits 1 saying how to install it.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[chromium] installing Debian's chromium package (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium >&2
  command -v chromium >/dev/null 2>&1 && exit 0
fi
echo "[chromium] Chromium is not installed and cannot be installed here (needs root and" \
     "apt-get). Install it, e.g. 'sudo apt-get install -y --no-install-recommends chromium';" \
     "without it the report's rendering test (tests/test_report.py) fails." >&2
exit 1
