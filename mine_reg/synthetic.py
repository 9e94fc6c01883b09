"""Seeded synthetic data with closed-form mutual information (nats).

Correlated Gaussians with corr(x_i, z_j) = rho·delta_ij have I = -d/2·log(1 - rho²); a general
joint Gaussian with covariance S = [[S_xx, S_xy], [S_yx, S_yy]] has
I = 0.5·(log det S_xx + log det S_yy - log det S). MI does not change under invertible maps
applied to X and to Z separately (Czyz et al., NeurIPS 2023, "Beyond Normal"), so the warped
variants below (elementwise ``TRANSFORMS``, the norm-dependent rotation :func:`spiral`) keep the
Gaussian truth. The multivariate Student-t and the additive-uniform pair have closed forms of
their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.optimize import brentq
from scipy.special import digamma, gammaln, ndtr

__all__ = [
    "gaussian_mi",
    "rho_for_mi",
    "correlated_gaussian",
    "student_t",
    "student_t_mi",
    "TRANSFORMS",
    "BIMODAL_MIXTURE",
    "transformed_gaussian",
    "gaussian_cov_mi",
    "split_gaussian",
    "dense_covariance",
    "sparse_covariance",
    "random_dense_covariance",
    "plane_generator",
    "spiral",
    "spiral_gaussian",
    "additive_uniform",
    "additive_uniform_mi",
    "near_deterministic",
    "near_deterministic_mi",
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
    return ndtr(v)


# (weight, mean, standard deviation) of the two components: modes at -2 and +2, 6.7 standard
# deviations apart, so the density midway between them is about 1/90 of the lower peak.
BIMODAL_MIXTURE: tuple[tuple[float, float, float], ...] = ((0.35, -2.0, 0.6), (0.65, 2.0, 0.6))


def _bimodal(v: np.ndarray) -> np.ndarray:
    """F^-1(Phi(v)) elementwise, F the CDF of ``BIMODAL_MIXTURE``: a standard normal v becomes a
    draw from the mixture. Solved by bisection on the lower tail F(x) = Phi(v) for v <= 0 and on
    the upper tail 1 - F(x) = Phi(-v) for v > 0, so no precision is lost to 1 - Phi(v) in either
    tail (|v| up to about 37)."""
    v = np.asarray(v, dtype=np.float64)
    upper = v > 0
    target = ndtr(-np.abs(v))  # Phi(v) below 0, 1 - Phi(v) above
    sign = np.where(upper, -1.0, 1.0)
    means = [m for _, m, _ in BIMODAL_MIXTURE]
    widest = max(s for _, _, s in BIMODAL_MIXTURE)
    lo = np.full(v.shape, min(means) - 40.0 * widest)
    hi = np.full(v.shape, max(means) + 40.0 * widest)
    for _ in range(64):  # the bracket shrinks to 2^-64 of 52: below float64 spacing
        mid = 0.5 * (lo + hi)
        # the lower-tail CDF (v <= 0) or the upper-tail survival (v > 0) at mid
        tail = sum(w * ndtr(sign * (mid - m) / sd) for w, m, sd in BIMODAL_MIXTURE)
        left = np.where(upper, tail > target, tail < target)  # the root lies above mid
        lo = np.where(left, mid, lo)
        hi = np.where(left, hi, mid)
    return 0.5 * (lo + hi)


# Strictly increasing maps applied elementwise: each is an invertible map of the whole vector.
TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda v: v,
    "half_cube": lambda v: v * np.sqrt(np.abs(v)),
    "cube": lambda v: v**3,
    "asinh": np.arcsinh,
    "normal_cdf": _normal_cdf,
    "wiggly": _wiggly,
    "bimodal": _bimodal,
    "exp": np.exp,
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


# --------------------------------------------------------------------------- general Gaussians


def _check_covariance(cov: np.ndarray, dim_x: int) -> np.ndarray:
    """``cov`` as a float64 [D, D] array after checking shape, symmetry and positive definiteness,
    with 1 <= dim_x < D."""
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be a square [D, D] matrix, got shape {cov.shape}")
    if not 1 <= dim_x < cov.shape[0]:
        raise ValueError(
            f"dim_x must lie in [1, {cov.shape[0] - 1}] for a {cov.shape[0]}-dim cov, got {dim_x}"
        )
    if not np.all(np.isfinite(cov)) or not np.allclose(cov, cov.T, rtol=0.0, atol=1e-12):
        raise ValueError("cov must be finite and symmetric")
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError("cov must be positive definite") from None
    return cov


def gaussian_cov_mi(cov: np.ndarray, dim_x: int) -> float:
    """I(X; Y) in nats of a joint Gaussian whose covariance ``cov`` [D, D] has X as its first
    ``dim_x`` coordinates: 0.5·(log det S_xx + log det S_yy - log det S), from
    I = h(X) + h(Y) - h(X, Y) with h = 0.5·log det(2·pi·e·S)."""
    cov = _check_covariance(cov, dim_x)
    logdet = lambda m: np.linalg.slogdet(m)[1]  # noqa: E731
    return 0.5 * float(logdet(cov[:dim_x, :dim_x]) + logdet(cov[dim_x:, dim_x:]) - logdet(cov))


def split_gaussian(n: int, cov: np.ndarray, dim_x: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n zero-mean Gaussian draws with covariance ``cov`` [D, D], split into x [n, dim_x] and
    y [n, D - dim_x] (float64); the truth is :func:`gaussian_cov_mi`."""
    cov = _check_covariance(cov, dim_x)
    chol = np.linalg.cholesky(cov)
    joint = np.random.default_rng(seed).standard_normal((n, cov.shape[0])) @ chol.T
    return joint[:, :dim_x], joint[:, dim_x:]


