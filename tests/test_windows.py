"""Windowed scoring of untrimmed videos (``score --window``): planning, cutting and
merging as pure functions, and the job end to end on a long video made of real clips."""

from __future__ import annotations

import glob
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_i3d.cli import main
from beam_i3d.job.windows import (
    Window,
    check_window_options,
    cut_windows,
    default_windows_per_item,
    merge_timeline,
    parse_window_key,
    plan_windows,
    span_of,
    split_items,
    window_key,
)
from video_factory import code_frame, declare_duration, read_code, textured_image, write_video

SAMPLE = Path(__file__).parent.parent / "beam_i3d" / "data" / "samples" / "v_CricketShot_g04_c01.mp4"
CRICKET_LOOPS = 3  # the 3.16 s sample, three times: 9.48 s of cricket
TEXTURE_FRAMES = 200  # then 8 s of a panning texture
BOUNDARY = CRICKET_LOOPS * 79 / 25  # 9.48 s


def read_rows(directory):
    return [r for f in sorted(glob.glob(os.path.join(directory, "*.parquet")))
            for r in pq.read_table(f).to_pylist()]


def write_manifest(path, rows):
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["clip_id", "video_uri", "start_sec", "end_sec",
                                               "label"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def sample_frames():
    with av.open(str(SAMPLE)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def texture_frames(count, size=(224, 224), seed=0):
    h, w = size
    gray = textured_image(h, w + 3 * count, seed=seed)
    texture = np.stack([gray, 255 - gray, gray // 2 + 64], axis=-1)
    return [texture[:, 3 * k:3 * k + w] for k in range(count)]


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """17.48 s of real H.264: the cricket sample three times, then a panning texture."""
    d = tmp_path_factory.mktemp("long")
    cricket = sample_frames()
    assert len(cricket) == 79 and cricket[0].shape == (224, 224, 3)
    frames = cricket * CRICKET_LOOPS + texture_frames(TEXTURE_FRAMES)
    return write_video(str(d / "long.mp4"), frames, rate=25)


# --- Pure functions --------------------------------------------------------------------


def test_plan_windows_cover_the_range_and_the_last_ends_at_the_end():
    assert plan_windows(0, 23, 10) == [Window(0, 0, 10), Window(1, 10, 20), Window(2, 20, 23)]
    assert plan_windows(0, 23, 10, 5) == [Window(0, 0, 10), Window(1, 5, 15),
                                          Window(2, 10, 20), Window(3, 15, 23)]
    assert plan_windows(0, 20, 10) == [Window(0, 0, 10), Window(1, 10, 20)]
    assert plan_windows(2.5, 4, 10) == [Window(0, Fraction(5, 2), 4)]  # shorter than a window
    assert plan_windows(3, 3, 10) == []
    windows = plan_windows(1.04, 7.3, 2, 0.52)
    assert windows[0].start == Fraction(104, 100) and windows[-1].end == Fraction(73, 10)
    assert all(b.start - a.start == Fraction(52, 100) for a, b in zip(windows, windows[1:]))


def test_window_options_items_and_keys():
    check_window_options(10, 5)
    check_window_options(2, 0.24)
    for bad in [(10, 0.3), (0, None), (10, -1)]:
        with pytest.raises(ValueError):
            check_window_options(*bad)
    assert default_windows_per_item(10) == 6 and default_windows_per_item(10, 5) == 11
    assert default_windows_per_item(120) == 1
    assert [len(i) for i in split_items(plan_windows(0, 95, 10), 4)] == [4, 4, 2]
    assert window_key("a#repeat1", 12) == "a#repeat1@w12"
    assert parse_window_key("a#repeat1@w12") == ("a#repeat1", 12)
    assert parse_window_key("a@w") is None and parse_window_key("a@w01") is None


def segment_spans(segments):
    return [(s["label"], s["start_sec"], s["end_sec"], s["num_windows"]) for s in segments]


def windows_of(labels, window, stride, probabilities=None):
    rows = []
    for k, label in enumerate(labels):
        if label is None:  # a window that failed
            continue
        rows.append({"window_index": k, "window_start_sec": k * stride,
                     "window_end_sec": k * stride + window, "predicted_label": label,
                     "predicted_index": ord(label[0]),
                     "predicted_probability": (probabilities or [0.5] * len(labels))[k]})
    return rows[::-1]  # any order


def test_merge_timeline_on_known_labels():
    touching = merge_timeline(windows_of("aabbba", 10, 10, [0.2, 0.4, 0.9, 0.6, 0.3, 1.0]))
    assert segment_spans(touching) == [("a", 0, 20, 2), ("b", 20, 50, 3), ("a", 50, 60, 1)]
    assert [round(s["mean_probability"], 6) for s in touching] == [0.3, 0.6, 1.0]
    assert [(s["first_window"], s["last_window"]) for s in touching] == [(0, 1), (2, 4), (5, 5)]
    # Overlapping windows: the boundary is the middle of the overlap.
    overlapping = merge_timeline(windows_of("aab", 10, 5))
    assert segment_spans(overlapping) == [("a", 0, 12.5, 2), ("b", 12.5, 20, 1)]
    # Failed windows in between: their time is a gap, in no segment.
    gap = merge_timeline(windows_of(["a", None, None, "b"], 10, 10))
    assert segment_spans(gap) == [("a", 0, 10, 1), ("b", 30, 40, 1)]
    assert merge_timeline([]) == []


def test_cut_windows_equal_decoding_each_window_as_a_clip(long_video):
    """The frames of each window, cut from one decode of the item, are those of the
    window decoded as its own clip (overlapping windows; the last one short)."""
    from beam_i3d.media.video import decode_clip

    windows = plan_windows(12.4, 17.48, 2, 0.72)
    assert windows[-1].end - windows[-1].start < 2
    start, end = span_of(windows)
    span = decode_clip(long_video, float(start), float(end), max_seconds=None, keep_gray=True)
    for w, part in zip(windows, cut_windows(span, windows)):
        alone = decode_clip(long_video, float(w.start), float(w.end), max_seconds=None,
                            keep_gray=True)
        assert part.num_frames == alone.num_frames > 0
        np.testing.assert_array_equal(part.rgb, alone.rgb)
        np.testing.assert_array_equal(part.gray, alone.gray)
        np.testing.assert_array_equal(part.source_times, alone.source_times)
        assert (part.start_sec, part.end_sec) == (alone.start_sec, alone.end_sec)
    # A window past the decoded frames is that window's EmptyClip.
    from beam_i3d.errors import EmptyClip

    beyond = cut_windows(span, [Window(9, Fraction(1748, 100), Fraction(19))])
    assert isinstance(beyond[0], EmptyClip)


# --- The job -----------------------------------------------------------------------------

WINDOW, STRIDE = 2.0, 2.0


@pytest.fixture(scope="module")
def windowed_run(long_video, tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    text = d / "notes.mp4"
    text.write_text("not a video\n" * 20)
    manifest = write_manifest(d / "m.csv", [
        {"clip_id": "long", "video_uri": long_video, "label": "playing cricket"},
        {"clip_id": "part", "video_uri": long_video, "start_sec": "14.3", "end_sec": "30"},
        {"clip_id": "missing", "video_uri": str(d / "missing.mp4")},
        {"clip_id": "text", "video_uri": str(text)},
        {"clip_id": "bad", "video_uri": long_video, "start_sec": "5", "end_sec": "1"},
    ])
    out = d / "out"
    code = main(["score", "--manifest", manifest, "--output", str(out), "--window", str(WINDOW),
                 "--windows-per-item", "3", "--decode-processes", "2", "--quiet"])
    assert code == 0
    return manifest, out


def test_every_window_is_settled_and_verified(windowed_run):
    manifest, out = windowed_run
    plans = {p["row_key"]: p for p in read_rows(out / "plans")}
    assert {k: p["num_windows"] for k, p in plans.items()} == {"long": 9, "part": 2}
    assert plans["long"]["duration_sec"] == pytest.approx(17.48)
    windows = read_rows(out / "windows")
    keys = sorted(w["row_key"] for w in windows)
    assert keys == sorted([f"long@w{k}" for k in range(9)] + ["part@w0", "part@w1"])
    long = sorted((w for w in windows if w["clip_id"] == "long"), key=lambda w: w["window_index"])
    assert [(w["window_start_sec"], w["window_end_sec"]) for w in long][-2:] == [
        (14.0, 16.0), (16.0, pytest.approx(17.48))]
    assert [w["num_frames"] for w in long] == [50] * 8 + [37]
    part = sorted((w for w in windows if w["clip_id"] == "part"), key=lambda w: w["window_index"])
    assert [(w["window_start_sec"], w["window_end_sec"]) for w in part] == [
        (14.3, 16.3), (16.3, pytest.approx(17.48))]
    # The row's range as scored (its plan's): its end_sec of 30 s is past the frames.
    assert all(w["start_sec"] == 14.3 and w["end_sec"] == pytest.approx(17.48) for w in part)
    assert plans["part"]["range_end_sec"] == pytest.approx(17.48)
    errors = {e["row_key"]: e for e in read_rows(out / "errors")}
    assert {k: e["error_type"] for k, e in errors.items()} == {
        "missing": "VideoNotFound", "text": "NotAVideo", "bad": "ManifestError"}
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == 0


def test_timeline_follows_the_content(windowed_run):
    _, out = windowed_run
    timelines = {t["row_key"]: t for t in read_rows(out / "timelines")}
    assert set(timelines) == {"long", "part"}
    long = timelines["long"]
    assert (long["num_windows"], long["windows_scored"]) == (9, 9)
    segments = long["segments"]
    assert segments[0]["label"] == "playing cricket" and segments[0]["start_sec"] == 0
    assert segments[-1]["end_sec"] == pytest.approx(17.48)
    # One change of label, within one stride of the true boundary (9.48 s).
    assert len(segments) == 2, segments
    assert abs(segments[0]["end_sec"] - BOUNDARY) <= STRIDE
    assert segments[1]["label"] != "playing cricket"
    assert sum(s["num_windows"] for s in segments) == 9


def test_window_rows_equal_scoring_each_window_as_a_clip(windowed_run, long_video, tmp_path):
    """Same recipe, same model: a window's logits are those of its range scored as a clip
    of its own (a window before the boundary, one across it, the short last one, and a
    window of a row with a time range)."""
    _, out = windowed_run
    windows = {w["row_key"]: w for w in read_rows(out / "windows")}
    chosen = ["long@w1", "long@w4", "long@w8", "part@w0"]
    manifest = write_manifest(tmp_path / "clips.csv", [
        {"clip_id": key, "video_uri": long_video, "start_sec": repr(windows[key]["window_start_sec"]),
         "end_sec": repr(windows[key]["window_end_sec"])} for key in chosen])
    clips_out = tmp_path / "clips"
    assert main(["score", "--manifest", manifest, "--output", str(clips_out),
                 "--max-seconds", str(WINDOW), "--quiet"]) == 0
    clips = {c["clip_id"]: c for c in read_rows(clips_out / "scores")}
    assert set(clips) == set(chosen)
    for key in chosen:
        window, clip = windows[key], clips[key]
        assert window["num_frames"] == clip["num_frames"]
        np.testing.assert_allclose(window["logits"], clip["logits"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(window["rgb_embedding"], clip["rgb_embedding"], atol=1e-4,
                                   rtol=0)
        assert window["predicted_label"] == clip["predicted_label"]


def test_a_lost_window_is_detected_and_resumed(windowed_run, tmp_path, capsys):
    """A window missing from the output fails verify (exit 4); --skip-existing scores
    that window only; a lost plan is a missing row."""
    import shutil

    import pyarrow as pa

    manifest, first = windowed_run
    out = tmp_path / "out"
    shutil.copytree(first, out)
    lost = "long@w3"
    for path in glob.glob(str(out / "windows" / "*.parquet")):
        table = pq.read_table(path)
        keys = table.column("row_key").to_pylist()
        if lost in keys:
            pq.write_table(table.filter(pa.array([k != lost for k in keys])), path)
    capsys.readouterr()
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == 4
    assert f"missing rows: {lost}" in capsys.readouterr().out
    before = set(glob.glob(str(out / "windows" / "*.parquet")))
    assert main(["score", "--manifest", manifest, "--output", str(out), "--window", str(WINDOW),
                 "--windows-per-item", "3", "--skip-existing", "--quiet"]) == 0
    new = set(glob.glob(str(out / "windows" / "*.parquet"))) - before
    assert [r["row_key"] for f in new for r in pq.read_table(f).to_pylist()] == [lost]
    # The resumed row's new timeline covers all its windows, the earlier ones included.
    timelines = sorted((t for t in read_rows(out / "timelines") if t["row_key"] == "long"),
                       key=lambda t: t["run_id"])
    assert len(timelines) == 2 and timelines[1]["windows_scored"] == 9
    assert timelines[1]["segments"] == timelines[0]["segments"]
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == 0
    # Without its plan, a row is missing (not silently fewer windows).
    shutil.rmtree(out / "plans")
    os.makedirs(out / "plans")
    pq.write_table(_plans_without(first, "long"), out / "plans" / "kept.parquet")
    capsys.readouterr()
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == 4
    assert "missing rows: long (" in capsys.readouterr().out


def _plans_without(output, row_key):
    import pyarrow as pa

    table = pa.concat_tables([pq.read_table(f) for f in glob.glob(str(output / "plans" / "*.parquet"))])
    return table.filter(pa.array([k != row_key for k in table.column("row_key").to_pylist()]))


def test_readme_timelines_query_runs_on_the_output(windowed_run):
    import re

    import duckdb

    _, out = windowed_run
    readme = (Path(__file__).parent.parent / "docs" / "features.md").read_text()
    sql = re.search(r"<!-- duckdb-timelines -->\s*```sql\n(.*?)```", readme, re.S).group(1)
    rows = duckdb.sql(sql.replace("out/lectures/timelines", str(out / "timelines"))).fetchall()
    expected = [(t["clip_id"], s["label"], s["start_sec"], s["end_sec"])
                for t in read_rows(out / "timelines") for s in t["segments"]]
    assert sorted(r[:4] for r in rows) == sorted(expected)
    assert rows[0][0] == "long" and rows[0][4] == max(r[4] for r in rows)


@pytest.fixture(scope="module")
def flow_checkpoint(tmp_path_factory):
    from conftest import release_layout, write_random_checkpoint

    d = tmp_path_factory.mktemp("flow_imagenet")
    write_random_checkpoint(release_layout("flow_imagenet"), str(d / "model.ckpt"), seed=5)
    return str(d)


def test_two_stream_overlapping_windows_equal_their_clips(flow_checkpoint, tmp_path):
    """RGB + flow with overlapping windows: each window's flow uses its own frames, so
    its logits are those of the window scored as a clip."""
    video = write_video(str(tmp_path / "pan.mp4"), texture_frames(40, size=(96, 128), seed=4),
                        rate=25)  # 1.6 s
    manifest = write_manifest(tmp_path / "m.csv", [{"clip_id": "pan", "video_uri": video}])
    two = ["--streams", "rgb,flow", "--flow-checkpoint", flow_checkpoint, "--quiet"]
    out = tmp_path / "out"
    assert main(["score", "--manifest", manifest, "--output", str(out), "--window", "0.6",
                 "--stride", "0.4", "--windows-per-item", "2", *two]) == 0
    windows = sorted(read_rows(out / "windows"), key=lambda w: w["window_index"])
    assert [(w["window_start_sec"], w["window_end_sec"], w["num_frames"]) for w in windows] == [
        (0.0, 0.6, 15), (0.4, 1.0, 15), (0.8, 1.4, 15), (1.2, 1.6, 10)]
    clips_manifest = write_manifest(tmp_path / "clips.csv", [
        {"clip_id": w["row_key"], "video_uri": video, "start_sec": repr(w["window_start_sec"]),
         "end_sec": repr(w["window_end_sec"])} for w in windows])
    clips_out = tmp_path / "clips"
    assert main(["score", "--manifest", clips_manifest, "--output", str(clips_out),
                 "--max-seconds", "0.6", *two]) == 0
    clips = {c["clip_id"]: c for c in read_rows(clips_out / "scores")}
    for w in windows:
        clip = clips[w["row_key"]]
        for column in ("rgb_logits", "flow_logits", "flow_embedding"):
            np.testing.assert_allclose(w[column], clip[column], atol=1e-4, rtol=1e-5)
    timeline = read_rows(out / "timelines")[0]
    assert timeline["windows_scored"] == 4 and timeline["segments"][-1]["end_sec"] == 1.6


def test_report_prints_the_timeline(windowed_run, tmp_path, capsys):
    _, out = windowed_run
    capsys.readouterr()
    assert main(["report", str(out), "--video", "long", "--out", str(tmp_path / "one")]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == f"beam-i3d report for {out}"  # the header first, then the timelines
    at = next(i for i, l in enumerate(text) if l.startswith("long ("))
    assert "9/9 windows scored, 2 segments" in text[at]
    assert "0:00.0" in text[at + 1] and "playing cricket" in text[at + 1]
    assert text[at + 2].rstrip().endswith("windows)") and "0:17.5" in text[at + 2]
    assert main(["report", str(out), "--out", str(tmp_path / "all")]) == 0  # the longest
    text = capsys.readouterr().out.splitlines()
    first = next(i for i, l in enumerate(text) if l.startswith("long ("))
    heads = [l.split(" ")[0] for l in text[first:-1] if not l.startswith(" ")]
    assert text[-1].startswith("report: ")
    assert heads == ["long", "part"]
    assert ("windows: 11 scored of 11 planned over 2 manifest row(s); failures: 0 window(s), "
            "3 manifest row(s)") in text


def test_report_html_charts_the_timeline(windowed_run, tmp_path, capsys):
    """The HTML report of the windowed run: a Timelines section with the chosen video's
    chart (bands in its labels' colours, the label change where the timeline puts it)
    and its segments; --video shows that video only; an unknown one is an error."""
    import base64
    import io
    import json

    from PIL import Image

    from beam_i3d.report.timelines import clock

    _, out = windowed_run
    report = tmp_path / "report"
    assert main(["report", str(out), "--video", "long", "--out", str(report)]) == 0
    page = (report / "report.html").read_text()
    summary = json.loads((report / "summary.json").read_text())
    (shown,) = summary["timelines"]["shown"]
    assert shown["clip_id"] == "long" and shown["chart"] == "timeline_1_long.png"
    assert sorted(p.name for p in report.glob("timeline_*.png")) == ["timeline_1_long.png"]
    assert "part" not in {t["clip_id"] for t in summary["timelines"]["shown"]}
    assert "<h2 id=timelines>Timelines</h2>" in page and "<h3>part</h3>" not in page
    png = (report / "timeline_1_long.png").read_bytes()
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in page
    timeline = {t["row_key"]: t for t in read_rows(out / "timelines")}["long"]
    for s in timeline["segments"]:
        assert (f'<td class="n">{clock(s["start_sec"])}</td><td class="n">'
                f'{clock(s["end_sec"])}</td><td>{s["label"]}</td>') in page
    # The per-window points are the windows' top-1 probabilities.
    windows = sorted((w for w in read_rows(out / "windows") if w["clip_id"] == "long"),
                     key=lambda w: w["window_index"])
    assert [w["probability"] for w in shown["windows"]] == pytest.approx(
        [w["predicted_probability"] for w in windows])
    # The chart: two labels, two band colours; in the segment strip the first label's
    # share is the first segment's share of the video (its end: 10.0 s of 17.48).
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert image.shape == (380, 1000, 3)
    first, second = (shown["colours"][s["label"]] for s in timeline["segments"])
    assert first != second
    masks = [np.abs(image - [int(c[i:i + 2], 16) for i in (1, 3, 5)]).max(axis=2) <= 2
             for c in (first, second)]
    row = int(np.argmax(masks[0].sum(axis=1) + masks[1].sum(axis=1)))
    cols = np.flatnonzero(masks[0][row] | masks[1][row])
    strip = max(np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1), key=len)
    a, b = (np.intersect1d(np.flatnonzero(m[row]), strip) for m in masks)
    share = timeline["segments"][0]["end_sec"] / timeline["end_sec"]
    assert a.size / strip.size == pytest.approx(share, abs=0.01)
    assert a.max() < b.min()

    capsys.readouterr()
    assert main(["report", str(out), "--video", "nosuch", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "--video 'nosuch': no timeline" in err and "it has 2: long, part" in err


# --- Videos whose header lies, strides past the window, ranges past the end (issue #21) ---


@pytest.fixture(scope="module")
def misdeclared(tmp_path_factory):
    """A real 4-s video (100 coded frames at 25 fps) whose MP4 header declares 1 s
    (tests/video_factory.py's declare_duration), and a 30-fps video of 271 frames (its
    last frame ends at 9.033 s)."""
    d = tmp_path_factory.mktemp("misdeclared")
    liar = write_video(str(d / "liar.mp4"), lambda i: code_frame(i, 160, 120), num_frames=100)
    declare_duration(liar, 1.0)
    sparse = write_video(str(d / "sparse.mp4"), lambda i: code_frame(i, 160, 120),
                         num_frames=271, rate=30)
    return liar, sparse


def test_the_probe_reads_where_the_frames_really_end(misdeclared):
    """The header says 1 s, the frames run to 4 s: the probe reads both (no frame
    decoded), and a range after the declared end decodes the frames that are there."""
    from beam_i3d.media.video import decode_clip, probe_extent

    liar, sparse = misdeclared
    with av.open(liar) as container:
        assert container.duration == 1_000_000  # what the header declares
    extent = probe_extent(liar)
    assert (extent.declared, extent.exact, extent.frames_end) == (1, True, 4)
    assert probe_extent(sparse).frames_end == Fraction(271, 30)
    clip = decode_clip(liar, 2.0, 3.0)  # was EmptyClip: "after the end of the video (1.000 s)"
    assert [read_code(f) for f in clip.rgb] == list(range(50, 75))
    assert clip.range_end_sec == 3.0
    whole = decode_clip(liar, 1.0, 20.0, max_seconds=None)
    assert whole.num_frames == 75 and whole.range_end_sec == 4.0


def test_a_window_or_stride_under_one_frame_is_a_usage_error(misdeclared, tmp_path, capsys):
    liar, _ = misdeclared
    manifest = write_manifest(tmp_path / "m.csv", [{"clip_id": "liar", "video_uri": liar}])
    for options, option in ((["--window", "1e-7"], "--window"),
                            (["--window", "1", "--stride", "0.01"], "--stride")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(["score", "--manifest", manifest, "--output", str(tmp_path / "out"),
                  *options, "--quiet"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"beam-i3d score: error: the {option[2:]} ({option}) must be "
                              "at least one 25-fps frame (0.04 s)"), err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def misdeclared_run(misdeclared, tmp_path_factory):
    liar, _ = misdeclared
    d = tmp_path_factory.mktemp("liar_run")
    manifest = write_manifest(d / "m.csv", [
        {"clip_id": "liar", "video_uri": liar},
        {"clip_id": "liar_to_20", "video_uri": liar, "start_sec": "1", "end_sec": "20"},
    ])
    out = d / "out"
    assert main(["score", "--manifest", manifest, "--output", str(out), "--window", "1",
                 "--windows-per-item", "2", "--quiet"]) == 0
    return manifest, out


def test_windows_cover_the_frames_past_a_header_that_declares_less(misdeclared_run):
    """The header says 1 s: the windows still cover the 4 s of frames (one window and
    3 s never scored before), the plan says how many, and verify agrees."""
    manifest, out = misdeclared_run
    plans = {p["row_key"]: p for p in read_rows(out / "plans")}
    assert {k: (p["duration_sec"], p["range_start_sec"], p["range_end_sec"], p["num_windows"])
            for k, p in plans.items()} == {"liar": (1.0, 0.0, 4.0, 4),
                                           "liar_to_20": (1.0, 1.0, 4.0, 3)}
    windows = sorted(read_rows(out / "windows"), key=lambda w: (w["clip_id"], w["window_index"]))
    assert [(w["row_key"], w["window_start_sec"], w["window_end_sec"], w["num_frames"])
            for w in windows] == [
        ("liar@w0", 0.0, 1.0, 25), ("liar@w1", 1.0, 2.0, 25), ("liar@w2", 2.0, 3.0, 25),
        ("liar@w3", 3.0, 4.0, 25), ("liar_to_20@w0", 1.0, 2.0, 25),
        ("liar_to_20@w1", 2.0, 3.0, 25), ("liar_to_20@w2", 3.0, 4.0, 25)]
    # The rows' range as scored, as the plan's: the frames end at 4 s, not at 20.
    assert {(w["clip_id"], w["start_sec"], w["end_sec"]) for w in windows} == {
        ("liar", None, None), ("liar_to_20", 1.0, 4.0)}
    assert read_rows(out / "errors") == []
    timelines = {t["row_key"]: t for t in read_rows(out / "timelines")}
    assert (timelines["liar"]["start_sec"], timelines["liar"]["end_sec"]) == (0.0, 4.0)
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == 0


def test_a_clip_records_the_range_it_scored(misdeclared, tmp_path):
    """Clip mode: a row whose end is past the video's frames records where they end
    (4 s, not 20), as a windowed plan's range_end_sec does; a range inside the video
    records its own end; a row without an end keeps null (to the end of the video)."""
    liar, _ = misdeclared
    manifest = write_manifest(tmp_path / "m.csv", [
        {"clip_id": "to_20", "video_uri": liar, "start_sec": "1", "end_sec": "20"},
        {"clip_id": "inside", "video_uri": liar, "start_sec": "2", "end_sec": "3.5"},
        {"clip_id": "whole", "video_uri": liar},
    ])
    out = tmp_path / "out"
    assert main(["score", "--manifest", manifest, "--output", str(out), "--quiet"]) == 0
    scores = {r["clip_id"]: r for r in read_rows(out / "scores")}
    assert {k: (r["start_sec"], r["end_sec"], r["num_frames"]) for k, r in scores.items()} == {
        "to_20": (1.0, 4.0, 75), "inside": (2.0, 3.5, 38), "whole": (None, None, 100)}


@pytest.fixture(scope="module")
def sparse_run(misdeclared, tmp_path_factory):
    _, sparse = misdeclared
    d = tmp_path_factory.mktemp("sparse_run")
    manifest = write_manifest(d / "m.csv", [{"clip_id": "sparse", "video_uri": sparse}])
    out = d / "out"
    assert main(["score", "--manifest", manifest, "--output", str(out), "--window", "1",
                 "--stride", "3", "--quiet"]) == 0
    return manifest, out


def test_timelines_leave_out_what_no_window_scored(sparse_run):
    """--window 1 --stride 3 scores [0,1), [3,4), [6,7) and the last frame's [9, 9.033):
    no segment spans the 2 s between windows, and the last window, one frame, lasts
    that frame's 0.04 s."""
    _, out = sparse_run
    windows = sorted(read_rows(out / "windows"), key=lambda w: w["window_index"])
    assert [(w["window_start_sec"], w["window_end_sec"], w["num_frames"]) for w in windows] == [
        (0.0, 1.0, 25), (3.0, 4.0, 25), (6.0, 7.0, 25), (9.0, pytest.approx(9.033333), 1)]
    (timeline,) = read_rows(out / "timelines")
    segments = timeline["segments"]
    spans = [(s["start_sec"], s["end_sec"]) for s in segments]
    scored = [(0.0, 1.0), (3.0, 4.0), (6.0, 7.0), (9.0, 9.04)]
    for a, b in spans:  # inside one window's extent
        assert any(lo <= a < b <= hi for lo, hi in scored), spans
    assert spans[-1] == (9.0, 9.04) and spans[0][0] == 0.0
    assert sum(s["num_windows"] for s in segments) == 4
    assert (timeline["start_sec"], timeline["end_sec"]) == (0.0, 9.04)


def test_report_text_gives_each_segment_its_length(sparse_run, capsys):
    _, out = sparse_run
    capsys.readouterr()
    assert main(["report", str(out), "--out", str(out.parent / "report")]) == 0
    segments = [line for line in capsys.readouterr().out.splitlines()
                if line.endswith("windows)")]
    last = segments[-1]  # the header and summary come first (#21)
    assert "0:09.0" in last and "(0.04 s, mean p " in last and last.endswith("1 windows)")


def test_report_chart_draws_the_gaps_as_gaps(sparse_run, tmp_path):
    """In the chart's segment strip, time no window scored is not in a label's colour:
    the strip's coloured runs are the segments, with gaps twice a window's width."""
    import io
    import json

    from PIL import Image

    _, out = sparse_run
    report = tmp_path / "report"
    assert main(["report", str(out), "--video", "sparse", "--out", str(report)]) == 0
    summary = json.loads((report / "summary.json").read_text())
    (shown,) = summary["timelines"]["shown"]
    assert [(w["start_sec"], w["end_sec"]) for w in shown["windows"]][-1] == (9.0, 9.04)
    image = np.asarray(Image.open(io.BytesIO((report / shown["chart"]).read_bytes()))
                       .convert("RGB")).astype(int)
    colours = [[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in shown["colours"].values()]
    coloured = np.zeros(image.shape[:2], bool)
    for c in colours:
        coloured |= np.abs(image - c).max(axis=2) <= 2
    row = int(np.argmax(coloured.sum(axis=1)))  # a row through the strip
    cols = np.flatnonzero(coloured[row])
    runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
    px = (runs[2][0] - runs[0][0]) / 6.0  # pixels per second (windows 3 s apart)
    runs = [r for r in runs if r[0] <= runs[0][0] + 9.04 * px + 2]  # not the legend's
    assert len(runs) == len(shown["segments"]) == 4, [(r[0], r[-1]) for r in runs]
    assert runs[-1][0] == pytest.approx(runs[0][0] + 9 * px, abs=3)
    assert runs[0].size == pytest.approx(px, rel=0.05)  # [0, 1): one second
    assert runs[1][0] - runs[0][-1] - 1 == pytest.approx(2 * px, rel=0.05)  # the gap
    assert runs[-1].size >= 1  # the last frame's 0.04 s is drawn, not lost
