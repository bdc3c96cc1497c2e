"""`beam-i3d export`: a SavedModel that plain TensorFlow serves without this project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from beam_i3d import __version__
from beam_i3d.cli import main
from conftest import release_layout, write_random_checkpoint
from model.export import I3DModel, build_model, export_saved_model
from model.weights import load_stream


@pytest.fixture(scope="module")
def flow_checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("flow_imagenet")
    write_random_checkpoint(release_layout("flow_imagenet"), str(d / "model.ckpt"), seed=11)
    return str(d / "model.ckpt")


@pytest.fixture(scope="module")
def two_stream_export(tmp_path_factory, flow_checkpoint):
    out = str(tmp_path_factory.mktemp("export") / "i3d")
    assert main(["export", "--rgb-checkpoint", "default", "--flow-checkpoint",
                 flow_checkpoint, "--out", out]) == 0
    return out


LOAD_WITHOUT_PROJECT = textwrap.dedent("""
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("beam_i3d", "model", "schemas"):
                raise ImportError("this project must not be needed: " + name)
    sys.meta_path.insert(0, Block())
    import numpy as np, tensorflow as tf
    m = tf.saved_model.load(sys.argv[1])
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 10, 224, 224, 3), dtype=np.uint8)
    flow = rng.integers(0, 256, (2, 9, 224, 224, 2), dtype=np.uint8)
    out = m.signatures["serving_uint8"](rgb=tf.constant(rgb), flow=tf.constant(flow))
    np.savez(sys.argv[2], **{k: v.numpy() for k, v in out.items()})
""")


def test_saved_model_runs_without_the_project(two_stream_export, tmp_path, flow_checkpoint):
    result = str(tmp_path / "out.npz")
    subprocess.run([sys.executable, "-c", LOAD_WITHOUT_PROJECT, two_stream_export, result],
                   check=True, cwd=str(tmp_path))
    got = dict(np.load(result))
    assert set(got) == {"logits", "probabilities", "rgb_logits", "rgb_embedding",
                        "flow_logits", "flow_embedding"}
    # The same numbers as the in-process model.
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 10, 224, 224, 3), dtype=np.uint8)
    flow = rng.integers(0, 256, (2, 9, 224, 224, 2), dtype=np.uint8)
    model = build_model("default", flow_checkpoint)
    want = model.predict_uint8({"rgb": rgb, "flow": flow})
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["logits"], got["rgb_logits"] + got["flow_logits"], atol=1e-5)
    np.testing.assert_allclose(got["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert got["rgb_embedding"].shape == (2, 1024) and got["logits"].shape == (2, 400)


def test_float_and_uint8_signatures_agree(two_stream_export):
    m = tf.saved_model.load(two_stream_export)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (1, 9, 224, 224, 3), dtype=np.uint8)
    flow = rng.integers(0, 256, (1, 11, 224, 224, 2), dtype=np.uint8)
    as_uint8 = m.signatures["serving_uint8"](rgb=tf.constant(rgb), flow=tf.constant(flow))
    as_float = m.signatures["serving_default"](
        rgb=tf.constant(rgb.astype(np.float32) / 255 * 2 - 1),
        flow=tf.constant(flow.astype(np.float32) / 255 * 2 - 1))
    for key in as_float:
        np.testing.assert_allclose(as_uint8[key].numpy(), as_float[key].numpy(), rtol=1e-5, atol=1e-4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 9 frames"):
        m.signatures["serving_default"](rgb=tf.zeros([1, 8, 224, 224, 3]),
                                        flow=tf.zeros([1, 9, 224, 224, 2]))


def test_export_metadata_and_labels(two_stream_export, flow_checkpoint):
    extra = os.path.join(two_stream_export, "assets.extra")
    labels = open(os.path.join(extra, "labels.txt")).read().splitlines()
    assert len(labels) == 400 and labels[227] == "playing cricket"
    meta = json.load(open(os.path.join(extra, "beam_i3d.json")))
    assert meta["streams"] == "rgb,flow"
    assert meta["rgb_checkpoint"] == "default"
    assert meta["flow_checkpoint"] == flow_checkpoint
    assert meta["label_map"] == "kinetics-400"
    # beam-i3d export gives model.export the job's version to record.
    assert meta["beam_i3d_version"] == __version__


def test_rgb_only_export_to_gcs(gcs_emulator, default_rgb, tmp_path):
    from apache_beam.io.filesystems import FileSystems

    net, _ = default_rgb
    export_saved_model(I3DModel({"rgb": net}, {"rgb": "default"}), "gs://test-bucket/sm/rgb")
    listed = {m.path for m in FileSystems.match(["gs://test-bucket/sm/rgb/**"])[0].metadata_list}
    assert "gs://test-bucket/sm/rgb/saved_model.pb" in listed
    assert "gs://test-bucket/sm/rgb/assets.extra/labels.txt" in listed
    local = tmp_path / "copy"
    for path in listed:
        dest = local / path[len("gs://test-bucket/sm/rgb/"):]
        dest.parent.mkdir(parents=True, exist_ok=True)
        with FileSystems.open(path) as f:
            dest.write_bytes(f.read())
    m = tf.saved_model.load(str(local))
    sig = m.signatures["serving_default"]
    assert set(sig.structured_input_signature[1]) == {"rgb"}
    x = np.random.default_rng(2).uniform(-1, 1, (1, 9, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(sig(rgb=tf.constant(x))["logits"].numpy(),
                               net(tf.constant(x))["logits"].numpy(), atol=1e-5)


def test_streams_must_share_classes(tmp_path):
    kin600 = tmp_path / "kin600"
    kin600.mkdir()
    write_random_checkpoint(release_layout("rgb_scratch_kin600"), str(kin600 / "model.ckpt"))
    flow = tmp_path / "flow"
    flow.mkdir()
    write_random_checkpoint(release_layout("flow_scratch"), str(flow / "model.ckpt"))
    rgb_net, _ = load_stream(str(kin600), "rgb")
    flow_net, _ = load_stream(str(flow), "flow")
    with pytest.raises(ValueError, match="rgb: 600, flow: 400"):
        I3DModel({"rgb": rgb_net, "flow": flow_net})


def test_cli_reports_bad_checkpoint(tmp_path, capsys):
    assert main(["export", "--rgb-checkpoint", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "sm")]) == 1
    assert "no checkpoint at" in capsys.readouterr().err


def test_module_entry_point_help():
    done = subprocess.run([sys.executable, "-m", "beam_i3d", "export", "--help"],
                          capture_output=True, text=True, check=True)
    assert "--rgb-checkpoint" in done.stdout and "--flow-checkpoint" in done.stdout
