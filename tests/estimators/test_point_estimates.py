"""Point estimates: the posterior mean, median and mode against analytic posteriors."""

import numpy as np
import pytest

from skfalcon import FlowPosteriorEstimator, point_estimate


@pytest.fixture(scope="module")
def gaussian():
    """theta ~ N(0, 1), x ~ N(theta, 0.5^2): the posterior is N(0.8 x, 0.2), whose mode is
    0.8 x, while the mode of the cube density (which omits the prior's Jacobian) is x."""
    rng = np.random.RandomState(0)
    theta = rng.normal(size=(2000, 1))
    x = theta + 0.5 * rng.normal(size=(2000, 1))
    est = FlowPosteriorEstimator(
        prior=[("normal", 0.0, 1.0)],
        num_transforms=1,
        hidden_features=(32, 32),
        num_bins=8,
        max_epochs=25,
        batch_size=128,
        lr=5e-3,
        device="cpu",
        random_state=0,
    )
    return est.fit(theta, x)


@pytest.mark.slow
def test_mean_median_and_map_are_close_to_the_analytic_posterior(gaussian):
    x = np.array([[1.5], [-0.5]])
    expected = 0.8 * x
    # The learned density's mode is noisier than its mean: a wider tolerance for the MAP.
    for method, atol in (("mean", 0.1), ("median", 0.1), ("map", 0.2)):
        estimate = point_estimate(gaussian, x, method, n_samples=2000, random_state=0)
        np.testing.assert_allclose(estimate, expected, atol=atol, err_msg=method)
    # The theta-space mode 1.2, not the cube density's mode x = 1.5.
    assert abs(point_estimate(gaussian, x[0], "map", random_state=0)[0] - 1.2) < 0.12


def test_the_map_improves_on_every_sample_and_respects_the_support(fitted_moons, moons_data):
    x = moons_data[2][:2]
    samples = fitted_moons.sample(x, 200, random_state=1)
    mode = point_estimate(fitted_moons, x, "map", n_samples=200, random_state=1)
    for i in range(2):
        best = fitted_moons.log_prob(samples[i], x[i]).max()
        assert fitted_moons.log_prob(mode[i], x[i])[0] >= best - 1e-6
    assert np.all(np.abs(mode) <= 1)  # the uniform prior's box


def test_shapes_and_reproducibility(fitted_moons, moons_data):
    x = moons_data[2]
    for method in ("mean", "median", "map"):
        one = point_estimate(fitted_moons, x[0], method, n_samples=50, random_state=3)
        assert one.shape == (2,) and one.dtype == np.float64
        again = point_estimate(fitted_moons, x[0], method, n_samples=50, random_state=3)
        np.testing.assert_array_equal(one, again)
        assert point_estimate(fitted_moons, x[:3], method, n_samples=50).shape == (3, 2)


def test_a_tiny_budget_warns_that_the_map_did_not_converge(fitted_moons, moons_data):
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match=r"did not converge for 1 of 1 observation"):
        point_estimate(fitted_moons, moons_data[2][0], "map", n_samples=20, max_iter=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "mode"}, r"method must be one of 'mean', 'median', 'map'; got 'mode'"),
        ({"n_samples": 0}, r"n_samples"),
        ({"tol": -1.0}, r"tol must be a number > 0; got -1\.0"),
    ],
)
def test_bad_arguments_are_refused_with_their_value(fitted_moons, kwargs, message):
    with pytest.raises(ValueError, match=message):
        point_estimate(fitted_moons, np.zeros(2), **kwargs)
