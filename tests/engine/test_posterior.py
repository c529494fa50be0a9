"""Flows of every family and the dual-flow posterior: shapes, gradients, densities, marginal policy."""

import numpy as np
import pytest
import torch
from scipy import integrate

from skfalcon.engine import (
    FLOW_FAMILIES,
    DualFlowPosterior,
    MarginalPolicy,
    NormalizedFlow,
    RunningNorm,
    build_flow,
    choose_marginal,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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
