"""Exact-conditional bounds (mine_reg.exact) against hand computations on fixed Gaussians."""

import math

import pytest
import torch

from mine_reg.exact import ExactConditional, club_exact_bound, gaussian_log_prob_matrix, l1out_bound


def _hand_log_q(z, mean, std):
    """log N(z_i; mean_j, diag std_j²) by the textbook formula, one pair at a time (float64)."""
    b, c = len(z), len(mean)
    out = torch.empty(b, c, dtype=torch.float64)
    for i in range(b):
        for j in range(c):
            d = (z[i] - mean[j]) / std[j]
            out[i, j] = (-0.5 * d.pow(2) - torch.log(std[j]) - 0.5 * math.log(2 * math.pi)).sum()
    return out


@pytest.fixture
def gaussians():
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(6, 3, generator=gen, dtype=torch.float64) * 2 + 5.0
    std = torch.rand(6, 3, generator=gen, dtype=torch.float64) + 0.2
    z = mean + std * torch.randn(6, 3, generator=gen, dtype=torch.float64)
    return z, mean, std


def test_log_prob_matrix_matches_the_textbook_density(gaussians):
    z, mean, std = gaussians
    torch.testing.assert_close(gaussian_log_prob_matrix(z, mean, std), _hand_log_q(z, mean, std))


def test_bounds_match_hand_computation(gaussians):
    z, mean, std = gaussians
    hand = _hand_log_q(z, mean, std)
    n = len(z)
    l1out = (
        sum(
            hand[i, i] - math.log(sum(math.exp(hand[i, j]) for j in range(n) if j != i) / (n - 1))
            for i in range(n)
        )
        / n
    )
    club = sum(hand[i, i] for i in range(n)) / n - sum(
        hand[i, j] for i in range(n) for j in range(n) if i != j
    ) / (n * (n - 1))
    log_q = gaussian_log_prob_matrix(z, mean, std)
    assert float(l1out_bound(log_q)) == pytest.approx(float(l1out), rel=1e-10)
    assert float(club_exact_bound(log_q)) == pytest.approx(float(club), rel=1e-10)


def test_bounds_sit_above_the_true_mi_of_a_gaussian_channel():
    """Z = X + s·eps with X ~ N(0, 1) per coordinate: I = K/2·log(1 + 1/s²). Both bounds are upper
    bounds; l1out with B = 1000 is within its slack of about a tenth of a nat here, and the batch
    mean of either has a sampling error of a few hundredths (1000 rows), far below the margins."""
    gen = torch.Generator().manual_seed(1)
    k, s, b = 2, 0.5, 1000
    truth = k / 2 * math.log(1 + 1 / s**2)
    mean = torch.randn(b, k, generator=gen, dtype=torch.float64)
    std = torch.full_like(mean, s)
    est = ExactConditional("l1out")
    l1out = float(est(mean, std, generator=gen))
    club = float(ExactConditional("club-exact")(mean, std, generator=gen))
    assert abs(l1out - truth) < 0.15
    assert club > truth


def test_gradient_reaches_mean_and_std():
    mean = torch.randn(8, 2, requires_grad=True)
    std = torch.full((8, 2), 0.5, requires_grad=True)
    terms = ExactConditional("l1out").terms(
        torch.zeros(8, 1), (mean, std), generator=torch.Generator().manual_seed(0)
    )
    terms.model.backward()
    assert mean.grad is not None and mean.grad.abs().sum() > 0
    assert std.grad is not None and std.grad.abs().sum() > 0
    assert float(terms.mi) == pytest.approx(float(terms.model.detach()))


@pytest.mark.parametrize(
    "mean, std, match",
    [(torch.zeros(4, 2), torch.ones(4, 3), "one shape"), (torch.zeros(1, 2), torch.ones(1, 2), "at least 2")],
)
def test_bad_pairs_are_named(mean, std, match):
    with pytest.raises(ValueError, match=match):
        ExactConditional("l1out")(mean, std)


def test_unknown_bound_is_named():
    with pytest.raises(ValueError, match="l1out"):
        ExactConditional("bogus")


@pytest.mark.parametrize("name", ["l1out", "club-exact"])
def test_protocol_terms_from_the_registry(name):
    """Built through the registry; the critic term's gradient on (mean, std) is exactly minus the
    model term's (what MIRegularizer's single backward relies on), and there is nothing to train."""
    from mine_reg.estimator import REGISTRY
    from mine_reg.protocol import BuildOptions

    est = REGISTRY[name].family.build(name, 3, 2, BuildOptions())
    assert not list(est.parameters())
    mean = torch.randn(10, 2, dtype=torch.float64, requires_grad=True)
    std = (0.3 + torch.rand(10, 2, dtype=torch.float64)).requires_grad_()
    terms = est.terms(torch.zeros(10, 3), (mean, std), generator=torch.Generator().manual_seed(0))
    g_model = torch.autograd.grad(terms.model, [mean, std], retain_graph=True)
    g_critic = torch.autograd.grad(terms.critic, [mean, std])
    for c, m in zip(g_critic, g_model, strict=True):
        torch.testing.assert_close(c, -m)
    assert set(terms.metrics) == {"mi"} and torch.isfinite(terms.mi)


class _Encoder(torch.nn.Module):
    """x -> (mean, std) -> z = mean + std·eps, through a layer ``z`` called as z(mean, std)."""

    class Sample(torch.nn.Module):
        def forward(self, mean, std):
            return mean + std * torch.randn_like(std)

    def __init__(self):
        super().__init__()
        self.mean = torch.nn.Linear(3, 2)
        self.z = self.Sample()

    def forward(self, x):
        mean = self.mean(x)
        return self.z(mean, torch.full_like(mean, 0.5))


@pytest.mark.parametrize("name", ["l1out", "club-exact"])
def test_regularizer_minimizes_the_encoders_own_bound(name):
    """MIRegularizer(estimator=name) reads (mean, std) through the spec, returns beta times the
    bound computed by hand on the same draws, and its gradient reaches the encoder."""
    from mine_reg import MIRegularizer

    torch.manual_seed(0)
    model = _Encoder()
    reg = MIRegularizer(model, z=("z:input", lambda args: args), estimator=name, beta=0.5, seed=3)
    x = torch.randn(16, 3)
    model(x)
    term = reg()
    mean = model.mean(x).detach()
    hand = ExactConditional(name)(
        mean, torch.full_like(mean, 0.5), generator=torch.Generator().manual_seed(3)
    )
    assert float(term.detach()) == pytest.approx(0.5 * float(hand), rel=1e-5)
    term.backward()
    assert model.mean.weight.grad is not None and model.mean.weight.grad.abs().sum() > 0
    assert reg.metrics()["mi"] == pytest.approx(float(hand), rel=1e-5)
    assert reg.critic_steps == 0 and reg.critic_parameters() == []


def test_regularizer_names_a_spec_that_is_not_a_mean_std_pair():
    from mine_reg import MIRegularizer

    model = _Encoder()
    reg = MIRegularizer(model, z="z", estimator="l1out")
    model(torch.randn(8, 3))
    with pytest.raises(ValueError, match=r"\(mean, std\)"):
        reg()


def test_regularizer_refuses_a_non_positive_std():
    from mine_reg import MIRegularizer

    model = _Encoder()
    reg = MIRegularizer(model, x="input", z=None, estimator="l1out")
    model(torch.randn(8, 3))
    with pytest.raises(ValueError, match="positive"):
        reg(z=(torch.randn(8, 2), torch.zeros(8, 2)))
