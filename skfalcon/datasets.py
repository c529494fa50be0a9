r"""Built-in simulators with exact reference posteriors.

Two standard simulation-based inference tasks, used by the quickstart, the
tests and the benchmarks. Each task object draws parameters from its prior,
runs the simulator, evaluates the exact likelihood and draws exact samples
from the posterior of an observation, so that an estimator can be scored
against the truth (for instance with :func:`skfalcon.metrics.c2st`).

**Two moons.** :math:`\theta \sim \mathcal{U}([-1, 1]^2)`,
:math:`a \sim \mathcal{U}(-\pi/2, \pi/2)`, :math:`r \sim \mathcal{N}(0.1, 0.01^2)`,
:math:`p = (r \cos a + 0.25,\ r \sin a)` and

.. math::

    x = p + f(\theta), \qquad
    f(\theta) = \Big(-\frac{|\theta_1 + \theta_2|}{\sqrt 2},\
                     \frac{-\theta_1 + \theta_2}{\sqrt 2}\Big).

On each half-plane :math:`\pm(\theta_1 + \theta_2) > 0` the map :math:`f` is
linear with :math:`|\det J_f| = 1`, and the prior is flat, so the posterior
is :math:`p(\theta \mid x) \propto p_{\text{noise}}(x - f(\theta))` on the box.
Exact samples follow by drawing :math:`p` from the noise, setting
:math:`z = x - p`, picking a branch :math:`s = \pm 1` with probability 1/2,
solving :math:`\theta_1 + \theta_2 = -s \sqrt 2 z_1`,
:math:`\theta_2 - \theta_1 = \sqrt 2 z_2` (possible only when
:math:`z_1 \le 0`) and keeping the solutions that fall in the box.

The noise density itself is exact: with :math:`q = p - (0.25, 0)`, the polar
map :math:`(a, r) \mapsto q` is a bijection from
:math:`(-\pi/2, \pi/2) \times (\mathbb{R} \setminus \{0\})` onto the plane
without the axis :math:`q_1 = 0` (negative :math:`r` lands on :math:`q_1 < 0`),
with Jacobian :math:`|r|`, hence
:math:`p(q) = \frac{1}{\pi}\, \mathcal{N}(\operatorname{sign}(q_1) \lVert q \rVert;
0.1, 0.01^2) / \lVert q \rVert`.

**Gaussian linear.** :math:`\theta \sim \mathcal{N}(0, \sigma_0^2 I_d)`,
:math:`x \sim \mathcal{N}(\theta, \sigma^2 I_d)`; the posterior is
:math:`\mathcal{N}\big(\tfrac{\sigma_0^2}{\sigma_0^2 + \sigma^2} x,\
\tfrac{\sigma_0^2 \sigma^2}{\sigma_0^2 + \sigma^2} I_d\big)`.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import stats
from sklearn.utils import check_array, check_random_state, check_scalar

from skfalcon.utils.validation import check_positive_int

__all__ = ["TwoMoons", "GaussianLinear", "make_two_moons", "make_gaussian_linear"]

# Proposals drawn by the two-moons reference sampler before it gives up on an
# observation whose posterior hardly overlaps the prior box.
_MAX_REJECTION_PROPOSALS = 10_000_000
_MAX_REJECTION_BATCH = 1_000_000


def _check_rows(array, name: str, n_columns: int) -> np.ndarray:
    """Validate a 2-D float array of shape ``(n, n_columns)`` with finite values."""
    if np.ndim(array) != 2 or np.shape(array)[1] != n_columns:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n, {n_columns}); got shape {np.shape(array)}."
            + (
                f" Reshape a single vector with {name}.reshape(1, -1)."
                if np.ndim(array) == 1
                else ""
            )
        )
    return check_array(array, dtype=np.float64, input_name=name)


def _check_vector(array, name: str, n_columns: int) -> np.ndarray:
    """Validate a 1-D float array of shape ``(n_columns,)`` with finite values."""
    if np.ndim(array) != 1 or np.shape(array)[0] != n_columns:
        raise ValueError(
            f"{name} must be a 1-D array of shape ({n_columns},); got shape {np.shape(array)}."
        )
    return check_array(array, dtype=np.float64, ensure_2d=False, input_name=name)


def _check_theta_x(theta, x, n_parameters: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``theta`` of shape ``(n, n_parameters)`` and ``x`` of shape
    ``(n_features,)`` (broadcast over the rows of ``theta``) or ``(n, n_features)``."""
    theta = _check_rows(theta, "theta", n_parameters)
    if np.ndim(x) == 1:
        x = _check_vector(x, "x", n_features)
    else:
        x = _check_rows(x, "x", n_features)
        if x.shape[0] != theta.shape[0]:
            raise ValueError(
                f"x must have shape ({n_features},) or as many rows as theta "
                f"({theta.shape[0]}); got shape {x.shape}."
            )
    return theta, x


