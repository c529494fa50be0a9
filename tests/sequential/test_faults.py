"""SequentialInference under faults: Ctrl-C, failing or hanging simulators, a wrong x_obs."""

import threading
import time

import joblib
import numpy as np
import pytest

from skfalcon import FlowPosteriorEstimator, SequentialInference
from skfalcon.simulation import SimulatorError

PRIOR = [("uniform", -1.0, 1.0), ("uniform", -1.0, 1.0)]
X_OBS = np.array([0.3, -0.2])


def toy_simulator(theta):
    rng = np.random.default_rng(int(1e6 * abs(theta[0, 0])))
    return theta + 0.1 * rng.standard_normal(theta.shape)


class FaultySimulator:
    """``toy_simulator``, but call number ``at`` (1-based) does ``fault``; counts calls.

    ``fault`` is an exception to raise, ``"shape"`` (one feature instead of two) or
    ``"hang"`` (sleep 3 s first).
    """

    def __init__(self, at, fault):
        self.at, self.fault = at, fault
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, theta):
        with self.lock:
            self.sizes.append(len(theta))
            call = len(self.sizes)
        if call == self.at:
            if self.fault == "shape":
                return theta[:, :1]
            if self.fault == "hang":
                time.sleep(3.0)
            else:
                raise self.fault
        return toy_simulator(theta)


@pytest.fixture
def estimator(tiny):
    return FlowPosteriorEstimator(prior=PRIOR, random_state=0, **{**tiny, "max_epochs": 4})


def loop(estimator, simulator, **kwargs):
    # Rounds of 200, 100, 100 simulations; one chunk per call unless a test says otherwise,
    # so the calls are: 1 the pilot row, 2 the rest of round 0, 3 round 1, 4 round 2.
    knobs = dict(
        strategy="standard",
        min_training_samples=200,
        resample_batch_size=100,
        resample_interval=2,
        simulation_chunk_size=1000,
        random_state=0,
    )
    return SequentialInference(estimator, simulator, **{**knobs, **kwargs})


def assert_kept_rounds(seq, n_rounds):
    """The run stopped after ``n_rounds`` completed rounds and kept them, flagged."""
    assert seq.interrupted_ is True
    assert len(seq.history_) == n_rounds
    assert [r["interrupted"] for r in seq.history_] == [False] * (n_rounds - 1) + [True]
    assert seq.n_simulations_ == seq.history_[-1]["n_simulations_total"]
    assert seq.estimator_.n_stored_simulations_ == seq.history_[-1]["n_stored"]
    assert seq.estimator_.sample(X_OBS, 5, random_state=0).shape == (5, 2)


# Interrupts ------------------------------------------------------------------------------


def test_ctrl_c_in_the_simulator_stops_at_once_and_keeps_completed_rounds(estimator):
    simulator = FaultySimulator(at=3, fault=KeyboardInterrupt())
    with pytest.warns(UserWarning, match=r"interrupted after 1 of 3 rounds \(200 of 400"):
        seq = loop(estimator, simulator).run(X_OBS, 400)
    assert_kept_rounds(seq, 1)
    assert seq.n_simulations_ == 200
    assert len(simulator.sizes) == 3  # nothing ran after the Ctrl-C


