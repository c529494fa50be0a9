"""skfalcon: flow posterior estimation for simulation-based inference, as a scikit-learn estimator."""

from skfalcon._version import __version__
from skfalcon.engine import RunningNorm
from skfalcon.estimators import FlowPosteriorEstimator
from skfalcon.persistence import load, save
from skfalcon.priors import FactorizedPrior
from skfalcon.sequential import SequentialInference

__all__ = [
    "FactorizedPrior",
    "FlowPosteriorEstimator",
    "RunningNorm",
    "SequentialInference",
    "__version__",
    "load",
    "save",
]
