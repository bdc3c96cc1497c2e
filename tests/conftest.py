"""Shared fixtures: a local GCS emulator, checkpoints in the release's real layouts."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hypothesis import settings as _hypothesis_settings  # noqa: E402

# Property tests: no example database in the checkout (a failure prints the seed and
# the example to reproduce it). "mutation" (scripts/mutation.py) stops at the first
# failing example instead of shrinking it: a mutant only needs to be caught.
_hypothesis_settings.register_profile("default", database=None, print_blob=True)
_hypothesis_settings.register_profile(
    "mutation", database=None, phases=("explicit", "reuse", "generate"))
_hypothesis_settings.load_profile(os.environ.get("BEAM_I3D_HYPOTHESIS_PROFILE", "default"))

DATA = Path(__file__).parent / "data"
RELEASE_CHECKPOINTS = ("rgb_imagenet", "rgb_scratch", "flow_imagenet", "flow_scratch",
                       "rgb_scratch_kin600")


def release_layout(name: str) -> list[tuple[str, list[int]]]:
    """(variable name, shape) of one of the five released checkpoints, from its .index."""
    import tensorflow as tf

    return tf.train.list_variables(str(DATA / "checkpoints" / name / "model.ckpt"))


def write_random_checkpoint(layout, prefix: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a TF1 name-based checkpoint with random values for exactly ``layout``.

    Variances are positive (as trained ones are); everything else is N(0, 0.05).
    Returns what was written, by full variable name.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in layout:
        if name.endswith("moving_variance"):
            v = rng.uniform(0.5, 1.5, shape)
        else:
            v = rng.normal(0.0, 0.05, shape)
        values[name] = v.astype(np.float32)
    names = sorted(values)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(values[n]) for n in names])
    return values


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    """An OAuth2 token endpoint that hands out a dummy access token."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"access_token": "test-token", "expires_in": 3600,
                           "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """A gcp-storage-emulator on 127.0.0.1 with bucket ``test-bucket``; yields its URL.

    Sets STORAGE_EMULATOR_HOST for this process and its children (worker processes of
    the DirectRunner too), which google-cloud-storage, and so Beam's GCS filesystem,
    honour. Beam looks for Application Default Credentials and, finding none, retries
    with backoff for about half a minute in every process; so the fixture also serves
    a dummy OAuth2 token endpoint on 127.0.0.1 and points ADC at a throwaway service
    account whose token URI is that endpoint.
    """
    token_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    threading.Thread(target=token_server.serve_forever, daemon=True).start()
    adc = tmp_path_factory.mktemp("adc") / "credentials.json"
    adc.write_text(json.dumps({
        "type": "service_account", "project_id": "test-project",
        "client_email": "tests@test-project.iam.gserviceaccount.com",
        "client_id": "1", "private_key_id": "test", "private_key": _private_key_pem(),
        "token_uri": f"http://127.0.0.1:{token_server.server_address[1]}/token"}))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
         "--port", str(port), "--in-memory", "--default-bucket", "test-bucket", "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("gcp-storage-emulator did not start")
    env = {"STORAGE_EMULATOR_HOST": url, "GOOGLE_APPLICATION_CREDENTIALS": str(adc),
           "GOOGLE_CLOUD_PROJECT": "test-project"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        token_server.shutdown()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def upload(local: str | Path, uri: str) -> None:
    """Copy one local file to a URI through Beam's FileSystems."""
    from apache_beam.io.filesystems import FileSystems

    with open(local, "rb") as src, FileSystems.create(uri) as dst:
        dst.write(src.read())


@pytest.fixture(scope="session")
def default_rgb():
    """The default (Kinetics-400 RGB) stream, loaded once per test session."""
    from model.weights import load_stream

    return load_stream("default", "rgb")
