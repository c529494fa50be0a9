"""Running a simulator over parameter rows: in seeded chunks through joblib, faults contained.

:func:`simulate` serves :class:`~skfalcon.SequentialInference` and any script that makes
training data (``est.fit(theta, simulate(simulator, theta, random_state=0))``).

**Chunks and seeds.** The rows are cut into chunks of ``chunk_size`` rows, however many
workers run them, and each chunk is one simulator call in :class:`joblib.Parallel` (any
joblib backend: processes, threads, Dask, Ray). Chunk ``k`` gets the ``k``-th child of
``numpy.random.SeedSequence(random_state).spawn(n_chunks)``; children of a seed sequence
are independent streams, so no two chunks share noise, and since neither the chunks nor
their seeds depend on ``n_jobs`` or on the backend, a seeded simulator gives the same
observations whoever runs it. A simulator with an ``rng`` keyword receives its chunk's
stream as a :class:`numpy.random.Generator`; one with a ``random_state`` keyword receives an
int in ``[0, 2**32)`` (what :func:`sklearn.utils.check_random_state` and
:class:`numpy.random.RandomState` take). Other simulators keep their own randomness.

**Faults.** A chunk fails when the simulator raises, returns something that is not one
observation per row of the same shape as the other chunks (or as ``observation_shape``), or
runs past ``timeout``. ``on_error="raise"`` raises (cancelling the chunks still running);
``on_error="drop"`` warns, fills the failed chunk's rows with NaN and goes on.

:func:`check_observation` and :func:`match_observation` check the one observation a
sequential run focuses on.
"""

import contextlib
import functools
import inspect
import multiprocessing
import numbers
import traceback
import typing
import warnings
from dataclasses import dataclass

import joblib
import numpy as np
from sklearn.utils import check_array, check_random_state, check_scalar

from skfalcon.estimators._observations import (
    _as_mapping,
    flatten_training_observations,
    observation_shape_of,
)
from skfalcon.estimators._params import FlowPosteriorParams
from skfalcon.estimators._training_data import _apply_nan_policy
from skfalcon.priors import make_prior
from skfalcon.utils.validation import check_positive_int

try:  # joblib >= 1.6 depends on cloudpickle; older versions vendor it
    import cloudpickle
except ImportError:  # pragma: no cover
    from joblib.externals import cloudpickle

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "SimulatorError",
    "check_observation",
    "concatenate_observations",
    "match_observation",
    "seed_keyword",
    "simulate",
    "simulate_from_prior",
    "simulator_name",
    "take_observations",
]

#: Rows per simulator call. Small enough that a round of a few hundred simulations keeps a
#: dozen workers busy and a failed or timed-out chunk loses few rows; a vectorized
#: simulator pays one Python call per chunk, negligible next to training.
DEFAULT_CHUNK_SIZE = 32

# joblib reports a timeout with multiprocessing's TimeoutError, which is not the builtin.
_TIMEOUTS = (TimeoutError, multiprocessing.TimeoutError)
# Failures described in a "drop" warning; the rest are counted.
_FAILURES_SHOWN = 3


class SimulatorError(RuntimeError):
    """The simulator raised, or ran past the timeout, on a chunk of parameter rows.

    The message names the simulator, the chunk and its rows; ``__cause__`` is the
    simulator's own exception (or joblib's ``TimeoutError``).
    """


def simulator_name(simulator) -> str:
    """A simulator's name for messages: its qualified name, or its class's."""
    return getattr(simulator, "__qualname__", None) or type(simulator).__qualname__


def seed_keyword(simulator) -> str | None:
    """The keyword through which :func:`simulate` seeds ``simulator``.

    ``"rng"`` (given a :class:`numpy.random.Generator`) when the simulator takes one,
    else ``"random_state"`` (given an int), else ``None``: its randomness is its own. The
    first parameter takes ``theta`` and is never the seed; ``**kwargs`` does not count.
    A seed bound with :func:`functools.partial` is overridden, so that chunks differ.
    """
    try:
        parameters = list(inspect.signature(simulator).parameters.values())[1:]
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return None
    passable = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in parameters if p.kind in passable}
    return next((name for name in ("rng", "random_state") if name in names), None)


