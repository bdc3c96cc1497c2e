"""The inputs of ``beam-i3d fvd``: reading clips losslessly and the protocols' preprocessing.

A manifest row's ``video_uri`` names one of

* a ``.npy`` file: a uint8 array ``[T, H, W, 3]`` (as generators save samples);
* a ``.npz`` file holding exactly one such array (any key);
* a directory of frames: the ``.png`` / ``.jpg`` / ``.jpeg`` files in it, sorted by name
  (a trailing ``/`` on the URI is optional for local directories, needed for remote);
* anything else: a video file, decoded with PyAV (the first frames as the decoder
  outputs them, i.e. in presentation order; upright; converted to RGB by FFmpeg's swscale).

Arrays and PNG frames are read exactly as stored: nothing is re-encoded anywhere. Only
the frames the protocol uses are decoded (a video whose frames must be counted first,
see :func:`count_frames`, is decoded twice). The job runs :func:`count_frames` and
:func:`read_protocol_clip` in the decode pool's child processes
(:meth:`beam_i3d.media.decode_pool.DecodePool.submit_call`), as ``score`` decodes its
clips: every input here is untrusted media (FFmpeg, libpng, libjpeg, zip).

Which frames (:class:`ClipSpec`): ``frames`` N frames, every ``subsample``-th (K), from
frame ``start`` on: frames ``start, start + K, ..., start + (N-1) K``; a clip needs at
least ``N K`` frames (StyleGAN-V's rule, also for K = 1). ``start`` is 0 (``first``) or,
for ``random``, drawn uniformly from ``0 .. L - N K + K - 1`` (L the clip's frame count:
StyleGAN-V's ``random.randint`` bounds) by a hash of the seed and the row key
(:func:`clip_start`), so a clip's frames do not depend on workers or order.

The resizes (each to 224x224, no crop unless named, aspect ratio not kept):

* ``tf1_bilinear`` (protocol ``original``, google-research ``frechet_video_distance``'s
  ``preprocess``): TF1's legacy bilinear resize (``tf.compat.v1.image.resize_bilinear``,
  ``align_corners=False``, ``half_pixel_centers=False``: source coordinate ``dst * in /
  out``, no half-pixel offset, no antialiasing), in float, then ``2 x / 255 - 1``.
  :func:`resize_bilinear_tf1` is that op in numpy, float32 as TensorFlow computes it.
* ``torch_linear`` (protocol ``styleganv``): ``x / 255 * 2 - 1`` in float32, then
  PyTorch's ``F.interpolate(..., mode="trilinear", align_corners=False)`` to ``(T, 224,
  224)`` (time untouched, so the same as ``bilinear`` per frame at 224): half-pixel
  centres (source ``(dst + 0.5) in / out - 0.5``, clamped at 0), no antialiasing.
  :func:`resize_linear_torch` is that op in numpy, bit for bit as PyTorch 2.13's CPU
  kernel computes it (its fused multiply-adds included).
* ``kinetics_crop`` (only with ``--nonstandard``): the scoring recipe's RGB crop
  (shorter side to 256 with OpenCV's bilinear on uint8, centre 224x224 crop), then
  ``x / 255 * 2 - 1``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os

import numpy as np

from beam_i3d import fileio
from beam_i3d.errors import (CorruptVideo, NotAVideo, TooFewFrames, UnsupportedFrames,
                             VideoNotFound)

FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")
ARRAY_EXTENSIONS = (".npy", ".npz")
PROTOCOLS = ("original", "styleganv")
RESIZES = ("tf1_bilinear", "torch_linear", "kinetics_crop")
PROTOCOL_RESIZE = {"original": "tf1_bilinear", "styleganv": "torch_linear"}
STARTS = ("first", "random")
DEFAULT_FRAMES = 16
SIZE = 224


# --- The resize ----------------------------------------------------------------------------


def _legacy_axis(in_size: int, out_size: int):
    """Source indices and weights of TF1's legacy bilinear resize along one axis."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.arange(out_size, dtype=np.float32) * scale
    lower_f = np.floor(src)
    lower = lower_f.astype(np.int64)
    upper = np.minimum(np.ceil(src).astype(np.int64), in_size - 1)
    return lower, upper, (src - lower_f).astype(np.float32)


