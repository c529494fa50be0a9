"""Hostile-input harness: how skfalcon answers the inputs a scientist might get wrong.

Each case tries one bad (or merely unusual) input in a fresh Python subprocess, with a time
limit, one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``) and a cap on the
address space (so a case that asks for terabytes fails instead of exhausting the machine).
Every case starts from the same prelude: imports, 300 two-moons simulations, ``tiny()`` (an
unfitted estimator of a cheap config: one transform, hidden width 8, two epochs, batch 64,
CPU) and ``fitted()`` (the same, fitted). ``ConvergenceWarning``, which two epochs always
raise, is ignored.

A case declares the argument it is about (the words a helpful message would contain) and
whether skfalcon should refuse it, warn about it, accept it, or may do either. The outcome
is one of ``error`` (exception type, where it was raised, first line of its message),
``warning`` (category, first line), ``ok`` (a short summary of the result, e.g. a shape),
``timeout``, ``crash`` (a non-zero exit without a Python exception, e.g. a segfault) or
``skip`` (the knob does not exist in this skfalcon, or pandas is missing). The verdict:

- ``clear``: refused (or warned about) with a message that names the argument or value;
- ``raw``: refused (or warned about) with a message that does not name it, often one from
  deep in torch/numpy (the outcome says in which package the exception was raised);
- ``silent``: should have been refused (or warned about) but returned without a word;
- ``ok``: accepted, as expected; ``refused``: an input that should work was refused;
- ``timeout`` / ``crash`` / ``skip`` as the outcome; ``harness``: the case's own setup
  failed (a bug of this script, not of skfalcon).

The heuristic of ``clear`` is literal: one of the case's keywords appears in the message as
a whole word (keywords of one or two characters, such as ``x``, match case-sensitively).

Run from the repository root (a markdown table goes to stdout, progress to stderr)::

    python scripts/hostile_inputs.py --jobs 2
    python scripts/hostile_inputs.py --only '^seq-' --timeout 120 --out hostile.md
    python scripts/hostile_inputs.py --list

The DataFrame cases need pandas; without it they are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARK = "@@HOSTILE@@"
MESSAGE_CHARS = 160
MEMORY_LIMIT_GB = 6
FIT = "est = fitted()"

# --------------------------------------------------------------------------- child code

# Runs first in every child: limits, and the helpers that report back to the harness.
_HEAD = f"""
import ast as _ast, json as _json, resource as _resource, sys as _sys
import traceback as _tb, warnings as _warnings
_limit = {MEMORY_LIMIT_GB} * 2**30
_resource.setrlimit(_resource.RLIMIT_AS, (_limit, _limit))
_MARK = {MARK!r}


class Skip(Exception):
    '''Raised by a case's setup when what it tries does not exist here.'''


def _emit(**record):
    print(_MARK + _json.dumps(record, default=str), flush=True)
"""

#: The shared prelude every case's code starts with.
PRELUDE = """
import inspect, io, os, pickle, sys, time, warnings
os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np
import torch
torch.set_num_threads(1)
import joblib
import scipy.stats as stats
from sklearn.exceptions import ConvergenceWarning
import skfalcon
from skfalcon import FactorizedPrior, FlowPosteriorEstimator, SequentialInference
from skfalcon.datasets import GaussianLinear, TwoMoons

warnings.filterwarnings("ignore", category=ConvergenceWarning)
TASK = TwoMoons()
PRIOR = TASK.prior
THETA = TASK.sample_prior(300, random_state=0)
X = TASK.simulate(THETA, random_state=1)
TINY = dict(num_transforms=1, hidden_features=(8,), max_epochs=2, batch_size=64,
            device="cpu", random_state=0)


def tiny(**overrides):
    return FlowPosteriorEstimator(**{"prior": PRIOR, **TINY, **overrides})


def fitted(theta=None, x=None, **overrides):
    theta = THETA if theta is None else theta
    return tiny(**overrides).fit(theta, X if x is None else x)


def loop(simulator=None, estimator=None, **knobs):
    knobs = {"min_training_samples": 100, "resample_batch_size": 50,
             "resample_interval": 1, "random_state": 0, **knobs}
    return SequentialInference(estimator or tiny(), simulator or TASK.simulate, **knobs)


def need_knob(name):
    if name not in inspect.signature(SequentialInference).parameters:
        raise Skip(f"SequentialInference has no {name!r} knob")


def need(module):
    try:
        return __import__(module)
    except ImportError:
        raise Skip(f"{module} is not installed") from None


class FreshProcessError(Exception):
    '''The last line of stderr of a fresh interpreter that failed.'''


def run_fresh(code, timeout=120):
    done = __import__("subprocess").run([sys.executable, "-c", code], capture_output=True,
                                        text=True, timeout=timeout)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise FreshProcessError(lines[-1])
    return done.stdout.strip()
