"""Saving and loading fitted estimators with joblib, with errors that say what went wrong.

``joblib.dump``/``joblib.load`` and ``pickle`` work on estimators directly; :func:`load`
adds a clear error for truncated or foreign files and checks what was loaded.
"""

import pickle
from pathlib import Path

import joblib
from sklearn.base import BaseEstimator

__all__ = ["load", "save"]


def save(estimator: BaseEstimator, path, *, compress: int = 3) -> Path:
    """Write ``estimator`` to ``path`` with :func:`joblib.dump` and return the path.

    The file holds constructor specifications and numpy arrays, not torch storages, so it
    loads on a machine without the GPU the estimator was fitted on.
    """
    path = Path(path)
    joblib.dump(estimator, path, compress=compress)
    return path


def load(path, *, expected=BaseEstimator):
    """Load an estimator written by :func:`save` or :func:`joblib.dump`.

    Parameters
    ----------
    path : str or path-like
        The file.
    expected : type, default=BaseEstimator
        The class the loaded object must be an instance of.

    Raises
    ------
    ValueError
        If the file is truncated, not a joblib/pickle file, or holds something else.
    """
    try:
        obj = joblib.load(path)
    except (EOFError, pickle.UnpicklingError, ValueError, KeyError, IndexError) as exc:
        raise ValueError(
            f"Could not load a skfalcon model from {str(path)!r}: the file is truncated or "
            f"not a joblib/pickle file ({type(exc).__name__}: {exc or 'unexpected end'})."
        ) from exc
    if not isinstance(obj, expected):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a {expected.__name__}.")
    return obj
