"""Seeded torch randomness that leaves torch's global random state untouched."""

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["torch_seed_scope"]


@contextlib.contextmanager
def torch_seed_scope(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch inside the block and restore the global random state after it.

    The CUDA generator of ``device`` is forked and seeded too when it is a GPU.
    """
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices, device_type="cuda"):
        torch.manual_seed(seed)
        yield
