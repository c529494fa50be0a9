r"""Training loop: AdamW, plateau learning-rate decay, early stopping, best weights.

Minimises :meth:`DualFlowPosterior.losses` summed over minibatches of the training rows
of a :class:`~skfalcon.engine.store.SampleStore`, drawn without replacement each epoch;
the marginal flow's loss is taken over the rows its :class:`MarginalPolicy` selects.
With ``ema_epochs`` :math:`> 0` an exponential moving average of the weights follows the
optimizer's (``_WeightAverage``), and it is the average that is validated, kept and
restored: it smooths the minibatch noise out of the weights, which a snapshot keeps. After
every epoch the mean validation loss drives ``ReduceLROnPlateau`` and early stopping; the
weights (and normalisation buffers) of the best validation epoch are kept and, with
``use_best_models``, restored at the end (without it, the last ones are).
Training stops after ``early_stop_patience`` epochs without improvement, or as soon as
:func:`diagnose_overfitting` finds the curve overfitting: a validation loss that has
risen well above its best while the training loss fell is no plateau that patience could
wait out, and the best epoch is then ten or more epochs behind. The
loop syncs with the host once per epoch, not per step. A step whose loss or gradient is
not finite contributes no gradient (zeroed on the device and counted); an epoch in which every
step was non-finite raises :class:`TrainingDivergedError`.

Without a ``batch_size`` the minibatch is :func:`automatic_batch_size`'s, and without an
``lr`` the learning rate is :func:`automatic_lr`'s for that batch.

At the end every record of the fit gets ``"overfitting"``, :func:`diagnose_overfitting`'s
finding on the whole curve.
"""

import copy
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from skfalcon.engine.flows import lr_scale
from skfalcon.engine.inference import inference_rows, row_chunks
from skfalcon.engine.posterior import DualFlowPosterior
from skfalcon.engine.store import SampleStore

__all__ = [
    "TrainingConfig",
    "TrainingDivergedError",
    "TrainingResult",
    "automatic_batch_size",
    "automatic_lr",
    "diagnose_overfitting",
    "train",
]

# AdamW's moment coefficients.
_BETAS = (0.9, 0.999)
# Training tensors stay on a GPU when they take at most this share of its free memory.
_DEVICE_CACHE_SHARE = 0.25
# Overfitting: the validation loss of the last _OVERFIT_WINDOW epochs (their median) sits
# above its best value by more than _OVERFIT_NOISE times its epoch-to-epoch noise and
# _OVERFIT_MIN_RISE nats, at least _OVERFIT_MIN_EPOCHS epochs after the best one, while the
# training loss fell.
_OVERFIT_WINDOW = 5
_OVERFIT_NOISE = 4.0
_OVERFIT_MIN_RISE = 0.05
_OVERFIT_MIN_EPOCHS = 10
# The automatic minibatch and learning rate: see automatic_batch_size and automatic_lr.
_BATCH = 512
_LARGE_BATCH = 1024
_LARGE_BATCH_MAX_FEATURES = 2
_MIN_STEPS = 8
_SMALLEST_BATCH = 64
_LR = 2e-3


def automatic_batch_size(features: int, n_rows: int) -> int:
    r"""The minibatch size for ``features`` parameters and ``n_rows`` training rows.

    For :math:`d \le 2`: 1,024 rows when the rows fill at least eight such batches, else
    512. A step of the small flows of a 2-D posterior costs mostly a fixed time per tensor
    operation, so 1,024 rows take a third off an epoch of two moons (0.27 to 0.18 s on
    10,000 simulations), at a C2ST within the seeds' spread of 512 rows' on the two 2-D
    benchmark tasks. With more parameters they save less (a fifth of an SLCP epoch, a
    seventh of a 10-D one) and read a worse C2ST on SLCP with distractors and on both
    10-D tasks.

    For :math:`d > 2`: the largest of 512, 256 and 128 rows that the rows fill at least
    eight times, else 64. Patience and the weight average's time constant count epochs,
    and a store of 2,000 simulations holds only four batches of 512: with eight steps or
    more an epoch the sequential loop's 2,000 simulations (seven rounds) read a lower
    C2ST on the narrow 10-D Gaussian (0.661 to 0.621) and Bernoulli GLM (0.824 to
    0.804), and the same on SLCP. In two dimensions the smaller batches read no better
    (the Gaussian mixture's amortized fit on 2,000 simulations 0.585 to 0.604). Figures
    in benchmarks/RESULTS.md.
    """
    if features <= _LARGE_BATCH_MAX_FEATURES:
        return _LARGE_BATCH if n_rows >= _MIN_STEPS * _LARGE_BATCH else _BATCH
    batch = _BATCH
    while batch > _SMALLEST_BATCH and n_rows < _MIN_STEPS * batch:
        batch //= 2
    return batch


