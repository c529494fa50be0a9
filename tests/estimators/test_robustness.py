"""Never lose a user's work: interrupted, diverging and non-converged training."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skfalcon import FlowPosteriorEstimator
from skfalcon.engine.posterior import DualFlowPosterior

_original_losses = DualFlowPosterior.losses


def _patch_losses(monkeypatch, bad_calls, make_bad):
    """Make the training calls of DualFlowPosterior.losses numbered in ``bad_calls`` misbehave."""
    calls = {"n": 0}

    def losses(self, u, x, marginal_rows=None):
        out = _original_losses(self, u, x, marginal_rows)
        if self.training:
            calls["n"] += 1
            if calls["n"] in bad_calls:
                return make_bad(out)
        return out

    monkeypatch.setattr(DualFlowPosterior, "losses", losses)
    return calls


def _raise_interrupt(_):
    raise KeyboardInterrupt


def test_keyboard_interrupt_keeps_a_usable_estimator(monkeypatch, moons_data, tiny):
    task, theta, x = moons_data
    _patch_losses(monkeypatch, {12}, _raise_interrupt)
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **{**tiny, "max_epochs": 5})
    with pytest.warns(UserWarning, match="interrupted; the estimator keeps the best weights"):
        est.fit(theta, x)
    assert 1 <= est.n_iter_ < 5
    assert np.isfinite(est.sample(x[0], 20)).all()


def test_non_finite_steps_are_skipped_and_counted(monkeypatch, moons_data, tiny):
    task, theta, x = moons_data
    _patch_losses(monkeypatch, {3, 5}, lambda out: out * torch.nan)
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny)
    with pytest.warns(UserWarning, match=r"Skipped 2 training step\(s\) with a non-finite loss"):
        est.fit(theta, x)
    assert est.n_skipped_steps_ == 2
    assert all(np.isfinite(p.detach().numpy()).all() for p in est.network_.parameters())


def test_divergence_raises_and_leaves_the_fitted_model_intact(
    monkeypatch, fitted_moons, moons_data
):
    _, theta, x = moons_data
    before = {k: v.clone() for k, v in fitted_moons.network_.state_dict().items()}
    history = list(fitted_moons.history_)
    samples = fitted_moons.sample(x[0], 16, random_state=0)
    _patch_losses(monkeypatch, set(range(1, 10_000)), lambda out: out * torch.nan)
    with pytest.raises(RuntimeError, match=r"Training diverged: .*Lower lr"):
        fitted_moons.partial_fit(theta, x)
    after = fitted_moons.network_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert fitted_moons.history_ == history
    np.testing.assert_array_equal(fitted_moons.sample(x[0], 16, random_state=0), samples)


def test_running_out_of_epochs_warns_convergence(moons_data, tiny):
    task, theta, x = moons_data
    with pytest.warns(ConvergenceWarning, match=r"max_epochs=1 before .* stopped improving;"):
        FlowPosteriorEstimator(prior=task.prior, **{**tiny, "max_epochs": 1}).fit(theta, x)
    # A longer curve says how much its best loss still fell at the end.
    est = FlowPosteriorEstimator(prior=task.prior, **{**tiny, "max_epochs": 12})
    with pytest.warns(ConvergenceWarning) as caught:
        est.fit(theta, x)
    gain = est.history_[1]["best_val_loss"] - est.history_[-1]["best_val_loss"]
    message = str(next(w.message for w in caught if w.category is ConvergenceWarning))
    assert f"(its best fell by {gain:.2g} over the last 10 epochs)" in message
