r"""Online running normalisation.

A :class:`RunningNorm` maps :math:`v \in \mathbb{R}^d` to :math:`z = (v - \mu) / \sigma`
with statistics tracked on training batches only (the module updates itself when
``update`` is called in training mode). With momentum :math:`\alpha_t`, a batch with
mean :math:`\bar v` and variance :math:`s^2` updates

.. math::

    \mu \leftarrow \mu + \alpha_t (\bar v - \mu), \qquad
    \sigma^2 \leftarrow \sigma^2 + \alpha_t (s^2 - \sigma^2)

or, with ``use_log_update``, :math:`\log \sigma^2 \leftarrow \log \sigma^2 +
\alpha_t (\log s^2 - \log \sigma^2)` (a geometric average that reacts evenly to
shrinking and growing spreads). ``adaptive_momentum`` uses
:math:`\alpha_t = \max(\alpha, 1 / t)`, the running average of the first
:math:`1/\alpha` batches. The first batch sets the statistics. The density of
:math:`v` follows from that of :math:`z` by :math:`\log p(v) = \log p(z) - \sum_i \log \sigma_i`.
"""

import torch
from torch import nn

__all__ = ["RunningNorm"]

# Below this variance a feature counts as constant and is only centred.
_CONSTANT_VARIANCE = 1e-12


class RunningNorm(nn.Module):
    r"""Online normalisation :math:`z = (v - \mu) / \sigma` of ``features`` columns.

    Parameters
    ----------
    features : int
        Number of columns of :math:`v`.
    momentum : float
        Weight :math:`\alpha` of each new batch.
    adaptive_momentum : bool
        Use :math:`\max(\alpha, 1/t)` at update :math:`t`.
    use_log_update : bool
        Average variances geometrically rather than arithmetically.

    Notes
    -----
    Exported as ``skfalcon.RunningNorm`` for embedding modules of your own: put it in front
    of the layers that need normalised inputs. Inputs ``(..., features)`` are normalised
    over the last axis, with statistics pooled over all other axes; they update only in
    training mode, so on training rows and never on validation rows. A feature whose
    variance is below ``1e-12`` is only centred, never divided by a vanishing scale.

    Examples
    --------
    >>> import torch
    >>> from skfalcon import RunningNorm
    >>> norm = RunningNorm(3)
    >>> z = norm(torch.randn(64, 3) * 5 + 2)  # training mode: updates the statistics
    >>> norm.eval()(torch.zeros(1, 3)).shape
    torch.Size([1, 3])
    """

    def __init__(
        self,
        features: int,
        momentum: float = 0.01,
        adaptive_momentum: bool = False,
        use_log_update: bool = False,
    ):
        super().__init__()
        self.momentum = float(momentum)
        self.adaptive_momentum = bool(adaptive_momentum)
        self.use_log_update = bool(use_log_update)
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("var", torch.ones(features))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, v: torch.Tensor) -> None:
        """Fold the statistics of a batch ``v`` of shape ``(n, features)`` in."""
        v = v.reshape(-1, v.shape[-1]).to(self.mean.dtype)
        batch_mean = v.mean(dim=0)
        batch_var = v.var(dim=0, unbiased=False) if v.shape[0] > 1 else torch.zeros_like(batch_mean)
        batch_var = batch_var.clamp_min(_CONSTANT_VARIANCE)
        # Weight 1 on the first update; kept on device so no host sync per step.
        t = (self.n_updates + 1).to(self.mean.dtype)
        alpha = torch.full_like(t, self.momentum)
        if self.adaptive_momentum:
            alpha = torch.maximum(alpha, 1.0 / t)
        alpha = torch.where(self.n_updates == 0, torch.ones_like(alpha), alpha)
        self.mean.add_(alpha * (batch_mean - self.mean))
        if self.use_log_update:
            log_var = self.var.clamp_min(_CONSTANT_VARIANCE).log()
            self.var.copy_((log_var + alpha * (batch_var.log() - log_var)).exp())
        else:
            self.var.add_(alpha * (batch_var - self.var))
        self.n_updates.add_(1)

    def scale(self) -> torch.Tensor:
        """Standard deviations, 1 for constant features (which are only centred)."""
        return torch.where(
            self.var > _CONSTANT_VARIANCE, self.var.sqrt(), torch.ones_like(self.var)
        )

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.update(v)
        return (v - self.mean.to(v.dtype)) / self.scale().to(v.dtype)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scale().to(z.dtype) + self.mean.to(z.dtype)

    def log_abs_det_jacobian(self) -> torch.Tensor:
        r""":math:`\log |\partial z / \partial v| = -\sum_i \log \sigma_i`."""
        return -self.scale().log().sum()

    def extra_repr(self) -> str:
        return (
            f"features={self.mean.numel()}, momentum={self.momentum}, "
            f"adaptive_momentum={self.adaptive_momentum}, use_log_update={self.use_log_update}"
        )