def dense_covariance(dim_x: int, dim_y: int, corr: float = 0.5) -> np.ndarray:
    """The [dim_x + dim_y]² correlation matrix with every off-diagonal entry ``corr``: each x-y,
    x-x and y-y pair equally correlated. Positive definite for corr in (-1/(D - 1), 1)."""
    total = dim_x + dim_y
    if min(dim_x, dim_y) < 1:
        raise ValueError(f"dim_x and dim_y must be >= 1, got {dim_x} and {dim_y}")
    if not -1.0 / (total - 1) < corr < 1.0:
        raise ValueError(f"corr must lie in ({-1.0 / (total - 1):.4g}, 1) for {total} dims, got {corr}")
    return (1.0 - corr) * np.eye(total) + corr


def sparse_covariance(
    dim_x: int, dim_y: int, pairs: int = 2, corr: float = 0.8, within: float = 0.0
) -> np.ndarray:
    """Unit variances; corr(x_i, y_i) = ``corr`` for i < ``pairs``, all other x-y pairs
    uncorrelated; every x-x and every y-y pair correlated by ``within``. With within = 0 the
    truth is -pairs/2·log(1 - corr²) at any dims (1.02 nats for the default two pairs at 0.8)."""
    if not 1 <= pairs <= min(dim_x, dim_y):
        raise ValueError(f"pairs must lie in [1, min(dim_x, dim_y) = {min(dim_x, dim_y)}], got {pairs}")
    cov = np.eye(dim_x + dim_y)
    cov[:dim_x, :dim_x] += within * (1.0 - np.eye(dim_x))
    cov[dim_x:, dim_x:] += within * (1.0 - np.eye(dim_y))
    idx = np.arange(pairs)
    cov[idx, dim_x + idx] = cov[dim_x + idx, idx] = corr
    if np.linalg.eigvalsh(cov).min() <= 0.0:
        raise ValueError(f"corr = {corr} with within = {within} gives no positive definite covariance")
    return cov