class _SimulationTask:
    """What the built-in tasks share: ground-truth observations drawn from the prior."""

    def observations(
        self, n_observations: int = 3, random_state=0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth parameters and their simulated observations.

        Parameters
        ----------
        n_observations : int, default=3
        random_state : int, RandomState instance or None, default=0
            The default makes the observations the same on every call.

        Returns
        -------
        theta_true : ndarray of shape (n_observations, n_parameters)
        x_obs : ndarray of shape (n_observations, n_features)
        """
        n_observations = check_positive_int(n_observations, "n_observations")
        rng = check_random_state(random_state)
        theta_true = self.sample_prior(n_observations, random_state=rng)
        return theta_true, self.simulate(theta_true, random_state=rng)


class TwoMoons(_SimulationTask):
    r"""The two-moons benchmark of simulation-based inference.

    The parameter :math:`\theta \in [-1, 1]^2` has a flat prior; the
    observation :math:`x \in \mathbb{R}^2` is a noisy crescent shifted by
    :math:`(-|\theta_1 + \theta_2| / \sqrt 2, (\theta_2 - \theta_1) / \sqrt 2)`.
    Its posterior has two crescent-shaped modes, one on each side of the line
    :math:`\theta_1 + \theta_2 = 0`. Exact posterior samples are drawn by
    rejection (see the module docstring).

    Attributes
    ----------
    prior : list of tuple
        The prior as a skfalcon prior spec list,
        ``[("uniform", -1.0, 1.0), ("uniform", -1.0, 1.0)]``.
    n_parameters : int
        Number of parameters, 2.
    n_features : int
        Number of observed features, 2.

    See Also
    --------
    make_two_moons : Draw ``(theta, x)`` pairs from the prior predictive.
    GaussianLinear : A task with an analytic Gaussian posterior.

    Examples
    --------
    >>> from skfalcon.datasets import TwoMoons
    >>> task = TwoMoons()
    >>> theta_true, x_obs = task.observations(1)
    >>> task.reference_posterior(x_obs[0], 1000, random_state=0).shape
    (1000, 2)
    """

    n_parameters = 2
    n_features = 2

    # Noise: a ~ U(-pi/2, pi/2), r ~ N(0.1, 0.01^2), p = (r cos a + 0.25, r sin a).
    _angle = stats.uniform(loc=-np.pi / 2, scale=np.pi)
    _radius = stats.norm(loc=0.1, scale=0.01)
    _offset = 0.25

    @property
    def prior(self) -> list:
        """The prior as a skfalcon prior spec list (a fresh list on each access)."""
        return [("uniform", -1.0, 1.0), ("uniform", -1.0, 1.0)]

    def __repr__(self) -> str:
        return "TwoMoons()"

    def sample_prior(self, n: int, random_state=None) -> np.ndarray:
        """Draw parameters from the prior.

        Parameters
        ----------
        n : int
            Number of draws.
        random_state : int, RandomState instance or None, default=None
            Seed or generator for reproducible draws.

        Returns
        -------
        theta : ndarray of shape (n, 2)
        """
        n = check_positive_int(n, "n")
        rng = check_random_state(random_state)
        return stats.uniform(loc=-1.0, scale=2.0).rvs(size=(n, 2), random_state=rng)

    def log_prior(self, theta) -> np.ndarray:
        """Log density of the prior, ``-log 4`` inside the box, ``-inf`` outside.

        Parameters
        ----------
        theta : array-like of shape (n, 2)

        Returns
        -------
        log_prior : ndarray of shape (n,)
        """
        theta = _check_rows(theta, "theta", self.n_parameters)
        return stats.uniform(loc=-1.0, scale=2.0).logpdf(theta).sum(axis=1)

    def _sample_noise(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        """Draw ``n`` points ``p`` of the crescent noise, shape ``(n, 2)``."""
        a = self._angle.rvs(size=n, random_state=rng)
        r = self._radius.rvs(size=n, random_state=rng)
        return np.column_stack([r * np.cos(a) + self._offset, r * np.sin(a)])

    @staticmethod
    def _shift(theta: np.ndarray) -> np.ndarray:
        """The deterministic part ``f(theta)`` of the simulator, shape ``(n, 2)``."""
        return np.column_stack(
            [
                -np.abs(theta[:, 0] + theta[:, 1]) / np.sqrt(2.0),
                (theta[:, 1] - theta[:, 0]) / np.sqrt(2.0),
            ]
        )

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
        return self._sample_noise(theta.shape[0], rng) + self._shift(theta)

    def log_likelihood(self, theta, x) -> np.ndarray:
        """Exact log density of ``x`` given ``theta``.

        Parameters
        ----------
        theta : array-like of shape (n, 2)
        x : array-like of shape (2,) or (n, 2)
            One observation, broadcast over the rows of ``theta``, or one
            observation per row.

        Returns
        -------
        log_likelihood : ndarray of shape (n,)
            ``-inf`` where ``x`` cannot be produced from ``theta``.
        """
        theta, x = _check_theta_x(theta, x, self.n_parameters, self.n_features)
        q = x - self._shift(theta) - np.array([self._offset, 0.0])
        norm_q = np.hypot(q[:, 0], q[:, 1])
        # The angle arctan(q_2 / q_1) always lies in (-pi/2, pi/2), where its density is
        # 1/pi; the signed radius is sign(q_1) |q| and the polar Jacobian is |q|.
        with np.errstate(divide="ignore"):
            out = self._radius.logpdf(np.sign(q[:, 0]) * norm_q) - np.log(norm_q) - np.log(np.pi)
        # The axis q_1 = 0 has measure zero; give it zero density.
        return np.where(q[:, 0] == 0, -np.inf, out)

    def reference_posterior(self, x_obs, n_samples: int, random_state=None) -> np.ndarray:
        """Draw exact samples from the posterior of one observation.

        Noise draws ``p`` are inverted through both branches of the simulator
        and kept when the solution lies in the prior box (rejection sampling;
        see the module docstring for why this is exact).

        Parameters
        ----------
        x_obs : array-like of shape (2,)
        n_samples : int
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        theta : ndarray of shape (n_samples, 2)

        Raises
        ------
        ValueError
            If ``x_obs`` lies so far from what the prior can produce that
            fewer than ``n_samples`` proposals out of ten million are accepted.
        """
        x_obs = _check_vector(x_obs, "x_obs", self.n_features)
        n_samples = check_positive_int(n_samples, "n_samples")
        rng = check_random_state(random_state)

        accepted, n_accepted, n_drawn = [], 0, 0
        while n_accepted < n_samples:
            if n_drawn >= _MAX_REJECTION_PROPOSALS:
                raise ValueError(
                    f"x_obs={x_obs.tolist()} is (nearly) outside the support of the two-moons "
                    f"simulator under its prior: only {n_accepted} of {n_drawn} reference "
                    f"posterior proposals were accepted, {n_samples} were requested."
                )
            # Size the next batch from the acceptance rate seen so far.
            rate = (n_accepted + 1) / (n_drawn + 1)
            n_batch = int(
                np.clip(1.2 * (n_samples - n_accepted) / rate, 1000, _MAX_REJECTION_BATCH)
            )
            z = x_obs - self._sample_noise(n_batch, rng)
            branch = rng.choice([-1.0, 1.0], size=n_batch)
            total = -branch * np.sqrt(2.0) * z[:, 0]  # theta_1 + theta_2
            diff = np.sqrt(2.0) * z[:, 1]  # theta_2 - theta_1
            theta = np.column_stack([(total - diff) / 2.0, (total + diff) / 2.0])
            keep = (z[:, 0] <= 0.0) & np.all(np.abs(theta) <= 1.0, axis=1)
            accepted.append(theta[keep])
            n_accepted += int(keep.sum())
            n_drawn += n_batch
        return np.concatenate(accepted)[:n_samples]


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


def make_two_moons(n_samples: int = 1000, *, random_state=None) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(theta, x)`` pairs of the two-moons task from its prior predictive.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of simulations.
    random_state : int, RandomState instance or None, default=None
        Seed or generator for reproducible simulations.

    Returns
    -------
    theta : ndarray of shape (n_samples, 2)
        Parameters drawn from ``U([-1, 1]^2)``.
    x : ndarray of shape (n_samples, 2)
        One simulation per row of ``theta``.

    See Also
    --------
    TwoMoons : The task, with its likelihood and exact reference posterior.

    Examples
    --------
    >>> from skfalcon.datasets import make_two_moons
    >>> theta, x = make_two_moons(500, random_state=0)
    >>> theta.shape, x.shape
    ((500, 2), (500, 2))
    """
    task = TwoMoons()
    n_samples = check_positive_int(n_samples, "n_samples")
    rng = check_random_state(random_state)
    theta = task.sample_prior(n_samples, random_state=rng)
    return theta, task.simulate(theta, random_state=rng)


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
