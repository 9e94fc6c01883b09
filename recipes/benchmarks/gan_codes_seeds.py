"""Seeds x {baseline, mine} for the GAN-codes recipes (recipes/gan_codes_{grid25,stacked}.py);
prints markdown tables.

    python recipes/benchmarks/gan_codes_seeds.py                       # grid25 and stacked, seeds 0,1,2
    python recipes/benchmarks/gan_codes_seeds.py --problems grid25 --seeds 0 -- --steps 1000
    python recipes/benchmarks/gan_codes_seeds.py --problems stacked --seeds 0,1,2,3,4,5 --jobs 2

Each run is ``python -m recipes.gan_codes_<problem> --config
configs/gan_codes_<problem>[_mine].yaml --seed S`` (stacked: and ``--dataset D``, by default the
8x8 digits of the README's tables; ``mnist5k`` is the configs' own default) with the offline
defaults of those configs (baseline and MINE share every budget setting: both inherit
``gan_codes_<problem>_base.yaml``),
as a subprocess with ``OMP_NUM_THREADS=1`` (one CPU thread; ``--jobs`` runs at once, one per
core) and, unless ``WANDB_MODE`` is set, wandb disabled. Arguments after ``--`` go to every run. Results:
``OUT/<problem>_<method>_s<seed>/results.json`` per run, ``OUT/summary.json`` and the tables
(modes, high-quality % or the percentage of confidently classified stacked samples, KL in nats,
held-out I(G(z); c) in nats, training seconds) with per-seed rows and the mean.
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from recipes.common import ROOT, run_program
from recipes.report import markdown_table


def run(problem: str, method: str, seed: int, out: Path, extra: list[str]) -> dict:
    """One recipe run as a subprocess; its results.json plus the wall time in seconds."""
    config = ROOT / "configs" / f"gan_codes_{problem}{'_mine' if method == 'mine' else ''}.yaml"
    return run_program(f"gan_codes_{problem}", ["--config", str(config), "--seed", str(seed), *extra], out)


def table(rows: list[dict], problem: str) -> str:
    """Markdown: one row per run, then the mean of each method."""
    grid = problem == "grid25"
    quality = "high_quality_pct" if grid else "confident_pct"
    columns = [
        "method",
        "seed",
        f"modes (of {25 if grid else 1000})",
        "high quality %" if grid else "confident %",
    ]
    columns += ["KL (nats)", "I(G(z);c) (nats)", "train s", "wall s"]

    def cells(r: dict, seed: str) -> list[str]:
        modes = f"{r['modes']:.1f}" if seed == "mean" else str(r["modes"])
        return [r["method"], seed, modes, f"{r[quality]:.1f}", f"{r['kl']:.3f}", f"{r['I_Gc']:.2f}"] + [
            f"{r['train_seconds']:.0f}",
            f"{r['wall_seconds']:.0f}",
        ]

    lines = [
        cells(r, str(r["seed"])) for method in ("baseline", "mine") for r in rows if r["method"] == method
    ]
    for method in ("baseline", "mine"):
        runs = [r for r in rows if r["method"] == method]
        if runs:
            keys = ["modes", "kl", "I_Gc", "train_seconds", "wall_seconds", quality]
            mean = {k: statistics.fmean(r[k] for r in runs) for k in keys}
            lines.append(cells({**mean, "method": f"**{method}**"}, "mean"))
    return markdown_table(columns, lines)


def real_stacked(dataset: str, data_root: str = "data", n: int = 26_000) -> str:
    """What real stacked digits score with the same cached classifier: ``n`` triples drawn from
    each split (seed 0), as one markdown line per split (modes, KL in nats, confident %)."""
    from recipes.digits import classify_stacked, load_images, load_or_train_classifier, stack_digits
    from recipes.gan_codes_stacked import stacked_metrics

    classifier = load_or_train_classifier(dataset, data_root, verbose=False)
    x_tr, y_tr, x_te, y_te = load_images(dataset, data_root)
    lines = []
    for split, (x, y) in {"train": (x_tr, y_tr), "test": (x_te, y_te)}.items():
        x3, _ = stack_digits(x, y, n, torch.Generator().manual_seed(0))
        m = stacked_metrics(*classify_stacked(classifier, x3))
        lines.append(
            f"- real stacked {dataset} digits ({split} split, {n:,} triples): {m['modes']} modes, "
            f"KL {m['kl']:.3f} nats, {m['confident_pct']:.1f}% confident"
        )
    return "\n".join(lines)


def stacked_targets(rows: list[dict]) -> str:
    """The stacked-MNIST targets, PASS or FAIL each: GAN + MINE covers at least 900 of 1000 modes
    on average with a mean KL of at most 0.5 nats, and its confident share is no lower than the
    baseline's (coverage must not be won with unreadable samples)."""
    mean = {
        m: {
            k: statistics.fmean(r[k] for r in rows if r["method"] == m)
            for k in ("modes", "kl", "confident_pct")
        }
        for m in ("baseline", "mine")
        if any(r["method"] == m for r in rows)
    }
    if "mine" not in mean:
        return ""
    mine = mean["mine"]
    checks = [
        (f"mean modes {mine['modes']:.1f} >= 900", mine["modes"] >= 900),
        (f"mean KL {mine['kl']:.3f} <= 0.5 nats", mine["kl"] <= 0.5),
    ]
    if "baseline" in mean:
        base = mean["baseline"]["confident_pct"]
        checks.append(
            (
                f"confident {mine['confident_pct']:.1f}% >= baseline's {base:.1f}%",
                mine["confident_pct"] >= base,
            )
        )
    return "\n".join(f"- GAN + MINE {text}: {'PASS' if ok else 'FAIL'}" for text, ok in checks)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", default="grid25,stacked", help="comma-separated: grid25, stacked")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--methods", default="baseline,mine")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one CPU thread each)")
    parser.add_argument("--dataset", default="digits", help="stacked: digits (default) | mnist5k | mnist")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gan_codes_seeds")
    parser.add_argument("--table-only", action="store_true", help="print the tables from saved results")
    parser.add_argument("extra", nargs="*", help="arguments for every run, after --")
    args = parser.parse_args()
    if not set(args.problems.split(",")) <= {"grid25", "stacked"}:
        parser.error(f"--problems takes grid25 and/or stacked, got {args.problems!r}")
    summary: dict[str, list[dict]] = {}
    for problem in args.problems.split(","):
        jobs = [(m, int(s)) for m in args.methods.split(",") for s in args.seeds.split(",")]

        def one(job: tuple[str, int], problem: str = problem) -> dict:
            method, seed = job
            if args.table_only:
                return json.loads((args.out / f"{problem}_{method}_s{seed}" / "results.json").read_text())
            extra = (["--dataset", args.dataset] if problem == "stacked" else []) + args.extra
            res = run(problem, method, seed, args.out / f"{problem}_{method}_s{seed}", extra)
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
        if problem == "stacked":
            print(stacked_targets(rows), flush=True)
            print(real_stacked(args.dataset), flush=True)
    if args.table_only:
        return
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
