r"""Importance sampling of the dual-flow posterior.

For an observation with summary :math:`s`, candidates come from the mixture

.. math::

    g(u) = \beta\, q(u \mid s) + (1 - \beta)\, m(u),

drawn stratified (:math:`\beta N` from :math:`q`, the rest from :math:`m`) and weighted by
the balance heuristic against the target :math:`t(u) = [q(u \mid s) / m(u)]^{\kappa}
\mathbb{1}_C(u)`:

.. math::

    \log w(u) = \kappa \big[\log q(u \mid s) - \log m(u)\big] - \log g(u)
    \;-\; \lambda\, \mathbb{1}[u \notin C].

:math:`\kappa = 1` is the posterior; :math:`\kappa = 1 - \gamma` the widened proposal of
sequential rounds. Out-of-cube candidates lose :math:`\lambda` (``out_of_bounds_penalty``)
rather than :math:`\infty`, so a pool with no candidate inside the cube still resamples;
NaN and :math:`-\infty` log-weights become ``nan_replacement``. (The flows of
:class:`DualFlowPosterior` model the probit image of the cube, so none of their draws
leaves it; the indicator matters for densities on :math:`\mathbb{R}^d` only.) Samples are drawn from the
pool in proportion to :math:`w` by systematic resampling (:func:`systematic_resample`).
The pool's effective sample size is Kish's :math:`(\sum w)^2 / \sum w^2`, and the
normalizing constant of the target, :math:`Z = \int_C t \, du`, is estimated by
:math:`\frac1N \sum \mathbb{1}_C\, t/g`, which gives each sample its normalized
log-density :math:`\log t(u) - \log Z`.

:math:`m` is :attr:`DualFlowPosterior.inference_marginal`: the marginal flow, or the exact
uniform prior when every training row came from the prior, or their mixture.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from skfalcon.engine.posterior import DualFlowPosterior

__all__ = [
    "CandidatePool",
    "ImportanceSample",
    "draw_candidates",
    "effective_sample_size",
    "importance_sample",
    "log_normalizer",
    "normalizer_log_weights",
    "systematic_resample",
]


@dataclass
class CandidatePool:
    """Candidates ``u`` of shape ``(N, m, d)`` for ``m`` observations, with
    ``log_ratio`` :math:`\\log q - \\log m`, ``log_proposal`` :math:`\\log g` and ``in_cube``,
    each of shape ``(N, m)``. The first ``n_conditional`` rows were drawn from :math:`q`."""

    u: Tensor
    log_ratio: Tensor
    log_proposal: Tensor
    in_cube: Tensor
    n_conditional: int = 0


def draw_candidates(
    posterior: DualFlowPosterior,
    summary: Tensor,
    n_candidates: int,
    *,
    beta: float,
    bound: float,
    generator: torch.Generator | None = None,
) -> CandidatePool:
    """Draw ``n_candidates`` per observation from :math:`g = \\beta q + (1 - \\beta) m`.

    ``summary`` has shape ``(m, c)``. Draws from :math:`m` are shared by all observations,
    which keeps the weights unbiased per observation and halves the work of the marginal.
    """
    m = summary.shape[0]
    n_q = round(beta * n_candidates)
    n_m = n_candidates - n_q
    conditional, marginal = posterior.conditional, posterior.inference_marginal
    parts_u, parts_q, parts_m = [], [], []
    if n_q > 0:
        u_q, log_q = conditional.sample_and_log_prob((n_q,), summary, generator=generator)
        parts_u.append(u_q)
        parts_q.append(log_q)
        parts_m.append(marginal.log_prob(u_q))
    if n_m > 0:
        u_m, log_m = marginal.sample_and_log_prob((n_m,), generator=generator)
        u_m = u_m.unsqueeze(1).expand(n_m, m, u_m.shape[-1])
        parts_u.append(u_m)
        parts_q.append(conditional.log_prob(u_m, summary))
        parts_m.append(log_m.unsqueeze(1).expand(n_m, m))
    u = torch.cat(parts_u)
    log_q, log_m = torch.cat(parts_q), torch.cat(parts_m)
    log_beta = math.log(beta) if beta > 0 else -math.inf
    log_one_minus_beta = math.log1p(-beta) if beta < 1 else -math.inf
    log_proposal = torch.logaddexp(log_beta + log_q, log_one_minus_beta + log_m)
    in_cube = (u.abs() <= bound).all(dim=-1)
    return CandidatePool(u, log_q - log_m, log_proposal, in_cube, n_q)


def effective_sample_size(log_weights: Tensor, dim: int = 0) -> Tensor:
    r"""Kish's effective sample size :math:`(\sum w)^2 / \sum w^2` along ``dim``."""
    return torch.exp(
        2 * torch.logsumexp(log_weights, dim=dim) - torch.logsumexp(2 * log_weights, dim=dim)
    )


