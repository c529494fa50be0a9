"""Posterior accuracy and speed of skfalcon next to sbi's NPE, on tasks with exact posteriors.

For each task and seed, one set of prior simulations is drawn and both methods
are trained on it. Each method then samples the posterior of a few fixed
observations, and its samples are compared with reference samples (exact, or MCMC
validated against importance sampling) by C2ST with two classifiers, an MLP and a
random forest (0.5: indistinguishable from the truth, 1.0: fully separable).

Run ``python benchmarks/bench_accuracy.py --help`` for the options and see
``benchmarks/README.md`` for the setup. This is a script, not a test.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import sklearn
import torch
from sklearn.ensemble import RandomForestClassifier

import skfalcon
from skfalcon.datasets import (
    SLCP,
    BernoulliGLM,
    GaussianLinear,
    GaussianMixture,
    SLCPDistractors,
    TwoMoons,
)
from skfalcon.metrics import c2st

TASKS = {
    "two_moons": TwoMoons,
    "gaussian_linear": GaussianLinear,
    "slcp": SLCP,
    "gaussian_mixture": GaussianMixture,
    "bernoulli_glm": BernoulliGLM,
    "slcp_distractors": SLCPDistractors,
}
# The two classifiers of the C2ST: column name -> classifier (None: c2st's default MLP).
C2ST_CLASSIFIERS = {
    "c2st_mlp": None,
    "c2st_rf": RandomForestClassifier(n_estimators=100, random_state=0),
}
# "sbi" is NPE with a neural spline flow; "sbi_fmpe" flow-matching posterior estimation.
METHODS = ("skfalcon", "sbi", "sbi_fmpe")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def n_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# ------------------------------------------------------------------ methods


# FlowPosteriorEstimator settings that override its defaults (--estimator-params).
ESTIMATOR_PARAMS: dict = {}


def fit_skfalcon(task, theta, x, seed):
    """skfalcon's FlowPosteriorEstimator (defaults unless ``ESTIMATOR_PARAMS``), fitted;
    returns it and the fit time."""
    from skfalcon import FlowPosteriorEstimator

    estimator = FlowPosteriorEstimator(prior=task.prior, random_state=seed, **ESTIMATOR_PARAMS)
    start = time.perf_counter()
    estimator.fit(theta, x)
    return estimator, time.perf_counter() - start


def sample_skfalcon(estimator, x_o, n_samples, seed):
    """Posterior samples of one observation, float64 of shape ``(n_samples, n_parameters)``."""
    return np.asarray(estimator.sample(x_o, n_samples, random_state=seed))


def run_skfalcon(task, theta, x, x_obs, n_samples, seed):
    """Fit skfalcon's FlowPosteriorEstimator with its defaults, then sample."""
    estimator, fit_s = fit_skfalcon(task, theta, x, seed)
    samples, sample_s = [], []
    for x_o in x_obs:
        start = time.perf_counter()
        samples.append(sample_skfalcon(estimator, x_o, n_samples, seed))
        sample_s.append(time.perf_counter() - start)
    return fit_s, sample_s, samples


def sbi_prior(task):
    """The task's prior as the torch distribution sbi expects."""
    from sbi.utils import BoxUniform

    if isinstance(task, (TwoMoons, SLCP, SLCPDistractors, GaussianMixture)):
        # Every box prior here is the same interval in every coordinate.
        _, low, high = task.prior[0]
        d = task.n_parameters
        return BoxUniform(low=low * torch.ones(d), high=high * torch.ones(d))
    if isinstance(task, BernoulliGLM):  # the joint, correlated prior, not its marginals
        return torch.distributions.MultivariateNormal(
            loc=torch.zeros(task.n_parameters),
            covariance_matrix=torch.as_tensor(task.prior_cov, dtype=torch.float32),
        )
    if all(kind == "normal" for kind, *_ in task.prior):  # independent normals
        loc, scale = torch.tensor([spec[1:] for spec in task.prior], dtype=torch.float32).T
        return torch.distributions.MultivariateNormal(loc, torch.diag(scale**2))
    raise ValueError(f"no sbi prior for task {task!r}")


def fit_sbi(task, theta, x, seed, method="sbi"):
    """sbi's NPE with an NSF density estimator (``"sbi"``) or its flow-matching posterior
    estimation (``"sbi_fmpe"``), sbi's defaults, trained; returns the posterior and the fit
    time (building the inference object, appending, training, building the posterior)."""
    from sbi.inference import FMPE, NPE

    torch.manual_seed(seed)  # sbi draws from torch's global generator
    start = time.perf_counter()
    if method == "sbi_fmpe":
        inference = FMPE(prior=sbi_prior(task), show_progress_bars=False)
    else:
        inference = NPE(prior=sbi_prior(task), density_estimator="nsf", show_progress_bars=False)
    inference.append_simulations(
        torch.as_tensor(theta, dtype=torch.float32), torch.as_tensor(x, dtype=torch.float32)
    )
    posterior = inference.build_posterior(inference.train())
    return posterior, time.perf_counter() - start


