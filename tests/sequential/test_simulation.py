"""skfalcon.simulation: simulate (chunks, seeds, faults), simulate_from_prior, one pool a run."""

import functools
import time
import warnings

import joblib
import numpy as np
import pytest
import scipy.stats
from joblib._parallel_backends import ThreadingBackend

import skfalcon
from skfalcon import FactorizedPrior, FlowPosteriorEstimator, SequentialInference
from skfalcon.datasets import TwoMoons
from skfalcon.simulation import SimulatorError, seed_keyword, simulate, simulate_from_prior
from tests._tiny import TINY

THETA = np.zeros((300, 2))


def noisy(theta, random_state=0):
    """x = theta + noise; the default seed would repeat in every chunk unless overridden."""
    return theta + np.random.RandomState(random_state).standard_normal(theta.shape)


def noisy_rng(theta, *, rng=None):
    assert isinstance(rng, np.random.Generator)
    return theta + rng.standard_normal(theta.shape)


def test_chunks_get_independent_seeds():
    for simulator in (noisy, noisy_rng, functools.partial(noisy, random_state=5)):
        x = simulate(simulator, THETA, random_state=0, chunk_size=100)
        assert len(np.unique(x[:, 0])) == len(THETA), simulator  # no chunk repeats another
        np.testing.assert_array_equal(x, simulate(simulator, THETA, random_state=0, chunk_size=100))
    assert not np.array_equal(
        simulate(noisy, THETA, random_state=0), simulate(noisy, THETA, random_state=1)
    )


def test_seed_keyword_detection():
    assert seed_keyword(noisy) == "random_state"
    assert seed_keyword(noisy_rng) == "rng"
    assert seed_keyword(TwoMoons().simulate) == "random_state"
    assert seed_keyword(lambda theta: theta) is None
    assert seed_keyword(lambda theta, **kwargs: theta) is None
    assert seed_keyword(lambda random_state: random_state) is None  # that one takes theta
    assert seed_keyword(np.negative) is None


def test_results_do_not_depend_on_n_jobs_with_threads():
    theta = TwoMoons().sample_prior(200, random_state=0)
    alone = simulate(TwoMoons().simulate, theta, random_state=3)
    with joblib.parallel_backend("threading", n_jobs=2):
        np.testing.assert_array_equal(alone, simulate(TwoMoons().simulate, theta, random_state=3))


@pytest.mark.slow
def test_results_do_not_depend_on_n_jobs_with_processes():
    alone = simulate(noisy, THETA, random_state=3, n_jobs=1)
    np.testing.assert_array_equal(alone, simulate(noisy, THETA, random_state=3, n_jobs=2))


def failing(theta):
    if theta[0, 0] >= 100:
        raise ValueError("out of range")
    return theta


def test_drop_fills_failed_chunks_with_nan_and_reports_them():
    theta = np.column_stack([2.0 * np.arange(100), np.zeros(100)])  # rows from 50 on fail
    with pytest.warns(UserWarning, match=r"Dropped 2 of 4 chunks \(50 of 100 simulations\)"):
        x, failed = simulate(failing, theta, chunk_size=25, on_error="drop", return_failed=True)
    np.testing.assert_array_equal(failed, np.arange(100) >= 50)
    assert np.isnan(x[failed]).all() and np.array_equal(x[~failed], theta[~failed])
    with pytest.raises(
        SimulatorError,
        match=r"ValueError: out of range on chunk 2 of 4 \(parameter rows 50 to 74\)",
    ):
        simulate(failing, theta, chunk_size=25)
    with pytest.raises(SimulatorError, match="Every one of the 2 chunks failed"):
        simulate(failing, theta[50:], chunk_size=25, on_error="drop")


def test_observation_shape_is_enforced_on_every_chunk():
    with pytest.raises(
        ValueError, match=r"shape \(2,\), but observation_shape has \(3,\); on chunk 0 of 10"
    ):
        simulate(lambda theta: theta, THETA, observation_shape=(3,))
    dict_out = simulate(lambda theta: {"a": theta}, THETA[:4], observation_shape={"a": [2]})
    assert dict_out["a"].shape == (4, 2)


