"""Sequential versus amortized inference, and versus sbi's sequential NPE, per simulation.

For one observation of each task, every method gets a budget of simulations and
learns the posterior of that observation; its samples are compared with exact
reference samples by C2ST (0.5: indistinguishable from the truth, 1.0: fully
separable). Methods:

- ``truncated``: ``skfalcon.SequentialInference`` with every knob at its default, the
  truncated strategy (rounds from the prior restricted to a region around the current
  posterior);
- ``standard``: the same with ``strategy="standard"``, Falcon's continuous resampling;
- ``round_based``: the same with ``strategy="round_based"``;
- ``amortized``: the same estimator fitted once on prior simulations;
- ``sbi_snpe_c``: sbi's multi-round NPE-C (atomic loss), the budget split into
  ``--sbi-rounds`` equal rounds, each proposing from the last posterior;
- ``sbi_tsnpe``: sbi's truncated sequential NPE, the same rounds, each proposing from
  the prior truncated to the last posterior's highest-density region.

Run ``python benchmarks/bench_sequential.py --help`` for the options and see
``benchmarks/README.md`` for the setup. This is a script, not a test.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import numpy as np
import torch
from bench_accuracy import TASKS as ACCURACY_TASKS
from bench_accuracy import (
    add_estimator_params_argument,
    environment,
    import_optimizer_machinery,
    load_runs,
    log,
    n_cores,
    sbi_prior,
    set_threads,
)

from skfalcon.datasets import BernoulliGLM, GaussianLinear
from skfalcon.metrics import c2st


class WhitenedBernoulliGLM:
    """Bernoulli GLM in the coordinates ``z = L^{-1} theta`` of its prior ``N(0, L L^T)``.

    A sequential loop draws from the estimator's prior spec, which holds independent
    marginals only; the GLM's prior is correlated, so its spec's product of marginals is a
    wider prior than the task's. In ``z`` the prior is ``N(0, I)``, a spec the loop draws
    from exactly, and the posterior is the task's, mapped by ``L^{-1}``: every method
    (sbi's with the prior ``N(0, I)``) learns the same posterior, and the reference is the
    task's, mapped likewise.
    """

    def __init__(self):
        self.task = BernoulliGLM()
        self.n_parameters = self.task.n_parameters
        self.cholesky = np.linalg.cholesky(self.task.prior_cov)
        self.prior = [("normal", 0.0, 1.0)] * self.n_parameters

    def to_theta(self, z):
        return np.asarray(z) @ self.cholesky.T

    def to_z(self, theta):
        return np.linalg.solve(self.cholesky, np.asarray(theta).T).T

    def sample_prior(self, n, random_state=None):
        return np.random.default_rng(random_state).standard_normal((n, self.n_parameters))

    def simulate(self, z, random_state=None):
        return self.task.simulate(self.to_theta(z), random_state=random_state)

    def observations(self, n_observations=3, random_state=0):
        theta, x = self.task.observations(n_observations, random_state)
        return self.to_z(theta), x

    def reference_posterior(self, x_o, n_samples, random_state=None):
        return self.to_z(self.task.reference_posterior(x_o, n_samples, random_state=random_state))


# The first issue's tasks, the Bernoulli GLM whitened, and Gaussian linear with a hundred
# times less noise: its posterior is a tenth of the prior's width in each of the 10
# dimensions, the case where focusing simulations pays.
TASKS = {
    **ACCURACY_TASKS,
    "bernoulli_glm": WhitenedBernoulliGLM,
    "gaussian_linear_narrow": functools.partial(GaussianLinear, noise_var=0.001),
}

METHODS = ("truncated", "standard", "round_based", "amortized", "sbi_snpe_c", "sbi_tsnpe")
DEFAULT_METHODS = ("truncated", "standard", "amortized", "sbi_snpe_c", "sbi_tsnpe")


class TaskSimulator:
    """The task's simulator with a random stream that advances from call to call."""

    def __init__(self, task, seed):
        self.task = task
        self.rng = np.random.RandomState(seed)

    def __call__(self, theta):
        return self.task.simulate(theta, random_state=self.rng)


# ------------------------------------------------------------------ methods


def run_skfalcon(
    strategy, task, x_obs, budget, n_samples, seed, estimator_params=None, loop_params=None
):
    """SequentialInference with the given strategy, every other knob at its default.

    ``estimator_params`` (a dict) overrides the estimator's defaults, for every strategy;
    ``loop_params`` (a dict) overrides SequentialInference's.
    """
    from skfalcon import FlowPosteriorEstimator, SequentialInference

    estimator = FlowPosteriorEstimator(
        prior=task.prior, random_state=seed, **(estimator_params or {})
    )
    loop = SequentialInference(
        estimator,
        TaskSimulator(task, [seed, 2]),
        strategy=strategy,
        random_state=seed,
        **(loop_params or {}),
    )
    loop.run(x_obs, budget)
    samples = loop.estimator_.sample(x_obs, n_samples, random_state=seed)
    last = loop.history_[-1]
    return samples, {
        "rounds": len(loop.history_),
        "epochs": loop.estimator_.n_iter_,
        "final_fit": last["final_fit"],
        "net_type": loop.estimator_.net_type_,
        "validation_losses": {
            family: round(loss, 4) for family, loss in loop.estimator_.validation_losses_.items()
        },
        "stop_reason": loop.stop_reason_,
        "posterior_movement": [round(r["posterior_movement"], 4) for r in loop.history_[1:]],
        "truncation_volume": last["truncation_volume"],
        "outside_region": last["outside_region"],
    }


def run_sbi(variant, task, x_obs, budget, n_samples, seed, n_rounds, restricted_sampler):
    """sbi's NPE-C (multi-round, atomic loss) or truncated sequential NPE, whose restricted
    prior draws by ``restricted_sampler`` ("rejection" or "sir")."""
    from sbi.inference import NPE
    from sbi.utils import RestrictedPrior, get_density_thresholder

    torch.manual_seed(seed)  # sbi draws from torch's global generator
    simulator = TaskSimulator(task, [seed, 2])
    prior = sbi_prior(task)
    x_o = torch.as_tensor(x_obs, dtype=torch.float32)
    inference = NPE(prior=prior, density_estimator="nsf", show_progress_bars=False)
    proposal = prior
    sizes = [budget // n_rounds + (i < budget % n_rounds) for i in range(n_rounds)]
    for size in sizes:
        theta = proposal.sample((size,))
        x = torch.as_tensor(simulator(theta.numpy().astype(np.float64)), dtype=torch.float32)
        if variant == "sbi_snpe_c":
            inference.append_simulations(theta, x, proposal=proposal).train()
            proposal = inference.build_posterior().set_default_x(x_o)
        else:
            inference.append_simulations(theta, x).train(force_first_round_loss=True)
            posterior = inference.build_posterior().set_default_x(x_o)
            threshold = get_density_thresholder(posterior, quantile=1e-4)
            proposal = RestrictedPrior(
                prior,
                threshold,
                posterior=posterior if restricted_sampler == "sir" else None,
                sample_with=restricted_sampler,
            )
    posterior = inference.build_posterior().set_default_x(x_o)
    samples = posterior.sample((n_samples,), show_progress_bars=False)
    return samples.numpy().astype(np.float64), {"rounds": n_rounds}


def run_method(method, task, x_obs, budget, n_samples, seed, args):
    if method in ("standard", "round_based", "truncated", "amortized"):
        strategy = method
        loop_params = args.sequential_params if method != "amortized" else None
        return run_skfalcon(
            strategy, task, x_obs, budget, n_samples, seed, args.estimator_params, loop_params
        )
    return run_sbi(
        method, task, x_obs, budget, n_samples, seed, args.sbi_rounds, args.sbi_restricted_sampler
    )


# --------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    parser.add_argument(
        "--budgets",
        nargs="+",
        type=int,
        default=None,
        help="simulation budgets of every method but amortized (default 1000 2000 5000)",
    )
    parser.add_argument(
        "--amortized-budgets",
        nargs="+",
        type=int,
        default=None,
        help="simulation budgets of amortized (default 1000 2000 5000 10000)",
    )
    parser.add_argument(
        "--n-samples", type=int, default=None, help="posterior and reference samples (10000)"
    )
    parser.add_argument("--n-observations", type=int, default=1)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--sbi-rounds", type=int, default=4, help="rounds of the sbi methods")
    parser.add_argument(
        "--sbi-restricted-sampler",
        choices=("rejection", "sir"),
        default="rejection",
        help="how sbi's truncated NPE draws from its restricted prior; rejection from the "
        "prior stalls where the posterior is narrow in many dimensions",
    )
    add_estimator_params_argument(parser)
    parser.add_argument(
        "--sequential-params",
        type=json.loads,
        default={},
        help="JSON dict of SequentialInference settings for the sequential and round-based "
        "methods, e.g. '{\"min_training_samples\": 250}'",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: budgets 1000 2000, amortized 2000, 2000 samples",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the CPU cores)"
    )
    parser.add_argument(
        "--label",
        default=None,
        help="name of the skfalcon methods in the table and JSON, as a suffix "
        "(truncated becomes truncated_LABEL)",
    )
    parser.add_argument(
        "--out", default=None, help="JSON record (default benchmarks/results/sequential.json)"
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="print the table of earlier --out files (same sample count) and run nothing",
    )
    args = parser.parse_args(argv)
    args.budgets = args.budgets or ([1000, 2000] if args.quick else [1000, 2000, 5000])
    args.amortized_budgets = args.amortized_budgets or (
        [2000] if args.quick else [1000, 2000, 5000, 10_000]
    )
    args.n_samples = args.n_samples or (2000 if args.quick else 10_000)
    args.out = args.out or os.path.join(os.path.dirname(__file__), "results", "sequential.json")
    return args


def markdown_table(records, budgets):
    """One row per task and method, one column per budget: median C2ST over observations
    and seeds, and each seed's median in brackets when there are several seeds."""
    lines = [
        "| task | method | " + " | ".join(f"{b:,} sims" for b in budgets) + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    tasks = list(dict.fromkeys(r["task"] for r in records))
    methods = sorted(dict.fromkeys(r["method"] for r in records), key=method_rank)
    keys = [
        (task, method)
        for task in tasks
        for method in methods
        if any((r["task"], r["method"]) == (task, method) for r in records)
    ]
    for task, method in keys:
        cells = []
        for budget in budgets:
            runs = sorted(
                (
                    r
                    for r in records
                    if (r["task"], r["method"], r["budget"]) == (task, method, budget)
                ),
                key=lambda r: r["seed"],
            )
            scores = [s for r in runs for s in r["c2st"]]
            cell = f"{np.median(scores):.3f}" if scores else ""
            if len(runs) > 1:
                cell += " (" + ", ".join(f"{np.median(r['c2st']):.3f}" for r in runs) + ")"
            cells.append(cell)
        lines.append(f"| {task} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def merge(paths):
    """The table of several earlier ``--out`` files: medians over their seeds."""
    records, _ = load_runs(paths)
    print(markdown_table(records, sorted({r["budget"] for r in records})))


def method_rank(name):
    """The place of a record's method, labelled or not, in the order of ``METHODS``."""
    return next(
        (i for i, m in enumerate(METHODS) if name == m or name.startswith(f"{m}_")),
        len(METHODS),
    )


def method_name(method, label):
    """The method's name in the records: skfalcon's carry the run's label."""
    return f"{method}_{label}" if label and not method.startswith("sbi") else method


def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        merge(args.merge)
        return
    threads = set_threads(args.threads)
    import_optimizer_machinery()
    log(
        f"torch.set_num_threads({threads}); load average {os.getloadavg()[0]:.1f} on "
        f"{n_cores()} cores; methods {args.methods}, budgets {args.budgets}, amortized "
        f"{args.amortized_budgets}, {args.n_samples:,} samples, seeds {args.seeds}"
    )
    records = []
    for task_name in args.tasks:
        task = TASKS[task_name]()
        # The first of bench_accuracy's observations, so that MCMC references cached by
        # either script serve both.
        _, observations = task.observations(max(args.n_observations, 3))
        observations = observations[: args.n_observations]
        references = [
            task.reference_posterior(x_o, args.n_samples, random_state=i)
            for i, x_o in enumerate(observations)
        ]
        for seed in args.seeds:
            for method in args.methods:
                budgets = args.amortized_budgets if method == "amortized" else args.budgets
                for budget in budgets:
                    scores, train_s = [], []
                    for x_o, reference in zip(observations, references, strict=True):
                        start = time.perf_counter()
                        samples, info = run_method(
                            method, task, x_o, budget, args.n_samples, seed, args
                        )
                        train_s.append(time.perf_counter() - start)
                        scores.append(c2st(reference, samples))
                    log(
                        f"[{task_name}] seed {seed} {method} {budget:,} sims: C2ST "
                        f"{np.round(scores, 3).tolist()}, {np.median(train_s):.0f} s, {info}"
                    )
                    records.append(
                        {
                            "task": task_name,
                            "method": method_name(method, args.label),
                            "budget": budget,
                            "seed": seed,
                            "c2st": scores,
                            "seconds": train_s,
                            **info,
                        }
                    )
                    with open(args.out, "w") as stream:  # after every cell: long runs get cut
                        json.dump(
                            {
                                "arguments": vars(args),
                                "environment": environment(threads),
                                "runs": records,
                            },
                            stream,
                            indent=2,
                        )
    budgets = sorted(set(args.budgets) | set(args.amortized_budgets))
    print(markdown_table(records, budgets))
    log(f"results written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