def random_dense_covariance(dim_x: int, dim_y: int, mi: float, seed: int = 0) -> np.ndarray:
    """A random correlation matrix [dim_x + dim_y]², dense within and across the blocks, whose
    Gaussian MI is exactly ``mi`` nats.

    Built in whitened coordinates, S_w = [[I, t·C], [t·C^T, I]] with C a random Gaussian matrix
    scaled to largest singular value 1, whose MI is -1/2·sum_i log(1 - t²·s_i²) over the singular
    values s_i of C; t in [0, 1) is solved for ``mi``. Random invertible mixings per block,
    A = Q·diag(exp(u)) (Q a random rotation, u uniform on [-1/2, 1/2], so A·A^T has condition
    number at most e²), and a rescaling to unit variances then make every entry nonzero without
    changing the MI."""
    if not mi >= 0.0 or not math.isfinite(mi):
        raise ValueError(f"mi must be finite and >= 0, got {mi}")
    if min(dim_x, dim_y) < 1:
        raise ValueError(f"dim_x and dim_y must be >= 1, got {dim_x} and {dim_y}")
    rng = np.random.default_rng(seed)
    cross = rng.standard_normal((dim_x, dim_y))
    s = np.linalg.svd(cross, compute_uv=False)
    cross, s = cross / s[0], s / s[0]  # the largest singular value is now 1
    mi_at = lambda t: -0.5 * float(np.sum(np.log1p(-((t * s) ** 2)))) - mi  # noqa: E731
    t_max = 1.0 - 1e-12
    if mi_at(t_max) < 0.0:
        raise ValueError(f"mi = {mi} is too large for a well-conditioned {dim_x} + {dim_y} covariance")
    t = 0.0 if mi == 0.0 else brentq(mi_at, 0.0, t_max, xtol=1e-15, rtol=1e-15)
    white = np.eye(dim_x + dim_y)
    white[:dim_x, dim_x:] = t * cross
    white[dim_x:, :dim_x] = t * cross.T
    mix = np.zeros_like(white)
    for lo, hi in ((0, dim_x), (dim_x, dim_x + dim_y)):
        q, r = np.linalg.qr(rng.standard_normal((hi - lo, hi - lo)))
        q = q * np.sign(np.diag(r))  # a uniformly random rotation (Haar)
        mix[lo:hi, lo:hi] = q * np.exp(rng.uniform(-0.5, 0.5, size=hi - lo))
    cov = mix @ white @ mix.T
    scale = 1.0 / np.sqrt(np.diag(cov))
    cov = cov * scale[:, None] * scale[None, :]
    return 0.5 * (cov + cov.T)


# --------------------------------------------------------------------------- spiral


def plane_generator(dim: int, i: int = 0, j: int = 1) -> np.ndarray:
    """The skew-symmetric [dim, dim] matrix A with A[j, i] = 1, A[i, j] = -1: exp(theta·A) rotates
    the (e_i, e_j) plane by theta and leaves the other coordinates alone."""
    if not 0 <= i < dim or not 0 <= j < dim or i == j:
        raise ValueError(f"need two distinct plane indices in [0, {dim}), got i = {i}, j = {j}")
    a = np.zeros((dim, dim))
    a[j, i], a[i, j] = 1.0, -1.0
    return a


def spiral(v: np.ndarray, speed: float, generator: np.ndarray) -> np.ndarray:
    """The spiral diffeomorphism v -> exp(speed·||v||²·A)·v of each row of v [n, d] (float64).

    A = ``generator`` is skew-symmetric, so exp(theta·A) is a rotation and keeps ||v||: the angle
    a row is turned by depends only on its norm, which the turn preserves, so
    ``spiral(spiral(v, s, A), -s, A)`` recovers v and the map is smooth and invertible, which
    leaves MI unchanged (Czyz et al., NeurIPS 2023). The rotation is applied through the
    eigendecomposition of the Hermitian matrix i·A = V·diag(mu)·V^H, so
    exp(theta·A) = V·diag(exp(-i·theta·mu))·V^H for every row at once.
    """
    v = np.asarray(v, dtype=np.float64)
    a = np.asarray(generator, dtype=np.float64)
    if v.ndim != 2 or a.shape != (v.shape[1], v.shape[1]):
        raise ValueError(f"need v [n, d] and generator [d, d], got {v.shape} and {a.shape}")
    if not np.allclose(a, -a.T, rtol=0.0, atol=1e-12):
        raise ValueError("generator must be skew-symmetric (A^T = -A), or exp(theta·A) is no rotation")
    if not math.isfinite(speed):
        raise ValueError(f"speed must be finite, got {speed}")
    mu, basis = np.linalg.eigh(1j * a)
    theta = speed * np.sum(v * v, axis=1, keepdims=True)  # [n, 1]
    coords = v @ basis.conj()  # row k: V^H v_k
    return np.real((coords * np.exp(-1j * theta * mu)) @ basis.T)


