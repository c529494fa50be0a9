"""Validate the MCMC reference posteriors against importance sampling with the true likelihood.

For each task and observation, draws the task's MCMC reference and an independent
sampling-importance-resampling sample (``task.validate_reference``) and reports the
effective sample size of the importance weights and the C2ST between the two samples
(0.5: indistinguishable). Run ``python benchmarks/validate_references.py --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from skfalcon.datasets import SLCP, BernoulliGLM

TASKS = {"slcp": SLCP, "bernoulli_glm": BernoulliGLM}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument(
        "--observations", nargs="+", type=int, default=[0, 1], help="indices into observations(10)"
    )
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)

    rows = []
    for name in args.tasks:
        task = TASKS[name]()
        _, x_obs = task.observations(10)
        for index in args.observations:
            start = time.perf_counter()
            result = task.validate_reference(x_obs[index], args.n_samples, random_state=index)
            rows.append(
                {
                    "task": name,
                    "observation": index,
                    "ess": result.ess,
                    "c2st": result.c2st,
                    "seconds": time.perf_counter() - start,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    print("| task | observation | ESS | C2ST (MLP) | seconds |\n|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['task']} | {row['observation']} | {row['ess']:,.0f} | {row['c2st']:.3f} "
            f"| {row['seconds']:.0f} |"
        )
    if args.out:
        with open(args.out, "w") as stream:
            json.dump({"arguments": vars(args), "rows": rows}, stream, indent=2)


if __name__ == "__main__":
    main()
