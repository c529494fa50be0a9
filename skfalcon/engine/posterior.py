r"""The dual-flow posterior.

Parameters live in the cube :math:`C = [-b, b]^d`, where the prior :math:`\pi(u)` is
uniform. Training pairs :math:`(u, x)` come from some training distribution
:math:`\tilde p(u)\, p(x \mid u)` (the prior, or a mix of proposals). Two flows are fitted
jointly by maximum likelihood,

.. math::

    \mathcal{L} = -\mathbb{E}\big[\log q(u \mid s(x))\big] - \mathbb{E}\big[\log m(u)\big],

so that :math:`q(u \mid x) \to \tilde p(u \mid x) \propto p(x \mid u)\,\tilde p(u)` and
:math:`m(u) \to \tilde p(u)`. (With ``net_type="flow_matching"`` each negative
log-likelihood is replaced by the flow-matching loss of
:mod:`skfalcon.engine.flow_matching`, whose minimiser is the same density.) The posterior under
the prior follows without knowing :math:`\tilde p`:

.. math::

    p(u \mid x) \propto p(x \mid u)\,\pi(u) \propto \frac{q(u \mid x)}{m(u)}\,\mathbb{1}_C(u).

Whatever of :math:`\tilde p` is known exactly need not be learned. When a fraction
:math:`\alpha` of the training rows was drawn from the prior and the rest from proposals
(see :mod:`skfalcon.engine.marginal`),

.. math::

    \tilde p(u) = \alpha\, \pi(u) + (1 - \alpha)\, h(u),

and the marginal flow learns only :math:`h`, the density of the proposal rows (the loss
of :math:`m` is then taken over those rows). The prior part, uniform on the cube, is
exact, so a flow never has to model a flat density with sharp edges. With
:math:`\alpha = 1` (every row from the prior) :math:`m` is the uniform density
:math:`(2b)^{-d}`, the marginal flow is not trained, and the
posterior is :math:`q` restricted to the cube. The policy ``"flow"`` lets the marginal
flow model all of :math:`\tilde p`, as Falcon does.

Without a prior (``marginal=False``) the training distribution is taken as the prior and
the posterior is :math:`q` itself (plain neural posterior estimation).
"""

import torch
from torch import Tensor, nn

from skfalcon.engine.flows import NormalizedFlow, build_flow
from skfalcon.engine.marginal import MarginalPolicy, UniformCube
from skfalcon.engine.normalization import RunningNorm

__all__ = ["DualFlowPosterior"]


