"""MINE per unit of z, summed: a DV estimate for minimizing I(X; Z) that a batch can follow.

A lower bound minimized by a model stalls once the batch is separated: with B samples no bound
certifies more than about ln B nats, its gradient vanishes there, and an encoder holding tens of
nats shows the critic nothing to remove. One unit of z carries far less. When z's units are
conditionally independent given x (a diagonal Gaussian encoder, or any layer followed by
independent noise per unit),

    I(X; Z) = h(Z) - sum_k h(Z_k | X)  <=  sum_k h(Z_k) - sum_k h(Z_k | X)  =  sum_k I(X; Z_k),

so the sum over units is an upper bound on I(X; Z) (equal when the units are independent), and
each I(X; Z_k) sits well inside what a batch can estimate. ``"mine-per-unit"`` estimates each
term with its own DV bound and MINE's moving-average gradient (one average per unit) from one
:class:`mine_reg.critics.UnitCritic`, scoring all B² - B marginal pairs, and reports the sum in
nats. For minimizing only: the sum of lower bounds on the terms of an upper bound is itself
neither, and raising it can add redundancy between units instead of information.

    reg = MIRegularizer(model, x="input", z="z", mode="minimize", estimator="mine-per-unit",
                        extra_critic_steps=2)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .critics import UnitCritic, standardize_rows
from .moving_average import EMALogPartition
from .protocol import BuildOptions, Terms, call_frozen

__all__ = ["PerUnitMINE"]


class PerUnitMINE(nn.Module):
    """sum_k DV_k(x, z_k) with MINE's moving-average gradient per unit (nats).

    Args:
        critic: a module with ``unit_scores(x, z) -> [K, B, B]`` (:class:`UnitCritic`).
        ema_rate: weight of the newest batch in each unit's moving average of E_Q[exp T_k].
        standardize: score batch-standardized x and z (gradient through the statistics).

    ``ema`` (:class:`mine_reg.moving_average.EMALogPartition`, one average per unit) lives in
    ``state_dict``.
    """

    takes_mean_std = False

    def __init__(
        self, critic: nn.Module, z_dim: int, ema_rate: float = 0.01, standardize: bool = True
    ) -> None:
        super().__init__()
        if not hasattr(critic, "unit_scores"):
            raise ValueError(f"{type(critic).__name__} has no unit_scores(x, z); use UnitCritic")
        self.critic, self.standardize = critic, standardize
        self.ema = EMALogPartition(ema_rate, shape=(z_dim,))

    @classmethod
    def build(cls, name: str, x_dim: int, z_dim: int, options: BuildOptions) -> PerUnitMINE:
        if isinstance(options.critic, nn.Module):
            critic = options.critic
        elif callable(options.critic):
            critic = options.critic(x_dim, z_dim)
        elif options.critic == "concat":  # the default: this estimator's own critic
            critic = UnitCritic(x_dim, z_dim, options.hidden)
        else:
            raise ValueError(f"estimator={name!r} builds its own UnitCritic; pass a module with unit_scores")
        return cls(critic, z_dim, options.ema_rate, options.standardize)

    def forward(self, x: Tensor, z: Tensor, update_ema: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """(objective, parts): the objective's value is the sum over units of their DV bounds and
        its gradient MINE's corrected one, unit by unit; parts holds ``joint_mean`` and
        ``log_partition``, each summed over units (detached, nats)."""
        if self.standardize:
            x, z = standardize_rows(x), standardize_rows(z)
        b = x.shape[0]
        scores = self.critic.unit_scores(x, z)  # [K, B, B]
        joint = torch.diagonal(scores, dim1=1, dim2=2)  # [K, B]
        off_diagonal = ~torch.eye(b, dtype=torch.bool, device=scores.device)
        marginal = scores[:, off_diagonal]  # [K, B(B-1)]
        with torch.no_grad():
            log_partition = torch.logsumexp(marginal.double(), dim=1) - math.log(marginal.shape[1])
            per_unit = joint.double().mean(dim=1) - log_partition
        if torch.is_grad_enabled() and (update_ema or int(self.ema.steps) == 0):
            log_ema = self.ema.update(log_partition)
        else:
            log_ema = self.ema.log_ema.clone()
        log_ema = log_ema.to(scores.dtype)
        surrogate = joint.mean(dim=1) - torch.exp(marginal - log_ema[:, None]).mean(dim=1)
        objective = per_unit.sum().to(scores.dtype) + (surrogate - surrogate.detach()).sum()
        parts = {
            "joint_mean": joint.detach().mean(dim=1).sum(),
            "log_partition": log_partition.sum().to(scores.dtype),
        }
        return objective, parts

    def terms(
        self, x: Tensor, z: Tensor, generator: torch.Generator | None = None, train_critic: bool = True
    ) -> Terms:
        if train_critic:
            objective, parts = self(x, z)
        else:
            objective, parts = call_frozen(self, x, z, update_ema=False)
        mi = objective.detach()
        return Terms(model=objective, critic=-objective, mi=mi, metrics={"mi": mi, "objective": mi, **parts})
