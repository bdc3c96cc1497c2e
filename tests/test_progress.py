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
