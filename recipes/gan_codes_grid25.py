"""GAN codes on 25 Gaussians: does maximizing I(G(z); c) keep a GAN on all 25 modes?

The MINE paper's mode-dropping experiment (Belghazi et al. 2018, section 5.1) on a 5x5 grid of
Gaussians (spacing 2, std 0.05), with MLP networks; the GAN, its latent z = [eps, c] and the MI
term are those of ``recipes/gan_codes.py``:

    method baseline  the GAN alone
    method mine      + MIRegularizer(G, x=lambda z: z[:, -code_dim:], z=None, mode="maximize")

A sample is high quality when within 3 std of its nearest mode; a mode is covered when it holds
at least one high-quality sample out of ``eval_samples``; also reported: the percentage of
high-quality samples and KL(mode histogram || uniform) in nats, the histogram being the nearest
mode of every sample, and a held-out estimate of I(G(z); c).

    python recipes/gan_codes_grid25.py --config configs/gan_codes_grid25_mine.yaml [--seed 1] [--resume auto]
    python -m recipes.gan_codes_grid25 --config configs/gan_codes_grid25.yaml      (the baseline)
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \\
        --mixed_precision no --dynamo_backend no recipes/gan_codes_grid25.py \\
        --config configs/gan_codes_grid25_mine.yaml

Both configs inherit every budget setting from ``configs/gan_codes_grid25_base.yaml``. The end
writes ``out/results.json`` and ``out/samples.png`` (a scatter of 2,500 samples over the grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from accelerate import Accelerator
from torch import nn

from recipes.common import run
from recipes.gan_codes import Discriminator, GANConfig, Generator, kl_to_uniform, train

GRID_SIDE, GRID_SPACING, GRID_STD = 5, 2.0, 0.05


@dataclass
class Config(GANConfig):
    out: str = "outputs/gan_codes_grid25"


def grid_modes() -> torch.Tensor:
    """The 25 mode centres [25, 2]: a 5x5 grid with spacing 2, centred on the origin."""
    axis = (torch.arange(GRID_SIDE, dtype=torch.float32) - (GRID_SIDE - 1) / 2) * GRID_SPACING
    return torch.cartesian_prod(axis, axis)


def sample_grid(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` samples [n, 2] of the 25-Gaussian mixture (equal weights, std 0.05)."""
    modes = grid_modes()
    idx = torch.randint(len(modes), (n,), generator=generator)
    return modes[idx] + GRID_STD * torch.randn(n, 2, generator=generator)


def grid_metrics(samples: torch.Tensor) -> dict[str, float]:
    """25-Gaussian metrics of ``samples`` [N, 2]: modes covered (of 25; a mode counts when at
    least one high-quality sample, within 3 std of it, is nearest to it), the percentage of
    high-quality samples, and KL(histogram of nearest modes of all samples || uniform) in nats."""
    dist = torch.cdist(samples.double(), grid_modes().double())  # [N, 25]
    nearest_dist, nearest = dist.min(dim=1)
    high = nearest_dist <= 3 * GRID_STD
    covered = torch.bincount(nearest[high], minlength=25) > 0
    return {
        "modes": int(covered.sum()),
        "high_quality_pct": 100.0 * float(high.double().mean()),
        "kl": kl_to_uniform(torch.bincount(nearest, minlength=25)),
    }


class Grid25:
    """The 25-Gaussian problem for :func:`recipes.gan_codes.train`: points [n, 2], MLP networks."""

    name = dataset = "grid25"
    plot_samples = 2500
    figsize = (5, 5)

    def __init__(self, cfg: Config, accelerator: Accelerator, generator: torch.Generator) -> None:
        self.cfg, self.generator = cfg, generator

    def describe(self, results: dict) -> str:
        return f"modes {results['modes']}/25, high quality {results['high_quality_pct']:.1f}%"

    def sample(self, n: int) -> torch.Tensor:
        return sample_grid(n, self.generator)

    def networks(self, z_dim: int) -> tuple[nn.Module, nn.Module]:
        return Generator(z_dim, self.cfg.g_hidden, (2,)), Discriminator(2, self.cfg.d_hidden)

    def metrics(self, samples: torch.Tensor) -> dict[str, float]:
        return grid_metrics(samples)

    def draw(self, ax: plt.Axes, samples: torch.Tensor) -> None:
        modes = grid_modes()
        ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.4, label="generated")
        ax.scatter(modes[:, 0], modes[:, 1], s=30, c="red", marker="x", label="modes")
        for m in modes:
            ax.add_patch(plt.Circle(m.tolist(), 3 * GRID_STD, fill=False, color="red", lw=0.5))
        ax.set(xlim=(-6, 6), ylim=(-6, 6), aspect="equal")
        ax.legend(loc="upper right", fontsize=7)


def main(cfg: Config) -> dict:
    return train(cfg, Grid25)


if __name__ == "__main__":
    run(main, Config, __doc__)
