"""scikit-learn estimators of skfalcon."""

from skfalcon.estimators._flow_posterior import FlowPosteriorEstimator
from skfalcon.estimators._params import FlowPosteriorParams

__all__ = ["FlowPosteriorEstimator", "FlowPosteriorParams"]
