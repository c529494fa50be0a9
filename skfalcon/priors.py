r"""Factorized priors and the hypercube maps.

A prior over :math:`d` parameters factorizes, :math:`\pi(\theta) = \prod_i \pi_i(\theta_i)`.
Each free coordinate is sent through its CDF :math:`F_i` onto :math:`[-b, b]`,

.. math::

    u_i = -b + 2b\,F_i(\theta_i) = b\,(F_i - G_i), \qquad G_i = 1 - F_i,

with :math:`b` the hypercube bound, so that the prior is uniform on :math:`[-b, b]^d`.
The map is diagonal and :math:`\partial u_i / \partial\theta_i = 2b\,\pi_i(\theta_i)`, hence

.. math::

    \log\left|\det\frac{\partial u}{\partial\theta}\right|
        = \sum_i \log(2b) + \log\pi_i(\theta_i),
    \qquad p_\theta(\theta) = p_u(u(\theta))\,\left|\det\frac{\partial u}{\partial\theta}\right|.

The inverse map is handed both tail masses, :math:`F = (b + u) / 2b` and
:math:`G = (b - u) / 2b`, each exact where it is small, and uses the one that is
smaller, so the far tails keep their precision. The marginals, each with its
density on the support and its CDF (the inverse maps are the closed forms of these):

``("uniform", l, h)``
    :math:`\pi = 1 / (h - l)` on :math:`[l, h]`, :math:`F = (\theta - l) / (h - l)`.
``("normal", m, s)``
    :math:`\pi = \varphi(z) / s` on the real line, :math:`F = \Phi(z)`,
    :math:`z = (\theta - m) / s`.
``("cosine", l, h)``, :math:`-\pi/2 \le l < h \le \pi/2`
    :math:`\pi = \cos\theta / (\sin h - \sin l)` on :math:`[l, h]`,
    :math:`F = (\sin\theta - \sin l) / (\sin h - \sin l)`.
``("sine", l, h)``, :math:`0 \le l < h \le \pi`
    :math:`\pi = \sin\theta / (\cos l - \cos h)` on :math:`[l, h]`,
    :math:`F = (\cos l - \cos\theta) / (\cos l - \cos h)`.
``("uvol", l, h)``, :math:`0 \le l < h`
    :math:`\pi = 3\theta^2 / (h^3 - l^3)` on :math:`[l, h]`,
    :math:`F = (\theta^3 - l^3) / (h^3 - l^3)`.
``("triangular", a, c, b)``, lower, mode, upper: :math:`a \le c \le b`, :math:`a < b`
    :math:`\pi = 2(\theta - a) / ((b - a)(c - a))` on :math:`[a, c]` and
    :math:`2(b - \theta) / ((b - a)(b - c))` on :math:`[c, b]`;
    :math:`F = (\theta - a)^2 / ((b - a)(c - a))` on :math:`[a, c]` and
    :math:`1 - (b - \theta)^2 / ((b - a)(b - c))` on :math:`[c, b]`.
``("fixed", v)``
    The constant :math:`v`; not a cube coordinate.
a frozen 1-D continuous ``scipy.stats`` distribution ``dist``
    ``dist.pdf`` and ``dist.cdf``, inverted by ``dist.ppf`` and ``dist.isf``,
    evaluated in float64 numpy on the CPU (no gradient).

``"cosine"`` is the declination-like prior (uniform in :math:`\sin\theta`) and
``"sine"`` the inclination-like one (uniform in :math:`\cos\theta`), each truncated
to :math:`[l, h]`. Falcon's ``Hypercube`` differs: under both names it draws a half
period stretched over the interval, density :math:`\propto \sin(\pi(\theta - l)/(h - l))`
(and its ``"sine"`` map to the cube is not the inverse of its draws). So Falcon's
``("cosine", 0, pi)`` is ``("sine", 0, pi)`` here, its ``("cosine", -pi/2, pi/2)`` is the
same here, and on narrower intervals the two differ.

Numerics: ``to_cube`` clamps theta into the support, so values outside it go to
the faces of the cube; ``from_cube`` clamps u onto the cube and, on a side where
the support is unbounded (normal, some scipy marginals), keeps the tail mass at
least ``eps / 4`` of the dtype, so :math:`\pm b` maps to finite values (about
:math:`\pm 8.3` standard deviations in float64, :math:`\pm 5.4` in float32). NaN
propagates through both maps; ``log_prob_tensor`` and ``in_support`` treat it as
outside the support, and the numpy ``log_prob`` refuses it.

Users draw and evaluate the prior with ``FactorizedPrior.sample(n, random_state)``
and ``FactorizedPrior.log_prob(theta)``, on float64 numpy arrays of full parameter rows;
the torch maps above serve the estimator and the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import scipy.stats
import torch
from scipy.stats.distributions import rv_frozen
from sklearn.utils import check_random_state

from skfalcon.utils.random import draw_seed
from skfalcon.utils.validation import to_float_array

__all__ = ["FactorizedPrior", "Standardizer", "make_prior", "readable_prior"]


# --------------------------------------------------------------------------- marginals
# Each family maps theta to F - G (= u / b), the two tails back to theta, and
# gives the log density; the arguments are tensors of shape (k,), one per column.


def _uniform_to_unit(theta, low, high):
    return ((theta - low) - (high - theta)) / (high - low)


def _uniform_from_tails(lower, upper, low, high):
    return low * upper + high * lower


def _uniform_log_pdf(theta, low, high):
    return (-torch.log(high - low)).expand_as(theta)


def _normal_to_unit(theta, mean, std):
    return torch.erf((theta - mean) / (std * math.sqrt(2)))


def _normal_from_tails(lower, upper, mean, std):
    floor = _tail_floor(lower.dtype)
    z = torch.where(
        lower < upper,
        torch.special.ndtri(lower.clamp(min=floor)),
        -torch.special.ndtri(upper.clamp(min=floor)),
    )
    return mean + std * z


def _normal_log_pdf(theta, mean, std):
    z = (theta - mean) / std
    return -0.5 * z**2 - torch.log(std) - 0.5 * math.log(2 * math.pi)


def _cosine_to_unit(theta, low, high):
    sin, sin_low, sin_high = torch.sin(theta), torch.sin(low), torch.sin(high)
    return ((sin - sin_low) - (sin_high - sin)) / (sin_high - sin_low)


def _cosine_from_tails(lower, upper, low, high):
    return torch.asin((torch.sin(low) * upper + torch.sin(high) * lower).clamp(-1, 1))


def _cosine_log_pdf(theta, low, high):
    return torch.log(torch.cos(theta)) - torch.log(torch.sin(high) - torch.sin(low))


def _sine_to_unit(theta, low, high):
    cos, cos_low, cos_high = torch.cos(theta), torch.cos(low), torch.cos(high)
    return ((cos_low - cos) - (cos - cos_high)) / (cos_low - cos_high)


def _sine_from_tails(lower, upper, low, high):
    return torch.acos((torch.cos(low) * upper + torch.cos(high) * lower).clamp(-1, 1))


def _sine_log_pdf(theta, low, high):
    return torch.log(torch.sin(theta)) - torch.log(torch.cos(low) - torch.cos(high))


def _uvol_to_unit(theta, low, high):
    cube, cube_low = (theta / high) ** 3, (low / high) ** 3
    return ((cube - cube_low) - (1 - cube)) / (1 - cube_low)


def _uvol_from_tails(lower, upper, low, high):
    return high * ((low / high) ** 3 * upper + lower) ** (1 / 3)


def _uvol_log_pdf(theta, low, high):
    return (
        math.log(3) + 2 * torch.log(theta) - 3 * torch.log(high) - torch.log1p(-((low / high) ** 3))
    )


def _nonzero(width):
    """``width`` with zeros replaced by one, for the degenerate sides of a triangle."""
    return torch.where(width > 0, width, torch.ones_like(width))


def _triangular_to_unit(theta, a, c, b):
    lower = (theta - a) ** 2 / ((b - a) * _nonzero(c - a))
    upper = (b - theta) ** 2 / ((b - a) * _nonzero(b - c))
    return torch.where(theta <= c, 2 * lower - 1, 1 - 2 * upper)


def _triangular_from_tails(lower, upper, a, c, b):
    left = a + torch.sqrt(lower * (b - a) * (c - a))
    right = b - torch.sqrt(upper * (b - a) * (b - c))
    return torch.where(lower <= (c - a) / (b - a), left, right)


def _triangular_log_pdf(theta, a, c, b):
    # the density is 2 / (b - a) times the lower of the two sides' linear ramps
    rising = torch.where(c > a, (theta - a) / _nonzero(c - a), torch.inf)
    falling = torch.where(b > c, (b - theta) / _nonzero(b - c), torch.inf)
    return math.log(2) - torch.log(b - a) + torch.log(torch.minimum(rising, falling))


def _scipy_to_unit(theta, dist):
    x = _to_numpy(theta)
    return _like(dist.cdf(x) - dist.sf(x), theta)


def _scipy_from_tails(lower, upper, dist):
    # floor a tail mass only where that side of the support is unbounded
    floors = np.where(np.isinf(dist.support()), _tail_floor(lower.dtype), 0.0)
    f, g = np.maximum(_to_numpy(lower), floors[0]), np.maximum(_to_numpy(upper), floors[1])
    return _like(np.where(f < g, dist.ppf(f), dist.isf(g)), lower)


def _scipy_log_pdf(theta, dist):
    return _like(dist.logpdf(_to_numpy(theta)), theta)


def _tail_floor(dtype):
    """Smallest tail mass kept by the unbounded inverse maps: about one step of u below b."""
    return torch.finfo(dtype).eps / 4


def _to_numpy(tensor):
    return tensor.detach().to("cpu", torch.float64).numpy()


def _like(array, tensor):
    return torch.as_tensor(array, dtype=tensor.dtype, device=tensor.device)


# --------------------------------------------------------------------------- specs


def _check_interval(low, high, allowed_low=-math.inf, allowed_high=math.inf, allowed=None):
    if allowed_low <= low < high <= allowed_high and math.isfinite(high - low):
        return None
    allowed = allowed or "low < high"
    return f"needs {allowed} and a finite high - low; got low={low!r}, high={high!r}"


def _check_normal(mean, std):
    return None if std > 0 else f"needs std > 0; got std={std!r}"


def _check_cosine(low, high):
    problem = _check_interval(low, high, -math.pi / 2, math.pi / 2, "-pi/2 <= low < high <= pi/2")
    if problem and 0 <= low < high <= math.pi:
        problem += (
            "; for a density proportional to sin(theta) on [0, pi] (what Falcon's "
            "('cosine', 0, pi) samples) use ('sine', low, high)"
        )
    return problem


def _check_sine(low, high):
    return _check_interval(low, high, 0.0, math.pi, "0 <= low < high <= pi")


def _check_uvol(low, high):
    return _check_interval(low, high, 0.0, math.inf, "0 <= low < high")


def _check_triangular(a, c, b):
    if a < b and a <= c <= b:
        return None
    return f"needs a <= c <= b and a < b (lower, mode, upper); got a={a!r}, c={c!r}, b={b!r}"


def _interval(low, high):
    return low, high


def _real_line(mean, std):
    return -math.inf, math.inf


def _triangle_base(a, c, b):
    return a, b


class _Family(NamedTuple):
    args: tuple[str, ...]
    check: Callable  # (*args) -> what is wrong, or None
    support: Callable  # (*args) -> (low, high)
    to_unit: Callable  # (theta, *args) -> F - G
    from_tails: Callable  # (F, G, *args) -> theta
    log_pdf: Callable  # (theta, *args) -> log density


_FAMILIES = {
    "uniform": _Family(
        ("low", "high"),
        _check_interval,
        _interval,
        _uniform_to_unit,
        _uniform_from_tails,
        _uniform_log_pdf,
    ),
    "normal": _Family(
        ("mean", "std"),
        _check_normal,
        _real_line,
        _normal_to_unit,
        _normal_from_tails,
        _normal_log_pdf,
    ),
    "cosine": _Family(
        ("low", "high"),
        _check_cosine,
        _interval,
        _cosine_to_unit,
        _cosine_from_tails,
        _cosine_log_pdf,
    ),
    "sine": _Family(
        ("low", "high"),
        _check_sine,
        _interval,
        _sine_to_unit,
        _sine_from_tails,
        _sine_log_pdf,
    ),
    "uvol": _Family(
        ("low", "high"),
        _check_uvol,
        _interval,
        _uvol_to_unit,
        _uvol_from_tails,
        _uvol_log_pdf,
    ),
    "triangular": _Family(
        ("a", "c", "b"),
        _check_triangular,
        _triangle_base,
        _triangular_to_unit,
        _triangular_from_tails,
        _triangular_log_pdf,
    ),
}
_SCIPY = _Family((), None, None, _scipy_to_unit, _scipy_from_tails, _scipy_log_pdf)
_TYPES = (*_FAMILIES, "fixed")


def _as_number(value, index, name, spec):
    bad = isinstance(value, str | bytes | bool | np.bool_) or np.ndim(value) != 0
    try:
        number = None if bad else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number):
        raise ValueError(
            f"parameter {index}: {name} of {spec!r} must be a finite real number; got {value!r}"
        )
    return number


def _normalize_spec(spec, index):
    """Validate one spec; return it as a tuple of floats or as the frozen distribution."""
    if isinstance(spec, rv_frozen):
        if not isinstance(spec.dist, scipy.stats.rv_continuous):
            raise ValueError(
                f"parameter {index}: {_spec_repr(spec)} is discrete; the hypercube map needs a "
                "continuous 1-D scipy.stats distribution"
            )
        if not np.isfinite(spec.median()):
            raise ValueError(
                f"parameter {index}: {_spec_repr(spec)} has invalid shape parameters "
                f"(its median is {spec.median()!r})"
            )
        return spec
    if isinstance(spec, scipy.stats.rv_continuous):
        raise ValueError(
            f"parameter {index}: scipy.stats.{spec.name} is not frozen; pass a frozen 1-D "
            f"distribution such as scipy.stats.{spec.name}(...) with its shape, loc and scale"
        )
    if type(spec).__module__.startswith("scipy.stats"):
        raise ValueError(
            f"parameter {index}: {_spec_repr(spec)} is not a frozen 1-D continuous scipy.stats "
            "distribution such as scipy.stats.gamma(2.0)"
        )
    if not isinstance(spec, tuple | list) or not spec or not isinstance(spec[0], str):
        raise ValueError(
            f"parameter {index}: expected a tuple such as ('uniform', 0.0, 1.0) or a frozen "
            f"scipy.stats distribution; got {spec!r}"
        )
    name, *values = spec
    if name not in _TYPES:
        raise ValueError(
            f"parameter {index}: unknown prior type {name!r}; allowed are "
            f"{', '.join(map(repr, _TYPES))} or a frozen scipy.stats distribution"
        )
    arg_names = ("value",) if name == "fixed" else _FAMILIES[name].args
    if len(values) != len(arg_names):
        raise ValueError(
            f"parameter {index}: {name!r} takes {len(arg_names)} numbers "
            f"({', '.join(arg_names)}); got {len(values)} in {tuple(spec)!r}"
        )
    numbers = tuple(
        _as_number(value, index, arg, tuple(spec))
        for value, arg in zip(values, arg_names, strict=True)
    )
    problem = None if name == "fixed" else _FAMILIES[name].check(*numbers)
    if problem:
        raise ValueError(f"parameter {index}: {(name, *numbers)!r} {problem}")
    return (name, *numbers)


def _normalize_specs(specs):
    if isinstance(specs, rv_frozen) or (
        isinstance(specs, tuple) and specs and isinstance(specs[0], str)
    ):
        raise ValueError(
            f"prior must be a list of specs, e.g. [{_spec_repr(specs)}]; got the single "
            f"{_spec_repr(specs)}"
        )
    if not isinstance(specs, list | tuple) or not specs:
        raise ValueError(
            "prior must be a non-empty list of specs such as [('uniform', 0.0, 1.0)]; "
            f"got {specs!r}"
        )
    return [_normalize_spec(spec, index) for index, spec in enumerate(specs)]


def _normalize_marginalize(marginalize, n_parameters):
    if marginalize is None:
        return ()
    if isinstance(marginalize, int | np.integer):
        marginalize = [marginalize]
    try:
        indices = list(marginalize)
    except TypeError:
        raise ValueError(
            f"marginalize must be None, an int or a sequence of ints; got {marginalize!r}"
        ) from None
    for index in indices:
        if not isinstance(index, int | np.integer) or isinstance(index, bool):
            raise ValueError(f"marginalize must hold parameter indices (int); got {index!r}")
        if not -n_parameters <= index < n_parameters:
            raise ValueError(
                f"marginalize index {index} is out of range for {n_parameters} parameters; "
                f"allowed are {-n_parameters} <= index < {n_parameters}"
            )
    return tuple(sorted({int(index) % n_parameters for index in indices}))


def _check_bound(hypercube_bound):
    if (
        isinstance(hypercube_bound, bool)
        or not isinstance(hypercube_bound, int | float | np.integer | np.floating)
        or not 0 < hypercube_bound < math.inf
    ):
        raise ValueError(f"hypercube_bound must be a finite number > 0; got {hypercube_bound!r}")
    return float(hypercube_bound)


def _spec_repr(spec):
    """A spec as it would be written: ``('uniform', 0.0, 1.0)``, ``scipy.stats.norm(0, 2)``."""
    if isinstance(spec, rv_frozen):
        args = [_arg_repr(arg) for arg in spec.args]
        args += [f"{key}={_arg_repr(value)}" for key, value in spec.kwds.items()]
        return f"scipy.stats.{spec.dist.name}({', '.join(args)})"
    if type(spec).__module__.startswith("scipy.stats"):  # no useful repr of its own
        return f"a scipy.stats {type(spec).__name__}"
    return repr(spec)


class _Written:
    """A value whose repr is the text given (how a spec would be written)."""

    def __init__(self, text: str):
        self._text = text

    def __repr__(self) -> str:
        return self._text


def readable_prior(prior):
    """``prior`` with each spec of a list or tuple shown as it would be written.

    scipy's frozen distributions print as object addresses; in the returned list they
    print as ``scipy.stats.norm(0, 2)``. Anything else comes back unchanged. For reprs
    only: the returned specs are not specs.
    """
    if not isinstance(prior, list | tuple):
        return prior
    return type(prior)(_Written(_spec_repr(spec)) for spec in prior)


def _arg_repr(value):
    """A distribution argument as plain Python (``2.0``, not ``np.float64(2.0)``)."""
    if isinstance(value, np.ndarray | np.generic):
        return repr(value.tolist())
    return repr(value)


def _torch_seed(random_state) -> int:
    """A torch seed from ``random_state``: what scikit-learn accepts, or a numpy Generator."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(np.iinfo(np.int32).max))
    return draw_seed(random_state)


