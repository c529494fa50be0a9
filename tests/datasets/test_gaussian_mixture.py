"""Tests of the Gaussian mixture task and its exact posterior."""

import numpy as np
import pytest

from skfalcon.datasets import GaussianMixture

TASK = GaussianMixture()


def _grid(step=0.025, bound=10.0):
    centers = np.arange(-bound, bound, step) + step / 2
    return np.stack(np.meshgrid(centers, centers, indexing="ij"), axis=-1).reshape(-1, 2)


def test_shapes_and_determinism():
    theta = TASK.sample_prior(7, random_state=0)
    x = TASK.simulate(theta, random_state=1)
    assert theta.shape == x.shape == (7, 2) and x.dtype == np.float64
    np.testing.assert_array_equal(x, TASK.simulate(theta, random_state=1))
    assert not np.allclose(x, TASK.simulate(theta, random_state=2))
    assert TASK.prior == [("uniform", -10.0, 10.0)] * 2
    assert TASK.log_likelihood(theta, x).shape == TASK.log_prior(theta).shape == (7,)
    ref = TASK.reference_posterior(x[0], 50, random_state=3)
    np.testing.assert_array_equal(ref, TASK.reference_posterior(x[0], 50, random_state=3))
    assert ref.shape == (50, 2)
    theta_true, x_obs = TASK.observations(10)
    assert theta_true.shape == x_obs.shape == (10, 2)


def test_simulator_is_the_mixture():
    x = TASK.simulate(np.full((40_000, 2), 1.5), random_state=0) - 1.5
    # Half the draws have sd 1, half sd 0.1: the variance is 0.505, and 4.6% of |x_1| lie
    # beyond 1 sd of the broad component only through it (0.5 * 0.3173).
    np.testing.assert_allclose(x.var(axis=0), 0.505, rtol=0.03)
    assert np.mean(np.abs(x[:, 0]) > 1.0) == pytest.approx(0.5 * 0.3173, abs=0.01)


@pytest.mark.parametrize("x_obs", [[0.5, -2.0], [9.7, -9.9], [10.5, 3.0]])
def test_log_posterior_integrates_to_one_and_is_bayes_rule(x_obs):
    step, grid = 0.025, _grid()
    log_post = TASK.log_posterior(grid, x_obs)
    # The midpoint rule errs by O(step^2) where the box cuts the narrow component: ~6e-4.
    assert np.exp(log_post).sum() * step**2 == pytest.approx(1.0, abs=1.5e-3)
    # Up to the evidence, the posterior is prior times likelihood.
    unnorm = TASK.log_prior(grid[:5]) + TASK.log_likelihood(grid[:5], np.array(x_obs))
    np.testing.assert_allclose(np.diff(log_post[:5]), np.diff(unnorm), atol=1e-10)
    assert TASK.log_posterior([[10.5, 0.0]], x_obs)[0] == -np.inf


@pytest.mark.parametrize("x_obs", [[0.5, -2.0], [9.8, -9.95]], ids=["inside", "truncated"])
def test_reference_moments_match_the_analytic_posterior(x_obs):
    grid, step = _grid(), 0.025
    density = np.exp(TASK.log_posterior(grid, x_obs)) * step**2
    mean = density @ grid
    cov = (grid - mean).T @ ((grid - mean) * density[:, None])
    n = 40_000
    samples = TASK.reference_posterior(x_obs, n, random_state=0)
    assert np.all(np.abs(samples) <= 10.0)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - mean), 5 * sd / np.sqrt(n))
    np.testing.assert_allclose(np.cov(samples.T), cov, atol=0.02 * cov.max())
    # The check has power: the untruncated mixture at the edge is off by far more.
    if x_obs[0] > 9:
        assert abs(np.mean(samples[:, 0]) - x_obs[0]) > 20 * sd[0] / np.sqrt(n)


def test_impossible_observation():
    with pytest.raises(ValueError, match=r"x_obs=\[100.0, 0.0\] is too far outside the prior"):
        TASK.reference_posterior([100.0, 0.0], 10)
    with pytest.raises(ValueError, match=r"x_obs must be a 1-D array of shape \(2,\)"):
        TASK.log_posterior([[0.0, 0.0]], [0.0, 0.0, 0.0])
