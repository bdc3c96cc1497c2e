"""Running the pipeline, with a progress line built from the job's own output.

The job writes its results in shards while it runs (:mod:`beam_i3d.job.shards`); the
launcher knows how many manifest rows there are and how many an earlier run settled
(it reads the manifests to verify the run anyway). So progress is read from what is
durable, on any runner and in any mode, without Beam's runner internals: a thread
lists this run's shards under ``DIR/scores`` and ``DIR/errors`` (each shard's row count
comes from its Parquet footer, read once) and prints

    [beam-i3d] 1204/3000 clips (40%), 17 failed, 3.1 clips/s, ETA 9m40s

on stderr (rewritten in place every second on a terminal, a new line every 30 s
otherwise; ``BEAM_I3D_PROGRESS_SECONDS`` sets the interval, at least 10 s for remote
outputs). Rows advance in steps of a shard (``--shard-rows``, ``--shard-seconds``).

The DoFns also count with Beam counters in the ``beam_i3d`` namespace
(``manifest_rows``, ``clips_scored``, ``clips_failed``, ``rows_skipped_existing``, ...):
job metrics on Dataflow. Locally the job runs on Beam's FnApiRunner, the engine the
DirectRunner picks for batch pipelines, built as the DirectRunner builds it; running it
directly keeps Beam from trying its Prism runner, which fetches a Go binary from
GitHub on first use.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Callable, TextIO

import apache_beam as beam

NAMESPACE = "beam_i3d"  # of every Beam metric the job reports
_LOG = logging.getLogger(__name__)


class ShardProgress:
    """Counters for :func:`progress_line` from the shards of one run (see module doc).

    ``total``: manifest rows; ``skipped``: rows an earlier run settled. Calling it lists
    the output and returns ``manifest_rows``, ``clips_scored``, ``clips_failed`` and
    ``rows_skipped_existing``.
    """

    def __init__(self, output: str, run_id: str, total: int, skipped: int = 0,
                 windowed: bool = False):
        self._output = output
        self._prefix = run_id + "-"
        self._total = total
        self._skipped = skipped
        self._rows: dict[str, int] = {}
        # A windowed run (score --window) counts windows: the total is what this run's
        # plans have planned so far (it grows as the videos are probed).
        self._windowed = windowed
        self._planned: dict[str, int] = {}

    def _planned_windows(self) -> int:
        import pyarrow.parquet as pq

        from beam_i3d import fileio
        from beam_i3d.job.results import list_shards, open_shard

        for path in list_shards(fileio.join(self._output, "plans")):
            if path in self._planned or not path.rsplit("/", 1)[-1].startswith(self._prefix):
                continue
            try:
                with open_shard(path) as f:
                    column = pq.read_table(f, columns=["num_windows"]).column("num_windows")
                self._planned[path] = sum(column.to_pylist())
            except Exception:  # noqa: BLE001: counted once it can be read
                continue
        return sum(self._planned.values())

    def _count(self, kind: str) -> int:
        from beam_i3d import fileio
        from beam_i3d.job.results import list_shards

        n = 0
        for path in list_shards(fileio.join(self._output, kind)):
            if not path.rsplit("/", 1)[-1].startswith(self._prefix):
                continue
            if path not in self._rows:
                try:
                    self._rows[path] = _footer_rows(path)
                except Exception:  # noqa: BLE001: a shard we cannot read yet counts later
                    continue
            n += self._rows[path]
        return n

    def __call__(self) -> dict[str, int]:
        if self._windowed:
            return {"manifest_rows": self._planned_windows(),
                    "clips_scored": self._count("windows"),
                    "clips_failed": self._count("errors"), "rows_skipped_existing": 0}
        return {"manifest_rows": self._total, "clips_scored": self._count("scores"),
                "clips_failed": self._count("errors"), "rows_skipped_existing": self._skipped}


def _footer_rows(path: str) -> int:
    import pyarrow.parquet as pq

    from beam_i3d.job.results import open_shard

    with open_shard(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def progress_line(values: dict[str, int], elapsed: float, rate: float | None) -> str:
    """``1204/3000 clips (40%), 17 failed, 3.1 clips/s, ETA 9m40s`` from counters."""
    total = values.get("manifest_rows", 0)
    failed = values.get("clips_failed", 0)
    done = values.get("clips_scored", 0) + failed + values.get("rows_skipped_existing", 0)
    parts = [f"{done}/{total or '?'} clips"]
    if total:
        parts[0] += f" ({100 * done // total}%)"
    parts.append(f"{failed} failed")
    if rate:
        parts.append(f"{rate:.2f} clips/s")
        if total and done < total:
            parts.append(f"ETA {format_duration((total - done) / rate)}")
    parts.append(f"elapsed {format_duration(elapsed)}")
    return "[beam-i3d] " + ", ".join(parts)


class ProgressPrinter(threading.Thread):
    """Prints :func:`progress_line` from a counters source until stopped."""

    def __init__(self, source: Callable[[], dict[str, int]], stream: TextIO = sys.stderr,
                 interval: float | None = None):
        super().__init__(daemon=True)
        self._source = source
        self._stream = stream
        self._tty = hasattr(stream, "isatty") and stream.isatty()
        self._interval = interval or float(os.environ.get(
            "BEAM_I3D_PROGRESS_SECONDS", 1.0 if self._tty else 30.0))
        self._stop_event = threading.Event()
        self._start = time.monotonic()
        self._first_done: tuple[float, int] | None = None

    def _line(self) -> str:
        values = self._source()
        now = time.monotonic()
        done = (values.get("clips_scored", 0) + values.get("clips_failed", 0)
                + values.get("rows_skipped_existing", 0))
        rate = None
        if done and self._first_done is None:
            self._first_done = (now, done)
        if self._first_done and now > self._first_done[0] and done > self._first_done[1]:
            # Rate since the first finished clip: leaves out model loading and start-up.
            rate = (done - self._first_done[1]) / (now - self._first_done[0])
        return progress_line(values, now - self._start, rate)

    def _emit(self, line: str, final: bool = False) -> None:
        if self._tty:
            self._stream.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            self._emit(self._line())

    def stop(self, final_values: dict[str, int] | None = None) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        if final_values is not None:
            self._source = lambda: final_values
        self._emit(self._line(), final=True)


def is_direct_runner(options) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    return runner is None or str(runner).lower() in ("directrunner", "direct")


def local_runner(options):
    """Beam's FnApiRunner set up as the DirectRunner sets it up for batch pipelines
    (its workers get the pipeline options; ``direct_running_mode`` and
    ``direct_num_workers`` apply)."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(
        pipeline_options=JobServiceHandle.encode_pipeline_options(options.get_all_options())))
    return fn_runner.FnApiRunner(provision_info=provision)


def run_with_progress(pipeline: beam.Pipeline, source: Callable[[], dict[str, int]] | None,
                      stream: TextIO = sys.stderr, interval: float | None = None, *,
                      wait: bool = True, on_submit: Callable | None = None):
    """Run ``pipeline`` to the end (locally on the FnApiRunner, elsewhere on its own
    runner), printing :func:`progress_line` from ``source`` unless it is None.
    Returns the runner's result, finished. On other runners, ``on_submit(result)`` is
    called as soon as the runner has submitted the job (on Dataflow: the job exists),
    and with ``wait=False`` the result is returned then, unfinished. The runner's own
    report of a job that ended other than DONE (Dataflow's DataflowRuntimeException)
    and a KeyboardInterrupt while waiting are raised as they come."""
    options = pipeline.options
    printer = None
    if source is not None:
        printer = ProgressPrinter(source, stream, interval)
        printer.start()
    try:
        if is_direct_runner(options):
            result = local_runner(options).run_pipeline(pipeline, options)
        else:
            result = pipeline.run()
            if on_submit is not None:
                on_submit(result)
            if not wait:
                return result
        result.wait_until_finish()
    finally:
        if printer:
            printer.stop(source())
    return result
