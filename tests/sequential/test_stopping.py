"""SequentialInference: the posterior's movement, stopping early, and the final fit."""

import copy
import math

import numpy as np
import pytest

from skfalcon import FlowPosteriorEstimator, SequentialInference
from skfalcon.sequential import _loop

PRIOR = [("uniform", -1.0, 1.0), ("uniform", -1.0, 1.0)]
X_OBS = np.array([0.3, -0.2])


def simulator(theta):
    rng = np.random.default_rng(int(1e6 * abs(theta[0, 0])))
    return theta + 0.1 * rng.standard_normal(theta.shape)


@pytest.fixture
def estimator(tiny):
    return FlowPosteriorEstimator(prior=PRIOR, random_state=0, **{**tiny, "max_epochs": 4})


def loop(estimator, **kwargs):
    knobs = dict(
        strategy="standard", min_training_samples=200, resample_batch_size=100, resample_interval=2
    )
    return SequentialInference(estimator, simulator, random_state=0, **{**knobs, **kwargs})


@pytest.mark.parametrize("strategy", ["standard", "truncated", "round_based"])
def test_history_records_movement_and_the_final_fit(estimator, strategy):
    seq = loop(estimator, strategy=strategy, n_rounds=3).run(X_OBS, 500)
    movement = [r["posterior_movement"] for r in seq.history_]
    assert math.isnan(movement[0])  # no previous posterior
    assert all(math.isfinite(m) for m in movement[1:])
    assert [r["final_fit"] for r in seq.history_[:-1]] == [None] * (len(seq.history_) - 1)
    assert seq.history_[-1]["final_fit"] in ("continued", "refit")
    assert seq.stop_reason_ == "budget" and seq.n_simulations_ == 500


def test_movement_is_the_kl_of_the_previous_posterior_to_the_new_one(estimator, monkeypatch):
    draws = []
    original = _loop._Run._draw_posterior

    def recording(self):
        result = original(self)
        draws.append((self._draws, copy.deepcopy(self.estimator)))
        return result

    monkeypatch.setattr(_loop._Run, "_draw_posterior", recording)
    seq = loop(estimator, strategy="truncated").run(X_OBS, 400)
    (previous, log_p_previous), _ = draws[0]
    new_estimator = draws[1][1]
    expected = np.mean(log_p_previous - new_estimator.log_prob(previous, X_OBS))
    assert seq.history_[1]["posterior_movement"] == pytest.approx(expected)


def test_a_converged_round_ends_the_run_and_keeps_the_budget(estimator):
    seq = loop(estimator, strategy="truncated", tol=1e9).run(X_OBS, 600)
    # Every truncated round trains to convergence: the second round settles and ends it.
    assert seq.stop_reason_ == "converged"
    assert [r["n_simulations"] for r in seq.history_] == [200, 100]
    assert seq.n_simulations_ == 300
    assert seq.history_[-1]["final_fit"] in ("continued", "refit")


def test_a_settled_standard_run_trains_one_last_round_to_convergence(estimator):
    seq = loop(estimator, tol=1e9).run(X_OBS, 800)
    assert seq.stop_reason_ == "converged"
    assert [r["n_simulations"] for r in seq.history_] == [200, 100, 100]
    assert seq.history_[1]["n_epochs"] == 2  # resample_interval
    assert seq.history_[2]["n_epochs"] > 2  # to convergence (the estimator's max_epochs)


def test_tol_zero_spends_the_whole_budget(estimator):
    seq = loop(estimator, strategy="truncated", tol=0.0).run(X_OBS, 400)
    assert seq.stop_reason_ == "budget" and seq.n_simulations_ == 400


def test_tol_is_validated(estimator):
    with pytest.raises(ValueError, match="tol=-1.0"):
        loop(estimator, tol=-1.0).run(X_OBS, 400)


@pytest.mark.parametrize("refit_wins", [True, False])
def test_the_final_fit_keeps_the_lower_validation_loss(estimator, monkeypatch, refit_wins):
    seen = []
    best = _loop._best_val_loss

    def scripted(candidate):
        seen.append(candidate)
        # finish() asks for the refit's loss first, then the continued networks'.
        if len(seen) % 2 == 1:
            return best(candidate) - (1e6 if refit_wins else -1e6)
        return best(candidate)

    monkeypatch.setattr(_loop, "_best_val_loss", scripted)
    seq = loop(estimator, strategy="truncated").run(X_OBS, 400)
    refit, continued = seen[-2:]
    # Both trained on the same store, with the same validation rows.
    np.testing.assert_array_equal(refit._store.u.numpy(), continued._store.u.numpy())
    np.testing.assert_array_equal(
        refit._store.is_validation.numpy(), continued._store.is_validation.numpy()
    )
    assert seq.estimator_ is (refit if refit_wins else continued)
    assert seq.history_[-1]["final_fit"] == ("refit" if refit_wins else "continued")


def test_an_interrupted_run_says_so(estimator):
    calls = []

    def interrupting(theta):
        calls.append(len(theta))
        if sum(calls) > 250:
            raise KeyboardInterrupt
        return simulator(theta)

    with pytest.warns(UserWarning, match="interrupted"):
        seq = SequentialInference(
            estimator,
            interrupting,
            strategy="standard",
            min_training_samples=200,
            resample_batch_size=100,
            random_state=0,
        ).run(X_OBS, 400)
    assert seq.stop_reason_ == "interrupted" and seq.interrupted_


def test_a_kept_refit_records_its_movement_from_the_round_before(estimator, monkeypatch):
    calls = []

    def refit_wins(candidate):
        calls.append(candidate)  # finish() asks for the refit's loss first
        return -math.inf if len(calls) % 2 else math.inf

    monkeypatch.setattr(_loop, "_best_val_loss", refit_wins)
    draws = []
    original = _loop._Run._draw_posterior

    def recording(self):
        draws.append(self._draws)
        return original(self)

    monkeypatch.setattr(_loop._Run, "_draw_posterior", recording)
    seq = loop(estimator, strategy="truncated").run(X_OBS, 400)
    assert seq.history_[-1]["final_fit"] == "refit"
    # The refit's movement compares it with the draws of the round before the last.
    previous, log_p_previous = draws[-2]
    expected = np.mean(log_p_previous - seq.estimator_.log_prob(previous, X_OBS))
    assert seq.history_[-1]["posterior_movement"] == pytest.approx(expected)
