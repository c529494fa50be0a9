"""The training loop: best weights, history, early stopping, learning-rate decay."""

import math

import pytest
import torch

from skfalcon.engine import (
    DualFlowPosterior,
    RunningNorm,
    SampleStore,
    TrainingConfig,
    train,
)
from skfalcon.engine.network import NetworkSpec
from skfalcon.engine.training import automatic_batch_size, automatic_lr


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- training


def _toy_data(n, generator):
    x = torch.randn(n, 1, generator=generator)
    u = x + 0.3 * torch.randn(n, 1, generator=generator)
    return u, x


def _split_store(u_train, x_train, u_val, x_val) -> SampleStore:
    """A store of prior rows with the given training and validation splits."""
    u, x = torch.cat([u_train, u_val]), torch.cat([x_train, x_val])
    is_val = torch.arange(len(u)) >= len(u_train)
    n = len(u)
    return SampleStore.empty(u.shape[1], x.shape[1:]).append(
        u, x, torch.zeros(n), torch.ones(n, dtype=torch.bool), is_val
    )


def test_train_learns_restores_best_weights_and_records_history():
    g = torch.Generator().manual_seed(0)
    u, x = _toy_data(600, g)
    u_val, x_val = _toy_data(200, g)
    model = DualFlowPosterior(1, RunningNorm(1), 1, num_transforms=1, hidden_features=(16,))
    records = []
    config = TrainingConfig(
        batch_size=64, max_epochs=15, lr=5e-3, lr_patience=2, early_stop_patience=4
    )
    result = train(
        model,
        _split_store(u, x, u_val, x_val),
        config,
        torch.device("cpu"),
        on_epoch_end=records.append,
    )
    history = result.history
    assert records == history and len(history) >= 5
    assert set(history[0]) >= {"train_loss", "val_loss", "best_val_loss", "lr", "seconds"}
    assert history[-1]["best_val_loss"] < history[0]["val_loss"] - 0.3
    assert not model.training
    with torch.no_grad():
        final = sum(model.losses(u_val, x_val).tolist())
    assert final == pytest.approx(history[result.best_epoch]["val_loss"], abs=1e-4)
    # Conditional loss near the true -log N(0; 0, 0.3^2) entropy ~ 0.24
    assert history[result.best_epoch]["val_loss_conditional"] < 0.5


@pytest.mark.parametrize(
    ("features", "n_rows", "expected"),
    [
        (2, 8192, 1024),
        (1, 100_000, 1024),
        (2, 8191, 512),
        (3, 100_000, 512),
        (10, 4096, 512),
        (10, 4095, 256),
        (10, 1800, 128),
        (10, 450, 64),
        (5, 10, 64),
        (2, 1800, 512),
        (1, 10, 512),
    ],
)
def test_automatic_batch_size_fills_eight_batches_above_two_parameters(features, n_rows, expected):
    assert automatic_batch_size(features, n_rows) == expected


def test_automatic_lr_scales_with_the_square_root_of_the_batch():
    assert automatic_lr(512) == pytest.approx(2e-3)
    assert automatic_lr(1024) == pytest.approx(2e-3 * math.sqrt(2))
    assert automatic_lr(128) == pytest.approx(1e-3)


def test_the_gaussian_family_trains_at_ten_times_the_flows_automatic_rate():
    assert automatic_lr(512, "gaussian") == pytest.approx(2e-2)
    assert automatic_lr(512, "nsf") == automatic_lr(512, "maf") == automatic_lr(512)
    spec = NetworkSpec(features=1, observation_features=1, net_type="gaussian", cube_bound=2.0)
    g = torch.Generator().manual_seed(3)
    u, x = _toy_data(600, g)
    u = u.clamp(-1.9, 1.9)
    result = train(
        spec.build(),
        _split_store(u[:500], x[:500], u[500:], x[500:]),
        TrainingConfig(max_epochs=1),
        torch.device("cpu"),
    )
    assert result.config.lr == pytest.approx(10 * automatic_lr(result.config.batch_size))