def resize_bilinear_tf1(images: np.ndarray, height: int = SIZE, width: int = SIZE
                        ) -> np.ndarray:
    """``tf.compat.v1.image.resize_bilinear(images, (height, width))`` (align_corners and
    half_pixel_centers False) in numpy: ``[..., H, W, C]`` -> float32 ``[..., height,
    width, C]``, with TensorFlow's float32 arithmetic and order of operations."""
    x = np.asarray(images)
    y0, y1, wy = _legacy_axis(x.shape[-3], height)
    x0, x1, wx = _legacy_axis(x.shape[-2], width)
    wx = wx[:, None]

    def along_width(rows):  # the rows' 2-tap interpolation along the width, in float32
        left = np.take(rows, x0, axis=-2).astype(np.float32)
        right = np.take(rows, x1, axis=-2).astype(np.float32)
        return left + (right - left) * wx

    # Gather the source rows and columns before converting, so only 224x224 pixels (not
    # the whole frame) go to float32; the arithmetic is TensorFlow's, in its order.
    top = along_width(np.take(x, y0, axis=-3))
    bottom = along_width(np.take(x, y1, axis=-3))
    return top + (bottom - top) * wy[:, None, None]


def original_preprocess(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 224, 224, 3]`` in [-1, 1], as the reference
    FVD code: legacy bilinear resize in float, then ``2 x / 255 - 1``."""
    resized = resize_bilinear_tf1(frames)
    return (np.float32(2.0) * resized / np.float32(255.0) - np.float32(1.0)).astype(np.float32)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a * b + c`` rounded once to float32, as a fused multiply-add: the product of two
    float32 values is exact in float64, so only the sum rounds before the float32
    rounding (a double rounding that agreed with PyTorch on every value tested)."""
    return (a.astype(np.float64) * b + c).astype(np.float32)


def _torch_linear_axis(in_size: int, out_size: int):
    """Source indices and weights of PyTorch's linear interpolation along one axis
    (``align_corners=False``, no antialiasing), as its CPU kernel computes them: the
    ratio ``in / out`` in float32, the source coordinate ``ratio * (dst + 0.5) - 0.5`` as
    one fused multiply-add, clamped at 0; the upper tap clamped at the edge."""
    if in_size == out_size:  # PyTorch copies: weights (1, 0)
        index = np.arange(out_size)
        return index, index, np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
    ratio = np.float64(np.float32(in_size) / np.float32(out_size))
    src = (ratio * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0))
    lower = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    upper = lower + (lower < in_size - 1)
    w_upper = np.clip(src - lower.astype(np.float32), 0, 1).astype(np.float32)
    return lower, upper, (np.float32(1) - w_upper).astype(np.float32), w_upper


def resize_linear_torch(images: np.ndarray, height: int = SIZE, width: int = SIZE
                        ) -> np.ndarray:
    """``torch.nn.functional.interpolate(x, size=(T, height, width), mode="trilinear",
    align_corners=False)`` of ``x`` ``[1, C, T, H, W]`` (time untouched) in numpy, on
    ``[..., H, W, C]`` -> float32 ``[..., height, width, C]``: half-pixel centres, no
    antialiasing, PyTorch's float32 arithmetic in its order (the width taps, then the
    height taps, each as ``fma(x0, w0, x1 * w1)``; the time taps are (1, 0), exact)."""
    x = np.asarray(images, np.float32)
    y0, y1, wy0, wy1 = _torch_linear_axis(x.shape[-3], height)
    x0, x1, wx0, wx1 = _torch_linear_axis(x.shape[-2], width)
    wx0, wx1 = wx0[:, None], wx1[:, None]

    def along_width(rows):
        return _fma(np.take(rows, x0, axis=-2), wx0, np.take(rows, x1, axis=-2) * wx1)

    top = along_width(np.take(x, y0, axis=-3))
    bottom = along_width(np.take(x, y1, axis=-3))
    return _fma(top, wy0[:, None, None], bottom * wy1[:, None, None])


def unit_range(frames: np.ndarray) -> np.ndarray:
    """uint8 -> float32 ``x / 255 * 2 - 1`` (in that order, in float32: PyTorch's
    ``x / 255 * 2 - 1`` on a uint8 tensor gives the same bits)."""
    x = np.asarray(frames).astype(np.float32)
    return (x / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)).astype(np.float32)


