"""Tests of the prior's numpy interface: ``sample``, ``log_prob`` and ``repr``."""

import doctest
import math
import re

import numpy as np
import pytest
import scipy.stats
import torch

import skfalcon.priors
from skfalcon.priors import FactorizedPrior

# name -> (spec, its density as a frozen scipy distribution or a callable log-pdf)
FAMILIES = {
    "uniform": (("uniform", -3.0, 5.0), scipy.stats.uniform(-3.0, 8.0)),
    "normal": (("normal", 1.5, 0.3), scipy.stats.norm(1.5, 0.3)),
    "triangular": (("triangular", -1.0, 0.3, 2.0), scipy.stats.triang(1.3 / 3.0, -1.0, 3.0)),
    "cosine": (
        ("cosine", -0.3, 1.2),
        lambda t: np.log(np.cos(t) / (np.sin(1.2) - np.sin(-0.3))),
    ),
    "sine": (("sine", 0.4, 2.0), lambda t: np.log(np.sin(t) / (np.cos(0.4) - np.cos(2.0)))),
    "uvol": (("uvol", 10.0, 50.0), lambda t: np.log(3 * t**2 / (50.0**3 - 10.0**3))),
    "loguniform": (scipy.stats.loguniform(1e-3, 1e2), scipy.stats.loguniform(1e-3, 1e2)),
    "gamma": (scipy.stats.gamma(2.0, scale=1.5), scipy.stats.gamma(2.0, scale=1.5)),
}
WITH_CDF = [name for name, (_, ref) in FAMILIES.items() if not callable(ref)]
MIXED = [("uniform", 0.0, 1.0), ("fixed", 3.0), ("normal", 0.0, 2.0), ("sine", 0.5, 2.5)]


def reference_log_pdf(name, theta):
    reference = FAMILIES[name][1]
    return reference(theta) if callable(reference) else reference.logpdf(theta)


# --------------------------------------------------------------------------- sample


def test_sample_shape_dtype_and_fixed_columns():
    prior = FactorizedPrior(MIXED, marginalize=[2])
    theta = prior.sample(300, random_state=0)
    assert isinstance(theta, np.ndarray)
    assert theta.shape == (300, 4) and theta.dtype == np.float64
    assert np.all(theta[:, 1] == 3.0)
    assert np.all((theta[:, 0] >= 0.0) & (theta[:, 0] <= 1.0))
    assert theta[:, 2].std() > 1.0  # the marginalized column is drawn too
    assert prior.sample(0, random_state=0).shape == (0, 4)


@pytest.mark.parametrize(
    "make", [lambda: 7, lambda: np.random.RandomState(7), lambda: np.random.default_rng(7)]
)
def test_sample_is_reproducible_and_leaves_global_generators_alone(make):
    prior = FactorizedPrior(MIXED)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()  # noqa: NPY002
    first, again = prior.sample(50, make()), prior.sample(50, random_state=make())
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, prior.sample(50, random_state=8))
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)  # noqa: NPY002


def test_sample_advances_a_generator_and_accepts_none():
    prior = FactorizedPrior(MIXED)
    rng = np.random.RandomState(0)
    assert not np.array_equal(prior.sample(20, rng), prior.sample(20, rng))
    assert prior.sample(5).shape == (5, 4)


@pytest.mark.parametrize("name", WITH_CDF)
def test_samples_follow_the_spec(name):
    prior = FactorizedPrior([FAMILIES[name][0]])
    theta = prior.sample(2000, random_state=1).ravel()
    assert scipy.stats.kstest(theta, FAMILIES[name][1].cdf).pvalue > 1e-3


def test_log_uniform_samples_are_uniform_in_log():
    prior = FactorizedPrior([scipy.stats.loguniform(1e-3, 1e2)])
    log_theta = np.log10(prior.sample(2000, random_state=2).ravel())
    assert scipy.stats.kstest(log_theta, scipy.stats.uniform(-3.0, 5.0).cdf).pvalue > 1e-3
    # and not uniform in theta: most of the mass lies below 1, a tenth of the range
    assert np.mean(10**log_theta < 1.0) == pytest.approx(0.6, abs=0.05)


@pytest.mark.parametrize(
    ("n", "random_state", "error", "message"),
    [
        (-1, 0, ValueError, "n must be an int >= 0; got -1"),
        (2.5, 0, ValueError, "n must be an int >= 0; got 2.5"),
        (3, "seed", ValueError, "'seed' cannot be used to seed"),
    ],
)
def test_sample_bad_arguments(n, random_state, error, message):
    with pytest.raises(error, match=re.escape(message)):
        FactorizedPrior(MIXED).sample(n, random_state=random_state)


# --------------------------------------------------------------------------- log_prob


@pytest.mark.parametrize("name", FAMILIES)
def test_log_prob_matches_the_reference(name):
    prior = FactorizedPrior([FAMILIES[name][0]])
    theta = prior.sample(500, random_state=0)
    log_prob = prior.log_prob(theta)
    assert log_prob.shape == (500,) and log_prob.dtype == np.float64
    np.testing.assert_allclose(
        log_prob, reference_log_pdf(name, theta.ravel()), rtol=1e-10, atol=1e-10
    )


