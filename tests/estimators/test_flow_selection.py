"""net_type="auto": a spline and an affine flow trained alike, the one of lower validation loss kept."""

import warnings

import joblib
import numpy as np
import pytest

from skfalcon import FlowPosteriorEstimator
from skfalcon.engine import TrainingDivergedError
from skfalcon.estimators import _flow_posterior

PRIOR = [("normal", 0, 1)] * 2


def squared(n, seed=0):
    """x = theta^2 + noise: each coordinate's posterior has two modes, +-sqrt(x)."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((n, 2))
    return theta, theta**2 + 0.1 * rng.standard_normal(theta.shape)


def fit(theta, x, **options):
    settings = dict(
        num_transforms=1, hidden_features=(16,), ensemble_size=1, ema_epochs=0.0, batch_size=64
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FlowPosteriorEstimator(prior=PRIOR, random_state=0, **{**settings, **options}).fit(
            theta, x
        )


def test_auto_keeps_the_family_of_lower_validation_loss_and_its_own_fit():
    theta, x = squared(600)
    est = fit(theta, x, net_type="auto", max_epochs=5)
    losses = est.validation_losses_
    assert set(losses) == {"nsf", "maf"} and all(np.isfinite(list(losses.values())))
    assert est.net_type_ == min(losses, key=losses.get)
    # The family kept is the network a fit of that family alone trains, bit for bit.
    alone = fit(theta, x, net_type=est.net_type_, max_epochs=5)
    assert alone.validation_losses_ == {est.net_type_: losses[est.net_type_]}
    untimed = [
        [{k: v for k, v in r.items() if k != "seconds"} for r in e.history_] for e in (alone, est)
    ]
    assert untimed[0] == untimed[1]
    np.testing.assert_array_equal(
        alone.sample(x[0], 50, random_state=1), est.sample(x[0], 50, random_state=1)
    )


@pytest.mark.slow
def test_auto_keeps_the_spline_flow_for_a_bimodal_posterior():
    # Trained to convergence, the affine flow cannot hold two modes: its loss is far higher
    # (1.8-2.0 nats against -0.5 to -0.2 over seeds 0-2).
    theta, x = squared(1000)
    est = fit(theta, x, net_type="auto", max_epochs=300)
    assert est.net_type_ == "nsf"
    assert est.validation_losses_["maf"] > est.validation_losses_["nsf"] + 1.0


def test_a_later_round_keeps_the_chosen_family_new_networks_choose_again_and_pickle(tmp_path):
    theta, x = squared(600)
    est = fit(theta[:300], x[:300], net_type="auto", max_epochs=3)
    chosen = est.net_type_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.partial_fit(theta[300:500], x[300:500])
    assert est.net_type_ == chosen and set(est.validation_losses_) == {chosen}
    # New networks choose again, on the whole store.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.partial_fit(theta[500:], x[500:], reset_network=True)
    assert set(est.validation_losses_) == {"nsf", "maf"}
    assert est.net_type_ == min(est.validation_losses_, key=est.validation_losses_.get)
    joblib.dump(est, tmp_path / "est.joblib")
    loaded = joblib.load(tmp_path / "est.joblib")
    assert loaded.net_type_ == est.net_type_
    assert loaded.validation_losses_ == est.validation_losses_
    np.testing.assert_array_equal(
        loaded.sample(x[0], 20, random_state=0), est.sample(x[0], 20, random_state=0)
    )


def test_without_validation_rows_auto_trains_the_spline_flow():
    theta, x = squared(300)
    est = fit(theta, x, net_type="auto", max_epochs=2, validation_fraction=0.0)
    assert est.net_type_ == "nsf"
    assert list(est.validation_losses_) == ["nsf"]


def _diverging(families):
    """``train`` that diverges for networks of ``families``."""
    train = _flow_posterior.train

    def patched(network, *args, **kwargs):
        if network.spec.net_type in families:
            raise TrainingDivergedError("every step of epoch 0 had a non-finite loss")
        return train(network, *args, **kwargs)

    return patched


def test_a_family_that_diverges_is_passed_over(monkeypatch):
    theta, x = squared(300)
    monkeypatch.setattr(_flow_posterior, "train", _diverging({"maf"}))
    est = fit(theta, x, net_type="auto", max_epochs=2)
    assert est.net_type_ == "nsf" and list(est.validation_losses_) == ["nsf"]


def test_when_every_family_diverges_the_error_names_each_and_nothing_changes(monkeypatch):
    theta, x = squared(300)
    est = fit(theta, x, net_type="auto", max_epochs=2)
    history = list(est.history_)
    monkeypatch.setattr(_flow_posterior, "train", _diverging({"nsf", "maf"}))
    with pytest.raises(RuntimeError, match=r"Training diverged: nsf: every step .*; maf: every"):
        est.fit(theta, x)
    assert est.history_ == history


def test_an_interrupt_ends_the_search_and_keeps_what_was_trained(moons_data, tiny):
    from tests.estimators.test_estimator import _InterruptAt

    task, theta, x = moons_data
    # The 20th training step is in the spline flow's third epoch: the affine one never starts.
    est = FlowPosteriorEstimator(
        prior=task.prior, net_type="auto", embedding=_InterruptAt(20), **tiny
    )
    with pytest.warns(UserWarning, match="Training was interrupted"):
        est.fit(theta, x)
    assert est.interrupted_ and est.n_iter_ == 2
    assert list(est.validation_losses_) == ["nsf"]
