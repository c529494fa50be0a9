"""net_type="auto": a spline flow, an affine flow and a Gaussian trained alike, the one of
lower validation loss kept."""

import warnings

import joblib
import numpy as np
import pytest

from skfalcon import FlowPosteriorEstimator
from skfalcon.engine import AUTO_FAMILIES, TrainingDivergedError
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
    assert list(losses) == list(AUTO_FAMILIES) == ["nsf", "maf", "gaussian"]
    assert all(np.isfinite(list(losses.values())))
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
    assert list(est.validation_losses_) == list(AUTO_FAMILIES)
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
    monkeypatch.setattr(_flow_posterior, "train", _diverging({"maf", "gaussian"}))
    est = fit(theta, x, net_type="auto", max_epochs=2)
    assert est.net_type_ == "nsf" and list(est.validation_losses_) == ["nsf"]


def test_when_every_family_diverges_the_error_names_each_and_nothing_changes(monkeypatch):
    theta, x = squared(300)
    est = fit(theta, x, net_type="auto", max_epochs=2)
    history = list(est.history_)
    monkeypatch.setattr(_flow_posterior, "train", _diverging(set(AUTO_FAMILIES)))
    pattern = r"Training diverged: nsf: every step .*; maf: every .*; gaussian: every"
    with pytest.raises(RuntimeError, match=pattern):
        est.fit(theta, x)
    assert est.history_ == history


def test_an_interrupt_ends_the_search_and_keeps_what_was_trained(moons_data, tiny):
    from tests.estimators.test_estimator import _InterruptAt

    task, theta, x = moons_data
    # The 20th training step is in the spline flow's third epoch: the others never start.
    est = FlowPosteriorEstimator(
        prior=task.prior, net_type="auto", embedding=_InterruptAt(20), **tiny
    )
    with pytest.warns(UserWarning, match="Training was interrupted"):
        est.fit(theta, x)
    assert est.interrupted_ and est.n_iter_ == 2
    assert list(est.validation_losses_) == ["nsf"]


def linear_gaussian(n, seed=0):
    """x = theta + noise of sd 0.5 under a standard normal prior: theta | x is
    N(0.8 x, 0.2 I), and Gaussian with a mean linear in x in the engine's coordinates."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((n, 2))
    return theta, theta + 0.5 * rng.standard_normal(theta.shape)


def test_the_gaussian_family_recovers_a_linear_gaussian_posterior_and_auto_keeps_it(tmp_path):
    theta, x = linear_gaussian(2000)
    # At the automatic rates: the Gaussian's, ten times the flows', reaches its optimum.
    est = fit(theta, x, net_type="auto", max_epochs=60, batch_size=128)
    assert est.net_type_ == "gaussian"
    assert est.validation_losses_["gaussian"] < min(
        est.validation_losses_["nsf"], est.validation_losses_["maf"]
    )
    x_o = np.array([1.0, -0.5])
    draws = est.sample(x_o, 20_000, random_state=0)
    np.testing.assert_allclose(draws.mean(0), 0.8 * x_o, atol=0.05)
    np.testing.assert_allclose(draws.std(0), np.sqrt(0.2), rtol=0.05)
    grid = np.array([[0.8, -0.4], [0.0, 0.0], [1.5, -1.0]])
    exact = -np.log(2 * np.pi * 0.2) - ((grid - 0.8 * x_o) ** 2).sum(1) / (2 * 0.2)
    # 2,000 simulations leave the scale a few per cent off: 0.1 nats at two sd.
    np.testing.assert_allclose(est.log_prob(grid, x_o), exact, atol=0.15)
    joblib.dump(est, tmp_path / "est.joblib")
    loaded = joblib.load(tmp_path / "est.joblib")
    np.testing.assert_array_equal(
        loaded.sample(x_o, 30, random_state=2), est.sample(x_o, 30, random_state=2)
    )