def styleganv_preprocess(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 224, 224, 3]``: ``x / 255 * 2 - 1`` (the
    detector's ``rescale=True``), then PyTorch's linear resize (see module doc)."""
    return resize_linear_torch(unit_range(frames))


def kinetics_preprocess(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 224, 224, 3]`` by the scoring recipe's
    crop: each frame resized so that its shorter side is 256 (OpenCV's bilinear on uint8,
    as ``score`` resizes decoded frames), the centre 224x224, then ``x / 255 * 2 - 1``.
    No frame-rate change: the frames are taken as stored."""
    import cv2

    from beam_i3d.media.video_pixels import center_crop, resized_size

    frames = np.asarray(frames)
    width, height = resized_size(frames.shape[2], frames.shape[1])
    out = [center_crop(cv2.resize(np.ascontiguousarray(f), (width, height),
                                  interpolation=cv2.INTER_LINEAR)) for f in frames]
    return unit_range(np.stack(out))


def preprocess(frames: np.ndarray, resize: str) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> the model's float32 ``[T, 224, 224, 3]`` by ``resize``."""
    if resize == "tf1_bilinear":
        return original_preprocess(frames)
    if resize == "torch_linear":
        return styleganv_preprocess(frames)
    if resize == "kinetics_crop":
        return kinetics_preprocess(frames)
    raise ValueError(f"unknown resize {resize!r}; expected one of {RESIZES}")


# --- Which frames --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Which frames of a clip a side takes and how they are resized (see module doc)."""

    frames: int = DEFAULT_FRAMES
    subsample: int = 1
    start: str = "first"  # "first" (frame 0) or "random" (seeded by seed and row key)
    seed: int = 0
    resize: str = "tf1_bilinear"

    def __post_init__(self):
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}")
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {self.resize!r}")
        if self.frames < 1 or self.subsample < 1:
            raise ValueError("frames and subsample must be at least 1")

    @property
    def needed(self) -> int:
        """Frames a clip must have: ``frames * subsample`` (StyleGAN-V's
        ``discard_short_videos`` rule, ``load_n_consecutive * subsample_factor``)."""
        return self.frames * self.subsample

    def describe_start(self) -> str:
        return "first" if self.start == "first" else f"random (seed {self.seed})"


def clip_start(spec: ClipSpec, total: int | None, key: str) -> int:
    """The first frame a clip takes: 0 for ``first``; for ``random``, uniform over
    ``0 .. total - needed + subsample - 1`` (both ends included, StyleGAN-V's
    ``random.randint(0, L - n*K + K - 1)``), drawn from SHA-256 of the seed and the
    row key: the same clip gets the same start in any run, worker or order."""
    if spec.start == "first":
        return 0
    if total is None:
        raise ValueError("a random start needs the clip's frame count")
    choices = total - spec.needed + spec.subsample  # the number of starts allowed
    if choices < 1:
        raise ValueError(f"{total} frames cannot give {spec.needed}")
    digest = hashlib.sha256(f"{spec.seed}\0{key}".encode("utf-8")).digest()
    return int.from_bytes(digest, "big") % choices


def frame_indexes(spec: ClipSpec, start: int) -> np.ndarray:
    """``start, start + K, ..., start + (N-1) K``."""
    return start + spec.subsample * np.arange(spec.frames)


# --- Reading clips -------------------------------------------------------------------------


def input_kind(uri: str) -> str:
    """``array``, ``frames`` or ``video`` (see module doc)."""
    lower = uri.lower().rstrip("/")
    if lower.endswith(ARRAY_EXTENSIONS):
        return "array"
    if uri.endswith("/"):
        return "frames"
    if fileio.is_local(uri) and os.path.isdir(fileio.local_path(uri)):
        return "frames"
    return "video"


def read_frames(uri: str, num_frames: int, limits=None) -> np.ndarray:
    """The first ``num_frames`` frames of the clip at ``uri`` as uint8 ``[N, H, W, 3]``;
    raises a VideoError (TooFewFrames when the clip is shorter)."""
    return read_frames_at(uri, np.arange(num_frames), limits)


def read_frames_at(uri: str, indexes, limits=None, needed: int | None = None
                   ) -> np.ndarray:
    """Frames ``indexes`` (increasing) of the clip at ``uri`` as uint8 ``[len, H, W, 3]``;
    TooFewFrames when the clip has fewer than ``needed`` frames (default: up to the last
    index). Only the frames up to the last index are decoded."""
    indexes = np.asarray(indexes, np.int64)
    needed = int(indexes[-1]) + 1 if needed is None else max(needed, int(indexes[-1]) + 1)
    kind = input_kind(uri)
    if kind == "array":
        frames = _read_array(uri)
        available = frames.shape[0]
    elif kind == "frames":
        paths = _list_frame_files(uri)
        if not paths:
            raise VideoNotFound(uri, f"no {'/'.join(FRAME_EXTENSIONS)} frames in the directory")
        available = len(paths)
        frames = None if available < needed else _read_frame_files(uri, [paths[i] for i in indexes])
    else:
        frames = _read_video(uri, needed, limits)
        available = frames.shape[0]
    if available < needed:
        raise TooFewFrames(uri, f"has {available} frames; the protocol takes {needed}")
    return frames if kind == "frames" else frames[indexes]


