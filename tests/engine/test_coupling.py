"""Coupling spline flows and the one-evaluation inverse."""

import functools

import pytest
import torch
import zuko

from skfalcon.engine.coupling import CouplingNSF, coupling_masks, inverse_and_log_det

FAMILIES = {
    "naf": zuko.flows.NAF,
    "nsf": zuko.flows.NSF,
    "nsf_passes2": functools.partial(zuko.flows.NSF, passes=2),
    "spline_coupling": CouplingNSF,
    "maf": zuko.flows.MAF,
    "realnvp": zuko.flows.RealNVP,
}


def _perturbed(flow):
    # Untrained zuko flows start near the identity; move off it so the test has teeth.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter += 0.2 * torch.randn(parameter.shape, generator=generator)
    return flow


# Autoregressive layers are inverted pass by pass on sliced weights, which rounds
# differently from zuko's full passes; coupling layers reproduce zuko exactly.
AUTOREGRESSIVE = ("nsf", "nsf_passes2", "maf")


@pytest.mark.parametrize("features", [1, 2, 3, 10])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_inverse_matches_zuko(family, features):
    torch.manual_seed(0)
    flow = _perturbed(FAMILIES[family](features, 3, transforms=3, hidden_features=(16, 16)))
    dist = flow(torch.randn(4, 3))
    z = torch.randn(5, 4, features)
    with torch.no_grad():
        expected_x, expected_log_det = dist.transform.inv.call_and_ladj(z)
        x, log_det = inverse_and_log_det(dist.transform, z)
    if family in AUTOREGRESSIVE:
        torch.testing.assert_close(x, expected_x, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(log_det, expected_log_det, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(x, expected_x)
        assert torch.equal(log_det, expected_log_det)


@pytest.mark.parametrize("family", AUTOREGRESSIVE)
def test_autoregressive_inverse_round_trips_in_float64(family):
    torch.manual_seed(0)
    flow = _perturbed(FAMILIES[family](6, 2, transforms=3, hidden_features=(16,))).double()
    dist = flow(torch.randn(3, 2, dtype=torch.float64))
    z = torch.randn(7, 3, 6, dtype=torch.float64)
    with torch.no_grad():
        x, log_det = inverse_and_log_det(dist.transform, z)
        z_back, forward_log_det = dist.transform.call_and_ladj(x)
    torch.testing.assert_close(z_back, z, rtol=0, atol=1e-10)
    torch.testing.assert_close(log_det, -forward_log_det, rtol=0, atol=1e-10)


@pytest.mark.parametrize("hidden", [(16,), (16, 16)])
def test_autoregressive_inverse_falls_back_for_residual_networks(hidden):
    torch.manual_seed(0)
    flow = _perturbed(zuko.flows.NSF(4, 2, transforms=2, hidden_features=hidden, residual=True))
    dist = flow(torch.randn(2))
    z = torch.randn(5, 4)
    with torch.no_grad():
        expected_x, expected_log_det = dist.transform.inv.call_and_ladj(z)
        x, log_det = inverse_and_log_det(dist.transform, z)
    assert torch.equal(x, expected_x)
    assert torch.equal(log_det, expected_log_det)


def test_masks_transform_every_coordinate_and_separate_every_pair():
    for features in (2, 3, 5, 10, 17):
        n_layers = 2 * (features - 1).bit_length()
        masks = coupling_masks(features, n_layers + 1)
        for mask in masks:
            assert mask.any() and (~mask).any()
        for first, second in zip(masks[0::2], masks[1::2], strict=False):
            assert ((~first) | (~second)).all()
        for i in range(features):
            for j in range(i + 1, features):
                assert any(bool(m[i] != m[j]) for m in masks[:n_layers])


def test_coupling_density_integrates_to_one_in_2d():
    torch.manual_seed(0)
    flow = _perturbed(CouplingNSF(2, 0, transforms=4, bins=8, hidden_features=(16,)))
    grid = torch.linspace(-8, 8, 401)
    step = float(grid[1] - grid[0])
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        mass = flow().log_prob(points).exp().sum() * step**2
    assert abs(float(mass) - 1.0) < 1e-2


def test_coupling_sample_log_prob_agree_with_density():
    torch.manual_seed(0)
    flow = _perturbed(CouplingNSF(5, 2, transforms=4, hidden_features=(16, 16)))
    dist = flow(torch.randn(2))
    z = dist.base.sample((256,))
    with torch.no_grad():
        x, log_det = inverse_and_log_det(dist.transform, z)
        log_q = dist.base.log_prob(z) - log_det
        assert torch.allclose(log_q, dist.log_prob(x), atol=1e-4)
