"""The launch scripts: run_dataflow.sh checked without a cloud, run_local.sh for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
SETTINGS = {
    "PROJECT": "my-project", "REGION": "us-central1", "BUCKET": "my-bucket",
    "IMAGE": "us-central1-docker.pkg.dev/my-project/beam/beam-i3d:test",
    "MANIFEST": "gs://my-bucket/manifests/k400_val.csv", "OUTPUT": "gs://my-bucket/runs/r1",
}


def run_script(env_overrides, *args):
    env = {**os.environ, **env_overrides,
           # The virtualenv running the tests, used as it is (no installing).
           "BEAM_I3D_VENV": sys.prefix, "BEAM_I3D_NO_INSTALL": "1"}
    return subprocess.run([str(ROOT / "run_dataflow.sh"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_dry_run_validates_and_prints_the_launch_command():
    done = run_script({**SETTINGS, "GPU_TYPE": "nvidia-tesla-t4", "GPU_COUNT": "2"},
                      "--dry-run", "--streams", "rgb", "--top-k", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dry run: options valid, pipeline of" in done.stderr
    assert "dry run: not reading remote manifest gs://my-bucket/manifests/k400_val.csv" in done.stderr
    command = done.stdout
    for expected in ("--runner DataflowRunner", "--experiments use_runner_v2",
                     "--sdk_container_image us-central1-docker.pkg.dev/my-project/beam/beam-i3d:test",
                     "worker_accelerator=type:nvidia-tesla-t4\\;count:2\\;install-nvidia-driver",
                     "--machine_type n1-standard-16", "--model-copies 2", "--top-k 3",
                     "--temp_location gs://my-bucket/beam-i3d/tmp"):
        assert expected in command, (expected, command)


def test_missing_or_bad_settings_are_named():
    partial = {k: v for k, v in SETTINGS.items() if k not in ("PROJECT", "IMAGE")}
    done = run_script(partial, "--dry-run")
    assert done.returncode == 2 and "set PROJECT IMAGE" in done.stderr
    done = run_script({**SETTINGS, "OUTPUT": "/tmp/local"}, "--dry-run")
    assert done.returncode == 2 and "OUTPUT must be on gs://" in done.stderr
    done = run_script({**SETTINGS, "GPU_TYPE": "nvidia-unknown"}, "--dry-run")
    assert done.returncode == 2 and "set MACHINE_TYPE too" in done.stderr


def test_dry_run_rejects_invalid_beam_options():
    done = run_script(SETTINGS, "--dry-run", "--num_workers", "-3")
    assert done.returncode != 0
    assert "invalid pipeline options" in done.stderr and "num_workers" in done.stderr


def test_run_local_scores_the_bundled_sample():
    """The README's main command: the real job on the sample, a table read back from Parquet."""
    done = subprocess.run([str(ROOT / "run_local.sh")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "BEAM_I3D_VENV": sys.prefix,
                               "BEAM_I3D_NO_INSTALL": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "2 clips scored, 0 errors" in out
    for clip in ("cricket_whole  (79 frames", "cricket_first_1.6s [0s, 1.6s)  (40 frames"):
        block = out.split(clip, 1)[1].splitlines()
        assert block[1].split(maxsplit=2)[2] == "playing cricket", out
    assert "[beam-i3d] 2/2 rows (100%), 0 failed" in done.stderr


def test_fvd_dry_run_on_dataflow():
    settings = {k: v for k, v in SETTINGS.items() if k != "MANIFEST"}
    done = run_script({**settings, "COMMAND": "fvd",
                       "REAL": "gs://my-bucket/ref/stats/real.npz",
                       "FAKE": "gs://my-bucket/gen/samples.csv"}, "--dry-run", "--frames", "16")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dry run: options valid, pipeline of" in done.stderr
    command = done.stdout
    for expected in ("fvd --real gs://my-bucket/ref/stats/real.npz",
                     "--fake gs://my-bucket/gen/samples.csv", "--runner DataflowRunner",
                     "--model-copies 1", "--require-gpu", "--frames 16",
                     "--decode-processes 1"):  # fvd reads in decoding children too
        assert expected in command, (expected, command)
    done = run_script({**settings, "COMMAND": "fvd", "REAL": "/tmp/local.csv"}, "--dry-run")
    assert done.returncode == 2 and "REAL must be on gs://" in done.stderr