def _plan(specs, columns):
    """Vectorization plan for the marginals of ``columns`` (indices into theta).

    A list of ``(family, positions, args)``: ``positions`` index the sub-tensor
    ``theta[..., columns]``; ``args`` is a float64 array ``(n_args, len(positions))``
    for a torch family, or ``(dist,)`` for a scipy distribution (one per entry).
    """
    plan, grouped = [], {}
    for position, column in enumerate(columns):
        spec = specs[column]
        if isinstance(spec, rv_frozen):
            plan.append(("scipy", np.array([position]), (spec,)))
        else:
            grouped.setdefault(spec[0], []).append((position, spec[1:]))
    for name, members in grouped.items():
        positions = np.array([position for position, _ in members])
        args = np.array([values for _, values in members], dtype=np.float64).T
        plan.append((name, positions, args))
    return plan


def _columnwise(plan, method, inputs, like):
    """Apply each family's ``method`` to its columns of ``inputs``; shaped like ``like``."""
    out = torch.empty_like(like)
    for name, positions, args in plan:
        family = _SCIPY if name == "scipy" else _FAMILIES[name]
        if name != "scipy":
            args = tuple(_like(row, like) for row in args)
        index = torch.as_tensor(positions, device=like.device)
        out[..., index] = getattr(family, method)(*(x[..., index] for x in inputs), *args)
    return out


