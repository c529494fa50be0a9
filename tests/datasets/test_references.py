"""Tests of the on-disk cache of reference samples."""

import numpy as np
import pytest

from skfalcon.datasets._references import cache_directory, cached_reference


class _Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, rng):
        self.calls += 1
        return rng.standard_normal((5, 2))


def test_cache_is_keyed_and_atomic(monkeypatch, tmp_path):
    monkeypatch.setenv("SKFALCON_CACHE", str(tmp_path))
    assert cache_directory() == tmp_path
    compute, x = _Counter(), np.array([0.1, 0.2])
    first = cached_reference("task", x, 5, 0, compute)
    np.testing.assert_array_equal(first, cached_reference("task", x, 5, 0, compute))
    assert compute.calls == 1
    cached_reference("task", x, 5, 1, compute)  # another seed
    cached_reference("task", x + 1e-9, 5, 0, compute)  # another observation
    cached_reference("other", x, 5, 0, compute)  # another task
    assert compute.calls == 4
    assert len(list(tmp_path.glob("*.npy"))) == 4 and not list(tmp_path.glob("*.tmp"))
    # Seeds that are not integers are never cached, and cache=False skips it.
    cached_reference("task", x, 5, None, compute)
    cached_reference("task", x, 5, np.random.RandomState(0), compute)
    cached_reference("task", x, 5, 0, compute, cache=False)
    assert compute.calls == 7 and len(list(tmp_path.glob("*.npy"))) == 4


def test_default_directory(monkeypatch):
    monkeypatch.delenv("SKFALCON_CACHE", raising=False)
    assert cache_directory().parts[-3:] == (".cache", "skfalcon", "references")


def test_unwritable_cache_warns_and_returns(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SKFALCON_CACHE", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="could not cache reference samples"):
        samples = cached_reference("task", np.zeros(2), 5, 0, _Counter())
    assert samples.shape == (5, 2)
