"""Dataflow readiness without a cloud: a real launch of run_dataflow.sh against a
recording stand-in of the Dataflow API and the GCS emulator; the local-path and GPU
checks; the worker image agreeing with the launcher."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import upload
from dataflow_standin import DataflowStandIn

ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "beam_i3d" / "data" / "samples" / "v_CricketShot_g04_c01.mp4"
IMAGE = "us-central1-docker.pkg.dev/test-project/beam/beam-i3d:test"


def run_script(env_overrides, *args, timeout=120):
    env = {**os.environ, **env_overrides,
           "BEAM_I3D_VENV": sys.prefix, "BEAM_I3D_NO_INSTALL": "1"}
    return subprocess.run([str(ROOT / "run_dataflow.sh"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def launch_settings(tmp_path, job_name):
    manifest = tmp_path / "one.csv"
    manifest.write_text(f"video_uri,clip_id\ngs://test-bucket/videos/{SAMPLE.name},c1\n")
    upload(manifest, "gs://test-bucket/manifests/one.csv")
    return {"PROJECT": "test-project", "REGION": "us-central1", "BUCKET": "test-bucket",
            "IMAGE": IMAGE, "MANIFEST": "gs://test-bucket/manifests/one.csv",
            "OUTPUT": f"gs://test-bucket/runs/{job_name}", "JOB_NAME": job_name}


def staged_pipeline(job):
    """The pipeline proto the launcher staged for ``job`` (from the GCS emulator)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.portability.api import beam_runner_api_pb2

    staging = job["environment"]["sdkPipelineOptions"]["options"]["staging_location"]
    with FileSystems.open(staging + "/pipeline.pb") as f:
        data = f.read()
    return data, beam_runner_api_pb2.Pipeline.FromString(data)


def pickled_payloads(pipeline) -> list[bytes]:
    """The raw pickles of every ParDo's function (Beam stores them zlib- or
    bz2-compressed and base64-encoded), where a Create's values and our DoFns'
    options (manifest glob, checkpoints) live."""
    import base64
    import bz2
    import zlib

    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    found = []
    for transform in pipeline.components.transforms.values():
        if transform.spec.urn != common_urns.primitives.PAR_DO.urn:
            continue
        payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
        packed = base64.b64decode(payload.do_fn.payload)
        for unpack in (zlib.decompress, bz2.decompress):
            try:
                found.append(unpack(packed))
                break
            except (zlib.error, OSError, ValueError):
                continue
    return found


