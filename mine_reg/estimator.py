"""The estimator: a critic, a bound, and MINE's bias-corrected gradient.

``MIEstimator(critic, estimator="mine")`` scores a batch, returns the training objective to
ascend (with the corrected gradient for MINE) and the MI read-out in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import bounds
from .critics import Marginals, score_pairs

__all__ = ["ESTIMATORS", "MIEstimator", "MIOutput", "EMALogPartition"]

# estimator name -> (training objective, read-out bound in nats)
ESTIMATORS: dict[str, tuple[str, str]] = {
    "mine": ("dv", "dv"),
    "mine-biased": ("dv", "dv"),
    "mine-f": ("nwj", "nwj"),
    "nwj": ("nwj", "nwj"),
    "infonce": ("infonce", "infonce"),
    "smile": ("smile", "smile"),  # trained with the JS gradient, see MIEstimator.evaluate
    "jsd": ("jsd", "dv"),
}


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class EMALogPartition(nn.Module):
    """Exponential moving average of E_Q[exp T], kept in log space (MINE, Algorithm 1).

    ``update(batch_log_mean_exp)`` folds one batch in: ema <- (1 - rate)·ema + rate·batch (the
    first batch initialises it). Under torch.distributed (and ``sync=True``) the batch values are
    first averaged over processes, so every rank holds the same EMA; ``sync=False`` keeps it local,
    for estimation that runs on one rank only. Buffers ``log_ema`` and ``steps`` live in
    ``state_dict``.
    """

    def __init__(self, rate: float = 0.01, sync: bool = True) -> None:
        super().__init__()
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"ema_rate must lie in (0, 1], got {rate}")
        self.rate, self.sync = rate, sync
        self.register_buffer("log_ema", torch.zeros((), dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, batch_log_mean_exp: Tensor) -> Tensor:
        v = batch_log_mean_exp.detach().to(self.log_ema.dtype).reshape(())
        if self.sync and _is_distributed():
            world = dist.get_world_size()
            gathered = [torch.empty_like(v) for _ in range(world)]
            dist.all_gather(gathered, v.contiguous())
            v = torch.logsumexp(torch.stack(gathered), dim=0) - math.log(world)
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


@dataclass
class MIOutput:
    """What one scored batch gives.

    objective: scalar to *ascend* (critic) or to add to a model loss; carries MINE's corrected
        gradient for ``estimator="mine"``. Nats, except for ``"jsd"`` (a JS objective).
    mi: scalar MI read-out in nats (differentiable; equals ``objective`` except for ``"jsd"``).
    joint_mean: E_P[T]; log_partition: log E_Q[exp T] (detached scalar tensors, nats).
    """

    objective: Tensor
    mi: Tensor
    joint_mean: Tensor
    log_partition: Tensor


class MIEstimator(nn.Module):
    """A critic plus a bound, with MINE's moving-average gradient correction.

    Args:
        critic: any module following :mod:`mine_reg.critics`' call contract.
        estimator: one of ``ESTIMATORS``: ``"mine"`` (DV bound, bias-corrected gradient),
            ``"mine-biased"`` (DV, plain minibatch gradient), ``"mine-f"``/``"nwj"``,
            ``"infonce"``, ``"smile"`` (clipped-DV value, JS gradient), ``"jsd"`` (trained with
            the JS objective, read out with DV).
        marginals: how marginal pairs are formed (see :func:`mine_reg.critics.score_pairs`).
        ema_rate: weight of the newest batch in the moving average of E_Q[exp T] (``"mine"``).
        tau: SMILE's clipping threshold.
        sync_ema: average MINE's moving average across processes under torch.distributed.
    """

    def __init__(
        self,
        critic: nn.Module,
        estimator: str = "mine",
        marginals: Marginals = "shuffle",
        ema_rate: float = 0.01,
        tau: float = 5.0,
        sync_ema: bool = True,
    ) -> None:
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose from {sorted(ESTIMATORS)}")
        if marginals not in ("shuffle", "all", "given"):
            raise ValueError(f"unknown marginals {marginals!r}; choose from 'shuffle', 'all', 'given'")
        self.critic = critic
        self.estimator = estimator
        self.marginals: Marginals = marginals
        self.tau = tau
        self.ema = EMALogPartition(ema_rate, sync=sync_ema)

    def scores(
        self, x: Tensor, z: Tensor, z_marginal: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        return score_pairs(self.critic, x, z, self.marginals, z_marginal, generator)

    def bound(self, name: str, joint: Tensor, marginal: Tensor) -> Tensor:
        if name == "smile":
            return bounds.smile(joint, marginal, self.tau)
        return bounds.BOUNDS[name](joint, marginal)

    def corrected_dv(self, joint: Tensor, marginal: Tensor, update_ema: bool = True) -> Tensor:
        """DV value whose gradient is E_P[dT] - E_Q[dT · exp T] / EMA(E_Q[exp T]).

        Updates the EMA with this batch first (only when gradients are on), so the exponent
        T - log EMA stays below log(numel / rate) and cannot overflow. With ``update_ema=False``
        the stored EMA is used as it is (it is still initialised on the very first batch).
        """
        value = bounds.dv(joint, marginal)
        if not torch.is_grad_enabled():
            return value
        joint, marginal = bounds.upcast(joint), bounds.upcast(marginal)
        if update_ema or int(self.ema.steps) == 0:
            log_ema = self.ema.update(bounds.log_mean_exp(marginal))
        else:
            log_ema = self.ema.log_ema.clone()
        log_ema = log_ema.to(marginal.dtype)
        surrogate = joint.mean() - torch.exp(marginal - log_ema).mean()
        return value.detach() + surrogate - surrogate.detach()

    def forward(
        self,
        x: Tensor,
        z: Tensor,
        z_marginal: Tensor | None = None,
        generator: torch.Generator | None = None,
        update_ema: bool = True,
    ) -> MIOutput:
        joint, marginal = self.scores(x, z, z_marginal, generator)
        return self.evaluate(joint, marginal, update_ema)

    def evaluate(self, joint: Tensor, marginal: Tensor, update_ema: bool = True) -> MIOutput:
        """Objective and read-out from already computed scores (``update_ema``: fold this batch
        into MINE's moving average)."""
        train_name, readout_name = ESTIMATORS[self.estimator]
        if self.estimator == "mine":
            objective = self.corrected_dv(joint, marginal, update_ema)
        elif self.estimator == "smile":
            # the clipped DV value with the JS objective's gradient (Song and Ermon 2020): ascending
            # the clipped bound itself is unbounded once scores pass tau
            value, js = self.bound("smile", joint, marginal), bounds.jsd(joint, marginal)
            objective = value.detach() + js - js.detach()
        else:
            objective = self.bound(train_name, joint, marginal)
        mi = objective if train_name == readout_name else self.bound(readout_name, joint, marginal)
        return MIOutput(
            objective=objective,
            mi=mi,
            joint_mean=joint.detach().float().mean(),
            log_partition=bounds.log_mean_exp(marginal.detach()),
        )
