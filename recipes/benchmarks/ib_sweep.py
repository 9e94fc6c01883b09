"""Seeds x beta sweep of the information-bottleneck recipe: mean and spread of test error and
I(X; Z) for the baseline, MIRegularizer at several beta, and Deep VIB, at equal budgets.

    python recipes/benchmarks/ib_sweep.py [--seeds 0,1,2,3,4] [--betas 1e-4,1e-3,1e-2] \\
        [--estimators club,mine] [--epochs 60] [--dataset digits] [--z-noise gaussian] \\
        [--out outputs/benchmarks/ib_sweep]

Every run is ``recipes/ib.py --config configs/ib_<method>.yaml`` with ``--dataset``, ``--seed``,
``--beta``, ``--estimator`` and ``--epochs`` set (and ``--z-noise`` when given; otherwise the
config's), and ``estimate_mi`` run after the last epoch only. The sweep's data default to the 8x8
digits (the README's digits tables), where a seed changes the train/test split, the pixel
permutation and the initialisation; ``--dataset mnist5k`` (the recipe's default, 784-1024-1024-256
encoder) has one fixed split, so there a seed changes the permutation and the initialisation.
Prints a markdown table, writes ``ib_sweep.json`` and ``ib_sweep.png`` under ``out``. wandb is off
unless WANDB_MODE is set.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from recipes.common import ROOT, call, run  # noqa: E402
from recipes.report import markdown_table, save_figure  # noqa: E402

CONFIGS = ROOT / "configs"
METRICS = ("test_error", "I_XZ", "I_XZ_lower", "I_XZ_upper", "I_ZY")
DATASET_NAMES = {"digits": "digits 8x8", "mnist5k": "mnist5k (28x28)", "mnist": "MNIST"}


@dataclass
class Config:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    betas: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2])
    estimators: list[str] = field(default_factory=lambda: ["club"])
    vib_betas: list[float] = field(default_factory=lambda: [1e-3])  # --vib-betas "": no VIB arm
    baseline: bool = True
    epochs: int = 60
    dataset: str = "digits"  # digits (the README's sweep tables) | mnist5k | mnist (data/MNIST/raw/)
    z_noise: str | None = None  # gaussian | additive; None: the config's (additive)
    out: str = "outputs/benchmarks/ib_sweep"


def arms(cfg: Config) -> list[tuple[str, str, list[str]]]:
    """(label, method, extra argv) for every arm of the sweep."""
    out = [("baseline", "baseline", [])] if cfg.baseline else []
    for est in cfg.estimators:
        out += [(f"MI {est}", "mine", ["--estimator", est, "--beta", f"{b:g}"]) for b in cfg.betas]
    out += [("Deep VIB", "vib", ["--beta", f"{b:g}"]) for b in cfg.vib_betas]
    return out


def summarize(runs: list[dict]) -> dict:
    row = {}
    for key in METRICS:
        values = [r[key] for r in runs]
        row[key] = statistics.fmean(values)
        row[f"{key} sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    row["seconds"] = statistics.fmean(r["seconds"] for r in runs)
    return row


def main(cfg: Config) -> list[dict]:
    out = Path(cfg.out)
    rows = []
    for label, method, extra in arms(cfg):
        runs = []
        for seed in cfg.seeds:
            argv = ["--config", str(CONFIGS / f"ib_{method}.yaml"), "--seed", str(seed), *extra]
            argv += ["--dataset", cfg.dataset] + (["--z-noise", cfg.z_noise] if cfg.z_noise else [])
            # estimate_mi once, after the last epoch (the encoder's bounds still come every epoch)
            argv += ["--epochs", str(cfg.epochs), "--mi-every", str(cfg.epochs)]
            argv += ["--out", str(out / f"{method}_{'_'.join(extra[1::2])}_{seed}")]
            start = time.perf_counter()
            result = call("ib", argv)
            runs.append({**result, "seconds": time.perf_counter() - start})
        rows.append(
            {"arm": label, "method": method, "beta": runs[0]["beta"], **summarize(runs), "runs": runs}
        )
        print(f"done: {label} beta={runs[0]['beta']:g}", flush=True)

    n, n_test = len(cfg.seeds), rows[0]["runs"][0]["test_size"]
    setup = f"{DATASET_NAMES.get(cfg.dataset, cfg.dataset)}, {cfg.epochs} epochs"
    print(f"\nIB on {setup}, mean ± sd over {n} seeds ({n_test} test digits per seed)\n")
    print(sweep_table(rows))
    print("\nPer seed\n")
    print(seeds_table(rows))
    if any(r["method"] == "baseline" for r in rows):
        print("\nTargets against the baseline (means over seeds)\n")
        print(targets_table(rows))
    out.mkdir(parents=True, exist_ok=True)
    (out / "ib_sweep.json").write_text(json.dumps({"config": cfg.__dict__, "rows": rows}, indent=2) + "\n")
    plot(rows, out / "ib_sweep.png")
    print(f"\njson: {out / 'ib_sweep.json'}\nplot: {out / 'ib_sweep.png'}")
    return rows


def sweep_table(rows: list[dict]) -> str:
    """Markdown: per arm and beta, mean ± sd of test error (%), the I(X;Z) read-outs and I(Z;Y)."""
    columns = ["arm", "beta", "test error (%)", "I(X;Z) estimate", "I(X;Z) lower bound", "I(X;Z) upper bound"]
    cells = []
    for r in rows:
        pm = lambda k, s=1.0, f=".2f", r=r: f"{s * r[k]:{f}} ± {s * r[k + ' sd']:{f}}"  # noqa: E731
        cells.append(
            [r["arm"], f"{r['beta']:g}", pm("test_error", 100), pm("I_XZ"), pm("I_XZ_lower")]
            + [pm("I_XZ_upper", f=".3g"), pm("I_ZY"), f"{r['seconds']:.0f}"]
        )
    return markdown_table([*columns, "I(Z;Y)", "s/run"], cells)


def seeds_table(rows: list[dict]) -> str:
    """Markdown: one row per arm, beta and seed: test error (%) and the encoder's I(X;Z) bounds
    and ``estimate_mi``'s I(X;Z), I(Z;Y) (nats)."""
    cells = [
        [r["arm"], f"{r['beta']:g}", str(run["seed"]), f"{100 * run['test_error']:.2f}"]
        + [f"{run['I_XZ_lower']:.2f}", f"{run['I_XZ_upper']:.3g}", f"{run['I_XZ']:.2f}", f"{run['I_ZY']:.2f}"]
        for r in rows
        for run in r["runs"]
    ]
    columns = ["arm", "beta", "seed", "test error (%)", "I(X;Z) lower bound", "I(X;Z) upper bound"]
    return markdown_table([*columns, "I(X;Z) estimate", "I(Z;Y)"], cells)


