"""Which flow family does ``net_type="auto"`` keep on each benchmark task?

For each task and seed, the same prior simulations as ``bench_accuracy.py`` (10,000 by
default) are fitted once with ``net_type="auto"``, which trains a spline flow and an affine
flow and keeps the one of lower validation loss. Printed: each family's validation loss
(held-out negative log-likelihood of the posterior flow, nats), the family kept and the
fit seconds. No C2ST: ``bench_accuracy.py --estimator-params '{"net_type": "auto"}'``
measures the accuracy of the result.

    OMP_NUM_THREADS=1 python benchmarks/family_choice.py --seeds 0 1 2
"""

import argparse
import json
import time
import warnings

import numpy as np
import torch
from bench_accuracy import TASKS

from skfalcon import FlowPosteriorEstimator


def choose(task, seed: int, n_simulations: int, estimator_params: dict) -> dict:
    rng = np.random.RandomState([seed, 1])  # bench_accuracy.py's stream
    theta = task.sample_prior(n_simulations, random_state=rng)
    x = task.simulate(theta, random_state=rng)
    estimator = FlowPosteriorEstimator(
        prior=task.prior, random_state=seed, **{"net_type": "auto", **estimator_params}
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and overfitting: the fit is the default
        estimator.fit(theta, x)
    return {
        "losses": estimator.validation_losses_,
        "kept": estimator.net_type_,
        "fit_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--n-simulations", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--estimator-params", type=json.loads, default={}, help="JSON dict of estimator settings"
    )
    parser.add_argument("--out", default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| task | seed | validation loss, nsf | validation loss, maf | kept | fit s |")
    print("|---|---|---|---|---|---|")
    results = []
    for name in args.tasks:
        for seed in args.seeds:
            result = choose(TASKS[name](), seed, args.n_simulations, args.estimator_params)
            results.append({"task": name, "seed": seed, **result})
            losses = result["losses"]
            print(
                f"| {name} | {seed} | {losses.get('nsf', float('nan')):.3f} | "
                f"{losses.get('maf', float('nan')):.3f} | {result['kept']} | "
                f"{result['fit_s']:.1f} |",
                flush=True,
            )
    if args.out:
        with open(args.out, "w") as stream:
            json.dump({"arguments": vars(args), "results": results}, stream, indent=2)


if __name__ == "__main__":
    main()
