"""Model backends: what runs I3D's forwards where the model loads.

Both backends run the same network with the same weights (:func:`model.export.
build_model`, so checkpoints and their identities do not change):

* ``tf``: TensorFlow runs the :class:`~model.export.I3DModel`'s ``tf.function`` (CPU or
  GPU), float32.
* ``openvino``: the same I3DModel, saved as a SavedModel (its float32 signature) in a
  temporary directory, read by OpenVINO's TensorFlow front end (``Core.read_model``)
  and compiled for OpenVINO's CPU plugin once, with dynamic batch and frame axes: one
  compiled model serves every clip length. The precision is always set explicitly:
  OpenVINO's CPU plugin otherwise computes in bfloat16 on CPUs with AVX512_BF16 or AMX.
  ``Core.read_model`` rather than ``openvino.convert_model``: the latter does the same
  conversion but sends usage telemetry (``openvino-telemetry``) unless a consent file
  in the home directory says no; reading the SavedModel sends nothing. The converted
  model is cached on local disk by a digest of the weights (:func:`read_openvino_model`).

``auto`` is TensorFlow where TensorFlow sees a GPU, OpenVINO elsewhere (and OpenVINO
for ``bf16``, which only it implements). A backend that cannot run never falls back to
another: :class:`~beam_i3d.errors.BackendUnavailable`, one line.

Precision ``bf16`` (OpenVINO only) needs a CPU with bfloat16 instructions
(``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
from typing import TYPE_CHECKING, Callable, Mapping

from beam_i3d.errors import BackendUnavailable

if TYPE_CHECKING:  # numpy is imported where used: the CLI reads the names below
    import numpy as np

_LOG = logging.getLogger(__name__)

BACKENDS = ("auto", "tf", "openvino")
PRECISIONS = ("f32", "bf16")
DEFAULT_BACKEND = "auto"
DEFAULT_PRECISION = "f32"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs computing bf16
OPENVINO_REQUIREMENT = "openvino>=2026.4,<2026.5"  # as setup.py pins it
# OpenVINO's names for our precisions (INFERENCE_PRECISION_HINT).
_OV_PRECISION = {"f32": "f32", "bf16": "bf16"}


# --- The CPU -----------------------------------------------------------------------------


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``unknown CPU`` where unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def cpu_has_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def worker_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU
    quota (a container's ``--cpus``) where one is set."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="utf-8") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period) + 0.5)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


# --- Checks ------------------------------------------------------------------------------


def conflicting_options(backend: str, precision: str, require_gpu: bool) -> str | None:
    """Options that contradict each other (a usage error, exit 2), or None."""
    if require_gpu and backend == "openvino":
        return ("--require-gpu asks for TensorFlow on a GPU but --model-backend openvino "
                "runs on the CPU: drop one (--model-backend auto uses TensorFlow on GPUs)")
    if precision == "bf16" and backend == "tf":
        return ("--precision bf16 is implemented by --model-backend openvino (or auto) "
                "only; the tf backend computes in float32")
    if precision == "bf16" and require_gpu:
        return ("--precision bf16 runs on the CPU (OpenVINO) but --require-gpu asks for "
                "a GPU: drop one")
    return None


def import_openvino():
    """``openvino``, or BackendUnavailable naming what to install."""
    try:
        import openvino
    except ImportError as e:
        raise BackendUnavailable(
            f"--model-backend openvino: OpenVINO cannot be imported here ({e}); install "
            f"it ('{OPENVINO_REQUIREMENT}', a requirement of beam-i3d) or pass "
            "--model-backend tf") from None
    return openvino


def require_bf16() -> None:
    """Raise BackendUnavailable unless this CPU computes in bfloat16."""
    if not cpu_has_bf16():
        raise BackendUnavailable(
            f"--precision bf16: this CPU ({cpu_name()} on {socket.gethostname()}) has "
            f"no bfloat16 instructions (none of {', '.join(BF16_FLAGS)} in "
            "/proc/cpuinfo); pass --precision f32")


def check_at_launch(backend: str, precision: str, workers_here: bool) -> None:
    """What the launcher can check: OpenVINO importable when it will surely be used
    (``openvino``, or ``bf16``); with ``workers_here`` (workers on this machine), the
    CPU's bf16. ``auto`` with f32 resolves on each worker (TensorFlow on GPUs)."""
    if backend == "openvino" or precision == "bf16":
        import_openvino()
    if precision == "bf16" and workers_here:
        require_bf16()


