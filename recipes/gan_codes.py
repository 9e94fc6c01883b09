"""GAN codes: a GAN whose latent is z = [eps, c], with MINE maximizing I(G(z); c).

    generator loss  = adversarial loss - beta · I(G([eps, c]); c)

the MINE paper's mode-collapse experiment (Belghazi et al. 2018, section 5.1). The regularizer
reads c out of the generator's input with a callable spec and gets G(z) at call time; its MI
gradient on the generator is clipped adaptively against the adversarial one (the paper's
g_a = min(||g_u||, ||g_m||)·g_m/||g_m||, ``adaptive_clip=True`` with ``reg(task_loss=...)``).

    method baseline  the same GAN, same budget, no MI term
    method mine      + MIRegularizer(G, x=lambda z: z[:, -code_dim:], z=None, mode="maximize"),
                     called as reg(z=standardize(G(z) + n), task_loss=adversarial loss), n
                     Gaussian pixel noise of std ``critic_noise`` (0: none)

For a deterministic generator, I(G(z); c) is the part of the output's entropy that c controls, so
maximizing it spreads the generator over more of the data. Measured on pixels as they are, the
critic can read c from faint per-code patterns no discriminator notices, and the generator meets
the term that way while collapsing; noise in the critic's view (``critic_noise``) makes only
visible differences count: I(G(z) + n; c) <= I(G(z); c) discounts whatever the noise drowns.

    problem grid25   25 Gaussians: 5x5 grid, spacing 2, std 0.05. A sample is high quality when
                     within 3 std of its nearest mode; a mode is covered when it holds at least
                     one high-quality sample out of 2,500; also the percentage of high-quality
                     samples and KL(mode histogram || uniform) in nats, the histogram being the
                     nearest mode of every sample.
    problem stacked  three digits as the three channels (1000 modes): offline scikit-learn 8x8
                     digits (``--dataset digits``) or MNIST from ``--data-root`` (``--dataset
                     mnist``). Modes are read by a digit classifier trained once and cached
                     (``--classifier``); modes covered out of 1000 (at least one sample) and
                     KL(mode histogram || uniform) in nats over 26,000 samples, and as a
                     quality check the percentage of samples whose three digits the classifier
                     all gives probability >= 0.9 (real stacked 8x8 digits: 88.6% train, 86.5%
                     test; 1000 modes and KL 0.019 nats).

Networks: MLPs (``arch: mlp``), or for stacked images a DCGAN-style generator and discriminator
(``arch: conv``, two stride-2 (transposed) convolutions each, for 8x8 digits or 28x28 MNIST).

    python recipes/gan_codes.py --config configs/gan_codes_grid25_mine.yaml [--seed 1] [--resume auto]
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no recipes/gan_codes.py \
        --config configs/gan_codes_stacked_mine.yaml

Generator, discriminator and both optimizers go through ``accelerator.prepare``; the regularizer
is built afterwards on the prepared generator and is checkpointed with
``register_for_checkpointing``. Every process draws its own batches (per-process batch
``batch_size``). wandb (offline without an account) gets the losses, the MI estimate of the
regularizer's critic, evaluation curves and a sample plot (scatter over the grid, or an image
grid of stacked samples). Checkpoints go to ``out/checkpoint`` every ``ckpt_every`` steps; the
end writes ``out/results.json`` and ``out/samples.png``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402
from einops import rearrange  # noqa: E402
from torch import nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits import classify_stacked, load_images, load_or_train_classifier, stack_digits  # noqa: E402

from mine_reg import MIRegularizer, estimate_mi  # noqa: E402
from mine_reg.config import load_config  # noqa: E402
from mine_reg.tracking import end_tracking, init_wandb_tracking, log_metrics  # noqa: E402

GRID_SIDE, GRID_SPACING, GRID_STD = 5, 2.0, 0.05


@dataclass
class Config:
    problem: str = "grid25"  # grid25 | stacked
    method: str = "mine"  # baseline | mine
    dataset: str = "digits"  # stacked only: digits (offline 8x8) | mnist (data_root/MNIST/raw/)
    data_root: str = "data"
    classifier: str | None = None  # stacked: cached digit classifier; None: outputs/classifier_<dataset>.pt
    noise_dim: int = 2  # size of eps ~ N(0, I)
    code: str = "uniform"  # distribution of c: uniform (U[-1, 1]) | gaussian | categorical (one-hot)
    code_dim: int = 10  # size of c
    arch: str = "mlp"  # mlp | conv (stacked only: a DCGAN-style G and D with ``conv_width`` channels)
    conv_width: int = 64
    g_hidden: list[int] = field(default_factory=lambda: [128, 128, 128])
    d_hidden: list[int] = field(default_factory=lambda: [128, 128, 128])
    steps: int = 5000
    batch_size: int = 128  # per process
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    adam_beta1: float = 0.5
    lr_decay: bool = True  # both learning rates fall linearly to 0 over ``steps`` (sharper samples)
    beta: float = 1.0  # weight of I(G(z); c) in nats (method mine; 0 for the baseline)
    estimator: str = "mine"
    critic_lr: float = 1e-4
    critic_hidden: list[int] = field(default_factory=lambda: [128, 128])
    adaptive_clip: bool = True
    critic_noise: float = 0.0  # std of Gaussian noise added to G(z) before the critic sees it
    eval_samples: int | None = None  # final evaluation; None: 2,500 (grid25), 26,000 (stacked)
    curve_samples: int = 2500  # intermediate evaluations (wandb curves)
    eval_every: int = 1000  # steps between intermediate evaluations (0: none)
    mi_samples: int = 2000  # held-out estimate_mi of I(G(z); c) at evaluation (0: skip)
    mi_steps: int = 300
    ckpt_every: int = 1000  # steps between checkpoints (the end always saves one)
    seed: int = 0
    out: str = "outputs/gan_codes"
    wandb_project: str = "mine-reg-gan-codes"
    resume: str | None = None  # a checkpoint folder, or "auto" (out/checkpoint if it exists)


# ----------------------------------------------------------------------------- data
def grid_modes() -> torch.Tensor:
    """The 25 mode centres [25, 2]: a 5x5 grid with spacing 2, centred on the origin."""
    axis = (torch.arange(GRID_SIDE, dtype=torch.float32) - (GRID_SIDE - 1) / 2) * GRID_SPACING
    return torch.cartesian_prod(axis, axis)


def sample_grid(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` samples [n, 2] of the 25-Gaussian mixture (equal weights, std 0.05)."""
    modes = grid_modes()
    idx = torch.randint(len(modes), (n,), generator=generator)
    return modes[idx] + GRID_STD * torch.randn(n, 2, generator=generator)


