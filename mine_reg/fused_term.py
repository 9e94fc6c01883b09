"""The regularizer's default MINE term as ONE autograd node: standardization, the concat critic's
shuffled-pair scores, the DV bound with MINE's corrected gradient, and the two sides' gradients.

Recorded piece by piece, :class:`mine_reg.MIRegularizer`'s term for ``estimator="mine"`` with the
default (standardized, ReLU, concat) critic is a chain of nine autograd nodes: a gradient scale on
z, two batch norms, the critic's MLP (:mod:`mine_reg.fused_mlp`), two slices, MINE's corrected DV
(:mod:`mine_reg.moving_average`), and the negation, subtraction and addition that give the critic
and the model their opposite signs. At the batch sizes a regularizer sees, each node's dispatch
costs more than its arithmetic. Here they are one node with the same operators in the same order,
so the value and every gradient equal the chain's bit for bit (tested):

- value: ``value_factor · DV`` (``sign · beta · I`` in nats);
- critic parameters: the gradient of ``-DV``, with the moving average in the marginal weights;
- x and z: the gradient of ``-DV`` times ``grad_scale[0]``, read at backward time (the regularizer
  sets it to ``-sign · beta``, so the model receives ``sign · beta · d DV``).

Used only where it applies (:func:`fused_parameters`): MINE's moving-average estimator with
shuffled marginals, a :class:`mine_reg.critics.ConcatCritic` of Linear and ReLU layers (optionally
inside :class:`mine_reg.critics.Standardized`), gradients on, outside autocast. Not twice
differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .critics import STANDARDIZE_EPS, ConcatCritic, Standardized, cyclic_derangement_rows
from .estimator import MIEstimator
from .fused_mlp import relu_mlp_backward, relu_mlp_forward, relu_mlp_parameters
from .moving_average import corrected_dv_backward, marginal_weights

__all__ = ["FusedTerm", "fused_parameters", "fused_mine_term"]


@dataclass
class FusedTerm:
    """What the node needs beyond tensors, and what it reports.

    estimator: the :class:`mine_reg.MIEstimator` whose moving average and finite check apply.
    standardize: batch-standardize x and z first (as :class:`mine_reg.critics.Standardized`).
    value_factor: the term's value is ``value_factor`` times the DV bound.
    grad_scale: ``[s]``; x and z receive ``s`` times the gradient of ``-DV`` (read at backward).
    metrics: filled by the forward pass: mi, objective, joint_mean, log_partition (nats; the first
        two a detached scalar tensor, the others floats rounded to the scores' dtype).
    """

    estimator: MIEstimator
    standardize: bool
    value_factor: float
    grad_scale: list[float]
    metrics: dict[str, Tensor | float] = field(default_factory=dict)


def fused_parameters(estimator: MIEstimator) -> tuple[list[Tensor], bool] | None:
    """(the critic MLP's weights and biases, whether it standardizes) if the one-node term applies
    to ``estimator`` (MINE's corrected DV, shuffled marginals, a ReLU concat critic, plain or
    standardized), else None."""
    critic = estimator.critic
    standardize = type(critic) is Standardized
    inner = critic.critic if standardize else critic
    if not (
        estimator.spec.moving_average and estimator.marginals == "shuffle" and type(inner) is ConcatCritic
    ):
        return None
    params = relu_mlp_parameters(inner.net)
    return None if params is None else (params, standardize)


def _standardize(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(standardized t, batch mean, inverse std) exactly as :func:`mine_reg.critics.standardize_rows`."""
    return torch.native_batch_norm(t, None, None, None, None, True, 0.0, STANDARDIZE_EPS**2)


def _unstandardize_grad(grad: Tensor, t: Tensor, mean: Tensor, invstd: Tensor) -> Tensor:
    return torch.ops.aten.native_batch_norm_backward(
        grad, t, None, None, None, mean, invstd, True, STANDARDIZE_EPS**2, [True, False, False]
    )[0]


def _in_dtype(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to ``dtype`` (float32 or float64), as ``new_tensor(value)`` would hold it."""
    return float(np.float32(value)) if dtype == torch.float32 else value


class _FusedMineTerm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, z: Tensor, rows: Tensor, plan: FusedTerm, *params: Tensor) -> Tensor:
        b = x.shape[0]
        xs, zs, stats = x, z, ()
        if plan.standardize:
            xs, x_mean, x_invstd = _standardize(x)
            zs, z_mean, z_invstd = _standardize(z)
            stats = (x_mean, x_invstd, z_mean, z_invstd)
        index, inverse = rows[b : 2 * b], rows[2 * b :]
        scores, acts = relu_mlp_forward(params, xs, zs, index, rows[: 2 * b])
        flat = scores.view(-1)
        joint, marginal = flat[:b], flat[b:]
        value, j_mean, log_partition, log_ema = plan.estimator.dv_head(joint, marginal, correct=True)
        ctx.marginal_weights = marginal_weights(marginal, log_ema)
        ctx.save_for_backward(x, z, xs, zs, index, inverse, params[0], *params[2::2], *stats, *acts)
        ctx.layers, ctx.plan = len(params) // 2 - 1, plan
        dv = flat.new_tensor(value)
        # the general path's MIOutput.metrics(), without the tensors it would make for two floats
        plan.metrics = {
            "mi": dv,
            "objective": dv,
            "joint_mean": _in_dtype(j_mean, flat.dtype),
            "log_partition": _in_dtype(log_partition, flat.dtype),
        }
        return dv * plan.value_factor

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, z, xs, zs, index, inverse, first_w, *rest = ctx.saved_tensors
        layers, plan = ctx.layers, ctx.plan
        weights, rest = rest[:layers], rest[layers:]
        stats, acts = (rest[:4], rest[4:]) if plan.standardize else ((), rest)
        needs = ctx.needs_input_grad
        joint_shape = x.shape[:1]
        # the critic descends -DV
        d = torch.cat(corrected_dv_backward(-grad, joint_shape, ctx.marginal_weights)).unsqueeze(1)
        grad_xs, grad_zs, param_grads = relu_mlp_backward(
            d, xs, zs, index, first_w, weights, acts, needs[0], needs[1], any(needs[4:]), inverse
        )
        grad_x, grad_z = grad_xs, grad_zs
        if plan.standardize:
            x_mean, x_invstd, z_mean, z_invstd = stats
            grad_x = None if grad_xs is None else _unstandardize_grad(grad_xs, x, x_mean, x_invstd)
            grad_z = None if grad_zs is None else _unstandardize_grad(grad_zs, z, z_mean, z_invstd)
        scale = plan.grad_scale[0]
        grad_x = None if grad_x is None else grad_x * scale
        grad_z = None if grad_z is None else grad_z * scale
        return (grad_x, grad_z, None, None, *(param_grads or [None] * (2 + 2 * layers)))


def fused_mine_term(
    plan: FusedTerm, params: list[Tensor], x: Tensor, z: Tensor, generator: torch.Generator | None
) -> Tensor:
    """The scalar term ``plan.value_factor · DV`` for x [B, dx] and z [B, dz], its shuffled pairs
    drawn from ``generator`` as :func:`mine_reg.critics.score_pairs` draws them; gradients as the
    module docstring says. Fills ``plan.metrics``."""
    rows = cyclic_derangement_rows(x.shape[0], z.device, generator)
    return _FusedMineTerm.apply(x, z, rows, plan, *params)
