r"""Diagnostics with a verdict: is the posterior calibrated, does it explain the data?

Each check returns a result object holding the statistic, its p-value and tolerance band
at a stated confidence, ``passed`` and a ``plot(ax=None)`` method (the ``plots`` extra).
The raw statistics of :mod:`skfalcon.metrics` are re-exported here, so that one import
serves all diagnostics.

**Simultaneous ECDF bands.** Simulation-based calibration (:func:`sbc`) and expected
coverage (:func:`coverage_hpd`, :func:`coverage_tarp`) both reduce to one question: is the
empirical CDF :math:`F_n` of :math:`n` ranks (or credibilities) that of a uniform? At an
evaluation point :math:`z_k` with null probability :math:`p_k`, the count :math:`n
F_n(z_k)` is :math:`\mathrm{Bin}(n, p_k)`, and its two-sided tail probability is

.. math:: t_k = \min\{1, 2 \min[P(X \le n F_n(z_k)), P(X \ge n F_n(z_k))]\}.

The statistic is :math:`\gamma = \min_k t_k`. Its null distribution is simulated once
(multinomial counts of the cells between the points, fixed seed, cached per number of
ranks, points and confidence); the p-value is the share of simulated :math:`\gamma` at or
below the observed one, and the band at confidence :math:`1 - \alpha` holds, at every
point, the counts whose :math:`t_k` is at least the :math:`\alpha`-quantile of the
simulated :math:`\gamma`. The curve stays inside the band at all points if and only if
the p-value exceeds :math:`\alpha`: the band is simultaneous, as in Säilynoja, Bürkner &
Vehtari (2022), "Graphical test for discrete uniformity and its applications in
goodness-of-fit evaluation and multiple sample comparison", Statistics and Computing 32.

**Several parameters.** SBC tests each parameter and corrects for their number with
Holm's step-down procedure (family-wise error at most :math:`\alpha`): the check passes
when every parameter's ECDF stays inside the band at confidence :math:`1 - \alpha / d`,
the band drawn by :meth:`SBCResult.plot`.

**Several features.** :func:`posterior_predictive_check` adjusts its per-feature p-values
by the Benjamini-Hochberg procedure (:func:`scipy.stats.false_discovery_control`): a
feature is flagged at false discovery rate :math:`\alpha`, and the check passes when none
is, which is Simes' global test at level :math:`\alpha`.
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.utils import check_array, check_random_state, check_scalar

from skfalcon.metrics import (
    _check_estimator,
    _check_levels,
    _check_ranks,
    _draw_seed,
    _hpd_credibility,
    _tarp_credibility,
    c2st,
    expected_coverage_hpd,
    expected_coverage_tarp,
    sbc_ranks,
    sbc_uniformity_pvalues,
)
from skfalcon.utils.validation import check_positive_int

__all__ = [
    "SBCResult",
    "CoverageResult",
    "PredictiveCheckResult",
    "sbc",
    "sbc_test",
    "coverage_hpd",
    "coverage_tarp",
    "posterior_predictive_check",
    "c2st",
    "sbc_ranks",
    "sbc_uniformity_pvalues",
    "expected_coverage_hpd",
    "expected_coverage_tarp",
]

_NULL_SEED = 0
_MIN_NULL_DRAWS = 10_000
_MAX_SBC_POINTS = 100


# --------------------------------------------------------------------------- the band


def _check_confidence(confidence) -> float:
    check_scalar(confidence, "confidence", numbers.Real)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}.")
    return float(confidence)


@functools.lru_cache(maxsize=32)
def _tail_table(n: int, points: tuple[float, ...]) -> np.ndarray:
    """Two-sided binomial tail probability ``t[k, c]`` of count ``c`` at each point."""
    counts = np.arange(n + 1)[None, :]
    p = np.asarray(points)[:, None]
    lower = stats.binom.cdf(counts, n, p)
    upper = stats.binom.sf(counts - 1, n, p)
    return np.minimum(1.0, 2.0 * np.minimum(lower, upper))


@functools.lru_cache(maxsize=32)
def _null_gamma(n: int, points: tuple[float, ...], n_draws: int) -> np.ndarray:
    """Sorted simulated statistics ``min_k t_k`` of ``n`` uniform ranks at ``points``."""
    table = _tail_table(n, points)
    cells = np.diff(np.concatenate([[0.0], points, [1.0]]))
    rng = np.random.default_rng(_NULL_SEED)
    gammas = []
    for start in range(0, n_draws, _MIN_NULL_DRAWS):  # chunks bound the memory
        size = min(_MIN_NULL_DRAWS, n_draws - start)
        counts = rng.multinomial(n, cells, size=size).cumsum(axis=1)[:, :-1]
        gammas.append(table[np.arange(len(points)), counts].min(axis=1))
    return np.sort(np.concatenate(gammas))


def _simultaneous_test(counts: np.ndarray, n: int, points: np.ndarray, alpha: float):
    """P-values of ECDF counts ``(K, m)`` at null probabilities ``points`` ``(K,)``, and the
    band ``(lower, upper)`` of counts, shape ``(K,)``, at confidence ``1 - alpha``.

    ``points`` are sorted, distinct and strictly inside (0, 1). A column of ``counts`` is
    inside the band at every point if and only if its p-value exceeds ``alpha``.
    """
    n_draws = max(_MIN_NULL_DRAWS, int(np.ceil(200 / alpha)))
    key = tuple(points.tolist())
    null = _null_gamma(n, key, n_draws)
    table = _tail_table(n, key)
    observed = table[np.arange(len(points))[:, None], counts].min(axis=0)
    pvalues = (1 + np.searchsorted(null, observed, side="right")) / (n_draws + 1)
    # p > alpha  <=>  #{null <= observed} >= m  <=>  observed >= the m-th smallest null
    m = int(np.floor(alpha * (n_draws + 1) - 1)) + 1
    threshold = null[m - 1]
    inside = table >= threshold
    lower = inside.argmax(axis=1)
    upper = n - inside[:, ::-1].argmax(axis=1)
    return pvalues, lower, upper


def _holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (scipy offers only FDR adjustments)."""
    order = np.argsort(pvalues)
    d = len(pvalues)
    stepped = np.maximum.accumulate((d - np.arange(d)) * pvalues[order])
    adjusted = np.empty(d)
    adjusted[order] = np.minimum(1.0, stepped)
    return adjusted


