r"""Coupling spline flows, and inverses that evaluate each transform's network once.

A coupling layer splits :math:`z = (z_a, z_b)` by a fixed mask and maps
:math:`x_a = z_a`, :math:`x_b = f(z_b \mid z_a, c)` with a monotonic rational-quadratic
spline :math:`f` whose knots a network computes from :math:`(z_a, c)`. Both directions
cost one network evaluation, so sampling a :math:`d`-dimensional flow of :math:`T` layers
costs :math:`T` evaluations, where an autoregressive flow needs up to :math:`d` per
layer. Layer :math:`2k` conditions on the coordinates whose index has bit :math:`k` set
and layer :math:`2k + 1` on the others (cycling over the bits): every coordinate is
transformed in layer :math:`2k` or :math:`2k + 1`, and any two coordinates sit on
opposite sides of some layer within :math:`2 \lceil \log_2 d \rceil` layers.

:func:`inverse_and_log_det` computes :math:`x = f^{-1}(z)` together with
:math:`\log |\det \partial f^{-1} / \partial z|` from the same network evaluation,
where zuko's generic inverse evaluates the network once more for the determinant.
"""

import functools

import torch
import zuko
from torch import Tensor
from zuko.flows.coupling import GeneralCouplingTransform
from zuko.transforms import (
    AutoregressiveTransform,
    ComposedTransform,
    CouplingTransform,
    MonotonicRQSTransform,
)

__all__ = ["CouplingNSF", "coupling_masks", "inverse_and_log_det"]


def coupling_masks(features: int, transforms: int) -> list[torch.Tensor]:
    r"""The constant-split masks of ``transforms`` coupling layers over ``features``.

    True marks the coordinates a layer conditions on, False those it transforms: bit
    :math:`k` of the index and then its complement, for :math:`k = 0, 1, \dots`, cycling.
    """
    index = torch.arange(features)
    n_bits = max(1, (features - 1).bit_length())
    cycle = []
    for bit in range(n_bits):
        is_set = (index >> bit) % 2 == 1
        cycle += [is_set, ~is_set]
    return [cycle[k % len(cycle)] for k in range(transforms)]


class CouplingNSF(zuko.flows.Flow):
    r"""A neural spline flow of coupling layers (zuko's spline and coupling transforms).

    Parameters
    ----------
    features : int
        Dimension :math:`d`.
    context : int, default=0
        Length of the context vector.
    transforms : int, default=3
        Number of coupling layers :math:`T`.
    bins : int, default=8
        Spline bins per coordinate.
    slope : float, default=1e-3
        Minimum slope of the splines (zuko's).
    **kwargs
        Passed to the layers' :class:`zuko.nn.MLP` (e.g. ``hidden_features``).

    Notes
    -----
    With :math:`d = 1` every layer is an element-wise spline of the context (zuko builds
    it so), the same as the autoregressive flow.
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        bins: int = 8,
        slope: float = 1e-3,
        **kwargs,
    ):
        univariate = functools.partial(MonotonicRQSTransform, slope=slope)
        shapes = [(bins,), (bins,), (bins - 1,)]
        layers = [
            GeneralCouplingTransform(
                features, context, mask, univariate=univariate, shapes=shapes, **kwargs
            )
            for mask in coupling_masks(features, transforms)
        ]
        base = zuko.flows.UnconditionalDistribution(
            zuko.distributions.DiagNormal,
            torch.zeros(features),
            torch.ones(features),
            buffer=True,
        )
        super().__init__(layers, base)


def inverse_and_log_det(transform, z: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`x = f^{-1}(z)` and :math:`\log |\det \partial f^{-1}(z) / \partial z|`.

    For a coupling layer the spline that inverts :math:`z_b` also gives the determinant.
    For an autoregressive layer, the last of its fixed-point passes evaluates the network
    on inputs whose conditioning coordinates are already exact, so its spline's
    determinant is the exact one. Other transforms use zuko's inverse. The results are
    those of ``transform.inv.call_and_ladj(z)``, bit for bit.
    """
    if isinstance(transform, ComposedTransform):
        total = torch.zeros((), dtype=z.dtype, device=z.device)
        for layer in reversed(transform.transforms):
            z, log_det = inverse_and_log_det(layer, z)
            # Element-wise layers give one term per coordinate.
            total = total + (log_det.sum(-1) if log_det.shape == z.shape else log_det)
        return z, total
    if isinstance(transform, CouplingTransform):
        z_a, z_b = transform.split(z)
        spline = transform.meta(z_a)
        x_b = spline.inv(z_b)
        return transform.merge(z_a, x_b, z.shape), -spline.log_abs_det_jacobian(x_b, z_b)
    if isinstance(transform, AutoregressiveTransform):
        x = torch.zeros_like(z)
        for _ in range(transform.passes):
            spline = transform.meta(x)
            x = spline.inv(z)
        return x, -spline.log_abs_det_jacobian(x, z)
    return transform.inv.call_and_ladj(z)
