r"""Figures of posterior samples, training and diagnostics.

Needs matplotlib, an optional extra: ``pip install "skfalcon[plots]"``. Every function
returns the matplotlib figure or axes it drew on, and draws on the ``ax`` (or ``fig``) it
is given, so figures can be combined and styled further.

- :func:`plot_corner`: pairwise and marginal views of posterior samples, with the true
  parameters marked; several sample sets overlay (an estimate and a reference).
- :func:`plot_training_curves`: training and validation loss per epoch from
  ``history_``, the best epoch and the learning rate.
- :func:`plot_sbc_ecdf`: the ECDF of SBC ranks minus the uniform, with the simultaneous
  band of :func:`~skfalcon.diagnostics.sbc`.
- :func:`plot_sbc_ranks`: histograms of :func:`~skfalcon.metrics.sbc_ranks` with the band
  a uniform histogram stays in.
- :func:`plot_coverage`: curves of :func:`~skfalcon.diagnostics.coverage_hpd` and
  :func:`~skfalcon.diagnostics.coverage_tarp` (or the raw curves of
  :mod:`skfalcon.metrics`) against the diagonal.
- :func:`plot_predictive_check`: posterior predictive intervals per feature, with the
  observation, from :func:`~skfalcon.diagnostics.posterior_predictive_check`.
- :func:`plot_ess`: effective sample size of importance sampling per observation.
- :func:`plot_sequential_history`: a sequential run's rounds against the simulations
  spent: validation loss, ESS or truncation volume, and how far each round moved the
  posterior.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage, stats
from sklearn.utils import check_array

from skfalcon.metrics import _rank_histograms, sbc_uniformity_pvalues

__all__ = [
    "plot_corner",
    "plot_training_curves",
    "plot_sbc_ecdf",
    "plot_sbc_ranks",
    "plot_coverage",
    "plot_predictive_check",
    "plot_ess",
    "plot_sequential_history",
]


def _pyplot():
    """matplotlib.pyplot, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised without the extra only
        raise ImportError(
            'skfalcon.plotting needs matplotlib; install it with pip install "skfalcon[plots]".'
        ) from exc
    return plt


def _parameter_labels(labels, d: int) -> list[str]:
    if labels is None:
        return [rf"$\theta_{{{i + 1}}}$" for i in range(d)]
    labels = list(labels)
    if len(labels) != d:
        raise ValueError(f"labels has {len(labels)} entries for {d} parameters.")
    return [str(label) for label in labels]


# --------------------------------------------------------------------------- corner


def _credible_thresholds(density: np.ndarray, masses: Sequence[float]) -> np.ndarray:
    """Density values whose super-level sets hold each probability mass, increasing."""
    flat = np.sort(density.ravel())[::-1]
    cumulative = np.cumsum(flat)
    cumulative /= cumulative[-1]
    index = np.minimum(np.searchsorted(cumulative, masses), len(flat) - 1)
    return np.unique(flat[index])


def _plot_ranges(sample_sets, truth) -> np.ndarray:
    """Per-parameter (low, high) covering 99.8% of every sample set and the truth."""
    stacked = np.concatenate([np.quantile(s, [0.001, 0.999], axis=0) for s in sample_sets])
    if truth is not None:
        stacked = np.vstack([stacked, truth])
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    pad = np.where(high > low, 0.05 * (high - low), 0.5)
    return np.column_stack([low - pad, high + pad])


