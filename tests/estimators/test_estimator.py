"""Behaviour of FlowPosteriorEstimator: shapes, density, reproducibility, policies, errors."""

import copy
import inspect
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from skfalcon import FlowPosteriorEstimator
from skfalcon.datasets import GaussianLinear
from skfalcon.estimators import FlowPosteriorParams


def test_signature_defaults_mirror_the_params_model():
    signature = inspect.signature(FlowPosteriorEstimator.__init__).parameters
    names = [n for n in signature if n != "self"]
    assert names == list(FlowPosteriorParams.model_fields)
    for name in names:
        assert signature[name].default == FlowPosteriorParams.model_fields[name].default, name


def test_sample_and_log_prob_shapes(fitted_moons, moons_data):
    _, theta, x = moons_data
    est = fitted_moons
    assert est.sample(x[0], 50).shape == (50, 2)
    batch, ess = est.sample(x[:3], 40, return_ess=True)
    assert batch.shape == (3, 40, 2) and batch.dtype == np.float64
    assert ess.shape == (3,) and np.all(ess > 0)
    assert est.log_prob(theta[:5], x[0]).shape == (5,)
    assert est.log_prob(theta[:5], x[:5]).shape == (5,)
    assert est.log_prob(theta[0], x[0]).shape == (1,)
    assert isinstance(est.score(theta[:20], x[:20]), float)
    assert est.n_features_in_ == 2 and est.n_observation_features_ == 2
    assert est.n_iter_ == len(est.history_) <= 3


def test_fit_and_sample_are_reproducible_and_leave_global_rng_alone(moons_data, tiny):
    task, theta, x = moons_data
    state = torch.get_rng_state()
    a = FlowPosteriorEstimator(prior=task.prior, random_state=3, **tiny).fit(theta, x)
    b = FlowPosteriorEstimator(prior=task.prior, random_state=3, **tiny).fit(theta, x)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(a.sample(x[0], 100), b.sample(x[0], 100))
    np.testing.assert_array_equal(
        a.sample(x[0], 100, random_state=7), b.sample(x[0], 100, random_state=7)
    )
    assert not np.array_equal(
        a.sample(x[0], 100, random_state=7), a.sample(x[0], 100, random_state=8)
    )
    assert a.history_[-1]["train_loss"] == b.history_[-1]["train_loss"]


def test_log_prob_integrates_to_one_over_the_prior_box(fitted_moons, moons_data):
    _, _, x = moons_data
    grid = np.linspace(-1, 1, 161)
    t1, t2 = np.meshgrid(grid, grid, indexing="ij")
    density = np.exp(fitted_moons.log_prob(np.column_stack([t1.ravel(), t2.ravel()]), x[0]))
    total = integrate.trapezoid(integrate.trapezoid(density.reshape(t1.shape), grid), grid)
    assert total == pytest.approx(1.0, abs=0.05)


def test_log_prob_is_minus_inf_outside_support_and_cached(fitted_moons, moons_data):
    _, _, x = moons_data
    lp = fitted_moons.log_prob(np.array([[0.0, 0.0], [1.5, 0.0], [0.0, -1.01]]), x[1])
    assert np.isfinite(lp[0]) and np.all(lp[1:] == -np.inf)
    cached = dict(fitted_moons._log_z.values)
    fitted_moons.log_prob(np.zeros((1, 2)), x[1])
    assert fitted_moons._log_z.values == cached


def test_gaussian_linear_posterior_recovery():
    task = GaussianLinear(n_dims=2)
    theta = task.sample_prior(3000, random_state=0)
    x = task.simulate(theta, random_state=1)
    est = FlowPosteriorEstimator(
        prior=task.prior,
        hidden_features=(32, 32),
        num_transforms=2,
        max_epochs=30,
        batch_size=128,
        lr=1e-3,
        device="cpu",
        random_state=0,
    ).fit(theta, x)
    _, x_obs = task.observations(2, random_state=0)
    samples = est.sample(x_obs, 2000)
    for obs, post in zip(x_obs, samples, strict=True):
        mean, cov = task.posterior_mean_cov(obs)
        # Half a posterior std (0.22): loose for a 30-epoch fit, tight against a wrong map
        # (the prior mean is 0.57 away for the first observation).
        np.testing.assert_allclose(post.mean(0), mean, atol=0.12)
        np.testing.assert_allclose(post.std(0), np.sqrt(np.diag(cov)), rtol=0.25)


