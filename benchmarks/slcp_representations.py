"""Where does the estimator miss SLCP's posterior, and does a representation of x help?

SLCP's ``x`` holds four draws of a 2-D Gaussian whose mean, scales and correlation are
functions of theta. On ``bench_accuracy.py``'s prior simulations of one seed (10,000),
the estimator at its defaults is fitted once per representation of ``x``:

- ``default``: the flat 8 numbers;
- ``deepset``: the four points as a set, ``x`` of shape (4, 2) with ``embedding="deepset"``;
- ``asinh``: ``arcsinh(x)``, which compresses the heavy tails of wide draws;
- ``poly``: standardized ``x`` with its pairwise products (``x_preprocessor``), the terms
  of a sample covariance.

Each reports the MLP C2ST of its draws on the three benchmark observations. With
``--quantiles`` the ``default`` fit also prints, per observation and parameter, the 1, 25,
50, 75 and 99 % quantiles of its draws and of the reference's.

    OMP_NUM_THREADS=1 python benchmarks/slcp_representations.py --quantiles
"""

import argparse
import warnings

import numpy as np
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, PolynomialFeatures, StandardScaler

from skfalcon import FlowPosteriorEstimator
from skfalcon.datasets import SLCP
from skfalcon.metrics import c2st

_N_SAMPLES = 10_000
_QUANTILES = (0.01, 0.25, 0.5, 0.75, 0.99)


def _as_sets(x):
    return np.reshape(x, (*np.shape(x)[:-1], 4, 2))


# name -> (estimator settings, representation of x given to fit and sample)
VARIANTS = {
    "default": ({}, None),
    "deepset": ({"embedding": "deepset"}, _as_sets),
    "asinh": ({"x_preprocessor": FunctionTransformer(np.arcsinh)}, None),
    "poly": (
        {
            "x_preprocessor": make_pipeline(
                StandardScaler(), PolynomialFeatures(2, include_bias=False)
            )
        },
        None,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-simulations", type=int, default=10_000)
    parser.add_argument("--quantiles", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = SLCP()
    _, x_obs = task.observations(3)
    references = [
        task.reference_posterior(x_o, _N_SAMPLES, random_state=i) for i, x_o in enumerate(x_obs)
    ]
    rng = np.random.RandomState([args.seed, 1])  # bench_accuracy.py's stream
    theta = task.sample_prior(args.n_simulations, random_state=rng)
    x = task.simulate(theta, random_state=rng)
    for name in args.variants:
        settings, represent = VARIANTS[name]
        represent = represent or (lambda v: v)
        estimator = FlowPosteriorEstimator(prior=task.prior, random_state=args.seed, **settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overfitting: the best epoch's weights are kept
            estimator.fit(theta, represent(x))
        draws = [
            np.asarray(estimator.sample(represent(x_o), _N_SAMPLES, random_state=args.seed))
            for x_o in x_obs
        ]
        scores = [c2st(r, d) for r, d in zip(references, draws, strict=True)]
        print(
            f"{name}: median C2ST {np.median(scores):.3f} "
            f"(per observation {', '.join(f'{s:.3f}' for s in scores)})",
            flush=True,
        )
        if args.quantiles and name == "default":
            for i, (r, d) in enumerate(zip(references, draws, strict=True)):
                for p in range(task.n_parameters):
                    print(
                        f"  observation {i}, theta_{p + 1}: reference "
                        f"{np.round(np.quantile(r[:, p], _QUANTILES), 2)}, estimate "
                        f"{np.round(np.quantile(d[:, p], _QUANTILES), 2)}"
                    )


if __name__ == "__main__":
    main()
