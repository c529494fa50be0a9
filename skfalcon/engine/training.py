r"""Training loop: AdamW, plateau learning-rate decay, early stopping, best weights.

Minimises :meth:`DualFlowPosterior.losses` summed over minibatches drawn without
replacement each epoch. After every epoch the mean validation loss drives
``ReduceLROnPlateau`` and early stopping; the weights (and normalisation buffers) of the
best validation epoch are kept and, with ``use_best_models``, restored at the end. The
loop syncs with the host once per epoch, not per step. A step whose loss or gradient is
not finite contributes no gradient (zeroed on the device and counted); an epoch in which every
step was non-finite raises :class:`TrainingDivergedError`.
"""

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from skfalcon.engine.posterior import DualFlowPosterior

__all__ = ["TrainingDivergedError", "TrainingResult", "train"]

# Validation batches are evaluated without gradients, so they can be larger.
_EVAL_BATCH = 8192


class TrainingDivergedError(RuntimeError):
    """Every step of an epoch gave a non-finite loss."""


@dataclass
class TrainingResult:
    """What :func:`train` returns: one history record per epoch and how it ended."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    interrupted: bool = False
    n_skipped_steps: int = 0


def _row_counts(rows: int, marginal_rows: Tensor | None, device) -> Tensor:
    """Rows behind each entry of :meth:`DualFlowPosterior.losses`, as a device tensor.

    Filled on the device (no host-to-device copy per step).
    """
    counts = torch.full((2,), float(rows), device=device)
    if marginal_rows is not None:
        counts[1] = marginal_rows.sum()
    return counts


def _mean_losses(
    model: DualFlowPosterior, u: Tensor, x: Tensor, marginal_rows: Tensor | None, device
) -> Tensor:
    total = torch.zeros(2, device=device)
    counts = torch.zeros(2, device=device)
    for start in range(0, u.shape[0], _EVAL_BATCH):
        ub = u[start : start + _EVAL_BATCH].to(device, non_blocking=True)
        xb = x[start : start + _EVAL_BATCH].to(device, non_blocking=True)
        mb = (
            None if marginal_rows is None else marginal_rows[start : start + _EVAL_BATCH].to(device)
        )
        weight = _row_counts(ub.shape[0], mb, device)
        total += model.losses(ub, xb, mb) * weight
        counts += weight
    return total / counts.clamp_min(1)


def train(
    model: DualFlowPosterior,
    u_train: Tensor,
    x_train: Tensor,
    u_val: Tensor | None,
    x_val: Tensor | None,
    *,
    device: torch.device,
    batch_size: int,
    max_epochs: int,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    lr_decay_factor: float,
    lr_patience: int,
    early_stop_patience: int,
    use_best_models: bool,
    cache_on_device: bool = True,
    max_cache_samples: int | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
    epoch_offset: int = 0,
    marginal_rows_train: Tensor | None = None,
    marginal_rows_val: Tensor | None = None,
) -> TrainingResult:
    """Fit ``model`` in place on ``(u_train, x_train)``.

    ``u_val``/``x_val`` (may be ``None``) select the best epoch and stop early; without
    them the training loss does. With ``cache_on_device`` the training tensors are moved
    to ``device`` once, otherwise each minibatch is. ``max_cache_samples`` caps the rows
    used per epoch (a fresh random subset each epoch). Uses torch's global random state.
    A ``KeyboardInterrupt`` ends training after restoring the best weights.
    ``marginal_rows_train``/``marginal_rows_val`` (bool, one per row) restrict the marginal
    flow's loss to those rows (see :meth:`DualFlowPosterior.losses`); ``None``: all rows.
    """
    model.to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=lr_decay_factor, patience=lr_patience
    )
    n_train = u_train.shape[0]
    subsample = max_cache_samples is not None and n_train > max_cache_samples
    m_train = marginal_rows_train
    if cache_on_device and not subsample:
        u_train, x_train = u_train.to(device), x_train.to(device)
        m_train = None if m_train is None else m_train.to(device)
    has_val = u_val is not None and u_val.shape[0] > 0
    if has_val and cache_on_device:
        u_val, x_val = u_val.to(device), x_val.to(device)

    result = TrainingResult(best_epoch=epoch_offset)
    best_loss = float("inf")
    best_state = copy.deepcopy(model.state_dict())
    epochs_without_improvement = 0
    try:
        for epoch in range(max_epochs):
            start_time = time.perf_counter()
            model.train()
            u_epoch, x_epoch, m_epoch = u_train, x_train, m_train
            if subsample:
                rows = torch.randperm(n_train)[:max_cache_samples]
                u_epoch, x_epoch = u_train[rows].to(device), x_train[rows].to(device)
                m_epoch = None if m_train is None else m_train[rows].to(device)
            order = torch.randperm(u_epoch.shape[0], device=u_epoch.device)
            train_sum = torch.zeros(2, device=device)
            train_count = torch.zeros(2, device=device)
            skipped = torch.zeros((), dtype=torch.long, device=device)
            n_steps = 0
            for start in range(0, order.shape[0], batch_size):
                rows = order[start : start + batch_size]
                ub = u_epoch[rows].to(device, non_blocking=True)
                xb = x_epoch[rows].to(device, non_blocking=True)
                mb = None if m_epoch is None else m_epoch[rows].to(device, non_blocking=True)
                losses = model.losses(ub, xb, mb)
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                grads = [p.grad for p in parameters if p.grad is not None]
                finite = torch.isfinite(losses).all() & torch.isfinite(
                    torch.stack([g.norm() for g in grads]).sum()
                )
                # Zero the gradients of a non-finite step on the device: no host sync per step.
                for g in grads:
                    g.copy_(torch.where(finite, g, torch.zeros_like(g)))
                optimizer.step()
                losses = torch.where(finite, losses.detach(), torch.zeros_like(losses))
                weight = _row_counts(rows.shape[0], mb, device)
                train_sum += losses.detach() * weight
                train_count += weight
                skipped += ~finite
                n_steps += 1
            n_skipped = int(skipped)
            result.n_skipped_steps += n_skipped
            if n_skipped == n_steps:
                raise TrainingDivergedError(
                    f"every one of the {n_steps} training steps of epoch "
                    f"{epoch_offset + epoch} gave a non-finite loss"
                )
            train_losses = (train_sum / train_count.clamp_min(1)).tolist()

            model.eval()
            if has_val:
                with torch.no_grad():
                    val_losses = _mean_losses(
                        model, u_val, x_val, marginal_rows_val, device
                    ).tolist()
                monitored = sum(val_losses)
            else:
                val_losses = [float("nan"), float("nan")]
                monitored = sum(train_losses)

            improved = monitored < best_loss
            if improved:
                best_loss, result.best_epoch = monitored, epoch_offset + epoch
                best_state = copy.deepcopy(model.state_dict())
                epochs_without_improvement = 0
            else:
                epochs_without_improvement += 1
            record = {
                "epoch": epoch_offset + epoch,
                "train_loss": sum(train_losses),
                "train_loss_conditional": train_losses[0],
                "train_loss_marginal": train_losses[1],
                "val_loss": sum(val_losses),
                "val_loss_conditional": val_losses[0],
                "val_loss_marginal": val_losses[1],
                "best_val_loss": best_loss,
                "lr": optimizer.param_groups[0]["lr"],
                "skipped_steps": n_skipped,
                "seconds": time.perf_counter() - start_time,
            }
            result.history.append(record)
            if on_epoch_end is not None:
                on_epoch_end(record)
            scheduler.step(monitored)
            if epochs_without_improvement > early_stop_patience:
                result.stopped_early = True
                break
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        if use_best_models:
            model.load_state_dict(best_state)
        model.eval()
    return result
