"""Tests of the verdicts: calibrated posteriors pass, miscalibrated ones fail, and the
bands hold their stated level."""

import numpy as np
import pytest
from scipy import stats
from sklearn.utils import check_random_state

from skfalcon.diagnostics import (
    CoverageResult,
    SBCResult,
    _holm,
    coverage_hpd,
    coverage_tarp,
    posterior_predictive_check,
    sbc,
    sbc_test,
)

NOISE = 0.5  # x = theta + N(0, NOISE^2), theta ~ N(0, 1) per coordinate


class ConjugateGaussian:
    """The exact posterior of a Gaussian conjugate model, its scale multiplied by
    ``scale`` (0.5: overconfident)."""

    def __init__(self, scale=1.0):
        self.scale = scale

    def _mean_std(self, x):
        shrink = 1.0 / (1.0 + NOISE**2)
        return shrink * x, self.scale * np.sqrt(NOISE**2 * shrink)

    def sample(self, x, n_samples, random_state=None):
        x = np.asarray(x, dtype=np.float64)
        mean, std = self._mean_std(np.atleast_2d(x))
        noise = check_random_state(random_state).standard_normal((len(mean), n_samples, 2))
        samples = mean[:, None, :] + std * noise
        return samples[0] if x.ndim == 1 else samples

    def log_prob(self, theta, x):
        mean, std = self._mean_std(np.atleast_2d(np.asarray(x, dtype=np.float64)))
        return stats.norm(mean, std).logpdf(theta).sum(axis=-1)


def _simulate(theta, random_state):
    return theta + NOISE * np.random.default_rng(random_state).standard_normal(theta.shape)


@pytest.fixture(scope="module")
def pairs():
    theta = np.random.default_rng(0).standard_normal((300, 2))
    return theta, _simulate(theta, 1)


@pytest.mark.parametrize("scale", [1.0, 0.5], ids=["calibrated", "overconfident"])
def test_sbc_hpd_and_tarp_verdicts(pairs, scale):
    theta, x = pairs
    est = ConjugateGaussian(scale)
    calibrated = scale == 1.0
    result = sbc(est, theta, x, n_posterior_samples=100, random_state=0)
    assert isinstance(result, SBCResult)
    assert result.passed is calibrated
    assert result.passed_parameters.tolist() == [calibrated, calibrated]
    hpd = coverage_hpd(est, theta, x, n_posterior_samples=100, random_state=0)
    tarp = coverage_tarp(est.sample(x, 100, random_state=1), theta, random_state=0)
    for coverage in (hpd, tarp):
        assert isinstance(coverage, CoverageResult)
        assert coverage.passed is calibrated
        assert (coverage.p_value > 0.05) is calibrated
    if not calibrated:  # overconfident: HPD coverage below the diagonal
        assert np.all(hpd.coverage[1:-1] < hpd.levels[1:-1])
        assert hpd.max_deviation > 0.3


def test_the_verdict_is_the_band(pairs):
    """Passed if and only if every curve stays inside its band."""
    theta, x = pairs
    for scale in (1.0, 0.8, 0.5):
        result = sbc(ConjugateGaussian(scale), theta, x, n_posterior_samples=50, random_state=2)
        inside = (result.ecdf >= result.band[:, :1] - 1e-12) & (
            result.ecdf <= result.band[:, 1:] + 1e-12
        )
        assert bool(inside.all()) == result.passed
        cover = coverage_hpd(ConjugateGaussian(scale), theta, x, n_posterior_samples=50)
        within = (cover.coverage >= cover.band[:, 0] - 1e-12) & (
            cover.coverage <= cover.band[:, 1] + 1e-12
        )
        assert bool(within.all()) == cover.passed


@pytest.mark.parametrize("n_parameters", [1, 3])
def test_uniform_ranks_fail_at_about_the_stated_rate(n_parameters):
    rng = np.random.default_rng(5)
    n_runs = 200
    failed = sum(
        not sbc_test(rng.integers(0, 31, size=(80, n_parameters)), 30, confidence=0.9).passed
        for _ in range(n_runs)
    )
    # 10 % expected (at most, with Holm over several parameters); binomial sd about 2 %
    assert 0.03 <= failed / n_runs <= 0.17


