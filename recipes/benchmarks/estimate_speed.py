"""Time the default ``estimate_mi`` of two or more checkouts side by side, alternating.

A shared machine's speed drifts by 2x between hours, so an absolute time from another day says
little; this script runs each checkout's ``mine_reg`` in its own process on the same five cases
(N = 10,000: Gaussian 5+5 at 1 nat, 1+1 at rho 0.5, 25+25 at 1 nat; Student-t 5+5 with 3 dof;
additive uniform noise 1+1 at eps 0.5), round after round in alternating order, and prints the
seconds per case and the median per checkout and round as one markdown table.

    git worktree add /tmp/old <rev>
    python recipes/benchmarks/estimate_speed.py --checkouts /tmp/old,. [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from recipes.report import markdown_table

CASES = ["gaussian 5+5", "gaussian 1+1", "gaussian 25+25", "t3 5+5", "additive uniform 1+1"]

# run with the checkout as the working directory, so that `python -c` imports its mine_reg
# (the working directory comes first on the import path); prints one JSON line
WORKER = """
import json, time, warnings
warnings.simplefilter("ignore")
import mine_reg
from mine_reg import estimate_mi
from mine_reg.synthetic import additive_uniform, correlated_gaussian, rho_for_mi, student_t
cases = [
    correlated_gaussian(10000, 5, rho_for_mi(1.0, 5), seed=1),
    correlated_gaussian(10000, 1, 0.5, seed=1),
    correlated_gaussian(10000, 25, rho_for_mi(1.0, 25), seed=1),
    student_t(10000, 5, 0.4, 3, seed=1),
    additive_uniform(10000, 0.5, seed=1),
]
seconds = []
for x, y in cases:
    start = time.perf_counter()
    estimate_mi(x, y)
    seconds.append(time.perf_counter() - start)
print(json.dumps({"module": mine_reg.__file__, "seconds": seconds}))
"""


def time_checkout(root: Path) -> list[float]:
    """Seconds per case of one fresh process on the checkout at ``root``."""
    root = root.resolve()
    command = [sys.executable, "-c", WORKER]
    proc = subprocess.run(command, cwd=root, capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(out["module"]).resolve().is_relative_to(root):
        raise SystemExit(f"{root}: imported {out['module']}, not this checkout's mine_reg")
    return out["seconds"]


def main(argv: list[str] | None = None) -> list[list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkouts", required=True, help="comma-separated repository roots")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    roots = [Path(p) for p in args.checkouts.split(",")]
    for root in roots:
        if not (root / "mine_reg" / "__init__.py").is_file():
            raise SystemExit(f"{root} is not a mine_reg checkout (no mine_reg/__init__.py)")
    rows = []
    for round_ in range(args.rounds):
        for root in roots if round_ % 2 == 0 else roots[::-1]:
            seconds = time_checkout(root)
            rows.append([str(root), str(round_ + 1), *(f"{s:.2f}" for s in seconds)])
            rows[-1].append(f"{statistics.median(seconds):.2f}")
            print(f"done: {root} round {round_ + 1}", flush=True)
    print(markdown_table(["checkout", "round", *CASES, "median"], rows))
    return rows


if __name__ == "__main__":
    main()
