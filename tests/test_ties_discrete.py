"""``estimate_mi`` on tied, discrete and degenerate data, against exact truths.

Independent data of every kind must read |MI| <= 0.02 nats (the project's target). Discrete pairs
are counted (Miller-Madow plug-in), whose spread under independence is the chi-square's
sqrt(2·df) / (2N) nats with df = (K_x - 1)(K_y - 1): far below 0.02 at the sizes used here. For
dependent discrete pairs the truths are exact sums over the cells, and the tolerance is four of
the estimate's own standard errors. Mixed discrete-continuous pairs go through the trained critic.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

from mine_reg import estimate_mi
from mine_reg.discrete import plugin_mi
from mine_reg.estimate import EstimateWarning
from mine_reg.preprocess import preprocess_pair, quantile_normalize

INDEPENDENT_TOL = 0.02


def _estimate(x, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)
        return estimate_mi(x, y, **kw)


def test_mid_ranks_give_tied_values_one_score():
    a = np.array([[3.0], [1.0], [3.0], [2.0], [3.0], [1.0]])
    scores = quantile_normalize(a)[:, 0]
    assert scores[0] == scores[2] == scores[4] and scores[1] == scores[5]
    assert scores[1] < scores[3] < scores[0]
    # mid-ranks 1.5, 3, 5 -> ndtri((rank - 0.5) / 6): symmetric around the median rank 3.5
    np.testing.assert_allclose(scores[[1, 3, 0]], norm.ppf((np.array([1.5, 3.0, 5.0]) - 0.5) / 6))
    constant = quantile_normalize(np.full((5, 1), 7.0))
    assert np.all(constant == constant[0])


def test_constant_columns_are_dropped_and_a_constant_side_reads_zero():
    rng = np.random.default_rng(0)
    prepared = preprocess_pair(np.c_[np.ones(50), rng.normal(size=50)], rng.normal(size=(50, 1)), "quantile")
    assert prepared.x.shape == (50, 1) and "1 constant column" in prepared.warnings[0]
    n = 4000
    for x, y in [
        (np.ones((n, 1)), np.full((n, 1), 7.0)),
        (np.ones(n), np.sort(rng.normal(size=n))),
    ]:
        for how in ("quantile", "standardize", "none"):
            result = _estimate(x, y, preprocess=how)
            assert result.mi == 0.0 and result.method == "constant"
            assert any("constant" in w for w in result.warnings)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, n: (rng.integers(0, 2, (n, 2)).astype(bool), rng.integers(0, 2, n).astype(bool)),
        lambda rng, n: (rng.integers(0, 3, (n, 3)), rng.integers(0, 3, (n, 2))),
        lambda rng, n: (np.sign(rng.normal(size=n)), np.round(rng.normal(size=(n, 2)))),
    ],
    ids=["booleans-2-vs-1", "ints012-3-vs-2", "sign-vs-rounded"],
)
def test_independent_discrete_data_reads_zero(make):
    x, y = make(np.random.default_rng(1), 4000)
    result = _estimate(x, y)
    assert result.method == "plug-in"
    assert abs(result.mi) <= INDEPENDENT_TOL, result


def test_independent_binary_against_sorted_gaussian_reads_zero():
    # rows sorted by y: row-order tie breaking turned this into 2.15 nats of invented MI
    rng = np.random.default_rng(2)
    n = 4000
    result = _estimate(rng.integers(0, 2, n), np.sort(rng.normal(size=n)))
    assert result.method == "critic"
    assert abs(result.mi) <= INDEPENDENT_TOL, result


def test_plugin_equals_entropies_minus_the_miller_madow_term():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 4, (500, 1)), rng.integers(0, 3, (500, 1))
    y[:200] = x[:200] % 3

    def entropy(*cols):
        _, counts = np.unique(np.concatenate(cols, axis=1), axis=0, return_counts=True)
        p = counts / counts.sum()
        return -(p * np.log(p)).sum(), len(counts)

    (hx, kx), (hy, ky), (hxy, kxy) = entropy(x), entropy(y), entropy(x, y)
    mi, se, cells = plugin_mi(x.astype(float), y.astype(float))
    assert cells == kxy
    assert mi == pytest.approx(hx + hy - hxy - (kxy - kx - ky + 1) / (2 * 500), abs=1e-12)
    assert se > 0


def test_four_level_copy_channel():
    # x uniform on 4 values; y = x with probability 0.7, else uniform: exact MI by the cells
    rng = np.random.default_rng(4)
    n = 20_000
    x = rng.integers(0, 4, n)
    y = np.where(rng.random(n) < 0.7, x, rng.integers(0, 4, n))
    same, other = 0.7 + 0.3 / 4, 0.3 / 4
    truth = math.log(4) + same * math.log(same) + 3 * other * math.log(other)
    result = _estimate(x, y)
    assert result.method == "plug-in"
    assert result.mi == pytest.approx(truth, abs=4 * result.stderr), (result, truth)


def test_signs_of_correlated_gaussians():
    # P(both positive) = 1/4 + arcsin(rho) / (2 pi) (Sheppard), so the 2x2 MI is exact
    rho, n = 0.5, 20_000
    rng = np.random.default_rng(5)
    g = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n)
    same = 0.25 + math.asin(rho) / (2 * math.pi)
    other = 0.5 - same
    truth = 2 * same * math.log(4 * same) + 2 * other * math.log(4 * other)
    result = _estimate(np.sign(g[:, 0]), np.sign(g[:, 1]), max_steps=50)
    assert result.mi == pytest.approx(truth, abs=4 * result.stderr), (result, truth)


@pytest.mark.slow
def test_binary_x_with_gaussian_noise_matches_the_integral():
    """x ~ Bernoulli(1/2), y = x + N(0, s²): I = h(Y) - 0.5·log(2 pi e s²), h(Y) by quadrature.
    The critic path is a lower-bound estimator: allow four held-out standard errors below and
    the project's accuracy criterion, max(0.05 nats, 10%), around the truth."""
    s, n = 0.5, 10_000

    def density(t):
        return 0.5 * norm.pdf(t, 0, s) + 0.5 * norm.pdf(t, 1, s)

    h_y = integrate.quad(lambda t: -density(t) * math.log(density(t)), -8, 9, limit=200)[0]
    truth = h_y - 0.5 * math.log(2 * math.pi * math.e * s**2)
    rng = np.random.default_rng(6)
    x = rng.integers(0, 2, n)
    result = _estimate(x, x + s * rng.normal(size=n))
    assert result.method == "critic"
    tol = max(0.05, 0.1 * truth) + 4 * result.stderr
    assert result.mi == pytest.approx(truth, abs=tol), (result, truth)


