"""The per-unit MINE estimator ("mine-per-unit") and the regularizer's extra_critic_steps."""

import copy
import math

import pytest
import torch
from torch import nn

from mine_reg import MIRegularizer
from mine_reg.critics import UnitCritic
from mine_reg.per_unit import PerUnitMINE
from mine_reg.protocol import BuildOptions


def _random_critic(x_dim: int, z_dim: int, seed: int) -> UnitCritic:
    torch.manual_seed(seed)
    critic = UnitCritic(x_dim, z_dim, hidden=(6,), bumps=3).double()
    with torch.no_grad():  # the last layer starts at zero: give it weights so scores differ
        last = critic.coefficients[-1]
        last.weight.normal_(0, 0.5)
        last.bias.normal_(0, 0.5)
    return critic


def _float64_batch(b: int, dx: int, dz: int, seed: int):
    """x [b, dx], z [b, dz] drawn with ``seed``, a random critic (seed + 1) and its unstandardized
    float64 estimator."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, dx, generator=gen, dtype=torch.float64)
    z = torch.randn(b, dz, generator=gen, dtype=torch.float64)
    critic = _random_critic(dx, dz, seed=seed + 1)
    return x, z, critic, PerUnitMINE(critic, z_dim=dz, standardize=False).double()


def test_value_is_the_sum_of_per_unit_dv_bounds_by_hand():
    x, z, critic, est = _float64_batch(7, 3, 2, seed=0)
    objective, parts = est(x, z)
    a = critic.coefficients(x).detach().view(7, 2, critic.features)
    total = 0.0
    for k in range(2):
        t = [[float(a[i, k] @ critic.phi(z[j : j + 1])[0, k]) for j in range(7)] for i in range(7)]
        joint = sum(t[i][i] for i in range(7)) / 7
        marginal = [t[i][j] for i in range(7) for j in range(7) if i != j]
        total += joint - math.log(sum(math.exp(v) for v in marginal) / len(marginal))
    assert float(objective.detach()) == pytest.approx(total, rel=1e-10)
    assert float(parts["joint_mean"]) - float(parts["log_partition"]) == pytest.approx(total, rel=1e-10)


def test_gradient_is_mines_corrected_one_per_unit():
    """d objective / d critic = sum_k (E_P[dT_k] - E_Q[dT_k exp T_k] / EMA_k), the EMA of the first
    batch being that batch's E_Q[exp T_k]."""
    x, z, critic, est = _float64_batch(6, 2, 3, seed=2)
    objective, _ = est(x, z)
    params = list(critic.parameters())
    got = torch.autograd.grad(objective, params)
    scores = critic.unit_scores(x, z)
    off = ~torch.eye(6, dtype=torch.bool)
    want_terms = []
    for k in range(3):
        joint, marginal = scores[k].diagonal(), scores[k][off]
        weights = torch.softmax(marginal.detach(), 0)  # exp T / sum exp T: the EMA is this batch's mean
        want_terms.append(joint.mean() - (weights * marginal).sum())
    want = torch.autograd.grad(sum(want_terms), params)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_per_unit_estimates_independent_gaussian_channels():
    """z_k = x_k + N(0, s²) independently: I(X; Z) = sum_k 1/2 log(1 + 1/s²) = 2 x 0.80 = 1.61 nats,
    and the per-unit sum equals it. A trained critic reads it from above 0 to within 0.3 nats on
    held-out batches of 500 (DV's standard error there is about 0.05 per unit)."""
    torch.manual_seed(0)
    s = 0.5
    truth = 2 * 0.5 * math.log(1 + 1 / s**2)
    est = PerUnitMINE.build("mine-per-unit", 2, 2, BuildOptions(hidden=(32,), standardize=True))
    opt = torch.optim.Adam(est.parameters(), lr=3e-3)
    for _ in range(600):
        x = torch.randn(200, 2)
        z = x + s * torch.randn(200, 2)
        loss = -est(x, z)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x = torch.randn(500, 2)
        value = float(est(x, x + s * torch.randn(500, 2), update_ema=False)[0])
    assert abs(value - truth) < 0.3, (value, truth)


def test_refuses_to_maximize_and_other_critics():
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="for mode='minimize' only"):
        MIRegularizer(model, z="0", estimator="mine-per-unit", mode="maximize")
    with pytest.raises(ValueError, match="UnitCritic"):
        PerUnitMINE.build("mine-per-unit", 4, 3, BuildOptions(critic="separable"))
    with pytest.raises(ValueError, match="unit_scores"):
        PerUnitMINE(nn.Linear(2, 1), z_dim=2)


def test_checkpoint_resumes_bit_exactly_with_mines_metrics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4))
    reg = MIRegularizer(model, z="0", estimator="mine-per-unit", beta=1.0, mode="minimize")
    x = torch.randn(32, 3)
    for _ in range(3):
        model(x)
        reg().backward()
    state = copy.deepcopy(reg.state_dict())
    twin_model = nn.Sequential(nn.Linear(3, 4))
    twin_model.load_state_dict(model.state_dict())
    twin = MIRegularizer(twin_model, z="0", estimator="mine-per-unit", beta=1.0, mode="minimize")
    twin.load_state_dict(state)
    a, b = [], []
    for r, m, out in ((reg, model, a), (twin, twin_model, b)):
        m(x)
        r().backward()
        out.append(r.metrics()["mi"])
        out.extend(p.detach().clone() for p in r.critic_parameters())
    assert a[0] == b[0]
    assert all(torch.equal(p, q) for p, q in zip(a[1:], b[1:], strict=True))
    assert list(reg.metrics())[:4] == ["mi", "objective", "joint_mean", "log_partition"]


@pytest.mark.parametrize("extra", [0, 2])
def test_extra_critic_steps_step_the_critic_before_the_term(extra):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4))
    reg = MIRegularizer(model, z="0", estimator="mine", beta=1.0, extra_critic_steps=extra)
    x = torch.randn(16, 3)
    model(x)
    term = reg()
    assert reg.critic_steps == extra  # taken on the detached batch, before the term was scored
    assert all(p.grad is None for p in model.parameters())  # the extra steps reach no model weight
    term.backward()
    assert reg.critic_steps == extra + 1


def test_extra_critic_steps_rejects_bad_values():
    model = nn.Sequential(nn.Linear(3, 4))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="extra_critic_steps must be an integer >= 0"):
            MIRegularizer(model, z="0", extra_critic_steps=bad)
