r"""Diagnostics of posterior estimates: do the samples match, and can they be trusted?

Plain functions on arrays and on fitted estimators, returning the statistics. An
*estimator* here is anything with ``sample(x, n_samples, random_state=...)`` (returning
``(n_observations, n_samples, n_parameters)`` for ``x`` of shape ``(n_observations,
n_features)``) and, for :func:`expected_coverage_hpd`, ``log_prob(theta, x)``:
:class:`~skfalcon.FlowPosteriorEstimator` is one.

**Against a reference.** :func:`c2st` trains a classifier to tell the estimator's samples
from samples of the true posterior; 0.5 means it cannot.

**Calibration, without a reference.** Draw test pairs :math:`(\theta^*_i, x_i)` from the
prior and the simulator, and :math:`L` posterior samples :math:`\theta_{i1}, \dots,
\theta_{iL}` for each :math:`x_i`. If the posterior is right, :math:`\theta^*_i` is one
more draw from :math:`p(\theta \mid x_i)`, so its rank among the samples under any
statistic :math:`T` is uniform on :math:`\{0, \dots, L\}` (simulation-based calibration,
Talts et al. 2018). The statistics used here:

- :func:`sbc_ranks`: each coordinate, :math:`T(\theta) = \theta_j`; test the ranks with
  :func:`skfalcon.diagnostics.sbc_test` (simultaneous ECDF bands) or with the chi-square
  test of :func:`sbc_uniformity_pvalues`.
- :func:`expected_coverage_hpd`: the posterior density, :math:`T(\theta) = -\log
  p(\theta \mid x_i)`. The share :math:`\alpha_i` of samples denser than
  :math:`\theta^*_i` is the credibility of the smallest highest-posterior-density region
  that contains :math:`\theta^*_i`, and the coverage at level :math:`c` is the share of
  test pairs with :math:`\alpha_i \le c`.
- :func:`expected_coverage_tarp`: the distance to a random reference point
  :math:`\theta^r_i`, :math:`T(\theta) = \lVert \theta - \theta^r_i \rVert` (TARP, Lemos
  et al. 2023), which needs samples only, no density.

A calibrated posterior has a flat rank histogram and a coverage curve on the diagonal.
An *overconfident* one (too narrow, or biased) puts :math:`\theta^*` in the tails too
often: U-shaped ranks, HPD coverage below the diagonal. An *underconfident* one (too
wide): hump-shaped ranks, HPD coverage above the diagonal. A bias in one direction tilts
the ranks and pulls the HPD coverage below the diagonal. TARP curves are read by their
largest deviation from the diagonal rather than by their side of it.
Calibration is necessary, not sufficient: the prior itself is perfectly calibrated. Pair
it with :func:`c2st` where a reference exists, or with the width of the posterior.

**Verdicts.** These functions return the raw statistics. :mod:`skfalcon.diagnostics`
tests them, with tolerance bands at a stated confidence and a ``passed`` verdict, and
adds the posterior predictive check.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import stats
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_array, check_random_state, check_scalar

from skfalcon.estimators._report import InferenceProgress
from skfalcon.utils.validation import check_positive_int

__all__ = [
    "c2st",
    "sbc_ranks",
    "sbc_uniformity_pvalues",
    "expected_coverage_hpd",
    "expected_coverage_tarp",
]


def _check_samples(array, name: str) -> np.ndarray:
    """Validate a 2-D float array of samples with finite values."""
    if np.ndim(array) != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_dims); got shape {np.shape(array)}."
        )
    return check_array(array, dtype=np.float64, input_name=name)


def c2st(X, Y, *, n_folds=5, z_score=True, random_state=0, classifier=None) -> float:
    """Classifier two-sample test: how well a classifier tells ``X`` from ``Y``.

    The samples of ``X`` are labelled 0 and those of ``Y`` 1, and a classifier
    is scored by stratified k-fold cross-validation. The mean held-out
    accuracy is returned: 0.5 when the two samples come from the same
    distribution, 1.0 when they are perfectly separable. This is the C2ST of
    the simulation-based inference benchmarks, where ``X`` holds reference
    posterior samples and ``Y`` the samples of an estimator.

    Parameters
    ----------
    X : array-like of shape (n_samples_X, n_dims)
        First sample, usually the reference.
    Y : array-like of shape (n_samples_Y, n_dims)
        Second sample, with the same number of columns as ``X``.
    n_folds : int, default=5
        Number of stratified cross-validation folds.
    z_score : bool, default=True
        Whether to standardise both samples with the mean and standard
        deviation of ``X`` before classification.
    random_state : int, RandomState instance or None, default=0
        Seeds the fold shuffling and the default classifier.
    classifier : scikit-learn classifier or None, default=None
        The classifier to cross-validate (it is cloned, never fitted in
        place). ``None`` uses ``MLPClassifier(activation="relu",
        hidden_layer_sizes=(10 * n_dims, 10 * n_dims), max_iter=1000,
        solver="adam", early_stopping=True, n_iter_no_change=50,
        random_state=random_state)``, the classifier of sbi's C2ST: training
        stops once the accuracy on a held-out tenth of the training fold has not
        improved for 50 epochs, which on near-identical samples comes several
        times sooner than the 1,000-epoch cap.

    Returns
    -------
    accuracy : float
        Mean cross-validated accuracy, in ``[0, 1]``.

    Notes
    -----
    Use samples of equal size: with ``n_samples_X != n_samples_Y`` the chance
    level is the share of the larger sample, not 0.5. The score fluctuates
    around 0.5 by about ``1 / sqrt(n_samples_X + n_samples_Y)`` for identical
    distributions.

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon.metrics import c2st
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 2))
    >>> c2st(X, X + 5.0) > 0.95
    True
    """
    X = _check_samples(X, "X")
    Y = _check_samples(Y, "Y")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(
            f"X and Y must have the same number of columns; got X with shape {X.shape} "
            f"and Y with shape {Y.shape}."
        )
    check_scalar(n_folds, "n_folds", numbers.Integral, min_val=2)
    if min(len(X), len(Y)) < n_folds:
        raise ValueError(
            f"X and Y need at least n_folds={n_folds} samples each; got {len(X)} and {len(Y)}."
        )

    if z_score:
        scaler = StandardScaler().fit(X)
        X, Y = scaler.transform(X), scaler.transform(Y)
    if classifier is None:
        n_hidden = 10 * X.shape[1]
        classifier = MLPClassifier(
            activation="relu",
            hidden_layer_sizes=(n_hidden, n_hidden),
            max_iter=1000,
            solver="adam",
            early_stopping=True,
            n_iter_no_change=50,
            random_state=random_state,
        )

    data = np.concatenate([X, Y])
    target = np.concatenate([np.zeros(len(X)), np.ones(len(Y))])
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
    scores = cross_val_score(classifier, data, target, cv=folds, scoring="accuracy")
    return float(np.mean(scores))


# --------------------------------------------------------------------------- calibration


def _check_estimator(estimator, methods: tuple[str, ...]) -> None:
    missing = [name for name in methods if not callable(getattr(estimator, name, None))]
    if missing:
        raise TypeError(
            f"estimator must have the method(s) {', '.join(missing)} (a fitted "
            f"FlowPosteriorEstimator, for instance); got {type(estimator).__name__}."
        )


def _check_theta(theta, name: str = "theta") -> np.ndarray:
    if np.ndim(theta) != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_simulations, n_parameters); got shape "
            f"{np.shape(theta)}."
        )
    return check_array(theta, dtype=np.float64, input_name=name)


def _check_test_observations(x, n_simulations: int) -> np.ndarray:
    """Observations with one row per test parameter; 1-D means one feature each."""
    x = check_array(x, ensure_2d=False, allow_nd=True, dtype=np.float64, input_name="x")
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] != n_simulations:
        raise ValueError(
            f"x has {x.shape[0]} observations but theta has {n_simulations} rows; pass the "
            "observation simulated from each row of theta."
        )
    return x


def _check_levels(levels) -> np.ndarray:
    if levels is None:
        return np.linspace(0.0, 1.0, 21)
    levels = check_array(levels, ensure_2d=False, dtype=np.float64, input_name="levels")
    if levels.ndim != 1 or np.any((levels < 0) | (levels > 1)):
        raise ValueError(
            f"levels must be a 1-D array of credibility levels in [0, 1]; got {levels!r}."
        )
    return levels


def _draw_seed(rng: np.random.RandomState) -> int:
    return int(rng.randint(np.iinfo(np.int32).max))


def _posterior_batches(estimator, x, n_samples, n_parameters, batch_size, rng):
    """Yield ``(rows, samples)``, samples of shape ``(len(rows), n_samples, n_parameters)``
    from one ``estimator.sample`` call per batch of observations (with a progress bar
    when the estimator is verbose and the whole run looks longer than a few seconds)."""
    with InferenceProgress(len(x), "diagnostics", getattr(estimator, "verbose", 0)) as progress:
        yield from _batches(estimator, x, n_samples, n_parameters, batch_size, rng, progress)


def _batches(estimator, x, n_samples, n_parameters, batch_size, rng, progress):
    for start in range(0, len(x), batch_size):
        x_batch = x[start : start + batch_size]
        samples = np.asarray(
            estimator.sample(x_batch, n_samples, random_state=_draw_seed(rng)), dtype=np.float64
        )
        expected = (len(x_batch), n_samples, n_parameters)
        if samples.shape != expected:
            raise ValueError(
                f"estimator.sample(x_batch, {n_samples}) returned shape {samples.shape} for "
                f"x_batch of shape {x_batch.shape}; expected {expected}, one set of samples "
                "per observation with as many columns as theta."
            )
        progress(len(x_batch))
        yield slice(start, start + len(x_batch)), samples


def _coverage(credibility: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Share of test pairs whose smallest covering region has credibility <= each level."""
    return (credibility[None, :] <= levels[:, None]).mean(axis=1)


