"""The sequential loop: rounds of simulations focused on one observation.

:class:`SequentialInference` runs the loop; :mod:`skfalcon.sequential.strategies` holds
what each round does.
"""

from skfalcon.sequential._loop import SequentialInference, SequentialParams
from skfalcon.sequential.strategies import (
    STRATEGIES,
    AmortizedStrategy,
    Round,
    RoundBasedStrategy,
    StandardStrategy,
    Strategy,
    TruncatedStrategy,
)

__all__ = [
    "STRATEGIES",
    "AmortizedStrategy",
    "Round",
    "RoundBasedStrategy",
    "SequentialInference",
    "SequentialParams",
    "StandardStrategy",
    "Strategy",
    "TruncatedStrategy",
]
