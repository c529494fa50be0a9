"""The flow-matching family: its loss, its ODE densities and samples, and the dual flows."""

import functools
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from skfalcon.engine import MarginalPolicy, NetworkSpec, network_from_state, network_state
from skfalcon.engine.flow_matching import (
    DEFAULT_FREQUENCIES,
    EXACT_TRACE_MAX_FEATURES,
    FIELDS,
    FlowMatchingFlow,
)
from skfalcon.engine.flows import NormalizedFlow, build_flow, default_hidden_features
from skfalcon.engine.normalization import RunningNorm

MU, SIGMA = torch.tensor([0.5, -1.0]), torch.tensor([0.7, 1.5])


def gaussian_field(tau, y, c=None, mu=MU, sigma=SIGMA):
    r"""The exact flow-matching field from :math:`\mathcal{N}(\mu, \sigma^2)` at
    :math:`\tau = 0` to :math:`\mathcal{N}(0, I)` at :math:`\tau = 1` along straight paths:
    :math:`E[z - y \mid y_\tau]`, linear in :math:`y_\tau` for a Gaussian."""
    tau = torch.as_tensor(tau, dtype=y.dtype)[..., None]
    spread = (1 - tau) ** 2 * sigma**2 + tau**2
    return -mu + (tau - (1 - tau) * sigma**2) / spread * (y - (1 - tau) * mu)


def gaussian_flow(**kwargs) -> FlowMatchingFlow:
    flow = FlowMatchingFlow(2, hidden_features=(8,), **kwargs)
    flow.transform.f = gaussian_field  # the instance's field replaces the network
    return flow.eval()


def test_shapes_of_loss_densities_and_samples():
    flow = FlowMatchingFlow(2, 3, hidden_features=(16, 16))
    assert flow.loss(torch.randn(5, 2), torch.randn(5, 3)).shape == (5,)
    # One context broadcasts over many points; (n, m, d) pairs with (m, c).
    assert flow(torch.randn(3)).log_prob(torch.randn(4, 2)).shape == (4,)
    assert flow(torch.randn(6, 3)).log_prob(torch.randn(4, 6, 2)).shape == (4, 6)
    normalized = NormalizedFlow(flow, RunningNorm(2), cube_bound=2.0).eval()
    with torch.no_grad():
        v, log_q = normalized.sample_and_log_prob((4,), torch.randn(6, 3))
    assert v.shape == (4, 6, 2) and log_q.shape == (4, 6)
    assert bool((v.abs() < 2).all())


def test_build_flow_gives_the_family_with_the_requested_widths():
    flow = build_flow("flow_matching", 3, 4, num_transforms=5, hidden_features=(32, 16), num_bins=8)
    assert isinstance(flow, FlowMatchingFlow) and flow.transform.field == "residual"
    field = flow.transform.residual
    # Inputs: y, the 2 x 8 time features and the context.
    assert field.input.in_features == 3 + 2 * DEFAULT_FREQUENCIES["residual"] + 4
    assert [layer.out_features for layer in field.hidden] == [32, 16]
    assert isinstance(field.skips[0], torch.nn.Identity)
    assert field.skips[1].out_features == 16 and field.output.out_features == 3
    legacy = build_flow(
        "flow_matching",
        3,
        4,
        num_transforms=5,
        hidden_features=(32, 16),
        num_bins=8,
        vector_field="mlp",
    )
    widths = [
        layer.out_features for layer in legacy.transform.ode if hasattr(layer, "out_features")
    ]
    assert widths == [32, 16, 3] and not hasattr(legacy.transform, "residual")


def test_hidden_features_default_to_the_family_s_own():
    assert default_hidden_features("flow_matching") == (128, 128, 128, 128)
    assert default_hidden_features("nsf") == (64, 64)
    assert default_hidden_features("flow_matching", [32, 32]) == (32, 32)


@pytest.mark.parametrize("field", FIELDS)
def test_the_field_broadcasts_one_context_over_many_points(field):
    flow = FlowMatchingFlow(2, 3, hidden_features=(8, 8), field=field)
    y, c = torch.randn(4, 6, 2), torch.randn(6, 3)
    tau = torch.full((4, 6), 0.3)
    together = flow.vector_field(tau, y, c)
    one_by_one = torch.stack([flow.vector_field(tau[i], y[i], c) for i in range(4)])
    torch.testing.assert_close(together, one_by_one)


def test_gradients_reach_every_parameter_of_the_vector_field_and_the_context():
    flow = FlowMatchingFlow(2, 3, hidden_features=(16, 16))
    context = torch.randn(8, 3, requires_grad=True)
    flow.loss(torch.randn(8, 2), context).mean().backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert context.grad.abs().sum() > 0


