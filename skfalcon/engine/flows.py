r"""Normalizing flows of the engine: zuko families behind a running normalisation.

A :class:`NormalizedFlow` models :math:`v \in \mathbb{R}^d` (optionally given a
context :math:`c`) as :math:`z = (v - \mu)/\sigma` followed by a zuko flow
:math:`q_z(z \mid c)`, so that

.. math::

    \log q(v \mid c) = \log q_z\big((v - \mu)/\sigma \mid c\big) - \sum_i \log \sigma_i .

With a ``cube_bound`` :math:`b`, :math:`v` lives in the cube :math:`(-b, b)^d` and is first
sent to :math:`\mathbb{R}^d` by the probit map :math:`w = \Phi^{-1}\big((v + b) / 2b\big)`,
with :math:`\log |\partial w / \partial v| = \sum_i -\log(2b) - \log \varphi(w_i)`.
The uniform distribution on the cube becomes the standard normal, which a flow with a
Gaussian base represents exactly, while densities stay densities of :math:`v`.
"""

import functools
import math
import threading

import torch
import zuko
from torch import Tensor, nn

from skfalcon.engine.coupling import CouplingNSF, inverse_and_log_det
from skfalcon.engine.flow_matching import FlowMatchingFlow
from skfalcon.engine.gaussian import LinearGaussian
from skfalcon.engine.normalization import RunningNorm
from skfalcon.engine.seeding import torch_seed_scope
from skfalcon.engine.splines import NSF

__all__ = [
    "AUTO_FAMILIES",
    "FLOW_FAMILIES",
    "NormalizedFlow",
    "build_flow",
    "default_hidden_features",
    "default_num_transforms",
    "lr_scale",
]

#: Names accepted by ``net_type`` and the zuko flow each one builds.
FLOW_FAMILIES = {
    # zuko's NSF, its bins normalised by a faster kernel (skfalcon.engine.splines).
    "nsf": NSF,
    # Coupling layers (two passes per transform): sampling costs two network evaluations
    # per transform instead of one per parameter, at some cost in expressiveness.
    "nsf_coupling": functools.partial(NSF, passes=2),
    # Spline coupling layers: one network evaluation per transform in each direction.
    "spline_coupling": CouplingNSF,
    "maf": zuko.flows.MAF,
    "nice": zuko.flows.NICE,
    "realnvp": zuko.flows.RealNVP,
    "naf": zuko.flows.NAF,
    "unaf": zuko.flows.UNAF,
    "ncsf": zuko.flows.NCSF,
    "sospf": zuko.flows.SOSPF,
    "bpf": zuko.flows.BPF,
    "gf": zuko.flows.GF,
    # A continuous flow trained by flow matching (one ODE, no transforms or bins).
    "flow_matching": FlowMatchingFlow,
    # A Gaussian whose mean is affine in the context: no transforms, bins or hidden layers.
    "gaussian": LinearGaussian,
}

#: The families ``net_type="auto"`` trains and chooses between by validation loss: the
#: spline flow for posteriors of any shape, the affine flow, which holds fewer parameters
#: and generalizes better where the posterior is close to Gaussian, and the Gaussian with
#: a mean affine in the observation, exact for linear-Gaussian simulators.
AUTO_FAMILIES = ("nsf", "maf", "gaussian")

# Transforms when none are asked for: a coupling layer transforms about half of the
# coordinates, so coupling flows get more layers.
_DEFAULT_TRANSFORMS = {"spline_coupling": 5}


def default_num_transforms(net_type: str, num_transforms: int | None = None) -> int:
    """``num_transforms``, or for ``None`` the family's default: 5 for
    ``"spline_coupling"``, 3 for the other families."""
    if num_transforms is not None:
        return num_transforms
    return _DEFAULT_TRANSFORMS.get(net_type, 3)


# Hidden widths when none are asked for: a flow-matching field is one network for the
# whole map, so it gets more and wider layers than each transform of a discrete flow.
_DEFAULT_HIDDEN_FEATURES = {"flow_matching": (128, 128, 128, 128)}


