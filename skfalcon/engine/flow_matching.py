r"""Flow matching: a continuous normalizing flow trained without solving its ODE.

A continuous normalizing flow moves a point along the ODE
:math:`\mathrm{d}y / \mathrm{d}\tau = f_\phi(\tau, y, c)` from the data at :math:`\tau = 0`
to the standard normal base at :math:`\tau = 1` (zuko's time direction,
:class:`zuko.transforms.FreeFormJacobianTransform`). Its log-density follows from the
instantaneous change of variables,

.. math::

    \log q(y_0 \mid c) = \log \mathcal{N}(y_1; 0, I)
        + \int_0^1 \operatorname{tr} \frac{\partial f_\phi}{\partial y}(\tau, y_\tau, c)
        \,\mathrm{d}\tau ,

and a sample is the base draw :math:`y_1 \sim \mathcal{N}(0, I)` integrated back to
:math:`\tau = 0`.

**Training** (conditional flow matching with straight, optimal-transport paths). For a
data point :math:`y` with context :math:`c`, a base draw :math:`z \sim \mathcal{N}(0, I)`
and a time :math:`\tau \sim \rho`, the path :math:`y_\tau = (1 - \tau)\, y + \tau z`
has velocity :math:`z - y`, and

.. math::

    \mathcal{L}(\phi) = \mathbb{E}_{y, c, z, \tau}
        \big\| f_\phi(\tau, y_\tau, c) - (z - y) \big\|^2

is minimised by the vector field whose flow carries the data distribution to the base
(Lipman et al., 2023; Liu et al., 2023): at every :math:`\tau` the minimiser is
:math:`\mathbb{E}[z - y \mid y_\tau, c]`, whatever the time density :math:`\rho`, which
only decides where the network spends its capacity. Here :math:`\tau = U^{p}` with
:math:`U \sim \mathcal{U}(0, 1)` and ``time_power`` :math:`p`, so
:math:`\rho(\tau) = \tau^{1/p - 1} / p`: with :math:`p > 1` the times crowd toward the
data end, where the field of a narrow posterior changes fastest (Dax et al., 2023,
weight that end too). In the usual noise-to-data time :math:`t = 1 - \tau` this is the
path :math:`(1 - t) z + t y` with target :math:`y - z`. No ODE is solved in training:
one network evaluation per row.

**The field.** The network regressed is the one the ODE integrates. The default
(``field="residual"``) embeds the time as :math:`e(\tau) = (\cos k \pi \tau,
\sin k \pi \tau)_{k=1}^{K}` (``freqs`` :math:`K`), maps :math:`[y, e(\tau), c]` to the
first width, and passes it through one residual block per entry of ``hidden_features``,
each seeing the time and context again:

.. math::

    h_{k} = P_k h_{k-1} + W_k\, \mathrm{SiLU}\big(V_k h_{k-1} + C_k [e(\tau), c]\big),
    \qquad f_\phi = W_{\mathrm{out}}\, \mathrm{SiLU}(h_K),

with :math:`P_k` the identity where consecutive widths agree and a linear map elsewhere.
``field="mlp"`` is zuko's :class:`~zuko.nn.MLP` of a
:class:`~zuko.flows.continuous.FFJTransform` on :math:`[e(\tau), y, c]` (ELU), the field
of skfalcon 0.2.0's flow-matching models, kept so that they load.

**Accuracy and speed.** Densities and samples integrate the ODE with the adaptive
Dormand–Prince method; ``tolerance`` is its relative tolerance (the absolute one is a
tenth of it): smaller is more accurate and slower, and at most ``1e-4`` is allowed, since a
looser solver may take the whole interval in one step that its error estimate wrongly
accepts. The default ``1e-5`` puts the log-density of a Gaussian target within
:math:`10^{-4}` nats in about ten steps (some sixty field evaluations). Draws that need
no density integrate the ODE alone at ``sample_tolerance`` (default ``1e-4``): on a
trained two-moons posterior that took 168 field evaluations instead of 245 at ``1e-5``,
and the draws read the same C2ST against the exact posterior.

The trace is exact (one vector-Jacobian product per feature) up to
:data:`EXACT_TRACE_MAX_FEATURES` features;
above, it is Hutchinson's unbiased estimate :math:`\mathbb{E}[\epsilon^\top J \epsilon]`
with Rademacher probes :math:`\epsilon`, so the log-density is a *stochastic estimate*
(a warning says so). The probes come from a fixed seed, so each call is reproducible
and torch's global random state is left alone.
"""

