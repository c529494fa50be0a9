"""The sample store of partial_fit, the exact prior marginal and the proposal of sample_proposal."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from skfalcon import FlowPosteriorEstimator
from skfalcon.engine import NetworkSpec, PriorMixture, SampleStore, UniformCube
from skfalcon.engine.store import log_ratio_to_proposal

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


class _Normal:
    """A 1-D normal density with the flows' interface, standing in for the marginal flow."""

    def __init__(self, scale):
        self.dist = torch.distributions.Normal(0.0, scale)

    def log_prob(self, v, context=None):
        return self.dist.log_prob(v).sum(-1)

    def sample_and_log_prob(self, shape, context=None, generator=None):
        v = self.dist.sample((*shape, 1))
        return v, self.log_prob(v)


def test_prior_mixture_density_and_samples():
    torch.manual_seed(0)
    alpha, scale = 0.3, 0.2
    mixture = PriorMixture(UniformCube(1, 2.0), _Normal(scale), alpha)
    v, log_p = mixture.sample_and_log_prob((20_000,))
    assert v.shape == (20_000, 1) and log_p.shape == (20_000,)
    expected = stats.norm(0, scale).pdf(v[:, 0].numpy()) * (1 - alpha) + alpha / 4.0
    np.testing.assert_allclose(log_p.numpy(), np.log(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mixture.log_prob(v).numpy(), log_p.numpy(), rtol=1e-6)

    def cdf(t):
        return alpha * stats.uniform(-2, 4).cdf(t) + (1 - alpha) * stats.norm(0, scale).cdf(t)

    assert stats.kstest(v[:, 0].numpy(), cdf).pvalue > 1e-3
    # A wrong mixture weight is detected by the same test.
    wrong = PriorMixture(UniformCube(1, 2.0), _Normal(scale), 0.5)
    assert stats.kstest(wrong.sample_and_log_prob((20_000,))[0][:, 0].numpy(), cdf).pvalue < 1e-3


class _NoEmptyBatches(_Normal):
    """Like zuko's flows, refuses a batch of zero rows."""

    def log_prob(self, v, context=None):
        assert v.shape[0] > 0, "empty batch"
        return super().log_prob(v)

    def sample_and_log_prob(self, shape, context=None, generator=None):
        assert shape[0] > 0, "empty batch"
        return super().sample_and_log_prob(shape)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_prior_mixture_small_draws_never_send_the_flow_an_empty_batch(n):
    torch.manual_seed(0)
    mixture = PriorMixture(UniformCube(1, 2.0), _NoEmptyBatches(0.2), 0.5)
    for _ in range(20):  # all-prior and all-flow draws both happen
        v, log_p = mixture.sample_and_log_prob((n,))
        assert v.shape == (n, 1) and torch.isfinite(log_p).all()
        torch.testing.assert_close(mixture.log_prob(v), log_p)


def test_store_marks_prior_rows_filtered_only_by_a_rule_that_looks_at_them():
    u, x, log_g, from_prior, is_val = _rows(10)
    from_prior[5:] = False
    store = SampleStore.empty(1, (1,)).append(u, x, log_g, from_prior, is_val)
    assert store.prior_fraction() == pytest.approx(0.5)
    keep = torch.ones(10, dtype=torch.bool)
    keep[7] = False  # a proposal row
    assert store.select(keep, filters_prior_rows=True).prior_fraction() == pytest.approx(5 / 9)
    keep[2] = False  # a prior row: the rest are no longer prior-distributed
    filtered = store.select(keep, filters_prior_rows=True)
    assert filtered.prior_rows_filtered and filtered.prior_fraction() is None
    assert filtered.append(*_rows(3, 50.0)).prior_rows_filtered
    # Dropping the oldest rows is blind to their values.
    assert store.keep_newest(4, 0).prior_fraction() == 0.0
    assert not store.keep_newest(4, 0).prior_rows_filtered


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
    est = FlowPosteriorEstimator(discard_log_ratio=-20.0, **est_kwargs)
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
        FlowPosteriorEstimator(discard_log_ratio=1e6, **est_kwargs).fit,
        theta[:300],
        x[:300],
    )
    store, network = est._store, est.network_
    with pytest.raises(
        ValueError, match="discard_log_ratio=1000000.0 would drop all 540 training rows"
    ):
        est.partial_fit(theta[300:], x[300:])
    assert est._store is store and est.network_ is network and est.n_iter_ == 2


def test_reset_network_after_pause_rebuilds_the_networks(monkeypatch, moons_data, est_kwargs):
    _, theta, x = moons_data
    calls = []
    original = NetworkSpec.build
    monkeypatch.setattr(NetworkSpec, "build", lambda spec: calls.append(1) or original(spec))
    for reset, expected in ((False, 1), (True, 2)):
        calls.clear()
        est = FlowPosteriorEstimator(**est_kwargs)
        _quiet(est.partial_fit, theta[:300], x[:300])
        _quiet(est.partial_fit, theta[300:], x[300:], reset_network=reset)
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
    assert loaded.network_.marginal_policy.is_exact_prior
    _quiet(loaded.partial_fit, theta[300:400], x[300:400])
    assert loaded.n_stored_simulations_ == 100


# ---------------------------------------------------------------- the marginal


