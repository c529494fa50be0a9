"""What a person sees: the overfitting diagnosis and warning, and the progress bars."""

import sys
import types
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from skfalcon import FlowPosteriorEstimator
from skfalcon.engine.training import diagnose_overfitting
from skfalcon.estimators import _report


def _curve(train, val):
    return [
        {"epoch": i, "train_loss": t, "val_loss": v}
        for i, (t, v) in enumerate(zip(train, val, strict=True))
    ]


def test_a_rising_validation_loss_with_a_falling_training_loss_is_overfitting():
    rng = np.random.default_rng(0)
    epochs = np.arange(60)
    train = 2 - 0.05 * epochs
    val = np.where(epochs < 15, 2 - 0.05 * epochs, 1.25 + 0.03 * (epochs - 15))
    val = val + 0.01 * rng.normal(size=60)
    found = diagnose_overfitting(_curve(train, val), int(np.argmin(val)))
    assert found is not None and found["epochs"] >= 40 and found["val_rise"] > 1
    # A curve that levels off, however long, and one too short to tell, are not.
    flat = np.maximum(2 - 0.05 * epochs, 1.0) + 0.01 * rng.normal(size=60)
    assert diagnose_overfitting(_curve(train, flat), int(np.argmin(flat))) is None
    assert diagnose_overfitting(_curve(train[:12], val[:12]), 5) is None
    assert diagnose_overfitting(_curve(train, np.full(60, np.nan)), 0) is None


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Only 40 simulations")
def test_an_overfitted_fit_warns_and_marks_history_and_a_normal_one_does_not(moons_data):
    task, theta, x = moons_data
    settings = dict(num_transforms=1, num_bins=4, lr=2e-3, device="cpu", random_state=0)
    overfit = FlowPosteriorEstimator(
        prior=task.prior,
        hidden_features=(64, 64),
        batch_size=8,
        max_epochs=60,
        early_stop_patience=100,
        lr_patience=100,
        validation_fraction=0.4,
        **settings,
    )
    with warnings.catch_warnings():
        # Training stops on the overfitting, long before max_epochs and the patience.
        warnings.filterwarnings("error", category=ConvergenceWarning)
        with pytest.warns(UserWarning, match=r"The networks overfit the training simulations"):
            overfit.fit(theta[:40], x[:40])
    history = overfit.history_
    assert all(record["overfitting"] for record in history)
    assert len(history) < 60
    # ... at the first epoch whose curve shows it.
    assert diagnose_overfitting(history[:-1], overfit.best_epoch_) is None
    assert diagnose_overfitting(history, overfit.best_epoch_) is not None
    normal = FlowPosteriorEstimator(
        prior=task.prior, hidden_features=(16,), batch_size=64, max_epochs=15, **settings
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="The networks overfit")
        normal.fit(theta, x)
    assert not any(record["overfitting"] for record in normal.history_)


def test_bars_raise_no_tqdm_warning_in_a_notebook_without_ipywidgets(monkeypatch):
    pytest.importorskip("tqdm")
    from tqdm import TqdmWarning

    # What tqdm.auto checks to decide it runs in a Jupyter kernel.
    shell = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("zmqshell"))
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    for name in ("tqdm.auto", "tqdm.autonotebook", "tqdm.notebook"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not installed
    with warnings.catch_warnings():
        warnings.simplefilter("error", TqdmWarning)
        bar = _report.progress_bar(3, "test", "step")
        bar.update(3)
        bar.close()


def test_inference_shows_a_bar_only_when_verbose_and_slow(fitted_moons, moons_data, monkeypatch):
    made = []
    monkeypatch.setattr(_report, "progress_bar", lambda *a, **k: made.append(a) or _Bar())
    x = np.repeat(moons_data[2][:1], 40, axis=0) + np.linspace(0, 0.1, 40)[:, None]
    est = fitted_moons
    monkeypatch.setattr(_report, "PROGRESS_AFTER_SECONDS", 0.0)
    est.sample(x, 2000, random_state=0)  # verbose=0: never
    assert made == []
    monkeypatch.setattr(est, "verbose", 1)
    est.sample(x, 2000, random_state=0)
    assert made and made[0][:2] == (40, "sample")
    made.clear()
    monkeypatch.setattr(_report, "PROGRESS_AFTER_SECONDS", 1e6)
    est.sample(x, 2000, random_state=0)  # quick: no bar
    assert made == []


class _Bar:
    def update(self, n):
        pass

    def close(self):
        pass
