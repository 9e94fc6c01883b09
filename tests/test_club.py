"""CLUB, the variational upper bound on MI in mine_reg.club.

Closed form used throughout. For d-dim standard Gaussians with z = rho·x + s·e, s² = 1 - rho², the
exact conditional is q(z|x) = N(rho·x, s²·I). Per coordinate, with z - rho·x = s·e under the
joint and z, x independent under the product of marginals (so E(z - rho·x)² = 1 + rho²):

    E_p(x,z)[log q]    = -0.5·log(2π s²) - 0.5
    E_p(x)p(z)[log q]  = -0.5·log(2π s²) - 0.5·(1 + rho²) / s²

so I_CLUB = d·[(1 + rho²)/(1 - rho²) - 1] / 2 = d·rho² / (1 - rho²). With u = rho², the true MI is
-d/2·log(1 - u) and u/(1 - u) >= -log(1 - u), so I_CLUB >= 2·I: the bound holds and is loose.

Statistical checks evaluate on fresh samples split into independent chunks of CHUNK rows. With q
fixed (not fitted on those samples) each chunk's all-pairs estimate is exactly unbiased (the
joint term is a mean over joint pairs, the marginal term a mean over pairs (x_i, z_j), j != i,
which are independent draws from p(x)p(z)), so the chunk estimates are i.i.d. around I_CLUB(q)
and their standard error (batch means) is an honest SE. Tolerances of 4 SE have a false-failure
rate of about 6e-5 per check (and the data are seeded, so a pass is reproducible).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mine_reg.club import CLUB, GaussianConditional

pytestmark = pytest.mark.usefixtures("single_thread")

CHUNK = 500


def club_closed_form(dim: int, rho: float) -> float:
    """I_CLUB in nats with the exact conditional of the correlated Gaussians (module docstring)."""
    return dim * rho**2 / (1.0 - rho**2)


def set_exact_conditional(q: GaussianConditional, rho: float) -> GaussianConditional:
    """Overwrite q's nets with the exact conditional N(rho·x, (1 - rho²)·I) (x_dim == z_dim)."""
    d = q.x_dim
    mean, logvar = nn.Linear(d, d), nn.Linear(d, d)
    with torch.no_grad():
        mean.weight.copy_(rho * torch.eye(d))
        mean.bias.zero_()
        logvar.weight.zero_()
        logvar.bias.fill_(math.log1p(-(rho**2)))
    q.mean_net, q.logvar_net = mean, logvar
    return q


def rho_of(truth: float, dim: int) -> float:
    return math.sqrt(-math.expm1(-2.0 * truth / dim))


@torch.no_grad()
def chunked(fn, x: torch.Tensor, z: torch.Tensor) -> tuple[float, float]:
    """Mean and batch-means standard error of fn over independent chunks of CHUNK rows."""
    vals = torch.stack([fn(xc, zc) for xc, zc in zip(x.split(CHUNK), z.split(CHUNK), strict=True)])
    return float(vals.mean()), float(vals.std() / math.sqrt(len(vals)))


