"""Tests of the built-in simulators and their reference posteriors."""

import numpy as np
import pytest
from scipy import stats

from skfalcon.datasets import GaussianLinear, TwoMoons, make_gaussian_linear, make_two_moons

TASKS = [TwoMoons(), GaussianLinear(), GaussianLinear(n_dims=3, prior_var=0.5, noise_var=0.2)]


def _histogram_tv(task, x_obs, samples, n_bins=40, n_sub=25):
    """Total-variation distance between a 2-D histogram of ``samples`` on the prior
    box and the exact posterior integrated over the same bins (midpoint rule on an
    ``n_sub x n_sub`` sub-grid per bin)."""
    edges = np.linspace(-1.0, 1.0, n_bins + 1)
    counts, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], bins=[edges, edges])
    step = 2.0 / (n_bins * n_sub)
    centers = np.arange(-1.0, 1.0, step) + step / 2
    grid = np.stack(np.meshgrid(centers, centers, indexing="ij"), axis=-1).reshape(-1, 2)
    density = np.exp(task.log_prior(grid) + task.log_likelihood(grid, x_obs))
    mass = density.reshape(n_bins, n_sub, n_bins, n_sub).sum(axis=(1, 3))
    return 0.5 * np.abs(counts / counts.sum() - mass / mass.sum()).sum()


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("task", TASKS, ids=repr)
def test_shapes_and_dtypes(task):
    d, f = task.n_parameters, task.n_features
    theta = task.sample_prior(7, random_state=0)
    x = task.simulate(theta, random_state=0)
    assert theta.shape == (7, d) and x.shape == (7, f)
    assert theta.dtype == x.dtype == np.float64
    assert task.log_likelihood(theta, x[0]).shape == (7,)
    assert task.log_likelihood(theta, x).shape == (7,)
    assert task.log_prior(theta).shape == (7,)
    assert task.reference_posterior(x[0], 11, random_state=0).shape == (11, d)
    theta_true, x_obs = task.observations(4)
    assert theta_true.shape == (4, d) and x_obs.shape == (4, f)
    assert len(task.prior) == d


def test_priors_are_skfalcon_spec_lists():
    assert TwoMoons().prior == [("uniform", -1.0, 1.0), ("uniform", -1.0, 1.0)]
    assert GaussianLinear(n_dims=2, prior_var=0.25).prior == [("normal", 0.0, 0.5)] * 2
    task = TwoMoons()
    task.prior.append("junk")  # a fresh list each time: the task cannot be corrupted
    assert len(task.prior) == 2


def test_make_functions():
    theta, x = make_two_moons(50, random_state=0)
    assert theta.shape == x.shape == (50, 2)
    assert np.all(np.abs(theta) <= 1.0)
    theta, x = make_gaussian_linear(30, n_dims=4, random_state=0)
    assert theta.shape == x.shape == (30, 4)
    assert make_gaussian_linear(5)[0].shape == (5, 10)


# -------------------------------------------------------- reproducibility


@pytest.mark.parametrize("make", [make_two_moons, make_gaussian_linear])
def test_make_functions_reproducible(make):
    a, b, c = make(20, random_state=3), make(20, random_state=3), make(20, random_state=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[1], c[1])


@pytest.mark.parametrize("task", TASKS, ids=repr)
def test_methods_reproducible(task):
    theta = task.sample_prior(20, random_state=1)
    np.testing.assert_array_equal(theta, task.sample_prior(20, random_state=1))
    np.testing.assert_array_equal(
        task.simulate(theta, random_state=2), task.simulate(theta, random_state=2)
    )
    x_obs = task.simulate(theta[:1], random_state=2)[0]
    a = task.reference_posterior(x_obs, 50, random_state=5)
    np.testing.assert_array_equal(a, task.reference_posterior(x_obs, 50, random_state=5))
    assert not np.allclose(a, task.reference_posterior(x_obs, 50, random_state=6))
    for first, second in zip(task.observations(3), task.observations(3), strict=True):
        np.testing.assert_array_equal(first, second)
    assert not np.allclose(task.observations(3)[1], task.observations(3, random_state=1)[1])


def test_generator_is_consumed_in_sequence():
    rng = np.random.RandomState(0)
    first, second = make_two_moons(10, random_state=rng), make_two_moons(10, random_state=rng)
    assert not np.allclose(first[0], second[0])


# --------------------------------------------------------------- two moons


