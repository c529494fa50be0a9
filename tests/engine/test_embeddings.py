"""Embeddings: presets, user modules, dict and multi-dimensional observations, normalisation."""

import copy
import functools
import pickle
import re
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

import skfalcon
from skfalcon import FlowPosteriorEstimator
from skfalcon.datasets import TwoMoons
from skfalcon.engine import (
    CNN1dEmbedding,
    DeepSetEmbedding,
    LinearEmbedding,
    MultiInputEmbedding,
    RunningNorm,
    SplitInputs,
    build_embedding,
)
from tests._tiny import TINY

SMALL = dict(embedding_features=6, embedding_hidden_features=(12,))
PRIOR = [("uniform", -1.0, 1.0)] * 2


# ------------------------------------------------------------------ modules for the tests


class PairSum(nn.Module):
    """A user module for (n, 2, 3) observations: a linear map of the flattened input."""

    def __init__(self, out_features: int = 4):
        super().__init__()
        self.linear = nn.Linear(6, out_features)

    def forward(self, x):
        return self.linear(x.flatten(1))


class DictHead(nn.Module):
    """A user module taking the whole dict of inputs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(8, 4)

    def forward(self, x):
        return torch.tanh(self.a(x["a"]) + self.b(x["b"].flatten(1)))


class SumCombiner(nn.Module):
    """Combines a dict of summaries by a learned weighted sum."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))

    def forward(self, summaries):
        return self.weight[0] * summaries["a"] + self.weight[1] * summaries["b"]


def linear_factory(shape, out_features=5):
    """A factory: called with the observation shape."""
    return nn.Sequential(nn.Flatten(1), nn.Linear(int(np.prod(shape)), out_features))


class SnapshotEmbedding(nn.Module):
    """Keeps a copy of its weights at every validation pass (eval mode, no grad, n > 2)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 4)
        self.snapshots = []

    def forward(self, x):
        if not self.training and not torch.is_grad_enabled() and x.shape[0] > 2:
            self.snapshots.append(self.linear.weight.detach().clone())
        return self.linear(x)


class RowRecorder(nn.Module):
    """Records column 0 of the (standardized) x it sees in training mode: the row ids."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.training_rows = set()

    def forward(self, x):
        if self.training:
            self.training_rows.update(x[:, 0].tolist())
        return self.linear(x)


# ------------------------------------------------------------------ engine


ENGINE_CASES = {
    "mlp-vector": ("mlp", (7,)),
    "mlp-matrix": ("mlp", (2, 3)),
    "linear-matrix": ("linear", (2, 3)),
    "cnn1d-series": ("cnn1d", (40,)),
    "cnn1d-channels": ("cnn1d", (2, 33)),
    "deepset-scalars": ("deepset", (9,)),
    "deepset-vectors": ("deepset", (9, 2)),
    "preset-per-input": ("mlp", {"a": (3,), "b": (2, 4)}),
    "dict-of-presets": ({"a": "deepset", "b": "cnn1d"}, {"a": (5, 2), "b": (16,), "c": (1,)}),
    "dict-with-combiner": (
        MultiInputEmbedding(
            {"a": nn.Linear(3, 4), "b": nn.Sequential(nn.Flatten(1), nn.Linear(8, 4))},
            combiner=SumCombiner(),
        ),
        {"a": (3,), "b": (2, 4)},
    ),
    "module": (PairSum(), (2, 3)),
    "dict-module": (DictHead(), {"a": (3,), "b": (2, 4)}),
    "factory": (functools.partial(linear_factory, out_features=3), (4, 2)),
}
OPTIONS = dict(out_features=6, hidden_features=(12,), channels=(4, 5), kernel_size=3)