import itertools
import warnings
from collections.abc import Callable

import torch
import zuko
from torch import Tensor, nn
from zuko.flows.continuous import FFJTransform
from zuko.lazy import UnconditionalDistribution
from zuko.transforms import FreeFormJacobianTransform
from zuko.utils import broadcast, odeint

__all__ = [
    "DEFAULT_FREQUENCIES",
    "DEFAULT_SAMPLE_TOLERANCE",
    "DEFAULT_TIME_POWER",
    "DEFAULT_TOLERANCE",
    "EXACT_TRACE_MAX_FEATURES",
    "FIELDS",
    "FlowMatchingFlow",
]

#: Up to this many features the divergence is computed exactly; above, it is estimated.
EXACT_TRACE_MAX_FEATURES = 10
#: The vector-field networks: a residual MLP, and zuko's MLP (that of 0.2.0 models).
FIELDS = ("residual", "mlp")
#: Time-embedding frequencies of each field (zuko's default for its MLP).
DEFAULT_FREQUENCIES = {"residual": 8, "mlp": 3}
#: Exponent :math:`p` of the training times :math:`\tau = U^p`.
DEFAULT_TIME_POWER = 3.0
#: Relative tolerance of the ODE solver (the absolute tolerance is a tenth of it).
DEFAULT_TOLERANCE = 1e-5
#: Relative tolerance of draws without their densities.
DEFAULT_SAMPLE_TOLERANCE = 1e-4
# Above this, the solver may accept a single step whose error estimate is itself wrong
# (a log-density off by a nat on a Gaussian target at 1e-3).
_LOOSEST_TOLERANCE = 1e-4
# Seed of the Hutchinson probes and of the evaluation-mode loss draws.
_FIXED_SEED = 0
# zuko scales the trace in the augmented state so that its error counts less.
_TRACE_SCALE = 1e-2


