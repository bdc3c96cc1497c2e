"""Pixels of decoded frames: the displayed shape, the resize, the orientation, the
crop and the colour conversion of the I3D recipe (used by :mod:`beam_i3d.media.video`).

Shapes. A video whose displayed aspect ratio (long side / short side, after the sample
aspect ratio) is over ``DecodeLimits.max_aspect_ratio`` is refused before any frame is
decoded (UnsupportedShape): at the 256-pixel short side a 64x2000 video would be
256x8000, too wide for the resize and the optical flow.

Pixels. Any pixel format and bit depth comes out as RGB uint8, converted with the
colour matrix (BT.601, BT.709, BT.2020...) and range (limited or full) the stream
declares; unspecified means BT.601, as in FFmpeg's swscale. The frame is resized so
that its shorter *displayed* side is 256 (non-square pixels are corrected with the
sample aspect ratio) with OpenCV's bilinear ``cv2.resize`` (``INTER_LINEAR``: 2x2 taps,
half-pixel centres, no antialiasing filter, like ``tf.image.resize(..., "bilinear")``),
turned upright if the container's display matrix says so (phone videos), and
centre-cropped to 224x224 (offsets rounded down). For planar 8-bit YUV (nearly all
H.264/HEVC/VP9/AV1 video) the three planes are resized straight from the decoder's
buffers (chroma from its subsampled size directly to the target size) and cropped
*before* the colour conversion (:func:`yuv_to_rgb`), which then runs on 224x224 pixels
only: decode + resize + crop runs at about 0.8x the speed of decoding alone
(``benchmarks/README.md``). Other formats are converted to RGB at full size by swscale
(with exact rounding; on one thread, :data:`SWSCALE_THREADS`) and then resized the same
way; both paths are within rounding of a float64 conversion (``tests/test_decode.py``).
For the flow stream the whole 256-resized frame is also returned as grayscale
(``cv2.cvtColor(RGB2GRAY)``: 0.299 R + 0.587 G + 0.114 B of the RGB frame), since
TV-L1 runs before the crop.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from beam_i3d.errors import (
    UnsupportedShape,
)
from beam_i3d.media.recipe import CROP_SIZE, RESIZE_SHORT_SIDE


# --- Geometry ---------------------------------------------------------------------------


def resized_size(width: int, height: int, sample_aspect_ratio: float = 1.0,
                 short_side: int = RESIZE_SHORT_SIDE) -> tuple[int, int]:
    """``(width, height)`` after resizing so that the shorter displayed side is
    ``short_side``, the aspect ratio kept (display width = coded width * SAR)."""
    display_width = width * (sample_aspect_ratio if sample_aspect_ratio > 0 else 1.0)
    scale = short_side / min(display_width, height)
    return (max(short_side, int(round(display_width * scale))),
            max(short_side, int(round(height * scale))))


def check_aspect_ratio(uri: str, width: int, height: int, sample_aspect_ratio: float,
                       max_aspect_ratio: float) -> None:
    """Raise UnsupportedShape if the displayed frame (width corrected by the sample
    aspect ratio; a rotation by the display matrix swaps the sides, not their ratio) has
    a long side / short side ratio over ``max_aspect_ratio``. At the recipe's 256-pixel
    short side such frames would be too wide for the resize and the optical flow (a
    64x2000 video becomes 256x8000)."""
    display_width = width * (sample_aspect_ratio if sample_aspect_ratio > 0 else 1.0)
    ratio = max(display_width, height) / min(display_width, height)
    if ratio > max_aspect_ratio:
        size = f"{width}x{height}"
        if abs(display_width - width) >= 0.5:
            size += f" (displayed {display_width:.0f}x{height})"
        raise UnsupportedShape(uri, f"{size} frames have an aspect ratio of {ratio:.2f}, over the "
                                    f"limit of {max_aspect_ratio:g} (raise it with --max-aspect-ratio)")


def center_crop(image: np.ndarray, size: int = CROP_SIZE, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """The centre ``size x size`` window of ``image`` over its height and width ``axes``
    (default ``(0, 1)``: ``[H,W]`` or ``[H,W,C]``; ``(1, 2)`` for ``[T,H,W,C]``), as a view.
    Offsets are ``(H - size) // 2`` and ``(W - size) // 2``; H and W must be >= size."""
    height, width = image.shape[axes[0]], image.shape[axes[1]]
    if height < size or width < size:
        raise ValueError(f"cannot crop {size}x{size} from {height}x{width}")
    top, left = (height - size) // 2, (width - size) // 2
    index = [slice(None)] * image.ndim
    index[axes[0]] = slice(top, top + size)
    index[axes[1]] = slice(left, left + size)
    return image[tuple(index)]


