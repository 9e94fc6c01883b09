"""GAN codes: what the two mode-dropping experiments share (``recipes/gan_codes_grid25.py``, 25
Gaussians, and ``recipes/gan_codes_stacked.py``, stacked digits). A GAN whose latent is
z = [eps, c], with MINE maximizing I(G(z); c):

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

Here: the shared config fields (:class:`GANConfig`), the latent, the MLP generator and
discriminator, the held-out evaluation and :func:`train`, the training loop, which an experiment
calls with its :class:`Problem` (real data, networks, metrics, sample plot). Generator,
discriminator and both optimizers go through ``accelerator.prepare``; the regularizer is built
afterwards on the prepared generator and is checkpointed with ``register_for_checkpointing``.
Every process draws its own batches (per-process batch ``batch_size``). wandb (offline without
an account) gets the losses, the MI estimate of the regularizer's critic, evaluation curves and
sample plots. Checkpoints go to ``out/checkpoint`` every ``ckpt_every`` steps; the end writes
``out/results.json`` and ``out/samples.png``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from einops import rearrange  # noqa: E402
from torch import nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from mine_reg import MIRegularizer, estimate_mi  # noqa: E402
from recipes.common import RunConfig, TrainState, finish, make_accelerator, start_run  # noqa: E402
from recipes.layers import mlp  # noqa: E402
from recipes.report import save_figure  # noqa: E402
from recipes.training import Penalty, log_image, log_step, progress, set_linear_decay  # noqa: E402


@dataclass
class GANConfig(RunConfig):
    method: str = "mine"  # baseline | mine
    noise_dim: int = 2  # size of eps ~ N(0, I)
    code: str = "uniform"  # distribution of c: uniform (U[-1, 1]) | gaussian | categorical (one-hot)
    code_dim: int = 10  # size of c
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
    critic_standardize: bool = False  # the critic's batch standardization (the README's runs: off)
    critic_hidden: list[int] = field(default_factory=lambda: [128, 128])
    adaptive_clip: bool = True
    critic_noise: float = 0.0  # std of Gaussian noise added to G(z) before the critic sees it
    critic_pool: int = 0  # images: the critic reads G(z) average-pooled to this side first (0: as is)
    eval_samples: int = 2500  # final evaluation
    curve_samples: int = 2500  # intermediate evaluations (wandb curves)
    eval_every: int = 1000  # steps between intermediate evaluations (0: none)
    mi_samples: int = 2000  # held-out estimate_mi of I(G(z); c) at evaluation (0: skip)
    mi_steps: int = 300
    ckpt_every: int = 1000  # steps between checkpoints (the end always saves one)
    wandb_project: str = "mine-reg-gan-codes"

    def __post_init__(self) -> None:
        if self.method not in ("baseline", "mine"):
            raise ValueError(f"method must be 'baseline' or 'mine', got {self.method!r}")
        if self.code not in ("uniform", "gaussian", "categorical"):
            raise ValueError(f"code must be 'uniform', 'gaussian' or 'categorical', got {self.code!r}")


class Problem(Protocol):
    """One experiment: its real data, networks, metrics and sample plot."""

    name: str  # "grid25" | "stacked"
    dataset: str  # what results.json calls the data
    plot_samples: int  # how many samples the plot shows
    figsize: tuple[float, float]  # of the plot, in inches

    def sample(self, n: int) -> torch.Tensor:
        """``n`` real samples, drawn from this process's own generator."""

    def networks(self, z_dim: int) -> tuple[nn.Module, nn.Module]:
        """A fresh generator (z [B, z_dim] -> a sample) and discriminator (a sample -> logit [B])."""

    def metrics(self, samples: torch.Tensor) -> dict[str, float]:
        """Mode coverage and quality of generated ``samples``."""

    def draw(self, ax: plt.Axes, samples: torch.Tensor) -> None:
        """Plot ``plot_samples`` generated samples on ``ax``."""

    def describe(self, results: dict) -> str:
        """The problem's part of the printed summary (modes out of how many, ...)."""


