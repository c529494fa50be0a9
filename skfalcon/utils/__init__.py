"""Helpers of the façade: random state and device handling."""

from skfalcon.utils.device import resolve_device
from skfalcon.utils.random import draw_seed, torch_seed_scope

__all__ = ["draw_seed", "resolve_device", "torch_seed_scope"]
