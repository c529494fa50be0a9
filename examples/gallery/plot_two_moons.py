"""
Two moons in ten lines
======================

Fit a flow posterior to simulations of the two-moons task, sample the posterior of one
observation and compare it with the exact posterior, which this task knows.
"""

import torch

from skfalcon import FlowPosteriorEstimator
from skfalcon.datasets import TwoMoons
from skfalcon.plotting import plot_corner

torch.set_num_threads(1)  # small networks train fastest on one thread

task = TwoMoons()
theta = task.sample_prior(5_000, random_state=0)
x = task.simulate(theta, random_state=1)
est = FlowPosteriorEstimator(prior=task.prior, max_epochs=60, random_state=0).fit(theta, x)

theta_true, x_obs = task.observations(1, random_state=0)
samples = est.sample(x_obs[0], 5_000, random_state=0)
reference = task.reference_posterior(x_obs[0], 5_000, random_state=0)
fig = plot_corner({"skfalcon": samples, "exact": reference}, truth=theta_true[0])

# %%
# The posterior has two crescents: the observation cannot tell which one the true
# parameters came from. The estimate finds both.
