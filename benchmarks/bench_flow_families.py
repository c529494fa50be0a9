"""Sampling and log_prob speed of skfalcon's flow families next to sbi's NPE, on one task.

Speed depends on the architecture, not on how well it is trained, so every model is
trained for a few epochs only, on the same simulations. Each figure is the median over
``--repeats`` calls of 10,000 samples (or log_prob pairs) for one observation.

    OMP_NUM_THREADS=1 python benchmarks/bench_flow_families.py --task gaussian_linear

sbi is optional (``--no-sbi`` skips it). This is a script, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch

from skfalcon import FlowPosteriorEstimator
from skfalcon.datasets import GaussianLinear, TwoMoons

# One network each, and the defaults (two members of three autoregressive transforms).
FAMILIES = {
    "default": {},
    "nsf": {"net_type": "nsf", "num_transforms": 3, "ensemble_size": 1},
    "nsf_coupling": {"net_type": "nsf_coupling", "num_transforms": 3, "ensemble_size": 1},
    "spline_coupling": {"net_type": "spline_coupling", "num_transforms": 3, "ensemble_size": 1},
    "spline_coupling_5": {
        "net_type": "spline_coupling",
        "num_transforms": 5,
        "ensemble_size": 1,
    },
}


def median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sbi_timings(task, theta, x, x_obs, n, repeats, epochs):
    from sbi.inference import NPE

    prior = task.sbi_prior() if hasattr(task, "sbi_prior") else None
    inference = NPE(prior=prior, density_estimator="nsf", show_progress_bars=False)
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    inference.append_simulations(as_tensor(theta), as_tensor(x)).train(max_num_epochs=epochs)
    posterior = inference.build_posterior()
    x_o = as_tensor(x_obs)
    sample = lambda: posterior.sample((n,), x=x_o, show_progress_bars=False)  # noqa: E731
    log_prob = lambda: posterior.log_prob(as_tensor(theta[:n]), x=x_o)  # noqa: E731
    return median_seconds(sample, repeats), median_seconds(log_prob, repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task", choices=["gaussian_linear", "two_moons"], default="gaussian_linear"
    )
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-sbi", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    task = {"gaussian_linear": GaussianLinear, "two_moons": TwoMoons}[args.task]()
    theta = task.sample_prior(10_000, random_state=0)
    x = task.simulate(theta, random_state=1)
    x_obs = task.observations(1)[1][0]
    rows = []
    for name in args.families:
        est = FlowPosteriorEstimator(
            prior=task.prior, max_epochs=args.epochs, random_state=0, **FAMILIES[name]
        ).fit(theta, x)
        sample = median_seconds(lambda e=est: e.sample(x_obs, args.n_samples), args.repeats)
        log_prob = median_seconds(
            lambda e=est: e.log_prob(theta[: args.n_samples], x_obs), args.repeats
        )
        rows.append({"method": f"skfalcon {name}", "sample_s": sample, "log_prob_s": log_prob})
        print(json.dumps(rows[-1]), flush=True)
    if not args.no_sbi:
        sample, log_prob = sbi_timings(
            task, theta, x, x_obs, args.n_samples, args.repeats, args.epochs
        )
        rows.append({"method": "sbi NPE-NSF", "sample_s": sample, "log_prob_s": log_prob})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n| method | {args.n_samples} samples (s) | {args.n_samples} log_prob (s) |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['sample_s']:.3f} | {row['log_prob_s']:.3f} |")
    return np.asarray([r["sample_s"] for r in rows])


if __name__ == "__main__":
    main()
