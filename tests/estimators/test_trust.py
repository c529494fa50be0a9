"""Numbers a scientist can act on: reproducible from any thread, normalized, precise."""

import threading
import warnings

import numpy as np
import pytest
import torch

from skfalcon import FlowPosteriorEstimator
from skfalcon.datasets import TwoMoons
from tests._tiny import TINY


def _in_threads(call, n_threads=6):
    results = [None] * n_threads
    barrier = threading.Barrier(n_threads)

    def work(i):
        barrier.wait()  # start together, so the calls overlap
        results[i] = call()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("fixture", ["fitted_moons", "fitted_moons_flow"])
@pytest.mark.parametrize("method", ["sample", "sample_proposal", "log_prob"])
def test_calls_from_several_threads_match_a_single_threaded_call(request, fixture, method):
    est = request.getfixturevalue(fixture)
    _, theta, x = request.getfixturevalue("moons_data")
    calls = {
        "sample": lambda: est.sample(x[:2], 300, random_state=7),
        "sample_proposal": lambda: est.sample_proposal(x[0], 300, random_state=7),
        "log_prob": lambda: est.log_prob(theta[:300], x[3]),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = calls[method]()
        for result in _in_threads(calls[method]):
            np.testing.assert_array_equal(result, expected)


def test_sampling_leaves_torch_global_random_state_untouched(fitted_moons_flow, moons_data):
    _, _, x = moons_data
    torch.manual_seed(123)
    state = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted_moons_flow.sample(x[0], 100, random_state=1)
        fitted_moons_flow.sample_proposal(x[0], 100, random_state=1)
        fitted_moons_flow.log_prob(x[:5], x[0])
    assert torch.equal(torch.get_rng_state(), state)


def _fitted(kind):
    task = TwoMoons()
    theta = task.sample_prior(600, random_state=0)
    x = task.simulate(theta, random_state=1)
    marginal = "flow" if kind == "flow" else "auto"
    est = FlowPosteriorEstimator(prior=task.prior, marginal=marginal, random_state=0, **TINY)
    est.fit(theta, x)
    if kind == "mixture":
        proposal, log_q = est.sample_proposal(x[0], 300, random_state=2, return_log_prob=True)
        est.partial_fit(proposal, task.simulate(proposal, random_state=3), theta_log_prob=log_q)
    assert est.marginal_ == kind
    return est, x


@pytest.mark.parametrize("kind", ["prior", "mixture", "flow"])
def test_exp_log_prob_integrates_to_one_for_every_marginal(kind):
    # Three epochs of tiny flows: q/m is rough, and log Z(x) must still be accurate.
    est, x = _fitted(kind)
    edges = np.linspace(-1, 1, 241)
    grid = (edges[1:] + edges[:-1]) / 2
    g1, g2 = np.meshgrid(grid, grid)
    theta = np.column_stack([g1.ravel(), g2.ravel()])
    cell = (edges[1] - edges[0]) ** 2
    for x_obs in x[:2]:
        total = np.exp(est.log_prob(theta, x_obs)).sum() * cell
        assert total == pytest.approx(1.0, abs=0.02)
        log_z, error = est.log_normalizer(x_obs)
        assert error.shape == (1,) and (error <= 0.005).all()
        assert (error == 0).all() if kind == "prior" else (error > 0).all()


def test_an_unreachable_log_z_accuracy_warns_with_the_figure(fitted_moons_flow, moons_data):
    _, theta, x = moons_data
    est = fitted_moons_flow
    tolerance, values = est._log_z.tolerance, dict(est._log_z.values)
    est._log_z.values.clear()
    est._log_z.tolerance = 1e-6  # the same pool budget cannot reach this
    try:
        with pytest.warns(UserWarning, match=r"log Z\(x\).*known only to within 0\.\d+ nats"):
            est.log_prob(theta[:3], x[11])
    finally:
        est._log_z.tolerance = tolerance
        est._log_z.values.clear()
        est._log_z.values.update(values)


def test_an_offset_in_x_changes_nothing(tiny):
    # float32 keeps ~7 digits: 1e8 + signal survives only if x is standardized in float64.
    task = TwoMoons()
    theta = task.sample_prior(600, random_state=0)
    x = task.simulate(theta, random_state=1)
    shifted = x + 1e8
    kw = dict(prior=task.prior, random_state=0, **tiny)
    plain = FlowPosteriorEstimator(**kw).fit(theta, x)
    offset = FlowPosteriorEstimator(**kw).fit(theta, shifted)
    np.testing.assert_allclose(
        offset.sample(shifted[0], 50, random_state=0),
        plain.sample(x[0], 50, random_state=0),
        atol=1e-4,
    )
    np.testing.assert_allclose(
        offset.log_prob(theta[:20], shifted[0]), plain.log_prob(theta[:20], x[0]), atol=1e-4
    )


def test_theta_that_overflows_standardization_is_an_error(tiny):
    theta = np.array([[1e308, 0.0], [-1e308, 1.0], [1e308, 2.0]])
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"theta \(X\) column 0 cannot be standardized"):
        FlowPosteriorEstimator(**tiny).fit(theta, x)


