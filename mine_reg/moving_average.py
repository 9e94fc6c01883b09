"""MINE's moving average of E_Q[exp T] (Algorithm 1), kept in log space and in sync across
processes; the bias-corrected DV gradient divides by it instead of the minibatch mean."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import sync

__all__ = ["EMALogPartition"]


class EMALogPartition(nn.Module):
    """Exponential moving average of E_Q[exp T], kept in log space (MINE, Algorithm 1).

    ``update(batch_log_mean_exp)`` folds one batch in: ema <- (1 - rate)·ema + rate·batch (the
    first batch initialises it). Under torch.distributed (and ``sync=True``) the batch values are
    first averaged over processes (:func:`mine_reg.sync.log_mean_exp`), so every rank holds the
    same EMA; ``sync=False`` keeps it local, for estimation that runs on one rank only. ``shape``
    holds one average per entry (``()``: one scalar; ``(K,)``: one per unit of z, all updated
    together). Buffers ``log_ema`` (float64, ``shape``) and ``steps`` live in ``state_dict``.
    """

    def __init__(self, rate: float = 0.01, sync: bool = True, shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"ema_rate must lie in (0, 1], got {rate}")
        self.rate, self.sync = rate, sync
        self.register_buffer("log_ema", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, batch_log_mean_exp: Tensor) -> Tensor:
        v = batch_log_mean_exp.detach().to(self.log_ema.dtype).reshape(self.log_ema.shape)
        if self.sync:
            v = sync.log_mean_exp(v)
        if self.steps.item() == 0:
            self.log_ema.copy_(v)
        else:
            self.log_ema.copy_(
                torch.logaddexp(self.log_ema + math.log1p(-self.rate), v + math.log(self.rate))
                if self.rate < 1.0
                else v
            )
        self.steps += 1
        return self.log_ema.clone()