def systematic_resample(
    log_weights: Tensor, n: int, generator: torch.Generator | None = None
) -> Tensor:
    r"""Indices ``(m, n)`` of ``n`` draws per row of ``log_weights`` ``(m, N)``, systematically.

    One uniform offset per row places ``n`` evenly spaced points :math:`(k + U)/n` on the
    cumulative normalized weights, so candidate :math:`i` is drawn
    :math:`\lfloor n w_i \rfloor` or :math:`\lceil n w_i \rceil` times, :math:`n w_i` in
    expectation. Multinomial resampling draws it a Binomial number of times instead, which
    repeats candidates far more often: repeated samples carry no new information (and a
    classifier test sees them). The draws are returned in random order.
    """
    m, size = log_weights.shape
    probs = torch.softmax(log_weights.double(), dim=-1)
    cdf = probs.cumsum(-1)
    cdf = cdf / cdf[:, -1:]
    points = (
        torch.arange(n, device=cdf.device, dtype=cdf.dtype)
        + torch.rand(m, 1, generator=generator, device=cdf.device, dtype=cdf.dtype)
    ) / n
    index = torch.searchsorted(cdf, points, right=True).clamp_max(size - 1)
    order = torch.argsort(torch.rand(m, n, generator=generator, device=cdf.device), dim=-1)
    return torch.gather(index, 1, order)


def normalizer_log_weights(pool: CandidatePool, exponent: float = 1.0) -> Tensor:
    r"""Log-weights :math:`\log(t / g)` of :math:`Z`'s estimate, ``(N, m)``: unpenalized,
    and :math:`-\infty` outside the cube (the target's support) or where not finite."""
    log_w = exponent * pool.log_ratio - pool.log_proposal
    return torch.where(pool.in_cube & torch.isfinite(log_w), log_w, -math.inf)


def log_normalizer(pool: CandidatePool, exponent: float = 1.0) -> Tensor:
    r"""Estimate of :math:`\log Z = \log \int_C [q(u \mid s) / m(u)]^{\kappa} \, du`, shape ``(m,)``."""
    log_w = normalizer_log_weights(pool, exponent)
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


@dataclass
class ImportanceSample:
    """What :func:`importance_sample` returns, for ``m`` observations and ``n`` samples each.

    Attributes
    ----------
    u : Tensor of shape (m, n, d)
        The samples.
    ess : Tensor of shape (m,)
        Kish effective sample size of the whole pool.
    log_density : Tensor of shape (m, n)
        Normalized log-density of each sample under the target, :math:`\\log t - \\log Z`.
    log_normalizer : Tensor of shape (m,)
        :math:`\\log Z` of the target on the cube.
    out_of_cube_fraction : Tensor of shape (m,)
        Fraction of the candidates drawn from :math:`q` that fell outside the cube.
    """

    u: Tensor
    ess: Tensor
    log_density: Tensor
    log_normalizer: Tensor
    out_of_cube_fraction: Tensor


def importance_sample(
    posterior: DualFlowPosterior,
    summary: Tensor,
    n_samples: int,
    *,
    num_proposals: int,
    beta: float,
    bound: float,
    out_of_bounds_penalty: float = 100.0,
    nan_replacement: float = -100.0,
    exponent: float = 1.0,
    min_ess: float = 0.0,
    max_rounds: int = 1,
    generator: torch.Generator | None = None,
) -> ImportanceSample:
    r"""Resample ``n_samples`` per observation from pools of ``n_samples * num_proposals``.

    The pool grows by another such draw while the effective sample size of some
    observation is below ``min_ess``, for at most ``max_rounds`` draws in all (one host
    sync per draw). Draws from ``generator``, or torch's global random state without one.
    """
    candidates, log_weights, log_targets, log_normalizers, outside = ([] for _ in range(5))
    for _ in range(max_rounds):
        pool = draw_candidates(
            posterior,
            summary,
            n_samples * num_proposals,
            beta=beta,
            bound=bound,
            generator=generator,
        )
        log_target = exponent * pool.log_ratio
        log_w = log_target - pool.log_proposal
        log_w = torch.where(pool.in_cube, log_w, log_w - out_of_bounds_penalty)
        log_w = torch.where(torch.isnan(log_w) | (log_w == -math.inf), nan_replacement, log_w)
        candidates.append(pool.u)
        log_weights.append(log_w)
        log_targets.append(log_target)
        log_normalizers.append(log_normalizer(pool, exponent))
        outside.append((~pool.in_cube[: pool.n_conditional]).sum(0))
        ess = effective_sample_size(torch.cat(log_weights), dim=0)
        if bool((ess >= min_ess).all()):
            break
    u, log_w = torch.cat(candidates), torch.cat(log_weights)
    log_target = torch.cat(log_targets)
    # Pools are the same size, so the mean of their estimates of Z is the pooled estimate.
    log_z = torch.logsumexp(torch.stack(log_normalizers), dim=0) - math.log(len(log_normalizers))
    n_conditional = max(pool.n_conditional * len(outside), 1)
    out_of_cube = torch.stack(outside).sum(0).to(log_w.dtype) / n_conditional

    index = systematic_resample(log_w.T, n_samples, generator)  # (m, n)
    u = u.transpose(0, 1)  # (m, N, d)
    samples = torch.gather(u, 1, index.unsqueeze(-1).expand(-1, -1, u.shape[-1]))
    sample_log_target = torch.gather(log_target.T, 1, index)  # (m, n)
    return ImportanceSample(
        samples, ess, sample_log_target - log_z.unsqueeze(-1), log_z, out_of_cube
    )