@pytest.mark.parametrize("theta", [[0.3, -0.5], [-0.9, 0.8], [0.0, 0.0]])
def test_two_moons_likelihood_is_normalized_in_x(theta):
    task = TwoMoons()
    theta = np.array([theta])
    t1, t2 = theta[0]
    center = np.array([0.25 - abs(t1 + t2) / np.sqrt(2), (t2 - t1) / np.sqrt(2)])  # arc center
    step = 0.001
    axis = np.arange(-0.25, 0.25, step) + step / 2
    x = center + np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
    total = np.exp(task.log_likelihood(np.repeat(theta, len(x), axis=0), x)).sum() * step**2
    assert total == pytest.approx(1.0, abs=1e-6)


def test_two_moons_likelihood_matches_simulations():
    """Simulated x fall where the likelihood puts its mass: compare the histogram of
    simulations at a fixed theta with the likelihood integrated over the bins."""
    task = TwoMoons()
    theta = np.array([[0.4, -0.2]])
    x = task.simulate(np.repeat(theta, 100_000, axis=0), random_state=0)
    edges_1 = np.linspace(x[:, 0].min(), x[:, 0].max(), 21)
    edges_2 = np.linspace(x[:, 1].min(), x[:, 1].max(), 21)
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[edges_1, edges_2])
    sub = 20
    c1 = edges_1[0] + (np.arange(20 * sub) + 0.5) * (edges_1[1] - edges_1[0]) / sub
    c2 = edges_2[0] + (np.arange(20 * sub) + 0.5) * (edges_2[1] - edges_2[0]) / sub
    grid = np.stack(np.meshgrid(c1, c2, indexing="ij"), axis=-1).reshape(-1, 2)
    density = np.exp(task.log_likelihood(np.repeat(theta, len(grid), axis=0), grid))
    mass = density.reshape(20, sub, 20, sub).sum(axis=(1, 3))
    assert 0.5 * np.abs(counts / counts.sum() - mass / mass.sum()).sum() < 0.03


def test_two_moons_likelihood_pairs_and_broadcasts():
    task = TwoMoons()
    theta = task.sample_prior(5, random_state=0)
    x = task.simulate(theta, random_state=1)
    paired = task.log_likelihood(theta, x)
    one_by_one = [task.log_likelihood(theta[i : i + 1], x[i])[0] for i in range(5)]
    np.testing.assert_allclose(paired, one_by_one)
    assert np.all(np.isfinite(paired))
    # The noise is an arc of radius ~0.1 around (0.25, 0): its center is 15 sd off it.
    center = np.column_stack(
        [0.25 - np.abs(theta.sum(axis=1)) / np.sqrt(2), np.diff(theta)[:, 0] / np.sqrt(2)]
    )
    assert np.all(task.log_likelihood(theta, center) < -100)


@pytest.mark.parametrize(
    "x_obs",
    [[-0.1, 0.2], [-0.75, 0.35]],  # two full moons; moons cut by the box (acceptance ~0.4)
    ids=["inside", "truncated"],
)
def test_two_moons_reference_posterior_matches_exact_density(x_obs):
    task = TwoMoons()
    x_obs = np.array(x_obs)
    samples = task.reference_posterior(x_obs, 100_000, random_state=0)
    assert np.all(np.abs(samples) <= 1.0)
    # Sampling noise alone gives a TV of ~0.01 here.
    assert _histogram_tv(task, x_obs, samples) < 0.03
    # The check has power: a missing branch or a flipped sign is far outside the tolerance.
    one_branch = samples[samples.sum(axis=1) > 0]
    assert _histogram_tv(task, x_obs, one_branch) > 0.4
    assert _histogram_tv(task, x_obs, samples[:, ::-1]) > 0.4  # theta_2 - theta_1 sign flipped


def test_two_moons_reference_posterior_of_observations_has_finite_density():
    task = TwoMoons()
    _, x_obs = task.observations(3)
    for x in x_obs:
        samples = task.reference_posterior(x, 1000, random_state=0)
        assert np.all(np.isfinite(task.log_likelihood(samples, x)))


def test_two_moons_reference_posterior_impossible_observation():
    with pytest.raises(ValueError, match=r"x_obs=\[3.0, 3.0\] is \(nearly\) outside the support"):
        TwoMoons().reference_posterior([3.0, 3.0], 10, random_state=0)


# --------------------------------------------------------- Gaussian linear