def _seed_sequence(random_state) -> np.random.SeedSequence:
    """The run's root seed sequence: itself, ``SeedSequence(int)``, or 128 bits drawn from a
    generator (``None``: numpy's global one, as scikit-learn's ``None`` means)."""
    if isinstance(random_state, np.random.SeedSequence):
        return random_state
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return np.random.SeedSequence(int(random_state))
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(random_state.integers(2**32, size=4))
    words = check_random_state(random_state).randint(2**32, size=4, dtype=np.uint64)
    return np.random.SeedSequence(words)


@dataclass
class _Failure:
    """Why chunk ``index`` gave no observations: ``kind`` is ``"raised"``, ``"output"`` or
    ``"timeout"``. ``trace`` keeps the traceback as text, which an exception sent back
    from another process loses."""

    index: int
    kind: str
    error: BaseException
    trace: str = ""


class _ChunkFailed(Exception):
    """Carries a chunk's failure out of joblib under ``on_error="raise"``: raising (not
    returning) makes joblib cancel the chunks still running."""


def _call_chunk(simulator, chunk, index, keyword, seed, fail_fast, name, expected):
    """One chunk in a worker: the simulator's output as rows, or its :class:`_Failure`.

    Checked here rather than when all are back, so that under ``fail_fast`` a chunk of
    the wrong shape cancels the others as an exception does.
    """
    if keyword == "rng":
        kwargs = {"rng": np.random.default_rng(seed)}
    elif keyword == "random_state":
        kwargs = {"random_state": int(seed.generate_state(1)[0])}
    else:
        kwargs = {}
    try:
        out = simulator(chunk, **kwargs)
        failure = None
    except Exception as exc:  # a KeyboardInterrupt stops everything, as it should
        failure = _Failure(index, "raised", exc, traceback.format_exc())
    if failure is None:
        try:
            batch = _as_batch(out, len(chunk), name)
            shape = observation_shape_of(batch)
            if expected is None or shape == expected:
                return batch
            failure = _Failure(index, "output", _shape_error(name, shape, expected))
        except ValueError as exc:
            failure = _Failure(index, "output", exc)
    if fail_fast:
        raise _ChunkFailed(failure)
    return failure


def _parallel(n_jobs, timeout) -> joblib.Parallel:
    """A :class:`joblib.Parallel` that streams results in order where the backend can
    (joblib's ``"multiprocessing"`` cannot), so that a timeout names its chunk."""
    # With a timeout, one chunk per task: joblib's timeout is per task, not per chunk.
    options = dict(n_jobs=n_jobs, timeout=timeout, batch_size=1 if timeout else "auto")
    try:
        return joblib.Parallel(return_as="generator", **options)
    except ValueError:
        return joblib.Parallel(**options)


@contextlib.contextmanager
def _open_pool(n_jobs, timeout):
    """One :class:`joblib.Parallel`, entered, for several :func:`_simulate` calls.

    Entered as a context manager, joblib starts the backend's workers once and keeps them
    until the block ends, rather than once per call (a Ray pool takes seconds to start).
    ``timeout`` is checked here, once, as :func:`simulate` checks it.
    """
    parallel = _parallel(n_jobs, _enforceable(timeout, n_jobs, stacklevel=5))
    with parallel:
        yield parallel


def _run_chunks(simulator, chunks, seeds, *, parallel, fail_fast, name, expected) -> list:
    """Each chunk's rows or :class:`_Failure`; under ``fail_fast``, up to the first failure.

    ``parallel`` is an open :class:`joblib.Parallel` (:func:`_open_pool`), reused for every
    pass, or a function of no arguments that makes a new one for each.
    """
    keyword = seed_keyword(simulator)
    outputs: list = []
    while len(outputs) < len(chunks) and not (fail_fast and outputs and _failed(outputs[-1])):
        start = len(outputs)
        runner = parallel if isinstance(parallel, joblib.Parallel) else parallel()
        streams = runner.return_generator
        tasks = (
            joblib.delayed(_call_chunk)(
                simulator, chunks[k], k, keyword, seeds[k], fail_fast, name, expected
            )
            for k in range(start, len(chunks))
        )
        try:
            for out in runner(tasks):
                outputs.append(out)
        except _ChunkFailed as exc:
            outputs.append(exc.args[0])
        except _TIMEOUTS as exc:
            # joblib cancels every chunk on a timeout (killing process workers). Streaming
            # in order, the chunk that ran past it is the next one; the loop resumes after
            # it. Otherwise nothing came back, and every chunk still out timed out.
            stop = len(outputs) + 1 if streams else len(chunks)
            outputs += [_Failure(k, "timeout", exc) for k in range(len(outputs), stop)]
    return outputs


