r"""Is an observation like the simulations the estimator was trained on?

A neural posterior is only trained where the simulations are. An observation far from all
of them (a simulator that does not describe the data, a unit mix-up, a corrupted file)
gets a posterior that is an extrapolation of the networks, however confident it looks.

The check works on what the networks see: the flat features after ``x_preprocessor`` and
the estimator's float64 standardization (for dict observations, all inputs side by side).
At ``fit``, from the rows of the sample store (at most 10,000, drawn at random), it keeps

- each feature's training range;
- the centre :math:`\mu` and a Ledoit-Wolf shrunk covariance :math:`\Sigma` of the rows
  (with more than 256 features, only each feature's spread: :math:`\Sigma` diagonal);
- the reference distribution of the squared Mahalanobis distance
  :math:`d^2(z) = (z - \mu)^\top \Sigma^{-1} (z - \mu)`, each row's distance measured
  under a covariance fitted to the other half of the rows (two-fold cross-fitting), so
  that the reference is what a fresh simulation would score.

An observation's p-value is the share of reference distances at least as large as its
own, :math:`(1 + \#\{d_i^2 \ge d^2\}) / (n + 1)`. In the upper tail (the largest 5% of
the reference, and at least 10 rows) it follows an exponential fit to the reference's
excesses over the tail's threshold, so that distances beyond every training row still
get graded p-values rather than the floor :math:`1 / (n + 1)`. An observation also fails
when a feature lies more than one training range beyond the nearest end of that range.

:meth:`~skfalcon.FlowPosteriorEstimator.sample`, ``log_prob`` and ``log_normalizer``
run the check on their observations and emit a :class:`MisspecificationWarning` when one
fails; with several distinct observations in a call, the p-values are compared to
``DEFAULT_LEVEL`` divided by their number (Bonferroni), so that ordinary observations from
the simulator make a call warn with probability about ``DEFAULT_LEVEL`` however many it
holds. :func:`misspecification_test` runs the check on request, at any level. Estimators
loaded from files written before the check existed hold no reference statistics and skip it.
"""

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.utils.validation import check_is_fitted

from skfalcon.utils.rows import unique_rows

__all__ = [
    "DEFAULT_LEVEL",
    "MisspecificationTestResult",
    "MisspecificationWarning",
    "misspecification_test",
]

#: The significance level of the automatic check.
DEFAULT_LEVEL = 1e-3

# Reference rows kept; features beyond which the covariance is diagonal.
_MAX_ROWS = 10_000
_MAX_FULL_FEATURES = 256
# The exponential tail: its share of the reference rows, and its fewest rows.
_TAIL_SHARE = 0.05
_MIN_TAIL = 10
# A feature beyond its training range by more than this many range widths fails.
_RANGE_MARGIN = 1.0
# The fewest reference rows for a distance test.
_MIN_ROWS = 20


class MisspecificationWarning(UserWarning):
    """An observation lies outside the simulations the estimator was trained on."""


@dataclass(frozen=True)
class MisspecificationTestResult:
    """The outcome of :func:`misspecification_test`.

    Each field is a number for one observation and an array with one entry per
    observation for several.

    Attributes
    ----------
    statistic : float or ndarray
        Squared Mahalanobis distance :math:`d^2` of the observation from the centre of the
        training observations, as the networks see them.
    pvalue : float or ndarray
        Share of training simulations at least as far, with an exponential upper tail
        (see :mod:`skfalcon.misspecification`); ``nan`` when the estimator holds no
        reference statistics or too few rows for them.
    level : float
        The significance level the p-values were compared with.
    n_outside : int or ndarray
        Features of the observation more than one training range beyond that range.
    passed : bool or ndarray
        ``pvalue >= level`` (or ``nan``) and ``n_outside == 0``.
    """

    statistic: float | np.ndarray
    pvalue: float | np.ndarray
    level: float
    n_outside: int | np.ndarray
    passed: bool | np.ndarray


def misspecification_test(estimator, x, *, level: float = DEFAULT_LEVEL):
    """Test whether observations lie within the simulations an estimator was trained on.

    Parameters
    ----------
    estimator : FlowPosteriorEstimator
        A fitted estimator.
    x : array-like or dict
        One observation or several, as :meth:`FlowPosteriorEstimator.sample` takes them.
    level : float, default=DEFAULT_LEVEL
        Significance level in (0, 1): an observation fails when its p-value is below it.
        Each observation is tested at this level, without a correction for their number.

    Returns
    -------
    MisspecificationTestResult

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon import FlowPosteriorEstimator
    >>> from skfalcon.datasets import GaussianLinear
    >>> from skfalcon.misspecification import misspecification_test
    >>> task = GaussianLinear(n_dims=2)
    >>> theta = task.sample_prior(500, random_state=0)
    >>> x = task.simulate(theta, random_state=1)
    >>> est = FlowPosteriorEstimator(prior=task.prior, max_epochs=2, random_state=0)
    >>> est = est.fit(theta, x)
    >>> bool(misspecification_test(est, x[0]).passed)
    True
    >>> bool(misspecification_test(est, 50 * np.ones(2)).passed)
    False
    """
    check_is_fitted(estimator, "network_")
    if (
        isinstance(level, bool)
        or not isinstance(level, int | float | np.number)
        or not 0 < level < 1
    ):
        raise ValueError(f"level must be a number in (0, 1); got {level!r}")
    x2d, single = estimator._check_observations(x)
    statistic, pvalue, n_outside = _scores(estimator, x2d)
    passed = ~(pvalue < level) & (n_outside == 0)
    if single:
        return MisspecificationTestResult(
            float(statistic[0]), float(pvalue[0]), float(level), int(n_outside[0]), bool(passed[0])
        )
    return MisspecificationTestResult(statistic, pvalue, float(level), n_outside, passed)


