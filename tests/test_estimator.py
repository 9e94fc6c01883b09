"""MIEstimator (MINE's EMA-corrected gradient), score_pairs, and the critics.

The corrected gradient of MINE (Belghazi et al. 2018, Algorithm 1) is

    E_B[dT(x, z)] - E_B[dT(x, z') · exp T(x, z')] / EMA,    EMA = (1 - r)·EMA_old + r·E_B[exp T(x, z')]

where the moving average is updated with the current batch before use (the first batch
initialises it). It is checked here against per-sample gradients taken by hand in float64.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from mine_reg import bounds
from mine_reg.club import CLUB
from mine_reg.critics import (
    BoundedCritic,
    ConcatCritic,
    GaussianCritic,
    InputNoise,
    RadialCritic,
    SeparableCritic,
    SumCritic,
    score_pairs,
)
from mine_reg.estimator import ESTIMATORS, REGISTRY, EMALogPartition, MIEstimator, lookup
from mine_reg.exact import ExactConditional
from mine_reg.protocol import BuildOptions

# One intra-op thread (conftest.single_thread): tiny tensors, shared CPUs.
pytestmark = pytest.mark.usefixtures("single_thread")


class IndexCritic(nn.Module):
    """Scores the pair (x_i, z_j) of index-valued inputs as i·n + j, so pairs can be decoded."""

    def __init__(self, n: int, with_matrix: bool = False) -> None:
        super().__init__()
        self.n = n
        if with_matrix:
            self.score_matrix = lambda x, z: x[:, 0:1] * n + z[:, 0][None, :]

    def forward(self, x, z):
        return x[:, 0] * self.n + z[:, 0]


class NoMatrix(nn.Module):
    """The same critic without ``score_matrix``: forces score_pairs' slow path."""

    def __init__(self, critic: nn.Module) -> None:
        super().__init__()
        self.critic = critic

    def forward(self, x, z):
        return self.critic(x, z)


def _index_inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.arange(n, dtype=torch.float64)[:, None]
    return idx, idx.clone()


