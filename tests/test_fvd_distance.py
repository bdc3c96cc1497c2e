"""beam_i3d.fvd.distance with exact values: the messages of its refusals, the
boundaries (two vectors for a covariance, one-item and empty sets), input shapes and
dtypes (float32 inputs are computed in float64), and the sums StyleGAN-V stores.
(tests/test_fvd_core.py has the distance against closed forms and the merges.)"""

from __future__ import annotations

import numpy as np
import pytest

from beam_i3d.fvd.distance import Moments, add, frechet_distance, merge, sqrt_psd

X = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0], [2.0, 4.0, 5.0]])


def message(call, *args):
    with pytest.raises(ValueError) as e:
        call(*args)
    return str(e.value)


def test_refusals_say_why():
    assert message(Moments.of(X).covariance, "median") == (
        "covariance must be one of ('unbiased', 'biased'), got 'median'")
    assert message(Moments.of(X[:1]).covariance) == (
        "a covariance needs at least 2 feature vectors, got 1")
    assert message(Moments.of, X[0]) == "features must be [N, D], got shape (3,)"
    assert message(merge, Moments.of(X), Moments.of(X[:, :2])) == (
        "feature dimensions differ: 3 and 2")
    assert message(add, Moments.of(X), [1.0, 2.0]) == "feature dimensions differ: 3 and 2"


@pytest.mark.parametrize("mu2, sigma2, shown", [
    (np.zeros(2), np.eye(2), "mu (3,) / (2,), sigma (3, 3) / (2, 2)"),
    (np.zeros(3), np.eye(2), "mu (3,) / (3,), sigma (3, 3) / (2, 2)"),  # only sigma2
    (np.zeros(2), np.eye(3), "mu (3,) / (2,), sigma (3, 3) / (3, 3)"),  # only mu2
])
def test_frechet_distance_refuses_shapes_that_do_not_fit(mu2, sigma2, shown):
    assert message(frechet_distance, np.zeros(3), np.eye(3), mu2, sigma2) == (
        f"shapes do not fit: {shown}")


def test_two_vectors_have_a_covariance():
    m = Moments.of([[0.0, 0.0], [2.0, 4.0]])
    np.testing.assert_array_equal(m.covariance(), [[2.0, 4.0], [4.0, 8.0]])
    np.testing.assert_array_equal(m.covariance("biased"), [[1.0, 2.0], [2.0, 4.0]])


def test_empty_and_zero_dimension_sets():
    empty = Moments.of(np.zeros((0, 3)))
    assert (empty.n, empty.mean, empty.m2) == (0, None, None)
    flat = Moments.of(np.zeros((2, 0)))  # two vectors of no features: not empty
    assert flat.n == 2 and flat.mean.shape == (0,) and flat.m2.shape == (0, 0)
    both = merge(Moments(), Moments())
    assert (both.n, both.mean, both.m2) == (0, None, None)


def test_sums_as_stylegan_v_stores_them():
    m = Moments.of(X)
    np.testing.assert_allclose(m.feature_sum(), X.sum(0), rtol=1e-15)
    np.testing.assert_allclose(m.outer_sum(), X.T @ X, rtol=1e-14)
    one = Moments.from_sums(1, [1.0, 2.0], [[1.0, 2.0], [2.0, 4.0]])
    assert one.n == 1
    np.testing.assert_array_equal(one.mean, [1.0, 2.0])
    np.testing.assert_array_equal(one.m2, np.zeros((2, 2)))


def test_add_takes_a_vector_of_any_shape_and_dtype():
    state = add(Moments(), np.array([[1, 2, 0]]))  # a [1, D] integer row
    assert state.mean.dtype == np.float64 and state.mean.shape == (3,)
    assert state.m2.shape == (3, 3)
    for row in X[1:]:
        state = add(state, row.astype(np.float32)[None, :])
    assert state.n == 3
    np.testing.assert_allclose(state.mean, X.mean(0), rtol=1e-15)
    np.testing.assert_allclose(state.m2, (X - X.mean(0)).T @ (X - X.mean(0)), rtol=1e-14)


def test_float32_inputs_are_computed_in_float64():
    # float32 holds 2**24 and 1 exactly, not their sum: a float32 trace would lose the 1.
    big = np.diag([2.0 ** 24, 1.0]).astype(np.float32)
    zero = np.zeros((2, 2))
    assert frechet_distance(np.zeros(2), big, np.zeros(2), zero) == 2.0 ** 24 + 1
    assert frechet_distance(np.zeros(2), zero, np.zeros(2), big) == 2.0 ** 24 + 1
    s = np.array([[2.0, 1.0], [1.0, 2.0]], np.float32)  # eigenvalues 3 and 1
    r3 = np.sqrt(3.0)
    root = sqrt_psd(s)
    assert root.dtype == np.float64
    np.testing.assert_allclose(root, [[(r3 + 1) / 2, (r3 - 1) / 2], [(r3 - 1) / 2, (r3 + 1) / 2]],
                               rtol=1e-14)
    m = Moments.from_sums(2, np.array([2.0, 1.0], np.float32),
                          np.array([[2.0, 1.0], [1.0, 1.0]]))
    assert m.mean.dtype == np.float64
    np.testing.assert_allclose(m.mean, [1.0, 0.5], rtol=1e-15)
