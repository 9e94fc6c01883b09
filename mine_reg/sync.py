"""Every cross-process operation in mine_reg, declared once, with its reduction.

=============================  ============================  ==========================================
what                           when                          reduction
=============================  ============================  ==========================================
critic parameters              once, when the critic is      :func:`broadcast_parameters`: rank 0's
                               built                         values everywhere
critic gradients               before each critic step       :func:`average_gradients`: mean over ranks
MINE's batch log E_Q[exp T]    each moving-average update    :func:`log_mean_exp`: log of the mean of
                                                             exp over ranks
(x, z) of marginal pairs       each call, with               :func:`gather_rows`: all-gather; the local
                               ``gather_marginals``          rows keep their gradient
=============================  ============================  ==========================================

Each is a no-op in a single process (torch.distributed not initialised, or a world of 1).

Every collective is issued with ``async_op=True``, waited on, and its work handle is held until
the same operation runs again. Gloo's worker thread otherwise drops the last C++ reference that a
finished work holds to the Python-owned tensors it was given, which decrements their Python
objects and so takes the GIL. If the interpreter is already finalizing (a script that ends right
after a training step, without ``destroy_process_group()``), Python ends that thread while it is
inside a ``noexcept`` destructor, and the process aborts with "terminate called without an active
exception" (SIGABRT; pytorch/pytorch#179291). A held handle is released later, by a Python thread
that owns the GIL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["world_size", "broadcast_parameters", "average_gradients", "log_mean_exp", "gather_rows"]

_held: dict[str, list] = {}  # operation -> the work handles of its latest run


def world_size() -> int:
    """Processes in the default group; 1 when torch.distributed is not initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _wait(operation: str, works: list) -> None:
    for work in works:
        work.wait()
    _held[operation] = works  # releases the previous run's handles, on this (Python) thread


def broadcast_parameters(params: Sequence[Tensor]) -> None:
    """Overwrite every tensor in place with rank 0's values."""
    if world_size() > 1:
        _wait("broadcast", [dist.broadcast(p.data, src=0, async_op=True) for p in params])


def average_gradients(params: Sequence[Tensor]) -> None:
    """Replace each ``p.grad`` (not None) in place by its mean over processes."""
    world = world_size()
    if world > 1:
        grads = [p.grad for p in params]
        _wait("gradients", [dist.all_reduce(g, async_op=True) for g in grads])
        for g in grads:
            g.div_(world)


def log_mean_exp(value: Tensor) -> Tensor:
    """log(mean over processes of exp(value)), element by element for a tensor of any shape
    (the same on every process), computed stably; ``value`` alone in one process."""
    world = world_size()
    if world == 1:
        return value
    gathered = [torch.empty_like(value) for _ in range(world)]
    _wait("log_mean_exp", [dist.all_gather(gathered, value.contiguous(), async_op=True)])
    return torch.logsumexp(torch.stack(gathered), dim=0) - math.log(world)


def gather_rows(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Each [B, ...] tensor concatenated over processes in rank order -> [world·B, ...].

    The local block is the tensor itself, so gradient still flows to it; the other processes'
    blocks are detached copies. ValueError unless every process has the same B.
    """
    world = world_size()
    if world == 1:
        return tensors
    device = tensors[0].device
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world)]
    local = torch.tensor([tensors[0].shape[0]], device=device)
    _wait("sizes", [dist.all_gather(sizes, local, async_op=True)])
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(
            f"gather_marginals needs equal batch sizes on every process, got {[int(s) for s in sizes]}"
        )
    parts = [[torch.empty_like(t) for _ in range(world)] for t in tensors]
    works = [
        dist.all_gather(p, t.detach().contiguous(), async_op=True)
        for p, t in zip(parts, tensors, strict=True)
    ]
    _wait("rows", works)
    rank = dist.get_rank()
    for p, t in zip(parts, tensors, strict=True):
        p[rank] = t
    return tuple(torch.cat(p) for p in parts)
