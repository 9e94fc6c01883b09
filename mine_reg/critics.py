"""Critics (statistics networks) T(x, z) -> score, and how marginal pairs are formed.

Call contract shared by every critic, including any user ``nn.Module``:

    critic(x: [B, dx], z: [B, dz]) -> scores [B]        # T(x_i, z_i), row by row

A critic may also define ``score_matrix(x: [B, dx], z: [C, dz]) -> [B, C]`` scoring every
(x_i, z_j) pair at once (:class:`SeparableCritic` does so with one matmul), and
``score_shuffled(x, z, index) -> (joint [B], marginal [B])`` scoring (x_i, z_i) and
(x_i, z_index[i]) together (:class:`ConcatCritic` shares the x part of its first layer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from .fused_mlp import inverse_permutation, relu_mlp_parameters, shuffled_relu_scores

__all__ = [
    "mlp",
    "standardize_rows",
    "UnitCritic",
    "Standardized",
    "ConcatCritic",
    "SeparableCritic",
    "GaussianCritic",
    "SumCritic",
    "BoundedCritic",
    "InputNoise",
    "RadialCritic",
    "StudentTCritic",
    "CopulaGridCritic",
    "score_pairs",
    "Marginals",
    "ledoit_wolf",
    "ledoit_wolf_shrinkage",
    "shrunk_covariance",
]

Marginals = Literal["shuffle", "all", "given"]

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU, "tanh": nn.Tanh, "softplus": nn.Softplus}


def mlp(
    in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu", zero_last: bool = False
) -> nn.Sequential:
    """A plain MLP: Linear -> activation for each hidden width, then a final Linear
    (initialised to zero when ``zero_last``, so the network starts as the constant 0)."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(_ACTIVATIONS)}")
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), _ACTIVATIONS[activation]()]
    last = nn.Linear(dims[-1], out_dim)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


