"""Critics (statistics networks) T(x, z) -> score, and how marginal pairs are formed.

Call contract shared by every critic, including any user ``nn.Module``:

    critic(x: [B, dx], z: [B, dz]) -> scores [B]        # T(x_i, z_i), row by row

A critic may also define ``score_matrix(x: [B, dx], z: [C, dz]) -> [B, C]`` scoring every
(x_i, z_j) pair at once; :class:`SeparableCritic` does so with one matmul.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

__all__ = ["mlp", "ConcatCritic", "SeparableCritic", "score_pairs", "Marginals"]

Marginals = Literal["shuffle", "all", "given"]

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU, "tanh": nn.Tanh, "softplus": nn.Softplus}


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu") -> nn.Sequential:
    """A plain MLP: Linear -> activation for each hidden width, then a final Linear."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(_ACTIVATIONS)}")
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden]
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), _ACTIVATIONS[activation]()]
    layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


class ConcatCritic(nn.Module):
    """The MINE paper's statistics network: an MLP on the concatenation [x, z] -> one score.

    Scoring all B x B pairs costs B² forward passes, so pair it with ``marginals="shuffle"``.
    """

    def __init__(
        self, x_dim: int, z_dim: int, hidden: Sequence[int] = (256, 256), activation: str = "relu"
    ) -> None:
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.net = mlp(x_dim + z_dim, hidden, 1, activation)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return rearrange(self.net(torch.cat([x, z], dim=-1)), "b 1 -> b")


class SeparableCritic(nn.Module):
    """T(x, z) = f(x) · g(z) with two MLP encoders f and g.

    ``score_matrix`` scores all B x C pairs with a single [B, e] x [e, C] matmul, so every
    off-diagonal pair of a batch serves as a marginal sample (B² - B of them instead of B).
    Memory: the score matrix holds B·C floats (4 MiB at B = C = 1024 in float32, plus the same
    again for its gradient); compute is O(B·C·e) for embedding width e.
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
        self.g = mlp(z_dim, hidden, embed_dim, activation)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return (self.f(x) * self.g(z)).sum(dim=-1)

    def score_matrix(self, x: Tensor, z: Tensor) -> Tensor:
        return torch.einsum("be,ce->bc", self.f(x), self.g(z))


def _cyclic_derangement(n: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """A random permutation with no fixed points: follow a random cycle through all n items."""
    order = torch.randperm(n, device="cpu", generator=generator).to(device)
    index = torch.empty_like(order)
    index[order] = order.roll(-1)
    return index


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
    if marginals == "shuffle":
        z_bar = z[_cyclic_derangement(b, z.device, generator)]
        scores = critic(torch.cat([x, x]), torch.cat([z, z_bar]))
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