def plot_corner(
    samples,
    *,
    truth=None,
    labels=None,
    bins: int = 40,
    levels: Sequence[float] = (0.68, 0.95),
    quantiles: Sequence[float] | None = (0.16, 0.5, 0.84),
    smooth: float = 1.0,
    truth_color: str = "k",
    fig=None,
):
    r"""Corner plot: 1-D histograms on the diagonal, 2-D credible regions below it.

    Each panel below the diagonal shows the regions of highest sample density holding
    the probability masses in ``levels``, from a 2-D histogram smoothed by a Gaussian
    filter: filled (darker inside) for the first sample set, outlined for the others; the
    legend names the sets, the regions and the truth. The diagonal panels mark the
    ``quantiles`` of the first set and give them in the title, e.g. the median with the
    distances to the 16 % and 84 % quantiles. The true parameters are marked by dashed
    lines and a star.

    Parameters
    ----------
    samples : array-like or DataFrame of shape (n_samples, n_parameters), or dict of them
        Posterior samples. A dict ``{name: samples}`` overlays several sets, each in its
        own colour, e.g. ``{"skfalcon": est.sample(x_obs, 10_000), "reference":
        task.reference_posterior(x_obs, 10_000)}``.
    truth : array-like of shape (n_parameters,), default=None
        True parameter values to mark.
    labels : list of str, default=None
        Parameter names; ``None`` takes the columns of the first DataFrame among
        ``samples``, else writes :math:`\theta_1, \theta_2, \dots`.
    bins : int, default=40
        Histogram bins per parameter.
    levels : sequence of float, default=(0.68, 0.95)
        Probability masses of the 2-D credible regions.
    quantiles : sequence of three floats, or None, default=(0.16, 0.5, 0.84)
        Lower, central and upper quantile of each parameter (first sample set) drawn on
        the diagonal and written in its title as ``central +(upper - central)
        -(central - lower)``; ``None`` draws neither.
    smooth : float, default=1.0
        Standard deviation, in bins, of the Gaussian filter applied to the 2-D
        histograms; 0 disables it.
    truth_color : str, default="k"
        Colour of the truth markers.
    fig : matplotlib Figure, default=None
        Figure to draw on (it is cleared); ``None`` makes one sized for the number of
        parameters.

    Returns
    -------
    fig : matplotlib Figure

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon.plotting import plot_corner
    >>> samples = np.random.default_rng(0).normal(size=(2000, 3))
    >>> fig = plot_corner(samples, truth=[0.0, 0.5, -0.5], labels=["a", "b", "c"])
    >>> len(fig.axes)
    9
    >>> fig.axes[0].get_title().startswith("a = ")
    True
    """
    plt = _pyplot()

    arrays, truth, masses, columns = _corner_inputs(samples, truth, levels)
    d = next(iter(arrays.values())).shape[1]
    names = _parameter_labels(columns if labels is None else labels, d)
    quantiles = _check_quantiles(quantiles)

    if fig is None:
        fig = plt.figure(figsize=(1.0 + 2.2 * d, 1.3 + 2.2 * d), layout="constrained")
    else:
        fig.clear()
    axes = np.asarray(fig.subplots(d, d, squeeze=False))
    ranges = _plot_ranges(list(arrays.values()), truth)
    edges = [np.linspace(low, high, bins + 1) for low, high in ranges]
    centers = [(e[:-1] + e[1:]) / 2 for e in edges]

    for k, array in enumerate(arrays.values()):
        color = f"C{k}"
        for i in range(d):
            axes[i, i].hist(
                array[:, i], bins=edges[i], density=True, histtype="step", color=color, lw=1.5
            )
            for j in range(i):
                _density_panel(
                    axes[i, j],
                    array[:, j],
                    array[:, i],
                    (edges[j], edges[i]),
                    (centers[j], centers[i]),
                    masses,
                    smooth,
                    color,
                    filled=k == 0,
                )
    if quantiles is not None:
        _quantile_titles(axes, next(iter(arrays.values())), quantiles, names)
    _dress_corner_axes(axes, ranges, truth, names, truth_color)
    _corner_legend(axes, arrays, masses, truth, truth_color)
    return fig


def _check_quantiles(quantiles):
    if quantiles is None:
        return None
    values = np.asarray(quantiles, dtype=np.float64)
    if values.shape != (3,) or np.any((values < 0) | (values > 1)) or np.any(np.diff(values) <= 0):
        raise ValueError(
            "quantiles must be three increasing probabilities (lower, central, upper) in "
            f"[0, 1], or None; got {quantiles!r}."
        )
    return values