def _frame_data():
    pd = pytest.importorskip("pandas")
    task = TwoMoons()
    theta = task.sample_prior(300, random_state=0)
    x = task.simulate(theta, random_state=1)
    return (
        pd,
        task,
        pd.DataFrame(theta, columns=["a", "b"]),
        pd.DataFrame(x, columns=["x1", "x2"]),
    )


def test_column_names_are_checked_in_every_method(tiny):
    pd, task, theta, x = _frame_data()
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny).fit(theta, x)
    assert list(est.feature_names_in_) == ["a", "b"]
    assert list(est.observation_names_in_) == ["x1", "x2"]
    swapped_x = x[["x2", "x1"]]
    swapped_theta = theta[["b", "a"]]
    match = r"has columns \['x2', 'x1'\], but FlowPosteriorEstimator was fitted with"
    for call in (
        lambda: est.sample(swapped_x.iloc[:2], 3),
        lambda: est.sample(swapped_x.iloc[0], 3),  # one observation as a Series
        lambda: est.log_prob(theta.iloc[:3], swapped_x.iloc[:1]),
        lambda: est.sample_proposal(swapped_x.iloc[0], 3),
        lambda: est.log_normalizer(swapped_x.iloc[:1]),
        lambda: est.score(theta, swapped_x),
        lambda: est.partial_fit(theta, swapped_x),
    ):
        with pytest.raises(ValueError, match=match):
            call()
    with pytest.raises(ValueError, match=r"theta has columns \['b', 'a'\]"):
        est.log_prob(swapped_theta.iloc[:3], x.iloc[0])
    # The right names in the right order give the same numbers as arrays.
    np.testing.assert_array_equal(
        est.log_prob(theta.iloc[:5], x.iloc[0]), est.log_prob(theta.to_numpy()[:5], x.to_numpy()[0])
    )


def test_a_failed_fit_with_other_names_keeps_the_old_names(tiny):
    pd, task, theta, x = _frame_data()
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny).fit(theta, x)
    wide = theta.assign(c=0.0)
    with pytest.raises(ValueError, match="theta has 3 columns but the prior has 2"):
        est.fit(wide, x.rename(columns={"x1": "y1"}))
    assert list(est.feature_names_in_) == ["a", "b"] and est.n_features_in_ == 2
    assert list(est.observation_names_in_) == ["x1", "x2"]


def test_awkward_but_valid_inputs_are_read_as_arrays(fitted_moons, moons_data, tiny):
    task, theta, x = moons_data
    # Negative strides and tensors that require grad.
    reversed_x = x[::-1]
    np.testing.assert_array_equal(
        fitted_moons.sample(reversed_x[:2], 4, random_state=0),
        fitted_moons.sample(np.ascontiguousarray(reversed_x[:2]), 4, random_state=0),
    )
    tensor = torch.as_tensor(x[:1]).requires_grad_(True)
    assert fitted_moons.sample(tensor, 4).shape == (1, 4, 2)
    est = FlowPosteriorEstimator(prior=task.prior, random_state=0, **tiny)
    est.fit(torch.as_tensor(theta).requires_grad_(True), torch.as_tensor(x[:, :1]))
    # A number is one observation of a one-feature model.
    assert est.sample(0.3, 5).shape == (5, 2)


def test_a_tiny_training_set_warns(tiny):
    task = TwoMoons()
    theta = task.sample_prior(40, random_state=0)
    with pytest.warns(UserWarning, match=r"Only 40 simulations: below 100"):
        FlowPosteriorEstimator(prior=task.prior, **tiny).fit(theta, task.simulate(theta))


def test_a_sample_too_large_for_memory_is_refused_up_front(fitted_moons, moons_data):
    from skfalcon.estimators._flow_posterior import MAX_SAMPLE_BYTES

    _, _, x = moons_data
    n = MAX_SAMPLE_BYTES // (2 * 8) + 1
    with pytest.raises(ValueError, match=r"sample would return \d+\.\d GiB .* above the limit"):
        fitted_moons.sample(x[0], n)


def test_unavailable_devices_are_named(moons_data):
    _, theta, x = moons_data
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match=r"device='mps' was requested but Apple's MPS"):
            FlowPosteriorEstimator(device="mps").fit(theta, x)


def test_log_z_of_an_observation_does_not_depend_on_its_company(fitted_moons_flow, moons_data):
    _, theta, x = moons_data
    est = fitted_moons_flow
    saved = dict(est._log_z.values)
    try:
        est._log_z.values.clear()
        alone = est.log_normalizer(x[20])[0]
        est._log_z.values.clear()
        together = est.log_normalizer(x[18:22])[0]
        assert together[2] == alone[0]
    finally:
        est._log_z.values.clear()
        est._log_z.values.update(saved)
