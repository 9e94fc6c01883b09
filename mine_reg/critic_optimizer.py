"""The critic's optimizer, stepped inside the backward pass that delivers its gradients.

A training loop then needs no second optimizer: ``(task_loss + reg()).backward()`` trains the
model's side, and the critic steps as soon as its last gradient has landed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.adam import adam as adam_update

from . import sync

__all__ = ["CriticOptimizer"]


def _adam(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel where this build supports it (the critic steps every call)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


_ONES: dict[torch.device, Tensor] = {}


def _one(device: torch.device) -> Tensor:
    """A float32 scalar 1 on ``device``, made once (the finite check's unscale factor; never written)."""
    one = _ONES.get(device)
    if one is None:
        one = _ONES[device] = torch.ones((), device=device)
    return one


def _all_finite(grads: list[Tensor]) -> bool:
    """Whether every gradient is finite: one fused check per dtype and device (the one GradScaler
    uses, with an unscale by exactly 1), else a norm per tensor."""
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for g in grads:
        groups.setdefault((g.device, g.dtype), []).append(g)
    try:
        found = []
        for (device, _), group in groups.items():
            found_inf = torch.zeros((), device=device)
            torch._amp_foreach_non_finite_check_and_unscale_(group, found_inf, _one(device))
            found.append(found_inf)
        return not bool(torch.stack(found).any()) if len(found) > 1 else not bool(found[0])
    except (RuntimeError, NotImplementedError):  # a device or dtype without the fused check
        return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())


class CriticOptimizer:
    """Adam on ``params``, stepped once a backward pass has given each of them a gradient.

    A post-accumulate-grad hook counts the arrivals. When the last one lands, the gradients are
    averaged over processes (:func:`mine_reg.sync.average_gradients`), Adam steps unless some
    gradient is NaN or Inf (e.g. under fp16 loss scaling), and the gradients are cleared.
    ``steps`` counts the steps taken; ``state_dict()`` holds Adam's state and ``steps``.
    """

    def __init__(self, params: list[nn.Parameter], lr: float) -> None:
        self.params = params
        self.optimizer = _adam(params, lr)
        self.steps = 0
        self._arrived = 0
        self._adam_state: tuple[list[Tensor], list[Tensor], list[Tensor]] | None = None
        for p in params:
            p.register_post_accumulate_grad_hook(self._arrive)

    def _arrive(self, param: Tensor) -> None:
        self._arrived += 1
        if self._arrived == len(self.params):
            self.step()

    def flush(self) -> None:
        """Step with the gradients that have arrived, if a backward pass reached only some of the
        parameters."""
        if self._arrived:
            self.step()

    def step(self) -> None:
        """Average the gradients over processes and step (skipped if one is NaN or Inf)."""
        self._arrived = 0
        params = [p for p in self.params if p.grad is not None]
        if not params:
            return
        sync.average_gradients(params)
        grads = [p.grad for p in params]
        if _all_finite(grads):
            self._adam_step(params, grads)
            self.steps += 1
        for p in params:  # zero_grad(set_to_none=True) without the optimizer's wrapper
            p.grad = None

    def _adam_step(self, params: list[nn.Parameter], grads: list[Tensor]) -> None:
        """``optimizer.step()``, or once Adam's state exists the same fused update called directly
        through ``torch.optim.adam.adam`` (the call ``step()`` makes), which skips ``step()``'s
        per-call bookkeeping: the critic steps at every call of the regularizer."""
        group = self.optimizer.param_groups[0]
        simple = len(self.optimizer.param_groups) == 1 and group["fused"] and not group["amsgrad"]
        if len(params) != len(self.params) or not simple:
            self.optimizer.step()
            return
        if self._adam_state is None:
            states = [self.optimizer.state.get(p) for p in params]
            if not all(states):  # the first step creates the state
                self.optimizer.step()
                return
            self._adam_state = tuple([s[k] for s in states] for k in ("exp_avg", "exp_avg_sq", "step"))
        exp_avgs, exp_avg_sqs, state_steps = self._adam_state
        beta1, beta2 = group["betas"]
        adam_update(
            params, grads, exp_avgs, exp_avg_sqs, [], state_steps,
            foreach=group["foreach"], capturable=group["capturable"], differentiable=False, fused=True,
            has_complex=False, decoupled_weight_decay=group["decoupled_weight_decay"],
            amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2, lr=group["lr"],
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
        )  # fmt: skip

    def follow_parameters(self) -> None:
        """Move Adam's state to the parameters' device, after the module holding them has moved."""
        self.optimizer.load_state_dict(self.optimizer.state_dict())
        self._adam_state = None

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "critic_steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self._adam_state = None  # loading replaces the state's tensors
        self.steps = state["critic_steps"]
