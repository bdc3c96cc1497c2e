"""``--require-gpu``: fail the job in its first minute when a worker has no usable GPU.

Without it, a GPU worker whose driver is missing, or whose image's CUDA libraries do
not fit the host's driver, scores on its CPU: silently, and 10-100x slower, so a
Kinetics run costs days of GPU-machine time for nothing. :func:`ensure_gpu` runs where
the model loads (``ClipScorer``, inside ``I3DModelHandler.load_model``), raises
:class:`GPUUnavailable` with one line naming the likely cause, and the error fails the
bundle, hence the job (on Dataflow after its retries of the work item, a few minutes),
instead of becoming error rows. On the launcher, :func:`gpu_failure_as_error` finds
that error inside whatever the runner raised (a wrapped worker traceback, Dataflow's
job-failed exception) and raises it again as itself, so the CLI prints the one line.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import re
import socket

from beam_i3d.errors import BackendUnavailable, GPUUnavailable

# The line as a worker raised it, without the "[while running 'step']" Beam appends.
# BackendUnavailable (--model-backend / --precision on a worker) travels the same way.
_MARKER = re.compile(r"(?:GPUUnavailable|BackendUnavailable): "
                     r"((?:--require-gpu|--model-backend \w+|--precision \w+): [^\n]*?)"
                     r"(?: \[while running [^\n]*)?$", re.M)


def _driver_version() -> str | None:
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as f:
            first = f.readline()
    except OSError:
        return None
    found = re.search(r"Kernel Module\s+(\S+)", first)
    return found.group(1) if found else first.strip() or None


def diagnose(tf) -> str:
    """The likely reason TensorFlow sees no GPU here, as one clause."""
    built_with_cuda = tf.test.is_built_with_cuda()
    cuda = tf.sysconfig.get_build_info().get("cuda_version") if built_with_cuda else None
    if not built_with_cuda:
        return ("this TensorFlow is a CPU-only build: install tensorflow[and-cuda] in the "
                "worker image (see Dockerfile)")
    devices = glob.glob("/dev/nvidia[0-9]*")
    driver = _driver_version()
    if not devices and driver is None:
        return ("no NVIDIA device or driver on this machine: the NVIDIA driver is not "
                "installed or no GPU is attached (on Dataflow: --dataflow_service_options "
                "'worker_accelerator=type:GPU;count:N;install-nvidia-driver', "
                "install-nvidia-driver included, and a machine type that takes that GPU)")
    return (f"an NVIDIA driver ({driver or 'version unknown'}, {len(devices)} device(s)) "
            f"is present but TensorFlow (built for CUDA {cuda}) cannot use it: the CUDA "
            f"libraries in the image likely do not match the host driver (a driver older "
            f"than CUDA {cuda} needs), or CUDA_VISIBLE_DEVICES hides the GPU")


def ensure_gpu() -> None:
    """Raise GPUUnavailable unless TensorFlow sees at least one GPU in this process."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    raise GPUUnavailable(
        f"--require-gpu: TensorFlow {tf.__version__} sees no GPU on worker "
        f"{socket.gethostname()}; likely cause: {diagnose(tf)}; not scoring on the CPU")


def gpu_failure_in(error: BaseException) -> str | None:
    """The message of a GPUUnavailable raised on a worker, found in ``error``, its
    causes or their text (runners wrap worker failures in their own exceptions)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        if isinstance(error, (GPUUnavailable, BackendUnavailable)):
            # Beam re-raises a worker's error as the same class, with the step appended.
            text = f"{type(error).__name__}: {text}"
        found = _MARKER.search(text)
        if found:
            return found.group(1).strip()
        error = error.__cause__ or error.__context__
    return None


class _DropGPUTracebacks(logging.Filter):
    """Beam's local workers log each failed bundle's traceback; for GPUUnavailable
    the CLI's one line says it all (on Dataflow the tracebacks stay in worker logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        return not any(m in text for m in ("GPUUnavailable", "--require-gpu: ",
                                           "BackendUnavailable"))


_WORKER_LOGGERS = ("apache_beam.runners.common", "apache_beam.runners.worker.sdk_worker",
                   "apache_beam.runners.portability.fn_api_runner.fn_runner")


@contextlib.contextmanager
def gpu_failure_as_error():
    """Run a pipeline; a worker's GPUUnavailable comes out as itself (one line)."""
    drop = _DropGPUTracebacks()
    loggers = [logging.getLogger(name) for name in _WORKER_LOGGERS]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    except Exception as e:
        message = gpu_failure_in(e)
        if message is None:
            raise
        raise (GPUUnavailable if message.startswith("--require-gpu")
               else BackendUnavailable)(message) from None
    finally:
        for logger in loggers:
            logger.removeFilter(drop)