class RealData:
    """Real batches, drawn on the fly from this process's own generator."""

    def __init__(self, cfg: Config, generator: torch.Generator) -> None:
        self.cfg, self.generator = cfg, generator
        if cfg.problem == "stacked":
            self.x, self.y, _, _ = load_images(cfg.dataset, cfg.data_root, seed=cfg.seed)
            self.shape = (3, *self.x.shape[-2:])
        elif cfg.problem == "grid25":
            self.shape = (2,)
        else:
            raise ValueError(f"problem must be 'grid25' or 'stacked', got {cfg.problem!r}")

    def sample(self, n: int) -> torch.Tensor:
        """[n, 2] points or [n, 3, H, W] stacked images in [0, 1]."""
        if self.cfg.problem == "grid25":
            return sample_grid(n, self.generator)
        return stack_digits(self.x, self.y, n, self.generator)[0]


def sample_latent(cfg: Config, n: int, generator: torch.Generator) -> torch.Tensor:
    """z = [eps, c]: [n, noise_dim + code_dim], eps ~ N(0, I), c as ``cfg.code`` says."""
    eps = torch.randn(n, cfg.noise_dim, generator=generator)
    if cfg.code == "uniform":
        c = 2 * torch.rand(n, cfg.code_dim, generator=generator) - 1
    elif cfg.code == "gaussian":
        c = torch.randn(n, cfg.code_dim, generator=generator)
    elif cfg.code == "categorical":
        c = F.one_hot(torch.randint(cfg.code_dim, (n,), generator=generator), cfg.code_dim).float()
    else:
        raise ValueError(f"code must be 'uniform', 'gaussian' or 'categorical', got {cfg.code!r}")
    return torch.cat([eps, c], dim=1)


