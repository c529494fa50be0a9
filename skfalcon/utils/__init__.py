"""Helpers of the façade: random state, device handling and input validation."""

from skfalcon.utils.device import resolve_device
from skfalcon.utils.random import draw_seed, round_seed, torch_seed_scope

__all__ = ["draw_seed", "resolve_device", "round_seed", "torch_seed_scope"]
