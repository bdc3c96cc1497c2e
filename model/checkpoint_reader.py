"""Reading one I3D stream from a local TF1 checkpoint, strictly (see :mod:`model.weights`
for the checkpoint layouts and specs).

Below both :mod:`model.weights` (which resolves a checkpoint spec, ``default``
included, to a local prefix and reads it here) and :mod:`model.default_weights` (which
checks its conversion here), so that neither imports the other back.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow as tf

from model.errors import CheckpointMismatch, CheckpointNotFound
from model.i3d import network_units
from model.inputs import STREAM_CHANNELS

# Training state that may sit in a checkpoint beside the weights and is ignored.
_OPTIMIZER_STATE = re.compile(
    r"(/(Momentum|Adam|Adam_1|RMSProp|RMSProp_1|Adagrad|ExponentialMovingAverage)$)"
    r"|(^|/)(global_step|beta1_power|beta2_power)$"
)
# The variable that anchors the scope prefix: every layout has it.
_ANCHOR = "Conv3d_1a_7x7/conv_3d/w"


def expected_variables(in_channels: int, num_classes: int) -> dict[str, tuple[int, ...]]:
    """Canonical variable names of one I3D stream with their shapes.

    Batch-norm statistics are listed as ``[C]``; ``[1,1,1,1,C]`` is accepted on load.
    """
    names: dict[str, tuple[int, ...]] = {}
    for u in network_units(in_channels, num_classes):
        names[f"{u.name}/conv_3d/w"] = u.kernel + (u.in_channels, u.out_channels)
        if u.batch_norm:
            for stat in ("beta", "moving_mean", "moving_variance"):
                names[f"{u.name}/batch_norm/{stat}"] = (u.out_channels,)
        else:
            names[f"{u.name}/conv_3d/b"] = (u.out_channels,)
    return names


@dataclasses.dataclass
class StreamWeights:
    """The raw (unfolded) variables of one I3D stream, by canonical name, float32."""

    tensors: dict[str, np.ndarray]
    in_channels: int
    num_classes: int
    source: str  # what the user asked for, for messages and output metadata

    @property
    def stream(self) -> str:
        return "rgb" if self.in_channels == 3 else "flow"


def _anchor_scopes(names: list[str]) -> list[str]:
    """Every scope under which the checkpoint holds an I3D first convolution."""
    return [n[: -len(_ANCHOR)] for n in names
            if n == _ANCHOR or n.endswith("/" + _ANCHOR)]


def _scope_prefix(names: list[str], stream: str | None, shapes: dict, source: str) -> str:
    """The scope prefix ("RGB/inception_i3d/", "Flow/inception_i3d/", "") of the stream."""
    prefixes = _anchor_scopes(names)
    if stream is not None:
        want = STREAM_CHANNELS[stream]
        fitting = [p for p in prefixes if shapes[p + _ANCHOR][3] == want]
        if prefixes and not fitting:
            found = ", ".join(f"{shapes[p + _ANCHOR][3]} ({p or 'no scope'})" for p in prefixes)
            raise CheckpointMismatch(
                source,
                detail=f"the {stream} stream needs {want} input channels, but this "
                f"checkpoint's first convolution has {found}; is it the other stream's?")
        prefixes = fitting
    if not prefixes:
        raise CheckpointMismatch(
            source, missing=[_ANCHOR],
            detail="found no I3D first convolution (…Conv3d_1a_7x7/conv_3d/w) under any scope")
    if len(prefixes) > 1:
        raise CheckpointMismatch(
            source, detail="it holds several I3D networks under the scopes "
            + ", ".join(repr(p) for p in prefixes) + "; load it with stream='rgb' or 'flow'")
    return prefixes[0]


@dataclasses.dataclass(frozen=True)
class StreamLayout:
    """Where one checked I3D stream sits in a checkpoint, and its sizes."""

    scope: str               # "RGB/inception_i3d/", "Flow/inception_i3d/" or ""
    in_channels: int
    num_classes: int
    source: str


def _open_reader(prefix: str, source: str):
    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointNotFound(f"cannot read checkpoint {source}: {e}") from e


def _check_layout(shapes: dict, stream: str | None, source: str) -> StreamLayout:
    """Check every name and shape (no tensor is read); raise CheckpointMismatch listing
    missing, unexpected and shape-mismatched variables."""
    names = sorted(shapes)
    scope = _scope_prefix(names, stream, shapes, source)
    in_channels = shapes[scope + _ANCHOR][3]
    logits_bias = scope + "Logits/Conv3d_0c_1x1/conv_3d/b"
    if logits_bias not in shapes or len(shapes[logits_bias]) != 1:
        raise CheckpointMismatch(source, missing=["Logits/Conv3d_0c_1x1/conv_3d/b"])
    num_classes = shapes[logits_bias][0]
    expected = expected_variables(in_channels, num_classes)

    missing, mismatched = [], []
    for name, want in expected.items():
        full = scope + name
        if full not in shapes:
            missing.append(name)
            continue
        got = tuple(shapes[full])
        # Batch-norm statistics come as [C] or [1,1,1,1,C]: accept any shape of C values.
        is_stat = "/batch_norm/" in name
        if got != want and not (is_stat and int(np.prod(got)) == want[0]
                                and all(d == 1 for d in got[:-1])):
            mismatched.append((name, want, got))
    used = {scope + n for n in expected}
    # In a checkpoint holding both streams, the other stream's network is not "unexpected".
    other_scopes = [p for p in _anchor_scopes(names) if p and p != scope]
    unexpected = [
        n for n in names
        if n not in used and not _OPTIMIZER_STATE.search(n)
        and not any(n.startswith(p) for p in other_scopes)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatch(source, missing, unexpected, mismatched)
    return StreamLayout(scope, in_channels, num_classes, source)


def read_layout(prefix: str, stream: str | None, source: str) -> StreamLayout:
    """Check one stream's names and shapes in a local checkpoint, strictly, as
    :func:`read_stream_weights` does, reading no tensor (the ``.index`` alone will do)."""
    return _check_layout(_open_reader(prefix, source).get_variable_to_shape_map(), stream,
                         source)


def read_stream_weights(prefix: str, stream: str | None = None, source: str | None = None
                        ) -> StreamWeights:
    """Read and check one I3D stream from a local TF1 name-based checkpoint prefix.

    Args:
      prefix: local checkpoint prefix (``.../model.ckpt``).
      stream: ``"rgb"`` or ``"flow"`` to insist on (and pick, where a checkpoint holds
        both) that stream; ``None`` to take the only network present.
      source: how to name the checkpoint in errors (defaults to ``prefix``).
    Raises:
      CheckpointMismatch: listing missing, unexpected and shape-mismatched variables.
    """
    source = source or prefix
    reader = _open_reader(prefix, source)
    layout = _check_layout(reader.get_variable_to_shape_map(), stream, source)
    tensors = {
        name: np.asarray(reader.get_tensor(layout.scope + name), np.float32).reshape(want)
        for name, want in expected_variables(layout.in_channels, layout.num_classes).items()
    }
    return StreamWeights(tensors, layout.in_channels, layout.num_classes, source)