"""

# Runs last: the case's setup, then its body with warnings recorded, then the report.
_TAIL = """

def _package(filename):
    path = filename.replace("\\\\", "/")
    if "/site-packages/" in path:
        return path.split("/site-packages/")[1].split("/")[0].removesuffix(".py")
    if "/skfalcon/" in path:
        return "skfalcon"
    return "case" if path.startswith("<") else "python"


def _origin(exc):
    frames = _tb.extract_tb(exc.__traceback__)
    return _package(frames[-1].filename) if frames else "?"


def _summary(value, depth=0):
    if isinstance(value, np.ndarray):
        text = f"array{value.shape} {value.dtype}"
        if value.dtype.kind == "f" and value.size and not np.isfinite(value).all():
            text += f" nonfinite={int((~np.isfinite(value)).sum())}"
        return text
    if isinstance(value, (tuple, list)) and depth == 0:
        return "(" + ", ".join(_summary(item, 1) for item in value[:4]) + ")"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if hasattr(value, "get_params"):
        fitted = any(k.endswith("_") and not k.startswith("_") for k in vars(value))
        return type(value).__name__ + (" fitted" if fitted else "")
    return f"{type(value).__name__} {value!r}"[:80]


def _run(code, namespace):
    # Statements run in order; the value of a last bare expression (or ``result``) is kept.
    tree = _ast.parse(code, "<case>")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], _ast.Expr) else None
    exec(compile(tree, "<case>", "exec"), namespace)
    if last is None:
        return namespace.get("result")
    return eval(compile(_ast.Expression(last.value), "<case>", "eval"), namespace)


try:
    exec(compile(_SETUP, "<setup>", "exec"), globals())
except Skip as _exc:
    _emit(kind="skip", message=str(_exc))
    _sys.exit(0)
except BaseException as _exc:
    _emit(kind="setup_error", type=type(_exc).__name__, message=str(_exc),
          origin=_origin(_exc), warnings=[])
    _sys.exit(0)

_error = None
with _warnings.catch_warnings(record=True) as _caught:
    _warnings.simplefilter("always")
    _warnings.filterwarnings("ignore", category=ConvergenceWarning)
    try:
        _result = _run(_BODY, globals())
    except Skip as _exc:
        _emit(kind="skip", message=str(_exc))
        _sys.exit(0)
    except BaseException as _exc:
        _error = _exc
_warned = [{"type": w.category.__name__, "message": str(w.message)} for w in _caught]
if _error is not None:
    _emit(kind="error", type=type(_error).__name__, message=str(_error),
          origin=_origin(_error), warnings=_warned)
else:
    _emit(kind="ok", summary=_summary(_result), warnings=_warned)
"""


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One hostile input: what it is about, what skfalcon should do, and its code."""

    id: str
    what: str
    names: tuple[str, ...]  # words a clear message contains (the argument, its value)
    expect: str  # "refuse", "warn", "ok" or "any"
    body: str  # the call tried: statements; the last bare expression (or ``result``) is shown
    setup: str = ""  # run before the body, outside the recorded warnings
    timeout: float | None = None  # seconds, when the case needs more than --timeout

    def code(self) -> str:
        """The full program the child runs."""
        cut = f"\n_SETUP = {self.setup!r}\n_BODY = {self.body!r}\n"
        return _HEAD + PRELUDE + cut + _TAIL


def _case(expect):
    def make(id, what, names, body, setup="", timeout=None):
        names = (names,) if isinstance(names, str) else tuple(names)
        return Case(id, what, names, expect, body, setup, timeout)

    return make


refuse, warn, accept, either = _case("refuse"), _case("warn"), _case("ok"), _case("any")


def _fit_with(**params) -> str:
    return "tiny(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ").fit(THETA, X)"


