"""CLUB: a variational *upper* bound on mutual information, for when MI is minimized.

Minimizing a lower bound (MINE, NWJ, InfoNCE) can lower the estimate without lowering the true
MI. CLUB (Cheng et al., ICML 2020) instead estimates, in nats,

    I_CLUB(X; Z) = E_p(x,z)[log q(z|x)] - E_p(x)p(z)[log q(z|x)],

with q(z|x) a variational conditional fitted by maximum likelihood on joint samples. When q is
the true conditional p(z|x), I_CLUB - I(X; Z) = E_p(x)[KL(p(z) || p(z|x))] >= 0. With a fitted q
it stays an upper bound when q(z|x)p(x) is closer in KL to p(x, z) than to p(x)p(z), i.e. when q
is a good fit; a poor q can fall below the true MI. Even with the exact conditional it is tight only
for independent X, Z: for correlated Gaussians it is at least twice the true MI.

Training alternates two steps:

    q_opt.zero_grad(); club.learning_loss(x, z).backward(); q_opt.step()    # fit q (NLL)
    model_opt.zero_grad(); club(x, z).backward(); model_opt.step()          # minimize the bound

Only q's parameters go to ``q_opt`` and only the model's to ``model_opt``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from einops import rearrange, reduce
from torch import Tensor, nn

from .bounds import upcast
from .critics import _cyclic_derangement, mlp
from .protocol import BuildOptions, Terms, call_frozen

__all__ = ["GaussianConditional", "CLUB"]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_finite(name: str, t: Tensor) -> None:
    """ValueError naming the tensor, the number of bad values and the first bad row (one sync)."""
    bad = ~torch.isfinite(t)
    if bad.any():
        row = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"{name} contains NaN or Inf ({int(bad.sum())} values; first in row {row})")


def _check_2d(name: str, t: Tensor, dim: int) -> None:
    if t.ndim != 2 or t.shape[1] != dim:
        raise ValueError(f"{name} must have shape [B, {dim}], got {tuple(t.shape)}")


class GaussianConditional(nn.Module):
    """q(z|x) = N(z; mu(x), diag(exp(logvar(x)))), mu and logvar from two MLPs.

    ``mean_net`` maps [B, dx] -> [B, dz]; ``logvar_net`` too, with its last layer initialised
    to zero so q starts with unit variance (a random initial log-variance can make the first
    NLL steps explode). Both may be replaced by any module with the same shapes (e.g. a
    ``nn.Linear`` set to a known conditional). The log-variance is not clamped.

    Log densities are in nats and include every constant (-0.5·dz·log 2π and the log-determinant
    -0.5·sum logvar), so ``-log_prob`` is a true negative log-likelihood. Both constants depend on
    x only, so they cancel exactly in CLUB, which therefore works with squared distances only.
    """

    def __init__(
        self, x_dim: int, z_dim: int, hidden: Sequence[int] = (128,), activation: str = "relu"
    ) -> None:
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.mean_net = mlp(x_dim, hidden, z_dim, activation)
        self.logvar_net = mlp(x_dim, hidden, z_dim, activation, zero_last=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, dx] -> (mean [B, dz], log-variance [B, dz]), float32 or wider."""
        return upcast(self.mean_net(x)), upcast(self.logvar_net(x))

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        """log q(z_i | x_i) in nats for rows x [B, dx], z [B, dz] -> [B]."""
        mu, logvar = self(x)
        sq = (upcast(z) - mu) ** 2 * torch.exp(-logvar)
        return -0.5 * reduce(sq + logvar + _LOG_2PI, "b k -> b", "sum")

    def log_prob_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        """log q(z_j | x_i) in nats for every pair, x [B, dx], z [C, dz] -> [B, C].

        Expands sum_k p_ik (z_jk - mu_ik)² (p = exp(-logvar)) into three matmul-shaped terms, so
        memory is O(B·C + (B + C)·dz), never O(B·C·dz). z and mu are first shifted by the mean
        of z (the distance does not change), which keeps the expanded squares small and avoids
        float32 cancellation when the data sit far from the origin.
        """
        mu, logvar = self(x)
        z = upcast(z).to(mu.dtype)
        shift = reduce(z.detach(), "c k -> 1 k", "mean")
        z, mu = z - shift, mu - shift
        prec = torch.exp(-logvar)
        sq = (
            torch.einsum("bk,ck->bc", prec, z**2)
            - 2.0 * torch.einsum("bk,ck->bc", prec * mu, z)
            + rearrange(reduce(prec * mu**2, "b k -> b", "sum"), "b -> b 1")
        ).clamp_min(0.0)  # >= 0 exactly; the clamp only removes rounding below zero
        const = rearrange(reduce(logvar, "b k -> b", "sum") + self.z_dim * _LOG_2PI, "b -> b 1")
        return -0.5 * (sq + const)


