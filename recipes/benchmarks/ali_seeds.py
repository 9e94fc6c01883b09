"""ALI vs ALI+MINE over seeds at the offline default budget, one run at a time; prints markdown.

    python recipes/benchmarks/ali_seeds.py                      # seeds 0 1 2, both configs
    python recipes/benchmarks/ali_seeds.py --dataset mnist5k    # the recipe's default data
    python recipes/benchmarks/ali_seeds.py --table-only         # re-print from saved results

Each run is ``python -m recipes.ali --config configs/{ali,ali_mine}.yaml --dataset D --seed S``
(D: ``--dataset``, by default the 8x8 digits of the README's table; the configs' own default is
``mnist5k``) with
OMP_NUM_THREADS=1 (unless set), wandb disabled (unless WANDB_MODE is set) and its output under
``--out/{ali,mine}_s{S}/``; both configs have the same budget (epochs, batch size, learning
rates, critic: they share ``configs/ali_base.yaml``). The table gives, per run and
as mean ± standard deviation over seeds: the reconstruction error (mean ||x - G(E(x))||_2 over
test images, pixels in [0, 1]), the reconstruction accuracy (the digit classifier gives x and
its reconstruction the same label), SSIM (or MS-SSIM where the images allow), the held-out
I(x; z) estimate (nats) and the wall time of the whole run.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from recipes.common import ROOT, run_program
from recipes.report import markdown_table

ARMS = {"ali": "configs/ali.yaml", "mine": "configs/ali_mine.yaml"}


def run(arm: str, seed: int, out: Path, extra: list[str]) -> None:
    results = run_program("ali", ["--config", ARMS[arm], "--seed", str(seed), *extra], out)
    print(f"{arm} seed {seed}: recon error {results['recon_error']:.3f} ({results['wall_seconds']:.0f} s)")


def _ssim(r: dict) -> float:
    return r["ms_ssim"] if r.get("ms_ssim") is not None else r["ssim"]


def mean_sd(values: list[float], fmt: str = "{:.3f}") -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd)}"


def table(root: Path, seeds: list[int]) -> str:
    columns = ["recon error", "recon accuracy", "SSIM", "I(x; z) held-out (nats)"]
    rows, summary = [], []
    for arm in ARMS:
        paths = [root / f"{arm}_s{seed}" / "results.json" for seed in seeds]
        found = [json.loads(p.read_text()) for p in paths if p.is_file()]
        for r in found:
            rows.append(
                [
                    arm,
                    r["seed"],
                    f"{r['recon_error']:.3f}",
                    f"{100 * r['recon_accuracy']:.1f}%",
                    f"{_ssim(r):.3f}",
                ]
                + [f"{r['I_xz_heldout']:.2f}", f"{r.get('wall_seconds', r['seconds']):.0f}"]
            )
        if found:
            summary.append(
                [f"{arm} ({len(found)} seeds)", mean_sd([r["recon_error"] for r in found])]
                + [f"{mean_sd([100 * r['recon_accuracy'] for r in found], '{:.1f}')}%"]
                + [mean_sd([_ssim(r) for r in found]), mean_sd([r["I_xz_heldout"] for r in found], "{:.2f}")]
            )
    kind = next((json.loads(p.read_text())["ssim_kind"] for p in root.glob("*/results.json")), "")
    per_run = markdown_table(["method", "seed", *columns, "wall s"], rows, align="lrrrrrr")
    return "\n".join(
        [markdown_table(["method", *columns], summary, align="lrrrr"), "", per_run, "", f"SSIM: {kind}"]
    )


def targets(root: Path, seeds: list[int]) -> str:
    """The ALI + MINE target, PASS or FAIL per seed: a lower reconstruction error and a higher
    reconstruction accuracy and (MS-)SSIM than ALI on the same seed."""
    lines = []
    for seed in seeds:
        paths = {arm: root / f"{arm}_s{seed}" / "results.json" for arm in ARMS}
        if not all(p.is_file() for p in paths.values()):
            continue
        ali, mine = (json.loads(paths[arm].read_text()) for arm in ARMS)
        ok = (
            mine["recon_error"] < ali["recon_error"]
            and mine["recon_accuracy"] > ali["recon_accuracy"]
            and _ssim(mine) > _ssim(ali)
        )
        lines.append(
            f"- seed {seed}: error {mine['recon_error']:.3f} vs {ali['recon_error']:.3f}, accuracy "
            f"{100 * mine['recon_accuracy']:.1f}% vs {100 * ali['recon_accuracy']:.1f}%, SSIM "
            f"{_ssim(mine):.3f} vs {_ssim(ali):.3f} (MINE vs ALI): {'PASS' if ok else 'FAIL'}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dataset", default="digits", help="digits (default) | mnist5k | mnist")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "ali_seeds")
    parser.add_argument("--table-only", action="store_true", help="print the table from saved results")
    args, extra = parser.parse_known_args()  # anything else goes to recipes/ali.py (both arms)
    if not args.table_only:
        for seed in args.seeds:
            for arm in ARMS:
                run(arm, seed, args.out / f"{arm}_s{seed}", ["--dataset", args.dataset, *extra])
    print(table(args.out, args.seeds))
    print("\nALI + MINE better on every measure, per seed:\n" + targets(args.out, args.seeds))


if __name__ == "__main__":
    main()
