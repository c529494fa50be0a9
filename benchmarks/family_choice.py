"""Which flow family does ``net_type="auto"`` keep on each benchmark task?

For each task and seed, the same prior simulations as ``bench_accuracy.py`` (10,000 by
default) are fitted once with ``net_type="auto"``, which trains each family of
``skfalcon.engine.AUTO_FAMILIES`` and keeps the one of lower validation loss. Printed: each family's validation loss
(held-out negative log-likelihood of the posterior flow, nats), the family kept and the
fit seconds. With ``--time-default`` each fit is also timed against a fit of the default
family alone on the same simulations, in the same process, the two in alternating order.
No C2ST: ``bench_accuracy.py --estimator-params '{"net_type": "auto"}'`` measures the
accuracy of the result.

    OMP_NUM_THREADS=1 python benchmarks/family_choice.py --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/family_choice.py --seeds 0 --time-default
"""

import argparse
import json
import time
import warnings

import numpy as np
import torch
from bench_accuracy import TASKS
from bench_sequential import TASKS as SEQUENTIAL_TASKS

from skfalcon import FlowPosteriorEstimator
from skfalcon.engine import AUTO_FAMILIES


def timed_fit(task, theta, x, seed: int, params: dict):
    """The fitted estimator and its fit seconds."""
    estimator = FlowPosteriorEstimator(prior=task.prior, random_state=seed, **params)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and overfitting: the fit is the default
        estimator.fit(theta, x)
    return estimator, time.perf_counter() - start


def choose(task, seed: int, n_simulations: int, estimator_params: dict, time_default: bool):
    rng = np.random.RandomState([seed, 1])  # bench_accuracy.py's stream
    theta = task.sample_prior(n_simulations, random_state=rng)
    x = task.simulate(theta, random_state=rng)
    params = {"net_type": "auto", **estimator_params}
    default_s = None
    if time_default and seed % 2:
        _, default_s = timed_fit(task, theta, x, seed, {**params, "net_type": "nsf"})
    estimator, fit_s = timed_fit(task, theta, x, seed, params)
    if time_default and not seed % 2:
        _, default_s = timed_fit(task, theta, x, seed, {**params, "net_type": "nsf"})
    return {
        "losses": estimator.validation_losses_,
        "kept": estimator.net_type_,
        "fit_s": fit_s,
        "default_fit_s": default_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # bench_sequential.py's narrow Gaussian too (its GLM is the whitened one: not offered).
    tasks = {**TASKS, "gaussian_linear_narrow": SEQUENTIAL_TASKS["gaussian_linear_narrow"]}
    parser.add_argument("--tasks", nargs="+", choices=sorted(tasks), default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--n-simulations", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--estimator-params", type=json.loads, default={}, help="JSON dict of estimator settings"
    )
    parser.add_argument(
        "--time-default", action="store_true", help="also time a fit of the default family"
    )
    parser.add_argument("--out", default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    columns = "".join(f" validation loss, {family} |" for family in AUTO_FAMILIES)
    timing = " default fit s | ratio |" if args.time_default else ""
    print(f"| task | seed |{columns} kept | fit s |{timing}")
    print("|---|---|" + "---|" * (len(AUTO_FAMILIES) + 2 + 2 * args.time_default))
    if args.time_default:
        # The first fit of a process pays one-off costs (imports, allocator): not timed.
        warm = tasks[args.tasks[0]]()
        theta = warm.sample_prior(200, random_state=0)
        timed_fit(warm, theta, warm.simulate(theta, random_state=0), 0, {"max_epochs": 1})
    results = []
    for name in args.tasks:
        for seed in args.seeds:
            result = choose(
                tasks[name](), seed, args.n_simulations, args.estimator_params, args.time_default
            )
            results.append({"task": name, "seed": seed, **result})
            losses = result["losses"]
            shown = "".join(
                f" {losses.get(family, float('nan')):.3f} |" for family in AUTO_FAMILIES
            )
            if args.time_default:
                ratio = result["fit_s"] / result["default_fit_s"]
                shown += f" {result['kept']} | {result['fit_s']:.1f} |"
                shown += f" {result['default_fit_s']:.1f} | {ratio:.2f} |"
            else:
                shown += f" {result['kept']} | {result['fit_s']:.1f} |"
            print(f"| {name} | {seed} |{shown}", flush=True)
    if args.out:
        with open(args.out, "w") as stream:
            json.dump({"arguments": vars(args), "results": results}, stream, indent=2)


if __name__ == "__main__":
    main()