def test_the_loss_is_smallest_at_the_exact_field():
    # The regression target and the ODE share one time direction: the field that carries
    # N(mu, sigma^2) to N(0, I) minimises the loss, its reverse does not.
    flow = gaussian_flow().train()
    y = MU + SIGMA * torch.randn(20000, 2, generator=torch.Generator().manual_seed(1))
    generator = functools.partial(torch.Generator().manual_seed, 2)
    exact = flow.loss(y, generator=generator()).mean()
    for scale in (-1.0, 0.7):
        flow.transform.f = functools.partial(_scaled_field, scale)
        assert flow.loss(y, generator=generator()).mean() > exact + 0.05


def _scaled_field(scale, tau, y, c=None):
    return scale * gaussian_field(tau, y)


def test_log_prob_of_the_exact_field_matches_the_gaussian():
    flow = gaussian_flow()
    y = torch.randn(50, 2, generator=torch.Generator().manual_seed(0)) * 2
    with torch.no_grad():
        log_q = flow().log_prob(y).numpy()
    expected = stats.norm(MU.numpy(), SIGMA.numpy()).logpdf(y.numpy()).sum(-1)
    np.testing.assert_allclose(log_q, expected, atol=1e-3)


def test_samples_of_the_exact_field_have_the_gaussian_moments_and_their_density():
    flow = gaussian_flow()
    state = torch.get_rng_state()
    with torch.no_grad():
        y, log_q = _draw(flow, 0)
        again, _ = _draw(flow, 0)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(y, again)
    np.testing.assert_allclose(y.mean(0), MU, atol=0.06)
    np.testing.assert_allclose(y.std(0), SIGMA, rtol=0.05)
    expected = stats.norm(MU.numpy(), SIGMA.numpy()).logpdf(y.numpy()).sum(-1)
    np.testing.assert_allclose(log_q.numpy(), expected, atol=1e-3)


def test_draws_from_base_alone_have_the_gaussian_moments():
    flow = gaussian_flow()
    z = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = flow.sample_from_base(z)
        exact, _ = _draw(flow, 0)
    np.testing.assert_allclose(y.mean(0), MU, atol=0.06)
    np.testing.assert_allclose(y.std(0), SIGMA, rtol=0.05)
    # The same noise through the density path: the same points to the looser tolerance.
    torch.testing.assert_close(y, exact, atol=1e-3, rtol=1e-3)


def _draw(flow, seed):
    from skfalcon.engine.flows import _rsample_and_log_prob

    return _rsample_and_log_prob(flow(), (4000,), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("field", FIELDS)
def test_the_density_of_a_random_field_integrates_to_one(field):
    torch.manual_seed(0)
    flow = FlowMatchingFlow(2, hidden_features=(16, 16), field=field)
    last = flow.transform.ode[-1] if field == "mlp" else flow.transform.residual.output
    with torch.no_grad():
        last.weight.mul_(4)  # a field far from zero
    edges = torch.linspace(-7, 7, 71)
    grid = torch.cartesian_prod(edges, edges)
    with torch.no_grad():
        density = flow.eval()().log_prob(grid).exp()
    cell = float(edges[1] - edges[0]) ** 2
    assert float(density.sum()) * cell == pytest.approx(1.0, abs=0.02)
    # ... and is not the base itself.
    base = torch.distributions.Normal(0.0, 1.0).log_prob(grid).sum(-1).exp()
    assert float((density - base).abs().sum()) * cell > 0.1


def test_above_the_exact_limit_log_prob_is_a_reproducible_warned_estimate():
    d = EXACT_TRACE_MAX_FEATURES + 2
    torch.manual_seed(0)
    stochastic = FlowMatchingFlow(d, hidden_features=(16,)).eval()
    assert not stochastic.exact
    exact = FlowMatchingFlow(d, hidden_features=(16,), exact=True).eval()
    exact.load_state_dict(stochastic.state_dict())
    y = torch.randn(300, d, generator=torch.Generator().manual_seed(1))
    state = torch.get_rng_state()
    with torch.no_grad(), pytest.warns(UserWarning, match="stochastic"):
        first, second = stochastic().log_prob(y), stochastic().log_prob(y)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, second)
    with torch.no_grad():
        reference = exact().log_prob(y)
    assert not torch.allclose(first, reference, atol=1e-4)
    # Unbiased: the errors average out over rows.
    error = first - reference
    assert abs(float(error.mean())) < 4 * float(error.std()) / len(y) ** 0.5 + 1e-3


def test_evaluation_losses_compare_the_same_draws():
    flow = FlowMatchingFlow(2, hidden_features=(16,))
    y = torch.randn(32, 2)
    assert torch.equal(flow.eval().loss(y), flow.loss(y))
    assert not torch.equal(flow.train().loss(y), flow.loss(y))