def _quantile_titles(axes, array, quantiles, names) -> None:
    """Quantile lines on the diagonal and ``name = c +up -down`` titles."""
    for i, name in enumerate(names):
        low, mid, high = np.quantile(array[:, i], quantiles)
        ax = axes[i, i]
        for value in (low, mid, high):
            ax.axvline(value, color="C0", lw=0.8, ls=":")
        up, down = high - mid, mid - low
        # two significant digits of the smaller error set the decimals of all three
        smallest = min(up, down)
        decimals = 2 if smallest <= 0 else max(0, 1 - int(np.floor(np.log10(smallest))))
        ax.set_title(
            f"{name} = ${mid:.{decimals}f}^{{+{up:.{decimals}f}}}_{{-{down:.{decimals}f}}}$",
            fontsize="medium",
        )


def _corner_legend(axes, arrays, masses, truth, truth_color) -> None:
    """One legend: the sample sets, the credible regions of the first set, the truth."""
    from matplotlib.patches import Patch

    d = axes.shape[0]
    handles = [
        Patch(facecolor="none", edgecolor=f"C{k}", lw=1.5, label=str(name))
        for k, name in enumerate(arrays)
        if name is not None
    ]
    if d > 1:
        alphas = np.linspace(0.5, 0.2, len(masses))  # the inner region is the darker
        handles += [
            Patch(facecolor="C0", alpha=alpha, edgecolor="C0", label=f"{mass:.0%} region")
            for mass, alpha in zip(masses, alphas, strict=True)
        ]
    if truth is not None:
        (line,) = axes[0, 0].plot([], [], "*--", color=truth_color, lw=1.0, label="truth")
        handles.append(line)
    if handles:
        # in the empty top-right panel, or on the only panel
        legend_ax = axes[0, d - 1] if d > 1 else axes[0, 0]
        legend_ax.legend(handles=handles, loc="upper right", frameon=False)


def _corner_inputs(samples, truth, levels):
    """Sample sets as float64 arrays, the truth, the sorted level masses and the column
    names of the first DataFrame (or None), checked."""
    sets = dict(samples) if isinstance(samples, Mapping) else {None: samples}
    if not sets:
        raise ValueError("samples is an empty dict; pass at least one array of samples.")
    arrays, columns = {}, None
    for name, array in sets.items():
        title = "samples" if name is None else f"samples[{name!r}]"
        if columns is None and hasattr(array, "columns"):
            columns = [str(column) for column in array.columns]
        if np.ndim(array) != 2:
            raise ValueError(
                f"{title} must be a 2-D array of shape (n_samples, n_parameters); got shape "
                f"{np.shape(array)}."
            )
        arrays[name] = check_array(array, dtype=np.float64, input_name=title)
    d = next(iter(arrays.values())).shape[1]
    if any(array.shape[1] != d for array in arrays.values()):
        shapes = {name: array.shape for name, array in arrays.items()}
        raise ValueError(f"all sample sets need the same number of parameters; got {shapes}.")
    if truth is not None:
        truth = check_array(truth, ensure_2d=False, dtype=np.float64, input_name="truth")
        if truth.shape != (d,):
            raise ValueError(f"truth must have shape ({d},); got {truth.shape}.")
    masses = np.sort(np.asarray(levels, dtype=np.float64))
    if masses.ndim != 1 or len(masses) == 0 or np.any((masses <= 0) | (masses >= 1)):
        raise ValueError(f"levels must be probability masses in (0, 1); got {levels!r}.")
    return arrays, truth, masses, columns


def _density_panel(ax, xs, ys, edges, centers, masses, smooth, color, filled):
    """One panel below the diagonal: credible regions of a smoothed 2-D histogram."""
    from matplotlib.colors import to_rgba

    counts, _, _ = np.histogram2d(xs, ys, bins=list(edges))
    if smooth > 0:
        counts = ndimage.gaussian_filter(counts, smooth)
    thresholds = _credible_thresholds(counts, masses)
    if counts.max() > thresholds[-1]:
        if filled:  # the first set filled, the inner region darker
            alphas = np.linspace(0.2, 0.5, len(thresholds))
            ax.contourf(
                centers[0],
                centers[1],
                counts.T,
                levels=np.append(thresholds, counts.max()),
                colors=[to_rgba(color, alpha) for alpha in alphas],
            )
        ax.contour(
            centers[0],
            centers[1],
            counts.T,
            levels=thresholds,
            colors=[color],
            linewidths=1.0 if filled else 1.5,
        )
    else:  # too few distinct samples for a density: show them
        ax.plot(xs, ys, ".", color=color, ms=2, alpha=0.5)


