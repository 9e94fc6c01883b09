"""The estimator protocol: what every way of scoring MI hands to a trainer.

An estimator is an ``nn.Module`` with two methods:

    Estimator.build(name, x_dim, z_dim, options) -> estimator      # classmethod
    estimator.terms(x, z, generator=None, train_critic=True) -> Terms

:class:`mine_reg.estimator.MIEstimator` (a critic and a variational bound) and
:class:`mine_reg.club.CLUB` (an upper bound through a fitted q(z|x)) implement it; the registry in
:mod:`mine_reg.estimator` names every estimator and declares its properties.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .critics import ConcatCritic, SeparableCritic, Standardized

__all__ = ["Terms", "Estimator", "BuildOptions", "CriticSpec", "call_frozen"]

CriticSpec = str | nn.Module | Callable[[int, int], nn.Module]
_CRITICS: dict[str, Callable[..., nn.Module]] = {
    "concat": lambda dx, dz, o: ConcatCritic(dx, dz, o.hidden),
    "separable": lambda dx, dz, o: SeparableCritic(dx, dz, o.hidden, o.embed_dim),
}


@dataclass(frozen=True)
class Terms:
    """One scored batch, as a trainer uses it (all scalars).

    model: the trained bound (nats; a JS objective for ``"jsd"``), differentiable w.r.t. x and z:
        its gradient there is the model's signal.
    critic: what the critic's parameters descend. Its gradient w.r.t. x and z is exactly
        ``-d(model)``, so a single backward pass of ``critic`` can serve both sides: scaled by
        ``-f`` on its way into x and z, it gives the model ``f·d(model)``.
    mi: the MI read-out in nats, detached.
    metrics: detached values for logging, ``"mi"`` first, then what makes sense for this
        estimator (nats unless named otherwise).
    """

    model: Tensor
    critic: Tensor
    mi: Tensor
    metrics: dict[str, Tensor]


class Estimator(Protocol):
    """The estimator call contract (see the module docstring).

    ``terms(..., train_critic=False)`` holds the estimator fixed: no gradient reaches its
    parameters and no state of its own (MINE's moving average) advances.
    """

    @classmethod
    def build(cls, name: str, x_dim: int, z_dim: int, options: BuildOptions) -> Estimator: ...

    def terms(
        self,
        x: Tensor,
        z: Tensor,
        generator: torch.Generator | None = None,
        train_critic: bool = True,
    ) -> Terms: ...


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class BuildOptions:
    """What building an estimator needs besides the feature sizes; checked when created.

    critic: ``"concat"``, ``"separable"``, an ``nn.Module`` following the critic call contract of
        :mod:`mine_reg.critics`, or a factory ``(x_dim, z_dim) -> nn.Module``.
    hidden, embed_dim: widths of the built-in networks.
    marginals: ``"shuffle"``, ``"all"``, or None (``"all"`` for critics with ``score_matrix``).
    ema_rate: weight of the newest batch in MINE's moving average, in (0, 1].
    tau: SMILE's clipping threshold, > 0.
    standardize: wrap the critic in :class:`mine_reg.critics.Standardized` (batch-standardized
        inputs), which is what lets a critic bound be minimized.
    """

    critic: CriticSpec = "concat"
    hidden: tuple[int, ...] = (128, 128)
    embed_dim: int = 32
    marginals: Literal["shuffle", "all"] | None = None
    ema_rate: float = 0.01
    tau: float = 5.0
    standardize: bool = False

    def __post_init__(self) -> None:
        spec = self.critic
        if not (spec in _CRITICS if isinstance(spec, str) else callable(spec)):
            raise ValueError(
                f"critic must be one of {sorted(_CRITICS)}, an nn.Module or a factory (x_dim, z_dim) -> "
                f"nn.Module; got {spec!r}"
            )
        if not isinstance(self.hidden, tuple | list):
            raise ValueError(f"hidden must be a sequence of layer widths, got {self.hidden!r}")
        object.__setattr__(self, "hidden", tuple(self.hidden))
        for width in self.hidden:
            _positive_int("every hidden width", width)
        _positive_int("embed_dim", self.embed_dim)
        if self.marginals not in (None, "shuffle", "all"):
            raise ValueError(f"marginals must be 'shuffle', 'all' or None, got {self.marginals!r}")
        if not (isinstance(self.ema_rate, int | float) and 0.0 < self.ema_rate <= 1.0):
            raise ValueError(f"ema_rate must lie in (0, 1], got {self.ema_rate}")
        if not (isinstance(self.tau, int | float) and self.tau > 0):  # also rejects NaN
            raise ValueError(f"tau must be positive, got {self.tau}")
        if not isinstance(self.standardize, bool):
            raise ValueError(f"standardize must be True or False, got {self.standardize!r}")

    def make_critic(self, x_dim: int, z_dim: int) -> nn.Module:
        """The critic for x [B, x_dim] and z [B, z_dim]."""
        spec = self.critic
        if isinstance(spec, str):
            critic = _CRITICS[spec](x_dim, z_dim, self)
        else:
            critic = spec if isinstance(spec, nn.Module) else spec(x_dim, z_dim)
        return Standardized(critic) if self.standardize else critic


def call_frozen(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``module(*args, **kwargs)`` with detached copies of its parameters: no gradient reaches them,
    and they may be stepped in place before the result's backward pass runs. Buffers are the
    module's own."""
    frozen = {name: p.detach().clone() for name, p in module.named_parameters()}
    return functional_call(module, frozen, args, kwargs)
