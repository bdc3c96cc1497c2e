"""The ``styleganv`` protocol's numeric parts: the resize against PyTorch's own output
(``tests/data/fvd_torch_resize``) and an independent implementation, the frames a clip
gives (StyleGAN-V's random start, every K-th frame, N*K frames needed) from every input
kind, and the scoring recipe's crop that ``--resize kinetics`` uses. No model, no Beam."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from beam_i3d.errors import TooFewFrames
from beam_i3d.fvd import clips
from beam_i3d.fvd.clips import ClipSpec
from conftest import DATA

TORCH_CASES = json.loads((DATA / "fvd_torch_resize" / "cases.json").read_text())


def torch_case_input(case):
    return np.random.RandomState(case["seed"]).randint(0, 256, case["shape"]).astype(np.uint8)


# --- The resize ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", TORCH_CASES["cases"],
                         ids=lambda c: f"{c['shape'][1]}x{c['shape'][2]}-{c['size'][0]}")
def test_resize_bit_identical_to_pytorch(case):
    # PyTorch 2.13 (CPU, FMA kernels) computed these: x / 255 * 2 - 1 of the uint8
    # tensor, then F.interpolate(mode="trilinear", align_corners=False) to (T, H', W').
    frames = torch_case_input(case)
    got = clips.resize_linear_torch(clips.unit_range(frames), *case["size"])
    assert got.dtype == np.float32 and list(got.shape) == [*case["shape"][:1], *case["size"], 3]
    assert float(got.astype(np.float64).sum()) == pytest.approx(case["sum"], abs=1e-3)
    assert hashlib.sha256(np.ascontiguousarray(got).tobytes()).hexdigest() == case["sha256"]


def test_styleganv_preprocess_is_that_resize_at_224():
    case = TORCH_CASES["cases"][0]
    frames = torch_case_input(case)
    got = clips.styleganv_preprocess(frames)
    assert hashlib.sha256(got.tobytes()).hexdigest() == case["sha256"]
    assert clips.preprocess(frames, "torch_linear").tobytes() == got.tobytes()


@pytest.mark.parametrize("shape", [(2, 240, 320), (1, 37, 500), (2, 300, 113), (1, 64, 80),
                                   (1, 224, 224)])
def test_resize_against_opencv(shape):
    # An independent implementation of the same convention: OpenCV's INTER_LINEAR on
    # float32 (half-pixel centres, source clamped at the edges, no antialiasing; its
    # ratios are in double, so it differs from PyTorch's float32 ratio by rounding).
    import cv2

    rng = np.random.default_rng(sum(shape))
    x = rng.uniform(-1, 1, (*shape, 3)).astype(np.float32)
    want = np.stack([cv2.resize(f, (224, 224), interpolation=cv2.INTER_LINEAR) for f in x])
    got = clips.resize_linear_torch(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_resize_uses_half_pixel_centres():
    # A 2x downscale with half-pixel centres samples at 2i + 0.5: the mean of each pair
    # (TF1's legacy op, the original protocol's, takes every other pixel instead).
    image = (np.arange(448 * 448 * 3, dtype=np.float64).reshape(1, 448, 448, 3) % 251)
    got = clips.resize_linear_torch(image.astype(np.float32))
    pairs = image[0].reshape(224, 2, 224, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(got[0], pairs, rtol=0, atol=1e-4)
    legacy = clips.resize_bilinear_tf1(image.astype(np.uint8))
    assert np.abs(legacy[0] - got[0]).max() > 10


def test_rescale_range():
    frames = np.zeros((9, 50, 70, 3), np.uint8)
    frames[3] = 255
    out = clips.styleganv_preprocess(frames)
    assert out.shape == (9, 224, 224, 3) and out.dtype == np.float32
    assert out[0].max() == -1.0 and out[3].min() == 1.0


# --- Which frames ----------------------------------------------------------------------------


def test_random_start_covers_stylegan_v_range():
    # StyleGAN-V: random.randint(0, L - n*K + K - 1), both ends included.
    for total, frames, step in [(20, 16, 1), (130, 16, 8), (128, 16, 8), (16, 16, 1)]:
        spec = ClipSpec(frames=frames, subsample=step, start="random", seed=3)
        starts = {clips.clip_start(spec, total, f"row-{i}") for i in range(400)}
        assert starts == set(range(total - frames * step + step)), (total, frames, step)
        for start in starts:
            assert clips.frame_indexes(spec, start)[-1] <= total - 1
    spec = ClipSpec(start="random", seed=3)
    assert clips.clip_start(spec, 40, "a") == clips.clip_start(spec, 40, "a")  # no state
    other = ClipSpec(start="random", seed=4)
    assert any(clips.clip_start(spec, 40, f"r{i}") != clips.clip_start(other, 40, f"r{i}")
               for i in range(20))
    assert clips.clip_start(ClipSpec(), 40, "a") == 0
    with pytest.raises(ValueError):
        clips.clip_start(ClipSpec(start="random"), 15, "a")  # fewer than 16 frames


def test_frame_indexes_every_kth():
    spec = ClipSpec(frames=16, subsample=8)
    assert spec.needed == 128
    np.testing.assert_array_equal(clips.frame_indexes(spec, 3), 3 + 8 * np.arange(16))


def write_inputs(tmp_path, frames):
    """The same frames as .npy, .npz, a PNG directory and a lossless video."""
    import cv2

    from video_factory import write_video

    np.save(tmp_path / "a.npy", frames)
    np.savez_compressed(tmp_path / "b.npz", video=frames)
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(d / f"{i:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    write_video(str(tmp_path / "v.mkv"), list(frames), codec="ffv1", pix_fmt="bgr0")
    return [tmp_path / "a.npy", tmp_path / "b.npz", d, tmp_path / "v.mkv"]


def test_frames_at_indexes_and_counts(tmp_path):
    frames = np.stack([np.full((24, 32, 3), 9 * i, np.uint8) for i in range(25)])
    frames[:, 0, 0] = np.arange(25)[:, None]  # tell the frames apart
    for uri in write_inputs(tmp_path, frames):
        uri = str(uri)
        assert clips.count_frames(uri) == 25, uri
        assert clips.count_frames(uri, at_most=10) == 10, uri
        got = clips.read_frames_at(uri, [2, 5, 8])
        np.testing.assert_array_equal(got, frames[[2, 5, 8]], err_msg=uri)
        with pytest.raises(TooFewFrames):
            clips.read_frames_at(uri, [0, 1], needed=26)
        rgb, start = clips.read_clip(uri, ClipSpec(frames=9, subsample=2, start="random",
                                                   resize="torch_linear"), key="k")
        assert start == clips.clip_start(ClipSpec(frames=9, subsample=2, start="random"),
                                         25, "k")
        want = clips.styleganv_preprocess(frames[start + 2 * np.arange(9)])
        np.testing.assert_array_equal(rgb, want, err_msg=uri)
        with pytest.raises(TooFewFrames):  # StyleGAN-V's rule: N * K frames, not (N-1) K + 1
            clips.read_clip(uri, ClipSpec(frames=9, subsample=3))


def test_array_count_reads_the_header_only(tmp_path):
    # A .npy whose data is cut off still counts (only the header is read); reading fails.
    np.save(tmp_path / "a.npy", np.zeros((30, 8, 8, 3), np.uint8))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:200])
    assert clips.count_frames(str(tmp_path / "cut.npy")) == 30
    np.save(tmp_path / "f.npy", np.zeros((30, 8, 8, 3), np.float32))
    from beam_i3d.errors import UnsupportedFrames

    with pytest.raises(UnsupportedFrames):
        clips.count_frames(str(tmp_path / "f.npy"))
    from beam_i3d.errors import VideoNotFound

    for missing in ("missing.npy", "missing.npz", "missing_dir/"):
        with pytest.raises(VideoNotFound):
            clips.count_frames(str(tmp_path / missing))


def test_kinetics_crop_is_score_recipe():
    # 320x240 -> 341x256 (shorter side 256), centre 224x224: the crop drops the borders.
    frames = np.zeros((9, 240, 320, 3), np.uint8)
    frames[:, :, :40] = 255  # a white band at the left, outside the crop
    out = clips.kinetics_preprocess(frames)
    assert out.shape == (9, 224, 224, 3)
    assert out.max() == -1.0  # the band is cut off
    stretched = clips.original_preprocess(frames)
    assert stretched.max() == 1.0  # the original protocol keeps the whole frame
