"""The pure functions of :mod:`beam_i3d.job.windows`, fast and with exact values: window
options and their messages, planning, items, keys, cutting a decoded span into windows,
and merging scored windows into a timeline. (tests/test_windows.py runs the windowed
job end to end.)"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from beam_i3d.errors import EmptyClip
from beam_i3d.job.windows import (
    Window,
    WindowOptions,
    check_window_options,
    cut_windows,
    default_windows_per_item,
    merge_timeline,
    micro,
    parse_window_key,
    plan_windows,
    span_of,
    split_items,
    window_key,
    window_text,
)
from beam_i3d.media.video import DecodedClip, VideoInfo

# --- Options ----------------------------------------------------------------------------


def test_window_options_default_the_stride_to_the_window_and_the_items_to_a_minute():
    assert WindowOptions(10).stride_sec == 10
    assert WindowOptions(10, 5).stride_sec == 5
    assert WindowOptions(10).windows_per_item == 6
    assert WindowOptions(10, 5).windows_per_item == 11
    assert WindowOptions(10, 5, per_item=3).windows_per_item == 3


def test_micro_rounds_to_exact_microseconds():
    assert micro(0.1) == Fraction(1, 10)
    assert micro(1 / 3) == Fraction(333333, 1_000_000)
    assert micro(Fraction(2, 3)) == Fraction(666667, 1_000_000)
    assert micro(7) == 7


@pytest.mark.parametrize("window, stride, message", [
    (0, None, "the window must be a positive number of seconds, got 0"),
    (-2, 1, "the window must be a positive number of seconds, got -2"),
    (float("inf"), 1, "the window must be a positive number of seconds, got inf"),
    (float("nan"), 1, "the window must be a positive number of seconds, got nan"),
    (10, 0, "the stride must be a positive number of seconds, got 0"),
    (10, -1, "the stride must be a positive number of seconds, got -1"),
    (10, float("inf"), "the stride must be a positive number of seconds, got inf"),
    (10, 0.3, "the stride must be a whole number of 25-fps frames (a multiple of 0.04 s), "
              "got 0.3 s"),
    # Without a stride, the window is the stride and must be whole frames.
    (0.3, None, "the stride must be a whole number of 25-fps frames (a multiple of "
                "0.04 s), got 0.3 s"),
])
def test_check_window_options_refuses_with_the_reason(window, stride, message):
    with pytest.raises(ValueError) as e:
        check_window_options(window, stride)
    assert str(e.value) == message


@pytest.mark.parametrize("window, stride, message", [
    # Shorter than one frame: every window would hold no frame (1e-7 s rounds to 0 us,
    # a stride that never advances).
    (1e-7, None, "the window (--window) must be at least one 25-fps frame (0.04 s), "
                 "got 1e-07 s"),
    (0.039, 0.04, "the window (--window) must be at least one 25-fps frame (0.04 s), "
                  "got 0.039 s"),
    (1, 1e-7, "the stride (--stride) must be at least one 25-fps frame (0.04 s), got 1e-07 s"),
    (1, 0.02, "the stride (--stride) must be at least one 25-fps frame (0.04 s), got 0.02 s"),
])
def test_check_window_options_refuses_less_than_one_frame(window, stride, message):
    with pytest.raises(ValueError) as e:
        check_window_options(window, stride)
    assert str(e.value) == message


def test_check_window_options_accepts_whole_frame_strides():
    check_window_options(0.3, 0.04)  # the window itself need not be whole frames
    check_window_options(0.04)
    check_window_options(0.0400001, 0.04)  # one frame, to the microsecond
    check_window_options(10)


# --- Planning and items -----------------------------------------------------------------


def test_plan_windows_stop_at_the_first_window_that_reaches_the_end():
    # Window 1 ends exactly at the end: no window 2 [10, 15) after it.
    assert plan_windows(0, 15, 10, 5) == [Window(0, 0, 10), Window(1, 5, 15)]
    assert plan_windows(0, 15.5, 10, 5) == [Window(0, 0, 10), Window(1, 5, 15),
                                            Window(2, 10, Fraction(31, 2))]
    assert plan_windows(4, 5, 10) == [Window(0, 4, 5)]
    assert plan_windows(4, 4, 10) == [] and plan_windows(5, 4, 10) == []
    # Without a stride, windows touch; start and end are rounded to microseconds.
    assert plan_windows(1 / 3, 2, 1) == [Window(0, Fraction(333333, 10**6),
                                                Fraction(1333333, 10**6)),
                                         Window(1, Fraction(1333333, 10**6), 2)]


def test_default_windows_per_item_spans_a_minute():
    assert default_windows_per_item(10) == 6  # 0..60 s
    assert default_windows_per_item(10, 3) == 17  # last starts at 48 s, ends at 58 s
    assert default_windows_per_item(0.2, 0.2) == 300  # (60 - 0.2) / 0.2 = 298.999...
    assert default_windows_per_item(2, 0.52, 5) == 6
    assert default_windows_per_item(60) == 1
    assert default_windows_per_item(120) == 1 and default_windows_per_item(120, 1) == 1


def test_split_items_are_consecutive_runs():
    windows = plan_windows(0, 50, 10)
    assert split_items(windows, 1) == [[w] for w in windows]
    assert split_items(windows, 2) == [windows[0:2], windows[2:4], windows[4:5]]
    assert split_items(windows, 5) == [windows]
    assert split_items(windows, 9) == [windows]
    assert split_items([], 3) == []
    with pytest.raises(ValueError) as e:
        split_items(windows, 0)
    assert str(e.value) == "an item needs at least one window, got 0"


def test_span_of_runs_from_the_first_start_to_the_latest_end():
    assert span_of(plan_windows(0, 23, 10, 5)) == (0, 23)
    assert span_of(plan_windows(0, 23, 10, 5)[1:3]) == (5, 20)
    assert span_of([Window(4, Fraction(1, 2), 3)]) == (Fraction(1, 2), 3)


# --- Keys and names ---------------------------------------------------------------------


def test_window_keys_round_trip():
    assert window_key("a#repeat1", 12) == "a#repeat1@w12"
    assert window_key("x", 0) == "x@w0"
    assert parse_window_key("x@w0") == ("x", 0)
    assert parse_window_key("a@w3@w12") == ("a@w3", 12)
    assert parse_window_key("line\nbreak@w7") == ("line\nbreak", 7)
    for other in ["a", "a@w", "a@w01", "a@wx", "a@w1 ", "a@W1"]:
        assert parse_window_key(other) is None


def test_window_text():
    assert window_text(3, 30, 40) == "window 3 [30 s, 40 s)"
    assert window_text(0, Fraction(1, 3), Fraction(5, 2)) == "window 0 [0.333333 s, 2.5 s)"


# --- Cutting a decoded span -------------------------------------------------------------

INFO = VideoInfo(uri="/videos/v.mp4", format_name="mp4", codec="h264", pix_fmt="yuv420p",
                 width=320, height=240, sample_aspect_ratio=1.0, fps=25.0,
                 duration_sec=2.0)


def numbered_span(start, num_frames, gray=True):
    """A decoded span whose frame k is filled with k (rgb and gray), times start + k/25
    and source times 0.001 s before them."""
    k = np.arange(num_frames)
    times = start + k / 25
    return DecodedClip(
        rgb=np.broadcast_to(k.astype(np.uint8)[:, None, None, None],
                            (num_frames, 2, 2, 3)).copy(),
        gray=(np.broadcast_to(k.astype(np.uint8)[:, None, None], (num_frames, 3, 4)).copy()
              if gray else None),
        times=times, source_times=times - 0.001,
        start_sec=float(start), end_sec=float(start) + num_frames / 25, info=INFO)


def frame_numbers(clip):
    return clip.rgb[:, 0, 0, 0].tolist()


def test_cut_windows_slices_each_window_from_the_span():
    windows = plan_windows(1, 2.3, 0.5, 0.2)  # 0.5 s = 12.5 frames: 13 frames a window
    assert [(w.start, w.end) for w in windows] == [
        (1, Fraction(3, 2)), (Fraction(6, 5), Fraction(17, 10)),
        (Fraction(7, 5), Fraction(19, 10)), (Fraction(8, 5), Fraction(21, 10)),
        (Fraction(9, 5), Fraction(23, 10))]
    span = numbered_span(1, 33)
    clips = cut_windows(span, windows)
    assert [frame_numbers(c) for c in clips] == [list(range(f, f + 13))
                                                 for f in (0, 5, 10, 15, 20)]
    for clip, w in zip(clips, windows):
        first = frame_numbers(clip)[0]
        assert clip.gray[:, 0, 0].tolist() == frame_numbers(clip)
        assert clip.gray.shape == (13, 3, 4) and clip.rgb.shape == (13, 2, 2, 3)
        np.testing.assert_array_equal(clip.times, span.times[first:first + 13])
        np.testing.assert_array_equal(clip.source_times, span.source_times[first:first + 13])
        assert clip.start_sec == float(w.start)
        assert clip.end_sec == float(w.start + Fraction(13, 25))
        assert clip.info is INFO


def test_cut_windows_shortens_a_window_past_the_decoded_end_and_refuses_an_empty_one():
    windows = [Window(0, Fraction(1), Fraction(2)), Window(1, Fraction(37, 25), Fraction(62, 25)),
               Window(2, Fraction(2), Fraction(3)), Window(3, Fraction(11, 5), Fraction(3)),
               Window(4, Fraction(49, 25), Fraction(3))]
    span = numbered_span(1, 25, gray=False)  # frames of [1 s, 2 s)
    full, short, empty, beyond, last = cut_windows(span, windows)
    assert frame_numbers(full) == list(range(25)) and full.gray is None
    assert full.end_sec == 2.0
    assert frame_numbers(short) == list(range(12, 25)) and short.gray is None
    assert (short.start_sec, short.end_sec) == (1.48, 2.0)
    assert frame_numbers(last) == [24]  # the span's last frame alone
    assert (last.start_sec, last.end_sec) == (1.96, 2.0)
    assert isinstance(empty, EmptyClip) and isinstance(beyond, EmptyClip)
    # The message does not name the window: the errors row does (once, see below).
    assert str(empty) == ("/videos/v.mp4: no frames: the window starts at 2 s, after the "
                          "end of the video's frames (2.000 s)")
    assert str(beyond) == ("/videos/v.mp4: no frames: the window starts at 2.2 s, after the "
                           "end of the video's frames (2.000 s)")
    assert [c.range_end_sec for c in (full, short, last)] == [2.0, 2.0, 2.0]


def test_an_empty_window_names_where_the_frames_really_end_and_its_window_once():
    """The frames of a span end where its video's last frame ends (1.987 s here), not
    where its 25-fps frames do (2.0 s); the errors row names the window once."""
    import dataclasses

    from beam_i3d.job.manifest import ClipRequest
    from beam_i3d.job.records import request_error

    span = dataclasses.replace(numbered_span(1, 25), range_end_sec=1.987)
    w = Window(2, Fraction(2), Fraction(3))
    short, empty = cut_windows(span, [Window(1, Fraction(37, 25), Fraction(62, 25)), w])
    assert short.range_end_sec == 1.987 and short.end_sec == 2.0
    request = ClipRequest("v", "/videos/v.mp4", None, None, None, "m.csv:2", row_key="v@w2",
                          window=(w.index, float(w.start), float(w.end), 3))
    row = request_error("decode", empty, request)
    assert row["message"] == ("window 2 [2 s, 3 s): /videos/v.mp4: no frames: the window "
                              "starts at 2 s, after the end of the video's frames (1.987 s)")
    assert row["message"].count("window 2") == 1 and row["error_type"] == "EmptyClip"


@pytest.mark.parametrize("window", [Window(5, Fraction(101, 100), 2),
                                    Window(6, Fraction(24, 25), 2)])
def test_cut_windows_refuses_a_window_off_the_span_grid(window):
    with pytest.raises(ValueError) as e:
        cut_windows(numbered_span(1, 25), [window])
    assert str(e.value) == f"window {window.index} starts off the span's 25-fps grid"


def test_cut_windows_of_a_span_starting_off_whole_microseconds():
    # The span's float start is rounded to microseconds before the offsets are taken.
    span = numbered_span(1 / 3, 20)
    windows = plan_windows(1 / 3, 1, 0.2, 0.2)
    assert [frame_numbers(c) for c in cut_windows(span, windows)] == [
        [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16]]  # 1.67 frames: 2


# --- Timelines --------------------------------------------------------------------------


def scored(index, start, end, label, probability, label_index=None):
    return {"window_index": index, "window_start_sec": start, "window_end_sec": end,
            "predicted_label": label,
            "predicted_index": ord(label) if label_index is None else label_index,
            "predicted_probability": probability}


def test_merge_timeline_gives_every_field_of_every_segment():
    windows = [scored(0, 0, 4, "a", 0.25), scored(1, 2, 6, "a", 0.75),
               scored(2, 4, 8, "b", 0.5), scored(3, 6, 10, "b", 0.125),
               scored(4, 8, 12, "b", 0.375),
               # window 5 failed; 6 and 7 overlap it
               scored(6, 12, 16, "c", 1.0), scored(7, 14, 17, "c", 0.5)]
    assert merge_timeline(windows[::-1]) == [
        {"label": "a", "label_index": 97, "start_sec": 0.0, "end_sec": 5.0,
         "first_window": 0, "last_window": 1, "mean_probability": 0.5, "num_windows": 2},
        {"label": "b", "label_index": 98, "start_sec": 5.0, "end_sec": 12.0,
         "first_window": 2, "last_window": 4, "mean_probability": 1 / 3, "num_windows": 3},
        {"label": "c", "label_index": 99, "start_sec": 12.0, "end_sec": 17.0,
         "first_window": 6, "last_window": 7, "mean_probability": 0.75, "num_windows": 2},
    ]


def test_merge_timeline_boundaries_use_the_last_window_of_the_segment_before():
    # The boundary between a and b is the middle of [start of b's first window, end of
    # a's last window], not of a's first one; one window alone is a segment.
    windows = [scored(0, 0, 10, "a", 0.5, 7), scored(1, 3, 13, "a", 0.5, 7),
               scored(2, 6, 16, "b", 0.5, 8), scored(3, 9, 19, "a", 0.5, 7)]
    segments = merge_timeline(windows)
    assert [(s["label"], s["label_index"], s["start_sec"], s["end_sec"])
            for s in segments] == [("a", 7, 0.0, 9.5), ("b", 8, 9.5, 12.5),
                                   ("a", 7, 12.5, 19.0)]
    assert [type(s[k]) for s in segments for k in ("start_sec", "end_sec")] == [float] * 6
    assert [s["num_windows"] for s in segments] == [2, 1, 1]
    assert merge_timeline([scored(4, 1, 2, "z", 0.9)]) == [
        {"label": "z", "label_index": 122, "start_sec": 1.0, "end_sec": 2.0,
         "first_window": 4, "last_window": 4, "mean_probability": 0.9, "num_windows": 1}]


def test_merge_timeline_leaves_out_time_no_window_scored():
    """Windows of 1 s every 3 s: a segment never spans the 2 s between two windows, even
    of the same label; the last window, of one frame (its planned range 1 us, the
    video's last frame), lasts that frame's 0.04 s."""
    windows = [dict(scored(0, 0.0, 1.0, "a", 0.5), num_frames=25),
               dict(scored(1, 3.0, 4.0, "a", 0.7), num_frames=25),
               dict(scored(2, 6.0, 7.0, "b", 0.25), num_frames=25),
               dict(scored(3, 9.0, 9.000001, "b", 1.0), num_frames=1)]
    assert [(s["label"], s["start_sec"], s["end_sec"], s["first_window"], s["last_window"])
            for s in merge_timeline(windows)] == [
        ("a", 0.0, 1.0, 0, 0), ("a", 3.0, 4.0, 1, 1), ("b", 6.0, 7.0, 2, 2),
        ("b", 9.0, 9.04, 3, 3)]
    # Windows whose frames end early (the video's did) end where their frames do.
    short = merge_timeline([dict(scored(0, 0.0, 2.0, "a", 0.5), num_frames=30),
                            dict(scored(1, 2.0, 4.0, "b", 0.5), num_frames=50)])
    assert [(s["start_sec"], s["end_sec"]) for s in short] == [(0.0, 1.2), (2.0, 4.0)]
    # Touching windows still share their boundary; a failed window leaves its gap.
    touching = merge_timeline([scored(0, 0, 2, "a", 0.5), scored(1, 2, 4, "b", 0.5),
                               scored(3, 6, 8, "b", 0.5)])
    assert [(s["label"], s["start_sec"], s["end_sec"]) for s in touching] == [
        ("a", 0.0, 2.0), ("b", 2.0, 4.0), ("b", 6.0, 8.0)]


def test_window_extent_is_the_time_its_frames_stand_for():
    from beam_i3d.job.windows import window_extent

    assert window_extent({"window_start_sec": 16.0, "window_end_sec": 18.0,
                          "num_frames": 37}) == (16.0, 17.48)
    assert window_extent({"window_start_sec": 9.0, "window_end_sec": 9.033333,
                          "num_frames": 1}) == (9.0, 9.04)
    assert window_extent({"window_start_sec": 1.0, "window_end_sec": 2.0}) == (1.0, 2.0)
    # A frame window (16 frames of a 29.97-fps video at --fps native): its own times.
    assert window_extent({"window_start_sec": 0.533867, "window_end_sec": 1.067733,
                          "num_frames": 16}, in_frames=True) == (0.533867, 1.067733)
