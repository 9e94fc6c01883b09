"""The closed-form copula critics: StudentTCritic (t copula) and CopulaGridCritic (1 + 1 columns).

Each is fitted on one half of a sample with known MI and read out on the other half by the DV
bound with every off-diagonal pair of each batch as marginals, as ``estimate_mi`` does.

Tolerance. The read-out is E_P[T] - log E_Q[exp T]; for a critic near the optimal log ratio the
log-partition is close to 0 with little noise, so the standard error is that of the joint
mean, SE = std_P(T) / sqrt(n_heldout), measured on the held-out scores. DV is maximal at the
optimal critic, so a fitted one falls short only to second order: about (fitted parameters) /
(2·n_fit). A read-out must lie within 4·SE plus twice that allowance of the truth, and never
above truth + 4·SE (a held-out DV value is a lower bound in expectation).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import ndtri
from scipy.stats import rankdata

from mine_reg import estimate_mi
from mine_reg.critics import CopulaGridCritic, GaussianCritic, StudentTCritic
from mine_reg.synthetic import (
    additive_uniform,
    additive_uniform_mi,
    correlated_gaussian,
    gaussian_mi,
    rho_for_mi,
    student_t,
    student_t_mi,
)

N = 20000


def normal_scores(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mid-rank normal scores, as estimate_mi's quantile map."""
    scores = np.column_stack([ndtri((rankdata(c) - 0.5) / len(c)) for c in np.hstack([x, y]).T])
    t = torch.tensor(scores)
    return t[:, : x.shape[1]], t[:, x.shape[1] :]


def dv_read_out(
    critic: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500
) -> tuple[float, float]:
    """(DV value with all off-diagonal pairs per batch as marginals, SE of the joint mean)."""
    joint = critic(x, y).double()
    lse, count = [], 0
    for start in range(0, len(x) - batch + 1, batch):
        scores = critic.score_matrix(x[start : start + batch], y[start : start + batch]).double()
        off = ~torch.eye(batch, dtype=torch.bool)
        lse.append(torch.logsumexp(scores[off], 0))
        count += int(off.sum())
    value = joint.mean() - (torch.logsumexp(torch.stack(lse), 0) - math.log(count))
    return float(value), float(joint.std() / math.sqrt(len(joint)))


def halves(x: torch.Tensor, y: torch.Tensor):
    n = len(x) // 2
    return (x[:n], y[:n]), (x[n:], y[n:])


@pytest.mark.parametrize("dim,dof,mi", [(1, 1.0, 0.5), (2, 3.0, 1.0), (5, 2.0, 0.5)])
def test_student_t_critic_recovers_t_mi(dim, dof, mi):
    rho = rho_for_mi(mi, dim)
    truth = student_t_mi(dim, rho, dof)
    (xf, yf), (xh, yh) = halves(*normal_scores(*student_t(N, dim, rho, dof, seed=11)))
    critic = StudentTCritic(dim, dim, dof).fit(xf, yf).clip_at_quantile(xf, yf, 0.99, -5.0)
    value, se = dv_read_out(critic, xh, yh)
    allowance = 2 * (2 * dim) ** 2 / (2 * len(xf))  # scatter entries / (2 n_fit), doubled
    assert value <= truth + 4 * se
    assert abs(value - truth) <= 4 * se + allowance, (value, truth, se)
    # what the t critic is for: the Gaussian critic misses the shared-scale part of the MI
    gauss, _ = dv_read_out(GaussianCritic(dim, dim).fit(xf, yf, shrink=False), xh, yh)
    assert value > gauss + 0.1, (value, gauss)


def test_student_t_critic_tends_to_the_gaussian_critic():
    """At a very large dof the t copula is the Gaussian copula: the scores agree."""
    x, y = normal_scores(*correlated_gaussian(4000, 2, 0.6, seed=3))
    t = StudentTCritic(2, 2, 1e7).fit(x, y)
    g = GaussianCritic(2, 2).fit(x, y, shrink=False)
    # the two fits differ only by the centring (0 against the sample mean, ~1/sqrt(N))
    assert torch.allclose(t(x[:200], y[:200]).double(), g(x[:200], y[:200]).double(), atol=0.03)
    assert torch.allclose(t.score_matrix(x[:50], y[:50]), g.score_matrix(x[:50], y[:50]), atol=0.03)


def test_student_t_critic_score_matrix_matches_rows():
    x, y = normal_scores(*student_t(2000, 3, 0.5, 2.0, seed=5))
    critic = StudentTCritic(3, 3, 2.0).fit(x, y)
    matrix = critic.score_matrix(x[:40], y[:40])
    assert torch.allclose(torch.diagonal(matrix), critic(x[:40], y[:40]), atol=1e-10)
    assert torch.allclose(matrix[3, 7], critic(x[3:4], y[7:8])[0], atol=1e-10)


@pytest.mark.parametrize(
    "case",
    [
        ("gaussian", lambda: correlated_gaussian(N, 1, 0.9, seed=2), gaussian_mi(1, 0.9)),
        ("additive uniform", lambda: additive_uniform(N, 0.1, seed=2), additive_uniform_mi(0.1)),
        ("independent", lambda: correlated_gaussian(N, 1, 0.0, seed=2), 0.0),
    ],
    ids=lambda c: c[0],
)
def test_copula_grid_critic_reads_one_column_a_side(case):
    _, draw, truth = case
    (xf, yf), (xh, yh) = halves(*normal_scores(*draw()))
    bins = 64
    value, se = dv_read_out(CopulaGridCritic(bins, 1.0).fit(xf, yf), xh, yh)
    # a histogram estimate: besides the fitting shortfall (bins² cells smoothed over ~2π cells
    # each: bins² / (2π) effective parameters / (2 n_fit)), the smoothing blurs sharp features;
    # allow 10% of the truth for that
    allowance = 2 * bins**2 / (2 * math.pi) / (2 * len(xf)) + 0.1 * truth
    assert value <= truth + 4 * se
    assert abs(value - truth) <= 4 * se + allowance, (value, truth, se)


def test_copula_grid_critic_refuses_several_columns():
    with pytest.raises(ValueError, match="one column a side"):
        CopulaGridCritic().fit(torch.zeros(10, 2), torch.zeros(10, 1))


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_default_estimate_on_heavy_tailed_t():
    """The default estimate_mi picks the t copula critic for multivariate t data (dof 1, 5 + 5,
    where the Gaussian part alone reads about 0.5 nats low), and lands within 10% of the truth."""
    rho = rho_for_mi(0.5, 5)
    truth = student_t_mi(5, rho, 1.0)
    x, y = student_t(10000, 5, rho, 1.0, seed=21)
    result = estimate_mi(x, y)
    assert abs(result.mi - truth) <= 0.1 * truth, (result.mi, truth)


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_default_estimate_with_duplicated_columns_is_finite():
    """Repeated columns make the t candidates' scatter singular: the estimate skips or survives
    them and stays finite and close to the truth (a repeated column adds no information)."""
    rho = rho_for_mi(0.5, 2)
    truth = student_t_mi(2, rho, 2.0)
    x, y = student_t(10000, 2, rho, 2.0, seed=4)
    result = estimate_mi(np.hstack([x, x[:, :1]]), np.hstack([y, y, y[:, :1]]))
    assert math.isfinite(result.mi)
    assert abs(result.mi - truth) <= max(0.05, 0.1 * truth), (result.mi, truth)