def _names(names, d: int, default: str = "theta") -> tuple[str, ...]:
    if names is None:
        return tuple(f"{default}{i}" for i in range(d))
    names = tuple(str(name) for name in names)
    if len(names) != d:
        raise ValueError(f"names has {len(names)} entries for {d} parameters: {names!r}.")
    return names


def _estimator_names(estimator, theta, d: int):
    """Column names of a DataFrame ``theta``, else the estimator's inferred names."""
    columns = getattr(theta, "columns", None)
    if columns is not None:
        return [str(c) for c in columns]
    names = getattr(estimator, "feature_names_in_", None)
    inferred = getattr(estimator, "_inferred_columns", None)
    if names is not None and callable(inferred):
        names = np.asarray(names)[inferred()]
    return list(names) if names is not None and len(names) == d else None


def _table(header, rows) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, *rows]
    return "\n".join(
        ("  " + "  ".join(f"{c!s:<{w}}" for c, w in zip(line, widths, strict=True))).rstrip()
        for line in lines
    )


# --------------------------------------------------------------------------- SBC


@dataclass(frozen=True, eq=False, repr=False)
class SBCResult:
    r"""Simulation-based calibration: ECDF of ranks against the uniform, with a verdict.

    Returned by :func:`sbc` and :func:`sbc_test`.

    Attributes
    ----------
    ranks : ndarray of shape (n_simulations, n_parameters)
        Ranks of the true parameters among ``n_posterior_samples`` posterior samples.
    n_posterior_samples : int
        The number :math:`L` of posterior samples behind each rank.
    names : tuple of str
        Parameter names.
    confidence : float
        Family-wise confidence :math:`1 - \alpha` of the verdict.
    grid : ndarray of shape (n_points,)
        Normalized ranks :math:`z_k = b_k / (L + 1)` where the ECDF is evaluated.
    ecdf : ndarray of shape (n_points, n_parameters)
        Share of ranks below :math:`b_k`, per parameter.
    band : ndarray of shape (n_points, 2)
        Lower and upper ECDF bounds, simultaneous over the grid at confidence
        :math:`1 - \alpha / d` (Bonferroni over the :math:`d` parameters).
    pvalues : ndarray of shape (n_parameters,)
        P-values of the simultaneous uniformity test, per parameter.
    adjusted_pvalues : ndarray of shape (n_parameters,)
        Holm-adjusted p-values.
    passed_parameters : ndarray of bool, shape (n_parameters,)
        ``adjusted_pvalues > alpha``.
    passed : bool
        Every parameter passed: no ECDF leaves the band.
    correction : str
        The multiple-testing correction, ``"holm"``.
    """

    ranks: np.ndarray
    n_posterior_samples: int
    names: tuple[str, ...]
    confidence: float
    grid: np.ndarray
    ecdf: np.ndarray
    band: np.ndarray
    pvalues: np.ndarray
    adjusted_pvalues: np.ndarray
    passed_parameters: np.ndarray
    passed: bool
    correction: str = "holm"

    def __repr__(self) -> str:
        head = (
            f"SBCResult(passed={self.passed}, confidence={self.confidence:g}, "
            f"n_simulations={len(self.ranks)}, n_posterior_samples={self.n_posterior_samples}, "
            f"correction={self.correction!r})"
        )
        rows = [
            (name, f"{p:.3g}", f"{q:.3g}", str(bool(ok)))
            for name, p, q, ok in zip(
                self.names, self.pvalues, self.adjusted_pvalues, self.passed_parameters, strict=True
            )
        ]
        return head + "\n" + _table(("parameter", "p-value", "Holm p-value", "passed"), rows)

    def plot(self, ax=None):
        """ECDF minus uniform per parameter, with the band; see
        :func:`~skfalcon.plotting.plot_sbc_ecdf`."""
        from skfalcon.plotting import plot_sbc_ecdf

        return plot_sbc_ecdf(self, ax=ax)