def fit_q(club: CLUB, x: torch.Tensor, z: torch.Tensor, steps: int, lr: float = 1e-2) -> None:
    """Full-batch Adam on the NLL of q."""
    opt = torch.optim.Adam(club.q.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        club.learning_loss(x, z).backward()
        opt.step()


# --------------------------------------------------------------------------------------------
# (5) log_prob_matrix and the O(B·dz) all-pairs formula against brute force


def test_log_prob_matrix_matches_log_prob_on_every_pair():
    torch.manual_seed(0)
    q = GaussianConditional(3, 2, hidden=(16,))
    with torch.no_grad():  # make the variance x-dependent, or the test misses precision mix-ups
        q.logvar_net[-1].weight.normal_(0, 0.5)
    x, z = torch.randn(7, 3), torch.randn(5, 2)
    m = q.log_prob_matrix(x, z)
    assert m.shape == (7, 5)
    # entry (i, j) must be log q(z_j | x_i): compare with log_prob on the repeated pairs
    xs, zs = x.repeat_interleave(5, dim=0), z.repeat(7, 1)
    brute = q.log_prob(xs, zs).reshape(7, 5)
    torch.testing.assert_close(m, brute, atol=1e-5, rtol=1e-5)
    # square case: the diagonal is log_prob on the joint rows
    x5 = x[:5]
    torch.testing.assert_close(
        torch.diagonal(q.log_prob_matrix(x5, z)), q.log_prob(x5, z), atol=1e-5, rtol=1e-5
    )


def test_log_prob_includes_the_gaussian_constants():
    # q = N(0, 4·I) whatever x: log q(0 | x) = -0.5·dz·log(2π·4), exactly a standard density.
    q = GaussianConditional(2, 3, hidden=(8,))
    with torch.no_grad():
        q.mean_net[-1].weight.zero_()
        q.mean_net[-1].bias.zero_()
        q.logvar_net[-1].bias.fill_(math.log(4.0))
    lp = q.log_prob(torch.randn(4, 2), torch.zeros(4, 3))
    torch.testing.assert_close(lp, torch.full((4,), -1.5 * math.log(2 * math.pi * 4.0)))


def test_log_prob_matrix_is_accurate_far_from_the_origin():
    # Data and means around 1000 in float32: expanded squares of size 1e6 would lose ~0.1 nats to
    # cancellation (float32 spacing at 1e6 is 0.06); the shift by mean(z) must keep it exact.
    q = set_exact_conditional(GaussianConditional(2, 2), rho=0.8)
    with torch.no_grad():
        q.mean_net.bias.fill_(1000.0)
    x, z = torch.randn(6, 2), torch.randn(9, 2) + 1000.0
    m = q.log_prob_matrix(x, z).double()
    mu = (0.8 * x.double() + 1000.0)[:, None, :]
    var = 1 - 0.8**2
    exact = -0.5 * (((z.double()[None] - mu) ** 2) / var + math.log(2 * math.pi * var)).sum(-1)
    torch.testing.assert_close(m, exact, atol=1e-3, rtol=0)


def test_all_pairs_club_equals_brute_force_off_diagonal_mean():
    torch.manual_seed(1)
    club = CLUB(3, 2, hidden=(16,))
    with torch.no_grad():
        club.q.logvar_net[-1].weight.normal_(0, 0.5)
    x, z = torch.randn(11, 3), torch.randn(11, 2) * 2 + 0.5
    m = club.q.log_prob_matrix(x, z)
    b = m.shape[0]
    brute = torch.diagonal(m).mean() - (m.sum() - torch.diagonal(m).sum()) / (b * (b - 1))
    torch.testing.assert_close(club(x, z), brute, atol=1e-5, rtol=1e-5)
    # B = 2, the smallest batch: one off-diagonal pair per row
    m2 = club.q.log_prob_matrix(x[:2], z[:2])
    torch.testing.assert_close(club(x[:2], z[:2]), torch.diagonal(m2).mean() - (m2[0, 1] + m2[1, 0]) / 2)


def test_sampled_club_equals_brute_force_with_its_negatives():
    from mine_reg.critics import _cyclic_derangement

    torch.manual_seed(2)
    club = CLUB(3, 2, hidden=(16,), sampled=True)
    x, z = torch.randn(9, 3), torch.randn(9, 2)
    value = club(x, z, generator=torch.Generator().manual_seed(5))
    perm = _cyclic_derangement(9, z.device, torch.Generator().manual_seed(5))
    assert (perm != torch.arange(9)).all()
    brute = (club.q.log_prob(x, z) - club.q.log_prob(x, z[perm])).mean()
    torch.testing.assert_close(value, brute, atol=1e-5, rtol=1e-5)


def test_club_is_differentiable_and_learning_loss_is_not_wrt_data():
    club = CLUB(3, 2, hidden=(16,))
    x, z = torch.randn(8, 3, requires_grad=True), torch.randn(8, 2, requires_grad=True)
    gx, gz = torch.autograd.grad(club(x, z), (x, z))
    assert gx.abs().sum() > 0 and gz.abs().sum() > 0
    loss = club.learning_loss(x, z)
    loss.backward()
    assert x.grad is None and z.grad is None  # detached inside: no gradient reaches the model
    assert all(p.grad is not None for p in club.q.parameters())


# --------------------------------------------------------------------------------------------
# (1) values against the closed form


@pytest.mark.parametrize("sampled", [False, True])
def test_exact_conditional_matches_closed_form(gaussian_pair, sampled):
    dim, mi = 2, 1.0
    x, z, truth = gaussian_pair(20_000, dim, mi, seed=3)
    rho = rho_of(truth, dim)
    club = CLUB(dim, dim, sampled=sampled)
    set_exact_conditional(club.q, rho)
    expected = club_closed_form(dim, rho)  # 3.44 nats for d = 2, I = 1 nat
    assert expected >= 2 * truth  # the algebra of the module docstring, as a sanity check
    value, se = chunked(lambda a, b: club(a, b, generator=torch.Generator().manual_seed(0)), x, z)
    # Unbiased chunk estimates (module docstring) -> 4 SE. A missing B/(B-1) factor alone would
    # shift the all-pairs estimate by expected/(B-1) ≈ 0.007 nats, below this resolution; the
    # brute-force test above covers that.
    assert abs(value - expected) <= 4 * se, (value, expected, se)
    # the joint term alone is -h(Z|X) = -d/2·log(2πe·s²): checks log_prob's constants
    nll, nll_se = chunked(lambda a, b: club.learning_loss(a, b), x, z)
    h = 0.5 * dim * math.log(2 * math.pi * math.e * (1 - rho**2))
    assert abs(nll - h) <= 4 * nll_se, (nll, h, nll_se)


def test_fitted_q_gives_an_upper_bound_near_the_closed_form(gaussian_pair):
    dim, mi = 2, 1.0
    x, z, truth = gaussian_pair(8_000, dim, mi, seed=0)
    x_test, z_test, _ = gaussian_pair(20_000, dim, mi, seed=1)
    rho = rho_of(truth, dim)
    club = CLUB(dim, dim, hidden=(32,))
    fit_q(club, x, z, steps=400)

    # Fit quality, held out: NLL - h(Z|X) = E_x KL(p(z|x) || q(z|x)) >= 0. A well-specified model
    # with k parameters overfits by about k/(2n) nats: k = 2·(2·32 + 32 + 32·2 + 2) = 324 here,
    # so ≈ 0.02 nats at n = 8000; 0.05 allows 2.5x that for the MLP's approximation of a linear
    # mean and constant variance. An unfitted q (unit variance, random mean) is off by > 0.3.
    nll, nll_se = chunked(lambda a, b: club.learning_loss(a, b), x_test, z_test)
    h = 0.5 * dim * math.log(2 * math.pi * math.e * (1 - rho**2))
    assert nll - h <= 0.05 + 4 * nll_se, (nll, h)

    value, se = chunked(club, x_test, z_test)
    # Upper bound: with a good q, I_CLUB >= I. Loose here by construction (I_CLUB(exact) ≈ 3.4·I),
    # so this catches only gross failures (e.g. sign errors, a q that ignores x gives 0).
    assert value >= truth - 4 * se, (value, truth, se)
    # Not absurdly large: near the exact conditional's value. For a linear-Gaussian q with slope m
    # and variance v, I_CLUB = d·m·rho / v, so its relative error is δm/m - δv/v. From n = 8000
    # samples the ML estimates have relative SEs sqrt(2/n) ≈ 1.6% (v) and s/(rho·sqrt(n)) ≈ 0.9% (m),
    # ≈ 2% together; 10% is ~5 of those SEs with room for the MLP's approximation error. A q stuck
    # at unit variance would give d·rho² ≈ 1.26 nats (-63%).
    expected = club_closed_form(dim, rho)
    assert abs(value - expected) <= 0.10 * expected + 4 * se, (value, expected, se)


# --------------------------------------------------------------------------------------------
# (2) independent data


def test_independent_data_gives_about_zero(gaussian_pair):
    dim = 2
    x, z, truth = gaussian_pair(8_000, dim, 0.0, seed=0)
    assert truth == 0.0
    x_test, z_test, _ = gaussian_pair(20_000, dim, 0.0, seed=1)
    club = CLUB(dim, dim, hidden=(32,))
    fit_q(club, x, z, steps=400)
    # Held out, I_CLUB(q) = 0 exactly for ANY fixed q when p(x, z) = p(x)p(z) (the joint and the
    # marginal expectations coincide), so the estimate is unbiased for 0: 4 SE, plus 1e-4 for
    # float32 rounding (if q ignores x the estimate is 0 up to rounding and the SE collapses).
    value, se = chunked(club, x_test, z_test)
    assert abs(value) <= 4 * se + 1e-4, (value, se)
    # ... and that SE is small, so the check is not vacuous: |value| < 0.02 nats.
    assert 4 * se + 1e-4 < 0.02, se
    # In sample the fit has seen the pairs, so overfitting biases the estimate up, by roughly the
    # overfitting of the NLL: about k/(2n) ≈ 0.02 nats for k = 324 parameters (see above).
    with torch.no_grad():
        in_sample = float(club(x, z))
    assert -0.01 <= in_sample <= 0.05, in_sample


# --------------------------------------------------------------------------------------------
# (3) minimizing CLUB lowers the true MI of a learnable encoder


def encoder_mi(w: torch.Tensor, noise_std: float) -> float:
    """I(x; W x + noise_std·e) for x ~ N(0, I): 0.5·log det(I + W W^T / noise_std²), in nats."""
    w = w.detach().double()
    eye = torch.eye(w.shape[0], dtype=w.dtype)
    return 0.5 * float(torch.logdet(eye + w @ w.T / noise_std**2))


def test_minimizing_club_reduces_the_true_mi_of_an_encoder():
    dx, dz, noise_std, batch = 4, 2, 1.0, 256
    gen = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(dz, dx, generator=gen))
    start = encoder_mi(w, noise_std)
    club = CLUB(dx, dz, hidden=(32,))
    q_opt = torch.optim.Adam(club.q.parameters(), lr=1e-2)
    w_opt = torch.optim.Adam([w], lr=2e-2)

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(batch, dx, generator=gen)
        return x, x @ w.T + noise_std * torch.randn(batch, dz, generator=gen)

    def q_step() -> None:
        x, z = sample()
        q_opt.zero_grad()
        club.learning_loss(x, z).backward()
        q_opt.step()

    for _ in range(100):  # fit q to the starting encoder before trusting its gradient
        q_step()
    for _ in range(200):
        for _ in range(3):
            q_step()
        x, z = sample()
        w_opt.zero_grad()
        club(x, z).backward()
        w_opt.step()
    end = encoder_mi(w, noise_std)
    # The encoder's only objective is CLUB, so with a gradient of the right sign the MI must fall;
    # at least halving it in 200 steps of Adam at lr 0.02 (|W| entries move by up to ~4 in total,
    # from entries of size ~1) is a loose margin. A zero gradient (z detached somewhere) leaves
    # the MI unchanged and a wrong sign raises it: both fail.
    assert start > 1.0, start
    assert end <= 0.5 * start, (start, end)


