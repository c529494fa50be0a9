r"""Inference with a trained dual-flow posterior: sampling, density ratios and :math:`\log Z(x)`.

For summaries :math:`s` of :math:`m` observations,

- :func:`sample_posterior` draws :math:`n` samples per observation from the target
  :math:`t(u) \propto [q(u \mid s) / m(u)]^{\kappa}` on the cube (:math:`\kappa = 1`: the
  posterior; :math:`\kappa = 1 - \gamma`: the widened proposal). When the target is
  :math:`q` itself (no prior, or the exact prior as :math:`m` and :math:`\kappa = 1`) the
  draws are exact; otherwise they come from importance sampling
  (:func:`~skfalcon.engine.importance.importance_sample`), whose pool grows until its
  effective sample size reaches four times :math:`n` (at most eight pools).
- :func:`log_ratio` evaluates :math:`\log q(u \mid s) - \log m(u)` for pairs of rows.
- :class:`LogNormalizerCache` estimates :math:`\log Z(x) = \log \int_C q(u \mid s) / m(u)\,
  du` once per observation; with the exact prior as :math:`m`, :math:`Z = (2b)^d` exactly,
  since :math:`q` is normalized on the cube.

All work is done in chunks of :func:`inference_rows` rows per forward pass, which bounds
memory: on the CPU, activations of :math:`2^{14}` rows are reused by the allocator while
larger ones are mapped afresh and page-fault on every operation; a GPU wants large batches.
Functions draw from a ``torch.Generator`` when given one, else from torch's global random
state.
"""

import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

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
    "log_ratio",
    "row_chunks",
    "sample_posterior",
]

_INFERENCE_ROWS = {"cpu": 2**14, "cuda": 2**18}
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


def inference_rows(device: torch.device) -> int:
    """Rows per forward pass at inference on ``device``."""
    return _INFERENCE_ROWS.get(device.type, _INFERENCE_ROWS["cpu"])


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
    draw: Callable[[slice, int], tuple[Tensor, ...]], m: int, n: int, rows: int
) -> list[Tensor]:
    """``draw(observations, count)`` over chunks of an ``m x n`` grid of ``rows`` cells each.

    Each call returns tensors whose first two axes are ``(observations, count)``; the
    chunks are joined along both.
    """
    n_chunk = max(1, min(n, rows))
    m_chunk = max(1, rows // n_chunk)
    blocks = []
    for obs in row_chunks(m, m_chunk):
        parts = [draw(obs, cols.stop - cols.start) for cols in row_chunks(n, n_chunk)]
        blocks.append([torch.cat(p, dim=1) for p in zip(*parts, strict=True)])
    return [torch.cat(b) for b in zip(*blocks, strict=True)]


def sample_posterior(
    network: DualFlowPosterior,
    summary: Tensor,
    n: int,
    sampler: SamplerConfig,
    device: torch.device,
    exponent: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Samples ``(m, n, d)``, ESS ``(m,)`` and normalized target log-densities ``(m, n)``.

    Random numbers come from ``generator`` (on ``device``), else from torch's global state.
    """
    m, rows = summary.shape[0], inference_rows(device)
    if network.inference_marginal is None or (
        network.marginal_policy.is_exact_prior and exponent == 1.0
    ):
        # The target is q (times a constant): exact draws, no candidates.
        def draw(obs, count):
            u, log_q = network.conditional.sample_and_log_prob(
                (count,), summary[obs], generator=generator
            )
            return u.transpose(0, 1), log_q.transpose(0, 1)

        u, log_density = _over_grid(draw, m, n, rows)
        return u, torch.full((m,), float(n), device=u.device), log_density

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

    u, log_density, ess = _over_grid(draw, m, n, max(1, rows // sampler.num_proposals))
    return u, ess.sum(dim=1), log_density


def log_ratio(
    network: DualFlowPosterior, u: Tensor, summary: Tensor, index: Tensor, device: torch.device
) -> Tensor:
    r""":math:`\log q(u_i \mid s_{k_i}) - \log m(u_i)` for rows ``u`` ``(N, d)`` and
    ``index`` :math:`k` ``(N,)`` into ``summary`` ``(m, c)``; float64 on the CPU."""
    parts = [
        network.log_ratio(u[rows], summary[index[rows]]).cpu().double()
        for rows in row_chunks(len(u), inference_rows(device))
    ]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)


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
    ``(log Z, standard error)``.
    """

    seed: int
    beta: float = 0.5
    values: dict = field(default_factory=dict)
    tolerance: float = LOG_Z_TOLERANCE
    max_candidates: int = _LOG_Z_MAX_CANDIDATES

    def get(
        self, network: DualFlowPosterior, x: Tensor, keys: list[bytes], device: torch.device
    ) -> tuple[Tensor, Tensor]:
        r""":math:`\log Z` of the observations ``x`` ``(k, D)`` and its standard error, each
        float64 of shape ``(k,)``; the error is 0 where :math:`Z` is exact."""
        if network.marginal_policy.is_exact_prior:
            # q/m = q (2b)^d with q normalized on the cube (the probit map): Z = (2b)^d.
            log_volume = network.features * math.log(2 * network.uniform.bound)
            return (
                torch.full((len(keys),), log_volume, dtype=torch.float64),
                torch.zeros(len(keys), dtype=torch.float64),
            )
        missing = [i for i, key in enumerate(keys) if key not in self.values]
        if missing:
            with torch.no_grad():
                summaries = network.embed(x[missing].to(device))
                for row, i in enumerate(missing):
                    # A stream of its own per observation: the value does not depend on
                    # which other observations share the call, nor on the thread.
                    seed = (self.seed + zlib.crc32(keys[i])) % 2**63
                    generator = torch.Generator(device=device).manual_seed(seed)
                    log_z, se = self._estimate(network, summaries[row : row + 1], generator)
                    self.values[keys[i]] = (float(log_z[0]), float(se[0]))
        log_z, se = zip(*(self.values[key] for key in keys), strict=True)
        return torch.tensor(log_z, dtype=torch.float64), torch.tensor(se, dtype=torch.float64)

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
