"""Ensembles of dual-flow posteriors: members, mixture density, member assignment, sampling."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from skfalcon.engine import (
    FLOW_FAMILIES,
    DualFlowPosterior,
    EnsemblePosterior,
    LogNormalizerCache,
    MarginalPolicy,
    NetworkSpec,
    SamplerConfig,
    log_posterior,
    network_from_state,
    network_state,
    sample_posterior,
)
from skfalcon.engine.ensemble import assign_members, member_ranks

CPU = torch.device("cpu")
# log Z caches of the tests: a looser tolerance than the estimator's, for speed.
CACHE = dict(tolerance=0.05, max_candidates=2**13)
TINY_SPEC = dict(num_transforms=1, hidden_features=(8,), num_bins=4)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _ensemble(size=3, policy="flow", net_type="nsf", **options) -> EnsemblePosterior:
    spec = NetworkSpec(
        features=2,
        observation_features=3,
        net_type=net_type,
        ensemble_size=size,
        cube_bound=2.0,
        **{**TINY_SPEC, **options},
    )
    network = spec.build()
    network.set_marginal_policy(MarginalPolicy(policy, 0.5 if policy == "mixture" else None))
    return network.eval()


def test_size_one_builds_the_single_posterior_exactly():
    options = dict(features=2, observation_features=3, cube_bound=2.0, **TINY_SPEC)
    torch.manual_seed(1)
    single = NetworkSpec(**options).build()
    torch.manual_seed(1)
    explicit = NetworkSpec(**options, ensemble_size=1).build()
    assert type(explicit) is DualFlowPosterior
    assert single.state_dict().keys() == explicit.state_dict().keys()
    for key, value in single.state_dict().items():
        assert torch.equal(value, explicit.state_dict()[key]), key


def test_ensemble_needs_two_members():
    member = NetworkSpec(features=2, observation_features=3, **TINY_SPEC).build()
    with pytest.raises(ValueError, match="at least 2 members, got 1"):
        EnsemblePosterior([member])


# Families whose sampling inverts a flow numerically or solves an ODE: seconds per draw.
_SLOW_FAMILIES = ("bpf", "flow_matching")


@pytest.mark.parametrize(
    "net_type",
    [
        pytest.param(f, marks=pytest.mark.slow) if f in _SLOW_FAMILIES else f
        for f in sorted(FLOW_FAMILIES)
    ],
)
def test_every_family_members_are_independent_and_each_trained_by_its_own_loss(net_type):
    ensemble = _ensemble(2, "prior", net_type=net_type).train()
    first, second = (dict(m.named_parameters()) for m in ensemble.members)
    assert any(not torch.equal(first[k], second[k]) for k in first)
    u, x = torch.rand(16, 2) * 2 - 1, torch.randn(16, 3)
    # Seeded before each evaluation: a family's loss may draw random numbers.
    torch.manual_seed(1)
    losses = ensemble.losses(u, x)
    torch.manual_seed(1)
    expected = sum(m.losses(u, x) for m in ensemble.members)
    torch.testing.assert_close(losses, expected)
    # The gradient of the summed loss with respect to a member is that of its own loss.
    ensemble.zero_grad()
    losses.sum().backward()
    together = [p.grad.clone() for p in ensemble.members[0].parameters() if p.grad is not None]
    ensemble.zero_grad()
    torch.manual_seed(1)
    ensemble.members[0].losses(u, x).sum().backward()
    alone = [p.grad for p in ensemble.members[0].parameters() if p.grad is not None]
    assert len(together) == len(alone) > 0
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a, b)
    ensemble.eval()
    summary = ensemble.embed(x[:2])
    with torch.no_grad():
        u, ess, log_density = sample_posterior(
            ensemble, summary, 3, SamplerConfig(), CPU, generator=torch.Generator().manual_seed(0)
        )
    assert u.shape == (2, 3, 2) and ess.shape == (2,) and log_density.shape == (2, 3)
    assert torch.isfinite(log_density).all() and (u.abs() <= 2).all()


def test_user_embedding_modules_start_apart_in_every_member():
    template = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(3, 4))
    spec = NetworkSpec(
        features=2,
        observation_features=3,
        embedding={"embedding": template, "shape": (3,)},
        ensemble_size=3,
        **TINY_SPEC,
    )
    weights = [m.embedding[1][1].weight for m in spec.build().members]
    assert torch.equal(weights[0], template[1].weight)
    assert not torch.equal(weights[1], weights[0]) and not torch.equal(weights[2], weights[1])


def _member_log_posteriors(ensemble, u, x, seed):
    """Each member's normalized log posterior ``(N, K)`` and log Z ``(K,)``, its Z from a
    cache of its own seeded as the ensemble's stream for that member is."""
    keys = [row.numpy().tobytes() for row in x]
    columns, log_zs = [], []
    for k, member in enumerate(ensemble.members):
        log_z, _ = LogNormalizerCache(seed + k, **CACHE).get(member, x, keys, CPU)
        ratio = member.log_ratio(u[:, None], member.embed(x)).squeeze(1).double()
        columns.append(ratio - log_z[0])
        log_zs.append(log_z[0])
    return torch.stack(columns, -1), torch.stack(log_zs)


