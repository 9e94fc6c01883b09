"""The concat critic's shuffled-pair scores as one autograd node, with a hand-written backward.

:class:`mine_reg.critics.ConcatCritic` with ReLU activations scores the joint pairs (x_i, z_i)
and the shuffled pairs (x_i, z_index[i]) of a batch in one pass through its MLP. Recorded op by op,
that pass leaves about thirty autograd nodes, each with its own saved tensors and small backward
operators; at the batch sizes a regularizer sees (about 100 rows), dispatching them costs more than
their arithmetic. Here the whole pass is one node: the forward runs the same matmuls, the backward
computes every gradient with the fewest operators (one matmul per weight, one per input that needs
a gradient, one mask per ReLU). Gradients equal autograd's to rounding (tested in float64).

Not used under autocast (mixed dtypes; the op-by-op path runs there), and not twice
differentiable (a second backward raises, as for any ``once_differentiable`` function).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "relu_mlp_parameters",
    "shuffled_relu_scores",
    "relu_mlp_forward",
    "relu_mlp_backward",
    "inverse_permutation",
]


def inverse_permutation(index: Tensor) -> Tensor:
    """The permutation that undoes ``index`` [B]: ``t[index][inverse] == t``."""
    return torch.empty_like(index).scatter_(0, index, torch.arange(index.numel(), device=index.device))


def relu_mlp_parameters(net: nn.Sequential) -> list[nn.Parameter] | None:
    """[w_1, b_1, ..., w_L, b_L] of a Linear, ReLU, ..., Linear stack ending in one output, or
    None if ``net`` is built otherwise (then only the op-by-op path applies)."""
    layers = list(net)
    linears, relus = layers[0::2], layers[1::2]
    if (
        len(layers) % 2 == 0
        or not all(type(m) is nn.Linear and m.bias is not None for m in linears)
        or not all(type(m) is nn.ReLU for m in relus)
        or linears[-1].out_features != 1
    ):
        return None
    return [p for m in linears for p in (m.weight, m.bias)]


class _ShuffledReluScores(torch.autograd.Function):
    """scores [2B]: the joint rows, then the shuffled ones. Inputs: x [B, dx], z [B, dz], index
    [B] (a permutation), then the MLP's weights and biases in order; the first weight is [H, dx+dz]
    and is applied as x·W_x + z·W_z, so x·W_x is computed once for both kinds of pairs."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, z: Tensor, index: Tensor, *params: Tensor) -> Tensor:
        scores, acts = relu_mlp_forward(params, x, z, index)
        ctx.save_for_backward(x, z, index, params[0], *params[2::2], *acts)
        ctx.layers = len(params) // 2 - 1
        return scores.squeeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, z, index, first_w, *rest = ctx.saved_tensors
        weights, acts = rest[: ctx.layers], rest[ctx.layers :]
        needs = ctx.needs_input_grad
        grad_x, grad_z, param_grads = relu_mlp_backward(
            grad.unsqueeze(1), x, z, index, first_w, weights, acts, needs[0], needs[1], any(needs[3:])
        )
        return (grad_x, grad_z, None, *(param_grads or [None] * (2 + 2 * ctx.layers)))


def relu_mlp_forward(
    params: Sequence[Tensor], x: Tensor, z: Tensor, index: Tensor, rows: Tensor | None = None
) -> tuple[Tensor, list[Tensor]]:
    """(scores [2B, 1], the hidden activations): the joint rows (x_i, z_i), then the shuffled
    ones (x_i, z_index[i]). ``params`` as for :func:`shuffled_relu_scores`; the first weight
    [H, dx+dz] is applied as x·W_x + z·W_z, so x·W_x is computed once for both kinds of pairs.
    ``rows``: [0 .. B-1, *index] where the caller already has it (one gather then serves both
    kinds of pairs)."""
    batch, dx = x.shape
    first_w, first_b, weights, biases = params[0], params[1], params[2::2], params[3::2]
    hx = torch.addmm(first_b, x, first_w[:, :dx].t())
    hz = z.mm(first_w[:, dx:].t())
    if rows is None:
        rows = torch.cat([torch.arange(batch, device=index.device), index])
    pre = hz.index_select(0, rows)  # z's rows for the joint, then the shuffled pairs
    pre.view(2, batch, -1).add_(hx)  # each plus x's
    acts = [pre.relu_()]
    for w, b in zip(weights[:-1], biases[:-1], strict=True):
        acts.append(torch.addmm(b, acts[-1], w.t()).relu_())
    return torch.addmm(biases[-1], acts[-1], weights[-1].t()), acts


def relu_mlp_backward(
    d: Tensor,
    x: Tensor,
    z: Tensor,
    index: Tensor,
    first_w: Tensor,
    weights: Sequence[Tensor],
    acts: Sequence[Tensor],
    need_x: bool,
    need_z: bool,
    need_params: bool,
    inverse: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None, list[Tensor] | None]:
    """Gradients of :func:`relu_mlp_forward` given ``d`` [2B, 1], the gradient of its scores,
    with the fewest operators: (grad_x, grad_z, [w_1, b_1, ..., w_L, b_L] gradients), each None
    where not needed. ``weights`` are the layers after the first; ``inverse`` is
    :func:`inverse_permutation` of ``index`` where the caller already has it."""
    layer_grads: list[Tensor] = []
    for j in range(len(weights) - 1, -1, -1):  # weights[j] maps acts[j] to the next layer
        if need_params:
            layer_grads += [d.sum(0), d.t().mm(acts[j])]  # reversed below: (w, b) pairs
        d = torch.ops.aten.threshold_backward(d.mm(weights[j]), acts[j], 0)
    layer_grads.reverse()
    b, dx = x.shape[0], x.shape[1]
    joint_rows, shuffled_rows = d[:b], d[b:]
    d_hx = joint_rows + shuffled_rows
    d_hz = joint_rows + shuffled_rows.index_select(
        0, inverse_permutation(index) if inverse is None else inverse
    )
    grad_x = d_hx.mm(first_w[:, :dx]) if need_x else None
    grad_z = d_hz.mm(first_w[:, dx:]) if need_z else None
    if not need_params:
        return grad_x, grad_z, None
    grad_first_w = torch.cat([d_hx.t().mm(x), d_hz.t().mm(z)], dim=1)
    return grad_x, grad_z, [grad_first_w, d_hx.sum(0), *layer_grads]


def shuffled_relu_scores(params: list[Tensor], x: Tensor, z: Tensor, index: Tensor) -> Tensor:
    """Scores [2B] of (x_i, z_i) then (x_i, z_index[i]) under the ReLU MLP whose weights and biases
    are ``params`` (see :func:`relu_mlp_parameters`), as one autograd node."""
    return _ShuffledReluScores.apply(x, z, index, *params)
