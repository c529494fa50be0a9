"""Training simulations as the engine takes them: checked, NaN policy applied, in u space.

The NaN policy lives here and only here: simulations whose ``x`` holds NaN or infinity
(or values beyond :data:`~skfalcon.utils.validation.MAX_ABS_VALUE`, which overflow
float32 training) are dropped with a warning (``nan_policy="drop"``) or refused
(``"raise"``); non-finite ``theta`` is always an error.
"""

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.utils.validation import check_consistent_length, validate_data

from skfalcon.estimators._names import check_names, column_names
from skfalcon.estimators._observations import flatten_training_observations
from skfalcon.utils.validation import (
    MAX_ABS_VALUE,
    as_array_input,
    exceeds_magnitude,
    named_errors,
    to_float_array,
)

__all__ = [
    "MIN_SIMULATIONS",
    "TrainingRows",
    "check_theta_log_prob",
    "check_training_data",
    "to_training_rows",
]


#: Fewer simulations than this in a first fit warn: the posterior will be poor.
MIN_SIMULATIONS = 100


def check_training_data(estimator, X, y, nan_policy: str, reset: bool, observation_shape=None):
    """``theta`` ``(n, p)`` and flat ``x`` ``(n, D)`` as float64, and the mask of kept rows.

    With ``reset`` the feature count and names of ``theta`` (recorded on a probe, not on
    ``estimator``) and the column names of ``x`` are returned as ``(n_features_in_,
    feature_names_in_ or None, observation_names_in_ or None)`` so that the caller can
    assign them when the fit succeeds; otherwise they are checked against the estimator's.
    """
    owner = type(estimator).__name__
    if y is None:
        raise ValueError(
            f"{owner} requires y to be passed, but the target y is None: call fit(theta, x) "
            "with the simulated observations x."
        )
    target = object.__new__(type(estimator)) if reset else estimator
    with named_errors("theta (X)"):
        theta = validate_data(
            target, as_array_input(X), reset=reset, dtype=np.float64, ensure_min_samples=1
        )
    x_names = column_names(y) if reset else None
    if not reset:
        check_names(y, "x (y)", owner, getattr(estimator, "observation_names_in_", None))
    features = (target.n_features_in_, getattr(target, "feature_names_in_", None), x_names)
    with named_errors("x (y)"):
        x = flatten_training_observations(as_array_input(y), len(theta), observation_shape, owner)
    with named_errors("theta (X) and x (y)"):
        check_consistent_length(theta, x)
    keep = _apply_nan_policy(x, nan_policy)
    if reset and keep.sum() < MIN_SIMULATIONS:
        warnings.warn(
            f"Only {int(keep.sum())} simulations: below {MIN_SIMULATIONS}, the flows learn "
            "little more than the prior and the posterior may be far off. Neural posterior "
            "estimation usually needs thousands.",
            UserWarning,
            stacklevel=4,
        )
    return theta[keep], x[keep], keep, features


def _apply_nan_policy(x: np.ndarray, nan_policy: str) -> np.ndarray:
    """Rows to keep; warns about the dropped ones, or raises."""
    huge = exceeds_magnitude(x).any(axis=1)
    bad = ~np.isfinite(x).all(axis=1) | huge
    n_bad = int(bad.sum())
    if not n_bad:
        return ~bad
    first = int(np.flatnonzero(bad)[0])
    what = "NaN or infinity" + (
        f" (or values of magnitude above {MAX_ABS_VALUE:.0e}, which overflow float32 "
        "training; rescale x if that is its scale)"
        if huge.any()
        else ""
    )
    if nan_policy == "raise" or n_bad == len(x):
        raise ValueError(
            f"x holds {what} in {n_bad} of {len(x)} simulations (first at row {first}); with "
            f"nan_policy={nan_policy!r} they "
            + ("cannot be used." if nan_policy == "raise" else "leave no data.")
        )
    warnings.warn(
        f"Dropped {n_bad} of {len(x)} simulations whose x holds {what} (first at row "
        f"{first}); nan_policy='drop'.",
        UserWarning,
        stacklevel=5,
    )
    return ~bad


def check_theta_log_prob(theta_log_prob, n_rows: int, has_prior: bool) -> np.ndarray | None:
    """``theta_log_prob`` as float64 ``(n_rows,)``, finite or ``-inf``; ``None`` stays."""
    if theta_log_prob is None:
        return None
    if not has_prior:
        raise ValueError(
            "theta_log_prob needs a prior: with prior=None the training distribution is "
            "taken as the prior, so rows from a proposal cannot be told apart. Pass "
            "prior=[...] to the estimator."
        )
    log_prob = to_float_array(theta_log_prob, "theta_log_prob", ensure_all_finite=False)
    if log_prob.shape != (n_rows,):
        raise ValueError(
            f"theta_log_prob has shape {log_prob.shape}, but theta has {n_rows} rows; "
            f"expected shape ({n_rows},)."
        )
    if np.isnan(log_prob).any() or np.isposinf(log_prob).any():
        first = int(np.flatnonzero(~(np.isfinite(log_prob) | np.isneginf(log_prob)))[0])
        raise ValueError(
            f"theta_log_prob must be finite or -inf, got {log_prob[first]} at row {first}."
        )
    return log_prob


@dataclass
class TrainingRows:
    """One round's rows in u space: ``u`` ``(n, d)``, ``log_proposal`` ``(n,)`` (the
    density each row was drawn from, in u) and ``from_prior`` ``(n,)``."""

    u: np.ndarray
    log_proposal: np.ndarray
    from_prior: np.ndarray


def to_training_rows(space, theta: np.ndarray, log_prob: np.ndarray | None) -> TrainingRows:
    """Map ``theta`` to u with ``space`` (a prior or a standardizer) and record provenance.

    ``log_prob`` is the proposal's log-density in ``theta`` space (``None``: the prior);
    in u it is ``log_prob - log|du/dtheta|``, and the prior is uniform on the cube.
    """
    u, log_jac, support = space.theta_to_u(theta)
    if not support.all():
        first = int(np.flatnonzero(~support)[0])
        raise ValueError(
            f"{int((~support).sum())} of {len(theta)} theta rows lie outside the prior's "
            f"support (first: row {first}, theta={theta[first].tolist()}); were the "
            "simulations drawn from this prior?"
        )
    if log_prob is None:
        density = space.cube_log_density if space.is_prior else 0.0
        return TrainingRows(u, np.full(len(u), density), np.ones(len(u), dtype=bool))
    return TrainingRows(u, log_prob - log_jac, np.zeros(len(u), dtype=bool))