def _decode(scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    s = scores.round().long()
    return s // n, s % n


def _derangement(n: int, seed: int) -> torch.Tensor:
    """The permutation that score_pairs(..., "shuffle") uses for a generator seeded with seed."""
    x, z = _index_inputs(n)
    joint, marginal = score_pairs(
        IndexCritic(n), x, z, "shuffle", generator=torch.Generator().manual_seed(seed)
    )
    return _decode(marginal[:, 0], n)[1]


def _randomise_last_layer(critic: nn.Module, seed: int, std: float = 1.0) -> nn.Module:
    """Critics start at T = 0; give the zero-initialised last layer random weights so that the
    scores (and the gradients below) are non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    for module in critic.modules():
        if isinstance(module, nn.Linear) and not module.weight.any():
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * std)
    return critic


def _flat_grad(scalar: torch.Tensor, params: list[nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(scalar, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)]
    )


def _manual_mine_gradient(
    critic: nn.Module, x, z, z_marg, old_log_ema: float, old_steps: int, rate: float
) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """MINE's corrected gradient from per-sample gradients, all in float64.

    Returns (gradient, new EMA of E[exp T], joint scores, marginal scores)."""
    critic = copy.deepcopy(critic).double()
    params = list(critic.parameters())
    x, z, z_marg = x.double(), z.double(), z_marg.double()
    b, k, dz = z_marg.shape
    joint = critic(x, z)
    marg = critic(x.repeat_interleave(k, dim=0), z_marg.reshape(b * k, dz))
    grad_joint = torch.stack([_flat_grad(s, params) for s in joint])  # [B, P]
    grad_marg = torch.stack([_flat_grad(s, params) for s in marg])  # [B*K, P]
    batch = float(marg.detach().exp().mean())
    ema = batch if old_steps == 0 else (1 - rate) * math.exp(old_log_ema) + rate * batch
    w = marg.detach().exp()[:, None]
    grad = grad_joint.mean(0) - (grad_marg * w).mean(0) / ema
    return grad, ema, joint.detach(), marg.detach().reshape(b, k)


def _setup(marginals: str, seed: int = 0, b: int = 12, k: int = 3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 2, generator=gen)
    z = 0.8 * x + 0.6 * torch.randn(b, 2, generator=gen)
    critic = _randomise_last_layer(ConcatCritic(2, 2, hidden=(8, 8)), seed)
    if marginals == "given":
        z_marg = torch.randn(b, k, 2, generator=gen)
        kwargs = lambda: {"z_marginal": z_marg}  # noqa: E731
    else:
        z_marg = z[_derangement(b, seed + 100)][:, None, :]
        # A freshly seeded generator per call: each shuffle consumes the generator.
        kwargs = lambda: {"generator": torch.Generator().manual_seed(seed + 100)}  # noqa: E731
    return critic, x, z, z_marg, kwargs


@pytest.mark.parametrize("marginals", ["given", "shuffle"])
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_mine_gradient_matches_algorithm_1(marginals, rate):
    critic, x, z, z_marg, kwargs = _setup(marginals)
    est = MIEstimator(critic, "mine", marginals=marginals, ema_rate=rate)
    # Prime the EMA far from this batch's E[exp T] (3 times it), as after earlier batches.
    with torch.no_grad():
        batch_log_mean_exp = bounds.log_mean_exp(
            critic(x.repeat_interleave(z_marg.shape[1], 0), z_marg.flatten(0, 1))
        )
    old_log_ema = float(batch_log_mean_exp) + math.log(3)
    est.ema.log_ema.fill_(old_log_ema)
    est.ema.steps.fill_(5)

    out = est(x, z, **kwargs())
    params = list(critic.parameters())
    auto = _flat_grad(out.objective, params).double()
    manual, ema, joint64, marg64 = _manual_mine_gradient(critic, x, z, z_marg, old_log_ema, 5, rate)

    # float32 autograd vs float64 reference: relative error ~1e-6 expected.
    assert torch.linalg.norm(auto - manual) <= 1e-5 * torch.linalg.norm(manual)
    # The EMA was updated with this batch before use, and advanced one step.
    assert float(est.ema.log_ema) == pytest.approx(math.log(ema), abs=1e-6)
    assert int(est.ema.steps) == 6
    # The value (objective and read-out) is the plain DV bound of the scores.
    dv64 = float(bounds.dv(joint64, marg64))
    assert float(out.objective.detach()) == pytest.approx(dv64, abs=1e-5)
    assert float(out.mi.detach()) == pytest.approx(dv64, abs=1e-5)
    assert float(out.joint_mean) == pytest.approx(float(joint64.mean()), abs=1e-5)
    assert float(out.log_partition) == pytest.approx(float(bounds.log_mean_exp(marg64)), abs=1e-5)

    # mine-biased: the plain minibatch DV gradient, i.e. the formula with EMA = batch mean.
    biased_est = MIEstimator(critic, "mine-biased", marginals=marginals)
    biased = _flat_grad(biased_est(x, z, **kwargs()).objective, params).double()
    manual_biased, _, _, _ = _manual_mine_gradient(critic, x, z, z_marg, 0.0, 0, rate)
    assert torch.linalg.norm(biased - manual_biased) <= 1e-5 * torch.linalg.norm(manual_biased)
    # Here EMA = (3 - 2r)·batch mean, so the corrected gradient differs by a lot.
    assert torch.linalg.norm(auto - biased) > 0.05 * torch.linalg.norm(biased)
    assert int(biased_est.ema.steps) == 0  # mine-biased never touches the EMA


def test_gradient_keeps_the_moving_average_of_its_own_call():
    """Two calls before one backward pass (gradient accumulation): each call's gradient divides by
    the average as it stood after that call's update, not by the one a later call left."""
    critic, x, z, z_marg, kwargs = _setup("given", seed=3)
    est = MIEstimator(critic, "mine", marginals="given", ema_rate=0.5)
    est.ema.log_ema.fill_(2.0)
    est.ema.steps.fill_(5)
    first = est(x, z, **kwargs())
    log_ema_first = float(est.ema.log_ema)
    est(2.0 * x, z, **kwargs())  # moves the average again
    assert float(est.ema.log_ema) != pytest.approx(log_ema_first, abs=1e-3)
    params = list(critic.parameters())
    auto = _flat_grad(first.objective, params).double()
    manual, ema, _, _ = _manual_mine_gradient(critic, x, z, z_marg, 2.0, 5, 0.5)
    assert math.log(ema) == pytest.approx(log_ema_first, abs=1e-6)
    assert torch.linalg.norm(auto - manual) <= 1e-5 * torch.linalg.norm(manual)


@pytest.mark.parametrize("rate", [0.01, 0.5, 1.0])
def test_fold_follows_the_same_recursion_as_update(rate):
    values = [0.3, -2.0, 5.0, math.inf, 1.0, -math.inf]
    by_tensor, by_float = EMALogPartition(rate), EMALogPartition(rate)
    for v in values:
        expected = float(by_tensor.update(torch.tensor(v, dtype=torch.float64)))
        got = by_float.fold(v, float(by_float.log_ema), int(by_float.steps))
        if math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected, rel=1e-14, abs=1e-14)
        assert float(by_float.log_ema) == got or math.isnan(got)
        assert int(by_float.steps) == int(by_tensor.steps)
    with pytest.raises(ValueError, match="scalar average"):
        EMALogPartition(shape=(3,)).fold(0.0, 0.0, 0)


