r"""Inference with a trained dual-flow posterior: sampling, density ratios and :math:`\log Z(x)`.

For summaries :math:`s` of :math:`m` observations,

- :func:`sample_posterior` draws :math:`n` samples per observation from the target
  :math:`t(u) \propto [q(u \mid s) / m(u)]^{\kappa}` on the cube (:math:`\kappa = 1`: the
  posterior; :math:`\kappa = 1 - \gamma`: the widened proposal). When the target is
  :math:`q` itself (no prior, or the exact prior as :math:`m` and :math:`\kappa = 1`) the
  draws are exact; otherwise they come from importance sampling
  (:func:`~skfalcon.engine.importance.importance_sample`), whose pool grows until its
  effective sample size reaches four times :math:`n` (at most eight pools).
- :func:`log_ratio` evaluates :math:`\log q(u \mid s) - \log m(u)` for pairs of rows, and
  :func:`log_posterior` the normalized :math:`\log p(u \mid x)` from it and :math:`\log Z`.
- :class:`LogNormalizerCache` estimates :math:`\log Z(x) = \log \int_C q(u \mid s) / m(u)\,
  du` once per observation; with the exact prior as :math:`m`, :math:`Z = (2b)^d` exactly,
  since :math:`q` is normalized on the cube.

An :class:`~skfalcon.engine.ensemble.EnsemblePosterior` is served member by member: its
samples are drawn from the members assigned to them, with the normalized log-density of
the mixture of the members' targets; ratios and :math:`\log Z` get a last axis, one entry
per member, which :func:`log_posterior` combines into the mixture's density.

All work is done in chunks of :func:`inference_rows` rows per forward pass, which bounds
memory. On the CPU a pass is fastest when its widest activation, rows times the widest
layer, holds about :math:`2^{20}` numbers: larger ones are mapped afresh by the allocator
and page-fault on every operation (sampling 20,000 draws of a 10-D coupling flow took
0.98 s in chunks of :math:`2^{14}` rows and 0.65 s in chunks of :math:`2^{12}`); a GPU
wants large batches. Exact draws count the widest layer that the flows' inverses compute,
which for autoregressive flows is narrower than their networks' output layers.
Functions draw from a ``torch.Generator`` when given one, else from torch's global random
state.
"""

import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from skfalcon.engine.coupling import inverse_width
from skfalcon.engine.ensemble import (
    EnsemblePosterior,
    assign_members,
    member_ranks,
    mixture_log_density,
)
from skfalcon.engine.importance import (
    draw_candidates,
    importance_sample,
    normalizer_log_weights,
)
from skfalcon.engine.posterior import DualFlowPosterior

__all__ = [
    "LOG_Z_TOLERANCE",
    "LogNormalizerCache",
    "SamplerConfig",
    "inference_rows",
    "log_posterior",
    "log_ratio",
    "row_chunks",
    "sample_posterior",
]

_INFERENCE_ROWS = {"cpu": 2**14, "cuda": 2**18}
_CPU_CELLS = 2**20
_MIN_CPU_ROWS = 256
# The pool grows while its ESS is below this many times the samples asked for: at an ESS
# of n, systematic resampling still repeats every candidate whose weight exceeds 1/n.
_ESS_PER_SAMPLE = 4
_MAX_POOL_ROUNDS = 8
# log Z(x) is estimated from pools of this many candidates per observation, until its
# standard error is below LOG_Z_TOLERANCE nats or _LOG_Z_MAX_CANDIDATES were drawn.
_LOG_Z_CANDIDATES = 2048
_LOG_Z_MAX_CANDIDATES = 2**18
#: The accuracy, in nats (standard error), to which :math:`\log Z(x)` is estimated.
LOG_Z_TOLERANCE = 0.005


