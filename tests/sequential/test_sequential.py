"""SequentialInference: the propose, simulate, train loop and its parallel simulation."""

import inspect
import logging
import threading

import joblib
import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.base import clone

from skfalcon import FlowPosteriorEstimator, SequentialInference
from skfalcon.datasets import TwoMoons
from skfalcon.sequential.strategies import StandardStrategy
from skfalcon.simulation import SimulatorError

PRIOR = [("uniform", -1.0, 1.0), ("uniform", -1.0, 1.0)]
X_OBS = np.array([0.3, -0.2])


def toy_simulator(theta):
    """x = theta + noise; a module-level function, so process backends can pickle it."""
    rng = np.random.default_rng(int(1e6 * abs(theta[0, 0])))
    return theta + 0.1 * rng.standard_normal(theta.shape)


def nan_simulator(theta):
    """NaN wherever theta_0 > 0.6 (about a fifth of the prior)."""
    x = toy_simulator(theta)
    x[theta[:, 0] > 0.6] = np.nan
    return x


def dask_worker_simulator(theta):
    """Fails unless it runs inside a dask worker."""
    from dask.distributed import get_worker

    get_worker()
    return toy_simulator(theta)


class LockedSimulator:
    """A simulator holding a lock: it cannot be pickled, so it cannot go to processes."""

    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, theta):
        with self.lock:
            return toy_simulator(theta)


@pytest.fixture
def estimator(tiny):
    return FlowPosteriorEstimator(prior=PRIOR, random_state=0, **{**tiny, "max_epochs": 4})


def loop(estimator, simulator=toy_simulator, **kwargs):
    knobs = dict(
        strategy="standard", min_training_samples=200, resample_batch_size=100, resample_interval=2
    )
    return SequentialInference(estimator, simulator, random_state=0, **{**knobs, **kwargs})


def test_two_round_run_bookkeeping(estimator):
    params_before = estimator.get_params()
    seq = loop(estimator).run(X_OBS, n_simulations=300)

    assert seq.n_simulations_ == 300
    assert seq.n_dropped_simulations_ == 0
    assert [r["round"] for r in seq.history_] == [0, 1]
    assert [r["n_simulations"] for r in seq.history_] == [200, 100]
    assert [r["n_simulations_total"] for r in seq.history_] == [200, 300]
    assert [r["n_stored"] for r in seq.history_] == [200, 300]
    # The first round trains resample_interval epochs, the last to max_epochs at most.
    assert seq.history_[0]["n_epochs"] == 2
    assert 1 <= seq.history_[1]["n_epochs"] <= 4
    for record in seq.history_:
        assert np.isfinite([record["train_loss"], record["val_loss"]]).all()
        assert record["ess"] > 0
        assert record["seconds_simulate"] >= 0 and record["seconds_train"] > 0
    assert seq.estimator_.n_stored_simulations_ == 300
    assert seq.estimator_.max_epochs == 4  # restored after the short rounds
    assert seq.estimator_.sample(X_OBS, 7).shape == (7, 2)
    # The estimator given is a template: never fitted, never changed.
    assert not hasattr(estimator, "network_")
    assert estimator.get_params() == params_before
    assert seq.estimator_ is not estimator


def test_default_round_sizes_follow_the_budget(estimator):
    seq = SequentialInference(estimator, toy_simulator, random_state=0)
    seq.run(X_OBS, 803)
    assert seq.strategy == "truncated" and seq.truncation_box_.shape == (2, 2)
    # A quarter first, then batches of a quarter; the remainder goes last.
    assert [r["n_simulations"] for r in seq.history_] == [200] * 4 + [3]
    # Falcon's standard strategy adds an eighth at each resample.
    assert [r.size for r in StandardStrategy().rounds(803)] == [200] + [100] * 6 + [3]


