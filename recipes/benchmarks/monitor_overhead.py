"""Time overhead of MIMonitor on the information-plane recipe's training, at its defaults.

The recipe's plain arm (``recipes/information_plane.py``: its MLP, data, batch size, optimizer,
epochs and ``monitor_every``) is trained from the same seed in one process, without a monitor
and with the recipe's monitor on the five hidden layers (measuring before training and every
``monitor_every`` epochs), ``--repeats`` times each in ABBA order (plain, monitored, monitored,
plain, ...), so that a drift in the machine's load hits both alike. Printed: the median epoch time
of each, the cost of one measurement (and per layer), and the ratio (epoch time with monitor) /
(epoch time without), the monitor's cost spread over the epochs as in a real run (target <=
1.3x), both side by side (medians over the runs) and within each monitored run (its time over
its time outside the measurements, which a change of the machine's load between runs cannot
move), plus the ``monitor_every`` that would reach the target on this machine.

    python recipes/benchmarks/monitor_overhead.py                 # the recipe's defaults
    python recipes/benchmarks/monitor_overhead.py --epochs 20 --monitor-every 5
    python recipes/benchmarks/monitor_overhead.py --dataset digits          # the 8x8 digits
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from mine_reg.monitor import MIMonitor, channel_bounds, classifier_bound
from recipes.information_plane import Classifier, Config, build_monitor, load_data
from recipes.report import markdown_table

TARGET_RATIO = 1.3


def train(cfg: Config, data: tuple[torch.Tensor, ...], with_monitor: bool) -> dict:
    """Train the plain arm; returns epoch times and measurement times (seconds), and the monitor."""
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(cfg.seed)
    model = Classifier(x_train.shape[1], cfg.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=cfg.batch_size, shuffle=True)
    monitor = build_monitor(cfg, model, model.layers, x_test, y_test) if with_monitor else None
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
    total = time.perf_counter() - started_all
    return {"total": total, "epochs": epochs, "measures": measures, "monitor": monitor}


def parts(monitor: MIMonitor, repeats: int = 3) -> list[list[str]]:
    """Per layer of a trained model: its width and the median milliseconds of the channel bounds
    and of the classifier bound (the monitor's two estimators) on the monitor's own probe."""
    _, taken = monitor.capture()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name, t in taken.items():
        std = monitor.noise_std(t)
        noisy = t + std * torch.randn(t.shape, generator=gen)
        timings = {"channel": [], "classifier": []}
        for _ in range(repeats):
            started = time.perf_counter()
            channel_bounds(t, noisy, std)
            timings["channel"].append(time.perf_counter() - started)
            started = time.perf_counter()
            classifier_bound(noisy, monitor.labels, max_iter=monitor.classifier_iter)
            timings["classifier"].append(time.perf_counter() - started)
        ms = [f"{1e3 * statistics.median(v):.1f}" for v in timings.values()]
        rows.append([name, str(t.shape[1]), *ms])
    return rows


def main(argv: list[str] | None = None) -> dict:
    defaults = Config()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--monitor-every", type=int, default=defaults.monitor_every)
    parser.add_argument("--dataset", default=defaults.dataset)
    parser.add_argument("--hidden", type=int, nargs="+", default=defaults.hidden)
    parser.add_argument("--repeats", type=int, default=4, help="pairs of runs, in ABBA order (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = Config(
        epochs=args.epochs, monitor_every=args.monitor_every, dataset=args.dataset, hidden=args.hidden
    )
    data = load_data(cfg)
    train(dataclasses.replace(cfg, epochs=1), data, with_monitor=False)  # warm-up
    plain, watched = [], []
    for i in range(args.repeats):  # plain, monitored, monitored, plain, ...: a drift in load hits both
        for with_monitor in (False, True) if i % 2 == 0 else (True, False):
            (watched if with_monitor else plain).append(train(cfg, data, with_monitor))
    epoch_plain = statistics.median(r["total"] for r in plain) / cfg.epochs
    epoch_watched = statistics.median(r["total"] for r in watched) / cfg.epochs
    ratio = epoch_watched / epoch_plain
    ratios = [w["total"] / p["total"] for p, w in zip(plain, watched, strict=True)]
    # within each monitored run: its whole time over its time outside the measurements, which
    # no change in the machine's load between two runs can move
    within = statistics.median(w["total"] / (w["total"] - sum(w["measures"])) for w in watched)
    measures = [m for r in watched for m in r["measures"]]
    per_measure = statistics.median(measures)
    layers = len(cfg.hidden)
    # measurements at rate 1/every: ratio 1 + per_measure / (every · epoch) <= target
    needed = math.ceil(per_measure / ((TARGET_RATIO - 1) * epoch_plain))
    rows = [
        ["without monitor", f"{epoch_plain:.3f}", "—", "—", "1.00", "—"],
        [
            f"monitor, {layers} layers, every {cfg.monitor_every}",
            f"{epoch_watched:.3f}",
            f"{per_measure:.3f} x {len(watched[0]['measures'])}",
            f"{1e3 * per_measure / layers:.0f}",
            f"{ratio:.2f}",
            f"{within:.2f}",
        ],
    ]
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {args.threads}; "
        f"{cfg.dataset}, MLP {cfg.hidden}, {cfg.epochs} epochs, probe {cfg.probe}, noise {cfg.noise}"
        f"{' (relative)' if cfg.noise_relative else ''}; medians of {args.repeats} runs each, ABBA order"
    )
    headers = ["run", "s / epoch", "s / measurement", "ms / layer", "ratio", "ratio within run"]
    print(markdown_table(headers, rows, align="lrrrrr"))
    print()
    breakdown = parts(watched[-1]["monitor"])
    print(
        markdown_table(
            ["layer", "width", "channel bounds ms", "classifier bound ms"], breakdown, align="lrrr"
        )
    )
    print()
    met = max(ratio, within) <= TARGET_RATIO
    print(
        f"epoch-time ratio {ratio:.2f}x side by side (per pair: {', '.join(f'{r:.2f}' for r in ratios)}), "
        f"{within:.2f}x within the monitored runs; target <= {TARGET_RATIO}x: "
        f"{'met' if met else 'not met'}; monitor_every >= {needed} epochs meets it here"
    )
    return {
        "ratio": ratio, "within": within, "epoch_plain": epoch_plain, "per_measure": per_measure,
        "every_needed": needed,
    }  # fmt: skip


if __name__ == "__main__":
    main()
