import pytest


@pytest.fixture
def fast_mcmc(monkeypatch, tmp_path):
    """Short chains and few walkers, so that MCMC references take seconds, and a cache of
    the test's own. Such chains are too short for the mixing check: it warns."""
    from skfalcon.datasets import _bernoulli_glm, _references, _slcp

    monkeypatch.setattr(_references, "_BURN_IN_STEPS", 200)
    monkeypatch.setattr(_slcp, "_N_WALKERS", 128)
    monkeypatch.setattr(_slcp, "_N_START_CANDIDATES", 20_000)
    monkeypatch.setattr(_bernoulli_glm, "_N_WALKERS", 128)
    monkeypatch.setenv("SKFALCON_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
