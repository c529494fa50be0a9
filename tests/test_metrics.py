"""Tests of the classifier two-sample test."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from skfalcon.datasets import TwoMoons
from skfalcon.metrics import c2st


def test_same_distribution_is_near_chance():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2))
    assert 0.45 <= c2st(X, Y) <= 0.58


def test_separated_distributions_are_near_one():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(300, 2)), rng.normal(loc=4.0, size=(300, 2))
    assert c2st(X, Y) > 0.97


def test_two_moons_posterior_against_itself_and_a_wrong_one():
    task = TwoMoons()
    x_obs = np.array([-0.1, 0.2])
    reference = task.reference_posterior(x_obs, 500, random_state=0)
    same = task.reference_posterior(x_obs, 500, random_state=1)
    other = task.reference_posterior(np.array([-0.1, -0.2]), 500, random_state=1)
    assert c2st(reference, same) < 0.6
    assert c2st(reference, other) > 0.95


def test_deterministic_given_random_state():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(200, 2)), rng.normal(loc=1.5, size=(200, 2))
    assert c2st(X, Y, random_state=3) == c2st(X, Y, random_state=3)


def test_custom_classifier_folds_and_no_z_score():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(200, 3)), rng.normal(loc=3.0, size=(200, 3))
    score = c2st(X, Y, n_folds=3, z_score=False, classifier=LogisticRegression())
    assert isinstance(score, float)
    assert score > 0.95


def test_constant_column_does_not_break_z_score():
    rng = np.random.default_rng(4)
    X = np.column_stack([rng.normal(size=100), np.ones(100)])
    Y = np.column_stack([rng.normal(size=100), np.ones(100)])
    assert np.isfinite(c2st(X, Y, classifier=LogisticRegression()))


@pytest.mark.parametrize(
    ("X", "Y", "kwargs", "message"),
    [
        (
            np.zeros((10, 2)),
            np.zeros((10, 3)),
            {},
            r"same number of columns; got X with shape \(10, 2\) and Y with shape \(10, 3\)",
        ),
        (
            np.zeros(10),
            np.zeros((10, 1)),
            {},
            r"X must be a 2-D array of shape \(n_samples, n_dims\); got shape \(10,\)",
        ),
        (
            np.zeros((10, 1)),
            np.zeros((2, 5, 1)),
            {},
            r"Y must be a 2-D array .* got shape \(2, 5, 1\)",
        ),
        (np.full((10, 1), np.inf), np.zeros((10, 1)), {}, "Input X contains infinity"),
        (np.zeros((10, 1)), np.full((10, 1), np.nan), {}, "Input Y contains NaN"),
        (np.zeros((10, 1)), np.zeros((10, 1)), {"n_folds": 1}, "n_folds == 1, must be >= 2"),
        (np.zeros((10, 1)), np.zeros((3, 1)), {}, r"at least n_folds=5 samples each; got 10 and 3"),
    ],
)
def test_bad_inputs(X, Y, kwargs, message):
    with pytest.raises(ValueError, match=message):
        c2st(X, Y, **kwargs)
