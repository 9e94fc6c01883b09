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
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no recipes/ali.py --config configs/ali_mine.yaml

Offline default data: scikit-learn's 8x8 digits (1,297 train / 500 test); ``--dataset mnist
--data-root DIR`` reads MNIST from DIR/MNIST/raw/ (never downloads). Held-out metrics, on the
test split, with reconstructions G(mean of q(z|x)):

- ``recon_error``: mean over test images of ||x - G(E(x))||_2, pixels in [0, 1];
- ``recon_accuracy``: the fraction of test images whose reconstruction gets the same label as
  the image itself from a separately trained digit classifier (``recipes/digits.py``);
- ``ms_ssim`` (MNIST: MS-SSIM between x and its reconstruction, 11x11 Gaussian window, over
  the scales the image size allows) or, on 8x8 digits where MS-SSIM is not meaningful,
  ``ssim``: single-scale SSIM with a 3x3 Gaussian window; ``ssim_kind`` says which;
- ``I_xz_heldout``: ``estimate_mi`` of I(x; z), z sampled from q(z|x), in nats.

Each evaluation logs these, the regularizer's MI curve (``mi/...``) and PNG grids of samples and
of (x, reconstruction) pairs to wandb and ``out/``; checkpoints go to ``out/checkpoint``; the
end writes ``out/results.json``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from einops import rearrange
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))  # recipes/digits.py, also when imported

from digits import load_images, load_or_train_classifier, predict_digits  # noqa: E402

from mine_reg import MIRegularizer, estimate_mi  # noqa: E402
from mine_reg.config import load_config  # noqa: E402
from mine_reg.tracking import end_tracking, init_wandb_tracking, log_metrics  # noqa: E402

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli and Bovik 2003


@dataclass
class Config:
    method: str = "mine"  # ali | mine
    dataset: str = "digits"  # digits (offline) | mnist (files under data_root/MNIST/raw/)
    data_root: str = "data"
    classifier: str | None = None  # digit classifier path; None: outputs/classifier_{dataset}.pt
    z_dim: int = 16
    hidden: list[int] | None = None  # E, G and D widths; None: [256, 256] digits, [1024, 1024] mnist
    d_dropout: float = 0.0  # dropout in D
    beta: float = 0.2  # weight of I(x; E(x)) in nats (method mine)
    estimator: str = "mine"
    critic_lr: float = 1e-4
    adaptive_clip: bool = False  # clip the MI gradient to the adversarial gradient's norm
    monitor_mi: bool = True  # method ali: a beta = 0 critic logs I(x; E(x)) (same compute)
    epochs: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    lr_decay: bool = True  # decay both learning rates linearly to 0 over the run (steadier end point)
    eval_every: int = 25  # epochs between evaluations, image grids and checkpoints
    mi_steps: int = 300  # estimate_mi max_steps for the held-out I(x; z) at the end (0: skip)
    seed: int = 0
    out: str = "outputs/ali"
    wandb_project: str = "mine-reg-ali"
    resume: str | None = None  # a checkpoint folder, or "auto" (out/checkpoint if it exists)


# ----------------------------------------------------------------------------- SSIM
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


# ----------------------------------------------------------------------------- models
def mlp(widths: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers through ``widths`` with LeakyReLU(0.2) (and dropout) between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.LeakyReLU(0.2))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Sample(nn.Module):
    """z = mean + std · eps: the layer whose output is z (the regularizer's ``z="z"``)."""

    def forward(self, mean: Tensor, std: Tensor) -> Tensor:
        return mean + std * torch.randn_like(mean)


class Encoder(nn.Module):
    """x [B, 1, H, W] in [0, 1] -> z [B, K] ~ q(z|x) = N(mean(x), diag std(x)²)."""

    def __init__(self, d_x: int, hidden: list[int], k: int) -> None:
        super().__init__()
        self.body = mlp([d_x, *hidden, 2 * k])
        self.z = Sample()

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
        self.body = mlp([k, *hidden, math.prod(shape)])

    def forward(self, z: Tensor) -> Tensor:
        c, h, w = self.shape
        return rearrange(torch.sigmoid(self.body(z)), "b (c h w) -> b c h w", c=c, h=h, w=w)


