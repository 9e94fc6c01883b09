"""Time ``estimate_mi`` beside CPU-bound neighbour processes (thread contention).

torch's CPU thread pool spins while it waits for work, so an estimate that shares the cores with
other busy processes can slow down far more than its share of the CPU would suggest. This script
times a fixed problem (correlated Gaussians, ``--n`` samples of ``--dim`` + ``--dim`` dims with
I = ``--mi`` nats, ``estimate_mi`` with its defaults) under several loads:

- ``idle``: nothing else started by the script;
- ``python``: one neighbour process running a pure-Python busy loop;
- ``torch``: one neighbour running 512 x 512 matmuls in a loop with ``--neighbour-threads``
  intra-op threads (default: all cores, as an unconfigured training job would);
- ``python+torch``, ``torch+torch``: two neighbours ("heavier load").

Neighbours are separate processes (multiprocessing, spawn). Each is started, the script waits
until it runs plus ``--settle`` seconds, times the estimates, and stops it (also on errors and
Ctrl-C). In each condition three thread settings are timed, interleaved run by run so that
drifting load hits them alike: ``estimate_mi``'s default (``num_threads=None``),
``num_threads=1``, and torch's default thread count of this process (captured at start). A
version of ``estimate_mi`` without the ``num_threads`` option gets the default row only, with a
note. One untimed warm-up estimate runs first.

The table (markdown, stdout) gives per condition and setting the median, min and max seconds per
estimate and the ratio of the median to the idle median of the same setting, then the target
line: with one CPU-bound neighbour the default's median is within 2x of its idle median. Run it
without OMP_NUM_THREADS set, or torch's default is that number. ``--out DIR`` also writes
``DIR/contention.json`` with every timing and estimate.

Usage, from the repository root:

    python recipes/benchmarks/contention.py --quick
    python recipes/benchmarks/contention.py --repeats 5 --n 10000 --out outputs/benchmarks
    python recipes/benchmarks/contention.py --conditions idle,torch --max-steps 200
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import multiprocessing as mp
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mine_reg import estimate_mi
from mine_reg.synthetic import correlated_gaussian, rho_for_mi

NEIGHBOUR_KINDS = ("python", "torch")
CONDITIONS = ("idle", "python", "torch", "python+torch", "torch+torch")
TARGET_RATIO = 2.0
DEFAULT_SETTING = "default"
QUICK_REPEATS, QUICK_N = 2, 4000


# --------------------------------------------------------------------------- neighbours


def _python_busy(ready: Any, parent: int) -> None:
    """A pure-Python busy loop; returns once its parent has gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    ready.set()
    x = 0
    while os.getppid() == parent:
        for i in range(100_000):
            x ^= i


