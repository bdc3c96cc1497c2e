"""finish_clip, check_streams and the helpers of media/preprocess, exactly, without TensorFlow.

Flow comes from a backend registered through the documented plug-in point
(``register_flow_backend``), whose output is known by construction, so the test can say
which field lands where after the centre crop, the quantisation and the looping.
"""

from __future__ import annotations

import numpy as np
import pytest

from beam_i3d import errors
from beam_i3d.media import flow as flow_ops
from beam_i3d.media.preprocess import (
    ClipTensors, DecodeLimits, check_streams, decode_for_streams, finish_clip, loop_to_length,
    preprocess_clip, uint8_to_unit_range)
from beam_i3d.media.video import DecodedClip, VideoInfo
from video_factory import code_frame, read_code, write_video

H, W = 230, 240  # gray frames: the 224 crop starts at row 3, column 8


class KnownFlow:
    """Flow for pair k: x = (column - 120) / 8 + (row - 115) / 16 px, y = 2k + 1 px (the
    gray frames are t*t, so nxt - prev says which pair it is). Records batch_pairs."""

    def __init__(self):
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, prev, nxt, *, batch_pairs=None):
        self.calls.append((prev.shape[0], batch_pairs))
        rows, cols = np.mgrid[0:prev.shape[1], 0:prev.shape[2]]
        out = np.empty(prev.shape + (2,), np.float32)
        out[..., 0] = (cols - 120) / 8 + (rows - 115) / 16
        out[..., 1] = (nxt.astype(np.float32) - prev.astype(np.float32))
        return out


@pytest.fixture
def known_flow(monkeypatch):
    backend = KnownFlow()
    monkeypatch.setitem(flow_ops._BACKENDS, "known", backend)  # removed after the test
    return backend


def expected_fields(count: int) -> np.ndarray:
    """[count,224,224,2] px: what KnownFlow gives for pairs 0..count-1, centre-cropped."""
    rows, cols = np.mgrid[3:227, 8:232]
    out = np.empty((count, 224, 224, 2), np.float32)
    out[..., 0] = (cols - 120) / 8 + (rows - 115) / 16
    for k in range(count):
        out[k, ..., 1] = 2 * k + 1
    return out


INFO = VideoInfo(uri="mem://v.mp4", format_name="mp4", codec="vp9", pix_fmt="yuv420p",
                 width=640, height=360, sample_aspect_ratio=1.0, fps=29.97, duration_sec=12.5,
                 rotation=90)


def decoded(frames: int, gray: bool = True) -> DecodedClip:
    rgb = np.stack([np.full((224, 224, 3), 10 + t, np.uint8) for t in range(frames)])
    g = np.stack([np.full((H, W), t * t, np.uint8) for t in range(frames)]) if gray else None
    times = 1.0 + np.arange(frames) / 25
    return DecodedClip(rgb=rgb, gray=g, times=times, source_times=times, start_sec=1.0,
                       end_sec=1.0 + frames / 25, info=INFO)


def test_finish_clip_rgb_and_quantised_flow(known_flow):
    clip = finish_clip(decoded(4), streams=("rgb", "flow"), flow_backend="known",
                       flow_batch_pairs=3)
    assert known_flow.calls == [(3, 3)]
    assert clip.rgb.dtype == np.uint8 and clip.rgb.shape == (9, 224, 224, 3)
    assert clip.rgb[:, 0, 0, 0].tolist() == [10, 11, 12, 13, 10, 11, 12, 13, 10]
    assert clip.flow.dtype == np.uint8 and clip.flow.shape == (9, 224, 224, 2)
    looped = expected_fields(3)[[0, 1, 2, 0, 1, 2, 0, 1, 2]]
    np.testing.assert_array_equal(clip.flow, flow_ops.quantize_flow(looped))
    assert clip == ClipTensors(
        rgb=clip.rgb, flow=clip.flow, num_frames=4, start_sec=1.0, end_sec=1.16,
        source_width=640, source_height=360, source_fps=29.97, source_duration_sec=12.5,
        source_codec="vp9", rotation=90, flow_quantized=True, flow_backend="known")


