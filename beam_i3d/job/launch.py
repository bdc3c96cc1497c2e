"""Checks on the launching machine that depend on where the job will run.

Workers of a remote runner (Dataflow's VMs; a Flink or Spark cluster's task managers
or the Docker containers of a portable runner) do not see the launcher's disk, so a
manifest, checkpoint or output given as a local path would fail there, clip by clip or
at the end, after the job has paid for its workers. :func:`refuse_local_paths` turns
that into one line before anything is submitted.

Which runners count as local (their workers can read the launcher's files):

* the DirectRunner family (DirectRunner, SwitchingDirectRunner, BundleBasedDirectRunner,
  FnApiRunner, PrismRunner, InteractiveRunner);
* a portable runner (PortableRunner, FlinkRunner, SparkRunner) whose workers are the
  launching process (``--environment_type LOOPBACK``), or processes started by a job
  server on this machine (``--environment_type PROCESS`` with no ``--job_endpoint`` or
  one on localhost / 127.0.0.1 / ``embed``), or an SDK worker pool on this machine
  (``--environment_type EXTERNAL --environment_config localhost:PORT``, started with
  ``python -m apache_beam.runners.worker.worker_pool_main --service_port PORT``) fed by
  a job server on this machine.

Everything else, DataflowRunner first, is remote.

:func:`before_launch` runs both launcher-side steps: the local-path check, and, for
the DataflowRunner, showing the job id, the console URL and the job's state changes,
which Beam logs at INFO among much else (the whole job proto, for one). A portable runner with the default
``DOCKER`` environment is remote too: its SDK containers do not mount the host's paths.
"""

from __future__ import annotations

import logging
import sys

from beam_i3d import fileio
from beam_i3d.errors import ConfigurationError

LOCAL_RUNNERS = {"direct", "switchingdirect", "bundlebaseddirect", "fnapi", "prism",
                 "interactive"}
PORTABLE_RUNNERS = {"portable", "flink", "spark", "jobserver"}
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "embed")


def runner_key(runner) -> str:
    """``DataflowRunner``, ``dataflow``, ``apache_beam....DataflowRunner`` or a runner
    instance -> ``dataflow``; None (Beam's default) -> ``direct``."""
    if runner is None:
        return "direct"
    name = runner if isinstance(runner, str) else type(runner).__name__
    name = name.rsplit(".", 1)[-1].lower()
    return name[:-len("runner")] if name.endswith("runner") else name


def workers_see_local_disk(pipeline_options) -> bool:
    """Whether the runner's workers run on this machine, able to read its files."""
    from apache_beam.options.pipeline_options import PortableOptions, StandardOptions

    key = runner_key(pipeline_options.view_as(StandardOptions).runner)
    if key in LOCAL_RUNNERS:
        return True
    if key in PORTABLE_RUNNERS:
        portable = pipeline_options.view_as(PortableOptions)
        environment = (portable.environment_type or "DOCKER").upper()
        if environment == "LOOPBACK":
            return True
        endpoint = portable.job_endpoint or ""
        local_server = not endpoint or _is_local_address(endpoint)
        if environment == "PROCESS":
            return local_server
        if environment == "EXTERNAL":
            # The worker pool's address: --environment_config or the
            # external_service_address of --environment_options.
            pool = portable.environment_config or next(
                (o.split("=", 1)[1] for o in portable.environment_options or ()
                 if o.startswith("external_service_address=")), "")
            return local_server and bool(pool) and _is_local_address(pool)
    return False


def _is_local_address(address: str) -> bool:
    """``localhost:8099``, ``127.0.0.1:50000``, ``[::1]:1``, ``embed`` (host part only)."""
    host = address.split("://", 1)[-1]
    if host.startswith("["):
        host = host[:host.find("]") + 1]
    else:
        host = host.rsplit(":", 1)[0] if ":" in host else host
    return host.lower() in _LOCAL_HOSTS


def local_paths(options) -> list[str]:
    """``--option value`` for each input or output of the run given as a local path
    (the default checkpoint ships with the worker image, so it is not one)."""
    found = [("--manifest", options.manifest), ("--output", options.output)]
    for stream in options.streams:
        spec = getattr(options, f"{stream}_checkpoint")
        if spec and spec != "default":
            found.append((f"--{stream}-checkpoint", spec))
    if options.video_template:
        found.append(("--video-template", options.video_template))
    return [f"{flag} {value}" for flag, value in found if fileio.is_local(value)]


def refuse_local_paths(options, pipeline_options) -> None:
    """Raise ConfigurationError (one line) when a remote runner's workers would be
    given local paths; do nothing for local runners."""
    from apache_beam.options.pipeline_options import StandardOptions

    if workers_see_local_disk(pipeline_options):
        return
    paths = local_paths(options)
    if paths:
        runner = pipeline_options.view_as(StandardOptions).runner
        raise ConfigurationError(
            f"the {runner_key(runner)} runner's workers cannot read this machine's disk, "
            f"but these are local: {'; '.join(paths)}; copy them to gs:// (or the "
            f"cluster's shared storage) and pass those URIs")


_DATAFLOW_LOGGERS = ("apache_beam.runners.dataflow.internal.apiclient",
                     "apache_beam.runners.dataflow.dataflow_runner")
_DATAFLOW_LINES = ("Created job with id", "To access the Dataflow monitoring console",
                   "is in state")


class _JobLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or any(
            line in record.getMessage() for line in _DATAFLOW_LINES)


def show_dataflow_job(pipeline_options, stream=None) -> None:
    """On the DataflowRunner, print Beam's lines that name the job (id, console URL,
    state changes) and its warnings, on ``stream`` (stderr), with our prefix."""
    from apache_beam.options.pipeline_options import StandardOptions

    if runner_key(pipeline_options.view_as(StandardOptions).runner) not in (
            "dataflow", "testdataflow"):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("[beam-i3d] %(message)s"))
    handler.addFilter(_JobLines())
    for name in _DATAFLOW_LOGGERS:
        logger = logging.getLogger(name)
        if any(isinstance(f, _JobLines) for h in logger.handlers for f in h.filters):
            continue  # already set up (main() called twice in one process)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False  # the root handler would print every INFO record


def before_launch(options, pipeline_options) -> None:
    """The launcher's checks and set-up that depend on the runner (see module doc)."""
    refuse_local_paths(options, pipeline_options)
    show_dataflow_job(pipeline_options)
