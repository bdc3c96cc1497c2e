"""The launcher's side of a job on a remote runner (Dataflow first; portable runners).

A remote job outlives the launcher's view of it: it may fail or be cancelled on the
service, the launcher may be told not to wait (``--no-wait``), or be interrupted
(Ctrl-C) while it waits. :class:`RemoteJob` runs the pipeline and, whatever the end:

* prints ``beam-i3d score: submitted Dataflow job ID: CONSOLE_URL`` once the job exists;
* after the job ended (DONE, FAILED, CANCELLED, ...), reconciles the output against the
  manifest (``finish``, as after a local run) and returns non-zero on any gap, and on a
  job that did not end DONE even where its output looks complete (the state is named);
  a worker's GPUUnavailable is left to :func:`beam_i3d.job.gpu.gpu_failure_as_error` (one
  line, exit 3);
* with ``--no-wait``, returns once the job is submitted (exit 0), printing how to
  follow it, cancel it and check its output later;
* on Ctrl-C while waiting, leaves the job running and says so in one line, with how to
  cancel it and the verify command (exit 130). Beam's DataflowRunner does not cancel a
  job when its launcher is interrupted, and neither do we: cancelling is a decision.

Local runners (the DirectRunner family, in this process) have no job to leave behind:
``--no-wait`` is a usage error there (:func:`refuse_no_wait`).
"""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from beam_i3d.job.launch import LOCAL_RUNNERS, runner_key

PREFIX = "beam-i3d score"
_DATAFLOW = ("dataflow", "testdataflow")


def runs_in_process(pipeline_options) -> bool:
    """Whether the runner runs the job inside the launcher (no job to leave running)."""
    from apache_beam.options.pipeline_options import StandardOptions

    return runner_key(pipeline_options.view_as(StandardOptions).runner) in LOCAL_RUNNERS


def refuse_no_wait(pipeline_options) -> None:
    """``--no-wait`` with an in-process runner: a usage error (one line, exit 2)."""
    from apache_beam.options.pipeline_options import StandardOptions

    from beam_i3d.cli import UsageExit

    if runs_in_process(pipeline_options):
        runner = pipeline_options.view_as(StandardOptions).runner or "DirectRunner"
        raise UsageExit(f"{PREFIX}: error: --no-wait needs a remote runner (e.g. --runner "
                        f"DataflowRunner): the {runner} runs the job in this process, "
                        "which cannot return before it ends")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


class RemoteJob:
    """One job on a remote runner, as the launcher sees it (see module doc)."""

    def __init__(self, pipeline_options, verify_command: str, stream: TextIO | None = None):
        from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions

        self.runner = runner_key(pipeline_options.view_as(StandardOptions).runner)
        gcp = pipeline_options.view_as(GoogleCloudOptions)
        self.project, self.region = gcp.project, gcp.region
        self.verify_command = verify_command
        self.stream = stream or sys.stderr
        self.result = None

    @property
    def dataflow(self) -> bool:
        return self.runner in _DATAFLOW

    @property
    def kind(self) -> str:
        return "Dataflow job" if self.dataflow else f"{self.runner} runner job"

    @property
    def job_id(self) -> str | None:
        result = self.result
        if result is None:
            return None
        if self.dataflow:
            return result.job_id() if getattr(result, "has_job", False) else None
        return getattr(result, "_job_id", None)  # PortableRunner's PipelineResult

    @property
    def console_url(self) -> str | None:
        if not (self.dataflow and self.job_id):
            return None
        return (f"https://console.cloud.google.com/dataflow/jobs/{self.region}/"
                f"{self.job_id}?project={self.project}")

    def cancel_command(self) -> str | None:
        if not (self.dataflow and self.job_id):
            return None
        return f"gcloud dataflow jobs cancel {self.job_id} --region {self.region}"

    @property
    def name(self) -> str:
        return f"{self.kind} {self.job_id}" if self.job_id else f"{self.kind}"

    def _say(self, text: str) -> None:
        print(f"{PREFIX}: {text}", file=self.stream, flush=True)

    def submitted(self, result) -> None:
        """``run_with_progress``'s ``on_submit``: the job exists; name it."""
        self.result = result
        if self.job_id:
            url = self.console_url
            self._say(f"submitted {self.kind} {self.job_id}" + (f": {url}" if url else ""))

    def ended_state(self, error: BaseException) -> str | None:
        """The job's state if ``error`` is the runner's report that the job ended other
        than DONE (Dataflow's DataflowRuntimeException carries the result); else None."""
        from apache_beam.runners.runner import PipelineState

        result = getattr(error, "result", None) or self.result
        if result is None:
            return None
        try:
            state = result.state
        except Exception:  # noqa: BLE001: the service cannot be asked: not an ended job
            return None
        if not PipelineState.is_terminal(state) or state == PipelineState.DONE:
            return None
        return str(state)

    def run(self, start: Callable, finish: Callable[[str | None], int], wait: bool = True
            ) -> int:
        """Submit and follow the job; returns the exit status (see module doc).

        ``start(wait=..., on_submit=...)`` runs the pipeline (``run_with_progress``);
        ``finish(state)`` reconciles the output and returns its exit status, ``state``
        None for a job that ended DONE."""
        from beam_i3d.cli import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
        from beam_i3d.job.gpu import gpu_failure_as_error, gpu_failure_in

        state = error_line = None
        try:
            with gpu_failure_as_error():  # a worker without a GPU: one line, exit 3
                try:
                    start(wait=wait, on_submit=self.submitted)
                except Exception as e:
                    state = None if gpu_failure_in(e) else self.ended_state(e)
                    if state is None:
                        raise
                    error_line = _last_line(str(e))
        except KeyboardInterrupt:
            return self._interrupted(EXIT_INTERRUPTED)
        if not wait:
            self._not_waiting()
            return EXIT_OK
        if state is None and self.result is not None:
            state = self.ended_state(Exception())  # ended, not DONE, without raising
        if state is not None:
            self._say(f"the {self.name} ended {state}, not DONE"
                      + (f": {error_line}" if error_line and error_line != "None" else "")
                      + (f" (see {self.console_url})" if self.console_url else ""))
        status = finish(state)
        if state is not None and status == EXIT_OK:
            self._say(f"error: the {self.kind} ended {state}, not DONE: its output accounts "
                      "for every manifest row, but the job did not finish; check its "
                      "errors before trusting the run")
            return EXIT_FAILURE
        return status

    def _not_waiting(self) -> None:
        self._say(f"not waiting (--no-wait): the {self.name} is running"
                  + (f"; follow it at {self.console_url}" if self.console_url else ""))
        if self.cancel_command():
            self._say(f"cancel it with: {self.cancel_command()}")
        self._say(f"once it has ended, check its output with: {self.verify_command}")

    def _interrupted(self, status: int) -> int:
        if self.result is None:
            self._say("interrupted before the job was submitted; if the runner created it "
                      "all the same, it runs on"
                      + (f" (gcloud dataflow jobs list --region {self.region})"
                         if self.dataflow else ""))
            return status
        cancel = self.cancel_command()
        self._say(f"interrupted: the {self.name} is still running (not "
                  "cancelled)"
                  + (f"; cancel it with: {cancel}" if cancel else "")
                  + f"; once it has ended, check its output with: {self.verify_command}")
        return status
