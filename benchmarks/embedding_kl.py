"""Embeddings on the distractors task, scored by a cheap Gaussian KL instead of C2ST.

C2ST on 10-D posteriors takes minutes per observation here; the posterior of the Gaussian
linear task is Gaussian, so the KL divergence between Gaussians fitted to 20,000 samples and
to 20,000 exact posterior draws ranks variants in seconds. Each variant is fitted on
the same 10,000 simulations per seed as in ``bench_embeddings.py`` and scored on its three
observations (the mean is printed).

Variants: ``none``, ``mlp`` and ``linear`` (the presets), and two diagnostics:
``linear-random`` (the linear preset with PyTorch's default random start) and
``mlp-zero`` (the mlp preset with its first layer and shortcut starting at zero).

    OMP_NUM_THREADS=1 python benchmarks/embedding_kl.py --variants linear linear-random mlp \
        --seeds 0 1
"""

import argparse
import json
import warnings

import numpy as np
import torch
from bench_embeddings import Distractors
from exact_marginal import gaussian_kl
from torch import nn

from skfalcon import FlowPosteriorEstimator
from skfalcon.engine import LinearEmbedding, MLPEmbedding


class RandomStartLinear(LinearEmbedding):
    """The linear preset with ``nn.Linear``'s default (random) initialisation."""

    def __init__(self, shape):
        super().__init__(shape)
        self.linear.reset_parameters()


class ZeroStartMLP(MLPEmbedding):
    """The mlp preset with the weights that read the input starting at zero."""

    def __init__(self, shape):
        super().__init__(shape)
        first = next(m for m in self.net if isinstance(m, nn.Linear))
        for weight in (first.weight, self.shortcut.weight, self.shortcut.bias):
            nn.init.zeros_(weight)


VARIANTS = {
    "none": ("distracted", None),
    "clean": ("clean", None),
    "mlp": ("distracted", "mlp"),
    "linear": ("distracted", "linear"),
    "linear-random": ("distracted", RandomStartLinear),
    "mlp-zero": ("distracted", ZeroStartMLP),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["linear"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--estimator-params", type=json.loads, default={})
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    task = Distractors()
    x_obs = task.observations(3)
    references = [task.reference(x, 20_000, 0)[0] for x in x_obs["clean"]]
    print("| variant | seed | KL per observation | mean KL | epochs (best) |")
    print("|---|---|---|---|---|")
    for name in args.variants:
        variant, embedding = VARIANTS[name]
        for seed in args.seeds:
            theta, x = task.simulate(10_000, np.random.RandomState([seed, 7]), variant)
            est = FlowPosteriorEstimator(
                prior=task.prior, embedding=embedding, random_state=seed, **args.estimator_params
            ).fit(theta, x)
            kls = [
                gaussian_kl(est.sample(x_obs[variant][i], 20_000, random_state=seed), reference)
                for i, reference in enumerate(references)
            ]
            print(
                f"| {name} | {seed} | {', '.join(f'{k:.3f}' for k in kls)} | "
                f"{np.mean(kls):.3f} | {est.n_iter_} ({est.best_epoch_}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
