"""Tests of the factorized priors and their hypercube maps."""

import math
import pickle
import re

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skfalcon.priors import FactorizedPrior, make_prior

EPS = np.finfo(np.float64).eps

# name -> (spec, equivalent scipy distribution or None)
SPECS = {
    "uniform": (("uniform", -3.0, 5.0), scipy.stats.uniform(-3.0, 8.0)),
    "normal": (("normal", 1.5, 0.3), scipy.stats.norm(1.5, 0.3)),
    "cosine": (("cosine", -math.pi / 2, math.pi / 2), None),
    "cosine_part": (("cosine", -0.3, 1.2), None),
    "sine": (("sine", 0.0, math.pi), None),
    "sine_part": (("sine", 0.4, 2.0), None),
    "uvol": (("uvol", 0.0, 100.0), None),
    "uvol_part": (("uvol", 10.0, 5000.0), None),
    "triangular": (("triangular", -1.0, 0.3, 2.0), scipy.stats.triang(1.3 / 3.0, -1.0, 3.0)),
    "triangular_mode_low": (("triangular", 0.0, 0.0, 1.0), scipy.stats.triang(0.0)),
    "triangular_mode_high": (("triangular", 0.0, 1.0, 1.0), scipy.stats.triang(1.0)),
    "scipy_gamma": (scipy.stats.gamma(2.0, scale=1.5), scipy.stats.gamma(2.0, scale=1.5)),
    "scipy_beta": (scipy.stats.beta(2.0, 3.0), scipy.stats.beta(2.0, 3.0)),
    "scipy_t": (scipy.stats.t(4.0, 1.0, 2.0), scipy.stats.t(4.0, 1.0, 2.0)),
}
TORCH_NATIVE = [name for name in SPECS if not name.startswith("scipy")]
# the unnormalized density shape of the families scipy does not have
SHAPES = {"cosine": np.cos, "sine": np.sin, "uvol": np.square}


def support(name):
    spec = SPECS[name][0]
    if not isinstance(spec, tuple):
        return spec.support()
    if spec[0] == "normal":
        return -np.inf, np.inf
    return (spec[1], spec[3]) if spec[0] == "triangular" else spec[1:]


def kinks(name):
    """Where the density has a corner, to help quad."""
    spec = SPECS[name][0]
    return [spec[2]] if isinstance(spec, tuple) and spec[0] == "triangular" else []


def assert_close(actual, expected, rtol=1e-7, atol=0.0):
    np.testing.assert_allclose(
        np.asarray(actual.detach()), np.asarray(expected.detach()), rtol=rtol, atol=atol
    )


def prior_of(name, **kwargs):
    return FactorizedPrior([SPECS[name][0]], **kwargs)


def draws(prior, n=1000, seed=0):
    return prior.sample_tensor(n, generator=torch.Generator().manual_seed(seed))


def column(x):
    return torch.tensor(np.asarray(x, dtype=np.float64).reshape(-1, 1))


def round_off(name):
    """Allowed round-off, in ulps: scipy's own cdf and ppf are good to ~1e-13, not ~1e-16."""
    return 2048 if name.startswith("scipy") else 16


def ulps_of_theta(prior, theta):
    """Round-off scale of theta -> u -> theta: an ulp of theta plus one of u seen through 1/jac."""
    jac = prior.log_abs_det_jacobian(theta).exp()[:, None]
    return EPS * (theta.abs() + 2 * prior.hypercube_bound / jac)


def ulps_of_u(prior, u, theta):
    """Round-off scale of u -> theta -> u: an ulp of u plus one of theta seen through jac."""
    jac = prior.log_abs_det_jacobian(theta).exp()[:, None]
    return EPS * (prior.hypercube_bound + jac * theta.abs())


# --------------------------------------------------------------------------- the maps


@pytest.mark.parametrize("name", SPECS)
def test_round_trip_theta_to_u_to_theta(name):
    prior = prior_of(name)
    theta = draws(prior)
    back = prior.from_cube(prior.to_cube(theta))
    assert torch.all((back - theta).abs() <= round_off(name) * ulps_of_theta(prior, theta))


@pytest.mark.parametrize("name", SPECS)
def test_round_trip_u_to_theta_to_u(name):
    prior = prior_of(name)
    u = torch.linspace(-2.0, 2.0, 1001, dtype=torch.float64)[:, None]
    theta = prior.from_cube(u)
    back = prior.to_cube(theta)
    assert torch.all((back - u).abs() <= round_off(name) * ulps_of_u(prior, u, theta))


