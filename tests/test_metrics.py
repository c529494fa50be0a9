"""Tests of the diagnostics: C2ST, SBC ranks, HPD and TARP coverage, predictive checks."""

from functools import partial

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state

from skfalcon.datasets import GaussianLinear, TwoMoons
from skfalcon.diagnostics import posterior_predictive_check
from skfalcon.metrics import (
    c2st,
    expected_coverage_hpd,
    expected_coverage_tarp,
    sbc_ranks,
    sbc_uniformity_pvalues,
)


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


# ---------------------------------------------------------------- calibration diagnostics


class AnalyticGaussianPosterior:
    """An estimator-like object sampling the exact Gaussian-linear posterior, optionally
    made wrong on purpose: its standard deviation scaled by ``std_scale`` and its mean
    moved by ``shift``."""

    def __init__(self, task, std_scale=1.0, shift=0.0):
        self.task, self.std_scale, self.shift = task, std_scale, shift

    def _mean_std(self, x):
        mean, cov = self.task.posterior_mean_cov(np.zeros(self.task.n_dims))
        shrinkage = self.task.prior_var / (self.task.prior_var + self.task.noise_var)
        return shrinkage * x + self.shift, np.sqrt(cov[0, 0]) * self.std_scale

    def sample(self, x, n_samples, random_state=None):
        x = np.asarray(x, dtype=np.float64)
        mean, std = self._mean_std(np.atleast_2d(x))
        noise = check_random_state(random_state).standard_normal(
            (len(mean), n_samples, x.shape[-1])
        )
        samples = mean[:, None, :] + std * noise
        return samples[0] if x.ndim == 1 else samples

    def log_prob(self, theta, x):
        mean, std = self._mean_std(np.atleast_2d(np.asarray(x, dtype=np.float64)))
        return stats.norm(mean, std).logpdf(theta).sum(axis=-1)


GAUSSIAN = GaussianLinear(n_dims=2)
N_TEST = 300
# Largest deviation of a calibrated coverage curve from the diagonal at the 1% level
# (Kolmogorov-Smirnov); the curves below are deterministic given their seeds.
KS_TOLERANCE = 1.63 / np.sqrt(N_TEST)
MISCALIBRATED = {
    "overconfident": {"std_scale": 0.5},
    "underconfident": {"std_scale": 2.0},
    "biased": {"shift": 0.3},  # 1.3 posterior standard deviations
}


@pytest.fixture(scope="module")
def test_pairs():
    return GAUSSIAN.observations(N_TEST, random_state=0)


def test_analytic_fake_matches_the_reference_posterior():
    x_obs = np.array([0.3, -0.2])
    fake = AnalyticGaussianPosterior(GAUSSIAN)
    samples = fake.sample(x_obs, 20_000, random_state=0)
    mean, cov = GAUSSIAN.posterior_mean_cov(x_obs)
    np.testing.assert_allclose(samples.mean(axis=0), mean, atol=0.01)
    np.testing.assert_allclose(samples.std(axis=0), np.sqrt(np.diag(cov)), rtol=0.02)
    np.testing.assert_allclose(
        fake.log_prob(samples[:5], x_obs), GAUSSIAN.log_posterior(samples[:5], x_obs)
    )


def test_sbc_ranks_are_uniform_for_the_exact_posterior(test_pairs):
    theta, x = test_pairs
    ranks = sbc_ranks(
        AnalyticGaussianPosterior(GAUSSIAN), theta, x, n_posterior_samples=100, random_state=0
    )
    assert ranks.shape == theta.shape and ranks.dtype == np.int64
    assert ranks.min() >= 0 and ranks.max() <= 100
    assert sbc_uniformity_pvalues(ranks, 100).min() > 0.01


@pytest.mark.parametrize("wrong", MISCALIBRATED.values(), ids=MISCALIBRATED.keys())
def test_sbc_flags_a_miscalibrated_posterior(test_pairs, wrong):
    theta, x = test_pairs
    fake = AnalyticGaussianPosterior(GAUSSIAN, **wrong)
    ranks = sbc_ranks(fake, theta, x, n_posterior_samples=100, random_state=0)
    assert sbc_uniformity_pvalues(ranks, 100).max() < 1e-4


def test_sbc_rank_shapes_tell_overconfidence_from_underconfidence(test_pairs):
    theta, x = test_pairs
    narrow = sbc_ranks(AnalyticGaussianPosterior(GAUSSIAN, std_scale=0.5), theta, x, random_state=0)
    wide = sbc_ranks(AnalyticGaussianPosterior(GAUSSIAN, std_scale=2.0), theta, x, random_state=0)

    def in_tails(ranks):  # 20 of the 101 rank values: about 0.2 when calibrated
        return np.mean((ranks < 10) | (ranks > 90))

    assert in_tails(narrow) > 0.4  # U-shaped
    assert in_tails(wide) < 0.02  # hump-shaped


