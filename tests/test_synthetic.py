"""The closed-form truths of mine_reg.synthetic, checked by numerical integration, Monte Carlo
averages of log p(x, y) / (p(x)·p(y)) on the samplers' own draws, and invariance arguments.

Monte Carlo tolerances: with a fixed seed, |mean - truth| <= 5 standard errors of the mean
(a correct closed form fails this with probability below 1e-6 under the CLT).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.linalg import expm
from scipy.special import ndtr, ndtri

from mine_reg import synthetic as syn

MC_SIGMAS = 5.0


def assert_mc_close(samples: np.ndarray, truth: float) -> None:
    """The sample mean of ``samples`` lies within MC_SIGMAS standard errors of ``truth``."""
    mean = float(np.mean(samples))
    se = float(np.std(samples, ddof=1)) / math.sqrt(samples.size)
    assert abs(mean - truth) <= MC_SIGMAS * se, f"MC mean {mean:.5f} vs truth {truth:.5f} (se {se:.5f})"


def gaussian_log_ratio(x: np.ndarray, y: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log p(x, y) - log p(x) - log p(y) per row under the zero-mean Gaussian with ``cov``."""
    dx = x.shape[1]
    joint = stats.multivariate_normal(cov=cov).logpdf(np.hstack([x, y]))
    px = stats.multivariate_normal(cov=cov[:dx, :dx]).logpdf(x)
    py = stats.multivariate_normal(cov=cov[dx:, dx:]).logpdf(y)
    return joint - px - py


# --------------------------------------------------------------------------- general Gaussians


@pytest.mark.parametrize("dim, rho", [(1, 0.5), (3, -0.7), (10, 0.9)])
def test_gaussian_cov_mi_matches_the_diagonal_closed_form(dim, rho):
    cov = np.eye(2 * dim)
    cov[np.arange(dim), dim + np.arange(dim)] = cov[dim + np.arange(dim), np.arange(dim)] = rho
    assert syn.gaussian_cov_mi(cov, dim) == pytest.approx(syn.gaussian_mi(dim, rho), rel=1e-12)


@pytest.mark.parametrize(
    "name, cov, dim_x",
    [
        ("dense", syn.dense_covariance(3, 2, 0.5), 3),
        ("sparse with within-block correlation", syn.sparse_covariance(4, 3, pairs=2, within=0.1), 4),
        ("random dense", syn.random_dense_covariance(3, 3, 1.0, seed=5), 3),
    ],
)
def test_gaussian_cov_mi_monte_carlo(name, cov, dim_x):
    x, y = syn.split_gaussian(100_000, cov, dim_x, seed=11)
    assert_mc_close(gaussian_log_ratio(x, y, cov), syn.gaussian_cov_mi(cov, dim_x))