def test_prior_none_standardizes_and_samples_the_conditional_flow(tiny):
    rng = np.random.default_rng(0)
    theta = rng.normal(100.0, 10.0, size=(500, 1))
    x = theta + rng.normal(0.0, 1.0, size=(500, 1))
    est = FlowPosteriorEstimator(random_state=0, **{**tiny, "max_epochs": 10}).fit(theta, x)
    samples, ess = est.sample(np.array([100.0]), 500, return_ess=True)
    assert ess == 500.0
    assert abs(samples.mean() - 100.0) < 5.0
    assert est.prior_ is None
    np.testing.assert_allclose(est.parameter_space_.shift, theta.mean(0))
    with pytest.raises(ValueError, match="sample_proposal needs a prior"):
        est.sample_proposal(np.array([100.0]), 10)


def test_sample_proposal_gamma_one_is_the_prior(moons_data, tiny):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(prior=task.prior, gamma=1.0, random_state=0, **tiny)
    before = est.sample_proposal(x[0], 2000)  # unfitted: the prior
    assert before.shape == (2000, 2) and np.abs(before).max() <= 1
    est.fit(theta, x)
    after = est.sample_proposal(x[0], 4000)
    # Uniform on [-1, 1]: mean 0, variance 1/3
    np.testing.assert_allclose(after.mean(0), 0.0, atol=0.06)
    np.testing.assert_allclose(after.var(0), 1 / 3, atol=0.04)


def test_nan_policy_drop_counts_and_raise_refuses(moons_data, tiny):
    task, theta, x = moons_data
    x = x.copy()
    x[[3, 10]] = np.nan
    x[11, 0] = np.inf
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny)
    with pytest.warns(UserWarning, match=r"Dropped 3 of 600 simulations .*first at row 3"):
        est.fit(theta, x)
    assert est.n_dropped_simulations_ == 3
    with pytest.raises(ValueError, match=r"x holds NaN or infinity in 3 of 600 .*row 3"):
        FlowPosteriorEstimator(prior=task.prior, nan_policy="raise", **tiny).fit(theta, x)


def test_nan_theta_is_always_an_error(moons_data, tiny):
    task, theta, x = moons_data
    theta = theta.copy()
    theta[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FlowPosteriorEstimator(prior=task.prior, **tiny).fit(theta, x)


def test_theta_outside_the_prior_support_is_an_error(moons_data, tiny):
    task, theta, x = moons_data
    theta = theta.copy()
    theta[5] = [2.0, 0.0]
    with pytest.raises(ValueError, match=r"1 of 600 theta rows lie outside .*row 5"):
        FlowPosteriorEstimator(prior=task.prior, **tiny).fit(theta, x)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("lr", -1.0, r"lr=-1.0 \(input should be greater than 0\)"),
        ("net_type", "flowy", r"net_type='flowy' \(input should be 'nsf'"),
        ("batch_size", 2.5, r"batch_size=2.5 \(input should be a valid integer"),
        ("device", "gpu", r"device='gpu' \(expected 'auto', 'cpu', 'cuda' or 'cuda:N'\)"),
        ("validation_fraction", 1.0, r"validation_fraction=1.0 \(input should be less than 1"),
    ],
)
def test_bad_hyperparameters_name_the_parameter_and_value(moons_data, name, value, match):
    _, theta, x = moons_data
    with pytest.raises(ValueError, match=match):
        FlowPosteriorEstimator(**{name: value}).fit(theta, x)


def test_numpy_scalars_and_lists_are_accepted(moons_data, tiny):
    task, theta, x = moons_data
    params = {
        **tiny,
        "lr": np.float32(1e-3),
        "batch_size": np.int64(64),
        "hidden_features": [np.int64(8)],
    }
    FlowPosteriorEstimator(prior=task.prior, **params).fit(theta[:100], x[:100])


def test_wrong_observation_shapes_are_explained(fitted_moons):
    with pytest.raises(
        ValueError, match=r"x has 3 features, but FlowPosteriorEstimator was fitted with 2"
    ):
        fitted_moons.sample(np.zeros(3), 10)
    with pytest.raises(ValueError, match=r"n_samples must be a positive integer, got 0"):
        fitted_moons.sample(np.zeros(2), 0)
    with pytest.raises(ValueError, match=r"x has 2 observations but theta has 3 rows"):
        fitted_moons.log_prob(np.zeros((3, 2)), np.zeros((2, 2)))