def test_log_prob_sums_columns_and_skips_fixed_ones():
    specs = [FAMILIES[name][0] for name in FAMILIES] + [("fixed", -1.0)]
    prior = FactorizedPrior(specs)
    theta = prior.sample(100, random_state=3)
    expected = sum(reference_log_pdf(name, theta[:, i]) for i, name in enumerate(FAMILIES))
    np.testing.assert_allclose(prior.log_prob(theta), expected, rtol=1e-10)
    theta[:5, -1] = 0.0  # off the fixed value
    assert np.all(prior.log_prob(theta)[:5] == -np.inf)
    assert np.all(np.isfinite(prior.log_prob(theta)[5:]))


def test_log_prob_outside_the_support_is_minus_infinity():
    prior = FactorizedPrior([("uniform", 0.0, 1.0), ("normal", 0.0, 1.0)])
    theta = [[0.5, 0.0], [1.5, 0.0], [-np.inf, 0.0], [0.5, np.inf], [0.5, 40.0]]
    log_prob = prior.log_prob(theta)
    assert np.all(log_prob[1:4] == -np.inf)
    assert np.isfinite(log_prob[[0, 4]]).all()


def test_log_prob_of_one_row_and_of_the_inferred_columns():
    prior = FactorizedPrior(MIXED, marginalize=[2])
    theta = prior.sample(20, random_state=4)
    full = prior.log_prob(theta)
    assert prior.log_prob(theta[0]).shape == (1,)
    assert prior.log_prob(theta[0].tolist())[0] == full[0]
    inferred = prior.log_prob(theta[:, prior.inferred_mask])
    np.testing.assert_allclose(full - inferred, scipy.stats.norm(0, 2).logpdf(theta[:, 2]))
    # the inferred columns' density is the torch one of the free columns
    free = torch.as_tensor(theta[:, prior.free_mask])
    np.testing.assert_allclose(inferred, prior.log_prob_tensor(free).numpy(), rtol=1e-12)
    assert prior.log_prob(np.empty((0, 4))).shape == (0,)


@pytest.mark.parametrize(
    ("theta", "message"),
    [
        (np.zeros((3, 2)), "theta has shape (3, 2); expected (n, 4), one column per prior "),
        (np.zeros(5), "theta has shape (5,); expected (n, 4)"),
        (np.zeros((2, 2, 4)), "theta has shape (2, 2, 4)"),
        ([[0.5, 3.0, np.nan, 1.0]], "theta holds NaN in 1 of 1 rows (first: row 0"),
        ([["a", 3.0, 0.0, 1.0]], "theta"),
    ],
)
def test_log_prob_bad_input(theta, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FactorizedPrior(MIXED).log_prob(theta)


def test_log_prob_shape_error_names_the_inferred_alternative():
    with pytest.raises(ValueError, match=re.escape("or (n, 3) without the marginalized ones")):
        FactorizedPrior(MIXED, marginalize=[2]).log_prob(np.zeros((3, 2)))


# --------------------------------------------------------------------------- repr and docs


@pytest.mark.parametrize(
    ("dist", "expected"),
    [
        (scipy.stats.norm(loc=0, scale=2), "scipy.stats.norm(loc=0, scale=2)"),
        (scipy.stats.norm(0, 2), "scipy.stats.norm(0, 2)"),
        (
            scipy.stats.gamma(np.float64(2.5), scale=np.array(1.5)),
            "scipy.stats.gamma(2.5, scale=1.5)",
        ),
        (scipy.stats.beta(2, 3, loc=-1.0), "scipy.stats.beta(2, 3, loc=-1.0)"),
    ],
)
def test_repr_shows_scipy_distributions_and_their_arguments(dist, expected):
    prior = FactorizedPrior([("normal", 0.0, 1.0), dist])
    assert repr(prior) == (
        f"FactorizedPrior([('normal', 0.0, 1.0), {expected}], marginalize=None, "
        "hypercube_bound=2.0)"
    )
    assert "object at" not in repr(prior)


def test_errors_about_scipy_objects_show_no_address():
    with pytest.raises(ValueError, match=re.escape("e.g. [scipy.stats.norm(0, 1)]")):
        FactorizedPrior(scipy.stats.norm(0, 1))
    with pytest.raises(ValueError, match="a scipy.stats multivariate_normal_frozen") as info:
        FactorizedPrior([scipy.stats.multivariate_normal([0.0, 0.0])])
    assert "object at" not in str(info.value)


def test_docstring_examples_run():
    results = doctest.testmod(skfalcon.priors, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert results.attempted >= 10 and results.failed == 0


def test_sample_box_and_complete_use_the_numpy_sample():
    prior = FactorizedPrior(MIXED, marginalize=[2])
    low, high = np.full(2, -0.5), np.full(2, 0.5)
    theta = prior.sample_box(low, high, 50, random_state=np.random.default_rng(0))
    assert theta.shape == (50, 4) and np.all(theta[:, 1] == 3.0)
    u = prior.theta_to_u(theta)[0]
    assert np.all((u >= -0.5) & (u <= 0.5))
    assert math.isclose(prior.box_volume(low, high), 1 / 16)


def test_estimator_repr_shows_scipy_priors_as_written():
    from scipy import stats

    from skfalcon import FlowPosteriorEstimator

    est = FlowPosteriorEstimator(prior=[stats.norm(0, 2), ("uniform", 0, 1)], lr=1e-3)
    text = repr(est)
    assert "scipy.stats.norm(0, 2)" in text and "('uniform', 0, 1)" in text
    assert "object at 0x" not in text
    # The repr leaves the estimator's own parameters alone.
    assert isinstance(est.get_params()["prior"][0], type(stats.norm(0, 2)))