def test_finish_clip_unquantised_flow_only(known_flow):
    clip = finish_clip(decoded(2), streams=("flow",), quantize_flow=False,
                       flow_backend="known")
    assert known_flow.calls == [(1, None)]  # two frames: one pair, the backend's batch
    assert clip.rgb is None and clip.num_frames == 2
    assert clip.flow.dtype == np.float32 and clip.flow.shape == (9, 224, 224, 2)
    np.testing.assert_array_equal(
        clip.flow, flow_ops.flow_to_unit_range(np.repeat(expected_fields(1), 9, axis=0)))
    assert (clip.flow_quantized, clip.flow_backend) == (False, "known")


def test_one_frame_has_one_field_of_zero_motion(known_flow):
    quantised = finish_clip(decoded(1), streams=("rgb", "flow"), flow_backend="known")
    raw = finish_clip(decoded(1), streams=("flow",), quantize_flow=False, flow_backend="known")
    assert known_flow.calls == []
    assert quantised.flow.shape == raw.flow.shape == (9, 224, 224, 2)
    assert quantised.flow.dtype == np.uint8 and set(np.unique(quantised.flow)) == {128}
    assert raw.flow.dtype == np.float32 and not raw.flow.any()
    assert quantised.rgb[:, 0, 0, 0].tolist() == [10] * 9


def test_finish_clip_without_flow_by_default(known_flow):
    clip = finish_clip(decoded(12, gray=False))
    assert known_flow.calls == []
    assert clip.rgb.shape == (12, 224, 224, 3) and clip.flow is None
    assert (clip.flow_quantized, clip.flow_backend, clip.num_frames) == (None, None, 12)


def test_finish_clip_needs_gray_frames_for_flow(known_flow):
    with pytest.raises(ValueError) as info:
        finish_clip(decoded(4, gray=False), streams=("rgb", "flow"), flow_backend="known")
    assert str(info.value) == ("finish_clip needs the grayscale frames for flow "
                               "(decode with 'flow' in streams)")


def test_metadata_and_flow_field_count():
    clip = ClipTensors(rgb=np.zeros(1), flow=None, num_frames=5, start_sec=0.5, end_sec=0.7,
                       source_width=320, source_height=240, source_fps=None,
                       source_duration_sec=3.25, source_codec="h264", rotation=270,
                       flow_quantized=None, flow_backend=None)
    assert clip.metadata() == {
        "num_frames": "5", "start_sec": "0.5", "end_sec": "0.7", "source_width": "320",
        "source_height": "240", "source_fps": "", "source_duration_sec": "3.25",
        "source_codec": "h264", "rotation": "270", "flow_quantized": "",
        "flow_backend": "", "range_end_sec": ""}
    assert [ClipTensors(None, None, n).num_flow_fields for n in (0, 1, 2, 9)] == [1, 1, 1, 8]
    quantised = ClipTensors(None, None, 2, flow_quantized=False, flow_backend="tf")
    assert (quantised.metadata()["flow_quantized"], quantised.metadata()["flow_backend"]) == (
        "False", "tf")


def test_check_streams(known_flow, monkeypatch):
    assert check_streams(["rgb"], "no-such-backend") == ("rgb",)  # no flow: no backend
    assert check_streams(iter(["flow", "rgb"]), "known") == ("flow", "rgb")
    for bad in ([], ("rgb", "depth"), ("RGB",)):
        with pytest.raises(ValueError) as info:
            check_streams(bad, "known")
        assert str(info.value) == (
            f"streams must be a non-empty subset of ('rgb', 'flow'), got {list(bad)}")
    registered = ", ".join(flow_ops.flow_backends())
    for load in (True, False):
        with pytest.raises(flow_ops.UnknownFlowBackend) as info:
            check_streams(("flow",), "nope", load_backend=load)
        assert str(info.value) == f"unknown flow backend 'nope'; registered: {registered}"
    # A registered name whose module is missing: only loading it finds out.
    monkeypatch.setitem(flow_ops._BACKENDS, "unloadable", "no_such_module_xyz:flow")
    assert check_streams(("rgb", "flow"), "unloadable", load_backend=False) == ("rgb", "flow")
    with pytest.raises(flow_ops.UnknownFlowBackend) as info:
        check_streams(("rgb", "flow"), "unloadable")
    assert "needs no_such_module_xyz.flow, which cannot be loaded" in str(info.value)


