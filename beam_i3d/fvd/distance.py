"""The Fréchet Video Distance: mergeable feature moments and the distance, in float64.

Pure numpy, no Beam, no TensorFlow. The Beam pieces (the ``CombineFn`` over these
moments, the pipeline) are in :mod:`beam_i3d.fvd.pipeline`.

* :class:`Moments` is the state of one set of features: the count ``n``, the mean and
  the *centred* sum of outer products ``M2 = sum (x - mean)(x - mean)^T``, all float64.
  Two partial states merge with Chan, Golub and LeVeque's pairwise update
  (:func:`merge`), so the result does not depend on how the features were split into
  bundles, on the number of workers or on the order of merging (up to float64
  rounding), and the memory per state is independent of the number of clips
  (``D + D^2`` floats: 1.3 MB for D = 400). The centred form avoids the cancellation of
  ``sum x x^T / n - mean mean^T`` for features with a large mean.
* :func:`frechet_distance` computes ``|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr
  sqrt(sqrt(S1) S2 sqrt(S1))`` by symmetric eigendecompositions only (the matrix inside
  is symmetric positive semi-definite; its eigenvalues are clipped at 0 against
  rounding), never ``scipy.linalg.sqrtm`` of the non-symmetric ``S1 S2`` (whose
  regressions gave complex parts, negative and -1.9e28 FVDs). The result is clipped
  at 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

COVARIANCES = ("unbiased", "biased")  # divide M2 by n - 1 (reference FVD) or n (StyleGAN-V)


@dataclasses.dataclass
class Moments:
    """Count, mean and centred sum of outer products of a set of feature vectors.

    ``n == 0`` is the empty state (``mean`` and ``m2`` then None, any dimension).
    """

    n: int = 0
    mean: np.ndarray | None = None  # [D] float64
    m2: np.ndarray | None = None    # [D, D] float64: sum (x - mean)(x - mean)^T

    @property
    def dim(self) -> int | None:
        return None if self.mean is None else int(self.mean.shape[0])

    def covariance(self, kind: str = "unbiased") -> np.ndarray:
        """``M2 / (n - 1)`` (unbiased) or ``M2 / n`` (biased); float64 ``[D, D]``."""
        if kind not in COVARIANCES:
            raise ValueError(f"covariance must be one of {COVARIANCES}, got {kind!r}")
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.n}")
        return self.m2 / (self.n - 1 if kind == "unbiased" else self.n)

    def feature_sum(self) -> np.ndarray:
        """``sum x`` (float64 ``[D]``)."""
        return self.n * self.mean

    def outer_sum(self) -> np.ndarray:
        """``sum x x^T`` (float64 ``[D, D]``), as StyleGAN-V's ``raw_cov`` holds it."""
        return self.m2 + self.n * np.outer(self.mean, self.mean)

    @classmethod
    def of(cls, features) -> "Moments":
        """The moments of ``features`` ``[N, D]`` (any float dtype; computed in float64)."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {x.shape}")
        if x.shape[0] == 0:
            return cls()
        mean = x.mean(axis=0)
        centred = x - mean
        return cls(int(x.shape[0]), mean, centred.T @ centred)

    @classmethod
    def from_sums(cls, n: int, feature_sum, outer_sum) -> "Moments":
        """From ``n``, ``sum x`` and ``sum x x^T`` (StyleGAN-V's ``FeatureStats``)."""
        n = int(n)
        if n == 0:
            return cls()
        s = np.asarray(feature_sum, np.float64)
        mean = s / n
        m2 = np.asarray(outer_sum, np.float64) - n * np.outer(mean, mean)
        return cls(n, mean, _symmetric(m2))


def _symmetric(a: np.ndarray) -> np.ndarray:
    return (a + a.T) / 2


def add(state: Moments, x) -> Moments:
    """``state`` with one more feature vector ``x`` ``[D]`` (Welford's update, in place)."""
    x = np.asarray(x, np.float64).reshape(-1)
    if state.n == 0:
        return Moments(1, x.copy(), np.zeros((x.shape[0], x.shape[0])))
    _check_dims(state.dim, x.shape[0])
    n = state.n + 1
    delta = x - state.mean
    state.mean = state.mean + delta / n
    state.m2 += np.outer(delta, x - state.mean)
    state.n = n
    return state


def merge(a: Moments, b: Moments) -> Moments:
    """The moments of the union of two disjoint sets (Chan et al.'s pairwise update):
    ``mean = mean_a + d n_b / n``, ``M2 = M2_a + M2_b + d d^T n_a n_b / n`` with
    ``d = mean_b - mean_a``. A new state; neither input is changed."""
    if a.n == 0:
        return Moments(b.n, None if b.mean is None else b.mean.copy(),
                       None if b.m2 is None else b.m2.copy())
    if b.n == 0:
        return merge(b, a)
    _check_dims(a.dim, b.dim)
    n = a.n + b.n
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.n / n)
    m2 = a.m2 + b.m2 + np.outer(delta, delta) * (a.n * b.n / n)
    return Moments(n, mean, m2)


def merge_all(states) -> Moments:
    out = Moments()
    for s in states:
        out = merge(out, s)
    return out


def _check_dims(d1, d2) -> None:
    if d1 != d2:
        raise ValueError(f"feature dimensions differ: {d1} and {d2}")


def sqrt_psd(a: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (its
    eigenvalues clipped at 0 against rounding)."""
    w, v = np.linalg.eigh(_symmetric(np.asarray(a, np.float64)))
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(S1 S2)``, computed as ``tr sqrt(sqrt(S1) S2 sqrt(S1))``: the matrix is
    similar to ``S1 S2`` and symmetric PSD, so its eigenvalues are real and >= 0 (clipped
    at 0 against rounding) and the trace is the sum of their square roots."""
    root = sqrt_psd(sigma1)
    inner = _symmetric(root @ np.asarray(sigma2, np.float64) @ root)
    w = np.linalg.eigvalsh(inner)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The Fréchet distance of two Gaussians, float64, clipped at 0 (see module doc)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (
            mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"shapes do not fit: mu {mu1.shape} / {mu2.shape}, sigma "
                         f"{sigma1.shape} / {sigma2.shape}")
    diff = mu1 - mu2
    value = (diff @ diff + np.trace(sigma1) + np.trace(sigma2)
             - 2.0 * trace_sqrt_product(sigma1, sigma2))
    return float(max(value, 0.0))


def fvd_of_moments(real: Moments, fake: Moments, covariance: str = "unbiased") -> float:
    return frechet_distance(real.mean, real.covariance(covariance),
                            fake.mean, fake.covariance(covariance))
