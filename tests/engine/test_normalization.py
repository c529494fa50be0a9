"""The online running normalisation."""

import pytest
import torch

from skfalcon.engine import (
    RunningNorm,
)


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