def count_frames(uri: str, limits=None, at_most: int | None = None) -> int:
    """The clip's frame count (at most ``at_most`` when given: a video is decoded only
    that far): an array's first dimension (from its header), a directory's frame files
    (not decoded), a video's decoded frames. Raises a VideoError for what cannot be read."""
    kind = input_kind(uri)
    if kind == "array":
        count = _array_length(uri)
    elif kind == "frames":
        paths = _list_frame_files(uri)
        if not paths:
            raise VideoNotFound(uri, f"no {'/'.join(FRAME_EXTENSIONS)} frames in the directory")
        count = len(paths)
    else:
        count = _count_video_frames(uri, limits, at_most)
    return count if at_most is None else min(count, at_most)


def _array_length(uri: str) -> int:
    """T of a ``.npy`` / ``.npz`` ``[T, H, W, 3]`` uint8 array, from its header only (a
    ``.npy``'s first bytes; an ``.npz``'s zip directory and its member's first bytes)."""
    try:
        with _open_stream(uri) as f:
            if uri.lower().rstrip("/").endswith(".npz"):
                import zipfile

                with zipfile.ZipFile(f) as z:
                    names = [n for n in z.namelist() if n.endswith(".npy")]
                    if len(names) != 1:
                        raise UnsupportedFrames(uri, f"the .npz holds {len(names)} arrays; "
                                                     "expected one")
                    with z.open(names[0]) as member:
                        shape, dtype = _npy_header(member)
            else:
                shape, dtype = _npy_header(f)
    except (UnsupportedFrames, VideoNotFound):
        raise
    except Exception as e:  # noqa: BLE001: not an array file
        raise NotAVideo(uri, f"not a numpy array file: {type(e).__name__}: {e}") from None
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or min(shape[1:3]) < 1:
        raise UnsupportedFrames(uri, f"expected a uint8 array [T, H, W, 3] (RGB), got "
                                     f"{dtype} {list(shape)}")
    return int(shape[0])


def _open_stream(uri: str):
    """A seekable binary file object for ``uri`` (local, or any Beam FileSystems URI)."""
    if fileio.is_local(uri):
        path = fileio.local_path(uri)
        if not os.path.isfile(path):
            raise VideoNotFound(uri, "no such file")
        return open(path, "rb")
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    try:
        return FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as e:  # noqa: BLE001
        from beam_i3d.media.video import storage_error

        raise storage_error(uri, e) from e


def _npy_header(f):
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return shape, dtype


def _count_video_frames(uri: str, limits=None, at_most: int | None = None) -> int:
    import av

    from beam_i3d.media.recipe import DecodeLimits
    from beam_i3d.media.video import _OpenVideo, resource_error

    count = 0
    with _OpenVideo(uri, limits or DecodeLimits()) as video:
        try:
            for _ in video.container.decode(video.stream):
                video.check_deadline()
                count += 1
                if at_most is not None and count >= at_most:
                    break
        except av.error.FFmpegError as e:
            raise (resource_error(uri, e, f"decoding after {count} frames")
                   or CorruptVideo(uri, f"decoding failed after {count} frames: "
                                        f"{e.strerror}")) from None
    return count


def _read_bytes(uri: str) -> bytes:
    if fileio.is_local(uri):
        path = fileio.local_path(uri)
        if not os.path.isfile(path):
            raise VideoNotFound(uri, "no such file")
        with open(path, "rb") as f:
            return f.read()
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    try:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            return f.read()
    except Exception as e:  # noqa: BLE001
        from beam_i3d.media.video import storage_error

        raise storage_error(uri, e) from e


def check_frames(uri: str, frames: np.ndarray) -> np.ndarray:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise UnsupportedFrames(uri, f"expected a uint8 array [T, H, W, 3] (RGB), got "
                                     f"{frames.dtype} {list(frames.shape)}")
    if min(frames.shape[1:3]) < 1:
        raise UnsupportedFrames(uri, f"empty frames {list(frames.shape)}")
    return frames