def hyperparameter_cases() -> list[Case]:
    """Constructor keywords: wrong types, non-finite, out of range, unknown names."""
    return [
        refuse("hp-lr-str", "lr='0.001'", "lr", _fit_with(lr="'0.001'")),
        refuse("hp-lr-nan", "lr=nan", "lr", _fit_with(lr="float('nan')")),
        refuse("hp-lr-inf", "lr=inf", "lr", _fit_with(lr="float('inf')")),
        refuse("hp-lr-negative", "lr=-1e-3", "lr", _fit_with(lr=-1e-3)),
        refuse("hp-max-epochs-bool", "max_epochs=True", "max_epochs", _fit_with(max_epochs=True)),
        refuse("hp-batch-size-zero", "batch_size=0", "batch_size", _fit_with(batch_size=0)),
        refuse(
            "hp-hidden-empty",
            "hidden_features=()",
            "hidden_features",
            _fit_with(hidden_features=()),
        ),
        refuse("hp-net-type-unknown", "net_type='glow'", "net_type", _fit_with(net_type="'glow'")),
        refuse(
            "hp-nan-policy-unknown",
            "nan_policy='ignore'",
            "nan_policy",
            _fit_with(nan_policy="'ignore'"),
        ),
        refuse(
            "hp-set-params-unknown",
            "set_params(learning_rate=1e-3)",
            "learning_rate",
            "tiny().set_params(learning_rate=1e-3)",
        ),
        refuse(
            "hp-constructor-unknown",
            "FlowPosteriorEstimator(n_layers=3)",
            "n_layers",
            "FlowPosteriorEstimator(n_layers=3)",
        ),
        refuse("hp-device-gpu", "device='gpu'", ("device", "gpu"), _fit_with(device="'gpu'")),
        refuse("hp-device-cuda-absent", "device='cuda' on CPU", "cuda", _fit_with(device="'cuda'")),
        refuse("hp-device-mps-absent", "device='mps' on CPU", "mps", _fit_with(device="'mps'")),
        either(
            "hp-device-torch-device",
            "device=torch.device('cpu')",
            "device",
            _fit_with(device="torch.device('cpu')"),
        ),
        refuse(
            "hp-random-state-str", "random_state='0'", "random_state", _fit_with(random_state="'0'")
        ),
        refuse(
            "hp-gamma-after-fit",
            "set_params(gamma=2) after fit, sample_proposal",
            "gamma",
            "est.set_params(gamma=2.0).sample_proposal(X[0], 10)",
            FIT,
        ),
        accept(
            "hp-numpy-scalars",
            "lr=np.float32, max_epochs=np.int64, batch_size=np.int32",
            "lr",
            _fit_with(lr="np.float32(1e-3)", max_epochs="np.int64(2)", batch_size="np.int32(64)"),
        ),
        accept(
            "hp-hidden-list",
            "hidden_features=[8, 8]",
            "hidden_features",
            _fit_with(hidden_features=[8, 8]),
        ),
        accept(
            "hp-hidden-ndarray",
            "hidden_features=np.array([8])",
            "hidden_features",
            _fit_with(hidden_features="np.array([8])"),
        ),
    ]


def prior_cases() -> list[Case]:
    """Prior specs, marginalize, scipy distributions, theta against the prior."""
    fit = "tiny(prior={}).fit(THETA, X)"
    return [
        refuse(
            "prior-unknown-family",
            "('gauss', 0, 1)",
            "gauss",
            fit.format("[('gauss', 0, 1), ('uniform', -1, 1)]"),
        ),
        refuse(
            "prior-low-above-high",
            "('uniform', 1, -1)",
            "uniform",
            fit.format("[('uniform', 1, -1), ('uniform', -1, 1)]"),
        ),
        refuse(
            "prior-missing-bound",
            "('uniform', -1)",
            "uniform",
            fit.format("[('uniform', -1), ('uniform', -1, 1)]"),
        ),
        refuse("prior-not-a-list", "prior='uniform'", "prior", fit.format("'uniform'")),
        refuse(
            "prior-marginalize-2", "marginalize=2 of 2", "marginalize", _fit_with(marginalize=2)
        ),
        refuse(
            "prior-marginalize-minus-3",
            "marginalize=-3 of 2",
            "marginalize",
            _fit_with(marginalize=-3),
        ),
        accept(
            "prior-marginalize-minus-1",
            "marginalize=-1, sample",
            "marginalize",
            "tiny(marginalize=-1).fit(THETA, X).sample(X[0], 10)",
        ),
        refuse(
            "prior-marginalize-all",
            "marginalize=[0, 1]",
            "marginalize",
            _fit_with(marginalize=[0, 1]),
        ),
        accept(
            "prior-scipy-frozen",
            "frozen stats.uniform(-1, 2) x2, sample",
            "prior",
            "tiny(prior=[stats.uniform(-1, 2)] * 2).fit(THETA, X).sample(X[0], 10)",
        ),
        refuse(
            "prior-scipy-unfrozen",
            "stats.norm (not frozen)",
            "norm",
            fit.format("[stats.norm, ('uniform', -1, 1)]"),
        ),
        refuse(
            "prior-scipy-discrete",
            "stats.poisson(3)",
            ("poisson", "discrete"),
            fit.format("[stats.poisson(3), ('uniform', -1, 1)]"),
        ),
        refuse(
            "prior-theta-outside",
            "theta in [-2, 2] for a [-1, 1] prior",
            ("theta", "support"),
            "fitted(theta=THETA * 2)",
        ),
        refuse(
            "prior-theta-3-columns",
            "theta with 3 columns, 2-parameter prior",
            "theta",
            "fitted(theta=np.c_[THETA, THETA[:, :1]])",
        ),
        refuse(
            "prior-fixed-mismatch",
            "('fixed', 0.3) but theta varies",
            ("theta", "fixed"),
            fit.format("[('uniform', -1, 1), ('fixed', 0.3)]"),
        ),
        accept(
            "prior-log-prob-outside",
            "log_prob of theta=(5, 5) outside the prior",
            "theta",
            "est.log_prob([[5.0, 5.0]], X[0])",
            FIT,
        ),
    ]


