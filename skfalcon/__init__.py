"""skfalcon: flow posterior estimation for simulation-based inference, as a scikit-learn estimator."""

from skfalcon._arviz import to_inference_data
from skfalcon._version import __version__
from skfalcon.engine import RunningNorm
from skfalcon.estimators import FlowPosteriorEstimator
from skfalcon.estimators._point_estimates import point_estimate
from skfalcon.misspecification import MisspecificationWarning, misspecification_test
from skfalcon.persistence import load, save
from skfalcon.priors import FactorizedPrior
from skfalcon.sequential import SequentialInference
from skfalcon.simulation import simulate_from_prior

__all__ = [
    "FactorizedPrior",
    "FlowPosteriorEstimator",
    "MisspecificationWarning",
    "RunningNorm",
    "SequentialInference",
    "__version__",
    "load",
    "misspecification_test",
    "point_estimate",
    "save",
    "simulate_from_prior",
    "to_inference_data",
]
