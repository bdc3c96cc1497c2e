"""The flow stream: TV-L1 on real encoded video, quantisation, and pluggable backends."""

from __future__ import annotations

import numpy as np
import pytest

from beam_i3d.media import flow
from beam_i3d.media.preprocess import preprocess_clip
from beam_i3d.media.recipe import FLOW_BOUND
from video_factory import textured_image, write_video

DX, DY = 2, -1  # pixels per frame: to the right, and up


@pytest.fixture(scope="module")
def moving_texture(tmp_path_factory):
    """A textured picture translated by (DX, DY) pixels per frame, 3 frames of 256x256
    at 25 fps (no resizing: the short side is already 256)."""
    big = textured_image(300, 300, seed=3, sigma=2.0)
    y0 = x0 = 20

    def frame(k):
        window = big[y0 - k * DY:y0 - k * DY + 256, x0 - k * DX:x0 - k * DX + 256]
        return np.repeat(window[:, :, None], 3, axis=2)

    path = str(tmp_path_factory.mktemp("flow") / "moving.mp4")
    return write_video(path, frame, num_frames=3, crf=8)


@pytest.mark.parametrize("backend", ["tf", "opencv"])
def test_tvl1_recovers_a_known_translation(moving_texture, backend):
    clip = preprocess_clip(moving_texture, streams=("rgb", "flow"), flow_backend=backend)
    assert clip.num_frames == 3 and clip.num_flow_fields == 2
    assert clip.flow.shape == (9, 224, 224, 2) and clip.flow.dtype == np.uint8
    assert clip.rgb.shape == (9, 224, 224, 3)
    assert clip.flow_quantized is True and clip.flow_backend == backend
    # Looped cyclically over the 2 real fields.
    np.testing.assert_array_equal(clip.flow[2], clip.flow[0])
    np.testing.assert_array_equal(clip.flow[3], clip.flow[1])
    pixels = flow.dequantize_flow(clip.flow[:2])  # undo the quantisation
    end_point_error = np.hypot(pixels[..., 0] - DX, pixels[..., 1] - DY)
    assert end_point_error.mean() <= 0.25
    # The sign convention: x to the right, y down.
    assert pixels[..., 0].mean() == pytest.approx(DX, abs=0.2)
    assert pixels[..., 1].mean() == pytest.approx(DY, abs=0.2)


def test_quantisation_is_the_published_linear_map():
    assert flow.quantize_flow(np.array([-25.0, -20.0, 0.0, 20.0, 99.0])).tolist() == [0, 0, 128, 255, 255]
    f = np.random.default_rng(0).uniform(-30, 30, 10000).astype(np.float32)
    levels = flow.quantize_flow(f)
    step = 2 * FLOW_BOUND / 255
    assert np.abs(flow.dequantize_flow(levels) - np.clip(f, -20, 20)).max() <= step / 2 + 1e-5
    # The model's uint8 input map x/255*2-1 is the recipe's rescaling of the dequantised flow.
    np.testing.assert_allclose(levels / 255 * 2 - 1, flow.dequantize_flow(levels) / 20, atol=1e-6)
    np.testing.assert_allclose(flow.flow_to_unit_range(f), np.clip(f, -20, 20) / 20, atol=1e-7)


def test_backends_are_chosen_by_name(moving_texture, monkeypatch):
    calls = []

    def constant(prev, nxt, batch_pairs=None):  # a stand-in: 25 px right, 3 px up everywhere
        calls.append((prev.shape, nxt.shape, prev.dtype, batch_pairs))
        out = np.zeros(prev.shape + (2,), np.float32)
        out[..., 0], out[..., 1] = 25.0, -3.0
        return out

    monkeypatch.setitem(flow._BACKENDS, "constant", constant)
    clip = preprocess_clip(moving_texture, streams=("flow",), flow_backend="constant",
                           flow_batch_pairs=7)
    assert calls == [((2, 256, 256), (2, 256, 256), np.uint8, 7)]
    assert clip.rgb is None and clip.flow_backend == "constant"
    assert set(np.unique(clip.flow[..., 0])) == {255} and set(np.unique(clip.flow[..., 1])) == {108}
    unquantised = preprocess_clip(moving_texture, streams=("flow",), flow_backend="constant",
                                  quantize_flow=False)
    assert unquantised.flow.dtype == np.float32 and unquantised.flow_quantized is False
    np.testing.assert_allclose(unquantised.flow[..., 0], 1.0)
    np.testing.assert_allclose(unquantised.flow[..., 1], -0.15)
    assert "flow_quantized" in unquantised.metadata() and unquantised.metadata()["flow_quantized"] == "False"


def test_unknown_backends_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(flow.UnknownFlowBackend, match="'nope'.*registered: .*opencv"):
        flow.compute_flow(np.zeros((2, 8, 8), np.uint8), backend="nope")
    # Checked before reading anything: no VideoNotFound for the missing file.
    with pytest.raises(flow.UnknownFlowBackend):
        preprocess_clip(str(tmp_path / "missing.mp4"), streams=("flow",), flow_backend="nope")
    monkeypatch.setitem(flow._BACKENDS, "lazy", "beam_i3d.no_such_module:tvl1")
    with pytest.raises(flow.UnknownFlowBackend, match="no_such_module"):
        flow.get_flow_backend("lazy")
    assert "tf" in flow.flow_backends()  # beam_i3d.media.flow_tf, imported on first use


def test_backend_output_shape_is_checked(monkeypatch):
    monkeypatch.setitem(flow._BACKENDS, "bad",
                        lambda prev, nxt, batch_pairs=None: np.zeros((1, 2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        flow.compute_flow(np.zeros((3, 8, 8), np.uint8), backend="bad")
