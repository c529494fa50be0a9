"""The two-moons task and its exact rejection sampler (see the package docstring)."""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.utils import check_random_state

from skfalcon.datasets._base import _check_rows, _check_theta_x, _check_vector, _SimulationTask
from skfalcon.utils.validation import check_positive_int

__all__ = ["TwoMoons", "make_two_moons"]

# Proposals drawn by the two-moons reference sampler before it gives up on an
# observation whose posterior hardly overlaps the prior box.
_MAX_REJECTION_PROPOSALS = 10_000_000
_MAX_REJECTION_BATCH = 1_000_000


class TwoMoons(_SimulationTask):
    r"""The two-moons benchmark of simulation-based inference.

    The parameter :math:`\theta \in [-1, 1]^2` has a flat prior; the
    observation :math:`x \in \mathbb{R}^2` is a noisy crescent shifted by
    :math:`(-|\theta_1 + \theta_2| / \sqrt 2, (\theta_2 - \theta_1) / \sqrt 2)`.
    Its posterior has two crescent-shaped modes, one on each side of the line
    :math:`\theta_1 + \theta_2 = 0`. Exact posterior samples are drawn by
    rejection (see the :mod:`skfalcon.datasets` docstring).

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
        see the :mod:`skfalcon.datasets` docstring for why this is exact).

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
