"""The main job on offline defaults: the information-bottleneck recipe (baseline, MINE-IB, Deep
VIB) on ``mnist5k`` (5,000 real 28x28 MNIST digits, offline; the paper's 784-1024-1024-256
encoder) at a short budget, then the Gaussian estimation recipe (the MINE paper's Figure 1 at
fewer points); prints one results table, writes plots, JSON and the offline wandb runs under
``out``.

    python recipes/demo.py --config configs/demo.yaml [--ib-epochs 30] [--gaussian-n 5000]
    python recipes/demo.py --config configs/demo.yaml --ib-dataset digits   (8x8 digits, faster)
    python -m recipes.demo --config configs/demo.yaml                 (the same)

Each IB run is ``recipes/ib.py --config configs/ib_<method>.yaml`` with ``--dataset ib_dataset``
and ``--epochs ib_epochs``; the Gaussian part is ``recipes/gaussian_mi.py --config
configs/gaussian_mi.yaml`` with the ``gaussian_*`` overrides below. Both run in this process
(``recipes.common.call``), so under ``accelerate launch`` they share its processes.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from recipes.common import ROOT, call, run  # noqa: E402
from recipes.report import markdown_table, save_figure  # noqa: E402

CONFIGS = ROOT / "configs"
LABELS = {"baseline": "baseline", "mine": "MINE-IB", "vib": "Deep VIB"}
DATASET_NAMES = {"mnist5k": "mnist5k (real 28x28 MNIST digits)", "digits": "digits 8x8", "mnist": "MNIST"}


def label(result: dict) -> str:
    """The table's name for one IB run: the method, and the bound MINE-IB minimized."""
    name = LABELS.get(result["method"], result["method"])
    return f"{name} ({result['estimator']})" if result.get("estimator") else name


@dataclass
class Config:
    ib_methods: list[str] = field(default_factory=lambda: ["baseline", "mine", "vib"])
    ib_dataset: str = "mnist5k"  # mnist5k (offline 28x28) | digits (offline 8x8) | mnist (data_root)
    ib_epochs: int = 10
    ib_mi_every: int = 5  # epochs between estimate_mi read-outs (encoder bounds: every epoch)
    gaussian_n: int = 10000
    gaussian_dims: list[int] = field(default_factory=lambda: [2, 20])
    gaussian_rhos: list[float] = field(default_factory=lambda: [-0.9, -0.5, 0.0, 0.5, 0.9])
    gaussian_ksg: bool = True
    gaussian_ksg_max_dim: int = 2  # KSG costs 15-30 s per d = 20 case on 2 cores
    seed: int = 0
    out: str = "outputs/demo"


def run_ib(cfg: Config) -> list[dict]:
    results = []
    for method in cfg.ib_methods:
        argv = ["--config", str(CONFIGS / f"ib_{method}.yaml"), "--dataset", cfg.ib_dataset]
        argv += ["--epochs", str(cfg.ib_epochs)]
        argv += ["--mi-every", str(cfg.ib_mi_every)]
        argv += ["--seed", str(cfg.seed), "--out", str(Path(cfg.out) / f"ib_{method}")]
        start = time.perf_counter()
        result = call("ib", argv)
        results.append({**result, "seconds": time.perf_counter() - start})
    return results


def ib_table(results: list[dict]) -> str:
    """The IB results as markdown: error, I(X;Z) and I(Z;Y) in nats, seconds per run."""
    columns = ["method", "beta", "test error", "I(X;Z) estimate_mi", "I(X;Z) encoder bounds"]
    columns += ["I(Z;Y) estimate_mi", "time"]
    rows = [
        [label(r), f"{r['beta']:g}", f"{100 * r['test_error']:.1f}%", f"{r['I_XZ']:.3f}",
         f"{r['I_XZ_lower']:.2f} .. {r['I_XZ_upper']:.3g}", f"{r['I_ZY']:.3f}", f"{r['seconds']:.0f} s"]
        for r in results
    ]  # fmt: skip
    return markdown_table(columns, rows)