def sbc_test(ranks, n_posterior_samples: int, *, confidence: float = 0.95, names=None):
    r"""Test SBC ranks for uniformity with simultaneous ECDF bands.

    The ECDF of each column of ranks is evaluated at up to 100 rank boundaries
    :math:`b_k` evenly spread over :math:`1, \dots, L`, where its count is exactly
    binomial under uniform ranks, and tested against the uniform with the simultaneous
    band of the module notes. Parameters are combined by Holm's procedure.

    Parameters
    ----------
    ranks : array-like of shape (n_simulations, n_parameters)
        Integer ranks in ``[0, n_posterior_samples]``, as from :func:`sbc_ranks`.
    n_posterior_samples : int
        The :math:`L` the ranks were computed with.
    confidence : float, default=0.95
        Family-wise confidence :math:`1 - \alpha`: a calibrated posterior passes with at
        least this probability.
    names : sequence of str, default=None
        Parameter names; ``None`` is ``theta0, theta1, ...``.

    Returns
    -------
    result : SBCResult

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon.diagnostics import sbc_test
    >>> rng = np.random.default_rng(0)
    >>> sbc_test(rng.integers(0, 101, size=(300, 2)), 100).passed
    True
    >>> u_shaped = np.where(rng.random((300, 2)) < 0.5, rng.integers(0, 10, (300, 2)), 95)
    >>> sbc_test(u_shaped, 100).passed
    False
    """
    n_posterior_samples = check_positive_int(n_posterior_samples, "n_posterior_samples")
    confidence = _check_confidence(confidence)
    ranks = _check_ranks(ranks, n_posterior_samples)
    n, d = ranks.shape
    names = _names(names, d)
    n_points = min(n_posterior_samples, _MAX_SBC_POINTS)
    boundaries = np.unique(np.round(np.linspace(0, n_posterior_samples + 1, n_points + 2)))
    boundaries = boundaries[1:-1].astype(np.int64)
    grid = boundaries / (n_posterior_samples + 1)
    counts = (ranks[None, :, :] < boundaries[:, None, None]).sum(axis=1)

    alpha = 1.0 - confidence
    pvalues, lower, upper = _simultaneous_test(counts, n, grid, alpha / d)
    adjusted = _holm(pvalues)
    passed = adjusted > alpha
    return SBCResult(
        ranks=ranks,
        n_posterior_samples=n_posterior_samples,
        names=names,
        confidence=confidence,
        grid=grid,
        ecdf=counts / n,
        band=np.column_stack([lower, upper]) / n,
        pvalues=pvalues,
        adjusted_pvalues=adjusted,
        passed_parameters=passed,
        passed=bool(passed.all()),
    )