def inference_rows(
    device: torch.device, network: nn.Module | None = None, inverse: bool = False
) -> int:
    """Rows per forward pass at inference on ``device``; on the CPU, for ``network``'s
    widest layer (see the module docstring), or with ``inverse`` for the widest one its
    flows' inverses compute (:func:`~skfalcon.engine.coupling.inverse_width`)."""
    rows = _INFERENCE_ROWS.get(device.type, _INFERENCE_ROWS["cpu"])
    if device.type != "cpu" or network is None:
        return rows
    if inverse:
        width = inverse_width(network)
    else:
        width = max((getattr(m, "out_features", 1) for m in network.modules()), default=1)
    return max(_MIN_CPU_ROWS, min(rows, _CPU_CELLS // width))


def _cube_bound(network: DualFlowPosterior) -> float:
    # Without a cube (no prior) the support is the whole space.
    return math.inf if network.uniform is None else network.uniform.bound


def row_chunks(n: int, size: int) -> Iterator[slice]:
    """Slices of at most ``size`` consecutive rows covering ``range(n)``."""
    for start in range(0, n, max(1, size)):
        yield slice(start, min(start + size, n))


@dataclass(frozen=True)
class SamplerConfig:
    """Importance-sampling settings.

    Attributes
    ----------
    num_proposals : int
        Candidates per output sample in each pool.
    beta : float
        Weight :math:`\\beta` of :math:`q` in the candidate mixture
        :math:`\\beta q + (1 - \\beta) m`.
    """

    num_proposals: int = 4
    beta: float = 0.5


def _over_grid(
    draw: Callable[[slice, int], tuple[Tensor, ...]],
    m: int,
    n: int,
    rows: int,
    progress: Callable[[int], None] | None = None,
) -> list[Tensor]:
    """``draw(observations, count)`` over chunks of an ``m x n`` grid of ``rows`` cells each.

    Each call returns tensors whose first two axes are ``(observations, count)``; the
    chunks are joined along both. ``progress`` is told the observations of each finished
    chunk.
    """
    n_chunk = max(1, min(n, rows))
    m_chunk = max(1, rows // n_chunk)
    blocks = []
    for obs in row_chunks(m, m_chunk):
        parts = [draw(obs, cols.stop - cols.start) for cols in row_chunks(n, n_chunk)]
        blocks.append([torch.cat(p, dim=1) for p in zip(*parts, strict=True)])
        if progress is not None:
            progress(obs.stop - obs.start)
    return [torch.cat(b) for b in zip(*blocks, strict=True)]


def sample_posterior(
    network: DualFlowPosterior,
    summary: Tensor,
    n: int,
    sampler: SamplerConfig,
    device: torch.device,
    exponent: float = 1.0,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
    with_log_density: bool = True,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Samples ``(m, n, d)``, ESS ``(m,)`` and normalized target log-densities ``(m, n)``
    (``None`` where ``with_log_density=False`` lets them be skipped, see below).

    Random numbers come from ``generator`` (on ``device``), else from torch's global state.
    ``progress``, if given, is called with the number of observations of each finished
    chunk; an ensemble's members pass over every observation in turn, each counting for
    :math:`1/K` of them.
    An ensemble draws each sample's member first (see :mod:`skfalcon.engine.ensemble`);
    its mixture log-density takes a pass of every member over every sample, skipped (and
    ``None`` returned) with ``with_log_density=False``. A single posterior drawn from
    :math:`q` alone (no marginal, or the exact prior with exponent 1) then returns
    ``None`` too, and a flow-matching flow skips its divergence; importance sampling
    needs the densities and always returns them.
    """
    if isinstance(network, EnsemblePosterior):
        return _sample_ensemble(
            network, summary, n, sampler, device, exponent, generator, with_log_density, progress
        )
    m = summary.shape[0]
    if network.inference_marginal is None or (
        network.marginal_policy.is_exact_prior and exponent == 1.0
    ):
        # The target is q (times a constant): exact draws, no candidates.
        def draw(obs, count):
            if not with_log_density:
                u = network.conditional.sample((count,), summary[obs], generator=generator)
                return (u.transpose(0, 1),)
            u, log_q = network.conditional.sample_and_log_prob(
                (count,), summary[obs], generator=generator
            )
            return u.transpose(0, 1), log_q.transpose(0, 1)

        rows = inference_rows(device, network, inverse=True)
        u, *log_density = _over_grid(draw, m, n, rows, progress)
        ess = torch.full((m,), float(n), device=u.device)
        return u, ess, log_density[0] if log_density else None

    def draw(obs, count):
        result = importance_sample(
            network,
            summary[obs],
            count,
            num_proposals=sampler.num_proposals,
            beta=sampler.beta,
            bound=_cube_bound(network),
            exponent=exponent,
            min_ess=_ESS_PER_SAMPLE * count,
            max_rounds=_MAX_POOL_ROUNDS,
            generator=generator,
        )
        return result.u, result.log_density, result.ess[:, None]

    rows = inference_rows(device, network)
    u, log_density, ess = _over_grid(draw, m, n, max(1, rows // sampler.num_proposals), progress)
    return u, ess.sum(dim=1), log_density


def _sample_ensemble(
    network, summary, n, sampler, device, exponent, generator, with_log_density, progress
):
    r""":func:`sample_posterior` of an ensemble: members drawn per sample, then sampled.

    Member :math:`k` draws as many samples for every observation as the most any
    observation was assigned, and at least :math:`\lceil n / K \rceil` (so that its
    normalizer comes from a pool of that size); each observation takes the first ones. The
    ESS is the sum of the members' ESS, each scaled by the share of its draws used.
    """
    size, m = network.size, summary.shape[0]
    assignment = assign_members(size, m, n, summary.device, generator)
    ranks, counts = member_ranks(assignment, size)
    summaries = network.split(summary)
    observation = torch.arange(m, device=summary.device)[:, None].expand(m, n)
    u = torch.empty(m, n, network.features, device=summary.device)
    ess = torch.zeros(m, device=summary.device)
    log_z, member_progress = [], _shared_progress(progress, size)
    for k, member in enumerate(network.members):
        n_k = max(int(counts[:, k].max()), -(-n // size))
        u_k, ess_k, log_density_k = sample_posterior(
            member,
            summaries[k],
            n_k,
            sampler,
            device,
            exponent,
            generator,
            member_progress,
            with_log_density=with_log_density,
        )
        if with_log_density:
            # The normalizer of member k's target, read off its first draw per observation.
            first = u_k[:, :1].transpose(0, 1)
            log_z.append(
                _member_exponent(member, exponent) * member.log_ratio(first, summaries[k])[0]
                - log_density_k[:, 0]
            )
        chosen = assignment == k
        u[chosen] = u_k[observation[chosen], ranks[chosen]].to(u.dtype)
        ess += ess_k * counts[:, k] / n_k
    if not with_log_density:
        return u, ess, None
    log_density = _ensemble_log_density(network, u, summaries, torch.stack(log_z, -1), exponent)
    return u, ess, log_density


def _shared_progress(progress, size: int):
    """``progress`` for ``size`` passes over the observations: whole observations, each
    reported once ``size`` passes have counted it in all."""
    if progress is None:
        return None
    counted = reported = 0

    def report(count: int) -> None:
        nonlocal counted, reported
        counted += count
        whole = counted // size - reported
        if whole:
            reported += whole
            progress(whole)

    return report


def _member_exponent(member: DualFlowPosterior, exponent: float) -> float:
    # Without a marginal the target is q whatever the exponent (see sample_posterior).
    return 1.0 if member.inference_marginal is None else exponent


def _ensemble_log_density(network, u, summaries, log_z, exponent) -> Tensor:
    r"""Normalized log-density ``(m, n)`` of ``u`` ``(m, n, d)`` under the mixture of the
    members' targets :math:`t_k / Z_k`, with ``log_z`` ``(m, K)``."""
    m, n = u.shape[:2]
    rows = inference_rows(u.device, network)
    n_chunk = max(1, min(n, rows))
    log_density = torch.empty(m, n, device=u.device)
    for obs in row_chunks(m, max(1, rows // n_chunk)):
        for cols in row_chunks(n, n_chunk):
            block = u[obs, cols].transpose(0, 1)  # (count, observations, d)
            parts = [
                _member_exponent(member, exponent) * member.log_ratio(block, s[obs]) - z
                for member, s, z in zip(network.members, summaries, log_z[obs].T, strict=True)
            ]
            log_density[obs, cols] = mixture_log_density(torch.stack(parts, -1)).T
    return log_density


def log_ratio(
    network: DualFlowPosterior | EnsemblePosterior,
    u: Tensor,
    summary: Tensor,
    index: Tensor,
    device: torch.device,
) -> Tensor:
    r""":math:`\log q(u_i \mid s_{k_i}) - \log m(u_i)` for rows ``u`` ``(N, d)`` and
    ``index`` :math:`k` ``(N,)`` into ``summary`` ``(m, c)``; float64 on the CPU, of shape
    ``(N,)``, or ``(N, K)`` for an ensemble (one column per member)."""
    parts = [
        network.log_ratio(u[rows], summary[index[rows]]).cpu().double()
        for rows in row_chunks(len(u), inference_rows(device, network))
    ]
    if parts:
        return torch.cat(parts)
    shape = (0, network.size) if isinstance(network, EnsemblePosterior) else (0,)
    return torch.empty(shape, dtype=torch.float64)


def log_posterior(
    network: DualFlowPosterior | EnsemblePosterior,
    u: Tensor,
    summary: Tensor,
    index: Tensor,
    log_z: Tensor | None,
    device: torch.device,
    log_jacobian: Tensor | float = 0.0,
) -> Tensor:
    r"""Normalized posterior log-density of rows ``u`` ``(N, d)``, ``(N,)`` float64 on the CPU.

    :math:`\log q(u_i \mid s_{k_i}) - \log m(u_i) + \log J_i - \log Z(x_{k_i})`
    (:func:`log_ratio`), with ``log_z`` ``(m,)`` from :class:`LogNormalizerCache`
    (``None``: :math:`Z = 1`, as without a prior) and ``log_jacobian`` :math:`\log J`
    ``(N,)`` that of a change of variables (float64, on the CPU). For an ensemble,
    ``log_z`` is ``(m, K)`` and the density the mean of the members' normalized ones.
    """
    ratio = log_ratio(network, u, summary, index, device)
    rows = index.cpu()
    if isinstance(network, EnsemblePosterior):
        if log_z is not None:
            ratio = ratio - log_z[rows]
        return mixture_log_density(ratio) + log_jacobian
    log_p = ratio + log_jacobian
    return log_p if log_z is None else log_p - log_z[rows]


@dataclass
class LogNormalizerCache:
    r""":math:`\log Z(x)` of a fitted posterior, estimated to a stated accuracy and kept.

    For each observation, pools of candidates from :math:`g = \beta q + (1 - \beta) m`
    give :math:`\hat Z = \frac1N \sum_i w_i` with :math:`w = (q / m) / g` (inside the
    cube). The standard error of :math:`\log \hat Z` is, to first order,

    .. math::

        \mathrm{se} = \frac{\hat\sigma_w}{\sqrt{N}\,\hat Z},

    and pools are added until it is below ``tolerance`` or ``max_candidates`` are spent.
    ``seed`` and the observation's key seed its pools (a generator of their own, torch's
    global state untouched), so every call, in any company and from any thread, and every
    copy of a saved model, reports the same value for an observation. Keyed by bytes
    the caller derives from each observation; ``values`` maps a key to
    ``(log Z, standard error)``. For an ensemble, each member's :math:`Z_k` is estimated
    from pools of its own (member :math:`k`'s stream seeded :math:`k` further on), and a
    value holds a tuple of :math:`K` of each.
    """

    seed: int
    beta: float = 0.5
    values: dict = field(default_factory=dict)
    tolerance: float = LOG_Z_TOLERANCE
    max_candidates: int = _LOG_Z_MAX_CANDIDATES

    def get(
        self,
        network: DualFlowPosterior | EnsemblePosterior,
        x: Tensor,
        keys: list[bytes],
        device: torch.device,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        r""":math:`\log Z` of the observations ``x`` ``(k, D)`` and its standard error, each
        float64 of shape ``(k,)``, or ``(k, K)`` for an ensemble; the error is 0 where
        :math:`Z` is exact. ``progress``, if given, is called with 1 for each observation
        estimated."""
        if network.marginal_policy.is_exact_prior:
            # q/m = q (2b)^d with q normalized on the cube (the probit map): Z = (2b)^d.
            log_volume = network.features * math.log(2 * network.uniform.bound)
            shape = (len(keys),)
            if isinstance(network, EnsemblePosterior):
                shape += (network.size,)
            return (
                torch.full(shape, log_volume, dtype=torch.float64),
                torch.zeros(shape, dtype=torch.float64),
            )
        missing = [i for i, key in enumerate(keys) if key not in self.values]
        if missing:
            with torch.no_grad():
                summaries = network.embed(x[missing].to(device))
                for row, i in enumerate(missing):
                    # A stream of its own per observation: the value does not depend on
                    # which other observations share the call, nor on the thread.
                    seed = (self.seed + zlib.crc32(keys[i])) % 2**63
                    summary = summaries[row : row + 1]
                    self.values[keys[i]] = self._value(network, summary, seed, device)
                    if progress is not None:
                        progress(1)
        log_z, se = zip(*(self.values[key] for key in keys), strict=True)
        return torch.tensor(log_z, dtype=torch.float64), torch.tensor(se, dtype=torch.float64)

    def _value(self, network, summary: Tensor, seed: int, device) -> tuple:
        """The cached ``(log Z, se)`` of one observation: floats, or tuples per member."""
        if not isinstance(network, EnsemblePosterior):
            generator = torch.Generator(device=device).manual_seed(seed)
            log_z, se = self._estimate(network, summary, generator)
            return float(log_z[0]), float(se[0])
        values = [
            self._value(member, part, (seed + k) % 2**63, device)
            for k, (member, part) in enumerate(
                zip(network.members, network.split(summary), strict=True)
            )
        ]
        return tuple(v[0] for v in values), tuple(v[1] for v in values)

    def _estimate(self, network, summary: Tensor, generator) -> tuple[Tensor, Tensor]:
        r"""Pooled :math:`\log \hat Z` and its standard error for summaries ``(m, c)``."""
        m = summary.shape[0]
        sum_w = torch.full((m,), -math.inf, dtype=torch.float64, device=summary.device)
        sum_w2 = sum_w.clone()
        n = 0
        while True:
            pool = draw_candidates(
                network,
                summary,
                _LOG_Z_CANDIDATES,
                beta=self.beta,
                bound=_cube_bound(network),
                generator=generator,
            )
            log_w = normalizer_log_weights(pool).double()
            sum_w = torch.logaddexp(sum_w, torch.logsumexp(log_w, dim=0))
            sum_w2 = torch.logaddexp(sum_w2, torch.logsumexp(2 * log_w, dim=0))
            n += _LOG_Z_CANDIDATES
            # Relative variance of the weights: E[w^2] / E[w]^2 - 1.
            spread = torch.expm1((sum_w2 - math.log(n)) - 2 * (sum_w - math.log(n)))
            se = (spread.clamp_min(0) / n).sqrt()
            if bool((se < self.tolerance).all()) or n >= self.max_candidates:
                break
        return (sum_w - math.log(n)).cpu(), se.nan_to_num(math.inf).cpu()