def _failed(output) -> bool:
    return isinstance(output, _Failure)


def simulate(
    simulator,
    theta,
    *,
    n_jobs=None,
    random_state=None,
    chunk_size=DEFAULT_CHUNK_SIZE,
    timeout=None,
    on_error="raise",
    observation_shape=None,
    return_failed=False,
):
    """Run ``simulator`` on the rows of ``theta``, in seeded chunks through joblib.

    Parameters
    ----------
    simulator : callable
        ``simulator(theta_chunk)`` takes a float64 array ``(n, n_parameters)`` and returns
        ``n`` observations: an array ``(n, *observation_shape)`` (``(n,)`` for one
        feature), or a dict of such arrays for named outputs. A keyword ``rng`` receives
        a :class:`numpy.random.Generator`, else a keyword ``random_state`` an int in
        ``[0, 2**32)``, each chunk its own stream (:func:`seed_keyword`); an int has the
        32 bits :class:`numpy.random.RandomState` takes, ``rng`` the full stream.
    theta : array-like of shape (n_simulations, n_parameters)
    n_jobs : int, default=None
        Chunks run at once by :class:`joblib.Parallel`; ``None`` means one at a time unless
        a joblib backend context (``joblib.parallel_backend``) is active. The results do
        not depend on it.
    random_state : int, SeedSequence, Generator, RandomState instance or None, default=None
        Root of the chunks' seeds: chunk ``k`` gets the ``k``-th child of
        ``numpy.random.SeedSequence(random_state).spawn``. ``None`` draws the root from
        numpy's global generator.
    chunk_size : int, default=32
        Rows per simulator call. The chunks, and so a seeded simulator's results, depend
        on it; they do not depend on ``n_jobs``.
    timeout : float, default=None
        Seconds joblib waits for a chunk before it counts as failed. Process workers
        (joblib's default ``"loky"``) running a chunk past it are killed; a thread
        (``"threading"``, Dask's) cannot be, and its call runs on in the background, its
        result unused. Not enforced when the simulator runs in this process (``n_jobs=None``
        or 1 with no parallel backend active, warned). With joblib's ``"multiprocessing"``
        backend, which returns nothing before every chunk is done, a timeout fails every
        chunk not yet returned.
    on_error : {"raise", "drop"}, default="raise"
        What a failed chunk does: ``"raise"`` raises, naming the simulator, the chunk and
        its rows: a :class:`SimulatorError` when it raised or timed out, a ``ValueError``
        when its output has the wrong shape. ``"drop"`` warns and fills the chunk's rows
        of ``x`` with NaN (``est.fit`` drops them, by its ``nan_policy``). When every
        chunk fails, both raise.
    observation_shape : tuple of int or dict of str to tuple of int, default=None
        The shape of one observation (as ``FlowPosteriorEstimator.observation_shape_``);
        chunks that return another fail. ``None``: the first chunk that succeeds sets it.
    return_failed : bool, default=False
        Also return which rows belong to failed chunks.

    Returns
    -------
    x : ndarray of shape ``(n_simulations, *observation_shape)``, or dict of ndarray
        The observations as float64, in the order of ``theta``.
    failed : ndarray of bool of shape (n_simulations,)
        Rows of failed chunks (their ``x`` is NaN); only when ``return_failed=True``.

    Examples
    --------
    >>> from skfalcon.datasets import TwoMoons
    >>> from skfalcon.simulation import simulate
    >>> task = TwoMoons()
    >>> theta = task.sample_prior(100, random_state=0)
    >>> x = simulate(task.simulate, theta, random_state=1)  # task.simulate takes random_state
    >>> x.shape
    (100, 2)
    >>> bool((x == simulate(task.simulate, theta, random_state=1)).all())
    True
    """
    x, failed = _simulate(
        simulator,
        theta,
        n_jobs=n_jobs,
        random_state=random_state,
        chunk_size=chunk_size,
        timeout=timeout,
        on_error=on_error,
        observation_shape=observation_shape,
    )
    return (x, failed) if return_failed else x


