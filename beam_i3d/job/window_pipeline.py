"""The windowed job (``score --window``): the steps between the manifest's requests and
the shards, for untrimmed videos (the windows themselves: :mod:`beam_i3d.job.windows`).

    requests -> Reshuffle -> plan (probe each video's length in the decode pool; one
      DIR/plans row per manifest row, its windows split into work items of at most
      ``windows_per_item`` windows) -> [resuming: drop windows already settled]
      -> Reshuffle -> decode each item once in the decode pool, cut its windows
      -> RunInference (as clips) -> DIR/windows rows
      -> GroupByKey(manifest row) -> merge -> DIR/timelines rows
    a video whose length cannot be read, and every failed window ------> DIR/errors

A work item is the unit of parallelism: a 3-hour video is about 180 items of a minute
that any worker may take, and a worker holds one item's frames at a time per decoding
child (plus the windows in flight to the model).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_i3d.errors import EmptyClip, UnknownDuration, VideoError
from beam_i3d.job.inference import ClipExample
from beam_i3d.job.manifest import ClipRequest
from beam_i3d.job.pooled import PoolDoFn
from beam_i3d.job.progress import NAMESPACE
from beam_i3d.job.records import request_error, scored_request
from beam_i3d.job.windows import (
    NATIVE,
    Window,
    WindowOptions,
    frame_windows,
    merge_timeline,
    micro,
    parse_window_key,
    plan_frame_windows,
    plan_windows,
    split_items,
    window_key,
)
from beam_i3d.media.recipe import SAMPLE_FPS

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WorkItem:
    """Consecutive windows of one manifest row, decoded together."""

    request: ClipRequest
    windows: tuple[Window, ...]
    num_windows: int  # windows the row was planned into


def window_request(item: WorkItem, window: Window) -> ClipRequest:
    """The request of one window: the row's, keyed ``<row_key>@w<k>``, with the window."""
    return dataclasses.replace(
        item.request, row_key=window_key(item.request.row_key, window.index),
        window=(window.index, float(window.start), float(window.end), item.num_windows))


def video_end(probed):
    """Where a probed video's windows end (s, exact; None: unknown): where its frames
    really end (``probed.frames_end``, from the packets), not where its header says (it
    may declare less: the windows go on to the real end), except where an exact declared
    duration runs past the frames by more than the decoder's truncation tolerance (a
    truncated file: the windows keep to the declared end, so those past the frames
    become errors, not silently dropped ones); the declared duration where the packets
    carry no times."""
    from beam_i3d.media.video import TRUNCATION_TOLERANCE

    declared, real = probed.duration, probed.frames_end
    if real is None:
        return declared
    if (declared is not None and probed.exact
            and declared > real + TRUNCATION_TOLERANCE):
        return declared
    return real


def plan_row(request: ClipRequest, probed, options: WindowOptions):
    """``(plan record, [WorkItem])`` for a row whose video was probed as ``probed`` (a
    :class:`beam_i3d.media.decode_pool.Probed`: its declared duration and where its
    frames end; see :func:`video_end`). Raises UnknownDuration / EmptyClip for a row that
    has no windows. The items' request records the range planned (``end_sec`` capped at
    the video's end, :func:`beam_i3d.job.records.scored_request`), as its plan does."""
    if options.in_frames:
        return plan_frame_row(request, probed, options)
    duration, end_of_video, start, end = seconds_range(request, probed)
    windows = plan_windows(start, end, options.window, options.stride_sec)
    if not windows:
        lasts = ("" if end_of_video is None
                 else f" (the video's frames end at {float(end_of_video):.3f} s)")
        raise EmptyClip(request.video_uri, f"no windows: the range [{float(start):g} s, "
                                           f"{float(end):g} s) is empty{lasts}")
    plan = {"clip_id": request.clip_id, "video_uri": request.video_uri,
            "duration_sec": None if duration is None else float(duration),
            "range_start_sec": float(start), "range_end_sec": float(end),
            "window_sec": float(options.window), "stride_sec": float(options.stride_sec),
            "num_windows": len(windows), "row_key": request.row_key, "fps": float(SAMPLE_FPS),
            "variable_frame_rate": None, "window_frames": None, "stride_frames": None,
            "num_frames": None, "looped": None}
    scored = scored_request(request, float(end))
    items = [WorkItem(scored, tuple(part), len(windows))
             for part in split_items(windows, options.windows_per_item)]
    return plan, items


