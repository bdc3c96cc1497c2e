"""The progress line: counts from the run's shards, rate and ETA."""

from __future__ import annotations

import io

from beam_i3d.job.progress import (Earlier, ProgressPrinter, ShardProgress, format_duration,
                                   progress_line)


def test_progress_line_counts_every_kind_of_settled_row():
    values = {"total": 200, "done": 100, "failed": 8}
    line = progress_line(values, elapsed=125, rate=2.0)
    assert line == ("[beam-i3d] 100/200 rows (50%), 8 failed, 2.00 rows/s, ETA 50s, "
                    "elapsed 2m05s")
    assert progress_line({}, 3, None) == "[beam-i3d] 0/? rows, 0 failed, elapsed 3s"
    assert format_duration(7322) == "2h02m"
    # Resuming: failures of earlier runs are in the count and said; never over 100%.
    assert progress_line({"total": 5000, "done": 5003, "failed": 4999,
                          "failed_earlier": 4990}, 1, 2.0) == (
        "[beam-i3d] 5,000/5,000 rows (100%), 4,999 failed (4,990 earlier), 2.00 rows/s, "
        "elapsed 1s")
    windows = {"windowed": 1, "total": 14, "done": 10, "failed": 3, "failed_rows": 1,
               "rows": 4, "rows_planned": 3}
    assert progress_line(windows, 1, 1.0) == (
        "[beam-i3d] 10/14 windows (71%) of 3/4 rows planned, 2 windows and 1 row failed, "
        "1.00 windows/s, elapsed 1s")  # no ETA while rows remain to be planned
    windows.update(rows_planned=4, failed_rows=0)
    assert progress_line(windows, 1, 1.0) == (
        "[beam-i3d] 10/14 windows (71%) of 4/4 rows planned, 3 failed, 1.00 windows/s, "
        "ETA 4s, elapsed 1s")


