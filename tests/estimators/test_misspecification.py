"""The misspecification check: reference statistics at fit, p-values and warnings after."""

import pickle
import warnings

import numpy as np
import pytest

import skfalcon
from skfalcon import FlowPosteriorEstimator, MisspecificationWarning, misspecification_test
from skfalcon.datasets import GaussianLinear
from skfalcon.misspecification import (
    DEFAULT_LEVEL,
    _pvalues,
    _squared_distance,
    fit_reference,
)


@pytest.fixture(scope="module")
def linear():
    task = GaussianLinear(n_dims=2)
    theta = task.sample_prior(600, random_state=0)
    x = task.simulate(theta, random_state=1)
    return task, theta, x


@pytest.fixture(scope="module")
def fitted(linear):
    from tests._tiny import TINY

    task, theta, x = linear
    return FlowPosteriorEstimator(prior=task.prior, random_state=0, **TINY).fit(theta, x)


def _fresh(task, n, seed):
    return task.simulate(task.sample_prior(n, random_state=seed), random_state=seed + 1)


def test_pvalues_are_uniform_for_fresh_rows_and_graded_beyond_every_reference_row():
    rng = np.random.default_rng(0)
    reference = fit_reference(rng.normal(size=(2000, 3)) @ [[1, 0.5, 0], [0, 1, 0], [0, 0, 2]], 0)
    fresh = rng.normal(size=(4000, 3)) @ [[1, 0.5, 0], [0, 1, 0], [0, 0, 2]]
    keys = ("location", "scale", "precision")
    statistic = _squared_distance(fresh, *(reference[k] for k in keys))
    pvalue = _pvalues(statistic, reference["distances"])
    for level in (0.01, 0.05, 0.2):
        assert abs(np.mean(pvalue < level) - level) < 0.35 * level + 0.004
    far = _pvalues(np.array([40.0, 80.0]), reference["distances"])
    assert 0 < far[1] < far[0] < 1 / 2001  # beyond the largest reference distance


def test_ordinary_observations_pass_and_a_far_one_fails(fitted, linear):
    task = linear[0]
    result = misspecification_test(fitted, _fresh(task, 300, 7))
    assert result.statistic.shape == result.pvalue.shape == result.passed.shape == (300,)
    assert result.level == DEFAULT_LEVEL
    assert result.passed.mean() >= 0.98
    far = misspecification_test(fitted, 50 * np.ones(2))
    assert isinstance(far.passed, bool) and not far.passed
    assert far.n_outside == 2 and far.pvalue < 1e-10
    # A subtle shift fails at its own level without leaving the training range.
    shifted = misspecification_test(fitted, np.array([1.5, -1.5]), level=0.05)
    assert shifted.n_outside == 0 and not shifted.passed


@pytest.mark.parametrize("method", ["sample", "log_prob", "log_normalizer"])
def test_methods_warn_on_a_far_observation_only(fitted, linear, method):
    def call(x):
        if method == "sample":
            return fitted.sample(x, 5, random_state=0)
        if method == "log_prob":
            return fitted.log_prob(np.zeros((len(np.atleast_2d(x)), 2)), x)
        return fitted.log_normalizer(x)

    with pytest.warns(MisspecificationWarning, match=r"1 of 1 observation\(s\) lie outside"):
        call(50 * np.ones(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MisspecificationWarning)
        call(linear[2][:20])  # training observations, checked together


def test_the_reference_round_trips_through_both_formats_and_old_files_skip_the_check(
    fitted, tmp_path
):
    for loaded in (
        pickle.loads(pickle.dumps(fitted)),
        skfalcon.load(skfalcon.save(fitted, tmp_path / "model.skfalcon")),
    ):
        for key, value in fitted.x_reference_.items():
            np.testing.assert_array_equal(loaded.x_reference_[key], value)
        assert not misspecification_test(loaded, 50 * np.ones(2)).passed
    state = fitted.__getstate__()
    del state["x_reference_"]  # as in a file written before the check existed
    old = FlowPosteriorEstimator.__new__(FlowPosteriorEstimator)
    old.__setstate__(state)
    assert old.x_reference_ is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", MisspecificationWarning)
        old.sample(50 * np.ones(2), 3, random_state=0)
    result = misspecification_test(old, 50 * np.ones(2))
    assert np.isnan(result.pvalue) and result.passed


def test_dict_observations_and_a_preprocessor_are_checked_as_the_networks_see_them(linear):
    from sklearn.decomposition import PCA

    from tests._tiny import TINY

    task, theta, x = linear
    named = {"a": x[:, :1], "b": x[:, 1:]}
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **TINY).fit(theta, named)
    assert misspecification_test(est, {"a": x[0, :1], "b": x[0, 1:]}).passed
    assert not misspecification_test(est, {"a": np.array([40.0]), "b": x[0, 1:]}).passed
    est = FlowPosteriorEstimator(
        prior=task.prior, x_preprocessor=PCA(1), random_state=0, **TINY
    ).fit(theta, x)
    assert est.x_reference_["low"].shape == (1,)
    assert not misspecification_test(est, 50 * np.ones(2)).passed


def test_bad_level_is_refused_with_its_value(fitted):
    with pytest.raises(ValueError, match=r"level must be a number in \(0, 1\); got 1\.5"):
        misspecification_test(fitted, np.zeros(2), level=1.5)
