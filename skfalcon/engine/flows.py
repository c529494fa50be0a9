r"""Normalizing flows of the engine: zuko families behind a running normalisation.

A :class:`NormalizedFlow` models :math:`v \in \mathbb{R}^d` (optionally given a
context :math:`c`) as :math:`z = (v - \mu)/\sigma` followed by a zuko flow
:math:`q_z(z \mid c)`, so that

.. math::

    \log q(v \mid c) = \log q_z\big((v - \mu)/\sigma \mid c\big) - \sum_i \log \sigma_i .
"""

import zuko
from torch import Tensor, nn

from skfalcon.engine.normalization import RunningNorm

__all__ = ["FLOW_FAMILIES", "NormalizedFlow", "build_flow"]

#: Names accepted by ``net_type`` and the zuko flow each one builds.
FLOW_FAMILIES = {
    "nsf": zuko.flows.NSF,
    "maf": zuko.flows.MAF,
    "nice": zuko.flows.NICE,
    "realnvp": zuko.flows.RealNVP,
    "naf": zuko.flows.NAF,
    "unaf": zuko.flows.UNAF,
    "ncsf": zuko.flows.NCSF,
    "sospf": zuko.flows.SOSPF,
    "bpf": zuko.flows.BPF,
    "gf": zuko.flows.GF,
}

# Families whose transforms are splines with a number of bins.
_SPLINE_FAMILIES = ("nsf", "ncsf")


def build_flow(
    net_type: str,
    features: int,
    context: int,
    *,
    num_transforms: int,
    hidden_features: tuple[int, ...],
    num_bins: int,
) -> zuko.flows.Flow:
    """Build the zuko flow ``net_type`` over ``features`` with ``context`` inputs."""
    kwargs = {"transforms": num_transforms, "hidden_features": tuple(hidden_features)}
    if net_type in _SPLINE_FAMILIES:
        kwargs["bins"] = num_bins
    return FLOW_FAMILIES[net_type](features, context, **kwargs)


class NormalizedFlow(nn.Module):
    r"""A zuko flow seen through a :class:`RunningNorm` of its inputs.

    ``log_prob(v, c)`` returns :math:`\log q(v \mid c)` with the normalisation's
    Jacobian included; in training mode it also updates the normalisation with
    ``v``. With ``normalize=False`` the normalisation is the identity.
    """

    def __init__(self, flow: zuko.flows.Flow, norm: RunningNorm | None):
        super().__init__()
        self.flow = flow
        self.norm = norm

    def _normalize(self, v: Tensor) -> Tensor:
        return v if self.norm is None else self.norm(v)

    def _log_det(self) -> Tensor | float:
        return 0.0 if self.norm is None else self.norm.log_abs_det_jacobian()

    def log_prob(self, v: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``v`` of shape ``(..., d)``; ``context`` broadcasts."""
        return self.flow(context).log_prob(self._normalize(v)) + self._log_det()

    def sample_and_log_prob(
        self, shape: tuple[int, ...], context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw ``shape + batch`` samples with their log-densities in one pass."""
        z, log_q = self.flow(context).rsample_and_log_prob(shape)
        v = z if self.norm is None else self.norm.inverse(z)
        return v, log_q + self._log_det()
