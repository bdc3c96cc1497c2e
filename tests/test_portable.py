"""Out of process: the job on Beam's PortableRunner with an external SDK worker pool
(the harness Dataflow's Runner v2 runs in its container), on 127.0.0.1 only.

Pickling, main-session state and launcher-only files break here if anywhere: the DoFns
travel to a separately started harness, which also runs the decode pool's children and
the shared model (``--model-copies 1``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from beam_i3d.cli import EXIT_OK, main
from test_pipeline import moving_texture, read_dataset, write_manifest

ROOT = Path(__file__).parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@pytest.mark.slow
def test_portable_runner_with_an_external_worker_pool_equals_the_direct_runner(tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    text = d / "notes.mp4"
    text.write_text("not a video\n" * 10)
    manifest = write_manifest(tmp_path / "m.csv", [
        {"clip_id": "a", "video_uri": moving_texture(d / "a.mp4", 16)},
        {"clip_id": "b", "video_uri": moving_texture(d / "b.mp4", 24, seed=1)},
        {"clip_id": "text", "video_uri": str(text)},
        {"clip_id": "gone", "video_uri": str(d / "absent.mp4")}])
    direct = tmp_path / "direct"
    assert main(["score", "--manifest", manifest, "--output", str(direct), "--quiet",
                 "--max-error-rate", "1"]) == EXIT_OK

    # The worker pool starts SDK harnesses as `python` from PATH: this interpreter, with
    # the checkout importable (as the worker image has it installed).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    job_port, pool_port = free_port(), free_port()
    services = [
        subprocess.Popen([sys.executable, "-m",
                          "apache_beam.runners.portability.local_job_service_main",
                          "--port", str(job_port), "--staging_dir", str(tmp_path / "staging")],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                          f"--service_port={pool_port}"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_for_port(job_port, services[0])
        wait_for_port(pool_port, services[1])
        portable = tmp_path / "portable"
        done = subprocess.run(
            [sys.executable, "-m", "beam_i3d", "score", "--manifest", manifest,
             "--output", str(portable), "--quiet", "--max-error-rate", "1",
             "--model-copies", "1", "--decode-processes", "1",
             "--runner", "PortableRunner", "--job_endpoint", f"localhost:{job_port}",
             "--environment_type", "EXTERNAL", "--environment_config",
             f"localhost:{pool_port}"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    finally:
        for service in services:
            service.terminate()
        for service in services:
            try:
                service.wait(timeout=20)
            except subprocess.TimeoutExpired:
                service.kill()
    assert done.returncode == EXIT_OK, done.stderr[-4000:]
    assert "all 4 manifest rows accounted for" in done.stderr
    _, direct_scores = read_dataset(direct / "scores")
    _, portable_scores = read_dataset(portable / "scores")
    by_id = {r["clip_id"]: r for r in direct_scores}
    assert sorted(by_id) == sorted(r["clip_id"] for r in portable_scores) == ["a", "b"]
    for row in portable_scores:
        np.testing.assert_allclose(row["logits"], by_id[row["clip_id"]]["logits"],
                                   rtol=0, atol=1e-5)
        assert row["predicted_label"] == by_id[row["clip_id"]]["predicted_label"]
    _, errors = read_dataset(portable / "errors")
    assert sorted((e["clip_id"], e["error_type"]) for e in errors) == [
        ("gone", "VideoNotFound"), ("text", "NotAVideo")]