def _dress_corner_axes(axes, ranges, truth, names, truth_color) -> None:
    """Limits, truth markers, labels and ticks of a corner plot's panels."""
    d = len(names)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
                continue
            ax.set_xlim(ranges[j])
            if i != j:
                ax.set_ylim(ranges[i])
            else:
                ax.set_yticks([])
            if truth is not None:
                ax.axvline(truth[j], color=truth_color, lw=1.0, ls="--")
                if i != j:
                    ax.axhline(truth[i], color=truth_color, lw=1.0, ls="--")
                    ax.plot(truth[j], truth[i], "*", color=truth_color, ms=9)
            if i == d - 1:
                ax.set_xlabel(names[j])
            else:
                ax.tick_params(labelbottom=False)
            if j == 0 and i != 0:
                ax.set_ylabel(names[i])
            elif i != j:
                ax.tick_params(labelleft=False)


# --------------------------------------------------------------------------- training


def _history_records(history, expected: str, keys: Sequence[str]) -> Sequence[Mapping]:
    """The records of ``history`` (a list of dicts, or an object's ``history_``), checked to
    be non-empty and to hold ``keys``."""
    records = getattr(history, "history_", history)
    if isinstance(records, Mapping) or not isinstance(records, Sequence) or len(records) == 0:
        raise ValueError(
            f"history must be a non-empty list of {expected}; got {type(history).__name__}."
        )
    missing = set(keys) - set(records[0])
    if missing:
        raise ValueError(f"history records lack the key(s) {sorted(missing)}.")
    return records


def plot_training_curves(history, *, ax=None, show_lr: bool = True):
    """Training and validation loss per epoch, the best epoch and the learning rate.

    Parameters
    ----------
    history : list of dict or fitted estimator
        ``est.history_`` (records with ``epoch``, ``train_loss``, ``val_loss`` and ``lr``)
        or the estimator itself, whose ``best_epoch_`` is then marked.
    ax : matplotlib Axes, default=None
        Axes for the losses; ``None`` makes a figure.
    show_lr : bool, default=True
        Draw the learning rate on a second, logarithmic y axis.

    Returns
    -------
    ax : matplotlib Axes
        The axes of the losses.

    Examples
    --------
    >>> from skfalcon.plotting import plot_training_curves
    >>> history = [
    ...     {"epoch": i, "train_loss": 2.0 / (i + 1), "val_loss": 2.2 / (i + 1), "lr": 1e-3}
    ...     for i in range(10)
    ... ]
    >>> ax = plot_training_curves(history)
    >>> ax.get_xlabel()
    'epoch'
    """
    plt = _pyplot()
    best_epoch = getattr(history, "best_epoch_", None)
    records = _history_records(
        history,
        "per-epoch dicts (est.history_) or a fitted estimator",
        ("epoch", "train_loss", "val_loss"),
    )
    epoch = np.array([r["epoch"] for r in records], dtype=np.float64)
    train = np.array([r["train_loss"] for r in records], dtype=np.float64)
    val = np.array([r["val_loss"] for r in records], dtype=np.float64)

    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.5), layout="constrained")
    ax.plot(epoch, train, "-", color="C0", label="train loss")
    has_val = bool(np.isfinite(val).any())
    if has_val:
        ax.plot(epoch, val, "-", color="C1", label="validation loss")
    if best_epoch is None:
        monitored = val if has_val else train
        best_epoch = epoch[int(np.nanargmin(monitored))]
    best = np.flatnonzero(epoch == best_epoch)
    if best.size:
        ax.axvline(best_epoch, color="0.5", ls=":", lw=1.0)
        ax.plot(best_epoch, (val if has_val else train)[best[0]], "o", color="C3", ms=5)
        ax.plot([], [], "o:", color="C3", label=f"best epoch ({int(best_epoch)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (negative log-likelihood)")
    handles, names = ax.get_legend_handles_labels()
    if show_lr and "lr" in records[0]:
        lr_ax = ax.twinx()
        lr = np.array([r["lr"] for r in records], dtype=np.float64)
        (line,) = lr_ax.step(epoch, lr, where="post", color="0.6", lw=1.0, label="learning rate")
        lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate", color="0.4")
        lr_ax.tick_params(axis="y", colors="0.4")
        handles, names = handles + [line], names + ["learning rate"]
    ax.legend(handles, names, frameon=False)
    return ax