#: The estimator's ``nan_policy`` values, taken from its parameter model.
_NAN_POLICIES = typing.get_args(FlowPosteriorParams.model_fields["nan_policy"].annotation)


def simulate_from_prior(
    simulator,
    prior,
    n_simulations,
    *,
    n_jobs=None,
    random_state=None,
    chunk_size=DEFAULT_CHUNK_SIZE,
    timeout=None,
    on_error="raise",
    nan_policy="drop",
):
    """Draw ``theta`` from the prior and simulate it: amortized training data.

    The rows of ``theta`` are drawn with :meth:`FactorizedPrior.sample
    <skfalcon.priors.FactorizedPrior.sample>` and run through :func:`simulate` (seeded
    chunks over joblib workers). Rows of failed chunks (``on_error="drop"``) are left
    out; rows whose ``x`` holds NaN or infinity follow ``nan_policy``, as
    :meth:`FlowPosteriorEstimator.fit <skfalcon.FlowPosteriorEstimator.fit>` treats
    them.

    Parameters
    ----------
    simulator : callable
        As in :func:`simulate`.
    prior : FactorizedPrior or list of specs
        The prior, as ``FlowPosteriorEstimator(prior=...)`` takes it.
    n_simulations : int
        Number of parameter rows drawn and simulated.
    n_jobs : int, default=None
        As in :func:`simulate`.
    random_state : int, SeedSequence, Generator, RandomState instance or None, default=None
        Root of the run's randomness: ``numpy.random.SeedSequence(random_state)`` spawns
        one child for the draw of ``theta`` and one for the simulator's chunks, so the two
        never share a stream. ``None`` draws the root from numpy's global generator.
    chunk_size : int, default=32
        As in :func:`simulate`.
    timeout : float, default=None
        As in :func:`simulate`.
    on_error : {"raise", "drop"}, default="raise"
        As in :func:`simulate`; the rows of dropped chunks are not returned.
    nan_policy : {"drop", "raise"}, default="drop"
        The estimator's ``nan_policy``: ``"drop"`` leaves out, with a warning, the rows
        whose ``x`` holds NaN or infinity; ``"raise"`` raises a ``ValueError``.

    Returns
    -------
    theta : ndarray of shape (n_kept, n_parameters)
        float64, all the prior's columns (fixed and marginalized ones too).
    x : ndarray of shape ``(n_kept, *observation_shape)``, or dict of ndarray
        float64 observations, row for row with ``theta``.

    See Also
    --------
    simulate : Run a simulator on given parameter rows.
    skfalcon.SequentialInference : Simulations focused on one observation.

    Examples
    --------
    >>> from skfalcon.datasets import TwoMoons
    >>> from skfalcon.simulation import simulate_from_prior
    >>> task = TwoMoons()
    >>> theta, x = simulate_from_prior(task.simulate, task.prior, 100, random_state=0)
    >>> theta.shape, x.shape
    ((100, 2), (100, 2))
    >>> again = simulate_from_prior(task.simulate, task.prior, 100, random_state=0)
    >>> bool((theta == again[0]).all() and (x == again[1]).all())
    True

    The result fits as it is:
    ``FlowPosteriorEstimator(prior=task.prior).fit(theta, x)``.
    """
    n_simulations = check_positive_int(n_simulations, "n_simulations")
    if nan_policy not in _NAN_POLICIES:
        raise ValueError(
            f"nan_policy must be one of {', '.join(map(repr, _NAN_POLICIES))}; got {nan_policy!r}."
        )
    prior = make_prior(prior)
    theta_stream, simulator_stream = _seed_sequence(random_state).spawn(2)
    theta = prior.sample(n_simulations, random_state=np.random.default_rng(theta_stream))
    x, failed = _simulate(
        simulator,
        theta,
        n_jobs=n_jobs,
        random_state=simulator_stream,
        chunk_size=chunk_size,
        timeout=timeout,
        on_error=on_error,
    )
    theta, x = theta[~failed], take_observations(x, ~failed)
    flat = flatten_training_observations(x, len(theta), None, "simulate_from_prior")
    keep = _apply_nan_policy(flat, nan_policy)
    return theta[keep], take_observations(x, keep)


