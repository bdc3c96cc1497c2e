"""Statistics files of ``beam-i3d fvd``: our ``.npz`` and StyleGAN-V's pickles.

A statistics file holds one set's moments and what they were computed by, so that a
dataset's reference statistics are computed once (e.g. on Dataflow) and compared with
many generated sets later. Two sets are compared only if they were computed the same
way: :func:`check_compatible` refuses statistics whose protocol, frame count, frame
step (``subsample``), resize, weights, features or covariance differ.

``.npz`` keys (numpy only, read with ``allow_pickle=False``): ``n``; ``mu`` [D];
``sigma`` [D,D] (the protocol's covariance); ``feature_sum`` [D] (sum x);
``outer_sum`` [D,D] (sum x x^T, StyleGAN-V's ``raw_cov``); ``centred_sum`` [D,D]
(sum (x-mu)(x-mu)^T, the exact state the statistics merge from); and as 0-d values
``protocol``, ``frames`` and ``subsample`` (ints), ``resize``, ``weights``,
``features``, ``covariance``, ``clip_start`` (recorded, not compared: ``first`` or
``random (seed S)``) and ``format`` (``beam-i3d-fvd-stats/1``). Files written before
``subsample``, ``resize`` and ``clip_start`` existed read as 1, the protocol's resize
and ``first``.

StyleGAN-V and cd-fvd save their ``FeatureStats`` as a pickle of the object's
``__dict__``: ``num_items``, ``num_features``, ``raw_mean`` (the *sum* of the features,
float64, despite its name), ``raw_cov`` (the *sum of outer products*), ``capture_all``,
``capture_mean_cov``, ``max_items``, ``all_features`` (a list of float32 arrays or
None). They are read with an unpickler that builds nothing but plain containers and
numpy arrays (:class:`_StatsUnpickler`, the approach of the default weights' reader),
so a downloaded pickle cannot run code. Such a file records no protocol: it is taken
to be of the protocol and frame count the command line names, with the weights that
StyleGAN-V ships (its TorchScript conversion of TF-Hub's ``i3d-kinetics-400``, i.e.
``rgb_scratch``); a warning says so.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from typing import Any

import numpy as np

from beam_i3d.errors import ConfigurationError
from beam_i3d.fvd.clips import PROTOCOL_RESIZE
from beam_i3d.fvd.distance import Moments

FORMAT = "beam-i3d-fvd-stats/1"
IDENTITY_FIELDS = ("protocol", "frames", "subsample", "resize", "weights", "features",
                   "covariance", "precision")


class StatsError(ConfigurationError):
    """A statistics file that cannot be read, or two that cannot be compared."""


@dataclasses.dataclass
class FeatureSetStats:
    """One set's moments with what they were computed by."""

    moments: Moments
    protocol: str
    frames: int
    weights: str
    features: str
    covariance: str
    source: str = ""       # where it was read from (messages)
    assumed: bool = False  # identity taken from the command line (a foreign pickle)
    subsample: int = 1     # every subsample-th frame
    resize: str | None = None  # None: the protocol's own
    clip_start: str = "first"  # recorded only: "first" or "random (seed S)"
    # the model's arithmetic (--precision): bf16 statistics never compare with f32 ones;
    # a file that does not record it (written before it was) reads as f32
    precision: str = "f32"

    def __post_init__(self):
        if self.resize is None:
            self.resize = PROTOCOL_RESIZE.get(self.protocol, "")

    def identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in IDENTITY_FIELDS}

    @property
    def n(self) -> int:
        return self.moments.n

    def sigma(self) -> np.ndarray:
        return self.moments.covariance(self.covariance)


def check_compatible(a: FeatureSetStats, b: FeatureSetStats) -> None:
    """Raise StatsError (one line) unless ``a`` and ``b`` were computed the same way."""
    diffs = [f"{k} {getattr(a, k)!r} vs {getattr(b, k)!r}" for k in IDENTITY_FIELDS
             if getattr(a, k) != getattr(b, k)]
    if a.moments.dim is not None and b.moments.dim is not None and \
            a.moments.dim != b.moments.dim:
        diffs.append(f"feature dimension {a.moments.dim} vs {b.moments.dim}")
    if diffs:
        raise StatsError(
            f"refusing to compare statistics computed differently ({a.source or 'real'} "
            f"vs {b.source or 'fake'}): " + "; ".join(diffs))