def test_run_is_reproducible_with_random_state(estimator):
    first = loop(estimator).run(X_OBS, 300).estimator_.sample(X_OBS, 20, random_state=1)
    second = loop(estimator).run(X_OBS, 300).estimator_.sample(X_OBS, 20, random_state=1)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    "strategy, kwargs, capacity, sizes",
    [
        ("amortized", {}, None, [350]),
        ("round_based", {"n_rounds": 2}, None, [175, 175]),
        ("standard", {}, 250, [200, 100, 50]),
        ("truncated", {}, None, [200, 100, 50]),
    ],
)
def test_each_strategy_runs(estimator, strategy, kwargs, capacity, sizes):
    estimator.set_params(store_capacity=capacity)
    seq = loop(estimator, strategy=strategy, **kwargs).run(X_OBS, 350)
    assert [r["n_simulations"] for r in seq.history_] == sizes
    assert seq.n_simulations_ == 350
    stored = [r["n_stored"] for r in seq.history_]
    if strategy == "round_based":
        # Falcon's threshold, on the working clone only: the user's estimator is unchanged.
        assert seq.estimator_.discard_log_ratio == -20.0 and estimator.discard_log_ratio is None
        assert max(stored) <= 175  # full renewal: one round at a time
    elif strategy == "standard":
        assert stored == [200, 250, 250]  # capped by the estimator's store_capacity
    elif strategy == "truncated":
        assert stored == [200, 300, 350]
        assert seq.estimator_.marginal_ == "prior"  # every row counts as a prior row
        assert seq.truncation_box_.shape == (2, 2)
    else:
        assert stored == [350]
    assert seq.estimator_.sample(X_OBS, 5).shape == (5, 2)


def test_two_moons_run_focuses_simulations(tiny):
    task = TwoMoons()
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **{**tiny, "max_epochs": 3})
    x_obs = task.simulate(np.array([[0.5, 0.5]]), random_state=0)[0]
    seq = SequentialInference(
        est,
        task.simulate,
        strategy="standard",
        min_training_samples=300,
        resample_batch_size=150,
        resample_interval=3,
        random_state=0,
    ).run(x_obs, 600)
    assert seq.n_simulations_ == 600 and len(seq.history_) == 3
    assert seq.estimator_.sample(x_obs, 10).shape == (10, 2)


class RecordingSimulator:
    """x = theta + 0.02 noise, a posterior far narrower than the prior; keeps each call's theta."""

    def __init__(self):
        self.calls = []
        self.rng = np.random.default_rng(0)

    def __call__(self, theta):
        self.calls.append(theta.copy())
        return theta + 0.02 * self.rng.standard_normal(theta.shape)


@pytest.mark.slow
def test_truncated_rounds_draw_from_nested_boxes_around_the_posterior(tiny):
    est = FlowPosteriorEstimator(prior=PRIOR, random_state=0, **{**tiny, "max_epochs": 40})
    simulator = RecordingSimulator()
    seq = SequentialInference(est, simulator, strategy="truncated", random_state=0)
    seq.run(X_OBS, 800)

    volumes = [r["truncation_volume"] for r in seq.history_]
    assert volumes[0] == 1.0  # the first round samples the whole prior
    # Nested; the volumes are Monte Carlo estimates (about 0.3 % noise).
    assert all(a >= 0.99 * b for a, b in zip(volumes, volumes[1:], strict=False))
    # The posterior's sd is 0.02 in a prior of width 2: the last box is under a tenth of
    # the prior (0.05 at this seed), and it holds the observation's posterior.
    assert volumes[-1] < 0.1
    low, high = seq.truncation_box_
    assert np.all((low < X_OBS) & (X_OBS < high))
    # The last round's rows: its simulator calls, one per chunk.
    last = np.concatenate(simulator.calls)[-seq.history_[-1]["n_simulations"] :]
    assert np.all((low <= last) & (last <= high))
    # Uniform in the box (the prior is uniform here): the rows fill it, edge to edge.
    spread = (last.max(0) - last.min(0)) / (high - low)
    assert np.all(spread > 0.9)
    samples = seq.estimator_.sample(X_OBS, 2000, random_state=0)
    np.testing.assert_allclose(samples.mean(0), X_OBS, atol=0.02)
    assert np.all(samples.std(0) < 0.06)


