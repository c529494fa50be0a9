"""What the built-in tasks share: input checks and ground-truth observations."""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.utils import check_array, check_random_state

from skfalcon.utils.validation import check_positive_int

__all__: list[str] = []


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


class _UniformBoxTask(_SimulationTask):
    """A task whose prior is uniform on the box ``[-bound, bound]^n_parameters``."""

    bound: float
    n_parameters: int

    @property
    def prior(self) -> list:
        """The prior as a skfalcon prior spec list (a fresh list on each access)."""
        return [("uniform", -self.bound, self.bound)] * self.n_parameters

    def sample_prior(self, n: int, random_state=None) -> np.ndarray:
        """Draw parameters from the prior.

        Parameters
        ----------
        n : int
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        theta : ndarray of shape (n, n_parameters)
        """
        n = check_positive_int(n, "n")
        rng = check_random_state(random_state)
        return rng.uniform(-self.bound, self.bound, size=(n, self.n_parameters))

    def log_prior(self, theta) -> np.ndarray:
        """Log density of the prior: ``-n_parameters log(2 bound)`` inside the box,
        ``-inf`` outside.

        Parameters
        ----------
        theta : array-like of shape (n, n_parameters)

        Returns
        -------
        log_prior : ndarray of shape (n,)
        """
        theta = _check_rows(theta, "theta", self.n_parameters)
        return stats.uniform(-self.bound, 2 * self.bound).logpdf(theta).sum(axis=1)
