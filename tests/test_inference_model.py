"""The scorer behind the I3D handler: how inputs reach the model, TensorFlow's settings, and
a failing forward in the middle of a batch's plan. The real model (default weights)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from beam_i3d.errors import CheckpointNotFound, GPUUnavailable
from beam_i3d.job.inference import (
    ClipExample, ClipScorer, I3DModelHandler, InferenceFailure, configure_tensorflow)
from beam_i3d.job.manifest import ClipRequest
from beam_i3d.media.preprocess import uint8_to_unit_range

NO_GPU = not tf.config.list_physical_devices("GPU")


def clip(clip_id: str, frames: int, seed: int) -> ClipExample:
    rng = np.random.default_rng(seed)
    request = ClipRequest(clip_id, f"mem://{clip_id}.mp4", None, None, None, f"m:{seed}")
    rgb = rng.integers(0, 256, (frames, 224, 224, 3), dtype=np.uint8)
    return ClipExample(request=request, num_frames=frames, rgb=rgb)


@pytest.fixture
def tf32_restored():
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    yield
    tf.config.experimental.enable_tensor_float_32_execution(before)


def test_configure_tensorflow_sets_tensor_float_32(tf32_restored):
    configure_tensorflow(True)
    assert tf.config.experimental.tensor_float_32_execution_enabled()
    configure_tensorflow()  # off by default
    assert not tf.config.experimental.tensor_float_32_execution_enabled()
    configure_tensorflow(True)
    configure_tensorflow(False)
    assert not tf.config.experimental.tensor_float_32_execution_enabled()


def test_loading_passes_the_settings_before_the_weights(tf32_restored):
    tf.config.experimental.enable_tensor_float_32_execution(False)
    with pytest.raises(ValueError, match="give at least one of rgb_checkpoint and flow_checkpoint"):
        I3DModelHandler(None, None, allow_tf32=True).load_model()
    assert tf.config.experimental.tensor_float_32_execution_enabled()
    with pytest.raises(CheckpointNotFound) as info:
        I3DModelHandler(None, "/no/such/flow_ckpt").load_model()
    assert "/no/such/flow_ckpt" in str(info.value)
    with pytest.raises(CheckpointNotFound) as info:
        I3DModelHandler("/no/such/rgb_ckpt", None).load_model()
    assert "/no/such/rgb_ckpt" in str(info.value)
    # ClipScorer's own defaults: TF32 off, no GPU required (a CPU machine gets this far).
    tf.config.experimental.enable_tensor_float_32_execution(True)
    with pytest.raises(ValueError, match="give at least one of rgb_checkpoint"):
        ClipScorer(None, None)
    assert not tf.config.experimental.tensor_float_32_execution_enabled()


@pytest.mark.skipif(not NO_GPU, reason="a machine without a GPU")
def test_require_gpu_fails_before_the_weights_load():
    with pytest.raises(GPUUnavailable, match="sees no GPU"):
        I3DModelHandler("/no/such/rgb_ckpt", None, require_gpu=True).load_model()
    with pytest.raises(GPUUnavailable, match="sees no GPU"):
        ClipScorer("/no/such/rgb_ckpt", None, require_gpu=True)


@pytest.fixture(scope="module")
def handler():
    return I3DModelHandler("default", None, max_batch_size=4, max_batch_frames=40)


@pytest.fixture(scope="module")
def scorer(handler):
    return handler.load_model()


def test_uint8_clips_score_as_their_unit_range_floats(scorer):
    levels = clip("u", 9, 1).rgb[None]
    as_levels = scorer.score({"rgb": levels})
    as_floats = scorer.score({"rgb": uint8_to_unit_range(levels)})
    assert sorted(as_levels) == ["logits", "probabilities", "rgb_embedding", "rgb_logits"]
    for key, value in as_levels.items():
        assert type(value) is np.ndarray and value.dtype == np.float32, key
        np.testing.assert_allclose(value, as_floats[key], rtol=0, atol=1e-6, err_msg=key)
    assert as_levels["logits"].shape == (1, 400) and scorer.num_classes == 400


class Recording:
    """The real model, recording the clips of every forward asked of it; a forward that
    holds the ``poison`` clip fails as a device kernel does."""

    def __init__(self, scorer, poison: np.ndarray | None = None):
        self.scorer, self.poison = scorer, poison
        self.calls: list[int] = []

    def score(self, inputs):
        rgb = inputs["rgb"]
        self.calls.append(len(rgb))
        if self.poison is not None and any(np.array_equal(x, self.poison) for x in rgb):
            raise tf.errors.InternalError(None, None, "device kernel failed\n  [[{{node x}}]]")
        return self.scorer.score(inputs)


def test_a_failed_forward_does_not_stop_the_forwards_after_it(handler, scorer):
    batch = [clip("short", 5, 2), clip("a", 9, 3), clip("b", 10, 4)]  # three shapes
    device = Recording(scorer)
    results = handler.run_inference(batch, device)
    assert device.calls == [1, 1, 1]  # a single clip that fails is not tried again
    assert [r.example is b for r, b in zip(results, batch)] == [True] * 3
    assert results[0].inference == InferenceFailure(
        "InvalidArgumentError", results[0].inference.message)
    assert "at least 9 frames" in results[0].inference.message
    for i in (1, 2):
        alone = scorer.score({"rgb": batch[i].rgb[None]})
        assert sorted(results[i].inference) == sorted(alone)
        np.testing.assert_allclose(results[i].inference["logits"], alone["logits"][0],
                                   rtol=0, atol=1e-4)


def test_a_retried_clip_that_fails_keeps_its_example(handler, scorer):
    batch = [clip(f"r{i}", 9, 60 + i) for i in range(3)]  # one shape: one forward of 3
    device = Recording(scorer, poison=batch[2].rgb)
    results = handler.run_inference(batch, device)
    assert device.calls == [3, 1, 1, 1]
    assert [r.example is b for r, b in zip(results, batch)] == [True] * 3
    assert results[2].inference == InferenceFailure("InternalError", "device kernel failed")
    for i in (0, 1):
        alone = scorer.score({"rgb": batch[i].rgb[None]})
        np.testing.assert_allclose(results[i].inference["logits"], alone["logits"][0],
                                   rtol=0, atol=1e-4)
