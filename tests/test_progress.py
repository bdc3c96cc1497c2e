"""The progress line: counters of finished and in-flight bundles, rate and ETA."""

from __future__ import annotations

import io

from beam_i3d.progress import ProgressPrinter, ProgressTracker, format_duration, progress_line


def test_progress_line_counts_every_kind_of_settled_row():
    values = {"manifest_rows": 200, "clips_scored": 90, "clips_failed": 8,
              "rows_skipped_existing": 2}
    line = progress_line(values, elapsed=125, rate=2.0)
    assert line == ("[beam-i3d] 100/200 clips (50%), 8 failed, 2.00 clips/s, ETA 50s, "
                    "elapsed 2m05s")
    assert progress_line({}, 3, None) == "[beam-i3d] 0/? clips, 0 failed, elapsed 3s"
    assert format_duration(7322) == "2h02m"


def test_tracker_adds_in_flight_to_finished_and_drops_late_reports():
    tracker = ProgressTracker()
    tracker.bundle_finished({"manifest_rows": 10})
    generation = tracker.generation
    tracker.bundle_progress(generation, "w1", {"clips_scored": 2})
    tracker.bundle_progress(generation, "w2", {"clips_scored": 3, "clips_failed": 1})
    tracker.bundle_progress(generation, "w1", {"clips_scored": 4})  # newer report of w1
    assert tracker.snapshot() == {"manifest_rows": 10, "clips_scored": 7, "clips_failed": 1}
    tracker.bundle_finished({"clips_scored": 6, "clips_failed": 2})
    tracker.bundle_progress(generation, "w1", {"clips_scored": 5})  # late: ignored
    assert tracker.snapshot() == {"manifest_rows": 10, "clips_scored": 6, "clips_failed": 2}


def test_printer_writes_lines_and_a_final_one():
    stream = io.StringIO()
    values = {"manifest_rows": 4, "clips_scored": 1}
    printer = ProgressPrinter(lambda: dict(values), stream, interval=0.05)
    printer.start()
    import time

    time.sleep(0.3)
    values["clips_scored"] = 3
    time.sleep(0.2)
    printer.stop({"manifest_rows": 4, "clips_scored": 3, "clips_failed": 1})
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3
    assert lines[0].startswith("[beam-i3d] 1/4 clips (25%)")
    assert lines[-1].startswith("[beam-i3d] 4/4 clips (100%), 1 failed")
    assert "clips/s" in lines[-2]  # a rate once clips keep finishing
