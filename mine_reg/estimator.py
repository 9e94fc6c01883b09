"""The estimator registry, and MIEstimator: a critic, a bound, and MINE's bias-corrected gradient.

``REGISTRY`` is the one place where estimators are named and their properties declared; every
rule about them (which names :class:`MIEstimator` takes, that an upper bound cannot be
maximized, ...) is derived from it. ``MIEstimator(critic, estimator="mine")`` scores a batch,
returns the training objective to ascend (with the corrected gradient for MINE) and the MI
read-out in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor, nn

from . import bounds
from .club import CLUB
from .critics import Marginals, score_pairs
from .exact import ExactConditional
from .moving_average import EMALogPartition, corrected_dv
from .per_unit import PerUnitMINE
from .protocol import BuildOptions, Terms, call_frozen

__all__ = [
    "REGISTRY",
    "ESTIMATORS",
    "EstimatorSpec",
    "lookup",
    "MIEstimator",
    "MIOutput",
    "EMALogPartition",
    "NonFiniteScores",
]


class EstimatorSpec(NamedTuple):
    """One registry entry. ``spec[0]`` / ``spec[1]`` are the trained and the read-out bound.

    objective: the bound the critic ascends (a name in :data:`mine_reg.bounds.BOUNDS`; for CLUB,
        q's log-likelihood).
    readout: the bound the MI is read from, in nats.
    family: the class that implements it (:class:`MIEstimator`, :class:`CLUB`, or
        :class:`mine_reg.exact.ExactConditional`, which takes z as the encoder's (mean, std)).
    gradient: train with this bound's gradient while reporting the objective's value (SMILE).
    moving_average: the DV objective with MINE's moving-average gradient correction.
    upper_bound: an upper bound on MI (or an estimate of one), so it may be minimized only.
    gathers, clips: works with ``gather_marginals`` / ``adaptive_clip`` in :class:`MIRegularizer`.
    """

    objective: str
    readout: str
    family: type[nn.Module]
    gradient: str | None = None
    moving_average: bool = False
    upper_bound: bool = False
    gathers: bool = True
    clips: bool = True

    def check_use(self, name: str, mode: str, gather_marginals: bool, adaptive_clip: bool) -> None:
        """ValueError if ``name`` cannot be used this way by :class:`mine_reg.MIRegularizer`."""
        if self.upper_bound and mode != "minimize":
            lower = sorted(n for n, s in REGISTRY.items() if not s.upper_bound)
            raise ValueError(
                f"estimator={name!r} is an upper bound, for mode='minimize' only; to maximize, use a "
                f"lower bound: one of {lower}"
            )
        for wanted, supported, option in [
            (gather_marginals, self.gathers, "gather_marginals"),
            (adaptive_clip, self.clips, "adaptive_clip"),
        ]:
            if wanted and not supported:
                raise ValueError(f"estimator={name!r} does not support {option}=True")


def lookup(name: str, family: type[nn.Module] | None = None) -> EstimatorSpec:
    """The registry entry called ``name`` (of ``family`` only, if given); ValueError naming the
    choices otherwise."""
    spec = REGISTRY.get(name) if isinstance(name, str) else None
    if spec is not None and family is not None and spec.family is not family:
        raise ValueError(f"estimator {name!r} is built by {spec.family.__name__}, not {family.__name__}")
    if spec is None:
        names = sorted(n for n, s in REGISTRY.items() if family is None or s.family is family)
        raise ValueError(f"unknown estimator {name!r}; choose from {names}")
    return spec


@dataclass
class MIOutput:
    """What one scored batch gives an :class:`MIEstimator`.

    objective: scalar to *ascend* (critic) or to add to a model loss; carries MINE's corrected
        gradient for ``estimator="mine"``. Nats, except for ``"jsd"`` (a JS objective).
    mi: scalar MI read-out in nats (differentiable; equals ``objective`` except for ``"jsd"``).
    joint_mean: E_P[T]; log_partition: log E_Q[exp T] (detached scalar tensors, nats).
    """

    objective: Tensor
    mi: Tensor
    joint_mean: Tensor
    log_partition: Tensor

    def metrics(self) -> dict[str, Tensor]:
        """The four values, detached, for logging."""
        return {
            "mi": self.mi.detach(),
            "objective": self.objective.detach(),
            "joint_mean": self.joint_mean,
            "log_partition": self.log_partition,
        }


class NonFiniteScores(ValueError):
    """A batch whose critic scores hold NaN or Inf (raised only with ``refuse_nonfinite``)."""


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

    ``name`` is the estimator's name and ``spec`` its registry entry.
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
        self.spec = lookup(estimator, MIEstimator)
        if marginals not in ("shuffle", "all", "given"):
            raise ValueError(f"unknown marginals {marginals!r}; choose from 'shuffle', 'all', 'given'")
        self.critic = critic
        self.name = estimator
        self.marginals: Marginals = marginals
        self.tau = tau
        self._bounds = {**bounds.BOUNDS, "smile": partial(bounds.smile, tau=tau)}
        self.ema = EMALogPartition(ema_rate, sync=sync_ema)
        # True: a batch whose statistics are not finite raises NonFiniteScores before the moving
        # average sees it, instead of giving a non-finite value (estimate_mi wants the value)
        self.refuse_nonfinite = False

    @property
    def estimator(self) -> str:
        """The estimator's name (the same as ``name``)."""
        return self.name

    @classmethod
    def build(cls, name: str, x_dim: int, z_dim: int, options: BuildOptions) -> MIEstimator:
        """The estimator ``name`` with the critic that ``options`` describe."""
        critic = options.make_critic(x_dim, z_dim)
        marginals = options.marginals or ("all" if hasattr(critic, "score_matrix") else "shuffle")
        return cls(critic, name, marginals, options.ema_rate, options.tau)

    def scores(
        self, x: Tensor, z: Tensor, z_marginal: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        return score_pairs(self.critic, x, z, self.marginals, z_marginal, generator)

    def bound(self, name: str, joint: Tensor, marginal: Tensor) -> Tensor:
        """The bound ``name`` (see :data:`mine_reg.bounds.BOUNDS`; SMILE with this ``tau``), nats."""
        return self._bounds[name](joint, marginal)

    def corrected_dv(self, joint: Tensor, marginal: Tensor, update_ema: bool = True) -> tuple[Tensor, Tensor]:
        """DV value whose gradient is E_P[dT] - E_Q[dT · exp T] / EMA(E_Q[exp T]), and this batch's
        log E_Q[exp T] (detached, nats).

        Updates the EMA with this batch first (only when gradients are on), so the exponent
        T - log EMA stays below log(numel / rate) and cannot overflow. With ``update_ema=False``
        the stored EMA is used as it is (it is still initialised on the very first batch). The
        log-partition is computed once, in float64, for the value, the EMA and the read-out, and
        read back with the EMA's state in one transfer.
        """
        return self._corrected_dv_parts(joint, marginal, update_ema)[:2]

    def _corrected_dv_parts(
        self, joint: Tensor, marginal: Tensor, update_ema: bool = True
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`corrected_dv`'s two tensors, then the mean joint score (computed in float64 by
        :meth:`dv_head`, in the scores' dtype, detached)."""
        joint, marginal = bounds.check_scores(joint, marginal)
        value, j_mean, log_partition, log_ema = self.dv_head(joint, marginal, update_ema)
        objective = (
            joint.new_tensor(value) if log_ema is None else corrected_dv(joint, marginal, value, log_ema)
        )
        return objective, marginal.new_tensor(log_partition), joint.new_tensor(j_mean)

    def dv_head(
        self, joint: Tensor, marginal: Tensor, update_ema: bool = True, correct: bool | None = None
    ) -> tuple[float, float, float, float | None]:
        """(DV value, mean joint score, this batch's log E_Q[exp T], the log moving average the
        corrected gradient divides by) as Python floats in nats, from scores of one dtype; the last
        is None when gradients are off, or ``correct`` is False (nothing to correct, and the
        average is left alone); ``correct=None`` asks torch whether gradients are on.
        NonFiniteScores with ``refuse_nonfinite``. See :meth:`corrected_dv`."""
        j_mean, log_partition, log_ema, steps = bounds.dv_statistics(
            joint, marginal, self.ema.log_ema, self.ema.steps
        )
        if self.refuse_nonfinite and not (math.isfinite(j_mean) and math.isfinite(log_partition)):
            raise NonFiniteScores(
                f"the critic's scores are not finite (joint mean {j_mean}, log mean exp of the "
                f"marginal scores {log_partition})"
            )
        value = bounds.saturate(j_mean - log_partition, joint.dtype)
        if not (torch.is_grad_enabled() if correct is None else correct):
            return value, j_mean, log_partition, None
        if update_ema or steps == 0:
            log_ema = self.ema.fold(log_partition, log_ema, int(steps))
        return value, j_mean, log_partition, log_ema

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
        spec = self.spec
        if spec.moving_average:
            objective, log_partition, joint_mean = self._corrected_dv_parts(joint, marginal, update_ema)
        else:
            log_partition = bounds.log_mean_exp(marginal.detach())
            objective = self.bound(spec.objective, joint, marginal)
            joint_mean = joint.detach().float().mean()
        if spec.gradient is not None:
            # e.g. SMILE: the clipped DV value with the JS objective's gradient (Song and Ermon 2020),
            # since ascending the clipped bound itself is unbounded once scores pass tau
            surrogate = self.bound(spec.gradient, joint, marginal)
            objective = objective.detach() + surrogate - surrogate.detach()
        mi = objective if spec.readout == spec.objective else self.bound(spec.readout, joint, marginal)
        return MIOutput(
            objective=objective,
            mi=mi,
            joint_mean=joint_mean,
            log_partition=log_partition,
        )

    def terms(
        self, x: Tensor, z: Tensor, generator: torch.Generator | None = None, train_critic: bool = True
    ) -> Terms:
        """The estimator protocol (:mod:`mine_reg.protocol`): the model follows the objective, the
        critic ascends it. ``train_critic=False`` scores with the critic's weights detached and
        MINE's moving average as it is."""
        if train_critic:
            out = self(x, z, generator=generator)
        else:
            out = call_frozen(self, x, z, generator=generator, update_ema=False)
        return Terms(model=out.objective, critic=-out.objective, mi=out.mi.detach(), metrics=out.metrics())


REGISTRY: dict[str, EstimatorSpec] = {
    "mine": EstimatorSpec("dv", "dv", MIEstimator, moving_average=True),
    "mine-biased": EstimatorSpec("dv", "dv", MIEstimator),
    "mine-f": EstimatorSpec("nwj", "nwj", MIEstimator),
    "nwj": EstimatorSpec("nwj", "nwj", MIEstimator),
    "infonce": EstimatorSpec("infonce", "infonce", MIEstimator),
    "smile": EstimatorSpec("smile", "smile", MIEstimator, gradient="jsd"),
    "jsd": EstimatorSpec("jsd", "dv", MIEstimator),
    "club": EstimatorSpec("log_likelihood", "club", CLUB, upper_bound=True, gathers=False, clips=False),
    "l1out": EstimatorSpec("l1out", "l1out", ExactConditional, upper_bound=True, gathers=False, clips=False),
    "mine-per-unit": EstimatorSpec(
        "dv", "dv", PerUnitMINE, moving_average=True, upper_bound=True, gathers=False, clips=True
    ),
    "club-exact": EstimatorSpec(
        "club-exact", "club-exact", ExactConditional, upper_bound=True, gathers=False, clips=False
    ),
}
"""Every estimator by name. Read-outs are in nats; ``objective`` is what the critic ascends."""

ESTIMATORS: dict[str, EstimatorSpec] = {n: s for n, s in REGISTRY.items() if s.family is MIEstimator}
"""The names :class:`MIEstimator` (and :func:`mine_reg.estimate_mi`) take."""