@pytest.mark.parametrize("case", list(ENGINE_CASES))
def test_embeddings_give_summaries_and_gradients_reach_every_parameter(case):
    embedding, shape = ENGINE_CASES[case]
    module, context = build_embedding(embedding, shape, **OPTIONS)
    size = (
        sum(int(np.prod(s)) for s in shape.values())
        if isinstance(shape, dict)
        else int(np.prod(shape))
    )
    torch.manual_seed(0)
    x = torch.randn(5, size)
    summary = module(x)
    assert summary.shape == (5, context)
    if isinstance(embedding, str):
        per_input = len(shape) if isinstance(shape, dict) else 1
        assert context == OPTIONS["out_features"] * per_input
    # Away from 0, so that a preset starting at a zero summary gets a gradient too.
    (summary - 1.0).square().sum().backward()
    parameters = dict(module.named_parameters())
    assert parameters
    for name, parameter in parameters.items():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    if isinstance(embedding, nn.Module):
        assert all(p.grad is None for p in embedding.parameters())  # a copy was trained


def test_deep_set_is_invariant_to_the_order_of_trials():
    embedding = DeepSetEmbedding((7, 2), out_features=3, hidden_features=(8, 8)).eval()
    x = torch.randn(4, 7, 2)
    permuted = x[:, torch.randperm(7)]
    torch.testing.assert_close(embedding(x), embedding(permuted))


def test_split_inputs_restores_named_shapes():
    split = SplitInputs({"a": (2, 3), "b": (1,)})
    flat = torch.arange(14.0).reshape(2, 7)
    parts = split(flat)
    assert parts["a"].shape == (2, 2, 3) and parts["b"].shape == (2, 1)
    torch.testing.assert_close(parts["a"].flatten(1), flat[:, :6])


def test_linear_preset_starts_at_zero_and_leaves_noise_features_near_zero(tiny):
    module = LinearEmbedding((5,), out_features=3)
    assert torch.count_nonzero(module(torch.randn(8, 5))) == 0  # a constant summary at first
    # x: theta (2 informative features) next to 20 pure-noise features.
    rng = np.random.RandomState(0)
    theta = rng.uniform(-1, 1, (1000, 2))
    x = np.hstack([theta + 0.1 * rng.randn(1000, 2), rng.randn(1000, 20)])
    params = {**tiny, "max_epochs": 8, "early_stop_patience": 8}
    est = FlowPosteriorEstimator(prior=PRIOR, embedding="linear", random_state=0, **params)
    est.fit(theta, x)
    (linear,) = [m for m in est.network_.modules() if isinstance(m, LinearEmbedding)]
    weight = linear.linear.weight.detach().abs()
    # The informative columns earned weights; the noise columns stayed far smaller, and
    # far below the mean |w| of 1 / (2 sqrt(22)) ~ 0.107 that a random start gives them.
    assert weight[:, :2].mean() > 3 * weight[:, 2:].mean()
    assert weight[:, 2:].mean() < 0.04


def test_embedding_errors_say_what_is_expected():
    with pytest.raises(ValueError, match=r"shape \(n, n_summaries\); for n=2 it returned \(2,\)"):
        build_embedding(nn.Sequential(nn.Flatten(0)), (1,))
    with pytest.raises(TypeError, match="returned int, not a torch.nn.Module"):
        build_embedding(len, (3,))
    with pytest.raises(ValueError, match=r"needs dict observations.*shape \(3,\)"):
        build_embedding({"a": "mlp"}, (3,))
    with pytest.raises(ValueError, match=r"entries \['z'\] that are not observation names"):
        build_embedding({"z": "mlp"}, {"a": (3,)})
    with pytest.raises(ValueError, match=r"takes observations of shape \(length,\)"):
        build_embedding("cnn1d", (2, 3, 4))
    with pytest.raises(ValueError, match=r"failed on a batch of 2 observations of shape \(3,\)"):
        build_embedding(nn.Linear(4, 2), (3,))


@pytest.mark.parametrize("value", [0.1, 1e3, 3.3e7])
@pytest.mark.parametrize("use_log_update", [False, True])
def test_running_norm_keeps_constant_features_finite(value, use_log_update):
    norm = RunningNorm(3, momentum=0.1, use_log_update=use_log_update)
    x = torch.randn(64, 3)
    x[:, 1] = value
    for _ in range(3):
        norm(x)
    norm.eval()
    z = norm(x)
    assert torch.isfinite(z).all() and torch.isfinite(norm.log_abs_det_jacobian())
    assert z[:, 1].abs().max() < 1e-3  # centred, not blown up
    shifted = x.clone()
    shifted[:, 1] += 1.0
    assert torch.isfinite(norm(shifted)).all()


