"""estimate_mi against closed-form Gaussian MI, at N = 4000 (small, for speed).

Tolerance. For correlated Gaussians with corr(x_i, z_j) = rho·delta_ij the optimal critic is
T* = log p(x, z) / (p(x) p(z)), a quadratic form; under P its variance is
2·tr((I - Sigma)²) / 4 = rho² per coordinate pair, so Var_P[T*] = d·rho² (<= 2·I, the usual
rule of thumb). The held-out read-out E_P[T] - log E_Q[exp T] is dominated by the joint mean:
E_Q[exp T* | x] = 1 for every x, so the all-pairs log-partition term is almost noiseless. Hence

    SE = sqrt(d·rho² / n_heldout)            (0.018 to 0.029 nats here, n_heldout = 2000)

and an estimate must lie within 4·SE plus a finite-sample bias allowance of the truth. The
critic is fitted on the n_fit = N - n_heldout other samples; DV is maximal at T*, so fitting
noise costs only second order: the expected shortfall of a fitted Gaussian log-ratio is about
(number of cross-covariance parameters) / (2·n_fit) = d² / (2·n_fit). We allow twice that,
d² / n_fit (<= 0.0125 nats), for Ledoit-Wolf shrinkage and the quantile preprocessing.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mine_reg import SeparableCritic, estimate_mi

# One intra-op thread (conftest.single_thread): faster for these tiny networks on shared CPUs.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]

N = 4000


def tolerance(dim: int, truth: float, n_heldout: int, n_fit: int) -> float:
    rho2 = -math.expm1(-2.0 * truth / dim)
    return 4.0 * math.sqrt(dim * rho2 / n_heldout) + dim * dim / n_fit


def _tol_for(result, dim: int, truth: float) -> float:
    return tolerance(dim, truth, result.n_heldout, N - result.n_heldout)


@pytest.mark.parametrize("dim", [1, 5])
@pytest.mark.parametrize("mi", [0.5, 1.0])
def test_default_estimate_recovers_gaussian_mi(dim, mi, gaussian_pair):
    x, z, truth = gaussian_pair(N, dim, mi, seed=0, as_numpy=True)
    assert truth == pytest.approx(mi)
    res = estimate_mi(x, z, seed=0, device="cpu")
    tol = _tol_for(res, dim, truth)
    assert abs(res.mi - truth) <= tol, (res.mi, truth, tol)
    # The reported stderr (3 held-out batches, so 2 degrees of freedom) must be on the scale of
    # the theoretical SE: s/sigma ~ sqrt(chi2_2 / 2) lies in [0.05, 3] with probability 0.998.
    se = math.sqrt(dim * -math.expm1(-2 * truth / dim) / res.n_heldout)
    assert 0.05 * se <= res.stderr <= 3 * se, (res.stderr, se)


@pytest.mark.parametrize("dim, mi", [(1, 0.5), (2, 1.0)])
def test_neural_critics_alone_recover_gaussian_mi(dim, mi, gaussian_pair):
    # Without the closed-form Gaussian part: a separable critic f(x)·g(z) trained from zero.
    x, z, truth = gaussian_pair(N, dim, mi, seed=1, as_numpy=True)
    res = estimate_mi(x, z, critic="separable", seed=0, device="cpu")
    assert res.best_step > 0  # the trained critic beat the untrained one (T = 0, 0 nats)
    tol = _tol_for(res, dim, truth)
    assert abs(res.mi - truth) <= tol, (res.mi, truth, tol)


class BlindToX(nn.Module):
    """A crippled critic: a separable critic that never sees x (x is replaced by zeros), so its
    score is a function of z alone and its DV value is <= 0 for any weights (z has the same law
    under P and under Q; Jensen)."""

    def __init__(self, x_dim: int, z_dim: int) -> None:
        super().__init__()
        self.inner = SeparableCritic(x_dim, z_dim, hidden=(128, 128), embed_dim=32)

    def forward(self, x, z):
        return self.inner(torch.zeros_like(x), z)


def test_crippled_critic_fails(gaussian_pair):
    dim = 2
    x, z, truth = gaussian_pair(N, dim, 1.0, seed=2, as_numpy=True)
    good = estimate_mi(x, z, critic="separable", seed=0, device="cpu")
    crippled = estimate_mi(x, z, critic=BlindToX(dim, dim), seed=0, device="cpu")
    tol = _tol_for(crippled, dim, truth)
    assert abs(good.mi - truth) <= tol, (good.mi, truth, tol)
    # The same tolerance that accepts a working critic must reject the crippled one.
    assert crippled.mi < truth - tol, (crippled.mi, truth, tol)
    assert crippled.mi <= 4 * math.sqrt(dim * -math.expm1(-2 * truth / dim) / crippled.n_heldout)


@pytest.mark.parametrize("dim", [2, 5])
def test_independent_data_gives_near_zero(dim, gaussian_pair):
    """For independent x, z every critic has population DV <= 0, so a positive read-out is noise:
    held-out SE = sd_P(T) / sqrt(n_heldout). A critic with sd(T) = 0.2 nats (far more than a
    shrunk Gaussian fit on 2000 independent samples gives: cross terms ~ 1/sqrt(2000) = 0.022
    each) has SE = 0.2 / sqrt(2000) = 0.0045, so 0.02 nats is > 4 SE; a negative read-out is
    bounded by -Var(T)/2 ~ -0.02 for the same critic."""
    x, z, truth = gaussian_pair(N, dim, 0.0, seed=3, as_numpy=True)
    assert truth == 0.0
    res = estimate_mi(x, z, seed=0, device="cpu")
    assert abs(res.mi) <= 0.02, res.mi
    assert res.stderr <= 0.005, res.stderr


@pytest.mark.parametrize("estimator", ["mine-f", "infonce", "smile", "jsd"])
def test_other_estimators_on_a_gaussian(estimator, gaussian_pair):
    """d = 2, I = 1 nat. Each variant, read out on held-out data, must land within the same
    tolerance (at most 300 training steps to keep this quick; the Gaussian part is exact at
    step 0, except for NWJ whose optimal critic is 1 + log p/q and which must learn the +1).
    InfoNCE additionally can never exceed log(read-out batch size); its bias at the optimum is
    about e^I / B = 0.004 nats for B ~ 667, inside the tolerance."""
    dim = 2
    x, z, truth = gaussian_pair(N, dim, 1.0, seed=4, as_numpy=True)
    res = estimate_mi(x, z, estimator, seed=0, device="cpu", max_steps=300)
    assert math.isfinite(res.mi) and math.isfinite(res.stderr)
    tol = _tol_for(res, dim, truth)
    assert abs(res.mi - truth) <= tol, (estimator, res.mi, truth, tol)
    if estimator == "infonce":
        # the read-out averages batches of at least batch_size = 512 samples
        assert res.mi <= math.log(math.ceil(res.n_heldout / (res.n_heldout // 512)))


def test_infonce_saturates_at_log_batch_size(gaussian_pair):
    # I = 3 nats but every held-out batch has exactly 8 samples (2000 = 250 x 8): InfoNCE
    # is capped at log 8 = 2.08 nats, whatever the critic.
    x, z, truth = gaussian_pair(N, 2, 3.0, seed=5, as_numpy=True)
    res = estimate_mi(x, z, "infonce", batch_size=8, seed=0, device="cpu", max_steps=200)
    assert res.n_heldout % 8 == 0
    assert res.mi <= math.log(8)
    assert res.mi > 0.5 * math.log(8)  # far from 0: the critic is good, the bound is the cap
    assert res.mi < truth - 0.5


def test_closed_form_critic_is_cross_fitted(gaussian_pair):
    """With the closed-form part alone (critic="gaussian": nothing to train) every sample is read
    out once by the critic refitted on the other four fifths: the standard error is that of all
    N samples, SE = sqrt(d·rho² / N), and the fitting allowance is d² / (0.8·N)."""
    dim, mi = 5, 1.0
    x, z, truth = gaussian_pair(N, dim, mi, seed=2, as_numpy=True)
    res = estimate_mi(x, z, critic="gaussian", seed=0, device="cpu")
    assert res.folds == 5 and res.n_train + res.n_monitor + res.n_heldout == N
    se_all = math.sqrt(dim * -math.expm1(-2 * truth / dim) / N)
    assert abs(res.mi - truth) <= 4 * se_all + dim * dim / (0.8 * N), (res.mi, truth)
    # 5 folds x 2 batches: the pooled SE estimate lies within [0.3, 3] x its true value
    assert 0.3 * se_all <= res.stderr <= 3 * se_all, (res.stderr, se_all)
    neural = estimate_mi(x, z, critic="separable", seed=0, device="cpu", max_steps=50)
    assert neural.folds == 1


def test_no_cross_fitting_near_a_folds_ceiling(gaussian_pair):
    """A read-out on a fifth of N can certify at most about ln(N / 5) nats: an estimate within
    2 nats of that (here 5 nats against ln 800 = 6.7) keeps the single held-out read-out."""
    x, z, truth = gaussian_pair(N, 5, 5.0, seed=3, as_numpy=True)
    res = estimate_mi(x, z, critic="gaussian", seed=0, device="cpu")
    assert res.mi > math.log(N // 5) - 2.0
    assert res.folds == 1