def plot_ib(results: list[dict], path: Path, dataset: str = "mnist5k") -> None:
    """Test error per epoch, and the encoder's I(X; Z) bounds per method (nats), on ``dataset``."""
    fig, (ax_err, ax_mi) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        name = label(r)
        hist = r["history"]
        ax_err.plot([h["epoch"] for h in hist], [100 * h["error"] for h in hist], label=name)
        epochs = [h["epoch"] for h in hist]
        band = ax_mi.fill_between(
            epochs,
            [h["I_XZ_lower"] for h in hist],
            [min(h["I_XZ_upper"], 50.0) for h in hist],
            alpha=0.2,
            label=f"{name}: encoder bounds",
        )
        with_mi = [h for h in hist if "I_XZ" in h]  # estimate_mi every ib_mi_every epochs
        ax_mi.plot(
            [h["epoch"] for h in with_mi],
            [h["I_XZ"] for h in with_mi],
            "o-",
            color=band.get_facecolor()[0][:3],
            label=f"{name}: estimate_mi",
        )
    ax_err.set(xlabel="epoch", ylabel="test error (%)", title=f"{dataset}, permutation-invariant")
    ax_err.set_ylim(0, 15)
    ax_mi.set(
        xlabel="epoch", ylabel="I(X; Z) (nats)", title="I(X; Z) on the test set (upper bound cut at 50)"
    )
    save_figure(fig, path)


def main(cfg: Config) -> dict:
    out = Path(cfg.out)
    os.environ.setdefault("WANDB_DIR", str(out))  # the Gaussian run; each IB run writes under its own out
    start = time.perf_counter()
    ib_results = run_ib(cfg)
    argv = ["--config", str(CONFIGS / "gaussian_mi.yaml"), "--out", str(out / "gaussian_mi")]
    argv += ["--n", str(cfg.gaussian_n), "--dims", ",".join(map(str, cfg.gaussian_dims))]
    argv += ["--rhos=" + ",".join(map(str, cfg.gaussian_rhos))]  # "=": a value may start with "-"
    argv += ["--ksg", str(cfg.gaussian_ksg).lower(), "--ksg-max-dim", str(cfg.gaussian_ksg_max_dim)]
    argv += ["--seed", str(cfg.seed)]
    gauss_rows = call("gaussian_mi", argv)
    if gauss_rows is None:  # not the main process
        return {}
    out.mkdir(parents=True, exist_ok=True)
    plot_ib(ib_results, out / "ib.png", cfg.ib_dataset)
    summary = {"ib": ib_results, "gaussian_mi": gauss_rows, "seconds": time.perf_counter() - start}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    name = DATASET_NAMES.get(cfg.ib_dataset, cfg.ib_dataset)
    n_test, n = ib_results[0]["test_size"], ib_results[0]["bound_inputs"]
    budget = f"{cfg.ib_epochs} epochs, seed {cfg.seed}; {n_test} test digits"
    print(f"\nInformation bottleneck, {name} ({budget}):\n")
    print(ib_table(ib_results))
    print(
        "\nI(X;Z) encoder bounds: exact InfoNCE / leave-one-out bounds from the encoder's Gaussian q(z|x)"
        f" with X {n} test digits (the lower one cannot exceed log {n} = {math.log(n):.2f} nats)."
    )
    print(f"\nplots: {out / 'ib.png'}, {out / 'gaussian_mi' / 'gaussian_mi.png'}")
    print(f"summary: {out / 'summary.json'}")
    print(
        f"wandb runs (offline unless WANDB_API_KEY is set; upload with `wandb sync`): {out}/**/offline-run-*"
    )
    print(f"total: {summary['seconds']:.0f} s")
    return summary


if __name__ == "__main__":
    run(main, Config, __doc__)
