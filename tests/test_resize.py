"""The recipe's resize (OpenCV's bilinear, INTER_LINEAR) on both conversion paths,
against an independent float64 implementation of the filter: 2 taps per axis at
half-pixel centres, no antialiasing. Random noise frames make any other filter (area
averaging, bicubic, an antialiased bilinear) miss by tens of levels."""

from __future__ import annotations

import av
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_i3d.media.video import resized_size
from beam_i3d.media.video_pixels import frame_to_rgb


def bilinear_axis(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float64 weights: source x = (i + 0.5) * n_in / n_out - 0.5, clamped
    to the image, split between floor(x) and floor(x) + 1."""
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        x = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        x0 = int(np.floor(x))
        x1 = min(x0 + 1, n_in - 1)
        weights[i, x0] += 1 - (x - x0)
        weights[i, x1] += x - x0
    return weights


def reference_resize(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    """[H,W] -> [height,width] float64, the recipe's bilinear filter."""
    rows = bilinear_axis(plane.shape[0], height)
    cols = bilinear_axis(plane.shape[1], width)
    return rows @ plane.astype(np.float64) @ cols.T


sizes = st.tuples(st.integers(60, 400), st.integers(60, 400)).filter(
    lambda hw: max(hw) / min(hw) <= 4)


@settings(max_examples=25, deadline=None)
@given(hw=sizes, seed=st.integers(0, 2**32 - 1))
def test_fast_path_resize_is_the_recipe_bilinear(hw, seed):
    # Planar YUV 4:4:4 with neutral chroma: RGB = (Y - 16) * 255/219 on every channel,
    # so the output shows the luma plane's resize alone.
    h, w = hw
    rng = np.random.default_rng(seed)
    y = rng.integers(16, 236, (h, w), dtype=np.uint8)
    planes = np.stack([y, np.full((h, w), 128, np.uint8), np.full((h, w), 128, np.uint8)])
    frame = av.VideoFrame.from_ndarray(planes, format="yuv444p")
    width, height = resized_size(w, h)
    ours = frame_to_rgb(frame, (width, height), crop=False).astype(np.float64)
    expected = (reference_resize(y, width, height) - 16) * 255 / 219
    error = np.abs(ours - np.clip(expected, 0, 255)[..., None])
    assert ours.shape == (height, width, 3)
    assert error.max() <= 2.0 and error.mean() < 0.5, (error.max(), error.mean())


@settings(max_examples=15, deadline=None)
@given(hw=sizes, seed=st.integers(0, 2**32 - 1))
def test_other_formats_resize_is_the_recipe_bilinear(hw, seed):
    # RGB frames take the other path (converted at full size, then resized).
    h, w = hw
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    width, height = resized_size(w, h)
    ours = frame_to_rgb(frame, (width, height), crop=False).astype(np.float64)
    expected = np.stack([reference_resize(rgb[..., c], width, height) for c in range(3)], -1)
    error = np.abs(ours - expected)
    assert error.max() <= 1.0 and error.mean() < 0.3, (error.max(), error.mean())
