r"""The marginal policy: what serves as :math:`m(u)`, the density of the training parameters.

The posterior is :math:`p(u \mid x) \propto q(u \mid x) / m(u)` on the cube, with :math:`m`
the density :math:`\tilde p(u)` the stored parameters were drawn from. Whatever of
:math:`\tilde p` is known exactly is used exactly. With a fraction :math:`\alpha` of the
training rows drawn from the prior :math:`\pi` and the rest from proposals,

.. math::

    \tilde p(u) = \alpha\, \pi(u) + (1 - \alpha)\, h(u),

where :math:`\pi` is uniform on the cube, :math:`(2b)^{-d}`, and :math:`h` is the marginal
flow, trained on the proposal rows only. Four kinds follow:

``"prior"`` (:math:`\alpha = 1`)
    :math:`m = \pi` exactly; the marginal flow is not trained and the posterior is
    :math:`q` itself, sampled exactly.
``"mixture"`` (:math:`0 < \alpha < 1`)
    :math:`m = \alpha \pi + (1 - \alpha) h`.
``"flow"``
    The flow models all of :math:`\tilde p`, as Falcon does: asked for, when no training
    row came from the prior, or once prior rows were dropped by a rule that looked at
    them (they are then no longer prior-distributed).
``"none"``
    No prior: the training distribution is taken as the prior and the posterior is
    :math:`q` (plain neural posterior estimation).

:func:`choose_marginal` is the one place the kind is decided, from the sample store.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["MARGINAL_KINDS", "MarginalPolicy", "PriorMixture", "UniformCube", "choose_marginal"]

MARGINAL_KINDS = ("none", "prior", "mixture", "flow")


class UniformCube(nn.Module):
    r"""The uniform density :math:`(2b)^{-d}` on the cube :math:`(-b, b)^d`.

    Has the interface of :class:`~skfalcon.engine.flows.NormalizedFlow` without context,
    so it can stand in for the marginal flow. ``log_prob`` does not test membership of the
    cube: no flow draw leaves it.
    """

    def __init__(self, features: int, bound: float):
        super().__init__()
        self.features = features
        self.bound = bound
        self._log_density = -features * math.log(2 * bound)
        # Follows the module across devices; not persistent, so state dicts do not change.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, v: Tensor, context: Tensor | None = None) -> Tensor:
        return torch.full(v.shape[:-1], self._log_density, dtype=v.dtype, device=v.device)

    def sample_and_log_prob(
        self,
        shape: tuple[int, ...],
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        anchor = self._anchor
        unit = torch.rand(
            *shape, self.features, generator=generator, dtype=anchor.dtype, device=anchor.device
        )
        v = self.bound * (2 * unit - 1)
        return v, self.log_prob(v)


class PriorMixture:
    r"""The density :math:`\alpha\, \pi(u) + (1 - \alpha)\, h(u)` of prior and proposal rows.

    ``uniform`` is the prior :math:`\pi` (:class:`UniformCube`) and ``flow`` the marginal
    flow :math:`h` of the proposal rows; a view of modules owned by the posterior, with
    their interface (``log_prob``, ``sample_and_log_prob``).
    """

    def __init__(self, uniform: UniformCube, flow: nn.Module, prior_fraction: float):
        self.uniform = uniform
        self.flow = flow
        self.log_alpha = math.log(prior_fraction)
        self.log_one_minus_alpha = math.log1p(-prior_fraction)
        self.prior_fraction = prior_fraction

    def _mix(self, log_prior: Tensor, log_flow: Tensor) -> Tensor:
        return torch.logaddexp(self.log_alpha + log_prior, self.log_one_minus_alpha + log_flow)

    def log_prob(self, v: Tensor, context: Tensor | None = None) -> Tensor:
        return self._mix(self.uniform.log_prob(v), self.flow.log_prob(v))

    def sample_and_log_prob(
        self,
        shape: tuple[int, ...],
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        # Each draw comes from the prior with probability alpha, else from the flow; the
        # flow's density is evaluated only at the prior's draws.
        n = math.prod(shape)
        device = self.uniform._anchor.device
        coins = torch.rand(n, generator=generator, device=device)
        n_prior = int((coins < self.prior_fraction).sum())
        parts = []  # (v, log density of the mixture); zuko cannot take empty batches
        if n > n_prior:
            v_flow, log_flow = self.flow.sample_and_log_prob((n - n_prior,), generator=generator)
            parts.append((v_flow, self._mix(self.uniform.log_prob(v_flow), log_flow)))
        if n_prior:
            v_prior, log_prior = self.uniform.sample_and_log_prob((n_prior,), generator=generator)
            if parts:
                v_prior = v_prior.to(parts[0][0].dtype)
            parts.append((v_prior, self._mix(log_prior, self.flow.log_prob(v_prior))))
        v = torch.cat([p[0] for p in parts])
        log_density = torch.cat([p[1] for p in parts])
        order = torch.randperm(n, generator=generator, device=v.device)
        v, log_density = v[order], log_density[order]
        return v.reshape(*shape, v.shape[-1]), log_density.reshape(shape)


@dataclass(frozen=True)
class MarginalPolicy:
    """Which density serves as :math:`m` (see the module docstring).

    Attributes
    ----------
    kind : {"none", "prior", "mixture", "flow"}
    prior_fraction : float or None
        :math:`\\alpha` for ``"prior"`` (1.0) and ``"mixture"``; ``None`` otherwise.
    """

    kind: str = "flow"
    prior_fraction: float | None = None

    def __post_init__(self):
        if self.kind not in MARGINAL_KINDS:
            raise ValueError(f"kind must be one of {MARGINAL_KINDS}, got {self.kind!r}")

    @property
    def is_exact_prior(self) -> bool:
        """Whether :math:`m` is the prior itself (the posterior is then :math:`q`)."""
        return self.kind == "prior"

    @property
    def trains_flow(self) -> bool:
        """Whether the marginal flow is trained (``"mixture"`` and ``"flow"``)."""
        return self.kind in ("mixture", "flow")

    def flow_rows(self, from_prior: Tensor) -> Tensor | None:
        """Rows the marginal flow is trained on: the proposal rows in a mixture, else all."""
        return ~from_prior if self.kind == "mixture" else None

    def density(self, uniform: UniformCube | None, flow: nn.Module | None):
        """The module (or view) that evaluates and samples :math:`m`; ``None`` without one."""
        if self.kind == "none":
            return None
        if self.kind == "prior":
            return uniform
        if self.kind == "mixture":
            return PriorMixture(uniform, flow, self.prior_fraction)
        return flow


def choose_marginal(
    has_prior: bool, prior_fraction: float | None, mode: str = "auto"
) -> MarginalPolicy:
    r"""The marginal policy for a store whose training rows have prior share ``prior_fraction``.

    ``prior_fraction`` is :meth:`SampleStore.prior_fraction`: ``None`` when the prior rows
    are no longer known to be prior-distributed. ``mode="flow"`` always learns :math:`m`.
    """
    if not has_prior:
        return MarginalPolicy("none")
    if mode == "flow" or not prior_fraction:
        return MarginalPolicy("flow")
    if prior_fraction >= 1.0:
        return MarginalPolicy("prior", 1.0)
    return MarginalPolicy("mixture", float(prior_fraction))
