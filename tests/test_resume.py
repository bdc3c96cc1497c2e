"""Nothing lost: durable shards, a job killed midway, resume, reruns, and the job's own
count check, on the real DirectRunner with real encoded videos."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_i3d.cli import EXIT_CONFIGURATION, EXIT_ERROR_RATE, EXIT_OK, EXIT_RECONCILIATION, main
from test_pipeline import moving_texture, read_dataset, write_manifest

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return [moving_texture(d / f"c{i:02d}.mp4", 16 + 4 * (i % 3), seed=i) for i in range(12)]


def shard_rows(out: Path, kind: str) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows
               for f in glob.glob(str(out / kind / "*.parquet")))


@pytest.mark.slow
def test_a_job_killed_midway_keeps_what_it_finished_and_resumes(clips, tmp_path):
    manifest = write_manifest(tmp_path / "m.csv", [
        {"clip_id": f"c{i:02d}", "video_uri": v} for i, v in enumerate(clips)])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "beam_i3d", "score", "--manifest", manifest,
               "--output", str(out), "--shard-rows", "1", "--batch-size", "1", "--quiet",
               "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True, cwd=ROOT)
    deadline = time.monotonic() + 400
    try:
        while shard_rows(out, "scores") < 4:  # about half of what there is to do
            assert job.poll() is None, job.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no shard appeared"
            time.sleep(0.2)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the launcher, its workers, their children
        job.wait()
    assert job.returncode == -signal.SIGKILL
    finished = shard_rows(out, "scores")  # every file is whole: atomic writes
    _, kept = read_dataset(out / "scores")
    assert 4 <= finished == len(kept) < 12

    # A rerun without a decision is refused; --skip-existing resumes.
    assert main(["score", "--manifest", manifest, "--output", str(out), "--quiet"]) == \
        EXIT_CONFIGURATION
    resumed = subprocess.run(command[:-4] + ["--skip-existing"], capture_output=True,
                             text=True, cwd=ROOT, timeout=600)
    assert resumed.returncode == EXIT_OK, resumed.stderr[-3000:]
    assert (f"{12 - finished} scored, 0 failed, {finished} skipped as already settled"
            in resumed.stderr)
    files, scores = read_dataset(out / "scores")
    assert sorted(r["clip_id"] for r in scores) == [f"c{i:02d}" for i in range(12)]
    assert len({r["run_id"] for r in scores}) == 2
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == EXIT_OK


def test_overwrite_replaces_everything_and_counts_are_checked(clips, tmp_path, capsys,
                                                             monkeypatch):
    manifest = write_manifest(tmp_path / "m.csv", [
        {"clip_id": "good", "video_uri": clips[0]},
        {"clip_id": "gone", "video_uri": str(tmp_path / "absent.mp4")}])
    out = tmp_path / "out"
    assert main(["score", "--manifest", manifest, "--output", str(out), "--quiet"]) == EXIT_OK
    first = {k: read_dataset(out / k)[0] for k in ("scores", "errors")}
    assert all(first.values())
    capsys.readouterr()

    # --overwrite: the old run's files are gone, none of its rows survive
    assert main(["score", "--manifest", manifest, "--output", str(out), "--overwrite",
                 "--quiet"]) == EXIT_OK
    for kind, files in first.items():
        now, rows = read_dataset(out / kind)
        assert not set(files) & set(now) and len(rows) == 1
    assert "all 2 manifest rows accounted for" in capsys.readouterr().err

    # A sink that silently loses a row (as Beam 2.77's multi_threading DirectRunner does):
    # the job's own reconciliation fails the run and names the row.
    from beam_i3d.job import shards

    original = shards._ShardWriter._flush

    def lose_the_good_clip(self):
        self._rows = [r for r in self._rows if r.get("clip_id") != "good"]
        original(self)

    monkeypatch.setattr(shards._ShardWriter, "_flush", lose_the_good_clip)
    code = main(["score", "--manifest", manifest, "--output", str(out), "--overwrite",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == EXIT_RECONCILIATION, err
    assert "missing: 1" in err and "missing rows: good (" in err
    assert "1 of 2 manifest rows are in neither output" in err and "beam-i3d verify" in err


def test_all_rows_failed_is_an_error_unless_allowed(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "m.csv", [
        {"clip_id": f"gone{i}", "video_uri": str(tmp_path / f"absent{i}.mp4")} for i in range(3)])
    out = tmp_path / "out"
    assert main(["score", "--manifest", manifest, "--output", str(out), "--quiet"]) == \
        EXIT_ERROR_RATE
    assert "all 3 rows failed, none scored" in capsys.readouterr().err
    assert shard_rows(out, "errors") == 3  # written all the same
    assert main(["score", "--manifest", manifest, "--output", str(out), "--overwrite",
                 "--max-error-rate", "1", "--quiet"]) == EXIT_OK


def test_multi_threading_is_warned_about(clips, tmp_path, capsys):
    manifest = write_manifest(tmp_path / "m.csv", [{"clip_id": "a", "video_uri": clips[0]}])
    assert main(["score", "--manifest", manifest, "--output", str(tmp_path / "o"),
                 "--dry-run", "--direct_running_mode", "multi_threading"]) == 0
    assert "loses elements in multi_threading mode" in capsys.readouterr().err


@pytest.mark.slow
def test_a_large_manifest_loses_nothing_in_the_default_mode(tmp_path):
    """20,000 rows in the Kinetics CSV layout, every video absent: exactly 20,000 error
    rows, checked by the job itself and by verify (benchmarks/scale_manifest.py runs
    650,000)."""
    rows = 20_000
    manifest = tmp_path / "k.csv"
    with open(manifest, "w") as f:
        f.write("label,youtube_id,time_start,time_end,split\n")
        for i in range(rows):
            f.write(f"abseiling,{i:011d},{i % 300},{i % 300 + 10},train\n")
    out = tmp_path / "out"
    template = str(tmp_path / "v" / "{split}" / "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4")
    done = subprocess.run(
        [sys.executable, "-m", "beam_i3d", "score", "--manifest", str(manifest),
         "--output", str(out), "--video-template", template, "--ignore-times",
         "--max-error-rate", "1", "--quiet"],
        capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    assert f"all {rows:,} manifest rows accounted for" in done.stderr
    assert shard_rows(out, "errors") == rows and shard_rows(out, "scores") == 0
    _, errors = read_dataset(out / "errors")
    assert {e["error_type"] for e in errors} == {"VideoNotFound"}
    assert len({e["row_key"] for e in errors}) == rows
    # zero-padded ids are kept as written by the template
    assert any("00000000007_000007_000017.mp4" in e["video_uri"] for e in errors)


def test_poison_videos_cost_one_row_and_retry_errors_scores_the_transient_ones(
        clips, tmp_path, monkeypatch, capsys):
    """Real faults in the decoding children (tests/decode_faults.py: a clip whose
    decoder aborts, one that hangs) among good clips, a file that is not a video and a
    bad row, in one job: each costs its own row. Then --retry-errors scores the two
    transient failures again, and leaves the deterministic ones settled."""
    import shutil

    videos = tmp_path / "v"
    videos.mkdir()
    hang = shutil.copy(clips[1], videos / "c01_HANG.mp4")
    abort = shutil.copy(clips[2], videos / "c02_ABORT.mp4")
    text = videos / "notes.mp4"
    text.write_text("not a video\n" * 20)
    manifest = write_manifest(tmp_path / "m.csv", [
        {"clip_id": "good", "video_uri": clips[0]},
        {"clip_id": "hang", "video_uri": str(hang)},
        {"clip_id": "abort", "video_uri": str(abort)},
        {"clip_id": "text", "video_uri": str(text)},
        {"clip_id": "good2", "video_uri": clips[3]},
        {"clip_id": "bad", "video_uri": clips[0], "start_sec": "2", "end_sec": "1"}])
    out = tmp_path / "out"
    monkeypatch.setenv("BEAM_I3D_TEST_DECODE_HOOK", "decode_faults:inject")
    assert main(["score", "--manifest", manifest, "--output", str(out), "--quiet",
                 "--decode-timeout", "2", "--decode-processes", "2"]) == EXIT_OK
    _, scores = read_dataset(out / "scores")
    _, errors = read_dataset(out / "errors")
    assert sorted(r["clip_id"] for r in scores) == ["good", "good2"]
    kinds = {e["row_key"]: (e["stage"], e["error_type"]) for e in errors}
    assert kinds == {"hang": ("decode", "DecodeTimeout"), "abort": ("decode", "DecoderCrashed"),
                     "text": ("decode", "NotAVideo"), "bad": ("manifest", "ManifestError")}
    messages = {e["row_key"]: e["message"] for e in errors}
    assert messages["abort"].startswith(str(abort)) and "SIGABRT" in messages["abort"]
    assert messages["hang"].startswith(str(hang))

    monkeypatch.delenv("BEAM_I3D_TEST_DECODE_HOOK")
    capsys.readouterr()
    assert main(["score", "--manifest", manifest, "--output", str(out), "--quiet",
                 "--skip-existing", "--retry-errors"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "2 scored, 0 failed, 4 skipped as already settled" in err
    assert "2 errors superseded by a later score" in err
    from beam_i3d.job.results import read_table

    settled = read_table(str(out), "scores", ["clip_id"]).column(0).to_pylist()
    assert sorted(settled) == ["abort", "good", "good2", "hang"]
    assert sorted(read_table(str(out), "errors", ["row_key"]).column(0).to_pylist()) == [
        "bad", "text"]
    assert main(["verify", "--manifest", manifest, "--output", str(out)]) == EXIT_OK