def training_data_cases() -> list[Case]:
    """What ``fit(theta, x)`` is given: non-finite, tiny, empty, odd types and layouts."""
    return [
        warn(
            "data-nan-x-drop",
            "x[5] = NaN, nan_policy='drop'",
            ("nan_policy", "NaN"),
            "x = X.copy(); x[5] = np.nan; result = fitted(x=x).n_dropped_simulations_",
        ),
        refuse(
            "data-nan-x-raise",
            "x[5] = NaN, nan_policy='raise'",
            ("nan_policy", "NaN"),
            "x = X.copy(); x[5] = np.nan; fitted(x=x, nan_policy='raise')",
        ),
        warn(
            "data-inf-x-drop",
            "x[7, 1] = inf, nan_policy='drop'",
            ("nan_policy", "infinity"),
            "x = X.copy(); x[7, 1] = np.inf; fitted(x=x)",
        ),
        refuse(
            "data-nan-theta",
            "theta[3, 0] = NaN",
            ("theta", "X"),
            "t = THETA.copy(); t[3, 0] = np.nan; fitted(theta=t)",
        ),
        refuse(
            "data-all-nan-x", "every x is NaN", ("x", "NaN"), "fitted(x=np.full_like(X, np.nan))"
        ),
        refuse(
            "data-one-row",
            "fit on 1 simulation",
            ("simulations", "rows", "validation_fraction", "samples"),
            "fitted(theta=THETA[:1], x=X[:1])",
        ),
        either(
            "data-two-rows",
            "fit on 2 simulations",
            ("simulations", "rows", "validation_fraction", "samples"),
            "fitted(theta=THETA[:2], x=X[:2]).sample(X[0], 5)",
        ),
        accept(
            "data-ten-rows",
            "fit on 10 simulations, sample",
            "simulations",
            "fitted(theta=THETA[:10], x=X[:10]).sample(X[0], 5)",
        ),
        refuse(
            "data-empty",
            "theta, x of 0 rows",
            ("theta", "sample", "samples"),
            "fitted(theta=np.empty((0, 2)), x=np.empty((0, 2)))",
        ),
        refuse(
            "data-strings",
            "theta of words",
            "theta",
            "fitted(theta=np.full(THETA.shape, 'abc'))",
        ),
        warn(
            "data-object-none",
            "x object array with None",
            "x",
            "x = X.astype(object); x[4, 0] = None; fitted(x=x)",
        ),
        accept(
            "data-3d-x",
            "x of shape (300, 2, 3), sample x[0]",
            "x",
            "x = np.repeat(X[:, :, None], 3, axis=2); result = fitted(x=x).sample(x[0], 5)",
        ),
        accept(
            "data-huge-offset",
            "x + 1e8, sample",
            "x",
            "result = fitted(x=X + 1e8).sample(X[0] + 1e8, 20)",
        ),
        refuse("data-magnitude-1e30", "x * 1e30", "x", "fitted(x=X * 1e30)"),
        refuse(
            "data-length-mismatch",
            "299 theta rows, 300 x rows",
            ("theta", "x", "samples"),
            "fitted(theta=THETA[:299])",
        ),
        accept(
            "data-df-fit-sample",
            "DataFrames with column names, sample a row",
            "theta",
            "pd = need('pandas'); t = pd.DataFrame(THETA, columns=['a', 'b']); "
            "x = pd.DataFrame(X, columns=['x1', 'x2']); "
            "result = fitted(theta=t, x=x).sample(x.iloc[0], 5)",
        ),
        refuse(
            "data-df-score-reordered",
            "score with theta columns [b, a]",
            ("a", "b", "feature names", "feature_names"),
            "est.score(T[['b', 'a']], X)",
            "pd = need('pandas'); T = pd.DataFrame(THETA, columns=['a', 'b']); "
            "est = fitted(theta=T)",
        ),
        refuse(
            "data-df-log-prob-reordered",
            "log_prob with theta columns [b, a]",
            ("a", "b", "feature names", "feature_names"),
            "est.log_prob(T[['b', 'a']], X[0])",
            "pd = need('pandas'); T = pd.DataFrame(THETA, columns=['a', 'b']); "
            "est = fitted(theta=T)",
        ),
        refuse(
            "data-df-sample-x-reordered",
            "sample with x columns [x2, x1]",
            ("x1", "x2", "feature names", "column"),
            "est.sample(XD[['x2', 'x1']].iloc[:1], 5)",
            "pd = need('pandas'); XD = pd.DataFrame(X, columns=['x1', 'x2']); est = fitted(x=XD)",
        ),
        accept(
            "data-negative-stride",
            "fit(theta[::-1], x[::-1]), sample x[::-1][0]",
            "x",
            "fitted(theta=THETA[::-1], x=X[::-1]).sample(X[::-1][0], 5)",
        ),
        accept(
            "data-torch-grad",
            "theta, x as torch tensors with requires_grad",
            "theta",
            "fitted(theta=torch.tensor(THETA, requires_grad=True), "
            "x=torch.tensor(X, requires_grad=True))",
        ),
        accept(
            "data-float16",
            "theta, x as float16",
            "theta",
            "fitted(theta=THETA.astype(np.float16), x=X.astype(np.float16)).sample(X[0], 5)",
        ),
        accept(
            "data-int-x",
            "x as int (rounded * 10)",
            "x",
            "fitted(x=(X * 10).round().astype(int)).sample([1, 2], 5)",
        ),
        accept(
            "data-lists",
            "theta, x as lists of lists",
            "theta",
            "fitted(theta=THETA.tolist(), x=X.tolist()).sample(X[0].tolist(), 5)",
        ),
        accept(
            "data-memmap",
            "theta, x as read-only memmaps",
            "theta",
            "np.save('t.npy', THETA); np.save('x.npy', X); "
            "fitted(theta=np.load('t.npy', mmap_mode='r'), x=np.load('x.npy', mmap_mode='r'))",
        ),
    ]


