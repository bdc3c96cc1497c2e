"""What the I3D handler sets up before the model loads: TensorFlow's settings, the
checkpoints, --require-gpu. (Scoring through the real model: tests/test_inference.py.)"""

from __future__ import annotations

import pytest
import tensorflow as tf

from beam_i3d.errors import CheckpointNotFound, GPUUnavailable
from beam_i3d.job.inference import ClipScorer, I3DModelHandler, configure_tensorflow

NO_GPU = not tf.config.list_physical_devices("GPU")


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