def test_launch_submits_a_gpu_runner_v2_job(gcs_emulator, tmp_path):
    """run_dataflow.sh for real: Beam's DataflowRunner stages to the emulator's bucket,
    creates the job on the stand-in, polls it to DONE; the job is what we mean. The
    stand-in runs nothing, so the launcher's reconciliation must fail the run (exit 4),
    naming the missing row and the verify command, never report it as done."""
    settings = launch_settings(tmp_path, "beam-i3d-launch-test")
    with DataflowStandIn(states=["JOB_STATE_RUNNING", "JOB_STATE_DONE"]) as api:
        done = run_script(settings, "--dataflow_endpoint", api.endpoint, "--no_auth")
    assert done.returncode == 4, done.stderr[-5000:]
    assert "missing rows: c1 (gs://test-bucket/manifests/one.csv:2)" in done.stderr
    assert ("check again with: beam-i3d verify --manifest 'gs://test-bucket/manifests/"
            "one.csv'") in done.stderr
    assert len(api.jobs) == 1, api.requests
    assert api.polls >= 2  # RUNNING, then DONE
    for line in ("[beam-i3d] Created job with id: [standin-job-1]",
                 "https://console.cloud.google.com/dataflow/jobs/us-central1/standin-job-1"
                 "?project=test-project",
                 "[beam-i3d] Job standin-job-1 is in state JOB_STATE_DONE"):
        assert line in done.stderr, done.stderr[-3000:]
    assert "Create job: " not in done.stderr  # Beam's dump of the whole job stays out
    job = api.jobs[0]
    env = job["environment"]
    assert job["name"] == "beam-i3d-launch-test"
    assert env["serviceOptions"] == [
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]
    # Runner v2 with one SDK process per vCPU (our process model: no MPS for rgb).
    assert {"use_runner_v2", "beam_fn_api", "use_multiple_sdk_containers"} <= set(
        env["experiments"])
    assert "no_use_multiple_sdk_containers" not in env["experiments"]
    (pool,) = env["workerPools"]
    assert pool["machineType"] == "g2-standard-8"
    assert pool["diskSizeGb"] == 100
    assert pool["autoscalingSettings"]["maxNumWorkers"] == 20
    assert pool["workerHarnessContainerImage"] == IMAGE
    assert [i["containerImage"] for i in pool["sdkHarnessContainerImages"]] == [IMAGE]
    options = env["sdkPipelineOptions"]["options"]
    assert options["sdk_location"] == "container" and options["sdk_container_image"] == IMAGE
    assert options["temp_location"].startswith("gs://test-bucket/beam-i3d/tmp/")

    data, pipeline = staged_pipeline(job)
    names = {t.unique_name for t in pipeline.components.transforms.values()}
    for name in ("Manifests", "Decode", "Score", "WriteScores", "WriteErrors"):
        assert name in names, sorted(names)
    assert any(n.startswith("Score/I3D/") for n in names)
    # Nothing local: one environment, our image, its only artifacts staged on gs://;
    # no path of this machine anywhere in the serialised pipeline.
    (environment,) = pipeline.components.environments.values()
    assert environment.urn == "beam:env:docker:v1" and IMAGE.encode() in environment.payload
    for dependency in environment.dependencies:
        assert dependency.type_urn == "beam:artifact:type:url:v1"
        assert b"gs://test-bucket/beam-i3d/staging/" in dependency.type_payload
    pickles = pickled_payloads(pipeline)
    assert len(pickles) > 10  # the DoFns and functions of every step (15 when written)
    # (Only the source file names of pickled lambdas mention this checkout: code
    # objects keep the path they were compiled from; workers never open it.)
    source_file = re.compile(re.escape(str(ROOT)).encode() + rb"/[\w/.-]+\.py")
    for blob in (data, *pickles):
        blob = source_file.sub(b"", blob)
        for local in (str(ROOT), str(tmp_path), "file://", os.path.expanduser("~") + "/"):
            assert local.encode() not in blob, (local, blob[:3000])
    assert any(b"gs://test-bucket/manifests/one.csv" in p for p in pickles)
    assert any(b"gs://test-bucket/runs/beam-i3d-launch-test/scores" in p for p in pickles)


def test_a_worker_without_gpu_fails_the_dataflow_job_with_one_line(gcs_emulator, tmp_path):
    """The job fails on the service (stand-in: RUNNING, then FAILED with the worker's
    traceback as its error message): the launcher prints the GPU line, exit 3."""
    settings = launch_settings(tmp_path, "beam-i3d-gpu-test")
    worker_error = (
        "Traceback (most recent call last):\n  File \"beam_i3d/job/gpu.py\", line 62\n"
        "beam_i3d.errors.GPUUnavailable: --require-gpu: TensorFlow 2.21.0 sees no GPU on "
        "worker w-1; likely cause: no NVIDIA device or driver on this machine; not "
        "scoring on the CPU [while running 'Score/I3D/...']\n")
    with DataflowStandIn(states=["JOB_STATE_RUNNING", "JOB_STATE_FAILED"],
                         messages=[worker_error]) as api:
        done = run_script(settings, "--dataflow_endpoint", api.endpoint, "--no_auth")
    assert len(api.jobs) == 1
    assert done.returncode == 3, done.stderr[-5000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("beam-i3d score: error: --require-gpu: TensorFlow 2.21.0 sees "
                           "no GPU on worker w-1; likely cause: no NVIDIA device"), last
    assert last.endswith("not scoring on the CPU"), last


def test_require_gpu_fails_fast_on_a_machine_without_gpu(tmp_path):
    """This machine has no GPU: the real job on the sample stops at the model load,
    within the test, with one line naming the likely cause; no scores are written."""
    import time

    manifest = tmp_path / "one.csv"
    manifest.write_text(f"video_uri,clip_id\n{SAMPLE},c1\n")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "beam_i3d", "score", "--manifest", str(manifest),
         "--output", str(tmp_path / "out"), "--require-gpu", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    elapsed = time.monotonic() - started
    assert done.returncode == 3, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"beam-i3d score: error: --require-gpu: TensorFlow \S+ sees no GPU on worker \S+; "
        r"likely cause: .*; not scoring on the CPU", last), last
    assert "NVIDIA driver" in last and "install-nvidia-driver" in last
    assert "Traceback" not in done.stderr.split("ERROR", 1)[0]
    assert elapsed < 90, elapsed  # imports and start-up included; the check is seconds
    assert not list((tmp_path / "out").glob("scores/*.parquet"))


