"""The MINE paper's Figure 1: I(X; Z) of correlated Gaussians, truth vs MINE, MINE-f and KSG.

x and z are d-dimensional standard Gaussians with corr(x_i, z_j) = rho·delta_ij, so the true
mutual information is -d/2·log(1 - rho²) nats. For every (d, rho) case the recipe estimates it
with ``estimate_mi(x, z, "mine")``, ``estimate_mi(x, z, "mine-f")`` and, with ``ksg: true``, the
KSG k-nearest-neighbour estimator; it prints a markdown table, saves a two-panel plot and a JSON
of the results under ``out`` and logs ``mi/true`` and ``mi/<estimator>`` per case to wandb
(offline without an account).

    python recipes/gaussian_mi.py --config configs/gaussian_mi.yaml [--n 5000] [--dims 2,20]
    python -m recipes.gaussian_mi --config configs/gaussian_mi.yaml          (the same)
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 \\
        recipes/gaussian_mi.py --config configs/gaussian_mi.yaml

Under several processes the cases are split across ranks and the results gathered to the main
process, which alone prints, plots, writes the JSON and logs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from accelerate.utils import gather_object  # noqa: E402

from mine_reg import estimate_mi  # noqa: E402
from mine_reg.ksg import ksg_mi  # noqa: E402
from mine_reg.synthetic import correlated_gaussian, gaussian_mi  # noqa: E402
from mine_reg.tracking import end_tracking, init_wandb_tracking  # noqa: E402
from recipes.common import make_accelerator, run  # noqa: E402
from recipes.report import fmt, markdown_table, save_figure  # noqa: E402
from recipes.training import log_image, progress  # noqa: E402

MARKERS = {"mine": "o", "mine-f": "s", "ksg": "^"}


@dataclass
class Config:
    n: int = 10000
    dims: list[int] = field(default_factory=lambda: [2, 20])
    rhos: list[float] = field(
        default_factory=lambda: [-0.99, -0.9, -0.7, -0.5, -0.3, 0.0, 0.3, 0.5, 0.7, 0.9, 0.99]
    )
    estimators: list[str] = field(default_factory=lambda: ["mine", "mine-f"])
    ksg: bool = True
    ksg_max_dim: int | None = None  # skip KSG above this d (None: every d)
    seed: int = 0
    out: str = "outputs/gaussian_mi"
    wandb_project: str = "mine-reg-gaussian-mi"
    max_steps: int | None = None  # caps estimate_mi's training steps (its default: 2000)
    batch_size: int = 512  # lowered to n // 8 for small n, so each split holds a full batch


def case_seed(base: int, dim: int, rho: float) -> int:
    """A fixed seed per case: different between cases, independent of the case list and of ranks."""
    return (base * 1_000_003 + zlib.crc32(f"gaussian_mi/d={dim}/rho={rho}".encode())) % (2**31 - 1)


def run_case(cfg: Config, index: int, dim: int, rho: float, device: Any) -> dict[str, Any]:
    seed = case_seed(cfg.seed, dim, rho)
    x, z = correlated_gaussian(cfg.n, dim, rho, seed=seed)
    row: dict[str, Any] = {"case": index, "d": dim, "rho": rho, "truth": gaussian_mi(dim, rho), "seed": seed}
    caps = {} if cfg.max_steps is None else {"max_steps": cfg.max_steps}
    # estimate_mi needs one full batch in both the training part (~2/5 of n) and the held-out
    # half; n // 8 always fits and leaves the default 512 untouched from n = 4096 up.
    caps["batch_size"] = max(1, min(cfg.batch_size, cfg.n // 8))
    for name in cfg.estimators:
        result = estimate_mi(x, z, name, seed=seed, device=device, **caps)
        row[name], row[f"{name} stderr"], row[f"{name} s"] = result.mi, result.stderr, result.seconds
        row[f"{name} steps"] = result.steps
    if cfg.ksg and (cfg.ksg_max_dim is None or dim <= cfg.ksg_max_dim):
        row["ksg"] = ksg_mi(x, z, seed=seed)
    return row


def results_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Markdown: d, rho, the true MI and each estimator's read-out, in nats."""
    cells = [
        [r["d"], f"{r['rho']:+.2f}", f"{r['truth']:.3f}", *(fmt(r.get(c)) for c in columns)] for r in rows
    ]
    return markdown_table(["d", "rho", "truth", *columns], cells)


def plot(rows: list[dict[str, Any]], cfg: Config, columns: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(cfg.dims), figsize=(5.5 * len(cfg.dims), 4.2), squeeze=False)
    for ax, dim in zip(axes[0], cfg.dims, strict=True):
        sub = [r for r in rows if r["d"] == dim]
        rhos = [r["rho"] for r in sub]
        grid = np.linspace(min(rhos), max(rhos), 201)
        ax.plot(grid, [gaussian_mi(dim, r) for r in grid], "k-", lw=1.5, label="true MI")
        for name in columns:
            pts = [(r["rho"], r[name]) for r in sub if r.get(name) is not None and not math.isnan(r[name])]
            if pts:
                ax.plot(*zip(*pts, strict=True), MARKERS.get(name, "D"), ms=6, alpha=0.8, label=name)
        ax.set(title=f"d = {dim}, N = {cfg.n}", xlabel="rho", ylabel="I(X; Z) (nats)")
    save_figure(fig, path)


def main(cfg: Config) -> list[dict[str, Any]] | None:
    accelerator = make_accelerator(seed=None)  # every case seeds itself (case_seed)
    init_wandb_tracking(
        accelerator, cfg.wandb_project, config=dataclasses.asdict(cfg), run_name="gaussian_mi"
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    cases = [(d, rho) for d in cfg.dims for rho in cfg.rhos]
    mine = list(range(rank, len(cases), world))  # this rank's share of the case indices
    local = []
    for i in progress(accelerator, mine, "gaussian MI", unit="case"):
        local.append({**run_case(cfg, i, *cases[i], accelerator.device), "rank": rank})
    rows = sorted(gather_object(local), key=lambda r: r["case"])

    result = None
    if accelerator.is_main_process:
        columns = [*cfg.estimators, *(["ksg"] if cfg.ksg else [])]
        print(f"\nI(X;Z) in nats, N = {cfg.n} per case (MINE / MINE-f read out on held-out data)\n")
        print(results_table(rows, columns))
        for r in rows:
            accelerator.log(
                {"mi/true": r["truth"], **{f"mi/{c}": r[c] for c in columns if r.get(c) is not None}},
                step=r["case"],
            )
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        png, js = out / "gaussian_mi.png", out / "gaussian_mi.json"
        plot(rows, cfg, columns, png)
        log_image(accelerator, "figure1", png, step=len(cases))
        js.write_text(
            json.dumps({"config": dataclasses.asdict(cfg), "processes": world, "rows": rows}, indent=2)
        )
        print(f"\nplot: {png}\njson: {js}")
        result = rows
    accelerator.wait_for_everyone()
    end_tracking(accelerator)  # also waits until the offline wandb run file is written
    return result


if __name__ == "__main__":
    run(main, Config, __doc__)