def test_low_ess_warns_with_the_figure(fitted_moons_flow, moons_data, monkeypatch):
    from skfalcon.engine import inference

    _, _, x = moons_data
    monkeypatch.setattr(inference, "_MAX_POOL_ROUNDS", 1)  # no pool growth
    # Inference settings are read at each call, so a fitted copy samples with them.
    est = copy.deepcopy(fitted_moons_flow).set_params(num_proposals=1)
    with pytest.warns(UserWarning, match=r"Low effective sample size: .* for 500 requested"):
        est.sample(x[0], 500)


def test_the_pool_grows_to_the_requested_effective_sample_size(fitted_moons_flow, moons_data):
    _, _, x = moons_data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        theta, ess = fitted_moons_flow.sample(x[0], 500, return_ess=True)
    # The target is 4 n: one pool of num_proposals * n = 2,000 candidates cannot reach it.
    assert ess >= 4 * 500
    assert len(np.unique(theta, axis=0)) >= 0.95 * 500  # so few samples repeat


def test_exact_marginal_samples_the_conditional_flow_directly(fitted_moons, moons_data):
    _, _, x = moons_data
    theta, ess = fitted_moons.sample(x[:3], 400, random_state=0, return_ess=True)
    assert theta.shape == (3, 400, 2) and np.all(ess == 400)
    # Exact draws: no resampling, so no repeated rows.
    assert len(np.unique(theta[0], axis=0)) == 400
    with torch.no_grad():
        x_std = (x[:1] - fitted_moons.x_shift_) / fitted_moons.x_scale_
        summary = fitted_moons.network_.embed(torch.as_tensor(x_std, dtype=torch.float32))
        u = fitted_moons.network_.conditional.sample_and_log_prob((4000,), summary)[0]
    # The prior is uniform on [-1, 1] and the cube [-2, 2]: theta = u / 2.
    for column in range(2):
        pvalue = stats.ks_2samp(theta[0, :, column], u[:, 0, column].numpy() / 2).pvalue
        assert pvalue > 1e-3


def test_verbose_shows_progress(moons_data, tiny, capsys):
    task, theta, x = moons_data
    FlowPosteriorEstimator(prior=task.prior, verbose=1, **tiny).fit(theta[:200], x[:200])
    assert "epoch" in capsys.readouterr().err


def test_warm_start_continues_history(moons_data, tiny):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(prior=task.prior, warm_start=True, random_state=0, **tiny)
    est.fit(theta, x)
    first_loss = est.history_[0]["train_loss"]
    est.fit(theta, x)
    assert est.n_iter_ == len(est.history_) == 6
    # Continued from the trained weights: the first new epoch beats the very first one.
    assert est.history_[3]["train_loss"] < first_loss
    cold = FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny).fit(theta, x)
    cold.fit(theta, x)
    assert cold.n_iter_ == 3


def test_every_flow_family_fits_and_samples(moons_data, tiny):
    task, theta, x = moons_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for net_type in [
            "maf",
            "nice",
            "realnvp",
            "naf",
            "unaf",
            "ncsf",
            "sospf",
            "bpf",
            "gf",
            "gaussian",
        ]:
            est = FlowPosteriorEstimator(
                prior=task.prior, net_type=net_type, random_state=0, **{**tiny, "max_epochs": 1}
            ).fit(theta[:200], x[:200])
            assert est.sample(x[0], 20).shape == (20, 2), net_type


@pytest.mark.parametrize(
    ("options", "family", "transforms"),
    [
        ({}, "nsf", 3),
        ({"num_transforms": 2}, "nsf", 2),
        ({"net_type": "spline_coupling"}, "spline_coupling", 5),
        ({"net_type": "spline_coupling", "num_transforms": 2}, "spline_coupling", 2),
        ({"net_type": "maf"}, "maf", 3),
    ],
)
def test_num_transforms_none_is_the_family_default(tiny, options, family, transforms):
    task = GaussianLinear(n_dims=4)
    theta = task.sample_prior(200, random_state=0)
    x = task.simulate(theta, random_state=1)
    settings = {**tiny, "max_epochs": 1, "num_transforms": None, **options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **settings).fit(theta, x)
    spec = est.network_.spec
    assert (spec.net_type, spec.num_transforms) == (family, transforms)
    # The parameter stays as given: a clone resolves it again.
    assert est.get_params()["num_transforms"] == options.get("num_transforms")
    assert len(est.network_.conditional.flow.transform.transforms) == transforms


