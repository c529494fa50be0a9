"""SLCP and its variant among distractor features (see the :mod:`skfalcon.datasets` docstring)."""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.special import gammaln, logsumexp
from sklearn.mixture import GaussianMixture as _GaussianMixtureModel
from sklearn.utils import Bunch, check_random_state

from skfalcon.datasets._base import (
    _check_rows,
    _check_theta_x,
    _check_vector,
    _SimulationTask,
    _UniformBoxTask,
)
from skfalcon.datasets._references import (
    cached_reference,
    importance_resample,
    run_ensemble_mcmc,
    t_mixture_proposal,
)
from skfalcon.utils.validation import check_positive_int

__all__ = ["SLCP", "SLCPDistractors"]

_BOUND = 3.0
_N_DRAWS = 4
# Walkers of the reference MCMC, and prior candidates screened for their starting points.
_N_WALKERS = 256
_N_START_CANDIDATES = 100_000


def _slcp_log_likelihood(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sum over the four draws of the bivariate normal log density, shape ``(n,)``."""
    # Draws first, then rows: shape (4, 1, 2) for one observation, (4, n, 2) for one per row.
    draws = np.moveaxis(np.reshape(x, (-1, _N_DRAWS, 2)), 1, 0)
    s1, s2 = theta[:, 2] ** 2, theta[:, 3] ** 2
    rho = np.tanh(theta[:, 4])
    with np.errstate(divide="ignore", invalid="ignore"):
        z1 = (draws[..., 0] - theta[:, 0]) / s1
        z2 = (draws[..., 1] - theta[:, 1]) / s2
        one_minus = 1.0 - rho**2
        quad = (z1**2 - 2 * rho * z1 * z2 + z2**2) / one_minus
        log_norm = np.log(2 * np.pi) + np.log(s1) + np.log(s2) + 0.5 * np.log(one_minus)
        out = -_N_DRAWS * log_norm - 0.5 * quad.sum(axis=0)
    # A zero scale (theta_3 or theta_4 exactly 0) puts no density on x off the mean.
    return np.where(np.isfinite(out), out, -np.inf)


class SLCP(_UniformBoxTask):
    r"""Simple likelihood, complex posterior: five parameters, four 2-D Gaussian draws.

    The mean of the draws is :math:`(\theta_1, \theta_2)`, their standard deviations
    :math:`\theta_3^2` and :math:`\theta_4^2` and their correlation
    :math:`\tanh\theta_5`; the prior is uniform on :math:`[-3, 3]^5` (see the
    :mod:`skfalcon.datasets` docstring). The likelihood is exact and cheap, but the
    posterior has four sign-mirrored modes, sharp ridges and mass piled on the prior's
    edges.

    **Reference posterior.** Affine-invariant ensemble MCMC (``emcee``, 256 walkers
    started at the best of 100,000 prior draws, 1,500 burn-in steps, thinned by the
    integrated autocorrelation time) on the orthant :math:`\theta_3, \theta_4 > 0`,
    then a random sign for each of :math:`\theta_3` and :math:`\theta_4`. It is
    validated (:meth:`validate_reference`) against sampling-importance-resampling with
    the exact likelihood, from a Student-t mixture (5 degrees of freedom, covariances
    widened by 1.5^2) fitted to the MCMC draws plus a wide component for the prior.
    Between 2,000 draws of each, from 500,000 candidates, on
    ``observations(10)[1][0]`` and ``[1]``: C2ST (MLP) 0.496 and 0.500, ESS 108,000 and
    163,000 (``benchmarks/validate_references.py --n-samples 2000``). Draws are cached
    on disk (``$SKFALCON_CACHE``).

    Attributes
    ----------
    prior : list of tuple
        ``[("uniform", -3.0, 3.0)] * 5``, a skfalcon prior spec list.
    n_parameters : int
        Number of parameters, 5.
    n_features : int
        Number of observed features, 8.

    See Also
    --------
    SLCPDistractors : The same observation hidden among 92 noise features.

    Examples
    --------
    >>> from skfalcon.datasets import SLCP
    >>> task = SLCP()
    >>> theta_true, x_obs = task.observations(2)
    >>> x_obs.shape, task.log_likelihood(theta_true, x_obs).shape
    ((2, 8), (2,))
    """

    bound = _BOUND
    n_parameters = 5
    n_features = 2 * _N_DRAWS
    _name = "slcp"

    def __repr__(self) -> str:
        return "SLCP()"

    def simulate(self, theta, random_state=None) -> np.ndarray:
        """Run the simulator once per row of ``theta``.

        Parameters
        ----------
        theta : array-like of shape (n, 5)
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        x : ndarray of shape (n, 8)
            The four draws, flattened as ``(x_11, x_12, x_21, ..., x_42)``.
        """
        theta = _check_rows(theta, "theta", self.n_parameters)
        rng = check_random_state(random_state)
        n = theta.shape[0]
        s1, s2 = theta[:, 2:3] ** 2, theta[:, 3:4] ** 2
        rho = np.tanh(theta[:, 4:5])
        z = rng.standard_normal(size=(n, _N_DRAWS, 2))
        # The Cholesky factor of the covariance, applied to standard normal draws.
        first = theta[:, 0:1] + s1 * z[..., 0]
        second = theta[:, 1:2] + s2 * (rho * z[..., 0] + np.sqrt(1 - rho**2) * z[..., 1])
        return np.stack([first, second], axis=-1).reshape(n, self.n_features)

    def log_likelihood(self, theta, x) -> np.ndarray:
        """Exact log density of ``x`` given ``theta``.

        Parameters
        ----------
        theta : array-like of shape (n, 5)
        x : array-like of shape (8,) or (n, 8)
            One observation, broadcast over the rows of ``theta``, or one per row.

        Returns
        -------
        log_likelihood : ndarray of shape (n,)
        """
        theta, x = _check_theta_x(theta, x, self.n_parameters, self.n_features)
        return _slcp_log_likelihood(theta, x)

    def _log_target(self, x_obs: np.ndarray):
        """The unnormalized posterior on the orthant theta_3, theta_4 > 0."""

        def log_target(theta):
            inside = np.all(np.abs(theta) <= _BOUND, axis=1) & (theta[:, 2] > 0) & (theta[:, 3] > 0)
            out = np.full(theta.shape[0], -np.inf)
            out[inside] = _slcp_log_likelihood(theta[inside], x_obs)
            return out

        return log_target

    def _mcmc_orthant(self, x_obs: np.ndarray, n_samples: int, rng) -> np.ndarray:
        log_target = self._log_target(x_obs)
        candidates = np.abs(self.sample_prior(_N_START_CANDIDATES, random_state=rng))
        best = np.argsort(log_target(candidates))[-_N_WALKERS:]
        return run_ensemble_mcmc(log_target, candidates[best], n_samples, rng, self._name)

    @staticmethod
    def _flip_signs(theta: np.ndarray, rng) -> np.ndarray:
        signs = rng.choice([-1.0, 1.0], size=(theta.shape[0], 2))
        theta = theta.copy()
        theta[:, 2:4] *= signs
        return theta

    def reference_posterior(
        self, x_obs, n_samples: int, random_state=None, *, cache: bool = True
    ) -> np.ndarray:
        """Draw reference samples from the posterior of one observation.

        MCMC on the orthant :math:`\\theta_3, \\theta_4 > 0`, then random signs (see
        the class docstring for the sampler and its validation).

        Parameters
        ----------
        x_obs : array-like of shape (8,)
        n_samples : int
        random_state : int, RandomState instance or None, default=None
        cache : bool, default=True
            Read and write the draws of an integer ``random_state`` in the disk
            cache (``$SKFALCON_CACHE``, else ``~/.cache/skfalcon/references``).

        Returns
        -------
        theta : ndarray of shape (n_samples, 5)
        """
        x_obs = _check_vector(x_obs, "x_obs", self.n_features)
        n_samples = check_positive_int(n_samples, "n_samples")

        def compute(rng):
            return self._flip_signs(self._mcmc_orthant(x_obs, n_samples, rng), rng)

        return cached_reference(SLCP._name, x_obs, n_samples, random_state, compute, cache)

    def _importance_orthant(self, x_obs, mcmc, n_samples, n_proposals, rng):
        """SIR on the orthant from a widened Student-t mixture fitted to ``mcmc``."""
        fit = _GaussianMixtureModel(n_components=4, random_state=rng.randint(2**31)).fit(mcmc)
        box_scale = np.diag(np.full(self.n_parameters, (2 * _BOUND) ** 2 / 12))
        box_mean = np.array([0.0, 0.0, _BOUND / 2, _BOUND / 2, 0.0])
        # A wide component standing in for the prior keeps every weight bounded.
        proposal = t_mixture_proposal(
            [*fit.means_, box_mean],
            [*(1.5**2 * fit.covariances_), box_scale],
            [*(0.9 * fit.weights_), 0.1],
            df=5,
        )
        return importance_resample(self._log_target(x_obs), proposal, n_proposals, n_samples, rng)

    def validate_reference(
        self, x_obs, n_samples: int = 10_000, random_state=0, *, n_proposals: int = 500_000
    ) -> Bunch:
        """Compare the MCMC reference with importance sampling from the true likelihood.

        Parameters
        ----------
        x_obs : array-like of shape (8,)
        n_samples : int, default=10_000
            Draws of each method compared by C2ST.
        random_state : int, RandomState instance or None, default=0
        n_proposals : int, default=500_000
            Importance-sampling candidates.

        Returns
        -------
        result : Bunch
            ``mcmc`` and ``importance`` (each ``(n_samples, 5)``), ``ess`` (of the
            importance weights) and ``c2st`` (MLP classifier, 0.5 when they agree).
        """
        from skfalcon.metrics import c2st

        x_obs = _check_vector(x_obs, "x_obs", self.n_features)
        n_samples = check_positive_int(n_samples, "n_samples")
        n_proposals = check_positive_int(n_proposals, "n_proposals")
        rng = check_random_state(random_state)
        mcmc = self._mcmc_orthant(x_obs, n_samples, rng)
        importance, ess = self._importance_orthant(x_obs, mcmc, n_samples, n_proposals, rng)
        mcmc, importance = self._flip_signs(mcmc, rng), self._flip_signs(importance, rng)
        return Bunch(mcmc=mcmc, importance=importance, ess=ess, c2st=c2st(mcmc, importance))


class _StudentT:
    """A multivariate Student-t given by a lower-triangular scale factor.

    scipy's ``multivariate_t`` takes the shape matrix and refuses the noise model's
    ill-conditioned ones (a factor's smallest diagonal entry is ~1e-3 of its largest
    row norm), so the density and the draws here work from the factor itself.
    """

    def __init__(self, loc: np.ndarray, factor: np.ndarray, df: float):
        # Flipping the sign of a column of the factor leaves L z unchanged in law.
        self.factor = factor * np.sign(np.diag(factor))
        self.loc, self.df = loc, df
        d = len(loc)
        self._log_norm = (
            gammaln((df + d) / 2)
            - gammaln(df / 2)
            - d / 2 * np.log(df * np.pi)
            - np.log(np.diag(self.factor)).sum()
        )

    def rvs(self, size: int, random_state) -> np.ndarray:
        z = random_state.standard_normal((size, len(self.loc)))
        scale = np.sqrt(random_state.chisquare(self.df, size=(size, 1)) / self.df)
        return self.loc + (z @ self.factor.T) / scale

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        white = linalg.solve_triangular(self.factor, (x - self.loc).T, lower=True)
        d = len(self.loc)
        return self._log_norm - (self.df + d) / 2 * np.log1p((white**2).sum(axis=0) / self.df)


def _noise_model(rng: np.random.RandomState) -> list:
    """The fixed distractor noise: an equal mixture of 20 Student-t (2 degrees of freedom)
    in 92 dimensions, locations 15 N(0, 1), scale factors 3 (L + diag(exp N(0, 1)))
    with L lower-triangular standard normal."""
    n_dims, n_components = SLCPDistractors.n_features - SLCP.n_features, 20
    locs = 15 * rng.standard_normal((n_components, n_dims))
    factors = [
        3
        * (
            np.tril(rng.standard_normal((n_dims, n_dims)))
            + np.diag(np.exp(rng.standard_normal(n_dims)))
        )
        for _ in range(n_components)
    ]
    return [_StudentT(loc, f, df=2.0) for loc, f in zip(locs, factors, strict=True)]


class SLCPDistractors(_SimulationTask):
    r"""SLCP's observation hidden among 92 distractor features, 100 features in all.

    The eight SLCP features (:class:`SLCP`) are joined by 92 draws from a fixed heavy-
    tailed mixture (20 equally weighted 92-D Student-t distributions with 2 degrees of
    freedom, their locations and scales drawn once with seed 42), and the 100 columns
    are shuffled by a fixed permutation. The noise does not depend on
    :math:`\theta`, so the posterior is SLCP's posterior of the informative features
    (:attr:`informative_features`), and so is the reference: it is SLCP's (same cache,
    same validation).

    Attributes
    ----------
    prior : list of tuple
        ``[("uniform", -3.0, 3.0)] * 5``, as for :class:`SLCP`.
    n_parameters : int
        Number of parameters, 5.
    n_features : int
        Number of observed features, 100.
    informative_features : ndarray of shape (8,)
        The columns holding SLCP's features ``(x_11, x_12, ..., x_42)``, in order.

    See Also
    --------
    SLCP : The task without distractors.

    Examples
    --------
    >>> import numpy as np
    >>> from skfalcon.datasets import SLCP, SLCPDistractors
    >>> task = SLCPDistractors()
    >>> theta_true, x_obs = task.observations(1)
    >>> x_obs.shape
    (1, 100)
    >>> np.allclose(x_obs[:, task.informative_features], SLCP().observations(1)[1])
    True
    """

    n_parameters = SLCP.n_parameters
    n_features = 100

    def __init__(self):
        rng = np.random.RandomState(42)
        self._noise = _noise_model(rng)
        permutation = rng.permutation(self.n_features)
        # Column j of the output holds column permutation[j] of [slcp, noise].
        self._permutation = permutation
        self.informative_features = np.argsort(permutation)[: SLCP.n_features]
        self._slcp = SLCP()

    @property
    def prior(self) -> list:
        """The prior as a skfalcon prior spec list (a fresh list on each access)."""
        return self._slcp.prior

    def __repr__(self) -> str:
        return "SLCPDistractors()"

    def sample_prior(self, n: int, random_state=None) -> np.ndarray:
        """Draw parameters from the prior, as :meth:`SLCP.sample_prior`."""
        return self._slcp.sample_prior(n, random_state=random_state)

    def log_prior(self, theta) -> np.ndarray:
        """Log density of the prior, as :meth:`SLCP.log_prior`."""
        return self._slcp.log_prior(theta)

    def _noise_draws(self, n: int, rng) -> np.ndarray:
        counts = rng.multinomial(n, np.full(len(self._noise), 1 / len(self._noise)))
        draws = np.concatenate([d.rvs(k, rng) for k, d in zip(counts, self._noise, strict=True)])
        return draws[rng.permutation(n)]

    def simulate(self, theta, random_state=None) -> np.ndarray:
        """Run the simulator once per row of ``theta``.

        The SLCP features are simulated first, from the same stream, so that a
        seed gives the same informative features as :meth:`SLCP.simulate`.

        Parameters
        ----------
        theta : array-like of shape (n, 5)
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        x : ndarray of shape (n, 100)
        """
        rng = check_random_state(random_state)
        informative = self._slcp.simulate(theta, random_state=rng)
        noise = self._noise_draws(informative.shape[0], rng)
        return np.concatenate([informative, noise], axis=1)[:, self._permutation]

    def log_likelihood(self, theta, x) -> np.ndarray:
        """Exact log density of ``x`` given ``theta``: SLCP's likelihood of the
        informative features plus the noise density of the others.

        Parameters
        ----------
        theta : array-like of shape (n, 5)
        x : array-like of shape (100,) or (n, 100)

        Returns
        -------
        log_likelihood : ndarray of shape (n,)
        """
        theta, x = _check_theta_x(theta, x, self.n_parameters, self.n_features)
        noise = x[..., np.argsort(self._permutation)[SLCP.n_features :]]
        log_noise = logsumexp([d.logpdf(noise) for d in self._noise], axis=0) - np.log(
            len(self._noise)
        )
        informative = x[..., self.informative_features]
        return _slcp_log_likelihood(theta, informative) + log_noise

    def reference_posterior(
        self, x_obs, n_samples: int, random_state=None, *, cache: bool = True
    ) -> np.ndarray:
        """SLCP's reference posterior of the informative features of ``x_obs``.

        Parameters
        ----------
        x_obs : array-like of shape (100,)
        n_samples : int
        random_state : int, RandomState instance or None, default=None
        cache : bool, default=True
            As for :meth:`SLCP.reference_posterior`, whose cache is shared.

        Returns
        -------
        theta : ndarray of shape (n_samples, 5)
        """
        x_obs = _check_vector(x_obs, "x_obs", self.n_features)
        return self._slcp.reference_posterior(
            x_obs[self.informative_features], n_samples, random_state, cache=cache
        )
