"""Seeds x {baseline, mine} for recipes/gan_codes.py, one run at a time; prints markdown tables.

    python recipes/benchmarks/gan_codes_seeds.py                       # grid25 and stacked, seeds 0,1,2
    python recipes/benchmarks/gan_codes_seeds.py --problems grid25 --seeds 0 -- --steps 1000

Each run is ``recipes/gan_codes.py --config configs/gan_codes_<problem>[_mine].yaml --seed S`` with
the offline defaults of those configs (baseline and MINE share every budget setting), as a
subprocess with ``OMP_NUM_THREADS=1`` (one CPU thread) and, unless ``WANDB_MODE`` is set, wandb
disabled. Arguments after ``--`` go to every run. Results: ``OUT/<problem>_<method>_s<seed>/
results.json`` per run, ``OUT/summary.json`` and the tables (modes, high-quality %, KL in nats,
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
    cols = ["method", "seed", f"modes (of {total})", *(["high quality %"] if grid else []), "KL (nats)"]
    cols += ["I(G(z);c) (nats)", "train s", "wall s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def fmt(r: dict, seed: str) -> str:
        cells = [r["method"], seed, f"{r['modes']:.1f}" if seed == "mean" else str(r["modes"])]
        cells += [f"{r['high_quality_pct']:.1f}"] if grid else []
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
                *(["high_quality_pct"] if grid else []),
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
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gan_codes_seeds")
    parser.add_argument("extra", nargs="*", help="arguments for every run, after --")
    args = parser.parse_args()
    summary: dict[str, list[dict]] = {}
    for problem in args.problems.split(","):
        rows = []
        for method in args.methods.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                res = run(problem, method, seed, args.out / f"{problem}_{method}_s{seed}", args.extra)
                print(
                    f"{problem} {method} seed {seed}: modes {res['modes']}, KL {res['kl']:.3f} nats, "
                    f"{res['wall_seconds']:.0f} s",
                    flush=True,
                )
                rows.append(res)
        summary[problem] = rows
        print(f"\n### {problem}\n\n{table(rows, problem)}\n", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