# --------------------------------------------------------------------------------------------
# (4) bad input


def test_batch_of_one_raises():
    club = CLUB(3, 2)
    with pytest.raises(ValueError, match=r"at least 2 samples, got 1"):
        club(torch.randn(1, 3), torch.randn(1, 2))
    with pytest.raises(ValueError, match=r"at least 2 samples, got 1"):
        CLUB(3, 2, sampled=True)(torch.randn(1, 3), torch.randn(1, 2))
    # the NLL is defined for a single joint sample
    assert torch.isfinite(club.learning_loss(torch.randn(1, 3), torch.randn(1, 2)))


def test_batch_mismatch_raises():
    club = CLUB(3, 2)
    with pytest.raises(ValueError, match=r"same batch size, got 5 and 4"):
        club(torch.randn(5, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"same batch size, got 5 and 4"):
        club.learning_loss(torch.randn(5, 3), torch.randn(4, 2))


def test_wrong_feature_size_raises():
    club = CLUB(3, 2)
    with pytest.raises(ValueError, match=r"z must have shape \[B, 2\], got \(5, 3\)"):
        club(torch.randn(5, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"x must have shape \[B, 3\], got \(5,\)"):
        club(torch.randn(5), torch.randn(5, 2))


def test_nan_and_inf_raise_with_their_row():
    club = CLUB(3, 2)
    x, z = torch.randn(6, 3), torch.randn(6, 2)
    z[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"z contains NaN or Inf \(1 values; first in row 2\)"):
        club(x, z)
    x[4, 0] = float("inf")
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(1 values; first in row 4\)"):
        club.learning_loss(x, z)
    # check_finite=False skips the check (no device sync) and lets the NaN through
    assert torch.isnan(CLUB(3, 2, check_finite=False)(x, z))


# ----------------------------------------------------------------------- estimator protocol
def test_terms_follow_the_protocol_and_report_club_metrics():
    """CLUB.terms: the model follows the bound through a fixed q, q descends its NLL, and the
    metrics are CLUB's own (the bound and q's log-likelihood), all finite: no placeholders."""
    torch.manual_seed(0)
    club = CLUB(3, 2, hidden=(8,))
    x = torch.randn(16, 3, dtype=torch.float64, requires_grad=True)
    z = (x[:, :2] + 0.5 * torch.randn(16, 2, dtype=torch.float64)).detach().requires_grad_(True)
    club.double()
    terms = club.terms(x, z)
    assert set(terms.metrics) == {"mi", "log_likelihood"}
    assert all(torch.isfinite(v) and not v.requires_grad for v in terms.metrics.values())
    with torch.no_grad():
        bound, nll = club(x, z), club.learning_loss(x, z)
    assert float(terms.mi) == float(bound) == float(terms.metrics["mi"]) == float(terms.model.detach())
    assert float(terms.metrics["log_likelihood"]) == -float(nll)

    params = list(club.parameters())
    # q's gradient from the critic term is exactly the NLL's; the model term gives q nothing
    got = torch.autograd.grad(terms.critic, params, retain_graph=True)
    want = torch.autograd.grad(club.learning_loss(x, z), params)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=0)
    assert all(
        g is None for g in torch.autograd.grad(terms.model, params, retain_graph=True, allow_unused=True)
    )
    # on x and z, the critic term's gradient is minus the model term's (one backward serves both)
    gx_c, gz_c = torch.autograd.grad(terms.critic, [x, z], retain_graph=True)
    gx_m, gz_m = torch.autograd.grad(terms.model, [x, z])
    assert gx_m.abs().max() > 0
    torch.testing.assert_close(gx_c, -gx_m, rtol=0, atol=0)
    torch.testing.assert_close(gz_c, -gz_m, rtol=0, atol=0)


def test_terms_with_the_critic_fixed_send_q_no_gradient():
    club = CLUB(2, 2, hidden=(4,))
    x = torch.randn(8, 2, requires_grad=True)
    z = torch.randn(8, 2)
    terms = club.terms(x, z, train_critic=False)
    params = list(club.parameters())
    for term in (terms.model, terms.critic):
        assert all(g is None for g in torch.autograd.grad(term, params, retain_graph=True, allow_unused=True))
    (gx,) = torch.autograd.grad(terms.model, [x])
    assert gx.abs().max() > 0  # the model side still gets the bound's gradient
    assert set(terms.metrics) == {"mi", "log_likelihood"}
