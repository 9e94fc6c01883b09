"""ALI vs ALI+MINE over seeds at the offline default budget, one run at a time; prints markdown.

    python recipes/benchmarks/ali_seeds.py                      # seeds 0 1 2, both configs
    python recipes/benchmarks/ali_seeds.py --table-only         # re-print from saved results

Each run is ``recipes/ali.py --config configs/{ali,ali_mine}.yaml --seed S`` with
OMP_NUM_THREADS=1 (unless set) and its output under ``--out/{ali,mine}_s{S}/``; both configs
have the same budget (epochs, batch size, learning rates, critic). The table gives, per run and
as mean ± standard deviation over seeds: the reconstruction error (mean ||x - G(E(x))||_2 over
test images, pixels in [0, 1]), the reconstruction accuracy (the digit classifier gives x and
its reconstruction the same label), SSIM (or MS-SSIM where the images allow), the held-out
I(x; z) estimate (nats) and the wall time of the whole run.
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
ARMS = {"ali": "configs/ali.yaml", "mine": "configs/ali_mine.yaml"}


def run(arm: str, seed: int, out: Path, extra: list[str]) -> None:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, str(ROOT / "recipes" / "ali.py"), "--config", ARMS[arm], "--seed", str(seed)]
    cmd += ["--out", str(out), *extra]
    tick = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ali_seeds.py: error: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    results = json.loads((out / "results.json").read_text())
    results["wall_seconds"] = time.perf_counter() - tick
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(proc.stdout.strip().splitlines()[-1], f"({results['wall_seconds']:.0f} s)", flush=True)


def _ssim(r: dict) -> float:
    return r["ms_ssim"] if r.get("ms_ssim") is not None else r["ssim"]


def table(root: Path, seeds: list[int]) -> str:
    rows = [
        "| method | seed | recon error | recon accuracy | SSIM | I(x; z) held-out (nats) | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    summary = [
        "| method | recon error | recon accuracy | SSIM | I(x; z) held-out (nats) |",
        "|---|---:|---:|---:|---:|",
    ]
    for arm in ARMS:
        found = []
        for seed in seeds:
            path = root / f"{arm}_s{seed}" / "results.json"
            if not path.is_file():
                continue
            r = json.loads(path.read_text())
            found.append(r)
            rows.append(
                f"| {arm} | {seed} | {r['recon_error']:.3f} | {100 * r['recon_accuracy']:.1f}% | "
                f"{_ssim(r):.3f} | {r['I_xz_heldout']:.2f} | {r.get('wall_seconds', r['seconds']):.0f} |"
            )
        if found:

            def ms(values: list[float], fmt: str = "{:.3f}") -> str:
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd)}"

            summary.append(
                f"| {arm} ({len(found)} seeds) | {ms([r['recon_error'] for r in found])} | "
                f"{ms([100 * r['recon_accuracy'] for r in found], '{:.1f}')}% | "
                f"{ms([_ssim(r) for r in found])} | {ms([r['I_xz_heldout'] for r in found], '{:.2f}')} |"
            )
    kind = next((json.loads(p.read_text())["ssim_kind"] for p in root.glob("*/results.json")), "")
    return "\n".join([*summary, "", *rows, "", f"SSIM: {kind}"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "ali_seeds")
    parser.add_argument("--table-only", action="store_true", help="print the table from saved results")
    args, extra = parser.parse_known_args()  # anything else goes to recipes/ali.py (both arms)
    if not args.table_only:
        for seed in args.seeds:
            for arm in ARMS:
                run(arm, seed, args.out / f"{arm}_s{seed}", extra)
    print(table(args.out, args.seeds))


if __name__ == "__main__":
    main()
