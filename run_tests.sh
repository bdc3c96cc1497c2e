#!/usr/bin/env bash
# Set up everything on a fresh machine (virtualenv, install, default weights) and run
# the test suite. Extra arguments go to pytest, e.g. ./run_tests.sh -k parity
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
# Headless Chromium for the report's rendering test: installed when missing and possible
# (root + apt-get); otherwise a warning here, and that test fails saying how to install it.
scripts/ensure_chromium.sh || echo "[run_tests] warning: continuing without Chromium" >&2
exec "$VENV_PY" -m pytest --durations=15 "$@"  # the slowest tests, to keep CI under 10 min
