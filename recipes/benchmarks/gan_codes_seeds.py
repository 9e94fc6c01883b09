"""Seeds x {baseline, mine} for recipes/gan_codes.py, one run at a time; prints markdown tables.

    python recipes/benchmarks/gan_codes_seeds.py                       # grid25 and stacked, seeds 0,1,2
    python recipes/benchmarks/gan_codes_seeds.py --problems grid25 --seeds 0 -- --steps 1000
    python recipes/benchmarks/gan_codes_seeds.py --problems stacked --seeds 0,1,2,3,4,5 --jobs 2

Each run is ``recipes/gan_codes.py --config configs/gan_codes_<problem>[_mine].yaml --seed S`` with
the offline defaults of those configs (baseline and MINE share every budget setting), as a
subprocess with ``OMP_NUM_THREADS=1`` (one CPU thread; ``--jobs`` runs at once, one per core) and,
unless ``WANDB_MODE`` is set, wandb disabled. Arguments after ``--`` go to every run. Results:
``OUT/<problem>_<method>_s<seed>/results.json`` per run, ``OUT/summary.json`` and the tables
(modes, high-quality % or the percentage of confidently classified stacked samples, KL in nats,
held-out I(G(z); c) in nats, training seconds) with per-seed rows and the mean.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "gan_codes.py"


def run(problem: str, method: str, seed: int, out: Path, extra: list[str]) -> dict:
    """One recipe run as a subprocess; its results.json plus the wall time in seconds."""
    config = ROOT / "configs" / f"gan_codes_{problem}{'_mine' if method == 'mine' else ''}.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.setdefault("WANDB_MODE", "disabled")
    cmd = [
        sys.executable,
        str(RECIPE),
        "--config",
        str(config),
        "--seed",
        str(seed),
        "--out",
        str(out),
        *extra,
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"run failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return {**json.loads((out / "results.json").read_text()), "wall_seconds": wall}


def table(rows: list[dict], problem: str) -> str:
    """Markdown: one row per run, then the mean of each method."""
    grid = problem == "grid25"
    total = 25 if grid else 1000
    quality = "high_quality_pct" if grid else "confident_pct"
    cols = ["method", "seed", f"modes (of {total})", "high quality %" if grid else "confident %", "KL (nats)"]
    cols += ["I(G(z);c) (nats)", "train s", "wall s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def fmt(r: dict, seed: str) -> str:
        cells = [r["method"], seed, f"{r['modes']:.1f}" if seed == "mean" else str(r["modes"])]
        cells += [f"{r[quality]:.1f}"]
        cells += [
            f"{r['kl']:.3f}",
            f"{r['I_Gc']:.2f}",
            f"{r['train_seconds']:.0f}",
            f"{r['wall_seconds']:.0f}",
        ]
        return "| " + " | ".join(cells) + " |"

    for method in ("baseline", "mine"):
        runs = [r for r in rows if r["method"] == method]
        lines += [fmt(r, str(r["seed"])) for r in runs]
    for method in ("baseline", "mine"):
        runs = [r for r in rows if r["method"] == method]
        if runs:
            keys = [
                "modes",
                "kl",
                "I_Gc",
                "train_seconds",
                "wall_seconds",
                quality,
            ]
            mean = {k: statistics.fmean(r[k] for r in runs) for k in keys}
            lines.append(fmt({**mean, "method": f"**{method}**"}, "mean"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", default="grid25,stacked", help="comma-separated: grid25, stacked")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--methods", default="baseline,mine")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one CPU thread each)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gan_codes_seeds")
    parser.add_argument("extra", nargs="*", help="arguments for every run, after --")
    args = parser.parse_args()
    summary: dict[str, list[dict]] = {}
    for problem in args.problems.split(","):
        jobs = [(m, int(s)) for m in args.methods.split(",") for s in args.seeds.split(",")]

        def one(job: tuple[str, int], problem: str = problem) -> dict:
            method, seed = job
            res = run(problem, method, seed, args.out / f"{problem}_{method}_s{seed}", args.extra)
            print(
                f"{problem} {method} seed {seed}: modes {res['modes']}, KL {res['kl']:.3f} nats, "
                f"{res['wall_seconds']:.0f} s",
                flush=True,
            )
            return res

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each run is its own process
            rows = list(pool.map(one, jobs))
        summary[problem] = rows
        print(f"\n### {problem}\n\n{table(rows, problem)}\n", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for problem, rows in summary.items():
        figure = args.out / f"{problem}_samples.png"
        plot_first_seed(rows, args.out, problem, figure)
        print(f"samples of both methods on seed {rows[0]['seed']}: {figure}")


def plot_first_seed(rows: list[dict], out: Path, problem: str, path: Path) -> None:
    """Each method's final sample plot (its run's samples.png) on the first seed, side by side,
    titled with that run's modes and KL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed = rows[0]["seed"]
    runs = [r for r in rows if r["seed"] == seed]
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 6.6), squeeze=False)
    for ax, r in zip(axes[0], runs, strict=True):
        ax.imshow(plt.imread(out / f"{problem}_{r['method']}_s{seed}" / "samples.png"))
        ax.set_title(f"{r['method']}, seed {seed}: {r['modes']} modes, KL {r['kl']:.2f} nats")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