def test_sbc_is_reproducible_and_names_follow_a_dataframe(pairs):
    pd = pytest.importorskip("pandas")
    theta, x = pairs
    frame = pd.DataFrame(theta, columns=["mass", "radius"])
    a = sbc(ConjugateGaussian(), frame, x, n_posterior_samples=20, random_state=3)
    b = sbc(ConjugateGaussian(), theta, x, n_posterior_samples=20, random_state=3)
    np.testing.assert_array_equal(a.ranks, b.ranks)
    np.testing.assert_array_equal(a.pvalues, b.pvalues)
    assert a.names == ("mass", "radius") and b.names == ("theta0", "theta1")
    text = repr(a)
    assert text.startswith("SBCResult(passed=") and "mass" in text and "Holm" in text


def test_holm_adjustment():
    np.testing.assert_allclose(_holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(_holm(np.array([0.5, 0.9])), [1.0, 1.0])


def test_coverage_band_is_exact_at_the_ends_and_widens_in_the_middle(pairs):
    theta, x = pairs
    result = coverage_hpd(ConjugateGaussian(), theta, x, n_posterior_samples=50, random_state=0)
    assert result.band[0].tolist() == [0.0, 0.0] and result.band[-1].tolist() == [1.0, 1.0]
    width = result.band[:, 1] - result.band[:, 0]
    assert width[10] == width.max() and width[10] < 0.25
    assert result.n_simulations == 300 and "kind='HPD'" in repr(result)


def test_posterior_predictive_check_verdict():
    x_obs = _simulate(np.array([[0.3, -0.2]]), 4)[0]

    def simulator(theta):
        return _simulate(theta, 0)

    exact = posterior_predictive_check(ConjugateGaussian(), simulator, x_obs, random_state=0)
    assert exact.passed and exact.passed_features.all()
    np.testing.assert_allclose(
        exact.adjusted_p_value, stats.false_discovery_control(exact.p_value, method="bh")
    )

    class Shifted(ConjugateGaussian):
        def sample(self, x, n_samples, random_state=None):
            return super().sample(x, n_samples, random_state) + 3.0

    wrong = posterior_predictive_check(Shifted(), simulator, x_obs, n_samples=200)
    assert not wrong.passed and not wrong.passed_features.any()
    assert "flagged_features=[0, 1]" in repr(wrong)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sbc_test(np.zeros((10, 2)), 5, confidence=1.0), r"confidence must be in \(0, 1\)"),
        (lambda: sbc_test(np.zeros((10, 2)), 5, names=["a"]), "names has 1 entries for 2"),
        (lambda: sbc_test(np.full((10, 2), 9), 5), r"integers in \[0, n_posterior_samples=5\]"),
        (
            lambda: coverage_tarp(np.zeros((4, 3, 2)), np.zeros((4, 2)), confidence=0),
            "confidence must be in",
        ),
        (
            lambda: posterior_predictive_check(
                ConjugateGaussian(), np.sin, np.zeros(2), confidence=1.5
            ),
            "confidence must be in",
        ),
    ],
)
def test_bad_verdict_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_diagnostics_show_progress_for_a_verbose_estimator_only(pairs, monkeypatch):
    from skfalcon.diagnostics import sbc
    from skfalcon.estimators import _report

    made = []

    class Bar:
        def update(self, n):
            made.append(n)

        def close(self):
            pass

    monkeypatch.setattr(_report, "progress_bar", lambda total, desc, *a, **k: Bar())
    monkeypatch.setattr(_report, "PROGRESS_AFTER_SECONDS", 0.0)
    theta, x = pairs
    est = ConjugateGaussian()
    sbc(est, theta, x, batch_size=50, random_state=0)
    assert made == []  # no verbose attribute: quiet
    est.verbose = 1
    sbc(est, theta, x, batch_size=50, random_state=0)
    assert sum(made) + 50 == len(x)  # the bar starts after the first batch
