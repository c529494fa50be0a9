"""The Bernoulli GLM task and its MCMC reference (see the :mod:`skfalcon.datasets` docstring)."""

from __future__ import annotations

import numpy as np
from scipy import linalg, optimize, stats
from scipy.special import expit
from sklearn.utils import Bunch, check_random_state

from skfalcon.datasets._base import _check_rows, _check_theta_x, _check_vector, _SimulationTask
from skfalcon.datasets._references import (
    cached_reference,
    importance_resample,
    run_ensemble_mcmc,
    t_mixture_proposal,
)
from skfalcon.utils.validation import check_positive_int

__all__ = ["BernoulliGLM"]

_N_BINS = 100
_N_FILTER = 9
_STIMULUS_SEED = 42
_N_WALKERS = 256


def _prior_precision() -> np.ndarray:
    """The prior precision: 0.5 for the bias, ``F^T F`` for the filter."""
    difference = np.eye(_N_FILTER) - np.eye(_N_FILTER, k=-1)
    f = difference @ difference + np.diag(np.sqrt(np.arange(_N_FILTER) / _N_FILTER))
    return linalg.block_diag(0.5, f.T @ f)


class BernoulliGLM(_SimulationTask):
    r"""Bernoulli generalized linear model of a neuron: bias and a 9-bin stimulus filter.

    Ten parameters, ten features: the spike count over 100 bins and the stimulus summed
    over the spikes at delays 0 to 8, with a fixed white-noise stimulus drawn inside the
    task (see the :mod:`skfalcon.datasets` docstring). The prior is a correlated
    Gaussian favouring smooth filters.

    **The prior spec.** :class:`~skfalcon.FactorizedPrior` takes independent marginals
    only, so :attr:`prior` gives the exact marginals :math:`\mathcal{N}(0, \Sigma_{ii})`
    of the correlated prior: the estimator uses them as its coordinate map. Train on
    :meth:`sample_prior` draws (correlated): the posterior learned from them is that of
    the correlated prior. Anything that draws from the spec list itself draws from the
    product of the marginals, a different (wider) prior: so do
    :meth:`~skfalcon.FlowPosteriorEstimator.sample_proposal` before a fit and
    :class:`~skfalcon.SequentialInference`. For those, work in the whitened coordinates
    :math:`z = L^{-1}\theta` with :math:`L L^T = \Sigma` (``prior_cov``), whose prior
    :math:`\mathcal{N}(0, I)` is factorized, simulating :math:`\theta = L z`
    (``benchmarks/bench_sequential.py`` does so).

    **Reference posterior.** Affine-invariant ensemble MCMC (``emcee``, 256 walkers
    started from the Laplace approximation at the MAP, 1,500 burn-in steps, thinned by
    the integrated autocorrelation time) on the exact, log-concave posterior. It is
    validated (:meth:`validate_reference`) against sampling-importance-resampling from
    a Student-t (5 degrees of freedom) centred at the MAP, found by
    ``scipy.optimize.minimize``, with the Laplace covariance. Between 2,000 draws of
    each, from 200,000 candidates, on ``observations(10)[1][0]`` and ``[1]``: C2ST
    (MLP) 0.508 and 0.495, ESS 107,000 and 111,000
    (``benchmarks/validate_references.py --n-samples 2000``).
    Draws are cached on disk (``$SKFALCON_CACHE``).

    Attributes
    ----------
    prior : list of tuple
        The marginals ``[("normal", 0.0, sqrt(prior_cov[i, i])) for i in range(10)]``.
    prior_cov : ndarray of shape (10, 10)
        Covariance of the (joint, correlated) Gaussian prior.
    design_matrix : ndarray of shape (100, 10)
        The fixed design :math:`X`: ones, then the stimulus at delays 0 to 8.
    n_parameters : int
        Number of parameters, 10.
    n_features : int
        Number of observed features, 10.

    Examples
    --------
    >>> from skfalcon.datasets import BernoulliGLM
    >>> task = BernoulliGLM()
    >>> theta_true, x_obs = task.observations(2)
    >>> x_obs.shape, task.log_likelihood(theta_true, x_obs).shape
    ((2, 10), (2,))
    """

    n_parameters = 1 + _N_FILTER
    n_features = 1 + _N_FILTER
    _name = "bernoulli_glm"

    def __init__(self):
        stimulus = np.random.RandomState(_STIMULUS_SEED).standard_normal(_N_BINS)
        delayed = linalg.toeplitz(stimulus, np.zeros(_N_FILTER))
        self.design_matrix = np.column_stack([np.ones(_N_BINS), delayed])
        self._precision = _prior_precision()
        self.prior_cov = np.linalg.inv(self._precision)
        self._prior_dist = stats.multivariate_normal(np.zeros(self.n_parameters), self.prior_cov)

    @property
    def prior(self) -> list:
        """The prior's marginals as a skfalcon prior spec list (a fresh list on each access)."""
        return [("normal", 0.0, float(np.sqrt(v))) for v in np.diag(self.prior_cov)]

    def __repr__(self) -> str:
        return "BernoulliGLM()"

    def sample_prior(self, n: int, random_state=None) -> np.ndarray:
        """Draw parameters from the (correlated) prior.

        Parameters
        ----------
        n : int
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        theta : ndarray of shape (n, 10)
        """
        n = check_positive_int(n, "n")
        rng = check_random_state(random_state)
        return np.reshape(self._prior_dist.rvs(size=n, random_state=rng), (n, -1))

    def log_prior(self, theta) -> np.ndarray:
        """Log density of the (correlated) Gaussian prior.

        Parameters
        ----------
        theta : array-like of shape (n, 10)

        Returns
        -------
        log_prior : ndarray of shape (n,)
        """
        theta = _check_rows(theta, "theta", self.n_parameters)
        return np.atleast_1d(self._prior_dist.logpdf(theta))

    def _simulate_spikes(self, theta: np.ndarray, rng) -> np.ndarray:
        """Spike trains, shape ``(n, 100)``, of 0.0 and 1.0."""
        rate = expit(theta @ self.design_matrix.T)
        return (rng.uniform(size=rate.shape) < rate).astype(np.float64)

    def simulate(self, theta, random_state=None) -> np.ndarray:
        """Run the simulator once per row of ``theta``.

        Parameters
        ----------
        theta : array-like of shape (n, 10)
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        x : ndarray of shape (n, 10)
            The spike count, then the stimulus summed over the spikes at delays 0 to 8.
        """
        theta = _check_rows(theta, "theta", self.n_parameters)
        rng = check_random_state(random_state)
        return self._simulate_spikes(theta, rng) @ self.design_matrix

    def log_likelihood(self, theta, x) -> np.ndarray:
        """Exact log probability of ``x`` given ``theta``.

        Exact for any ``x`` the simulator can produce (see the :mod:`skfalcon.datasets`
        docstring); it is not checked that ``x`` is one.

        Parameters
        ----------
        theta : array-like of shape (n, 10)
        x : array-like of shape (10,) or (n, 10)

        Returns
        -------
        log_likelihood : ndarray of shape (n,)
        """
        theta, x = _check_theta_x(theta, x, self.n_parameters, self.n_features)
        return np.sum(theta * x, axis=1) - np.logaddexp(0.0, theta @ self.design_matrix.T).sum(
            axis=1
        )

    def _log_target(self, x_obs: np.ndarray):
        def log_target(theta):
            quadratic = 0.5 * np.einsum("ni,ij,nj->n", theta, self._precision, theta)
            return self.log_likelihood(theta, x_obs) - quadratic

        return log_target

    def laplace_approximation(self, x_obs) -> tuple[np.ndarray, np.ndarray]:
        """The posterior's mode and the inverse Hessian of its negative log there.

        Parameters
        ----------
        x_obs : array-like of shape (10,)

        Returns
        -------
        mode : ndarray of shape (10,)
        cov : ndarray of shape (10, 10)
        """
        x_obs = _check_vector(x_obs, "x_obs", self.n_features)
        design, precision = self.design_matrix, self._precision

        def negative(theta):
            psi = design @ theta
            value = np.logaddexp(0.0, psi).sum() + 0.5 * theta @ precision @ theta - theta @ x_obs
            return value, design.T @ expit(psi) + precision @ theta - x_obs

        def hessian(theta):
            rate = expit(design @ theta)
            return (design.T * (rate * (1 - rate))) @ design + precision

        fit = optimize.minimize(
            negative, np.zeros(self.n_parameters), jac=True, hess=hessian, method="trust-exact"
        )
        if not fit.success:
            raise RuntimeError(
                f"the posterior mode of x_obs={x_obs.tolist()} was not found: {fit.message}"
            )
        return fit.x, np.linalg.inv(hessian(fit.x))

    def _mcmc(self, x_obs, n_samples, rng):
        mode, cov = self.laplace_approximation(x_obs)
        initial = stats.multivariate_normal(mode, cov).rvs(size=_N_WALKERS, random_state=rng)
        return run_ensemble_mcmc(self._log_target(x_obs), initial, n_samples, rng, self._name)

    def reference_posterior(
        self, x_obs, n_samples: int, random_state=None, *, cache: bool = True
    ) -> np.ndarray:
        """Draw reference samples from the posterior of one observation by MCMC.

        See the class docstring for the sampler and its validation.

        Parameters
        ----------
        x_obs : array-like of shape (10,)
        n_samples : int
        random_state : int, RandomState instance or None, default=None
        cache : bool, default=True
            Read and write the draws of an integer ``random_state`` in the disk
            cache (``$SKFALCON_CACHE``, else ``~/.cache/skfalcon/references``).

        Returns
        -------
        theta : ndarray of shape (n_samples, 10)
        """
        x_obs = _check_vector(x_obs, "x_obs", self.n_features)
        n_samples = check_positive_int(n_samples, "n_samples")

        def compute(rng):
            return self._mcmc(x_obs, n_samples, rng)

        return cached_reference(self._name, x_obs, n_samples, random_state, compute, cache)

    def validate_reference(
        self, x_obs, n_samples: int = 10_000, random_state=0, *, n_proposals: int = 200_000
    ) -> Bunch:
        """Compare the MCMC reference with importance sampling from the true likelihood.

        Parameters
        ----------
        x_obs : array-like of shape (10,)
        n_samples : int, default=10_000
            Draws of each method compared by C2ST.
        random_state : int, RandomState instance or None, default=0
        n_proposals : int, default=200_000
            Importance-sampling candidates, from a Student-t (5 degrees of freedom)
            at the Laplace approximation.

        Returns
        -------
        result : Bunch
            ``mcmc`` and ``importance`` (each ``(n_samples, 10)``), ``ess`` (of the
            importance weights) and ``c2st`` (MLP classifier, 0.5 when they agree).
        """
        from skfalcon.metrics import c2st

        x_obs = _check_vector(x_obs, "x_obs", self.n_features)
        n_samples = check_positive_int(n_samples, "n_samples")
        n_proposals = check_positive_int(n_proposals, "n_proposals")
        rng = check_random_state(random_state)
        mcmc = self._mcmc(x_obs, n_samples, rng)
        mode, cov = self.laplace_approximation(x_obs)
        proposal = t_mixture_proposal([mode], [cov], [1.0], df=5)
        importance, ess = importance_resample(
            self._log_target(x_obs), proposal, n_proposals, n_samples, rng
        )
        return Bunch(mcmc=mcmc, importance=importance, ess=ess, c2st=c2st(mcmc, importance))