def automatic_lr(batch_size: int, net_type: str | None = None) -> float:
    r"""The learning rate for minibatches of ``batch_size`` rows of a ``net_type`` network.

    :math:`\eta = 2 \cdot 10^{-3} \sqrt{B / 512}`: AdamW's square-root scaling rule,
    which keeps the noise of the updates the same across batch sizes, anchored at the
    rate chosen for 512 rows, times the family's :func:`~skfalcon.engine.flows.lr_scale`
    (10 for ``"gaussian"``, 1 for the flows).
    """
    return _LR * math.sqrt(batch_size / _BATCH) * lr_scale(net_type)


class TrainingDivergedError(RuntimeError):
    """Every step of an epoch gave a non-finite loss."""


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of :func:`train`.

    Attributes
    ----------
    batch_size : int or None
        Minibatch size; ``None``: :func:`automatic_batch_size`'s.
    max_epochs : int
        The most epochs.
    lr : float or None
        AdamW's learning rate (moments ``(0.9, 0.999)``); ``None``: :func:`automatic_lr`'s
        for the batch size.
    weight_decay : float
        AdamW's decoupled weight decay.
    lr_decay_factor : float
        ``ReduceLROnPlateau``'s factor.
    lr_patience, early_stop_patience : int
        Epochs without improvement before the learning rate decays, and before stopping.
    use_best_models : bool
        Restore the weights of the best validation epoch at the end.
    max_cache_samples : int or None
        Use at most this many training rows per epoch (a fresh random subset each epoch).
    ema_epochs : float
        Time constant, in epochs, of the exponential moving average of the weights that is
        validated, kept and restored (see :func:`train`); 0 uses the weights themselves.
    """

    batch_size: int | None = None
    max_epochs: int = 200
    lr: float | None = None
    weight_decay: float = 0.0
    lr_decay_factor: float = 0.5
    lr_patience: int = 5
    early_stop_patience: int = 10
    use_best_models: bool = True
    max_cache_samples: int | None = None
    ema_epochs: float = 0.0

    def resolved(self, features: int, n_rows: int, net_type: str | None = None) -> "TrainingConfig":
        """These settings with the automatic batch size and learning rate filled in, for
        ``features`` parameters, ``n_rows`` training rows and a ``net_type`` network."""
        batch_size = self.batch_size
        if batch_size is None:
            batch_size = automatic_batch_size(features, n_rows)
        lr = self.lr if self.lr is not None else automatic_lr(batch_size, net_type)
        return replace(self, batch_size=batch_size, lr=lr)


@dataclass
class TrainingResult:
    """What :func:`train` returns: one history record per epoch and how it ended.

    ``overfitting`` is :func:`diagnose_overfitting`'s finding, ``None`` when there is none;
    ``stopped_on_overfitting`` says that it ended training (``stopped_early`` is then true
    too). ``config`` holds the settings trained with, the automatic ones filled in.
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    stopped_on_overfitting: bool = False
    interrupted: bool = False
    n_skipped_steps: int = 0
    overfitting: dict | None = None
    config: TrainingConfig | None = None


@dataclass
class _Rows:
    """One split's tensors: ``u``, ``x`` and the marginal flow's rows (or ``None``: all)."""

    u: Tensor
    x: Tensor
    marginal: Tensor | None

    def __len__(self) -> int:
        return self.u.shape[0]

    def take(self, rows, device) -> "_Rows":
        marginal = None if self.marginal is None else self.marginal[rows].to(device)
        return _Rows(self.u[rows].to(device), self.x[rows].to(device), marginal)

    def to(self, device) -> "_Rows":
        return self.take(slice(None), device)


