"""Seeded synthetic data with closed-form mutual information (nats).

Correlated Gaussians with corr(x_i, z_j) = rho·delta_ij have I = -d/2·log(1 - rho²). MI does
not change under invertible maps applied to X and to Z separately, so the warped variants below
keep that truth; the multivariate Student-t has a closed form of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.special import digamma, gammaln

__all__ = [
    "gaussian_mi",
    "rho_for_mi",
    "correlated_gaussian",
    "student_t",
    "student_t_mi",
    "TRANSFORMS",
    "transformed_gaussian",
]


def gaussian_mi(dim: int, rho: float) -> float:
    """I(X; Z) in nats for d-dim Gaussians with corr(x_i, z_j) = rho·delta_ij."""
    return -0.5 * dim * math.log1p(-rho * rho)


def rho_for_mi(mi: float, dim: int) -> float:
    """The per-coordinate correlation giving ``mi`` nats in ``dim`` dimensions."""
    return math.sqrt(-math.expm1(-2.0 * mi / dim))


def correlated_gaussian(n: int, dim: int, rho: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n pairs (x, z), each [n, dim], standard normal margins, corr(x_i, z_j) = rho·delta_ij."""
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must lie in (-1, 1), got {rho}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    z = rho * x + math.sqrt(1.0 - rho * rho) * rng.standard_normal((n, dim))
    return x, z


def _t_entropy_excess(dim: int, dof: float) -> float:
    """Entropy of a standard multivariate t minus the part depending on the scale matrix."""
    a, b = dof / 2.0, (dof + dim) / 2.0
    return gammaln(a) - gammaln(b) + 0.5 * dim * math.log(dof * math.pi) + b * (digamma(b) - digamma(a))


def student_t_mi(dim: int, rho: float, dof: float) -> float:
    """I(X; Z) in nats of a multivariate Student-t with ``dof`` degrees of freedom whose scale
    matrix is that of :func:`correlated_gaussian`: the Gaussian MI plus a term of dof and dims."""
    excess = 2 * _t_entropy_excess(dim, dof) - _t_entropy_excess(2 * dim, dof)
    return gaussian_mi(dim, rho) + float(excess)


def student_t(n: int, dim: int, rho: float, dof: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n pairs from a multivariate Student-t: the Gaussian pair divided by one shared sqrt(W/dof)."""
    x, z = correlated_gaussian(n, dim, rho, seed)
    w = np.random.default_rng(seed + 7919).chisquare(dof, size=(n, 1))
    scale = np.sqrt(dof / w)
    return x * scale, z * scale


def _wiggly(v: np.ndarray) -> np.ndarray:
    # derivative 1 + 0.4·cos(v) + 0.34·cos(1.7v + 1) >= 0.26 > 0: strictly increasing
    return v + 0.4 * np.sin(v) + 0.2 * np.sin(1.7 * v + 1.0)


def _normal_cdf(v: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(v)


# Strictly increasing maps applied elementwise: each is an invertible map of the whole vector.
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda v: v,
    "half_cube": lambda v: v * np.sqrt(np.abs(v)),
    "cube": lambda v: v**3,
    "asinh": np.arcsinh,
    "normal_cdf": _normal_cdf,
    "wiggly": _wiggly,
}


def transformed_gaussian(
    n: int, dim: int, rho: float, transform: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Correlated Gaussians with ``TRANSFORMS[transform]`` applied to x and z; MI is unchanged."""
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose from {sorted(TRANSFORMS)}")
    x, z = correlated_gaussian(n, dim, rho, seed)
    f = TRANSFORMS[transform]
    return f(x), f(z)
