"""The inputs of ``beam-i3d fvd``: reading clips losslessly and the protocols' preprocessing.

A manifest row's ``video_uri`` names one of

* a ``.npy`` file: a uint8 array ``[T, H, W, 3]`` (as generators save samples);
* a ``.npz`` file holding exactly one such array (any key);
* a directory of frames: the ``.png`` / ``.jpg`` / ``.jpeg`` files in it, sorted by name
  (a trailing ``/`` on the URI is optional for local directories, needed for remote);
* anything else: a video file, decoded with PyAV (the first frames as the decoder
  outputs them, i.e. in presentation order; upright; converted to RGB by FFmpeg's swscale).

Arrays and PNG frames are read exactly as stored: nothing is re-encoded anywhere. Only
the frames the protocol uses are decoded.

The ``original`` protocol (google-research ``frechet_video_distance``'s
``preprocess``): the first N frames, no change of frame rate, each frame resized
directly to 224x224 with TF1's legacy bilinear resize (``tf.compat.v1.image.
resize_bilinear``, ``align_corners=False``, ``half_pixel_centers=False``: source
coordinate ``dst * in / out``, no half-pixel offset, no antialiasing; no crop, the aspect
ratio is not kept), in float (not rounded back to uint8), then ``2 x / 255 - 1``.
:func:`resize_bilinear_tf1` is that op in numpy, float32 as TensorFlow computes it.
"""

from __future__ import annotations

import io
import os

import numpy as np

from beam_i3d import fileio
from beam_i3d.errors import (CorruptVideo, NotAVideo, TooFewFrames, UnsupportedFrames,
                             VideoNotFound)

FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")
ARRAY_EXTENSIONS = (".npy", ".npz")
PROTOCOLS = ("original",)
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
    kind = input_kind(uri)
    if kind == "array":
        frames = _read_array(uri)
    elif kind == "frames":
        frames = _read_frame_directory(uri, num_frames)
    else:
        frames = _read_video(uri, num_frames, limits)
    if frames.shape[0] < num_frames:
        raise TooFewFrames(uri, f"has {frames.shape[0]} frames; the protocol takes the "
                                f"first {num_frames}")
    return frames[:num_frames]


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


def _read_frame_directory(uri: str, num_frames: int) -> np.ndarray:
    import cv2

    paths = _list_frame_files(uri)
    if not paths:
        raise VideoNotFound(uri, f"no {'/'.join(FRAME_EXTENSIONS)} frames in the directory")
    frames = []
    for path in paths[:num_frames]:
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
    from beam_i3d.media.video import _OpenVideo, frame_orientation

    frames = []
    with _OpenVideo(uri, limits or DecodeLimits()) as video:
        try:
            for frame in video.container.decode(video.stream):
                video.check_deadline()
                rgb = frame.to_ndarray(format="rgb24")
                frames.append(np.ascontiguousarray(frame_orientation(frame).apply(rgb)))
                if len(frames) >= num_frames:
                    break
        except av.error.FFmpegError as e:
            raise CorruptVideo(uri, f"decoding failed after {len(frames)} frames: "
                                    f"{e.strerror}") from None
    if not frames:
        raise TooFewFrames(uri, "has no frames")
    return np.stack(frames)


def read_clip(uri: str, protocol: str, num_frames: int, limits=None) -> np.ndarray:
    """The model's input for one clip under ``protocol``: float32 ``[N, 224, 224, 3]``."""
    if protocol != "original":
        raise ValueError(f"unknown protocol {protocol!r}")
    return original_preprocess(read_frames(uri, num_frames, limits))
