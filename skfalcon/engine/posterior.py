r"""The dual-flow posterior.

Parameters live in the cube :math:`C = [-b, b]^d`, where the prior :math:`\pi(u)` is
uniform. Training pairs :math:`(u, x)` come from some training distribution
:math:`\tilde p(u)\, p(x \mid u)` (the prior, or a mix of proposals). Two flows are fitted
jointly by maximum likelihood,

.. math::

    \mathcal{L} = -\mathbb{E}\big[\log q(u \mid s(x))\big] - \mathbb{E}\big[\log m(u)\big],

so that :math:`q(u \mid x) \to \tilde p(u \mid x) \propto p(x \mid u)\,\tilde p(u)` and
:math:`m(u) \to \tilde p(u)`. The posterior under the prior follows without knowing
:math:`\tilde p`:

.. math::

    p(u \mid x) \propto p(x \mid u)\,\pi(u) \propto \frac{q(u \mid x)}{m(u)}\,\mathbb{1}_C(u).

Whatever of :math:`\tilde p` is known exactly need not be learned. When a fraction
:math:`\alpha` of the training rows was drawn from the prior and the rest from proposals
(``prior_fraction``),

.. math::

    \tilde p(u) = \alpha\, \pi(u) + (1 - \alpha)\, h(u),

and the marginal flow learns only :math:`h`, the density of the proposal rows (the loss
of :math:`m` is then taken over those rows). The prior part, uniform on the cube, is
exact, so a flow never has to model a flat density with sharp edges. With
:math:`\alpha = 1` (every row from the prior) :math:`m` is the uniform density
:math:`(2b)^{-d}`, the marginal flow is not trained, and the
posterior is :math:`q` restricted to the cube. ``prior_fraction=None`` lets the marginal
flow model all of :math:`\tilde p`, as Falcon does.

Without a prior (``marginal=False``) the training distribution is taken as the prior and
the posterior is :math:`q` itself (plain neural posterior estimation).
"""

import math

import torch
from torch import Tensor, nn

from skfalcon.engine.flows import NormalizedFlow, build_flow
from skfalcon.engine.normalization import RunningNorm

__all__ = ["DualFlowPosterior", "PriorMixture", "UniformCube"]


