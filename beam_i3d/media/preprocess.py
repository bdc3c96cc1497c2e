"""A clip of a video -> the RGB and flow tensors I3D scores, by the release's recipe.

:func:`preprocess_clip` is the whole recipe as one pure function (no Beam): decode and
sample at 25 fps (:mod:`beam_i3d.media.video`), RGB centre crops as uint8, and, only when the
flow stream is asked for, TV-L1 flow (:mod:`beam_i3d.media.flow`) quantised to uint8 the way
the release's authors did (kinetics-i3d issue #24). Both streams stay uint8 until the
model, whose ``serving_uint8`` path maps them to [-1, 1] as ``x / 255 * 2 - 1``.

How the streams line up: the clip's T frames give T-1 flow fields; ``flow[k]`` is the
motion from ``rgb[k]`` to ``rgb[k+1]``, so the flow clip covers the same frames, one step
shorter, and its field k belongs to output time ``start + k/25``. Clips shorter than the
network's minimum of 9 steps are looped cyclically (frames 0, 1, ..., T-1, 0, 1, ...)
up to 9, each stream over its own real steps (RGB over its T frames, flow over its T-1
fields); ``num_frames`` keeps the true T. A single-frame clip has no motion: its flow is
one field of zeros.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from beam_i3d.media.flow import DEFAULT_FLOW_BACKEND
from beam_i3d.media.recipe import DEFAULT_MAX_SECONDS, MIN_FRAMES, STREAMS, DecodeLimits
from beam_i3d.media.video import DecodedClip, center_crop, decode_clip

__all__ = ["ClipTensors", "DecodeLimits", "STREAMS", "check_streams", "decode_for_streams",
           "finish_clip", "loop_to_length", "preprocess_clip", "uint8_to_unit_range"]

@dataclasses.dataclass
class ClipTensors:
    """The model's inputs for one clip, and where they came from.

    ``rgb``: ``[T,224,224,3]`` uint8 (None if not asked for); ``flow``: ``[T_f,224,224,2]``
    uint8 quantised levels, or float32 in [-1, 1] when ``flow_quantized`` is False (None
    if not asked for); T, T_f >= 9 after looping. Made with ``crops`` five or ten, both
    hold whole resized frames instead, ``[T,H,W,3]`` and ``[T_f,H,W,C]``, from which
    :func:`beam_i3d.media.crops.crop_stream` cuts each crop (see
    :mod:`beam_i3d.media.crops`). ``num_frames``: real 25-fps frames
    decoded, before looping (``num_flow_fields = num_frames - 1`` real flow fields, at
    least 1). ``start_sec``/``end_sec``: the range covered, ``end_sec = start_sec +
    num_frames / 25``; ``range_end_sec``: where the range scored really ends (see
    :class:`~beam_i3d.media.video.DecodedClip`; None: not known). ``source_*``: the video as its container describes it (coded
    size, average frame rate, declared duration, codec); ``rotation``: degrees
    counter-clockwise the frames were turned to be upright.
    """

    rgb: np.ndarray | None
    flow: np.ndarray | None
    num_frames: int
    start_sec: float = 0.0
    end_sec: float = 0.0
    source_width: int = 0
    source_height: int = 0
    source_fps: float | None = None
    source_duration_sec: float | None = None
    source_codec: str = ""
    rotation: int = 0
    flow_quantized: bool | None = None  # None when there is no flow stream
    flow_backend: str | None = None
    range_end_sec: float | None = None

    @property
    def num_flow_fields(self) -> int:
        return max(1, self.num_frames - 1)

    def metadata(self) -> dict[str, str]:
        """The scalar fields as strings (for output metadata)."""
        return {f.name: "" if getattr(self, f.name) is None else str(getattr(self, f.name))
                for f in dataclasses.fields(self) if f.name not in STREAMS}


def check_streams(streams: Sequence[str], flow_backend: str = DEFAULT_FLOW_BACKEND, *,
                  load_backend: bool = True) -> tuple[str, ...]:
    """``streams`` as a tuple, checked: a non-empty subset of ("rgb", "flow"), and, when
    "flow" is in it, ``flow_backend`` a registered name (``load_backend``: also import
    it, which for ``tf`` imports TensorFlow). Raises ValueError / UnknownFlowBackend."""
    from beam_i3d.media import flow as flow_ops

    streams = tuple(streams)
    if not streams or set(streams) - set(STREAMS):
        raise ValueError(f"streams must be a non-empty subset of {STREAMS}, got {list(streams)}")
    if "flow" in streams:
        if load_backend:
            flow_ops.get_flow_backend(flow_backend)  # fail on a bad name before decoding
        elif flow_backend not in flow_ops.flow_backends():
            raise flow_ops.UnknownFlowBackend(
                f"unknown flow backend {flow_backend!r}; registered: "
                f"{', '.join(flow_ops.flow_backends())}")
    return streams


def decode_for_streams(uri: str, start_sec: float | None = None, end_sec: float | None = None, *,
                       streams: Sequence[str] = ("rgb",),
                       max_seconds: float | None = DEFAULT_MAX_SECONDS,
                       limits: DecodeLimits | None = None, decode_threads: int = 0,
                       allocate=None, fps=None, max_frames: int | None = None,
                       crops: str = "center") -> DecodedClip:
    """The decoding half of :func:`preprocess_clip`: the 25-fps frames of
    ``[start_sec, end_sec)`` that ``streams`` need (see
    :func:`beam_i3d.media.video.decode_clip`): ``rgb`` ``[T,224,224,3]`` uint8 crops always,
    and, when "flow" is in ``streams``, ``gray`` ``[T,H,W]`` uint8 whole resized frames.
    Needs no TensorFlow. Raises VideoError subclasses for bad input. ``allocate``,
    ``fps`` (None: the recipe's 25) and ``max_frames``: see
    :func:`~beam_i3d.media.video.decode_clip`. ``crops`` five or ten: ``rgb`` holds the
    whole resized frames ``[T,H,W,3]`` (:mod:`beam_i3d.media.crops`)."""
    from beam_i3d.media.recipe import SAMPLE_FPS

    return decode_clip(uri, start_sec, end_sec, max_seconds=max_seconds, limits=limits,
                       keep_gray="flow" in streams, decode_threads=decode_threads,
                       allocate=allocate, fps=SAMPLE_FPS if fps is None else fps,
                       max_frames=max_frames, full_frames=crops != "center")


def _flow_levels(fields: np.ndarray, quantize_flow: bool, crops: str = "center") -> np.ndarray:
    from beam_i3d.media import flow as flow_ops

    if crops != "center":  # whole fields, with -u's levels for ten (media.crops)
        from beam_i3d.media.crops import flow_levels

        return flow_levels(fields, crops, quantize_flow)
    return flow_ops.quantize_flow(fields) if quantize_flow else flow_ops.flow_to_unit_range(fields)


def _cropped(fields: np.ndarray, crops: str) -> np.ndarray:
    """Float fields ``[N,H,W,2]`` as a flow stream keeps them: the centre crop, or, for
    five or ten crops, the whole fields (cropped later, :mod:`beam_i3d.media.crops`)."""
    return center_crop(fields, axes=(1, 2)) if crops == "center" else fields


def clip_flow(clip: DecodedClip, *, quantize_flow: bool = True,
              flow_backend: str = DEFAULT_FLOW_BACKEND,
              flow_batch_pairs: int | None = None, loop_to: int = MIN_FRAMES,
              crops: str = "center") -> np.ndarray:
    """The flow stream of decoded frames (decoded with "flow" in the streams): TV-L1 on
    ``clip.gray`` with ``flow_backend``, centre crop, quantised to uint8 ``[T',224,224,2]``
    or, with ``quantize_flow=False``, float32 in [-1, 1]; looped to at least 9 steps
    (``T' = max(T - 1, 9, loop_to - 1)``; one frame: no motion). ``crops`` five or ten:
    the whole fields ``[T',H,W,C]`` (:func:`beam_i3d.media.crops.flow_levels`) instead
    of the centre crop. Pure: reads nothing."""
    from beam_i3d.media import flow as flow_ops

    if clip.gray is None:
        raise ValueError("finish_clip needs the grayscale frames for flow "
                         "(decode with 'flow' in streams)")
    if clip.num_frames >= 2:
        fields = _cropped(flow_ops.compute_flow(clip.gray, flow_backend, flow_batch_pairs), crops)
    else:  # one frame: no motion
        fields = np.zeros((1,) + clip.rgb.shape[1:3] + (2,), np.float32)
    return loop_to_length(_flow_levels(fields, quantize_flow, crops), max(MIN_FRAMES, loop_to - 1))


FLOW_CHUNK_PAIRS = 64  # pairs computed at a time by span_flow (bounds its float32 memory)


def span_flow(gray: np.ndarray, runs, *, quantize_flow: bool = True,
              flow_backend: str = DEFAULT_FLOW_BACKEND, flow_batch_pairs: int | None = None,
              allocate=None, out: np.ndarray | None = None,
              chunk_pairs: int = FLOW_CHUNK_PAIRS, crops: str = "center") -> np.ndarray:
    """The flow of a work item's frames, each pair computed once: ``gray`` ``[F,H,W]``
    uint8 (the span's whole resized frames); ``runs``: frame ranges ``[a, b)`` whose
    consecutive pairs are wanted (:func:`beam_i3d.job.windows.pair_runs`). Returns
    ``[F-1,224,224,2]`` (field k: the motion from frame k to k+1, cropped and quantised as
    :func:`clip_flow` makes it; uint8, or float32 in [-1, 1] with ``quantize_flow=False``;
    pairs outside the runs are zeros), made ``chunk_pairs`` pairs at a time so that only
    that many float fields are held at once. ``allocate(shape, dtype)``: where the result
    is made (default numpy); ``out``: an array of that shape to fill instead (only the
    runs' pairs are written). A window of frames ``[f, f + c)`` then takes
    :func:`window_flow`, bit for bit what :func:`clip_flow` gives for its frames alone
    (TV-L1 treats each pair on its own; the crop and quantisation are per pixel).
    ``crops`` five or ten: whole fields ``[F-1,H,W,C]`` instead of centre crops (see
    :func:`clip_flow`)."""
    from beam_i3d.media import flow as flow_ops
    from beam_i3d.media.recipe import CROP_SIZE

    count = max(0, gray.shape[0] - 1)
    dtype = np.uint8 if quantize_flow else np.float32
    shape = (count, CROP_SIZE, CROP_SIZE, 2)
    if crops != "center":
        from beam_i3d.media.crops import flow_channels

        shape = (count,) + gray.shape[1:3] + (flow_channels(crops, quantize_flow),)
    if out is None:
        out = (allocate or np.empty)(shape, dtype)
        out[...] = 0
    for a, b in runs:
        for lo in range(a, b - 1, chunk_pairs):
            hi = min(lo + chunk_pairs, b - 1)  # pairs lo .. hi - 1
            fields = flow_ops.compute_flow(gray[lo:hi + 1], flow_backend, flow_batch_pairs)
            out[lo:hi] = _flow_levels(_cropped(fields, crops), quantize_flow, crops)
    return out


def window_flow(fields: np.ndarray, first: int, count: int, *, quantize_flow: bool = True,
                loop_to: int = MIN_FRAMES, crops: str = "center") -> np.ndarray:
    """A window's flow stream from :func:`span_flow`'s ``fields``: its ``count - 1``
    fields from ``first``, looped as :func:`clip_flow` loops them (one frame: no motion).
    ``crops``: as the fields were made."""
    if count >= 2:
        steps = fields[first:first + count - 1]
    else:
        from beam_i3d.media.recipe import CROP_SIZE

        size = (CROP_SIZE, CROP_SIZE) if crops == "center" else fields.shape[1:3]
        steps = _flow_levels(np.zeros((1,) + tuple(size) + (2,), np.float32), quantize_flow,
                             crops)
    return loop_to_length(steps, max(MIN_FRAMES, loop_to - 1))


def finish_clip(clip: DecodedClip, *, streams: Sequence[str] = ("rgb",),
                quantize_flow: bool = True, flow_backend: str = DEFAULT_FLOW_BACKEND,
                flow_batch_pairs: int | None = None,
                flow: np.ndarray | None = None, loop_to: int = MIN_FRAMES,
                crops: str = "center") -> ClipTensors:
    """The second half of :func:`preprocess_clip`: decoded frames (from
    :func:`decode_for_streams` with the same ``streams``) -> ClipTensors: flow when asked
    for (:func:`clip_flow`, unless ``flow`` gives what it returned, computed elsewhere),
    both streams looped to at least 9 steps (``loop_to``: RGB to at least that many
    frames, flow to one fewer: a frame window shorter than its W frames is looped to W).
    ``crops`` five or ten: whole frames and fields (see :class:`ClipTensors`), the clip
    decoded with the same ``crops``. Pure: reads nothing."""
    streams = tuple(streams)
    want_flow = "flow" in streams
    if not want_flow:
        flow = None
    elif flow is None:
        flow = clip_flow(clip, quantize_flow=quantize_flow, flow_backend=flow_backend,
                         flow_batch_pairs=flow_batch_pairs, loop_to=loop_to, crops=crops)
    info = clip.info
    return ClipTensors(
        rgb=loop_to_length(clip.rgb, max(MIN_FRAMES, loop_to)) if "rgb" in streams else None,
        flow=flow,
        num_frames=clip.num_frames,
        start_sec=clip.start_sec,
        end_sec=clip.end_sec,
        source_width=info.width,
        source_height=info.height,
        source_fps=info.fps,
        source_duration_sec=info.duration_sec,
        source_codec=info.codec,
        rotation=info.rotation,
        flow_quantized=quantize_flow if want_flow else None,
        flow_backend=flow_backend if want_flow else None,
        range_end_sec=clip.range_end_sec,
    )


def preprocess_clip(uri: str, start_sec: float | None = None, end_sec: float | None = None, *,
                    streams: Sequence[str] = ("rgb",), max_seconds: float | None = DEFAULT_MAX_SECONDS,
                    quantize_flow: bool = True, flow_backend: str = DEFAULT_FLOW_BACKEND,
                    flow_batch_pairs: int | None = None, limits: DecodeLimits | None = None,
                    decode_threads: int = 0) -> ClipTensors:
    """Decode ``[start_sec, end_sec)`` of ``uri`` (a path or any URI Beam reads) and make
    the requested ``streams`` ("rgb" and/or "flow") by the I3D recipe.

    ``start_sec`` defaults to 0, ``end_sec`` to the end of the video; at most
    ``max_seconds`` (default 10 s = 250 frames; None: no cap). ``quantize_flow=False``
    gives float32 flow ``clip(f, -20, 20) / 20`` instead of uint8 levels.
    ``flow_backend`` names a backend of :mod:`beam_i3d.media.flow` (default ``tf``), which
    takes ``flow_batch_pairs`` frame pairs at a time (None: the backend's choice).
    The same as :func:`check_streams`, :func:`decode_for_streams`, then
    :func:`finish_clip` (which :mod:`beam_i3d.media.decode_pool` runs apart).

    Raises only :class:`~beam_i3d.errors.VideoError` subclasses for bad input
    (see :func:`beam_i3d.media.video.decode_clip`); ValueError / UnknownFlowBackend for bad
    arguments, before anything is read.
    """
    streams = check_streams(streams, flow_backend)
    clip = decode_for_streams(uri, start_sec, end_sec, streams=streams, max_seconds=max_seconds,
                              limits=limits, decode_threads=decode_threads)
    return finish_clip(clip, streams=streams, quantize_flow=quantize_flow,
                       flow_backend=flow_backend, flow_batch_pairs=flow_batch_pairs)


def loop_to_length(frames: np.ndarray, length: int = MIN_FRAMES) -> np.ndarray:
    """``[T,...]`` -> ``[max(T, length),...]``, repeating frames 0..T-1 cyclically
    (returned unchanged if T >= length)."""
    count = frames.shape[0]
    if count >= length:
        return frames
    return np.take(frames, np.arange(length) % count, axis=0)


def uint8_to_unit_range(x: np.ndarray) -> np.ndarray:
    """uint8 in [0, 255] -> float32 in [-1, 1] as ``x / 255 * 2 - 1``: the same map,
    in the same float32 arithmetic, as the model's uint8 input
    (``model.i3d.uint8_to_unit_range``), in numpy so as not to need TensorFlow."""
    return x.astype(np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)
