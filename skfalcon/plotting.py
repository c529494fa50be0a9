r"""Figures of posterior samples, training and diagnostics.

Needs matplotlib, an optional extra: ``pip install "skfalcon[plots]"``. Every function
returns the matplotlib figure or axes it drew on, and draws on the ``ax`` (or ``fig``) it
is given, so figures can be combined and styled further.

- :func:`plot_corner`: pairwise and marginal views of posterior samples, with the true
  parameters marked; several sample sets overlay (an estimate and a reference).
- :func:`plot_training_curves`: training and validation loss per epoch from
  ``history_``, the best epoch and the learning rate.
- :func:`plot_sbc_ranks`: histograms of :func:`~skfalcon.metrics.sbc_ranks` with the band
  a uniform histogram stays in.
- :func:`plot_coverage`: curves of :func:`~skfalcon.metrics.expected_coverage_hpd` or
  :func:`~skfalcon.metrics.expected_coverage_tarp` against the diagonal.
- :func:`plot_ess`: effective sample size of importance sampling per observation.
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
    "plot_sbc_ranks",
    "plot_coverage",
    "plot_ess",
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
    smooth: float = 1.0,
    truth_color: str = "k",
    fig=None,
):
    r"""Corner plot: 1-D histograms on the diagonal, 2-D credible regions below it.

    Each panel below the diagonal shows the regions of highest sample density holding
    the probability masses in ``levels``, from a 2-D histogram smoothed by a Gaussian
    filter: filled (darker inside) for the first sample set, outlined for the others. The
    true parameters are marked by dashed lines and a star.

    Parameters
    ----------
    samples : array-like of shape (n_samples, n_parameters), or dict of them
        Posterior samples. A dict ``{name: samples}`` overlays several sets, each in its
        own colour with a legend, e.g. ``{"skfalcon": est.sample(x_obs, 10_000),
        "reference": task.reference_posterior(x_obs, 10_000)}``.
    truth : array-like of shape (n_parameters,), default=None
        True parameter values to mark.
    labels : list of str, default=None
        Parameter names; ``None`` writes :math:`\theta_1, \theta_2, \dots`.
    bins : int, default=40
        Histogram bins per parameter.
    levels : sequence of float, default=(0.68, 0.95)
        Probability masses of the 2-D credible regions.
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
    >>> fig = plot_corner(samples, truth=[0.0, 0.5, -0.5])
    >>> len(fig.axes)
    9
    """
    plt = _pyplot()

    arrays, truth, masses = _corner_inputs(samples, truth, levels)
    d = next(iter(arrays.values())).shape[1]
    names = _parameter_labels(labels, d)

    if fig is None:
        fig = plt.figure(figsize=(1.0 + 2.2 * d, 1.0 + 2.2 * d), layout="constrained")
    else:
        fig.clear()
    axes = np.asarray(fig.subplots(d, d, squeeze=False))
    ranges = _plot_ranges(list(arrays.values()), truth)
    edges = [np.linspace(low, high, bins + 1) for low, high in ranges]
    centers = [(e[:-1] + e[1:]) / 2 for e in edges]

    for k, (name, array) in enumerate(arrays.items()):
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
        if name is not None:
            axes[0, 0].plot([], [], color=color, lw=1.5, label=str(name))

    _dress_corner_axes(axes, ranges, truth, names, truth_color)
    if truth is not None:
        axes[0, 0].plot([], [], "*--", color=truth_color, lw=1.0, label="truth")
    if None not in arrays or truth is not None:
        handles, handle_labels = axes[0, 0].get_legend_handles_labels()
        # in the empty top-right panel, or on the only panel
        legend_ax = axes[0, d - 1] if d > 1 else axes[0, 0]
        legend_ax.legend(handles, handle_labels, loc="upper right", frameon=False)
    return fig


def _corner_inputs(samples, truth, levels):
    """Sample sets as float64 arrays, the truth and the sorted level masses, checked."""
    sets = dict(samples) if isinstance(samples, Mapping) else {None: samples}
    if not sets:
        raise ValueError("samples is an empty dict; pass at least one array of samples.")
    arrays = {}
    for name, array in sets.items():
        title = "samples" if name is None else f"samples[{name!r}]"
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
    return arrays, truth, masses


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
    records = getattr(history, "history_", history)
    if isinstance(records, Mapping) or not isinstance(records, Sequence) or len(records) == 0:
        raise ValueError(
            "history must be a non-empty list of per-epoch dicts (est.history_) or a fitted "
            f"estimator; got {type(history).__name__}."
        )
    missing = {"epoch", "train_loss", "val_loss"} - set(records[0])
    if missing:
        raise ValueError(f"history records lack the key(s) {sorted(missing)}.")
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
    if n_simulations is not None:
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