def _fixed_generator(device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(_FIXED_SEED)


class _ProbedJacobianTransform(FreeFormJacobianTransform):
    r"""zuko's free-form Jacobian transform, with its stochastic trace drawn from a seed.

    With ``exact=False`` the log-determinant is :math:`\int \epsilon^\top
    (\partial f / \partial y)\, \epsilon \,\mathrm{d}\tau` for Rademacher probes
    :math:`\epsilon` from a fixed-seed generator (zuko's own draws from torch's global
    state). The exact trace is zuko's.
    """

    @property
    def inv(self) -> "_ProbedJacobianTransform":
        return _ProbedJacobianTransform(
            f=self.f,
            t0=self.t1,
            t1=self.t0,
            phi=self.phi,
            atol=self.atol,
            rtol=self.rtol,
            exact=self.exact,
        )

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.exact:
            return super().call_and_ladj(x)
        warnings.warn(
            "The log-density of a flow-matching flow over more than "
            f"{EXACT_TRACE_MAX_FEATURES} features is a stochastic (Hutchinson) estimate: "
            "importance weights and log_prob carry its noise.",
            UserWarning,
            stacklevel=2,
        )
        create_graph = torch.is_grad_enabled() and (x.requires_grad or bool(self.phi))
        sign = torch.randint(
            2, x.shape, generator=_fixed_generator(x.device), device=x.device, dtype=x.dtype
        )
        probe = 2 * sign - 1

        def augmented(t: Tensor, y: Tensor, ladj: Tensor) -> tuple[Tensor, Tensor]:
            with torch.enable_grad():
                y = y.clone().requires_grad_()
                dy = self.f(t, y)
            (probe_jacobian,) = torch.autograd.grad(dy, y, probe, create_graph=create_graph)
            return dy, (probe_jacobian * probe).sum(-1) * _TRACE_SCALE

        start = (x, x.new_zeros(x.shape[:-1]))
        y, ladj = odeint(augmented, start, self.t0, self.t1, self.phi, self.atol, self.rtol)
        return y, ladj / _TRACE_SCALE


class _ResidualField(nn.Module):
    r"""The residual field of the module docstring: ``forward(y, condition)``, where
    ``condition`` is :math:`[e(\tau), c]`."""

    def __init__(self, features: int, conditions: int, hidden_features: tuple[int, ...]):
        super().__init__()
        widths = (hidden_features[0], *hidden_features)
        self.input = nn.Linear(features + conditions, widths[0])
        self.skips = nn.ModuleList(
            nn.Identity() if a == b else nn.Linear(a, b, bias=False)
            for a, b in itertools.pairwise(widths)
        )
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.conditions = nn.ModuleList(nn.Linear(conditions, b, bias=False) for b in widths[1:])
        self.mix = nn.ModuleList(nn.Linear(b, b) for b in widths[1:])
        self.output = nn.Linear(widths[-1], features)

    def forward(self, y: Tensor, condition: Tensor) -> Tensor:
        h = self.input(torch.cat((y, condition), dim=-1))
        blocks = zip(self.skips, self.hidden, self.conditions, self.mix, strict=True)
        for skip, hidden, cond, mix in blocks:
            h = skip(h) + mix(nn.functional.silu(hidden(h) + cond(condition)))
        return self.output(nn.functional.silu(h))


class _VectorField(FFJTransform):
    """zuko's lazy FFJ transform with the field ``field``, building
    :class:`_ProbedJacobianTransform`."""

    def __init__(self, features: int, context: int, *, field: str, freqs: int, **kwargs):
        hidden_features = kwargs.pop("hidden_features")
        super().__init__(
            features,
            context,
            freqs=freqs,
            hidden_features=hidden_features if field == "mlp" else (1,),
            **kwargs,
        )
        self.field = field
        if field == "residual":
            del self.ode  # zuko's MLP, built by its constructor and unused here
            self.residual = _ResidualField(features, context + 2 * freqs, hidden_features)

    def f(self, t: Tensor, x: Tensor, c: Tensor | None = None) -> Tensor:
        if self.field == "mlp":
            return super().f(t, x, c)
        t = self.freqs * t[..., None]
        condition = torch.cat((t.cos(), t.sin()), dim=-1)
        if c is not None:
            condition = torch.cat(broadcast(condition, c, ignore=1), dim=-1)
        return self.residual(*broadcast(x, condition, ignore=1))

    def forward(self, c: Tensor | None = None) -> _ProbedJacobianTransform:
        transform = super().forward(c)
        return _ProbedJacobianTransform(
            f=transform.f,
            t0=transform.t0,
            t1=transform.t1,
            phi=transform.phi,
            atol=self.atol,
            rtol=self.rtol,
            exact=self.exact,
        )


class FlowMatchingFlow(zuko.flows.Flow):
    r"""A continuous normalizing flow :math:`q(y \mid c)` trained by flow matching.

    A zuko :class:`~zuko.flows.Flow` (``flow(c).log_prob``, ``rsample_and_log_prob``)
    whose transform is an ODE and whose training objective is :meth:`loss`, not the
    negative log-likelihood (see the module docstring).

    Parameters
    ----------
    features : int
        Dimension of :math:`y`.
    context : int, default=0
        Dimension of :math:`c` (0: unconditional).
    hidden_features : tuple of int, default=(128, 128, 128, 128)
        Widths of the field's residual blocks (``field="residual"``) or hidden layers
        (``field="mlp"``).
    field : {"residual", "mlp"}, default="residual"
        The vector-field network (module docstring).
    freqs : int, optional
        Time-embedding frequencies; by default ``DEFAULT_FREQUENCIES[field]``.
    time_power : float, default=DEFAULT_TIME_POWER
        Exponent :math:`p` of the training times :math:`\tau = U^p` (``>= 1``).
    tolerance : float, default=DEFAULT_TOLERANCE
        Relative tolerance of the ODE solver; the absolute tolerance is a tenth of it.
    sample_tolerance : float, default=DEFAULT_SAMPLE_TOLERANCE
        The same for draws without their densities (:meth:`sample_from_base`).
    exact : bool, optional
        Exact divergence; by default when ``features <= EXACT_TRACE_MAX_FEATURES``.

    Examples
    --------
    >>> import torch
    >>> flow = FlowMatchingFlow(2, 3, hidden_features=(16,))
    >>> flow.loss(torch.randn(5, 2), torch.randn(5, 3)).shape
    torch.Size([5])
    >>> flow(torch.randn(3)).log_prob(torch.randn(4, 2)).shape
    torch.Size([4])
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        *,
        hidden_features: tuple[int, ...] = (128, 128, 128, 128),
        field: str = "residual",
        freqs: int | None = None,
        time_power: float = DEFAULT_TIME_POWER,
        tolerance: float = DEFAULT_TOLERANCE,
        sample_tolerance: float = DEFAULT_SAMPLE_TOLERANCE,
        exact: bool | None = None,
    ):
        for name, value in (("tolerance", tolerance), ("sample_tolerance", sample_tolerance)):
            if not (isinstance(value, float | int) and 0 < value <= _LOOSEST_TOLERANCE):
                raise ValueError(
                    f"{name} must be a number in (0, {_LOOSEST_TOLERANCE}]; got {value!r}"
                )
        if field not in FIELDS:
            raise ValueError(f"field must be one of {FIELDS}; got {field!r}")
        if isinstance(time_power, bool) or not (
            isinstance(time_power, float | int) and time_power >= 1
        ):
            raise ValueError(f"time_power must be a number >= 1; got {time_power!r}")
        if len(hidden_features) == 0:
            raise ValueError(
                f"hidden_features must hold at least one width; got {tuple(hidden_features)!r}"
            )
        transform = _VectorField(
            features,
            context,
            field=field,
            freqs=DEFAULT_FREQUENCIES[field] if freqs is None else freqs,
            atol=tolerance / 10,
            rtol=tolerance,
            exact=features <= EXACT_TRACE_MAX_FEATURES if exact is None else exact,
            hidden_features=tuple(hidden_features),
        )
        base = UnconditionalDistribution(
            zuko.distributions.DiagNormal,
            loc=torch.zeros(features),
            scale=torch.ones(features),
            buffer=True,
        )
        super().__init__(transform, base)
        self.time_power = float(time_power)
        self.sample_tolerance = float(sample_tolerance)

    @property
    def vector_field(self) -> Callable[..., Tensor]:
        r""":math:`f_\phi(\tau, y, c)`, the network the ODE integrates."""
        return self.transform.f

    @property
    def exact(self) -> bool:
        """Whether log-densities use the exact divergence (else a stochastic estimate)."""
        return self.transform.exact

    def sample_from_base(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        r"""Draws :math:`y_0` from base draws :math:`z = y_1`: the ODE alone, integrated
        from :math:`\tau = 1` to 0 at ``sample_tolerance``, without the divergence that
        densities need."""
        transform = self.transform(c)
        rtol = self.sample_tolerance
        return odeint(transform.f, z, transform.t1, transform.t0, transform.phi, rtol / 10, rtol)

    def loss(
        self, y: Tensor, c: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        r"""Flow-matching loss :math:`\|f_\phi(\tau, y_\tau, c) - (z - y)\|^2` per row,
        with :math:`\tau = U^p`.

        ``y`` has shape ``(n, features)``, ``c`` shape ``(n, context)``; returns ``(n,)``.
        :math:`\tau` and :math:`z` come from ``generator``; without one, from torch's global
        state in training mode and from a fixed seed in evaluation mode, so that
        validation losses of successive epochs are computed on the same draws.
        """
        if generator is None and not self.training:
            generator = _fixed_generator(y.device)
        tau = torch.rand(y.shape[:-1], generator=generator, device=y.device, dtype=y.dtype)
        tau = tau**self.time_power
        z = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        y_tau = (1 - tau[..., None]) * y + tau[..., None] * z
        return (self.vector_field(tau, y_tau, c) - (z - y)).square().sum(-1)

    def extra_repr(self) -> str:
        return (
            f"field={self.transform.field!r}, time_power={self.time_power}, "
            f"exact={self.exact}, tolerance={self.transform.rtol}, "
            f"sample_tolerance={self.sample_tolerance}"
        )
