"""Observations of any shape, or dicts of named arrays, to the flat rows the engine uses.

The engine trains and samples on flat float rows ``(n, D)``; an observation's shape, or the
names and shapes of its inputs, are recorded at fit (``observation_shape_``) and restored by
the embedding (:func:`skfalcon.engine.build_embedding`). A numpy structured array is read
like a dict of its fields; it is the indexable form of dict data that scikit-learn's
cross-validation can split by rows.
"""

import copy
import math
from collections.abc import Mapping

import numpy as np
from sklearn.utils import check_array
from torch import nn

__all__ = [
    "embedding_spec",
    "flatten_observations",
    "flatten_training_observations",
    "observation_shape_of",
]


def _as_mapping(x):
    """A dict of arrays for a dict, a structured array or one of its records; else None."""
    if isinstance(x, Mapping):
        return x
    if isinstance(x, (np.ndarray, np.void)) and x.dtype.names is not None:
        return {name: x[name] for name in x.dtype.names}
    return None


def _trailing(shape: tuple) -> tuple:
    """Shape of one observation from the shape of a batch; a 1-D batch is one feature."""
    return tuple(int(s) for s in shape[1:]) or (1,)


def observation_shape_of(y):
    """Shape of one observation of the (already validated) training ``y``: a tuple, or a
    dict of tuples for named inputs, in the order they are flattened."""
    mapping = _as_mapping(y)
    if mapping is not None:
        return {str(name): _trailing(np.shape(value)) for name, value in mapping.items()}
    return _trailing(np.shape(y))


def _describe(shape) -> str:
    if isinstance(shape, Mapping):
        return "{" + ", ".join(f"{k!r}: {tuple(s)}" for k, s in shape.items()) + "}"
    return str(tuple(shape))


def _check_keys(mapping: Mapping, expected: Mapping, name: str, owner: str) -> None:
    missing = [k for k in expected if k not in mapping]
    extra = [k for k in mapping if k not in expected]
    if missing or extra:
        raise ValueError(
            f"{name} has inputs {list(mapping)}, but {owner} was fitted with inputs "
            f"{list(expected)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else "")
            + "."
        )


def flatten_training_observations(y, n_rows: int, expected, owner: str) -> np.ndarray:
    """Training ``x`` as float64 rows ``(n_rows, D)``; NaN and infinity are kept.

    ``y`` is an array ``(n, *shape)`` (1-D: one feature) or a dict / structured array of
    named arrays ``(n, *shape_name)``. ``expected`` is the ``observation_shape_`` of an
    earlier fit to match, or ``None``.
    """
    mapping = _as_mapping(y)
    if mapping is None:
        if isinstance(expected, Mapping):
            raise ValueError(
                f"{owner} was fitted with dict observations {_describe(expected)}; x (y) must "
                f"be a dict of arrays with these names, got {type(y).__name__}."
            )
        x = check_array(
            y,
            ensure_2d=False,
            allow_nd=True,
            dtype=np.float64,
            ensure_all_finite=False,
            input_name="y",
        )
        if x.ndim == 0:
            raise ValueError("x (y) must hold one row per simulation, got a scalar.")
        shape = _trailing(x.shape)
        if expected is not None and shape != tuple(expected):
            if len(shape) == 1 and len(expected) == 1:
                message = f"x has {shape[0]} features, but {owner} was fitted with {expected[0]}."
            else:
                message = (
                    f"x has observations of shape {shape}, but {owner} was fitted with "
                    f"observations of shape {tuple(expected)}."
                )
            raise ValueError(message)
        return x.reshape(len(x), -1)

    if not mapping:
        raise ValueError("x (y) is an empty dict; pass at least one named array.")
    bad = [k for k in mapping if not isinstance(k, str)]
    if bad:
        raise ValueError(f"The names of dict observations must be str, got {bad}.")
    if expected is not None:
        if not isinstance(expected, Mapping):
            raise ValueError(
                f"{owner} was fitted with array observations of shape {tuple(expected)}; "
                f"x (y) must be such an array, got a dict with inputs {list(mapping)}."
            )
        _check_keys(mapping, expected, "x", owner)
    names = list(expected) if expected is not None else list(mapping)
    parts = []
    for name in names:
        key = f"x[{name!r}]"
        part = check_array(
            mapping[name],
            ensure_2d=False,
            allow_nd=True,
            dtype=np.float64,
            ensure_all_finite=False,
            input_name=key,
        )
        if part.ndim == 0 or len(part) != n_rows:
            rows = "a scalar" if part.ndim == 0 else f"{len(part)} rows"
            raise ValueError(
                f"{key} has {rows} but theta has {n_rows}; every input needs one row per "
                "simulation."
            )
        shape = _trailing(part.shape)
        if expected is not None and shape != tuple(expected[name]):
            raise ValueError(
                f"{key} has observations of shape {shape}, but {owner} was fitted with shape "
                f"{tuple(expected[name])}."
            )
        parts.append(part.reshape(n_rows, -1))
    return np.concatenate(parts, axis=1)


