r"""The posterior mode (MAP) by gradient ascent on the normalized log-density.

The posterior density of :math:`\theta` given :math:`x` is, with :math:`u = T(\theta)`
the map to the cube and :math:`J(u) = \log |\partial u / \partial \theta|` at
:math:`\theta = T^{-1}(u)`,

.. math::

    \log p(\theta \mid x) = \log q(u \mid s) - \log m(u) - \log Z(x) + J(u).

(For an ensemble, the first three terms are the log of the mean of the members'
normalized posteriors.) Its maximum is sought in unconstrained coordinates: on a cube
:math:`(-b, b)^d`, :math:`u = b\,(2 \Phi(w) - 1)` with :math:`w \in \mathbb{R}^d`, the
probit coordinates the flows model; without a cube, :math:`w = u`. The objective is the
density of :math:`\theta` *evaluated at* :math:`\theta(w)`, not the density of :math:`w`:
as :math:`w \mapsto \theta` is a bijection, its maximizer is the :math:`\theta`-space MAP,
while no step can leave the support.

:func:`posterior_mode` starts each observation at its best candidate (the highest
objective among posterior samples, in one batched pass) and runs L-BFGS with a
strong-Wolfe line search in float64, on a float64 copy of the networks, one observation
at a time (so that one observation's line search never holds back another's). It stops
when the largest gradient component falls below ``tol / 100``, or when an iteration
changes the objective (in nats) or the point (in probit units) by less than ``tol``: the
flows' conditioners use ReLU units, so the density is only piecewise smooth and its
maximum may sit on a kink, where the gradient does not vanish but no step ascends. An
observation that spends ``max_iter`` iterations (or five times as many evaluations)
first has not converged.
"""

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from skfalcon.engine.inference import inference_rows, row_chunks

__all__ = ["PosteriorMode", "posterior_mode"]


@dataclass(frozen=True)
class PosteriorMode:
    """What :func:`posterior_mode` returns.

    Attributes
    ----------
    u : Tensor of shape (m, d), float64
        The mode of each observation, in cube coordinates.
    log_density : Tensor of shape (m,), float64
        The objective there: :math:`\\log p(\\theta \\mid x)` when ``log_z`` was given
        (or the posterior is normalized without it), else up to :math:`\\log Z(x)`.
    converged : Tensor of shape (m,), bool
        Whether the search stopped on a tolerance rather than on its budget.
    n_iter : Tensor of shape (m,), int64
        L-BFGS iterations of each observation.
    """

    u: Tensor
    log_density: Tensor
    converged: Tensor
    n_iter: Tensor


def _to_cube(w: Tensor, bound: float | None) -> Tensor:
    return w if bound is None else bound * (2 * torch.special.ndtr(w) - 1)


def _from_cube(u: Tensor, bound: float | None) -> Tensor:
    if bound is None:
        return u
    tiny = torch.finfo(u.dtype).eps
    return torch.special.ndtri(((u + bound) / (2 * bound)).clamp(tiny, 1 - tiny))


def _objective(network, u: Tensor, summary: Tensor, log_z, log_jacobian) -> Tensor:
    """The log-density of ``u`` ``(n, m, d)`` given summaries ``(m, c)``: ``(n, m)``."""
    log_p = network.log_ratio(u, summary)
    if log_z is not None:
        log_p = log_p - log_z
    if log_p.dim() == u.dim():  # an ensemble: one column per member
        log_p = torch.logsumexp(log_p, dim=-1) - math.log(log_p.shape[-1])
    return log_p if log_jacobian is None else log_p + log_jacobian(u)