def test_collapsed_final_weights_warn_and_point_to_truncation(estimator, monkeypatch):
    def sample_with_collapsed_weights(self, x, n_samples, **kwargs):
        theta = np.zeros((n_samples, 2))
        return (theta, 3.0) if kwargs.get("return_ess") else theta

    monkeypatch.setattr(FlowPosteriorEstimator, "sample", sample_with_collapsed_weights)
    with pytest.warns(UserWarning, match=r"effective sample size of 3 for 1000.*'truncated'"):
        loop(estimator).run(X_OBS, 300)


def test_prior_box_draws_are_uniform_in_the_cube_and_map_to_theta_bounds(tiny):
    prior = [("normal", 0.0, 1.0), ("uniform", 0.0, 2.0), ("fixed", 3.0), ("normal", 5.0, 1.0)]
    est = FlowPosteriorEstimator(prior=prior, marginalize=3, random_state=0, **tiny)
    theta = np.random.default_rng(0).normal([0.0, 1.0, 3.0, 5.0], [1.0, 0.3, 0.0, 1.0], (200, 4))
    theta[:, 1] = theta[:, 1].clip(0.01, 1.99)
    est.fit(theta, theta[:, :2])
    low, high = np.array([-1.0, 0.5]), np.array([0.5, 1.5])

    rows = est.prior_.sample_box(low, high, 4000, random_state=0)
    u = est.prior_.to_cube(torch.as_tensor(rows[:, :2])).numpy()
    for j in range(2):
        assert stats.kstest(u[:, j], stats.uniform(low[j], high[j] - low[j]).cdf).pvalue > 1e-3
    assert np.all(rows[:, 2] == 3.0)  # fixed
    assert abs(rows[:, 3].mean() - 5.0) < 0.1 and abs(rows[:, 3].std() - 1.0) < 0.1  # prior

    box = est.prior_.box_to_theta(low, high)
    b = est.prior_.hypercube_bound
    np.testing.assert_allclose(box[:, 0], stats.norm.ppf((np.array([-1.0, 0.5]) + b) / (2 * b)))
    np.testing.assert_allclose(box[:, 1], 2.0 * (np.array([0.5, 1.5]) + b) / (2 * b))
    np.testing.assert_array_equal(box[:, 2], [3.0, 3.0])
    np.testing.assert_array_equal(box[:, 3], [-np.inf, np.inf])


@pytest.mark.slow
def test_run_under_dask_backend(estimator):
    # Two workers: with one, joblib runs a single job in this process, not on dask.
    distributed = pytest.importorskip("dask.distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
        joblib.parallel_backend("dask"),
    ):
        seq = loop(estimator, dask_worker_simulator).run(X_OBS, 300)
    assert seq.n_simulations_ == 300
    with pytest.raises(SimulatorError, match="dask|worker"):  # the simulator really needs dask
        loop(estimator, dask_worker_simulator).run(X_OBS, 300)


def test_threads_split_the_batch_into_fixed_chunks(estimator):
    calls = []

    def counting(theta):  # a closure: fine in threads, no pickling
        calls.append(len(theta))
        return toy_simulator(theta)

    with joblib.parallel_backend("threading"):
        loop(estimator, counting, n_jobs=2, simulation_chunk_size=50).run(X_OBS, 300)
    # Round 0: a pilot row, then 199 rows in chunks of 50; round 1: 100 rows.
    assert sorted(calls) == [1, 49] + [50] * 5


def test_nan_rows_are_dropped_and_counted(estimator):
    with pytest.warns(UserWarning, match="Dropped .* NaN or infinity"):
        seq = loop(estimator, nan_simulator).run(X_OBS, 300)
    dropped = [r["n_dropped"] for r in seq.history_]
    assert seq.n_dropped_simulations_ == sum(dropped) > 0
    assert seq.n_simulations_ == 300
    assert seq.history_[-1]["n_stored"] == 300 - seq.n_dropped_simulations_