def _fits_on(device: torch.device, rows: _Rows) -> bool:
    """Whether moving ``rows`` to ``device`` once is cheaper than once per minibatch."""
    if device.type != "cuda":
        return True
    size = rows.u.nbytes + rows.x.nbytes
    return size <= _DEVICE_CACHE_SHARE * torch.cuda.mem_get_info(device)[0]


def _row_counts(rows: int, marginal_rows: Tensor | None, device) -> Tensor:
    """Rows behind each entry of :meth:`DualFlowPosterior.losses`, filled on the device."""
    counts = torch.full((2,), float(rows), device=device)
    if marginal_rows is not None:
        counts[1] = marginal_rows.sum()
    return counts


def _mean_losses(model: DualFlowPosterior, data: _Rows, device) -> Tensor:
    total = torch.zeros(2, device=device)
    counts = torch.zeros(2, device=device)
    for rows in row_chunks(len(data), inference_rows(device, model)):
        batch = data.take(rows, device)
        weight = _row_counts(len(batch), batch.marginal, device)
        total += model.losses(batch.u, batch.x, batch.marginal) * weight
        counts += weight
    return total / counts.clamp_min(1)


def _validate(model, val_rows: _Rows, train_losses: list[float], device):
    """The mean validation losses and their sum, which selects the best epoch; without
    validation rows, NaN losses and the training loss's sum."""
    if not len(val_rows):
        return [float("nan")] * 2, sum(train_losses)
    with torch.no_grad():
        val_losses = _mean_losses(model, val_rows, device).tolist()
    return val_losses, sum(val_losses)


def _epoch(model, optimizer, parameters, data: _Rows, batch_size: int, device, average=None):
    """One pass over ``data`` in random minibatches; mean losses ``(2,)`` and skipped steps.

    A step whose loss or gradient is not finite contributes no gradient: its gradients are
    zeroed. On an accelerator they are zeroed by a device-side select, so there is no host
    sync per step; on the CPU, where reading the flag costs nothing, only when needed.
    ``average``, when given, follows every step and takes the model's normalisation
    statistics at the end.
    """
    order = torch.randperm(len(data), device=data.u.device)
    loss_sum = torch.zeros(2, device=device)
    loss_count = torch.zeros(2, device=device)
    skipped = torch.zeros((), dtype=torch.long, device=device)
    n_steps = 0
    for start in range(0, len(order), batch_size):
        batch = data.take(order[start : start + batch_size], device)
        losses = model.losses(batch.u, batch.x, batch.marginal)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        grads = [p.grad for p in parameters if p.grad is not None]
        # With an infinite bound this returns the total norm (one fused pass) and scales
        # the gradients by 1.
        norm = torch.nn.utils.clip_grad_norm_(parameters, math.inf, foreach=True)
        finite = torch.isfinite(losses).all() & torch.isfinite(norm)
        if device.type != "cpu":
            for g in grads:
                g.copy_(torch.where(finite, g, torch.zeros_like(g)))
        elif not finite:
            for g in grads:
                g.zero_()
        optimizer.step()
        if average is not None:
            average.update()
        losses = torch.where(finite, losses.detach(), torch.zeros_like(losses))
        weight = _row_counts(len(batch), batch.marginal, device)
        loss_sum += losses * weight
        loss_count += weight
        skipped += ~finite
        n_steps += 1
    if average is not None:
        average.sync_buffers()
    return (loss_sum / loss_count.clamp_min(1)).tolist(), int(skipped), n_steps


def _splits(model: DualFlowPosterior, store: SampleStore, config: TrainingConfig, device):
    """Training and validation rows, on ``device`` where they fit; and whether to subsample."""
    marginal = model.marginal_policy.flow_rows(store.from_prior)
    train_mask, val_mask = ~store.is_validation, store.is_validation
    train = _Rows(
        store.u[train_mask], store.x[train_mask], None if marginal is None else marginal[train_mask]
    )
    val = _Rows(
        store.u[val_mask], store.x[val_mask], None if marginal is None else marginal[val_mask]
    )
    cap = config.max_cache_samples
    subsample = cap is not None and len(train) > cap
    if not subsample and _fits_on(device, train):
        train = train.to(device)
    if _fits_on(device, val):
        val = val.to(device)
    return train, val, subsample