def save_npz(stats: FeatureSetStats, path: str) -> None:
    """Write ``stats`` as a ``.npz`` (local path or any Beam FileSystems URI)."""
    m = stats.moments
    if m.n == 0:  # an empty set (every clip failed): written, so the run can say so
        mu, m2, feature_sum, outer_sum = (np.zeros(0), np.zeros((0, 0)), np.zeros(0),
                                          np.zeros((0, 0)))
    else:
        mu, m2, feature_sum, outer_sum = m.mean, m.m2, m.feature_sum(), m.outer_sum()
    # One clip has no covariance: sigma is NaN (fvd refuses sets of fewer than 2).
    sigma = stats.sigma() if m.n >= 2 else np.full(m2.shape, np.nan)
    arrays = {
        "n": np.int64(m.n), "mu": mu, "sigma": sigma,
        "feature_sum": feature_sum, "outer_sum": outer_sum, "centred_sum": m2,
        "protocol": np.str_(stats.protocol), "frames": np.int64(stats.frames),
        "subsample": np.int64(stats.subsample), "resize": np.str_(stats.resize),
        "weights": np.str_(stats.weights), "features": np.str_(stats.features),
        "covariance": np.str_(stats.covariance), "clip_start": np.str_(stats.clip_start),
        "precision": np.str_(stats.precision),
        "format": np.str_(FORMAT),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _write_bytes(path, buffer.getvalue())


def load_npz(data: bytes, source: str = "") -> FeatureSetStats:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if str(z["format"]) != FORMAT:
                raise StatsError(f"{source}: not a beam-i3d statistics file (format "
                                 f"{str(z['format'])!r})")
            n = int(z["n"])
            moments = Moments(n, np.asarray(z["mu"], np.float64),
                              np.asarray(z["centred_sum"], np.float64)) if n else Moments()
            files = set(z.files)
            return FeatureSetStats(
                moments, protocol=str(z["protocol"]), frames=int(z["frames"]),
                weights=str(z["weights"]), features=str(z["features"]),
                covariance=str(z["covariance"]), source=source,
                subsample=int(z["subsample"]) if "subsample" in files else 1,
                resize=str(z["resize"]) if "resize" in files else None,
                clip_start=str(z["clip_start"]) if "clip_start" in files else "first",
                precision=str(z["precision"]) if "precision" in files else "f32")
    except StatsError:
        raise
    except Exception as e:  # noqa: BLE001: any malformed file
        raise StatsError(f"{source}: cannot read statistics: {type(e).__name__}: {e}") from e


# --- StyleGAN-V / cd-fvd FeatureStats pickles ----------------------------------------------


def _numpy_global(module: str, name: str):
    import importlib

    for candidate in (module, module.replace("numpy.core", "numpy._core"),
                      module.replace("numpy._core", "numpy.core")):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise StatsError(f"cannot resolve {module}.{name}")


class _StatsUnpickler(pickle.Unpickler):
    """Builds dicts, lists, numbers, strings, None and numpy arrays/scalars; any other
    global a pickle names is refused before it could be called."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise StatsError(f"statistics pickle refers to {module}.{name}; only numpy "
                             "arrays and plain values are allowed")
        return _numpy_global(module, name)


def load_feature_stats_pickle(data: bytes, source: str = "") -> Moments:
    """The moments in a StyleGAN-V / cd-fvd ``FeatureStats`` pickle (see module doc)."""
    try:
        state = _StatsUnpickler(io.BytesIO(data)).load()
    except StatsError as e:
        raise StatsError(f"{source}: {e}") from e
    except Exception as e:  # noqa: BLE001: malformed bytes
        raise StatsError(f"{source}: cannot read the pickle: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or "num_items" not in state:
        raise StatsError(f"{source}: not a FeatureStats pickle (expected its __dict__ with "
                         "num_items, raw_mean, raw_cov)")
    n = int(state["num_items"])
    raw_mean, raw_cov = state.get("raw_mean"), state.get("raw_cov")
    if raw_mean is not None and raw_cov is not None:
        return Moments.from_sums(n, raw_mean, raw_cov)
    features = state.get("all_features")
    if features:
        return Moments.of(np.concatenate([np.asarray(f) for f in features])[:n])
    raise StatsError(f"{source}: FeatureStats holds neither raw_mean/raw_cov nor features")


# --- Reading a SPEC ------------------------------------------------------------------------


def is_stats_spec(spec: str) -> bool:
    return spec.lower().endswith((".npz", ".pkl", ".pickle"))


def read_stats(spec: str, protocol: str, frames: int, weights: str, features: str,
               covariance: str, subsample: int = 1, resize: str | None = None,
               precision: str = "f32") -> FeatureSetStats:
    """A statistics SPEC: our ``.npz`` or a ``FeatureStats`` pickle (whose identity is
    the one given, marked as assumed)."""
    data = _read_bytes(spec)
    if spec.lower().endswith(".npz"):
        return load_npz(data, spec)
    moments = load_feature_stats_pickle(data, spec)
    return FeatureSetStats(moments, protocol, frames, weights, features, covariance,
                           source=spec, assumed=True, subsample=subsample, resize=resize,
                           clip_start="unknown (a FeatureStats pickle)", precision=precision)


def _read_bytes(path: str) -> bytes:
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            return f.read()
    except Exception as e:  # noqa: BLE001
        raise StatsError(f"{path}: cannot read: {type(e).__name__}: {e}") from e


def _write_bytes(path: str, data: bytes) -> None:
    from beam_i3d import fileio

    fileio.write_bytes(path, data)