# --------------------------------------------------------------------------- diagnostics


def plot_sbc_ecdf(result, *, ax=None):
    r"""ECDF of normalized SBC ranks minus the uniform CDF, with the simultaneous band.

    One curve per parameter, with the band a calibrated posterior stays in at all ranks
    and for all parameters at once with probability ``result.confidence`` (see
    :mod:`skfalcon.diagnostics`); the legend gives each parameter's Holm-adjusted p-value.
    A curve rising above the band then falling below it (an S) means an overconfident
    posterior, the mirror image an underconfident one, a curve on one side a bias.

    Parameters
    ----------
    result : SBCResult
        From :func:`~skfalcon.diagnostics.sbc` or :func:`~skfalcon.diagnostics.sbc_test`.
    ax : matplotlib Axes, default=None
        Axes to draw on; ``None`` makes a figure.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon.diagnostics import sbc_test
    >>> from skfalcon.plotting import plot_sbc_ecdf
    >>> result = sbc_test(np.random.default_rng(0).integers(0, 51, size=(200, 2)), 50)
    >>> ax = plot_sbc_ecdf(result)
    >>> ax.get_xlabel()
    'normalized rank'
    """
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 3.5), layout="constrained")
    grid = np.concatenate([[0.0], result.grid, [1.0]])
    lower = np.concatenate([[0.0], result.band[:, 0] - result.grid, [0.0]])
    upper = np.concatenate([[0.0], result.band[:, 1] - result.grid, [0.0]])
    family = 1 - (1 - result.confidence) / len(result.names)
    ax.fill_between(grid, lower, upper, color="0.88", lw=0, label=f"{family:.1%} band")
    ax.axhline(0.0, color="0.4", lw=0.8, ls="--")
    for j, name in enumerate(result.names):
        difference = np.concatenate([[0.0], result.ecdf[:, j] - result.grid, [0.0]])
        verdict = "" if result.passed_parameters[j] else ", failed"
        ax.plot(
            grid,
            difference,
            color=f"C{j}",
            lw=1.3,
            label=f"{name} (p = {result.adjusted_pvalues[j]:.2g}{verdict})",
        )
    ax.set_xlim(0, 1)
    ax.set_xlabel("normalized rank")
    ax.set_ylabel("ECDF - uniform")
    ax.set_title(
        f"SBC {'passed' if result.passed else 'failed'} at {result.confidence:.0%} "
        f"({result.correction.capitalize()})",
        fontsize="medium",
    )
    ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def plot_sbc_ranks(
    ranks,
    n_posterior_samples: int,
    *,
    n_bins: int | None = None,
    labels=None,
    confidence: float = 0.99,
    fig=None,
):
    r"""Histograms of SBC ranks, one per parameter, with the band of a uniform histogram.

    The grey band holds each bin's count with probability ``confidence`` when the ranks
    are uniform (binomial quantiles), and each title gives the chi-square p-value of
    :func:`~skfalcon.metrics.sbc_uniformity_pvalues`. A U shape means an overconfident
    posterior, a hump an underconfident one, a slope a bias.

    Parameters
    ----------
    ranks : array-like of shape (n_simulations, n_parameters)
        From :func:`~skfalcon.metrics.sbc_ranks`.
    n_posterior_samples : int
        The :math:`L` the ranks were computed with.
    n_bins : int, default=None
        Bins, as in :func:`~skfalcon.metrics.sbc_uniformity_pvalues` (same default).
    labels : list of str, default=None
        Parameter names.
    confidence : float, default=0.99
        Probability mass of the band.
    fig : matplotlib Figure, default=None
        Figure to draw on (it is cleared); ``None`` makes one.

    Returns
    -------
    fig : matplotlib Figure

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon.plotting import plot_sbc_ranks
    >>> ranks = np.random.default_rng(0).integers(0, 101, size=(400, 2))
    >>> fig = plot_sbc_ranks(ranks, 100)
    >>> len(fig.axes)
    2
    """
    plt = _pyplot()
    pvalues = sbc_uniformity_pvalues(ranks, n_posterior_samples, n_bins=n_bins)
    ranks = np.asarray(ranks)
    n, d = ranks.shape
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}.")
    counts, width = _rank_histograms(ranks.astype(np.int64), int(n_posterior_samples), n_bins)
    # bin b holds the ranks left[b], ..., left[b] + width[b] - 1
    left = np.concatenate([[0], np.cumsum(width)[:-1]])
    low, high = stats.binom.interval(confidence, n, width / (n_posterior_samples + 1))
    names = _parameter_labels(labels, d)

    if fig is None:
        fig = plt.figure(figsize=(0.5 + 3.0 * d, 2.8), layout="constrained")
    else:
        fig.clear()
    axes = np.atleast_1d(fig.subplots(1, d, sharey=True))
    for j, ax in enumerate(axes):
        for b in range(len(width)):
            ax.fill_between(
                [left[b] - 0.5, left[b] + width[b] - 0.5], low[b], high[b], color="0.85", lw=0
            )
        ax.bar(
            left - 0.5,
            counts[:, j],
            width=width,
            align="edge",
            color="C0",
            edgecolor="white",
            lw=0.5,
        )
        ax.set_xlim(-0.5, n_posterior_samples + 0.5)
        ax.set_xlabel(f"rank of {names[j]}")
        ax.set_title(f"{names[j]}: p = {pvalues[j]:.2g}", fontsize="medium")
    axes[0].set_ylabel("count")
    axes[-1].fill_between([], [], color="0.85", label=f"{confidence:.0%} band\nif uniform")
    axes[-1].legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_coverage(
    levels,
    coverage,
    *,
    n_simulations: int | None = None,
    band=None,
    label: str | None = None,
    confidence: float = 0.95,
    ax=None,
):
    r"""Expected coverage against credibility level, with the diagonal of calibration.

    Call it again on the same ``ax`` to compare several curves (HPD and TARP, or two
    estimators).

    Parameters
    ----------
    levels : array-like of shape (n_levels,)
        Credibility levels, from :func:`~skfalcon.metrics.expected_coverage_hpd` or
        :func:`~skfalcon.metrics.expected_coverage_tarp`.
    coverage : array-like of shape (n_levels,)
        The empirical coverage at each level.
    n_simulations : int, default=None
        Number of test pairs behind the curve; when given, a grey band shows where a
        calibrated curve stays with probability ``confidence`` at each level (normal
        approximation of the binomial spread :math:`\sqrt{c (1 - c) / n}`).
    band : array-like of shape (n_levels, 2), default=None
        Lower and upper tolerance at each level, e.g. the simultaneous band of a
        :class:`~skfalcon.diagnostics.CoverageResult` (whose ``plot`` passes it); drawn
        instead of the pointwise band of ``n_simulations``.
    label : str, default=None
        Legend entry of the curve.
    confidence : float, default=0.95
        Probability mass of the band.
    ax : matplotlib Axes, default=None
        Axes to draw on; ``None`` makes a square figure.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon.plotting import plot_coverage
    >>> levels = np.linspace(0, 1, 21)
    >>> ax = plot_coverage(levels, levels**1.5, n_simulations=200, label="HPD")
    >>> ax.get_xlabel()
    'credibility level'
    """
    plt = _pyplot()
    levels = check_array(levels, ensure_2d=False, dtype=np.float64, input_name="levels")
    coverage = check_array(coverage, ensure_2d=False, dtype=np.float64, input_name="coverage")
    if levels.ndim != 1 or coverage.shape != levels.shape:
        raise ValueError(
            f"levels and coverage must be 1-D arrays of the same length; got shapes "
            f"{levels.shape} and {coverage.shape}."
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}.")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0), layout="constrained")
    if band is not None:
        band = check_array(band, dtype=np.float64, input_name="band")
        if band.shape != (len(levels), 2):
            raise ValueError(
                f"band must have shape ({len(levels)}, 2), a lower and upper coverage per "
                f"level; got {band.shape}."
            )
        ax.fill_between(levels, band[:, 0], band[:, 1], color="0.9", lw=0)
    elif n_simulations is not None:
        grid = np.linspace(0.0, 1.0, 201)
        half_width = stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(
            grid * (1 - grid) / n_simulations
        )
        low, high = np.clip(grid - half_width, 0, 1), np.clip(grid + half_width, 0, 1)
        ax.fill_between(grid, low, high, color="0.9", lw=0)
    ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1.0)
    ax.plot(levels, coverage, "-o", ms=3, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("credibility level")
    ax.set_ylabel("expected coverage")
    style = {"color": "0.45", "fontsize": "small", "transform": ax.transAxes}
    if not any(text.get_text() == "underconfident" for text in ax.texts):
        ax.text(0.04, 0.95, "underconfident", va="top", **style)
        ax.text(0.96, 0.04, "overconfident", ha="right", **style)
    if label is not None:
        ax.legend(frameon=False, loc="center left", bbox_to_anchor=(0.0, 0.72))
    return ax


def plot_predictive_check(result, *, standardize: bool = False, ax=None):
    r"""Posterior predictive intervals per feature, with the observation.

    For each feature, the central 50 % and 95 % intervals of the simulated observations
    are shaded, the predictive median drawn and the observed value marked; features
    flagged by the check (Benjamini-Hochberg adjusted p-value at most
    :math:`1 - \text{confidence}`) are marked in red.

    Parameters
    ----------
    result : PredictiveCheckResult
        From :func:`~skfalcon.diagnostics.posterior_predictive_check`.
    standardize : bool, default=False
        Show every feature in units of its predictive standard deviation around its
        predictive mean, for features on different scales.
    ax : matplotlib Axes, default=None
        Axes to draw on; ``None`` makes a figure.

    Returns
    -------
    ax : matplotlib Axes
    """
    plt = _pyplot()
    simulated, observed = result.x_simulated, result.x_observed
    if standardize:
        mean, std = np.nanmean(simulated, axis=0), np.nanstd(simulated, axis=0)
        std = np.where(std > 0, std, 1.0)
        simulated, observed = (simulated - mean) / std, (observed - mean) / std
    q = np.nanquantile(simulated, [0.025, 0.25, 0.5, 0.75, 0.975], axis=0)
    index = np.arange(len(observed))
    if ax is None:
        width = min(10.0, 3.5 + 0.3 * len(observed))
        _, ax = plt.subplots(figsize=(width, 3.5), layout="constrained")
    ax.vlines(index, q[0], q[4], color="C0", alpha=0.35, lw=6, label="95 % predictive")
    ax.vlines(index, q[1], q[3], color="C0", alpha=0.8, lw=6, label="50 % predictive")
    ax.plot(index, q[2], "_", color="0.1", ms=9, mew=1.5, label="predictive median")
    flagged = ~result.passed_features
    ax.plot(index[~flagged], observed[~flagged], "o", color="k", ms=4, label="observed")
    if flagged.any():
        ax.plot(index[flagged], observed[flagged], "o", color="C3", ms=5, label="observed, flagged")
    ax.set_xlabel("feature")
    ax.set_ylabel("standardized value" if standardize else "value")
    ax.xaxis.set_major_locator(_integer_locator())
    verdict = "passed" if result.passed else f"failed: {int(flagged.sum())} flagged"
    ax.set_title(f"predictive check {verdict} ({result.confidence:.0%})", fontsize="medium")
    ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def _integer_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def plot_ess(ess, *, n_samples: int | None = None, ax=None):
    """Effective sample size of importance sampling, one bar per observation.

    Parameters
    ----------
    ess : array-like of shape (n_observations,)
        From ``est.sample(x, n_samples, return_ess=True)``.
    n_samples : int, default=None
        Samples requested per observation; observations whose ESS falls below it (those
        :meth:`~skfalcon.FlowPosteriorEstimator.sample` warns about) are drawn in red,
        with a line at ``n_samples``.
    ax : matplotlib Axes, default=None
        Axes to draw on; ``None`` makes a figure.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> from skfalcon.plotting import plot_ess
    >>> ax = plot_ess([5000.0, 800.0, 12000.0], n_samples=1000)
    >>> ax.get_yscale()
    'log'
    """
    plt = _pyplot()
    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, StrMethodFormatter

    ess = check_array(np.atleast_1d(ess), ensure_2d=False, dtype=np.float64, input_name="ess")
    if ess.ndim != 1 or np.any(ess <= 0):
        raise ValueError(
            f"ess must be a 1-D array of positive effective sample sizes; got {ess!r}."
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(min(10.0, 3.0 + 0.15 * len(ess)), 3.2), layout="constrained")
    index = np.arange(len(ess))
    low = np.zeros(len(ess), dtype=bool) if n_samples is None else ess < n_samples
    ax.bar(index[~low], ess[~low], color="C0", width=0.8, label="ESS")
    if low.any():
        ax.bar(index[low], ess[low], color="C3", width=0.8, label="ESS below n_samples")
    if n_samples is not None:
        ax.axhline(n_samples, color="0.3", ls="--", lw=1.0, label=f"n_samples = {n_samples}")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    floor = ess.min() if n_samples is None else min(ess.min(), n_samples)
    ax.set_ylim(bottom=floor / 2)
    ax.set_xlabel("observation")
    ax.set_ylabel("effective sample size")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def plot_sequential_history(history, *, fig=None):
    """A sequential run's rounds against the simulations spent so far.

    Three panels share the x axis (``n_simulations_total``): the validation loss at the
    end of each round; the effective sample size of the round's 1,000-draw posterior
    sample, with the truncation volume on a second axis for ``strategy="truncated"``;
    and the posterior's movement (the KL divergence of the previous round's posterior to
    this one's, logarithmic), with ``tol`` drawn when the run had one.

    Parameters
    ----------
    history : list of dict or SequentialInference
        ``loop.history_``, or the run itself (its ``tol`` is then drawn).
    fig : matplotlib Figure, default=None
        Figure to draw on; ``None`` makes one.

    Returns
    -------
    fig : matplotlib Figure

    Examples
    --------
    >>> from skfalcon.plotting import plot_sequential_history
    >>> history = [
    ...     {"n_simulations_total": n, "val_loss": 3.0 - i, "ess": 900.0,
    ...      "truncation_volume": None, "posterior_movement": m}
    ...     for i, (n, m) in enumerate([(500, float("nan")), (750, 0.4), (1000, 0.05)])
    ... ]
    >>> fig = plot_sequential_history(history)
    >>> fig.axes[-1].get_xlabel()
    'simulations'
    """
    plt = _pyplot()
    tol = getattr(history, "tol", None)
    records = _history_records(
        history,
        "per-round dicts (loop.history_) or a run of SequentialInference",
        ("n_simulations_total", "val_loss", "ess", "posterior_movement"),
    )

    def column(key):
        values = [r.get(key) for r in records]
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    n = column("n_simulations_total")
    if fig is None:
        fig = plt.figure(figsize=(6.0, 6.0), layout="constrained")
    loss_ax, ess_ax, move_ax = fig.subplots(3, 1, sharex=True)
    loss_ax.plot(n, column("val_loss"), "o-", color="C1")
    loss_ax.set_ylabel("validation loss")
    ess_ax.plot(n, column("ess"), "o-", color="C0")
    ess_ax.set_yscale("log")
    ess_ax.set_ylabel("ESS", color="C0")
    volume = column("truncation_volume")
    if np.isfinite(volume).any():
        volume_ax = ess_ax.twinx()
        volume_ax.plot(n, volume, "s--", color="C2")
        volume_ax.set_yscale("log")
        volume_ax.set_ylabel("truncation volume", color="C2")
    movement = column("posterior_movement")
    shown = np.isfinite(movement) & (movement > 0)
    move_ax.plot(n[shown], movement[shown], "o-", color="C3", label="posterior movement")
    if tol is not None:
        move_ax.axhline(tol, color="0.3", ls="--", lw=1.0, label=f"tol = {tol:g}")
    if shown.any():
        move_ax.set_yscale("log")
    move_ax.set_ylabel("KL to previous (nats)")
    move_ax.set_xlabel("simulations")
    move_ax.legend(frameon=False, fontsize="small")
    return fig