# ----------------------------------------------------------------------------- models
def mlp(widths: list[int], act: Callable[[], nn.Module]) -> nn.Sequential:
    """Linear layers of the given widths with ``act`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers[:-1])  # no activation after the last layer


def standardize(fake: torch.Tensor) -> torch.Tensor:
    """Each output feature of a batch [B, ...] -> zero mean, unit std over the batch, as [B, D].

    I(G(z); c) is unchanged by a per-feature affine map, but the critic is not: a fresh generator's
    sigmoid pixels vary by about 0.007 across a batch, too little for the critic's gradient to
    find any dependence on c, and its MI estimate stayed at 0 throughout training."""
    flat = rearrange(fake, "b ... -> b (...)")
    return (flat - flat.mean(0)) / (flat.std(0) + 1e-6)


def with_critic_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """What the regularizer's critic reads of generated samples: ``x`` plus Gaussian noise of std
    ``std`` per entry (``x`` itself when ``std`` is 0)."""
    if std <= 0:
        return x
    return x + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class Generator(nn.Module):
    """z [B, noise_dim + code_dim] -> a sample: [B, 2] points, or [B, 3, H, W] in [0, 1]."""

    def __init__(self, z_dim: int, hidden: list[int], shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape
        self.net = mlp([z_dim, *hidden, math.prod(shape)], nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        if len(self.shape) == 1:
            return out
        c, h, w = self.shape
        return rearrange(torch.sigmoid(out), "b (c h w) -> b c h w", c=c, h=h, w=w)


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


class Discriminator(nn.Module):
    """A sample [B, ...] -> a logit [B] (real vs generated)."""

    def __init__(self, d_in: int, hidden: list[int]) -> None:
        super().__init__()
        self.net = mlp([d_in, *hidden, 1], lambda: nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.net(rearrange(x, "b ... -> b (...)")), "b 1 -> b")


class TrainState:
    """Step counter and this process's sampling generator, checkpointed with the models."""

    def __init__(self, generator: torch.Generator) -> None:
        self.step, self.generator = 0, generator

    def state_dict(self) -> dict:
        return {"step": self.step, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])


# ----------------------------------------------------------------------------- metrics
def kl_to_uniform(counts: torch.Tensor) -> float:
    """KL(p || uniform) in nats for a histogram ``counts`` [K] (0 · log 0 = 0)."""
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return float((p * torch.log(p * len(counts))).sum())


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


CONFIDENT = 0.9  # a stacked sample is confidently classified when all three digits reach this


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


