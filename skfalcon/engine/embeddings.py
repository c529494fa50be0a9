r"""Embedding networks: observations of any shape to the summary :math:`s(x)`.

The conditional flow :math:`q(u \mid s(x))` sees an observation only through its summary
:math:`s(x) \in \mathbb{R}^c`, and :math:`s` is trained jointly with the flows by the same
maximum-likelihood objective, so it learns whatever in :math:`x` is informative about
:math:`u`.

The training loop and the sampler move observations around as flat rows ``(n, D)``.
:func:`build_embedding` therefore puts an unflattening step in front of the embedding,
which restores each observation's shape ``(n, *shape)``, or a dict of named tensors
``{name: (n, *shape_name)}`` for multi-input observations.

Presets normalise their input with a :class:`~skfalcon.engine.normalization.RunningNorm`
(statistics from training batches only) and then apply:

- :class:`LinearEmbedding`: a learned linear summary of the flattened observation, its
  weights starting at zero;
- :class:`MLPEmbedding`: a multilayer perceptron on the flattened observation;
- :class:`CNN1dEmbedding`: 1-D convolutions with max pooling, then a perceptron, for series
  ``(length,)`` or ``(channels, length)``;
- :class:`DeepSetEmbedding`: :math:`\rho\big(\tfrac{1}{N} \sum_i \phi(x_i)\big)` over ``N``
  i.i.d. trials ``(N,)`` or ``(N, d)``, invariant to the order of the trials.

:class:`MultiInputEmbedding` maps each named input through its own embedding and combines
the summaries, by concatenation or by a module of the user.
"""

import copy
import inspect
import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from skfalcon.engine.normalization import RunningNorm

__all__ = [
    "EMBEDDING_PRESETS",
    "CNN1dEmbedding",
    "DeepSetEmbedding",
    "LinearEmbedding",
    "MLPEmbedding",
    "MultiInputEmbedding",
    "SplitInputs",
    "build_embedding",
]

Shape = tuple[int, ...]


def _mlp(in_features: int, hidden_features: tuple[int, ...], out_features: int) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    widths = (in_features, *hidden_features, out_features)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _FlatInput(nn.Module):
    """The flattened observation, normalised by running statistics: the input of the
    linear and perceptron presets."""

    def __init__(self, shape: Shape, momentum, adaptive_momentum, use_log_update):
        super().__init__()
        self.in_features = math.prod(shape)
        self.flatten = nn.Flatten(1)
        self.norm = RunningNorm(self.in_features, momentum, adaptive_momentum, use_log_update)

    def normalized(self, x: Tensor) -> Tensor:
        return self.norm(self.flatten(x))


