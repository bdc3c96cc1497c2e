"""TV-L1 optical flow for the I3D flow stream, behind one function with pluggable backends.

:func:`compute_flow` takes grayscale frames ``[T,H,W]`` uint8 and returns the flow from
each frame to the next, ``[T-1,H,W,2]`` float32 in pixels: channel 0 is x (positive to
the right), channel 1 is y (positive downwards); ``flow[k]`` at pixel p says where the
content at p in frame k has moved in frame k+1.

A backend is a function ``(prev [N,H,W] uint8, next [N,H,W] uint8, *, batch_pairs=None)
-> [N,H,W,2] float32`` with that convention, registered by name:

* ``"tf"`` (default): ``beam_i3d.media.flow_tf``, a TensorFlow port of OpenCV's DualTVL1,
  batched over frame pairs (``batch_pairs`` at a time), on the worker's GPU if it has
  one; imported on first use. It meets the parity bar against OpenCV (see docs/flow.md).
* ``"opencv"``: OpenCV contrib's ``DualTVL1OpticalFlow`` with its default parameters,
  one pair at a time on the CPU (about a second per 256x340 pair; ``batch_pairs`` is
  ignored).

:func:`register_flow_backend` adds others. The recipe's post-processing (truncation to
[-20, 20], quantisation to 256 levels, rescaling to [-1, 1]) is here too, so that every
backend's output goes through the same code.
"""

from __future__ import annotations

import importlib
from typing import Callable, Union

import numpy as np

from beam_i3d.media.recipe import FLOW_BOUND, FLOW_LEVELS

FlowBackend = Callable[..., np.ndarray]

DEFAULT_FLOW_BACKEND = "tf"

# name -> function, or "module:function" imported on first use.
_BACKENDS: dict[str, Union[FlowBackend, str]] = {
    "tf": "beam_i3d.media.flow_tf:tvl1_flow_backend",
}


class UnknownFlowBackend(ValueError):
    """A flow backend name that is not registered (a configuration error, not bad input)."""


def register_flow_backend(name: str, backend: Union[FlowBackend, str]) -> None:
    """Make ``backend`` (a function, or ``"module:function"`` imported on first use)
    available to :func:`compute_flow` as ``name``."""
    _BACKENDS[name] = backend


def flow_backends() -> list[str]:
    """Names of the registered backends."""
    return sorted(_BACKENDS)


def get_flow_backend(name: str) -> FlowBackend:
    """The backend function registered as ``name``; raises UnknownFlowBackend if there is
    none or its module cannot be imported."""
    if name not in _BACKENDS:
        raise UnknownFlowBackend(
            f"unknown flow backend {name!r}; registered: {', '.join(flow_backends())}")
    backend = _BACKENDS[name]
    if isinstance(backend, str):
        module_name, _, function_name = backend.partition(":")
        try:
            backend = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as e:
            raise UnknownFlowBackend(
                f"flow backend {name!r} needs {module_name}.{function_name}, which cannot be "
                f"loaded: {e}") from e
        _BACKENDS[name] = backend
    return backend


def tvl1_flow_opencv(prev: np.ndarray, nxt: np.ndarray, *,
                     batch_pairs: int | None = None) -> np.ndarray:
    """OpenCV DualTVL1 (default parameters) on pairs: ``[N,H,W]`` uint8 x2 ->
    ``[N,H,W,2]`` float32 pixels (x right, y down), flow from ``prev`` to ``nxt``.
    One pair at a time (``batch_pairs`` is accepted and ignored). A new DualTVL1 object
    per call: ``calc`` lowers an object's number of scales for good when a pyramid
    level gets under 16 px, so an object must not be shared across frame sizes."""
    import cv2

    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    out = np.empty(prev.shape + (2,), np.float32)
    for i in range(prev.shape[0]):
        out[i] = tvl1.calc(prev[i], nxt[i], None)
    return out


register_flow_backend("opencv", tvl1_flow_opencv)


def compute_flow(gray: np.ndarray, backend: str = DEFAULT_FLOW_BACKEND,
                 batch_pairs: int | None = None) -> np.ndarray:
    """Flow between consecutive frames: ``[T,H,W]`` uint8 -> ``[T-1,H,W,2]`` float32
    pixels (x right, y down; ``flow[k]`` from frame k to k+1). T >= 2.

    ``batch_pairs``: frame pairs per batch for backends that batch (``tf``); None
    lets the backend choose (``tf``: 64 on a GPU, 4 on a CPU). Results do not depend
    on it."""
    gray = np.asarray(gray)
    if gray.ndim != 3 or gray.dtype != np.uint8 or gray.shape[0] < 2:
        raise ValueError(f"compute_flow needs [T>=2,H,W] uint8 frames, got {gray.dtype} {list(gray.shape)}")
    fn = get_flow_backend(backend)
    flow = np.asarray(fn(gray[:-1], gray[1:], batch_pairs=batch_pairs), dtype=np.float32)
    expected = (gray.shape[0] - 1,) + gray.shape[1:] + (2,)
    if flow.shape != expected:
        raise ValueError(f"flow backend {backend!r} returned shape {list(flow.shape)}, "
                         f"expected {list(expected)}")
    return flow


# --- The recipe's post-processing ----------------------------------------------------

_LEVEL_STEP = 2 * FLOW_BOUND / (FLOW_LEVELS - 1)  # pixels per quantisation level (0.157)
_LEVELS_PER_PIXEL = (FLOW_LEVELS - 1) / (2 * FLOW_BOUND)  # 6.375, exact in binary


def quantize_flow(flow: np.ndarray) -> np.ndarray:
    """Flow in pixels -> uint8: truncated to [-20, 20], then the linear map
    [-20, 20] -> [0, 255], rounded to nearest (ties to even). Zero motion becomes 128
    (127.5 rounded to even), which reads back as +0.078 px."""
    clipped = np.clip(flow, -FLOW_BOUND, FLOW_BOUND)
    return np.rint((clipped + FLOW_BOUND) * _LEVELS_PER_PIXEL).astype(np.uint8)


def dequantize_flow(levels: np.ndarray) -> np.ndarray:
    """uint8 levels -> float32 pixels in [-20, 20] (the inverse map of quantize_flow)."""
    return (levels.astype(np.float32) * np.float32(_LEVEL_STEP) - np.float32(FLOW_BOUND))


def flow_to_unit_range(flow: np.ndarray) -> np.ndarray:
    """Flow in pixels -> float32 in [-1, 1]: truncated to [-20, 20], divided by 20
    (the unquantised variant of the recipe)."""
    return (np.clip(flow, -FLOW_BOUND, FLOW_BOUND) / FLOW_BOUND).astype(np.float32)