class CLUB(nn.Module):
    """The CLUB upper bound on I(X; Z) in nats, with a fitted Gaussian conditional ``q``.

    Args:
        x_dim, z_dim: feature sizes of x [B, dx] and z [B, dz].
        hidden, activation: the MLPs of :class:`GaussianConditional`.
        sampled: ``False`` (default): the marginal term averages log q(z_j | x_i) over all
            B·(B - 1) off-diagonal pairs of the batch; computed in closed form in O(B·dz), no
            [B, B] matrix. ``True`` (CLUB-S): one negative z_pi(i) per row, pi a random
            permutation without fixed points; cheaper to write, higher variance.
        check_finite: raise ValueError on NaN / Inf in x or z (costs one device sync per call).

    For a q fixed independently of the batch, both estimates are unbiased for I_CLUB(q) when the
    rows (x_i, z_i) are i.i.d.
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden: Sequence[int] = (128,),
        activation: str = "relu",
        sampled: bool = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.q = GaussianConditional(x_dim, z_dim, hidden, activation)
        self.sampled = sampled
        self.check_finite = check_finite

    @classmethod
    def build(cls, name: str, x_dim: int, z_dim: int, options: BuildOptions) -> CLUB:
        """CLUB with q's MLPs of widths ``options.hidden`` (the estimator protocol)."""
        return cls(x_dim, z_dim, options.hidden)

    def _check(self, x: Tensor, z: Tensor, min_batch: int) -> None:
        _check_2d("x", x, self.x_dim)
        _check_2d("z", z, self.z_dim)
        if x.shape[0] != z.shape[0]:
            raise ValueError(f"x and z must have the same batch size, got {x.shape[0]} and {z.shape[0]}")
        if x.shape[0] < min_batch:
            raise ValueError(
                f"CLUB needs a batch of at least {min_batch} samples, got {x.shape[0]}"
                + (": the marginal term pairs x_i with z_j from another row" if min_batch == 2 else "")
            )
        if self.check_finite:
            _check_finite("x", x)
            _check_finite("z", z)

    def forward(self, x: Tensor, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The CLUB estimate in nats (scalar), differentiable w.r.t. x, z and q's parameters.

        x [B, dx], z [B, dz], B >= 2, row i of each drawn together from p(x, z). ``generator``
        seeds the negatives of ``sampled=True``.
        """
        self._check(x, z, 2)
        mu, logvar = self.q(x)
        z = upcast(z).to(mu.dtype)
        prec = torch.exp(-logvar)
        joint_sq = (z - mu) ** 2  # [B, dz]
        if self.sampled:
            z_neg = z[_cyclic_derangement(z.shape[0], z.device, generator)]
            gap = (z_neg - mu) ** 2 - joint_sq
            return 0.5 * reduce(prec * gap, "b k -> ", "sum") / z.shape[0]
        # mean_{j != i} (z_jk - mu_ik)² = (B·[var_k + (zbar_k - mu_ik)²] - (z_ik - mu_ik)²) / (B - 1),
        # with var the biased per-coordinate variance of the batch's z; so all off-diagonal pairs
        # cost O(B·dz), and the joint term folds in: (1 + 1/(B - 1))·(z_ik - mu_ik)².
        b = z.shape[0]
        zbar = reduce(z, "b k -> 1 k", "mean")
        var = reduce((z - zbar) ** 2, "b k -> 1 k", "mean")
        gap = var + (zbar - mu) ** 2 - joint_sq
        return 0.5 * b / (b - 1) * reduce(prec * gap, "b k -> ", "sum") / b

    def learning_loss(self, x: Tensor, z: Tensor) -> Tensor:
        """Mean negative log-likelihood -E_p(x,z)[log q(z|x)] in nats (scalar): what q's optimizer
        minimizes. x and z are detached here, so this never sends gradient to the model that
        made them (detaching them beforehand as well is harmless)."""
        self._check(x, z, 1)
        return -self.q.log_prob(x.detach(), z.detach()).mean()

    def terms(
        self, x: Tensor, z: Tensor, generator: torch.Generator | None = None, train_critic: bool = True
    ) -> Terms:
        """The estimator protocol (:mod:`mine_reg.protocol`): the model follows the CLUB bound through
        a q held fixed, and q descends its negative log-likelihood. Metrics: ``mi`` (the bound,
        nats) and ``log_likelihood`` (mean log q(z|x) on the batch, nats)."""
        bound = call_frozen(self, x, z, generator=generator)
        with torch.set_grad_enabled(train_critic and torch.is_grad_enabled()):
            nll = self.learning_loss(x, z)
        return Terms(
            model=bound,
            critic=nll - bound,
            mi=bound.detach(),
            metrics={"mi": bound.detach(), "log_likelihood": -nll.detach()},
        )