def test_running_norm_is_public():
    assert skfalcon.RunningNorm is RunningNorm
    assert "RunningNorm" in skfalcon.__all__


# ------------------------------------------------------------------ estimator: data shapes


def _simulate(n, seed=0):
    """theta on [-1, 1]^2 and dict observations: a vector, a noisy series, a scalar."""
    rng = np.random.RandomState(seed)
    theta = rng.uniform(-1, 1, (n, 2))
    grid = np.linspace(-1, 1, 16)
    series = np.exp(-((grid - theta[:, :1]) ** 2) / 0.1) + 0.1 * rng.randn(n, 16)
    x = {
        "a": theta + 0.1 * rng.randn(n, 2),
        "b": series,
        "c": theta[:, 1] + 0.1 * rng.randn(n),
    }
    return theta, x


def _rows(x, rows):
    return {k: v[rows] for k, v in x.items()}


@pytest.fixture(scope="module")
def dict_data():
    return _simulate(300)


@pytest.fixture(scope="module")
def fitted_dict(dict_data):
    theta, x = dict_data
    embedding = {"a": "mlp", "b": "cnn1d"}
    # marginal="flow": log_prob then needs log Z(x), whose cache is keyed by observation.
    return FlowPosteriorEstimator(
        prior=PRIOR, embedding=embedding, marginal="flow", random_state=0, **SMALL, **TINY
    ).fit(theta, x)


def test_dict_observations_end_to_end(fitted_dict, dict_data):
    theta, x = dict_data
    est = fitted_dict
    assert est.observation_shape_ == {"a": (2,), "b": (16,), "c": (1,)}
    assert est.n_observation_features_ == 19
    one = {"a": x["a"][0], "b": x["b"][0], "c": float(x["c"][0])}
    assert est.sample(one, 20).shape == (20, 2)
    assert est.sample(_rows(x, slice(0, 3)), 20).shape == (3, 20, 2)
    assert est.sample_proposal(one, 7).shape == (7, 2)
    log_p = est.log_prob(theta[:5], one)
    assert log_p.shape == (5,) and np.isfinite(log_p).all()
    paired = est.log_prob(theta[:5], _rows(x, slice(0, 5)))
    assert paired.shape == (5,) and paired[0] == pytest.approx(log_p[0])
    assert np.isfinite(est.score(theta[:30], _rows(x, slice(0, 30))))
    # The log Z cache is keyed by the flat observation, whatever its form.
    assert len(est._log_z.values) >= 5
    # Key order does not matter at inference.
    reordered = {"c": one["c"], "b": one["b"], "a": one["a"]}
    np.testing.assert_array_equal(
        est.sample(reordered, 10, random_state=1), est.sample(one, 10, random_state=1)
    )


def test_structured_arrays_are_dicts_that_cross_validation_can_split(dict_data):
    theta, x = dict_data
    records = np.rec.fromarrays(
        list(x.values()), dtype=[(k, float, v.shape[1:]) for k, v in x.items()]
    )
    params = dict(prior=PRIOR, embedding="mlp", random_state=0, **SMALL, **TINY)
    from_dict = FlowPosteriorEstimator(**params).fit(theta, x)
    from_records = FlowPosteriorEstimator(**params).fit(theta, records)
    np.testing.assert_array_equal(
        from_dict.sample(records[0], 16, random_state=2),
        from_records.sample(_rows(x, 0), 16, random_state=2),
    )
    grid = GridSearchCV(FlowPosteriorEstimator(**params), {"embedding_features": [4, 6]}, cv=2)
    grid.fit(theta, records)
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    assert grid.best_estimator_.sample(records[0], 5).shape == (5, 2)


