r"""The Gaussian family: a conditional Gaussian whose mean is affine in the context.

:class:`LinearGaussian` models :math:`z \in \mathbb{R}^d` given a context
:math:`c \in \mathbb{R}^k` as

.. math::

    q(z \mid c) = \mathcal{N}\big(z;\ A c + b,\ L L^\top\big),

with :math:`A \in \mathbb{R}^{d \times k}`, :math:`b \in \mathbb{R}^d` and a lower
triangular :math:`L` of positive diagonal :math:`L_{ii} = e^{s_i}`, none of which depends
on :math:`c`. As a flow it is the single transform
:math:`f(z \mid c) = L^{-1}(z - A c - b)` onto a standard normal base, so that

.. math::

    \log q(z \mid c) = \log \mathcal{N}\big(f(z \mid c); 0, I\big) - \sum_i s_i .

Maximum likelihood over it is the linear regression of :math:`z` on :math:`c` with a
full residual covariance: :math:`d(k + 1) + d(d + 1)/2` parameters, where a flow of
neural transforms holds tens of thousands. It is exact where the posterior, in the
engine's coordinates (the probit image of the prior's cube and running normalisations of
both sides), is Gaussian with a mean linear in the observation and a covariance that
does not depend on it: a linear-Gaussian simulator under a Gaussian prior. Near such a
posterior it needs far fewer simulations than a flow to reach the same accuracy; far from
one it is a poor fit, which its held-out likelihood shows (``net_type="auto"`` chooses by
it).
"""

import torch
import zuko
from torch import Tensor, nn
from torch.distributions import constraints

__all__ = ["LinearGaussian"]


class _TriangularAffine(zuko.transforms.Transform):
    r""":math:`y = L^{-1}(x - m)` for a lower triangular :math:`L` with diagonal
    :math:`e^{s}`; :math:`\log |\det \partial y / \partial x| = -\sum_i s_i`."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, mean: Tensor, tril: Tensor, log_diag: Tensor, **kwargs):
        super().__init__(**kwargs)
        self.mean = mean
        self.tril = tril
        self.log_diag = log_diag

    def _call(self, x: Tensor) -> Tensor:
        residual = (x - self.mean).unsqueeze(-1)
        return torch.linalg.solve_triangular(self.tril, residual, upper=False).squeeze(-1)

    def _inverse(self, y: Tensor) -> Tensor:
        return (self.tril @ y.unsqueeze(-1)).squeeze(-1) + self.mean

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return (-self.log_diag.sum()).expand(x.shape[:-1])


class _LinearGaussianTransform(zuko.lazy.LazyTransform):
    """The lazy transform :math:`f(z \\mid c) = L^{-1}(z - A c - b)` of
    :class:`LinearGaussian`; without a context the mean is :math:`b`."""

    def __init__(self, features: int, context: int = 0):
        super().__init__()
        # A starts at nn.Linear's random initialisation, so that ensemble members differ.
        self.regression = nn.Linear(context, features) if context else None
        self.shift = nn.Parameter(torch.zeros(features))
        self.log_diag = nn.Parameter(torch.zeros(features))
        self.lower = nn.Parameter(torch.zeros(features, features))

    def forward(self, c: Tensor | None = None) -> zuko.transforms.Transform:
        mean = self.shift
        if c is not None and self.regression is not None:
            mean = mean + self.regression(c)
        tril = torch.tril(self.lower, -1) + torch.diag(self.log_diag.exp())
        return _TriangularAffine(mean, tril, self.log_diag)


class LinearGaussian(zuko.flows.Flow):
    r"""The conditional Gaussian :math:`\mathcal{N}(z; A c + b, L L^\top)` as a zuko flow.

    Parameters
    ----------
    features : int
        Dimension :math:`d` of :math:`z`.
    context : int, default=0
        Dimension :math:`k` of :math:`c`; 0 for an unconditional Gaussian.
    """

    def __init__(self, features: int, context: int = 0):
        super().__init__(
            transform=[_LinearGaussianTransform(features, context)],
            base=zuko.flows.UnconditionalDistribution(
                zuko.distributions.DiagNormal,
                torch.zeros(features),
                torch.ones(features),
                buffer=True,
            ),
        )