def sbc(
    estimator,
    theta,
    x,
    *,
    n_posterior_samples: int = 100,
    confidence: float = 0.95,
    names=None,
    batch_size: int = 256,
    random_state=None,
) -> SBCResult:
    r"""Simulation-based calibration of an estimator, with a verdict.

    Computes :func:`sbc_ranks` and tests them with :func:`sbc_test`.

    Parameters
    ----------
    estimator : fitted estimator
        Has ``sample(x, n_samples, random_state=...)``, as for :func:`sbc_ranks`.
    theta : array-like of shape (n_simulations, n_parameters)
        True parameters drawn from the prior (not the training simulations).
    x : array-like of shape (n_simulations, n_features) or (n_simulations,)
        The observation simulated from each row of ``theta``.
    n_posterior_samples : int, default=100
        Posterior samples :math:`L` per observation.
    confidence : float, default=0.95
        Family-wise confidence of the verdict.
    names : sequence of str, default=None
        Parameter names; ``None`` takes the columns of a DataFrame ``theta``, else the
        estimator's ``feature_names_in_`` (its inferred parameters), else ``theta0, ...``.
    batch_size : int, default=256
        Observations per call of ``estimator.sample``.
    random_state : int, RandomState instance or None, default=None
        Seeds the sampling.

    Returns
    -------
    result : SBCResult

    See Also
    --------
    coverage_hpd, coverage_tarp : Calibration of regions rather than of each parameter.
    """
    ranks = sbc_ranks(
        estimator,
        theta,
        x,
        n_posterior_samples=n_posterior_samples,
        batch_size=batch_size,
        random_state=random_state,
    )
    if names is None:
        names = _estimator_names(estimator, theta, ranks.shape[1])
    return sbc_test(ranks, n_posterior_samples, confidence=confidence, names=names)


# --------------------------------------------------------------------------- coverage


@dataclass(frozen=True, eq=False, repr=False)
class CoverageResult:
    r"""Expected coverage against credibility level, with a tolerance band and a verdict.

    Returned by :func:`coverage_hpd` and :func:`coverage_tarp`.

    Attributes
    ----------
    kind : str
        ``"HPD"`` or ``"TARP"``.
    levels : ndarray of shape (n_levels,)
        Credibility levels.
    coverage : ndarray of shape (n_levels,)
        Share of test pairs whose true parameter lies in the region of each level.
    expected : ndarray of shape (n_levels,)
        Coverage of a calibrated posterior at each level: the level itself, up to the
        resolution :math:`1 / (L + 1)` of :math:`L` posterior samples.
    band : ndarray of shape (n_levels, 2)
        Lower and upper coverage a calibrated posterior stays within at all levels at
        once, with probability ``confidence`` (binomial sampling error of
        ``n_simulations`` test pairs, made simultaneous over the levels).
    credibility : ndarray of shape (n_simulations,)
        Credibility of the smallest region containing each true parameter.
    n_posterior_samples : int
        Posterior samples :math:`L` per test pair.
    confidence : float
        Confidence of the band and the verdict.
    max_deviation : float
        Largest :math:`|\text{coverage} - \text{expected}|` over the levels.
    p_value : float
        P-value of the simultaneous binomial test of calibration.
    passed : bool
        The curve stays inside the band at every level (``p_value > 1 - confidence``).
    """

    kind: str
    levels: np.ndarray
    coverage: np.ndarray
    expected: np.ndarray
    band: np.ndarray
    credibility: np.ndarray
    n_posterior_samples: int
    confidence: float
    max_deviation: float
    p_value: float
    passed: bool

    @property
    def n_simulations(self) -> int:
        """Number of test pairs."""
        return len(self.credibility)

    def __repr__(self) -> str:
        return (
            f"CoverageResult(kind={self.kind!r}, passed={self.passed}, "
            f"confidence={self.confidence:g}, max_deviation={self.max_deviation:.3g}, "
            f"p_value={self.p_value:.3g}, n_simulations={self.n_simulations}, "
            f"n_levels={len(self.levels)})"
        )

    def plot(self, ax=None):
        """The coverage curve with its band; see :func:`~skfalcon.plotting.plot_coverage`."""
        from skfalcon.plotting import plot_coverage

        return plot_coverage(
            self.levels,
            self.coverage,
            band=self.band,
            confidence=self.confidence,
            label=f"{self.kind} ({'passed' if self.passed else 'failed'})",
            ax=ax,
        )


