"""The FVD's numeric core and its statistics files (no model, no Beam pipeline)."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

from beam_i3d.fvd import distance as fvd
from beam_i3d.fvd.distance import Moments
from beam_i3d.fvd.stats_files import (FeatureSetStats, StatsError, check_compatible,
                                load_feature_stats_pickle, load_npz, read_stats, save_npz)


def random_psd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d)


# --- The distance ---------------------------------------------------------------------------


def test_commuting_covariances_closed_form():
    # Diagonal covariances commute: FD = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    want = 1 + 0 + 4 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert fvd.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(
        want, rel=1e-12)


def test_commuting_rotated_covariances():
    # Same eigenvectors, rotated: still commuting, same closed form.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    want = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert fvd.frechet_distance(np.zeros(5), s1, np.zeros(5), s2) == pytest.approx(
        want, rel=1e-10)


def test_two_by_two_non_commuting_closed_form():
    # For 2x2 PSD matrices, tr sqrt(S1 S2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)).
    s1 = np.array([[2.0, 1.0], [1.0, 2.0]])
    s2 = np.array([[1.0, 0.0], [0.0, 3.0]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    tr_sqrt = np.sqrt(np.trace(s1 @ s2) + 2 * np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    mu1, mu2 = np.array([1.0, -1.0]), np.array([0.5, 2.0])
    want = 0.25 + 9.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert fvd.trace_sqrt_product(s1, s2) == pytest.approx(tr_sqrt, rel=1e-12)
    assert fvd.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-12)


def test_identical_sets_give_zero():
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 2.0, size=(50, 400))  # fewer samples than dims: singular sigma
    m = Moments.of(x)
    value = fvd.fvd_of_moments(m, m)
    assert 0.0 <= value < 1e-6


def test_result_never_negative():
    # Rank-deficient, nearly equal covariances: rounding could go below 0; clipped.
    rng = np.random.default_rng(3)
    s = random_psd(rng, 64, rank=3)
    assert fvd.frechet_distance(np.zeros(64), s, np.zeros(64), s * (1 + 1e-15)) >= 0.0


def test_shapes_checked():
    with pytest.raises(ValueError):
        fvd.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


# --- The moments and their merges -----------------------------------------------------------


def test_moments_match_numpy():
    rng = np.random.default_rng(4)
    x = rng.normal(100.0, 1.0, size=(37, 6)).astype(np.float32)  # a large mean
    m = Moments.of(x)
    np.testing.assert_allclose(m.mean, x.astype(np.float64).mean(0), rtol=1e-14)
    np.testing.assert_allclose(m.covariance("unbiased"), np.cov(x.astype(np.float64).T),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.covariance("biased"),
                               np.cov(x.astype(np.float64).T, bias=True), rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_merge_invariance(seed):
    # Random bundles (one-by-one adds and block moments), merged in a random order,
    # equal np.cov of all the features.
    rng = np.random.default_rng(seed)
    x = rng.normal(rng.uniform(-5, 5, 8), rng.uniform(0.1, 3, 8), size=(200, 8))
    cuts = np.sort(rng.choice(np.arange(1, 200), size=rng.integers(1, 20), replace=False))
    states = []
    for part in np.split(x, cuts):
        if rng.random() < 0.5:
            s = Moments()
            for row in part:
                s = fvd.add(s, row)
        else:
            s = Moments.of(part)
        states.append(s)
    states.append(Moments())  # an empty bundle
    while len(states) > 1:  # random pairwise merge tree
        i, j = sorted(rng.choice(len(states), size=2, replace=False))
        b, a = states.pop(j), states.pop(i)
        states.append(fvd.merge(a, b) if rng.random() < 0.5 else fvd.merge(b, a))
    total = states[0]
    assert total.n == 200
    np.testing.assert_allclose(total.mean, x.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(total.covariance(), np.cov(x.T), rtol=1e-10, atol=1e-12)


def test_covariance_needs_two():
    with pytest.raises(ValueError):
        Moments.of(np.ones((1, 3))).covariance()


# --- Statistics files -----------------------------------------------------------------------


def make_stats(seed=0, n=20, d=5, **identity):
    rng = np.random.default_rng(seed)
    fields = dict(protocol="original", frames=16, weights="rgb_scratch",
                  features="logits_mean", covariance="unbiased")
    fields.update(identity)
    return FeatureSetStats(Moments.of(rng.normal(size=(n, d))), **fields)


def test_stats_round_trip(tmp_path):
    stats = make_stats()
    path = str(tmp_path / "stats" / "real.npz")
    save_npz(stats, path)
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) >= {"n", "mu", "sigma", "feature_sum", "outer_sum", "protocol",
                                "frames", "weights"}
        np.testing.assert_allclose(z["sigma"], stats.sigma())
        np.testing.assert_allclose(z["feature_sum"], stats.moments.mean * 20)
    back = read_stats(path, "styleganv", 128, "x", "y", "biased")  # identity from the file
    assert back.identity() == stats.identity()
    assert back.n == 20
    np.testing.assert_allclose(back.moments.mean, stats.moments.mean, rtol=0)
    np.testing.assert_allclose(back.sigma(), stats.sigma(), rtol=0)


@pytest.mark.parametrize("field,value", [("protocol", "styleganv"), ("frames", 128),
                                         ("subsample", 8), ("resize", "kinetics_crop"),
                                         ("weights", "rgb_imagenet"),
                                         ("features", "mixed_5c"),
                                         ("covariance", "biased")])
def test_mismatch_refused(field, value):
    a, b = make_stats(0), make_stats(1, **{field: value})
    with pytest.raises(StatsError, match=field):
        check_compatible(a, b)
    check_compatible(a, make_stats(1))


def test_stats_written_before_the_new_fields(tmp_path):
    # A file of the first version (no subsample, resize or clip_start) reads as
    # consecutive frames, its protocol's resize and first frames.
    stats = make_stats(protocol="styleganv", covariance="biased")
    save_npz(stats, str(tmp_path / "new.npz"))
    with np.load(tmp_path / "new.npz", allow_pickle=False) as z:
        old = {k: z[k] for k in z.files if k not in ("subsample", "resize", "clip_start")}
        assert str(z["resize"]) == "torch_linear" and int(z["subsample"]) == 1
    np.savez(tmp_path / "old.npz", **old)
    back = load_npz((tmp_path / "old.npz").read_bytes(), "old.npz")
    assert back.identity() == stats.identity()
    assert (back.subsample, back.resize, back.clip_start) == (1, "torch_linear", "first")


def test_not_stats_refused():
    buffer = io.BytesIO()
    np.savez(buffer, mu=np.zeros(3))
    with pytest.raises(StatsError):
        load_npz(buffer.getvalue(), "x.npz")


def feature_stats_dict(x, capture_all=False):
    """What StyleGAN-V's ``FeatureStats.save`` pickles: the object's ``__dict__``."""
    x64 = np.asarray(x, np.float64)
    return {
        "capture_all": capture_all, "capture_mean_cov": True, "max_items": None,
        "num_items": len(x), "num_features": x.shape[1],
        "all_features": [np.asarray(x, np.float32)] if capture_all else None,
        "raw_mean": x64.sum(0), "raw_cov": x64.T @ x64,
    }


def test_feature_stats_pickle_layout():
    rng = np.random.default_rng(5)
    x = rng.normal(2.0, 1.0, size=(30, 7))
    m = load_feature_stats_pickle(pickle.dumps(feature_stats_dict(x)), "ref.pkl")
    assert m.n == 30
    np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-12)
    # raw_cov is a sum of outer products, not a covariance
    np.testing.assert_allclose(m.covariance("biased"), np.cov(x.T, bias=True), rtol=1e-9,
                               atol=1e-12)
    only_features = feature_stats_dict(x, capture_all=True)
    only_features["raw_mean"] = only_features["raw_cov"] = None
    m2 = load_feature_stats_pickle(pickle.dumps(only_features), "ref.pkl")
    np.testing.assert_allclose(m2.covariance(), np.cov(x.T), rtol=1e-5, atol=1e-6)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_cannot_run_code():
    with pytest.raises(StatsError, match="system"):
        load_feature_stats_pickle(pickle.dumps({"num_items": 1, "x": _Evil()}), "evil.pkl")


@pytest.mark.parametrize("n", [0, 1])
def test_too_small_sets_still_written(tmp_path, n):
    # An empty or one-clip set (all or all but one clip failed) is written, and read back
    # with its count, so that the command can report it rather than crash.
    stats = make_stats(n=max(n, 2))
    stats.moments = Moments() if n == 0 else Moments.of(np.ones((1, 5)))
    path = str(tmp_path / "s.npz")
    save_npz(stats, path)
    back = read_stats(path, "original", 16, "rgb_scratch", "logits_mean", "unbiased")
    assert back.n == n


def test_combine_fn_in_a_pipeline_equals_np_cov():
    # The CombineFn through Beam (features in several bundles, merged by the runner)
    # gives np.cov of all the features, in any input order.
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that

    from beam_i3d.fvd.pipeline import MomentsCombineFn

    rng = np.random.default_rng(7)
    x = rng.normal(4.0, 2.0, size=(300, 6))

    def check(found):
        (m,) = found
        assert m.n == 300
        np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(m.covariance(), np.cov(x.T), rtol=1e-10, atol=1e-12)

    for order in (np.arange(300), rng.permutation(300)):
        with TestPipeline() as p:
            moments = (p | beam.Create([x[i] for i in order], reshuffle=True)
                       | beam.CombineGlobally(MomentsCombineFn()))
            assert_that(moments, check)
