"""Running the pipeline, with a progress line built from Beam metrics.

The pipeline's DoFns count what they do with Beam counters in the ``beam_i3d``
namespace: ``manifest_rows`` (rows read), ``clips_scored`` and ``clips_failed`` (rows
written to scores and errors) and ``rows_skipped_existing`` (rows a resumed run found
done). Every manifest row ends in exactly one of the last three, so
``done = scored + failed + skipped`` out of ``total = manifest_rows``.

On Dataflow these counters are job metrics in the console. Locally, Beam's DirectRunner
only reports metrics once the pipeline has finished, so for the DirectRunner we run its
batch engine (Beam's FnApiRunner, which the DirectRunner uses for batch pipelines)
ourselves with progress requests turned on: the SDK workers then report the counters
of the bundles in flight every second, and a thread prints

    [beam-i3d] 1204/3000 clips (40%), 17 failed, 3.1 clips/s, ETA 9m40s

on stderr (rewritten in place every second on a terminal, a new line every 30 s
otherwise; ``BEAM_I3D_PROGRESS_SECONDS`` sets the interval). Running the
FnApiRunner directly also keeps Beam from trying its Prism runner, which fetches a Go
binary from GitHub on first use.

The hook into the FnApiRunner uses two of its internals (``_execute_bundle`` and the
module's ``ProgressRequester``); where a future Beam changes them, the job still runs,
without the progress line.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Callable, Iterable, TextIO

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter

NAMESPACE = "beam_i3d"  # of every Beam metric the job reports
_LOG = logging.getLogger(__name__)


def counters(result) -> dict[str, int]:
    """The beam_i3d counters of a finished pipeline (committed, else attempted)."""
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    out: dict[str, int] = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + (value or 0)
    return out


def counters_from_monitoring_infos(infos: Iterable) -> dict[str, int]:
    """beam_i3d user counters in a list of Fn API MonitoringInfos."""
    from apache_beam.runners.portability.portable_metrics import from_monitoring_infos

    found, *_ = from_monitoring_infos(infos, user_metrics_only=True)
    out: dict[str, int] = {}
    for key, value in found.items():
        if key.metric.namespace == NAMESPACE:
            out[key.metric.name] = out.get(key.metric.name, 0) + int(value)
    return out


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b)}


class ProgressTracker:
    """Counters of finished bundles plus the latest report of each bundle in flight."""

    def __init__(self):
        self._lock = threading.Lock()
        self._finished: dict[str, int] = {}
        self._in_flight: dict[str, dict[str, int]] = {}
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def bundle_progress(self, generation: int, instruction_id: str,
                        values: dict[str, int]) -> None:
        with self._lock:
            if generation == self._generation:  # drop late reports of finished bundles
                self._in_flight[instruction_id] = values

    def bundle_finished(self, values: dict[str, int]) -> None:
        """A bundle (all its parallel parts) is done; ``values`` are its final counters."""
        with self._lock:
            self._finished = _add(self._finished, values)
            self._in_flight.clear()
            self._generation += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            total = dict(self._finished)
            for values in self._in_flight.values():
                total = _add(total, values)
            return total


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


def _progress_runner(tracker: ProgressTracker, frequency: float):
    """A FnApiRunner whose bundles report their counters to ``tracker`` (or None)."""
    try:
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        base_requester = fn_runner.ProgressRequester
        fn_runner.FnApiRunner._execute_bundle  # noqa: B018: fail early if gone
    except (ImportError, AttributeError):
        return None

    class TrackingRequester(base_requester):
        def __init__(self, worker_handler, instruction_id, frequency, callback=None):
            generation = tracker.generation

            def report(progress):
                tracker.bundle_progress(generation, instruction_id,
                                        counters_from_monitoring_infos(progress.monitoring_infos))
                if callback:
                    callback(progress)

            super().__init__(worker_handler, instruction_id, frequency, report)

    class ProgressFnApiRunner(fn_runner.FnApiRunner):
        def _execute_bundle(self, *args, **kwargs):
            fn_runner.ProgressRequester = TrackingRequester
            try:
                result = super()._execute_bundle(*args, **kwargs)
            finally:
                fn_runner.ProgressRequester = base_requester
            tracker.bundle_finished(
                counters_from_monitoring_infos(result.process_bundle.monitoring_infos))
            return result

    return ProgressFnApiRunner, frequency


def _is_direct_runner(options) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    return runner is None or str(runner).lower() in ("directrunner", "direct")


def run_with_progress(pipeline: beam.Pipeline, quiet: bool = False,
                      stream: TextIO = sys.stderr, interval: float | None = None
                      ) -> dict[str, int]:
    """Run ``pipeline`` to the end, with a progress line on the DirectRunner unless
    ``quiet``; return the beam_i3d counters."""
    options = pipeline.options
    tracker = ProgressTracker()
    made = _progress_runner(tracker, 1.0) if _is_direct_runner(options) else None
    printer = None
    if made is not None:
        runner_class, frequency = made
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        # As the DirectRunner sets up its FnApiRunner: workers get the pipeline options.
        provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(
            pipeline_options=JobServiceHandle.encode_pipeline_options(
                options.get_all_options())))
        runner = runner_class(provision_info=provision,
                              progress_request_frequency=None if quiet else frequency)
        if not quiet:
            printer = ProgressPrinter(tracker.snapshot, stream, interval)
            printer.start()
        try:
            result = runner.run_pipeline(pipeline, options)
        except BaseException:
            if printer:
                printer.stop()
            raise
    else:
        result = pipeline.run()
        result.wait_until_finish()
    values = counters(result)
    if printer:
        printer.stop(values)
    return values