def resolve_backend(backend: str, precision: str,
                    gpu_visible: Callable[[], bool]) -> str:
    """``auto`` -> ``tf`` where ``gpu_visible()`` (TensorFlow sees a GPU) and the
    precision is f32, else ``openvino``; other names unchanged."""
    if backend not in BACKENDS or precision not in PRECISIONS:
        raise ValueError(f"unknown backend {backend!r} or precision {precision!r}")
    if backend != "auto":
        return backend
    if precision != "f32":
        return "openvino"
    return "tf" if gpu_visible() else "openvino"


# --- The backends ------------------------------------------------------------------------


class TFBackend:
    """The I3DModel's ``tf.function``, float32 (TensorFlow places it on a GPU if any)."""

    name = "tf"
    precision = "f32"

    def __init__(self, model):
        self.model = model

    def describe(self) -> str:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return (f"tf (TensorFlow {tf.__version__}, f32, "
                f"{f'{len(gpus)} GPU(s)' if gpus else 'CPU'})")

    def score(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        from model.i3d import uint8_to_unit_range

        feed = {}
        for stream, array in inputs.items():
            x = tf.convert_to_tensor(array)
            feed[stream] = uint8_to_unit_range(x) if x.dtype == tf.uint8 else x
        outputs = self.model.predict(feed)
        return {k: v.numpy() for k, v in outputs.items()}


CACHE_ENTRIES = 8  # converted models kept in the cache directory (48 MB each for RGB)


def cache_dir() -> str:
    """Where converted models are kept between processes: ``BEAM_I3D_OPENVINO_CACHE``,
    else ``<temp dir>/beam-i3d-openvino``."""
    return os.environ.get("BEAM_I3D_OPENVINO_CACHE") or os.path.join(
        tempfile.gettempdir(), "beam-i3d-openvino")


def model_digest(model) -> str:
    """A digest of what the converted model depends on: the weights (names, shapes,
    values), the network's code and the OpenVINO version."""
    import hashlib
    import inspect

    import openvino as ov

    from model import export as export_module, i3d as i3d_module

    h = hashlib.sha256()
    for module in (i3d_module, export_module):
        h.update(inspect.getsource(module).encode())
    h.update(ov.get_version().encode())
    h.update(",".join(model.stream_names).encode())
    for variable in sorted(model.variables, key=lambda v: v.name):
        value = variable.numpy()
        h.update(f"{variable.name}{value.shape}{value.dtype}".encode())
        h.update(value.tobytes())
    return h.hexdigest()[:32]


def read_openvino_model(model, core):
    """The I3DModel's float32 signature as an ``openvino.Model`` (dynamic B and T),
    through a SavedModel in a temporary directory (see module doc). The result is kept
    as OpenVINO IR (float32) in :func:`cache_dir` under :func:`model_digest`, so the
    other processes of a worker, and later runs, read it in milliseconds instead of
    tracing and converting (about 2-3 s)."""
    import openvino as ov
    import tensorflow as tf

    directory = cache_dir()
    xml = os.path.join(directory, f"i3d-{model_digest(model)}.xml")
    if os.path.exists(xml):
        try:
            return core.read_model(xml)
        except RuntimeError as e:  # a damaged entry: convert again
            _LOG.warning("converting again: cannot read cached %s (%s)", xml, e)
    with tempfile.TemporaryDirectory(prefix="beam-i3d-openvino-") as tmp:
        tf.saved_model.save(model, tmp, signatures={
            "serving_default": model.predict.get_concrete_function()})
        converted = core.read_model(tmp)
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory) as staging:
            ov.save_model(converted, os.path.join(staging, "m.xml"), compress_to_fp16=False)
            # .bin first: an .xml in place means its weights are too (concurrent
            # writers of one digest write the same bytes).
            os.replace(os.path.join(staging, "m.bin"), xml[:-4] + ".bin")
            os.replace(os.path.join(staging, "m.xml"), xml)
        _prune_cache(directory)
    except OSError as e:  # no writable temp dir: converting each time still works
        _LOG.warning("cannot cache the converted model in %s: %s", directory, e)
    return converted