class Discriminator(nn.Module):
    """D(x [B, 1, H, W], z [B, K]) -> logits [B]: an MLP on the joint [x, z]."""

    def __init__(self, d_x: int, k: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        self.body = mlp([d_x + k, *hidden, 1], dropout)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        joint = torch.cat([rearrange(x, "b c h w -> b (c h w)"), z], dim=-1)
        return rearrange(self.body(joint), "b 1 -> b")


class TrainState:
    """The epoch counter, checkpointed beside the models (``register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.epoch = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])


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


# ----------------------------------------------------------------------------- training
def main(cfg: Config) -> dict:
    if cfg.method not in ("ali", "mine"):
        raise ValueError(f"method must be 'ali' or 'mine', got {cfg.method!r}")
    if cfg.z_dim < 1 or cfg.epochs < 0 or cfg.eval_every < 1:
        raise ValueError("z_dim and eval_every must be >= 1 and epochs >= 0")
    started = time.perf_counter()
    accelerator = Accelerator(
        log_with="wandb", dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True)
    )
    accelerator.print(f"processes: {accelerator.num_processes}")
    set_seed(cfg.seed)
    out = Path(cfg.out)
    mnist = cfg.dataset == "mnist"
    hidden = cfg.hidden or ([1024, 1024] if mnist else [256, 256])
    beta = cfg.beta if cfg.method == "mine" else 0.0

    x_train, y_train, x_test, y_test = load_images(cfg.dataset, cfg.data_root, seed=cfg.seed)
    clf_path = cfg.classifier or f"outputs/classifier_{cfg.dataset}.pt"
    with accelerator.main_process_first():  # the main process trains and saves it, the rest load
        classifier = load_or_train_classifier(cfg.dataset, cfg.data_root, clf_path, seed=0)
    clf_accuracy = float((predict_digits(classifier, x_test) == y_test).float().mean())  # on CPU
    classifier = classifier.to(accelerator.device)
    x_eval = x_test.to(accelerator.device)
    shape = tuple(x_train.shape[1:])
    d_x = math.prod(shape)

    # drop_last: every step sees full batches (MINE pairs need at least 2 samples per process)
    loader = DataLoader(TensorDataset(x_train), batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    encoder = Encoder(d_x, hidden, cfg.z_dim)
    generator = Generator(cfg.z_dim, hidden, shape)
    disc = Discriminator(d_x, cfg.z_dim, hidden, cfg.d_dropout)
    opt_eg = torch.optim.Adam([*encoder.parameters(), *generator.parameters()], lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    encoder, generator, disc, opt_eg, opt_d, loader = accelerator.prepare(
        encoder, generator, disc, opt_eg, opt_d, loader
    )
    # after prepare, on the prepared (possibly DDP) encoder; never passed to prepare: the
    # regularizer synchronises its own critic across processes
    reg = None
    if cfg.method == "mine" or cfg.monitor_mi:
        reg = MIRegularizer(
            encoder, x="input", z="z", beta=beta, mode="maximize", estimator=cfg.estimator,
            lr=cfg.critic_lr, adaptive_clip=cfg.adaptive_clip and beta > 0, seed=cfg.seed,
        )  # fmt: skip
        accelerator.register_for_checkpointing(reg)
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    # noise differs across processes (the prior's z and the encoder's eps)
    torch.manual_seed(cfg.seed * 1000 + accelerator.process_index)

    ckpt = out / "checkpoint"
    if cfg.resume == "auto":
        resume = ckpt if ckpt.is_dir() else None  # auto: start fresh when there is none yet
    else:
        resume = Path(cfg.resume) if cfg.resume else None
    if resume is not None:
        if not resume.is_dir():
            raise FileNotFoundError(f"checkpoint folder not found: {resume}")
        accelerator.load_state(str(resume))
        accelerator.print(f"resumed from {resume} at epoch {state.epoch}")
    start_epoch = state.epoch
    accelerator.print(f"start_epoch: {start_epoch}")

    run_config = {**asdict(cfg), "hidden": hidden, "beta": beta}
    init_wandb_tracking(accelerator, cfg.wandb_project, config=run_config, dir=str(out))
    try:
        import PIL  # noqa: F401
        import wandb  # noqa: F401  (wandb.Image needs pillow)

        images_to_wandb = accelerator.is_main_process
    except ImportError:
        images_to_wandb = False

    plain_e, plain_g = accelerator.unwrap_model(encoder), accelerator.unwrap_model(generator)
    bce = F.binary_cross_entropy_with_logits
    metrics: dict = {}
    step = start_epoch * len(loader)
    train_seconds = 0.0
    total_steps = max(1, cfg.epochs * len(loader))

    def run_eval(epoch: int, final: bool) -> dict:
        found, recon, samples = evaluate(cfg, plain_e, plain_g, classifier, x_eval, final)
        recon, samples = recon.cpu(), samples.cpu()
        found = {**found, "epoch": epoch}
        if accelerator.is_main_process:
            scale = 4 if shape[-1] < 16 else 2
            pairs = rearrange(torch.stack([x_test[:32], recon[:32]], dim=1), "n two c h w -> (n two) c h w")
            image_grid(samples, 8, out / "samples.png", scale)
            image_grid(pairs, 16, out / "reconstructions.png", scale)
            logged = {k: v for k, v in found.items() if isinstance(v, float | int)}
            if images_to_wandb:
                import wandb

                logged["images/samples"] = wandb.Image(str(out / "samples.png"), caption="G(z), z ~ N(0, I)")
                logged["images/reconstructions"] = wandb.Image(
                    str(out / "reconstructions.png"), caption="pairs: x, G(E(x))"
                )
            accelerator.log(logged, step=step)
            shown = {k.removeprefix("test/"): v for k, v in found.items() if k.startswith("test/")}
            tqdm.write(f"epoch {epoch}: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        return found

    for epoch in range(start_epoch, cfg.epochs):
        loader.set_epoch(epoch)
        tick = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not accelerator.is_main_process)
        for (x,) in bar:
            if cfg.lr_decay:
                for opt in (opt_eg, opt_d):
                    for group in opt.param_groups:
                        group["lr"] = cfg.lr * (1.0 - step / total_steps)
            z_q = encoder(x)  # the regularizer's hooks capture x and z here
            z_p = torch.randn_like(z_q)
            x_p = generator(z_p)
            ones, zeros = torch.ones(len(x), device=x.device), torch.zeros(len(x), device=x.device)
            # D: encoder pairs are "real", generator pairs "fake"
            loss_d = bce(disc(x, z_q.detach()), ones) + bce(disc(x_p.detach(), z_p), zeros)
            opt_d.zero_grad(set_to_none=True)
            accelerator.backward(loss_d)
            opt_d.step()
            # E and G: the flipped labels (non-saturating), plus -beta·I(x; E(x)) for the encoder
            loss_eg = bce(disc(x, z_q), zeros) + bce(disc(x_p, z_p), ones)
            loss = loss_eg
            if reg is not None:
                loss = loss + (reg(task_loss=loss_eg) if reg.adaptive_clip else reg())
            opt_eg.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt_eg.step()
            step += 1
            accelerator.log({"train/loss_d": loss_d.item(), "train/loss_eg": loss_eg.item()}, step=step)
            if reg is not None:
                log_metrics(accelerator, reg, step=step)
                bar.set_postfix(d=f"{loss_d.item():.3f}", mi=f"{reg.metrics()['mi']:.3f}")
            else:
                bar.set_postfix(d=f"{loss_d.item():.3f}")
        train_seconds += time.perf_counter() - tick
        state.epoch = epoch + 1
        last = epoch + 1 == cfg.epochs
        if state.epoch % cfg.eval_every == 0 or last:
            metrics = run_eval(state.epoch, final=last)
            accelerator.save_state(str(ckpt))

    if not metrics:  # nothing left to train (resumed at the last epoch): evaluate once
        metrics = run_eval(state.epoch, final=True)
    mi_now = reg.metrics().get("mi", math.nan) if reg is not None else math.nan
    results = {
        "method": cfg.method,
        "dataset": cfg.dataset,
        "beta": beta,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "start_epoch": start_epoch,
        "steps": step,
        "processes": accelerator.num_processes,
        "recon_error": metrics["test/recon_error"],
        "recon_mse": metrics["test/recon_mse"],
        "recon_accuracy": metrics["test/recon_accuracy"],
        "ssim": metrics.get("test/ssim"),
        "ms_ssim": metrics.get("test/ms_ssim"),
        "ssim_kind": metrics["ssim_kind"],
        "I_xz_heldout": metrics.get("test/I_xz", math.nan),
        "I_xz_train_last": mi_now,
        "encoder_mean_std": metrics["test/mean_std"],
        "classifier_accuracy": clf_accuracy,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - started,
        "samples_png": str(out / "samples.png"),
        "reconstructions_png": str(out / "reconstructions.png"),
    }
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        ssim_value = results["ms_ssim"] if results["ms_ssim"] is not None else results["ssim"]
        print(
            f"{cfg.method} (beta={beta:g}, seed={cfg.seed}): recon error {results['recon_error']:.3f}, "
            f"recon accuracy {results['recon_accuracy']:.4f}, (MS-)SSIM {ssim_value:.4f}, "
            f"I(x;z) {results['I_xz_heldout']:.3f} nats -> {out / 'results.json'}"
        )
    end_tracking(accelerator)  # also waits until the offline wandb run file is written
    return results


if __name__ == "__main__":
    try:
        main(load_config(Config, description=__doc__))
    except (FileNotFoundError, ValueError) as err:  # bad data path or setting: a message, no traceback
        sys.exit(f"ali.py: error: {err}")
