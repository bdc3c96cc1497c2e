"""The progress line: counts from the run's shards, rate and ETA."""

from __future__ import annotations

import io

from beam_i3d.job.progress import ProgressPrinter, ShardProgress, format_duration, progress_line


def test_progress_line_counts_every_kind_of_settled_row():
    values = {"manifest_rows": 200, "clips_scored": 90, "clips_failed": 8,
              "rows_skipped_existing": 2}
    line = progress_line(values, elapsed=125, rate=2.0)
    assert line == ("[beam-i3d] 100/200 clips (50%), 8 failed, 2.00 clips/s, ETA 50s, "
                    "elapsed 2m05s")
    assert progress_line({}, 3, None) == "[beam-i3d] 0/? clips, 0 failed, elapsed 3s"
    assert format_duration(7322) == "2h02m"


def test_shard_progress_counts_this_runs_shards(tmp_path):
    """Progress comes from the shards of this run on disk: others' shards, temporary
    files and files that are not Parquet yet do not count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from beam_i3d.job.shards import write_table_atomically

    def shard(kind, name, n):
        table = pa.table({"row_key": [f"{name}{i}" for i in range(n)]})
        write_table_atomically(table, str(tmp_path / kind / f"{name}.parquet"))

    source = ShardProgress(str(tmp_path), "run2", total=50, skipped=7)
    assert source() == {"manifest_rows": 50, "clips_scored": 0, "clips_failed": 0,
                        "rows_skipped_existing": 7}
    shard("scores", "run1-w-000000", 5)   # an earlier run's
    shard("scores", "run2-w-000000", 3)
    shard("scores", "run2-v-000000", 4)
    shard("errors", "run2-w-000000", 2)
    (tmp_path / "errors" / "run2-x-000000.parquet.tmp").write_bytes(b"partial")
    assert source() == {"manifest_rows": 50, "clips_scored": 7, "clips_failed": 2,
                        "rows_skipped_existing": 7}
    shard("errors", "run2-w-000001", 1)
    assert source()["clips_failed"] == 3
    assert progress_line(source(), 10, None).startswith("[beam-i3d] 17/50 clips (34%), 3 failed")
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
        return {"manifest_rows": 4, "clips_scored": 1 if len(calls) == 1 else 3}

    printer = ProgressPrinter(source, stream, interval=0.01)
    printer.start()
    assert seen_three.wait(timeout=30), "the printer stopped asking for counts"
    printer.stop({"manifest_rows": 4, "clips_scored": 3, "clips_failed": 1})
    assert not printer.is_alive()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 4  # at least three periodic lines and the final one
    assert lines[0].startswith("[beam-i3d] 1/4 clips (25%), 0 failed, elapsed")
    assert "clips/s" not in lines[0]  # no rate from a single observation
    assert lines[1].startswith("[beam-i3d] 3/4 clips (75%)") and "clips/s" in lines[1]
    assert lines[-1].startswith("[beam-i3d] 4/4 clips (100%), 1 failed")