def sample_sbi(posterior, x_o, n_samples):
    """sbi's direct posterior samples of one observation, as float64 numpy."""
    draws = posterior.sample(
        (n_samples,), x=torch.as_tensor(x_o, dtype=torch.float32), show_progress_bars=False
    )
    return draws.numpy().astype(np.float64)


def run_sbi(task, theta, x, x_obs, n_samples, seed, method="sbi"):
    """Fit sbi's NPE with an NSF density estimator (or FMPE), sbi's defaults, then sample."""
    posterior, fit_s = fit_sbi(task, theta, x, seed, method)
    samples, sample_s = [], []
    for x_o in x_obs:
        start = time.perf_counter()
        samples.append(sample_sbi(posterior, x_o, n_samples))
        sample_s.append(time.perf_counter() - start)
    return fit_s, sample_s, samples


RUNNERS = {
    "skfalcon": run_skfalcon,
    "sbi": run_sbi,
    "sbi_fmpe": functools.partial(run_sbi, method="sbi_fmpe"),
}


def add_estimator_params_argument(parser, default=None) -> None:
    """``--estimator-params``: a JSON dict of FlowPosteriorEstimator settings."""
    parser.add_argument(
        "--estimator-params",
        type=json.loads,
        default=default,
        help="JSON dict of FlowPosteriorEstimator settings for every skfalcon fit, "
        'e.g. \'{"net_type": "nsf_coupling"}\'',
    )


def set_threads(requested: int | None) -> int:
    """Set torch's thread count (default: the available cores); returns it."""
    threads = requested or n_cores()
    torch.set_num_threads(threads)
    return threads


def import_optimizer_machinery() -> None:
    """Import what torch's first optimizer imports, so that no timed fit pays it.

    ``torch.optim.Optimizer.__init__`` imports ``torch._dynamo`` on its first call: seconds,
    once per process, paid by whichever method a benchmark happens to fit first.
    """
    import torch._dynamo  # noqa: F401


def check_importable(methods):
    """Fail early, with a hint, when a method's package is missing."""
    for method in methods:
        try:
            if method == "skfalcon":
                from skfalcon import FlowPosteriorEstimator  # noqa: F401
            else:
                import sbi  # noqa: F401
        except ImportError as error:
            hint = (
                "run with --only sbi to benchmark sbi alone"
                if method == "skfalcon"
                else "install it with: pip install -e '.[benchmarks]' 'torch==2.13.0'"
            )
            sys.exit(f"cannot import {method} ({error}); {hint}.")


# --------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument(
        "--n-simulations", type=int, default=None, help="prior simulations (default 10000)"
    )
    parser.add_argument(
        "--n-samples",
        type=int,
        default=None,
        help="posterior and reference samples per observation (default 10000)",
    )
    parser.add_argument("--n-observations", type=int, default=3)
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0], help="one run per seed; medians reported"
    )
    parser.add_argument("--only", choices=METHODS, default=None, help="run one method only")
    add_estimator_params_argument(parser)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1000 simulations, 1000 samples"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: the number of CPU cores available to the process)",
    )
    parser.add_argument(
        "--label",
        default=None,
        help="name of the skfalcon rows in the table and JSON (default: skfalcon)",
    )
    parser.add_argument("--out", default=None, help="write all results to this JSON file")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="print the table of earlier --out files (same sample count) and run nothing",
    )
    args = parser.parse_args(argv)
    default = 1000 if args.quick else 10_000
    args.n_simulations = args.n_simulations or default
    args.n_samples = args.n_samples or default
    return args