def test_shard_progress_counts_this_runs_shards(tmp_path):
    """Progress comes from the shards of this run on disk: others' shards, temporary
    files and files that are not Parquet yet do not count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from beam_i3d.job.shards import write_table_atomically

    def shard(kind, name, n):
        table = pa.table({"row_key": [f"{name}{i}" for i in range(n)]})
        write_table_atomically(table, str(tmp_path / kind / f"{name}.parquet"))

    source = ShardProgress(str(tmp_path), "run2", total=50, earlier=Earlier(scored=5, failed=2))
    assert source() == {"total": 50, "done": 7, "run_done": 0, "failed": 2,
                        "failed_earlier": 2}
    shard("scores", "run1-w-000000", 5)   # an earlier run's
    shard("scores", "run2-w-000000", 3)
    shard("scores", "run2-v-000000", 4)
    shard("errors", "run2-w-000000", 2)
    (tmp_path / "errors" / "run2-x-000000.parquet.tmp").write_bytes(b"partial")
    assert source() == {"total": 50, "done": 16, "run_done": 9, "failed": 4,
                        "failed_earlier": 2}
    shard("errors", "run2-w-000001", 1)
    assert source()["failed"] == 5
    assert progress_line(source(), 10, None).startswith(
        "[beam-i3d] 17/50 rows (34%), 5 failed (2 earlier)")
    assert pq.read_table(tmp_path / "scores" / "run2-w-000000.parquet").num_rows == 3


def test_printer_writes_lines_and_a_final_one():
    """Driven by the source's calls, not by sleeps: the first line sees 1 clip done, the
    later ones 3 (so they carry a rate), then stop() prints the final counts."""
    import threading

    stream = io.StringIO()
    calls, seen_three = [], threading.Event()

    def source():
        calls.append(None)
        if len(calls) >= 3:
            seen_three.set()
        return {"total": 4, "done": 1 if len(calls) == 1 else 3}

    printer = ProgressPrinter(source, stream, interval=0.01)
    printer.start()
    assert seen_three.wait(timeout=30), "the printer stopped asking for counts"
    printer.stop({"total": 4, "done": 4, "failed": 1})
    assert not printer.is_alive()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 4  # at least three periodic lines and the final one
    assert lines[0].startswith("[beam-i3d] 1/4 rows (25%), 0 failed, elapsed")
    assert "rows/s" not in lines[0]  # no rate from a single observation
    assert lines[1].startswith("[beam-i3d] 3/4 rows (75%)") and "rows/s" in lines[1]
    assert lines[-1].startswith("[beam-i3d] 4/4 rows (100%), 1 failed")


# --- Real runs (DirectRunner, real encoded videos) -------------------------------------

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from beam_i3d.cli import EXIT_ERROR_RATE, EXIT_OK, main
from test_pipeline import moving_texture, write_manifest

ROOT = Path(__file__).parent.parent
LINE = re.compile(r"^\[beam-i3d\] ([\d,]+)/([\d,]+) (rows|windows) \((\d+)%\)")


def score(args, expect=EXIT_OK):
    """``beam-i3d score`` as a user runs it, progress lines every 0.3 s; its stderr and
    the progress lines as (done, total, unit, percent)."""
    done = subprocess.run([sys.executable, "-m", "beam_i3d", "score", *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "BEAM_I3D_PROGRESS_SECONDS": "0.3"})
    assert done.returncode == expect, done.stderr[-3000:]
    lines = [l for l in done.stderr.splitlines() if l.startswith("[beam-i3d] ")
             and LINE.match(l)]
    assert lines, done.stderr[-3000:]
    counts = [(int(m[1].replace(",", "")), int(m[2].replace(",", "")), m[3], int(m[4]))
              for m in map(LINE.match, lines)]
    for done_, total, _, percent in counts:
        assert done_ <= total and percent <= 100, lines  # never over 100% (#21)
    return done.stderr, lines, counts


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return d, [moving_texture(d / f"v{i}.mp4", 100, seed=i) for i in range(2)]  # 4 s each


def test_resumed_run_counts_what_earlier_runs_settled(videos, tmp_path, capsys):
    """Issue #21: resuming, the line counts the rows earlier runs settled and their
    failures ("0 failed" beside rows that failed earlier was wrong), as the final
    summary does; the report on the resumed output warns of nothing."""
    d, (v0, v1) = videos
    rows = [{"clip_id": "a", "video_uri": v0, "end_sec": "1"},
            {"clip_id": "gone1", "video_uri": str(d / "gone1.mp4")},
            {"clip_id": "gone2", "video_uri": str(d / "gone2.mp4")}]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    assert main(["score", "--manifest", manifest, "--output", str(out), "--quiet"]) == EXIT_OK
    write_manifest(tmp_path / "m.csv", rows + [{"clip_id": "b", "video_uri": v1,
                                                "end_sec": "1"}])
    err, lines, counts = score(["--manifest", manifest, "--output", str(out),
                                "--skip-existing"])
    assert lines[-1].startswith("[beam-i3d] 4/4 rows (100%), 2 failed (2 earlier), "), lines
    assert all(unit == "rows" and done >= 3 for done, _, unit, _ in counts), lines
    assert "manifest rows: 4; settled: 1 scored" not in err
    assert "manifest rows: 4; settled: 2 scored, 2 failed; missing: 0" in err
    assert "this run: 1 scored, 0 failed; 3 skipped as already settled" in err
    capsys.readouterr()
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"beam-i3d report for {out}\n")
    assert "warning" not in printed, printed  # two runs' files, no errors/ issue: fine


def test_windowed_progress_counts_windows_of_planned_rows(videos, tmp_path, capsys):
    """Issue #21: a windowed run counts windows settled of those planned (plus rows
    planned of all), never over 100% though rows fail without windows; its error rate
    names windows; resumed, the windows settled earlier count."""
    import glob

    import pyarrow as pa
    import pyarrow.parquet as pq

    d, (v0, v1) = videos
    rows = [{"clip_id": "long", "video_uri": v0},                        # 4 windows
            {"clip_id": "part", "video_uri": v1, "start_sec": 2.5},      # 2 windows
            {"clip_id": "gone", "video_uri": str(d / "gone.mp4")},      # cannot be probed
            {"clip_id": "bad", "video_uri": v0, "start_sec": 3, "end_sec": 1},
            {"clip_id": "long", "video_uri": v1},                        # a repeat
            {"clip_id": "obj", "video_uri": {"path": v0}}]               # not text (#21)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    args = ["--manifest", str(manifest), "--output", str(out), "--window", "1",
            "--decode-processes", "2"]
    err, lines, counts = score(args + ["--max-error-rate", "0.2"], expect=EXIT_ERROR_RATE)
    assert lines[-1].startswith("[beam-i3d] 6/6 windows (100%) of 6/6 rows planned, "
                                "4 rows failed, "), lines
    assert all(unit == "windows" for _, _, unit, _ in counts)
    assert ("error: 4 of 10 windows (and rows without windows) failed (40.0%), over "
            "--max-error-rate 0.2") in err
    errors = {r["clip_id"]: r for f in glob.glob(str(out / "errors" / "*.parquet"))
              for r in pq.read_table(f).to_pylist()}
    assert errors["obj"]["error_type"] == "ManifestError"
    assert errors["obj"]["message"] == (f"{manifest}:6: video_uri is an object "
                                        f"({{'path': '{v0}'}}), not text")
    assert errors["obj"]["video_uri"] is None
    assert "repeats" in errors["long"]["message"] and "another video" in errors["long"]["message"]

    # Lose one window; the resumed run scores it and counts the 5 settled earlier.
    for path in glob.glob(str(out / "windows" / "*.parquet")):
        table = pq.read_table(path)
        keys = table.column("row_key").to_pylist()
        if "long@w2" in keys:
            pq.write_table(table.filter(pa.array([k != "long@w2" for k in keys])), path)
    err, lines, counts = score(args + ["--skip-existing"])
    assert lines[-1].startswith("[beam-i3d] 6/6 windows (100%) of 6/6 rows planned, "
                                "4 rows failed (4 earlier), "), lines
    assert "this run: 1 scored, 0 failed; 9 skipped as already settled" in err