class UniformCube(nn.Module):
    r"""The uniform density :math:`(2b)^{-d}` on the cube :math:`(-b, b)^d`.

    Has the interface of :class:`~skfalcon.engine.flows.NormalizedFlow` without context,
    so it can stand in for the marginal flow. ``log_prob`` does not test membership of
    the cube: the importance sampler handles candidates outside it.
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
        self, shape: tuple[int, ...], context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        anchor = self._anchor
        v = self.bound * (
            2 * torch.rand(*shape, self.features, dtype=anchor.dtype, device=anchor.device) - 1
        )
        return v, self.log_prob(v)


class PriorMixture:
    r"""The density :math:`\alpha\, \pi(u) + (1 - \alpha)\, h(u)` of a store of prior and proposal rows.

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
        self, shape: tuple[int, ...], context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        # Each draw comes from the prior with probability alpha, else from the flow; the
        # flow's density is evaluated only at the prior's draws.
        n = math.prod(shape)
        device = self.uniform._anchor.device
        n_prior = int((torch.rand(n, device=device) < self.prior_fraction).sum())
        parts = []  # (v, log density of the mixture); zuko cannot take empty batches
        if n > n_prior:
            v_flow, log_flow = self.flow.sample_and_log_prob((n - n_prior,))
            parts.append((v_flow, self._mix(self.uniform.log_prob(v_flow), log_flow)))
        if n_prior:
            v_prior, log_prior = self.uniform.sample_and_log_prob((n_prior,))
            if parts:
                v_prior = v_prior.to(parts[0][0].dtype)
            parts.append((v_prior, self._mix(log_prior, self.flow.log_prob(v_prior))))
        v = torch.cat([p[0] for p in parts])
        log_density = torch.cat([p[1] for p in parts])
        order = torch.randperm(n, device=v.device)
        v, log_density = v[order], log_density[order]
        return v.reshape(*shape, v.shape[-1]), log_density.reshape(shape)


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
        Fit :math:`m(u)`; without it the posterior is :math:`q`.
    prior_fraction : float, optional
        :math:`\alpha`, the fraction of training rows drawn from the prior: :math:`m` is
        then :math:`\alpha \pi + (1 - \alpha) h` with :math:`h` the marginal flow of the
        other rows, and 1.0 makes :math:`m` the exact prior. Needs ``cube_bound``. ``None``:
        the marginal flow is all of :math:`m`. A plain attribute, switched by the caller
        when the training rows change.
    net_type, num_transforms, hidden_features, num_bins
        Flow family and size, for both flows (see :func:`~skfalcon.engine.flows.build_flow`).
    theta_norm : bool
        Put a :class:`~skfalcon.engine.normalization.RunningNorm` in front of each flow.
    norm_momentum, adaptive_momentum, use_log_update
        Settings of those normalisations.
    cube_bound : float, optional
        :math:`b` when :math:`u` lives in :math:`(-b, b)^d`: both flows then model the probit
        map of :math:`u` (see :class:`~skfalcon.engine.flows.NormalizedFlow`), where the
        prior is a standard normal. The ratio :math:`q/m` does not depend on this choice.
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
        prior_fraction: float | None = None,
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
        if prior_fraction is not None and self.uniform is None:
            raise ValueError("prior_fraction needs cube_bound")
        self.prior_fraction = prior_fraction

    @property
    def has_marginal(self) -> bool:
        return self.marginal is not None

    @property
    def marginal_is_prior(self) -> bool:
        """Whether :math:`m` is the exact prior (every training row drawn from it)."""
        return self.prior_fraction is not None and self.prior_fraction >= 1.0

    @property
    def inference_marginal(self):
        r"""The density used as :math:`m` at inference: the exact prior, the marginal flow,
        or their mixture (:class:`PriorMixture`)."""
        if self.marginal is None:
            return None
        if self.prior_fraction is None or self.prior_fraction <= 0.0:
            return self.marginal
        if self.marginal_is_prior:
            return self.uniform
        return PriorMixture(self.uniform, self.marginal, self.prior_fraction)

    def embed(self, x: Tensor) -> Tensor:
        """Summaries :math:`s(x)`."""
        return self.embedding(x)

    def losses(self, u: Tensor, x: Tensor, marginal_rows: Tensor | None = None) -> Tensor:
        r"""Mean negative log-likelihoods ``[-log q(u|s(x)), -log h(u)]`` of a batch.

        The training objective is their sum. The marginal flow's mean is over the rows
        where ``marginal_rows`` (bool, shape ``(n,)``) is true, all rows when it is
        ``None``; its entry is 0 without :math:`m`, when the exact prior serves as :math:`m`
        (the flow is then not trained), or when no row is selected.
        """
        nll_conditional = -self.conditional.log_prob(u, self.embed(x)).mean()
        zero = torch.zeros_like(nll_conditional)
        if self.marginal is None or self.marginal_is_prior:
            return torch.stack([nll_conditional, zero])
        if marginal_rows is not None:
            # Indexing, not masking, so that the flow's running normalisation sees these
            # rows only (one host sync per step, and only in the mixture).
            u = u[marginal_rows]
            if u.shape[0] == 0:
                return torch.stack([nll_conditional, zero])
        nll_marginal = -self.marginal.log_prob(u).mean()
        return torch.stack([nll_conditional, nll_marginal])

    def log_ratio(self, u: Tensor, summary: Tensor) -> Tensor:
        r""":math:`\log q(u \mid s) - \log m(u)`, the unnormalized log-posterior on the cube.

        ``u`` of shape ``(n, m, d)`` pairs with ``summary`` of shape ``(m, c)``.
        """
        log_q = self.conditional.log_prob(u, summary)
        if self.marginal is None:
            return log_q
        return log_q - self.inference_marginal.log_prob(u)