def test_many_discrete_cells_fall_back_to_the_critic():
    rng = np.random.default_rng(7)
    x, y = rng.integers(0, 40, (2000, 2)), rng.integers(0, 40, (2000, 1))
    result = _estimate(x, y, max_steps=20)
    assert result.method == "critic"
    assert any("joint cells" in w for w in result.warnings)
    result = _estimate(rng.integers(0, 2, 2000), rng.integers(0, 2, 2000), discrete="never", max_steps=20)
    assert result.method == "critic"


def test_extreme_magnitudes():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    y[:, 0] += x[:, 0]
    base = _estimate(x, y, preprocess="standardize", max_steps=50)
    huge = _estimate(x * 1e300, y * 1e-300, preprocess="standardize", max_steps=50)
    assert math.isfinite(huge.mi) and huge.mi == pytest.approx(base.mi, abs=1e-3)
    with pytest.raises(ValueError, match=r"x has values up to 3.62e\+300, too large for preprocess='none'"):
        estimate_mi(x * 1e300, y, preprocess="none")


def test_bfloat16_tensors_and_inference_mode():
    rng = np.random.default_rng(9)
    x = torch.from_numpy(rng.normal(size=(1000, 2))).float()
    y = x + torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    fast = dict(max_steps=20, eval_every=10)
    as_bf16 = _estimate(x.bfloat16(), y.bfloat16(), **fast)
    as_f32 = _estimate(x.bfloat16().float(), y.bfloat16().float(), **fast)
    assert as_bf16.mi == as_f32.mi
    with torch.inference_mode():
        inside = _estimate(x, y, **fast)
    assert inside.mi == _estimate(x, y, **fast).mi


@pytest.mark.parametrize("n", [1000, 1797])
def test_small_data_sets_work_with_the_defaults(n):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(n, 3))
    result = _estimate(x, x + rng.normal(size=(n, 3)))
    assert result.n_train + result.n_monitor + result.n_heldout == n
    truth = 1.5 * math.log(2)  # three coordinates at SNR 1: 0.5·log 2 each
    assert truth - 0.25 < result.mi < truth + 0.1, result


def test_many_dimensions_at_small_n_never_read_far_below_zero():
    # 300-d inputs with 20-d structure against a random 128-d ReLU layer of them, N = 1,000:
    # the Gaussian part overfits with 400 training samples; the estimate must stay >= -0.05
    rng = np.random.default_rng(11)
    latent = rng.normal(size=(1000, 20))
    x = latent @ rng.normal(size=(20, 300)) + 0.1 * rng.normal(size=(1000, 300))
    z = np.maximum(x @ rng.normal(size=(300, 128)) / math.sqrt(300), 0)
    result = _estimate(x, z, max_steps=200)
    assert result.mi >= -0.05, result
    if result.raw_mi < 0:
        assert any("does not generalise" in w for w in result.warnings)


@pytest.mark.parametrize("dim, noise", [(1, 0.03), (3, 0.3), (5, 0.5)])
def test_near_deterministic_pairs_within_ten_percent(dim, noise):
    # x ~ N(0, I), y = x + noise·N(0, I): I = d/2·log(1 + 1 / noise²) (3.5, 3.7 and 4.0 nats)
    rng = np.random.default_rng(12)
    x = rng.normal(size=(10_000, dim))
    truth = dim / 2 * math.log1p(1 / noise**2)
    result = _estimate(x, x + noise * rng.normal(size=(10_000, dim)))
    assert result.mi == pytest.approx(truth, rel=0.1), (result, truth)


def test_beyond_ln_n_is_finite_and_flagged():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(10_000, 1))
    result = _estimate(x, x + 1e-6 * rng.normal(size=(10_000, 1)), max_steps=50)
    truth = 0.5 * math.log1p(1e12)  # 13.8 nats, beyond ln 5000 = 8.5
    assert math.isfinite(result.mi) and result.mi < truth + 2
    assert any("ln N" in w for w in result.warnings)
