"""The Gaussian linear task and its analytic posterior (see the package docstring)."""

from __future__ import annotations

import numbers

import numpy as np
from scipy import stats
from sklearn.utils import check_random_state, check_scalar

from skfalcon.datasets._base import _check_rows, _check_theta_x, _check_vector, _SimulationTask
from skfalcon.utils.validation import check_positive_int

__all__ = ["GaussianLinear", "make_gaussian_linear"]


class GaussianLinear(_SimulationTask):
    r"""Gaussian prior and Gaussian noise in ``n_dims`` dimensions.

    :math:`\theta \sim \mathcal{N}(0, \sigma_0^2 I_d)` and
    :math:`x \sim \mathcal{N}(\theta, \sigma^2 I_d)`; the posterior is Gaussian
    with mean :math:`\frac{\sigma_0^2}{\sigma_0^2 + \sigma^2} x` and covariance
    :math:`\frac{\sigma_0^2 \sigma^2}{\sigma_0^2 + \sigma^2} I_d`.

    Parameters
    ----------
    n_dims : int, default=10
        Dimension ``d`` of both ``theta`` and ``x``.
    prior_var : float, default=0.1
        Prior variance :math:`\sigma_0^2` of each parameter.
    noise_var : float, default=0.1
        Noise variance :math:`\sigma^2` of each feature.

    Attributes
    ----------
    prior : list of tuple
        ``[("normal", 0.0, sqrt(prior_var))] * n_dims``, a skfalcon prior spec list.
    n_parameters : int
        Equal to ``n_dims``.
    n_features : int
        Equal to ``n_dims``.

    See Also
    --------
    make_gaussian_linear : Draw ``(theta, x)`` pairs from the prior predictive.
    TwoMoons : A task with a bimodal, crescent-shaped posterior.

    Examples
    --------
    >>> from skfalcon.datasets import GaussianLinear
    >>> task = GaussianLinear(n_dims=3)
    >>> mean, cov = task.posterior_mean_cov([0.2, 0.0, -0.2])
    >>> mean.round(2).tolist(), round(float(cov[0, 0]), 3)
    ([0.1, 0.0, -0.1], 0.05)
    """

    def __init__(self, n_dims: int = 10, prior_var: float = 0.1, noise_var: float = 0.1):
        self.n_dims = check_positive_int(n_dims, "n_dims")
        check_scalar(
            prior_var, "prior_var", numbers.Real, min_val=0.0, include_boundaries="neither"
        )
        check_scalar(
            noise_var, "noise_var", numbers.Real, min_val=0.0, include_boundaries="neither"
        )
        self.prior_var = float(prior_var)
        self.noise_var = float(noise_var)
        self.n_parameters = self.n_dims
        self.n_features = self.n_dims

    @property
    def prior(self) -> list:
        """The prior as a skfalcon prior spec list (a fresh list on each access)."""
        return [("normal", 0.0, float(np.sqrt(self.prior_var)))] * self.n_dims

    def __repr__(self) -> str:
        return (
            f"GaussianLinear(n_dims={self.n_dims}, prior_var={self.prior_var}, "
            f"noise_var={self.noise_var})"
        )

    @property
    def _prior_dist(self):
        return stats.norm(loc=0.0, scale=np.sqrt(self.prior_var))

    def sample_prior(self, n: int, random_state=None) -> np.ndarray:
        """Draw parameters from the prior.

        Parameters
        ----------
        n : int
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        theta : ndarray of shape (n, n_dims)
        """
        n = check_positive_int(n, "n")
        rng = check_random_state(random_state)
        return self._prior_dist.rvs(size=(n, self.n_dims), random_state=rng)

    def log_prior(self, theta) -> np.ndarray:
        """Log density of the prior.

        Parameters
        ----------
        theta : array-like of shape (n, n_dims)

        Returns
        -------
        log_prior : ndarray of shape (n,)
        """
        theta = _check_rows(theta, "theta", self.n_parameters)
        return self._prior_dist.logpdf(theta).sum(axis=1)

    def simulate(self, theta, random_state=None) -> np.ndarray:
        """Run the simulator once per row of ``theta``.

        Parameters
        ----------
        theta : array-like of shape (n, n_dims)
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        x : ndarray of shape (n, n_dims)
        """
        theta = _check_rows(theta, "theta", self.n_parameters)
        rng = check_random_state(random_state)
        return stats.norm(loc=theta, scale=np.sqrt(self.noise_var)).rvs(
            size=theta.shape, random_state=rng
        )

    def log_likelihood(self, theta, x) -> np.ndarray:
        """Exact log density of ``x`` given ``theta``.

        Parameters
        ----------
        theta : array-like of shape (n, n_dims)
        x : array-like of shape (n_dims,) or (n, n_dims)
            One observation, broadcast over the rows of ``theta``, or one
            observation per row.

        Returns
        -------
        log_likelihood : ndarray of shape (n,)
        """
        theta, x = _check_theta_x(theta, x, self.n_parameters, self.n_features)
        return stats.norm(loc=theta, scale=np.sqrt(self.noise_var)).logpdf(x).sum(axis=1)

    def posterior_mean_cov(self, x_obs) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of the analytic posterior of one observation.

        Parameters
        ----------
        x_obs : array-like of shape (n_dims,)

        Returns
        -------
        mean : ndarray of shape (n_dims,)
        cov : ndarray of shape (n_dims, n_dims)
        """
        x_obs = _check_vector(x_obs, "x_obs", self.n_features)
        shrinkage = self.prior_var / (self.prior_var + self.noise_var)
        return shrinkage * x_obs, shrinkage * self.noise_var * np.eye(self.n_dims)

    def log_posterior(self, theta, x_obs) -> np.ndarray:
        """Exact, normalized log density of the posterior of one observation.

        Parameters
        ----------
        theta : array-like of shape (n, n_dims)
        x_obs : array-like of shape (n_dims,)

        Returns
        -------
        log_posterior : ndarray of shape (n,)
        """
        theta = _check_rows(theta, "theta", self.n_parameters)
        mean, cov = self.posterior_mean_cov(x_obs)
        return np.atleast_1d(stats.multivariate_normal(mean, cov).logpdf(theta))

    def reference_posterior(self, x_obs, n_samples: int, random_state=None) -> np.ndarray:
        """Draw exact samples from the analytic posterior of one observation.

        Parameters
        ----------
        x_obs : array-like of shape (n_dims,)
        n_samples : int
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        theta : ndarray of shape (n_samples, n_dims)
        """
        mean, cov = self.posterior_mean_cov(x_obs)
        n_samples = check_positive_int(n_samples, "n_samples")
        rng = check_random_state(random_state)
        return stats.norm(loc=mean, scale=np.sqrt(np.diag(cov))).rvs(
            size=(n_samples, self.n_dims), random_state=rng
        )


def make_gaussian_linear(
    n_samples: int = 1000, *, n_dims: int = 10, random_state=None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(theta, x)`` pairs of the Gaussian linear task from its prior predictive.

    Uses the default variances of :class:`GaussianLinear` (0.1 for prior and noise).

    Parameters
    ----------
    n_samples : int, default=1000
        Number of simulations.
    n_dims : int, default=10
        Dimension of ``theta`` and ``x``.
    random_state : int, RandomState instance or None, default=None
        Seed or generator for reproducible simulations.

    Returns
    -------
    theta : ndarray of shape (n_samples, n_dims)
    x : ndarray of shape (n_samples, n_dims)

    See Also
    --------
    GaussianLinear : The task, with its likelihood and analytic posterior.

    Examples
    --------
    >>> from skfalcon.datasets import make_gaussian_linear
    >>> theta, x = make_gaussian_linear(200, n_dims=3, random_state=0)
    >>> theta.shape, x.shape
    ((200, 3), (200, 3))
    """
    task = GaussianLinear(n_dims=n_dims)
    n_samples = check_positive_int(n_samples, "n_samples")
    rng = check_random_state(random_state)
    theta = task.sample_prior(n_samples, random_state=rng)
    return theta, task.simulate(theta, random_state=rng)