def seconds_range(request: ClipRequest, probed):
    """``(declared duration, end of the frames, start, end)`` of a row's range in
    seconds (exact, microseconds), the end capped at where the video's frames end
    (:func:`video_end`); UnknownDuration where neither the row nor the video gives one."""
    duration, end_of_video = probed.duration, video_end(probed)
    if end_of_video is None and request.end_sec is None:
        raise UnknownDuration(request.video_uri, "the container declares no duration and "
                                                 "its packets carry no times, so its windows "
                                                 "cannot be planned")
    start = micro(request.start_sec or 0.0)
    end = micro(request.end_sec) if request.end_sec is not None else micro(end_of_video)
    if end_of_video is not None:
        end = min(end, micro(end_of_video))
    return duration, end_of_video, start, end


def native_range(request: ClipRequest, frames):
    """``(first, count, start, end)`` of a row's range among a video's own frames
    (:class:`beam_i3d.media.video_open.FrameTimes`): the frames on screen in
    ``[start_sec, end_sec)`` (the one on screen at the start first; all of them for a whole
    video), and the range's start and end (s, exact)."""
    import numpy as np

    start = micro(request.start_sec or 0.0)
    tb = frames.time_base
    first = max(0, int(np.searchsorted(frames.pts, math.floor(start / tb), side="right")) - 1)
    if frames.count and frames.time(first + 1) <= start:
        first = frames.count  # the range starts after the last frame ends
    stop = frames.count
    if request.end_sec is not None:
        end = micro(request.end_sec)
        stop = int(np.searchsorted(frames.pts, math.ceil(end / tb), side="left"))
    count = max(0, stop - first)
    end_of_frames = frames.time(first + count) if count else start
    end = end_of_frames if request.end_sec is None else min(micro(request.end_sec), end_of_frames)
    return first, count, start, end


def plan_frame_row(request: ClipRequest, probed, options: WindowOptions):
    """:func:`plan_row` for frame windows (``--window-frames``): ``probed`` is the
    video's :class:`~beam_i3d.media.video_open.FrameTimes` under ``--fps native``, else
    its probed extent (frames resampled to ``options.fps`` by the recipe's rule). The plan
    records the rate used, whether the source's frame rate varies, the range's frame
    count and whether its one window was looped (a range shorter than a window)."""
    from fractions import Fraction

    W, S = options.window_frames, options.stride_in_frames
    if options.fps == NATIVE:
        first, count, start, end = native_range(request, probed)

        def time_of(i: int) -> Fraction:
            return max(probed.time(first + i), start) if i < count else probed.time(first + i)

        duration, rate, variable = probed.declared, probed.rate, probed.variable
        lasts = f" (the video's frames end at {float(probed.end):.3f} s)"
    else:
        duration, end_of_video, start, end = seconds_range(request, probed)
        fps = Fraction(options.fps)
        count = max(0, math.ceil((end - start) * fps))

        def time_of(i: int) -> Fraction:
            return start + i / fps

        rate, variable = float(options.fps), None
        lasts = ("" if end_of_video is None
                 else f" (the video's frames end at {float(end_of_video):.3f} s)")
    windows = frame_windows(plan_frame_windows(count, W, S), time_of)
    if not windows:
        raise EmptyClip(request.video_uri, f"no windows: the range [{float(start):g} s, "
                                           f"{float(end):g} s) holds no frames{lasts}")
    plan = {"clip_id": request.clip_id, "video_uri": request.video_uri,
            "duration_sec": None if duration is None else float(duration),
            "range_start_sec": float(start), "range_end_sec": float(end),
            "window_sec": None, "stride_sec": None,
            "num_windows": len(windows), "row_key": request.row_key,
            "fps": rate, "variable_frame_rate": variable, "window_frames": W,
            "stride_frames": S, "num_frames": count, "looped": count < W}
    scored = scored_request(request, float(end))
    items = [WorkItem(scored, tuple(part), len(windows))
             for part in split_items(windows, options.windows_per_item)]
    return plan, items


