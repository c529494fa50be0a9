r"""Ensembles of dual-flow posteriors: the equal-weight mixture of independent members.

An ensemble holds :math:`K` members, each a full
:class:`~skfalcon.engine.posterior.DualFlowPosterior` with its own embedding
:math:`s_k`, conditional flow :math:`q_k` and marginal flow :math:`m_k`, initialised
independently. They are trained on the same minibatches with the objective

.. math::

    \mathcal{L} = \sum_{k=1}^{K} \mathcal{L}_k,

where :math:`\mathcal{L}_k` is member :math:`k`'s own loss
(:meth:`DualFlowPosterior.losses`). No parameter is shared, so the gradient of
:math:`\mathcal{L}` with respect to member :math:`k` is that of :math:`\mathcal{L}_k`: each
member is the estimator it would be alone, up to the shared batch order, learning-rate
schedule and best epoch (chosen on the summed validation loss). Every member has the
same marginal policy, decided from the sample store.

Each member's posterior is normalized on the cube,
:math:`p_k(u \mid x) = q_k(u \mid s_k(x)) / \big(m_k(u)\, Z_k(x)\big)`, and the ensemble's
posterior is their mixture

.. math::

    p(u \mid x) = \frac{1}{K} \sum_{k=1}^{K} p_k(u \mid x), \qquad
    \log p(u \mid x) = \operatorname{logsumexp}_k \log p_k(u \mid x) - \log K .

It is sampled exactly as a mixture: each sample's member is drawn with equal
probabilities (:func:`assign_members`), then that member's posterior is sampled as a
single posterior would be. The widened proposal of sequential rounds, with exponent
:math:`\kappa = 1 - \gamma`, is the mixture of the members' widened targets,

.. math::

    t(u \mid x) = \frac{1}{K} \sum_{k=1}^{K} \frac{[q_k(u \mid s_k) / m_k(u)]^{\kappa}}
    {Z_{k, \kappa}(x)},

which is the mixture posterior at :math:`\kappa = 1` and the prior at :math:`\kappa = 0`.

The ensemble's summary of an observation is the concatenation of its members' summaries,
``(..., K c)``; :meth:`EnsemblePosterior.split` takes it apart again, so the inference
code passes summaries around as it does for one posterior.
"""

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from skfalcon.engine.marginal import MarginalPolicy
from skfalcon.engine.posterior import DualFlowPosterior

__all__ = [
    "EnsemblePosterior",
    "MixtureConditional",
    "assign_members",
    "member_ranks",
    "mixture_log_density",
    "reinitialize",
]


class MixtureConditional:
    r"""The mixture :math:`\frac1K \sum_k q_k(u \mid s_k)` of an ensemble's conditional flows.

    A view of the members' modules with the ``log_prob`` interface of a conditional flow;
    ``summary`` is the ensemble's concatenated summary.
    """

    def __init__(self, ensemble: "EnsemblePosterior"):
        self.ensemble = ensemble

    def log_prob(self, u: Tensor, summary: Tensor) -> Tensor:
        members, summaries = self.ensemble.members, self.ensemble.split(summary)
        log_q = [m.conditional.log_prob(u, s) for m, s in zip(members, summaries, strict=True)]
        return mixture_log_density(torch.stack(log_q, dim=-1))


class EnsemblePosterior(nn.Module):
    r""":math:`K \ge 2` independent dual-flow posteriors whose posterior is their mixture.

    Parameters
    ----------
    members : sequence of DualFlowPosterior
        Built from one spec, so that their summaries have the same size :math:`c`.

    Examples
    --------
    >>> import torch
    >>> from skfalcon.engine import EnsemblePosterior, NetworkSpec
    >>> spec = NetworkSpec(features=2, observation_features=3, num_transforms=1,
    ...                    hidden_features=(8,), ensemble_size=3, cube_bound=2.0)
    >>> ensemble = spec.build()
    >>> isinstance(ensemble, EnsemblePosterior), len(ensemble.members)
    (True, 3)
    >>> ensemble.losses(torch.zeros(5, 2), torch.randn(5, 3)).shape
    torch.Size([2])
    """

    def __init__(self, members: Sequence[DualFlowPosterior]):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        super().__init__()
        self.members = nn.ModuleList(members)
        self.features = members[0].features

    @property
    def size(self) -> int:
        """Number of members :math:`K`."""
        return len(self.members)

    @property
    def uniform(self):
        """The uniform prior on the cube (the members share its bound); ``None`` without one."""
        return self.members[0].uniform

    @property
    def marginal_policy(self) -> MarginalPolicy:
        """The marginal policy of every member."""
        return self.members[0].marginal_policy

    def set_marginal_policy(self, policy: MarginalPolicy) -> None:
        """Switch what serves as :math:`m` in every member."""
        for member in self.members:
            member.set_marginal_policy(policy)

    @property
    def conditional(self) -> MixtureConditional:
        r"""The mixture of the members' conditional flows :math:`\frac1K \sum_k q_k`."""
        return MixtureConditional(self)

    def embed(self, x: Tensor) -> Tensor:
        """The members' summaries :math:`s_k(x)`, concatenated: ``(..., K c)``."""
        return torch.cat([member.embed(x) for member in self.members], dim=-1)

    def split(self, summary: Tensor) -> tuple[Tensor, ...]:
        """Each member's part ``(..., c)`` of a concatenated summary."""
        return summary.chunk(self.size, dim=-1)

    def losses(self, u: Tensor, x: Tensor, marginal_rows: Tensor | None = None) -> Tensor:
        """The members' losses ``[-log q, -log h]`` summed over members, shape ``(2,)``."""
        return torch.stack([m.losses(u, x, marginal_rows) for m in self.members]).sum(dim=0)

    def log_ratio(self, u: Tensor, summary: Tensor) -> Tensor:
        r"""Each member's :math:`\log q_k(u \mid s_k) - \log m_k(u)`, stacked: ``(..., K)``.

        ``u`` of shape ``(n, m, d)`` pairs with ``summary`` of shape ``(m, K c)``.
        """
        parts = zip(self.members, self.split(summary), strict=True)
        return torch.stack([m.log_ratio(u, s) for m, s in parts], dim=-1)


def reinitialize(module: nn.Module) -> None:
    """Draw fresh weights for every submodule that can (``reset_parameters``), so that a
    deep copy of a user's module starts apart from the original."""
    for submodule in module.modules():
        reset = getattr(submodule, "reset_parameters", None)
        if callable(reset):
            reset()


def assign_members(
    size: int, m: int, n: int, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """The member of each of ``n`` samples of ``m`` observations, ``(m, n)`` int64, each of
    the ``size`` members with probability ``1 / size``, independently."""
    weights = torch.ones(m, size, device=device)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def member_ranks(assignment: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """For an assignment ``(m, n)``: each sample's position among its member's samples of
    the same observation ``(m, n)``, and the count of each member ``(m, size)``."""
    one_hot = nn.functional.one_hot(assignment, size)
    positions = one_hot.cumsum(dim=1) - 1
    ranks = positions.gather(-1, assignment.unsqueeze(-1)).squeeze(-1)
    return ranks, one_hot.sum(dim=1)


def mixture_log_density(member_log_densities: Tensor) -> Tensor:
    r""":math:`\log \frac1K \sum_k p_k` from the members' log-densities ``(..., K)``."""
    size = member_log_densities.shape[-1]
    return torch.logsumexp(member_log_densities, dim=-1) - math.log(size)