class LinearEmbedding(_FlatInput):
    r"""Running normalisation of the flattened observation, then a linear map from zero.

    The summary is :math:`s(x) = W z + b` with :math:`z` the normalised input and
    :math:`W = 0, b = 0` at the start. From zero, a feature's weights grow only as far as
    their gradient takes them, so features that carry no information about :math:`u` stay
    near zero. A random start instead gives each of them a weight of order
    :math:`1/\sqrt{D}` that training must first undo: with 100 pure-noise features next to
    10 informative ones (the 10-D Gaussian linear task, 10,000 simulations), the zero start
    lowered the Gaussian KL divergence to the exact posterior from 0.275 / 0.348 to
    0.147 / 0.251 (seeds 0 / 1; ``benchmarks/embedding_kl.py``). The right preset when a
    linear summary is sufficient (linear-Gaussian models) or as a learned compression of
    many features.

    Parameters
    ----------
    shape : tuple of int
        Shape of one observation; inputs are ``(n, *shape)``.
    out_features : int
        Size :math:`c` of the summary.
    momentum : float
        Momentum of the input normalisation.
    adaptive_momentum, use_log_update : bool
        Settings of the input normalisation (see :class:`RunningNorm`).
    """

    def __init__(
        self,
        shape: Shape,
        out_features: int = 32,
        momentum: float = 0.01,
        adaptive_momentum: bool = False,
        use_log_update: bool = False,
    ):
        super().__init__(shape, momentum, adaptive_momentum, use_log_update)
        self.linear = nn.Linear(self.in_features, out_features)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Summaries ``(n, out_features)`` of observations ``(n, *shape)``."""
        return self.linear(self.normalized(x))


class MLPEmbedding(_FlatInput):
    r"""Running normalisation of the flattened observation, then a perceptron with a linear shortcut.

    The summary is :math:`s(x) = \mathrm{MLP}(z) + W z` with :math:`z` the normalised
    input. Through the shortcut a linear summary (the sufficient statistic of
    linear-Gaussian models) passes without being approximated by ReLUs; without it, the
    10-D Gaussian linear task with 100 noise features came out far worse than with no
    embedding at all (``benchmarks/bench_embeddings.py``).

    Parameters
    ----------
    shape : tuple of int
        Shape of one observation; inputs are ``(n, *shape)``.
    out_features : int
        Size :math:`c` of the summary.
    hidden_features : tuple of int
        Hidden layer widths.
    momentum : float
        Momentum of the input normalisation.
    adaptive_momentum, use_log_update : bool
        Settings of the input normalisation (see :class:`RunningNorm`).
    """

    def __init__(
        self,
        shape: Shape,
        out_features: int = 32,
        hidden_features: tuple[int, ...] = (128, 128),
        momentum: float = 0.01,
        adaptive_momentum: bool = False,
        use_log_update: bool = False,
    ):
        super().__init__(shape, momentum, adaptive_momentum, use_log_update)
        self.net = _mlp(self.in_features, tuple(hidden_features), out_features)
        self.shortcut = nn.Linear(self.in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """Summaries ``(n, out_features)`` of observations ``(n, *shape)``."""
        z = self.normalized(x)
        return self.net(z) + self.shortcut(z)


class CNN1dEmbedding(nn.Module):
    r"""1-D convolutional network for series ``(length,)`` or ``(channels, length)``.

    Each input channel is normalised by a running mean and scale shared over the series
    positions. Each block is a same-length convolution, a ReLU and a max pooling of width 2;
    the feature map is then flattened (so the position of a feature still counts) and
    mapped to the summary by a perceptron.

    Parameters
    ----------
    shape : tuple of int
        ``(length,)`` or ``(channels, length)``.
    out_features : int
        Size :math:`c` of the summary.
    channels : tuple of int
        Output channels of the convolution blocks.
    kernel_size : int
        Width of every convolution kernel.
    hidden_features : tuple of int
        Hidden widths of the perceptron head.
    momentum, adaptive_momentum, use_log_update
        Settings of the input normalisation.
    """

    def __init__(
        self,
        shape: Shape,
        out_features: int = 32,
        channels: tuple[int, ...] = (16, 32),
        kernel_size: int = 5,
        hidden_features: tuple[int, ...] = (128, 128),
        momentum: float = 0.01,
        adaptive_momentum: bool = False,
        use_log_update: bool = False,
    ):
        super().__init__()
        if len(shape) not in (1, 2):
            raise ValueError(
                f"CNN1dEmbedding takes observations of shape (length,) or (channels, length), "
                f"got shape {tuple(shape)}."
            )
        in_channels, length = (1, shape[0]) if len(shape) == 1 else shape
        self.shape = tuple(shape)
        self.norm = RunningNorm(in_channels, momentum, adaptive_momentum, use_log_update)
        blocks: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            blocks += [nn.Conv1d(previous, width, kernel_size, padding="same"), nn.ReLU()]
            if length >= 2:
                blocks.append(nn.MaxPool1d(2))
                length //= 2
            previous = width
        self.conv = nn.Sequential(*blocks, nn.Flatten(1))
        self.head = _mlp(previous * length, tuple(hidden_features), out_features)

    def forward(self, x: Tensor) -> Tensor:
        """Summaries ``(n, out_features)`` of series ``(n, length)`` or ``(n, channels, length)``."""
        if len(self.shape) == 1:
            x = x.unsqueeze(-2)
        # The normalisation acts on the last axis: channels go there and back.
        x = self.norm(x.transpose(-1, -2)).transpose(-1, -2)
        return self.head(self.conv(x))


class DeepSetEmbedding(nn.Module):
    r"""Permutation-invariant summary :math:`\rho\big(\frac{1}{N}\sum_i \phi(x_i)\big)`.

    For ``N`` i.i.d. trials of shape ``(N,)`` (scalars) or ``(N, d)``. The trial features
    are normalised by running statistics shared over trials; :math:`\phi` is a perceptron
    with ``hidden_features`` (its last width is the pooled size) and :math:`\rho` a
    perceptron with one hidden layer of that size. The mean keeps the summary on the same
    scale whatever ``N``.

    Parameters
    ----------
    shape : tuple of int
        ``(N,)`` or ``(N, d)``.
    out_features : int
        Size :math:`c` of the summary.
    hidden_features : tuple of int
        Widths of :math:`\phi`.
    momentum, adaptive_momentum, use_log_update
        Settings of the input normalisation.
    """

    def __init__(
        self,
        shape: Shape,
        out_features: int = 32,
        hidden_features: tuple[int, ...] = (128, 128),
        momentum: float = 0.01,
        adaptive_momentum: bool = False,
        use_log_update: bool = False,
    ):
        super().__init__()
        if len(shape) not in (1, 2):
            raise ValueError(
                f"DeepSetEmbedding takes sets of shape (n_trials,) or (n_trials, d), got shape "
                f"{tuple(shape)}."
            )
        self.shape = tuple(shape)
        d = 1 if len(shape) == 1 else shape[1]
        hidden_features = tuple(hidden_features)
        self.norm = RunningNorm(d, momentum, adaptive_momentum, use_log_update)
        self.phi = nn.Sequential(_mlp(d, hidden_features[:-1], hidden_features[-1]), nn.ReLU())
        self.rho = _mlp(hidden_features[-1], (hidden_features[-1],), out_features)

    def forward(self, x: Tensor) -> Tensor:
        """Summaries ``(n, out_features)`` of sets ``(n, N)`` or ``(n, N, d)``."""
        if len(self.shape) == 1:
            x = x.unsqueeze(-1)
        return self.rho(self.phi(self.norm(x)).mean(dim=-2))


EMBEDDING_PRESETS: dict[str, type[nn.Module]] = {
    "linear": LinearEmbedding,
    "mlp": MLPEmbedding,
    "cnn1d": CNN1dEmbedding,
    "deepset": DeepSetEmbedding,
}


class SplitInputs(nn.Module):
    """Flat rows ``(n, D)`` to a dict ``{name: (n, *shape)}``, in the order of ``shapes``.

    Parameters
    ----------
    shapes : dict of str to tuple of int
        Name and shape of each input; ``D`` is the sum of their sizes.
    """

    def __init__(self, shapes: Mapping[str, Shape]):
        super().__init__()
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self.sizes = [math.prod(shape) for shape in self.shapes.values()]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        parts = torch.split(x, self.sizes, dim=-1)
        return {
            name: part.reshape(*x.shape[:-1], *shape)
            for (name, shape), part in zip(self.shapes.items(), parts, strict=True)
        }


class MultiInputEmbedding(nn.Module):
    r"""Embed each named input with its own module and combine the summaries.

    Parameters
    ----------
    embeddings : dict of str to nn.Module
        One module per input name, mapping ``(n, *shape_name)`` to ``(n, c_name)``.
        Inputs without a module are not used.
    combiner : nn.Module, optional
        Maps the dict ``{name: (n, c_name)}`` of summaries to ``(n, c)``. ``None``
        concatenates them in the order of ``embeddings``.
    """

    def __init__(self, embeddings: Mapping[str, nn.Module], combiner: nn.Module | None = None):
        super().__init__()
        self.embeddings = nn.ModuleDict(dict(embeddings))
        self.combiner = combiner

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        """The combined summary ``(n, c)`` of a dict of inputs."""
        summaries = {name: module(x[name]) for name, module in self.embeddings.items()}
        if self.combiner is not None:
            return self.combiner(summaries)
        return torch.cat(list(summaries.values()), dim=-1)


def _preset(name: str, shape: Shape, options: Mapping) -> nn.Module:
    """The preset ``name`` for inputs of ``shape``, given the options it takes."""
    preset = EMBEDDING_PRESETS[name]
    accepted = inspect.signature(preset).parameters
    return preset(shape, **{k: v for k, v in options.items() if k in accepted})


def _resolve(embedding, shape, options: Mapping) -> nn.Module:
    """A fresh module for one input (or for a whole dict observation)."""
    if embedding is None:
        size = math.prod(shape)
        return nn.Sequential(
            nn.Flatten(1),
            RunningNorm(
                size,
                options.get("momentum", 0.01),
                options.get("adaptive_momentum", False),
                options.get("use_log_update", False),
            ),
        )
    if isinstance(embedding, str):
        if embedding not in EMBEDDING_PRESETS:
            raise ValueError(
                f"Unknown embedding preset {embedding!r}; expected one of "
                f"{sorted(EMBEDDING_PRESETS)}, None, an nn.Module or a callable."
            )
        if isinstance(shape, Mapping):
            return MultiInputEmbedding(
                {k: _preset(embedding, s, options) for k, s in shape.items()}
            )
        return _preset(embedding, shape, options)
    if isinstance(embedding, nn.Module):
        return copy.deepcopy(embedding)
    if isinstance(embedding, Mapping):
        if not isinstance(shape, Mapping):
            raise ValueError(
                f"A dict embedding (keys {sorted(embedding)}) needs dict observations, but the "
                f"observations are arrays of shape {tuple(shape)}."
            )
        unknown = sorted(set(embedding) - set(shape))
        if unknown:
            raise ValueError(
                f"The embedding has entries {unknown} that are not observation names; the "
                f"observations are {sorted(shape)}."
            )
        return MultiInputEmbedding(
            {k: _resolve(embedding.get(k), s, options) for k, s in shape.items()}
        )
    if callable(embedding):
        module = embedding(shape)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"The embedding factory {embedding!r} returned {type(module).__name__}, not a "
                "torch.nn.Module; it is called with the observation shape."
            )
        return module
    raise TypeError(
        f"embedding={embedding!r} is not supported; expected None, a preset name "
        f"{sorted(EMBEDDING_PRESETS)}, an nn.Module, a callable or a dict of these."
    )


def build_embedding(
    embedding: None | str | nn.Module | Callable | Mapping,
    shape: Shape | Mapping[str, Shape],
    **options,
) -> tuple[nn.Module, int]:
    r"""The embedding for flat observation rows ``(n, D)``, and its summary size :math:`c`.

    Parameters
    ----------
    embedding : None, str, nn.Module, callable or dict
        ``None`` (running normalisation of the flattened observation), a preset name in
        :data:`EMBEDDING_PRESETS`, a module (deep-copied; it gets ``(n, *shape)`` or a dict
        of such tensors), a callable ``factory(shape) -> nn.Module``, or, for dict
        observations, a dict of these per input name, whose summaries are concatenated
        (an input left out is normalised and passed on as it is).
    shape : tuple of int or dict of str to tuple of int
        Shape of one observation, or of each named input.
    **options
        Sizes of the presets: ``out_features``, ``hidden_features``, ``channels``,
        ``kernel_size``, and ``momentum``, ``adaptive_momentum``, ``use_log_update`` of
        their input normalisations.

    Returns
    -------
    embedding : nn.Module
        Maps ``(n, D)`` to ``(n, c)``, in training mode.
    context : int
        The summary size :math:`c`, measured with one forward pass on zeros.
    """
    if isinstance(shape, Mapping):
        unflatten: nn.Module = SplitInputs(shape)
        size = sum(unflatten.sizes)
    else:
        shape = tuple(shape)
        unflatten = nn.Unflatten(-1, shape)
        size = math.prod(shape)
    module = nn.Sequential(unflatten, _resolve(embedding, shape, options))
    module.eval()
    try:
        with torch.no_grad():
            probe = module(torch.zeros(2, size))
    except Exception as exc:
        raise ValueError(
            f"The embedding failed on a batch of 2 observations of shape {_describe(shape)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        module.train()
    if not isinstance(probe, Tensor) or probe.ndim != 2 or probe.shape[0] != 2:
        got = tuple(probe.shape) if isinstance(probe, Tensor) else type(probe).__name__
        raise ValueError(
            f"The embedding must map a batch of n observations to summaries of shape "
            f"(n, n_summaries); for n=2 it returned {got}."
        )
    return module, int(probe.shape[1])


def _describe(shape) -> str:
    if isinstance(shape, Mapping):
        return "{" + ", ".join(f"{k!r}: {tuple(s)}" for k, s in shape.items()) + "}"
    return str(tuple(shape))