def inference_cases() -> list[Case]:
    """sample, log_prob, score, sample_proposal, log_normalizer on odd arguments."""
    return [
        refuse("inf-n-zero", "sample(x, 0)", "n_samples", "est.sample(X[0], 0)", FIT),
        refuse("inf-n-negative", "sample(x, -1)", "n_samples", "est.sample(X[0], -1)", FIT),
        refuse("inf-n-float", "sample(x, 1.5)", "n_samples", "est.sample(X[0], 1.5)", FIT),
        refuse("inf-n-true", "sample(x, True)", "n_samples", "est.sample(X[0], True)", FIT),
        refuse(
            "inf-n-huge",
            "sample(x, 10**9): 16 GB of output",
            ("n_samples", "1000000000"),
            "est.sample(X[0], 10**9)",
            FIT,
        ),
        refuse(
            "inf-x-wrong-features", "sample(zeros(3), 5)", "x", "est.sample(np.zeros(3), 5)", FIT
        ),
        accept(
            "inf-x-scalar-one-feature",
            "sample(0.3, 5) for a 1-feature model",
            "x",
            "fitted(x=X[:, 0]).sample(0.3, 5)",
        ),
        refuse(
            "inf-x-scalar-two-features",
            "sample(0.3, 5) for a 2-feature model",
            "x",
            "est.sample(0.3, 5)",
            FIT,
        ),
        refuse("inf-x-nan", "sample([nan, 0], 5)", "x", "est.sample([np.nan, 0.0], 5)", FIT),
        accept("inf-x-several", "sample(x[:3], 5)", "x", "est.sample(X[:3], 5)", FIT),
        accept(
            "inf-x-torch-grad",
            "sample(torch tensor requiring grad, 5)",
            "x",
            "est.sample(torch.tensor(X[0], requires_grad=True), 5)",
            FIT,
        ),
        refuse(
            "inf-log-prob-width",
            "log_prob(theta of 3 columns, x)",
            "theta",
            "est.log_prob(np.zeros((4, 3)), X[0])",
            FIT,
        ),
        refuse(
            "inf-score-lengths",
            "score(5 theta rows, 4 x rows)",
            ("theta", "x", "y"),
            "est.score(THETA[:5], X[:4])",
            FIT,
        ),
        refuse(
            "inf-random-state-str",
            "sample(random_state='seed')",
            "random_state",
            "est.sample(X[0], 5, random_state='seed')",
            FIT,
        ),
        refuse(
            "inf-random-state-negative",
            "sample(random_state=-5)",
            "random_state",
            "est.sample(X[0], 5, random_state=-5)",
            FIT,
        ),
        refuse(
            "inf-sample-unfitted",
            "sample before fit",
            ("fit", "fitted"),
            "tiny().sample(X[0], 5)",
        ),
        refuse(
            "inf-log-prob-unfitted",
            "log_prob before fit",
            ("fit", "fitted"),
            "tiny().log_prob(THETA[:3], X[0])",
        ),
        refuse(
            "inf-proposal-several-x",
            "sample_proposal(x[:3], 5)",
            "x",
            "est.sample_proposal(X[:3], 5)",
            FIT,
        ),
    ]