@dataclasses.dataclass(frozen=True)
class Orientation:
    """How to turn a decoded frame upright: transpose first, then flip.

    Built from FFmpeg's display matrix (``[a b u; c d v; x y w]``, which maps a source
    pixel ``(x, y)`` to ``(a x + c y, b x + d y)`` on screen, y pointing down), rounded
    to the nearest multiple of 90 degrees; mirrored matrices are honoured too.
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    rotation: int = 0  # degrees counter-clockwise, for the metadata

    @classmethod
    def from_display_matrix(cls, matrix: np.ndarray | None) -> "Orientation":
        """``matrix``: the 9 int32 of an AV_FRAME_DATA_DISPLAYMATRIX (16.16 fixed point)."""
        if matrix is None:
            return cls()
        a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
        # The counter-clockwise angle, as FFmpeg's av_display_rotation_get reports it, of
        # the rotation alone (a mirrored matrix is a rotation followed by a horizontal flip,
        # which negates a and c).
        mirrored = a * d - b * c < 0
        angle = math.degrees(math.atan2(-b, (-a if mirrored else a) if a or b else 1))
        rotation = int(round(angle / 90.0)) * 90 % 360
        rotation = rotation - 360 if rotation > 180 else rotation  # in (-180, 180]
        if abs(a) + abs(d) >= abs(b) + abs(c):  # 0 or 180 degrees, maybe mirrored
            return cls(False, d < 0, a < 0, rotation)
        return cls(True, b < 0, c < 0, rotation)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``[H, W]`` or ``[H, W, C]`` -> the upright image (a view)."""
        if self.transpose:
            image = image.swapaxes(0, 1)
        if self.flip_rows:
            image = image[::-1]
        if self.flip_cols:
            image = image[:, ::-1]
        return image

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)


def frame_orientation(frame) -> Orientation:
    """The orientation of a PyAV VideoFrame from its display matrix side data."""
    for side_data in frame.side_data:
        if side_data.type.name == "DISPLAYMATRIX":
            matrix = bytes(side_data)
            if len(matrix) < 36:  # damaged side data: keep the frame as stored
                return Orientation()
            return Orientation.from_display_matrix(np.frombuffer(matrix, "<i4", 9))
    return Orientation()

# swscale threads for a frame's conversion. PyAV (18) makes a new swscale context for
# every frame and defaults to FFmpeg's choice (a thread per CPU), so each frame started
# and joined threads: no faster (measured 0.85 vs 0.86 ms for 1080p yuv420p -> rgb24,
# 10.3 vs 10.4 ms with our flags), and on a loaded machine a thread that cannot start
# fails the frame with EAGAIN.
SWSCALE_THREADS = 1