def test_loop_to_length():
    frames = np.arange(3)
    assert loop_to_length(frames).tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]  # 9 by default
    nine = np.arange(9)
    assert loop_to_length(nine) is nine and loop_to_length(nine, 9) is nine
    assert loop_to_length(nine, 10).tolist() == list(range(9)) + [0]
    assert loop_to_length(np.arange(1), 4).tolist() == [0, 0, 0, 0]
    grid = np.arange(8).reshape(2, 2, 2)
    np.testing.assert_array_equal(loop_to_length(grid, 3), grid[[0, 1, 0]])


def test_uint8_to_unit_range_exact_values():
    out = uint8_to_unit_range(np.array([[0, 255], [51, 204]], np.uint8))
    assert out.dtype == np.float32 and out.shape == (2, 2)
    assert out[0].tolist() == [-1.0, 1.0]
    np.testing.assert_allclose(out[1], [-0.6, 0.6], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def coded_video(tmp_path_factory):
    """6 frames at 25 fps, 200x120, frame i showing code i + 1."""
    path = str(tmp_path_factory.mktemp("coded") / "coded.mp4")
    return write_video(path, lambda i: code_frame(i + 1, 200, 120), num_frames=6)


def test_decode_for_streams_passes_its_arguments(coded_video):
    rgb_only = decode_for_streams(coded_video)
    assert rgb_only.gray is None and [read_code(f) for f in rgb_only.rgb] == [1, 2, 3, 4, 5, 6]
    both = decode_for_streams(coded_video, 0.04, 0.2, streams=("rgb", "flow"))
    assert [read_code(f) for f in both.rgb] == [2, 3, 4, 5]
    assert both.gray.shape == (4, 256, 427) and both.gray.dtype == np.uint8
    capped = decode_for_streams(coded_video, 0.04, streams=("flow",), max_seconds=0.08)
    assert [read_code(f) for f in capped.rgb] == [2, 3] and capped.gray.shape[0] == 2
    with pytest.raises(errors.VideoTooLarge):
        decode_for_streams(coded_video, limits=DecodeLimits(max_pixels=200 * 120 - 1))
    assert decode_for_streams(coded_video, decode_threads=1).num_frames == 6


def test_preprocess_clip_passes_its_arguments(coded_video, known_flow):
    clip = preprocess_clip(coded_video, 0.08, 0.2, streams=("rgb", "flow"),
                           quantize_flow=False, flow_backend="known", flow_batch_pairs=2)
    assert known_flow.calls == [(2, 2)]
    assert [read_code(f) for f in clip.rgb] == [3, 4, 5] * 3  # the video goes on to 6
    assert clip.flow.dtype == np.float32 and (clip.flow_quantized, clip.flow_backend) == (
        False, "known")
    assert clip.num_frames == 3 and clip.start_sec == pytest.approx(0.08)
    assert clip.end_sec == pytest.approx(0.2)
    capped = preprocess_clip(coded_video, 0.04, max_seconds=0.12)
    assert [read_code(f) for f in capped.rgb] == [2, 3, 4] * 3 and capped.flow is None
    with pytest.raises(errors.VideoTooLarge):
        preprocess_clip(coded_video, limits=DecodeLimits(max_pixels=1000))
    # Arguments are checked before anything is read.
    with pytest.raises(flow_ops.UnknownFlowBackend):
        preprocess_clip("/no/such/video.mp4", streams=("flow",), flow_backend="nope")
