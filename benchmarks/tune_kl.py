"""KL(p || q) of skfalcon's posterior against an exact one: a cheap signal for tuning.

For each seed, fits the estimator on 10,000 prior simulations of that seed (the same
simulations as ``bench_accuracy.py``) and prints, per observation, the mean of
``log p(theta | x) - log q(theta | x)`` over 10,000 draws of the exact posterior ``p``;
lower is better, 0 is exact. Needs a task with a closed-form posterior density.

    OMP_NUM_THREADS=1 python benchmarks/tune_kl.py --task gaussian_linear --seeds 0 1 2 \\
        --estimator-params '{"lr": 0.0005, "num_bins": 8}'

This is a script, not a test.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch

from skfalcon import FlowPosteriorEstimator
from skfalcon.datasets import GaussianLinear, GaussianMixture

TASKS = {"gaussian_linear": GaussianLinear, "gaussian_mixture": GaussianMixture}


def kl_of_fit(task, seed: int, params: dict, n_observations: int, n_samples: int) -> dict:
    rng = np.random.RandomState([seed, 1])
    theta = task.sample_prior(10_000, random_state=rng)
    x = task.simulate(theta, random_state=rng)
    _, x_obs = task.observations(n_observations)
    est = FlowPosteriorEstimator(prior=task.prior, random_state=seed, **params)
    start = time.perf_counter()
    est.fit(theta, x)
    fit_s = time.perf_counter() - start
    kl = []
    for i, x_o in enumerate(x_obs):
        reference = task.reference_posterior(x_o, n_samples, random_state=i)
        kl.append(float(np.mean(task.log_posterior(reference, x_o) - est.log_prob(reference, x_o))))
    return {
        "seed": seed,
        "kl": kl,
        "mean_kl": float(np.mean(kl)),
        "fit_s": fit_s,
        "epochs": est.n_iter_,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="gaussian_linear")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--estimator-params", type=json.loads, default={})
    parser.add_argument("--n-observations", type=int, default=3)
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    task = TASKS[args.task]()
    for seed in args.seeds:
        record = kl_of_fit(task, seed, args.estimator_params, args.n_observations, args.n_samples)
        print(json.dumps({"params": args.estimator_params, **record}), flush=True)


if __name__ == "__main__":
    main()
