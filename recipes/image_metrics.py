"""SSIM and MS-SSIM between images and their reconstructions (Wang, Simoncelli and Bovik 2003).

    value = ssim(x, y, window_size=3, sigma=1.0)      # [N], for images too small for MS-SSIM
    value, scales = ms_ssim(x, y)                      # [N], over as many scales as the size allows

Both average the SSIM map over the 'valid' windows only (no padding), with an explicit window
size. torchmetrics' functions were compared and differ on purpose: they average over a
reflect-padded image and derive the window from sigma (``int(3.5·sigma + 0.5)·2 + 1``), so a 3x3
window on 8x8 digits cannot be expressed, and on 28x28 images its MS-SSIM differed from this one
by up to 0.085.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ssim", "ms_ssim", "ms_ssim_scales", "MS_SSIM_WEIGHTS"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli and Bovik 2003


def _gaussian_window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    """A normalised 2-D Gaussian window [channels, 1, size, size] for a grouped convolution."""
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def _ssim_and_cs(x: Tensor, y: Tensor, window: Tensor, data_range: float) -> tuple[Tensor, Tensor]:
    """Mean SSIM and mean contrast-structure term per image [N] ('valid' windows only)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    channels = x.shape[1]
    conv = lambda t: F.conv2d(t, window, groups=channels)  # noqa: E731
    mu_x, mu_y = conv(x), conv(y)
    var_x = conv(x * x) - mu_x**2
    var_y = conv(y * y) - mu_y**2
    cov = conv(x * y) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs).mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))


def ssim(x: Tensor, y: Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Single-scale SSIM per image [N] of images x, y [N, C, H, W] with values in
    [0, data_range]; 1 for identical images. Needs H, W >= window_size."""
    if min(x.shape[-2:]) < window_size:
        raise ValueError(
            f"images of {tuple(x.shape[-2:])} pixels are smaller than the {window_size}-pixel window"
        )
    window = _gaussian_window(window_size, sigma, x.shape[1], x)
    return _ssim_and_cs(x.float(), y.float(), window.float(), data_range)[0]


def ms_ssim_scales(size: int, window_size: int = 11) -> int:
    """How many MS-SSIM scales (at most 5, halving each time) keep ``size`` >= the window."""
    scales = 0
    while scales < len(MS_SSIM_WEIGHTS) and size // 2**scales >= window_size:
        scales += 1
    return scales


def ms_ssim(
    x: Tensor, y: Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0
) -> tuple[Tensor, int]:
    """MS-SSIM per image [N] of images x, y [N, C, H, W] in [0, data_range], and the number of
    scales used: as many of the standard five as the image size allows (the smallest scale still
    at least ``window_size`` pixels), with the standard weights renormalised over them. The
    contrast-structure terms of the finer scales and the full SSIM of the coarsest are combined
    as a weighted geometric mean (negative terms clamped to 0). 1 for identical images."""
    scales = ms_ssim_scales(min(x.shape[-2:]), window_size)
    if scales == 0:
        raise ValueError(f"images of {tuple(x.shape[-2:])} pixels are too small for MS-SSIM")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float32)
    weights = weights / weights.sum()
    x, y = x.float(), y.float()
    window = _gaussian_window(window_size, sigma, x.shape[1], x)
    result = torch.ones(x.shape[0])
    for j in range(scales):
        full, cs = _ssim_and_cs(x, y, window, data_range)
        term = full if j == scales - 1 else cs
        result = result * term.clamp_min(0).cpu() ** weights[j]
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return result, scales
