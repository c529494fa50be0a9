"""FlowPosteriorEstimator as a scikit-learn citizen: estimator checks, model selection, persistence."""

import copy
import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

import skfalcon
from skfalcon import FlowPosteriorEstimator
from tests._tiny import TINY

CHECKED = FlowPosteriorEstimator(
    **{**TINY, "max_epochs": 2, "hidden_features": (8,)}, random_state=0
)


@pytest.mark.slow
@parametrize_with_checks([CHECKED])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # low-ESS warnings of 2-epoch models
        check(estimator)


def test_repr_shows_only_non_default_parameters():
    assert repr(FlowPosteriorEstimator(lr=0.01, max_epochs=5)) == (
        "FlowPosteriorEstimator(lr=0.01, max_epochs=5)"
    )
    assert "FlowPosteriorEstimator" in FlowPosteriorEstimator()._repr_html_()


def test_set_params_with_unknown_name_fails_as_in_sklearn():
    with pytest.raises(ValueError, match="Invalid parameter 'learning_rate'"):
        FlowPosteriorEstimator().set_params(learning_rate=0.1)


def test_clone_round_trips_parameters_and_drops_fitted_state(fitted_moons):
    twin = clone(fitted_moons)
    assert twin.get_params() == fitted_moons.get_params()
    assert not hasattr(twin, "network_")


@pytest.mark.slow
def test_grid_search_over_two_hyperparameters_in_parallel(moons_data, tiny):
    task, theta, x = moons_data
    grid = GridSearchCV(
        FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny),
        {"net_type": ["nsf", "maf"], "lr": np.logspace(-3, -2, 2)},
        cv=2,
        n_jobs=2,
    )
    grid.fit(theta, x)
    assert grid.cv_results_["mean_test_score"].shape == (4,)
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.best_estimator_.sample(x[0], 10).shape == (10, 2)


def test_randomized_search_and_cross_val_score(moons_data, tiny):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny)
    scores = cross_val_score(est, theta[:300], x[:300], cv=2)
    assert scores.shape == (2,) and np.all(np.isfinite(scores))
    search = RandomizedSearchCV(
        est, {"batch_size": [32, 64], "gamma": [0.0, 0.5]}, n_iter=2, cv=2, random_state=0
    ).fit(theta[:300], x[:300])
    assert search.best_params_["batch_size"] in (32, 64)


def _worker_torch_threads():
    return torch.get_num_threads()


def test_joblib_workers_do_not_oversubscribe_torch_threads():
    threads = joblib.Parallel(n_jobs=2)(joblib.delayed(_worker_torch_threads)() for _ in range(2))
    assert max(threads) == 1


@pytest.mark.slow
def test_grid_search_under_dask_backend(moons_data, tiny):
    distributed = pytest.importorskip("dask.distributed")
    task, theta, x = moons_data
    grid = GridSearchCV(
        FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny),
        {"num_transforms": [1, 2]},
        cv=2,
    )
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
        joblib.parallel_backend("dask"),
    ):
        grid.fit(theta[:300], x[:300])
    assert grid.best_estimator_.sample(x[0], 5).shape == (5, 2)


@pytest.mark.parametrize("round_trip", ["pickle", "joblib", "deepcopy"])
def test_persistence_reproduces_samples_exactly(fitted_moons, moons_data, tmp_path, round_trip):
    _, _, x = moons_data
    before = fitted_moons.sample(x[:2], 64, random_state=5)
    lp_before = fitted_moons.log_prob(before[0], x[0])
    if round_trip == "pickle":
        loaded = pickle.loads(pickle.dumps(fitted_moons))
    elif round_trip == "joblib":
        joblib.dump(fitted_moons, tmp_path / "model.joblib")
        loaded = joblib.load(tmp_path / "model.joblib")
    else:
        loaded = copy.deepcopy(fitted_moons)
    np.testing.assert_array_equal(loaded.sample(x[:2], 64, random_state=5), before)
    np.testing.assert_allclose(loaded.log_prob(before[0], x[0]), lp_before)
    assert loaded.network_ is not fitted_moons.network_


def test_pickle_holds_numpy_not_torch_storages(fitted_moons):
    state = fitted_moons.__getstate__()
    assert "network_" not in state
    assert all(isinstance(v, np.ndarray) for v in state["_network_state"]["weights"].values())
    assert state["_skfalcon_version"] == skfalcon.__version__


def test_model_fitted_on_cuda_loads_on_cpu(fitted_moons, moons_data):
    _, _, x = moons_data
    state = fitted_moons.__getstate__()
    state["device_"] = "cuda:0"  # what a GPU-fitted estimator carries
    loaded = FlowPosteriorEstimator.__new__(FlowPosteriorEstimator)
    context = (
        warnings.catch_warnings()
        if torch.cuda.is_available()
        else pytest.warns(UserWarning, match="fitted on cuda:0 but CUDA is not available")
    )
    with context:
        loaded.__setstate__(state)
    if not torch.cuda.is_available():
        assert loaded.device_ == torch.device("cpu")
        np.testing.assert_array_equal(
            loaded.sample(x[0], 32, random_state=1), fitted_moons.sample(x[0], 32, random_state=1)
        )


def test_loading_from_another_version_warns(fitted_moons):
    state = fitted_moons.__getstate__()
    state["_skfalcon_version"] = "0.0.1"
    loaded = FlowPosteriorEstimator.__new__(FlowPosteriorEstimator)
    with pytest.warns(UserWarning, match="saved with skfalcon 0.0.1"):
        loaded.__setstate__(state)


def test_truncated_or_foreign_files_raise_a_clear_error(fitted_moons, tmp_path):
    path = skfalcon.save(fitted_moons, tmp_path / "model.joblib")
    loaded = skfalcon.load(path, expected=FlowPosteriorEstimator)
    assert loaded.n_iter_ == fitted_moons.n_iter_
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"Could not load a skfalcon model from .*truncated"):
        skfalcon.load(path)
    foreign = tmp_path / "notes.txt"
    foreign.write_text("hello")
    with pytest.raises(ValueError, match="truncated or not a joblib/pickle file"):
        skfalcon.load(foreign)
    joblib.dump({"weights": [1, 2]}, tmp_path / "dict.joblib")
    with pytest.raises(ValueError, match="holds a dict, not a FlowPosteriorEstimator"):
        skfalcon.load(tmp_path / "dict.joblib", expected=FlowPosteriorEstimator)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_samples_and_round_trips(moons_data, tiny):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **{**tiny, "device": "cuda"})
    est.fit(theta, x)
    assert est.device_.type == "cuda"
    before = est.sample(x[0], 32, random_state=2)
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.sample(x[0], 32, random_state=2), before)


def test_pickling_leaves_the_estimator_intact(fitted_moons):
    network = fitted_moons.network_
    pickle.dumps(fitted_moons)
    assert fitted_moons.network_ is network