def test_auto_marginal_is_the_exact_prior_until_proposal_rows_arrive(moons_data, est_kwargs):
    _, theta, x = moons_data
    est = _quiet(FlowPosteriorEstimator(**est_kwargs).fit, theta[:300], x[:300])
    assert est.marginal_ == "prior" and est.network_.marginal_policy.is_exact_prior
    # Neither fit nor partial_fit trains the marginal flow while the prior serves as m:
    # in the mixture that follows it models proposal rows only.
    before = {k: v.clone() for k, v in est.network_.marginal.state_dict().items()}
    _quiet(est.partial_fit, theta[300:400], x[300:400])
    assert est.marginal_ == "prior" and est.network_.marginal_policy.is_exact_prior
    assert all(r["train_loss_marginal"] == 0.0 for r in est.history_)
    after = est.network_.marginal.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    log_prob = np.full(200, np.log(0.25))
    _quiet(est.partial_fit, theta[400:], x[400:], theta_log_prob=log_prob)
    # Now m = alpha * prior + (1 - alpha) * flow, alpha the training rows' prior share.
    assert est.marginal_ == "mixture" and not est.network_.marginal_policy.is_exact_prior
    train = ~est._store.is_validation
    expected = float(est._store.from_prior[train].double().mean())
    assert est.prior_fraction_ == pytest.approx(expected) and 0.55 < expected < 0.75
    assert all(r["train_loss_marginal"] != 0.0 for r in est.history_[4:])


def test_mixture_marginal_flow_learns_the_proposal_rows_only(moons_data, est_kwargs):
    _, theta, x = moons_data
    est = _quiet(FlowPosteriorEstimator(**est_kwargs).fit, theta[:300], x[:300])
    assert int(est.network_.marginal.norm.n_updates) == 0  # a fit on prior rows skips it
    # Proposal rows all near theta = (0.5, 0.5): u = 2 theta = 1 in the cube (-2, 2), whose
    # probit image is ndtri(3/4) = 0.674. The flow's normalisation sees those rows alone.
    rng = np.random.RandomState(0)
    theta_near = np.clip(0.5 + 0.01 * rng.randn(200, 2), -1, 1)
    x_near = moons_data[0].simulate(theta_near, random_state=2)
    log_prob = np.full(200, np.log(1.0))
    _quiet(est.partial_fit, theta_near, x_near, theta_log_prob=log_prob)
    assert est.marginal_ == "mixture"
    np.testing.assert_allclose(est.network_.marginal.norm.mean.numpy(), 0.674, atol=0.05)
    # marginal="flow" learns all rows: its normalisation is pulled toward the prior's 0.
    flow = _quiet(FlowPosteriorEstimator(marginal="flow", **est_kwargs).fit, theta[:300], x[:300])
    _quiet(flow.partial_fit, theta_near, x_near, theta_log_prob=log_prob, reset_network=True)
    assert flow.marginal_ == "flow" and flow.prior_fraction_ is None
    assert (flow.network_.marginal.norm.mean.numpy() < 0.5).all()


def test_mixture_marginal_survives_pickling_and_discarding_prior_rows_drops_it(
    moons_data, est_kwargs
):
    _, theta, x = moons_data
    est = _quiet(FlowPosteriorEstimator(**est_kwargs).fit, theta[:300], x[:300])
    log_prob = np.full(200, np.log(0.25))
    _quiet(est.partial_fit, theta[300:500], x[300:500], theta_log_prob=log_prob)
    loaded = pickle.loads(pickle.dumps(est))
    assert loaded.marginal_ == "mixture" and loaded.prior_fraction_ == est.prior_fraction_
    assert loaded.network_.marginal_policy == est.network_.marginal_policy
    x_obs = x[:1]
    np.testing.assert_array_equal(
        loaded.sample(x_obs, 50, random_state=3), est.sample(x_obs, 50, random_state=3)
    )
    # Discarding looks at each row: once it drops a prior row, the flow models all rows.
    est.set_params(discard_log_ratio=1e6)
    with pytest.raises(ValueError, match="discard_log_ratio=1000000.0 would drop all"):
        _quiet(est.partial_fit, theta[500:], x[500:], theta_log_prob=log_prob[:100])
    assert est.marginal_ == "mixture"  # the failed round changed nothing
    # A threshold at the median log-ratio of the stored prior rows drops half of them.
    ratios = log_ratio_to_proposal(est.network_, est._store, est.device_)
    est.set_params(discard_log_ratio=float(ratios[est._store.from_prior].median()))
    _quiet(est.partial_fit, theta[500:], x[500:], theta_log_prob=log_prob[:100])
    assert est.n_discarded_simulations_ > 0 and est._store.prior_rows_filtered
    assert est.marginal_ == "flow" and est.prior_fraction_ is None
    assert est.network_.inference_marginal is est.network_.marginal


def test_flow_marginal_is_trained_from_the_start(moons_data, est_kwargs):
    _, theta, x = moons_data
    est = _quiet(FlowPosteriorEstimator(marginal="flow", **est_kwargs).fit, theta[:300], x[:300])
    assert est.marginal_ == "flow"
    assert all(r["train_loss_marginal"] != 0.0 for r in est.history_)


def test_exact_marginal_log_prob_is_normalized(fitted_moons):
    # With m the uniform prior, log_prob integrates to one over the prior box (midpoint rule).
    edges = np.linspace(-1, 1, 321)
    grid = (edges[1:] + edges[:-1]) / 2
    g1, g2 = np.meshgrid(grid, grid)
    theta = np.column_stack([g1.ravel(), g2.ravel()])
    x_obs = np.array([0.1, -0.2])
    density = np.exp(fitted_moons.log_prob(theta, x_obs)).reshape(g1.shape)
    cell = (edges[1] - edges[0]) ** 2
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