@pytest.mark.parametrize("power", [1.0, 3.0])
def test_training_times_follow_the_time_power(power):
    # tau = U^p has the distribution function t^(1/p): Beta(1/p, 1).
    flow = FlowMatchingFlow(2, hidden_features=(8,), time_power=power)
    seen = []

    def recording_field(tau, y, c=None):
        seen.append(tau)
        return torch.zeros_like(y)

    flow.transform.f = recording_field
    flow.loss(torch.randn(4000, 2), generator=torch.Generator().manual_seed(0))
    test = stats.kstest(seen[0].numpy(), stats.beta(1 / power, 1).cdf)
    assert test.pvalue > 0.01


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time_power": 0.5}, r"time_power must be a number >= 1; got 0.5"),
        ({"time_power": "3"}, r"time_power must be a number >= 1; got '3'"),
        ({"time_power": True}, r"time_power must be a number >= 1; got True"),
        ({"field": "unet"}, r"field must be one of \('residual', 'mlp'\); got 'unet'"),
        ({"hidden_features": ()}, r"hidden_features must hold at least one width; got \(\)"),
    ],
)
def test_a_bad_field_or_time_power_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FlowMatchingFlow(2, **kwargs)


def test_draws_without_densities_skip_the_divergence_and_agree_with_those_with_them():
    torch.manual_seed(0)
    normalized = NormalizedFlow(FlowMatchingFlow(2, 3, hidden_features=(16,)), RunningNorm(2), 2.0)
    normalized.eval()
    context = torch.randn(4, 3)
    with torch.no_grad():
        with_density, _ = normalized.sample_and_log_prob(
            (50,), context, generator=torch.Generator().manual_seed(1)
        )
        alone = normalized.sample((50,), context, generator=torch.Generator().manual_seed(1))
    assert alone.shape == (50, 4, 2)
    # The same base noise; the solvers' tolerances differ, so they agree to the looser.
    torch.testing.assert_close(alone, with_density, atol=1e-3, rtol=0)
    assert not torch.equal(alone, with_density)


def test_legacy_specs_build_the_mlp_field_and_new_ones_the_residual_field():
    # Specs written before vector_field existed read it as None: zuko's MLP, as then.
    assert _spec().build().conditional.flow.transform.field == "mlp"
    network = _spec(vector_field="residual").build()
    assert network.conditional.flow.transform.field == "residual"
    assert network.marginal.flow.transform.field == "residual"


@pytest.mark.parametrize("name", ["tolerance", "sample_tolerance"])
@pytest.mark.parametrize("tolerance", [0, 1e-3, "1e-5"])
def test_a_bad_tolerance_is_refused(name, tolerance):
    with pytest.raises(
        ValueError, match=rf"^{name} must be a number in \(0, 0.0001\]; got {tolerance!r}"
    ):
        FlowMatchingFlow(2, **{name: tolerance})


def _spec(**kwargs):
    return NetworkSpec(
        features=2,
        observation_features=3,
        net_type="flow_matching",
        hidden_features=(16,),
        cube_bound=2.0,
        **kwargs,
    )


def test_dual_flows_train_both_flows_on_the_flow_matching_loss():
    torch.manual_seed(0)
    network = _spec().build()
    u, x = torch.rand(64, 2) * 4 - 2, torch.randn(64, 3)
    losses = network.losses(u, x)
    conditional_nll = -network.conditional.log_prob(u, network.embed(x)).mean()
    assert losses.shape == (2,) and bool(torch.isfinite(losses).all())
    assert not torch.isclose(losses[0], conditional_nll)
    losses.sum().backward()
    for flow in (network.conditional, network.marginal):
        assert all(p.grad is not None for p in flow.parameters())


@pytest.mark.parametrize("vector_field", [None, "residual"])
def test_network_state_round_trip_samples_and_evaluates_alike(vector_field):
    torch.manual_seed(0)
    network = _spec(vector_field=vector_field).build()
    network.losses(torch.rand(64, 2) * 4 - 2, torch.randn(64, 3))  # set the norms
    network.set_marginal_policy(MarginalPolicy("mixture", 0.5))
    network.eval()
    loaded = network_from_state(network_state(network), torch.device("cpu"))
    summary = network.embed(torch.randn(3, 3))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        draws = [
            net.conditional.sample_and_log_prob(
                (5,), summary, generator=torch.Generator().manual_seed(4)
            )
            for net in (network, loaded)
        ]
        u = draws[0][0]
        ratios = [net.log_ratio(u, summary) for net in (network, loaded)]
    for a, b in zip(draws[0] + (ratios[0],), draws[1] + (ratios[1],), strict=True):
        torch.testing.assert_close(a, b)