class ConcatCritic(nn.Module):
    """The MINE paper's statistics network: an MLP on the concatenation [x, z] -> one score.

    Scoring all B x B pairs costs B² forward passes, so pair it with ``marginals="shuffle"``.
    The last layer starts at zero: an untrained critic scores every pair 0 (an estimate of 0 nats).
    """

    def __init__(
        self, x_dim: int, z_dim: int, hidden: Sequence[int] = (256, 256), activation: str = "relu"
    ) -> None:
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.net = mlp(x_dim + z_dim, hidden, 1, activation, zero_last=True)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return rearrange(self.net(torch.cat([x, z], dim=-1)), "b 1 -> b")

    def score_shuffled(self, x: Tensor, z: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """Scores of (x_i, z_i) and (x_i, z_index[i]) in one pass, [B] each. The first layer is
        split as W_x·x + W_z·z, so the x part is computed once for both kinds of pairs. A ReLU
        MLP outside autocast runs as one autograd node (:mod:`mine_reg.fused_mlp`)."""
        b = x.shape[0]
        params = None if torch.is_autocast_enabled(x.device.type) else relu_mlp_parameters(self.net)
        if params is not None:
            scores = shuffled_relu_scores(params, x, z, index)
            return scores[:b], scores[b:]
        first, rest = self.net[0], self.net[1:]
        weight_x, weight_z = torch.split(first.weight, [self.x_dim, self.z_dim], dim=1)
        hx = F.linear(x, weight_x, first.bias)
        hz = F.linear(z, weight_z)
        scores = rearrange(rest(torch.cat([hx + hz, hx + permute_rows(hz, index)])), "b 1 -> b")
        return scores[:b], scores[b:]


class SeparableCritic(nn.Module):
    """T(x, z) = f(x) · g(z) with two MLP encoders f and g.

    ``score_matrix`` scores all B x C pairs with a single [B, e] x [e, C] matmul, so every
    off-diagonal pair of a batch serves as a marginal sample (B² - B of them instead of B).
    Memory: the score matrix holds B·C floats (4 MiB at B = C = 1024 in float32, plus the same
    again for its gradient); compute is O(B·C·e) for embedding width e. The last layer of g starts
    at zero, so an untrained critic scores every pair 0 while f still passes gradient to it.
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden: Sequence[int] = (256, 256),
        embed_dim: int = 32,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.f = mlp(x_dim, hidden, embed_dim, activation)
        self.g = mlp(z_dim, hidden, embed_dim, activation, zero_last=True)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return (self.f(x) * self.g(z)).sum(dim=-1)

    def score_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        return torch.einsum("be,ce->bc", self.f(x), self.g(z))


def ledoit_wolf_shrinkage(data: Tensor) -> Tensor:
    """The Ledoit-Wolf shrinkage intensity in [0, 1] for ``data`` [N, p] (float64): the weight on
    the scaled identity that minimises the expected Frobenius error of the shrunk covariance."""
    n, p = data.shape
    centred = data - data.mean(dim=0)
    cov = centred.T @ centred / n
    mu = torch.trace(cov) / p
    sq = centred**2
    # spread of the per-sample outer products around the sample covariance, and of cov around mu·I
    beta = ((sq.T @ sq).sum() / n - (cov**2).sum()) / n
    delta = ((cov - mu * torch.eye(p, dtype=cov.dtype, device=cov.device)) ** 2).sum()
    return torch.clamp(beta / delta, 0.0, 1.0) if delta > 0 else torch.ones((), dtype=cov.dtype)


def shrunk_covariance(data: Tensor, shrinkage: float | Tensor) -> Tensor:
    """(1 - s)·S + s·mu·I for the sample covariance S of ``data`` [N, p] and mu = tr(S) / p."""
    n, p = data.shape
    centred = data - data.mean(dim=0)
    cov = centred.T @ centred / n
    eye = torch.eye(p, dtype=cov.dtype, device=cov.device)
    return (1 - shrinkage) * cov + shrinkage * (torch.trace(cov) / p) * eye


def ledoit_wolf(data: Tensor) -> Tensor:
    """Ledoit-Wolf shrunk covariance of ``data`` [N, p] (float64): the sample covariance pulled
    toward a scaled identity by the analytic shrinkage that minimises the expected Frobenius error."""
    return shrunk_covariance(data, ledoit_wolf_shrinkage(data))


def _inverse_sqrt(cov: Tensor, floor: float = 1e-12) -> Tensor:
    """cov^(-1/2) of a symmetric positive semi-definite matrix (eigenvalues floored)."""
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp_min(floor * values.max().clamp_min(floor))
    return (vectors * values.rsqrt()) @ vectors.T


# 1 - rho² is kept above this, so one canonical pair contributes at most ~13.8 nats
_MIN_ONE_MINUS_RHO2 = 1e-12


class GaussianCritic(nn.Module):
    """The log density ratio log p(x, z) / (p(x) p(z)) of a Gaussian fitted to data.

    For jointly Gaussian (x, z) this is the optimal critic, and its DV value is the Gaussian MI
    0.5·(log det S_xx + log det S_zz - log det S) = -0.5·sum_i log(1 - rho_i²) over the canonical
    correlations rho_i. It is stored in canonical form: u = A^T x and v = B^T z (standardized)
    are the canonical variates, and the score is a sum over canonical pairs of the bivariate
    log ratio ``-0.5·log(1 - rho²) - (rho·u - v)² / (2(1 - rho²)) + v² / 2``, computed in float64
    so near-deterministic pairs (rho -> 1) keep their precision. ``score_matrix`` costs one
    matmul. :meth:`fit` estimates means, scales and the canonical pairs; ``rank`` keeps only the
    strongest pairs (the others score 0), which removes the noise that weak, badly estimated
    directions add in many dimensions. Its parameters are buffers: fitted in closed form, not
    trained. Unfitted, it scores every pair 0.
    """

    def __init__(self, x_dim: int, z_dim: int) -> None:
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        r = min(x_dim, z_dim)
        self.register_buffer("mean", torch.zeros(x_dim + z_dim, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(x_dim + z_dim, dtype=torch.float64))
        self.register_buffer("proj_x", torch.zeros(x_dim, r, dtype=torch.float64))
        self.register_buffer("proj_z", torch.zeros(z_dim, r, dtype=torch.float64))
        self.register_buffer("rho", torch.zeros(r, dtype=torch.float64))
        self.register_buffer("rank", torch.tensor(r))
        self.register_buffer("floor", torch.tensor(-math.inf, dtype=torch.float64))
        self.register_buffer("ceiling", torch.tensor(math.inf, dtype=torch.float64))

    @torch.no_grad()
    def fit(
        self,
        x: Tensor,
        z: Tensor,
        shrink: bool = True,
        shrinkage: float | None = None,
        rank: int | None = None,
    ) -> GaussianCritic:
        """Fit to samples x [N, dx], z [N, dz]. The joint correlation matrix is shrunk toward the
        identity by ``shrinkage`` (Ledoit-Wolf's analytic value when None and ``shrink``; none
        when ``shrink=False``); ``rank`` keeps the strongest canonical pairs (None: all)."""
        data = torch.cat([x, z], dim=1).double()
        mean, scale = data.mean(dim=0), data.std(dim=0).clamp_min(1e-12)
        data = (data - mean) / scale
        if shrinkage is None:
            shrinkage = float(ledoit_wolf_shrinkage(data)) if shrink else 0.0
        cov = shrunk_covariance(data, shrinkage)
        dx = self.x_dim
        wx, wz = _inverse_sqrt(cov[:dx, :dx]), _inverse_sqrt(cov[dx:, dx:])
        left, rho, right_t = torch.linalg.svd(wx @ cov[:dx, dx:] @ wz, full_matrices=False)
        limit = math.sqrt(1 - _MIN_ONE_MINUS_RHO2)
        for name, value in [
            ("mean", mean),
            ("scale", scale),
            ("proj_x", wx @ left),
            ("proj_z", wz @ right_t.T),
            ("rho", rho.clamp(0.0, limit)),
        ]:
            getattr(self, name).copy_(value)
        self.set_rank(len(rho) if rank is None else rank)
        return self

    def set_clip(self, floor: float = -math.inf, ceiling: float = math.inf) -> GaussianCritic:
        """Clamp every score to [floor, ceiling] nats (default: no clamp). A clamped critic is
        still a critic, so every bound stays valid. The floor keeps held-out pairs that the fitted
        Gaussian finds implausible (heavy tails, many dimensions at small N) from dragging the
        joint term down by hundreds of nats, at a cost of at most log(1 + exp(floor)) on the
        log-partition (0.007 nats at -5); the ceiling keeps rare product-of-marginals pairs with
        heavy-tailed canonical variates (whose cross term u·v is then huge) from dominating the
        log-partition."""
        if not floor < ceiling:
            raise ValueError(f"the floor must lie below the ceiling, got {floor} and {ceiling}")
        self.floor.fill_(floor)
        self.ceiling.fill_(ceiling)
        return self

    def set_rank(self, rank: int) -> GaussianCritic:
        """Keep the ``rank`` strongest canonical pairs (0: the critic scores every pair 0)."""
        if not 0 <= rank <= len(self.rho):
            raise ValueError(f"rank must lie in [0, {len(self.rho)}], got {rank}")
        self.rank.fill_(rank)
        return self

    def _active_rho(self) -> Tensor:
        return self.rho * (torch.arange(len(self.rho), device=self.rho.device) < self.rank)

    @property
    def const(self) -> Tensor:
        """-0.5·sum log(1 - rho²) over the kept pairs: the fitted Gaussian MI (nats)."""
        return -0.5 * torch.log1p(-(self._active_rho() ** 2)).sum()

    def canonical(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """Canonical variates u [B, r] of x and v [C, r] of z (float64, unit variance on the fit
        sample)."""
        dx = self.x_dim
        u = (x.double() - self.mean[:dx]) / self.scale[:dx] @ self.proj_x
        v = (z.double() - self.mean[dx:]) / self.scale[dx:] @ self.proj_z
        return u, v

    def coefficients(self, kept_only: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Per canonical pair: rho, 1 - rho², the constant -0.5·log(1 - rho²), the quadratic
        weight rho² / (2(1 - rho²)) and the cross weight rho / (1 - rho²) ([r] each, float64);
        pairs beyond ``rank`` have rho = 0 unless ``kept_only=False``."""
        rho = self._active_rho() if kept_only else self.rho
        one_minus = 1 - rho**2
        return rho, one_minus, -0.5 * torch.log1p(-(rho**2)), rho**2 / (2 * one_minus), rho / one_minus

    def _pair_terms(self, u: Tensor, v: Tensor, kept_only: bool = True) -> Tensor:
        """Each canonical pair's log ratio for the rows (u_i, v_i): [B, r]."""
        rho, one_minus, const, _, _ = self.coefficients(kept_only)
        return const - (rho * u - v) ** 2 / (2 * one_minus) + v**2 / 2

    def prefix_joint_scores(self, x: Tensor, z: Tensor) -> Tensor:
        """Unclamped scores of the pairs (x_i, z_i) keeping the k strongest canonical pairs, for
        every k = 0 .. r: [B, r + 1] (float64)."""
        terms = self._pair_terms(*self.canonical(x, z), kept_only=False)
        return torch.cat([terms.new_zeros(len(terms), 1), terms.cumsum(dim=1)], dim=1)

    def clip_at_quantile(self, x: Tensor, z: Tensor, quantile: float, floor: float) -> GaussianCritic:
        """:meth:`set_clip` with the ceiling at ``quantile`` of the unclamped joint scores of
        (x, z) (at least floor + 1)."""
        ceiling = float(torch.quantile(self.prefix_joint_scores(x, z)[:, int(self.rank)], quantile))
        return self.set_clip(floor, max(ceiling, floor + 1))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        scores = self._pair_terms(*self.canonical(x, z)).sum(dim=-1)
        return scores.clamp(self.floor, self.ceiling).to(x.dtype)

    def score_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        u, v = self.canonical(x, z)
        _, _, const, quad, cross = self.coefficients()
        qx, qz = (u**2 * quad).sum(-1), (v**2 * quad).sum(-1)
        m = (u * cross) @ v.T - rearrange(qx, "b -> b 1") - rearrange(qz, "c -> 1 c") + const.sum()
        return m.clamp(self.floor, self.ceiling).to(x.dtype)


class RadialCritic(nn.Module):
    """A 1 x 1 :class:`GaussianCritic` on the log mean square of each side,
    ``log(mean_j x_j²)`` and ``log(mean_j z_j²)``: the dependence that elliptical distributions
    such as the multivariate Student-t carry in a shared scale, which a Gaussian critic on the
    coordinates cannot see. Fit it with :meth:`fit`; keeps ``score_matrix``."""

    def __init__(self) -> None:
        super().__init__()
        self.gaussian = GaussianCritic(1, 1)

    @staticmethod
    def feature(a: Tensor) -> Tensor:
        """[B, d] -> [B, 1]: log of the mean square over the features (float64)."""
        return torch.log((a.double() ** 2).mean(dim=1, keepdim=True) + 1e-12)

    @torch.no_grad()
    def fit(self, x: Tensor, z: Tensor, ceiling_quantile: float = 0.99, floor: float = -5.0) -> RadialCritic:
        """Fit on samples x [N, dx], z [N, dz] (no shrinkage: two features), scores clamped to
        [floor, the ``ceiling_quantile`` of the joint scores on the fit sample]."""
        fx, fz = self.feature(x), self.feature(z)
        self.gaussian.fit(fx, fz, shrink=False).clip_at_quantile(fx, fz, ceiling_quantile, floor)
        return self

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.gaussian(self.feature(x), self.feature(z)).to(x.dtype)

    def score_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        return self.gaussian.score_matrix(self.feature(x), self.feature(z)).to(x.dtype)


class _ClampedScores(nn.Module):
    """A closed-form critic whose scores are clamped to [floor, ceiling] nats (buffers)."""

    def _init_clip(self) -> None:
        self.register_buffer("floor", torch.tensor(-math.inf, dtype=torch.float64))
        self.register_buffer("ceiling", torch.tensor(math.inf, dtype=torch.float64))

    def set_clip(self, floor: float = -math.inf, ceiling: float = math.inf):
        """Clamp every score to [floor, ceiling] nats (see :meth:`GaussianCritic.set_clip`)."""
        if not floor < ceiling:
            raise ValueError(f"the floor must lie below the ceiling, got {floor} and {ceiling}")
        self.floor.fill_(floor)
        self.ceiling.fill_(ceiling)
        return self


def _pseudo_inverse(s: Tensor, rtol: float = 1e-7) -> tuple[Tensor, float, int]:
    """(pseudo-inverse, log pseudo-determinant, rank) of a symmetric PSD matrix s [d, d], with
    the eigenvalues below rtol x the largest counted as 0."""
    values, vectors = torch.linalg.eigh((s + s.T) / 2)
    keep = values > rtol * values.max().clamp_min(1e-300)
    kept, basis = values[keep], vectors[:, keep]
    return (basis / kept) @ basis.T, float(torch.log(kept).sum()), int(keep.sum())


class StudentTCritic(_ClampedScores):
    """The log density ratio log c(x, z) / (c(x) c(z)) of a Student-t copula with ``dof`` degrees
    of freedom, on inputs that are standard-normal scores per column (``estimate_mi``'s quantile
    map): each column is carried to t marginals, q = F_dof^-1(Phi(u)), and scored by the
    multivariate t with scatter S fitted there,

        T = log t_dof(q_x, q_z; S) - log t_dof(q_x; S_xx) - log t_dof(q_z; S_zz),

    where the univariate Jacobians cancel. Elliptical heavy-tailed data (the multivariate t and
    any monotone warp of its columns) carry part of their MI in a scale shared by all
    coordinates, which a Gaussian critic cannot score; this critic does, exactly when the copula
    is a t. As ``dof`` grows it tends to the Gaussian copula. Scores are clamped to [floor,
    ceiling] like :class:`GaussianCritic`'s; parameters are buffers fitted in closed form by
    :meth:`fit` (EM for the scatter at fixed dof). Keeps ``score_matrix``."""

    _GRID = 8001  # nodes of the u -> q table on [-9, 9] (normal scores of N <= 1e18 samples)

    def __init__(self, x_dim: int, z_dim: int, dof: float) -> None:
        super().__init__()
        if not dof > 0:
            raise ValueError(f"dof must be positive, got {dof}")
        from scipy.special import ndtr
        from scipy.stats import t as student_t

        self.x_dim, self.z_dim, self.dof = x_dim, z_dim, float(dof)
        grid = torch.linspace(-9.0, 9.0, self._GRID, dtype=torch.float64)
        tail = student_t.isf(ndtr(-grid.abs().numpy()), self.dof)  # symmetric: precise in both tails
        self.register_buffer("grid", grid)
        self.register_buffer("table", torch.sign(grid) * torch.from_numpy(tail))
        d = x_dim + z_dim
        self.register_buffer("precision", torch.eye(d, dtype=torch.float64))
        self.register_buffer("precision_x", torch.eye(x_dim, dtype=torch.float64))
        self.register_buffer("precision_z", torch.eye(z_dim, dtype=torch.float64))
        self.register_buffer("const", torch.tensor(0.0, dtype=torch.float64))
        for name, dims in (("rank", d), ("rank_x", x_dim), ("rank_z", z_dim)):  # of S, S_xx, S_zz
            self.register_buffer(name, torch.tensor(float(dims), dtype=torch.float64))
        self._init_clip()

    def to_t(self, u: Tensor) -> Tensor:
        """Normal scores [B, d] -> t_dof scores (float64), by linear interpolation in the table."""
        u = u.double().clamp(-9.0, 9.0)
        pos = (u + 9.0) * ((self._GRID - 1) / 18.0)
        lo = pos.floor().clamp(0, self._GRID - 2).long()
        frac = pos - lo
        return self.table[lo] * (1 - frac) + self.table[lo + 1] * frac

    def _log_norm(self, d: int, logdet: float) -> float:
        nu = self.dof
        return math.lgamma((nu + d) / 2) - math.lgamma(nu / 2) - d / 2 * math.log(nu * math.pi) - logdet / 2

    @torch.no_grad()
    def fit(self, x: Tensor, z: Tensor, iters: int = 30) -> StudentTCritic:
        """Fit the scatter S to samples x [N, dx], z [N, dz] (normal scores) by EM for the
        multivariate t at this dof, centred at 0 (the scores' median). Repeated or collinear
        columns leave S singular: the t is then that of its support, with the pseudo-inverse,
        the pseudo-determinant and the rank in place of the inverse, determinant and dimension."""
        q = torch.cat([self.to_t(x), self.to_t(z)], dim=1)
        d = q.shape[1]
        scatter = q.T @ q / len(q) if self.dof > 2 else torch.eye(d, dtype=q.dtype, device=q.device)
        for _ in range(iters):
            maha = (q @ _pseudo_inverse(scatter)[0] * q).sum(dim=1)
            weight = (self.dof + d) / (self.dof + maha)
            scatter = (q * weight[:, None]).T @ q / len(q)
        dx = self.x_dim
        const = 0.0
        for name, block, sign in [
            ("precision", scatter, 1.0),
            ("precision_x", scatter[:dx, :dx], -1.0),
            ("precision_z", scatter[dx:, dx:], -1.0),
        ]:
            inverse, logdet, rank = _pseudo_inverse(block)
            getattr(self, name).copy_(inverse)
            getattr(self, name.replace("precision", "rank")).fill_(rank)
            const += sign * self._log_norm(rank, logdet)
        self.const.fill_(float(const))
        return self

    def clip_at_quantile(self, x: Tensor, z: Tensor, quantile: float, floor: float) -> StudentTCritic:
        """:meth:`set_clip` with the ceiling at ``quantile`` of the unclamped joint scores."""
        self.set_clip()
        ceiling = float(torch.quantile(self._scores(x, z), quantile))
        return self.set_clip(floor, max(ceiling, floor + 1))

    def _ratio(self, maha: Tensor, mx: Tensor, mz: Tensor) -> Tensor:
        nu = self.dof
        return (
            self.const
            - (nu + self.rank) / 2 * torch.log1p(maha / nu)
            + (nu + self.rank_x) / 2 * torch.log1p(mx / nu)
            + (nu + self.rank_z) / 2 * torch.log1p(mz / nu)
        )

    def _scores(self, x: Tensor, z: Tensor) -> Tensor:
        qx, qz = self.to_t(x), self.to_t(z)
        q = torch.cat([qx, qz], dim=1)
        maha = (q @ self.precision * q).sum(-1)
        mx = (qx @ self.precision_x * qx).sum(-1)
        mz = (qz @ self.precision_z * qz).sum(-1)
        return self._ratio(maha, mx, mz)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self._scores(x, z).clamp(self.floor, self.ceiling).to(x.dtype)

    def score_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        qx, qz = self.to_t(x), self.to_t(z)
        dx = self.x_dim
        a, b, c = self.precision[:dx, :dx], self.precision[:dx, dx:], self.precision[dx:, dx:]
        qa, qc = (qx @ a * qx).sum(-1), (qz @ c * qz).sum(-1)
        maha = rearrange(qa, "b -> b 1") + 2 * (qx @ b) @ qz.T + rearrange(qc, "c -> 1 c")
        mx = rearrange((qx @ self.precision_x * qx).sum(-1), "b -> b 1")
        mz = rearrange((qz @ self.precision_z * qz).sum(-1), "c -> 1 c")
        return self._ratio(maha, mx, mz).clamp(self.floor, self.ceiling).to(x.dtype)


class CopulaGridCritic(_ClampedScores):
    """The log copula density of one x column and one z column, read from a smoothed 2-D
    histogram: inputs are standard-normal scores (``estimate_mi``'s quantile map), carried to
    (s, t) = (Phi(x), Phi(z)) in the unit square, and T(x, z) = log c(s, t), where c is the
    histogram of the fit sample on ``bins`` x ``bins`` cells, smoothed by a Gaussian of
    ``smooth`` cells, with every row and column rescaled to mean 1 (a copula density has uniform
    marginals, so the product of the marginals scores about exp(0) on average). A nonparametric
    critic for any shape of dependence in one dimension a side, such as a narrow band (additive
    noise) that a Gaussian critic scores badly; scores clamped to [floor, ceiling] like
    :class:`GaussianCritic`'s. Keeps ``score_matrix``."""

    def __init__(self, bins: int = 64, smooth: float = 1.0) -> None:
        super().__init__()
        if bins < 2 or not smooth >= 0:
            raise ValueError(f"need bins >= 2 and smooth >= 0, got {bins} and {smooth}")
        self.bins, self.smooth = int(bins), float(smooth)
        self.register_buffer("log_density", torch.zeros(self.bins, self.bins, dtype=torch.float64))
        self._init_clip()

    def cells(self, a: Tensor) -> Tensor:
        """Normal scores [B, 1] -> cell indices [B] in [0, bins)."""
        s = torch.special.ndtr(a.double()[:, 0])
        return (s * self.bins).long().clamp(0, self.bins - 1)

    def _blur(self, grid: Tensor) -> Tensor:
        if self.smooth == 0:
            return grid
        half = max(1, math.ceil(3 * self.smooth))
        offsets = torch.arange(-half, half + 1, dtype=grid.dtype, device=grid.device)
        kernel = torch.exp(-0.5 * (offsets / self.smooth) ** 2)
        kernel = rearrange(kernel / kernel.sum(), "k -> 1 1 k")
        pad = lambda g: torch.nn.functional.pad(g, (half, half), mode="reflect")  # noqa: E731
        rows = torch.nn.functional.conv1d(pad(rearrange(grid, "r c -> r 1 c")), kernel)
        cols = torch.nn.functional.conv1d(pad(rearrange(rows, "r 1 c -> c 1 r")), kernel)
        return rearrange(cols, "c 1 r -> r c")

    @torch.no_grad()
    def fit(self, x: Tensor, z: Tensor, iters: int = 10) -> CopulaGridCritic:
        """Fit to samples x [N, 1], z [N, 1] (normal scores)."""
        if x.shape[1] != 1 or z.shape[1] != 1:
            raise ValueError(f"CopulaGridCritic takes one column a side, got {x.shape[1]} + {z.shape[1]}")
        flat = self.cells(x) * self.bins + self.cells(z)
        counts = torch.bincount(flat, minlength=self.bins**2).double().reshape(self.bins, self.bins)
        density = self._blur(counts) + 1e-3  # a pseudo-count: no empty cell, so no log(0)
        for _ in range(iters):  # uniform marginals: Sinkhorn scaling of rows and columns to mean 1
            density = density / density.mean(dim=1, keepdim=True)
            density = density / density.mean(dim=0, keepdim=True)
        self.log_density.copy_(density.log())
        return self

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        scores = self.log_density[self.cells(x), self.cells(z)]
        return scores.clamp(self.floor, self.ceiling).to(x.dtype)

    def score_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        scores = self.log_density[rearrange(self.cells(x), "b -> b 1"), rearrange(self.cells(z), "c -> 1 c")]
        return scores.clamp(self.floor, self.ceiling).to(x.dtype)


class BoundedCritic(nn.Module):
    """``bound·tanh(T / bound)``: another critic's scores softly clipped to (-bound, bound).

    Any critic gives a valid DV lower bound; a bounded one keeps exp(T) on rare product-of-
    marginals pairs from dominating the log-partition, which tames the read-out's variance on
    heavy-tailed data. Keeps ``score_matrix`` when the inner critic has it.
    """

    def __init__(self, critic: nn.Module, bound: float = 3.0) -> None:
        super().__init__()
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        self.critic, self.bound = critic, float(bound)
        if hasattr(critic, "score_matrix"):
            self.score_matrix = self._score_matrix

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.bound * torch.tanh(self.critic(x, z) / self.bound)

    def _score_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        return self.bound * torch.tanh(self.critic.score_matrix(x, z) / self.bound)


class UnitCritic(nn.Module):
    """One critic per unit of z: T_k(x, z_k) = a_k(x) · phi(z_k), scoring every (x_i, z_jk) pair.

    ``phi`` is fixed: z_k, -z_k²/2 (with those two, T_k can be any Gaussian log-density ratio in
    z_k) and ``bumps`` Gaussian bumps of width 1 centred evenly on [-2.5, 2.5], a range meant for
    batch-standardized z. ``a`` is one MLP x -> [K, len(phi)]; its last layer starts at zero.
    ``unit_scores(x, z)`` -> [K, B, B] with entry [k, i, j] = T_k(x_i, z_jk) (joint pairs on the
    diagonal), one einsum for all units and pairs.
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (128, 128), bumps: int = 8) -> None:
        super().__init__()
        self.z_dim, self.features = z_dim, 2 + bumps
        self.coefficients = mlp(x_dim, hidden, z_dim * self.features, zero_last=True)
        self.register_buffer("centres", torch.linspace(-2.5, 2.5, bumps) if bumps else torch.zeros(0))

    def phi(self, z: Tensor) -> Tensor:
        """[B, K] -> [B, K, F] features of each unit's value."""
        bumps = torch.exp(-0.5 * (rearrange(z, "b k -> b k 1") - self.centres.to(z.dtype)) ** 2)
        return torch.cat([torch.stack([z, -0.5 * z * z], dim=-1), bumps], dim=-1)

    def a(self, x: Tensor) -> Tensor:
        """[B, dx] -> [B, K, F] coefficients of each unit's features."""
        return rearrange(self.coefficients(x), "b (k f) -> b k f", k=self.z_dim)

    def unit_scores(self, x: Tensor, z: Tensor) -> Tensor:
        return torch.einsum("ikf,jkf->kij", self.a(x), self.phi(z))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """Joint scores summed over units, [B] (the per-unit estimator reads ``unit_scores``)."""
        return torch.einsum("bkf,bkf->b", self.a(x), self.phi(z))


STANDARDIZE_EPS = 1e-6
"""The default ``eps`` of :func:`standardize_rows` (what :class:`Standardized` uses)."""


def standardize_rows(t: Tensor, eps: float = STANDARDIZE_EPS) -> Tensor:
    """Each column of t [B, D] shifted and scaled to batch mean 0 and std 1 (population variance
    plus ``eps``²); differentiable, so a gradient through it sees only changes of shape, not of scale."""
    # batch_norm without affine parameters or running statistics is exactly this, in one fused
    # kernel each way; eps² inside the root: a constant column (a dead unit) gives 0 with a finite
    # gradient
    return F.batch_norm(t, None, None, training=True, momentum=0.0, eps=eps**2)


class Standardized(nn.Module):
    """Another critic scoring batch-standardized inputs: x and z each shifted and scaled per column
    to mean 0, std 1 over the batch, with the gradient flowing through the batch statistics.

    For minimizing MI through a critic (``mode="minimize"``) this removes the encoder's easiest
    escape: without it, growing or shifting z moves the codes where the critic has never been
    trained, its bound drops while the information stays (or grows). Standardized, a rescaled z
    scores exactly as before, so only changes that do alter the dependence move the bound. Keeps
    ``score_shuffled`` and ``score_matrix`` of the inner critic (the statistics are those of the
    batch's joint rows, which the marginal pairs share)."""

    def __init__(self, critic: nn.Module) -> None:
        super().__init__()
        self.critic = critic
        if hasattr(critic, "score_shuffled"):
            self.score_shuffled = self._score_shuffled
        if hasattr(critic, "score_matrix"):
            self.score_matrix = self._score_matrix

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.critic(standardize_rows(x), standardize_rows(z))

    def _score_shuffled(self, x: Tensor, z: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.critic.score_shuffled(standardize_rows(x), standardize_rows(z), index)

    def _score_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        return self.critic.score_matrix(standardize_rows(x), standardize_rows(z))


class InputNoise(nn.Module):
    """Another critic scoring inputs with Gaussian noise N(0, std²) added, in training mode only
    (``eval()`` scores the clean inputs). The noise keeps a neural critic from memorising its
    training pairs, which otherwise lifts its training bound while its held-out bound falls.
    Keeps ``score_matrix`` when the inner critic has it (one noise draw per sample)."""

    def __init__(self, critic: nn.Module, std: float) -> None:
        super().__init__()
        if not std >= 0:
            raise ValueError(f"std must be >= 0, got {std}")
        self.critic, self.std = critic, float(std)
        if hasattr(critic, "score_matrix"):
            self.score_matrix = self._score_matrix

    def _noisy(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        if not self.training or self.std == 0:
            return x, z
        return x + self.std * torch.randn_like(x), z + self.std * torch.randn_like(z)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.critic(*self._noisy(x, z))

    def _score_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        return self.critic.score_matrix(*self._noisy(x, z))


class SumCritic(nn.Module):
    """T(x, z) = sum of the given critics' scores, e.g. a fitted :class:`GaussianCritic` plus a
    trained :class:`SeparableCritic` that learns what the Gaussian misses. Has ``score_matrix``
    when every part has it."""

    def __init__(self, *critics: nn.Module) -> None:
        super().__init__()
        if not critics:
            raise ValueError("SumCritic needs at least one critic")
        self.parts = nn.ModuleList(critics)
        if all(hasattr(c, "score_matrix") for c in critics):
            self.score_matrix = self._score_matrix

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return sum(c(x, z) for c in self.parts)

    def _score_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        return sum(c.score_matrix(x, z) for c in self.parts)


class _PermuteRows(torch.autograd.Function):
    """t[index] for a permutation ``index``, whose backward is the inverse gather grad[inverse]
    (plain indexing scatters with accumulation, which costs several times more)."""

    @staticmethod
    def forward(ctx: Any, t: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        return t.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (index,) = ctx.saved_tensors
        return grad.index_select(0, inverse_permutation(index)), None


def permute_rows(t: Tensor, index: Tensor) -> Tensor:
    """``t[index]`` along dim 0 for a permutation ``index`` of its rows (differentiable)."""
    return _PermuteRows.apply(t, index)


def cyclic_derangement_rows(n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """[3n]: 0 .. n-1, then a random permutation with no fixed points (follow a random cycle through
    all n items: index[order[i]] = order[i + 1]), then the permutation that undoes it. The first
    2n entries pick the joint then the shuffled rows of z in one gather. One draw of ``generator``;
    the index arithmetic runs on the host's copy of the draw (numpy), and the whole arrives on
    ``device`` in one transfer."""
    order = torch.randperm(n, device="cpu", generator=generator).numpy()
    after = np.roll(order, -1)
    rows = np.empty((3, n), dtype=order.dtype)
    rows[0] = np.arange(n)
    rows[1, order] = after  # index: each item's successor in the cycle
    rows[2, after] = order  # inverse: each item's predecessor
    return torch.from_numpy(rows.reshape(-1)).to(device)


def cyclic_derangement_pair(
    n: int, device: torch.device, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """(index, inverse) [n] each of :func:`cyclic_derangement_rows`."""
    rows = cyclic_derangement_rows(n, device, generator)
    return rows[n : 2 * n], rows[2 * n :]


def _cyclic_derangement(n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """A random permutation with no fixed points: follow a random cycle through all n items."""
    return cyclic_derangement_pair(n, device, generator)[0]


def _off_diagonal(m: Tensor) -> Tensor:
    """[B, B] -> [B, B - 1]: drop the diagonal, keep row order."""
    b = m.shape[0]
    shifted = rearrange(rearrange(m, "i j -> (i j)")[1:], "(i j) -> i j", i=b - 1, j=b + 1)
    return rearrange(rearrange(shifted[:, :-1], "i j -> (i j)"), "(b k) -> b k", b=b)


def score_pairs(
    critic: nn.Module,
    x: Tensor,
    z: Tensor,
    marginals: Marginals = "shuffle",
    z_marginal: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Score joint and product-of-marginal pairs in ONE critic call.

    Args:
        critic: follows the call contract in this module's docstring.
        x: [B, dx]; z: [B, dz], row i of each drawn together from P_XZ.
        marginals: how marginal pairs are formed:
            ``"shuffle"``: x_i with z_{pi(i)} for a random permutation pi without fixed points
            (K = 1 per row);
            ``"all"``: every off-diagonal (x_i, z_j), j != i (K = B - 1; one matmul for critics
            with ``score_matrix``, B² critic rows otherwise);
            ``"given"``: x_i with user-supplied ``z_marginal`` of shape [B, dz] or [B, K, dz].
        generator: seeds the shuffle.

    Returns:
        ``(joint [B], marginal [B, K])`` scores, ready for any bound in :mod:`mine_reg.bounds`.
    """
    b = x.shape[0]
    if z.shape[0] != b:
        raise ValueError(f"x and z must have the same batch size, got {b} and {z.shape[0]}")
    if b < 2 and marginals != "given":
        raise ValueError(
            f"a batch of {b} sample cannot form marginal pairs by {marginals!r}: need at least 2 "
            "(drop the last incomplete batch, or pass z_marginal with marginals='given')"
        )
    if marginals == "shuffle":
        index = _cyclic_derangement(b, z.device, generator)
        if hasattr(critic, "score_shuffled"):
            joint, marginal = critic.score_shuffled(x, z, index)
            return joint, rearrange(marginal, "b -> b 1")
        scores = critic(torch.cat([x, x]), torch.cat([z, z[index]]))
        return scores[:b], rearrange(scores[b:], "b -> b 1")
    if marginals == "all":
        if hasattr(critic, "score_matrix"):
            m = critic.score_matrix(x, z)
        else:
            m = rearrange(
                critic(repeat(x, "i d -> (i j) d", j=b), repeat(z, "j d -> (i j) d", i=b)),
                "(i j) -> i j",
                i=b,
            )
        return torch.diagonal(m), _off_diagonal(m)
    if marginals == "given":
        if z_marginal is None:
            raise ValueError('marginals="given" needs z_marginal of shape [B, dz] or [B, K, dz]')
        if z_marginal.ndim == 2:
            z_marginal = rearrange(z_marginal, "b d -> b 1 d")
        if z_marginal.ndim != 3 or z_marginal.shape[0] != b or z_marginal.shape[2] != z.shape[1]:
            raise ValueError(
                f"z_marginal must have shape [B={b}, K, dz={z.shape[1]}], got {tuple(z_marginal.shape)}"
            )
        k = z_marginal.shape[1]
        xs = torch.cat([x, repeat(x, "b d -> (b k) d", k=k)])
        zs = torch.cat([z, rearrange(z_marginal, "b k d -> (b k) d")])
        scores = critic(xs, zs)
        return scores[:b], rearrange(scores[b:], "(b k) -> b k", k=k)
    raise ValueError(f"unknown marginals {marginals!r}; choose from 'shuffle', 'all', 'given'")
