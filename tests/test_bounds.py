"""The variational bounds in mine_reg.bounds, as pure functions of critic scores.

Identities tested exactly (up to float rounding), not statistically, wherever possible:
NWJ <= DV because exp(a - 1) >= a; InfoNCE <= log(K + 1) because each row's log-softmax is <= 0;
a constant critic gives 0 for DV / InfoNCE / SMILE and T = 1 gives 0 for NWJ; at the optimal
critic log p/q, DV equals KL(P || Q) and the JSD objective equals 2·JSD(P, Q) - 2·log 2.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from mine_reg import bounds
from mine_reg.bounds import dv, infonce, jsd, log_mean_exp, nwj, smile

# One intra-op thread (conftest.single_thread): tiny tensors, shared CPUs.
pytestmark = pytest.mark.usefixtures("single_thread")

BOUND_FNS = {"dv": dv, "nwj": nwj, "infonce": infonce, "smile": smile, "jsd": jsd}


def _random_score_sets(n_sets: int, seed: int):
    """Random (joint [B], marginal [B, K]) float64 score sets, K = 1 (shuffled batch) or
    K = B - 1 (all off-diagonal pairs), with scales from 0.01 to 30 and random offsets."""
    rng = np.random.default_rng(seed)
    for i in range(n_sets):
        b = int(rng.integers(2, 65))
        k = 1 if i % 2 == 0 else b - 1
        scale = 10 ** rng.uniform(-2, 1.5)
        joint = rng.normal(rng.normal(0, 3), scale, size=b)
        marginal = rng.normal(rng.normal(0, 3), scale, size=(b, k))
        yield torch.from_numpy(joint), torch.from_numpy(marginal)


def test_nwj_never_exceeds_dv():
    # dv - nwj = exp(a - 1) - a with a = log E_Q[exp T], and exp(a - 1) >= a for every real a.
    n_checked = {1: 0, "B-1": 0}
    for joint, marginal in _random_score_sets(400, seed=0):
        d, n = float(dv(joint, marginal)), float(nwj(joint, marginal))
        assert n <= d + 1e-12 * (1 + abs(d)), (d, n, tuple(marginal.shape))
        a = float(log_mean_exp(marginal))
        assert d - n == pytest.approx(math.exp(a - 1) - a, rel=1e-9, abs=1e-9)
        n_checked[1 if marginal.shape[1] == 1 else "B-1"] += 1
    assert n_checked[1] > 100 and n_checked["B-1"] > 100


def test_nwj_equals_dv_only_at_log_partition_one():
    # Equality in exp(a - 1) >= a holds exactly at a = 1: shift the marginal scores there.
    joint, marginal = next(_random_score_sets(1, seed=1))
    marginal = marginal - log_mean_exp(marginal) + 1.0
    assert float(nwj(joint, marginal)) == pytest.approx(float(dv(joint, marginal)), abs=1e-12)
    assert float(nwj(joint, marginal + 0.5)) < float(dv(joint, marginal + 0.5)) - 0.1


def test_infonce_never_exceeds_log_k_plus_one():
    rng = np.random.default_rng(2)
    for joint, marginal in _random_score_sets(200, seed=3):
        k = marginal.shape[1]
        value = float(infonce(joint, marginal))
        assert value <= math.log(k + 1) + 1e-12
        # Huge joint scores saturate the bound at log(K + 1) but never pass it.
        huge = joint + 10 ** rng.uniform(2, 4)
        value = float(infonce(huge, marginal))
        assert math.isfinite(value)
        assert value <= math.log(k + 1) + 1e-12
    # With joint 1e4 and marginals ~N(0, 1) every log-softmax term is 0 up to exp(-1e4).
    b = 32
    joint, marginal = torch.full((b,), 1e4), torch.randn(b, b - 1)
    assert float(infonce(joint, marginal)) == pytest.approx(math.log(b), abs=1e-5)
    assert float(infonce(joint, marginal[:, :1])) == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize("c", [-3.0, 0.0, 0.7, 2.5])
@pytest.mark.parametrize("k", [1, 15])
def test_constant_critic_gives_zero(c, k):
    b = 16
    const = lambda *shape: torch.full(shape, c, dtype=torch.float64)  # noqa: E731
    assert float(dv(const(b), const(b, k))) == pytest.approx(0.0, abs=1e-12)
    assert float(infonce(const(b), const(b, k))) == pytest.approx(0.0, abs=1e-12)
    assert float(smile(const(b), const(b, k), tau=5.0)) == pytest.approx(0.0, abs=1e-12)
    # NWJ's optimal constant is 1 (E_P[T] - E_Q[exp(T - 1)] = c - exp(c - 1), maximal at c = 1).
    ones = torch.ones(b, dtype=torch.float64), torch.ones(b, k, dtype=torch.float64)
    assert float(nwj(*ones)) == pytest.approx(0.0, abs=1e-12)
    assert float(nwj(const(b), const(b, k))) == pytest.approx(c - math.exp(c - 1), abs=1e-12)


def test_fixed_critic_on_independent_data_matches_population_value():
    """T(x, z) = a·x·z on independent standard normals x, z. Joint and marginal pairs then have
    the same law, so E_P[T] = 0 and E_Q[exp T] = E_x[exp(a² x² / 2)] = (1 - a²)^(-1/2):
    DV = 0.5·log(1 - a²) < 0 and NWJ = -exp(-1)·(1 - a²)^(-1/2). A bound must not report positive
    MI for independent data: InfoNCE and SMILE must be <= 0 up to sampling noise."""
    a, n, k = 0.3, 20_000, 5
    rng = np.random.default_rng(4)
    x, z = rng.standard_normal(n), rng.standard_normal(n)
    joint = torch.from_numpy(a * x * z)
    # Row i pairs x_i with z_{i+1}, ..., z_{i+k}: independent of x_i since the data are i.i.d.
    marginal = torch.from_numpy(a * x[:, None] * np.stack([np.roll(z, -s) for s in range(1, k + 1)], 1))

    # Standard errors: mean of joint scores, and log of the mean of exp(marginal) by the delta
    # method, using row means (rows share x_i, so only the n rows count as independent draws).
    exp_rows = np.exp(marginal.numpy()).mean(axis=1)
    se_joint = joint.numpy().std() / math.sqrt(n)
    se_log_partition = exp_rows.std() / (exp_rows.mean() * math.sqrt(n))
    se_partition = exp_rows.std() / math.sqrt(n)
    tol_dv = 4 * (se_joint + se_log_partition)  # ~0.01; the population DV is -0.047

    dv_pop = 0.5 * math.log(1 - a * a)
    assert float(dv(joint, marginal)) == pytest.approx(dv_pop, abs=tol_dv)
    assert float(dv(joint, marginal)) < 0
    nwj_pop = -math.exp(-1) / math.sqrt(1 - a * a)
    assert float(nwj(joint, marginal)) == pytest.approx(nwj_pop, abs=4 * (se_joint + se_partition / math.e))
    # SMILE at tau = 5 clips only |x·z| > 16.7, probability ~1e-7: it is the DV value here.
    assert float(smile(joint, marginal, tau=5.0)) == pytest.approx(dv_pop, abs=tol_dv)
    # InfoNCE: E[T_ii - log mean_k exp T_ik] <= 0 by Jensen (log-mean-exp >= mean). Per-row terms
    # are i.i.d. given the roll structure's weak dependence; 4 standard errors of their mean.
    rows = torch.cat([joint[:, None], marginal], 1)
    terms = (joint - torch.logsumexp(rows, 1) + math.log(k + 1)).numpy()
    assert float(infonce(joint, marginal)) == pytest.approx(terms.mean(), abs=1e-12)
    assert terms.mean() <= 4 * terms.std() / math.sqrt(n)


def test_dv_matches_numpy():
    rng = np.random.default_rng(5)
    for k in (1, 7):
        joint = rng.normal(0.5, 2.0, size=64)
        marginal = rng.normal(-0.3, 2.0, size=(64, k))
        expected = joint.mean() - math.log(np.exp(marginal).mean())
        # float64 in, float64 out
        assert float(dv(torch.from_numpy(joint), torch.from_numpy(marginal))) == pytest.approx(
            expected, rel=1e-12, abs=1e-12
        )
        # float32 in: float32 arithmetic, relative error ~1e-6 of the score magnitudes (~8)
        got = float(dv(torch.from_numpy(joint).float(), torch.from_numpy(marginal).float()))
        assert got == pytest.approx(expected, abs=1e-5)
    # Marginal scores of any shape are pooled: [B] and [B * K] give the same value as [B, K].
    j, m = torch.from_numpy(joint), torch.from_numpy(marginal)
    assert float(dv(j, m.reshape(-1))) == pytest.approx(float(dv(j, m)), rel=1e-14)


def test_optimal_critic_gives_kl_and_jsd_exactly():
    """Discrete P, Q with dyadic probabilities: each outcome is repeated in proportion to its
    probability, so batch means are exact expectations. At T* = log p/q, DV = KL(P || Q)
    (E_Q[p/q] = 1), NWJ at 1 + T* = KL too, and the JSD objective = 2·JSD(P, Q) - 2·log 2."""
    p = np.array([0.5, 0.25, 0.125, 0.125])
    q = np.array([0.125, 0.25, 0.25, 0.375])
    t_star = np.log(p / q)
    reps = 8
    joint = torch.from_numpy(np.repeat(t_star, (p * reps).astype(int)))
    marginal = torch.from_numpy(np.repeat(t_star, (q * reps).astype(int)))
    kl = float(np.sum(p * np.log(p / q)))
    assert float(dv(joint, marginal)) == pytest.approx(kl, rel=1e-12)
    assert float(nwj(joint + 1, marginal + 1)) == pytest.approx(kl, rel=1e-12)
    m = 0.5 * (p + q)
    js = 0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m))
    assert float(jsd(joint, marginal)) == pytest.approx(2 * js - 2 * math.log(2), rel=1e-12)
    # The optimum is a maximum: any perturbation of the critic lowers every objective.
    rng = np.random.default_rng(6)
    for _ in range(20):
        delta = rng.normal(0, 0.3, size=4)
        j = torch.from_numpy(np.repeat(t_star + delta, (p * reps).astype(int)))
        mm = torch.from_numpy(np.repeat(t_star + delta, (q * reps).astype(int)))
        if np.ptp(delta) > 1e-3:  # a constant shift leaves DV unchanged
            assert float(dv(j, mm)) < kl
        assert float(jsd(j, mm)) < 2 * js - 2 * math.log(2)
        assert float(nwj(j + 1, mm + 1)) < kl


def test_extreme_scores_are_finite_and_exact():
    b, k = 8, 7
    big = torch.full((b,), 1e4)
    big_m = torch.full((b, k), 1e4)
    assert float(dv(big, big_m)) == 0.0
    assert float(dv(-big, -big_m)) == 0.0
    assert float(smile(big, big_m, tau=5.0)) == pytest.approx(1e4 - 5.0)
    assert float(infonce(big, big_m)) == pytest.approx(0.0, abs=1e-3)  # all rows tie
    # Half the marginal scores at +1e4, half at -1e4: log-mean-exp = 1e4 - log 2 exactly.
    mixed = torch.cat([big_m[:, :4], -big_m[:, :4]], 1)
    assert float(dv(big, mixed)) == pytest.approx(math.log(2), abs=2e-3)  # 2 float32 ulps at 1e4
    assert float(log_mean_exp(mixed)) == pytest.approx(1e4 - math.log(2), rel=1e-7)
    # NWJ: exp(-1e4 - 1) underflows to exactly 0, as it should.
    assert float(nwj(big, -big_m)) == 1e4
    # NWJ with huge marginal scores is -exp(9999) mathematically, below the float32 range: it
    # saturates at -(largest float32), never -inf or NaN.
    assert float(nwj(big, big_m)) == -torch.finfo(torch.float32).max
    assert float(jsd(big, -big_m)) == 0.0
    assert float(jsd(-big, big_m)) == -2e4
    for name, fn in BOUND_FNS.items():
        for j, m in [(big, -big_m), (-big, big_m), (big, mixed), (-big, mixed), (big, big_m)]:
            j = j.clone().requires_grad_(True)
            m = m.clone().requires_grad_(True)
            value = fn(j, m)
            assert torch.isfinite(value), (name, float(value))
            value.backward()
            assert torch.isfinite(j.grad).all() and torch.isfinite(m.grad).all(), name


@pytest.mark.parametrize("dtype, unit_roundoff", [(torch.float16, 2.0**-11), (torch.bfloat16, 2.0**-8)])
@pytest.mark.parametrize("name", sorted(BOUND_FNS))
def test_half_precision_inputs_give_float32_outputs(dtype, unit_roundoff, name):
    """Low-precision scores are upcast before any arithmetic, so the result is float32, equals
    the bound of the upcast scores exactly, and differs from the float32 scores' bound only by
    the input rounding: each bound is 1-Lipschitz in max-norm in the joint scores and in the
    marginal scores (means and log-mean-exps), except NWJ whose marginal term has Lipschitz
    constant exp(log-mean-exp - 1) and SMILE/JSD which are no steeper than DV/1."""
    fn = BOUND_FNS[name]
    gen = torch.Generator().manual_seed(7)
    joint = torch.randn(64, generator=gen) * 3 + 1
    marginal = torch.randn(64, 63, generator=gen) * 3
    jl, ml = joint.to(dtype), marginal.to(dtype)
    out = fn(jl, ml)
    assert out.dtype == torch.float32
    assert torch.equal(out, fn(jl.float(), ml.float()))
    # |rounding error| <= u·|s| per score; first-order bound plus 1% for second order, plus
    # float32 arithmetic noise.
    dj = (jl.float() - joint).abs().max()
    dm = (ml.float() - marginal).abs().max()
    assert dj <= unit_roundoff * joint.abs().max() and dm <= unit_roundoff * marginal.abs().max()
    lip_m = math.exp(float(log_mean_exp(marginal)) - 1) if name == "nwj" else 1.0
    tol = 1.01 * (float(dj) + lip_m * float(dm)) + 1e-5
    assert float(out) == pytest.approx(float(fn(joint, marginal)), abs=tol)
    # And the rounding did change the scores, so the check is not vacuous.
    assert float(dm) > 0


def test_smile_with_large_tau_is_dv_and_clips_otherwise():
    gen = torch.Generator().manual_seed(8)
    joint = torch.randn(32, generator=gen) * 4 + 3
    marginal = torch.randn(32, 31, generator=gen) * 4
    assert float(marginal.abs().max()) > 5  # some scores beyond the default tau
    assert float(smile(joint, marginal, tau=1e6)) == float(dv(joint, marginal))
    clipped = smile(joint, marginal, tau=5.0)
    assert float(clipped) != pytest.approx(float(dv(joint, marginal)), abs=1e-3)
    # It is DV with the log-partition of clamped marginal scores; the joint term is not clipped.
    j, m = joint.double().numpy(), marginal.double().numpy()
    expected = j.mean() - math.log(np.exp(np.clip(m, -5.0, 5.0)).mean())
    assert float(clipped) == pytest.approx(expected, abs=1e-5)
    # Scores inside [-tau, tau] are untouched.
    small = marginal.clamp(-4.9, 4.9)
    assert float(smile(joint, small, tau=5.0)) == float(dv(joint, small))
    with pytest.raises(ValueError, match="tau must be positive"):
        smile(joint, marginal, tau=0.0)


def test_shape_errors():
    joint = torch.zeros(8)
    with pytest.raises(ValueError, match=r"shape \[B, K\] with B = 8"):
        infonce(joint, torch.zeros(7, 3))
    with pytest.raises(ValueError, match=r"shape \[B, K\]"):
        infonce(joint, torch.zeros(8, 3, 2))
    # A 1-D marginal of matching length is K = 1.
    m = torch.randn(8)
    assert float(infonce(joint, m)) == float(infonce(joint, m[:, None]))
    for fn in BOUND_FNS.values():
        with pytest.raises(ValueError, match=r"joint scores must have shape \[B\]"):
            fn(torch.zeros(8, 1), torch.zeros(8, 1))
        with pytest.raises(ValueError, match="joint scores must have shape"):
            fn(torch.zeros(0), torch.zeros(8, 1))
        with pytest.raises(ValueError, match="no marginal scores"):
            fn(joint, torch.zeros(8, 0))


def test_bounds_registry_and_log_mean_exp():
    assert bounds.BOUNDS == BOUND_FNS
    s = torch.tensor([[0.0, math.log(3.0)], [math.log(5.0), math.log(7.0)]], dtype=torch.float64)
    assert float(log_mean_exp(s)) == pytest.approx(math.log((1 + 3 + 5 + 7) / 4), rel=1e-14)


# --------------------------------------------------------------------------- any input, any range

F32_MAX = float(torch.finfo(torch.float32).max)
U32 = 2.0**-24  # float32 unit roundoff


def _ref_log_mean_exp(m: np.ndarray, axis=None) -> np.ndarray:
    top = np.max(m, axis=axis, keepdims=True)
    out = top + np.log(np.mean(np.exp(m - top), axis=axis, keepdims=True))
    return out.reshape(()) if axis is None else np.squeeze(out, axis)


def _softplus64(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _reference(name: str, j: np.ndarray, m: np.ndarray) -> float:
    """The bound in float64 numpy arithmetic from the same (float32) scores. Values beyond the
    float64 range only arise for NWJ (exp of a huge log-partition): -inf there."""
    if name == "dv":
        return float(j.mean() - _ref_log_mean_exp(m))
    if name == "smile":
        return float(j.mean() - _ref_log_mean_exp(np.clip(m, -5.0, 5.0)))
    if name == "nwj":
        with np.errstate(over="ignore"):
            return float(j.mean() - np.exp(_ref_log_mean_exp(m) - 1.0))
    if name == "infonce":
        rows = np.concatenate([j[:, None], m], axis=1)
        return float(np.mean(j - _ref_log_mean_exp(rows, axis=1)))
    return float(-_softplus64(-j).mean() - _softplus64(m).mean())


def _extreme_score_sets(scale: float, seed: int):
    """(joint [8], marginal [8, 7]) float32 score sets at magnitude ``scale``: all sign patterns of
    constants, half-and-half marginals, random scores in [-scale, scale] and random scores near
    +-scale."""
    rng = np.random.default_rng(seed)
    b, k = 8, 7
    c = np.float32(scale)
    sets = []
    for sj, sm in itertools.product((1, -1), (1, -1)):
        sets.append((np.full(b, sj * c), np.full((b, k), sm * c)))
        sets.append(
            (np.full(b, sj * c), np.concatenate([np.full((b, 4), sm * c), np.full((b, 3), -sm * c)], 1))
        )
    sets.append((rng.uniform(-1, 1, b) * scale, rng.uniform(-1, 1, (b, k)) * scale))
    sets.append((scale * (1 - rng.uniform(0, 1e-3, b)), -scale * (1 - rng.uniform(0, 1e-3, (b, k)))))
    sets.append((-scale * (1 - rng.uniform(0, 1e-3, b)), scale * (1 - rng.uniform(0, 1e-3, (b, k)))))
    for j, m in sets:
        yield torch.from_numpy(np.asarray(j, np.float32)), torch.from_numpy(np.asarray(m, np.float32))


@pytest.mark.parametrize("scale", [50.0, 85.0, 1e4, 1e20, 1e38, 3e38, F32_MAX])
@pytest.mark.parametrize("name", sorted(BOUND_FNS))
def test_extremes_match_float64_references_with_finite_gradients(name, scale):
    """float32 scores up to the float32 maximum give the float64 reference value, rounded to
    float32 (or +-float32 max where the reference lies beyond the range), with finite gradients.
    Error budget, all from float32 arithmetic on the [B, K] scores (n of them): sums of n terms
    err by <= n·u relative, which moves a log-partition by <= n·u nats and a mean by
    <= n·u·max|s|; the exp term of NWJ moves by its own size times that; the final rounding adds
    u·|value|. So |error| <= (n + 4)·u·(max|s| + |reference| + 1)."""
    fn = BOUND_FNS[name]
    for joint, marginal in _extreme_score_sets(scale, seed=int(scale) % 1000):
        j64, m64 = joint.double().numpy(), marginal.double().numpy()
        ref = _reference(name, j64, m64)
        expected = float(np.clip(ref, -F32_MAX, F32_MAX))  # -inf (NWJ beyond float64) -> -max
        j, m = joint.clone().requires_grad_(True), marginal.clone().requires_grad_(True)
        value = fn(j, m)
        assert value.dtype == torch.float32
        assert torch.isfinite(value), (name, scale, float(value))
        n = m.numel()
        mag = max(float(np.abs(j64).max()), float(np.abs(m64).max()))
        tol = (n + 4) * U32 * (mag + min(abs(ref), F32_MAX) + 1)
        assert float(value.detach()) == pytest.approx(expected, abs=tol), (name, scale, ref)
        value.backward()
        assert torch.isfinite(j.grad).all() and torch.isfinite(m.grad).all(), (name, scale)


@pytest.mark.parametrize("c", [1e38, -1e38, 3e38, -3e38, F32_MAX])
def test_equal_huge_scores_cancel_exactly(c):
    """Large terms of the same size cancel exactly (float64 combination of the parts)."""
    b, k = 8, 7
    j, m = torch.full((b,), c), torch.full((b, k), c)
    assert float(dv(j, m)) == 0.0
    assert float(infonce(j, m)) == 0.0
    assert float(smile(j, m, tau=float("1e39"))) == 0.0
    # Half the marginal scores at -c: DV = log 2 (to float32 rounding of log 2), whatever c.
    if c > 0:
        half = torch.cat([m[:, :4], -m[:, :4]], 1)
        assert float(dv(j, half)) == pytest.approx(math.log(2), rel=U32)
        assert float(log_mean_exp(half)) == float(np.float32(c))


def test_values_beyond_float32_saturate_with_the_unclamped_gradient():
    b, k = 8, 7
    j = torch.full((b,), 3e38, requires_grad=True)
    m = torch.full((b, k), -3e38, requires_grad=True)
    value = dv(j, m)  # 6e38, beyond float32
    assert float(value.detach()) == F32_MAX
    value.backward()
    assert torch.allclose(j.grad, torch.full((b,), 1 / b))
    assert torch.allclose(m.grad, torch.full((b, k), -1 / (b * k)))
    assert float(jsd(-j.detach(), -m.detach())) == -F32_MAX  # -3e38 - 3e38
    # float64 scores keep the float64 range: the same 6e38 is returned as it is.
    assert float(dv(j.detach().double(), m.detach().double())) == pytest.approx(6e38, rel=1e-7)


@pytest.mark.parametrize("level", [10.0, 79.0, 82.0, 88.0, 1e4, 1e38])
def test_nwj_gradient_is_exact_then_follows_the_tangent(level):
    """d NWJ / d joint_i = 1/B; d NWJ / d marginal_ik = -s·softmax_ik with s = exp(a - 1) for
    a - 1 <= 80 and s = e^80 beyond (a = log-mean-exp of the marginal scores); the value is the
    float64 NWJ value, or -float32 max below the range."""
    b, k = 8, 7
    gen = torch.Generator().manual_seed(9)
    joint = torch.randn(b, generator=gen).requires_grad_(True)
    marginal = (level + torch.randn(b, k, generator=gen) * 0.5).requires_grad_(True)
    value = nwj(joint, marginal)
    value.backward()
    m64 = marginal.detach().double()
    a = float(torch.logsumexp(m64.flatten(), 0)) - math.log(b * k)
    with np.errstate(over="ignore"):
        ref = float(joint.detach().double().mean()) - float(np.exp(a - 1))
    assert float(value.detach()) == pytest.approx(max(ref, -F32_MAX), rel=(b * k + 4) * U32)
    assert torch.allclose(joint.grad, torch.full((b,), 1 / b))
    slope = math.exp(min(a - 1, 80.0))
    weights = torch.softmax(m64.flatten(), 0).reshape(b, k)
    assert torch.isfinite(marginal.grad).all()
    assert torch.allclose(marginal.grad.double(), -slope * weights, rtol=1e-4, atol=0)
    assert (marginal.grad < 0).all()


def test_non_tensor_scores_are_rejected_naming_the_argument():
    j, m = torch.zeros(4), torch.zeros(4, 2)
    for name, fn in BOUND_FNS.items():
        with pytest.raises(
            TypeError, match=r"joint scores must be a torch\.Tensor, got numpy\.ndarray; use torch\.as_tensor"
        ):
            fn(np.zeros(4), m)
        with pytest.raises(TypeError, match=r"marginal scores must be a torch\.Tensor, got numpy\.ndarray"):
            fn(j, np.zeros((4, 2)))
        with pytest.raises(TypeError, match=r"joint scores must be a torch\.Tensor, got list"):
            fn([0.0] * 4, m)
        with pytest.raises(TypeError, match=r"marginal scores must be a torch\.Tensor, got float"):
            fn(j, 0.0)
        with pytest.raises(ValueError, match="joint scores must be real"):
            fn(torch.zeros(4, dtype=torch.complex64), m)
        assert torch.isfinite(fn(j, m)), name
    with pytest.raises(TypeError, match=r"scores must be a torch\.Tensor, got numpy\.ndarray"):
        log_mean_exp(np.zeros(3))
    with pytest.raises(ValueError, match="no scores were given"):
        log_mean_exp(torch.zeros(0))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
@pytest.mark.parametrize("name", sorted(BOUND_FNS))
def test_integer_and_bool_scores_equal_the_float32_result(name, dtype):
    fn = BOUND_FNS[name]
    gen = torch.Generator().manual_seed(10)
    high = 2 if dtype == torch.bool else 6
    joint = torch.randint(0, high, (16,), generator=gen).to(dtype)
    marginal = torch.randint(0, high, (16, 15), generator=gen).to(dtype)
    assert joint.float().std() > 0 and marginal.float().std() > 0  # not a constant critic
    out = fn(joint, marginal)
    assert out.dtype == torch.float32
    assert torch.equal(out, fn(joint.float(), marginal.float()))
    ref = _reference(name, joint.double().numpy(), marginal.double().numpy())
    assert float(out) == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("name", sorted(BOUND_FNS))
def test_float64_stays_float64_and_mixed_dtypes_promote(name):
    fn = BOUND_FNS[name]
    gen = torch.Generator().manual_seed(11)
    joint = torch.randn(16, generator=gen, dtype=torch.float64)
    marginal = torch.randn(16, 15, generator=gen, dtype=torch.float64)
    out = fn(joint, marginal)
    assert out.dtype == torch.float64
    ref = _reference(name, joint.numpy(), marginal.numpy())
    assert float(out) == pytest.approx(ref, rel=1e-12, abs=1e-12)
    mixed = fn(joint.float(), marginal)
    assert mixed.dtype == torch.float64
    assert torch.equal(mixed, fn(joint.float().double(), marginal))


def test_non_finite_scores_propagate():
    j, m = torch.zeros(4), torch.zeros(4, 3)
    inf = torch.tensor(math.inf)
    m_inf = m.clone()
    m_inf[0, 0] = inf
    assert float(dv(j, m_inf)) == -math.inf
    assert float(nwj(j, m_inf)) == -math.inf
    assert float(dv(j, torch.full((4, 3), -math.inf))) == math.inf
    j_nan = j.clone()
    j_nan[1] = math.nan
    for fn in BOUND_FNS.values():
        assert math.isnan(float(fn(j_nan, m)))


@pytest.mark.parametrize("tau", [math.nan, math.inf, -math.inf, 0.0, -1.0, 0])
def test_smile_rejects_bad_tau(tau):
    with pytest.raises(ValueError, match="tau must be positive and finite"):
        smile(torch.zeros(4), torch.zeros(4, 3), tau=tau)


def test_smile_tau_types():
    j, m = torch.randn(4), torch.randn(4, 3)
    for bad in ("5", True, torch.tensor(5.0), None):
        with pytest.raises(TypeError, match="tau must be a real number"):
            smile(j, m, tau=bad)
    # Any real number type works and gives the same value.
    assert float(smile(j, m, tau=5)) == float(smile(j, m, tau=np.float64(5.0))) == float(smile(j, m, tau=5.0))


@pytest.mark.parametrize(
    "marginal",
    [
        torch.tensor([[0.5], [-1.0], [2.0]]),
        torch.tensor([[3e38], [3e38], [-3e38]]),  # exp overflows float32 and float64
        torch.full((4, 2), -math.inf),
        torch.tensor([[1.0], [math.inf]]),
        torch.tensor([[1.0], [math.nan]]),
    ],
)
def test_dv_statistics_match_the_float64_reference(marginal: torch.Tensor) -> None:
    joint = torch.tensor([1.5, -0.25, 3e38])
    j_mean, log_partition, extra = bounds.dv_statistics(joint, marginal, torch.tensor(7, dtype=torch.long))
    assert j_mean == pytest.approx(float(joint.double().mean()), rel=1e-15)
    reference = float(torch.logsumexp(marginal.double().reshape(-1), 0) - math.log(marginal.numel()))
    if math.isnan(reference):
        assert math.isnan(log_partition)
    else:
        assert log_partition == pytest.approx(reference, rel=1e-15, abs=1e-15)
    assert extra == 7.0


def test_dv_statistics_float64_joint_mean_does_not_overflow() -> None:
    joint = torch.full((4,), 1.5e308, dtype=torch.float64)  # a plain float64 sum is inf
    j_mean, _ = bounds.dv_statistics(joint, torch.zeros(4, 1, dtype=torch.float64))
    assert j_mean == pytest.approx(1.5e308, rel=1e-15)


def test_saturate_clamps_finite_values_only() -> None:
    top = torch.finfo(torch.float32).max
    assert bounds.saturate(6e38, torch.float32) == top
    assert bounds.saturate(-6e38, torch.float32) == -top
    assert bounds.saturate(6e38, torch.float64) == 6e38
    assert bounds.saturate(1.25, torch.float32) == 1.25
    assert bounds.saturate(math.inf, torch.float32) == math.inf
    assert math.isnan(bounds.saturate(math.nan, torch.float32))