def test_first_update_initialises_ema_and_gives_plain_dv_gradient():
    critic, x, z, z_marg, kwargs = _setup("given", seed=1)
    est = MIEstimator(critic, "mine", marginals="given", ema_rate=0.01)
    assert int(est.ema.steps) == 0
    out = est(x, z, **kwargs())
    joint, marginal = est.scores(x, z, **kwargs())
    assert int(est.ema.steps) == 1
    marginal_value = marginal.detach()
    assert float(est.ema.log_ema) == pytest.approx(float(bounds.log_mean_exp(marginal_value)), abs=1e-6)
    # With EMA = the batch's own E[exp T] the corrected gradient is the DV gradient.
    params = list(critic.parameters())
    corrected = _flat_grad(out.objective, params)
    plain = _flat_grad(bounds.dv(joint, marginal), params)
    assert torch.allclose(corrected, plain, rtol=1e-5, atol=1e-7)
    assert plain.abs().max() > 1e-3


def test_ema_not_updated_without_grad():
    critic, x, z, z_marg, kwargs = _setup("given", seed=2)
    est = MIEstimator(critic, "mine", marginals="given")
    with torch.no_grad():
        out = est(x, z, **kwargs())
        joint, marginal = est.scores(x, z, **kwargs())
    assert int(est.ema.steps) == 0 and float(est.ema.log_ema) == 0.0
    # the estimator takes the log-partition by one float64 logsumexp, bounds.dv exponentiates in
    # the scores' float32: the two agree to float32 rounding (a few ulp of a value near 1 nat)
    assert float(out.objective) == pytest.approx(float(bounds.dv(joint, marginal)), rel=1e-6, abs=1e-6)


def test_ema_recursion_and_rate_validation():
    rate = 0.2
    ema = EMALogPartition(rate)
    values = [0.3, -1.0, 2.0, 0.5, 1.5]
    expected = None
    for v in values:
        got = float(ema.update(torch.tensor(v, dtype=torch.float64)))
        expected = math.exp(v) if expected is None else (1 - rate) * expected + rate * math.exp(v)
        assert got == pytest.approx(math.log(expected), rel=1e-12, abs=1e-12)
    assert int(ema.steps) == len(values)
    full = EMALogPartition(1.0)
    for v in values:
        assert float(full.update(torch.tensor(v, dtype=torch.float64))) == pytest.approx(v, rel=1e-12)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="ema_rate must lie in"):
            EMALogPartition(bad)


def test_ema_lives_in_state_dict_and_round_trips():
    critic, x, z, z_marg, kwargs = _setup("given", seed=3)
    est = MIEstimator(critic, "mine", marginals="given", ema_rate=0.1)
    for _ in range(3):
        est(x, z, **kwargs())
    state = est.state_dict()
    assert {"ema.log_ema", "ema.steps"} <= set(state)
    assert int(state["ema.steps"]) == 3
    assert state["ema.log_ema"].dtype == torch.float64

    fresh = MIEstimator(ConcatCritic(2, 2, hidden=(8, 8)), "mine", marginals="given", ema_rate=0.1)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.ema.log_ema, est.ema.log_ema)
    assert torch.equal(fresh.ema.steps, est.ema.steps)
    # The restored estimator continues exactly like the original.
    a, b = est(x, z, **kwargs()), fresh(x, z, **kwargs())
    assert float(a.objective.detach()) == float(b.objective.detach())
    assert torch.equal(fresh.ema.log_ema, est.ema.log_ema)
    grads = [_flat_grad(e(x, z, **kwargs()).objective, list(e.critic.parameters())) for e in (est, fresh)]
    assert torch.allclose(grads[0], grads[1], rtol=1e-6, atol=1e-8)


