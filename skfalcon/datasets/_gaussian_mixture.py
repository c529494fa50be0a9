"""The Gaussian mixture task and its exact posterior (see the :mod:`skfalcon.datasets` docstring)."""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import logsumexp
from sklearn.utils import check_random_state

from skfalcon.datasets._base import (
    _check_rows,
    _check_theta_x,
    _check_vector,
    _UniformBoxTask,
)
from skfalcon.utils.validation import check_positive_int

__all__ = ["GaussianMixture"]

_BOUND = 10.0
_SCALES = np.array([1.0, 0.1])
_WEIGHTS = np.array([0.5, 0.5])


def _log_mixture(diff: np.ndarray) -> np.ndarray:
    """Log density of the two-component isotropic mixture at ``diff``, shape ``(n,)``."""
    per_component = [
        np.log(w) + stats.norm(0.0, s).logpdf(diff).sum(axis=-1)
        for w, s in zip(_WEIGHTS, _SCALES, strict=True)
    ]
    return logsumexp(per_component, axis=0)


class GaussianMixture(_UniformBoxTask):
    r"""Mean of a two-component Gaussian mixture, under a flat prior on :math:`[-10, 10]^2`.

    One 2-D draw :math:`x` from :math:`\frac12 \mathcal{N}(\theta, I) + \frac12
    \mathcal{N}(\theta, 0.01 I)`. The posterior, a broad and a narrow Gaussian at
    :math:`x` truncated to the box, is exact: :meth:`log_posterior` is normalized and
    :meth:`reference_posterior` samples it exactly (see the :mod:`skfalcon.datasets`
    docstring). Validated in the tests by the moments of exact samples against the
    analytic ones and by :meth:`log_posterior` integrating to one on a grid.

    Attributes
    ----------
    prior : list of tuple
        ``[("uniform", -10.0, 10.0)] * 2``, a skfalcon prior spec list.
    n_parameters : int
        Number of parameters, 2.
    n_features : int
        Number of observed features, 2.

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon.datasets import GaussianMixture
    >>> task = GaussianMixture()
    >>> samples = task.reference_posterior([0.0, 9.9], 1000, random_state=0)
    >>> bool(np.all(samples <= 10.0))
    True
    """

    bound = _BOUND
    n_parameters = 2
    n_features = 2

    def __repr__(self) -> str:
        return "GaussianMixture()"

    def simulate(self, theta, random_state=None) -> np.ndarray:
        """Run the simulator once per row of ``theta``.

        Parameters
        ----------
        theta : array-like of shape (n, 2)
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        x : ndarray of shape (n, 2)
        """
        theta = _check_rows(theta, "theta", self.n_parameters)
        rng = check_random_state(random_state)
        component = rng.choice(len(_WEIGHTS), size=theta.shape[0], p=_WEIGHTS)
        return theta + _SCALES[component, None] * rng.standard_normal(theta.shape)

    def log_likelihood(self, theta, x) -> np.ndarray:
        """Exact log density of ``x`` given ``theta``.

        Parameters
        ----------
        theta : array-like of shape (n, 2)
        x : array-like of shape (2,) or (n, 2)

        Returns
        -------
        log_likelihood : ndarray of shape (n,)
        """
        theta, x = _check_theta_x(theta, x, self.n_parameters, self.n_features)
        return _log_mixture(x - theta)

    @staticmethod
    def _component_log_masses(x_obs: np.ndarray) -> np.ndarray:
        """Log of each component's weight times its mass inside the box, shape ``(2,)``."""
        inside = [
            stats.norm(x_obs, s).cdf(_BOUND) - stats.norm(x_obs, s).cdf(-_BOUND) for s in _SCALES
        ]
        with np.errstate(divide="ignore"):
            return np.log(_WEIGHTS) + np.log(inside).sum(axis=1)

    def log_posterior(self, theta, x_obs) -> np.ndarray:
        """Exact, normalized log density of the posterior of one observation.

        Parameters
        ----------
        theta : array-like of shape (n, 2)
        x_obs : array-like of shape (2,)

        Returns
        -------
        log_posterior : ndarray of shape (n,)
            ``-inf`` outside the prior box.

        Raises
        ------
        ValueError
            If ``x_obs`` is so far outside the box that the posterior mass inside
            underflows.
        """
        theta = _check_rows(theta, "theta", self.n_parameters)
        x_obs = _check_vector(x_obs, "x_obs", self.n_features)
        log_z = logsumexp(self._check_masses(x_obs))
        return np.where(
            self.log_prior(theta) > -np.inf, _log_mixture(theta - x_obs) - log_z, -np.inf
        )

    def _check_masses(self, x_obs):
        log_masses = self._component_log_masses(x_obs)
        if not np.any(np.isfinite(log_masses)):
            raise ValueError(
                f"x_obs={x_obs.tolist()} is too far outside the prior box [-10, 10]^2: "
                "the posterior mass inside it underflows to zero."
            )
        return log_masses

    def reference_posterior(self, x_obs, n_samples: int, random_state=None) -> np.ndarray:
        """Draw exact samples from the posterior of one observation.

        Parameters
        ----------
        x_obs : array-like of shape (2,)
        n_samples : int
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        theta : ndarray of shape (n_samples, 2)
        """
        x_obs = _check_vector(x_obs, "x_obs", self.n_features)
        n_samples = check_positive_int(n_samples, "n_samples")
        rng = check_random_state(random_state)
        log_masses = self._check_masses(x_obs)
        p = np.exp(log_masses - logsumexp(log_masses))
        component = rng.choice(len(_WEIGHTS), size=n_samples, p=p)
        scale = _SCALES[component, None]
        low, high = (-_BOUND - x_obs) / scale, (_BOUND - x_obs) / scale
        return stats.truncnorm(low, high, loc=x_obs, scale=scale).rvs(
            size=(n_samples, self.n_parameters), random_state=rng
        )
