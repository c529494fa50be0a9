"""Running a simulator over parameter rows, in chunks through joblib, with its outputs checked.

:func:`simulate` splits the rows into as many chunks as the active joblib backend runs at
once, so that a Dask or Ray backend (``joblib.parallel_backend``) spreads them over its
workers, and returns the observations as float64 arrays ``(n, *shape)``, or a dict of them
for named outputs. :func:`check_observation` and :func:`match_observation` check the one
observation a sequential run focuses on.
"""

import joblib
import numpy as np
from sklearn.utils import check_array

from skfalcon.estimators._observations import _as_mapping

try:  # joblib >= 1.6 depends on cloudpickle; older versions vendor it
    import cloudpickle
except ImportError:  # pragma: no cover
    from joblib.externals import cloudpickle

__all__ = ["check_observation", "match_observation", "simulate", "simulator_name"]


def simulator_name(simulator) -> str:
    return getattr(simulator, "__qualname__", None) or type(simulator).__qualname__


def simulate(simulator, theta: np.ndarray, n_jobs: int | None):
    """Run ``simulator`` on the rows of ``theta``, in chunks through :class:`joblib.Parallel`.

    ``theta`` is split into as many chunks as the active joblib backend runs at once for
    ``n_jobs``, so a Dask or Ray backend (``joblib.parallel_backend``) spreads them over
    its workers. Returns the observations as one float64 array ``(n, *shape)``, or a dict
    of them when the simulator returns named outputs.
    """
    n_chunks = max(1, min(len(theta), joblib.effective_n_jobs(n_jobs)))
    chunks = np.array_split(theta, n_chunks)
    try:
        outputs = joblib.Parallel(n_jobs=n_jobs)(
            joblib.delayed(simulator)(chunk) for chunk in chunks
        )
    except Exception as exc:
        # Only a process backend pickles the simulator; say so when that is what failed.
        try:
            cloudpickle.dumps(simulator)
        except Exception as pickling_error:
            raise ValueError(
                f"The simulator {simulator_name(simulator)!r} cannot be pickled "
                f"({pickling_error}), but n_jobs={n_jobs!r} with the active joblib backend "
                "runs it in other processes. Define it as a module-level function (or an "
                "object whose attributes pickle), or run it in threads with "
                "joblib.parallel_backend('threading'), or use n_jobs=None."
            ) from exc
        raise
    name = simulator_name(simulator)
    batches = [_as_batch(out, len(chunk), name) for chunk, out in zip(chunks, outputs, strict=True)]
    layouts = {_describe_batch(b) for b in batches}
    if len(layouts) > 1:
        raise ValueError(
            f"The simulator {name!r} returned observations of different shapes "
            f"{sorted(layouts)} for different chunks."
        )
    if isinstance(batches[0], dict):
        return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    return np.concatenate(batches)


def _as_rows(out, n_rows: int, what: str) -> np.ndarray:
    """One simulator output as float64 ``(n_rows, *shape)``; 1-D is one feature per row."""
    out = np.asarray(out, dtype=np.float64)
    if out.ndim == 1 and out.shape[0] == n_rows:
        out = out[:, None]
    if out.ndim < 2 or out.shape[0] != n_rows:
        raise ValueError(
            f"{what} is an array of shape {out.shape} for {n_rows} parameter rows; expected "
            f"one observation per row, shape ({n_rows}, *observation_shape)."
        )
    return out


def _as_batch(out, n_rows: int, name: str):
    """A simulator's return value as rows: an array, or a dict of arrays for named outputs."""
    mapping = _as_mapping(out)
    if mapping is None:
        return _as_rows(out, n_rows, f"The output of simulator {name!r}")
    if not mapping or not all(isinstance(key, str) for key in mapping):
        raise ValueError(
            f"The simulator {name!r} returned a dict with keys {list(mapping)}; named "
            "outputs need at least one key, and str keys."
        )
    return {
        key: _as_rows(value, n_rows, f"Output {key!r} of simulator {name!r}")
        for key, value in mapping.items()
    }


def _describe_batch(batch) -> str:
    if isinstance(batch, dict):
        return str({key: value.shape[1:] for key, value in batch.items()})
    return str(batch.shape[1:])


def check_observation(x_obs):
    """``x_obs`` as a finite float64 array of any shape, or a dict of them (a number is
    one feature)."""

    def check(value, name: str) -> np.ndarray:
        value = np.atleast_1d(np.asarray(value)) if np.ndim(value) == 0 else value
        return np.asarray(
            check_array(value, ensure_2d=False, allow_nd=True, dtype=np.float64, input_name=name)
        )

    mapping = _as_mapping(x_obs)
    if mapping is None:
        return check(x_obs, "x_obs")
    if not mapping:
        raise ValueError("x_obs is an empty dict; pass one array per named observation.")
    return {key: check(value, f"x_obs[{key!r}]") for key, value in mapping.items()}


def match_observation(x_obs, x, source: str):
    """``x_obs`` as one observation of the simulator's outputs ``x`` (a leading axis of 1
    is dropped), or a ``ValueError`` saying which shapes disagree."""

    def match(value: np.ndarray, shape: tuple, label: str) -> np.ndarray:
        if value.shape == shape:
            return value
        if value.shape == (1, *shape):
            return value[0]
        raise ValueError(
            f"{label} must be one observation of shape {shape}, as the simulator "
            f"{source!r} returns them, got shape {value.shape}."
        )

    if isinstance(x, dict) != isinstance(x_obs, dict):
        kind = "named outputs " + str(list(x)) if isinstance(x, dict) else "an array"
        raise ValueError(
            f"x_obs must be one observation as the simulator {source!r} returns them "
            f"({kind}), got {'a dict' if isinstance(x_obs, dict) else 'an array'}."
        )
    if not isinstance(x, dict):
        return match(x_obs, x.shape[1:], "x_obs")
    if set(x_obs) != set(x):
        raise ValueError(
            f"x_obs has inputs {list(x_obs)}, but the simulator {source!r} returns {list(x)}."
        )
    return {key: match(x_obs[key], x[key].shape[1:], f"x_obs[{key!r}]") for key in x}
