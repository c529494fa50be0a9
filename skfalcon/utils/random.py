"""Reproducible torch randomness that leaves torch's global random state untouched."""

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from sklearn.utils import check_random_state

__all__ = ["draw_seed", "torch_seed_scope"]


def draw_seed(random_state) -> int:
    """A torch seed from anything :func:`sklearn.utils.check_random_state` accepts.

    An int gives the same seed every time; a ``RandomState`` advances; ``None`` draws
    from numpy's global generator.
    """
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


@contextlib.contextmanager
def torch_seed_scope(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch inside the block and restore the global random state after it.

    The CUDA generator of ``device`` is forked and seeded too when it is a GPU.
    """
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices, device_type="cuda"):
        torch.manual_seed(seed)
        yield