def _marginal_summary(spec):
    """``(low, high, median)`` of one marginal, as floats."""
    if isinstance(spec, rv_frozen):
        low, high = spec.support()
        return float(low), float(high), float(spec.median())
    name, *args = spec
    if name == "fixed":
        return args[0], args[0], args[0]
    family = _FAMILIES[name]
    half = torch.tensor([0.5], dtype=torch.float64)
    median = family.from_tails(
        half, half, *(torch.tensor([arg], dtype=torch.float64) for arg in args)
    )
    return (*family.support(*args), float(median))


# --------------------------------------------------------------------------- the prior


class FactorizedPrior:
    r"""Product of independent 1-D priors, with its maps onto the hypercube.

    Each free coordinate maps through its CDF, :math:`u_i = -b + 2b\,F_i(\theta_i)`,
    so the prior is uniform on :math:`[-b, b]^{d_u}`, and
    :math:`\log|\partial u / \partial\theta| = \sum_i \log(2b) + \log\pi_i(\theta_i)`.
    The marginals and their CDFs are listed in the :mod:`skfalcon.priors` docstring.

    Parameters
    ----------
    specs : list of tuple or scipy.stats frozen distribution
        One spec per parameter: ``("uniform", low, high)``, ``("normal", mean, std)``,
        ``("cosine", low, high)``, ``("sine", low, high)``, ``("uvol", low, high)``,
        ``("triangular", a, c, b)``, ``("fixed", value)``, or a frozen 1-D continuous
        ``scipy.stats`` distribution such as ``scipy.stats.gamma(2.0)``.
    marginalize : int or sequence of int, default=None
        Indices of nuisance parameters: drawn by :meth:`sample` but neither mapped
        onto the cube nor inferred.
    hypercube_bound : float, default=2.0
        Half-width :math:`b` of the cube :math:`[-b, b]^{d_u}`.

    Attributes
    ----------
    specs : list
        The specs, as tuples of floats (or the frozen distributions).
    marginalize : tuple of int
        The marginalized indices, sorted and non-negative.
    hypercube_bound : float
        The half-width :math:`b`.
    n_parameters : int
        Number of columns of the full theta, ``len(specs)``.
    fixed_mask : ndarray of shape (n_parameters,)
        True for ``"fixed"`` specs.
    marginalized_mask : ndarray of shape (n_parameters,)
        True for the indices in ``marginalize``.
    inferred_mask : ndarray of shape (n_parameters,)
        ``~marginalized_mask``: the columns a posterior sample returns.
    free_mask : ndarray of shape (n_parameters,)
        ``~fixed_mask & ~marginalized_mask``: the cube coordinates.
    n_free : int
        Number of cube coordinates, ``free_mask.sum()``.
    fixed_values : ndarray of shape (n_parameters,)
        The value of each fixed spec, NaN elsewhere.

    See Also
    --------
    make_prior : Build a prior from specs, or re-bound an existing one.

    Notes
    -----
    :meth:`sample` and :meth:`log_prob` take and return float64 numpy arrays of full
    parameter rows. The torch maps (:meth:`to_cube`, :meth:`from_cube`,
    :meth:`log_abs_det_jacobian`, :meth:`log_prob_tensor`, :meth:`in_support`) act on
    the free columns only, take tensors of any float dtype and device, and return the
    same dtype and device; :meth:`sample_tensor` draws full rows as a tensor. Theta
    outside the support is clamped onto it by :meth:`to_cube` (so it lands on a face of
    the cube), u outside the cube is clamped onto it by :meth:`from_cube`; the log
    densities are ``-inf`` there. Scipy marginals are evaluated in float64 numpy on the
    CPU and carry no gradient.

    Examples
    --------
    >>> import scipy.stats
    >>> import torch
    >>> from skfalcon.priors import FactorizedPrior
    >>> prior = FactorizedPrior([("uniform", 0.0, 10.0), scipy.stats.norm(0, 2), ("fixed", 3.0)])
    >>> prior  # doctest: +NORMALIZE_WHITESPACE
    FactorizedPrior([('uniform', 0.0, 10.0), scipy.stats.norm(0, 2), ('fixed', 3.0)],
                    marginalize=None, hypercube_bound=2.0)
    >>> prior.n_free
    2
    >>> theta = prior.sample(4, random_state=0)
    >>> theta.shape
    (4, 3)
    >>> prior.log_prob(theta).shape
    (4,)
    >>> u = prior.to_cube(torch.tensor([[5.0, 0.0]], dtype=torch.float64))
    >>> u
    tensor([[0., 0.]], dtype=torch.float64)
    >>> prior.from_cube(u)
    tensor([[5., 0.]], dtype=torch.float64)
    """

    def __init__(self, specs, *, marginalize=None, hypercube_bound=2.0):
        self.specs = _normalize_specs(specs)
        self.hypercube_bound = _check_bound(hypercube_bound)
        self.n_parameters = len(self.specs)
        self.marginalize = _normalize_marginalize(marginalize, self.n_parameters)

        is_fixed = [isinstance(spec, tuple) and spec[0] == "fixed" for spec in self.specs]
        self.fixed_mask = np.array(is_fixed, dtype=bool)
        self.marginalized_mask = np.zeros(self.n_parameters, dtype=bool)
        self.marginalized_mask[list(self.marginalize)] = True
        self.inferred_mask = ~self.marginalized_mask
        self.free_mask = ~self.fixed_mask & ~self.marginalized_mask
        self.n_free = int(self.free_mask.sum())
        self.fixed_values = np.array(
            [
                spec[1] if fixed else np.nan
                for spec, fixed in zip(self.specs, is_fixed, strict=True)
            ],
            dtype=np.float64,
        )

        summary = np.array([_marginal_summary(spec) for spec in self.specs], dtype=np.float64)
        self._low, self._high, self._median = summary.T
        self._free_plan = _plan(self.specs, np.flatnonzero(self.free_mask))
        self._drawn_plan = _plan(self.specs, np.flatnonzero(~self.fixed_mask))

    # ----------------------------------------------------------------- cube maps

    def to_cube(self, theta_free: torch.Tensor) -> torch.Tensor:
        r"""Map free parameters to the cube, :math:`u_i = -b + 2b\,F_i(\theta_i)`.

        Parameters
        ----------
        theta_free : Tensor of shape (..., n_free)
            Values outside the support are clamped onto it first.

        Returns
        -------
        Tensor of shape (..., n_free)
            u in :math:`[-b, b]`, same dtype and device.
        """
        theta = self._check(theta_free, "theta_free")
        low, high = self._bounds(theta)
        unit = _columnwise(self._free_plan, "to_unit", (theta.clamp(low, high),), theta)
        return self.hypercube_bound * unit.clamp(-1, 1)

    def from_cube(self, u: torch.Tensor) -> torch.Tensor:
        r"""Map cube coordinates to free parameters, :math:`\theta_i = F_i^{-1}((u_i + b) / 2b)`.

        Parameters
        ----------
        u : Tensor of shape (..., n_free)
            Values outside :math:`[-b, b]` are clamped onto it first.

        Returns
        -------
        Tensor of shape (..., n_free)
            theta_free in the support, same dtype and device.
        """
        u = self._check(u, "u")
        b = self.hypercube_bound
        u = u.clamp(-b, b)
        return self._from_tails(
            self._free_plan, (b + u) / (2 * b), (b - u) / (2 * b), self.free_mask
        )

    def log_abs_det_jacobian(self, theta_free: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`\sum_i \log|\partial u_i / \partial\theta_i| = n_{free}\log(2b) + \log\pi(\theta)`.

        Parameters
        ----------
        theta_free : Tensor of shape (..., n_free)

        Returns
        -------
        Tensor of shape (...,)
            ``-inf`` outside the support.
        """
        return self.log_prob_tensor(theta_free) + self.n_free * math.log(2 * self.hypercube_bound)

    def in_support(self, theta_free: torch.Tensor) -> torch.Tensor:
        """Return whether every free coordinate is finite and within its support.

        Parameters
        ----------
        theta_free : Tensor of shape (..., n_free)

        Returns
        -------
        Tensor of bool, shape (...,)
        """
        theta = self._check(theta_free, "theta_free")
        return self._inside(theta).all(dim=-1)

    def log_prob_tensor(self, theta_free: torch.Tensor) -> torch.Tensor:
        r"""Return the prior log density of the free coordinates, :math:`\sum_i \log\pi_i(\theta_i)`.

        The torch counterpart of :meth:`log_prob`, on the free columns only.

        Parameters
        ----------
        theta_free : Tensor of shape (..., n_free)

        Returns
        -------
        Tensor of shape (...,)
            ``-inf`` outside the support (and for NaN), never NaN.
        """
        theta = self._check(theta_free, "theta_free")
        return self._log_density(theta, self._free_plan, self.free_mask)

    # ----------------------------------------------------------------- sampling

    def sample(self, n: int, random_state=None) -> np.ndarray:
        """Draw ``n`` full parameter rows from the prior.

        Marginalized columns are drawn from their marginals like the others; fixed
        columns hold their value.

        Parameters
        ----------
        n : int
            Number of draws, ``>= 0``.
        random_state : int, RandomState instance, Generator or None, default=None
            Seed of the draw, as in scikit-learn; a :class:`numpy.random.Generator` is
            accepted too. ``None`` draws from numpy's global generator.

        Returns
        -------
        theta : ndarray of shape (n, n_parameters)
            float64.

        Examples
        --------
        >>> from skfalcon.priors import FactorizedPrior
        >>> prior = FactorizedPrior([("uniform", 0.0, 10.0), ("fixed", 3.0)])
        >>> theta = prior.sample(4, random_state=0)
        >>> theta.shape, theta.dtype.name
        ((4, 2), 'float64')
        >>> bool((theta == prior.sample(4, random_state=0)).all())
        True
        >>> theta[:, 1].tolist()
        [3.0, 3.0, 3.0, 3.0]
        """
        generator = torch.Generator().manual_seed(_torch_seed(random_state))
        return self.sample_tensor(n, generator=generator).numpy()

    def log_prob(self, theta) -> np.ndarray:
        r"""Return the prior log density of rows of ``theta``, :math:`\sum_i \log\pi_i(\theta_i)`.

        Fixed columns contribute nothing where they hold their value.

        Parameters
        ----------
        theta : array-like of shape (n, n_parameters) or (n_parameters,)
            All prior columns; or only those not marginalized, ``(n, n_inferred)``, as
            a posterior sample has them, for the prior density of those columns.

        Returns
        -------
        log_prob : ndarray of shape (n,)
            float64; ``-inf`` outside the support (a fixed column off its value
            included). A single row of shape ``(n_parameters,)`` gives shape ``(1,)``.

        Raises
        ------
        ValueError
            If ``theta`` holds NaN or has another number of columns.

        Examples
        --------
        >>> from skfalcon.priors import FactorizedPrior
        >>> prior = FactorizedPrior([("uniform", 0.0, 10.0), ("normal", 0.0, 1.0)])
        >>> prior.log_prob([[5.0, 0.0], [11.0, 0.0]]).round(4).tolist()
        [-3.2215, -inf]
        """
        theta = self._check_rows(theta)
        full = theta.shape[1] == self.n_parameters
        columns = np.ones(self.n_parameters, dtype=bool) if full else self.inferred_mask
        fixed = self.fixed_mask[columns]
        mask = ~self.fixed_mask if full else self.free_mask
        plan = self._drawn_plan if full else self._free_plan
        log_p = self._log_density(torch.as_tensor(theta[:, ~fixed]), plan, mask).numpy()
        on_value = (theta[:, fixed] == self.fixed_values[columns][fixed]).all(axis=1)
        return np.where(on_value, log_p, -np.inf)

    def sample_tensor(
        self,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> torch.Tensor:
        """Draw full parameter vectors from the prior, as a tensor.

        The torch counterpart of :meth:`sample`. For every non-fixed column,
        marginalized ones included, u is drawn uniform on the cube (as
        :math:`F = (u + b) / 2b`, uniform on [0, 1), in float64 on ``generator``'s
        device) and mapped back as in :meth:`from_cube`; fixed columns hold their
        value. The draws depend on ``generator`` only, not on ``dtype`` or ``device``.

        Parameters
        ----------
        n : int
            Number of draws.
        generator : torch.Generator, default=None
            Source of randomness; None uses torch's global generator.
        dtype : torch.dtype, default=torch.float64
        device : str or torch.device, default="cpu"

        Returns
        -------
        Tensor of shape (n, n_parameters)
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n must be an int >= 0; got {n!r}")
        drawn = ~self.fixed_mask
        source = generator.device if generator is not None else torch.device("cpu")
        lower = torch.rand(
            int(n), int(drawn.sum()), generator=generator, dtype=torch.float64, device=source
        )
        theta = torch.empty(int(n), self.n_parameters, dtype=torch.float64, device=source)
        theta[:, torch.as_tensor(self.fixed_mask, device=source)] = _like(
            self.fixed_values[self.fixed_mask], theta
        )
        theta[:, torch.as_tensor(drawn, device=source)] = self._from_tails(
            self._drawn_plan, lower, 1 - lower, drawn
        )
        return theta.to(dtype=dtype, device=device)

    # ----------------------------------------------------------------- parameter space
    # The numpy interface the estimator and the sequential loop use; Standardizer has
    # the same one for prior=None.

    #: Whether this is a known prior (the posterior is then relative to it, and the cube's
    #: uniform density can serve as the exact marginal).
    is_prior = True

    @property
    def n_inferred(self) -> int:
        """Number of columns a posterior sample has (parameters not marginalized)."""
        return int(self.inferred_mask.sum())

    @property
    def cube_bound(self) -> float:
        """Half-width :math:`b` of the cube of the u coordinates."""
        return self.hypercube_bound

    @property
    def cube_log_density(self) -> float:
        r"""Log-density of the prior in u, :math:`-n_{free} \log(2b)`."""
        return -self.n_free * math.log(2 * self.hypercube_bound)

    def theta_to_u(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Map rows of ``theta`` to u, with :math:`\log|\partial u / \partial\theta|` and support.

        Parameters
        ----------
        theta : ndarray of shape (n, n_parameters) or (n, n_inferred)
            All columns, or only those not marginalized.

        Returns
        -------
        u : ndarray of shape (n, n_free)
        log_abs_det_jacobian : ndarray of shape (n,)
        in_support : ndarray of bool, shape (n,)
            Every free coordinate inside its support and every fixed one at its value.
        """
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape[-1] == self.n_parameters:
            theta = theta[..., self.inferred_mask]
        free = self.free_mask[self.inferred_mask]
        fixed_values = self.fixed_values[self.inferred_mask][~free]
        theta_free = torch.as_tensor(theta[..., free])
        u = self.to_cube(theta_free).numpy()
        log_jac = self.log_abs_det_jacobian(theta_free).numpy()
        support = self.in_support(theta_free).numpy() & (theta[..., ~free] == fixed_values).all(-1)
        return u, log_jac, support

    def u_to_theta(self, u: np.ndarray) -> np.ndarray:
        """Map u of shape ``(..., n_free)`` to ``theta`` of shape ``(..., n_inferred)``."""
        u = np.asarray(u, dtype=np.float64)
        free = self.free_mask[self.inferred_mask]
        theta = np.empty(u.shape[:-1] + (len(free),))
        theta[..., free] = self.from_cube(torch.as_tensor(u)).numpy()
        theta[..., ~free] = self.fixed_values[self.inferred_mask][~free]
        return theta

    def complete(self, u: np.ndarray, random_state=None) -> np.ndarray:
        """Full parameter rows ``(n, n_parameters)``: free columns from u ``(n, n_free)``,
        marginalized ones drawn from the prior, fixed ones at their value."""
        u = np.asarray(u, dtype=np.float64)
        theta = self.sample(len(u), random_state)
        theta[:, self.free_mask] = self.from_cube(torch.as_tensor(u)).numpy()
        return theta

    def cube_box(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole cube as a box ``(low, high)``, each of shape ``(n_free,)``."""
        bound = np.full(self.n_free, self.hypercube_bound)
        return -bound, bound

    def box_around(self, theta: np.ndarray, tail: float) -> tuple[np.ndarray, np.ndarray]:
        """The box in u between each coordinate's ``tail`` and ``1 - tail`` quantiles of
        the rows ``theta`` (all columns, or the inferred ones)."""
        u = self.theta_to_u(theta)[0]
        return np.quantile(u, tail, axis=0), np.quantile(u, 1.0 - tail, axis=0)

    def box_volume(self, low: np.ndarray, high: np.ndarray) -> float:
        """The box's share of the cube's volume, which is its prior probability."""
        return float(np.prod((np.asarray(high) - low) / (2 * self.hypercube_bound)))

    def box_to_theta(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """The box ``[low, high]`` in u as bounds ``(2, n_parameters)`` on ``theta``.

        Each coordinate maps through its own monotone transform, so a box stays a box.
        Fixed columns are bounded by their value, marginalized ones not at all.
        """
        box = np.tile(np.array([[-np.inf], [np.inf]]), (1, self.n_parameters))
        box[:, self.fixed_mask] = self.fixed_values[self.fixed_mask]
        u = torch.as_tensor(np.stack([low, high]), dtype=torch.float64)
        box[:, self.free_mask] = self.from_cube(u).numpy()
        return box

    def sample_box(self, low, high, n: int, random_state=None) -> np.ndarray:
        """Draw ``n`` full rows from the prior restricted to the box ``[low, high]`` in u.

        The prior is uniform in u, so its restriction to a box is uniform on the box and
        its density there is the prior's times ``1 / box_volume``. Marginalized and fixed
        columns are as in :meth:`complete`.
        """
        if not isinstance(random_state, np.random.Generator):
            random_state = check_random_state(random_state)
        u = random_state.uniform(low, high, size=(n, len(low)))
        return self.complete(u, random_state)

    # ----------------------------------------------------------------- helpers

    def _check(self, tensor, name):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise TypeError(
                f"{name} must be a floating-point torch.Tensor; got {type(tensor).__name__}"
                + (f" of dtype {tensor.dtype}" if isinstance(tensor, torch.Tensor) else "")
            )
        if tensor.ndim == 0 or tensor.shape[-1] != self.n_free:
            raise ValueError(
                f"{name} must have shape (..., {self.n_free}), one column per free parameter; "
                f"got shape {tuple(tensor.shape)}"
            )
        return tensor

    def _bounds(self, like, mask=None):
        mask = self.free_mask if mask is None else mask
        return _like(self._low[mask], like), _like(self._high[mask], like)

    def _inside(self, theta, mask=None):
        low, high = self._bounds(theta, mask)
        return (theta >= low) & (theta <= high) & theta.isfinite()

    def _log_density(self, theta, plan, mask):
        """Summed log densities of the columns ``mask`` selects; ``-inf`` outside the support."""
        inside = self._inside(theta, mask)
        # evaluate outside points at the median so that no branch sees NaN or gradients blow up
        median = _like(self._median[mask], theta)
        safe = torch.where(inside, theta, median)
        log_pdf = _columnwise(plan, "log_pdf", (safe,), theta).sum(dim=-1)
        return log_pdf.masked_fill(~inside.all(dim=-1), -math.inf)

    def _check_rows(self, theta):
        """``theta`` as float64 ``(n, n_parameters)`` or ``(n, n_inferred)``, without NaN."""
        array = to_float_array(
            theta, "theta", ensure_all_finite=False, ensure_min_samples=0, allow_nd=True
        )
        rows = array[None, :] if array.ndim == 1 else array
        if rows.ndim != 2 or rows.shape[1] not in (self.n_parameters, self.n_inferred):
            inferred = f" or (n, {self.n_inferred}) without the marginalized ones"
            raise ValueError(
                f"theta has shape {array.shape}; expected (n, {self.n_parameters}), one column "
                f"per prior parameter{inferred if self.marginalize else ''}."
            )
        if np.isnan(rows).any():
            row = int(np.flatnonzero(np.isnan(rows).any(axis=1))[0])
            raise ValueError(
                f"theta holds NaN in {int(np.isnan(rows).any(axis=1).sum())} of {len(rows)} "
                f"rows (first: row {row}, theta={rows[row].tolist()}); the prior density is "
                "defined for numbers only."
            )
        return rows

    def _from_tails(self, plan, lower, upper, mask):
        theta = _columnwise(plan, "from_tails", (lower, upper), lower)
        low, high = self._bounds(theta, mask)
        return theta.clamp(low, high)

    def __repr__(self):
        specs = ", ".join(_spec_repr(spec) for spec in self.specs)
        marginalize = list(self.marginalize) if self.marginalize else None
        return (
            f"{type(self).__name__}([{specs}], marginalize={marginalize}, "
            f"hypercube_bound={self.hypercube_bound!r})"
        )


def make_prior(prior, *, marginalize=None) -> FactorizedPrior:
    """Return a :class:`FactorizedPrior` from specs, or adapt an existing one.

    Parameters
    ----------
    prior : FactorizedPrior or list of specs
        A prior, returned as is when ``marginalize`` matches it (or is ``None``) and
        rebuilt with it otherwise, keeping its own ``hypercube_bound``; or the ``specs``
        of a new one.
    marginalize : int or sequence of int, default=None
        Indices of nuisance parameters. None keeps a given prior's own.

    Returns
    -------
    FactorizedPrior
    """
    if not isinstance(prior, FactorizedPrior):
        return FactorizedPrior(prior, marginalize=marginalize)
    if marginalize is None:
        return prior
    indices = _normalize_marginalize(marginalize, prior.n_parameters)
    if indices == prior.marginalize:
        return prior
    return FactorizedPrior(prior.specs, marginalize=indices, hypercube_bound=prior.hypercube_bound)


class Standardizer:
    r"""The parameter space of an unknown prior: :math:`u = (\theta - \mu) / \sigma`.

    Serves ``prior=None``. It has the parameter-space interface of
    :class:`FactorizedPrior` (``theta_to_u``, ``u_to_theta``, ``n_free``, ...) with
    :math:`\mu, \sigma` the mean and standard deviation of the training ``theta``
    (computed in float64; a constant column keeps :math:`\sigma = 1`), every value in
    the support, and no cube: ``is_prior`` is ``False`` and ``cube_bound`` ``None``.

    Parameters
    ----------
    shift, scale : array-like of shape (n_parameters,)
        :math:`\mu` and :math:`\sigma`.
    """

    is_prior = False
    cube_bound = None

    def __init__(self, shift, scale):
        self.shift = np.asarray(shift, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.n_parameters = self.n_inferred = self.n_free = len(self.shift)

    @classmethod
    def fit(cls, theta: np.ndarray) -> Standardizer:
        """Fit to the training rows ``theta`` ``(n, n_parameters)``.

        Raises
        ------
        ValueError
            If the mean or the spread of a column overflows float64.
        """
        theta = np.asarray(theta, dtype=np.float64)
        if len(theta) < 2:
            return cls(np.zeros(theta.shape[1]), np.ones(theta.shape[1]))
        with np.errstate(over="ignore", invalid="ignore"):
            shift, spread = theta.mean(axis=0), theta.std(axis=0)
        bad = ~(np.isfinite(shift) & np.isfinite(spread))
        if bad.any():
            column = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"theta (X) column {column} cannot be standardized: its mean or spread "
                f"overflows float64 (largest magnitude {np.abs(theta[:, column]).max():.3g}). "
                "Rescale theta, or pass its prior as prior=[...]."
            )
        return cls(shift, np.where(spread > 0, spread, 1.0))

    def theta_to_u(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``u``, the log-Jacobian :math:`-\\sum_i \\log \\sigma_i` and support (all true)."""
        theta = np.asarray(theta, dtype=np.float64)
        u = (theta - self.shift) / self.scale
        log_jac = np.full(theta.shape[:-1], -np.log(self.scale).sum())
        return u, log_jac, np.ones(theta.shape[:-1], dtype=bool)

    def u_to_theta(self, u: np.ndarray) -> np.ndarray:
        """:math:`\\theta = \\mu + \\sigma u`."""
        return np.asarray(u, dtype=np.float64) * self.scale + self.shift

    def __repr__(self):
        return f"{type(self).__name__}(shift={self.shift.tolist()}, scale={self.scale.tolist()})"