@pytest.mark.parametrize("policy", ["flow", "mixture", "prior"])
def test_mixture_density_is_the_mean_of_the_members_normalized_densities(policy):
    ensemble = _ensemble(3, policy)
    x = torch.randn(1, 3)
    u = torch.rand(50, 2) * 4 - 2
    index = torch.zeros(50, dtype=torch.long)
    with torch.no_grad():
        cache = LogNormalizerCache(5, **CACHE)
        log_z, se = cache.get(ensemble, x, [x[0].numpy().tobytes()], CPU)
        mixed = log_posterior(ensemble, u, ensemble.embed(x), index, log_z, CPU)
        members, member_log_z = _member_log_posteriors(ensemble, u, x, seed=5)
    assert log_z.shape == se.shape == (1, 3)
    torch.testing.assert_close(log_z[0], member_log_z)
    expected = members.exp().mean(-1).log()
    torch.testing.assert_close(mixed, expected, rtol=1e-6, atol=1e-6)
    # Members differ, so the mixture is not any one member.
    assert (members.std(-1) > 1e-3).any()


def test_mixture_density_integrates_to_one_on_the_cube():
    # The mixture marginal keeps q/m bounded, so that Z is estimated to 0.01 quickly.
    ensemble = _ensemble(2, "mixture")
    x = torch.randn(1, 3)
    edges = torch.linspace(-2, 2, 201, dtype=torch.float64)
    centres = ((edges[1:] + edges[:-1]) / 2).float()
    grid = torch.cartesian_prod(centres, centres)
    index = torch.zeros(len(grid), dtype=torch.long)
    with torch.no_grad():
        log_z, se = LogNormalizerCache(0, tolerance=0.01).get(ensemble, x, [b"x"], CPU)
        log_p = log_posterior(ensemble, grid, ensemble.embed(x), index, log_z, CPU)
    assert (se < 0.01).all()
    assert float(log_p.exp().sum() * (4 / 200) ** 2) == pytest.approx(1.0, abs=0.02)


def test_assignment_gives_each_member_its_share():
    size, m, n = 3, 2, 30_000
    assignment = assign_members(size, m, n, CPU, torch.Generator().manual_seed(0))
    ranks, counts = member_ranks(assignment, size)
    assert assignment.shape == ranks.shape == (m, n) and counts.shape == (m, size)
    assert (counts.sum(1) == n).all()
    # Binomial(n, 1/3) per member and observation: within 5 standard deviations.
    bound = 5 * math.sqrt(n * (1 / size) * (1 - 1 / size))
    assert ((counts - n / size).abs() < bound).all()
    chi2 = (((counts - n / size) ** 2) / (n / size)).sum(1)
    assert (chi2 < stats.chi2.ppf(0.999, size - 1)).all()
    # Ranks enumerate each member's samples 0, 1, 2, ... in order.
    for k in range(size):
        assert torch.equal(ranks[0][assignment[0] == k], torch.arange(int(counts[0, k])))


def _separated_ensemble(size=3) -> EnsemblePosterior:
    """Members whose posteriors sit near 10 k (no cube, no marginal): a sample tells its member."""
    spec = NetworkSpec(features=1, observation_features=2, marginal=False, **TINY_SPEC)
    ensemble = NetworkSpec(**{**spec.__dict__, "ensemble_size": size}).build()
    for k, member in enumerate(ensemble.members):
        member.conditional.norm.mean.fill_(10.0 * k)
        member.conditional.norm.var.fill_(1e-4)
    return ensemble.eval()