def _coverage_result(kind, credibility, levels, n_posterior_samples, confidence):
    """Coverage, its simultaneous band and verdict from the credibilities ``(n,)``."""
    n = len(credibility)
    # the credibilities take the values (k + 1/2) / (L + 1), uniform when calibrated
    values = (np.arange(n_posterior_samples + 1) + 0.5) / (n_posterior_samples + 1)
    expected = (values[None, :] <= levels[:, None]).mean(axis=1)
    counts = (credibility[None, :] <= levels[:, None]).sum(axis=1)
    coverage = counts / n

    band = np.column_stack([expected, expected])  # exact where expected is 0 or 1
    p_value = 1.0
    inner = np.flatnonzero((expected > 0) & (expected < 1))
    if len(inner):
        # levels with the same expected coverage have the same counts: test each once
        points, first, inverse = np.unique(expected[inner], return_index=True, return_inverse=True)
        pvalues, lower, upper = _simultaneous_test(
            counts[inner[first], None], n, points, 1.0 - confidence
        )
        p_value = float(pvalues[0])
        band[inner] = np.column_stack([lower, upper])[inverse] / n
    return CoverageResult(
        kind=kind,
        levels=levels,
        coverage=coverage,
        expected=expected,
        band=band,
        credibility=credibility,
        n_posterior_samples=n_posterior_samples,
        confidence=confidence,
        max_deviation=float(np.abs(coverage - expected).max()),
        p_value=p_value,
        passed=bool(p_value > 1 - confidence),
    )


def coverage_hpd(
    estimator,
    theta,
    x,
    *,
    levels=None,
    n_posterior_samples: int = 200,
    confidence: float = 0.95,
    batch_size: int = 256,
    random_state=None,
) -> CoverageResult:
    r"""Expected coverage of highest-posterior-density regions, with a verdict.

    The curve of :func:`expected_coverage_hpd`, its tolerance band from the binomial
    sampling error of the test pairs (simultaneous over ``levels``) and whether it stays
    inside. Below the band: overconfident or biased; above it: underconfident.

    Parameters
    ----------
    estimator : fitted estimator
        Has ``sample`` and ``log_prob``, as for :func:`expected_coverage_hpd`.
    theta : array-like of shape (n_simulations, n_parameters)
        True parameters drawn from the prior.
    x : array-like of shape (n_simulations, n_features) or (n_simulations,)
        The observation simulated from each row of ``theta``.
    levels : array-like of shape (n_levels,), default=None
        Credibility levels in ``[0, 1]``; ``None`` is ``numpy.linspace(0, 1, 21)``.
    n_posterior_samples : int, default=200
        Posterior samples :math:`L` per observation.
    confidence : float, default=0.95
        Confidence of the band: a calibrated posterior passes with this probability.
    batch_size : int, default=256
        Observations per call of ``estimator.sample`` and ``estimator.log_prob``.
    random_state : int, RandomState instance or None, default=None
        Seeds the sampling.

    Returns
    -------
    result : CoverageResult
    """
    levels = _check_levels(levels)
    confidence = _check_confidence(confidence)
    credibility = _hpd_credibility(
        estimator, theta, x, n_posterior_samples, batch_size, random_state
    )
    return _coverage_result("HPD", credibility, levels, int(n_posterior_samples), confidence)