def sleepy(theta):
    if theta[0, 0] > 0:
        time.sleep(2.0)
    return theta


def test_timeout_with_threads_drops_the_hung_chunk():
    theta = np.repeat([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]], 10, axis=0)
    with (
        joblib.parallel_backend("threading", n_jobs=2),
        pytest.warns(UserWarning, match="ran past"),
    ):
        _, failed = simulate(
            sleepy, theta, chunk_size=10, timeout=0.3, on_error="drop", return_failed=True
        )
    np.testing.assert_array_equal(failed, np.repeat([False, True, False], 10))


def test_timeout_in_this_process_is_not_enforced_and_says_so():
    with pytest.warns(UserWarning, match="not enforced"):
        simulate(lambda theta: theta, THETA, timeout=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        simulate(lambda theta: theta, THETA)  # no timeout, no warning


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"on_error": "ignore"}, r"on_error must be 'raise' or 'drop', got 'ignore'"),
        ({"chunk_size": 0}, r"chunk_size must be a positive integer, got 0"),
        ({"timeout": -1.0}, r"timeout == -1.0, must be > 0"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate(lambda theta: theta, THETA, **kwargs)


# --------------------------------------------------------------------------- simulate_from_prior

PRIOR = [("uniform", -1.0, 1.0), ("normal", 0.0, 2.0), ("fixed", 5.0)]


def doubled(theta):
    return 2.0 * theta


def nan_where_positive(theta, rng=None):
    """theta plus noise, NaN where theta_0 > 0.5 (a quarter of the uniform prior)."""
    x = theta + rng.standard_normal(theta.shape)
    x[theta[:, 0] > 0.5] = np.nan
    return x


def test_simulate_from_prior_draws_the_prior_and_simulates_it():
    theta, x = simulate_from_prior(doubled, PRIOR, 500, random_state=0)
    assert theta.shape == x.shape == (500, 3)
    assert theta.dtype == x.dtype == np.float64
    np.testing.assert_array_equal(x, 2.0 * theta)
    assert np.all(theta[:, 2] == 5.0)
    assert scipy.stats.kstest(theta[:, 0], scipy.stats.uniform(-1.0, 2.0).cdf).pvalue > 1e-3
    assert scipy.stats.kstest(theta[:, 1], scipy.stats.norm(0.0, 2.0).cdf).pvalue > 1e-3
    # a FactorizedPrior is the same prior as its specs
    again = simulate_from_prior(doubled, FactorizedPrior(PRIOR), 500, random_state=0)
    np.testing.assert_array_equal(again[0], theta)
    assert skfalcon.simulate_from_prior is simulate_from_prior


def test_simulate_from_prior_is_reproducible_and_seeds_the_simulator():
    first = simulate_from_prior(noisy_rng, PRIOR, 200, random_state=3, chunk_size=50)
    again = simulate_from_prior(noisy_rng, PRIOR, 200, random_state=3, chunk_size=50)
    other = simulate_from_prior(noisy_rng, PRIOR, 200, random_state=4, chunk_size=50)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    noise = first[1] - first[0]
    assert len(np.unique(noise[:, 0])) == 200  # no chunk repeats another's noise
    # the draw of theta and the simulator's noise come from different streams
    assert not np.allclose(noise[:, 0], first[0][:, 1])
    with joblib.parallel_backend("threading", n_jobs=2):
        threaded = simulate_from_prior(noisy_rng, PRIOR, 200, random_state=3, chunk_size=50)
    np.testing.assert_array_equal(threaded[1], first[1])


def test_simulate_from_prior_applies_the_estimators_nan_policy():
    with pytest.warns(UserWarning, match=r"Dropped \d+ of 400 simulations whose x holds NaN"):
        theta, x = simulate_from_prior(nan_where_positive, PRIOR, 400, random_state=0)
    assert 250 < len(theta) < 350 and len(x) == len(theta)
    assert np.isfinite(x).all() and np.all(theta[:, 0] <= 0.5)
    with pytest.raises(ValueError, match=r"x holds NaN .* with nan_policy='raise'"):
        simulate_from_prior(nan_where_positive, PRIOR, 400, random_state=0, nan_policy="raise")


def test_simulate_from_prior_leaves_out_failed_chunks_before_the_nan_policy():
    failing_with_prior.calls = 0
    with pytest.warns(UserWarning, match=r"Dropped 2 of 4 chunks"):
        theta, x = simulate_from_prior(
            failing_with_prior,
            [("uniform", 0.0, 1.0)],
            100,
            random_state=0,
            chunk_size=25,
            on_error="drop",
            nan_policy="raise",  # failed rows are not NaN observations
        )
    assert len(theta) == len(x) == 50


def failing_with_prior(theta):
    """Fails on the second and fourth chunk call, counted in its own attribute."""
    failing_with_prior.calls = getattr(failing_with_prior, "calls", 0) + 1
    if failing_with_prior.calls % 2 == 0:
        raise RuntimeError("the solver diverged")
    return theta


def test_simulate_from_prior_named_outputs_fit_as_they_are():
    def simulator(theta, rng=None):
        return {"a": theta + 0.1 * rng.standard_normal(theta.shape), "b": theta[:, :1]}

    prior = [("uniform", -1.0, 1.0), ("uniform", -1.0, 1.0)]
    theta, x = simulate_from_prior(simulator, prior, 200, random_state=0)
    assert x["a"].shape == (200, 2) and x["b"].shape == (200, 1)
    est = FlowPosteriorEstimator(prior=prior, random_state=0, **TINY).fit(theta, x)
    assert est.sample({"a": [0.0, 0.0], "b": [0.0]}, 5).shape == (5, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nan_policy": "ignore"}, r"nan_policy must be one of 'drop', 'raise'; got 'ignore'"),
        ({"n_simulations": 0}, r"n_simulations must be a positive integer, got 0"),
        ({"prior": ("uniform", 0.0, 1.0)}, r"prior must be a list of specs"),
        ({"on_error": "skip"}, r"on_error must be 'raise' or 'drop', got 'skip'"),
    ],
)
def test_simulate_from_prior_bad_arguments_raise(kwargs, match):
    arguments = {"prior": PRIOR, "n_simulations": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        simulate_from_prior(doubled, **arguments)


# --------------------------------------------------------------------------- one pool a run


class CountingThreads(ThreadingBackend):
    """joblib's threading backend, counting the pools it starts."""

    starts = 0

    def configure(self, *args, **kwargs):
        type(self).starts += 1
        return super().configure(*args, **kwargs)


joblib.register_parallel_backend("counting_threads", CountingThreads)


def test_a_sequential_run_starts_one_pool_for_all_its_rounds():
    estimator = FlowPosteriorEstimator(prior=[("uniform", -1.0, 1.0)] * 2, random_state=0, **TINY)
    loop = SequentialInference(
        estimator,
        noisy_rng,
        strategy="standard",
        min_training_samples=100,
        resample_batch_size=50,
        resample_interval=1,
        random_state=0,
    )
    CountingThreads.starts = 0
    with joblib.parallel_backend("counting_threads", n_jobs=2):
        loop.run(np.zeros(2), n_simulations=200)
    assert len(loop.history_) == 3  # and four simulation calls, the pilot included
    assert CountingThreads.starts == 1
    # each simulate call of its own starts a pool
    CountingThreads.starts = 0
    with joblib.parallel_backend("counting_threads", n_jobs=2):
        simulate(noisy_rng, THETA, random_state=0)
        simulate(noisy_rng, THETA, random_state=1)
    assert CountingThreads.starts == 2