def test_sbc_ranks_break_ties_at_random():
    class FixedSecondColumn:
        def sample(self, x, n_samples, random_state=None):
            rng = check_random_state(random_state)
            return np.stack(
                [rng.normal(size=(len(x), n_samples)), np.ones((len(x), n_samples))], -1
            )

    rng = np.random.default_rng(0)
    theta = np.column_stack([rng.normal(size=400), np.ones(400)])
    ranks = sbc_ranks(
        FixedSecondColumn(), theta, np.zeros((400, 1)), n_posterior_samples=50, random_state=0
    )
    assert sbc_uniformity_pvalues(ranks, 50).min() > 0.01


def test_sbc_ranks_batching_and_seed(test_pairs):
    theta, x = test_pairs
    fake = AnalyticGaussianPosterior(GAUSSIAN)
    a = sbc_ranks(fake, theta[:10], x[:10], batch_size=3, random_state=1)
    b = sbc_ranks(fake, theta[:10], x[:10], batch_size=3, random_state=1)
    np.testing.assert_array_equal(a, b)


def test_hpd_coverage_is_diagonal_for_the_exact_posterior(test_pairs):
    theta, x = test_pairs
    levels, coverage = expected_coverage_hpd(
        AnalyticGaussianPosterior(GAUSSIAN), theta, x, random_state=0
    )
    np.testing.assert_allclose(levels, np.linspace(0, 1, 21))
    assert np.abs(coverage - levels).max() < KS_TOLERANCE
    assert coverage[0] == 0.0 and coverage[-1] == 1.0


@pytest.mark.parametrize(
    ("name", "sign"), [("overconfident", -1), ("underconfident", 1), ("biased", -1)]
)
def test_hpd_coverage_flags_a_miscalibrated_posterior(test_pairs, name, sign):
    theta, x = test_pairs
    fake = AnalyticGaussianPosterior(GAUSSIAN, **MISCALIBRATED[name])
    levels, coverage = expected_coverage_hpd(fake, theta, x, levels=[0.5, 0.9], random_state=0)
    # below the diagonal when overconfident or biased, above it when underconfident
    assert np.all(sign * (coverage - levels) > KS_TOLERANCE)


def test_tarp_coverage_is_diagonal_for_the_exact_posterior(test_pairs):
    theta, x = test_pairs
    samples = AnalyticGaussianPosterior(GAUSSIAN).sample(x, 200, random_state=0)
    levels, coverage = expected_coverage_tarp(samples, theta, random_state=0)
    assert np.abs(coverage - levels).max() < KS_TOLERANCE


@pytest.mark.parametrize("wrong", MISCALIBRATED.values(), ids=MISCALIBRATED.keys())
def test_tarp_coverage_flags_a_miscalibrated_posterior(test_pairs, wrong):
    theta, x = test_pairs
    samples = AnalyticGaussianPosterior(GAUSSIAN, **wrong).sample(x, 200, random_state=0)
    levels, coverage = expected_coverage_tarp(samples, theta, random_state=0)
    assert np.abs(coverage - levels).max() > KS_TOLERANCE


def test_tarp_references_and_normalization(test_pairs):
    theta, x = test_pairs
    samples = AnalyticGaussianPosterior(GAUSSIAN).sample(x, 100, random_state=0)
    shared = expected_coverage_tarp(samples, theta, references=np.zeros(2), normalize=False)[1]
    per_row = expected_coverage_tarp(samples, theta, references=np.zeros_like(theta))[1]
    assert shared.shape == per_row.shape == (21,)
    # a unit change of one parameter leaves the normalized test unchanged
    scaled = expected_coverage_tarp(samples * [1.0, 100.0], theta * [1.0, 100.0], random_state=3)
    np.testing.assert_allclose(scaled[1], expected_coverage_tarp(samples, theta, random_state=3)[1])


def test_posterior_predictive_check_accepts_the_exact_posterior_and_flags_a_wrong_one():
    theta, x = GAUSSIAN.observations(20, random_state=1)

    def simulator(th):
        return GAUSSIAN.simulate(th, random_state=0)

    exact = AnalyticGaussianPosterior(GAUSSIAN)
    wrong = AnalyticGaussianPosterior(GAUSSIAN, shift=1.5)
    exact_p = [posterior_predictive_check(exact, simulator, xi, random_state=0).p_value for xi in x]
    wrong_p = [posterior_predictive_check(wrong, simulator, xi, random_state=0).p_value for xi in x]
    assert np.min(exact_p) > 0.01
    assert np.max(wrong_p) < 0.01

    check = posterior_predictive_check(exact, simulator, x[0], n_samples=50, random_state=0)
    assert check.theta.shape == (50, 2) and check.x_simulated.shape == (50, 2)
    np.testing.assert_allclose(check.quantile, (check.x_simulated < x[0]).mean(axis=0))


def test_posterior_predictive_check_ties_nan_and_one_feature():
    class Constant:
        def sample(self, x, n_samples, random_state=None):
            return np.zeros((n_samples, 1))

    def simulator(theta):
        out = np.where(np.arange(len(theta)) % 2 == 0, 1.0, 2.0)
        out[:4] = np.nan
        return out  # 1-D: one feature

    check = posterior_predictive_check(Constant(), simulator, np.array([1.0]), n_samples=10)
    assert check.x_simulated.shape == (10, 1)
    np.testing.assert_allclose(check.quantile, [0.5 * 3 / 6])
    np.testing.assert_allclose(check.p_value, [0.5])