def coverage_tarp(
    samples,
    theta,
    *,
    references=None,
    levels=None,
    normalize: bool = True,
    confidence: float = 0.95,
    random_state=None,
) -> CoverageResult:
    r"""Expected coverage of balls around random reference points (TARP), with a verdict.

    The curve of :func:`expected_coverage_tarp`, with the tolerance band and verdict of
    :func:`coverage_hpd`. TARP needs samples only; judge its curve by whether it leaves
    the band, not by its side of the diagonal.

    Parameters
    ----------
    samples : array-like of shape (n_simulations, n_posterior_samples, n_parameters)
        Posterior samples of each test observation, e.g. ``est.sample(x_test, 200)``.
    theta : array-like of shape (n_simulations, n_parameters)
        True parameters drawn from the prior.
    references : array-like of shape (n_simulations, n_parameters) or (n_parameters,), default=None
        Reference points; ``None`` draws each uniformly in the bounding box of ``theta``.
    levels : array-like of shape (n_levels,), default=None
        Credibility levels in ``[0, 1]``; ``None`` is ``numpy.linspace(0, 1, 21)``.
    normalize : bool, default=True
        Standardize every parameter by the mean and standard deviation of ``theta``.
    confidence : float, default=0.95
        Confidence of the band.
    random_state : int, RandomState instance or None, default=None
        Seeds the reference points.

    Returns
    -------
    result : CoverageResult

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon.diagnostics import coverage_tarp
    >>> rng = np.random.default_rng(1)
    >>> theta = rng.normal(size=(300, 2))
    >>> samples = rng.normal(size=(300, 100, 2))  # the right posterior: the prior here
    >>> result = coverage_tarp(samples, theta, random_state=0)
    >>> result.passed
    True
    >>> coverage_tarp(0.5 * rng.normal(size=(300, 100, 2)), theta, random_state=0).passed
    False
    """
    levels = _check_levels(levels)
    confidence = _check_confidence(confidence)
    credibility = _tarp_credibility(samples, theta, references, normalize, random_state)
    n_posterior_samples = np.shape(samples)[1]
    return _coverage_result("TARP", credibility, levels, n_posterior_samples, confidence)


# --------------------------------------------------------------------------- predictive


@dataclass(frozen=True, eq=False, repr=False)
class PredictiveCheckResult:
    r"""Posterior predictive check of one observation, with a verdict.

    Returned by :func:`posterior_predictive_check`.

    Attributes
    ----------
    theta : ndarray of shape (n_samples, n_parameters)
        The posterior draws.
    x_observed : ndarray of shape (n_features,)
        The observation.
    x_simulated : ndarray of shape (n_samples, n_features)
        One simulation per draw.
    quantile : ndarray of shape (n_features,)
        Share of simulations below ``x_observed`` (ties count half; NaN simulations are
        left out).
    p_value : ndarray of shape (n_features,)
        Two-sided tail probability ``2 * min(quantile, 1 - quantile)``.
    adjusted_p_value : ndarray of shape (n_features,)
        Benjamini-Hochberg adjusted p-values.
    confidence : float
        The verdict's confidence :math:`1 - \alpha`.
    passed_features : ndarray of bool, shape (n_features,)
        ``adjusted_p_value > alpha``: the feature is not flagged at false discovery rate
        :math:`\alpha`.
    passed : bool
        No feature is flagged.
    correction : str
        ``"benjamini-hochberg"``.
    """

    theta: np.ndarray
    x_observed: np.ndarray
    x_simulated: np.ndarray
    quantile: np.ndarray
    p_value: np.ndarray
    adjusted_p_value: np.ndarray
    confidence: float
    passed_features: np.ndarray
    passed: bool
    correction: str = "benjamini-hochberg"

    def __repr__(self) -> str:
        flagged = np.flatnonzero(~self.passed_features).tolist()
        return (
            f"PredictiveCheckResult(passed={self.passed}, confidence={self.confidence:g}, "
            f"n_samples={len(self.theta)}, n_features={len(self.x_observed)}, "
            f"min_adjusted_p_value={self.adjusted_p_value.min():.3g}, "
            f"flagged_features={flagged}, correction={self.correction!r})"
        )

    def plot(self, ax=None):
        """Predictive intervals per feature with the observation; see
        :func:`~skfalcon.plotting.plot_predictive_check`."""
        from skfalcon.plotting import plot_predictive_check

        return plot_predictive_check(self, ax=ax)


def _simulate_checked(simulator, theta, x_obs):
    """Simulations of ``theta`` with one row like ``x_obs`` each, checked."""
    n_samples = len(theta)
    x_sim = np.asarray(simulator(theta), dtype=np.float64)
    if x_sim.ndim == 1 and x_obs.shape == (1,):
        x_sim = x_sim[:, None]
    if x_sim.shape != (n_samples, x_obs.shape[0]):
        raise ValueError(
            f"simulator returned shape {x_sim.shape} for theta of shape {theta.shape}; "
            f"expected ({n_samples}, {x_obs.shape[0]}), one observation like x_obs per row."
        )
    n_valid = (~np.isnan(x_sim)).sum(axis=0)
    if np.any(n_valid == 0):
        raise ValueError(
            "simulator returned only NaN for feature(s) "
            f"{np.flatnonzero(n_valid == 0).tolist()}; nothing to compare x_obs with."
        )
    return x_sim, n_valid


