r"""Strategies of the sequential loop: how many simulations, from which proposal, trained how.

A strategy plans the rounds of a run (:class:`Round`: its simulations and its epoch
budget), draws each round's parameters, and may set hyperparameters of the estimator the
run trains (a clone of the user's, configured once when the run starts). It uses public
methods of the estimator and its prior only.

- :class:`StandardStrategy`, Falcon's continuous resampling: a quarter of the budget from
  the prior starts training; every ``resample_interval`` epochs an eighth more comes
  from the current proposal :math:`\pi(u)[p(u \mid x_o)/\pi(u)]^{1-\gamma}`; the last
  round trains to convergence.
- :class:`AmortizedStrategy`: one set of prior simulations, one fit.
- :class:`RoundBasedStrategy`: ``n_rounds`` equal rounds from the current proposal, each
  replacing the store (its capacity is one round) and discarding implausible rows, each
  trained to convergence.
- :class:`TruncatedStrategy`: a quarter of the budget from the prior, then rounds of a
  quarter, each from the prior restricted
  to a region of the cube around the current posterior of :math:`x_o`, joining the store
  as prior rows and trained to convergence. The region is the intersection of two boxes
  around 4,000 posterior samples, each spanning the 0.1 % to 99.9 % quantiles of the
  samples' coordinates, widened by ``truncation_margin`` of its width: one along the
  cube's axes, one along the principal axes of the samples (the eigenvectors of their
  covariance), which is far smaller for a correlated posterior. Each region is also
  intersected with the previous ones, so inside the last region every stored row
  follows the prior, and the posterior is :math:`q` itself, without the ratio to a
  learned marginal. With ``truncation_quantile`` set, the region also keeps only the
  parameters where each round's posterior density is at least its ``truncation_quantile``
  quantile over 20,000 draws of it (a highest-density region, as in truncated sequential
  NPE), which follows several modes where boxes cannot.

The prior is uniform in the cube, so its restriction to a region is uniform on it:
regions are drawn by rejection from the smaller of their two boxes.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = [
    "STRATEGIES",
    "AmortizedStrategy",
    "PrincipalBox",
    "Round",
    "RoundBasedStrategy",
    "StandardStrategy",
    "Strategy",
    "TruncatedStrategy",
]

_TRUNCATION_SAMPLES = 4000
# Draws whose log-densities set a density threshold: its quantile rests on
# truncation_quantile * 20,000 of them (20 for 1e-3).
_DENSITY_SAMPLES = 20000
# Candidates from the boxes per row wanted, per pass of the density test, and the passes
# after which a region that kept none of them is an error.
_DENSITY_OVERDRAW = 20
_DENSITY_MAX_EMPTY_PASSES = 50
# Candidates per rejection batch, and the acceptance below which a principal-axes box is
# left out of the region (it then costs more draws than it saves simulations).
_REJECTION_BATCH = 65536
_MIN_ACCEPTANCE = 1e-3
# Extreme samples are too sensitive to the flow's tails to bound the box.
_TRUNCATION_TAIL = 1e-3
# Falcon's discard threshold, for round-based runs of an estimator that sets none.
_ROUND_BASED_DISCARD_LOG_RATIO = -20.0


@dataclass(frozen=True)
class Round:
    """One round: ``size`` new simulations, then at most ``max_epochs`` epochs (``None``:
    the estimator's own ``max_epochs``, to convergence)."""

    size: int
    max_epochs: int | None = None


class Strategy:
    """Base of the strategies; a new instance serves each run."""

    name = ""
    #: Whether each round is a fresh ``fit`` rather than a ``partial_fit``.
    refits = False

    def rounds(self, n_simulations: int) -> list[Round]:
        raise NotImplementedError

    def estimator_options(self, rounds: list[Round], estimator) -> dict:
        """Hyperparameters of the estimator this strategy trains; none by default."""
        return {}

    def propose(self, estimator, x_obs, n: int, seed: int):
        """``(theta, log_prob)`` of ``n`` new rows; ``log_prob`` ``None`` for prior rows."""
        if not hasattr(estimator, "network_"):  # the first round: the prior
            return estimator.sample_proposal(x_obs, n, random_state=seed), None
        return estimator.sample_proposal(x_obs, n, random_state=seed, return_log_prob=True)

    def record(self, estimator, theta: np.ndarray | None) -> dict:
        """Strategy-specific entries of a round's history record, given draws ``theta`` of
        the trained posterior of ``x_obs`` (``None`` when Ctrl-C cut them short)."""
        return {"truncation_volume": None, "outside_region": None}


def _budget_rounds(
    n_simulations: int, first: int | None, step: int | None, epochs, parts: int = 8
) -> list[Round]:
    """A first round (a quarter of the budget) and steps of ``1 / parts`` of it, the last
    unbounded."""
    first = first or max(1, n_simulations // 4)
    step = step or max(1, n_simulations // parts)
    rest = n_simulations - first
    sizes = [first] + [min(step, rest - start) for start in range(0, rest, step)]
    return [Round(size, None if i == len(sizes) - 1 else epochs) for i, size in enumerate(sizes)]


class StandardStrategy(Strategy):
    """Falcon's continuous resampling (see the module docstring)."""

    name = "standard"

    def __init__(self, min_training_samples=None, resample_batch_size=None, resample_interval=10):
        self.min_training_samples = min_training_samples
        self.resample_batch_size = resample_batch_size
        self.resample_interval = resample_interval

    def rounds(self, n_simulations: int) -> list[Round]:
        return _budget_rounds(
            n_simulations,
            self.min_training_samples,
            self.resample_batch_size,
            self.resample_interval,
        )


class AmortizedStrategy(Strategy):
    """One set of prior simulations, one fit."""

    name = "amortized"
    refits = True

    def rounds(self, n_simulations: int) -> list[Round]:
        return [Round(n_simulations)]

    def propose(self, estimator, x_obs, n: int, seed: int):
        return estimator.sample_proposal(x_obs, n, random_state=seed), None


class RoundBasedStrategy(Strategy):
    """Rounds of full renewal of the training data."""

    name = "round_based"

    def __init__(self, n_rounds: int = 4):
        self.n_rounds = n_rounds

    def rounds(self, n_simulations: int) -> list[Round]:
        size, extra = divmod(n_simulations, self.n_rounds)
        return [Round(size + (i < extra)) for i in range(self.n_rounds)]

    def estimator_options(self, rounds: list[Round], estimator) -> dict:
        threshold = estimator.get_params()["discard_log_ratio"]
        return {
            "store_capacity": rounds[0].size,
            "discard_log_ratio": _ROUND_BASED_DISCARD_LOG_RATIO if threshold is None else threshold,
        }


@dataclass(frozen=True)
class PrincipalBox:
    r"""The box :math:`\{u : \text{low} \le (u - c) A \le \text{high}\}` in the cube's
    coordinates, with orthonormal columns :math:`A` (the principal axes) and centre
    :math:`c`. With :math:`A = I` and :math:`c = 0` it is a box along the cube's axes."""

    center: np.ndarray
    axes: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def around(cls, u: np.ndarray, tail: float, margin: float) -> PrincipalBox:
        """The box of the rows ``u`` between their ``tail`` and ``1 - tail`` quantiles along
        their principal axes, widened on each side by ``margin`` of its width."""
        center = u.mean(axis=0)
        _, axes = np.linalg.eigh(np.cov(u, rowvar=False).reshape(u.shape[1], u.shape[1]))
        z = (u - center) @ axes
        low, high = np.quantile(z, tail, axis=0), np.quantile(z, 1.0 - tail, axis=0)
        pad = margin * (high - low)
        return cls(center, axes, low - pad, high + pad)

    @classmethod
    def aligned(cls, low: np.ndarray, high: np.ndarray) -> PrincipalBox:
        """The box ``[low, high]`` along the cube's axes."""
        return cls(np.zeros(len(low)), np.eye(len(low)), np.asarray(low), np.asarray(high))

    @property
    def volume(self) -> float:
        """Its volume in the cube's coordinates (a rotation keeps volumes)."""
        return float(np.prod(self.high - self.low))

    def contains(self, u: np.ndarray) -> np.ndarray:
        z = (u - self.center) @ self.axes
        return np.all((self.low <= z) & (z <= self.high), axis=-1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.center + rng.uniform(self.low, self.high, (n, len(self.low))) @ self.axes.T


class TruncatedStrategy(Strategy):
    """Rounds from the prior restricted to nested boxes around the posterior."""

    name = "truncated"

    def __init__(
        self,
        min_training_samples=None,
        resample_batch_size=None,
        truncation_margin=0.0,
        truncation_quantile=None,
    ):
        self.min_training_samples = min_training_samples
        self.resample_batch_size = resample_batch_size
        self.truncation_margin = truncation_margin
        self.truncation_quantile = truncation_quantile
        # (posterior, threshold) of the rounds so far: the region keeps the parameters
        # whose log-density under each posterior (a frozen copy of the estimator) is at
        # least its threshold. Empty without truncation_quantile.
        self.density_cuts: list[tuple[object, float]] = []
        self.x_obs = None
        self.box: tuple[np.ndarray, np.ndarray] | None = None  # (low, high) in u
        # The box of the last round that was trained: an interrupted round's box, proposed
        # but never simulated or trained, must not be reported as the run's.
        self.trained_box: tuple[np.ndarray, np.ndarray] | None = None
        # The principal-axes boxes of the rounds so far: the region is box ∩ all of them.
        self.principal_boxes: list[PrincipalBox] = []
        self.volume = 1.0  # the region's share of the cube (estimated by rejection)
        self.trained_volume = 1.0
        self.prior = None

    def rounds(self, n_simulations: int) -> list[Round]:
        # Rounds of a quarter, each trained to convergence: with 2,000 simulations four
        # rounds of 500 read lower C2ST than seven of 250 on the GLM and the mixture, the
        # same on the other tasks (benchmarks/RESULTS.md).
        return _budget_rounds(
            n_simulations, self.min_training_samples, self.resample_batch_size, None, parts=4
        )

    def propose(self, estimator, x_obs, n: int, seed: int):
        if not hasattr(estimator, "network_"):
            return super().propose(estimator, x_obs, n, seed)
        prior = self.prior = estimator.prior_
        self.x_obs = x_obs
        posterior = estimator.sample(x_obs, _TRUNCATION_SAMPLES, random_state=seed)
        low, high = prior.box_around(posterior, _TRUNCATION_TAIL)
        margin = self.truncation_margin * (high - low)
        # Nested boxes: inside the last one, every round's rows follow the prior. Where the
        # new box misses the old one, the estimate moved; keep the old side.
        old_low, old_high = self.current_box()
        new_low = np.maximum(low - margin, old_low)
        new_high = np.minimum(high + margin, old_high)
        empty = new_low >= new_high
        self.box = (np.where(empty, old_low, new_low), np.where(empty, old_high, new_high))
        rng = np.random.default_rng(seed)
        principal = PrincipalBox.around(
            prior.theta_to_u(posterior)[0], _TRUNCATION_TAIL, self.truncation_margin
        )
        boxes, pilot = self._region(principal, rng)
        if self.truncation_quantile is None:
            u, self.volume = self._draw_region(n, boxes, rng, pilot)
            self.principal_boxes = boxes[1:]
            return prior.complete(u, rng), None
        return self._draw_dense(estimator, x_obs, n, boxes, pilot, rng), None

    def _draw_dense(self, estimator, x_obs, n: int, boxes, pilot, rng) -> np.ndarray:
        """``n`` rows of the prior restricted to the region of ``boxes`` and to where every
        round's posterior density is at least its threshold, by rejection from the boxes'
        region; this round's threshold is the ``truncation_quantile`` quantile of the
        log-densities of draws of its posterior."""
        draws = estimator.sample(x_obs, _DENSITY_SAMPLES, random_state=int(rng.integers(2**31)))
        threshold = float(np.quantile(estimator.log_prob(draws, x_obs), self.truncation_quantile))
        cuts = [*self.density_cuts, (copy.deepcopy(estimator), threshold)]
        kept, n_kept, n_candidates, box_volumes = [], 0, 0, []
        while n_kept < n:
            u, box_volume = self._draw_region(_DENSITY_OVERDRAW * n, boxes, rng, pilot)
            pilot = None  # the pilot's candidates count in the first pass only
            theta = self.prior.complete(u, rng)
            box_volumes.append(box_volume)
            kept.append(theta[_dense(theta, x_obs, cuts)])
            n_kept += len(kept[-1])
            n_candidates += len(theta)
            if len(kept) >= _DENSITY_MAX_EMPTY_PASSES and not n_kept:
                raise RuntimeError(
                    "the density region holds none of the candidates drawn from the "
                    "truncation boxes: the posterior of x_obs moved out of the earlier rounds' "
                    "highest-density regions"
                )
        self.principal_boxes, self.density_cuts = boxes[1:], cuts
        # Every pass draws as many candidates: their mean estimates the boxes' share.
        self.volume = float(np.mean(box_volumes)) * n_kept / n_candidates
        theta = np.concatenate(kept)
        return theta[rng.permutation(len(theta))[:n]]

    def _region(self, principal: PrincipalBox, rng) -> tuple[list[PrincipalBox], np.ndarray]:
        """This round's region, the box ∩ the principal boxes of the earlier rounds ∩
        ``principal``, as its boxes (the box first), with the pilot's candidates inside it.
        ``principal`` is left out when too few candidates fall in the region."""
        boxes = [PrincipalBox.aligned(*self.box), *self.principal_boxes, principal]
        accepted = _pilot(boxes, rng)
        if len(accepted) < _MIN_ACCEPTANCE * _REJECTION_BATCH:
            # Degenerate or disjoint from the earlier region: this round without it.
            boxes = boxes[:-1]
            accepted = _pilot(boxes, rng)
        if not len(accepted):
            raise RuntimeError(
                f"the truncation region holds none of {_REJECTION_BATCH} candidates: the "
                "posterior of x_obs moved out of the region of the earlier rounds"
            )
        return boxes, accepted

    def _draw_region(
        self, n: int, boxes: list[PrincipalBox], rng, pilot: np.ndarray | None = None
    ) -> tuple[np.ndarray, float]:
        """``n`` uniform draws from the region of ``boxes`` (see :meth:`_region`) by
        rejection, counting the candidates ``pilot`` of one earlier batch, and the region's
        share of the cube."""
        accepted = [] if pilot is None else [pilot]
        n_drawn = _REJECTION_BATCH * len(accepted)
        while sum(map(len, accepted)) < n:
            accepted.append(_pilot(boxes, rng))
            n_drawn += _REJECTION_BATCH
        # Shares of the cube: the generator's (the box's, scaled by their volumes) times
        # the share of its candidates kept.
        share = self.prior.box_volume(*self.box) * _generator(boxes).volume / boxes[0].volume
        u = np.concatenate(accepted)
        return u[rng.permutation(len(u))[:n]], share * len(u) / n_drawn

    def current_box(self) -> tuple[np.ndarray, np.ndarray]:
        """The last box in u, or the whole cube before any truncation."""
        return self.box if self.box is not None else self.prior.cube_box()

    def contains(self, u: np.ndarray) -> np.ndarray:
        """Whether rows of u lie in the last region (the whole cube before truncation)."""
        return _inside(u, [PrincipalBox.aligned(*self.current_box()), *self.principal_boxes])

    def record(self, estimator, theta: np.ndarray | None) -> dict:
        """Called once a round is trained: its box becomes :attr:`trained_box`, and the
        share of the draws ``theta`` of its posterior outside its region is recorded."""
        self.prior = estimator.prior_
        self.trained_box = self.current_box()
        self.trained_volume = self.volume
        outside = None
        if theta is not None:
            inside = self.contains(self.prior.theta_to_u(theta)[0])
            if self.density_cuts:
                inside &= _dense(theta, self.x_obs, self.density_cuts)
            outside = 1.0 - float(inside.mean())
        return {"truncation_volume": self.trained_volume, "outside_region": outside}


def _dense(theta: np.ndarray, x_obs, cuts) -> np.ndarray:
    """Whether rows of theta reach every cut's density threshold."""
    with warnings.catch_warnings():
        # The loop reports on x_obs itself; these are its own draws, tested again.
        warnings.simplefilter("ignore", UserWarning)
        return _passing_all(theta, [lambda t, p=p, c=c: p.log_prob(t, x_obs) >= c for p, c in cuts])


def _generator(boxes: list[PrincipalBox]) -> PrincipalBox:
    """The box of least non-zero volume: the candidates' source. A box of no volume
    draws a degenerate set; as a test it keeps too little."""
    return min((b for b in boxes if b.volume > 0), key=lambda b: b.volume)


def _pilot(boxes: list[PrincipalBox], rng) -> np.ndarray:
    """The candidates of one batch from the generator that lie in every other box."""
    generator = _generator(boxes)
    u = generator.sample(_REJECTION_BATCH, rng)
    return u[_inside(u, [b for b in boxes if b is not generator])]


def _inside(u: np.ndarray, boxes: list[PrincipalBox]) -> np.ndarray:
    """Whether rows of u lie in every one of ``boxes``."""
    return _passing_all(u, [box.contains for box in boxes])


def _passing_all(rows: np.ndarray, tests) -> np.ndarray:
    """Whether rows pass every test (rows -> bool per row); each tests only the rows left."""
    keep = np.ones(len(rows), dtype=bool)
    for test in tests:
        keep[keep] = test(rows[keep])
    return keep


#: Strategy names and the knobs of :class:`~skfalcon.SequentialInference` each takes.
STRATEGIES = {
    "standard": (
        StandardStrategy,
        ("min_training_samples", "resample_batch_size", "resample_interval"),
    ),
    "amortized": (AmortizedStrategy, ()),
    "round_based": (RoundBasedStrategy, ("n_rounds",)),
    "truncated": (
        TruncatedStrategy,
        (
            "min_training_samples",
            "resample_batch_size",
            "truncation_margin",
            "truncation_quantile",
        ),
    ),
}