def test_dict_observation_errors_name_the_input(fitted_dict, dict_data):
    theta, x = dict_data
    est = fitted_dict
    one = _rows(x, 0)
    with pytest.raises(ValueError, match=r"missing \['c'\]"):
        est.sample({"a": one["a"], "b": one["b"]}, 5)
    with pytest.raises(ValueError, match=r"unexpected \['d'\]"):
        est.sample({**one, "d": 1.0}, 5)
    with pytest.raises(ValueError, match=r"x\['b'\] has shape \(15,\); expected \(16,\)"):
        est.sample({**one, "b": one["b"][:15]}, 5)
    with pytest.raises(ValueError, match=r"disagree on the number of observations"):
        est.sample({**one, "a": x["a"][:3]}, 5)
    with pytest.raises(ValueError, match=r"fitted with dict observations .* got ndarray"):
        est.sample(np.zeros(19), 5)
    with pytest.raises(ValueError, match=r"x\['a'\] has 299 rows but theta has 300"):
        FlowPosteriorEstimator(prior=PRIOR, **TINY).fit(theta, {**x, "a": x["a"][:-1]})
    with pytest.raises(ValueError, match="NaN"):
        est.sample({**one, "c": np.nan}, 5)


def test_nan_rows_of_any_input_are_dropped(dict_data, tiny):
    theta, x = dict_data
    x = {k: v.copy() for k, v in x.items()}
    x["b"][3, 5] = np.nan
    est = FlowPosteriorEstimator(prior=PRIOR, random_state=0, **tiny)
    with pytest.warns(UserWarning, match="Dropped 1 of 300 simulations"):
        est.fit(theta, x)
    assert est.n_dropped_simulations_ == 1


@pytest.mark.parametrize("embedding", [None, "mlp", "linear", "deepset", "cnn1d"])
def test_multidimensional_array_observations(embedding, tiny):
    rng = np.random.RandomState(0)
    theta = rng.uniform(-1, 1, (200, 2))
    x = theta[:, None, :] + 0.3 * rng.randn(200, 8, 2)  # 8 i.i.d. trials of a 2-vector
    est = FlowPosteriorEstimator(prior=PRIOR, embedding=embedding, random_state=0, **SMALL, **tiny)
    x_in = x.transpose(0, 2, 1) if embedding == "cnn1d" else x  # (channels, length)
    est.fit(theta, x_in)
    assert est.observation_shape_ == x_in.shape[1:]
    assert est.sample(x_in[0], 10).shape == (10, 2)
    assert est.sample(x_in[:4], 10).shape == (4, 10, 2)
    assert np.isfinite(est.score(theta[:20], x_in[:20]))
    with pytest.raises(
        ValueError, match=r"has shape \(16,\), but FlowPosteriorEstimator was fitted"
    ):
        est.sample(x_in[0].ravel(), 10)
    swapped = np.swapaxes(x_in, 1, 2)
    message = (
        f"x has observations of shape {swapped.shape[1:]}, but FlowPosteriorEstimator was "
        f"fitted with observations of shape {x_in.shape[1:]}."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        est.partial_fit(theta, swapped)
    if embedding is None:
        assert isinstance(est.network_.embedding, RunningNorm)  # flattened, as before


def test_two_dimensional_default_path_is_unchanged(fitted_moons):
    # Same module and state-dict keys as before embeddings existed, so old pickles load.
    assert isinstance(fitted_moons.network_.embedding, RunningNorm)
    assert fitted_moons.observation_shape_ == (2,)
    assert fitted_moons.network_.spec.embedding is None


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("cnn", r"embedding='cnn' \(expected None, one of \['cnn1d', 'deepset', 'linear', 'mlp'\]"),
        ({}, r"embedding=\{\} \(expected None"),
        ({"a": 3}, r"embedding=\{'a': 3\} \(expected None"),
        (3, r"embedding=3 \(expected None"),
    ],
)
def test_bad_embeddings_name_the_value_and_what_is_allowed(moons_data, value, match):
    _, theta, x = moons_data
    with pytest.raises(ValueError, match=match):
        FlowPosteriorEstimator(embedding=value).fit(theta, x)


