"""Tests of the SLCP tasks: simulator, exact likelihood, and the MCMC reference."""

import numpy as np
import pytest
from scipy import stats

from skfalcon.datasets import SLCP, SLCPDistractors

TASK = SLCP()
pytestmark = pytest.mark.filterwarnings("ignore:slcp reference MCMC mixes slowly")


@pytest.fixture(scope="module")
def distractors():
    return SLCPDistractors()


def _scipy_log_likelihood(theta, x):
    """The SLCP likelihood written with scipy's bivariate normal, one row at a time."""
    out = []
    for t in theta:
        s1, s2, rho = t[2] ** 2, t[3] ** 2, np.tanh(t[4])
        cov = [[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]]
        out.append(stats.multivariate_normal(t[:2], cov).logpdf(x.reshape(4, 2)).sum())
    return np.array(out)


def test_shapes_and_determinism():
    theta = TASK.sample_prior(6, random_state=0)
    x = TASK.simulate(theta, random_state=1)
    assert theta.shape == (6, 5) and x.shape == (6, 8) and x.dtype == np.float64
    np.testing.assert_array_equal(x, TASK.simulate(theta, random_state=1))
    assert not np.allclose(x, TASK.simulate(theta, random_state=2))
    assert TASK.prior == [("uniform", -3.0, 3.0)] * 5
    theta_true, x_obs = TASK.observations(10)
    assert theta_true.shape == (10, 5) and x_obs.shape == (10, 8)
    np.testing.assert_array_equal(x_obs, TASK.observations(10)[1])


def test_likelihood_matches_scipy_and_the_simulator():
    theta = TASK.sample_prior(5, random_state=3)
    x = TASK.simulate(theta, random_state=4)
    np.testing.assert_allclose(
        TASK.log_likelihood(theta, x[0]), _scipy_log_likelihood(theta, x[0]), rtol=1e-10
    )
    paired = TASK.log_likelihood(theta, x)
    np.testing.assert_allclose(
        paired, [_scipy_log_likelihood(t[None], xi)[0] for t, xi in zip(theta, x, strict=True)]
    )
    # Sign flips of theta_3 and theta_4 leave the likelihood unchanged.
    flipped = theta * np.array([1, 1, -1, -1, 1])
    np.testing.assert_allclose(TASK.log_likelihood(flipped, x[0]), TASK.log_likelihood(theta, x[0]))
    # The simulated draws have the model's covariance.
    t = np.array([[0.5, -1.0, 1.2, 0.8, 0.7]])
    draws = TASK.simulate(np.repeat(t, 20_000, axis=0), random_state=0).reshape(-1, 2)
    s1, s2, rho = 1.44, 0.64, np.tanh(0.7)
    expected = [[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]]
    np.testing.assert_allclose(np.cov(draws.T), expected, rtol=0.02, atol=0.01)
    np.testing.assert_allclose(draws.mean(axis=0), [0.5, -1.0], atol=0.02)
    assert TASK.log_likelihood(np.array([[0.0, 0.0, 0.0, 1.0, 0.0]]), x[0])[0] == -np.inf


def test_mcmc_and_importance_sampling_agree(fast_mcmc):
    x_obs = TASK.observations(10)[1][1]
    rng = np.random.RandomState(0)
    n = 1000
    mcmc = TASK._mcmc_orthant(x_obs, n, rng)
    importance, ess = TASK._importance_orthant(x_obs, mcmc, n, 20_000, rng)
    assert ess > n
    assert np.all(mcmc[:, 2:4] > 0) and np.all(np.abs(mcmc) <= 3)
    sd = importance.std(axis=0)
    tolerance = 5 * sd * np.sqrt(2 / n)  # thinned MCMC and resampled draws: ~independent
    np.testing.assert_array_less(np.abs(mcmc.mean(axis=0) - importance.mean(axis=0)), tolerance)
    np.testing.assert_allclose(mcmc.std(axis=0), sd, rtol=0.2)
    # The check has power: a posterior mirrored in the correlation is far outside it.
    mirrored = mcmc * np.array([1, 1, 1, 1, -1])
    assert np.any(np.abs(mirrored.mean(axis=0) - importance.mean(axis=0)) > tolerance)