@pytest.mark.parametrize("at", [1, 2])
def test_ctrl_c_before_any_completed_round_propagates(estimator, at):
    seq = loop(estimator, FaultySimulator(at=at, fault=KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        seq.run(X_OBS, 400)
    assert not hasattr(seq, "estimator_") and not hasattr(seq, "history_")


def test_training_cut_short_by_ctrl_c_stops_the_run(estimator, monkeypatch):
    # partial_fit catches a Ctrl-C during training, keeps its best weights and sets
    # interrupted_; stand in for that on the second round.
    original = FlowPosteriorEstimator.partial_fit
    calls = []

    def partial_fit(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls.append(1)
        self.interrupted_ = len(calls) == 2
        return self

    monkeypatch.setattr(FlowPosteriorEstimator, "partial_fit", partial_fit)
    with pytest.warns(UserWarning, match="interrupted after 2 of 3 rounds"):
        seq = loop(estimator, toy_simulator).run(X_OBS, 400)
    assert_kept_rounds(seq, 2)
    assert len(calls) == 2


def test_ctrl_c_raised_from_partial_fit_keeps_the_rounds_before(estimator, monkeypatch):
    original = FlowPosteriorEstimator.partial_fit

    def partial_fit(self, *args, **kwargs):
        if hasattr(self, "network_"):  # before any epoch of round 1: nothing to keep
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FlowPosteriorEstimator, "partial_fit", partial_fit)
    with pytest.warns(UserWarning, match="interrupted after 1 of 3 rounds"):
        seq = loop(estimator, toy_simulator).run(X_OBS, 400)
    assert_kept_rounds(seq, 1)


# Simulator faults ------------------------------------------------------------------------


def test_simulator_error_raises_naming_the_chunk_and_keeps_completed_rounds(estimator):
    simulator = FaultySimulator(at=3, fault=ValueError("negative mass"))
    seq = loop(estimator, simulator)
    with (
        pytest.warns(UserWarning, match=r"stopped in round 1 by SimulatorError; the 1 completed"),
        pytest.raises(
            SimulatorError,
            match=r"'FaultySimulator' raised ValueError: negative mass on chunk 0 of 1 "
            r"\(parameter rows 0 to 99\)",
        ) as caught,
    ):
        seq.run(X_OBS, 400)
    assert isinstance(caught.value.__cause__, ValueError)
    assert_kept_rounds(seq, 1)


def test_simulator_error_in_the_first_round_keeps_nothing(estimator):
    seq = loop(estimator, FaultySimulator(at=2, fault=ValueError("boom")))
    with pytest.raises(SimulatorError, match="raised ValueError: boom"):
        seq.run(X_OBS, 400)
    assert not hasattr(seq, "estimator_")


@pytest.mark.parametrize(
    "fault, match",
    [
        (
            ValueError("boom"),
            r"raised ValueError: boom on chunk 1 of 4 \(parameter rows 50 to 99\)",
        ),
        ("shape", r"of shape \(1,\), but observation_shape has \(2,\); on chunk 1"),
    ],
)
def test_drop_policy_drops_the_failing_chunk_and_goes_on(estimator, fault, match):
    # Chunks of 50: call 1 is the pilot row, calls 2 to 5 the other 199 rows of round 0.
    simulator = FaultySimulator(at=3, fault=fault)
    seq = loop(estimator, simulator, simulation_chunk_size=50, on_simulator_error="drop")
    dropped = r"Dropped 1 of 4 chunks \(50 of 199 simulations\) that failed .*"
    with pytest.warns(UserWarning, match=dropped + match):
        seq.run(X_OBS, 300)
    assert seq.interrupted_ is False
    assert seq.n_simulations_ == 300  # failed rows were run: they count against the budget
    assert seq.n_failed_simulations_ == 50
    assert [r["n_failed"] for r in seq.history_] == [50, 0]
    assert seq.history_[-1]["n_stored"] == 250


def test_drop_policy_survives_a_failing_pilot(estimator):
    simulator = FaultySimulator(at=1, fault=RuntimeError("cold start"))
    seq = loop(estimator, simulator, on_simulator_error="drop").run(X_OBS, 300)
    assert seq.n_failed_simulations_ == 1 and seq.history_[0]["n_stored"] == 199


def test_wrong_shape_with_raise_names_the_chunk(estimator):
    seq = loop(estimator, FaultySimulator(at=3, fault="shape"))
    with pytest.warns(UserWarning, match="stopped in round 1 by ValueError"):
        with pytest.raises(
            ValueError, match=r"shape \(1,\), but observation_shape has \(2,\); on chunk 0 of 1"
        ):
            seq.run(X_OBS, 400)
    assert_kept_rounds(seq, 1)


@pytest.mark.parametrize("policy", ["raise", "drop"])
def test_a_hanging_chunk_runs_into_the_timeout(estimator, policy):
    # Threads: the hung call cannot be killed and finishes in the background, unused.
    simulator = FaultySimulator(at=3, fault="hang")
    seq = loop(
        estimator,
        simulator,
        n_jobs=2,
        simulation_chunk_size=50,
        simulation_timeout=0.5,
        on_simulator_error=policy,
    )
    start = time.perf_counter()
    with joblib.parallel_backend("threading", n_jobs=2):
        if policy == "raise":
            with pytest.raises(
                SimulatorError,
                match=r"ran past timeout=0.5 s \(SequentialInference: simulation_timeout\) on chunk \d of 4",
            ):
                seq.run(X_OBS, 300)
        else:
            with pytest.warns(UserWarning, match=r"Dropped 1 of 4 chunks .* ran past timeout"):
                seq.run(X_OBS, 300)
            assert seq.n_failed_simulations_ in (49, 50)  # whichever chunk was call 3
            assert seq.n_simulations_ == 300
    assert time.perf_counter() - start < 30


def test_timeout_in_this_process_warns_that_it_is_not_enforced(estimator):
    seq = loop(estimator, toy_simulator, simulation_timeout=10.0, strategy="amortized")
    with pytest.warns(
        UserWarning,
        match=r"timeout=10.0 \(SequentialInference: simulation_timeout\) is not enforced: with n_jobs=None",
    ):
        seq.run(X_OBS, 200)


def test_wrong_x_obs_is_refused_after_one_pilot_simulation(estimator):
    simulator = FaultySimulator(at=0, fault=None)
    with pytest.raises(ValueError, match=r"x_obs must be one observation of shape \(2,\)"):
        loop(estimator, simulator).run(np.zeros(3), 10_000)
    assert simulator.sizes == [1]


# Seeds -----------------------------------------------------------------------------------


class SeededRecorder:
    """x = theta + noise from the ``random_state`` it is given; records every call."""

    def __init__(self):
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []
        self.lock = threading.Lock()

    def __call__(self, theta, random_state=None):
        x = theta + 0.1 * np.random.RandomState(random_state).standard_normal(theta.shape)
        with self.lock:
            self.calls.append((theta, x))
        return x


def recorded_rows(simulator):
    """Every (theta, x) row the simulator saw, sorted by theta: the order threads ran in
    does not matter, only what was simulated."""
    rows = np.concatenate([np.hstack(call) for call in simulator.calls])
    return rows[np.lexsort(rows.T[::-1])]


def test_runs_do_not_depend_on_n_jobs(estimator):
    runs = []
    for n_jobs in (1, 2):
        simulator = SeededRecorder()
        with joblib.parallel_backend("threading", n_jobs=n_jobs):
            loop(estimator, simulator, simulation_chunk_size=32).run(X_OBS, 300)
        runs.append(recorded_rows(simulator))
    np.testing.assert_array_equal(runs[0], runs[1])  # the same theta and the same x
    noise = runs[0][:, 2:] - runs[0][:, :2]
    assert len(np.unique(noise[:, 0])) == len(noise)  # no two chunks share noise
