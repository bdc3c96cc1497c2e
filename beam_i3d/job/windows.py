"""Windows of untrimmed videos: planning, cutting decoded frames, keys (pure, no Beam).

``score --window W [--stride S]`` turns each manifest row (a whole video, or its time
range ``[start, end)``) into consecutive windows ``[start + k*S, start + k*S + W)``; the
windows stop at the first one that reaches the row's end, and that last one ends there
(a shorter last window follows the usual rules: looped to 9 frames, ``num_frames``
tells). The row's end is its ``end_sec`` or the video's real length, whichever comes
first: where its frames end, probed once from the packets (not the duration its header
declares, which can be wrong; see :func:`beam_i3d.job.window_pipeline.video_end`).

Every window is scored exactly like a clip of its own range: its frames are the 25-fps
frames of ``[start_k, end_k)`` by the recipe's rule (:mod:`beam_i3d.media.video`). The stride
must be a whole number of 25-fps frames (a multiple of 0.04 s) so that every window's
frames are frames of one 25-fps grid: a work item of consecutive windows is decoded once
as one clip over their union (:func:`beam_i3d.media.video.decode_clip`, the same path as every
clip) and each window is a slice of it (:func:`cut_windows`), so overlapping windows
decode each frame once and a window's frames do not depend on how the video was split.

Times are exact fractions rounded to microseconds, as :func:`beam_i3d.media.video.
clip_time_range` rounds a clip's times, so a window's ``(start, end)`` written as floats
and decoded as a clip of its own gives the same frames.

Frame windows (``score --window-frames W --stride-frames S [--fps native|N]``), the
layout of the published feature sets: the row's range is taken as frames, the video's
own (``--fps native``: every decoded frame in presentation order, from the packets'
times, :class:`beam_i3d.media.video_open.FrameTimes`) or resampled to N fps by the
recipe's rule; window ``k`` is frames ``[k*S, k*S + W)``, full windows only (a partial
tail is dropped, as the feature sets do: ``T = (N - W) // S + 1``), and a range shorter
than one window gives one window of its N frames, looped to W (flagged in its plan).
A window's times are its frames' presentation times: from the start of its first frame
to the end of its last (its pts + its duration). :func:`plan_frame_windows`,
:func:`frame_windows`; items are cut by frame index (:func:`window_offsets`).

Keys: window ``k`` of the manifest row keyed ``R`` (:mod:`beam_i3d.job.row_keys`) settles
``R@w<k>``, in ``DIR/windows`` or ``DIR/errors``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from fractions import Fraction
from typing import NamedTuple, Sequence

from beam_i3d.media.recipe import SAMPLE_FPS

WINDOW_SUFFIX = "@w"
_WINDOW_KEY = re.compile(r"^(?P<row>.*)@w(?P<index>0|[1-9][0-9]*)$", re.DOTALL)
ITEM_SECONDS = 60.0  # default span of video one work item decodes
_MICRO = 1_000_000


class Window(NamedTuple):
    """Window ``index`` of a row: ``[start, end)`` seconds (exact, microseconds; frame
    windows: exact presentation times). Frame windows also give ``first_frame``, the
    index of its first frame among the row's range's frames, and ``frames``, its real
    frame count (the window's W, or fewer for a range shorter than one window)."""

    index: int
    start: Fraction
    end: Fraction
    first_frame: int | None = None
    frames: int | None = None


NATIVE = "native"  # --fps native: the video's own frames
NATIVE_ITEM_FPS = 30  # frames per second assumed to size the work items of native runs


@dataclasses.dataclass(frozen=True)
class WindowOptions:
    """``window``/``stride`` in seconds, or ``window_frames``/``stride_frames`` in frames
    at ``fps`` (an int, or :data:`NATIVE`; seconds windows are always at 25 fps);
    ``per_item``: windows per work item (None: :func:`default_windows_per_item`)."""

    window: float | None = None
    stride: float | None = None
    per_item: int | None = None
    window_frames: int | None = None
    stride_frames: int | None = None
    fps: int | str = SAMPLE_FPS

    @property
    def in_frames(self) -> bool:
        return self.window_frames is not None

    @property
    def stride_sec(self) -> float | None:
        if self.in_frames:
            return None
        return self.window if self.stride is None else self.stride

    @property
    def stride_in_frames(self) -> int | None:
        if not self.in_frames:
            return None
        return self.window_frames if self.stride_frames is None else self.stride_frames

    @property
    def windows_per_item(self) -> int:
        if self.per_item:
            return self.per_item
        if self.in_frames:
            rate = NATIVE_ITEM_FPS if self.fps == NATIVE else self.fps
            return default_windows_per_item(self.window_frames, self.stride_in_frames,
                                            ITEM_SECONDS * rate)
        return default_windows_per_item(self.window, self.stride_sec)


def micro(seconds) -> Fraction:
    """``seconds`` (float or Fraction) as an exact fraction rounded to microseconds."""
    return Fraction(round(Fraction(seconds) * _MICRO), _MICRO)


def check_window_options(window: float, stride: float | None = None) -> None:
    """Raise ValueError (naming the option) unless ``window`` is at least one 25-fps frame
    (0.04 s) and ``stride`` (default: the window) is a positive whole number of 25-fps
    frames (a multiple of 0.04 s): a window or a stride shorter than one frame would
    plan windows that hold no frame (or never advance)."""
    frame = Fraction(1, SAMPLE_FPS)
    if not (window > 0 and math.isfinite(window)):
        raise ValueError(f"the window must be a positive number of seconds, got {window}")
    if micro(window) < frame:
        raise ValueError(f"the window (--window) must be at least one {SAMPLE_FPS}-fps frame "
                         f"({float(frame):g} s), got {window:g} s")
    stride = window if stride is None else stride
    if not (stride > 0 and math.isfinite(stride)):
        raise ValueError(f"the stride must be a positive number of seconds, got {stride}")
    if micro(stride) < frame:
        raise ValueError(f"the stride (--stride) must be at least one {SAMPLE_FPS}-fps frame "
                         f"({float(frame):g} s), got {stride:g} s")
    frames = micro(stride) * SAMPLE_FPS
    if frames.denominator != 1:
        raise ValueError(f"the stride must be a whole number of {SAMPLE_FPS}-fps frames (a "
                         f"multiple of {1 / SAMPLE_FPS:g} s), got {stride:g} s")


def plan_windows(start, end, window: float, stride: float | None = None) -> list[Window]:
    """The windows of ``[start, end)`` (see module doc); ``[]`` if the range is empty."""
    start, end = micro(start), micro(end)
    size, step = micro(window), micro(window if stride is None else stride)
    out = []
    k = 0
    while True:
        s = start + k * step
        if s >= end:
            break
        out.append(Window(k, s, min(s + size, end)))
        if s + size >= end:
            break
        k += 1
    return out


def check_frame_options(window_frames: int, stride_frames: int | None = None,
                        fps: int | str = SAMPLE_FPS) -> None:
    """Raise ValueError (naming the option) unless the window and stride are positive
    whole frame counts and ``fps`` is :data:`NATIVE` or a positive whole number."""
    for name, value in (("--window-frames", window_frames), ("--stride-frames", stride_frames)):
        if value is None and name == "--stride-frames":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of frames >= 1, got {value!r}")
    if fps != NATIVE and (isinstance(fps, bool) or not isinstance(fps, int) or fps < 1):
        raise ValueError(f"--fps must be 'native' or a whole number of frames per second "
                         f">= 1, got {fps!r}")


def plan_frame_windows(num_frames: int, window_frames: int,
                       stride_frames: int | None = None) -> list[tuple[int, int]]:
    """``(first frame, frame count)`` of each window over ``num_frames`` frames: frames
    ``[k*S, k*S + W)`` while they fit (``T = (N - W) // S + 1``, a partial tail dropped);
    one window of all N frames where ``0 < N < W``; ``[]`` where N is 0."""
    stride = window_frames if stride_frames is None else stride_frames
    if num_frames <= 0:
        return []
    if num_frames < window_frames:
        return [(0, num_frames)]
    return [(k * stride, window_frames)
            for k in range((num_frames - window_frames) // stride + 1)]


def frame_windows(spans: Sequence[tuple[int, int]], time_of) -> list[Window]:
    """Windows of :func:`plan_frame_windows` with their times: ``time_of(i)`` is the
    presentation time of the range's frame ``i`` (exact), and ``time_of(N)`` where the
    range's last frame ends; a window is ``[time_of(first), time_of(first + count))``."""
    return [Window(k, time_of(first), time_of(first + count), first, count)
            for k, (first, count) in enumerate(spans)]


def default_windows_per_item(window: float, stride: float | None = None,
                             item_seconds: float = ITEM_SECONDS) -> int:
    """Windows per work item so that an item spans about ``item_seconds`` of video
    (at least one window)."""
    stride = window if stride is None else stride
    return max(1, int(math.floor((item_seconds - window) / stride + 1e-9)) + 1)


def split_items(windows: Sequence[Window], per_item: int) -> list[list[Window]]:
    """Consecutive runs of at most ``per_item`` windows."""
    if per_item < 1:
        raise ValueError(f"an item needs at least one window, got {per_item}")
    return [list(windows[i:i + per_item]) for i in range(0, len(windows), per_item)]


def window_key(row_key: str, index: int) -> str:
    return f"{row_key}{WINDOW_SUFFIX}{index}"


def parse_window_key(key: str) -> tuple[str, int] | None:
    """``(row_key, index)`` of a window key, None for a key of another form."""
    match = _WINDOW_KEY.match(key)
    return (match.group("row"), int(match.group("index"))) if match else None


def window_text(index: int, start: float, end: float) -> str:
    """How error messages name a window: ``window 3 [30 s, 40 s)``."""
    return f"window {index} [{float(start):g} s, {float(end):g} s)"


def span_of(windows: Sequence[Window]) -> tuple[Fraction, Fraction]:
    """The range one decode covers for consecutive windows."""
    return windows[0].start, max(w.end for w in windows)


def span_frames(windows: Sequence[Window]) -> int | None:
    """Frame windows: how many frames one decode of consecutive windows takes (from the
    first window's first frame to the last frame any of them holds); None for windows in
    seconds."""
    if windows[0].first_frame is None:
        return None
    return max(w.first_frame + w.frames for w in windows) - windows[0].first_frame


def window_offsets(span, windows: Sequence[Window]) -> list:
    """Where each window's frames lie in ``span`` (the DecodedClip of :func:`span_of`
    the windows): ``(first, count)`` frame indices, or, for a window with no frames
    there (past the end of the video's frames), an EmptyClip error (its message does not
    name the window: the errors row adds that). Frame windows whose frames the decode
    did not reach in full are EmptyClip errors too (never silently shorter)."""
    from beam_i3d.errors import EmptyClip

    origin = micro(span.start_sec)
    frames_end = span.end_sec if span.range_end_sec is None else span.range_end_sec
    out = []
    for w in windows:
        if w.first_frame is not None:
            first, wanted = w.first_frame - windows[0].first_frame, w.frames
            count = min(wanted, span.num_frames - first)
            if count < wanted:
                got = f"only {max(0, count)} of its {wanted}" if count > 0 else f"none of its {wanted}"
                out.append(EmptyClip(span.info.uri, f"{got} frames were decoded: the video's "
                                                    f"frames end at {frames_end:.3f} s, "
                                                    "before its packets said"))
                continue
            out.append((first, count))
            continue
        offset = (w.start - origin) * SAMPLE_FPS
        if offset.denominator != 1 or offset < 0:
            raise ValueError(f"window {w.index} starts off the span's 25-fps grid")
        first = int(offset)
        wanted = math.ceil((w.end - w.start) * SAMPLE_FPS)
        count = min(wanted, span.num_frames - first)
        if count <= 0:
            out.append(EmptyClip(span.info.uri, f"no frames: the window starts at "
                                                f"{float(w.start):g} s, after the end of the "
                                                f"video's frames ({frames_end:.3f} s)"))
            continue
        out.append((first, count))
    return out


def pair_runs(offsets: Sequence) -> list[tuple[int, int]]:
    """The frame ranges ``[a, b)`` of a span whose consecutive pairs some window needs
    (a window of frames ``[f, f + c)`` needs the pairs ``f .. f + c - 2``), merged where
    they overlap or follow on, so that each pair's optical flow is computed once however
    many windows share it; pairs no window needs (a stride longer than the window) are
    left out. ``offsets``: :func:`window_offsets` (errors are skipped)."""
    spans = sorted((first, first + count - 1) for o in offsets
                   if not isinstance(o, BaseException) for first, count in [o] if count >= 2)
    runs: list[list[int]] = []
    for a, b in spans:  # pairs [a, b)
        if runs and a <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], b)
        else:
            runs.append([a, b])
    return [(a, b + 1) for a, b in runs]  # frames [a, b]: pairs a .. b - 1


def cut_windows(span, windows: Sequence[Window]) -> list:
    """The frames of each window, sliced from ``span`` (a
    :class:`beam_i3d.media.video.DecodedClip` of :func:`span_of` the windows, decoded without a
    cap), as DecodedClips exactly like decoding each window as a clip of its own; a
    window with no frames in the span (past the end of the video's frames) is an
    EmptyClip error instead (its message does not name the window: the errors row adds
    that, :func:`beam_i3d.job.records.request_error`)."""
    from beam_i3d.media.video import DecodedClip

    # Where the span's frames really end (older spans: where its 25-fps frames end).
    frames_end = span.end_sec if span.range_end_sec is None else span.range_end_sec
    out = []
    for w, where in zip(windows, window_offsets(span, windows)):
        if isinstance(where, BaseException):
            out.append(where)
            continue
        first, count = where
        part = slice(first, first + count)
        if w.first_frame is not None:  # a frame window: its frames' own times
            start_sec, end_sec, range_end = float(w.start), float(w.end), float(w.end)
        else:
            start_sec = float(w.start)
            end_sec = float(w.start + Fraction(count, SAMPLE_FPS))
            range_end = float(min(w.end, micro(frames_end)))
        out.append(DecodedClip(
            rgb=span.rgb[part],
            gray=None if span.gray is None else span.gray[part],
            times=span.times[part],
            source_times=span.source_times[part],
            start_sec=start_sec,
            end_sec=end_sec,
            info=span.info,
            range_end_sec=range_end))
    return out


# --- Timelines -------------------------------------------------------------------------


_TOUCH = 1e-6  # seconds: windows closer than this touch (times are whole microseconds)


def window_extent(w: dict, in_frames: bool = False) -> tuple[float, float]:
    """The time a scored window's frames stand for, in seconds. A seconds window (always
    at 25 fps): ``[window_start_sec, window_start_sec + num_frames / 25)``, each frame
    lasting one 25-fps frame (so a last window of one frame lasts 0.04 s, and a window
    whose video ended early ends where its frames do). A frame window (``in_frames``:
    ``--window-frames``, at ``--fps native`` or N) or a row without ``num_frames``: its
    own ``[window_start_sec, window_end_sec)``, its frames' presentation times at the
    rate used (16 frames of a 29.97-fps video: 0.534 s)."""
    start = float(w["window_start_sec"])
    if in_frames or w.get("num_frames") is None:
        return start, float(w["window_end_sec"])
    return start, float(micro(start) + Fraction(int(w["num_frames"]), SAMPLE_FPS))


def merge_timeline(windows: Sequence[dict]) -> list[dict]:
    """Segments where the top-1 label stays the same, from scored windows; a segment
    never spans time that no window scored.

    ``windows``: dicts with ``window_index``, ``window_start_sec``, ``window_end_sec``,
    ``num_frames`` (optional), ``predicted_label``, ``predicted_index``,
    ``predicted_probability`` (any order; missing windows are simply absent). A window
    covers its :func:`window_extent`. Consecutive windows (by index) with the same label
    whose extents touch or overlap form one segment, from its first window's start to the
    end of the last of them. Where windows do not touch (a stride longer than the window,
    or failed windows leaving a stretch no window covers) the segment ends where its
    windows end and the next starts where its first window starts: the gap is left out,
    even between windows of the same label (two segments). Where the label changes between
    windows ``a`` and ``b`` that touch or overlap, the boundary is the middle of
    ``[start_b, end_a]``: ``start_b`` for windows that touch (stride = window), the middle
    of their overlap for overlapping ones. Each segment: ``label``, ``label_index``,
    ``start_sec``, ``end_sec``, ``mean_probability`` (of its windows' top-1
    probabilities), ``num_windows``, ``first_window``, ``last_window``.
    """
    ordered = sorted(windows, key=lambda w: w["window_index"])
    segments: list[dict] = []
    for w in ordered:
        label = w["predicted_label"]
        start, end = window_extent(w)
        previous = segments[-1] if segments else None
        touches = previous is not None and start <= previous["_last_end"] + _TOUCH
        if touches and previous["label"] == label:
            previous["_probabilities"].append(float(w["predicted_probability"]))
            previous["_last_end"] = max(previous["_last_end"], end)
            previous["end_sec"] = previous["_last_end"]
            previous["last_window"] = int(w["window_index"])
            continue
        if touches:
            boundary = (start + previous["_last_end"]) / 2
            previous["end_sec"] = boundary
            start = boundary
        segments.append({
            "label": label, "label_index": int(w["predicted_index"]),
            "start_sec": start, "end_sec": end,
            "_probabilities": [float(w["predicted_probability"])], "_last_end": end,
            "first_window": int(w["window_index"]), "last_window": int(w["window_index"]),
        })
    for seg in segments:
        probabilities = seg.pop("_probabilities")
        seg.pop("_last_end")
        seg["mean_probability"] = sum(probabilities) / len(probabilities)
        seg["num_windows"] = len(probabilities)
    return segments
