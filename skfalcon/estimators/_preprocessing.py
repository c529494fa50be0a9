"""``x_preprocessor``: a scikit-learn transformer between the observations and the networks.

A clone of the transformer is fitted on the training ``x`` (after the NaN policy has
dropped its rows) and then applied to every observation a method receives, before the
float64 standardization. It sees ``x`` as a DataFrame with the columns recorded at fit
when ``x`` had column names, and as the 2-D array of flat rows otherwise; what it returns
(2-D, numeric, dense) is what the networks see.
"""

import math
from collections.abc import Mapping

import numpy as np
from scipy import sparse
from sklearn.base import clone

from skfalcon.estimators._observations import _describe
from skfalcon.utils.validation import check_magnitude

__all__ = [
    "fit_preprocessor",
    "network_shape",
    "preprocess_training",
    "transform_observations",
]


def _as_input(x2d: np.ndarray, names):
    """What the transformer is given: a DataFrame with ``names`` as columns, or the rows."""
    if names is None:
        return x2d
    import pandas as pd  # names were recorded from a DataFrame, so pandas is installed

    return pd.DataFrame(x2d, columns=list(names))


def transform_observations(preprocessor, x2d: np.ndarray, names, name: str = "x") -> np.ndarray:
    """Flat observations ``(m, D)`` through the fitted ``preprocessor`` (``None``: as they
    are), as float64 rows ``(m, k)``; anything else it returns is a ``ValueError``."""
    if preprocessor is None:
        return x2d
    out = preprocessor.transform(_as_input(x2d, names))
    if sparse.issparse(out):
        raise ValueError(
            f"x_preprocessor={preprocessor!r} returned a sparse matrix for {name}, but the "
            "networks need dense features: configure it to return a dense array (e.g. "
            "OneHotEncoder(sparse_output=False), ColumnTransformer(sparse_threshold=0))."
        )
    try:
        features = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"x_preprocessor={preprocessor!r} returned a {type(out).__name__} for {name} "
            f"that is not an array of numbers ({exc})."
        ) from None
    if features.ndim != 2 or len(features) != len(x2d) or features.shape[1] == 0:
        raise ValueError(
            f"x_preprocessor={preprocessor!r} returned shape {features.shape} for {len(x2d)} "
            f"observation(s) of {name}; expected ({len(x2d)}, n_features_out) with "
            "n_features_out >= 1."
        )
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        raise ValueError(
            f"x_preprocessor={preprocessor!r} turned {int(bad.sum())} of {len(x2d)} "
            f"observation(s) of {name} into NaN or infinity (first at row "
            f"{int(np.flatnonzero(bad)[0])}), e.g. a logarithm of a negative value; make it "
            "defined on every observation."
        )
    check_magnitude(features, f"x_preprocessor's output for {name}")
    return features


def preprocess_training(preprocessor, x2d: np.ndarray, names, shape, embedding, *, refit):
    """The preprocessor of a fit, the training rows it gives and the embedding's shape.

    With ``refit`` a clone of ``preprocessor`` (the hyperparameter) is fitted on ``x2d``,
    the training rows left by the NaN policy; otherwise ``preprocessor`` is the fitted one
    of an earlier fit, kept because the networks learned its representation.
    """
    if refit:
        preprocessor = fit_preprocessor(preprocessor, x2d, names)
    features = transform_observations(preprocessor, x2d, names, "the training x (y)")
    return preprocessor, features, network_shape(shape, features.shape[1], embedding)


def fit_preprocessor(template, x2d: np.ndarray, names):
    """A clone of ``template`` fitted on the training rows ``x2d`` (``None`` stays ``None``).

    ``fit`` then ``transform`` (not ``fit_transform``, which some transformers compute
    differently), so that the training rows go through exactly what later observations do.
    """
    if template is None:
        return None
    return clone(template).fit(_as_input(x2d, names))


def network_shape(shape, n_features: int, embedding):
    """The observation shape the embedding is built for, once ``x`` is preprocessed.

    A preprocessor that keeps the flat row length keeps ``shape``; one that changes it
    leaves flat rows ``(n_features,)``, which an embedding that reads a multi-dimensional
    shape or named inputs cannot take.
    """
    shapes = shape.values() if isinstance(shape, Mapping) else [shape]
    flat = sum(math.prod(s) for s in shapes)
    if n_features == flat:
        return shape
    if embedding is None or (not isinstance(shape, Mapping) and len(shape) == 1):
        return (n_features,)
    raise ValueError(
        f"x_preprocessor turns observations of shape {_describe(shape)} ({flat} flat "
        f"features) into {n_features} features, but the embedding ({_label(embedding)}) "
        "reads the observation's shape. Use a preprocessor that keeps every feature (e.g. an "
        "elementwise FunctionTransformer), or embedding=None."
    )


def _label(embedding) -> str:
    if isinstance(embedding, str):
        return repr(embedding)
    if isinstance(embedding, Mapping):
        return "a dict of embeddings for " + ", ".join(map(repr, embedding))
    return f"a {type(embedding).__name__}"
