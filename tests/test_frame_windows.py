"""Frame windows as research feature sets use them (``score --window-frames W
--stride-frames S --fps native|N``, ``--preset``): windows of a 29.97-fps video's own
frames, T = (N - W) // S + 1; a video shorter than a window looped and flagged; each
window equal to its frames scored alone; each frame pair's flow computed once per work
item, bit for bit what the window's own frames give; usage errors, presets, the recipe."""

from __future__ import annotations

import csv
import glob
import json
from fractions import Fraction

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_i3d.cli import main
from beam_i3d.job.windows import (Window, frame_windows, pair_runs, plan_frame_windows,
                                  split_items)
from beam_i3d.media.video_open import probe_frame_times
from test_pipeline import moving_texture
from video_factory import textured_image, write_video

NTSC = Fraction(30000, 1001)
W, S = 16, 4
N_LONG, N_SHORT = 50, 10


def read_rows(directory):
    files = sorted(glob.glob(str(directory / "*.parquet")))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def write_manifest(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["clip_id", "video_uri"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("ntsc")
    return (moving_texture(d / "long.mp4", N_LONG, rate=NTSC),
            moving_texture(d / "short.mp4", N_SHORT, rate=NTSC, seed=3))


@pytest.fixture(scope="module")
def native_run(videos, tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    text = d / "notes.mp4"
    text.write_text("not a video\n" * 20)
    long, short = videos
    manifest = write_manifest(d / "m.csv", [{"clip_id": "long", "video_uri": long},
                                            {"clip_id": "short", "video_uri": short},
                                            {"clip_id": "text", "video_uri": str(text)}])
    out = d / "out"
    assert main(["score", "--manifest", manifest, "--output", str(out), "--window-frames",
                 str(W), "--stride-frames", str(S), "--fps", "native", "--windows-per-item",
                 "4", "--decode-processes", "2", "--quiet"]) == 0
    return manifest, out


def test_frame_window_plans_count_full_windows_only():
    assert len(plan_frame_windows(50, 16, 4)) == (50 - 16) // 4 + 1 == 9
    assert plan_frame_windows(23, 16, 4) == [(0, 16), (4, 16)]  # the partial tail dropped
    assert plan_frame_windows(16, 16, 4) == [(0, 16)]
    assert plan_frame_windows(10, 16, 4) == [(0, 10)]  # shorter than a window: one
    assert plan_frame_windows(0, 16, 4) == []
    assert plan_frame_windows(128, 64) == [(0, 64), (64, 64)]
    windows = frame_windows([(0, 3), (2, 3)], lambda i: Fraction(i, 10))
    assert windows == [Window(0, 0, Fraction(3, 10), 0, 3), Window(1, Fraction(1, 5),
                                                                   Fraction(1, 2), 2, 3)]
    # Pairs a window needs, merged: [0,16) and [4,20) share pairs 4..14; touching windows
    # need no pair across their boundary.
    assert pair_runs([(0, 16), (4, 16)]) == [(0, 20)]
    assert pair_runs([(0, 4), (4, 4), (10, 1)]) == [(0, 4), (4, 8)]


def test_the_probe_reads_the_videos_own_frames_and_flags_a_variable_rate(videos, tmp_path):
    long, _ = videos
    frames = probe_frame_times(long)
    assert frames.count == N_LONG and frames.rate == pytest.approx(29.97, abs=0.01)
    assert not frames.variable
    assert frames.time(1) == Fraction(1001, 30000) and frames.end == N_LONG / NTSC
    steps = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14]  # frames held 1, 3 and 4 ticks of 1/30 s
    vfr = write_video(str(tmp_path / "vfr.mp4"), [textured_image(96, 128, seed=k)[..., None]
                                                  .repeat(3, -1) for k in range(len(steps))],
                      pts=steps, time_base=Fraction(1, 30), rate=30)
    probed = probe_frame_times(vfr)
    assert probed.count == len(steps) and probed.variable


def test_native_windows_are_the_videos_own_frames(native_run):
    manifest, out = native_run
    plans = {p["row_key"]: p for p in read_rows(out / "plans")}
    long, short = plans["long"], plans["short"]
    assert (long["num_frames"], long["num_windows"], long["looped"]) == (
        N_LONG, (N_LONG - W) // S + 1, False)
    assert long["fps"] == pytest.approx(float(NTSC)) and long["variable_frame_rate"] is False
    assert (long["window_frames"], long["stride_frames"], long["window_sec"]) == (W, S, None)
    assert (short["num_frames"], short["num_windows"], short["looped"]) == (N_SHORT, 1, True)
    windows = {w["row_key"]: w for w in read_rows(out / "windows")}
    assert sorted(windows) == sorted([f"long@w{k}" for k in range(9)] + ["short@w0"])
    for k in range(9):  # presentation times: first frame's start, last frame's end
        w = windows[f"long@w{k}"]
        assert w["window_start_sec"] == pytest.approx(float(k * S / NTSC), abs=1e-9)
        assert w["window_end_sec"] == pytest.approx(float((k * S + W) / NTSC), abs=1e-9)
        assert w["num_frames"] == W
    assert windows["short@w0"]["num_frames"] == N_SHORT
    assert windows["short@w0"]["window_end_sec"] == pytest.approx(float(N_SHORT / NTSC))
    errors = {e["row_key"]: e["error_type"] for e in read_rows(out / "errors")}
    assert errors == {"text": "NotAVideo"}
    recipe = json.loads((out / "recipe.json").read_text())["recipe"]
    assert (recipe["window_frames"], recipe["stride_frames"], recipe["fps"]) == (W, S, "native")
    assert "window_sec" not in recipe
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == 0


def test_features_export_gives_one_array_per_video(native_run, tmp_path):
    _, out = native_run
    feats = tmp_path / "feats"
    assert main(["features", str(out), "--out", str(feats)]) == 0
    assert np.load(feats / "long.npy").shape == ((N_LONG - W) // S + 1, 1024)
    assert np.load(feats / "long.npy").dtype == np.float32
    assert np.load(feats / "short.npy").shape == (1, 1024)
    index = {r["clip_id"]: r for r in pq.read_table(feats / "index.parquet").to_pylist()}
    assert index["long"]["fps"] == pytest.approx(float(NTSC))
    assert (index["long"]["window_frames"], index["long"]["stride_frames"]) == (W, S)
    assert index["long"]["window_sec"] is None
    assert index["short"]["looped"] is True and index["long"]["looped"] is False
    assert index["text"]["status"] == "failed"


def _alone(uri, window, streams=("rgb",), flow_backend="opencv", loop_to=W, batch=None):
    """Window ``window`` decoded as a clip of its own: its exact start, W frames."""
    from beam_i3d.media.preprocess import decode_for_streams, finish_clip

    clip = decode_for_streams(uri, window.start, streams=streams, max_seconds=None,
                              fps="native", max_frames=window.frames)
    return finish_clip(clip, streams=streams, flow_backend=flow_backend, loop_to=loop_to,
                       flow_batch_pairs=batch)


def test_each_window_equals_its_frames_scored_alone(native_run, videos):
    """A window's embedding and logits equal those of its frames decoded as a clip of
    their own (exact start, W frames) and scored by the same model: the first, a middle
    and the last window of the long video, and the short video's looped one."""
    from beam_i3d.job.inference import ClipExample, I3DModelHandler
    from beam_i3d.job.manifest import ClipRequest

    _, out = native_run
    windows = {w["row_key"]: w for w in read_rows(out / "windows")}
    long, short = videos
    plan = {k: Window(k, Fraction(int(f.pts[k * S]), 1) * f.time_base, None, k * S, W)
            for f in [probe_frame_times(long)] for k in (0, 4, 8)}
    handler = I3DModelHandler("default", None)
    model = handler.load_model()
    cases = [(f"long@w{k}", long, w) for k, w in plan.items()]
    cases.append(("short@w0", short, Window(0, Fraction(0), None, 0, N_SHORT)))
    for key, uri, window in cases:
        tensors = _alone(uri, window)
        assert tensors.rgb.shape[0] == W  # the short one looped to W
        example = ClipExample(ClipRequest(key, uri, None, None, None, "test", row_key=key),
                              tensors.num_frames, rgb=tensors.rgb)
        (result,) = handler.run_inference([example], model)
        got = result.inference
        np.testing.assert_allclose(windows[key]["rgb_embedding"], got["rgb_embedding"],
                                   atol=1e-4, rtol=0)
        np.testing.assert_allclose(windows[key]["logits"], got["logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend, frames, window, stride, pairs", [
    ("opencv", 8, 4, 2, 7),  # windows [0,4) [2,6) [4,8): 7 pairs once, not 9
    # [0,3) [1,4): 3 pairs, not 4; one pair a batch: one tf.function compilation
    pytest.param("tf", 4, 3, 1, 3, marks=pytest.mark.slow),
])
def test_flow_is_computed_once_per_pair_and_equals_each_window_alone(
        backend, frames, window, stride, pairs, videos, monkeypatch):
    """Overlapping frame windows of one work item: each pair's TV-L1 once, each window's
    flow bit for bit what its own frames decoded alone give."""
    from beam_i3d.media import flow as flow_ops
    from beam_i3d.media.decode_pool import DecodePool

    long, _ = videos
    windows = frame_windows(plan_frame_windows(frames, window, stride),
                            probe_frame_times(long).time)
    counted = []
    if backend == "tf":  # tf flow runs in this process: count the pairs it computes
        compute = flow_ops.compute_flow

        def counting(gray, *args, **kwargs):
            counted.append(len(gray) - 1)
            return compute(gray, *args, **kwargs)
        monkeypatch.setattr(flow_ops, "compute_flow", counting)
    with DecodePool(1) as pool:
        pool.submit("item", long, streams=("rgb", "flow"), flow_backend=backend,
                    flow_batch_pairs=1 if backend == "tf" else None,
                    windows=split_items(windows, 3)[0], fps="native", loop_to=window)
        (finished,) = list(pool.results())
    if backend == "tf":
        assert sum(counted) == pairs
        monkeypatch.undo()
    assert isinstance(finished.result, list) and len(finished.result) == len(windows)
    for w, got in zip(windows, finished.result):
        alone = _alone(long, w, streams=("rgb", "flow"), flow_backend=backend, loop_to=window,
                       batch=1 if backend == "tf" else None)
        assert got.flow.shape == (9, 224, 224, 2) and got.flow.dtype == np.uint8
        assert np.array_equal(got.flow, alone.flow), w
        assert np.array_equal(got.rgb, alone.rgb)


def _usage_error(capsys, argv):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_frame_options_usage_errors(videos, tmp_path, capsys):
    manifest = write_manifest(tmp_path / "m.csv", [{"clip_id": "a", "video_uri": videos[0]}])
    base = ["score", "--manifest", manifest, "--output", str(tmp_path / "out"), "--quiet"]
    err = _usage_error(capsys, base + ["--window", "1", "--window-frames", "16"])
    assert "--window/--stride" in err and "--window-frames/--stride-frames" in err
    err = _usage_error(capsys, base + ["--stride", "1", "--stride-frames", "4"])
    assert "use one pair or the other" in err
    for bad in (["--window-frames", "0"], ["--window-frames", "-3"],
                ["--window-frames", "16", "--stride-frames", "0"],
                ["--window-frames", "16", "--fps", "0"], ["--window-frames", "16", "--fps", "x"]):
        err = _usage_error(capsys, base + bad)
        assert "error: argument --" in err, (bad, err)
    assert "--fps needs --window-frames" in _usage_error(capsys, base + ["--fps", "native"])
    err = _usage_error(capsys, base + ["--preset", "thumos"])
    assert "unknown preset 'thumos'" in err and "thumos14-actionformer" in err
    err = _usage_error(capsys, base + ["--preset", "thumos14-actionformer"])
    assert "--rgb-checkpoint" in err and "--flow-checkpoint" in err and "\n" == err[-1]
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_presets_are_listed_and_overrides_recorded(videos, tmp_path, capsys):
    from beam_i3d.job.presets import PRESETS, apply

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["score", "--list-presets"])
    assert e.value.code == 0
    listing = capsys.readouterr().out
    for name, p in PRESETS.items():
        assert name in listing and p.command_line() in listing
    assert "--window-frames 16 --stride-frames 4 --fps native" in listing
    assert "RAFT" in listing and "flow_imagenet" in listing
    options, overridden = apply("thumos14-actionformer",
                                {"streams": ("rgb",), "stride_frames": 4, "fps": None,
                                 "window_frames": None})
    assert options == {"streams": ("rgb",), "window_frames": 16, "stride_frames": 4,
                       "fps": "native"}
    assert overridden == ("streams",)
    # A preset run whose stream is overridden to RGB only, with a checkpoint given:
    # the metadata records the preset and what was overridden.
    from conftest import release_layout, write_random_checkpoint

    ckpt = tmp_path / "rgb_imagenet"
    ckpt.mkdir()
    write_random_checkpoint(release_layout("rgb_imagenet"), str(ckpt / "model.ckpt"), seed=2)
    manifest = write_manifest(tmp_path / "m.csv", [{"clip_id": "short", "video_uri": videos[1]}])
    out = tmp_path / "out"
    assert main(["score", "--manifest", manifest, "--output", str(out), "--preset",
                 "thumos14-actionformer", "--streams", "rgb", "--rgb-checkpoint", str(ckpt),
                 "--quiet", "--decode-processes", "1"]) == 0
    (plan,) = read_rows(out / "plans")
    assert (plan["window_frames"], plan["stride_frames"], plan["looped"]) == (16, 4, True)
    from schemas import read_run_metadata

    meta = read_run_metadata(pq.read_schema(glob.glob(str(out / "windows" / "*.parquet"))[0]))
    assert meta["preset"] == "thumos14-actionformer"
    assert json.loads(meta["overridden"]) == ["streams"]


def test_a_resume_with_another_stride_or_fps_is_refused(native_run, capsys):
    manifest, out = native_run
    for option, value, shown in (("--stride-frames", "8", "stride_frames: recorded 4, this run 8"),
                                 ("--fps", "30", "fps: recorded native, this run 30")):
        argv = ["score", "--manifest", manifest, "--output", str(out), "--window-frames",
                str(W), "--stride-frames", str(S), "--fps", "native", "--skip-existing",
                "--quiet"]
        argv[argv.index(option) + 1] = value
        capsys.readouterr()
        assert main(argv) == 3
        assert shown in capsys.readouterr().err


def test_the_manual_lists_the_presets_as_the_command_does():
    from pathlib import Path

    from beam_i3d.job.presets import listing

    readme = (Path(__file__).parent.parent / "docs" / "features.md").read_text()
    assert listing() in readme