def test_bad_preset_sizes_are_refused(moons_data):
    _, theta, x = moons_data
    with pytest.raises(ValueError, match=r"embedding_features=0 \(input should be greater"):
        FlowPosteriorEstimator(embedding="mlp", embedding_features=0).fit(theta, x)
    with pytest.raises(ValueError, match=r"embedding_hidden_features=\(\)"):
        FlowPosteriorEstimator(embedding="mlp", embedding_hidden_features=()).fit(theta, x)


def test_a_factory_sizes_a_preset_beyond_the_shared_knobs(tiny):
    # Convolution sizes are not hyperparameters: a partial of the preset class sets them.
    factory = functools.partial(CNN1dEmbedding, out_features=5, channels=(3,), kernel_size=3)
    rng = np.random.default_rng(0)
    theta = rng.uniform(-1, 1, size=(200, 2))
    x = theta[:, :1] + 0.1 * rng.normal(size=(200, 20))
    est = FlowPosteriorEstimator(prior=PRIOR, embedding=factory, random_state=0, **tiny)
    est.fit(theta, x)
    conv = [m for m in est.network_.embedding.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size) for c in conv] == [(3, (3,))]
    assert est.sample(x[0], 4).shape == (4, 2)


@pytest.mark.slow
@parametrize_with_checks(
    [
        FlowPosteriorEstimator(
            **{**TINY, "max_epochs": 2, "hidden_features": (8,)},
            embedding="mlp",
            embedding_features=4,
            embedding_hidden_features=(8,),
            random_state=0,
        )
    ]
)
def test_sklearn_estimator_checks_with_a_learned_embedding(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # low-ESS warnings of 2-epoch models
        check(estimator)


# ------------------------------------------------------------------ modules: clone, pickle, device


def _pair_data(n=200, seed=0):
    rng = np.random.RandomState(seed)
    theta = rng.uniform(-1, 1, (n, 2))
    x = np.stack([theta, theta**2], axis=1)[:, :, [0, 1, 0]] + 0.1 * rng.randn(n, 2, 3)
    return theta, x


def test_clone_gives_an_unfitted_copy_that_shares_no_weights(tiny):
    theta, x = _pair_data()
    module = PairSum()
    before = copy.deepcopy(module.state_dict())
    est = FlowPosteriorEstimator(prior=PRIOR, embedding=module, random_state=0, **tiny)
    twin = clone(est)
    assert twin.embedding is not module
    assert twin.embedding.linear.weight.data_ptr() != module.linear.weight.data_ptr()
    torch.testing.assert_close(twin.embedding.state_dict(), module.state_dict())
    est.fit(theta, x)
    # fit trains a copy: the module passed in, and so every clone, stays untrained.
    torch.testing.assert_close(module.state_dict(), before)
    trained = est.network_.embedding[1]
    assert trained is not module
    assert not torch.equal(trained.linear.weight, module.linear.weight)
    assert not hasattr(clone(est), "network_")
    twin.fit(theta, x)
    np.testing.assert_array_equal(
        twin.sample(x[0], 16, random_state=3), est.sample(x[0], 16, random_state=3)
    )


@pytest.mark.parametrize(
    "embedding", [PairSum(), functools.partial(linear_factory, out_features=3), "mlp"]
)
def test_pickle_and_joblib_round_trips_reproduce_samples(embedding, tiny, tmp_path):
    theta, x = _pair_data()
    est = FlowPosteriorEstimator(prior=PRIOR, embedding=embedding, random_state=0, **SMALL, **tiny)
    est.fit(theta, x)
    before = est.sample(x[:2], 32, random_state=4)
    lp = est.log_prob(theta[:3], x[0])
    joblib.dump(est, tmp_path / "model.joblib")
    for loaded in (joblib.load(tmp_path / "model.joblib"), pickle.loads(pickle.dumps(est))):
        np.testing.assert_array_equal(loaded.sample(x[:2], 32, random_state=4), before)
        np.testing.assert_allclose(loaded.log_prob(theta[:3], x[0]), lp)
        assert loaded.network_.embedding is not est.network_.embedding
    state = est.__getstate__()
    assert all(isinstance(v, np.ndarray) for v in state["_network_state"]["weights"].values())


def test_embedding_lives_on_the_estimators_device(tiny):
    theta, x = _pair_data()
    est = FlowPosteriorEstimator(prior=PRIOR, embedding=PairSum(), random_state=0, **tiny)
    est.fit(theta, x)
    tensors = [*est.network_.embedding.parameters(), *est.network_.embedding.buffers()]
    assert tensors and all(t.device == est.device_ for t in tensors)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_module_is_moved_to_cuda_and_its_template_stays_on_the_cpu(tiny):
    theta, x = _pair_data()
    module = PairSum()
    est = FlowPosteriorEstimator(
        prior=PRIOR, embedding=module, random_state=0, **{**tiny, "device": "cuda"}
    ).fit(theta, x)
    assert all(p.is_cuda for p in est.network_.embedding.parameters())
    assert not module.linear.weight.is_cuda
    template = est.network_.spec.embedding["embedding"]
    assert not any(p.is_cuda for p in template.parameters())
    before = est.sample(x[0], 16, random_state=1)
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(est)).sample(x[0], 16, random_state=1), before
    )


