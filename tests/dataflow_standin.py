"""A recording stand-in for the Dataflow REST API (v1b3), for launch tests.

Beam's DataflowRunner talks REST (not gRPC) to an endpoint whose URL names
``localhost`` (``apiclient.DataflowApplicationClient``), and its options check accepts
such an endpoint only without a port, so the stand-in listens on 127.0.0.1:80 (tests
run as root). It answers what the runner asks on the way to a finished job:

* ``POST .../jobs``: records the request body (the job: environment, steps, options)
  and returns the job with an id;
* ``GET .../jobs/ID``: the job, its ``currentState`` taken from ``states`` one poll at
  a time (the last one repeats), e.g. RUNNING then DONE;
* ``GET .../jobs/ID/messages``: ``messages`` once the job is in a terminal state (a
  failed job's error text is what the runner reports);
* ``GET .../jobs/ID/metrics``: no metrics;
* ``PUT .../jobs/ID``: records a requested state (cancel) and returns the job.

Every request is kept in ``requests`` as (method, path).
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from typing import Sequence

TERMINAL = {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
            "JOB_STATE_DRAINED", "JOB_STATE_UPDATED", "JOB_STATE_STOPPED"}
_JOBS = re.compile(r"^/v1b3/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/jobs"
                   r"(?:/(?P<job>[^/:?]+)(?P<rest>/[a-z]+)?)?(?:\?.*)?$")


class DataflowStandIn:
    """``with DataflowStandIn(states=[...]) as api:`` serves on 127.0.0.1:``port``."""

    def __init__(self, states: Sequence[str] = ("JOB_STATE_RUNNING", "JOB_STATE_DONE"),
                 messages: Sequence[str] = (), port: int = 80, job_id: str = "standin-job-1"):
        self.states = list(states)
        self.messages = list(messages)
        self.port = port
        self.job_id = job_id
        self.jobs: list[dict] = []          # create-job request bodies, as sent
        self.requests: list[tuple[str, str]] = []
        self.requested_states: list[str] = []
        self._polls = 0
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        return "http://localhost" + ("" if self.port == 80 else f":{self.port}")

    @property
    def polls(self) -> int:
        return self._polls

    def _state(self, advance: bool) -> str:
        with self._lock:
            index = min(self._polls, len(self.states) - 1)
            if advance:
                self._polls += 1
            return self.states[index]

    def _job(self, state: str) -> dict:
        job = dict(self.jobs[-1]) if self.jobs else {}
        job.pop("steps", None)
        job.update({"id": self.job_id, "currentState": state,
                    "currentStateTime": "2026-01-01T00:00:00Z"})
        return job

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        with self._lock:
            self.requests.append((method, path))
        match = _JOBS.match(path)
        if not match:
            return 404, {"error": {"code": 404, "message": f"stand-in: no {path}"}}
        job, rest = match.group("job"), match.group("rest")
        if method == "POST" and job is None:
            sent = json.loads(body or b"{}")
            with self._lock:
                self.jobs.append(sent)
            return 200, self._job("JOB_STATE_PENDING" if len(self.states) > 1
                                  else self.states[0])
        if job != self.job_id:
            return 404, {"error": {"code": 404, "message": f"stand-in: no job {job}"}}
        if method == "GET" and rest is None:
            return 200, self._job(self._state(advance=True))
        if method == "GET" and rest == "/messages":
            if self._state(advance=False) not in TERMINAL:
                return 200, {}
            return 200, {"jobMessages": [
                {"id": str(i), "time": f"2026-01-01T00:00:{i:02d}Z",
                 "messageImportance": "JOB_MESSAGE_ERROR", "messageText": text}
                for i, text in enumerate(self.messages)]}
        if method == "GET" and rest == "/metrics":
            return 200, {"metrics": []}
        if method == "PUT" and rest is None:
            requested = json.loads(body or b"{}").get("requestedState", "")
            with self._lock:
                self.requested_states.append(requested)
                self.states = [requested or "JOB_STATE_CANCELLED"]
                self._polls = 0
            return 200, self._job(self._state(advance=False))
        return 404, {"error": {"code": 404, "message": f"stand-in: no {method} {path}"}}

    def __enter__(self) -> "DataflowStandIn":
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload = standin.handle(self.command, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _answer  # noqa: N815 (http.server's naming)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
