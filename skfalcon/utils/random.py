"""Reproducible torch randomness that leaves torch's global random state untouched."""

import numpy as np
from sklearn.utils import check_random_state

from skfalcon.engine.seeding import torch_seed_scope

__all__ = ["draw_seed", "round_seed", "torch_seed_scope"]


def draw_seed(random_state) -> int:
    """A torch seed from anything :func:`sklearn.utils.check_random_state` accepts.

    An int gives the same seed every time; a ``RandomState`` advances; ``None`` draws
    from numpy's global generator.
    """
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def round_seed(random_state, round_index: int) -> int:
    """The seed of one training round (``fit`` is round 0, each ``partial_fit`` the next).

    Round 0 gets :func:`draw_seed` of ``random_state``; later rounds mix their index into
    it, so that rounds of an estimator with an int ``random_state`` neither repeat each
    other's randomness nor depend on anything but the seed and the round.
    """
    seed = draw_seed(random_state)
    return seed if round_index == 0 else draw_seed(np.random.RandomState([seed, round_index]))
