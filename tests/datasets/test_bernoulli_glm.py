"""Tests of the Bernoulli GLM task: design, prior, exact likelihood and MCMC reference."""

import numpy as np
import pytest
from scipy import stats

from skfalcon.datasets import BernoulliGLM

TASK = BernoulliGLM()
pytestmark = pytest.mark.filterwarnings("ignore:bernoulli_glm reference MCMC mixes slowly")


def test_shapes_determinism_and_fixed_design():
    theta = TASK.sample_prior(6, random_state=0)
    x = TASK.simulate(theta, random_state=1)
    assert theta.shape == x.shape == (6, 10) and x.dtype == np.float64
    np.testing.assert_array_equal(x, TASK.simulate(theta, random_state=1))
    assert not np.allclose(x, TASK.simulate(theta, random_state=2))
    np.testing.assert_array_equal(TASK.design_matrix, BernoulliGLM().design_matrix)
    design = TASK.design_matrix
    assert design.shape == (100, 10) and np.all(design[:, 0] == 1)
    # Column 1 + k is the stimulus delayed by k bins.
    np.testing.assert_array_equal(design[3:, 4], design[:-3, 1])
    assert np.all(design[:3, 4] == 0)
    theta_true, x_obs = TASK.observations(10)
    assert theta_true.shape == x_obs.shape == (10, 10)
    assert np.all((x_obs[:, 0] >= 0) & (x_obs[:, 0] <= 100))


def test_prior_is_the_smoothness_prior():
    precision = np.linalg.inv(TASK.prior_cov)
    assert precision[0, 0] == pytest.approx(0.5) and np.allclose(precision[0, 1:], 0)
    d = np.eye(9) - np.eye(9, k=-1)
    f = d @ d + np.diag(np.sqrt(np.arange(9) / 9))
    np.testing.assert_allclose(precision[1:, 1:], f.T @ f, atol=1e-10)
    assert [s for _, _, s in TASK.prior] == pytest.approx(np.sqrt(np.diag(TASK.prior_cov)))
    draws = TASK.sample_prior(50_000, random_state=0)
    np.testing.assert_allclose(np.cov(draws.T), TASK.prior_cov, atol=0.05 * TASK.prior_cov.max())
    expected = stats.multivariate_normal(np.zeros(10), TASK.prior_cov).logpdf(draws[:3])
    np.testing.assert_allclose(TASK.log_prior(draws[:3]), expected)


def test_likelihood_matches_scipy_bernoulli():
    theta = TASK.sample_prior(4, random_state=2)
    spikes = TASK._simulate_spikes(theta, np.random.RandomState(3))
    x = spikes @ TASK.design_matrix
    rate = 1 / (1 + np.exp(-theta @ TASK.design_matrix.T))
    expected = stats.bernoulli(rate).logpmf(spikes).sum(axis=1)
    np.testing.assert_allclose(TASK.log_likelihood(theta, x), expected, rtol=1e-10)
    np.testing.assert_allclose(TASK.simulate(theta, random_state=3), x)
    other = stats.bernoulli(rate).logpmf(spikes[0]).sum(axis=1)  # every theta, one spike train
    np.testing.assert_allclose(TASK.log_likelihood(theta, x[0]), other, rtol=1e-10)


def test_laplace_mode_is_a_maximum():
    x_obs = TASK.observations(10)[1][0]
    mode, cov = TASK.laplace_approximation(x_obs)
    log_target = TASK._log_target(x_obs)
    steps = np.random.RandomState(0).multivariate_normal(np.zeros(10), cov, size=20) * 0.1
    assert np.all(log_target(mode + steps) < log_target(mode[None]))
    assert np.all(np.linalg.eigvalsh(cov) > 0)


def test_mcmc_and_importance_sampling_agree(fast_mcmc):
    x_obs = TASK.observations(10)[1][1]
    n = 1000
    rng = np.random.RandomState(0)
    mcmc = TASK._mcmc(x_obs, n, rng)
    from skfalcon.datasets._references import importance_resample, t_mixture_proposal

    mode, cov = TASK.laplace_approximation(x_obs)
    importance, ess = importance_resample(
        TASK._log_target(x_obs), t_mixture_proposal([mode], [cov], [1.0], df=5), 20_000, n, rng
    )
    assert ess > 5000
    sd = importance.std(axis=0)
    tolerance = 5 * sd * np.sqrt(2 / n)
    np.testing.assert_array_less(np.abs(mcmc.mean(axis=0) - importance.mean(axis=0)), tolerance)
    np.testing.assert_allclose(mcmc.std(axis=0), sd, rtol=0.2)
    # The check has power: the prior mean (zero) is far outside it.
    assert np.any(np.abs(importance.mean(axis=0)) > tolerance)


def test_reference_posterior_cached_and_reproducible(fast_mcmc):
    x_obs = TASK.observations(10)[1][2]
    ref = TASK.reference_posterior(x_obs, 300, random_state=0)
    assert ref.shape == (300, 10)
    assert len(list(fast_mcmc.glob("bernoulli_glm-*.npy"))) == 1
    np.testing.assert_array_equal(ref, TASK.reference_posterior(x_obs, 300, random_state=0))
    assert not np.allclose(ref, TASK.reference_posterior(x_obs, 300, random_state=1))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: TASK.simulate(np.zeros((2, 9))), r"theta must be a 2-D array of shape \(n, 10\)"),
        (
            lambda: TASK.reference_posterior(np.zeros(8), 10),
            r"x_obs must be a 1-D array of shape \(10,\)",
        ),
        (lambda: TASK.sample_prior(0), "n must be a positive integer, got 0"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()
