"""The sample store of partial_fit, the exact prior marginal and the proposal of sample_proposal."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from skfalcon import FlowPosteriorEstimator
from skfalcon.engine import SampleStore, UniformCube
from skfalcon.estimators import _flow_posterior

# ---------------------------------------------------------------- engine


def _rows(n, start=0.0, validation_every=0):
    u = torch.arange(start, start + n, dtype=torch.float32)[:, None]
    is_val = torch.zeros(n, dtype=torch.bool)
    if validation_every:
        is_val[::validation_every] = True
    return u, u.clone(), torch.zeros(n), torch.ones(n, dtype=torch.bool), is_val


def test_store_appends_rounds_and_keeps_the_newest_rows_per_split():
    store = SampleStore.empty(1, (1,)).append(*_rows(10, 0.0, validation_every=5))
    store = store.append(*_rows(10, 100.0, validation_every=5))
    assert len(store) == 20 and store.round.tolist() == [0] * 10 + [1] * 10
    assert store.next_round == 2
    trimmed = store.keep_newest(n_train=10, n_validation=3)
    assert int((~trimmed.is_validation).sum()) == 10 and int(trimmed.is_validation.sum()) == 3
    # The newest rows survive: all 8 training rows of round 1 and 2 of round 0.
    train_u = trimmed.u[~trimmed.is_validation, 0].tolist()
    assert train_u == [8.0, 9.0, 101.0, 102.0, 103.0, 104.0, 106.0, 107.0, 108.0, 109.0]
    assert trimmed.u[trimmed.is_validation, 0].tolist() == [5.0, 100.0, 105.0]
    # The original store is unchanged: stores are immutable.
    assert len(store) == 20


def test_uniform_cube_density_and_samples():
    cube = UniformCube(3, 2.0)
    v, log_p = cube.sample_and_log_prob((5000,))
    assert v.shape == (5000, 3) and v.abs().max() <= 2.0
    np.testing.assert_allclose(log_p.numpy(), -3 * np.log(4.0), rtol=1e-6)
    assert stats.kstest(v[:, 0].numpy(), stats.uniform(-2, 4).cdf).pvalue > 1e-3


# ---------------------------------------------------------------- partial_fit and the store


@pytest.fixture
def est_kwargs(tiny, moons_data):
    task, _, _ = moons_data
    return dict(prior=task.prior, random_state=0, **{**tiny, "max_epochs": 2})


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_partial_fit_grows_the_store_and_validation_rows_stay_validation(moons_data, est_kwargs):
    _, theta, x = moons_data
    est = _quiet(FlowPosteriorEstimator(**est_kwargs).fit, theta[:300], x[:300])
    assert est.n_stored_simulations_ == 300
    first_round_val = est._store.is_validation.clone()
    _quiet(est.partial_fit, theta[300:], x[300:])
    assert est.n_stored_simulations_ == 600
    store = est._store
    assert torch.equal(store.is_validation[store.round == 0], first_round_val)
    assert int(store.is_validation.sum()) == 60
    assert est.n_iter_ == 4


def test_store_capacity_drops_the_oldest_rows(moons_data, est_kwargs):
    _, theta, x = moons_data
    est = FlowPosteriorEstimator(store_capacity=400, **est_kwargs)
    _quiet(est.partial_fit, theta[:300], x[:300])
    _quiet(est.partial_fit, theta[300:], x[300:])
    store = est._store
    assert est.n_stored_simulations_ == 400 == len(store)
    assert int(store.is_validation.sum()) == 40
    # Round 1 brought 270 training and 30 validation rows; all of them are kept.
    assert int((store.round == 1).sum()) == 300


def test_fit_resets_the_store(moons_data, est_kwargs):
    _, theta, x = moons_data
    est = FlowPosteriorEstimator(**est_kwargs)
    _quiet(est.partial_fit, theta[:300], x[:300])
    _quiet(est.partial_fit, theta[300:], x[300:])
    _quiet(est.fit, theta[:100], x[:100])
    assert est.n_stored_simulations_ == 100 and est._store.next_round == 1


def test_discard_samples_drops_rows_below_the_log_ratio_threshold(moons_data, est_kwargs):
    task, theta, x = moons_data
    est = FlowPosteriorEstimator(discard_samples=True, **est_kwargs)
    _quiet(est.fit, theta[:300], x[:300])
    assert est.n_discarded_simulations_ == 0
    # These rows claim a proposal density e^200 times the prior's: their log-ratio is ~ -200.
    log_prob = np.full(300, np.log(0.25))
    log_prob[:5] += 200.0
    _quiet(est.partial_fit, theta[300:], x[300:], theta_log_prob=log_prob)
    assert est.n_discarded_simulations_ == 5
    assert est.n_stored_simulations_ == 595
    assert float(est._store.log_proposal.max()) < 0.0


def test_discarding_every_training_row_raises_and_keeps_the_estimator(moons_data, est_kwargs):
    _, theta, x = moons_data
    est = _quiet(
        FlowPosteriorEstimator(discard_samples=True, log_ratio_threshold=1e6, **est_kwargs).fit,
        theta[:300],
        x[:300],
    )
    store, network = est._store, est.network_
    with pytest.raises(ValueError, match="discard_samples would drop all 540 training rows"):
        est.partial_fit(theta[300:], x[300:])
    assert est._store is store and est.network_ is network and est.n_iter_ == 2


def test_reset_network_after_pause_rebuilds_the_networks(monkeypatch, moons_data, est_kwargs):
    _, theta, x = moons_data
    calls = []
    original = _flow_posterior._build_network
    monkeypatch.setattr(
        _flow_posterior, "_build_network", lambda spec: calls.append(1) or original(spec)
    )
    for reset, expected in ((False, 1), (True, 2)):
        calls.clear()
        est = FlowPosteriorEstimator(reset_network_after_pause=reset, **est_kwargs)
        _quiet(est.partial_fit, theta[:300], x[:300])
        _quiet(est.partial_fit, theta[300:], x[300:])
        assert len(calls) == expected


def test_nan_rows_drop_their_theta_log_prob_too(moons_data, est_kwargs):
    _, theta, x = moons_data
    est = _quiet(FlowPosteriorEstimator(**est_kwargs).fit, theta[:300], x[:300])
    x_bad = x[300:].copy()
    x_bad[[0, 7]] = np.nan
    log_prob = np.full(300, np.log(0.25))
    with pytest.warns(UserWarning, match="Dropped 2 of 300 simulations"):
        _quiet_convergence(est.partial_fit, theta[300:], x_bad, theta_log_prob=log_prob)
    assert est.n_dropped_simulations_ == 2 and est.n_stored_simulations_ == 598


def _quiet_convergence(fn, *args, **kwargs):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


@pytest.mark.parametrize(
    ("log_prob", "match"),
    [
        (np.zeros(299), r"theta_log_prob has shape \(299,\), but theta has 300 rows"),
        (np.full(300, np.nan), "theta_log_prob must be finite or -inf, got nan at row 0"),
        (np.zeros((300, 2)), r"theta_log_prob has shape \(300, 2\)"),
    ],
)
def test_bad_theta_log_prob_raises(moons_data, est_kwargs, log_prob, match):
    _, theta, x = moons_data
    with pytest.raises(ValueError, match=match):
        FlowPosteriorEstimator(**est_kwargs).partial_fit(theta[:300], x[:300], log_prob)


def test_theta_log_prob_needs_a_prior(moons_data, tiny):
    _, theta, x = moons_data
    with pytest.raises(ValueError, match="theta_log_prob needs a prior"):
        FlowPosteriorEstimator(**tiny).partial_fit(theta, x, np.zeros(len(theta)))


def test_store_is_not_pickled_and_a_loaded_model_starts_a_new_one(moons_data, est_kwargs):
    _, theta, x = moons_data
    est = _quiet(FlowPosteriorEstimator(**est_kwargs).fit, theta[:300], x[:300])
    assert "_store" not in est.__getstate__()
    blob = pickle.dumps(est)
    loaded = pickle.loads(blob)
    assert not hasattr(loaded, "_store") and loaded.marginal_ == "prior"
    assert loaded.network_.marginal_is_prior
    _quiet(loaded.partial_fit, theta[300:400], x[300:400])
    assert loaded.n_stored_simulations_ == 100


# ---------------------------------------------------------------- the marginal


def test_auto_marginal_is_the_exact_prior_until_proposal_rows_arrive(moons_data, est_kwargs):
    _, theta, x = moons_data
    est = _quiet(FlowPosteriorEstimator(**est_kwargs).fit, theta[:300], x[:300])
    assert est.marginal_ == "prior" and est.network_.marginal_is_prior
    # A one-shot fit does not train the marginal flow while the prior serves as m.
    assert all(r["train_loss_marginal"] == 0.0 for r in est.history_)
    before = {k: v.clone() for k, v in est.network_.marginal.state_dict().items()}
    # partial_fit does, so the flow is ready for proposal rows, but m stays the prior.
    _quiet(est.partial_fit, theta[300:400], x[300:400])
    assert est.marginal_ == "prior" and est.network_.marginal_is_prior
    assert all(r["train_loss_marginal"] != 0.0 for r in est.history_[2:])
    after = est.network_.marginal.state_dict()
    assert not all(torch.equal(before[k], after[k]) for k in before)
    log_prob = np.full(200, np.log(0.25))
    _quiet(est.partial_fit, theta[400:], x[400:], theta_log_prob=log_prob)
    assert est.marginal_ == "flow" and not est.network_.marginal_is_prior
    assert all(r["train_loss_marginal"] != 0.0 for r in est.history_[4:])


def test_flow_marginal_is_trained_from_the_start(moons_data, est_kwargs):
    _, theta, x = moons_data
    est = _quiet(FlowPosteriorEstimator(marginal="flow", **est_kwargs).fit, theta[:300], x[:300])
    assert est.marginal_ == "flow"
    assert all(r["train_loss_marginal"] != 0.0 for r in est.history_)


def test_exact_marginal_log_prob_is_normalized(fitted_moons):
    # With m the uniform prior, log_prob integrates to one over the prior box.
    grid = np.linspace(-1, 1, 161)
    g1, g2 = np.meshgrid(grid, grid)
    theta = np.column_stack([g1.ravel(), g2.ravel()])
    x_obs = np.array([0.1, -0.2])
    density = np.exp(fitted_moons.log_prob(theta, x_obs)).reshape(g1.shape)
    cell = (grid[1] - grid[0]) ** 2
    assert fitted_moons.marginal_ == "prior"
    assert density.sum() * cell == pytest.approx(1.0, abs=0.05)


# ---------------------------------------------------------------- sample_proposal


def test_sample_proposal_before_fit_is_the_prior_with_its_density(moons_data, est_kwargs):
    est = FlowPosteriorEstimator(**est_kwargs)
    theta, log_prob = est.sample_proposal(None, 2000, return_log_prob=True)
    assert theta.shape == (2000, 2) and np.abs(theta).max() <= 1.0
    np.testing.assert_allclose(log_prob, np.log(0.25))


def test_sample_proposal_gamma_one_is_the_prior(fitted_moons, moons_data):
    _, _, x = moons_data
    est = _quiet(pickle.loads, pickle.dumps(fitted_moons)).set_params(gamma=1.0, num_proposals=16)
    theta, log_prob = est.sample_proposal(x[0], 4000, random_state=1, return_log_prob=True)
    for column in theta.T:
        assert stats.kstest(column, stats.uniform(-1, 2).cdf).pvalue > 1e-3
    np.testing.assert_allclose(log_prob, np.log(0.25), atol=0.05)


def test_sample_proposal_gamma_zero_is_the_posterior(fitted_moons, moons_data):
    _, _, x = moons_data
    est = _quiet(pickle.loads, pickle.dumps(fitted_moons)).set_params(gamma=0.0)
    theta, log_prob = est.sample_proposal(x[0], 4000, random_state=1, return_log_prob=True)
    posterior = est.sample(x[0], 4000, random_state=2)
    for a, b in zip(theta.T, posterior.T, strict=True):
        assert stats.ks_2samp(a, b).pvalue > 1e-3
    # The proposal's density of its draws is the normalized posterior density there.
    np.testing.assert_allclose(log_prob, est.log_prob(theta, x[0]), atol=0.1)


def test_sample_proposal_widens_with_gamma(fitted_moons, moons_data):
    _, _, x = moons_data
    est = _quiet(pickle.loads, pickle.dumps(fitted_moons))
    spread = [
        est.set_params(gamma=g).sample_proposal(x[0], 4000, random_state=1).std(0).sum()
        for g in (0.0, 0.5, 1.0)
    ]
    assert spread[0] < spread[1] < spread[2]