def test_normal_tails_stay_accurate_and_finite():
    prior = FactorizedPrior([("normal", 0.0, 1.0)])
    z = column([-8, -7, -6, -5, -2, 0, 2, 5, 6, 7, 8])
    back = prior.from_cube(prior.to_cube(z))
    near = z.abs() <= 6
    assert_close(back[near], z[near], rtol=0, atol=1e-9)
    # at 8 sigma one float step of u holds ~10% of the tail mass: limited by u, not the map
    assert_close(back, z, rtol=0, atol=0.01)
    assert torch.isfinite(prior.log_abs_det_jacobian(column([-40, 40]))).all()
    for dtype, edge in [(torch.float64, 8.29), (torch.float32, 5.42)]:
        theta = prior.from_cube(torch.tensor([[-2.0], [2.0]], dtype=dtype))
        assert theta.dtype == dtype
        assert_close(theta.ravel(), torch.tensor([-edge, edge], dtype=dtype), rtol=0, atol=0.01)


@pytest.mark.parametrize("name", TORCH_NATIVE)
def test_log_abs_det_jacobian_matches_autograd(name):
    prior = prior_of(name)
    theta = draws(prior, n=200).requires_grad_()
    (derivative,) = torch.autograd.grad(prior.to_cube(theta).sum(), theta)
    assert_close(prior.log_abs_det_jacobian(theta), derivative.log().sum(-1), rtol=1e-9, atol=1e-9)


def test_jacobian_is_diagonal_and_matches_on_many_columns():
    prior = FactorizedPrior([SPECS[name][0] for name in TORCH_NATIVE])
    theta = draws(prior, n=3, seed=1)
    for row in theta:
        jacobian = torch.autograd.functional.jacobian(prior.to_cube, row[None])[0, :, 0, :]
        off_diagonal = jacobian - torch.diag(torch.diagonal(jacobian))
        assert torch.all(off_diagonal == 0)
        assert_close(prior.log_abs_det_jacobian(row[None])[0], torch.diagonal(jacobian).log().sum())


@pytest.mark.parametrize(
    ("name", "bound"),
    [(name, 2.0) for name in SPECS]
    + [
        (name, bound)
        for name in ("uniform", "normal", "sine", "scipy_gamma")
        for bound in (1.0, 3.0)
    ],
)
def test_prior_samples_are_uniform_on_the_cube(name, bound):
    prior = prior_of(name, hypercube_bound=bound)
    u = prior.to_cube(draws(prior)).numpy().ravel()
    assert np.all(np.abs(u) <= bound)
    assert scipy.stats.kstest(u, scipy.stats.uniform(-bound, 2 * bound).cdf).pvalue > 1e-3


# --------------------------------------------------------------------------- densities


@pytest.mark.parametrize("name", [name for name, (_, ref) in SPECS.items() if ref is not None])
def test_log_prob_matches_scipy(name):
    prior = prior_of(name)
    reference = SPECS[name][1]
    theta = draws(prior, n=500)
    assert_close(
        prior.log_prob_tensor(theta),
        torch.as_tensor(reference.logpdf(theta.numpy().ravel())),
        rtol=1e-10,
        atol=1e-10,
    )
    assert scipy.stats.kstest(theta.numpy().ravel(), reference.cdf).pvalue > 1e-3