def test_nan_rows_raise_with_nan_policy_raise(estimator):
    estimator.set_params(nan_policy="raise")
    with pytest.raises(ValueError, match=r"x holds NaN or infinity in \d+ of \d+ simulations"):
        loop(estimator, nan_simulator).run(X_OBS, 300)


def test_unpicklable_simulator_gets_a_clear_error(estimator):
    with pytest.raises(ValueError, match="'LockedSimulator' cannot be pickled .* module-level"):
        loop(estimator, LockedSimulator(), n_jobs=2).run(X_OBS, 300)
    # Threads share memory: nothing to pickle, so it runs.
    with joblib.parallel_backend("threading"):
        assert loop(estimator, LockedSimulator(), n_jobs=2).run(X_OBS, 300).n_simulations_ == 300


@pytest.mark.parametrize(
    "output, match",
    [
        (lambda theta: theta[:-1], r"shape \(\d+, 2\) for \d+ parameter rows"),
        (lambda theta: theta[:, 0].sum(), r"shape \(\) for \d+ parameter rows"),
        # A valid batch of (2, 1) observations, but x_obs is a (2,) one.
        (lambda theta: theta[:, :, None], r"x_obs must be one observation of shape \(2, 1\)"),
        (lambda theta: {"a": theta}, r"\(named outputs \['a'\]\), got an array"),
        (lambda theta: {1: theta}, r"dict with keys \[1\]; .* str keys"),
    ],
)
def test_simulator_output_shape_is_checked(estimator, output, match):
    with pytest.raises(ValueError, match=match):
        loop(estimator, output).run(X_OBS, 300)


def series_and_scalar_simulator(theta):
    """Named outputs: a noisy 16-sample series a*t + b and the scalar a - b."""
    rng = np.random.default_rng(int(1e6 * abs(theta[0, 0])))
    t = np.linspace(0.0, 1.0, 16)
    series = theta[:, :1] * t + theta[:, 1:] + 0.05 * rng.standard_normal((len(theta), 16))
    return {"series": series, "difference": theta[:, 0] - theta[:, 1]}


def test_dict_observations_run_through_the_loop(estimator):
    theta_obs = np.array([[0.4, -0.3]])
    x_obs = series_and_scalar_simulator(theta_obs)  # batch axis of 1: accepted
    est = estimator.set_params(embedding={"series": "cnn1d", "difference": "mlp"})
    seq = loop(est, series_and_scalar_simulator).run(x_obs, 400)
    assert seq.estimator_.observation_shape_ == {"series": (16,), "difference": (1,)}
    assert set(seq.x_obs_) == {"series", "difference"}
    assert seq.x_obs_["series"].shape == (16,)
    # Proposal rows came from the widened posterior of this dict observation.
    assert [r["n_simulations"] for r in seq.history_] == [200, 100, 100]
    assert seq.estimator_.sample(seq.x_obs_, 5).shape == (5, 2)


def test_series_observations_and_nan_rows(estimator):
    def simulator(theta):
        x = series_and_scalar_simulator(theta)["series"]
        x[theta[:, 0] > 0.7, 3] = np.nan  # one bad sample spoils its row
        return x

    x_obs = simulator(np.array([[0.1, 0.2]]))[0]
    with pytest.warns(UserWarning, match="Dropped .* NaN or infinity"):
        seq = loop(estimator.set_params(embedding="cnn1d"), simulator).run(x_obs, 300)
    assert seq.n_dropped_simulations_ > 0
    assert seq.estimator_.observation_shape_ == (16,)


def test_dict_observation_keys_must_match(estimator):
    x_obs = {"series": np.zeros(16), "other": 0.0}
    with pytest.raises(ValueError, match=r"x_obs has inputs \['series', 'other'\], but"):
        loop(estimator, series_and_scalar_simulator).run(x_obs, 300)
    with pytest.raises(ValueError, match=r"x_obs\['series'\] must be one observation of shape"):
        loop(estimator, series_and_scalar_simulator).run(
            {"series": np.zeros(15), "difference": 0.0}, 300
        )


