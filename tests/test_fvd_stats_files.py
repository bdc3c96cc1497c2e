"""Statistics files of ``beam-i3d fvd`` (:mod:`beam_i3d.fvd.stats_files`), with exact
values: what a ``.npz`` holds, how old and foreign files read, the refusals and their
messages, StyleGAN-V's FeatureStats pickles through the safe unpickler, and reading and
writing local paths and gs:// URIs. (tests/test_fvd_core.py has the round trips.)"""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

from beam_i3d.fvd.distance import Moments
from beam_i3d.fvd.stats_files import (
    FORMAT,
    FeatureSetStats,
    StatsError,
    _numpy_global,
    check_compatible,
    is_stats_spec,
    load_feature_stats_pickle,
    load_npz,
    read_stats,
    save_npz,
)

X = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0], [2.0, 4.0, 5.0], [0.0, 2.0, 2.0]])


def stats_of(x=X, **fields):
    identity = dict(protocol="original", frames=16, weights="rgb_scratch",
                    features="logits_mean", covariance="unbiased")
    identity.update(fields)
    return FeatureSetStats(Moments.of(x) if len(x) else Moments(), **identity)


def npz_arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def assert_moments(m, n, mean, m2):
    assert m.n == n
    assert m.mean.dtype == np.float64 and m.m2.dtype == np.float64
    np.testing.assert_allclose(m.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(m.m2, m2, rtol=1e-12, atol=1e-12)


CENTRED = (X - X.mean(0)).T @ (X - X.mean(0))


# --- FeatureSetStats and check_compatible ------------------------------------------------


def test_feature_set_stats_defaults_and_identity():
    s = stats_of(covariance="biased")
    assert s.resize == "tf1_bilinear" and stats_of(protocol="styleganv").resize == "torch_linear"
    assert stats_of(protocol="custom").resize == ""  # a protocol without a resize of its own
    assert stats_of(resize="kinetics_crop").resize == "kinetics_crop"
    assert (s.source, s.assumed, s.subsample, s.clip_start) == ("", False, 1, "first")
    assert s.identity() == {"protocol": "original", "frames": 16, "subsample": 1,
                            "resize": "tf1_bilinear", "weights": "rgb_scratch",
                            "features": "logits_mean", "covariance": "biased",
                            "precision": "f32"}
    assert s.n == 4
    np.testing.assert_allclose(s.sigma(), CENTRED / 4, rtol=1e-12)
    np.testing.assert_allclose(stats_of().sigma(), CENTRED / 3, rtol=1e-12)


def test_check_compatible_names_every_difference():
    a = stats_of()
    b = stats_of(X[:, :2], frames=128, weights="rgb_imagenet")
    with pytest.raises(StatsError) as e:
        check_compatible(a, b)
    assert str(e.value) == (
        "refusing to compare statistics computed differently (real vs fake): frames 16 vs "
        "128; weights 'rgb_scratch' vs 'rgb_imagenet'; feature dimension 3 vs 2")
    a.source, b.source = "ref.npz", "gen.npz"
    with pytest.raises(StatsError) as e:
        check_compatible(a, stats_of(X[:, :2], source="gen.npz"))
    assert str(e.value) == ("refusing to compare statistics computed differently (ref.npz "
                            "vs gen.npz): feature dimension 3 vs 2")


def test_check_compatible_ignores_the_dimension_of_an_empty_set():
    # An empty set (every clip failed) has no dimension: it is the count that refuses it.
    empty = stats_of(np.zeros((0, 3)))
    assert empty.moments.dim is None
    check_compatible(empty, stats_of())
    check_compatible(stats_of(), empty)
    check_compatible(empty, empty)
    check_compatible(stats_of(), stats_of(X + 1, source="other", clip_start="random (seed 1)"))


# --- save_npz / load_npz -----------------------------------------------------------------


def test_save_npz_writes_every_key(tmp_path):
    stats = stats_of(covariance="biased", subsample=2, resize="kinetics_crop",
                     clip_start="random (seed 3)")
    save_npz(stats, str(tmp_path / "s.npz"))
    z = npz_arrays(tmp_path / "s.npz")
    assert sorted(z) == sorted(["n", "mu", "sigma", "feature_sum", "outer_sum",
                                "centred_sum", "protocol", "frames", "subsample", "resize",
                                "weights", "features", "covariance", "clip_start", "precision",
                                "format"])
    assert {k: z[k].item() for k in ("n", "protocol", "frames", "subsample", "resize",
                                      "weights", "features", "covariance", "clip_start",
                                      "precision", "format")} == {
        "n": 4, "protocol": "original", "frames": 16, "subsample": 2,
        "resize": "kinetics_crop", "weights": "rgb_scratch", "features": "logits_mean",
        "covariance": "biased", "clip_start": "random (seed 3)", "precision": "f32",
        "format": "beam-i3d-fvd-stats/1"}
    np.testing.assert_allclose(z["mu"], X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(z["sigma"], CENTRED / 4, rtol=1e-12)
    np.testing.assert_allclose(z["feature_sum"], X.sum(0), rtol=1e-12)
    np.testing.assert_allclose(z["outer_sum"], X.T @ X, rtol=1e-12)
    np.testing.assert_allclose(z["centred_sum"], CENTRED, rtol=1e-12, atol=1e-12)
    back = load_npz((tmp_path / "s.npz").read_bytes(), "s.npz")
    assert back.identity() == stats.identity()
    assert (back.source, back.assumed, back.clip_start) == ("s.npz", False, "random (seed 3)")
    assert_moments(back.moments, 4, X.mean(0), CENTRED)


def test_save_npz_of_two_clips_has_a_covariance(tmp_path):
    save_npz(stats_of(X[:2]), str(tmp_path / "two.npz"))
    np.testing.assert_allclose(npz_arrays(tmp_path / "two.npz")["sigma"],
                               [[2.0, -2.0, 1.0], [-2.0, 2.0, -1.0], [1.0, -1.0, 0.5]])


def test_save_npz_of_an_empty_and_a_one_clip_set(tmp_path):
    save_npz(stats_of(np.zeros((0, 3))), str(tmp_path / "empty.npz"))
    z = npz_arrays(tmp_path / "empty.npz")
    assert {k: z[k].shape for k in ("mu", "sigma", "feature_sum", "outer_sum",
                                    "centred_sum")} == {
        "mu": (0,), "sigma": (0, 0), "feature_sum": (0,), "outer_sum": (0, 0),
        "centred_sum": (0, 0)}
    assert int(z["n"]) == 0
    back = load_npz((tmp_path / "empty.npz").read_bytes(), "empty.npz")
    assert (back.moments.n, back.moments.mean, back.moments.m2) == (0, None, None)

    save_npz(stats_of(X[:1]), str(tmp_path / "one.npz"))
    z = npz_arrays(tmp_path / "one.npz")
    assert z["sigma"].dtype == np.float64 and z["sigma"].shape == (3, 3)
    assert np.isnan(z["sigma"]).all()
    np.testing.assert_array_equal(z["mu"], X[0])
    np.testing.assert_array_equal(z["centred_sum"], np.zeros((3, 3)))


def test_load_npz_reads_each_missing_new_field_as_its_default(tmp_path):
    save_npz(stats_of(protocol="styleganv", subsample=4, resize="kinetics_crop",
                      clip_start="random (seed 9)", precision="bf16"), str(tmp_path / "s.npz"))
    full = npz_arrays(tmp_path / "s.npz")
    for missing, field, default in [("subsample", "subsample", 1),
                                    ("resize", "resize", "torch_linear"),
                                    ("clip_start", "clip_start", "first"),
                                    ("precision", "precision", "f32")]:
        buffer = io.BytesIO()
        np.savez(buffer, **{k: v for k, v in full.items() if k != missing})
        back = load_npz(buffer.getvalue())
        assert back.source == ""  # no source given: none recorded
        found = {f: getattr(back, f) for f in ("subsample", "resize", "clip_start",
                                               "precision")}
        assert found == {"subsample": 4, "resize": "kinetics_crop",
                         "clip_start": "random (seed 9)", "precision": "bf16", field: default}


def test_load_npz_reads_float32_arrays_in_float64():
    # A file written by another tool, in float32: the moments are float64 all the same.
    buffer = io.BytesIO()
    np.savez(buffer, n=np.int64(4), mu=X.mean(0).astype(np.float32),
             centred_sum=CENTRED.astype(np.float32), protocol=np.str_("original"),
             frames=np.int64(16), weights=np.str_("w"), features=np.str_("f"),
             covariance=np.str_("unbiased"), format=np.str_(FORMAT))
    back = load_npz(buffer.getvalue(), "f32.npz")
    assert back.moments.mean.dtype == np.float64 and back.moments.m2.dtype == np.float64
    np.testing.assert_allclose(back.moments.mean, X.mean(0), rtol=1e-6)
    assert (back.weights, back.features, back.source) == ("w", "f", "f32.npz")


def test_load_npz_refusals_name_the_file_and_the_reason(tmp_path):
    other = io.BytesIO()
    np.savez(other, format=np.str_("someone-elses/2"))
    with pytest.raises(StatsError) as e:
        load_npz(other.getvalue(), "x.npz")
    assert str(e.value) == "x.npz: not a beam-i3d statistics file (format 'someone-elses/2')"

    no_count = io.BytesIO()
    np.savez(no_count, mu=np.zeros(3), format=np.str_(FORMAT))
    with pytest.raises(StatsError) as e:
        load_npz(no_count.getvalue(), "x.npz")
    assert str(e.value) == ("x.npz: cannot read statistics: KeyError: 'n is not a file in "
                            "the archive'")

    # An object array would be unpickled (running code) if pickles were allowed.
    save_npz(stats_of(), str(tmp_path / "s.npz"))
    arrays = npz_arrays(tmp_path / "s.npz")
    arrays["protocol"] = np.array(["original"], dtype=object)
    pickled = io.BytesIO()
    np.savez(pickled, **arrays)
    with pytest.raises(StatsError) as e:
        load_npz(pickled.getvalue(), "p.npz")
    assert str(e.value) == ("p.npz: cannot read statistics: ValueError: Object arrays cannot "
                            "be loaded when allow_pickle=False")
    with pytest.raises(StatsError) as e:
        load_npz(b"", "empty.npz")
    assert str(e.value) == "empty.npz: cannot read statistics: EOFError: No data left in file"


# --- FeatureStats pickles ----------------------------------------------------------------


def feature_stats(x, **changes):
    """StyleGAN-V's ``FeatureStats.__dict__`` for features ``x``."""
    state = {"capture_all": False, "capture_mean_cov": True, "max_items": None,
             "num_items": np.int64(len(x)), "num_features": x.shape[1],
             "all_features": None, "raw_mean": x.sum(0), "raw_cov": x.T @ x}
    state.update(changes)
    return pickle.dumps(state)


def test_feature_stats_pickle_of_sums_or_of_features():
    assert_moments(load_feature_stats_pickle(feature_stats(X)), 4, X.mean(0), CENTRED)
    # Without both sums, the features (float32 chunks, the first num_items of them).
    chunks = [X[:3].astype(np.float32), np.vstack([X[3:], [[9.0, 9.0, 9.0]]]).astype(np.float32)]
    for sums in ({"raw_mean": None, "raw_cov": None}, {"raw_cov": None}, {"raw_mean": None}):
        m = load_feature_stats_pickle(feature_stats(X, all_features=chunks, **sums))
        assert_moments(m, 4, X.mean(0), CENTRED)


def test_feature_stats_pickle_refusals():
    with pytest.raises(StatsError) as e:
        load_feature_stats_pickle(b"", "x.pkl")
    assert str(e.value) == "x.pkl: cannot read the pickle: EOFError: Ran out of input"
    for not_stats in (pickle.dumps([1, 2]), pickle.dumps({"raw_mean": None})):
        with pytest.raises(StatsError) as e:
            load_feature_stats_pickle(not_stats, "x.pkl")
        assert str(e.value) == ("x.pkl: not a FeatureStats pickle (expected its __dict__ "
                                "with num_items, raw_mean, raw_cov)")
    for features in (None, []):
        with pytest.raises(StatsError) as e:
            load_feature_stats_pickle(feature_stats(X, raw_mean=None, all_features=features),
                                      "x.pkl")
        assert str(e.value) == ("x.pkl: FeatureStats holds neither raw_mean/raw_cov nor "
                                "features")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_feature_stats_pickle_refuses_other_globals_by_name():
    with pytest.raises(StatsError) as e:
        load_feature_stats_pickle(pickle.dumps({"num_items": 1, "x": _Evil()}), "evil.pkl")
    assert str(e.value) == ("evil.pkl: statistics pickle refers to posix.system; only numpy "
                            "arrays and plain values are allowed")


def test_numpy_global_falls_back_between_numpy_core_and_numpy_underscore_core():
    import numpy._core._methods
    import numpy._core.multiarray

    assert _numpy_global("numpy.core.multiarray", "_reconstruct") is \
        numpy._core.multiarray._reconstruct
    # A numpy 1 name (numpy.core) that this numpy has only as numpy._core ...
    assert _numpy_global("numpy.core._methods", "_mean") is numpy._core._methods._mean
    # ... and a numpy 2 name (numpy._core) that exists only as numpy.core.
    import numpy.core._utils

    assert _numpy_global("numpy._core._utils", "_raise_warning") is \
        numpy.core._utils._raise_warning
    with pytest.raises(StatsError) as e:
        _numpy_global("numpy.core.multiarray", "no_such_thing")
    assert str(e.value) == "cannot resolve numpy.core.multiarray.no_such_thing"


# --- Specs, reading and writing ----------------------------------------------------------


def test_is_stats_spec_by_extension():
    assert [is_stats_spec(s) for s in ("a.npz", "gs://b/REF.NPZ", "c.pkl", "d.PKL",
                                       "e.pickle", "f.Pickle")] == [True] * 6
    assert [is_stats_spec(s) for s in ("clips.csv", "v.mp4", "a.npz.csv", "npz", "dir/",
                                       "a.pk")] == [False] * 6


def test_read_stats_of_a_pickle_takes_the_identity_given(tmp_path):
    path = str(tmp_path / "ref.PKL")
    with open(path, "wb") as f:
        f.write(feature_stats(X))
    s = read_stats(path, "styleganv", 128, "rgb_scratch", "logits_mean", "biased",
                   subsample=2, resize="kinetics_crop")
    assert s.identity() == {"protocol": "styleganv", "frames": 128, "subsample": 2,
                            "resize": "kinetics_crop", "weights": "rgb_scratch",
                            "features": "logits_mean", "covariance": "biased",
                            "precision": "f32"}
    assert (s.source, s.assumed, s.clip_start) == (path, True,
                                                   "unknown (a FeatureStats pickle)")
    assert_moments(s.moments, 4, X.mean(0), CENTRED)
    d = read_stats(path, "styleganv", 128, "w", "f", "biased")
    assert (d.subsample, d.resize) == (1, "torch_linear")
    with open(path, "wb") as f:
        f.write(b"")
    with pytest.raises(StatsError) as e:
        read_stats(path, "styleganv", 128, "w", "f", "biased")
    assert str(e.value) == f"{path}: cannot read the pickle: EOFError: Ran out of input"


def test_read_stats_of_a_npz_names_its_source(tmp_path):
    path = str(tmp_path / "REAL.NPZ")
    save_npz(stats_of(frames=32), path)
    s = read_stats(path, "styleganv", 128, "w", "f", "biased")
    assert (s.frames, s.protocol, s.source, s.assumed) == (32, "original", path, False)
    with open(path, "wb") as f:
        f.write(pickle.dumps({"format": 1}))
    with pytest.raises(StatsError) as e:
        read_stats(path, "styleganv", 128, "w", "f", "biased")
    assert str(e.value).startswith(f"{path}: cannot read statistics: ValueError: ")


def test_read_stats_of_a_missing_file(tmp_path):
    path = str(tmp_path / "absent.npz")
    with pytest.raises(StatsError) as e:
        read_stats(path, "original", 16, "w", "f", "unbiased")
    assert str(e.value) == (f"{path}: cannot read: FileNotFoundError: [Errno 2] No such "
                            f"file or directory: '{path}'")


def test_save_npz_to_a_relative_path_and_a_file_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_npz(stats_of(), "real.npz")  # no directory: nothing else is created
    assert sorted(os.listdir(tmp_path)) == ["real.npz"]
    save_npz(stats_of(frames=8), f"file://{tmp_path}/nested/dir/fake.npz")
    assert sorted(os.listdir(tmp_path / "nested" / "dir")) == ["fake.npz"]
    assert int(npz_arrays(tmp_path / "nested" / "dir" / "fake.npz")["frames"]) == 8
    save_npz(stats_of(frames=9), "real.npz")  # replaces the file
    assert int(npz_arrays(tmp_path / "real.npz")["frames"]) == 9
    assert sorted(os.listdir(tmp_path)) == ["nested", "real.npz"]


def test_save_and_read_stats_on_gcs(gcs_emulator):
    uri = "gs://test-bucket/stats-files/real.npz"
    stats = stats_of(frames=32, clip_start="random (seed 5)")
    save_npz(stats, uri)
    back = read_stats(uri, "styleganv", 128, "w", "f", "biased")
    assert back.identity() == stats.identity() and back.source == uri
    assert back.clip_start == "random (seed 5)"
    assert_moments(back.moments, 4, X.mean(0), CENTRED)
    with pytest.raises(StatsError) as e:
        read_stats("gs://test-bucket/stats-files/absent.pkl", "original", 16, "w", "f",
                   "unbiased")
    assert str(e.value).startswith("gs://test-bucket/stats-files/absent.pkl: cannot read: ")