def test_diagnostics_run_on_a_fitted_flow_posterior(fitted_moons):
    task = TwoMoons()
    theta, x = task.observations(12, random_state=5)
    ranks = sbc_ranks(fitted_moons, theta, x, n_posterior_samples=20, batch_size=5, random_state=0)
    assert ranks.shape == (12, 2) and 0 <= ranks.min() and ranks.max() <= 20
    levels, coverage = expected_coverage_hpd(
        fitted_moons, theta, x, n_posterior_samples=20, batch_size=5, random_state=0
    )
    assert coverage.shape == levels.shape and np.all(np.diff(coverage) >= 0)
    check = posterior_predictive_check(
        fitted_moons, partial(task.simulate, random_state=0), x[0], n_samples=30, random_state=0
    )
    assert check.p_value.shape == (2,) and np.all((check.p_value >= 0) & (check.p_value <= 1))


class _NoLogProb:
    def sample(self, x, n_samples, random_state=None):
        return np.zeros((len(x), n_samples, 2))


class _WrongShape:
    def sample(self, x, n_samples, random_state=None):
        return np.zeros((n_samples, 2))

    def log_prob(self, theta, x):
        return np.zeros(len(theta))


THETA, X = np.zeros((4, 2)), np.zeros((4, 2))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: sbc_ranks(object(), THETA, X), TypeError, "must have the method.*sample"),
        (
            lambda: expected_coverage_hpd(_NoLogProb(), THETA, X),
            TypeError,
            r"method\(s\) log_prob .* got _NoLogProb",
        ),
        (
            lambda: sbc_ranks(_NoLogProb(), np.zeros(4), X),
            ValueError,
            r"theta must be a 2-D array of shape \(n_simulations, n_parameters\); got shape \(4,\)",
        ),
        (
            lambda: sbc_ranks(_NoLogProb(), THETA, np.zeros((3, 2))),
            ValueError,
            "x has 3 observations but theta has 4 rows",
        ),
        (
            lambda: sbc_ranks(_NoLogProb(), THETA, X, n_posterior_samples=0),
            ValueError,
            "n_posterior_samples must be a positive integer, got 0",
        ),
        (
            lambda: sbc_ranks(_WrongShape(), THETA, X, n_posterior_samples=5),
            ValueError,
            r"returned shape \(5, 2\) for x_batch of shape \(4, 2\); expected \(4, 5, 2\)",
        ),
        (
            lambda: expected_coverage_hpd(_WrongShape(), THETA, X, levels=[0.5, 1.5]),
            ValueError,
            "levels must be a 1-D array of credibility levels in",
        ),
        (
            lambda: sbc_uniformity_pvalues(np.full((10, 2), 7), 5),
            ValueError,
            r"integers in \[0, n_posterior_samples=5\]; got values in \[7.0, 7.0\]",
        ),
        (
            lambda: sbc_uniformity_pvalues(np.full((10, 2), 0.5), 5),
            ValueError,
            "ranks must be integers",
        ),
        (
            lambda: sbc_uniformity_pvalues(np.zeros((10, 2)), 5, n_bins=7),
            ValueError,
            "n_bins == 7, must be <= 6",
        ),
        (
            lambda: expected_coverage_tarp(np.zeros((4, 3)), THETA),
            ValueError,
            r"samples must be a 3-D array .* got shape \(4, 3\)",
        ),
        (
            lambda: expected_coverage_tarp(np.zeros((4, 3, 1)), THETA),
            ValueError,
            r"samples of shape \(4, 3, 1\) do not match theta of shape \(4, 2\)",
        ),
        (
            lambda: expected_coverage_tarp(np.zeros((4, 3, 2)), THETA, references=np.zeros(3)),
            ValueError,
            r"references must have shape \(2,\) or \(4, 2\); got \(3,\)",
        ),
        (
            lambda: posterior_predictive_check(_NoLogProb(), "sim", np.zeros(2)),
            TypeError,
            "simulator must be callable; got str",
        ),
        (
            lambda: posterior_predictive_check(_NoLogProb(), np.sin, np.zeros((2, 2))),
            ValueError,
            r"x_obs must be one observation of shape \(n_features,\); got shape \(2, 2\)",
        ),
        (
            lambda: posterior_predictive_check(_WrongShape(), np.sin, np.zeros(3), n_samples=5),
            ValueError,
            r"simulator returned shape \(5, 2\) .* expected \(5, 3\)",
        ),
        (
            lambda: posterior_predictive_check(
                _WrongShape(), lambda t: np.full_like(t, np.nan), np.zeros(2), n_samples=5
            ),
            ValueError,
            r"only NaN for feature\(s\) \[0, 1\]",
        ),
    ],
)
def test_bad_diagnostic_inputs(call, error, message):
    with pytest.raises(error, match=message):
        call()
