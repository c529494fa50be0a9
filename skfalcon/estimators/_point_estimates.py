"""Point estimates of a fitted posterior: its mean, its median and its mode (MAP)."""

import functools
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from skfalcon.engine.optimize import posterior_mode
from skfalcon.utils.validation import check_positive_int

__all__ = ["point_estimate"]

_METHODS = ("mean", "median", "map")


def point_estimate(
    estimator,
    x,
    method: str = "mean",
    *,
    n_samples: int = 1000,
    random_state=None,
    max_iter: int = 200,
    tol: float = 1e-6,
) -> np.ndarray:
    r"""A point estimate of ``theta`` given each observation: posterior mean, median or mode.

    Parameters
    ----------
    estimator : FlowPosteriorEstimator
        A fitted estimator.
    x : array-like or dict
        One observation or several, as :meth:`FlowPosteriorEstimator.sample` takes them.
    method : {"mean", "median", "map"}, default="mean"
        ``"mean"``: the mean of ``n_samples`` posterior samples. ``"median"``: their
        coordinate-wise median (each parameter's marginal median). ``"map"``: the mode of
        the normalized posterior density :math:`p(\theta \mid x)` in ``theta`` space, by
        L-BFGS gradient ascent started from the sample of highest density. The ascent runs
        in the flows' unconstrained probit coordinates of the cube, on the density of
        ``theta`` evaluated there, so it finds the ``theta``-space mode (which moves
        under a change of variables, unlike the mean and the median) and never leaves the
        prior's support (see :mod:`skfalcon.engine.optimize`).
    n_samples : int, default=1000
        Posterior samples per observation.
    random_state : int, RandomState instance or None, default=None
        Seed of the samples; ``None`` falls back to the estimator's ``random_state``.
    max_iter : int, default=200
        The most L-BFGS iterations (``"map"`` only).
    tol : float, default=1e-6
        Convergence tolerance of ``"map"``: the search of an observation stops when an
        iteration changes its log-density by less than ``tol`` nats or its point by less
        than ``tol`` in probit units (or the gradient all but vanishes). A
        ``ConvergenceWarning`` names the observations whose search spent ``max_iter``
        iterations first; their estimate is the best point found.

    Returns
    -------
    theta : ndarray
        float64, of shape ``(n_parameters,)`` for one observation and
        ``(n_observations, n_parameters)`` for several.

    Notes
    -----
    The sample-based estimates carry Monte Carlo error of about the posterior standard
    deviation over :math:`\sqrt{n\_samples}`. Marginalized parameters are not estimated;
    fixed ones are returned at their value.

    Examples
    --------
    >>> from skfalcon import FlowPosteriorEstimator, point_estimate
    >>> from skfalcon.datasets import GaussianLinear
    >>> task = GaussianLinear(n_dims=2)
    >>> theta = task.sample_prior(300, random_state=0)
    >>> x = task.simulate(theta, random_state=1)
    >>> est = FlowPosteriorEstimator(prior=task.prior, max_epochs=2, random_state=0)
    >>> est = est.fit(theta, x)
    >>> point_estimate(est, x[0], "map").shape
    (2,)
    >>> point_estimate(est, x[:3], "median").shape
    (3, 2)
    """
    check_is_fitted(estimator, "network_")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}; got {method!r}")
    n_samples = check_positive_int(n_samples, "n_samples")
    max_iter = check_positive_int(max_iter, "max_iter")
    if isinstance(tol, bool) or not isinstance(tol, int | float | np.number) or not tol > 0:
        raise ValueError(f"tol must be a number > 0; got {tol!r}")
    samples = np.asarray(estimator.sample(x, n_samples, random_state=random_state))
    single = samples.ndim == 2
    samples = samples[None] if single else samples
    if method == "mean":
        estimate = samples.mean(axis=1)
    elif method == "median":
        estimate = np.median(samples, axis=1)
    else:
        estimate = _map(estimator, x, samples, max_iter, float(tol))
    return estimate[0] if single else estimate


def _map(estimator, x, samples: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """The ``theta``-space modes ``(m, n_parameters)``, started from ``samples``
    ``(m, n, n_parameters)``."""
    space, device = estimator.parameter_space_, estimator.device_
    x2d, _ = estimator._check_observations(x)
    log_z = None
    if space.is_prior:
        log_z = torch.as_tensor(estimator._log_normalizers(x2d)[0])
    u = torch.as_tensor(space.theta_to_u(samples)[0], device=device)
    with torch.no_grad():
        summary = estimator._summaries(x2d)
    mode = posterior_mode(
        estimator.network_,
        summary,
        u,
        log_z=log_z,
        log_jacobian=_jacobian_of(space),
        max_iter=max_iter,
        tol=tol,
    )
    missed = ~mode.converged.cpu().numpy()
    if missed.any():
        warnings.warn(
            f"The MAP search did not converge for {int(missed.sum())} of {len(missed)} "
            f"observation(s) (first: {int(np.flatnonzero(missed)[0])}) within max_iter="
            f"{max_iter} iterations at tol={tol}. The estimate is the best point found; "
            "raise max_iter or tol.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return space.u_to_theta(mode.u.cpu().numpy())


def _jacobian_of(space):
    r""":math:`J(u) = \log|\partial u / \partial \theta|` as a torch function of ``u``, or
    ``None`` where it is constant (no prior: a standardization)."""
    if not space.is_prior:
        return None
    return functools.partial(_prior_log_jacobian, space)


def _prior_log_jacobian(prior, u: torch.Tensor) -> torch.Tensor:
    return prior.log_abs_det_jacobian(prior.from_cube(u))
