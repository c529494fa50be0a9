"""Pickled state of a fitted estimator: constructor specs and numpy arrays, no torch storages.

``__getstate__`` swaps the live network for its :func:`~skfalcon.engine.network_state`
with numpy weights (so a model fitted on a GPU loads on a CPU-only machine) and drops the
sample store (training data, possibly large); ``__setstate__`` rebuilds the network on an
available device. Files of skfalcon 0.1 are migrated: their removed hyperparameters are
dropped or mapped, and their fitted attributes converted.
"""

import warnings

import numpy as np
import torch

from skfalcon._version import __version__
from skfalcon.engine import (
    LogNormalizerCache,
    MarginalPolicy,
    NetworkSpec,
    network_from_state,
    network_state,
)
from skfalcon.priors import Standardizer

__all__ = ["restore_state", "saved_state"]

# Hyperparameters of skfalcon 0.1 that no longer exist; what each became is in the docs'
# Falcon mapping page.
_REMOVED_PARAMS = (
    "hypercube_bound",
    "out_of_bounds_penalty",
    "betas",
    "embedding_channels",
    "embedding_kernel_size",
    "adaptive_momentum",
    "use_log_update",
    "nan_replacement",
    "cache_on_device",
    "reset_network_after_pause",
    "discard_samples",
    "log_ratio_threshold",
)


def saved_state(state: dict) -> dict:
    """The picklable form of an estimator's ``__dict__`` (a copy)."""
    state = dict(state)
    state["_skfalcon_version"] = __version__
    state.pop("_store", None)
    network = state.pop("network_", None)
    if network is not None:
        saved = network_state(network)
        saved["weights"] = {k: v.numpy() for k, v in saved["weights"].items()}
        state["_network_state"] = saved
        state["device_"] = str(state["device_"])
    return state


def restore_state(state: dict) -> dict:
    """The ``__dict__`` of a loaded estimator, network rebuilt; warns on another version."""
    state = dict(state)
    saved_version = state.pop("_skfalcon_version", None)
    if saved_version != __version__:
        warnings.warn(
            f"This estimator was saved with skfalcon {saved_version} and is loaded with "
            f"skfalcon {__version__}; results may differ or loading may fail.",
            UserWarning,
            stacklevel=3,
        )
    if "_network_weights" in state:
        state = _migrate_0_1(state)
    # Files written before ensembles existed hold one posterior.
    state.setdefault("ensemble_size", 1)
    # Files written before x_preprocessor existed: none, fitted or not.
    state.setdefault("x_preprocessor", None)
    # Files written before the weight average: a refit trains as they did.
    state.setdefault("ema_epochs", 0.0)
    if "_network_state" in state:
        state.setdefault("x_preprocessor_", None)
        # Files written before the misspecification check: no reference, no check.
        state.setdefault("x_reference_", None)
    saved = state.pop("_network_state", None)
    if saved is None:
        return state
    device = torch.device(state["device_"])
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"This estimator was fitted on {device} but CUDA is not available here; it is "
            "loaded on the CPU.",
            UserWarning,
            stacklevel=3,
        )
        device = torch.device("cpu")
    saved = dict(
        saved, weights={k: torch.from_numpy(np.array(v)) for k, v in saved["weights"].items()}
    )
    state["network_"] = network_from_state(saved, device)
    state["device_"] = device
    return state


def _migrate_0_1(state: dict) -> dict:
    """Fitted state written by skfalcon 0.1, in today's form."""
    discard = state.pop("discard_samples", False)
    threshold = state.pop("log_ratio_threshold", -20.0)
    state.setdefault("discard_log_ratio", threshold if discard else None)
    for name in _REMOVED_PARAMS:
        state.pop(name, None)
    prior = state.pop("prior_", None)
    shift, scale = state.pop("theta_shift_", None), state.pop("theta_scale_", None)
    state["parameter_space_"] = prior if prior is not None else Standardizer(shift, scale)
    marginal = state.pop("marginal_", None)
    fraction = state.pop("prior_fraction_", None)
    policy = MarginalPolicy("none" if marginal is None else marginal, fraction)
    state.pop("n_parameters_", None)
    # Its networks saw x unstandardized.
    n_features = state["n_observation_features_"]
    state["x_shift_"], state["x_scale_"] = np.zeros(n_features), np.ones(n_features)
    # Its cached log Z values came from one fixed pool, without a standard error: they are
    # estimated again, to today's tolerance.
    state.pop("_log_z_cache", None)
    state["_log_z"] = LogNormalizerCache(
        seed=state.pop("_log_z_seed", 0), beta=state.get("proposal_mixture_beta", 0.5)
    )
    state["_network_state"] = {
        "spec": NetworkSpec.from_dict(state.pop("_network_spec")),
        "marginal_policy": policy,
        "weights": state.pop("_network_weights"),
    }
    return state