def source_revision() -> str | None:
    """The git commit of the checkout the benchmark ran from, ``+dirty`` with local edits."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args):
        return subprocess.run(
            ["git", "-C", here, *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        return git("rev-parse", "--short", "HEAD") + (
            "+dirty" if git("status", "--porcelain") else ""
        )
    except (OSError, subprocess.CalledProcessError):
        return None


# Read when the benchmark's code is imported: a run that outlives a commit records the
# code it ran, not the checkout it ended in.
_REVISION_AT_IMPORT = source_revision()


def environment(threads):
    versions = {
        "python": platform.python_version(),
        "skfalcon": skfalcon.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }
    try:
        import sbi

        versions["sbi"] = sbi.__version__
    except ImportError:
        pass
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_cores": n_cores(),
        "torch_threads": threads,
        "load_average_at_end": os.getloadavg(),
        "versions": versions,
        "revision": _REVISION_AT_IMPORT,
    }


def summarize(records):
    """One row per task and method: medians over seeds (and observations)."""
    rows = []
    keys = sorted({(r["task"], r["method"]) for r in records}, key=lambda k: (k[0], k[1]))
    for task, method in keys:
        runs = [r for r in records if r["task"] == task and r["method"] == method]
        row = {"task": task, "method": method}
        for name in C2ST_CLASSIFIERS:
            row[f"{name}_median"] = statistics.median(v for r in runs for v in r[name])
            row[f"{name}_per_observation"] = np.median([r[name] for r in runs], axis=0).tolist()
        rows.append(
            {
                **row,
                "fit_s_median": statistics.median(r["fit_s"] for r in runs),
                "sample_s_median": statistics.median(v for r in runs for v in r["sample_s"]),
                "n_seeds": len(runs),
            }
        )
    return rows


def markdown_table(rows, n_samples):
    lines = [
        "| task | method | median c2st_mlp | c2st_mlp per observation | median c2st_rf "
        f"| c2st_rf per observation | fit s | sample s ({n_samples:,}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = []
        for name in C2ST_CLASSIFIERS:
            per_obs = ", ".join(f"{v:.3f}" for v in row[f"{name}_per_observation"])
            cells.append(f"{row[f'{name}_median']:.3f} | {per_obs}")
        lines.append(
            f"| {row['task']} | {row['method']} | {' | '.join(cells)} "
            f"| {row['fit_s_median']:.1f} | {row['sample_s_median']:.2f} |"
        )
    return "\n".join(lines)


def load_runs(paths):
    """The runs of several earlier ``--out`` files and their common sample count; exits
    when the files were run with different ``--n-samples``."""
    records, n_samples = [], set()
    for path in paths:
        with open(path) as stream:
            result = json.load(stream)
        records.extend(result["runs"])
        n_samples.add(result["arguments"]["n_samples"])
    if len(n_samples) != 1:
        sys.exit(f"the files were run with different --n-samples: {sorted(n_samples)}")
    return records, n_samples.pop()


def merge(paths):
    """The table of several earlier ``--out`` files, one row per task and method."""
    records, n_samples = load_runs(paths)
    print(markdown_table(summarize(records), n_samples))


def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        merge(args.merge)
        return
    ESTIMATOR_PARAMS.update(args.estimator_params or {})
    methods = [args.only] if args.only else list(METHODS)
    check_importable(methods)

    threads = set_threads(args.threads)
    import_optimizer_machinery()
    log(
        f"torch.set_num_threads({threads})"
        + ("" if args.threads else ": one thread per available CPU core")
        + f"; load average {os.getloadavg()[0]:.1f} on {n_cores()} cores"
    )
    log(
        f"{args.n_simulations:,} simulations, {args.n_samples:,} posterior and reference "
        f"samples, {args.n_observations} observations, seeds {args.seeds}, methods {methods}"
    )

    records = []
    for task_name in args.tasks:
        task = TASKS[task_name]()
        _, x_obs = task.observations(args.n_observations)
        start = time.perf_counter()
        references = [
            task.reference_posterior(x_o, args.n_samples, random_state=i)
            for i, x_o in enumerate(x_obs)
        ]
        log(f"[{task_name}] reference samples in {time.perf_counter() - start:.1f} s")

        for seed in args.seeds:
            # A stream of its own, apart from the observations' (random_state=0).
            rng = np.random.RandomState([seed, 1])
            theta = task.sample_prior(args.n_simulations, random_state=rng)
            x = task.simulate(theta, random_state=rng)
            for method in methods:
                log(f"[{task_name}] seed {seed}: fitting {method} ...")
                fit_s, sample_s, samples = RUNNERS[method](
                    task, theta, x, x_obs, args.n_samples, seed
                )
                start = time.perf_counter()
                scores = {
                    name: [
                        c2st(ref, s, classifier=classifier)
                        for ref, s in zip(references, samples, strict=True)
                    ]
                    for name, classifier in C2ST_CLASSIFIERS.items()
                }
                shown = ", ".join(f"{k} {np.round(v, 3).tolist()}" for k, v in scores.items())
                log(
                    f"[{task_name}] seed {seed}: {method} fit {fit_s:.1f} s, sample "
                    f"{statistics.median(sample_s):.2f} s, {shown} "
                    f"(C2ST took {time.perf_counter() - start:.0f} s)"
                )
                records.append(
                    {
                        "task": task_name,
                        "method": args.label if method == "skfalcon" and args.label else method,
                        "seed": seed,
                        "fit_s": fit_s,
                        "sample_s": sample_s,
                        **scores,
                    }
                )

    rows = summarize(records)
    print(markdown_table(rows, args.n_samples))
    if args.out:
        with open(args.out, "w") as stream:
            json.dump(
                {
                    "arguments": vars(args),
                    "environment": environment(threads),
                    "summary": rows,
                    "runs": records,
                },
                stream,
                indent=2,
            )
        log(f"results written to {args.out}")


if __name__ == "__main__":
    main()
