"""Reading videos from remote storage: a missing object, an unreachable or failing
service, URIs we cannot read. Everything runs against 127.0.0.1 only (the GCS emulator
of conftest.py, or a port nobody listens on)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import pytest

from beam_i3d import errors
from beam_i3d.media import video
from beam_i3d.media.recipe import DecodeLimits
from conftest import upload
from video_factory import code_frame, write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    return write_video(str(root / "c.mp4"), lambda i: code_frame(i, 160, 120), num_frames=10)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gcs_object_read_and_missing(gcs_emulator, clip):
    uri = "gs://test-bucket/storage/c.mp4"
    upload(clip, uri)
    assert video.decode_clip(uri).num_frames == 10
    with pytest.raises(errors.VideoError) as info:
        video.decode_clip("gs://test-bucket/storage/missing.mp4")
    assert type(info.value) is errors.VideoNotFound, repr(info.value)
    assert "no such file" in info.value.cause


def test_unreachable_storage_is_a_storage_error_within_the_budget(gcs_emulator, clip, monkeypatch):
    """The storage service does not answer (connection refused): a transient
    StorageError, in about the clip's time budget, not VideoNotFound after minutes of
    the client's own retries."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{closed_port()}")
    budget = 5.0
    started = time.monotonic()
    with pytest.raises(errors.VideoError) as info:
        video.decode_clip("gs://test-bucket/storage/c.mp4",
                          limits=DecodeLimits(decode_timeout_seconds=budget))
    elapsed = time.monotonic() - started
    print(f"StorageError after {elapsed:.2f} s (budget {budget:g} s)")
    assert type(info.value) is errors.StorageError, repr(info.value)
    assert info.value.transient
    assert "\n" not in str(info.value)
    assert elapsed < budget + 10


class _FailingStorage(http.server.BaseHTTPRequestHandler):
    """A storage service on 127.0.0.1 that answers every request with one HTTP status."""

    status = 503

    def _answer(self):
        body = json.dumps({"error": {"code": self.status, "message": f"test says {self.status}"}}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_storage(gcs_emulator, monkeypatch):
    """Start a storage service that fails with ``status``; returns its request count."""
    servers = []

    def start(status: int) -> None:
        handler = type("Handler", (_FailingStorage,), {"status": status})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_address[1]}")

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status, words", [
    (403, "permission denied"), (401, "not authorised"),
])
def test_permission_errors_are_storage_errors(failing_storage, status, words):
    failing_storage(status)
    started = time.monotonic()
    with pytest.raises(errors.VideoError) as info:
        video.probe_video("gs://test-bucket/storage/c.mp4")
    assert type(info.value) is errors.StorageError, repr(info.value)
    assert info.value.cause.startswith(words) and f"test says {status}" in info.value.cause
    assert "\n" not in str(info.value)
    assert time.monotonic() - started < 10  # not retried


@pytest.mark.parametrize("status", [503, 429])
def test_failing_service_is_a_storage_error_within_the_budget(failing_storage, status):
    failing_storage(status)
    started = time.monotonic()
    with pytest.raises(errors.VideoError) as info:
        video.probe_video("gs://test-bucket/storage/c.mp4", DecodeLimits(decode_timeout_seconds=3.0))
    elapsed = time.monotonic() - started
    print(f"HTTP {status}: StorageError after {elapsed:.2f} s (budget 3 s)")
    assert type(info.value) is errors.StorageError, repr(info.value)
    assert elapsed < 3.0 + 5


def test_storage_error_classification():
    """How exceptions of the storage clients map to typed errors (no network)."""
    import requests
    import urllib3
    from apache_beam.io.filesystem import BeamIOError
    from google.api_core import exceptions as api
    from google.auth.exceptions import DefaultCredentialsError, RefreshError, TransportError

    uri = "gs://b/v.mp4"
    cases = [
        (api.NotFound("No such object: b/v.mp4"), errors.VideoNotFound, "no such file"),
        (api.Forbidden("x lacks storage.objects.get"), errors.StorageError, "permission denied"),
        (api.Unauthorized("bad token"), errors.StorageError, "not authorised"),
        (api.TooManyRequests("slow down"), errors.StorageError, "throttled"),
        (api.ServiceUnavailable("backend"), errors.StorageError, "storage service error"),
        (api.InternalServerError("oops"), errors.StorageError, "storage service error"),
        (api.BadRequest("Invalid bucket name"), errors.VideoNotFound, "cannot be read"),
        (api.RetryError("Timeout of 120.0s exceeded", requests.ConnectionError("refused")),
         errors.StorageError, "network error (after retries)"),
        (BeamIOError("Exists operation failed", {uri: api.Forbidden("no")}),
         errors.StorageError, "permission denied"),
        (RefreshError("invalid_grant: account disabled"), errors.StorageError, "credentials failed"),
        (DefaultCredentialsError("no ADC"), errors.StorageError, "credentials failed"),
        (TransportError("metadata server"), errors.StorageError, "credentials failed"),
        (requests.ConnectionError("Connection refused"), errors.StorageError, "network error"),
        (requests.Timeout("read timed out"), errors.StorageError, "network error"),
        (urllib3.exceptions.ProtocolError("Connection aborted."), errors.StorageError, "network error"),
        (socket.timeout("timed out"), errors.StorageError, "network error"),
        (ConnectionResetError(104, "Connection reset by peer"), errors.StorageError, "network error"),
        (FileNotFoundError(2, "No such file"), errors.VideoNotFound, "no such file"),
        (PermissionError(13, "Permission denied"), errors.StorageError, "permission denied"),
        (ValueError("GCS path must be in the form gs://<bucket>/<object>."), errors.VideoNotFound,
         "not a readable path"),
        (RuntimeError("something\nelse"), errors.StorageError, "cannot read: RuntimeError: something else"),
    ]
    for exc, cls, words in cases:
        error = video.storage_error(uri, exc)
        assert type(error) is cls and error.uri == uri, (exc, error)
        assert error.cause.startswith(words), (exc, error.cause)
        assert "\n" not in str(error)


def test_local_paths_and_schemes():
    from beam_i3d import fileio

    for path, local in [("/a/b.mp4", "/a/b.mp4"), ("rel/b.mp4", "rel/b.mp4"),
                        ("file:///a/b.mp4", "/a/b.mp4"), ("file:/a/b.mp4", "/a/b.mp4"),
                        ("file://localhost/a/b.mp4", "/a/b.mp4"), ("FILE:///a/b.mp4", "/a/b.mp4"),
                        ("/data/x://y.mp4", "/data/x://y.mp4"), ("file:name.mp4", "file:name.mp4")]:
        assert fileio.is_local(path) and fileio.local_path(path) == local, path
    for uri, scheme in [("gs://b/o.mp4", "gs"), ("HTTP://h/o.mp4", "http"), ("s3://b/o", "s3")]:
        assert not fileio.is_local(uri) and fileio.uri_scheme(uri) == scheme
    assert {"gs", "s3", "hdfs"} <= set(fileio.readable_schemes())
    assert "file" not in fileio.readable_schemes() and "http" not in fileio.readable_schemes()
