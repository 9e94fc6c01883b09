"""The GAN-codes recipes (recipes/gan_codes_grid25.py, recipes/gan_codes_stacked.py, sharing
recipes/gan_codes.py) end to end, a few steps each: baseline and MINE on 25 Gaussians, stacked
digits (offline), resuming from a checkpoint, the missing-MNIST error, and a two-process CPU run
through ``accelerate launch`` (25 Gaussians; the stacked conv GAN's runs on two processes from
MNIST files in ``tests/test_mnist5k.py``).

A few steps of a GAN say nothing about mode coverage, so the checks are on plumbing and sanity:
the metrics exist, are finite and lie in their ranges (modes 0..25 or 0..1000, high-quality %
in [0, 100], KL in [0, log K] nats), and the MI term was active (the critic reported an
estimate). wandb is disabled except in the one test that checks the offline run is written.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from recipe_runs import launch_two_processes, read_results, run_recipe

from recipes.digits import DigitClassifier, save_classifier
from recipes.gan_codes_grid25 import GRID_STD, grid_metrics, grid_modes
from recipes.gan_codes_stacked import ConvDiscriminator, ConvGenerator, stacked_metrics

pytestmark = pytest.mark.slow

GRID, STACKED = "gan_codes_grid25", "gan_codes_stacked"
SMALL = ["--steps", "10", "--batch-size", "64", "--eval-every", "5", "--ckpt-every", "5"]
SMALL += ["--eval-samples", "500", "--curve-samples", "200", "--mi-samples", "400", "--mi-steps", "20"]
DIGITS = ["--dataset", "digits"]  # the stacked configs default to mnist5k; the smoke runs take 8x8 digits


_grid = functools.partial(run_recipe, GRID)
_stacked = functools.partial(run_recipe, STACKED)
_results = read_results


def _untrained_classifier(tmp_path: Path) -> Path:
    """A saved, untrained digit classifier: it stands in for the trained one (15 s to train), so
    the modes it reads are arbitrary but must be valid."""
    torch.manual_seed(0)
    path = tmp_path / "classifier.pt"
    save_classifier(DigitClassifier(), path, "digits")
    return path


def _check_grid(res: dict) -> None:
    assert res["problem"] == "grid25" and res["eval_samples"] == 500
    assert isinstance(res["modes"], int) and 0 <= res["modes"] <= 25, res
    assert 0.0 <= res["high_quality_pct"] <= 100.0, res
    assert 0.0 <= res["kl"] <= math.log(25) + 1e-9, res
    assert math.isfinite(res["I_Gc"]) and math.isfinite(res["train_seconds"]), res


def test_grid25_baseline_few_steps(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _grid(
        tmp_path, "--config", "configs/gan_codes_grid25.yaml", *SMALL, "--out", str(out), wandb_mode="offline"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "processes: 1" in proc.stdout
    res = _results(out)
    assert res["method"] == "baseline" and res["beta"] == 0.0 and math.isnan(res["critic_mi"])
    assert res["processes"] == 1 and res["start_step"] == 0 and res["steps"] == 10
    _check_grid(res)
    assert (out / "checkpoint").is_dir() and (out / "samples.png").is_file()
    assert list((out / "wandb").glob("offline-run-*"))  # the run was logged (offline)


def test_stacked_digits_few_steps(tmp_path: Path) -> None:
    """The stacked path end to end; an untrained classifier stands in for the trained one (which
    takes 15 s to train), so the modes it reads are arbitrary but must be valid."""
    classifier = _untrained_classifier(tmp_path)
    out = tmp_path / "out"
    proc = _stacked(
        tmp_path, "--config", "configs/gan_codes_stacked_mine.yaml", *SMALL, *DIGITS, "--out", str(out),
        "--classifier", str(classifier),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = _results(out)
    assert res["problem"] == "stacked" and res["dataset"] == "digits" and res["method"] == "mine"
    assert res["beta"] == 1.0 and res["eval_samples"] == 500
    assert isinstance(res["modes"], int) and 1 <= res["modes"] <= 1000, res
    assert 0.0 <= res["confident_pct"] <= 100.0, res
    assert 0.0 <= res["kl"] <= math.log(1000) + 1e-9, res
    assert math.isfinite(res["I_Gc"]) and math.isfinite(res["critic_mi"]), res
    assert (out / "samples.png").is_file()


def test_resume_auto_continues_from_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _grid(tmp_path, "--config", "configs/gan_codes_grid25_mine.yaml", *SMALL, "--out", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    assert _results(out)["start_step"] == 0

    second = _grid(
        tmp_path, "--config", "configs/gan_codes_grid25_mine.yaml", *SMALL, "--steps", "15",
        "--resume", "auto", "--out", str(out),
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert "start_step: 10" in second.stdout
    res = _results(out)
    assert res["method"] == "mine" and res["beta"] == 1.0
    assert res["start_step"] == 10 and res["steps"] == 15
    _check_grid(res)
    assert math.isfinite(res["critic_mi"]), res  # the regularizer ran and reported nats


def test_missing_mnist_is_a_one_line_error(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    proc = _stacked(
        tmp_path, "--config", "configs/gan_codes_stacked_mine.yaml", "--dataset", "mnist",
        "--data-root", str(root), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert proc.returncode != 0
    message = proc.stderr
    assert "gan_codes_stacked.py: error: MNIST not found" in message and "Traceback" not in message
    assert str(root / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message


@pytest.mark.distributed
def test_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = launch_two_processes(
        GRID, tmp_path, "--config", "configs/gan_codes_grid25_mine.yaml", *SMALL, "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "processes: 2" in proc.stdout
    res = _results(out)
    assert res["processes"] == 2
    _check_grid(res)
    assert math.isfinite(res["critic_mi"]), res


def test_mode_metrics_on_samples_with_known_answers() -> None:
    modes = grid_modes()
    gen = torch.Generator().manual_seed(0)
    # 100 samples on every mode, within 1 std: all 25 covered, all high quality, KL 0
    perfect = modes.repeat(100, 1) + GRID_STD * torch.randn(2500, 2, generator=gen).clamp(-1, 1)
    m = grid_metrics(perfect)
    assert m["modes"] == 25 and m["high_quality_pct"] == 100.0 and m["kl"] == pytest.approx(0.0, abs=1e-12)
    # everything on one mode: 1 covered, KL = log 25
    collapsed = grid_metrics(modes[:1].repeat(2500, 1))
    assert collapsed["modes"] == 1 and collapsed["kl"] == pytest.approx(math.log(25))
    # 4 std away from the modes (still nearest to them): nothing is high quality, nothing covered
    off = grid_metrics(modes + torch.tensor([4 * GRID_STD, 0.0]))
    assert off["modes"] == 0 and off["high_quality_pct"] == 0.0 and off["kl"] == pytest.approx(0.0, abs=1e-12)
    # stacked: two modes in equal parts -> 2 covered, KL = log(1000 / 2)
    s = stacked_metrics(torch.tensor([7, 993] * 13000))
    assert s["modes"] == 2 and s["kl"] == pytest.approx(math.log(500)) and "confident_pct" not in s
    # confident only when all three digits reach 0.9: rows 0 and 2 of these four
    confidence = torch.tensor([[0.95, 0.9, 0.99], [0.95, 0.89, 0.99], [1.0, 1.0, 1.0], [0.2, 0.3, 0.1]])
    assert stacked_metrics(torch.tensor([1, 2, 3, 4]), confidence)["confident_pct"] == pytest.approx(50.0)


@pytest.mark.parametrize("side", [8, 28])
def test_conv_networks_shapes_and_range(side: int) -> None:
    """The DCGAN-style pair on 8x8 digits and 28x28 MNIST: G(z) in [0, 1] of the data's shape, one
    logit per sample, gradients reaching the generator's input layer."""
    torch.manual_seed(0)
    shape = (3, side, side)
    G, D = ConvGenerator(32, 16, shape), ConvDiscriminator(16, shape)
    fake = G(torch.randn(5, 32))
    lo, hi = fake.detach().aminmax()
    assert fake.shape == (5, *shape) and 0.0 <= float(lo) and float(hi) <= 1.0
    logits = D(fake)
    assert logits.shape == (5,)
    logits.sum().backward()
    assert G.project[0].weight.grad is not None and G.project[0].weight.grad.abs().sum() > 0


def test_pooled_critic_view_averages_blocks_and_removes_checkerboards() -> None:
    from recipes.gan_codes import pooled

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 28, 28, generator=gen)
    assert pooled(images, 0) is images  # 0: the critic reads G(z) as it is
    points = torch.rand(5, 2, generator=gen)
    assert pooled(points, 7) is points  # not an image batch: unchanged
    view = pooled(images, 7)
    assert view.shape == (5, 3, 7, 7)
    # each pooled pixel is the mean of its 4x4 block
    torch.testing.assert_close(view[2, 1, 3, 5], images[2, 1, 12:16, 20:24].mean())
    # a +-a checkerboard on top of any image leaves the pooled view unchanged
    i, j = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    checker = 0.3 * (1 - 2 * ((i + j) % 2)).float()
    torch.testing.assert_close(pooled(images + checker, 7), view)
