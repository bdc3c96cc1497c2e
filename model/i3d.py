"""Inception-v1 I3D (Carreira & Zisserman, CVPR 2017) for inference, in TensorFlow 2.

The network follows DeepMind's kinetics-i3d ``i3d.py`` layer for layer, with the same
endpoint names, so that the original checkpoints load by name and the outputs match the
published model. Differences are in form only:

* Inference only. Batch norm (no scale; offset ``beta``; epsilon 1e-3; moving
  statistics) is folded into the preceding convolution when the weights are loaded
  (see :func:`model.weights.fold_batch_norm`), so each unit is conv + bias + ReLU.
* Plain ``tf.Module`` + ``tf.nn`` rather than Keras 3: we need none of Keras's
  training machinery, ``tf.nn`` gives exact control over the "SAME" padding of the
  original TF1 graph, the layout stays NDHWC end to end (oneDNN on CPU and cuDNN on GPU
  both run it natively), and the module exports to a SavedModel that loads with plain
  ``tf.saved_model.load`` and without this project installed.

Shapes: inputs are ``[B, T, 224, 224, C]`` (C=3 RGB, C=2 flow) with B and T dynamic and
T >= 9 (three temporal stride-2 stages bring T=9 down to 2 steps, the window of the final
temporal average pool; T<=8 leaves it nothing to pool).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
import tensorflow as tf

from model.errors import InvalidModelInput
from model.inputs import CROP_SIZE, MIN_FRAMES

# The order of the original network's endpoints.
ENDPOINTS = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
    "Logits",
)

# Output channels of each Inception module's six convolutions, in the order
# (branch 0: 1x1), (branch 1: 1x1 -> 3x3), (branch 2: 1x1 -> 3x3), (branch 3: pool -> 1x1).
INCEPTION_CHANNELS: Mapping[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

EMBEDDING_SIZE = 1024  # channels of Mixed_5c
INPUT_SIZE = CROP_SIZE  # height and width the network expects (224)
# MIN_FRAMES (9): the shortest clip the Logits temporal pool accepts.
BATCH_NORM_EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class Unit:
    """One convolution of the network, named as in the original graph."""

    name: str  # e.g. "Mixed_4b/Branch_1/Conv3d_0b_3x3"
    kernel: tuple[int, int, int]
    in_channels: int
    out_channels: int
    batch_norm: bool = True  # False only for the final Logits conv, which has a bias


def _branch_3x3_name(module: str, branch: int) -> str:
    # The original graph names Mixed_5b's second branch-2 conv "Conv3d_0a_3x3" where all
    # other modules say "Conv3d_0b_3x3"; the checkpoints carry that name.
    if module == "Mixed_5b" and branch == 2:
        return f"{module}/Branch_2/Conv3d_0a_3x3"
    return f"{module}/Branch_{branch}/Conv3d_0b_3x3"


def inception_units(module: str, in_channels: int) -> list[Unit]:
    """The six convolutions of one Inception module, in branch order."""
    c = INCEPTION_CHANNELS[module]
    return [
        Unit(f"{module}/Branch_0/Conv3d_0a_1x1", (1, 1, 1), in_channels, c[0]),
        Unit(f"{module}/Branch_1/Conv3d_0a_1x1", (1, 1, 1), in_channels, c[1]),
        Unit(_branch_3x3_name(module, 1), (3, 3, 3), c[1], c[2]),
        Unit(f"{module}/Branch_2/Conv3d_0a_1x1", (1, 1, 1), in_channels, c[3]),
        Unit(_branch_3x3_name(module, 2), (3, 3, 3), c[3], c[4]),
        Unit(f"{module}/Branch_3/Conv3d_0b_1x1", (1, 1, 1), in_channels, c[5]),
    ]


def network_units(in_channels: int, num_classes: int) -> list[Unit]:
    """Every convolution of I3D in graph order: the one description of the architecture.

    Args:
      in_channels: 3 for the RGB stream, 2 for the flow stream.
      num_classes: width of the Logits layer (400 for Kinetics-400, 600 for -600).
    """
    units = [
        Unit("Conv3d_1a_7x7", (7, 7, 7), in_channels, 64),
        Unit("Conv3d_2b_1x1", (1, 1, 1), 64, 64),
        Unit("Conv3d_2c_3x3", (3, 3, 3), 64, 192),
    ]
    channels = 192
    for module, c in INCEPTION_CHANNELS.items():
        units += inception_units(module, channels)
        channels = c[0] + c[2] + c[4] + c[5]
    assert channels == EMBEDDING_SIZE
    units.append(
        Unit("Logits/Conv3d_0c_1x1", (1, 1, 1), EMBEDDING_SIZE, num_classes, batch_norm=False)
    )
    return units


def uint8_to_unit_range(x: tf.Tensor) -> tf.Tensor:
    """uint8 pixels (or quantised flow) in [0, 255] -> float32 in [-1, 1], as x/255*2-1."""
    return tf.cast(x, tf.float32) / 255.0 * 2.0 - 1.0


class InceptionI3d(tf.Module):
    """One I3D stream with batch norm folded into its convolutions.

    Build it with :meth:`from_folded` (see ``model.weights.load_stream`` for the usual
    way, from a checkpoint spec). Calling it maps ``[B, T, 224, 224, C]`` float32 in
    [-1, 1] to a dict with ``logits`` ``[B, num_classes]`` (Logits endpoint, averaged
    over time, before softmax) and ``embedding`` ``[B, 1024]`` (Mixed_5c averaged over
    time, height and width).
    """

    def __init__(self, in_channels: int, num_classes: int, name: str | None = None):
        super().__init__(name=name)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.units = {u.name: u for u in network_units(in_channels, num_classes)}
        # Each unit is a conv kernel and a bias; both hold batch norm folded in.
        # Variable names use "." for "/" since tf.Module checkpoint keys are paths.
        self.kernels = {
            n: tf.Variable(tf.zeros(u.kernel + (u.in_channels, u.out_channels)),
                           trainable=False, name=n.replace("/", ".") + ".kernel")
            for n, u in self.units.items()
        }
        self.biases = {
            n: tf.Variable(tf.zeros([u.out_channels]), trainable=False,
                           name=n.replace("/", ".") + ".bias")
            for n, u in self.units.items()
        }

    @classmethod
    def from_folded(
        cls,
        folded: Mapping[str, tuple[np.ndarray, np.ndarray]],
        name: str | None = None,
    ) -> "InceptionI3d":
        """Build from ``{unit name: (kernel [kt,kh,kw,cin,cout], bias [cout])}`` float32."""
        kernel = folded["Conv3d_1a_7x7"][0]
        logits_bias = folded["Logits/Conv3d_0c_1x1"][1]
        net = cls(in_channels=kernel.shape[3], num_classes=logits_bias.shape[0], name=name)
        missing = set(net.units) - set(folded)
        if missing:
            raise KeyError(f"folded weights lack units: {sorted(missing)}")
        for n in net.units:
            w, b = folded[n]
            net.kernels[n].assign(np.asarray(w, np.float32))
            net.biases[n].assign(np.asarray(b, np.float32))
        return net

    # --- building blocks ------------------------------------------------------------

    def _unit(self, x: tf.Tensor, name: str, stride: int = 1, relu: bool = True) -> tf.Tensor:
        s = (1, stride, stride, stride, 1)
        y = tf.nn.conv3d(x, self.kernels[name], strides=s, padding="SAME")
        y = tf.nn.bias_add(y, self.biases[name])
        return tf.nn.relu(y) if relu else y

    def _inception(self, x: tf.Tensor, module: str) -> tf.Tensor:
        u = [unit.name for unit in inception_units(module, 0)]
        branch_0 = self._unit(x, u[0])
        branch_1 = self._unit(self._unit(x, u[1]), u[2])
        branch_2 = self._unit(self._unit(x, u[3]), u[4])
        pooled = tf.nn.max_pool3d(x, ksize=3, strides=1, padding="SAME")
        branch_3 = self._unit(pooled, u[5])
        return tf.concat([branch_0, branch_1, branch_2, branch_3], axis=-1)

    @staticmethod
    def _max_pool(x: tf.Tensor, ksize: tuple[int, int, int],
                  stride: tuple[int, int, int]) -> tf.Tensor:
        return tf.nn.max_pool3d(x, ksize=(1, *ksize, 1), strides=(1, *stride, 1),
                                padding="SAME")

    # --- the network ----------------------------------------------------------------

    def endpoints(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """All endpoints of the original network for float32 inputs in [-1, 1].

        ``Logits`` here is the per-time-step tensor ``[B, T', num_classes]`` before the
        mean over time (the original's ``end_points['Logits']`` is after the mean).
        """
        self._check_input(inputs)
        ep = {}
        net = ep["Conv3d_1a_7x7"] = self._unit(inputs, "Conv3d_1a_7x7", stride=2)
        net = ep["MaxPool3d_2a_3x3"] = self._max_pool(net, (1, 3, 3), (1, 2, 2))
        net = ep["Conv3d_2b_1x1"] = self._unit(net, "Conv3d_2b_1x1")
        net = ep["Conv3d_2c_3x3"] = self._unit(net, "Conv3d_2c_3x3")
        net = ep["MaxPool3d_3a_3x3"] = self._max_pool(net, (1, 3, 3), (1, 2, 2))
        net = ep["Mixed_3b"] = self._inception(net, "Mixed_3b")
        net = ep["Mixed_3c"] = self._inception(net, "Mixed_3c")
        net = ep["MaxPool3d_4a_3x3"] = self._max_pool(net, (3, 3, 3), (2, 2, 2))
        for module in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            net = ep[module] = self._inception(net, module)
        net = ep["MaxPool3d_5a_2x2"] = self._max_pool(net, (2, 2, 2), (2, 2, 2))
        net = ep["Mixed_5b"] = self._inception(net, "Mixed_5b")
        net = ep["Mixed_5c"] = self._inception(net, "Mixed_5c")
        # Logits: average over a 2x7x7 window (VALID, stride 1), 1x1x1 conv with bias
        # (dropout is the identity at inference), squeeze the 1x1 spatial dims.
        pooled = tf.nn.avg_pool3d(net, ksize=(1, 2, 7, 7, 1), strides=1, padding="VALID")
        logits = self._unit(pooled, "Logits/Conv3d_0c_1x1", relu=False)
        ep["Logits"] = tf.squeeze(logits, axis=[2, 3])
        return ep

    def __call__(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        """``[B,T,224,224,C]`` float32 in [-1,1] -> logits ``[B,C']``, embedding ``[B,1024]``."""
        ep = self.endpoints(inputs)
        return {
            "logits": tf.reduce_mean(ep["Logits"], axis=1),
            "embedding": tf.reduce_mean(ep["Mixed_5c"], axis=[1, 2, 3]),
        }

    def _check_input(self, x: tf.Tensor) -> None:
        want = f"[B, T, {INPUT_SIZE}, {INPUT_SIZE}, {self.in_channels}]"
        shape = x.shape
        if shape.rank is not None and shape.rank != 5:
            raise InvalidModelInput(f"I3D input must have shape {want}, got {shape}")
        if x.dtype != tf.float32:
            raise InvalidModelInput(f"I3D input must be float32 in [-1, 1], got {x.dtype}")
        static = shape.as_list() if shape.rank is not None else [None] * 5
        for axis, size in ((2, INPUT_SIZE), (3, INPUT_SIZE), (4, self.in_channels)):
            if static[axis] is not None and static[axis] != size:
                raise InvalidModelInput(f"I3D input must have shape {want}, got {shape}")
        if static[1] is not None and static[1] < MIN_FRAMES:
            raise InvalidModelInput(_too_short_message(static[1]))
        if static[1] is None:
            # Dynamic T (inside a traced function, e.g. the SavedModel): check at run time.
            tf.debugging.assert_greater_equal(
                tf.shape(x)[1], MIN_FRAMES, message=_too_short_message())


def _too_short_message(frames: int | None = None) -> str:
    got = f"got {frames}" if frames is not None else "got fewer (T is the input's axis 1)"
    return (
        f"I3D needs at least {MIN_FRAMES} frames per clip, {got}: with fewer, the "
        "final 2-step temporal average pool has nothing to pool. Loop short clips up to "
        f"{MIN_FRAMES} frames (beam_i3d's preprocessing does)."
    )