@torch.no_grad()
def generate(cfg: Config, generator: nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of ``generator`` from a fixed seed (the same on every process), and their
    codes c [n, code_dim]; on CPU."""
    gen = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    zs = sample_latent(cfg, n, gen)
    xs = torch.cat([generator(z.to(device)).cpu() for z in zs.split(4096)])
    return xs, zs[:, -cfg.code_dim :]


def evaluate(cfg: Config, generator: nn.Module, classifier: nn.Module | None, n: int) -> dict[str, float]:
    """The problem's metrics on ``n`` samples, plus a held-out estimate of I(G(z); c) in nats
    (``estimate_mi`` on ``mi_samples`` of them). Deterministic: every process gets the same."""
    generator.eval()
    x, c = generate(cfg, generator, n, seed=10_000 + cfg.seed)
    generator.train()
    metrics = (
        grid_metrics(x) if cfg.problem == "grid25" else stacked_metrics(*classify_stacked(classifier, x))
    )
    if cfg.mi_samples > 0:
        m = min(cfg.mi_samples, n)
        # read out what the regularizer's critic sees: G(z) + critic noise (from a fixed seed)
        x = with_critic_noise(x[:m], cfg.critic_noise, torch.Generator().manual_seed(30_000 + cfg.seed))
        # a separable critic alone: the default's closed-form Gaussian part overfits hundreds of
        # pixel dims at a few thousand samples (held-out read-outs of -10 nats and below)
        kw = {"batch_size": min(128, m // 8), "max_steps": cfg.mi_steps, "preprocess": "standardize"}
        kw |= {"critic": "separable", "seed": cfg.seed}
        metrics["I_Gc"] = estimate_mi(rearrange(x, "n ... -> n (...)"), c[:m], **kw).mi
    return metrics


# ----------------------------------------------------------------------------- plots
def plot_samples(cfg: Config, generator: nn.Module, path: Path, title: str) -> None:
    """Scatter of 2,500 samples over the grid (grid25) or a 10x10 grid of stacked samples."""
    generator.eval()
    x, _ = generate(cfg, generator, 2500 if cfg.problem == "grid25" else 100, seed=20_000 + cfg.seed)
    generator.train()
    if cfg.problem == "grid25":
        fig, ax = plt.subplots(figsize=(5, 5))
        modes = grid_modes()
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, label="generated")
        ax.scatter(modes[:, 0], modes[:, 1], s=30, c="red", marker="x", label="modes")
        for m in modes:
            ax.add_patch(plt.Circle(m.tolist(), 3 * GRID_STD, fill=False, color="red", lw=0.5))
        ax.set(xlim=(-6, 6), ylim=(-6, 6), aspect="equal", title=title)
        ax.legend(loc="upper right", fontsize=7)
    else:
        framed = F.pad(x.clamp(0, 1), (1, 1, 1, 1), value=0.35)  # a grey frame around each sample
        image = rearrange(framed, "(r q) c h w -> (r h) (q w) c", r=10)
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(image.numpy(), interpolation="nearest")
        ax.set(title=title, xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def log_image(accelerator: Accelerator, key: str, path: Path, step: int) -> None:
    """Log a PNG as a wandb.Image when a wandb run is active (main process only)."""
    try:
        import PIL  # noqa: F401
        import wandb
    except ImportError:
        return
    if accelerator.is_main_process and wandb.run is not None:
        accelerator.log({key: wandb.Image(str(path))}, step=step)


# ----------------------------------------------------------------------------- training
def main(cfg: Config) -> dict:
    if cfg.method not in ("baseline", "mine"):
        raise ValueError(f"method must be 'baseline' or 'mine', got {cfg.method!r}")
    if cfg.problem not in ("grid25", "stacked"):
        raise ValueError(f"problem must be 'grid25' or 'stacked', got {cfg.problem!r}")
    accelerator = Accelerator(log_with="wandb")
    accelerator.print(f"processes: {accelerator.num_processes}")
    set_seed(cfg.seed)
    out = Path(cfg.out)
    eval_samples = cfg.eval_samples or (2500 if cfg.problem == "grid25" else 26_000)
    beta = 0.0 if cfg.method == "baseline" else cfg.beta

    data_gen = torch.Generator().manual_seed(1000 * cfg.seed + accelerator.process_index)
    data = RealData(cfg, data_gen)
    classifier = None
    if cfg.problem == "stacked":
        path = cfg.classifier or f"outputs/classifier_{cfg.dataset}.pt"
        with accelerator.main_process_first():  # the first process trains and caches it
            classifier = load_or_train_classifier(cfg.dataset, cfg.data_root, path, seed=0)
        classifier.to(accelerator.device)

    z_dim = cfg.noise_dim + cfg.code_dim
    if cfg.arch == "conv" and cfg.problem == "stacked":
        G, D = ConvGenerator(z_dim, cfg.conv_width, data.shape), ConvDiscriminator(cfg.conv_width, data.shape)
    elif cfg.arch == "mlp":
        G = Generator(z_dim, cfg.g_hidden, data.shape)
        D = Discriminator(math.prod(data.shape), cfg.d_hidden)
    else:
        raise ValueError(f"arch must be 'mlp', or 'conv' with problem 'stacked'; got {cfg.arch!r}")
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.adam_beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.adam_beta1, 0.999))
    G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)
    # after prepare, on the prepared generator; never passed to prepare (it syncs its own critic).
    # x: the code c, sliced out of the generator's input; z: G(z), passed when calling.
    reg = None
    if cfg.method == "mine":
        reg = MIRegularizer(
            G, x=lambda z: z[:, -cfg.code_dim :], z=None, beta=beta, mode="maximize",
            estimator=cfg.estimator, lr=cfg.critic_lr, hidden=cfg.critic_hidden,
            adaptive_clip=cfg.adaptive_clip, seed=cfg.seed,
        )  # fmt: skip
        accelerator.register_for_checkpointing(reg)
    state = TrainState(data_gen)
    accelerator.register_for_checkpointing(state)

    ckpt = out / "checkpoint"
    if cfg.resume == "auto":
        resume = ckpt if ckpt.is_dir() else None  # auto: start fresh when there is none yet
    else:
        resume = Path(cfg.resume) if cfg.resume else None
    if resume is not None:
        accelerator.load_state(str(resume))
        accelerator.print(f"resumed from {resume} at step {state.step}")
    start_step = state.step
    accelerator.print(f"start_step: {start_step}")

    run_config = {**asdict(cfg), "beta": beta, "eval_samples": eval_samples}
    init_wandb_tracking(accelerator, cfg.wandb_project, config=run_config, dir=str(out))
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)

    unwrapped_g = accelerator.unwrap_model(G)
    started = time.perf_counter()
    bar = tqdm(
        range(start_step, cfg.steps),
        initial=start_step,
        total=cfg.steps,
        desc=f"{cfg.problem} {cfg.method}",
        disable=not accelerator.is_main_process,
    )
    for step in bar:
        if cfg.lr_decay:  # a function of the step alone, so a resumed run continues the schedule
            for opt, lr in ((opt_g, cfg.lr_g), (opt_d, cfg.lr_d)):
                for group in opt.param_groups:
                    group["lr"] = lr * (1 - step / cfg.steps)
        real = data.sample(cfg.batch_size).to(accelerator.device)
        z = sample_latent(cfg, cfg.batch_size, data_gen).to(accelerator.device)
        fake = G(z)  # the regularizer's hook captures c from z here

        # discriminator: real vs generated, in one forward pass
        logits = D(torch.cat([real, fake.detach()]))
        labels = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).to(logits)
        d_loss = F.binary_cross_entropy_with_logits(logits, labels)
        opt_d.zero_grad(set_to_none=True)
        accelerator.backward(d_loss)
        opt_d.step()

        # generator: non-saturating adversarial loss, minus beta·I(G(z); c) (adaptively clipped)
        g_adv = F.softplus(-D(fake)).mean()
        if reg is None:
            g_loss = g_adv
        else:
            g_loss = g_adv + reg(z=standardize(with_critic_noise(fake, cfg.critic_noise)), task_loss=g_adv)
        opt_g.zero_grad(set_to_none=True)
        accelerator.backward(g_loss)
        opt_g.step()
        state.step = step + 1

        accelerator.log({"train/d_loss": d_loss.item(), "train/g_adv": g_adv.item()}, step=state.step)
        if reg is not None:
            log_metrics(accelerator, reg, step=state.step)
            if state.step % 50 == 0:
                bar.set_postfix(
                    d=f"{d_loss.item():.3f}", g=f"{g_adv.item():.3f}", mi=f"{reg.metrics()['mi']:.2f}"
                )
        elif state.step % 50 == 0:
            bar.set_postfix(d=f"{d_loss.item():.3f}", g=f"{g_adv.item():.3f}")
        if cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < cfg.steps:
            curve = evaluate(cfg, unwrapped_g, classifier, cfg.curve_samples)
            accelerator.log({f"eval/{k}": v for k, v in curve.items()}, step=state.step)
            if accelerator.is_main_process:
                tqdm.write(f"step {state.step}: " + "  ".join(f"{k} {v:.3g}" for k, v in curve.items()))
                png = out / f"samples_{state.step:06d}.png"
                plot_samples(cfg, unwrapped_g, png, f"{cfg.method}, step {state.step}")
                log_image(accelerator, "samples", png, state.step)
        if cfg.ckpt_every and state.step % cfg.ckpt_every == 0 and state.step < cfg.steps:
            accelerator.save_state(str(ckpt))
    bar.close()
    train_seconds = time.perf_counter() - started
    if start_step < cfg.steps or not ckpt.is_dir():
        accelerator.save_state(str(ckpt))

    metrics = evaluate(cfg, unwrapped_g, classifier, eval_samples)
    accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.step)
    results = {
        "problem": cfg.problem,
        "dataset": cfg.dataset if cfg.problem == "stacked" else "grid25",
        "method": cfg.method,
        "beta": beta,
        "seed": cfg.seed,
        "steps": cfg.steps,
        "start_step": start_step,
        "processes": accelerator.num_processes,
        "eval_samples": eval_samples,
        "train_seconds": train_seconds,
        "I_Gc": metrics.pop("I_Gc", math.nan),
        **metrics,
        "critic_mi": reg.metrics().get("mi", math.nan) if reg is not None else math.nan,
    }
    if accelerator.is_main_process:
        png = out / "samples.png"
        plot_samples(cfg, unwrapped_g, png, f"{cfg.problem} {cfg.method}, step {state.step}")
        log_image(accelerator, "samples", png, state.step)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        total = 25 if cfg.problem == "grid25" else 1000
        extra = f", high quality {results['high_quality_pct']:.1f}%" if cfg.problem == "grid25" else ""
        print(
            f"{cfg.problem} {cfg.method} (beta={beta:g}, seed={cfg.seed}): modes {results['modes']}/{total}"
            f"{extra}, KL {results['kl']:.3f} nats, I(G(z);c) {results['I_Gc']:.3f} nats, "
            f"{train_seconds:.0f} s -> {out / 'results.json'}"
        )
    accelerator.wait_for_everyone()
    end_tracking(accelerator)  # also waits until the offline wandb run file is written
    return results


if __name__ == "__main__":
    try:
        main(load_config(Config, description=__doc__))
    except (FileNotFoundError, ValueError) as err:  # bad data path or setting: a message, no traceback
        sys.exit(f"gan_codes.py: error: {err}")
