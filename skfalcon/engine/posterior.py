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

When every training row was drawn from the prior, :math:`\tilde p = \pi` is known
exactly: with ``marginal_is_prior`` set, :math:`m` is the uniform density
:math:`(2b)^{-d}` on the cube, the marginal flow need not be trained
(``train_marginal``), and the posterior is
:math:`q` restricted to the cube. Dividing by an exact constant instead of a learned
density removes the marginal flow's error from every weight.

Without a prior (``marginal=False``) the training distribution is taken as the prior and
the posterior is :math:`q` itself (plain neural posterior estimation).
"""

import math

import torch
from torch import Tensor, nn

from skfalcon.engine.flows import NormalizedFlow, build_flow
from skfalcon.engine.normalization import RunningNorm

__all__ = ["DualFlowPosterior", "UniformCube"]


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
    marginal_is_prior : bool
        Use the exact prior (uniform on the cube) as :math:`m` and leave the marginal flow
        untrained; needs ``cube_bound``. A plain attribute, switched by the caller when the
        training distribution changes.
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
        marginal_is_prior: bool = False,
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
        if marginal_is_prior and self.uniform is None:
            raise ValueError("marginal_is_prior needs cube_bound")
        self.marginal_is_prior = marginal_is_prior
        # Whether losses() includes the marginal flow; it may be trained ahead of its use.
        self.train_marginal = not marginal_is_prior

    @property
    def has_marginal(self) -> bool:
        return self.marginal is not None

    @property
    def inference_marginal(self) -> nn.Module | None:
        r"""The density used as :math:`m` at inference: the exact prior or the marginal flow."""
        if self.marginal is None:
            return None
        return self.uniform if self.marginal_is_prior else self.marginal

    def embed(self, x: Tensor) -> Tensor:
        """Summaries :math:`s(x)`."""
        return self.embedding(x)

    def losses(self, u: Tensor, x: Tensor) -> Tensor:
        r"""Mean negative log-likelihoods ``[-log q(u|s(x)), -log m(u)]`` of a batch.

        The training objective is their sum; the marginal entry is 0 without :math:`m` or
        when ``train_marginal`` is off (the exact prior serving as :math:`m`).
        """
        nll_conditional = -self.conditional.log_prob(u, self.embed(x)).mean()
        if self.marginal is None or not self.train_marginal:
            return torch.stack([nll_conditional, torch.zeros_like(nll_conditional)])
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