def _record(epoch, train_losses, val_losses, best_loss, lr, skipped, seconds) -> dict:
    return {
        "epoch": epoch,
        "train_loss": sum(train_losses),
        "train_loss_conditional": train_losses[0],
        "train_loss_marginal": train_losses[1],
        "val_loss": sum(val_losses),
        "val_loss_conditional": val_losses[0],
        "val_loss_marginal": val_losses[1],
        "best_val_loss": best_loss,
        "lr": lr,
        "skipped_steps": skipped,
        "seconds": seconds,
    }


def diagnose_overfitting(history: list[dict], best_epoch: int) -> dict | None:
    r"""Whether one fit's curve shows overfitting, and by how much.

    With :math:`v_t` the validation and :math:`t_t` the training loss of epoch :math:`t`,
    :math:`e^*` the best epoch and :math:`E` the last :data:`_OVERFIT_WINDOW` epochs, the
    fit overfits when, at least :data:`_OVERFIT_MIN_EPOCHS` epochs after :math:`e^*`,

    .. math::

        \operatorname{median}_E v - v_{e^*} > \max(4 \sigma, 0.05)
        \quad\text{and}\quad \operatorname{median}_E t < t_{e^*},

    where :math:`\sigma` is the epoch-to-epoch noise of :math:`v`: the median absolute
    deviation of its second differences (which cancel a linear trend) scaled to a standard
    deviation, :math:`1.4826\,\mathrm{MAD} / \sqrt 6`. An early-stopped fit whose
    validation loss merely levels off does not qualify; one whose validation loss climbs
    while the training loss keeps falling does.

    Parameters
    ----------
    history : list of dict
        The fit's records (``epoch``, ``train_loss``, ``val_loss``), in order.
    best_epoch : int
        The ``epoch`` of the best validation loss.

    Returns
    -------
    dict or None
        ``best_epoch``, ``epochs`` (after the best), ``val_rise``, ``train_fall`` and
        ``noise``; ``None`` when the curve does not show overfitting or is too short, or
        has no finite validation loss.
    """
    val = [record["val_loss"] for record in history]
    train = [record["train_loss"] for record in history]
    best = best_epoch - history[0]["epoch"] if history else -1
    after = len(history) - 1 - best
    if best < 0 or after < _OVERFIT_MIN_EPOCHS or not all(map(_finite, val + train)):
        return None
    second = [val[i + 1] - 2 * val[i] + val[i - 1] for i in range(1, len(val) - 1)]
    centre = statistics.median(second)
    noise = 1.4826 * statistics.median(abs(d - centre) for d in second) / 6**0.5
    rise = statistics.median(val[-_OVERFIT_WINDOW:]) - val[best]
    fall = train[best] - statistics.median(train[-_OVERFIT_WINDOW:])
    if rise <= max(_OVERFIT_NOISE * noise, _OVERFIT_MIN_RISE) or fall <= 0:
        return None
    return {
        "best_epoch": best_epoch,
        "epochs": after,
        "val_rise": rise,
        "train_fall": fall,
        "noise": max(noise, 1e-12),
    }


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