def _check_finite(x: np.ndarray, name: str) -> np.ndarray:
    # check_array's own message ("Input x contains NaN."), also for single observations.
    return check_array(x.reshape(1, -1), dtype=np.float64, input_name=name).reshape(x.shape)


def flatten_observations(x, shape, *, name: str, owner: str, batch: bool = False):
    """Observations as float64 rows ``(m, D)`` and whether a single one was given.

    An array of ``shape`` is one observation, one of ``(m, *shape)`` a batch of ``m``; a
    dict follows the same rule per input (a scalar input may be given as a number, or a 1-D
    array for a batch). ``batch=True`` accepts only a batch.
    """
    mapping = _as_mapping(x)
    if not isinstance(shape, Mapping):
        shape = tuple(shape)
        if mapping is not None:
            raise ValueError(
                f"{owner} was fitted with array observations of shape {shape}; {name} must be "
                f"such an array, got a dict with inputs {list(mapping)}."
            )
        array = check_array(x, ensure_2d=False, allow_nd=True, dtype=np.float64, input_name=name)
        if batch and array.ndim == 1 and shape == (1,):
            array = array[:, None]  # (n,) for one feature
        if array.shape == shape and not batch:
            return array.reshape(1, -1), True
        if array.shape[1:] == shape:
            return array.reshape(len(array), -1), False
        n_features = math.prod(shape)
        if len(shape) == 1 and array.ndim == 1 and not batch:
            raise ValueError(
                f"{name} has {array.shape[0]} features, but {owner} was fitted with "
                f"{n_features}; pass one observation of shape ({n_features},) or several of "
                f"shape (n_observations, {n_features})."
            )
        if len(shape) == 1:
            raise ValueError(
                f"{name} has shape {array.shape}, but {owner} was fitted with {n_features} "
                f"observation features; expected "
                + ("" if batch else f"({n_features},) or ")
                + f"(n_observations, {n_features})."
            )
        raise ValueError(
            f"{name} has shape {array.shape}, but {owner} was fitted with observations of "
            f"shape {shape}; expected " + ("" if batch else f"{shape} or ") + "(n_observations, "
            f"{', '.join(map(str, shape))})."
        )

    if mapping is None:
        raise ValueError(
            f"{owner} was fitted with dict observations {_describe(shape)}; {name} must be a "
            f"dict (or structured array) with these names, got {type(x).__name__}."
        )
    _check_keys(mapping, shape, name, owner)
    arrays, counts = {}, {}
    for key, expected in shape.items():
        label = f"{name}[{key!r}]"
        array = _check_finite(np.asarray(mapping[key], dtype=np.float64), label)
        expected = tuple(expected)
        if expected == (1,) and array.ndim <= 1:
            # A scalar input: a number is one observation, a 1-D array a batch.
            if array.ndim == 0:
                counts[key] = None
            else:
                counts[key] = "either" if len(array) == 1 and not batch else len(array)
            array = array.reshape(-1, 1)
        elif array.shape == expected and not batch:
            counts[key] = None  # one observation, without the batch axis
        elif array.shape[1:] == expected:
            counts[key] = len(array)
        else:
            raise ValueError(
                f"{label} has shape {array.shape}; expected "
                + ("" if batch else f"{expected} for one observation or ")
                + f"(n_observations, {', '.join(map(str, expected))})"
                + ("" if batch else " for several")
                + "."
            )
        arrays[key] = array
    kinds = {c for c in counts.values() if c != "either"}
    if len(kinds) > 1:
        described = {k: "one" if c is None else c for k, c in counts.items() if c != "either"}
        raise ValueError(
            f"The inputs of {name} disagree on the number of observations: {described} "
            "(one = a single observation without the batch axis)."
        )
    count = kinds.pop() if kinds else None
    single = count is None
    rows = 1 if single else count
    flat = np.concatenate([arrays[k].reshape(rows, -1) for k in shape], axis=1)
    return flat, single


def _template(embedding):
    """A picklable constructor template: modules deep-copied to the CPU, untrained."""
    if isinstance(embedding, nn.Module):
        return copy.deepcopy(embedding).cpu()
    if isinstance(embedding, Mapping):
        return {k: _template(v) for k, v in embedding.items()}
    return embedding


def embedding_spec(params, shape) -> dict | None:
    """The part of the network spec that builds the embedding (``None``: the default) for
    observations of ``shape`` (as :func:`observation_shape_of` gives it)."""
    if params.embedding is None:
        return None
    return {
        "embedding": _template(params.embedding),
        "shape": shape,
        "out_features": params.embedding_features,
        "hidden_features": params.embedding_hidden_features,
        "momentum": params.norm_momentum,
    }
