"""Exact-conditional bounds: I(X; Z) of a Gaussian encoder from its own q(z|x), no critic.

When the model's stochastic layer draws z ~ q(z|x) = N(mean(x), diag(std(x)²)) and exposes
(mean, std), the conditional is known exactly and two bounds need nothing learned (Poole et al.,
ICML 2019; Cheng et al., ICML 2020). For a batch of B rows with fresh draws
z_i = mean_i + std_i·eps_i and L[i, j] = log q(z_i | x_j) (nats):

    l1out       mean_i  L[i, i] - log( 1/(B-1) sum_{j != i} exp L[i, j] )
    club-exact  mean_i  L[i, i] - mean_{i != j} L[i, j]

Both are upper bounds on I(X; Z) for X drawn from the data (l1out in expectation over batches,
tightening as B grows; club-exact for every B). Minimizing either therefore lowers the true MI:
the reparametrized draws carry the gradient into mean and std. l1out stays within a few nats of
the truth, while club-exact grows with the squared distance between codes over their std and can
be very large when the std is small; prefer l1out.

    reg = MIRegularizer(model, z=("z:input", lambda args: args), estimator="l1out", beta=1e-3)

Here ``z`` names the layer whose input is the pair (mean, std): any spec whose capture is a
pair of tensors of the same shape [B, ...] works (see :mod:`mine_reg.hooks`).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange, reduce
from torch import Tensor, nn

from .bounds import upcast
from .protocol import BuildOptions, Terms

__all__ = [
    "gaussian_log_prob_matrix",
    "infonce_rows",
    "l1out_rows",
    "infonce_bound",
    "l1out_bound",
    "club_exact_bound",
    "ExactConditional",
]

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob_matrix(z: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """L[i, j] = log N(z_i; mean_j, diag(std_j²)) in nats, z [B, K], mean and std [C, K] -> [B, C].

    The squared distances are expanded into matmul-shaped terms (memory O(B·C + (B + C)·K));
    z and mean are first shifted by the batch mean of z, which leaves distances unchanged and
    keeps float32 cancellation small."""
    z, mean, std = upcast(z), upcast(mean), upcast(std)
    shift = reduce(z.detach(), "b k -> 1 k", "mean")
    z, mean = z - shift, mean - shift
    prec = std.pow(-2)
    sq = (
        torch.einsum("bk,ck->bc", z**2, prec)
        - 2.0 * torch.einsum("bk,ck->bc", z, prec * mean)
        + rearrange(reduce(prec * mean**2, "c k -> c", "sum"), "c -> 1 c")
    ).clamp_min(0.0)  # >= 0 exactly; the clamp only removes rounding below zero
    log_norm = reduce(torch.log(std), "c k -> c", "sum") + 0.5 * z.shape[1] * _LOG_2PI
    return -0.5 * sq - rearrange(log_norm, "c -> 1 c")


def infonce_rows(log_q: Tensor, own: Tensor) -> Tensor:
    """Per row m of L [M, N] whose own column is ``own[m]``: L[m, own] - log (1/N) sum_j exp L[m, j]
    (nats, [M]); their mean is the InfoNCE lower bound, at most ln N."""
    diagonal = log_q.gather(1, own[:, None]).squeeze(1)
    return diagonal - torch.logsumexp(log_q, dim=1) + math.log(log_q.shape[1])


def l1out_rows(log_q: Tensor, own: Tensor) -> Tensor:
    """Per row m of L [M, N] whose own column is ``own[m]``: L[m, own] - log (1/(N-1)) sum over
    the other columns of exp L[m, j] (nats, [M]); their mean is the leave-one-out upper bound."""
    diagonal = log_q.gather(1, own[:, None]).squeeze(1)
    others = log_q.scatter(1, own[:, None], -math.inf)
    return diagonal - torch.logsumexp(others, dim=1) + math.log(log_q.shape[1] - 1)


def _rows(log_q: Tensor) -> Tensor:
    return torch.arange(log_q.shape[0], device=log_q.device)


def infonce_bound(log_q: Tensor) -> Tensor:
    """The InfoNCE lower bound (nats, scalar) from L [B, B] of :func:`gaussian_log_prob_matrix`."""
    return infonce_rows(log_q, _rows(log_q)).mean()


def l1out_bound(log_q: Tensor) -> Tensor:
    """The leave-one-out upper bound (nats, scalar) from L [B, B] of :func:`gaussian_log_prob_matrix`."""
    return l1out_rows(log_q, _rows(log_q)).mean()


def club_exact_bound(log_q: Tensor) -> Tensor:
    """The CLUB upper bound with the exact conditional (nats, scalar) from L [B, B]."""
    n = log_q.shape[0]
    off = log_q[~torch.eye(n, dtype=torch.bool, device=log_q.device)]
    return log_q.diagonal().mean() - off.mean()


_BOUNDS = {"l1out": l1out_bound, "club-exact": club_exact_bound}


def _check_pair(mean: Tensor, std: Tensor) -> None:
    if mean.shape != std.shape or mean.ndim != 2:
        raise ValueError(
            f"the (mean, std) pair must be two [B, K] tensors of one shape, got {tuple(mean.shape)} "
            f"and {tuple(std.shape)}"
        )
    if mean.shape[0] < 2:
        raise ValueError("an exact-conditional bound needs a batch of at least 2 samples")


class ExactConditional(nn.Module):
    """An upper bound on I(X; Z) from the encoder's own Gaussian (module docstring); no
    parameters, so nothing is trained. ``terms(x, (mean, std))`` follows the estimator protocol
    (:mod:`mine_reg.protocol`) with z given as the pair; x is not used (X enters through the
    rows of the pair). ``generator`` seeds the draws of z."""

    takes_mean_std = True

    def __init__(self, name: str = "l1out") -> None:
        super().__init__()
        if name not in _BOUNDS:
            raise ValueError(f"unknown exact-conditional bound {name!r}; choose from {sorted(_BOUNDS)}")
        self.name = name

    @classmethod
    def build(cls, name: str, x_dim: int, z_dim: int, options: BuildOptions) -> ExactConditional:
        return cls(name)

    def forward(self, mean: Tensor, std: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The bound in nats (scalar) for one fresh draw z_i ~ N(mean_i, std_i²) per row,
        differentiable w.r.t. mean and std. mean, std [B, K], std > 0."""
        _check_pair(mean, std)
        eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(
            mean.device, upcast(mean).dtype
        )
        z = upcast(mean) + upcast(std) * eps
        return _BOUNDS[self.name](gaussian_log_prob_matrix(z, mean, std))

    def terms(
        self,
        x: Tensor,
        z: tuple[Tensor, Tensor],
        generator: torch.Generator | None = None,
        train_critic: bool = True,
    ) -> Terms:
        bound = self(*z, generator=generator)
        return Terms(model=bound, critic=-bound, mi=bound.detach(), metrics={"mi": bound.detach()})
