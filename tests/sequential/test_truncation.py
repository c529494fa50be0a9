"""The truncated strategy's regions: boxes along the cube's and the posterior's axes."""

import numpy as np
import pytest

from skfalcon import FlowPosteriorEstimator, SequentialInference
from skfalcon.priors import FactorizedPrior
from skfalcon.sequential.strategies import PrincipalBox, TruncatedStrategy

PRIOR = [("uniform", -1.0, 1.0), ("uniform", -1.0, 1.0)]


def correlated(n, rng, scales=(0.3, 0.01)):
    """Rows along the diagonal: sd 0.3 along (1, 1), 0.01 across it."""
    axes = np.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2)
    return rng.standard_normal((n, 2)) * scales @ axes.T


def test_a_principal_box_follows_the_samples_axes():
    rng = np.random.default_rng(0)
    u = correlated(20000, rng)
    box = PrincipalBox.around(u, tail=1e-3, margin=0.0)
    assert box.contains(u).mean() > 0.99
    # Its widths are the quantile ranges along the axes: about 6.2 sd each.
    np.testing.assert_allclose(np.sort(box.high - box.low), [0.062, 1.86], rtol=0.1)
    axis_aligned = np.prod(np.quantile(u, 0.999, 0) - np.quantile(u, 0.001, 0))
    assert box.volume < axis_aligned / 10
    draws = box.sample(20000, rng)
    assert box.contains(draws).all()
    np.testing.assert_allclose(draws.mean(0), box.center, atol=0.02)


def region_strategy(principal_boxes=()):
    strategy = TruncatedStrategy()
    strategy.prior = FactorizedPrior(PRIOR)
    low, high = strategy.prior.cube_box()
    strategy.box = (low * 0.5, high * 0.5)
    strategy.principal_boxes = list(principal_boxes)
    return strategy


def test_region_draws_are_uniform_on_the_intersection_and_its_volume_is_estimated():
    rng = np.random.default_rng(1)
    strategy = region_strategy()
    cube = strategy.prior.cube_box()[1][0]
    principal = PrincipalBox(np.zeros(2), np.eye(2), np.array([0.0, -cube]), np.full(2, cube))
    boxes, pilot = strategy._region(principal, rng)
    u, volume = strategy._draw_region(40000, boxes, rng, pilot)
    # The box is [-b/2, b/2]^2; the principal box keeps its half with u_0 >= 0.
    assert np.all(u[:, 0] >= 0) and np.all(np.abs(u) <= cube / 2)
    np.testing.assert_allclose(u.mean(0), [cube / 4, 0.0], atol=0.01 * cube)
    assert volume == pytest.approx(1 / 8, rel=0.03)
    assert boxes[1:] == [principal]
    # Drawing records nothing: the strategy's region changes only once a round is drawn.
    assert strategy.principal_boxes == [] and strategy.volume == 1.0


def test_a_principal_box_that_would_keep_almost_nothing_is_left_out():
    rng = np.random.default_rng(2)
    strategy = region_strategy()
    sliver = PrincipalBox(np.zeros(2), np.eye(2), np.full(2, 10.0), np.full(2, 10.0 + 1e-9))
    boxes, pilot = strategy._region(sliver, rng)
    u, volume = strategy._draw_region(1000, boxes, rng, pilot)
    assert boxes[1:] == []
    assert u.shape == (1000, 2) and volume == pytest.approx(0.25, rel=0.03)


class GaussianPosterior:
    """A stand-in for a fitted estimator: the posterior N(0, sd^2 I) in theta, whatever x."""

    def __init__(self, sd):
        self.sd = sd

    def sample(self, x, n, random_state=None):
        return self.sd * np.random.default_rng(random_state).standard_normal((n, 2))

    def log_prob(self, theta, x):
        return -0.5 * np.sum(theta**2, axis=1) / self.sd**2 - 2 * np.log(self.sd)


def test_a_density_region_keeps_the_posteriors_highest_density_region_and_nests():
    rng = np.random.default_rng(3)
    strategy = TruncatedStrategy(truncation_quantile=1e-3)
    strategy.prior = FactorizedPrior(PRIOR)
    strategy.box = strategy.prior.cube_box()
    whole = PrincipalBox.aligned(*strategy.box)
    theta = strategy._draw_dense(GaussianPosterior(0.2), None, 20000, [whole], None, rng)
    # The threshold bounds a disk; it holds all but about 0.1 % of N(0, 0.04 I), whose
    # radius^2 is 0.04 * 2 ln(1000) (the quantile of 20 draws in 20,000: a few % noise).
    radius2 = 2 * 0.04 * (-strategy.density_cuts[0][1] - 2 * np.log(0.2))
    assert radius2 == pytest.approx(0.04 * 2 * np.log(1000), rel=0.15)
    r2 = np.sum(theta**2, axis=1)
    assert r2.max() <= radius2
    assert np.mean(r2 > 0.9 * radius2) == pytest.approx(0.1, abs=0.01)  # uniform on it
    # Its share of the prior's square [-1, 1]^2: pi r^2 / 4.
    assert strategy.volume == pytest.approx(np.pi * radius2 / 4, rel=0.03)
    # A wider posterior next: the region stays inside the first one.
    theta = strategy._draw_dense(GaussianPosterior(0.5), None, 5000, [whole], None, rng)
    assert len(strategy.density_cuts) == 2
    assert np.sum(theta**2, axis=1).max() <= radius2
    assert strategy.volume == pytest.approx(np.pi * radius2 / 4, rel=0.03)


