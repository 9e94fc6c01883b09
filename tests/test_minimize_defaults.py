"""What MIRegularizer does by default in each direction, and the batch-standardized critic."""

import pytest
import torch
from torch import nn

from mine_reg import MIRegularizer
from mine_reg.club import CLUB
from mine_reg.critics import (
    ConcatCritic,
    SeparableCritic,
    Standardized,
    cyclic_derangement_pair,
    permute_rows,
    score_pairs,
    standardize_rows,
)
from mine_reg.estimator import MIEstimator
from mine_reg.protocol import BuildOptions


def _built(reg: MIRegularizer, model: nn.Module, x: torch.Tensor) -> nn.Module:
    model(x)
    reg()
    return reg.estimator


def test_minimize_defaults_to_club_and_maximize_to_mine():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = torch.randn(16, 3)
    assert isinstance(_built(MIRegularizer(model, z="2"), model, x), CLUB)
    reg = MIRegularizer(model, z="2", mode="maximize")
    est = _built(reg, model, x)
    assert isinstance(est, MIEstimator) and est.name == "mine" and isinstance(est.critic, Standardized)


def test_a_critic_reads_standardized_inputs_unless_told_otherwise():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = torch.randn(16, 3)
    est = _built(MIRegularizer(model, z="2", estimator="mine"), model, x)
    assert isinstance(est.critic, Standardized) and isinstance(est.critic.critic, ConcatCritic)
    est = _built(MIRegularizer(model, z="2", estimator="mine", standardize=False), model, x)
    assert isinstance(est.critic, ConcatCritic)


def test_standardize_rows_gives_zero_mean_unit_std_and_keeps_constant_columns_finite():
    t = torch.randn(50, 3, dtype=torch.float64) * torch.tensor([1.0, 100.0, 0.0], dtype=torch.float64) + 7.0
    s = standardize_rows(t)
    torch.testing.assert_close(s.mean(0), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(
        s[:, :2].pow(2).mean(0).sqrt(), torch.ones(2, dtype=torch.float64), rtol=1e-5, atol=0
    )
    assert torch.equal(s[:, 2], torch.zeros(50, dtype=torch.float64))
    leaf = t.clone().requires_grad_()
    standardize_rows(leaf).pow(2).sum().backward()  # a constant column must not give NaN gradients
    assert torch.isfinite(leaf.grad).all()


def test_standardize_rows_matches_the_textbook_formula_and_its_gradient():
    """The fused batch_norm form against (t - mean) / sqrt(population var + eps²), value and
    gradient, in float64."""
    gen = torch.Generator().manual_seed(3)
    t = (torch.randn(40, 5, generator=gen, dtype=torch.float64) * 3 + 1).requires_grad_()
    weights = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    eps = 1e-6

    def textbook(a):
        centred = a - a.mean(0, keepdim=True)
        return centred / torch.sqrt(centred.pow(2).mean(0, keepdim=True) + eps**2)

    fused, reference = standardize_rows(t, eps), textbook(t)
    torch.testing.assert_close(fused, reference, rtol=1e-12, atol=1e-12)
    (g_fused,) = torch.autograd.grad((fused * weights).sum(), t)
    (g_reference,) = torch.autograd.grad((reference * weights).sum(), t)
    torch.testing.assert_close(g_fused, g_reference, rtol=1e-10, atol=1e-12)


def test_permute_rows_matches_plain_indexing_in_value_and_gradient():
    gen = torch.Generator().manual_seed(4)
    t = torch.randn(9, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    index = torch.randperm(9, generator=gen)
    weights = torch.randn(9, 3, generator=gen, dtype=torch.float64)
    assert torch.equal(permute_rows(t, index), t[index])
    (g_fast,) = torch.autograd.grad((permute_rows(t, index) * weights).sum(), t)
    (g_plain,) = torch.autograd.grad((t[index] * weights).sum(), t)
    assert torch.equal(g_fast, g_plain)
    assert torch.autograd.gradcheck(lambda a: permute_rows(a, index), (t,))


@pytest.mark.parametrize("inner, marginals", [(ConcatCritic, "shuffle"), (SeparableCritic, "all")])
def test_standardized_scores_do_not_change_when_z_is_rescaled(inner, marginals):
    """The point of the wrapper: an affine change of z's scale (per column) leaves every joint and
    marginal score as it was, so the model cannot lower the bound by rescaling its code; and the
    inner critic's one-pass scoring (score_shuffled / score_matrix) is kept."""
    torch.manual_seed(0)
    critic = Standardized(inner(3, 2, (8,)))
    for p in critic.parameters():  # a critic that is not the zero function
        nn.init.normal_(p, std=0.5)
    x, z = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    critic = critic.double()
    assert hasattr(critic, "score_shuffled" if marginals == "shuffle" else "score_matrix")
    a = score_pairs(critic, x, z, marginals, generator=torch.Generator().manual_seed(1))
    b = score_pairs(critic, x, 50.0 * z - 3.0, marginals, generator=torch.Generator().manual_seed(1))
    for u, v in zip(a, b, strict=True):  # equal up to the eps = 1e-6 added to each column's std
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-4)
    raw = score_pairs(critic.critic, x, 50.0 * z - 3.0, marginals, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(raw[0], b[0])


def test_build_options_refuse_a_non_bool_standardize():
    with pytest.raises(ValueError, match="standardize"):
        BuildOptions(standardize="yes")


@pytest.mark.parametrize("n", [2, 3, 9, 100])
def test_cyclic_derangement_pair_is_one_cycle_with_its_inverse(n):
    index, inverse = cyclic_derangement_pair(n, torch.device("cpu"), torch.Generator().manual_seed(n))
    arange = torch.arange(n)
    assert index.dtype == inverse.dtype == torch.long
    assert torch.equal(torch.sort(index).values, arange) and not bool((index == arange).any())
    assert torch.equal(index[inverse], arange) and torch.equal(inverse[index], arange)
    seen, item = {0}, int(index[0])
    while item != 0:  # following the successors from 0 visits every item before returning
        seen.add(item)
        item = int(index[item])
    assert seen == set(range(n))
    # the same draw of the generator as a plain randperm: index[order[i]] = order[i + 1]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    assert torch.equal(index[order], order.roll(-1))
