"""recipes/benchmarks/linear_gaussian.py: the closed-form I(X; Z) of the linear-Gaussian encoder,
the target check, and a short minimize run that must compress with CLUB and must not with a
frozen q."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mine_reg.synthetic import gaussian_cov_mi
from recipes.benchmarks import linear_gaussian as lg


def test_closed_form_one_dimension_by_hand():
    # z = a x + s eps: I = 0.5 ln(1 + a²/s²)
    assert float(lg.linear_gaussian_mi(torch.tensor([[2.0]]), 0.5)) == pytest.approx(0.5 * math.log(17.0))


def test_closed_form_matches_joint_covariance():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    # (X, Z) is jointly Gaussian with covariance [[I, Aᵀ], [A, A Aᵀ + S²]]; gaussian_cov_mi
    # computes I from the three log-determinants, an independent route to the same number
    cov = np.block([[np.eye(5), a.T.numpy()], [a.numpy(), (a @ a.T + torch.diag(sigma**2)).numpy()]])
    assert float(lg.linear_gaussian_mi(a, sigma)) == pytest.approx(gaussian_cov_mi(cov, 5), rel=1e-10)


def test_closed_form_matches_monte_carlo():
    # I = E[log p(z|x) - log p(z)] with p(z) = N(0, A Aᵀ + I), averaged over n samples; the
    # sample mean is within 5 of its own standard errors of the truth
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    n = 100_000
    x = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    z = x @ a.T + torch.randn(n, 2, generator=gen, dtype=torch.float64)
    conditional = torch.distributions.MultivariateNormal(x @ a.T, torch.eye(2, dtype=torch.float64))
    marginal = torch.distributions.MultivariateNormal(
        torch.zeros(2, dtype=torch.float64), a @ a.T + torch.eye(2)
    )
    log_ratio = conditional.log_prob(z) - marginal.log_prob(z)
    error = float(log_ratio.mean()) - float(lg.linear_gaussian_mi(a))
    assert abs(error) < 5 * float(log_ratio.std()) / math.sqrt(n)


def test_encoder_mi_is_the_closed_form_of_its_weight():
    encoder = lg.LinearGaussianEncoder(6, 3, sigma=1.0)
    assert float(encoder.mi().detach()) == pytest.approx(
        float(lg.linear_gaussian_mi(encoder.linear.weight.detach()))
    )


def test_closed_form_rejects_bad_sigma():
    with pytest.raises(ValueError, match="sigma must be positive"):
        lg.linear_gaussian_mi(torch.ones(2, 3), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="one value per row"):
        lg.linear_gaussian_mi(torch.ones(2, 3), torch.ones(3))


def test_meets_target_both_directions():
    assert lg.meets_target("minimize", 0.59, 1.0) and not lg.meets_target("minimize", 0.61, 1.0)
    assert lg.meets_target("maximize", 1.41, 1.0) and not lg.meets_target("maximize", 1.39, 1.0)
    assert not lg.meets_target("maximize", 0.5, 1.0) and not lg.meets_target("minimize", 2.0, 1.0)
    with pytest.raises(ValueError, match="beta-0 MI must be positive"):
        lg.meets_target("minimize", 0.5, 0.0)


def test_arms_skip_upper_bounds_when_maximizing():
    names = [a.name for a in lg.arms(["mine", "club"])]
    assert names == [
        "beta 0",
        "minimize mine",
        "minimize club",
        f"minimize {lg.CLOSED_FORM}",
        "maximize mine",
        f"maximize {lg.CLOSED_FORM}",
    ]


# A short run: 300 steps, where the closed-form arm of the benchmark has already settled. Over seeds
# 0-3 CLUB at beta 0.15 ended 33-47% below beta 0 and the frozen-q run 12-24% above it (q fixed at
# its random initialisation rewards z for following q's random mean of x, which adds information).
# The true MI is exact, so the only spread is the training trajectory's: a 20% drop, half the
# benchmark's target, stays more than 10 points clear of both.
SHORT = lg.Setup(steps=300, test_size=2000)
BETA, MARGIN = 0.15, 0.2


@pytest.fixture(scope="module")
def beta0_mi() -> float:
    return lg.train(None, seed=0, setup=SHORT).mi


def test_short_club_run_compresses(beta0_mi):
    club = lg.train("club", "minimize", BETA, seed=0, setup=SHORT)
    assert lg.meets_target("minimize", club.mi, beta0_mi, MARGIN), (club.mi, beta0_mi)


def test_frozen_q_fails_the_same_check(beta0_mi):
    # lr 1e-12: Adam moves q's parameters by about 1e-12 per step, so q stays where it was built
    frozen = lg.train("club", "minimize", BETA, seed=0, setup=SHORT, reg_kwargs={"lr": 1e-12})
    assert not lg.meets_target("minimize", frozen.mi, beta0_mi, MARGIN), (frozen.mi, beta0_mi)


def test_setup_and_cli_refuse_bad_input(capsys):
    with pytest.raises(ValueError, match="optimizer must be one of"):
        lg.Setup(optimizer="rmsprop")
    with pytest.raises(ValueError, match="batch must be >= 2"):
        lg.Setup(batch=1)
    for argv, message in [
        (["--reg-kwargs", '{"beta": 1}'], "cannot be set here"),
        (["--reg-kwargs", "{lr: 1e-3}"], "not valid JSON"),
        (["--reg-kwargs", "[1]"], "must be a JSON object"),
        (["--estimators", "mine,nope"], "unknown estimator"),
        (["--beta", "0"], "--beta be a positive number"),
    ]:
        with pytest.raises(SystemExit):
            lg.main(argv)
        assert message in capsys.readouterr().err


def test_main_writes_results_and_judges_them(tmp_path, capsys):
    out = tmp_path / "lg.json"
    lg.main(["--estimators", "mine", "--seeds", "0,1", "--steps", "20", "--out", str(out)])
    results = json.loads(out.read_text())
    names = [a["name"] for a in results["arms"]]
    assert names == [
        "beta 0",
        "minimize mine",
        f"minimize {lg.CLOSED_FORM}",
        "maximize mine",
        f"maximize {lg.CLOSED_FORM}",
    ]
    assert all(len(a["runs"]) == 2 for a in results["arms"])
    base = sum(r["mi"] for r in results["arms"][0]["runs"]) / 2
    table = capsys.readouterr().out
    for arm in results["arms"][1:]:
        mi = sum(r["mi"] for r in arm["runs"]) / 2
        line = next(row for row in table.splitlines() if row.startswith(f"| {arm['name']} |"))
        verdict = line.strip().strip("|").split("|")[-1].strip()
        if arm["estimator"] == lg.CLOSED_FORM:
            assert verdict == ""
        else:
            mark = " (default)" if lg.DEFAULT_ESTIMATOR[arm["mode"]] == arm["estimator"] else ""
            assert verdict == ("PASS" if lg.meets_target(arm["mode"], mi, base) else "FAIL") + mark


# The DV bound per unit of z with a leading critic: over seeds 0-3 at these 300 steps it ended
# 41-44% below beta 0, without the lead steps 12-17% below, and with its critic frozen (lr 1e-12)
# within 0.5% of beta 0. The 20% line sits 20 points from the first and 20 from the frozen run.
def test_short_per_unit_run_with_a_leading_critic_compresses(beta0_mi):
    run = lg.train(
        "mine-per-unit", "minimize", BETA, seed=0, setup=SHORT, reg_kwargs={"extra_critic_steps": 2}
    )
    assert lg.meets_target("minimize", run.mi, beta0_mi, MARGIN), (run.mi, beta0_mi)


def test_frozen_per_unit_critic_fails_the_same_check(beta0_mi):
    frozen = lg.train(
        "mine-per-unit",
        "minimize",
        BETA,
        seed=0,
        setup=SHORT,
        reg_kwargs={"extra_critic_steps": 2, "lr": 1e-12},
    )
    assert not lg.meets_target("minimize", frozen.mi, beta0_mi, MARGIN), (frozen.mi, beta0_mi)
