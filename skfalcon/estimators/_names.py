"""Column names of theta and x: recorded at fit, checked in every method.

A DataFrame's columns (or a Series' index, for one observation) are compared with the
names seen at fit, in order: another order would silently mean other numbers, so it is an
error that lists both. Names on one side only warn, as scikit-learn does. Samples can be
returned as DataFrames whose columns are the inferred parameters' names.
"""

import warnings

import numpy as np

__all__ = ["check_names", "column_names", "parameter_names", "samples_frame"]


def column_names(value) -> np.ndarray | None:
    """The string column names of a DataFrame (or index of a Series), else ``None``."""
    names = getattr(value, "columns", None)
    if names is None and type(value).__name__ == "Series":
        names = value.index
    if names is None or len(names) == 0 or not all(isinstance(n, str) for n in names):
        return None
    return np.asarray(list(names), dtype=object)


def check_names(value, name: str, owner: str, expected, *alternatives) -> None:
    """Check the names of ``value`` against ``expected`` (or one of ``alternatives``).

    ``expected`` is what was recorded at fit (``None``: no names then); ``alternatives``
    are other accepted name lists, such as the inferred columns only.
    """
    given = column_names(value)
    if expected is None:
        if given is not None:
            warnings.warn(
                f"{name} has column names, but {owner} was fitted without them; they are "
                "ignored and the columns are read by position.",
                UserWarning,
                stacklevel=4,
            )
        return
    if given is None:
        if hasattr(value, "columns"):
            return  # a DataFrame of non-string names: positions, as scikit-learn reads it
        warnings.warn(
            f"{name} has no column names, but {owner} was fitted with {list(expected)}; "
            "its columns are read in that order.",
            UserWarning,
            stacklevel=4,
        )
        return
    accepted = [list(expected), *(list(a) for a in alternatives)]
    if list(given) not in accepted:
        raise ValueError(
            f"{name} has columns {list(given)}, but {owner} was fitted with "
            f"{' or '.join(map(str, accepted))}, in this order; reorder or rename the columns "
            "(columns are matched by name and position, never by position alone)."
        )


def parameter_names(feature_names, inferred: np.ndarray) -> list[str]:
    """Names of the inferred columns of ``theta``: those recorded at fit, else ``theta{i}``
    with ``i`` the column's index in ``theta`` (scikit-learn's ``x{i}``, for ``theta``)."""
    if feature_names is not None:
        return [str(n) for n in np.asarray(feature_names)[inferred]]
    return [f"theta{i}" for i in np.flatnonzero(inferred)]


def samples_frame(theta: np.ndarray, names: list[str], as_frame, x=None):
    """``theta`` as :meth:`~skfalcon.FlowPosteriorEstimator.sample` returns it with
    ``as_frame``: unchanged when it is False, else a DataFrame with columns ``names``.

    Samples ``(n, d)`` of one observation get a ``RangeIndex`` named ``draw``; samples
    ``(m, n, d)`` of several get the MultiIndex ``(observation, draw)``, where
    ``observation`` is the index of ``x`` when it is a DataFrame, else ``0..m-1``.
    """
    if not isinstance(as_frame, (bool, np.bool_)):
        raise ValueError(f"as_frame must be True or False, got {as_frame!r}.")
    if not as_frame:
        return theta
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "as_frame=True needs pandas, which is not installed: pip install pandas."
        ) from None
    if theta.ndim == 2:
        return pd.DataFrame(theta, columns=names, index=pd.RangeIndex(len(theta), name="draw"))
    m, n = theta.shape[:2]
    observations = x.index if isinstance(x, pd.DataFrame) else pd.RangeIndex(m)
    index = pd.MultiIndex.from_product(
        [observations, pd.RangeIndex(n)], names=["observation", "draw"]
    )
    return pd.DataFrame(theta.reshape(m * n, -1), columns=names, index=index)
