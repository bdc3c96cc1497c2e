"""Decode a clip of a video file into the 25-fps, 256-resized, centre-cropped frames of
the I3D recipe, with limits that make it safe on untrusted files.

Reading. ``uri`` is a local path, a ``file:`` URI (``file:///a/b``, ``file:/a/b``), or a
URI of a scheme Beam's FileSystems have registered (``gs://``, ``s3://``...); any other
scheme (``http://``, ``ftp://``...) is UnsupportedURI. Its bytes are streamed into PyAV
as a Python file object, without a temporary copy: local files through ``open()`` (no
Beam import, no FFmpeg protocol parsing of the path, so a name like ``concat:a|b`` is
just a file name), other URIs through ``FileSystems.open``, each call of which (the
existence check, the open, every read) runs in a helper thread that the clip waits on
only until its time budget is spent: the storage clients' own retries (minutes) cannot
be bounded through FileSystems. A 404 is VideoNotFound; credentials, permission (403),
throttling (429), service (5xx) and network failures, and no answer within the budget,
are StorageError (transient). Only the container formats in :data:`ACCEPTED_FORMATS`
are opened, so a playlist (HLS, concat, ...) cannot make FFmpeg read other files or
URLs; other files are NotAVideo with what they are ("an image (png), not a video").

Shapes. A video whose displayed aspect ratio (long side / short side, after the sample
aspect ratio) is over ``DecodeLimits.max_aspect_ratio`` is refused before any frame is
decoded (UnsupportedShape): at the 256-pixel short side a 64x2000 video would be
256x8000, too wide for the resize and the optical flow.

The 25-fps rule. Time 0 is the video stream's start time (the first frame's
presentation time). Output frame k stands for the time ``t_k = start + k / 25`` s and is
the source frame *on screen* at ``t_k``: the last frame whose presentation time is
``<= t_k`` (frames are held, never interpolated; variable frame rates need nothing
special). A source frame is on screen until the next frame's time, and the last frame
until its own end (``pts + duration``). Output times are taken in the half-open range
``[start, end)`` capped at ``start + max_seconds``, and only while a source frame is on
screen, so a clip has ``ceil(25 * (min(end, video_end) - start))`` frames, capped at
``25 * max_seconds``. Examples: a 25-fps source maps 1:1; a 50-fps source gives every
other frame; a 4.004 s source at 30000/1001 fps (120 frames, the last one on screen from
3.971 s to 4.004 s) gives 101 frames, the 101st at t = 4.000 s being the last source
frame, because it is still on screen then (a rule that stopped at the last frame's
start, 3.971 s, would give 100 and drop 33 ms of video that is shown). Output times
before the first frame (a start time before it) get the first frame. Times are exact (fractions of the stream's time base; start and end are rounded to
microseconds).

Seeking. For a start time after 0 the demuxer seeks to the keyframe at or before the
start; frames are decoded forward, those before the start only update "the frame on
screen", and decoding stops as soon as the last wanted output time is filled. If the
seek lands after the start (inexact indexes), it retries from further back and, at
worst, from the beginning.

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
(with exact rounding) and then resized the same way; both paths are within rounding of
a float64 conversion (``tests/test_decode.py``).
For the flow stream the whole 256-resized frame is also returned as grayscale
(``cv2.cvtColor(RGB2GRAY)``: 0.299 R + 0.587 G + 0.114 B of the RGB frame), since
TV-L1 runs before the crop.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
import queue
import threading
import time
from fractions import Fraction
from typing import Iterator

import numpy as np

from beam_i3d import fileio
from beam_i3d.errors import (
    CorruptVideo,
    DecodeTimeout,
    EmptyClip,
    NotAVideo,
    NoVideoStream,
    StorageError,
    UnsupportedCodec,
    UnsupportedShape,
    UnsupportedURI,
    VideoError,
    VideoNotFound,
    VideoTooLarge,
    VideoTooLong,
)
from beam_i3d.recipe import CROP_SIZE, DEFAULT_MAX_SECONDS, RESIZE_SHORT_SIDE, SAMPLE_FPS, DecodeLimits

# FFmpeg demuxers that may open a clip (names as in ``ffmpeg -demuxers``). Everything
# else, in particular playlists and "meta" formats that open further files or URLs
# (hls, dash, concat, image2, tty...), and single images, is refused as NotAVideo.
ACCEPTED_FORMATS = (
    "mov", "mp4", "matroska", "webm", "avi", "flv", "mpegts", "mpeg", "asf", "ogg",
    "gif", "h264", "hevc", "m4v", "ivf", "nut", "mxf", "yuv4mpegpipe",
)

# How far before the start to seek again when a seek lands after the start (seconds).
_SEEK_BACKOFFS = (0, 1, 5, 30)
# A declared duration longer than the decoded stream by more than this means the file
# is truncated (only for containers whose per-stream durations are exact).
_TRUNCATION_TOLERANCE = Fraction(1, 2)


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container says about the video stream.

    ``width``/``height``: coded frame size in pixels (before rotation);
    ``sample_aspect_ratio``: pixel width / height (1.0 for square pixels);
    ``fps``: the stream's average frame rate (None if unknown); ``duration_sec``: the
    declared duration of the video (None if unknown); ``rotation``: degrees
    counter-clockwise the frames are turned to be upright (from the display matrix of
    the first decoded frame; 0 before decoding).
    """

    uri: str
    format_name: str
    codec: str
    pix_fmt: str | None
    width: int
    height: int
    sample_aspect_ratio: float
    fps: float | None
    duration_sec: float | None
    rotation: int = 0


