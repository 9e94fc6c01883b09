"""Variational bounds on mutual information, as pure functions of critic scores.

Every bound takes the same two tensors:

- ``joint``: shape ``[B]``, critic scores T(x_i, z_i) of samples from the joint P_XZ;
- ``marginal``: shape ``[B, K]``, critic scores of K samples from the product of marginals
  P_X ⊗ P_Z; row i pairs x_i with K other z's (K = 1 for a shuffled batch, K = B - 1 when all
  off-diagonal pairs of a batch are scored). Only :func:`infonce` needs the rows to line up
  with ``joint``; the other bounds accept marginal scores of any shape (pooled samples).

They return a scalar tensor in nats. All arithmetic runs in float32 or wider (fp16 / bf16 scores
are upcast first) and the log-partition terms go through ``logsumexp`` with an explicit
``- log N`` term, so scores of magnitude 1e4 neither overflow nor lose precision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

__all__ = ["dv", "nwj", "infonce", "smile", "jsd", "log_mean_exp", "upcast", "BOUNDS"]


def upcast(t: Tensor) -> Tensor:
    """fp16 / bf16 -> float32; float32 and wider unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _check(joint: Tensor, marginal: Tensor, rows: bool = False) -> tuple[Tensor, Tensor]:
    if joint.ndim != 1 or joint.numel() == 0:
        raise ValueError(f"joint scores must have shape [B] with B >= 1, got {tuple(joint.shape)}")
    if marginal.numel() == 0:
        raise ValueError("no marginal scores were given")
    if not rows:
        return upcast(joint), upcast(marginal)
    if marginal.ndim == 1:
        marginal = rearrange(marginal, "b -> b 1")
    if marginal.ndim != 2 or marginal.shape[0] != joint.shape[0]:
        raise ValueError(
            f"marginal scores must have shape [B, K] with B = {joint.shape[0]}, got {tuple(marginal.shape)}"
        )
    return upcast(joint), upcast(marginal)


def log_mean_exp(scores: Tensor) -> Tensor:
    """log(mean(exp(scores))) over all elements, computed stably (float32 or wider)."""
    scores = rearrange(upcast(scores), "... -> (...)")
    return torch.logsumexp(scores, dim=0) - math.log(scores.numel())


def dv(joint: Tensor, marginal: Tensor) -> Tensor:
    """Donsker-Varadhan bound (the MINE bound): E_P[T] - log E_Q[exp T], in nats.

    Tightest of the bounds here for a given critic, but its minibatch gradient is biased
    (see :class:`mine_reg.MIEstimator` for the moving-average correction).
    """
    joint, marginal = _check(joint, marginal)
    return joint.mean() - log_mean_exp(marginal)


def nwj(joint: Tensor, marginal: Tensor) -> Tensor:
    """NWJ / MINE-f bound: E_P[T] - E_Q[exp(T - 1)], in nats.

    Never above :func:`dv` for the same scores; its minibatch gradient is unbiased.
    """
    joint, marginal = _check(joint, marginal)
    return joint.mean() - torch.exp(log_mean_exp(marginal) - 1.0)


def infonce(joint: Tensor, marginal: Tensor) -> Tensor:
    """InfoNCE bound, in nats: mean_i [T_ii - log((exp T_ii + sum_k exp T_ik) / (K + 1))].

    Low variance, but it can never exceed ``log(K + 1)`` (``log B`` when all pairs of a batch
    are scored; ``log 2`` for a shuffled batch with K = 1), whatever the true MI.
    """
    joint, marginal = _check(joint, marginal, rows=True)
    k = marginal.shape[1]
    rows = torch.cat([rearrange(joint, "b -> b 1"), marginal], dim=1)
    return (joint - torch.logsumexp(rows, dim=1)).mean() + math.log(k + 1)


def smile(joint: Tensor, marginal: Tensor, tau: float = 5.0) -> Tensor:
    """SMILE (Song and Ermon, 2020): DV with the log-partition computed on scores clipped to
    [-tau, tau], in nats. Smaller tau trades bias for lower variance; tau -> inf gives DV."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    joint, marginal = _check(joint, marginal)
    return joint.mean() - log_mean_exp(marginal.clamp(-tau, tau))


def jsd(joint: Tensor, marginal: Tensor) -> Tensor:
    """Jensen-Shannon objective of Deep InfoMax: E_P[-softplus(-T)] - E_Q[softplus(T)].

    This is a training objective, not an MI value: it equals 2·JSD(P||Q) - 2·log 2 at the
    optimum. Train a critic with it and read the MI out with :func:`dv`.
    """
    joint, marginal = _check(joint, marginal)
    return -F.softplus(-joint).mean() - F.softplus(marginal).mean()


BOUNDS = {"dv": dv, "nwj": nwj, "infonce": infonce, "smile": smile, "jsd": jsd}