_FLAKY = """
def flaky_sim(theta):
    if (theta[:, 0] > 0.9).any():
        raise RuntimeError("boom")
    return TASK.simulate(theta)


def wrong_shape_sim(theta):
    return np.zeros((len(theta), 3 if len(theta) > 1 else 2))


def short_sim(theta):
    return TASK.simulate(theta)[: max(len(theta) - 1, 1)]


def nan_sim(theta):
    x = TASK.simulate(theta)
    x[theta[:, 0] > 0.5] = np.nan
    return x


def none_sim(theta):
    return None


def hang_once(theta):
    import os, time
    import numpy as np
    if not os.path.exists("hung.flag"):
        open("hung.flag", "w").close()
        time.sleep(40)
    return theta + np.random.default_rng(len(theta)).normal(0, 0.1, size=theta.shape)
"""


def sequential_cases() -> list[Case]:
    """SequentialInference: faulty simulators, bad x_obs, budgets and knobs."""
    run = "loop({}).run(X[0], 200)"
    return [
        accept("seq-baseline", "a working run of 200 simulations", "x_obs", run.format("")),
        refuse(
            "seq-sim-raises",
            "simulator raises on some rows",
            "flaky_sim",
            run.format("flaky_sim"),
            _FLAKY,
        ),
        warn(
            "seq-sim-raises-drop",
            "simulator raises on some rows, on_simulator_error='drop'",
            "flaky_sim",
            run.format("flaky_sim, on_simulator_error='drop'"),
            _FLAKY,
        ),
        refuse(
            "seq-sim-wrong-shape",
            "simulator returns (n, 3) after a (1, 2) pilot",
            "wrong_shape_sim",
            run.format("wrong_shape_sim"),
            _FLAKY,
        ),
        warn(
            "seq-sim-nan",
            "simulator returns NaN for theta_0 > 0.5",
            ("NaN", "nan_policy"),
            run.format("nan_sim"),
            _FLAKY,
        ),
        refuse(
            "seq-sim-none", "simulator returns None", "none_sim", run.format("none_sim"), _FLAKY
        ),
        accept(
            "seq-lambda-n-jobs-2",
            "lambda simulator, n_jobs=2",
            "simulator",
            "loop(lambda t: TASK.simulate(t), n_jobs=2).run(X[0], 200)",
            timeout=180,
        ),
        refuse("seq-x-obs-shape", "x_obs of 3 features", "x_obs", "loop().run(np.zeros(3), 200)"),
        refuse("seq-x-obs-nan", "x_obs = [nan, 0]", "x_obs", "loop().run([np.nan, 0.0], 200)"),
        refuse("seq-n-sim-zero", "n_simulations=0", "n_simulations", "loop().run(X[0], 0)"),
        refuse(
            "seq-strategy-unknown", "strategy='snpe'", "strategy", run.format("strategy='snpe'")
        ),
        refuse(
            "seq-no-prior",
            "estimator with prior=None",
            "prior",
            "loop(estimator=tiny(prior=None)).run(X[0], 200)",
        ),
        refuse(
            "seq-timeout-zero",
            "simulation_timeout=0",
            "simulation_timeout",
            run.format("simulation_timeout=0"),
            "need_knob('simulation_timeout')",
        ),
        warn(
            "seq-timeout-in-process",
            "simulation_timeout=5 with n_jobs=None",
            "simulation_timeout",
            run.format("simulation_timeout=5.0"),
            "need_knob('simulation_timeout')",
        ),
        warn(
            "seq-sim-hangs",
            "one chunk hangs 40 s; simulation_timeout=10, n_jobs=2, drop",
            ("simulation_timeout", "timeout", "hang_once"),
            run.format("hang_once, n_jobs=2, simulation_timeout=10.0, on_simulator_error='drop'"),
            "need_knob('simulation_timeout')\n" + _FLAKY,
            timeout=240,
        ),
    ]


_CUSTOM_EMBEDDING = """
class TinyEmbedding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 4)

    def forward(self, x):
        return self.linear(x)


est = fitted(embedding=TinyEmbedding())
"""


