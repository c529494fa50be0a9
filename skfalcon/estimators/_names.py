"""Column names of theta and x: recorded at fit, checked in every method.

A DataFrame's columns (or a Series' index, for one observation) are compared with the
names seen at fit, in order: another order would silently mean other numbers, so it is an
error that lists both. Names on one side only warn, as scikit-learn does.
"""

import warnings

import numpy as np

__all__ = ["check_names", "column_names"]


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
