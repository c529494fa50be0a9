"""Validation of FlowPosteriorEstimator's hyperparameters (one pydantic model)."""

import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from torch import nn

from skfalcon.engine import EMBEDDING_PRESETS, FLOW_FAMILIES, TrainingConfig

__all__ = [
    "FlowPosteriorParams",
    "PositiveInt",
    "RandomStateLike",
    "Verbosity",
    "to_python",
    "validate_params",
]

_Probability = Annotated[float, Field(ge=0.0, le=1.0)]
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
_Widths = Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(min_length=1)]
PositiveInt = Annotated[int, Field(ge=1)]
Verbosity = Annotated[int, Field(ge=0)] | bool


def _check_random_state(value: Any) -> Any:
    if value is None or isinstance(value, np.random.RandomState):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 0 <= value < 2**32:
            return int(value)
    raise ValueError("expected None, an int in [0, 2**32) or a numpy RandomState")


#: ``random_state`` as scikit-learn takes it, one rule for every estimator here.
RandomStateLike = Annotated[Any, AfterValidator(_check_random_state)]


def to_python(value: Any) -> Any:
    """numpy scalars -> Python scalars, arrays and lists -> tuples (so grids of numpy work)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return tuple(to_python(v) for v in value.tolist())
    if isinstance(value, list):
        return tuple(to_python(v) for v in value)
    return value


class FlowPosteriorParams(BaseModel):
    """The hyperparameters of :class:`~skfalcon.FlowPosteriorEstimator`, with their defaults.

    Strict types: an int is accepted where a float is expected, a bool is not accepted as a
    number; numpy scalars and lists/arrays of numbers are converted first. The estimator's
    signature mirrors these fields and defaults (a test asserts it).
    """

    model_config = ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True)

    prior: Any = None
    # Ranges (negative indices count from the end) are the prior's to check.
    marginalize: tuple[int, ...] | int | None = None
    net_type: Literal[(*FLOW_FAMILIES, "auto")] = "nsf"  # type: ignore[valid-type]
    num_transforms: Annotated[int, Field(ge=1)] | None = None
    hidden_features: _Widths | None = None
    num_bins: Annotated[int, Field(ge=2)] = 8
    ensemble_size: Annotated[int, Field(ge=1)] = 2
    embedding: Any = None
    embedding_features: Annotated[int, Field(ge=1)] = 32
    embedding_hidden_features: _Widths = (128, 128)
    x_preprocessor: Any = None
    theta_norm: bool = True
    norm_momentum: Annotated[float, Field(gt=0.0, le=1.0)] = 0.01
    lr: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    weight_decay: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    ema_epochs: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 3.0
    lr_decay_factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    lr_patience: Annotated[int, Field(ge=0)] = 10
    early_stop_patience: Annotated[int, Field(ge=0)] = 20
    validation_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    use_best_models: bool = True
    max_epochs: Annotated[int, Field(ge=1)] = 200
    batch_size: Annotated[int, Field(ge=1)] | None = None
    num_proposals: Annotated[int, Field(ge=1)] = 4
    proposal_mixture_beta: _Probability = 0.5
    gamma: _Probability = 0.5
    marginal: Literal["auto", "flow"] = "auto"
    store_capacity: Annotated[int, Field(ge=2)] | None = None
    discard_log_ratio: Annotated[float, Field(allow_inf_nan=False)] | None = None
    nan_policy: Literal["drop", "raise"] = "drop"
    device: str = "auto"
    max_cache_samples: Annotated[int, Field(ge=1)] | None = None
    warm_start: bool = False
    random_state: RandomStateLike = None
    verbose: Verbosity = 0

    @model_validator(mode="before")
    @classmethod
    def _numpy_to_python(cls, values: Any) -> Any:
        if isinstance(values, dict):
            return {
                k: v if k in ("prior", "random_state") else to_python(v) for k, v in values.items()
            }
        return values

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE_PATTERN.fullmatch(value):
            raise ValueError("expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value

    @field_validator("embedding")
    @classmethod
    def _check_embedding(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            if value and all(isinstance(k, str) and _is_embedding(v) for k, v in value.items()):
                return value
        elif _is_embedding(value):
            return value
        raise ValueError(
            f"expected None, one of {sorted(EMBEDDING_PRESETS)}, a torch.nn.Module, a callable "
            "factory(observation_shape) -> nn.Module, or a non-empty dict of these per "
            "observation name"
        )

    @field_validator("x_preprocessor")
    @classmethod
    def _check_x_preprocessor(cls, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, type):
            raise ValueError(
                f"expected a transformer instance, got the class itself; pass {value.__name__}()"
            )
        if callable(getattr(value, "fit", None)) and callable(getattr(value, "transform", None)):
            return value
        raise ValueError(
            "expected None or a scikit-learn transformer (an object with fit and transform "
            "methods), e.g. PCA(3), FunctionTransformer(np.log1p) or a Pipeline"
        )

    def training_config(self, max_epochs: int | None = None) -> TrainingConfig:
        """The engine's training settings; ``max_epochs`` overrides the hyperparameter."""
        values = {f.name: getattr(self, f.name) for f in fields(TrainingConfig)}
        if max_epochs is not None:
            values["max_epochs"] = max_epochs
        return TrainingConfig(**values)


def _is_embedding(value: Any) -> bool:
    """One input's embedding: None, a preset name, a module or a factory."""
    if isinstance(value, str):
        return value in EMBEDDING_PRESETS
    return value is None or isinstance(value, nn.Module) or callable(value)


def validate_params(
    params: dict[str, Any],
    owner: str,
    model: type[BaseModel] = FlowPosteriorParams,
    noun: str = "hyperparameter",
):
    """Validate ``params`` with the pydantic ``model``.

    A bad one raises a ``ValueError`` naming it, its value and what is allowed.
    """
    try:
        return model(**params)
    except ValidationError as exc:
        messages = []
        for error in exc.errors(include_url=False):
            name = str(error["loc"][0]) if error["loc"] else "?"
            value = params.get(name, error.get("input"))
            reason = error["msg"].removeprefix("Value error, ")
            if error["type"] == "missing" and len(error["loc"]) > 1:
                # A too-short tuple: pydantic reports the missing item as "field required".
                reason = f"expected {len(model.model_fields[name].default)} values"
            messages.append(f"{name}={value!r} ({reason[0].lower() + reason[1:]})")
        raise ValueError(
            f"Invalid {noun}{'s' if len(messages) > 1 else ''} of {owner}: "
            + "; ".join(messages)
            + "."
        ) from None
