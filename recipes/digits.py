"""Digit images for the recipes: offline 8x8 digits or MNIST from a local folder, stacked
three-digit images (1000 modes), and the digit classifier that counts modes and judges
reconstructions.

    x_train, y_train, x_test, y_test = load_images("digits", "data")   # [N, 1, H, W] in [0, 1]
    x3, modes = stack_digits(x_train, y_train, 26_000, generator)     # [N, 3, H, W], 0..999
    clf = load_or_train_classifier("digits", "data", "outputs/classifier_digits.pt")
    modes, confidence = classify_stacked(clf, x3)                      # [N] in 0..999, [N, 3]
    clf = shared_classifier(accelerator, "digits", "data")             # the same, once per run

``digits`` is scikit-learn's ``load_digits`` (1,797 real 8x8 digits, 1,297 train / 500 test,
stratified), which ships with the package. ``mnist`` reads torchvision's MNIST files from
``DATA_ROOT/MNIST/raw/`` and never downloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def load_images(
    dataset: str, data_root: str = "data", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): images float32 [N, 1, H, W] in [0, 1], labels int64.

    ``digits``: 8x8, split 1,297 / 500 stratified by ``seed``. ``mnist``: 28x28, the standard
    60,000 / 10,000 split, from ``data_root/MNIST/raw/`` (FileNotFoundError naming the files).
    """
    if dataset == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x_tr, x_te, y_tr, y_te = train_test_split(
            digits.images / 16.0, digits.target, test_size=500, stratify=digits.target, random_state=seed
        )
        as_x = lambda a: rearrange(torch.tensor(a, dtype=torch.float32), "n h w -> n 1 h w")  # noqa: E731
        return as_x(x_tr), torch.tensor(y_tr).long(), as_x(x_te), torch.tensor(y_te).long()
    if dataset == "mnist":
        from torchvision.datasets import MNIST

        raw = Path(data_root) / "MNIST" / "raw"
        missing = [f for f in MNIST_FILES if not (raw / f).is_file() and not (raw / f"{f}.gz").is_file()]
        if missing:
            raise FileNotFoundError(
                f"MNIST not found: expected the files {', '.join(MNIST_FILES)} (or .gz) in {raw}/ "
                f"(missing: {', '.join(missing)}). Nothing is downloaded; copy them there, point "
                "--data-root at the folder holding MNIST/raw/, or use --dataset digits (offline)."
            )
        train = MNIST(data_root, train=True, download=False)
        test = MNIST(data_root, train=False, download=False)
        as_x = lambda ds: rearrange(ds.data.float() / 255.0, "n h w -> n 1 h w")  # noqa: E731
        return as_x(train), train.targets.long(), as_x(test), test.targets.long()
    raise ValueError(f"dataset must be 'digits' or 'mnist', got {dataset!r}")


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
    """A small convolutional classifier: [N, 1, H, W] in [0, 1] -> logits [N, 10] (H, W >= 8)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_classifier(
    x: torch.Tensor, y: torch.Tensor, epochs: int = 40, seed: int = 0, batch_size: int = 64
) -> DigitClassifier:
    """Train a :class:`DigitClassifier` on images [N, 1, H, W], each batch shifted by up to one
    pixel (zero-padded random crop)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = DigitClassifier()
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


def load_or_train_classifier(
    dataset: str, data_root: str, path: str | Path, seed: int = 0, verbose: bool = True
) -> DigitClassifier:
    """The digit classifier for ``dataset``: loaded from ``path`` when it holds one trained on the
    same dataset, otherwise trained on the train split, saved to ``path`` and reported (test
    accuracy). Deterministic given ``seed``; frozen (eval mode, no gradients)."""
    path = Path(path)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("dataset") == dataset:
            clf = DigitClassifier()
            clf.load_state_dict(saved["state"])
            return clf.eval().requires_grad_(False)
    x_tr, y_tr, x_te, y_te = load_images(dataset, data_root, seed=0)
    clf = train_classifier(x_tr, y_tr, epochs=40 if dataset == "digits" else 3, seed=seed)
    accuracy = float((predict_digits(clf, x_te) == y_te).float().mean())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dataset": dataset, "state": clf.state_dict(), "test_accuracy": accuracy}, path)
    if verbose:
        print(f"digit classifier ({dataset}): test accuracy {accuracy:.4f} -> {path}")
    return clf.requires_grad_(False)


def shared_classifier(
    accelerator: Any, dataset: str, data_root: str, path: str | Path | None = None
) -> DigitClassifier:
    """:func:`load_or_train_classifier` for a run on several processes: the main process trains
    and saves it (when ``path``, default ``outputs/classifier_<dataset>.pt``, holds none), then
    the others load it; on CPU, frozen."""
    with accelerator.main_process_first():
        return load_or_train_classifier(
            dataset, data_root, path or f"outputs/classifier_{dataset}.pt", seed=0
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
