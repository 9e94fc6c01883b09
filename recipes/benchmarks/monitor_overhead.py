"""Time overhead of MIMonitor on the information-plane recipe's training, at its defaults.

The recipe's plain arm (``recipes/information_plane.py``: its MLP, data, batch size, optimizer,
epochs and ``monitor_every``) is trained twice from the same seed in one process: without a
monitor, and with the recipe's monitor on the five hidden layers (measuring before training and
every ``monitor_every`` epochs). Printed: the mean epoch time of each, the cost of one
measurement, and the ratio (epoch time with monitor) / (epoch time without), the monitor's cost
spread over the epochs as in a real run (target <= 1.3x), plus the ``monitor_every`` that would
reach the target on this machine.

    python recipes/benchmarks/monitor_overhead.py                 # the recipe's defaults
    python recipes/benchmarks/monitor_overhead.py --epochs 20 --monitor-every 5
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from mine_reg.monitor import MIMonitor
from recipes.information_plane import Classifier, Config, load_data
from recipes.report import markdown_table

TARGET_RATIO = 1.3


def train(cfg: Config, data: tuple[torch.Tensor, ...], with_monitor: bool) -> dict:
    """Train the plain arm; returns epoch times and measurement times (seconds)."""
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(cfg.seed)
    model = Classifier(x_train.shape[1], cfg.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=cfg.batch_size, shuffle=True)
    monitor = None
    if with_monitor:
        n = min(cfg.probe, len(y_test))
        monitor = MIMonitor(
            model, layers=model.layers, probe=x_test[:n], y=y_test[:n], every=cfg.monitor_every,
            noise=cfg.noise, estimate_options={"max_steps": cfg.monitor_steps}, seed=cfg.seed,
        )  # fmt: skip
    measures: list[float] = []
    epochs: list[float] = []

    def watch(epoch: int) -> None:
        if monitor is not None:
            started = time.perf_counter()
            if monitor.step(epoch) is not None:
                measures.append(time.perf_counter() - started)

    started_all = time.perf_counter()
    watch(0)
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        watch(epoch + 1)
        epochs.append(time.perf_counter() - started)
    return {"total": time.perf_counter() - started_all, "epochs": epochs, "measures": measures}


def main(argv: list[str] | None = None) -> dict:
    defaults = Config()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--monitor-every", type=int, default=defaults.monitor_every)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = Config(epochs=args.epochs, monitor_every=args.monitor_every)
    data = load_data(cfg)
    train(Config(epochs=1), data, with_monitor=False)  # warm-up
    plain = train(cfg, data, with_monitor=False)
    watched = train(cfg, data, with_monitor=True)
    epoch_plain = plain["total"] / cfg.epochs
    epoch_watched = watched["total"] / cfg.epochs
    ratio = epoch_watched / epoch_plain
    per_measure = sum(watched["measures"]) / max(1, len(watched["measures"]))
    # measurements at rate 1/every: ratio 1 + per_measure / (every · epoch) <= target
    needed = math.ceil(per_measure / ((TARGET_RATIO - 1) * epoch_plain))
    rows = [
        ["without monitor", f"{epoch_plain:.3f}", "—", "1.00"],
        [
            f"monitor, 5 layers, every {cfg.monitor_every}",
            f"{epoch_watched:.3f}",
            f"{per_measure:.2f} x {len(watched['measures'])}",
            f"{ratio:.2f}",
        ],
    ]
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}"
    )
    print(markdown_table(["run", "s / epoch", "s / measurement", "ratio"], rows, align="lrrr"))
    print(
        f"epoch-time ratio {ratio:.2f}x (target <= {TARGET_RATIO}x): "
        f"{'met' if ratio <= TARGET_RATIO else 'not met'}; monitor_every >= {needed} epochs meets it here"
    )
    return {"ratio": ratio, "epoch_plain": epoch_plain, "per_measure": per_measure, "every_needed": needed}


if __name__ == "__main__":
    main()