def warn_if_misspecified(estimator, x2d: np.ndarray, stacklevel: int = 3) -> None:
    """Warn when one of the flat observations ``x2d`` fails the check at
    :data:`DEFAULT_LEVEL` over their number of distinct rows (Bonferroni)."""
    if getattr(estimator, "x_reference_", None) is None or len(x2d) == 0:
        return
    unique = unique_rows(x2d)[0]
    _, pvalue, n_outside = _scores(estimator, unique)
    failed = (pvalue < DEFAULT_LEVEL / len(unique)) | (n_outside > 0)
    if not failed.any():
        return
    details = []
    if not np.isnan(pvalue).all():
        details.append(f"smallest p-value {np.nanmin(pvalue):.2g}")
    if n_outside.any():
        details.append(f"up to {int(n_outside.max())} feature(s) far beyond their training range")
    warnings.warn(
        f"{int(failed.sum())} of {len(unique)} observation(s) lie outside the simulations "
        f"the estimator was trained on ({'; '.join(details)}): the posterior there is an "
        "extrapolation of the networks and may be wrong. Check the simulator and the "
        "observation's units and preprocessing; "
        "skfalcon.misspecification.misspecification_test gives the details.",
        MisspecificationWarning,
        stacklevel=stacklevel,
    )


def fit_reference(z: np.ndarray, seed: int) -> dict | None:
    """The reference statistics of training rows ``z`` ``(n, D)`` as the networks see them.

    A dict of float64 arrays (``low``, ``high``, ``location``, ``scale``, ``precision``
    (``(D, D)``, or ``(0, 0)`` for a diagonal covariance) and the sorted out-of-fold
    squared ``distances``), which both file formats store; ``None`` without rows.
    """
    z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
    if len(z) == 0:
        return None
    rng = np.random.default_rng(seed)
    if len(z) > _MAX_ROWS:
        z = z[rng.choice(len(z), _MAX_ROWS, replace=False)]
    reference = {"low": z.min(axis=0), "high": z.max(axis=0)}
    if len(z) < _MIN_ROWS:
        return reference
    location, scale, precision = _fit_distance(z)
    folds = rng.permutation(len(z)) % 2 == 0
    distances = np.empty(len(z))
    for held_out in (folds, ~folds):
        fold = _fit_distance(z[~held_out])
        distances[held_out] = _squared_distance(z[held_out], *fold)
    reference.update(
        location=location, scale=scale, precision=precision, distances=np.sort(distances)
    )
    return reference


def _fit_distance(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, per-feature spread and precision of the standardized rows (empty: diagonal)."""
    location = z.mean(axis=0)
    spread = z.std(axis=0)
    scale = np.where(spread > 0, spread, 1.0)
    if z.shape[1] > _MAX_FULL_FEATURES:
        return location, scale, np.zeros((0, 0))
    # Ledoit-Wolf's shrinkage keeps the precision finite for few rows or collinear features.
    covariance = LedoitWolf(assume_centered=True).fit((z - location) / scale).covariance_
    return location, scale, np.linalg.pinv(covariance, hermitian=True)


def _squared_distance(z, location, scale, precision) -> np.ndarray:
    centred = (z - location) / scale
    if precision.size == 0:
        return np.einsum("ij,ij->i", centred, centred)
    return np.einsum("ij,jk,ik->i", centred, precision, centred)


def _scores(estimator, x2d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Squared distance, p-value and features far out of range of flat observations."""
    reference = getattr(estimator, "x_reference_", None)
    m = len(x2d)
    if reference is None:
        return np.full(m, np.nan), np.full(m, np.nan), np.zeros(m, dtype=int)
    z = estimator._x_tensor(x2d).cpu().double().numpy().reshape(m, -1)
    low, high = reference["low"], reference["high"]
    margin = _RANGE_MARGIN * np.maximum(high - low, 1.0)
    n_outside = ((z < low - margin) | (z > high + margin)).sum(axis=1)
    if "distances" not in reference:
        return np.full(m, np.nan), np.full(m, np.nan), n_outside
    statistic = _squared_distance(
        z, reference["location"], reference["scale"], reference["precision"]
    )
    return statistic, _pvalues(statistic, reference["distances"]), n_outside


def _pvalues(statistic: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Empirical upper-tail p-values among the sorted ``distances``, with an exponential
    tail fitted to the excesses of the largest ones."""
    n = len(distances)
    k = min(n - 1, max(_MIN_TAIL, int(_TAIL_SHARE * n)))
    threshold = distances[n - k - 1]
    # Exponential excesses: the scale's maximum-likelihood estimate is their mean.
    scale = max(float(np.mean(distances[n - k :] - threshold)), 1e-12)
    at_least = n - np.searchsorted(distances, statistic, side="left")
    empirical = (1 + at_least) / (n + 1)
    tail = (1 + k) / (n + 1) * np.exp(-(statistic - threshold) / scale)
    return np.where(statistic > threshold, tail, empirical)
