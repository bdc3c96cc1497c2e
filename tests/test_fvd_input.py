"""The FVD inputs: TF1's legacy bilinear resize, and lossless reading of arrays/frames."""

from __future__ import annotations

import numpy as np
import pytest

from beam_i3d.fvd import clips as fvd_input
from beam_i3d.errors import TooFewFrames, UnsupportedFrames


@pytest.mark.parametrize("shape", [(3, 64, 80, 3), (2, 240, 320, 3), (1, 224, 224, 3),
                                   (2, 37, 500, 3), (1, 300, 113, 3)])
def test_resize_matches_tf1_op(shape):
    import tensorflow as tf

    rng = np.random.default_rng(sum(shape))
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    want = tf.compat.v1.image.resize_bilinear(
        tf.cast(images, tf.float32), (224, 224), align_corners=False,
        half_pixel_centers=False).numpy()
    got = fvd_input.resize_bilinear_tf1(images)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # bit-exact


def test_resize_is_not_the_half_pixel_one():
    # The legacy op samples source pixel dst*in/out: a 2x downscale takes every other
    # pixel exactly; the half-pixel resize would average neighbours.
    image = np.arange(448 * 448 * 3, dtype=np.float64).reshape(1, 448, 448, 3) % 251
    got = fvd_input.resize_bilinear_tf1(image.astype(np.uint8))
    np.testing.assert_array_equal(got[0], image[0, ::2, ::2].astype(np.float32))


def test_preprocess_range():
    frames = np.zeros((9, 64, 64, 3), np.uint8)
    frames[1] = 255
    out = fvd_input.original_preprocess(frames)
    assert out.shape == (9, 224, 224, 3) and out.dtype == np.float32
    assert out[0].max() == -1.0 and out[1].min() == 1.0


def clip(t=12, h=40, w=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_npy_npz_and_frames_read_losslessly(tmp_path):
    import cv2

    frames = clip()
    np.save(tmp_path / "a.npy", frames)
    np.savez_compressed(tmp_path / "b.npz", video=frames)
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames[::-1]):  # written in reverse: names decide the order
        cv2.imwrite(str(d / f"{len(frames) - 1 - i:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (d / "notes.txt").write_text("ignored")
    for uri in (tmp_path / "a.npy", tmp_path / "b.npz", d, f"file://{d}/"):
        got = fvd_input.read_frames(str(uri), 10)
        np.testing.assert_array_equal(got, frames[:10])


def test_too_few_frames(tmp_path):
    np.save(tmp_path / "a.npy", clip(t=8))
    with pytest.raises(TooFewFrames):
        fvd_input.read_frames(str(tmp_path / "a.npy"), 9)


def test_wrong_array_refused(tmp_path):
    np.save(tmp_path / "f.npy", clip().astype(np.float32))
    np.savez(tmp_path / "two.npz", a=clip(), b=clip())
    for name in ("f.npy", "two.npz"):
        with pytest.raises(UnsupportedFrames):
            fvd_input.read_frames(str(tmp_path / name), 9)


def test_video_file_first_frames(tmp_path):
    from video_factory import write_video

    path = str(tmp_path / "v.mkv")
    frames = [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(12)]
    write_video(path, frames, codec="ffv1", pix_fmt="bgr0")
    got = fvd_input.read_frames(path, 9)
    assert got.shape == (9, 48, 64, 3)
    np.testing.assert_array_equal(got, np.stack(frames[:9]))
