"""recipes/ali.py: SSIM / MS-SSIM checks (recipes/image_metrics.py), and the recipe end to end on
the offline digits data (a few steps each): results.json fields and images, resuming from a
checkpoint and the missing-MNIST error (baseline config). The two-process run (with adaptive
clipping, the path that differentiates through the DDP-wrapped encoder twice) reads MNIST files
in ``tests/test_mnist5k.py``.

The runs share one digit classifier (trained for 2 epochs by a fixture) and use tiny networks
(width 32, z of 4 dims) for 1-2 epochs of 3 steps: batches of 400 of the 1,297 training images
(the last partial batch is dropped). No quality is checked here, only that every metric is
produced and finite.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from recipe_runs import read_results, run_recipe

from recipes.digits import load_images, save_classifier, train_classifier
from recipes.image_metrics import ms_ssim, ms_ssim_scales, ssim

RECIPE = "ali"
# the configs default to mnist5k; the smoke runs take the 8x8 digits (seconds per run)
SMALL = ["--dataset", "digits", "--epochs", "1", "--batch-size", "400", "--hidden", "32", "--z-dim", "4"]
SMALL += ["--mi-steps", "20"]


# ----------------------------------------------------------------------------- SSIM
def test_ssim_identical_is_one_and_noise_lowers_it() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=gen)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    value, scales = ms_ssim(x, x)
    assert scales == 2  # 28 and 14 pixels hold an 11-pixel window, 7 does not
    assert torch.allclose(value, torch.ones(6), atol=1e-5)
    lowered, _ = ms_ssim(x, noisy)
    assert (lowered < 0.9).all()
    small = x[..., :8, :8]
    assert torch.allclose(ssim(small, small, window_size=3, sigma=1.0), torch.ones(6), atol=1e-5)
    assert (ssim(small, noisy[..., :8, :8], window_size=3, sigma=1.0) < 0.9).all()
    assert ms_ssim_scales(8) == 0 and ms_ssim_scales(256) == 5
    with pytest.raises(ValueError, match="too small"):
        ms_ssim(small, small)


# ----------------------------------------------------------------------------- recipe runs
@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One quickly trained digit classifier (2 epochs, not the recipe's 15) for every run in this
    file, saved as ``recipes/digits.py``'s ``load_or_train_classifier`` saves and reloads it."""
    torch.set_num_threads(1)
    x_tr, y_tr, _, _ = load_images("digits", "data", seed=0)
    clf = train_classifier(x_tr, y_tr, epochs=2, seed=0)
    path = tmp_path_factory.mktemp("classifier") / "digits.pt"
    save_classifier(clf, path, "digits", seed=0, epochs=2)
    return str(path)


_run = functools.partial(run_recipe, RECIPE)
_results = read_results


@pytest.mark.slow
def test_run_then_resume(tmp_path: Path, classifier: str) -> None:
    out = tmp_path / "out"
    first = _run(
        tmp_path, "--config", "configs/ali_mine.yaml", *SMALL, "--classifier", classifier,
        "--out", str(out), wandb_mode="offline",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    assert "processes: 1" in first.stdout
    res = _results(out)
    assert res["method"] == "mine" and res["beta"] == 0.2 and res["start_epoch"] == 0 and res["steps"] == 3
    assert res["processes"] == 1 and res["ms_ssim"] is None and "single-scale SSIM" in res["ssim_kind"]
    for key in ("recon_error", "recon_mse", "recon_accuracy", "ssim", "I_xz_heldout", "I_xz_train_last"):
        assert math.isfinite(res[key]), (key, res)
    assert 0.0 <= res["recon_accuracy"] <= 1.0 and res["recon_error"] > 0
    assert res["classifier_accuracy"] > 0.5  # the fixture's 2-epoch classifier (chance: 0.1)
    for name in ("samples.png", "reconstructions.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "checkpoint").is_dir()
    run_files = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert run_files, "no offline wandb run was written"
    logged = b"".join(p.read_bytes() for p in run_files)  # wandb's binary records hold the keys
    for key in (b"mi/mi", b"test/recon_accuracy", b"images/samples", b"images/reconstructions"):
        assert key in logged, key

    second = _run(
        tmp_path, "--config", "configs/ali_mine.yaml", *SMALL, "--epochs", "2", "--resume", "auto",
        "--classifier", classifier, "--out", str(out),
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert "start_epoch: 1" in second.stdout
    assert "epoch 2/2" in second.stderr and "epoch 1/2" not in second.stderr  # only epoch 2 ran
    res = _results(out)
    assert res["start_epoch"] == 1 and res["epochs"] == 2 and res["steps"] == 6
    assert math.isfinite(res["recon_error"])


@pytest.mark.slow
def test_missing_mnist_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    proc = _run(
        tmp_path, "--config", "configs/ali.yaml", "--dataset", "mnist", "--data-root", str(root),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert proc.returncode != 0
    assert "ali.py: error: MNIST not found" in proc.stderr and "Traceback" not in proc.stderr
    assert str(root / "MNIST" / "raw") in proc.stderr and "train-images-idx3-ubyte" in proc.stderr