def test_samples_come_from_their_assigned_member_in_equal_shares():
    ensemble, n = _separated_ensemble(3), 3000
    summary = ensemble.embed(torch.randn(2, 2))
    with torch.no_grad():
        u, ess, log_density = sample_posterior(
            ensemble, summary, n, SamplerConfig(), CPU, generator=torch.Generator().manual_seed(3)
        )
    expected = assign_members(3, 2, n, CPU, torch.Generator().manual_seed(3))
    assert torch.equal(torch.round(u[..., 0] / 10).long(), expected)
    assert torch.equal(ess, torch.full((2,), float(n)))
    # Far apart, the mixture density of a sample is its member's, less log 3.
    member_log_q = torch.stack(
        [
            m.conditional.log_prob(u.transpose(0, 1), s)
            for m, s in zip(ensemble.members, ensemble.split(summary), strict=True)
        ],
        -1,
    ).transpose(0, 1)
    own = member_log_q.gather(-1, expected[..., None])[..., 0]
    torch.testing.assert_close(log_density, own - math.log(3), atol=1e-3, rtol=1e-4)


def test_sampling_is_reproducible_and_matches_the_mixture_on_a_widened_target():
    ensemble = _ensemble(2, "mixture")
    summary = ensemble.embed(torch.randn(1, 3))
    with torch.no_grad():
        draws = [
            sample_posterior(
                ensemble,
                summary,
                400,
                SamplerConfig(),
                CPU,
                exponent=0.5,
                generator=torch.Generator().manual_seed(7),
            )
            for _ in range(2)
        ]
    for a, b in zip(*draws, strict=True):
        assert torch.equal(a, b)
    u, ess, log_density = draws[0]
    assert (ess > 0).all() and torch.isfinite(log_density).all()
    # The widened mixture is normalized: mean of 1 / t over its own draws is the cube volume.
    volume = float(torch.exp(-log_density).mean())
    assert volume == pytest.approx(16.0, rel=0.25)


def test_state_round_trip_rebuilds_the_ensemble():
    ensemble = _ensemble(2, "mixture")
    state = network_state(ensemble)
    assert state["spec"].ensemble_size == 2
    assert all(key.startswith("members.") for key in state["weights"])
    loaded = network_from_state(state, CPU)
    assert isinstance(loaded, EnsemblePosterior) and loaded.marginal_policy.kind == "mixture"
    summary = ensemble.embed(torch.randn(1, 3))
    with torch.no_grad():
        a = sample_posterior(
            ensemble, summary, 20, SamplerConfig(), CPU, generator=torch.Generator().manual_seed(0)
        )
        b = sample_posterior(
            loaded, summary, 20, SamplerConfig(), CPU, generator=torch.Generator().manual_seed(0)
        )
    assert np.array_equal(a[0].numpy(), b[0].numpy())


def test_conditional_view_is_the_mixture_of_the_members_conditionals():
    ensemble = _ensemble(2)
    u, x = torch.rand(4, 2) - 0.5, torch.randn(4, 3)
    with torch.no_grad():
        summary = ensemble.embed(x)
        mixed = ensemble.conditional.log_prob(u, summary)
        parts = [m.conditional.log_prob(u, m.embed(x)) for m in ensemble.members]
    torch.testing.assert_close(mixed, torch.stack(parts).exp().mean(0).log())


def test_ensemble_sampling_reports_every_observation_once():
    from skfalcon.engine import NetworkSpec, SamplerConfig, sample_posterior

    torch.manual_seed(0)
    spec = NetworkSpec(
        features=2,
        observation_features=3,
        num_transforms=1,
        hidden_features=(8,),
        ensemble_size=3,
        cube_bound=2.0,
    )
    ensemble = spec.build().eval()
    reported = []
    with torch.no_grad():
        summary = ensemble.embed(torch.randn(7, 3))
        sample_posterior(
            ensemble, summary, 5, SamplerConfig(), torch.device("cpu"), progress=reported.append
        )
    assert sum(reported) == 7 and all(isinstance(r, int) and r > 0 for r in reported)