def test_one_feature_simulator_output_is_a_column(tiny):
    est = FlowPosteriorEstimator(prior=PRIOR[:1], random_state=0, **tiny)
    seq = loop(est, lambda theta: theta[:, 0] + 0.1, strategy="amortized").run([0.2], 200)
    assert seq.estimator_.n_observation_features_ == 1


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("strategy", "adaptive", r"strategy='adaptive' \(input should be 'standard', 'amortized'"),
        ("min_training_samples", 0, r"min_training_samples=0 \(input should be greater than"),
        ("resample_batch_size", 2.5, r"resample_batch_size=2.5 \(input should be a valid integer"),
        ("resample_interval", True, r"resample_interval=True"),
        ("n_rounds", -1, r"n_rounds=-1"),
        ("truncation_margin", -0.1, r"truncation_margin=-0.1 \(input should be greater than"),
        ("truncation_margin", float("nan"), r"truncation_margin=nan"),
        ("truncation_quantile", 1.0, r"truncation_quantile=1.0 \(input should be less than 1"),
        ("truncation_quantile", 0, r"truncation_quantile=0 \(input should be greater than 0"),
        ("n_jobs", 0, r"n_jobs=0 \(expected None, a positive int"),
        ("simulation_chunk_size", 0, r"simulation_chunk_size=0 \(input should be greater"),
        ("simulation_timeout", 0, r"simulation_timeout=0 \(input should be greater than 0"),
        ("simulation_timeout", "1s", r"simulation_timeout='1s'"),
        ("on_simulator_error", "ignore", r"on_simulator_error='ignore' \(input should be 'raise'"),
        ("random_state", "seed", r"random_state='seed'"),
        ("simulator", 3, r"simulator=3 \(expected a callable"),
        ("estimator", "est", r"estimator='est' \(expected a FlowPosteriorEstimator"),
    ],
)
def test_bad_knobs_raise(estimator, name, value, match):
    seq = loop(estimator).set_params(**{name: value})
    with pytest.raises(ValueError, match=match):
        seq.run(X_OBS, 300)


def test_numpy_knobs_are_accepted(estimator):
    seq = loop(estimator, resample_batch_size=np.int64(100), n_rounds=np.int32(2))
    assert seq.run(X_OBS, np.int64(300)).n_simulations_ == 300


@pytest.mark.parametrize(
    "kwargs, x_obs, n, match",
    [
        ({}, X_OBS, 100, r"n_simulations=100 is below min_training_samples=200"),
        ({}, X_OBS, 0, r"n_simulations must be a positive integer, got 0"),
        ({"strategy": "round_based", "n_rounds": 5}, X_OBS, 3, r"below n_rounds=5"),
        ({}, np.zeros((2, 2)), 300, r"x_obs must be one observation"),
    ],
)
def test_bad_run_arguments_raise(estimator, kwargs, x_obs, n, match):
    with pytest.raises(ValueError, match=match):
        loop(estimator, **kwargs).run(x_obs, n)


def test_estimator_without_prior_is_refused(tiny):
    with pytest.raises(ValueError, match="(?s)estimator=.* needs a prior"):
        loop(FlowPosteriorEstimator(**tiny)).run(X_OBS, 300)


def test_verbose_shows_a_bar_and_logs(estimator, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="skfalcon"):
        loop(estimator, verbose=1).run(X_OBS, 300)
    assert "standard" in capsys.readouterr().err
    assert any("standard round 1: 100 new simulations" in m for m in caplog.messages)


def test_clone_and_params_round_trip(estimator):
    seq = loop(estimator, strategy="round_based", n_rounds=3)
    assert clone(seq).get_params()["n_rounds"] == 3


def test_signature_mirrors_the_params_model():
    from skfalcon.sequential import SequentialParams

    signature = inspect.signature(SequentialInference)
    fields = SequentialParams.model_fields
    assert list(signature.parameters) == list(fields)
    for name, parameter in signature.parameters.items():
        if parameter.default is not inspect.Parameter.empty:
            assert fields[name].default == parameter.default, name
