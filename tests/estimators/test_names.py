"""Parameter names on samples (``as_frame``) and column names of theta and x in every method."""

import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from skfalcon import FlowPosteriorEstimator
from tests._tiny import TINY

PRIOR = [("uniform", -1.0, 1.0), ("normal", 0.0, 1.0), ("uniform", 0.0, 2.0)]
THETA_NAMES = ["mass", "spin", "distance"]
X_NAMES = ["x_a", "x_b", "x_c", "x_d"]
REORDERED = "reorder or rename the columns"


def _simulate(n, seed=0):
    rng = np.random.default_rng(seed)
    theta = np.c_[rng.uniform(-1, 1, n), rng.normal(size=n), rng.uniform(0, 2, n)]
    x = np.c_[theta, theta[:, 0] * theta[:, 2]] + 0.1 * rng.normal(size=(n, 4))
    return theta, x


def _fit(theta, x, **params):
    est = FlowPosteriorEstimator(prior=PRIOR, random_state=0, **{**TINY, **params})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of 3-epoch models
        return est.fit(theta, x)


@pytest.fixture(scope="module")
def arrays():
    return _simulate(300)


@pytest.fixture(scope="module")
def frames(arrays):
    theta, x = arrays
    return pd.DataFrame(theta, columns=THETA_NAMES), pd.DataFrame(x, columns=X_NAMES)


@pytest.fixture(scope="module")
def named(frames):
    return _fit(*frames)


@pytest.fixture(scope="module")
def unnamed(arrays):
    return _fit(*arrays, marginalize=1)


def test_as_frame_for_one_observation_names_the_columns(named, frames):
    _, x = frames
    samples = named.sample(x.iloc[0], 50, random_state=0, as_frame=True)
    assert isinstance(samples, pd.DataFrame)
    assert list(samples.columns) == THETA_NAMES
    assert samples.index.name == "draw" and len(samples) == 50
    np.testing.assert_array_equal(samples.to_numpy(), named.sample(x.iloc[0], 50, random_state=0))


def test_as_frame_for_several_observations_has_an_observation_draw_index(named, frames):
    _, x = frames
    batch = x.iloc[[5, 9, 2]]
    samples, ess = named.sample(batch, 20, random_state=0, as_frame=True, return_ess=True)
    assert samples.index.names == ["observation", "draw"]
    assert list(samples.index.get_level_values("observation").unique()) == [5, 9, 2]
    expected = named.sample(batch, 20, random_state=0)
    np.testing.assert_array_equal(samples.loc[9].to_numpy(), expected[1])
    assert samples.shape == (60, 3) and ess.shape == (3,)
    # Arrays are indexed 0..m-1.
    with pytest.warns(UserWarning, match="x has no column names"):
        from_array = named.sample(batch.to_numpy(), 20, random_state=0, as_frame=True)
    assert list(from_array.index.get_level_values("observation").unique()) == [0, 1, 2]
    np.testing.assert_array_equal(from_array.to_numpy(), samples.to_numpy())


def test_default_names_follow_the_columns_of_theta_and_skip_marginalized_ones(unnamed, arrays):
    _, x = arrays
    samples = unnamed.sample(x[0], 10, random_state=0, as_frame=True)
    assert list(samples.columns) == ["theta0", "theta2"]


def test_marginalized_names_are_left_out(frames):
    est = _fit(*frames, marginalize=[1])
    samples = est.sample(frames[1].iloc[0], 10, random_state=0, as_frame=True)
    assert list(samples.columns) == ["mass", "distance"]


def test_as_frame_must_be_a_bool_and_needs_pandas(named, arrays, monkeypatch):
    _, x = arrays
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # x without column names
        with pytest.raises(ValueError, match=r"as_frame must be True or False, got 'yes'"):
            named.sample(x[0], 5, as_frame="yes")
        monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
        with pytest.raises(ImportError, match=r"as_frame=True needs pandas.*pip install pandas"):
            named.sample(x[0], 5, as_frame=True)


def test_dataframes_in_fit_order_give_the_answers_of_arrays(named, frames, arrays):
    theta_frame, x_frame = frames
    theta, x = arrays
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arrays without the column names seen at fit
        np.testing.assert_array_equal(
            named.sample(x_frame.iloc[:2], 5, random_state=0),
            named.sample(x[:2], 5, random_state=0),
        )
        np.testing.assert_array_equal(
            named.log_prob(theta_frame.iloc[:4], x_frame.iloc[:4]),
            named.log_prob(theta[:4], x[:4]),
        )
        assert named.score(theta_frame.iloc[:4], x_frame.iloc[:4]) == named.score(theta[:4], x[:4])


def test_reordered_columns_are_an_error_in_every_method(named, frames):
    theta, x = frames
    x_swapped = x[X_NAMES[::-1]]
    theta_swapped = theta[THETA_NAMES[::-1]]
    calls = {
        "sample": lambda: named.sample(x_swapped.iloc[0], 5),
        "sample (batch)": lambda: named.sample(x_swapped.iloc[:3], 5),
        "log_prob x": lambda: named.log_prob(theta.iloc[:3], x_swapped.iloc[:3]),
        "log_prob theta": lambda: named.log_prob(theta_swapped.iloc[:3], x.iloc[:3]),
        "score x": lambda: named.score(theta.iloc[:3], x_swapped.iloc[:3]),
        "log_normalizer": lambda: named.log_normalizer(x_swapped.iloc[:2]),
        "sample_proposal": lambda: named.sample_proposal(x_swapped.iloc[0], 5),
        "partial_fit x": lambda: named.partial_fit(theta, x_swapped),
    }
    for method, call in calls.items():
        with pytest.raises(ValueError, match=REORDERED) as error:
            call()
        assert "x_d" in str(error.value) or "distance" in str(error.value), method
    # theta of score and partial_fit goes through scikit-learn's own check of names.
    for call in (
        lambda: named.score(theta_swapped.iloc[:3], x.iloc[:3]),
        lambda: named.partial_fit(theta_swapped, x),
    ):
        with pytest.raises(ValueError, match=r"(?s)theta \(X\).*Feature names must be in the same"):
            call()


def test_reordered_x_with_a_preprocessor_is_an_error_before_it_runs(frames):
    from sklearn.compose import ColumnTransformer

    theta, x = frames
    selector = ColumnTransformer([("pick", "passthrough", ["x_b", "x_a"])])
    est = _fit(theta, x, x_preprocessor=selector)
    with pytest.raises(ValueError, match=REORDERED):
        est.sample(x[X_NAMES[::-1]].iloc[0], 5)
    # In fit order, the transformer reads the columns it was given by name.
    assert est.sample(x.iloc[0], 5, random_state=0, as_frame=True).shape == (5, 3)