def file_cases() -> list[Case]:
    """skfalcon.load of damaged or foreign files; skfalcon.save of what it cannot hold."""
    saved = "est = fitted(); skfalcon.save(est, 'm.joblib'); skfalcon.save(est, 'm.skfalcon')"
    return [
        accept(
            "file-safe-roundtrip",
            "save/load safe format, sample",
            "m.skfalcon",
            "skfalcon.load('m.skfalcon').sample(X[0], 5)",
            saved,
        ),
        refuse(
            "file-truncated-joblib",
            "load a joblib file cut in half",
            ("m.joblib", "truncated"),
            "data = open('m.joblib', 'rb').read(); open('m.joblib', 'wb').write(data[: len(data) // 2]); "
            "skfalcon.load('m.joblib')",
            saved,
        ),
        refuse(
            "file-truncated-safe",
            "load a safe file cut in half",
            ("m.skfalcon", "truncated"),
            "data = open('m.skfalcon', 'rb').read(); "
            "open('m.skfalcon', 'wb').write(data[: len(data) // 2]); skfalcon.load('m.skfalcon')",
            saved,
        ),
        refuse(
            "file-flipped-byte",
            "load a safe file with one byte flipped",
            ("m.skfalcon", "checksum", "damaged"),
            "data = bytearray(open('m.skfalcon', 'rb').read()); data[len(data) // 2] ^= 0xFF; "
            "open('m.skfalcon', 'wb').write(bytes(data)); skfalcon.load('m.skfalcon')",
            saved,
        ),
        refuse(
            "file-random-bytes",
            "load 4 KB of random bytes",
            "noise.bin",
            "open('noise.bin', 'wb').write(np.random.default_rng(0).bytes(4096)); "
            "skfalcon.load('noise.bin')",
        ),
        refuse(
            "file-missing",
            "load a path that does not exist",
            "nope.skfalcon",
            "skfalcon.load('nope.skfalcon')",
        ),
        refuse(
            "file-other-estimator",
            "load a joblib file of a LinearRegression",
            "LinearRegression",
            "from sklearn.linear_model import LinearRegression\n"
            "joblib.dump(LinearRegression(), 'lr.joblib')\nskfalcon.load('lr.joblib')",
        ),
        refuse(
            "file-pickled-dict",
            "load a pickle of a plain dict",
            "dict",
            "pickle.dump({'a': 1}, open('d.pkl', 'wb')); skfalcon.load('d.pkl')",
        ),
        refuse(
            "file-foreign-zip",
            "load a zip that is not a skfalcon file",
            ("other.zip", "skfalcon"),
            "import zipfile\nwith zipfile.ZipFile('other.zip', 'w') as z:\n    z.writestr('a.txt', 'hi')\n"
            "skfalcon.load('other.zip')",
        ),
        refuse(
            "file-save-format",
            "save(format='hdf5')",
            "format",
            "skfalcon.save(est, 'm.h5', format='hdf5')",
            FIT,
        ),
        refuse(
            "file-safe-custom-embedding",
            "save safe: nn.Module embedding from __main__",
            "embedding",
            "skfalcon.save(est, 'm.skfalcon')",
            _CUSTOM_EMBEDDING,
        ),
        refuse(
            "file-joblib-custom-embedding",
            "joblib save of a __main__ nn.Module embedding, load in a fresh process",
            ("TinyEmbedding", "__main__"),
            "skfalcon.save(est, 'm.joblib'); "
            "run_fresh('import skfalcon; print(skfalcon.load(\"m.joblib\"))')",
            _CUSTOM_EMBEDDING,
        ),
    ]


def all_cases() -> list[Case]:
    cases = (
        hyperparameter_cases()
        + prior_cases()
        + training_data_cases()
        + inference_cases()
        + sequential_cases()
        + file_cases()
    )
    duplicates = [k for k, n in Counter(c.id for c in cases).items() if n > 1]
    if duplicates:
        raise SystemExit(f"duplicate case ids: {duplicates}")
    return cases


# --------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """What a case did: its class, the line shown, and its verdict."""

    case: Case
    kind: str  # error, warning, ok, timeout, crash, skip, setup_error
    line: str
    verdict: str
    seconds: float


def _first_line(text: str) -> str:
    lines = str(text).strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= MESSAGE_CHARS else line[: MESSAGE_CHARS - 1] + "…"


def _names_it(message: str, names: tuple[str, ...]) -> bool:
    """Whether a keyword stands in ``message`` as a whole word (short ones case-sensitively)."""
    for name in names:
        flags = 0 if len(name) <= 2 else re.IGNORECASE
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message, flags):
            return True
    return False


def _child_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("PYTHONWARNINGS", None)
    return env