def _torch_busy(ready: Any, parent: int, threads: int) -> None:
    """512 x 512 float32 matmuls in a loop with ``threads`` intra-op threads, like a training job."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    a = torch.randn(512, 512) / 512**0.5
    ready.set()
    while os.getppid() == parent:
        for _ in range(10):
            torch.mm(a, a)


def condition_kinds(condition: str) -> tuple[str, ...]:
    """'idle' -> (); 'python+torch' -> ('python', 'torch')."""
    if condition == "idle":
        return ()
    kinds = tuple(condition.split("+"))
    bad = [k for k in kinds if k not in NEIGHBOUR_KINDS]
    if bad or not kinds:
        raise ValueError(
            f"unknown condition {condition!r}: use 'idle' or neighbour kinds from {NEIGHBOUR_KINDS} "
            "joined by '+', e.g. 'python+torch'"
        )
    return kinds


@contextmanager
def neighbours(kinds: Sequence[str], threads: int, settle: float) -> Iterator[list[mp.Process]]:
    """Start one spawned process per kind, wait until each runs plus ``settle`` seconds, and
    always stop them afterwards (terminate, then kill if needed, and join)."""
    ctx = mp.get_context("spawn")
    procs: list[mp.Process] = []
    try:
        readies = []
        for i, kind in enumerate(kinds):
            ready = ctx.Event()
            if kind == "python":
                target, args = _python_busy, (ready, os.getpid())
            else:
                target, args = _torch_busy, (ready, os.getpid(), threads)
            proc = ctx.Process(target=target, args=args, name=f"neighbour-{i}-{kind}", daemon=True)
            proc.start()
            procs.append(proc)
            readies.append(ready)
        for proc, ready in zip(procs, readies, strict=True):
            if not ready.wait(timeout=120):
                raise RuntimeError(f"{proc.name} did not start within 120 s (exit code {proc.exitcode})")
        time.sleep(settle)
        yield procs
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()


# --------------------------------------------------------------------------- settings and timing


def supports_num_threads() -> bool:
    """Whether estimate_mi takes ``num_threads`` (a field of EstimateOptions, or a parameter)."""
    from mine_reg.estimate import EstimateOptions

    params = inspect.signature(estimate_mi).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):  # **options
        return "num_threads" in {f.name for f in dataclasses.fields(EstimateOptions)}
    return "num_threads" in params


def thread_settings(torch_default: int, has_option: bool) -> list[tuple[str, dict[str, Any]]]:
    """(label, extra estimate_mi kwargs) per timed setting; the default first."""
    settings: list[tuple[str, dict[str, Any]]] = [(DEFAULT_SETTING, {})]
    if has_option:
        settings.append(("num_threads=1", {"num_threads": 1}))
        if torch_default != 1:
            settings.append((f"num_threads={torch_default} (torch default)", {"num_threads": torch_default}))
    return settings


@dataclass
class Run:
    condition: str
    setting: str
    seconds: float
    mi: float


@dataclass
class Row:
    condition: str
    setting: str
    n_runs: int
    median: float
    min: float
    max: float
    ratio: float | None  # median / idle median of the same setting; None without an idle row


def summarize(runs: Sequence[Run]) -> list[Row]:
    """One row per (condition, setting), in first-seen order, with the ratio to idle."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        groups.setdefault((r.condition, r.setting), []).append(r.seconds)
    idle = {s: statistics.median(t) for (c, s), t in groups.items() if c == "idle"}
    rows = []
    for (c, s), t in groups.items():
        med = statistics.median(t)
        ratio = med / idle[s] if s in idle and idle[s] > 0 else None
        rows.append(Row(c, s, len(t), med, min(t), max(t), ratio))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    lines = [
        "| condition | setting | runs | median (s) | min (s) | max (s) | median / idle median |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
        cells = [
            r.condition,
            r.setting,
            str(r.n_runs),
            f"{r.median:.2f}",
            f"{r.min:.2f}",
            f"{r.max:.2f}",
            ratio,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target(rows: Sequence[Row]) -> tuple[str, bool | None]:
    """The target line and its verdict (None when no one-neighbour condition was run with idle)."""
    checked = [
        r
        for r in rows
        if r.setting == DEFAULT_SETTING and len(condition_kinds(r.condition)) == 1 and r.ratio is not None
    ]
    head = f"with one CPU-bound neighbour the default's median is within {TARGET_RATIO:g}x of its idle median"
    if not checked:
        return f"{head}: n/a (needs 'idle' and a one-neighbour condition)", None
    ok = all(r.ratio <= TARGET_RATIO for r in checked)
    detail = ", ".join(f"{r.condition}: {r.ratio:.2f}x" for r in checked)
    return f"{head}: {'PASS' if ok else 'FAIL'} ({detail})", ok


def time_estimates(
    x: Any,
    y: Any,
    conditions: Sequence[str],
    settings: Sequence[tuple[str, dict[str, Any]]],
    repeats: int,
    estimate_kwargs: dict[str, Any],
    neighbour_threads: int,
    settle: float,
) -> list[Run]:
    runs: list[Run] = []
    bar = tqdm(total=len(conditions) * len(settings) * repeats, desc="estimates", unit="run")
    try:
        for condition in conditions:
            with neighbours(condition_kinds(condition), neighbour_threads, settle):
                for _ in range(repeats):
                    for label, extra in settings:
                        bar.set_postfix_str(f"{condition} / {label}")
                        start = time.perf_counter()
                        result = estimate_mi(x, y, **estimate_kwargs, **extra)
                        runs.append(Run(condition, label, time.perf_counter() - start, float(result.mi)))
                        bar.update()
    finally:
        bar.close()
    return runs


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"estimates per condition and setting (default 5, --quick {QUICK_REPEATS})",
    )
    parser.add_argument("--n", type=int, default=None, help=f"samples (default 10000, --quick {QUICK_N})")
    parser.add_argument("--dim", type=int, default=5, help="dims per side (default 5)")
    parser.add_argument("--mi", type=float, default=1.0, help="true MI in nats (default 1)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPEATS} repeats, n = {QUICK_N}")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="estimate_mi's max_steps (default: its own)"
    )
    parser.add_argument(
        "--conditions",
        default=",".join(CONDITIONS),
        help="comma-separated, from 'idle' and neighbour kinds joined by '+' "
        f"(default {','.join(CONDITIONS)})",
    )
    parser.add_argument(
        "--neighbour-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="intra-op threads of each torch neighbour (default: all cores)",
    )
    parser.add_argument(
        "--settle", type=float, default=1.0, help="seconds to wait after neighbours start (default 1)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write DIR/contention.json with all timings")
    args = parser.parse_args(argv)
    args.repeats = args.repeats if args.repeats is not None else (QUICK_REPEATS if args.quick else 5)
    args.n = args.n if args.n is not None else (QUICK_N if args.quick else 10_000)
    args.conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    try:
        for c in args.conditions:
            condition_kinds(c)
    except ValueError as e:
        parser.error(str(e))
    if not args.conditions:
        parser.error("--conditions is empty")
    if args.repeats < 1 or args.n < 2 or args.dim < 1 or args.mi <= 0 or args.neighbour_threads < 1:
        parser.error("--repeats, --dim and --neighbour-threads must be >= 1, --n >= 2, --mi > 0")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max-steps must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch_default = torch.get_num_threads()
    has_option = supports_num_threads()
    settings = thread_settings(torch_default, has_option)
    x, y = correlated_gaussian(args.n, args.dim, rho_for_mi(args.mi, args.dim), seed=0)
    estimate_kwargs: dict[str, Any] = {} if args.max_steps is None else {"max_steps": args.max_steps}

    cpu = platform.processor() or platform.machine()
    header = [
        f"estimate_mi on correlated Gaussians, n = {args.n}, {args.dim} + {args.dim} dims, "
        f"I = {args.mi:g} nats; "
        f"{args.repeats} estimate(s) per condition and setting; max_steps = "
        f"{args.max_steps if args.max_steps is not None else 'estimate_mi default'}",
        f"torch {torch.__version__}, torch default threads {torch_default}, {os.cpu_count()} CPU(s), {cpu}; "
        f"torch neighbours use {args.neighbour_threads} thread(s); OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}",
    ]
    notes = []
    if not has_option:
        notes.append("note: this estimate_mi has no num_threads option; only its default setting is timed")
    elif torch_default == 1:
        notes.append(
            "note: torch's default is 1 thread here (OMP_NUM_THREADS?), so that row equals num_threads=1"
        )

    estimate_mi(x, y, **estimate_kwargs)  # warm-up, untimed
    runs = time_estimates(
        x, y, args.conditions, settings, args.repeats, estimate_kwargs, args.neighbour_threads, args.settle
    )
    rows = summarize(runs)
    line, ok = target(rows)
    print("\n".join([*header, *notes, "", format_table(rows), "", line]))

    record = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "torch_default_threads": torch_default,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "num_threads_option": has_option,
        "runs": [asdict(r) for r in runs],
        "rows": [asdict(r) for r in rows],
        "target": {"line": line, "pass": ok},
    }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "contention.json"
        path.write_text(json.dumps(record, indent=2))
        print(f"\nwrote {path}")
    return record


if __name__ == "__main__":
    main()