def frame_to_rgb(frame, size: tuple[int, int], orientation: Orientation = Orientation(),
                 *, crop: bool = True) -> np.ndarray:
    """One decoded PyAV VideoFrame -> RGB uint8, resized to ``size`` (width, height, in
    the coded orientation), turned upright, and centre-cropped to ``[224,224,3]`` if
    ``crop`` (else the whole upright frame ``[H,W,3]``)."""
    import cv2

    width, height = size
    full_range = _PLANAR_YUV_RANGE.get(frame.format.name)
    if full_range is None:
        # Any other pixel format or bit depth: swscale converts at full size.
        rgb = cv2.resize(frame.to_ndarray(format="rgb24", interpolation=_swscale_flags(),
                                          threads=SWSCALE_THREADS),
                         (width, height), interpolation=cv2.INTER_LINEAR)
        rgb = orientation.apply(rgb)
        return np.ascontiguousarray(center_crop(rgb) if crop else rgb)
    # Planar YUV: resize the planes where the decoder left them (no copy), crop, and
    # convert only what is kept. Chroma planes go straight to the full target size.
    planes = []
    for plane in frame.planes:
        view = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        resized = cv2.resize(view[:, :plane.width], (width, height),
                             interpolation=cv2.INTER_LINEAR)
        resized = orientation.apply(resized)
        planes.append(center_crop(resized) if crop else resized)
    full_range = full_range or frame.color_range == _AVCOL_RANGE_JPEG
    return yuv_to_rgb(cv2.merge(planes), frame.colorspace, full_range)


# Planar 8-bit YUV formats that take the fast path -> whether their range is full (JPEG).
_PLANAR_YUV_RANGE = {
    "yuv420p": False, "yuv422p": False, "yuv444p": False,
    "yuvj420p": True, "yuvj422p": True, "yuvj444p": True,
}
_AVCOL_RANGE_JPEG = 2
# (Kr, Kb) of FFmpeg's AVColorSpace values; anything else (unspecified included) is
# BT.601, as in swscale.
_LUMA_WEIGHTS = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 (non-constant luminance)
    10: (0.2627, 0.0593),  # BT.2020 constant luminance, approximated as non-constant
}
_BT601 = (0.299, 0.114)


@functools.lru_cache(maxsize=None)
def _yuv_to_rgb_matrix(colorspace: int, full_range: bool) -> np.ndarray:
    """3x4 float32 ``M`` with ``[R,G,B] = M[:, :3] @ [Y,U,V] + M[:, 3]`` (8-bit codes)."""
    kr, kb = _LUMA_WEIGHTS.get(colorspace, _BT601)
    kg = 1.0 - kr - kb
    y_scale, c_scale, y_offset = (1.0, 1.0, 0.0) if full_range else (255 / 219, 255 / 224, 16.0)
    mix = np.array([  # R, G, B from Y', Cb, Cr (Y' in [0, 1] scale, Cb and Cr centred)
        [1.0, 0.0, 2 * (1 - kr)],
        [1.0, -2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg],
        [1.0, 2 * (1 - kb), 0.0],
    ])
    linear = mix * np.array([y_scale, c_scale, c_scale])
    offset = -linear @ np.array([y_offset, 128.0, 128.0])
    return np.hstack([linear, offset[:, None]]).astype(np.float32)


def yuv_to_rgb(yuv: np.ndarray, colorspace: int = 2, full_range: bool = False) -> np.ndarray:
    """``[H,W,3]`` uint8 Y, U, V (8-bit codes, 4:4:4) -> ``[H,W,3]`` uint8 RGB, rounded.

    ``colorspace``: FFmpeg's AVColorSpace of the stream (BT.709, BT.2020...; anything
    unknown or unspecified is BT.601, as in swscale); ``full_range``: JPEG range (0-255)
    rather than the limited 16-235/240. Our own code rather than swscale's because
    swscale's 4:4:4 -> RGB conversion costs about 0.6 ms for a 224x224 crop, a third of
    the time it takes to decode a 720p frame, whereas ``cv2.transform`` does it in a
    few tens of microseconds; ``tests/test_decode.py`` checks it against swscale.
    """
    import cv2

    return cv2.transform(yuv, _yuv_to_rgb_matrix(int(colorspace), bool(full_range)))


def _swscale_flags():
    """swscale flags for the colour conversion: exact rounding and full chroma
    interpolation. swscale's default fast converters truncate (RGB about 1 level too
    dark on average, measured against a float64 BT.601 conversion); with these flags the
    bias is gone at no cost in speed."""
    from av.video.reformatter import Interpolation

    return Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
