"""What a person sees of a fit and of long inference calls: progress bars, log lines and
the warnings."""

import logging
import math
import time
import warnings

from sklearn.exceptions import ConvergenceWarning

from skfalcon.engine import TrainingResult

__all__ = ["FitProgress", "InferenceProgress", "progress_bar", "report_fit"]

logger = logging.getLogger("skfalcon")

#: An inference call shows a bar once what it has done predicts more than this many
#: seconds in all.
PROGRESS_AFTER_SECONDS = 3.0


def progress_bar(total: int, desc: str, unit: str, initial: int = 0):
    """A ``tqdm.auto`` bar; where a notebook lacks ipywidgets, a text bar without a warning.

    ``tqdm.auto`` falls back to a text bar in a notebook without ipywidgets and says so
    with a ``TqdmWarning`` when it is first imported; that advice is not the estimator's
    to give, so it is silenced here, where every skfalcon bar is made.
    """
    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=True)


class FitProgress:
    """A tqdm bar over epochs showing the losses and the learning rate."""

    def __init__(self, total: int):
        self._bar = progress_bar(total, "fit", "epoch")

    def __call__(self, record: dict) -> None:
        self._bar.set_postfix(
            train=f"{record['train_loss']:.3f}",
            val=f"{record['val_loss']:.3f}",
            lr=f"{record['lr']:.1e}",
            refresh=False,
        )
        self._bar.update(1)
        logger.debug("epoch %(epoch)d: %(train_loss).4f / %(val_loss).4f", record)

    def close(self) -> None:
        self._bar.close()


class InferenceProgress:
    """A bar over the observations of an inference call, shown only when it is slow.

    Called with the number of observations each finished chunk held. The bar appears once
    the time so far predicts more than :data:`PROGRESS_AFTER_SECONDS` for the whole call,
    and only when ``verbose``; quick calls print nothing. Use it as a context manager.
    """

    def __init__(self, total: int, desc: str, verbose, *, after: float | None = None):
        self.total, self.desc = int(total), desc
        self.after = PROGRESS_AFTER_SECONDS if after is None else after
        self.enabled = bool(verbose) and self.total > 1
        self.done = 0
        self._bar = None
        self._start = time.perf_counter()

    def __call__(self, n_done: int) -> None:
        self.done += int(n_done)
        if self._bar is not None:
            self._bar.update(int(n_done))
        elif self.enabled and self.done < self.total:
            elapsed = time.perf_counter() - self._start
            if elapsed * self.total / max(self.done, 1) > self.after:
                self._bar = progress_bar(self.total, self.desc, "obs", initial=self.done)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self._bar is not None:
            self._bar.close()
        return False


def _recent_gain(history: list[dict], epochs: int = 10) -> str:
    """How much the best monitored loss fell over the last ``epochs`` epochs, as a clause;
    empty for a shorter or non-finite curve."""
    if len(history) <= epochs:
        return ""
    gain = history[-epochs - 1]["best_val_loss"] - history[-1]["best_val_loss"]
    if not math.isfinite(gain):
        return ""
    return f" (its best fell by {gain:.2g} over the last {epochs} epochs)"


def report_fit(result: TrainingResult, max_epochs: int, n_stored: int, marginal) -> None:
    """Warn about an interrupted, unconverged, overfitted or partly non-finite fit; log a
    summary."""
    if result.interrupted:
        warnings.warn(
            "Training was interrupted; the estimator keeps the best weights so far.",
            UserWarning,
            stacklevel=4,
        )
    elif not result.stopped_early:
        warnings.warn(
            f"Training reached max_epochs={max_epochs} before the validation loss stopped "
            f"improving{_recent_gain(result.history)}; raise max_epochs or lr for a "
            "converged fit.",
            ConvergenceWarning,
            stacklevel=4,
        )
    if result.n_skipped_steps:
        warnings.warn(
            f"Skipped {result.n_skipped_steps} training step(s) with a non-finite loss.",
            UserWarning,
            stacklevel=4,
        )
    overfitting = getattr(result, "overfitting", None)
    if overfitting is not None:
        _warn_overfitting(overfitting)
    if not result.history:
        return
    first_epoch = result.history[0]["epoch"]
    best = result.history[result.best_epoch - first_epoch]
    ending = (
        "interrupted"
        if result.interrupted
        else (
            "stopped on overfitting"
            if result.stopped_on_overfitting
            else ("stopped early" if result.stopped_early else "max_epochs reached")
        )
    )
    share = "" if marginal.prior_fraction is None else f" ({marginal.prior_fraction:.2f})"
    logger.info(
        "fit: %d epochs in %.1f s (batches of %d rows, lr %.2g), best epoch %d (validation "
        "loss %.4f), %s; %d rows in the store, marginal: %s%s%s",
        len(result.history),
        sum(r["seconds"] for r in result.history),
        result.config.batch_size,
        result.config.lr,
        result.best_epoch,
        best["val_loss"],
        ending,
        n_stored,
        marginal.kind,
        share,
        "; overfitting" if overfitting is not None else "",
    )


def _warn_overfitting(diagnosis: dict) -> None:
    """The warning of :func:`~skfalcon.engine.training.diagnose_overfitting`'s finding."""
    warnings.warn(
        f"The networks overfit the training simulations: over the {diagnosis['epochs']} "
        f"epochs after the best one (epoch {diagnosis['best_epoch']}) the validation loss "
        f"rose by {diagnosis['val_rise']:.3f} ({diagnosis['val_rise'] / diagnosis['noise']:.0f} "
        f"times its epoch-to-epoch noise) while the training loss fell by "
        f"{diagnosis['train_fall']:.3f}. The best epoch's weights are used when "
        "use_best_models=True; more simulations, a smaller network or weight_decay "
        "generalize better. history_ marks the fit with 'overfitting': True.",
        UserWarning,
        stacklevel=5,
    )
