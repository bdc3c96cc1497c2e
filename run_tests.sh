#!/usr/bin/env bash
# Set up everything on a fresh machine (virtualenv, install, default weights) and run
# the test suite. Extra arguments go to pytest, e.g. ./run_tests.sh -k parity
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
exec "$VENV_PY" -m pytest "$@"
