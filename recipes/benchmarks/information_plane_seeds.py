"""Plain vs IB at the bottleneck of the information-plane recipe, over seeds; prints markdown.

    python recipes/benchmarks/information_plane_seeds.py                 # seeds 0 1 2
    python recipes/benchmarks/information_plane_seeds.py --table-only    # re-print saved results
    python recipes/benchmarks/information_plane_seeds.py --beta 1e-2     # any recipe option

Each seed is one run of ``python -m recipes.information_plane --seed S`` (both arms, the
recipe's defaults unless options are passed on), with OMP_NUM_THREADS=1 and wandb disabled
unless set, its output under ``--out/s{S}/``. The table gives per seed each arm's test error
and its monitor's last reading at the bottleneck (the last hidden layer): I(X; T + N) as the
noise channel's lower and upper bounds, and I(T + N; Y), in nats; then on how many seeds the
IB arm's I(X; T + N) lies below the plain arm's (its upper bound below the plain lower bound:
"clearly").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recipes.common import ROOT, run_program
from recipes.report import markdown_table


def bottleneck(arm: dict) -> tuple[float, float, float]:
    """(I(X;T+N) lower, upper, I(T+N;Y)) of an arm's last measurement at its bottleneck."""
    values = arm["history"][-1]["layers"][arm["bottleneck"]]
    return values["x_t"], values.get("x_t_upper", float("nan")), values["t_y"]


def table(root: Path, seeds: list[int]) -> str:
    rows, below, clearly, found = [], 0, 0, 0
    noise = ""
    for seed in seeds:
        path = root / f"s{seed}" / "results.json"
        if not path.is_file():
            continue
        results = json.loads(path.read_text())
        noise = f"noise s = {results['noise']}" + (" (relative)" if results.get("noise_relative") else "")
        plain, ib = results["arms"]["plain"], results["arms"]["ib"]
        (p_lo, p_up, p_ty), (i_lo, i_up, i_ty) = bottleneck(plain), bottleneck(ib)
        found += 1
        below += i_lo < p_lo
        clearly += i_up < p_lo
        rows.append(
            [seed, f"{plain['test_error']:.3f}", f"{ib['test_error']:.3f}"]
            + [f"{p_lo:.2f} – {p_up:.2f}", f"{i_lo:.2f} – {i_up:.2f}", f"{p_ty:.2f}", f"{i_ty:.2f}"]
            + ["yes" if i_lo < p_lo else "no"]
        )
    headers = [
        "seed", "plain test error", "IB test error", "plain I(X;T+N)", "IB I(X;T+N)",
        "plain I(T+N;Y)", "IB I(T+N;Y)", "IB lower",
    ]  # fmt: skip
    lines = [markdown_table(headers, rows, align="rrrrrrrl")]
    lines.append(
        f"IB below plain at the bottleneck on {below} of {found} seeds ({clearly} with its upper "
        f"bound below the plain lower bound); {noise}, nats"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "information_plane_seeds")
    parser.add_argument("--table-only", action="store_true", help="print the table from saved results")
    args, extra = parser.parse_known_args()  # anything else goes to recipes/information_plane.py
    if not args.table_only:
        for seed in args.seeds:
            out = args.out / f"s{seed}"
            results = run_program("information_plane", ["--seed", str(seed), *extra], out)
            print(f"seed {seed}: done ({results['wall_seconds']:.0f} s)", flush=True)
    print(table(args.out, args.seeds))


if __name__ == "__main__":
    main()