@dataclasses.dataclass
class DecodedClip:
    """Frames of one clip at 25 fps.

    ``rgb``: ``[T,224,224,3]`` uint8, the centre crops; ``gray``: ``[T,H,W]`` uint8, the
    whole resized frames in grayscale (shorter side 256; only when asked for, else None);
    ``times``: ``[T]`` float64, output time ``t_k`` of each frame (s);
    ``source_times``: ``[T]`` float64, presentation time of the source frame chosen for
    each output (s); ``start_sec``/``end_sec``: the range actually covered, ``end_sec =
    start_sec + T/25``.
    """

    rgb: np.ndarray
    gray: np.ndarray | None
    times: np.ndarray
    source_times: np.ndarray
    start_sec: float
    end_sec: float
    info: VideoInfo

    @property
    def num_frames(self) -> int:
        return int(self.rgb.shape[0])


# --- The 25-fps rule ----------------------------------------------------------------


class FrameSampler:
    """Picks, for output times ``t_k = start + k/fps``, the source frame on screen.

    Feed the presentation times of the source frames in order with :meth:`push`; each
    call returns how many output frames the *previously* pushed frame fills (the outputs
    with ``t_k`` before the new frame's time). :meth:`finish` closes the last frame at
    its end time. Outputs stop at ``stop`` (exclusive; None: no limit); :attr:`done`
    says when all have been given. Output times before the first frame get the first
    frame. Times are ``Fraction`` seconds.
    """

    def __init__(self, start: Fraction, stop: Fraction | None, fps: int = SAMPLE_FPS):
        self.start = Fraction(start)
        self.stop = None if stop is None else Fraction(stop)
        self.fps = fps
        self.next_index = 0  # k of the next output frame
        self._have_frame = False

    def time_of(self, k: int) -> Fraction:
        """Output time ``t_k`` in seconds."""
        return self.start + Fraction(k, self.fps)

    @property
    def done(self) -> bool:
        return self.stop is not None and self.time_of(self.next_index) >= self.stop

    def push(self, frame_time: Fraction) -> int:
        """A new source frame is on screen from ``frame_time``; returns the number of
        outputs that fall to the previous frame (0 for the first frame)."""
        if not self._have_frame:
            self._have_frame = True
            return 0
        return self._fill_before(frame_time)

    def finish(self, end_time: Fraction) -> int:
        """The last pushed frame is on screen until ``end_time`` (exclusive); returns the
        number of outputs that fall to it."""
        return self._fill_before(end_time) if self._have_frame else 0

    def _fill_before(self, limit: Fraction) -> int:
        count = 0
        while not self.done and self.time_of(self.next_index) < limit:
            self.next_index += 1
            count += 1
        return count


