"""recipes/ib.py end to end on the offline digits data: each method, the missing-MNIST error,
resuming from a checkpoint, and a two-process CPU run through ``accelerate launch``.

Runs are tiny (1-2 epochs of 13 steps, encoder 64 wide, K = 8, cheap MI read-outs). At lr 1e-4
one such epoch leaves the classifier at chance (error 0.898: one class predicted), so the smoke
runs use lr 1e-2, which reached errors near 0.4 after one epoch in our runs; the check is
error < 0.75, well below chance (0.9 on 10 balanced classes) but with margin.

The encoder's I(X; Z) bounds are also checked on codes whose MI is known: N inputs whose codes
are far apart (I = log N) and codes that ignore the input (I = 0).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from recipe_runs import launch_two_processes, read_results, run_recipe

from recipes.ib import encoder_mi_bounds

RECIPE = "ib"
# the configs default to mnist5k; the smoke runs take the 8x8 digits (seconds per run)
SMALL = ["--dataset", "digits", "--epochs", "1", "--hidden", "64", "--k", "8", "--lr", "1e-2"]
SMALL += ["--mi-steps", "50", "--mi-every", "1"]
LOG_500 = math.log(500)  # the digits test set: 500 inputs


def test_encoder_bounds_on_codes_with_known_mi() -> None:
    bounds = encoder_mi_bounds
    gen = torch.Generator().manual_seed(0)
    n, k = 64, 4
    # codes 100 std apart: z identifies x, I(X; Z) = log n up to exp(-thousands)
    mean = 100.0 * torch.randn(n, k, generator=gen)
    std = torch.ones(n, k)
    z = mean + std * torch.randn(n, k, generator=gen)
    lower, upper = bounds(mean, std, z)
    assert lower == pytest.approx(math.log(n), abs=1e-6)
    assert upper > 100  # leave-one-out: no other input explains z
    # codes that ignore the input: I(X; Z) = 0, and both bounds are exactly 0
    mean0 = torch.zeros(n, k)
    lower0, upper0 = bounds(mean0, std, mean0 + torch.randn(n, k, generator=gen))
    assert lower0 == pytest.approx(0.0, abs=1e-9) and upper0 == pytest.approx(0.0, abs=1e-9)
    # in between: a noisy code; the lower bound never exceeds the upper one or log n
    lo, up = bounds(mean / 100, std, mean / 100 + torch.randn(n, k, generator=gen))
    assert 0 < lo <= up and lo <= math.log(n)


_run = functools.partial(run_recipe, RECIPE, wandb_mode="offline")
_results = read_results


@pytest.mark.slow
@pytest.mark.parametrize("method", ["baseline", "mine", "vib"])
def test_each_method_one_epoch(tmp_path: Path, method: str) -> None:
    out = tmp_path / "out"
    proc = _run(tmp_path, "--config", f"configs/ib_{method}.yaml", *SMALL, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "processes: 1" in proc.stdout
    res = _results(out)
    assert res["method"] == method and res["seed"] == 0 and res["start_epoch"] == 0
    assert res["beta"] == (0.0 if method == "baseline" else 1e-3)
    for key in ("test_error", "I_XZ", "I_ZY", "I_XZ_lower", "I_XZ_upper"):
        assert math.isfinite(res[key]), (key, res)
    assert res["test_error"] < 0.75, res  # chance: 0.9
    assert 0 <= res["I_XZ_lower"] <= min(res["I_XZ_upper"], LOG_500 + 1e-9), res
    assert res["I_ZY"] <= math.log(10) + 0.5, res  # I(Z;Y) <= H(Y) = log 10, plus read-out noise
    assert [h["epoch"] for h in res["history"]] == [1]
    assert (out / "checkpoint").is_dir()
    # the offline wandb run (under out/wandb) holds the test metrics, and for MINE-IB the
    # regularizer's training-time MI curve
    (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    data = run_file.read_bytes()
    for key in (
        "test/error",
        "test/I_XZ",
        "test/I_XZ_lower",
        "test/I_ZY",
        *(["mi/mi"] if method == "mine" else []),
    ):
        assert key.encode() in data, key


@pytest.mark.slow
def test_gaussian_encoder_and_mine_bound(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run(
        tmp_path, "--config", "configs/ib_mine.yaml", *SMALL, "--z-noise", "gaussian", "--estimator", "mine",
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert math.isfinite(_results(out)["test_error"])


@pytest.mark.slow
def test_missing_mnist_names_the_files(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    proc = _run(
        tmp_path, "--config", "configs/ib_mine.yaml", "--dataset", "mnist", "--data-root", str(root),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert proc.returncode != 0
    message = proc.stderr
    assert "ib.py: error: MNIST not found" in message and "Traceback" not in message
    assert str(root / "MNIST" / "raw") in message
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        assert name in message


@pytest.mark.slow
def test_resume_auto_continues_from_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _run(tmp_path, "--config", "configs/ib_mine.yaml", *SMALL, "--out", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    assert _results(out)["start_epoch"] == 0

    second = _run(
        tmp_path, "--config", "configs/ib_mine.yaml", *SMALL, "--epochs", "2", "--resume", "auto",
        "--out", str(out),
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert "start_epoch: 1" in second.stdout
    assert "epoch 2/2" in second.stderr and "epoch 1/2" not in second.stderr  # only epoch 2 ran
    res = _results(out)
    assert res["start_epoch"] == 1 and res["epochs"] == 2
    assert [h["epoch"] for h in res["history"]] == [1, 2]  # the history survives the resume
    assert math.isfinite(res["test_error"]) and math.isfinite(res["I_XZ"])


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = launch_two_processes(
        RECIPE, tmp_path, "--config", "configs/ib_mine.yaml", *SMALL, "--out", str(out), wandb_mode="offline",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "processes: 2" in proc.stdout
    res = _results(out)
    assert res["processes"] == 2
    assert math.isfinite(res["test_error"]) and math.isfinite(res["I_XZ"])
