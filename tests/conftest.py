import numpy as np
import pytest
import torch

torch.set_num_threads(2)

# A tiny, fast configuration for unit tests; accuracy lives in benchmarks/.
TINY = dict(
    num_transforms=1,
    hidden_features=(16,),
    num_bins=4,
    max_epochs=3,
    batch_size=64,
    num_proposals=4,
    device="cpu",
)


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


def assert_allclose(a, b, **kw):
    np.testing.assert_allclose(a, b, **kw)
