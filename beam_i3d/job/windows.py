"""Windows of untrimmed videos: planning, cutting decoded frames, keys (pure, no Beam).

``score --window W [--stride S]`` turns each manifest row (a whole video, or its time
range ``[start, end)``) into consecutive windows ``[start + k*S, start + k*S + W)``; the
windows stop at the first one that reaches the row's end, and that last one ends there
(a shorter last window follows the usual rules: looped to 9 frames, ``num_frames``
tells). The row's end is its ``end_sec`` or, without one, the video's duration as its
container declares it (probed once, from the header), whichever comes first.

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
    """Window ``index`` of a row: ``[start, end)`` seconds (exact, microseconds)."""

    index: int
    start: Fraction
    end: Fraction


@dataclasses.dataclass(frozen=True)
class WindowOptions:
    """``window``/``stride`` in seconds; ``per_item``: windows per work item (None:
    :func:`default_windows_per_item`)."""

    window: float
    stride: float | None = None
    per_item: int | None = None

    @property
    def stride_sec(self) -> float:
        return self.window if self.stride is None else self.stride

    @property
    def windows_per_item(self) -> int:
        return self.per_item or default_windows_per_item(self.window, self.stride_sec)


def micro(seconds) -> Fraction:
    """``seconds`` (float or Fraction) as an exact fraction rounded to microseconds."""
    return Fraction(round(Fraction(seconds) * _MICRO), _MICRO)


def check_window_options(window: float, stride: float | None = None) -> None:
    """Raise ValueError unless ``window`` > 0 and ``stride`` (default: the window) is
    a positive whole number of 25-fps frames (a multiple of 0.04 s)."""
    if not (window > 0 and math.isfinite(window)):
        raise ValueError(f"the window must be a positive number of seconds, got {window}")
    stride = window if stride is None else stride
    if not (stride > 0 and math.isfinite(stride)):
        raise ValueError(f"the stride must be a positive number of seconds, got {stride}")
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


def cut_windows(span, windows: Sequence[Window]) -> list:
    """The frames of each window, sliced from ``span`` (a
    :class:`beam_i3d.media.video.DecodedClip` of :func:`span_of` the windows, decoded without a
    cap), as DecodedClips exactly like decoding each window as a clip of its own; a
    window with no frames in the span (past the decoded end of the video) is an
    EmptyClip error instead."""
    from beam_i3d.errors import EmptyClip
    from beam_i3d.media.video import DecodedClip

    origin = micro(span.start_sec)
    out = []
    for w in windows:
        offset = (w.start - origin) * SAMPLE_FPS
        if offset.denominator != 1 or offset < 0:
            raise ValueError(f"window {w.index} starts off the span's 25-fps grid")
        first = int(offset)
        wanted = math.ceil((w.end - w.start) * SAMPLE_FPS)
        count = min(wanted, span.num_frames - first)
        if count <= 0:
            out.append(EmptyClip(span.info.uri, f"{window_text(*w)}: no frames; the video's "
                                                f"frames end at {span.end_sec:.3f} s"))
            continue
        part = slice(first, first + count)
        out.append(DecodedClip(
            rgb=span.rgb[part],
            gray=None if span.gray is None else span.gray[part],
            times=span.times[part],
            source_times=span.source_times[part],
            start_sec=float(w.start),
            end_sec=float(w.start + Fraction(count, SAMPLE_FPS)),
            info=span.info))
    return out


# --- Timelines -------------------------------------------------------------------------


def merge_timeline(windows: Sequence[dict]) -> list[dict]:
    """Segments where the top-1 label stays the same, from scored windows.

    ``windows``: dicts with ``window_index``, ``window_start_sec``, ``window_end_sec``,
    ``predicted_label``, ``predicted_index``, ``predicted_probability`` (any order;
    missing windows are simply absent). Consecutive windows (by index) with the same
    label form one segment. Where the label changes between windows ``a`` and ``b``, the
    boundary is the middle of ``[start_b, end_a]``: ``start_b`` for windows that touch
    (stride = window), the middle of their overlap for overlapping ones, the middle of
    the gap where windows are missing. The first segment starts at the first window's
    start, the last ends at the last window's end. Each segment: ``label``,
    ``label_index``, ``start_sec``, ``end_sec``, ``mean_probability`` (of its windows'
    top-1 probabilities), ``num_windows``, ``first_window``, ``last_window``.
    """
    ordered = sorted(windows, key=lambda w: w["window_index"])
    segments: list[dict] = []
    for w in ordered:
        label = w["predicted_label"]
        if segments and segments[-1]["label"] == label:
            seg = segments[-1]
            seg["_probabilities"].append(float(w["predicted_probability"]))
            seg["end_sec"] = float(w["window_end_sec"])
            seg["last_window"] = int(w["window_index"])
            seg["_last_end"] = float(w["window_end_sec"])
            continue
        start = float(w["window_start_sec"])
        if segments:
            previous = segments[-1]
            boundary = (start + previous["_last_end"]) / 2
            previous["end_sec"] = boundary
            start = boundary
        segments.append({
            "label": label, "label_index": int(w["predicted_index"]),
            "start_sec": start, "end_sec": float(w["window_end_sec"]),
            "_probabilities": [float(w["predicted_probability"])],
            "_last_end": float(w["window_end_sec"]),
            "first_window": int(w["window_index"]), "last_window": int(w["window_index"]),
        })
    for seg in segments:
        probabilities = seg.pop("_probabilities")
        seg.pop("_last_end")
        seg["mean_probability"] = sum(probabilities) / len(probabilities)
        seg["num_windows"] = len(probabilities)
    return segments
