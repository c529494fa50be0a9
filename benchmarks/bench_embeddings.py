"""Learned embeddings against the default one, on high-dimensional observations with known posteriors.

Two tasks, both trained on the same simulations for every embedding:

- ``distractors``: the 10-D Gaussian linear task (``skfalcon.datasets.GaussianLinear``) with
  100 pure-noise features appended to ``x``. The noise carries no information, so the
  posterior is the analytic one of the clean task. Compared: the clean task with the default
  embedding (the target), and the 110-feature task with the default embedding and with the
  ``"mlp"`` preset.
- ``peaks``: a 1-D signal of 200 samples holding two Gaussian peaks whose positions and
  amplitudes are the 4 parameters, in white Gaussian noise. The likelihood is Gaussian, and
  the reference posterior is drawn by adaptive importance sampling from the exact
  unnormalised posterior (its effective sample size is printed). Compared: the default
  embedding, ``"mlp"`` and ``"cnn1d"``.

Each fit's posterior samples are compared with reference samples by C2ST (0.5: the truth).
Run ``python benchmarks/bench_embeddings.py --help``; see ``benchmarks/README.md``.
This is a script, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from bench_accuracy import environment, log, set_threads
from scipy.special import logsumexp

from skfalcon import FlowPosteriorEstimator
from skfalcon.datasets import GaussianLinear
from skfalcon.metrics import c2st

N_DISTRACTORS = 100


# ------------------------------------------------------------------ tasks


class Distractors:
    """Gaussian linear (10-D) observed through ``N_DISTRACTORS`` extra pure-noise features."""

    name = "distractors"
    configurations = (
        ("clean", None),
        ("distracted", None),
        ("distracted", "mlp"),
        ("distracted", "linear"),
    )

    def __init__(self):
        self.task = GaussianLinear()
        self.prior = self.task.prior

    def simulate(self, n, rng, variant):
        theta = self.task.sample_prior(n, random_state=rng)
        x = self.task.simulate(theta, random_state=rng)
        noise = rng.standard_normal((n, N_DISTRACTORS))
        return theta, (x if variant == "clean" else np.hstack([x, noise]))

    def observations(self, k):
        _, x_obs = self.task.observations(k)
        noise = np.random.RandomState(12345).standard_normal((k, N_DISTRACTORS))
        return {"clean": x_obs, "distracted": np.hstack([x_obs, noise])}

    def reference(self, x_clean, n_samples, seed):
        return self.task.reference_posterior(x_clean, n_samples, random_state=seed), None


class Peaks:
    r"""Two Gaussian peaks in a noisy 1-D signal.

    :math:`x(t_j) = A_1 g(t_j - \mu_1) + A_2 g(t_j - \mu_2) + \sigma \epsilon_j` on 200
    points of :math:`[0, 1]`, :math:`g(s) = \exp(-s^2 / 2w^2)`, :math:`w = 0.04`,
    :math:`\sigma = 0.5`; :math:`\mu_1 \sim U(0.1, 0.45)`, :math:`\mu_2 \sim U(0.55, 0.9)`,
    :math:`A_i \sim U(0.5, 2)`. The position ranges do not overlap, so the peaks cannot swap.
    """

    name = "peaks"
    configurations = (("signal", None), ("signal", "mlp"), ("signal", "cnn1d"))
    low = np.array([0.1, 0.5, 0.55, 0.5])
    high = np.array([0.45, 2.0, 0.9, 2.0])
    grid = np.linspace(0.0, 1.0, 200)
    width, noise = 0.04, 0.5

    def __init__(self):
        self.prior = [("uniform", lo, hi) for lo, hi in zip(self.low, self.high, strict=True)]

    def sample_prior(self, n, rng):
        return self.low + (self.high - self.low) * rng.uniform(size=(n, 4))

    def signal(self, theta):
        t = self.grid
        peak = lambda mu: np.exp(-((t - mu[:, None]) ** 2) / (2 * self.width**2))  # noqa: E731
        return theta[:, 1:2] * peak(theta[:, 0]) + theta[:, 3:4] * peak(theta[:, 2])

    def simulate(self, n, rng, variant="signal"):
        theta = self.sample_prior(n, rng)
        return theta, self.signal(theta) + self.noise * rng.standard_normal((n, self.grid.size))

    def observations(self, k):
        rng = np.random.RandomState(0)
        return {"signal": self.simulate(k, rng)[1]}

    def log_likelihood(self, theta, x_obs, chunk=50_000):
        out = np.empty(len(theta))
        for start in range(0, len(theta), chunk):
            residual = x_obs - self.signal(theta[start : start + chunk])
            out[start : start + chunk] = -0.5 * (residual**2).sum(axis=1) / self.noise**2
        return out

    def reference(self, x_obs, n_samples, seed, n_pool=400_000, rounds=4):
        """Adaptive importance sampling: Gaussian proposals fitted to the previous round's
        weighted samples (covariance doubled), mixed with 10 % prior for safety."""
        rng = np.random.RandomState(seed)
        volume = np.prod(self.high - self.low)
        mean, cov = None, None
        for _ in range(rounds):
            if mean is None:
                theta = self.sample_prior(n_pool, rng)
            else:
                n_prior = rng.binomial(n_pool, 0.1)
                theta = np.vstack(
                    [
                        self.sample_prior(n_prior, rng),
                        rng.multivariate_normal(mean, cov, n_pool - n_prior),
                    ]
                )
            inside = np.all((theta > self.low) & (theta < self.high), axis=1)
            theta = theta[inside]
            log_prior = -np.log(volume)
            if mean is None:
                log_proposal = np.full(len(theta), log_prior)
            else:
                diff = theta - mean
                chol = np.linalg.cholesky(cov)
                solved = np.linalg.solve(chol, diff.T)
                log_gauss = (
                    -0.5 * (solved**2).sum(0) - np.log(np.diag(chol)).sum() - 2 * np.log(2 * np.pi)
                )
                log_proposal = np.logaddexp(np.log(0.1) + log_prior, np.log(0.9) + log_gauss)
            log_w = self.log_likelihood(theta, x_obs) + log_prior - log_proposal
            w = np.exp(log_w - logsumexp(log_w))
            ess = 1.0 / np.sum(w**2)
            mean = w @ theta
            cov = 2.0 * np.cov(theta.T, aweights=w) + 1e-10 * np.eye(4)
        rows = rng.choice(len(theta), size=n_samples, replace=True, p=w)
        return theta[rows], float(ess)


TASKS = {"distractors": Distractors, "peaks": Peaks}


# ------------------------------------------------------------------ main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument("--n-simulations", type=int, default=None, help="default 10000")
    parser.add_argument("--n-samples", type=int, default=None, help="default 10000")
    parser.add_argument("--n-observations", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--embeddings",
        nargs="+",
        default=None,
        help="run only the configurations with these embeddings ('None', 'mlp', 'linear', "
        "'cnn1d'); default: all",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1000 simulations, 1000 samples"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", default=None, help="write all results to this JSON file")
    args = parser.parse_args(argv)
    default = 1000 if args.quick else 10_000
    args.n_simulations = args.n_simulations or default
    args.n_samples = args.n_samples or default
    return args


def main(argv=None):
    args = parse_args(argv)
    threads = set_threads(args.threads)
    log(
        f"torch threads {threads}; {args.n_simulations:,} simulations, {args.n_samples:,} "
        f"samples, {args.n_observations} observation(s), seed {args.seed}"
    )
    records = []
    for task_name in args.tasks:
        task = TASKS[task_name]()
        x_obs = task.observations(args.n_observations)
        first = next(iter(x_obs))
        start = time.perf_counter()
        references = [
            task.reference(x_obs[first][i], args.n_samples, seed=i)
            for i in range(args.n_observations)
        ]
        ess = [r[1] for r in references]
        log(
            f"[{task_name}] references in {time.perf_counter() - start:.1f} s"
            + (f", importance-sampling ESS {np.round(ess).tolist()}" if ess[0] else "")
        )
        data = {}
        for variant, embedding in task.configurations:
            if args.embeddings is not None and str(embedding) not in args.embeddings:
                continue
            if variant not in data:
                # The same simulations for every embedding of a variant.
                rng = np.random.RandomState([args.seed, 1])
                data[variant] = task.simulate(args.n_simulations, rng, variant)
            theta, x = data[variant]
            est = FlowPosteriorEstimator(
                prior=task.prior, embedding=embedding, random_state=args.seed
            )
            label = f"{variant}, embedding={embedding}"
            log(f"[{task_name}] fitting {label} (x of shape {x.shape}) ...")
            start = time.perf_counter()
            est.fit(theta, x)
            fit_s = time.perf_counter() - start
            scores = []
            for i, (reference, _) in enumerate(references):
                samples = est.sample(x_obs[variant][i], args.n_samples, random_state=args.seed)
                scores.append(c2st(reference, samples))
            log(
                f"[{task_name}] {label}: fit {fit_s:.1f} s ({est.n_iter_} epochs), "
                f"C2ST {np.round(scores, 3).tolist()}"
            )
            records.append(
                {
                    "task": task_name,
                    "x": f"{variant} {tuple(x.shape[1:])}",
                    "embedding": str(embedding),
                    "c2st": scores,
                    "fit_s": fit_s,
                    "epochs": est.n_iter_,
                    "reference_ess": ess,
                }
            )
    lines = [
        "| task | x | embedding | median C2ST | C2ST per observation | fit s | epochs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['task']} | {r['x']} | {r['embedding']} | {statistics.median(r['c2st']):.3f} "
            f"| {', '.join(f'{v:.3f}' for v in r['c2st'])} | {r['fit_s']:.1f} | {r['epochs']} |"
        )
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as stream:
            json.dump(
                {"arguments": vars(args), "environment": environment(threads), "runs": records},
                stream,
                indent=2,
            )
        log(f"results written to {args.out}")


if __name__ == "__main__":
    main()
