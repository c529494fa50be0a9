"""Tests of the ArviZ export: one posterior variable per parameter name, chains and draws."""

import numpy as np
import pytest

from skfalcon import to_inference_data

az = pytest.importorskip("arviz")


class Draws:
    """A fitted-estimator stand-in: Gaussian draws, names and a marginalized column."""

    def __init__(self, names=None, inferred=None):
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        if inferred is not None:
            self._inferred_columns = lambda: np.asarray(inferred)
        self.n_parameters_ = 2

    def sample(self, x, n_samples, random_state=None):
        rng = np.random.default_rng(random_state)
        return rng.normal(loc=[0.0, 5.0], size=(n_samples, 2))


def _summary_index(data):
    return list(az.summary(data, kind="stats").index)


def test_names_chains_and_draws_of_the_posterior():
    data = to_inference_data(
        Draws(["mass", "radius"]), np.zeros(3), 400, n_chains=2, random_state=0
    )
    assert data.posterior["mass"].shape == (2, 400)
    assert _summary_index(data) == ["mass", "radius"]
    np.testing.assert_allclose(data.posterior["radius"].values.mean(), 5.0, atol=0.1)
    np.testing.assert_array_equal(data.observed_data["x"].values, np.zeros(3))
    again = to_inference_data(
        Draws(["mass", "radius"]), np.zeros(3), 400, n_chains=2, random_state=0
    )
    np.testing.assert_array_equal(again.posterior["mass"].values, data.posterior["mass"].values)


def test_only_inferred_parameters_are_named_and_defaults_without_names():
    marginalized = Draws(["mass", "distance", "radius"], inferred=[True, False, True])
    assert _summary_index(to_inference_data(marginalized, np.zeros(2), 50)) == ["mass", "radius"]
    assert _summary_index(to_inference_data(Draws(), np.zeros(2), 50)) == ["theta0", "theta1"]


def test_a_fitted_estimator_on_a_dataframe(moons_data, tiny):
    pd = pytest.importorskip("pandas")
    from skfalcon import FlowPosteriorEstimator

    task, theta, x = moons_data
    frame = pd.DataFrame(theta, columns=["a", "b"])
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny).fit(frame, x)
    data = to_inference_data(est, x[0], 100, random_state=0)
    assert _summary_index(data) == ["a", "b"]
    assert data.posterior["a"].shape == (1, 100)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"estimator": object()}, TypeError, "must have a sample method"),
        ({"x": np.zeros((2, 3))}, ValueError, r"x must be one observation .* \(2, 3\)"),
        ({"n_samples": 0}, ValueError, "n_samples must be a positive integer"),
        ({"n_chains": -1}, ValueError, "n_chains must be a positive integer"),
    ],
)
def test_bad_inputs(kwargs, error, message):
    call = {"estimator": Draws(), "x": np.zeros(3), "n_samples": 10, **kwargs}
    with pytest.raises(error, match=message):
        to_inference_data(**call)
