import pytest
import torch

from tests._tiny import TINY

# Unit tests use tiny networks, for which one thread is fastest and never oversubscribes.
torch.set_num_threads(1)


@pytest.fixture
def tiny():
    return dict(TINY)


@pytest.fixture(scope="session")
def moons_data():
    from skfalcon.datasets import TwoMoons

    task = TwoMoons()
    theta = task.sample_prior(600, random_state=0)
    return task, theta, task.simulate(theta, random_state=1)


@pytest.fixture(scope="session")
def fitted_moons(moons_data):
    from skfalcon import FlowPosteriorEstimator

    task, theta, x = moons_data
    return FlowPosteriorEstimator(prior=task.prior, random_state=0, **TINY).fit(theta, x)


@pytest.fixture(scope="session")
def fitted_moons_flow(moons_data):
    """Like ``fitted_moons`` but with the learned marginal flow, so sampling uses importance
    sampling rather than exact draws from the conditional flow."""
    from skfalcon import FlowPosteriorEstimator

    task, theta, x = moons_data
    return FlowPosteriorEstimator(prior=task.prior, marginal="flow", random_state=0, **TINY).fit(
        theta, x
    )