def _prune_cache(directory: str) -> None:
    """Keep the :data:`CACHE_ENTRIES` most recently written models."""
    entries = sorted((os.path.join(directory, n) for n in os.listdir(directory)
                      if n.startswith("i3d-") and n.endswith(".xml")),
                     key=os.path.getmtime, reverse=True)
    for xml in entries[CACHE_ENTRIES:]:
        for path in (xml, xml[:-4] + ".bin"):
            try:
                os.remove(path)
            except OSError:
                pass


class OpenVINOBackend:
    """The I3DModel compiled by OpenVINO for the CPU (see module doc).

    One compiled model with dynamic batch and frame axes and one inference request,
    used by one thread at a time (a forward already uses every core). uint8 inputs are
    mapped to [-1, 1] in numpy by the model's own float32 formula, so every stream is
    fed as float32.
    """

    name = "openvino"

    def __init__(self, model, precision: str = DEFAULT_PRECISION,
                 threads: int | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        ov = import_openvino()
        if precision == "bf16":
            require_bf16()
        self.precision = precision
        self.threads = threads or worker_cpus()
        self.stream_names = tuple(model.stream_names)
        core = ov.Core()
        self.version = ov.get_version()
        self.compiled = core.compile_model(read_openvino_model(model, core), "CPU", {
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
        })
        chosen = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        expected = {"f32": ov.Type.f32, "bf16": ov.Type.bf16}[precision]
        if chosen != expected:  # never silently another precision
            raise BackendUnavailable(f"--precision {precision}: OpenVINO compiled the "
                                     f"model for {chosen} on {socket.gethostname()}")
        wanted = {"logits", "probabilities"} | {
            f"{s}_{k}" for s in self.stream_names for k in ("logits", "embedding")}
        self._outputs = {name: port for port in self.compiled.outputs
                         for name in port.get_names() if name in wanted}
        missing = wanted - set(self._outputs)
        if missing:
            raise RuntimeError(f"the OpenVINO model lacks outputs {sorted(missing)}")
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return (f"openvino (OpenVINO {self.version}, CPU, {self.precision}, "
                f"{self.threads} threads)")

    def score(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        from beam_i3d.media.preprocess import uint8_to_unit_range

        if set(inputs) != set(self.stream_names):
            raise ValueError(f"the model takes streams {list(self.stream_names)}, given "
                             f"{sorted(inputs)}")
        feed = {}
        for stream, array in inputs.items():
            array = np.asarray(array)
            check_input(stream, array)
            if array.dtype == np.uint8:
                array = uint8_to_unit_range(array)
            feed[stream] = np.ascontiguousarray(array, dtype=np.float32)
        with self._lock:
            result = self._request.infer(feed, share_inputs=True, share_outputs=False)
            return {name: np.array(result[port]) for name, port in self._outputs.items()}


def check_input(stream: str, array: np.ndarray) -> None:
    """InvalidModelInput unless ``array`` is ``[B, T, 224, 224, C]`` with T >= 9, uint8
    or float32: what TensorFlow's traced model checks, for a backend that does not."""
    import numpy as np

    from beam_i3d.errors import InvalidModelInput
    from model.i3d import INPUT_SIZE, _too_short_message
    from model.inputs import MIN_FRAMES, STREAM_CHANNELS

    want = (INPUT_SIZE, INPUT_SIZE, STREAM_CHANNELS[stream])
    if array.ndim != 5 or array.shape[2:] != want:
        raise InvalidModelInput(f"I3D {stream} input must have shape [B, T, "
                                f"{', '.join(map(str, want))}], got {list(array.shape)}")
    if array.dtype not in (np.uint8, np.float32):
        raise InvalidModelInput(f"I3D input must be uint8 or float32, got {array.dtype}")
    if array.shape[1] < MIN_FRAMES:
        raise InvalidModelInput(_too_short_message(array.shape[1]))


def load_backend(model, backend: str = DEFAULT_BACKEND,
                 precision: str = DEFAULT_PRECISION):
    """A backend (``TFBackend`` or ``OpenVINOBackend``) running ``model`` (an
    I3DModel); ``auto`` resolved here (see module doc). Logs what it chose."""
    def gpu_visible() -> bool:
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))

    resolved = resolve_backend(backend, precision, gpu_visible)
    loaded = TFBackend(model) if resolved == "tf" else OpenVINOBackend(model, precision)
    _LOG.info("I3D model backend on %s: %s (asked: --model-backend %s --precision %s)",
              socket.gethostname(), loaded.describe(), backend, precision)
    return loaded
