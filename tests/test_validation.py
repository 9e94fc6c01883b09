"""``estimate_mi`` input checks: bad input is a ValueError naming the problem; good input runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mine_reg import estimate_mi
from mine_reg.synthetic import correlated_gaussian, rho_for_mi

# A tiny, fast configuration for the runs that must succeed (accuracy is not checked here).
FAST = dict(batch_size=32, max_steps=20, eval_every=10, hidden=(16,), embed_dim=8, device="cpu")


def _pair(n: int = 400, dim: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return correlated_gaussian(n, dim, rho_for_mi(0.5, dim), seed=seed)


def test_n_mismatch():
    x, y = _pair()
    with pytest.raises(ValueError, match=r"same number of samples N, got 400 and 399"):
        estimate_mi(x, y[:-1])


def test_fewer_samples_than_a_train_and_a_heldout_batch():
    x, y = _pair(n=100)
    # heldout 0.5 -> 50 training and 50 held-out samples, each less than one batch of 64.
    with pytest.raises(ValueError, match=r"too few samples: N = 100 .* at least one batch of 64"):
        estimate_mi(x, y, batch_size=64)
    # Also when only one side is short: 90 training but 10 held-out samples.
    with pytest.raises(ValueError, match=r"too few samples.*10 held-out"):
        estimate_mi(x, y, batch_size=64, heldout=0.1)


def test_nan_is_reported_with_its_row():
    x, y = _pair(n=50)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or Inf \(1 values; first in row 3\)"):
        estimate_mi(x, y)


def test_inf_is_reported():
    x, y = _pair(n=50)
    y[7, 0] = -np.inf
    with pytest.raises(ValueError, match=r"y contains NaN or Inf .*row 7"):
        estimate_mi(x, y)


@pytest.mark.parametrize(
    "bad",
    [np.array(["a", "b", "c", "d"]), np.array([1.0, "x", None, 2], dtype=object), [["1", "2"], ["3", "4"]]],
    ids=["str", "object", "nested-str"],
)
def test_non_numeric_dtype(bad):
    y = np.zeros(len(bad))
    with pytest.raises(ValueError, match=r"x must hold numbers, got dtype"):
        estimate_mi(bad, y)


def test_complex_is_rejected():
    with pytest.raises(ValueError, match=r"y must be real"):
        estimate_mi(np.zeros(10), np.zeros(10, dtype=complex))


def test_more_than_two_dims():
    x, _ = _pair(n=20)
    with pytest.raises(ValueError, match=r"y must have shape \[N\] or \[N, d\], got 3 dims \(20, 2, 2\)"):
        estimate_mi(x, np.zeros((20, 2, 2)))


def test_zero_columns():
    with pytest.raises(ValueError, match=r"at least one column"):
        estimate_mi(np.zeros((20, 0)), np.zeros(20))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(estimator="bogus"), r"unknown estimator 'bogus'"),
        (dict(heldout=1.0), r"heldout must lie in \(0, 1\)"),
        (dict(batch_size=1), r"batch_size must be an integer >= 2"),
        (dict(preprocess="bogus"), r"unknown preprocess 'bogus'"),
        (dict(critic="bogus"), r"unknown critic 'bogus'"),
    ],
)
def test_bad_options(kwargs, message):
    x, y = _pair()
    with pytest.raises(ValueError, match=message):
        estimate_mi(x, y, **{**FAST, **kwargs})


def test_one_dimensional_input_is_one_column():
    x, y = _pair()
    result = estimate_mi(x[:, 0], y[:, 0], **FAST)
    assert isinstance(result.mi, float) and math.isfinite(result.mi)
    assert (result.n_train, result.n_monitor, result.n_heldout) == (160, 40, 200)
    assert float(result) == result.mi
    # Same data as an [N, 1] column gives the same estimate.
    assert estimate_mi(x[:, :1], y[:, :1], **FAST).mi == result.mi


def test_torch_tensors_and_lists_are_accepted():
    x, y = _pair()
    from_numpy = estimate_mi(x, y, **FAST).mi
    assert estimate_mi(torch.from_numpy(x), torch.from_numpy(y), **FAST).mi == from_numpy
    assert estimate_mi(x.tolist(), y.tolist(), **FAST).mi == from_numpy


def _curve(result) -> np.ndarray:
    return np.array(
        [[c["step"], np.nan if c["train"] is None else c["train"], c["monitor"]] for c in result.curve]
    )


def test_same_seed_same_estimate_other_seed_other_estimate():
    x, y = _pair()
    a = estimate_mi(x, y, seed=1, **FAST)
    b = estimate_mi(x, y, seed=1, **FAST)
    c = estimate_mi(x, y, seed=2, **FAST)
    assert a.mi == b.mi and a.stderr == b.stderr
    # Whole curves too (NaN-aware: a curve entry may carry NaN, e.g. no training loss yet).
    assert np.array_equal(_curve(a), _curve(b), equal_nan=True)
    assert c.mi != a.mi


def test_global_torch_rng_is_left_alone():
    x, y = _pair()
    state = torch.random.get_rng_state()
    estimate_mi(x, y, seed=5, **FAST)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_runs_under_no_grad_with_the_same_result():
    # an evaluation loop calls estimate_mi under torch.no_grad(); the critic must still train
    x, y = _pair()
    free = estimate_mi(x, y, critic="separable", **FAST)
    with torch.no_grad():
        inside = estimate_mi(x, y, critic="separable", **FAST)
    assert inside.steps == free.steps > 0
    assert inside.mi == free.mi


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(embed_dim=-3), r"embed_dim must be an integer >= 1, got -3"),
        (dict(embed_dim=0), r"embed_dim must be an integer >= 1, got 0"),
        (dict(hidden=(0,)), r"every hidden width must be an integer >= 1, got 0"),
        (dict(hidden=(16, 2.5)), r"every hidden width must be an integer >= 1, got 2.5"),
        (dict(hidden=7), r"hidden must be a sequence of positive integers, got 7"),
        (dict(seed=None), r"seed must be an integer >= 0, got None"),
        (dict(seed=1.5), r"seed must be an integer >= 0, got 1.5"),
        (dict(tau=float("nan")), r"tau must be a finite number > 0"),
        (dict(lr=float("inf")), r"lr must be a finite number > 0"),
        (dict(ema_rate=0.0), r"ema_rate must be a finite number > 0.0 and <= 1.0"),
        (dict(max_steps=0), r"max_steps must be an integer >= 1"),
        (dict(patience=True), r"patience must be an integer >= 1, got True"),
        (dict(num_threads=0), r"num_threads must be an integer >= 1"),
        (dict(device="gpu7"), r"device must name a torch device such as 'cpu' or 'cuda:0', got 'gpu7'"),
        (dict(discrete="sometimes"), r"unknown discrete 'sometimes'"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    x, y = _pair()
    with pytest.raises(ValueError, match=message):
        estimate_mi(x, y, **{**FAST, **kwargs})


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_named():
    x, y = _pair()
    with pytest.raises(ValueError, match=r"device 'cuda' asks for CUDA, which is not available here"):
        estimate_mi(x, y, device="cuda")


def test_unknown_option_lists_the_known_ones():
    x, y = _pair()
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['bach_size'\]; options: .*'batch_size'"):
        estimate_mi(x, y, bach_size=64)


def test_a_critic_with_nan_weights_is_an_error_not_a_nan():
    x, y = _pair()
    critic = torch.nn.Module()
    critic.w = torch.nn.Parameter(torch.tensor(float("nan")))
    critic.forward = lambda a, b: (a * b).sum(-1) * critic.w
    with pytest.raises(ValueError, match=r"scores on the monitor set are not finite at any evaluation"):
        estimate_mi(
            x, y, critic=critic, **{k: v for k, v in FAST.items() if k not in ("hidden", "embed_dim")}
        )


@pytest.mark.parametrize("estimator", ["mine-f", "mine", "nwj"])
def test_a_diverging_fit_keeps_its_best_finite_state(estimator, recwarn):
    # lr 100 throws the critic's weights far out in a few steps (NWJ's exp term overflows); the
    # result stays finite, and says so when training diverged
    x, y = _pair(n=2000)
    result = estimate_mi(x, y, estimator, critic="separable", lr=100.0, max_steps=200, eval_every=5)
    diverged = [w for w in result.warnings if "training diverged" in w]
    assert len(diverged) == sum("training diverged" in str(w.message) for w in recwarn)
    if estimator != "mine":  # the DV objective is shift-invariant and stays finite here
        assert diverged
    assert math.isfinite(result.mi) and math.isfinite(result.stderr)
    assert all(math.isfinite(lo) for lo in result.interval)


def test_cli_bad_option_is_one_line_and_nonzero(tmp_path, capsys):
    from mine_reg.cli import main

    x, y = _pair()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert main(["estimate", str(tmp_path / "d.npz"), "--embed-dim", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "mine-reg: error: embed_dim must be an integer >= 1, got 0\n"
