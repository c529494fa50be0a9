"""skfalcon.simulation.simulate on its own: chunks, seeds, faults."""

import functools
import time
import warnings

import joblib
import numpy as np
import pytest

from skfalcon.datasets import TwoMoons
from skfalcon.simulation import SimulatorError, seed_keyword, simulate

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