def test_estimator_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown estimator"):
        MIEstimator(ConcatCritic(1, 1), "mine-plus")
    with pytest.raises(ValueError, match="unknown marginals"):
        MIEstimator(ConcatCritic(1, 1), "mine", marginals="pairs")


# ---------------------------------------------------------------------- registry, protocol
def test_registry_declares_every_estimator_and_its_properties():
    lower = {"mine", "mine-biased", "mine-f", "nwj", "infonce", "smile", "jsd"}
    upper = {"club", "l1out", "club-exact", "mine-per-unit"}
    assert set(REGISTRY) == lower | upper
    # ESTIMATORS: the MIEstimator family, read-out bound at index 1 (what estimate_mi reads)
    assert set(ESTIMATORS) == lower
    for name, spec in ESTIMATORS.items():
        assert spec[1] == spec.readout and {spec.objective, spec.readout} <= set(bounds.BOUNDS), name
        assert spec.gradient is None or spec.gradient in bounds.BOUNDS
    assert [n for n, s in REGISTRY.items() if s.moving_average] == ["mine", "mine-per-unit"]
    assert {n for n, s in REGISTRY.items() if s.upper_bound} == upper
    assert REGISTRY["club"].family is CLUB
    assert REGISTRY["l1out"].family is REGISTRY["club-exact"].family is ExactConditional
    assert (REGISTRY["smile"].gradient, REGISTRY["jsd"].readout) == ("jsd", "dv")


def test_lookup_names_the_choices_and_the_family():
    with pytest.raises(ValueError, match=r"unknown estimator 'mien'; choose from \[.*'club'.*'mine'"):
        lookup("mien")
    with pytest.raises(ValueError, match=r"unknown estimator 'club2'; choose from \['infonce'"):
        lookup("club2", MIEstimator)
    with pytest.raises(ValueError, match="estimator 'club' is built by CLUB, not MIEstimator"):
        MIEstimator(ConcatCritic(1, 1), "club")
    assert lookup("club") is REGISTRY["club"]


def test_usage_rules_follow_from_the_registry():
    REGISTRY["mine"].check_use("mine", "maximize", True, True)  # a lower bound may do anything
    with pytest.raises(ValueError, match=r"upper bound, for mode='minimize' only; .*'infonce'"):
        REGISTRY["club"].check_use("club", "maximize", False, False)
    for gather, clip, option in [(True, False, "gather_marginals"), (False, True, "adaptive_clip")]:
        with pytest.raises(ValueError, match=f"estimator='club' does not support {option}=True"):
            REGISTRY["club"].check_use("club", "minimize", gather, clip)


