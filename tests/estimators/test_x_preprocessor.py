"""x_preprocessor: a scikit-learn transformer fitted on the training x, applied to every x."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import FunctionTransformer, StandardScaler

import skfalcon
from skfalcon import FlowPosteriorEstimator
from tests._tiny import TINY

PRIOR = [("uniform", -1.0, 1.0), ("uniform", -1.0, 1.0)]


class Spy(TransformerMixin, BaseEstimator):
    """Scales by 2 and records what it was fitted on and every transform call."""

    def fit(self, X, y=None):
        self.fitted_on_ = np.array(X, dtype=float, copy=True)
        self.transformed_ = []
        return self

    def transform(self, X):
        self.transformed_.append(np.array(X, dtype=float, copy=True))
        return 2.0 * np.asarray(X, dtype=float)


def _simulate(n, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-1, 1, (n, 2))
    signal = np.c_[theta, theta[:, :1] * theta[:, 1:], theta**2]
    x = np.exp(signal + 0.1 * rng.normal(size=signal.shape))  # positive: log1p is defined
    return theta, x


@pytest.fixture(scope="module")
def data():
    return _simulate(300)


def _estimator(**params):
    return FlowPosteriorEstimator(prior=PRIOR, random_state=0, **{**TINY, **params})


def _quiet_fit(est, theta, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of 3-epoch models
        return est.fit(theta, x)


def test_fitted_on_the_training_x_after_the_nan_policy_only(data):
    theta, x = data
    x = x.copy()
    x[[3, 7]] = np.nan
    template = Spy()
    est = _quiet_fit(_estimator(x_preprocessor=template), theta, x)
    kept = np.isfinite(x).all(axis=1)
    np.testing.assert_array_equal(est.x_preprocessor_.fitted_on_, x[kept])
    assert est.x_preprocessor_ is not template and not hasattr(template, "fitted_on_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # observations far from the training ones
        est.sample(x[0] + 5.0, 10, random_state=0)
        est.score(theta[:20], x[kept][:20] * 3.0)
    np.testing.assert_array_equal(est.x_preprocessor_.fitted_on_, x[kept])
    # The networks see the transformed rows: their statistics are those of 2 x.
    assert est.x_shift_ == pytest.approx(2.0 * x[kept].mean(axis=0), rel=0.2)


def test_applied_once_in_every_method_that_takes_x(data):
    theta, x = data
    est = _quiet_fit(_estimator(x_preprocessor=Spy()), theta, x)
    spy = est.x_preprocessor_
    assert len(spy.transformed_) == 1  # the training rows
    calls = [
        (lambda: est.sample(x[0], 5, random_state=0), x[:1]),
        (lambda: est.sample(x[:3], 5, random_state=0), x[:3]),
        (lambda: est.log_prob(theta[:4], x[:4]), x[:4]),
        (lambda: est.score(theta[:4], x[:4]), x[:4]),
        (lambda: est.sample_proposal(x[1], 5, random_state=0), x[1:2]),
        (lambda: est.log_normalizer(x[:2]), x[:2]),
    ]
    for count, (call, given) in enumerate(calls, start=2):
        call()
        assert len(spy.transformed_) == count
        np.testing.assert_array_equal(spy.transformed_[-1], given)


def test_partial_fit_fits_it_on_the_first_round_and_keeps_it(data):
    theta, x = data
    est = _estimator(x_preprocessor=Spy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.partial_fit(theta[:150], x[:150])
        first = est.x_preprocessor_
        est.partial_fit(theta[150:], x[150:])
    assert est.x_preprocessor_ is first
    np.testing.assert_array_equal(first.fitted_on_, x[:150])
    np.testing.assert_array_equal(first.transformed_[-1], x[150:])


def test_nested_parameters_clone_and_set_params():
    est = _estimator(x_preprocessor=PCA(3))
    assert est.get_params()["x_preprocessor__n_components"] == 3
    twin = clone(est).set_params(x_preprocessor__n_components=2)
    assert twin.x_preprocessor.n_components == 2
    assert est.x_preprocessor.n_components == 3  # the clone owns its transformer


def test_grid_search_over_the_preprocessors_parameter(data):
    theta, x = data
    search = GridSearchCV(
        _estimator(x_preprocessor=PCA()),
        param_grid={"x_preprocessor__n_components": [2, 3]},
        cv=2,
    )
    _quiet_fit(search, theta, x)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.x_preprocessor_.n_components_ in (2, 3)
    assert search.best_estimator_.x_shift_.shape == (
        search.best_estimator_.x_preprocessor_.n_components_,
    )


def test_function_transformer_matches_transforming_x_by_hand(data):
    theta, x = data
    with_preprocessor = _quiet_fit(
        _estimator(x_preprocessor=FunctionTransformer(np.log1p)), theta, x
    )
    by_hand = _quiet_fit(_estimator(), theta, np.log1p(x))
    np.testing.assert_array_equal(
        with_preprocessor.sample(x[:2], 20, random_state=1),
        by_hand.sample(np.log1p(x[:2]), 20, random_state=1),
    )
    np.testing.assert_array_equal(
        with_preprocessor.log_prob(theta[:5], x[:5]), by_hand.log_prob(theta[:5], np.log1p(x[:5]))
    )


def test_column_transformer_selects_dataframe_columns_by_name(data):
    theta, x = data
    frame = pd.DataFrame(x, columns=["a", "b", "ab", "a2", "b2"])
    selector = ColumnTransformer([("scaled", StandardScaler(), ["b", "a"])], remainder="drop")
    est = _quiet_fit(_estimator(x_preprocessor=selector), theta, frame)
    assert list(est.x_preprocessor_.feature_names_in_) == list(frame.columns)
    scaled = StandardScaler().fit_transform(x[:, [1, 0]])
    by_hand = _quiet_fit(_estimator(), theta, scaled)
    np.testing.assert_allclose(
        est.sample(frame.iloc[0], 10, random_state=2),
        by_hand.sample(scaled[0], 10, random_state=2),
        rtol=1e-6,
    )
    assert est.sample(frame.iloc[:3], 4, random_state=0).shape == (3, 4, 2)


def test_sparse_output_is_a_clear_error(data):
    theta, x = data
    to_sparse = FunctionTransformer(sparse.csr_matrix)
    with pytest.raises(ValueError, match=r"returned a sparse matrix.*dense"):
        _quiet_fit(_estimator(x_preprocessor=to_sparse), theta, x)


def test_non_finite_or_misshapen_output_is_a_clear_error(data):
    theta, x = data
    with (
        np.errstate(invalid="ignore"),
        pytest.raises(ValueError, match=r"x_preprocessor=.*into NaN or infinity .*first at row"),
    ):
        _quiet_fit(_estimator(x_preprocessor=FunctionTransformer(np.log)), theta, x - 1.0)
    est = _quiet_fit(_estimator(x_preprocessor=FunctionTransformer(np.log)), theta, x)
    with np.errstate(invalid="ignore"), pytest.raises(ValueError, match=r"of x into NaN"):
        est.sample(-x[0], 5)
    flatten = FunctionTransformer(np.ravel)
    with pytest.raises(ValueError, match=r"returned shape \(1500,\) for 300 observation"):
        _quiet_fit(_estimator(x_preprocessor=flatten), theta, x)


@pytest.mark.parametrize(
    "value, reason",
    [
        ("pca", "expected None or a scikit-learn transformer"),
        (PCA, "expected a transformer instance, got the class itself; pass PCA()"),
        (np.log1p, "expected None or a scikit-learn transformer"),
    ],
)
def test_bad_values_are_refused_by_name(data, value, reason):
    theta, x = data
    with pytest.raises(ValueError, match=rf"x_preprocessor=.* \({re.escape(reason)}"):
        _estimator(x_preprocessor=value).fit(theta, x)


def test_shaped_embedding_needs_a_preprocessor_that_keeps_every_feature():
    rng = np.random.default_rng(0)
    theta = rng.uniform(-1, 1, (200, 2))
    x = theta[:, :, None] * np.linspace(0, 1, 8) + 0.1 * rng.normal(size=(200, 2, 8))
    est = _estimator(embedding="cnn1d", x_preprocessor=PCA(3))
    with pytest.raises(ValueError, match=r"into 3 features, but the embedding \('cnn1d'\) reads"):
        _quiet_fit(est, theta, x)
    kept = _quiet_fit(est.set_params(x_preprocessor=FunctionTransformer(np.tanh)), theta, x)
    assert kept.sample(x[0], 5, random_state=0).shape == (5, 2)


def test_safe_format_refuses_it_and_joblib_round_trips(data, tmp_path):
    theta, x = data
    est = _quiet_fit(_estimator(x_preprocessor=PCA(3)), theta, x)
    with pytest.raises(ValueError, match=r"x_preprocessor=PCA\(n_components=3\).*format='joblib'"):
        skfalcon.save(est, tmp_path / "model.skfalcon")
    assert not (tmp_path / "model.skfalcon").exists()
    loaded = skfalcon.load(skfalcon.save(est, tmp_path / "model.joblib"))
    np.testing.assert_array_equal(
        loaded.sample(x[:2], 10, random_state=3), est.sample(x[:2], 10, random_state=3)
    )
    assert loaded.get_params()["x_preprocessor__n_components"] == 3
