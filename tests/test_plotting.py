"""Tests of the figures: they draw what they say, on the axes given, and refuse bad input."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from skfalcon.diagnostics import (  # noqa: E402
    coverage_tarp,
    posterior_predictive_check,
    sbc_test,
)
from skfalcon.plotting import (  # noqa: E402
    plot_corner,
    plot_coverage,
    plot_ess,
    plot_predictive_check,
    plot_sbc_ecdf,
    plot_sbc_ranks,
    plot_sequential_history,
    plot_training_curves,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _visible(fig):
    return [ax for ax in fig.axes if ax.axison]


def test_corner_grid_truth_and_png(tmp_path):
    rng = np.random.default_rng(0)
    fig = plot_corner(rng.normal(size=(3000, 3)), truth=[0.1, 0.2, 0.3], labels=["a", "b", "c"])
    axes = np.array(fig.axes).reshape(3, 3)
    assert len(_visible(fig)) == 6  # lower triangle and diagonal
    assert [ax.get_xlabel() for ax in axes[-1]] == ["a", "b", "c"]
    # truth: a vertical line in every visible panel, a horizontal one below the diagonal
    lower = axes[2, 0]
    xs = [line.get_xdata()[0] for line in lower.get_lines() if len(line.get_xdata()) == 2]
    assert 0.1 in xs
    assert any(np.allclose(line.get_ydata(), 0.3) for line in lower.get_lines())
    path = tmp_path / "corner.png"
    fig.savefig(path)
    assert path.stat().st_size > 10_000


def test_corner_overlays_named_sets_with_a_legend_and_reuses_a_figure():
    rng = np.random.default_rng(1)
    sets = {"estimate": rng.normal(size=(2000, 2)), "reference": rng.normal(size=(1500, 2))}
    fig = plot_corner(sets, truth=[0.0, 0.0])
    legend = np.array(fig.axes).reshape(2, 2)[0, 1].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == [
        "estimate",
        "reference",
        "68% region",
        "95% region",
        "truth",
    ]
    again = plot_corner(sets["estimate"], fig=fig)
    assert again is fig and len(fig.axes) == 4


def test_corner_one_parameter_and_too_few_samples():
    fig = plot_corner(np.random.default_rng(2).normal(size=(500, 1)), truth=[0.0])
    assert len(fig.axes) == 1
    fig = plot_corner(np.zeros((5, 2)))  # no density: points are drawn instead
    assert len(fig.axes) == 4


def test_corner_names_from_a_dataframe_and_quantile_titles():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.normal(loc=[1.0, -2.0], scale=[0.1, 3.0], size=(4000, 2)))
    frame.columns = ["mass", "radius"]
    fig = plot_corner(frame)
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_xlabel() for ax in axes[-1]] == ["mass", "radius"]
    title = axes[0, 0].get_title()
    assert title.startswith("mass = $1.00") and "^{+0.0" in title and "}_{-0.0" in title
    assert axes[1, 1].get_title().startswith("radius = $-2")
    # the 16, 50 and 84 % quantiles as vertical lines on the diagonal
    marks = [line.get_xdata()[0] for line in axes[0, 0].get_lines() if line.get_linestyle() == ":"]
    np.testing.assert_allclose(marks, np.quantile(frame["mass"], [0.16, 0.5, 0.84]))
    bare = plot_corner(frame, labels=["m", "r"], quantiles=None)
    assert bare.axes[0].get_title() == "" and bare.axes[2].get_xlabel() == "m"


def test_verdict_plots_return_axes():
    rng = np.random.default_rng(5)
    result = sbc_test(rng.integers(0, 41, size=(150, 2)), 40, names=["a", "b"])
    ax = result.plot()
    assert ax is plot_sbc_ecdf(result, ax=ax)
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(label.startswith("a (p = ") for label in labels)
    theta = rng.normal(size=(100, 2))
    coverage = coverage_tarp(rng.normal(size=(100, 50, 2)), theta, random_state=0)
    ax = coverage.plot()
    assert ax.get_xlabel() == "credibility level" and len(ax.collections) == 1

    class Prior:
        def sample(self, x, n_samples, random_state=None):
            return np.random.default_rng(random_state).normal(size=(n_samples, 2))

    check = posterior_predictive_check(Prior(), lambda t: t + 10.0, np.zeros(2), n_samples=100)
    ax = check.plot()
    assert "failed" in ax.get_title()
    assert plot_predictive_check(check, standardize=True).get_ylabel() == "standardized value"


def test_training_curves_from_an_estimator(fitted_moons):
    ax = plot_training_curves(fitted_moons)
    n = len(fitted_moons.history_)
    train, val = ax.get_lines()[:2]
    np.testing.assert_allclose(train.get_ydata(), [r["train_loss"] for r in fitted_moons.history_])
    np.testing.assert_allclose(val.get_ydata(), [r["val_loss"] for r in fitted_moons.history_])
    assert len(train.get_xdata()) == n
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert f"best epoch ({fitted_moons.best_epoch_})" in legend
    assert "learning rate" in legend and len(ax.figure.axes) == 2


def test_training_curves_without_validation_on_given_axes():
    history = [
        {"epoch": i, "train_loss": 1.0 / (i + 1), "val_loss": float("nan"), "lr": 1e-3}
        for i in range(5)
    ]
    _, ax = plt.subplots()
    assert plot_training_curves(history, ax=ax, show_lr=False) is ax
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["train loss", "best epoch (4)"]


def test_sbc_ranks_histograms_count_every_rank():
    ranks = np.random.default_rng(3).integers(0, 51, size=(200, 2))
    fig = plot_sbc_ranks(ranks, 50, labels=["a", "b"])
    assert len(fig.axes) == 2
    for j, ax in enumerate(fig.axes):
        assert sum(patch.get_height() for patch in ax.patches) == 200
        assert ax.get_title().startswith(["a", "b"][j] + ": p = ")


def test_coverage_curves_share_axes():
    levels = np.linspace(0, 1, 11)
    ax = plot_coverage(levels, levels, n_simulations=100, label="exact")
    plot_coverage(levels, levels**2, label="biased", ax=ax)
    curves = [line for line in ax.get_lines() if line.get_label() in ("exact", "biased")]
    assert len(curves) == 2
    assert [t.get_text() for t in ax.texts] == ["underconfident", "overconfident"]
    assert ax.get_xlabel() == "credibility level"


def test_ess_marks_low_observations():
    ax = plot_ess(np.array([5000.0, 500.0, 8000.0]), n_samples=1000)
    heights = sorted(patch.get_height() for patch in ax.patches)
    assert heights == [500.0, 5000.0, 8000.0]
    red = [p for p in ax.patches if p.get_facecolor() == matplotlib.colors.to_rgba("C3")]
    assert [p.get_height() for p in red] == [500.0]


def _round(n, movement, volume=None):
    return {
        "n_simulations_total": n,
        "val_loss": 1.0,
        "ess": 1000.0,
        "truncation_volume": volume,
        "posterior_movement": movement,
    }


def test_sequential_history_draws_each_round_and_the_tolerance():
    class Run:
        tol = 0.1
        history_ = [_round(500, float("nan"), 1.0), _round(750, 0.5, 0.2), _round(1000, 0.05, 0.1)]

    fig = plot_sequential_history(Run())
    loss_ax, ess_ax, move_ax = fig.axes[:3]
    np.testing.assert_array_equal(loss_ax.get_lines()[0].get_xdata(), [500, 750, 1000])
    # The first round has no movement; the others are drawn, with tol as a line.
    movement = move_ax.get_lines()[0]
    np.testing.assert_array_equal(movement.get_ydata(), [0.5, 0.05])
    assert move_ax.get_lines()[1].get_ydata()[0] == 0.1
    assert len(fig.axes) == 4  # the truncation volume's own axis
    np.testing.assert_array_equal(fig.axes[3].get_lines()[0].get_ydata(), [1.0, 0.2, 0.1])


def test_sequential_history_without_truncation_has_three_axes():
    fig = plot_sequential_history([_round(500, float("nan")), _round(750, 0.3)])
    assert len(fig.axes) == 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: plot_sequential_history([]), "non-empty list of per-round dicts"),
        (lambda: plot_sequential_history([{"ess": 1.0}]), r"lack the key\(s\)"),
        (lambda: plot_corner(np.zeros(10)), r"samples must be a 2-D array .* got shape \(10,\)"),
        (lambda: plot_corner({}), "samples is an empty dict"),
        (
            lambda: plot_corner({"a": np.zeros((5, 2)), "b": np.zeros((5, 3))}),
            "same number of parameters",
        ),
        (lambda: plot_corner(np.zeros((5, 2)), truth=[0.0]), r"truth must have shape \(2,\)"),
        (lambda: plot_corner(np.zeros((5, 2)), labels=["a"]), "labels has 1 entries for 2"),
        (lambda: plot_corner(np.zeros((5, 2)), levels=(0.5, 1.0)), "levels must be probability"),
        (lambda: plot_training_curves([]), "non-empty list of per-epoch dicts"),
        (lambda: plot_training_curves([{"epoch": 0}]), r"lack the key\(s\) \['train_loss'"),
        (lambda: plot_sbc_ranks(np.zeros((10, 1)), 5, confidence=1.0), "confidence must be"),
        (lambda: plot_coverage([0.0, 1.0], [0.0]), "same length"),
        (lambda: plot_coverage([0.0, 1.0], [0.0, 1.0], band=np.zeros((3, 2))), "band must"),
        (lambda: plot_corner(np.zeros((5, 2)), quantiles=(0.5, 0.1, 0.9)), "three increasing"),
        (lambda: plot_ess([100.0, 0.0]), "positive effective sample sizes"),
    ],
)
def test_bad_plot_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()
