"""How far can truncation take a task? A diagnostic.

A truncated loop at its best spends all of its simulations in the smallest region that
holds the posterior. This script gives the estimator that: ``--budget`` simulations from
the prior restricted to the box of the reference posterior's 0.1 % to 99.9 % quantiles
(per coordinate) for ``bench_sequential.py``'s observation of ``--task`` (SLCP unless
told), one fit (at the defaults, or ``--estimator-params``), and the MLP C2ST of its
draws against the reference. Draws outside the box are reported, and a second C2ST keeps
only those inside it. A fit that overfit after its best epoch (whose weights it keeps) is
marked.

    OMP_NUM_THREADS=1 python benchmarks/ideal_region.py --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/ideal_region.py --task bernoulli_glm --budget 2000
"""

import argparse
import json
import warnings

import numpy as np
import torch
from bench_sequential import TASKS
from scipy import stats

from skfalcon import FlowPosteriorEstimator
from skfalcon.metrics import c2st

_TAIL = 1e-3
_N_SAMPLES = 10_000


def marginals(prior) -> list:
    """scipy distributions of the tasks' independent uniform and normal marginals."""
    families = {"uniform": lambda a, b: stats.uniform(a, b - a), "normal": stats.norm}
    return [families[name](a, b) for name, a, b in prior]


def cdf_box(dists, low, high) -> tuple[np.ndarray, np.ndarray]:
    """The marginals' CDFs at the box's edges: the prior restricted to the box is uniform
    between them, and its mass is the product of their differences."""
    lower = np.array([d.cdf(v) for d, v in zip(dists, low, strict=True)])
    upper = np.array([d.cdf(v) for d, v in zip(dists, high, strict=True)])
    return lower, upper


def run(task, seed, budget, box, x_obs, reference, estimator_params) -> dict:
    low, high = box
    dists = marginals(task.prior)
    lower, upper = cdf_box(dists, low, high)
    u = np.random.default_rng(seed).uniform(lower, upper, (budget, task.n_parameters))
    theta = np.column_stack([d.ppf(u[:, i]) for i, d in enumerate(dists)])
    x = task.simulate(theta, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overfitting warnings: the best epoch is kept
        estimator = FlowPosteriorEstimator(
            prior=task.prior, random_state=seed, verbose=False, **estimator_params
        )
        estimator.fit(theta, x)
    samples = estimator.sample(x_obs, 2 * _N_SAMPLES, random_state=seed)
    inside = np.all((low <= samples) & (samples <= high), axis=1)
    return {
        "c2st": c2st(reference, samples[:_N_SAMPLES]),
        "c2st_inside": c2st(reference, samples[inside][:_N_SAMPLES]),
        "share_inside": float(inside.mean()),
        "overfitting": bool(estimator.history_[-1].get("overfitting", False)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="slcp")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--budget", type=int, default=5000, help="simulations in the box")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--estimator-params", type=json.loads, default={}, help="JSON dict of estimator settings"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = TASKS[args.task]()
    x_obs = task.observations(3)[1][0]  # the first, as in bench_sequential.py
    reference = task.reference_posterior(x_obs, _N_SAMPLES, random_state=0)
    low, high = np.quantile(reference, [_TAIL, 1 - _TAIL], axis=0)
    lower, upper = cdf_box(marginals(task.prior), low, high)
    share = float(np.prod(upper - lower))
    print(f"reference box: {share:.1%} of the prior's volume")
    results = []
    for seed in args.seeds:
        result = run(task, seed, args.budget, (low, high), x_obs, reference, args.estimator_params)
        results.append(result)
        print(
            f"seed {seed}: C2ST {result['c2st']:.3f}, inside the box {result['c2st_inside']:.3f}"
            f" ({result['share_inside']:.1%} of the draws)"
            + (", the fit overfit after its best epoch" if result["overfitting"] else ""),
            flush=True,
        )
    print(f"median C2ST {np.median([r['c2st'] for r in results]):.3f}")


if __name__ == "__main__":
    main()
