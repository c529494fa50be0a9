"""Quickstart: simulate two moons, fit a flow posterior, sample it, compare with the truth.

Run with ``bash scripts/quickstart.sh`` (installs first) or ``python examples/quickstart.py``.
"""

import argparse
import time

import numpy as np
import torch

from skfalcon import FlowPosteriorEstimator
from skfalcon.datasets import TwoMoons
from skfalcon.metrics import c2st


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-simulations", type=int, default=10_000)
    parser.add_argument("--n-samples", type=int, default=10_000)
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="training epochs at most (default: the estimator's; early stopping ends it sooner)",
    )
    parser.add_argument(
        "--n-c2st",
        type=int,
        default=2_000,
        help="samples of each side in the classifier two-sample test",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: these flows are small, and a thread pool on a CPU "
        "that other work keeps busy slows each step many times over)",
    )
    parser.add_argument(
        "--plot",
        metavar="PATH",
        help="write a corner plot of the posterior, the exact reference and the truth to PATH "
        "(needs matplotlib: pip install 'skfalcon[plots]')",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    task = TwoMoons()
    theta = task.sample_prior(args.n_simulations, random_state=args.seed)
    x = task.simulate(theta, random_state=args.seed + 1)
    print(f"Simulated {len(theta)} two-moons pairs: theta {theta.shape}, x {x.shape}")

    options = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
    est = FlowPosteriorEstimator(prior=task.prior, random_state=args.seed, verbose=1, **options)
    start = time.perf_counter()
    est.fit(theta, x)
    print(
        f"Fitted in {time.perf_counter() - start:.1f} s, {est.n_iter_} epochs "
        f"(best validation loss {est.history_[est.best_epoch_]['val_loss']:.3f})"
    )

    theta_true, x_obs = task.observations(1, random_state=args.seed)
    theta_true, x_obs = theta_true[0], x_obs[0]
    start = time.perf_counter()
    samples, ess = est.sample(x_obs, args.n_samples, return_ess=True)
    print(
        f"Drew {len(samples)} posterior samples in {time.perf_counter() - start:.2f} s "
        f"(effective sample size {ess:.0f}; marginal: {est.marginal_})"
    )

    reference = task.reference_posterior(x_obs, args.n_samples, random_state=args.seed)
    print("\nPosterior summary for x_obs =", np.round(x_obs, 4))
    print(f"{'':>8} {'true':>8} {'mean':>8} {'std':>8} {'5%':>8} {'95%':>8} {'ref mean':>9}")
    for i in range(samples.shape[1]):
        q05, q95 = np.quantile(samples[:, i], [0.05, 0.95])
        print(
            f"theta[{i}] {theta_true[i]:8.3f} {samples[:, i].mean():8.3f} "
            f"{samples[:, i].std():8.3f} {q05:8.3f} {q95:8.3f} {reference[:, i].mean():9.3f}"
        )
    lp = est.log_prob(samples[:5], x_obs)
    print("log p(theta | x_obs) of the first samples:", np.round(lp, 3))
    n = args.n_c2st  # the classifier's cost grows with the samples; 2 x 2,000 resolve ~0.02
    score = c2st(samples[:n], reference[:n], random_state=args.seed)
    print(f"C2ST against the exact posterior: {score:.3f} (0.5 is perfect)")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from skfalcon.plotting import plot_corner

        fig = plot_corner({"skfalcon": samples, "exact": reference}, truth=theta_true)
        fig.suptitle(f"Two moons: posterior of x_obs = {np.round(x_obs, 3).tolist()}")
        fig.savefig(args.plot, dpi=120)
        print(f"Corner plot written to {args.plot}")


if __name__ == "__main__":
    main()
