"""Importance sampling against analytic targets; ESS, pool growth and systematic resampling."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

from skfalcon.engine import (
    draw_candidates,
    effective_sample_size,
    importance_sample,
    log_normalizer,
)
from skfalcon.engine.importance import systematic_resample


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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

    def sample_and_log_prob(self, shape, context=None, generator=None):
        d = self._dist(context)
        noise = torch.randn(torch.Size(shape) + d.mean.shape, generator=generator)
        v = d.mean + d.stddev * noise
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


def test_inference_rows_keep_the_widest_cpu_activation_near_a_million_numbers():
    from skfalcon.engine import inference_rows

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert inference_rows(cpu) == 2**14
    assert inference_rows(cpu, nn.Linear(3, 64)) == 2**14  # narrow: the cap
    assert inference_rows(cpu, nn.Sequential(nn.Linear(3, 64), nn.Linear(64, 512))) == 2**11
    assert inference_rows(cpu, nn.Linear(3, 2**16)) == 256  # never tiny passes
    assert inference_rows(cuda, nn.Linear(3, 512)) == 2**18  # a GPU wants large batches


def test_exact_draws_count_the_widest_layer_the_inverse_computes():
    import zuko

    from skfalcon.engine import inference_rows

    cpu = torch.device("cpu")
    # 10 coordinates x (3 x 16 - 1) spline parameters: 470 outputs, 47 per pass.
    flow = zuko.flows.NSF(10, 4, transforms=2, bins=16, hidden_features=(128, 128))
    assert inference_rows(cpu, flow) == 2**20 // 470
    assert inference_rows(cpu, flow, inverse=True) == 2**20 // 128
    residual = zuko.flows.NSF(10, 4, transforms=2, bins=16, hidden_features=(128,), residual=True)
    assert inference_rows(cpu, residual, inverse=True) == 2**20 // 470  # zuko's own inverse