@pytest.mark.parametrize(
    ("batch_size", "lr", "expected"),
    [
        (None, None, (1024, 2e-3 * math.sqrt(2))),
        (None, 1e-3, (1024, 1e-3)),
        (256, None, (256, 1e-3 * math.sqrt(2))),
    ],
)
def test_train_fills_in_and_reports_the_automatic_batch_and_learning_rate(batch_size, lr, expected):
    g = torch.Generator().manual_seed(3)
    u, x = _toy_data(8292, g)
    model = DualFlowPosterior(1, RunningNorm(1), 1, num_transforms=1, hidden_features=(4,))
    config = TrainingConfig(batch_size=batch_size, lr=lr, max_epochs=1)
    result = train(
        model, _split_store(u[:8192], x[:8192], u[8192:], x[8192:]), config, torch.device("cpu")
    )
    assert (result.config.batch_size, result.config.lr) == pytest.approx(expected)
    assert result.history[0]["lr"] == pytest.approx(expected[1])


def test_train_early_stops_and_decays_learning_rate():
    g = torch.Generator().manual_seed(1)
    u, x = _toy_data(200, g)
    model = DualFlowPosterior(1, RunningNorm(1), 1, num_transforms=1, hidden_features=(4,))
    config = TrainingConfig(
        batch_size=50, max_epochs=200, lr=1e-2, lr_patience=0, early_stop_patience=2
    )
    result = train(model, _split_store(u, x, u[:50], x[:50] + 100.0), config, torch.device("cpu"))
    assert result.stopped_early and len(result.history) < 200
    assert result.history[-1]["lr"] < 1e-2


def test_weight_average_is_the_exponential_moving_average_of_the_optimizer_steps():
    g = torch.Generator().manual_seed(2)
    u, x = _toy_data(100, g)
    store = _split_store(u, x, u[:40], x[:40])
    # One step per epoch (the batch holds every row), no decay and no stop: both runs take
    # the same optimizer steps, whatever their validation losses.
    settings = dict(
        batch_size=1000,
        max_epochs=6,
        lr=1e-2,
        lr_patience=100,
        early_stop_patience=100,
        use_best_models=False,
    )
    weights = []

    def run(ema_epochs, record=False):
        torch.manual_seed(0)
        model = DualFlowPosterior(1, RunningNorm(1), 1, num_transforms=1, hidden_features=(4,))
        callback = (
            (
                lambda _: weights.append(
                    torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
                )
            )
            if record
            else None
        )
        config = TrainingConfig(ema_epochs=ema_epochs, **settings)
        result = train(model, store, config, torch.device("cpu"), on_epoch_end=callback)
        return model, result

    run(0.0, record=True)
    averaged, result = run(2.0)
    beta = math.exp(-1 / 2.0)
    expected = weights[0]
    for w in weights[1:]:
        expected = beta * expected + (1 - beta) * w
    got = torch.nn.utils.parameters_to_vector(averaged.parameters()).detach()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # The average is what was validated.
    with torch.no_grad():
        final = sum(averaged.losses(u[:40], x[:40]).tolist())
    assert final == pytest.approx(result.history[-1]["val_loss"], abs=1e-5)


def test_the_kept_weights_of_an_averaged_fit_are_the_validated_best():
    g = torch.Generator().manual_seed(0)
    u, x = _toy_data(600, g)
    u_val, x_val = _toy_data(200, g)
    model = DualFlowPosterior(1, RunningNorm(1), 1, num_transforms=1, hidden_features=(16,))
    config = TrainingConfig(batch_size=64, max_epochs=12, lr=5e-3, ema_epochs=1.0)
    result = train(model, _split_store(u, x, u_val, x_val), config, torch.device("cpu"))
    with torch.no_grad():
        final = sum(model.losses(u_val, x_val).tolist())
    assert final == pytest.approx(result.history[result.best_epoch]["val_loss"], abs=1e-4)
