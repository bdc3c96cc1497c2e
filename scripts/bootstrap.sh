#!/usr/bin/env bash
# Create and fill the project's virtualenv if it is missing or stale, then fetch and
# convert the default I3D weights once (cached in ~/.cache/beam-i3d, see docs/weights.md).
# The docs extra too: tests/test_docs.py builds the manual.
# Sourced by run_tests.sh, run_local.sh and run_dataflow.sh; sets $VENV_PY.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BEAM_I3D_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating virtualenv $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
VENV_PY="$VENV/bin/python"
STAMP="$VENV/.beam-i3d-installed"
# BEAM_I3D_NO_INSTALL=1 uses the virtualenv as it is (tests that run these scripts).
if [ -z "${BEAM_I3D_NO_INSTALL:-}" ] && { [ ! -f "$STAMP" ] || [ "$ROOT/setup.py" -nt "$STAMP" ]; }; then
  echo "[bootstrap] installing beam-i3d and its dependencies into $VENV" >&2
  "$VENV_PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV_PY" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test,docs]"
  touch "$STAMP"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
echo "[bootstrap] default weights: $("$VENV_PY" -m model.default_weights)" >&2