def posterior_predictive_check(
    estimator,
    simulator,
    x_obs,
    *,
    n_samples: int = 1000,
    confidence: float = 0.95,
    random_state=None,
) -> PredictiveCheckResult:
    r"""Simulate from posterior draws and place the observation among the simulations.

    Draws ``n_samples`` parameters from the estimated posterior of ``x_obs``, runs the
    simulator on them, and reports per feature the quantile of ``x_obs`` among the
    simulated observations (the posterior predictive distribution) with a two-sided
    p-value. The p-values are adjusted across features by Benjamini-Hochberg
    (:func:`scipy.stats.false_discovery_control`); the check fails when any feature is
    flagged at false discovery rate :math:`\alpha = 1 - \text{confidence}`.

    Parameters
    ----------
    estimator : fitted estimator
        Has ``sample(x, n_samples, random_state=...)`` returning ``(n_samples,
        n_parameters)`` for one observation of shape ``(n_features,)``.
    simulator : callable
        Maps parameters of shape ``(n, n_parameters)`` to observations of shape
        ``(n, n_features)``, e.g. ``task.simulate``. Bind a seed with
        :func:`functools.partial` for reproducible simulations.
    x_obs : array-like of shape (n_features,)
        The observation.
    n_samples : int, default=1000
        Number of posterior draws and simulations.
    confidence : float, default=0.95
        Confidence :math:`1 - \alpha` of the verdict.
    random_state : int, RandomState instance or None, default=None
        Seeds the posterior sampling.

    Returns
    -------
    result : PredictiveCheckResult

    Notes
    -----
    Posterior predictive p-values use the data twice (to fit and to check), so they
    gather near 0.5 and the check is conservative: it flags observations the posterior
    clearly cannot reproduce, and passing it is weak evidence of calibration.

    Examples
    --------
    >>> from functools import partial
    >>> from skfalcon import FlowPosteriorEstimator
    >>> from skfalcon.datasets import TwoMoons
    >>> from skfalcon.diagnostics import posterior_predictive_check
    >>> task = TwoMoons()
    >>> theta = task.sample_prior(500, random_state=0)
    >>> x = task.simulate(theta, random_state=1)
    >>> est = FlowPosteriorEstimator(prior=task.prior, max_epochs=2, random_state=0)
    >>> est = est.fit(theta, x)
    >>> simulator = partial(task.simulate, random_state=0)
    >>> check = posterior_predictive_check(est, simulator, x[0], n_samples=200, random_state=0)
    >>> check.x_simulated.shape, check.p_value.shape
    ((200, 2), (2,))
    """
    _check_estimator(estimator, ("sample",))
    if not callable(simulator):
        raise TypeError(f"simulator must be callable; got {type(simulator).__name__}.")
    x_obs = check_array(x_obs, ensure_2d=False, dtype=np.float64, input_name="x_obs")
    if x_obs.ndim != 1:
        raise ValueError(
            f"x_obs must be one observation of shape (n_features,); got shape {x_obs.shape}."
        )
    n_samples = check_positive_int(n_samples, "n_samples")
    confidence = _check_confidence(confidence)
    rng = check_random_state(random_state)

    theta = np.asarray(
        estimator.sample(x_obs, n_samples, random_state=_draw_seed(rng)), dtype=np.float64
    )
    if theta.ndim != 2 or theta.shape[0] != n_samples:
        raise ValueError(
            f"estimator.sample(x_obs, {n_samples}) returned shape {theta.shape}; expected "
            f"({n_samples}, n_parameters)."
        )
    x_sim, n_valid = _simulate_checked(simulator, theta, x_obs)
    below = (x_sim < x_obs).sum(axis=0)
    tied = (x_sim == x_obs).sum(axis=0)
    quantile = (below + 0.5 * tied) / n_valid
    p_value = np.minimum(1.0, 2.0 * np.minimum(quantile, 1.0 - quantile))
    adjusted = stats.false_discovery_control(p_value, method="bh")
    passed = adjusted > 1.0 - confidence
    return PredictiveCheckResult(
        theta=theta,
        x_observed=x_obs,
        x_simulated=x_sim,
        quantile=quantile,
        p_value=p_value,
        adjusted_p_value=adjusted,
        confidence=confidence,
        passed_features=passed,
        passed=bool(passed.all()),
    )