def _simulate(
    simulator,
    theta,
    *,
    n_jobs,
    random_state,
    chunk_size,
    timeout,
    on_error,
    observation_shape=None,
    parallel=None,
):
    """:func:`simulate` returning ``(x, failed)``; the one path every simulation takes.

    ``parallel``: a :class:`joblib.Parallel` opened by :func:`_open_pool` with the same
    ``n_jobs`` and ``timeout``, in which the chunks run; ``None`` makes one for this call.
    """
    theta = check_array(theta, dtype=np.float64, input_name="theta")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if timeout is not None:
        check_scalar(timeout, "timeout", numbers.Real, min_val=0, include_boundaries="neither")
    if on_error not in ("raise", "drop"):
        raise ValueError(f"on_error must be 'raise' or 'drop', got {on_error!r}.")
    name = simulator_name(simulator)
    bounds = [(a, min(a + chunk_size, len(theta))) for a in range(0, len(theta), chunk_size)]
    seeds = _seed_sequence(random_state).spawn(len(bounds))
    if parallel is None:
        timeout = _enforceable(timeout, n_jobs)
        parallel = functools.partial(_parallel, n_jobs, timeout)
    else:
        timeout = parallel.timeout  # None where the pool found it unenforceable
    expected = _normalize_shape(observation_shape)
    try:
        outputs = _run_chunks(
            simulator,
            [theta[a:b] for a, b in bounds],
            seeds,
            parallel=parallel,
            fail_fast=on_error == "raise",
            name=name,
            expected=expected,
        )
    except Exception as exc:
        _explain_pickling(simulator, n_jobs, exc)
        raise
    layout = _check_layouts(outputs, expected, name)
    failures = [out for out in outputs if _failed(out)]
    if failures and (on_error == "raise" or len(failures) == len(bounds)):
        _raise(failures[0], name, bounds, timeout, every=len(failures) == len(bounds))
    if failures:
        _warn_dropped(failures, name, bounds, timeout)
    batches = [
        _nan_rows(layout, b - a) if _failed(out) else out
        for out, (a, b) in zip(outputs, bounds, strict=True)
    ]
    x = concatenate_observations(batches)
    failed = np.concatenate(
        [np.full(b - a, _failed(out)) for out, (a, b) in zip(outputs, bounds, strict=True)]
    )
    return x, failed


def _enforceable(timeout, n_jobs, stacklevel=4):
    """``timeout``, or ``None`` with a warning where the simulator runs in this process."""
    if timeout is not None and joblib.effective_n_jobs(n_jobs) == 1:
        warnings.warn(
            f"timeout={timeout} (SequentialInference: simulation_timeout) is not enforced: "
            f"with n_jobs={n_jobs!r} and no parallel "
            "joblib backend active, the simulator runs in this process, which cannot abandon "
            "its own call. Use n_jobs >= 2 (process workers past the timeout are killed) or "
            "joblib.parallel_backend('threading', n_jobs=2).",
            UserWarning,
            stacklevel=stacklevel,
        )
        return None
    return timeout


def _explain_pickling(simulator, n_jobs, exc: Exception) -> None:
    """Raise a ``ValueError`` saying so when ``exc`` came from a simulator that cannot be
    pickled (only a process backend pickles it); return otherwise."""
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