def _read_array(uri: str) -> np.ndarray:
    data = _read_bytes(uri)
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # noqa: BLE001: not an array file
        raise NotAVideo(uri, f"not a numpy array file: {type(e).__name__}: {e}") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if len(loaded.files) != 1:
                raise UnsupportedFrames(uri, f"the .npz holds {len(loaded.files)} arrays "
                                             f"({', '.join(loaded.files[:5])}); expected one")
            loaded = loaded[loaded.files[0]]
    return check_frames(uri, np.asarray(loaded))


def _list_frame_files(uri: str) -> list[str]:
    if fileio.is_local(uri):
        directory = fileio.local_path(uri)
        if not os.path.isdir(directory):
            raise VideoNotFound(uri, "no such directory")
        names = [n for n in os.listdir(directory) if n.lower().endswith(FRAME_EXTENSIONS)]
        return [os.path.join(directory, n) for n in sorted(names)]
    from apache_beam.io.filesystems import FileSystems

    base = uri.rstrip("/") + "/"
    matched = FileSystems.match([base + "*"])[0].metadata_list
    paths = [m.path for m in matched
             if m.path.lower().endswith(FRAME_EXTENSIONS) and "/" not in m.path[len(base):]]
    return sorted(paths, key=lambda p: p[len(base):])


def _read_frame_files(uri: str, paths: list[str]) -> np.ndarray:
    import cv2

    frames = []
    for path in paths:
        buffer = np.frombuffer(_read_bytes(path), np.uint8)
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)  # 8-bit BGR, alpha dropped
        if image is None:
            raise CorruptVideo(uri, f"{os.path.basename(path)} is not a readable image")
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if len({f.shape for f in frames}) > 1:
        raise UnsupportedFrames(uri, "the frames differ in size: "
                                + ", ".join(sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})))
    return check_frames(uri, np.stack(frames))


def _read_video(uri: str, num_frames: int, limits=None) -> np.ndarray:
    import av

    from beam_i3d.media.recipe import DecodeLimits
    from beam_i3d.media.video import _OpenVideo, frame_orientation, resource_error
    from beam_i3d.media.video_pixels import SWSCALE_THREADS

    frames = []
    with _OpenVideo(uri, limits or DecodeLimits()) as video:
        try:
            for frame in video.container.decode(video.stream):
                video.check_deadline()
                rgb = frame.to_ndarray(format="rgb24", threads=SWSCALE_THREADS)
                frames.append(np.ascontiguousarray(frame_orientation(frame).apply(rgb)))
                if len(frames) >= num_frames:
                    break
        except av.error.FFmpegError as e:
            raise (resource_error(uri, e, f"decoding after {len(frames)} frames")
                   or CorruptVideo(uri, f"decoding failed after {len(frames)} frames: "
                                        f"{e.strerror}")) from None
    if not frames:
        raise TooFewFrames(uri, "has no frames")
    return np.stack(frames)


def read_clip(uri: str, spec: ClipSpec, limits=None, total: int | None = None,
              key: str = "") -> tuple[np.ndarray, int]:
    """The model's input for one clip: float32 ``[N, 224, 224, 3]`` and the first frame
    taken. ``total`` is the clip's frame count when already known (a random start needs
    it; it is counted here otherwise); ``key`` (the row key) seeds a random start."""
    if spec.start == "random" and total is None:
        total = count_frames(uri, limits)
    if total is not None and total < spec.needed:
        raise TooFewFrames(uri, f"has {total} frames; the protocol takes {spec.needed} "
                                f"({spec.frames} every {spec.subsample})")
    start = clip_start(spec, total, key)
    frames = read_frames_at(uri, frame_indexes(spec, start), limits,
                            needed=None if start else spec.needed)
    return preprocess(frames, spec.resize), start


@dataclasses.dataclass
class ProtocolClip:
    """One clip as an ``fvd`` side takes it: ``rgb`` float32 ``[N, 224, 224, 3]`` in
    [-1, 1] (the model's input), ``start_frame`` the first frame taken."""

    rgb: np.ndarray
    start_frame: int


def read_protocol_clip(uri: str, limits, spec: ClipSpec, total: int | None = None,
                       key: str = "") -> ProtocolClip:
    """:func:`read_clip` as a decode-pool task (``function(uri, limits, *args)``)."""
    rgb, start = read_clip(uri, spec, limits, total=total, key=key)
    return ProtocolClip(rgb, start)