@pytest.mark.parametrize("name", sorted(n for n, s in REGISTRY.items() if s.family is not ExactConditional))
def test_every_estimator_follows_the_protocol(name):
    """terms(): finite metrics of the estimator's own; the critic term's gradient on x and z is
    exactly minus the model term's; with the critic fixed no gradient reaches its parameters and
    MINE's moving average stays where it is."""
    torch.manual_seed(0)
    spec = REGISTRY[name]
    est = spec.family.build(name, 2, 2, BuildOptions(hidden=(8,), embed_dim=4)).double()
    _randomise_last_layer(est, seed=1, std=0.5)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(12, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    z = (0.8 * x + 0.6 * torch.randn(12, 2, dtype=torch.float64, generator=gen)).detach().requires_grad_()
    terms = est.terms(x, z, generator=torch.Generator().manual_seed(4))
    want = (
        {"mi", "log_likelihood"}
        if spec.family is CLUB
        else {"mi", "objective", "joint_mean", "log_partition"}
    )
    assert set(terms.metrics) == want
    assert all(torch.isfinite(v) and not v.requires_grad for v in terms.metrics.values())
    assert float(terms.mi) == float(terms.metrics["mi"]) != 0.0
    g_critic = torch.autograd.grad(terms.critic, [x, z], retain_graph=True)
    g_model = torch.autograd.grad(terms.model, [x, z], retain_graph=True)
    assert g_model[0].abs().max() > 0
    for c, m in zip(g_critic, g_model, strict=True):
        torch.testing.assert_close(c, -m, rtol=1e-12, atol=1e-15)
    params = [p for p in est.parameters() if p.requires_grad]
    assert any(g is not None for g in torch.autograd.grad(terms.critic, params, allow_unused=True))

    ema_before = [b.clone() for b in est.buffers()]
    fixed = est.terms(x, z, generator=torch.Generator().manual_seed(4), train_critic=False)
    for term in (fixed.model, fixed.critic):
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        assert all(g is None for g in grads)
    assert all(torch.equal(a, b) for a, b in zip(ema_before, est.buffers(), strict=True))
    assert float(fixed.mi) == pytest.approx(float(terms.mi), rel=1e-12)


# --------------------------------------------------------------------------- score_pairs


@pytest.mark.parametrize("n", [2, 3, 17, 64])
def test_shuffle_is_a_derangement(n):
    x, z = _index_inputs(n)
    for seed in range(25):
        gen = torch.Generator().manual_seed(seed)
        joint, marginal = score_pairs(IndexCritic(n), x, z, "shuffle", generator=gen)
        assert joint.shape == (n,) and marginal.shape == (n, 1)
        ji, jj = _decode(joint, n)
        assert torch.equal(ji, torch.arange(n)) and torch.equal(jj, torch.arange(n))
        mi, mj = _decode(marginal[:, 0], n)
        assert torch.equal(mi, torch.arange(n))  # row i keeps x_i
        assert torch.equal(mj.sort().values, torch.arange(n))  # each z used once
        assert not (mj == torch.arange(n)).any()  # never z_i
    # The generator makes it reproducible, and different seeds give different shuffles.
    if n > 3:
        assert torch.equal(_derangement(n, 0), _derangement(n, 0))
        assert not torch.equal(_derangement(n, 0), _derangement(n, 1))


@pytest.mark.parametrize("with_matrix", [False, True])
def test_all_pairs_are_the_off_diagonal_in_row_order(with_matrix):
    n = 7
    x, z = _index_inputs(n)
    joint, marginal = score_pairs(IndexCritic(n, with_matrix), x, z, "all")
    assert joint.shape == (n,) and marginal.shape == (n, n - 1)
    assert torch.equal(torch.stack(_decode(joint, n)), torch.arange(n).repeat(2, 1))
    rows, cols = _decode(marginal, n)
    for i in range(n):
        assert rows[i].tolist() == [i] * (n - 1)
        assert cols[i].tolist() == [j for j in range(n) if j != i]


@pytest.mark.parametrize("critic_cls", [SeparableCritic, GaussianCritic])
def test_all_pairs_fast_path_equals_slow_path(critic_cls, gaussian_pair):
    x, z, _ = gaussian_pair(24, 3, 0.8, seed=4)
    if critic_cls is SeparableCritic:
        critic = _randomise_last_layer(SeparableCritic(3, 3, hidden=(16,), embed_dim=8), seed=4)
    else:
        critic = GaussianCritic(3, 3).fit(*gaussian_pair(500, 3, 0.8, seed=5)[:2])
    with torch.no_grad():
        fast = score_pairs(critic, x, z, "all")
        slow = score_pairs(NoMatrix(critic), x, z, "all")
        single = critic(x[5:6], z[17:18])
    assert fast[1].shape == slow[1].shape == (24, 23)
    assert fast[1].std() > 0.1  # non-trivial scores
    for f, s in zip(fast, slow, strict=True):
        assert torch.allclose(f, s, rtol=1e-5, atol=1e-5)
    # Entry (i, k) of the marginal scores is T(x_i, z_j) for the k-th j != i.
    assert float(slow[1][5, 16]) == pytest.approx(float(single), abs=1e-5)  # (i, j) = (5, 17)


def test_given_marginals_shapes_and_errors():
    n, dz = 6, 2
    critic = _randomise_last_layer(ConcatCritic(3, dz, hidden=(8,)), seed=6)
    x, z = torch.randn(n, 3), torch.randn(n, dz)
    zm2, zm3 = torch.randn(n, dz), torch.randn(n, 4, dz)
    joint, marginal = score_pairs(critic, x, z, "given", z_marginal=zm2)
    assert marginal.shape == (n, 1)
    assert torch.allclose(joint, critic(x, z), atol=1e-6)
    assert torch.allclose(marginal[:, 0], critic(x, zm2), atol=1e-6)
    joint, marginal = score_pairs(critic, x, z, "given", z_marginal=zm3)
    assert marginal.shape == (n, 4)
    for k in range(4):
        assert torch.allclose(marginal[:, k], critic(x, zm3[:, k]), atol=1e-6)
    bad_shapes = [(n - 1, dz), (n, dz + 1), (n, 4, dz + 1), (n, 2, 2, dz), (n,)]
    for bad in [None, *(torch.randn(shape) for shape in bad_shapes)]:
        with pytest.raises(ValueError, match="z_marginal"):
            score_pairs(critic, x, z, "given", z_marginal=bad)
    with pytest.raises(ValueError, match="unknown marginals"):
        score_pairs(critic, x, z, "everything")


# --------------------------------------------------------------------------- critics


@pytest.mark.parametrize("kind", ["concat", "separable"])
def test_critics_start_at_zero_and_learn(kind, gaussian_pair):
    x, z, _ = gaussian_pair(64, 3, 1.0, seed=7)
    if kind == "concat":
        critic, marginals = ConcatCritic(3, 3, hidden=(16, 16)), "shuffle"
        last = critic.net[-1]
    else:
        critic, marginals = SeparableCritic(3, 3, hidden=(16, 16), embed_dim=8), "all"
        last = critic.g[-1]
    est = MIEstimator(critic, "mine-biased", marginals=marginals)
    gen = torch.Generator().manual_seed(0)
    joint, marginal = est.scores(x, z, generator=gen)
    assert torch.count_nonzero(joint) == 0 and torch.count_nonzero(marginal) == 0
    out = est(x, z, generator=gen)
    assert float(out.mi.detach()) == 0.0
    (-out.objective).backward()
    # Only the last layer can move first (every other gradient passes through its zero weights).
    assert last.weight.grad.abs().max() > 1e-4
    torch.optim.SGD(critic.parameters(), lr=0.1).step()
    critic.zero_grad()
    out = est(x, z, generator=gen)
    assert float(out.mi.detach()) > 0  # one ascent step on correlated data raises the bound
    (-out.objective).backward()
    for name, p in critic.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


def test_gaussian_critic_fit_recovers_gaussian_mi(gaussian_pair):
    """Fit on 20k samples (d = 2, I = 0.5 nats), read DV out on 20k fresh samples.

    Standard errors: the joint term has sd_P(T*) = sqrt(d·rho²) = 0.89 for the optimal Gaussian
    critic (Var of a quadratic form: 2·tr((I - Sigma)²)/4 = rho² per coordinate pair), so
    SE ~ 0.0063 at n = 20k; it is measured from the scores below. The log-partition term is
    tiny (E_Q[exp T* | x] = 1 for every x). The fitted critic's shortfall from the optimum is a
    second-order, O(k / n_fit) term with k = 10 covariance parameters: allow k / n_fit = 5e-4."""
    d, mi, n = 2, 0.5, 20_000
    x_fit, z_fit, truth = gaussian_pair(n, d, mi, seed=8)
    x, z, _ = gaussian_pair(n, d, mi, seed=9)
    critic = GaussianCritic(d, d).fit(x_fit, z_fit)
    joints, margs = [], []
    for idx in torch.arange(n).chunk(20):
        j, m = score_pairs(critic, x[idx], z[idx], "all")
        joints.append(j.double())
        margs.append(m.double())
    joint, marginal = torch.cat(joints), torch.cat([m.reshape(-1) for m in margs])
    value = float(bounds.dv(joint, marginal))
    se_joint = float(joint.std()) / math.sqrt(n)
    rows = torch.cat([m.exp().mean(1) for m in margs])
    se_partition = float(rows.std() / rows.mean()) / math.sqrt(n)
    tol = 4 * (se_joint + se_partition) + 10 / n
    assert se_joint == pytest.approx(math.sqrt(d * (1 - math.exp(-2 * mi / d)) / n), rel=0.1)
    assert value == pytest.approx(truth, abs=tol), (value, truth, tol)
    # The fitted constant is the (shrunk) plug-in Gaussian MI of the fit sample.
    assert float(critic.const) == pytest.approx(truth, abs=4 * math.sqrt(d * (1 - math.exp(-1)) / n) + 10 / n)


def test_gaussian_critic_without_shrinkage_is_the_plug_in_mle(gaussian_pair):
    # With the MLE covariance, the mean log density ratio over the fit sample is exactly the
    # plug-in MI 0.5·(log det S_xx + log det S_zz - log det S) = the fitted constant.
    x, z, _ = gaussian_pair(3000, 2, 1.0, seed=10)
    critic = GaussianCritic(2, 2).fit(x, z, shrink=False)
    s = torch.cov(torch.cat([x, z], 1).double().T, correction=0)
    plug_in = 0.5 * (torch.logdet(s[:2, :2]) + torch.logdet(s[2:, 2:]) - torch.logdet(s))
    assert float(critic.const) == pytest.approx(float(plug_in), rel=1e-5)
    assert float(critic(x, z).double().mean()) == pytest.approx(float(plug_in), abs=1e-4)
    # Ledoit-Wolf shrinkage pulls the correlations toward 0, so the shrunk constant is smaller.
    shrunk = GaussianCritic(2, 2).fit(x, z)
    assert 0 < float(plug_in) - float(shrunk.const) < 0.05


def test_gaussian_critic_score_matrix_matches_forward(gaussian_pair):
    x, z, _ = gaussian_pair(400, 3, 1.0, seed=11)
    critic = GaussianCritic(3, 3).fit(x, z)
    xs, zs = x[:9] * 2 + 0.5, z[:11] - 1  # off the fit sample's scale: checks standardisation
    m = critic.score_matrix(xs, zs)
    assert m.shape == (9, 11)
    assert torch.allclose(torch.diagonal(m[:, :9]), critic(xs, zs[:9]), rtol=1e-5, atol=1e-5)
    pairs = critic(xs.repeat_interleave(11, 0), zs.repeat(9, 1)).reshape(9, 11)
    assert torch.allclose(m, pairs, rtol=1e-5, atol=1e-5)
    assert m.std() > 0.5
    # Unfitted, it is the constant 0 (identity scaling, zero quadratic and cross terms).
    assert torch.count_nonzero(GaussianCritic(3, 3)(x, z)) == 0


def test_sum_critic(gaussian_pair):
    x, z, _ = gaussian_pair(50, 2, 0.5, seed=12)
    gauss = GaussianCritic(2, 2).fit(x, z)
    sep = _randomise_last_layer(SeparableCritic(2, 2, hidden=(8,), embed_dim=4), seed=12)
    concat = _randomise_last_layer(ConcatCritic(2, 2, hidden=(8,)), seed=13)
    both = SumCritic(gauss, sep)
    assert torch.allclose(both(x, z), gauss(x, z) + sep(x, z), atol=1e-6)
    assert hasattr(both, "score_matrix")
    assert torch.allclose(
        both.score_matrix(x, z), gauss.score_matrix(x, z) + sep.score_matrix(x, z), atol=1e-5
    )
    mixed = SumCritic(gauss, concat)
    assert not hasattr(mixed, "score_matrix")
    assert torch.allclose(mixed(x, z), gauss(x, z) + concat(x, z), atol=1e-6)
    # score_pairs takes the fast path only when every part can, and both paths agree.
    fast, slow = score_pairs(both, x, z, "all"), score_pairs(NoMatrix(both), x, z, "all")
    assert torch.allclose(fast[1], slow[1], rtol=1e-5, atol=1e-5)
    # Parameters of all parts are registered (the trainable ones are the separable critic's).
    assert {id(p) for p in both.parameters()} == {id(p) for p in sep.parameters()}
    with pytest.raises(ValueError, match="at least one critic"):
        SumCritic()


@pytest.mark.parametrize("marginals", ["shuffle", "all"])
def test_batch_of_one_cannot_form_marginal_pairs(marginals):
    critic = SeparableCritic(2, 2, hidden=(4,), embed_dim=2)
    with pytest.raises(ValueError, match="batch of 1 sample cannot form marginal pairs"):
        score_pairs(critic, torch.randn(1, 2), torch.randn(1, 2), marginals)


def test_batch_size_mismatch_is_named():
    critic = SeparableCritic(2, 2, hidden=(4,), embed_dim=2)
    with pytest.raises(ValueError, match="same batch size, got 4 and 3"):
        score_pairs(critic, torch.randn(4, 2), torch.randn(3, 2), "all")


def test_concat_shuffled_fast_path_matches_plain_forward():
    critic = ConcatCritic(3, 2, hidden=(8, 8))
    nn.init.normal_(critic.net[-1].weight)  # leave the zero start so scores differ
    x, z = torch.randn(6, 3), torch.randn(6, 2)
    index = torch.tensor([1, 2, 3, 4, 5, 0])
    joint, marginal = critic.score_shuffled(x, z, index)
    torch.testing.assert_close(joint, critic(x, z))
    torch.testing.assert_close(marginal, critic(x, z[index]))


def test_bounded_critic_clips_softly_and_keeps_the_matrix_path():
    inner = SeparableCritic(3, 2, hidden=(8,), embed_dim=4)
    nn.init.normal_(inner.g[-1].weight, std=10.0)  # large scores, so the bound matters
    critic = BoundedCritic(inner, bound=3.0)
    x, z = torch.randn(16, 3), torch.randn(16, 2)
    raw, matrix = inner.score_matrix(x, z), critic.score_matrix(x, z)
    assert raw.abs().max() > 3.0 and matrix.abs().max() < 3.0
    torch.testing.assert_close(matrix, 3.0 * torch.tanh(raw / 3.0))
    torch.testing.assert_close(torch.diagonal(matrix), critic(x, z))
    small = torch.full((4,), 0.01)
    assert torch.allclose(3.0 * torch.tanh(small / 3.0), small, atol=1e-6)  # ~identity near 0
    assert not hasattr(BoundedCritic(ConcatCritic(3, 2)), "score_matrix")


def test_input_noise_only_in_training_and_keeps_the_matrix_path():
    inner = _randomise_last_layer(SeparableCritic(3, 2, hidden=(8,), embed_dim=4), seed=14)
    critic = InputNoise(inner, std=0.5)
    x, z = torch.randn(16, 3), torch.randn(16, 2)
    critic.eval()
    torch.testing.assert_close(critic(x, z), inner(x, z))
    torch.testing.assert_close(critic.score_matrix(x, z), inner.score_matrix(x, z))
    critic.train()
    torch.manual_seed(0)
    noisy = critic.score_matrix(x, z)
    torch.manual_seed(0)
    expected = inner.score_matrix(x + 0.5 * torch.randn_like(x), z + 0.5 * torch.randn_like(z))
    torch.testing.assert_close(noisy, expected)
    assert not torch.allclose(noisy, inner.score_matrix(x, z))
    assert not hasattr(InputNoise(ConcatCritic(3, 2), 0.1), "score_matrix")
    with pytest.raises(ValueError, match="std must be >= 0"):
        InputNoise(inner, -1.0)


def test_radial_critic_sees_a_shared_scale(gaussian_pair):
    # independent Gaussian directions times one shared scale: the coordinates are uncorrelated
    # across sides, so a Gaussian critic sees nothing, while the log mean squares are correlated:
    # 2·log-scale (variance 4) plus log(chi²_5 / 5) (variance ~0.49) on each side gives a feature
    # correlation of ~0.89, about 0.78 nats for a Gaussian fit; require well above noise, 0.3
    gen = torch.Generator().manual_seed(15)
    scale = torch.exp(torch.randn(4000, 1, generator=gen))
    x, z = scale * torch.randn(4000, 5, generator=gen), scale * torch.randn(4000, 5, generator=gen)
    radial = RadialCritic().fit(x[:2000], z[:2000])
    gauss = GaussianCritic(5, 5).fit(x[:2000], z[:2000])
    with torch.no_grad():
        radial_dv = float(bounds.dv(*score_pairs(radial, x[2000:], z[2000:], "all")))
        gauss_dv = float(bounds.dv(*score_pairs(gauss, x[2000:], z[2000:], "all")))
    assert radial_dv > 0.3 and abs(gauss_dv) < 0.05, (radial_dv, gauss_dv)
    fast, slow = (
        score_pairs(radial, x[:20], z[:20], "all"),
        score_pairs(NoMatrix(radial), x[:20], z[:20], "all"),
    )
    torch.testing.assert_close(fast[1], slow[1])
