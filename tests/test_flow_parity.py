"""The flow stream against an independent implementation of the network.

The RGB stream is checked against an independent JAX port (test_parity.py), which has
no flow weights. Here random weights in the release's ``flow_imagenet`` layout go
through our model (model.weights: strict loading, batch-norm folding, the Keras
network) and through a plain functional TF implementation written from the release's
``i3d.py``: it reads the raw checkpoint tensors by name with ``tf.train.load_checkpoint``
and applies each unit's convolution and (unfolded) batch norm as written there. A
wrong name, a channel swap, a folding slip or a wrong pooling would show in the logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import release_layout, write_random_checkpoint
from model.weights import load_stream

EPSILON = 1e-3  # Sonnet's BatchNorm default, as in the release
# (block, pooling before it as (ksize, strides) over T, H, W; None: none)
BLOCKS = [
    ("Conv3d_1a_7x7", None), ("Conv3d_2b_1x1", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2c_3x3", None), ("Mixed_3b", ((1, 3, 3), (1, 2, 2))), ("Mixed_3c", None),
    ("Mixed_4b", ((3, 3, 3), (2, 2, 2))), ("Mixed_4c", None), ("Mixed_4d", None),
    ("Mixed_4e", None), ("Mixed_4f", None), ("Mixed_5b", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5c", None),
]


class ReleaseI3D:
    """I3D as the release's i3d.py computes it, from raw checkpoint tensors."""

    def __init__(self, prefix: str, scope: str):
        reader = tf.train.load_checkpoint(prefix)
        self.scope = scope
        self.t = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}

    def unit(self, x, name: str, stride=(1, 1, 1)):
        w = self.t[f"{name}/conv_3d/w"]
        x = tf.nn.conv3d(x, w, strides=(1, *stride, 1), padding="SAME")
        mean, var = self.t[f"{name}/batch_norm/moving_mean"], self.t[f"{name}/batch_norm/moving_variance"]
        x = (x - mean) / np.sqrt(var + EPSILON) + self.t[f"{name}/batch_norm/beta"]
        return tf.nn.relu(x)

    def units_of(self, branch: str) -> list[str]:
        """The conv units of one branch, in order (0a, 0b), found by name."""
        names = {n.rsplit("/conv_3d/w", 1)[0] for n in self.t
                 if n.startswith(branch + "/") and n.endswith("/conv_3d/w")}
        return sorted(names)

    def mixed(self, x, block: str):
        outs = []
        for b in range(4):
            branch = f"{self.scope}/{block}/Branch_{b}"
            y = x
            if b == 3:  # Branch_3 pools first: MaxPool3d_0a_3x3, stride 1
                y = tf.nn.max_pool3d(y, (1, 3, 3, 3, 1), (1, 1, 1, 1, 1), "SAME")
            for unit in self.units_of(branch):
                y = self.unit(y, unit)
            outs.append(y)
        return tf.concat(outs, axis=4)

    def __call__(self, x) -> np.ndarray:
        for block, pool in BLOCKS:
            if pool:
                ksize, strides = pool
                x = tf.nn.max_pool3d(x, (1, *ksize, 1), (1, *strides, 1), "SAME")
            if block.startswith("Conv3d"):
                stride = (2, 2, 2) if block == "Conv3d_1a_7x7" else (1, 1, 1)
                x = self.unit(x, f"{self.scope}/{block}", stride)
            else:
                x = self.mixed(x, block)
        x = tf.nn.avg_pool3d(x, (1, 2, 7, 7, 1), (1, 1, 1, 1, 1), "VALID")
        logits = tf.nn.conv3d(x, self.t[f"{self.scope}/Logits/Conv3d_0c_1x1/conv_3d/w"],
                              (1, 1, 1, 1, 1), "SAME")
        logits = logits + self.t[f"{self.scope}/Logits/Conv3d_0c_1x1/conv_3d/b"]
        return tf.reduce_mean(tf.squeeze(logits, [2, 3]), axis=1).numpy()


@pytest.fixture(scope="module")
def flow_weights(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("flow_imagenet") / "model.ckpt")
    write_random_checkpoint(release_layout("flow_imagenet"), prefix, seed=11)
    return prefix


def test_flow_stream_matches_the_release_network(flow_weights):
    x = np.random.default_rng(3).uniform(-1, 1, (1, 16, 224, 224, 2)).astype(np.float32)
    net, _ = load_stream(flow_weights, "flow")
    ours = net(tf.constant(x))["logits"].numpy()[0]
    reference = ReleaseI3D(flow_weights, "Flow/inception_i3d")(tf.constant(x))[0]
    assert ours.shape == reference.shape == (400,)
    assert np.abs(reference).max() > 1e-2  # random weights that still give a signal
    error = np.abs(ours - reference).max()
    print(f"flow stream: max |d logit| {error:.2e} (logits up to {np.abs(reference).max():.3g})")
    assert error <= 1e-4 * max(1.0, np.abs(reference).max())
    # The two channels are not interchangeable: swapping x and y moves the logits.
    swapped = net(tf.constant(x[..., ::-1].copy()))["logits"].numpy()[0]
    assert np.abs(swapped - reference).max() > 100 * error
