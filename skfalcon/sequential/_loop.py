r"""SequentialInference: propose, simulate, train, for one observation.

Simulations are expensive and only one observation :math:`x_o` matters, so the loop
draws new parameters from the estimator's widened posterior of :math:`x_o`, runs the
simulator on them (as :func:`skfalcon.simulation.simulate` does: in parallel through
joblib, so any joblib backend, Dask or Ray included, spreads the work, in one pool of
workers for the whole run) and continues training with
:meth:`~skfalcon.FlowPosteriorEstimator.partial_fit`. The posterior
:math:`q(u \mid x) / m(u)` corrects for whatever mix of proposals the training parameters
came from, so no round needs re-weighting. What each round does is its strategy's
(:mod:`skfalcon.sequential.strategies`); the loop runs it on public methods of the
estimator only.

Work is not lost: Ctrl-C, or an error in a round, ends the run with the completed rounds
kept (``interrupted_``); a failing or hanging simulator call is raised or dropped, by
``on_simulator_error``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from skfalcon.estimators._observations import observation_shape_of
from skfalcon.estimators._params import (
    PositiveInt,
    RandomStateLike,
    Verbosity,
    to_python,
    validate_params,
)
from skfalcon.estimators._report import progress_bar
from skfalcon.sequential.strategies import STRATEGIES, Round, Strategy
from skfalcon.simulation import (
    DEFAULT_CHUNK_SIZE,
    SimulatorError,
    _open_pool,
    _seed_sequence,
    _simulate,
    check_observation,
    concatenate_observations,
    match_observation,
    simulator_name,
    take_observations,
)
from skfalcon.utils import draw_seed
from skfalcon.utils.validation import check_positive_int

__all__ = ["SequentialInference", "SequentialParams"]

logger = logging.getLogger("skfalcon")

# Posterior samples drawn after each round to measure the importance-sampling ESS.
_ESS_SAMPLES = 1000
# The share of the final posterior outside the last truncation region above which a run
# warns. Each region holds all but about 0.2 % of its round's samples (with no margin);
# the estimate moves between rounds, and 1-2 % outside is common on 10-D tasks.
_MAX_OUTSIDE_REGION = 0.05


class SequentialParams(BaseModel):
    """The knobs of :class:`SequentialInference`, with their defaults.

    Same conventions as :class:`~skfalcon.estimators._params.FlowPosteriorParams`: strict
    types, numpy scalars accepted, a bad value raises a ``ValueError`` naming it.
    """

    model_config = ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True)

    estimator: Any
    simulator: Any
    strategy: Literal[tuple(STRATEGIES)] = "truncated"  # type: ignore[valid-type]
    min_training_samples: PositiveInt | None = None
    resample_batch_size: PositiveInt | None = None
    resample_interval: PositiveInt = 10
    n_rounds: PositiveInt = 4
    truncation_margin: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    truncation_quantile: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    tol: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    n_jobs: int | None = None
    simulation_chunk_size: PositiveInt = DEFAULT_CHUNK_SIZE
    simulation_timeout: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    on_simulator_error: Literal["raise", "drop"] = "raise"
    random_state: RandomStateLike = None
    verbose: Verbosity = 0

    @field_validator("estimator")
    @classmethod
    def _check_estimator(cls, value: Any) -> Any:
        missing = [
            name
            for name in ("sample_proposal", "partial_fit", "fit", "sample", "get_params")
            if not callable(getattr(value, name, None))
        ]
        if missing:
            raise ValueError(
                "expected a FlowPosteriorEstimator (an estimator with sample_proposal, "
                f"partial_fit, fit and sample); it lacks {', '.join(missing)}"
            )
        if value.get_params().get("prior") is None:
            raise ValueError(
                "the estimator needs a prior to propose simulations from; pass prior=[...] to it"
            )
        return value

    @field_validator("simulator")
    @classmethod
    def _check_simulator(cls, value: Any) -> Any:
        if not callable(value):
            raise ValueError("expected a callable taking a (n, d) array of parameters")
        return value

    @field_validator("n_jobs")
    @classmethod
    def _check_n_jobs(cls, value: int | None) -> int | None:
        if value == 0:
            raise ValueError("expected None, a positive int, or a negative int as in joblib")
        return value

    def make_strategy(self) -> Strategy:
        """A fresh strategy object for one run, with its knobs."""
        kind, knobs = STRATEGIES[self.strategy]
        return kind(**{name: getattr(self, name) for name in knobs})


def _validate(params: dict[str, Any]) -> SequentialParams:
    """Validate the knobs; a bad one raises a ``ValueError`` naming it, its value and what is allowed."""
    converted = {
        k: v if k in ("estimator", "simulator", "random_state") else to_python(v)
        for k, v in params.items()
    }
    return validate_params(converted, "SequentialInference", SequentialParams, "parameter")


class SequentialInference(BaseEstimator):
    r"""Simulate and train in a loop focused on one observation.

    Runs Falcon's loop for a :class:`~skfalcon.FlowPosteriorEstimator`: propose parameters
    with :meth:`~skfalcon.FlowPosteriorEstimator.sample_proposal`, simulate them, train
    with :meth:`~skfalcon.FlowPosteriorEstimator.partial_fit`, until the simulation budget
    given to :meth:`run` is spent. The estimator given is cloned and never modified; the
    trained clone is ``estimator_``. The widening of the proposal is the estimator's
    ``gamma``.

    Parameters
    ----------
    estimator : FlowPosteriorEstimator
        The unfitted (or fitted: it is cloned either way) estimator, with a ``prior``.
        Its ``max_epochs`` bounds the final training, its ``store_capacity`` the
        simulations kept for training, and its ``nan_policy`` says what to do with
        simulations that return NaN or infinity.
    simulator : callable
        ``simulator(theta)`` takes a float64 array of shape ``(n, n_parameters)`` and
        returns ``n`` observations: an array ``(n, *observation_shape)`` (``(n,)`` for
        one feature; a series ``(n, length)``, an image ``(n, channels, h, w)``), or a dict
        of such arrays for named outputs, as :meth:`~skfalcon.FlowPosteriorEstimator.fit`
        takes ``x``. A simulator with an ``rng`` keyword gets a
        :class:`numpy.random.Generator` for each call, else one with a ``random_state``
        keyword an int (:func:`skfalcon.simulation.simulate`): seeds drawn from
        ``random_state``, independent for every chunk. Any other simulator's randomness
        is its own: seed it inside if runs must repeat.
    strategy : {"truncated", "standard", "amortized", "round_based"}, default="truncated"
        The strategy objects of :mod:`skfalcon.sequential.strategies`:
        ``"truncated"``: rounds of simulations from the prior restricted to a region
        around the current posterior (boxes along the cube's and the posterior's
        principal axes), each trained to convergence; the posterior is the conditional
        flow itself, with no ratio to a learned marginal, and the trained estimator is
        accurate only for observations whose posterior lies in the final region.
        ``"standard"``: Falcon's continuous resampling while training, from the widened
        posterior, corrected by a learned marginal; ``"amortized"``: one set of prior
        simulations, one fit; ``"round_based"``: ``n_rounds`` rounds of full renewal of
        the data, discarding implausible rows (the estimator's ``discard_log_ratio``, -20
        when it sets none). ``"truncated"`` is the default: with 2,000 simulations it read
        a lower C2ST than amortized training on all five sequential benchmark tasks,
        lower than ``"standard"`` on two moons, the Gaussian mixture, the Bernoulli GLM
        and a narrow 10-D Gaussian, and tied it on SLCP (``benchmarks/RESULTS.md``). The
        ratio of two learned flows that ``"standard"`` relies on is noisy where the
        posterior is narrow against the prior in several dimensions.
    min_training_samples : int, default=None
        ``"standard"`` and ``"truncated"``: prior simulations run before training
        starts. ``None``: a quarter of the budget given to :meth:`run` (500 for 2,000
        simulations).
    resample_batch_size : int, default=None
        ``"standard"`` and ``"truncated"``: simulations added from the current proposal
        at each resample (each round).
        ``None``: for ``"truncated"`` a quarter of the budget (500 for 2,000 simulations:
        four rounds, each trained to convergence); for ``"standard"`` an eighth (250),
        added every ``resample_interval`` epochs.
    resample_interval : int, default=10
        ``"standard"``: training epochs between resamples.
    n_rounds : int, default=4
        ``"round_based"``: the budget is split into this many equal rounds; each round's
        simulations replace the previous ones.
    truncation_margin : float, default=0.0
        ``"truncated"``: each round's region is the intersection of two boxes in the
        hypercube around 4,000 samples of the current posterior, one along the cube's
        axes and one along the samples' principal axes, each spanning the 0.1 % to 99.9 %
        quantiles of the samples' coordinates and widened on each side by this fraction
        of its width; it is intersected with the earlier regions, so that regions are
        nested and the store's rows are distributed as the prior inside the last one.
        Without a margin the runs of ``benchmarks/RESULTS.md`` read a lower C2ST on all
        five tasks than with 0.25; raise it when ``outside_region`` warns.
    truncation_quantile : float in (0, 1), default=None
        ``"truncated"``: also keep, in each round's region, only the parameters where the
        current posterior's density is at least its ``truncation_quantile`` quantile over
        20,000 draws of it (a highest-density region, as truncated sequential NPE uses),
        intersected with the earlier rounds' (each round's estimator is kept to test
        them). The region then follows several modes, where boxes span the range between
        them. ``None``: the boxes alone. With ``1e-3`` and 5,000 simulations SLCP read a
        lower C2ST than with the boxes alone on each of three seeds (median 0.903 against
        0.912), and 0.892 with rounds of 500 (``resample_batch_size=500``); at 2,000 the
        Bernoulli GLM and the Gaussian mixture read the same and two moons and a narrow
        10-D Gaussian higher (``benchmarks/RESULTS.md``).
    tol : float, default=None
        Stop early when the posterior of ``x_obs`` no longer moves: once a round moves it
        by less than ``tol`` nats (``posterior_movement`` in ``history_``), the run ends
        (``stop_reason_ == "converged"``) and the rest of the budget is not spent. A round
        trained to convergence ends the run at once; a ``"standard"`` round cut short by
        ``resample_interval`` is followed by one more round, trained to convergence.
        ``None`` spends the whole budget.
    n_jobs : int, default=None
        Parallel simulation: each chunk of a round's parameters is one ``simulator`` call
        in ``joblib.Parallel(n_jobs)``. ``None`` runs them one after the other, unless a
        joblib backend context (``joblib.parallel_backend("dask")``, Ray's) is active,
        which then runs them on its workers. ``-1`` uses all cores. Results do not depend
        on it. One ``joblib.Parallel`` serves the whole of :meth:`run`, opened as a
        context manager, so the backend's workers start once per run, not once per round.
    simulation_chunk_size : int, default=32
        Rows per ``simulator`` call. The first round's first row is simulated alone
        first, a pilot that checks ``x_obs`` before the budget is spent.
    simulation_timeout : float, default=None
        Seconds joblib waits for a chunk before it counts as failed (then
        ``on_simulator_error`` decides). Process workers past it are killed; a thread
        cannot be, and runs on in the background. Not enforced (warned) when the
        simulator runs in this process (``n_jobs=None`` or 1, no backend context). The
        first chunks' clock includes starting the run's pool of workers (seconds).
    on_simulator_error : {"raise", "drop"}, default="raise"
        A chunk whose simulator call raises, returns observations of the wrong shape or
        runs past ``simulation_timeout``: ``"raise"`` stops the run and raises (a
        :class:`~skfalcon.simulation.SimulatorError`, or a ``ValueError`` for a wrong
        shape) naming the simulator and the chunk; the completed rounds are kept in
        ``estimator_`` and ``history_`` (``interrupted_`` is True). ``"drop"`` warns,
        drops the chunk's rows (they count against the budget, in ``n_failed``) and goes
        on; a round in which every chunk fails raises.
    random_state : int, RandomState instance or None, default=None
        Seeds the proposals, the simulator's calls and, when set, the estimator's
        training in each round.
    verbose : int, default=0
        Show a progress bar over rounds with the budget spent, the validation loss and
        the ESS.

    Attributes
    ----------
    estimator_ : FlowPosteriorEstimator
        The trained clone of ``estimator``.
    history_ : list of dict
        One record per round (per resample for ``"standard"``): ``round``,
        ``n_simulations`` (new in this round), ``n_simulations_total``, ``n_dropped``,
        ``n_failed`` (rows of failed chunks, ``on_simulator_error="drop"``), ``n_stored``
        (rows in the estimator's store), ``n_epochs``, ``train_loss`` and
        ``val_loss`` (last epoch of the round; the validation set grows across rounds, so
        compare within a round), ``ess`` (effective sample size of the importance pool of
        ``estimator_.sample(x_obs, 1000)``), ``truncation_volume`` (``"truncated"``: the
        fraction of the hypercube's volume the round's simulations were drawn from;
        ``None`` for the other strategies), ``outside_region`` (``"truncated"``: the share
        of those 1,000 draws outside that region; a run warns when the last round's is
        above 5 %; ``None`` for the other strategies), ``posterior_movement`` (the
        Kullback-Leibler divergence, in nats, of the previous round's posterior of
        ``x_obs`` to this round's, estimated on 1,000 draws; NaN for the first round),
        ``final_fit`` (on the last record of a run whose last round continued training a
        fitted network: ``"continued"``, or ``"refit"`` when networks trained afresh on
        all the stored simulations reached the lower validation loss and were kept;
        ``None`` elsewhere), ``seconds_simulate``, ``seconds_train``, ``interrupted``
        (True on the last record of an interrupted run).
    n_simulations_ : int
        Simulations run in the completed rounds, dropped and failed ones included.
    stop_reason_ : {"budget", "converged", "interrupted"}
        Why the run ended: the budget was spent, the posterior stopped moving (``tol``),
        or Ctrl-C or an error stopped it.
    n_dropped_simulations_ : int
        Simulations dropped because their observation held NaN or infinity
        (``nan_policy="drop"``).
    n_failed_simulations_ : int
        Simulations dropped because their chunk failed (``on_simulator_error="drop"``).
    interrupted_ : bool
        Whether the run stopped before its budget was spent and trained: by Ctrl-C, or
        by an error raised from a round (``history_`` and ``estimator_`` then hold the
        completed rounds, the last training possibly cut short).
    x_obs_ : ndarray of shape observation_shape, or dict of ndarray
        The observation the loop focused on, as float64.
    truncation_box_ : ndarray of shape (2, n_prior_parameters)
        ``"truncated"`` only: the lower and upper bounds on each parameter of the last
        round's box (a box in the hypercube is a box in ``theta``). ``estimator_`` is
        trained for observations whose posterior lies inside it. Fixed parameters are
        bounded by their value, marginalized ones by ``-inf`` and ``inf``.

    See Also
    --------
    skfalcon.FlowPosteriorEstimator.sample_proposal : The proposal of each round.
    skfalcon.FlowPosteriorEstimator.partial_fit : Training on the growing store.

    Examples
    --------
    >>> from skfalcon import FlowPosteriorEstimator, SequentialInference
    >>> from skfalcon.datasets import TwoMoons
    >>> task = TwoMoons()
    >>> est = FlowPosteriorEstimator(prior=task.prior, max_epochs=5, random_state=0)
    >>> loop = SequentialInference(
    ...     est, task.simulate, min_training_samples=200, resample_batch_size=100,
    ...     resample_interval=2, random_state=0,
    ... )
    >>> loop.run([0.0, 0.0], n_simulations=400).n_simulations_
    400
    >>> loop.estimator_.sample([0.0, 0.0], 10).shape
    (10, 2)
    """

    def __init__(
        self,
        estimator,
        simulator,
        *,
        strategy="truncated",
        min_training_samples=None,
        resample_batch_size=None,
        resample_interval=10,
        n_rounds=4,
        truncation_margin=0.0,
        truncation_quantile=None,
        tol=None,
        n_jobs=None,
        simulation_chunk_size=32,
        simulation_timeout=None,
        on_simulator_error="raise",
        random_state=None,
        verbose=0,
    ):
        self.estimator = estimator
        self.simulator = simulator
        self.strategy = strategy
        self.min_training_samples = min_training_samples
        self.resample_batch_size = resample_batch_size
        self.resample_interval = resample_interval
        self.n_rounds = n_rounds
        self.truncation_margin = truncation_margin
        self.truncation_quantile = truncation_quantile
        self.tol = tol
        self.n_jobs = n_jobs
        self.simulation_chunk_size = simulation_chunk_size
        self.simulation_timeout = simulation_timeout
        self.on_simulator_error = on_simulator_error
        self.random_state = random_state
        self.verbose = verbose

    def run(self, x_obs, n_simulations):
        """Spend ``n_simulations`` simulator runs learning the posterior of ``x_obs``.

        Ctrl-C stops the run at once and keeps the completed rounds (``interrupted_``,
        with a warning); so does an error in a round, which is then re-raised. With no
        round completed, both propagate and nothing is set.

        Parameters
        ----------
        x_obs : array-like of shape observation_shape, or dict of array-like
            The observation to focus on: one output of the simulator, without the batch
            axis (a leading axis of length 1 is accepted); a dict with the simulator's
            names for named outputs. Checked against a single pilot simulation before
            the rest of the budget is spent.
        n_simulations : int
            Simulation budget: rows passed to the simulator in all rounds together.

        Returns
        -------
        self : SequentialInference
            With ``estimator_`` trained and ``history_`` filled.
        """
        params = _validate(self.get_params(deep=False))
        x_obs = check_observation(x_obs)
        n_simulations = check_positive_int(n_simulations, "n_simulations")
        strategy = params.make_strategy()
        rounds = _check_rounds(strategy, n_simulations, params)
        rng = check_random_state(params.random_state)
        estimator = _working_estimator(params, strategy, rounds, rng)
        run = _Run(params, strategy, estimator, x_obs, rng)
        try:
            # One pool of workers for every round: a backend's workers start once per run.
            with _open_pool(params.n_jobs, params.simulation_timeout) as pool:
                run.run(rounds, pool)
        except Exception as exc:
            if run.history:  # the completed rounds are work worth keeping
                self._keep(run, interrupted=True)
                warnings.warn(
                    f"SequentialInference stopped in round {len(run.history)} by "
                    f"{type(exc).__name__}; the {len(run.history)} completed rounds "
                    f"({run.n_simulations} simulations) are kept in estimator_ and history_, "
                    "and interrupted_ is True.",
                    UserWarning,
                    stacklevel=2,
                )
            raise
        finally:
            run.close_progress()
        self._keep(run, interrupted=run.interrupted)
        if run.interrupted:
            warnings.warn(
                f"SequentialInference was interrupted after {len(run.history)} of "
                f"{len(rounds)} rounds ({run.n_simulations} of {n_simulations} simulations); "
                "estimator_ and history_ keep the completed rounds (the last one flagged "
                "'interrupted'), and interrupted_ is True.",
                UserWarning,
                stacklevel=2,
            )
        else:
            _warn_collapsed_weights(self.history_, params.strategy)
            _warn_outside_region(self.history_)
        return self

    def _keep(self, run: _Run, *, interrupted: bool) -> None:
        """Set the fitted attributes, together, from the completed rounds of ``run``."""
        if interrupted:
            run.history[-1]["interrupted"] = True
        self.estimator_ = run.estimator
        self.history_ = run.history
        self.n_simulations_ = run.n_simulations
        self.n_dropped_simulations_ = run.n_dropped
        self.n_failed_simulations_ = run.n_failed
        self.x_obs_ = run.x_obs
        self.interrupted_ = interrupted
        self.stop_reason_ = "interrupted" if interrupted else run.stop_reason
        if run.strategy.name == "truncated":
            box = run.strategy.trained_box  # the last completed round's, not a proposed one
            self.truncation_box_ = run.estimator.prior_.box_to_theta(*box)


def _working_estimator(params: SequentialParams, strategy: Strategy, rounds, rng):
    """A clone of the user's estimator, with the strategy's options and the run's seed."""
    base = clone(params.estimator)
    options = strategy.estimator_options(rounds, base)
    # A seed in every case: the final round's two fits must split the store alike.
    if params.random_state is not None or base.get_params()["random_state"] is None:
        options["random_state"] = draw_seed(rng)
    return type(base)(**{**base.get_params(deep=False), **options})


def _check_rounds(strategy: Strategy, n_simulations: int, params) -> list[Round]:
    if strategy.name in ("standard", "truncated") and (
        params.min_training_samples is not None and n_simulations < params.min_training_samples
    ):
        raise ValueError(
            f"n_simulations={n_simulations} is below min_training_samples="
            f"{params.min_training_samples}; the {strategy.name} strategy needs at least that "
            "many prior simulations before training starts."
        )
    if strategy.name == "round_based" and n_simulations < params.n_rounds:
        raise ValueError(
            f"n_simulations={n_simulations} is below n_rounds={params.n_rounds}; each round "
            "needs at least one simulation."
        )
    return strategy.rounds(n_simulations)


def _best_val_loss(estimator) -> float:
    """The best validation loss of the estimator's last round (the engine's record)."""
    return float(estimator.history_[-1]["best_val_loss"])


def _warn_collapsed_weights(history: list[dict], strategy: str) -> None:
    """Warn when the final posterior's importance weights collapsed, and say what avoids it."""
    ess = history[-1]["ess"] if history else math.inf
    if ess >= _ESS_SAMPLES or strategy == "truncated":
        return
    warnings.warn(
        f"After the last round the posterior of x_obs has an effective sample size of "
        f"{ess:.0f} for {_ESS_SAMPLES} samples: the ratio q/m of the two learned flows is "
        "unreliable for this observation, and its samples repeat. This happens when the "
        "posterior is narrow against the prior in several dimensions; "
        "strategy='truncated' needs no such ratio.",
        UserWarning,
        stacklevel=3,
    )


def _warn_outside_region(history: list[dict]) -> None:
    """Warn when much of the final posterior lies outside the last truncation region."""
    outside = history[-1].get("outside_region") if history else None
    if outside is None or outside <= _MAX_OUTSIDE_REGION:
        return
    warnings.warn(
        f"{100 * outside:.1f} % of the posterior of x_obs lies outside the last truncation "
        "region, where only the earlier rounds' simulations were run: the posterior there "
        "rests on fewer simulations and is underestimated: the simulations, all counted as "
        "drawn from the prior, are denser inside the region than outside, so more of the "
        "true posterior lies outside than this share. Raise "
        "truncation_margin (0.1 to 0.25), or min_training_samples for a better first "
        "estimate.",
        UserWarning,
        stacklevel=3,
    )


class _Run:
    """One run of a strategy: the estimator being trained, counts, history, progress bar."""

    def __init__(self, params, strategy: Strategy, estimator, x_obs, rng):
        self.params = params
        self.strategy = strategy
        self.estimator = estimator
        self.x_obs = x_obs
        self.rng = rng
        # One seed sequence for the run's simulations: each simulate call spawns a child.
        self.streams = _seed_sequence(rng)
        self.observation_shape = None  # known from the first simulation that succeeds
        self.history: list[dict] = []
        self.n_simulations = 0
        self.n_dropped = 0
        self.n_failed = 0
        self.interrupted = False
        self.stop_reason = "budget"
        self._bar = None
        self._pool = None  # the joblib.Parallel every round's simulations run in
        # Draws of the last round's posterior of x_obs and their log-density under it, and
        # those of the round before.
        self._draws: tuple[np.ndarray, np.ndarray] | None = None
        self._previous_draws: tuple[np.ndarray, np.ndarray] | None = None
        # The fitted estimator before the last round trained to convergence, and that
        # round's rows: what a fresh final fit on all the stored rows starts from.
        self._before_last: tuple[Any, tuple] | None = None

    def run(self, rounds: list[Round], pool) -> None:
        """Run the rounds, simulating in ``pool``; stop at once on Ctrl-C, or when training
        was cut short by one.

        A ``KeyboardInterrupt`` (from the simulator, the proposal or training) ends the run
        after the completed rounds; with none completed it propagates.
        """
        self._pool = pool
        if self.params.verbose:
            self._bar = progress_bar(len(rounds), self.strategy.name, "round")
        settled = False  # the posterior stopped moving: this round is the last
        for i, planned in enumerate(rounds):
            final = settled or i == len(rounds) - 1
            if settled:  # the last round trains to convergence
                planned = Round(planned.size)
            try:
                self.step(planned, final=final)
            except KeyboardInterrupt:
                if not self.history:
                    raise
                self.interrupted = True
            # partial_fit catches a Ctrl-C during training, keeps its best weights and
            # says so in interrupted_: the user asked the run to stop, not that epoch.
            self.interrupted |= bool(getattr(self.estimator, "interrupted_", False))
            if self.interrupted:
                self.stop_reason = "interrupted"
                return
            if final:
                break
            settled = self._settled()
            if settled and planned.max_epochs is None:  # converged already: stop here
                break
        self.stop_reason = "converged" if settled else "budget"
        self.finish()

    def _settled(self) -> bool:
        """Whether the last round moved the posterior by less than ``tol``."""
        tol = self.params.tol
        movement = self.history[-1]["posterior_movement"]
        return tol is not None and bool(movement < tol)

    def finish(self) -> None:
        """Keep the better of the trained networks and a fresh fit on all stored rows.

        The last round trained to convergence continued from the networks of the earlier
        rounds. The same round is trained again from new networks, on the same store (the
        same training and validation rows: the estimator's seed fixes the split), and the
        networks with the lower best validation loss are kept, so that the run's result
        is never worse, on held-out simulations, than one fit on all of them.
        """
        if self._before_last is None:
            return
        before, rows = self._before_last
        self._before_last = None
        n_before = len(before.history_)
        start = time.perf_counter()
        try:
            # Its warnings (convergence, overfitting) concern the run only if it is kept.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                refit = before.partial_fit(*rows[:2], theta_log_prob=rows[2], reset_network=True)
        except KeyboardInterrupt:
            self.interrupted, self.stop_reason = True, "interrupted"
            return
        record = self.history[-1]
        record["seconds_train"] += time.perf_counter() - start
        if getattr(refit, "interrupted_", False) or not (
            _best_val_loss(refit) < _best_val_loss(self.estimator)
        ):
            record["final_fit"] = "continued"
            return
        for caught_warning in caught:
            warnings.warn_explicit(
                caught_warning.message,
                caught_warning.category,
                caught_warning.filename,
                caught_warning.lineno,
            )
        self.estimator = refit
        last = refit.history_[-1]
        record.update(
            final_fit="refit",
            n_epochs=len(refit.history_) - n_before,
            train_loss=float(last.get("train_loss", math.nan)),
            val_loss=float(last.get("val_loss", math.nan)),
        )
        # The movement from the round before, to the networks kept.
        self._draws = self._previous_draws
        record["ess"], record["posterior_movement"] = self._draw_posterior()
        if self._draws is not None:
            record.update(self.strategy.record(refit, self._draws[0]))

    def close_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def step(self, planned: Round, *, final: bool) -> None:
        """Propose, simulate and train one round; append its history record."""
        estimator, n = self.estimator, planned.size
        start = time.perf_counter()
        theta, log_prob = self.strategy.propose(estimator, self.x_obs, n, draw_seed(self.rng))
        x, keep = self.simulate(theta)
        if not keep.all():  # failed chunks (on_simulator_error="drop") train nothing
            theta = theta[keep]
            log_prob = None if log_prob is None else log_prob[keep]
        seconds_simulate = time.perf_counter() - start

        start = time.perf_counter()
        fitted = hasattr(estimator, "network_") and not self.strategy.refits
        n_epochs_before = len(estimator.history_) if fitted else 0
        if fitted and planned.max_epochs is None:
            # A possible last round: keep what a fresh fit on all the rows would start from.
            self._before_last = (copy.deepcopy(estimator), (theta, x, log_prob))
        with warnings.catch_warnings():
            if not final:
                # A round is meant to stop before convergence; only the last one must converge.
                warnings.simplefilter("ignore", ConvergenceWarning)
            if self.strategy.refits:
                estimator.fit(theta, x)
            else:
                estimator.partial_fit(
                    theta, x, theta_log_prob=log_prob, max_epochs=planned.max_epochs
                )
        seconds_train = time.perf_counter() - start
        # Counted once the round is trained: the counts describe the completed rounds.
        n_failed = int((~keep).sum())
        self.n_simulations += n
        self.n_failed += n_failed
        self.n_dropped += estimator.n_dropped_simulations_
        self._record(n, n_failed, n_epochs_before, seconds_simulate, seconds_train)

    def simulate(self, theta):
        """The observations of the rows of ``theta`` that succeeded, and which those are.

        The first round starts with a pilot: its first row alone, so that an ``x_obs`` of
        another shape than the simulator's is refused after one simulation, not a round.
        """
        if self.observation_shape is not None:
            return self._simulate(theta)
        try:
            x, keep = self._simulate(theta[:1])
        except SimulatorError:
            if self.params.on_simulator_error == "raise" or len(theta) == 1:
                raise
            # A dropped pilot: the first chunk of the rest that succeeds checks x_obs.
            x, keep = None, np.zeros(1, dtype=bool)
        if len(theta) == 1:
            return x, keep
        x_rest, keep_rest = self._simulate(theta[1:])
        keep = np.concatenate([keep, keep_rest])
        return (x_rest if x is None else concatenate_observations([x, x_rest])), keep

    def _simulate(self, theta):
        """One simulation call, in the run's pool and on its own seed stream, as
        :func:`~skfalcon.simulation.simulate` runs it; checks ``x_obs`` the first time."""
        params = self.params
        x, failed = _simulate(
            params.simulator,
            theta,
            n_jobs=params.n_jobs,
            random_state=self.streams.spawn(1)[0],
            chunk_size=params.simulation_chunk_size,
            timeout=params.simulation_timeout,
            on_error=params.on_simulator_error,
            observation_shape=self.observation_shape,
            parallel=self._pool,
        )
        x = take_observations(x, ~failed) if failed.any() else x
        if self.observation_shape is None:  # the first outputs tell what one observation is
            self.x_obs = match_observation(self.x_obs, x, simulator_name(params.simulator))
            self.observation_shape = observation_shape_of(x)
        return x, ~failed

    def _draw_posterior(self) -> tuple[float, float]:
        r"""The ESS of a posterior draw for ``x_obs``, and how far the posterior moved.

        The movement is :math:`\mathrm{KL}(p_{r-1} \,\|\, p_r) \approx \frac1n
        \sum_i [\log p_{r-1}(\theta_i) - \log p_r(\theta_i)]` over the previous round's
        draws :math:`\theta_i \sim p_{r-1}`, NaN for the first round. Both are NaN when
        Ctrl-C cuts this short, which stops the run after this (trained) round.
        """
        estimator, seed = self.estimator, draw_seed(self.rng)
        try:
            with warnings.catch_warnings():
                # A low ESS is recorded, not warned; so is a stochastic log-density.
                warnings.simplefilter("ignore", UserWarning)
                theta, ess = estimator.sample(
                    self.x_obs, _ESS_SAMPLES, random_state=seed, return_ess=True
                )
                movement = math.nan
                if self._draws is not None:
                    previous, log_p_previous = self._draws
                    log_p = estimator.log_prob(previous, self.x_obs)
                    movement = float(np.mean(log_p_previous - log_p))
                self._previous_draws = self._draws
                self._draws = (theta, estimator.log_prob(theta, self.x_obs))
        except KeyboardInterrupt:
            self.interrupted = True
            self._draws = None  # the run ends; no draws of this round's posterior
            return math.nan, math.nan
        return float(ess), movement

    def _record(self, n, n_failed, n_epochs_before, seconds_simulate, seconds_train) -> None:
        estimator = self.estimator
        ess, movement = self._draw_posterior()
        last = estimator.history_[-1] if estimator.history_ else {}
        record = {
            "round": len(self.history),
            "n_simulations": n,
            "n_simulations_total": self.n_simulations,
            "n_dropped": estimator.n_dropped_simulations_,
            "n_failed": n_failed,
            "n_stored": estimator.n_stored_simulations_,
            "n_epochs": len(estimator.history_) - n_epochs_before,
            "train_loss": float(last.get("train_loss", math.nan)),
            "val_loss": float(last.get("val_loss", math.nan)),
            "ess": ess,
            **self.strategy.record(estimator, None if self._draws is None else self._draws[0]),
            "posterior_movement": movement,
            "final_fit": None,
            "seconds_simulate": seconds_simulate,
            "seconds_train": seconds_train,
            "interrupted": False,
        }
        self.history.append(record)
        logger.info(
            "%s round %d: %d new simulations (%d in all), %s stored, %d epochs, "
            "validation loss %.4f, ESS %.0f of %d, simulate %.1f s, train %.1f s",
            self.strategy.name,
            record["round"],
            n,
            self.n_simulations,
            record["n_stored"],
            record["n_epochs"],
            record["val_loss"],
            record["ess"],
            _ESS_SAMPLES,
            seconds_simulate,
            seconds_train,
        )
        if self._bar is not None:
            self._bar.set_postfix(
                sims=self.n_simulations, val=f"{record['val_loss']:.3f}", ess=f"{ess:.0f}"
            )
            self._bar.update(1)
