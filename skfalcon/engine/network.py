r"""The network spec: everything needed to build the untrained dual flows again.

A :class:`NetworkSpec` is recorded at the first fit and never changes afterwards; it
builds the :class:`~skfalcon.engine.posterior.DualFlowPosterior` (or, with
``ensemble_size > 1``, an :class:`~skfalcon.engine.ensemble.EnsemblePosterior` of such
members) for training and, with the saved weights, for loading. It holds plain values and untrained CPU templates of
user embedding modules only, so it pickles without torch storages of a trained model.
:func:`network_state` and :func:`network_from_state` are the two halves of that round
trip; the weights travel as CPU tensors, which the caller may convert as it likes.
"""

import copy
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from skfalcon.engine.embeddings import build_embedding
from skfalcon.engine.ensemble import EnsemblePosterior, reinitialize
from skfalcon.engine.marginal import MarginalPolicy
from skfalcon.engine.normalization import RunningNorm
from skfalcon.engine.posterior import DualFlowPosterior

__all__ = ["NetworkSpec", "network_from_state", "network_state"]


@dataclass(frozen=True)
class NetworkSpec:
    """Constructor arguments of the dual flows and their embedding.

    Attributes
    ----------
    features : int
        Dimension of :math:`u`.
    observation_features : int
        Length of a flat observation row.
    embedding : dict or None
        Keyword arguments of :func:`~skfalcon.engine.embeddings.build_embedding`
        (``embedding``, ``shape`` and preset sizes); ``None``: a running normalisation of
        the flat row.
    marginal : bool
        Build the marginal flow (a prior is known).
    net_type, num_transforms, hidden_features, num_bins, theta_norm, norm_momentum,
    adaptive_momentum, use_log_update, cube_bound
        As in :class:`~skfalcon.engine.posterior.DualFlowPosterior`.
    ensemble_size : int
        Number of independently initialised members; 1 builds a single posterior.
    vector_field : str or None
        The field of a ``"flow_matching"`` flow
        (:data:`~skfalcon.engine.flow_matching.FIELDS`). ``None``, what specs written
        before this field existed read as, is ``"mlp"``, the field they were built with.
    """

    features: int
    observation_features: int
    embedding: dict | None = None
    marginal: bool = True
    net_type: str = "nsf"
    num_transforms: int = 3
    hidden_features: tuple[int, ...] = (64, 64)
    num_bins: int = 16
    theta_norm: bool = True
    norm_momentum: float = 0.01
    adaptive_momentum: bool = False
    use_log_update: bool = False
    cube_bound: float | None = None
    ensemble_size: int = 1
    vector_field: str | None = None

    def build(self) -> DualFlowPosterior | EnsemblePosterior:
        """The untrained network, in training mode, on the CPU (uses torch's global RNG).

        The network keeps this spec as its ``spec`` attribute, for :func:`network_state`.
        Ensemble members are built one after the other. A user's embedding module is
        deep-copied by every member; the copies of members after the first are
        re-initialised (``reset_parameters`` of each layer), so that no two members start
        alike.
        """
        if self.ensemble_size == 1:
            network = self._build_member()
        else:
            members = [self._member_spec(k)._build_member() for k in range(self.ensemble_size)]
            network = EnsemblePosterior(members)
        network.spec = self
        return network

    def _member_spec(self, k: int) -> "NetworkSpec":
        """The spec of ensemble member ``k``: module templates re-initialised after the first."""
        embedding = self.embedding
        if k > 0 and embedding is not None:
            embedding = {**embedding, "embedding": _fresh_templates(embedding["embedding"])}
        return replace(self, ensemble_size=1, embedding=embedding)

    def _build_member(self) -> DualFlowPosterior:
        if self.embedding is None:
            embedding = RunningNorm(
                self.observation_features,
                self.norm_momentum,
                self.adaptive_momentum,
                self.use_log_update,
            )
            context = self.observation_features
        else:
            embedding, context = build_embedding(**self.embedding)
        options = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_FLOW_OPTIONS
        }
        options["vector_field"] = self.vector_field or "mlp"
        network = DualFlowPosterior(self.features, embedding, context, **options)
        network.spec = self
        return network

    @classmethod
    def from_dict(cls, spec: dict) -> "NetworkSpec":
        """A spec from the constructor dict that estimators of skfalcon 0.1 recorded."""
        return cls(**{k: v for k, v in spec.items() if k in cls.__dataclass_fields__})


_NOT_FLOW_OPTIONS = ("features", "observation_features", "embedding", "ensemble_size")


def _fresh_templates(template):
    """Re-initialised copies of the module templates in an embedding spec's ``embedding``."""
    if isinstance(template, nn.Module):
        template = copy.deepcopy(template)
        reinitialize(template)
        return template
    if isinstance(template, Mapping):
        return {name: _fresh_templates(value) for name, value in template.items()}
    return template


def network_state(network: DualFlowPosterior | EnsemblePosterior) -> dict:
    """What rebuilds ``network`` (built by a :class:`NetworkSpec`): the spec, the marginal
    policy and CPU copies of the weights."""
    spec = network.spec
    weights = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    return {"spec": spec, "marginal_policy": network.marginal_policy, "weights": weights}


def network_from_state(state: dict, device: torch.device) -> DualFlowPosterior | EnsemblePosterior:
    """The network of :func:`network_state`, on ``device``, in evaluation mode.

    Raises
    ------
    ValueError
        If the weights do not fit the spec (a file from another model, or tampered).
    """
    spec: NetworkSpec = state["spec"]
    network = spec.build()
    try:
        network.load_state_dict(
            {k: torch.as_tensor(v) for k, v in state["weights"].items()}, strict=True
        )
    except RuntimeError as exc:
        raise ValueError(
            f"The saved weights do not fit the saved network spec ({exc}); the file does not "
            "hold a consistent model."
        ) from None
    network.set_marginal_policy(state.get("marginal_policy") or MarginalPolicy())
    return network.to(device).eval()