# ------------------------------------------------------------------ training semantics


def test_best_validation_embedding_weights_are_the_ones_in_use():
    task = TwoMoons()
    theta = task.sample_prior(200, random_state=0)
    x = task.simulate(theta, random_state=1)
    torch.manual_seed(0)  # the module's initial weights: not left to the tests run before
    est = FlowPosteriorEstimator(
        prior=task.prior,
        embedding=SnapshotEmbedding(),
        random_state=0,
        **{**TINY, "max_epochs": 8, "lr": 0.05, "early_stop_patience": 20},
    ).fit(theta, x)
    snapshots = est.network_.embedding[1].snapshots
    assert len(snapshots) == est.n_iter_ == 8
    assert est.best_epoch_ < est.n_iter_ - 1  # else this test could not tell
    in_use = est.network_.embedding[1].linear.weight
    torch.testing.assert_close(in_use, snapshots[est.best_epoch_])
    assert not torch.equal(in_use, snapshots[-1])


@pytest.mark.parametrize("embedding", [None, "mlp"])
def test_normalisation_statistics_come_from_training_rows_only(embedding, tiny):
    n = 200
    rng = np.random.RandomState(0)
    theta = rng.uniform(-1, 1, (n, 2))
    # Which rows train and which validate: the split depends on random_state and n only.
    probe = np.column_stack([np.arange(n), theta + 0.1 * rng.randn(n, 2)])
    recorder = FlowPosteriorEstimator(
        prior=PRIOR, embedding=RowRecorder(), random_state=0, **tiny
    ).fit(theta, probe)
    seen = np.array(sorted(recorder.network_.embedding[1].training_rows))
    training = set(
        np.round(seen * recorder.x_scale_[0] + recorder.x_shift_[0]).astype(int).tolist()
    )
    validation = np.array(sorted(set(range(n)) - training))
    assert len(validation) == round(0.1 * n)

    x = theta + 0.1 * rng.randn(n, 2)
    x[validation] = 1e4  # extreme values in validation rows only
    est = FlowPosteriorEstimator(
        prior=PRIOR,
        embedding=embedding,
        random_state=0,
        **{**tiny, "use_best_models": False},  # the last epoch's statistics, not the initial ones
        **SMALL,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        est.fit(theta, x)
    norm = next(m for m in est.network_.embedding.modules() if isinstance(m, RunningNorm))
    assert int(norm.n_updates) > 0
    assert norm.mean.abs().max() < 1.0  # a single 1e4 row would move it by 1e2 at momentum 0.01
    assert norm.var.max() < 10.0


def test_constant_observation_features_give_finite_densities(tiny):
    theta, x = _pair_data()
    x[:, 1, 2] = 1234.5
    for embedding in (None, "mlp", PairSum()):
        est = FlowPosteriorEstimator(
            prior=PRIOR, embedding=embedding, random_state=0, **SMALL, **tiny
        ).fit(theta, x)
        summary = est.network_.embed(torch.as_tensor(x[:8].reshape(8, -1), dtype=torch.float32))
        assert torch.isfinite(summary).all()
        assert np.isfinite(est.log_prob(theta[:5], x[0])).all()
