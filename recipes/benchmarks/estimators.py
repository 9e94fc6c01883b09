"""Benchmark MI estimators on distributions with known mutual information (nats).

Three parts, each printed as markdown tables on stdout and saved (PNG plots, JSON) to --out:

1. "Figure 1" of the MINE paper (Belghazi et al. 2018): correlated Gaussians with
   corr(x_i, z_j) = rho·delta_ij, I = -d/2·log(1 - rho²), d = 2 and d = 20, estimated by MINE,
   MINE-f (``estimate_mi(x, y, "mine")`` / ``"mine-f"``) and KSG (``mine_reg.ksg.ksg_mi``).
2. "Suite": about 40 distributions with closed-form MI (correlated Gaussians under six
   invertible elementwise transforms, and multivariate Student-t) at dims 1+1 ... 25+25 and MI
   0, 0.5, 1, 2 nats, scored by the default ``estimate_mi(x, y)`` and, up to 10+10 dims, KSG.
3. "Memory": time and peak memory of one forward + backward pass of the DV bound with all
   B x B pairs of a batch of 1024 scored by a SeparableCritic(25, 25).

Usage, from the repository root:

    python recipes/benchmarks/estimators.py --quick            # a few minutes on a CPU
    python recipes/benchmarks/estimators.py --n 10000 --out outputs/benchmarks
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import mine_reg  # noqa: E402
from mine_reg import estimate_mi  # noqa: E402
from mine_reg.ksg import ksg_mi  # noqa: E402
from mine_reg.synthetic import (  # noqa: E402
    TRANSFORMS,
    correlated_gaussian,
    gaussian_mi,
    rho_for_mi,
    student_t,
    student_t_mi,
    transformed_gaussian,
)

FIG1_RHOS = (-0.99, -0.9, -0.7, -0.5, -0.3, 0.0, 0.3, 0.5, 0.7, 0.9, 0.99)
FIG1_RHOS_QUICK = (-0.9, 0.0, 0.5, 0.9)
FIG1_DIMS = (2, 20)
FIG1_ESTIMATORS = ("MINE", "MINE-f", "KSG")
FIG1_QUICK_MAX_STEPS = 400

SUITE_DIMS = (1, 2, 5, 10, 25)
SUITE_MI = (0.0, 0.5, 1.0, 2.0)
T_DOFS = (3, 5)
FAMILIES = (*TRANSFORMS, *(f"t{dof}" for dof in T_DOFS))
KSG_MAX_DIM = 10  # per side; KSG is slow and strongly biased beyond

TARGET_WITHIN = 0.90
TARGET_SECONDS = 3.0
TARGET_INDEPENDENT = 0.02


# --------------------------------------------------------------------------- helpers


def case_seed(base: int, key: str) -> int:
    """A fixed seed per case, different between cases and stable when the case list changes."""
    return (base * 1_000_003 + zlib.crc32(key.encode())) % (2**31 - 1)


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in header]] + [[fmt(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("---" for _ in header) + "|")
    return "\n".join(lines)


def run_timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, float, str | None, dict]:
    """(float(fn(...)), seconds, error message or None, fn's result as a dict if it has
    ``to_dict``): an estimator failure is recorded, it does not stop the run."""
    start = time.perf_counter()
    info: dict[str, Any] = {}
    try:
        result = fn(*args, **kwargs)
        value, err = float(result), None
        if hasattr(result, "to_dict"):
            info = result.to_dict()
    except Exception as e:  # noqa: BLE001 - record and carry on, the table shows the error
        value, err = float("nan"), f"{type(e).__name__}: {e}"
    return value, time.perf_counter() - start, err, info


class KSGTimer:
    """Predicts KSG's wall time at N samples from a pilot run on a subsample.

    The k-d tree queries cost between O(N log N) (low dims) and about O(N²) (high dims, where
    measured times grow like N^2.0 to N^2.2); the prediction extrapolates the pilot as N^2.2,
    so it errs on the slow side.
    """

    def __init__(self, limit_s: float, pilot_n: int = 2000) -> None:
        self.limit_s, self.pilot_n = limit_s, pilot_n
        self.cache: dict[tuple[int, int], float] = {}

    def predicted(self, dim: int, n: int) -> float:
        key = (dim, n)
        if key not in self.cache:
            m = min(n, self.pilot_n)
            x, y = correlated_gaussian(m, dim, 0.5, seed=12345)
            start = time.perf_counter()
            ksg_mi(x, y)
            self.cache[key] = (time.perf_counter() - start) * (n / m) ** 2.2
        return self.cache[key]

    def ok(self, dim: int, n: int) -> bool:
        return self.predicted(dim, n) <= self.limit_s


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON: NaN and infinities become null."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(w) for k, w in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(w) for w in v]
        return v

    path.write_text(json.dumps(clean(obj), indent=2, allow_nan=False))


def device_name() -> str:
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name()})"
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"


# --------------------------------------------------------------------------- part 1: figure 1


def figure1(args: argparse.Namespace, out: Path, ksg_timer: KSGTimer) -> list[dict[str, Any]]:
    rhos = FIG1_RHOS_QUICK if args.quick else FIG1_RHOS
    # --quick caps training as a guard: a d = 20 fit that never stops early would run all of
    # estimate_mi's max_steps (minutes on a CPU). The suite always runs the plain defaults.
    caps = {"max_steps": FIG1_QUICK_MAX_STEPS} if args.quick else {}
    points = [(d, rho) for d in FIG1_DIMS for rho in rhos]
    rows: list[dict[str, Any]] = []
    for d, rho in tqdm(points, desc="figure 1", file=sys.stderr, dynamic_ncols=True):
        seed = case_seed(args.seed, f"fig1/d={d}/rho={rho}")
        x, y = correlated_gaussian(args.n, d, rho, seed=seed)
        row: dict[str, Any] = {"d": d, "rho": rho, "truth": gaussian_mi(d, rho), "seed": seed}
        for name, est in (("MINE", "mine"), ("MINE-f", "mine-f")):
            value, secs, err, info = run_timed(estimate_mi, x, y, est, seed=seed, **caps)
            row[name], row[f"{name} s"], row[f"{name} error"], row[f"{name} info"] = value, secs, err, info
        if ksg_timer.ok(d, args.n):
            value, secs, err, _ = run_timed(ksg_mi, x, y)
            row["KSG"], row["KSG s"], row["KSG error"] = value, secs, err
        else:
            row["KSG"], row["KSG s"] = None, None
            row["KSG error"] = f"skipped: predicted {ksg_timer.predicted(d, args.n):.0f} s"
        rows.append(row)

    capped = f", MINE and MINE-f capped at max_steps = {FIG1_QUICK_MAX_STEPS} (--quick)" if caps else ""
    print(f"\n## Figure 1: correlated Gaussians, N = {args.n}{capped}\n")
    print(
        markdown_table(
            ["d", "rho", "truth", *FIG1_ESTIMATORS, *(f"{e} s" for e in FIG1_ESTIMATORS)],
            [
                [r["d"], f"{r['rho']:+.2f}", r["truth"], *(r[e] for e in FIG1_ESTIMATORS)]
                + [_round(r[f"{e} s"], 1) for e in FIG1_ESTIMATORS]
                for r in rows
            ],
        )
    )
    errors = [(r, e, r[f"{e} error"]) for r in rows for e in FIG1_ESTIMATORS if r[f"{e} error"]]
    skipped = sorted({(r["d"], msg) for r, _, msg in errors if msg.startswith("skipped")})
    for d, msg in skipped:
        print(f"\nKSG {msg} at d = {d}, over the {ksg_timer.limit_s:g} s limit (--ksg-max-seconds).")
    for r, e, msg in errors:
        if not msg.startswith("skipped"):
            print(f"\n{e} failed at d = {r['d']}, rho = {r['rho']}: {msg}")

    fig, axes = plt.subplots(1, len(FIG1_DIMS), figsize=(11, 4.2))
    grid = np.linspace(min(rhos), max(rhos), 201)
    markers = {"MINE": "o", "MINE-f": "s", "KSG": "^"}
    for ax, d in zip(axes, FIG1_DIMS, strict=True):
        ax.plot(grid, [gaussian_mi(d, r) for r in grid], "k-", lw=1.5, label="true MI")
        sub = [r for r in rows if r["d"] == d]
        for e in FIG1_ESTIMATORS:
            pts = [(r["rho"], r[e]) for r in sub if r[e] is not None and not math.isnan(r[e])]
            if pts:
                ax.plot(*zip(*pts, strict=True), markers[e], ms=6, alpha=0.8, label=e)
        ax.set_title(f"d = {d}, N = {args.n}")
        ax.set_xlabel("rho")
        ax.set_ylabel("I(X; Z) (nats)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "figure1.png", dpi=120)
    plt.close(fig)
    write_json(out / "figure1.json", {"n": args.n, "quick_max_steps": caps.get("max_steps"), "rows": rows})
    return rows


# --------------------------------------------------------------------------- part 2: suite


@dataclass
class Case:
    family: str  # a key of TRANSFORMS, or "t3" / "t5" (multivariate Student-t)
    dim: int  # per side: x and y are [N, dim]
    level: float  # MI level in nats used to pick rho; the truth for Gaussian families
    seed: int = 0

    @property
    def key(self) -> str:
        return f"{self.family}/d={self.dim}+{self.dim}/I={self.level:g}"

    @property
    def rho(self) -> float:
        return rho_for_mi(self.level, self.dim) if self.level > 0 else 0.0

    @property
    def truth(self) -> float:
        if self.family.startswith("t"):
            # the shared chi-square scale makes X and Z dependent even at rho = 0
            return student_t_mi(self.dim, self.rho, float(self.family[1:]))
        return gaussian_mi(self.dim, self.rho)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.family.startswith("t"):
            return student_t(n, self.dim, self.rho, float(self.family[1:]), seed=self.seed)
        return transformed_gaussian(n, self.dim, self.rho, self.family, seed=self.seed)


def suite_cases(quick: bool, base_seed: int) -> list[Case]:
    """The full suite: every family at every dim (8 x 5 = 40 cases), with the MI level rotated
    Latin-square style so each dim sees every level twice and each family sees all four levels;
    all 8 independent (I = 0) cases are Gaussian-based, 2 of the rho = 0 cases are Student-t
    (dependent through the shared scale). --quick: 8 hand-picked cases, one per family,
    covering every dim and every level."""
    if quick:
        picks = [
            ("identity", 1, 0.5),
            ("half_cube", 2, 1.0),
            ("cube", 5, 0.0),
            ("asinh", 10, 2.0),
            ("normal_cdf", 25, 1.0),
            ("wiggly", 1, 2.0),
            ("t3", 2, 0.5),
            ("t5", 5, 0.0),
        ]
        cases = [Case(f, d, lv) for f, d, lv in picks]
    else:
        cases = [
            Case(fam, dim, SUITE_MI[(i + j) % len(SUITE_MI)])
            for i, fam in enumerate(FAMILIES)
            for j, dim in enumerate(SUITE_DIMS)
        ]
    for c in cases:
        c.seed = case_seed(base_seed, c.key)
    return cases


def within_tolerance(estimate: float, truth: float) -> bool:
    if math.isnan(estimate):
        return False
    if truth == 0.0:
        return abs(estimate) <= TARGET_INDEPENDENT
    return abs(estimate - truth) <= max(0.05, 0.10 * truth)


def suite(args: argparse.Namespace, out: Path, ksg_timer: KSGTimer) -> list[dict[str, Any]]:
    cases = suite_cases(args.quick, args.seed)
    records: list[dict[str, Any]] = []
    bar = tqdm(cases, desc="suite", file=sys.stderr, dynamic_ncols=True)
    for case in bar:
        bar.set_postfix_str(case.key)
        x, y = case.sample(args.n)
        truth = case.truth
        base = {**asdict(case), "key": case.key, "rho": case.rho, "truth": truth, "n": args.n}
        value, secs, err, info = run_timed(estimate_mi, x, y, seed=case.seed)
        records.append(
            {**base, "estimator": "default", "estimate": value, "seconds": secs, "error": err, "info": info}
        )
        if case.dim <= KSG_MAX_DIM:
            if ksg_timer.ok(case.dim, args.n):
                value, secs, err, _ = run_timed(ksg_mi, x, y)
            else:
                value, secs = float("nan"), None
                err = f"skipped: predicted {ksg_timer.predicted(case.dim, args.n):.0f} s"
            records.append({**base, "estimator": "KSG", "estimate": value, "seconds": secs, "error": err})
    for r in records:
        r["abs_error"] = abs(r["estimate"] - r["truth"])
        r["within"] = within_tolerance(r["estimate"], r["truth"])

    estimators = list(dict.fromkeys(r["estimator"] for r in records))
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        by_case.setdefault(r["key"], {})[r["estimator"]] = r
    print(f"\n## Suite: per case, N = {args.n}\n")
    header = ["family", "dims", "rho", "truth"]
    for e in estimators:
        header += [e, f"{e} err", f"{e} ok", f"{e} s"]
    header.append("default steps")
    rows = []
    for per in by_case.values():
        first = next(iter(per.values()))
        row = [first["family"], f"{first['dim']}+{first['dim']}", first["rho"], first["truth"]]
        for e in estimators:
            r = per.get(e)
            if r is None:
                row += [None] * 4
            else:
                row += [r["estimate"], r["estimate"] - r["truth"], r["within"], _round(r["seconds"], 1)]
        row.append((per.get("default") or {}).get("info", {}).get("steps"))
        rows.append(row)
    print(markdown_table(header, rows))
    for r in records:
        if r["error"] is not None:
            print(f"\n{r['estimator']} on {r['key']}: {r['error']}")

    print(
        f"\n## Suite: summary (tolerance: |err| <= max(0.05, 10% of truth) nats; "
        f"|estimate| <= {TARGET_INDEPENDENT} for I = 0)\n"
    )
    summary = []
    groups = {
        "Gaussian + transforms": lambda r: r["family"] in TRANSFORMS,
        "Student-t": lambda r: r["family"] not in TRANSFORMS,
        "all": lambda r: True,
    }
    for e, (group, member) in itertools.product(estimators, groups.items()):
        rs = [r for r in records if r["estimator"] == e and member(r)]
        if not rs:
            continue
        ran = [r for r in rs if not math.isnan(r["estimate"])]
        indep = [abs(r["estimate"]) for r in ran if r["truth"] == 0.0]
        secs = [r["seconds"] for r in ran]
        summary.append(
            {
                "estimator": e,
                "group": group,
                "cases": len(rs),
                "ran": len(ran),
                "within": sum(r["within"] for r in ran) / len(ran) if ran else float("nan"),
                "mean_abs_error": statistics.fmean(r["abs_error"] for r in ran) if ran else float("nan"),
                "median_seconds": statistics.median(secs) if secs else float("nan"),
                "max_abs_independent": max(indep) if indep else None,
            }
        )
    print(
        markdown_table(
            [
                "estimator",
                "distributions",
                "cases (ran)",
                f"within tol. (target >= {TARGET_WITHIN:.0%})",
                "mean abs err (nats)",
                f"median s (target <= {TARGET_SECONDS:g})",
                f"max abs est., I = 0 (target <= {TARGET_INDEPENDENT})",
            ],
            [
                [
                    s["estimator"],
                    s["group"],
                    f"{s['cases']} ({s['ran']})",
                    f"{s['within']:.0%}",
                    s["mean_abs_error"],
                    _round(s["median_seconds"], 2),
                    s["max_abs_independent"],
                ]
                for s in summary
            ],
        )
    )

    _suite_plot(records, estimators, out / "suite.png", args.n)
    meta = {
        "n": args.n,
        "seed": args.seed,
        "quick": args.quick,
        "device": device_name(),
        "torch": torch.__version__,
        "mine_reg": mine_reg.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "tolerance": "max(0.05, 0.1*truth) nats if truth > 0; |estimate| <= 0.02 if truth == 0",
    }
    write_json(out / "suite.json", {"meta": meta, "summary": summary, "results": records})
    return records


def _round(v: float | None, digits: int) -> str | None:
    """Formatted to ``digits`` decimals for a table cell (None stays None, printed as "-")."""
    return None if v is None else f"{v:.{digits}f}"


def _suite_plot(records: list[dict[str, Any]], estimators: list[str], path: Path, n: int) -> None:
    fig, ax = plt.subplots(figsize=(6, 5.5))
    top = max([r["truth"] for r in records] + [2.0]) * 1.1
    grid = np.linspace(0, top, 200)
    band = np.maximum(0.05, 0.1 * grid)
    ax.fill_between(grid, grid - band, grid + band, color="0.85", label="tolerance")
    ax.plot(grid, grid, "k-", lw=1)
    for e, marker in zip(estimators, "os^vD", strict=False):
        pts = [(r["truth"], r["estimate"]) for r in records if r["estimator"] == e]
        pts = [p for p in pts if not math.isnan(p[1])]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker, ms=6, alpha=0.7, ls="none", label=e)
    ax.set_xlabel("true I(X; Y) (nats)")
    ax.set_ylabel("estimate (nats)")
    ax.set_title(f"Accuracy suite, N = {n}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- part 3: memory


def _cpu_peak_tensor_bytes(step: Callable[[], None]) -> float:
    """Peak bytes held by tensors that ``step`` allocates with PyTorch's CPU allocator, above what
    was allocated before it: the running sum of the profiler's allocation and free records.

    Neither tracemalloc (PyTorch allocates outside Python's allocator) nor the ru_maxrss
    high-water mark (already set by imports and by earlier parts) can see a step of a few MiB.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    records = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    held = peak = 0
    for _, nbytes in records:
        held += nbytes
        peak = max(peak, held)
    return float(peak)


def _dv_step(batch: int, dim: int, marginals: str, device: torch.device, reps: int) -> dict[str, Any]:
    """Time and peak memory of one forward + backward of the DV bound with a SeparableCritic."""
    torch.manual_seed(0)
    critic = mine_reg.SeparableCritic(dim, dim).to(device)
    x = torch.randn(batch, dim, device=device)
    z = x + 0.5 * torch.randn(batch, dim, device=device)

    def step() -> None:
        joint, marginal = mine_reg.score_pairs(critic, x, z, marginals)
        (-mine_reg.dv(joint, marginal)).backward()
        critic.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up: kernels, allocator pools
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        sync()
        peak, method = torch.cuda.max_memory_allocated(device) - before, "torch.cuda.max_memory_allocated"
    else:
        try:
            peak = _cpu_peak_tensor_bytes(step)
            method = "torch.profiler(profile_memory=True) allocation records"
        except Exception as e:  # noqa: BLE001 - the profiler's record layout is not a stable API
            peak, method = float("nan"), f"unavailable ({type(e).__name__}: {e})"
    scores = batch * batch if marginals == "all" else 2 * batch
    return {
        "marginals": marginals,
        "batch": batch,
        "dims": f"{dim}+{dim}",
        "device": str(device),
        "ms_forward_backward": 1e3 * statistics.median(times),
        "peak_mib": peak / 2**20,
        "peak_method": method,
        "score_mib": scores * 4 / 2**20,
        "marginal_pairs": batch * (batch - 1 if marginals == "all" else 1),
    }


def memory(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reps = 3 if args.quick else 10
    rows = [_dv_step(1024, 25, marginals, device, reps) for marginals in ("all", "shuffle")]
    print(f"\n## Memory: SeparableCritic(25, 25), DV bound forward + backward, {device_name()}\n")
    print(
        markdown_table(
            ["marginals", "batch", "marginal pairs", "ms (median)", "peak MiB", "score tensor MiB (fp32)"],
            [
                [
                    r["marginals"],
                    r["batch"],
                    r["marginal_pairs"],
                    _round(r["ms_forward_backward"], 1),
                    _round(r["peak_mib"], 1),
                    _round(r["score_mib"], 3),
                ]
                for r in rows
            ],
        )
    )
    print(
        f"\nPeak: memory allocated during one step above what was allocated before it, "
        f"measured with {rows[0]['peak_method']} (activations, B x B scores and their gradients)."
    )
    write_json(out / "memory.json", rows)
    return rows


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rhos and 8 suite cases (a few minutes)")
    p.add_argument("--n", type=int, default=10000, help="samples per distribution (default 10000)")
    p.add_argument("--out", type=Path, default=Path("outputs/benchmarks"), help="plots and JSON go here")
    p.add_argument("--seed", type=int, default=0, help="base seed; each case derives its own")
    p.add_argument("--skip-figure1", action="store_true")
    p.add_argument("--skip-suite", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument(
        "--ksg-max-seconds",
        type=float,
        default=None,
        help="skip KSG where its predicted wall time exceeds this (default 20 s, 10 s with --quick)",
    )
    args = p.parse_args(argv)
    if args.ksg_max_seconds is None:
        args.ksg_max_seconds = 10.0 if args.quick else 20.0
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    print(
        f"# MI estimator benchmarks\n\nN = {args.n}, seed = {args.seed}, quick = {args.quick}; "
        f"device: {device_name()}; torch {torch.__version__}, mine_reg {mine_reg.__version__}"
    )
    ksg_timer = KSGTimer(args.ksg_max_seconds)
    if not args.skip_figure1:
        figure1(args, args.out, ksg_timer)
    if not args.skip_suite:
        suite(args, args.out, ksg_timer)
    if not args.skip_memory:
        memory(args, args.out)
    print(f"\nTotal wall time: {time.perf_counter() - start:.0f} s; outputs in {args.out}/")


if __name__ == "__main__":
    main()
