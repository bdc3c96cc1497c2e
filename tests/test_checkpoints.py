"""Loading checkpoints in the five layouts of the DeepMind release, strictly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tensorflow as tf

from beam_i3d.errors import CheckpointMismatch, CheckpointNotFound, InvalidModelInput
from conftest import DATA, RELEASE_CHECKPOINTS, release_layout, upload, write_random_checkpoint
from model.i3d import InceptionI3d, network_units
from model.weights import (
    check_stream_checkpoint,
    expected_variables,
    fold_batch_norm,
    load_stream,
    load_stream_weights,
    read_stream_weights,
)

EXPECTED = {  # layout -> (stream, classes, scope, momentum slots)
    "rgb_imagenet": ("rgb", 400, "RGB/inception_i3d/", False),
    "rgb_scratch": ("rgb", 400, "RGB/inception_i3d/", False),
    "flow_imagenet": ("flow", 400, "Flow/inception_i3d/", False),
    "flow_scratch": ("flow", 400, "Flow/inception_i3d/", False),
    "rgb_scratch_kin600": ("rgb", 600, "", True),
}


@pytest.fixture(scope="module", params=RELEASE_CHECKPOINTS)
def release_checkpoint(request, tmp_path_factory):
    """A directory laid out like the release's data/checkpoints/<name>: the real
    ``checkpoint`` state file (with the authors' absolute paths) and a model.ckpt with
    random values under exactly the real variable names and shapes."""
    name = request.param
    d = tmp_path_factory.mktemp(name)
    shutil.copy(DATA / "checkpoints" / name / "checkpoint", d / "checkpoint")
    written = write_random_checkpoint(release_layout(name), str(d / "model.ckpt"))
    return name, d, written


def test_layouts_differ_as_documented():
    for name, (stream, classes, scope, slots) in EXPECTED.items():
        names = dict(release_layout(name))
        channels = 3 if stream == "rgb" else 2
        assert names[scope + "Conv3d_1a_7x7/conv_3d/w"] == [7, 7, 7, channels, 64]
        assert names[scope + "Logits/Conv3d_0c_1x1/conv_3d/b"] == [classes]
        assert any(n.endswith("/Momentum") for n in names) == slots
        assert set(expected_variables(channels, classes)) == {
            n[len(scope):] for n in names if not n.endswith("/Momentum")}


def test_release_layout_loads_every_tensor(release_checkpoint):
    name, directory, written = release_checkpoint
    stream, classes, scope, _ = EXPECTED[name]
    # By directory (resolving the release's `checkpoint` file) and by prefix.
    for spec in (str(directory), str(directory / "model.ckpt")):
        weights = load_stream_weights(spec, stream)
        assert (weights.num_classes, weights.stream) == (classes, stream)
        assert set(weights.tensors) == set(expected_variables(weights.in_channels, classes))
        for canonical, value in weights.tensors.items():
            original = written[scope + canonical]
            np.testing.assert_array_equal(value, original.reshape(value.shape))
            assert original.size == value.size


def test_release_layout_gives_right_class_count(release_checkpoint):
    name, directory, _ = release_checkpoint
    stream, classes, _, _ = EXPECTED[name]
    net, _ = load_stream(str(directory), stream)
    channels = 3 if stream == "rgb" else 2
    x = tf.random.uniform([2, 9, 224, 224, channels], -1, 1, seed=1)
    out = net(x)
    assert out["logits"].shape == (2, classes)
    assert out["embedding"].shape == (2, 1024)
    assert np.isfinite(out["logits"].numpy()).all()


def _rewrite(tmp_path, layout_name, edit):
    layout = dict(release_layout(layout_name))
    edit(layout)
    prefix = str(tmp_path / "model.ckpt")
    write_random_checkpoint(list(layout.items()), prefix)
    return prefix


def test_missing_unexpected_and_mismatched_are_all_listed(tmp_path):
    def edit(layout):
        del layout["RGB/inception_i3d/Mixed_4c/Branch_1/Conv3d_0b_3x3/batch_norm/beta"]
        layout["RGB/inception_i3d/Mixed_4c/Branch_9/extra/w"] = [3]
        layout["RGB/inception_i3d/Mixed_3b/Branch_0/Conv3d_0a_1x1/conv_3d/w"] = [1, 1, 1, 192, 65]

    prefix = _rewrite(tmp_path, "rgb_imagenet", edit)
    with pytest.raises(CheckpointMismatch) as info:
        read_stream_weights(prefix, "rgb")
    err = info.value
    assert err.missing == ["Mixed_4c/Branch_1/Conv3d_0b_3x3/batch_norm/beta"]
    assert err.unexpected == ["RGB/inception_i3d/Mixed_4c/Branch_9/extra/w"]
    assert err.mismatched == [("Mixed_3b/Branch_0/Conv3d_0a_1x1/conv_3d/w",
                               (1, 1, 1, 192, 64), (1, 1, 1, 192, 65))]
    message = str(err)
    for text in ("missing (1)", "unexpected (1)", "shape mismatch (1)", prefix):
        assert text in message


def test_optimizer_state_is_ignored_but_nothing_else(tmp_path):
    def edit(layout):
        layout["global_step"] = []
        layout["RGB/inception_i3d/Conv3d_1a_7x7/conv_3d/w/Adam"] = [7, 7, 7, 3, 64]

    prefix = _rewrite(tmp_path, "rgb_scratch", edit)
    assert read_stream_weights(prefix, "rgb").num_classes == 400


def test_wrong_stream_is_named(tmp_path):
    prefix = _rewrite(tmp_path, "flow_scratch", lambda layout: None)
    with pytest.raises(CheckpointMismatch, match="rgb stream needs 3 input channels"):
        read_stream_weights(prefix, "rgb")


def test_joint_checkpoint_picks_the_stream(tmp_path):
    layout = release_layout("rgb_imagenet") + release_layout("flow_imagenet")
    prefix = str(tmp_path / "model.ckpt")
    written = write_random_checkpoint(layout, prefix)
    flow = read_stream_weights(prefix, "flow")
    np.testing.assert_array_equal(flow.tensors["Conv3d_1a_7x7/conv_3d/w"],
                                  written["Flow/inception_i3d/Conv3d_1a_7x7/conv_3d/w"])
    with pytest.raises(CheckpointMismatch, match="several I3D networks"):
        read_stream_weights(prefix)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointNotFound, match="no checkpoint at"):
        load_stream_weights(str(tmp_path / "nothing" / "model.ckpt"), "rgb")
    with pytest.raises(CheckpointNotFound, match=r"no checkpoint \(\*.index\)"):
        load_stream_weights(str(tmp_path), "rgb")


def test_checkpoint_from_gcs(gcs_emulator, tmp_path):
    written = write_random_checkpoint(release_layout("rgb_scratch_kin600"),
                                      str(tmp_path / "model.ckpt"), seed=3)
    for f in tmp_path.iterdir():
        upload(f, f"gs://test-bucket/ckpt/kin600/{f.name}")
    upload(DATA / "checkpoints" / "rgb_scratch_kin600" / "checkpoint",
           "gs://test-bucket/ckpt/kin600/checkpoint")
    for spec in ("gs://test-bucket/ckpt/kin600", "gs://test-bucket/ckpt/kin600/model.ckpt"):
        weights = load_stream_weights(spec, "rgb")
        assert weights.num_classes == 600 and weights.source == spec
        np.testing.assert_array_equal(
            weights.tensors["Mixed_5c/Branch_3/Conv3d_0b_1x1/batch_norm/moving_mean"],
            written["Mixed_5c/Branch_3/Conv3d_0b_1x1/batch_norm/moving_mean"].reshape(-1))
    with pytest.raises(CheckpointNotFound):
        load_stream_weights("gs://test-bucket/ckpt/absent", "rgb")
    layout = check_stream_checkpoint("gs://test-bucket/ckpt/kin600", "rgb")
    assert (layout.num_classes, layout.in_channels, layout.scope) == (600, 3, "")
    with pytest.raises(CheckpointMismatch, match="flow stream needs 2 input channels"):
        check_stream_checkpoint("gs://test-bucket/ckpt/kin600", "flow")


def test_checking_reads_only_the_index(tmp_path):
    """The launcher's check needs names and shapes alone: it works without the data
    file and finds the same faults loading does."""
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n')
    shutil.copy(DATA / "checkpoints" / "flow_scratch" / "model.ckpt.index",
                tmp_path / "model.ckpt.index")
    layout = check_stream_checkpoint(str(tmp_path), "flow")
    assert (layout.scope, layout.in_channels, layout.num_classes) == (
        "Flow/inception_i3d/", 2, 400)
    with pytest.raises(CheckpointMismatch, match="rgb stream needs 3"):
        check_stream_checkpoint(str(tmp_path), "rgb")


def test_folding_equals_conv_then_batch_norm():
    """The folded unit computes conv -> batch norm (no scale, eps 1e-3) -> ReLU."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 4, 9, 9, 3)).astype(np.float32)
    w = rng.normal(size=(3, 3, 3, 3, 8)).astype(np.float32)
    beta, mean = rng.normal(size=8), rng.normal(size=8)
    var = rng.uniform(0.1, 2, size=8)
    conv = tf.nn.conv3d(x, w, strides=[1] * 5, padding="SAME").numpy().astype(np.float64)
    want = np.maximum((conv - mean) / np.sqrt(var + 1e-3) + beta, 0)

    units = network_units(3, 400)
    tensors = {}
    for u in units:  # zeros everywhere but the first unit, which we check
        tensors[f"{u.name}/conv_3d/w"] = np.zeros(u.kernel + (u.in_channels, u.out_channels))
        if u.batch_norm:
            for s in ("beta", "moving_mean"):
                tensors[f"{u.name}/batch_norm/{s}"] = np.zeros(u.out_channels)
            tensors[f"{u.name}/batch_norm/moving_variance"] = np.ones(u.out_channels)
        else:
            tensors[f"{u.name}/conv_3d/b"] = np.zeros(u.out_channels)
    from model.weights import StreamWeights

    tensors["Conv3d_1a_7x7/conv_3d/w"] = np.pad(w, [(2, 2), (2, 2), (2, 2), (0, 0), (0, 56)])
    for name, value in (("beta", beta), ("moving_mean", mean), ("moving_variance", var)):
        tensors[f"Conv3d_1a_7x7/batch_norm/{name}"] = np.pad(value, (0, 56), constant_values=1)
    folded = fold_batch_norm(StreamWeights(tensors, 3, 400, "test"))
    net = InceptionI3d.from_folded(folded)
    # A 3x3x3 kernel zero-padded to 7x7x7 computes the same "SAME" convolution.
    got = net._unit(tf.constant(x), "Conv3d_1a_7x7").numpy()[..., :8]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_too_few_frames_is_a_clear_error(default_rgb):
    net, _ = default_rgb
    with pytest.raises(InvalidModelInput, match="at least 9 frames"):
        net(tf.zeros([1, 8, 224, 224, 3]))
    with pytest.raises(InvalidModelInput, match=r"\[B, T, 224, 224, 3\]"):
        net(tf.zeros([1, 9, 224, 224, 2]))
    with pytest.raises(InvalidModelInput, match="float32"):
        net(tf.zeros([1, 9, 224, 224, 3], tf.uint8))
    traced = tf.function(net, input_signature=[tf.TensorSpec([None, None, 224, 224, 3])])
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 9 frames"):
        traced(tf.zeros([1, 5, 224, 224, 3]))
