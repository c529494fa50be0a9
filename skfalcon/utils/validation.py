"""Input validation shared by the façade: arrays whose errors name the argument."""

import re

import numpy as np
from sklearn.utils import check_array

__all__ = [
    "MAX_ABS_VALUE",
    "as_array_input",
    "check_magnitude",
    "check_positive_int",
    "exceeds_magnitude",
    "named_errors",
    "to_float_array",
]

#: Largest magnitude accepted in observations. Training runs in float32 and the running
#: normalisation squares deviations, so larger values would overflow its variance.
MAX_ABS_VALUE = 1e18


class named_errors:
    """Context manager that prefixes ``ValueError``/``TypeError`` messages with ``name``.

    scikit-learn's and numpy's messages ("Found array with dim 3 ...", "could not convert
    string to float") do not say which argument they are about; the re-raised error keeps
    the type and the original message.
    """

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type in (ValueError, TypeError) and not self._names_it(str(exc)):
            raise exc_type(f"{self.name}: {exc}") from exc
        return False

    def _names_it(self, message: str) -> bool:
        # Any word of the name standing alone, e.g. "Input X contains NaN" for "theta (X)".
        return any(
            re.search(rf"(?<![\w.]){re.escape(word)}(?![\w.])", message)
            for word in re.findall(r"\w+", self.name)
        )


def to_float_array(value, name: str, **check_array_kwargs) -> np.ndarray:
    """``check_array(value, dtype=float64, ...)`` with errors that name ``name``.

    ``None`` is refused as ``None`` (scikit-learn would report it as NaN).
    """
    if value is None:
        raise ValueError(f"{name} is None; expected an array of numbers.")
    check_array_kwargs.setdefault("ensure_2d", False)
    with named_errors(name):
        return check_array(value, dtype=np.float64, input_name=name, **check_array_kwargs)


def exceeds_magnitude(values: np.ndarray) -> np.ndarray:
    """Mask of the finite entries larger in magnitude than :data:`MAX_ABS_VALUE`."""
    return np.isfinite(values) & (np.abs(values) > MAX_ABS_VALUE)


def check_magnitude(values: np.ndarray, name: str) -> None:
    """Raise a ``ValueError`` naming ``name`` if a finite entry exceeds :data:`MAX_ABS_VALUE`."""
    too_large = exceeds_magnitude(values)
    if too_large.any():
        index = np.unravel_index(int(np.flatnonzero(too_large)[0]), values.shape)
        raise ValueError(
            f"{name} holds {int(too_large.sum())} value(s) of magnitude above "
            f"{MAX_ABS_VALUE:.0e} (first: {values[index]:.3g} at index {tuple(map(int, index))}); "
            "training runs in float32, where such values overflow. Rescale x (change its "
            "units, or take logarithms) before fitting and sampling."
        )


def check_positive_int(value, name: str) -> int:
    """``value`` as an int, or a ``ValueError`` naming ``name`` (bools are refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def as_array_input(value):
    """``value`` with torch tensors detached and moved to the CPU as numpy arrays, so that
    a tensor that requires grad, or lives on a GPU, is read like any array."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if type(value) is dict:  # named observations (not a dict subclass such as a dok_matrix)
        return {k: as_array_input(v) for k, v in value.items()}
    return value
