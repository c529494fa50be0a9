"""FlowPosteriorEstimator with ensemble_size: the hyperparameter, densities, files, rounds."""

import pathlib
import warnings

import joblib
import numpy as np
import pytest
from scipy import integrate
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

import skfalcon
from skfalcon import FlowPosteriorEstimator
from skfalcon.engine import DualFlowPosterior, EnsemblePosterior
from tests._tiny import TINY

# TINY without its ensemble_size: these tests set their own.
SMALL = {k: v for k, v in TINY.items() if k != "ensemble_size"}

DATA = pathlib.Path(__file__).parent.parent / "data"


@pytest.fixture(scope="module")
def ensembles(moons_data):
    """Two-member ensembles with the exact prior as m and with a learned m."""
    task, theta, x = moons_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny fits stop at max_epochs
        return {
            marginal: FlowPosteriorEstimator(
                prior=task.prior, ensemble_size=2, marginal=marginal, random_state=0, **SMALL
            ).fit(theta, x)
            for marginal in ("auto", "flow")
        }


def test_ensemble_size_is_a_plain_hyperparameter():
    est = FlowPosteriorEstimator(ensemble_size=3, **SMALL)
    assert est.get_params()["ensemble_size"] == 3
    assert clone(est).ensemble_size == 3
    assert est.set_params(ensemble_size=2).ensemble_size == 2
    assert FlowPosteriorEstimator().ensemble_size == 2


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2", None])
def test_a_bad_ensemble_size_names_itself(value, moons_data):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(prior=task.prior, ensemble_size=value, **SMALL)
    with pytest.raises(ValueError, match=rf"ensemble_size={value!r}"):
        est.fit(theta[:50], x[:50])


def test_size_one_is_the_single_posterior_with_the_same_draws(moons_data, fitted_moons):
    task, theta, x = moons_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = FlowPosteriorEstimator(
            prior=task.prior, ensemble_size=1, random_state=0, **SMALL
        ).fit(theta, x)
    assert type(est.network_) is DualFlowPosterior
    assert not any(k.startswith("members.") for k in est.network_.state_dict())
    np.testing.assert_array_equal(
        est.sample(x[:2], 20, random_state=1), fitted_moons.sample(x[:2], 20, random_state=1)
    )
    np.testing.assert_array_equal(
        est.log_prob(theta[:10], x[0]), fitted_moons.log_prob(theta[:10], x[0])
    )


def test_files_of_skfalcon_0_1_load_as_one_posterior():
    with pytest.warns(UserWarning, match="saved with skfalcon 0.1.0"):
        est = joblib.load(DATA / "estimator_0.1.0_mixture.joblib")
    assert est.ensemble_size == 1 and est.get_params()["ensemble_size"] == 1
    assert type(est.network_) is DualFlowPosterior


@pytest.mark.parametrize("marginal", ["auto", "flow"])
def test_ensemble_samples_reproducibly_and_densities_are_normalized(
    ensembles, moons_data, marginal
):
    est = ensembles[marginal]
    task, theta, x = moons_data
    assert isinstance(est.network_, EnsemblePosterior) and est.network_.size == 2
    draws = est.sample(x[:2], 200, random_state=3)
    assert draws.shape == (2, 200, 2) and np.isfinite(draws).all()
    np.testing.assert_array_equal(draws, est.sample(x[:2], 200, random_state=3))
    assert (np.abs(draws) <= 1).all()  # inside the prior's support
    log_z, se = est.log_normalizer(x[:2])
    assert log_z.shape == se.shape == (2, 2)
    # exp(log_prob) integrates to one over the prior's box [-1, 1]^2.
    grid = np.linspace(-1, 1, 121)
    points = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    density = np.exp(est.log_prob(points, x[0])).reshape(len(grid), len(grid))
    mass = integrate.trapezoid(integrate.trapezoid(density, grid), grid)
    assert mass == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("fmt", ["joblib", "safe"])
def test_ensemble_round_trips_through_files_with_identical_samples(
    ensembles, moons_data, fmt, tmp_path
):
    est = ensembles["flow"]
    task, theta, x = moons_data
    expected_log_prob = est.log_prob(theta[:5], x[0])  # fills the log Z cache first
    path = skfalcon.save(est, tmp_path / ("model.joblib" if fmt == "joblib" else "model.skfalcon"))
    loaded = skfalcon.load(path)
    assert loaded.ensemble_size == 2 and isinstance(loaded.network_, EnsemblePosterior)
    assert loaded._log_z == est._log_z
    np.testing.assert_array_equal(
        loaded.sample(x[:2], 50, random_state=5), est.sample(x[:2], 50, random_state=5)
    )
    np.testing.assert_array_equal(loaded.log_prob(theta[:5], x[0]), expected_log_prob)
    th, lp = est.sample_proposal(x[0], 30, random_state=2, return_log_prob=True)
    th2, lp2 = loaded.sample_proposal(x[0], 30, random_state=2, return_log_prob=True)
    np.testing.assert_array_equal(th, th2)
    np.testing.assert_array_equal(lp, lp2)


def test_grid_search_over_ensemble_size(moons_data, tiny):
    task, theta, x = moons_data
    search = GridSearchCV(
        FlowPosteriorEstimator(prior=task.prior, random_state=0, **{**tiny, "max_epochs": 2}),
        {"ensemble_size": [1, 2]},
        cv=2,
        error_score="raise",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(theta[:300], x[:300])
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_params_["ensemble_size"] in (1, 2)


def test_partial_fit_rounds_with_an_ensemble(moons_data):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(
        prior=task.prior, ensemble_size=2, discard_log_ratio=-30.0, random_state=0, **SMALL
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.partial_fit(theta[:300], x[:300])
        assert est.marginal_ == "prior"
        proposal, log_prob = est.sample_proposal(x[0], 200, return_log_prob=True)
        assert np.isfinite(log_prob).all() and (np.abs(proposal) <= 1).all()
        est.partial_fit(proposal, task.simulate(proposal, random_state=3), log_prob, max_epochs=2)
    assert est.marginal_ == "mixture" and est.prior_fraction_ == pytest.approx(0.6, abs=0.01)
    assert isinstance(est.network_, EnsemblePosterior)
    assert est.n_iter_ == SMALL["max_epochs"] + 2
    draws = est.sample(x[0], 100, random_state=1)
    assert np.isfinite(draws).all() and np.isfinite(est.log_prob(draws, x[0])).all()


@pytest.mark.parametrize("marginal", ["auto", "flow"])
def test_sampling_without_the_mixture_density_draws_the_same(ensembles, moons_data, marginal):
    est = ensembles[marginal]
    x2d = moons_data[0].observations(2)[1]
    sampler, _ = est._inference_settings()
    u, ess, log_density = est._draw(x2d, 50, sampler, 1.0, 7)
    u_only, ess_only, none = est._draw(x2d, 50, sampler, 1.0, 7, densities=False)
    assert none is None and log_density.shape == (2, 50)
    np.testing.assert_array_equal(u_only.numpy(), u.numpy())
    np.testing.assert_array_equal(ess_only.numpy(), ess.numpy())