def _best_candidates(network, candidates, summary, log_z, log_jacobian) -> Tensor:
    """The candidate ``(m, d)`` of highest objective among ``candidates`` ``(m, n, d)``."""
    m, n, _ = candidates.shape
    values = torch.empty(m, n, dtype=torch.float64, device=candidates.device)
    with torch.no_grad():
        for cols in row_chunks(n, max(1, inference_rows(candidates.device, network) // m)):
            block = candidates[:, cols].transpose(0, 1)
            values[:, cols] = _objective(network, block, summary, log_z, log_jacobian).T
    values = values.nan_to_num(-math.inf)
    return candidates[torch.arange(m, device=candidates.device), values.argmax(dim=1)]


def posterior_mode(
    network,
    summary: Tensor,
    candidates: Tensor,
    *,
    log_z: Tensor | None = None,
    log_jacobian: Callable[[Tensor], Tensor] | None = None,
    max_iter: int = 200,
    tol: float = 1e-6,
) -> PosteriorMode:
    r"""Maximize :math:`\log p(\theta \mid x)` for each of ``m`` observations.

    Parameters
    ----------
    network : DualFlowPosterior or EnsemblePosterior
        The trained posterior; a float64 copy of it is optimized through, the original is
        left as it is.
    summary : Tensor of shape (m, c)
        The observations' summaries :math:`s(x)`.
    candidates : Tensor of shape (m, n, d)
        Starting candidates in cube coordinates, e.g. posterior samples; the best of each
        observation's is the start.
    log_z : Tensor of shape (m,) or (m, K), optional
        :math:`\log Z(x)` (per member for an ensemble, where it weighs the members).
    log_jacobian : callable, optional
        :math:`J(u)`: maps ``u`` ``(..., d)`` to ``(...)``, differentiably; ``None`` for a
        constant Jacobian.
    max_iter : int, default=200
        The most L-BFGS iterations.
    tol : float, default=1e-6
        The smallest change of the objective (nats) or of the point (probit units) of an
        iteration that continues the search.

    Returns
    -------
    PosteriorMode
    """
    bound = None if network.uniform is None else float(network.uniform.bound)
    network = copy.deepcopy(network).to(torch.float64).eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    summary = summary.detach().to(torch.float64)
    log_z = None if log_z is None else log_z.to(summary.device, torch.float64)
    start = _best_candidates(
        network, candidates.detach().to(torch.float64), summary, log_z, log_jacobian
    )
    w = _from_cube(start, bound)
    modes, values, converged, n_iter = [], [], [], []
    for row in range(len(w)):
        objective = functools.partial(
            _probit_objective,
            network,
            summary=summary[row : row + 1],
            log_z=None if log_z is None else log_z[row : row + 1],
            log_jacobian=log_jacobian,
            bound=bound,
        )
        result = _ascend(objective, w[row : row + 1], max_iter, tol)
        for out, item in zip((modes, values, converged, n_iter), result, strict=True):
            out.append(item)
    return PosteriorMode(
        u=_to_cube(torch.cat(modes), bound),
        log_density=torch.cat(values),
        converged=torch.tensor(converged, dtype=torch.bool),
        n_iter=torch.tensor(n_iter, dtype=torch.int64),
    )


def _probit_objective(network, w: Tensor, *, summary, log_z, log_jacobian, bound) -> Tensor:
    """The objective at probit coordinates ``w`` ``(m, d)``: ``(m,)``."""
    return _objective(network, _to_cube(w, bound)[None], summary, log_z, log_jacobian)[0]


def _ascend(objective, start: Tensor, max_iter: int, tol: float):
    """L-BFGS ascent of ``objective`` from ``start`` ``(1, d)``: the point, its value,
    whether a tolerance stopped it, and the iterations."""
    w = start.clone().requires_grad_(True)
    max_eval = 5 * max_iter
    optimizer = torch.optim.LBFGS(
        [w],
        max_iter=max_iter,
        max_eval=max_eval,
        tolerance_grad=tol / 100,
        tolerance_change=tol,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = -objective(w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    state = optimizer.state[w]
    n_iter = int(state.get("n_iter", 0))
    with torch.no_grad():
        value = objective(w)
    stopped = n_iter < max_iter and int(state.get("func_evals", 0)) < max_eval
    return w.detach(), value, bool(stopped and torch.isfinite(value).all()), n_iter