def test_reference_posterior_is_symmetric_cached_and_reproducible(fast_mcmc):
    x_obs = TASK.observations(10)[1][1]
    ref = TASK.reference_posterior(x_obs, 400, random_state=0)
    assert ref.shape == (400, 5)
    assert len(list(fast_mcmc.glob("slcp-*.npy"))) == 1
    np.testing.assert_array_equal(ref, TASK.reference_posterior(x_obs, 400, random_state=0))
    np.testing.assert_array_equal(
        ref, TASK.reference_posterior(x_obs, 400, random_state=0, cache=False)
    )
    # Each sign orthant of (theta_3, theta_4) holds a quarter of the draws.
    quadrant = (ref[:, 2] > 0).astype(int) * 2 + (ref[:, 3] > 0)
    assert np.all(np.abs(np.bincount(quadrant, minlength=4) / 400 - 0.25) < 0.08)
    assert np.all(np.isfinite(TASK.log_likelihood(ref, x_obs)))


def test_student_t_matches_scipy():
    from skfalcon.datasets._slcp import _StudentT

    rng = np.random.RandomState(0)
    factor = np.tril(rng.standard_normal((3, 3))) + np.diag([2.0, -1.5, 1.0])
    dist = _StudentT(np.array([1.0, 0.0, -1.0]), factor, df=2.0)
    x = rng.standard_normal((6, 3)) * 3
    expected = stats.multivariate_t([1.0, 0.0, -1.0], factor @ factor.T, df=2.0).logpdf(x)
    np.testing.assert_allclose(dist.logpdf(x), expected, rtol=1e-10)
    draws = dist.rvs(200_000, rng)
    # Quartiles of a coordinate agree with scipy's t marginal.
    scale = np.sqrt((factor @ factor.T)[1, 1])
    np.testing.assert_allclose(
        np.quantile(draws[:, 1], [0.25, 0.75]), stats.t(2, 0.0, scale).ppf([0.25, 0.75]), rtol=0.03
    )


def test_distractors_embed_slcp(distractors):
    theta = TASK.sample_prior(4, random_state=0)
    x = distractors.simulate(theta, random_state=5)
    assert x.shape == (4, 100)
    np.testing.assert_array_equal(x, distractors.simulate(theta, random_state=5))
    informative = distractors.informative_features
    np.testing.assert_array_equal(x[:, informative], TASK.simulate(theta, random_state=5))
    assert sorted(distractors._permutation.tolist()) == list(range(100))
    _, x_obs = distractors.observations(10)
    np.testing.assert_array_equal(x_obs[:, informative], TASK.observations(10)[1])
    # A second instance has the same noise model and permutation.
    np.testing.assert_array_equal(x, SLCPDistractors().simulate(theta, random_state=5))
    assert distractors.prior == TASK.prior


def test_distractors_likelihood_adds_a_constant_noise_density(distractors):
    theta = TASK.sample_prior(5, random_state=1)
    x = distractors.simulate(theta[:1], random_state=2)[0]
    ll = distractors.log_likelihood(theta, x)
    slcp_ll = TASK.log_likelihood(theta, x[distractors.informative_features])
    np.testing.assert_allclose(np.diff(ll), np.diff(slcp_ll))
    noise = x[np.argsort(distractors._permutation)[8:]]
    expected = np.logaddexp.reduce([d.logpdf(noise[None])[0] for d in distractors._noise]) - np.log(
        20
    )
    np.testing.assert_allclose(ll - slcp_ll, expected)
    assert np.all(np.isfinite(ll))


def test_distractors_reference_is_slcps(distractors, fast_mcmc):
    _, x_obs = distractors.observations(2)
    ref = distractors.reference_posterior(x_obs[1], 300, random_state=0)
    informative = x_obs[1][distractors.informative_features]
    np.testing.assert_array_equal(ref, TASK.reference_posterior(informative, 300, random_state=0))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: TASK.simulate(np.zeros((2, 4))), r"theta must be a 2-D array of shape \(n, 5\)"),
        (
            lambda: TASK.reference_posterior(np.zeros(7), 10),
            r"x_obs must be a 1-D array of shape \(8,\)",
        ),
        (
            lambda: TASK.reference_posterior(np.zeros(8), 0),
            "n_samples must be a positive integer, got 0",
        ),
        (
            lambda: TASK.log_likelihood(np.zeros((3, 5)), np.zeros((2, 8))),
            r"as many rows as theta \(3\)",
        ),
        (
            lambda: SLCPDistractors().reference_posterior(np.zeros(8), 5),
            r"x_obs must be a 1-D array of shape \(100,\)",
        ),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()