@pytest.mark.parametrize("name", SHAPES)
def test_log_prob_has_the_stated_shape(name):
    prior = prior_of(name)
    theta = draws(prior, n=500)
    offset = prior.log_prob_tensor(theta).numpy() - np.log(SHAPES[name](theta.numpy().ravel()))
    np.testing.assert_allclose(offset, offset[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", SPECS)
def test_density_integrates_to_one_and_to_the_cube_map(name):
    prior = prior_of(name)
    low, high = support(name)

    def density(x):
        return prior.log_prob_tensor(column(x)).exp().item()

    total, _ = scipy.integrate.quad(density, low, high, points=kinks(name) or None)
    assert total == pytest.approx(1.0, abs=1e-8)
    # F(theta) = (u + b) / 2b must be the integral of the density
    for theta in draws(prior, n=3, seed=3).ravel().tolist():
        points = [kink for kink in kinks(name) if low < kink < theta] or None
        mass, _ = scipy.integrate.quad(density, low, theta, points=points)
        u = prior.to_cube(column(theta)).item()
        assert mass == pytest.approx((u + 2.0) / 4.0, abs=1e-8)


@pytest.mark.parametrize("name", SPECS)
def test_outside_the_support(name):
    prior = prior_of(name)
    low, high = support(name)
    outside = [x for x in (low - 1.0, high + 1.0, -np.inf, np.inf) if not low <= x <= high]
    theta = column(outside)
    assert not prior.in_support(theta).any()
    assert torch.all(prior.log_prob_tensor(theta) == -np.inf)
    assert torch.all(prior.log_abs_det_jacobian(theta) == -np.inf)
    u = prior.to_cube(theta)
    assert torch.all(u.abs() == 2.0)  # clamped onto a face of the cube
    assert not prior.from_cube(torch.tensor([[-5.0], [5.0]], dtype=torch.float64)).isnan().any()
    nan = column([np.nan])
    assert not prior.in_support(nan).any()
    assert prior.log_prob_tensor(nan).item() == -np.inf
    assert prior.in_support(draws(prior, n=100)).all()


def test_log_prob_sums_columns_and_gradients_stay_finite():
    prior = FactorizedPrior([SPECS[name][0] for name in TORCH_NATIVE])
    theta = draws(prior, n=50, seed=2)
    columns = [prior_of(name).log_prob_tensor(theta[:, [i]]) for i, name in enumerate(TORCH_NATIVE)]
    assert_close(prior.log_prob_tensor(theta), sum(columns), rtol=1e-12)
    theta[0, 0] = 100.0  # outside the first marginal only
    theta.requires_grad_()
    log_prob = prior.log_prob_tensor(theta)
    assert log_prob[0] == -np.inf and torch.isfinite(log_prob[1:]).all()
    (gradient,) = torch.autograd.grad(log_prob[1:].sum(), theta)
    assert torch.isfinite(gradient).all()


# --------------------------------------------------------------------------- structure


def test_masks_fixed_values_and_sample_shapes():
    specs = [
        ("uniform", 0.0, 1.0),
        ("fixed", 3.0),
        ("normal", 0.0, 1.0),
        ("fixed", -1.0),
        ("sine", 0.0, math.pi),
    ]
    prior = FactorizedPrior(specs, marginalize=[2, 3])
    np.testing.assert_array_equal(prior.fixed_mask, [False, True, False, True, False])
    np.testing.assert_array_equal(prior.marginalized_mask, [False, False, True, True, False])
    np.testing.assert_array_equal(prior.inferred_mask, [True, True, False, False, True])
    np.testing.assert_array_equal(prior.free_mask, [True, False, False, False, True])
    np.testing.assert_array_equal(prior.fixed_values, [np.nan, 3.0, np.nan, -1.0, np.nan])
    assert (prior.n_parameters, prior.n_free, prior.marginalize) == (5, 2, (2, 3))
    assert prior.specs == specs

    theta = draws(prior, n=300)
    assert theta.shape == (300, 5) and theta.dtype == torch.float64
    assert torch.all(theta[:, 1] == 3.0) and torch.all(theta[:, 3] == -1.0)
    assert scipy.stats.kstest(theta[:, 2].numpy(), "norm").pvalue > 1e-3
    free = theta[:, prior.free_mask]
    assert prior.to_cube(free).shape == (300, 2)
    assert prior.from_cube(torch.zeros(7, 3, 2, dtype=torch.float64)).shape == (7, 3, 2)
    assert prior.log_prob_tensor(free).shape == prior.in_support(free).shape == (300,)
    assert draws(prior, n=0).shape == (0, 5)
    with pytest.raises(ValueError, match=re.escape("shape (..., 2)")):
        prior.to_cube(theta)


def test_only_fixed_parameters():
    prior = FactorizedPrior([("fixed", 1.0)])
    assert prior.n_free == 0
    assert torch.all(draws(prior, n=4) == 1.0)
    assert prior.log_prob_tensor(torch.zeros(4, 0, dtype=torch.float64)).tolist() == [0.0] * 4


def test_sample_is_reproducible_and_leaves_the_global_generator_alone():
    prior = FactorizedPrior([SPECS[name][0] for name in SPECS])
    state = torch.get_rng_state()
    first, again, other = (draws(prior, n=50, seed=seed) for seed in (7, 7, 8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(
        prior.sample_tensor(50, generator=torch.Generator().manual_seed(7), dtype=torch.float32),
        first.float(),
    )


@pytest.mark.parametrize("name", SPECS)
def test_float32_stays_float32(name):
    prior = prior_of(name)
    theta64 = draws(prior, n=100)
    theta = theta64.float()
    u = prior.to_cube(theta)
    outputs = [
        u,
        prior.from_cube(u),
        prior.log_prob_tensor(theta),
        prior.log_abs_det_jacobian(theta),
    ]
    assert all(out.dtype == torch.float32 for out in outputs)
    assert all(torch.isfinite(out).all() for out in outputs[:2])
    assert_close(u, prior.to_cube(theta64).float(), rtol=0, atol=1e-4)
    generator = torch.Generator().manual_seed(0)
    assert prior.sample_tensor(3, generator=generator, dtype=torch.float32).dtype == torch.float32
    edges = prior.from_cube(torch.tensor([[-2.0], [2.0]]))
    assert edges.dtype == torch.float32 and torch.isfinite(edges).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    prior = FactorizedPrior([SPECS[name][0] for name in SPECS] + [("fixed", 1.0)])
    theta = draws(prior, n=100)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(prior.sample_tensor(100, generator=generator, device="cuda").cpu(), theta)
    free = theta[:, prior.free_mask]
    u = prior.to_cube(free.cuda())
    assert u.device.type == "cuda"
    assert_close(u.cpu(), prior.to_cube(free), rtol=1e-12, atol=1e-12)
    assert_close(prior.from_cube(u).cpu(), prior.from_cube(u.cpu()), rtol=1e-12, atol=1e-12)
    assert_close(prior.log_prob_tensor(free.cuda()).cpu(), prior.log_prob_tensor(free), rtol=1e-12)
    assert prior.in_support(free.cuda()).device.type == "cuda"


def test_inputs_must_be_float_tensors():
    prior = prior_of("uniform")
    with pytest.raises(TypeError, match="floating-point torch.Tensor; got ndarray"):
        prior.to_cube(np.zeros((2, 1)))
    with pytest.raises(TypeError, match="torch.int64"):
        prior.from_cube(torch.zeros(2, 1, dtype=torch.int64))


def test_pickle_round_trip():
    prior = FactorizedPrior(
        [SPECS[name][0] for name in SPECS] + [("fixed", 2.0)],
        marginalize=[1],
        hypercube_bound=3.0,
    )
    loaded = pickle.loads(pickle.dumps(prior))
    assert repr(loaded) == repr(prior)
    theta = draws(prior, n=50)
    assert torch.equal(draws(loaded, n=50), theta)
    free = theta[:, prior.free_mask]
    assert torch.equal(loaded.to_cube(free), prior.to_cube(free))
    assert torch.equal(loaded.log_prob_tensor(free), prior.log_prob_tensor(free))


def test_repr():
    prior = FactorizedPrior(
        [["uniform", 0, 1], scipy.stats.gamma(2.0, scale=3.0)], marginalize=1, hypercube_bound=1
    )
    assert repr(prior) == (
        "FactorizedPrior([('uniform', 0.0, 1.0), scipy.stats.gamma(2.0, scale=3.0)], "
        "marginalize=[1], hypercube_bound=1.0)"
    )


def test_make_prior():
    specs = [("uniform", 0.0, 1.0), ("normal", 0.0, 1.0)]
    prior = make_prior(specs)
    assert isinstance(prior, FactorizedPrior) and prior.hypercube_bound == 2.0
    assert make_prior(prior) is prior
    # A prior keeps its own bound: make_prior never changes it.
    own = FactorizedPrior(specs, hypercube_bound=3.0)
    assert make_prior(own) is own and make_prior(own, marginalize=[1]).hypercube_bound == 3.0
    marginal = make_prior(prior, marginalize=[1])
    assert marginal.n_free == 1 and make_prior(marginal) is marginal  # None keeps its own
    assert make_prior(marginal, marginalize=[]).n_free == 2
    assert make_prior(specs, marginalize={-1}).marginalize == (1,)
    assert make_prior(specs, marginalize=np.int64(0)).marginalize == (0,)


# --------------------------------------------------------------------------- bad input

BAD_SPECS = [
    (("gaussian", 0.0, 1.0), "unknown prior type 'gaussian'"),
    (("uniform", 0.0), "'uniform' takes 2 numbers (low, high); got 1 in ('uniform', 0.0)"),
    (("triangular", 0.0, 1.0), "got 2 in ('triangular', 0.0, 1.0)"),
    (("fixed",), "'fixed' takes 1 numbers (value); got 0"),
    (("uniform", 1.0, 0.0), "needs low < high and a finite high - low; got low=1.0, high=0.0"),
    (("uniform", -1e308, 1e308), "a finite high - low; got low=-1e+308, high=1e+308"),
    (("uniform", 0.0, math.inf), "must be a finite real number; got inf"),
    (("uniform", "0", 1.0), "must be a finite real number; got '0'"),
    (("uniform", True, 2.0), "must be a finite real number; got True"),
    (("fixed", math.nan), "got nan"),
    (("normal", 0.0, -1.0), "needs std > 0; got std=-1.0"),
    (("normal", 0.0, 0.0), "needs std > 0; got std=0.0"),
    (
        ("triangular", 0.0, 2.0, 1.0),
        "needs a <= c <= b and a < b (lower, mode, upper); got a=0.0, c=2.0, b=1.0",
    ),
    (("triangular", 1.0, 1.0, 1.0), "got a=1.0, c=1.0, b=1.0"),
    (
        ("cosine", -2.0, 0.0),
        "needs -pi/2 <= low < high <= pi/2 and a finite high - low; got low=-2.0",
    ),
    (("cosine", 0.0, math.pi), f"got low=0.0, high={math.pi!r}; for a density proportional to sin"),
    (("sine", -0.1, 1.0), "needs 0 <= low < high <= pi and a finite high - low; got low=-0.1"),
    (("sine", 0.0, 4.0), "got low=0.0, high=4.0"),
    (("uvol", -1.0, 1.0), "needs 0 <= low < high and a finite high - low; got low=-1.0"),
    (("uvol", 2.0, 1.0), "got low=2.0, high=1.0"),
    (
        scipy.stats.norm,
        "scipy.stats.norm is not frozen; pass a frozen 1-D distribution such as",
    ),
    (scipy.stats.poisson(2.0), "scipy.stats.poisson(2.0) is discrete"),
    (scipy.stats.multivariate_normal([0.0, 0.0]), "is not a frozen 1-D continuous"),
    (scipy.stats.gamma(-1.0), "scipy.stats.gamma(-1.0) has invalid shape parameters"),
    (
        3.0,
        "expected a tuple such as ('uniform', 0.0, 1.0) or a frozen scipy.stats distribution; got 3.0",
    ),
    ((), "got ()"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS, ids=[repr(m) for _, m in BAD_SPECS])
def test_bad_spec_raises(spec, message):
    with pytest.raises(ValueError, match=re.escape("parameter 1: ") + ".*" + re.escape(message)):
        FactorizedPrior([("uniform", 0.0, 1.0), spec])


@pytest.mark.parametrize(
    ("prior", "kwargs", "message"),
    [
        (("uniform", 0.0, 1.0), {}, "prior must be a list of specs, e.g. [('uniform', 0.0, 1.0)]"),
        ([], {}, "non-empty list of specs such as [('uniform', 0.0, 1.0)]; got []"),
        ("uniform", {}, "got 'uniform'"),
        ([("uniform", 0.0, 1.0)], {"marginalize": [5]}, "marginalize index 5 is out of range"),
        ([("uniform", 0.0, 1.0)], {"marginalize": ["a"]}, "parameter indices (int); got 'a'"),
        ([("uniform", 0.0, 1.0)], {"marginalize": 1.5}, "or a sequence of ints; got 1.5"),
        ([("uniform", 0.0, 1.0)], {"hypercube_bound": 0}, "finite number > 0; got 0"),
        ([("uniform", 0.0, 1.0)], {"hypercube_bound": -1.0}, "got -1.0"),
        ([("uniform", 0.0, 1.0)], {"hypercube_bound": math.inf}, "got inf"),
        ([("uniform", 0.0, 1.0)], {"hypercube_bound": "2"}, "got '2'"),
    ],
)
def test_bad_arguments_raise(prior, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FactorizedPrior(prior, **kwargs)


def test_bad_sample_size_raises():
    with pytest.raises(ValueError, match=re.escape("n must be an int >= 0; got -1")):
        prior_of("uniform").sample_tensor(-1)


# --------------------------------------------------------------------------- properties

finite = {"allow_nan": False, "allow_infinity": False}


@settings(max_examples=50, deadline=None)
@given(
    family=st.sampled_from(["uniform", "normal"]),
    location=st.floats(-1e3, 1e3, **finite),
    scale=st.floats(1e-3, 1e3, **finite),
    fraction=st.floats(-0.999, 0.999, **finite),
    bound=st.floats(0.5, 4.0, **finite),
)
def test_round_trip_property(family, location, scale, fraction, bound):
    spec = (
        ("uniform", location, location + scale)
        if family == "uniform"
        else ("normal", location, scale)
    )
    prior = FactorizedPrior([spec], hypercube_bound=bound)
    u = torch.tensor([[fraction * bound]], dtype=torch.float64)
    theta = prior.from_cube(u)
    assert prior.in_support(theta).all()
    assert torch.all((prior.to_cube(theta) - u).abs() <= 16 * ulps_of_u(prior, u, theta))
    back = prior.from_cube(prior.to_cube(theta))
    assert torch.all((back - theta).abs() <= 16 * ulps_of_theta(prior, theta))