def sbc_ranks(
    estimator,
    theta,
    x,
    *,
    n_posterior_samples: int = 100,
    batch_size: int = 256,
    random_state=None,
) -> np.ndarray:
    r"""Simulation-based calibration ranks of true parameters among posterior samples.

    For each test pair :math:`(\theta^*_i, x_i)`, draws :math:`L` samples from the
    estimated posterior of :math:`x_i` and counts, per parameter, the samples below the
    true value: :math:`r_{ij} = \#\{l : \theta_{ilj} < \theta^*_{ij}\}`. For a calibrated
    posterior each column of ranks is uniform on :math:`\{0, \dots, L\}`. Ties are broken
    at random: the true value takes a uniformly drawn place among the samples equal to it
    (all of them for a ``("fixed", v)`` parameter), which keeps such columns uniform too.

    Parameters
    ----------
    estimator : fitted estimator
        Has ``sample(x, n_samples, random_state=...)`` returning samples of shape
        ``(n_observations, n_samples, n_parameters)`` for ``x`` of shape
        ``(n_observations, n_features)``, as :class:`~skfalcon.FlowPosteriorEstimator`.
    theta : array-like of shape (n_simulations, n_parameters)
        True parameters, drawn from the prior the estimator was trained for (not the
        training simulations themselves).
    x : array-like of shape (n_simulations, n_features) or (n_simulations,)
        The observation simulated from each row of ``theta``.
    n_posterior_samples : int, default=100
        Samples :math:`L` per observation.
    batch_size : int, default=256
        Observations per call of ``estimator.sample`` (bounds memory).
    random_state : int, RandomState instance or None, default=None
        Seeds the sampling.

    Returns
    -------
    ranks : ndarray of shape (n_simulations, n_parameters)
        Integer ranks in ``[0, n_posterior_samples]``.

    See Also
    --------
    sbc_uniformity_pvalues : Test the ranks for uniformity.
    skfalcon.plotting.plot_sbc_ranks : Their histograms.

    Examples
    --------
    >>> from skfalcon import FlowPosteriorEstimator
    >>> from skfalcon.datasets import TwoMoons
    >>> from skfalcon.metrics import sbc_ranks
    >>> task = TwoMoons()
    >>> theta = task.sample_prior(500, random_state=0)
    >>> x = task.simulate(theta, random_state=1)
    >>> est = FlowPosteriorEstimator(prior=task.prior, max_epochs=2, random_state=0)
    >>> est = est.fit(theta, x)
    >>> theta_test, x_test = task.observations(20, random_state=2)
    >>> ranks = sbc_ranks(est, theta_test, x_test, n_posterior_samples=50, random_state=0)
    >>> ranks.shape
    (20, 2)
    """
    _check_estimator(estimator, ("sample",))
    theta = _check_theta(theta)
    x = _check_test_observations(x, len(theta))
    n_posterior_samples = check_positive_int(n_posterior_samples, "n_posterior_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    rng = check_random_state(random_state)

    ranks = np.empty(theta.shape, dtype=np.int64)
    batches = _posterior_batches(estimator, x, n_posterior_samples, theta.shape[1], batch_size, rng)
    for rows, samples in batches:
        below = (samples < theta[rows, None, :]).sum(axis=1)
        tied = (samples == theta[rows, None, :]).sum(axis=1)
        ranks[rows] = below + rng.randint(0, tied + 1)
    return ranks


def sbc_uniformity_pvalues(ranks, n_posterior_samples: int, *, n_bins: int | None = None):
    r"""Chi-square test of uniformity of each column of SBC ranks.

    The ranks :math:`0, \dots, L` are grouped into ``n_bins`` bins of (nearly) equal
    width and the counts are compared with their expectation under a uniform rank,
    :math:`n \cdot \text{width} / (L + 1)`, by Pearson's chi-square test
    (:func:`scipy.stats.chisquare`).

    Parameters
    ----------
    ranks : array-like of shape (n_simulations, n_parameters)
        Integer ranks, as returned by :func:`sbc_ranks`.
    n_posterior_samples : int
        The :math:`L` the ranks were computed with.
    n_bins : int, default=None
        Number of bins, between 2 and :math:`L + 1`. ``None`` uses one bin per 10
        simulations (at least 2, at most 20 and :math:`L + 1`), so each bin expects about
        10 counts or more.

    Returns
    -------
    pvalues : ndarray of shape (n_parameters,)
        Small values (below 0.01, say) reject a calibrated posterior for that parameter.
        Correct for the number of parameters when testing several.

    See Also
    --------
    sbc_ranks : Compute the ranks.

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon.metrics import sbc_uniformity_pvalues
    >>> rng = np.random.default_rng(0)
    >>> uniform = rng.integers(0, 101, size=(500, 2))
    >>> bool(sbc_uniformity_pvalues(uniform, 100).min() > 0.01)
    True
    >>> u_shaped = np.where(rng.random((500, 2)) < 0.5, 0, 100)
    >>> bool(sbc_uniformity_pvalues(u_shaped, 100).max() < 1e-6)
    True
    """
    n_posterior_samples = check_positive_int(n_posterior_samples, "n_posterior_samples")
    ranks = _check_ranks(ranks, n_posterior_samples)
    counts, width = _rank_histograms(ranks, n_posterior_samples, n_bins)
    expected = len(ranks) * width / (n_posterior_samples + 1)
    return stats.chisquare(counts, np.broadcast_to(expected[:, None], counts.shape), axis=0).pvalue


def _check_ranks(ranks, n_posterior_samples: int) -> np.ndarray:
    """Integer ranks ``(n, d)`` in ``[0, n_posterior_samples]``, checked."""
    if np.ndim(ranks) != 2:
        raise ValueError(
            "ranks must be a 2-D array of shape (n_simulations, n_parameters); got shape "
            f"{np.shape(ranks)}."
        )
    ranks = check_array(ranks, dtype=np.float64, input_name="ranks")
    if np.any(ranks != np.round(ranks)) or np.any((ranks < 0) | (ranks > n_posterior_samples)):
        raise ValueError(
            f"ranks must be integers in [0, n_posterior_samples={n_posterior_samples}]; got "
            f"values in [{ranks.min()}, {ranks.max()}]."
        )
    return ranks.astype(np.int64)


def _rank_histograms(ranks: np.ndarray, n_posterior_samples: int, n_bins: int | None):
    """Counts of integer ranks ``(n, d)`` in bins of consecutive rank values, shape
    ``(n_bins, d)``, and the number of rank values in each bin, shape ``(n_bins,)``."""
    n_values = n_posterior_samples + 1
    if n_bins is None:
        n_bins = int(np.clip(len(ranks) // 10, 2, min(20, n_values)))
    check_scalar(n_bins, "n_bins", numbers.Integral, min_val=2, max_val=n_values)
    bin_of_value = np.arange(n_values) * n_bins // n_values
    width = np.bincount(bin_of_value, minlength=n_bins)
    counts = np.stack(
        [np.bincount(column, minlength=n_bins) for column in bin_of_value[ranks].T], axis=1
    )
    return counts, width


def expected_coverage_hpd(
    estimator,
    theta,
    x,
    *,
    levels=None,
    n_posterior_samples: int = 200,
    batch_size: int = 256,
    random_state=None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Expected coverage of the estimator's highest-posterior-density (HPD) regions.

    For each test pair, draws :math:`L` posterior samples of :math:`x_i` and evaluates the
    estimator's ``log_prob`` at the samples and at :math:`\theta^*_i`. The credibility of
    the smallest HPD region containing :math:`\theta^*_i` is estimated by
    :math:`\alpha_i = (\#\{l : \log p(\theta_{il}) > \log p(\theta^*_i)\} + \tfrac12) /
    (L + 1)`, and the coverage at level :math:`c` is the share of pairs with
    :math:`\alpha_i \le c`.

    Parameters
    ----------
    estimator : fitted estimator
        Has ``sample(x, n_samples, random_state=...)`` (as for :func:`sbc_ranks`) and
        ``log_prob(theta, x)`` taking one observation per row of ``theta``.
    theta : array-like of shape (n_simulations, n_parameters)
        True parameters, drawn from the prior.
    x : array-like of shape (n_simulations, n_features) or (n_simulations,)
        The observation simulated from each row of ``theta``.
    levels : array-like of shape (n_levels,), default=None
        Credibility levels in ``[0, 1]``; ``None`` is ``numpy.linspace(0, 1, 21)``.
    n_posterior_samples : int, default=200
        Samples :math:`L` per observation.
    batch_size : int, default=256
        Observations per call of ``estimator.sample`` and ``estimator.log_prob``.
    random_state : int, RandomState instance or None, default=None
        Seeds the sampling.

    Returns
    -------
    levels : ndarray of shape (n_levels,)
        The credibility levels.
    coverage : ndarray of shape (n_levels,)
        Share of true parameters inside the HPD region of each level. On the diagonal for a
        calibrated posterior, below it for an overconfident one, above it for an
        underconfident one.

    See Also
    --------
    expected_coverage_tarp : Coverage from samples alone.
    skfalcon.plotting.plot_coverage : Draw the curve.

    Notes
    -----
    The coverage has a binomial spread of :math:`\sqrt{c (1 - c) / n}` at each level for
    :math:`n` test pairs. Over the whole curve, a calibrated posterior rarely strays more
    than :math:`1.36 / \sqrt n` from the diagonal: the largest deviation is a
    Kolmogorov-Smirnov statistic, and that is its 5% critical value.

    Examples
    --------
    >>> from skfalcon import FlowPosteriorEstimator
    >>> from skfalcon.datasets import TwoMoons
    >>> from skfalcon.metrics import expected_coverage_hpd
    >>> task = TwoMoons()
    >>> theta = task.sample_prior(500, random_state=0)
    >>> x = task.simulate(theta, random_state=1)
    >>> est = FlowPosteriorEstimator(prior=task.prior, max_epochs=2, random_state=0)
    >>> est = est.fit(theta, x)
    >>> theta_test, x_test = task.observations(20, random_state=2)
    >>> levels, coverage = expected_coverage_hpd(est, theta_test, x_test, random_state=0)
    >>> levels.shape, coverage.shape
    ((21,), (21,))
    """
    levels = _check_levels(levels)
    credibility = _hpd_credibility(
        estimator, theta, x, n_posterior_samples, batch_size, random_state
    )
    return levels, _coverage(credibility, levels)


def _hpd_credibility(estimator, theta, x, n_posterior_samples, batch_size, random_state):
    """Checked inputs and the HPD credibility of each true parameter, shape ``(n,)``."""
    _check_estimator(estimator, ("sample", "log_prob"))
    theta = _check_theta(theta)
    x = _check_test_observations(x, len(theta))
    n_posterior_samples = check_positive_int(n_posterior_samples, "n_posterior_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    rng = check_random_state(random_state)

    n, d = theta.shape
    credibility = np.empty(n)
    batches = _posterior_batches(estimator, x, n_posterior_samples, d, batch_size, rng)
    for rows, samples in batches:
        m = samples.shape[0]
        points = np.concatenate([samples.reshape(-1, d), theta[rows]])
        observations = np.concatenate([np.repeat(x[rows], n_posterior_samples, axis=0), x[rows]])
        log_p = np.asarray(estimator.log_prob(points, observations), dtype=np.float64)
        if log_p.shape != (len(points),):
            raise ValueError(
                f"estimator.log_prob returned shape {log_p.shape} for {len(points)} rows of "
                f"theta; expected ({len(points)},)."
            )
        log_p = np.where(np.isnan(log_p), -np.inf, log_p)
        log_p_samples = log_p[: m * n_posterior_samples].reshape(m, n_posterior_samples)
        n_denser = (log_p_samples > log_p[m * n_posterior_samples :, None]).sum(axis=1)
        credibility[rows] = (n_denser + 0.5) / (n_posterior_samples + 1)
    return credibility


def expected_coverage_tarp(
    samples,
    theta,
    *,
    references=None,
    levels=None,
    normalize: bool = True,
    random_state=None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Expected coverage of balls around random reference points (TARP).

    For each test pair, a reference point :math:`\theta^r_i` is drawn and the credibility
    of the smallest ball centred on it that contains :math:`\theta^*_i` is estimated by
    :math:`f_i = (\#\{l : \lVert \theta_{il} - \theta^r_i \rVert < \lVert \theta^*_i -
    \theta^r_i \rVert\} + \tfrac12) / (L + 1)`; the coverage at level :math:`c` is the share
    of pairs with :math:`f_i \le c` (Lemos et al., 2023, "Sampling-based accuracy testing
    of posterior estimators"). Only samples are needed, no density.

    Parameters
    ----------
    samples : array-like of shape (n_simulations, n_posterior_samples, n_parameters)
        Posterior samples of each test observation, e.g. ``est.sample(x_test, 200)``.
    theta : array-like of shape (n_simulations, n_parameters)
        True parameters, drawn from the prior.
    references : array-like of shape (n_simulations, n_parameters) or (n_parameters,), default=None
        Reference points, one per test pair or one for all, in the units of ``theta``.
        ``None`` draws each uniformly from the bounding box of ``theta``.
    levels : array-like of shape (n_levels,), default=None
        Credibility levels in ``[0, 1]``; ``None`` is ``numpy.linspace(0, 1, 21)``.
    normalize : bool, default=True
        Measure distances after standardizing every parameter by the mean and standard
        deviation of ``theta``, so that parameters in different units weigh alike.
    random_state : int, RandomState instance or None, default=None
        Seeds the reference points.

    Returns
    -------
    levels : ndarray of shape (n_levels,)
        The credibility levels.
    coverage : ndarray of shape (n_levels,)
        Share of true parameters inside the ball of each level; on the diagonal for a
        calibrated posterior.

    See Also
    --------
    expected_coverage_hpd : Coverage of highest-density regions.

    Notes
    -----
    With reference points drawn independently of the observations, a diagonal curve is
    necessary for calibration, not sufficient. The side of the diagonal says less than
    for HPD regions: a too narrow posterior typically runs above the diagonal at low
    levels and below it at high ones, a too wide one the other way round, so judge the
    curve by its largest deviation; the :math:`1.36 / \sqrt n` tolerance of
    :func:`expected_coverage_hpd` applies.

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon.metrics import expected_coverage_tarp
    >>> rng = np.random.default_rng(0)
    >>> theta = rng.normal(size=(300, 2))
    >>> samples = rng.normal(size=(300, 100, 2))  # the right posterior: the prior here
    >>> levels, coverage = expected_coverage_tarp(samples, theta, random_state=0)
    >>> bool(np.abs(coverage - levels).max() < 0.1)
    True
    """
    levels = _check_levels(levels)
    credibility = _tarp_credibility(samples, theta, references, normalize, random_state)
    return levels, _coverage(credibility, levels)


def _tarp_credibility(samples, theta, references, normalize, random_state):
    """Checked inputs and the TARP credibility of each true parameter, shape ``(n,)``."""
    theta = _check_theta(theta)
    if np.ndim(samples) != 3:
        raise ValueError(
            "samples must be a 3-D array of shape (n_simulations, n_posterior_samples, "
            f"n_parameters); got shape {np.shape(samples)}."
        )
    samples = check_array(samples, allow_nd=True, dtype=np.float64, input_name="samples")
    if samples.shape[0] != theta.shape[0] or samples.shape[2] != theta.shape[1]:
        raise ValueError(
            f"samples of shape {samples.shape} do not match theta of shape {theta.shape}; "
            "expected (n_simulations, n_posterior_samples, n_parameters)."
        )
    n, d = theta.shape

    if normalize:
        center = theta.mean(axis=0)
        spread = theta.std(axis=0)
        scale = np.where(spread > 0, spread, 1.0)
    else:
        center, scale = np.zeros(d), np.ones(d)
    if references is None:
        rng = check_random_state(random_state)
        references = rng.uniform(theta.min(axis=0), theta.max(axis=0), size=(n, d))
    else:
        references = check_array(
            references, ensure_2d=False, dtype=np.float64, input_name="references"
        )
        if references.shape not in ((d,), (n, d)):
            raise ValueError(
                f"references must have shape ({d},) or ({n}, {d}); got {references.shape}."
            )
        references = np.broadcast_to(references, (n, d))

    theta = (theta - center) / scale
    samples = (samples - center) / scale
    references = (references - center) / scale
    distance_true = np.linalg.norm(theta - references, axis=-1)
    distance_samples = np.linalg.norm(samples - references[:, None, :], axis=-1)
    n_closer = (distance_samples < distance_true[:, None]).sum(axis=1)
    credibility = (n_closer + 0.5) / (samples.shape[1] + 1)
    return credibility
