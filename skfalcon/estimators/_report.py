"""What a person sees of a fit: the progress bar, the log line and the warnings."""

import logging
import warnings

from sklearn.exceptions import ConvergenceWarning

from skfalcon.engine import TrainingResult

__all__ = ["FitProgress", "report_fit"]

logger = logging.getLogger("skfalcon")


class FitProgress:
    """A tqdm bar over epochs showing the losses and the learning rate."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc="fit", unit="epoch", leave=True)

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


def report_fit(result: TrainingResult, max_epochs: int, n_stored: int, marginal) -> None:
    """Warn about an interrupted, unconverged or partly non-finite fit; log a summary."""
    if result.interrupted:
        warnings.warn(
            "Training was interrupted; the estimator keeps the best weights so far.",
            UserWarning,
            stacklevel=4,
        )
    elif not result.stopped_early:
        warnings.warn(
            f"Training reached max_epochs={max_epochs} before the validation loss stopped "
            "improving; raise max_epochs or lr for a converged fit.",
            ConvergenceWarning,
            stacklevel=4,
        )
    if result.n_skipped_steps:
        warnings.warn(
            f"Skipped {result.n_skipped_steps} training step(s) with a non-finite loss.",
            UserWarning,
            stacklevel=4,
        )
    if not result.history:
        return
    first_epoch = result.history[0]["epoch"]
    best = result.history[result.best_epoch - first_epoch]
    ending = (
        "interrupted"
        if result.interrupted
        else ("stopped early" if result.stopped_early else "max_epochs reached")
    )
    share = "" if marginal.prior_fraction is None else f" ({marginal.prior_fraction:.2f})"
    logger.info(
        "fit: %d epochs in %.1f s, best epoch %d (validation loss %.4f), %s; %d rows in the "
        "store, marginal: %s%s",
        len(result.history),
        sum(r["seconds"] for r in result.history),
        result.best_epoch,
        best["val_loss"],
        ending,
        n_stored,
        marginal.kind,
        share,
    )