class PlanWindows(PoolDoFn):
    """ClipRequest -> ``(row_key, WorkItem)`` for each of its items, its plan record
    (``plans``); a video that cannot be probed or has no windows -> one error row."""

    PLANS = "plans"

    def __init__(self, options):
        super().__init__(options)
        self._window = options.window
        self._planned = Metrics.counter(NAMESPACE, "windows_planned")
        self._failed = Metrics.counter(NAMESPACE, "decode_errors")

    def process(self, request: ClipRequest, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        if self._window.in_frames and self._window.fps == NATIVE:
            from beam_i3d.media.decode_pool import probe_frames

            submit = lambda key: self._pool.submit_call(key, request.video_uri,  # noqa: E731
                                                         probe_frames)
        else:
            submit = lambda key: self._pool.submit_probe(key, request.video_uri)  # noqa: E731
        yield from self.submit(request, timestamp, window, submit)

    def outputs(self, request, result, seconds):
        try:
            if isinstance(result, BaseException):
                raise result
            plan, items = plan_row(request, result, self._window)
        except Exception as e:  # noqa: BLE001: the row's error
            self._failed.inc()
            if not isinstance(e, VideoError):
                _LOG.warning("unexpected error probing %s: %s: %s", request.video_uri,
                             type(e).__name__, e)
            yield beam.pvalue.TaggedOutput(self.ERRORS, request_error("decode", e, request))
            return
        self._planned.inc(plan["num_windows"])
        yield beam.pvalue.TaggedOutput(self.PLANS, plan)
        for item in items:
            yield request.row_key, item


class DecodeWindows(PoolDoFn):
    """WorkItem -> a ClipExample per window (decoded once per item in the decode pool);
    a failed window -> its error row; a failed item -> an error row per window."""

    def __init__(self, options):
        super().__init__(options)
        self._streams = tuple(options.streams)
        self._quantize_flow = options.quantize_flow
        self._flow_backend = options.flow_backend
        self._flow_batch_pairs = options.flow_batch_pairs
        self._allow_tf32 = options.allow_tf32
        self._crops = options.crops
        frames = options.window is not None and options.window.in_frames
        self._fps = options.window.fps if frames else None
        self._loop_to = options.window.window_frames if frames else None
        self._clips = Metrics.counter(NAMESPACE, "clips_decoded")
        self._frames = Metrics.counter(NAMESPACE, "frames_decoded")
        self._failed = Metrics.counter(NAMESPACE, "decode_errors")

    def setup(self):
        if "flow" in self._streams and self._flow_backend == "tf":
            # tf flow runs in this process (opencv flow: in the decoding children).
            from beam_i3d.job.inference import configure_tensorflow

            configure_tensorflow(self._allow_tf32)
        super().setup()

    def process(self, item: WorkItem, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        yield from self.submit(item, timestamp, window, lambda key: self._pool.submit(
            key, item.request.video_uri, streams=self._streams,
            quantize_flow=self._quantize_flow, flow_backend=self._flow_backend,
            flow_batch_pairs=self._flow_batch_pairs, windows=item.windows, fps=self._fps,
            loop_to=self._loop_to, crops=self._crops))

    def outputs(self, item: WorkItem, result, seconds):
        parts = [result] * len(item.windows) if isinstance(result, BaseException) else result
        for w, part in zip(item.windows, parts):
            request = window_request(item, w)
            if isinstance(part, BaseException):
                self._failed.inc()
                Metrics.counter(NAMESPACE, f"decode_errors_{type(part).__name__}").inc()
                yield beam.pvalue.TaggedOutput(self.ERRORS, request_error("decode", part, request))
                continue
            self._clips.inc()
            self._frames.inc(part.num_frames)
            yield ClipExample(request=request, num_frames=part.num_frames, rgb=part.rgb,
                              flow=part.flow, crops=self._crops)


def keep_unsettled(element):
    """After CoGroupByKey of a row's items with its settled window indices: the items
    with only their unsettled windows (items with none left are dropped)."""
    _, grouped = element
    done = set(grouped["done"])
    for item in grouped["items"]:
        left = tuple(w for w in item.windows if w.index not in done)
        if left:
            yield dataclasses.replace(item, windows=left)


def settled_windows(done_key) -> list:
    """``(identity, row_key)`` from DoneKeys -> ``(row_key, window index)`` for window
    keys."""
    _, key = done_key
    parsed = parse_window_key(key)
    return [parsed] if parsed else []


def timeline_record(element) -> dict:
    """``(row_key, [window rows])`` -> the row's timelines record (one row per window
    index: the last given wins)."""
    row_key, rows = element
    rows = sorted({r["window_index"]: r for r in rows}.values(),
                  key=lambda r: r["window_index"])
    first = rows[0]
    segments = merge_timeline(rows)
    return {"clip_id": first["clip_id"], "video_uri": first["video_uri"],
            "label": first["label"], "num_windows": first["num_windows"],
            "windows_scored": len(rows), "start_sec": segments[0]["start_sec"],
            "end_sec": max(s["end_sec"] for s in segments), "segments": segments,
            "row_key": row_key}


_TIMELINE_COLUMNS = ("clip_id", "video_uri", "label", "num_windows", "window_index",
                     "window_start_sec", "window_end_sec", "num_frames", "predicted_label",
                     "predicted_index", "predicted_probability")


def earlier_windows(readable, in_frames: bool = False) -> list:
    """A shard of DIR/windows -> ``(row_key, (run_id, timeline columns))`` per row
    (``in_frames``: see :func:`timeline_entry`)."""
    from beam_i3d.job.results import read_columns

    table = read_columns(readable.metadata.path, _TIMELINE_COLUMNS + ("row_key", "run_id"),
                         readable.open)
    out = []
    for row in table.to_pylist():
        parsed = parse_window_key(row.pop("row_key"))
        if parsed is not None:
            if in_frames:
                row["num_frames"] = None
            out.append((parsed[0], (row.pop("run_id"), row)))
    return out


def resumed_timeline(element):
    """After CoGroupByKey of a row's new window entries with those earlier runs wrote:
    the row's windows for its timeline (earlier runs' by run, then this run's, so
    that the newest row of each window wins), only for rows this run scored."""
    row_key, grouped = element
    new = list(grouped["new"])
    if not new:
        return []
    old = [row for _, row in sorted(grouped["old"], key=lambda e: e[0])]
    return [(row_key, old + new)]


class Timelines(beam.PTransform):
    """Window rows -> timelines records. Resuming (``output`` given), the windows that
    earlier runs wrote to ``output``/windows are merged in, for the rows this run
    scored windows of, so that a resumed row's new timeline covers all its windows."""

    def __init__(self, output: str | None = None, in_frames: bool = False):
        super().__init__()
        self._output = output
        self._in_frames = in_frames

    def expand(self, windows):
        entries = windows | "ByRow" >> beam.Map(timeline_entry, self._in_frames)
        if self._output is None:
            grouped = entries | "GroupByRow" >> beam.GroupByKey()
        else:
            from apache_beam.io import fileio

            from beam_i3d import fileio as bfileio

            old = (windows.pipeline
                   | "EarlierPattern" >> beam.Create(
                       [bfileio.join(self._output, "windows", "*.parquet")])
                   | "MatchEarlier" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
                   | "ReadEarlier" >> fileio.ReadMatches()
                   | "EarlierWindows" >> beam.FlatMap(earlier_windows, self._in_frames))
            grouped = ({"new": entries, "old": old}
                       | "GroupByRow" >> beam.CoGroupByKey()
                       | "WithEarlier" >> beam.FlatMap(resumed_timeline))
        return grouped | "Timeline" >> beam.Map(timeline_record)


def timeline_entry(record: dict, in_frames: bool = False):
    """A window row -> ``(row_key of its manifest row, the columns a timeline needs)``.
    ``in_frames`` (frame windows): a window covers its own frames' times,
    ``[window_start_sec, window_end_sec)``, not ``num_frames / 25`` (its ``num_frames``
    is left out: :func:`beam_i3d.job.windows.window_extent`)."""
    row_key, _ = parse_window_key(record["row_key"])
    entry = {c: record[c] for c in _TIMELINE_COLUMNS}
    if in_frames:
        entry["num_frames"] = None
    return row_key, entry


class ScoreWindows(beam.PTransform):
    """Keyed ClipRequests -> ``(windows records, timelines records, plans records,
    errors)``."""

    def __init__(self, options, score_clips: beam.PTransform, done=None):
        super().__init__()
        self._options = options
        self._score_clips = score_clips
        self._done = done  # DoneKeys' output when resuming

    def expand(self, requests):
        planned = (requests
                   | "ReshuffleRows" >> beam.Reshuffle()
                   | "PlanWindows" >> beam.ParDo(PlanWindows(self._options)).with_outputs(
                       PlanWindows.ERRORS, PlanWindows.PLANS, main="items"))
        if self._done is not None:
            settled = self._done | "SettledWindows" >> beam.FlatMap(settled_windows)
            items = ({"items": planned.items, "done": settled}
                     | "GroupWindows" >> beam.CoGroupByKey()
                     | "KeepUnsettled" >> beam.FlatMap(keep_unsettled))
        else:
            items = planned.items | "Items" >> beam.Values()
        decoded = (items
                   | "ReshuffleItems" >> beam.Reshuffle()
                   | "DecodeWindows" >> beam.ParDo(DecodeWindows(self._options)).with_outputs(
                       DecodeWindows.ERRORS, main="clips"))
        windows, inference_errors = decoded.clips | "ScoreWindows" >> self._score_clips
        timelines = windows | "Timelines" >> Timelines(
            self._options.output if self._done is not None else None,
            self._options.window.in_frames)
        errors = ((planned.errors, decoded.errors, inference_errors)
                  | "WindowErrors" >> beam.Flatten())
        return windows, timelines, planned.plans, errors


def expected_window_keys(row_key: str, num_windows: int) -> Sequence[str]:
    return [window_key(row_key, k) for k in range(num_windows)]