class DualFlowPosterior(nn.Module):
    r"""Conditional flow :math:`q(u \mid s(x))`, marginal flow :math:`m(u)` and embedding :math:`s`.

    Parameters
    ----------
    features : int
        Dimension :math:`d` of :math:`u`.
    embedding : nn.Module
        Maps observations ``(..., *x_shape)`` to summaries ``(..., context)``; trained jointly.
    context : int
        Dimension of the summaries.
    marginal : bool
        Build the marginal flow; without it the posterior is :math:`q`.
    net_type, num_transforms, hidden_features, num_bins, vector_field
        Flow family and size, for both flows (see :func:`~skfalcon.engine.flows.build_flow`).
    theta_norm : bool
        Put a :class:`~skfalcon.engine.normalization.RunningNorm` in front of each flow.
    norm_momentum, adaptive_momentum, use_log_update
        Settings of those normalisations.
    cube_bound : float, optional
        :math:`b` when :math:`u` lives in :math:`(-b, b)^d`: both flows then model the probit
        map of :math:`u` (see :class:`~skfalcon.engine.flows.NormalizedFlow`), where the
        prior is a standard normal. The ratio :math:`q/m` does not depend on this choice.

    Attributes
    ----------
    marginal_policy : MarginalPolicy
        What serves as :math:`m` (:mod:`skfalcon.engine.marginal`): the one record of it,
        set by the trainer from the sample store before each fit.
    """

    def __init__(
        self,
        features: int,
        embedding: nn.Module,
        context: int,
        *,
        marginal: bool = True,
        net_type: str = "nsf",
        num_transforms: int = 3,
        hidden_features: tuple[int, ...] = (64, 64),
        num_bins: int = 8,
        theta_norm: bool = True,
        norm_momentum: float = 0.01,
        adaptive_momentum: bool = False,
        use_log_update: bool = False,
        cube_bound: float | None = None,
        vector_field: str = "residual",
    ):
        super().__init__()
        self.features = features
        self.embedding = embedding

        def make(context_features: int) -> NormalizedFlow:
            flow = build_flow(
                net_type,
                features,
                context_features,
                num_transforms=num_transforms,
                hidden_features=hidden_features,
                num_bins=num_bins,
                vector_field=vector_field,
            )
            norm = (
                RunningNorm(features, norm_momentum, adaptive_momentum, use_log_update)
                if theta_norm
                else None
            )
            return NormalizedFlow(flow, norm, cube_bound)

        self.conditional = make(context)
        self.marginal = make(0) if marginal else None
        self.uniform = UniformCube(features, cube_bound) if cube_bound is not None else None
        self.marginal_policy = MarginalPolicy("flow" if marginal else "none")

    def set_marginal_policy(self, policy: MarginalPolicy) -> None:
        """Switch what serves as :math:`m`; the exact prior needs ``cube_bound``."""
        if policy.kind in ("prior", "mixture") and self.uniform is None:
            raise ValueError(f"the marginal policy {policy.kind!r} needs cube_bound")
        if (policy.kind == "none") != (self.marginal is None):
            raise ValueError(
                f"the marginal policy {policy.kind!r} does not fit a network "
                + ("without" if self.marginal is None else "with")
                + " a marginal flow"
            )
        self.marginal_policy = policy

    @property
    def inference_marginal(self):
        r"""The density used as :math:`m`: the exact prior, the marginal flow, or their
        mixture (:class:`~skfalcon.engine.marginal.PriorMixture`); ``None`` without one."""
        return self.marginal_policy.density(self.uniform, self.marginal)

    def embed(self, x: Tensor) -> Tensor:
        """Summaries :math:`s(x)`."""
        return self.embedding(x)

    def losses(self, u: Tensor, x: Tensor, marginal_rows: Tensor | None = None) -> Tensor:
        r"""Mean training losses ``[loss of q(u|s(x)), loss of h(u)]`` of a batch.

        The training objective is their sum. Each is the flow family's loss
        (:meth:`NormalizedFlow.loss`): the negative log-likelihood, or for
        ``net_type="flow_matching"`` the flow-matching regression loss, which is then also
        what validation monitors. The marginal flow's mean is over the rows
        where ``marginal_rows`` (bool, shape ``(n,)``) is true, all rows when it is
        ``None``; its entry is 0 when the policy trains no flow (no prior, or the exact
        prior as :math:`m`) or when no row is selected.
        """
        loss_conditional = self.conditional.loss(u, self.embed(x)).mean()
        zero = torch.zeros_like(loss_conditional)
        if not self.marginal_policy.trains_flow:
            return torch.stack([loss_conditional, zero])
        if marginal_rows is not None:
            # Indexing, not masking, so that the flow's running normalisation sees these
            # rows only (one host sync per step, and only in the mixture).
            u = u[marginal_rows]
            if u.shape[0] == 0:
                return torch.stack([loss_conditional, zero])
        loss_marginal = self.marginal.loss(u).mean()
        return torch.stack([loss_conditional, loss_marginal])

    def log_ratio(self, u: Tensor, summary: Tensor) -> Tensor:
        r""":math:`\log q(u \mid s) - \log m(u)`, the unnormalized log-posterior on the cube.

        ``u`` of shape ``(n, m, d)`` pairs with ``summary`` of shape ``(m, c)``.
        """
        log_q = self.conditional.log_prob(u, summary)
        marginal = self.inference_marginal
        return log_q if marginal is None else log_q - marginal.log_prob(u)
