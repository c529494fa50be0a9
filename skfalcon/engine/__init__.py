"""The torch engine: flows, embeddings, running normalisation, training, importance sampling.

Imports torch and zuko only; the scikit-learn façade lives in :mod:`skfalcon.estimators`.
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
from skfalcon.engine.flows import FLOW_FAMILIES, NormalizedFlow, build_flow
from skfalcon.engine.importance import (
    ImportanceSample,
    draw_candidates,
    effective_sample_size,
    importance_sample,
    log_normalizer,
)
from skfalcon.engine.normalization import RunningNorm
from skfalcon.engine.posterior import DualFlowPosterior, PriorMixture, UniformCube
from skfalcon.engine.store import SampleStore, log_ratio_to_proposal
from skfalcon.engine.training import TrainingDivergedError, TrainingResult, train

__all__ = [
    "EMBEDDING_PRESETS",
    "FLOW_FAMILIES",
    "CNN1dEmbedding",
    "DeepSetEmbedding",
    "LinearEmbedding",
    "MLPEmbedding",
    "MultiInputEmbedding",
    "SplitInputs",
    "DualFlowPosterior",
    "ImportanceSample",
    "NormalizedFlow",
    "RunningNorm",
    "SampleStore",
    "TrainingDivergedError",
    "TrainingResult",
    "PriorMixture",
    "UniformCube",
    "build_embedding",
    "build_flow",
    "draw_candidates",
    "effective_sample_size",
    "importance_sample",
    "log_normalizer",
    "log_ratio_to_proposal",
    "train",
]
