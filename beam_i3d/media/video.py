"""Decode a clip of a video file into the 25-fps, 256-resized, centre-cropped frames of
the I3D recipe, with limits that make it safe on untrusted files.

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

The rest lives in two modules of its own, shared by clips and windows (see
:mod:`beam_i3d.job.windows`), and is re-exported here: opening and probing a video
(:mod:`beam_i3d.media.video_open`: reading, accepted formats, header checks, :func:`probe_video`,
:func:`probe_duration`, :func:`probe_extent`) and the pixels (:mod:`beam_i3d.media.video_pixels`: shapes,
resize, orientation, crop, colour conversion).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from fractions import Fraction
from typing import Iterator

import numpy as np

from beam_i3d.errors import (
    CorruptVideo,
    EmptyClip,
    UnsupportedCodec,
    VideoError,
    VideoTooLarge,
    VideoTooLong,
)
from beam_i3d.media.recipe import DEFAULT_MAX_SECONDS, SAMPLE_FPS, DecodeLimits
from beam_i3d.media.video_open import (  # noqa: F401: re-exported
    ACCEPTED_FORMATS,
    Extent,
    VideoInfo,
    _OpenVideo,
    _one_line,
    check_uri_scheme,
    missing_local_file,
    probe_duration,
    probe_extent,
    probe_video,
    resource_error,
    storage_error,
)
from beam_i3d.media.video_pixels import (  # noqa: F401: re-exported
    Orientation,
    center_crop,
    check_aspect_ratio,
    frame_orientation,
    frame_to_rgb,
    resized_size,
    yuv_to_rgb,
)

NATIVE_FPS = "native"  # decode_clip(fps=...): the video's own frames, no resampling
# How far before the start to seek again when a seek lands after the start (seconds).
_SEEK_BACKOFFS = (0, 1, 5, 30)
# A declared duration longer than the decoded stream by more than this means the file
# is truncated (only for containers whose per-stream durations are exact).
TRUNCATION_TOLERANCE = Fraction(1, 2)


@dataclasses.dataclass
class DecodedClip:
    """Frames of one clip at 25 fps.

    ``rgb``: ``[T,224,224,3]`` uint8, the centre crops (decoded with ``full_frames``:
    ``[T,H,W,3]``, the whole resized frames, for ``--crops five|ten``); ``gray``:
    ``[T,H,W]`` uint8, the whole resized frames in grayscale (shorter side 256; only when
    asked for, else None);
    ``times``: ``[T]`` float64, output time ``t_k`` of each frame (s);
    ``source_times``: ``[T]`` float64, presentation time of the source frame chosen for
    each output (s); ``start_sec``/``end_sec``: the range actually covered, ``end_sec =
    start_sec + T/25``; ``range_end_sec``: where the range scored really ends (s): its
    end (or cap) when the video's frames reach it, else the end of the video's last frame
    (``<= end_sec``; None where not known, e.g. a clip built by hand).
    """

    rgb: np.ndarray
    gray: np.ndarray | None
    times: np.ndarray
    source_times: np.ndarray
    start_sec: float
    end_sec: float
    info: VideoInfo
    range_end_sec: float | None = None

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

    def range_end(self, end_time: Fraction) -> Fraction:
        """Where the range decoded ends: ``stop`` once every output was given, else
        ``end_time`` (where the video's frames ended)."""
        return self.stop if self.done else end_time

    def _fill_before(self, limit: Fraction) -> int:
        count = 0
        while not self.done and self.time_of(self.next_index) < limit:
            self.next_index += 1
            count += 1
        return count


class NativeSampler:
    """``--fps native``: every source frame on screen in ``[start, stop)`` is one output
    frame, in presentation order, none repeated or dropped (the frame on screen at
    ``start`` first), at most ``max_frames`` of them. The same interface as
    :class:`FrameSampler`; :meth:`time_of` gives output ``k``'s presentation time (the
    first: ``start`` if its frame began before), and ``time_of(T)`` where the last one
    ends (its pts + its duration: the next frame's time, or the stream's end)."""

    def __init__(self, start: Fraction, stop: Fraction | None, max_frames: int | None = None):
        self.start = Fraction(start)
        self.stop = None if stop is None else Fraction(stop)
        self.max_frames = max_frames
        self.next_index = 0
        self._previous: Fraction | None = None
        self._past_stop = False
        self._starts: list[Fraction] = []
        self._end: Fraction | None = None

    @property
    def done(self) -> bool:
        return self._past_stop or (self.max_frames is not None
                                   and self.next_index >= self.max_frames)

    def time_of(self, k: int) -> Fraction:
        if k < len(self._starts):
            return self._starts[k]
        if k == len(self._starts) and self._end is not None:
            return self._end
        return self.start if not self._starts else self._end

    def _close(self, until: Fraction) -> int:
        previous = self._previous
        if (previous is None or self.done or until <= self.start
                or (self.stop is not None and previous >= self.stop)):
            return 0
        self._starts.append(max(previous, self.start))
        self._end = until
        self.next_index += 1
        return 1

    def push(self, frame_time: Fraction) -> int:
        count = self._close(frame_time)
        if self.stop is not None and frame_time >= self.stop:
            self._past_stop = True
        self._previous = frame_time
        return count

    def finish(self, end_time: Fraction) -> int:
        return self._close(end_time)

    def range_end(self, end_time: Fraction) -> Fraction:
        return self._end if self.done and self._end is not None else end_time


def clip_time_range(uri: str, start_sec: float | None, end_sec: float | None,
                    max_seconds: float | None) -> tuple[Fraction, Fraction | None]:
    """``(start, stop)`` in seconds as exact fractions (rounded to microseconds): the
    output times are ``[start, stop)``; ``stop`` is None when neither an end nor a cap
    is given. Raises EmptyClip for a negative, non-finite, empty or inverted range."""
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive or None, got {max_seconds}")

    def exact(seconds, name: str) -> Fraction:
        if isinstance(seconds, Fraction):  # already exact (a frame window's start)
            if seconds < 0:
                raise EmptyClip(uri, f"invalid time range: {name} {float(seconds)} s is not "
                                     "a time >= 0")
            return seconds
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds < 0:
            raise EmptyClip(uri, f"invalid time range: {name} {seconds} s is not a time >= 0")
        # In exact arithmetic: seconds * 1e6 in floats overflows to inf for huge times.
        return Fraction(round(Fraction(seconds) * 1_000_000), 1_000_000)

    start = exact(start_sec, "start") if start_sec is not None else Fraction(0)
    stop = exact(end_sec, "end") if end_sec is not None else None
    if stop is not None and stop <= start:
        raise EmptyClip(uri, f"empty time range [{float(start):g} s, {float(stop):g} s)")
    if max_seconds is not None:
        cap = start + Fraction(round(max_seconds * 1_000_000), 1_000_000)
        stop = cap if stop is None else min(stop, cap)
    return start, stop


def error_before_opening(uri: str, start_sec: float | None, end_sec: float | None,
                         max_seconds: float | None) -> VideoError | None:
    """The VideoNotFound that :func:`decode_clip` would raise for a local file that does
    not exist, found without opening anything (a ``stat``, so a process that must not
    decode untrusted media may ask); None where ``decode_clip`` would go further, or
    would fail first on its time range (then it says so itself)."""
    missing = missing_local_file(uri)
    if missing is None or not _range_accepted(start_sec, end_sec, max_seconds):
        return None
    return missing


@functools.lru_cache(maxsize=1024)
def _range_accepted(start_sec, end_sec, max_seconds) -> bool:
    """Whether :func:`clip_time_range` accepts these times (it names the URI only in its
    errors); remembered, as a manifest's times repeat."""
    try:
        clip_time_range("", start_sec, end_sec, max_seconds)
    except (ValueError, VideoError):
        return False
    return True


# --- Decoding -----------------------------------------------------------------------


class _Frames:
    """Output frames written in place into one array as they are made, instead of a list
    of frames stacked at the end (that copy cost about a tenth of an item's decode and
    held its frames twice). ``capacity``: the frames expected; the array grows (doubling)
    if more come, and the result is trimmed by a copy only when much of it went unused.
    Memory is touched as frames are written, so a capacity too large costs address space
    only. ``allocate(shape, dtype)`` makes the first array (default ``numpy.empty``; the
    decode pool's children pass shared memory, and then the result is never trimmed by a
    copy: the pages not written cost nothing there either)."""

    def __init__(self, capacity: int, allocate=None):
        self.capacity = max(1, capacity)
        self.allocate = allocate
        self.array: np.ndarray | None = None
        self.count = 0

    def add(self, frame: np.ndarray, times: int) -> None:
        if self.array is None:
            shape = (self.capacity,) + frame.shape
            self.array = (self.allocate or np.empty)(shape, frame.dtype)
        if frame.shape != self.array.shape[1:]:
            raise ValueError(f"a frame of shape {frame.shape} among frames of shape "
                             f"{self.array.shape[1:]}")
        need = self.count + times
        if need > len(self.array):
            grown = np.empty((max(need, 2 * len(self.array)),) + self.array.shape[1:],
                             self.array.dtype)
            grown[:self.count] = self.array[:self.count]
            self.array = grown
        self.array[self.count:need] = frame
        self.count = need

    def result(self) -> np.ndarray:
        if self.array is None:
            raise ValueError("no frame was decoded in the range")
        used = self.array[:self.count]
        if (self.allocate is not None or self.count == len(self.array)
                or 4 * self.count >= 3 * len(self.array)):
            return used
        return used.copy()


_MAX_INITIAL_FRAMES = 8192  # 5.5 min at 25 fps; beyond, the frame array grows as needed


def _expected_frames(video: _OpenVideo, start: Fraction, stop: Fraction | None,
                     fps=SAMPLE_FPS, max_frames: int | None = None) -> int:
    """How many output frames ``[start, stop)`` should give: exactly those of the range
    (the sampler stops there), fewer where the declared duration ends the video first
    (one more for its rounding); 10 s worth when neither bounds it. ``fps``: the output
    rate ("native": the stream's own, about); ``max_frames``: a cap on the count."""
    if fps == NATIVE_FPS:
        rate = video.stream.average_rate or video.stream.guessed_rate
        fps = Fraction(rate) if rate else Fraction(30)
    counts = [] if max_frames is None else [max_frames]
    if stop is not None:
        counts.append(math.ceil((stop - start) * fps))
    if video.declared_duration is not None:
        counts.append(math.ceil((video.declared_duration - start) * fps) + 1)
    return max(1, min(*counts, _MAX_INITIAL_FRAMES) if counts else math.ceil(10 * fps))


def decode_clip(uri: str, start_sec: float | None = None, end_sec: float | None = None, *,
                max_seconds: float | None = DEFAULT_MAX_SECONDS,
                limits: DecodeLimits | None = None, keep_gray: bool = False,
                decode_threads: int = 0, allocate=None, fps=SAMPLE_FPS,
                max_frames: int | None = None, full_frames: bool = False) -> DecodedClip:
    """Decode ``[start_sec, end_sec)`` of the video at ``uri`` into 25-fps frames.

    ``fps``: the output rate (default the recipe's 25; any positive int or Fraction
    samples by the same rule), or ``"native"`` (:data:`NATIVE_FPS`): every source frame on
    screen in the range, in presentation order, none repeated or dropped
    (:class:`NativeSampler`). ``max_frames``: stop after this many output frames (a frame
    window's count; exact, where an end time rounded to microseconds might not be).
    ``start_sec``/``end_sec`` may be exact Fractions (not rounded).

    ``start_sec`` defaults to 0 (the first frame), ``end_sec`` to the end of the video;
    at most ``max_seconds`` (None: no cap) are decoded. ``keep_gray`` also returns the
    whole resized grayscale frames (for flow); ``full_frames``: ``rgb`` holds the whole
    resized frames ``[T,H,W,3]`` instead of their centre crops (the frames
    :mod:`beam_i3d.media.crops` cuts five or ten crops from). ``decode_threads``: FFmpeg decoder
    threads (0: FFmpeg's choice). ``allocate(shape, dtype)``: where the frame arrays are
    made (default: numpy's heap; the decode pool writes them straight into shared
    memory). See the module doc for the sampling rule.

    Raises (all :class:`~beam_i3d.errors.VideoError`): VideoNotFound, UnsupportedURI,
    StorageError (credentials, network, storage service; transient), NotAVideo,
    NoVideoStream (audio only), UnsupportedCodec, CorruptVideo (damaged or truncated
    data), VideoTooLarge, VideoTooLong, UnsupportedShape (aspect ratio), DecodeTimeout,
    DecodeResourceExhausted and DecodeOutOfMemory (FFmpeg refused a thread or memory:
    transient, :func:`~beam_i3d.media.video_open.resource_error`),
    EmptyClip (empty or inverted range, or a range after the end of the video or past
    ``limits.max_duration_seconds``).
    """
    limits = limits or DecodeLimits()
    start, stop = clip_time_range(uri, start_sec, end_sec, max_seconds)
    if max_frames is not None and fps != NATIVE_FPS:
        cap = start + Fraction(max_frames) / Fraction(fps)
        stop = cap if stop is None else min(stop, cap)
    with _OpenVideo(uri, limits, decode_threads) as video:
        # Not refused from the declared duration: a header may declare less than its frames
        # (a range past the end is found out by decoding, after one seek).
        if start >= limits.max_duration_seconds:
            # Also keeps seek offsets in FFmpeg's 64-bit range (a start of 1e15 s).
            raise EmptyClip(uri, f"the range starts at {float(start):g} s, after the end of any "
                                 f"video accepted (at most {limits.max_duration_seconds:g} s long)")
        return _decode(video, start, stop, keep_gray, allocate, fps, max_frames, full_frames)


def _decode(video: _OpenVideo, start: Fraction, stop: Fraction | None,
            keep_gray: bool, allocate=None, fps=SAMPLE_FPS,
            max_frames: int | None = None, full_frames: bool = False) -> DecodedClip:
    import av
    import cv2

    uri = video.uri
    seek_targets = sorted({start - back for back in _SEEK_BACKOFFS if start - back > 0}, reverse=True)
    attempts: list[Fraction | None] = [*seek_targets, None]  # None: from the beginning
    for attempt, target in enumerate(attempts):
        try:
            result = _decode_from(video, start, stop, keep_gray, target,
                                  retry_if_late=attempt < len(attempts) - 1,
                                  allocate=allocate, fps=fps, max_frames=max_frames,
                                  full_frames=full_frames)
        except VideoError:
            raise
        except av.error.DecoderNotFoundError as e:
            raise UnsupportedCodec(uri, f"no decoder for codec {video.info.codec}: {e}") from None
        except av.error.FFmpegError as e:
            raise (resource_error(uri, e, "decoding")
                   or CorruptVideo(uri, f"decoding failed: {_one_line(e)}")) from None
        except (ValueError, OverflowError, ZeroDivisionError, cv2.error) as e:
            # What hostile streams make PyAV, NumPy or OpenCV raise (timestamps out of
            # range, a pixel format swscale cannot convert, cv2.error...).
            raise CorruptVideo(uri, f"decoding failed: {type(e).__name__}: {_one_line(e)}") from None
        if result is not None:
            return result
    raise AssertionError("unreachable: the last attempt decodes from the beginning")


def _decode_from(video: _OpenVideo, start: Fraction, stop: Fraction | None, keep_gray: bool,
                 seek_target: Fraction | None, retry_if_late: bool, allocate=None,
                 fps=SAMPLE_FPS, max_frames: int | None = None,
                 full_frames: bool = False) -> DecodedClip | None:
    container, stream, tb, uri = video.container, video.stream, video.time_base, video.uri
    origin_pts = video.origin_pts
    if seek_target is not None:
        container.seek(int(origin_pts + math.floor(seek_target / tb)), stream=stream,
                       backward=True, any_frame=False)
    elif video.seeked:
        container.seek(origin_pts, stream=stream, backward=True, any_frame=False)
    video.seeked = video.seeked or seek_target is not None

    sampler = (NativeSampler(start, stop, max_frames) if fps == NATIVE_FPS
               else FrameSampler(start, stop, fps))
    expected = _expected_frames(video, start, stop, fps, max_frames)
    rgb, gray, source_times = _Frames(expected, allocate), _Frames(expected, allocate), []
    sizes: dict[tuple[int, int], tuple[int, int]] = {}
    orientation: Orientation | None = None
    previous = previous_time = None
    last_interval: Fraction | None = None
    end_time: Fraction | None = None  # where the last frame ends, once the stream ends

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
        if full_frames or keep_gray:  # the whole frame: for flow, or crops cut later
            import cv2

            full = frame_to_rgb(frame, sizes[key], orientation, crop=False)
            # full_frames: the frame itself (beam_i3d.media.crops cuts five or ten later)
            crop = full if full_frames else np.ascontiguousarray(center_crop(full))
            luma = cv2.cvtColor(full, cv2.COLOR_RGB2GRAY) if keep_gray else None
        else:
            crop, luma = frame_to_rgb(frame, sizes[key], orientation, crop=True), None
        rgb.add(crop, count)
        if keep_gray:
            gray.add(luma, count)
        source_times.extend([float(frame_time)] * count)

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
                and end_time < video.declared_duration - TRUNCATION_TOLERANCE):
            raise CorruptVideo(uri, f"the video stream ends at {float(end_time):.3f} s but the "
                                    f"container declares {float(video.declared_duration):.3f} s: "
                                    "truncated file")
        if not rgb.count:
            raise EmptyClip(uri, f"no frames: the range starts at {float(start):g} s, after the "
                                 f"end of the video's frames ({float(end_time):.3f} s)")
    num = rgb.count
    # Where the range scored ends: its stop where the frames reached it, else the video's end.
    range_end = sampler.range_end(end_time)
    times = np.array([float(sampler.time_of(k)) for k in range(num)])
    return DecodedClip(
        rgb=rgb.result(),
        gray=gray.result() if keep_gray else None,
        times=times,
        source_times=np.array(source_times),
        start_sec=float(start),
        end_sec=float(sampler.time_of(num)),
        info=dataclasses.replace(video.info, rotation=orientation.rotation if orientation else 0),
        range_end_sec=float(range_end),
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