def test_split_gaussian_shapes_seeding_and_covariance():
    cov = syn.random_dense_covariance(4, 2, 0.8, seed=1)
    x, y = syn.split_gaussian(50_000, cov, 4, seed=3)
    assert x.shape == (50_000, 4) and y.shape == (50_000, 2)
    assert x.dtype == np.float64 and y.dtype == np.float64
    x2, y2 = syn.split_gaussian(50_000, cov, 4, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(x, syn.split_gaussian(50_000, cov, 4, seed=4)[0])
    # each sample covariance entry has standard error sqrt((1 + c²) / n) at unit variances
    emp = np.cov(np.hstack([x, y]), rowvar=False)
    se = np.sqrt((1.0 + cov**2) / x.shape[0])
    assert np.all(np.abs(emp - cov) <= MC_SIGMAS * se)


@pytest.mark.parametrize("dims", [(3, 3), (25, 25), (2, 5)])
def test_sparse_covariance_truth_does_not_depend_on_dims(dims):
    cov = syn.sparse_covariance(*dims, pairs=2, corr=0.8)
    assert syn.gaussian_cov_mi(cov, dims[0]) == pytest.approx(-math.log(1 - 0.64), rel=1e-12)
    assert np.count_nonzero(cov[: dims[0], dims[0] :]) == 2


def test_dense_covariance_has_every_pair_correlated():
    cov = syn.dense_covariance(50, 50, 0.5)
    assert np.all(cov[~np.eye(100, dtype=bool)] == 0.5)
    # eigenvalues 0.5 (x 99) and 50.5: log det S = 99·log 0.5 + log 50.5, blocks alike
    block = 49 * math.log(0.5) + math.log(25.5)
    expected = 0.5 * (2 * block - (99 * math.log(0.5) + math.log(50.5)))
    assert syn.gaussian_cov_mi(cov, 50) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("dims, mi", [((10, 10), 1.0), ((50, 50), 1.0), ((2, 5), 0.5), ((25, 25), 0.0)])
def test_random_dense_covariance_hits_its_mi_and_is_dense(dims, mi):
    cov = syn.random_dense_covariance(*dims, mi, seed=2)
    assert np.allclose(np.diag(cov), 1.0)
    assert syn.gaussian_cov_mi(cov, dims[0]) == pytest.approx(mi, abs=1e-10)
    assert np.all(cov[: dims[0], : dims[0]] != 0) and np.all(cov[dims[0] :, dims[0] :] != 0)
    if mi > 0:
        assert np.all(cov[: dims[0], dims[0] :] != 0)
    assert np.array_equal(cov, syn.random_dense_covariance(*dims, mi, seed=2))


def test_covariance_errors_name_the_problem():
    with pytest.raises(ValueError, match="positive definite"):
        syn.gaussian_cov_mi(np.array([[1.0, 2.0], [2.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="symmetric"):
        syn.gaussian_cov_mi(np.array([[1.0, 0.5], [0.1, 1.0]]), 1)
    with pytest.raises(ValueError, match="dim_x"):
        syn.gaussian_cov_mi(np.eye(3), 3)
    with pytest.raises(ValueError, match="corr"):
        syn.dense_covariance(2, 2, -0.5)
    with pytest.raises(ValueError, match="pairs"):
        syn.sparse_covariance(2, 3, pairs=3)
    with pytest.raises(ValueError, match="positive definite"):
        syn.sparse_covariance(4, 3, corr=0.8, within=0.2)
    with pytest.raises(ValueError, match="too large"):
        syn.random_dense_covariance(1, 1, 50.0)


# --------------------------------------------------------------------------- spiral


def test_spiral_keeps_norms_inverts_and_matches_the_matrix_exponential():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((200, 5))
    g = rng.standard_normal((5, 5))
    gen = g - g.T  # a generic skew-symmetric generator
    w = syn.spiral(v, 0.4, gen)
    assert w.shape == v.shape and w.dtype == np.float64
    assert np.allclose(np.linalg.norm(w, axis=1), np.linalg.norm(v, axis=1), rtol=1e-12)
    assert np.allclose(syn.spiral(w, -0.4, gen), v, atol=1e-10)
    for row in range(3):
        rotation = expm(0.4 * float(v[row] @ v[row]) * gen)
        assert np.allclose(w[row], rotation @ v[row], atol=1e-10)
    assert not np.allclose(w, v)


def test_spiral_in_a_plane_moves_only_that_plane():
    v = np.random.default_rng(1).standard_normal((100, 4))
    w = syn.spiral(v, 1.0, syn.plane_generator(4, 1, 2))
    assert np.array_equal(w[:, [0, 3]], v[:, [0, 3]])
    angle = np.arctan2(w[:, 2], w[:, 1]) - np.arctan2(v[:, 2], v[:, 1])
    expected = np.sum(v * v, axis=1)
    assert np.allclose(np.angle(np.exp(1j * (angle - expected))), 0.0, atol=1e-9)


def test_spiral_gaussian_is_an_invertible_map_of_each_side():
    """Undoing the spirals recovers split_gaussian's draws exactly, so the pair is an invertible
    function of each side of a Gaussian pair and keeps its MI."""
    cov = syn.sparse_covariance(5, 3)
    x, y = syn.spiral_gaussian(1000, cov, 5, speed=0.5, seed=9)
    bx, by = syn.split_gaussian(1000, cov, 5, seed=9)
    assert np.allclose(syn.spiral(x, -0.5, syn.plane_generator(5, 0, 1)), bx, atol=1e-10)
    assert np.allclose(syn.spiral(y, -0.5, syn.plane_generator(3, 1, 2)), by, atol=1e-10)
    assert not np.allclose(x, bx) and not np.allclose(y, by)


def test_spiral_errors():
    with pytest.raises(ValueError, match="skew-symmetric"):
        syn.spiral(np.ones((3, 2)), 1.0, np.eye(2))
    with pytest.raises(ValueError, match="generator"):
        syn.spiral(np.ones((3, 2)), 1.0, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="2 dims"):
        syn.spiral_gaussian(10, syn.sparse_covariance(1, 3, pairs=1), 1)
    with pytest.raises(ValueError, match="plane"):
        syn.plane_generator(3, 1, 1)


# --------------------------------------------------------------------------- additive uniform


def _trapezoid_density(y: float, eps: float) -> float:
    """p(y) for Y = U(0, 1) + U(-eps, eps): the length of [0, 1] ∩ [y - eps, y + eps] / (2·eps)."""
    return max(0.0, min(1.0, y + eps) - max(0.0, y - eps)) / (2.0 * eps)


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.25, 0.5, 0.75, 1.5, 3.0])
def test_additive_uniform_mi_by_numerical_integration(eps):
    def minus_p_log_p(y: float) -> float:
        p = _trapezoid_density(y, eps)
        return -p * math.log(p) if p > 0 else 0.0

    kinks = sorted({-eps, eps, 1 - eps, 1 + eps})
    h_y = sum(
        integrate.quad(minus_p_log_p, a, b, epsabs=1e-13, epsrel=1e-12)[0]
        for a, b in zip(kinks, kinks[1:], strict=False)
    )
    assert syn.additive_uniform_mi(eps) == pytest.approx(h_y - math.log(2 * eps), abs=1e-9)


@pytest.mark.parametrize("eps", [0.1, 0.75])
def test_additive_uniform_monte_carlo(eps):
    x, y = syn.additive_uniform(100_000, eps, seed=4)
    assert x.shape == y.shape == (100_000, 1) and x.dtype == np.float64
    assert np.all(np.abs(y - x) <= eps) and 0.0 <= x.min() and x.max() <= 1.0
    # log p(y | x) - log p(y) with p(y | x) = 1 / (2·eps) on the support
    log_ratio = -math.log(2 * eps) - np.log([_trapezoid_density(v, eps) for v in y[:, 0]])
    assert_mc_close(log_ratio, syn.additive_uniform_mi(eps))


def test_additive_uniform_mi_is_continuous_and_decreasing():
    assert syn.additive_uniform_mi(0.5 - 1e-12) == pytest.approx(syn.additive_uniform_mi(0.5), abs=1e-9)
    grid = np.linspace(0.01, 5.0, 400)
    values = np.array([syn.additive_uniform_mi(e) for e in grid])
    assert np.all(np.diff(values) < 0)
    with pytest.raises(ValueError, match="eps"):
        syn.additive_uniform(10, 0.0)


# --------------------------------------------------------------------------- near-deterministic


@pytest.mark.parametrize("dim, noise", [(1, 1e-3), (3, 0.1), (5, 1.0)])
def test_near_deterministic_truth_and_samples(dim, noise):
    rho = 1.0 / math.sqrt(1.0 + noise * noise)  # corr(x_i, y_i) of y = x + noise·e
    assert syn.near_deterministic_mi(dim, noise) == pytest.approx(syn.gaussian_mi(dim, rho), rel=1e-9)
    x, y = syn.near_deterministic(20_000, dim, noise, seed=2)
    assert x.shape == y.shape == (20_000, dim)
    assert np.allclose(np.std(y - x, axis=0), noise, rtol=0.05)


# --------------------------------------------------------------------------- Student-t


@pytest.mark.parametrize("dim, rho, dof", [(1, 0.0, 1), (1, 0.6, 1), (2, 0.0, 2), (2, 0.6, 2), (3, 0.5, 3)])
def test_student_t_mi_monte_carlo_on_the_samplers_draws(dim, rho, dof):
    x, y = syn.student_t(100_000, dim, rho, dof, seed=6)
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(y))
    shape = np.eye(2 * dim)
    shape[np.arange(dim), dim + np.arange(dim)] = shape[dim + np.arange(dim), np.arange(dim)] = rho
    joint = stats.multivariate_t(shape=shape, df=dof).logpdf(np.hstack([x, y]))
    marginal = stats.multivariate_t(shape=np.eye(dim), df=dof)
    log_ratio = joint - marginal.logpdf(x) - marginal.logpdf(y)
    assert_mc_close(log_ratio, syn.student_t_mi(dim, rho, dof))


def test_student_t_mi_tends_to_the_gaussian_as_dof_grows():
    assert syn.student_t_mi(3, 0.5, 1e6) == pytest.approx(syn.gaussian_mi(3, 0.5), abs=1e-4)
    assert syn.student_t_mi(5, 0.0, 1) > syn.student_t_mi(5, 0.0, 2) > syn.student_t_mi(5, 0.0, 3) > 0


# --------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("name", sorted(syn.TRANSFORMS))
def test_transforms_are_strictly_increasing(name):
    grid = np.linspace(-6.0, 6.0, 2001)
    assert np.all(np.diff(syn.TRANSFORMS[name](grid)) > 0), name


def _mixture_cdf(x: np.ndarray) -> np.ndarray:
    return sum(w * ndtr((x - m) / s) for w, m, s in syn.BIMODAL_MIXTURE)


def test_bimodal_transform_inverts_the_mixture_cdf():
    v = np.linspace(-5.0, 5.0, 1001)
    x = syn.TRANSFORMS["bimodal"](v)
    assert np.allclose(ndtri(_mixture_cdf(x)), v, atol=1e-7)
    far = syn.TRANSFORMS["bimodal"](np.array([-30.0, -10.0, 10.0, 30.0]))
    assert np.all(np.isfinite(far)) and np.all(np.diff(far) > 0)


def test_bimodal_marginal_is_the_mixture():
    x, z = syn.transformed_gaussian(20_000, 2, 0.6, "bimodal", seed=8)
    values = np.sort(np.concatenate([x[:, 0], z[:, 1]]))
    n = values.size
    # Dvoretzky-Kiefer-Wolfowitz: P(sup |F_n - F| > t) <= 2·exp(-2·n·t²), here at 1e-6
    t = math.sqrt(math.log(2 / 1e-6) / (2 * n))
    gap = np.maximum(np.arange(1, n + 1) / n - _mixture_cdf(values), _mixture_cdf(values) - np.arange(n) / n)
    assert gap.max() <= t
    # two modes: many more draws near -2 and +2 than in the trough at 0
    near = lambda c: np.mean(np.abs(values - c) < 0.25)  # noqa: E731
    assert near(-2.0) > 10 * near(0.0) and near(2.0) > 10 * near(0.0)