def clip_time_range(uri: str, start_sec: float | None, end_sec: float | None,
                    max_seconds: float | None) -> tuple[Fraction, Fraction | None]:
    """``(start, stop)`` in seconds as exact fractions (rounded to microseconds): the
    output times are ``[start, stop)``; ``stop`` is None when neither an end nor a cap
    is given. Raises EmptyClip for a negative, non-finite, empty or inverted range."""
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive or None, got {max_seconds}")

    def exact(seconds: float, name: str) -> Fraction:
        if not math.isfinite(seconds) or seconds < 0:
            raise EmptyClip(uri, f"invalid time range: {name} {seconds} s is not a time >= 0")
        # In exact arithmetic: seconds * 1e6 in floats overflows to inf for huge times.
        return Fraction(round(Fraction(seconds) * 1_000_000), 1_000_000)

    start = exact(float(start_sec), "start") if start_sec is not None else Fraction(0)
    stop = exact(float(end_sec), "end") if end_sec is not None else None
    if stop is not None and stop <= start:
        raise EmptyClip(uri, f"empty time range [{float(start):g} s, {float(stop):g} s)")
    if max_seconds is not None:
        cap = start + Fraction(round(max_seconds * 1_000_000), 1_000_000)
        stop = cap if stop is None else min(stop, cap)
    return start, stop


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
        rgb = cv2.resize(frame.to_ndarray(format="rgb24", interpolation=_swscale_flags()),
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


# --- Opening ------------------------------------------------------------------------


class _DeadlineReader:
    """A file object for PyAV that stops reading once the clip's time budget is spent.

    The first read after the deadline raises DecodeTimeout (PyAV passes it through);
    later reads return EOF so that closing the container stays quiet. A local read that
    fails (EIO on a network mount) is a StorageError; remote files classify their own.
    """

    def __init__(self, raw, uri: str, deadline: float, budget: float):
        self._raw, self._uri, self._deadline, self._budget = raw, uri, deadline, budget
        self._expired = False

    def read(self, size: int = -1) -> bytes:
        if self._expired:
            return b""
        if time.monotonic() > self._deadline:
            self._expired = True
            raise DecodeTimeout(self._uri, f"reading took longer than the {self._budget:g} s budget")
        try:
            return self._raw.read(size)
        except VideoError:
            raise
        except OSError as e:
            raise StorageError(self._uri, f"read error: {_one_line(e)}") from None

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True


def _open_bytes(uri: str, deadline: float, budget: float):
    """A readable, seekable binary stream of the file at ``uri``: local paths and file:
    URIs with ``open()``, the schemes of Beam's FileSystems through :class:`_RemoteFile`
    (bounded by ``deadline``); any other scheme (http://, ftp://...) is UnsupportedURI."""
    if fileio.is_local(uri):
        path = fileio.local_path(uri)
        if not os.path.exists(path):
            raise VideoNotFound(uri, "no such file")
        if not os.path.isfile(path):  # a directory, a FIFO or a device: never block on it
            raise VideoNotFound(uri, "not a regular file")
        try:
            return open(path, "rb")
        except OSError as e:
            if isinstance(e, PermissionError):
                raise StorageError(uri, f"permission denied: {e.strerror}") from None
            raise VideoNotFound(uri, f"cannot be opened: {e.strerror}") from None
    check_uri_scheme(uri)
    return _RemoteFile(uri, deadline, budget)


def check_uri_scheme(uri: str) -> None:
    """Raise UnsupportedURI unless ``uri`` is a local path, a file: URI or of a scheme
    Beam's FileSystems have registered (gs://, s3://...); http://, ftp://... are not
    read. Imports Beam's FileSystems for a remote URI (seconds, the first time)."""
    if fileio.is_local(uri):
        return
    scheme = fileio.uri_scheme(uri)
    schemes = fileio.readable_schemes()
    if scheme not in schemes:
        schemes = sorted(schemes, key=lambda s: (s != "gs", s))
        readable = ", ".join(["local paths", "file://", *(f"{s}://" for s in schemes)])
        raise UnsupportedURI(uri, f"cannot read {scheme}:// URIs; beam-i3d reads {readable}")


class _Worker:
    """One daemon thread that runs calls for a caller who waits at most until a
    deadline. A call still running then is abandoned (the thread finishes it, then
    exits): storage clients retry on their own for minutes, and the clip may not."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="beam-i3d-storage", daemon=True).start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, result, done = job
            try:
                result.append((True, fn(*args)))
            except BaseException as e:  # handed to the caller
                result.append((False, e))
            done.set()

    def call(self, fn, args: tuple, timeout: float):
        """``(finished, ok, value or exception)``."""
        result: list = []
        done = threading.Event()
        self._jobs.put((fn, args, result, done))
        if not done.wait(timeout):
            return False, False, None
        return (True, *result[0])

    def stop(self, last=None) -> None:
        """Run ``last`` (if any) after what is queued, then end the thread."""
        if last is not None:
            self._jobs.put((last, (), [], threading.Event()))
        self._jobs.put(None)


class _RemoteFile:
    """A file of Beam's FileSystems (gs://, s3://...) whose opening and reads are
    bounded by the clip's deadline, and whose failures are typed.

    Every call runs in a :class:`_Worker` thread: the storage clients' own retries
    (google-cloud-storage retries connection errors, 429 and 5xx for up to 120 s, each
    request with a 60 s timeout) cannot be bounded through Beam's FileSystems, so the
    caller stops waiting at the deadline with a StorageError and leaves the call to end
    on its own. Errors of the storage client become VideoNotFound (404) or StorageError
    (:func:`storage_error`).
    """

    def __init__(self, uri: str, deadline: float, budget: float):
        self._uri, self._deadline, self._budget = uri, deadline, budget
        self._worker = _Worker()
        self._raw = None
        self._abandoned: StorageError | None = None  # set when a call ran past the deadline
        try:
            self._raw = self._call(_open_with_filesystems, uri)
        except BaseException:
            self.close()
            raise

    def _call(self, fn, *args):
        if self._abandoned is not None:  # the worker is still busy with the late call
            raise self._abandoned
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise DecodeTimeout(self._uri, f"reading took longer than the {self._budget:g} s budget")
        finished, ok, value = self._worker.call(fn, args, remaining)
        if not finished:
            self._abandoned = StorageError(
                self._uri, f"no answer from storage within the clip's {self._budget:g} s budget "
                           "(unreachable, or failing and retried)")
            raise self._abandoned
        if ok:
            return value
        if isinstance(value, VideoError):
            raise value
        raise storage_error(self._uri, value) from None

    def read(self, size: int = -1) -> bytes:
        return self._call(self._raw.read, size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._call(self._raw.seek, offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        raw, self._raw = self._raw, None
        self._worker.stop(raw.close if raw is not None else None)


def _open_with_filesystems(uri: str):
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(uri):
        raise VideoNotFound(uri, "no such file")
    return FileSystems.open(uri, mime_type="application/octet-stream",
                            compression_type=CompressionTypes.UNCOMPRESSED)


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _root_cause(e: BaseException) -> BaseException:
    """The storage client's own exception under Beam's and google-api-core's wrappers
    (BeamIOError's ``exception_details``, RetryError's ``cause``)."""
    for _ in range(10):
        details = getattr(e, "exception_details", None)
        if isinstance(details, dict) and details:
            inner = next(iter(details.values()))
        else:
            inner = getattr(e, "cause", None) if type(e).__name__ == "RetryError" else None
        if not isinstance(inner, BaseException):
            return e
        e = inner
    return e


def _http_status(e: BaseException) -> int | None:
    code = getattr(e, "code", None)  # google.api_core's exceptions, urllib's HTTPError
    if not isinstance(code, int) or isinstance(code, bool):
        code = getattr(getattr(e, "response", None), "status_code", None)  # requests
    return code if isinstance(code, int) and 100 <= code <= 599 else None


def _is_network_error(e: BaseException) -> bool:
    if isinstance(e, (OSError, TimeoutError)):  # ConnectionError, socket.timeout, gaierror...
        return True
    for module, name in (("requests.exceptions", "RequestException"),
                         ("urllib3.exceptions", "HTTPError"),
                         ("http.client", "HTTPException")):
        try:
            cls = getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(e, cls):
            return True
    return False


def _is_auth_error(e: BaseException) -> bool:
    try:
        from google.auth.exceptions import GoogleAuthError
    except ImportError:
        return False
    return isinstance(e, GoogleAuthError)


def storage_error(uri: str, error: BaseException) -> VideoError:
    """The VideoError for an exception of a storage client (through Beam's FileSystems)
    opening or reading ``uri``: VideoNotFound for a real 404 (or another 4xx that says
    the path is wrong), else a one-line StorageError (transient): permission denied
    (403), not authorised (401), throttled (429), service errors (5xx), time-outs,
    network and credential failures, anything unknown."""
    if isinstance(error, VideoError):
        return error
    root = _root_cause(error)
    gave_up = " (after retries)" if root is not error and type(error).__name__ == "RetryError" else ""
    detail = _one_line(root)
    status = _http_status(root)
    if status in (404, 410) or isinstance(root, (FileNotFoundError, IsADirectoryError)):
        return VideoNotFound(uri, f"no such file ({detail})")
    if status == 403 or isinstance(root, PermissionError):
        return StorageError(uri, f"permission denied: {detail}")
    if status == 401:
        return StorageError(uri, f"not authorised (check the credentials): {detail}")
    if status == 429:
        return StorageError(uri, f"throttled by the storage service{gave_up}: {detail}")
    if status is not None and (status >= 500 or status == 408):
        return StorageError(uri, f"storage service error{gave_up}: {detail}")
    if status is not None and 400 <= status < 500:
        return VideoNotFound(uri, f"cannot be read: {detail}")
    if _is_auth_error(root):
        return StorageError(uri, f"credentials failed{gave_up}: {type(root).__name__}: {detail}")
    if _is_network_error(root):
        return StorageError(uri, f"network error{gave_up}: {type(root).__name__}: {detail}")
    if isinstance(root, ValueError):  # a malformed path (gs://bucket without an object...)
        return VideoNotFound(uri, f"not a readable path: {detail}")
    return StorageError(uri, f"cannot read{gave_up}: {type(root).__name__}: {detail}")


def _looks_like_video_container(head: bytes) -> bool:
    """True if the first bytes carry the signature of a common video container.

    Used only to word an error: FFmpeg reports an unknown format and a damaged header
    with the same code (AVERROR_INVALIDDATA), but a file that starts like an MP4 and
    does not open is a damaged video (CorruptVideo), not something else (NotAVideo).
    """
    return (head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
            or head.startswith((b"\x1a\x45\xdf\xa3", b"FLV", b"OggS", b"GIF8",
                                b"\x00\x00\x01\xba", b"\x30\x26\xb2\x75"))
            or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
            or (len(head) > 188 and head[0] == 0x47 and head[188] == 0x47))


# Signatures of common files that are not videos -> what to call them in NotAVideo.
_NOT_VIDEO_SIGNATURES = (
    (lambda h: h.startswith(b"RIFF") and h[8:12] == b"WAVE", "an audio file (wav)"),
    (lambda h: h.startswith(b"fLaC"), "an audio file (flac)"),
    (lambda h: h.startswith(b"ID3"), "an audio file (mp3)"),
    (lambda h: len(h) > 1 and h[0] == 0xFF and h[1] & 0xF6 == 0xF0, "an audio file (aac)"),
    (lambda h: len(h) > 1 and h[0] == 0xFF and h[1] & 0xE0 == 0xE0, "an audio file (mp3)"),
    (lambda h: h.startswith((b"#!AMR", b"FORM")), "an audio file"),
    (lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"), "an image (png)"),
    (lambda h: h.startswith(b"\xff\xd8\xff"), "an image (jpeg)"),
    (lambda h: h.startswith(b"RIFF") and h[8:12] == b"WEBP", "an image (webp)"),
    (lambda h: h.startswith((b"II*\x00", b"MM\x00*")), "an image (tiff)"),
    (lambda h: h.startswith(b"BM") and h[6:10] == b"\x00" * 4, "an image (bmp)"),
    (lambda h: h.startswith(b"%PDF"), "a PDF document"),
    (lambda h: h.startswith((b"PK\x03\x04", b"PK\x05\x06")), "a ZIP archive"),
    (lambda h: h.startswith(b"\x1f\x8b"), "a gzip archive"),
    (lambda h: h.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"#EXTM3U"),
     "a playlist (m3u8); playlists are never opened"),
    (lambda h: h.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"ffconcat"),
     "an FFmpeg concat script; playlists are never opened"),
)


def _describe_not_a_video(head: bytes) -> str:
    """What a file that FFmpeg may not open as a video is, in plain words."""
    for matches, what in _NOT_VIDEO_SIGNATURES:
        if matches(head):
            return f"{what}, not a video"
    sample = head[:1024]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as e:  # a cut multi-byte character at the end is fine
        text = sample[:e.start].decode("utf-8") if e.start > len(sample) - 4 else None
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "a text file, not a video"
    return ("not a video in a container beam-i3d opens (" + ", ".join(ACCEPTED_FORMATS) + ")")


class _OpenVideo:
    """An open container, its video stream and what we know about it (a context manager)."""

    def __init__(self, uri: str, limits: DecodeLimits, decode_threads: int = 0):
        self.uri = uri
        self.limits = limits
        check_uri_scheme(uri)  # before the clock starts: the first imports Beam
        self.budget = limits.decode_timeout_seconds
        self.deadline = time.monotonic() + self.budget
        self.seeked = False  # whether the demuxer has been moved from the beginning
        self._raw = _open_bytes(uri, self.deadline, self.budget)
        try:
            self._open(decode_threads)
        except BaseException:
            self.close()
            raise

    def _open(self, decode_threads: int) -> None:
        import av

        uri = self.uri
        self.container = None
        reader = _DeadlineReader(self._raw, uri, self.deadline, self.budget)
        head = reader.read(4096)
        if not head:
            raise NotAVideo(uri, "the file is empty (0 bytes)")
        reader.seek(0)
        try:
            self.container = av.open(
                reader, options={"format_whitelist": ",".join(ACCEPTED_FORMATS)},
                buffer_size=1 << 16,
                metadata_errors="replace")  # tags that are not UTF-8 must not stop us
        except av.error.FFmpegError as e:
            if _looks_like_video_container(head):
                raise CorruptVideo(uri, "the container does not open: damaged or truncated "
                                        f"header ({e.strerror})") from None
            raise NotAVideo(uri, _describe_not_a_video(head)) from None
        container = self.container
        # A cover picture (MP4/Matroska "attached_pic") is a video stream of one still.
        videos = [s for s in container.streams.video
                  if not s.disposition & av.stream.Disposition.attached_pic]
        if not videos:
            kinds = sorted({s.type if s.type != "video" else "cover picture"
                            for s in container.streams})
            if not {"audio", "subtitle", "cover picture"} & set(kinds):
                # No streams at all, or only data streams: not an audio file but a video
                # container whose header (an MP4's moov, say) is damaged.
                found = f"only {', '.join(kinds)} streams" if kinds else "no streams"
                raise CorruptVideo(uri, f"the {container.format.name} container holds {found}: "
                                        "damaged header")
            raise NoVideoStream(uri, f"the {container.format.name} container has no video stream "
                                     f"({', '.join(kinds)})")
        stream = self.stream = videos[0]
        codec_context = stream.codec_context
        if codec_context is None or getattr(codec_context, "codec", None) is None:
            raise UnsupportedCodec(uri, f"no decoder for the video codec (tag {_codec_tag(stream)!r})")
        width, height = codec_context.width, codec_context.height
        if width * height > self.limits.max_pixels:
            raise VideoTooLarge(uri, f"{width}x{height} frames exceed the limit of "
                                     f"{self.limits.max_pixels} pixels")
        if width <= 0 or height <= 0:
            raise CorruptVideo(uri, f"the stream declares no frame size ({width}x{height})")
        sar = stream.sample_aspect_ratio or codec_context.sample_aspect_ratio
        sar = float(sar) if sar and sar > 0 else 1.0
        check_aspect_ratio(uri, width, height, sar, self.limits.max_aspect_ratio)
        self.time_base = stream.time_base or Fraction(1, 90000)
        # Time 0 of every clip: the video stream's start, else the container's, else 0.
        if stream.start_time is not None:
            self.origin_pts = stream.start_time
        elif container.start_time is not None:
            self.origin_pts = int(Fraction(container.start_time, 1_000_000) / self.time_base)
        else:
            self.origin_pts = 0
        self.declared_duration, self.exact_duration = _declared_duration(container, stream)
        if self.declared_duration is not None and self.declared_duration > self.limits.max_duration_seconds:
            raise VideoTooLong(uri, f"the video lasts {float(self.declared_duration):.1f} s, over the "
                                    f"limit of {self.limits.max_duration_seconds:g} s")
        # The decoder itself refuses frames over the pixel limit (a stream may change size).
        codec_context.options = {"max_pixels": str(self.limits.max_pixels)}
        codec_context.thread_type = "AUTO"
        codec_context.thread_count = decode_threads
        rate = stream.average_rate or stream.guessed_rate
        self.info = VideoInfo(
            uri=uri, format_name=container.format.name, codec=codec_context.name,
            pix_fmt=codec_context.pix_fmt, width=width, height=height,
            sample_aspect_ratio=sar,
            fps=float(rate) if rate else None,
            duration_sec=None if self.declared_duration is None else float(self.declared_duration))

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise DecodeTimeout(self.uri, f"decoding took longer than the {self.budget:g} s budget")

    def close(self) -> None:
        container = getattr(self, "container", None)
        if container is not None:
            container.close()
        self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _codec_tag(stream) -> str:
    try:
        return stream.codec_context.codec_tag
    except Exception:
        return "?"


def _declared_duration(container, stream) -> tuple[Fraction | None, bool]:
    """``(duration in seconds or None, whether it is exact)`` of the video stream.

    Exact: the per-stream duration of MP4/MOV (sum of sample durations) or Matroska's
    per-track DURATION tag. Otherwise the container's overall duration, which FFmpeg may
    have estimated from the bit rate (MPEG-TS): good enough for the duration limit, not
    for declaring a file truncated.
    """
    if stream.duration and stream.time_base and "mov" in container.format.name:
        return Fraction(stream.duration) * stream.time_base, True
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + Fraction(seconds), True
        except ValueError:
            pass
    if container.duration and container.duration > 0:
        return Fraction(container.duration, 1_000_000), False
    return None, False


def probe_video(uri: str, limits: DecodeLimits | None = None) -> VideoInfo:
    """Open ``uri`` and check it against ``limits`` without decoding a frame.

    Raises the VideoError subclasses of :func:`decode_clip` that the headers can tell:
    VideoNotFound, UnsupportedURI, StorageError, NotAVideo, NoVideoStream,
    UnsupportedCodec, CorruptVideo, VideoTooLarge, VideoTooLong, UnsupportedShape,
    DecodeTimeout.
    """
    with _OpenVideo(uri, limits or DecodeLimits()) as video:
        return video.info


def probe_duration(uri: str, limits: DecodeLimits | None = None) -> Fraction | None:
    """The video stream's declared duration in seconds (exact fraction), from the
    container's header without decoding a frame; None if it declares none. Raises what
    :func:`probe_video` raises."""
    with _OpenVideo(uri, limits or DecodeLimits()) as video:
        return video.declared_duration


# --- Decoding -----------------------------------------------------------------------


def decode_clip(uri: str, start_sec: float | None = None, end_sec: float | None = None, *,
                max_seconds: float | None = DEFAULT_MAX_SECONDS,
                limits: DecodeLimits | None = None, keep_gray: bool = False,
                decode_threads: int = 0) -> DecodedClip:
    """Decode ``[start_sec, end_sec)`` of the video at ``uri`` into 25-fps frames.

    ``start_sec`` defaults to 0 (the first frame), ``end_sec`` to the end of the video;
    at most ``max_seconds`` (None: no cap) are decoded. ``keep_gray`` also returns the
    whole resized grayscale frames (for flow). ``decode_threads``: FFmpeg decoder
    threads (0: FFmpeg's choice). See the module doc for the sampling rule.

    Raises (all :class:`~beam_i3d.errors.VideoError`): VideoNotFound, UnsupportedURI,
    StorageError (credentials, network, storage service; transient), NotAVideo,
    NoVideoStream (audio only), UnsupportedCodec, CorruptVideo (damaged or truncated
    data), VideoTooLarge, VideoTooLong, UnsupportedShape (aspect ratio), DecodeTimeout,
    EmptyClip (empty or inverted range, or a range after the end of the video or past
    ``limits.max_duration_seconds``).
    """
    limits = limits or DecodeLimits()
    start, stop = clip_time_range(uri, start_sec, end_sec, max_seconds)
    with _OpenVideo(uri, limits, decode_threads) as video:
        if video.exact_duration and start >= video.declared_duration:
            raise EmptyClip(uri, f"the range starts at {float(start):g} s, after the end of the "
                                 f"video ({float(video.declared_duration):.3f} s)")
        if start >= limits.max_duration_seconds:
            # Also keeps seek offsets in FFmpeg's 64-bit range (a start of 1e15 s).
            raise EmptyClip(uri, f"the range starts at {float(start):g} s, after the end of any "
                                 f"video accepted (at most {limits.max_duration_seconds:g} s long)")
        return _decode(video, start, stop, keep_gray)


def _decode(video: _OpenVideo, start: Fraction, stop: Fraction | None,
            keep_gray: bool) -> DecodedClip:
    import av
    import cv2

    uri = video.uri
    seek_targets = sorted({start - back for back in _SEEK_BACKOFFS if start - back > 0}, reverse=True)
    attempts: list[Fraction | None] = [*seek_targets, None]  # None: from the beginning
    for attempt, target in enumerate(attempts):
        try:
            result = _decode_from(video, start, stop, keep_gray, target,
                                  retry_if_late=attempt < len(attempts) - 1)
        except VideoError:
            raise
        except av.error.DecoderNotFoundError as e:
            raise UnsupportedCodec(uri, f"no decoder for codec {video.info.codec}: {e}") from None
        except av.error.FFmpegError as e:
            raise CorruptVideo(uri, f"decoding failed: {_one_line(e)}") from None
        except (ValueError, OverflowError, ZeroDivisionError, cv2.error) as e:
            # What hostile streams make PyAV, NumPy or OpenCV raise (timestamps out of
            # range, a pixel format swscale cannot convert, cv2.error...).
            raise CorruptVideo(uri, f"decoding failed: {type(e).__name__}: {_one_line(e)}") from None
        if result is not None:
            return result
    raise AssertionError("unreachable: the last attempt decodes from the beginning")


def _decode_from(video: _OpenVideo, start: Fraction, stop: Fraction | None, keep_gray: bool,
                 seek_target: Fraction | None, retry_if_late: bool) -> DecodedClip | None:
    container, stream, tb, uri = video.container, video.stream, video.time_base, video.uri
    origin_pts = video.origin_pts
    if seek_target is not None:
        container.seek(int(origin_pts + math.floor(seek_target / tb)), stream=stream,
                       backward=True, any_frame=False)
    elif video.seeked:
        container.seek(origin_pts, stream=stream, backward=True, any_frame=False)
    video.seeked = video.seeked or seek_target is not None

    sampler = FrameSampler(start, stop)
    rgb, gray, source_times = [], [], []
    sizes: dict[tuple[int, int], tuple[int, int]] = {}
    orientation: Orientation | None = None
    previous = previous_time = None
    last_interval: Fraction | None = None

    def emit(frame, frame_time: Fraction, count: int) -> None:
        nonlocal orientation
        if orientation is None:
            orientation = frame_orientation(frame)
        key = (frame.width, frame.height)
        if key not in sizes:
            if frame.width * frame.height > video.limits.max_pixels:
                raise VideoTooLarge(uri, f"a {frame.width}x{frame.height} frame exceeds the limit "
                                         f"of {video.limits.max_pixels} pixels")
            if frame.width <= 0 or frame.height <= 0:
                raise CorruptVideo(uri, f"a frame of size {frame.width}x{frame.height}")
            # The stream may change size mid-way: every new size meets the shape limit.
            check_aspect_ratio(uri, frame.width, frame.height, video.info.sample_aspect_ratio,
                               video.limits.max_aspect_ratio)
            sizes[key] = resized_size(frame.width, frame.height, video.info.sample_aspect_ratio)
        if keep_gray:
            import cv2

            full = frame_to_rgb(frame, sizes[key], orientation, crop=False)
            crop = np.ascontiguousarray(center_crop(full))
            luma = cv2.cvtColor(full, cv2.COLOR_RGB2GRAY)
        else:
            crop, luma = frame_to_rgb(frame, sizes[key], orientation, crop=True), None
        for _ in range(count):
            rgb.append(crop)
            gray.append(luma)
            source_times.append(float(frame_time))

    for frame in _frames(video):
        if frame.pts is not None:
            frame_time = Fraction(frame.pts - origin_pts) * tb
        else:  # no timestamp (raw streams): one frame interval after the previous one
            frame_time = (previous_time + (last_interval or _default_interval(video))
                          if previous_time is not None else Fraction(0))
        if previous is None and seek_target is not None and retry_if_late and frame_time > start:
            return None  # the seek landed after the start: the caller seeks further back
        if frame_time > video.limits.max_duration_seconds:
            raise VideoTooLong(uri, f"the video runs past the limit of "
                                    f"{video.limits.max_duration_seconds:g} s")
        if previous_time is not None and frame_time < previous_time:
            frame_time = previous_time  # broken timestamps: never go back in time
        count = sampler.push(frame_time)
        if count:
            emit(previous, previous_time, count)
        if previous_time is not None and frame_time > previous_time:
            last_interval = frame_time - previous_time
        previous, previous_time = frame, frame_time
        if sampler.done:
            break
    else:
        if previous is None:  # not one frame decoded
            if seek_target is not None and retry_if_late:
                return None  # maybe the seek went past the last keyframe: seek further back
            raise CorruptVideo(uri, "no frame could be decoded from the video stream")
        duration = (Fraction(previous.duration) * tb if previous.duration
                    else last_interval or _default_interval(video))
        end_time = previous_time + duration
        count = sampler.finish(end_time)
        if count:
            emit(previous, previous_time, count)
        if (not sampler.done and video.exact_duration
                and end_time < video.declared_duration - _TRUNCATION_TOLERANCE):
            raise CorruptVideo(uri, f"the video stream ends at {float(end_time):.3f} s but the "
                                    f"container declares {float(video.declared_duration):.3f} s: "
                                    "truncated file")
        if not rgb:
            raise EmptyClip(uri, f"no frames in the range starting at {float(start):g} s; the "
                                 f"video ends at {float(end_time):.3f} s")
    num = len(rgb)
    times = np.array([float(sampler.time_of(k)) for k in range(num)])
    return DecodedClip(
        rgb=np.stack(rgb),
        gray=np.stack(gray) if keep_gray else None,
        times=times,
        source_times=np.array(source_times),
        start_sec=float(start),
        end_sec=float(sampler.time_of(num)),
        info=dataclasses.replace(video.info, rotation=orientation.rotation if orientation else 0),
    )


def _default_interval(video: _OpenVideo) -> Fraction:
    rate = video.stream.average_rate or video.stream.guessed_rate
    return 1 / Fraction(rate) if rate else Fraction(1, SAMPLE_FPS)


def _frames(video: _OpenVideo) -> Iterator:
    """Decoded frames of the video stream, checking the time budget at every packet."""
    packets = video.container.demux(video.stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except IndexError:
            # PyAV indexes its stream list with the packet's stream, and a damaged MPEG-TS
            # can make FFmpeg add a stream after opening: PyAV then has no such index.
            raise CorruptVideo(video.uri, "a packet of a stream that was not in the header "
                                          "(damaged file)") from None
        video.check_deadline()
        yield from packet.decode()
