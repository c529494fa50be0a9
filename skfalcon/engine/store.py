r"""The sample store of sequential training.

Every simulation the estimator trains on lives in a :class:`SampleStore` row: the cube
coordinates :math:`u`, the observation :math:`x`, the log-density :math:`\log g(u)` of the
proposal it was drawn from (the prior's for prior draws), whether it came from the prior,
whether it is a validation row, and the round that added it. Rows are assigned to the
training or validation split once, when they arrive, and keep that split in later rounds.

The store is immutable: :meth:`SampleStore.append`, :meth:`SampleStore.keep_newest` and
:meth:`SampleStore.select` return new stores, so a round that fails leaves the fitted
estimator's store as it was.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from skfalcon.engine.inference import inference_rows, row_chunks
from skfalcon.engine.posterior import DualFlowPosterior

__all__ = ["SampleStore", "log_ratio_to_proposal", "validation_mask"]


def validation_mask(n: int, fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """Bool mask ``(n,)`` of the rows held out for validation, drawn at random.

    ``round(fraction * n)`` rows, and with ``fraction > 0`` at least one and at most
    ``n - 1`` when ``n > 1``, so that both splits are non-empty; none for a single row.
    """
    n_val = round(fraction * n) if n > 1 else 0
    if fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:n_val]] = True
    return mask


@dataclass(frozen=True)
class SampleStore:
    """Rows of training data with their provenance; all tensors share the first dimension.

    Attributes
    ----------
    u : Tensor of shape (n, d), float32
    x : Tensor of shape (n, ...), float32
    log_proposal : Tensor of shape (n,), float64
        :math:`\\log g(u)` of the distribution each row was drawn from, in ``u`` space.
    from_prior : Tensor of shape (n,), bool
    is_validation : Tensor of shape (n,), bool
    round : Tensor of shape (n,), int64
        The round (0 for the first) that added each row; larger is newer.
    prior_rows_filtered : bool
        Whether rows drawn from the prior were ever dropped by a rule that looks at them
        (:meth:`select` with ``filters_prior_rows``); the remaining prior rows are then no
        longer distributed as the prior. Dropping the oldest rows keeps them so.
    """

    u: Tensor
    x: Tensor
    log_proposal: Tensor
    from_prior: Tensor
    is_validation: Tensor
    round: Tensor
    prior_rows_filtered: bool = False

    def __len__(self) -> int:
        return self.u.shape[0]

    @classmethod
    def empty(cls, features: int, observation_shape: tuple[int, ...]) -> "SampleStore":
        return cls(
            torch.empty(0, features),
            torch.empty(0, *observation_shape),
            torch.empty(0, dtype=torch.float64),
            torch.empty(0, dtype=torch.bool),
            torch.empty(0, dtype=torch.bool),
            torch.empty(0, dtype=torch.long),
        )

    @property
    def next_round(self) -> int:
        return int(self.round.max()) + 1 if len(self) else 0

    @property
    def all_from_prior(self) -> bool:
        return bool(self.from_prior.all())

    def append(
        self,
        u: Tensor,
        x: Tensor,
        log_proposal: Tensor,
        from_prior: Tensor,
        is_validation: Tensor,
    ) -> "SampleStore":
        """A new store with these rows added as the next round."""
        n = u.shape[0]
        round_id = torch.full((n,), self.next_round, dtype=torch.long)
        return SampleStore(
            torch.cat([self.u, u.to(self.u.dtype)]),
            torch.cat([self.x, x.to(self.x.dtype)]),
            torch.cat([self.log_proposal, log_proposal.to(torch.float64)]),
            torch.cat([self.from_prior, from_prior.to(torch.bool)]),
            torch.cat([self.is_validation, is_validation.to(torch.bool)]),
            torch.cat([self.round, round_id]),
            self.prior_rows_filtered,
        )

    def select(self, keep: Tensor, filters_prior_rows: bool = False) -> "SampleStore":
        """A new store with the rows where ``keep`` (bool, shape (n,)) is true.

        ``filters_prior_rows``: ``keep`` was chosen by looking at the rows (not by age), so
        dropping a prior row marks the store's prior rows as no longer prior-distributed.
        """
        dropped_prior = filters_prior_rows and bool((self.from_prior & ~keep).any())
        return SampleStore(
            self.u[keep],
            self.x[keep],
            self.log_proposal[keep],
            self.from_prior[keep],
            self.is_validation[keep],
            self.round[keep],
            self.prior_rows_filtered or dropped_prior,
        )

    def prior_fraction(self) -> float | None:
        r"""Fraction :math:`\alpha` of training rows drawn from the prior, when known to be
        prior-distributed; ``None`` once prior rows were filtered (or without training rows)."""
        train = ~self.is_validation
        if self.prior_rows_filtered or not bool(train.any()):
            return None
        return float(self.from_prior[train].double().mean())

    def limit(self, capacity: int | None, validation_fraction: float) -> "SampleStore":
        """Keep the newest ``capacity`` rows (``None``: all), each split keeping its share."""
        if capacity is None or len(self) <= capacity:
            return self
        n_validation = round(validation_fraction * capacity)
        return self.keep_newest(capacity - n_validation, n_validation)

    def keep_newest(self, n_train: int, n_validation: int) -> "SampleStore":
        """Drop the oldest rows beyond ``n_train`` training and ``n_validation`` validation rows.

        Rows of one round are dropped in their stored order, so the result is deterministic.
        """
        keep = torch.zeros(len(self), dtype=torch.bool)
        for is_val, limit in ((False, n_train), (True, n_validation)):
            rows = torch.nonzero(self.is_validation == is_val).flatten()
            if rows.numel() > limit:
                rows = rows[rows.numel() - limit :] if limit > 0 else rows[:0]
            keep[rows] = True
        return self.select(keep)


def log_ratio_to_proposal(
    posterior: DualFlowPosterior, store: SampleStore, device: torch.device
) -> Tensor:
    r""":math:`\log q(u_i \mid x_i) - \log g_i(u_i)` of every row, shape ``(n,)``, float64.

    How much more the current conditional estimate believes in a row's parameters, given
    the row's own observation, than the proposal that drew them. Rows far below zero were
    simulated where the posterior of their own data has almost no mass.
    """
    values = []
    was_training = posterior.training
    posterior.eval()
    with torch.no_grad():
        for rows in row_chunks(len(store), inference_rows(device, posterior)):
            u, x = store.u[rows].to(device), store.x[rows].to(device)
            log_q = posterior.conditional.log_prob(u, posterior.embed(x))
            values.append(log_q.double().cpu())
    posterior.train(was_training)
    log_q = torch.cat(values) if values else torch.empty(0, dtype=torch.float64)
    return log_q - store.log_proposal