def test_partial_fit_initialises_then_continues(moons_data, tiny):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny)
    est.partial_fit(theta[:300], x[:300])
    epochs = est.n_iter_
    est.partial_fit(theta[300:], x[300:])
    assert est.n_iter_ > epochs
    assert [r["epoch"] for r in est.history_] == list(range(est.n_iter_))
    with pytest.raises(
        ValueError, match="x has 3 features, but FlowPosteriorEstimator was fitted with 2"
    ):
        est.partial_fit(theta[:10], np.zeros((10, 3)))
    with pytest.raises(ValueError, match="X has 3 features"):
        est.partial_fit(np.zeros((10, 3)), x[:10])


def test_fit_logs_a_summary(moons_data, tiny, caplog):
    task, theta, x = moons_data
    with caplog.at_level("INFO", logger="skfalcon"):
        FlowPosteriorEstimator(prior=task.prior, **{**tiny, "lr": None}).fit(theta[:200], x[:200])
    # The automatic learning rate of the batch size is the one reported.
    assert any(
        "fit: 3 epochs" in r.getMessage() and "(batches of 64 rows, lr 0.00071)" in r.getMessage()
        for r in caplog.records
    )


def test_a_failed_refit_leaves_every_fitted_attribute_as_it_was(moons_data, tiny):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny).fit(theta, x)
    before = {k: v for k, v in vars(est).items() if k.endswith("_") or k.startswith("_")}
    with pytest.raises(ValueError, match="theta has 3 columns but the prior has 2"):
        est.fit(np.column_stack([theta, theta[:, 0]]), x)
    after = {k: v for k, v in vars(est).items() if k.endswith("_") or k.startswith("_")}
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before), [
        k for k in before if after[k] is not before[k]
    ]
    assert est.sample(x[0], 3).shape == (3, 2)


def test_a_bad_training_hyperparameter_does_not_block_inference(fitted_moons, moons_data):
    _, theta, x = moons_data
    est = copy.deepcopy(fitted_moons).set_params(lr=-1.0, batch_size=0)
    np.testing.assert_array_equal(
        est.sample(x[0], 5, random_state=0), fitted_moons.sample(x[0], 5, random_state=0)
    )
    np.testing.assert_array_equal(
        est.log_prob(theta[:4], x[0]), fitted_moons.log_prob(theta[:4], x[0])
    )
    with pytest.raises(ValueError, match=r"lr=-1\.0"):
        est.fit(theta, x)


def test_partial_fit_rounds_draw_fresh_randomness_from_an_int_seed(moons_data, tiny):
    # Each round's split and training seed mix the round index into random_state.
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny)
    est.partial_fit(theta[:300], x[:300]).partial_fit(theta[300:], x[300:])
    first, second = est._store.is_validation[:300], est._store.is_validation[300:]
    assert not torch.equal(first, second)
    again = FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny)
    again.partial_fit(theta[:300], x[:300]).partial_fit(theta[300:], x[300:])
    assert torch.equal(again._store.is_validation, est._store.is_validation)


class _InterruptAt(torch.nn.Module):
    """An embedding that raises KeyboardInterrupt at its ``at``-th training forward pass."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
        return self.linear(x)


def test_ctrl_c_in_the_first_epoch_leaves_no_fitted_model(moons_data, tiny):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(prior=task.prior, embedding=_InterruptAt(2), **tiny)
    with pytest.raises(KeyboardInterrupt):
        est.fit(theta, x)
    assert not hasattr(est, "network_") and not hasattr(est, "n_features_in_")


def test_ctrl_c_later_keeps_the_best_weights_and_says_so(moons_data, tiny):
    task, theta, x = moons_data
    # 540 training rows in batches of 64: 9 steps an epoch, so the 20th is in the third.
    est = FlowPosteriorEstimator(prior=task.prior, embedding=_InterruptAt(20), **tiny)
    with pytest.warns(UserWarning, match="Training was interrupted"):
        est.fit(theta, x)
    assert est.interrupted_ and est.n_iter_ == 2
    assert est.sample(x[0], 3).shape == (3, 2)