def _execute(case: Case, timeout: float) -> tuple[int | None, str, str]:
    """Run the case's program in a fresh interpreter and process group in a scratch dir;
    return its exit code (``None`` on timeout), stdout and stderr."""
    with tempfile.TemporaryDirectory(prefix=f"hostile-{case.id}-") as scratch:
        child = subprocess.Popen(
            [sys.executable, "-c", case.code()],
            cwd=scratch,
            env=_child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = child.communicate(timeout=timeout)
            code = child.returncode
        except subprocess.TimeoutExpired:
            _kill_group(child.pid)
            out, err = child.communicate()
            code = None
        _kill_group(child.pid)  # worker processes the case left behind, if any
    return code, out, err


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _record(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    return None


def _crash_line(code: int, stderr: str) -> str:
    reason = f"exit code {code}"
    if code < 0:
        reason += f" ({signal.Signals(-code).name})"
    tail = stderr.strip().splitlines()
    return reason + (f"; stderr: {_first_line(tail[-1])}" if tail else "")


def _classify(case: Case, record: dict) -> tuple[str, str, str]:
    """Kind, line and verdict of a case that reported back."""
    kind = record["kind"]
    if kind == "skip":
        return "skip", f"skip: {record['message']}", "skip"
    if kind == "setup_error":
        line = f"setup error {record['type']}: {_first_line(record['message'])}"
        return "setup_error", line, "harness"
    warned = record.get("warnings", [])
    if kind == "error":
        message = record["message"]
        line = f"error {record['type']} [{record['origin']}]: {_first_line(message)}"
        if case.expect == "ok":
            return "error", line, "refused"
        return "error", line, "clear" if _names_it(message, case.names) else "raw"
    naming = [w for w in warned if _names_it(w["message"], case.names)]
    if warned:
        shown = (naming or warned)[0]
        more = f" (+{len(warned) - 1} more)" if len(warned) > 1 else ""
        line = f"warning {shown['type']}: {_first_line(shown['message'])}{more}"
        kind = "warning"
    else:
        line = f"ok: {record['summary']}"
    if case.expect in ("ok", "any"):
        return kind, line, "ok"
    if naming:
        return kind, line, "clear"
    if case.expect == "warn" and warned:
        return kind, line, "raw"
    return kind, line, "silent"


def run_case(case: Case, timeout: float) -> Outcome:
    limit = max(timeout, case.timeout or 0)
    start = time.perf_counter()
    code, out, err = _execute(case, limit)
    seconds = time.perf_counter() - start
    if code is None:
        return Outcome(case, "timeout", f"timeout after {limit:.0f} s", "timeout", seconds)
    record = _record(out)
    if record is None:
        return Outcome(case, "crash", f"crash: {_crash_line(code, err)}", "crash", seconds)
    kind, line, verdict = _classify(case, record)
    if code != 0:
        line += f" (then {_crash_line(code, err)})"
    return Outcome(case, kind, line, verdict, seconds)


def run_all(cases: list[Case], jobs: int, timeout: float) -> list[Outcome]:
    """Run the cases, ``jobs`` subprocesses at a time; outcomes in the order of ``cases``.

    Each pool thread only waits on its case's interpreter, so the work runs in ``jobs``
    separate processes.
    """
    done: dict[str, Outcome] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_case, case, timeout): case for case in cases}
        for future in as_completed(futures):
            outcome = future.result()
            done[outcome.case.id] = outcome
            print(
                f"[{len(done)}/{len(cases)}] {outcome.case.id}: {outcome.verdict} "
                f"({outcome.seconds:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    return [done[case.id] for case in cases]


# --------------------------------------------------------------------------- report


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(outcomes: list[Outcome]) -> str:
    rows = [
        "| id | tried | about | expect | outcome | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        cells = (o.case.id, o.case.what, o.case.names[0], o.case.expect, o.line, o.verdict)
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def markdown_summary(outcomes: list[Outcome]) -> str:
    counts = Counter(o.verdict for o in outcomes)
    order = ("clear", "raw", "silent", "ok", "refused", "timeout", "crash", "skip", "harness")
    lines = [
        f"{len(outcomes)} cases: " + ", ".join(f"{counts[v]} {v}" for v in order if counts[v]) + "."
    ]
    for verdict in ("raw", "silent", "refused", "timeout", "crash", "harness"):
        for o in (o for o in outcomes if o.verdict == verdict):
            lines.append(f"- **{verdict}** `{o.case.id}` ({_cell(o.case.what)}): {_cell(o.line)}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", metavar="PATTERN", help="run the cases whose id matches this regex"
    )
    parser.add_argument("--jobs", type=int, default=2, help="cases run in parallel (default 2)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per case (default 60; a few need more)"
    )
    parser.add_argument("--out", metavar="FILE", help="also write the table and summary here")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.timeout <= 0:
        parser.error("--jobs must be >= 1 and --timeout > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    cases = all_cases()
    if args.only:
        cases = [c for c in cases if re.search(args.only, c.id)]
    if args.list:
        for case in cases:
            print(f"{case.id:32} {case.expect:7} {case.what}")
        return 0
    if not cases:
        print(f"no case matches {args.only!r}", file=sys.stderr)
        return 2
    outcomes = run_all(cases, args.jobs, args.timeout)
    report = markdown_table(outcomes) + "\n\n" + markdown_summary(outcomes) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 1 if any(o.verdict == "harness" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
