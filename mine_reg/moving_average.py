"""MINE's moving average of E_Q[exp T] (Algorithm 1), kept in log space and in sync across
processes; the bias-corrected DV gradient divides by it instead of the minibatch mean."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import sync

__all__ = ["EMALogPartition", "corrected_dv", "corrected_dv_backward", "marginal_weights"]


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for Python floats, stably (infinities and NaN as in torch.logaddexp)."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if a == b:  # also a == b == ±inf
        return a + math.log(2.0)
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


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

    def fold(self, batch_log_mean_exp: float, log_ema: float, steps: int) -> float:
        """:meth:`update` for a scalar average whose state the caller has already read as Python
        numbers (``log_ema``, ``steps``, with the batch value in one transfer): the same recursion,
        the buffers written in place; returns the new log average."""
        if self.log_ema.dim() != 0:
            raise ValueError(f"fold updates a scalar average; this one has shape {tuple(self.log_ema.shape)}")
        if self.sync and sync.world_size() > 1:
            batch = torch.tensor(batch_log_mean_exp, dtype=torch.float64, device=self.log_ema.device)
            batch_log_mean_exp = float(sync.log_mean_exp(batch))
        if steps == 0 or self.rate == 1.0:
            new = batch_log_mean_exp
        else:
            new = _logaddexp(log_ema + math.log1p(-self.rate), batch_log_mean_exp + math.log(self.rate))
        self.log_ema.fill_(new)
        self.steps.add_(1)
        return new

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


def marginal_weights(marginal: Tensor, log_ema: float) -> Tensor:
    """-d value / d marginal of the corrected DV: exp(marginal_j - log_ema) / numel, shaped like
    ``marginal``; fixed when the value is computed, since the average may move again (another
    call, gradient accumulation) before the backward pass runs."""
    return torch.exp(marginal - log_ema).div_(marginal.numel())


def corrected_dv_backward(grad: Tensor, joint_shape: torch.Size, weights: Tensor) -> tuple[Tensor, Tensor]:
    """(d/d joint, d/d marginal) of the corrected DV for an incoming gradient ``grad`` (a scalar
    tensor) and the :func:`marginal_weights` of its forward pass."""
    return (grad / joint_shape.numel()).expand(joint_shape), weights * -grad


class _CorrectedDV(torch.autograd.Function):
    """The DV value with MINE's corrected gradient, as one autograd node (see :func:`corrected_dv`)."""

    @staticmethod
    def forward(ctx: Any, joint: Tensor, marginal: Tensor, value: float, log_ema: float) -> Tensor:
        ctx.marginal_weights = marginal_weights(marginal, log_ema)
        ctx.joint_shape = joint.shape
        return joint.new_tensor(value)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        return (*corrected_dv_backward(grad, ctx.joint_shape, ctx.marginal_weights), None, None)


def corrected_dv(joint: Tensor, marginal: Tensor, value: float, log_ema: float) -> Tensor:
    """``value`` (the DV bound of these scores, nats, as a tensor of the scores' dtype) with MINE's
    bias-corrected gradient E_P[dT] - E_Q[dT · exp T] / EMA(E_Q[exp T]), ``log_ema`` being
    log EMA(E_Q[exp T]): d/d joint_i = 1/B and d/d marginal_j = -exp(marginal_j - log_ema) / numel."""
    return _CorrectedDV.apply(joint, marginal, value, log_ema)