def test_gaussian_linear_posterior_mean_cov_is_bayes_rule():
    task = GaussianLinear(n_dims=3, prior_var=0.5, noise_var=0.2)
    x_obs = np.array([0.3, -1.0, 2.0])
    prior_cov, noise_cov = 0.5 * np.eye(3), 0.2 * np.eye(3)
    cov = np.linalg.inv(np.linalg.inv(prior_cov) + np.linalg.inv(noise_cov))
    mean, cov_task = task.posterior_mean_cov(x_obs)
    np.testing.assert_allclose(cov_task, cov)
    np.testing.assert_allclose(mean, cov @ np.linalg.inv(noise_cov) @ x_obs)


@pytest.mark.parametrize("task", TASKS[1:], ids=repr)
def test_gaussian_linear_reference_moments(task):
    x_obs = task.observations(1)[1][0]
    mean, cov = task.posterior_mean_cov(x_obs)
    n = 50_000
    samples = task.reference_posterior(x_obs, n, random_state=0)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - mean), 5 * sd / np.sqrt(n))
    # Sample covariance within ~5 standard errors of the analytic one.
    np.testing.assert_allclose(np.cov(samples.T), cov, atol=5 * cov[0, 0] * np.sqrt(2 / n))


def test_gaussian_linear_log_posterior_is_bayes_rule():
    """log p(theta|x) = log p(theta) + log p(x|theta) - log p(x), with p(x) analytic."""
    task = GaussianLinear(n_dims=4, prior_var=0.3, noise_var=0.1)
    theta = task.sample_prior(6, random_state=0)
    x_obs = task.observations(1)[1][0]
    log_evidence = stats.norm(0.0, np.sqrt(0.4)).logpdf(x_obs).sum()
    np.testing.assert_allclose(
        task.log_posterior(theta, x_obs),
        task.log_prior(theta) + task.log_likelihood(theta, x_obs) - log_evidence,
    )
    assert task.log_posterior(theta[:1], x_obs).shape == (1,)


def test_gaussian_linear_simulation_noise():
    task = GaussianLinear(n_dims=2, prior_var=1.0, noise_var=0.04)
    theta = np.zeros((20_000, 2))
    x = task.simulate(theta, random_state=0)
    np.testing.assert_allclose(x.var(axis=0), 0.04, rtol=0.05)
    assert task.sample_prior(20_000, random_state=0).var(axis=0) == pytest.approx(1.0, rel=0.05)


# -------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make_two_moons(0), "n_samples must be a positive integer, got 0"),
        (lambda: make_gaussian_linear(-3), "n_samples must be a positive integer, got -3"),
        (lambda: TwoMoons().sample_prior(0), "n must be a positive integer, got 0"),
        (lambda: TwoMoons().observations(0), "n_observations must be a positive integer, got 0"),
        (
            lambda: TwoMoons().reference_posterior([0.0, 0.0], 0),
            "n_samples must be a positive integer, got 0",
        ),
        (
            lambda: TwoMoons().simulate([0.1, 0.2]),
            r"theta must be a 2-D array of shape \(n, 2\); got shape \(2,\)\. Reshape",
        ),
        (
            lambda: TwoMoons().simulate(np.zeros((4, 3))),
            r"theta must be a 2-D array of shape \(n, 2\); got shape \(4, 3\)",
        ),
        (lambda: TwoMoons().simulate([[0.0, np.nan]]), "Input theta contains NaN"),
        (
            lambda: TwoMoons().log_likelihood(np.zeros((4, 2)), np.zeros((3, 2))),
            r"x must have shape \(2,\) or as many rows as theta \(4\); got shape \(3, 2\)",
        ),
        (
            lambda: TwoMoons().log_likelihood(np.zeros((4, 2)), np.zeros(3)),
            r"x must be a 1-D array of shape \(2,\); got shape \(3,\)",
        ),
        (
            lambda: TwoMoons().reference_posterior(np.zeros((1, 2)), 5),
            r"x_obs must be a 1-D array of shape \(2,\); got shape \(1, 2\)",
        ),
        (
            lambda: GaussianLinear().posterior_mean_cov(np.zeros(3)),
            r"x_obs must be a 1-D array of shape \(10,\); got shape \(3,\)",
        ),
        (lambda: GaussianLinear(n_dims=0), "n_dims must be a positive integer, got 0"),
        (lambda: GaussianLinear(prior_var=0.0), "prior_var == 0.0, must be > 0.0"),
        (lambda: GaussianLinear(noise_var=-1.0), "noise_var == -1.0, must be > 0.0"),
        (lambda: make_gaussian_linear(5, n_dims=0), "n_dims must be a positive integer, got 0"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()
