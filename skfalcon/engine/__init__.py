"""The torch engine: flows, marginal policy, sample store, training and inference.

Imports torch and zuko only; the scikit-learn façade lives in :mod:`skfalcon.estimators`.

========================  ==============================================================
module                    its one job
========================  ==============================================================
``flows``                 zuko flow families behind the probit map and a running norm
``flow_matching``         a continuous flow family trained by flow matching
``gaussian``              a Gaussian family with a mean affine in the observation
``splines``               zuko's spline flows with a faster normalisation of the bins
``coupling``              coupling spline flows and the one-evaluation inverses
``normalization``         the online running normalisation
``embeddings``            summary networks of observations of any shape
``posterior``             the dual flows ``q(u | s(x))`` and ``m(u)``
``ensemble``              equal-weight mixtures of independently trained dual flows
``marginal``              what serves as ``m``: exact prior, prior mixture or learned flow
``network``               the spec that builds the dual flows and round-trips through files
``store``                 the sample store: rounds, provenance, split, pruning
``training``              the training loop and its configuration
``importance``            candidate pools, weights, ESS and resampling
``inference``             chunked sampling, density ratios and the log Z(x) cache
``seeding``               seeded torch randomness that leaves the global state alone
========================  ==============================================================
"""

from skfalcon.engine.embeddings import (
    EMBEDDING_PRESETS,
    CNN1dEmbedding,
    DeepSetEmbedding,
    LinearEmbedding,
    MLPEmbedding,
    MultiInputEmbedding,
    SplitInputs,
    build_embedding,
)
from skfalcon.engine.ensemble import EnsemblePosterior, MixtureConditional
from skfalcon.engine.flows import (
    AUTO_FAMILIES,
    FLOW_FAMILIES,
    NormalizedFlow,
    build_flow,
    default_hidden_features,
    default_num_transforms,
)
from skfalcon.engine.importance import (
    ImportanceSample,
    draw_candidates,
    effective_sample_size,
    importance_sample,
    log_normalizer,
)
from skfalcon.engine.inference import (
    LogNormalizerCache,
    SamplerConfig,
    inference_rows,
    log_posterior,
    log_ratio,
    row_chunks,
    sample_posterior,
)
from skfalcon.engine.marginal import (
    MarginalPolicy,
    PriorMixture,
    UniformCube,
    choose_marginal,
)
from skfalcon.engine.network import NetworkSpec, network_from_state, network_state
from skfalcon.engine.normalization import RunningNorm
from skfalcon.engine.posterior import DualFlowPosterior
from skfalcon.engine.seeding import torch_seed_scope
from skfalcon.engine.store import SampleStore, log_ratio_to_proposal, validation_mask
from skfalcon.engine.training import (
    TrainingConfig,
    TrainingDivergedError,
    TrainingResult,
    train,
)

__all__ = [
    "EMBEDDING_PRESETS",
    "AUTO_FAMILIES",
    "FLOW_FAMILIES",
    "CNN1dEmbedding",
    "DeepSetEmbedding",
    "DualFlowPosterior",
    "EnsemblePosterior",
    "ImportanceSample",
    "LinearEmbedding",
    "LogNormalizerCache",
    "MLPEmbedding",
    "MarginalPolicy",
    "MixtureConditional",
    "MultiInputEmbedding",
    "NetworkSpec",
    "NormalizedFlow",
    "PriorMixture",
    "RunningNorm",
    "SampleStore",
    "SamplerConfig",
    "SplitInputs",
    "TrainingConfig",
    "TrainingDivergedError",
    "TrainingResult",
    "UniformCube",
    "build_embedding",
    "build_flow",
    "choose_marginal",
    "default_hidden_features",
    "default_num_transforms",
    "draw_candidates",
    "effective_sample_size",
    "importance_sample",
    "inference_rows",
    "log_normalizer",
    "log_posterior",
    "log_ratio",
    "log_ratio_to_proposal",
    "network_from_state",
    "network_state",
    "row_chunks",
    "sample_posterior",
    "torch_seed_scope",
    "train",
    "validation_mask",
]
