"""Running the pipeline, with a progress line built from the job's own output.

The job writes its results in shards while it runs (:mod:`beam_i3d.job.shards`); the
launcher knows how many manifest rows there are and what earlier runs settled (it
reads the manifests to verify the run anyway). So progress is read from what is
durable, on any runner and in any mode, without Beam's runner internals: a thread
lists this run's shards under ``DIR/scores`` (``DIR/windows``, ``DIR/plans``) and
``DIR/errors`` and prints on stderr, counting manifest rows,

    [beam-i3d] 1204/3000 rows (40%), 17 failed (5 earlier), 3.10 rows/s, ETA 9m40s, ...

or, for a windowed run (``score --window``), windows: the windows settled of those
planned so far (the plans arrive as the videos are probed; ``DIR/plans`` rows hold each
row's ``num_windows``), and how many manifest rows are planned (or failed whole),

    [beam-i3d] 120/340 windows (35%) of 12/21 rows planned, 3 windows and 1 row failed, ...

Resuming (``--skip-existing``), what earlier runs settled counts as done, and their
failures are in the failed count, as in the final summary (:mod:`beam_i3d.job.verify`);
"(N earlier)" says how many of them are. The ETA is shown once the total is known.
The line is rewritten in place every second on a terminal, a new line every 30 s
otherwise (``BEAM_I3D_PROGRESS_SECONDS`` sets the interval, at least 10 s for remote
outputs); counts advance in steps of a shard (``--shard-rows``, ``--shard-seconds``).

The DoFns also count with Beam counters in the ``beam_i3d`` namespace
(``manifest_rows``, ``clips_scored``, ``clips_failed``, ``rows_skipped_existing``, ...):
job metrics on Dataflow. Locally the job runs on Beam's FnApiRunner, the engine the
DirectRunner picks for batch pipelines, built as the DirectRunner builds it; running it
directly keeps Beam from trying its Prism runner, which fetches a Go binary from
GitHub on first use.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import sys
import threading
import time
from typing import Callable, Mapping, Sequence, TextIO

import apache_beam as beam

NAMESPACE = "beam_i3d"  # of every Beam metric the job reports
_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Earlier:
    """What runs before this one settled of this run's manifest rows (resuming), and
    will not be scored again: ``scored``/``failed`` rows, or for a windowed run windows
    (``failed`` then includes ``rows_failed``, rows settled by an error without
    windows); ``windows``: row_key -> its windows settled earlier."""

    scored: int = 0
    failed: int = 0
    rows_failed: int = 0
    windows: Mapping[str, int] = dataclasses.field(default_factory=dict)

    @property
    def settled(self) -> int:
        """Rows (windows, and rows without windows) skipped as already settled."""
        return self.scored + self.failed


def settled_earlier(expected: Sequence, output: str, retry_errors: bool,
                    windowed: bool = False) -> Earlier:
    """:class:`Earlier` of ``expected`` (:class:`beam_i3d.job.verify.ExpectedRow`) in
    ``output``; with ``retry_errors`` the errors that may pass on a retry
    (``errors.is_transient``) are not settled (this run scores them again)."""
    from beam_i3d.errors import is_transient
    from beam_i3d.job.results import settle

    def final(error) -> bool:
        _, error_type, stage = error
        return not (retry_errors and is_transient(error_type, stage))

    if not windowed:
        before = settle(output)
        scored = failed = 0
        for row in expected:
            if row.row_key in before.scores:
                scored += 1
            elif row.row_key in before.errors:
                failed += final(before.errors[row.row_key])
        return Earlier(scored, failed)
    from beam_i3d.job.windows import parse_window_key

    wanted = {row.row_key for row in expected}
    before = settle(output, "windows")
    windows: dict[str, int] = collections.Counter()
    scored = failed = rows_failed = 0
    for key in before.scores:
        parsed = parse_window_key(key)
        if parsed and parsed[0] in wanted:
            windows[parsed[0]] += 1
            scored += 1
    for key, error in before.errors.items():
        if not final(error):
            continue
        parsed = parse_window_key(key)
        if parsed and parsed[0] in wanted:
            windows[parsed[0]] += 1
            failed += 1
        elif key in wanted:
            rows_failed += 1
            failed += 1
    return Earlier(scored, failed, rows_failed, dict(windows))


def _this_run(path: str, prefix: str) -> bool:
    return path.rsplit("/", 1)[-1].startswith(prefix)


class ShardProgress:
    """The counts :func:`progress_line` shows, from the shards of one run (see module
    doc). ``total``: manifest rows; ``earlier``: what earlier runs settled (resuming).
    Calling it lists the output and returns ``total``, ``done`` (``run_done``: by this
    run, for the rate), ``failed``,
    ``failed_earlier``, and for a windowed run (``windowed`` 1) ``failed_rows``, ``rows``
    and ``rows_planned``: done and total then count windows, the total those planned so
    far."""

    def __init__(self, output: str, run_id: str, total: int, earlier: Earlier | None = None,
                 windowed: bool = False):
        self._output = output
        self._prefix = run_id + "-"
        self._total = total
        self._earlier = earlier or Earlier()
        self._windowed = windowed
        self._rows: dict[str, int] = {}  # clip mode: shard -> its rows (from the footer)
        self._seen: set[str] = set()     # windowed: shards read
        # Windowed: per manifest row, windows planned (this run's plans) and settled
        # (earlier runs' and this run's), and the sum over planned rows of the settled
        # windows (at most the planned ones), kept up to date as shards arrive.
        self._planned: dict[str, int] = {}
        self._settled: dict[str, int] = collections.Counter(self._earlier.windows)
        self._done = 0
        self._failed = 0        # this run's error rows (windows and rows)
        self._failed_rows = 0   # this run's errors of rows without windows
        self._run_done = 0      # this run's rows in windows/ and errors/ (for the rate)

    def _count(self, kind: str) -> int:
        from beam_i3d import fileio
        from beam_i3d.job.results import list_shards

        n = 0
        for path in list_shards(fileio.join(self._output, kind)):
            if not _this_run(path, self._prefix):
                continue
            if path not in self._rows:
                try:
                    self._rows[path] = _footer_rows(path)
                except Exception:  # noqa: BLE001: a shard we cannot read yet counts later
                    continue
            n += self._rows[path]
        return n

    def _new_shards(self, kind: str, columns: tuple[str, ...]):
        """This run's shards of ``kind`` not read yet: ``columns`` of each, as lists."""
        from beam_i3d import fileio
        from beam_i3d.job.results import list_shards, read_columns

        for path in list_shards(fileio.join(self._output, kind)):
            if path in self._seen or not _this_run(path, self._prefix):
                continue
            try:
                table = read_columns(path, columns)
                values = [table.column(c).to_pylist() for c in columns]
            except Exception:  # noqa: BLE001: counted once it can be read
                continue
            self._seen.add(path)
            yield values

    def _add_windows(self, row_key: str, count: int) -> None:
        planned = self._planned.get(row_key)
        before = self._settled[row_key]
        self._settled[row_key] = before + count
        if planned is not None:
            self._done += min(planned, before + count) - min(planned, before)

    def _windowed_counts(self) -> dict[str, int]:
        from beam_i3d.job.windows import parse_window_key

        for keys, counts in self._new_shards("plans", ("row_key", "num_windows")):
            for key, count in zip(keys, counts):
                if key is not None and key not in self._planned:
                    self._planned[key] = int(count or 0)
                    self._done += min(self._planned[key], self._settled.get(key, 0))
        for (keys,) in self._new_shards("windows", ("row_key",)):
            self._run_done += len(keys)
            for row_key, n in collections.Counter(
                    p[0] for p in map(parse_window_key, filter(None, keys)) if p).items():
                self._add_windows(row_key, n)
        for (keys,) in self._new_shards("errors", ("row_key",)):
            per_row = collections.Counter()
            self._run_done += len(keys)
            for key in keys:
                self._failed += 1
                parsed = parse_window_key(key) if key else None
                if parsed:
                    per_row[parsed[0]] += 1
                else:
                    self._failed_rows += 1
            for row_key, n in per_row.items():
                self._add_windows(row_key, n)
        earlier = self._earlier
        return {"windowed": 1, "total": sum(self._planned.values()), "done": self._done,
                "run_done": self._run_done,
                "failed": self._failed + earlier.failed,
                "failed_rows": self._failed_rows + earlier.rows_failed,
                "failed_earlier": earlier.failed, "rows": self._total,
                "rows_planned": min(self._total, len(self._planned) + self._failed_rows
                                    + earlier.rows_failed)}

    def __call__(self) -> dict[str, int]:
        if self._windowed:
            return self._windowed_counts()
        earlier = self._earlier
        scored, failed = self._count("scores"), self._count("errors")
        return {"total": self._total, "done": scored + failed + earlier.settled,
                "run_done": scored + failed, "failed": failed + earlier.failed,
                "failed_earlier": earlier.failed}


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


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def progress_line(values: dict[str, int], elapsed: float, rate: float | None) -> str:
    """``1204/3000 rows (40%), 17 failed, 3.10 rows/s, ETA 9m40s, elapsed 2m05s`` (a
    windowed run: windows, see module doc) from :class:`ShardProgress`'s counts. Done
    is at most the total, the percentage at most 100."""
    windowed = bool(values.get("windowed"))
    unit = "windows" if windowed else "rows"
    total = values.get("total", 0)
    done = values.get("done", 0)
    if total:
        done = min(done, total)
    failed = values.get("failed", 0)
    earlier = values.get("failed_earlier", 0)
    parts = [f"{done:,}/{f'{total:,}' if total else '?'} {unit}"]
    if total:
        parts[0] += f" ({100 * done // total}%)"
    complete = True  # whether the total is final
    if windowed:
        rows, planned = values.get("rows", 0), values.get("rows_planned", 0)
        parts[0] += f" of {planned:,}/{rows:,} rows planned"
        complete = planned >= rows
        failed_rows = values.get("failed_rows", 0)
        kinds = [_plural(n, word) for n, word in ((failed - failed_rows, "window"),
                                                  (failed_rows, "row")) if n]
        failed_text = (" and ".join(kinds) if failed_rows else f"{failed:,}") + " failed"
    else:
        failed_text = f"{failed:,} failed"
    if earlier:
        failed_text += f" ({earlier:,} earlier)"
    parts.append(failed_text)
    if rate:
        parts.append(f"{rate:.2f} {unit}/s")
        if total and done < total and complete:
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
        done = values.get("run_done", values.get("done", 0))  # this run's work
        rate = None
        if done and self._first_done is None:
            self._first_done = (now, done)
        if self._first_done and now > self._first_done[0] and done > self._first_done[1]:
            # Rate since the first observation with work done: leaves out model loading
            # and start-up (and, resuming, what earlier runs settled).
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