def spiral_gaussian(
    n: int, cov: np.ndarray, dim_x: int, speed: float = 1.0 / 3.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`split_gaussian` draws with :func:`spiral` applied to x, in the plane of its first
    two coordinates, and to y, in the plane of its coordinates 1 and 2 (0 and 1 for 2-dim y).
    Both sides need at least 2 dims. The truth is ``gaussian_cov_mi(cov, dim_x)``."""
    x, y = split_gaussian(n, cov, dim_x, seed)
    if min(x.shape[1], y.shape[1]) < 2:
        raise ValueError(f"a rotation needs >= 2 dims per side, got {x.shape[1]} + {y.shape[1]}")
    plane_y = (1, 2) if y.shape[1] >= 3 else (0, 1)
    x = spiral(x, speed, plane_generator(x.shape[1], 0, 1))
    y = spiral(y, speed, plane_generator(y.shape[1], *plane_y))
    return x, y


# --------------------------------------------------------------------------- additive uniform noise


def additive_uniform_mi(eps: float) -> float:
    """I(X; Y) in nats for X ~ U(0, 1), Y = X + U(-eps, eps).

    I = h(Y) - h(Y | X) = h(Y) - log(2·eps). Y's density is the trapezoid
    p(y) = |[0, 1] ∩ [y - eps, y + eps]| / (2·eps): two linear ramps of width w = min(1, 2·eps)
    around a flat top of height h = w / (2·eps). A ramp contributes
    -integral_0^w (h·t/w)·log(h·t/w) dt = w·h·(1/4 - log(h)/2) to h(Y) and the flat part
    -(1 + 2·eps - 2·w)·h·log(h). With eps < 1/2 (h = 1): h(Y) = eps, so I = eps - log(2·eps);
    with eps >= 1/2 (w = 1, h = 1/(2·eps)): h(Y) = 1/(4·eps) + log(2·eps), so I = 1/(4·eps).
    Both give 1/2 at eps = 1/2.
    """
    if not eps > 0.0 or not math.isfinite(eps):
        raise ValueError(f"eps must be finite and > 0, got {eps}")
    return eps - math.log(2.0 * eps) if eps < 0.5 else 1.0 / (4.0 * eps)


def additive_uniform(n: int, eps: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n pairs x ~ U(0, 1), y = x + U(-eps, eps), each [n, 1] float64; truth
    :func:`additive_uniform_mi`."""
    additive_uniform_mi(eps)  # validates eps
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, size=(n, 1))
    return x, x + rng.uniform(-eps, eps, size=(n, 1))


# --------------------------------------------------------------------------- near-deterministic


def near_deterministic_mi(dim: int, noise: float) -> float:
    """I(X; Y) in nats for X ~ N(0, I_dim), Y = X + noise·E with E ~ N(0, I_dim) independent:
    dim/2·log(1 + 1/noise²), the Gaussian channel capacity formula per coordinate."""
    if not noise > 0.0 or not math.isfinite(noise):
        raise ValueError(f"noise must be finite and > 0, got {noise}")
    return 0.5 * dim * math.log1p(1.0 / (noise * noise))


def near_deterministic(n: int, dim: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n pairs x ~ N(0, I_dim), y = x + noise·N(0, I_dim), each [n, dim] float64; truth
    :func:`near_deterministic_mi`."""
    near_deterministic_mi(dim, noise)  # validates noise
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    return x, x + noise * rng.standard_normal((n, dim))