class _WeightAverage:
    r"""The exponential moving average of a model's weights that :func:`train` validates.

    After every step :math:`\bar w \leftarrow \beta \bar w + (1 - \beta) w` (the first
    step copies), with :math:`\beta = \exp(-1 / (\tau S))` for a time constant of
    :math:`\tau` epochs of :math:`S` steps, so that the average spans the same share of
    training whatever the number of rows and the batch size. ``module`` is a copy of the
    model holding the average; its buffers (the normalisations' statistics) are set from
    the model's by :meth:`sync_buffers`, not averaged. One fused update per step over
    cached parameter lists: ``AveragedModel.update_parameters`` walks and groups the
    parameters on every call, which costs about a tenth of a small model's step.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = model
        # Only ever evaluated: its normalisations must not update on validation rows.
        self.module = copy.deepcopy(model).eval()
        self._averaged = [p.detach() for p in self.module.parameters()]
        self._current = [p.detach() for p in model.parameters()]
        self._update = torch.optim.swa_utils.get_ema_multi_avg_fn(decay)
        self._started = False

    @torch.no_grad()
    def update(self) -> None:
        if self._started:
            self._update(self._averaged, self._current, None)
        else:
            for averaged, current in zip(self._averaged, self._current, strict=True):
                averaged.copy_(current)
            self._started = True

    @torch.no_grad()
    def sync_buffers(self) -> None:
        for kept, current in zip(self.module.buffers(), self.model.buffers(), strict=True):
            kept.copy_(current)


def _optimizer(parameters: list, config: TrainingConfig):
    """AdamW over ``parameters`` and its plateau learning-rate schedule."""
    # foreach: one fused update for all parameters, not one per tensor.
    optimizer = torch.optim.AdamW(
        parameters, lr=config.lr, betas=_BETAS, weight_decay=config.weight_decay, foreach=True
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_decay_factor, patience=config.lr_patience
    )
    return optimizer, scheduler


def _weight_average(model, config: TrainingConfig, n_rows: int) -> _WeightAverage | None:
    """The weight average of ``model`` for ``config`` and ``n_rows`` training rows an
    epoch, or ``None`` without one (``ema_epochs=0``)."""
    if config.ema_epochs <= 0:
        return None
    steps_per_epoch = max(1, math.ceil(n_rows / config.batch_size))
    return _WeightAverage(model, math.exp(-1.0 / (config.ema_epochs * steps_per_epoch)))


def train(
    model: DualFlowPosterior,
    store: SampleStore,
    config: TrainingConfig,
    device: torch.device,
    *,
    on_epoch_end: Callable[[dict], None] | None = None,
    epoch_offset: int = 0,
) -> TrainingResult:
    """Fit ``model`` in place on the training rows of ``store``.

    The validation rows select the best epoch and stop early; without them the training
    loss does. Uses torch's global random state. A ``KeyboardInterrupt`` ends training
    after restoring the best weights.
    """
    model.to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    train_rows, val_rows, subsample = _splits(model, store, config, device)
    n_rows = config.max_cache_samples if subsample else len(train_rows)
    spec = getattr(model, "spec", None)
    config = config.resolved(model.features, n_rows, getattr(spec, "net_type", None))
    optimizer, scheduler = _optimizer(parameters, config)
    average = _weight_average(model, config, n_rows)
    evaluated = model if average is None else average.module
    result = TrainingResult(best_epoch=epoch_offset, config=config)
    best_loss, best_state = float("inf"), copy.deepcopy(model.state_dict())
    epochs_without_improvement = 0
    try:
        for epoch in range(epoch_offset, epoch_offset + config.max_epochs):
            start_time = time.perf_counter()
            model.train()
            data = train_rows
            if subsample:
                data = train_rows.take(
                    torch.randperm(len(train_rows))[: config.max_cache_samples], device
                )
            train_losses, n_skipped, n_steps = _epoch(
                model, optimizer, parameters, data, config.batch_size, device, average
            )
            result.n_skipped_steps += n_skipped
            if n_skipped == n_steps:
                raise TrainingDivergedError(
                    f"every one of the {n_steps} training steps of epoch {epoch} gave a "
                    f"non-finite loss (lr={config.lr:.3g}, batch_size={config.batch_size})"
                )
            model.eval()
            val_losses, monitored = _validate(evaluated, val_rows, train_losses, device)
            if monitored < best_loss:
                best_loss, result.best_epoch = monitored, epoch
                best_state = copy.deepcopy(evaluated.state_dict())
                epochs_without_improvement = 0
            else:
                epochs_without_improvement += 1
            record = _record(
                epoch,
                train_losses,
                val_losses,
                best_loss,
                optimizer.param_groups[0]["lr"],
                n_skipped,
                time.perf_counter() - start_time,
            )
            result.history.append(record)
            if on_epoch_end is not None:
                on_epoch_end(record)
            scheduler.step(monitored)
            if epochs_without_improvement > config.early_stop_patience:
                result.stopped_early = True
                break
            if diagnose_overfitting(result.history, result.best_epoch):
                result.stopped_early = result.stopped_on_overfitting = True
                break
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        if config.use_best_models:
            model.load_state_dict(best_state)
        elif average is not None:
            model.load_state_dict(evaluated.state_dict())
        model.eval()
    result.overfitting = diagnose_overfitting(result.history, result.best_epoch)
    for record in result.history:
        record["overfitting"] = result.overfitting is not None
    return result
