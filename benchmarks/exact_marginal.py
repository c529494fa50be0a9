"""Would an exact training marginal help the sequential loop? A diagnostic.

The loop's posterior is q(u | x) / m(u), with m = alpha * prior + (1 - alpha) * h and the
flow h learned from the proposal rows. This script runs the standard loop by hand on the
10-D Gaussian linear task (500 prior simulations, then batches of 250 from the proposal,
10 epochs apart, 2,000 in all), keeping a copy of the estimator at each proposal. It then
refits h alone on 20 times as many fresh draws from the same proposals (so h approaches the
exact mixture of proposals) and compares the Gaussian KL divergence from the analytic
posterior of 20,000 samples before and after.

    OMP_NUM_THREADS=1 python benchmarks/exact_marginal.py --seeds 0 1 2
"""

import argparse
import copy
import warnings

import numpy as np
import torch

from skfalcon import FlowPosteriorEstimator
from skfalcon.datasets import GaussianLinear


def gaussian_kl(samples: np.ndarray, reference: np.ndarray) -> float:
    """KL(N(samples) || N(reference)) between the Gaussians fitted to the two sample sets."""
    m1, m2 = samples.mean(0), reference.mean(0)
    s1, s2 = np.cov(samples.T), np.cov(reference.T)
    inv2 = np.linalg.inv(s2)
    return 0.5 * float(
        np.trace(inv2 @ s1)
        + (m2 - m1) @ inv2 @ (m2 - m1)
        - len(m1)
        + np.linalg.slogdet(s2)[1]
        - np.linalg.slogdet(s1)[1]
    )


def run(seed: int, multiple: int, budget: int) -> tuple[float, float]:
    task = GaussianLinear()
    x_obs = task.observations(1)[1][0]
    reference = task.reference_posterior(x_obs, 20_000, random_state=0)
    rng = np.random.RandomState([seed, 2])
    est = FlowPosteriorEstimator(prior=task.prior, random_state=seed, max_epochs=10)
    theta = est.sample_proposal(x_obs, 500, random_state=seed)
    est.partial_fit(theta, task.simulate(theta, random_state=rng))
    used, round_, proposal_draws = 500, 1, []
    while used < budget:
        n = min(250, budget - used)
        snapshot = copy.deepcopy(est)
        theta, log_prob = est.sample_proposal(
            x_obs, n, random_state=1000 * seed + round_, return_log_prob=True
        )
        proposal_draws.append(
            snapshot.sample_proposal(x_obs, multiple * n, random_state=1000 * seed + 500 + round_)
        )
        used += n
        est.set_params(max_epochs=200 if used >= budget else 10, random_state=1000 * seed + round_)
        est.partial_fit(theta, task.simulate(theta, random_state=rng), theta_log_prob=log_prob)
        round_ += 1
    kl_learned = gaussian_kl(est.sample(x_obs, 20_000, random_state=seed), reference)

    flow = est.network_.marginal
    u = est.prior_.to_cube(torch.as_tensor(np.concatenate(proposal_draws))).float()
    flow.train()
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    for _ in range(30):
        for rows in torch.randperm(len(u)).split(512):
            optimizer.zero_grad()
            (-flow.log_prob(u[rows]).mean()).backward()
            optimizer.step()
    flow.eval()
    kl_exact = gaussian_kl(est.sample(x_obs, 20_000, random_state=seed), reference)
    return kl_learned, kl_exact


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--multiple", type=int, default=20, help="fresh draws per proposal row")
    parser.add_argument("--budget", type=int, default=2000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    print("| seed | KL, h learned in the loop | KL, h refitted on the exact mixture |")
    print("|---|---|---|")
    for seed in args.seeds:
        learned, exact = run(seed, args.multiple, args.budget)
        print(f"| {seed} | {learned:.3f} | {exact:.3f} |", flush=True)


if __name__ == "__main__":
    main()