class DiagonalSimulator:
    """x = (theta_0 + theta_1, theta_0 - theta_1) with sd 0.02 and 0.4: a posterior narrow
    across the diagonal and wide along it. Keeps each call's theta."""

    def __init__(self):
        self.calls = []
        self.rng = np.random.default_rng(0)

    def __call__(self, theta):
        self.calls.append(theta.copy())
        x = np.stack([theta[:, 0] + theta[:, 1], theta[:, 0] - theta[:, 1]], axis=1)
        return x + [0.02, 0.4] * self.rng.standard_normal(x.shape)


@pytest.mark.slow
def test_truncated_rounds_of_a_correlated_posterior_draw_from_its_principal_box(tiny):
    est = FlowPosteriorEstimator(prior=PRIOR, random_state=0, **{**tiny, "max_epochs": 30})
    simulator = DiagonalSimulator()
    seq = SequentialInference(est, simulator, strategy="truncated", random_state=0)
    seq.run([0.2, 0.0], 800)
    volumes = [r["truncation_volume"] for r in seq.history_]
    # Nested regions; their volumes are Monte Carlo estimates (about 0.3 % noise).
    assert volumes[0] == 1.0
    assert all(a >= 0.99 * b for a, b in zip(volumes, volumes[1:], strict=False))
    low, high = seq.truncation_box_
    box_share = np.prod((high - low) / 2.0)
    # The region is much smaller than its axis-aligned box: the posterior is a thin band.
    assert volumes[-1] < box_share / 2
    last = np.concatenate(simulator.calls)[-seq.history_[-1]["n_simulations"] :]
    # Its rows lie near the line theta_0 + theta_1 = 0.2.
    assert np.quantile(np.abs(last.sum(1) - 0.2), 0.99) < 0.5


@pytest.mark.slow
def test_truncated_rounds_with_a_density_region_draw_from_inside_it(tiny):
    est = FlowPosteriorEstimator(prior=PRIOR, random_state=0, **{**tiny, "max_epochs": 30})
    simulator = DiagonalSimulator()
    seq = SequentialInference(est, simulator, truncation_quantile=1e-3, random_state=0).run(
        [0.2, 0.0], 800
    )
    strategy_volumes = [r["truncation_volume"] for r in seq.history_]
    assert strategy_volumes[0] == 1.0
    assert all(a >= 0.95 * b for a, b in zip(strategy_volumes, strategy_volumes[1:], strict=False))
    # The last round's rows lie near the line theta_0 + theta_1 = 0.2, as the posterior does.
    last = np.concatenate(simulator.calls)[-seq.history_[-1]["n_simulations"] :]
    assert np.quantile(np.abs(last.sum(1) - 0.2), 0.99) < 0.5
    # Each round's posterior lies in its region: the loop warns past 5 % outside.
    outside = [r["outside_region"] for r in seq.history_]
    assert outside[0] == 0.0 and max(outside) <= 0.01


def test_a_posterior_outside_the_last_region_is_recorded_and_warned(tiny, monkeypatch):
    from skfalcon.sequential import _loop

    est = FlowPosteriorEstimator(prior=PRIOR, random_state=0, **{**tiny, "max_epochs": 5})
    seq = SequentialInference(
        est,
        DiagonalSimulator(),
        strategy="truncated",
        min_training_samples=200,
        resample_batch_size=100,
        random_state=0,
    )
    seq.run([0.2, 0.0], 300)
    outside = [r["outside_region"] for r in seq.history_]
    assert outside[0] == 0.0  # the first round's region is the whole cube
    assert 0.0 <= outside[1] <= 1.0
    # Under a threshold of -1 any share warns; the same seed gives the same share.
    monkeypatch.setattr(_loop, "_MAX_OUTSIDE_REGION", -1.0)
    with pytest.warns(UserWarning, match=rf"^{100 * outside[-1]:.1f} % of the posterior"):
        seq.run([0.2, 0.0], 300)
