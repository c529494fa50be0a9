"""The Gaussian family: N(z; A c + b, L L^T) as a one-transform zuko flow."""

import numpy as np
import pytest
import torch
from scipy import stats

from skfalcon.engine.coupling import inverse_and_log_det
from skfalcon.engine.flows import build_flow
from skfalcon.engine.gaussian import LinearGaussian


def gaussian(features=3, context=2, seed=0):
    """A LinearGaussian with random A, b and L, and those three as numpy arrays."""
    torch.manual_seed(seed)
    flow = LinearGaussian(features, context).double()
    transform = flow.transform.transforms[0]
    with torch.no_grad():
        transform.shift.normal_()
        transform.log_diag.normal_(0, 0.3)
        transform.lower.normal_(0, 0.5)
        if context:
            transform.regression.weight.normal_()
    a = transform.regression.weight.detach().numpy() if context else None
    b = transform.shift.detach().numpy() + (
        transform.regression.bias.detach().numpy() if context else 0
    )
    tril = np.tril(transform.lower.detach().numpy(), -1) + np.diag(
        np.exp(transform.log_diag.detach().numpy())
    )
    return flow, a, b, tril


def test_log_prob_is_the_gaussian_of_mean_affine_in_the_context():
    flow, a, b, tril = gaussian()
    c = torch.randn(7, 2, dtype=torch.float64)
    z = torch.randn(7, 3, dtype=torch.float64)
    expected = [
        stats.multivariate_normal(a @ ci + b, tril @ tril.T).logpdf(zi)
        for ci, zi in zip(c.numpy(), z.numpy(), strict=True)
    ]
    np.testing.assert_allclose(flow(c).log_prob(z).detach().numpy(), expected, rtol=1e-10)


def test_without_context_it_is_one_gaussian():
    flow, _, b, tril = gaussian(context=0)
    z = torch.randn(5, 3, dtype=torch.float64)
    expected = stats.multivariate_normal(b, tril @ tril.T).logpdf(z.numpy())
    np.testing.assert_allclose(flow().log_prob(z).detach().numpy(), expected, rtol=1e-10)


def test_samples_have_the_gaussian_moments():
    flow, a, b, tril = gaussian()
    c = torch.tensor([0.5, -1.0], dtype=torch.float64)
    draws = flow(c).sample((200_000,)).numpy()
    np.testing.assert_allclose(draws.mean(0), a @ c.numpy() + b, atol=0.02)
    np.testing.assert_allclose(np.cov(draws.T), tril @ tril.T, atol=0.03)


def test_the_inverse_and_its_determinant_agree_with_the_density():
    flow, *_ = gaussian()
    c = torch.randn(6, 2, dtype=torch.float64)
    z = torch.randn(6, 3, dtype=torch.float64)
    with torch.no_grad():
        dist = flow(c)
        x, ladj = inverse_and_log_det(dist.transform, z)
        np.testing.assert_allclose(dist.transform(x).numpy(), z.numpy(), atol=1e-12)
        np.testing.assert_allclose(
            (dist.base.log_prob(z) - ladj).numpy(), dist.log_prob(x).numpy(), atol=1e-10
        )


def test_the_density_integrates_to_one_on_a_grid():
    flow, *_ = gaussian(features=2, context=1)
    grid = torch.linspace(-12, 12, 481, dtype=torch.float64)
    z = torch.cartesian_prod(grid, grid)
    c = torch.full((len(z), 1), 0.7, dtype=torch.float64)
    with torch.no_grad():
        mass = flow(c).log_prob(z).exp().sum() * (grid[1] - grid[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=1e-6)


def test_gradients_reach_every_parameter():
    flow = LinearGaussian(3, 2)
    loss = -flow(torch.randn(8, 2)).log_prob(torch.randn(8, 3)).mean()
    loss.backward()
    for name, parameter in flow.named_parameters():
        assert parameter.grad is not None and torch.any(parameter.grad != 0), name


def test_maximum_likelihood_recovers_a_linear_regression():
    rng = torch.Generator().manual_seed(0)
    c = torch.randn(4000, 2, generator=rng)
    a = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    z = c @ a.T + torch.tensor([0.3, -0.1]) + 0.2 * torch.randn(4000, 2, generator=rng)
    torch.manual_seed(0)
    flow = LinearGaussian(2, 2)
    optimizer = torch.optim.Adam(flow.parameters(), lr=0.05)
    for _ in range(600):
        optimizer.zero_grad()
        (-flow(c).log_prob(z).mean()).backward()
        optimizer.step()
    transform = flow.transform.transforms[0]
    np.testing.assert_allclose(transform.regression.weight.detach().numpy(), a.numpy(), atol=0.02)
    np.testing.assert_allclose(transform.log_diag.exp().detach().numpy(), [0.2, 0.2], atol=0.01)


def test_build_flow_builds_it_and_ignores_the_other_families_sizes():
    flow = build_flow("gaussian", 3, 2, num_transforms=5, hidden_features=(64, 64), num_bins=8)
    assert isinstance(flow, LinearGaussian)
    # A, b, the diagonal's logarithm and the strict lower triangle's square.
    assert sum(p.numel() for p in flow.parameters()) == 3 * 2 + 3 + 3 + 3 + 9