# ----------------------------------------------------------------------------- latent and models
def sample_latent(cfg: GANConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """z = [eps, c]: [n, noise_dim + code_dim], eps ~ N(0, I), c as ``cfg.code`` says."""
    eps = torch.randn(n, cfg.noise_dim, generator=generator)
    if cfg.code == "uniform":
        c = 2 * torch.rand(n, cfg.code_dim, generator=generator) - 1
    elif cfg.code == "gaussian":
        c = torch.randn(n, cfg.code_dim, generator=generator)
    else:
        c = F.one_hot(torch.randint(cfg.code_dim, (n,), generator=generator), cfg.code_dim).float()
    return torch.cat([eps, c], dim=1)


def standardize(fake: torch.Tensor) -> torch.Tensor:
    """Each output feature of a batch [B, ...] -> zero mean, unit std over the batch, as [B, D].

    I(G(z); c) is unchanged by a per-feature affine map, but the critic is not: a fresh generator's
    sigmoid pixels vary by about 0.007 across a batch, too little for the critic's gradient to
    find any dependence on c, and its MI estimate stayed at 0 throughout training."""
    flat = rearrange(fake, "b ... -> b (...)")
    return (flat - flat.mean(0)) / (flat.std(0) + 1e-6)


def pooled(x: torch.Tensor, side: int) -> torch.Tensor:
    """Images [B, C, H, W] average-pooled to [B, C, side, side] (``x`` itself when ``side`` is 0 or
    ``x`` is not an image batch). Pooling averages away patterns finer than a block (checkerboards,
    one-pixel marks), so the critic can only read c from what a block-sized view shows."""
    if side <= 0 or x.dim() != 4:
        return x
    return F.adaptive_avg_pool2d(x, side)


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


class Discriminator(nn.Module):
    """A sample [B, ...] -> a logit [B] (real vs generated)."""

    def __init__(self, d_in: int, hidden: list[int]) -> None:
        super().__init__()
        self.net = mlp([d_in, *hidden, 1], lambda: nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.net(rearrange(x, "b ... -> b (...)")), "b 1 -> b")


# ----------------------------------------------------------------------------- evaluation
def kl_to_uniform(counts: torch.Tensor) -> float:
    """KL(p || uniform) in nats for a histogram ``counts`` [K] (0 · log 0 = 0)."""
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return float((p * torch.log(p * len(counts))).sum())


@torch.no_grad()
def generate(cfg: GANConfig, generator: nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of ``generator`` from a fixed seed (the same on every process), and their
    codes c [n, code_dim]; on CPU."""
    gen = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    generator.eval()
    zs = sample_latent(cfg, n, gen)
    xs = torch.cat([generator(z.to(device)).cpu() for z in zs.split(4096)])
    generator.train()
    return xs, zs[:, -cfg.code_dim :]


def evaluate(cfg: GANConfig, problem: Problem, generator: nn.Module, n: int) -> dict[str, float]:
    """The problem's metrics on ``n`` samples, plus a held-out estimate of I(G(z); c) in nats
    (``estimate_mi`` on ``mi_samples`` of them). Deterministic: every process gets the same."""
    x, c = generate(cfg, generator, n, seed=10_000 + cfg.seed)
    metrics = problem.metrics(x)
    if cfg.mi_samples > 0:
        m = min(cfg.mi_samples, n)
        # read out what the regularizer's critic sees: pooled G(z) + critic noise (from a fixed seed)
        x = critic_view(cfg, x[:m], torch.Generator().manual_seed(30_000 + cfg.seed))
        # a separable critic alone: the default's closed-form Gaussian part overfits hundreds of
        # pixel dims at a few thousand samples (held-out read-outs of -10 nats and below)
        kw = {"batch_size": min(128, m // 8), "max_steps": cfg.mi_steps, "preprocess": "standardize"}
        kw |= {"critic": "separable", "seed": cfg.seed}
        metrics["I_Gc"] = estimate_mi(rearrange(x, "n ... -> n (...)"), c[:m], **kw).mi
    return metrics


def save_samples(
    cfg: GANConfig, problem: Problem, accelerator: Accelerator, generator: nn.Module, path: Path, step: int
) -> None:
    """Plot ``problem.plot_samples`` samples (fixed seed) to ``path`` and log it to wandb."""
    x, _ = generate(cfg, generator, problem.plot_samples, seed=20_000 + cfg.seed)
    fig, ax = plt.subplots(figsize=problem.figsize)
    problem.draw(ax, x)
    ax.set(title=f"{problem.name} {cfg.method}, step {step}")
    save_figure(fig, path, dpi=100, grid=False)
    log_image(accelerator, "samples", path, step)


def report(
    cfg: GANConfig,
    problem: Problem,
    accelerator: Accelerator,
    generator: nn.Module,
    n: int,
    step: int,
    png: Path,
) -> dict[str, float]:
    """:func:`evaluate` on ``n`` samples, logged under ``eval/``; the main process also saves the
    sample plot to ``png`` and logs it."""
    metrics = evaluate(cfg, problem, generator, n)
    accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
    if accelerator.is_main_process:
        save_samples(cfg, problem, accelerator, generator, png, step)
    return metrics


# ----------------------------------------------------------------------------- training
def critic_view(cfg: GANConfig, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """What the MINE critic reads of generated samples: pooled to ``critic_pool``, then plus noise of
    std ``critic_noise`` (drawn from ``generator`` if given)."""
    return with_critic_noise(pooled(fake, cfg.critic_pool), cfg.critic_noise, generator)


def build_penalty(cfg: GANConfig, accelerator: Accelerator, generator: nn.Module, beta: float) -> Penalty:
    """The generator's MI term: MIRegularizer's -beta·I(G(z) + n; c), adaptively clipped against
    the adversarial loss (mine), or 0 (baseline). x is the code c, sliced out of the generator's
    input; z is G(z), passed when calling. Built on the prepared generator, never prepared."""
    if cfg.method == "baseline":
        return Penalty()
    reg = MIRegularizer(
        generator, x=lambda z: z[:, -cfg.code_dim :], z=None, beta=beta, mode="maximize",
        estimator=cfg.estimator, lr=cfg.critic_lr, hidden=cfg.critic_hidden,
        adaptive_clip=cfg.adaptive_clip, standardize=cfg.critic_standardize, seed=cfg.seed,
    )  # fmt: skip
    seen = lambda fake: standardize(critic_view(cfg, fake))  # noqa: E731
    return Penalty.of(accelerator, reg, lambda fake, task_loss: reg(z=seen(fake), task_loss=task_loss))


def train(cfg: GANConfig, make_problem: Callable[[GANConfig, Accelerator, torch.Generator], Problem]) -> dict:
    """Train the GAN of ``cfg`` on the problem ``make_problem(cfg, accelerator, generator)``
    builds, evaluate it and write ``out/results.json``; returns the results."""
    accelerator = make_accelerator(cfg.seed)
    out = Path(cfg.out)
    beta = 0.0 if cfg.method == "baseline" else cfg.beta
    data_gen = torch.Generator().manual_seed(1000 * cfg.seed + accelerator.process_index)
    problem = make_problem(cfg, accelerator, data_gen)  # data (and classifier) before the networks

    G, D = problem.networks(cfg.noise_dim + cfg.code_dim)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.adam_beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.adam_beta1, 0.999))
    G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)
    penalty = build_penalty(cfg, accelerator, G, beta)
    state = TrainState(data_gen)
    accelerator.register_for_checkpointing(state)
    start_run(accelerator, cfg, {**asdict(cfg), "problem": problem.name, "beta": beta})
    start_step = state.step
    accelerator.print(f"start_step: {start_step}")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)

    unwrapped_g = accelerator.unwrap_model(G)
    started = time.perf_counter()
    steps = range(start_step, cfg.steps)
    bar = progress(accelerator, steps, f"{problem.name} {cfg.method}", initial=start_step, total=cfg.steps)
    for step in bar:
        if cfg.lr_decay:  # a function of the step alone, so a resumed run continues the schedule
            set_linear_decay(step, cfg.steps, (opt_g, cfg.lr_g), (opt_d, cfg.lr_d))
        real = problem.sample(cfg.batch_size).to(accelerator.device)
        z = sample_latent(cfg, cfg.batch_size, data_gen).to(accelerator.device)
        fake = G(z)  # the regularizer's hook captures c from z here

        # discriminator: real vs generated, in one forward pass
        logits = D(torch.cat([real, fake.detach()]))
        labels = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).to(logits)
        d_loss = F.binary_cross_entropy_with_logits(logits, labels)
        opt_d.zero_grad(set_to_none=True)
        accelerator.backward(d_loss)
        opt_d.step()

        # generator: non-saturating adversarial loss, plus the MI term (adaptively clipped)
        g_adv = F.softplus(-D(fake)).mean()
        g_loss = g_adv + penalty(fake=fake, task_loss=g_adv)
        opt_g.zero_grad(set_to_none=True)
        accelerator.backward(g_loss)
        opt_g.step()
        state.step = step + 1

        log_step(accelerator, state.step, penalty, bar, d_loss=d_loss, g_adv=g_adv)
        if cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < cfg.steps:
            png = out / f"samples_{state.step:06d}.png"
            curve = report(cfg, problem, accelerator, unwrapped_g, cfg.curve_samples, state.step, png)
            if accelerator.is_main_process:
                tqdm.write(f"step {state.step}: " + "  ".join(f"{k} {v:.3g}" for k, v in curve.items()))
        if cfg.ckpt_every and state.step % cfg.ckpt_every == 0 and state.step < cfg.steps:
            accelerator.save_state(str(out / "checkpoint"))
    bar.close()
    train_seconds = time.perf_counter() - started
    if start_step < cfg.steps or not (out / "checkpoint").is_dir():
        accelerator.save_state(str(out / "checkpoint"))

    metrics = report(
        cfg, problem, accelerator, unwrapped_g, cfg.eval_samples, state.step, out / "samples.png"
    )
    results = {
        "problem": problem.name,
        "dataset": problem.dataset,
        "method": cfg.method,
        "beta": beta,
        "seed": cfg.seed,
        "steps": cfg.steps,
        "start_step": start_step,
        "processes": accelerator.num_processes,
        "eval_samples": cfg.eval_samples,
        "train_seconds": train_seconds,
        "I_Gc": metrics.pop("I_Gc", math.nan),
        **metrics,
        "critic_mi": penalty.metrics().get("mi", math.nan),
    }
    return finish(accelerator, results, out, summary(problem, results))


def summary(problem: Problem, results: dict) -> str:
    """The printed last line: modes, KL and the held-out I(G(z); c) in nats, training seconds."""
    return (
        f"{problem.name} {results['method']} (beta={results['beta']:g}, seed={results['seed']}): "
        f"{problem.describe(results)}, KL {results['kl']:.3f} nats, I(G(z);c) {results['I_Gc']:.3f} nats, "
        f"{results['train_seconds']:.0f} s"
    )


if __name__ == "__main__":
    raise SystemExit(
        "gan_codes.py holds what the GAN-codes recipes share; run recipes/gan_codes_grid25.py or "
        "recipes/gan_codes_stacked.py"
    )