def _check_layouts(outputs: list, expected, name: str):
    """The observation shape every chunk must have; chunks of another become failures.

    ``expected`` (``observation_shape``, already checked in the workers) decides, else the
    first chunk that succeeded (in the order of ``theta``, so whoever runs the chunks).
    ``None`` when none succeeded.
    """
    if expected is not None:
        return expected
    for i, out in enumerate(outputs):  # successes come in chunk order: index i is chunk i
        if _failed(out):
            continue
        shape = observation_shape_of(out)
        if expected is None:
            expected, source = shape, f"chunk {i}"
        elif shape != expected:
            outputs[i] = _Failure(i, "output", _shape_error(name, shape, expected, source))
    return expected


def _shape_error(name, shape, expected, source="observation_shape") -> ValueError:
    return ValueError(
        f"The simulator {name!r} returned observations of shape {_describe(shape)}, "
        f"but {source} has {_describe(expected)}"
    )


def _normalize_shape(shape):
    if shape is None:
        return None
    mapping = _as_mapping(shape)
    if mapping is not None:
        return {str(key): tuple(int(s) for s in value) for key, value in mapping.items()}
    return tuple(int(s) for s in shape)


def _describe(shape) -> str:
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{key!r}: {value}" for key, value in shape.items()) + "}"
    return str(shape)


def _describe_failure(failure: _Failure, name: str, bounds, timeout) -> str:
    a, b = bounds[failure.index]
    where = f"chunk {failure.index} of {len(bounds)} (parameter rows {a} to {b - 1})"
    if failure.kind == "timeout":
        return (
            f"The simulator {name!r} ran past timeout={timeout} s (SequentialInference: "
            f"simulation_timeout) on {where}"
        )
    if failure.kind == "output":
        return f"{str(failure.error).rstrip('.')}; on {where}"
    error = failure.error
    return f"The simulator {name!r} raised {type(error).__name__}: {error} on {where}"


def _raise(failure: _Failure, name: str, bounds, timeout, *, every: bool):
    """Raise ``failure`` with a message naming the simulator, the chunk and its rows."""
    message = _describe_failure(failure, name, bounds, timeout) + "."
    if every and len(bounds) > 1:
        message = f"Every one of the {len(bounds)} chunks failed; the first: {message}"
    if failure.kind == "output":
        raise ValueError(message)
    if not every:
        message += (
            " To drop failing chunks and go on, pass on_error='drop' "
            "(SequentialInference: on_simulator_error='drop')."
        )
    if failure.trace and failure.error.__traceback__ is None:
        # Sent back from a process worker, the exception lost its traceback: show the text.
        message += "\n\nThe simulator's traceback:\n" + failure.trace
    raise SimulatorError(message) from failure.error


def _warn_dropped(failures: list, name: str, bounds, timeout) -> None:
    n_rows = sum(bounds[f.index][1] - bounds[f.index][0] for f in failures)
    shown = "; ".join(
        _describe_failure(f, name, bounds, timeout) for f in failures[:_FAILURES_SHOWN]
    )
    if len(failures) > _FAILURES_SHOWN:
        shown += f"; and {len(failures) - _FAILURES_SHOWN} more"
    warnings.warn(
        f"Dropped {len(failures)} of {len(bounds)} chunks ({n_rows} of {bounds[-1][1]} "
        f"simulations) that failed (on_error='drop'; SequentialInference: "
        f"on_simulator_error='drop'); their rows of x are NaN. {shown}.",
        UserWarning,
        stacklevel=4,
    )


def _nan_rows(layout, n_rows: int):
    """``n_rows`` observations of ``layout`` that are all NaN: a failed chunk's rows."""
    if isinstance(layout, dict):
        return {key: np.full((n_rows, *shape), np.nan) for key, shape in layout.items()}
    return np.full((n_rows, *layout), np.nan)


def concatenate_observations(parts: list):
    """Batches of observations (arrays, or dicts of arrays with the same keys) as one."""
    if isinstance(parts[0], dict):
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return np.concatenate(parts)


def take_observations(x, rows):
    """The ``rows`` (an index or a mask) of a batch of observations, array or dict."""
    if isinstance(x, dict):
        return {key: value[rows] for key, value in x.items()}
    return x[rows]


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
