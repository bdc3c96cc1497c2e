"""Quiet TensorFlow's native start-up log lines unless ``--verbose``.

On a machine without a GPU every process that imports TensorFlow prints lines such as
``cudart_stub.cc ... Could not find cuda drivers``, ``cuda_platform.cc ... failed call
to cuInit``, ``cpu_feature_guard.cc ...`` and absl's ``WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR``. Two mechanisms, because
they come from two places:

* ``TF_CPP_MIN_LOG_LEVEL=3`` silences what TensorFlow's own C++ logging prints once it
  has read the variable (cuInit, XLA, oneDNN, cpu_feature_guard). It is set in
  ``os.environ``, so local worker processes inherit it.
* The CUDA stub logs through absl while TensorFlow's shared libraries load, before any
  setting is read (no environment variable reaches it). :func:`install_import_filter`
  redirects file descriptor 2 to a temporary file while ``tensorflow`` is first
  imported, then writes back every captured line that is not one of those known
  start-up lines: Python warnings and anything else printed meanwhile still reach
  stderr (only later). ``BEAM_I3D_QUIET=1`` (set by the launcher) makes
  ``import beam_i3d`` install the filter in worker processes too.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

ENV = "BEAM_I3D_QUIET"

# Start-up lines of TensorFlow's native libraries (matched anywhere in the line).
NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\)"
    r"|cudart_stub\.cc|cuda_platform\.cc|cuda_executor\.cc|cuda_diagnostics\.cc"
    r"|cpu_feature_guard\.cc|To enable the following instructions: .* rebuild TensorFlow"
    r"|oneDNN custom operations are on|TF_ENABLE_ONEDNN_OPTS=0"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
    r"|TF-TRT Warning")


def quiet_native_logs() -> None:
    """Called by the launcher (unless --verbose) before anything imports TensorFlow."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ[ENV] = "1"
    install_import_filter()


def install_import_filter() -> None:
    """Filter the native start-up lines of the first ``import tensorflow`` (see the
    module's doc). Does nothing when TensorFlow is already imported."""
    if "tensorflow" in sys.modules or any(
            isinstance(f, _Finder) and not f.used for f in sys.meta_path):
        return
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]
    sys.meta_path.insert(0, _Finder())


class _Finder(importlib.abc.MetaPathFinder):
    used = False

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self.used:
            return None
        # Once: the first import only. (Not removed from sys.meta_path here: the
        # import system is iterating over it.)
        self.used = True
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _FilteringLoader(spec.loader)
        return spec


class _FilteringLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with _filtered_stderr():
            self._loader.exec_module(module)

    def __getattr__(self, name):  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)


class _filtered_stderr:
    """Redirect fd 2 into a temporary file; on exit restore it and write back the lines
    that are not NOISE."""

    def __enter__(self):
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            self._saved = None
            return self
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        if self._saved is None:
            return False
        try:
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        captured = self._file.read().decode("utf-8", "replace")
        self._file.close()
        kept = [line for line in captured.splitlines(keepends=True) if not NOISE.search(line)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
        return False