def default_hidden_features(
    net_type: str, hidden_features: tuple[int, ...] | None = None
) -> tuple[int, ...]:
    """``hidden_features``, or for ``None`` the family's default: four blocks of 128 for
    ``"flow_matching"``, ``(64, 64)`` for the other families."""
    if hidden_features is not None:
        return tuple(hidden_features)
    return _DEFAULT_HIDDEN_FEATURES.get(net_type, (64, 64))


# The Gaussian family's few parameters travel far from their initialisation: on 500
# simulations of the narrow 10-D Gaussian the flows' rate left its validation loss 16-18
# nats short of its optimum after 200 epochs; ten times that rate reaches it, and on
# 10,000 simulations of Gaussian linear and Bernoulli GLM reads the same loss (to 0.003).
_LR_SCALES = {"gaussian": 10.0}


def lr_scale(net_type: str | None) -> float:
    """The factor on the automatic learning rate of a ``net_type`` network: 10 for
    ``"gaussian"``, 1 for the other families (and for ``None``, an unknown family)."""
    return _LR_SCALES.get(net_type, 1.0)


# Serializes the rare draws that must go through torch's global random state.
_GLOBAL_RNG_LOCK = threading.Lock()
# Families whose transforms are splines with a number of bins.
_SPLINE_FAMILIES = ("nsf", "nsf_coupling", "spline_coupling", "ncsf")


def build_flow(
    net_type: str,
    features: int,
    context: int,
    *,
    num_transforms: int,
    hidden_features: tuple[int, ...],
    num_bins: int,
    vector_field: str = "residual",
) -> zuko.flows.Flow:
    """Build the zuko flow ``net_type`` over ``features`` with ``context`` inputs.

    ``"flow_matching"`` has one vector field (``vector_field``, one of
    :data:`~skfalcon.engine.flow_matching.FIELDS`) of widths ``hidden_features`` and
    ignores ``num_transforms`` and ``num_bins``; ``"gaussian"`` ignores all four; the
    other families ignore ``vector_field``.
    """
    if net_type == "gaussian":
        return LinearGaussian(features, context)
    if net_type == "flow_matching":
        return FlowMatchingFlow(
            features, context, hidden_features=tuple(hidden_features), field=vector_field
        )
    kwargs = {"transforms": num_transforms, "hidden_features": tuple(hidden_features)}
    if net_type in _SPLINE_FAMILIES:
        kwargs["bins"] = num_bins
    return FLOW_FAMILIES[net_type](features, context, **kwargs)


def _probit_log_det(w: Tensor, b: float) -> Tensor:
    r""":math:`\sum_i \log |\partial w_i / \partial v_i| = \sum_i -\log(2b) - \log \varphi(w_i)`."""
    return (0.5 * w.square() + 0.5 * math.log(2 * math.pi) - math.log(2 * b)).sum(-1)


def _rsample_and_log_prob(dist, shape, generator: torch.Generator | None):
    r"""zuko's ``rsample_and_log_prob`` with the base noise drawn from ``generator``.

    :math:`z \sim p(z)` from the generator, :math:`x = f^{-1}(z)` and
    :math:`\log q(x) = \log p(z) - \log |\det \partial f^{-1} / \partial z|`. Gaussian
    and uniform bases (those of zuko's flows) draw from the generator directly; any other
    base draws from torch's global state, seeded from the generator, under a lock and
    restored after.
    """
    if generator is None:
        return dist.rsample_and_log_prob(shape)
    z = _base_draw(dist.base, shape, generator)
    if z is not None:
        x, ladj = inverse_and_log_det(dist.transform, z)
        return x, dist.base.log_prob(z) - ladj
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    with _GLOBAL_RNG_LOCK, torch_seed_scope(seed, generator.device):
        return dist.rsample_and_log_prob(shape)


def _base_draw(base, shape, generator: torch.Generator) -> Tensor | None:
    """A draw of ``shape`` from a Gaussian or uniform ``base`` with the generator's noise;
    ``None`` for any other base."""
    inner = base.base_dist if isinstance(base, torch.distributions.Independent) else base
    if not isinstance(inner, torch.distributions.Normal | torch.distributions.Uniform):
        return None
    location = inner.loc if isinstance(inner, torch.distributions.Normal) else inner.low
    size = torch.Size(shape) + base.batch_shape + base.event_shape
    draw = torch.randn if isinstance(inner, torch.distributions.Normal) else torch.rand
    noise = draw(size, generator=generator, dtype=location.dtype, device=location.device)
    if isinstance(inner, torch.distributions.Normal):
        return inner.loc + inner.scale * noise
    return inner.low + (inner.high - inner.low) * noise


