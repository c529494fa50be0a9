"""Unit tests of the torch engine: normalisation, flows, dual posterior, importance sampling, training."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

from skfalcon.engine import (
    FLOW_FAMILIES,
    DualFlowPosterior,
    MarginalPolicy,
    NormalizedFlow,
    RunningNorm,
    SampleStore,
    TrainingConfig,
    build_flow,
    choose_marginal,
    draw_candidates,
    effective_sample_size,
    importance_sample,
    log_normalizer,
    train,
)
from skfalcon.engine.importance import systematic_resample


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- RunningNorm


def test_running_norm_first_batch_sets_statistics_then_momentum():
    norm = RunningNorm(2, momentum=0.1)
    a = torch.randn(500, 2) * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -3.0])
    norm.train()
    norm(a)
    torch.testing.assert_close(norm.mean, a.mean(0))
    torch.testing.assert_close(norm.var, a.var(0, unbiased=False))
    b = torch.randn(500, 2) + 10
    norm(b)
    torch.testing.assert_close(norm.mean, a.mean(0) + 0.1 * (b.mean(0) - a.mean(0)))


def test_running_norm_does_not_update_in_eval_mode():
    norm = RunningNorm(3)
    norm.train()
    norm(torch.randn(100, 3))
    before = norm.mean.clone(), norm.var.clone()
    norm.eval()
    norm(torch.randn(100, 3) + 5)
    torch.testing.assert_close(norm.mean, before[0])
    torch.testing.assert_close(norm.var, before[1])


def test_running_norm_adaptive_momentum_is_running_average():
    norm = RunningNorm(1, momentum=1e-3, adaptive_momentum=True)
    norm.train()
    batches = [torch.randn(50, 1) + i for i in range(4)]
    for b in batches:
        norm(b)
    expected = torch.stack([b.mean(0) for b in batches]).mean(0)
    torch.testing.assert_close(norm.mean, expected)


def test_running_norm_log_update_is_geometric():
    norm = RunningNorm(1, momentum=0.5, use_log_update=True)
    norm.train()
    norm(torch.tensor([[-1.0], [1.0]]))  # var 1
    norm(torch.tensor([[-2.0], [2.0]]))  # var 4
    torch.testing.assert_close(norm.var, torch.tensor([2.0]))  # exp(mean(log 1, log 4))


def test_running_norm_constant_feature_is_only_centred_and_round_trips():
    norm = RunningNorm(2)
    norm.train()
    v = torch.stack([torch.full((10,), 3.0), torch.randn(10)], dim=1)
    z = norm(v)
    assert torch.isfinite(z).all()
    assert torch.all(z[:, 0] == 0)
    norm.eval()
    torch.testing.assert_close(norm.inverse(norm(v)), v)
    torch.testing.assert_close(norm.log_abs_det_jacobian(), -norm.scale().log().sum())


# ---------------------------------------------------------------- flows


@pytest.mark.parametrize("net_type", sorted(FLOW_FAMILIES))
def test_every_family_shapes_gradients_and_consistent_density(net_type):
    flow = NormalizedFlow(
        build_flow(net_type, 2, 3, num_transforms=2, hidden_features=(8,), num_bins=4),
        RunningNorm(2),
    )
    context = torch.randn(5, 3)
    flow.train()
    loss = -flow.log_prob(torch.randn(5, 2), context).mean()
    loss.backward()
    grads = [p.grad for p in flow.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    flow.eval()
    with torch.no_grad():
        v, log_q = flow.sample_and_log_prob((7,), context)
        assert v.shape == (7, 5, 2) and log_q.shape == (7, 5)
        torch.testing.assert_close(flow.log_prob(v, context), log_q, atol=1e-3, rtol=1e-3)


def test_normalized_flow_density_integrates_to_one_in_original_units():
    flow = NormalizedFlow(
        build_flow("nsf", 1, 0, num_transforms=1, hidden_features=(8,), num_bins=4), RunningNorm(1)
    )
    flow.train()
    flow.log_prob(torch.randn(1000, 1) * 3.0 + 5.0)  # sets mean 5, std 3
    flow.eval()
    grid = torch.linspace(-40, 50, 20001, dtype=torch.float32)[:, None]
    with torch.no_grad():
        density = flow.log_prob(grid).exp().numpy()
    assert integrate.trapezoid(density, grid[:, 0].numpy()) == pytest.approx(1.0, abs=1e-3)


def test_dual_posterior_losses_and_gradients_reach_every_parameter():
    model = DualFlowPosterior(
        3, RunningNorm(4), 4, net_type="maf", num_transforms=1, hidden_features=(8,)
    )
    model.train()
    losses = model.losses(torch.randn(16, 3), torch.randn(16, 4))
    assert losses.shape == (2,)
    losses.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        u = torch.randn(6, 2, 3)
        ratio = model.log_ratio(u, torch.randn(2, 4))
    assert ratio.shape == (6, 2)


def test_dual_posterior_marginal_loss_is_over_the_selected_rows_only():
    model = DualFlowPosterior(
        2, RunningNorm(2), 2, net_type="maf", num_transforms=1, hidden_features=(8,), cube_bound=2.0
    )
    model.eval()  # frozen normalisations: the same density for every call
    u = 3.8 * torch.rand(10, 2) - 1.9
    x = torch.randn(10, 2)
    rows = torch.zeros(10, dtype=torch.bool)
    rows[[1, 4, 7]] = True
    with torch.no_grad():
        expected = -model.marginal.log_prob(u[rows]).mean()
        losses = model.losses(u, x, rows)
        torch.testing.assert_close(losses[1], expected)
        torch.testing.assert_close(losses[0], model.losses(u, x)[0])
        assert losses[1] != model.losses(u, x)[1]
        assert model.losses(u, x, torch.zeros(10, dtype=torch.bool))[1] == 0.0
    # The mixture marginal of inference: alpha * uniform + (1 - alpha) * flow.
    model.set_marginal_policy(MarginalPolicy("mixture", 0.25))
    with torch.no_grad():
        mixed = model.inference_marginal.log_prob(u)
        expected = torch.logaddexp(
            np.log(0.25) - 2 * np.log(4.0) + torch.zeros(10),
            np.log(0.75) + model.marginal.log_prob(u),
        )
    torch.testing.assert_close(mixed, expected)
    model.set_marginal_policy(choose_marginal(True, 1.0))
    assert model.marginal_policy.is_exact_prior and model.inference_marginal is model.uniform
    with pytest.raises(ValueError, match="'none' does not fit a network with a marginal flow"):
        model.set_marginal_policy(MarginalPolicy("none"))


def test_dual_posterior_state_dict_round_trip():
    kwargs = dict(net_type="nsf", num_transforms=1, hidden_features=(8,))
    a = DualFlowPosterior(2, RunningNorm(2), 2, **kwargs)
    a.train()
    a.losses(torch.randn(32, 2), torch.randn(32, 2))  # moves the norms
    b = DualFlowPosterior(2, RunningNorm(2), 2, **kwargs)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    u, s = torch.randn(4, 3, 2), torch.randn(3, 2)
    with torch.no_grad():
        torch.testing.assert_close(a.log_ratio(u, s), b.log_ratio(u, s))


# ---------------------------------------------------------------- importance sampling


class _GaussianFlow(nn.Module):
    """A stand-in flow with an analytic density: N(loc(+context[..., 0]), scale^2)."""

    def __init__(self, loc, scale, conditional):
        super().__init__()
        self.loc, self.scale, self.conditional = loc, scale, conditional

    def _dist(self, context):
        loc = torch.tensor(self.loc)
        if self.conditional:
            loc = loc + context
        return torch.distributions.Independent(torch.distributions.Normal(loc, self.scale), 1)

    def log_prob(self, v, context=None):
        return self._dist(context).log_prob(v)

    def sample_and_log_prob(self, shape, context=None):
        d = self._dist(context)
        v = d.sample(shape) if self.conditional else d.sample(shape)
        return v, d.log_prob(v)


class _AnalyticPosterior(nn.Module):
    def __init__(self, q_scale=0.5, m_scale=1.0):
        super().__init__()
        self.conditional = _GaussianFlow([0.0], q_scale, conditional=True)
        self.marginal = _GaussianFlow([0.0], m_scale, conditional=False)

    @property
    def inference_marginal(self):
        return self.marginal


def _analytic_target(shift, q_scale=0.5, m_scale=1.0, bound=2.0):
    # q/m for Gaussians is a Gaussian with precision 1/q^2 - 1/m^2, truncated to the cube.
    precision = 1 / q_scale**2 - 1 / m_scale**2
    mean, std = shift / q_scale**2 / precision, precision**-0.5
    truncated = stats.truncnorm((-bound - mean) / std, (bound - mean) / std, mean, std)

    def ratio(u):
        return stats.norm(shift, q_scale).pdf(u) / stats.norm(0, m_scale).pdf(u)

    z = integrate.quad(ratio, -bound, bound)[0]
    return truncated, math.log(z)


@pytest.mark.parametrize("shift", [0.3, 1.5])
def test_importance_sampling_matches_analytic_truncated_target(shift):
    posterior = _AnalyticPosterior()
    summary = torch.tensor([[shift]])
    result = importance_sample(
        posterior,
        summary,
        20000,
        num_proposals=8,
        beta=0.5,
        bound=2.0,
        out_of_bounds_penalty=100.0,
        nan_replacement=-100.0,
    )
    samples, ess = result.u, result.ess
    assert samples.shape == (1, 20000, 1) and ess.shape == (1,)
    truth, log_z = _analytic_target(shift)
    s = samples[0, :, 0].double().numpy()
    assert np.abs(s).max() <= 2.0
    assert s.mean() == pytest.approx(truth.mean(), abs=0.02)
    assert s.std() == pytest.approx(truth.std(), abs=0.02)
    assert stats.kstest(s[::10], truth.cdf).pvalue > 1e-3
    # Each sample carries its normalized density under the target: log t - log Z.
    assert float(result.log_normalizer[0]) == pytest.approx(log_z, abs=0.03)
    np.testing.assert_allclose(result.log_density[0].double().numpy(), truth.logpdf(s), atol=0.05)
    q_tail = stats.norm(shift, 0.5)
    expected_outside = q_tail.cdf(-2.0) + q_tail.sf(2.0)
    assert float(result.out_of_cube_fraction[0]) == pytest.approx(expected_outside, abs=0.01)
    pool = draw_candidates(posterior, summary, 50000, beta=0.5, bound=2.0)
    assert float(log_normalizer(pool)[0]) == pytest.approx(log_z, abs=0.02)


def test_importance_sampling_exponent_zero_gives_uniform_cube():
    posterior = _AnalyticPosterior()
    samples = importance_sample(
        posterior,
        torch.tensor([[0.5]]),
        20000,
        num_proposals=8,
        beta=0.5,
        bound=2.0,
        out_of_bounds_penalty=100.0,
        nan_replacement=-100.0,
        exponent=0.0,
    ).u
    s = samples[0, :, 0].numpy()
    assert stats.kstest(s[::10], stats.uniform(-2, 4).cdf).pvalue > 1e-3


def test_importance_sampling_batches_observations():
    posterior = _AnalyticPosterior()
    summary = torch.tensor([[-1.0], [0.0], [1.0]])
    result = importance_sample(
        posterior,
        summary,
        4000,
        num_proposals=8,
        beta=0.5,
        bound=2.0,
        out_of_bounds_penalty=100.0,
        nan_replacement=-100.0,
    )
    samples, ess = result.u, result.ess
    assert samples.shape == (3, 4000, 1) and ess.shape == (3,)
    means = samples[..., 0].mean(1).numpy()
    assert np.all(np.diff(means) > 0.5)


def test_effective_sample_size_known_values():
    assert float(effective_sample_size(torch.zeros(100))) == pytest.approx(100.0)
    one_hot = torch.full((100,), -math.inf)
    one_hot[3] = 0.0
    assert float(effective_sample_size(one_hot)) == pytest.approx(1.0)
    two = torch.log(torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert float(effective_sample_size(two)) == pytest.approx(2.0)


def test_nan_log_weights_are_replaced_not_propagated():
    posterior = _AnalyticPosterior()

    def nan_log_prob(v, context=None):
        out = torch.distributions.Normal(0.0, 1.0).log_prob(v).sum(-1)
        return torch.where(v[..., 0] > 0, torch.nan, out)

    posterior.marginal.log_prob = nan_log_prob
    result = importance_sample(
        posterior,
        torch.tensor([[0.0]]),
        1000,
        num_proposals=4,
        beta=0.5,
        bound=2.0,
        out_of_bounds_penalty=100.0,
        nan_replacement=-100.0,
    )
    samples, ess = result.u, result.ess
    assert torch.isfinite(samples).all() and torch.isfinite(ess).all()


# ---------------------------------------------------------------- training


def _toy_data(n, generator):
    x = torch.randn(n, 1, generator=generator)
    u = x + 0.3 * torch.randn(n, 1, generator=generator)
    return u, x


def _split_store(u_train, x_train, u_val, x_val) -> SampleStore:
    """A store of prior rows with the given training and validation splits."""
    u, x = torch.cat([u_train, u_val]), torch.cat([x_train, x_val])
    is_val = torch.arange(len(u)) >= len(u_train)
    n = len(u)
    return SampleStore.empty(u.shape[1], x.shape[1:]).append(
        u, x, torch.zeros(n), torch.ones(n, dtype=torch.bool), is_val
    )


def test_train_learns_restores_best_weights_and_records_history():
    g = torch.Generator().manual_seed(0)
    u, x = _toy_data(600, g)
    u_val, x_val = _toy_data(200, g)
    model = DualFlowPosterior(1, RunningNorm(1), 1, num_transforms=1, hidden_features=(16,))
    records = []
    config = TrainingConfig(
        batch_size=64, max_epochs=15, lr=5e-3, lr_patience=2, early_stop_patience=4
    )
    result = train(
        model,
        _split_store(u, x, u_val, x_val),
        config,
        torch.device("cpu"),
        on_epoch_end=records.append,
    )
    history = result.history
    assert records == history and len(history) >= 5
    assert set(history[0]) >= {"train_loss", "val_loss", "best_val_loss", "lr", "seconds"}
    assert history[-1]["best_val_loss"] < history[0]["val_loss"] - 0.3
    assert not model.training
    with torch.no_grad():
        final = sum(model.losses(u_val, x_val).tolist())
    assert final == pytest.approx(history[result.best_epoch]["val_loss"], abs=1e-4)
    # Conditional loss near the true -log N(0; 0, 0.3^2) entropy ~ 0.24
    assert history[result.best_epoch]["val_loss_conditional"] < 0.5


def test_train_early_stops_and_decays_learning_rate():
    g = torch.Generator().manual_seed(1)
    u, x = _toy_data(200, g)
    model = DualFlowPosterior(1, RunningNorm(1), 1, num_transforms=1, hidden_features=(4,))
    config = TrainingConfig(
        batch_size=50, max_epochs=200, lr=1e-2, lr_patience=0, early_stop_patience=2
    )
    result = train(model, _split_store(u, x, u[:50], x[:50] + 100.0), config, torch.device("cpu"))
    assert result.stopped_early and len(result.history) < 200
    assert result.history[-1]["lr"] < 1e-2


def test_pool_grows_until_the_effective_sample_size_is_reached():
    posterior = _AnalyticPosterior()
    kwargs = dict(
        num_proposals=1, beta=0.5, bound=2.0, out_of_bounds_penalty=100.0, nan_replacement=-100.0
    )
    summary = torch.tensor([[1.5]])
    ess_single = importance_sample(posterior, summary, 2000, **kwargs).ess
    ess_grown = importance_sample(
        posterior, summary, 2000, min_ess=2000, max_rounds=8, **kwargs
    ).ess
    assert float(ess_single[0]) < 2000 <= float(ess_grown[0])


def test_systematic_resampling_draws_each_candidate_floor_or_ceil_of_n_w_times():
    torch.manual_seed(0)
    log_w = torch.randn(3, 500) * 2.0
    n = 1000
    index = systematic_resample(log_w, n)
    assert index.shape == (3, n) and index.min() >= 0 and index.max() < 500
    expected = n * torch.softmax(log_w.double(), dim=-1)
    for row in range(3):
        counts = torch.bincount(index[row], minlength=500).double()
        assert ((counts - expected[row]).abs() < 1.0 + 1e-9).all()
    # Returned in random order, not sorted by candidate.
    assert not bool((index[:, 1:] >= index[:, :-1]).all())


def test_systematic_resampling_is_unbiased_and_repeats_nothing_under_flat_weights():
    torch.manual_seed(1)
    log_w = torch.randn(1, 50)
    weights = torch.softmax(log_w.double(), dim=-1)[0]
    counts = torch.zeros(50, dtype=torch.float64)
    for _ in range(2000):
        counts += torch.bincount(systematic_resample(log_w, 10)[0], minlength=50)
    # Each candidate's expected count is n w_i (here 10 w_i per draw of 10).
    np.testing.assert_allclose(counts / 2000, 10 * weights, atol=0.03)
    # With flat weights and n equal to the pool, every candidate appears exactly once.
    flat = systematic_resample(torch.zeros(2, 64), 64)
    assert all(len(set(row.tolist())) == 64 for row in flat)
