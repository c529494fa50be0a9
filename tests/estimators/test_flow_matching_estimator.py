"""FlowPosteriorEstimator with net_type="flow_matching": recovery, persistence, search."""

import warnings

import joblib
import numpy as np
import pytest
from scipy import stats
from sklearn.model_selection import GridSearchCV

import skfalcon
from skfalcon import FlowPosteriorEstimator
from tests._tiny import TINY

NOISE = 0.5


@pytest.fixture(scope="module")
def fitted_fm(moons_data):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(prior=task.prior, net_type="flow_matching", random_state=0, **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # too few epochs to converge
        return est.fit(theta, x)


@pytest.mark.slow
def test_gaussian_posterior_is_recovered():
    # theta ~ N(0, 1), x = theta + N(0, 0.5^2): p(theta | x) = N(0.8 x, 0.2).
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(1000, 1))
    x = theta + NOISE * rng.normal(size=theta.shape)
    est = FlowPosteriorEstimator(
        prior=[("normal", 0.0, 1.0)],
        net_type="flow_matching",
        hidden_features=(64, 64),
        lr=5e-3,
        batch_size=64,
        max_epochs=20,
        random_state=0,
        device="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(theta, x)
    x_obs = np.array([[-1.0], [1.0]])
    samples = est.sample(x_obs, 2000, random_state=1)
    mean, std = 0.8 * x_obs[:, 0], np.sqrt(0.2)
    np.testing.assert_allclose(samples[..., 0].mean(1), mean, atol=0.15)
    np.testing.assert_allclose(samples[..., 0].std(1), std, rtol=0.2)
    grid = np.linspace(-0.4, 0.4, 5)[:, None] + mean[1]
    expected = stats.norm(mean[1], std).logpdf(grid[:, 0])
    np.testing.assert_allclose(est.log_prob(grid, x_obs[1]), expected, atol=0.35)


def test_sampling_is_reproducible_and_pickles_round_trip(fitted_fm, moons_data, tmp_path):
    _, theta, x = moons_data
    reference = fitted_fm.sample(x[0], 20, random_state=3)
    np.testing.assert_array_equal(fitted_fm.sample(x[0], 20, random_state=3), reference)
    log_prob = fitted_fm.log_prob(theta[:5], x[0])
    joblib.dump(fitted_fm, tmp_path / "fm.joblib")
    skfalcon.save(fitted_fm, tmp_path / "fm.skfalcon")
    for path in ("fm.joblib", "fm.skfalcon"):
        loaded = skfalcon.load(tmp_path / path)
        assert loaded.net_type == "flow_matching"
        np.testing.assert_array_equal(loaded.sample(x[0], 20, random_state=3), reference)
        np.testing.assert_allclose(loaded.log_prob(theta[:5], x[0]), log_prob, rtol=1e-6)


def test_new_fits_use_the_residual_field_of_the_requested_widths(fitted_fm):
    flow = fitted_fm.network_.conditional.flow
    assert fitted_fm.network_.spec.vector_field == "residual"
    assert [layer.out_features for layer in flow.transform.residual.hidden] == [16]


def test_the_validation_loss_is_the_flow_matching_loss(fitted_fm):
    history = fitted_fm.history_
    assert all(np.isfinite(h["val_loss"]) for h in history)
    # A squared error, never negative (a log-likelihood of the cube could be).
    assert all(h["val_loss_conditional"] > 0 for h in history)


def test_grid_search_over_its_size_runs(moons_data, tiny):
    task, theta, x = moons_data
    grid = GridSearchCV(
        FlowPosteriorEstimator(
            prior=task.prior, net_type="flow_matching", random_state=0, **{**tiny, "max_epochs": 2}
        ),
        {"hidden_features": [(8,), (16,)]},
        cv=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid.fit(theta[:300], x[:300])
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.best_params_["hidden_features"] in [(8,), (16,)]