def test_gpu_failure_found_in_wrapped_errors():
    from beam_i3d.errors import GPUUnavailable
    from beam_i3d.job.gpu import gpu_failure_as_error, gpu_failure_in

    line = "--require-gpu: TensorFlow 2.21.0 sees no GPU on worker w; likely cause: x"
    wrapped = RuntimeError(f"Pipeline failed:\nTraceback ...\nbeam_i3d.errors.GPUUnavailable: "
                           f"{line} [while running 'Score/I3D']\n")
    assert gpu_failure_in(wrapped) == line
    assert gpu_failure_in(RuntimeError("out of memory")) is None
    with pytest.raises(GPUUnavailable, match="sees no GPU"):
        with gpu_failure_as_error():
            raise wrapped
    with pytest.raises(RuntimeError, match="out of memory"):
        with gpu_failure_as_error():
            raise RuntimeError("out of memory")


def test_gpu_diagnosis_names_the_likely_cause(monkeypatch):
    from beam_i3d.job import gpu

    class FakeTF:
        built = True

        class test:  # noqa: N801 (tf.test)
            @staticmethod
            def is_built_with_cuda():
                return FakeTF.built

        class sysconfig:  # noqa: N801 (tf.sysconfig)
            @staticmethod
            def get_build_info():
                return {"cuda_version": "12.5.1"}

    monkeypatch.setattr(gpu.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(gpu, "_driver_version", lambda: None)
    assert "NVIDIA driver is not installed" in gpu.diagnose(FakeTF)
    assert "install-nvidia-driver" in gpu.diagnose(FakeTF)
    monkeypatch.setattr(gpu.glob, "glob", lambda pattern: ["/dev/nvidia0"])
    monkeypatch.setattr(gpu, "_driver_version", lambda: "535.104.05")
    cause = gpu.diagnose(FakeTF)
    assert "driver (535.104.05, 1 device(s)) is present" in cause
    assert "CUDA libraries in the image likely do not match the host driver" in cause
    assert "12.5.1" in cause
    FakeTF.built = False
    assert "CPU-only build" in gpu.diagnose(FakeTF)


# --- Nothing local on Dataflow ------------------------------------------------------------


def dataflow_args(tmp_path):
    return ["--runner", "DataflowRunner", "--project", "p", "--region", "us-central1",
            "--temp_location", "gs://b/tmp"]


def test_local_paths_are_refused_before_submission(tmp_path, capsys):
    from beam_i3d.cli import EXIT_CONFIGURATION, main

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video_uri\n{SAMPLE}\n")
    status = main(["score", "--manifest", str(manifest), "--output", "gs://b/out",
                   "--rgb-checkpoint", str(tmp_path / "ckpt"), "--dry-run",
                   *dataflow_args(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == EXIT_CONFIGURATION
    assert err[-1] == (
        "beam-i3d score: error: the dataflow runner's workers cannot read this machine's "
        f"disk, but these are local: --manifest {manifest}; --rgb-checkpoint "
        f"{tmp_path / 'ckpt'}; copy them to gs:// (or the cluster's shared storage) and "
        "pass those URIs")


def test_which_runners_may_read_local_paths():
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_i3d.errors import ConfigurationError
    from beam_i3d.job.launch import local_paths, refuse_local_paths, workers_see_local_disk
    from beam_i3d.job.pipeline import ScoreOptions

    def sees(*args):
        return workers_see_local_disk(PipelineOptions(list(args)))

    assert sees() and sees("--runner", "DirectRunner") and sees("--runner", "direct")
    assert sees("--runner", "PrismRunner")
    assert not sees("--runner", "DataflowRunner") and not sees("--runner", "dataflow")
    assert not sees("--runner", "apache_beam.runners.dataflow.dataflow_runner.DataflowRunner")
    assert sees("--runner", "PortableRunner", "--job_endpoint", "localhost:8099",
                "--environment_type", "LOOPBACK")
    assert sees("--runner", "FlinkRunner", "--environment_type", "PROCESS")
    assert not sees("--runner", "FlinkRunner")  # Docker workers: host paths not mounted
    assert not sees("--runner", "PortableRunner", "--job_endpoint", "flink-jm:8099",
                    "--environment_type", "PROCESS")

    remote = ScoreOptions(manifest="gs://b/m.csv", output="gs://b/out",
                          streams=("rgb", "flow"), rgb_checkpoint="default",
                          flow_checkpoint="gs://b/flow_imagenet")
    assert local_paths(remote) == []
    refuse_local_paths(remote, PipelineOptions(["--runner", "DataflowRunner"]))
    local = ScoreOptions(manifest="gs://b/m.csv", output="file:///tmp/out",
                         streams=("flow",), rgb_checkpoint=None, flow_checkpoint="/c/flow",
                         video_template="/videos/{id}.mp4")
    assert local_paths(local) == ["--output file:///tmp/out", "--flow-checkpoint /c/flow",
                                  "--video-template /videos/{id}.mp4"]
    refuse_local_paths(local, PipelineOptions([]))  # DirectRunner: fine
    with pytest.raises(ConfigurationError, match="--output file:///tmp/out"):
        refuse_local_paths(local, PipelineOptions(["--runner", "DataflowRunner"]))


# --- The launcher's modes ----------------------------------------------------------------


DRY = {"PROJECT": "my-project", "REGION": "us-central1", "BUCKET": "my-bucket",
       "IMAGE": IMAGE, "MANIFEST": "gs://my-bucket/m.csv", "OUTPUT": "gs://my-bucket/runs/r1"}


def test_cpu_workers_and_two_streams_on_one_gpu():
    """GPU_TYPE=none: no accelerator, no --require-gpu, an n2 machine, one model per
    machine. Two streams with TV-L1 on one GPU: MPS on, smaller flow batches."""
    done = run_script({**DRY, "GPU_TYPE": "none"}, "--dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    command = done.stdout
    assert "worker_accelerator" not in command and "--require-gpu" not in command
    for expected in ("--machine_type n2-standard-8", "--model-copies 1",
                     "--decode-processes 1", "--experiments use_runner_v2"):
        assert expected in command, (expected, command)

    done = run_script({**DRY, "DECODE_PROCESSES": "2"}, "--dry-run", "--streams",
                      "rgb,flow", "--flow-checkpoint", "gs://my-bucket/flow_imagenet")
    assert done.returncode == 0, done.stderr[-3000:]
    command = done.stdout
    for expected in ("type:nvidia-l4\\;count:1\\;install-nvidia-driver\\;use_nvidia_mps",
                     "--require-gpu", "--model-copies 1", "--decode-processes 2",
                     "--flow-batch-pairs 16", "--machine_type g2-standard-8"):
        assert expected in command, (expected, command)


# --- The worker image agrees with the launcher ---------------------------------------------


def dockerfile_arg(name):
    text = (ROOT / "Dockerfile").read_text()
    found = re.findall(rf"^ARG {name}=(\S+)\s*$", text, re.M)
    assert len(found) == 1, f"Dockerfile: expected one 'ARG {name}=...', found {found}"
    return found[0]


def test_worker_image_versions_match_the_launcher():
    """Dataflow needs the workers' Beam and Python to be the launcher's: the pipeline is
    pickled here and unpickled there."""
    import apache_beam
    from packaging.specifiers import SpecifierSet

    beam_version = dockerfile_arg("BEAM_VERSION")
    python_version = dockerfile_arg("PYTHON_VERSION")
    assert beam_version == apache_beam.__version__, (
        f"Dockerfile builds Beam {beam_version}, the launcher runs {apache_beam.__version__}")
    assert python_version == f"{sys.version_info.major}.{sys.version_info.minor}", (
        f"Dockerfile builds Python {python_version}, the launcher runs {sys.version}")
    setup = (ROOT / "setup.py").read_text()
    beam_pin = re.search(r'"apache-beam\[gcp\]([^"]+)"', setup).group(1)
    assert beam_version in SpecifierSet(beam_pin), (beam_version, beam_pin)
    tf_pin = re.search(r'"tensorflow([<>=!~][^"]+)"', setup).group(1)
    assert f'"tensorflow[and-cuda]{tf_pin}"' in (ROOT / "Dockerfile").read_text(), tf_pin


def test_build_without_docker_says_so():
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if d and not (Path(d) / "docker").exists())
    done = run_script({**DRY, "PATH": path}, "--build")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--build needs docker, which is not on PATH" in lines[0], lines


def test_a_cancelled_job_is_reconciled_and_fails(gcs_emulator, tmp_path):
    """A job the service reports CANCELLED: the launcher still checks the output
    against the manifest, names the missing row and the job's state, exit 4."""
    settings = launch_settings(tmp_path, "beam-i3d-cancelled")
    with DataflowStandIn(states=["JOB_STATE_RUNNING", "JOB_STATE_CANCELLED"]) as api:
        done = run_script(settings, "--dataflow_endpoint", api.endpoint, "--no_auth")
    assert done.returncode == 4, done.stderr[-4000:]
    assert "submitted Dataflow job standin-job-1: https://console.cloud.google.com/" \
        in done.stderr
    assert "missing rows: c1 (gs://test-bucket/manifests/one.csv:2)" in done.stderr
    assert "CANCELLED" in done.stderr.splitlines()[-1]


def test_no_wait_submits_and_says_how_to_check(gcs_emulator, tmp_path):
    settings = launch_settings(tmp_path, "beam-i3d-no-wait")
    with DataflowStandIn(states=["JOB_STATE_RUNNING"]) as api:
        done = run_script(settings, "--dataflow_endpoint", api.endpoint, "--no_auth",
                          "--no-wait")
    assert done.returncode == 0, done.stderr[-4000:]
    assert len(api.jobs) == 1 and api.requested_states == []  # nothing cancelled
    assert "beam-i3d verify --manifest 'gs://test-bucket/manifests/one.csv'" in done.stderr
    assert "gcloud dataflow jobs cancel standin-job-1 --region us-central1" in done.stderr


def test_no_wait_needs_a_remote_runner(tmp_path, capsys):
    from beam_i3d.cli import EXIT_USAGE, main

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video_uri\n{SAMPLE}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["score", "--manifest", str(manifest), "--output", str(tmp_path / "o"),
              "--no-wait"])
    assert exit_.value.code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--no-wait" in err[0]


def test_ctrl_c_while_waiting_leaves_the_job_running(gcs_emulator, tmp_path):
    """SIGINT once the job runs: one line saying it still runs and how to cancel and
    verify it, exit 130, and no cancel request reaches the service."""
    import signal
    import time

    settings = launch_settings(tmp_path, "beam-i3d-ctrl-c")
    env = {**os.environ, **settings, "BEAM_I3D_VENV": sys.prefix, "BEAM_I3D_NO_INSTALL": "1"}
    with DataflowStandIn(states=["JOB_STATE_RUNNING"]) as api:
        launcher = subprocess.Popen(
            [str(ROOT / "run_dataflow.sh"), "--dataflow_endpoint", api.endpoint, "--no_auth"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 90
            while api.polls < 1:  # the launcher is waiting on the job
                assert launcher.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            launcher.send_signal(signal.SIGINT)  # run_dataflow.sh execs the launcher
            _, stderr = launcher.communicate(timeout=60)
        finally:
            if launcher.poll() is None:
                launcher.kill()
        assert launcher.returncode == 130, stderr[-4000:]
        assert api.requested_states == []  # not cancelled
    line = next(l for l in stderr.splitlines() if "interrupted:" in l)
    assert "still running (not cancelled)" in line
    assert "gcloud dataflow jobs cancel standin-job-1 --region us-central1" in line
    assert "beam-i3d verify --manifest 'gs://test-bucket/manifests/one.csv'" in line


def test_a_failed_job_is_not_a_success_even_when_its_output_is_complete(gcs_emulator,
                                                                         tmp_path):
    """The manifest's only row was settled by an earlier run (resumed with
    --skip-existing); the job then FAILS on the service: the counts reconcile, but the
    launcher says the job did not finish and exits 1."""
    import pyarrow as pa

    from beam_i3d.job.shards import shard_name, write_table_atomically
    from schemas import SCORES_SCHEMA

    settings = launch_settings(tmp_path, "beam-i3d-failed")
    row = {"clip_id": "c1", "video_uri": f"gs://test-bucket/videos/{SAMPLE.name}",
           "num_frames": 79, "predicted_label": "playing cricket", "predicted_index": 0,
           "predicted_probability": 0.9,
           "top_k": [{"label": "playing cricket", "index": 0, "probability": 0.9,
                      "logit": 1.0}],
           "logits": [1.0], "row_key": "c1", "run_id": "20260101T000000Z-earlier"}
    table = pa.Table.from_pylist([{f.name: row.get(f.name) for f in SCORES_SCHEMA}],
                                 schema=SCORES_SCHEMA)
    write_table_atomically(table, settings["OUTPUT"] + "/scores/" + shard_name(
        "20260101T000000Z-earlier", "w", 0))
    with DataflowStandIn(states=["JOB_STATE_RUNNING", "JOB_STATE_FAILED"],
                         messages=["Traceback: something broke on a worker"]) as api:
        done = run_script(settings, "--dataflow_endpoint", api.endpoint, "--no_auth",
                          "--skip-existing")
    assert done.returncode == 1, done.stderr[-4000:]
    assert "settled: 1 scored, 0 failed; missing: 0" in done.stderr, done.stderr[-3000:]
    assert "FAILED, not DONE" in done.stderr.strip().splitlines()[-1], done.stderr[-3000:]