COMPRESSION_NATS = 0.7  # the encoder's lower bound must fall at least this far below the baseline's


def targets_table(rows: list[dict]) -> str:
    """Markdown: for each regularized arm, whether it compresses against the baseline (its mean
    encoder lower bound at least COMPRESSION_NATS below the baseline's, and its upper bound below
    the baseline's) without a higher mean test error."""
    base = next(r for r in rows if r["method"] == "baseline")
    cells = []
    for r in (r for r in rows if r["method"] != "baseline"):
        drop = base["I_XZ_lower"] - r["I_XZ_lower"]
        checks = [
            drop >= COMPRESSION_NATS,
            r["I_XZ_upper"] < base["I_XZ_upper"],
            r["test_error"] <= base["test_error"],
        ]
        cells.append(
            [r["arm"], f"{r['beta']:g}", f"{drop:.2f}", f"{r['I_XZ_upper']:.3g} vs {base['I_XZ_upper']:.3g}"]
            + [
                f"{100 * r['test_error']:.2f} vs {100 * base['test_error']:.2f}",
                "PASS" if all(checks) else "FAIL",
            ]
        )
    columns = ["arm", "beta", f"lower bound drop (>= {COMPRESSION_NATS})", "upper bound vs baseline"]
    return markdown_table([*columns, "test error (%) vs baseline", "compresses"], cells)


def plot(rows: list[dict], path: Path) -> None:
    """Test error and I(X; Z) against beta for each estimator, baseline at beta = 0 drawn as a line."""
    fig, (ax_err, ax_mi) = plt.subplots(1, 2, figsize=(11, 4))
    for base in (r for r in rows if r["method"] == "baseline"):
        for ax, key, scale in ((ax_err, "test_error", 100), (ax_mi, "I_XZ_lower", 1)):
            ax.axhline(scale * base[key], color="k", ls="--", lw=1, label="baseline (beta = 0)")
    arms_ = dict.fromkeys(r["arm"] for r in rows if r["method"] != "baseline")
    for arm, color in zip(arms_, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False):
        sub = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["beta"])
        betas = [r["beta"] for r in sub]
        ax_err.errorbar(betas, [100 * r["test_error"] for r in sub], [100 * r["test_error sd"] for r in sub],
                        marker="o", capsize=3, color=color, label=arm)  # fmt: skip
        ax_mi.errorbar(betas, [r["I_XZ_lower"] for r in sub], [r["I_XZ_lower sd"] for r in sub],
                       marker="o", capsize=3, color=color, label=f"{arm}: encoder lower bound")  # fmt: skip
        ax_mi.plot(betas, [r["I_XZ"] for r in sub], "x:", color=color, label=f"{arm}: estimate_mi")
    ax_err.set(xscale="log", xlabel="beta", ylabel="test error (%)")
    ax_mi.set(xscale="log", xlabel="beta", ylabel="I(X; Z) on test digits (nats)")
    save_figure(fig, path)


if __name__ == "__main__":
    run(main, Config, __doc__)
