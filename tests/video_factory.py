"""Real encoded test videos, made with PyAV's encoders (libx264 is in the PyAV wheel).

Frames can carry their own index as a 4x4 grid of black/white cells (16 bits) in the
middle of the picture, sized so that it survives resizing to a 256 short side and the
centre 224 crop, so a test can tell which source frame an output frame came from.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable, Sequence

import av
import numpy as np

GRID = 4  # cells per side of the index code
BACKGROUND = 128


def code_frame(index: int, width: int, height: int) -> np.ndarray:
    """``[height,width,3]`` uint8 mid-gray frame with ``index`` as a 4x4 bit grid in the
    centre square of side half the shorter side (bit 0 top-left, row-major)."""
    image = np.full((height, width, 3), BACKGROUND, np.uint8)
    side = min(width, height) // 2
    cell = side / GRID
    top, left = (height - side) / 2, (width - side) / 2
    for bit in range(GRID * GRID):
        row, col = divmod(bit, GRID)
        y0, x0 = int(round(top + row * cell)), int(round(left + col * cell))
        y1, x1 = int(round(top + (row + 1) * cell)), int(round(left + (col + 1) * cell))
        image[y0:y1, x0:x1] = 255 if (index >> bit) & 1 else 0
    return image


def read_code(crop: np.ndarray) -> int:
    """The index in a ``[224,224,3]`` output crop of a :func:`code_frame` (the grid spans
    the centre 128 px of the crop: half of the 256 short side)."""
    side = 128
    start = (224 - side) // 2
    cell = side // GRID
    value = 0
    for bit in range(GRID * GRID):
        row, col = divmod(bit, GRID)
        y, x = start + row * cell + cell // 2, start + col * cell + cell // 2
        patch = crop[y - 4:y + 4, x - 4:x + 4].astype(float).mean()
        if patch > BACKGROUND:
            value |= 1 << bit
    return value


def write_video(path: str, frames: Sequence[np.ndarray] | Callable[[int], np.ndarray], *,
                num_frames: int | None = None, rate: Fraction | int = 25,
                pts: Sequence[int] | None = None, time_base: Fraction | None = None,
                codec: str = "libx264", pix_fmt: str = "yuv420p", crf: int = 18,
                rotation: int | None = None, options: dict | None = None,
                container_options: dict | None = None, stream_options: dict | None = None) -> str:
    """Encode RGB frames into ``path`` (container from the extension).

    ``frames``: a list of ``[H,W,3]`` uint8, or a function of the frame index (then
    ``num_frames``). Constant rate ``rate`` by default; for variable frame rate give
    ``pts`` (integers in ``time_base``). ``rotation``: display matrix, degrees
    counter-clockwise to turn the stored frames upright.
    """
    if callable(frames):
        frames = [frames(i) for i in range(num_frames)]
    height, width = frames[0].shape[:2]
    with av.open(path, "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate, options=stream_options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "ultrafast", **(options or {})}
        elif options:
            stream.options = options
        if time_base is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def textured_image(height: int, width: int, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """``[height,width]`` uint8 smooth random texture spanning 0..255."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((height, width)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    smooth -= smooth.min()
    return (smooth / smooth.max() * 255).round().astype(np.uint8)


def declare_duration(path: str, seconds: float) -> str:
    """Make the MP4 at ``path`` (one video track, as :func:`write_video` writes it) declare
    ``seconds`` in its header whatever its frames say: the movie header's (``mvhd``),
    the track header's (``tkhd``) and the media header's (``mdhd``) durations are
    rewritten in place, each in its own timescale. The sample tables (``stts``: every
    frame's time and duration) and the edit list (``elst``, which FFmpeg applies to the
    frames: shortening it would really cut them) are left as they are, so FFmpeg reports
    the declared duration (``container.duration``, ``stream.duration``) while every frame
    still demuxes and decodes: a header that lies. Only version-0 boxes (32-bit fields)
    are handled; each box must occur once."""
    import struct

    data = bytearray(open(path, "rb").read())
    found: dict[bytes, list[int]] = {}

    def walk(start: int, end: int) -> None:  # the box tree, into moov/trak/mdia
        while start + 8 <= end:
            size, kind = struct.unpack(">I4s", data[start:start + 8])
            if size < 8:
                raise ValueError(f"{path}: a box size the helper does not handle ({size})")
            found.setdefault(kind, []).append(start)
            if kind in (b"moov", b"trak", b"mdia"):
                walk(start + 8, start + size)
            start += size

    walk(0, len(data))

    def box(kind: bytes) -> int:
        starts = found.get(kind, [])
        if len(starts) != 1 or data[starts[0] + 8] != 0:
            raise ValueError(f"{path}: expected one version-0 {kind.decode()} box")
        return starts[0]

    def put(offset: int, value: float) -> None:
        data[offset:offset + 4] = struct.pack(">I", round(value))

    mvhd, tkhd, mdhd = box(b"mvhd"), box(b"tkhd"), box(b"mdhd")
    movie_scale = struct.unpack(">I", data[mvhd + 20:mvhd + 24])[0]
    media_scale = struct.unpack(">I", data[mdhd + 20:mdhd + 24])[0]
    put(mvhd + 24, seconds * movie_scale)  # size, type, version+flags, created, modified, scale
    put(tkhd + 28, seconds * movie_scale)  # ... created, modified, track id, reserved
    put(mdhd + 24, seconds * media_scale)
    with open(path, "wb") as f:
        f.write(data)
    return path