class NormalizedFlow(nn.Module):
    r"""A zuko flow seen through a :class:`RunningNorm` of its inputs.

    ``log_prob(v, c)`` returns :math:`\log q(v \mid c)` with the normalisation's
    Jacobian included; in training mode it also updates the normalisation with
    ``v``. With ``normalize=False`` the normalisation is the identity.
    """

    def __init__(
        self, flow: zuko.flows.Flow, norm: RunningNorm | None, cube_bound: float | None = None
    ):
        super().__init__()
        self.flow = flow
        self.norm = norm
        self.cube_bound = cube_bound

    def _to_real(self, v: Tensor) -> tuple[Tensor, Tensor | float]:
        """Probit map of the cube and its log-Jacobian summed over the last dimension."""
        if self.cube_bound is None:
            return v, 0.0
        b = self.cube_bound
        tiny = torch.finfo(v.dtype).eps
        w = torch.special.ndtri(((v + b) / (2 * b)).clamp(tiny, 1 - tiny))
        return w, _probit_log_det(w, b)

    def _from_real(self, w: Tensor) -> tuple[Tensor, Tensor | float]:
        r"""Inverse probit map and :math:`\log |\partial w / \partial v|` at its output."""
        if self.cube_bound is None:
            return w, 0.0
        b = self.cube_bound
        v = b * (2 * torch.special.ndtr(w) - 1)
        return v, _probit_log_det(w, b)

    def _normalize(self, w: Tensor) -> Tensor:
        return w if self.norm is None else self.norm(w)

    def _log_det(self) -> Tensor | float:
        return 0.0 if self.norm is None else self.norm.log_abs_det_jacobian()

    def log_prob(self, v: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``v`` of shape ``(..., d)``; ``context`` broadcasts."""
        w, log_det = self._to_real(v)
        return self.flow(context).log_prob(self._normalize(w)) + self._log_det() + log_det

    def loss(self, v: Tensor, context: Tensor | None = None) -> Tensor:
        """Training loss of each row of ``v`` ``(n, d)``: ``-log q(v | c)``, or for a
        :class:`~skfalcon.engine.flow_matching.FlowMatchingFlow` its flow-matching loss on
        the normalised probit image of ``v``. Updates the normalisation in training mode."""
        if not isinstance(self.flow, FlowMatchingFlow):
            return -self.log_prob(v, context)
        w, _ = self._to_real(v)
        return self.flow.loss(self._normalize(w), context)

    def sample_and_log_prob(
        self,
        shape: tuple[int, ...],
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw ``shape + batch`` samples with their log-densities in one pass.

        With a ``generator`` the base noise comes from it, not from torch's global state.
        """
        z, log_q = _rsample_and_log_prob(self.flow(context), shape, generator)
        w = z if self.norm is None else self.norm.inverse(z)
        v, log_det = self._from_real(w)
        return v, log_q + self._log_det() + log_det

    def sample(
        self,
        shape: tuple[int, ...],
        context: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``shape + batch`` samples without their log-densities.

        The same base noise as :meth:`sample_and_log_prob`. A flow-matching flow then
        integrates its ODE alone, without the divergence that its density needs, at its
        ``sample_tolerance``; its draws agree with those of :meth:`sample_and_log_prob`
        to the solver's tolerance, not bit for bit.
        """
        if not isinstance(self.flow, FlowMatchingFlow):
            return self.sample_and_log_prob(shape, context, generator)[0]
        base = self.flow(context).base  # batched over the contexts, as zuko's flows do
        z = base.rsample(shape) if generator is None else _base_draw(base, shape, generator)
        z = self.flow.sample_from_base(z, context)
        w = z if self.norm is None else self.norm.inverse(z)
        return self._from_real(w)[0]
